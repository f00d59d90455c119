// Types for @wspush/client (src/index.js). Hand-written; keep in step with the JSDoc there.

export type ConnectionState = "connecting" | "open" | "reconnecting" | "closed";

/**
 * A frame received from wspush. `data` is whatever the service sent: name its type where
 * you handle it, `(message: WspushMessage<Order>) => …`.
 */
export interface WspushMessage<T = unknown> {
  type: string;
  data: T;
  /** unique message id: the client drops a message whose id it saw recently */
  id?: string;
  /** milliseconds since the epoch */
  ts?: number;
  /** a channel message or presence event: the channel it belongs to */
  channel?: string;
  /** a reply: the `ref` of the request it answers */
  ref?: string;
  /**
   * position in its stream: the channel's history (with `channel`, in namespaces that keep
   * one) or the user's own stream (without `channel`, when user history is on)
   */
  seq?: number;
}

/**
 * A handler may name the payload type it expects (`(message: WspushMessage<Order>) => …`);
 * without one, `data` is `any`, as from `JSON.parse`. The client does not check payloads.
 */
export type MessageHandler<T = any> = (message: WspushMessage<T>) => void;
export type HandlerMap = Record<string, MessageHandler<any> | null | undefined>;

export type WspushErrorKind =
  | "server"
  | "bad_frame"
  | "socket"
  | "connect_failed"
  | "pong_timeout"
  | "token"
  | "handler"
  | "max_retries"
  | "request"
  | "rotation";

export interface WspushError {
  /**
   * - `server`: an `error` frame from wspush (`code`, `message`, `frame`)
   * - `bad_frame`: not JSON, or not an object with a string `type` (`raw`)
   * - `socket`: an open WebSocket reported an error (`event`)
   * - `connect_failed`: an attempt never opened, or closed before its first pong: refused
   *   (a 401/403 reaches a browser only as close 1006), unreachable or timed out
   *   (`closeCode`, `event`, `attempt`, `retryInMs`)
   * - `pong_timeout`: no pong in time; the connection is replaced (`attempt`, `retryInMs`)
   * - `token`: the token provider failed or timed out (`error`, `attempt`, `retryInMs`)
   * - `handler`: a handler threw (`error`, `frame`)
   * - `max_retries`: `maxRetries` retries in a row failed; state is `closed` until `reconnect()`
   * - `request`: a request the client made on its own (the presence query that keeps a member
   *   list, a stream's recovery: `hello`, `recover`, `subscribe` with `since`) got no reply in
   *   time (`code` `timeout`, `error`); a recovery then hands over what it held
   * - `rotation`: the switch to a new connection before the current one's cut failed
   *   (`error`, `closeCode`, `frame`); the current connection is kept
   */
  kind: WspushErrorKind;
  message: string;
  /** the `code` of a server `error` frame */
  code?: string;
  /** the WebSocket close code of a failed attempt */
  closeCode?: number;
  frame?: WspushMessage;
  raw?: unknown;
  error?: unknown;
  event?: unknown;
  /** failures in a row so far, this one included */
  attempt?: number;
  /** when the next attempt starts; absent when the client gives up */
  retryInMs?: number;
}

/**
 * Where a stream stands: its epoch and the `seq` up to which the client handed over every message
 * (the end of the unbroken run: a later one may have come ahead of a missing one).
 */
export interface StreamPosition {
  epoch: string;
  seq: number;
}

/**
 * A stream could not be recovered after a reconnect or a connection switch (its history no
 * longer reaches back, or it was lost): messages may have been missed, reload what the app
 * shows of it. Its messages after `seq` follow.
 */
export interface ResyncEvent {
  /** `"user"` (the user's own messages) or a channel's name (`"room:42"`) */
  stream: "user" | (string & {});
  /** where the stream now stands; null when the channel keeps no history */
  epoch: string | null;
  seq: number | null;
  /** the server's reason, or `no_history` when the channel keeps none */
  reason?: string;
}

export type ResyncListener = (event: ResyncEvent) => void;

export interface Snapshot {
  readonly state: ConnectionState;
  readonly connectionId: string | null;
}

export type TokenProvider = () => string | null | undefined | Promise<string | null | undefined>;

/** Every option but who connects (see `WspushClientOptions`). */
export interface WspushClientSettings {
  /** `wss://<api>.execute-api.<region>.amazonaws.com/<stage>` or `ws://127.0.0.1:3001`; relative and http(s) URLs are turned into ws(s) */
  url: string;
  /** `pc`, `mobile`, `web`, ... */
  platform?: string;
  /** extra query parameters */
  query?: Record<string, string | number | boolean | null | undefined>;
  /** handlers by type, `"*"` for all; a function is called at each dispatch */
  handlers?: HandlerMap | (() => HandlerMap | null | undefined);
  onStateChange?: (state: ConnectionState, previous: ConnectionState) => void;
  onError?: (error: WspushError) => void;
  /** a stream could not be recovered: reload its state (see `WspushClient.onResync`) */
  onResync?: ResyncListener;
  /** ping interval while open; default 300000 (5 minutes); 0 disables */
  heartbeatMs?: number;
  /** replace the connection when a ping gets no pong in this time; default 10000; 0 disables */
  pongTimeoutMs?: number;
  /** a token provider that has not answered within this has failed; default 10000; 0 disables */
  tokenTimeoutMs?: number;
  /** an attempt that has not opened within this has failed; default 10000; 0 disables */
  connectTimeoutMs?: number;
  /** the first backoff window; default 1000 */
  reconnectDelayMs?: number;
  /** the largest backoff window, also the one after API Gateway's 2-hour or idle limit (close 1001); default 60000 */
  maxReconnectDelayMs?: number;
  /** failed retries in a row before giving up (state `closed`); default 10 */
  maxRetries?: number;
  /** a request (subscribe, unsubscribe, presence, `request()`) with no reply this long after it was sent fails with `timeout`; default 10000; 0 disables */
  requestTimeoutMs?: number;
  /**
   * a recovery (`hello` after a reconnect, `recover`, a `subscribe` with `since`, the answers a
   * switch waits for) with no answer this long after it was sent is given up (a replay of 500
   * messages takes some 11 s); default 30000; 0 disables
   */
  recoveryTimeoutMs?: number;
  /** default true */
  pingOnOpen?: boolean;
  /** at most this many recent message ids are remembered; default 20000; 0 disables de-duplication */
  dedupeSize?: number;
  /** each for this long; default 1800000 (30 minutes); 0: by count only */
  dedupeWindowMs?: number;
  /**
   * on a `reconnect` push, the switch to a new connection starts after a random delay of at
   * most this, and at most half the time left before the cut; default 60000; 0: at once
   */
  rotationSpreadMs?: number;
  /** cut a backoff wait short on `online`, ping on `visibilitychange`; default true */
  watchNetwork?: boolean;
  /** WebSocket constructor; default the global one */
  WebSocket?: unknown;
  protocols?: string | string[];
  /** source of the random delays (backoff, rotation spread), in [0, 1); default `Math.random` */
  random?: () => number;
  /** event target for `online` (tests) */
  window?: EventTarget;
  /** event target for `visibilitychange` (tests); needs `visibilityState` */
  document?: EventTarget & { visibilityState?: string };
}

/**
 * Who connects: a `userId`, or a `token` (the server then takes the user from the token;
 * a `userId` given with it must match).
 */
export type WspushClientOptions = WspushClientSettings &
  ({ userId: string; token?: string | TokenProvider } | { userId?: string; token: string | TokenProvider });

/**
 * The `code` of a failed request: the server's (`forbidden`, `invalid_channel`,
 * `unknown_namespace`, `too_many_channels`, `channel_full`, `not_subscribed`, `no_presence`,
 * `unknown_connection`, `bad_frame`, `unavailable`, `invalid_since`, `no_history`) or the
 * client's own (`timeout`,
 * `not_open`, `disconnected`, `closed`, `unsubscribed`).
 */
export type RequestErrorCode =
  | "forbidden"
  | "invalid_channel"
  | "unknown_namespace"
  | "too_many_channels"
  | "channel_full"
  | "not_subscribed"
  | "no_presence"
  | "unknown_connection"
  | "bad_frame"
  | "unavailable"
  | "invalid_since"
  | "no_history"
  | "timeout"
  | "not_open"
  | "disconnected"
  | "closed"
  | "unsubscribed"
  | (string & {});

/** What a refused or unanswered request rejects with. */
export declare class WspushRequestError extends Error {
  constructor(code: string, message: string, channel?: string, frame?: WspushMessage);
  readonly code: RequestErrorCode;
  /** the channel the request was about */
  readonly channel?: string;
  /** the server's `error` frame, when it answered with one */
  readonly frame?: WspushMessage;
}

/**
 * The server's `subscribed` data; `epoch` and `seq` for namespaces that keep history;
 * `recovered` when the client asked for what it missed (after a reconnect).
 */
export interface SubscribedData {
  channel: string;
  epoch?: string;
  seq?: number;
  recovered?: boolean;
}

export interface SubscribeOptions {
  /** the server refused this subscription (at first, or when sent again after a reconnect): it is over */
  onError?: (error: WspushRequestError) => void;
}

/**
 * What `subscribe(channel, …)` returns: a promise of the `subscribed` data (rejected with a
 * `WspushRequestError` when refused) that can also end this one subscription.
 */
export interface ChannelSubscription extends Promise<SubscribedData> {
  readonly channel: string;
  /** end this subscription; the channel is left when it was the last one */
  unsubscribe(): Promise<void>;
}

export interface PresenceMember<I = any> {
  userId: string;
  /** what the channel authorizer said of the member (null without one) */
  info: I;
  /** the member's connections in the channel, as last read */
  connections: number;
}

export interface PresencePage<I = any> {
  channel: string;
  count: number;
  /** up to 100 */
  members: PresenceMember<I>[];
  /** pass it as `after` for the next page; null on the last one */
  next: string | null;
}

export interface PresenceEvent<I = any> {
  channel: string;
  /** `sync`: the whole list was read again (after a subscribe or a reconnect) */
  type: "sync" | "join" | "leave";
  /** who joined or left */
  userId?: string;
  info?: I;
  /** everyone in the channel now */
  members: PresenceMember<I>[];
}

export type PresenceListener<I = any> = (event: PresenceEvent<I>) => void;

export declare const DEFAULT_HEARTBEAT_MS: number;
export declare const DEFAULT_PONG_TIMEOUT_MS: number;
export declare const DEFAULT_TOKEN_TIMEOUT_MS: number;
export declare const DEFAULT_CONNECT_TIMEOUT_MS: number;
export declare const DEFAULT_RECONNECT_DELAY_MS: number;
export declare const DEFAULT_MAX_RECONNECT_DELAY_MS: number;
export declare const DEFAULT_MAX_RETRIES: number;
export declare const DEFAULT_DEDUPE_SIZE: number;
export declare const DEFAULT_DEDUPE_WINDOW_MS: number;
export declare const DEFAULT_REQUEST_TIMEOUT_MS: number;
export declare const DEFAULT_RECOVERY_TIMEOUT_MS: number;
export declare const DEFAULT_ROTATION_SPREAD_MS: number;
export declare const CLIENT_RECONNECT_CODE: number;

/** The backoff window after `failures` failures in a row; the wait is drawn in `[0, window)`. */
export declare function backoffWindow(
  failures: number,
  options?: { reconnectDelayMs?: number; maxReconnectDelayMs?: number },
): number;

export declare class WspushClient {
  constructor(options: WspushClientOptions);
  readonly state: ConnectionState;
  readonly connectionId: string | null;
  getSnapshot(): Snapshot;
  /** a function: the state store (`useSyncExternalStore`); returns the function that stops it */
  subscribe(listener: (snapshot: Snapshot) => void): () => void;
  /**
   * a channel name: join it; `handler` gets its messages. Sent again after every reconnect.
   * Resolves on `subscribed`, rejects with a `WspushRequestError` when refused.
   */
  subscribe<T = any>(channel: string, handler?: MessageHandler<T> | null, options?: SubscribeOptions): ChannelSubscription;
  /** leave a channel: every subscription to it ends */
  unsubscribe(channel: string): Promise<void>;
  /** the channels subscribed to (or on their way) */
  channels(): string[];
  /** follow a presence channel's members while subscribed to it; returns the function that stops it */
  onPresence<I = any>(channel: string, listener: PresenceListener<I>): () => void;
  /** the members as the client knows them, or null when it does not follow that channel's presence */
  members<I = any>(channel: string): PresenceMember<I>[] | null;
  /** every member of a presence channel one is subscribed to, every page followed */
  presence<I = any>(channel: string): Promise<{ channel: string; count: number; members: PresenceMember<I>[] }>;
  /** one page of members; pass `next` back as `after` */
  presencePage<I = any>(channel: string, after?: string | null): Promise<PresencePage<I>>;
  /** send a frame with a fresh `ref` and wait for the reply that echoes it */
  request<T = any>(frame: Record<string, unknown>, options?: { timeoutMs?: number }): Promise<WspushMessage<T>>;
  on<T = any>(type: string, handler: MessageHandler<T>): () => void;
  off<T = any>(type: string, handler: MessageHandler<T>): void;
  setHandlers(handlers: HandlerMap | (() => HandlerMap | null | undefined) | null | undefined): void;
  onStateChange(listener: (state: ConnectionState, previous: ConnectionState) => void): () => void;
  onError(listener: (error: WspushError) => void): () => void;
  /**
   * a stream (the user's, or a channel's) could not be recovered after a reconnect or a
   * connection switch: reload its state; never for the first connection
   */
  onResync(listener: ResyncListener): () => void;
  /** object → JSON, string as is; false (nothing sent, nothing queued) unless open */
  send(frame: unknown): boolean;
  ping(): boolean;
  reconnect(): boolean;
  close(code?: number, reason?: string): void;
}

export declare function createWspushClient(options: WspushClientOptions): WspushClient;

export declare function buildUrl(
  url: string,
  params: Record<string, string | number | boolean | null | undefined>,
): string;

export declare function parseFrame(raw: unknown): { message: WspushMessage } | { error: string };

export declare class RecentIds {
  /** at most `size` ids, each for `windowMs` (0: no time limit) */
  constructor(size: number, windowMs?: number, now?: () => number);
  readonly size: number;
  readonly windowMs: number;
  seen(id: string): boolean;
}
