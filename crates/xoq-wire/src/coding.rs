//! Primitive encodings shared by every codec: QUIC variable-length integers, bounded strings.

use bytes::{Buf, BufMut};

/// Why bytes could not be decoded. Stream readers treat [`DecodeError::Short`] as "read more";
/// every other variant means the peer sent something invalid and the stream should be closed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DecodeError {
    /// More bytes are needed; the buffer was not consumed.
    #[error("incomplete message: more bytes needed")]
    Short,
    /// A message declared a length over the protocol maximum.
    #[error("message of {len} bytes exceeds the maximum of {max}")]
    TooLong {
        /// Declared length.
        len: u64,
        /// Maximum allowed.
        max: u64,
    },
    /// A message had bytes left over after its last field.
    #[error("{0} unexpected trailing bytes in message")]
    Long(usize),
    /// Unknown message kind: the peer speaks a newer or different protocol.
    #[error("unknown message kind 0x{0:02x}")]
    UnknownKind(u8),
    /// A field had a value outside its domain.
    #[error("invalid {field}: {reason}")]
    Invalid {
        /// Field name.
        field: &'static str,
        /// What was wrong.
        reason: &'static str,
    },
}

/// Largest value a QUIC varint can hold (2^62 - 1).
pub const VARINT_MAX: u64 = (1 << 62) - 1;

/// Encoded size of `v` as a QUIC varint. Values over [`VARINT_MAX`] are clamped by the encoder.
pub fn varint_len(v: u64) -> usize {
    match v {
        0..=63 => 1,
        64..=16383 => 2,
        16384..=1_073_741_823 => 4,
        _ => 8,
    }
}

/// Write `v` as a QUIC variable-length integer (RFC 9000 §16), the integer encoding MoQ uses,
/// so browser code can share one decoder. Values above [`VARINT_MAX`] are clamped.
pub fn put_varint(buf: &mut impl BufMut, v: u64) {
    let v = v.min(VARINT_MAX);
    match varint_len(v) {
        1 => buf.put_u8(v as u8),
        2 => buf.put_u16(0x4000 | v as u16),
        4 => buf.put_u32(0x8000_0000 | v as u32),
        _ => buf.put_u64(0xc000_0000_0000_0000 | v),
    }
}

/// Read a QUIC varint. Returns [`DecodeError::Short`] without consuming if the buffer is short.
pub fn get_varint(buf: &mut impl Buf) -> Result<u64, DecodeError> {
    let first = *buf.chunk().first().ok_or(DecodeError::Short)?;
    let len = 1usize << (first >> 6);
    if buf.remaining() < len {
        return Err(DecodeError::Short);
    }
    Ok(match len {
        1 => u64::from(buf.get_u8() & 0x3f),
        2 => u64::from(buf.get_u16() & 0x3fff),
        4 => u64::from(buf.get_u32() & 0x3fff_ffff),
        _ => buf.get_u64() & 0x3fff_ffff_ffff_ffff,
    })
}

/// Fixed-size field reads that fail with `Short` instead of panicking like `Buf::get_*`.
pub fn get_u8(buf: &mut impl Buf) -> Result<u8, DecodeError> {
    if buf.remaining() < 1 {
        return Err(DecodeError::Short);
    }
    Ok(buf.get_u8())
}

/// Read a big-endian u16, or `Short`.
pub fn get_u16(buf: &mut impl Buf) -> Result<u16, DecodeError> {
    if buf.remaining() < 2 {
        return Err(DecodeError::Short);
    }
    Ok(buf.get_u16())
}

/// Read a big-endian u32, or `Short`.
pub fn get_u32(buf: &mut impl Buf) -> Result<u32, DecodeError> {
    if buf.remaining() < 4 {
        return Err(DecodeError::Short);
    }
    Ok(buf.get_u32())
}

/// Read a big-endian u64, or `Short`.
pub fn get_u64(buf: &mut impl Buf) -> Result<u64, DecodeError> {
    if buf.remaining() < 8 {
        return Err(DecodeError::Short);
    }
    Ok(buf.get_u64())
}

/// Read a boolean byte (0 or 1; anything else is invalid so that a future flag byte is not
/// silently misread as `true`).
pub fn get_bool(buf: &mut impl Buf, field: &'static str) -> Result<bool, DecodeError> {
    match get_u8(buf)? {
        0 => Ok(false),
        1 => Ok(true),
        _ => Err(DecodeError::Invalid {
            field,
            reason: "boolean must be 0 or 1",
        }),
    }
}

/// Exact-consume rule of every message: its container (an envelope payload or a MoQ frame) is
/// complete, so a `Short` while decoding fields is a truncated message (`Invalid`, never "read
/// more"), and `left` bytes after the last field are an error (`Long`).
pub fn finish_exact<T>(left: usize, value: Result<T, DecodeError>) -> Result<T, DecodeError> {
    let value = value.map_err(|e| match e {
        DecodeError::Short => DecodeError::Invalid {
            field: "payload",
            reason: "truncated message",
        },
        e => e,
    })?;
    if left != 0 {
        return Err(DecodeError::Long(left));
    }
    Ok(value)
}

/// Maximum length of a string field (names, error messages).
pub const MAX_STRING: usize = 1024;

/// Write a varint-length-prefixed UTF-8 string, truncated to [`MAX_STRING`] bytes on a char
/// boundary (strings are human-readable diagnostics; truncating beats failing to report).
pub fn put_string(buf: &mut impl BufMut, s: &str) {
    let mut end = s.len().min(MAX_STRING);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    put_varint(buf, end as u64);
    buf.put_slice(&s.as_bytes()[..end]);
}

/// Encoded size of a string written by [`put_string`].
pub fn string_len(s: &str) -> usize {
    let mut end = s.len().min(MAX_STRING);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    varint_len(end as u64) + end
}

/// Read a string written by [`put_string`]. The length is checked against the bytes present
/// and [`MAX_STRING`] before allocating.
pub fn get_string(buf: &mut impl Buf, field: &'static str) -> Result<String, DecodeError> {
    let len = get_varint(buf)?;
    if len > MAX_STRING as u64 {
        return Err(DecodeError::TooLong {
            len,
            max: MAX_STRING as u64,
        });
    }
    let len = len as usize;
    if buf.remaining() < len {
        return Err(DecodeError::Short);
    }
    let mut v = vec![0u8; len];
    buf.copy_to_slice(&mut v);
    String::from_utf8(v).map_err(|_| DecodeError::Invalid {
        field,
        reason: "not UTF-8",
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn varint_snapshots() {
        // RFC 9000 §A.1 sample values pin the encoding.
        let cases: &[(u64, &[u8])] = &[
            (37, &[0x25]),
            (15293, &[0x7b, 0xbd]),
            (494_878_333, &[0x9d, 0x7f, 0x3e, 0x7d]),
            (
                151_288_809_941_952_652,
                &[0xc2, 0x19, 0x7c, 0x5e, 0xff, 0x14, 0xe8, 0x8c],
            ),
        ];
        for (v, bytes) in cases {
            let mut b = Vec::new();
            put_varint(&mut b, *v);
            assert_eq!(&b[..], *bytes);
            assert_eq!(get_varint(&mut &bytes[..]), Ok(*v));
        }
    }

    #[test]
    fn short_varint_is_short() {
        assert_eq!(get_varint(&mut &[][..]), Err(DecodeError::Short));
        assert_eq!(get_varint(&mut &[0x40][..]), Err(DecodeError::Short));
    }

    proptest! {
        #[test]
        fn varint_roundtrip(v in 0..=VARINT_MAX) {
            let mut b = Vec::new();
            put_varint(&mut b, v);
            prop_assert_eq!(b.len(), varint_len(v));
            prop_assert_eq!(get_varint(&mut &b[..]), Ok(v));
        }

        #[test]
        fn string_roundtrip(s in ".{0,300}") {
            let mut b = Vec::new();
            put_string(&mut b, &s);
            prop_assert_eq!(b.len(), string_len(&s));
            prop_assert_eq!(get_string(&mut &b[..], "s"), Ok(s));
        }

        #[test]
        fn string_decoder_total(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
            let _ = get_string(&mut &bytes[..], "s");
        }
    }
}
