// Reconnects that spread out and end, and timers that stop (issue 13, sections 1 and 2), on
// fake sockets and fake timers.
import { afterEach, beforeEach, describe, test } from "node:test";
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { fileURLToPath } from "node:url";
import {
  DEFAULT_MAX_RECONNECT_DELAY_MS,
  DEFAULT_MAX_RETRIES,
  DEFAULT_RECONNECT_DELAY_MS,
  backoffWindow,
  createWspushClient,
} from "@wspush/client";
import { makeFakeWebSocket } from "./fake-websocket.js";
import { advance, frame, openClient, pongFrame, restoreTimers, startClient, useFakeTimers } from "./helpers.js";

const SECOND = 1000;
const MINUTE = 60 * SECOND;
const HOUR = 60 * MINUTE;

/** A `random` option that hands out `values` in turn and records each draw. */
function draws(values) {
  const taken = [];
  const random = () => {
    const value = values[taken.length % values.length];
    taken.push(value);
    return value;
  };
  return { random, taken };
}

/** Open the socket the client is trying, answer its ping, and return it. */
function accept(FakeWebSocket, connectionId = "c") {
  const ws = FakeWebSocket.last;
  ws.open();
  ws.receive(pongFrame(connectionId));
  return ws;
}

describe("backoff: full jitter in doubling windows", () => {
  beforeEach(useFakeTimers);
  afterEach(restoreTimers);

  test("the windows: 1 s doubling to a 60 s cap by default, configurable", () => {
    assert.equal(DEFAULT_RECONNECT_DELAY_MS, SECOND);
    assert.equal(DEFAULT_MAX_RECONNECT_DELAY_MS, MINUTE);
    assert.deepEqual(
      [1, 2, 3, 4, 5, 6, 7, 8, 20].map((failures) => backoffWindow(failures)),
      [1000, 2000, 4000, 8000, 16000, 32000, 60000, 60000, 60000],
    );
    assert.deepEqual(
      [1, 2, 3].map((failures) => backoffWindow(failures, { reconnectDelayMs: 500, maxReconnectDelayMs: 1500 })),
      [500, 1000, 1500],
    );
  });

  test("every wait is drawn afresh in its window", async () => {
    const { random, taken } = draws([0.9, 0.1, 0.75, 0.3, 0.5, 0.99, 0.2]);
    const { client, FakeWebSocket, events } = await startClient({
      random,
      reconnectDelayMs: SECOND,
      maxReconnectDelayMs: 10 * SECOND,
      maxRetries: 100,
    });
    for (let i = 0; i < 7; i += 1) {
      FakeWebSocket.last.fail();
      await advance(events.errors.at(-1).retryInMs);
    }
    assert.equal(FakeWebSocket.instances.length, 8);
    assert.equal(taken.length, 7, "one draw per wait");
    assert.deepEqual(
      events.errors.map((e) => e.retryInMs),
      // windows 1 s, 2 s, 4 s, 8 s, then the 10 s cap
      [900, 200, 3000, 2400, 5000, 9900, 2000],
    );
    client.close();
  });

  test("with Math.random, clients refused together spread over the window", async () => {
    const FakeWebSocket = makeFakeWebSocket();
    const clients = Array.from({ length: 200 }, (_, i) =>
      createWspushClient({ url: "ws://h", userId: `u${i}`, WebSocket: FakeWebSocket, watchNetwork: false }),
    );
    await advance(0);
    for (const ws of FakeWebSocket.instances) ws.fail();
    // The second attempt of each falls somewhere in the first second, not all at one moment.
    const perTenth = [];
    for (let tenth = 0; tenth < 10; tenth += 1) {
      const before = FakeWebSocket.instances.length;
      await advance(100);
      perTenth.push(FakeWebSocket.instances.length - before);
    }
    assert.equal(FakeWebSocket.instances.length, 400);
    assert.ok(Math.max(...perTenth) < 40, `attempts per 100 ms: ${perTenth}`);
    for (const client of clients) client.close();
  });

  test("API Gateway's 2-hour limit (close 1001) spreads the way back over the widest window, uncounted", async () => {
    const { random } = draws([0.7]);
    const { client, FakeWebSocket, events } = await startClient({ random, maxReconnectDelayMs: 60 * SECOND });
    accept(FakeWebSocket);
    FakeWebSocket.last.drop(1001, "Going away");
    assert.equal(client.state, "reconnecting");
    await advance(42 * SECOND - 1);
    assert.equal(FakeWebSocket.instances.length, 1);
    await advance(1);
    assert.equal(FakeWebSocket.instances.length, 2);
    FakeWebSocket.last.fail();
    assert.equal(events.errors.at(-1).attempt, 1, "the close was not a failure");
    client.close();
  });

  test("another clean server close waits a random delay in the first window, uncounted", async () => {
    const { random } = draws([0.25]);
    const { client, FakeWebSocket, events } = await startClient({ random });
    accept(FakeWebSocket);
    await advance(MINUTE); // a connection that worked for a minute
    FakeWebSocket.last.drop(1000, "bye");
    await advance(24);
    assert.equal(FakeWebSocket.instances.length, 1);
    await advance(1); // 0.25 of 100 ms
    assert.equal(FakeWebSocket.instances.length, 2);
    FakeWebSocket.last.fail();
    assert.equal(events.errors.at(-1).attempt, 1);
    client.close();
  });
});

describe("retries that end", () => {
  beforeEach(useFakeTimers);
  afterEach(restoreTimers);

  test("a refused handshake (401/403 is close 1006 in a browser) stops after maxRetries: 11 attempts by default", async () => {
    assert.equal(DEFAULT_MAX_RETRIES, 10);
    let tokens = 0;
    const FakeWebSocket = makeFakeWebSocket();
    const states = [];
    const errors = [];
    const client = createWspushClient({
      url: "ws://h",
      WebSocket: FakeWebSocket,
      watchNetwork: false,
      token: () => `expired-${(tokens += 1)}`,
      onStateChange: (state) => states.push(state),
      onError: (error) => errors.push(error),
    });
    // The gateway refuses every handshake, for an hour.
    for (let second = 0; second < HOUR / SECOND; second += 1) {
      await advance(SECOND);
      const ws = FakeWebSocket.last;
      if (ws && ws.readyState === 0) ws.fail();
    }
    assert.equal(FakeWebSocket.instances.length, 11);
    assert.equal(tokens, 11, "one token per attempt");
    assert.equal(client.state, "closed");
    assert.deepEqual(states, ["reconnecting", "closed"]);
    assert.deepEqual(
      errors.map((e) => e.kind),
      [...Array(11).fill("connect_failed"), "max_retries"],
    );
    assert.deepEqual(
      errors.map((e) => e.attempt),
      [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 11],
    );
    assert.equal(errors.at(-1).message, "gave up after 11 failures in a row; call reconnect() to try again");

    // After a new login the app restarts it.
    assert.equal(client.reconnect(), true);
    await advance(0);
    assert.equal(FakeWebSocket.instances.length, 12);
    accept(FakeWebSocket);
    assert.equal(client.state, "open");
    client.close();
  });

  test("missed pongs in a row are counted and backed off (maxRetries: 3 → 4 sockets, then closed)", async () => {
    const { random } = draws([1 - 1e-9]); // the longest wait of each window
    const { client, FakeWebSocket, events } = await startClient({ maxRetries: 3, pongTimeoutMs: 5000, random });
    // The gateway accepts every socket, and the ping route never answers, for 5 minutes.
    for (let second = 0; second < 5 * 60; second += 1) {
      const ws = FakeWebSocket.last;
      if (ws && ws.readyState === 0) ws.open();
      await advance(SECOND);
    }
    assert.equal(FakeWebSocket.instances.length, 4);
    assert.equal(client.state, "closed");
    assert.deepEqual(
      events.errors.map((e) => [e.kind, e.attempt, e.retryInMs]),
      [
        ["pong_timeout", 1, 99],
        ["pong_timeout", 2, 199],
        ["pong_timeout", 3, 399],
        ["pong_timeout", 4, undefined],
        ["max_retries", 4, undefined],
      ],
    );
    client.close();
  });

  test("a connection that answers a ping and stays up a minute ends a run of failures", async () => {
    const { client, FakeWebSocket, events } = await startClient({ maxRetries: 3, heartbeatMs: 0 });
    FakeWebSocket.last.fail(); // 1
    await advance(50);
    FakeWebSocket.last.open();
    FakeWebSocket.last.drop(); // opened, closed before its pong: 2
    await advance(100);
    accept(FakeWebSocket);
    await advance(MINUTE); // up and answering for a minute: the run is over
    FakeWebSocket.last.drop();
    await advance(50);
    FakeWebSocket.last.fail();
    assert.deepEqual(
      events.errors.map((e) => [e.kind, e.attempt]),
      [
        ["connect_failed", 1],
        ["connect_failed", 2],
        ["connect_failed", 1],
      ],
    );
    assert.match(events.errors[1].message, /closed before it answered a ping \(close code 1006\)/);
    assert.equal(client.state, "reconnecting");
    client.close();
  });

  test("a server that accepts, answers and drops every connection at once is a failure each time", async () => {
    const { client, FakeWebSocket, events } = await startClient({ maxRetries: 3 });
    for (let i = 0; i < 10; i += 1) {
      if (client.state === "closed") break;
      accept(FakeWebSocket);
      FakeWebSocket.last.drop(1011, "internal error");
      await advance(1000);
    }
    assert.equal(FakeWebSocket.instances.length, 4);
    assert.equal(client.state, "closed");
    assert.deepEqual(
      events.errors.map((e) => [e.kind, e.attempt]),
      [["max_retries", 4]],
    );
  });

  test("a handshake that hangs fails after connectTimeoutMs, is closed and counted", async () => {
    const { client, FakeWebSocket, events } = await startClient({ connectTimeoutMs: 4000 });
    const hung = FakeWebSocket.last;
    await advance(3999);
    assert.deepEqual(events.errors, []);
    await advance(1);
    assert.deepEqual(hung.closeCalls, [{ code: 4000, reason: "connect timeout" }]);
    assert.deepEqual(
      events.errors.map((e) => [e.kind, e.message, e.attempt]),
      [["connect_failed", "not open within 4000 ms", 1]],
    );
    hung.open(); // too late: ignored
    assert.equal(client.state, "reconnecting");
    await advance(50);
    assert.equal(FakeWebSocket.instances.length, 2);
    client.close();
  });

  test("token provider failures are counted toward maxRetries and backed off", async () => {
    let calls = 0;
    const token = () => {
      calls += 1;
      throw new Error("auth service down");
    };
    const { client, FakeWebSocket, events } = await startClient({ token, maxRetries: 2 });
    assert.equal(calls, 1);
    await advance(50);
    assert.equal(calls, 2);
    await advance(100);
    assert.equal(calls, 3);
    assert.equal(client.state, "closed");
    await advance(HOUR);
    assert.equal(calls, 3, "no provider call after the client gave up");
    assert.equal(FakeWebSocket.instances.length, 0);
    assert.deepEqual(
      events.errors.map((e) => [e.kind, e.attempt, e.retryInMs]),
      [
        ["token", 1, 50],
        ["token", 2, 100],
        ["token", 3, undefined],
        ["max_retries", 3, undefined],
      ],
    );
  });

  test("one token request per attempt: online events cut the wait short, never add loops", async () => {
    const fakeWindow = new EventTarget();
    let calls = 0;
    const token = () => {
      calls += 1;
      return Promise.reject(new Error("down"));
    };
    const { client } = await startClient({
      token,
      watchNetwork: true,
      window: fakeWindow,
      document: new EventTarget(),
      reconnectDelayMs: 10 * SECOND,
      maxReconnectDelayMs: 10 * SECOND,
      maxRetries: 4,
    });
    assert.equal(calls, 1);
    for (let i = 0; i < 4; i += 1) {
      fakeWindow.dispatchEvent(new Event("online"));
      fakeWindow.dispatchEvent(new Event("online")); // a second one while the first attempt runs
      await advance(0);
    }
    assert.equal(calls, 5, "4 online events: 4 attempts, each counted");
    assert.equal(client.state, "closed");
    fakeWindow.dispatchEvent(new Event("online")); // gave up: only reconnect() restarts it
    await advance(2 * MINUTE);
    assert.equal(calls, 5);
    client.close();
  });

  test("reconnect() abandons a token request: its late answer opens nothing", async () => {
    /** @type {((value: string) => void)[]} */
    const pending = [];
    const token = () => new Promise((resolve) => pending.push(resolve));
    const { client, FakeWebSocket } = await startClient({ token, tokenTimeoutMs: 0 });
    client.reconnect();
    await advance(0);
    assert.equal(pending.length, 2);
    pending[0]("late");
    pending[1]("fresh");
    await advance(0);
    assert.equal(FakeWebSocket.instances.length, 1);
    assert.equal(FakeWebSocket.last.query.token, "fresh");
    client.close();
  });

  test("tokenTimeoutMs: 0 disables the timeout, like every other …Ms: 0", async () => {
    let resolveToken;
    const token = () =>
      new Promise((resolve) => {
        resolveToken = resolve;
      });
    const { client, FakeWebSocket, events } = await startClient({ token, tokenTimeoutMs: 0 });
    await advance(HOUR);
    assert.deepEqual(events.errors, []);
    assert.equal(FakeWebSocket.instances.length, 0);
    resolveToken("slow but fine");
    await advance(0);
    assert.equal(FakeWebSocket.last.query.token, "slow but fine");
    client.close();
  });

  test("with a token, userId is optional: the server takes the user from the token", async () => {
    const { client, FakeWebSocket } = await startClient({ userId: undefined, token: async () => "jwt" });
    assert.deepEqual(FakeWebSocket.last.query, { platform: "pc", token: "jwt" });
    client.close();
    assert.throws(
      () => createWspushClient({ url: "ws://h", WebSocket: FakeWebSocket }),
      /userId is required \(unless a token is given\)/,
    );
  });
});

describe("timers that stop", () => {
  beforeEach(useFakeTimers);
  afterEach(restoreTimers);

  test('close() from onStateChange("open") leaves no heartbeat behind', async () => {
    let client;
    const FakeWebSocket = makeFakeWebSocket();
    client = createWspushClient({
      url: "ws://h",
      userId: "u",
      WebSocket: FakeWebSocket,
      watchNetwork: false,
      heartbeatMs: 500,
      onStateChange: (state) => {
        if (state === "open") client.close();
      },
    });
    await advance(0);
    FakeWebSocket.last.open();
    assert.equal(client.state, "closed");
    await advance(3 * SECOND);
    assert.equal(FakeWebSocket.last.pings, 0);
    assert.equal(FakeWebSocket.instances.length, 1);
  });

  test('reconnect() from onStateChange("open"): the old socket never pings', async () => {
    let client;
    let once = true;
    const FakeWebSocket = makeFakeWebSocket();
    client = createWspushClient({
      url: "ws://h",
      userId: "u",
      WebSocket: FakeWebSocket,
      watchNetwork: false,
      heartbeatMs: 500,
      onStateChange: (state) => {
        if (state === "open" && once) {
          once = false;
          client.reconnect();
        }
      },
    });
    await advance(0);
    const first = FakeWebSocket.last;
    first.open();
    await advance(0);
    accept(FakeWebSocket);
    await advance(1000);
    assert.equal(first.sent.length, 0);
    assert.equal(FakeWebSocket.last.pings, 3);
    client.close();
  });

  test("close() clears every timer: backoff, token timeout, handshake, heartbeat, pong", async () => {
    const cases = {
      "waiting out a backoff": async (FakeWebSocket) => FakeWebSocket.last.fail(),
      "waiting for a token": async () => {},
      "handshaking": async (FakeWebSocket) => FakeWebSocket.last,
      "open, waiting for a pong": async (FakeWebSocket) => FakeWebSocket.last.open(),
    };
    for (const [name, reach] of Object.entries(cases)) {
      const waitsForToken = name === "waiting for a token";
      const { client, FakeWebSocket } = await startClient({
        token: waitsForToken ? () => new Promise(() => {}) : "t",
      });
      await reach(FakeWebSocket);
      client.close();
      // node:test's fake timers have no count of pending timers; run the clock far and
      // check that nothing happened (the real-timer check is the child process below).
      await advance(10 * HOUR);
      assert.ok(FakeWebSocket.instances.length <= 1, name);
      assert.equal(client.state, "closed", name);
    }
  });
});

describe("de-duplication window", () => {
  beforeEach(useFakeTimers);
  afterEach(restoreTimers);

  test("a redelivery 25 minutes late at 10 messages/s is still dropped; after 30 minutes it is new", async () => {
    const seen = [];
    const { client, ws } = await openClient({
      heartbeatMs: 0,
      handlers: { n: (m) => seen.push(m.id) },
    });
    ws.receive(frame("n", 0, "first"));
    for (let i = 1; i <= 25 * 60 * 10; i += 1) {
      if (i % 10 === 0) await advance(SECOND);
      ws.receive(frame("n", i, `m-${i}`));
    }
    ws.receive(frame("n", 0, "first")); // SQS redelivered it, 25 minutes on
    assert.equal(seen.length, 15_001);
    assert.equal(seen.filter((id) => id === "first").length, 1);
    await advance(5 * MINUTE);
    ws.receive(frame("n", 0, "first"));
    assert.equal(seen.filter((id) => id === "first").length, 2, "30 minutes: forgotten");
    client.close();
  });
});

describe("close() in Node.js", () => {
  // Real timers, in a child process: it exits as soon as nothing is pending, so a timer left
  // behind by close() (a backoff wait of up to a minute, a 30 s token or handshake timeout,
  // the heartbeat) shows as a late exit.
  const cases = {
    "waiting out a backoff": "ws().fail();",
    "waiting for a token": "",
    "handshaking": "",
    "open, waiting for a pong": "ws().open();",
  };
  for (const [name, step] of Object.entries(cases)) {
    test(`lets the process exit at once: ${name}`, () => {
      const token = name === "waiting for a token" ? "() => new Promise(() => {})" : '"t"';
      const script = `
        import { createWspushClient } from "@wspush/client";
        import { makeFakeWebSocket } from "./fake-websocket.js";
        const FakeWebSocket = makeFakeWebSocket();
        const ws = () => FakeWebSocket.last;
        const client = createWspushClient({
          url: "ws://h", userId: "u", WebSocket: FakeWebSocket, watchNetwork: false, token: ${token},
          tokenTimeoutMs: 30000, connectTimeoutMs: 30000, pongTimeoutMs: 30000,
          reconnectDelayMs: 60000, random: () => 0.99,
        });
        setTimeout(() => {
          ${step}
          setTimeout(() => client.close(), 20);
        }, 20);
      `;
      const started = Date.now();
      const child = spawnSync(process.execPath, ["--input-type=module", "-e", script], {
        cwd: fileURLToPath(new URL(".", import.meta.url)),
        encoding: "utf8",
        timeout: 20_000,
      });
      assert.equal(child.status, 0, child.stderr);
      assert.ok(Date.now() - started < 5000, `exited after ${Date.now() - started} ms`);
    });
  }
});
