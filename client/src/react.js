// @ts-check
/**
 * React binding for the wspush client: `useWspush(options, handlers)` holds a connection;
 * `WspushProvider` hands it to the components below, where `useChannel(name, handler)` and
 * `usePresence(name)` subscribe to channels for as long as they are mounted, and
 * `useResync(listener)` hears when a stream could not be recovered.
 *
 * React (>= 18) is an optional peer dependency: only this module imports it.
 */

import { createContext, createElement, useCallback, useContext, useEffect, useRef, useState } from "react";
import { createWspushClient } from "./index.js";

/** @typedef {import("./index.js").WspushClient} WspushClient */
/** @typedef {import("./index.js").WspushClientOptions} WspushClientOptions */
/** @typedef {import("./index.js").WspushMessage} WspushMessage */
/** @typedef {import("./index.js").HandlerMap} HandlerMap */
/** @typedef {import("./index.js").Snapshot} Snapshot */
/** @typedef {import("./index.js").PresenceMember} PresenceMember */
/** @typedef {import("./index.js").WspushRequestError} WspushRequestError */
/** @typedef {import("./index.js").ResyncEvent} ResyncEvent */

/**
 * @typedef {Partial<import("./index.js").WspushClientOptions> & { enabled?: boolean }} UseWspushOptions
 * `url`, and `userId` or `token`, are needed to connect; without them, or with
 * `enabled: false`, the hook stays `closed`.
 */

/**
 * @typedef {object} UseWspushResult
 * @property {import("./index.js").ConnectionState} state
 * @property {string | null} connectionId
 * @property {WspushMessage | null} lastMessage the last message received (pongs, and the
 *   `welcome` and `recovered` answers to the client's own `hello` and `recover`, excluded)
 * @property {(frame: unknown) => boolean} send stable across renders; false unless open
 * @property {WspushClient | null} client
 */

/** Frames the client asks for on its own, never `lastMessage`: its heartbeat and recovery. */
const OWN_REPLIES = new Set(["pong", "welcome", "recovered"]);

/** @type {Snapshot} */
const CLOSED = Object.freeze({ state: "closed", connectionId: null });
/** @type {Snapshot} */
const CONNECTING = Object.freeze({ state: "connecting", connectionId: null });

/**
 * Hold a wspush connection for the life of a component.
 *
 * The client is created when the component mounts and again only when `url`, `userId`,
 * `platform` or `enabled` change; it is closed on unmount. `handlers`, `options.handlers`
 * and the callbacks and token in `options` (`token`, `onError`, `onStateChange`, `onResync`) are read
 * from refs at the moment they are needed, so passing new ones on every render never
 * reconnects, and a token that arrives after the first render is used from the next
 * attempt on. Other options (timings, `WebSocket`, ...) are read when the client is created.
 * A client the hook closes (unmount, new `userId`, React StrictMode's trial mount) says
 * nothing more to `onStateChange`, `onError` and `onResync`.
 *
 * @param {UseWspushOptions} options
 * @param {HandlerMap} [handlers] handlers by message `type`, `"*"` for every message; they
 *   run after those of `options.handlers` for the same type
 * @returns {UseWspushResult}
 */
export function useWspush(options, handlers) {
  const optionsRef = useRef(options);
  optionsRef.current = options;
  const handlersRef = useRef(handlers);
  handlersRef.current = handlers;

  const url = options?.url;
  const userId = options?.userId || undefined;
  const platform = options?.platform;
  const hasToken = options?.token !== undefined && options?.token !== null;
  const enabled = options?.enabled !== false && Boolean(url) && (Boolean(userId) || hasToken);

  /** @type {[WspushClient | null, (client: WspushClient | null) => void]} */
  const [client, setClient] = useState(/** @type {WspushClient | null} */ (null));
  const [snapshot, setSnapshot] = useState(enabled ? CONNECTING : CLOSED);
  const [lastMessage, setLastMessage] = useState(/** @type {WspushMessage | null} */ (null));
  /** @type {{ current: WspushClient | null }} */
  const clientRef = useRef(/** @type {WspushClient | null} */ (null));

  useEffect(() => {
    setLastMessage(null);
    if (!enabled) {
      clientRef.current = null;
      setClient(null);
      setSnapshot(CLOSED);
      return undefined;
    }
    // false once this effect is cleaned up: the app hears nothing more from this client
    let current = true;
    // Everything but the connection identity is read through refs (see above).
    const {
      enabled: _enabled,
      handlers: _handlers,
      token: _token,
      onError: _onError,
      onStateChange: _onStateChange,
      onResync: _onResync,
      userId: _userId,
      ...rest
    } = optionsRef.current;
    const created = createWspushClient({
      ...rest,
      url: /** @type {string} */ (url),
      userId,
      platform,
      token: () => {
        const latest = optionsRef.current.token;
        return typeof latest === "function" ? latest() : latest;
      },
      onError: (error) => {
        if (current) optionsRef.current.onError?.(error);
      },
      onStateChange: (state, previous) => {
        if (current) optionsRef.current.onStateChange?.(state, previous);
      },
      onResync: (event) => {
        if (current) optionsRef.current.onResync?.(event);
      },
      handlers: () => mergeHandlers(resolveHandlers(optionsRef.current.handlers), handlersRef.current),
    });
    const unsubscribe = created.subscribe(setSnapshot);
    const unlisten = created.on("*", (message) => {
      if (!OWN_REPLIES.has(message.type)) setLastMessage(message);
    });
    clientRef.current = created;
    setClient(created);
    setSnapshot(created.getSnapshot());
    return () => {
      current = false;
      unsubscribe();
      unlisten();
      created.close();
      if (clientRef.current === created) clientRef.current = null;
    };
  }, [url, userId, platform, enabled]);

  const send = useCallback(
    /** @param {unknown} frame */
    (frame) => (clientRef.current ? clientRef.current.send(frame) : false),
    [],
  );

  return { state: snapshot.state, connectionId: snapshot.connectionId, lastMessage, send, client };
}

/**
 * @param {HandlerMap | (() => HandlerMap | null | undefined) | null | undefined} handlers
 * @returns {HandlerMap | null | undefined}
 */
function resolveHandlers(handlers) {
  return typeof handlers === "function" ? handlers() : handlers;
}

/**
 * Both maps in one: for a type in both, `first`'s handler then `second`'s (which runs even
 * when the first throws; the client reports the error).
 * @param {HandlerMap | null | undefined} first
 * @param {HandlerMap | null | undefined} second
 * @returns {HandlerMap | null | undefined}
 */
function mergeHandlers(first, second) {
  if (!first) return second;
  if (!second) return first;
  /** @type {HandlerMap} */
  const merged = { ...second };
  for (const [type, handler] of Object.entries(first)) {
    const other = second[type];
    if (typeof handler !== "function") continue;
    merged[type] =
      typeof other === "function"
        ? (message) => {
            try {
              handler(message);
            } finally {
              other(message);
            }
          }
        : handler;
  }
  return merged;
}

/** The client `WspushProvider` hands down (null: none yet, e.g. while `enabled` is false). */
const WspushContext = createContext(/** @type {WspushClient | null} */ (null));

/**
 * Make `client` (usually `useWspush(…).client`) the one `useChannel`, `usePresence` and
 * `useWspushClient` use in the components below.
 * @param {{ client: WspushClient | null | undefined, children?: any }} props
 */
export function WspushProvider({ client, children }) {
  return createElement(WspushContext.Provider, { value: client ?? null }, children);
}

/** The client of the nearest `WspushProvider`, or null. */
export function useWspushClient() {
  return useContext(WspushContext);
}

/**
 * @typedef {object} ChannelHookOptions
 * @property {WspushClient | null} [client] this client instead of the provider's
 * @property {boolean} [enabled] false: do not subscribe
 */

/**
 * @typedef {object} UseChannelResult
 * @property {"idle" | "subscribing" | "subscribed" | "error"} status `idle`: no client, no
 *   name, or not enabled
 * @property {WspushRequestError | null} error why it is `error`: the server refused
 *   (`forbidden`, …) or did not answer in time (`timeout`)
 */

/** @type {UseChannelResult} */
const IDLE = Object.freeze({ status: "idle", error: null });
/** @type {UseChannelResult} */
const SUBSCRIBING = Object.freeze({ status: "subscribing", error: null });
/** @type {UseChannelResult} */
const SUBSCRIBED = Object.freeze({ status: "subscribed", error: null });

/**
 * Subscribe to a channel while the component is mounted: on mount and whenever `name` (or
 * the client) changes, unsubscribed on unmount. `handler` receives the channel's messages;
 * a new function on every render is fine (read through a ref). The client sends the
 * subscription again after each reconnect.
 * @param {string | null | undefined} name
 * @param {import("./index.js").MessageHandler} [handler]
 * @param {ChannelHookOptions} [options]
 * @returns {UseChannelResult}
 */
export function useChannel(name, handler, options = {}) {
  const provided = useContext(WspushContext);
  const client = options.client !== undefined ? options.client : provided;
  const handlerRef = useRef(handler);
  handlerRef.current = handler;
  const enabled = options.enabled !== false && Boolean(client) && typeof name === "string" && name !== "";
  const [result, setResult] = useState(enabled ? SUBSCRIBING : IDLE);

  useEffect(() => {
    if (!enabled || !client || !name) {
      setResult(IDLE);
      return undefined;
    }
    let current = true;
    setResult(SUBSCRIBING);
    const failed = (/** @type {WspushRequestError} */ error) => {
      if (current && error.code !== "unsubscribed") setResult({ status: "error", error });
    };
    const subscription = client.subscribe(name, (message) => handlerRef.current?.(message), { onError: failed });
    subscription.then(() => {
      if (current) setResult(SUBSCRIBED);
    }, failed);
    return () => {
      current = false;
      subscription.unsubscribe();
    };
  }, [client, name, enabled]);

  return result;
}

/** @type {PresenceMember[]} */
const NO_MEMBERS = Object.freeze(/** @type {PresenceMember[]} */ ([]));

/**
 * Who is in a presence channel, kept current: subscribes to it while mounted, reads its
 * members after each subscribe (and so after each reconnect), then follows
 * `presence.join` and `presence.leave`. Empty until the first read.
 * @param {string | null | undefined} name
 * @param {ChannelHookOptions} [options]
 * @returns {PresenceMember[]}
 */
export function usePresence(name, options = {}) {
  const provided = useContext(WspushContext);
  const client = options.client !== undefined ? options.client : provided;
  const enabled = options.enabled !== false && Boolean(client) && typeof name === "string" && name !== "";
  const [members, setMembers] = useState(NO_MEMBERS);

  useEffect(() => {
    if (!enabled || !client || !name) {
      setMembers(NO_MEMBERS);
      return undefined;
    }
    let current = true;
    // listen first: the members are read as soon as the subscription is there
    const stop = client.onPresence(name, (event) => {
      if (current) setMembers(event.members);
    });
    const subscription = client.subscribe(name);
    setMembers(client.members(name) ?? NO_MEMBERS);
    return () => {
      current = false;
      stop();
      subscription.unsubscribe();
    };
  }, [client, name, enabled]);

  return members;
}

/**
 * @typedef {object} ResyncHookOptions
 * @property {WspushClient | null} [client] this client instead of the provider's
 * @property {boolean} [enabled] false: do not listen
 */

/**
 * Hear, while the component is mounted, when a stream could not be recovered after a
 * reconnect or a connection switch (`{stream, epoch, seq, reason?}`, `stream` being `"user"`
 * or a channel's name): messages may have been missed, reload what the component shows of
 * it. `listener` is read through a ref: a new function on every render is fine.
 * @param {(event: ResyncEvent) => void} listener
 * @param {ResyncHookOptions} [options]
 * @returns {void}
 */
export function useResync(listener, options = {}) {
  const provided = useContext(WspushContext);
  const client = options.client !== undefined ? options.client : provided;
  const listenerRef = useRef(listener);
  listenerRef.current = listener;
  const enabled = options.enabled !== false && Boolean(client);

  useEffect(() => {
    if (!enabled || !client) return undefined;
    return client.onResync((event) => listenerRef.current?.(event));
  }, [client, enabled]);
}
