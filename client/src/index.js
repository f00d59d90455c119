// @ts-check
/**
 * Browser client for wspush.
 *
 * One `WspushClient` owns one logical connection to the wspush WebSocket API: it connects
 * and reconnects with its own loop (no dependency), keeps the connection alive with
 * `{"action":"ping"}` heartbeats, replaces a connection whose ping gets no pong, parses every
 * frame as the wspush envelope `{type, data, id, ts}`, drops duplicates by `id` and
 * dispatches on `type` to handlers that can be replaced at any time without touching the
 * socket.
 *
 * Reconnects are spread so that thousands of clients losing their connections together
 * do not come back together: every wait is a random delay drawn afresh in a window that
 * doubles with each failure in a row, and failures are counted toward `maxRetries`, after
 * which the client stops and tells the app.
 *
 * Streams (the user's own messages, and each channel with history) carry a `seq`: the client
 * remembers where each one stands and, on every new connection, asks for what it missed
 * (`hello` + `recover`, `subscribe` with `since`), holding the stream's frames until the
 * answer so that the app gets them in order, each once; when the history no longer reaches
 * back, it tells the app to reload (`onResync`). Before API Gateway's 2-hour cut, wspush
 * pushes `reconnect`: the client then opens the next connection while the current one keeps
 * delivering, and switches once it has recovered. Plain ES module, no build step.
 */

/** @typedef {"connecting" | "open" | "reconnecting" | "closed"} ConnectionState */

/**
 * A frame received from wspush. `data` is whatever the service sent (handlers name its type).
 * @template [T=unknown]
 * @typedef {object} WspushMessage
 * @property {string} type
 * @property {T} data
 * @property {string} [id]
 * @property {number} [ts]
 * @property {string} [channel] the channel a channel message or presence event belongs to
 * @property {string} [ref] on a reply: the `ref` of the request it answers
 * @property {number} [seq] position in its stream: the channel's history (with `channel`, in
 *   namespaces that keep one) or the user's own stream (without `channel`, when user history is on)
 */

/**
 * @template [T=any]
 * @callback MessageHandler
 * @param {WspushMessage<T>} message
 * @returns {void}
 */

/** @typedef {Record<string, MessageHandler | undefined | null>} HandlerMap */

/**
 * What `onError` receives. `kind` says where it came from:
 * - `"server"`: wspush answered with an `error` frame (`code`, `message`, `frame`);
 * - `"bad_frame"`: a frame that is not JSON or not an object with a string `type` (`raw`);
 * - `"socket"`: an open WebSocket reported an error (`event`);
 * - `"connect_failed"`: an attempt never opened: refused (401/403 reach a browser only as
 *   close 1006), unreachable, or timed out; or it closed before answering its first ping
 *   (`attempt`, `retryInMs`, `closeCode`, `event`);
 * - `"pong_timeout"`: a ping got no pong within `pongTimeoutMs`; the connection is replaced
 *   (`attempt`, `retryInMs`);
 * - `"token"`: the token provider threw, rejected or timed out (`error`, `attempt`, `retryInMs`);
 * - `"handler"`: a message handler threw (`error`, `frame`); other handlers still ran;
 * - `"max_retries"`: `maxRetries` retries in a row failed; the client is now `closed`
 *   until `reconnect()` (`attempt`);
 * - `"request"`: a request the client made on its own (the presence query that keeps a
 *   member list, a stream's recovery: `hello`, `recover`, `subscribe` with `since`) failed
 *   without an error frame: `code` `timeout` (`error`); a recovery that fails this way, or
 *   with an error frame, hands over what it held and gives up;
 * - `"rotation"`: the switch to a new connection before the current one's cut failed
 *   (`error`, `closeCode`, `frame`); the current connection is kept.
 * @typedef {object} WspushError
 * @property {"server" | "bad_frame" | "socket" | "connect_failed" | "pong_timeout" | "token" | "handler" | "max_retries" | "request" | "rotation"} kind
 * @property {string} message
 * @property {string} [code] the `code` of a server error frame
 * @property {number} [closeCode] the WebSocket close code of a failed attempt
 * @property {WspushMessage} [frame]
 * @property {unknown} [raw]
 * @property {unknown} [error]
 * @property {unknown} [event]
 * @property {number} [attempt] failures in a row so far, this one included
 * @property {number} [retryInMs] when the next attempt starts (absent when the client gives up)
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
 * @property {string} [userId] sent as the `userId` query parameter; required unless `token` is given
 *   (with tokens the server takes the user from the token)
 * @property {string} [platform] sent as the `platform` query parameter (`pc`, `mobile`, `web`, ...)
 * @property {string | (() => string | null | undefined | Promise<string | null | undefined>)} [token]
 *   a token, or a function called before EVERY connect and reconnect that returns a fresh one;
 *   sent as the `token` query parameter (omitted when empty)
 * @property {Record<string, string | number | boolean | null | undefined>} [query] extra query parameters
 * @property {HandlerMap | (() => HandlerMap | null | undefined)} [handlers] handlers by `type`
 *   (`"*"` for every message); a function is called at each dispatch, so it can return the latest map
 * @property {(state: ConnectionState, previous: ConnectionState) => void} [onStateChange]
 * @property {(error: WspushError) => void} [onError]
 * @property {(event: ResyncEvent) => void} [onResync] a stream could not be recovered: reload its state
 * @property {number} [heartbeatMs] ping interval while open; default 5 minutes; 0 disables
 * @property {number} [pongTimeoutMs] replace the connection when a ping gets no pong within this; default 10 s; 0 disables
 * @property {number} [tokenTimeoutMs] a token provider that has not answered within this has failed; default 10 s; 0 disables
 * @property {number} [connectTimeoutMs] an attempt that has not opened within this has failed; default 10 s; 0 disables
 * @property {number} [reconnectDelayMs] the first backoff window; default 1 s
 * @property {number} [maxReconnectDelayMs] the largest backoff window, also the one after API
 *   Gateway's 2-hour or idle limit closed a working connection; default 60 s
 * @property {number} [maxRetries] failed retries in a row before giving up (state `closed`); default 10
 * @property {number} [requestTimeoutMs] a request (subscribe, unsubscribe, presence, `request()`)
 *   whose reply has not come this long after it was sent fails with code `timeout`; default 10 s; 0 disables
 * @property {number} [recoveryTimeoutMs] a recovery (`hello` after a reconnect, `recover`, a
 *   `subscribe` with `since`, the answers a switch waits for) given up when its answer has not
 *   come this long after it was sent; default 30 s; 0 disables
 * @property {boolean} [pingOnOpen] send a ping right after each open (learns the connection id
 *   and proves the route works); default true
 * @property {number} [dedupeSize] at most this many recent message ids are remembered; default 20,000; 0 disables
 * @property {number} [dedupeWindowMs] and each for this long; default 30 minutes; 0: by count only
 * @property {number} [rotationSpreadMs] on a `reconnect` push, the switch to a new connection
 *   starts after a random delay of at most this (and at most half the time left before the
 *   cut); default 60 s; 0: at once
 * @property {boolean} [watchNetwork] in a browser, cut a backoff wait short when the network comes back
 *   and ping when the tab becomes visible again; default true
 * @property {any} [WebSocket] WebSocket constructor (tests, Node, React Native); default the global one
 * @property {string | string[]} [protocols] WebSocket sub-protocols
 * @property {() => number} [random] source of the random delays (backoff, rotation spread), in [0, 1); default `Math.random`
 * @property {any} [window] event target for `online` (defaults to the global scope; for tests)
 * @property {any} [document] event target for `visibilitychange` (defaults to `document`; for tests)
 */

/**
 * Five minutes: API Gateway closes a connection idle for 10, and browsers wake the timers of a
 * hidden tab only once a minute, so a beat can come a minute late and still leave four.
 */
export const DEFAULT_HEARTBEAT_MS = 5 * 60 * 1000;
export const DEFAULT_PONG_TIMEOUT_MS = 10_000;
export const DEFAULT_TOKEN_TIMEOUT_MS = 10_000;
export const DEFAULT_CONNECT_TIMEOUT_MS = 10_000;
export const DEFAULT_RECONNECT_DELAY_MS = 1000;
export const DEFAULT_MAX_RECONNECT_DELAY_MS = 60_000;
export const DEFAULT_MAX_RETRIES = 10;
/** Message ids are remembered for 30 minutes (a late SQS redelivery), at most 20,000 of them. */
export const DEFAULT_DEDUPE_SIZE = 20_000;
export const DEFAULT_DEDUPE_WINDOW_MS = 30 * 60 * 1000;
/** How long a request (subscribe, presence, ...) waits for its reply once sent. */
export const DEFAULT_REQUEST_TIMEOUT_MS = 10_000;
/**
 * How long a recovery (`hello` after a reconnect, `recover`, `subscribe` with `since`, the
 * answers of a switch) waits: a replay of 500 messages, posted one at a time, takes some 11 s;
 * API Gateway gives the server's answer 29 s at most.
 */
export const DEFAULT_RECOVERY_TIMEOUT_MS = 30_000;
/** A `reconnect` push starts the switch to a new connection within this (spreads the herd). */
export const DEFAULT_ROTATION_SPREAD_MS = 60_000;
/** The presence query follows at most this many pages (100 members each). */
const MAX_PRESENCE_PAGES = 1000;

/** WebSocket close code the client uses when it drops a connection itself. */
export const CLIENT_RECONNECT_CODE = 4000;

const OPEN = 1;
const PING_FRAME = JSON.stringify({ action: "ping" });
/** The close code API Gateway sends at its 2-hour and idle limits. */
const GOING_AWAY = 1001;
/**
 * A working connection (it answered a ping) that stays open this long ends a run of failures;
 * one that is lost sooner is a failure too, so a server that accepts and then drops every
 * connection cannot keep its clients reconnecting every second.
 */
const STABLE_MS = 60_000;

/**
 * The backoff window after `failures` failures in a row (1 or more): `reconnectDelayMs`,
 * doubled for each failure after the first, never above `maxReconnectDelayMs`. The client
 * waits a random delay drawn uniformly in `[0, window)`.
 *
 * @param {number} failures
 * @param {{ reconnectDelayMs?: number, maxReconnectDelayMs?: number }} [options]
 * @returns {number}
 */
export function backoffWindow(failures, options = {}) {
  const base = options.reconnectDelayMs ?? DEFAULT_RECONNECT_DELAY_MS;
  const cap = options.maxReconnectDelayMs ?? DEFAULT_MAX_RECONNECT_DELAY_MS;
  return Math.min(cap, base * 2 ** Math.max(0, failures - 1));
}

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

/**
 * Remembers the ids it was shown for `windowMs` (0: no time limit), at most `size` of them
 * (the oldest forgotten first). A message redelivered late (SQS is at-least-once) is caught
 * as long as its first copy is within both limits.
 */
export class RecentIds {
  /**
   * @param {number} size
   * @param {number} [windowMs]
   * @param {() => number} [now]
   */
  constructor(size, windowMs = 0, now = Date.now) {
    this.size = Math.max(0, Math.floor(size));
    this.windowMs = Math.max(0, windowMs);
    /** @private */
    this._now = now;
    /** @type {Map<string, number>} id → when first seen, oldest first */
    this.ids = new Map();
  }

  /**
   * Record `id`; true when it was already there (a duplicate).
   * @param {string} id
   */
  seen(id) {
    if (this.size === 0) return false;
    const now = this._now();
    if (this.windowMs > 0) {
      for (const [oldest, at] of this.ids) {
        if (now - at < this.windowMs) break;
        this.ids.delete(oldest);
      }
    }
    if (this.ids.has(id)) return true;
    if (this.ids.size >= this.size) {
      const oldest = this.ids.keys().next().value;
      if (oldest !== undefined) this.ids.delete(oldest);
    }
    this.ids.set(id, now);
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
    const hasUserId = typeof options.userId === "string" && options.userId !== "";
    if (!hasUserId && (options.token === undefined || options.token === null)) {
      throw new TypeError("wspush: options.userId is required (unless a token is given)");
    }
    // Fail now on a URL that cannot work, not later inside a reconnect timer.
    if (!/^wss?:\/\//i.test(resolveUrl(options.url))) {
      throw new TypeError(`wspush: options.url must be a ws:// or wss:// URL, got ${JSON.stringify(options.url)}`);
    }
    /** @private */
    this._options = { ...options };
    /** @private */
    this._heartbeatMs = options.heartbeatMs ?? DEFAULT_HEARTBEAT_MS;
    /** @private */
    this._pongTimeoutMs = options.pongTimeoutMs ?? DEFAULT_PONG_TIMEOUT_MS;
    /** @private */
    this._tokenTimeoutMs = options.tokenTimeoutMs ?? DEFAULT_TOKEN_TIMEOUT_MS;
    /** @private */
    this._connectTimeoutMs = options.connectTimeoutMs ?? DEFAULT_CONNECT_TIMEOUT_MS;
    /** @private */
    this._maxRetries = options.maxRetries ?? DEFAULT_MAX_RETRIES;
    /** @private */
    this._random = options.random ?? Math.random;
    /** @private */
    this._recent = new RecentIds(
      options.dedupeSize ?? DEFAULT_DEDUPE_SIZE,
      options.dedupeWindowMs ?? DEFAULT_DEDUPE_WINDOW_MS,
    );

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
    /** @private @type {Set<ResyncListener>} */
    this._resyncListeners = new Set();

    /** @private */
    this._requestTimeoutMs = options.requestTimeoutMs ?? DEFAULT_REQUEST_TIMEOUT_MS;
    /** @private */
    this._recoveryTimeoutMs = options.recoveryTimeoutMs ?? DEFAULT_RECOVERY_TIMEOUT_MS;
    /** @private @type {Map<string, ChannelEntry>} channels wanted by the app, or being left */
    this._channels = new Map();
    /** @private @type {Map<string, Set<PresenceListener>>} */
    this._presenceListeners = new Map();
    /** @private @type {Map<string, PendingRequest>} requests sent on the current socket, by ref */
    this._pending = new Map();
    /** @private */
    this._refs = 0;
    /** @private @type {StreamState} the user's own stream (when user history is on) */
    this._user = { position: null, ahead: new Set(), recovery: null };
    /** @private */
    this._rotationSpreadMs = options.rotationSpreadMs ?? DEFAULT_ROTATION_SPREAD_MS;
    /** @private @type {Rotation | null} the switch to a new connection under way */
    this._rotation = null;

    /**
     * Each attempt (token, handshake, socket) has a number; anything that belongs to an
     * older one (a token answering late, a socket's events) is ignored.
     * @private
     */
    this._attemptId = 0;
    /** @private @type {any} the current attempt's socket, or null */
    this._socket = null;
    /** @private the current socket has opened */
    this._opened = false;
    /** @private the current socket has proved it works (answered a ping) */
    this._confirmed = false;
    /** @private when the current socket opened (ms since the epoch) */
    this._openedAt = 0;
    /** @private failures in a row: attempts that never opened, missed pongs, token failures */
    this._failures = 0;
    /** @private */
    this._closed = false;
    /** @private */
    this._gaveUp = false;

    /** @private @type {ReturnType<typeof setTimeout> | undefined} */
    this._retryTimer = undefined;
    /** @private @type {ReturnType<typeof setTimeout> | undefined} */
    this._tokenTimer = undefined;
    /** @private @type {ReturnType<typeof setTimeout> | undefined} */
    this._connectTimer = undefined;
    /** @private @type {ReturnType<typeof setInterval> | undefined} */
    this._heartbeatTimer = undefined;
    /** @private @type {ReturnType<typeof setTimeout> | undefined} */
    this._pongTimer = undefined;
    /** @private @type {(() => void)[]} */
    this._unwatch = [];

    // The first attempt starts from a timer: a client closed at once (React StrictMode
    // mounts, unmounts and mounts again) never opens a socket.
    this._retryTimer = setTimeout(() => this._attempt(), 0);
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
   * Two things share this name, told apart by the first argument:
   *
   * - `subscribe(listener)`: call `listener(snapshot)` whenever the state or the connection id
   *   changes (the store `useSyncExternalStore` wants); returns the function that stops it.
   * - `subscribe(channel, handler?, options?)`: join a channel. `handler` receives the
   *   channel's messages (frames whose `channel` is this one; presence events go to
   *   `onPresence`). The subscription is sent as soon as the connection is open and again
   *   after every reconnect (the server forgets a connection's subscriptions when it ends).
   *   Returns a promise of the server's `subscribed` data (`{channel, …}`), rejected with a
   *   `WspushRequestError` (`code`: `forbidden`, `unknown_namespace`, `timeout`, …) when it
   *   is refused; the promise also has `unsubscribe()`, which ends this one subscription.
   *   A refused subscription is over: its handler gets nothing more.
   *
   * @overload
   * @param {(snapshot: Snapshot) => void} listener
   * @returns {() => void}
   */
  /**
   * @overload
   * @param {string} channel
   * @param {MessageHandler | null} [handler]
   * @param {SubscribeOptions} [options]
   * @returns {ChannelSubscription}
   */
  /**
   * @param {string | ((snapshot: Snapshot) => void)} target
   * @param {MessageHandler | null} [handler]
   * @param {SubscribeOptions} [options]
   * @returns {any}
   */
  subscribe(target, handler, options) {
    if (typeof target === "function") {
      const listener = target;
      this._subscribers.add(listener);
      return () => {
        this._subscribers.delete(listener);
      };
    }
    const name = checkChannel(target);
    /** @type {Registration} */
    const registration = {
      handler: typeof handler === "function" ? handler : undefined,
      onError: options?.onError,
      waiter: undefined,
    };
    /** @type {Promise<SubscribedData>} */
    let promise;
    if (this._closed) {
      promise = Promise.reject(new WspushRequestError("closed", "the client is closed", name));
    } else {
      const entry = this._entry(name);
      entry.registrations.add(registration);
      promise = new Promise((resolve, reject) => {
        if (entry.server === "subscribed") resolve(entry.subscribed);
        else registration.waiter = { resolve, reject, timer: undefined };
      });
      this._sync(entry);
      this._armWaiters(entry);
    }
    // The refusal also reaches onError; an app that does not await must not see an
    // unhandled rejection.
    promise.catch(() => {});
    return Object.assign(promise, {
      channel: name,
      unsubscribe: () => this._release(name, registration),
    });
  }

  /**
   * Leave a channel: every subscription to it ends (their handlers get nothing more) and
   * the server is told. Resolves once the server has answered (at once when there was
   * nothing to leave, or when the connection ends first: the server then forgets it anyway).
   * @param {string} channel
   * @returns {Promise<void>}
   */
  unsubscribe(channel) {
    const name = checkChannel(channel);
    const entry = this._channels.get(name);
    if (!entry) return Promise.resolve();
    const released = [...entry.registrations];
    entry.registrations.clear();
    for (const registration of released) this._settleWaiter(registration, unsubscribedError(name));
    return this._leaveLater(entry);
  }

  /**
   * The channels the app is subscribed to (or subscribing to), in the order first asked.
   * @returns {string[]}
   */
  channels() {
    return [...this._channels.values()].filter((entry) => entry.registrations.size > 0).map((entry) => entry.name);
  }

  /**
   * Follow who is in a presence channel. While the app is subscribed to `channel`, the
   * client asks the server for its members (every page) after each `subscribed`, keeps
   * the list current with `presence.join` / `presence.leave`, and calls `listener` with
   * `{channel, type: "sync" | "join" | "leave", userId?, info?, members}` on every change
   * (`sync`: the whole list was read again, after a subscribe or a reconnect). Does not
   * subscribe by itself.
   * @param {string} channel
   * @param {PresenceListener} listener
   * @returns {() => void} stop listening
   */
  onPresence(channel, listener) {
    const name = checkChannel(channel);
    let set = this._presenceListeners.get(name);
    if (!set) {
      set = new Set();
      this._presenceListeners.set(name, set);
    }
    set.add(listener);
    const entry = this._channels.get(name);
    if (entry && entry.server === "subscribed" && !entry.members && entry.fetch === 0) this._fetchMembers(entry);
    return () => {
      const listeners = this._presenceListeners.get(name);
      if (!listeners) return;
      listeners.delete(listener);
      if (listeners.size === 0) this._presenceListeners.delete(name);
    };
  }

  /**
   * The members of `channel` as the client knows them (see `onPresence`), or null when it
   * does not follow that channel's presence (yet).
   * @param {string} channel
   * @returns {PresenceMember[] | null}
   */
  members(channel) {
    const entry = this._channels.get(channel);
    return entry && entry.members ? [...entry.members.values()] : null;
  }

  /**
   * Ask who is in a presence channel the app is subscribed to: every page, followed.
   * Waits for the channel's subscription when it is still on its way.
   * @param {string} channel
   * @returns {Promise<{ channel: string, count: number, members: PresenceMember[] }>}
   */
  async presence(channel) {
    const name = checkChannel(channel);
    /** @type {PresenceMember[]} */
    const members = [];
    /** @type {string | null | undefined} */
    let after;
    let count = 0;
    for (let page = 0; page < MAX_PRESENCE_PAGES; page += 1) {
      const data = await this.presencePage(name, after);
      members.push(...(Array.isArray(data.members) ? data.members : []));
      count = typeof data.count === "number" ? data.count : members.length;
      after = data.next;
      if (!after) break;
    }
    return { channel: name, count, members };
  }

  /**
   * One page (100 members) of a presence channel: `{channel, count, members, next}`; pass
   * `next` back as `after` for the next page (`null`: that was the last one).
   * @param {string} channel
   * @param {string | null} [after]
   * @returns {Promise<PresencePage>}
   */
  async presencePage(channel, after) {
    const name = checkChannel(channel);
    const entry = this._channels.get(name);
    if (entry && entry.registrations.size > 0 && entry.server !== "subscribed") {
      await new Promise((resolve, reject) => entry.ready.push({ resolve, reject }));
    }
    /** @type {Record<string, unknown>} */
    const frame = { action: "presence", channel: name };
    if (after) frame.after = after;
    const reply = await this.request(frame);
    return /** @type {PresencePage} */ (reply.data);
  }

  /**
   * Send a request and wait for its reply: the frame gets a fresh `ref` (unless it has one),
   * and the promise resolves with the frame that echoes it, or rejects with a
   * `WspushRequestError`: the `code` of an `error` reply, or `not_open` (not sent: requests
   * are not queued), `timeout`, `disconnected` (the connection ended first), `closed`.
   * @param {Record<string, unknown>} frame
   * @param {{ timeoutMs?: number }} [options]
   * @returns {Promise<WspushMessage<any>>}
   */
  request(frame, options = {}) {
    if (!frame || typeof frame !== "object") throw new TypeError("wspush: request(frame) takes an object");
    const channel = typeof frame.channel === "string" ? frame.channel : undefined;
    if (this._closed) return Promise.reject(new WspushRequestError("closed", "the client is closed", channel));
    if (!this._isOpen()) return Promise.reject(new WspushRequestError("not_open", "not connected", channel));
    const ref = typeof frame.ref === "string" && frame.ref !== "" ? frame.ref : this._nextRef();
    const timeoutMs = options.timeoutMs ?? this._requestTimeoutMs;
    return new Promise((resolve, reject) => {
      /** @type {PendingRequest} */
      const pending = {
        onReply: (reply) => {
          if (reply.type === "error") reject(errorFromFrame(reply, channel));
          else resolve(reply);
        },
        onLost: (code) => reject(new WspushRequestError(code, lostMessage(code), channel)),
        timer: undefined,
      };
      if (timeoutMs > 0) {
        pending.timer = setTimeout(() => {
          this._pending.delete(ref);
          reject(new WspushRequestError("timeout", `no reply within ${timeoutMs} ms`, channel));
        }, timeoutMs);
      }
      this._pending.set(ref, pending);
      this.send({ ...frame, ref });
    });
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
   * Hear when a stream could not be recovered after a reconnect or a connection switch:
   * `{stream, epoch, seq, reason?}`, `stream` being `"user"` (the user's own messages) or a
   * channel's name. Messages of that stream may have been missed: reload what the app shows
   * of it. The stream's messages after `seq` follow. Never called for the first connection.
   * @param {ResyncListener} listener
   * @returns {() => void} unsubscribe
   */
  onResync(listener) {
    this._resyncListeners.add(listener);
    return () => {
      this._resyncListeners.delete(listener);
    };
  }

  /**
   * Send a frame: an object is sent as JSON, a string as it is. Returns false (and sends
   * nothing) unless the connection is open: nothing is queued while offline.
   * @param {unknown} frame
   * @returns {boolean}
   */
  send(frame) {
    if (this._closed || this._state !== "open" || !this._socket || this._socket.readyState !== OPEN) return false;
    this._socket.send(typeof frame === "string" ? frame : JSON.stringify(frame));
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
   * Drop the current connection (if any) and connect again now, without waiting out a
   * backoff, with the failure count back at zero. Also restarts a client that gave up after
   * `maxRetries` (after a new login, say). Does nothing after `close()`.
   * @returns {boolean} false after `close()`
   */
  reconnect() {
    if (this._closed) return false;
    this._gaveUp = false;
    this._failures = 0;
    this._abandon(CLIENT_RECONNECT_CODE, "client reconnect");
    this._setState(this._state === "connecting" ? "connecting" : "reconnecting");
    this._retryTimer = setTimeout(() => this._attempt(), 0);
    return true;
  }

  /**
   * Close the connection for good: no more heartbeats, reconnects, timers or handler calls.
   * @param {number} [code] WebSocket close code, default 1000
   * @param {string} [reason]
   */
  close(code = 1000, reason = "client closed") {
    if (this._closed) return;
    this._closed = true;
    for (const unwatch of this._unwatch.splice(0)) unwatch();
    this._endChannels();
    this._abandon(code, reason);
    this._dropRecovery(this._user);
    this._setState("closed");
  }

  // ---- the connection loop ----------------------------------------------------

  /**
   * One attempt: ask for a token (when there is a provider), then open a socket.
   * @private
   */
  _attempt() {
    this._retryTimer = undefined;
    if (this._closed || this._gaveUp) return;
    const attemptId = ++this._attemptId;
    const { token } = this._options;
    if (typeof token !== "function") {
      this._openSocket(attemptId, token ?? undefined);
      return;
    }
    new Promise((resolve, reject) => {
      if (this._tokenTimeoutMs > 0) {
        this._tokenTimer = setTimeout(() => reject(new Error("token provider timed out")), this._tokenTimeoutMs);
      }
      Promise.resolve()
        .then(() => token())
        .then(resolve, reject);
    }).then(
      (value) => {
        if (attemptId !== this._attemptId || this._closed) return;
        this._clearTokenTimer();
        this._openSocket(attemptId, /** @type {string | null | undefined} */ (value) ?? undefined);
      },
      (error) => {
        if (attemptId !== this._attemptId || this._closed) return;
        this._clearTokenTimer();
        this._fail({ kind: "token", message: `token provider failed: ${describe(error)}`, error });
      },
    );
  }

  /**
   * @private
   * @param {number} attemptId
   * @param {string | undefined} token
   */
  _openSocket(attemptId, token) {
    /** @type {any} */
    let socket;
    try {
      socket = this._newSocket(token);
    } catch (error) {
      this._fail({ kind: "connect_failed", message: `WebSocket could not be created: ${describe(error)}`, error });
      return;
    }
    this._socket = socket;
    this._opened = false;
    this._confirmed = false;
    const current = () => attemptId === this._attemptId && socket === this._socket && !this._closed;

    if (this._connectTimeoutMs > 0) {
      this._connectTimer = setTimeout(() => {
        this._connectTimer = undefined;
        if (!current() || this._opened) return;
        this._detach(CLIENT_RECONNECT_CODE, "connect timeout");
        this._fail({ kind: "connect_failed", message: `not open within ${this._connectTimeoutMs} ms` });
      }, this._connectTimeoutMs);
    }
    /** @type {unknown} */
    let handshakeError;
    socket.addEventListener("open", () => {
      if (current()) this._handleOpen();
    });
    socket.addEventListener("error", (/** @type {any} */ event) => {
      if (!current()) return;
      if (!this._opened) {
        handshakeError = event; // told with the close that follows, as connect_failed
        return;
      }
      const message = event && event.message ? `WebSocket error: ${event.message}` : "WebSocket error";
      this._report({ kind: "socket", message, event });
    });
    socket.addEventListener("close", (/** @type {any} */ event) => {
      if (current()) this._handleClose(event, handshakeError);
    });
    socket.addEventListener("message", (/** @type {any} */ event) => {
      if (current()) this._handleFrame(event.data);
    });
  }

  /**
   * A WebSocket to the configured URL (throws what the constructor throws).
   * @private
   * @param {string | undefined} token
   * @returns {any}
   */
  _newSocket(token) {
    const { url, userId, platform, query, protocols } = this._options;
    const target = buildUrl(resolveUrl(url), { ...query, userId, platform, token });
    const WebSocketClass = this._options.WebSocket ?? /** @type {any} */ (globalThis).WebSocket;
    return protocols === undefined ? new WebSocketClass(target) : new WebSocketClass(target, protocols);
  }

  /** @private */
  _handleOpen() {
    this._opened = true;
    this._openedAt = Date.now();
    this._clearTimer("_connectTimer");
    const willPing = this._options.pingOnOpen !== false && this._pongTimeoutMs > 0;
    if (!willPing) this._confirm();
    const socket = this._socket;
    this._setState("open");
    // a state listener may have closed the client or asked for another connection
    if (this._closed || socket !== this._socket) return;
    if (this._heartbeatMs > 0) {
      this._heartbeatTimer = setInterval(() => this.ping(), this._heartbeatMs);
    }
    if (this._options.pingOnOpen !== false) this.ping();
    this._sendHello();
    // the server forgot the subscriptions with the last connection: send them all again
    for (const entry of [...this._channels.values()]) this._sync(entry);
  }

  /**
   * @private
   * @param {any} event
   * @param {unknown} handshakeError
   */
  _handleClose(event, handshakeError) {
    const code = event && typeof event.code === "number" ? event.code : undefined;
    const { _opened: opened, _confirmed: confirmed } = this;
    const stable = this._settle();
    this._detach();
    if (!opened) {
      this._fail({
        kind: "connect_failed",
        message: `the connection was refused or could not be made (close code ${code ?? "none"})`,
        closeCode: code,
        event: handshakeError ?? event,
      });
    } else if (!confirmed) {
      // opened, then closed before answering its first ping: as good as refused
      this._fail({
        kind: "connect_failed",
        message: `closed before it answered a ping (close code ${code ?? "none"})`,
        closeCode: code,
        event,
      });
    } else if (code === GOING_AWAY) {
      // API Gateway's 2-hour and idle limits (1001 Going Away) close every connection opened,
      // or left idle, together: spread the way back over the widest window. Not a failure.
      this._schedule(this._options.maxReconnectDelayMs ?? DEFAULT_MAX_RECONNECT_DELAY_MS);
    } else if (stable) {
      // A working connection ended otherwise (the server closed this one, the network):
      // not a failure, but still a random wait in the first backoff window.
      this._schedule(backoffWindow(1, this._options));
    } else {
      // lost within a minute of opening: one more failure in a row
      this._fail(null);
    }
  }

  /** @private */
  _onPongTimeout() {
    this._pongTimer = undefined;
    if (this._closed || this._state !== "open") return;
    this._settle();
    this._detach(CLIENT_RECONNECT_CODE, "no pong");
    this._fail({ kind: "pong_timeout", message: `no pong within ${this._pongTimeoutMs} ms; reconnecting` });
  }

  /**
   * One more failure in a row: wait a backoff window and try again, or give up.
   * @private
   * @param {WspushError | null} error what to tell the app (null: nothing)
   */
  _fail(error) {
    this._failures += 1;
    const attempt = this._failures;
    if (attempt > this._maxRetries) {
      this._gaveUp = true;
      this._setState("closed");
      if (error) this._report({ ...error, attempt });
      if (this._gaveUp && !this._closed) {
        this._report({
          kind: "max_retries",
          attempt,
          message: `gave up after ${attempt} failures in a row; call reconnect() to try again`,
        });
      }
      return;
    }
    const retryInMs = this._schedule(backoffWindow(attempt, this._options));
    if (error) this._report({ ...error, attempt, retryInMs });
  }

  /**
   * Start the next attempt after a random delay in `[0, windowMs)`.
   * @private
   * @param {number} windowMs
   * @returns {number} the delay
   */
  _schedule(windowMs) {
    const delay = Math.floor(this._random() * windowMs);
    this._clearTimer("_retryTimer");
    this._retryTimer = setTimeout(() => this._attempt(), delay);
    this._setState("reconnecting");
    return delay;
  }

  /** @private the current socket works: failures in a row are over */
  _confirm() {
    this._confirmed = true;
  }

  /**
   * When the current socket worked and stayed open `STABLE_MS`, the run of failures is over.
   * @private
   * @returns {boolean} whether it did
   */
  _settle() {
    const stable = this._confirmed && Date.now() - this._openedAt >= STABLE_MS;
    if (stable) this._failures = 0;
    return stable;
  }

  /**
   * Forget the current socket (its events are ignored from now on) and stop its timers;
   * close it when `code` is given.
   * @private
   * @param {number} [code]
   * @param {string} [reason]
   */
  _detach(code, reason) {
    const socket = this._socket;
    this._socket = null;
    this._opened = false;
    this._confirmed = false;
    this._clearTimer("_connectTimer");
    this._clearTimer("_heartbeatTimer");
    this._clearTimer("_pongTimer");
    // a switch under way needs the current connection: it is given up with it
    this._cancelRotation();
    this._setConnectionId(null);
    if (socket && code !== undefined) closeQuietly(socket, code, reason);
    this._channelsLost();
  }

  /**
   * Stop whatever the current attempt is doing: its backoff wait, its token request, its socket.
   * @private
   * @param {number} code
   * @param {string} reason
   */
  _abandon(code, reason) {
    this._attemptId += 1;
    this._clearTimer("_retryTimer");
    this._clearTokenTimer();
    this._detach(code, reason);
  }

  /** @private */
  _clearTokenTimer() {
    this._clearTimer("_tokenTimer");
  }

  /**
   * @private
   * @param {"_retryTimer" | "_tokenTimer" | "_connectTimer" | "_heartbeatTimer" | "_pongTimer"} name
   */
  _clearTimer(name) {
    const timer = this[name];
    if (timer === undefined) return;
    clearTimeout(timer);
    clearInterval(timer);
    this[name] = undefined;
  }

  // ---- frames -----------------------------------------------------------------

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
    this._receive(parsed.message);
  }

  /**
   * A frame of a stream whose recovery is under way waits for its answer; any other is
   * delivered now.
   * @private
   * @param {WspushMessage} message
   * @param {boolean} [held] it came on the next connection during a switch
   */
  _receive(message, held = false) {
    const stream = this._streamOf(message);
    if (stream && stream.recovery) stream.recovery.frames.push(message);
    else this._deliver(message, held);
  }

  /**
   * The state of the stream a frame belongs to: frames with a `seq` and a `channel` belong to
   * that channel's (while the app has it), with a `seq` and no `channel` to the user's.
   * @private
   * @param {WspushMessage} message
   * @returns {StreamState | null}
   */
  _streamOf(message) {
    if (typeof message.seq !== "number") return null;
    if (typeof message.channel === "string") return this._channels.get(message.channel) ?? null;
    return this._user;
  }

  /**
   * Hand a frame to the app, unless its id was seen: replies settle their requests, the
   * stream's position moves on, handlers run.
   * @private
   * @param {WspushMessage} message
   * @param {boolean} [held] it came on the next connection during a switch
   */
  _deliver(message, held = false) {
    // a seq the stream already has (at or below its position, or received ahead of it) is a
    // duplicate: a replayed copy of a live frame, or the same frame on both connections of a switch
    const stream = this._streamOf(message);
    if (stream && !takeSeq(stream, /** @type {number} */ (message.seq))) return;
    const id = message.id;
    if ((typeof id === "string" && id !== "") || typeof id === "number") {
      if (this._recent.seen(String(id))) return;
    }

    if (message.type === "pong") {
      this._clearTimer("_pongTimer");
      this._confirm();
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
    } else if (message.type === "reconnect" && message.ref === undefined && !held) {
      // (one that came during a switch, on either connection, is ignored)
      this._planRotation(message);
    }
    this._dispatch(message, this._routeChannelFrame(message));
  }

  /**
   * @private
   * @param {WspushMessage} message
   * @param {(MessageHandler | null | undefined)[]} [channelHandlers] run last
   */
  _dispatch(message, channelHandlers = []) {
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
    calls.push(...channelHandlers);
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

  // ---- streams: positions and recovery -------------------------------------------

  /**
   * On every open: `hello`, which answers where the user stream stands. With an earlier
   * position (a reconnect), the user stream's frames wait from now on for its recovery.
   * @private
   */
  _sendHello() {
    const user = this._user;
    if (user.position && !user.recovery) user.recovery = { since: user.position, frames: [], timer: undefined };
    const ref = this._nextRef();
    this._pending.set(ref, { onReply: (reply) => this._welcomed(reply), onLost: () => {}, timer: undefined });
    if (!this.send({ action: "hello", ref })) {
      this._pending.delete(ref);
      return;
    }
    this._armRecovery(user, "user", "hello");
  }

  /**
   * @private
   * @param {WspushMessage<any>} reply `welcome`, or an error (reported as every error frame is)
   */
  _welcomed(reply) {
    const user = this._user;
    if (reply.type === "error") {
      this._abortRecovery(user);
      return;
    }
    const stream = positionOf(reply.data && reply.data.stream);
    if (!stream) {
      // user history is off: there is no user stream to follow
      this._abortRecovery(user);
      setPosition(user, null);
      return;
    }
    let recovery = user.recovery;
    if (!recovery) {
      // the first connection: start from here
      if (!user.position) {
        setPosition(user, stream);
        return;
      }
      // a hello given up (no answer in time) whose welcome came late: what was missed is still
      // asked for, from the end of the unbroken run (what was held went to the app already)
      recovery = { since: user.position, frames: [], timer: undefined };
      user.recovery = recovery;
    }
    const ref = this._nextRef();
    this._pending.set(ref, { onReply: (answer) => this._userRecovered(answer), onLost: () => {}, timer: undefined });
    if (!this.send({ action: "recover", since: { ...recovery.since }, ref })) {
      this._pending.delete(ref);
      return;
    }
    this._armRecovery(user, "user", "recover");
  }

  /**
   * @private
   * @param {WspushMessage<any>} reply `recovered`, or an error
   */
  _userRecovered(reply) {
    if (reply.type === "error") {
      this._abortRecovery(this._user);
      if (reply.data && reply.data.code === "no_history") setPosition(this._user, null);
      return;
    }
    this._recovered("user", this._user, reply.data);
  }

  /**
   * The server answered a recovery (`recovered`, or `subscribed` to a `since`): with
   * `recovered: true` the held frames after `since` go to the app in seq order, each once;
   * otherwise the app hears `onResync` first, then gets the held frames after the stream's
   * new position.
   * @private
   * @param {string} name `"user"` or the channel
   * @param {StreamState} stream
   * @param {any} data the reply's data
   */
  _recovered(name, stream, data) {
    const position = positionOf(data);
    const recovery = this._takeRecovery(stream);
    if (data && data.recovered === true) {
      // the replayed frames move the position on one seq at a time, then it stands where the
      // server says (each seq up to there was replayed)
      if (recovery) this._deliverInOrder(recovery.frames, recovery.since.seq);
      if (position && !this._closed) advance(stream, position);
      return;
    }
    setPosition(stream, position);
    /** @type {ResyncEvent} */
    const event = { stream: name, epoch: position ? position.epoch : null, seq: position ? position.seq : null };
    if (data && typeof data.reason === "string") event.reason = data.reason;
    else if (!position) event.reason = "no_history";
    this._emitResync(event);
    if (recovery) this._deliverInOrder(recovery.frames, position ? position.seq : -Infinity);
  }

  /**
   * A recovery that failed (an error reply, no reply in time, no history after all) must not
   * hold the stream: what it holds goes to the app, in seq order.
   * @private
   * @param {StreamState} stream
   */
  _abortRecovery(stream) {
    const recovery = this._takeRecovery(stream);
    if (recovery) this._deliverInOrder(recovery.frames, recovery.since.seq);
  }

  /**
   * @private
   * @param {StreamState} stream
   * @returns {Recovery | null}
   */
  _takeRecovery(stream) {
    const recovery = stream.recovery;
    if (!recovery) return null;
    stream.recovery = null;
    if (recovery.timer !== undefined) clearTimeout(recovery.timer);
    return recovery;
  }

  /**
   * One stream's frames after `floor`, in seq order, each once: a seq held twice (a replayed
   * copy of a live frame) is one message, and a duplicate id is dropped on delivery.
   * @private
   * @param {WspushMessage[]} frames
   * @param {number} floor
   */
  _deliverInOrder(frames, floor) {
    const due = frames.filter((frame) => /** @type {number} */ (frame.seq) > floor);
    due.sort((a, b) => /** @type {number} */ (a.seq) - /** @type {number} */ (b.seq));
    let last = floor;
    for (const frame of due) {
      if (this._closed) return;
      if (frame.seq === last) continue;
      last = /** @type {number} */ (frame.seq);
      this._deliver(frame);
    }
  }

  /**
   * Wait `recoveryTimeoutMs` for a recovery request's answer (a replay takes a while), then
   * give the recovery up (the answer, when it comes late, still moves the position on).
   * @private
   * @param {StreamState} stream
   * @param {string} name
   * @param {string} action
   */
  _armRecovery(stream, name, action) {
    const recovery = stream.recovery;
    if (!recovery || this._recoveryTimeoutMs <= 0) return;
    if (recovery.timer !== undefined) clearTimeout(recovery.timer);
    const timeoutMs = this._recoveryTimeoutMs;
    recovery.timer = setTimeout(() => {
      recovery.timer = undefined;
      if (stream.recovery !== recovery) return;
      const channel = name === "user" ? undefined : name;
      const error = new WspushRequestError("timeout", `no reply within ${timeoutMs} ms`, channel);
      this._report({
        kind: "request",
        code: "timeout",
        message: `${action} (recovery of ${name === "user" ? "the user stream" : name}): ${error.message}; delivering what arrived`,
        error,
      });
      this._abortRecovery(stream);
    }, timeoutMs);
  }

  /**
   * The connection ended during a recovery: stop its timer, keep its frames (the next
   * connection asks from the same place, and its answer decides).
   * @private
   * @param {StreamState} stream
   */
  _pauseRecovery(stream) {
    const recovery = stream.recovery;
    if (!recovery || recovery.timer === undefined) return;
    clearTimeout(recovery.timer);
    recovery.timer = undefined;
  }

  /**
   * @private
   * @param {StreamState} stream
   */
  _dropRecovery(stream) {
    this._takeRecovery(stream);
  }

  /**
   * @private
   * @param {ResyncEvent} event
   */
  _emitResync(event) {
    const listeners = [this._options.onResync, ...this._resyncListeners];
    for (const listener of listeners) {
      if (typeof listener !== "function") continue;
      if (this._closed) return;
      try {
        listener({ ...event });
      } catch (error) {
        this._report({ kind: "handler", message: `resync listener for ${event.stream} threw: ${describe(error)}`, error });
      }
    }
  }

  // ---- rotation: the next connection before this one is cut -----------------------

  /**
   * A `reconnect` push: API Gateway cuts this connection at `data.before`. The switch starts
   * after a random delay of at most `rotationSpreadMs` and half the time left, so that the
   * clients told together do not all connect again together. Ignored while one is under way.
   * @private
   * @param {WspushMessage<any>} message
   */
  _planRotation(message) {
    if (this._rotation || !this._isOpen()) return;
    const before = message.data && typeof message.data === "object" ? message.data.before : undefined;
    const left = typeof before === "number" && Number.isFinite(before) ? Math.max(0, (before - Date.now()) / 2) : Infinity;
    const windowMs = Math.min(this._rotationSpreadMs, left);
    const delay = windowMs > 0 ? Math.floor(this._random() * windowMs) : 0;
    /** @type {Rotation} */
    const rotation = {
      timer: undefined,
      socket: null,
      openedAt: 0,
      replies: new Map(),
      welcome: null,
      user: null,
      channels: new Map(),
      held: [],
    };
    this._rotation = rotation;
    if (delay > 0) rotation.timer = setTimeout(() => this._rotate(rotation), delay);
    else this._rotate(rotation);
  }

  /**
   * Ask for a fresh token (when there is a provider), then open the next connection.
   * @private
   * @param {Rotation} rotation
   */
  _rotate(rotation) {
    rotation.timer = undefined;
    if (this._rotation !== rotation) return;
    const { token } = this._options;
    if (typeof token !== "function") {
      this._openNext(rotation, token ?? undefined);
      return;
    }
    if (this._tokenTimeoutMs > 0) {
      rotation.timer = setTimeout(() => this._rotationFailed(rotation, "the token provider timed out"), this._tokenTimeoutMs);
    }
    Promise.resolve()
      .then(() => token())
      .then(
        (value) => {
          if (this._rotation !== rotation) return;
          clearRotationTimer(rotation);
          this._openNext(rotation, /** @type {string | null | undefined} */ (value) ?? undefined);
        },
        (error) => this._rotationFailed(rotation, `the token provider failed: ${describe(error)}`, { error }),
      );
  }

  /**
   * Open the next connection; the current one stays open and keeps delivering.
   * @private
   * @param {Rotation} rotation
   * @param {string | undefined} token
   */
  _openNext(rotation, token) {
    /** @type {any} */
    let socket;
    try {
      socket = this._newSocket(token);
    } catch (error) {
      this._rotationFailed(rotation, `WebSocket could not be created: ${describe(error)}`, { error });
      return;
    }
    rotation.socket = socket;
    if (this._connectTimeoutMs > 0) {
      const timeoutMs = this._connectTimeoutMs;
      rotation.timer = setTimeout(() => this._rotationFailed(rotation, `not open within ${timeoutMs} ms`), timeoutMs);
    }
    // the socket's events are the next connection's until the switch, the current one's after it
    const next = () => this._rotation === rotation && !this._closed;
    const current = () => socket === this._socket && !this._closed;
    socket.addEventListener("open", () => {
      if (next()) this._nextOpened(rotation);
    });
    socket.addEventListener("message", (/** @type {any} */ event) => {
      if (next()) this._nextFrame(rotation, event.data);
      else if (current()) this._handleFrame(event.data);
    });
    socket.addEventListener("error", (/** @type {any} */ event) => {
      if (!current()) return; // before the switch, the close that follows tells it
      const message = event && event.message ? `WebSocket error: ${event.message}` : "WebSocket error";
      this._report({ kind: "socket", message, event });
    });
    socket.addEventListener("close", (/** @type {any} */ event) => {
      const code = event && typeof event.code === "number" ? event.code : undefined;
      if (next()) this._rotationFailed(rotation, `it closed (close code ${code ?? "none"})`, { closeCode: code, event });
      else if (current()) this._handleClose(event, undefined);
    });
  }

  /**
   * The next connection is open: `hello` (then `recover`), and a `subscribe` from where it
   * stands for every channel the app wants. The switch waits for every answer, at most
   * `recoveryTimeoutMs` when a stream is recovered (else `requestTimeoutMs`).
   * @private
   * @param {Rotation} rotation
   */
  _nextOpened(rotation) {
    clearRotationTimer(rotation);
    rotation.openedAt = Date.now();
    this._nextRequest(rotation, { action: "hello" }, (reply) => this._nextWelcomed(rotation, reply));
    let recovers = Boolean(this._user.recovery || this._user.position);
    for (const entry of this._channels.values()) {
      if (entry.registrations.size === 0 || this._rotation !== rotation) continue;
      const since = entry.recovery ? entry.recovery.since : entry.position;
      /** @type {{ since: StreamPosition | null, reply: WspushMessage<any> | null }} */
      const subscription = { since, reply: null };
      rotation.channels.set(entry.name, subscription);
      /** @type {Record<string, unknown>} */
      const frame = { action: "subscribe", channel: entry.name };
      if (since) frame.since = { ...since };
      if (since) recovers = true;
      this._nextRequest(rotation, frame, (reply) => {
        subscription.reply = reply;
        this._nextProgress(rotation);
      });
    }
    const timeoutMs = recovers ? this._recoveryTimeoutMs : this._requestTimeoutMs;
    if (this._rotation === rotation && timeoutMs > 0) {
      rotation.timer = setTimeout(() => this._rotationFailed(rotation, `no reply within ${timeoutMs} ms`), timeoutMs);
    }
  }

  /**
   * @private
   * @param {Rotation} rotation
   * @param {Record<string, unknown>} frame
   * @param {(reply: WspushMessage<any>) => void} onReply
   */
  _nextRequest(rotation, frame, onReply) {
    const ref = this._nextRef();
    rotation.replies.set(ref, onReply);
    try {
      rotation.socket.send(JSON.stringify({ ...frame, ref }));
    } catch (error) {
      this._rotationFailed(rotation, `a request could not be sent: ${describe(error)}`, { error });
    }
  }

  /**
   * @private
   * @param {Rotation} rotation
   * @param {WspushMessage<any>} reply
   */
  _nextWelcomed(rotation, reply) {
    if (reply.type === "error") {
      this._rotationFailed(rotation, `hello was answered with ${errorFromFrame(reply).code}`, { frame: reply });
      return;
    }
    rotation.welcome = reply.data && typeof reply.data === "object" ? reply.data : {};
    const user = this._user;
    const since = user.recovery ? user.recovery.since : user.position;
    if (since && positionOf(/** @type {Record<string, any>} */ (rotation.welcome).stream)) {
      /** @type {{ since: StreamPosition, reply: WspushMessage<any> | null }} */
      const recovery = { since, reply: null };
      rotation.user = recovery;
      this._nextRequest(rotation, { action: "recover", since: { ...since } }, (answer) => {
        if (answer.type === "error") {
          this._rotationFailed(rotation, `recover was answered with ${errorFromFrame(answer).code}`, { frame: answer });
          return;
        }
        recovery.reply = answer;
        this._nextProgress(rotation);
      });
    }
    this._nextProgress(rotation);
  }

  /**
   * A frame on the next connection: an answer it waits for is taken now; every frame is held
   * for the switch.
   * @private
   * @param {Rotation} rotation
   * @param {unknown} raw
   */
  _nextFrame(rotation, raw) {
    const parsed = parseFrame(raw);
    if ("error" in parsed) {
      this._report({ kind: "bad_frame", message: parsed.error, raw });
      return;
    }
    const message = parsed.message;
    rotation.held.push(message);
    const ref = message.ref;
    const onReply = typeof ref === "string" ? rotation.replies.get(ref) : undefined;
    if (ref !== undefined && onReply) {
      rotation.replies.delete(ref);
      onReply(message);
    }
  }

  /**
   * @private
   * @param {Rotation} rotation
   */
  _nextProgress(rotation) {
    if (this._rotation !== rotation || !rotation.welcome) return;
    if (rotation.user && !rotation.user.reply) return;
    for (const subscription of rotation.channels.values()) {
      if (!subscription.reply) return;
    }
    this._switch(rotation);
  }

  /**
   * Every answer is in: the next connection becomes the current one, and the state does
   * not change. Requests still on their way on the old one end with it (its subscriptions
   * are taken over); what the new one received goes to the app, each stream in seq order
   * after what the old one delivered, each id once; the old one is closed with 1000, which
   * is no disconnect.
   * @private
   * @param {Rotation} rotation
   */
  _switch(rotation) {
    clearRotationTimer(rotation);
    this._rotation = null;
    const old = this._socket;
    const welcome = rotation.welcome ?? {};
    // member lists kept on the old connection are current: they are not read again
    const membersKept = new Set();
    for (const entry of this._channels.values()) {
      if (entry.server === "subscribed" && entry.fetch === 0 && entry.members) membersKept.add(entry.name);
    }
    const pending = [...this._pending.values()];
    this._pending.clear();
    this._clearTimer("_pongTimer");
    this._socket = rotation.socket;
    this._opened = true;
    this._confirmed = true;
    this._openedAt = rotation.openedAt;
    closeQuietly(old, 1000, "switched to a new connection");
    this._setConnectionId(typeof welcome.connectionId === "string" ? welcome.connectionId : null);
    for (const request of pending) {
      if (request.timer !== undefined) clearTimeout(request.timer);
      request.onLost("disconnected");
    }
    // what the server has is what the new connection has
    this._pauseRecovery(this._user);
    for (const entry of this._channels.values()) {
      this._pauseRecovery(entry);
      entry.server = "none";
      entry.subscribed = null;
      entry.fetch = 0;
      entry.buffer = null;
    }
    // the streams it recovered hold its frames until its answers are applied below
    const user = rotation.user;
    if (user) {
      this._user.recovery ??= { since: user.since, frames: [], timer: undefined };
    } else {
      const stream = positionOf(welcome.stream);
      this._abortRecovery(this._user);
      if (!stream) setPosition(this._user, null);
      else if (!this._user.position) setPosition(this._user, stream);
    }
    for (const [name, subscription] of rotation.channels) {
      const entry = this._channels.get(name);
      if (entry && subscription.since && subscription.reply && subscription.reply.type !== "error") {
        entry.recovery ??= { since: subscription.since, frames: [], timer: undefined };
      }
    }
    // a handler may close the client or drop this connection (reconnect()): then stop here
    const current = () => !this._closed && this._socket === rotation.socket;
    for (const message of rotation.held) {
      if (!current()) return;
      this._receive(message, true);
    }
    if (user && user.reply && current()) this._recovered("user", this._user, user.reply.data);
    for (const [name, subscription] of rotation.channels) {
      if (!current()) return;
      const reply = /** @type {WspushMessage<any>} */ (subscription.reply);
      const entry = this._channels.get(name);
      if (entry) {
        this._subscribeAnswered(entry, reply, subscription.since, membersKept.has(name));
      } else if (reply.type !== "error") {
        // left during the switch: subscribed on the new connection, so left there
        this._subscribeAnswered(this._entry(name), reply);
      }
    }
    if (!current()) return;
    // and those it did not subscribe (asked for during the switch) are sent now
    for (const entry of [...this._channels.values()]) this._sync(entry);
    if (this._options.pingOnOpen !== false) this.ping();
  }

  /**
   * @private
   * @param {Rotation} rotation
   * @param {string} why
   * @param {Partial<WspushError>} [details]
   */
  _rotationFailed(rotation, why, details = {}) {
    if (this._rotation !== rotation) return;
    this._cancelRotation();
    this._report({
      kind: "rotation",
      message: `the switch to a new connection failed: ${why}; the current connection is kept`,
      ...details,
    });
  }

  /**
   * Give up a switch planned or under way: its timer stops, its connection is closed.
   * @private
   */
  _cancelRotation() {
    const rotation = this._rotation;
    if (!rotation) return;
    this._rotation = null;
    clearRotationTimer(rotation);
    if (rotation.socket) closeQuietly(rotation.socket, 1000, "switch given up");
  }

  // ---- channels -----------------------------------------------------------------

  /** @private */
  _isOpen() {
    return !this._closed && this._state === "open" && this._socket !== null && this._socket.readyState === OPEN;
  }

  /** @private */
  _nextRef() {
    this._refs += 1;
    return `w${this._refs}`;
  }

  /**
   * The channel's entry, created when missing.
   * @private
   * @param {string} name
   * @returns {ChannelEntry}
   */
  _entry(name) {
    let entry = this._channels.get(name);
    if (!entry) {
      entry = {
        name,
        registrations: new Set(),
        server: "none",
        subscribed: null,
        ready: [],
        leaving: [],
        members: null,
        fetch: 0,
        buffer: null,
        position: null,
        ahead: new Set(),
        recovery: null,
      };
      this._channels.set(name, entry);
    }
    return entry;
  }

  /**
   * Bring the server in line with what the app wants, one request at a time per channel:
   * subscribe a wanted channel the server does not have (once open), unsubscribe one
   * nobody wants any more, forget one that is gone from both. Called again with each reply,
   * and for every channel when a connection opens or ends.
   * @private
   * @param {ChannelEntry} entry
   */
  _sync(entry) {
    if (this._channels.get(entry.name) !== entry) {
      settleAll(entry.leaving);
      return;
    }
    const wanted = entry.registrations.size > 0;
    if (wanted) settleAll(entry.leaving);
    if (entry.server === "subscribing" || entry.server === "unsubscribing") return;
    const open = this._isOpen();
    if (wanted) {
      if (entry.server === "none" && open) this._sendSubscribe(entry);
      return;
    }
    if (entry.server === "subscribed" && open) {
      this._sendUnsubscribe(entry);
      return;
    }
    this._channels.delete(entry.name);
    this._dropRecovery(entry);
    settleAll(entry.ready, unsubscribedError(entry.name));
    settleAll(entry.leaving);
    if (entry.members) {
      entry.members = null;
      this._emitPresence(entry, { type: "sync" }, []);
    }
  }

  /**
   * @private
   * @param {ChannelEntry} entry
   */
  _sendSubscribe(entry) {
    const ref = this._nextRef();
    entry.server = "subscribing";
    /** @type {Record<string, unknown>} */
    const frame = { action: "subscribe", channel: entry.name };
    // subscribed before: ask for what was missed, and hold the channel's frames until the answer
    if (entry.position && !entry.recovery) entry.recovery = { since: entry.position, frames: [], timer: undefined };
    const since = entry.recovery ? entry.recovery.since : null;
    if (since) frame.since = { ...since };
    this._pending.set(ref, {
      onReply: (reply) => this._subscribeAnswered(entry, reply, since),
      onLost: () => {},
      timer: undefined,
    });
    if (!this.send({ ...frame, ref })) {
      this._pending.delete(ref);
      entry.server = "none";
      return;
    }
    this._armRecovery(entry, entry.name, "subscribe");
    this._armWaiters(entry);
  }

  /**
   * @private
   * @param {ChannelEntry} entry
   * @param {WspushMessage<any>} reply
   * @param {StreamPosition | null} [since] what the request asked to recover from
   * @param {boolean} [keepMembers] the member list is current (a connection switch): not read again
   */
  _subscribeAnswered(entry, reply, since = null, keepMembers = false) {
    if (this._channels.get(entry.name) !== entry) return;
    if (reply.type === "error") {
      this._abortRecovery(entry);
      if (since && reply.data && reply.data.code === "invalid_since") {
        // the position is what was refused, not the subscription: subscribe afresh
        setPosition(entry, null);
        entry.server = "none";
        this._sync(entry);
        return;
      }
      // refused: this subscription is over, for every part of the app that asked for it
      entry.server = "none";
      const error = errorFromFrame(reply, entry.name);
      const ended = [...entry.registrations];
      entry.registrations.clear();
      settleAll(entry.ready, error);
      for (const registration of ended) {
        this._settleWaiter(registration, error);
        if (typeof registration.onError !== "function") continue;
        try {
          registration.onError(error);
        } catch (thrown) {
          this._report({ kind: "handler", message: `onError of ${entry.name} threw: ${describe(thrown)}`, error: thrown });
        }
      }
      this._sync(entry);
      return;
    }
    entry.server = "subscribed";
    entry.subscribed = reply.data && typeof reply.data === "object" ? reply.data : { channel: entry.name };
    if (!since) setPosition(entry, positionOf(entry.subscribed));
    for (const registration of entry.registrations) this._settleWaiter(registration, undefined, entry.subscribed);
    settleAll(entry.ready);
    if (this._presenceListeners.has(entry.name) && !(keepMembers && entry.members)) this._fetchMembers(entry);
    this._sync(entry);
    if (!since || this._channels.get(entry.name) !== entry) return;
    // a channel being left needs no resync: what it held goes as it came
    if (entry.registrations.size === 0) this._abortRecovery(entry);
    else this._recovered(entry.name, entry, entry.subscribed);
  }

  /**
   * @private
   * @param {ChannelEntry} entry
   */
  _sendUnsubscribe(entry) {
    const ref = this._nextRef();
    entry.server = "unsubscribing";
    const done = () => {
      if (entry.server !== "unsubscribing") return;
      this._pending.delete(ref);
      entry.server = "none";
      entry.subscribed = null;
      this._sync(entry);
    };
    this._pending.set(ref, {
      onReply: done,
      onLost: () => {},
      // no answer: take it as done (the server forgets it with the connection anyway)
      timer: this._requestTimeoutMs > 0 ? setTimeout(done, this._requestTimeoutMs) : undefined,
    });
    if (!this.send({ action: "unsubscribe", channel: entry.name, ref })) done();
  }

  /**
   * Leave `entry` unless someone wants it again before the next microtask (React StrictMode
   * unmounts and mounts again at once: the channel is then never left at all).
   * @private
   * @param {ChannelEntry} entry
   * @returns {Promise<void>}
   */
  _leaveLater(entry) {
    /** @type {Promise<void>} */
    const left = new Promise((resolve) => entry.leaving.push({ resolve, reject: resolve }));
    queueMicrotask(() => this._sync(entry));
    return left;
  }

  /**
   * @private
   * @param {string} name
   * @param {Registration} registration
   * @returns {Promise<void>}
   */
  _release(name, registration) {
    const entry = this._channels.get(name);
    if (!entry || !entry.registrations.delete(registration)) return Promise.resolve();
    this._settleWaiter(registration, unsubscribedError(name));
    if (entry.registrations.size > 0) return Promise.resolve();
    return this._leaveLater(entry);
  }

  /**
   * @private
   * @param {Registration} registration
   * @param {WspushRequestError | undefined} error
   * @param {SubscribedData | null} [value]
   */
  _settleWaiter(registration, error, value) {
    const waiter = registration.waiter;
    if (!waiter) return;
    registration.waiter = undefined;
    if (waiter.timer !== undefined) clearTimeout(waiter.timer);
    if (error) waiter.reject(error);
    else waiter.resolve(value);
  }

  /**
   * Start the reply timeout of the subscribe promises waiting on a request now on its way
   * (`recoveryTimeoutMs` for a request with `since`; waiting for a connection to open has no
   * timeout: the connection loop reports that).
   * The subscription itself stays: a late reply still completes it.
   * @private
   * @param {ChannelEntry} entry
   */
  _armWaiters(entry) {
    const timeoutMs = entry.recovery ? this._recoveryTimeoutMs : this._requestTimeoutMs;
    if (entry.server !== "subscribing" || timeoutMs <= 0) return;
    for (const registration of entry.registrations) {
      const waiter = registration.waiter;
      if (!waiter || waiter.timer !== undefined) continue;
      waiter.timer = setTimeout(() => {
        if (registration.waiter !== waiter) return;
        registration.waiter = undefined;
        waiter.reject(new WspushRequestError("timeout", `no reply within ${timeoutMs} ms`, entry.name));
      }, timeoutMs);
    }
  }

  /**
   * The connection ended: the server forgot its subscriptions, and no reply will come on it.
   * @private
   */
  _channelsLost() {
    const pending = [...this._pending.values()];
    this._pending.clear();
    for (const request of pending) {
      if (request.timer !== undefined) clearTimeout(request.timer);
      request.onLost(this._closed ? "closed" : "disconnected");
    }
    // a recovery keeps what it holds for the next connection, which asks from the same place
    this._pauseRecovery(this._user);
    for (const entry of [...this._channels.values()]) {
      this._pauseRecovery(entry);
      entry.server = "none";
      entry.subscribed = null;
      entry.fetch = 0;
      entry.buffer = null;
      for (const registration of entry.registrations) {
        const waiter = registration.waiter;
        if (waiter && waiter.timer !== undefined) {
          clearTimeout(waiter.timer);
          waiter.timer = undefined;
        }
      }
      this._sync(entry);
    }
  }

  /**
   * `close()`: every subscription ends, every promise settles.
   * @private
   */
  _endChannels() {
    const closed = (/** @type {string} */ name) => new WspushRequestError("closed", "the client is closed", name);
    for (const entry of this._channels.values()) {
      for (const registration of entry.registrations) this._settleWaiter(registration, closed(entry.name));
      entry.registrations.clear();
      settleAll(entry.ready, closed(entry.name));
      settleAll(entry.leaving);
      entry.members = null;
      this._dropRecovery(entry);
    }
    this._channels.clear();
  }

  /**
   * Read every member of a presence channel again, then keep the list with the join and
   * leave events (those arriving while it reads are applied on top of what it read).
   * @private
   * @param {ChannelEntry} entry
   */
  _fetchMembers(entry) {
    this._refs += 1;
    const fetch = this._refs;
    entry.fetch = fetch;
    entry.buffer = [];
    this.presence(entry.name).then(
      (result) => {
        if (entry.fetch !== fetch || this._channels.get(entry.name) !== entry) return;
        /** @type {Map<string, PresenceMember>} */
        const members = new Map();
        for (const member of result.members) {
          if (!member || typeof member.userId !== "string") continue;
          members.set(member.userId, {
            userId: member.userId,
            info: member.info ?? null,
            connections: typeof member.connections === "number" ? member.connections : 1,
          });
        }
        for (const change of entry.buffer ?? []) applyPresence(members, change);
        entry.buffer = null;
        entry.fetch = 0;
        entry.members = members;
        this._emitPresence(entry, { type: "sync" });
      },
      (error) => {
        if (entry.fetch !== fetch) return;
        entry.fetch = 0;
        entry.buffer = null;
        // an error reply was reported as a server error; a lost connection reads again after
        // it has subscribed again
        if (error && error.code === "timeout") {
          this._report({ kind: "request", code: "timeout", message: `presence of ${entry.name}: ${error.message}`, error });
        }
      },
    );
  }

  /**
   * @private
   * @param {ChannelEntry} entry
   * @param {WspushMessage<any>} message
   */
  _presenceEvent(entry, message) {
    const data = message.data;
    if (!data || typeof data !== "object" || typeof data.userId !== "string") return;
    /** @type {PresenceChange} */
    const change = { type: message.type === "presence.join" ? "join" : "leave", userId: data.userId };
    if (change.type === "join") change.info = data.info ?? null;
    if (entry.buffer) entry.buffer.push({ ...change });
    if (entry.members && applyPresence(entry.members, change)) this._emitPresence(entry, change);
  }

  /**
   * @private
   * @param {ChannelEntry} entry
   * @param {PresenceChange | { type: "sync" }} change
   * @param {PresenceMember[]} [members]
   */
  _emitPresence(entry, change, members) {
    const listeners = this._presenceListeners.get(entry.name);
    if (!listeners) return;
    const event = {
      channel: entry.name,
      ...change,
      members: members ?? (entry.members ? [...entry.members.values()] : []),
    };
    for (const listener of [...listeners]) {
      if (this._closed) return;
      try {
        listener(/** @type {PresenceEvent} */ (event));
      } catch (error) {
        this._report({ kind: "handler", message: `presence listener of ${entry.name} threw: ${describe(error)}`, error });
      }
    }
  }

  /**
   * Replies settle their requests; channel messages go to the channel's handlers (returned,
   * to run after the type handlers); presence events update the member list.
   * @private
   * @param {WspushMessage<any>} message
   * @returns {(MessageHandler | undefined)[]}
   */
  _routeChannelFrame(message) {
    const ref = message.ref;
    if (typeof ref === "string") {
      const pending = this._pending.get(ref);
      if (pending) {
        this._pending.delete(ref);
        if (pending.timer !== undefined) clearTimeout(pending.timer);
        pending.onReply(message);
        return [];
      }
    }
    const channel = message.channel;
    if (typeof channel !== "string") return [];
    const entry = this._channels.get(channel);
    if (!entry || entry.registrations.size === 0) return [];
    if (message.type === "presence.join" || message.type === "presence.leave") {
      this._presenceEvent(entry, message);
      return [];
    }
    return [...entry.registrations].map((registration) => registration.handler);
  }

  // ---- telling the app ----------------------------------------------------------

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

  /**
   * In a browser: when the network comes back, cut a backoff wait short (the attempt still
   * counts); when the tab becomes visible, ping (a laptop waking from sleep often holds a
   * dead socket; the pong timeout then replaces it).
   * @private
   */
  _watchNetwork() {
    if (this._options.watchNetwork === false) return;
    const win = this._options.window ?? globalThis;
    const doc = this._options.document ?? /** @type {any} */ (globalThis).document;
    if (win && typeof win.addEventListener === "function") {
      const onOnline = () => {
        if (this._closed || this._gaveUp) return;
        if (this._state === "open") this.ping();
        else if (this._retryTimer !== undefined) {
          this._clearTimer("_retryTimer");
          this._attempt();
        }
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
 * Close a socket; a code the browser refuses (only 1000 and 3000-4999 are allowed) falls back
 * to a plain close.
 * @param {any} socket
 * @param {number} code
 * @param {string | undefined} reason
 */
function closeQuietly(socket, code, reason) {
  try {
    socket.close(code, reason);
  } catch {
    try {
      socket.close();
    } catch {
      // already closed
    }
  }
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

/**
 * Why a request failed: the `code` of the server's `error` reply (`forbidden`,
 * `invalid_channel`, `unknown_namespace`, `too_many_channels`, `channel_full`,
 * `not_subscribed`, `no_presence`, `unavailable`, …), or one of the client's own:
 * `timeout` (no reply in `requestTimeoutMs`), `not_open` (not connected: requests are not
 * queued), `disconnected` (the connection ended before the reply), `closed` (`close()`),
 * `unsubscribed` (the app left the channel before the server answered).
 */
export class WspushRequestError extends Error {
  /**
   * @param {string} code
   * @param {string} message
   * @param {string} [channel]
   * @param {WspushMessage} [frame] the server's `error` frame
   */
  constructor(code, message, channel, frame) {
    super(message);
    this.name = "WspushRequestError";
    this.code = code;
    this.channel = channel;
    this.frame = frame;
  }
}

/**
 * @param {unknown} channel
 * @returns {string}
 */
function checkChannel(channel) {
  if (typeof channel !== "string" || channel === "") {
    throw new TypeError(`wspush: a channel is a non-empty string like "room:42", got ${JSON.stringify(channel)}`);
  }
  return channel;
}

/**
 * @param {WspushMessage<any>} frame
 * @param {string} [channel]
 */
function errorFromFrame(frame, channel) {
  const data = frame.data && typeof frame.data === "object" ? frame.data : {};
  const code = typeof data.code === "string" ? data.code : "error";
  const message = typeof data.message === "string" ? data.message : "refused by wspush";
  return new WspushRequestError(code, message, typeof data.channel === "string" ? data.channel : channel, frame);
}

/** @param {string} channel */
function unsubscribedError(channel) {
  return new WspushRequestError("unsubscribed", `left ${channel} before the server answered`, channel);
}

/** @param {string} code */
function lostMessage(code) {
  return code === "closed" ? "the client is closed" : "the connection ended before the reply";
}

/**
 * Settle a list of promises (resolve, or reject with `error`) and empty it.
 * @param {{ resolve: (value?: any) => void, reject: (error: unknown) => void }[]} list
 * @param {unknown} [error]
 */
function settleAll(list, error) {
  for (const { resolve, reject } of list.splice(0)) {
    if (error) reject(error);
    else resolve();
  }
}

/** @param {Rotation} rotation */
function clearRotationTimer(rotation) {
  if (rotation.timer === undefined) return;
  clearTimeout(rotation.timer);
  rotation.timer = undefined;
}

/**
 * `{epoch, seq}` when `value` holds a stream position (a `welcome`'s `stream`, a `recovered`
 * or `subscribed` reply's data), else null.
 * @param {any} value
 * @returns {StreamPosition | null}
 */
function positionOf(value) {
  if (!value || typeof value !== "object") return null;
  const { epoch, seq } = value;
  if (typeof epoch !== "string" || epoch === "" || !Number.isInteger(seq) || seq < 0) return null;
  return { epoch, seq };
}

/**
 * At most this many seqs received ahead of a stream's position are remembered (a replay
 * reaches back 500 frames at most); beyond that the lowest is forgotten.
 */
const MAX_AHEAD = 1000;

/**
 * Move a stream's position to `position`, never back within one epoch.
 * @param {StreamState} stream
 * @param {StreamPosition} position
 */
function advance(stream, position) {
  const current = stream.position;
  if (current && current.epoch === position.epoch && current.seq > position.seq) return;
  setPosition(stream, position);
}

/**
 * Set a stream's position (from `welcome`, `recovered` or `subscribed`): a new epoch (or no
 * position) forgets the seqs received ahead; within the same epoch, those at or below it are
 * forgotten and those that follow it on without a gap move it on.
 * @param {StreamState} stream
 * @param {StreamPosition | null} position
 */
function setPosition(stream, position) {
  const current = stream.position;
  // seqs received while there was no position are of the epoch that comes first
  if (!position || (current && current.epoch !== position.epoch)) stream.ahead.clear();
  stream.position = position;
  if (!position) return;
  for (const seq of stream.ahead) {
    if (seq <= position.seq) stream.ahead.delete(seq);
  }
  catchUp(stream);
}

/**
 * The position moves on through the seqs received ahead that follow it without a gap.
 * @param {StreamState} stream
 */
function catchUp(stream) {
  const position = /** @type {StreamPosition} */ (stream.position);
  let seq = position.seq;
  while (stream.ahead.delete(seq + 1)) seq += 1;
  if (seq !== position.seq) stream.position = { epoch: position.epoch, seq };
}

/**
 * A stream frame's `seq` on its way to the app: false when the stream already has it (at or
 * below its position, or received ahead of it). Otherwise the position moves on when `seq`
 * is the next one (and through those held ahead that follow); a `seq` past a gap is
 * remembered ahead, and the position waits for the gap (a live frame can come late: the
 * server posts it again after a throttle), so that a recovery asks from the end of the
 * unbroken run.
 * @param {StreamState} stream
 * @param {number} seq
 * @returns {boolean}
 */
function takeSeq(stream, seq) {
  const position = stream.position;
  if (position && seq <= position.seq) return false;
  if (stream.ahead.has(seq)) return false;
  if (position && seq === position.seq + 1) {
    stream.position = { epoch: position.epoch, seq };
    catchUp(stream);
    return true;
  }
  stream.ahead.add(seq);
  if (stream.ahead.size > MAX_AHEAD) stream.ahead.delete(Math.min(...stream.ahead));
  return true;
}

/**
 * Apply a join or leave to a member list; true when it changed it (a leave then carries the
 * member's `info`).
 * @param {Map<string, PresenceMember>} members
 * @param {PresenceChange} change
 */
function applyPresence(members, change) {
  const known = members.get(change.userId);
  if (change.type === "leave") {
    if (!known) return false;
    members.delete(change.userId);
    change.info = known.info;
    return true;
  }
  if (known) return false;
  members.set(change.userId, { userId: change.userId, info: change.info ?? null, connections: 1 });
  return true;
}

/**
 * @typedef {object} SubscribeOptions
 * @property {(error: WspushRequestError) => void} [onError] the server refused this
 *   subscription (at first, or when it was sent again after a reconnect): it is over
 */

/**
 * The server's `subscribed` data: `{channel}`, with `epoch` and `seq` for namespaces that keep history.
 * @typedef {{ channel: string, epoch?: string, seq?: number, [key: string]: unknown }} SubscribedData
 */

/**
 * What `subscribe(channel, …)` returns: a promise of the `subscribed` data that can also end
 * this subscription.
 * @typedef {Promise<SubscribedData> & { channel: string, unsubscribe: () => Promise<void> }} ChannelSubscription
 */

/**
 * @typedef {object} PresenceMember
 * @property {string} userId
 * @property {any} info what the channel authorizer said of the member (null without one)
 * @property {number} connections the member's connections in the channel, as last read
 */

/**
 * @typedef {object} PresencePage
 * @property {string} channel
 * @property {number} count members in the channel
 * @property {PresenceMember[]} members up to 100
 * @property {string | null} next pass it as `after` for the next page; null on the last
 */

/**
 * @typedef {{ type: "join" | "leave", userId: string, info?: any }} PresenceChange
 */

/**
 * @typedef {object} PresenceEvent
 * @property {string} channel
 * @property {"sync" | "join" | "leave"} type `sync`: the whole list was read again
 * @property {string} [userId] who joined or left
 * @property {any} [info] their info
 * @property {PresenceMember[]} members everyone in the channel now
 */

/** @typedef {(event: PresenceEvent) => void} PresenceListener */

/**
 * @typedef {object} Registration one `subscribe(channel, …)` call
 * @property {MessageHandler | undefined} handler
 * @property {((error: WspushRequestError) => void) | undefined} onError
 * @property {{ resolve: (data: any) => void, reject: (error: unknown) => void, timer: ReturnType<typeof setTimeout> | undefined } | undefined} waiter
 */

/**
 * @typedef {object} ChannelEntry
 * @property {string} name
 * @property {Set<Registration>} registrations who wants it (none: it is being left)
 * @property {"none" | "subscribing" | "subscribed" | "unsubscribing"} server what the server has, as far as the client knows
 * @property {SubscribedData | null} subscribed the last `subscribed` data on this connection
 * @property {{ resolve: (value?: any) => void, reject: (error: unknown) => void }[]} ready waiting for `subscribed`
 * @property {{ resolve: (value?: any) => void, reject: (error: unknown) => void }[]} leaving waiting for it to be left
 * @property {Map<string, PresenceMember> | null} members null until read
 * @property {number} fetch the member read under way (0: none)
 * @property {PresenceChange[] | null} buffer joins and leaves seen during that read
 * @property {StreamPosition | null} position where the channel's stream stands (namespaces with history)
 * @property {Set<number>} ahead seqs received past a gap after `position`
 * @property {Recovery | null} recovery its recovery under way (a `subscribe` with `since`)
 */

/**
 * Where a stream stands: its `epoch` and the `seq` up to which the app got every message
 * (the end of the unbroken run: a later one may have come ahead of a missing one).
 * @typedef {{ epoch: string, seq: number }} StreamPosition
 */

/**
 * What `onResync` listeners receive: `stream` (`"user"` or a channel's name) could not be
 * recovered; the app reloads what it shows of it. `epoch` and `seq` are where the stream now
 * stands (null when the channel keeps no history); frames after that `seq` follow.
 * @typedef {object} ResyncEvent
 * @property {string} stream
 * @property {string | null} epoch
 * @property {number | null} seq
 * @property {string} [reason] the server's, or `no_history` when the channel keeps none
 */

/** @typedef {(event: ResyncEvent) => void} ResyncListener */

/**
 * A stream's recovery under way: its frames wait here until the server's answer.
 * @typedef {object} Recovery
 * @property {StreamPosition} since what the client asked from
 * @property {WspushMessage[]} frames the stream's frames received meanwhile, replayed and live
 * @property {ReturnType<typeof setTimeout> | undefined} timer gives up waiting for the answer
 */

/**
 * The user's own stream (or a channel: its entry has the same three fields).
 * @typedef {object} StreamState
 * @property {StreamPosition | null} position
 * @property {Set<number>} ahead seqs the app got past a gap after `position` (not handed over again)
 * @property {Recovery | null} recovery
 */

/**
 * A switch to a new connection before the current one is cut (a `reconnect` push).
 * @typedef {object} Rotation
 * @property {ReturnType<typeof setTimeout> | undefined} timer the spread delay, then the
 *   token, handshake and replies timeouts, one after the other
 * @property {any} socket the new connection, once made
 * @property {number} openedAt
 * @property {Map<string, (reply: WspushMessage<any>) => void>} replies awaited, by ref
 * @property {Record<string, any> | null} welcome
 * @property {{ since: StreamPosition, reply: WspushMessage<any> | null } | null} user its user-stream recovery
 * @property {Map<string, { since: StreamPosition | null, reply: WspushMessage<any> | null }>} channels its subscriptions
 * @property {WspushMessage[]} held every frame it received, handed over at the switch
 */

/**
 * @typedef {object} PendingRequest
 * @property {(reply: WspushMessage<any>) => void} onReply
 * @property {(code: string) => void} onLost
 * @property {ReturnType<typeof setTimeout> | undefined} timer
 */
