// A CAN bus served by `xoq can-server … --relay … --moq PATH`, reached through a relay:
// command batches go on broadcast `{path}/cmd`, bus traffic comes on `{path}/state`
// (docs/protocol.md, "CAN, MoQ"). Each MoQ frame is one batch.

import { type CanFrame, CodecError, MAX_BATCH, decodeBatch, encodeBatch, withToken } from "./can.js";
import { type Connection, Inbox, type OpenOptions, openPair } from "./moq.js";

/** Received frames held for a slow reader before the oldest are dropped. */
export const CAN_INBOX_FRAMES = 16384;

/** Options of {@link openCan}. */
export interface CanOptions extends OpenOptions {
  /** Token the server requires in front of each command batch (`--moq-cmd-token`). */
  token?: string;
}

/** A CAN bus over MoQ: send frames, receive bus traffic, close. */
export interface CanBus extends AsyncIterable<CanFrame> {
  /** The MoQ session in use (shared or owned). */
  readonly connection: Connection;
  /** State batches that did not decode and were skipped (a server of another version?). */
  readonly badBatches: number;
  /** Frames dropped because nobody read them in time (see {@link CAN_INBOX_FRAMES}). */
  readonly dropped: number;
  /**
   * Send frames to the bus: one batch per call (split every {@link MAX_BATCH} frames).
   * Throws CodecError for an invalid frame before anything is sent.
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
  /** Stop reading and publishing; closes the session too if this bus opened it. */
  close(): void;
}

/**
 * Open the CAN bus published as `path` (e.g. `xoq-can-can0`) on the relay `relayUrl` (e.g.
 * `http://127.0.0.1:4443/anon`). Waits for the server's broadcast (`timeoutMs`, default 5 s)
 * and drops the backlog the relay replays on subscribe, like the Rust client, so frames
 * received start with traffic from after this call.
 *
 * Commands go on this client's own broadcast `{path}/cmd/<writer id>`; the server reads every
 * writer under `{path}/cmd`, so several clients (tabs, Rust or Python clients) can send at once.
 */
export async function openCan(relayUrl: string | URL, path: string, opts: CanOptions = {}): Promise<CanBus> {
  const { conn, owned, broadcast, writer, reader } = await openPair(
    relayUrl,
    `${path}/cmd`,
    `${path}/state`,
    opts,
    `no CAN server publishes ${path}: start one with \`xoq can-server … --relay <url> --moq <path>\``,
  );
  const token = opts.token;
  const inbox = new Inbox<CanFrame>(CAN_INBOX_FRAMES);
  let badBatches = 0;
  // Read in the background, so the relay is drained even while the application is busy.
  void (async () => {
    try {
      for (let payload = await reader.next(); payload !== undefined; payload = await reader.next()) {
        try {
          for (const f of decodeBatch(payload)) inbox.push(f);
        } catch (e) {
          if (!(e instanceof CodecError)) throw e;
          badBatches++;
        }
      }
    } finally {
      inbox.end();
    }
  })();
  let closed = false;
  return {
    connection: conn,
    get badBatches(): number {
      return badBatches;
    },
    get dropped(): number {
      return inbox.dropped;
    },
    send(frames: CanFrame | readonly CanFrame[]): void {
      if (closed) throw new Error("CAN bus is closed");
      const list: readonly CanFrame[] = Array.isArray(frames) ? frames : [frames as CanFrame];
      // Encode everything first, so an invalid frame sends nothing.
      const batches: Uint8Array[] = [];
      for (let i = 0; i < list.length; i += MAX_BATCH) {
        const batch = encodeBatch(list.slice(i, i + MAX_BATCH));
        batches.push(token === undefined ? batch : withToken(batch, token));
      }
      for (const b of batches) writer.write(b);
    },
    recv: (timeoutMs?: number) => inbox.recv(timeoutMs),
    [Symbol.asyncIterator]: () => inbox[Symbol.asyncIterator](),
    close(): void {
      if (closed) return;
      closed = true;
      reader.close();
      inbox.end();
      writer.close();
      broadcast.close();
      if (owned) conn.close();
    },
  };
}
