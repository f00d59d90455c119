// Types for @wspush/client/react (src/react.js).
import type {
  ConnectionState,
  HandlerMap,
  WspushClient,
  WspushClientOptions,
  WspushMessage,
} from "./index.js";

export type UseWspushOptions = Partial<WspushClientOptions> & {
  /** false: stay closed (also without `url` or `userId`) */
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

export declare function useWspush(options: UseWspushOptions, handlers?: HandlerMap): UseWspushResult;
