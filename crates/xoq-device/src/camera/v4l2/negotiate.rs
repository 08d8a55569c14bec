//! Which mode to ask a device for, and the translation between V4L2's vocabulary (fourccs,
//! frame intervals, format requests) and xoq's [`Mode`]: kept apart from the ioctls so the
//! choice can be tested without a camera.

use super::sys;
use crate::camera::{Mode, ModeRequest, PixelFormat};

/// Size asked for when the request names none.
const DEFAULT_SIZE: (u32, u32) = (1280, 720);
/// Rate asked for when the request names none (also assumed when a driver lists no rates).
pub(super) const DEFAULT_FPS: u32 = 30;

/// The pixel format of a V4L2 fourcc, for the ones xoq reads (`JPEG` is MJPEG under
/// another name, used by some older drivers).
pub(super) fn pixel_format(fourcc: u32) -> Option<PixelFormat> {
    match fourcc {
        sys::PIX_FMT_YUYV => Some(PixelFormat::Yuyv),
        sys::PIX_FMT_NV12 => Some(PixelFormat::Nv12),
        sys::PIX_FMT_MJPEG | sys::PIX_FMT_JPEG => Some(PixelFormat::Mjpeg),
        sys::PIX_FMT_RGB24 => Some(PixelFormat::Rgb24),
        sys::PIX_FMT_Z16 => Some(PixelFormat::Z16),
        sys::PIX_FMT_Y16 => Some(PixelFormat::Y16),
        _ => None,
    }
}

/// A fourcc as its four characters, for messages (`?` for unprintable bytes).
pub(super) fn fourcc_name(fourcc: u32) -> String {
    fourcc
        .to_le_bytes()
        .iter()
        .map(|&b| {
            if b.is_ascii_graphic() || b == b' ' {
                char::from(b)
            } else {
                '?'
            }
        })
        .collect()
}

/// Frames per second of a frame interval (rounded: 1001/30000 s is 30 fps), or `None` for
/// a zero or longer-than-2-s interval.
pub(super) fn fps_of(interval: sys::Fract) -> Option<u32> {
    let (n, d) = (
        u64::from(interval.numerator),
        u64::from(interval.denominator),
    );
    if n == 0 {
        return None;
    }
    let fps = (d + n / 2) / n;
    u32::try_from(fps).ok().filter(|&f| f > 0)
}

/// Rank of a format in the preference order (lower is better). MJPEG is first when asked
/// for (JPEG streaming passes it through); otherwise raw formats come first, because the
/// H.264 path would have to decode MJPEG before encoding.
fn format_rank(format: PixelFormat, prefer_mjpeg: bool) -> u8 {
    match format {
        PixelFormat::Mjpeg if prefer_mjpeg => 0,
        PixelFormat::Yuyv => 1,
        PixelFormat::Nv12 => 2,
        PixelFormat::Rgb24 => 3,
        PixelFormat::Mjpeg => 4,
        // Depth requests see only these two: Z16 is the depth format proper.
        PixelFormat::Z16 => 0,
        PixelFormat::Y16 => 1,
    }
}

/// Pick the mode of `available` closest to `req`; `None` only when `available` is empty.
///
/// Rules, in priority order:
/// 1. **Size.** The wanted size is `req.width × req.height`; with neither given it is
///    1280×720; with one given, the other dimension is free. An exact match wins; else the
///    smallest size (by area) not smaller than wanted in either given dimension; else the
///    largest size available. Among exact matches on one dimension, the smallest area wins.
/// 2. **Rate**, among the modes of that size: the rate closest to `req.fps` (30 when not
///    given), the higher one on a tie. A rate above what the device lists is never chosen.
/// 3. **Format**, among modes of that size and rate: MJPEG first if `req.prefer_mjpeg`,
///    then YUYV, NV12, RGB3, then MJPEG when not preferred.
///
/// Size and rate come before format on purpose: a webcam that gives YUYV 1280×720 at only
/// 10 fps but MJPEG at 30 fps streams MJPEG at 30 fps, since decoding is cheaper than a
/// third of the frames.
pub fn choose_mode(available: &[Mode], req: ModeRequest) -> Option<Mode> {
    // A depth request sees the depth formats only, a picture request everything else.
    let available: Vec<Mode> = available
        .iter()
        .filter(|m| m.format.is_depth() == req.depth)
        .copied()
        .collect();
    let available = &available[..];
    let (want_w, want_h) = match (req.width, req.height) {
        (None, None) => (Some(DEFAULT_SIZE.0), Some(DEFAULT_SIZE.1)),
        given => given,
    };
    let area = |m: &&Mode| (u64::from(m.width) * u64::from(m.height), m.width);
    let exact =
        |m: &&Mode| want_w.is_none_or(|w| m.width == w) && want_h.is_none_or(|h| m.height == h);
    let covers =
        |m: &&Mode| want_w.is_none_or(|w| m.width >= w) && want_h.is_none_or(|h| m.height >= h);
    let size = available
        .iter()
        .filter(exact)
        .min_by_key(area)
        .or_else(|| available.iter().filter(covers).min_by_key(area))
        .or_else(|| available.iter().max_by_key(area))?;
    let (w, h) = (size.width, size.height);
    let want_fps = req.fps.unwrap_or(DEFAULT_FPS);
    available
        .iter()
        .filter(|m| m.width == w && m.height == h)
        .min_by_key(|m| {
            (
                m.fps.abs_diff(want_fps),
                std::cmp::Reverse(m.fps),
                format_rank(m.format, req.prefer_mjpeg),
            )
        })
        .copied()
}

/// A mode together with the fourcc that provides it (MJPEG may be `MJPG` or `JPEG`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct DevMode {
    pub(super) mode: Mode,
    pub(super) fourcc: u32,
}

/// [`choose_mode`] over a device's modes, keeping the fourcc.
pub(super) fn pick(modes: &[DevMode], req: ModeRequest) -> Option<DevMode> {
    let plain: Vec<Mode> = modes.iter().map(|m| m.mode).collect();
    let mode = choose_mode(&plain, req)?;
    modes.iter().find(|m| m.mode == mode).copied()
}

pub(super) fn pix_request(width: u32, height: u32, fourcc: u32) -> sys::PixFormat {
    let mut pix: sys::PixFormat = sys::zeroed();
    pix.width = width;
    pix.height = height;
    pix.pixelformat = fourcc;
    pix.field = sys::FIELD_ANY;
    pix
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(format: PixelFormat, width: u32, height: u32, fps: u32) -> Mode {
        Mode {
            format,
            width,
            height,
            fps,
        }
    }

    fn req(w: Option<u32>, h: Option<u32>, fps: Option<u32>, prefer_mjpeg: bool) -> ModeRequest {
        ModeRequest {
            width: w,
            height: h,
            fps,
            prefer_mjpeg,
            depth: false,
        }
    }

    use PixelFormat::{Mjpeg, Nv12, Rgb24, Yuyv};

    /// A typical USB2 webcam: YUYV is slow at large sizes, MJPEG is fast at all sizes.
    fn webcam() -> Vec<Mode> {
        vec![
            m(Yuyv, 640, 480, 30),
            m(Yuyv, 640, 480, 15),
            m(Yuyv, 1280, 720, 10),
            m(Yuyv, 1280, 720, 5),
            m(Mjpeg, 640, 480, 30),
            m(Mjpeg, 1280, 720, 30),
            m(Mjpeg, 1280, 720, 15),
            m(Mjpeg, 1920, 1080, 30),
            m(Yuyv, 320, 240, 30),
        ]
    }

    #[test]
    fn depth_formats_are_chosen_only_for_depth_requests() {
        use PixelFormat::{Y16, Z16};
        // A RealSense-like node: depth at several sizes, plus a grey infrared format.
        let modes = vec![
            m(Z16, 640, 480, 30),
            m(Z16, 848, 480, 30),
            m(Y16, 640, 480, 30),
            m(Yuyv, 640, 480, 30),
        ];
        let depth = ModeRequest {
            depth: true,
            ..req(Some(640), Some(480), Some(30), false)
        };
        assert_eq!(choose_mode(&modes, depth), Some(m(Z16, 640, 480, 30)));
        assert_eq!(
            choose_mode(&modes, req(Some(848), Some(480), Some(30), false)),
            Some(m(Yuyv, 640, 480, 30)),
            "a picture request never gets a depth format"
        );
        assert_eq!(choose_mode(&modes[..3], ModeRequest::default()), None);
        assert_eq!(choose_mode(&modes[3..], depth), None);
    }

    #[test]
    fn empty_list_gives_none() {
        assert_eq!(choose_mode(&[], ModeRequest::default()), None);
        assert_eq!(
            choose_mode(&[], req(Some(640), Some(480), Some(30), true)),
            None
        );
    }

    #[test]
    fn exact_size_and_rate() {
        let modes = webcam();
        assert_eq!(
            choose_mode(&modes, req(Some(640), Some(480), Some(30), false)),
            Some(m(Yuyv, 640, 480, 30))
        );
        assert_eq!(
            choose_mode(&modes, req(Some(640), Some(480), Some(15), false)),
            Some(m(Yuyv, 640, 480, 15))
        );
        assert_eq!(
            choose_mode(&modes, req(Some(1920), Some(1080), Some(30), false)),
            Some(m(Mjpeg, 1920, 1080, 30)),
            "the only format at that size, even when raw is preferred"
        );
    }

    #[test]
    fn defaults_are_720p_at_30() {
        let modes = webcam();
        assert_eq!(
            choose_mode(&modes, ModeRequest::default()),
            Some(m(Mjpeg, 1280, 720, 30)),
            "30 fps beats the raw-format preference"
        );
        let small = [m(Yuyv, 640, 480, 30), m(Yuyv, 320, 240, 30)];
        assert_eq!(
            choose_mode(&small, ModeRequest::default()),
            Some(m(Yuyv, 640, 480, 30)),
            "no 720p: the largest"
        );
        let big = [m(Nv12, 1920, 1080, 30), m(Nv12, 3840, 2160, 30)];
        assert_eq!(
            choose_mode(&big, ModeRequest::default()),
            Some(m(Nv12, 1920, 1080, 30)),
            "no 720p: the smallest above"
        );
    }

    #[test]
    fn larger_fallback_then_largest() {
        let modes = webcam();
        assert_eq!(
            choose_mode(&modes, req(Some(800), Some(600), Some(30), false)),
            Some(m(Mjpeg, 1280, 720, 30)),
            "smallest size covering 800x600"
        );
        assert_eq!(
            choose_mode(&modes, req(Some(4000), Some(3000), Some(30), false)),
            Some(m(Mjpeg, 1920, 1080, 30)),
            "nothing covers it: the largest"
        );
        assert_eq!(
            choose_mode(&modes, req(Some(1), Some(1), Some(30), false)),
            Some(m(Yuyv, 320, 240, 30)),
            "tiny request: the smallest size"
        );
        // Covering means both dimensions: 1280x720 does not cover 1000x800.
        let odd = [
            m(Yuyv, 1280, 720, 30),
            m(Yuyv, 1024, 1024, 30),
            m(Yuyv, 1600, 1200, 30),
        ];
        assert_eq!(
            choose_mode(&odd, req(Some(1000), Some(800), None, false)),
            Some(m(Yuyv, 1024, 1024, 30))
        );
    }

    #[test]
    fn one_dimension_given() {
        let modes = [
            m(Yuyv, 640, 480, 30),
            m(Yuyv, 640, 360, 30),
            m(Yuyv, 1280, 720, 30),
        ];
        assert_eq!(
            choose_mode(&modes, req(Some(640), None, None, false)),
            Some(m(Yuyv, 640, 360, 30)),
            "width matches twice: smaller area"
        );
        assert_eq!(
            choose_mode(&modes, req(None, Some(720), None, false)),
            Some(m(Yuyv, 1280, 720, 30))
        );
        assert_eq!(
            choose_mode(&modes, req(None, Some(400), None, false)),
            Some(m(Yuyv, 640, 480, 30)),
            "smallest height at least 400"
        );
    }

    #[test]
    fn format_preference() {
        let modes = [
            m(Mjpeg, 1280, 720, 30),
            m(Rgb24, 1280, 720, 30),
            m(Nv12, 1280, 720, 30),
            m(Yuyv, 1280, 720, 30),
        ];
        let raw = req(Some(1280), Some(720), Some(30), false);
        let jpeg = ModeRequest {
            prefer_mjpeg: true,
            ..raw
        };
        assert_eq!(choose_mode(&modes, raw).map(|m| m.format), Some(Yuyv));
        assert_eq!(choose_mode(&modes, jpeg).map(|m| m.format), Some(Mjpeg));
        assert_eq!(choose_mode(&modes[..3], raw).map(|m| m.format), Some(Nv12));
        assert_eq!(choose_mode(&modes[..2], raw).map(|m| m.format), Some(Rgb24));
        assert_eq!(
            choose_mode(&modes[1..], jpeg).map(|m| m.format),
            Some(Yuyv),
            "no MJPEG: raw order"
        );
        assert_eq!(
            choose_mode(&modes[..1], raw).map(|m| m.format),
            Some(Mjpeg),
            "only MJPEG: MJPEG"
        );
    }

    #[test]
    fn rate_selection() {
        let modes = [
            m(Yuyv, 640, 480, 60),
            m(Yuyv, 640, 480, 30),
            m(Yuyv, 640, 480, 15),
            m(Yuyv, 640, 480, 5),
        ];
        let at = |fps| choose_mode(&modes, req(Some(640), Some(480), fps, false)).map(|m| m.fps);
        assert_eq!(at(Some(30)), Some(30));
        assert_eq!(at(None), Some(30), "default 30");
        assert_eq!(at(Some(25)), Some(30), "closest");
        assert_eq!(at(Some(20)), Some(15), "closest below");
        assert_eq!(at(Some(45)), Some(60), "tie between 30 and 60: the higher");
        assert_eq!(at(Some(240)), Some(60), "never above the device's");
        assert_eq!(at(Some(1)), Some(5));
        assert_eq!(at(Some(0)), Some(5));
        // Rate before format: 30 fps MJPEG beats 10 fps YUYV when raw is preferred...
        let modes = webcam();
        assert_eq!(
            choose_mode(&modes, req(Some(1280), Some(720), Some(30), false)),
            Some(m(Mjpeg, 1280, 720, 30))
        );
        // ...but at the YUYV rate, YUYV wins.
        assert_eq!(
            choose_mode(&modes, req(Some(1280), Some(720), Some(10), false)),
            Some(m(Yuyv, 1280, 720, 10))
        );
        assert_eq!(
            choose_mode(&modes, req(Some(1280), Some(720), Some(10), true)),
            Some(m(Yuyv, 1280, 720, 10)),
            "10 fps is only YUYV, even with MJPEG preferred"
        );
        assert_eq!(
            choose_mode(&modes, req(Some(1280), Some(720), Some(14), true)),
            Some(m(Mjpeg, 1280, 720, 15))
        );
    }

    #[test]
    fn size_before_rate() {
        let modes = [m(Yuyv, 1280, 720, 5), m(Yuyv, 640, 480, 30)];
        assert_eq!(
            choose_mode(&modes, req(Some(1280), Some(720), Some(30), false)),
            Some(m(Yuyv, 1280, 720, 5))
        );
    }

    #[test]
    fn choice_is_always_available() {
        let modes = webcam();
        for w in [None, Some(0), Some(321), Some(640), Some(5000)] {
            for h in [None, Some(0), Some(241), Some(720), Some(5000)] {
                for fps in [None, Some(0), Some(7), Some(30), Some(1000)] {
                    for p in [false, true] {
                        let got = choose_mode(&modes, req(w, h, fps, p)).expect("a mode");
                        assert!(modes.contains(&got), "{got}");
                    }
                }
            }
        }
    }

    #[test]
    fn fourcc_mapping() {
        assert_eq!(sys::PIX_FMT_YUYV, 0x5659_5559);
        assert_eq!(sys::PIX_FMT_MJPEG, 0x4750_4a4d);
        assert_eq!(sys::PIX_FMT_JPEG, 0x4745_504a);
        assert_eq!(sys::PIX_FMT_NV12, 0x3231_564e);
        assert_eq!(sys::PIX_FMT_RGB24, 0x3342_4752);
        assert_eq!(pixel_format(sys::fourcc(b"YUYV")), Some(Yuyv));
        assert_eq!(pixel_format(sys::fourcc(b"NV12")), Some(Nv12));
        assert_eq!(pixel_format(sys::fourcc(b"MJPG")), Some(Mjpeg));
        assert_eq!(pixel_format(sys::fourcc(b"JPEG")), Some(Mjpeg));
        assert_eq!(pixel_format(sys::fourcc(b"RGB3")), Some(Rgb24));
        for other in [b"H264", b"UYVY", b"NV21", b"BGR3", b"GREY", b"YU12"] {
            assert_eq!(pixel_format(sys::fourcc(other)), None);
        }
        assert_eq!(fourcc_name(sys::PIX_FMT_MJPEG), "MJPG");
        assert_eq!(fourcc_name(0x0001_4148), "HA??");
        // Each format's Display is the fourcc it comes from.
        for f in [Yuyv, Nv12, Mjpeg, Rgb24] {
            let code = f.to_string();
            let bytes: [u8; 4] = code.as_bytes().try_into().expect("4 chars");
            assert_eq!(pixel_format(sys::fourcc(&bytes)), Some(f));
        }
    }

    #[test]
    fn frame_intervals_to_rates() {
        let fract = |numerator, denominator| sys::Fract {
            numerator,
            denominator,
        };
        assert_eq!(fps_of(fract(1, 30)), Some(30));
        assert_eq!(fps_of(fract(1001, 30000)), Some(30));
        assert_eq!(fps_of(fract(333_333, 10_000_000)), Some(30));
        assert_eq!(fps_of(fract(1, 0)), None);
        assert_eq!(fps_of(fract(0, 30)), None);
        assert_eq!(fps_of(fract(3, 1)), None, "1/3 fps rounds to 0");
        assert_eq!(fps_of(fract(1, u32::MAX)), Some(u32::MAX));
    }
}
