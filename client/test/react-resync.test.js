// useResync and useWspush's onResync under react-test-renderer: a stream that could not be
// recovered after a reconnect reaches the component's latest listener while it is mounted;
// the answers to the client's own hello and recover are never lastMessage.
import { afterEach, beforeEach, describe, test } from "node:test";
import assert from "node:assert/strict";
import { createElement } from "react";
import TestRenderer from "react-test-renderer";
import { createWspushClient } from "@wspush/client";
import { WspushProvider, useResync, useWspush } from "@wspush/client/react";
import { makeFakeWebSocket } from "./fake-websocket.js";
import { TIMINGS, advance, flush, frame, pongFrame, restoreTimers, useFakeTimers } from "./helpers.js";

globalThis.IS_REACT_ACT_ENVIRONMENT = true;
const { act } = TestRenderer;

const EPOCH = "0f1e2d3c4b5a6978";

async function tick(ms = 0) {
  await act(async () => {
    await advance(ms);
  });
}

function answer(ws, action, type, data) {
  const request = ws.frames.filter((sent) => sent.action === action).at(-1);
  assert.ok(request, `no ${action} sent`);
  act(() => ws.receive({ ...frame(type, data), ref: request.ref }));
}

/** Open the socket the client is trying; answer its ping and hello (the user stream at `seq`). */
function accept(FakeWebSocket, seq) {
  const ws = FakeWebSocket.last;
  act(() => {
    ws.open();
    ws.receive(pongFrame("c"));
  });
  answer(ws, "hello", "welcome", { connectionId: "c", userId: "u-1", connectedAt: 1, expiresAt: 2, stream: { epoch: EPOCH, seq } });
  return ws;
}

/** Drop the connection, take the next one, and answer its recover with recovered: false. */
async function reconnectUnrecovered(FakeWebSocket, seq) {
  act(() => FakeWebSocket.last.drop(1006));
  await tick(1000);
  const ws = accept(FakeWebSocket, seq);
  answer(ws, "recover", "recovered", { epoch: EPOCH, seq, recovered: false });
}

describe("useResync and useWspush's onResync (react-test-renderer)", () => {
  let FakeWebSocket;
  beforeEach(() => {
    useFakeTimers();
    FakeWebSocket = makeFakeWebSocket();
  });
  afterEach(async () => {
    await flush();
    restoreTimers();
  });

  test("useResync hears the provider's client while mounted, with the latest listener; not when disabled or unmounted", async () => {
    const client = createWspushClient({ url: "ws://127.0.0.1:3001", userId: "u-1", WebSocket: FakeWebSocket, watchNetwork: false, ...TIMINGS });
    await advance(0);
    accept(FakeWebSocket, 5);
    const heard = [];
    function Probe({ tag, enabled }) {
      useResync((event) => heard.push(`${tag} ${event.stream} ${event.seq}`), { enabled });
      return null;
    }
    const element = (props) => createElement(WspushProvider, { client }, createElement(Probe, props));
    let renderer;
    act(() => {
      renderer = TestRenderer.create(element({ tag: "first", enabled: true }));
    });
    act(() => renderer.update(element({ tag: "second", enabled: true })));
    await reconnectUnrecovered(FakeWebSocket, 40);
    assert.deepEqual(heard, ["second user 40"]);

    act(() => renderer.update(element({ tag: "off", enabled: false })));
    await reconnectUnrecovered(FakeWebSocket, 50);
    assert.deepEqual(heard, ["second user 40"]);

    act(() => renderer.update(element({ tag: "on", enabled: true })));
    act(() => renderer.unmount());
    await reconnectUnrecovered(FakeWebSocket, 60);
    assert.deepEqual(heard, ["second user 40"]);
    client.close();
  });

  test("useResync without a client (none provided yet) does nothing", async () => {
    function Probe() {
      useResync(() => {});
      return null;
    }
    let renderer;
    act(() => {
      renderer = TestRenderer.create(createElement(Probe));
    });
    act(() => renderer.unmount());
  });

  test("useWspush's lastMessage skips the welcome and recovered answers, as it skips pongs", async () => {
    const results = [];
    function Probe() {
      results.push(useWspush({ url: "ws://127.0.0.1:3001", userId: "u-1", WebSocket: FakeWebSocket, watchNetwork: false, ...TIMINGS }));
      return null;
    }
    let renderer;
    act(() => {
      renderer = TestRenderer.create(createElement(Probe));
    });
    await tick();
    accept(FakeWebSocket, 5);
    assert.equal(results.at(-1).lastMessage, null);
    const pushed = { ...frame("note", { n: 6 }), seq: 6 };
    act(() => FakeWebSocket.last.receive(pushed));
    act(() => FakeWebSocket.last.drop(1006));
    await tick(1000);
    const ws = accept(FakeWebSocket, 6);
    answer(ws, "recover", "recovered", { epoch: EPOCH, seq: 6, recovered: true });
    assert.deepEqual(results.at(-1).lastMessage, pushed);
    act(() => renderer.unmount());
  });

  test("useWspush's onResync option: the latest one hears it, a closed client's is never called", async () => {
    const heard = [];
    function Probe({ tag }) {
      useWspush({
        url: "ws://127.0.0.1:3001",
        userId: "u-1",
        WebSocket: FakeWebSocket,
        watchNetwork: false,
        ...TIMINGS,
        onResync: (event) => heard.push(`${tag} ${event.stream} ${event.seq}`),
      });
      return null;
    }
    let renderer;
    act(() => {
      renderer = TestRenderer.create(createElement(Probe, { tag: "first" }));
    });
    await tick();
    accept(FakeWebSocket, 5);
    act(() => renderer.update(createElement(Probe, { tag: "second" })));
    await reconnectUnrecovered(FakeWebSocket, 40);
    assert.deepEqual(heard, ["second user 40"]);
    assert.equal(FakeWebSocket.instances.length, 2, "a new callback never reconnects");
    act(() => renderer.unmount());
    assert.deepEqual(heard, ["second user 40"]);
  });
});
