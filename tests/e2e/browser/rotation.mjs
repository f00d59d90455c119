// Rotation in headless Chromium with the client module, against a local stack whose
// connections are cut after a short lifetime: while messages go to the user and to a channel
// all along, the server asks the page's connection to reconnect, the client opens a new one,
// recovers, and closes the old one - the app stays open and sees every message exactly once,
// in order. Run by tests/e2e/test_rotation.py; prints one JSON line with what the app saw.
import assert from "node:assert/strict";
import { launch, send } from "./stack.mjs";

const { DEMO_URL, WS_URL, USER, CHANNEL, LIFETIME_SECONDS } = process.env;
const WAIT = { timeout: 60_000, polling: 100 };
const EVERY_MS = 400;


const browser = await launch();
try {
  const page = await browser.newPage();
  page.on("console", (entry) => console.error(`page: ${entry.text()}`));
  // What crossed each socket, as the browser saw it
  const sockets = [];
  page.on("websocket", (socket) => {
    const seen = { reconnect: null, closed: false };
    sockets.push(seen);
    socket.on("framereceived", ({ payload }) => {
      const frame = JSON.parse(payload);
      if (frame.type === "reconnect") seen.reconnect = frame;
    });
    socket.on("close", () => {
      seen.closed = true;
    });
  });
  await page.goto(DEMO_URL); // the client module is served beside the demo page
  await page.evaluate(
    async ({ url, user, channel }) => {
      const { createWspushClient } = await import("/src/index.js");
      window.seen = []; // [stream, id, seq]
      window.states = [];
      window.connections = [];
      window.resyncs = [];
      window.errors = [];
      window.client = createWspushClient({
        url,
        userId: user,
        platform: "web",
        rotationSpreadMs: 0,
        onStateChange: (state) => window.states.push(state),
        onResync: (event) => window.resyncs.push(event),
        onError: (error) => window.errors.push(`${error.kind} ${error.code ?? ""} ${error.message}`),
        handlers: {
          "order.updated": (m) => {
            if (m.channel === undefined) window.seen.push(["user", m.id, m.seq]);
          },
        },
      });
      window.client.subscribe(({ connectionId }) => {
        if (connectionId && !window.connections.includes(connectionId)) window.connections.push(connectionId);
      });
      window.client.subscribe(channel, (m) => window.seen.push([m.channel, m.id, m.seq]));
    },
    { url: WS_URL, user: USER, channel: CHANNEL },
  );
  await page.waitForFunction(() => window.client.state === "open" && window.connections.length === 1, "", WAIT);
  const opened = Date.now();

  // Given messages to the user and to the channel all along, until the page has switched
  // connections and a few seconds more
  const sent = { user: [], [CHANNEL]: [] };
  let switchedAt = null;
  for (let n = 0; Date.now() - opened < Number(LIFETIME_SECONDS) * 1000 - 3_000; n += 1) {
    const stream = n % 2 === 0 ? "user" : CHANNEL;
    const id = `${stream === "user" ? "u" : "c"}-${n}`;
    const target = stream === "user" ? { userId: USER } : { channel: CHANNEL };
    await send({ ...target, id, payload: { type: "order.updated", data: { n } } });
    sent[stream].push(id);
    if (switchedAt === null && (await page.evaluate(() => window.connections.length)) > 1) switchedAt = Date.now();
    if (switchedAt !== null && Date.now() - switchedAt > 4_000) break;
    await new Promise((resolve) => setTimeout(resolve, EVERY_MS));
  }
  // When the server's reconnect came, the client switched: a second connection, the first closed
  assert.ok(switchedAt !== null, `no switch within the lifetime: ${JSON.stringify(await page.evaluate(() => window.errors))}`);
  assert.ok(sockets[0].reconnect, "the first connection never got reconnect");
  assert.equal(sockets[0].reconnect.data.reason, "max_duration");
  const total = sent.user.length + sent[CHANNEL].length;
  await page.waitForFunction((total) => window.seen.length >= total, total, WAIT);
  await page.waitForTimeout(1_000); // no duplicate arrives late
  const seen = await page.evaluate(() => window.seen);
  // Then every message reached the app once, each stream in order and without a gap
  const ids = seen.map(([, id]) => id);
  assert.equal(new Set(ids).size, ids.length, `a message reached the app twice: ${ids}`);
  for (const stream of ["user", CHANNEL]) {
    const mine = seen.filter(([name]) => name === stream);
    assert.deepEqual(mine.map(([, id]) => id), sent[stream]);
    const seqs = mine.map(([, , seq]) => seq);
    assert.deepEqual(seqs, seqs.map((_, index) => seqs[0] + index), `${stream} seqs ${seqs}`);
  }
  // And the app stayed open throughout, was never told to reload, and the old socket is closed
  const { states, connections, resyncs } = await page.evaluate(() => ({
    states: window.states,
    connections: window.connections,
    resyncs: window.resyncs,
  }));
  assert.deepEqual(states.slice(states.indexOf("open")), ["open"], `states: ${states}`);
  assert.equal(connections.length, 2);
  assert.deepEqual(resyncs, []);
  assert.ok(sockets[0].closed, "the old connection was not closed");
  console.log(JSON.stringify({ messages: ids.length, connections, before: sockets[0].reconnect.data.before }));
} finally {
  await browser.close();
}
