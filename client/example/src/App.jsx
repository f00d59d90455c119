import { useState } from "react";
import { useWspush } from "@wspush/client/react";

// `make dev`'s gateway; for a deployed stage, build with VITE_WSPUSH_URL=wss://…/prod
const WSPUSH_URL = import.meta.env.VITE_WSPUSH_URL ?? "ws://127.0.0.1:3001";
// Only with tokens (`make dev AUTH=jwt`, deployed stages): where the app gets one, e.g.
// VITE_WSPUSH_TOKEN_URL=http://127.0.0.1:8080/token (the local stack's) or your backend's.
const TOKEN_URL = import.meta.env.VITE_WSPUSH_TOKEN_URL;

async function fetchToken(userId) {
  const response = await fetch(`${TOKEN_URL}?userId=${encodeURIComponent(userId)}`);
  if (!response.ok) throw new Error(`token: HTTP ${response.status}`);
  return (await response.json()).token;
}

export default function App({ userId }) {
  const [messages, setMessages] = useState([]);
  const { state, connectionId } = useWspush(
    {
      url: WSPUSH_URL,
      userId,
      platform: "web",
      // asked before every connect and reconnect, so an expired token is never reused
      token: TOKEN_URL ? () => fetchToken(userId) : undefined,
    },
    {
      // every pushed message, newest first; pongs and replies (welcome, …) are the client's own
      "*": (message) => {
        if (message.type === "pong" || message.ref !== undefined) return;
        setMessages((all) => [message, ...all].slice(0, 50));
      },
    },
  );
  return (
    <main>
      <p>
        {userId}: <b id="state">{state}</b> <code id="connectionId">{connectionId}</code>
      </p>
      <ol id="messages">
        {messages.map((message) => (
          <li key={message.id} data-type={message.type} data-id={message.id}>
            {message.type} <code>{JSON.stringify(message.data)}</code>
          </li>
        ))}
      </ol>
    </main>
  );
}
