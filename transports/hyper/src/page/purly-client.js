// purly-client.js: a dependency-free ES module that keeps a copy of one purly model in sync
// over a stream-mode WebSocket (PROTOCOL.md sections 2, 4 and 5). Served by purly-hyper at
// `{prefix}purly-client.js`; its types are in `purly-client.d.ts` beside it.
//
//   import { connect } from "/purly-client.js";
//   const client = connect("/counter/stream");
//   client.subscribe((state) => render(state));
//   await client.update({ count: (client.state.count ?? 0) + 1 });
//
// `client.state` is "the server's state + my pending updates": an update shows at once, and
// its promise settles when the server confirms it (its echo or an `ack`) or refuses it (an
// `error` naming its id). After a dropped connection the client reconnects with
// `?since=VERSION&epoch=EPOCH`, receives exactly what it missed, and sends every update still
// unconfirmed once more, with its id, so that its confirmation still reaches it.
//
// Exactly once (PROTOCOL.md section 9): the client names itself with a client key
// (`?client=KEY`, kept in the page's `sessionStorage` per model, so a reload keeps it) and
// numbers its updates with increasing integers, so the server applies a resent update at most
// once and answers it again instead.

const SUBPROTOCOL = "purly.stream";
const KEY_STORAGE = "purly-client-key:";
// Keys in use by clients of this page: two clients of one model never share one.
const keysInUse = new Set();

/** The least time between two presence messages of one client (the server takes 20 a second). */
const PRESENCE_INTERVAL_MS = 55;

function randomKey() {
  const bytes = new Uint8Array(16);
  if (globalThis.crypto && globalThis.crypto.getRandomValues) {
    globalThis.crypto.getRandomValues(bytes);
  } else {
    for (let i = 0; i < bytes.length; i++) bytes[i] = Math.floor(Math.random() * 256);
  }
  return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
}

// The page's key for the model at `url`: the one in `sessionStorage` (so that a reload keeps
// it) unless another client of this page uses it, else a fresh one. Marked in use until the
// client closes.
function clientKeyFor(url) {
  const slot = KEY_STORAGE + url.pathname;
  let storage = null;
  try {
    storage = globalThis.sessionStorage ?? null;
  } catch (_) {
    storage = null; // storage disabled (e.g. sandboxed frames)
  }
  const stored = storage ? storage.getItem(slot) : null;
  const valid = stored !== null && /^[A-Za-z0-9_-]{8,64}$/.test(stored);
  let key = stored;
  if (!valid || keysInUse.has(stored)) {
    key = randomKey();
    if (storage && !valid) storage.setItem(slot, key);
  }
  keysInUse.add(key);
  return key;
}

function isObject(value) {
  return value !== null && typeof value === "object" && !Array.isArray(value);
}

function has(object, key) {
  return Object.prototype.hasOwnProperty.call(object, key);
}

function blank() {
  return Object.create(null);
}

// A deep copy whose objects have no prototype, so that keys like `__proto__` stay data.
function copy(value) {
  if (Array.isArray(value)) return value.map(copy);
  if (!isObject(value)) return value;
  const out = blank();
  for (const key of Object.keys(value)) out[key] = copy(value[key]);
  return out;
}

/** Nested merge (RFC 7386 JSON Merge Patch); merges in place where `target` is an object. */
export function merge(target, patch) {
  if (!isObject(patch)) return copy(patch);
  const out = isObject(target) ? target : blank();
  for (const key of Object.keys(patch)) {
    if (patch[key] === null) delete out[key];
    else out[key] = merge(out[key], patch[key]);
  }
  return out;
}

/** An `error` frame from the server: why an update (or a frame) was refused. */
export class PurlyError extends Error {
  constructor(code, message, index) {
    super(`${code}: ${message}`);
    this.name = "PurlyError";
    /** The error code (PROTOCOL.md section 5), e.g. `rejected` or `rate_limited`. */
    this.code = code;
    /** The server's explanation. */
    this.detail = message;
    /** The position of the refused message in its frame, if one was at fault. */
    this.index = index;
  }
}

// The stream URL for `url`: http(s) becomes ws(s), a relative URL is resolved against the page.
function streamUrl(url) {
  const base = typeof location !== "undefined" ? location.href : undefined;
  const resolved = new URL(url, base);
  if (resolved.protocol === "http:") resolved.protocol = "ws:";
  if (resolved.protocol === "https:") resolved.protocol = "wss:";
  return resolved;
}

/**
 * Connects to a model's stream (`ws://host/{model}/stream`; `http(s):` and relative URLs work
 * too) and returns its client at once; `client.ready` resolves with the first state.
 */
export function connect(url, options = {}) {
  return new PurlyClient(url, options);
}

export class PurlyClient {
  constructor(url, options = {}) {
    this.url = streamUrl(url);
    this._WebSocket = options.WebSocket || globalThis.WebSocket;
    this._EventSource = options.EventSource || globalThis.EventSource;
    this._fetch = options.fetch || ((...args) => globalThis.fetch(...args));
    // "auto" (WebSocket, falling back to the event stream), "websocket" or "events".
    this._transportChoice = options.transport ?? "auto";
    /** The transport in use: `websocket` or `events` (PROTOCOL.md section 10). */
    this.transport = this._transportChoice === "events" ? "events" : "websocket";
    this._wsFailures = 0;
    this._minDelay = options.minReconnectDelay ?? 250;
    this._maxDelay = options.maxReconnectDelay ?? 5000;
    this._retryDelay = this._minDelay;
    this._confirmed = blank();
    this._view = null; // confirmed + pending, rebuilt on demand
    this._pending = []; // [{ id, patch, resolve, reject }], oldest first
    this._sent = []; // the ids of each frame with updates sent on this connection, oldest first
    /** The client key this client names itself with (PROTOCOL.md section 9). */
    this.clientKey = options.clientKey ?? clientKeyFor(this.url);
    // Ids start from the clock (microseconds), so a key reused after a reload never repeats one.
    this._nextId = 0;
    this._listeners = new Set();
    this._events = { status: new Set(), error: new Set(), signal: new Set(), presence: new Set() };
    /** The other connections' presences, by presence id (PROTOCOL.md section 11; do not mutate). */
    this.presence = blank();
    /** This connection's presence id (null until joined; a new one on every connection). */
    this.presenceId = null;
    // This client's own presence (undefined: never set), sent again on every connection.
    this._myPresence = undefined;
    // At most 20 presence messages a second go out; between them, only the latest waits.
    this._presenceSentAt = 0;
    this._presenceTimer = null;
    this._wire = null;
    this._timer = null;
    /** The model's version this copy holds (null before the first state). */
    this.version = null;
    /** The epoch of that version. */
    this.epoch = null;
    /** `connecting`, `live`, `reconnecting` or `closed`. */
    this.status = "connecting";
    this.ready = new Promise((resolve, reject) => {
      this._ready = { resolve, reject };
    });
    // Nobody may be waiting for `ready`: do not report its rejection on close as unhandled.
    this.ready.catch(() => {});
    this._open();
  }

  /** The server's state with this client's pending updates merged on top (do not mutate). */
  get state() {
    if (this._view === null) {
      this._view = this._pending.length === 0 ? this._confirmed : copy(this._confirmed);
      for (const p of this._pending) merge(this._view, p.patch);
    }
    return this._view;
  }

  /** How many updates wait for the server's confirmation. */
  get pending() {
    return this._pending.length;
  }

  /**
   * Merges `patch` into the state at once and sends it. The promise resolves with the version
   * that includes it once the server confirms it, or rejects with a `PurlyError` if the
   * server refuses it (or with an Error if the client is closed first). With
   * `{ timeout: ms }` it also rejects (an Error named `TimeoutError`) when no answer came in
   * time: the update stays pending and may still be applied, exactly once.
   */
  update(patch, options = {}) {
    return this.send({ update: patch, timeout: options.timeout });
  }

  /** Relays `content` to the model's other clients; returns whether it was sent (live). */
  signal(content) {
    if (!isObject(content)) throw new TypeError("a signal's content is an object");
    return this._send([{ header: { type: "signal", version: "0.1" }, content: content }]);
  }

  /**
   * Sets this client's presence (an object of at most 4 KiB of JSON: who it is, where its
   * cursor is) for the model's other clients, or clears it (`null`). It is not part of the
   * model. Call it as often as you like: at most 20 go out a second, the latest winning, and
   * it is sent again after every reconnection. Others see it in their `presence`.
   */
  setPresence(presence) {
    if (presence !== null && !isObject(presence)) {
      throw new TypeError("a presence is an object, or null to clear it");
    }
    this._myPresence = presence === null ? null : copy(presence);
    this._flushPresence();
  }

  // Sends this client's presence now, or once PRESENCE_INTERVAL_MS passed since the last one.
  _flushPresence() {
    if (this._presenceTimer !== null || this._myPresence === undefined) return;
    const wait = this._presenceSentAt + PRESENCE_INTERVAL_MS - Date.now();
    if (wait > 0) {
      this._presenceTimer = setTimeout(() => {
        this._presenceTimer = null;
        this._flushPresence();
      }, wait);
      return;
    }
    const message = { header: { type: "presence", version: "0.1" }, content: this._myPresence };
    if (this._send([message])) this._presenceSentAt = Date.now();
  }

  /**
   * Sends an update and a signal in one frame: both are applied, or neither (the signal is
   * relayed only if the update is accepted). Either may be left out. Returns the update's
   * promise (or a resolved one without an update).
   */
  send({ update, signal, timeout } = {}) {
    if (this.status === "closed") return Promise.reject(new Error("the client is closed"));
    const messages = [];
    let promise = Promise.resolve(this.version);
    if (update !== undefined) {
      if (!isObject(update)) throw new TypeError("an update is an object");
      const patch = copy(update);
      this._nextId = Math.max(this._nextId + 1, Date.now() * 1000);
      const id = this._nextId;
      promise = new Promise((resolve, reject) => {
        this._pending.push({ id, patch, resolve, reject });
      });
      if (typeof timeout === "number") promise = withTimeout(promise, timeout);
      messages.push(updateMessage(id, patch));
      this._changed(patch, { source: "local", keys: Object.keys(patch) });
    }
    if (signal !== undefined) {
      if (!isObject(signal)) throw new TypeError("a signal's content is an object");
      messages.push({ header: { type: "signal", version: "0.1" }, content: signal });
    }
    // Not live: the update waits and goes out on reconnecting; a signal is dropped.
    if (messages.length > 0) this._send(messages);
    return promise;
  }

  /**
   * Calls `listener(state, diff, info)` after every change of `state`: `info.source` is
   * `snapshot` (a whole new state; `diff` is it), `server` (a diff from the server, `diff`),
   * `local` (this client's update, `diff`) or `rollback` (a refused update was taken back;
   * `diff` is null); `info.keys` lists the top-level keys that may have changed. Returns a
   * function that unsubscribes.
   */
  subscribe(listener) {
    this._listeners.add(listener);
    return () => this._listeners.delete(listener);
  }

  /**
   * Listens to `status` (the new status), `error` (a `PurlyError` for every error frame, also
   * those that reject an update's promise), `signal` (`content, { origin }`) or `presence`
   * (`presence, { id, content }` for one connection's change, `content` null when it left or
   * cleared it; `presence, { snapshot: true }` when the whole set was replaced, on each
   * connection). Returns a function that stops listening.
   */
  on(event, listener) {
    const listeners = this._events[event];
    if (!listeners) throw new TypeError(`no event ${event}: status, error, signal or presence`);
    listeners.add(listener);
    return () => listeners.delete(listener);
  }

  /** Closes the connection for good; pending updates are rejected. */
  close() {
    if (this.status === "closed") return;
    clearTimeout(this._timer);
    clearTimeout(this._presenceTimer);
    const wire = this._wire;
    this._wire = null;
    if (wire) wire.close();
    this._setStatus("closed");
    keysInUse.delete(this.clientKey);
    const pending = this._pending;
    this._pending = [];
    this._sent = [];
    this._view = null;
    for (const p of pending) p.reject(new Error("the client is closed"));
    this._ready.reject(new Error("the client closed before the first state"));
  }

  // ---- the connection ----

  // The URL of this connection: the client key, and the resume point if there is one.
  _connectionUrl() {
    const url = new URL(this.url);
    url.searchParams.set("client", this.clientKey);
    if (this.version !== null && this.epoch !== null) {
      url.searchParams.set("since", String(this.version));
      url.searchParams.set("epoch", this.epoch);
    }
    return url;
  }

  _open() {
    // Falls back to the event stream when WebSockets failed twice in a row.
    if (this._transportChoice === "auto" && this._wsFailures >= 2) this.transport = "events";
    const handlers = {
      open: () => this._opened(wire),
      frame: (frame) => {
        if (this._wire === wire) this._receive(frame);
      },
      close: () => this._closed(wire),
    };
    const url = this._connectionUrl();
    const wire =
      this.transport === "events"
        ? new EventsWire(url, this._EventSource, this._fetch, handlers)
        : new WebSocketWire(url, this._WebSocket, handlers);
    this._wire = wire;
  }

  _opened(wire) {
    if (this._wire !== wire) return;
    this._retryDelay = this._minDelay;
    this._setStatus("live");
    this._sent = [];
    // Whether the server applied these before the drop cannot be known: send each once more
    // with its id; under the client key the server applies each at most once, and the first
    // confirmation of an id settles it, a later one is ignored.
    if (this._pending.length > 0) {
      this._send(this._pending.map((p) => updateMessage(p.id, p.patch)));
    }
    // A new connection has no presence yet: this client's goes out again.
    if (this._myPresence !== undefined && this._myPresence !== null) this._flushPresence();
  }

  _closed(wire) {
    if (this._wire !== wire) return;
    this._wire = null;
    if (this.transport === "websocket") {
      // Never opened, or died within seconds of opening: a network that breaks WebSockets?
      const lasted = wire.openedAt === null ? 0 : Date.now() - wire.openedAt;
      this._wsFailures = lasted < SHORT_LIVED_MS ? this._wsFailures + 1 : 0;
    } else if (this._transportChoice === "auto") {
      // A fallback's stream ended (or never opened: the server may just be restarting):
      // WebSockets are tried first again.
      this.transport = "websocket";
      this._wsFailures = 0;
    }
    this._setStatus("reconnecting");
    // Full jitter: the clients of a restarted server come back spread over the window, not
    // all in the same instant.
    this._timer = setTimeout(() => this._open(), Math.random() * this._retryDelay);
    this._retryDelay = Math.min(this._retryDelay * 2, this._maxDelay);
  }

  _send(messages) {
    const wire = this._wire;
    if (!wire || !wire.isOpen()) return false;
    wire.send(JSON.stringify(messages));
    const ids = messages.filter((m) => m.header.type === "update").map((m) => m.header.id);
    if (ids.length > 0) this._sent.push(ids);
    return true;
  }

  // Forgets the sent frames whose updates are all settled.
  _pruneSent() {
    const pending = new Set(this._pending.map((p) => p.id));
    this._sent = this._sent.filter((ids) => ids.some((id) => pending.has(id)));
  }

  // Starts over from a snapshot: the next connection asks for no resume point.
  _resubscribe() {
    this.version = null;
    this.epoch = null;
    if (this._wire) this._wire.drop();
  }

  _receive(frame) {
    for (const message of frame) {
      const header = isObject(message) && isObject(message.header) ? message.header : null;
      if (!header) continue;
      if (typeof header.presence_id === "string") this.presenceId = header.presence_id;
      const content = isObject(message.content) ? message.content : blank();
      switch (header.type) {
        case "presence":
          this._presence(header, isObject(message.content) ? message.content : null);
          break;
        case "update":
          if (!this._update(header, content)) return;
          break;
        case "ack":
          this._confirm(header.id, header.seq, []);
          break;
        case "error":
          this._error(header, content);
          break;
        case "signal":
          this._emit("signal", content, { origin: header.origin });
          break;
      }
    }
  }

  // Returns false when the rest of the frame must be dropped (a gap: starting over).
  _update(header, content) {
    if (header.snapshot === true) {
      const keys = new Set([...Object.keys(this._confirmed), ...Object.keys(content)]);
      this._confirmed = copy(content);
      this.version = header.seq ?? null;
      this.epoch = header.epoch ?? null;
      this._view = null;
      this._notify(content, { source: "snapshot", keys: [...keys] });
      this._ready.resolve(this.state);
      return true;
    }
    if (typeof header.seq === "number" && this.version !== null) {
      if (header.epoch !== this.epoch || header.seq > this.version + 1) {
        this._resubscribe();
        return false;
      }
      if (header.seq <= this.version) {
        // Already applied (a resend's echo after the replay): only its confirmation counts.
        this._confirm(header.id, header.seq, []);
        return true;
      }
    }
    for (const key of Object.keys(content)) {
      const value = content[key] === null ? undefined : merge(this._confirmed[key], content[key]);
      if (value === undefined) delete this._confirmed[key];
      else this._confirmed[key] = value;
    }
    if (typeof header.seq === "number") this.version = header.seq;
    if (header.epoch !== undefined && this.epoch === null) this.epoch = header.epoch;
    this._view = null;
    const keys = Object.keys(content);
    this._confirm(header.id, header.seq, keys);
    this._notify(content, { source: "server", keys });
    if (this.version !== null) this._ready.resolve(this.state);
    return true;
  }

  // Settles the pending update with `id`, if it is ours and still pending.
  _confirm(id, seq, keys) {
    if (id === undefined || id === null) return;
    const at = this._pending.findIndex((p) => p.id === id);
    if (at < 0) return;
    const [done] = this._pending.splice(at, 1);
    for (const key of Object.keys(done.patch)) keys.push(key);
    this._view = null;
    this._pruneSent();
    done.resolve(seq ?? this.version);
  }

  _error(header, content) {
    const error = new PurlyError(
      String(content.code ?? "unknown"),
      String(content.message ?? ""),
      typeof content.index === "number" ? content.index : undefined,
    );
    let ids = Array.isArray(header.ids) ? header.ids : [];
    // Frames are answered in order: an error that names no id (a frame whose ids the server
    // could not read) refuses the oldest frame still unanswered. `unavailable` without ids is
    // the model's store failing: those updates are sent again on reconnecting.
    if (ids.length === 0 && error.code !== "unavailable") {
      const pending = new Set(this._pending.map((p) => p.id));
      ids = this._sent.find((frame) => frame.some((id) => pending.has(id))) ?? [];
    }
    const keys = [];
    for (const id of ids) {
      const at = this._pending.findIndex((p) => p.id === id);
      if (at < 0) continue;
      const [refused] = this._pending.splice(at, 1);
      keys.push(...Object.keys(refused.patch));
      refused.reject(error);
    }
    this._pruneSent();
    if (keys.length > 0) {
      this._view = null;
      this._notify(null, { source: "rollback", keys });
    }
    this._emit("error", error);
  }

  _presence(header, content) {
    if (header.snapshot === true) {
      this.presence = content ?? blank();
      this._emit("presence", this.presence, { snapshot: true });
      return;
    }
    if (typeof header.id !== "string") return;
    if (content === null) {
      if (!has(this.presence, header.id)) return;
      delete this.presence[header.id];
    } else {
      this.presence[header.id] = content;
    }
    this._emit("presence", this.presence, { id: header.id, content });
  }

  _changed(patch, info) {
    this._view = null;
    this._notify(patch, info);
  }

  _notify(diff, info) {
    const state = this.state;
    for (const listener of [...this._listeners]) {
      try {
        listener(state, diff, info);
      } catch (error) {
        reportLater(error);
      }
    }
  }

  _emit(event, ...args) {
    for (const listener of [...this._events[event]]) {
      try {
        listener(...args);
      } catch (error) {
        reportLater(error);
      }
    }
  }

  _setStatus(status) {
    if (this.status === status) return;
    this.status = status;
    this._emit("status", status);
  }
}

// `promise`, rejected with a `TimeoutError` if it has not settled after `ms` milliseconds.
function withTimeout(promise, ms) {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      const error = new Error(`no answer from the server within ${ms} ms`);
      error.name = "TimeoutError";
      reject(error);
    }, ms);
    promise.then(
      (value) => {
        clearTimeout(timer);
        resolve(value);
      },
      (error) => {
        clearTimeout(timer);
        reject(error);
      },
    );
  });
}

// A WebSocket that lives shorter than this counts as a failure toward the fallback.
const SHORT_LIVED_MS = 3000;

// A message listener that hands each event's frame (a JSON array) to `handlers.frame`; an
// event that is not one is ignored.
function frameReader(handlers) {
  return (event) => {
    let frame;
    try {
      frame = JSON.parse(event.data);
    } catch (_) {
      return;
    }
    if (Array.isArray(frame)) handlers.frame(frame);
  };
}

// Stream mode over a WebSocket (PROTOCOL.md section 4).
class WebSocketWire {
  constructor(url, WebSocket, handlers) {
    this.openedAt = null;
    const socket = new WebSocket(url.href, SUBPROTOCOL);
    this._socket = socket;
    socket.onopen = () => {
      this.openedAt = Date.now();
      handlers.open();
    };
    socket.onmessage = frameReader(handlers);
    socket.onclose = () => handlers.close();
  }

  isOpen() {
    return this._socket.readyState === 1;
  }

  send(text) {
    this._socket.send(text);
  }

  // Closed by the server's side of things (a gap): the client reconnects.
  drop() {
    this._socket.close();
  }

  // Closed for good.
  close() {
    this._socket.onclose = null;
    this._socket.close(1000);
  }
}

// Stream mode over an event stream down and POSTs up (PROTOCOL.md section 10), for networks
// that break WebSockets. POSTs go one at a time, so that frames arrive in order.
class EventsWire {
  constructor(streamUrl, EventSource, fetch, handlers) {
    this.openedAt = null;
    this._handlers = handlers;
    this._fetch = fetch;
    this._queue = [];
    this._posting = false;
    this._ended = false;
    const url = new URL(streamUrl);
    if (url.protocol === "ws:") url.protocol = "http:";
    if (url.protocol === "wss:") url.protocol = "https:";
    url.pathname = url.pathname.replace(/\/stream$/, "/events");
    this._sendUrl = new URL(url);
    this._sendUrl.pathname = url.pathname.replace(/\/events$/, "/send");
    this._sendUrl.search = "";
    const source = new EventSource(url.href);
    this._source = source;
    source.addEventListener("session", (event) => {
      try {
        this._sendUrl.searchParams.set("session", JSON.parse(event.data).session);
      } catch (_) {
        return this.drop();
      }
      this.openedAt = Date.now();
      handlers.open();
    });
    source.onmessage = frameReader(handlers);
    // EventSource would reconnect by itself, to the same URL: the client does it instead,
    // with its resume point and backoff.
    source.onerror = () => this.drop();
  }

  isOpen() {
    return !this._ended && this.openedAt !== null;
  }

  send(text) {
    this._queue.push(text);
    this._pump();
  }

  async _pump() {
    if (this._posting) return;
    this._posting = true;
    while (this._queue.length > 0 && !this._ended) {
      const body = this._queue.shift();
      let ok = false;
      try {
        const response = await this._fetch(this._sendUrl.href, {
          method: "POST",
          headers: { "content-type": "application/json" },
          body,
        });
        ok = response.status === 202;
      } catch (_) {
        ok = false;
      }
      // The session is gone (or unreachable): start a new one; what is pending is resent.
      if (!ok) this.drop();
    }
    this._posting = false;
  }

  drop() {
    if (this._ended) return;
    this._ended = true;
    this._source.close();
    this._handlers.close();
  }

  close() {
    this._ended = true;
    this._source.close();
  }
}

function updateMessage(id, patch) {
  return { header: { type: "update", version: "0.1", id: id }, content: patch };
}

// A listener's exception must not break the client: report it outside the client's call.
function reportLater(error) {
  setTimeout(() => {
    throw error;
  });
}
