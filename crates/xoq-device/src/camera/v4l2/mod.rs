//! V4L2 capture: USB webcams (UVC) and other Linux video capture devices.
//!
//! The dozen ioctls used are bound by hand in the private `sys` module (the structs of `linux/videodev2.h`,
//! checked against the kernel ABI by const asserts) rather than through bindgen or a crate:
//! the surface is small and stable, and the build needs no kernel headers.
//!
//! Capture uses memory-mapped streaming with [`BUFFERS`] buffers and a non-blocking fd
//! polled with a [`CAPTURE_TIMEOUT`], so an unplugged or stalled camera gives an error
//! instead of hanging the capture thread. Only single-planar capture is supported (what
//! UVC webcams offer); multi-planar nodes (some SoC camera pipelines) are refused.
//!
//! This module opens a device and holds [`V4l2Camera`]; the rest is split by concern:
//! `sys` (the kernel ABI), `list` (listing devices, enumerating their modes), `negotiate`
//! (choosing a mode, V4L2 values to xoq's) and `stream` (buffers and the capture cycle).

mod list;
mod negotiate;
mod stream;
mod sys;

use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::AsFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::{Mode, ModeRequest};
use crate::DeviceError;

pub use list::{DeviceInfo, list};
pub use negotiate::choose_mode;

use list::{device_caps, enumerate, no_format_reason};
use negotiate::{DevMode, pick};
use stream::Mapping;
use sys::ioctl;

/// Buffers requested from the driver: enough that the camera never waits for us while we
/// copy one frame out, few enough that a frame is never old when we get it.
pub const BUFFERS: u32 = 4;

/// How long `capture` waits for a frame before reporting the camera as stalled. Long enough
/// for a first frame after stream-on and for auto-exposure dropping to a few fps in the dark.
pub const CAPTURE_TIMEOUT: Duration = Duration::from_secs(2);

const LIST_HINT: &str = "list cameras with `xoq camera-server --list`";

/// Which camera `device` names: a number `N` is `/dev/videoN`, `videoN` is `/dev/videoN`,
/// anything with a `/` is a path as given (stable names such as `/dev/v4l/by-id/...` are
/// paths). Whether the device exists is checked when it is opened.
pub fn resolve(device: &str) -> Result<PathBuf, DeviceError> {
    let d = device.trim();
    let bad = || {
        DeviceError::Config(format!(
            "camera {device:?}: give a number such as 0 (for /dev/video0) or a path such as /dev/video0; {LIST_HINT}"
        ))
    };
    if d.contains('/') {
        return Ok(PathBuf::from(d));
    }
    let digits = d.strip_prefix("video").unwrap_or(d);
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad());
    }
    let n: u32 = digits.parse().map_err(|_| bad())?;
    Ok(PathBuf::from(format!("/dev/video{n}")))
}

fn open_node(path: &Path) -> io::Result<File> {
    // Non-blocking: capture waits in poll() with a timeout rather than in DQBUF.
    OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)
}

/// An open failure, with what the user can do about it.
fn open_error(device: &str, e: io::Error) -> DeviceError {
    let hint = match e.raw_os_error() {
        Some(libc::ENOENT) => format!("no such camera; {LIST_HINT}"),
        Some(libc::EACCES | libc::EPERM) => {
            "permission denied: add yourself to the video group (`sudo usermod -aG video $USER`, then log in again)".to_owned()
        }
        Some(libc::EBUSY) => {
            format!("the camera is in use by another program (`fuser -v {device}` shows which)")
        }
        Some(libc::ENODEV | libc::ENXIO) => format!("the camera is gone (unplugged?); {LIST_HINT}"),
        _ => format!("{e}; {LIST_HINT}"),
    };
    DeviceError::Open {
        device: device.to_owned(),
        source: io::Error::new(e.kind(), hint),
    }
}

/// A V4L2 camera streaming frames through memory-mapped buffers.
#[derive(Debug)]
pub struct V4l2Camera {
    file: File,
    /// Device path as a string, for messages.
    name: String,
    /// What the device offers.
    modes: Vec<DevMode>,
    /// The mode last asked of the driver (a repeated request is a no-op).
    requested: DevMode,
    /// What the driver actually delivers.
    mode: Mode,
    /// Row pitch of raw frames in bytes (≥ the packed row; the driver may pad rows).
    bytesperline: usize,
    buffers: Vec<Mapping>,
    streaming: bool,
}

impl V4l2Camera {
    /// Open `device` (see [`resolve`]) and start streaming in the mode closest to `req`
    /// (see [`choose_mode`]). [`CameraSource::mode`](super::CameraSource::mode) tells what
    /// the driver actually set.
    pub fn open(device: &str, req: ModeRequest) -> Result<Self, DeviceError> {
        let path = resolve(device)?;
        let name = path.display().to_string();
        let file = open_node(&path).map_err(|e| open_error(&name, e))?;
        let mut cap: sys::Capability = sys::zeroed();
        ioctl(file.as_fd(), sys::VIDIOC_QUERYCAP, &mut cap).map_err(|e| {
            let reason = if e.raw_os_error() == Some(libc::ENOTTY) {
                format!("it is not a V4L2 device; {LIST_HINT}")
            } else {
                format!("VIDIOC_QUERYCAP failed: {e}")
            };
            DeviceError::Unsupported {
                operation: "video capture",
                device: name.clone(),
                reason,
            }
        })?;
        let caps = device_caps(&cap);
        if caps & sys::CAP_VIDEO_CAPTURE == 0 {
            let reason = if caps & sys::CAP_VIDEO_CAPTURE_MPLANE != 0 {
                "it is a multi-planar capture device, which xoq does not read".to_owned()
            } else {
                format!("it is not a video capture node (a camera's metadata node?); {LIST_HINT}")
            };
            return Err(DeviceError::Unsupported {
                operation: "video capture",
                device: name,
                reason,
            });
        }
        if caps & sys::CAP_STREAMING == 0 {
            return Err(DeviceError::Unsupported {
                operation: "video capture",
                device: name,
                reason: "the driver does not support streaming I/O".to_owned(),
            });
        }
        let (modes, skipped) = enumerate(&file);
        let requested = pick(&modes, req).ok_or_else(|| DeviceError::Unsupported {
            operation: "video capture",
            device: name.clone(),
            reason: no_format_reason(&skipped),
        })?;
        let mut cam = Self {
            file,
            name,
            modes,
            requested,
            mode: requested.mode,
            bytesperline: 0,
            buffers: Vec::new(),
            streaming: false,
        };
        cam.start(requested)?;
        Ok(cam)
    }

    /// The device path.
    pub fn path(&self) -> &Path {
        Path::new(&self.name)
    }

    /// Every mode the device offers that xoq reads.
    pub fn modes(&self) -> Vec<Mode> {
        self.modes.iter().map(|m| m.mode).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolve_names() {
        let ok = |s: &str| resolve(s).expect(s);
        assert_eq!(ok("0"), PathBuf::from("/dev/video0"));
        assert_eq!(ok("12"), PathBuf::from("/dev/video12"));
        assert_eq!(ok(" 2 "), PathBuf::from("/dev/video2"));
        assert_eq!(ok("007"), PathBuf::from("/dev/video7"));
        assert_eq!(ok("video3"), PathBuf::from("/dev/video3"));
        assert_eq!(ok("/dev/video4"), PathBuf::from("/dev/video4"));
        assert_eq!(
            ok("/dev/v4l/by-id/usb-Cam-video-index0"),
            PathBuf::from("/dev/v4l/by-id/usb-Cam-video-index0")
        );
        assert_eq!(ok("./cam"), PathBuf::from("./cam"));
        for bad in [
            "",
            " ",
            "cam",
            "-1",
            "video",
            "99999999999",
            "0x1",
            "video1a",
        ] {
            let e = resolve(bad).expect_err(bad);
            assert!(matches!(e, DeviceError::Config(_)), "{bad}: {e}");
            assert!(e.to_string().contains("--list"), "{e}");
        }
    }

    #[test]
    fn open_errors_say_what_to_do() {
        let e = V4l2Camera::open("/dev/xoq-no-such-camera", ModeRequest::default())
            .expect_err("no such device");
        let msg = e.to_string();
        assert!(matches!(e, DeviceError::Open { .. }), "{msg}");
        assert!(msg.contains("/dev/xoq-no-such-camera"), "{msg}");
        assert!(msg.contains("xoq camera-server --list"), "{msg}");
        let e = open_error("/dev/video0", io::Error::from_raw_os_error(libc::EACCES));
        assert!(e.to_string().contains("video group"), "{e}");
        let e = open_error("/dev/video0", io::Error::from_raw_os_error(libc::EBUSY));
        assert!(e.to_string().contains("in use"), "{e}");
        // A file that is not a V4L2 device.
        let e = V4l2Camera::open("/dev/null", ModeRequest::default()).expect_err("not v4l2");
        assert!(matches!(e, DeviceError::Unsupported { .. }), "{e}");
    }
}
