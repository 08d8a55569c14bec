//! The envelope every stream message travels in: `kind (u8) | length (varint) | payload`.
//!
//! The length prefix lets a reader find message boundaries without knowing the kind, so an
//! old reader can report an unknown kind cleanly, and every message is decoded from exactly
//! its payload (trailing bytes are an error, which keeps versioned evolution honest).

use bytes::{Buf, BufMut, Bytes};

use crate::coding::{DecodeError, get_varint, put_varint, varint_len};

/// Largest payload of one message. Data is chunked below this by senders; a peer that
/// declares more is refused before anything is buffered.
pub const MAX_PAYLOAD: usize = 256 * 1024;

/// Message kinds every service's session uses the same way: the opening exchange
/// (hello → welcome or refusal) and the clock probe. A service numbers its own kinds from
/// `0x10` up, clear of these.
pub mod session_kind {
    /// Client → server: the first message of a session (version, what it wants).
    pub const HELLO: u8 = 0x01;
    /// Server → client: the session is accepted.
    pub const WELCOME: u8 = 0x02;
    /// Server → client: the session is refused (a [`RefuseCode`](crate::RefuseCode) and a message); the last message.
    pub const REFUSED: u8 = 0x03;
    /// Client → server: a clock probe.
    pub const PING: u8 = 0x40;
    /// Server → client: the answer to a probe, with the server's clock.
    pub const PONG: u8 = 0x41;
}

/// One framed message: a kind byte and its payload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    /// Message kind, interpreted by the service codec.
    pub kind: u8,
    /// Message body.
    pub payload: Bytes,
}

impl Frame {
    /// Total encoded size of a message with this payload length.
    pub fn encoded_len(payload_len: usize) -> usize {
        1 + varint_len(payload_len as u64) + payload_len
    }

    /// Write the envelope header for a payload of `payload_len` bytes; the caller writes the
    /// payload right after. Lets codecs encode without an intermediate buffer.
    pub fn put_header(buf: &mut impl BufMut, kind: u8, payload_len: usize) {
        buf.put_u8(kind);
        put_varint(buf, payload_len as u64);
    }

    /// Check whether `buf` starts with a whole frame. Returns its total size, or `Short`
    /// if more bytes are needed, or `TooLong` if the declared size is over [`MAX_PAYLOAD`].
    /// Does not consume.
    pub fn check(buf: &[u8]) -> Result<usize, DecodeError> {
        let mut cur = buf;
        if cur.is_empty() {
            return Err(DecodeError::Short);
        }
        cur.advance(1);
        let len = get_varint(&mut cur)?;
        if len > MAX_PAYLOAD as u64 {
            return Err(DecodeError::TooLong {
                len,
                max: MAX_PAYLOAD as u64,
            });
        }
        let header = buf.len() - cur.len();
        let total = header + len as usize;
        if buf.len() < total {
            return Err(DecodeError::Short);
        }
        Ok(total)
    }

    /// Split one whole frame off the front of `buf`. On `Short`, `buf` is untouched.
    pub fn decode(buf: &mut bytes::BytesMut) -> Result<Frame, DecodeError> {
        let total = Self::check(buf)?;
        let mut whole = buf.split_to(total).freeze();
        let kind = whole.get_u8();
        // Cannot fail: `check` already parsed this varint from the same bytes.
        let _ = get_varint(&mut whole)?;
        Ok(Frame {
            kind,
            payload: whole,
        })
    }

    /// Encode this frame.
    pub fn encode(&self, buf: &mut impl BufMut) {
        Self::put_header(buf, self.kind, self.payload.len());
        buf.put_slice(&self.payload);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::BytesMut;
    use proptest::prelude::*;

    #[test]
    fn snapshot() {
        let f = Frame {
            kind: 0x10,
            payload: Bytes::from_static(b"hi"),
        };
        let mut b = Vec::new();
        f.encode(&mut b);
        assert_eq!(b, [0x10, 0x02, b'h', b'i']);
    }

    #[test]
    fn too_long_is_refused_before_buffering() {
        let mut b = Vec::new();
        Frame::put_header(&mut b, 1, MAX_PAYLOAD + 1);
        assert!(matches!(Frame::check(&b), Err(DecodeError::TooLong { .. })));
    }

    proptest! {
        #[test]
        fn roundtrip(kind: u8, payload in proptest::collection::vec(any::<u8>(), 0..2000)) {
            let f = Frame { kind, payload: Bytes::from(payload) };
            let mut b = BytesMut::new();
            f.encode(&mut b);
            prop_assert_eq!(b.len(), Frame::encoded_len(f.payload.len()));
            // Every strict prefix is Short and leaves the buffer untouched.
            for cut in [0, 1, b.len() / 2, b.len() - 1] {
                let mut p = BytesMut::from(&b[..cut]);
                prop_assert_eq!(Frame::decode(&mut p), Err(DecodeError::Short));
                prop_assert_eq!(p.len(), cut);
            }
            prop_assert_eq!(Frame::decode(&mut b), Ok(f));
            prop_assert!(b.is_empty());
        }

        #[test]
        fn decoder_total(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let mut b = BytesMut::from(&bytes[..]);
            while let Ok(f) = Frame::decode(&mut b) {
                prop_assert!(f.payload.len() <= MAX_PAYLOAD);
            }
        }
    }
}
