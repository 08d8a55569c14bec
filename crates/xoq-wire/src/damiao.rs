//! Damiao DM-series motor protocol, as LeRobot's `DamiaoMotorsBus` speaks it over CAN
//! (the OpenArm's motors): the frames, the fixed-point scaling, and pure encoders and
//! decoders for them. Nothing here does I/O; carry the 8-byte payloads in any CAN frame
//! (e.g. [`crate::can::CanFrame`]). The simulated bus in `xoq-device` (`sim::damiao`) is
//! built on this module.
//!
//! A program driving real motors through xoq imports this module only, e.g.
//! `use xoq::wire::damiao::{MotorModel, CMD_ENABLE, CMD_DISABLE, encode_mit, decode_feedback}`
//! (or `xoq_wire::damiao` without the facade crate):
//!
//! ```
//! use xoq_wire::damiao::{self, CMD_ENABLE, MotorModel, STATE_ENABLED};
//!
//! // Enable motor 0x01 by sending CMD_ENABLE on its command id, then command it in MIT mode.
//! let _enable: (u32, [u8; 8]) = (0x01, CMD_ENABLE);
//! let mit = damiao::encode_mit(MotorModel::DM4310, 1.0, 0.0, 30.0, 1.0, 0.0);
//! assert_eq!(mit, [0x8A, 0x3C, 0x7F, 0xF0, 0xF5, 0x33, 0x37, 0xFF]);
//! // Each command is answered with one feedback frame on the motor's master id (0x11).
//! let reply = [0x11, 0x80, 0x00, 0x7F, 0xF7, 0xFF, 30, 31];
//! let fb = damiao::decode_feedback(MotorModel::DM4310, &reply).expect("8 bytes");
//! assert_eq!((fb.motor_id, fb.state, fb.temp_mos), (1, STATE_ENABLED, 30));
//! ```
//!
//! # Frames
//!
//! Every frame has a standard (11-bit) id and 8 data bytes; a motor answers each command
//! with exactly one frame on its master id and never sends anything unprompted.
//!
//! - On a motor's command id: the special frames enable ([`CMD_ENABLE`], `FF×7 FC`), disable
//!   ([`CMD_DISABLE`], `FF×7 FD`), set zero ([`CMD_SET_ZERO`], `FF×7 FE`) and clear error
//!   ([`CMD_CLEAR_ERROR`], `FF×7 FB`); any other 8 bytes are an MIT command
//!   ([`encode_mit`]), bit-packed big-endian as
//!   `position:16 | velocity:12 | kp:12 | kd:12 | torque:12`.
//! - On [`PARAM_ID`] (0x7FF): `cmd_id_lo cmd_id_hi op rid value[4]` with `op` one of
//!   [`PARAM_REFRESH`] (reply with feedback), [`PARAM_READ`], [`PARAM_WRITE`] (reply with
//!   the register echoed: same layout, the stored value little-endian) and [`PARAM_SAVE`]
//!   (reply acknowledges); see [`refresh_request`] and its siblings.
//! - Feedback ([`decode_feedback`]), on the master id:
//!   `state:4 | motor_id:4 | position:16 | velocity:12 | torque:12 | temp_mos:8 | temp_rotor:8`,
//!   with `motor_id` the low nibble of the command id and `state` one of the `STATE_*`
//!   codes. Bytes past the 8th (CAN FD padding) are ignored.
//!
//! # Scaling
//!
//! Each field maps a range onto an unsigned code ([`float_to_uint`]): position over
//! ±PMAX, velocity over ±VMAX, torque over ±TMAX (the model's [`MotorModel::limits`], or the
//! motor's PMAX/VMAX/TMAX registers if they were rewritten: use the `*_with` functions
//! then), kp over `0..=`[`KP_MAX`] and kd over `0..=`[`KD_MAX`]. Values are clamped to the
//! range and truncated, computed in `f64` as LeRobot's Python floats do, so codes agree bit
//! for bit with LeRobot for the same (f32-representable) inputs; a decoded value is the
//! bottom of its code's quantum.

use std::time::Duration;

/// Arbitration id of parameter frames (refresh, register read/write, save).
pub const PARAM_ID: u32 = 0x7FF;
/// Enable a motor (sent on its command id).
pub const CMD_ENABLE: [u8; 8] = [0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFC];
/// Disable a motor (sent on its command id).
pub const CMD_DISABLE: [u8; 8] = [0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFD];
/// Make the current position the motor's zero (sent on its command id).
pub const CMD_SET_ZERO: [u8; 8] = [0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFE];
/// Clear a fault state (sent on its command id).
pub const CMD_CLEAR_ERROR: [u8; 8] = [0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFB];

/// Parameter-frame command byte: reply with feedback.
pub const PARAM_REFRESH: u8 = 0xCC;
/// Parameter-frame command byte: read a register.
pub const PARAM_READ: u8 = 0x33;
/// Parameter-frame command byte: write a register.
pub const PARAM_WRITE: u8 = 0x55;
/// Parameter-frame command byte: save registers to flash.
pub const PARAM_SAVE: u8 = 0xAA;

/// Register: master (reply) id, u32.
pub const REG_MST_ID: u8 = 7;
/// Register: command id, u32.
pub const REG_ESC_ID: u8 = 8;
/// Register: deadman timeout in units of [`TIMEOUT_UNIT`], u32; 0 is off.
pub const REG_TIMEOUT: u8 = 9;
/// Register: control mode ([`MODE_MIT`] ..= [`MODE_TORQUE_POS`]), u32.
pub const REG_CTRL_MODE: u8 = 10;
/// Register: position scaling limit in rad, f32.
pub const REG_PMAX: u8 = 21;
/// Register: velocity scaling limit in rad/s, f32.
pub const REG_VMAX: u8 = 22;
/// Register: torque scaling limit in N·m, f32.
pub const REG_TMAX: u8 = 23;

/// Control mode: MIT impedance control (the only mode the simulator in xoq-device moves in).
pub const MODE_MIT: u32 = 1;
/// Control mode: position with velocity limit.
pub const MODE_POS_VEL: u32 = 2;
/// Control mode: velocity.
pub const MODE_VEL: u32 = 3;
/// Control mode: torque-limited position.
pub const MODE_TORQUE_POS: u32 = 4;

/// State code: disabled (no torque).
pub const STATE_DISABLED: u8 = 0;
/// State code: enabled.
pub const STATE_ENABLED: u8 = 1;
/// Fault code: over-voltage.
pub const STATE_OVER_VOLTAGE: u8 = 0x8;
/// Fault code: under-voltage.
pub const STATE_UNDER_VOLTAGE: u8 = 0x9;
/// Fault code: over-current.
pub const STATE_OVER_CURRENT: u8 = 0xA;
/// Fault code: MOS over-temperature.
pub const STATE_MOS_OVER_TEMP: u8 = 0xB;
/// Fault code: coil over-temperature.
pub const STATE_COIL_OVER_TEMP: u8 = 0xC;
/// Fault code: communication lost (the TIMEOUT deadman fired).
pub const STATE_COMM_LOSS: u8 = 0xD;
/// Fault code: overload.
pub const STATE_OVERLOAD: u8 = 0xE;

/// Upper end of the MIT kp range (lower end 0).
pub const KP_MAX: f32 = 500.0;
/// Upper end of the MIT kd range (lower end 0).
pub const KD_MAX: f32 = 5.0;
/// Unit of the TIMEOUT register.
pub const TIMEOUT_UNIT: Duration = Duration::from_micros(50);

/// The OpenArm's motors as (command id, master id, model), shoulder to gripper.
pub const OPENARM_MOTORS: [(u32, u32, MotorModel); 8] = [
    (0x01, 0x11, MotorModel::DM8009),
    (0x02, 0x12, MotorModel::DM8009),
    (0x03, 0x13, MotorModel::DM4340),
    (0x04, 0x14, MotorModel::DM4340),
    (0x05, 0x15, MotorModel::DM4310),
    (0x06, 0x16, MotorModel::DM4310),
    (0x07, 0x17, MotorModel::DM4310),
    (0x08, 0x18, MotorModel::DM4310),
];

///
/// The names follow Damiao's and LeRobot's spelling, hence the underscore.
#[allow(non_camel_case_types)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MotorModel {
    /// DM-J4310-2EC, 24 V.
    DM4310,
    /// DM-J4310-2EC, 48 V.
    DM4310_48V,
    /// DM-J4340-2EC.
    DM4340,
    /// DM-J6006-2EC.
    DM6006,
    /// DM-J8006-2EC.
    DM8006,
    /// DM-J8009-2EC.
    DM8009,
    /// DM-J10010-2EC.
    DM10010,
}

impl MotorModel {
    /// Every model, smallest first.
    pub const ALL: [MotorModel; 7] = [
        MotorModel::DM4310,
        MotorModel::DM4310_48V,
        MotorModel::DM4340,
        MotorModel::DM6006,
        MotorModel::DM8006,
        MotorModel::DM8009,
        MotorModel::DM10010,
    ];

    /// Factory scaling limits (PMAX rad, VMAX rad/s, TMAX N·m), as in LeRobot's tables.
    pub fn limits(self) -> (f32, f32, f32) {
        match self {
            MotorModel::DM4310 => (12.5, 30.0, 10.0),
            MotorModel::DM4310_48V => (12.5, 50.0, 10.0),
            MotorModel::DM4340 => (12.5, 8.0, 28.0),
            MotorModel::DM6006 => (12.5, 45.0, 20.0),
            MotorModel::DM8006 => (12.5, 45.0, 40.0),
            MotorModel::DM8009 => (12.5, 45.0, 54.0),
            MotorModel::DM10010 => (12.5, 20.0, 200.0),
        }
    }
}

/// One decoded MIT command.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct MitCommand {
    /// Target position, rad.
    pub position: f32,
    /// Target velocity, rad/s.
    pub velocity: f32,
    /// Position gain, N·m/rad.
    pub kp: f32,
    /// Velocity gain, N·m·s/rad.
    pub kd: f32,
    /// Feed-forward torque, N·m.
    pub torque: f32,
}

/// One decoded feedback frame.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Feedback {
    /// Low nibble of the motor's command id.
    pub motor_id: u8,
    /// State code: [`STATE_DISABLED`], [`STATE_ENABLED`] or a fault (8..=0xE).
    pub state: u8,
    /// Position, rad.
    pub position: f32,
    /// Velocity, rad/s.
    pub velocity: f32,
    /// Applied torque, N·m.
    pub torque: f32,
    /// Driver MOSFET temperature, °C.
    pub temp_mos: u8,
    /// Coil temperature, °C.
    pub temp_rotor: u8,
}

/// Full-scale code of a `bits`-wide field.
fn full_scale(bits: u32) -> u32 {
    if bits >= 32 {
        u32::MAX
    } else {
        (1u32 << bits) - 1
    }
}

/// Map `x` in `[min, max]` onto a `bits`-wide unsigned code: clamp, scale, truncate.
///
/// Computed in `f64` like LeRobot's Python, so codes match it exactly. NaN maps to 0.
pub fn float_to_uint(x: f32, min: f32, max: f32, bits: u32) -> u32 {
    let full = full_scale(bits);
    let (x, min, max) = (f64::from(x), f64::from(min), f64::from(max));
    // max/min rather than clamp: clamp panics on NaN bounds or min > max.
    let clamped = x.max(min).min(max);
    let norm = (clamped - min) / (max - min);
    // `as` truncates like Python's int() and maps NaN to 0.
    ((norm * f64::from(full)) as u32).min(full)
}

/// Inverse of [`float_to_uint`]: the value at the bottom of code `u`'s quantum.
pub fn uint_to_float(u: u32, min: f32, max: f32, bits: u32) -> f32 {
    let full = full_scale(bits);
    if full == 0 {
        return min;
    }
    let norm = f64::from(u.min(full)) / f64::from(full);
    (norm * (f64::from(max) - f64::from(min)) + f64::from(min)) as f32
}

/// MIT command frame for a motor of `model`.
pub fn encode_mit(model: MotorModel, p: f32, v: f32, kp: f32, kd: f32, t: f32) -> [u8; 8] {
    encode_mit_with(
        model.limits(),
        MitCommand {
            position: p,
            velocity: v,
            kp,
            kd,
            torque: t,
        },
    )
}

/// Decode an MIT command frame for a motor of `model`; `None` unless exactly 8 bytes.
pub fn decode_mit(model: MotorModel, data: &[u8]) -> Option<MitCommand> {
    let data: [u8; 8] = data.try_into().ok()?;
    Some(decode_mit_with(model.limits(), data))
}

/// Feedback frame payload as a motor of `model` sends it.
pub fn encode_feedback(model: MotorModel, feedback: &Feedback) -> [u8; 8] {
    encode_feedback_with(model.limits(), feedback)
}

/// Decode a feedback payload from a motor of `model`; `None` if shorter than 8 bytes (bytes
/// past the 8th, e.g. FD padding, are ignored, as LeRobot does).
pub fn decode_feedback(model: MotorModel, data: &[u8]) -> Option<Feedback> {
    decode_feedback_with(model.limits(), data)
}

/// [`decode_feedback`] with explicit scaling limits (PMAX rad, VMAX rad/s, TMAX N·m), for a
/// motor whose PMAX/VMAX/TMAX registers differ from its model's factory values.
pub fn decode_feedback_with((pmax, vmax, tmax): (f32, f32, f32), data: &[u8]) -> Option<Feedback> {
    let &[b0, b1, b2, b3, b4, b5, b6, b7, ..] = data else {
        return None;
    };
    let p = u32::from(b1) << 8 | u32::from(b2);
    let v = u32::from(b3) << 4 | u32::from(b4 >> 4);
    let t = u32::from(b4 & 0x0F) << 8 | u32::from(b5);
    Some(Feedback {
        motor_id: b0 & 0x0F,
        state: b0 >> 4,
        position: uint_to_float(p, -pmax, pmax, 16),
        velocity: uint_to_float(v, -vmax, vmax, 12),
        torque: uint_to_float(t, -tmax, tmax, 12),
        temp_mos: b6,
        temp_rotor: b7,
    })
}

/// 0x7FF payload asking motor `cmd_id` for feedback.
pub fn refresh_request(cmd_id: u32) -> [u8; 8] {
    param_request(cmd_id, PARAM_REFRESH, 0, [0; 4])
}

/// 0x7FF payload reading register `rid` of motor `cmd_id`.
pub fn read_register_request(cmd_id: u32, rid: u8) -> [u8; 8] {
    param_request(cmd_id, PARAM_READ, rid, [0; 4])
}

/// 0x7FF payload writing `value` (u32 or f32, little-endian) to register `rid`.
pub fn write_register_request(cmd_id: u32, rid: u8, value: [u8; 4]) -> [u8; 8] {
    param_request(cmd_id, PARAM_WRITE, rid, value)
}

/// 0x7FF payload saving motor `cmd_id`'s registers to flash.
pub fn save_request(cmd_id: u32) -> [u8; 8] {
    param_request(cmd_id, PARAM_SAVE, 0x01, [0; 4])
}

/// 0x7FF payload with any command byte `op`: the layout the builders above share
/// (`cmd_id` little-endian in bytes 0–1, then `op`, register `rid` and `value`).
pub fn param_request(cmd_id: u32, op: u8, rid: u8, value: [u8; 4]) -> [u8; 8] {
    let [lo, hi, ..] = cmd_id.to_le_bytes();
    let [v0, v1, v2, v3] = value;
    [lo, hi, op, rid, v0, v1, v2, v3]
}

/// [`encode_mit`] with explicit scaling limits (PMAX rad, VMAX rad/s, TMAX N·m), for a
/// motor whose PMAX/VMAX/TMAX registers differ from its model's factory values.
pub fn encode_mit_with((pmax, vmax, tmax): (f32, f32, f32), c: MitCommand) -> [u8; 8] {
    let p = float_to_uint(c.position, -pmax, pmax, 16);
    let v = float_to_uint(c.velocity, -vmax, vmax, 12);
    let kp = float_to_uint(c.kp, 0.0, KP_MAX, 12);
    let kd = float_to_uint(c.kd, 0.0, KD_MAX, 12);
    let t = float_to_uint(c.torque, -tmax, tmax, 12);
    // `as u8` keeps the low byte; each code fits its field width, so none spills over.
    [
        (p >> 8) as u8,
        p as u8,
        (v >> 4) as u8,
        ((v & 0xF) << 4 | kp >> 8) as u8,
        kp as u8,
        (kd >> 4) as u8,
        ((kd & 0xF) << 4 | t >> 8) as u8,
        t as u8,
    ]
}

/// [`decode_mit`] of exactly 8 bytes with explicit scaling limits (PMAX rad, VMAX rad/s,
/// TMAX N·m).
pub fn decode_mit_with((pmax, vmax, tmax): (f32, f32, f32), d: [u8; 8]) -> MitCommand {
    let [d0, d1, d2, d3, d4, d5, d6, d7] = d.map(u32::from);
    MitCommand {
        position: uint_to_float(d0 << 8 | d1, -pmax, pmax, 16),
        velocity: uint_to_float(d2 << 4 | d3 >> 4, -vmax, vmax, 12),
        kp: uint_to_float((d3 & 0xF) << 8 | d4, 0.0, KP_MAX, 12),
        kd: uint_to_float(d5 << 4 | d6 >> 4, 0.0, KD_MAX, 12),
        torque: uint_to_float((d6 & 0xF) << 8 | d7, -tmax, tmax, 12),
    }
}

/// [`encode_feedback`] with explicit scaling limits (PMAX rad, VMAX rad/s, TMAX N·m), as a
/// motor whose PMAX/VMAX/TMAX registers were rewritten sends it.
pub fn encode_feedback_with((pmax, vmax, tmax): (f32, f32, f32), f: &Feedback) -> [u8; 8] {
    let p = float_to_uint(f.position, -pmax, pmax, 16);
    let v = float_to_uint(f.velocity, -vmax, vmax, 12);
    let t = float_to_uint(f.torque, -tmax, tmax, 12);
    [
        (f.motor_id & 0x0F) | (f.state << 4),
        (p >> 8) as u8,
        p as u8,
        (v >> 4) as u8,
        ((v & 0xF) << 4 | t >> 8) as u8,
        t as u8,
        f.temp_mos,
        f.temp_rotor,
    ]
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn float_uint_round_trip_within_one_quantum() {
        for bits in [12, 16] {
            for (min, max) in [(-12.5f32, 12.5f32), (-30.0, 30.0), (0.0, 500.0), (0.0, 5.0)] {
                let quantum = (max - min) / ((1u32 << bits) - 1) as f32;
                for i in 0..=1000 {
                    let x = min + (max - min) * i as f32 / 1000.0;
                    let back = uint_to_float(float_to_uint(x, min, max, bits), min, max, bits);
                    assert!(
                        back <= x + 1e-4 && x - back <= quantum * 1.001,
                        "{x} -> {back} (bits {bits}, quantum {quantum})"
                    );
                }
            }
        }
        // Clamping, truncation and the ends of the range.
        assert_eq!(float_to_uint(100.0, -12.5, 12.5, 16), 0xFFFF);
        assert_eq!(float_to_uint(-100.0, -12.5, 12.5, 16), 0);
        assert_eq!(float_to_uint(0.0, -30.0, 30.0, 12), 2047);
        assert_eq!(uint_to_float(0xFFF, -30.0, 30.0, 12), 30.0);
        // Degenerate inputs are total.
        assert_eq!(float_to_uint(f32::NAN, -1.0, 1.0, 12), 0);
        assert_eq!(float_to_uint(1.0, 1.0, 1.0, 12), 0);
        assert_eq!(float_to_uint(1.0, 2.0, -2.0, 12), 0xFFF);
        assert_eq!(float_to_uint(1.0, -1.0, 1.0, 40), u32::MAX);
        assert_eq!(uint_to_float(5, -1.0, 1.0, 0), -1.0);
    }

    #[test]
    fn mit_encoding_snapshot() {
        // p 1.0 -> 0x8A3C, v 0 -> 0x7FF, kp 30 -> 0x0F5, kd 1 -> 0x333, t 0 -> 0x7FF.
        assert_eq!(
            encode_mit(MotorModel::DM4310, 1.0, 0.0, 30.0, 1.0, 0.0),
            [0x8A, 0x3C, 0x7F, 0xF0, 0xF5, 0x33, 0x37, 0xFF]
        );
        // DM8009 scaling (±12.5 rad, ±45 rad/s, ±54 N·m), cross-checked against LeRobot's
        // Python formulas.
        assert_eq!(
            encode_mit(MotorModel::DM8009, -2.0, 5.0, 10.0, 0.5, -3.0),
            [0x6B, 0x84, 0x8E, 0x30, 0x51, 0x19, 0x97, 0x8D]
        );
        let c = decode_mit(
            MotorModel::DM4310,
            &[0x8A, 0x3C, 0x7F, 0xF0, 0xF5, 0x33, 0x37, 0xFF],
        )
        .expect("8 bytes");
        assert!((c.position - 1.0).abs() < 1e-3 && (c.kp - 30.0).abs() < 0.2);
        assert!((c.kd - 1.0).abs() < 1e-3 && c.velocity.abs() < 0.01 && c.torque.abs() < 0.01);
        assert_eq!(decode_mit(MotorModel::DM4310, &[0; 7]), None);
    }

    #[test]
    fn feedback_snapshot() {
        let f = Feedback {
            motor_id: 3,
            state: STATE_ENABLED,
            position: -0.5,
            velocity: 2.0,
            torque: 5.0,
            temp_mos: 31,
            temp_rotor: 33,
        };
        // p 0x7AE0, v 0x9FF, t 0x96D over DM4340's ±12.5 / ±8 / ±28.
        let bytes = [0x13, 0x7A, 0xE0, 0x9F, 0xF9, 0x6D, 0x1F, 0x21];
        assert_eq!(encode_feedback(MotorModel::DM4340, &f), bytes);
        let d = decode_feedback(MotorModel::DM4340, &bytes).expect("8 bytes");
        assert_eq!(
            (d.motor_id, d.state, d.temp_mos, d.temp_rotor),
            (3, 1, 31, 33)
        );
        assert!((d.position + 0.5).abs() < 1e-3);
        assert!((d.velocity - 2.0).abs() < 0.004);
        assert!((d.torque - 5.0).abs() < 0.014);
        // FD padding past 8 bytes is ignored; short frames are rejected.
        let mut padded = bytes.to_vec();
        padded.extend([0; 4]);
        assert_eq!(decode_feedback(MotorModel::DM4340, &padded), Some(d));
        assert_eq!(decode_feedback(MotorModel::DM4340, &bytes[..7]), None);
    }

    #[test]
    fn param_request_builders() {
        assert_eq!(refresh_request(0x102), [0x02, 0x01, 0xCC, 0, 0, 0, 0, 0]);
        assert_eq!(read_register_request(3, 10), [3, 0, 0x33, 10, 0, 0, 0, 0]);
        assert_eq!(
            write_register_request(3, 9, [1, 2, 3, 4]),
            [3, 0, 0x55, 9, 1, 2, 3, 4]
        );
        assert_eq!(save_request(8), [8, 0, 0xAA, 1, 0, 0, 0, 0]);
    }

    fn model() -> impl Strategy<Value = MotorModel> {
        proptest::sample::select(MotorModel::ALL.to_vec())
    }

    proptest! {
        #[test]
        fn mit_round_trips_within_quantisation(
            model in model(),
            p in -1.0f32..=1.0,
            v in -1.0f32..=1.0,
            kp in 0.0f32..=KP_MAX,
            kd in 0.0f32..=KD_MAX,
            t in -1.0f32..=1.0,
        ) {
            let (pmax, vmax, tmax) = model.limits();
            let (p, v, t) = (p * pmax, v * vmax, t * tmax);
            let c = decode_mit(model, &encode_mit(model, p, v, kp, kd, t)).expect("8 bytes");
            // Truncation puts the decoded value at the bottom of the input's quantum; allow
            // for f32 rounding at the largest magnitudes (TMAX 200).
            let within = |x: f32, back: f32, range: f32, bits: u32| {
                let quantum = range / ((1u32 << bits) - 1) as f32;
                let slack = range * 1e-6;
                x - back >= -slack && x - back <= quantum + slack
            };
            prop_assert!(within(p, c.position, 2.0 * pmax, 16), "{p} {c:?}");
            prop_assert!(within(v, c.velocity, 2.0 * vmax, 12), "{v} {c:?}");
            prop_assert!(within(kp, c.kp, KP_MAX, 12), "{kp} {c:?}");
            prop_assert!(within(kd, c.kd, KD_MAX, 12), "{kd} {c:?}");
            prop_assert!(within(t, c.torque, 2.0 * tmax, 12), "{t} {c:?}");
        }

        #[test]
        fn feedback_round_trips_within_quantisation(
            model in model(),
            id in 0u8..16,
            state in 0u8..16,
            p in -1.0f32..=1.0,
            v in -1.0f32..=1.0,
            t in -1.0f32..=1.0,
            temps in any::<(u8, u8)>(),
        ) {
            let (pmax, vmax, tmax) = model.limits();
            let f = Feedback {
                motor_id: id,
                state,
                position: p * pmax,
                velocity: v * vmax,
                torque: t * tmax,
                temp_mos: temps.0,
                temp_rotor: temps.1,
            };
            let d = decode_feedback(model, &encode_feedback(model, &f)).expect("8 bytes");
            prop_assert_eq!((d.motor_id, d.state, d.temp_mos, d.temp_rotor), (id, state, temps.0, temps.1));
            prop_assert!((d.position - f.position).abs() <= 2.0 * pmax / 65535.0 * 1.001 + 1e-5);
            prop_assert!((d.velocity - f.velocity).abs() <= 2.0 * vmax / 4095.0 * 1.001 + 1e-5);
            prop_assert!((d.torque - f.torque).abs() <= 2.0 * tmax / 4095.0 * 1.001 + 1e-4);
        }

        /// Any bytes: an MIT command iff exactly 8, every field finite and in its range.
        #[test]
        fn decode_mit_total(
            model in model(),
            bytes in prop_oneof![
                any::<[u8; 8]>().prop_map(Vec::from),
                proptest::collection::vec(any::<u8>(), 0..16),
            ],
        ) {
            let (pmax, vmax, tmax) = model.limits();
            match decode_mit(model, &bytes) {
                None => prop_assert_ne!(bytes.len(), 8),
                Some(c) => {
                    prop_assert_eq!(bytes.len(), 8);
                    prop_assert!(c.position.abs() <= pmax && c.velocity.abs() <= vmax, "{c:?}");
                    prop_assert!((0.0..=KP_MAX).contains(&c.kp), "{c:?}");
                    prop_assert!((0.0..=KD_MAX).contains(&c.kd), "{c:?}");
                    prop_assert!(c.torque.abs() <= tmax, "{c:?}");
                }
            }
        }

        /// Any bytes: feedback iff at least 8, every field finite and in its range.
        #[test]
        fn decode_feedback_total(
            model in model(),
            bytes in proptest::collection::vec(any::<u8>(), 0..80),
        ) {
            let (pmax, vmax, tmax) = model.limits();
            match decode_feedback(model, &bytes) {
                None => prop_assert!(bytes.len() < 8),
                Some(f) => {
                    prop_assert!(bytes.len() >= 8);
                    prop_assert!(f.motor_id < 16 && f.state < 16);
                    prop_assert_eq!((f.temp_mos, f.temp_rotor), (bytes[6], bytes[7]));
                    prop_assert!(f.position.abs() <= pmax && f.velocity.abs() <= vmax, "{f:?}");
                    prop_assert!(f.torque.abs() <= tmax, "{f:?}");
                }
            }
        }
    }
}
