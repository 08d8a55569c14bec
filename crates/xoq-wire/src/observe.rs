//! The read-only observer protocol shared by the serial and CAN servers (ALPNs
//! [`SERIAL_ALPN`] and [`CAN_ALPN`]): a recorder or a monitor sees both directions of a
//! device's traffic, each chunk or frame stamped on the robot's clock, and can never write.
//!
//! An observer is a session of its own ALPN, not a flag in the controller's hello, so the
//! server knows what a connection is before it reads a byte of it, and the controller
//! protocols (`xoq/serial/1`, `xoq/can/1`) stay as they are. The client opens one
//! bidirectional stream and sends [`ClientMsg::Hello`]; the server answers
//! [`ServerMsg::Welcome`] or [`ServerMsg::Refused`], then streams what the device read and
//! what was written to it. An observer may only send [`ClientMsg::Ping`] afterwards:
//! [`ClientMsg::decode`] rejects every other kind from its kind byte alone, before the payload
//! is buffered, so data or commands from an observer are never even read.
//!
//! Messages use the envelope of [`crate::frame`]. Over a relay, the serial server publishes
//! the same [`ServerMsg`]s (one per MoQ frame) on `{path}/observe`, track `data`
//! ([`OBSERVE_BROADCAST`]).

use bytes::{Buf, BufMut, Bytes, BytesMut};

use crate::can::{TimedFrame, decode_track_frame, encode_track_frame, track_frame_len};
use crate::coding::{
    DecodeError, finish_exact, get_string, get_u8, get_u16, get_u32, get_u64, put_string,
    string_len,
};
use crate::frame::Frame;
use crate::refuse::RefuseCode;

/// ALPN of a serial port's observers.
pub const SERIAL_ALPN: &[u8] = b"xoq/serial-observe/1";
/// ALPN of a CAN bus's observers.
pub const CAN_ALPN: &[u8] = b"xoq/can-observe/1";
/// Protocol version carried in the handshake (minor revisions within the ALPNs).
pub const VERSION: u16 = 1;
/// Last segment of the relay broadcast carrying observations (`{path}/observe`).
pub const OBSERVE_BROADCAST: &str = "observe";
/// Largest chunk of bytes in one [`ServerMsg::Bytes`].
pub const MAX_CHUNK: usize = 64 * 1024;

/// Which way the observed bytes or frames went.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Direction {
    /// Device to host: bytes the server read from the port, frames it received from the bus
    /// (code 0). Stamped with the server's read time.
    FromDevice,
    /// Host to device: bytes written to the port, frames transmitted on the bus, from any
    /// writer (the P2P controller, relay writers, the server's own safety frames) (code 1).
    /// Serial bytes are stamped when the server hands them to the port's driver, and are
    /// sent to observers before anything the device answers to them; CAN frames are
    /// stamped when the controller accepted them for transmission.
    ToDevice,
}

impl Direction {
    /// Stable wire code.
    pub fn to_code(self) -> u8 {
        match self {
            Direction::FromDevice => 0,
            Direction::ToDevice => 1,
        }
    }

    /// Inverse of [`to_code`](Self::to_code).
    pub fn from_code(c: u8) -> Result<Self, DecodeError> {
        match c {
            0 => Ok(Direction::FromDevice),
            1 => Ok(Direction::ToDevice),
            _ => Err(DecodeError::Invalid {
                field: "direction",
                reason: "must be 0 (from device) or 1 (to device)",
            }),
        }
    }
}

/// Messages from an observer to the server: these two and nothing else.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientMsg {
    /// Handshake, the first message.
    Hello {
        /// Client protocol version ([`VERSION`]).
        version: u16,
        /// Free-form description for the server's logs ("xoq record").
        client: String,
    },
    /// Clock probe, answered by [`ServerMsg::Pong`].
    Ping {
        /// Echoed.
        id: u32,
        /// The client's clock when sent (µs since the Unix epoch).
        client_us: u64,
    },
}

/// Messages from the server to an observer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ServerMsg {
    /// Handshake accepted.
    Welcome {
        /// Server protocol version.
        version: u16,
        /// The served device (port path, interface name).
        device: String,
        /// Capacity of this observer's queue on the server (bytes for serial, frames for
        /// CAN): beyond it the oldest are dropped and counted ([`ServerMsg::Dropped`]).
        queue: u32,
        /// The server's clock (µs since the Unix epoch) when it sent the welcome.
        server_us: u64,
    },
    /// Refused, or ended by the server (an observer that sent something it may not): the
    /// last message; the server finishes the stream after it.
    Refused {
        /// Stable reason code.
        code: RefuseCode,
        /// What happened and what to do.
        message: String,
    },
    /// Serial bytes (at most [`MAX_CHUNK`]).
    Bytes {
        /// Which way they went.
        direction: Direction,
        /// Capture time on the robot (µs since the Unix epoch): the read time for bytes from
        /// the device; for bytes to it, when the server handed them to the driver.
        stamp_us: u64,
        /// The bytes.
        data: Bytes,
    },
    /// CAN frames, all of one direction (at most [`MAX_BATCH`](crate::can::MAX_BATCH)); each
    /// frame's `timestamp_us` is its capture time on the robot (receive time from the bus,
    /// transmit time to it).
    Frames {
        /// Which way they went.
        direction: Direction,
        /// The frames.
        frames: Vec<TimedFrame>,
    },
    /// This many units (bytes for serial, frames for CAN) were dropped from this observer's
    /// queue since the previous notice, because it read too slowly. They were lost just
    /// before the next observation.
    Dropped(u64),
    /// The device disappeared; the server keeps trying to reopen it.
    DeviceLost(String),
    /// The device is back.
    DeviceRestored,
    /// The CAN controller's state changed (a [`BusState`](crate::can::BusState) code).
    BusState(u8),
    /// Answer to [`ClientMsg::Ping`].
    Pong {
        /// The ping's id.
        id: u32,
        /// The ping's client time, echoed.
        client_us: u64,
        /// The server's clock when it answered.
        server_us: u64,
    },
}

mod kind {
    pub(super) use crate::frame::session_kind::*;
    pub(super) const BYTES: u8 = 0x10;
    pub(super) const FRAMES: u8 = 0x11;
    pub(super) const DROPPED: u8 = 0x30;
    pub(super) const DEVICE_LOST: u8 = 0x31;
    pub(super) const DEVICE_RESTORED: u8 = 0x32;
    pub(super) const BUS_STATE: u8 = 0x33;
}

impl ClientMsg {
    /// Encoded size in bytes, envelope included.
    pub fn encoded_len(&self) -> usize {
        Frame::encoded_len(self.payload_len())
    }

    fn payload_len(&self) -> usize {
        match self {
            ClientMsg::Hello { client, .. } => 2 + string_len(client),
            ClientMsg::Ping { .. } => 12,
        }
    }

    /// Append the framed message to `buf`.
    pub fn encode(&self, buf: &mut impl BufMut) {
        let len = self.payload_len();
        match self {
            ClientMsg::Hello { version, client } => {
                Frame::put_header(buf, kind::HELLO, len);
                buf.put_u16(*version);
                put_string(buf, client);
            }
            ClientMsg::Ping { id, client_us } => {
                Frame::put_header(buf, kind::PING, len);
                buf.put_u32(*id);
                buf.put_u64(*client_us);
            }
        }
    }

    /// Decode one message from the front of `buf`; `Short` leaves `buf` untouched. A kind
    /// other than Hello and Ping is `UnknownKind` as soon as its kind byte is there: the
    /// server never buffers, let alone parses, the payload of a write from an observer.
    pub fn decode(buf: &mut BytesMut) -> Result<Self, DecodeError> {
        match buf.first() {
            None => return Err(DecodeError::Short),
            Some(&k) if k != kind::HELLO && k != kind::PING => {
                return Err(DecodeError::UnknownKind(k));
            }
            Some(_) => {}
        }
        let Frame { kind, mut payload } = Frame::decode(buf)?;
        let p = &mut payload;
        let v = match kind {
            kind::HELLO => (|| {
                let version = get_u16(p)?;
                if version != VERSION {
                    // Another version's layout: its version alone, so the server can say
                    // "upgrade" instead of reporting a parse error.
                    p.advance(p.remaining());
                    return Ok(ClientMsg::Hello {
                        version,
                        client: String::new(),
                    });
                }
                Ok(ClientMsg::Hello {
                    version,
                    client: get_string(p, "client")?,
                })
            })(),
            _ => (|| {
                Ok(ClientMsg::Ping {
                    id: get_u32(p)?,
                    client_us: get_u64(p)?,
                })
            })(),
        };
        finish_exact(p.remaining(), v)
    }
}

impl ServerMsg {
    /// Encoded size in bytes, envelope included.
    pub fn encoded_len(&self) -> usize {
        Frame::encoded_len(self.payload_len())
    }

    fn payload_len(&self) -> usize {
        match self {
            ServerMsg::Welcome { device, .. } => 2 + string_len(device) + 4 + 8,
            ServerMsg::Refused { message, .. } => 2 + string_len(message),
            ServerMsg::Bytes { data, .. } => 1 + 8 + data.len(),
            ServerMsg::Frames { frames, .. } => 1 + track_frame_len(frames),
            ServerMsg::Dropped(_) => 8,
            ServerMsg::DeviceLost(reason) => string_len(reason),
            ServerMsg::DeviceRestored => 0,
            ServerMsg::BusState(_) => 1,
            ServerMsg::Pong { .. } => 20,
        }
    }

    /// Append the framed message to `buf`. Chunks of bytes over [`MAX_CHUNK`] and batches
    /// over [`MAX_BATCH`](crate::can::MAX_BATCH) frames are the caller's to split (see
    /// [`ServerMsg::bytes_chunks`]); the peer refuses them.
    pub fn encode(&self, buf: &mut impl BufMut) {
        let len = self.payload_len();
        match self {
            ServerMsg::Welcome {
                version,
                device,
                queue,
                server_us,
            } => {
                Frame::put_header(buf, kind::WELCOME, len);
                buf.put_u16(*version);
                put_string(buf, device);
                buf.put_u32(*queue);
                buf.put_u64(*server_us);
            }
            ServerMsg::Refused { code, message } => {
                Frame::put_header(buf, kind::REFUSED, len);
                buf.put_u16(code.to_code());
                put_string(buf, message);
            }
            ServerMsg::Bytes {
                direction,
                stamp_us,
                data,
            } => {
                Frame::put_header(buf, kind::BYTES, len);
                buf.put_u8(direction.to_code());
                buf.put_u64(*stamp_us);
                buf.put_slice(data);
            }
            ServerMsg::Frames { direction, frames } => {
                Frame::put_header(buf, kind::FRAMES, len);
                buf.put_u8(direction.to_code());
                encode_track_frame(frames, buf);
            }
            ServerMsg::Dropped(n) => {
                Frame::put_header(buf, kind::DROPPED, len);
                buf.put_u64(*n);
            }
            ServerMsg::DeviceLost(reason) => {
                Frame::put_header(buf, kind::DEVICE_LOST, len);
                put_string(buf, reason);
            }
            ServerMsg::DeviceRestored => Frame::put_header(buf, kind::DEVICE_RESTORED, len),
            ServerMsg::BusState(code) => {
                Frame::put_header(buf, kind::BUS_STATE, len);
                buf.put_u8(*code);
            }
            ServerMsg::Pong {
                id,
                client_us,
                server_us,
            } => {
                Frame::put_header(buf, kind::PONG, len);
                buf.put_u32(*id);
                buf.put_u64(*client_us);
                buf.put_u64(*server_us);
            }
        }
    }

    /// The message as bytes (one MoQ frame on the relay's observe track).
    pub fn to_bytes(&self) -> Bytes {
        let mut b = BytesMut::with_capacity(self.encoded_len());
        self.encode(&mut b);
        b.freeze()
    }

    /// `data` as [`ServerMsg::Bytes`] messages of at most [`MAX_CHUNK`] bytes, all with the
    /// same direction and stamp.
    pub fn bytes_chunks(
        direction: Direction,
        stamp_us: u64,
        mut data: Bytes,
    ) -> impl Iterator<Item = ServerMsg> {
        std::iter::from_fn(move || {
            if data.is_empty() {
                return None;
            }
            let n = data.len().min(MAX_CHUNK);
            Some(ServerMsg::Bytes {
                direction,
                stamp_us,
                data: data.split_to(n),
            })
        })
    }

    /// Decode one message from the front of `buf`; `Short` leaves `buf` untouched.
    pub fn decode(buf: &mut BytesMut) -> Result<Self, DecodeError> {
        let Frame { kind, payload } = Frame::decode(buf)?;
        Self::decode_payload(kind, payload)
    }

    /// Decode one message that is a whole MoQ frame (the relay's observe track): the frame
    /// must be exactly one message.
    pub fn decode_frame(frame: &[u8]) -> Result<Self, DecodeError> {
        let mut b = BytesMut::from(frame);
        let m = match Self::decode(&mut b) {
            Err(DecodeError::Short) => {
                return Err(DecodeError::Invalid {
                    field: "payload",
                    reason: "truncated message",
                });
            }
            other => other?,
        };
        if !b.is_empty() {
            return Err(DecodeError::Long(b.len()));
        }
        Ok(m)
    }

    fn decode_payload(kind: u8, mut payload: Bytes) -> Result<Self, DecodeError> {
        let p = &mut payload;
        let v = match kind {
            kind::WELCOME => (|| {
                let version = get_u16(p)?;
                if version != VERSION {
                    // Another version's layout: the client reports the version mismatch.
                    p.advance(p.remaining());
                    return Ok(ServerMsg::Welcome {
                        version,
                        device: String::new(),
                        queue: 0,
                        server_us: 0,
                    });
                }
                Ok(ServerMsg::Welcome {
                    version,
                    device: get_string(p, "device")?,
                    queue: get_u32(p)?,
                    server_us: get_u64(p)?,
                })
            })(),
            kind::REFUSED => (|| {
                Ok(ServerMsg::Refused {
                    code: RefuseCode::from_code(get_u16(p)?),
                    message: get_string(p, "message")?,
                })
            })(),
            kind::BYTES => (|| {
                let direction = Direction::from_code(get_u8(p)?)?;
                let stamp_us = get_u64(p)?;
                if p.remaining() > MAX_CHUNK {
                    return Err(DecodeError::Invalid {
                        field: "data",
                        reason: "chunk of more than 64 KiB",
                    });
                }
                Ok(ServerMsg::Bytes {
                    direction,
                    stamp_us,
                    data: p.split_off(0),
                })
            })(),
            kind::FRAMES => (|| {
                let direction = Direction::from_code(get_u8(p)?)?;
                let frames = decode_track_frame(&p[..])?;
                p.advance(p.remaining());
                Ok(ServerMsg::Frames { direction, frames })
            })(),
            kind::DROPPED => get_u64(p).map(ServerMsg::Dropped),
            kind::DEVICE_LOST => get_string(p, "reason").map(ServerMsg::DeviceLost),
            kind::DEVICE_RESTORED => Ok(ServerMsg::DeviceRestored),
            kind::BUS_STATE => get_u8(p).map(ServerMsg::BusState),
            kind::PONG => (|| {
                Ok(ServerMsg::Pong {
                    id: get_u32(p)?,
                    client_us: get_u64(p)?,
                    server_us: get_u64(p)?,
                })
            })(),
            k => return Err(DecodeError::UnknownKind(k)),
        };
        finish_exact(p.remaining(), v)
    }
}

// One chunk always fits the envelope.
const _: () = assert!(MAX_CHUNK + 9 <= crate::frame::MAX_PAYLOAD);

#[cfg(test)]
mod tests {
    use super::*;
    use crate::can::testing::batch;
    use crate::can::{CanFrame, MAX_BATCH};
    use proptest::prelude::*;

    fn enc<M>(m: &M, f: fn(&M, &mut BytesMut)) -> BytesMut {
        let mut b = BytesMut::new();
        f(m, &mut b);
        b
    }

    fn hex(b: &[u8]) -> String {
        b.iter().map(|x| format!("{x:02x}")).collect()
    }

    #[test]
    fn byte_snapshots() {
        let hello = ClientMsg::Hello {
            version: 1,
            client: "rec".into(),
        };
        assert_eq!(
            hex(&enc(&hello, |m, b| m.encode(b))),
            "0106000103726563",
            "Hello v1 \"rec\""
        );
        let bytes = ServerMsg::Bytes {
            direction: Direction::ToDevice,
            stamp_us: 0x0102,
            data: Bytes::from_static(&[0xFF, 0xFF]),
        };
        assert_eq!(
            hex(&enc(&bytes, |m, b| m.encode(b))),
            "100b01000000000000010 2ffff".replace(' ', "")
        );
        let frames = ServerMsg::Frames {
            direction: Direction::FromDevice,
            frames: vec![TimedFrame {
                frame: CanFrame::new(0x11, vec![0xAB]).expect("frame"),
                timestamp_us: 7,
            }],
        };
        assert_eq!(
            hex(&enc(&frames, |m, b| m.encode(b))),
            "1111000100000000110000000000000007 01ab".replace(' ', "")
        );
        assert_eq!(
            hex(&ServerMsg::Dropped(3).to_bytes()),
            "30080000000000000003"
        );
    }

    #[test]
    fn writes_are_refused_from_the_kind_byte_alone() {
        // A Data message of the controller protocol (kind 0x10) declaring 200 KiB: refused
        // with one byte present, before anything is buffered.
        let mut b = BytesMut::from(&[0x10u8][..]);
        assert_eq!(
            ClientMsg::decode(&mut b),
            Err(DecodeError::UnknownKind(0x10))
        );
        for k in [0x02u8, 0x03, 0x11, 0x20, 0x41, 0xFF] {
            let mut b = BytesMut::from(&[k, 0x00][..]);
            assert_eq!(ClientMsg::decode(&mut b), Err(DecodeError::UnknownKind(k)));
        }
        assert_eq!(
            ClientMsg::decode(&mut BytesMut::new()),
            Err(DecodeError::Short)
        );
    }

    #[test]
    fn other_versions_decode_to_their_version() {
        // A version-9 hello with fields this version does not know.
        let mut b = BytesMut::from(&[0x01u8, 0x05, 0x00, 0x09, 0xAA, 0xBB, 0xCC][..]);
        assert_eq!(
            ClientMsg::decode(&mut b),
            Ok(ClientMsg::Hello {
                version: 9,
                client: String::new()
            })
        );
        assert!(b.is_empty());
    }

    #[test]
    fn limits_are_checked() {
        // A chunk one byte over the limit.
        let mut b = BytesMut::new();
        let len = 9 + MAX_CHUNK + 1;
        Frame::put_header(&mut b, kind::BYTES, len);
        b.put_u8(0);
        b.put_u64(0);
        b.put_bytes(0, MAX_CHUNK + 1);
        assert!(matches!(
            ServerMsg::decode(&mut b),
            Err(DecodeError::Invalid { field: "data", .. })
        ));
        // A bad direction.
        let mut b = BytesMut::from(&[0x10u8, 0x09, 0x02, 0, 0, 0, 0, 0, 0, 0, 0][..]);
        assert!(matches!(
            ServerMsg::decode(&mut b),
            Err(DecodeError::Invalid {
                field: "direction",
                ..
            })
        ));
        // Chunks split at the limit.
        let data = Bytes::from(vec![1u8; 2 * MAX_CHUNK + 5]);
        let parts: Vec<_> = ServerMsg::bytes_chunks(Direction::FromDevice, 1, data).collect();
        assert_eq!(parts.len(), 3);
        // A whole MoQ frame must be exactly one message.
        let mut two = ServerMsg::Dropped(1).to_bytes().to_vec();
        two.extend_from_slice(&ServerMsg::DeviceRestored.to_bytes());
        assert_eq!(ServerMsg::decode_frame(&two), Err(DecodeError::Long(2)));
        assert!(matches!(
            ServerMsg::decode_frame(&two[..5]),
            Err(DecodeError::Invalid { .. })
        ));
    }

    fn direction() -> impl Strategy<Value = Direction> {
        prop_oneof![Just(Direction::FromDevice), Just(Direction::ToDevice)]
    }

    fn client_msg() -> impl Strategy<Value = ClientMsg> {
        prop_oneof![
            ".{0,40}".prop_map(|client| ClientMsg::Hello {
                version: VERSION,
                client
            }),
            (any::<u32>(), any::<u64>())
                .prop_map(|(id, client_us)| ClientMsg::Ping { id, client_us }),
        ]
    }

    fn server_msg() -> impl Strategy<Value = ServerMsg> {
        prop_oneof![
            (".{0,40}", any::<u32>(), any::<u64>()).prop_map(|(device, queue, server_us)| {
                ServerMsg::Welcome {
                    version: VERSION,
                    device,
                    queue,
                    server_us,
                }
            }),
            (1u16..10, ".{0,80}").prop_map(|(c, message)| ServerMsg::Refused {
                code: RefuseCode::from_code(c),
                message
            }),
            (
                direction(),
                any::<u64>(),
                proptest::collection::vec(any::<u8>(), 0..3000)
            )
                .prop_map(|(direction, stamp_us, d)| ServerMsg::Bytes {
                    direction,
                    stamp_us,
                    data: Bytes::from(d)
                }),
            (direction(), batch())
                .prop_map(|(direction, frames)| ServerMsg::Frames { direction, frames }),
            any::<u64>().prop_map(ServerMsg::Dropped),
            ".{0,80}".prop_map(ServerMsg::DeviceLost),
            Just(ServerMsg::DeviceRestored),
            any::<u8>().prop_map(ServerMsg::BusState),
            (any::<u32>(), any::<u64>(), any::<u64>()).prop_map(|(id, client_us, server_us)| {
                ServerMsg::Pong {
                    id,
                    client_us,
                    server_us,
                }
            }),
        ]
    }

    /// Arbitrary bytes, or frames of the known kinds with arbitrary payloads then arbitrary
    /// bytes, so decoding reaches the field decoders.
    fn arbitrary_or_framed() -> impl Strategy<Value = Vec<u8>> {
        let known = vec![1u8, 2, 3, 0x10, 0x11, 0x30, 0x31, 0x32, 0x33, 0x40, 0x41];
        let kind = prop_oneof![proptest::sample::select(known), any::<u8>()];
        let frame = (kind, proptest::collection::vec(any::<u8>(), 0..64)).prop_map(|(kind, p)| {
            let mut b = BytesMut::new();
            Frame {
                kind,
                payload: Bytes::from(p),
            }
            .encode(&mut b);
            b.to_vec()
        });
        prop_oneof![
            proptest::collection::vec(any::<u8>(), 0..1024),
            (
                proptest::collection::vec(frame, 0..8),
                proptest::collection::vec(any::<u8>(), 0..16)
            )
                .prop_map(|(frames, tail)| frames
                    .concat()
                    .into_iter()
                    .chain(tail)
                    .collect()),
        ]
    }

    proptest! {
        #[test]
        fn client_roundtrip(m in client_msg()) {
            let mut b = enc(&m, |m, b| m.encode(b));
            prop_assert_eq!(b.len(), m.encoded_len());
            // Every strict prefix is Short and leaves the buffer untouched.
            for cut in [0, 1, b.len() / 2, b.len() - 1] {
                let mut p = BytesMut::from(&b[..cut]);
                prop_assert_eq!(ClientMsg::decode(&mut p), Err(DecodeError::Short));
                prop_assert_eq!(p.len(), cut);
            }
            prop_assert_eq!(ClientMsg::decode(&mut b), Ok(m));
            prop_assert!(b.is_empty());
        }

        #[test]
        fn server_roundtrip(m in server_msg()) {
            let mut b = enc(&m, |m, b| m.encode(b));
            prop_assert_eq!(b.len(), m.encoded_len());
            prop_assert_eq!(ServerMsg::decode_frame(&b), Ok(m.clone()));
            prop_assert_eq!(ServerMsg::decode(&mut b), Ok(m));
            prop_assert!(b.is_empty());
        }

        /// Any bytes: no panic; every message decoded took exactly its own frame and encodes
        /// back to itself (a hello of another version decodes to its version alone, so it
        /// may be shorter than its frame); frames are valid CAN frames and chunks within
        /// their limits.
        #[test]
        fn decoders_total(bytes in arbitrary_or_framed()) {
            let mut b = BytesMut::from(&bytes[..]);
            loop {
                let before = b.len();
                let envelope = Frame::check(&b);
                match ClientMsg::decode(&mut b) {
                    Ok(m) => {
                        prop_assert_eq!(Ok(before - b.len()), envelope, "took its frame");
                        let mut again = enc(&m, |m, b| m.encode(b));
                        prop_assert_eq!(ClientMsg::decode(&mut again), Ok(m));
                    }
                    Err(DecodeError::Short) => {
                        prop_assert_eq!(b.len(), before);
                        break;
                    }
                    Err(_) => break,
                }
            }
            let mut b = BytesMut::from(&bytes[..]);
            loop {
                let before = b.len();
                let envelope = Frame::check(&b);
                match ServerMsg::decode(&mut b) {
                    Ok(m) => {
                        prop_assert_eq!(Ok(before - b.len()), envelope, "took its frame");
                        match &m {
                            ServerMsg::Frames { frames, .. } => {
                                prop_assert!(frames.len() <= MAX_BATCH);
                                for f in frames {
                                    prop_assert_eq!(f.frame.validate(), Ok(()));
                                }
                            }
                            ServerMsg::Bytes { data, .. } => prop_assert!(data.len() <= MAX_CHUNK),
                            _ => {}
                        }
                        let again = m.to_bytes();
                        prop_assert_eq!(ServerMsg::decode_frame(&again), Ok(m));
                    }
                    Err(DecodeError::Short) => {
                        prop_assert_eq!(b.len(), before);
                        break;
                    }
                    Err(_) => break,
                }
            }
            let _ = ServerMsg::decode_frame(&bytes);
        }
    }
}
