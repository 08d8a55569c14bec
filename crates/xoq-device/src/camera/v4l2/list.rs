//! What the machine has and what each device offers: listing `/dev/video*` for users, and
//! enumerating a device's formats, sizes and rates (also what opening a camera chooses from).

use std::fs::File;
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};

use super::negotiate::{DEFAULT_FPS, DevMode, fourcc_name, fps_of, pix_request, pixel_format};
use super::sys::{self, ioctl};
use super::{open_error, open_node};
use crate::camera::Mode;

/// Sizes offered from a stepwise or continuous range (the driver accepts any in range).
const COMMON_SIZES: [(u32, u32); 11] = [
    (320, 240),
    (640, 360),
    (640, 480),
    (800, 600),
    (1024, 768),
    (1280, 720),
    (1280, 960),
    (1600, 1200),
    (1920, 1080),
    (2560, 1440),
    (3840, 2160),
];
/// Rates offered from a stepwise or continuous interval range.
const COMMON_FPS: [u32; 11] = [5, 10, 15, 20, 24, 25, 30, 50, 60, 90, 120];
/// Bound on every enumeration loop, against drivers that never say "no more".
const MAX_ENUM: u32 = 256;

/// A NUL-terminated string field of a kernel struct.
fn c_string(bytes: &[u8]) -> String {
    let end = bytes.iter().position(|&b| b == 0).unwrap_or(bytes.len());
    String::from_utf8_lossy(&bytes[..end]).trim().to_owned()
}

/// A video capture device found by [`list`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceInfo {
    /// Device node, e.g. `/dev/video0`.
    pub path: PathBuf,
    /// Name of the camera as the driver reports it (empty if the device could not be opened).
    pub card: String,
    /// Kernel driver, e.g. `uvcvideo`.
    pub driver: String,
    /// Bus position (e.g. `usb-0000:00:14.0-1`): tells identical cameras apart.
    pub bus: String,
    /// Modes xoq can capture in, in the driver's order.
    pub modes: Vec<Mode>,
    /// Why the device cannot be used (cannot be opened, or has no format xoq reads);
    /// `None` for a usable camera.
    pub error: Option<String>,
}

/// Every `/dev/video*` node that is a video capture device, in number order.
///
/// Nodes that open but are not single-planar capture devices (UVC metadata nodes, codecs,
/// outputs) are left out. Nodes that cannot be opened at all (no permission, busy
/// elsewhere at open time) are listed with `error` set and no modes, since whether they
/// are cameras cannot be known — and a permission problem is what a user listing cameras
/// needs to see. Capture devices with no format xoq reads are listed with `error` set.
pub fn list() -> Vec<DeviceInfo> {
    let Ok(entries) = std::fs::read_dir("/dev") else {
        return Vec::new();
    };
    let mut nodes: Vec<(u32, PathBuf)> = entries
        .flatten()
        .filter_map(|e| {
            let name = e.file_name();
            let n = name.to_str()?.strip_prefix("video")?.parse::<u32>().ok()?;
            Some((n, e.path()))
        })
        .collect();
    nodes.sort();
    nodes
        .into_iter()
        .filter_map(|(_, path)| describe(&path))
        .collect()
}

/// The [`DeviceInfo`] of one node, or `None` when it opens but is not a capture device.
fn describe(path: &Path) -> Option<DeviceInfo> {
    let name = path.display().to_string();
    let mut info = DeviceInfo {
        path: path.to_owned(),
        card: String::new(),
        driver: String::new(),
        bus: String::new(),
        modes: Vec::new(),
        error: None,
    };
    let file = match open_node(path) {
        Ok(f) => f,
        Err(e) => {
            info.error = Some(open_error(&name, e).to_string());
            return Some(info);
        }
    };
    let mut cap: sys::Capability = sys::zeroed();
    ioctl(file.as_fd(), sys::VIDIOC_QUERYCAP, &mut cap).ok()?;
    if device_caps(&cap) & sys::CAP_VIDEO_CAPTURE == 0 {
        return None;
    }
    info.card = c_string(&cap.card);
    info.driver = c_string(&cap.driver);
    info.bus = c_string(&cap.bus_info);
    let (modes, skipped) = enumerate(&file);
    info.modes = modes.iter().map(|m| m.mode).collect();
    if info.modes.is_empty() {
        info.error = Some(no_format_reason(&skipped));
    }
    Some(info)
}

/// The capabilities of this node (`device_caps` when the driver fills it in, as opposed to
/// those of the whole physical device, which include sibling nodes).
pub(super) fn device_caps(cap: &sys::Capability) -> u32 {
    if cap.capabilities & sys::CAP_DEVICE_CAPS != 0 {
        cap.device_caps
    } else {
        cap.capabilities
    }
}

pub(super) fn no_format_reason(skipped: &[u32]) -> String {
    let found: Vec<String> = skipped.iter().map(|&f| fourcc_name(f)).collect();
    format!(
        "it offers no format xoq reads (found: {}; xoq reads YUYV, NV12, MJPG/JPEG and RGB3 as pictures, Z16 and Y16 as depth)",
        if found.is_empty() {
            "none".to_owned()
        } else {
            found.join(", ")
        }
    )
}

/// The modes of an open capture device that xoq reads, and the fourccs it skipped.
pub(super) fn enumerate(file: &File) -> (Vec<DevMode>, Vec<u32>) {
    let (mut modes, mut skipped) = (Vec::<DevMode>::new(), Vec::new());
    for index in 0..MAX_ENUM {
        let mut desc: sys::FmtDesc = sys::zeroed();
        desc.index = index;
        desc.type_ = sys::BUF_TYPE_VIDEO_CAPTURE;
        if ioctl(file.as_fd(), sys::VIDIOC_ENUM_FMT, &mut desc).is_err() {
            break; // EINVAL: no more formats.
        }
        let fourcc = desc.pixelformat;
        let Some(format) = pixel_format(fourcc) else {
            skipped.push(fourcc);
            continue;
        };
        for (width, height) in frame_sizes(file, fourcc) {
            for fps in frame_rates(file, fourcc, width, height) {
                let mode = Mode {
                    format,
                    width,
                    height,
                    fps,
                };
                // MJPG and JPEG on one device give the same modes: keep the first.
                if !modes.iter().any(|m| m.mode == mode) {
                    modes.push(DevMode { mode, fourcc });
                }
            }
        }
    }
    (modes, skipped)
}

/// The frame sizes of `fourcc`. Stepwise and continuous ranges give the common sizes in
/// range (and the largest); drivers that cannot enumerate sizes are asked, with
/// `VIDIOC_TRY_FMT`, which common sizes they take.
fn frame_sizes(file: &File, fourcc: u32) -> Vec<(u32, u32)> {
    let mut sizes = Vec::new();
    for index in 0..MAX_ENUM {
        let mut fs: sys::FrmSizeEnum = sys::zeroed();
        fs.index = index;
        fs.pixel_format = fourcc;
        if ioctl(file.as_fd(), sys::VIDIOC_ENUM_FRAMESIZES, &mut fs).is_err() {
            break;
        }
        if fs.type_ == sys::FRMSIZE_TYPE_DISCRETE {
            let size = fs.discrete();
            if size.0 > 0 && size.1 > 0 && !sizes.contains(&size) {
                sizes.push(size);
            }
            continue;
        }
        // Stepwise or continuous (step 1): a single entry describing a range.
        let ([min_w, max_w, step_w], [min_h, max_h, step_h]) = fs.stepwise();
        let fits = |v: u32, min: u32, max: u32, step: u32| {
            (min..=max).contains(&v) && (v - min).is_multiple_of(step.max(1))
        };
        sizes.extend(
            COMMON_SIZES
                .iter()
                .copied()
                .filter(|&(w, h)| fits(w, min_w, max_w, step_w) && fits(h, min_h, max_h, step_h)),
        );
        if max_w > 0 && max_h > 0 && !sizes.contains(&(max_w, max_h)) {
            sizes.push((max_w, max_h));
        }
        break;
    }
    if sizes.is_empty() {
        for (w, h) in COMMON_SIZES {
            let mut f: sys::Format = sys::zeroed();
            f.type_ = sys::BUF_TYPE_VIDEO_CAPTURE;
            f.fmt.pix = pix_request(w, h, fourcc);
            if ioctl(file.as_fd(), sys::VIDIOC_TRY_FMT, &mut f).is_ok() {
                // SAFETY: for a capture buffer type the kernel fills the `pix` member.
                let pix = unsafe { f.fmt.pix };
                if (pix.width, pix.height, pix.pixelformat) == (w, h, fourcc) {
                    sizes.push((w, h));
                }
            }
        }
    }
    sizes
}

/// The frame rates of `fourcc` at `width × height`, highest first. Ranges give the common
/// rates in range; a driver that lists no rates is assumed to run at 30 fps (the rate it
/// really runs at is read back when capture starts).
fn frame_rates(file: &File, fourcc: u32, width: u32, height: u32) -> Vec<u32> {
    let mut rates = Vec::new();
    for index in 0..MAX_ENUM {
        let mut fi: sys::FrmIvalEnum = sys::zeroed();
        fi.index = index;
        fi.pixel_format = fourcc;
        fi.width = width;
        fi.height = height;
        if ioctl(file.as_fd(), sys::VIDIOC_ENUM_FRAMEINTERVALS, &mut fi).is_err() {
            break;
        }
        if fi.type_ == sys::FRMIVAL_TYPE_DISCRETE {
            rates.extend(fps_of(fi.interval[0]));
            continue;
        }
        // Stepwise or continuous: the interval range [min, max] is the rate range
        // [1/max, 1/min]. Rate f is in range when min ≤ 1/f ≤ max.
        let [min, max, _] = fi.interval;
        let in_range = |f: u32| {
            let f = u64::from(f);
            f * u64::from(min.numerator) <= u64::from(min.denominator)
                && f * u64::from(max.numerator) >= u64::from(max.denominator)
        };
        rates.extend(COMMON_FPS.iter().copied().filter(|&f| in_range(f)));
        if let Some(top) = min.denominator.checked_div(min.numerator)
            && top > 0
            && in_range(top)
        {
            rates.push(top);
        }
        break;
    }
    if rates.is_empty() {
        rates.push(DEFAULT_FPS);
    }
    rates.sort_unstable_by(|a, b| b.cmp(a));
    rates.dedup();
    rates
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_format_reason_lists_what_was_found() {
        let r = no_format_reason(&[sys::fourcc(b"H264"), sys::fourcc(b"UYVY")]);
        assert!(r.contains("H264, UYVY"), "{r}");
        assert!(no_format_reason(&[]).contains("none"));
    }
}
