//! Simulated Feetech STS3215 serial-servo bus, as found in the SO-100/SO-101 arm.
//!
//! The simulation is *sans-IO*: bytes the host writes go in through [`FeetechBus::write`],
//! status packets come out in the caller's buffer, and time is passed in by the caller. That
//! keeps it deterministic (tests step time explicitly) and lets the same engine sit behind a
//! fake tty, a unit test or a fuzzer.
//!
//! It speaks Feetech "protocol 0" closely enough for the vendor `scservo_sdk` and LeRobot's
//! Feetech bus: PING, READ, WRITE, REG_WRITE/ACTION, SYNC_READ, SYNC_WRITE and RESET, over a
//! 256-byte control table per servo with STS3215 defaults, plus first-order position dynamics
//! (speed-limited, optionally acceleration-limited moves toward the goal). Packet framing and
//! checksums are [`xoq_wire::feetech`]'s.
//!
//! Choices where the real servo's behaviour is unknown or unhelpful for a simulation:
//! - A READ or SYNC_READ that reaches past address 255, or whose reply would exceed the
//!   protocol's 250-byte LEN, gets **no reply** and counts as `malformed`. On this protocol
//!   error bit `0x08` means an over-current fault, so answering with it would report a
//!   hardware fault that did not happen; silence makes the host time out instead.
//! - A broadcast PING is answered by every servo, in bus order: LeRobot discovers motors
//!   with exactly that request. Every other broadcast except SYNC_READ stays silent.
//! - A WRITE that changes a servo's ID is acknowledged under the id it was addressed to,
//!   because the SDK drops status packets whose id differs from the request's.
//! - RESET is acknowledged but does not wipe the control table: a factory reset would
//!   silently discard a demo arm's calibration.
//! - Only position mode (Operating_Mode 0) moves; other modes hold position.
//! - At most 32 KiB of replies are produced per `write` call; further
//!   replies are dropped. A real bus could not carry more before the host reads.

use std::ops::Range;
use std::time::Duration;

use xoq_wire::feetech::{
    ACTION as INST_ACTION, BROADCAST as BROADCAST_ID, MAX_PARAMS, PING as INST_PING,
    READ as INST_READ, REG_WRITE as INST_REG_WRITE, RESET as INST_RESET,
    SYNC_READ as INST_SYNC_READ, SYNC_WRITE as INST_SYNC_WRITE, WRITE as INST_WRITE, checksum,
    put_packet,
};

/// Model number an STS3215 reports at address 3; hosts identify the servo type by it.
pub const STS3215_MODEL: u16 = 777;

/// Servo ids of an SO-100/SO-101 arm, base to gripper.
pub const SO101_IDS: [u8; 6] = [1, 2, 3, 4, 5, 6];

const HEADER: u8 = 0xFF;
/// Highest id a servo can hold: 0xFE is broadcast and 0xFF would look like a header byte.
const MAX_SERVO_ID: u8 = 0xFD;
/// Largest LEN field accepted, the same limit the vendor SDK applies to packets it receives.
const MAX_LEN_FIELD: u8 = 250;
/// Header (2) + id + LEN, then LEN bytes (instruction, params, checksum).
const MAX_PACKET: usize = 4 + MAX_LEN_FIELD as usize;
/// Bound on buffered host bytes. Parsing runs after every chunk and leaves at most one
/// partial packet behind, so this only has to exceed one chunk plus one packet.
const RX_BUFFER_MAX: usize = 1024;
/// Host bytes appended per parse pass; sized so the buffer bound holds by construction.
const RX_CHUNK: usize = RX_BUFFER_MAX - MAX_PACKET;
/// Reply bytes one `write` call may produce (about 0.3 s of line time at 1 Mbaud).
const MAX_OUTPUT_PER_WRITE: usize = 32 * 1024;

const TABLE_LEN: usize = 256;
const ADDR_FIRMWARE_MAJOR: usize = 0;
const ADDR_FIRMWARE_MINOR: usize = 1;
const ADDR_MODEL: usize = 3;
const ADDR_ID: usize = 5;
const ADDR_BAUD: usize = 6;
const ADDR_MIN_LIMIT: usize = 9;
const ADDR_MAX_LIMIT: usize = 11;
const ADDR_MAX_TEMPERATURE: usize = 13;
const ADDR_MAX_VOLTAGE: usize = 14;
const ADDR_MIN_VOLTAGE: usize = 15;
const ADDR_MAX_TORQUE: usize = 16;
const ADDR_P_COEFF: usize = 21;
const ADDR_D_COEFF: usize = 22;
const ADDR_HOMING_OFFSET: usize = 31;
const ADDR_MODE: usize = 33;
const ADDR_TORQUE_ENABLE: usize = 40;
const ADDR_ACCELERATION: usize = 41;
const ADDR_GOAL_POSITION: usize = 42;
const ADDR_GOAL_VELOCITY: usize = 46;
const ADDR_TORQUE_LIMIT: usize = 48;
const ADDR_PRESENT_POSITION: usize = 56;
const ADDR_PRESENT_VELOCITY: usize = 58;
const ADDR_PRESENT_LOAD: usize = 60;
const ADDR_PRESENT_VOLTAGE: usize = 62;
const ADDR_PRESENT_TEMPERATURE: usize = 63;
const ADDR_MOVING: usize = 66;
const ADDR_PRESENT_CURRENT: usize = 69;
/// Feedback registers: the servo owns them, host writes are acknowledged and ignored.
const READ_ONLY: std::ops::RangeInclusive<usize> = 56..=70;
/// Highest Baud_Rate code the servo accepts; other values are ignored so the bus stays usable.
const MAX_BAUD_CODE: u8 = 7;

/// Encoder steps per turn, also one past the highest position.
const STEPS_PER_TURN: f64 = 4096.0;
const MAX_POSITION: u16 = 4095;
/// No-load top speed: 0.222 s per 60° at 4096 steps per turn is about 3070 steps/s.
const MAX_SPEED: f64 = 3070.0;
/// Acceleration register unit, in steps/s².
const ACCELERATION_UNIT: f64 = 100.0;
/// Longest interval integrated per `advance`, so a stalled host does not teleport the arm.
const MAX_DT: Duration = Duration::from_secs(1);
/// Integration step in seconds; small enough that acceleration ramps look smooth.
const SUBSTEP: f64 = 0.005;

/// Counters of what the bus decoded, for tests and UIs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FeetechStats {
    /// Well-formed packets with a valid checksum and a supported request, whoever they were for.
    pub packets_ok: u64,
    /// Packets whose checksum did not match (each costs a one-byte resync).
    pub checksum_errors: u64,
    /// Framing errors, unknown instructions, invalid parameters and buffer overflows.
    pub malformed: u64,
    /// Status packets sent back to the host.
    pub replies: u64,
}

/// One servo: its control table plus the continuous state the table only shows rounded.
#[derive(Debug, Clone)]
struct Servo {
    table: [u8; TABLE_LEN],
    /// Present position in steps, in the homing-offset-corrected frame the host sees.
    pos: f64,
    /// Signed speed in steps/s.
    vel: f64,
    /// Write stored by REG_WRITE, applied by ACTION.
    pending: Option<(u8, Vec<u8>)>,
}

impl Servo {
    fn new(id: u8) -> Self {
        let mut servo = Self {
            table: [0; TABLE_LEN],
            pos: 2048.0,
            vel: 0.0,
            pending: None,
        };
        let t = &mut servo.table;
        set_byte(t, ADDR_FIRMWARE_MAJOR, 3);
        set_byte(t, ADDR_FIRMWARE_MINOR, 10);
        set_u16(t, ADDR_MODEL, STS3215_MODEL);
        set_byte(t, ADDR_ID, id);
        set_u16(t, ADDR_MAX_LIMIT, MAX_POSITION);
        set_byte(t, ADDR_MAX_TEMPERATURE, 70);
        set_byte(t, ADDR_MAX_VOLTAGE, 140);
        set_byte(t, ADDR_MIN_VOLTAGE, 40);
        set_u16(t, ADDR_MAX_TORQUE, 1000);
        set_byte(t, ADDR_P_COEFF, 32);
        set_byte(t, ADDR_D_COEFF, 32);
        set_u16(t, ADDR_GOAL_POSITION, 2048);
        set_u16(t, ADDR_TORQUE_LIMIT, 1000);
        set_byte(t, ADDR_PRESENT_VOLTAGE, 120);
        set_byte(t, ADDR_PRESENT_TEMPERATURE, 30);
        servo.refresh();
        servo
    }

    fn id(&self) -> u8 {
        byte(&self.table, ADDR_ID)
    }

    fn torque_on(&self) -> bool {
        byte(&self.table, ADDR_TORQUE_ENABLE) == 1
    }

    fn homing_offset(&self) -> i32 {
        decode_sign_magnitude(u16_at(&self.table, ADDR_HOMING_OFFSET), 11)
    }

    /// Goal position limited to the position limits, as the servo firmware does.
    fn effective_goal(&self) -> u16 {
        let a = u16_at(&self.table, ADDR_MIN_LIMIT).min(MAX_POSITION);
        let b = u16_at(&self.table, ADDR_MAX_LIMIT).min(MAX_POSITION);
        // Both limits at 0 is the servo's "no limits" setting, not "pin to 0".
        let (lo, hi) = match (a.min(b), a.max(b)) {
            (0, 0) => (0, MAX_POSITION),
            range => range,
        };
        u16_at(&self.table, ADDR_GOAL_POSITION).clamp(lo, hi)
    }

    fn speed_limit(&self) -> f64 {
        let magnitude = u16_at(&self.table, ADDR_GOAL_VELOCITY) & 0x7FFF;
        if magnitude == 0 {
            MAX_SPEED
        } else {
            f64::from(magnitude).min(MAX_SPEED)
        }
    }

    fn present_position(&self) -> u16 {
        // `as` saturates and maps NaN to 0; the wrap keeps the 12-bit encoder range.
        let steps = (self.pos.round() as i64).rem_euclid(i64::from(MAX_POSITION) + 1);
        u16::try_from(steps).unwrap_or(0)
    }

    /// Apply a host write, keeping the derived state consistent with the new table.
    fn write(&mut self, addr: u8, data: &[u8]) {
        let old_offset = self.homing_offset();
        let was_on = self.torque_on();
        for (a, &value) in (usize::from(addr)..).zip(data) {
            let ignored = READ_ONLY.contains(&a)
                || (a == ADDR_ID && value > MAX_SERVO_ID)
                || (a == ADDR_BAUD && value > MAX_BAUD_CODE);
            if !ignored {
                set_byte(&mut self.table, a, value);
            }
        }
        let new_offset = self.homing_offset();
        if new_offset != old_offset {
            // Present = raw encoder - offset: shifting the offset moves the reading, not the arm.
            let shift = f64::from(new_offset - old_offset);
            self.pos = (self.pos - shift).rem_euclid(STEPS_PER_TURN);
        }
        if was_on != self.torque_on() {
            // Enabling starts a move from rest; disabling lets the arm stop where it is.
            self.vel = 0.0;
        }
        self.refresh();
    }

    /// Integrate `dt` seconds of motion toward the goal.
    fn step(&mut self, dt: f64) {
        if !self.torque_on() || byte(&self.table, ADDR_MODE) != 0 {
            self.vel = 0.0;
            return;
        }
        let goal = f64::from(self.effective_goal());
        let error = goal - self.pos;
        let dist = error.abs();
        if dist < 1e-6 {
            self.pos = goal;
            self.vel = 0.0;
            return;
        }
        let dir = error.signum();
        let vmax = self.speed_limit();
        let accel = f64::from(byte(&self.table, ADDR_ACCELERATION)) * ACCELERATION_UNIT;
        let speed = if accel > 0.0 {
            // Trapezoidal profile: never faster than what can still stop at the goal.
            let target = vmax.min((2.0 * accel * dist).sqrt());
            let along = self.vel * dir;
            if along < target {
                (along + accel * dt).min(target)
            } else {
                (along - accel * dt).max(target)
            }
        } else {
            vmax
        };
        let travel = speed * dt;
        if travel >= dist {
            self.pos = goal;
            self.vel = 0.0;
        } else {
            self.pos = (self.pos + dir * travel).clamp(0.0, f64::from(MAX_POSITION));
            self.vel = dir * speed;
        }
    }

    /// Mirror the continuous state into the feedback registers.
    fn refresh(&mut self) {
        let present = self.present_position();
        let on = self.torque_on();
        let effort = (self.vel.abs() / MAX_SPEED).min(1.0);
        let velocity = self.vel.round() as i32;
        let (load, current) = if on {
            // Plausible magnitudes only: a few percent of rated load while moving.
            let load = (effort * 200.0).round() as i32;
            (
                if velocity < 0 { -load } else { load },
                3 + (effort * 60.0) as u16,
            )
        } else {
            (0, 0)
        };
        let moving = on && (self.vel != 0.0 || self.effective_goal().abs_diff(present) > 1);
        let t = &mut self.table;
        set_u16(t, ADDR_PRESENT_POSITION, present);
        set_u16(
            t,
            ADDR_PRESENT_VELOCITY,
            encode_sign_magnitude(velocity, 15),
        );
        set_u16(t, ADDR_PRESENT_LOAD, encode_sign_magnitude(load, 10));
        set_byte(t, ADDR_MOVING, u8::from(moving));
        set_u16(t, ADDR_PRESENT_CURRENT, current);
    }
}

/// Simulated Feetech bus: a set of STS3215 servos sharing one half-duplex line.
#[derive(Debug, Clone)]
pub struct FeetechBus {
    servos: Vec<Servo>,
    /// Host bytes not yet parsed (at most one partial packet between calls).
    rx: Vec<u8>,
    last_advance: Option<Duration>,
    stats: FeetechStats,
}

impl FeetechBus {
    /// The SO-101 arm: six STS3215 at ids 1..=6, centred (2048), torque off.
    pub fn so101() -> Self {
        Self::with_ids(&SO101_IDS)
    }

    /// STS3215 servos at the given ids, in bus order. Ids that cannot be addressed
    /// (0xFE, 0xFF) and duplicates are skipped, since they could never answer cleanly.
    pub fn with_ids(ids: &[u8]) -> Self {
        let mut servos: Vec<Servo> = Vec::new();
        for &id in ids {
            if id <= MAX_SERVO_ID && !servos.iter().any(|s| s.id() == id) {
                servos.push(Servo::new(id));
            }
        }
        Self {
            servos,
            rx: Vec::with_capacity(RX_BUFFER_MAX),
            last_advance: None,
            stats: FeetechStats::default(),
        }
    }

    /// Feed bytes written by the host at time `now` (monotonic, as a Duration since an
    /// arbitrary origin). Any replies are appended to `out`.
    ///
    /// Motion is advanced to `now` first so reads see up-to-date positions. Bytes may arrive
    /// in any chunking; incomplete packets wait for the next call.
    pub fn write(&mut self, now: Duration, bytes: &[u8], out: &mut Vec<u8>) {
        self.advance(now);
        let limit = out.len().saturating_add(MAX_OUTPUT_PER_WRITE);
        for chunk in bytes.chunks(RX_CHUNK) {
            self.rx.extend_from_slice(chunk);
            if let Some(excess) = self.rx.len().checked_sub(RX_BUFFER_MAX).filter(|&n| n > 0) {
                // Unreachable while parsing keeps up, but the bound must hold regardless.
                self.rx.drain(..excess);
                self.stats.malformed += 1;
            }
            self.parse(out, limit);
        }
    }

    /// Advance motion to `now` (called by the host before reads, and periodically).
    ///
    /// The first call only records the time. A `now` earlier than the last one counts as no
    /// elapsed time, and at most one second is integrated per call.
    pub fn advance(&mut self, now: Duration) {
        let Some(last) = self.last_advance else {
            self.last_advance = Some(now);
            return;
        };
        // A stale timestamp keeps the later one, so no interval is ever integrated twice.
        let Some(elapsed) = now.checked_sub(last) else {
            return;
        };
        self.last_advance = Some(now);
        let dt = elapsed.min(MAX_DT).as_secs_f64();
        if dt <= 0.0 {
            return;
        }
        let steps = (dt / SUBSTEP).ceil().max(1.0);
        let h = dt / steps;
        for servo in &mut self.servos {
            for _ in 0..steps as u32 {
                servo.step(h);
            }
            servo.refresh();
        }
    }

    /// Raw byte `addr` of servo `id`'s control table, for tests and UIs.
    pub fn register(&self, id: u8, addr: u8) -> Option<u8> {
        self.servo(id).map(|s| byte(&s.table, usize::from(addr)))
    }

    /// Little-endian 2-byte value at `addr` of servo `id`; `None` past the end of the table.
    pub fn read_u16(&self, id: u8, addr: u8) -> Option<u16> {
        let servo = self.servo(id)?;
        let start = usize::from(addr);
        match servo.table.get(start..start + 2)? {
            &[lo, hi] => Some(u16::from_le_bytes([lo, hi])),
            _ => None,
        }
    }

    /// Decoder counters since the bus was created.
    pub fn stats(&self) -> FeetechStats {
        self.stats
    }

    /// Line rate the servos listen at, from the first servo's Baud_Rate register; the host
    /// side applies it (a host at another rate gets no answers). 1 Mbaud for an empty bus.
    pub fn baud_rate(&self) -> u32 {
        let code = self.servos.first().map_or(0, |s| byte(&s.table, ADDR_BAUD));
        match code {
            1 => 500_000,
            2 => 250_000,
            3 => 128_000,
            4 => 115_200,
            5 => 57_600,
            6 => 38_400,
            7 => 19_200,
            _ => 1_000_000,
        }
    }

    fn servo(&self, id: u8) -> Option<&Servo> {
        self.servos.iter().find(|s| s.id() == id)
    }

    /// Decode every complete packet in the buffer, leaving at most one partial packet.
    fn parse(&mut self, out: &mut Vec<u8>, limit: usize) {
        // Taken out so handlers can borrow `self` mutably while a packet borrows the buffer.
        let mut rx = std::mem::take(&mut self.rx);
        let mut pos = 0;
        while let Some(rest) = rx.get(pos..) {
            match rest.windows(2).position(|w| w == [HEADER, HEADER]) {
                Some(skip) => pos += skip,
                None => {
                    // A trailing 0xFF may be the first half of the next header.
                    let keep = usize::from(rest.last() == Some(&HEADER));
                    pos += rest.len() - keep;
                    break;
                }
            }
            let Some(rest) = rx.get(pos..) else { break };
            let Some(&id) = rest.get(2) else { break };
            if id == HEADER {
                // Three 0xFF in a row: the header starts one byte later.
                pos += 1;
                continue;
            }
            let Some(&len) = rest.get(3) else { break };
            if !(2..=MAX_LEN_FIELD).contains(&len) {
                self.stats.malformed += 1;
                pos += 1;
                continue;
            }
            let total = 4 + usize::from(len);
            let Some(packet) = rest.get(..total) else {
                break;
            };
            let Some((&chk, body)) = packet.get(2..).and_then(<[u8]>::split_last) else {
                break;
            };
            if checksum(body) != chk {
                self.stats.checksum_errors += 1;
                pos += 1;
                continue;
            }
            pos += total;
            // body = id, LEN, instruction, params.
            if let &[_, _, instr, ref params @ ..] = body {
                self.handle(id, instr, params, out, limit);
            }
        }
        rx.drain(..pos.min(rx.len()));
        self.rx = rx;
    }

    fn handle(&mut self, id: u8, instr: u8, params: &[u8], out: &mut Vec<u8>, limit: usize) {
        let ok = match instr {
            INST_PING => {
                self.ping(id, out, limit);
                true
            }
            INST_READ => self.read(id, params, out, limit),
            INST_WRITE => self.write_or_register(id, params, false, out, limit),
            INST_REG_WRITE => self.write_or_register(id, params, true, out, limit),
            INST_ACTION => {
                self.action(id, out, limit);
                true
            }
            INST_RESET => {
                if self.servo(id).is_some() {
                    self.ack(id, out, limit);
                }
                true
            }
            INST_SYNC_READ => self.sync_read(params, out, limit),
            INST_SYNC_WRITE => self.sync_write(params),
            _ => false,
        };
        if ok {
            self.stats.packets_ok += 1;
        } else {
            self.stats.malformed += 1;
        }
    }

    /// Empty status packet with error 0.
    fn ack(&mut self, id: u8, out: &mut Vec<u8>, limit: usize) {
        if push_status(out, limit, id, &[]) {
            self.stats.replies += 1;
        }
    }

    fn ping(&mut self, id: u8, out: &mut Vec<u8>, limit: usize) {
        if id == BROADCAST_ID {
            let ids: Vec<u8> = self.servos.iter().map(Servo::id).collect();
            for servo_id in ids {
                self.ack(servo_id, out, limit);
            }
        } else if self.servo(id).is_some() {
            self.ack(id, out, limit);
        }
    }

    fn read(&mut self, id: u8, params: &[u8], out: &mut Vec<u8>, limit: usize) -> bool {
        let &[addr, len] = params else { return false };
        let Some(range) = read_range(addr, len) else {
            return false;
        };
        if let Some(data) = self.servo(id).and_then(|s| s.table.get(range))
            && push_status(out, limit, id, data)
        {
            self.stats.replies += 1;
        }
        true
    }

    fn write_or_register(
        &mut self,
        id: u8,
        params: &[u8],
        register: bool,
        out: &mut Vec<u8>,
        limit: usize,
    ) -> bool {
        let Some((&addr, data)) = params.split_first() else {
            return false;
        };
        if data.is_empty() || usize::from(addr) + data.len() > TABLE_LEN {
            return false;
        }
        let mut found = false;
        for servo in &mut self.servos {
            if id == BROADCAST_ID || servo.id() == id {
                found = true;
                if register {
                    servo.pending = Some((addr, data.to_vec()));
                } else {
                    servo.write(addr, data);
                }
            }
        }
        if found && id != BROADCAST_ID {
            self.ack(id, out, limit);
        }
        true
    }

    fn action(&mut self, id: u8, out: &mut Vec<u8>, limit: usize) {
        let mut found = false;
        for servo in &mut self.servos {
            if id == BROADCAST_ID || servo.id() == id {
                found = true;
                if let Some((addr, data)) = servo.pending.take() {
                    servo.write(addr, &data);
                }
            }
        }
        if found && id != BROADCAST_ID {
            self.ack(id, out, limit);
        }
    }

    fn sync_read(&mut self, params: &[u8], out: &mut Vec<u8>, limit: usize) -> bool {
        let &[addr, len, ref ids @ ..] = params else {
            return false;
        };
        let Some(range) = read_range(addr, len) else {
            return false;
        };
        // One answer per servo even if the host lists it twice, as on a real bus.
        let mut answered = [false; 256];
        for &id in ids {
            let Some(seen) = answered.get_mut(usize::from(id)) else {
                continue;
            };
            if *seen {
                continue;
            }
            *seen = true;
            if let Some(data) = self.servo(id).and_then(|s| s.table.get(range.clone()))
                && push_status(out, limit, id, data)
            {
                self.stats.replies += 1;
            }
        }
        true
    }

    fn sync_write(&mut self, params: &[u8]) -> bool {
        let &[addr, len, ref entries @ ..] = params else {
            return false;
        };
        let stride = usize::from(len) + 1;
        if len == 0
            || usize::from(addr) + usize::from(len) > TABLE_LEN
            || entries.len() % stride != 0
        {
            return false;
        }
        for entry in entries.chunks_exact(stride) {
            let Some((&id, data)) = entry.split_first() else {
                continue;
            };
            for servo in self.servos.iter_mut().filter(|s| s.id() == id) {
                servo.write(addr, data);
            }
        }
        true
    }
}

/// Table range of a READ, or `None` if it leaves the table or the reply would be oversized.
fn read_range(addr: u8, len: u8) -> Option<Range<usize>> {
    let start = usize::from(addr);
    let end = start + usize::from(len);
    (end <= TABLE_LEN && usize::from(len) + 2 <= usize::from(MAX_LEN_FIELD)).then_some(start..end)
}

/// Append a status packet (error 0) unless it would exceed `limit`; true if appended.
fn push_status(out: &mut Vec<u8>, limit: usize, id: u8, params: &[u8]) -> bool {
    if params.len() > MAX_PARAMS || out.len() + params.len() + 6 > limit {
        return false;
    }
    put_packet(out, id, 0, params);
    true
}

fn decode_sign_magnitude(raw: u16, sign_bit: u32) -> i32 {
    let magnitude = i32::from(raw & ((1 << sign_bit) - 1));
    if raw & (1 << sign_bit) != 0 {
        -magnitude
    } else {
        magnitude
    }
}

fn encode_sign_magnitude(value: i32, sign_bit: u32) -> u16 {
    let max = (1u32 << sign_bit) - 1;
    let magnitude = u16::try_from(value.unsigned_abs().min(max)).unwrap_or(0);
    if value < 0 {
        magnitude | (1 << sign_bit)
    } else {
        magnitude
    }
}

fn byte(table: &[u8; TABLE_LEN], addr: usize) -> u8 {
    table.get(addr).copied().unwrap_or(0)
}

fn set_byte(table: &mut [u8; TABLE_LEN], addr: usize, value: u8) {
    if let Some(slot) = table.get_mut(addr) {
        *slot = value;
    }
}

fn u16_at(table: &[u8; TABLE_LEN], addr: usize) -> u16 {
    u16::from_le_bytes([byte(table, addr), byte(table, addr + 1)])
}

fn set_u16(table: &mut [u8; TABLE_LEN], addr: usize, value: u16) {
    let [lo, hi] = value.to_le_bytes();
    set_byte(table, addr, lo);
    set_byte(table, addr + 1, hi);
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Instruction packet built independently of the production checksum code.
    fn pkt(id: u8, instr: u8, params: &[u8]) -> Vec<u8> {
        let len = u8::try_from(params.len() + 2).expect("test packet too long");
        let mut p = vec![0xFF, 0xFF, id, len, instr];
        p.extend_from_slice(params);
        let sum = p[2..].iter().fold(0u8, |a, &b| a.wrapping_add(b));
        p.push(!sum);
        p
    }

    #[derive(Debug, PartialEq, Eq)]
    struct Status {
        id: u8,
        err: u8,
        params: Vec<u8>,
    }

    /// Split a reply stream into status packets, asserting it is exactly a sequence of them.
    fn statuses(mut bytes: &[u8]) -> Vec<Status> {
        let mut v = Vec::new();
        while !bytes.is_empty() {
            assert!(bytes.len() >= 6, "short status packet: {bytes:02X?}");
            assert_eq!(&bytes[..2], &[0xFF, 0xFF], "bad header: {bytes:02X?}");
            let len = usize::from(bytes[3]);
            assert!(len >= 2);
            let total = 4 + len;
            assert!(bytes.len() >= total, "truncated status: {bytes:02X?}");
            let sum = bytes[2..total - 1]
                .iter()
                .fold(0u8, |a, &b| a.wrapping_add(b));
            assert_eq!(bytes[total - 1], !sum, "bad reply checksum");
            v.push(Status {
                id: bytes[2],
                err: bytes[4],
                params: bytes[5..total - 1].to_vec(),
            });
            bytes = &bytes[total..];
        }
        v
    }

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    fn send(bus: &mut FeetechBus, now: Duration, bytes: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        bus.write(now, bytes, &mut out);
        out
    }

    fn ack(id: u8) -> Status {
        Status {
            id,
            err: 0,
            params: vec![],
        }
    }

    #[test]
    fn packet_builder_matches_protocol_checksum() {
        assert_eq!(pkt(1, INST_PING, &[]), [0xFF, 0xFF, 0x01, 0x02, 0x01, 0xFB]);
        assert_eq!(checksum(&[0x01, 0x02, 0x01]), 0xFB);
        // Wrapping sum: 0xFE + 0x04 + 0x03 + 0xFF + 0xFF wraps past 0x100 twice.
        let p = pkt(0xFE, INST_WRITE, &[0xFF, 0xFF]);
        assert_eq!(
            *p.last().expect("checksum byte"),
            checksum(&p[2..p.len() - 1])
        );
    }

    #[test]
    fn ping_reply_exact_bytes() {
        let mut bus = FeetechBus::so101();
        let out = send(&mut bus, ms(0), &pkt(1, INST_PING, &[]));
        assert_eq!(out, [0xFF, 0xFF, 0x01, 0x02, 0x00, 0xFC]);
    }

    #[test]
    fn read_model_number_exact_bytes() {
        let mut bus = FeetechBus::so101();
        let out = send(&mut bus, ms(0), &pkt(1, INST_READ, &[3, 2]));
        assert_eq!(out, [0xFF, 0xFF, 0x01, 0x04, 0x00, 0x09, 0x03, 0xEE]);
        assert_eq!(u16::from_le_bytes([0x09, 0x03]), STS3215_MODEL);
    }

    #[test]
    fn ping_and_model_on_every_servo() {
        let mut bus = FeetechBus::so101();
        for id in SO101_IDS {
            let r = statuses(&send(&mut bus, ms(0), &pkt(id, INST_PING, &[])));
            assert_eq!(r, [ack(id)]);
            let r = statuses(&send(&mut bus, ms(0), &pkt(id, INST_READ, &[3, 2])));
            assert_eq!(r.len(), 1);
            assert_eq!(r[0].id, id);
            assert_eq!(r[0].params, STS3215_MODEL.to_le_bytes());
            assert_eq!(bus.read_u16(id, 3), Some(STS3215_MODEL));
        }
        // Ids not on the bus stay silent but the packet was still well-formed.
        assert!(send(&mut bus, ms(0), &pkt(7, INST_PING, &[])).is_empty());
        assert_eq!(bus.stats().packets_ok, 13);
        assert_eq!(bus.stats().replies, 12);
    }

    #[test]
    fn firmware_identical_across_servos() {
        let mut bus = FeetechBus::so101();
        let versions: Vec<Vec<u8>> = SO101_IDS
            .iter()
            .map(|&id| {
                let r = statuses(&send(&mut bus, ms(0), &pkt(id, INST_READ, &[0, 2])));
                assert_eq!(r.len(), 1);
                r[0].params.clone()
            })
            .collect();
        assert!(versions.iter().all(|v| v == &[3, 10]), "{versions:?}");
    }

    #[test]
    fn broadcast_ping_answered_by_every_servo() {
        let mut bus = FeetechBus::so101();
        let r = statuses(&send(&mut bus, ms(0), &pkt(BROADCAST_ID, INST_PING, &[])));
        let ids: Vec<u8> = r.iter().map(|s| s.id).collect();
        assert_eq!(ids, SO101_IDS);
        assert!(r.iter().all(|s| s.err == 0 && s.params.is_empty()));
    }

    #[test]
    fn write_is_acked_and_applied() {
        let mut bus = FeetechBus::so101();
        let r = statuses(&send(
            &mut bus,
            ms(0),
            &pkt(3, INST_WRITE, &[42, 0xC4, 0x09]),
        ));
        assert_eq!(r, [ack(3)]);
        assert_eq!(bus.read_u16(3, 42), Some(2500));
        assert_eq!(bus.read_u16(2, 42), Some(2048));
    }

    #[test]
    fn configuration_writes_are_acked() {
        let mut bus = FeetechBus::so101();
        for addr in [7u8, 16, 21, 22, 23, 28, 33, 36, 40, 41, 55, 85] {
            let out = send(&mut bus, ms(0), &pkt(4, INST_WRITE, &[addr, 0]));
            assert_eq!(statuses(&out), [ack(4)], "address {addr}");
            assert_eq!(bus.register(4, addr), Some(0), "address {addr}");
        }
        let out = send(&mut bus, ms(0), &pkt(4, INST_WRITE, &[85, 254]));
        assert_eq!(statuses(&out), [ack(4)]);
        assert_eq!(bus.register(4, 85), Some(254));
    }

    #[test]
    fn broadcast_write_applies_to_all_silently() {
        let mut bus = FeetechBus::so101();
        assert!(send(&mut bus, ms(0), &pkt(BROADCAST_ID, INST_WRITE, &[40, 1])).is_empty());
        assert!(SO101_IDS.iter().all(|&id| bus.register(id, 40) == Some(1)));
    }

    #[test]
    fn read_only_registers_ignore_writes() {
        let mut bus = FeetechBus::so101();
        // Present_Position (56) through Present_Temperature (63).
        let out = send(
            &mut bus,
            ms(0),
            &pkt(1, INST_WRITE, &[56, 0x10, 0, 0, 0, 0, 0, 7, 99]),
        );
        assert_eq!(statuses(&out), [ack(1)]);
        assert_eq!(bus.read_u16(1, 56), Some(2048));
        assert_eq!(bus.register(1, 62), Some(120));
        assert_eq!(bus.register(1, 63), Some(30));
        // Goal_Position (42) through Present_Temperature (63) in one write.
        let mut straddling = vec![42, 0x00, 0x04];
        straddling.resize(1 + (64 - 42), 5);
        let out = send(&mut bus, ms(0), &pkt(1, INST_WRITE, &straddling));
        assert_eq!(statuses(&out), [ack(1)]);
        assert_eq!(
            bus.read_u16(1, 42),
            Some(1024),
            "writable part of a straddling write applies"
        );
        assert_eq!(bus.register(1, 62), Some(120));
    }

    #[test]
    fn id_write_readdresses_servo() {
        let mut bus = FeetechBus::so101();
        let out = send(&mut bus, ms(0), &pkt(6, INST_WRITE, &[5, 9]));
        // Acknowledged under the old id so the SDK's id match accepts it.
        assert_eq!(statuses(&out), [ack(6)]);
        assert!(send(&mut bus, ms(0), &pkt(6, INST_PING, &[])).is_empty());
        assert_eq!(
            statuses(&send(&mut bus, ms(0), &pkt(9, INST_PING, &[]))),
            [ack(9)]
        );
        // Unaddressable ids are refused.
        send(&mut bus, ms(0), &pkt(9, INST_WRITE, &[5, 0xFE]));
        assert_eq!(bus.register(9, 5), Some(9));
    }

    #[test]
    fn baud_rate_follows_first_servo() {
        let mut bus = FeetechBus::so101();
        assert_eq!(bus.baud_rate(), 1_000_000);
        send(&mut bus, ms(0), &pkt(1, INST_WRITE, &[6, 4]));
        assert_eq!(bus.baud_rate(), 115_200);
        send(&mut bus, ms(0), &pkt(1, INST_WRITE, &[6, 200]));
        assert_eq!(bus.baud_rate(), 115_200, "invalid code ignored");
        assert_eq!(FeetechBus::with_ids(&[]).baud_rate(), 1_000_000);
    }

    #[test]
    fn homing_offset_shifts_present_position() {
        let mut bus = FeetechBus::so101();
        // +100, then -100 (sign-magnitude, bit 11).
        send(&mut bus, ms(0), &pkt(2, INST_WRITE, &[31, 100, 0]));
        assert_eq!(bus.read_u16(2, 56), Some(1948));
        send(&mut bus, ms(0), &pkt(2, INST_WRITE, &[31, 100, 0x08]));
        assert_eq!(bus.read_u16(2, 56), Some(2148));
    }

    #[test]
    fn sync_read_replies_in_requested_order() {
        let mut bus = FeetechBus::so101();
        let req = pkt(BROADCAST_ID, INST_SYNC_READ, &[56, 2, 1, 2, 3, 4, 5, 6]);
        let r = statuses(&send(&mut bus, ms(0), &req));
        assert_eq!(
            r.iter().map(|s| s.id).collect::<Vec<_>>(),
            [1, 2, 3, 4, 5, 6]
        );
        assert!(r.iter().all(|s| s.err == 0 && s.params == [0x00, 0x08]));

        let req = pkt(BROADCAST_ID, INST_SYNC_READ, &[56, 2, 5, 9, 2, 6, 2]);
        let r = statuses(&send(&mut bus, ms(0), &req));
        assert_eq!(r.iter().map(|s| s.id).collect::<Vec<_>>(), [5, 2, 6]);
    }

    #[test]
    fn sync_write_sets_goals_without_reply() {
        let mut bus = FeetechBus::so101();
        let mut params = vec![42, 2];
        for id in SO101_IDS {
            params.push(id);
            params.extend_from_slice(&(1000 + u16::from(id)).to_le_bytes());
        }
        let out = send(
            &mut bus,
            ms(0),
            &pkt(BROADCAST_ID, INST_SYNC_WRITE, &params),
        );
        assert!(out.is_empty());
        for id in SO101_IDS {
            assert_eq!(bus.read_u16(id, 42), Some(1000 + u16::from(id)));
        }
        assert_eq!(bus.stats().packets_ok, 1);
    }

    #[test]
    fn reg_write_waits_for_action() {
        let mut bus = FeetechBus::so101();
        let out = send(&mut bus, ms(0), &pkt(2, INST_REG_WRITE, &[42, 0xE8, 0x03]));
        assert_eq!(statuses(&out), [ack(2)]);
        assert_eq!(bus.read_u16(2, 42), Some(2048), "not applied before ACTION");
        let out = send(&mut bus, ms(0), &pkt(BROADCAST_ID, INST_ACTION, &[]));
        assert!(out.is_empty(), "broadcast ACTION is silent");
        assert_eq!(bus.read_u16(2, 42), Some(1000));

        send(&mut bus, ms(0), &pkt(3, INST_REG_WRITE, &[42, 0x00, 0x04]));
        let out = send(&mut bus, ms(0), &pkt(3, INST_ACTION, &[]));
        assert_eq!(statuses(&out), [ack(3)]);
        assert_eq!(bus.read_u16(3, 42), Some(1024));
    }

    #[test]
    fn reset_is_acked() {
        let mut bus = FeetechBus::so101();
        let out = send(&mut bus, ms(0), &pkt(1, INST_RESET, &[]));
        assert_eq!(statuses(&out), [ack(1)]);
    }

    fn script() -> Vec<u8> {
        let mut s = Vec::new();
        s.extend(pkt(1, INST_PING, &[]));
        s.extend(pkt(2, INST_READ, &[3, 2]));
        s.extend(pkt(BROADCAST_ID, INST_WRITE, &[40, 1]));
        s.extend(pkt(BROADCAST_ID, INST_SYNC_READ, &[56, 4, 3, 1, 6]));
        s.extend(pkt(5, INST_WRITE, &[42, 0x10, 0x0A]));
        s
    }

    #[test]
    fn byte_at_a_time_matches_whole_packets() {
        let mut whole = FeetechBus::so101();
        let expected = send(&mut whole, ms(0), &script());
        assert_eq!(statuses(&expected).len(), 1 + 1 + 3 + 1);

        let mut bytewise = FeetechBus::so101();
        let mut out = Vec::new();
        for b in script() {
            bytewise.write(ms(0), &[b], &mut out);
        }
        assert_eq!(out, expected);
        assert_eq!(bytewise.stats(), whole.stats());
    }

    #[test]
    fn garbage_is_skipped() {
        let mut bus = FeetechBus::so101();
        let mut input = vec![0x00, 0x13, 0xFF, 0x42, 0xFE];
        input.extend(pkt(1, INST_PING, &[]));
        input.extend([0xAA, 0xFF, 0x00, 0xFF]);
        // A third 0xFF before a real header.
        input.push(0xFF);
        input.extend(pkt(2, INST_PING, &[]));
        let r = statuses(&send(&mut bus, ms(0), &input));
        assert_eq!(r, [ack(1), ack(2)]);
        assert_eq!(bus.stats().packets_ok, 2);
    }

    #[test]
    fn bad_checksum_is_counted_and_unanswered() {
        let mut bus = FeetechBus::so101();
        let mut bad = pkt(1, INST_PING, &[]);
        *bad.last_mut().expect("checksum byte") ^= 0x55;
        assert!(send(&mut bus, ms(0), &bad).is_empty());
        assert_eq!(bus.stats().checksum_errors, 1);
        assert_eq!(bus.stats().packets_ok, 0);
        // The decoder resynchronises on the next packet.
        let r = statuses(&send(&mut bus, ms(0), &pkt(1, INST_PING, &[])));
        assert_eq!(r, [ack(1)]);
    }

    #[test]
    fn malformed_packets_are_counted_and_unanswered() {
        let mut bus = FeetechBus::so101();
        // LEN < 2.
        assert!(send(&mut bus, ms(0), &[0xFF, 0xFF, 0x01, 0x01, 0xFD]).is_empty());
        // Unknown instruction.
        assert!(send(&mut bus, ms(0), &pkt(1, 0x42, &[])).is_empty());
        // READ past the end of the table: no reply (documented choice).
        assert!(send(&mut bus, ms(0), &pkt(1, INST_READ, &[255, 2])).is_empty());
        // READ whose reply would exceed LEN 250.
        assert!(send(&mut bus, ms(0), &pkt(1, INST_READ, &[0, 249])).is_empty());
        // WRITE without data.
        assert!(send(&mut bus, ms(0), &pkt(1, INST_WRITE, &[40])).is_empty());
        // SYNC_WRITE whose entries do not divide evenly.
        assert!(
            send(
                &mut bus,
                ms(0),
                &pkt(BROADCAST_ID, INST_SYNC_WRITE, &[42, 2, 1, 0])
            )
            .is_empty()
        );
        assert_eq!(bus.stats().malformed, 6);
        assert_eq!(bus.stats().packets_ok, 0);
        assert_eq!(bus.read_u16(1, 42), Some(2048));
        // Largest in-range READ still works.
        let r = statuses(&send(&mut bus, ms(0), &pkt(1, INST_READ, &[8, 248])));
        assert_eq!(r.len(), 1);
        assert_eq!(r[0].params.len(), 248);
    }

    #[test]
    fn output_per_write_is_capped() {
        let mut bus = FeetechBus::so101();
        let one = pkt(BROADCAST_ID, INST_SYNC_READ, &[0, 248, 1, 2, 3, 4, 5, 6]);
        let flood: Vec<u8> = one.iter().copied().cycle().take(one.len() * 100).collect();
        let out = send(&mut bus, ms(0), &flood);
        assert!(!out.is_empty());
        assert!(out.len() <= MAX_OUTPUT_PER_WRITE);
        statuses(&out);
    }

    fn goal(bus: &mut FeetechBus, now: Duration, id: u8, position: u16) {
        let [lo, hi] = position.to_le_bytes();
        send(bus, now, &pkt(id, INST_WRITE, &[42, lo, hi]));
    }

    fn torque(bus: &mut FeetechBus, now: Duration, id: u8, on: bool) {
        send(bus, now, &pkt(id, INST_WRITE, &[40, u8::from(on)]));
    }

    fn present(bus: &FeetechBus, id: u8) -> u16 {
        bus.read_u16(id, 56).expect("servo exists")
    }

    #[test]
    fn moves_toward_goal_at_finite_speed() {
        let mut bus = FeetechBus::so101();
        torque(&mut bus, ms(0), 1, true);
        goal(&mut bus, ms(0), 1, 3000);
        bus.advance(ms(100));
        let p = present(&bus, 1);
        assert!(p > 2048 && p < 3000, "after 0.1 s: {p}");
        assert_eq!(bus.register(1, 66), Some(1), "moving");
        let v = bus.read_u16(1, 58).expect("velocity");
        assert!(v & 0x8000 == 0 && v > 2000, "positive speed: {v:#x}");

        bus.advance(ms(2100));
        assert!(present(&bus, 1).abs_diff(3000) <= 1);
        assert_eq!(bus.register(1, 66), Some(0), "stopped");
        assert_eq!(bus.read_u16(1, 58), Some(0));
        // Other servos were never enabled.
        assert_eq!(present(&bus, 2), 2048);
    }

    #[test]
    fn reads_in_write_see_advanced_motion() {
        let mut bus = FeetechBus::so101();
        torque(&mut bus, ms(0), 1, true);
        goal(&mut bus, ms(0), 1, 1000);
        let r = statuses(&send(&mut bus, ms(100), &pkt(1, INST_READ, &[56, 4])));
        let pos = u16::from_le_bytes([r[0].params[0], r[0].params[1]]);
        let vel = u16::from_le_bytes([r[0].params[2], r[0].params[3]]);
        assert!(pos < 2048 && pos > 1000, "{pos}");
        assert!(
            vel & 0x8000 != 0,
            "negative speed is sign-magnitude: {vel:#x}"
        );
    }

    #[test]
    fn torque_off_holds_position() {
        let mut bus = FeetechBus::so101();
        goal(&mut bus, ms(0), 1, 3000);
        bus.advance(ms(2000));
        assert_eq!(present(&bus, 1), 2048);
        assert_eq!(bus.register(1, 66), Some(0));
        // Enabling torque later moves toward the stored goal.
        torque(&mut bus, ms(2000), 1, true);
        bus.advance(ms(4000));
        assert!(present(&bus, 1).abs_diff(3000) <= 1);
        // Disabling mid-move freezes the arm.
        goal(&mut bus, ms(4000), 1, 100);
        bus.advance(ms(4100));
        torque(&mut bus, ms(4100), 1, false);
        let frozen = present(&bus, 1);
        bus.advance(ms(6000));
        assert_eq!(present(&bus, 1), frozen);
    }

    #[test]
    fn goal_speed_and_limits_are_respected() {
        let mut bus = FeetechBus::so101();
        // Goal_Velocity 500 steps/s, Max_Position_Limit 2500.
        send(&mut bus, ms(0), &pkt(1, INST_WRITE, &[46, 0xF4, 0x01]));
        send(&mut bus, ms(0), &pkt(1, INST_WRITE, &[11, 0xC4, 0x09]));
        torque(&mut bus, ms(0), 1, true);
        goal(&mut bus, ms(0), 1, 4000);
        bus.advance(ms(500));
        let p = present(&bus, 1);
        assert!(p.abs_diff(2048 + 250) <= 2, "{p}");
        bus.advance(ms(1500));
        bus.advance(ms(2500));
        assert_eq!(present(&bus, 1), 2500);
        assert_eq!(bus.register(1, 66), Some(0));
    }

    #[test]
    fn acceleration_ramps_without_overshoot() {
        let mut fast = FeetechBus::so101();
        let mut ramped = FeetechBus::so101();
        // 10 * 100 steps/s^2.
        send(&mut ramped, ms(0), &pkt(1, INST_WRITE, &[41, 10]));
        for bus in [&mut fast, &mut ramped] {
            torque(bus, ms(0), 1, true);
            goal(bus, ms(0), 1, 2548);
        }
        fast.advance(ms(100));
        ramped.advance(ms(100));
        assert!(present(&ramped, 1) < present(&fast, 1));
        let mut last = present(&ramped, 1);
        for t in (200..=3000).step_by(100) {
            ramped.advance(ms(t));
            let p = present(&ramped, 1);
            assert!(p >= last && p <= 2548, "monotonic, no overshoot: {p}");
            last = p;
        }
        assert_eq!(last, 2548);
    }

    #[test]
    fn time_jumps_and_stale_timestamps_are_tolerated() {
        let mut bus = FeetechBus::so101();
        torque(&mut bus, ms(10_000), 1, true);
        goal(&mut bus, ms(10_000), 1, 4095);
        bus.advance(ms(5_000)); // stale: no motion
        assert_eq!(present(&bus, 1), 2048);
        bus.advance(ms(10_100));
        let p = present(&bus, 1);
        assert!(p > 2048 && p < 4095, "{p}");
        bus.advance(Duration::from_secs(1_000_000)); // capped at one second of motion
        assert_eq!(present(&bus, 1), 4095);
    }

    fn chunked_feed(bus: &mut FeetechBus, data: &[u8], splits: &[(usize, u64)]) {
        let mut rest = data;
        let mut i = 0;
        while !rest.is_empty() {
            let (size, t) = splits[i % splits.len()];
            let (chunk, tail) = rest.split_at(size.min(rest.len()));
            let mut out = Vec::new();
            bus.write(Duration::from_micros(t), chunk, &mut out);
            assert!(bus.rx.len() <= RX_BUFFER_MAX);
            assert!(out.len() < 64 * 1024);
            rest = tail;
            i += 1;
        }
    }

    fn header_heavy_byte() -> impl Strategy<Value = u8> {
        prop_oneof![any::<u8>(), Just(0xFF), Just(0xFE), 0u8..8]
    }

    fn arbitrary_packet() -> impl Strategy<Value = Vec<u8>> {
        let instr = prop_oneof![
            Just(INST_PING),
            Just(INST_READ),
            Just(INST_WRITE),
            Just(INST_REG_WRITE),
            Just(INST_ACTION),
            Just(INST_RESET),
            Just(INST_SYNC_READ),
            Just(INST_SYNC_WRITE),
            any::<u8>(),
        ];
        let id = prop_oneof![1u8..=6, Just(BROADCAST_ID), any::<u8>()];
        (
            id,
            instr,
            proptest::collection::vec(header_heavy_byte(), 0..40),
        )
            .prop_map(|(id, instr, params)| pkt(id, instr, &params))
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(
            data in proptest::collection::vec(header_heavy_byte(), 0..2048),
            splits in proptest::collection::vec((1usize..300, any::<u64>()), 1..32),
        ) {
            let mut bus = FeetechBus::so101();
            chunked_feed(&mut bus, &data, &splits);
        }

        #[test]
        fn arbitrary_packets_never_panic(
            packets in proptest::collection::vec(arbitrary_packet(), 0..64),
            splits in proptest::collection::vec((1usize..300, 0u64..5_000_000), 1..32),
        ) {
            let data: Vec<u8> = packets.concat();
            let mut bus = FeetechBus::so101();
            chunked_feed(&mut bus, &data, &splits);
            // Whatever was written, present positions stay within the encoder range.
            for id in SO101_IDS {
                if let Some(p) = bus.read_u16(id, 56) {
                    prop_assert!(p <= MAX_POSITION);
                }
            }
        }

        #[test]
        fn resyncs_after_garbage(
            garbage in proptest::collection::vec(0u8..0xFF, 0..512),
            id in 1u8..=6,
            split in 1usize..64,
        ) {
            let mut data = garbage;
            data.extend(pkt(id, INST_PING, &[]));
            let mut bus = FeetechBus::so101();
            let mut out = Vec::new();
            for chunk in data.chunks(split) {
                bus.write(Duration::ZERO, chunk, &mut out);
            }
            prop_assert_eq!(statuses(&out), vec![ack(id)]);
        }
    }
}
