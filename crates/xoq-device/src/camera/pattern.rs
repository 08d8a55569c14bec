//! The test-pattern camera: moving colour bars with the frame number and capture time
//! written into the picture, so a viewer can check order and measure latency end to end
//! without a camera (and through lossy codecs).
//!
//! The stamp is three rows of 64 square blocks at the top of the picture, black = 0 and
//! white = 1, most significant bit first: the frame number, the capture time (µs since the
//! Unix epoch), and a check word mixing both, so a misread (codec damage, a different
//! picture) is reported as `None` rather than as a wrong number.

use super::{CameraSource, Mode, ModeRequest, PixelFormat, RawFrame, now_us};
use crate::DeviceError;

const BITS: u32 = 64;
const ROWS: u32 = 3;
const MAGIC: u64 = 0x786F_715F_6361_6D31; // "xoq_cam1"

/// Smallest picture the stamp fits in (blocks of at least 2 pixels).
pub const MIN_WIDTH: u32 = 2 * BITS;
/// Smallest picture height (stamp plus some picture below it).
pub const MIN_HEIGHT: u32 = 32;

fn check(seq: u64, timestamp_us: u64) -> u64 {
    seq.rotate_left(17) ^ timestamp_us.rotate_left(41) ^ MAGIC
}

/// A moving test picture of a fixed size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TestPattern {
    width: u32,
    height: u32,
}

impl TestPattern {
    /// A pattern of `width × height` (even sizes, at least [`MIN_WIDTH`] × [`MIN_HEIGHT`],
    /// at most 7680 × 4320).
    pub fn new(width: u32, height: u32) -> Result<Self, DeviceError> {
        if !(MIN_WIDTH..=7680).contains(&width)
            || !(MIN_HEIGHT..=4320).contains(&height)
            || !width.is_multiple_of(2)
            || !height.is_multiple_of(2)
        {
            return Err(DeviceError::Config(format!(
                "test pattern size {width}x{height}: use even sizes from {MIN_WIDTH}x{MIN_HEIGHT} to 7680x4320"
            )));
        }
        Ok(Self { width, height })
    }

    /// Width in pixels.
    pub fn width(&self) -> u32 {
        self.width
    }

    /// Height in pixels.
    pub fn height(&self) -> u32 {
        self.height
    }

    fn block(&self) -> u32 {
        (self.width / BITS).min((self.height / 2) / ROWS).max(2)
    }

    /// Frame `seq` captured at `timestamp_us`, as packed RGB.
    pub fn render(&self, seq: u64, timestamp_us: u64) -> Vec<u8> {
        let (w, h) = (self.width as usize, self.height as usize);
        let mut rgb = vec![0u8; w * h * 3];
        // Diagonal colour bars that move one bar width every 30 frames: motion for the
        // encoder, and a picture a person recognises.
        const BARS: [[u8; 3]; 8] = [
            [235, 235, 235],
            [235, 235, 16],
            [16, 235, 235],
            [16, 235, 16],
            [235, 16, 235],
            [235, 16, 16],
            [16, 16, 235],
            [40, 40, 40],
        ];
        let bar = (w / 8).max(1);
        // One full cycle every 240 frames (8 bars × 30); any seq, no overflow.
        let shift = ((seq % 240) as usize * bar / 30) % (bar * 8);
        // Row y is one long strip of bars read from offset y/2 + shift: render the strip
        // once, then every row is a copy (fast even in unoptimised builds).
        let strip_px = w + h / 2 + bar * 8;
        let mut strip = Vec::with_capacity(strip_px * 3);
        for x in 0..strip_px {
            strip.extend_from_slice(&BARS[(x / bar) % 8]);
        }
        for (y, row) in rgb.chunks_exact_mut(w * 3).enumerate() {
            let from = (y / 2 + shift) * 3;
            row.copy_from_slice(&strip[from..from + w * 3]);
        }
        self.stamp(&mut rgb, seq, timestamp_us);
        rgb
    }

    /// Write the stamp of frame `seq` captured at `timestamp_us` over the top of `rgb` (a
    /// packed RGB picture of this size), so any picture can carry it (the depth scene's
    /// colour picture does).
    pub fn stamp(&self, rgb: &mut [u8], seq: u64, timestamp_us: u64) {
        let w = self.width as usize;
        if rgb.len() != w * self.height as usize * 3 {
            return;
        }
        let b = self.block() as usize;
        for (r, word) in [seq, timestamp_us, check(seq, timestamp_us)]
            .into_iter()
            .enumerate()
        {
            for bit in 0..BITS as usize {
                let on = (word >> (63 - bit)) & 1 == 1;
                let v = if on { 255 } else { 0 };
                for y in r * b..(r + 1) * b {
                    let start = (y * w + bit * b) * 3;
                    rgb[start..start + b * 3].fill(v);
                }
            }
        }
    }
}

/// The test pattern as a [`CameraSource`]: RGB frames paced at the configured rate
/// (a late caller gets the next frame at once; missed ticks are skipped, not queued).
#[derive(Debug)]
pub struct PatternSource {
    pattern: TestPattern,
    fps: u32,
    seq: u64,
    next: Option<std::time::Instant>,
}

impl PatternSource {
    /// The pattern at `width × height` and `fps` (1–120) frames per second.
    pub fn new(width: u32, height: u32, fps: u32) -> Result<Self, DeviceError> {
        Ok(Self {
            pattern: TestPattern::new(width, height)?,
            fps: check_fps(fps)?,
            seq: 0,
            next: None,
        })
    }

    fn period(&self) -> std::time::Duration {
        std::time::Duration::from_secs_f64(1.0 / f64::from(self.fps))
    }
}

fn check_fps(fps: u32) -> Result<u32, DeviceError> {
    if (1..=120).contains(&fps) {
        Ok(fps)
    } else {
        Err(DeviceError::Config(format!(
            "test pattern rate {fps} fps: use 1 to 120"
        )))
    }
}

impl CameraSource for PatternSource {
    fn mode(&self) -> Mode {
        Mode {
            format: PixelFormat::Rgb24,
            width: self.pattern.width,
            height: self.pattern.height,
            fps: self.fps,
        }
    }

    fn capture(&mut self) -> Result<RawFrame, DeviceError> {
        let now = std::time::Instant::now();
        let due = self.next.unwrap_or(now);
        if due > now {
            std::thread::sleep(due - now);
        }
        // Schedule from the due time (no drift), but never into the past (no bursts).
        self.next = Some((due + self.period()).max(std::time::Instant::now()));
        let ts = now_us();
        let seq = self.seq;
        self.seq += 1;
        Ok(RawFrame {
            format: PixelFormat::Rgb24,
            width: self.pattern.width,
            height: self.pattern.height,
            timestamp_us: ts,
            data: self.pattern.render(seq, ts),
        })
    }

    fn set_mode(&mut self, req: ModeRequest) -> Result<Mode, DeviceError> {
        // Any even size in range: round odd requests down rather than refuse them.
        let w = req.width.unwrap_or(self.pattern.width) & !1;
        let h = req.height.unwrap_or(self.pattern.height) & !1;
        let pattern = TestPattern::new(w, h)?;
        let fps = check_fps(req.fps.unwrap_or(self.fps))?;
        self.pattern = pattern;
        self.fps = fps;
        Ok(self.mode())
    }
}

/// Read the stamp of a test-pattern picture: `(seq, timestamp_us)`, or `None` when the
/// picture carries no valid stamp (another picture, wrong size, too much codec damage).
pub fn read_stamp(rgb: &[u8], width: u32, height: u32) -> Option<(u64, u64)> {
    let pattern = TestPattern::new(width, height).ok()?;
    let (w, b) = (width as usize, pattern.block() as usize);
    if rgb.len() != w * height as usize * 3 {
        return None;
    }
    let mut words = [0u64; ROWS as usize];
    for (r, word) in words.iter_mut().enumerate() {
        for bit in 0..BITS as usize {
            // Average the middle of the block: codecs smear the edges.
            let (mut sum, mut n) = (0u32, 0u32);
            for y in r * b + b / 4..r * b + b - b / 4 {
                for x in bit * b + b / 4..bit * b + b - b / 4 {
                    let p = (y * w + x) * 3;
                    sum += (u32::from(rgb[p]) + u32::from(rgb[p + 1]) + u32::from(rgb[p + 2])) / 3;
                    n += 1;
                }
            }
            *word = (*word << 1) | u64::from(sum / n.max(1) > 127);
        }
    }
    let [seq, ts, chk] = words;
    (chk == check(seq, ts)).then_some((seq, ts))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stamp_round_trips_at_common_sizes() {
        for (w, h) in [(128, 32), (640, 480), (1280, 720), (1920, 1080), (642, 480)] {
            let p = TestPattern::new(w, h).expect("size");
            for (seq, ts) in [(0, 0), (1, 1_764_000_000_123_456), (u64::MAX, 42)] {
                let img = p.render(seq, ts);
                assert_eq!(img.len(), (w * h * 3) as usize);
                assert_eq!(read_stamp(&img, w, h), Some((seq, ts)), "{w}x{h}");
            }
        }
    }

    #[test]
    fn damage_and_other_pictures_read_as_none() {
        let p = TestPattern::new(640, 480).expect("size");
        let mut img = p.render(7, 9);
        // Invert one block of the frame number: the check word no longer matches.
        let b = p.block() as usize;
        for y in 0..b {
            for x in 0..b {
                let i = (y * 640 + x) * 3;
                img[i..i + 3].iter_mut().for_each(|v| *v = 255 - *v);
            }
        }
        assert_eq!(read_stamp(&img, 640, 480), None);
        assert_eq!(read_stamp(&vec![128; 640 * 480 * 3], 640, 480), None);
        assert_eq!(read_stamp(&[0; 10], 640, 480), None, "wrong buffer size");
        assert_eq!(read_stamp(&[], 3, 3), None, "impossible size");
    }

    #[test]
    fn the_picture_moves() {
        let p = TestPattern::new(320, 240).expect("size");
        let (a, b) = (p.render(0, 0), p.render(15, 0));
        let below = 320 * 3 * 60;
        assert_ne!(a[below..], b[below..]);
    }

    #[test]
    fn the_source_paces_frames_and_changes_mode() {
        let mut src = PatternSource::new(320, 240, 100).expect("source");
        let a = src.capture().expect("frame");
        let b = src.capture().expect("frame");
        assert_eq!(read_stamp(&a.data, 320, 240).map(|s| s.0), Some(0));
        assert_eq!(read_stamp(&b.data, 320, 240).map(|s| s.0), Some(1));
        assert!(b.timestamp_us > a.timestamp_us, "paced, not a burst");
        let m = src
            .set_mode(ModeRequest {
                width: Some(641),
                height: Some(360),
                ..Default::default()
            })
            .expect("mode");
        assert_eq!((m.width, m.height, m.fps), (640, 360, 100));
        let c = src.capture().expect("frame");
        assert_eq!((c.width, c.height, c.data.len()), (640, 360, 640 * 360 * 3));
        assert!(
            src.set_mode(ModeRequest {
                fps: Some(0),
                ..Default::default()
            })
            .is_err()
        );
        assert_eq!(src.mode().width, 640, "a refused request changes nothing");
    }

    #[test]
    fn sizes_are_checked() {
        for (w, h) in [(0, 0), (127, 64), (640, 31), (641, 480), (8000, 480)] {
            assert!(TestPattern::new(w, h).is_err(), "{w}x{h}");
        }
    }
}
