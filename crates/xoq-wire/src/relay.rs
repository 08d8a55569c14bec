//! The relay session protocol shared by the serial and CAN bridges (and any service with a
//! way back to the device): how a server and its relay clients find each other, agree on
//! where "now" is in each other's streams, and measure each other's clocks, using only MoQ
//! tracks.
//!
//! A relay replays the latest group of a track to a new subscriber, so without a marker a
//! server that (re)subscribes to a client's writer would forward commands written before it
//! subscribed, and a client would read device data from before it connected. The marker is a
//! nonce echoed in band:
//!
//! 1. The server sees a writer broadcast `{path}/{up}/<writer>` announced, subscribes, and
//!    publishes [`Ctl::Hello`] (writer, fresh nonce) on its `ctl` track until the writer
//!    answers.
//! 2. The writer appends [`WriterMsg::Sync`] with that nonce to its own track: every frame
//!    after it was written after the server subscribed. The server drops what came before.
//! 3. The server starts a new group on its `data` track and publishes [`Ctl::Synced`] naming
//!    it: the client drops data groups older than that one (the relay's replayed backlog).
//!
//! Clocks: [`WriterMsg::Ping`] / [`Ctl::Pong`] carry timestamps so a client can estimate its
//! offset to the server's (the robot's) clock over the relay.
//!
//! Every message is one complete MoQ frame, so decoding is exact-consume (`finish_exact`).

use bytes::{Buf, BufMut, Bytes};

use crate::coding::{
    DecodeError, finish_exact, get_string, get_u8, get_u16, get_u32, get_u64, put_string,
    string_len,
};

/// Name of the server's track of control messages, next to `data` in its broadcast.
pub const CTL_TRACK: &str = "ctl";

/// Longest writer name the protocol carries (a writer is named by a short random id).
pub const MAX_WRITER: usize = 64;

/// A frame on a client's writer track (`{path}/cmd/<writer>`, `{path}/c2s/<writer>`, track
/// `data`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WriterMsg {
    /// Service payload: a CAN batch, or bytes for a serial port.
    Data(Bytes),
    /// Everything after this was written after the writer saw [`Ctl::Hello`] with `nonce`.
    Sync {
        /// The server's nonce, echoed.
        nonce: u64,
    },
    /// A clock probe; answered by [`Ctl::Pong`].
    Ping {
        /// Chosen by the client, echoed.
        id: u32,
        /// The client's clock when sent (µs since the Unix epoch).
        client_us: u64,
    },
}

mod wkind {
    pub(super) const DATA: u8 = 0x00;
    pub(super) const SYNC: u8 = 0x01;
    pub(super) const PING: u8 = 0x02;
}

impl WriterMsg {
    /// Encoded size.
    pub fn encoded_len(&self) -> usize {
        1 + match self {
            WriterMsg::Data(d) => d.len(),
            WriterMsg::Sync { .. } => 8,
            WriterMsg::Ping { .. } => 12,
        }
    }

    /// Append the encoding (one MoQ frame's content) to `buf`.
    pub fn encode(&self, buf: &mut impl BufMut) {
        match self {
            WriterMsg::Data(d) => {
                buf.put_u8(wkind::DATA);
                buf.put_slice(d);
            }
            WriterMsg::Sync { nonce } => {
                buf.put_u8(wkind::SYNC);
                buf.put_u64(*nonce);
            }
            WriterMsg::Ping { id, client_us } => {
                buf.put_u8(wkind::PING);
                buf.put_u32(*id);
                buf.put_u64(*client_us);
            }
        }
    }

    /// Encode `Data` without copying the payload twice: the kind byte, then `payload`.
    pub fn data_frame(payload: &[u8]) -> Bytes {
        let mut b = Vec::with_capacity(1 + payload.len());
        b.push(wkind::DATA);
        b.extend_from_slice(payload);
        Bytes::from(b)
    }

    /// Decode one MoQ frame. `Data` borrows from `frame` (no copy).
    pub fn decode(frame: &Bytes) -> Result<Self, DecodeError> {
        let Some(&kind) = frame.first() else {
            return Err(DecodeError::Invalid {
                field: "writer frame",
                reason: "empty",
            });
        };
        let mut p = &frame[1..];
        let v = match kind {
            wkind::DATA => return Ok(WriterMsg::Data(frame.slice(1..))),
            wkind::SYNC => get_u64(&mut p).map(|nonce| WriterMsg::Sync { nonce }),
            wkind::PING => (|| {
                Ok(WriterMsg::Ping {
                    id: get_u32(&mut p)?,
                    client_us: get_u64(&mut p)?,
                })
            })(),
            k => return Err(DecodeError::UnknownKind(k)),
        };
        finish_exact(p.remaining(), v)
    }
}

/// A message on the server's `ctl` track, read by every relay client (each picks the ones
/// naming its writer).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ctl {
    /// The server subscribed to `writer`; the writer answers [`WriterMsg::Sync`] with `nonce`.
    /// Repeated until it does.
    Hello {
        /// Writer name (the last segment of its broadcast path).
        writer: String,
        /// Fresh for every subscription.
        nonce: u64,
        /// Whether the server accepts `Data` from relay writers (`--moq-writes on`).
        writes: bool,
        /// The server's clock (µs since the Unix epoch) when sent.
        server_us: u64,
    },
    /// The writer is in sync: its later frames are read. Data for it starts at `data_group`.
    Synced {
        /// Writer name.
        writer: String,
        /// The nonce that was echoed.
        nonce: u64,
        /// First group of the server's `data` track written after the sync.
        data_group: u64,
    },
    /// Answer to a [`WriterMsg::Ping`].
    Pong {
        /// Writer name.
        writer: String,
        /// The ping's id.
        id: u32,
        /// The ping's client time, echoed.
        client_us: u64,
        /// The server's clock when it answered.
        server_us: u64,
    },
    /// Something `writer` sent was refused (writes off, a frame the device cannot carry).
    Refused {
        /// Writer name.
        writer: String,
        /// Stable code (the service's refusal codes).
        code: u16,
        /// What to do about it.
        message: String,
    },
    /// CAN: the controller's error state changed (code as in `can::BusState`).
    BusState(u8),
    /// The device disappeared; the server reopens it when it returns.
    DeviceLost(String),
    /// The device is back.
    DeviceRestored,
    /// The server is stopping.
    Bye(String),
}

mod ckind {
    pub(super) const HELLO: u8 = 0x01;
    pub(super) const SYNCED: u8 = 0x02;
    pub(super) const PONG: u8 = 0x03;
    pub(super) const REFUSED: u8 = 0x04;
    pub(super) const BUS_STATE: u8 = 0x05;
    pub(super) const DEVICE_LOST: u8 = 0x06;
    pub(super) const DEVICE_RESTORED: u8 = 0x07;
    pub(super) const BYE: u8 = 0x08;
}

fn get_writer(p: &mut impl Buf) -> Result<String, DecodeError> {
    let w = get_string(p, "writer")?;
    if w.len() > MAX_WRITER {
        return Err(DecodeError::TooLong {
            len: w.len() as u64,
            max: MAX_WRITER as u64,
        });
    }
    Ok(w)
}

impl Ctl {
    /// The writer this message is addressed to, if any.
    pub fn writer(&self) -> Option<&str> {
        match self {
            Ctl::Hello { writer, .. }
            | Ctl::Synced { writer, .. }
            | Ctl::Pong { writer, .. }
            | Ctl::Refused { writer, .. } => Some(writer),
            _ => None,
        }
    }

    /// Encoded size.
    pub fn encoded_len(&self) -> usize {
        1 + match self {
            Ctl::Hello { writer, .. } => string_len(writer) + 8 + 1 + 8,
            Ctl::Synced { writer, .. } => string_len(writer) + 16,
            Ctl::Pong { writer, .. } => string_len(writer) + 4 + 16,
            Ctl::Refused {
                writer, message, ..
            } => string_len(writer) + 2 + string_len(message),
            Ctl::BusState(_) => 1,
            Ctl::DeviceLost(s) | Ctl::Bye(s) => string_len(s),
            Ctl::DeviceRestored => 0,
        }
    }

    /// Append the encoding (one MoQ frame's content) to `buf`.
    pub fn encode(&self, buf: &mut impl BufMut) {
        match self {
            Ctl::Hello {
                writer,
                nonce,
                writes,
                server_us,
            } => {
                buf.put_u8(ckind::HELLO);
                put_string(buf, writer);
                buf.put_u64(*nonce);
                buf.put_u8(u8::from(*writes));
                buf.put_u64(*server_us);
            }
            Ctl::Synced {
                writer,
                nonce,
                data_group,
            } => {
                buf.put_u8(ckind::SYNCED);
                put_string(buf, writer);
                buf.put_u64(*nonce);
                buf.put_u64(*data_group);
            }
            Ctl::Pong {
                writer,
                id,
                client_us,
                server_us,
            } => {
                buf.put_u8(ckind::PONG);
                put_string(buf, writer);
                buf.put_u32(*id);
                buf.put_u64(*client_us);
                buf.put_u64(*server_us);
            }
            Ctl::Refused {
                writer,
                code,
                message,
            } => {
                buf.put_u8(ckind::REFUSED);
                put_string(buf, writer);
                buf.put_u16(*code);
                put_string(buf, message);
            }
            Ctl::BusState(c) => {
                buf.put_u8(ckind::BUS_STATE);
                buf.put_u8(*c);
            }
            Ctl::DeviceLost(s) => {
                buf.put_u8(ckind::DEVICE_LOST);
                put_string(buf, s);
            }
            Ctl::DeviceRestored => buf.put_u8(ckind::DEVICE_RESTORED),
            Ctl::Bye(s) => {
                buf.put_u8(ckind::BYE);
                put_string(buf, s);
            }
        }
    }

    /// Encode into a new buffer (one MoQ frame).
    pub fn to_bytes(&self) -> Bytes {
        let mut b = Vec::with_capacity(self.encoded_len());
        self.encode(&mut b);
        Bytes::from(b)
    }

    /// Decode one MoQ frame.
    pub fn decode(frame: &[u8]) -> Result<Self, DecodeError> {
        let Some((&kind, mut p)) = frame.split_first() else {
            return Err(DecodeError::Invalid {
                field: "ctl frame",
                reason: "empty",
            });
        };
        let p = &mut p;
        let v = match kind {
            ckind::HELLO => (|| {
                Ok(Ctl::Hello {
                    writer: get_writer(p)?,
                    nonce: get_u64(p)?,
                    writes: crate::coding::get_bool(p, "writes")?,
                    server_us: get_u64(p)?,
                })
            })(),
            ckind::SYNCED => (|| {
                Ok(Ctl::Synced {
                    writer: get_writer(p)?,
                    nonce: get_u64(p)?,
                    data_group: get_u64(p)?,
                })
            })(),
            ckind::PONG => (|| {
                Ok(Ctl::Pong {
                    writer: get_writer(p)?,
                    id: get_u32(p)?,
                    client_us: get_u64(p)?,
                    server_us: get_u64(p)?,
                })
            })(),
            ckind::REFUSED => (|| {
                Ok(Ctl::Refused {
                    writer: get_writer(p)?,
                    code: get_u16(p)?,
                    message: get_string(p, "message")?,
                })
            })(),
            ckind::BUS_STATE => get_u8(p).map(Ctl::BusState),
            ckind::DEVICE_LOST => get_string(p, "reason").map(Ctl::DeviceLost),
            ckind::DEVICE_RESTORED => Ok(Ctl::DeviceRestored),
            ckind::BYE => get_string(p, "reason").map(Ctl::Bye),
            k => return Err(DecodeError::UnknownKind(k)),
        };
        finish_exact(p.remaining(), v)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn hex(b: &[u8]) -> String {
        b.iter().map(|x| format!("{x:02x}")).collect()
    }

    fn writer_msgs() -> Vec<WriterMsg> {
        vec![
            WriterMsg::Data(Bytes::from_static(b"\x01\x02")),
            WriterMsg::Data(Bytes::new()),
            WriterMsg::Sync { nonce: u64::MAX },
            WriterMsg::Ping {
                id: 7,
                client_us: 1_700_000_000_000_000,
            },
        ]
    }

    fn ctls() -> Vec<Ctl> {
        vec![
            Ctl::Hello {
                writer: "0011223344556677".into(),
                nonce: 42,
                writes: true,
                server_us: 5,
            },
            Ctl::Synced {
                writer: "w".into(),
                nonce: 42,
                data_group: 9,
            },
            Ctl::Pong {
                writer: "w".into(),
                id: 3,
                client_us: 10,
                server_us: 20,
            },
            Ctl::Refused {
                writer: "w".into(),
                code: 7,
                message: "writes are off".into(),
            },
            Ctl::BusState(3),
            Ctl::DeviceLost("unplugged".into()),
            Ctl::DeviceRestored,
            Ctl::Bye("stopping".into()),
        ]
    }

    #[test]
    fn roundtrips_and_lengths() {
        for m in writer_msgs() {
            let mut b = Vec::new();
            m.encode(&mut b);
            assert_eq!(b.len(), m.encoded_len());
            assert_eq!(WriterMsg::decode(&Bytes::from(b)), Ok(m.clone()));
        }
        for m in ctls() {
            let b = m.to_bytes();
            assert_eq!(b.len(), m.encoded_len());
            assert_eq!(Ctl::decode(&b), Ok(m.clone()));
        }
        assert_eq!(
            WriterMsg::data_frame(b"ab"),
            Bytes::from_static(b"\x00ab"),
            "data_frame is Data's encoding"
        );
    }

    #[test]
    fn snapshots() {
        let mut b = Vec::new();
        WriterMsg::Sync { nonce: 0x0102 }.encode(&mut b);
        assert_eq!(hex(&b), "010000000000000102");
        let b = Ctl::Hello {
            writer: "ab".into(),
            nonce: 1,
            writes: false,
            server_us: 2,
        }
        .to_bytes();
        assert_eq!(hex(&b), "010261620000000000000001000000000000000002");
    }

    #[test]
    fn bad_frames_are_errors() {
        assert!(WriterMsg::decode(&Bytes::new()).is_err());
        assert!(matches!(
            WriterMsg::decode(&Bytes::from_static(b"\x09")),
            Err(DecodeError::UnknownKind(9))
        ));
        // Sync truncated, Sync with trailing bytes.
        assert!(WriterMsg::decode(&Bytes::from_static(b"\x01\x00")).is_err());
        assert!(matches!(
            WriterMsg::decode(&Bytes::from_static(b"\x01\0\0\0\0\0\0\0\0\0")),
            Err(DecodeError::Long(1))
        ));
        assert!(Ctl::decode(&[]).is_err());
        let long_writer = Ctl::Synced {
            writer: "x".repeat(MAX_WRITER + 1),
            nonce: 0,
            data_group: 0,
        }
        .to_bytes();
        assert!(matches!(
            Ctl::decode(&long_writer),
            Err(DecodeError::TooLong { .. })
        ));
    }

    proptest! {
        #[test]
        fn writer_decoder_total(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
            let _ = WriterMsg::decode(&Bytes::from(bytes));
        }

        #[test]
        fn ctl_decoder_total(bytes in proptest::collection::vec(any::<u8>(), 0..96)) {
            let _ = Ctl::decode(&bytes);
        }

        #[test]
        fn ctl_roundtrip(writer in "[0-9a-f]{0,16}", nonce: u64, group: u64, id: u32, a: u64, b: u64, code: u16, msg in ".{0,40}") {
            for m in [
                Ctl::Hello { writer: writer.clone(), nonce, writes: nonce % 2 == 0, server_us: a },
                Ctl::Synced { writer: writer.clone(), nonce, data_group: group },
                Ctl::Pong { writer: writer.clone(), id, client_us: a, server_us: b },
                Ctl::Refused { writer: writer.clone(), code, message: msg.clone() },
            ] {
                let bytes = m.to_bytes();
                prop_assert_eq!(bytes.len(), m.encoded_len());
                prop_assert_eq!(Ctl::decode(&bytes), Ok(m));
            }
        }

        #[test]
        fn writer_roundtrip(data in proptest::collection::vec(any::<u8>(), 0..64), nonce: u64, id: u32, t: u64) {
            for m in [
                WriterMsg::Data(Bytes::from(data.clone())),
                WriterMsg::Sync { nonce },
                WriterMsg::Ping { id, client_us: t },
            ] {
                let mut b = Vec::new();
                m.encode(&mut b);
                prop_assert_eq!(WriterMsg::decode(&Bytes::from(b)), Ok(m));
            }
        }
    }
}
