//! CAN bridge protocol: CAN / CAN FD frames as values, their binary and candump encodings,
//! the P2P messages (ALPN [`ALPN`]) and the MoQ track format.
//!
//! Files by concern, every public item re-exported here: `frame` (the frame model and its
//! limits), `text` (candump/cansend syntax), `codec` (binary frames, batches and MoQ track
//! frames), `filter` (acceptance filters) and `message` (the P2P session messages).
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

mod codec;
mod filter;
mod frame;
mod message;
#[cfg(test)]
pub(crate) mod testing;
mod text;

pub use crate::refuse::RefuseCode;
pub use codec::{
    MAX_BATCH, TIMED_HEADER_LEN, decode_timed, decode_track_frame, encode_timed,
    encode_track_frame, timed_len, track_frame_len,
};
pub use filter::{Filter, MAX_FILTERS, filters_accept};
pub use frame::{CanFrame, EFF_MAX, FrameError, SFF_MAX, TimedFrame, fd_len_round_up};
pub use message::{ALPN, BusState, ClientMsg, ServerMsg, VERSION};
