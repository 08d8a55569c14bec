// A serial port served by `xoq serial-server --relay … --moq PATH`, reached through a relay:
// the server publishes `{path}/s2c` (track `data`: bytes from the device; track `ctl`), each
// client writes on its own `{path}/c2s/<writer id>` in the relay session protocol
// (docs/protocol.md, "Serial, MoQ"). Raw bytes only: no baud or modem-line control on MoQ.

import { type Connection, Inbox, type Relay } from "./moq.js";
import { type OpenOptions, openRelayPeer } from "./peer.js";
import { LinkClosedError, LinkDownError, type RelaySession } from "./session.js";

/** Received bytes held for a slow reader before the oldest are dropped (1 MiB). */
export const SERIAL_INBOX_BYTES = 1 << 20;
/** Largest Data frame a serial writer sends (64 KiB); longer writes are split. */
export const SERIAL_MAX_CHUNK = 64 * 1024;
/** How long a write waits for the link while it is down (ms), unless told otherwise. */
export const SERIAL_WRITE_WAIT_MS = 2000;
/** Writes waiting for the link at most; more fail at once. */
export const SERIAL_WRITES_WAITING = 256;
/** Refusal code for "writes off" (`RefuseCode::WritesOff`, shared by every service). */
const WRITES_OFF = 6;

/** Options of {@link openSerial}. */
export interface SerialOptions extends OpenOptions {
  /** How long a write waits for the link while it is down (ms, default 2000). */
  writeWaitMs?: number;
}

/** A serial port over MoQ: write bytes, receive chunks, close. */
export interface SerialStream extends AsyncIterable<Uint8Array> {
  /** The relay session (it reconnects on its own). */
  readonly relay: Relay;
  /** The live MoQ session, if any (it changes when the relay reconnects). */
  readonly connection: Connection | undefined;
  /**
   * The link to the server: `state` (`connecting`, `connected`, `reconnecting`, `closed`),
   * `reason`, `readOnly`, `counters`, `clock.estimate()`; dispatches `state` and `notice`
   * events.
   */
  readonly link: RelaySession;
  /** Received bytes dropped because nobody read them in time (see {@link SERIAL_INBOX_BYTES}). */
  readonly dropped: number;
  /**
   * Send bytes to the device, in order. Each call is one MoQ frame (split every 64 KiB), so
   * batch small writes that belong together (a whole servo packet) into one call.
   *
   * Resolves once the bytes are published. While the link is down the write waits for it,
   * for at most `waitMs` (default {@link SERIAL_WRITE_WAIT_MS}), behind earlier waiting
   * writes; it rejects with {@link LinkDownError} when the link is still down, and at once
   * with {@link ReadOnlyError} or {@link RefusedError} when the bytes cannot reach the device
   * (read-only client, writes off, or a refusal the server sent), or {@link LinkClosedError}.
   */
  write(bytes: Uint8Array, waitMs?: number): Promise<void>;
  /**
   * The next chunk from the device, or `undefined` after `timeoutMs` or once closed. Chunk
   * borders are arbitrary: parse with a stream parser such as {@link StatusParser}. A
   * timeout loses nothing, so prefer this to racing the iterator against a timer.
   */
  recv(timeoutMs?: number): Promise<Uint8Array | undefined>;
  /** Chunks from the device, in order, until closed; `break` does not close the stream. */
  [Symbol.asyncIterator](): AsyncIterator<Uint8Array>;
  /** Stop reading and publishing; closes the relay session too if this stream opened it. */
  close(): void;
}

/**
 * Open the serial port published as `path` (e.g. `xoq-serial`) on the relay `relayUrl` (e.g.
 * `http://127.0.0.1:4443/anon`, with `?jwt=TOKEN` if the relay checks tokens; see
 * {@link splitAddress} for a combined address). Waits for the server's broadcast (`timeoutMs`,
 * default 5 s) and for the server to acknowledge this client's writer; reads start with the
 * bytes the server publishes from then on (the relay's backlog is cut by the server's marker).
 *
 * Bytes go on this client's own broadcast `{path}/c2s/<writer id>`; the server reads every
 * writer under `{path}/c2s`, so several clients can write at once. The server must accept
 * relay writes (`--moq-writes on`). The stream survives a relay restart or a link blip (see
 * `link`).
 */
export async function openSerial(relayUrl: string | URL, path: string, opts: SerialOptions = {}): Promise<SerialStream> {
  const inbox = new Inbox<Uint8Array>(SERIAL_INBOX_BYTES, (c) => c.length);
  const peer = await openRelayPeer(
    relayUrl,
    path,
    {
      up: "c2s",
      down: "s2c",
      writesOffCode: WRITES_OFF,
      deliver: (chunk) => inbox.push(chunk),
      missing: `no serial server publishes ${path}: start one with \`xoq serial-server … --relay <url> --moq <path>\``,
    },
    opts,
  );
  const { session, relay } = peer;
  session.addEventListener("state", () => {
    if (session.state === "closed") inbox.end();
  });
  const defaultWait = opts.writeWaitMs ?? SERIAL_WRITE_WAIT_MS;
  let tail: Promise<void> = Promise.resolve();
  let waiting = 0;
  let closed = false;

  const chunks = (bytes: Uint8Array): Uint8Array[] => {
    const out: Uint8Array[] = [];
    for (let i = 0; i < bytes.length; i += SERIAL_MAX_CHUNK) out.push(bytes.subarray(i, i + SERIAL_MAX_CHUNK));
    return out;
  };

  return {
    relay,
    get connection(): Connection | undefined {
      return relay.connection;
    },
    link: session,
    get dropped(): number {
      return inbox.dropped;
    },
    write(bytes: Uint8Array, waitMs = defaultWait): Promise<void> {
      if (closed) return Promise.reject(new LinkClosedError("serial stream is closed"));
      if (bytes.length === 0) return Promise.resolve();
      const parts = chunks(bytes.slice());
      if (waiting === 0 && session.state !== "reconnecting" && session.state !== "connecting") {
        try {
          session.writeAll(parts);
          return Promise.resolve();
        } catch (e) {
          return Promise.reject(e);
        }
      }
      // The link is down: wait for it (bounded), in order behind earlier waiting writes.
      if (waiting >= SERIAL_WRITES_WAITING) {
        return Promise.reject(new LinkDownError(`${session.writeError()?.message ?? "link down"} (${waiting} writes already waiting)`));
      }
      const deadline = performance.now() + waitMs;
      waiting++;
      const p = tail.then(async () => {
        await session.waitConnected(Math.max(0, deadline - performance.now()));
        session.writeAll(parts);
      });
      const settled = p.finally(() => waiting--);
      tail = settled.catch(() => {});
      return settled;
    },
    recv: (timeoutMs?: number) => inbox.recv(timeoutMs),
    [Symbol.asyncIterator]: () => inbox[Symbol.asyncIterator](),
    close(): void {
      if (closed) return;
      closed = true;
      peer.close("the serial stream was closed");
      inbox.end();
    },
  };
}
