// MoQ plumbing shared by the serial and CAN clients: connecting to a relay, splitting xoq
// addresses, and byte-stream tracks with the same group rules as the Rust side
// (crates/xoq-transport/src/moq.rs), so browser and Rust peers interoperate.

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

/**
 * Connect to a relay. `relayUrl` is the relay's root with its auth path, e.g.
 * `http://127.0.0.1:4443/anon`; for `http://` development relays the library fetches
 * `/certificate.sha256` and pins the self-signed certificate itself.
 */
export function connect(relayUrl: string | URL, opts?: ConnectOptions): Promise<Connection> {
  return Moq.Connection.connect(new URL(relayUrl), opts);
}

/**
 * Split an xoq MoQ address into the relay root to connect to and the broadcast name, by the
 * rule the Rust code uses: the last path segment is the name, everything before it is the
 * relay root. `http://127.0.0.1:4443/anon/xoq-openarm` → relay `http://127.0.0.1:4443/anon`,
 * path `xoq-openarm`. Throws TypeError for anything that is not such an address.
 */
export function splitAddress(address: string): { relay: string; path: string } {
  const input = address.trim();
  if (!input.startsWith("http://") && !input.startsWith("https://")) {
    throw new TypeError(`invalid address ${JSON.stringify(address)}: a MoQ address starts with http:// or https://`);
  }
  let url: URL;
  try {
    url = new URL(input);
  } catch {
    throw new TypeError(`invalid address ${JSON.stringify(address)}: not a URL`);
  }
  const path = url.pathname.replace(/^\/+|\/+$/g, "");
  if (path === "") {
    throw new TypeError(
      `invalid address ${JSON.stringify(address)}: add the broadcast path after the relay URL, e.g. http://127.0.0.1:4443/anon/xoq-serial`,
    );
  }
  const cut = path.lastIndexOf("/");
  url.pathname = cut < 0 ? "/" : `/${path.slice(0, cut)}`;
  url.search = "";
  url.hash = "";
  return { relay: url.toString(), path: cut < 0 ? path : path.slice(cut + 1) };
}

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

  /** Append one frame (copied: the caller may reuse its buffer). */
  write(payload: Uint8Array): void {
    const now = performance.now();
    if (this.#group && (this.#frames >= GROUP_MAX_FRAMES || now - this.#last >= GROUP_IDLE_MS)) {
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
 * Publish broadcast `name` with one data track, returning its writer and the broadcast (close
 * both when done). The track keeps groups {@link MAX_AGE_MS} and asks for in-order delivery.
 */
export function publishTrack(
  conn: Connection,
  name: string,
  track = DATA_TRACK,
): { broadcast: Moq.Broadcast.Producer; writer: TrackWriter } {
  const broadcast = new Moq.Broadcast.Producer();
  const producer = broadcast.createTrack(track, { latencyMax: MAX_AGE_MS, ordered: true });
  conn.publish(Moq.Path.from(name), broadcast);
  return { broadcast, writer: new TrackWriter(producer) };
}

const CLOSED: unique symbol = Symbol("closed");
const TIMEOUT: unique symbol = Symbol("timeout");

// Race `p` against a timer that is always cleared, so no stray timer keeps Node alive.
async function timeout<T>(p: Promise<T>, ms: number): Promise<T | typeof TIMEOUT> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  try {
    return await Promise.race([p, new Promise<typeof TIMEOUT>((resolve) => (timer = setTimeout(() => resolve(TIMEOUT), ms)))]);
  } finally {
    clearTimeout(timer);
  }
}

/**
 * Reads the frames of one track of a named broadcast in order, group after group, waiting
 * for the broadcast to be announced and subscribing again when its publisher goes away and
 * comes back (a restarted server), like the Rust `TrackReader`.
 */
export class TrackReader {
  /** Broadcast name relative to the relay root, e.g. `xoq-openarm/state`. */
  readonly name: string;
  /** Track name within the broadcast. */
  readonly trackName: string;
  #handle: Moq.Announce.Broadcast;
  #sub: Moq.Track.Subscriber | undefined;
  #group: Moq.Group.Consumer | undefined;
  #pending: Promise<Uint8Array | undefined> | undefined;
  #closed = false;
  #closing: Promise<typeof CLOSED>;
  #close!: () => void;
  #subscribeMs = 0;

  /** Follow `track` of broadcast `name` on `conn`; nothing is subscribed until the first read. */
  constructor(conn: Connection, name: string, track = DATA_TRACK) {
    this.name = name;
    this.trackName = track;
    this.#handle = conn.announcedBroadcast(Moq.Path.from(name));
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

  // Wait for an announced broadcast and subscribe to the track; false once closed.
  async #subscribe(): Promise<boolean> {
    for (;;) {
      if (this.#closed) return false;
      const bc = this.#handle.active.peek();
      if (bc === undefined) {
        await Promise.race([this.#handle.active.changed(), this.#closing]);
        continue;
      }
      const started = performance.now();
      const sub = bc.subscribe(this.trackName, { latencyMax: MAX_AGE_MS, ordered: true });
      try {
        // Track info is the first answer from the far side, so it marks the subscription as
        // live and measures the round trip the backlog will take to arrive.
        if ((await Promise.race([sub.info(), this.#closing])) === CLOSED) {
          sub.close();
          return false;
        }
      } catch {
        sub.close();
        await this.#backoff(bc);
        continue;
      }
      this.#subscribeMs = performance.now() - started;
      this.#sub = sub;
      return true;
    }
  }

  // After a failed or ended subscription: wait until the announcement changes (a new
  // publisher) or a short while, so a broadcast that stays announced is not hammered.
  async #backoff(bc: Moq.Broadcast.Consumer | undefined): Promise<void> {
    if (this.#handle.active.peek() !== bc) return;
    await timeout(Promise.race([this.#handle.active.changed(), this.#closing]), 500);
  }

  async #read(): Promise<Uint8Array | undefined> {
    for (;;) {
      if (this.#closed) return undefined;
      if (this.#group) {
        let frame: Moq.Group.Frame | undefined | typeof CLOSED;
        try {
          frame = await Promise.race([this.#group.readFrame(), this.#closing]);
        } catch {
          // A group the publisher aborted or that we lagged behind: go on with the next.
          frame = undefined;
        }
        if (frame === CLOSED) return undefined;
        if (frame) return frame.payload.slice();
        this.#group = undefined;
        continue;
      }
      if (!this.#sub && !(await this.#subscribe())) return undefined;
      const sub = this.#sub;
      if (!sub) continue;
      let group: Moq.Group.Consumer | undefined | typeof CLOSED;
      try {
        group = await Promise.race([sub.recvGroup(), this.#closing]);
      } catch {
        group = undefined;
      }
      if (group === CLOSED) return undefined;
      if (group) {
        this.#group = group;
        continue;
      }
      // The track ended: the publisher went away. Look for the next announcement.
      sub.close();
      this.#sub = undefined;
      await this.#backoff(this.#handle.active.peek());
    }
  }

  /**
   * Next frame payload (a copy), or `undefined` once the reader is closed. Waits, possibly
   * forever, for a publisher. One caller at a time: frames are not duplicated.
   */
  next(): Promise<Uint8Array | undefined> {
    const p = this.#pending ?? this.#read();
    this.#pending = undefined;
    return p;
  }

  /**
   * Discard what the relay replays right after subscribing: the current group from its
   * start, i.e. data sent before this reader existed. It arrives as one burst, but only
   * after the relay has set the subscription up (possibly subscribing upstream to the
   * server), which nothing in the API reports. So wait a while for a first frame (100 ms
   * plus four subscription round trips, at most 1 s), then drop frames until a quiet gap
   * (20 ms plus two round trips, at most 200 ms), stopping after 500 ms more in any case.
   * Returns the number of frames discarded. A quiet bus pays the first wait once at open.
   */
  async skipBacklog(): Promise<number> {
    if (!(await this.ready())) return 0;
    const rtt = this.#subscribeMs;
    const first = Math.min(1000, 100 + 4 * rtt);
    const gap = Math.min(200, 20 + 2 * rtt);
    let deadline = performance.now() + first;
    let skipped = 0;
    for (;;) {
      const left = Math.min(skipped === 0 ? first : gap, deadline - performance.now());
      if (left <= 0) break;
      // Keep the read in flight across the timeout, so a frame that lands just after the
      // wait is returned by the next next() instead of being lost.
      const read = this.#pending ?? this.#read();
      this.#pending = read;
      const r = await timeout(read, left);
      if (r === TIMEOUT) break;
      this.#pending = undefined;
      if (r === undefined) break;
      if (skipped === 0) deadline = performance.now() + 500;
      skipped++;
    }
    return skipped;
  }

  /** Stop reading: pending and later next() calls resolve `undefined`. Idempotent. */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    this.#close();
    this.#group?.close();
    this.#sub?.close();
    this.#handle.close();
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

/** Options of {@link openSerial} and {@link openCan}. */
export interface OpenOptions {
  /** Reuse this session (it stays open on close()); otherwise one is opened and owned. */
  connection?: Connection;
  /** Options for the session opened when `connection` is not given. */
  connect?: ConnectOptions;
  /** How long to wait for the server's broadcast before failing (ms, default 5000). */
  timeoutMs?: number;
}

/**
 * How long opening a serial port or CAN bus waits for the server to subscribe to this
 * client's writer broadcast: frames written before that are not delivered. The same bound as
 * the Rust client; a busy machine can take over a second.
 */
export const WRITER_SUBSCRIBE_WAIT_MS = 3000;

/**
 * A fresh name for this client's own writer broadcast (`{path}/cmd/<id>`, `{path}/c2s/<id>`):
 * the server reads every writer under the path, so clients never compete for one name.
 */
export function writerId(): string {
  const b = new Uint8Array(8);
  globalThis.crypto.getRandomValues(b);
  return Array.from(b, (x) => x.toString(16).padStart(2, "0")).join("");
}

/**
 * Connect (or reuse a session), publish this client's own writer `{writerBase}/<writer id>`
 * and subscribe to the server's track,
 * the steps both clients share. Fails with a message naming the missing server after
 * `timeoutMs`; on failure everything opened here is closed again.
 */
export async function openPair(
  relayUrl: string | URL,
  writerBase: string,
  readName: string,
  opts: OpenOptions,
  missing: string,
): Promise<{ conn: Connection; owned: boolean; broadcast: Moq.Broadcast.Producer; writer: TrackWriter; reader: TrackReader }> {
  const owned = opts.connection === undefined;
  const conn = opts.connection ?? (await connect(relayUrl, opts.connect));
  let pub: ReturnType<typeof publishTrack> | undefined;
  let reader: TrackReader | undefined;
  try {
    // Every client writes on its own broadcast under the path; the server reads them all.
    pub = publishTrack(conn, `${writerBase}/${writerId()}`);
    reader = new TrackReader(conn, readName);
    const timeoutMs = opts.timeoutMs ?? 5000;
    if ((await timeout(reader.ready(), timeoutMs)) !== true) {
      throw new Error(`${missing} (nothing published ${readName} on ${String(relayUrl)} within ${timeoutMs} ms)`);
    }
    await reader.skipBacklog();
    // Give the server a moment to subscribe to our track, so the first write is not
    // published before anyone listens. A server that never reads (--moq-cmd off) is fine.
    await pub.writer.waitUsed(WRITER_SUBSCRIBE_WAIT_MS);
    return { conn, owned, broadcast: pub.broadcast, writer: pub.writer, reader };
  } catch (e) {
    reader?.close();
    pub?.writer.close();
    pub?.broadcast.close();
    if (owned) conn.close();
    throw e;
  }
}
