import { afterEach, beforeEach, describe, test } from "node:test";
import assert from "node:assert/strict";
import { buildUrl, createWspushClient, parseFrame, RecentIds } from "@wspush/client";
import { makeFakeWebSocket } from "./fake-websocket.js";
import { advance, openClient, restoreTimers, startClient, useFakeTimers } from "./helpers.js";

describe("buildUrl", () => {
  test("adds the parameters URL-encoded, spaces as %20", () => {
    assert.equal(
      buildUrl("wss://abc.execute-api.eu-west-1.amazonaws.com/prod", { userId: "a b&c=d/é", platform: "pc" }),
      "wss://abc.execute-api.eu-west-1.amazonaws.com/prod?userId=a%20b%26c%3Dd%2F%C3%A9&platform=pc",
    );
  });

  test("keeps an existing query, drops empty values and a fragment", () => {
    assert.equal(
      buildUrl("ws://127.0.0.1:3001/?x=1#frag", { userId: "u", platform: undefined, token: "", extra: null }),
      "ws://127.0.0.1:3001/?x=1&userId=u",
    );
    assert.equal(buildUrl("ws://h/?", { userId: "u" }), "ws://h/?userId=u");
    assert.equal(buildUrl("ws://h", {}), "ws://h");
  });
});

describe("parseFrame", () => {
  test("accepts an object with a string type", () => {
    assert.deepEqual(parseFrame('{"type":"t","data":1,"id":"x","ts":2}'), {
      message: { type: "t", data: 1, id: "x", ts: 2 },
    });
  });

  test("describes what is wrong with anything else", () => {
    assert.deepEqual(parseFrame("pong"), { error: "frame is not valid JSON" });
    assert.deepEqual(parseFrame("[1]"), { error: "frame is not a JSON object" });
    assert.deepEqual(parseFrame("null"), { error: "frame is not a JSON object" });
    assert.deepEqual(parseFrame('{"data":1}'), { error: 'frame has no string "type"' });
    assert.deepEqual(parseFrame('{"type":""}'), { error: 'frame has no string "type"' });
    assert.deepEqual(parseFrame(new ArrayBuffer(2)), { error: "frame is not text" });
  });
});

describe("RecentIds", () => {
  test("remembers only the last N ids", () => {
    const recent = new RecentIds(3);
    assert.equal(recent.seen("a"), false);
    assert.equal(recent.seen("b"), false);
    assert.equal(recent.seen("c"), false);
    assert.equal(recent.seen("a"), true);
    assert.equal(recent.seen("d"), false); // forgets "a", the oldest
    assert.equal(recent.ids.size, 3);
    assert.equal(recent.seen("a"), false);
    assert.equal(recent.seen("d"), true);
  });

  test("forgets an id once it is windowMs old, even with room to spare", () => {
    let now = 0;
    const recent = new RecentIds(1000, 30 * 60_000, () => now);
    assert.equal(recent.seen("a"), false);
    now = 10 * 60_000;
    assert.equal(recent.seen("b"), false);
    now = 30 * 60_000 - 1; // a late redelivery of "a", 30 minutes on: still caught
    assert.equal(recent.seen("a"), true);
    now = 30 * 60_000;
    assert.equal(recent.seen("a"), false, "30 minutes old: forgotten, so delivered again");
    assert.equal(recent.seen("b"), true);
    assert.deepEqual([...recent.ids.keys()], ["b", "a"]);
  });

  test("windowMs 0: by count only", () => {
    let now = 0;
    const recent = new RecentIds(2, 0, () => now);
    recent.seen("a");
    now = 365 * 24 * 3_600_000;
    assert.equal(recent.seen("a"), true);
  });

  test("size 0 remembers nothing", () => {
    const recent = new RecentIds(0);
    assert.equal(recent.seen("a"), false);
    assert.equal(recent.seen("a"), false);
  });
});

describe("connection URL and token", () => {
  beforeEach(useFakeTimers);
  afterEach(restoreTimers);

  test("requires url and userId", () => {
    const WebSocket = makeFakeWebSocket();
    assert.throws(() => createWspushClient({ userId: "u", WebSocket }), /url is required/);
    assert.throws(() => createWspushClient({ url: "ws://h", WebSocket }), /userId is required/);
    assert.throws(() => createWspushClient({ url: "/relative", userId: "u", WebSocket }), /ws:\/\/ or wss:\/\//);
    assert.throws(() => createWspushClient({ url: "ftp://h", userId: "u", WebSocket }), /ws:\/\/ or wss:\/\//);
  });

  test("the URL carries userId, platform, extra query and a static token", async () => {
    const { client, FakeWebSocket } = await startClient({
      url: "wss://abc.example/prod",
      userId: "user 1",
      platform: "mobile",
      token: "t.o.k",
      query: { app: "demo" },
    });
    assert.equal(FakeWebSocket.instances.length, 1);
    assert.equal(
      FakeWebSocket.last.url,
      "wss://abc.example/prod?app=demo&userId=user%201&platform=mobile&token=t.o.k",
    );
    client.close();
  });

  test("an http(s) URL is used as ws(s)", async () => {
    const { client, FakeWebSocket } = await startClient({ url: "https://abc.example/prod" });
    assert.equal(FakeWebSocket.last.url, "wss://abc.example/prod?userId=u-42&platform=pc");
    client.close();
  });

  test("without platform or token those parameters are left out", async () => {
    const { client, FakeWebSocket } = await startClient({ platform: undefined });
    assert.equal(FakeWebSocket.last.url, "ws://127.0.0.1:3001?userId=u-42");
    client.close();
  });

  test("the token provider is asked again before every reconnect", async () => {
    let calls = 0;
    const token = async () => `jwt-${(calls += 1)}`;
    const { client, FakeWebSocket, ws } = await openClient({ token });
    assert.equal(ws.query.token, "jwt-1");
    assert.deepEqual(ws.query, { userId: "u-42", platform: "pc", token: "jwt-1" });

    ws.drop(); // the network dropped: reconnecting-websocket retries after its delay
    await advance(100);
    assert.equal(FakeWebSocket.instances.length, 2);
    assert.equal(FakeWebSocket.last.query.token, "jwt-2");

    FakeWebSocket.last.open();
    client.reconnect(); // a forced reconnect asks again too
    await advance(0);
    assert.equal(FakeWebSocket.instances.length, 3);
    assert.equal(FakeWebSocket.last.query.token, "jwt-3");
    assert.equal(calls, 3);
    client.close();
  });

  test("a failing token provider is reported and retried, never thrown", async () => {
    let calls = 0;
    const token = () => {
      calls += 1;
      if (calls < 3) throw new Error(`auth service down (${calls})`);
      return Promise.resolve("fresh");
    };
    const { client, FakeWebSocket, events } = await startClient({ token });
    assert.equal(FakeWebSocket.instances.length, 0);
    assert.equal(events.errors.length, 1);
    assert.equal(events.errors[0].kind, "token");
    assert.match(events.errors[0].message, /auth service down \(1\)/);

    await advance(1000); // first retry after 1 s, fails again
    assert.equal(calls, 2);
    assert.equal(FakeWebSocket.instances.length, 0);
    await advance(2000); // second retry after 2 s succeeds
    assert.equal(calls, 3);
    assert.equal(FakeWebSocket.instances.length, 1);
    assert.equal(FakeWebSocket.last.query.token, "fresh");
    assert.equal(events.errors.filter((e) => e.kind === "token").length, 2);
    client.close();
  });

  test("a token provider that never answers times out, is reported, and is asked again", async () => {
    let calls = 0;
    const token = () => {
      calls += 1;
      return calls === 1 ? new Promise(() => {}) : "after-timeout";
    };
    const { client, FakeWebSocket, events } = await startClient({ token, tokenTimeoutMs: 5_000 });
    assert.equal(FakeWebSocket.instances.length, 0);
    await advance(5_000);
    assert.deepEqual(
      events.errors.map((e) => [e.kind, e.message]),
      [["token", "token provider failed: token provider timed out"]],
    );
    await advance(1_000); // the first retry delay
    assert.equal(FakeWebSocket.last.query.token, "after-timeout");
    client.close();
  });

  test("a null token is left out", async () => {
    const { client, FakeWebSocket } = await startClient({ token: async () => null });
    assert.equal(FakeWebSocket.last.query.token, undefined);
    client.close();
  });
});
