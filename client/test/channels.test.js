// Channels and presence on a fake socket: subscribe and its reply matched by `ref`, channel
// messages to their handlers, resubscribing after every reconnect, refusals, unsubscribing,
// the presence query and the member list kept with join and leave events.
import { afterEach, beforeEach, describe, test } from "node:test";
import assert from "node:assert/strict";
import { WspushRequestError } from "@wspush/client";
import { advance, flush, frame, lastRequest, openClient, pongFrame, requests, restoreTimers, startClient, useFakeTimers } from "./helpers.js";

/** The server's answer to `request`: a frame of `type` echoing its ref. */
function answer(ws, request, type, data) {
  ws.receive({ ...frame(type, data), ref: request.ref });
}

function subscribed(ws, channel = lastRequest(ws, "subscribe").channel) {
  const request = requests(ws, "subscribe").findLast((sent) => sent.channel === channel);
  answer(ws, request, "subscribed", { channel });
}

function refuse(ws, request, code) {
  answer(ws, request, "error", { code, message: `${code} for ${request.channel}`, channel: request.channel });
}

/** A message published to `channel`, as subscribers receive it. */
function channelMessage(channel, type, data) {
  return { ...frame(type, data), channel };
}

function presenceEvent(channel, type, userId, info) {
  return channelMessage(channel, type, info === undefined ? { channel, userId } : { channel, userId, info });
}

/** Whether a promise has settled yet, and how. */
async function outcome(promise) {
  let result = { pending: true };
  promise.then(
    (value) => {
      result = { value };
    },
    (error) => {
      result = { error };
    },
  );
  await flush();
  return result;
}

describe("channels", () => {
  beforeEach(useFakeTimers);
  afterEach(restoreTimers);

  test("subscribe sends a request with a ref and resolves with the server's subscribed data", async () => {
    const { client, ws } = await openClient();
    const subscription = client.subscribe("room:42", () => {});
    const request = lastRequest(ws, "subscribe");
    assert.deepEqual(Object.keys(request).sort(), ["action", "channel", "ref"]);
    assert.equal(request.channel, "room:42");
    assert.ok(request.ref.length > 0 && request.ref.length <= 64);
    assert.equal(subscription.channel, "room:42");
    assert.deepEqual(await outcome(subscription), { pending: true });

    // a reply to another request, or for another channel, does not settle it
    ws.receive({ ...frame("subscribed", { channel: "room:42" }), ref: "someone-else" });
    assert.deepEqual(await outcome(subscription), { pending: true });
    answer(ws, request, "subscribed", { channel: "room:42", epoch: "e1", seq: 131 });
    assert.deepEqual(await outcome(subscription), { value: { channel: "room:42", epoch: "e1", seq: 131 } });
    assert.deepEqual(client.channels(), ["room:42"]);

    // subscribing again once subscribed resolves at once, with no new request
    assert.deepEqual(await outcome(client.subscribe("room:42")), { value: { channel: "room:42", epoch: "e1", seq: 131 } });
    assert.equal(requests(ws, "subscribe").length, 1);
    client.close();
  });

  test("a channel's messages reach its handlers after the type handlers; others' do not", async () => {
    const calls = [];
    const { client, ws } = await openClient({ handlers: { "chat.message": (m) => calls.push(`type:${m.channel}`) } });
    client.on("*", (m) => calls.push(`*:${m.type}`));
    client.subscribe("room:1", (m) => calls.push(`room:1 ${m.data.text} ${m.channel}`));
    client.subscribe("room:2", (m) => calls.push(`room:2 ${m.data.text}`));
    subscribed(ws, "room:1");
    subscribed(ws, "room:2");
    calls.length = 0;

    ws.receive(channelMessage("room:1", "chat.message", { text: "hi" }));
    assert.deepEqual(calls, ["type:room:1", "*:chat.message", "room:1 hi room:1"]);
    calls.length = 0;
    // not subscribed: type handlers only; no channel: type handlers only
    ws.receive(channelMessage("room:3", "chat.message", { text: "elsewhere" }));
    ws.receive(frame("chat.message", { text: "to the user" }));
    assert.deepEqual(calls, ["type:room:3", "*:chat.message", "type:undefined", "*:chat.message"]);
    client.close();
  });

  test("frames the client does not know are ignored: no error, nothing breaks", async () => {
    const { client, ws, events } = await openClient();
    const got = [];
    client.subscribe("room:1", (m) => got.push(m.type));
    subscribed(ws, "room:1");
    ws.receive({ ...frame("recovered", { recovered: true }), ref: "never-asked" });
    ws.receive(frame("reconnect", { reason: "max_duration", before: 600000 }));
    ws.receive(channelMessage("room:1", "something.new", { x: 1 }));
    assert.deepEqual(got, ["something.new"]);
    assert.deepEqual(events.errors, []);
    assert.equal(client.state, "open");
    client.close();
  });

  test("subscribing before the connection is open sends the request once it opens", async () => {
    const { client, FakeWebSocket } = await startClient();
    const subscription = client.subscribe("lobby:main", () => {});
    const ws = FakeWebSocket.last;
    assert.deepEqual(ws.sent, []);
    ws.open();
    ws.receive(pongFrame("conn-1"));
    assert.equal(lastRequest(ws, "subscribe").channel, "lobby:main");
    subscribed(ws, "lobby:main");
    assert.deepEqual(await outcome(subscription), { value: { channel: "lobby:main" } });
    client.close();
  });

  test("a refused subscribe rejects with the error code, is reported, and is over", async () => {
    const refusals = [];
    const got = [];
    const { client, ws, events, FakeWebSocket } = await openClient();
    const subscription = client.subscribe("secret:plans", (m) => got.push(m), { onError: (e) => refusals.push(e.code) });
    refuse(ws, lastRequest(ws, "subscribe"), "forbidden");
    const { error } = await outcome(subscription);
    assert.ok(error instanceof WspushRequestError);
    assert.ok(error instanceof Error);
    assert.equal(error.code, "forbidden");
    assert.equal(error.channel, "secret:plans");
    assert.equal(error.frame.type, "error");
    assert.deepEqual(refusals, ["forbidden"]);
    // the error frame also reached onError, as every error frame does
    assert.deepEqual(
      events.errors.map((e) => [e.kind, e.code]),
      [["server", "forbidden"]],
    );
    assert.deepEqual(client.channels(), []);
    ws.receive(channelMessage("secret:plans", "leak", {}));
    assert.deepEqual(got, []);
    // and it is not sent again after a reconnect
    client.reconnect();
    await advance(0);
    FakeWebSocket.last.open();
    assert.notEqual(FakeWebSocket.last, ws);
    assert.deepEqual(requests(FakeWebSocket.last, "subscribe"), []);
    client.close();
  });

  test("a refused subscribe nobody awaits is no unhandled rejection", async () => {
    const unhandled = [];
    const onUnhandled = (reason) => unhandled.push(reason);
    process.on("unhandledRejection", onUnhandled);
    try {
      const { client, ws } = await openClient();
      client.subscribe("secret:plans", () => {});
      refuse(ws, lastRequest(ws, "subscribe"), "forbidden");
      await flush();
      await new Promise((resolve) => setImmediate(resolve));
      assert.deepEqual(unhandled, []);
      client.close();
    } finally {
      process.off("unhandledRejection", onUnhandled);
    }
  });

  test("every subscription is sent again after a reconnect; a left one is not", async () => {
    const got = [];
    const { client, ws, FakeWebSocket } = await openClient();
    const first = client.subscribe("room:1", (m) => got.push(`room:1 ${m.data.n}`));
    client.subscribe("lobby:main", (m) => got.push(`lobby ${m.data.n}`));
    const left = client.subscribe("room:9", () => {});
    subscribed(ws, "room:1");
    subscribed(ws, "lobby:main");
    subscribed(ws, "room:9");
    const leaving = left.unsubscribe();
    await flush();
    answer(ws, lastRequest(ws, "unsubscribe"), "unsubscribed", { channel: "room:9" });
    await leaving;
    ws.receive(channelMessage("room:1", "m", { n: 1 }));

    // the gateway drops the connection; the client reconnects on its own
    ws.drop(1006);
    await advance(1000);
    const second = FakeWebSocket.last;
    assert.notEqual(second, ws);
    second.open();
    second.receive(pongFrame("conn-2"));
    assert.deepEqual(
      requests(second, "subscribe").map((r) => r.channel),
      ["room:1", "lobby:main"],
    );
    // fresh refs on the new connection
    const oldRefs = new Set(requests(ws, "subscribe").map((r) => r.ref));
    assert.ok(requests(second, "subscribe").every((r) => !oldRefs.has(r.ref)));
    subscribed(second, "room:1");
    subscribed(second, "lobby:main");
    second.receive(channelMessage("room:1", "m", { n: 2 }));
    second.receive(channelMessage("lobby:main", "m", { n: 3 }));
    assert.deepEqual(got, ["room:1 1", "room:1 2", "lobby 3"]);
    assert.deepEqual(await outcome(first), { value: { channel: "room:1" } });
    client.close();
  });

  test("a subscribe still unanswered when the connection drops is answered on the next one", async () => {
    const { client, ws, FakeWebSocket } = await openClient();
    const subscription = client.subscribe("room:1", () => {});
    ws.drop(1006);
    await advance(1000);
    const second = FakeWebSocket.last;
    second.open();
    second.receive(pongFrame("conn-2"));
    // the old connection's reply can no longer settle it
    answer(second, lastRequest(ws, "subscribe"), "subscribed", { channel: "room:1" });
    assert.deepEqual(await outcome(subscription), { pending: true });
    subscribed(second, "room:1");
    assert.deepEqual(await outcome(subscription), { value: { channel: "room:1" } });
    client.close();
  });

  test("a refusal after a reconnect ends the subscription and calls its onError", async () => {
    const refusals = [];
    const { client, ws, FakeWebSocket } = await openClient();
    client.subscribe("secret:plans", () => {}, { onError: (e) => refusals.push(e.code) });
    subscribed(ws, "secret:plans");
    ws.drop(1006);
    await advance(1000);
    const second = FakeWebSocket.last;
    second.open();
    refuse(second, lastRequest(second, "subscribe"), "forbidden");
    assert.deepEqual(refusals, ["forbidden"]);
    assert.deepEqual(client.channels(), []);
    client.close();
  });

  test("unsubscribe leaves once the last subscription to a channel ends", async () => {
    const got = [];
    const { client, ws } = await openClient();
    const a = client.subscribe("room:1", (m) => got.push(`a ${m.data.n}`));
    const b = client.subscribe("room:1", (m) => got.push(`b ${m.data.n}`));
    assert.equal(requests(ws, "subscribe").length, 1, "one request for both");
    subscribed(ws, "room:1");
    assert.deepEqual(await outcome(b), { value: { channel: "room:1" } });

    await a.unsubscribe();
    assert.equal(requests(ws, "unsubscribe").length, 0, "b still wants it");
    ws.receive(channelMessage("room:1", "m", { n: 1 }));

    const leaving = b.unsubscribe();
    await flush();
    const request = lastRequest(ws, "unsubscribe");
    assert.deepEqual({ ...request, ref: "" }, { action: "unsubscribe", channel: "room:1", ref: "" });
    assert.deepEqual(await outcome(leaving), { pending: true });
    answer(ws, request, "unsubscribed", { channel: "room:1" });
    assert.deepEqual(await outcome(leaving), { value: undefined });
    ws.receive(channelMessage("room:1", "m", { n: 2 }));
    assert.deepEqual(got, ["b 1"]);
    assert.deepEqual(client.channels(), []);
    client.close();
  });

  test("client.unsubscribe(channel) ends every subscription to it", async () => {
    const { client, ws } = await openClient();
    const got = [];
    client.subscribe("room:1", () => got.push("a"));
    client.subscribe("room:1", () => got.push("b"));
    subscribed(ws, "room:1");
    const leaving = client.unsubscribe("room:1");
    await flush();
    answer(ws, lastRequest(ws, "unsubscribe"), "unsubscribed", { channel: "room:1" });
    await leaving;
    ws.receive(channelMessage("room:1", "m", {}));
    assert.deepEqual(got, []);
    assert.deepEqual(await outcome(client.unsubscribe("room:7")), { value: undefined }, "nothing to leave");
    client.close();
  });

  test("leaving and joining again at once (React StrictMode) sends no unsubscribe", async () => {
    const { client, ws } = await openClient();
    const first = client.subscribe("room:1", () => {});
    first.unsubscribe();
    const second = client.subscribe("room:1", () => {});
    await flush();
    subscribed(ws, "room:1");
    assert.equal(requests(ws, "subscribe").length, 1);
    assert.equal(requests(ws, "unsubscribe").length, 0);
    assert.equal((await outcome(first)).error.code, "unsubscribed");
    assert.deepEqual(await outcome(second), { value: { channel: "room:1" } });
    client.close();
  });

  test("a subscribe while an unsubscribe is on its way waits for it, then subscribes again", async () => {
    const { client, ws } = await openClient();
    const first = client.subscribe("room:1", () => {});
    subscribed(ws, "room:1");
    await first;
    first.unsubscribe();
    await flush();
    const unsubscribe = lastRequest(ws, "unsubscribe");
    const again = client.subscribe("room:1", () => {});
    await flush();
    assert.equal(requests(ws, "subscribe").length, 1, "not before the unsubscribe is answered");
    answer(ws, unsubscribe, "unsubscribed", { channel: "room:1" });
    assert.equal(requests(ws, "subscribe").length, 2);
    subscribed(ws, "room:1");
    assert.deepEqual(await outcome(again), { value: { channel: "room:1" } });
    client.close();
  });

  test("a subscribe with no answer rejects with timeout; a late answer still subscribes", async () => {
    const got = [];
    const { client, ws } = await openClient({ requestTimeoutMs: 5000 });
    const subscription = client.subscribe("room:1", (m) => got.push(m.data.n));
    await advance(4999);
    assert.deepEqual(await outcome(subscription), { pending: true });
    await advance(1);
    const { error } = await outcome(subscription);
    assert.equal(error.code, "timeout");
    assert.deepEqual(client.channels(), ["room:1"], "still wanted");
    subscribed(ws, "room:1");
    ws.receive(channelMessage("room:1", "m", { n: 1 }));
    assert.deepEqual(got, [1]);
    client.close();
  });

  test("close() settles everything: subscriptions and requests reject with closed", async () => {
    const { client, ws } = await openClient();
    const subscription = client.subscribe("room:1", () => {});
    const query = outcome(client.request({ action: "hello" }));
    client.close();
    assert.equal((await outcome(subscription)).error.code, "closed");
    assert.equal((await query).error.code, "closed");
    assert.equal((await outcome(client.subscribe("room:2"))).error.code, "closed");
    assert.deepEqual(client.channels(), []);
    assert.equal(ws.readyState, 3);
  });

  test("request() matches the reply by ref; not open, an error reply and a lost connection reject", async () => {
    const { client } = await startClient();
    assert.equal((await outcome(client.request({ action: "hello" }))).error.code, "not_open");
    const { client: open, ws: live } = await openClient();
    const hello = open.request({ action: "hello" });
    const sent = lastRequest(live, "hello");
    answer(live, sent, "welcome", { connectionId: "conn-1" });
    assert.equal((await outcome(hello)).value.data.connectionId, "conn-1");

    const bad = open.request({ action: "presence", channel: "room:1" });
    refuse(live, lastRequest(live, "presence"), "not_subscribed");
    const refused = (await outcome(bad)).error;
    assert.equal(refused.code, "not_subscribed");
    assert.equal(refused.channel, "room:1");

    const lost = open.request({ action: "hello" });
    live.drop(1006);
    assert.equal((await outcome(lost)).error.code, "disconnected");
    client.close();
    open.close();
  });

  test("presence() follows every page; presencePage() gives one", async () => {
    const { client, ws } = await openClient();
    const subscription = client.subscribe("lobby:main");
    const members = client.presence("lobby:main");
    await flush();
    assert.equal(requests(ws, "presence").length, 0, "not before the subscription is there");
    subscribed(ws, "lobby:main");
    await subscription;
    await flush();
    const first = lastRequest(ws, "presence");
    assert.equal(first.after, undefined);
    answer(ws, first, "presence", {
      channel: "lobby:main",
      count: 3,
      members: [
        { userId: "u1", info: null, connections: 1 },
        { userId: "u2", info: { name: "Bo" }, connections: 2 },
      ],
      next: "cursor-1",
    });
    await flush();
    const second = lastRequest(ws, "presence");
    assert.equal(second.after, "cursor-1");
    answer(ws, second, "presence", {
      channel: "lobby:main",
      count: 3,
      members: [{ userId: "u3", info: null, connections: 1 }],
      next: null,
    });
    const all = await members;
    assert.equal(all.count, 3);
    assert.deepEqual(
      all.members.map((m) => m.userId),
      ["u1", "u2", "u3"],
    );

    const page = client.presencePage("lobby:main", "cursor-1");
    await flush();
    answer(ws, lastRequest(ws, "presence"), "presence", { channel: "lobby:main", count: 3, members: [], next: null });
    assert.deepEqual((await page).next, null);
    client.close();
  });

  test("onPresence: the member list is read after subscribed, then kept with joins and leaves", async () => {
    const seen = [];
    const { client, ws } = await openClient();
    client.onPresence("lobby:main", (event) => seen.push([event.type, event.userId ?? "", event.members.map((m) => m.userId).join(",")]));
    assert.equal(client.members("lobby:main"), null);
    client.subscribe("lobby:main");
    subscribed(ws, "lobby:main");
    await flush();
    const query = lastRequest(ws, "presence");
    // a join that arrives while the list is read is applied on top of it
    ws.receive(presenceEvent("lobby:main", "presence.join", "u3", { name: "Cy" }));
    answer(ws, query, "presence", {
      channel: "lobby:main",
      count: 2,
      members: [
        { userId: "u1", info: null, connections: 1 },
        { userId: "u2", info: null, connections: 1 },
      ],
      next: null,
    });
    await flush();
    assert.deepEqual(seen, [["sync", "", "u1,u2,u3"]]);
    assert.deepEqual(client.members("lobby:main").at(-1), { userId: "u3", info: { name: "Cy" }, connections: 1 });

    ws.receive(presenceEvent("lobby:main", "presence.join", "u4"));
    ws.receive(presenceEvent("lobby:main", "presence.leave", "u2"));
    ws.receive(presenceEvent("lobby:main", "presence.leave", "nobody"));
    ws.receive(presenceEvent("lobby:main", "presence.join", "u4"));
    assert.deepEqual(seen.slice(1), [
      ["join", "u4", "u1,u2,u3,u4"],
      ["leave", "u2", "u1,u3,u4"],
    ]);
    client.close();
  });

  test("onPresence: after a reconnect the list is read again from the new subscription", async () => {
    let latest = [];
    const { client, ws, FakeWebSocket } = await openClient();
    client.subscribe("lobby:main");
    subscribed(ws, "lobby:main");
    // listening once subscribed reads the list at once
    client.onPresence("lobby:main", (event) => {
      latest = event.members.map((m) => m.userId);
    });
    await flush();
    answer(ws, lastRequest(ws, "presence"), "presence", {
      channel: "lobby:main",
      count: 1,
      members: [{ userId: "u1", info: null, connections: 1 }],
      next: null,
    });
    await flush();
    assert.deepEqual(latest, ["u1"]);

    ws.drop(1006);
    await advance(1000);
    const second = FakeWebSocket.last;
    second.open();
    assert.equal(requests(second, "presence").length, 0, "not before subscribed");
    subscribed(second, "lobby:main");
    await flush();
    answer(second, lastRequest(second, "presence"), "presence", {
      channel: "lobby:main",
      count: 2,
      members: [
        { userId: "u1", info: null, connections: 1 },
        { userId: "u5", info: null, connections: 1 },
      ],
      next: null,
    });
    await flush();
    assert.deepEqual(latest, ["u1", "u5"]);
    client.close();
  });

  test("leaving a presence channel empties its list", async () => {
    let latest = null;
    const { client, ws } = await openClient();
    client.onPresence("lobby:main", (event) => {
      latest = event.members;
    });
    const subscription = client.subscribe("lobby:main");
    subscribed(ws, "lobby:main");
    await flush();
    answer(ws, lastRequest(ws, "presence"), "presence", {
      channel: "lobby:main",
      count: 1,
      members: [{ userId: "u1", info: null, connections: 1 }],
      next: null,
    });
    await flush();
    assert.equal(latest.length, 1);
    const leaving = subscription.unsubscribe();
    await flush();
    answer(ws, lastRequest(ws, "unsubscribe"), "unsubscribed", { channel: "lobby:main" });
    await leaving;
    assert.deepEqual(latest, []);
    assert.equal(client.members("lobby:main"), null);
    client.close();
  });

  test("a channel name must be a non-empty string", async () => {
    const { client } = await openClient();
    assert.throws(() => client.subscribe(""), TypeError);
    assert.throws(() => client.subscribe(/** @type {any} */ (42)), TypeError);
    // a function is still the state store's listener
    const off = client.subscribe(() => {});
    assert.equal(typeof off, "function");
    off();
    client.close();
  });
});
