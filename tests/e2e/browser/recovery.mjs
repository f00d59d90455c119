// Recovery in headless Chromium with the client module, against the local stack: the page's
// connection goes through a relay this script can cut (a train entering a tunnel: the socket
// drops, reconnects are refused), messages are sent while it is cut, and once the relay lets
// the client back in, every one of them must reach the app exactly once, in order, with the
// server saying `recovered: true`. Then a gap longer than the channel's history: `onResync`.
// Run by tests/e2e/test_browser.py; prints one JSON line with what the app saw.
import assert from "node:assert/strict";
import net from "node:net";
import { launch, send } from "./stack.mjs";

const { DEMO_URL, WS_PORT, USER, CHANNEL } = process.env;
const WAIT = { timeout: 60_000, polling: 100 };
const MISSED = 20; // each to the user and to the channel
const CHANNEL_HISTORY = 100; // make dev's room namespace keeps this many

/** A TCP relay to the WebSocket gateway that can drop every connection and refuse new ones. */
function relay(port) {
  const sockets = new Set();
  let refusing = false;
  const server = net.createServer((client) => {
    if (refusing) return client.destroy();
    const upstream = net.connect(port, "127.0.0.1");
    for (const socket of [client, upstream]) {
      sockets.add(socket);
      socket.on("close", () => sockets.delete(socket));
      socket.on("error", () => {});
    }
    client.pipe(upstream).pipe(client);
  });
  return new Promise((resolve) =>
    server.listen(0, "127.0.0.1", () =>
      resolve({
        port: server.address().port,
        cut() {
          refusing = true;
          for (const socket of sockets) socket.destroy();
        },
        restore() {
          refusing = false;
        },
        close: () => server.close(),
      }),
    ),
  );
}


const message = (target, id) => ({ ...target, id, payload: { type: "order.updated", data: { id } } });
const toUser = (id) => message({ userId: USER }, id);
const toChannel = (id) => message({ channel: CHANNEL }, id);

const gateway = await relay(Number(WS_PORT));
const browser = await launch();
try {
  const page = await browser.newPage();
  page.on("console", (entry) => console.error(`page: ${entry.text()}`));
  // The replies as the server sent them, whatever the client makes of them
  const replies = [];
  page.on("websocket", (socket) =>
    socket.on("framereceived", ({ payload }) => {
      const frame = JSON.parse(payload);
      if (frame.type === "recovered" || frame.type === "subscribed") replies.push(frame);
    }),
  );
  await page.goto(DEMO_URL); // the client module is served beside the demo page
  await page.evaluate(
    async ({ url, user, channel }) => {
      const { createWspushClient } = await import("/src/index.js");
      window.seen = []; // [stream, id, seq] as the app's handlers got them
      window.resyncs = [];
      window.client = createWspushClient({
        url,
        userId: user,
        platform: "web",
        reconnectDelayMs: 500,
        maxReconnectDelayMs: 2_000,
        maxRetries: 1_000,
        onResync: (event) => window.resyncs.push(event),
        handlers: {
          "order.updated": (m) => {
            if (m.channel === undefined) window.seen.push(["user", m.id, m.seq]);
          },
        },
      });
      window.client.subscribe(channel, (m) => window.seen.push([m.channel, m.id, m.seq]));
    },
    { url: `ws://127.0.0.1:${gateway.port}`, user: USER, channel: CHANNEL },
  );
  const seen = () => page.evaluate(() => window.seen);
  const count = (n) => page.waitForFunction((n) => window.seen.length >= n, n, WAIT);

  // Given the app open, subscribed, and one message of each stream received live
  await page.waitForFunction(() => window.client.state === "open", "", WAIT);
  await waitForSubscribed();
  await send([toUser("u-live"), toChannel("c-live")]);
  await count(2);

  // When the connection drops and 20 messages go to the user and 20 to the channel meanwhile
  gateway.cut();
  await page.waitForFunction(() => window.client.state !== "open", "", WAIT);
  const missed = [];
  for (let n = 0; n < MISSED; n += 1) missed.push(toUser(`u-${n}`), toChannel(`c-${n}`));
  await send(missed);
  replies.length = 0;
  gateway.restore();

  // Then after the reconnect the app has every message once, each stream in seq order
  await count(2 + 2 * MISSED);
  await page.waitForTimeout(1_000); // nothing more comes: no duplicate arrives late
  const after = await seen();
  const ids = after.map(([, id]) => id);
  assert.equal(new Set(ids).size, ids.length, `a message reached the app twice: ${ids}`);
  for (const stream of ["user", CHANNEL]) {
    const mine = after.filter(([name]) => name === stream);
    const prefix = stream === "user" ? "u" : "c";
    assert.deepEqual(
      mine.map(([, id]) => id),
      [`${prefix}-live`, ...Array.from({ length: MISSED }, (_, n) => `${prefix}-${n}`)],
    );
    const seqs = mine.map(([, , seq]) => seq);
    assert.deepEqual(seqs, seqs.map((_, index) => seqs[0] + index), `${stream} seqs ${seqs}`);
  }
  // And the server said the recovery of both streams was whole; the app was never told to reload
  const recovered = replies.filter((frame) => "recovered" in frame.data);
  assert.deepEqual(
    recovered.map((frame) => [frame.type, frame.data.recovered]).sort(),
    [["recovered", true], ["subscribed", true]],
  );
  assert.deepEqual(await page.evaluate(() => window.resyncs), []);

  // When the connection drops again while more messages go to the channel than it keeps
  gateway.cut();
  await page.waitForFunction(() => window.client.state !== "open", "", WAIT);
  const flood = Array.from({ length: CHANNEL_HISTORY + 10 }, (_, n) => toChannel(`flood-${n}`));
  for (let start = 0; start < flood.length; start += 50) await send(flood.slice(start, start + 50));
  gateway.restore();
  // Then the app is told that channel could not be recovered (and only that one)
  await page.waitForFunction((channel) => window.resyncs.some((r) => r.stream === channel), CHANNEL, WAIT);
  const resyncs = await page.evaluate(() => window.resyncs);
  assert.deepEqual(resyncs.map((r) => r.stream), [CHANNEL]);
  console.log(JSON.stringify({ seen: after.length, resync: resyncs[0] }));

  async function waitForSubscribed() {
    await page.waitForFunction(() => window.seen !== undefined, "", WAIT);
    const deadline = Date.now() + WAIT.timeout;
    while (!replies.some((frame) => frame.type === "subscribed")) {
      if (Date.now() > deadline) throw new Error("never subscribed");
      await page.waitForTimeout(100);
    }
  }
} finally {
  await browser.close();
  gateway.close();
}
