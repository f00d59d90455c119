// The herd: many clients on one fake clock against a fake API Gateway, to count the `$connect`
// attempts per second they make together through an outage and through the 2-hour drop.
// Used by herd.test.js; `node --preserve-symlinks herd.js` prints the figures.
import { mock } from "node:test";
import { createWspushClient } from "@wspush/client";
import { makeFakeWebSocket } from "./fake-websocket.js";

const SECOND = 1000;
const MINUTE = 60 * SECOND;

/** A small seeded generator (mulberry32): the same run every time. */
export function seeded(seed) {
  let state = seed >>> 0;
  return () => {
    state = (state + 0x6d2b79f5) >>> 0;
    let t = state;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/**
 * A fake API Gateway in front of wspush. Each step it answers the handshakes made since the
 * last one: it admits at most `admitPerSecond` new connections a second (the account's quota,
 * scaled to the simulated clients) and refuses the rest, refuses all of them while `down`
 * and those of users in `refusedUsers` always (a revoked login: 401); it answers pings with
 * a pong unless `down`.
 */
class Gateway {
  constructor({ admitPerSecond }) {
    this.admitPerSecond = admitPerSecond;
    this.down = false;
    /** @type {Set<string>} */
    this.refusedUsers = new Set();
    this.FakeWebSocket = makeFakeWebSocket();
    /** attempts (sockets created) by second of the clock */
    this.attemptsBySecond = new Map();
    /** @type {Map<string, number>} attempts by user */
    this.attemptsByUser = new Map();
    this.admittedThisSecond = 0;
    this.second = -1;
    this.handled = 0;
    this.pingsSeen = new WeakMap();
  }

  /** Answer new handshakes and pings; called after every step of the clock. */
  step() {
    const second = Math.floor(Date.now() / SECOND);
    if (second !== this.second) {
      this.second = second;
      this.admittedThisSecond = 0;
    }
    const { instances } = this.FakeWebSocket;
    for (; this.handled < instances.length; this.handled += 1) {
      const ws = instances[this.handled];
      const user = ws.query.userId;
      this.attemptsBySecond.set(second, (this.attemptsBySecond.get(second) ?? 0) + 1);
      this.attemptsByUser.set(user, (this.attemptsByUser.get(user) ?? 0) + 1);
      if (ws.readyState !== 0) continue; // the client gave up on it already
      if (this.down || this.refusedUsers.has(user) || this.admittedThisSecond >= this.admitPerSecond) {
        ws.fail();
      } else {
        this.admittedThisSecond += 1;
        ws.open();
      }
    }
    if (this.down) return;
    for (const ws of instances) {
      if (ws.readyState !== 1) continue;
      const pings = ws.pings;
      if (pings > (this.pingsSeen.get(ws) ?? 0)) {
        this.pingsSeen.set(ws, pings);
        ws.receive({ type: "pong", data: { connectionId: `c-${this.handled}` } });
      }
    }
  }

  /** API Gateway's 2-hour limit: every open connection closed at once, 1001 Going Away. */
  dropAll() {
    for (const ws of this.FakeWebSocket.instances) {
      if (ws.readyState === 1) ws.drop(1001, "Going away");
    }
  }

  /** The most attempts in `seconds` consecutive seconds within [from, to) (ms of the clock). */
  peak(from, to, seconds = 1) {
    let peak = 0;
    for (let second = Math.floor(from / SECOND); second + seconds <= Math.ceil(to / SECOND); second += 1) {
      let count = 0;
      for (let k = 0; k < seconds; k += 1) count += this.attemptsBySecond.get(second + k) ?? 0;
      peak = Math.max(peak, count);
    }
    return peak;
  }

  total(from, to) {
    let total = 0;
    for (const [second, count] of this.attemptsBySecond) {
      if (second * SECOND >= from && second * SECOND < to) total += count;
    }
    return total;
  }
}

async function flush() {
  for (let i = 0; i < 3; i += 1) await new Promise((resolve) => setImmediate(resolve));
}

/**
 * Run `clients` clients (standing for `standsFor`) through one scenario:
 * - `"outage"`: the backend is down for `outageMs` (handshakes refused, pings unanswered;
 *   the gateway keeps the sockets, so each client notices at its own next heartbeat);
 * - `"drop"`: the gateway closes every connection at the same moment (its 2-hour limit for
 *   connections opened together), while `refused` of the users can no longer connect.
 * Before it, the clients connect one after another over one heartbeat period (a warm-up
 * that is not counted). Returns the peak and total attempts, scaled to `standsFor` clients,
 * and what became of the clients.
 *
 * @param {{ scenario: "outage" | "drop", clients?: number, standsFor?: number, outageMs?: number,
 *   afterMs?: number, refused?: number, seed?: number, options?: object, create?: Function }} run
 *   (`create` builds each client, `createWspushClient` unless another client is measured)
 */
export async function simulate({
  scenario,
  clients = 1000,
  standsFor = 10_000,
  outageMs = 10 * MINUTE,
  afterMs = 10 * MINUTE,
  refused = 0,
  seed = 13,
  options = {},
  create = createWspushClient,
}) {
  const scale = standsFor / clients;
  const stepMs = 100;
  mock.timers.enable({ apis: ["setTimeout", "setInterval", "Date"], now: 0 });
  try {
    const gateway = new Gateway({ admitPerSecond: Math.floor(500 / scale) });
    const random = seeded(seed);
    const heartbeatMs = options.heartbeatMs ?? 5 * MINUTE;
    const all = [];
    const gaveUp = new Set();
    const run = async (ms) => {
      for (let t = 0; t < ms; t += stepMs) {
        mock.timers.tick(stepMs);
        await flush();
        gateway.step();
        await flush();
      }
    };
    // Warm-up: one client every heartbeatMs / clients, so heartbeats fall all over the period.
    for (let i = 0; i < clients; i += 1) {
      const userId = `u${i}`;
      all.push(
        create({
          url: "wss://gateway.example/prod",
          userId,
          WebSocket: gateway.FakeWebSocket,
          watchNetwork: false,
          random: seeded(seed * 100_003 + i),
          onError: (error) => {
            if (error.kind === "max_retries") gaveUp.add(userId);
          },
          ...options,
        }),
      );
      await run(Math.max(stepMs, Math.floor(heartbeatMs / clients / stepMs) * stepMs));
    }
    await run(MINUTE);
    const openBefore = all.filter((client) => client.state === "open").length;

    const start = Date.now();
    const attemptsBefore = new Map(gateway.attemptsByUser);
    let end;
    if (scenario === "outage") {
      gateway.down = true;
      await run(outageMs);
      gateway.down = false;
      await run(afterMs);
      end = Date.now();
    } else {
      const users = [...Array(clients).keys()].map((i) => `u${i}`);
      for (let i = 0; i < refused; i += 1) {
        const pick = i + Math.floor(random() * (users.length - i));
        [users[i], users[pick]] = [users[pick], users[i]];
        gateway.refusedUsers.add(users[i]);
      }
      gateway.dropAll();
      await run(afterMs);
      end = Date.now();
    }
    const attemptsDuring = (user) => (gateway.attemptsByUser.get(user) ?? 0) - (attemptsBefore.get(user) ?? 0);
    const users = all.map((_, i) => `u${i}`);
    const refusedUsers = [...gateway.refusedUsers];
    const result = {
      scenario,
      clients,
      standsFor,
      openBefore,
      // `scale` simulated seconds hold as many independent attempts as one second of
      // `standsFor` clients: the same count, with the same noise.
      peakPerSecond: gateway.peak(start, end, Math.round(scale)),
      // one simulated second, each attempt counted `scale` times (√scale times noisier)
      peakOneSecondScaled: gateway.peak(start, end, 1) * scale,
      attempts: gateway.total(start, end) * scale,
      mostAttemptsByOneClient: Math.max(...users.map(attemptsDuring)),
      openAfter: all.filter((client) => client.state === "open").length,
      gaveUp: gaveUp.size,
      refused: refusedUsers.length,
      refusedAttempts: [...new Set(refusedUsers.map(attemptsDuring))].sort((a, b) => a - b),
      refusedClosed: refusedUsers.filter((user) => all[Number(user.slice(1))].state === "closed").length,
    };
    for (const client of all) client.close();
    return result;
  } finally {
    mock.timers.reset();
  }
}

if (import.meta.url === `file://${process.argv[1]}`) {
  for (const run of [
    { scenario: "outage" },
    { scenario: "outage", outageMs: 2 * MINUTE },
    { scenario: "drop", refused: 100 },
  ]) {
    console.log(JSON.stringify({ ...run, ...(await simulate(run)) }));
  }
}
