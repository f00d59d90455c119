// Type test for recovery and rotation, compiled by `npm run typecheck` like app.tsx: positions
// are the client's own business; the app hears `onResync` (option, method, React hook) and
// tunes the rotation spread. Each line marked with an expect-error directive is a misuse the
// types must refuse.
import { useState } from "react";
import {
  DEFAULT_RECOVERY_TIMEOUT_MS,
  DEFAULT_ROTATION_SPREAD_MS,
  createWspushClient,
  type ResyncEvent,
  type ResyncListener,
  type StreamPosition,
  type SubscribedData,
  type WspushError,
  type WspushMessage,
} from "@wspush/client";
import { WspushProvider, useResync, useWspush } from "@wspush/client/react";

declare function reloadOrders(): Promise<void>;
declare function reloadRoom(channel: string): Promise<void>;

export function plainJavaScript(): void {
  const client = createWspushClient({
    url: "wss://abc123.execute-api.eu-west-1.amazonaws.com/prod",
    userId: "u-42",
    rotationSpreadMs: DEFAULT_ROTATION_SPREAD_MS / 2,
    recoveryTimeoutMs: DEFAULT_RECOVERY_TIMEOUT_MS,
    onResync: ({ stream, epoch, seq, reason }: ResyncEvent) => {
      console.log(epoch?.length, seq?.toFixed(), reason);
      if (stream === "user") void reloadOrders();
      else void reloadRoom(stream);
    },
    onError: (error: WspushError) => {
      if (error.kind === "rotation") console.info("kept the current connection:", error.message, error.closeCode);
    },
  });
  const listener: ResyncListener = (event) => console.log(event.stream);
  const stop: () => void = client.onResync(listener);
  stop();
  client.on("note", (message: WspushMessage<{ text: string }>) => console.log(message.seq, message.data.text));
  client.subscribe("room:42").then((data: SubscribedData) => console.log(data.recovered, data.epoch, data.seq));
  const position: StreamPosition = { epoch: "0f1e2d3c4b5a6978", seq: 57 };
  console.log(position);
}

export function misuses(event: ResyncEvent): void {
  // @ts-expect-error epoch is null when the channel keeps no history: check it first
  const epoch: string = event.epoch;
  // @ts-expect-error rotationSpreadMs is a number of milliseconds
  createWspushClient({ url: "ws://127.0.0.1:3001", userId: "u-42", rotationSpreadMs: "1m" });
  // @ts-expect-error "resync" is not an error kind: resyncs go to onResync
  const kind: WspushError["kind"] = "resync";
  console.log(epoch, kind);
}

function Orders() {
  const [reloads, setReloads] = useState(0);
  useResync((event) => {
    if (event.stream === "user") setReloads((n) => n + 1);
  });
  return <p>reloaded {reloads} times</p>;
}

export function App({ userId }: { userId: string }) {
  const { client } = useWspush({
    url: "ws://127.0.0.1:3001",
    userId,
    rotationSpreadMs: 0,
    onResync: (event: ResyncEvent) => console.log(event.stream, event.seq),
  });
  useResync(() => {}, { client, enabled: client !== null });
  return (
    <WspushProvider client={client}>
      <Orders />
    </WspushProvider>
  );
}
