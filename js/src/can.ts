// CAN frames and batches as xoq puts them on the wire (docs/protocol.md, "CAN, P2P" and
// "CAN, MoQ"). The rules mirror crates/xoq-wire/src/can.rs; the unit tests check both
// implementations against vectors the Rust codec prints, so they cannot drift apart.

import { putVarint, readVarint, varintSize } from "./varint.js";

/**
 * One CAN or CAN FD frame with the time it was seen. Plain data, so pages can build, log
 * and compare frames without a class.
 */
export interface CanFrame {
  /** 11-bit id, 29-bit id when `extended`; for an error frame, SocketCAN's error class bits. */
  id: number;
  /** 29-bit identifier. */
  extended: boolean;
  /** Remote transmission request: no data, `rtrLen` bytes requested (classic frames only). */
  rtr: boolean;
  /** Error frame reported by a controller (classic, standard id; data holds the details). */
  error: boolean;
  /** CAN FD frame. */
  fd: boolean;
  /** Bit-rate switch for the data phase (FD only). */
  brs: boolean;
  /** Error state indicator: the sender was error passive (FD only). */
  esi: boolean;
  /** Data bytes: 0–8 classic, an FD length for FD, empty for RTR. */
  data: Uint8Array;
  /** Length a remote frame requests (0–8); 0 on any other frame. */
  rtrLen: number;
  /**
   * Microseconds since the Unix epoch: the server's receive time for bus frames, the send
   * time for frames a client sends (servers drop stale commands with `--max-cmd-age`).
   */
  timestampUs: bigint;
}

/**
 * Bytes that are not a valid batch, or a frame that cannot be encoded. It is the only error
 * the codec throws, so callers can tell bad input from a bug.
 */
export class CodecError extends Error {
  override name = "CodecError";
}

/** Most frames in one batch; decoders refuse a larger count before allocating anything. */
export const MAX_BATCH = 1024;
/** Largest standard (11-bit) identifier; larger ids are extended. */
export const SFF_MAX = 0x7ff;
/** Largest extended (29-bit) identifier. */
export const EFF_MAX = 0x1fffffff;
/** Encoded size of a frame without data: what the batch decoder checks a count against. */
export const FRAME_HEADER_LEN = 14;

const U64_MAX = (1n << 64n) - 1n;
const FD_LONG_LENS = [12, 16, 20, 24, 32, 48, 64];

const FLAG_EXTENDED = 1 << 0;
const FLAG_RTR = 1 << 1;
const FLAG_ERROR = 1 << 2;
const FLAG_FD = 1 << 3;
const FLAG_BRS = 1 << 4;
const FLAG_ESI = 1 << 5;
const FLAG_RESERVED = 0xc0;

/**
 * Smallest valid CAN FD length holding `n` bytes (0–8, 12, 16, 20, 24, 32, 48, 64), or
 * `undefined` over 64: FD frames are never padded implicitly, so senders pad with this.
 */
export function fdLenRoundUp(n: number): number | undefined {
  if (n <= 8) return n;
  return FD_LONG_LENS.find((l) => l >= n);
}

function isFdLen(n: number): boolean {
  return Number.isInteger(n) && n >= 0 && fdLenRoundUp(n) === n;
}

// The checks that need only the header, shared by the encoder and the decoder so a bad
// header is refused before any data is read. `len` is the length byte as on the wire.
function checkShape(f: Omit<CanFrame, "data" | "rtrLen" | "timestampUs">, len: number): void {
  if (!Number.isInteger(f.id) || f.id < 0) throw new CodecError(`invalid CAN id ${f.id}`);
  if (f.error) {
    if (f.extended || f.rtr || f.fd) {
      throw new CodecError("an error frame cannot be extended, remote or FD");
    }
    if (f.id > EFF_MAX) throw new CodecError(`error class 0x${f.id.toString(16)} is over 29 bits`);
  } else if (f.extended) {
    if (f.id > EFF_MAX) throw new CodecError(`CAN id 0x${f.id.toString(16)} is over 29 bits`);
  } else if (f.id > SFF_MAX) {
    throw new CodecError(`standard CAN id 0x${f.id.toString(16)} is over 0x7FF; set extended`);
  }
  if (f.rtr && f.fd) throw new CodecError("CAN FD has no remote (RTR) frames");
  if ((f.brs || f.esi) && !f.fd) throw new CodecError("BRS and ESI are CAN FD flags");
  if (f.fd) {
    if (!isFdLen(len)) throw new CodecError(`${len} bytes is not a CAN FD length`);
  } else if (len > 8) {
    throw new CodecError(
      f.rtr ? `a remote frame requests at most 8 bytes, not ${len}` : `a classic frame carries at most 8 bytes, not ${len}`,
    );
  }
}

/**
 * Check every invariant of a frame (id range, FD-only flags, lengths, RTR rules), throwing
 * CodecError: a server refuses a batch with one bad frame, so it is caught before sending.
 */
export function validateFrame(f: CanFrame): void {
  if (!(f.data instanceof Uint8Array)) throw new CodecError("data must be a Uint8Array");
  if (f.rtr && f.data.length !== 0) throw new CodecError("a remote frame carries no data; use rtrLen");
  if (!f.rtr && f.rtrLen !== 0) throw new CodecError("rtrLen must be 0 unless the frame is remote");
  if (f.rtr && (!Number.isInteger(f.rtrLen) || f.rtrLen < 0)) {
    throw new CodecError(`invalid rtrLen ${f.rtrLen}`);
  }
  if (typeof f.timestampUs !== "bigint" || f.timestampUs < 0n || f.timestampUs > U64_MAX) {
    throw new CodecError("timestampUs must be a bigint in 0..2^64-1");
  }
  checkShape(f, f.rtr ? f.rtrLen : f.data.length);
}

/** Microseconds since the Unix epoch, with sub-millisecond resolution where the clock has it. */
export function unixMicros(): bigint {
  return BigInt(Math.round((performance.timeOrigin + performance.now()) * 1000));
}

/**
 * Build a valid frame with the usual defaults (extended iff `id` > 0x7FF, timestamp = now),
 * because most senders only care about id and data. `opts` overrides any field; the result
 * is validated (CodecError).
 */
export function canFrame(id: number, data: ArrayLike<number> = [], opts: Partial<CanFrame> = {}): CanFrame {
  const f: CanFrame = {
    id,
    extended: id > SFF_MAX,
    rtr: false,
    error: false,
    fd: false,
    brs: false,
    esi: false,
    data: Uint8Array.from(data),
    rtrLen: 0,
    timestampUs: unixMicros(),
    ...opts,
  };
  validateFrame(f);
  return f;
}

/**
 * Encode frames as one batch (`count varint | frames`): the payload of one MoQ frame on
 * `{path}/cmd` or `{path}/state`. Throws CodecError for an invalid frame or more than
 * {@link MAX_BATCH} frames, which a server would refuse as a whole.
 */
export function encodeBatch(frames: readonly CanFrame[]): Uint8Array {
  if (frames.length > MAX_BATCH) {
    throw new CodecError(`a batch holds at most ${MAX_BATCH} frames, not ${frames.length}`);
  }
  let size = varintSize(frames.length);
  for (const f of frames) {
    validateFrame(f);
    size += FRAME_HEADER_LEN + (f.rtr ? 0 : f.data.length);
  }
  const out = new Uint8Array(size);
  const view = new DataView(out.buffer);
  let o = putVarint(out, 0, frames.length);
  for (const f of frames) {
    const flags =
      (f.extended ? FLAG_EXTENDED : 0) |
      (f.rtr ? FLAG_RTR : 0) |
      (f.error ? FLAG_ERROR : 0) |
      (f.fd ? FLAG_FD : 0) |
      (f.brs ? FLAG_BRS : 0) |
      (f.esi ? FLAG_ESI : 0);
    out[o] = flags;
    view.setUint32(o + 1, f.id);
    view.setBigUint64(o + 5, f.timestampUs);
    out[o + 13] = f.rtr ? f.rtrLen : f.data.length;
    o += FRAME_HEADER_LEN;
    if (!f.rtr) {
      out.set(f.data, o);
      o += f.data.length;
    }
  }
  return out;
}

/**
 * Decode one batch (the whole content of one MoQ frame). Total: any bytes give frames or a
 * CodecError, never another exception, and nothing is allocated beyond what the input
 * holds, because the bytes come from the network. Trailing bytes are an error.
 */
export function decodeBatch(bytes: Uint8Array): CanFrame[] {
  if (!(bytes instanceof Uint8Array)) throw new CodecError("a batch must be a Uint8Array");
  const head = readVarint(bytes, 0);
  if (head === undefined) throw new CodecError("truncated batch: missing frame count");
  if (head.value > BigInt(MAX_BATCH)) {
    throw new CodecError(`batch of ${head.value} frames is over the maximum of ${MAX_BATCH}`);
  }
  const count = Number(head.value);
  let o = head.size;
  // Every frame takes at least a header, so a count the bytes cannot back is refused here
  // and never sizes anything.
  if (bytes.length - o < count * FRAME_HEADER_LEN) {
    throw new CodecError(`truncated batch: ${count} frames need at least ${count * FRAME_HEADER_LEN} bytes`);
  }
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const frames: CanFrame[] = [];
  for (let i = 0; i < count; i++) {
    if (bytes.length - o < FRAME_HEADER_LEN) throw new CodecError(`truncated frame ${i}`);
    const flags = view.getUint8(o);
    if (flags & FLAG_RESERVED) throw new CodecError(`frame ${i}: reserved flag bits 6-7 set`);
    const rtr = (flags & FLAG_RTR) !== 0;
    const len = view.getUint8(o + 13);
    const header = {
      id: view.getUint32(o + 1),
      extended: (flags & FLAG_EXTENDED) !== 0,
      rtr,
      error: (flags & FLAG_ERROR) !== 0,
      fd: (flags & FLAG_FD) !== 0,
      brs: (flags & FLAG_BRS) !== 0,
      esi: (flags & FLAG_ESI) !== 0,
    };
    try {
      checkShape(header, len);
    } catch (e) {
      throw new CodecError(`frame ${i}: ${(e as Error).message}`);
    }
    const timestampUs = view.getBigUint64(o + 5);
    o += FRAME_HEADER_LEN;
    const dataLen = rtr ? 0 : len;
    if (bytes.length - o < dataLen) throw new CodecError(`frame ${i}: truncated data`);
    // A copy: MoQ payloads are shared with other readers and must not be aliased.
    const data = bytes.slice(o, o + dataLen);
    o += dataLen;
    frames.push({ ...header, data, rtrLen: rtr ? len : 0, timestampUs });
  }
  if (o !== bytes.length) throw new CodecError(`${bytes.length - o} trailing bytes after the batch`);
  return frames;
}

/**
 * Prefix a batch with `len u8 | token`, the format of XoQ 0.3's `--moq-cmd-token`. The token is
 * UTF-8, at most 255 bytes.
 * @deprecated Servers now refuse `--moq-cmd-token` (any subscriber could read and replay it);
 * relay tokens (`?jwt=` in the relay URL) decide who may send.
 */
export function withToken(batch: Uint8Array, token: string): Uint8Array {
  const t = new TextEncoder().encode(token);
  if (t.length > 255) throw new CodecError(`token of ${t.length} bytes is over 255`);
  const out = new Uint8Array(1 + t.length + batch.length);
  out[0] = t.length;
  out.set(t, 1);
  out.set(batch, 1 + t.length);
  return out;
}
