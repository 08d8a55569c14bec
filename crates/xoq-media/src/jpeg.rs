//! JPEG: pure Rust (`jpeg-encoder`, `zune-jpeg`), so the default build needs no system
//! libraries. JPEG frames from a camera's MJPEG mode pass through untouched; this module
//! encodes test patterns and raw (YUYV) captures, and decodes for viewers.

use jpeg_encoder::{ColorType, Encoder};
use zune_jpeg::JpegDecoder;
use zune_jpeg::zune_core::colorspace::ColorSpace;
use zune_jpeg::zune_core::options::DecoderOptions;

use crate::{MediaError, RgbImage};

fn undecodable(reason: impl std::fmt::Display) -> MediaError {
    MediaError::Undecodable {
        codec: "JPEG",
        reason: reason.to_string(),
    }
}

/// Encode packed RGB at `quality` (1–100; 80 is a good stream default).
pub fn encode(rgb: &[u8], width: u32, height: u32, quality: u8) -> Result<Vec<u8>, MediaError> {
    let bad = || MediaError::BadPicture {
        len: rgb.len(),
        width,
        height,
    };
    let (w, h) = (
        u16::try_from(width).map_err(|_| bad())?,
        u16::try_from(height).map_err(|_| bad())?,
    );
    if rgb.len() != width as usize * height as usize * 3 || w == 0 || h == 0 {
        return Err(bad());
    }
    let mut out = Vec::with_capacity(rgb.len() / 8);
    Encoder::new(&mut out, quality.clamp(1, 100))
        .encode(rgb, w, h, ColorType::Rgb)
        .map_err(|e| undecodable(format!("encoder: {e}")))?;
    Ok(out)
}

/// Decode to packed RGB. Pictures over `max_pixels` are refused from their header.
pub fn decode(bytes: &[u8], max_pixels: usize) -> Result<RgbImage, MediaError> {
    // zune-jpeg 0.4.21 can panic on some damaged headers (an `unwrap` in its MCU code, found
    // by the property test below). Bytes from the network must never take the process
    // down, so a decoder panic is contained here and reported as an undecodable frame.
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        decode_unguarded(bytes, max_pixels)
    }))
    .unwrap_or_else(|_| Err(undecodable("the decoder failed on damaged data")))
}

fn decode_unguarded(bytes: &[u8], max_pixels: usize) -> Result<RgbImage, MediaError> {
    // The decoder's own width/height limits bound its allocations; the pixel check below
    // is the caller's limit.
    let side = max_pixels.clamp(1, 1 << 16);
    let opts = DecoderOptions::default()
        .set_max_width(side)
        .set_max_height(side)
        .jpeg_set_out_colorspace(ColorSpace::RGB);
    let mut d = JpegDecoder::new_with_options(bytes, opts);
    d.decode_headers()
        .map_err(|e| undecodable(format!("{e:?}")))?;
    let (width, height) = d
        .dimensions()
        .ok_or_else(|| undecodable("no dimensions in the header"))?;
    if width.saturating_mul(height) > max_pixels {
        return Err(MediaError::TooLarge {
            width,
            height,
            max_pixels,
        });
    }
    let data = d.decode().map_err(|e| undecodable(format!("{e:?}")))?;
    if data.len() != width * height * 3 {
        return Err(undecodable("decoded size does not match the header"));
    }
    Ok(RgbImage {
        width: width as u32,
        height: height as u32,
        data,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use xoq_device::camera::{TestPattern, read_stamp};

    #[test]
    fn test_pattern_stamp_survives_jpeg() {
        for (w, h, q) in [(640, 480, 80), (1280, 720, 60), (128, 32, 90)] {
            let p = TestPattern::new(w, h).expect("size");
            let (seq, ts) = (123_456, 1_764_000_000_654_321);
            let jpg = encode(&p.render(seq, ts), w, h, q).expect("encode");
            assert!(jpg.len() < (w * h * 3) as usize / 2, "JPEG compresses");
            let img = decode(&jpg, crate::MAX_PIXELS).expect("decode");
            assert_eq!((img.width, img.height), (w, h));
            assert_eq!(read_stamp(&img.data, w, h), Some((seq, ts)), "{w}x{h} q{q}");
            // Pixels match the pattern within codec tolerance (mean absolute error).
            let orig = p.render(seq, ts);
            let mae: f64 = orig
                .iter()
                .zip(&img.data)
                .map(|(a, b)| f64::from(a.abs_diff(*b)))
                .sum::<f64>()
                / orig.len() as f64;
            assert!(mae < 8.0, "mean error {mae} at {w}x{h} q{q}");
        }
    }

    #[test]
    fn limits_and_bad_pictures() {
        let p = TestPattern::new(640, 480).expect("size");
        let jpg = encode(&p.render(1, 2), 640, 480, 80).expect("encode");
        assert!(matches!(
            decode(&jpg, 100 * 100),
            Err(MediaError::TooLarge { .. })
        ));
        assert!(matches!(
            encode(&[0; 10], 640, 480, 80),
            Err(MediaError::BadPicture { .. })
        ));
        assert!(matches!(
            decode(&jpg[..jpg.len() / 3], crate::MAX_PIXELS),
            Err(MediaError::Undecodable { .. }) | Ok(_)
        ));
    }

    proptest! {
        // Many cases: the second test found a decoder panic that 2000 missed once.
        #![proptest_config(ProptestConfig::with_cases(5000))]
        #[test]
        fn any_bytes_decode_or_fail_cleanly(b in proptest::collection::vec(any::<u8>(), 0..2000)) {
            let _ = decode(&b, 1 << 20);
        }

        #[test]
        fn damaged_jpegs_decode_or_fail_cleanly(pos in 0usize..4000, val in any::<u8>(), cut in 0usize..4000) {
            let p = TestPattern::new(128, 32).expect("size");
            let mut jpg = encode(&p.render(5, 6), 128, 32, 70).expect("encode");
            let i = pos % jpg.len();
            jpg[i] = val;
            jpg.truncate(cut.max(1).min(jpg.len()));
            let _ = decode(&jpg, 1 << 20);
        }
    }
}
