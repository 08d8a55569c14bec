//! Depth cameras: a depth picture and a colour picture per capture, behind [`DepthSource`].
//!
//! Sources: V4L2 depth cameras (`v4l2`, Linux: a `Z16` node and its colour node, no vendor
//! library) and the synthetic scene. The synthetic scene ([`SceneSource`], `sim:depth`) is a
//! product feature (the demo, CI
//! without a camera): distances are known, so a client can check what it measures. Depth
//! values are device units; [`DepthInfo::scale`] turns them into metres, and the intrinsics
//! turn pixels into points.

pub mod scene;
#[cfg(target_os = "linux")]
pub mod v4l2;

pub use scene::{SceneSource, read_depth_stamp};
pub use xoq_wire::depth::{DepthInfo, Distortion, Intrinsics};

use crate::DeviceError;
use crate::camera::{Mode, ModeRequest, RawFrame};

/// One capture: the depth picture and the colour picture taken with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DepthCapture {
    /// Capture time of both pictures, µs since the Unix epoch.
    pub timestamp_us: u64,
    /// Depth picture width.
    pub width: u32,
    /// Depth picture height.
    pub height: u32,
    /// `width × height` depth values in device units, row by row; 0 = no measurement.
    pub depth: Vec<u16>,
    /// The colour picture (its own size and format).
    pub color: RawFrame,
}

/// A depth camera. `capture` blocks until the next capture (the source sets the pace), so
/// the depth service runs each source on a thread of its own.
pub trait DepthSource: Send {
    /// The mode of the colour stream; the depth picture has its own size in each capture.
    fn mode(&self) -> Mode;
    /// Scale, intrinsics (for the current mode) and names.
    fn info(&self) -> DepthInfo;
    /// Block until the next capture.
    fn capture(&mut self) -> Result<DepthCapture, DeviceError>;
    /// Let the next capture go by unused (nobody is watching): the default captures and
    /// drops it, so a real device keeps streaming fresh frames; a simulated one can skip
    /// rendering.
    fn skip(&mut self) -> Result<(), DeviceError> {
        self.capture().map(|_| ())
    }
    /// Switch to the mode closest to `req`; returns the mode now delivered.
    fn set_mode(&mut self, req: ModeRequest) -> Result<Mode, DeviceError>;
}
