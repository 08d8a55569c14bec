// QUIC variable-length integers (RFC 9000 §16): the integer encoding of xoq's wire formats
// and of MoQ itself, so one implementation serves every decoder in this package.

/** Largest value a QUIC varint can hold (2^62 − 1); bigint because it exceeds 2^53. */
export const VARINT_MAX = (1n << 62n) - 1n;

/** A decoded varint and how many bytes it took, so callers can advance their cursor. */
export interface VarintRead {
  /** The value; bigint because 8-byte varints exceed Number.MAX_SAFE_INTEGER. */
  value: bigint;
  /** Encoded size in bytes: 1, 2, 4 or 8. */
  size: 1 | 2 | 4 | 8;
}

const LOG2 = { 1: 0, 2: 1, 4: 2, 8: 3 } as const;

function toBig(v: number | bigint): bigint {
  if (typeof v === "number" && !Number.isSafeInteger(v)) {
    throw new RangeError(`varint value ${v} is not a safe integer`);
  }
  const b = BigInt(v);
  if (b < 0n || b > VARINT_MAX) {
    throw new RangeError(`varint value ${b} is outside 0..2^62-1`);
  }
  return b;
}

/**
 * Encoded size of `v`, so a writer can size its buffer before encoding. Throws RangeError
 * for values a varint cannot hold (negative, over 2^62 − 1, or unsafe numbers).
 */
export function varintSize(v: number | bigint): 1 | 2 | 4 | 8 {
  const b = toBig(v);
  if (b < 64n) return 1;
  if (b < 16384n) return 2;
  if (b < 1073741824n) return 4;
  return 8;
}

/**
 * Write `v` into `out` at `offset` and return the bytes written. Throws RangeError for values
 * a varint cannot hold: silently clamping would corrupt a length field.
 */
export function putVarint(out: Uint8Array, offset: number, v: number | bigint): number {
  const size = varintSize(v);
  let b = toBig(v);
  // The two top bits of the first byte carry log2(size).
  b |= BigInt(LOG2[size]) << BigInt(size * 8 - 2);
  for (let i = size - 1; i >= 0; i--) {
    out[offset + i] = Number(b & 0xffn);
    b >>= 8n;
  }
  return size;
}

/** Encode `v` as a fresh byte array (see {@link putVarint} for the errors). */
export function encodeVarint(v: number | bigint): Uint8Array {
  const out = new Uint8Array(varintSize(v));
  putVarint(out, 0, v);
  return out;
}

/**
 * Read a varint at `offset`. Returns `undefined` when the bytes end before the varint does,
 * so stream readers can wait for more instead of treating a split varint as an error.
 */
export function readVarint(bytes: Uint8Array, offset = 0): VarintRead | undefined {
  const first = bytes[offset];
  if (first === undefined) return undefined;
  const size = (1 << (first >> 6)) as 1 | 2 | 4 | 8;
  if (offset + size > bytes.length) return undefined;
  let value = BigInt(first & 0x3f);
  for (let i = 1; i < size; i++) {
    value = (value << 8n) | BigInt(bytes[offset + i] ?? 0);
  }
  return { value, size };
}
