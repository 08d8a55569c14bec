//! The P2P session messages ([`ClientMsg`], [`ServerMsg`]) and the controller's [`BusState`].

use bytes::{Buf, BufMut, BytesMut};

use super::codec::{batch_len, get_batch, put_batch};
use super::filter::{filters_len, get_filters, put_filters};
use super::{Filter, TimedFrame};
use crate::coding::{
    DecodeError, finish_exact, get_bool, get_string, get_u8, get_u16, get_u32, get_u64, put_string,
    string_len,
};
use crate::frame::Frame;

/// ALPN of the CAN protocol; the trailing number is the major version.
pub const ALPN: &[u8] = b"xoq/can/1";
/// Protocol version carried in the handshake (minor revisions within [`ALPN`]).
pub const VERSION: u16 = 2;

/// Error state of the CAN controller, as SocketCAN reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum BusState {
    /// Normal operation (code 0).
    ErrorActive,
    /// An error counter passed the warning level, 96 (code 1).
    ErrorWarning,
    /// An error counter passed 127: the controller no longer sends active error flags (code 2).
    ErrorPassive,
    /// Too many transmit errors: the controller is off the bus (code 3).
    BusOff,
    /// The interface itself is unavailable (read error, link down); the server reopens it
    /// and reports [`BusState::ErrorActive`] when it is back (code 4).
    Down,
    /// A code this version does not know, kept as is. `Unknown(0..=3)` encodes as the named
    /// state with that code.
    Unknown(u8),
}

impl BusState {
    /// Stable wire code.
    pub fn to_code(self) -> u8 {
        match self {
            BusState::ErrorActive => 0,
            BusState::ErrorWarning => 1,
            BusState::ErrorPassive => 2,
            BusState::BusOff => 3,
            BusState::Down => 4,
            BusState::Unknown(c) => c,
        }
    }

    /// Inverse of [`to_code`](Self::to_code); unknown codes are kept as `Unknown`.
    pub fn from_code(c: u8) -> Self {
        match c {
            0 => BusState::ErrorActive,
            1 => BusState::ErrorWarning,
            2 => BusState::ErrorPassive,
            3 => BusState::BusOff,
            4 => BusState::Down,
            c => BusState::Unknown(c),
        }
    }
}

/// Messages from client to server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientMsg {
    /// Handshake, first message of a session.
    Hello {
        /// Client protocol version ([`VERSION`]).
        version: u16,
        /// Interface the client asks for (`can0`, ...); empty for the server's default.
        interface: String,
        /// Also receive the frames this client sends once they are on the bus (SocketCAN's
        /// `CAN_RAW_RECV_OWN_MSGS`), e.g. to learn when they were transmitted.
        receive_own: bool,
        /// The client handles CAN FD frames.
        fd: bool,
        /// Initial receive filters (at most [`MAX_FILTERS`](super::MAX_FILTERS); none means
        /// everything).
        filters: Vec<Filter>,
    },
    /// Frames to transmit, in order (at most [`MAX_BATCH`](super::MAX_BATCH)); each timestamp
    /// is the client's send time, which the server uses to drop commands older than its
    /// maximum age.
    Send(Vec<TimedFrame>),
    /// Replace the receive filters (at most [`MAX_FILTERS`](super::MAX_FILTERS); none means
    /// everything).
    SetFilters(Vec<Filter>),
    /// Clock probe, answered by [`ServerMsg::Pong`].
    Ping {
        /// Echoed.
        id: u32,
        /// The client's clock when sent (µs since the Unix epoch).
        client_us: u64,
    },
}

/// Messages from server to client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ServerMsg {
    /// Handshake accepted.
    Welcome {
        /// Server protocol version.
        version: u16,
        /// Name of the served interface.
        interface: String,
        /// CAN FD is enabled for this session (the client asked and the interface can).
        fd: bool,
        /// The server's clock (µs since the Unix epoch) when it sent the welcome: a first
        /// clock offset estimate before any ping.
        server_us: u64,
    },
    /// Handshake refused; the server closes the stream after this.
    Refused {
        /// Stable reason code (a [`RefuseCode`](crate::RefuseCode) value).
        code: u16,
        /// Human-readable explanation with what to do.
        message: String,
    },
    /// Frames received from the bus or sent by other clients (at most
    /// [`MAX_BATCH`](super::MAX_BATCH)).
    Frames(Vec<TimedFrame>),
    /// The controller's error state changed.
    State(BusState),
    /// This many frames for this client were dropped (since the previous notice) because its
    /// bounded queue on the server was full.
    Dropped(u64),
    /// Answer to [`ClientMsg::Ping`].
    Pong {
        /// The ping's id.
        id: u32,
        /// The ping's client time, echoed.
        client_us: u64,
        /// The server's clock when it answered.
        server_us: u64,
    },
    /// Frames this client sent were not transmitted (the session goes on): `count` frames
    /// since the previous notice, for the reason `code` (a [`RefuseCode`](crate::RefuseCode) value) and `message`.
    Error {
        /// Stable reason code.
        code: u16,
        /// Frames concerned.
        count: u32,
        /// What happened and what to do.
        message: String,
    },
}

mod kind {
    pub(super) use crate::frame::session_kind::*;
    pub(super) const FRAMES: u8 = 0x10;
    pub(super) const SET_FILTERS: u8 = 0x20;
    pub(super) const STATE: u8 = 0x30;
    pub(super) const DROPPED: u8 = 0x31;
    pub(super) const ERROR: u8 = 0x32;
}

impl ClientMsg {
    /// Encoded size in bytes, envelope included.
    pub fn encoded_len(&self) -> usize {
        Frame::encoded_len(self.payload_len())
    }

    fn payload_len(&self) -> usize {
        match self {
            ClientMsg::Hello {
                interface, filters, ..
            } => 2 + string_len(interface) + 2 + filters_len(filters),
            ClientMsg::Send(frames) => batch_len(frames),
            ClientMsg::SetFilters(filters) => filters_len(filters),
            ClientMsg::Ping { .. } => 12,
        }
    }

    /// Append the framed message to `buf`. Limits ([`MAX_BATCH`](super::MAX_BATCH),
    /// [`MAX_FILTERS`](super::MAX_FILTERS)) are the caller's to respect; the peer refuses
    /// messages over them.
    pub fn encode(&self, buf: &mut impl BufMut) {
        let len = self.payload_len();
        match self {
            ClientMsg::Hello {
                version,
                interface,
                receive_own,
                fd,
                filters,
            } => {
                Frame::put_header(buf, kind::HELLO, len);
                buf.put_u16(*version);
                put_string(buf, interface);
                buf.put_u8(u8::from(*receive_own));
                buf.put_u8(u8::from(*fd));
                put_filters(buf, filters);
            }
            ClientMsg::Send(frames) => {
                Frame::put_header(buf, kind::FRAMES, len);
                put_batch(buf, frames);
            }
            ClientMsg::SetFilters(filters) => {
                Frame::put_header(buf, kind::SET_FILTERS, len);
                put_filters(buf, filters);
            }
            ClientMsg::Ping { id, client_us } => {
                Frame::put_header(buf, kind::PING, len);
                buf.put_u32(*id);
                buf.put_u64(*client_us);
            }
        }
    }

    /// Decode one message from the front of `buf`; `Short` leaves `buf` untouched.
    pub fn decode(buf: &mut BytesMut) -> Result<Self, DecodeError> {
        let Frame { kind, mut payload } = Frame::decode(buf)?;
        let p = &mut payload;
        let v = match kind {
            kind::HELLO => (|| {
                Ok(ClientMsg::Hello {
                    version: get_u16(p)?,
                    interface: get_string(p, "interface")?,
                    receive_own: get_bool(p, "receive_own")?,
                    fd: get_bool(p, "fd")?,
                    filters: get_filters(p)?,
                })
            })(),
            kind::FRAMES => get_batch(p).map(ClientMsg::Send),
            kind::SET_FILTERS => get_filters(p).map(ClientMsg::SetFilters),
            kind::PING => (|| {
                Ok(ClientMsg::Ping {
                    id: get_u32(p)?,
                    client_us: get_u64(p)?,
                })
            })(),
            k => return Err(DecodeError::UnknownKind(k)),
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
            ServerMsg::Welcome { interface, .. } => 2 + string_len(interface) + 1 + 8,
            ServerMsg::Refused { message, .. } => 2 + string_len(message),
            ServerMsg::Frames(frames) => batch_len(frames),
            ServerMsg::State(_) => 1,
            ServerMsg::Dropped(_) => 8,
            ServerMsg::Pong { .. } => 20,
            ServerMsg::Error { message, .. } => 2 + 4 + string_len(message),
        }
    }

    /// Append the framed message to `buf` (batches of at most
    /// [`MAX_BATCH`](super::MAX_BATCH) frames).
    pub fn encode(&self, buf: &mut impl BufMut) {
        let len = self.payload_len();
        match self {
            ServerMsg::Welcome {
                version,
                interface,
                fd,
                server_us,
            } => {
                Frame::put_header(buf, kind::WELCOME, len);
                buf.put_u16(*version);
                put_string(buf, interface);
                buf.put_u8(u8::from(*fd));
                buf.put_u64(*server_us);
            }
            ServerMsg::Refused { code, message } => {
                Frame::put_header(buf, kind::REFUSED, len);
                buf.put_u16(*code);
                put_string(buf, message);
            }
            ServerMsg::Frames(frames) => {
                Frame::put_header(buf, kind::FRAMES, len);
                put_batch(buf, frames);
            }
            ServerMsg::State(s) => {
                Frame::put_header(buf, kind::STATE, len);
                buf.put_u8(s.to_code());
            }
            ServerMsg::Dropped(n) => {
                Frame::put_header(buf, kind::DROPPED, len);
                buf.put_u64(*n);
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
            ServerMsg::Error {
                code,
                count,
                message,
            } => {
                Frame::put_header(buf, kind::ERROR, len);
                buf.put_u16(*code);
                buf.put_u32(*count);
                put_string(buf, message);
            }
        }
    }

    /// Decode one message from the front of `buf`; `Short` leaves `buf` untouched.
    pub fn decode(buf: &mut BytesMut) -> Result<Self, DecodeError> {
        let Frame { kind, mut payload } = Frame::decode(buf)?;
        let p = &mut payload;
        let v = match kind {
            kind::WELCOME => (|| {
                let version = get_u16(p)?;
                if version != VERSION {
                    // Another version's layout: the client reports the version mismatch.
                    p.advance(p.remaining());
                    return Ok(ServerMsg::Welcome {
                        version,
                        interface: String::new(),
                        fd: false,
                        server_us: 0,
                    });
                }
                Ok(ServerMsg::Welcome {
                    version,
                    interface: get_string(p, "interface")?,
                    fd: get_bool(p, "fd")?,
                    server_us: get_u64(p)?,
                })
            })(),
            kind::PONG => (|| {
                Ok(ServerMsg::Pong {
                    id: get_u32(p)?,
                    client_us: get_u64(p)?,
                    server_us: get_u64(p)?,
                })
            })(),
            kind::ERROR => (|| {
                Ok(ServerMsg::Error {
                    code: get_u16(p)?,
                    count: get_u32(p)?,
                    message: get_string(p, "message")?,
                })
            })(),
            kind::REFUSED => (|| {
                Ok(ServerMsg::Refused {
                    code: get_u16(p)?,
                    message: get_string(p, "message")?,
                })
            })(),
            kind::FRAMES => get_batch(p).map(ServerMsg::Frames),
            kind::STATE => get_u8(p).map(|c| ServerMsg::State(BusState::from_code(c))),
            kind::DROPPED => get_u64(p).map(ServerMsg::Dropped),
            k => return Err(DecodeError::UnknownKind(k)),
        };
        finish_exact(p.remaining(), v)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::can::testing::*;
    use crate::can::*;
    use bytes::Bytes;
    use proptest::prelude::*;

    #[test]
    fn snapshot_hello() {
        let m = ClientMsg::Hello {
            version: 2,
            interface: "can0".into(),
            receive_own: true,
            fd: false,
            filters: vec![Filter {
                id: 0x123,
                mask: 0x7FF,
                extended: false,
            }],
        };
        let mut b = Vec::new();
        m.encode(&mut b);
        assert_eq!(b.len(), m.encoded_len());
        assert_eq!(
            hex(&b),
            "01 13 0002 0463616e30 01 00 01 00000123 000007ff 00".replace(' ', "")
        );
    }

    #[test]
    fn snapshot_frames_batch() {
        let m = ServerMsg::Frames(vec![
            timed(CanFrame::new(0x123, vec![0x11]).expect("valid frame"), 1000),
            timed(CanFrame::remote(0x1ABC_DEF0, 2).expect("valid frame"), 1001),
        ]);
        let mut b = Vec::new();
        m.encode(&mut b);
        assert_eq!(b.len(), m.encoded_len());
        assert_eq!(
            hex(&b),
            "10 1e 02 00 00000123 00000000000003e8 01 11 03 1abcdef0 00000000000003e9 02"
                .replace(' ', "")
        );
        // The MoQ track frame is the same batch without the envelope.
        let ServerMsg::Frames(frames) = &m else {
            unreachable!()
        };
        let mut t = Vec::new();
        encode_track_frame(frames, &mut t);
        assert_eq!(t, b[2..]);
        assert_eq!(t.len(), track_frame_len(frames));
        assert_eq!(decode_track_frame(&t).as_ref(), Ok(frames));
    }

    #[test]
    fn batch_limits() {
        let f = timed(CanFrame::new(1, Bytes::new()).expect("valid frame"), 0);
        let max = vec![f.clone(); MAX_BATCH];
        let m = ClientMsg::Send(max);
        let mut b = BytesMut::new();
        m.encode(&mut b);
        assert_eq!(ClientMsg::decode(&mut b), Ok(m));

        let over = ClientMsg::Send(vec![f.clone(); MAX_BATCH + 1]);
        let mut b = BytesMut::new();
        over.encode(&mut b);
        assert!(matches!(
            ClientMsg::decode(&mut b),
            Err(DecodeError::Invalid { field: "count", .. })
        ));
        let mut t = Vec::new();
        encode_track_frame(&vec![f; MAX_BATCH + 1], &mut t);
        assert!(matches!(
            decode_track_frame(&t),
            Err(DecodeError::Invalid { field: "count", .. })
        ));

        let filters = vec![Filter::default(); MAX_FILTERS];
        let mut b = BytesMut::new();
        ClientMsg::SetFilters(filters.clone()).encode(&mut b);
        assert_eq!(
            ClientMsg::decode(&mut b),
            Ok(ClientMsg::SetFilters(filters))
        );
        let mut b = BytesMut::new();
        ClientMsg::SetFilters(vec![Filter::default(); MAX_FILTERS + 1]).encode(&mut b);
        assert!(matches!(
            ClientMsg::decode(&mut b),
            Err(DecodeError::Invalid {
                field: "filters",
                ..
            })
        ));
    }

    #[test]
    fn lying_count_is_refused() {
        // Claims 1000 frames (varint 0x43e8) but carries 10 bytes.
        let mut t = vec![0x43, 0xe8];
        t.extend_from_slice(&[0; 10]);
        assert!(matches!(
            decode_track_frame(&t),
            Err(DecodeError::Invalid {
                field: "payload",
                ..
            })
        ));
        let mut b = BytesMut::from(&[kind::FRAMES, t.len() as u8][..]);
        b.extend_from_slice(&t);
        assert!(matches!(
            ServerMsg::decode(&mut b),
            Err(DecodeError::Invalid {
                field: "payload",
                ..
            })
        ));
        // The count is checked before any frame is read: two frames declared, one (bad) frame
        // present is a truncation, not a flags error found while decoding the first frame.
        let mut t = vec![2];
        t.extend_from_slice(&raw(0x80, 1, 0, &[]));
        t.extend_from_slice(&[0; 13]);
        assert!(matches!(
            decode_track_frame(&t),
            Err(DecodeError::Invalid {
                field: "payload",
                ..
            })
        ));
        t.push(0);
        assert!(matches!(
            decode_track_frame(&t),
            Err(DecodeError::Invalid { field: "flags", .. })
        ));
    }

    #[test]
    fn message_trailing_and_truncation() {
        let mut b = Vec::new();
        ServerMsg::State(BusState::BusOff).encode(&mut b);
        assert_eq!(b, [kind::STATE, 1, 3]);
        b[1] += 1;
        b.push(0);
        assert_eq!(
            ServerMsg::decode(&mut BytesMut::from(&b[..])),
            Err(DecodeError::Long(1))
        );
        // A DROPPED frame with 2 of its 8 bytes.
        let mut t = BytesMut::from(&[kind::DROPPED, 2, 0, 0][..]);
        assert!(matches!(
            ServerMsg::decode(&mut t),
            Err(DecodeError::Invalid { .. })
        ));
        assert_eq!(
            ClientMsg::decode(&mut BytesMut::from(&[0x7f, 0][..])),
            Err(DecodeError::UnknownKind(0x7f))
        );
    }

    #[test]
    fn bus_state_codes() {
        for (s, c) in [
            (BusState::ErrorActive, 0),
            (BusState::ErrorWarning, 1),
            (BusState::ErrorPassive, 2),
            (BusState::BusOff, 3),
            (BusState::Unknown(9), 9),
        ] {
            assert_eq!(s.to_code(), c);
            assert_eq!(BusState::from_code(c), s);
        }
    }

    fn client_msg() -> impl Strategy<Value = ClientMsg> {
        prop_oneof![
            (
                any::<u16>(),
                ".{0,40}",
                any::<bool>(),
                any::<bool>(),
                filters()
            )
                .prop_map(|(version, interface, receive_own, fd, filters)| {
                    ClientMsg::Hello {
                        version,
                        interface,
                        receive_own,
                        fd,
                        filters,
                    }
                }),
            batch().prop_map(ClientMsg::Send),
            filters().prop_map(ClientMsg::SetFilters),
            (any::<u32>(), any::<u64>())
                .prop_map(|(id, client_us)| ClientMsg::Ping { id, client_us }),
        ]
    }

    fn server_msg() -> impl Strategy<Value = ServerMsg> {
        prop_oneof![
            (".{0,40}", any::<bool>(), any::<u64>()).prop_map(|(interface, fd, server_us)| {
                ServerMsg::Welcome {
                    version: VERSION,
                    interface,
                    fd,
                    server_us,
                }
            }),
            (any::<u32>(), any::<u64>(), any::<u64>()).prop_map(|(id, client_us, server_us)| {
                ServerMsg::Pong {
                    id,
                    client_us,
                    server_us,
                }
            }),
            (any::<u16>(), any::<u32>(), ".{0,80}").prop_map(|(code, count, message)| {
                ServerMsg::Error {
                    code,
                    count,
                    message,
                }
            }),
            (any::<u16>(), ".{0,80}")
                .prop_map(|(code, message)| ServerMsg::Refused { code, message }),
            batch().prop_map(ServerMsg::Frames),
            any::<u8>().prop_map(|c| ServerMsg::State(BusState::from_code(c))),
            any::<u64>().prop_map(ServerMsg::Dropped),
        ]
    }

    proptest! {
        #[test]
        fn client_roundtrip(m in client_msg()) {
            let mut b = BytesMut::new();
            m.encode(&mut b);
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
            let mut b = BytesMut::new();
            m.encode(&mut b);
            prop_assert_eq!(b.len(), m.encoded_len());
            prop_assert_eq!(ServerMsg::decode(&mut b), Ok(m));
            prop_assert!(b.is_empty());
        }

        /// Any bytes into every decoder: no panic, and every frame decoded is valid.
        #[test]
        fn decoders_total(bytes in proptest::collection::vec(any::<u8>(), 0..2048)) {
            let mut s = &bytes[..];
            while let Ok(f) = decode_timed(&mut s) {
                prop_assert_eq!(f.frame.validate(), Ok(()));
            }
            let mut b = BytesMut::from(&bytes[..]);
            while ClientMsg::decode(&mut b).is_ok() {}
            let mut b = BytesMut::from(&bytes[..]);
            while ServerMsg::decode(&mut b).is_ok() {}
            if let Ok(frames) = decode_track_frame(&bytes) {
                for f in frames {
                    prop_assert_eq!(f.frame.validate(), Ok(()));
                }
            }
        }

        /// Valid framing with random payloads exercises the field decoders.
        #[test]
        fn payload_decoders_total(kind in prop_oneof![Just(1u8), Just(2), Just(3), Just(0x10), Just(0x20), Just(0x30), Just(0x31), any::<u8>()],
                                  payload in proptest::collection::vec(any::<u8>(), 0..256)) {
            let f = Frame { kind, payload: Bytes::from(payload) };
            let mut b = BytesMut::new();
            f.encode(&mut b);
            let mut c = b.clone();
            let _ = ClientMsg::decode(&mut b);
            let _ = ServerMsg::decode(&mut c);
        }
    }
}
