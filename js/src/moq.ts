// MoQ plumbing shared by the serial and CAN clients: a relay session that reconnects on its
// own (`Relay`), xoq addresses and relay tokens, and byte-stream tracks with the same group
// rules as the Rust side (crates/xoq-transport/src/moq.rs), so browser and Rust peers
// interoperate.

import * as Moq from "@moq/net";

/** An established MoQ session to a relay (from `@moq/net`). */
export type Connection = Moq.Connection.Established;

/** Options passed to `@moq/net`'s connect: certificate pins, WebSocket fallback, abort signal. */
export type ConnectOptions = Moq.Connection.ConnectProps;

/** Track name xoq uses for byte streams inside a broadcast. */
export const DATA_TRACK = "data";
/** A writer closes its group after this many frames, bounding what a late reader replays. */
export const GROUP_MAX_FRAMES = 1000;
/** A writer starts a new group after this long without writes, so a pause ends a group. */
export const GROUP_IDLE_MS = 50;
/** How long groups are kept (ms): long enough that none is skipped under load. */
export const MAX_AGE_MS = 10_000;

// --- addresses and tokens ----------------------------------------------------------------

/**
 * `url` with its relay token set: `?jwt=TOKEN`, the moq tools' convention, which the relay
 * checks when it runs with `--auth-key`. An empty token leaves the URL as it is (minus any
 * `jwt` already there). Keep the result out of logs and status lines: see {@link redactUrl}.
 */
export function withJwt(url: string | URL, token: string | undefined | null): string {
  const u = new URL(url);
  u.searchParams.delete("jwt");
  if (token) u.searchParams.set("jwt", token);
  return u.toString();
}

/** The relay token in `url` (`?jwt=`), if any. */
export function jwtOf(url: string | URL): string | undefined {
  try {
    return new URL(url).searchParams.get("jwt") || undefined;
  } catch {
    return undefined;
  }
}

/**
 * `url` as it may be shown: without its query (which may hold the token) or fragment, and
 * without a trailing slash, like the Rust clients print relay URLs. Not a URL: the part
 * before any `?`, so a token in a malformed address is not shown either.
 */
export function redactUrl(url: string | URL): string {
  try {
    const u = new URL(url);
    u.search = "";
    u.hash = "";
    return u.toString().replace(/\/+$/, "");
  } catch {
    return String(url).split(/[?#]/)[0] ?? "";
  }
}

/** `text` with every occurrence of the token in `url` (raw or URL-encoded) replaced. */
export function scrubToken(text: string, url: string | URL): string {
  const token = jwtOf(url);
  if (!token) return text;
  let out = text;
  for (const t of new Set([token, encodeURIComponent(token), new URLSearchParams({ t: token }).toString().slice(2)])) {
    if (t) out = out.split(t).join("<redacted>");
  }
  return out;
}

/**
 * Connect to a relay once (no reconnection: see {@link Relay} for a session that survives a
 * relay restart). `relayUrl` is the relay's root with its auth path, e.g.
 * `http://127.0.0.1:4443/anon`, with `?jwt=TOKEN` if the relay checks tokens; for `http://`
 * development relays the library fetches `/certificate.sha256` and pins the self-signed
 * certificate itself.
 */
export function connect(relayUrl: string | URL, opts?: ConnectOptions): Promise<Connection> {
  return Moq.Connection.connect(new URL(relayUrl), opts);
}

/**
 * Split an xoq MoQ address into the relay root to connect to and the broadcast name, by the
 * rule the Rust code uses: the last path segment is the name, everything before it is the
 * relay root. `http://127.0.0.1:4443/anon/xoq-openarm` → relay `http://127.0.0.1:4443/anon`,
 * path `xoq-openarm`. A relay token (`?jwt=TOKEN`) stays on the relay URL; other query
 * parameters are dropped. Throws TypeError for anything that is not such an address (the
 * message never shows a token).
 */
export function splitAddress(address: string): { relay: string; path: string } {
  const input = address.trim();
  const shown = JSON.stringify(redactUrl(input));
  if (!input.startsWith("http://") && !input.startsWith("https://")) {
    throw new TypeError(`invalid address ${shown}: a MoQ address starts with http:// or https://`);
  }
  let url: URL;
  try {
    url = new URL(input);
  } catch {
    throw new TypeError(`invalid address ${shown}: not a URL`);
  }
  const path = url.pathname.replace(/^\/+|\/+$/g, "");
  if (path === "") {
    throw new TypeError(
      `invalid address ${shown}: add the broadcast path after the relay URL, e.g. http://127.0.0.1:4443/anon/xoq-serial`,
    );
  }
  const cut = path.lastIndexOf("/");
  const token = url.searchParams.get("jwt");
  url.pathname = cut < 0 ? "/" : `/${path.slice(0, cut)}`;
  url.search = "";
  url.hash = "";
  if (token) url.searchParams.set("jwt", token);
  return { relay: url.toString(), path: cut < 0 ? path : path.slice(cut + 1) };
}

// --- a relay session that reconnects -------------------------------------------------------

/** Where a {@link Relay}'s session stands. */
export type RelayState = "connecting" | "connected" | "reconnecting" | "closed";

/** Delays between reconnect attempts (ms): at once, then quickly, then every second. */
export const RECONNECT_BACKOFF_MS: readonly number[] = [0, 100, 250, 500, 1000];
/** Give up when no session could be made for this long (ms), unless told otherwise. */
export const RECONNECT_DEADLINE_MS = 60_000;
/** One connect attempt is abandoned after this long (ms). */
export const ATTEMPT_TIMEOUT_MS = 5000;
/** A session that ends sooner than this (ms) counts as a failed attempt (back-off goes on). */
export const HEALTHY_SESSION_MS = 1000;

/** Options of {@link Relay.start} and {@link Relay.connect}. */
export interface RelayOptions {
  /** Options for `@moq/net`'s connect (certificate pins, WebSocket fallback); not `signal`. */
  connect?: Omit<ConnectOptions, "signal">;
  /** Reconnect after the session drops (default true); false makes the first drop final. */
  reconnect?: boolean;
  /** Give up when the relay has been unreachable this long (ms, default 60 s). */
  deadlineMs?: number;
  /**
   * How long {@link Relay.connect} waits for the first session (ms; default: the deadline).
   * {@link Relay.start} keeps trying for as long as this too.
   */
  timeoutMs?: number;
  /** One connect attempt is abandoned after this long (ms, default 5 s). */
  attemptTimeoutMs?: number;
  /** Delays between attempts (default {@link RECONNECT_BACKOFF_MS}; the last one repeats). */
  backoffMs?: readonly number[];
}

/** The dispatched `state` event of a {@link Relay}. */
export class RelayStateEvent extends Event {
  readonly state: RelayState;
  /** Why it is not connected (never shows the token). */
  readonly reason: string | undefined;
  constructor(state: RelayState, reason?: string) {
    super("state");
    this.state = state;
    this.reason = reason;
  }
}

/** Counters of a {@link Relay}. */
export interface RelayCounters {
  /** Connect attempts made. */
  attempts: number;
  /** Sessions that dropped. */
  drops: number;
  /** Sessions re-established after a drop. */
  reconnects: number;
}

function errorText(e: unknown): string {
  // Racing transports (WebTransport, WebSocket) fail together: say why each did.
  if (e instanceof AggregateError && e.errors.length > 0) return [...new Set(e.errors.map(errorText))].join("; ");
  if (e instanceof Error) return e.message || e.name;
  return String(e);
}

/**
 * A session to a relay that comes back after the relay restarts or the network blips:
 * bounded back-off ({@link RECONNECT_BACKOFF_MS}) until {@link RelayOptions.deadlineMs}.
 * Broadcasts published here are published again on every new session, and the handles of
 * {@link announcedBroadcast} follow the session, so readers and writers built on it survive
 * a reconnect. Dispatches `state` events ({@link RelayStateEvent}).
 *
 * Built on `@moq/net`'s `connect` and its reactive `Announce.Broadcast`; `@moq/net`'s own
 * `Connection.Reload` reconnects too, but with jittered exponential delays (no immediate
 * first retry), without the failure's reason, and without carrying publications over.
 */
export class Relay extends EventTarget {
  /** The relay URL as it may be shown (no token). */
  readonly url: string;
  /** Whether a token (`?jwt=`) is presented to the relay. */
  readonly hasToken: boolean;
  readonly counters: RelayCounters = { attempts: 0, drops: 0, reconnects: 0 };
  /** The live session, or undefined while (re)connecting: what announcement handles follow. */
  readonly established = new Moq.Signals.Signal<Connection | undefined>(undefined);
  /** Resolves with the reason once the relay is closed for good (by close() or giving up). */
  readonly closed: Promise<string>;
  #dial: string;
  #opts: RelayOptions;
  #state: RelayState = "connecting";
  #reason: string | undefined = "connecting";
  #everConnected = false;
  /** What is published on every session: the tracks, and the broadcast of the current one. */
  #pubs = new Map<string, { tracks: Moq.Track.Producer[]; current: Moq.Broadcast.Producer | undefined }>();
  #closing = false;
  #closedResolve!: (reason: string) => void;
  #stop!: () => void;
  #stopped: Promise<void>;
  #attempt: AbortController | undefined;
  #fixed: boolean;

  private constructor(url: string | URL, opts: RelayOptions, fixed?: Connection) {
    super();
    this.#dial = new URL(url).toString();
    this.url = redactUrl(url);
    this.hasToken = jwtOf(url) !== undefined;
    this.#opts = opts;
    this.#fixed = fixed !== undefined;
    this.closed = new Promise((resolve) => (this.#closedResolve = resolve));
    this.#stopped = new Promise((resolve) => (this.#stop = resolve));
    if (fixed) {
      this.established.set(fixed);
      this.#state = "connected";
      this.#reason = undefined;
      this.#everConnected = true;
      void fixed.closed.catch(() => {}).then(() => {
        this.established.set(undefined);
        this.#finish("the relay session ended");
      });
    } else {
      void this.#run();
    }
  }

  /**
   * Start a session to `relayUrl` (with `?jwt=TOKEN` if the relay checks tokens) and return at
   * once; it connects, and reconnects, in the background. Watch `state` events, or await
   * {@link waitConnected}.
   */
  static start(relayUrl: string | URL, opts: RelayOptions = {}): Relay {
    return new Relay(relayUrl, opts);
  }

  /**
   * Start a session and wait for it: rejects (and closes the relay) when no session could be
   * made within `opts.timeoutMs` (default: the reconnect deadline), with the last failure.
   */
  static async connect(relayUrl: string | URL, opts: RelayOptions = {}): Promise<Relay> {
    const r = new Relay(relayUrl, opts);
    if (await r.waitConnected(opts.timeoutMs ?? opts.deadlineMs ?? RECONNECT_DEADLINE_MS)) return r;
    const why = r.reason ?? "closed";
    r.close();
    throw new Error(why.startsWith("cannot reach") ? why : `cannot reach the relay at ${r.url}: ${why}`);
  }

  /** Use an established session as a relay that does not reconnect (closed when it ends). */
  static wrap(conn: Connection): Relay {
    return new Relay(conn.url, { reconnect: false }, conn);
  }

  /** The current state. */
  get state(): RelayState {
    return this.#state;
  }
  /** Why it is not connected (undefined while connected; never shows the token). */
  get reason(): string | undefined {
    return this.#reason;
  }
  /** The live session, if any. */
  get connection(): Connection | undefined {
    return this.established.peek();
  }

  #set(state: RelayState, reason?: string): void {
    if (this.#state === "closed") return;
    if (state === this.#state && reason === this.#reason) return;
    if (state === "connected" && this.#state === "reconnecting") this.counters.reconnects++;
    if (state === "reconnecting" && this.#state === "connected") this.counters.drops++;
    this.#state = state;
    this.#reason = state === "connected" ? undefined : reason;
    this.dispatchEvent(new RelayStateEvent(state, this.#reason));
  }

  #finish(reason: string): void {
    if (this.#state === "closed") return;
    this.#state = "closed";
    this.#reason = reason;
    this.dispatchEvent(new RelayStateEvent("closed", reason));
    this.#closedResolve(reason);
  }

  #scrub(e: unknown): string {
    return scrubToken(errorText(e).split(this.#dial).join(this.url), this.#dial);
  }

  async #sleep(ms: number): Promise<void> {
    if (ms <= 0) return;
    let timer: ReturnType<typeof setTimeout> | undefined;
    await Promise.race([new Promise<void>((r) => (timer = setTimeout(r, ms))), this.#stopped]);
    clearTimeout(timer);
  }

  async #run(): Promise<void> {
    const backoff = this.#opts.backoffMs?.length ? this.#opts.backoffMs : RECONNECT_BACKOFF_MS;
    const deadline = this.#opts.deadlineMs ?? RECONNECT_DEADLINE_MS;
    const first = this.#opts.timeoutMs ?? deadline;
    const attemptMs = this.#opts.attemptTimeoutMs ?? ATTEMPT_TIMEOUT_MS;
    let failures = 0;
    let downSince = performance.now();
    let last = "";
    for (;;) {
      if (this.#closing) return;
      if (failures > 0) {
        const limit = this.#everConnected ? deadline : first;
        const down = performance.now() - downSince;
        if (this.#opts.reconnect === false || down >= limit) {
          this.#finish(
            `cannot reach the relay at ${this.url}${this.#opts.reconnect === false ? "" : ` (gave up after ${(down / 1000).toFixed(1)} s)`}: ${last}`,
          );
          return;
        }
        await this.#sleep(Math.min(backoff[Math.min(failures - 1, backoff.length - 1)] ?? 1000, limit - down));
        if (this.#closing) return;
      }
      this.counters.attempts++;
      const ac = new AbortController();
      this.#attempt = ac;
      const timer = setTimeout(() => ac.abort(new Error(`no answer within ${attemptMs / 1000} s`)), attemptMs);
      let conn: Connection;
      try {
        conn = await Moq.Connection.connect(new URL(this.#dial), { ...this.#opts.connect, signal: ac.signal });
      } catch (e) {
        failures++;
        last = this.#scrub(e);
        if (this.hasToken && !this.#everConnected) last += " (if the relay checks tokens, is the ?jwt= token valid and allowed on this path?)";
        this.#set(this.counters.drops > 0 ? "reconnecting" : "connecting", `cannot reach the relay at ${this.url}: ${last}`);
        continue;
      } finally {
        clearTimeout(timer);
        this.#attempt = undefined;
      }
      if (this.#closing) {
        conn.close();
        return;
      }
      for (const [path, entry] of this.#pubs) this.#publishOn(conn, path, entry);
      const since = performance.now();
      this.established.set(conn);
      this.#set("connected");
      await Promise.race([conn.closed.catch(() => {}), this.#stopped]);
      this.established.set(undefined);
      conn.close();
      if (this.#closing) return;
      if (performance.now() - since >= HEALTHY_SESSION_MS) {
        // A session that lived was healthy: retry at once, with a fresh deadline.
        this.#everConnected = true;
        failures = 0;
        downSince = performance.now();
        last = "the session to the relay dropped";
      } else {
        // A relay that accepts and closes at once (it refused the token, say) is a failed
        // attempt: keep backing off, or it would be hammered.
        failures++;
        last = `the relay at ${this.url} closed the session right after it opened${this.hasToken ? " (does it accept the ?jwt= token for this path?)" : ""}`;
      }
      if (this.#opts.reconnect === false) {
        this.#finish(`${last} (${this.url})`);
        return;
      }
      this.#set("reconnecting", last);
    }
  }

  // @moq/net closes every broadcast published on a session when the session ends, so each
  // session gets a broadcast of its own, holding the same (long-lived) tracks.
  #publishOn(conn: Connection, path: string, entry: { tracks: Moq.Track.Producer[]; current: Moq.Broadcast.Producer | undefined }): void {
    const bc = new Moq.Broadcast.Producer();
    for (const t of entry.tracks) if (t.closed.peek() === undefined) bc.insertTrack(t);
    entry.current?.close();
    entry.current = bc;
    conn.publish(Moq.Path.from(path), bc);
  }

  /**
   * Publish a broadcast named `path` (relative to the relay root) holding `tracks`, on this
   * session and on every later one: the tracks live on across reconnects (their groups
   * continue), each session gets a broadcast of its own. `close()` the result to retract it
   * (the tracks stay open: close them yourself).
   */
  publish(path: string, tracks: readonly Moq.Track.Producer[]): { close(): void } {
    const entry = { tracks: [...tracks], current: undefined as Moq.Broadcast.Producer | undefined };
    this.#pubs.get(path)?.current?.close();
    this.#pubs.set(path, entry);
    const conn = this.established.peek();
    if (conn) this.#publishOn(conn, path, entry);
    return {
      close: () => {
        if (this.#pubs.get(path) === entry) this.#pubs.delete(path);
        entry.current?.close();
        entry.current = undefined;
      },
    };
  }

  /**
   * A handle on broadcast `path` that follows the session: `active` holds the broadcast while
   * it is announced on the live session, `undefined` otherwise. Close it when done.
   */
  announcedBroadcast(path: string): Moq.Announce.Broadcast {
    if (this.#fixed) {
      const conn = this.established.peek();
      if (conn) return conn.announcedBroadcast(Moq.Path.from(path));
    }
    return new Moq.Announce.Broadcast({ connection: this.established, path: Moq.Path.from(path) });
  }

  /** Resolve `true` once connected, `false` once closed or after `ms` (if given). */
  waitConnected(ms?: number): Promise<boolean> {
    if (this.#state === "connected") return Promise.resolve(true);
    if (this.#state === "closed") return Promise.resolve(false);
    return new Promise((resolve) => {
      let timer: ReturnType<typeof setTimeout> | undefined;
      const done = (v: boolean): void => {
        clearTimeout(timer);
        this.removeEventListener("state", on);
        resolve(v);
      };
      const on = (): void => {
        if (this.#state === "connected") done(true);
        else if (this.#state === "closed") done(false);
      };
      this.addEventListener("state", on);
      if (ms !== undefined) timer = setTimeout(() => done(this.#state === "connected"), Math.max(0, ms));
    });
  }

  /** Close the session and stop reconnecting. Idempotent. */
  close(): void {
    if (this.#closing) return;
    this.#closing = true;
    this.#stop();
    this.#attempt?.abort(new Error("closed"));
    const conn = this.established.peek();
    this.established.set(undefined);
    conn?.close();
    this.#finish("closed");
  }
}

// --- tracks --------------------------------------------------------------------------------

/**
 * Writes an ordered byte stream to one track with the Rust writer's group rules: frames go
 * into the current group, which is closed and replaced after {@link GROUP_IDLE_MS} without
 * writes or {@link GROUP_MAX_FRAMES} frames. Readers take groups in order, so bytes stay in
 * order, and a late reader starts at the current group rather than at old history.
 */
export class TrackWriter {
  /** The underlying track, for what this class does not cover (e.g. watching demand). */
  readonly track: Moq.Track.Producer;
  #group: Moq.Group.Producer | undefined;
  #frames = 0;
  #last = 0;

  /** Wrap a track producer (see {@link publishTrack} for creating one). */
  constructor(track: Moq.Track.Producer) {
    this.track = track;
  }

  /**
   * Append one frame (copied: the caller may reuse its buffer). `newGroup` starts a new group
   * first, for frames that mark a point in the stream (the relay session's Sync).
   */
  write(payload: Uint8Array, newGroup = false): void {
    const now = performance.now();
    if (this.#group && (newGroup || this.#frames >= GROUP_MAX_FRAMES || now - this.#last >= GROUP_IDLE_MS)) {
      this.#group.close();
      this.#group = undefined;
    }
    if (!this.#group) {
      this.#group = this.track.appendGroup();
      this.#frames = 0;
    }
    this.#group.writeFrame({ payload: payload.slice(), timestamp: Moq.Time.Timestamp.now() });
    this.#frames++;
    this.#last = now;
  }

  /** Whether a subscriber (the server, through the relay) currently reads this track. */
  get used(): boolean {
    return this.track.used.peek();
  }

  /** Resolve once someone subscribes, or after `ms`; returns whether someone did. */
  async waitUsed(ms: number): Promise<boolean> {
    if (this.used) return true;
    let timer: ReturnType<typeof setTimeout> | undefined;
    let dispose: (() => void) | undefined;
    try {
      return await new Promise<boolean>((resolve) => {
        timer = setTimeout(() => resolve(false), ms);
        dispose = this.track.used.subscribe((u) => {
          if (u) resolve(true);
        });
      });
    } finally {
      clearTimeout(timer);
      dispose?.();
    }
  }

  /** End the track: close the open group, then the track. */
  close(): void {
    this.#group?.close();
    this.#group = undefined;
    this.track.close();
  }
}

/**
 * Publish broadcast `name` with one data track, returning its writer and the publication
 * (close both when done). The track keeps groups {@link MAX_AGE_MS} and asks for in-order
 * delivery. On a {@link Relay}, it is published again on every new session, with the same
 * track (its groups continue).
 */
export function publishTrack(
  on: Connection | Relay,
  name: string,
  track = DATA_TRACK,
): { broadcast: { close(): void }; writer: TrackWriter } {
  const producer = new Moq.Track.Producer(track).accept({ latencyMax: MAX_AGE_MS, ordered: true });
  if (on instanceof Relay) return { broadcast: on.publish(name, [producer]), writer: new TrackWriter(producer) };
  const broadcast = new Moq.Broadcast.Producer();
  broadcast.insertTrack(producer);
  on.publish(Moq.Path.from(name), broadcast);
  return { broadcast, writer: new TrackWriter(producer) };
}

const CLOSED: unique symbol = Symbol("closed");
const TIMEOUT: unique symbol = Symbol("timeout");
const MOVED: unique symbol = Symbol("moved");

// Race `p` against a timer that is always cleared, so no stray timer keeps Node alive.
export async function timeout<T>(p: Promise<T>, ms: number): Promise<T | typeof TIMEOUT> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  try {
    return await Promise.race([p, new Promise<typeof TIMEOUT>((resolve) => (timer = setTimeout(() => resolve(TIMEOUT), ms)))]);
  } finally {
    clearTimeout(timer);
  }
}
export { TIMEOUT };

/** What a {@link TrackReader} reports: a frame with its group, or its publisher going and coming. */
export type ReaderEvent =
  | { kind: "frame"; group: number; payload: Uint8Array }
  /** The subscription ended: the publisher went away, or the relay session dropped. */
  | { kind: "gone" }
  /** Subscribed again after `gone` (a new publisher, or the same one over a new session). */
  | { kind: "back" };

/**
 * Reads the frames of one track of a named broadcast in order, group after group, waiting
 * for the broadcast to be announced and subscribing again when its publisher goes away and
 * comes back (a restarted server) or the relay session is re-established (on a
 * {@link Relay}), like the Rust `TrackReader`.
 */
export class TrackReader {
  /** Broadcast name relative to the relay root, e.g. `xoq-openarm/state`. */
  readonly name: string;
  /** Track name within the broadcast. */
  readonly trackName: string;
  #handle: Moq.Announce.Broadcast;
  #ownsHandle: boolean;
  #sub: Moq.Track.Subscriber | undefined;
  #subOn: Moq.Broadcast.Consumer | undefined;
  #moved: Promise<typeof MOVED> | undefined;
  #disposeMoved: (() => void) | undefined;
  #group: Moq.Group.Consumer | undefined;
  #lost = false;
  #closed = false;
  #closing: Promise<typeof CLOSED>;
  #close!: () => void;

  /**
   * Follow `track` of broadcast `name` on `source`: a {@link Relay} (follows reconnects), a
   * fixed session, or an announcement handle shared with other readers (not closed by this
   * reader). Nothing is subscribed until the first read.
   */
  constructor(source: Relay | Connection | Moq.Announce.Broadcast, name: string, track = DATA_TRACK) {
    this.name = name;
    this.trackName = track;
    if (source instanceof Moq.Announce.Broadcast) {
      this.#handle = source;
      this.#ownsHandle = false;
    } else {
      this.#handle = source instanceof Relay ? source.announcedBroadcast(name) : source.announcedBroadcast(Moq.Path.from(name));
      this.#ownsHandle = true;
    }
    this.#closing = new Promise((resolve) => {
      this.#close = () => resolve(CLOSED);
    });
  }

  /**
   * Resolve once the broadcast is announced and subscribed (immediately if it is). Resolves
   * `false` if the reader was closed first. It waits for as long as it takes: callers bound
   * it with their own timeout.
   */
  async ready(): Promise<boolean> {
    return this.#sub !== undefined || (await this.#subscribe());
  }

  // Resolves when the handle's broadcast is no longer `bc` (gone, or replaced by a new one).
  #watchMoved(bc: Moq.Broadcast.Consumer): void {
    this.#disposeMoved?.();
    this.#moved = new Promise((resolve) => {
      if (this.#handle.active.peek() !== bc) return resolve(MOVED);
      const dispose = this.#handle.active.subscribe((v) => {
        if (v !== bc) {
          dispose();
          resolve(MOVED);
        }
      });
      this.#disposeMoved = dispose;
    });
  }

  // Wait for an announced broadcast and subscribe to the track; false once closed.
  async #subscribe(): Promise<boolean> {
    for (;;) {
      if (this.#closed) return false;
      const bc = this.#handle.active.peek();
      if (bc === undefined) {
        await Promise.race([this.#handle.active.changed(), this.#closing]);
        continue;
      }
      const sub = bc.subscribe(this.trackName, { latencyMax: MAX_AGE_MS, ordered: true });
      try {
        // Track info is the first answer from the far side: it marks the subscription live.
        if ((await Promise.race([sub.info(), this.#closing])) === CLOSED) {
          sub.close();
          return false;
        }
      } catch {
        sub.close();
        await this.#backoff(bc);
        continue;
      }
      this.#sub = sub;
      this.#subOn = bc;
      this.#watchMoved(bc);
      return true;
    }
  }

  // After a failed or ended subscription: wait until the announcement changes (a new
  // publisher) or a short while, so a broadcast that stays announced is not hammered.
  async #backoff(bc: Moq.Broadcast.Consumer | undefined): Promise<void> {
    if (this.#handle.active.peek() !== bc) return;
    await timeout(Promise.race([this.#handle.active.changed(), this.#closing]), 500);
  }

  #dropSub(): void {
    this.#group?.close();
    this.#group = undefined;
    this.#sub?.close();
    this.#sub = undefined;
    this.#subOn = undefined;
    this.#disposeMoved?.();
    this.#disposeMoved = undefined;
    this.#moved = undefined;
  }

  async #read(): Promise<ReaderEvent | undefined> {
    for (;;) {
      if (this.#closed) return undefined;
      const group = this.#group;
      if (group && this.#sub) {
        let frame: Moq.Group.Frame | undefined | typeof CLOSED | typeof MOVED;
        try {
          frame = await Promise.race([group.readFrame(), this.#closing, this.#moved ?? this.#closing]);
        } catch {
          // A group the publisher aborted or that we lagged behind: go on with the next.
          frame = undefined;
        }
        if (frame === CLOSED) return undefined;
        if (frame === MOVED) {
          this.#dropSub();
          if (!this.#lost) {
            this.#lost = true;
            return { kind: "gone" };
          }
          continue;
        }
        if (frame) return { kind: "frame", group: group.sequence, payload: frame.payload.slice() };
        this.#group = undefined;
        continue;
      }
      if (!this.#sub) {
        const before = this.#lost;
        if (!(await this.#subscribe())) return undefined;
        if (before) {
          this.#lost = false;
          return { kind: "back" };
        }
        continue;
      }
      const sub = this.#sub;
      let next: Moq.Group.Consumer | undefined | typeof CLOSED | typeof MOVED;
      try {
        next = await Promise.race([sub.recvGroup(), this.#closing, this.#moved ?? this.#closing]);
      } catch {
        next = undefined;
      }
      if (next === CLOSED) return undefined;
      if (next && next !== MOVED) {
        this.#group = next;
        continue;
      }
      // The track ended or the broadcast moved: the publisher went away (or the session).
      const bc = this.#subOn;
      this.#dropSub();
      if (!this.#lost) {
        this.#lost = true;
        if (next !== MOVED) await this.#backoff(bc);
        return { kind: "gone" };
      }
      if (next !== MOVED) await this.#backoff(bc);
    }
  }

  /**
   * The next event: a frame (a copy, with its group's sequence), or `gone`/`back` when the
   * publisher goes away and returns; `undefined` once the reader is closed. One caller at a
   * time.
   */
  nextEvent(): Promise<ReaderEvent | undefined> {
    return this.#read();
  }

  /**
   * Next frame payload (a copy), or `undefined` once the reader is closed. Waits, possibly
   * forever, for a publisher. One caller at a time: frames are not duplicated.
   */
  async next(): Promise<Uint8Array | undefined> {
    for (;;) {
      const ev = await this.nextEvent();
      if (ev === undefined) return undefined;
      if (ev.kind === "frame") return ev.payload;
    }
  }

  /** Stop reading: pending and later reads resolve `undefined`. Idempotent. */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    this.#close();
    this.#dropSub();
    if (this.#ownsHandle) this.#handle.close();
  }
}

/**
 * A bounded queue between a background reader and the application: items wait here until
 * `recv` takes them, so a read that times out loses nothing, and a consumer that falls
 * behind costs the oldest items (counted in `dropped`) rather than unbounded memory.
 */
export class Inbox<T> {
  /** Weight (items, or bytes with a custom `weigh`) dropped because the inbox was full. */
  dropped = 0;
  /** Most weight held before the oldest items are dropped. */
  readonly limit: number;
  readonly #weigh: (item: T) => number;
  #items: T[] = [];
  #head = 0;
  #weight = 0;
  #waiters: ((item: T | undefined) => void)[] = [];
  #ended = false;

  /** Hold at most `limit` weight; each item weighs 1 unless `weigh` says otherwise. */
  constructor(limit: number, weigh: (item: T) => number = () => 1) {
    this.limit = limit;
    this.#weigh = weigh;
  }

  /** Add an item: straight to a waiting `recv`, else queued (dropping the oldest if full). */
  push(item: T): void {
    if (this.#ended) return;
    const waiter = this.#waiters.shift();
    if (waiter) return waiter(item);
    this.#items.push(item);
    this.#weight += this.#weigh(item);
    while (this.#weight > this.limit && this.#head < this.#items.length) {
      const old = this.#items[this.#head] as T;
      this.#items[this.#head++] = undefined as T;
      const w = this.#weigh(old);
      this.#weight -= w;
      this.dropped += w;
    }
    if (this.#head > 1024 && this.#head * 2 > this.#items.length) {
      this.#items = this.#items.slice(this.#head);
      this.#head = 0;
    }
  }

  /** No more items will come: waiting and later `recv` calls resolve `undefined` once drained. */
  end(): void {
    this.#ended = true;
    for (const w of this.#waiters.splice(0)) w(undefined);
  }

  /** Whether `end` was called. */
  get ended(): boolean {
    return this.#ended;
  }

  /** Number of queued items. */
  get size(): number {
    return this.#items.length - this.#head;
  }

  /** Take the next item now, or `undefined` if none is queued. */
  tryRecv(): T | undefined {
    if (this.#head >= this.#items.length) return undefined;
    const item = this.#items[this.#head] as T;
    this.#items[this.#head++] = undefined as T;
    this.#weight -= this.#weigh(item);
    return item;
  }

  /**
   * The next item; `undefined` after `timeoutMs` (if given) or once ended and drained. A
   * timed-out call leaves the queue untouched, so nothing is lost.
   */
  recv(timeoutMs?: number): Promise<T | undefined> {
    if (this.size > 0) return Promise.resolve(this.tryRecv());
    if (this.#ended) return Promise.resolve(undefined);
    return new Promise((resolve) => {
      let timer: ReturnType<typeof setTimeout> | undefined;
      const waiter = (item: T | undefined): void => {
        clearTimeout(timer);
        resolve(item);
      };
      this.#waiters.push(waiter);
      if (timeoutMs !== undefined) {
        timer = setTimeout(() => {
          const i = this.#waiters.indexOf(waiter);
          if (i >= 0) this.#waiters.splice(i, 1);
          resolve(undefined);
        }, Math.max(0, timeoutMs));
      }
    });
  }

  /** Iterate until ended; leaving a for-await loop early does not end the inbox. */
  [Symbol.asyncIterator](): AsyncIterator<T> {
    return {
      next: async (): Promise<IteratorResult<T>> => {
        const item = await this.recv();
        return item === undefined ? { done: true, value: undefined } : { done: false, value: item };
      },
      return: async (): Promise<IteratorResult<T>> => ({ done: true, value: undefined }),
    };
  }
}


/**
 * A fresh name for this client's own writer broadcast (`{path}/cmd/<id>`, `{path}/c2s/<id>`):
 * 16 hex digits. The server reads every writer under the path, so clients never compete for
 * one name; a client keeps its name across reconnects.
 */
export function writerId(): string {
  const b = new Uint8Array(8);
  globalThis.crypto.getRandomValues(b);
  return Array.from(b, (x) => x.toString(16).padStart(2, "0")).join("");
}
