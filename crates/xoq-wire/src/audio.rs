//! Audio sessions (P2P), sans-IO.
//!
//! One bidirectional stream per session, messages in the [`Frame`] envelope. The client's
//! [`ClientMsg::Hello`] asks for a format (or the server's own) and says whether it listens
//! to the microphone and/or talks to the speaker; the server answers with the format in force
//! ([`ServerMsg::Welcome`]) or a refusal ([`RefuseCode`](crate::RefuseCode): another talker
//! holds the speaker, a format the device does not run at). Then audio flows as
//! [`AudioPacket`]s both ways, each stamped with the index of its first sample (the
//! stream's sample counter: a gap or a repeat is visible without looking at the audio) and,
//! from the microphone, its capture time on the robot clock.
//!
//! ```text
//! Hello    0x01: version u16 | listen bool | talk bool | takeover bool
//!                | rate u32 (0: the server's) | channels u8 (0: the server's) | codec u8 | frame_ms u8
//! Welcome  0x02: version u16 | rate u32 | channels u8 | codec u8 | frame_ms u8 | server_us u64 | device string
//! Refused  0x03: code u16 | message string
//! Packet   0x10: first_sample u64 | capture_us u64 | payload (the rest)
//! Ping     0x40: id u32 | client_us u64          Pong 0x41: id u32 | client_us u64 | server_us u64
//! ```

use bytes::{Buf, BufMut, Bytes, BytesMut};

use crate::coding::{
    DecodeError, finish_exact, get_bool, get_string, get_u8, get_u16, get_u32, get_u64, put_string,
    string_len,
};
use crate::frame::{Frame, session_kind};

/// ALPN of the audio service, version 1.
pub const ALPN: &[u8] = b"xoq/audio/1";
/// Protocol version carried in the hello.
pub const VERSION: u16 = 1;

/// Sample rates a session may run at (Opus's set; PCM sessions use the same set).
pub const RATES: [u32; 5] = [8_000, 12_000, 16_000, 24_000, 48_000];
/// Frame durations a session may use, in ms (Opus accepts 2.5 to 60; these are the ones
/// worth a network packet each).
pub const FRAME_MS: [u8; 4] = [10, 20, 40, 60];
/// Most channels a session carries (mono or stereo: what Opus codes as one stream).
pub const MAX_CHANNELS: u8 = 2;

const PACKET: u8 = 0x10;

/// How samples travel.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AudioCodec {
    /// Opus packets (RFC 6716), the default: about 64 kbit/s for mono speech and music.
    Opus,
    /// Little-endian signed 16-bit PCM, interleaved.
    PcmS16,
    /// Little-endian IEEE-754 32-bit float PCM, interleaved.
    PcmF32,
}

impl AudioCodec {
    /// Wire code.
    pub fn to_code(self) -> u8 {
        match self {
            AudioCodec::Opus => 1,
            AudioCodec::PcmS16 => 2,
            AudioCodec::PcmF32 => 3,
        }
    }

    /// The codec a wire code names.
    pub fn from_code(c: u8) -> Option<Self> {
        match c {
            1 => Some(AudioCodec::Opus),
            2 => Some(AudioCodec::PcmS16),
            3 => Some(AudioCodec::PcmF32),
            _ => None,
        }
    }

    /// Lower-case name, as the CLI and Python take it (`opus`, `s16`, `f32`).
    pub fn name(self) -> &'static str {
        match self {
            AudioCodec::Opus => "opus",
            AudioCodec::PcmS16 => "s16",
            AudioCodec::PcmF32 => "f32",
        }
    }
}

impl std::str::FromStr for AudioCodec {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "opus" => Ok(AudioCodec::Opus),
            "s16" | "pcm" | "int16" => Ok(AudioCodec::PcmS16),
            "f32" | "float32" => Ok(AudioCodec::PcmF32),
            other => Err(format!(
                "unknown audio codec {other:?}: use opus, s16 or f32"
            )),
        }
    }
}

/// The format of one session's audio, both directions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct AudioFormat {
    /// Samples per second per channel (one of [`RATES`]).
    pub rate: u32,
    /// 1 or 2.
    pub channels: u8,
    /// How samples travel.
    pub codec: AudioCodec,
    /// Duration of one packet, ms (one of [`FRAME_MS`]).
    pub frame_ms: u8,
}

impl AudioFormat {
    /// 48 kHz mono Opus in 20 ms frames: what the stock player and most robots' speech use.
    pub const DEFAULT: AudioFormat = AudioFormat {
        rate: 48_000,
        channels: 1,
        codec: AudioCodec::Opus,
        frame_ms: 20,
    };

    /// Samples per channel in one packet.
    pub fn frame_samples(&self) -> usize {
        self.rate as usize * usize::from(self.frame_ms) / 1000
    }

    /// Why this format cannot be used, if it cannot.
    pub fn check(&self) -> Result<(), String> {
        if !RATES.contains(&self.rate) {
            return Err(format!(
                "{} Hz is not a session rate: use one of {RATES:?}",
                self.rate
            ));
        }
        if self.channels == 0 || self.channels > MAX_CHANNELS {
            return Err(format!("{} channels: sessions carry 1 or 2", self.channels));
        }
        if !FRAME_MS.contains(&self.frame_ms) {
            return Err(format!(
                "{} ms frames: use one of {FRAME_MS:?}",
                self.frame_ms
            ));
        }
        Ok(())
    }

    /// Largest payload one packet of this format may carry (PCM size; Opus is far smaller).
    pub fn max_payload(&self) -> usize {
        self.frame_samples() * usize::from(self.channels) * 4
    }

    fn put(&self, b: &mut impl BufMut) {
        b.put_u32(self.rate);
        b.put_u8(self.channels);
        b.put_u8(self.codec.to_code());
        b.put_u8(self.frame_ms);
    }

    /// A hello's format: 0 for the rate or channels means "the device's".
    fn get_wanted(b: &mut impl Buf) -> Result<Self, DecodeError> {
        let mut f = Self::get_unchecked(b)?;
        let (rate, channels) = (f.rate, f.channels);
        f.rate = if rate == 0 { Self::DEFAULT.rate } else { rate };
        f.channels = if channels == 0 { 1 } else { channels };
        f.check().map_err(|_| DecodeError::Invalid {
            field: "format",
            reason: "rate, channels or frame duration out of range",
        })?;
        f.rate = rate;
        f.channels = channels;
        Ok(f)
    }

    fn get(b: &mut impl Buf) -> Result<Self, DecodeError> {
        let f = Self::get_unchecked(b)?;
        f.check().map_err(|_| DecodeError::Invalid {
            field: "format",
            reason: "rate, channels or frame duration out of range",
        })?;
        Ok(f)
    }

    fn get_unchecked(b: &mut impl Buf) -> Result<Self, DecodeError> {
        let rate = get_u32(b)?;
        let channels = get_u8(b)?;
        let codec = AudioCodec::from_code(get_u8(b)?).ok_or(DecodeError::Invalid {
            field: "codec",
            reason: "unknown audio codec",
        })?;
        let frame_ms = get_u8(b)?;
        Ok(AudioFormat {
            rate,
            channels,
            codec,
            frame_ms,
        })
    }
}

/// One packet of audio.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AudioPacket {
    /// Index of the packet's first sample (per channel) in its direction's stream, counted
    /// from the start of the source: consecutive packets differ by exactly one frame.
    pub first_sample: u64,
    /// Capture time on the sender's clock, µs since the Unix epoch (0 when unknown).
    pub capture_us: u64,
    /// Encoded samples, in the session's codec.
    pub payload: Bytes,
}

impl AudioPacket {
    fn payload_len(&self) -> usize {
        16 + self.payload.len()
    }

    fn put(&self, b: &mut impl BufMut) {
        Frame::put_header(b, PACKET, self.payload_len());
        b.put_u64(self.first_sample);
        b.put_u64(self.capture_us);
        b.put_slice(&self.payload);
    }

    fn get(p: &mut Bytes) -> Result<Self, DecodeError> {
        let first_sample = get_u64(p)?;
        let capture_us = get_u64(p)?;
        Ok(AudioPacket {
            first_sample,
            capture_us,
            payload: p.split_off(0),
        })
    }
}

/// Client → server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientMsg {
    /// Open the session.
    Hello {
        /// [`VERSION`].
        version: u16,
        /// Receive the microphone.
        listen: bool,
        /// Send to the speaker (one talker at a time).
        talk: bool,
        /// Take the speaker from its current talker instead of being refused.
        takeover: bool,
        /// The format wanted; a `rate` or `channels` of 0 takes the device's.
        format: AudioFormat,
    },
    /// Audio for the speaker.
    Packet(AudioPacket),
    /// Clock probe.
    Ping {
        /// Echoed.
        id: u32,
        /// The client's clock.
        client_us: u64,
    },
}

/// Server → client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ServerMsg {
    /// The session is open in this format.
    Welcome {
        /// [`VERSION`].
        version: u16,
        /// The format in force, both directions.
        format: AudioFormat,
        /// The server's clock when it answered.
        server_us: u64,
        /// The device served (e.g. `sim:tone:440`).
        device: String,
    },
    /// The session is refused; the last message.
    Refused {
        /// A [`RefuseCode`](crate::RefuseCode) value.
        code: u16,
        /// What happened and what to do.
        message: String,
    },
    /// Audio from the microphone.
    Packet(AudioPacket),
    /// Answer to a ping.
    Pong {
        /// The ping's id.
        id: u32,
        /// The ping's client time.
        client_us: u64,
        /// The server's clock.
        server_us: u64,
    },
}

impl ClientMsg {
    /// Append the encoded message.
    pub fn encode(&self, b: &mut impl BufMut) {
        match self {
            ClientMsg::Hello {
                version,
                listen,
                talk,
                takeover,
                format,
            } => {
                Frame::put_header(b, session_kind::HELLO, 5 + 7);
                b.put_u16(*version);
                b.put_u8(u8::from(*listen));
                b.put_u8(u8::from(*talk));
                b.put_u8(u8::from(*takeover));
                format.put(b);
            }
            ClientMsg::Packet(p) => p.put(b),
            ClientMsg::Ping { id, client_us } => {
                Frame::put_header(b, session_kind::PING, 12);
                b.put_u32(*id);
                b.put_u64(*client_us);
            }
        }
    }

    /// Decode one message from the front of `buf`; [`DecodeError::Short`] consumes nothing.
    pub fn decode(buf: &mut BytesMut) -> Result<ClientMsg, DecodeError> {
        let f = Frame::decode(buf)?;
        let mut p = f.payload;
        let msg = match f.kind {
            session_kind::HELLO => (|| {
                let version = get_u16(&mut p)?;
                let listen = get_bool(&mut p, "listen")?;
                let talk = get_bool(&mut p, "talk")?;
                let takeover = get_bool(&mut p, "takeover")?;
                let format = AudioFormat::get_wanted(&mut p)?;
                Ok(ClientMsg::Hello {
                    version,
                    listen,
                    talk,
                    takeover,
                    format,
                })
            })(),
            PACKET => AudioPacket::get(&mut p).map(ClientMsg::Packet),
            session_kind::PING => (|| {
                Ok(ClientMsg::Ping {
                    id: get_u32(&mut p)?,
                    client_us: get_u64(&mut p)?,
                })
            })(),
            k => return Err(DecodeError::UnknownKind(k)),
        };
        finish_exact(p.remaining(), msg)
    }
}

impl ServerMsg {
    /// Append the encoded message.
    pub fn encode(&self, b: &mut impl BufMut) {
        match self {
            ServerMsg::Welcome {
                version,
                format,
                server_us,
                device,
            } => {
                Frame::put_header(b, session_kind::WELCOME, 2 + 7 + 8 + string_len(device));
                b.put_u16(*version);
                format.put(b);
                b.put_u64(*server_us);
                put_string(b, device);
            }
            ServerMsg::Refused { code, message } => {
                Frame::put_header(b, session_kind::REFUSED, 2 + string_len(message));
                b.put_u16(*code);
                put_string(b, message);
            }
            ServerMsg::Packet(p) => p.put(b),
            ServerMsg::Pong {
                id,
                client_us,
                server_us,
            } => {
                Frame::put_header(b, session_kind::PONG, 20);
                b.put_u32(*id);
                b.put_u64(*client_us);
                b.put_u64(*server_us);
            }
        }
    }

    /// Decode one message from the front of `buf`; [`DecodeError::Short`] consumes nothing.
    pub fn decode(buf: &mut BytesMut) -> Result<ServerMsg, DecodeError> {
        let f = Frame::decode(buf)?;
        let mut p = f.payload;
        let msg = match f.kind {
            session_kind::WELCOME => (|| {
                Ok(ServerMsg::Welcome {
                    version: get_u16(&mut p)?,
                    format: AudioFormat::get(&mut p)?,
                    server_us: get_u64(&mut p)?,
                    device: get_string(&mut p, "device")?,
                })
            })(),
            session_kind::REFUSED => (|| {
                Ok(ServerMsg::Refused {
                    code: get_u16(&mut p)?,
                    message: get_string(&mut p, "message")?,
                })
            })(),
            PACKET => AudioPacket::get(&mut p).map(ServerMsg::Packet),
            session_kind::PONG => (|| {
                Ok(ServerMsg::Pong {
                    id: get_u32(&mut p)?,
                    client_us: get_u64(&mut p)?,
                    server_us: get_u64(&mut p)?,
                })
            })(),
            k => return Err(DecodeError::UnknownKind(k)),
        };
        finish_exact(p.remaining(), msg)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn fmt() -> impl Strategy<Value = AudioFormat> {
        (
            proptest::sample::select(RATES.to_vec()),
            1u8..=2,
            proptest::sample::select(vec![
                AudioCodec::Opus,
                AudioCodec::PcmS16,
                AudioCodec::PcmF32,
            ]),
            proptest::sample::select(FRAME_MS.to_vec()),
        )
            .prop_map(|(rate, channels, codec, frame_ms)| AudioFormat {
                rate,
                channels,
                codec,
                frame_ms,
            })
    }

    #[test]
    fn hello_snapshot() {
        let mut b = Vec::new();
        ClientMsg::Hello {
            version: 1,
            listen: true,
            talk: false,
            takeover: false,
            format: AudioFormat::DEFAULT,
        }
        .encode(&mut b);
        assert_eq!(b, [0x01, 12, 0, 1, 1, 0, 0, 0, 0, 0xBB, 0x80, 1, 1, 20]);
    }

    #[test]
    fn packet_snapshot() {
        let mut b = Vec::new();
        ServerMsg::Packet(AudioPacket {
            first_sample: 960,
            capture_us: 1,
            payload: Bytes::from_static(&[9, 8]),
        })
        .encode(&mut b);
        assert_eq!(
            b,
            [
                0x10, 18, 0, 0, 0, 0, 0, 0, 3, 0xC0, 0, 0, 0, 0, 0, 0, 0, 1, 9, 8
            ]
        );
    }

    #[test]
    fn a_format_out_of_range_is_refused_by_the_decoder() {
        let mut b = BytesMut::new();
        ClientMsg::Hello {
            version: 1,
            listen: true,
            talk: false,
            takeover: false,
            format: AudioFormat {
                rate: 44_100,
                ..AudioFormat::DEFAULT
            },
        }
        .encode(&mut b);
        assert!(matches!(
            ClientMsg::decode(&mut b),
            Err(DecodeError::Invalid {
                field: "format",
                ..
            })
        ));
    }

    proptest! {
        #[test]
        fn client_roundtrip(format in fmt(), server_rate: bool, listen: bool, talk: bool,
                            takeover: bool, first: u64, cap: u64,
                            payload in proptest::collection::vec(any::<u8>(), 0..2000)) {
            let format = if server_rate { AudioFormat { rate: 0, channels: 0, ..format } } else { format };
            for m in [
                ClientMsg::Hello { version: VERSION, listen, talk, takeover, format },
                ClientMsg::Packet(AudioPacket { first_sample: first, capture_us: cap, payload: Bytes::from(payload.clone()) }),
                ClientMsg::Ping { id: first as u32, client_us: cap },
            ] {
                let mut b = BytesMut::new();
                m.encode(&mut b);
                for cut in 0..b.len() {
                    let mut p = BytesMut::from(&b[..cut]);
                    prop_assert_eq!(ClientMsg::decode(&mut p), Err(DecodeError::Short));
                    prop_assert_eq!(p.len(), cut);
                }
                prop_assert_eq!(ClientMsg::decode(&mut b).expect("whole"), m);
                prop_assert!(b.is_empty());
            }
        }

        #[test]
        fn server_roundtrip(format in fmt(), s: u64, device in "[a-z:0-9]{0,20}", code: u16,
                            payload in proptest::collection::vec(any::<u8>(), 0..2000)) {
            for m in [
                ServerMsg::Welcome { version: VERSION, format, server_us: s, device: device.clone() },
                ServerMsg::Refused { code, message: device.clone() },
                ServerMsg::Packet(AudioPacket { first_sample: s, capture_us: s / 2, payload: Bytes::from(payload.clone()) }),
                ServerMsg::Pong { id: code.into(), client_us: s, server_us: s / 3 },
            ] {
                let mut b = BytesMut::new();
                m.encode(&mut b);
                prop_assert_eq!(ServerMsg::decode(&mut b).expect("whole"), m);
                prop_assert!(b.is_empty());
            }
        }

        /// Total: any bytes give a message, Short, or an error; never a panic, and nothing
        /// is buffered past the envelope's bound.
        #[test]
        fn decoders_are_total(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let mut a = BytesMut::from(&bytes[..]);
            let _ = ClientMsg::decode(&mut a);
            let mut b = BytesMut::from(&bytes[..]);
            let _ = ServerMsg::decode(&mut b);
        }
    }
}
