//! H.264 in software (Cisco's OpenH264, built from source by the `openh264` crate).
//!
//! The encoder is set up for latency, not for archive quality: constrained baseline (no
//! B-frames, so every access unit decodes to a picture at once), one slice per frame, one
//! thread, rate control by bitrate without skipped frames, a configurable GoP, and SPS/PPS
//! in band before every IDR so any keyframe is a starting point (the MoQ web player and a
//! late viewer both need that). Access units are Annex-B byte streams.
//!
//! The decoder takes bytes from the network. OpenH264 checks the bitstream itself and bounds
//! pictures by the H.264 level limits; on top of that a decode that panics on the Rust side is
//! contained and turned into an error, the picture size is checked against the caller's limit,
//! and after an error the decoder waits for the next keyframe before it shows pictures again,
//! so a damaged P-frame never yields a smeared picture that looks valid.

use std::panic::{AssertUnwindSafe, catch_unwind};

use openh264::OpenH264API;
use openh264::decoder::{DecodedYUV, Decoder, DecoderConfig};
use openh264::encoder::{
    BitRate, Complexity, Encoder, EncoderConfig, FrameRate, FrameType, IntraFramePeriod, Profile,
    RateControlMode, UsageType,
};
use openh264::formats::{RgbSliceU8, YUVBuffer, YUVSlices, YUVSource};

use crate::{ChannelOrder, MediaError};

const CODEC: &str = "H.264";

fn undecodable(reason: impl std::fmt::Display) -> MediaError {
    MediaError::Undecodable {
        codec: CODEC,
        reason: reason.to_string(),
    }
}

/// Encoder settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct H264Config {
    /// Frames per second the source delivers (rate control uses it).
    pub fps: u32,
    /// Target bitrate in bits per second.
    pub bitrate: u32,
    /// Frames per GoP: a keyframe every `gop` frames (plus any requested ones).
    pub gop: u32,
}

impl H264Config {
    /// Defaults for a `width × height` camera at `fps`: a GoP of one second and about
    /// 0.1 bit per pixel per frame (2.8 Mbit/s at 720p30), clamped to 0.3–20 Mbit/s.
    pub fn for_size(width: u32, height: u32, fps: u32) -> Self {
        let bits = u64::from(width) * u64::from(height) * u64::from(fps) / 10;
        Self {
            fps: fps.max(1),
            bitrate: bits.clamp(300_000, 20_000_000) as u32,
            gop: fps.max(1),
        }
    }
}

/// One encoded access unit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EncodedUnit {
    /// Annex-B bytes (start codes included).
    pub data: Vec<u8>,
    /// An IDR with SPS/PPS: decodable on its own.
    pub keyframe: bool,
}

/// Encodes pictures to H.264 access units.
pub struct H264Encoder {
    inner: Encoder,
    cfg: H264Config,
    yuv: Option<YUVBuffer>,
}

impl std::fmt::Debug for H264Encoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("H264Encoder")
            .field("cfg", &self.cfg)
            .finish()
    }
}

impl H264Encoder {
    /// A low-latency encoder (see the module docs).
    pub fn new(cfg: H264Config) -> Result<Self, MediaError> {
        let config = EncoderConfig::new()
            .usage_type(UsageType::CameraVideoRealTime)
            .profile(Profile::Baseline)
            .complexity(Complexity::Low)
            .rate_control_mode(RateControlMode::Bitrate)
            .bitrate(BitRate::from_bps(cfg.bitrate))
            .max_frame_rate(FrameRate::from_hz(cfg.fps as f32))
            .intra_frame_period(IntraFramePeriod::from_num_frames(cfg.gop.max(1)))
            // Every captured frame is sent: the viewer counts on frame numbers, and a
            // skipped frame would look like a network loss.
            .skip_frames(false)
            .scene_change_detect(false)
            .num_threads(1);
        let mut inner = Encoder::with_api_config(OpenH264API::from_source(), config)
            .map_err(|e| undecodable(format!("encoder setup: {e}")))?;
        // OpenH264 warns on stderr at initialisation that the bitrate cannot be held without
        // frame skipping, which we turn off on purpose (every captured frame is sent). Keep
        // its errors, drop that warning. The level is read before the encoder's first frame.
        let mut level: u32 = openh264_sys2::WELS_LOG_ERROR as u32;
        // SAFETY: the encoder is created; TRACE_LEVEL is one of the options OpenH264 accepts
        // before initialisation, and it reads one u32 through the pointer during the call.
        unsafe {
            inner.raw_api().set_option(
                openh264_sys2::ENCODER_OPTION_TRACE_LEVEL,
                (&raw mut level).cast(),
            );
        }
        Ok(Self {
            inner,
            cfg,
            yuv: None,
        })
    }

    /// The settings.
    pub fn config(&self) -> H264Config {
        self.cfg
    }

    /// Make the next frame an IDR (a new viewer, a decoder that lost its way).
    pub fn force_keyframe(&mut self) {
        self.inner.force_intra_frame();
    }

    /// Encode packed RGB of `width × height` (even sizes).
    pub fn encode_rgb(
        &mut self,
        rgb: &[u8],
        width: u32,
        height: u32,
    ) -> Result<EncodedUnit, MediaError> {
        let (w, h) = (width as usize, height as usize);
        if rgb.len() != w * h * 3 || w == 0 || h == 0 || w % 2 == 1 || h % 2 == 1 {
            return Err(MediaError::BadPicture {
                len: rgb.len(),
                width,
                height,
            });
        }
        // Reuse the YUV buffer between frames of the same size: no per-frame allocation.
        let yuv = match &mut self.yuv {
            Some(b) if b.dimensions() == (w, h) => b,
            slot => slot.insert(YUVBuffer::new(w, h)),
        };
        yuv.read_rgb8(RgbSliceU8::new(rgb, (w, h)));
        encode_yuv(&mut self.inner, yuv)
    }

    /// Encode planar I420 (`Y`, then `U` and `V` at half resolution) of `width × height`.
    pub fn encode_i420(
        &mut self,
        i420: &[u8],
        width: u32,
        height: u32,
    ) -> Result<EncodedUnit, MediaError> {
        let (w, h) = (width as usize, height as usize);
        let (cw, ch) = (w / 2, h / 2);
        if i420.len() != w * h + 2 * cw * ch || w == 0 || h == 0 || w % 2 == 1 || h % 2 == 1 {
            return Err(MediaError::BadPicture {
                len: i420.len(),
                width,
                height,
            });
        }
        let (y, uv) = i420.split_at(w * h);
        let (u, v) = uv.split_at(cw * ch);
        encode_yuv(
            &mut self.inner,
            &YUVSlices::new((y, u, v), (w, h), (w, cw, cw)),
        )
    }
}

/// One picture through the encoder (a free function: the caller's YUV buffer may be a
/// field of the same `H264Encoder`).
fn encode_yuv(enc: &mut Encoder, yuv: &impl YUVSource) -> Result<EncodedUnit, MediaError> {
    let stream = enc
        .encode(yuv)
        .map_err(|e| undecodable(format!("encode: {e}")))?;
    let keyframe = matches!(stream.frame_type(), FrameType::IDR);
    let data = stream.to_vec();
    if data.is_empty() {
        return Err(undecodable("the encoder produced no data"));
    }
    Ok(EncodedUnit { data, keyframe })
}

/// A decoded H.264 picture, borrowed from the decoder until the next call.
pub struct H264Picture<'a> {
    yuv: DecodedYUV<'a>,
}

impl H264Picture<'_> {
    /// Width in pixels.
    pub fn width(&self) -> u32 {
        self.yuv.dimensions().0 as u32
    }

    /// Height in pixels.
    pub fn height(&self) -> u32 {
        self.yuv.dimensions().1 as u32
    }

    /// Write the picture as packed 8-bit pixels into `out` (`width × height × 3` bytes).
    pub fn write_packed(&self, order: ChannelOrder, out: &mut [u8]) -> Result<(), MediaError> {
        let (w, h) = self.yuv.dimensions();
        let (ys, us, vs) = self.yuv.strides();
        crate::convert::i420_to_packed(
            (self.yuv.y(), self.yuv.u(), self.yuv.v()),
            (ys, us, vs),
            (w, h),
            order,
            out,
        )
    }
}

/// Decodes H.264 access units from the network (see the module docs for the guarantees).
pub struct H264Decoder {
    inner: Decoder,
    max_pixels: usize,
    /// Set after an error: pictures are withheld until the next keyframe.
    need_keyframe: bool,
    /// Set after a contained panic: the decoder is rebuilt before the next unit.
    rebuild: bool,
}

impl std::fmt::Debug for H264Decoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("H264Decoder")
            .field("max_pixels", &self.max_pixels)
            .field("need_keyframe", &self.need_keyframe)
            .finish()
    }
}

fn new_decoder() -> Result<Decoder, MediaError> {
    Decoder::with_api_config(OpenH264API::from_source(), DecoderConfig::new())
        .map_err(|e| undecodable(format!("decoder setup: {e}")))
}

impl H264Decoder {
    /// A decoder that refuses pictures over `max_pixels`. It starts waiting for a keyframe.
    pub fn new(max_pixels: usize) -> Result<Self, MediaError> {
        Ok(Self {
            inner: new_decoder()?,
            max_pixels,
            need_keyframe: true,
            rebuild: false,
        })
    }

    /// True while the decoder waits for a keyframe (at the start, and after an error).
    pub fn waiting_for_keyframe(&self) -> bool {
        self.need_keyframe
    }

    /// Decode one access unit. `Ok(None)`: no picture to show (parameter sets only, or the
    /// decoder is waiting for a keyframe after an error). An error leaves the decoder usable:
    /// it shows pictures again from the next keyframe.
    pub fn decode(&mut self, au: &[u8]) -> Result<Option<H264Picture<'_>>, MediaError> {
        let keyframe = is_keyframe(au);
        if self.need_keyframe && !keyframe {
            return Ok(None);
        }
        if self.rebuild {
            self.inner = new_decoder()?;
            self.rebuild = false;
        }
        // Disjoint borrows: the picture borrows the decoder while the flags stay writable.
        let Self {
            inner,
            max_pixels,
            need_keyframe,
            rebuild,
        } = self;
        // Contain a panic on the Rust side of the bindings; the decoder is rebuilt after one.
        let outcome = catch_unwind(AssertUnwindSafe(move || {
            let decoder = inner; // moved in: the picture may outlive the call
            decoder.decode(au)
        }));
        match outcome {
            Ok(Ok(Some(yuv))) => {
                let (w, h) = yuv.dimensions();
                if w.saturating_mul(h) > *max_pixels {
                    *need_keyframe = true;
                    return Err(MediaError::TooLarge {
                        width: w,
                        height: h,
                        max_pixels: *max_pixels,
                    });
                }
                *need_keyframe = false;
                Ok(Some(H264Picture { yuv }))
            }
            Ok(Ok(None)) => Ok(None),
            Ok(Err(e)) => {
                *need_keyframe = true;
                Err(undecodable(e))
            }
            Err(_) => {
                *need_keyframe = true;
                *rebuild = true;
                Err(undecodable("decoder panicked on damaged input"))
            }
        }
    }
}

/// Iterate the NAL units of an Annex-B byte stream (without their start codes).
pub fn nal_units(stream: &[u8]) -> impl Iterator<Item = &[u8]> {
    let mut rest = stream;
    std::iter::from_fn(move || {
        // Skip to just past the next start code (00 00 01, or 00 00 00 01).
        let start = find_start_code(rest)?;
        rest = &rest[start..];
        let end = find_start_code(rest).map_or(rest.len(), |next| {
            // Back up over the start code and any zero bytes before it.
            let mut e = next - 3;
            while e > 0 && rest[e - 1] == 0 {
                e -= 1;
            }
            e
        });
        let nal = &rest[..end];
        rest = &rest[end..];
        Some(nal)
    })
}

/// Index just past the first `00 00 01` in `b`.
fn find_start_code(b: &[u8]) -> Option<usize> {
    b.windows(3).position(|w| w == [0, 0, 1]).map(|i| i + 3)
}

/// True when an access unit holds an IDR slice (NAL type 5).
pub fn is_keyframe(au: &[u8]) -> bool {
    nal_units(au).any(|n| n.first().is_some_and(|h| h & 0x1f == 5))
}

/// The WebCodecs codec string (`avc1.PPCCLL`) from the SPS in an access unit, if any.
pub fn codec_string(au: &[u8]) -> Option<String> {
    nal_units(au)
        .find(|n| n.first().is_some_and(|h| h & 0x1f == 7) && n.len() >= 4)
        .map(|sps| format!("avc1.{:02x}{:02x}{:02x}", sps[1], sps[2], sps[3]))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use xoq_device::camera::{TestPattern, read_stamp};

    fn stream(w: u32, h: u32, frames: u64, gop: u32) -> Vec<EncodedUnit> {
        let p = TestPattern::new(w, h).expect("size");
        let mut cfg = H264Config::for_size(w, h, 30);
        cfg.gop = gop;
        let mut enc = H264Encoder::new(cfg).expect("encoder");
        (0..frames)
            .map(|i| {
                enc.encode_rgb(&p.render(i, 1_000 + i), w, h)
                    .expect("encode")
            })
            .collect()
    }

    fn decode_rgb(dec: &mut H264Decoder, au: &[u8]) -> Option<(u32, u32, Vec<u8>)> {
        let pic = dec.decode(au).expect("decode")?;
        let mut out = vec![0; (pic.width() * pic.height() * 3) as usize];
        pic.write_packed(ChannelOrder::Rgb, &mut out)
            .expect("write");
        Some((pic.width(), pic.height(), out))
    }

    #[test]
    fn test_pattern_round_trips_with_its_stamp() {
        for (w, h) in [(640, 480), (1280, 720)] {
            let units = stream(w, h, 12, 30);
            assert!(units[0].keyframe, "a stream starts on a keyframe");
            assert!(units[1..].iter().all(|u| !u.keyframe));
            assert_eq!(
                codec_string(&units[0].data).as_deref().map(|c| &c[..7]),
                Some("avc1.42")
            );
            let mut dec = H264Decoder::new(crate::MAX_PIXELS).expect("decoder");
            let orig = TestPattern::new(w, h).expect("size");
            for (i, u) in units.iter().enumerate() {
                let (dw, dh, rgb) = decode_rgb(&mut dec, &u.data).expect("a picture per unit");
                assert_eq!((dw, dh), (w, h));
                assert_eq!(read_stamp(&rgb, w, h), Some((i as u64, 1_000 + i as u64)));
                let want = orig.render(i as u64, 1_000 + i as u64);
                let mae = want
                    .iter()
                    .zip(&rgb)
                    .map(|(a, b)| f64::from(a.abs_diff(*b)))
                    .sum::<f64>()
                    / want.len() as f64;
                assert!(mae < 12.0, "mean error {mae} at frame {i} {w}x{h}");
            }
        }
    }

    #[test]
    fn gop_and_forced_keyframes() {
        let units = stream(320, 240, 10, 4);
        let keys: Vec<usize> = (0..units.len()).filter(|&i| units[i].keyframe).collect();
        assert_eq!(keys, vec![0, 4, 8]);
        assert!(units.iter().all(|u| u.keyframe == is_keyframe(&u.data)));
        let p = TestPattern::new(320, 240).expect("size");
        let mut enc = H264Encoder::new(H264Config::for_size(320, 240, 30)).expect("encoder");
        let first = enc.encode_rgb(&p.render(0, 0), 320, 240).expect("encode");
        let second = enc.encode_rgb(&p.render(1, 0), 320, 240).expect("encode");
        enc.force_keyframe();
        let third = enc.encode_rgb(&p.render(2, 0), 320, 240).expect("encode");
        assert!(first.keyframe && !second.keyframe && third.keyframe);
        assert!(
            codec_string(&third.data).is_some(),
            "SPS/PPS in band on every IDR"
        );
    }

    #[test]
    fn bgr_is_rgb_swapped_and_bad_sizes_are_refused() {
        let units = stream(320, 240, 1, 30);
        let mut dec = H264Decoder::new(crate::MAX_PIXELS).expect("decoder");
        let pic = dec
            .decode(&units[0].data)
            .expect("decode")
            .expect("picture");
        let mut rgb = vec![0; 320 * 240 * 3];
        let mut bgr = vec![0; 320 * 240 * 3];
        pic.write_packed(ChannelOrder::Rgb, &mut rgb).expect("rgb");
        pic.write_packed(ChannelOrder::Bgr, &mut bgr).expect("bgr");
        assert!(
            rgb.chunks(3)
                .zip(bgr.chunks(3))
                .all(|(a, b)| a[0] == b[2] && a[2] == b[0])
        );
        assert!(pic.write_packed(ChannelOrder::Rgb, &mut [0; 5]).is_err());
        let mut enc = H264Encoder::new(H264Config::for_size(320, 240, 30)).expect("encoder");
        assert!(enc.encode_rgb(&[0; 10], 320, 240).is_err());
        assert!(enc.encode_rgb(&[0; 3 * 3 * 3], 3, 3).is_err(), "odd sizes");
        let mut small = H264Decoder::new(100 * 100).expect("decoder");
        assert!(matches!(
            small.decode(&units[0].data),
            Err(MediaError::TooLarge { .. })
        ));
    }

    #[test]
    fn damage_is_reported_and_the_next_keyframe_recovers() {
        let units = stream(320, 240, 9, 4);
        let mut dec = H264Decoder::new(crate::MAX_PIXELS).expect("decoder");
        assert!(decode_rgb(&mut dec, &units[0].data).is_some());
        // A P-frame cut short: an error or (if OpenH264 conceals it) a picture, never a panic.
        let cut = &units[1].data[..units[1].data.len() / 2];
        let damaged = dec.decode(cut).map(|p| p.is_some());
        if damaged.is_err() {
            assert!(dec.waiting_for_keyframe());
            // P-frames that depend on the lost one are withheld...
            assert!(decode_rgb(&mut dec, &units[2].data).is_none());
        }
        // ...and the next keyframe brings the picture back, stamp intact.
        let (_, _, rgb) = decode_rgb(&mut dec, &units[4].data).expect("recovered");
        assert_eq!(read_stamp(&rgb, 320, 240), Some((4, 1_004)));
        // Garbage that looks like an IDR.
        let mut junk = vec![0, 0, 0, 1, 0x65];
        junk.extend(std::iter::repeat_n(0xA5, 300));
        assert!(dec.decode(&junk).map(|p| p.is_none()).unwrap_or(true));
        let (_, _, rgb) = decode_rgb(&mut dec, &units[8].data).expect("recovered again");
        assert_eq!(read_stamp(&rgb, 320, 240), Some((8, 1_008)));
    }

    #[test]
    fn nal_units_split_annex_b() {
        let s = [
            0, 0, 0, 1, 0x67, 1, 2, 0, 0, 1, 0x68, 3, 0, 0, 0, 1, 0x65, 4,
        ];
        let n: Vec<&[u8]> = nal_units(&s).collect();
        assert_eq!(n, vec![&[0x67, 1, 2][..], &[0x68, 3][..], &[0x65, 4][..]]);
        assert!(is_keyframe(&s));
        assert_eq!(codec_string(&s), None, "SPS too short");
        assert_eq!(nal_units(&[]).count(), 0);
        assert_eq!(nal_units(&[0, 0]).count(), 0);
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(300))]
        #[test]
        fn any_bytes_decode_without_panic(bytes in proptest::collection::vec(any::<u8>(), 0..2000), idr in any::<bool>()) {
            let mut dec = H264Decoder::new(1 << 20).expect("decoder");
            let mut au = if idr { vec![0, 0, 0, 1, 0x65] } else { Vec::new() };
            au.extend(bytes);
            let _ = dec.decode(&au).map(|p| p.map(|p| (p.width(), p.height())));
            let _ = nal_units(&au).count();
            let _ = codec_string(&au);
        }

        #[test]
        fn damaged_streams_decode_without_panic(flips in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..20)) {
            let units = stream(160, 128, 3, 30);
            let mut dec = H264Decoder::new(crate::MAX_PIXELS).expect("decoder");
            for u in &units {
                let mut au = u.data.clone();
                for (i, v) in &flips {
                    let at = i.index(au.len());
                    au[at] ^= v;
                }
                if let Ok(Some(p)) = dec.decode(&au) {
                    let mut out = vec![0; (p.width() * p.height() * 3) as usize];
                    p.write_packed(ChannelOrder::Bgr, &mut out).expect("consistent size");
                }
            }
        }
    }
}
