//! CAN bridge protocol: CAN / CAN FD frames as values, their binary and candump encodings,
//! the P2P messages (ALPN [`ALPN`]) and the MoQ track format.
//!
//! # One frame (`TimedFrame`, at least 14 bytes)
//!
//! ```text
//! flags u8 | id u32 | timestamp_us u64 | len u8 | data[len]
//! ```
//!
//! `flags`: bit 0 extended, bit 1 rtr, bit 2 error, bit 3 fd, bit 4 brs, bit 5 esi; bits 6-7
//! must be 0. `id` is the bare 11- or 29-bit identifier (for an error frame, the SocketCAN
//! error class bits), never SocketCAN's flag bits. For a remote (RTR) frame `len` is the
//! requested length and no data follows. Integers are big-endian. Every decoded frame satisfies
//! [`CanFrame::validate`].
//!
//! # Batches
//!
//! `count varint | count × frame`, at most [`MAX_BATCH`] frames. A batch is the payload of
//! [`ClientMsg::Send`] and [`ServerMsg::Frames`], and the whole content of one MoQ frame on the
//! tracks `{path}/state` (frames from the bus) and `{path}/cmd` (frames to send).
//!
//! # P2P session
//!
//! The client opens one bidirectional stream and sends [`ClientMsg::Hello`]; the server
//! answers [`ServerMsg::Welcome`] or [`ServerMsg::Refused`]. Then the client sends
//! [`ClientMsg::Send`] and [`ClientMsg::SetFilters`] at will, and the server sends
//! [`ServerMsg::Frames`], [`ServerMsg::State`] and [`ServerMsg::Dropped`]; frames the server
//! refused to transmit are reported by [`ServerMsg::Error`], and [`ClientMsg::Ping`] /
//! [`ServerMsg::Pong`] measure the clock offset to the server. Messages use the envelope of
//! [`crate::frame`].
//!
//! Over a relay, batches travel in the relay session protocol ([`crate::relay`]).

use std::fmt::Write as _;

use bytes::{Buf, BufMut, Bytes, BytesMut};

use crate::coding::{
    DecodeError, finish_exact, get_bool, get_string, get_u8, get_u16, get_u32, get_u64, get_varint,
    put_string, put_varint, string_len, varint_len,
};
use crate::frame::{Frame, MAX_PAYLOAD};

/// ALPN of the CAN protocol; the trailing number is the major version.
pub const ALPN: &[u8] = b"xoq/can/1";
/// Protocol version carried in the handshake (minor revisions within [`ALPN`]).
pub const VERSION: u16 = 2;
/// Largest standard (11-bit) identifier.
pub const SFF_MAX: u32 = 0x7FF;
/// Largest extended (29-bit) identifier.
pub const EFF_MAX: u32 = 0x1FFF_FFFF;
/// Most frames in one batch; a larger declared count is refused.
pub const MAX_BATCH: usize = 1024;
/// Most filters in one [`ClientMsg::Hello`] or [`ClientMsg::SetFilters`].
pub const MAX_FILTERS: usize = 64;
/// Encoded size of a frame without data: the smallest a frame can be.
pub const TIMED_HEADER_LEN: usize = 14;

const CLASSIC_MAX_LEN: usize = 8;
const FD_MAX_LEN: usize = 64;
/// CAN FD lengths above 8 (DLC 9..=15).
const FD_LONG_LENS: [usize; 7] = [12, 16, 20, 24, 32, 48, 64];
const FILTER_LEN: usize = 9;
/// SocketCAN's CAN_ERR_FLAG: marks an error frame in candump's 8-digit id.
const CANDUMP_ERR_FLAG: u32 = 0x2000_0000;

// A full batch of the largest frames must fit one envelope, so a sender that respects
// MAX_BATCH never has to think about MAX_PAYLOAD.
const _: () = assert!(
    TIMED_HEADER_LEN + FD_MAX_LEN <= (MAX_PAYLOAD - 8) / MAX_BATCH,
    "a full batch must fit in one message"
);

mod flag {
    pub(super) const EXTENDED: u8 = 1 << 0;
    pub(super) const RTR: u8 = 1 << 1;
    pub(super) const ERROR: u8 = 1 << 2;
    pub(super) const FD: u8 = 1 << 3;
    pub(super) const BRS: u8 = 1 << 4;
    pub(super) const ESI: u8 = 1 << 5;
    pub(super) const RESERVED: u8 = 0xC0;
}

/// Smallest valid CAN FD data length that holds `n` bytes (`0..=8`, 12, 16, 20, 24, 32, 48,
/// 64), or `None` if `n > 64`. Use it to pad data before [`CanFrame::new_fd`].
pub fn fd_len_round_up(n: usize) -> Option<usize> {
    if n <= CLASSIC_MAX_LEN {
        return Some(n);
    }
    FD_LONG_LENS.iter().copied().find(|&l| l >= n)
}

fn is_fd_len(n: usize) -> bool {
    fd_len_round_up(n) == Some(n)
}

/// Why a [`CanFrame`] is not a valid CAN frame, or why candump text could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum FrameError {
    /// A standard id over 11 bits.
    #[error("standard CAN id 0x{0:X} is over 0x7FF; set `extended` for a 29-bit id")]
    StandardIdTooLarge(u32),
    /// An id over 29 bits.
    #[error("CAN id 0x{0:X} is over the 29-bit maximum 0x1FFFFFFF")]
    IdTooLarge(u32),
    /// Classic frame with more than 8 data bytes.
    #[error("a classic CAN frame carries at most 8 data bytes, not {0}")]
    ClassicTooLong(usize),
    /// FD frame whose length has no DLC.
    #[error(
        "{0} bytes is not a CAN FD length (0-8, 12, 16, 20, 24, 32, 48 or 64); pad the data to fd_len_round_up({0})"
    )]
    InvalidFdLength(usize),
    /// BRS or ESI set on a classic frame.
    #[error("BRS and ESI are CAN FD flags but the frame is not FD")]
    FdFlagsWithoutFd,
    /// RTR set on an FD frame.
    #[error("CAN FD has no remote (RTR) frames")]
    RemoteFd,
    /// RTR frame with data bytes.
    #[error("a remote (RTR) frame carries no data; its requested length goes in rtr_len")]
    RemoteWithData,
    /// RTR frame requesting more than 8 bytes.
    #[error("a remote (RTR) frame requests at most 8 bytes, not {0}")]
    RemoteLenTooLong(usize),
    /// `rtr_len` set on a frame that is not remote.
    #[error("rtr_len must be 0 unless the frame is a remote (RTR) frame")]
    RtrLenWithoutRtr,
    /// Error frame also marked extended, remote or FD.
    #[error("an error frame cannot be extended, remote or FD (its id is the error class)")]
    ErrorFrameFlags,
    /// Text that is not candump/cansend frame syntax.
    #[error("invalid candump frame: {0}")]
    Syntax(&'static str),
}

impl FrameError {
    /// The same problem as a wire decoding error (decoders report static field names).
    fn to_decode_error(&self) -> DecodeError {
        let (field, reason) = match self {
            FrameError::StandardIdTooLarge(_) => ("id", "standard id over 0x7FF"),
            FrameError::IdTooLarge(_) => ("id", "id over 29 bits"),
            FrameError::ClassicTooLong(_) => ("len", "classic frame over 8 bytes"),
            FrameError::InvalidFdLength(_) => ("len", "not a CAN FD length"),
            FrameError::FdFlagsWithoutFd => ("flags", "BRS/ESI on a classic frame"),
            FrameError::RemoteFd => ("flags", "remote FD frame"),
            FrameError::RemoteWithData => ("len", "remote frame with data"),
            FrameError::RemoteLenTooLong(_) => ("len", "remote frame over 8 bytes"),
            FrameError::RtrLenWithoutRtr => ("len", "rtr_len on a data frame"),
            FrameError::ErrorFrameFlags => ("flags", "error frame marked extended, RTR or FD"),
            FrameError::Syntax(r) => ("frame", *r),
        };
        invalid(field, reason)
    }
}

fn invalid(field: &'static str, reason: &'static str) -> DecodeError {
    DecodeError::Invalid { field, reason }
}

/// One CAN or CAN FD frame. Fields are public; [`validate`](Self::validate) checks that they
/// describe a real frame (the constructors and every decoder only produce valid frames).
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct CanFrame {
    /// Identifier: 11 bits if standard, 29 bits if extended; for an error frame the error
    /// class bits (SocketCAN's `CAN_ERR_*` without `CAN_ERR_FLAG`).
    pub id: u32,
    /// 29-bit (extended) identifier.
    pub extended: bool,
    /// Remote transmission request (classic only): no data, [`rtr_len`](Self::rtr_len) bytes
    /// requested.
    pub rtr: bool,
    /// Error frame reported by the controller (classic, standard; data holds the details).
    pub error: bool,
    /// CAN FD frame.
    pub fd: bool,
    /// Bit-rate switch for the data phase (FD only).
    pub brs: bool,
    /// Error state indicator: the transmitter was error passive (FD only).
    pub esi: bool,
    /// Data bytes: 0..=8 for classic frames, a valid FD length for FD frames, empty for RTR.
    pub data: Bytes,
    /// Length requested by a remote frame (0..=8); 0 on any other frame.
    pub rtr_len: u8,
}

impl CanFrame {
    /// Classic data frame; the id is extended iff it is over 0x7FF.
    pub fn new(id: u32, data: impl Into<Bytes>) -> Result<Self, FrameError> {
        let f = CanFrame {
            id,
            extended: id > SFF_MAX,
            data: data.into(),
            ..CanFrame::default()
        };
        f.validate()?;
        Ok(f)
    }

    /// CAN FD data frame; the id is extended iff it is over 0x7FF. The length must be a valid
    /// FD length: nothing is padded silently (see [`fd_len_round_up`]).
    pub fn new_fd(id: u32, data: impl Into<Bytes>, brs: bool) -> Result<Self, FrameError> {
        let f = CanFrame {
            id,
            extended: id > SFF_MAX,
            fd: true,
            brs,
            data: data.into(),
            ..CanFrame::default()
        };
        f.validate()?;
        Ok(f)
    }

    /// Remote frame requesting `len` bytes; the id is extended iff it is over 0x7FF.
    pub fn remote(id: u32, len: u8) -> Result<Self, FrameError> {
        let f = CanFrame {
            id,
            extended: id > SFF_MAX,
            rtr: true,
            rtr_len: len,
            ..CanFrame::default()
        };
        f.validate()?;
        Ok(f)
    }

    /// Check every invariant: id range for its kind, FD-only flags, no remote FD frames, data
    /// length rules, and error frames being classic standard frames.
    pub fn validate(&self) -> Result<(), FrameError> {
        if self.rtr && !self.data.is_empty() {
            return Err(FrameError::RemoteWithData);
        }
        if !self.rtr && self.rtr_len != 0 {
            return Err(FrameError::RtrLenWithoutRtr);
        }
        self.check_shape(self.wire_len())
    }

    /// The invariants that do not depend on the data bytes themselves, with `len` the length
    /// on the wire. Split out so the decoder can refuse a bad header before reading data.
    fn check_shape(&self, len: usize) -> Result<(), FrameError> {
        if self.error {
            if self.extended || self.rtr || self.fd {
                return Err(FrameError::ErrorFrameFlags);
            }
            if self.id > EFF_MAX {
                return Err(FrameError::IdTooLarge(self.id));
            }
        } else if self.extended {
            if self.id > EFF_MAX {
                return Err(FrameError::IdTooLarge(self.id));
            }
        } else if self.id > SFF_MAX {
            return Err(FrameError::StandardIdTooLarge(self.id));
        }
        if self.rtr && self.fd {
            return Err(FrameError::RemoteFd);
        }
        if (self.brs || self.esi) && !self.fd {
            return Err(FrameError::FdFlagsWithoutFd);
        }
        if self.fd {
            if !is_fd_len(len) {
                return Err(FrameError::InvalidFdLength(len));
            }
        } else if len > CLASSIC_MAX_LEN {
            return Err(if self.rtr {
                FrameError::RemoteLenTooLong(len)
            } else {
                FrameError::ClassicTooLong(len)
            });
        }
        Ok(())
    }

    /// Length the frame declares: the requested length for RTR, else the data length.
    fn wire_len(&self) -> usize {
        if self.rtr {
            usize::from(self.rtr_len)
        } else {
            self.data.len()
        }
    }

    /// Data bytes as written on the wire. Capped at 255 so the length byte always matches the
    /// bytes that follow: an invalid frame is refused by the peer but never desyncs a batch.
    fn wire_data(&self) -> &[u8] {
        if self.rtr {
            &[]
        } else {
            &self.data[..self.data.len().min(usize::from(u8::MAX))]
        }
    }

    fn flags(&self) -> u8 {
        let mut f = 0;
        for (on, bit) in [
            (self.extended, flag::EXTENDED),
            (self.rtr, flag::RTR),
            (self.error, flag::ERROR),
            (self.fd, flag::FD),
            (self.brs, flag::BRS),
            (self.esi, flag::ESI),
        ] {
            if on {
                f |= bit;
            }
        }
        f
    }

    /// candump/cansend text: `123#DEADBEEF`, `1ABCDEF0#` (extended ids have 8 digits),
    /// `123#R` / `123#R3` (remote, with requested length), `123##1DEADBEEF` (FD; the digit
    /// after `##` is BRS=1 | ESI=2), and error frames as `2000000C#...` (8 digits with
    /// SocketCAN's `CAN_ERR_FLAG` 0x20000000 set, as candump prints them). Hex is upper case.
    /// An invalid frame still prints, but may not parse back.
    pub fn to_candump(&self) -> String {
        let mut s = String::with_capacity(12 + 2 * self.data.len());
        // Writing to a String cannot fail.
        let _ = if self.error {
            write!(s, "{:08X}", self.id | CANDUMP_ERR_FLAG)
        } else if self.extended {
            write!(s, "{:08X}", self.id)
        } else {
            write!(s, "{:03X}", self.id)
        };
        if self.fd {
            let nibble = u8::from(self.brs) | (u8::from(self.esi) << 1);
            let _ = write!(s, "##{nibble:X}");
        } else if self.rtr {
            s.push_str("#R");
            if self.rtr_len != 0 {
                let _ = write!(s, "{}", self.rtr_len);
            }
        } else {
            s.push('#');
        }
        if !self.rtr {
            for b in self.data.iter() {
                let _ = write!(s, "{b:02X}");
            }
        }
        s
    }

    /// Parse cansend syntax (what [`to_candump`](Self::to_candump) prints): an id of exactly 3
    /// hex digits is standard, 8 digits extended (or an error frame if bit 0x20000000 is set);
    /// hex is case-insensitive; `.` is allowed between data bytes; the FD flags digit may also
    /// carry CANFD_FDF (4), which newer candump prints and which `##` already implies.
    /// Surrounding whitespace is ignored. The result is validated.
    pub fn from_candump(s: &str) -> Result<CanFrame, FrameError> {
        // Work on bytes: every valid character is ASCII, so no char-boundary slicing can panic.
        let s = s.trim().as_bytes();
        let hash = s
            .iter()
            .position(|&c| c == b'#')
            .ok_or(FrameError::Syntax("missing '#' after the id"))?;
        let (id_text, rest) = s.split_at(hash);
        let rest = &rest[1..];
        let raw = id_text.iter().try_fold(0u32, |acc, &c| {
            hex_val(c)
                .map(|v| (acc << 4) | u32::from(v))
                .ok_or(FrameError::Syntax("id must be hex digits"))
        })?;
        let mut f = CanFrame::default();
        match id_text.len() {
            3 => f.id = raw,
            8 if raw & !EFF_MAX == CANDUMP_ERR_FLAG => {
                f.error = true;
                f.id = raw & EFF_MAX;
            }
            8 if raw <= EFF_MAX => {
                f.extended = true;
                f.id = raw;
            }
            8 => {
                return Err(FrameError::Syntax(
                    "8-digit id has flag bits other than the error flag 0x20000000",
                ));
            }
            _ => {
                return Err(FrameError::Syntax(
                    "id must be 3 hex digits (standard) or 8 (extended)",
                ));
            }
        }
        let data = match rest {
            [b'#', nibble, data @ ..] => {
                let flags = hex_val(*nibble)
                    .filter(|v| v & 0x8 == 0)
                    .ok_or(FrameError::Syntax("FD flags digit must be 0-7"))?;
                f.fd = true;
                f.brs = flags & 1 != 0;
                f.esi = flags & 2 != 0;
                data
            }
            [b'#'] => return Err(FrameError::Syntax("missing FD flags digit after '##'")),
            [b'R' | b'r', len @ ..] => {
                f.rtr = true;
                f.rtr_len = match len {
                    [] => 0,
                    [d @ b'0'..=b'8'] => d - b'0',
                    _ => {
                        return Err(FrameError::Syntax(
                            "remote frame length must be one digit 0-8",
                        ));
                    }
                };
                &[]
            }
            data => data,
        };
        f.data = parse_hex_data(data)?;
        f.validate()?;
        Ok(f)
    }
}

fn hex_val(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

/// Hex byte pairs, with `.` allowed between (not inside) pairs, as cansend accepts.
fn parse_hex_data(s: &[u8]) -> Result<Bytes, FrameError> {
    let mut out = Vec::new();
    let mut it = s.iter().copied();
    while let Some(c) = it.next() {
        if c == b'.' {
            continue;
        }
        let hi = hex_val(c);
        let lo = it.next().and_then(hex_val);
        let (Some(hi), Some(lo)) = (hi, lo) else {
            return Err(FrameError::Syntax("data must be pairs of hex digits"));
        };
        // Stop early on absurd input instead of buffering it all before validation.
        if out.len() == FD_MAX_LEN {
            return Err(FrameError::Syntax("more than 64 data bytes"));
        }
        out.push((hi << 4) | lo);
    }
    Ok(Bytes::from(out))
}

/// A frame with the time it was received (or, from a client, sent).
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct TimedFrame {
    /// The frame.
    pub frame: CanFrame,
    /// Microseconds since the Unix epoch: the server's receive time for frames from the bus,
    /// carried end to end; the client's send time in [`ClientMsg::Send`].
    pub timestamp_us: u64,
}

/// Append one frame in the layout of the [module docs](self). The frame should be valid
/// ([`CanFrame::validate`]); an invalid one is written as is and refused by the decoder.
pub fn encode_timed(f: &TimedFrame, buf: &mut impl BufMut) {
    let frame = &f.frame;
    let data = frame.wire_data();
    buf.put_u8(frame.flags());
    buf.put_u32(frame.id);
    buf.put_u64(f.timestamp_us);
    // wire_data is at most 255 bytes and rtr_len is a u8, so the casts are exact.
    buf.put_u8(if frame.rtr {
        frame.rtr_len
    } else {
        data.len() as u8
    });
    buf.put_slice(data);
}

/// Encoded size of `f` as written by [`encode_timed`].
pub fn timed_len(f: &TimedFrame) -> usize {
    TIMED_HEADER_LEN + f.frame.wire_data().len()
}

/// Decode one frame. `Short` if `buf` ends before the frame does (nothing is consumed when the
/// first 14 bytes are contiguous, as in `&[u8]`, `Bytes` and `BytesMut`); `Invalid` for
/// reserved flag bits or a frame that fails [`CanFrame::validate`], decided from the header
/// before any data is read. Allocates at most the data bytes present.
pub fn decode_timed(buf: &mut impl Buf) -> Result<TimedFrame, DecodeError> {
    if buf.remaining() < TIMED_HEADER_LEN {
        return Err(DecodeError::Short);
    }
    let mut header = [0u8; TIMED_HEADER_LEN];
    // Peek the header when it is contiguous so that a Short leaves `buf` untouched; a
    // segmented buffer has no peek, so it is read (only stream-level decoders need the
    // guarantee, and they hand us contiguous buffers).
    let peeked = match buf.chunk().get(..TIMED_HEADER_LEN) {
        Some(h) => {
            header.copy_from_slice(h);
            true
        }
        None => {
            buf.copy_to_slice(&mut header);
            false
        }
    };
    let mut h = &header[..];
    let flags = h.get_u8();
    let id = h.get_u32();
    let timestamp_us = h.get_u64();
    let len = h.get_u8();
    if flags & flag::RESERVED != 0 {
        return Err(invalid("flags", "reserved bits 6-7 set"));
    }
    let rtr = flags & flag::RTR != 0;
    let mut frame = CanFrame {
        id,
        extended: flags & flag::EXTENDED != 0,
        rtr,
        error: flags & flag::ERROR != 0,
        fd: flags & flag::FD != 0,
        brs: flags & flag::BRS != 0,
        esi: flags & flag::ESI != 0,
        data: Bytes::new(),
        rtr_len: if rtr { len } else { 0 },
    };
    frame
        .check_shape(usize::from(len))
        .map_err(|e| e.to_decode_error())?;
    let data_len = if rtr { 0 } else { usize::from(len) };
    let header_left = if peeked { TIMED_HEADER_LEN } else { 0 };
    if buf.remaining() < header_left + data_len {
        return Err(DecodeError::Short);
    }
    buf.advance(header_left);
    frame.data = buf.copy_to_bytes(data_len);
    Ok(TimedFrame {
        frame,
        timestamp_us,
    })
}

fn batch_len(frames: &[TimedFrame]) -> usize {
    varint_len(frames.len() as u64) + frames.iter().map(timed_len).sum::<usize>()
}

fn put_batch(buf: &mut impl BufMut, frames: &[TimedFrame]) {
    put_varint(buf, frames.len() as u64);
    for f in frames {
        encode_timed(f, buf);
    }
}

fn get_batch(p: &mut impl Buf) -> Result<Vec<TimedFrame>, DecodeError> {
    let count = get_varint(p)?;
    if count > MAX_BATCH as u64 {
        return Err(invalid("count", "batch of more than 1024 frames"));
    }
    let count = count as usize;
    // Each frame takes at least TIMED_HEADER_LEN bytes: a count the bytes present cannot back
    // is refused here, so it never sizes an allocation.
    if p.remaining() < count * TIMED_HEADER_LEN {
        return Err(DecodeError::Short);
    }
    let mut frames = Vec::with_capacity(count);
    for _ in 0..count {
        frames.push(decode_timed(p)?);
    }
    Ok(frames)
}

/// Encode a batch as the content of one MoQ frame on `{path}/state` or `{path}/cmd`:
/// `count varint | frames`. Callers keep batches to [`MAX_BATCH`] frames.
pub fn encode_track_frame(frames: &[TimedFrame], buf: &mut impl BufMut) {
    put_batch(buf, frames);
}

/// Encoded size of [`encode_track_frame`]'s output.
pub fn track_frame_len(frames: &[TimedFrame]) -> usize {
    batch_len(frames)
}

/// Decode the content of one MoQ frame. The MoQ frame is complete, so missing bytes are
/// `Invalid` (truncated) and leftover bytes are `Long`.
pub fn decode_track_frame(bytes: &[u8]) -> Result<Vec<TimedFrame>, DecodeError> {
    let mut p = bytes;
    let v = get_batch(&mut p);
    finish_exact(p.len(), v)
}

/// An acceptance filter, with python-can's semantics: a frame matches when
/// `(frame.id & mask) == (id & mask)`; if `extended` is set, only extended frames match, and
/// if it is clear the filter does not look at the id kind (python-can's filter without an
/// `extended` key). Error frames are compared like other frames, their id being the error
/// class.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct Filter {
    /// Id bits to compare.
    pub id: u32,
    /// Which id bits count.
    pub mask: u32,
    /// Match extended frames only.
    pub extended: bool,
}

impl Filter {
    /// Whether `frame` passes this filter.
    pub fn matches(&self, frame: &CanFrame) -> bool {
        if self.extended && !frame.extended {
            return false;
        }
        (frame.id & self.mask) == (self.id & self.mask)
    }
}

/// Whether `frame` passes a filter set: no filters accept everything (as python-can's
/// `set_filters(None)`), otherwise any one match suffices.
pub fn filters_accept(filters: &[Filter], frame: &CanFrame) -> bool {
    filters.is_empty() || filters.iter().any(|f| f.matches(frame))
}

fn filters_len(filters: &[Filter]) -> usize {
    varint_len(filters.len() as u64) + filters.len() * FILTER_LEN
}

fn put_filters(buf: &mut impl BufMut, filters: &[Filter]) {
    put_varint(buf, filters.len() as u64);
    for f in filters {
        buf.put_u32(f.id);
        buf.put_u32(f.mask);
        buf.put_u8(u8::from(f.extended));
    }
}

fn get_filters(p: &mut impl Buf) -> Result<Vec<Filter>, DecodeError> {
    let count = get_varint(p)?;
    if count > MAX_FILTERS as u64 {
        return Err(invalid("filters", "more than 64 filters"));
    }
    let count = count as usize;
    if p.remaining() < count * FILTER_LEN {
        return Err(DecodeError::Short);
    }
    let mut filters = Vec::with_capacity(count);
    for _ in 0..count {
        filters.push(Filter {
            id: get_u32(p)?,
            mask: get_u32(p)?,
            extended: get_bool(p, "filter.extended")?,
        });
    }
    Ok(filters)
}

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

/// Stable codes of [`ServerMsg::Refused`], numbered like the serial protocol's.
pub mod refuse_code {
    /// The client is not allowed to use this interface.
    pub const NOT_ALLOWED: u16 = 2;
    /// Incompatible protocol version.
    pub const VERSION: u16 = 3;
    /// The interface is missing or down; retry later.
    pub const INTERFACE_UNAVAILABLE: u16 = 4;
    /// The request cannot be served (e.g. CAN FD on a classic interface, unknown interface).
    pub const UNSUPPORTED: u16 = 5;
    /// The server does not accept writes through this path (relay writes off).
    pub const WRITES_OFF: u16 = 6;
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
        /// Initial receive filters (at most [`MAX_FILTERS`]; none means everything).
        filters: Vec<Filter>,
    },
    /// Frames to transmit, in order (at most [`MAX_BATCH`]); each timestamp is the client's
    /// send time, which the server uses to drop commands older than its maximum age.
    Send(Vec<TimedFrame>),
    /// Replace the receive filters (at most [`MAX_FILTERS`]; none means everything).
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
        /// Stable reason code (see [`refuse_code`]).
        code: u16,
        /// Human-readable explanation with what to do.
        message: String,
    },
    /// Frames received from the bus or sent by other clients (at most [`MAX_BATCH`]).
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
    /// since the previous notice, for the reason `code` (see [`refuse_code`]) and `message`.
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
    pub(super) const HELLO: u8 = 0x01;
    pub(super) const WELCOME: u8 = 0x02;
    pub(super) const REFUSED: u8 = 0x03;
    pub(super) const FRAMES: u8 = 0x10;
    pub(super) const SET_FILTERS: u8 = 0x20;
    pub(super) const STATE: u8 = 0x30;
    pub(super) const DROPPED: u8 = 0x31;
    pub(super) const ERROR: u8 = 0x32;
    pub(super) const PING: u8 = 0x40;
    pub(super) const PONG: u8 = 0x41;
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

    /// Append the framed message to `buf`. Limits ([`MAX_BATCH`], [`MAX_FILTERS`]) are the
    /// caller's to respect; the peer refuses messages over them.
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

    /// Append the framed message to `buf` (batches of at most [`MAX_BATCH`] frames).
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
    use proptest::prelude::*;

    const FD_LENS: [usize; 16] = [0, 1, 2, 3, 4, 5, 6, 7, 8, 12, 16, 20, 24, 32, 48, 64];

    fn hex(b: &[u8]) -> String {
        b.iter().map(|x| format!("{x:02x}")).collect()
    }

    fn enc(f: &TimedFrame) -> Vec<u8> {
        let mut b = Vec::new();
        encode_timed(f, &mut b);
        b
    }

    fn timed(frame: CanFrame, timestamp_us: u64) -> TimedFrame {
        TimedFrame {
            frame,
            timestamp_us,
        }
    }

    /// Binary and candump round trips, plus the length bookkeeping.
    fn assert_roundtrips(f: &TimedFrame) {
        f.frame.validate().expect("valid frame");
        let b = enc(f);
        assert_eq!(b.len(), timed_len(f));
        let mut s = &b[..];
        assert_eq!(decode_timed(&mut s).as_ref(), Ok(f));
        assert!(s.is_empty());
        let text = f.frame.to_candump();
        assert_eq!(
            CanFrame::from_candump(&text).as_ref(),
            Ok(&f.frame),
            "{text}"
        );
    }

    #[test]
    fn roundtrip_kinds() {
        let classic = CanFrame::new(0x123, &b"\xde\xad\xbe\xef"[..]).expect("valid frame");
        assert!(!classic.extended);
        assert_roundtrips(&timed(classic, 1));

        let ext = CanFrame::new(0x1ABC_DEF0, &b"\x01"[..]).expect("valid frame");
        assert!(ext.extended);
        assert_roundtrips(&timed(ext, 2));
        // A small id can still be sent as extended.
        let small_ext = CanFrame {
            id: 0x12,
            extended: true,
            ..CanFrame::default()
        };
        assert_roundtrips(&timed(small_ext, 3));

        let rtr = CanFrame::remote(0x7FF, 3).expect("valid frame");
        assert_eq!((rtr.rtr, rtr.rtr_len, rtr.data.len()), (true, 3, 0));
        assert_roundtrips(&timed(rtr, 4));
        assert_roundtrips(&timed(
            CanFrame::remote(0x1234_5678, 8).expect("valid frame"),
            5,
        ));

        let err = CanFrame {
            id: 0x04 | 0x40,
            error: true,
            data: Bytes::from_static(&[0, 4, 0, 0, 0, 0, 0, 0]),
            ..CanFrame::default()
        };
        assert_roundtrips(&timed(err, 6));

        let mut fd = CanFrame::new_fd(0x321, vec![0xaa; 48], true).expect("valid frame");
        fd.esi = true;
        assert_roundtrips(&timed(fd, u64::MAX));
    }

    #[test]
    fn roundtrip_every_length() {
        for n in 0..=8 {
            let data: Vec<u8> = (0..n as u8).collect();
            assert_roundtrips(&timed(
                CanFrame::new(0x100, data).expect("valid frame"),
                n as u64,
            ));
        }
        for n in FD_LENS {
            let data: Vec<u8> = (0..n as u8).collect();
            for brs in [false, true] {
                let f = CanFrame::new_fd(0x1000, data.clone(), brs).expect("valid frame");
                assert_roundtrips(&timed(f, n as u64));
            }
        }
    }

    #[test]
    fn fd_len_round_up_values() {
        assert_eq!(fd_len_round_up(0), Some(0));
        assert_eq!(fd_len_round_up(8), Some(8));
        assert_eq!(fd_len_round_up(9), Some(12));
        assert_eq!(fd_len_round_up(13), Some(16));
        assert_eq!(fd_len_round_up(33), Some(48));
        assert_eq!(fd_len_round_up(64), Some(64));
        assert_eq!(fd_len_round_up(65), None);
        let valid: Vec<usize> = (0..=64).filter(|&n| is_fd_len(n)).collect();
        assert_eq!(valid, FD_LENS);
    }

    #[test]
    fn validation_rejects() {
        let std_over = CanFrame {
            id: 0x800,
            ..CanFrame::default()
        };
        assert_eq!(
            std_over.validate(),
            Err(FrameError::StandardIdTooLarge(0x800))
        );
        let ext_over = CanFrame {
            id: 0x2000_0000,
            extended: true,
            ..CanFrame::default()
        };
        assert_eq!(
            ext_over.validate(),
            Err(FrameError::IdTooLarge(0x2000_0000))
        );
        assert_eq!(
            CanFrame::new(0x2000_0000, Bytes::new()),
            Err(FrameError::IdTooLarge(0x2000_0000))
        );
        assert_eq!(
            CanFrame::new(1, vec![0; 9]),
            Err(FrameError::ClassicTooLong(9))
        );
        assert_eq!(
            CanFrame::new_fd(1, vec![0; 13], false),
            Err(FrameError::InvalidFdLength(13))
        );
        assert_eq!(
            CanFrame::new_fd(1, vec![0; 65], false),
            Err(FrameError::InvalidFdLength(65))
        );
        let brs_classic = CanFrame {
            brs: true,
            ..CanFrame::default()
        };
        assert_eq!(brs_classic.validate(), Err(FrameError::FdFlagsWithoutFd));
        let esi_classic = CanFrame {
            esi: true,
            ..CanFrame::default()
        };
        assert_eq!(esi_classic.validate(), Err(FrameError::FdFlagsWithoutFd));
        let rtr_fd = CanFrame {
            rtr: true,
            fd: true,
            ..CanFrame::default()
        };
        assert_eq!(rtr_fd.validate(), Err(FrameError::RemoteFd));
        assert_eq!(CanFrame::remote(1, 9), Err(FrameError::RemoteLenTooLong(9)));
        let rtr_data = CanFrame {
            rtr: true,
            data: Bytes::from_static(b"x"),
            ..CanFrame::default()
        };
        assert_eq!(rtr_data.validate(), Err(FrameError::RemoteWithData));
        let stray_len = CanFrame {
            rtr_len: 2,
            ..CanFrame::default()
        };
        assert_eq!(stray_len.validate(), Err(FrameError::RtrLenWithoutRtr));
        let err_ext = CanFrame {
            error: true,
            extended: true,
            ..CanFrame::default()
        };
        assert_eq!(err_ext.validate(), Err(FrameError::ErrorFrameFlags));
        // The messages explain what to do.
        assert!(
            FrameError::StandardIdTooLarge(0x800)
                .to_string()
                .contains("extended")
        );
        assert!(
            FrameError::InvalidFdLength(13)
                .to_string()
                .contains("fd_len_round_up")
        );
    }

    /// Raw header bytes for the decoder tests.
    fn raw(flags: u8, id: u32, len: u8, data: &[u8]) -> Vec<u8> {
        let mut b = vec![flags];
        b.extend_from_slice(&id.to_be_bytes());
        b.extend_from_slice(&7u64.to_be_bytes());
        b.push(len);
        b.extend_from_slice(data);
        b
    }

    fn decode_err(b: &[u8]) -> Result<TimedFrame, DecodeError> {
        decode_timed(&mut &b[..])
    }

    #[test]
    fn decoder_rejects_invalid_frames() {
        let is_invalid = |b: Vec<u8>| matches!(decode_err(&b), Err(DecodeError::Invalid { .. }));
        // Sanity: the helper builds a valid frame.
        assert!(decode_err(&raw(0, 0x7FF, 1, &[9])).is_ok());
        for reserved in [0x40, 0x80, 0xC0] {
            assert!(is_invalid(raw(reserved, 1, 0, &[])));
        }
        assert!(is_invalid(raw(0, 0x800, 0, &[])));
        assert!(is_invalid(raw(flag::EXTENDED, 0x2000_0000, 0, &[])));
        assert!(is_invalid(raw(0, 1, 9, &[0; 9])));
        assert!(is_invalid(raw(flag::FD, 1, 13, &[0; 13])));
        assert!(is_invalid(raw(flag::BRS, 1, 0, &[])));
        assert!(is_invalid(raw(flag::ESI, 1, 0, &[])));
        assert!(is_invalid(raw(flag::RTR | flag::FD, 1, 0, &[])));
        assert!(is_invalid(raw(flag::RTR, 1, 9, &[])));
        assert!(is_invalid(raw(flag::ERROR | flag::EXTENDED, 1, 0, &[])));
        // A bad length is refused from the header, without waiting for its data.
        assert!(is_invalid(raw(0, 1, 200, &[])));
    }

    #[test]
    fn short_leaves_contiguous_input_untouched() {
        let b = enc(&timed(
            CanFrame::new(0x123, vec![1, 2, 3]).expect("valid frame"),
            9,
        ));
        for cut in 0..b.len() {
            let mut s = &b[..cut];
            assert_eq!(decode_timed(&mut s), Err(DecodeError::Short));
            assert_eq!(s.len(), cut);
        }
        // RTR: no data follows, so the header alone is a whole frame.
        let r = enc(&timed(CanFrame::remote(0x123, 8).expect("valid frame"), 9));
        assert_eq!(r.len(), TIMED_HEADER_LEN);
        assert!(decode_err(&r).is_ok());
    }

    #[test]
    fn segmented_input_decodes() {
        let f = timed(
            CanFrame::new_fd(0x55, vec![3; 12], true).expect("valid frame"),
            42,
        );
        let b = enc(&f);
        for split in [1, 5, 13, 14, 20] {
            let mut chain = (&b[..split]).chain(&b[split..]);
            assert_eq!(decode_timed(&mut chain).as_ref(), Ok(&f));
            assert_eq!(chain.remaining(), 0);
        }
        let mut short = (&b[..5]).chain(&b[5..20]);
        assert_eq!(decode_timed(&mut short), Err(DecodeError::Short));
    }

    #[test]
    fn snapshot_classic_frame() {
        let f = timed(
            CanFrame::new(0x123, &b"\xde\xad\xbe\xef"[..]).expect("valid frame"),
            0x0102_0304_0506_0708,
        );
        assert_eq!(
            hex(&enc(&f)),
            "00 00000123 0102030405060708 04 deadbeef".replace(' ', "")
        );
    }

    #[test]
    fn snapshot_fd_frame() {
        let data: Vec<u8> = (0..12).collect();
        let f = timed(
            CanFrame::new_fd(0x1ABC_DEF0, data, true).expect("valid frame"),
            1,
        );
        assert_eq!(
            hex(&enc(&f)),
            "19 1abcdef0 0000000000000001 0c 000102030405060708090a0b".replace(' ', "")
        );
    }

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
    fn candump_exact_strings() {
        let cases = [
            (
                CanFrame::new(0x123, &b"\xde\xad\xbe\xef"[..]).expect("valid frame"),
                "123#DEADBEEF",
            ),
            (
                CanFrame::new(0x1ABC_DEF0, Bytes::new()).expect("valid frame"),
                "1ABCDEF0#",
            ),
            (
                CanFrame::new(0x1234_5678, vec![0]).expect("valid frame"),
                "12345678#00",
            ),
            (
                CanFrame::new(0x5, Bytes::new()).expect("valid frame"),
                "005#",
            ),
            (CanFrame::remote(0x123, 0).expect("valid frame"), "123#R"),
            (CanFrame::remote(0x123, 3).expect("valid frame"), "123#R3"),
            (
                CanFrame::new_fd(0x123, &b"\xde\xad\xbe\xef"[..], true).expect("valid frame"),
                "123##1DEADBEEF",
            ),
            (
                CanFrame::new_fd(0x123, Bytes::new(), false).expect("valid frame"),
                "123##0",
            ),
            (
                CanFrame {
                    id: 0x4,
                    error: true,
                    data: Bytes::from_static(&[0, 4, 0, 0, 0, 0, 0, 0]),
                    ..CanFrame::default()
                },
                "20000004#0004000000000000",
            ),
        ];
        for (frame, text) in cases {
            assert_eq!(frame.to_candump(), text);
            assert_eq!(CanFrame::from_candump(text), Ok(frame));
        }
        let mut esi = CanFrame::new_fd(0x1, vec![1], false).expect("valid frame");
        esi.esi = true;
        assert_eq!(esi.to_candump(), "001##201");
    }

    #[test]
    fn candump_parse_variants() {
        let deadbeef = CanFrame::new(0x123, &b"\xde\xad\xbe\xef"[..]).expect("valid frame");
        for text in [
            "123#DE.AD.BE.EF",
            "123#deadbeef",
            " 123#DEADBEEF\n",
            "123#.DEAD..BEEF.",
        ] {
            assert_eq!(
                CanFrame::from_candump(text).as_ref(),
                Ok(&deadbeef),
                "{text}"
            );
        }
        // 8 digits make an extended frame even for a small id.
        let f = CanFrame::from_candump("00000123#").expect("valid frame");
        assert!(f.extended && f.id == 0x123);
        // Newer candump prints CANFD_FDF (4) in the flags digit.
        assert_eq!(
            CanFrame::from_candump("123##5DEADBEEF"),
            CanFrame::from_candump("123##1DEADBEEF")
        );
        assert_eq!(CanFrame::from_candump("123#r2"), CanFrame::remote(0x123, 2));
    }

    #[test]
    fn candump_rejects() {
        let syntax = |t: &str| matches!(CanFrame::from_candump(t), Err(FrameError::Syntax(_)));
        for t in [
            "",
            "123",
            "12#00",
            "1234#00",
            "123456789#00",
            "12G#00",
            "123#0",
            "123#D.EAD",
            "123#XX",
            "123##",
            "123##8",
            "123##G00",
            "123#R9",
            "123#R12",
            "123#Rx",
            "E0000123#",
            "40000123#",
            "123#DEAD#BEEF",
        ] {
            assert!(syntax(t), "{t:?} should be a syntax error");
        }
        assert!(syntax(&format!("123##0{}", "00".repeat(65))));
        assert_eq!(
            CanFrame::from_candump("800#"),
            Err(FrameError::StandardIdTooLarge(0x800))
        );
        assert_eq!(
            CanFrame::from_candump("123#000000000000000000"),
            Err(FrameError::ClassicTooLong(9))
        );
        assert_eq!(
            CanFrame::from_candump("123##100000000000000000000000000"),
            Err(FrameError::InvalidFdLength(13))
        );
        // An error frame cannot be remote or FD.
        assert_eq!(
            CanFrame::from_candump("20000004#R"),
            Err(FrameError::ErrorFrameFlags)
        );
    }

    #[test]
    fn filters_match() {
        let std_frame = CanFrame::new(0x123, Bytes::new()).expect("valid frame");
        let ext_frame = CanFrame {
            id: 0x123,
            extended: true,
            ..CanFrame::default()
        };
        let exact = Filter {
            id: 0x123,
            mask: 0x7FF,
            extended: false,
        };
        assert!(exact.matches(&std_frame));
        assert!(
            exact.matches(&ext_frame),
            "extended: false does not look at the kind"
        );
        assert!(!exact.matches(&CanFrame::new(0x124, Bytes::new()).expect("valid frame")));
        let range = Filter {
            id: 0x120,
            mask: 0x7F0,
            extended: false,
        };
        assert!(range.matches(&CanFrame::new(0x12F, Bytes::new()).expect("valid frame")));
        assert!(!range.matches(&CanFrame::new(0x130, Bytes::new()).expect("valid frame")));
        let ext_only = Filter {
            extended: true,
            ..exact
        };
        assert!(!ext_only.matches(&std_frame));
        assert!(ext_only.matches(&ext_frame));
        // Mask bits are applied to both sides: bits outside the mask never matter.
        let masked = Filter {
            id: 0xFFFF_F123,
            mask: 0xFF,
            extended: false,
        };
        assert!(masked.matches(&CanFrame::new(0x523, Bytes::new()).expect("valid frame")));
        assert!(filters_accept(&[], &std_frame));
        assert!(filters_accept(&[range, exact], &std_frame));
        let other = Filter { id: 0x200, ..exact };
        assert!(!filters_accept(&[other, ext_only], &std_frame));
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
    fn track_frame_exact_consume() {
        let mut t = Vec::new();
        encode_track_frame(&[], &mut t);
        assert_eq!(t, [0]);
        assert_eq!(decode_track_frame(&t), Ok(vec![]));
        t.push(0xff);
        assert_eq!(decode_track_frame(&t), Err(DecodeError::Long(1)));
        assert!(matches!(
            decode_track_frame(&[]),
            Err(DecodeError::Invalid { .. })
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

    fn id_kind() -> impl Strategy<Value = (bool, u32)> {
        prop_oneof![(Just(false), 0..=SFF_MAX), (Just(true), 0..=EFF_MAX),]
    }

    fn classic_data() -> impl Strategy<Value = Bytes> {
        proptest::collection::vec(any::<u8>(), 0..=8).prop_map(Bytes::from)
    }

    fn fd_data() -> impl Strategy<Value = Bytes> {
        proptest::sample::select(FD_LENS.to_vec())
            .prop_flat_map(|n| proptest::collection::vec(any::<u8>(), n))
            .prop_map(Bytes::from)
    }

    fn can_frame() -> impl Strategy<Value = CanFrame> {
        prop_oneof![
            (id_kind(), classic_data()).prop_map(|((extended, id), data)| CanFrame {
                id,
                extended,
                data,
                ..CanFrame::default()
            }),
            (id_kind(), 0u8..=8).prop_map(|((extended, id), rtr_len)| CanFrame {
                id,
                extended,
                rtr: true,
                rtr_len,
                ..CanFrame::default()
            }),
            (0..=EFF_MAX, classic_data()).prop_map(|(id, data)| CanFrame {
                id,
                error: true,
                data,
                ..CanFrame::default()
            }),
            (id_kind(), fd_data(), any::<bool>(), any::<bool>()).prop_map(
                |((extended, id), data, brs, esi)| CanFrame {
                    id,
                    extended,
                    fd: true,
                    brs,
                    esi,
                    data,
                    ..CanFrame::default()
                }
            ),
        ]
    }

    fn timed_frame() -> impl Strategy<Value = TimedFrame> {
        (can_frame(), any::<u64>()).prop_map(|(frame, timestamp_us)| TimedFrame {
            frame,
            timestamp_us,
        })
    }

    fn batch() -> impl Strategy<Value = Vec<TimedFrame>> {
        proptest::collection::vec(timed_frame(), 0..20)
    }

    fn filter() -> impl Strategy<Value = Filter> {
        (any::<u32>(), any::<u32>(), any::<bool>()).prop_map(|(id, mask, extended)| Filter {
            id,
            mask,
            extended,
        })
    }

    fn filters() -> impl Strategy<Value = Vec<Filter>> {
        proptest::collection::vec(filter(), 0..=MAX_FILTERS)
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
        fn timed_roundtrip(f in timed_frame()) {
            prop_assert_eq!(f.frame.validate(), Ok(()));
            let b = enc(&f);
            prop_assert_eq!(b.len(), timed_len(&f));
            let mut s = &b[..];
            prop_assert_eq!(decode_timed(&mut s), Ok(f.clone()));
            prop_assert!(s.is_empty());
            prop_assert_eq!(CanFrame::from_candump(&f.frame.to_candump()), Ok(f.frame));
        }

        #[test]
        fn track_roundtrip(frames in batch()) {
            let mut t = Vec::new();
            encode_track_frame(&frames, &mut t);
            prop_assert_eq!(t.len(), track_frame_len(&frames));
            prop_assert_eq!(decode_track_frame(&t), Ok(frames));
        }

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

        /// Frames built from plausible headers reach the field checks, not only the length
        /// checks of random bytes.
        #[test]
        fn frame_decoder_total(flags: u8, id in prop_oneof![0u32..0x900, any::<u32>()],
                               len in prop_oneof![0u8..=70, any::<u8>()],
                               data in proptest::collection::vec(any::<u8>(), 0..80)) {
            let b = raw(flags, id, len, &data);
            if let Ok(f) = decode_err(&b) {
                prop_assert_eq!(f.frame.validate(), Ok(()));
                prop_assert_eq!(enc(&f), &b[..timed_len(&f)]);
            }
        }

        #[test]
        fn candump_total(s in ".{0,64}") {
            let _ = CanFrame::from_candump(&s);
        }

        #[test]
        fn candump_total_near_syntax(s in "[0-9A-Fa-fRr#. ]{0,40}") {
            if let Ok(f) = CanFrame::from_candump(&s) {
                prop_assert_eq!(f.validate(), Ok(()));
                prop_assert_eq!(CanFrame::from_candump(&f.to_candump()), Ok(f));
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
