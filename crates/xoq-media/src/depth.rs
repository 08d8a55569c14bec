//! Lossless 16-bit depth images: RVL, then raw deflate.
//!
//! A depth camera measures distances in device units (millimetres on a RealSense D4xx); a
//! policy trained on them needs every value as measured, so this codec is lossless and a
//! bit-exact round trip is its contract. It is the same blob on every path (P2P, relay,
//! browser), and self-describing:
//!
//! ```text
//! codec u8 | width u16 BE | height u16 BE | payload
//! ```
//!
//! `codec` is [`DepthCodec`]: 0 = raw (`width × height` u16 little-endian), 1 = RVL,
//! 2 = RVL then raw deflate (RFC 1951, what a browser's `DecompressionStream('deflate-raw')`
//! reads).
//!
//! **RVL** (Wilson, "Fast Lossless Depth Image Compression", 2017), as written here: pixels
//! in row order alternate between a run of zeros (invalid depth) and a run of non-zero
//! values; each pair is the zero count, the non-zero count, then each non-zero value as the
//! zig-zagged difference from the previous non-zero value (starting from 0). Every number is
//! a variable-length code of 3-bit chunks, least significant first, one chunk per nibble
//! with bit 3 set when another chunk follows. Nibbles are packed high nibble first; an odd
//! count ends with a 0 nibble.
//!
//! Decoding is total and bounded: the picture size is checked against a limit before
//! anything is allocated, deflate output is capped at the largest valid RVL stream for that
//! size, and every count and value is checked (a run past the end, a value out of 1..=65535,
//! a code longer than its field can be, trailing bytes) so damaged bytes give an error.

use crate::MediaError;

/// Largest depth picture decoded by default: 4096 × 4096 (no depth camera comes close).
pub const MAX_DEPTH_PIXELS: usize = 4096 * 4096;

/// Header bytes before the payload.
pub const HEADER_LEN: usize = 5;

/// How the payload of a depth blob is coded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DepthCodec {
    /// Little-endian u16 per pixel, no compression (the baseline).
    Raw = 0,
    /// RVL only (fastest).
    Rvl = 1,
    /// RVL then raw deflate (smaller; the default). The encoder sends plain RVL instead
    /// when deflate would not shrink it.
    RvlDeflate = 2,
}

impl DepthCodec {
    fn from_u8(v: u8) -> Option<DepthCodec> {
        match v {
            0 => Some(DepthCodec::Raw),
            1 => Some(DepthCodec::Rvl),
            2 => Some(DepthCodec::RvlDeflate),
            _ => None,
        }
    }
}

/// A decoded depth picture: one u16 per pixel in device units, 0 = no measurement.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct DepthImage {
    /// Width in pixels.
    pub width: u32,
    /// Height in pixels.
    pub height: u32,
    /// `width × height` values, row by row.
    pub data: Vec<u16>,
}

fn bad(reason: impl Into<String>) -> MediaError {
    MediaError::Undecodable {
        codec: "depth",
        reason: reason.into(),
    }
}

/// Encode `data` (`width × height` values, row by row) as a depth blob. Deflate `level` is
/// 0–9 (1 is fast and already close to the best ratio on depth; ignored unless `codec` is
/// [`DepthCodec::RvlDeflate`]).
pub fn encode(
    codec: DepthCodec,
    width: u32,
    height: u32,
    data: &[u16],
    level: u32,
) -> Result<Vec<u8>, MediaError> {
    if width > u32::from(u16::MAX)
        || height > u32::from(u16::MAX)
        || data.len() != width as usize * height as usize
    {
        return Err(MediaError::BadPicture {
            len: data.len() * 2,
            width,
            height,
        });
    }
    let mut out = Vec::with_capacity(HEADER_LEN + data.len());
    out.push(codec as u8);
    out.extend_from_slice(&(width as u16).to_be_bytes());
    out.extend_from_slice(&(height as u16).to_be_bytes());
    match codec {
        DepthCodec::Raw => {
            for v in data {
                out.extend_from_slice(&v.to_le_bytes());
            }
        }
        DepthCodec::Rvl => rvl_encode(data, &mut out),
        DepthCodec::RvlDeflate => {
            let mut rvl = Vec::with_capacity(data.len());
            rvl_encode(data, &mut rvl);
            deflate(&rvl, level.min(9), &mut out)?;
            // Noisy depth leaves RVL little deflate can find: then the RVL stream goes as is
            // (the header says which), never a larger blob.
            if out.len() - HEADER_LEN >= rvl.len() {
                out.truncate(HEADER_LEN);
                out[0] = DepthCodec::Rvl as u8;
                out.extend_from_slice(&rvl);
            }
        }
    }
    Ok(out)
}

/// The codec and size a blob declares, without decoding it.
pub fn peek(blob: &[u8]) -> Result<(DepthCodec, u32, u32), MediaError> {
    if blob.len() < HEADER_LEN {
        return Err(bad("shorter than the 5-byte header"));
    }
    let codec =
        DepthCodec::from_u8(blob[0]).ok_or_else(|| bad(format!("unknown codec {}", blob[0])))?;
    let width = u32::from(u16::from_be_bytes([blob[1], blob[2]]));
    let height = u32::from(u16::from_be_bytes([blob[3], blob[4]]));
    Ok((codec, width, height))
}

/// Decode a depth blob, refusing pictures over `max_pixels`.
pub fn decode(blob: &[u8], max_pixels: usize) -> Result<DepthImage, MediaError> {
    let (codec, width, height) = peek(blob)?;
    let n = width as usize * height as usize;
    if n > max_pixels {
        return Err(MediaError::TooLarge {
            width: width as usize,
            height: height as usize,
            max_pixels,
        });
    }
    let payload = &blob[HEADER_LEN..];
    let data = match codec {
        DepthCodec::Raw => {
            if payload.len() != n * 2 {
                return Err(bad(format!(
                    "raw payload of {} bytes for {width}x{height}",
                    payload.len()
                )));
            }
            payload
                .chunks_exact(2)
                .map(|b| u16::from_le_bytes([b[0], b[1]]))
                .collect()
        }
        DepthCodec::Rvl => rvl_decode(payload, n)?,
        DepthCodec::RvlDeflate => {
            let rvl = inflate(payload, rvl_bound(n))?;
            rvl_decode(&rvl, n)?
        }
    };
    Ok(DepthImage {
        width,
        height,
        data,
    })
}

/// The largest RVL stream `n` pixels can give: a pixel costs at most its 6-nibble value
/// plus, when runs alternate every pixel, two 1-nibble counts; counts of longer runs are
/// shared by more pixels. Anything longer is damage.
pub fn rvl_bound(n: usize) -> usize {
    n * 4 + 16
}

struct Nibbles<'a> {
    out: &'a mut Vec<u8>,
    half: bool,
}

impl Nibbles<'_> {
    fn put(&mut self, nibble: u8) {
        if self.half {
            if let Some(last) = self.out.last_mut() {
                *last |= nibble;
            }
        } else {
            self.out.push(nibble << 4);
        }
        self.half = !self.half;
    }

    fn put_vle(&mut self, mut v: u32) {
        loop {
            let chunk = (v & 7) as u8;
            v >>= 3;
            if v == 0 {
                self.put(chunk);
                return;
            }
            self.put(chunk | 8);
        }
    }
}

fn zigzag(d: i32) -> u32 {
    ((d << 1) ^ (d >> 31)) as u32
}

fn unzigzag(z: u32) -> i32 {
    ((z >> 1) as i32) ^ -((z & 1) as i32)
}

/// Append the RVL code of `data` to `out`.
pub fn rvl_encode(data: &[u16], out: &mut Vec<u8>) {
    let mut w = Nibbles { out, half: false };
    let mut prev: i32 = 0;
    let mut i = 0;
    while i < data.len() {
        let zeros = data[i..].iter().take_while(|&&v| v == 0).count();
        w.put_vle(zeros as u32);
        i += zeros;
        let nonzeros = data[i..].iter().take_while(|&&v| v != 0).count();
        w.put_vle(nonzeros as u32);
        for &v in &data[i..i + nonzeros] {
            w.put_vle(zigzag(i32::from(v) - prev));
            prev = i32::from(v);
        }
        i += nonzeros;
    }
}

struct Reader<'a> {
    bytes: &'a [u8],
    /// Next nibble index.
    pos: usize,
}

impl Reader<'_> {
    fn nibble(&mut self) -> Result<u8, MediaError> {
        let byte = *self
            .bytes
            .get(self.pos / 2)
            .ok_or_else(|| bad("RVL stream ends before the last pixel"))?;
        let n = if self.pos.is_multiple_of(2) {
            byte >> 4
        } else {
            byte & 15
        };
        self.pos += 1;
        Ok(n)
    }

    /// A variable-length number of at most `max_chunks` 3-bit chunks.
    fn vle(&mut self, max_chunks: u32) -> Result<u32, MediaError> {
        let mut v: u32 = 0;
        for k in 0..max_chunks {
            let n = self.nibble()?;
            v |= u32::from(n & 7) << (3 * k);
            if n & 8 == 0 {
                return Ok(v);
            }
        }
        Err(bad("RVL code longer than its field"))
    }
}

/// Decode an RVL stream of exactly `n` pixels.
pub fn rvl_decode(bytes: &[u8], n: usize) -> Result<Vec<u16>, MediaError> {
    if bytes.len() > rvl_bound(n) {
        return Err(bad("RVL stream longer than any picture of this size"));
    }
    let mut out = Vec::with_capacity(n);
    let mut r = Reader { bytes, pos: 0 };
    let mut prev: i32 = 0;
    while out.len() < n {
        let left = n - out.len();
        // A count fits 32 bits in 11 chunks; a value difference (zig-zagged, 17 bits) in 6.
        let zeros = r.vle(11)? as usize;
        if zeros > left {
            return Err(bad("zero run past the end of the picture"));
        }
        out.resize(out.len() + zeros, 0);
        let nonzeros = r.vle(11)? as usize;
        if nonzeros > n - out.len() {
            return Err(bad("value run past the end of the picture"));
        }
        if zeros == 0 && nonzeros == 0 {
            return Err(bad("empty run pair"));
        }
        for _ in 0..nonzeros {
            let v = prev + unzigzag(r.vle(6)?);
            if !(1..=i32::from(u16::MAX)).contains(&v) {
                return Err(bad(format!("value {v} outside 1..=65535")));
            }
            out.push(v as u16);
            prev = v;
        }
    }
    // Only the padding nibble of an odd count may follow.
    let used = r.pos.div_ceil(2);
    if used != bytes.len() || (r.pos % 2 == 1 && bytes[used - 1] & 15 != 0) {
        return Err(bad("bytes after the last pixel"));
    }
    Ok(out)
}

fn deflate(input: &[u8], level: u32, out: &mut Vec<u8>) -> Result<(), MediaError> {
    let mut c = flate2::Compress::new(flate2::Compression::new(level), false);
    // Deflate's worst case is a few bytes per 16 KiB block over the input.
    out.reserve(input.len() + input.len() / 1000 + 64);
    loop {
        let consumed = c.total_in() as usize;
        let status = c
            .compress_vec(&input[consumed..], out, flate2::FlushCompress::Finish)
            .map_err(|e| bad(format!("deflate: {e}")))?;
        if status == flate2::Status::StreamEnd {
            return Ok(());
        }
        out.reserve(4096);
    }
}

fn inflate(input: &[u8], cap: usize) -> Result<Vec<u8>, MediaError> {
    let mut d = flate2::Decompress::new(false);
    let mut out = Vec::with_capacity(cap.min(input.len().saturating_mul(8)).max(64));
    loop {
        let consumed = d.total_in() as usize;
        let before = out.len();
        let status = d
            .decompress_vec(
                &input[consumed..],
                &mut out,
                flate2::FlushDecompress::Finish,
            )
            .map_err(|e| bad(format!("deflate: {e}")))?;
        match status {
            flate2::Status::StreamEnd => {
                if d.total_in() as usize != input.len() {
                    return Err(bad("bytes after the deflate stream"));
                }
                return Ok(out);
            }
            _ if out.len() >= cap => {
                return Err(bad("deflate stream inflates past any picture of this size"));
            }
            _ if out.len() == out.capacity() => {
                // Grow geometrically up to the cap.
                let more = out.capacity().min(cap - out.len()).max(64);
                out.reserve(more);
            }
            _ if out.len() == before && d.total_in() as usize == input.len() => {
                return Err(bad("deflate stream is cut short"));
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn round_trip(w: u32, h: u32, data: &[u16]) {
        for codec in [DepthCodec::Raw, DepthCodec::Rvl, DepthCodec::RvlDeflate] {
            let blob = encode(codec, w, h, data, 1).expect("encode");
            let img = decode(&blob, MAX_DEPTH_PIXELS).expect("decode");
            assert_eq!((img.width, img.height), (w, h));
            assert!(img.data == data, "{codec:?} {w}x{h} is not bit-exact");
        }
    }

    #[test]
    fn edge_pictures_round_trip() {
        round_trip(0, 0, &[]);
        round_trip(1, 1, &[0]);
        round_trip(1, 1, &[65535]);
        round_trip(3, 1, &[65535, 1, 65535]);
        round_trip(5, 3, &[0; 15]);
        round_trip(7, 5, &[u16::MAX; 35]);
        let alternating: Vec<u16> = (0..33 * 7)
            .map(|i| if i % 2 == 0 { 0 } else { 65535 })
            .collect();
        round_trip(33, 7, &alternating);
        let ramp: Vec<u16> = (0..=65535u16).collect();
        round_trip(256, 256, &ramp);
    }

    #[test]
    fn byte_snapshot() {
        // 0 0 | 1000 1001 | 0: zeros=2, nonzeros=2, +1000, +1, zeros=1, nonzeros=0.
        let blob = encode(DepthCodec::Rvl, 5, 1, &[0, 0, 1000, 1001, 0], 1).expect("encode");
        // 1000 zig-zags to 2000 = 0b11_111_010_000: chunks 0,2,7,3 → nibbles 8,A,F,3.
        assert_eq!(blob, [1, 0, 5, 0, 1, 0x22, 0x8A, 0xF3, 0x21, 0x00]);
    }

    #[test]
    fn smooth_depth_compresses() {
        let (w, h) = (640u32, 480u32);
        let data: Vec<u16> = (0..w * h)
            .map(|i| {
                let (x, y) = (i % w, i / w);
                if x < 8 {
                    0
                } else {
                    800 + (y as u16) + ((x / 64) as u16)
                }
            })
            .collect();
        let blob = encode(DepthCodec::RvlDeflate, w, h, &data, 1).expect("encode");
        assert!(blob.len() * 8 < data.len() * 2, "{} bytes", blob.len());
        assert_eq!(decode(&blob, MAX_DEPTH_PIXELS).expect("decode").data, data);
    }

    #[test]
    fn deflate_is_skipped_when_it_does_not_help() {
        let mut s = 0x9E37_79B9_7F4A_7C15u64;
        let noise: Vec<u16> = (0..64 * 64)
            .map(|_| {
                s ^= s << 13;
                s ^= s >> 7;
                s ^= s << 17;
                (s >> 11) as u16 | 1
            })
            .collect();
        let blob = encode(DepthCodec::RvlDeflate, 64, 64, &noise, 1).expect("encode");
        assert_eq!(blob[0], DepthCodec::Rvl as u8);
        assert_eq!(decode(&blob, MAX_DEPTH_PIXELS).expect("decode").data, noise);
        let flat = vec![1000u16; 64 * 64];
        let blob = encode(DepthCodec::RvlDeflate, 64, 64, &flat, 1).expect("encode");
        assert_eq!(blob[0], DepthCodec::RvlDeflate as u8);
    }

    #[test]
    fn damage_is_an_error() {
        let data: Vec<u16> = (1..=100).collect();
        let blob = encode(DepthCodec::Rvl, 10, 10, &data, 1).expect("encode");
        // Cut short, trailing garbage, and a size the payload does not fill.
        assert!(decode(&blob[..blob.len() - 1], MAX_DEPTH_PIXELS).is_err());
        let mut longer = blob.clone();
        longer.push(0);
        assert!(decode(&longer, MAX_DEPTH_PIXELS).is_err());
        let mut bigger = blob.clone();
        bigger[4] = 11;
        assert!(decode(&bigger, MAX_DEPTH_PIXELS).is_err());
        // Over the caller's limit: refused before decoding.
        assert!(matches!(
            decode(&blob, 99),
            Err(MediaError::TooLarge { .. })
        ));
        // A deflate bomb: a megabyte of zeros declared as a 2x2 picture.
        let mut bomb = vec![DepthCodec::RvlDeflate as u8, 0, 2, 0, 2];
        deflate(&vec![0u8; 1 << 20], 9, &mut bomb).expect("deflate");
        assert!(decode(&bomb, MAX_DEPTH_PIXELS).is_err());
        assert!(decode(&[9, 0, 1, 0, 1], MAX_DEPTH_PIXELS).is_err());
        assert!(decode(&[1, 0], MAX_DEPTH_PIXELS).is_err());
    }

    proptest! {
        #[test]
        fn random_depth_round_trips(w in 1u32..40, h in 1u32..40, seed in any::<u64>(), zero_pct in 0u64..100) {
            let mut s = seed | 1;
            let data: Vec<u16> = (0..w * h).map(|_| {
                s ^= s << 13; s ^= s >> 7; s ^= s << 17;
                if s % 100 < zero_pct { 0 } else { (s >> 20) as u16 }
            }).collect();
            round_trip(w, h, &data);
        }

        #[test]
        fn any_bytes_decode_or_fail_cleanly(b in proptest::collection::vec(any::<u8>(), 0..300)) {
            if let Ok(img) = decode(&b, 1 << 16) {
                prop_assert_eq!(img.data.len(), img.width as usize * img.height as usize);
                // What decodes re-encodes to the same pixels.
                let again = encode(DepthCodec::Rvl, img.width, img.height, &img.data, 1).expect("encode");
                prop_assert_eq!(decode(&again, 1 << 16).expect("decode"), img);
            }
        }

        #[test]
        fn any_payload_under_a_valid_header(codec in 0u8..3, w in 0u16..50, h in 0u16..50,
                                            p in proptest::collection::vec(any::<u8>(), 0..400)) {
            let mut b = vec![codec];
            b.extend_from_slice(&w.to_be_bytes());
            b.extend_from_slice(&h.to_be_bytes());
            b.extend_from_slice(&p);
            if let Ok(img) = decode(&b, MAX_DEPTH_PIXELS) {
                prop_assert_eq!(img.data.len(), usize::from(w) * usize::from(h));
            }
        }
    }
}
