//! ROS 2 messages in CDR (little-endian XCDR1), with the `ros2msg` schema texts MCAP readers
//! (Foxglove, Lichtblick, Rerun, `mcap-ros2-support`) parse: `sensor_msgs/msg/JointState` for
//! motors and `xoq_msgs/msg/CanFrame` for raw CAN frames. Sans-IO: bytes in, bytes out.

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

#[cfg(test)]
mod tests {
    use super::*;

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
