// The relay side of a client, shared by openSerial and openCan: this client's own writer
// broadcast toward the device, the server's broadcast (tracks `data` and `ctl`), and the relay
// session protocol between them (src/session.ts), on a Relay that reconnects. As
// crates/xoq-client/src/relay.rs.

import { CTL_TRACK } from "./relay.js";
import {
  type ConnectOptions,
  type Connection,
  DATA_TRACK,
  Relay,
  RelayStateEvent,
  type TrackWriter,
  TrackReader,
  publishTrack,
  timeout,
  writerId,
} from "./moq.js";
import { RelaySession, SYNC_WAIT_MS } from "./session.js";

/** Options of {@link openSerial} and {@link openCan}. */
export interface OpenOptions {
  /**
   * A shared relay session (see {@link Relay.start}): it reconnects on its own, and stays
   * open on close(). Several clients and pages can share one.
   */
  relay?: Relay;
  /**
   * A fixed session (stays open on close()). It does not reconnect: the link closes when it
   * ends. Prefer `relay`.
   */
  connection?: Connection;
  /** Options of the relay session opened when neither `relay` nor `connection` is given. */
  connect?: Omit<ConnectOptions, "signal">;
  /** Reconnection of that session: on by default, giving up after `deadlineMs` (60 s). */
  reconnect?: { enabled?: boolean; deadlineMs?: number };
  /**
   * How long to wait for the relay (when this call connects) and then for the server's
   * broadcast before failing (ms, default 5000 each).
   */
  timeoutMs?: number;
  /**
   * How long to wait for the server to acknowledge this client's writer before going
   * read-only (ms, default 3000): a relay token that does not allow publishing gives a client
   * that reads and whose writes fail with {@link ReadOnlyError}.
   */
  syncWaitMs?: number;
}

/** One client's relay side, opened by {@link openRelayPeer}. */
export interface RelayPeer {
  readonly relay: Relay;
  readonly session: RelaySession;
  readonly writer: TrackWriter;
  /** Stop everything opened here (the relay too if it was opened here). Idempotent. */
  close(reason?: string): void;
}

/** What {@link openRelayPeer} needs to know about the service. */
export interface PeerService {
  /** Writer segment (`c2s`, `cmd`) and server segment (`s2c`, `state`). */
  up: string;
  down: string;
  /** Refusal code of "writes are off" (CAN 6, serial 2). */
  writesOffCode: number;
  /** One frame of the server's data track, from this client's view on. */
  deliver(payload: Uint8Array): void;
  /** The error message when nothing publishes the server's broadcast. */
  missing: string;
}

/**
 * Connect (or reuse a relay), publish this client's writer `{path}/{up}/<writer id>`, follow
 * the server's `{path}/{down}` and get in sync with the server. Fails with `missing` when the
 * server's broadcast does not appear within `timeoutMs`; on failure everything opened here is
 * closed again.
 */
export async function openRelayPeer(relayUrl: string | URL, path: string, svc: PeerService, opts: OpenOptions): Promise<RelayPeer> {
  const wait = opts.timeoutMs ?? 5000;
  const owns = opts.relay === undefined && opts.connection === undefined;
  const relay =
    opts.relay ??
    (opts.connection
      ? Relay.wrap(opts.connection)
      : await Relay.connect(relayUrl, {
          connect: opts.connect,
          timeoutMs: wait,
          reconnect: opts.reconnect?.enabled,
          deadlineMs: opts.reconnect?.deadlineMs,
        }));
  const id = writerId();
  const server = `${path}/${svc.down}`;
  const { broadcast, writer } = publishTrack(relay, `${path}/${svc.up}/${id}`);
  // One announcement handle for both tracks, so they follow the same publisher.
  const handle = relay.announcedBroadcast(server);
  const ctl = new TrackReader(handle, server, CTL_TRACK);
  const data = new TrackReader(handle, server, DATA_TRACK);
  const session = new RelaySession({
    writer: id,
    write: (frame, newGroup) => writer.write(frame, newGroup),
    deliver: svc.deliver,
    peer: `${relay.url}/${path}`,
    writesOffCode: svc.writesOffCode,
    writerPath: `${path}/${svc.up}`,
    syncWaitMs: opts.syncWaitMs,
  });
  const onRelay = (ev: Event): void => {
    const e = ev as RelayStateEvent;
    if (e.state === "closed") session.close(e.reason ?? "the relay session ended");
    else if (e.state === "connected") session.onRelayUp();
    else session.onRelayDown(e.reason);
  };
  relay.addEventListener("state", onRelay);
  let closed = false;
  const close = (reason = "closed"): void => {
    if (closed) return;
    closed = true;
    relay.removeEventListener("state", onRelay);
    session.close(reason);
    ctl.close();
    data.close();
    handle.close();
    writer.close();
    broadcast.close();
    if (owns) relay.close();
  };
  try {
    if ((await timeout(ctl.ready(), wait)) !== true || (await timeout(data.ready(), wait)) !== true) {
      // A relay that ends the session right after setup (refused credentials) is the reason,
      // not a missing server.
      if (relay.state !== "connected") throw new Error(`${relay.url}/${path}: ${relay.reason ?? "the relay session is down"}`);
      throw new Error(`${svc.missing} (nothing published ${server} on ${relay.url} within ${wait} ms)`);
    }
    // Read both tracks in the background, so the relay is drained even while the
    // application is busy. Only the control track's publisher decides the link.
    void (async () => {
      for (let ev = await ctl.nextEvent(); ev !== undefined; ev = await ctl.nextEvent()) {
        if (ev.kind === "frame") session.onCtlFrame(ev.payload);
        else if (ev.kind === "gone") session.onServerGone();
        else session.onServerPresent();
      }
    })();
    void (async () => {
      for (let ev = await data.nextEvent(); ev !== undefined; ev = await data.nextEvent()) {
        if (ev.kind === "frame") session.onData(ev.group, ev.payload);
      }
    })();
    if (relay.state !== "connected") session.onRelayDown(relay.reason);
    else session.onServerPresent();
    // Synced, or read-only after syncWaitMs; a relay that drops meanwhile is not an error
    // here (the link reports it), a closed one is.
    const synced = await session.waitConnected((opts.syncWaitMs ?? SYNC_WAIT_MS) + wait);
    if (!synced && session.state === "closed") throw new Error(`${relay.url}/${path}: ${session.reason}`);
    return { relay, session, writer, close };
  } catch (e) {
    close(String(e));
    throw e;
  }
}
