// Damiao DM-series motors (the OpenArm's joints) in MIT mode, as LeRobot's DamiaoMotorsBus
// and xoq (crates/xoq-wire/src/damiao.rs, used by the simulator) speak it. Scaling is done the
// simulator's way (float32 inputs, double arithmetic, truncation), so commands built here
// are bit-identical to the Rust ones; the unit tests compare against its vectors.

/**
 * Factory scaling limits per model: [PMAX rad, VMAX rad/s, TMAX N·m]. Commands and feedback
 * are scaled over ±PMAX/±VMAX/±TMAX, so decoding with the wrong model gives wrong values.
 */
export const DAMIAO_LIMITS = {
  DM4310: [12.5, 30, 10],
  DM4310_48V: [12.5, 50, 10],
  DM4340: [12.5, 8, 28],
  DM6006: [12.5, 45, 20],
  DM8006: [12.5, 45, 40],
  DM8009: [12.5, 45, 54],
  DM10010: [12.5, 20, 200],
} as const satisfies Record<string, readonly [number, number, number]>;

/** A Damiao model name, the key into {@link DAMIAO_LIMITS}. */
export type DamiaoModel = keyof typeof DAMIAO_LIMITS;

/** Scaling limits [PMAX, VMAX, TMAX], for motors whose PMAX/VMAX/TMAX registers were changed. */
export type DamiaoLimits = readonly [pmax: number, vmax: number, tmax: number];

/** One motor on a Damiao bus: where to send commands and where its feedback comes from. */
export interface DamiaoMotor {
  /** Command (ESC) id the host sends to. */
  id: number;
  /** Master id the motor replies on. */
  replyId: number;
  /** Model, for scaling. */
  model: DamiaoModel;
}

/** The OpenArm's eight motors, shoulder to gripper (the simulator's `sim:openarm` layout). */
export const OPENARM_MOTORS: readonly DamiaoMotor[] = Object.freeze(
  (
    [
      [0x01, "DM8009"],
      [0x02, "DM8009"],
      [0x03, "DM4340"],
      [0x04, "DM4340"],
      [0x05, "DM4310"],
      [0x06, "DM4310"],
      [0x07, "DM4310"],
      [0x08, "DM4310"],
    ] as const
  ).map(([id, model]) => Object.freeze({ id, replyId: id + 0x10, model })),
);

/** Enable command (sent on a motor's command id); the motor answers with feedback. */
export const ENABLE: readonly number[] = Object.freeze([0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xfc]);
/** Disable command: the motor drops torque. */
export const DISABLE: readonly number[] = Object.freeze([0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xfd]);
/** Make the current position the motor's zero. */
export const SET_ZERO: readonly number[] = Object.freeze([0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xfe]);
/** Clear a fault state, needed before a faulted motor can be enabled again. */
export const CLEAR_ERROR: readonly number[] = Object.freeze([0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xfb]);

/** Arbitration id of parameter frames (refresh, register read/write, save). */
export const PARAM_ID = 0x7ff;
/** Upper end of the MIT kp range (lower end 0). */
export const KP_MAX = 500;
/** Upper end of the MIT kd range (lower end 0). */
export const KD_MAX = 5;

function limitsOf(model: DamiaoModel | DamiaoLimits): DamiaoLimits {
  if (typeof model === "string") {
    const l = DAMIAO_LIMITS[model] as DamiaoLimits | undefined;
    if (l === undefined) throw new RangeError(`unknown Damiao model ${String(model)}`);
    return l;
  }
  return model;
}

/**
 * Map `x` in [min, max] onto a `bits`-wide code: clamp, scale, truncate. Inputs are rounded
 * to float32 first because the Rust side takes f32; NaN maps to 0 as there.
 */
export function floatToUint(x: number, min: number, max: number, bits: number): number {
  const full = 2 ** bits - 1;
  const lo = Math.fround(min);
  const hi = Math.fround(max);
  let v = Math.fround(x);
  if (Number.isNaN(v)) v = lo;
  const clamped = Math.min(Math.max(v, lo), hi);
  const code = Math.trunc(((clamped - lo) / (hi - lo)) * full);
  return Number.isNaN(code) ? 0 : Math.min(Math.max(code, 0), full);
}

/** Inverse of {@link floatToUint}: the bottom of code `u`'s quantum, as a float32 value. */
export function uintToFloat(u: number, min: number, max: number, bits: number): number {
  const full = 2 ** bits - 1;
  const lo = Math.fround(min);
  const hi = Math.fround(max);
  const norm = Math.min(u, full) / full;
  return Math.fround(norm * (hi - lo) + lo);
}

/**
 * MIT command payload: position p (rad), velocity v (rad/s), gains kp (0–500) and kd (0–5),
 * feed-forward torque t (N·m). Out-of-range values are clamped, as the motor would.
 */
export function encodeMit(
  model: DamiaoModel | DamiaoLimits,
  p: number,
  v: number,
  kp: number,
  kd: number,
  t: number,
): Uint8Array {
  const [pmax, vmax, tmax] = limitsOf(model);
  const pc = floatToUint(p, -pmax, pmax, 16);
  const vc = floatToUint(v, -vmax, vmax, 12);
  const kpc = floatToUint(kp, 0, KP_MAX, 12);
  const kdc = floatToUint(kd, 0, KD_MAX, 12);
  const tc = floatToUint(t, -tmax, tmax, 12);
  return Uint8Array.of(
    pc >> 8,
    pc & 0xff,
    vc >> 4,
    ((vc & 0xf) << 4) | (kpc >> 8),
    kpc & 0xff,
    kdc >> 4,
    ((kdc & 0xf) << 4) | (tc >> 8),
    tc & 0xff,
  );
}

/** A motor's feedback frame, decoded. */
export interface DamiaoFeedback {
  /** Low nibble of byte 0: the motor's command id (low 4 bits). */
  motorId: number;
  /** High nibble of byte 0: 0 disabled, 1 enabled, 8–0xE fault codes. */
  state: number;
  /** Position, rad. */
  position: number;
  /** Velocity, rad/s. */
  velocity: number;
  /** Torque, N·m. */
  torque: number;
  /** Driver (MOSFET) temperature, °C. */
  tMos: number;
  /** Rotor (coil) temperature, °C. */
  tRotor: number;
}

/**
 * Decode a feedback payload from a motor of `model`; `null` if shorter than 8 bytes (bytes
 * past the 8th, such as CAN FD padding, are ignored, as LeRobot does).
 */
export function decodeFeedback(model: DamiaoModel | DamiaoLimits, data: ArrayLike<number>): DamiaoFeedback | null {
  if (data.length < 8) return null;
  const b = (i: number): number => (data[i] ?? 0) & 0xff;
  const [pmax, vmax, tmax] = limitsOf(model);
  const p = (b(1) << 8) | b(2);
  const v = (b(3) << 4) | (b(4) >> 4);
  const t = ((b(4) & 0xf) << 8) | b(5);
  return {
    motorId: b(0) & 0xf,
    state: b(0) >> 4,
    position: uintToFloat(p, -pmax, pmax, 16),
    velocity: uintToFloat(v, -vmax, vmax, 12),
    torque: uintToFloat(t, -tmax, tmax, 12),
    tMos: b(6),
    tRotor: b(7),
  };
}

/**
 * Payload for {@link PARAM_ID} asking motor `cmdId` for feedback without moving it, so a
 * page can poll the arm's pose while nothing else is commanding it.
 */
export function refreshRequest(cmdId: number): Uint8Array {
  return Uint8Array.of(cmdId & 0xff, (cmdId >> 8) & 0xff, 0xcc, 0, 0, 0, 0, 0);
}
