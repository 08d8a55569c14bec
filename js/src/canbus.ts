// A CAN bus served by `xoq can-server … --relay … --moq PATH`, reached through a relay: the
// server publishes `{path}/state` (track `data`: batches of bus traffic; track `ctl`), each
// client sends command batches on its own `{path}/cmd/<writer id>` in the relay session
// protocol (docs/protocol.md, "CAN, MoQ").

import { type CanFrame, CodecError, MAX_BATCH, decodeBatch, encodeBatch } from "./can.js";
import { type Connection, Inbox, type Relay } from "./moq.js";
import { type OpenOptions, openRelayPeer } from "./peer.js";
import { LinkClosedError, type NoticeEvent, type RelaySession } from "./session.js";

/** Received frames held for a slow reader before the oldest are dropped. */
export const CAN_INBOX_FRAMES = 16384;
/** Refusal code for "writes off" (`RefuseCode::WritesOff`, shared by every service). */
const WRITES_OFF = 6;

/** Options of {@link openCan}. */
export interface CanOptions extends OpenOptions {
  /**
   * Removed: servers refuse `--moq-cmd-token` (any subscriber could replay it). Who may send
   * is the relay's decision: give a relay token, `?jwt=TOKEN` in the relay URL. Passing this
   * throws.
   * @deprecated
   */
  token?: never;
}

/** A CAN bus over MoQ: send frames, receive bus traffic, close. */
export interface CanBus extends AsyncIterable<CanFrame> {
  /** The relay session (it reconnects on its own). */
  readonly relay: Relay;
  /** The live MoQ session, if any (it changes when the relay reconnects). */
  readonly connection: Connection | undefined;
  /**
   * The link to the server: `state` (`connecting`, `connected`, `reconnecting`, `closed`),
   * `reason`, `readOnly`, `counters`, `clock.estimate()`; dispatches `state` and `notice`
   * events (bus state changes, device lost and back).
   */
  readonly link: RelaySession;
  /** The controller's latest error state the server reported (code as in BusState), if any. */
  readonly busState: number | undefined;
  /** State batches that did not decode and were skipped (a server of another version?). */
  readonly badBatches: number;
  /** Frames dropped because nobody read them in time (see {@link CAN_INBOX_FRAMES}). */
  readonly dropped: number;
  /**
   * Send frames to the bus: one batch per call (split every {@link MAX_BATCH} frames), all or
   * nothing. Throws CodecError for an invalid frame, and fails fast while the frames cannot
   * reach the bus: {@link LinkDownError} while the link is down or resyncing (commands are
   * never queued: a late motor command is worse than none), {@link ReadOnlyError},
   * {@link RefusedError} (writes off, or a refusal the server sent since the last send), or
   * {@link LinkClosedError}.
   */
  send(frames: CanFrame | readonly CanFrame[]): void;
  /**
   * The next frame seen on the bus, or `undefined` after `timeoutMs` or once closed. A
   * timeout loses nothing, so prefer this to racing the iterator against a timer.
   */
  recv(timeoutMs?: number): Promise<CanFrame | undefined>;
  /**
   * Frames seen on the bus, in order, until closed: replies and other traffic, and also the
   * commands of every MoQ client including this one (the server echoes them to viewers).
   * `break` does not close the bus.
   */
  [Symbol.asyncIterator](): AsyncIterator<CanFrame>;
  /** Stop reading and publishing; closes the relay session too if this bus opened it. */
  close(): void;
}

/**
 * Open the CAN bus published as `path` (e.g. `xoq-can-can0`) on the relay `relayUrl` (e.g.
 * `http://127.0.0.1:4443/anon`, with `?jwt=TOKEN` if the relay checks tokens). Waits for the
 * server's broadcast (`timeoutMs`, default 5 s) and for the server to acknowledge this
 * client's writer; frames received start with the traffic the server publishes from then on
 * (the relay's backlog is cut by the server's marker).
 *
 * Commands go on this client's own broadcast `{path}/cmd/<writer id>`; the server reads every
 * writer under `{path}/cmd`, so several clients (tabs, Rust or Python clients) can send at
 * once. The server must accept relay writes (`--moq-writes on`). The bus survives a relay
 * restart or a link blip (see `link`).
 */
export async function openCan(relayUrl: string | URL, path: string, opts: CanOptions = {}): Promise<CanBus> {
  if ((opts as { token?: unknown }).token !== undefined) {
    throw new TypeError(
      "openCan: the token option is gone (servers refuse --moq-cmd-token); give a relay token instead: ?jwt=TOKEN in the relay URL",
    );
  }
  const inbox = new Inbox<CanFrame>(CAN_INBOX_FRAMES);
  let badBatches = 0;
  let busState: number | undefined;
  const peer = await openRelayPeer(
    relayUrl,
    path,
    {
      up: "cmd",
      down: "state",
      writesOffCode: WRITES_OFF,
      deliver: (payload) => {
        try {
          for (const f of decodeBatch(payload)) inbox.push(f);
        } catch (e) {
          if (!(e instanceof CodecError)) throw e;
          badBatches++;
        }
      },
      missing: `no CAN server publishes ${path}: start one with \`xoq can-server … --relay <url> --moq <path>\``,
    },
    opts,
  );
  const { session, relay } = peer;
  session.addEventListener("state", () => {
    if (session.state === "closed") inbox.end();
  });
  session.addEventListener("notice", (ev) => {
    const n = (ev as NoticeEvent).notice;
    if (n.kind === "busState") busState = n.code;
  });
  let closed = false;
  return {
    relay,
    get connection(): Connection | undefined {
      return relay.connection;
    },
    link: session,
    get busState(): number | undefined {
      return busState;
    },
    get badBatches(): number {
      return badBatches;
    },
    get dropped(): number {
      return inbox.dropped;
    },
    send(frames: CanFrame | readonly CanFrame[]): void {
      const list: readonly CanFrame[] = Array.isArray(frames) ? frames : [frames as CanFrame];
      // Encode everything first, so an invalid frame sends nothing.
      const batches: Uint8Array[] = [];
      for (let i = 0; i < list.length; i += MAX_BATCH) batches.push(encodeBatch(list.slice(i, i + MAX_BATCH)));
      if (closed) throw new LinkClosedError("CAN bus is closed");
      session.writeAll(batches);
    },
    recv: (timeoutMs?: number) => inbox.recv(timeoutMs),
    [Symbol.asyncIterator]: () => inbox[Symbol.asyncIterator](),
    close(): void {
      if (closed) return;
      closed = true;
      peer.close("the CAN bus was closed");
      inbox.end();
    },
  };
}
