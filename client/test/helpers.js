// Shared set-up for the client tests: fake timers, a fake WebSocket, and a client wired to both.
import assert from "node:assert/strict";
import { mock } from "node:test";
import { createWspushClient } from "@wspush/client";
import { makeFakeWebSocket } from "./fake-websocket.js";

/** Let pending promise callbacks run (token providers answer through promises). */
export async function flush() {
  for (let i = 0; i < 5; i += 1) await new Promise((resolve) => setImmediate(resolve));
}

/** Move the fake clock forward, letting promises settle between timers. */
export async function advance(ms) {
  await flush();
  mock.timers.tick(ms);
  await flush();
}

/** Fake setTimeout, setInterval and Date (the de-duplication window reads the clock). */
export function useFakeTimers() {
  mock.timers.enable({ apis: ["setTimeout", "setInterval", "Date"], now: 1_795_867_200_000 });
}

export function restoreTimers() {
  mock.timers.reset();
}

/**
 * Deterministic reconnect timings for the tests: every random draw is 0.5, so each wait is
 * half its window (50 ms, 100 ms, 200 ms … 500 ms after the 1st, 2nd, 3rd … failure).
 */
export const TIMINGS = {
  reconnectDelayMs: 100,
  maxReconnectDelayMs: 1000,
  connectTimeoutMs: 1000,
  random: () => 0.5,
};

/**
 * A client on a fake WebSocket; `events` collects states and errors.
 * @param {Partial<import("@wspush/client").WspushClientOptions>} [options]
 */
export async function startClient(options = {}) {
  const FakeWebSocket = makeFakeWebSocket();
  const events = { states: [], errors: [] };
  const client = createWspushClient({
    url: "ws://127.0.0.1:3001",
    userId: "u-42",
    platform: "pc",
    WebSocket: FakeWebSocket,
    watchNetwork: false,
    ...TIMINGS,
    ...options,
    onStateChange: (state, previous) => {
      events.states.push(state);
      options.onStateChange?.(state, previous);
    },
    onError: (error) => {
      events.errors.push(error);
      options.onError?.(error);
    },
  });
  await advance(0); // the first attempt starts after a 0 ms wait
  return { client, FakeWebSocket, events };
}

/** A client whose first socket is open (the ping sent on open is answered unless told otherwise). */
export async function openClient(options = {}, { pong = true } = {}) {
  const started = await startClient(options);
  const ws = started.FakeWebSocket.last;
  ws.open();
  if (pong) ws.receive(pongFrame("conn-1"));
  return { ...started, ws };
}

let counter = 0;

export function pongFrame(connectionId, id = `pong-${(counter += 1)}`) {
  return { type: "pong", data: { connectionId }, id, ts: 1795867200000 };
}

export function frame(type, data, id = `msg-${(counter += 1)}`) {
  return { type, data, id, ts: 1795867200000 };
}

/** The requests a socket carried for one action. */
export function requests(ws, action) {
  return ws.frames.filter((sent) => sent.action === action);
}

/** The last request of `action` on `ws` (it must have been sent). */
export function lastRequest(ws, action) {
  const sent = requests(ws, action);
  assert.ok(sent.length > 0, `no ${action} request sent; sent: ${JSON.stringify(ws.frames)}`);
  return sent.at(-1);
}

/** The server's answer to the last `action` request on `ws`: a frame of `type` echoing its ref. */
export function answerLast(ws, action, type, data) {
  ws.receive({ ...frame(type, data), ref: lastRequest(ws, action).ref });
}
