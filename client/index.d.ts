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
  | "pong_timeout"
  | "token"
  | "handler"
  | "max_retries";

export interface WspushError {
  /**
   * - `server`: an `error` frame from wspush (`code`, `message`, `frame`)
   * - `bad_frame`: not JSON, or not an object with a string `type` (`raw`)
   * - `socket`: the WebSocket reported an error (`event`)
   * - `pong_timeout`: no pong in time; a reconnect follows
   * - `token`: the token provider failed (`error`); it is retried
   * - `handler`: a handler threw (`error`, `frame`)
   * - `max_retries`: gave up after `maxRetries`; state is `closed`
   */
  kind: WspushErrorKind;
  message: string;
  code?: string;
  frame?: WspushMessage;
  raw?: unknown;
  error?: unknown;
  event?: unknown;
}

export interface Snapshot {
  readonly state: ConnectionState;
  readonly connectionId: string | null;
}

export type TokenProvider = () => string | null | undefined | Promise<string | null | undefined>;

export interface WspushClientOptions {
  /** `wss://<api>.execute-api.<region>.amazonaws.com/<stage>` or `ws://127.0.0.1:3001`; relative and http(s) URLs are turned into ws(s) */
  url: string;
  userId: string;
  /** `pc`, `mobile`, `web`, ... */
  platform?: string;
  /** a token, or a provider called before every connect and reconnect; sent as `token` */
  token?: string | TokenProvider;
  /** extra query parameters */
  query?: Record<string, string | number | boolean | null | undefined>;
  /** handlers by type, `"*"` for all; a function is called at each dispatch */
  handlers?: HandlerMap | (() => HandlerMap | null | undefined);
  onStateChange?: (state: ConnectionState, previous: ConnectionState) => void;
  onError?: (error: WspushError) => void;
  /** default 540000 (9 minutes); 0 disables */
  heartbeatMs?: number;
  /** default 10000; 0 disables */
  pongTimeoutMs?: number;
  /** A token provider that has not answered within this has failed (retried); default 10 s. */
  tokenTimeoutMs?: number;
  /** default true */
  pingOnOpen?: boolean;
  /** default 1000; 0 disables de-duplication */
  dedupeSize?: number;
  /** reconnect on `online`, ping on `visibilitychange`; default true */
  watchNetwork?: boolean;
  /** WebSocket constructor; default the global one */
  WebSocket?: unknown;
  protocols?: string | string[];
  /** failed reconnects in a row before giving up; default Infinity */
  maxRetries?: number;
  minReconnectionDelay?: number;
  maxReconnectionDelay?: number;
  reconnectionDelayGrowFactor?: number;
  connectionTimeout?: number;
  minUptime?: number;
  debug?: boolean;
  /** event target for `online` (tests) */
  window?: EventTarget;
  /** event target for `visibilitychange` (tests); needs `visibilityState` */
  document?: EventTarget & { visibilityState?: string };
}

export declare const DEFAULT_HEARTBEAT_MS: number;
export declare const DEFAULT_PONG_TIMEOUT_MS: number;
export declare const DEFAULT_DEDUPE_SIZE: number;
export declare const DEFAULT_TOKEN_TIMEOUT_MS: number;
export declare const CLIENT_RECONNECT_CODE: number;

export declare class WspushClient {
  constructor(options: WspushClientOptions);
  readonly state: ConnectionState;
  readonly connectionId: string | null;
  getSnapshot(): Snapshot;
  subscribe(listener: (snapshot: Snapshot) => void): () => void;
  on<T = any>(type: string, handler: MessageHandler<T>): () => void;
  off<T = any>(type: string, handler: MessageHandler<T>): void;
  setHandlers(handlers: HandlerMap | (() => HandlerMap | null | undefined) | null | undefined): void;
  onStateChange(listener: (state: ConnectionState, previous: ConnectionState) => void): () => void;
  onError(listener: (error: WspushError) => void): () => void;
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
  constructor(size: number);
  readonly size: number;
  seen(id: string): boolean;
}
