// The relay session protocol shared by the serial and CAN bridges (docs/protocol.md, "Relay
// session protocol"): the frames a client writes on its own writer track (`WriterMsg`) and the
// control messages a server publishes on its `ctl` track (`Ctl`). The rules mirror
// crates/xoq-wire/src/relay.rs byte for byte; the unit tests check both implementations
// against vectors the Rust codec prints.
//
// Every message is one complete MoQ frame, so decoding is exact-consume: a message shorter
// than its fields or with bytes left over is refused. The decoders are total: any input gives
// a message or a CodecError, and nothing is allocated beyond the input's own size.

import { CodecError } from "./can.js";
import { putVarint, readVarint, varintSize } from "./varint.js";

/** Name of the server's track of control messages, next to `data` in its broadcast. */
export const CTL_TRACK = "ctl";
/** Longest writer name the protocol carries (a writer is named by a short random id). */
export const MAX_WRITER = 64;
/** Longest string field (reasons, messages) in bytes; longer strings are cut when encoded. */
export const MAX_STRING = 1024;

/** A frame on a client's writer track (`{path}/cmd/<writer>`, `{path}/c2s/<writer>`, track `data`). */
export type WriterMsg =
  /** Service payload: a CAN batch, or bytes for a serial port. */
  | { kind: "data"; payload: Uint8Array }
  /** Everything after this was written after the writer saw `Hello` with `nonce`. */
  | { kind: "sync"; nonce: bigint }
  /** A clock probe (`clientUs`: µs since the Unix epoch), answered by `Pong`. */
  | { kind: "ping"; id: number; clientUs: bigint };

/** A message on the server's `ctl` track, read by every relay client. */
export type Ctl =
  /** The server subscribed to `writer`; it answers `Sync(nonce)`. `writes`: relay writes accepted. */
  | { kind: "hello"; writer: string; nonce: bigint; writes: boolean; serverUs: bigint }
  /** The writer is in sync; data for it starts at group `dataGroup` of the server's `data` track. */
  | { kind: "synced"; writer: string; nonce: bigint; dataGroup: bigint }
  /** Answer to a `Ping`. */
  | { kind: "pong"; writer: string; id: number; clientUs: bigint; serverUs: bigint }
  /** Something `writer` sent was refused (writes off, a frame the device cannot carry). */
  | { kind: "refused"; writer: string; code: number; message: string }
  /** CAN: the controller's error state changed (code as in the CAN protocol's BusState). */
  | { kind: "busState"; code: number }
  /** The device disappeared; the server reopens it when it returns. */
  | { kind: "deviceLost"; reason: string }
  /** The device is back. */
  | { kind: "deviceRestored" }
  /** The server is stopping. */
  | { kind: "bye"; reason: string };

const W_DATA = 0x00;
const W_SYNC = 0x01;
const W_PING = 0x02;

const C_HELLO = 0x01;
const C_SYNCED = 0x02;
const C_PONG = 0x03;
const C_REFUSED = 0x04;
const C_BUS_STATE = 0x05;
const C_DEVICE_LOST = 0x06;
const C_DEVICE_RESTORED = 0x07;
const C_BYE = 0x08;

const U64_MAX = (1n << 64n) - 1n;
const utf8 = new TextEncoder();
const strictUtf8 = new TextDecoder("utf-8", { fatal: true, ignoreBOM: true });

function checkU64(v: bigint, field: string): bigint {
  if (typeof v !== "bigint" || v < 0n || v > U64_MAX) throw new CodecError(`${field} ${String(v)} is not a u64`);
  return v;
}

function checkUint(v: number, bits: 8 | 16 | 32, field: string): number {
  if (!Number.isInteger(v) || v < 0 || v >= 2 ** bits) throw new CodecError(`${field} ${String(v)} is not a u${bits}`);
  return v;
}

// A string as Rust's put_string writes it: UTF-8, cut to MAX_STRING bytes on a char boundary.
function stringBytes(s: string): Uint8Array {
  const b = utf8.encode(s);
  if (b.length <= MAX_STRING) return b;
  let end = MAX_STRING;
  // Back off over UTF-8 continuation bytes (10xxxxxx) to the start of a character.
  while (end > 0 && ((b[end] as number) & 0xc0) === 0x80) end--;
  return b.subarray(0, end);
}

/** Builds one message: fixed-size big-endian fields and varint-prefixed strings. */
class Out {
  readonly parts: Uint8Array[] = [];
  len = 0;
  #push(b: Uint8Array): void {
    this.parts.push(b);
    this.len += b.length;
  }
  u8(v: number): this {
    this.#push(Uint8Array.of(v));
    return this;
  }
  u16(v: number): this {
    this.#push(Uint8Array.of(v >> 8, v & 0xff));
    return this;
  }
  u32(v: number): this {
    const b = new Uint8Array(4);
    new DataView(b.buffer).setUint32(0, v);
    this.#push(b);
    return this;
  }
  u64(v: bigint): this {
    const b = new Uint8Array(8);
    new DataView(b.buffer).setBigUint64(0, v);
    this.#push(b);
    return this;
  }
  str(s: string): this {
    const b = stringBytes(s);
    const head = new Uint8Array(varintSize(b.length));
    putVarint(head, 0, b.length);
    this.#push(head);
    this.#push(b);
    return this;
  }
  bytes(b: Uint8Array): this {
    this.#push(b);
    return this;
  }
  done(): Uint8Array {
    const out = new Uint8Array(this.len);
    let o = 0;
    for (const p of this.parts) {
      out.set(p, o);
      o += p.length;
    }
    return out;
  }
}

/** Reads one message; every read checks the bytes left first, so nothing reads past the end. */
class In {
  #b: Uint8Array;
  #view: DataView;
  #o = 1; // after the kind byte
  constructor(b: Uint8Array) {
    this.#b = b;
    this.#view = new DataView(b.buffer, b.byteOffset, b.byteLength);
  }
  #need(n: number): number {
    if (this.#b.length - this.#o < n) throw new CodecError("truncated message");
    const at = this.#o;
    this.#o += n;
    return at;
  }
  u8(): number {
    return this.#view.getUint8(this.#need(1));
  }
  u16(): number {
    return this.#view.getUint16(this.#need(2));
  }
  u32(): number {
    return this.#view.getUint32(this.#need(4));
  }
  u64(): bigint {
    return this.#view.getBigUint64(this.#need(8));
  }
  bool(field: string): boolean {
    const v = this.u8();
    if (v > 1) throw new CodecError(`invalid ${field}: boolean must be 0 or 1`);
    return v === 1;
  }
  str(field: string, max = MAX_STRING): string {
    const v = readVarint(this.#b, this.#o);
    if (v === undefined) throw new CodecError("truncated message");
    // Checked against the bound and the bytes present before anything is copied.
    if (v.value > BigInt(MAX_STRING)) throw new CodecError(`${field} of ${v.value} bytes exceeds the maximum of ${MAX_STRING}`);
    this.#o += v.size;
    const len = Number(v.value);
    const at = this.#need(len);
    let s: string;
    try {
      s = strictUtf8.decode(this.#b.subarray(at, at + len));
    } catch {
      throw new CodecError(`invalid ${field}: not UTF-8`);
    }
    if (len > max) throw new CodecError(`${field} of ${len} bytes exceeds the maximum of ${max}`);
    return s;
  }
  end<T>(v: T): T {
    const left = this.#b.length - this.#o;
    if (left !== 0) throw new CodecError(`${left} unexpected trailing bytes in message`);
    return v;
  }
}

/** Encode a writer frame (one MoQ frame). Throws CodecError for out-of-range numbers. */
export function encodeWriterMsg(m: WriterMsg): Uint8Array {
  switch (m.kind) {
    case "data":
      return dataFrame(m.payload);
    case "sync":
      return new Out().u8(W_SYNC).u64(checkU64(m.nonce, "nonce")).done();
    case "ping":
      return new Out().u8(W_PING).u32(checkUint(m.id, 32, "ping id")).u64(checkU64(m.clientUs, "client_us")).done();
    default:
      throw new CodecError(`unknown writer message kind ${String((m as { kind: unknown }).kind)}`);
  }
}

/** A `Data` writer frame: the kind byte, then `payload` (copied). */
export function dataFrame(payload: Uint8Array): Uint8Array {
  const out = new Uint8Array(1 + payload.length);
  out[0] = W_DATA;
  out.set(payload, 1);
  return out;
}

/** Decode a writer frame. `Data` copies its payload (the input may be reused). */
export function decodeWriterMsg(frame: Uint8Array): WriterMsg {
  const kind = frame[0];
  if (kind === undefined) throw new CodecError("invalid writer frame: empty");
  const r = new In(frame);
  switch (kind) {
    case W_DATA:
      return { kind: "data", payload: frame.slice(1) };
    case W_SYNC:
      return r.end({ kind: "sync", nonce: r.u64() });
    case W_PING: {
      const id = r.u32();
      return r.end({ kind: "ping", id, clientUs: r.u64() });
    }
    default:
      throw new CodecError(`unknown message kind 0x${kind.toString(16).padStart(2, "0")}`);
  }
}

/** Encode a control message (one MoQ frame). Throws CodecError for out-of-range numbers. */
export function encodeCtl(m: Ctl): Uint8Array {
  switch (m.kind) {
    case "hello":
      return new Out()
        .u8(C_HELLO)
        .str(m.writer)
        .u64(checkU64(m.nonce, "nonce"))
        .u8(m.writes ? 1 : 0)
        .u64(checkU64(m.serverUs, "server_us"))
        .done();
    case "synced":
      return new Out().u8(C_SYNCED).str(m.writer).u64(checkU64(m.nonce, "nonce")).u64(checkU64(m.dataGroup, "data_group")).done();
    case "pong":
      return new Out()
        .u8(C_PONG)
        .str(m.writer)
        .u32(checkUint(m.id, 32, "ping id"))
        .u64(checkU64(m.clientUs, "client_us"))
        .u64(checkU64(m.serverUs, "server_us"))
        .done();
    case "refused":
      return new Out().u8(C_REFUSED).str(m.writer).u16(checkUint(m.code, 16, "code")).str(m.message).done();
    case "busState":
      return new Out().u8(C_BUS_STATE).u8(checkUint(m.code, 8, "bus state")).done();
    case "deviceLost":
      return new Out().u8(C_DEVICE_LOST).str(m.reason).done();
    case "deviceRestored":
      return Uint8Array.of(C_DEVICE_RESTORED);
    case "bye":
      return new Out().u8(C_BYE).str(m.reason).done();
    default:
      throw new CodecError(`unknown ctl message kind ${String((m as { kind: unknown }).kind)}`);
  }
}

/** Decode a control message. */
export function decodeCtl(frame: Uint8Array): Ctl {
  const kind = frame[0];
  if (kind === undefined) throw new CodecError("invalid ctl frame: empty");
  const r = new In(frame);
  switch (kind) {
    case C_HELLO: {
      const writer = r.str("writer", MAX_WRITER);
      const nonce = r.u64();
      const writes = r.bool("writes");
      return r.end({ kind: "hello", writer, nonce, writes, serverUs: r.u64() });
    }
    case C_SYNCED: {
      const writer = r.str("writer", MAX_WRITER);
      const nonce = r.u64();
      return r.end({ kind: "synced", writer, nonce, dataGroup: r.u64() });
    }
    case C_PONG: {
      const writer = r.str("writer", MAX_WRITER);
      const id = r.u32();
      const clientUs = r.u64();
      return r.end({ kind: "pong", writer, id, clientUs, serverUs: r.u64() });
    }
    case C_REFUSED: {
      const writer = r.str("writer", MAX_WRITER);
      const code = r.u16();
      return r.end({ kind: "refused", writer, code, message: r.str("message") });
    }
    case C_BUS_STATE:
      return r.end({ kind: "busState", code: r.u8() });
    case C_DEVICE_LOST:
      return r.end({ kind: "deviceLost", reason: r.str("reason") });
    case C_DEVICE_RESTORED:
      return r.end({ kind: "deviceRestored" });
    case C_BYE:
      return r.end({ kind: "bye", reason: r.str("reason") });
    default:
      throw new CodecError(`unknown message kind 0x${kind.toString(16).padStart(2, "0")}`);
  }
}

/** The writer a control message is addressed to, if any (notices are for every client). */
export function ctlWriter(m: Ctl): string | undefined {
  switch (m.kind) {
    case "hello":
    case "synced":
    case "pong":
    case "refused":
      return m.writer;
    default:
      return undefined;
  }
}
