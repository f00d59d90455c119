// Type test for channels and presence, compiled by `npm run typecheck` like app.tsx: the
// plain client's subscribe/unsubscribe/presence, and the React hooks under a provider.
// Each line marked with an expect-error directive is a misuse the types must refuse.
import { useState } from "react";
import {
  WspushRequestError,
  createWspushClient,
  type ChannelSubscription,
  type PresenceEvent,
  type PresenceMember,
  type SubscribedData,
  type WspushMessage,
} from "@wspush/client";
import { WspushProvider, useChannel, usePresence, useWspush, useWspushClient, type UseChannelResult } from "@wspush/client/react";

interface ChatMessage {
  text: string;
  from: string;
}

interface MemberInfo {
  name: string;
}

export async function plainJavaScript(): Promise<void> {
  const client = createWspushClient({ url: "ws://127.0.0.1:3001", userId: "u-42", requestTimeoutMs: 5000 });

  // a promise of the server's answer that can also end the subscription
  const room: ChannelSubscription = client.subscribe<ChatMessage>("room:42", ({ data, channel }) =>
    console.log(channel, data.from, data.text),
  );
  try {
    const answer: SubscribedData = await room;
    console.log(answer.channel, answer.seq);
  } catch (error) {
    if (error instanceof WspushRequestError && error.code === "forbidden") console.warn("not allowed in", error.channel);
  }
  client.subscribe("secret:plans", null, { onError: (error) => console.warn(error.code, error.frame?.data) });

  // presence: follow the member list, or ask once
  const stop: () => void = client.onPresence<MemberInfo>("lobby:main", (event: PresenceEvent<MemberInfo>) => {
    if (event.type === "join") console.log(event.userId, "joined as", event.info?.name);
    console.log(event.members.length, "here");
  });
  client.subscribe("lobby:main");
  const known: PresenceMember<MemberInfo>[] | null = client.members<MemberInfo>("lobby:main");
  const everyone = await client.presence<MemberInfo>("lobby:main");
  console.log(known?.length, everyone.count, everyone.members[0]?.info.name);
  const page = await client.presencePage("lobby:main");
  if (page.next) await client.presencePage("lobby:main", page.next);
  const welcome: WspushMessage<{ connectionId: string }> = await client.request({ action: "hello" });
  console.log(welcome.data.connectionId, client.channels());

  stop();
  await room.unsubscribe();
  await client.unsubscribe("lobby:main");
  client.close();
}

export function misuses(): void {
  const client = createWspushClient({ url: "ws://127.0.0.1:3001", userId: "u-42" });
  // @ts-expect-error a channel handler reads only what its payload has
  client.subscribe<ChatMessage>("room:42", ({ data }) => data.sender);
  // @ts-expect-error a channel name is a string
  client.subscribe(42, () => {});
  // @ts-expect-error presence events are join, leave or sync
  client.onPresence("lobby:main", (event) => event.type === "update");
  // @ts-expect-error useChannel's status has no "open"
  const status: UseChannelResult["status"] = "open";
  console.log(status);
}

function Room({ name }: { name: string }) {
  const [messages, setMessages] = useState<ChatMessage[]>([]);
  const { status, error } = useChannel<ChatMessage>(name, ({ data }) => setMessages((all) => [...all, data]));
  const members = usePresence<MemberInfo>(name);
  const client = useWspushClient();
  return (
    <section>
      <h2>
        {name}: {status} {error?.code} ({client?.state})
      </h2>
      <ul>
        {members.map((member) => (
          <li key={member.userId}>{member.info?.name ?? member.userId}</li>
        ))}
      </ul>
      <ol>
        {messages.map((message, i) => (
          <li key={i}>
            {message.from}: {message.text}
          </li>
        ))}
      </ol>
    </section>
  );
}

export function App({ userId }: { userId: string }) {
  const { client } = useWspush({ url: "ws://127.0.0.1:3001", userId });
  return (
    <WspushProvider client={client}>
      <Room name="lobby:main" />
    </WspushProvider>
  );
}
