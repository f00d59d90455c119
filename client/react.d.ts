// Types for @wspush/client/react (src/react.js).
import type {
  ConnectionState,
  HandlerMap,
  MessageHandler,
  PresenceMember,
  ResyncEvent,
  WspushRequestError,
  TokenProvider,
  WspushClient,
  WspushClientSettings,
  WspushMessage,
} from "./index.js";

export type UseWspushOptions = Partial<WspushClientSettings> & {
  /** without it the hook connects only with a `token` (the server takes the user from it) */
  userId?: string;
  /** read at each connect: a provider, or a token that may be undefined until the app has one */
  token?: string | TokenProvider | null;
  /** false: stay closed (also without `url`, or without both `userId` and `token`) */
  enabled?: boolean;
};

export interface UseWspushResult {
  state: ConnectionState;
  connectionId: string | null;
  /** the last message received, pongs and the `welcome`/`recovered` answers to the client's own requests excluded */
  lastMessage: WspushMessage | null;
  /** stable across renders; false unless open */
  send: (frame: unknown) => boolean;
  client: WspushClient | null;
}

/** `handlers` and `options.handlers` both run: for one type, those of `options` first. */
export declare function useWspush(options: UseWspushOptions, handlers?: HandlerMap): UseWspushResult;

/**
 * Makes `client` (usually `useWspush(…).client`) the one the hooks below it use. (Typed
 * without React's types, which this package does not depend on: it returns a React element.)
 */
export declare function WspushProvider(props: { client: WspushClient | null | undefined; children?: unknown }): any;

/** The client of the nearest `WspushProvider`, or null. */
export declare function useWspushClient(): WspushClient | null;

export interface ChannelHookOptions {
  /** this client instead of the provider's */
  client?: WspushClient | null;
  /** false: do not subscribe */
  enabled?: boolean;
}

export interface UseChannelResult {
  /** `idle`: no client, no name, or not enabled */
  status: "idle" | "subscribing" | "subscribed" | "error";
  /** why it is `error`: refused (`forbidden`, …) or no answer in time (`timeout`) */
  error: WspushRequestError | null;
}

/** Subscribed to `name` while mounted (again when it changes); `handler` gets its messages. */
export declare function useChannel<T = any>(
  name: string | null | undefined,
  handler?: MessageHandler<T>,
  options?: ChannelHookOptions,
): UseChannelResult;

/** The members of a presence channel, kept current from its presence query and join/leave events. */
export declare function usePresence<I = any>(
  name: string | null | undefined,
  options?: ChannelHookOptions,
): PresenceMember<I>[];

/**
 * While mounted, hear when a stream (`"user"` or a channel) could not be recovered after a
 * reconnect or a connection switch: reload what the component shows of it.
 */
export declare function useResync(listener: (event: ResyncEvent) => void, options?: ChannelHookOptions): void;
