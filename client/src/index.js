// @ts-check
/**
 * Browser client for wspush.
 *
 * One `WspushClient` owns one logical connection to the wspush WebSocket API:
 * it reconnects (through reconnecting-websocket), keeps the connection alive with
 * `{"action":"ping"}` heartbeats, forces a reconnect when a ping gets no pong in
 * time, parses every frame as the wspush envelope `{type, data, id, ts}`, drops
 * duplicates by `id` and dispatches on `type` to handlers that can be replaced at
 * any time without touching the socket.
 *
 * Plain ES module, no build step: in a browser map `reconnecting-websocket` to its
 * ESM build with an import map (see demo/index.html).
 */

import ReconnectingWebSocket from "reconnecting-websocket";

/** @typedef {"connecting" | "open" | "reconnecting" | "closed"} ConnectionState */

/**
 * A frame received from wspush.
 * @typedef {object} WspushMessage
 * @property {string} type
 * @property {unknown} data
 * @property {string} [id]
 * @property {number} [ts]
 */

/**
 * @callback MessageHandler
 * @param {WspushMessage} message
 * @returns {void}
 */

/** @typedef {Record<string, MessageHandler | undefined | null>} HandlerMap */

/**
 * What `onError` receives. `kind` says where it came from:
 * - `"server"`: wspush answered with an `error` frame (`code`, `message`, `frame`);
 * - `"bad_frame"`: a frame that is not JSON or not an object with a string `type` (`raw`);
 * - `"socket"`: the WebSocket reported an error (`event`);
 * - `"pong_timeout"`: a ping got no pong within `pongTimeoutMs`; a reconnect follows;
 * - `"token"`: the token provider threw or rejected (`error`); it is retried;
 * - `"handler"`: a message handler threw (`error`, `frame`); other handlers still ran;
 * - `"max_retries"`: `maxRetries` reconnects failed; the client is now `closed`.
 * @typedef {object} WspushError
 * @property {"server" | "bad_frame" | "socket" | "pong_timeout" | "token" | "handler" | "max_retries"} kind
 * @property {string} message
 * @property {string} [code]
 * @property {WspushMessage} [frame]
 * @property {unknown} [raw]
 * @property {unknown} [error]
 * @property {unknown} [event]
 */

/**
 * @typedef {object} Snapshot
 * @property {ConnectionState} state
 * @property {string | null} connectionId
 */

/**
 * @typedef {object} WspushClientOptions
 * @property {string} url WebSocket endpoint, e.g. `wss://abc.execute-api.eu-west-1.amazonaws.com/prod`
 *   or `ws://127.0.0.1:3001`. Existing query parameters are kept.
 * @property {string} userId sent as the `userId` query parameter
 * @property {string} [platform] sent as the `platform` query parameter (`pc`, `mobile`, `web`, ...)
 * @property {string | (() => string | null | undefined | Promise<string | null | undefined>)} [token]
 *   a token, or a function called before EVERY connect and reconnect that returns a fresh one;
 *   sent as the `token` query parameter (omitted when empty)
 * @property {Record<string, string | number | boolean | null | undefined>} [query] extra query parameters
 * @property {HandlerMap | (() => HandlerMap | null | undefined)} [handlers] handlers by `type`
 *   (`"*"` for every message); a function is called at each dispatch, so it can return the latest map
 * @property {(state: ConnectionState, previous: ConnectionState) => void} [onStateChange]
 * @property {(error: WspushError) => void} [onError]
 * @property {number} [heartbeatMs] ping interval while open; default 9 minutes; 0 disables
 * @property {number} [pongTimeoutMs] reconnect when a ping gets no pong within this; default 10 s; 0 disables
 * @property {number} [tokenTimeoutMs] a token provider that has not answered within this has failed
 *   (reported as `token`, retried); default 10 s
 * @property {boolean} [pingOnOpen] send a ping right after each open (learns the connection id
 *   and proves the route works); default true
 * @property {number} [dedupeSize] how many recent message ids to remember; default 1000; 0 disables
 * @property {boolean} [watchNetwork] in a browser, reconnect at once when the network comes back
 *   and ping when the tab becomes visible again; default true
 * @property {any} [WebSocket] WebSocket constructor (tests, Node, React Native); default the global one
 * @property {string | string[]} [protocols] WebSocket sub-protocols
 * @property {number} [maxRetries] give up (state `closed`) after this many failed reconnects in a row; default Infinity
 * @property {number} [minReconnectionDelay] reconnecting-websocket option; default 1-5 s (random)
 * @property {number} [maxReconnectionDelay] reconnecting-websocket option; default 10 s
 * @property {number} [reconnectionDelayGrowFactor] reconnecting-websocket option; default 1.3
 * @property {number} [connectionTimeout] reconnecting-websocket option: handshake timeout; default 4 s
 * @property {number} [minUptime] reconnecting-websocket option: uptime that resets the retry count; default 5 s
 * @property {boolean} [debug] reconnecting-websocket's console debug output
 * @property {any} [window] event target for `online` (defaults to the global scope; for tests)
 * @property {any} [document] event target for `visibilitychange` (defaults to `document`; for tests)
 */

export const DEFAULT_HEARTBEAT_MS = 9 * 60 * 1000;
export const DEFAULT_PONG_TIMEOUT_MS = 10_000;
export const DEFAULT_DEDUPE_SIZE = 1000;
export const DEFAULT_TOKEN_TIMEOUT_MS = 10_000;

/** WebSocket close code the client uses when it drops a connection itself. */
export const CLIENT_RECONNECT_CODE = 4000;

const OPEN = 1;
const PING_FRAME = JSON.stringify({ action: "ping" });
const TOKEN_RETRY_MIN_MS = 1000;

/**
 * `promise`, or a rejection with `message` once `ms` have passed (a hung provider must not
 * hold the connection forever).
 * @template T
 * @param {T | Promise<T>} promise
 * @param {number} ms
 * @param {string} message
 * @returns {Promise<T>}
 */
function withTimeout(promise, ms, message) {
  /** @type {ReturnType<typeof setTimeout> | undefined} */
  let timer;
  const timeout = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(message)), ms);
  });
  return /** @type {Promise<T>} */ (Promise.race([promise, timeout])).finally(() => clearTimeout(timer));
}
const TOKEN_RETRY_MAX_MS = 30_000;

/** The reconnecting-websocket options passed through as they are. */
const RWS_OPTION_NAMES = /** @type {const} */ ([
  "minReconnectionDelay",
  "maxReconnectionDelay",
  "reconnectionDelayGrowFactor",
  "connectionTimeout",
  "minUptime",
  "debug",
]);

/**
 * Build the connection URL: `url` plus `userId`, `platform`, `token` and `query`,
 * each URL-encoded (`encodeURIComponent`: spaces as %20, never `+`).
 *
 * @param {string} url
 * @param {Record<string, string | number | boolean | null | undefined>} params
 * @returns {string}
 */
export function buildUrl(url, params) {
  const hashAt = url.indexOf("#");
  const base = hashAt === -1 ? url : url.slice(0, hashAt);
  const parts = [];
  for (const [key, value] of Object.entries(params)) {
    if (value === undefined || value === null || value === "") continue;
    parts.push(`${encodeURIComponent(key)}=${encodeURIComponent(String(value))}`);
  }
  if (parts.length === 0) return base;
  const joiner = base.includes("?") ? (/[?&]$/.test(base) ? "" : "&") : "?";
  return base + joiner + parts.join("&");
}

/**
 * Parse one incoming frame. Returns the message, or an error description.
 *
 * @param {unknown} raw
 * @returns {{ message: WspushMessage } | { error: string }}
 */
export function parseFrame(raw) {
  if (typeof raw !== "string") return { error: "frame is not text" };
  let value;
  try {
    value = JSON.parse(raw);
  } catch {
    return { error: "frame is not valid JSON" };
  }
  if (value === null || typeof value !== "object" || Array.isArray(value)) {
    return { error: "frame is not a JSON object" };
  }
  if (typeof value.type !== "string" || value.type === "") {
    return { error: 'frame has no string "type"' };
  }
  return { message: /** @type {WspushMessage} */ (value) };
}

/** Remembers the last `size` ids it was shown (insertion order, oldest forgotten first). */
export class RecentIds {
  /** @param {number} size */
  constructor(size) {
    this.size = Math.max(0, Math.floor(size));
    /** @type {Set<string>} */
    this.ids = new Set();
  }

  /**
   * Record `id`; true when it was already there (a duplicate).
   * @param {string} id
   */
  seen(id) {
    if (this.size === 0) return false;
    if (this.ids.has(id)) return true;
    if (this.ids.size >= this.size) {
      const oldest = this.ids.values().next().value;
      if (oldest !== undefined) this.ids.delete(oldest);
    }
    this.ids.add(id);
    return false;
  }
}

/** A connection to wspush. Create it with `createWspushClient(options)` or `new WspushClient(options)`. */
export class WspushClient {
  /** @param {WspushClientOptions} options */
  constructor(options) {
    if (!options || typeof options.url !== "string" || options.url === "") {
      throw new TypeError("wspush: options.url is required");
    }
    if (typeof options.userId !== "string" || options.userId === "") {
      throw new TypeError("wspush: options.userId is required");
    }
    /** @private */
    this._options = { ...options };
    /** @private */
    this._heartbeatMs = options.heartbeatMs ?? DEFAULT_HEARTBEAT_MS;
    /** @private */
    this._pongTimeoutMs = options.pongTimeoutMs ?? DEFAULT_PONG_TIMEOUT_MS;
    this._tokenTimeoutMs = options.tokenTimeoutMs ?? DEFAULT_TOKEN_TIMEOUT_MS;
    /** @private */
    this._maxRetries = options.maxRetries ?? Infinity;
    /** @private */
    this._recent = new RecentIds(options.dedupeSize ?? DEFAULT_DEDUPE_SIZE);

    /** @private @type {ConnectionState} */
    this._state = "connecting";
    /** @private @type {string | null} */
    this._connectionId = null;
    /** @private @type {Snapshot} */
    this._snapshot = { state: this._state, connectionId: null };

    /** @private @type {HandlerMap | (() => HandlerMap | null | undefined)} */
    this._handlers = options.handlers ?? {};
    /** @private @type {Map<string, Set<MessageHandler>>} */
    this._listeners = new Map();
    /** @private @type {Set<(state: ConnectionState, previous: ConnectionState) => void>} */
    this._stateListeners = new Set();
    /** @private @type {Set<(error: WspushError) => void>} */
    this._errorListeners = new Set();
    /** @private @type {Set<(snapshot: Snapshot) => void>} */
    this._subscribers = new Set();

    /** @private @type {ReturnType<typeof setInterval> | undefined} */
    this._heartbeatTimer = undefined;
    /** @private @type {ReturnType<typeof setTimeout> | undefined} */
    this._pongTimer = undefined;
    /** @private */
    this._closed = false;
    /** @private */
    this._gaveUp = false;
    /** @private */
    this._tokenFailures = 0;
    /** @private @type {(() => void)[]} */
    this._unwatch = [];

    // Fail now on a URL that cannot work, not later inside a reconnect timer.
    if (!/^wss?:\/\//i.test(resolveUrl(options.url))) {
      throw new TypeError(`wspush: options.url must be a ws:// or wss:// URL, got ${JSON.stringify(options.url)}`);
    }

    /** @private @type {any} */
    this._rws = null;
    this._startSocket("connecting");
    this._watchNetwork();
  }

  /** The connection state: `connecting`, `open`, `reconnecting` or `closed`. */
  get state() {
    return this._state;
  }

  /** The connection id wspush reported in the last pong on the current connection, or null. */
  get connectionId() {
    return this._connectionId;
  }

  /** `{state, connectionId}`; the same object until one of them changes (for `useSyncExternalStore`). */
  getSnapshot() {
    return this._snapshot;
  }

  /**
   * Call `listener(snapshot)` whenever the state or the connection id changes.
   * @param {(snapshot: Snapshot) => void} listener
   * @returns {() => void} unsubscribe
   */
  subscribe(listener) {
    this._subscribers.add(listener);
    return () => {
      this._subscribers.delete(listener);
    };
  }

  /**
   * Handle messages of one `type`, or every message with `"*"`.
   * @param {string} type
   * @param {MessageHandler} handler
   * @returns {() => void} unsubscribe
   */
  on(type, handler) {
    let set = this._listeners.get(type);
    if (!set) {
      set = new Set();
      this._listeners.set(type, set);
    }
    set.add(handler);
    return () => this.off(type, handler);
  }

  /**
   * Remove a handler added with `on`.
   * @param {string} type
   * @param {MessageHandler} handler
   */
  off(type, handler) {
    const set = this._listeners.get(type);
    if (!set) return;
    set.delete(handler);
    if (set.size === 0) this._listeners.delete(type);
  }

  /**
   * Replace the handler map (the `handlers` option) at once; the connection is untouched.
   * Handlers added with `on` are kept.
   * @param {HandlerMap | (() => HandlerMap | null | undefined) | null | undefined} handlers
   */
  setHandlers(handlers) {
    this._handlers = handlers ?? {};
  }

  /**
   * @param {(state: ConnectionState, previous: ConnectionState) => void} listener
   * @returns {() => void} unsubscribe
   */
  onStateChange(listener) {
    this._stateListeners.add(listener);
    return () => {
      this._stateListeners.delete(listener);
    };
  }

  /**
   * @param {(error: WspushError) => void} listener
   * @returns {() => void} unsubscribe
   */
  onError(listener) {
    this._errorListeners.add(listener);
    return () => {
      this._errorListeners.delete(listener);
    };
  }

  /**
   * Send a frame: an object is sent as JSON, a string as it is. Returns false (and sends
   * nothing) unless the connection is open: nothing is queued while offline.
   * @param {unknown} frame
   * @returns {boolean}
   */
  send(frame) {
    if (this._closed || !this._rws || this._rws.readyState !== OPEN) return false;
    this._rws.send(typeof frame === "string" ? frame : JSON.stringify(frame));
    return true;
  }

  /**
   * Send `{"action":"ping"}` now and expect a pong within `pongTimeoutMs`.
   * @returns {boolean} false when not open
   */
  ping() {
    if (!this.send(PING_FRAME)) return false;
    if (this._pongTimeoutMs > 0 && this._pongTimer === undefined) {
      this._pongTimer = setTimeout(() => this._onPongTimeout(), this._pongTimeoutMs);
    }
    return true;
  }

  /**
   * Drop the current connection (if any) and connect again now, without waiting out the
   * reconnect backoff. Also restarts a client that gave up after `maxRetries`.
   * Does nothing after `close()`.
   * @returns {boolean} false after `close()`
   */
  reconnect() {
    if (this._closed) return false;
    this._stopTimers();
    if (this._state === "open") {
      // closes the socket (state "reconnecting" through the close event) and connects again
      this._rws.reconnect(CLIENT_RECONNECT_CODE, "client reconnect");
    } else {
      // handshaking, waiting for a token, waiting out a backoff, or gave up:
      // start over with a fresh socket, at once
      this._gaveUp = false;
      this._startSocket(this._state === "connecting" ? "connecting" : "reconnecting");
    }
    return true;
  }

  /**
   * Close the connection for good: no more heartbeats, reconnects or handler calls.
   * @param {number} [code] WebSocket close code, default 1000
   * @param {string} [reason]
   */
  close(code = 1000, reason = "client closed") {
    if (this._closed) return;
    this._closed = true;
    this._stopTimers();
    for (const unwatch of this._unwatch.splice(0)) unwatch();
    if (this._rws) {
      try {
        this._rws.close(code, reason);
      } catch {
        this._rws.close(); // a code the browser refuses (only 1000 and 3000-4999 are allowed)
      }
    }
    this._setConnectionId(null);
    this._setState("closed");
  }

  // ---- internals -------------------------------------------------------------

  /**
   * @private
   * @param {ConnectionState} state
   */
  _startSocket(state) {
    const options = this._options;
    /** @type {Record<string, unknown>} */
    const rwsOptions = { maxRetries: Infinity, maxEnqueuedMessages: 0 };
    for (const name of RWS_OPTION_NAMES) {
      if (options[name] !== undefined) rwsOptions[name] = options[name];
    }
    if (options.WebSocket !== undefined) rwsOptions.WebSocket = options.WebSocket;

    const previous = this._rws;
    this._rws = null; // events of the previous socket are ignored from now on
    if (previous) previous.close();
    const rws = new ReconnectingWebSocket(() => this._nextUrl(), options.protocols, rwsOptions);
    this._rws = rws;
    this._setState(state);

    // Only the current socket of a client that is still running may change anything.
    const live = () => rws === this._rws && !this._closed && !this._gaveUp;
    rws.addEventListener("open", () => {
      if (live()) this._handleOpen();
    });
    rws.addEventListener("close", () => {
      if (live()) this._handleClose();
    });
    rws.addEventListener("error", (/** @type {any} */ event) => {
      if (!live()) return;
      const message = event && event.message ? `WebSocket error: ${event.message}` : "WebSocket error";
      this._report({ kind: "socket", message, event });
    });
    rws.addEventListener("message", (/** @type {any} */ event) => {
      if (live()) this._handleFrame(event.data);
    });
  }

  /**
   * The URL for the next connection attempt; asks the token provider again each time.
   * A failing token provider is reported and retried with a growing delay.
   * @private
   * @returns {Promise<string>}
   */
  async _nextUrl() {
    const { url, userId, platform, token, query } = this._options;
    /** @type {string | null | undefined} */
    let tokenValue;
    while (typeof token === "function" && !this._closed) {
      try {
        tokenValue = await withTimeout(token(), this._tokenTimeoutMs, "token provider timed out");
        this._tokenFailures = 0;
        break;
      } catch (error) {
        this._tokenFailures += 1;
        this._report({ kind: "token", message: `token provider failed: ${describe(error)}`, error });
        const delay = Math.min(TOKEN_RETRY_MIN_MS * 2 ** (this._tokenFailures - 1), TOKEN_RETRY_MAX_MS);
        await new Promise((resolve) => setTimeout(resolve, delay));
      }
    }
    if (typeof token === "string") tokenValue = token;
    return buildUrl(resolveUrl(url), { ...query, userId, platform, token: tokenValue });
  }

  /** @private */
  _handleOpen() {
    this._setState("open");
    if (this._heartbeatMs > 0) {
      this._heartbeatTimer = setInterval(() => this.ping(), this._heartbeatMs);
    }
    if (this._options.pingOnOpen !== false) this.ping();
  }

  /** @private */
  _handleClose() {
    this._stopTimers();
    this._setConnectionId(null);
    // reconnecting-websocket has already counted the retry it is about to make.
    if (this._rws.retryCount > this._maxRetries) {
      this._gaveUp = true;
      this._rws.close();
      this._setState("closed");
      this._report({
        kind: "max_retries",
        message: `gave up after ${this._maxRetries} failed reconnects; call reconnect() to try again`,
      });
      return;
    }
    this._setState("reconnecting");
  }

  /** @private */
  _onPongTimeout() {
    this._pongTimer = undefined;
    if (this._closed || this._state !== "open") return;
    this._report({
      kind: "pong_timeout",
      message: `no pong within ${this._pongTimeoutMs} ms; reconnecting`,
    });
    if (!this._closed) this.reconnect();
  }

  /**
   * @private
   * @param {unknown} raw
   */
  _handleFrame(raw) {
    const parsed = parseFrame(raw);
    if ("error" in parsed) {
      this._report({ kind: "bad_frame", message: parsed.error, raw });
      return;
    }
    const message = parsed.message;
    const id = message.id;
    if ((typeof id === "string" && id !== "") || typeof id === "number") {
      if (this._recent.seen(String(id))) return;
    }

    if (message.type === "pong") {
      if (this._pongTimer !== undefined) {
        clearTimeout(this._pongTimer);
        this._pongTimer = undefined;
      }
      const data = /** @type {any} */ (message.data);
      if (data && typeof data.connectionId === "string") this._setConnectionId(data.connectionId);
    } else if (message.type === "error") {
      const data = /** @type {any} */ (message.data) || {};
      this._report({
        kind: "server",
        code: typeof data.code === "string" ? data.code : undefined,
        message: typeof data.message === "string" ? data.message : "error frame from wspush",
        frame: message,
      });
    }
    this._dispatch(message);
  }

  /**
   * @private
   * @param {WspushMessage} message
   */
  _dispatch(message) {
    let map;
    try {
      map = typeof this._handlers === "function" ? this._handlers() : this._handlers;
    } catch (error) {
      this._report({ kind: "handler", message: `handlers getter threw: ${describe(error)}`, error, frame: message });
    }
    /** @type {(MessageHandler | null | undefined)[]} */
    const calls = [];
    for (const type of [message.type, "*"]) {
      if (map) calls.push(map[type]);
      const set = this._listeners.get(type);
      if (set) calls.push(...set);
    }
    for (const handler of calls) {
      if (typeof handler !== "function") continue;
      if (this._closed) return;
      try {
        handler(message);
      } catch (error) {
        this._report({
          kind: "handler",
          message: `handler for "${message.type}" threw: ${describe(error)}`,
          error,
          frame: message,
        });
      }
    }
  }

  /**
   * @private
   * @param {WspushError} error
   */
  _report(error) {
    const callbacks = [this._options.onError, ...this._errorListeners];
    for (const callback of callbacks) {
      if (typeof callback !== "function") continue;
      try {
        callback(error);
      } catch {
        // an error callback that throws must not break the connection
      }
    }
  }

  /**
   * @private
   * @param {ConnectionState} state
   */
  _setState(state) {
    const previous = this._state;
    if (state === previous) return;
    this._state = state;
    this._snapshot = { state, connectionId: this._connectionId };
    const callbacks = [this._options.onStateChange, ...this._stateListeners];
    for (const callback of callbacks) {
      if (typeof callback !== "function") continue;
      try {
        callback(state, previous);
      } catch {
        // a listener that throws must not break the connection
      }
    }
    this._notify();
  }

  /**
   * @private
   * @param {string | null} connectionId
   */
  _setConnectionId(connectionId) {
    if (connectionId === this._connectionId) return;
    this._connectionId = connectionId;
    this._snapshot = { state: this._state, connectionId };
    this._notify();
  }

  /** @private */
  _notify() {
    const snapshot = this._snapshot;
    for (const subscriber of [...this._subscribers]) {
      try {
        subscriber(snapshot);
      } catch {
        // same as above
      }
    }
  }

  /** @private */
  _stopTimers() {
    if (this._heartbeatTimer !== undefined) clearInterval(this._heartbeatTimer);
    if (this._pongTimer !== undefined) clearTimeout(this._pongTimer);
    this._heartbeatTimer = undefined;
    this._pongTimer = undefined;
  }

  /**
   * In a browser: reconnect at once when the network comes back (instead of waiting out the
   * backoff), and ping when the tab becomes visible (a laptop waking from sleep often holds a
   * dead socket; the pong timeout then replaces it).
   * @private
   */
  _watchNetwork() {
    if (this._options.watchNetwork === false) return;
    const win = this._options.window ?? globalThis;
    const doc = this._options.document ?? /** @type {any} */ (globalThis).document;
    if (win && typeof win.addEventListener === "function") {
      const onOnline = () => {
        if (this._closed) return;
        if (this._state === "open") this.ping();
        else this.reconnect();
      };
      win.addEventListener("online", onOnline);
      this._unwatch.push(() => win.removeEventListener("online", onOnline));
    }
    if (doc && typeof doc.addEventListener === "function") {
      const onVisibility = () => {
        if (!this._closed && doc.visibilityState === "visible" && this._state === "open") this.ping();
      };
      doc.addEventListener("visibilitychange", onVisibility);
      this._unwatch.push(() => doc.removeEventListener("visibilitychange", onVisibility));
    }
  }
}

/**
 * Create a client and start connecting.
 * @param {WspushClientOptions} options
 * @returns {WspushClient}
 */
export function createWspushClient(options) {
  return new WspushClient(options);
}

/**
 * Resolve a relative URL against the page (`/ws` → `ws(s)://host/ws`) and turn http(s) into ws(s).
 * @param {string} url
 */
function resolveUrl(url) {
  if (/^wss?:\/\//i.test(url)) return url;
  const location = /** @type {any} */ (globalThis).location;
  let absolute = url;
  if (!/^https?:\/\//i.test(url) && location && typeof location.href === "string") {
    absolute = new URL(url, location.href).href;
  }
  return absolute.replace(/^http(s?):\/\//i, "ws$1://");
}

/** @param {unknown} error */
function describe(error) {
  if (error instanceof Error) return error.message;
  return String(error);
}
