//! Serial bridge protocol (P2P, ALPN [`ALPN`]): one bidirectional QUIC stream per session.
//!
//! The client opens the stream and sends [`ClientMsg::Hello`]; the server answers
//! [`ServerMsg::Welcome`] (the client now controls the port) or [`ServerMsg::Refused`].
//! Afterwards both sides send [`ClientMsg::Data`]/[`ServerMsg::Data`] freely.
//!
//! Flow control is explicit so that control operations never wait behind data: the client
//! keeps at most [`Welcome::window`] bytes of data that the device has not accepted yet in
//! flight, and the server reports what the device accepted with [`ServerMsg::Ack`]. The
//! server can therefore always read the stream to its end (its queue for this session holds
//! a whole window), so a [`Request`] is seen at once even when the device stopped taking
//! bytes (XOFF, CTS low). Each [`Request`] gets one [`ServerMsg::Reply`] with the same id.
//!
//! Clocks: [`ClientMsg::Ping`] / [`ServerMsg::Pong`] let the client estimate its offset to the
//! server's clock.
//!
//! Over a relay the serial bridge carries bytes in the relay session protocol
//! ([`crate::relay`]); this module is the P2P protocol.

use bytes::{Buf, BufMut, Bytes, BytesMut};

use crate::coding::{
    DecodeError, finish_exact, get_bool, get_string, get_u8, get_u16, get_u32, get_u64, put_string,
    string_len,
};
use crate::frame::{Frame, MAX_PAYLOAD};

/// ALPN of the serial protocol; the trailing number is the major version.
pub const ALPN: &[u8] = b"xoq/serial/1";
/// Protocol version carried in the handshake (minor revisions within [`ALPN`]). Version 2
/// added the handle, the write window with acks, and clock pings.
pub const VERSION: u16 = 2;
/// Largest data chunk a sender puts in one message.
pub const MAX_DATA_CHUNK: usize = 64 * 1024;

/// Number of data bits per character.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DataBits {
    /// 5 bits.
    Five,
    /// 6 bits.
    Six,
    /// 7 bits.
    Seven,
    /// 8 bits (the default).
    Eight,
}

/// Parity checking mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Parity {
    /// No parity bit (the default).
    None,
    /// Odd parity.
    Odd,
    /// Even parity.
    Even,
}

/// Number of stop bits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum StopBits {
    /// One stop bit (the default).
    One,
    /// Two stop bits.
    Two,
}

/// Flow control mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FlowControl {
    /// No flow control (the default).
    None,
    /// XON/XOFF.
    Software,
    /// RTS/CTS.
    Hardware,
}

/// Line settings of a serial port. Timeouts are not here: they are the client's business.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct LineSettings {
    /// Baud rate in bits per second (any value the device accepts, not only standard ones).
    pub baud_rate: u32,
    /// Data bits.
    pub data_bits: DataBits,
    /// Parity.
    pub parity: Parity,
    /// Stop bits.
    pub stop_bits: StopBits,
    /// Flow control.
    pub flow_control: FlowControl,
}

impl LineSettings {
    /// 8N1, no flow control, at `baud_rate`: what almost every device uses.
    pub fn new(baud_rate: u32) -> Self {
        Self {
            baud_rate,
            data_bits: DataBits::Eight,
            parity: Parity::None,
            stop_bits: StopBits::One,
            flow_control: FlowControl::None,
        }
    }

    const ENCODED_LEN: usize = 8;

    fn encode(&self, buf: &mut impl BufMut) {
        buf.put_u32(self.baud_rate);
        buf.put_u8(match self.data_bits {
            DataBits::Five => 5,
            DataBits::Six => 6,
            DataBits::Seven => 7,
            DataBits::Eight => 8,
        });
        buf.put_u8(match self.parity {
            Parity::None => 0,
            Parity::Odd => 1,
            Parity::Even => 2,
        });
        buf.put_u8(match self.stop_bits {
            StopBits::One => 1,
            StopBits::Two => 2,
        });
        buf.put_u8(match self.flow_control {
            FlowControl::None => 0,
            FlowControl::Software => 1,
            FlowControl::Hardware => 2,
        });
    }

    fn decode(buf: &mut impl Buf) -> Result<Self, DecodeError> {
        let baud_rate = get_u32(buf)?;
        if baud_rate == 0 {
            return Err(DecodeError::Invalid {
                field: "baud_rate",
                reason: "must be positive",
            });
        }
        let data_bits = match get_u8(buf)? {
            5 => DataBits::Five,
            6 => DataBits::Six,
            7 => DataBits::Seven,
            8 => DataBits::Eight,
            _ => return Err(invalid("data_bits", "must be 5, 6, 7 or 8")),
        };
        let parity = match get_u8(buf)? {
            0 => Parity::None,
            1 => Parity::Odd,
            2 => Parity::Even,
            _ => return Err(invalid("parity", "must be 0 (none), 1 (odd) or 2 (even)")),
        };
        let stop_bits = match get_u8(buf)? {
            1 => StopBits::One,
            2 => StopBits::Two,
            _ => return Err(invalid("stop_bits", "must be 1 or 2")),
        };
        let flow_control = match get_u8(buf)? {
            0 => FlowControl::None,
            1 => FlowControl::Software,
            2 => FlowControl::Hardware,
            _ => return Err(invalid("flow_control", "must be 0, 1 or 2")),
        };
        Ok(Self {
            baud_rate,
            data_bits,
            parity,
            stop_bits,
            flow_control,
        })
    }
}

fn invalid(field: &'static str, reason: &'static str) -> DecodeError {
    DecodeError::Invalid { field, reason }
}

/// First message of a session, client to server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hello {
    /// Client protocol version ([`VERSION`]).
    pub version: u16,
    /// Settings to apply on open; `None` keeps the port's current settings.
    pub settings: Option<LineSettings>,
    /// Free-form client description for the server's logs ("pyserial", "serial-pty", ...).
    pub client: String,
    /// Identifies one open handle across its reconnections (random, chosen by the client).
    /// The same endpoint id with the same handle is a reconnection and silently replaces the
    /// stale session; the same endpoint id with another handle is a new open of the port,
    /// which replaces the old handle (as a second `open()` of a local port does).
    pub handle: u64,
    /// pyserial's `exclusive`: while this handle holds the port, another handle of the same
    /// identity is refused (busy) instead of replacing it, as `flock` makes a second exclusive
    /// open of a local port fail.
    pub exclusive: bool,
}

/// Server's acceptance: the client now controls the port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Welcome {
    /// Server protocol version.
    pub version: u16,
    /// The port's settings after applying the client's.
    pub settings: LineSettings,
    /// Name of the served port (device path or `sim:...`).
    pub port: String,
    /// Bytes of data the client may have in flight that the device has not accepted yet
    /// (see [`ServerMsg::Ack`]).
    pub window: u32,
    /// The server's clock (µs since the Unix epoch) when it sent the welcome: a first clock
    /// offset estimate before any ping.
    pub server_us: u64,
}

/// Why a server refused a session: the codes shared by every service.
pub use crate::refuse::RefuseCode;

/// Which buffers to discard.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ClearBuffer {
    /// Received but unread bytes.
    Input,
    /// Written but untransmitted bytes.
    Output,
    /// Both.
    All,
}

/// A control operation on the remote port.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Command {
    /// Change line settings (baud rate, framing, flow control).
    SetSettings(LineSettings),
    /// Wait until everything written so far has been handed to the device and transmitted.
    Drain,
    /// Discard buffered bytes on the server and in the device.
    Clear(ClearBuffer),
    /// Hold the line in break for this many milliseconds.
    Break(u32),
    /// Set DTR.
    SetDtr(bool),
    /// Set RTS.
    SetRts(bool),
}

/// A numbered control request; answered by a [`ServerMsg::Reply`] with the same id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    /// Chosen by the client, echoed in the reply.
    pub id: u32,
    /// What to do.
    pub command: Command,
}

/// Outcome of a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    /// The request's id.
    pub id: u32,
    /// `None` on success, else the device's error message (e.g. "DTR not supported by a pty").
    pub error: Option<String>,
}

/// Asynchronous notices from the server.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Event {
    /// The device disappeared (unplugged, I/O error); the server keeps trying to reopen it.
    DeviceLost(String),
    /// The device is back and open with the session's settings.
    DeviceRestored,
    /// This many bytes from the device were dropped because the client read too slowly.
    Dropped(u64),
    /// Another client took the port over (server runs with `--takeover`), or this client's
    /// identity opened it again from another handle; the stream ends.
    TakenOver(String),
}

/// Messages from client to server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientMsg {
    /// Handshake.
    Hello(Hello),
    /// Bytes to write to the port.
    Data(Bytes),
    /// Control operation.
    Request(Request),
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
    Welcome(Welcome),
    /// Handshake refused; the server closes the stream after this.
    Refused {
        /// Stable reason code.
        code: RefuseCode,
        /// Human-readable explanation with what to do.
        message: String,
    },
    /// Bytes read from the port.
    Data(Bytes),
    /// Outcome of a [`Request`].
    Reply(Reply),
    /// Notice.
    Event(Event),
    /// Total bytes of this session's data the device has accepted (or a clear discarded):
    /// the client may send up to `acked + window`.
    Ack(u64),
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
    pub(super) const DATA: u8 = 0x10;
    pub(super) const ACK: u8 = 0x11;
    pub(super) const REQUEST: u8 = 0x20;
    pub(super) const REPLY: u8 = 0x21;
    pub(super) const EVENT: u8 = 0x30;
}

impl ClientMsg {
    /// Encoded size in bytes.
    pub fn encoded_len(&self) -> usize {
        Frame::encoded_len(self.payload_len())
    }

    fn payload_len(&self) -> usize {
        match self {
            ClientMsg::Hello(h) => {
                2 + 1
                    + h.settings.map_or(0, |_| LineSettings::ENCODED_LEN)
                    + string_len(&h.client)
                    + 8
                    + 1
            }
            ClientMsg::Data(d) => d.len(),
            ClientMsg::Request(r) => 4 + command_len(&r.command),
            ClientMsg::Ping { .. } => 12,
        }
    }

    /// Append the framed message to `buf`. Data longer than [`MAX_DATA_CHUNK`] must be split
    /// by the caller (see [`ClientMsg::data_chunks`]).
    pub fn encode(&self, buf: &mut impl BufMut) {
        match self {
            ClientMsg::Hello(h) => {
                Frame::put_header(buf, kind::HELLO, self.payload_len());
                buf.put_u16(h.version);
                match &h.settings {
                    Some(s) => {
                        buf.put_u8(1);
                        s.encode(buf);
                    }
                    None => buf.put_u8(0),
                }
                put_string(buf, &h.client);
                buf.put_u64(h.handle);
                buf.put_u8(u8::from(h.exclusive));
            }
            ClientMsg::Data(d) => {
                Frame::put_header(buf, kind::DATA, d.len());
                buf.put_slice(d);
            }
            ClientMsg::Request(r) => {
                Frame::put_header(buf, kind::REQUEST, self.payload_len());
                buf.put_u32(r.id);
                encode_command(&r.command, buf);
            }
            ClientMsg::Ping { id, client_us } => {
                Frame::put_header(buf, kind::PING, self.payload_len());
                buf.put_u32(*id);
                buf.put_u64(*client_us);
            }
        }
    }

    /// Split `data` into `Data` messages of at most [`MAX_DATA_CHUNK`] bytes.
    pub fn data_chunks(data: Bytes) -> impl Iterator<Item = ClientMsg> {
        chunks(data).map(ClientMsg::Data)
    }

    /// Decode one message from the front of `buf`; `Short` leaves `buf` untouched.
    pub fn decode(buf: &mut BytesMut) -> Result<Self, DecodeError> {
        let Frame { kind, mut payload } = Frame::decode(buf)?;
        let p = &mut payload;
        match kind {
            kind::HELLO => {
                let version = finish_exact(0, get_u16(p))?;
                if version != VERSION {
                    // Another version's layout: report the version only, so the server can
                    // refuse with a clear message instead of a parse error.
                    return Ok(ClientMsg::Hello(Hello {
                        version,
                        settings: None,
                        client: String::new(),
                        handle: 0,
                        exclusive: false,
                    }));
                }
                let v = (|| {
                    let settings = if get_bool(p, "has_settings")? {
                        Some(LineSettings::decode(p)?)
                    } else {
                        None
                    };
                    let client = get_string(p, "client")?;
                    let handle = get_u64(p)?;
                    let exclusive = get_bool(p, "exclusive")?;
                    Ok(ClientMsg::Hello(Hello {
                        version,
                        settings,
                        client,
                        handle,
                        exclusive,
                    }))
                })();
                finish_exact(p.len(), v)
            }
            kind::PING => {
                let v = (|| {
                    Ok(ClientMsg::Ping {
                        id: get_u32(p)?,
                        client_us: get_u64(p)?,
                    })
                })();
                finish_exact(p.len(), v)
            }
            kind::DATA => Ok(ClientMsg::Data(payload)),
            kind::REQUEST => {
                let v = (|| {
                    let id = get_u32(p)?;
                    let command = decode_command(p)?;
                    Ok(ClientMsg::Request(Request { id, command }))
                })();
                finish_exact(p.len(), v)
            }
            k => Err(DecodeError::UnknownKind(k)),
        }
    }
}

fn chunks(mut data: Bytes) -> impl Iterator<Item = Bytes> {
    std::iter::from_fn(move || {
        if data.is_empty() {
            return None;
        }
        let n = data.len().min(MAX_DATA_CHUNK);
        Some(data.split_to(n))
    })
}

fn command_len(c: &Command) -> usize {
    1 + match c {
        Command::SetSettings(_) => LineSettings::ENCODED_LEN,
        Command::Drain => 0,
        Command::Clear(_) => 1,
        Command::Break(_) => 4,
        Command::SetDtr(_) | Command::SetRts(_) => 1,
    }
}

fn encode_command(c: &Command, buf: &mut impl BufMut) {
    match c {
        Command::SetSettings(s) => {
            buf.put_u8(1);
            s.encode(buf);
        }
        Command::Drain => buf.put_u8(2),
        Command::Clear(which) => {
            buf.put_u8(3);
            buf.put_u8(match which {
                ClearBuffer::Input => 1,
                ClearBuffer::Output => 2,
                ClearBuffer::All => 3,
            });
        }
        Command::Break(ms) => {
            buf.put_u8(4);
            buf.put_u32(*ms);
        }
        Command::SetDtr(on) => {
            buf.put_u8(5);
            buf.put_u8(u8::from(*on));
        }
        Command::SetRts(on) => {
            buf.put_u8(6);
            buf.put_u8(u8::from(*on));
        }
    }
}

fn decode_command(p: &mut impl Buf) -> Result<Command, DecodeError> {
    Ok(match get_u8(p)? {
        1 => Command::SetSettings(LineSettings::decode(p)?),
        2 => Command::Drain,
        3 => Command::Clear(match get_u8(p)? {
            1 => ClearBuffer::Input,
            2 => ClearBuffer::Output,
            3 => ClearBuffer::All,
            _ => return Err(invalid("clear", "must be 1, 2 or 3")),
        }),
        4 => Command::Break(get_u32(p)?),
        5 => Command::SetDtr(get_bool(p, "dtr")?),
        6 => Command::SetRts(get_bool(p, "rts")?),
        _ => return Err(invalid("command", "unknown command")),
    })
}

impl ServerMsg {
    /// Encoded size in bytes.
    pub fn encoded_len(&self) -> usize {
        Frame::encoded_len(self.payload_len())
    }

    fn payload_len(&self) -> usize {
        match self {
            ServerMsg::Welcome(w) => 2 + LineSettings::ENCODED_LEN + string_len(&w.port) + 4 + 8,
            ServerMsg::Refused { message, .. } => 2 + string_len(message),
            ServerMsg::Data(d) => d.len(),
            ServerMsg::Reply(r) => 4 + 1 + r.error.as_deref().map_or(0, string_len),
            ServerMsg::Event(e) => {
                1 + match e {
                    Event::DeviceLost(s) | Event::TakenOver(s) => string_len(s),
                    Event::DeviceRestored => 0,
                    Event::Dropped(_) => 8,
                }
            }
            ServerMsg::Ack(_) => 8,
            ServerMsg::Pong { .. } => 20,
        }
    }

    /// Append the framed message to `buf` (data must be at most [`MAX_DATA_CHUNK`] bytes; see
    /// [`ServerMsg::data_chunks`]).
    pub fn encode(&self, buf: &mut impl BufMut) {
        let len = self.payload_len();
        match self {
            ServerMsg::Welcome(w) => {
                Frame::put_header(buf, kind::WELCOME, len);
                buf.put_u16(w.version);
                w.settings.encode(buf);
                put_string(buf, &w.port);
                buf.put_u32(w.window);
                buf.put_u64(w.server_us);
            }
            ServerMsg::Refused { code, message } => {
                Frame::put_header(buf, kind::REFUSED, len);
                buf.put_u16(code.to_code());
                put_string(buf, message);
            }
            ServerMsg::Data(d) => {
                Frame::put_header(buf, kind::DATA, len);
                buf.put_slice(d);
            }
            ServerMsg::Reply(r) => {
                Frame::put_header(buf, kind::REPLY, len);
                buf.put_u32(r.id);
                match &r.error {
                    None => buf.put_u8(0),
                    Some(e) => {
                        buf.put_u8(1);
                        put_string(buf, e);
                    }
                }
            }
            ServerMsg::Event(e) => {
                Frame::put_header(buf, kind::EVENT, len);
                match e {
                    Event::DeviceLost(s) => {
                        buf.put_u8(1);
                        put_string(buf, s);
                    }
                    Event::DeviceRestored => buf.put_u8(2),
                    Event::Dropped(n) => {
                        buf.put_u8(3);
                        buf.put_u64(*n);
                    }
                    Event::TakenOver(s) => {
                        buf.put_u8(4);
                        put_string(buf, s);
                    }
                }
            }
            ServerMsg::Ack(n) => {
                Frame::put_header(buf, kind::ACK, len);
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
        }
    }

    /// Split `data` into `Data` messages of at most [`MAX_DATA_CHUNK`] bytes.
    pub fn data_chunks(data: Bytes) -> impl Iterator<Item = ServerMsg> {
        chunks(data).map(ServerMsg::Data)
    }

    /// Decode one message from the front of `buf`; `Short` leaves `buf` untouched.
    pub fn decode(buf: &mut BytesMut) -> Result<Self, DecodeError> {
        let Frame { kind, mut payload } = Frame::decode(buf)?;
        let p = &mut payload;
        let v = match kind {
            kind::DATA => return Ok(ServerMsg::Data(payload)),
            kind::WELCOME => (|| {
                let version = get_u16(p)?;
                if version != VERSION {
                    // Another version's layout: the client reports the version mismatch.
                    p.advance(p.len());
                    return Ok(ServerMsg::Welcome(Welcome {
                        version,
                        settings: LineSettings::new(115_200),
                        port: String::new(),
                        window: 0,
                        server_us: 0,
                    }));
                }
                Ok(ServerMsg::Welcome(Welcome {
                    version,
                    settings: LineSettings::decode(p)?,
                    port: get_string(p, "port")?,
                    window: get_u32(p)?,
                    server_us: get_u64(p)?,
                }))
            })(),
            kind::ACK => get_u64(p).map(ServerMsg::Ack),
            kind::PONG => (|| {
                Ok(ServerMsg::Pong {
                    id: get_u32(p)?,
                    client_us: get_u64(p)?,
                    server_us: get_u64(p)?,
                })
            })(),
            kind::REFUSED => (|| {
                Ok(ServerMsg::Refused {
                    code: RefuseCode::from_code(get_u16(p)?),
                    message: get_string(p, "message")?,
                })
            })(),
            kind::REPLY => (|| {
                let id = get_u32(p)?;
                let error = if get_bool(p, "has_error")? {
                    Some(get_string(p, "error")?)
                } else {
                    None
                };
                Ok(ServerMsg::Reply(Reply { id, error }))
            })(),
            kind::EVENT => (|| {
                Ok(ServerMsg::Event(match get_u8(p)? {
                    1 => Event::DeviceLost(get_string(p, "reason")?),
                    2 => Event::DeviceRestored,
                    3 => Event::Dropped(get_u64(p)?),
                    4 => Event::TakenOver(get_string(p, "by")?),
                    _ => return Err(invalid("event", "unknown event")),
                }))
            })(),
            k => return Err(DecodeError::UnknownKind(k)),
        };
        finish_exact(p.len(), v)
    }
}

// Keep the chunk limit honest relative to the envelope limit.
const _: () = assert!(MAX_DATA_CHUNK <= MAX_PAYLOAD);

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn enc_c(m: &ClientMsg) -> Vec<u8> {
        let mut b = Vec::new();
        m.encode(&mut b);
        b
    }
    fn enc_s(m: &ServerMsg) -> Vec<u8> {
        let mut b = Vec::new();
        m.encode(&mut b);
        b
    }

    #[test]
    fn hello_snapshot() {
        let m = ClientMsg::Hello(Hello {
            version: 2,
            settings: Some(LineSettings::new(1_000_000)),
            client: "py".into(),
            handle: 0x0102,
            exclusive: true,
        });
        assert_eq!(
            hex(&enc_c(&m)),
            "0117000201000f424008000100027079000000000000010201"
        );
        // A version-1 hello decodes to its version only, so the server can say "upgrade".
        let mut v1 =
            BytesMut::from(&b"\x01\x0e\x00\x01\x01\x00\x0f\x42\x40\x08\x00\x01\x00\x02py"[..]);
        assert!(matches!(
            ClientMsg::decode(&mut v1),
            Ok(ClientMsg::Hello(Hello { version: 1, .. }))
        ));
        assert!(v1.is_empty());
    }

    #[test]
    fn reply_and_data_snapshot() {
        let m = ServerMsg::Reply(Reply {
            id: 7,
            error: Some("no".into()),
        });
        assert_eq!(hex(&enc_s(&m)), "2108000000070102 6e6f".replace(' ', ""));
        let d = ServerMsg::Data(Bytes::from_static(&[0xff, 0xff]));
        assert_eq!(hex(&enc_s(&d)), "1002ffff");
    }

    #[test]
    fn trailing_bytes_rejected() {
        let mut b = enc_c(&ClientMsg::Request(Request {
            id: 1,
            command: Command::Drain,
        }));
        // Grow the declared payload by one byte and append garbage.
        b[1] += 1;
        b.push(0);
        let mut bm = BytesMut::from(&b[..]);
        assert_eq!(ClientMsg::decode(&mut bm), Err(DecodeError::Long(1)));
    }

    #[test]
    fn truncated_payload_is_invalid_not_short() {
        // A REQUEST frame whose payload is only 2 bytes.
        let mut bm = BytesMut::from(&[0x20, 0x02, 0x00, 0x00][..]);
        assert!(matches!(
            ClientMsg::decode(&mut bm),
            Err(DecodeError::Invalid { .. })
        ));
    }

    fn hex(b: &[u8]) -> String {
        b.iter().map(|x| format!("{x:02x}")).collect()
    }

    fn settings() -> impl Strategy<Value = LineSettings> {
        (
            1u32..=u32::MAX,
            prop_oneof![
                Just(DataBits::Five),
                Just(DataBits::Six),
                Just(DataBits::Seven),
                Just(DataBits::Eight)
            ],
            prop_oneof![Just(Parity::None), Just(Parity::Odd), Just(Parity::Even)],
            prop_oneof![Just(StopBits::One), Just(StopBits::Two)],
            prop_oneof![
                Just(FlowControl::None),
                Just(FlowControl::Software),
                Just(FlowControl::Hardware)
            ],
        )
            .prop_map(|(baud_rate, data_bits, parity, stop_bits, flow_control)| {
                LineSettings {
                    baud_rate,
                    data_bits,
                    parity,
                    stop_bits,
                    flow_control,
                }
            })
    }

    fn command() -> impl Strategy<Value = Command> {
        prop_oneof![
            settings().prop_map(Command::SetSettings),
            Just(Command::Drain),
            prop_oneof![
                Just(ClearBuffer::Input),
                Just(ClearBuffer::Output),
                Just(ClearBuffer::All)
            ]
            .prop_map(Command::Clear),
            any::<u32>().prop_map(Command::Break),
            any::<bool>().prop_map(Command::SetDtr),
            any::<bool>().prop_map(Command::SetRts),
        ]
    }

    fn client_msg() -> impl Strategy<Value = ClientMsg> {
        prop_oneof![
            (
                proptest::option::of(settings()),
                ".{0,40}",
                any::<u64>(),
                any::<bool>()
            )
                .prop_map(|(settings, client, handle, exclusive)| ClientMsg::Hello(
                    Hello {
                        version: VERSION,
                        settings,
                        client,
                        handle,
                        exclusive,
                    }
                )),
            (any::<u32>(), any::<u64>())
                .prop_map(|(id, client_us)| ClientMsg::Ping { id, client_us }),
            proptest::collection::vec(any::<u8>(), 0..3000)
                .prop_map(|v| ClientMsg::Data(Bytes::from(v))),
            (any::<u32>(), command())
                .prop_map(|(id, command)| ClientMsg::Request(Request { id, command })),
        ]
    }

    fn server_msg() -> impl Strategy<Value = ServerMsg> {
        prop_oneof![
            (settings(), ".{0,40}", any::<u32>(), any::<u64>()).prop_map(
                |(settings, port, window, server_us)| {
                    ServerMsg::Welcome(Welcome {
                        version: VERSION,
                        settings,
                        port,
                        window,
                        server_us,
                    })
                }
            ),
            any::<u64>().prop_map(ServerMsg::Ack),
            (any::<u32>(), any::<u64>(), any::<u64>()).prop_map(|(id, client_us, server_us)| {
                ServerMsg::Pong {
                    id,
                    client_us,
                    server_us,
                }
            }),
            (1u16..10, ".{0,80}").prop_map(|(c, message)| ServerMsg::Refused {
                code: RefuseCode::from_code(c),
                message
            }),
            proptest::collection::vec(any::<u8>(), 0..3000)
                .prop_map(|v| ServerMsg::Data(Bytes::from(v))),
            (any::<u32>(), proptest::option::of(".{0,40}"))
                .prop_map(|(id, error)| ServerMsg::Reply(Reply { id, error })),
            prop_oneof![
                ".{0,40}".prop_map(Event::DeviceLost),
                Just(Event::DeviceRestored),
                any::<u64>().prop_map(Event::Dropped),
                ".{0,40}".prop_map(Event::TakenOver),
            ]
            .prop_map(ServerMsg::Event),
        ]
    }

    /// Arbitrary bytes, or frames of the known kinds with arbitrary payloads followed by
    /// arbitrary bytes (so that decoding goes past the first frame, into the field decoders).
    fn arbitrary_or_framed() -> impl Strategy<Value = Vec<u8>> {
        let known = vec![1u8, 2, 3, 0x10, 0x11, 0x20, 0x21, 0x30, 0x40, 0x41];
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

    /// Decode `bytes` with `decode` until it stops, checking every step (see `decoders_total`).
    fn check_decoder<M: std::fmt::Debug + PartialEq + Clone>(
        bytes: &[u8],
        decode: fn(&mut BytesMut) -> Result<M, DecodeError>,
        encode: fn(&M) -> Vec<u8>,
        data: fn(&M) -> Option<&Bytes>,
    ) -> Result<(), TestCaseError> {
        let mut b = BytesMut::from(bytes);
        loop {
            let before = b.len();
            let envelope = Frame::check(&b);
            match decode(&mut b) {
                Ok(m) => {
                    let Ok(n) = envelope else {
                        return Err(TestCaseError::fail(format!(
                            "{m:?} decoded without a whole frame ({envelope:?})"
                        )));
                    };
                    prop_assert!(n > 0);
                    prop_assert_eq!(b.len(), before - n, "{:?} took exactly its frame", m);
                    if let Some(d) = data(&m) {
                        let start = bytes.len() - before;
                        let frame = Frame::decode(&mut BytesMut::from(&bytes[start..start + n]))
                            .expect("checked frame");
                        prop_assert_eq!(d, &frame.payload, "data is the frame's payload");
                    }
                    let again = encode(&m);
                    let mut again = BytesMut::from(&again[..]);
                    prop_assert_eq!(decode(&mut again), Ok(m.clone()), "{:?} re-encodes", m);
                    prop_assert!(again.is_empty());
                }
                Err(DecodeError::Short) => {
                    prop_assert_eq!(b.len(), before, "Short takes nothing");
                    prop_assert_eq!(envelope, Err(DecodeError::Short));
                    return Ok(());
                }
                Err(e) => {
                    match envelope {
                        // A bad payload in a whole frame: the frame is gone, nothing more.
                        Ok(n) => prop_assert_eq!(b.len(), before - n, "{:?}", e),
                        // A bad envelope: nothing taken.
                        Err(env) => {
                            prop_assert_eq!(&e, &env);
                            prop_assert_eq!(b.len(), before);
                        }
                    }
                    return Ok(());
                }
            }
        }
    }

    proptest! {
        #[test]
        fn client_roundtrip(m in client_msg()) {
            let b = enc_c(&m);
            prop_assert_eq!(b.len(), m.encoded_len());
            let mut bm = BytesMut::from(&b[..]);
            prop_assert_eq!(ClientMsg::decode(&mut bm), Ok(m));
            prop_assert!(bm.is_empty());
        }

        #[test]
        fn server_roundtrip(m in server_msg()) {
            let b = enc_s(&m);
            prop_assert_eq!(b.len(), m.encoded_len());
            let mut bm = BytesMut::from(&b[..]);
            prop_assert_eq!(ServerMsg::decode(&mut bm), Ok(m));
            prop_assert!(bm.is_empty());
        }

        /// Any bytes: no panic, and every decoded message came from bytes actually present:
        /// it took exactly its own frame off the buffer (data is that frame's payload, byte for
        /// byte) and is a message the encoder writes back to the same message; `Short` takes
        /// nothing, any other error ends the stream at a frame boundary.
        #[test]
        fn decoders_total(bytes in arbitrary_or_framed()) {
            check_decoder(&bytes, ClientMsg::decode, enc_c, |m| match m {
                ClientMsg::Data(d) => Some(d),
                _ => None,
            })?;
            check_decoder(&bytes, ServerMsg::decode, enc_s, |m| match m {
                ServerMsg::Data(d) => Some(d),
                _ => None,
            })?;
        }

        /// Valid framing with random payloads exercises the field decoders, not only the envelope.
        #[test]
        fn payload_decoders_total(kind in prop_oneof![Just(1u8), Just(2), Just(3), Just(0x10), Just(0x11), Just(0x20), Just(0x21), Just(0x30), Just(0x40), Just(0x41), any::<u8>()],
                                  payload in proptest::collection::vec(any::<u8>(), 0..64)) {
            let f = Frame { kind, payload: Bytes::from(payload) };
            let mut b = BytesMut::new();
            f.encode(&mut b);
            let mut c = b.clone();
            let _ = ClientMsg::decode(&mut b);
            let _ = ServerMsg::decode(&mut c);
        }

        #[test]
        fn chunks_cover_data(len in 0usize..200_000) {
            let data = Bytes::from(vec![7u8; len]);
            let parts: Vec<_> = ClientMsg::data_chunks(data).collect();
            let total: usize = parts.iter().map(|m| match m { ClientMsg::Data(d) => { assert!(d.len() <= MAX_DATA_CHUNK); d.len() }, _ => 0 }).sum();
            prop_assert_eq!(total, len);
        }
    }
}
