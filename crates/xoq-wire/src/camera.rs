//! Camera stream frames (P2P), sans-IO.
//!
//! The codec is chosen by ALPN, in the client's order of preference ([`ALPN_H264`],
//! [`ALPN_JPEG`]); the version is part of the ALPN. On the stream, every video frame is
//!
//! ```text
//! length varint | flags u8 | seq varint | timestamp_us u64 | width u16 | height u16 | data
//! ```
//!
//! The viewer opens one bidirectional stream and sends [`ViewerMsg`]s on it: credits (the
//! number of further frames it is ready to take: [`INITIAL_CREDIT`] or
//! [`INITIAL_CREDIT_H264`] at the start, then one per frame it consumes), mode requests and
//! keyframe requests. A server sends a frame only against a credit, so a slow viewer skips
//! frames instead of building a backlog in the transport: a JPEG viewer gets the newest
//! frame, an H.264 viewer resumes at the next keyframe.
//!
//! `length` counts everything after itself and is at most [`MAX_FRAME`], checked before
//! anything is buffered. `flags` bit 0 marks a keyframe (a JPEG frame always is one; an H.264
//! frame that starts a GoP with SPS/PPS in band); other bits must be 0. `timestamp_us` is the
//! capture time (µs since the Unix epoch), carried end to end so a viewer can measure latency.

use bytes::{Buf, BufMut, Bytes};

use crate::coding::{DecodeError, get_u8, get_u16, get_u64, get_varint, put_varint, varint_len};

/// ALPN of the H.264 camera stream, version 1.
pub const ALPN_H264: &[u8] = b"xoq/camera-h264/1";
/// ALPN of the JPEG camera stream, version 1.
pub const ALPN_JPEG: &[u8] = b"xoq/camera-jpeg/1";

/// QUIC application close code a camera server sends its viewers when the capture has
/// stopped for good (camera unplugged, driver failing); the close reason says why.
pub const CLOSE_CAMERA_FAILED: u32 = 503;

/// Largest encoded frame accepted: a 4K JPEG at high quality fits with room to spare.
pub const MAX_FRAME: usize = 16 << 20;

/// Credits a viewer grants when it opens the stream: one frame in flight while it decodes
/// the previous one.
pub const INITIAL_CREDIT: u64 = 2;
/// Most credits a server holds for one viewer (more are ignored).
pub const MAX_CREDIT: u64 = 16;

const FLAG_KEYFRAME: u8 = 1;

/// Credits an H.264 viewer grants at the start: H.264 frames depend on each other, so the
/// viewer keeps more in flight (about a quarter second at 30 fps) before it is counted slow.
pub const INITIAL_CREDIT_H264: u64 = 8;

/// Largest width or height a viewer may ask for.
pub const MAX_SIDE: u32 = 7680;
/// Largest frame rate a viewer may ask for.
pub const MAX_FPS: u32 = 240;

/// A message from a viewer to the camera server, on the viewer's stream.
///
/// ```text
/// 0x00 | n varint                          Credit: n more frames may be sent
/// 0x01 | width varint | height varint | fps varint   SetMode (0 = keep the current value)
/// 0x02                                     Keyframe: the viewer's decoder needs an IDR
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ViewerMsg {
    /// Room for `n` more frames (capped at [`MAX_CREDIT`]).
    Credit(u64),
    /// Ask the camera for another mode. It applies to every viewer (there is one capture);
    /// the frames' width and height tell what is really delivered.
    SetMode {
        /// Wanted width, 0 = keep.
        width: u32,
        /// Wanted height, 0 = keep.
        height: u32,
        /// Wanted frame rate, 0 = keep.
        fps: u32,
    },
    /// Ask for a keyframe (after a decode error).
    Keyframe,
}

impl ViewerMsg {
    /// Append the encoded message.
    pub fn encode(&self, buf: &mut impl BufMut) {
        match *self {
            ViewerMsg::Credit(n) => {
                buf.put_u8(0);
                put_varint(buf, n.min(MAX_CREDIT));
            }
            ViewerMsg::SetMode { width, height, fps } => {
                buf.put_u8(1);
                put_varint(buf, u64::from(width.min(MAX_SIDE)));
                put_varint(buf, u64::from(height.min(MAX_SIDE)));
                put_varint(buf, u64::from(fps.min(MAX_FPS)));
            }
            ViewerMsg::Keyframe => buf.put_u8(2),
        }
    }

    /// Decode one message from the front of a stream buffer; [`DecodeError::Short`] consumes
    /// nothing. Out-of-range values are refused rather than clamped: they mean a broken peer.
    pub fn decode_from(buf: &mut bytes::BytesMut) -> Result<ViewerMsg, DecodeError> {
        let mut p = &buf[..];
        let before = p.remaining();
        let msg = match get_u8(&mut p)? {
            0 => ViewerMsg::Credit(get_varint(&mut p)?.min(MAX_CREDIT)),
            1 => {
                let mut side = |field| {
                    let v = get_varint(&mut p)?;
                    if v > u64::from(MAX_SIDE) {
                        return Err(DecodeError::Invalid {
                            field,
                            reason: "over the largest picture side",
                        });
                    }
                    Ok(v as u32)
                };
                let width = side("width")?;
                let height = side("height")?;
                let fps = get_varint(&mut p)?;
                if fps > u64::from(MAX_FPS) {
                    return Err(DecodeError::Invalid {
                        field: "fps",
                        reason: "over the largest frame rate",
                    });
                }
                ViewerMsg::SetMode {
                    width,
                    height,
                    fps: fps as u32,
                }
            }
            2 => ViewerMsg::Keyframe,
            k => return Err(DecodeError::UnknownKind(k)),
        };
        let used = before - p.remaining();
        buf.advance(used);
        Ok(msg)
    }
}
const HEADER_MAX: usize = 1 + 8 + 8 + 2 + 2;

/// Video codecs a camera stream can carry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Codec {
    /// H.264 Annex-B access units.
    H264,
    /// One JPEG image per frame.
    Jpeg,
}

impl Codec {
    /// The ALPN that selects this codec.
    pub fn alpn(self) -> &'static [u8] {
        match self {
            Codec::H264 => ALPN_H264,
            Codec::Jpeg => ALPN_JPEG,
        }
    }

    /// The codec an ALPN selects, if it is one of ours.
    pub fn from_alpn(alpn: &[u8]) -> Option<Codec> {
        match alpn {
            ALPN_H264 => Some(Codec::H264),
            ALPN_JPEG => Some(Codec::Jpeg),
            _ => None,
        }
    }
}

/// One encoded video frame.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct VideoFrame {
    /// Frame number since the capture started (gaps mean frames were skipped).
    pub seq: u64,
    /// Capture time, µs since the Unix epoch.
    pub timestamp_us: u64,
    /// Picture width in pixels.
    pub width: u16,
    /// Picture height in pixels.
    pub height: u16,
    /// Decodable on its own (JPEG, or an H.264 IDR with SPS/PPS).
    pub keyframe: bool,
    /// The encoded picture.
    pub data: Bytes,
}

impl VideoFrame {
    fn body_len(&self) -> usize {
        1 + varint_len(self.seq) + 8 + 2 + 2 + self.data.len()
    }

    /// Append the encoded frame to `buf`. Frames over [`MAX_FRAME`] are the caller's bug:
    /// the encoder refuses them rather than send what every decoder rejects.
    pub fn encode(&self, buf: &mut impl BufMut) -> Result<(), DecodeError> {
        let len = self.body_len();
        if len > MAX_FRAME {
            return Err(DecodeError::TooLong {
                len: len as u64,
                max: MAX_FRAME as u64,
            });
        }
        put_varint(buf, len as u64);
        buf.put_u8(if self.keyframe { FLAG_KEYFRAME } else { 0 });
        put_varint(buf, self.seq);
        buf.put_u64(self.timestamp_us);
        buf.put_u16(self.width);
        buf.put_u16(self.height);
        buf.put_slice(&self.data);
        Ok(())
    }

    /// Decode one frame from the front of `buf`, advancing it past the frame.
    /// [`DecodeError::Short`] (nothing consumed) means: read more bytes and call again.
    pub fn decode(buf: &mut Bytes) -> Result<VideoFrame, DecodeError> {
        let (prefix, len) = Self::extent(buf)?;
        let mut body = buf.slice(prefix..prefix + len);
        let frame = crate::coding::finish_exact(0, Self::decode_body(&mut body))?;
        buf.advance(prefix + len);
        Ok(frame)
    }

    /// Where the frame at the front of `buf` lies: (length prefix size, body length), once
    /// all of it is there. The declared length is checked before anything is buffered.
    fn extent(buf: &[u8]) -> Result<(usize, usize), DecodeError> {
        let mut peek = buf;
        let len = get_varint(&mut peek)?;
        if len > MAX_FRAME as u64 {
            return Err(DecodeError::TooLong {
                len,
                max: MAX_FRAME as u64,
            });
        }
        if peek.remaining() < len as usize {
            return Err(DecodeError::Short);
        }
        Ok((buf.len() - peek.remaining(), len as usize))
    }

    /// [`decode`](Self::decode) for a stream reader's buffer: the frame's bytes are split off
    /// without copying.
    pub fn decode_from(buf: &mut bytes::BytesMut) -> Result<VideoFrame, DecodeError> {
        let (prefix, len) = Self::extent(buf)?;
        let mut whole = buf.split_to(prefix + len).freeze();
        Self::decode(&mut whole)
    }

    fn decode_body(body: &mut Bytes) -> Result<VideoFrame, DecodeError> {
        let mut p = &body[..body.len().min(HEADER_MAX)];
        let before = p.remaining();
        let flags = get_u8(&mut p)?;
        if flags & !FLAG_KEYFRAME != 0 {
            return Err(DecodeError::Invalid {
                field: "flags",
                reason: "unknown flag bits set",
            });
        }
        let seq = get_varint(&mut p)?;
        let timestamp_us = get_u64(&mut p)?;
        let width = get_u16(&mut p)?;
        let height = get_u16(&mut p)?;
        let header = before - p.remaining();
        Ok(VideoFrame {
            seq,
            timestamp_us,
            width,
            height,
            keyframe: flags & FLAG_KEYFRAME != 0,
            data: body.slice(header..),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn frame() -> VideoFrame {
        VideoFrame {
            seq: 300,
            timestamp_us: 0x0102_0304_0506_0708,
            width: 640,
            height: 480,
            keyframe: true,
            data: Bytes::from_static(&[0xFF, 0xD8, 0xFF, 0xD9]),
        }
    }

    #[test]
    fn byte_snapshot() {
        let mut b = Vec::new();
        frame().encode(&mut b).expect("encode");
        assert_eq!(
            b,
            [
                0x13, 0x01, 0x41, 0x2C, 1, 2, 3, 4, 5, 6, 7, 8, 0x02, 0x80, 0x01, 0xE0, 0xFF, 0xD8,
                0xFF, 0xD9
            ]
        );
    }

    #[test]
    fn partial_input_is_short_and_consumes_nothing() {
        let mut b = Vec::new();
        frame().encode(&mut b).expect("encode");
        for cut in 0..b.len() {
            let mut part = Bytes::copy_from_slice(&b[..cut]);
            assert_eq!(VideoFrame::decode(&mut part), Err(DecodeError::Short));
            assert_eq!(part.len(), cut);
        }
    }

    #[test]
    fn oversized_length_is_refused_before_buffering() {
        let mut b = Vec::new();
        put_varint(&mut b, MAX_FRAME as u64 + 1);
        let mut bytes = Bytes::from(b);
        assert!(matches!(
            VideoFrame::decode(&mut bytes),
            Err(DecodeError::TooLong { .. })
        ));
    }

    #[test]
    fn unknown_flags_and_truncated_headers_are_invalid() {
        let mut bytes = Bytes::from_static(&[0x02, 0x02, 0x00]);
        assert!(matches!(
            VideoFrame::decode(&mut bytes),
            Err(DecodeError::Invalid { .. })
        ));
        let mut bytes = Bytes::from_static(&[0x03, 0x01, 0x00, 0x00]);
        assert!(matches!(
            VideoFrame::decode(&mut bytes),
            Err(DecodeError::Invalid { .. })
        ));
    }

    #[test]
    fn stream_buffer_decoding_splits_frames() {
        let mut b = bytes::BytesMut::new();
        let mut enc = Vec::new();
        frame().encode(&mut enc).expect("encode");
        b.extend_from_slice(&enc);
        b.extend_from_slice(&enc[..5]);
        assert_eq!(VideoFrame::decode_from(&mut b), Ok(frame()));
        assert_eq!(VideoFrame::decode_from(&mut b), Err(DecodeError::Short));
        assert_eq!(b.len(), 5);
    }

    #[test]
    fn viewer_messages_round_trip_and_are_bounded() {
        let mut b = bytes::BytesMut::new();
        let msgs = [
            ViewerMsg::Credit(2),
            ViewerMsg::SetMode {
                width: 1280,
                height: 720,
                fps: 0,
            },
            ViewerMsg::Keyframe,
        ];
        for m in msgs {
            m.encode(&mut b);
        }
        ViewerMsg::Credit(1_000_000).encode(&mut b);
        assert_eq!(&b[..3], &[0x00, 0x02, 0x01]);
        for m in msgs {
            assert_eq!(ViewerMsg::decode_from(&mut b), Ok(m));
        }
        assert_eq!(
            ViewerMsg::decode_from(&mut b),
            Ok(ViewerMsg::Credit(MAX_CREDIT))
        );
        b.extend_from_slice(&[0x01, 0x40]);
        assert_eq!(ViewerMsg::decode_from(&mut b), Err(DecodeError::Short));
        assert_eq!(b.len(), 2, "a short message consumes nothing");
        let mut huge = bytes::BytesMut::new();
        huge.extend_from_slice(&[0x01, 0x80, 0x01, 0x00, 0x00, 0x00, 0x00]);
        assert!(matches!(
            ViewerMsg::decode_from(&mut huge),
            Err(DecodeError::Invalid { .. })
        ));
        let mut unknown = bytes::BytesMut::from(&[0x07][..]);
        assert_eq!(
            ViewerMsg::decode_from(&mut unknown),
            Err(DecodeError::UnknownKind(7))
        );
    }

    #[test]
    fn alpn_names_the_codec() {
        for c in [Codec::H264, Codec::Jpeg] {
            assert_eq!(Codec::from_alpn(c.alpn()), Some(c));
        }
        assert_eq!(Codec::from_alpn(b"xoq/camera-h264/2"), None);
    }

    proptest! {
        #[test]
        fn roundtrip(seq in any::<u64>(), ts in any::<u64>(), w in any::<u16>(), h in any::<u16>(),
                     key in any::<bool>(), data in proptest::collection::vec(any::<u8>(), 0..2000)) {
            let f = VideoFrame { seq: seq & crate::coding::VARINT_MAX, timestamp_us: ts, width: w,
                                 height: h, keyframe: key, data: Bytes::from(data) };
            let mut b = Vec::new();
            f.encode(&mut b).expect("encode");
            b.extend_from_slice(b"next");
            let mut bytes = Bytes::from(b);
            prop_assert_eq!(VideoFrame::decode(&mut bytes), Ok(f));
            prop_assert_eq!(&bytes[..], b"next");
        }

        #[test]
        fn any_bytes_as_viewer_messages(b in proptest::collection::vec(any::<u8>(), 0..64)) {
            let mut buf = bytes::BytesMut::from(&b[..]);
            while !buf.is_empty() {
                let before = buf.len();
                match ViewerMsg::decode_from(&mut buf) {
                    Ok(m) => {
                        prop_assert!(buf.len() < before);
                        let mut again = bytes::BytesMut::new();
                        m.encode(&mut again);
                        prop_assert_eq!(ViewerMsg::decode_from(&mut again), Ok(m));
                    }
                    Err(DecodeError::Short) => { prop_assert_eq!(buf.len(), before); break; }
                    Err(_) => break,
                }
            }
        }

        #[test]
        fn any_bytes_decode_or_fail_cleanly(b in proptest::collection::vec(any::<u8>(), 0..600)) {
            let mut bytes = Bytes::from(b);
            let before = bytes.len();
            match VideoFrame::decode(&mut bytes) {
                Ok(f) => prop_assert!(f.data.len() <= before),
                Err(DecodeError::Short) => prop_assert_eq!(bytes.len(), before),
                Err(_) => {}
            }
        }
    }
}
