// Lossless 16-bit depth pictures: the decoder of the depth blob `xoq_media::depth` writes,
// the relay depth track's frames, and the camera description the hang catalog carries.
//
// A depth blob is the same bytes on every path (P2P, relay, recordings):
//
//   codec u8 | width u16 BE | height u16 BE | payload
//
// codec 0 = raw (u16 little-endian per pixel), 1 = RVL, 2 = RVL then raw deflate (RFC 1951).
// RVL, as the Rust encoder writes it: pixels in row order alternate between a run of zeros
// (no measurement) and a run of non-zero values; each pair is the zero count, the non-zero
// count, then each value as the zig-zagged difference from the previous non-zero value
// (from 0). Every number is a variable-length code of 3-bit chunks, least significant first,
// one per nibble, bit 3 set when another chunk follows; nibbles are packed high first and an
// odd count ends with a 0 nibble.
//
// Decoding is total and bounded like the Rust decoder: the size is checked before anything
// is allocated, inflating stops at the largest valid RVL stream for that size, and damaged
// bytes give a CodecError, never a hang or a wrong picture. The vectors `xoq vectors` prints
// check this decoder against the Rust encoder bit for bit.

import { CodecError } from "./can.js";

/** Largest depth picture decoded by default: 4096 × 4096 (no depth camera comes close). */
export const MAX_DEPTH_PIXELS = 4096 * 4096;

/** Header bytes before the payload. */
export const DEPTH_HEADER_LEN = 5;

/** Payload codings, as numbered in the blob's first byte. */
export const DEPTH_RAW = 0;
export const DEPTH_RVL = 1;
export const DEPTH_RVL_DEFLATE = 2;

/** The hang catalog's name and MIME type of the relay depth track. */
export const DEPTH_TRACK = "depth";
export const DEPTH_MIME = "application/x-xoq-depth";

/** A decoded depth picture: one value per pixel in device units (see `scale`), 0 = none. */
export interface DepthImage {
  width: number;
  height: number;
  /** `width × height` values, row by row. */
  data: Uint16Array;
}

/**
 * The largest RVL stream `n` pixels can give (a pixel costs at most a 6-nibble value plus two
 * 1-nibble counts); anything longer is damage. The same bound as the Rust decoder's.
 */
export function rvlBound(n: number): number {
  return n * 4 + 16;
}

/** Input is handed to the inflater in slices this big, so a deflate bomb cannot expand a
 * whole blob at once inside the stream before the size check sees it (about 1000:1 at most). */
const INFLATE_SLICE = 4096;

/**
 * Decode a depth blob, refusing pictures over `maxPixels`. Async only because raw deflate
 * goes through the platform's `DecompressionStream('deflate-raw')` (browsers, Node ≥ 18).
 * Throws {@link CodecError} on any damage.
 */
export async function decodeDepth(blob: Uint8Array, maxPixels = MAX_DEPTH_PIXELS): Promise<DepthImage> {
  if (blob.length < DEPTH_HEADER_LEN) throw new CodecError("depth blob shorter than the 5-byte header");
  const codec = blob[0]!;
  const width = (blob[1]! << 8) | blob[2]!;
  const height = (blob[3]! << 8) | blob[4]!;
  const n = width * height;
  if (codec > DEPTH_RVL_DEFLATE) throw new CodecError(`unknown depth codec ${codec}`);
  if (n > maxPixels) throw new CodecError(`depth picture ${width}x${height} is over the limit of ${maxPixels} pixels`);
  const payload = blob.subarray(DEPTH_HEADER_LEN);
  let data: Uint16Array;
  if (codec === DEPTH_RAW) {
    if (payload.length !== n * 2) {
      throw new CodecError(`raw depth payload of ${payload.length} bytes for ${width}x${height}`);
    }
    data = new Uint16Array(n);
    for (let i = 0; i < n; i++) data[i] = payload[2 * i]! | (payload[2 * i + 1]! << 8);
  } else if (codec === DEPTH_RVL) {
    data = decodeRvl(payload, n);
  } else {
    data = decodeRvl(await inflateRaw(payload, rvlBound(n)), n);
  }
  return { width, height, data };
}

/** Decode an RVL stream of exactly `n` pixels (no header). Throws {@link CodecError}. */
export function decodeRvl(bytes: Uint8Array, n: number): Uint16Array {
  if (!Number.isSafeInteger(n) || n < 0) throw new CodecError(`invalid pixel count ${n}`);
  if (bytes.length > rvlBound(n)) throw new CodecError("RVL stream longer than any picture of this size");
  const out = new Uint16Array(n);
  // Next nibble: byte `at`, its high half first.
  let at = 0;
  let high = true;
  // A number of at most `maxChunks` chunks. 32-bit shifts drop bits past 32 exactly as the
  // Rust decoder's u32 does, so both accept and refuse the same streams.
  const vle = (maxChunks: number): number => {
    let v = 0;
    for (let k = 0; k < maxChunks; k++) {
      const byte = bytes[at];
      if (byte === undefined) throw new CodecError("RVL stream ends before the last pixel");
      let nibble: number;
      if (high) {
        nibble = byte >>> 4;
      } else {
        nibble = byte & 15;
        at++;
      }
      high = !high;
      v |= (nibble & 7) << (3 * k);
      if ((nibble & 8) === 0) return v >>> 0;
    }
    throw new CodecError("RVL code longer than its field");
  };
  let filled = 0;
  let prev = 0;
  while (filled < n) {
    // A count fits 32 bits in 11 chunks; a zig-zagged difference (17 bits) in 6.
    const zeros = vle(11);
    if (zeros > n - filled) throw new CodecError("zero run past the end of the picture");
    filled += zeros; // `out` starts zeroed
    const nonzeros = vle(11);
    if (nonzeros > n - filled) throw new CodecError("value run past the end of the picture");
    // Every pair must advance, so the loop ends on any input.
    if (zeros === 0 && nonzeros === 0) throw new CodecError("empty run pair");
    for (let i = 0; i < nonzeros; i++) {
      const z = vle(6);
      const v = prev + ((z >>> 1) ^ -(z & 1));
      if (v < 1 || v > 0xffff) throw new CodecError(`value ${v} outside 1..=65535`);
      out[filled++] = v;
      prev = v;
    }
  }
  // Only the padding nibble of an odd count may follow.
  const used = high ? at : at + 1;
  if (used !== bytes.length || (!high && (bytes[at]! & 15) !== 0)) {
    throw new CodecError("bytes after the last pixel");
  }
  return out;
}

/**
 * Inflate raw deflate, refusing more than `cap` bytes of output: reading stops (and the
 * stream is cancelled) as soon as the output passes the cap. Bytes after the end of the
 * deflate stream are refused by the platform where it follows the Compression spec
 * (browsers, Node ≥ 24); Node 20 ignores them, and the RVL checks still apply to the output.
 */
async function inflateRaw(input: Uint8Array, cap: number): Promise<Uint8Array> {
  if (typeof DecompressionStream !== "function") {
    throw new Error("this runtime has no DecompressionStream: cannot inflate depth (codec 2)");
  }
  const ds = new DecompressionStream("deflate-raw");
  const writer = ds.writable.getWriter();
  const reader = ds.readable.getReader();
  // Fed concurrently with the reads below: a write completes only once its output is read.
  // Its failures (damage, cancellation) surface on the reader, so they are dropped here.
  void (async () => {
    for (let o = 0; o < input.length; o += INFLATE_SLICE) {
      await writer.write(input.slice(o, o + INFLATE_SLICE));
    }
    await writer.close();
  })().catch(() => {});
  const chunks: Uint8Array[] = [];
  let total = 0;
  try {
    for (;;) {
      const { done, value } = await reader.read();
      if (done) break;
      total += value.byteLength;
      if (total > cap) {
        reader.cancel().catch(() => {});
        throw new CodecError("deflate stream inflates past any picture of this size");
      }
      chunks.push(value);
    }
  } catch (e) {
    if (e instanceof CodecError) throw e;
    throw new CodecError(`deflate: ${e instanceof Error ? e.message : String(e)}`);
  }
  if (chunks.length === 1) return chunks[0]!;
  const out = new Uint8Array(total);
  let o = 0;
  for (const c of chunks) {
    out.set(c, o);
    o += c.byteLength;
  }
  return out;
}

/** One frame of the relay depth track: when it was captured, its number, its depth blob. */
export interface DepthTrackFrame {
  /** Capture time, µs since the Unix epoch (robot clock). */
  timestampUs: bigint;
  /** Frame number, counting every capture (a gap means frames were skipped). */
  seq: bigint;
  /** The depth blob, for {@link decodeDepth}; a view into `payload`, not a copy. */
  blob: Uint8Array;
}

/** Split a relay depth track frame: `timestamp_us u64 BE | seq u64 BE | depth blob`. */
export function parseDepthTrackFrame(payload: Uint8Array): DepthTrackFrame {
  if (payload.length < 16) throw new CodecError(`depth track frame of ${payload.length} bytes is shorter than its 16-byte header`);
  const view = new DataView(payload.buffer, payload.byteOffset, payload.byteLength);
  return {
    timestampUs: view.getBigUint64(0, false),
    seq: view.getBigUint64(8, false),
    blob: payload.subarray(16),
  };
}

/** Pinhole intrinsics of one stream, as librealsense's `rs2_intrinsics`. */
export interface Intrinsics {
  /** Picture size the intrinsics are for. */
  width: number;
  height: number;
  /** Focal lengths in pixels. */
  fx: number;
  fy: number;
  /** Principal point in pixel coordinates. */
  ppx: number;
  ppy: number;
  /** Distortion model by librealsense's name (`"none"`, `"brown_conrady"`, …). */
  model: string;
  /** Distortion coefficients (5). */
  coeffs: number[];
}

/** What a depth broadcast says about its camera (the catalog's `xoq.depth`). */
export interface DepthInfo {
  /** Metres per depth unit (0.001 on a RealSense D4xx: values are millimetres). */
  scale: number;
  /** Intrinsics of the depth picture and of the colour picture. */
  depth: Intrinsics;
  color: Intrinsics;
  /** Camera model name and serial number ("" when the server gave none). */
  name: string;
  serial: string;
}

const finite = (x: unknown): x is number => typeof x === "number" && Number.isFinite(x);

function intrinsicsFrom(j: unknown): Intrinsics | undefined {
  if (typeof j !== "object" || j === null) return undefined;
  const o = j as Record<string, unknown>;
  const { width, height, fx, fy, ppx, ppy } = o;
  // What deprojection needs must be there; the distortion description may be left out.
  if (!finite(width) || !finite(height) || !finite(fx) || !finite(fy) || !finite(ppx) || !finite(ppy)) return undefined;
  if (fx === 0 || fy === 0) return undefined;
  const coeffs = Array.isArray(o.coeffs) && o.coeffs.every(finite) ? (o.coeffs as number[]).slice() : [0, 0, 0, 0, 0];
  return { width, height, fx, fy, ppx, ppy, model: typeof o.model === "string" ? o.model : "none", coeffs };
}

/**
 * The depth camera description in a hang catalog (`catalog.xoq.depth`), or `undefined` when
 * the catalog has none or it lacks the scale or intrinsics (a viewer then cannot place
 * points in space, so a partial description is treated as none).
 */
export function depthInfoFromCatalog(catalog: any): DepthInfo | undefined {
  const d: unknown = catalog?.xoq?.depth;
  if (typeof d !== "object" || d === null) return undefined;
  const o = d as Record<string, unknown>;
  if (!finite(o.scale) || o.scale <= 0) return undefined;
  const depth = intrinsicsFrom(o.depthIntrinsics);
  const color = intrinsicsFrom(o.colorIntrinsics);
  if (depth === undefined || color === undefined) return undefined;
  return {
    scale: o.scale,
    depth,
    color,
    name: typeof o.name === "string" ? o.name : "",
    serial: typeof o.serial === "string" ? o.serial : "",
  };
}

/**
 * The point (metres, camera frame: x right, y down, z forward) seen at pixel (`u`, `v`) at
 * depth `depthMetres` (value × scale), by the pinhole model; distortion is not applied.
 */
export function deproject(intr: Intrinsics, u: number, v: number, depthMetres: number): [number, number, number] {
  return [((u - intr.ppx) / intr.fx) * depthMetres, ((v - intr.ppy) / intr.fy) * depthMetres, depthMetres];
}
