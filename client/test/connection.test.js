import { afterEach, beforeEach, describe, test } from "node:test";
import assert from "node:assert/strict";
import { CLIENT_RECONNECT_CODE, DEFAULT_HEARTBEAT_MS } from "@wspush/client";
import { advance, frame, openClient, pongFrame, restoreTimers, startClient, useFakeTimers } from "./helpers.js";

const MINUTE = 60_000;

describe("connection", () => {
  beforeEach(useFakeTimers);
  afterEach(restoreTimers);

  test("state goes connecting → open → reconnecting → open, and subscribers see it", async () => {
    const { client, FakeWebSocket, events } = await startClient();
    assert.equal(client.state, "connecting");
    const snapshots = [];
    client.subscribe((snapshot) => snapshots.push(snapshot));
    const transitions = [];
    const unsubscribe = client.onStateChange((state, previous) => transitions.push(`${previous}>${state}`));

    FakeWebSocket.last.open();
    assert.equal(client.state, "open");
    FakeWebSocket.last.receive(pongFrame("conn-1"));
    assert.equal(client.connectionId, "conn-1");

    FakeWebSocket.last.drop();
    assert.equal(client.state, "reconnecting");
    assert.equal(client.connectionId, null, "the old connection id is gone with its socket");
    await advance(50); // a random wait in the first backoff window (half of it: TIMINGS.random)
    FakeWebSocket.last.open();
    assert.equal(client.state, "open");

    unsubscribe();
    client.close();
    assert.deepEqual(events.states, ["open", "reconnecting", "open", "closed"]);
    assert.deepEqual(transitions, ["connecting>open", "open>reconnecting", "reconnecting>open"]);
    assert.deepEqual(
      snapshots.map((s) => `${s.state}/${s.connectionId}`),
      ["open/null", "open/conn-1", "open/null", "reconnecting/null", "open/null", "closed/null"],
    );
    assert.equal(client.getSnapshot(), snapshots.at(-1), "getSnapshot is stable between changes");
  });

  test("a refused handshake is told as connect_failed and retried with backoff", async () => {
    const { client, FakeWebSocket, events } = await startClient();
    FakeWebSocket.last.fail();
    assert.equal(client.state, "reconnecting");
    assert.equal(events.errors.length, 1, "one error per failed attempt");
    assert.deepEqual(
      { ...events.errors[0], event: events.errors[0].event.type },
      {
        kind: "connect_failed",
        message: "the connection was refused or could not be made (close code 1006)",
        closeCode: 1006,
        event: "error",
        attempt: 1,
        retryInMs: 50,
      },
    );
    await advance(49);
    assert.equal(FakeWebSocket.instances.length, 1);
    await advance(1);
    assert.equal(FakeWebSocket.instances.length, 2);
    FakeWebSocket.last.fail();
    assert.equal(events.errors.at(-1).retryInMs, 100, "the window doubles");
    await advance(99);
    assert.equal(FakeWebSocket.instances.length, 2);
    await advance(1);
    assert.equal(FakeWebSocket.instances.length, 3);
    FakeWebSocket.last.open();
    assert.equal(client.state, "open");
    client.close();
  });

  test("the connection id comes from the pong answering the ping sent on open", async () => {
    const { client, ws } = await openClient({}, { pong: false });
    // the ping, then the hello that asks where the user stream stands (see recovery.test.js)
    assert.deepEqual(ws.frames.map((sent) => sent.action), ["ping", "hello"]);
    assert.equal(client.connectionId, null);
    ws.receive(pongFrame("abc="));
    assert.equal(client.connectionId, "abc=");
    assert.deepEqual(client.getSnapshot(), { state: "open", connectionId: "abc=" });
    client.close();
  });

  test("heartbeat: a ping every heartbeatMs (default 5 minutes) while open", async () => {
    assert.equal(DEFAULT_HEARTBEAT_MS, 5 * MINUTE);
    const { client, ws } = await openClient();
    assert.equal(ws.pings, 1, "ping on open");
    await advance(DEFAULT_HEARTBEAT_MS - 1);
    assert.equal(ws.pings, 1);
    await advance(1);
    assert.equal(ws.pings, 2);
    ws.receive(pongFrame("conn-1"));
    await advance(DEFAULT_HEARTBEAT_MS);
    assert.equal(ws.pings, 3);
    ws.receive(pongFrame("conn-1"));
    assert.equal(client.state, "open");
    client.close();
  });

  test("heartbeatMs is configurable; pingOnOpen: false waits for the first beat", async () => {
    const { client, ws } = await openClient({ heartbeatMs: 30_000, pingOnOpen: false }, { pong: false });
    assert.equal(ws.pings, 0);
    await advance(30_000);
    assert.equal(ws.pings, 1);
    ws.receive(pongFrame("c"));
    await advance(30_000);
    assert.equal(ws.pings, 2);
    client.close();
  });

  test("pong timeout: no pong within pongTimeoutMs replaces the connection, after a backoff wait", async () => {
    const { client, FakeWebSocket, ws, events } = await openClient({ pongTimeoutMs: 5000 });
    await advance(DEFAULT_HEARTBEAT_MS); // heartbeat ping, and the network is silently dead
    assert.equal(ws.pings, 2);
    await advance(4999);
    assert.equal(client.state, "open");
    assert.equal(FakeWebSocket.instances.length, 1);
    await advance(1);
    assert.deepEqual(events.errors.at(-1), {
      kind: "pong_timeout",
      message: "no pong within 5000 ms; reconnecting",
      attempt: 1,
      retryInMs: 50,
    });
    assert.deepEqual(ws.closeCalls[0], { code: CLIENT_RECONNECT_CODE, reason: "no pong" });
    assert.equal(client.state, "reconnecting");
    await advance(49); // a missed pong is a failure: it waits out a backoff
    assert.equal(FakeWebSocket.instances.length, 1);
    await advance(1);
    assert.equal(FakeWebSocket.instances.length, 2);
    FakeWebSocket.last.open();
    assert.equal(client.state, "open");
    assert.equal(FakeWebSocket.last.pings, 1);
    client.close();
  });

  test("a pong in time, or any later one, keeps the connection", async () => {
    const { client, FakeWebSocket, ws, events } = await openClient({ pongTimeoutMs: 5000, heartbeatMs: 60_000 });
    for (let beat = 0; beat < 5; beat += 1) {
      await advance(60_000);
      await advance(4000);
      ws.receive(pongFrame("conn-1"));
    }
    await advance(10_000);
    assert.equal(ws.pings, 6);
    assert.equal(FakeWebSocket.instances.length, 1);
    assert.equal(client.state, "open");
    assert.deepEqual(events.errors, []);
    client.close();
  });

  test("pongTimeoutMs: 0 never reconnects for a missing pong", async () => {
    const { client, FakeWebSocket } = await openClient({ pongTimeoutMs: 0 }, { pong: false });
    await advance(3 * DEFAULT_HEARTBEAT_MS);
    assert.equal(FakeWebSocket.instances.length, 1);
    assert.equal(client.state, "open");
    client.close();
  });

  test("the heartbeat stops while disconnected and restarts on the new socket", async () => {
    const { client, FakeWebSocket, ws } = await openClient({ heartbeatMs: MINUTE, connectTimeoutMs: 10 * MINUTE });
    ws.drop();
    await advance(50);
    const second = FakeWebSocket.last;
    await advance(5 * MINUTE); // the new socket is not open yet: nothing to ping
    assert.equal(ws.pings, 1);
    second.open();
    assert.equal(second.pings, 1);
    second.receive(pongFrame("conn-2"));
    await advance(MINUTE);
    assert.equal(second.pings, 2);
    client.close();
  });

  test("reconnect() drops the socket and connects again at once", async () => {
    const { client, FakeWebSocket, ws } = await openClient();
    assert.equal(client.reconnect(), true);
    assert.equal(ws.closeCalls.length, 1);
    assert.equal(client.state, "reconnecting");
    await advance(0);
    assert.equal(FakeWebSocket.instances.length, 2);
    FakeWebSocket.last.open();
    assert.equal(client.state, "open");
    client.close();
  });

  test("reconnect() while waiting out a backoff connects without waiting", async () => {
    const { client, FakeWebSocket } = await startClient({ reconnectDelayMs: 120_000, maxReconnectDelayMs: 120_000 });
    FakeWebSocket.last.fail();
    await advance(1000);
    assert.equal(FakeWebSocket.instances.length, 1);
    client.reconnect();
    await advance(0);
    assert.equal(FakeWebSocket.instances.length, 2);
    FakeWebSocket.last.open();
    FakeWebSocket.last.receive(pongFrame("c"));
    assert.equal(client.state, "open");
    await advance(120_000); // the abandoned attempt never opens a socket
    assert.equal(FakeWebSocket.instances.length, 2);
    client.close();
  });

  test("maxRetries: gives up (closed) after that many failed reconnects; reconnect() restarts", async () => {
    const { client, FakeWebSocket, events } = await startClient({ maxRetries: 2 });
    FakeWebSocket.last.fail();
    await advance(50);
    FakeWebSocket.last.fail();
    await advance(100);
    assert.equal(FakeWebSocket.instances.length, 3);
    FakeWebSocket.last.fail();
    assert.equal(client.state, "closed");
    assert.deepEqual(
      events.errors.map((e) => [e.kind, e.attempt, e.retryInMs]),
      [
        ["connect_failed", 1, 50],
        ["connect_failed", 2, 100],
        ["connect_failed", 3, undefined],
        ["max_retries", 3, undefined],
      ],
    );
    assert.deepEqual(events.states, ["reconnecting", "closed"]);
    await advance(10_000);
    assert.equal(FakeWebSocket.instances.length, 3);

    assert.equal(client.reconnect(), true);
    assert.equal(client.state, "reconnecting");
    await advance(0);
    assert.equal(FakeWebSocket.instances.length, 4);
    FakeWebSocket.last.open();
    assert.equal(client.state, "open");
    client.close();
  });

  test("close() stops heartbeats, pong timers and reconnects for good", async () => {
    const seen = [];
    const { client, FakeWebSocket, ws, events } = await openClient(
      { heartbeatMs: MINUTE, handlers: { "*": (m) => seen.push(m.type) } },
      { pong: false },
    );
    client.close();
    assert.equal(client.state, "closed");
    assert.equal(client.connectionId, null);
    assert.deepEqual(ws.closeCalls, [{ code: 1000, reason: "client closed" }]);
    await advance(60 * MINUTE);
    assert.equal(ws.pings, 1);
    assert.equal(FakeWebSocket.instances.length, 1);
    assert.equal(client.send({ action: "ping" }), false);
    assert.equal(client.reconnect(), false);
    ws.receive(frame("late", {})); // a frame racing the close is not dispatched
    assert.deepEqual(seen, []);
    client.close(); // twice is fine
    assert.deepEqual(events.states, ["open", "closed"]);
    assert.deepEqual(events.errors, []);
  });

  test("close() before the first socket exists never opens one", async () => {
    const { client, FakeWebSocket } = await startClient({ token: () => new Promise(() => {}) });
    client.close();
    await advance(10_000);
    assert.equal(FakeWebSocket.instances.length, 0);
    assert.equal(client.state, "closed");
  });

  test("send(): objects as JSON, strings as they are, false unless open", async () => {
    const { client, FakeWebSocket } = await startClient();
    assert.equal(client.send({ action: "x" }), false);
    FakeWebSocket.last.open();
    assert.equal(client.send({ action: "custom", n: 1 }), true);
    assert.equal(client.send("raw text"), true);
    assert.deepEqual(FakeWebSocket.last.sent.slice(2), ['{"action":"custom","n":1}', "raw text"]); // after ping and hello
    client.close();
  });

  test("watchNetwork: back online cuts a backoff wait short; a visible tab pings", async () => {
    const fakeWindow = new EventTarget();
    const fakeDocument = new EventTarget();
    fakeDocument.visibilityState = "visible";
    const { client, FakeWebSocket } = await startClient({
      watchNetwork: true,
      window: fakeWindow,
      document: fakeDocument,
      reconnectDelayMs: 120_000,
      maxReconnectDelayMs: 120_000,
    });
    FakeWebSocket.last.open();
    fakeDocument.dispatchEvent(new Event("visibilitychange"));
    assert.equal(FakeWebSocket.last.pings, 2);
    FakeWebSocket.last.receive(pongFrame("c"));

    FakeWebSocket.last.drop();
    await advance(1000);
    assert.equal(FakeWebSocket.instances.length, 1);
    fakeWindow.dispatchEvent(new Event("online"));
    await advance(0);
    assert.equal(FakeWebSocket.instances.length, 2);

    client.close();
    fakeWindow.dispatchEvent(new Event("online")); // listeners are gone after close
    await advance(0);
    assert.equal(FakeWebSocket.instances.length, 2);
  });
});

describe("reconnect() edge cases", () => {
  beforeEach(useFakeTimers);
  afterEach(restoreTimers);

  test("reconnect() while a token provider hangs starts over with a fresh attempt", async () => {
    let calls = 0;
    const token = () => {
      calls += 1;
      return calls === 1 ? new Promise(() => {}) : "second";
    };
    const { client, FakeWebSocket } = await startClient({ token });
    assert.equal(FakeWebSocket.instances.length, 0);
    client.reconnect();
    assert.equal(client.state, "connecting");
    await advance(0);
    assert.equal(FakeWebSocket.instances.length, 1);
    assert.equal(FakeWebSocket.last.query.token, "second");
    client.close();
  });

  test("close() with a code the socket refuses still closes", async () => {
    const { client, ws } = await openClient();
    ws.close = function (code) {
      if (code !== undefined && code !== 1000 && (code < 3000 || code > 4999)) throw new Error("InvalidAccessError");
      Object.getPrototypeOf(this).close.call(this, code);
    };
    client.close(1001, "going away");
    assert.equal(client.state, "closed");
    assert.equal(ws.readyState, 3);
  });
});
