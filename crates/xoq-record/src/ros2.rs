//! ROS 2 messages in CDR (little-endian XCDR1), with the `ros2msg` schema texts MCAP readers
//! (Foxglove, Lichtblick, Rerun, `mcap-ros2-support`) parse: `sensor_msgs/msg/JointState` for
//! motors, `xoq_msgs/msg/CanFrame` for raw CAN frames and `xoq_msgs/msg/SerialChunk` for raw
//! serial bytes. Sans-IO: bytes in, bytes out.

/// Schema name of joint states.
pub const JOINT_STATE: &str = "sensor_msgs/msg/JointState";
/// Its `ros2msg` text, with the definitions it uses.
pub const JOINT_STATE_SCHEMA: &str = "\
std_msgs/Header header
string[] name
float64[] position
float64[] velocity
float64[] effort
================================================================================
MSG: std_msgs/Header
builtin_interfaces/Time stamp
string frame_id
================================================================================
MSG: builtin_interfaces/Time
int32 sec
uint32 nanosec
";

/// Schema name of raw CAN frames.
pub const CAN_FRAME: &str = "xoq_msgs/msg/CanFrame";
/// Its `ros2msg` text. `stamp` is the capture time on the robot; `data` holds 0–64 bytes
/// (`len` is the DLC in bytes, which can exceed `data` for a remote frame).
pub const CAN_FRAME_SCHEMA: &str = "\
builtin_interfaces/Time stamp
uint32 id
bool extended
bool fd
bool brs
bool esi
bool rtr
bool error
uint8 len
uint8[] data
================================================================================
MSG: builtin_interfaces/Time
int32 sec
uint32 nanosec
";

/// Schema name of raw serial chunks.
pub const SERIAL_CHUNK: &str = "xoq_msgs/msg/SerialChunk";
/// Its `ros2msg` text. `stamp` is the capture time on the robot: the server's read time for
/// bytes from the device, the time the device took them for bytes to it. `direction` is one
/// of the constants.
pub const SERIAL_CHUNK_SCHEMA: &str = "\
uint8 FROM_DEVICE=0
uint8 TO_DEVICE=1
builtin_interfaces/Time stamp
uint8 direction
uint8[] data
================================================================================
MSG: builtin_interfaces/Time
int32 sec
uint32 nanosec
";
/// `direction` of bytes read from the device.
pub const FROM_DEVICE: u8 = 0;
/// `direction` of bytes written to the device.
pub const TO_DEVICE: u8 = 1;

/// A CDR buffer: alignment is relative to the start of the payload, after the 4-byte
/// encapsulation header (as ROS 2 middlewares write it).
struct Cdr {
    buf: Vec<u8>,
}

impl Cdr {
    fn new() -> Self {
        // CDR_LE encapsulation, options 0.
        Self {
            buf: vec![0x00, 0x01, 0x00, 0x00],
        }
    }

    fn align(&mut self, n: usize) {
        let pos = self.buf.len() - 4;
        let pad = (n - pos % n) % n;
        self.buf.resize(self.buf.len() + pad, 0);
    }

    fn u8(&mut self, v: u8) {
        self.buf.push(v);
    }

    fn u32(&mut self, v: u32) {
        self.align(4);
        self.buf.extend_from_slice(&v.to_le_bytes());
    }

    fn i32(&mut self, v: i32) {
        self.align(4);
        self.buf.extend_from_slice(&v.to_le_bytes());
    }

    fn string(&mut self, s: &str) {
        self.u32(s.len() as u32 + 1);
        self.buf.extend_from_slice(s.as_bytes());
        self.buf.push(0);
    }

    fn time(&mut self, ns: u64) {
        self.i32((ns / 1_000_000_000).min(i32::MAX as u64) as i32);
        self.u32((ns % 1_000_000_000) as u32);
    }

    fn f64s(&mut self, v: &[f64]) {
        self.u32(v.len() as u32);
        if !v.is_empty() {
            self.align(8);
        }
        for x in v {
            self.buf.extend_from_slice(&x.to_le_bytes());
        }
    }
}

/// Why CDR bytes are not a message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CdrError {
    /// The encapsulation header is not little-endian plain CDR.
    #[error("not little-endian CDR (encapsulation {0:02x?})")]
    Encapsulation([u8; 2]),
    /// The bytes end inside a field.
    #[error("truncated at byte {0}")]
    Truncated(usize),
    /// A string is not UTF-8 or lacks its terminating NUL.
    #[error("bad string at byte {0}")]
    BadString(usize),
}

/// Reads CDR written by [`Cdr`] (or a ROS 2 middleware). Every count is checked against the
/// bytes left before anything is allocated, so no input can make it allocate more than the
/// input's own size.
struct CdrReader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> CdrReader<'a> {
    fn new(buf: &'a [u8]) -> Result<Self, CdrError> {
        match buf {
            [0x00, 0x01, _, _, ..] => Ok(Self { buf, pos: 4 }),
            [a, b, ..] => Err(CdrError::Encapsulation([*a, *b])),
            _ => Err(CdrError::Truncated(buf.len())),
        }
    }

    fn align(&mut self, n: usize) {
        let off = self.pos - 4;
        self.pos += (n - off % n) % n;
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], CdrError> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|&e| e <= self.buf.len())
            .ok_or(CdrError::Truncated(self.pos))?;
        let b = &self.buf[self.pos..end];
        self.pos = end;
        Ok(b)
    }

    fn u32(&mut self) -> Result<u32, CdrError> {
        self.align(4);
        let b = self.take(4)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }

    /// A sequence length whose elements of `size` bytes fit in what is left.
    fn count(&mut self, size: usize) -> Result<usize, CdrError> {
        let n = self.u32()? as usize;
        let left = self.buf.len().saturating_sub(self.pos);
        if n.saturating_mul(size) > left {
            return Err(CdrError::Truncated(self.pos));
        }
        Ok(n)
    }

    fn string(&mut self) -> Result<String, CdrError> {
        let at = self.pos;
        let n = self.count(1)?;
        let b = self.take(n)?;
        match b.split_last() {
            Some((0, s)) => std::str::from_utf8(s)
                .map(str::to_string)
                .map_err(|_| CdrError::BadString(at)),
            _ => Err(CdrError::BadString(at)),
        }
    }

    fn time(&mut self) -> Result<u64, CdrError> {
        let sec = self.u32()? as i32;
        let nsec = self.u32()?;
        Ok((sec.max(0) as u64) * 1_000_000_000 + u64::from(nsec))
    }

    fn f64s(&mut self) -> Result<Vec<f64>, CdrError> {
        let n = self.u32()? as usize;
        if n > 0 {
            self.align(8);
        }
        let left = self.buf.len().saturating_sub(self.pos);
        if n.saturating_mul(8) > left {
            return Err(CdrError::Truncated(self.pos));
        }
        let b = self.take(n * 8)?;
        Ok(b.chunks_exact(8)
            .map(|c| f64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]))
            .collect())
    }
}

/// A joint state sample.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct JointState {
    /// Sample time, ns since the Unix epoch (the capture time on the robot).
    pub stamp_ns: u64,
    /// Frame id (the bus or arm name).
    pub frame_id: String,
    /// Joint names.
    pub name: Vec<String>,
    /// Positions (rad).
    pub position: Vec<f64>,
    /// Velocities (rad/s).
    pub velocity: Vec<f64>,
    /// Efforts (N·m).
    pub effort: Vec<f64>,
}

impl JointState {
    /// CDR bytes of the message.
    pub fn encode(&self) -> Vec<u8> {
        let mut c = Cdr::new();
        c.time(self.stamp_ns);
        c.string(&self.frame_id);
        c.u32(self.name.len() as u32);
        for n in &self.name {
            c.string(n);
        }
        c.f64s(&self.position);
        c.f64s(&self.velocity);
        c.f64s(&self.effort);
        c.buf
    }

    /// The message in CDR `bytes` (total: any bytes give a message or an error).
    pub fn decode(bytes: &[u8]) -> Result<Self, CdrError> {
        let mut r = CdrReader::new(bytes)?;
        let stamp_ns = r.time()?;
        let frame_id = r.string()?;
        // Each name takes at least its 4-byte length and a NUL.
        let n = r.count(5)?;
        let mut name = Vec::with_capacity(n);
        for _ in 0..n {
            name.push(r.string()?);
        }
        Ok(Self {
            stamp_ns,
            frame_id,
            name,
            position: r.f64s()?,
            velocity: r.f64s()?,
            effort: r.f64s()?,
        })
    }
}

/// CDR bytes of one CAN frame captured at `stamp_ns`.
pub fn encode_can_frame(stamp_ns: u64, f: &xoq_wire::can::CanFrame) -> Vec<u8> {
    let mut c = Cdr::new();
    c.time(stamp_ns);
    c.u32(f.id);
    for b in [f.extended, f.fd, f.brs, f.esi, f.rtr, f.error] {
        c.u8(u8::from(b));
    }
    let len = if f.rtr { f.rtr_len } else { f.data.len() as u8 };
    c.u8(len);
    c.u32(f.data.len() as u32);
    c.buf.extend_from_slice(&f.data);
    c.buf
}

/// CDR bytes of one serial chunk captured at `stamp_ns` ([`FROM_DEVICE`] or [`TO_DEVICE`]).
pub fn encode_serial_chunk(stamp_ns: u64, direction: u8, data: &[u8]) -> Vec<u8> {
    let mut c = Cdr::new();
    c.buf.reserve(16 + data.len());
    c.time(stamp_ns);
    c.u8(direction);
    c.u32(data.len() as u32);
    c.buf.extend_from_slice(data);
    c.buf
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serial_chunk_byte_snapshot() {
        let b = encode_serial_chunk(3_000_000_005, TO_DEVICE, &[0xFF, 0xFF, 0x01]);
        let mut want = vec![0, 1, 0, 0];
        want.extend_from_slice(&3i32.to_le_bytes()); // sec
        want.extend_from_slice(&5u32.to_le_bytes()); // nanosec
        want.push(1); // direction
        want.extend_from_slice(&[0, 0, 0]); // align 4
        want.extend_from_slice(&3u32.to_le_bytes());
        want.extend_from_slice(&[0xFF, 0xFF, 0x01]);
        assert_eq!(b, want);
    }

    #[test]
    fn joint_state_byte_snapshot() {
        let js = JointState {
            stamp_ns: 1_500_000_001,
            frame_id: "a".into(),
            name: vec!["j".into()],
            position: vec![1.0],
            velocity: vec![],
            effort: vec![],
        };
        let b = js.encode();
        let mut want = vec![0, 1, 0, 0];
        want.extend_from_slice(&1i32.to_le_bytes()); // sec
        want.extend_from_slice(&500_000_001u32.to_le_bytes()); // nanosec
        want.extend_from_slice(&[2, 0, 0, 0, b'a', 0]); // frame_id
        want.extend_from_slice(&[0, 0]); // align 4
        want.extend_from_slice(&[1, 0, 0, 0, 2, 0, 0, 0, b'j', 0]); // name
        want.extend_from_slice(&[0, 0]); // align 4
        want.extend_from_slice(&[1, 0, 0, 0]); // position count (payload offset 32: aligned)
        want.extend_from_slice(&1.0f64.to_le_bytes());
        want.extend_from_slice(&[0, 0, 0, 0, 0, 0, 0, 0]); // empty velocity, effort
        assert_eq!(b, want);
    }

    #[test]
    fn joint_states_round_trip() {
        let js = JointState {
            stamp_ns: 1_700_000_000_123_456_789,
            frame_id: "left".into(),
            name: vec!["joint1".into(), "gripper".into()],
            position: vec![0.5, -1.25],
            velocity: vec![1.0, 2.0],
            effort: vec![],
        };
        assert_eq!(JointState::decode(&js.encode()), Ok(js));
    }

    proptest::proptest! {
        #[test]
        fn joint_state_decoding_is_total(bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..256)) {
            let _ = JointState::decode(&bytes);
            let mut with_header = vec![0, 1, 0, 0];
            with_header.extend_from_slice(&bytes);
            let _ = JointState::decode(&with_header);
        }

        #[test]
        fn any_joint_state_round_trips(
            stamp in 0u64..(i32::MAX as u64 * 1_000_000_000),
            names in proptest::collection::vec("[a-z0-9_]{0,12}", 0..8),
            pos in proptest::collection::vec(-10.0f64..10.0, 0..8),
        ) {
            let js = JointState { stamp_ns: stamp, frame_id: "f".into(), name: names, position: pos.clone(), velocity: pos, effort: vec![] };
            proptest::prop_assert_eq!(JointState::decode(&js.encode()), Ok(js));
        }
    }

    #[test]
    fn can_frames_carry_their_flags_and_bytes() {
        let f = xoq_wire::can::CanFrame::new(0x11, vec![1, 2, 3]).expect("frame");
        let b = encode_can_frame(2_000_000_000, &f);
        assert_eq!(&b[..4], &[0, 1, 0, 0]);
        assert_eq!(&b[4..8], &2i32.to_le_bytes());
        assert_eq!(&b[12..16], &0x11u32.to_le_bytes());
        assert_eq!(&b[16..23], &[0, 0, 0, 0, 0, 0, 3]);
        assert_eq!(&b[24..28], &3u32.to_le_bytes());
        assert_eq!(&b[28..], &[1, 2, 3]);
    }
}
