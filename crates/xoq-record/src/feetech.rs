//! Feetech STS servo traffic (an SO-100/SO-101 arm's bus) as joint samples: the positions
//! the servos report and the goals written to them, decoded from the two directions of the
//! serial line as an observer sees them (sans-IO: bytes in with their stamps, samples out).
//!
//! What is decoded, as LeRobot's so100/so101 drivers and the vendor SDK use the STS3215:
//! - **Positions** (`Present_Position`, address 56, 2 bytes): a READ or a SYNC_READ whose
//!   range covers address 56 is remembered; the status packets that answer it (matched by
//!   servo id, with the requested length) give one [`Decoded::Feedback`] sample holding every
//!   servo that answered, stamped with the capture time of the chunk that completed the last
//!   answer (the server's read time). A request that is not fully answered when the next
//!   instruction goes out gives a sample of the servos that did answer.
//! - **Goals** (`Goal_Position`, address 42, 2 bytes): a WRITE, REG_WRITE or SYNC_WRITE whose
//!   range covers address 42 gives one [`Decoded::Command`] sample (every servo of a
//!   SYNC_WRITE), stamped with the capture time of the chunk that completed the packet (when
//!   it was handed to the device). A REG_WRITE's goal counts when it is written, not at
//!   ACTION.
//!   Writes to the broadcast id name no servo and are not decoded.
//!
//! Positions: the raw value is sign-magnitude with bit 15 as the sign (plain 0..4095 on a
//! servo in position mode); radians = `(raw − 2048) · 2π / 4096`, so the servo's centre is 0
//! and one turn is 2π. Joints are named `motor<id>` unless named with
//! [`FeetechDecoder::with_names`].
//!
//! Framing is resynchronising and total: each direction keeps at most one partial packet
//! (≤ 259 bytes) between chunks; bytes before a header are skipped and counted; a bad length
//! or checksum drops one byte and the search starts again, so a packet after garbage is still
//! found. A host packet echoed back on the device side (adapters that hear their own
//! transmission on a half-duplex line) is recognised and ignored. After bytes were lost
//! ([`FeetechDecoder::gap`]), partial packets and the open request are forgotten.

use std::collections::BTreeMap;

use xoq_wire::feetech::{
    BROADCAST, GOAL_POSITION, PRESENT_POSITION, READ, REG_WRITE, SYNC_READ, SYNC_WRITE, WRITE,
    checksum,
};
use xoq_wire::observe::Direction;

use crate::damiao::Decoded;
use crate::ros2::JointState;

/// Encoder steps per turn.
pub const STEPS_PER_TURN: f64 = 4096.0;
/// The raw position that is 0 rad (the servo's centre).
pub const CENTER: f64 = 2048.0;
/// Header, id and length bytes before the `length` bytes of a packet.
const HEAD: usize = 4;
/// Longest packet: the length byte holds at most 255.
const MAX_PACKET: usize = HEAD + 255;
/// Bytes appended to a direction's buffer per parse pass, so the buffer stays bounded
/// whatever the size of the chunks fed.
const FEED_STEP: usize = 4096;

/// Radians of a raw position register value (sign-magnitude, bit 15 the sign).
pub fn raw_to_rad(raw: u16) -> f64 {
    let magnitude = f64::from(raw & 0x7FFF);
    let steps = if raw & 0x8000 != 0 {
        -magnitude
    } else {
        magnitude
    };
    (steps - CENTER) * std::f64::consts::TAU / STEPS_PER_TURN
}

/// Counters of a decoder.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FeetechStats {
    /// Well-formed packets from the host (instructions).
    pub instructions: u64,
    /// Well-formed packets from the servos (status).
    pub statuses: u64,
    /// Bytes skipped while looking for a packet header.
    pub skipped: u64,
    /// Candidate packets with a bad length or checksum (each costs a one-byte resync).
    pub bad_packets: u64,
    /// Host packets heard back on the device side, ignored.
    pub echoes: u64,
    /// Read requests closed before every servo answered.
    pub unanswered: u64,
    /// Times bytes were lost ([`FeetechDecoder::gap`]).
    pub gaps: u64,
}

/// One packet: an instruction (`code` = instruction) or a status (`code` = error bits).
#[derive(Debug, Clone, PartialEq, Eq)]
struct Packet {
    id: u8,
    code: u8,
    params: Vec<u8>,
}

/// One direction's bytes waiting to be framed.
#[derive(Debug, Default)]
struct Framer {
    buf: Vec<u8>,
}

impl Framer {
    /// The next whole packet in the buffer, skipping what cannot start one. `None`: more
    /// bytes are needed (at most one partial packet is left).
    fn next(&mut self, stats: &mut FeetechStats) -> Option<(Packet, Vec<u8>)> {
        loop {
            let Some(start) = self.buf.windows(2).position(|w| w == [0xFF, 0xFF]) else {
                // Keep a trailing 0xFF: it may be the first half of a header.
                let keep = usize::from(self.buf.last() == Some(&0xFF));
                let drop = self.buf.len() - keep;
                stats.skipped += drop as u64;
                self.buf.drain(..drop);
                return None;
            };
            if start > 0 {
                stats.skipped += start as u64;
                self.buf.drain(..start);
            }
            if self.buf.len() < HEAD {
                return None;
            }
            let (id, len) = (self.buf[2], usize::from(self.buf[3]));
            if id == 0xFF {
                // Three 0xFF in a row: the header starts one byte later.
                stats.skipped += 1;
                self.buf.drain(..1);
                continue;
            }
            if len < 2 {
                stats.bad_packets += 1;
                self.buf.drain(..1);
                continue;
            }
            let total = HEAD + len;
            if self.buf.len() < total {
                return None;
            }
            if checksum(&self.buf[2..total - 1]) != self.buf[total - 1] {
                stats.bad_packets += 1;
                self.buf.drain(..1);
                continue;
            }
            let raw: Vec<u8> = self.buf.drain(..total).collect();
            let packet = Packet {
                id,
                code: raw[4],
                params: raw[5..total - 1].to_vec(),
            };
            return Some((packet, raw));
        }
    }
}

/// A read request waiting for its answers.
#[derive(Debug)]
struct PendingRead {
    addr: u8,
    len: u8,
    /// Servo ids asked, in order, with the position each answered (if it did).
    answers: Vec<(u8, Option<f64>, bool)>,
}

impl PendingRead {
    fn complete(&self) -> bool {
        self.answers.iter().all(|(_, _, answered)| *answered)
    }
}

/// Decodes both directions of a Feetech bus into joint samples (see the module docs).
#[derive(Debug)]
pub struct FeetechDecoder {
    frame_id: String,
    names: BTreeMap<u8, String>,
    host: Framer,
    device: Framer,
    /// The last host packet, to recognise its echo.
    last_host: Vec<u8>,
    pending: Option<PendingRead>,
    /// Stamp of the last answer to the pending read.
    last_answer_ns: u64,
    stats: FeetechStats,
}

/// The byte range `[addr, addr + len)` of a register access covers the 2-byte register at
/// `reg`: the register's offset in the data.
fn covers(addr: u8, len: usize, reg: u8) -> Option<usize> {
    let (addr, reg) = (usize::from(addr), usize::from(reg));
    (addr <= reg && reg + 2 <= addr + len).then(|| reg - addr)
}

fn raw_at(data: &[u8], offset: usize) -> Option<u16> {
    Some(u16::from_le_bytes([
        *data.get(offset)?,
        *data.get(offset + 1)?,
    ]))
}

impl FeetechDecoder {
    /// A decoder whose samples carry `frame_id` (the arm's name in the recording).
    pub fn new(frame_id: &str) -> Self {
        Self {
            frame_id: frame_id.to_string(),
            names: BTreeMap::new(),
            host: Framer::default(),
            device: Framer::default(),
            last_host: Vec::new(),
            pending: None,
            last_answer_ns: 0,
            stats: FeetechStats::default(),
        }
    }

    /// Name the joints of these servo ids (others stay `motor<id>`).
    pub fn with_names(mut self, names: impl IntoIterator<Item = (u8, String)>) -> Self {
        self.names.extend(names);
        self
    }

    /// Counters so far.
    pub fn stats(&self) -> FeetechStats {
        self.stats
    }

    fn joint_name(&self, id: u8) -> String {
        self.names
            .get(&id)
            .cloned()
            .unwrap_or_else(|| format!("motor{id}"))
    }

    fn sample(&self, stamp_ns: u64, joints: &[(u8, f64)]) -> JointState {
        JointState {
            stamp_ns,
            frame_id: self.frame_id.clone(),
            name: joints.iter().map(|(id, _)| self.joint_name(*id)).collect(),
            position: joints.iter().map(|(_, p)| *p).collect(),
            velocity: Vec::new(),
            effort: Vec::new(),
        }
    }

    /// Bytes were lost (the observer's queue overflowed, the link dropped): forget partial
    /// packets and the open request, whose answers can no longer be matched.
    pub fn gap(&mut self) {
        self.host.buf.clear();
        self.device.buf.clear();
        self.last_host.clear();
        self.pending = None;
        self.stats.gaps += 1;
    }

    /// Feed one chunk that went `direction` at `stamp_ns` (capture time, ns since the Unix
    /// epoch); samples it completes are appended to `out`.
    pub fn feed(
        &mut self,
        direction: Direction,
        stamp_ns: u64,
        bytes: &[u8],
        out: &mut Vec<Decoded>,
    ) {
        for step in bytes.chunks(FEED_STEP) {
            match direction {
                Direction::ToDevice => self.host.buf.extend_from_slice(step),
                Direction::FromDevice => self.device.buf.extend_from_slice(step),
            }
            loop {
                let framer = match direction {
                    Direction::ToDevice => &mut self.host,
                    Direction::FromDevice => &mut self.device,
                };
                let Some((packet, raw)) = framer.next(&mut self.stats) else {
                    break;
                };
                match direction {
                    Direction::ToDevice => {
                        self.stats.instructions += 1;
                        self.instruction(stamp_ns, &packet, out);
                        self.last_host = raw;
                    }
                    Direction::FromDevice if raw == self.last_host => self.stats.echoes += 1,
                    Direction::FromDevice => {
                        self.stats.statuses += 1;
                        self.status(stamp_ns, &packet, out);
                    }
                }
            }
            debug_assert!(self.host.buf.len() < MAX_PACKET + FEED_STEP);
            debug_assert!(self.device.buf.len() < MAX_PACKET + FEED_STEP);
        }
    }

    /// Close the pending read: a sample of whoever answered.
    fn flush_pending(&mut self, out: &mut Vec<Decoded>) {
        let Some(p) = self.pending.take() else {
            return;
        };
        if !p.complete() {
            self.stats.unanswered += 1;
        }
        let joints: Vec<(u8, f64)> = p
            .answers
            .iter()
            .filter_map(|(id, pos, _)| pos.map(|v| (*id, v)))
            .collect();
        if !joints.is_empty() {
            out.push(Decoded::Feedback(self.sample(self.last_answer_ns, &joints)));
        }
    }

    fn instruction(&mut self, stamp_ns: u64, p: &Packet, out: &mut Vec<Decoded>) {
        // A new instruction ends the previous transaction.
        self.flush_pending(out);
        let params = &p.params[..];
        match p.code {
            READ if p.id != BROADCAST && params.len() == 2 => {
                self.pending = Some(PendingRead {
                    addr: params[0],
                    len: params[1],
                    answers: vec![(p.id, None, false)],
                });
            }
            SYNC_READ if params.len() >= 2 => {
                let mut answers: Vec<(u8, Option<f64>, bool)> = Vec::new();
                for &id in &params[2..] {
                    if !answers.iter().any(|(i, _, _)| *i == id) {
                        answers.push((id, None, false));
                    }
                }
                if !answers.is_empty() {
                    self.pending = Some(PendingRead {
                        addr: params[0],
                        len: params[1],
                        answers,
                    });
                }
            }
            WRITE | REG_WRITE if p.id != BROADCAST && !params.is_empty() => {
                let (addr, data) = (params[0], &params[1..]);
                if let Some(raw) =
                    covers(addr, data.len(), GOAL_POSITION).and_then(|o| raw_at(data, o))
                {
                    let s = self.sample(stamp_ns, &[(p.id, raw_to_rad(raw))]);
                    out.push(Decoded::Command(s));
                }
            }
            SYNC_WRITE if params.len() >= 2 => {
                let (addr, len) = (params[0], usize::from(params[1]));
                let entries = &params[2..];
                let Some(offset) = covers(addr, len, GOAL_POSITION) else {
                    return;
                };
                // A malformed packet (entries that do not divide evenly) is what the servos
                // ignore too.
                if len == 0 || entries.is_empty() || !entries.len().is_multiple_of(len + 1) {
                    return;
                }
                let joints: Vec<(u8, f64)> = entries
                    .chunks(len + 1)
                    .filter(|e| e[0] != BROADCAST)
                    .filter_map(|e| raw_at(&e[1..], offset).map(|raw| (e[0], raw_to_rad(raw))))
                    .collect();
                if !joints.is_empty() {
                    out.push(Decoded::Command(self.sample(stamp_ns, &joints)));
                }
            }
            _ => {}
        }
    }

    fn status(&mut self, stamp_ns: u64, p: &Packet, out: &mut Vec<Decoded>) {
        let Some(pending) = self.pending.as_mut() else {
            return;
        };
        let Some(entry) = pending
            .answers
            .iter_mut()
            .find(|(id, _, answered)| *id == p.id && !*answered)
        else {
            return;
        };
        if p.params.len() != usize::from(pending.len) {
            return;
        }
        entry.2 = true;
        entry.1 = covers(pending.addr, p.params.len(), PRESENT_POSITION)
            .and_then(|o| raw_at(&p.params, o))
            .map(raw_to_rad);
        self.last_answer_ns = stamp_ns;
        if pending.complete() {
            self.flush_pending(out);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::time::Duration;
    use xoq_device::sim::feetech::FeetechBus;
    use xoq_wire::feetech::{TORQUE_ENABLE, instruction};

    fn rad(raw: u16) -> f64 {
        raw_to_rad(raw)
    }

    fn states(out: &[Decoded]) -> Vec<&JointState> {
        out.iter()
            .filter_map(|d| match d {
                Decoded::Feedback(s) => Some(s),
                Decoded::Command(_) => None,
            })
            .collect()
    }

    fn commands(out: &[Decoded]) -> Vec<&JointState> {
        out.iter()
            .filter_map(|d| match d {
                Decoded::Command(s) => Some(s),
                Decoded::Feedback(_) => None,
            })
            .collect()
    }

    #[test]
    fn raw_positions_map_to_radians_around_the_centre() {
        assert_eq!(raw_to_rad(2048), 0.0);
        assert!((raw_to_rad(3072) - std::f64::consts::FRAC_PI_2).abs() < 1e-12);
        assert!((raw_to_rad(0) + std::f64::consts::PI).abs() < 1e-12);
        // Sign-magnitude: -10 steps.
        assert!(
            (raw_to_rad(0x8000 | 10) - (-2058.0 * std::f64::consts::TAU / 4096.0)).abs() < 1e-12
        );
    }

    /// What LeRobot's so101 loop does, against the simulated arm: torque on, goals by
    /// SYNC_WRITE, positions by SYNC_READ, plus single reads and writes. Every byte goes
    /// through the decoder as an observer would see it.
    #[test]
    fn the_simulated_arm_decodes_to_the_goals_written_and_the_positions_read() {
        let mut bus = FeetechBus::so101();
        let mut dec = FeetechDecoder::new("arm").with_names([(6, "gripper".to_string())]);
        let mut out = Vec::new();
        let mut t = Duration::ZERO;
        fn send(
            bus: &mut FeetechBus,
            dec: &mut FeetechDecoder,
            out: &mut Vec<Decoded>,
            t: Duration,
            pkt: Vec<u8>,
        ) -> Vec<u8> {
            let mut reply = Vec::new();
            bus.write(t, &pkt, &mut reply);
            let ns = t.as_nanos() as u64 + 1_000_000_000;
            dec.feed(Direction::ToDevice, ns, &pkt, out);
            // The replies arrive in two pieces, as a USB adapter may deliver them.
            let half = reply.len() / 2;
            dec.feed(Direction::FromDevice, ns + 500, &reply[..half], out);
            dec.feed(Direction::FromDevice, ns + 900, &reply[half..], out);
            reply
        }
        for id in 1..=6u8 {
            send(
                &mut bus,
                &mut dec,
                &mut out,
                t,
                instruction(id, WRITE, &[TORQUE_ENABLE, 1]),
            );
        }
        assert!(out.is_empty(), "torque writes are not goals");
        let goals: [u16; 6] = [1000, 1500, 2048, 2500, 3000, 3500];
        let mut params = vec![GOAL_POSITION, 2];
        for (i, g) in goals.iter().enumerate() {
            params.push(i as u8 + 1);
            params.extend_from_slice(&g.to_le_bytes());
        }
        send(
            &mut bus,
            &mut dec,
            &mut out,
            t,
            instruction(BROADCAST, SYNC_WRITE, &params),
        );
        let c = commands(&out);
        assert_eq!(c.len(), 1);
        assert_eq!(
            c[0].name,
            ["motor1", "motor2", "motor3", "motor4", "motor5", "gripper"]
        );
        let want: Vec<f64> = goals.iter().map(|g| rad(*g)).collect();
        assert_eq!(c[0].position, want);
        assert_eq!(c[0].stamp_ns, 1_000_000_000);
        out.clear();

        for step in 1..=20u64 {
            t = Duration::from_millis(50 * step);
            send(
                &mut bus,
                &mut dec,
                &mut out,
                t,
                instruction(
                    BROADCAST,
                    SYNC_READ,
                    &[PRESENT_POSITION, 2, 1, 2, 3, 4, 5, 6],
                ),
            );
            let s = states(&out);
            assert_eq!(s.len(), 1, "one sample per answered sync read");
            let want: Vec<f64> = (1..=6u8)
                .map(|id| rad(bus.read_u16(id, PRESENT_POSITION).expect("servo")))
                .collect();
            assert_eq!(s[0].position, want, "positions as the servos report them");
            assert_eq!(
                s[0].stamp_ns,
                t.as_nanos() as u64 + 1_000_000_900,
                "the last answer's chunk"
            );
            assert!(s[0].velocity.is_empty() && s[0].effort.is_empty());
            out.clear();
        }
        // After a second of motion the arm reached its goals.
        for (id, g) in (1..=6u8).zip(goals) {
            assert!(
                bus.read_u16(id, PRESENT_POSITION)
                    .expect("servo")
                    .abs_diff(g)
                    <= 1
            );
        }

        // Single write and single read (scservo_sdk's write2ByteTxRx / read2ByteTxRx), and a
        // read of four bytes from address 56 (position and speed).
        send(
            &mut bus,
            &mut dec,
            &mut out,
            t,
            instruction(2, WRITE, &[GOAL_POSITION, 0x00, 0x08]),
        );
        assert_eq!(commands(&out)[0].name, ["motor2"]);
        assert_eq!(commands(&out)[0].position, [0.0]);
        out.clear();
        send(
            &mut bus,
            &mut dec,
            &mut out,
            t,
            instruction(3, READ, &[PRESENT_POSITION, 4]),
        );
        let s = states(&out);
        assert_eq!(s[0].name, ["motor3"]);
        assert_eq!(
            s[0].position,
            [rad(bus.read_u16(3, PRESENT_POSITION).expect("servo"))]
        );
        out.clear();
        // A read of other registers, and a read nobody answers: no samples.
        send(
            &mut bus,
            &mut dec,
            &mut out,
            t,
            instruction(3, READ, &[3, 2]),
        );
        send(
            &mut bus,
            &mut dec,
            &mut out,
            t,
            instruction(9, READ, &[PRESENT_POSITION, 2]),
        );
        send(&mut bus, &mut dec, &mut out, t, instruction(1, 0x01, &[]));
        assert!(out.is_empty(), "{out:?}");
        let st = dec.stats();
        assert_eq!((st.skipped, st.bad_packets, st.echoes), (0, 0, 0));
        assert_eq!(st.unanswered, 1, "servo 9");
    }

    #[test]
    fn a_partial_answer_gives_the_servos_that_answered() {
        let mut dec = FeetechDecoder::new("arm");
        let mut out = Vec::new();
        let req = instruction(BROADCAST, SYNC_READ, &[PRESENT_POSITION, 2, 1, 2]);
        dec.feed(Direction::ToDevice, 1, &req, &mut out);
        dec.feed(
            Direction::FromDevice,
            2,
            &instruction(1, 0, &[0x00, 0x0C]),
            &mut out,
        );
        assert!(out.is_empty(), "waiting for servo 2");
        // The next request closes the transaction.
        dec.feed(Direction::ToDevice, 3, &req, &mut out);
        let s = states(&out);
        assert_eq!(
            (s[0].name.clone(), s[0].position.clone(), s[0].stamp_ns),
            (vec!["motor1".to_string()], vec![rad(0x0C00)], 2)
        );
        assert_eq!(dec.stats().unanswered, 1);
    }

    #[test]
    fn echoes_garbage_and_gaps_are_survived() {
        let mut dec = FeetechDecoder::new("arm");
        let mut out = Vec::new();
        let req = instruction(1, READ, &[PRESENT_POSITION, 2]);
        dec.feed(Direction::ToDevice, 1, &req, &mut out);
        // The adapter hears its own request first (an echo whose params look like an answer).
        let mut rx = req.clone();
        rx.extend([0x13, 0x00, 0xFF]);
        rx.extend(instruction(1, 0, &[0x10, 0x08]));
        dec.feed(Direction::FromDevice, 2, &rx, &mut out);
        assert_eq!(states(&out)[0].position, [rad(0x0810)]);
        assert_eq!(dec.stats().echoes, 1);
        assert_eq!(dec.stats().skipped, 3);
        // A corrupted answer is skipped; a gap forgets the open request.
        out.clear();
        dec.feed(Direction::ToDevice, 3, &req, &mut out);
        let mut bad = instruction(1, 0, &[0x10, 0x08]);
        bad[6] ^= 0x40;
        dec.feed(Direction::FromDevice, 4, &bad, &mut out);
        assert!(out.is_empty());
        assert!(dec.stats().bad_packets >= 1);
        dec.gap();
        dec.feed(
            Direction::FromDevice,
            5,
            &instruction(1, 0, &[0x10, 0x08]),
            &mut out,
        );
        assert!(out.is_empty(), "no request open after the gap");
    }

    fn header_heavy() -> impl Strategy<Value = u8> {
        prop_oneof![
            any::<u8>(),
            Just(0xFF),
            Just(0x02),
            Just(0x82),
            Just(0x83),
            Just(0x38)
        ]
    }

    proptest! {
        /// Any bytes in any chunking on both sides: no panic, buffers bounded, every sample
        /// well formed.
        #[test]
        fn arbitrary_bytes_never_panic(
            chunks in proptest::collection::vec(
                (any::<bool>(), any::<u64>(), proptest::collection::vec(header_heavy(), 0..600)),
                0..24,
            ),
        ) {
            let mut dec = FeetechDecoder::new("x");
            let mut out = Vec::new();
            for (to_device, stamp, bytes) in chunks {
                let dir = if to_device { Direction::ToDevice } else { Direction::FromDevice };
                dec.feed(dir, stamp, &bytes, &mut out);
                prop_assert!(dec.host.buf.len() < MAX_PACKET);
                prop_assert!(dec.device.buf.len() < MAX_PACKET);
            }
            for d in &out {
                let (Decoded::Feedback(s) | Decoded::Command(s)) = d;
                prop_assert_eq!(s.name.len(), s.position.len());
                prop_assert!(!s.name.is_empty());
                // At most 0x7FFF + 2048 steps from the centre: 17π.
                prop_assert!(s.position.iter().all(|p| p.is_finite() && p.abs() <= 17.0 * std::f64::consts::PI + 1e-9));
            }
        }

        /// Garbage (without a header byte) before a transaction does not hide it, in any
        /// chunking.
        #[test]
        fn resyncs_after_garbage(
            garbage in proptest::collection::vec(0u8..0xFF, 0..300),
            split in 1usize..40,
            raw in 0u16..4096,
        ) {
            let mut dec = FeetechDecoder::new("x");
            let mut out = Vec::new();
            let mut host = garbage.clone();
            host.extend(instruction(4, READ, &[PRESENT_POSITION, 2]));
            let mut dev = garbage;
            dev.extend(instruction(4, 0, &raw.to_le_bytes()));
            for c in host.chunks(split) {
                dec.feed(Direction::ToDevice, 1, c, &mut out);
            }
            for c in dev.chunks(split) {
                dec.feed(Direction::FromDevice, 2, c, &mut out);
            }
            let s = states(&out);
            prop_assert_eq!(s.len(), 1);
            prop_assert_eq!(&s[0].position, &vec![rad(raw)]);
        }
    }
}
