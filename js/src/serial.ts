// A serial port served by `xoq serial-server --relay … --moq PATH`, reached through a relay:
// bytes to the device go on broadcast `{path}/c2s`, bytes from it come on `{path}/s2c`
// (docs/protocol.md, "Serial, MoQ"). Raw bytes only: no baud or modem-line control on MoQ.

import { type Connection, Inbox, type OpenOptions, openPair } from "./moq.js";

/** Received bytes held for a slow reader before the oldest are dropped (1 MiB). */
export const SERIAL_INBOX_BYTES = 1 << 20;

/** A serial port over MoQ: write bytes, receive chunks, close. */
export interface SerialStream extends AsyncIterable<Uint8Array> {
  /** The MoQ session in use (shared or owned). */
  readonly connection: Connection;
  /** Received bytes dropped because nobody read them in time (see {@link SERIAL_INBOX_BYTES}). */
  readonly dropped: number;
  /**
   * Send bytes to the device, in order. Each call is one MoQ frame, so batch small writes
   * that belong together (a whole servo packet) into one call.
   */
  write(bytes: Uint8Array): void;
  /**
   * The next chunk from the device, or `undefined` after `timeoutMs` or once closed. Chunk
   * borders are arbitrary: parse with a stream parser such as {@link StatusParser}. A
   * timeout loses nothing, so prefer this to racing the iterator against a timer.
   */
  recv(timeoutMs?: number): Promise<Uint8Array | undefined>;
  /** Chunks from the device, in order, until closed; `break` does not close the stream. */
  [Symbol.asyncIterator](): AsyncIterator<Uint8Array>;
  /** Stop reading and publishing; closes the session too if this stream opened it. */
  close(): void;
}

/**
 * Open the serial port published as `path` (e.g. `xoq-serial`) on the relay `relayUrl` (e.g.
 * `http://127.0.0.1:4443/anon`; see {@link splitAddress} for a combined address). Waits for
 * the server's broadcast (`timeoutMs`, default 5 s) and drops what the relay replays from
 * before this call, like the Rust client, so reads start with fresh bytes.
 *
 * Bytes go on this client's own broadcast `{path}/c2s/<writer id>`; the server reads every
 * writer under `{path}/c2s`, so several clients can write at once.
 */
export async function openSerial(relayUrl: string | URL, path: string, opts: OpenOptions = {}): Promise<SerialStream> {
  const { conn, owned, broadcast, writer, reader } = await openPair(
    relayUrl,
    `${path}/c2s`,
    `${path}/s2c`,
    opts,
    `no serial server publishes ${path}: start one with \`xoq serial-server … --relay <url> --moq <path>\``,
  );
  const inbox = new Inbox<Uint8Array>(SERIAL_INBOX_BYTES, (c) => c.length);
  // Read in the background, so the relay is drained even while the application is busy.
  void (async () => {
    try {
      for (let chunk = await reader.next(); chunk !== undefined; chunk = await reader.next()) inbox.push(chunk);
    } finally {
      inbox.end();
    }
  })();
  let closed = false;
  return {
    connection: conn,
    get dropped(): number {
      return inbox.dropped;
    },
    write(bytes: Uint8Array): void {
      if (closed) throw new Error("serial stream is closed");
      if (bytes.length > 0) writer.write(bytes);
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
