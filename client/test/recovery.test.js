// Stream positions and recovery on a fake socket: the user stream's position from `welcome`
// and its frames, `hello` + `recover` on every reconnect, channels subscribed again with
// `since`, frames held while a recovery is under way and handed over in seq order, each once,
// `onResync` when the history no longer reaches back, and recoveries that fail without
// holding the stream.
import { afterEach, beforeEach, describe, test } from "node:test";
import assert from "node:assert/strict";
import { DEFAULT_REQUEST_TIMEOUT_MS } from "@wspush/client";
import { advance, answerLast, frame, lastRequest, openClient, pongFrame, requests, restoreTimers, useFakeTimers } from "./helpers.js";

const EPOCH = "0f1e2d3c4b5a6978";

function welcome(ws, stream = { epoch: EPOCH, seq: 0 }) {
  answerLast(ws, "hello", "welcome", { connectionId: "c", userId: "u-42", connectedAt: 1, expiresAt: 2, stream });
}

function subscribed(ws, channel, data = {}) {
  const request = requests(ws, "subscribe").findLast((sent) => sent.channel === channel);
  ws.receive({ ...frame("subscribed", { channel, ...data }), ref: request.ref });
}

/** A message of the user stream (`seq`, no channel); its id is the same every time it is sent. */
function userMessage(seq) {
  return { ...frame("note", { n: seq }, `user-${seq}`), seq };
}

function channelMessage(channel, seq) {
  return { ...frame("chat", { n: seq }, `${channel}-${seq}`), channel, seq };
}

/** Drop the open socket; open the next one and answer its ping. */
async function reconnect(FakeWebSocket) {
  const count = FakeWebSocket.instances.length;
  FakeWebSocket.last.drop(1006);
  await advance(1000);
  assert.equal(FakeWebSocket.instances.length, count + 1, "a new attempt");
  const ws = FakeWebSocket.last;
  ws.open();
  ws.receive(pongFrame("conn-next"));
  return ws;
}

/** A client with a user-stream handler (`got`: "user n") and resync events. */
async function recordingClient(options = {}) {
  const got = [];
  const resyncs = [];
  const started = await openClient({
    handlers: { note: (m) => got.push(`user ${m.data.n}`) },
    onResync: (event) => resyncs.push(event),
    ...options,
  });
  return { ...started, got, resyncs };
}

describe("the user stream", () => {
  beforeEach(useFakeTimers);
  afterEach(restoreTimers);

  test("the first connection says hello and learns where the stream stands; no recover, no resync", async () => {
    const { client, ws, got, resyncs } = await recordingClient();
    const hello = lastRequest(ws, "hello");
    assert.deepEqual(Object.keys(hello).sort(), ["action", "ref"]);
    welcome(ws, { epoch: EPOCH, seq: 57 });
    assert.deepEqual(requests(ws, "recover"), []);
    ws.receive(userMessage(58));
    assert.deepEqual(got, ["user 58"], "nothing is held on the first connection");
    assert.deepEqual(resyncs, []);
    client.close();
  });

  test("its position moves with frames that carry seq and no channel; others leave it", async () => {
    const { client, ws, FakeWebSocket } = await recordingClient();
    welcome(ws, { epoch: EPOCH, seq: 57 });
    ws.receive(userMessage(58));
    ws.receive(userMessage(59));
    ws.receive(frame("note", { n: "no seq" })); // connection or broadcast message
    ws.receive(channelMessage("room:1", 500)); // a channel's seq is not the user's
    const next = await reconnect(FakeWebSocket);
    welcome(next, { epoch: EPOCH, seq: 63 });
    assert.deepEqual(lastRequest(next, "recover").since, { epoch: EPOCH, seq: 59 });
    client.close();
  });

  test("after a reconnect its frames wait for recovered, then come in seq order, each once", async () => {
    const { client, ws, got, resyncs, FakeWebSocket } = await recordingClient();
    welcome(ws, { epoch: EPOCH, seq: 5 });
    ws.receive(userMessage(6));
    ws.receive(userMessage(7));
    got.length = 0;

    const next = await reconnect(FakeWebSocket);
    next.receive(userMessage(10)); // live, before the welcome even
    welcome(next, { epoch: EPOCH, seq: 10 });
    const recover = lastRequest(next, "recover");
    assert.deepEqual(recover.since, { epoch: EPOCH, seq: 7 });
    assert.ok(typeof recover.ref === "string" && recover.ref !== "");
    // the replay, interleaved with live frames and copies of both
    next.receive(userMessage(8));
    next.receive(userMessage(11)); // live
    next.receive(userMessage(9));
    next.receive(userMessage(10)); // replayed: its copy arrived live
    next.receive(userMessage(7)); // already delivered on the last connection
    next.receive({ ...frame("note", { n: "stale" }, "other-id"), seq: 6 }); // at or before since
    next.receive(frame("note", { n: "no seq" })); // not part of the stream: not held
    assert.deepEqual(got, ["user no seq"], "the stream is held until recovered");

    answerLast(next, "recover", "recovered", { epoch: EPOCH, seq: 10, recovered: true });
    assert.deepEqual(got, ["user no seq", "user 8", "user 9", "user 10", "user 11"]);
    next.receive(userMessage(12));
    next.receive(userMessage(11));
    assert.deepEqual(got.slice(5), ["user 12"], "live again; a copy is still dropped");
    assert.deepEqual(resyncs, []);

    // and the position is 12 for the next time
    const third = await reconnect(FakeWebSocket);
    welcome(third, { epoch: EPOCH, seq: 12 });
    assert.deepEqual(lastRequest(third, "recover").since, { epoch: EPOCH, seq: 12 });
    client.close();
  });

  test("with de-duplication off (dedupeSize: 0), a seq held twice is still handed over once", async () => {
    const { client, ws, got, FakeWebSocket } = await recordingClient({ dedupeSize: 0 });
    welcome(ws, { epoch: EPOCH, seq: 5 });
    const next = await reconnect(FakeWebSocket);
    welcome(next, { epoch: EPOCH, seq: 7 });
    next.receive(userMessage(7)); // live
    next.receive(userMessage(6)); // replayed
    next.receive(userMessage(7)); // replayed copy of the live one
    answerLast(next, "recover", "recovered", { epoch: EPOCH, seq: 7, recovered: true });
    assert.deepEqual(got, ["user 6", "user 7"]);
    client.close();
  });

  for (const dedupeSize of [undefined, 0]) {
    test(`a live frame past a gap leaves the position at the end of the unbroken run; the recovery fills the gap, the frame ahead is not handed over again (dedupeSize ${dedupeSize ?? "default"})`, async () => {
      const { client, ws, got, resyncs, FakeWebSocket } = await recordingClient({ dedupeSize });
      welcome(ws, { epoch: EPOCH, seq: 5 });
      ws.receive(userMessage(7)); // 6 comes later: the server posts it again after a throttle
      ws.receive(userMessage(9));
      assert.deepEqual(got, ["user 7", "user 9"], "frames past a gap are handed over at once");
      const next = await reconnect(FakeWebSocket); // 6 and 8 are lost with the old connection
      welcome(next, { epoch: EPOCH, seq: 9 });
      assert.deepEqual(lastRequest(next, "recover").since, { epoch: EPOCH, seq: 5 });
      for (const seq of [6, 7, 8, 9]) next.receive(userMessage(seq)); // the replay
      answerLast(next, "recover", "recovered", { epoch: EPOCH, seq: 9, recovered: true });
      assert.deepEqual(got, ["user 7", "user 9", "user 6", "user 8"]);
      next.receive(userMessage(7)); // a late copy
      next.receive(userMessage(10));
      assert.deepEqual(got.slice(4), ["user 10"]);
      assert.deepEqual(resyncs, []);
      const third = await reconnect(FakeWebSocket);
      welcome(third, { epoch: EPOCH, seq: 10 });
      assert.deepEqual(lastRequest(third, "recover").since, { epoch: EPOCH, seq: 10 });
      client.close();
    });
  }

  test("a late live frame that fills the gap moves the position over the frames received ahead", async () => {
    const { client, ws, got, FakeWebSocket } = await recordingClient({ dedupeSize: 0 });
    welcome(ws, { epoch: EPOCH, seq: 5 });
    ws.receive(userMessage(7));
    ws.receive(userMessage(8));
    ws.receive(userMessage(6));
    ws.receive(userMessage(8)); // a copy
    ws.receive(userMessage(5)); // at the position
    assert.deepEqual(got, ["user 7", "user 8", "user 6"]);
    const next = await reconnect(FakeWebSocket);
    welcome(next, { epoch: EPOCH, seq: 8 });
    assert.deepEqual(lastRequest(next, "recover").since, { epoch: EPOCH, seq: 8 });
    client.close();
  });

  test("a new epoch forgets the seqs received ahead: the new stream's frames with those seqs are handed over", async () => {
    const { client, ws, got, resyncs, FakeWebSocket } = await recordingClient({ dedupeSize: 0 });
    welcome(ws, { epoch: EPOCH, seq: 5 });
    ws.receive(userMessage(7));
    const next = await reconnect(FakeWebSocket);
    welcome(next, { epoch: "1111111111111111", seq: 0 });
    answerLast(next, "recover", "recovered", { epoch: "1111111111111111", seq: 0, recovered: false });
    assert.deepEqual(resyncs, [{ stream: "user", epoch: "1111111111111111", seq: 0 }]);
    for (const seq of [1, 2, 3, 4, 5, 6, 7]) next.receive(userMessage(seq));
    assert.deepEqual(got, ["user 7", "user 1", "user 2", "user 3", "user 4", "user 5", "user 6", "user 7"]);
    const third = await reconnect(FakeWebSocket);
    welcome(third, { epoch: "1111111111111111", seq: 7 });
    assert.deepEqual(lastRequest(third, "recover").since, { epoch: "1111111111111111", seq: 7 });
    client.close();
  });

  test("recovered: false → onResync with the new position, then the frames after it", async () => {
    const listened = [];
    const { client, ws, got, resyncs, FakeWebSocket } = await recordingClient();
    const stop = client.onResync((event) => listened.push(event));
    welcome(ws, { epoch: EPOCH, seq: 5 });
    got.length = 0;

    const next = await reconnect(FakeWebSocket);
    welcome(next, { epoch: "ffffffffffffffff", seq: 40 });
    assert.deepEqual(lastRequest(next, "recover").since, { epoch: EPOCH, seq: 5 });
    next.receive(userMessage(40)); // covered by the reload
    next.receive(userMessage(42));
    next.receive(userMessage(41));
    answerLast(next, "recover", "recovered", { epoch: "ffffffffffffffff", seq: 40, recovered: false });
    const expected = { stream: "user", epoch: "ffffffffffffffff", seq: 40 };
    assert.deepEqual(resyncs, [expected]);
    assert.deepEqual(listened, [expected], "the option and onResync() listeners both hear it");
    assert.deepEqual(got, ["user 41", "user 42"]);

    // the new position is used from now on; a stopped listener hears nothing more
    stop();
    const third = await reconnect(FakeWebSocket);
    welcome(third, { epoch: "ffffffffffffffff", seq: 42 });
    assert.deepEqual(lastRequest(third, "recover").since, { epoch: "ffffffffffffffff", seq: 42 });
    answerLast(third, "recover", "recovered", { epoch: "ffffffffffffffff", seq: 80, recovered: false });
    assert.equal(resyncs.length, 2);
    assert.equal(listened.length, 1);
    client.close();
  });

  test("a resync listener that throws is reported; the others still hear it and frames still flow", async () => {
    const { client, ws, got, resyncs, events, FakeWebSocket } = await recordingClient();
    client.onResync(() => {
      throw new Error("reload failed");
    });
    welcome(ws, { epoch: EPOCH, seq: 5 });
    const next = await reconnect(FakeWebSocket);
    welcome(next);
    next.receive(userMessage(1));
    answerLast(next, "recover", "recovered", { epoch: EPOCH, seq: 0, recovered: false });
    assert.equal(resyncs.length, 1);
    assert.ok(events.errors.some((e) => e.kind === "handler" && /reload failed/.test(e.message)));
    assert.deepEqual(got, ["user 1"]);
    client.close();
  });

  test("user history off (welcome.stream null): no recover; what was held is handed over", async () => {
    const { client, ws, got, FakeWebSocket } = await recordingClient();
    welcome(ws, { epoch: EPOCH, seq: 5 });
    const next = await reconnect(FakeWebSocket);
    next.receive(userMessage(7));
    next.receive(userMessage(6));
    welcome(next, null);
    assert.deepEqual(requests(next, "recover"), []);
    assert.deepEqual(got, ["user 6", "user 7"]);
    // and no position any more: the next reconnect recovers nothing
    const third = await reconnect(FakeWebSocket);
    welcome(third, { epoch: EPOCH, seq: 9 });
    assert.deepEqual(requests(third, "recover"), []);
    client.close();
  });

  test("a recover answered with an error hands over what it held, in seq order, and is reported", async () => {
    for (const code of ["unavailable", "invalid_since", "no_history"]) {
      const { client, ws, got, resyncs, events, FakeWebSocket } = await recordingClient();
      welcome(ws, { epoch: EPOCH, seq: 5 });
      const next = await reconnect(FakeWebSocket);
      welcome(next, { epoch: EPOCH, seq: 8 });
      next.receive(userMessage(8));
      next.receive(userMessage(6));
      next.receive(userMessage(5));
      answerLast(next, "recover", "error", { code, message: `${code}!` });
      assert.deepEqual(got, ["user 6", "user 8"], code);
      assert.deepEqual(
        events.errors.map((e) => [e.kind, e.code]),
        [["server", code]],
      );
      assert.deepEqual(resyncs, []);
      next.receive(userMessage(9));
      assert.deepEqual(got.at(-1), "user 9", "live frames flow again");
      client.close();
    }
  });

  test("a hello answered with an error hands over what it held too", async () => {
    const { client, ws, got, events, FakeWebSocket } = await recordingClient();
    welcome(ws, { epoch: EPOCH, seq: 5 });
    const next = await reconnect(FakeWebSocket);
    next.receive(userMessage(7));
    next.receive(userMessage(6));
    answerLast(next, "hello", "error", { code: "unavailable", message: "try later" });
    assert.deepEqual(got, ["user 6", "user 7"]);
    assert.deepEqual(requests(next, "recover"), []);
    assert.equal(events.errors.at(-1).code, "unavailable");
    client.close();
  });

  test("a recover with no answer in recoveryTimeoutMs: held frames go, a timeout is reported; a late answer still counts", async () => {
    const { client, ws, got, resyncs, events, FakeWebSocket } = await recordingClient({ recoveryTimeoutMs: 2000 });
    welcome(ws, { epoch: EPOCH, seq: 5 });
    const next = await reconnect(FakeWebSocket);
    welcome(next, { epoch: EPOCH, seq: 9 });
    next.receive(userMessage(7));
    next.receive(userMessage(6));
    await advance(1999);
    assert.deepEqual(got, []);
    await advance(1);
    assert.deepEqual(got, ["user 6", "user 7"]);
    const error = events.errors.at(-1);
    assert.deepEqual([error.kind, error.code], ["request", "timeout"]);
    assert.match(error.message, /recover/);
    next.receive(userMessage(8));
    assert.equal(got.at(-1), "user 8", "live frames flow");
    // the late answer: recovered false still tells the app
    answerLast(next, "recover", "recovered", { epoch: EPOCH, seq: 3, recovered: false });
    assert.deepEqual(resyncs, [{ stream: "user", epoch: EPOCH, seq: 3 }]);
    client.close();
  });

  test("a recovery waits recoveryTimeoutMs (30 s), not requestTimeoutMs: a 500-message replay (some 11 s) comes in order", async () => {
    const { client, ws, got, resyncs, events, FakeWebSocket } = await recordingClient();
    welcome(ws, { epoch: EPOCH, seq: 5 });
    const next = await reconnect(FakeWebSocket);
    await advance(DEFAULT_REQUEST_TIMEOUT_MS); // the welcome comes late (a cold start)
    welcome(next, { epoch: EPOCH, seq: 505 });
    next.receive(userMessage(506)); // live
    for (let seq = 6; seq <= 505; seq += 1) {
      next.receive(userMessage(seq));
      await advance(20); // the server posts one frame at a time
    }
    assert.deepEqual(events.errors, [], "no timeout");
    assert.deepEqual(got, [], "held until recovered");
    answerLast(next, "recover", "recovered", { epoch: EPOCH, seq: 505, recovered: true });
    assert.equal(got.length, 501);
    assert.deepEqual(got, Array.from({ length: 501 }, (_, i) => `user ${i + 6}`));
    assert.deepEqual(resyncs, []);
    client.close();
  });

  test("a channel's subscribe with since waits recoveryTimeoutMs too, and so does its subscribe() promise", async () => {
    const { client, ws, events, FakeWebSocket } = await recordingClient({ requestTimeoutMs: 1000, recoveryTimeoutMs: 5000 });
    welcome(ws, { epoch: EPOCH, seq: 0 });
    const first = client.subscribe("room:1", () => {});
    subscribed(ws, "room:1", { epoch: EPOCH, seq: 131 });
    await first;
    const next = await reconnect(FakeWebSocket);
    welcome(next, { epoch: EPOCH, seq: 0 });
    answerLast(next, "recover", "recovered", { epoch: EPOCH, seq: 0, recovered: true });
    const again = client.subscribe("room:1", () => {}); // waits on the subscribe under way
    let settled = false;
    again.then(() => (settled = true), () => (settled = true));
    await advance(4999);
    assert.equal(settled, false);
    assert.deepEqual(events.errors, []);
    await advance(1);
    assert.equal(events.errors.at(-1).code, "timeout");
    await assert.rejects(again, { code: "timeout" });
    client.close();
  });

  test("a hello with no answer in time does not hold the stream either", async () => {
    const { client, ws, got, events, FakeWebSocket } = await recordingClient({ recoveryTimeoutMs: 2000 });
    welcome(ws, { epoch: EPOCH, seq: 5 });
    const next = await reconnect(FakeWebSocket);
    next.receive(userMessage(6));
    await advance(2000);
    assert.deepEqual(got, ["user 6"]);
    assert.match(events.errors.at(-1).message, /hello/);
    client.close();
  });

  test("a hello given up (no answer in time) whose welcome comes late still recovers what was missed", async () => {
    const { client, ws, got, resyncs, events, FakeWebSocket } = await recordingClient({ recoveryTimeoutMs: 5000, dedupeSize: 0 });
    welcome(ws, { epoch: EPOCH, seq: 5 });
    const next = await reconnect(FakeWebSocket); // 6..9 were sent while away
    next.receive(userMessage(10)); // live, held for the recovery
    await advance(5000); // the welcome route is slow: the hello is given up
    assert.match(events.errors.at(-1).message, /hello/);
    assert.deepEqual(got, ["user 10"]);
    welcome(next, { epoch: EPOCH, seq: 10 });
    assert.deepEqual(lastRequest(next, "recover").since, { epoch: EPOCH, seq: 5 });
    next.receive(userMessage(11)); // live: held again until recovered
    for (const seq of [6, 7, 8, 9, 10]) next.receive(userMessage(seq)); // the replay
    assert.deepEqual(got, ["user 10"]);
    answerLast(next, "recover", "recovered", { epoch: EPOCH, seq: 10, recovered: true });
    assert.deepEqual(got, ["user 10", "user 6", "user 7", "user 8", "user 9", "user 11"]);
    assert.deepEqual(resyncs, []);
    const third = await reconnect(FakeWebSocket);
    welcome(third, { epoch: EPOCH, seq: 11 });
    assert.deepEqual(lastRequest(third, "recover").since, { epoch: EPOCH, seq: 11 });
    client.close();
  });

  test("a late welcome whose recover is answered recovered: false calls onResync", async () => {
    const { client, ws, resyncs, FakeWebSocket } = await recordingClient({ recoveryTimeoutMs: 5000 });
    welcome(ws, { epoch: EPOCH, seq: 5 });
    const next = await reconnect(FakeWebSocket);
    await advance(5000);
    welcome(next, { epoch: EPOCH, seq: 900 });
    answerLast(next, "recover", "recovered", { epoch: EPOCH, seq: 900, recovered: false, reason: "too_far" });
    assert.deepEqual(resyncs, [{ stream: "user", epoch: EPOCH, seq: 900, reason: "too_far" }]);
    client.close();
  });

  test("a connection lost during a recovery: the next one asks from the same place; nothing is lost or doubled", async () => {
    const { client, ws, got, FakeWebSocket } = await recordingClient();
    welcome(ws, { epoch: EPOCH, seq: 5 });
    const second = await reconnect(FakeWebSocket);
    welcome(second, { epoch: EPOCH, seq: 8 });
    second.receive(userMessage(7)); // held, then the connection goes
    const third = await reconnect(FakeWebSocket);
    welcome(third, { epoch: EPOCH, seq: 8 });
    assert.deepEqual(lastRequest(third, "recover").since, { epoch: EPOCH, seq: 5 });
    third.receive(userMessage(6));
    third.receive(userMessage(7));
    third.receive(userMessage(8));
    answerLast(third, "recover", "recovered", { epoch: EPOCH, seq: 8, recovered: true });
    assert.deepEqual(got, ["user 6", "user 7", "user 8"]);
    client.close();
  });

  test("close() during a recovery drops what it held and leaves no timer", async () => {
    const { client, ws, got, events, FakeWebSocket } = await recordingClient();
    welcome(ws, { epoch: EPOCH, seq: 5 });
    const next = await reconnect(FakeWebSocket);
    welcome(next, { epoch: EPOCH, seq: 9 });
    next.receive(userMessage(6));
    client.close();
    await advance(60 * 60 * 1000);
    assert.deepEqual(got, []);
    assert.deepEqual(events.errors, []);
  });
});

describe("channel streams", () => {
  beforeEach(useFakeTimers);
  afterEach(restoreTimers);

  /** A client subscribed to room:1 at `seq` (its handler: "room:1 n"). */
  async function subscribedClient(seq = 131, options = {}) {
    const started = await recordingClient(options);
    const { client, ws, got } = started;
    welcome(ws);
    const subscription = client.subscribe("room:1", (m) => got.push(`${m.channel} ${m.data.n}`));
    subscribed(ws, "room:1", { epoch: EPOCH, seq });
    await subscription;
    return { ...started, subscription };
  }

  test("subscribed's epoch and seq, then the channel's frames, move its position; a resubscribe carries since", async () => {
    const { client, ws, FakeWebSocket } = await subscribedClient(131);
    assert.deepEqual(Object.keys(lastRequest(ws, "subscribe")).sort(), ["action", "channel", "ref"], "no since the first time");
    ws.receive(channelMessage("room:1", 132));
    ws.receive(channelMessage("room:2", 900)); // another channel's
    ws.receive(userMessage(3)); // the user's
    const next = await reconnect(FakeWebSocket);
    const request = lastRequest(next, "subscribe");
    assert.equal(request.channel, "room:1");
    assert.deepEqual(request.since, { epoch: EPOCH, seq: 132 });
    client.close();
  });

  test("a channel frame past a gap: the resubscribe asks from before the gap; the frame ahead is not handed over again", async () => {
    const { client, ws, got, FakeWebSocket } = await subscribedClient(131, { dedupeSize: 0 });
    got.length = 0;
    ws.receive(channelMessage("room:1", 133));
    const next = await reconnect(FakeWebSocket);
    welcome(next);
    answerLast(next, "recover", "recovered", { epoch: EPOCH, seq: 0, recovered: true });
    assert.deepEqual(lastRequest(next, "subscribe").since, { epoch: EPOCH, seq: 131 });
    next.receive(channelMessage("room:1", 132));
    next.receive(channelMessage("room:1", 133));
    subscribed(next, "room:1", { epoch: EPOCH, seq: 133, recovered: true });
    assert.deepEqual(got, ["room:1 133", "room:1 132"]);
    client.close();
  });

  test("a namespace without history gives no position: subscribed again without since", async () => {
    const { client, ws, FakeWebSocket } = await recordingClient();
    welcome(ws);
    client.subscribe("lobby:1", () => {});
    subscribed(ws, "lobby:1");
    const next = await reconnect(FakeWebSocket);
    assert.equal(lastRequest(next, "subscribe").since, undefined);
    client.close();
  });

  test("its frames wait for subscribed (recovered: true), then come in seq order, each once", async () => {
    const { client, got, resyncs, FakeWebSocket } = await subscribedClient(131);
    const sub2 = [];
    client.subscribe("room:2", (m) => sub2.push(m.data.n));
    subscribed(FakeWebSocket.last, "room:2", { epoch: EPOCH, seq: 0 });
    got.length = 0;

    const next = await reconnect(FakeWebSocket);
    welcome(next);
    answerLast(next, "recover", "recovered", { epoch: EPOCH, seq: 0, recovered: true });
    next.receive(channelMessage("room:1", 134)); // live
    next.receive(channelMessage("room:1", 132)); // replayed
    next.receive(channelMessage("room:2", 1)); // another channel: room:2 is recovering too
    next.receive(channelMessage("room:1", 133));
    next.receive(channelMessage("room:1", 134)); // replayed copy
    next.receive(userMessage(1)); // the user stream is not held by a channel's recovery
    next.receive(frame("presence.join", { channel: "room:1", userId: "u9" })); // no seq: not held
    assert.deepEqual(got, ["user 1"]);
    subscribed(next, "room:1", { epoch: EPOCH, seq: 133, recovered: true });
    assert.deepEqual(got, ["user 1", "room:1 132", "room:1 133", "room:1 134"]);
    assert.deepEqual(sub2, [], "room:2 still waits for its own answer");
    subscribed(next, "room:2", { epoch: EPOCH, seq: 1, recovered: true });
    assert.deepEqual(sub2, [1]);
    next.receive(channelMessage("room:1", 135));
    assert.equal(got.at(-1), "room:1 135");
    assert.deepEqual(resyncs, []);
    client.close();
  });

  test("subscribed with recovered: false → onResync for that channel, then the frames after its new seq", async () => {
    const { client, got, resyncs, FakeWebSocket } = await subscribedClient(131);
    got.length = 0;
    const next = await reconnect(FakeWebSocket);
    welcome(next);
    next.receive(channelMessage("room:1", 901));
    next.receive(channelMessage("room:1", 900));
    subscribed(next, "room:1", { epoch: EPOCH, seq: 900, recovered: false });
    assert.deepEqual(resyncs, [{ stream: "room:1", epoch: EPOCH, seq: 900 }]);
    assert.deepEqual(got, ["room:1 901"]);
    const third = await reconnect(FakeWebSocket);
    assert.deepEqual(lastRequest(third, "subscribe").since, { epoch: EPOCH, seq: 901 });
    client.close();
  });

  test("a namespace that keeps no history any more: onResync with no position, reason no_history", async () => {
    const { client, got, resyncs, FakeWebSocket } = await subscribedClient(131);
    got.length = 0;
    const next = await reconnect(FakeWebSocket);
    next.receive({ ...frame("chat", { n: "live" }, "x1"), channel: "room:1", seq: 1 });
    subscribed(next, "room:1", { recovered: false });
    assert.deepEqual(resyncs, [{ stream: "room:1", epoch: null, seq: null, reason: "no_history" }]);
    assert.deepEqual(got, ["room:1 live"]);
    const third = await reconnect(FakeWebSocket);
    assert.equal(lastRequest(third, "subscribe").since, undefined);
    client.close();
  });

  test("invalid_since: what was held is handed over, and the channel is subscribed again without since", async () => {
    const { client, got, events, subscription, FakeWebSocket } = await subscribedClient(131);
    got.length = 0;
    const next = await reconnect(FakeWebSocket);
    next.receive(channelMessage("room:1", 133));
    next.receive(channelMessage("room:1", 132));
    const request = lastRequest(next, "subscribe");
    next.receive({ ...frame("error", { code: "invalid_since", message: "bad since", channel: "room:1" }), ref: request.ref });
    assert.deepEqual(got, ["room:1 132", "room:1 133"]);
    assert.equal(events.errors.at(-1).code, "invalid_since");
    const again = lastRequest(next, "subscribe");
    assert.notEqual(again.ref, request.ref);
    assert.equal(again.since, undefined);
    subscribed(next, "room:1", { epoch: EPOCH, seq: 140 });
    assert.deepEqual(client.channels(), ["room:1"], "the subscription lives on");
    next.receive(channelMessage("room:1", 141));
    assert.equal(got.at(-1), "room:1 141");
    await subscription;
    client.close();
  });

  test("a resubscribe refused (forbidden) hands over what it held, then the subscription is over", async () => {
    const refusals = [];
    const { client, got, FakeWebSocket } = await recordingClient();
    welcome(FakeWebSocket.last);
    client.subscribe("secret:1", (m) => got.push(m.data.n), { onError: (e) => refusals.push(e.code) });
    subscribed(FakeWebSocket.last, "secret:1", { epoch: EPOCH, seq: 1 });
    const next = await reconnect(FakeWebSocket);
    next.receive(channelMessage("secret:1", 2));
    const request = lastRequest(next, "subscribe");
    next.receive({ ...frame("error", { code: "forbidden", message: "no", channel: "secret:1" }), ref: request.ref });
    assert.deepEqual(got, [2]);
    assert.deepEqual(refusals, ["forbidden"]);
    assert.deepEqual(client.channels(), []);
    client.close();
  });

  test("a subscribe with since and no answer in time: held frames go and a timeout is reported; a late answer completes it", async () => {
    const { client, got, resyncs, events, FakeWebSocket } = await subscribedClient(131, { recoveryTimeoutMs: 3000 });
    got.length = 0;
    const next = await reconnect(FakeWebSocket);
    next.receive(channelMessage("room:1", 133));
    next.receive(channelMessage("room:1", 132));
    await advance(3000);
    assert.deepEqual(got, ["room:1 132", "room:1 133"]);
    const error = events.errors.at(-1);
    assert.deepEqual([error.kind, error.code, error.error.channel], ["request", "timeout", "room:1"]);
    next.receive(channelMessage("room:1", 134));
    assert.equal(got.at(-1), "room:1 134");
    subscribed(next, "room:1", { epoch: EPOCH, seq: 133, recovered: true });
    assert.deepEqual(resyncs, []);
    const third = await reconnect(FakeWebSocket);
    assert.deepEqual(lastRequest(third, "subscribe").since, { epoch: EPOCH, seq: 134 });
    client.close();
  });

  test("a channel left during its recovery: no resync, its handler gets nothing more, it is left", async () => {
    const { client, got, resyncs, subscription, FakeWebSocket } = await subscribedClient(131);
    got.length = 0;
    const next = await reconnect(FakeWebSocket);
    next.receive(channelMessage("room:1", 132));
    const left = subscription.unsubscribe();
    await advance(0);
    subscribed(next, "room:1", { epoch: EPOCH, seq: 132, recovered: false });
    assert.deepEqual(got, []);
    assert.deepEqual(resyncs, []);
    const leave = lastRequest(next, "unsubscribe");
    next.receive({ ...frame("unsubscribed", { channel: "room:1" }), ref: leave.ref });
    await left;
    assert.deepEqual(client.channels(), []);
    client.close();
  });
});
