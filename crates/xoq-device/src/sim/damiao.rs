//! Simulated OpenArm CAN bus: Damiao DM-series motors driven in MIT mode.
//!
//! The simulation is *sans-IO* like [`super::feetech`]: the caller hands in each CAN frame
//! written to the bus together with the time it was written, and reply frames come out in the
//! caller's buffer. No clock is read, so tests step time explicitly and the same engine can
//! sit behind a fake CAN server, a unit test or a fuzzer.
//!
//! It speaks the Damiao protocol as LeRobot's `DamiaoMotorsBus` uses it, with the frames and
//! scaling of [`xoq_wire::damiao`] (which a program driving the simulated or a real arm
//! imports to encode commands and decode feedback):
//! - On a motor's command id (8 data bytes): the special frames enable (`FF×7 FC`), disable
//!   (`FF×7 FD`), set zero (`FF×7 FE`) and clear error (`FF×7 FB`); any other 8 bytes are an
//!   MIT command (position, velocity, kp, kd, feed-forward torque).
//! - On [`PARAM_ID`] (0x7FF): refresh (0xCC), register read (0x33), register write (0x55)
//!   and save (0xAA), addressed by the command id in bytes 0–1.
//! - Every command a motor receives is answered with exactly one frame on its master id:
//!   feedback for motor commands and refresh, a register echo for read/write, an
//!   acknowledgement for save. Nothing is ever sent unprompted (LeRobot drains the bus until
//!   it is quiet).
//!
//! Each motor is a rotor with inertia and viscous damping under the MIT control law
//! `τ = kp (p_des − p) + kd (v_des − v) + τ_ff`, clamped to ±TMAX and integrated with
//! semi-implicit Euler in fixed 0.5 ms substeps, so positions really follow commands.
//!
//! Choices where the real motor's behaviour is unknown or unhelpful for a simulation:
//! - Integer conversions are [`xoq_wire::damiao`]'s: computed in `f64`, as LeRobot's Python
//!   floats do, so codes agree bit for bit with LeRobot for the same (f32-representable)
//!   inputs.
//! - Frames with an extended (29-bit) id are never addressed to a motor: Damiao motors only
//!   use standard ids. They count as `ignored_unknown_id`, like any other id.
//! - FD frames are handled exactly like classic ones (LeRobot sends everything as FD), and a
//!   reply carries the request's FD flag. Every command needs exactly 8 data bytes; any
//!   other length (including FD padding to 12 or more) is malformed.
//! - A register read or write of an id that is not in LeRobot's register table gets **no
//!   reply** and counts as `malformed`: there is no error frame in the protocol, so silence
//!   makes the host time out rather than decode a made-up value.
//! - A write that is invalid (CTRL_MODE outside 1..=4, an id ≥ 0x7FF or taken by another
//!   motor, a non-finite float, a PMAX/VMAX/TMAX that is not in (0, 1e6]) or that targets a
//!   read-only register leaves the value unchanged; the echo then shows the stored value, so
//!   the host can tell.
//! - PMAX/VMAX/TMAX registers set the scaling of commands and feedback, as on the real
//!   motor; writing them makes a host that uses the model tables decode wrongly, as it would
//!   with hardware.
//! - Writes to MST_ID and ESC_ID take effect at once (no power cycle needed); the reply to
//!   that write still goes out on the old master id. Save is acknowledged but has nothing
//!   to persist beyond the simulator's lifetime.
//! - Only MIT mode moves. In other control modes MIT-layout frames are answered with
//!   feedback but ignored, and the mode-specific ids (0x100+, 0x200+, …) are unknown ids.
//! - Enable from disabled starts with zero gains (limp until the first MIT command), so a
//!   stale setpoint can never make the arm lurch. MIT commands to a disabled motor are
//!   answered but discarded, not latched.
//! - Set zero works enabled or not; the held setpoint is shifted into the new frame so an
//!   enabled motor keeps holding the same physical pose.
//! - The travel limit is ±PMAX around the current zero, the range feedback can encode.
//!   Reaching it stops the rotor.
//! - Any well-formed frame addressed to a motor (including 0x7FF requests) resets its
//!   TIMEOUT deadman. When the deadman fires the motor drops torque with state 0xD (comm
//!   loss); enable recovers from that directly, since LeRobot has no clear-error step.
//!   Injected hard faults ([`DamiaoBus::inject_fault`]) need clear error before enable.
//! - Disable does not erase a fault code; clear error (or enable, for comm loss) does.
//! - Temperatures start at 30 °C and drift up with the square of the applied torque.

use std::time::Duration;

use xoq_wire::damiao::{
    CMD_CLEAR_ERROR, CMD_DISABLE, CMD_ENABLE, CMD_SET_ZERO, Feedback, MODE_MIT, MODE_TORQUE_POS,
    MitCommand, MotorModel, OPENARM_MOTORS, PARAM_ID, PARAM_READ, PARAM_REFRESH, PARAM_SAVE,
    PARAM_WRITE, REG_CTRL_MODE, REG_ESC_ID, REG_MST_ID, REG_PMAX, REG_TIMEOUT, REG_TMAX, REG_VMAX,
    STATE_COMM_LOSS, STATE_DISABLED, STATE_ENABLED, STATE_OVER_VOLTAGE, STATE_OVERLOAD,
    TIMEOUT_UNIT, decode_mit_with, encode_feedback_with,
};

/// Largest data field of a CAN FD frame.
const MAX_FD_DATA: usize = 64;
/// Largest data field of a classic CAN frame.
const MAX_CLASSIC_DATA: usize = 8;
/// Largest accepted PMAX/VMAX/TMAX: keeps `max - min` finite in every conversion.
const MAX_SCALE_LIMIT: f32 = 1e6;
/// Integration step: short against the fastest closed loop (kp 500 on the lightest rotor).
const SUBSTEP: Duration = Duration::from_micros(500);
/// Longest interval integrated per `advance`, so a stalled host does not teleport the arm.
const MAX_DT: Duration = Duration::from_secs(1);
/// Ambient temperature the motors start at and relax to, °C.
const AMBIENT_C: f64 = 30.0;
/// Steady-state rise at full torque (TMAX held continuously), °C.
const ROTOR_RISE_C: f64 = 50.0;
const MOS_RISE_C: f64 = 20.0;
/// Thermal time constants, s: the coil is slower than the driver's MOSFETs.
const ROTOR_TAU_S: f64 = 60.0;
const MOS_TAU_S: f64 = 20.0;
/// Register file size: LeRobot's highest register id is 81 (XOUT).
const REG_COUNT: usize = 82;
/// Registers whose value is computed live rather than stored.
const REG_P_M: u8 = 80;
const REG_XOUT: u8 = 81;
const REG_DAMP: u8 = 11;
const REG_INERTIA: u8 = 12;
const REG_CAN_BR: u8 = 35;

/// One CAN frame as the simulator sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SimCanFrame {
    /// Arbitration id (11-bit unless `extended`).
    pub id: u32,
    /// True for a 29-bit id.
    pub extended: bool,
    /// True for a CAN FD frame.
    pub fd: bool,
    /// Payload, at most 8 bytes (classic) or 64 bytes (FD).
    pub data: Vec<u8>,
}

/// Simulation-only properties of a motor model; the wire protocol knows only its scaling.
trait SimModel {
    /// Inertia at the output, kg·m².
    fn inertia(self) -> f64;
    /// Viscous friction at the output, N·m·s/rad.
    fn damping(self) -> f64;
    /// Gearbox reduction.
    fn gear_ratio(self) -> f32;
}

impl SimModel for MotorModel {
    /// Simulated inertia at the output, kg·m²: the rotor reflected through the gearbox
    /// (rotor inertia × ratio²) plus a share of the link it typically drives on an arm.
    fn inertia(self) -> f64 {
        match self {
            MotorModel::DM4310 | MotorModel::DM4310_48V => 0.01,
            MotorModel::DM4340 => 0.03,
            MotorModel::DM6006 => 0.02,
            MotorModel::DM8006 => 0.03,
            MotorModel::DM8009 => 0.05,
            MotorModel::DM10010 => 0.1,
        }
    }

    /// Simulated viscous friction at the output, N·m·s/rad: small, so a released joint
    /// coasts for a while, as a backdrivable gearbox does.
    fn damping(self) -> f64 {
        match self {
            MotorModel::DM4310 | MotorModel::DM4310_48V => 0.02,
            MotorModel::DM4340 => 0.05,
            MotorModel::DM6006 => 0.03,
            MotorModel::DM8006 => 0.04,
            MotorModel::DM8009 => 0.06,
            MotorModel::DM10010 => 0.1,
        }
    }

    /// Nominal gearbox reduction, reported in the GR register.
    fn gear_ratio(self) -> f32 {
        match self {
            MotorModel::DM4310 | MotorModel::DM4310_48V | MotorModel::DM10010 => 10.0,
            MotorModel::DM4340 => 40.0,
            MotorModel::DM6006 | MotorModel::DM8006 => 6.0,
            MotorModel::DM8009 => 9.0,
        }
    }
}

/// Snapshot of one simulated motor, for tests and UIs.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MotorState {
    /// Motor model.
    pub model: MotorModel,
    /// Command id (ESC_ID).
    pub cmd_id: u32,
    /// Master (reply) id (MST_ID).
    pub master_id: u32,
    /// Position relative to the zero, rad.
    pub position: f32,
    /// Velocity, rad/s.
    pub velocity: f32,
    /// Torque currently applied, N·m.
    pub torque: f32,
    /// True while the motor is enabled.
    pub enabled: bool,
    /// State code as reported in feedback (see the `STATE_*` constants).
    pub state: u8,
    /// Driver MOSFET temperature, °C.
    pub temp_mos: f32,
    /// Coil temperature, °C.
    pub temp_rotor: f32,
}

/// Counters of what the bus decoded, for tests and UIs. Every frame counts in exactly one
/// of `frames_ok`, `ignored_unknown_id` and `malformed`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DamiaoStats {
    /// Well-formed frames a motor acted on.
    pub frames_ok: u64,
    /// Frames no motor listens to (other ids, extended ids, 0x7FF for an absent motor).
    pub ignored_unknown_id: u64,
    /// Frames with a wrong length, unknown parameter command or unknown register; never
    /// answered, never partially applied.
    pub malformed: u64,
    /// Frames sent back to the host.
    pub replies: u64,
}

/// Value encoding of a register.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum RegKind {
    U32,
    F32,
}

/// Kind and writability of the registers in LeRobot's table; `None` for unknown ids.
fn reg_info(rid: u8) -> Option<(RegKind, bool)> {
    use RegKind::{F32, U32};
    match rid {
        // UV, KT, OT, OC, ACC, DEC, MAX_SPD.
        0..=6 => Some((F32, true)),
        // MST_ID, ESC_ID, TIMEOUT, CTRL_MODE.
        7..=10 => Some((U32, true)),
        // DAMP, INERTIA: identified by the driver.
        11 | 12 => Some((F32, false)),
        // HW_VER, SW_VER, SN, NPP.
        13..=16 => Some((U32, false)),
        // RS, LS, FLUX, GR: motor identification.
        17..=20 => Some((F32, false)),
        // PMAX, VMAX, TMAX, loop gains and thresholds.
        21..=34 => Some((F32, true)),
        35 => Some((U32, true)),
        36 => Some((U32, false)),
        // Encoder calibration.
        50..=55 => Some((F32, false)),
        // Live positions.
        REG_P_M | REG_XOUT => Some((F32, false)),
        _ => None,
    }
}

/// Latched MIT setpoint, in the reported (zero-offset) frame.
#[derive(Debug, Clone, Copy, Default)]
struct Setpoint {
    p: f64,
    v: f64,
    kp: f64,
    kd: f64,
    t: f64,
}

impl From<MitCommand> for Setpoint {
    fn from(c: MitCommand) -> Self {
        Self {
            p: f64::from(c.position),
            v: f64::from(c.velocity),
            kp: f64::from(c.kp),
            kd: f64::from(c.kd),
            t: f64::from(c.torque),
        }
    }
}

/// Total clamp: NaN maps to `lo`, and `lo > hi` cannot panic.
fn clamp_f64(x: f64, lo: f64, hi: f64) -> f64 {
    x.max(lo).min(hi)
}

/// One motor: its register file plus the continuous rotor state.
#[derive(Debug, Clone)]
struct Motor {
    model: MotorModel,
    /// Register values as raw 32-bit patterns (f32 registers hold `to_bits`).
    regs: [u32; REG_COUNT],
    state: u8,
    /// Output angle in the encoder's own frame, rad; reported position is `raw_pos - offset`.
    raw_pos: f64,
    vel: f64,
    offset: f64,
    /// Torque applied in the last substep (or computed for the latest command).
    torque: f64,
    cmd: Setpoint,
    /// Bus time of the last frame addressed to this motor (for the deadman).
    last_command: Duration,
    temp_mos: f64,
    temp_rotor: f64,
}

impl Motor {
    fn new(cmd_id: u32, master_id: u32, model: MotorModel) -> Self {
        let (pmax, vmax, tmax) = model.limits();
        let mut regs = [0u32; REG_COUNT];
        // Informational registers hold plausible placeholders, not vendor-exact values.
        let floats: [(u8, f32); 18] = [
            (0, 15.0),  // UV_VALUE, V
            (2, 80.0),  // OT_VALUE, °C
            (3, 0.98),  // OC_VALUE, fraction of max current
            (4, 10.0),  // ACC
            (5, -10.0), // DEC
            (6, vmax),  // MAX_SPD
            (REG_DAMP, model.damping() as f32),
            (REG_INERTIA, model.inertia() as f32),
            (20, model.gear_ratio()),
            (REG_PMAX, pmax),
            (REG_VMAX, vmax),
            (REG_TMAX, tmax),
            (24, 1000.0), // I_BW, current-loop bandwidth
            (25, 0.0005), // KP_ASR
            (26, 0.002),  // KI_ASR
            (27, 30.0),   // KP_APR
            (28, 0.0),    // KI_APR
            (29, 52.0),   // OV_VALUE, V
        ];
        for (rid, value) in floats {
            set_reg(&mut regs, rid, value.to_bits());
        }
        let ints: [(u8, u32); 10] = [
            (REG_MST_ID, master_id),
            (REG_ESC_ID, cmd_id),
            (REG_TIMEOUT, 0),
            (REG_CTRL_MODE, MODE_MIT),
            (13, 1),                    // HW_VER
            (14, 5013),                 // SW_VER
            (15, 0x5EED_0000 | cmd_id), // SN
            (16, 14),                   // NPP
            (REG_CAN_BR, 4),            // 1 Mbit/s
            (36, 1),                    // SUB_VER
        ];
        for (rid, value) in ints {
            set_reg(&mut regs, rid, value);
        }
        Self {
            model,
            regs,
            state: STATE_DISABLED,
            raw_pos: 0.0,
            vel: 0.0,
            offset: 0.0,
            torque: 0.0,
            cmd: Setpoint::default(),
            last_command: Duration::ZERO,
            temp_mos: AMBIENT_C,
            temp_rotor: AMBIENT_C,
        }
    }

    fn reg(&self, rid: u8) -> u32 {
        self.regs.get(usize::from(rid)).copied().unwrap_or(0)
    }

    fn reg_f32(&self, rid: u8) -> f32 {
        f32::from_bits(self.reg(rid))
    }

    fn cmd_id(&self) -> u32 {
        self.reg(REG_ESC_ID)
    }

    fn master_id(&self) -> u32 {
        self.reg(REG_MST_ID)
    }

    /// Current scaling limits (PMAX, VMAX, TMAX) from the registers.
    fn limits(&self) -> (f32, f32, f32) {
        (
            self.reg_f32(REG_PMAX),
            self.reg_f32(REG_VMAX),
            self.reg_f32(REG_TMAX),
        )
    }

    fn position(&self) -> f64 {
        self.raw_pos - self.offset
    }

    /// When the deadman fires if nothing else arrives; `None` when it cannot fire.
    fn deadline(&self) -> Option<Duration> {
        let units = self.reg(REG_TIMEOUT);
        if self.state != STATE_ENABLED || units == 0 {
            return None;
        }
        self.last_command
            .checked_add(TIMEOUT_UNIT.checked_mul(units)?)
    }

    /// MIT control law at the current state, clamped to ±TMAX.
    fn control_torque(&self) -> f64 {
        let tmax = f64::from(self.limits().2);
        let c = self.cmd;
        let tau = c.kp * (c.p - self.position()) + c.kd * (c.v - self.vel) + c.t;
        if tau.is_finite() {
            clamp_f64(tau, -tmax, tmax)
        } else {
            0.0
        }
    }

    /// Drop torque and forget the setpoint (disable, deadman, faults).
    fn release(&mut self, state: u8) {
        self.state = state;
        self.cmd = Setpoint::default();
        self.torque = 0.0;
    }

    /// Integrate one substep of `h` seconds; `powered` is false once the deadman has fired.
    fn step(&mut self, h: f64, powered: bool) {
        let (pmax, vmax, tmax) = self.limits();
        let (pmax, vmax, tmax) = (f64::from(pmax), f64::from(vmax), f64::from(tmax));
        let tau = if powered && self.state == STATE_ENABLED {
            self.control_torque()
        } else {
            0.0
        };
        self.torque = tau;
        // Semi-implicit Euler: velocity first, then position with the new velocity.
        let accel = (tau - self.model.damping() * self.vel) / self.model.inertia();
        // VMAX doubles as a crude back-EMF limit: the real motors top out near it.
        self.vel = clamp_f64(self.vel + accel * h, -vmax, vmax);
        self.raw_pos += self.vel * h;
        let p = self.position();
        if p.abs() > pmax || !p.is_finite() {
            self.raw_pos = self.offset + clamp_f64(p, -pmax, pmax);
            self.vel = 0.0;
        }
        let load = if tmax > 0.0 {
            (tau / tmax).powi(2)
        } else {
            0.0
        };
        self.temp_rotor += (AMBIENT_C + ROTOR_RISE_C * load - self.temp_rotor) * (h / ROTOR_TAU_S);
        self.temp_mos += (AMBIENT_C + MOS_RISE_C * load - self.temp_mos) * (h / MOS_TAU_S);
    }

    fn feedback(&self) -> [u8; 8] {
        // Temperatures are whole degrees on the wire; `as` saturates into 0..=255.
        encode_feedback_with(
            self.limits(),
            &Feedback {
                motor_id: (self.cmd_id() & 0x0F) as u8,
                state: self.state & 0x0F,
                position: self.position() as f32,
                velocity: self.vel as f32,
                torque: self.torque as f32,
                temp_mos: self.temp_mos.round() as u8,
                temp_rotor: self.temp_rotor.round() as u8,
            },
        )
    }

    /// Act on an 8-byte frame on the command id; the caller replies with feedback.
    fn command(&mut self, data: [u8; 8]) {
        match data {
            CMD_ENABLE => {
                if self.state >= STATE_OVER_VOLTAGE && self.state != STATE_COMM_LOSS {
                    return;
                }
                if self.state != STATE_ENABLED {
                    self.cmd = Setpoint::default();
                    self.torque = 0.0;
                }
                self.state = STATE_ENABLED;
            }
            CMD_DISABLE => {
                let state = if self.state == STATE_ENABLED {
                    STATE_DISABLED
                } else {
                    self.state
                };
                self.release(state);
            }
            CMD_SET_ZERO => {
                let shift = self.position();
                self.offset = self.raw_pos;
                self.cmd.p -= shift;
            }
            CMD_CLEAR_ERROR => {
                if self.state >= STATE_OVER_VOLTAGE {
                    self.state = STATE_DISABLED;
                }
            }
            mit => {
                if self.state == STATE_ENABLED && self.reg(REG_CTRL_MODE) == MODE_MIT {
                    self.cmd = decode_mit_with(self.limits(), mit).into();
                    self.torque = self.control_torque();
                }
            }
        }
    }

    /// Register value for a read; `None` for unknown ids.
    fn read_reg(&self, rid: u8) -> Option<u32> {
        reg_info(rid)?;
        Some(match rid {
            REG_P_M => {
                let ratio = f64::from(self.model.gear_ratio());
                ((self.position() * ratio) as f32).to_bits()
            }
            REG_XOUT => (self.position() as f32).to_bits(),
            _ => self.reg(rid),
        })
    }

    /// Store a write if it is valid; `id_free` says whether a new ESC_ID is unused.
    fn write_reg(&mut self, rid: u8, value: u32, id_free: bool) {
        let Some((kind, writable)) = reg_info(rid) else {
            return;
        };
        let as_float = f32::from_bits(value);
        let valid = writable
            && match rid {
                REG_MST_ID => value < PARAM_ID,
                REG_ESC_ID => value < PARAM_ID && id_free,
                REG_CTRL_MODE => (MODE_MIT..=MODE_TORQUE_POS).contains(&value),
                REG_CAN_BR => value <= 9,
                REG_PMAX | REG_VMAX | REG_TMAX => as_float > 0.0 && as_float <= MAX_SCALE_LIMIT,
                _ => kind == RegKind::U32 || as_float.is_finite(),
            };
        if valid {
            set_reg(&mut self.regs, rid, value);
        }
    }

    fn snapshot(&self) -> MotorState {
        MotorState {
            model: self.model,
            cmd_id: self.cmd_id(),
            master_id: self.master_id(),
            position: self.position() as f32,
            velocity: self.vel as f32,
            torque: self.torque as f32,
            enabled: self.state == STATE_ENABLED,
            state: self.state,
            temp_mos: self.temp_mos as f32,
            temp_rotor: self.temp_rotor as f32,
        }
    }
}

fn set_reg(regs: &mut [u32; REG_COUNT], rid: u8, value: u32) {
    if let Some(slot) = regs.get_mut(usize::from(rid)) {
        *slot = value;
    }
}

/// What one frame amounted to.
enum Outcome {
    /// Handled; reply `data` on arbitration id `id`.
    Reply {
        id: u32,
        data: [u8; 8],
    },
    UnknownId,
    Malformed,
}

/// Simulated CAN bus of Damiao motors.
#[derive(Debug, Clone)]
pub struct DamiaoBus {
    motors: Vec<Motor>,
    /// Latest time seen; `None` until the first call.
    clock: Option<Duration>,
    /// Time the dynamics have been integrated to: a whole number of substeps, ≤ `clock`.
    sim_time: Duration,
    stats: DamiaoStats,
}

impl DamiaoBus {
    /// The OpenArm: [`OPENARM_MOTORS`], all disabled at position 0.
    pub fn openarm() -> Self {
        Self::with_motors(&OPENARM_MOTORS)
    }

    /// Motors given as (command id, master id, model), in bus order. Entries with an id
    /// ≥ 0x7FF (not a standard id, or the parameter id) or a command id already in use are
    /// skipped, since they could never be addressed cleanly.
    pub fn with_motors(motors: &[(u32, u32, MotorModel)]) -> Self {
        let mut list: Vec<Motor> = Vec::new();
        for &(cmd_id, master_id, model) in motors {
            if cmd_id < PARAM_ID
                && master_id < PARAM_ID
                && !list.iter().any(|m| m.cmd_id() == cmd_id)
            {
                list.push(Motor::new(cmd_id, master_id, model));
            }
        }
        Self {
            motors: list,
            clock: None,
            sim_time: Duration::ZERO,
            stats: DamiaoStats::default(),
        }
    }

    /// Handle one frame written to the bus at `now` (monotonic, as a Duration since an
    /// arbitrary origin); append reply frames to `out` (at most one per frame).
    ///
    /// Dynamics are advanced to `now` first so replies reflect the current state.
    pub fn handle(&mut self, now: Duration, frame: &SimCanFrame, out: &mut Vec<SimCanFrame>) {
        self.advance(now);
        match self.dispatch(frame) {
            Outcome::Reply { id, data } => {
                self.stats.frames_ok += 1;
                self.stats.replies += 1;
                out.push(SimCanFrame {
                    id,
                    extended: false,
                    fd: frame.fd,
                    data: data.to_vec(),
                });
            }
            Outcome::UnknownId => self.stats.ignored_unknown_id += 1,
            Outcome::Malformed => self.stats.malformed += 1,
        }
    }

    /// Integrate dynamics up to `now`. Never produces frames.
    ///
    /// The first call only records the time. A `now` earlier than the latest one counts as
    /// no elapsed time, and at most one second is integrated per call. Time is integrated in
    /// whole 0.5 ms substeps; a remainder waits for the next call.
    pub fn advance(&mut self, now: Duration) {
        let Some(clock) = self.clock else {
            self.clock = Some(now);
            self.sim_time = now;
            return;
        };
        if now <= clock {
            return;
        }
        self.clock = Some(now);
        let start = self.sim_time.max(now.saturating_sub(MAX_DT));
        let substeps = now.saturating_sub(start).as_nanos() / SUBSTEP.as_nanos();
        // At most MAX_DT / SUBSTEP = 2000, so the conversion cannot fail.
        let substeps = u32::try_from(substeps).unwrap_or(0);
        let h = SUBSTEP.as_secs_f64();
        for motor in &mut self.motors {
            let deadline = motor.deadline();
            for k in 0..substeps {
                let t = start.saturating_add(SUBSTEP.saturating_mul(k));
                motor.step(h, deadline.is_none_or(|d| t < d));
            }
            if deadline.is_some_and(|d| now > d) {
                motor.release(STATE_COMM_LOSS);
            }
        }
        self.sim_time = start.saturating_add(SUBSTEP.saturating_mul(substeps));
    }

    /// State of the motor with command id `cmd_id`.
    pub fn motor(&self, cmd_id: u32) -> Option<MotorState> {
        self.find(cmd_id)
            .and_then(|i| self.motors.get(i))
            .map(Motor::snapshot)
    }

    /// States of all motors, in bus order.
    pub fn motor_states(&self) -> Vec<MotorState> {
        self.motors.iter().map(Motor::snapshot).collect()
    }

    /// Decoder counters since the bus was created.
    pub fn stats(&self) -> DamiaoStats {
        self.stats
    }

    /// Put motor `cmd_id` into fault `code` (8..=0xE): torque drops until clear error. For
    /// testing host-side fault handling; false if there is no such motor or code.
    pub fn inject_fault(&mut self, cmd_id: u32, code: u8) -> bool {
        if !(STATE_OVER_VOLTAGE..=STATE_OVERLOAD).contains(&code) {
            return false;
        }
        let Some(motor) = self.find(cmd_id).and_then(|i| self.motors.get_mut(i)) else {
            return false;
        };
        motor.release(code);
        true
    }

    fn find(&self, cmd_id: u32) -> Option<usize> {
        self.motors.iter().position(|m| m.cmd_id() == cmd_id)
    }

    fn now(&self) -> Duration {
        self.clock.unwrap_or_default()
    }

    fn dispatch(&mut self, frame: &SimCanFrame) -> Outcome {
        let max = if frame.fd {
            MAX_FD_DATA
        } else {
            MAX_CLASSIC_DATA
        };
        if frame.data.len() > max {
            return Outcome::Malformed;
        }
        if frame.extended {
            return Outcome::UnknownId;
        }
        if frame.id == PARAM_ID {
            return self.param(&frame.data);
        }
        let Some(i) = self.find(frame.id) else {
            return Outcome::UnknownId;
        };
        let Ok(data) = <[u8; 8]>::try_from(frame.data.as_slice()) else {
            return Outcome::Malformed;
        };
        let now = self.now();
        let Some(motor) = self.motors.get_mut(i) else {
            return Outcome::UnknownId;
        };
        motor.last_command = now;
        motor.command(data);
        Outcome::Reply {
            id: motor.master_id(),
            data: motor.feedback(),
        }
    }

    fn param(&mut self, data: &[u8]) -> Outcome {
        let Ok([lo, hi, op, rid, v0, v1, v2, v3]) = <[u8; 8]>::try_from(data) else {
            return Outcome::Malformed;
        };
        if !matches!(op, PARAM_REFRESH | PARAM_READ | PARAM_WRITE | PARAM_SAVE) {
            return Outcome::Malformed;
        }
        let target = u32::from(u16::from_le_bytes([lo, hi]));
        let Some(i) = self.find(target) else {
            return Outcome::UnknownId;
        };
        if matches!(op, PARAM_READ | PARAM_WRITE) && reg_info(rid).is_none() {
            return Outcome::Malformed;
        }
        let value = u32::from_le_bytes([v0, v1, v2, v3]);
        let id_free = op == PARAM_WRITE && rid == REG_ESC_ID && self.find(value).is_none();
        let now = self.now();
        let Some(motor) = self.motors.get_mut(i) else {
            return Outcome::UnknownId;
        };
        motor.last_command = now;
        // Captured before a write so an MST_ID change is acknowledged where it was asked.
        let id = motor.master_id();
        let data = match op {
            PARAM_REFRESH => motor.feedback(),
            PARAM_SAVE => [lo, hi, PARAM_SAVE, 0x01, 0, 0, 0, 0],
            _ => {
                if op == PARAM_WRITE {
                    motor.write_reg(rid, value, id_free);
                }
                let Some(stored) = motor.read_reg(rid) else {
                    return Outcome::Malformed;
                };
                let [s0, s1, s2, s3] = stored.to_le_bytes();
                [lo, hi, op, rid, s0, s1, s2, s3]
            }
        };
        Outcome::Reply { id, data }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use xoq_wire::damiao::{
        MODE_VEL, STATE_OVER_CURRENT, decode_feedback, encode_mit, param_request,
        read_register_request, refresh_request, save_request, write_register_request,
    };

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    fn classic(id: u32, data: &[u8]) -> SimCanFrame {
        SimCanFrame {
            id,
            extended: false,
            fd: false,
            data: data.to_vec(),
        }
    }

    fn send(bus: &mut DamiaoBus, now: Duration, id: u32, data: &[u8]) -> Vec<SimCanFrame> {
        let mut out = Vec::new();
        bus.handle(now, &classic(id, data), &mut out);
        out
    }

    /// The single reply to a frame, asserting there is exactly one.
    fn reply(bus: &mut DamiaoBus, now: Duration, id: u32, data: &[u8]) -> SimCanFrame {
        let mut out = send(bus, now, id, data);
        assert_eq!(out.len(), 1, "expected one reply to {id:#x} {data:02X?}");
        out.remove(0)
    }

    fn feedback(model: MotorModel, frame: &SimCanFrame) -> Feedback {
        assert_eq!(frame.data.len(), 8);
        decode_feedback(model, &frame.data).expect("8-byte feedback")
    }

    /// Hold `target` with kp 30 / kd 1 every 2 ms for `duration_ms`, starting at `from_ms`.
    /// Returns the last feedback.
    fn hold(
        bus: &mut DamiaoBus,
        cmd_id: u32,
        model: MotorModel,
        target: f32,
        from_ms: u64,
        duration_ms: u64,
    ) -> Feedback {
        let cmd = encode_mit(model, target, 0.0, 30.0, 1.0, 0.0);
        let mut last = None;
        for t in (from_ms..from_ms + duration_ms).step_by(2) {
            last = Some(feedback(model, &reply(bus, ms(t), cmd_id, &cmd)));
        }
        last.expect("at least one command")
    }

    #[test]
    fn enable_and_disable_reply_with_state() {
        let mut bus = DamiaoBus::openarm();
        let r = reply(&mut bus, ms(0), 0x01, &CMD_ENABLE);
        assert_eq!(r.id, 0x11);
        assert!(!r.fd && !r.extended);
        assert_eq!(
            r.data[0], 0x11,
            "state 1 in the high nibble, id 1 in the low"
        );
        assert!(bus.motor(1).expect("motor 1").enabled);

        let r = reply(&mut bus, ms(1), 0x08, &CMD_ENABLE);
        assert_eq!((r.id, r.data[0]), (0x18, 0x18));

        let r = reply(&mut bus, ms(2), 0x01, &CMD_DISABLE);
        assert_eq!((r.id, r.data[0]), (0x11, 0x01));
        assert!(!bus.motor(1).expect("motor 1").enabled);
        assert_eq!(bus.stats().frames_ok, 3);
        assert_eq!(bus.stats().replies, 3);
    }

    #[test]
    fn fd_requests_get_fd_replies() {
        let mut bus = DamiaoBus::openarm();
        let mut out = Vec::new();
        let frame = SimCanFrame {
            id: 0x02,
            extended: false,
            fd: true,
            data: CMD_ENABLE.to_vec(),
        };
        bus.handle(ms(0), &frame, &mut out);
        assert_eq!(out.len(), 1);
        assert!(out[0].fd);
        assert_eq!((out[0].id, out[0].data[0]), (0x12, 0x12));
    }

    fn tracks(cmd_id: u32, model: MotorModel) {
        let mut bus = DamiaoBus::openarm();
        assert_eq!(bus.motor(cmd_id).expect("motor").model, model);
        reply(&mut bus, ms(0), cmd_id, &CMD_ENABLE);
        let fb = hold(&mut bus, cmd_id, model, 1.0, 2, 2000);
        assert!((fb.position - 1.0).abs() < 0.05, "{model:?}: {fb:?}");
        assert_eq!(fb.state, STATE_ENABLED);
        let state = bus.motor(cmd_id).expect("motor");
        assert!((state.position - 1.0).abs() < 0.05 && state.velocity.abs() < 0.05);

        // Disabled: zero torque, and new targets are no longer tracked.
        let fb = feedback(model, &reply(&mut bus, ms(2002), cmd_id, &CMD_DISABLE));
        assert_eq!(fb.state, STATE_DISABLED);
        assert!(fb.torque.abs() < 0.03, "quantised zero torque: {fb:?}");
        assert_eq!(bus.motor(cmd_id).expect("motor").torque, 0.0);
        let fb = hold(&mut bus, cmd_id, model, -1.0, 2004, 1000);
        assert!((fb.position - 1.0).abs() < 0.05, "{model:?} moved: {fb:?}");
        assert!(fb.torque.abs() < 0.03);
    }

    #[test]
    fn position_converges_dm4310() {
        tracks(0x05, MotorModel::DM4310);
    }

    #[test]
    fn position_converges_dm8009() {
        tracks(0x01, MotorModel::DM8009);
    }

    #[test]
    fn moves_gradually_not_instantly() {
        let mut bus = DamiaoBus::openarm();
        reply(&mut bus, ms(0), 0x05, &CMD_ENABLE);
        let fb = hold(&mut bus, 0x05, MotorModel::DM4310, 1.0, 2, 20);
        assert!(fb.position > 0.05 && fb.position < 0.9, "{fb:?}");
        assert!(fb.velocity > 1.0, "{fb:?}");
        assert!(fb.torque > 1.0, "{fb:?}");
        // Other motors were never enabled.
        assert_eq!(bus.motor(6).expect("motor 6").position, 0.0);
    }

    #[test]
    fn scaling_uses_the_motors_own_model() {
        let mut bus = DamiaoBus::openarm();
        reply(&mut bus, ms(0), 0x03, &CMD_ENABLE);
        // 20 N·m feed-forward: in range for a DM4340 (±28), beyond a DM4310 (±10).
        let cmd = encode_mit(MotorModel::DM4340, 0.0, 0.0, 0.0, 0.0, 20.0);
        reply(&mut bus, ms(1), 0x03, &cmd);
        let applied = bus.motor(3).expect("motor 3").torque;
        assert!(
            (applied - 20.0).abs() < 0.02,
            "decoded with DM4340 limits: {applied}"
        );

        let cmd = encode_mit(MotorModel::DM4340, 0.0, 0.0, 0.0, 0.0, 1.0);
        reply(&mut bus, ms(2), 0x03, &cmd);
        bus.advance(ms(50));
        let truth = bus.motor(3).expect("motor 3");
        let r = reply(&mut bus, ms(50), PARAM_ID, &refresh_request(3));
        assert_eq!(r.id, 0x13);
        let right = feedback(MotorModel::DM4340, &r);
        let wrong = feedback(MotorModel::DM4310, &r);
        assert!(truth.velocity > 0.5, "{truth:?}");
        assert!((right.velocity - truth.velocity).abs() <= 16.0 / 4095.0 + 1e-4);
        assert!((right.torque - 1.0).abs() <= 56.0 / 4095.0 + 1e-4);
        assert!((wrong.velocity - truth.velocity).abs() > 1.0, "{wrong:?}");
        assert!((wrong.torque - 1.0).abs() > 0.5, "{wrong:?}");
    }

    #[test]
    fn set_zero_rezeroes_without_moving() {
        let mut bus = DamiaoBus::openarm();
        reply(&mut bus, ms(0), 0x05, &CMD_ENABLE);
        let fb = hold(&mut bus, 0x05, MotorModel::DM4310, 1.0, 2, 1000);
        assert!((fb.position - 1.0).abs() < 0.05);
        let ok_before = bus.stats().frames_ok;

        let fb = feedback(
            MotorModel::DM4310,
            &reply(&mut bus, ms(1002), 0x05, &CMD_SET_ZERO),
        );
        assert!(fb.position.abs() < 0.01, "{fb:?}");
        assert_eq!(fb.state, STATE_ENABLED);
        assert_eq!(bus.stats().frames_ok, ok_before + 1);
        // Read as MIT, these bytes would mean p = +12.5 with kp 500: the motor would race off.
        bus.advance(ms(2000));
        let state = bus.motor(5).expect("motor 5");
        assert!(state.position.abs() < 0.01, "held still: {state:?}");
        assert!(state.velocity.abs() < 0.01);

        // New targets are relative to the new zero.
        let fb = hold(&mut bus, 0x05, MotorModel::DM4310, 0.5, 2000, 1000);
        assert!((fb.position - 0.5).abs() < 0.05, "{fb:?}");
    }

    #[test]
    fn set_zero_on_a_disabled_motor() {
        let mut bus = DamiaoBus::openarm();
        reply(&mut bus, ms(0), 0x06, &CMD_ENABLE);
        hold(&mut bus, 0x06, MotorModel::DM4310, -2.0, 2, 1000);
        reply(&mut bus, ms(1002), 0x06, &CMD_DISABLE);
        bus.advance(ms(5000));
        let fb = feedback(
            MotorModel::DM4310,
            &reply(&mut bus, ms(5000), 0x06, &CMD_SET_ZERO),
        );
        assert!(
            fb.position.abs() < 1e-3 && fb.state == STATE_DISABLED,
            "{fb:?}"
        );
        assert!(!bus.motor(6).expect("motor 6").enabled);
    }

    #[test]
    fn refresh_registers_and_save() {
        let mut bus = DamiaoBus::openarm();
        let r = reply(&mut bus, ms(0), PARAM_ID, &refresh_request(2));
        assert_eq!(r.id, 0x12);
        let fb = feedback(MotorModel::DM8009, &r);
        assert_eq!(
            (fb.motor_id, fb.state, fb.temp_mos, fb.temp_rotor),
            (2, 0, 30, 30)
        );
        assert!(fb.position.abs() < 1e-3);

        // CTRL_MODE (u32): defaults to MIT, writable, invalid values keep the old one.
        let r = reply(
            &mut bus,
            ms(1),
            PARAM_ID,
            &read_register_request(2, REG_CTRL_MODE),
        );
        assert_eq!(
            (r.id, r.data.as_slice()),
            (0x12, &[2, 0, 0x33, 10, 1, 0, 0, 0][..])
        );
        let w = write_register_request(2, REG_CTRL_MODE, 2u32.to_le_bytes());
        let r = reply(&mut bus, ms(2), PARAM_ID, &w);
        assert_eq!(r.data, [2, 0, 0x55, 10, 2, 0, 0, 0]);
        let w = write_register_request(2, REG_CTRL_MODE, 7u32.to_le_bytes());
        assert_eq!(
            reply(&mut bus, ms(3), PARAM_ID, &w).data,
            [2, 0, 0x55, 10, 2, 0, 0, 0]
        );
        let r = reply(
            &mut bus,
            ms(4),
            PARAM_ID,
            &read_register_request(2, REG_CTRL_MODE),
        );
        assert_eq!(r.data, [2, 0, 0x33, 10, 2, 0, 0, 0]);

        // TIMEOUT (u32).
        let w = write_register_request(2, REG_TIMEOUT, 2000u32.to_le_bytes());
        assert_eq!(
            reply(&mut bus, ms(5), PARAM_ID, &w).data,
            [2, 0, 0x55, 9, 0xD0, 0x07, 0, 0]
        );
        let r = reply(
            &mut bus,
            ms(6),
            PARAM_ID,
            &read_register_request(2, REG_TIMEOUT),
        );
        assert_eq!(
            u32::from_le_bytes([r.data[4], r.data[5], r.data[6], r.data[7]]),
            2000
        );

        // PMAX (f32): default, write, read back; negative and NaN rejected.
        let read_pmax = |bus: &mut DamiaoBus, t| {
            let r = reply(bus, ms(t), PARAM_ID, &read_register_request(2, REG_PMAX));
            assert_eq!(r.data[..4], [2, 0, 0x33, 21]);
            f32::from_le_bytes([r.data[4], r.data[5], r.data[6], r.data[7]])
        };
        assert_eq!(read_pmax(&mut bus, 7), 12.5);
        let w = write_register_request(2, REG_PMAX, 6.25f32.to_le_bytes());
        let r = reply(&mut bus, ms(8), PARAM_ID, &w);
        assert_eq!(r.data[4..], 6.25f32.to_le_bytes());
        assert_eq!(read_pmax(&mut bus, 9), 6.25);
        for bad in [-1.0f32, 0.0, f32::NAN, f32::INFINITY] {
            let w = write_register_request(2, REG_PMAX, bad.to_le_bytes());
            reply(&mut bus, ms(10), PARAM_ID, &w);
        }
        assert_eq!(read_pmax(&mut bus, 11), 6.25);
        // Read-only registers echo their unchanged value.
        let w = write_register_request(2, REG_INERTIA, 1.0f32.to_le_bytes());
        let r = reply(&mut bus, ms(12), PARAM_ID, &w);
        assert_eq!(r.data[4..], 0.05f32.to_le_bytes());

        let r = reply(&mut bus, ms(13), PARAM_ID, &save_request(2));
        assert_eq!(
            (r.id, r.data.as_slice()),
            (0x12, &[2, 0, 0xAA, 1, 0, 0, 0, 0][..])
        );

        // Unknown register: silence, counted as malformed.
        assert!(send(&mut bus, ms(14), PARAM_ID, &read_register_request(2, 42)).is_empty());
        let w = write_register_request(2, 99, [1, 0, 0, 0]);
        assert!(send(&mut bus, ms(15), PARAM_ID, &w).is_empty());
        assert_eq!(bus.stats().malformed, 2);
        assert_eq!(bus.stats().frames_ok, 17);
    }

    #[test]
    fn pmax_register_rescales_feedback() {
        let mut bus = DamiaoBus::openarm();
        reply(&mut bus, ms(0), 0x05, &CMD_ENABLE);
        hold(&mut bus, 0x05, MotorModel::DM4310, 1.0, 2, 1000);
        let w = write_register_request(5, REG_PMAX, 6.25f32.to_le_bytes());
        reply(&mut bus, ms(1002), PARAM_ID, &w);
        let r = reply(&mut bus, ms(1004), PARAM_ID, &refresh_request(5));
        // The host still assumes ±12.5, so it reads twice the true angle, as on hardware.
        let seen = feedback(MotorModel::DM4310, &r).position;
        assert!((seen - 2.0).abs() < 0.1, "{seen}");
        assert!((bus.motor(5).expect("motor 5").position - 1.0).abs() < 0.05);
    }

    #[test]
    fn ids_can_be_reassigned() {
        let mut bus = DamiaoBus::openarm();
        let w = write_register_request(4, REG_MST_ID, 0x24u32.to_le_bytes());
        let r = reply(&mut bus, ms(0), PARAM_ID, &w);
        assert_eq!(r.id, 0x14, "acknowledged on the old master id");
        assert_eq!(reply(&mut bus, ms(1), 0x04, &CMD_ENABLE).id, 0x24);

        // ESC_ID: taken ids are refused, free ones readdress the motor.
        let w = write_register_request(4, REG_ESC_ID, 3u32.to_le_bytes());
        assert_eq!(reply(&mut bus, ms(2), PARAM_ID, &w).data[4], 4);
        let w = write_register_request(4, REG_ESC_ID, 0x0Au32.to_le_bytes());
        assert_eq!(reply(&mut bus, ms(3), PARAM_ID, &w).data[4], 0x0A);
        assert!(send(&mut bus, ms(4), 0x04, &CMD_DISABLE).is_empty());
        let r = reply(&mut bus, ms(5), 0x0A, &CMD_DISABLE);
        assert_eq!((r.id, r.data[0]), (0x24, 0x0A));
        assert!(bus.motor(4).is_none());
        assert_eq!(
            bus.motor(0x0A).expect("readdressed").model,
            MotorModel::DM4340
        );
    }

    #[test]
    fn malformed_frames_are_counted_and_ignored() {
        let mut bus = DamiaoBus::openarm();
        reply(&mut bus, ms(0), 0x01, &CMD_ENABLE);
        let before = bus.motor(1);
        let mit = encode_mit(MotorModel::DM8009, 3.0, 0.0, 100.0, 1.0, 10.0);
        // 7-byte MIT, 3-byte 0x7FF, 9-byte classic, FD-padded MIT, empty, unknown 0x7FF op.
        assert!(send(&mut bus, ms(1), 0x01, &mit[..7]).is_empty());
        assert!(send(&mut bus, ms(2), PARAM_ID, &[1, 0, 0xCC]).is_empty());
        assert!(send(&mut bus, ms(3), 0x01, &[0; 9]).is_empty());
        let mut padded = mit.to_vec();
        padded.extend([0; 4]);
        let mut out = Vec::new();
        bus.handle(
            ms(4),
            &SimCanFrame {
                id: 0x01,
                extended: false,
                fd: true,
                data: padded,
            },
            &mut out,
        );
        assert!(out.is_empty());
        assert!(send(&mut bus, ms(5), 0x01, &[]).is_empty());
        assert!(send(&mut bus, ms(6), PARAM_ID, &[1, 0, 0x12, 0, 0, 0, 0, 0]).is_empty());
        assert_eq!(bus.stats().malformed, 6);
        // Nothing was applied: the motor still has zero gains and has not moved.
        bus.advance(ms(500));
        let after = bus.motor(1).expect("motor 1");
        assert_eq!(after.torque, 0.0);
        assert_eq!(after.position, before.expect("motor 1").position);
        assert_eq!(bus.stats().frames_ok, 1);
    }

    #[test]
    fn unknown_ids_are_ignored() {
        let mut bus = DamiaoBus::openarm();
        assert!(send(&mut bus, ms(0), 0x123, &CMD_ENABLE).is_empty());
        assert!(
            send(&mut bus, ms(0), 0x11, &CMD_ENABLE).is_empty(),
            "master ids do not listen"
        );
        assert!(send(&mut bus, ms(0), PARAM_ID, &refresh_request(0x42)).is_empty());
        let mut out = Vec::new();
        let ext = SimCanFrame {
            id: 0x01,
            extended: true,
            fd: false,
            data: CMD_ENABLE.to_vec(),
        };
        bus.handle(ms(0), &ext, &mut out);
        assert!(out.is_empty());
        assert_eq!(bus.stats().ignored_unknown_id, 4);
        assert_eq!(bus.stats().replies, 0);
        assert!(bus.motor_states().iter().all(|m| !m.enabled));
    }

    #[test]
    fn bus_is_silent_unless_asked() {
        let mut bus = DamiaoBus::openarm();
        for m in OPENARM_MOTORS {
            reply(&mut bus, ms(0), m.0, &CMD_ENABLE);
            let cmd = encode_mit(m.2, 0.5, 0.0, 20.0, 1.0, 0.0);
            reply(&mut bus, ms(1), m.0, &cmd);
        }
        // `advance` has no output; a later unrelated frame gets nothing queued up either.
        bus.advance(ms(5000));
        assert!(send(&mut bus, ms(6000), 0x555, &[0; 8]).is_empty());
        assert_eq!(bus.stats().replies, 16);
    }

    #[test]
    fn disabled_motor_answers_but_applies_no_torque() {
        let mut bus = DamiaoBus::openarm();
        let cmd = encode_mit(MotorModel::DM4310, 2.0, 0.0, 50.0, 1.0, 5.0);
        let fb = feedback(MotorModel::DM4310, &reply(&mut bus, ms(0), 0x07, &cmd));
        assert_eq!(fb.state, STATE_DISABLED);
        bus.advance(ms(1000));
        assert_eq!(bus.motor(7).expect("motor 7").position, 0.0);
        // Not latched: enabling afterwards does not chase the old target.
        reply(&mut bus, ms(1000), 0x07, &CMD_ENABLE);
        bus.advance(ms(2000));
        assert_eq!(bus.motor(7).expect("motor 7").position, 0.0);
    }

    #[test]
    fn other_control_modes_do_not_move() {
        let mut bus = DamiaoBus::openarm();
        let w = write_register_request(5, REG_CTRL_MODE, MODE_VEL.to_le_bytes());
        reply(&mut bus, ms(0), PARAM_ID, &w);
        reply(&mut bus, ms(0), 0x05, &CMD_ENABLE);
        let fb = hold(&mut bus, 0x05, MotorModel::DM4310, 1.0, 2, 500);
        assert!(fb.position.abs() < 1e-3, "{fb:?}");
    }

    #[test]
    fn coasts_down_when_released() {
        let mut bus = DamiaoBus::openarm();
        reply(&mut bus, ms(0), 0x05, &CMD_ENABLE);
        // Pure velocity command: spin at 3 rad/s.
        let cmd = encode_mit(MotorModel::DM4310, 0.0, 3.0, 0.0, 2.0, 0.0);
        reply(&mut bus, ms(0), 0x05, &cmd);
        bus.advance(ms(500));
        let spinning = bus.motor(5).expect("motor 5");
        assert!((spinning.velocity - 3.0).abs() < 0.1, "{spinning:?}");
        reply(&mut bus, ms(500), 0x05, &CMD_DISABLE);
        bus.advance(ms(600));
        let coasting = bus.motor(5).expect("motor 5");
        assert!(coasting.velocity > 0.5 && coasting.velocity < spinning.velocity);
        assert!(coasting.position > spinning.position);
        bus.advance(ms(3000));
        bus.advance(ms(6000));
        assert!(bus.motor(5).expect("motor 5").velocity < coasting.velocity);
    }

    #[test]
    fn travel_stops_at_pmax() {
        let mut bus = DamiaoBus::openarm();
        reply(&mut bus, ms(0), 0x05, &CMD_ENABLE);
        let cmd = encode_mit(MotorModel::DM4310, 0.0, 0.0, 0.0, 0.0, 10.0);
        reply(&mut bus, ms(0), 0x05, &cmd);
        for t in 1..=5 {
            bus.advance(ms(t * 1000));
        }
        let m = bus.motor(5).expect("motor 5");
        assert_eq!((m.position, m.velocity), (12.5, 0.0));
        assert!(m.temp_rotor > 31.0, "heats under full torque: {m:?}");
    }

    #[test]
    fn timeout_deadman_disables_with_comm_loss() {
        let mut bus = DamiaoBus::openarm();
        // 2000 × 50 µs = 100 ms.
        let w = write_register_request(5, REG_TIMEOUT, 2000u32.to_le_bytes());
        reply(&mut bus, ms(0), PARAM_ID, &w);
        reply(&mut bus, ms(0), 0x05, &CMD_ENABLE);
        hold(&mut bus, 0x05, MotorModel::DM4310, 1.0, 2, 500);
        // Last command at 500 ms.
        bus.advance(ms(590));
        assert!(bus.motor(5).expect("motor 5").enabled, "not yet");
        bus.advance(ms(650));
        let m = bus.motor(5).expect("motor 5");
        assert!(
            !m.enabled && m.state == STATE_COMM_LOSS && m.torque == 0.0,
            "{m:?}"
        );
        let fb = feedback(
            MotorModel::DM4310,
            &reply(&mut bus, ms(651), PARAM_ID, &refresh_request(5)),
        );
        assert_eq!(fb.state, STATE_COMM_LOSS);
        assert_eq!(reply(&mut bus, ms(652), 0x05, &CMD_DISABLE).data[0], 0xD5);
        // Enable recovers directly from a comm loss.
        assert_eq!(reply(&mut bus, ms(653), 0x05, &CMD_ENABLE).data[0], 0x15);

        // Without TIMEOUT the motor stays enabled however long the host is away.
        reply(&mut bus, ms(0), 0x06, &CMD_ENABLE);
        bus.advance(ms(100_000));
        assert!(bus.motor(6).expect("motor 6").enabled);
    }

    #[test]
    fn deadman_fires_even_across_a_long_gap() {
        let mut bus = DamiaoBus::openarm();
        let w = write_register_request(1, REG_TIMEOUT, 20u32.to_le_bytes());
        reply(&mut bus, ms(0), PARAM_ID, &w);
        reply(&mut bus, ms(0), 0x01, &CMD_ENABLE);
        let cmd = encode_mit(MotorModel::DM8009, 0.0, 0.0, 0.0, 0.0, 20.0);
        reply(&mut bus, ms(0), 0x01, &cmd);
        // The gap is longer than the 1 s integration cap; torque stopped after 1 ms anyway.
        bus.advance(ms(10_000));
        let m = bus.motor(1).expect("motor 1");
        assert_eq!(m.state, STATE_COMM_LOSS);
        assert!(m.position.abs() < 0.01, "{m:?}");
    }

    #[test]
    fn injected_faults_need_clear_error() {
        let mut bus = DamiaoBus::openarm();
        assert!(!bus.inject_fault(3, 0x3));
        assert!(!bus.inject_fault(0x33, STATE_OVER_CURRENT));
        assert!(bus.inject_fault(3, STATE_OVER_CURRENT));
        assert_eq!(reply(&mut bus, ms(0), 0x03, &CMD_ENABLE).data[0], 0xA3);
        assert_eq!(reply(&mut bus, ms(1), 0x03, &CMD_DISABLE).data[0], 0xA3);
        assert_eq!(reply(&mut bus, ms(2), 0x03, &CMD_CLEAR_ERROR).data[0], 0x03);
        assert_eq!(reply(&mut bus, ms(3), 0x03, &CMD_ENABLE).data[0], 0x13);
    }

    #[test]
    fn time_jumps_and_stale_timestamps_are_tolerated() {
        let mut bus = DamiaoBus::openarm();
        reply(&mut bus, ms(10_000), 0x05, &CMD_ENABLE);
        let cmd = encode_mit(MotorModel::DM4310, 0.0, 0.0, 0.0, 0.0, 0.2);
        reply(&mut bus, ms(10_000), 0x05, &cmd);
        bus.advance(ms(5_000)); // stale: no motion
        assert_eq!(bus.motor(5).expect("motor 5").position, 0.0);
        bus.advance(ms(10_100));
        let p = bus.motor(5).expect("motor 5").position;
        assert!(p > 0.0, "{p}");
        // Capped at one second: 0.2 N·m on 0.01 kg·m² covers well under 12.5 rad in 1 s.
        bus.advance(Duration::from_secs(1_000_000));
        let p = bus.motor(5).expect("motor 5").position;
        assert!(p > 1.0 && p < 12.5, "{p}");
        bus.advance(Duration::MAX);
        let mut out = Vec::new();
        bus.handle(Duration::MAX, &classic(0x05, &CMD_DISABLE), &mut out);
        assert_eq!(out.len(), 1);
    }

    #[test]
    fn integration_does_not_depend_on_call_pattern() {
        let mut coarse = DamiaoBus::openarm();
        let mut fine = DamiaoBus::openarm();
        let cmd = encode_mit(MotorModel::DM8009, 1.0, 0.0, 30.0, 1.0, 0.0);
        for bus in [&mut coarse, &mut fine] {
            reply(bus, ms(0), 0x02, &CMD_ENABLE);
            reply(bus, ms(0), 0x02, &cmd);
        }
        coarse.advance(ms(300));
        for us in (0..=300_000).step_by(130) {
            fine.advance(Duration::from_micros(us));
        }
        fine.advance(ms(300));
        assert_eq!(coarse.motor(2), fine.motor(2));
    }

    #[test]
    fn invalid_motor_lists_are_filtered() {
        let bus = DamiaoBus::with_motors(&[
            (0x01, 0x11, MotorModel::DM6006),
            (0x01, 0x12, MotorModel::DM8006),
            (PARAM_ID, 0x13, MotorModel::DM10010),
            (0x02, 0x800, MotorModel::DM10010),
            (0x03, 0x13, MotorModel::DM4310_48V),
        ]);
        let ids: Vec<_> = bus
            .motor_states()
            .iter()
            .map(|m| (m.cmd_id, m.model))
            .collect();
        assert_eq!(ids, [(1, MotorModel::DM6006), (3, MotorModel::DM4310_48V)]);
        assert_eq!(DamiaoBus::openarm().motor_states().len(), 8);
    }

    fn any_frame() -> impl Strategy<Value = SimCanFrame> {
        let id = prop_oneof![0u32..0x20, Just(PARAM_ID), 0u32..0x800, any::<u32>()];
        let data = prop_oneof![
            proptest::collection::vec(any::<u8>(), 0..=64),
            proptest::collection::vec(any::<u8>(), 8..=8),
            proptest::sample::select(vec![CMD_ENABLE, CMD_DISABLE, CMD_SET_ZERO, CMD_CLEAR_ERROR])
                .prop_map(|d| d.to_vec()),
        ];
        (id, prop::bool::weighted(0.1), any::<bool>(), data).prop_map(|(id, extended, fd, data)| {
            SimCanFrame {
                id,
                extended,
                fd,
                data,
            }
        })
    }

    fn param_frame() -> impl Strategy<Value = SimCanFrame> {
        let op = prop_oneof![
            Just(PARAM_REFRESH),
            Just(PARAM_READ),
            Just(PARAM_WRITE),
            Just(PARAM_SAVE),
            any::<u8>()
        ];
        let rid = prop_oneof![0u8..40, 48u8..84, any::<u8>()];
        let value = prop_oneof![
            any::<[u8; 4]>(),
            (0u32..16).prop_map(u32::to_le_bytes),
            (-20.0f32..20.0).prop_map(f32::to_le_bytes),
        ];
        (0u32..12, op, rid, value, any::<bool>()).prop_map(|(target, op, rid, value, fd)| {
            SimCanFrame {
                id: PARAM_ID,
                extended: false,
                fd,
                data: param_request(target, op, rid, value).to_vec(),
            }
        })
    }

    /// A time step: mostly small forward steps, sometimes an arbitrary absolute time.
    fn time_step() -> impl Strategy<Value = (bool, u64)> {
        prop_oneof![8 => (Just(false), 0u64..5_000), 1 => (Just(true), any::<u64>())]
    }

    proptest! {
        #[test]
        fn arbitrary_frames_never_panic(
            steps in proptest::collection::vec(
                (prop_oneof![any_frame(), param_frame()], time_step()),
                0..48,
            ),
        ) {
            let mut bus = DamiaoBus::openarm();
            let mut now = Duration::ZERO;
            for (i, (frame, (absolute, micros))) in steps.iter().enumerate() {
                now = if *absolute {
                    Duration::from_micros(*micros)
                } else {
                    now.saturating_add(Duration::from_micros(*micros))
                };
                let mut out = Vec::new();
                bus.handle(now, frame, &mut out);
                prop_assert!(out.len() <= 1);
                for r in &out {
                    prop_assert_eq!(r.data.len(), 8);
                    prop_assert!(!r.extended && r.id < PARAM_ID);
                    prop_assert_eq!(r.fd, frame.fd);
                }
                let s = bus.stats();
                prop_assert_eq!(s.frames_ok + s.ignored_unknown_id + s.malformed, i as u64 + 1);
                prop_assert_eq!(s.replies, s.frames_ok);
            }
            for m in bus.motor_states() {
                prop_assert!(m.position.is_finite() && m.velocity.is_finite());
                prop_assert!(m.torque.is_finite() && m.temp_rotor.is_finite());
            }
        }
    }
}
