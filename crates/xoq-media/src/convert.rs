//! Pixel conversions from what webcams deliver (YUYV, NV12) to what the encoders take:
//! packed RGB for JPEG, planar I420 for H.264.
//!
//! Colours are BT.601 "video range" (Y 16–235, U/V 16–240), which is what UVC webcams send,
//! in integer fixed point (×256) — the same constants as the H.264 decoder's output path, so
//! a picture that goes camera → H.264 → viewer is converted consistently on both ends.
//!
//! The functions are total: a buffer whose length does not match the stated size, or an
//! odd or zero width or height (4:2:x chroma covers pixel pairs), gives
//! [`MediaError::BadPicture`], never a panic. `out` is resized to the result and can be
//! reused from frame to frame to avoid an allocation per frame.

use crate::{ChannelOrder, MediaError};

/// Check `width × height` against a source of `len` bytes, where `expected` gives the
/// source length for a pixel count; returns the size as `usize`.
fn dims(
    len: usize,
    width: u32,
    height: u32,
    expected: impl Fn(usize) -> Option<usize>,
) -> Result<(usize, usize), MediaError> {
    let bad = MediaError::BadPicture { len, width, height };
    if width == 0 || height == 0 || !width.is_multiple_of(2) || !height.is_multiple_of(2) {
        return Err(bad);
    }
    let (w, h) = (width as usize, height as usize);
    match w.checked_mul(h).and_then(expected) {
        Some(n) if n == len => Ok((w, h)),
        _ => Err(bad),
    }
}

/// `out` resized to `n` bytes (contents to be overwritten) for a `width × height` source of
/// `len` bytes. An overflowing size or an allocation failure is an error rather than an abort.
fn sized(
    out: &mut Vec<u8>,
    n: Option<usize>,
    (len, width, height): (usize, u32, u32),
) -> Result<&mut [u8], MediaError> {
    let bad = MediaError::BadPicture { len, width, height };
    let n = n.ok_or_else(|| bad.clone())?;
    if n > out.len() && out.try_reserve(n - out.len()).is_err() {
        return Err(bad);
    }
    out.resize(n, 0);
    Ok(out.as_mut_slice())
}

/// The chroma terms of BT.601 YCbCr → RGB (×256, rounding included), shared by the two
/// pixels of a pair.
#[inline(always)]
fn chroma(u: u8, v: u8) -> [i32; 3] {
    let d = i32::from(u) - 128;
    let e = i32::from(v) - 128;
    [409 * e + 128, -100 * d - 208 * e + 128, 516 * d + 128]
}

/// One RGB pixel from its luma and the pair's chroma terms.
#[inline(always)]
fn pixel(y: u8, [r, g, b]: [i32; 3]) -> [u8; 3] {
    let c = 298 * (i32::from(y) - 16);
    let clamp = |t: i32| (t >> 8).clamp(0, 255) as u8;
    [clamp(c + r), clamp(c + g), clamp(c + b)]
}

/// Average of two chroma samples, rounded (4:2:2 → 4:2:0 takes the mean of two rows).
#[inline(always)]
fn avg(a: u8, b: u8) -> u8 {
    ((u16::from(a) + u16::from(b) + 1) >> 1) as u8
}

/// Packed YUYV 4:2:2 (`Y0 U Y1 V`, `width × height × 2` bytes) to packed RGB
/// (`width × height × 3` bytes) in `out`.
pub fn yuyv_to_rgb(
    src: &[u8],
    width: u32,
    height: u32,
    out: &mut Vec<u8>,
) -> Result<(), MediaError> {
    let (w, h) = dims(src.len(), width, height, |px| px.checked_mul(2))?;
    let rgb = sized(out, (w * h).checked_mul(3), (src.len(), width, height))?;
    let (pairs, _) = src.as_chunks::<4>();
    let (outs, _) = rgb.as_chunks_mut::<6>();
    for (&[y0, u, y1, v], o) in pairs.iter().zip(outs) {
        let c = chroma(u, v);
        let [r0, g0, b0] = pixel(y0, c);
        let [r1, g1, b1] = pixel(y1, c);
        *o = [r0, g0, b0, r1, g1, b1];
    }
    Ok(())
}

/// NV12 (Y plane of `width × height`, then interleaved `U V` at half resolution both ways;
/// `width × height × 3 / 2` bytes) to packed RGB (`width × height × 3` bytes) in `out`.
pub fn nv12_to_rgb(
    src: &[u8],
    width: u32,
    height: u32,
    out: &mut Vec<u8>,
) -> Result<(), MediaError> {
    let (w, h) = dims(src.len(), width, height, |px| px.checked_add(px / 2))?;
    let rgb = sized(out, (w * h).checked_mul(3), (src.len(), width, height))?;
    let (luma, uv) = src.split_at(w * h);
    // Two picture rows share one chroma row (`w` bytes: w/2 U V pairs).
    for ((ys, uvrow), o) in luma
        .chunks_exact(2 * w)
        .zip(uv.chunks_exact(w))
        .zip(rgb.chunks_exact_mut(2 * w * 3))
    {
        let (uvs, _) = uvrow.as_chunks::<2>();
        for (yrow, orow) in ys.chunks_exact(w).zip(o.chunks_exact_mut(w * 3)) {
            let (ypairs, _) = yrow.as_chunks::<2>();
            let (opairs, _) = orow.as_chunks_mut::<6>();
            for ((&[y0, y1], &[u, v]), o) in ypairs.iter().zip(uvs).zip(opairs) {
                let c = chroma(u, v);
                let [r0, g0, b0] = pixel(y0, c);
                let [r1, g1, b1] = pixel(y1, c);
                *o = [r0, g0, b0, r1, g1, b1];
            }
        }
    }
    Ok(())
}

/// Planar I420 with row strides (what a decoder hands out) to packed RGB or BGR in `out`
/// (`w × h × 3` bytes). Odd sizes are fine: the last column and row reuse their chroma.
pub fn i420_to_packed(
    (y, u, v): (&[u8], &[u8], &[u8]),
    (ys, us, vs): (usize, usize, usize),
    (w, h): (usize, usize),
    order: ChannelOrder,
    out: &mut [u8],
) -> Result<(), MediaError> {
    let (cw, ch) = (w.div_ceil(2), h.div_ceil(2));
    let fits = |plane: &[u8], stride: usize, rw: usize, rh: usize| {
        rh == 0 || (stride >= rw && plane.len() >= stride * (rh - 1) + rw)
    };
    if out.len() != w * h * 3 || !fits(y, ys, w, h) || !fits(u, us, cw, ch) || !fits(v, vs, cw, ch)
    {
        return Err(MediaError::BadPicture {
            len: out.len(),
            width: w as u32,
            height: h as u32,
        });
    }
    let swap = order == ChannelOrder::Bgr;
    let put = |[r, g, b]: [u8; 3]| if swap { [b, g, r] } else { [r, g, b] };
    for (row, line) in out.chunks_exact_mut(w * 3).enumerate() {
        let yrow = &y[row * ys..row * ys + w];
        let urow = &u[(row / 2) * us..(row / 2) * us + cw];
        let vrow = &v[(row / 2) * vs..(row / 2) * vs + cw];
        // Two pixels share one chroma sample: compute its terms once per pair.
        let (ypairs, ytail) = yrow.as_chunks::<2>();
        let (opairs, otail) = line.as_chunks_mut::<6>();
        for (((&[y0, y1], o), &cu), &cv) in ypairs.iter().zip(opairs).zip(urow).zip(vrow) {
            let c = chroma(cu, cv);
            let [a, b, c0] = put(pixel(y0, c));
            let [d, e, f] = put(pixel(y1, c));
            *o = [a, b, c0, d, e, f];
        }
        if let (Some(&yl), Some(&cu), Some(&cv)) = (ytail.first(), urow.last(), vrow.last()) {
            otail.copy_from_slice(&put(pixel(yl, chroma(cu, cv))));
        }
    }
    Ok(())
}

/// Split an I420 buffer of `w × h` into its Y, U and V planes.
fn planes(i420: &mut [u8], w: usize, h: usize) -> (&mut [u8], &mut [u8], &mut [u8]) {
    let (y, chroma) = i420.split_at_mut(w * h);
    let (u, v) = chroma.split_at_mut((w / 2) * (h / 2));
    (y, u, v)
}

/// Size of an I420 picture of `px` pixels (even dimensions): Y plus two quarter planes.
fn i420_len(px: usize) -> Option<usize> {
    px.checked_add(px / 2)
}

/// Packed YUYV 4:2:2 to planar I420 (Y plane `width × height`, then U and V planes of
/// `width/2 × height/2`) in `out`, for the H.264 encoder. Chroma of two rows is averaged.
pub fn yuyv_to_i420(
    src: &[u8],
    width: u32,
    height: u32,
    out: &mut Vec<u8>,
) -> Result<(), MediaError> {
    let (w, h) = dims(src.len(), width, height, |px| px.checked_mul(2))?;
    let i420 = sized(out, i420_len(w * h), (src.len(), width, height))?;
    let (yp, up, vp) = planes(i420, w, h);
    let cw = w / 2;
    for (((rows, yrows), urow), vrow) in src
        .chunks_exact(4 * w)
        .zip(yp.chunks_exact_mut(2 * w))
        .zip(up.chunks_exact_mut(cw))
        .zip(vp.chunks_exact_mut(cw))
    {
        let (s0, s1) = rows.split_at(2 * w);
        let (y0, y1) = yrows.split_at_mut(w);
        let (a, _) = s0.as_chunks::<4>();
        let (b, _) = s1.as_chunks::<4>();
        let (y0, _) = y0.as_chunks_mut::<2>();
        let (y1, _) = y1.as_chunks_mut::<2>();
        for (((((a, b), y0), y1), u), v) in a
            .iter()
            .zip(b)
            .zip(y0)
            .zip(y1)
            .zip(urow.iter_mut())
            .zip(vrow.iter_mut())
        {
            *y0 = [a[0], a[2]];
            *y1 = [b[0], b[2]];
            *u = avg(a[1], b[1]);
            *v = avg(a[3], b[3]);
        }
    }
    Ok(())
}

/// NV12 to planar I420 in `out`, for the H.264 encoder: the Y plane is copied and the
/// interleaved chroma split into U and V planes.
pub fn nv12_to_i420(
    src: &[u8],
    width: u32,
    height: u32,
    out: &mut Vec<u8>,
) -> Result<(), MediaError> {
    let (w, h) = dims(src.len(), width, height, |px| px.checked_add(px / 2))?;
    let i420 = sized(out, i420_len(w * h), (src.len(), width, height))?;
    let (yp, up, vp) = planes(i420, w, h);
    let (luma, uv) = src.split_at(w * h);
    yp.copy_from_slice(luma);
    let (uvs, _) = uv.as_chunks::<2>();
    for ((&[a, b], u), v) in uvs.iter().zip(up.iter_mut()).zip(vp.iter_mut()) {
        *u = a;
        *v = b;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// BT.601 video-range RGB → YCbCr (×256 fixed point), the inverse used to build test
    /// pictures.
    fn rgb_to_yuv([r, g, b]: [u8; 3]) -> [u8; 3] {
        let (r, g, b) = (i32::from(r), i32::from(g), i32::from(b));
        let y = ((66 * r + 129 * g + 25 * b + 128) >> 8) + 16;
        let u = ((-38 * r - 74 * g + 112 * b + 128) >> 8) + 128;
        let v = ((112 * r - 94 * g - 18 * b + 128) >> 8) + 128;
        [y, u, v].map(|t| t.clamp(0, 255) as u8)
    }

    /// Packed RGB → YUYV, chroma averaged over each pixel pair.
    fn rgb_to_yuyv(rgb: &[u8]) -> Vec<u8> {
        let mut out = Vec::with_capacity(rgb.len() / 3 * 2);
        for p in rgb.chunks_exact(6) {
            let [y0, u0, v0] = rgb_to_yuv([p[0], p[1], p[2]]);
            let [y1, u1, v1] = rgb_to_yuv([p[3], p[4], p[5]]);
            out.extend_from_slice(&[y0, avg(u0, u1), y1, avg(v0, v1)]);
        }
        out
    }

    /// A picture given as a Y plane and one (U, V) per 2×2 block, in both layouts: chroma
    /// is then the same in 4:2:2 and 4:2:0, so conversions must agree exactly.
    fn both_layouts(y: &[u8], uv: &[[u8; 2]], w: usize, h: usize) -> (Vec<u8>, Vec<u8>) {
        let mut yuyv = Vec::with_capacity(w * h * 2);
        for row in 0..h {
            for x in (0..w).step_by(2) {
                let [u, v] = uv[(row / 2) * (w / 2) + x / 2];
                yuyv.extend_from_slice(&[y[row * w + x], u, y[row * w + x + 1], v]);
            }
        }
        let mut nv12 = y.to_vec();
        nv12.extend(uv.iter().flatten());
        (yuyv, nv12)
    }

    /// A deterministic noisy picture (xorshift).
    fn noise(n: usize, mut seed: u32) -> Vec<u8> {
        (0..n)
            .map(|_| {
                seed ^= seed << 13;
                seed ^= seed >> 17;
                seed ^= seed << 5;
                (seed >> 24) as u8
            })
            .collect()
    }

    fn close(a: &[u8], b: &[u8], tol: u8) -> bool {
        a.len() == b.len() && a.iter().zip(b).all(|(x, y)| x.abs_diff(*y) <= tol)
    }

    #[test]
    fn known_colours() {
        // (Y, U, V) of BT.601 video range → RGB.
        let cases: [([u8; 3], [u8; 3]); 7] = [
            ([16, 128, 128], [0, 0, 0]),
            ([235, 128, 128], [255, 255, 255]),
            ([126, 128, 128], [128, 128, 128]),
            ([81, 90, 240], [255, 0, 0]),
            ([145, 54, 34], [0, 255, 0]),
            ([41, 240, 110], [0, 0, 255]),
            ([210, 16, 146], [255, 255, 0]),
        ];
        for ([y, u, v], want) in cases {
            let yuyv = [y, u, y, v, y, u, y, v];
            let mut rgb = Vec::new();
            yuyv_to_rgb(&yuyv, 2, 2, &mut rgb).expect("yuyv");
            for px in rgb.chunks_exact(3) {
                assert!(close(px, &want, 3), "YUV {y},{u},{v}: {px:?} vs {want:?}");
            }
            let nv12 = [y, y, y, y, u, v];
            let mut rgb2 = Vec::new();
            nv12_to_rgb(&nv12, 2, 2, &mut rgb2).expect("nv12");
            assert_eq!(rgb, rgb2);
            // And the test helper is the inverse of these.
            assert!(close(&rgb_to_yuv(want), &[y, u, v], 2), "{want:?}");
        }
        // Out-of-range YUV saturates instead of wrapping.
        let mut rgb = Vec::new();
        yuyv_to_rgb(&[0, 128, 255, 128, 0, 128, 255, 128], 2, 2, &mut rgb).expect("yuyv");
        assert_eq!(&rgb[..6], &[0, 0, 0, 255, 255, 255]);
    }

    #[test]
    fn rgb_round_trip_through_yuyv() {
        let (w, h) = (64usize, 16usize);
        // Colour per pixel pair, so 4:2:2 loses nothing but quantisation.
        let mut rgb = noise(w * h * 3 / 2, 7);
        rgb = rgb
            .chunks_exact(3)
            .flat_map(|p| [p[0], p[1], p[2], p[0], p[1], p[2]])
            .collect();
        let yuyv = rgb_to_yuyv(&rgb);
        let mut back = Vec::new();
        yuyv_to_rgb(&yuyv, w as u32, h as u32, &mut back).expect("yuyv");
        let worst = rgb.iter().zip(&back).map(|(a, b)| a.abs_diff(*b)).max();
        assert!(close(&rgb, &back, 4), "worst difference {worst:?}");
    }

    #[test]
    fn nv12_and_yuyv_agree() {
        let (w, h) = (32usize, 8usize);
        let y = noise(w * h, 1);
        let uv: Vec<[u8; 2]> = noise(w * h / 2, 2)
            .chunks_exact(2)
            .map(|c| [c[0], c[1]])
            .collect();
        let (yuyv, nv12) = both_layouts(&y, &uv, w, h);
        let (mut a, mut b) = (Vec::new(), Vec::new());
        yuyv_to_rgb(&yuyv, w as u32, h as u32, &mut a).expect("yuyv");
        nv12_to_rgb(&nv12, w as u32, h as u32, &mut b).expect("nv12");
        assert_eq!(a, b);
        yuyv_to_i420(&yuyv, w as u32, h as u32, &mut a).expect("yuyv");
        nv12_to_i420(&nv12, w as u32, h as u32, &mut b).expect("nv12");
        assert_eq!(a, b);
        // I420 is the Y plane, then U, then V.
        assert_eq!(&a[..w * h], &y[..]);
        let us: Vec<u8> = uv.iter().map(|c| c[0]).collect();
        let vs: Vec<u8> = uv.iter().map(|c| c[1]).collect();
        assert_eq!(&a[w * h..w * h * 5 / 4], &us[..]);
        assert_eq!(&a[w * h * 5 / 4..], &vs[..]);
    }

    #[test]
    fn yuyv_to_i420_layout() {
        // 4×2: row 0 then row 1, two pairs each.
        let yuyv = [
            1, 100, 2, 200, 3, 110, 4, 210, //
            5, 102, 6, 203, 7, 111, 8, 220,
        ];
        let mut out = vec![9; 100]; // longer than needed: must shrink
        yuyv_to_i420(&yuyv, 4, 2, &mut out).expect("i420");
        assert_eq!(out, [1, 2, 3, 4, 5, 6, 7, 8, 101, 111, 202, 215]);
    }

    #[test]
    fn wrong_sizes_are_errors() {
        type Convert = fn(&[u8], u32, u32, &mut Vec<u8>) -> Result<(), MediaError>;
        /// A conversion and its source length for a pixel count.
        type Case = (Convert, fn(usize) -> usize);
        let yuyv: [Case; 2] = [(yuyv_to_rgb, |px| px * 2), (yuyv_to_i420, |px| px * 2)];
        let nv12: [Case; 2] = [
            (nv12_to_rgb, |px| px * 3 / 2),
            (nv12_to_i420, |px| px * 3 / 2),
        ];
        for (f, len) in yuyv.into_iter().chain(nv12) {
            let mut out = Vec::new();
            assert!(f(&vec![0; len(16)], 4, 4, &mut out).is_ok());
            for (w, h, n) in [
                (4, 4, len(16) - 1),
                (4, 4, len(16) + 1),
                (3, 4, len(12)),
                (4, 3, len(12)),
                (0, 0, 0),
                (0, 4, 0),
                (u32::MAX - 1, u32::MAX - 1, 8),
            ] {
                let e = f(&vec![0; n], w, h, &mut out).expect_err("bad size");
                assert_eq!(
                    e,
                    MediaError::BadPicture {
                        len: n,
                        width: w,
                        height: h
                    }
                );
            }
        }
    }

    #[test]
    fn output_is_resized_for_reuse() {
        let mut out = vec![7; 1000];
        yuyv_to_rgb(&[16, 128, 16, 128], 2, 2, &mut out).expect_err("len for 2x2 is 8");
        yuyv_to_rgb(&[16, 128, 16, 128, 16, 128, 16, 128], 2, 2, &mut out).expect("ok");
        assert_eq!(out, vec![0; 12]);
        nv12_to_rgb(&[235; 24], 4, 4, &mut out).expect("ok");
        assert_eq!(out.len(), 48);
    }

    proptest! {
        #[test]
        fn any_input_never_panics(
            data in proptest::collection::vec(any::<u8>(), 0..600),
            w in prop_oneof![0u32..24, Just(u32::MAX), Just(1 << 31), Just(65536)],
            h in prop_oneof![0u32..24, Just(u32::MAX), Just(1 << 31), Just(65536)],
        ) {
            let mut out = Vec::new();
            if yuyv_to_rgb(&data, w, h, &mut out).is_ok() {
                prop_assert_eq!(out.len(), data.len() / 2 * 3);
            }
            if nv12_to_rgb(&data, w, h, &mut out).is_ok() {
                prop_assert_eq!(out.len(), data.len() * 2);
            }
            if yuyv_to_i420(&data, w, h, &mut out).is_ok() {
                prop_assert_eq!(out.len(), data.len() / 4 * 3);
            }
            if nv12_to_i420(&data, w, h, &mut out).is_ok() {
                prop_assert_eq!(out.len(), data.len());
            }
        }

        #[test]
        fn right_sized_input_always_converts(
            hw in 1u32..12, hh in 1u32..12, seed in 1u32..,
        ) {
            let (w, h) = (hw * 2, hh * 2);
            let px = (w * h) as usize;
            let mut out = Vec::new();
            let yuyv = noise(px * 2, seed);
            prop_assert!(yuyv_to_rgb(&yuyv, w, h, &mut out).is_ok());
            prop_assert!(yuyv_to_i420(&yuyv, w, h, &mut out).is_ok());
            let nv12 = noise(px * 3 / 2, seed);
            prop_assert!(nv12_to_rgb(&nv12, w, h, &mut out).is_ok());
            prop_assert!(nv12_to_i420(&nv12, w, h, &mut out).is_ok());
        }

        #[test]
        fn pair_coloured_rgb_survives_yuyv(
            colours in proptest::collection::vec(any::<[u8; 3]>(), 4),
        ) {
            // 4×2 picture, each pixel pair one colour.
            let rgb: Vec<u8> = colours.iter().flat_map(|c| [*c, *c]).flatten().collect();
            let mut back = Vec::new();
            yuyv_to_rgb(&rgb_to_yuyv(&rgb), 4, 2, &mut back).expect("yuyv");
            prop_assert!(close(&rgb, &back, 4), "{:?} vs {:?}", rgb, back);
        }
    }

    #[test]
    fn i420_to_packed_agrees_with_nv12_and_handles_strides_and_odd_sizes() {
        // Any NV12 picture: via I420 it must give what nv12_to_rgb gives, in both orders.
        let (w, h) = (6usize, 4usize);
        let nv12: Vec<u8> = (0..w * h * 3 / 2).map(|i| (i * 37 % 251) as u8).collect();
        let mut want = Vec::new();
        nv12_to_rgb(&nv12, w as u32, h as u32, &mut want).expect("nv12");
        let mut i420 = Vec::new();
        nv12_to_i420(&nv12, w as u32, h as u32, &mut i420).expect("i420");
        let (y, rest) = i420.split_at(w * h);
        let (u, v) = rest.split_at(w * h / 4);
        let mut rgb = vec![0; w * h * 3];
        i420_to_packed(
            (y, u, v),
            (w, w / 2, w / 2),
            (w, h),
            ChannelOrder::Rgb,
            &mut rgb,
        )
        .expect("rgb");
        assert_eq!(rgb, want);
        let mut bgr = vec![0; w * h * 3];
        i420_to_packed(
            (y, u, v),
            (w, w / 2, w / 2),
            (w, h),
            ChannelOrder::Bgr,
            &mut bgr,
        )
        .expect("bgr");
        assert!(
            rgb.chunks(3)
                .zip(bgr.chunks(3))
                .all(|(a, b)| a == [b[2], b[1], b[0]])
        );
        // Padded rows (stride > width) and an odd size.
        let (w, h, stride) = (5usize, 3usize, 8usize);
        let yp = vec![235u8; stride * h];
        let cp = vec![128u8; 4 * 2];
        let mut out = vec![0; w * h * 3];
        i420_to_packed(
            (&yp, &cp, &cp),
            (stride, 4, 4),
            (w, h),
            ChannelOrder::Rgb,
            &mut out,
        )
        .expect("odd");
        assert!(
            out.iter().all(|&c| c >= 252),
            "white everywhere, last column included"
        );
        // Planes too short for their strides, or a wrong output size: an error, no panic.
        assert!(
            i420_to_packed(
                (&yp[..10], &cp, &cp),
                (stride, 4, 4),
                (w, h),
                ChannelOrder::Rgb,
                &mut out
            )
            .is_err()
        );
        assert!(
            i420_to_packed(
                (&yp, &cp, &cp),
                (stride, 4, 4),
                (w, h),
                ChannelOrder::Rgb,
                &mut out[..3]
            )
            .is_err()
        );
    }
}
