import { useState } from "react";
import { createWspushClient, type WspushError, type WspushMessage } from "@wspush/client";
import { useWspush } from "@wspush/client/react";

interface Order {
  orderId: number;
  status: string;
}

declare function showReconnectButton(onClick: () => void): void;

async function wsToken(): Promise<string> {
  const res = await fetch("/api/ws-token");
  if (!res.ok) throw new Error(`token: HTTP ${res.status}`);
  return res.text();
}

export const client = createWspushClient({
  url: "wss://abc123.execute-api.eu-west-1.amazonaws.com/prod",
  token: wsToken, // no userId: the server takes the user from the token
  handlers: {
    "order.updated": (message: WspushMessage<Order>) => console.log("order", message.data.orderId),
    "chat.message": (message) => console.log(message.data.text), // data: any
  },
  onError: (error: WspushError) => {
    if (error.kind === "connect_failed") console.warn(`attempt ${error.attempt}, next in ${error.retryInMs} ms`);
    if (error.kind === "max_retries") showReconnectButton(() => client.reconnect());
  },
});

client.on<Order>("order.shipped", ({ data }) => console.log(data.orderId, data.status));

export function Orders({ userId }: { userId: string }) {
  const [orders, setOrders] = useState<Record<number, Order>>({});
  const { state } = useWspush(
    { url: "wss://abc123.execute-api.eu-west-1.amazonaws.com/prod", userId, platform: "web", token: wsToken },
    {
      "order.updated": ({ data }: WspushMessage<Order>) => setOrders((all) => ({ ...all, [data.orderId]: data })),
    },
  );
  return (
    <p>
      push: {state}, {Object.keys(orders).length} orders
    </p>
  );
}
