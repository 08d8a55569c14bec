//! The synthetic depth camera (`sim:depth`): a small scene rendered as a depth camera sees
//! it, with distances a client can check.
//!
//! The camera sits [`CAMERA_HEIGHT_M`] above a floor, looking level at a wall
//! [`WALL_M`] away. A board faces it at [`TARGET_M`], covering the centre of the picture
//! (the pixel at the principal point sees it), and a ball swings left and right behind the
//! board. Like a stereo camera (a D435-like 50 mm baseline), the depth picture has a band of
//! invalid (0) pixels on the left, scattered dropouts, and error made where a stereo camera
//! makes it: in the disparity, part shared by an 8×8-pixel matching window and part per pixel
//! (±0.05 px each, new every frame), then quantised to 1/32-pixel subpixel steps, so depth steps and noise grow with
//! the square of the distance (at 640 pixels wide: within 7 mm at the board, 6 cm at the wall). The colour picture is
//! rendered from the same viewpoint with the same field of view (aligned with depth; at its
//! own size when one is given) and carries the test pattern's stamp; the depth picture
//! carries the frame number and capture time in its first 12 pixels (inside the invalid
//! band), so both pictures of a capture can be matched and timed.

use super::{DepthCapture, DepthInfo, DepthSource, Intrinsics};
use crate::DeviceError;
use crate::camera::{Mode, ModeRequest, PixelFormat, RawFrame, TestPattern, now_us};

/// Metres per depth unit: values are millimetres, as on a RealSense D4xx.
pub const SCALE: f32 = 0.001;
/// Horizontal field of view, degrees (a D435's depth camera).
pub const HFOV_DEG: f32 = 87.0;
/// Distance of the board at the centre of the picture, metres.
pub const TARGET_M: f32 = 1.0;
/// Distance of the back wall, metres.
pub const WALL_M: f32 = 3.0;
/// Height of the camera above the floor, metres.
pub const CAMERA_HEIGHT_M: f32 = 0.5;
/// The ball: radius, distance, and how far it swings either side, metres.
const BALL_R: f32 = 0.2;
const BALL_Z: f32 = 1.8;
const BALL_SWING: f32 = 0.8;
/// Frames per swing of the ball.
const BALL_PERIOD: u64 = 120;
/// The board: x from -0.15 to 0.15 m, y from -0.25 to 0.05 m (y points down).
const BOARD: [f32; 4] = [-0.15, 0.15, -0.25, 0.05];
const STAMP_WORDS: usize = 12;
/// Stereo baseline, metres (a D435's).
const BASELINE_M: f32 = 0.05;
/// Subpixel steps per pixel of disparity.
const SUBPIXEL: f32 = 32.0;
/// Largest disparity error shared by a matching window, pixels (uniform, new every frame).
const WINDOW_ERROR_PX: f32 = 0.05;
/// Largest disparity error of each pixel on top, pixels (uniform).
const PIXEL_ERROR_PX: f32 = 0.05;
/// Side of the matching window the error is shared over, pixels.
const WINDOW: usize = 8;
const MAGIC: u64 = 0x786F_715F_6470_7431; // "xoq_dpt1"

#[derive(Clone, Copy, PartialEq, Eq)]
enum Surface {
    Floor,
    Wall,
    Board,
}

/// What a picture of the scene looks like without the ball, at one size: distance (m) and
/// surface per pixel, and the colour picture (the still parts do not change; only the ball's
/// pixels are drawn per capture).
#[derive(Debug)]
struct View {
    width: u32,
    height: u32,
    k: Intrinsics,
    still: Vec<(f32, u8)>,
    still_rgb: Vec<u8>,
}

impl View {
    fn new(width: u32, height: u32) -> View {
        let k = Intrinsics::pinhole(width, height, HFOV_DEG);
        let still = still_scene(width, height, &k);
        let still_rgb = paint(&still, width as usize, &k);
        View {
            width,
            height,
            k,
            still,
            still_rgb,
        }
    }

    /// The pixels where the ball at `ball` is in front of the still scene: (index, z).
    fn ball_pixels(&self, ball: [f32; 3]) -> Vec<(usize, f32)> {
        let (w, h, k) = (self.width as usize, self.height as usize, &self.k);
        let near = ball[2] - BALL_R;
        let span = |c: f32, f: f32, p: f32| {
            let a = p + f * (c - 1.5 * BALL_R) / near;
            let b = p + f * (c + 1.5 * BALL_R) / near;
            (a.max(0.0) as usize, (b.max(0.0) as usize))
        };
        let (u0, u1) = span(ball[0], k.fx, k.ppx);
        let (v0, v1) = span(ball[1], k.fy, k.ppy);
        let mut out = Vec::new();
        for v in v0.min(h)..(v1 + 1).min(h) {
            for u in u0.min(w)..(u1 + 1).min(w) {
                let (x, y) = (
                    (u as f32 + 0.5 - k.ppx) / k.fx,
                    (v as f32 + 0.5 - k.ppy) / k.fy,
                );
                let i = v * w + u;
                if let Some(z) = ball_hit(x, y, ball)
                    && z < self.still[i].0
                {
                    out.push((i, z));
                }
            }
        }
        out
    }

    /// The colour picture with the ball drawn in.
    fn color(&self, ball: [f32; 3], pixels: &[(usize, f32)]) -> Vec<u8> {
        let mut rgb = self.still_rgb.clone();
        let w = self.width as usize;
        for &(i, z) in pixels {
            rgb[i * 3..i * 3 + 3].copy_from_slice(&shade_ball(i % w, z, ball, &self.k));
        }
        rgb
    }
}

/// The synthetic depth camera at one size and rate (see the module docs).
#[derive(Debug)]
pub struct SceneSource {
    width: u32,
    height: u32,
    fps: u32,
    seq: u64,
    next: Option<std::time::Instant>,
    /// The depth picture's view.
    view: View,
    /// The colour picture's own view (`None`: the depth view).
    color: Option<View>,
}

fn check(seq: u64, ts: u64) -> u64 {
    seq.rotate_left(23) ^ ts.rotate_left(7) ^ MAGIC
}

/// Read the stamp of a `sim:depth` depth picture: `(seq, timestamp_us)`, or `None` when
/// the picture carries none.
pub fn read_depth_stamp(depth: &[u16]) -> Option<(u64, u64)> {
    let w = depth.get(..STAMP_WORDS)?;
    let word = |i: usize| {
        w[i * 4..i * 4 + 4]
            .iter()
            .fold(0u64, |acc, &v| (acc << 16) | u64::from(v))
    };
    let (seq, ts, chk) = (word(0), word(1), word(2));
    (chk == check(seq, ts)).then_some((seq, ts))
}

fn hash(a: u64, b: u64) -> u64 {
    let mut x = a.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ b.wrapping_mul(0xC2B2_AE3D_27D4_EB4F);
    x ^= x >> 31;
    x = x.wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x ^ (x >> 29)
}

impl SceneSource {
    /// The scene at `width × height` (even, 128×32 to 1920×1080) and `fps` (1–120).
    pub fn new(width: u32, height: u32, fps: u32) -> Result<Self, DeviceError> {
        check_mode(width, height, fps)?;
        Ok(Self {
            width,
            height,
            fps,
            seq: 0,
            next: None,
            view: View::new(width, height),
            color: None,
        })
    }

    /// Render the colour picture at `width × height` instead of the depth size (same
    /// viewpoint and field of view: a D4xx's 848×480 depth with 1280×720 colour).
    pub fn with_color_size(mut self, width: u32, height: u32) -> Result<Self, DeviceError> {
        if width > 1920 || height > 1080 {
            return Err(DeviceError::Config(format!(
                "synthetic colour size {width}x{height}: at most 1920x1080"
            )));
        }
        TestPattern::new(width, height)?;
        self.color = Some(View::new(width, height));
        Ok(self)
    }

    /// Intrinsics of the colour picture.
    pub fn color_intrinsics(&self) -> Intrinsics {
        self.color
            .as_ref()
            .map_or_else(|| self.intrinsics(), |c| c.k)
    }

    fn resize(&mut self, width: u32, height: u32, fps: u32) -> Result<(), DeviceError> {
        check_mode(width, height, fps)?;
        self.width = width;
        self.height = height;
        self.fps = fps;
        self.view = View::new(width, height);
        Ok(())
    }

    /// Intrinsics of both pictures (the colour one is rendered from the depth viewpoint).
    pub fn intrinsics(&self) -> Intrinsics {
        Intrinsics::pinhole(self.width, self.height, HFOV_DEG)
    }

    /// Render capture `seq` taken at `timestamp_us`.
    pub fn render(&self, seq: u64, timestamp_us: u64) -> DepthCapture {
        let mut cap = self.render_unstamped(seq);
        stamp(&mut cap, seq, timestamp_us);
        cap
    }

    /// Capture `seq` without its stamps (and with timestamp 0).
    fn render_unstamped(&self, seq: u64) -> DepthCapture {
        let (w, h) = (self.width as usize, self.height as usize);
        let k = self.view.k;
        let phase = (seq % BALL_PERIOD) as f32 / BALL_PERIOD as f32 * std::f32::consts::TAU;
        let ball = [BALL_SWING * phase.sin(), -0.1, BALL_Z];
        let ball_px = self.view.ball_pixels(ball);
        let band = w / 32;
        let fb = k.fx * BASELINE_M;
        let unit = |x: u64| (x % 2001) as f32 / 1000.0 - 1.0;
        // What the stereo matcher reports at pixel i for a surface z metres away: the
        // window's error plus the pixel's, then subpixel steps; 0 for the invalid band,
        // dropouts and nothing in range.
        let measure = |i: usize, z: f32| -> u16 {
            let (u, v) = (i % w, i / w);
            if u < band || hash(seq, i as u64).is_multiple_of(200) || !z.is_finite() {
                return 0;
            }
            let window = ((v / WINDOW) as u64) << 32 | (u / WINDOW) as u64;
            let err = unit(hash(seq ^ 0x5eed, window)) * WINDOW_ERROR_PX
                + unit(hash(seq, i as u64) >> 8) * PIXEL_ERROR_PX;
            let d = ((fb / z + err) * SUBPIXEL).round() / SUBPIXEL;
            if d > 0.0 {
                (fb / d * 1000.0).round().clamp(1.0, 65535.0) as u16
            } else {
                0
            }
        };
        let mut depth: Vec<u16> = (0..w * h)
            .map(|i| measure(i, self.view.still[i].0))
            .collect();
        for &(i, z) in &ball_px {
            depth[i] = measure(i, z);
        }
        let (cw, ch, rgb) = match &self.color {
            None => (self.width, self.height, self.view.color(ball, &ball_px)),
            Some(c) => (c.width, c.height, c.color(ball, &c.ball_pixels(ball))),
        };
        DepthCapture {
            timestamp_us: 0,
            width: self.width,
            height: self.height,
            depth,
            color: RawFrame {
                format: PixelFormat::Rgb24,
                width: cw,
                height: ch,
                timestamp_us: 0,
                data: rgb,
            },
        }
    }

    fn period(&self) -> std::time::Duration {
        std::time::Duration::from_secs_f64(1.0 / f64::from(self.fps))
    }

    /// Wait for the next capture's turn.
    fn pace(&mut self) {
        let now = std::time::Instant::now();
        let due = self.next.unwrap_or(now);
        if due > now {
            std::thread::sleep(due - now);
        }
        // Schedule from the due time (no drift), never into the past (no bursts).
        self.next = Some((due + self.period()).max(std::time::Instant::now()));
    }
}

/// Refuse a size or rate the scene cannot render (before anything is built or changed).
fn check_mode(width: u32, height: u32, fps: u32) -> Result<(), DeviceError> {
    if width > 1920 || height > 1080 {
        return Err(DeviceError::Config(format!(
            "synthetic depth size {width}x{height}: at most 1920x1080"
        )));
    }
    // The colour picture carries the test pattern's stamp: same size rules.
    TestPattern::new(width, height)?;
    if !(1..=120).contains(&fps) {
        return Err(DeviceError::Config(format!(
            "synthetic depth rate {fps} fps: use 1 to 120"
        )));
    }
    Ok(())
}

/// Write capture `seq`'s frame number and capture time into both pictures and the capture.
fn stamp(cap: &mut DepthCapture, seq: u64, timestamp_us: u64) {
    let words = [seq, timestamp_us, check(seq, timestamp_us)];
    for (n, word) in words.iter().enumerate() {
        for j in 0..4 {
            if let Some(px) = cap.depth.get_mut(n * 4 + j) {
                *px = (word >> (48 - 16 * j)) as u16;
            }
        }
    }
    if let Ok(p) = TestPattern::new(cap.color.width, cap.color.height) {
        p.stamp(&mut cap.color.data, seq, timestamp_us);
    }
    cap.timestamp_us = timestamp_us;
    cap.color.timestamp_us = timestamp_us;
}

/// The still scene seen through `k` at `width × height`: distance (m) and surface per pixel.
fn still_scene(width: u32, height: u32, k: &Intrinsics) -> Vec<(f32, u8)> {
    (0..width * height)
        .map(|i| {
            let (u, v) = ((i % width) as f32 + 0.5, (i / width) as f32 + 0.5);
            let (x, y) = ((u - k.ppx) / k.fx, (v - k.ppy) / k.fy);
            still_point(x, y)
        })
        .map(|(z, s)| (z, s as u8))
        .collect()
}

/// The colour picture of the still `scene` (`w` pixels wide), packed RGB.
fn paint(scene: &[(f32, u8)], w: usize, k: &Intrinsics) -> Vec<u8> {
    let mut rgb = vec![0u8; scene.len() * 3];
    for (i, &(z, s)) in scene.iter().enumerate() {
        rgb[i * 3..i * 3 + 3].copy_from_slice(&shade(s, i % w, z, k));
    }
    rgb
}

/// Distance and surface of the still scene along the ray through normalised image point
/// (`x`, `y`) (z = 1).
fn still_point(x: f32, y: f32) -> (f32, Surface) {
    let board = TARGET_M;
    let (bx, by) = (x * board, y * board);
    if (BOARD[0]..=BOARD[1]).contains(&bx) && (BOARD[2]..=BOARD[3]).contains(&by) {
        return (board, Surface::Board);
    }
    // The floor is y = CAMERA_HEIGHT_M; it meets the ray at z = height / y.
    if y > 0.0 {
        let z = CAMERA_HEIGHT_M / y;
        if z < WALL_M {
            return (z, Surface::Floor);
        }
    }
    (WALL_M, Surface::Wall)
}

/// Distance (z) at which the ray through (`x`, `y`, 1) meets the ball, if it does.
fn ball_hit(x: f32, y: f32, c: [f32; 3]) -> Option<f32> {
    let a = x * x + y * y + 1.0;
    let b = -2.0 * (x * c[0] + y * c[1] + c[2]);
    let cc = c[0] * c[0] + c[1] * c[1] + c[2] * c[2] - BALL_R * BALL_R;
    let disc = b * b - 4.0 * a * cc;
    (disc >= 0.0).then(|| (-b - disc.sqrt()) / (2.0 * a))
}

/// Colour of a still surface point: a checkered floor, a striped wall and an orange board,
/// dimmed with distance.
fn shade(s: u8, u: usize, z: f32, k: &Intrinsics) -> [u8; 3] {
    let x = (u as f32 + 0.5 - k.ppx) / k.fx * z;
    let fade = 1.2 - z / (2.0 * WALL_M);
    match s {
        s if s == Surface::Floor as u8 => {
            let cell = ((x / 0.25).floor() as i64 + (z / 0.25).floor() as i64) & 1;
            let g = if cell == 0 { 200.0 } else { 90.0 };
            dim([g, g, g], fade)
        }
        s if s == Surface::Board as u8 => [235, 120, 30],
        _ => {
            let stripe = if (x / 0.5).floor() as i64 & 1 == 0 {
                1.0
            } else {
                0.85
            };
            dim([210.0, 195.0, 160.0], stripe * fade)
        }
    }
}

/// Colour of the ball: blue, lit from the camera (brighter where it faces it).
fn shade_ball(u: usize, z: f32, ball: [f32; 3], k: &Intrinsics) -> [u8; 3] {
    let x = (u as f32 + 0.5 - k.ppx) / k.fx * z;
    let dx = (x - ball[0]) / BALL_R;
    let facing = (1.0 - dx * dx).max(0.0).sqrt();
    dim([40.0, 90.0, 230.0], 0.4 + 0.6 * facing)
}

fn dim(c: [f32; 3], f: f32) -> [u8; 3] {
    c.map(|c| (c * f).clamp(0.0, 255.0) as u8)
}

impl DepthSource for SceneSource {
    fn mode(&self) -> Mode {
        let (width, height) = self
            .color
            .as_ref()
            .map_or((self.width, self.height), |c| (c.width, c.height));
        Mode {
            format: PixelFormat::Rgb24,
            width,
            height,
            fps: self.fps,
        }
    }

    fn info(&self) -> DepthInfo {
        let k = self.intrinsics();
        DepthInfo {
            scale: SCALE,
            depth: k,
            color: self.color_intrinsics(),
            name: "xoq synthetic depth".into(),
            serial: "sim-depth".into(),
        }
    }

    fn skip(&mut self) -> Result<(), DeviceError> {
        // Keep the pace and the frame count, render nothing: the scene costs a core at 720p.
        self.pace();
        self.seq += 1;
        Ok(())
    }

    fn capture(&mut self) -> Result<DepthCapture, DeviceError> {
        self.pace();
        let seq = self.seq;
        self.seq += 1;
        // Stamped when the pictures exist, as a camera stamps a frame when it is read out:
        // rendering the scene is the simulated sensor, not part of what is measured.
        let mut cap = self.render_unstamped(seq);
        stamp(&mut cap, seq, now_us());
        Ok(cap)
    }

    fn set_mode(&mut self, req: ModeRequest) -> Result<Mode, DeviceError> {
        let w = req.width.unwrap_or(self.width) & !1;
        let h = req.height.unwrap_or(self.height) & !1;
        let fps = req.fps.unwrap_or(self.fps);
        // resize checks before it changes anything: a refused request changes nothing.
        self.resize(w, h, fps)?;
        Ok(self.mode())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::camera::read_stamp;

    #[test]
    fn both_pictures_carry_the_capture_and_distances_are_known() {
        let s = SceneSource::new(640, 480, 30).expect("scene");
        let c = s.render(42, 1_764_000_000_123_456);
        assert_eq!(c.depth.len(), 640 * 480);
        assert_eq!(
            read_depth_stamp(&c.depth),
            Some((42, 1_764_000_000_123_456))
        );
        assert_eq!(
            read_stamp(&c.color.data, 640, 480),
            Some((42, 1_764_000_000_123_456))
        );
        // The principal point sees the board at 1 m (within the noise).
        let centre = c.depth[240 * 640 + 320];
        assert!((990..=1010).contains(&centre), "{centre} mm");
        // Bottom rows see the floor, nearer than the wall; the left band is invalid.
        let floor = c.depth[479 * 640 + 600];
        assert!(floor > 400 && floor < 1000, "{floor} mm");
        assert!(
            c.depth[200 * 640 + 5..200 * 640 + 15]
                .iter()
                .all(|&v| v == 0)
        );
        let zeros = c.depth.iter().filter(|&&v| v == 0).count();
        assert!(zeros > 640 * 480 / 40 && zeros < 640 * 480 / 20, "{zeros}");
        assert_eq!(read_depth_stamp(&[0; 12]), None);
    }

    #[test]
    fn the_ball_moves_and_the_noise_changes() {
        let s = SceneSource::new(320, 240, 30).expect("scene");
        // At frame 0 the ball hangs behind the board; a quarter swing later it is in view.
        let (a, b) = (s.render(0, 0), s.render(30, 0));
        let ball = |c: &DepthCapture| {
            c.depth[..320 * 120]
                .iter()
                .filter(|&&v| (1550..2000).contains(&v))
                .count()
        };
        assert!(ball(&a) < 50 && ball(&b) > 500, "{} {}", ball(&a), ball(&b));
        assert_ne!(a.depth[12..], b.depth[12..]);
    }

    #[test]
    fn colour_can_have_its_own_size_from_the_same_viewpoint() {
        let s = SceneSource::new(848, 480, 30)
            .expect("scene")
            .with_color_size(1280, 720)
            .expect("colour size");
        let c = s.render(5, 77);
        assert_eq!((c.width, c.height, c.depth.len()), (848, 480, 848 * 480));
        assert_eq!((c.color.width, c.color.height), (1280, 720));
        assert_eq!(read_stamp(&c.color.data, 1280, 720), Some((5, 77)));
        assert_eq!(read_depth_stamp(&c.depth), Some((5, 77)));
        let i = s.info();
        assert_eq!((i.depth.width, i.color.width), (848, 1280));
        assert_eq!(s.mode().width, 1280, "the mode is the colour picture's");
        // Same field of view: the principal points see the same board.
        let board = c.depth[240 * 848 + 424];
        assert!((990..=1010).contains(&board), "{board} mm");
        assert!(
            SceneSource::new(640, 480, 30)
                .expect("s")
                .with_color_size(4000, 10)
                .is_err()
        );
    }

    #[test]
    fn the_source_paces_and_changes_mode() {
        let mut s = SceneSource::new(320, 240, 100).expect("scene");
        let a = s.capture().expect("capture");
        let b = s.capture().expect("capture");
        assert_eq!(read_depth_stamp(&b.depth).map(|x| x.0), Some(1));
        assert!(b.timestamp_us > a.timestamp_us);
        let m = s
            .set_mode(ModeRequest {
                width: Some(640),
                height: Some(480),
                ..Default::default()
            })
            .expect("mode");
        assert_eq!((m.width, m.height), (640, 480));
        assert_eq!(s.info().depth.width, 640);
        assert!(
            s.set_mode(ModeRequest {
                fps: Some(0),
                ..Default::default()
            })
            .is_err()
        );
        assert_eq!(s.mode().width, 640);
        assert!(SceneSource::new(4000, 480, 30).is_err());
    }
}
