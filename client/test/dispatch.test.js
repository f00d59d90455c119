import { afterEach, beforeEach, describe, test } from "node:test";
import assert from "node:assert/strict";
import { advance, frame, openClient, pongFrame, restoreTimers, useFakeTimers } from "./helpers.js";

describe("dispatch", () => {
  beforeEach(useFakeTimers);
  afterEach(restoreTimers);

  test("messages go to the handlers of their type, then to the wildcard", async () => {
    const calls = [];
    const { client, ws } = await openClient({
      handlers: {
        "order.updated": (m) => calls.push(`map:${m.type}:${m.data.orderId}`),
        "*": (m) => calls.push(`map*:${m.type}`),
      },
    });
    calls.length = 0; // forget the pong of the open
    const off = client.on("order.updated", (m) => calls.push(`on:${m.type}`));
    client.on("*", (m) => calls.push(`on*:${m.type}`));

    const message = frame("order.updated", { orderId: 7 });
    ws.receive(message);
    assert.deepEqual(calls, ["map:order.updated:7", "on:order.updated", "map*:order.updated", "on*:order.updated"]);

    calls.length = 0;
    off();
    ws.receive(frame("chat.message", { text: "hi" }));
    ws.receive(frame("order.updated", { orderId: 8 }));
    assert.deepEqual(calls, ["map*:chat.message", "on*:chat.message", "map:order.updated:8", "map*:order.updated", "on*:order.updated"]);
    client.close();
  });

  test("handlers receive the whole envelope {type, data, id, ts}", async () => {
    let received;
    const { client, ws } = await openClient();
    client.on("hello", (m) => {
      received = m;
    });
    ws.receive({ type: "hello", data: { text: "hi" }, id: "5f0c", ts: 1795867200000 });
    assert.deepEqual(received, { type: "hello", data: { text: "hi" }, id: "5f0c", ts: 1795867200000 });
    client.close();
  });

  test("pong and error frames are dispatched too; error frames also reach onError", async () => {
    const seen = [];
    const { client, ws, events } = await openClient({}, { pong: false });
    client.on("pong", (m) => seen.push(`pong:${m.data.connectionId}`));
    client.on("error", (m) => seen.push(`error:${m.data.code}`));
    const errors = [];
    client.onError((e) => errors.push(e));
    ws.receive(pongFrame("c-1"));
    const errorFrame = frame("error", { code: "unknown_action", message: "unknown action 'x'; supported actions: ping" });
    ws.receive(errorFrame);
    assert.deepEqual(seen, ["pong:c-1", "error:unknown_action"]);
    assert.equal(errors.length, 1);
    assert.deepEqual(errors[0], {
      kind: "server",
      code: "unknown_action",
      message: "unknown action 'x'; supported actions: ping",
      frame: errorFrame,
    });
    assert.deepEqual(events.errors, errors, "the onError option and onError() listeners both hear it");
    client.close();
  });

  test("setHandlers replaces the handlers without reconnecting", async () => {
    const calls = [];
    const { client, FakeWebSocket, ws } = await openClient({ handlers: { a: () => calls.push("first") } });
    ws.receive(frame("a", 1));
    client.setHandlers({ a: () => calls.push("second"), b: () => calls.push("b") });
    ws.receive(frame("a", 2));
    ws.receive(frame("b", 3));
    client.setHandlers(null);
    ws.receive(frame("a", 4));
    assert.deepEqual(calls, ["first", "second", "b"]);
    assert.equal(FakeWebSocket.instances.length, 1);
    assert.deepEqual(ws.closeCalls, []);
    assert.equal(client.state, "open");
    await advance(60_000);
    assert.equal(FakeWebSocket.instances.length, 1);
    client.close();
  });

  test("a handlers function is read at each dispatch (latest handlers, e.g. from a React ref)", async () => {
    const ref = { current: { t: () => calls.push("v1") } };
    const calls = [];
    const { client, ws } = await openClient({ handlers: () => ref.current });
    ws.receive(frame("t", null));
    ref.current = { t: () => calls.push("v2") };
    ws.receive(frame("t", null));
    ref.current = null;
    ws.receive(frame("t", null));
    assert.deepEqual(calls, ["v1", "v2"]);
    client.close();
  });

  test("a duplicate id is dropped, also across reconnects", async () => {
    const ids = [];
    const { client, FakeWebSocket, ws } = await openClient({ handlers: { "*": (m) => ids.push(m.id ?? "(none)") } });
    ids.length = 0;
    ws.receive(frame("x", 1, "id-1"));
    ws.receive(frame("x", 1, "id-1"));
    ws.receive(frame("x", 2, "id-2"));
    ws.receive({ type: "x", data: 3 }); // no id: never a duplicate
    ws.receive({ type: "x", data: 3 });
    ws.drop();
    await advance(100);
    FakeWebSocket.last.open();
    FakeWebSocket.last.receive(frame("x", 1, "id-1"));
    FakeWebSocket.last.receive(frame("x", 4, "id-4"));
    assert.deepEqual(ids, ["id-1", "id-2", "(none)", "(none)", "id-4"]);
    client.close();
  });

  test("de-duplication memory is bounded (dedupeSize)", async () => {
    const ids = [];
    const { client, ws } = await openClient({ dedupeSize: 2, handlers: { x: (m) => ids.push(m.id) } });
    for (const id of ["a", "b", "a", "c", "a", "c"]) ws.receive(frame("x", null, id));
    // remembers {a,b} → a dropped → c forgets a → a delivered again (forgets b) → c dropped
    assert.deepEqual(ids, ["a", "b", "c", "a"]);
    client.close();
  });

  test("a frame that is not JSON (or not an envelope) is reported and ignored, never thrown", async () => {
    const seen = [];
    const { client, ws, events } = await openClient({ handlers: { "*": (m) => seen.push(m.type) } });
    seen.length = 0;
    assert.doesNotThrow(() => ws.receive("pong"));
    assert.doesNotThrow(() => ws.receive("[1,2]"));
    assert.doesNotThrow(() => ws.receive('{"data":{}}'));
    ws.receive(frame("still.works", {}));
    assert.deepEqual(seen, ["still.works"]);
    assert.deepEqual(
      events.errors.map((e) => [e.kind, e.message, e.raw]),
      [
        ["bad_frame", "frame is not valid JSON", "pong"],
        ["bad_frame", "frame is not a JSON object", "[1,2]"],
        ["bad_frame", 'frame has no string "type"', '{"data":{}}'],
      ],
    );
    assert.equal(client.state, "open");
    client.close();
  });

  test("a handler that throws is reported; the other handlers still run", async () => {
    const calls = [];
    const { client, ws, events } = await openClient({
      handlers: {
        boom: () => {
          throw new Error("bad handler");
        },
      },
    });
    client.on("boom", () => calls.push("on"));
    client.on("*", () => calls.push("*"));
    ws.receive(frame("boom", null));
    assert.deepEqual(calls.slice(-2), ["on", "*"]);
    const error = events.errors.at(-1);
    assert.equal(error.kind, "handler");
    assert.match(error.message, /handler for "boom" threw: bad handler/);
    assert.equal(error.frame.type, "boom");
    client.close();
  });

  test("a handler may close the client; later handlers are skipped", async () => {
    const calls = [];
    const { client, ws } = await openClient();
    client.on("bye", () => {
      calls.push("first");
      client.close();
    });
    client.on("*", () => calls.push("wildcard"));
    ws.receive(frame("bye", null));
    assert.deepEqual(calls, ["first"]);
    assert.equal(client.state, "closed");
  });

  test("off() and double unsubscribe are harmless", async () => {
    const { client, ws } = await openClient();
    const calls = [];
    const handler = () => calls.push(1);
    const unsubscribe = client.on("t", handler);
    unsubscribe();
    unsubscribe();
    client.off("t", handler);
    client.off("never", handler);
    ws.receive(frame("t", null));
    assert.deepEqual(calls, []);
    client.close();
  });
});
