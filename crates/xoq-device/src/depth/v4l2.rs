//! Depth cameras over plain V4L2 (uvcvideo): a depth node in `Z16` (or `Y16`) paired with
//! the colour node of the same USB device.
//!
//! No librealsense: RealSense D4xx and most Orbbec cameras expose depth as an ordinary UVC
//! stream. V4L2 does not give the depth unit or the calibration, so both come from a table
//! of models keyed on the USB vendor and product id (nominal fields of view, not this unit's
//! calibration), and the command line overrides them (`--depth-scale`, `--intrinsics`).
//!
//! The two nodes stream independently. A capture takes the next depth frame, then the next
//! colour frame (at the same rate, within one frame period of it), and stamps both with the
//! depth frame's capture time, so the pair shares one timestamp on the robot clock.

use std::path::{Path, PathBuf};

use super::{DepthCapture, DepthInfo, DepthSource, Intrinsics};
use crate::DeviceError;
use crate::camera::v4l2::{V4l2Camera, list, resolve};
use crate::camera::{CameraSource, Mode, ModeRequest, PixelFormat};

/// What is known of a depth camera model without its calibration.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ModelDefaults {
    /// Model name.
    pub name: &'static str,
    /// Metres per depth unit.
    pub scale: f32,
    /// Nominal horizontal field of view of the depth stream, degrees.
    pub depth_hfov: f32,
    /// Nominal horizontal field of view of the colour stream, degrees.
    pub color_hfov: f32,
}

/// The defaults of a model by USB vendor and product id, where known.
pub fn model_defaults(vendor: u16, product: u16) -> Option<ModelDefaults> {
    let m = |name, scale, depth_hfov, color_hfov| ModelDefaults {
        name,
        scale,
        depth_hfov,
        color_hfov,
    };
    Some(match (vendor, product) {
        (0x8086, 0x0ad3) => m("Intel RealSense D415", 0.001, 65.0, 69.0),
        (0x8086, 0x0b07) => m("Intel RealSense D435", 0.001, 87.0, 69.0),
        (0x8086, 0x0b3a) => m("Intel RealSense D435I", 0.001, 87.0, 69.0),
        (0x8086, 0x0b5c) => m("Intel RealSense D455", 0.001, 87.0, 90.0),
        (0x8086, 0x0b5b) => m("Intel RealSense D405", 0.0001, 87.0, 87.0),
        (0x8086, 0x0b64) => m("Intel RealSense L515", 0.00025, 70.0, 70.0),
        _ => return None,
    })
}

/// Assumed for a camera not in the table: millimetres, a D435-like field of view.
const UNKNOWN: ModelDefaults = ModelDefaults {
    name: "V4L2 depth camera",
    scale: 0.001,
    depth_hfov: 87.0,
    color_hfov: 69.0,
};

/// USB vendor and product id, and serial number, of a video node, read from sysfs under
/// `root` (`/` on a real system; a fake tree in tests).
pub fn usb_identity(root: &Path, node: &Path) -> Option<(u16, u16, String)> {
    let name = node.file_name()?.to_str()?;
    // The node's `device` is the USB interface; the USB device is its parent.
    let dev = root
        .join("sys/class/video4linux")
        .join(name)
        .join("device/..");
    let hex = |f: &str| {
        let s = std::fs::read_to_string(dev.join(f)).ok()?;
        u16::from_str_radix(s.trim(), 16).ok()
    };
    let serial = std::fs::read_to_string(dev.join("serial"))
        .map(|s| s.trim().to_string())
        .unwrap_or_default();
    Some((hex("idVendor")?, hex("idProduct")?, serial))
}

/// A V4L2 depth camera: a depth node and its colour node.
#[derive(Debug)]
pub struct V4l2Depth {
    depth: V4l2Camera,
    color: V4l2Camera,
    defaults: ModelDefaults,
    serial: String,
}

impl V4l2Depth {
    /// Open the depth node `depth` (a number or a path, as for cameras) and its colour node:
    /// `color` when given, else the node of the same USB device that offers pictures.
    pub fn open(depth: &str, color: Option<&str>, req: ModeRequest) -> Result<Self, DeviceError> {
        let depth_path = std::fs::canonicalize(resolve(depth)?).unwrap_or(resolve(depth)?);
        let depth_cam = V4l2Camera::open(
            depth,
            ModeRequest {
                depth: true,
                prefer_mjpeg: false,
                ..req
            },
        )
        .map_err(|e| match e {
            DeviceError::Unsupported { device, reason, .. } => DeviceError::Unsupported {
                operation: "depth capture",
                device,
                reason: format!("{reason}; is this the depth node? `xoq camera-server --list` shows which node has Z16"),
            },
            e => e,
        })?;
        let color_path = match color {
            Some(c) => resolve(c)?,
            None => sibling_color_node(&depth_path).ok_or_else(|| {
                DeviceError::Config(format!(
                    "no colour node found next to {}: pass --color /dev/videoN",
                    depth_path.display()
                ))
            })?,
        };
        let m = depth_cam.mode();
        let color_cam = V4l2Camera::open(
            &color_path.display().to_string(),
            ModeRequest {
                width: Some(m.width),
                height: Some(m.height),
                fps: Some(m.fps),
                prefer_mjpeg: false,
                depth: false,
            },
        )?;
        let (defaults, serial) = match usb_identity(Path::new("/"), &depth_path) {
            Some((v, p, serial)) => match model_defaults(v, p) {
                Some(d) => (d, serial),
                None => {
                    tracing::warn!(
                        "unknown depth camera {v:04x}:{p:04x}: assuming millimetres and a {}° field of view; pass --depth-scale and --intrinsics",
                        UNKNOWN.depth_hfov
                    );
                    (UNKNOWN, serial)
                }
            },
            None => (UNKNOWN, String::new()),
        };
        Ok(Self {
            depth: depth_cam,
            color: color_cam,
            defaults,
            serial,
        })
    }
}

/// The colour node of the USB device `depth` belongs to: same bus position, picture modes.
fn sibling_color_node(depth: &Path) -> Option<PathBuf> {
    let devices = list();
    let me = devices
        .iter()
        .find(|d| std::fs::canonicalize(&d.path).unwrap_or_else(|_| d.path.clone()) == depth)?;
    devices
        .iter()
        .filter(|d| d.bus == me.bus && d.path != me.path && d.error.is_none())
        .find(|d| d.modes.iter().any(|m| !m.format.is_depth()))
        .map(|d| d.path.clone())
}

/// Little-endian 16-bit samples to values.
pub fn z16_values(bytes: &[u8]) -> Vec<u16> {
    bytes
        .chunks_exact(2)
        .map(|b| u16::from_le_bytes([b[0], b[1]]))
        .collect()
}

impl DepthSource for V4l2Depth {
    fn mode(&self) -> Mode {
        self.color.mode()
    }

    fn info(&self) -> DepthInfo {
        let (d, c) = (self.depth.mode(), self.color.mode());
        DepthInfo {
            scale: self.defaults.scale,
            depth: Intrinsics::pinhole(d.width, d.height, self.defaults.depth_hfov),
            color: Intrinsics::pinhole(c.width, c.height, self.defaults.color_hfov),
            name: self.defaults.name.to_string(),
            serial: self.serial.clone(),
        }
    }

    fn capture(&mut self) -> Result<DepthCapture, DeviceError> {
        let d = self.depth.capture()?;
        if !matches!(d.format, PixelFormat::Z16 | PixelFormat::Y16) {
            return Err(DeviceError::Config(format!(
                "the depth node delivered {} instead of Z16",
                d.format
            )));
        }
        let mut color = self.color.capture()?;
        color.timestamp_us = d.timestamp_us;
        Ok(DepthCapture {
            timestamp_us: d.timestamp_us,
            width: d.width,
            height: d.height,
            depth: z16_values(&d.data),
            color,
        })
    }

    fn set_mode(&mut self, req: ModeRequest) -> Result<Mode, DeviceError> {
        let m = self.depth.set_mode(ModeRequest {
            depth: true,
            prefer_mjpeg: false,
            ..req
        })?;
        self.color.set_mode(ModeRequest {
            width: Some(m.width),
            height: Some(m.height),
            fps: Some(m.fps),
            prefer_mjpeg: false,
            depth: false,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn models_come_from_the_usb_ids_in_sysfs() {
        let root = tempfile::tempdir().expect("dir");
        let usb = root.path().join("sys/devices/usb1/1-1");
        std::fs::create_dir_all(usb.join("1-1:1.3")).expect("tree");
        std::fs::write(usb.join("idVendor"), "8086\n").expect("write");
        std::fs::write(usb.join("idProduct"), "0b5b\n").expect("write");
        std::fs::write(usb.join("serial"), "123456789012\n").expect("write");
        let class = root.path().join("sys/class/video4linux/video2");
        std::fs::create_dir_all(&class).expect("tree");
        std::os::unix::fs::symlink(usb.join("1-1:1.3"), class.join("device")).expect("link");
        let (v, p, serial) = usb_identity(root.path(), Path::new("/dev/video2")).expect("identity");
        assert_eq!((v, p, serial.as_str()), (0x8086, 0x0b5b, "123456789012"));
        let d = model_defaults(v, p).expect("known");
        assert_eq!((d.name, d.scale), ("Intel RealSense D405", 0.0001));
        assert_eq!(model_defaults(0x8086, 0x0b07).map(|d| d.scale), Some(0.001));
        assert_eq!(model_defaults(0x1234, 0x5678), None);
        assert_eq!(usb_identity(root.path(), Path::new("/dev/video9")), None);
    }

    #[test]
    fn z16_is_little_endian() {
        assert_eq!(
            z16_values(&[0xE8, 0x03, 0x00, 0x00, 0xFF, 0xFF, 7]),
            [1000, 0, 65535]
        );
    }

    #[test]
    #[ignore = "needs a V4L2 depth camera (a RealSense or Orbbec on uvcvideo) as /dev/video*"]
    fn captures_depth_and_colour_from_a_real_camera() {
        let depth = list()
            .into_iter()
            .find(|d| d.modes.iter().any(|m| m.format.is_depth()))
            .expect("a node with Z16 or Y16");
        let mut cam = V4l2Depth::open(
            &depth.path.display().to_string(),
            None,
            ModeRequest::default(),
        )
        .expect("open");
        let c = (0..5).find_map(|_| cam.capture().ok()).expect("a capture");
        assert_eq!(c.depth.len(), (c.width * c.height) as usize);
        assert_eq!(c.color.timestamp_us, c.timestamp_us);
        assert!(c.depth.iter().any(|&v| v != 0), "some depth measured");
    }
}
