// The client side of the relay session protocol (docs/protocol.md, "Relay session protocol"),
// shared by the serial and CAN clients, without I/O: the tracks, the relay connection and the
// timers are driven from outside (src/peer.ts in the clients, an in-memory fake in the tests).
// It mirrors crates/xoq-client/src/relay.rs.
//
// - The server subscribes to this client's writer and says Hello(nonce); the client answers
//   Sync(nonce) in a new group of its writer track. The server drops everything the writer
//   wrote before it (a relay's replay of old commands never reaches the device).
// - The server answers Synced(data_group): data groups older than that are the relay's
//   backlog and are dropped; data that arrived before Synced waits (bounded) for it.
// - A new Hello (new nonce), the server's broadcast going away or the relay session dropping
//   take the link down until the next Synced.
// - No Hello within `syncWaitMs`: the relay did not let this client publish (or the server is
//   older); the client reads from the next group on and refuses writes with that explanation.

import { type Ctl, ctlWriter, dataFrame, decodeCtl, encodeWriterMsg } from "./relay.js";
import { CodecError } from "./can.js";

/** Where a client's link stands. */
export type LinkState = "connecting" | "connected" | "reconnecting" | "closed";

/** Counters of a link (all monotonic). */
export interface LinkCounters {
  /** Times the link went down after being up. */
  drops: number;
  /** Times it came back up after a drop. */
  reconnects: number;
  /** Syncs completed (Synced received for this writer). */
  syncs: number;
  /** Data frames dropped as history: groups older than the sync marker (the relay's backlog). */
  backlogDropped: number;
  /** Data frames dropped because too many waited for a sync (see {@link PENDING_MAX}). */
  pendingDropped: number;
  /** Refusals the server sent this writer. */
  refused: number;
  /** Control messages that did not decode (a server of another version?). */
  badCtl: number;
}

/** The dispatched `state` event: the link's new state and why. */
export class LinkStateEvent extends Event {
  readonly state: LinkState;
  readonly reason: string | undefined;
  constructor(state: LinkState, reason?: string) {
    super("state");
    this.state = state;
    this.reason = reason;
  }
}

/** The dispatched `notice` event: a server notice for every client (bus state, device lost…). */
export class NoticeEvent extends Event {
  readonly notice: Ctl;
  constructor(notice: Ctl) {
    super("notice");
    this.notice = notice;
  }
}

/** Base of the errors a write through a relay link fails with. */
export class LinkError extends Error {
  override name = "LinkError";
}
/** The link is down (reconnecting or resyncing): nothing was sent. */
export class LinkDownError extends LinkError {
  override name = "LinkDownError";
}
/** The link is closed for good. */
export class LinkClosedError extends LinkError {
  override name = "LinkClosedError";
}
/** The server refused this writer's writes (`code`: the service's refusal code). */
export class RefusedError extends LinkError {
  override name = "RefusedError";
  readonly code: number;
  constructor(code: number, message: string) {
    super(message);
    this.code = code;
  }
}
/** The server never acknowledged this client's writer: it may read only. */
export class ReadOnlyError extends LinkError {
  override name = "ReadOnlyError";
}

/** Data frames held while a (re)sync is pending, at most (drop-oldest beyond). */
export const PENDING_MAX = 1024;
/** How long a client waits for the server's Hello before going read-only (ms). */
export const SYNC_WAIT_MS = 3000;
/** How often a connected client probes the server's clock (ms). */
export const PING_EVERY_MS = 1000;
/** A Hello repeating our answered nonce this long after the Sync: send the Sync again (ms). */
const SYNC_RESEND_MS = 1000;

/** One clock sample set: the server's clock minus this process's, from the fastest probe. */
export interface ClockEstimate {
  /** Server clock minus this process's clock (µs). */
  offsetUs: number;
  /** Round trip of the sample the offset comes from (µs): the offset is right within half. */
  rttUs: number;
  /** Samples the estimate was chosen from. */
  samples: number;
}

/** This process's clock: microseconds since the Unix epoch, as a bigint for the wire. */
export function nowUs(): bigint {
  return BigInt(Math.round((performance.timeOrigin + performance.now()) * 1000));
}

/**
 * The offset from this process's clock to the server's, NTP-style: a probe sent at `t0`,
 * answered at server time `s`, received at `t1` gives `offset = s − (t0 + t1) / 2` within
 * `rtt / 2`. The estimate is the sample with the smallest round trip among the recent ones
 * (queueing only adds delay). As crates/xoq-client/src/clock.rs.
 */
export class ClockEstimator {
  static readonly SAMPLES = 16;
  static readonly FRESH_MS = 60_000;
  #samples: { rttUs: number; offsetUs: number; at: number }[] = [];

  /** Add a sample: probe sent at `t0Us` (local), answered at `serverUs`, received at `t1Us`. */
  add(t0Us: bigint, serverUs: bigint, t1Us: bigint): void {
    if (t1Us < t0Us) return;
    const rtt = t1Us - t0Us;
    const offset = serverUs - (t0Us + rtt / 2n);
    if (this.#samples.length === ClockEstimator.SAMPLES) this.#samples.shift();
    this.#samples.push({ rttUs: Number(rtt), offsetUs: Number(offset), at: performance.now() });
  }

  /** Forget every sample (a new server: its clock may differ). */
  reset(): void {
    this.#samples = [];
  }

  /** The current estimate, if any sample is fresh. */
  estimate(): ClockEstimate | undefined {
    const now = performance.now();
    const fresh = this.#samples.filter((s) => now - s.at < ClockEstimator.FRESH_MS);
    let best: (typeof fresh)[number] | undefined;
    for (const s of fresh) if (!best || s.rttUs < best.rttUs) best = s;
    return best && { offsetUs: best.offsetUs, rttUs: best.rttUs, samples: fresh.length };
  }
}

/** What a {@link RelaySession} needs from its surroundings. */
export interface SessionOptions {
  /** This client's writer name (the last segment of its writer broadcast). */
  writer: string;
  /** Append one frame to this client's writer track; `newGroup` starts a group first. */
  write(frame: Uint8Array, newGroup: boolean): void;
  /** One frame of the server's data stream, in order, from this client's view on. */
  deliver(payload: Uint8Array): void;
  /** What the errors name, e.g. `http://127.0.0.1:4443/anon/xoq-openarm` (no token). */
  peer: string;
  /** Refusal code for "writes are off" (CAN 6, serial 2). */
  writesOffCode: number;
  /** Hint for read-only clients: the writer broadcast the token must allow, e.g. `xoq-openarm/cmd`. */
  writerPath?: string;
  /** Wait for Hello this long before going read-only (ms, default {@link SYNC_WAIT_MS}). */
  syncWaitMs?: number;
  /** Probe the clock this often while connected (ms, default {@link PING_EVERY_MS}; 0: never). */
  pingEveryMs?: number;
  /** Data frames held before a sync (default {@link PENDING_MAX}). */
  pendingMax?: number;
}

/**
 * One client's relay session state machine. Feed it what arrives (`onCtl`, `onData`,
 * `onServerGone`, `onServerPresent`, `onRelayDown`) and ask it before writing (`writeData`).
 * Dispatches `state` ({@link LinkStateEvent}) and `notice` ({@link NoticeEvent}) events.
 */
export class RelaySession extends EventTarget {
  readonly writer: string;
  readonly counters: LinkCounters = {
    drops: 0,
    reconnects: 0,
    syncs: 0,
    backlogDropped: 0,
    pendingDropped: 0,
    refused: 0,
    badCtl: 0,
  };
  readonly clock = new ClockEstimator();
  #o: SessionOptions;
  #state: LinkState = "connecting";
  #reason: string | undefined = "connecting";
  #downSince = performance.now();
  #everUp = false;
  /** Nonce of the latest Hello answered, and when. */
  #answered: bigint | undefined;
  #answeredAt = 0;
  /**
   * Nonces answered before the link was lost. A relay replays the latest group of the ctl
   * track to a new subscription, so after a reconnect the old Hello and Synced for this
   * writer come again: they must not count as a sync (the server's subscription they named
   * may be gone). Only a fresh Hello (the server subscribed again) does.
   */
  #stale: bigint[] = [];
  /** First data group of this client's view (set by Synced or the read-only fallback). */
  #dataGroup: number | undefined;
  #writes = false;
  #readOnly = false;
  #refused: { code: number; message: string } | undefined;
  #pending: { group: number; payload: Uint8Array }[] = [];
  #syncTimer: ReturnType<typeof setTimeout> | undefined;
  #pingTimer: ReturnType<typeof setInterval> | undefined;
  #pings = new Map<number, bigint>();
  #waiters = new Set<() => void>();

  constructor(opts: SessionOptions) {
    super();
    this.#o = opts;
    this.writer = opts.writer;
  }

  /** The link's state. */
  get state(): LinkState {
    return this.#state;
  }
  /** Why the link is not connected (undefined while connected). */
  get reason(): string | undefined {
    return this.#reason;
  }
  /** The server never acknowledged this writer: reads only, writes fail. */
  get readOnly(): boolean {
    return this.#readOnly;
  }
  /** Whether the server accepts writes from relay clients (its Hello said so). */
  get writes(): boolean {
    return this.#writes;
  }
  /** The first data group of this client's view, once known. */
  get dataGroup(): number | undefined {
    return this.#dataGroup;
  }
  /** Data frames waiting for a sync. */
  get pending(): number {
    return this.#pending.length;
  }

  #set(state: LinkState, reason?: string): void {
    if (this.#state === "closed") return;
    if (state === this.#state && reason === this.#reason) return;
    const was = this.#state;
    if (state === "reconnecting" && was === "connected") {
      this.counters.drops++;
      this.#downSince = performance.now();
    }
    if (state === "connected" && was !== "connected") {
      if (this.#everUp && was === "reconnecting") this.counters.reconnects++;
      this.#everUp = true;
    }
    this.#state = state;
    this.#reason = state === "connected" ? undefined : reason;
    if (state === "connected") this.#startPings();
    else this.#stopPings();
    for (const w of [...this.#waiters]) w();
    this.dispatchEvent(new LinkStateEvent(state, this.#reason));
  }

  /** Decode and handle one frame of the server's `ctl` track (undecodable ones are counted). */
  onCtlFrame(frame: Uint8Array): void {
    let msg: Ctl;
    try {
      msg = decodeCtl(frame);
    } catch (e) {
      if (!(e instanceof CodecError)) throw e;
      this.counters.badCtl++;
      return;
    }
    this.onCtl(msg);
  }

  /** Handle one control message. */
  onCtl(msg: Ctl): void {
    if (this.#state === "closed") return;
    const w = ctlWriter(msg);
    if (w !== undefined && w !== this.writer) return; // another client's
    switch (msg.kind) {
      case "hello": {
        if (this.#stale.includes(msg.nonce)) return;
        if (this.#answered === msg.nonce) {
          // Still unanswered on the server's side after a while: our Sync may have gone to a
          // subscription that ended. Repeating it is harmless (the server ignores repeats).
          if (this.#dataGroup === undefined && performance.now() - this.#answeredAt >= SYNC_RESEND_MS) {
            this.#sync(msg.nonce);
          }
          return;
        }
        const resync = this.#answered !== undefined;
        if (this.#answered !== undefined) this.#retire(this.#answered);
        this.#answered = msg.nonce;
        this.#writes = msg.writes;
        this.#clearSyncTimer();
        if (!this.#readOnly) {
          this.#dataGroup = undefined;
          if (this.#state === "connected") this.#set("reconnecting", "the server subscribed again (restarted, or the relay did); resyncing");
        }
        // Everything written from here on is after the server's subscription.
        this.#sync(msg.nonce);
        if (resync) this.#pings.clear();
        return;
      }
      case "synced":
        if (msg.nonce !== this.#answered) return;
        this.#startView(Number(msg.dataGroup));
        this.#readOnly = false;
        this.counters.syncs++;
        this.clock.reset();
        this.#set("connected");
        this.ping();
        return;
      case "pong": {
        const sent = this.#pings.get(msg.id);
        if (sent === undefined || sent !== msg.clientUs) return;
        this.#pings.delete(msg.id);
        this.clock.add(msg.clientUs, msg.serverUs, nowUs());
        return;
      }
      case "refused":
        this.counters.refused++;
        this.#refused = { code: msg.code, message: msg.message };
        this.dispatchEvent(new NoticeEvent(msg));
        return;
      case "bye":
        this.#lose(`the server stopped (${msg.reason})`);
        this.dispatchEvent(new NoticeEvent(msg));
        return;
      default:
        this.dispatchEvent(new NoticeEvent(msg));
    }
  }

  #sync(nonce: bigint): void {
    this.#answeredAt = performance.now();
    try {
      this.#o.write(encodeWriterMsg({ kind: "sync", nonce }), true);
    } catch {
      // The writer track is gone (closing); the link state says the rest.
    }
  }

  /** One frame of the server's data track, with the sequence of its group. */
  onData(group: number, payload: Uint8Array): void {
    if (this.#state === "closed") return;
    const start = this.#dataGroup;
    if (start === undefined) {
      if (this.#pending.length >= (this.#o.pendingMax ?? PENDING_MAX)) {
        this.#pending.shift();
        this.counters.pendingDropped++;
      }
      this.#pending.push({ group, payload });
    } else if (group >= start) {
      this.#o.deliver(payload);
    } else {
      this.counters.backlogDropped++;
    }
  }

  #startView(group: number): void {
    this.#dataGroup = group;
    const ready = this.#pending;
    this.#pending = [];
    for (const p of ready) {
      if (p.group >= group) this.#o.deliver(p.payload);
      else this.counters.backlogDropped++;
    }
  }

  /**
   * The server's broadcast is announced and subscribed (at open, and again after it went
   * away): wait for its Hello, going read-only if none comes within `syncWaitMs`.
   */
  onServerPresent(): void {
    if (this.#state === "closed" || this.#state === "connected" || this.#answered !== undefined) return;
    this.#clearSyncTimer();
    this.#syncTimer = setTimeout(() => this.#readOnlyFallback(), this.#o.syncWaitMs ?? SYNC_WAIT_MS);
  }

  #readOnlyFallback(): void {
    this.#syncTimer = undefined;
    if (this.#state === "closed" || this.#state === "connected" || this.#answered !== undefined) return;
    // Nobody acknowledged our writer: the relay did not let us publish, or the server is
    // older. Read what is published from the next group on; writes fail clearly.
    this.#readOnly = true;
    const last = this.#pending.at(-1);
    this.#startView(last === undefined ? 0 : last.group + 1);
    this.#set("connected");
  }

  /** The server's broadcast disappeared (server stopped or unreachable). */
  onServerGone(reason = "the server's broadcast is gone (server stopped or unreachable)"): void {
    this.#lose(reason);
  }

  /** The session to the relay is back: the link waits for the server (its Hello) again. */
  onRelayUp(): void {
    if (this.#state === "connecting" || this.#state === "reconnecting") {
      this.#set(this.#state, "the relay session is back; waiting for the server to acknowledge this client");
    }
  }

  /** The session to the relay dropped (it is being re-established). */
  onRelayDown(reason = "the session to the relay dropped"): void {
    this.#lose(reason);
  }

  #retire(nonce: bigint): void {
    this.#stale.push(nonce);
    if (this.#stale.length > 8) this.#stale.shift();
  }

  #lose(reason: string): void {
    if (this.#state === "closed") return;
    if (this.#answered !== undefined) this.#retire(this.#answered);
    this.#answered = undefined;
    this.#dataGroup = undefined;
    this.#pending = [];
    this.#pings.clear();
    this.#clearSyncTimer();
    this.#set(this.#everUp ? "reconnecting" : "connecting", reason);
  }

  /** Closed for good (by the user, or the relay gave up); idempotent. */
  close(reason: string): void {
    if (this.#state === "closed") return;
    this.#clearSyncTimer();
    this.#stopPings();
    this.#pending = [];
    this.#state = "closed";
    this.#reason = reason;
    for (const w of [...this.#waiters]) w();
    this.dispatchEvent(new LinkStateEvent("closed", reason));
  }

  /**
   * The error a write gets now, or undefined when it may go: a refusal the server sent
   * (reported once), read-only, writes off, link down or closed.
   */
  writeError(): LinkError | undefined {
    const peer = this.#o.peer;
    if (this.#state === "closed") return new LinkClosedError(`${peer}: the link is closed (${this.#reason})`);
    const r = this.#refused;
    if (r) {
      this.#refused = undefined;
      return new RefusedError(r.code, `${peer}: the server refused this client's writes: ${r.message}`);
    }
    if (this.#readOnly) {
      const where = this.#o.writerPath ? ` under ${this.#o.writerPath}` : "";
      return new ReadOnlyError(
        `${peer}: read-only: the server never acknowledged this client's writer, so nothing written here would reach the device; the relay token (?jwt=) must allow publishing${where} (xoq token --publish <path>)`,
      );
    }
    if (this.#answered !== undefined && !this.#writes) {
      return new RefusedError(
        this.#o.writesOffCode,
        `${peer}: this server does not accept writes through the relay (--moq-writes off, the default); connect P2P, or restart it with --moq-writes on behind a relay that checks tokens`,
      );
    }
    if (this.#state !== "connected") {
      const s = ((performance.now() - this.#downSince) / 1000).toFixed(1);
      return new LinkDownError(
        this.#state === "connecting"
          ? `${peer}: not connected yet (${this.#reason}); waiting for the server`
          : `${peer}: link down for ${s} s (${this.#reason}); reconnecting`,
      );
    }
    return undefined;
  }

  /** Send one service payload now, or throw the {@link writeError}. */
  writeData(payload: Uint8Array): void {
    this.writeAll([payload]);
  }

  /** Send service payloads now, all or none: or throw the {@link writeError}. */
  writeAll(payloads: readonly Uint8Array[]): void {
    const e = this.writeError();
    if (e) throw e;
    for (const p of payloads) this.#o.write(dataFrame(p), false);
  }

  /** Send a clock probe (done once a second while connected). */
  ping(): void {
    if (this.#state !== "connected" || this.#readOnly) return;
    const id = (Math.random() * 2 ** 32) >>> 0;
    const clientUs = nowUs();
    if (this.#pings.size >= 8) this.#pings.delete(this.#pings.keys().next().value as number);
    this.#pings.set(id, clientUs);
    try {
      this.#o.write(encodeWriterMsg({ kind: "ping", id, clientUs }), false);
    } catch {
      // closing
    }
  }

  #startPings(): void {
    const every = this.#o.pingEveryMs ?? PING_EVERY_MS;
    if (this.#pingTimer !== undefined || every <= 0) return;
    this.#pingTimer = setInterval(() => this.ping(), every);
    // A pending probe must not keep Node alive on its own.
    (this.#pingTimer as { unref?: () => void }).unref?.();
  }

  #stopPings(): void {
    clearInterval(this.#pingTimer);
    this.#pingTimer = undefined;
  }

  #clearSyncTimer(): void {
    clearTimeout(this.#syncTimer);
    this.#syncTimer = undefined;
  }

  /**
   * Resolve `true` once connected (synced or read-only), `false` once closed or after `ms`
   * (if given).
   */
  waitConnected(ms?: number): Promise<boolean> {
    if (this.#state === "connected") return Promise.resolve(true);
    if (this.#state === "closed") return Promise.resolve(false);
    return new Promise((resolve) => {
      let timer: ReturnType<typeof setTimeout> | undefined;
      const check = (): void => {
        if (this.#state !== "connected" && this.#state !== "closed") return;
        this.#waiters.delete(check);
        clearTimeout(timer);
        resolve(this.#state === "connected");
      };
      this.#waiters.add(check);
      if (ms !== undefined) {
        timer = setTimeout(() => {
          this.#waiters.delete(check);
          resolve(this.#state === "connected");
        }, Math.max(0, ms));
      }
    });
  }
}

