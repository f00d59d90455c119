// Types for @wspush/client/react (src/react.js).
import type {
  ConnectionState,
  HandlerMap,
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
  /** the last message received, pongs excluded */
  lastMessage: WspushMessage | null;
  /** stable across renders; false unless open */
  send: (frame: unknown) => boolean;
  client: WspushClient | null;
}

/** `handlers` and `options.handlers` both run: for one type, those of `options` first. */
export declare function useWspush(options: UseWspushOptions, handlers?: HandlerMap): UseWspushResult;
