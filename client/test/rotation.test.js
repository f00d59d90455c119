// Rotation on fake sockets: a `reconnect` push opens the next connection while the current one
// keeps delivering; once the next one has said hello, recovered and subscribed again, it
// becomes the current one and the old one is closed with 1000, without a change of state,
// a gap or a duplicate. The spread delay, a switch that fails, and reconnect() or close()
// during a switch.
import { afterEach, beforeEach, describe, test } from "node:test";
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { fileURLToPath } from "node:url";
import { DEFAULT_ROTATION_SPREAD_MS } from "@wspush/client";
import { advance, answerLast, frame, lastRequest, openClient, pongFrame, requests, restoreTimers, useFakeTimers } from "./helpers.js";

const EPOCH = "0f1e2d3c4b5a6978";
const SECOND = 1000;
const MINUTE = 60 * SECOND;
const HOUR = 60 * MINUTE;

function welcome(ws, stream, connectionId = "c-old") {
  answerLast(ws, "hello", "welcome", { connectionId, userId: "u-42", connectedAt: 1, expiresAt: 2, stream });
}

function subscribed(ws, channel, data = {}) {
  const request = requests(ws, "subscribe").findLast((sent) => sent.channel === channel);
  ws.receive({ ...frame("subscribed", { channel, ...data }), ref: request.ref });
}

function userMessage(seq) {
  return { ...frame("note", { n: seq }, `user-${seq}`), seq };
}

function channelMessage(channel, seq) {
  return { ...frame("chat", { n: seq }, `${channel}-${seq}`), channel, seq };
}

/** The push wspush sends about 10 minutes before API Gateway cuts the connection. */
function reconnectPush(beforeMs = Date.now() + 10 * MINUTE) {
  return frame("reconnect", { reason: "max_duration", before: beforeMs });
}

/**
 * An open client that knows its user stream (at `userSeq`) and is subscribed to room:1 (at
 * `roomSeq`); `got` lists what reached the app: "user n", "room:1 n", "broadcast x".
 */
async function rotatingClient(options = {}, { userSeq = 5, roomSeq = 131 } = {}) {
  const got = [];
  const resyncs = [];
  const started = await openClient({
    heartbeatMs: 0,
    rotationSpreadMs: 0,
    handlers: {
      note: (m) => got.push(`user ${m.data.n}`),
      broadcast: (m) => got.push(`broadcast ${m.data.n}`),
    },
    onResync: (event) => resyncs.push(event),
    ...options,
  });
  const { client, ws } = started;
  welcome(ws, { epoch: EPOCH, seq: userSeq });
  const room = client.subscribe("room:1", (m) => got.push(`${m.channel} ${m.data.n}`));
  subscribed(ws, "room:1", { epoch: EPOCH, seq: roomSeq });
  await room;
  return { ...started, got, resyncs };
}

/** Push `reconnect` on `ws`, let the switch start, and open the next connection. */
async function startSwitch(FakeWebSocket, ws) {
  const count = FakeWebSocket.instances.length;
  ws.receive(reconnectPush());
  await advance(0);
  assert.equal(FakeWebSocket.instances.length, count + 1, "the next connection is made");
  const next = FakeWebSocket.last;
  next.open();
  return next;
}

/** Answer the next connection's hello, recover and subscribe: the switch happens. */
function answerAll(next, { userSeq = 5, roomSeq = 131 } = {}) {
  welcome(next, { epoch: EPOCH, seq: userSeq }, "c-new");
  answerLast(next, "recover", "recovered", { epoch: EPOCH, seq: userSeq, recovered: true });
  subscribed(next, "room:1", { epoch: EPOCH, seq: roomSeq, recovered: true });
}

describe("rotation: the switch to a new connection", () => {
  beforeEach(useFakeTimers);
  afterEach(restoreTimers);

  test("a second connection opens (fresh token) while the first keeps delivering; the first is closed with 1000 once every answer is in; the state never changes", async () => {
    let tokens = 0;
    const { client, ws, got, events, FakeWebSocket } = await rotatingClient({ token: () => `t${(tokens += 1)}` });
    const states = events.states.length;
    ws.receive(reconnectPush());
    await advance(0);
    assert.equal(FakeWebSocket.instances.length, 2);
    const next = FakeWebSocket.last;
    assert.equal(next.query.token, "t2", "a fresh token for the new connection");
    next.open();
    assert.deepEqual(requests(next, "hello").length, 1);
    assert.deepEqual(lastRequest(next, "subscribe").since, { epoch: EPOCH, seq: 131 });

    ws.receive(userMessage(6)); // the old connection keeps delivering
    assert.deepEqual(got, ["user 6"]);
    welcome(next, { epoch: EPOCH, seq: 6 }, "c-new");
    assert.deepEqual(lastRequest(next, "recover").since, { epoch: EPOCH, seq: 6 }, "from where the old one stands");
    answerLast(next, "recover", "recovered", { epoch: EPOCH, seq: 6, recovered: true });
    assert.deepEqual(ws.closeCalls, [], "the old one stays until every answer is in");
    subscribed(next, "room:1", { epoch: EPOCH, seq: 131, recovered: true });

    assert.deepEqual(
      ws.closeCalls.map((call) => call.code),
      [1000],
    );
    assert.deepEqual(next.closeCalls, []);
    await advance(0); // the old one's close event comes: it is not a disconnect
    assert.equal(client.state, "open");
    assert.equal(events.states.length, states, "no state change at all");
    assert.equal(client.connectionId, "c-new");
    next.receive(pongFrame("c-new")); // the ping the switch sent
    assert.deepEqual(events.errors, []);

    // the new connection is the current one now
    assert.equal(client.send({ action: "custom" }), true);
    assert.deepEqual(next.frames.at(-1), { action: "custom" });
    next.receive(userMessage(7));
    assert.deepEqual(got, ["user 6", "user 7"]);
    await advance(10 * MINUTE);
    assert.equal(FakeWebSocket.instances.length, 2, "nothing reconnects");
    // and its loss is a loss like any other
    next.drop(1006);
    assert.equal(client.state, "reconnecting");
    client.close();
  });

  test("messages on both connections during the switch reach the app once each, in order per stream", async () => {
    const { client, ws, got, resyncs, FakeWebSocket } = await rotatingClient();
    const next = await startSwitch(FakeWebSocket, ws);
    ws.receive(userMessage(6));
    ws.receive(channelMessage("room:1", 132));
    next.receive(userMessage(6)); // live copy
    next.receive(channelMessage("room:1", 133)); // reaches the new one first
    next.receive(frame("broadcast", { n: "b1" }, "b1"));
    ws.receive(channelMessage("room:1", 133));
    ws.receive(userMessage(7));
    ws.receive(frame("broadcast", { n: "b1" }, "b1"));
    welcome(next, { epoch: EPOCH, seq: 7 }, "c-new");
    // the new one: live frames interleaved with the replay, some only there before the switch
    next.receive(userMessage(8)); // replayed; the old one has it too
    ws.receive(userMessage(8));
    next.receive(userMessage(10)); // live, only on the new one so far
    next.receive(userMessage(9)); // replayed, only on the new one so far
    next.receive(channelMessage("room:1", 135)); // live
    next.receive(channelMessage("room:1", 132)); // replayed
    next.receive(channelMessage("room:1", 134)); // replayed
    answerLast(next, "recover", "recovered", { epoch: EPOCH, seq: 9, recovered: true });
    subscribed(next, "room:1", { epoch: EPOCH, seq: 134, recovered: true });
    ws.receive(userMessage(11)); // the old one after the switch: not heard
    next.receive(userMessage(11));
    next.receive(channelMessage("room:1", 136));

    const of = (prefix) => got.filter((line) => line.startsWith(prefix));
    assert.deepEqual(of("user"), ["user 6", "user 7", "user 8", "user 9", "user 10", "user 11"]);
    assert.deepEqual(of("room:1"), ["room:1 132", "room:1 133", "room:1 134", "room:1 135", "room:1 136"]);
    assert.deepEqual(of("broadcast"), ["broadcast b1"]);
    assert.deepEqual(resyncs, []);
    client.close();
  });

  test("with de-duplication off (dedupeSize: 0), a seq on both connections still reaches the app once", async () => {
    const { client, ws, got, FakeWebSocket } = await rotatingClient({ dedupeSize: 0 });
    const next = await startSwitch(FakeWebSocket, ws);
    welcome(next, { epoch: EPOCH, seq: 5 }, "c-new"); // recover since 5 is sent
    ws.receive(userMessage(6)); // the old connection still delivers 6
    ws.receive(userMessage(8)); // and 8, ahead of 7
    next.receive(userMessage(6)); // the new one: live (stamped after its head was read)
    next.receive(userMessage(7));
    next.receive(userMessage(8));
    answerLast(next, "recover", "recovered", { epoch: EPOCH, seq: 5, recovered: true });
    subscribed(next, "room:1", { epoch: EPOCH, seq: 131, recovered: true });
    assert.equal(ws.closeCalls.length, 1, "switched");
    next.receive(userMessage(8));
    next.receive(userMessage(9));
    assert.deepEqual(got, ["user 6", "user 8", "user 7", "user 9"]);
    client.close();
  });

  test("recovered: false on the new connection: onResync at the switch, then the frames after the new position", async () => {
    const { client, ws, got, resyncs, FakeWebSocket } = await rotatingClient();
    const next = await startSwitch(FakeWebSocket, ws);
    welcome(next, { epoch: "ffffffffffffffff", seq: 3 }, "c-new");
    next.receive(userMessage(4));
    answerLast(next, "recover", "recovered", { epoch: "ffffffffffffffff", seq: 3, recovered: false });
    assert.deepEqual(resyncs, [], "not before the switch");
    subscribed(next, "room:1", { epoch: EPOCH, seq: 131, recovered: true });
    assert.deepEqual(resyncs, [{ stream: "user", epoch: "ffffffffffffffff", seq: 3 }]);
    assert.deepEqual(got, ["user 4"]);
    client.close();
  });

  test("a channel asked for during the switch is subscribed on the new connection after it; one left is left there", async () => {
    const { client, ws, FakeWebSocket } = await rotatingClient();
    const next = await startSwitch(FakeWebSocket, ws);
    const room2 = client.subscribe("room:2", () => {});
    assert.equal(lastRequest(ws, "subscribe").channel, "room:2", "sent on the current connection");
    subscribed(ws, "room:2", { epoch: EPOCH, seq: 7 });
    await room2;
    client.unsubscribe("room:1");
    await advance(0);
    assert.equal(lastRequest(ws, "unsubscribe").channel, "room:1");
    answerAll(next);
    const again = lastRequest(next, "subscribe");
    assert.equal(again.channel, "room:2");
    assert.deepEqual(again.since, { epoch: EPOCH, seq: 7 });
    assert.equal(lastRequest(next, "unsubscribe").channel, "room:1");
    assert.deepEqual(client.channels(), ["room:2"]);
    client.close();
  });

  test("a request on its way on the old connection at the switch rejects with disconnected", async () => {
    const { client, ws, FakeWebSocket } = await rotatingClient();
    const next = await startSwitch(FakeWebSocket, ws);
    const asked = client.request({ action: "presence", channel: "lobby:1" });
    answerAll(next);
    await assert.rejects(asked, { code: "disconnected" });
    client.close();
  });

  test("a presence member list is kept across the switch, not read again", async () => {
    const { client, ws, FakeWebSocket } = await rotatingClient();
    const seen = [];
    client.onPresence("room:1", (event) => seen.push(event.type));
    answerLast(ws, "presence", "presence", { channel: "room:1", count: 1, members: [{ userId: "u1", info: null, connections: 1 }], next: null });
    await advance(0);
    assert.deepEqual(seen, ["sync"]);
    const next = await startSwitch(FakeWebSocket, ws);
    const join = { ...frame("presence.join", { channel: "room:1", userId: "u2", info: null }, "join-u2"), channel: "room:1" };
    next.receive(join);
    ws.receive(join);
    answerAll(next);
    assert.deepEqual(requests(next, "presence"), []);
    assert.deepEqual(seen, ["sync", "join"]);
    assert.deepEqual(
      client.members("room:1").map((member) => member.userId),
      ["u1", "u2"],
    );
    client.close();
  });

  test("a handler that calls reconnect() while the switch hands over: the rest of the switch stops, every channel is sent again", async () => {
    let once = true;
    const { client, ws, FakeWebSocket } = await rotatingClient({
      handlers: {
        note: () => {
          if (once) {
            once = false;
            client.reconnect();
          }
        },
      },
    });
    const next = await startSwitch(FakeWebSocket, ws);
    next.receive(frame("note", { n: "no seq" })); // handed over at the switch
    answerAll(next);
    assert.equal(client.state, "reconnecting");
    await advance(0);
    const third = FakeWebSocket.last;
    assert.equal(FakeWebSocket.instances.length, 3);
    third.open();
    third.receive(pongFrame("c3"));
    assert.deepEqual(
      requests(third, "subscribe").map((sent) => [sent.channel, sent.since]),
      [["room:1", { epoch: EPOCH, seq: 131 }]],
    );
    client.close();
  });

  test("a reconnect push during a switch is ignored; one on the new connection starts the next switch", async () => {
    const { client, ws, FakeWebSocket } = await rotatingClient();
    const next = await startSwitch(FakeWebSocket, ws);
    ws.receive(reconnectPush());
    next.receive(reconnectPush());
    await advance(0);
    assert.equal(FakeWebSocket.instances.length, 2);
    answerAll(next);
    await advance(0);
    assert.equal(FakeWebSocket.instances.length, 2, "a push that came during the switch, on either connection, is ignored");
    next.receive(reconnectPush());
    await advance(0);
    assert.equal(FakeWebSocket.instances.length, 3);
    client.close();
  });
});

describe("rotation: the spread", () => {
  beforeEach(useFakeTimers);
  afterEach(restoreTimers);

  test("the switch starts after a random delay in [0, min(rotationSpreadMs, half the time left)]", async () => {
    assert.equal(DEFAULT_ROTATION_SPREAD_MS, MINUTE);
    const cases = [
      // [options, before (ms from now), delay with random() = 0.5]
      [{}, 10 * MINUTE, 30 * SECOND],
      [{}, 20 * SECOND, 5 * SECOND],
      [{ rotationSpreadMs: 10 * SECOND }, 10 * MINUTE, 5 * SECOND],
      [{ rotationSpreadMs: 0 }, 10 * MINUTE, 0],
      [{}, -5 * SECOND, 0], // the cut is (said to be) past: at once
    ];
    for (const [options, before, delay] of cases) {
      const { client, ws, FakeWebSocket } = await openClient({ heartbeatMs: 0, ...options });
      ws.receive(reconnectPush(Date.now() + before));
      if (delay > 0) {
        await advance(delay - 1);
        assert.equal(FakeWebSocket.instances.length, 1, `${JSON.stringify(options)} ${before}: not before ${delay} ms`);
        await advance(1);
      }
      assert.equal(FakeWebSocket.instances.length, 2, `${JSON.stringify(options)} ${before}: at ${delay} ms`);
      client.close();
    }
  });

  test("each client draws its delay: spread over the window", async () => {
    const delays = [];
    for (const draw of [0, 0.25, 0.999]) {
      const { client, ws, FakeWebSocket } = await openClient({ heartbeatMs: 0, random: () => draw });
      ws.receive(reconnectPush());
      let waited = 0;
      while (FakeWebSocket.instances.length === 1) {
        await advance(SECOND);
        waited += SECOND;
      }
      delays.push(waited);
      client.close();
    }
    assert.deepEqual(delays, [0, 15 * SECOND, 60 * SECOND]);
  });
});

describe("rotation: a switch that does not happen", () => {
  beforeEach(useFakeTimers);
  afterEach(restoreTimers);

  test("the new connection refused: the old one is kept and keeps delivering; its 1001 close then reconnects as usual", async () => {
    const { client, ws, got, events, FakeWebSocket } = await rotatingClient();
    ws.receive(reconnectPush());
    await advance(0);
    const next = FakeWebSocket.last;
    next.fail();
    const error = events.errors.at(-1);
    assert.equal(error.kind, "rotation");
    assert.equal(error.closeCode, 1006);
    assert.match(error.message, /current connection is kept/);
    assert.equal(client.state, "open");
    ws.receive(userMessage(6));
    assert.deepEqual(got, ["user 6"]);
    ws.drop(1001, "Going away"); // API Gateway's cut
    assert.equal(client.state, "reconnecting");
    await advance(500); // the widest window (1000 here), drawn at 0.5
    assert.equal(FakeWebSocket.instances.length, 3);
    const third = FakeWebSocket.last;
    third.open();
    third.receive(pongFrame("c3"));
    welcome(third, { epoch: EPOCH, seq: 6 });
    assert.deepEqual(lastRequest(third, "recover").since, { epoch: EPOCH, seq: 6 });
    assert.deepEqual(lastRequest(third, "subscribe").since, { epoch: EPOCH, seq: 131 });
    client.close();
  });

  test("a new connection that does not open in connectTimeoutMs, or does not answer in recoveryTimeoutMs, is given up", async () => {
    for (const step of ["handshake", "answers"]) {
      const { client, ws, events, FakeWebSocket } = await rotatingClient({ connectTimeoutMs: 2000, requestTimeoutMs: 1000, recoveryTimeoutMs: 3000 });
      ws.receive(reconnectPush());
      await advance(0);
      const next = FakeWebSocket.last;
      if (step === "answers") {
        next.open();
        welcome(next, { epoch: EPOCH, seq: 5 }, "c-new");
      }
      await advance(step === "handshake" ? 2000 : 3000);
      assert.equal(events.errors.at(-1).kind, "rotation", step);
      assert.deepEqual(
        next.closeCalls.map((call) => call.code),
        [1000],
        step,
      );
      assert.deepEqual(ws.closeCalls, [], step);
      assert.equal(client.state, "open", step);
      client.close();
    }
  });

  test("the switch waits for a long replay (recoveryTimeoutMs, 30 s, not requestTimeoutMs)", async () => {
    const { client, ws, got, events, FakeWebSocket } = await rotatingClient();
    const next = await startSwitch(FakeWebSocket, ws);
    welcome(next, { epoch: EPOCH, seq: 5 }, "c-new");
    subscribed(next, "room:1", { epoch: EPOCH, seq: 131, recovered: true });
    await advance(11 * SECOND); // a 500-message replay
    answerLast(next, "recover", "recovered", { epoch: EPOCH, seq: 5, recovered: true });
    assert.deepEqual(events.errors, []);
    assert.deepEqual(ws.closeCalls.map((call) => call.code), [1000], "switched");
    next.receive(userMessage(6));
    assert.deepEqual(got, ["user 6"]);
    client.close();
  });

  test("hello or recover refused on the new connection: the switch is given up", async () => {
    for (const action of ["hello", "recover"]) {
      const { client, ws, events, FakeWebSocket } = await rotatingClient();
      const next = await startSwitch(FakeWebSocket, ws);
      if (action === "recover") welcome(next, { epoch: EPOCH, seq: 5 }, "c-new");
      answerLast(next, action, "error", { code: "unavailable", message: "later" });
      const error = events.errors.at(-1);
      assert.deepEqual([error.kind, error.frame.data.code], ["rotation", "unavailable"], action);
      assert.equal(next.closeCalls.length, 1, action);
      assert.deepEqual(ws.closeCalls, [], action);
      client.close();
    }
  });

  test("a token provider failing for the new connection gives the switch up", async () => {
    let calls = 0;
    const { client, ws, events, FakeWebSocket } = await rotatingClient({
      token: () => {
        calls += 1;
        if (calls > 1) throw new Error("auth down");
        return "t1";
      },
    });
    ws.receive(reconnectPush());
    await advance(0);
    assert.equal(FakeWebSocket.instances.length, 1);
    assert.equal(events.errors.at(-1).kind, "rotation");
    assert.match(events.errors.at(-1).message, /auth down/);
    assert.equal(client.state, "open");
    client.close();
  });

  test("the old connection cut during the switch: the switch is given up, the usual reconnect follows", async () => {
    const { client, ws, events, FakeWebSocket } = await rotatingClient();
    const next = await startSwitch(FakeWebSocket, ws);
    ws.drop(1001, "Going away");
    assert.equal(client.state, "reconnecting");
    assert.equal(next.closeCalls.length, 1, "the half-made connection is closed");
    assert.ok(!events.errors.some((e) => e.kind === "rotation"));
    await advance(500);
    assert.equal(FakeWebSocket.instances.length, 3);
    client.close();
  });

  test("reconnect() during a switch drops both connections and connects afresh", async () => {
    const { client, ws, FakeWebSocket } = await rotatingClient();
    const next = await startSwitch(FakeWebSocket, ws);
    assert.equal(client.reconnect(), true);
    assert.equal(ws.closeCalls.length, 1);
    assert.equal(next.closeCalls.length, 1);
    await advance(0);
    assert.equal(FakeWebSocket.instances.length, 3);
    const third = FakeWebSocket.last;
    third.open();
    third.receive(pongFrame("c3"));
    assert.equal(client.state, "open");
    welcome(third, { epoch: EPOCH, seq: 5 });
    assert.equal(requests(third, "recover").length, 1);
    next.receive(userMessage(99)); // the abandoned connection is not heard
    client.close();
  });

  test("close() during a switch closes both connections and stops every timer", async () => {
    let first = true;
    const tokenOnce = () => {
      if (!first) return new Promise(() => {});
      first = false;
      return "t1";
    };
    const phases = {
      "waiting out the spread": { options: { rotationSpreadMs: MINUTE }, reach: async () => {} },
      "waiting for a token": { options: { token: tokenOnce }, reach: async () => {} },
      "handshaking": { options: {}, reach: async () => {} },
      "waiting for answers": { options: {}, reach: async (next) => next.open() },
    };
    for (const [name, { options, reach }] of Object.entries(phases)) {
      const { client, ws, events, FakeWebSocket } = await rotatingClient({ connectTimeoutMs: 2000, ...options });
      ws.receive(reconnectPush());
      await advance(0);
      const next = FakeWebSocket.instances[1];
      if (next) await reach(next);
      client.close();
      assert.equal(ws.closeCalls.length, 1, name);
      if (next) assert.equal(next.closeCalls.length, 1, name);
      await advance(10 * HOUR);
      assert.ok(FakeWebSocket.instances.length <= 2, name);
      assert.deepEqual(events.errors, [], name);
      assert.equal(client.state, "closed", name);
    }
  });
});

describe("rotation: close() in Node.js", () => {
  // Real timers in a child process, as in reconnect.test.js: a timer left behind shows as a late exit.
  const cases = {
    "waiting out the spread": "",
    "waiting for answers": "ws().open();",
  };
  for (const [name, step] of Object.entries(cases)) {
    test(`lets the process exit at once: ${name}`, () => {
      const spread = name === "waiting out the spread" ? 60000 : 0;
      const script = `
        import { createWspushClient } from "@wspush/client";
        import { makeFakeWebSocket } from "./fake-websocket.js";
        const FakeWebSocket = makeFakeWebSocket();
        const ws = () => FakeWebSocket.last;
        const client = createWspushClient({
          url: "ws://h", userId: "u", WebSocket: FakeWebSocket, watchNetwork: false, token: "t",
          requestTimeoutMs: 30000, connectTimeoutMs: 30000, pongTimeoutMs: 30000,
          rotationSpreadMs: ${spread}, random: () => 0.99,
        });
        setTimeout(() => {
          ws().open();
          ws().receive({ type: "reconnect", data: { reason: "max_duration", before: Date.now() + 600000 }, id: "r" });
          setTimeout(() => {
            ${step}
            setTimeout(() => client.close(), 20);
          }, 20);
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
