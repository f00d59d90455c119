// The hook under react-test-renderer (React 18): renders a probe component and drives the
// client's fake WebSocket, as a browser would.
import { afterEach, beforeEach, describe, test } from "node:test";
import assert from "node:assert/strict";
import { StrictMode, createElement } from "react";
import TestRenderer from "react-test-renderer";
import { useWspush } from "@wspush/client/react";
import { makeFakeWebSocket } from "./fake-websocket.js";
import { TIMINGS, advance, flush, frame, pongFrame, restoreTimers, useFakeTimers } from "./helpers.js";

globalThis.IS_REACT_ACT_ENVIRONMENT = true;
const { act } = TestRenderer;

/**
 * Renders `useWspush(options, handlers)` and keeps every result it returned; `strict` wraps it
 * in StrictMode on a concurrent root, where React mounts, unmounts and mounts again.
 */
function renderHook(initialProps, { strict = false } = {}) {
  const results = [];
  function Probe({ options, handlers }) {
    results.push(useWspush(options, handlers));
    return null;
  }
  const element = (props) => (strict ? createElement(StrictMode, null, createElement(Probe, props)) : createElement(Probe, props));
  let renderer;
  act(() => {
    renderer = TestRenderer.create(element(initialProps), { unstable_isConcurrent: strict });
  });
  return {
    get current() {
      return results.at(-1);
    },
    results,
    rerender(props) {
      act(() => renderer.update(element(props)));
    },
    unmount() {
      act(() => renderer.unmount());
    },
  };
}

/** Advance the fake clock inside act() so state updates are applied. */
async function tick(ms = 0) {
  await act(async () => {
    await advance(ms);
  });
}

describe("useWspush (react-test-renderer)", () => {
  let FakeWebSocket;
  let baseOptions;
  beforeEach(() => {
    useFakeTimers();
    FakeWebSocket = makeFakeWebSocket();
    baseOptions = { url: "ws://127.0.0.1:3001", userId: "u-1", platform: "web", WebSocket: FakeWebSocket, watchNetwork: false, ...TIMINGS };
  });
  afterEach(async () => {
    await flush();
    restoreTimers();
  });

  test("connects once and exposes state, connectionId and lastMessage", async () => {
    const hook = renderHook({ options: baseOptions, handlers: {} });
    assert.equal(hook.current.state, "connecting");
    assert.ok(hook.current.client);
    await tick();
    assert.equal(FakeWebSocket.instances.length, 1);
    const ws = FakeWebSocket.last;
    assert.deepEqual(ws.query, { userId: "u-1", platform: "web" });

    act(() => ws.open());
    assert.equal(hook.current.state, "open");
    act(() => ws.receive(pongFrame("conn-9")));
    assert.equal(hook.current.connectionId, "conn-9");
    assert.equal(hook.current.lastMessage, null, "pongs are not lastMessage");

    const message = frame("order.updated", { orderId: 7 });
    act(() => ws.receive(message));
    assert.deepEqual(hook.current.lastMessage, message);

    act(() => ws.drop());
    assert.equal(hook.current.state, "reconnecting");
    assert.equal(hook.current.connectionId, null);
    hook.unmount();
  });

  test("new handlers on every render never reconnect; the latest ones are called", async () => {
    const calls = [];
    const hook = renderHook({ options: baseOptions, handlers: { t: () => calls.push("first") } });
    await tick();
    const ws = FakeWebSocket.last;
    act(() => ws.open());
    act(() => ws.receive(frame("t", 1)));
    const client = hook.current.client;

    for (let i = 0; i < 3; i += 1) {
      hook.rerender({ options: { ...baseOptions }, handlers: { t: () => calls.push(`render-${i}`) } });
    }
    await tick(1000);
    act(() => ws.receive(frame("t", 2)));
    assert.deepEqual(calls, ["first", "render-2"]);
    assert.equal(FakeWebSocket.instances.length, 1);
    assert.deepEqual(ws.closeCalls, []);
    assert.equal(hook.current.client, client);
    hook.unmount();
  });

  test("changing userId or platform replaces the client; other options do not", async () => {
    const hook = renderHook({ options: baseOptions });
    await tick();
    const first = FakeWebSocket.last;
    act(() => first.open());
    const firstClient = hook.current.client;

    hook.rerender({ options: { ...baseOptions, heartbeatMs: 1234 } });
    await tick();
    assert.equal(FakeWebSocket.instances.length, 1);

    hook.rerender({ options: { ...baseOptions, userId: "u-2" } });
    assert.equal(firstClient.state, "closed");
    assert.equal(first.closeCalls.length, 1);
    await tick();
    assert.equal(FakeWebSocket.instances.length, 2);
    assert.equal(FakeWebSocket.last.query.userId, "u-2");
    assert.notEqual(hook.current.client, firstClient);
    assert.equal(hook.current.state, "connecting");

    hook.rerender({ options: { ...baseOptions, userId: "u-2", platform: "mobile" } });
    await tick();
    assert.equal(FakeWebSocket.instances.length, 3);
    assert.equal(FakeWebSocket.last.query.platform, "mobile");
    hook.unmount();
  });

  test("unmount closes the client for good", async () => {
    const hook = renderHook({ options: baseOptions });
    await tick();
    act(() => FakeWebSocket.last.open());
    const client = hook.current.client;
    hook.unmount();
    assert.equal(client.state, "closed");
    assert.equal(FakeWebSocket.last.closeCalls[0].code, 1000);
    await tick(60 * 60_000);
    assert.equal(FakeWebSocket.instances.length, 1);
  });

  test("send is stable and sends on the open socket", async () => {
    const hook = renderHook({ options: baseOptions });
    const send = hook.current.send;
    assert.equal(send({ action: "x" }), false);
    await tick();
    act(() => FakeWebSocket.last.open());
    assert.equal(hook.current.send, send);
    assert.equal(send({ action: "custom" }), true);
    assert.deepEqual(FakeWebSocket.last.frames.at(-1), { action: "custom" });
    hook.unmount();
  });

  test("the latest token provider and onError are used without reconnecting", async () => {
    const errors = [];
    const hook = renderHook({ options: { ...baseOptions, token: () => "old" } });
    await tick();
    assert.equal(FakeWebSocket.last.query.token, "old");
    hook.rerender({ options: { ...baseOptions, token: async () => "new", onError: (e) => errors.push(e.kind) } });
    act(() => FakeWebSocket.last.open());
    act(() => FakeWebSocket.last.receive("not json"));
    assert.deepEqual(errors, ["bad_frame"]);
    act(() => FakeWebSocket.last.drop());
    await tick(50);
    assert.equal(FakeWebSocket.instances.length, 2);
    assert.equal(FakeWebSocket.last.query.token, "new");
    hook.unmount();
  });

  test("options.handlers are honoured too: both maps run, options' first", async () => {
    const calls = [];
    const hook = renderHook({
      options: {
        ...baseOptions,
        handlers: {
          t: () => {
            calls.push("options");
            throw new Error("options handler failed");
          },
          only: () => calls.push("options only"),
        },
        onError: (e) => calls.push(`error: ${e.message}`),
      },
      handlers: { t: () => calls.push("argument"), "*": (m) => calls.push(`* ${m.type}`) },
    });
    await tick();
    act(() => FakeWebSocket.last.open());
    calls.length = 0;
    act(() => FakeWebSocket.last.receive(frame("t", 1)));
    act(() => FakeWebSocket.last.receive(frame("only", 2)));
    assert.deepEqual(calls, [
      "options",
      "argument",
      'error: handler for "t" threw: options handler failed',
      "* t",
      "options only",
      "* only",
    ]);
    hook.rerender({ options: { ...baseOptions, handlers: () => ({ t: () => calls.push("options v2") }) } });
    calls.length = 0;
    act(() => FakeWebSocket.last.receive(frame("t", 3)));
    assert.deepEqual(calls, ["options v2"]);
    assert.equal(FakeWebSocket.instances.length, 1);
    hook.unmount();
  });

  test("a token undefined at mount is read once the app has it", async () => {
    const hook = renderHook({ options: { ...baseOptions, token: undefined } });
    await tick();
    assert.equal(FakeWebSocket.last.query.token, undefined);
    act(() => FakeWebSocket.last.fail()); // jwt stage: refused without a token
    hook.rerender({ options: { ...baseOptions, token: "signed-in" } });
    await tick(50);
    assert.equal(FakeWebSocket.instances.length, 2);
    assert.equal(FakeWebSocket.last.query.token, "signed-in");
    hook.unmount();
  });

  test("without userId it connects with a token alone (the server reads the user from it)", async () => {
    const hook = renderHook({ options: { ...baseOptions, userId: undefined } });
    assert.equal(hook.current.state, "closed");
    hook.rerender({ options: { ...baseOptions, userId: undefined, token: async () => "jwt" } });
    await tick();
    assert.deepEqual(FakeWebSocket.last.query, { platform: "web", token: "jwt" });
    hook.unmount();
  });

  test("StrictMode: no false connecting → closed, and one socket", async () => {
    const transitions = [];
    const hook = renderHook(
      { options: { ...baseOptions, onStateChange: (state, previous) => transitions.push(`${previous}>${state}`) } },
      { strict: true },
    );
    await tick();
    assert.equal(FakeWebSocket.instances.length, 1, "the trial mount's client never opened a socket");
    act(() => FakeWebSocket.last.open());
    assert.equal(hook.current.state, "open");
    assert.deepEqual(transitions, ["connecting>open"]);
    hook.unmount();
    assert.deepEqual(transitions, ["connecting>open"], "a client the hook closes says nothing more");
  });

  test("without userId, or with enabled: false, it stays closed and opens nothing", async () => {
    const hook = renderHook({ options: { ...baseOptions, userId: "" } });
    assert.equal(hook.current.state, "closed");
    assert.equal(hook.current.client, null);
    hook.rerender({ options: { ...baseOptions, enabled: false } });
    await tick(10_000);
    assert.equal(FakeWebSocket.instances.length, 0);
    assert.equal(hook.current.state, "closed");

    hook.rerender({ options: baseOptions });
    await tick();
    assert.equal(FakeWebSocket.instances.length, 1);
    hook.rerender({ options: { ...baseOptions, enabled: false } });
    assert.equal(hook.current.state, "closed");
    assert.equal(hook.current.client, null);
    hook.unmount();
  });
});
