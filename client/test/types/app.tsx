// Type test, compiled by `npm run typecheck` (tsc, no output): the client used as a TypeScript
// app uses it, through the package's name and its `exports` map, twice: as a bundler resolves
// it (tsconfig.json) and as Node.js does (tsconfig.nodenext.json). Each line marked
// with an expect-error directive is a misuse the types must refuse.
import { useState } from "react";
import {
  DEFAULT_TOKEN_TIMEOUT_MS,
  backoffWindow,
  createWspushClient,
  type ConnectionState,
  type WspushClient,
  type WspushError,
  type WspushMessage,
} from "@wspush/client";
import { useWspush, type UseWspushResult } from "@wspush/client/react";

interface Order {
  orderId: number;
  status: string;
}

export function plainJavaScript(): WspushClient {
  const client = createWspushClient({
    url: "wss://abc123.execute-api.eu-west-1.amazonaws.com/prod",
    userId: "u-42",
    platform: "web",
    token: async () => (await fetch("/api/ws-token")).text(),
    handlers: {
      // a handler names the payload it expects ...
      "order.updated": (message: WspushMessage<Order>) => console.log(message.data.status),
      // ... or takes it as it comes
      "chat.message": ({ data }) => console.log(data.text),
      "*": (message) => console.debug(message.type, message.id, message.ts),
    },
    onStateChange: (state: ConnectionState, previous: ConnectionState) => console.log(previous, state),
    onError: (error: WspushError) => console.warn(error.kind, error.message, error.code),
  });
  const off: () => void = client.on<Order>("order.updated", ({ data }) => console.log(data.orderId));
  off();
  client.setHandlers(() => ({ "order.updated": null }));
  client.subscribe(({ state, connectionId }) => console.log(state, connectionId?.length));
  const sent: boolean = client.send({ action: "ping" });
  console.log(sent, client.state, client.connectionId, client.ping(), client.reconnect());
  client.close(1000, "bye");
  return client;
}

export function withTokenOnly(): WspushClient {
  // jwt stages: the server takes the user from the token
  return createWspushClient({
    url: "wss://abc123.execute-api.eu-west-1.amazonaws.com/prod",
    token: () => sessionStorage.getItem("wsToken"),
    tokenTimeoutMs: DEFAULT_TOKEN_TIMEOUT_MS * 2,
    maxRetries: Infinity,
    reconnectDelayMs: 500,
    maxReconnectDelayMs: backoffWindow(7),
    onError: ({ kind, attempt, retryInMs, closeCode }) => console.log(kind, attempt, retryInMs, closeCode),
  });
}

export function misuses(client: WspushClient): void {
  // @ts-expect-error url is required
  createWspushClient({ userId: "u-42" });
  // @ts-expect-error a userId, or a token to take the user from
  createWspushClient({ url: "ws://127.0.0.1:3001", platform: "web" });
  // @ts-expect-error "connect_refused" is not an error kind
  const kind: WspushError["kind"] = "connect_refused";
  // @ts-expect-error a token provider returns a string (or a promise of one)
  createWspushClient({ url: "ws://127.0.0.1:3001", userId: "u-42", token: () => 42 });
  // @ts-expect-error "opened" is not a connection state
  const state: ConnectionState = "opened";
  // @ts-expect-error a typed handler reads only what its payload has
  client.on<Order>("order.updated", ({ data }) => data.total);
  console.log(state, kind);
}

export function Orders({ userId }: { userId: string }) {
  const [orders, setOrders] = useState<Record<number, Order>>({});
  const { state, connectionId, lastMessage, send, client }: UseWspushResult = useWspush(
    {
      url: "ws://127.0.0.1:3001",
      userId,
      platform: "web",
      token: () => fetch(`/token?userId=${userId}`).then((response) => response.text()),
      enabled: userId !== "",
    },
    {
      // a new handler on every render: the hook never reconnects for it
      "order.updated": ({ data }: WspushMessage<Order>) =>
        setOrders((all) => ({ ...all, [data.orderId]: data })),
    },
  );
  return (
    <section>
      <p>
        {state === "open" ? "live" : state} <code>{connectionId}</code>
      </p>
      <button type="button" disabled={client === null} onClick={() => send({ action: "ping" })}>
        ping
      </button>
      <ul>
        {Object.values(orders).map((order) => (
          <li key={order.orderId}>{order.status}</li>
        ))}
      </ul>
      <small>last: {lastMessage?.type ?? "none"}</small>
    </section>
  );
}

export function NotSignedIn() {
  // @ts-expect-error handlers are functions of a message
  useWspush({ url: "ws://127.0.0.1:3001" }, { "order.updated": "refresh" });
  return null;
}
