// Types of purly-client.js (served beside it as `{prefix}purly-client.d.ts`).

/** A JSON value. */
export type Json = null | boolean | number | string | Json[] | { [key: string]: Json };
/** A JSON object: a model's state, an update (a merge patch) or a signal's content. */
export type JsonObject = { [key: string]: Json };

/** The state of a client's connection. */
export type Status = "connecting" | "live" | "reconnecting" | "closed";

/** What changed `state`, for a `subscribe` listener. */
export interface Change {
  /**
   * `snapshot`: a whole new state from the server; `server`: a diff from the server;
   * `local`: this client's own update; `rollback`: a refused update was taken back.
   */
  source: "snapshot" | "server" | "local" | "rollback";
  /** The top-level keys of the state that may have changed. */
  keys: string[];
}

export interface ConnectOptions {
  /** The WebSocket constructor (default: the global one), e.g. `ws` under Node. */
  WebSocket?: new (url: string, protocol: string) => WebSocket;
  /**
   * `auto` (default): a WebSocket, falling back to the event stream for good when a WebSocket
   * cannot be opened or dies within seconds of opening, twice in a row; `websocket` or
   * `events` forces one (PROTOCOL.md section 10).
   */
  transport?: "auto" | "websocket" | "events";
  /** The EventSource constructor (default: the global one). */
  EventSource?: new (url: string) => EventSource;
  /** The fetch function for the event stream's POSTs (default: the global one). */
  fetch?: typeof fetch;
  /**
   * The first backoff window before reconnecting, in ms (default 250); it doubles on each
   * failure, and each wait is a random point in the window ("full jitter").
   */
  minReconnectDelay?: number;
  /** The longest wait before reconnecting, in ms (default 5000). */
  maxReconnectDelay?: number;
  /**
   * The client key (8 to 64 of `A-Z a-z 0-9 _ -`; PROTOCOL.md section 9). Default: the page's
   * key for this model in `sessionStorage`, or a new random one.
   */
  clientKey?: string;
}

export interface UpdateOptions {
  /**
   * Reject (an Error named `TimeoutError`) when the server has not answered within this many
   * ms; the update stays pending and may still be applied, exactly once.
   */
  timeout?: number;
}

/** An error frame from the server (PROTOCOL.md section 5). */
export class PurlyError extends Error {
  /** The error code, e.g. `rejected`, `model_too_large`, `rate_limited`, `unavailable`. */
  readonly code: string;
  /** The server's explanation. */
  readonly detail: string;
  /** The position of the refused message in its frame, if one was at fault. */
  readonly index: number | undefined;
}

export class PurlyClient {
  /** The stream URL (without the resume point). */
  readonly url: URL;
  /** Resolves with the first state the server sends. */
  readonly ready: Promise<JsonObject>;
  /** The server's state with this client's pending updates merged on top. Do not mutate. */
  readonly state: JsonObject;
  /** How many updates wait for the server's confirmation. */
  readonly pending: number;
  /** The model's version this copy holds (null before the first state). */
  readonly version: number | null;
  /** The epoch of that version. */
  readonly epoch: string | null;
  /** The connection's state. */
  readonly status: Status;
  /** The client key this client names itself with; the server applies each update once. */
  readonly clientKey: string;
  /** The transport in use. */
  readonly transport: "websocket" | "events";

  /**
   * Merges `patch` into `state` at once and sends it. Resolves with the version that includes
   * it once the server confirms it; rejects with a `PurlyError` if the server refuses it, or
   * an Error when the client is closed (or the timeout passes) first.
   */
  update(patch: JsonObject, options?: UpdateOptions): Promise<number>;
  /** Relays `content` to the model's other clients; returns whether it was sent. */
  signal(content: JsonObject): boolean;
  /** The other connections' presences, by presence id (PROTOCOL.md section 11). */
  readonly presence: { [id: string]: JsonObject };
  /** This connection's presence id (null until joined). */
  readonly presenceId: string | null;
  /**
   * Sets this client's presence (at most 4 KiB of JSON), or clears it with `null`: at most 20
   * go out a second (the latest wins), and it is sent again after every reconnection.
   */
  setPresence(presence: JsonObject | null): void;
  /** Sends an update and a signal in one frame: both are applied, or neither. */
  send(frame: { update?: JsonObject; signal?: JsonObject; timeout?: number }): Promise<number | null>;
  /** Calls `listener` after every change of `state`; returns a function that unsubscribes. */
  subscribe(listener: (state: JsonObject, diff: JsonObject | null, change: Change) => void): () => void;
  /** Status changes. Returns a function that stops listening. */
  on(event: "status", listener: (status: Status) => void): () => void;
  /** Every error frame (also those that reject an update's promise). */
  on(event: "error", listener: (error: PurlyError) => void): () => void;
  /** Signals from the model's other clients. */
  on(event: "signal", listener: (content: JsonObject, from: { origin: number }) => void): () => void;
  /** One connection's presence changed (`content` null: gone), or the whole set was replaced. */
  on(
    event: "presence",
    listener: (
      presence: { [id: string]: JsonObject },
      change: { id: string; content: JsonObject | null } | { snapshot: true },
    ) => void,
  ): () => void;
  /** Closes the connection for good; pending updates are rejected. */
  close(): void;
}

/** Connects to a model's stream (`ws://host/{model}/stream`, or an http(s) or relative URL). */
export function connect(url: string | URL, options?: ConnectOptions): PurlyClient;

/** Nested merge (RFC 7386 JSON Merge Patch), in place where `target` is an object. */
export function merge(target: Json | undefined, patch: Json): Json;
