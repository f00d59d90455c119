// useChannel and usePresence under react-test-renderer, on a client driven through its fake
// WebSocket: subscribe on mount and name change, unsubscribe on unmount, one subscription
// under StrictMode, and a member list kept from the presence query and join/leave events.
import { afterEach, beforeEach, describe, test } from "node:test";
import assert from "node:assert/strict";
import { StrictMode, createElement } from "react";
import TestRenderer from "react-test-renderer";
import { createWspushClient } from "@wspush/client";
import { WspushProvider, useChannel, usePresence, useWspush, useWspushClient } from "@wspush/client/react";
import { makeFakeWebSocket } from "./fake-websocket.js";
import { TIMINGS, advance, flush, frame, pongFrame, restoreTimers, useFakeTimers } from "./helpers.js";

globalThis.IS_REACT_ACT_ENVIRONMENT = true;
const { act } = TestRenderer;

async function tick(ms = 0) {
  await act(async () => {
    await advance(ms);
  });
}

function requests(ws, action) {
  return ws.frames.filter((sent) => sent.action === action);
}

function reply(ws, request, type, data) {
  act(() => ws.receive({ ...frame(type, data), ref: request.ref }));
}

/** Render `hook(props)` inside a provider of `client`; every result is kept. */
function renderWithClient(client, hook, initialProps, { strict = false } = {}) {
  const results = [];
  function Probe(props) {
    results.push(hook(props));
    return null;
  }
  const element = (props) => {
    const tree = createElement(WspushProvider, { client }, createElement(Probe, props));
    return strict ? createElement(StrictMode, null, tree) : tree;
  };
  let renderer;
  act(() => {
    renderer = TestRenderer.create(element(initialProps), { unstable_isConcurrent: strict });
  });
  return {
    get current() {
      return results.at(-1);
    },
    rerender(props) {
      act(() => renderer.update(element(props)));
    },
    unmount() {
      act(() => renderer.unmount());
    },
  };
}

describe("useChannel and usePresence (react-test-renderer)", () => {
  let FakeWebSocket;
  let client;
  let ws;
  beforeEach(async () => {
    useFakeTimers();
    FakeWebSocket = makeFakeWebSocket();
    client = createWspushClient({ url: "ws://127.0.0.1:3001", userId: "u-1", WebSocket: FakeWebSocket, watchNetwork: false, ...TIMINGS });
    await advance(0);
    ws = FakeWebSocket.last;
    ws.open();
    ws.receive(pongFrame("conn-1"));
  });
  afterEach(async () => {
    client.close();
    await flush();
    restoreTimers();
  });

  test("useChannel subscribes on mount, follows a new name, unsubscribes on unmount", async () => {
    const got = [];
    const hook = renderWithClient(client, ({ name, tag }) => useChannel(name, (m) => got.push(`${tag} ${m.channel} ${m.data.n}`)), {
      name: "room:1",
      tag: "v1",
    });
    assert.equal(hook.current.status, "subscribing");
    const [first] = requests(ws, "subscribe");
    assert.equal(first.channel, "room:1");
    reply(ws, first, "subscribed", { channel: "room:1" });
    await tick();
    assert.deepEqual(hook.current, { status: "subscribed", error: null });

    // a new handler on a re-render is used, without subscribing again
    hook.rerender({ name: "room:1", tag: "v2" });
    act(() => ws.receive({ ...frame("m", { n: 1 }), channel: "room:1" }));
    assert.deepEqual(got, ["v2 room:1 1"]);
    assert.equal(requests(ws, "subscribe").length, 1);

    // a new name: the old channel is left, the new one joined
    hook.rerender({ name: "room:2", tag: "v2" });
    await tick();
    assert.deepEqual(
      requests(ws, "unsubscribe").map((r) => r.channel),
      ["room:1"],
    );
    const second = requests(ws, "subscribe").at(-1);
    assert.equal(second.channel, "room:2");
    reply(ws, second, "subscribed", { channel: "room:2" });
    act(() => ws.receive({ ...frame("m", { n: 2 }), channel: "room:1" }));
    act(() => ws.receive({ ...frame("m", { n: 3 }), channel: "room:2" }));
    assert.deepEqual(got, ["v2 room:1 1", "v2 room:2 3"]);

    hook.unmount();
    await tick();
    assert.deepEqual(
      requests(ws, "unsubscribe").map((r) => r.channel),
      ["room:1", "room:2"],
    );
    assert.deepEqual(client.channels(), []);
  });

  test("useChannel reports a refused subscribe", async () => {
    const hook = renderWithClient(client, ({ name }) => useChannel(name, () => {}), { name: "secret:plans" });
    const request = requests(ws, "subscribe")[0];
    reply(ws, request, "error", { code: "forbidden", message: "no", channel: "secret:plans" });
    await tick();
    assert.equal(hook.current.status, "error");
    assert.equal(hook.current.error.code, "forbidden");
    hook.unmount();
  });

  test("useChannel under StrictMode sends one subscribe and no unsubscribe", async () => {
    const hook = renderWithClient(client, ({ name }) => useChannel(name, () => {}), { name: "room:1" }, { strict: true });
    await tick();
    assert.equal(requests(ws, "subscribe").length, 1);
    assert.equal(requests(ws, "unsubscribe").length, 0);
    reply(ws, requests(ws, "subscribe")[0], "subscribed", { channel: "room:1" });
    await tick();
    assert.equal(hook.current.status, "subscribed");
    hook.unmount();
  });

  test("without a client (none provided yet) or a name, useChannel is idle", async () => {
    const hook = renderWithClient(null, ({ name }) => useChannel(name, () => {}), { name: "room:1" });
    assert.deepEqual(hook.current, { status: "idle", error: null });
    hook.unmount();
    const nameless = renderWithClient(client, ({ name }) => useChannel(name, () => {}), { name: null });
    assert.equal(nameless.current.status, "idle");
    nameless.unmount();
    assert.equal(requests(ws, "subscribe").length, 0);
  });

  test("usePresence keeps the member list from the query and join/leave events", async () => {
    const hook = renderWithClient(client, ({ name }) => usePresence(name), { name: "lobby:main" });
    assert.deepEqual(hook.current, []);
    const subscribe = requests(ws, "subscribe")[0];
    assert.equal(subscribe.channel, "lobby:main");
    reply(ws, subscribe, "subscribed", { channel: "lobby:main" });
    await tick();
    const query = requests(ws, "presence")[0];
    assert.equal(query.channel, "lobby:main");
    reply(ws, query, "presence", {
      channel: "lobby:main",
      count: 1,
      members: [{ userId: "u-1", info: null, connections: 1 }],
      next: null,
    });
    await tick();
    assert.deepEqual(
      hook.current.map((m) => m.userId),
      ["u-1"],
    );
    act(() => ws.receive({ ...frame("presence.join", { channel: "lobby:main", userId: "u-2", info: { name: "Bo" } }), channel: "lobby:main" }));
    assert.deepEqual(hook.current.at(-1), { userId: "u-2", info: { name: "Bo" }, connections: 1 });
    act(() => ws.receive({ ...frame("presence.leave", { channel: "lobby:main", userId: "u-1" }), channel: "lobby:main" }));
    assert.deepEqual(
      hook.current.map((m) => m.userId),
      ["u-2"],
    );
    hook.unmount();
    await tick();
    assert.deepEqual(
      requests(ws, "unsubscribe").map((r) => r.channel),
      ["lobby:main"],
    );
  });

  test("useChannel and usePresence on one channel share one subscription", async () => {
    const got = [];
    const hook = renderWithClient(
      client,
      ({ name }) => ({ channel: useChannel(name, (m) => got.push(m.data.text)), members: usePresence(name) }),
      { name: "lobby:main" },
    );
    assert.equal(requests(ws, "subscribe").length, 1);
    reply(ws, requests(ws, "subscribe")[0], "subscribed", { channel: "lobby:main" });
    await tick();
    reply(ws, requests(ws, "presence")[0], "presence", {
      channel: "lobby:main",
      count: 2,
      members: [
        { userId: "u-1", info: null, connections: 1 },
        { userId: "u-3", info: null, connections: 1 },
      ],
      next: null,
    });
    await tick();
    act(() => ws.receive({ ...frame("chat.message", { text: "hi" }), channel: "lobby:main" }));
    assert.equal(hook.current.channel.status, "subscribed");
    assert.equal(hook.current.members.length, 2);
    assert.deepEqual(got, ["hi"]);
    hook.unmount();
  });

  test("useWspush's client handed down with WspushProvider reaches the hooks", async () => {
    const sockets = makeFakeWebSocket();
    let seen = null;
    function Room() {
      seen = useWspushClient();
      useChannel("room:1", () => {});
      return null;
    }
    function App() {
      const { client: own } = useWspush({ url: "ws://127.0.0.1:3001", userId: "u-9", WebSocket: sockets, watchNetwork: false, ...TIMINGS });
      return createElement(WspushProvider, { client: own }, createElement(Room));
    }
    let renderer;
    act(() => {
      renderer = TestRenderer.create(createElement(App));
    });
    await tick();
    const socket = sockets.last;
    act(() => socket.open());
    assert.ok(seen);
    assert.deepEqual(
      requests(socket, "subscribe").map((r) => r.channel),
      ["room:1"],
    );
    act(() => renderer.unmount());
    await tick();
  });
});
