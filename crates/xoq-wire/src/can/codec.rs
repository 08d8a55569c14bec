//! Binary codec: one [`TimedFrame`], batches of them, and the content of a MoQ track frame.

use bytes::{Buf, BufMut, Bytes};

use super::frame::{CanFrame, FD_MAX_LEN, TimedFrame, invalid};
use crate::coding::{DecodeError, finish_exact, get_varint, put_varint, varint_len};
use crate::frame::MAX_PAYLOAD;

/// Most frames in one batch; a larger declared count is refused.
pub const MAX_BATCH: usize = 1024;
/// Encoded size of a frame without data: the smallest a frame can be.
pub const TIMED_HEADER_LEN: usize = 14;

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

impl CanFrame {
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
}

/// Append one frame in the layout of the [module docs](crate::can). The frame should be valid
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

pub(super) fn batch_len(frames: &[TimedFrame]) -> usize {
    varint_len(frames.len() as u64) + frames.iter().map(timed_len).sum::<usize>()
}

pub(super) fn put_batch(buf: &mut impl BufMut, frames: &[TimedFrame]) {
    put_varint(buf, frames.len() as u64);
    for f in frames {
        encode_timed(f, buf);
    }
}

pub(super) fn get_batch(p: &mut impl Buf) -> Result<Vec<TimedFrame>, DecodeError> {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::can::testing::*;
    use proptest::prelude::*;

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
    }
}
