// Feetech STS/SCS servo packets ("protocol 0"), as on an SO-100/SO-101 arm's serial bus and
// in xoq's simulator. Instruction `FF FF id len instr params… chk`, status
// `FF FF id len err params… chk`, len = params + 2, chk = ~(id + len + instr/err + Σparams).

/** PING instruction: the servo answers with an empty status. */
export const PING = 0x01;
/** READ instruction: params (addr, len). */
export const READ = 0x02;
/** WRITE instruction: params (addr, data…). */
export const WRITE = 0x03;
/** SYNC_READ instruction: params (addr, len, ids…); each servo answers in turn. */
export const SYNC_READ = 0x82;
/** SYNC_WRITE instruction: params (addr, len, then id + data per servo); no answer. */
export const SYNC_WRITE = 0x83;
/** Broadcast id, for SYNC_READ/SYNC_WRITE. */
export const BROADCAST = 0xfe;
/** Control table: Model_Number (2 bytes; 777 for an STS3215). */
export const MODEL_NUMBER = 3;
/** Control table: Torque_Enable (1 byte). */
export const TORQUE_ENABLE = 40;
/** Control table: Goal_Position (2 bytes, little-endian). */
export const GOAL_POSITION = 42;
/** Control table: Present_Position (2 bytes, little-endian). */
export const PRESENT_POSITION = 56;

/** Largest params a packet can carry: the length byte counts params + 2. */
export const MAX_PARAMS = 253;

function checksum(bytes: ArrayLike<number>, from: number, to: number): number {
  let sum = 0;
  for (let i = from; i < to; i++) sum += bytes[i] ?? 0;
  return ~sum & 0xff;
}

function byte(v: number, what: string): number {
  if (!Number.isInteger(v) || v < 0 || v > 0xff) throw new RangeError(`${what} ${v} is not a byte`);
  return v;
}

function u16le(v: number, what: string): [number, number] {
  if (!Number.isInteger(v) || v < 0 || v > 0xffff) throw new RangeError(`${what} ${v} is not a 16-bit value`);
  return [v & 0xff, v >> 8];
}

/**
 * Encode an instruction packet. Throws RangeError for non-byte values or more than
 * {@link MAX_PARAMS} params, which the length byte cannot express.
 */
export function instruction(id: number, instr: number, params: ArrayLike<number> = []): Uint8Array {
  if (params.length > MAX_PARAMS) throw new RangeError(`${params.length} params is over ${MAX_PARAMS}`);
  const out = new Uint8Array(params.length + 6);
  out.set([0xff, 0xff, byte(id, "id"), params.length + 2, byte(instr, "instruction")]);
  for (let i = 0; i < params.length; i++) out[5 + i] = byte(params[i] ?? -1, "param");
  out[out.length - 1] = checksum(out, 2, out.length - 1);
  return out;
}

/** READ of servo `id`'s present position (2 bytes). */
export function readPosition(id: number): Uint8Array {
  return instruction(id, READ, [PRESENT_POSITION, 2]);
}

/** WRITE of servo `id`'s goal position (0–65535; STS servos use 0–4095 per turn). */
export function writeGoalPosition(id: number, pos: number): Uint8Array {
  return instruction(id, WRITE, [GOAL_POSITION, ...u16le(pos, "position")]);
}

/** SYNC_READ of the present positions of `ids`: one request, one status per servo. */
export function syncReadPositions(ids: readonly number[]): Uint8Array {
  return instruction(BROADCAST, SYNC_READ, [PRESENT_POSITION, 2, ...ids]);
}

/** SYNC_WRITE of goal positions (servo id → position) in one packet, as arms stream them. */
export function syncWriteGoals(goals: ReadonlyMap<number, number> | Readonly<Record<number, number>>): Uint8Array {
  const entries: [number, number][] =
    goals instanceof Map ? [...goals] : Object.entries(goals).map(([k, v]) => [Number(k), v]);
  const params = [GOAL_POSITION, 2];
  for (const [id, pos] of entries) params.push(id, ...u16le(pos, "position"));
  return instruction(BROADCAST, SYNC_WRITE, params);
}

/** WRITE of Torque_Enable: `on` holds position, off lets the arm be moved by hand. */
export function torqueEnable(id: number, on: boolean): Uint8Array {
  return instruction(id, WRITE, [TORQUE_ENABLE, on ? 1 : 0]);
}

/** A status packet a servo sent back. */
export interface StatusPacket {
  /** Servo id. */
  id: number;
  /** Error bits (0 = fine). */
  error: number;
  /** Returned data (for READ: the bytes read, little-endian). */
  params: Uint8Array;
}

// The largest packet is 4 header bytes + len 255; nothing longer ever needs buffering.
const MAX_PACKET = 4 + 255;

/**
 * Incremental status-packet parser for a byte stream that arrives in arbitrary chunks (as
 * serial over MoQ does). It keeps partial packets across pushes, skips garbage up to the
 * next `FF FF`, drops packets whose checksum is wrong, and buffers at most one packet.
 */
export class StatusParser {
  /** Packets dropped because their checksum did not match. */
  badChecksums = 0;
  /** Bytes skipped while looking for a packet header. */
  skippedBytes = 0;
  #buf = new Uint8Array(0);

  /** Feed received bytes; returns every packet they complete, in order. */
  push(bytes: Uint8Array): StatusPacket[] {
    let buf: Uint8Array;
    if (this.#buf.length === 0) {
      buf = bytes;
    } else {
      buf = new Uint8Array(this.#buf.length + bytes.length);
      buf.set(this.#buf);
      buf.set(bytes, this.#buf.length);
    }
    const out: StatusPacket[] = [];
    let o = 0;
    for (;;) {
      // Find the next FF FF header.
      let start = o;
      while (start + 1 < buf.length && !(buf[start] === 0xff && buf[start + 1] === 0xff)) start++;
      if (start + 1 >= buf.length) {
        // No header: keep a trailing FF, which may start one in the next push.
        const keep = buf.length > o && buf[buf.length - 1] === 0xff ? 1 : 0;
        this.skippedBytes += buf.length - keep - o;
        o = buf.length - keep;
        break;
      }
      this.skippedBytes += start - o;
      o = start;
      if (buf.length - o < 4) break;
      const id = buf[o + 2] ?? 0;
      const len = buf[o + 3] ?? 0;
      // Id 0xFF is no servo: this FF is garbage or a third FF in front of the real header.
      // A length under 2 cannot hold the error byte and checksum.
      if (id === 0xff || len < 2) {
        this.skippedBytes += 1;
        o += 1;
        continue;
      }
      const total = 4 + len;
      if (buf.length - o < total) break;
      if (checksum(buf, o + 2, o + total - 1) !== buf[o + total - 1]) {
        // The header may have been garbage that looked like one: resync one byte on, so a
        // real packet it overlapped is still found.
        this.badChecksums++;
        this.skippedBytes += 1;
        o += 1;
        continue;
      }
      out.push({ id, error: buf[o + 4] ?? 0, params: buf.slice(o + 5, o + total - 1) });
      o += total;
    }
    // Whatever is left is one incomplete packet (or a lone FF), at most MAX_PACKET bytes.
    this.#buf = buf.slice(o, o + MAX_PACKET);
    return out;
  }

  /** Bytes held back as the start of an incomplete packet (always ≤ 259). */
  get pending(): number {
    return this.#buf.length;
  }

  /** Forget a partial packet, e.g. after a timeout, so the next packet parses cleanly. */
  reset(): void {
    this.#buf = new Uint8Array(0);
  }
}
