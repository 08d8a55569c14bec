//! Camera sources: the test pattern and (on Linux) V4L2 devices, behind [`CameraSource`].
//!
//! A source delivers raw frames in the format the device produces ([`PixelFormat`]);
//! converting and encoding them is the camera service's business (see `xoq-media`), so a
//! camera that already sends MJPEG can be passed through without a decode.

pub mod pattern;
#[cfg(target_os = "linux")]
pub mod v4l2;

pub use pattern::{PatternSource, TestPattern, read_stamp};

use crate::DeviceError;

/// Pixel layout of a raw frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PixelFormat {
    /// Packed 8-bit RGB, `width × height × 3` bytes.
    Rgb24,
    /// Packed 4:2:2 Y0 U Y1 V, `width × height × 2` bytes.
    Yuyv,
    /// Planar Y then interleaved UV at half resolution, `width × height × 3 / 2` bytes.
    Nv12,
    /// One JPEG image per frame (variable size).
    Mjpeg,
    /// Depth, one little-endian u16 per pixel in device units (`Z16 `, RealSense and most
    /// depth cameras over uvcvideo).
    Z16,
    /// 16-bit little-endian grey (`Y16 `), which some depth cameras use for depth.
    Y16,
}

impl PixelFormat {
    /// Bytes of one frame at `width × height`, or `None` for compressed formats.
    pub fn frame_len(self, width: u32, height: u32) -> Option<usize> {
        let px = width as usize * height as usize;
        match self {
            PixelFormat::Rgb24 => Some(px * 3),
            PixelFormat::Yuyv => Some(px * 2),
            PixelFormat::Nv12 => Some(px + px / 2),
            PixelFormat::Z16 | PixelFormat::Y16 => Some(px * 2),
            PixelFormat::Mjpeg => None,
        }
    }

    /// Whether this is a depth format (served by the depth service, never as a picture).
    pub fn is_depth(self) -> bool {
        matches!(self, PixelFormat::Z16 | PixelFormat::Y16)
    }
}

impl std::fmt::Display for PixelFormat {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            PixelFormat::Rgb24 => "RGB3",
            PixelFormat::Yuyv => "YUYV",
            PixelFormat::Nv12 => "NV12",
            PixelFormat::Mjpeg => "MJPG",
            PixelFormat::Z16 => "Z16",
            PixelFormat::Y16 => "Y16",
        })
    }
}

/// A capture mode: what a source delivers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Mode {
    /// Pixel layout.
    pub format: PixelFormat,
    /// Width in pixels.
    pub width: u32,
    /// Height in pixels.
    pub height: u32,
    /// Frames per second.
    pub fps: u32,
}

impl std::fmt::Display for Mode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} {}x{} @ {} fps",
            self.format, self.width, self.height, self.fps
        )
    }
}

/// What a caller asks a source for; the source picks the closest mode it has.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ModeRequest {
    /// Wanted width (`None`: the source's default).
    pub width: Option<u32>,
    /// Wanted height.
    pub height: Option<u32>,
    /// Wanted frame rate.
    pub fps: Option<u32>,
    /// Prefer MJPEG (for JPEG streaming without a re-encode) over raw formats.
    pub prefer_mjpeg: bool,
    /// Depth formats only (Z16, Y16); without it they are never chosen.
    pub depth: bool,
}

/// One captured frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawFrame {
    /// Layout of `data`.
    pub format: PixelFormat,
    /// Width in pixels.
    pub width: u32,
    /// Height in pixels.
    pub height: u32,
    /// Capture time, µs since the Unix epoch.
    pub timestamp_us: u64,
    /// The pixels (or the JPEG image for [`PixelFormat::Mjpeg`]).
    pub data: Vec<u8>,
}

/// A camera. `capture` blocks until the next frame (the source sets the pace), so the camera
/// service runs each source on a thread of its own.
pub trait CameraSource: Send {
    /// The mode frames are delivered in.
    fn mode(&self) -> Mode;
    /// Block until the next frame.
    fn capture(&mut self) -> Result<RawFrame, DeviceError>;
    /// Switch to the mode closest to `req`; returns the mode now delivered.
    fn set_mode(&mut self, req: ModeRequest) -> Result<Mode, DeviceError>;
}

/// The clock frames are stamped with.
pub use crate::now_us;
