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

use std::ffi::c_void;
use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::{AsFd, AsRawFd};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::ptr::NonNull;
use std::time::{Duration, Instant};

use super::{CameraSource, Mode, ModeRequest, PixelFormat, RawFrame, now_us};
use crate::DeviceError;

/// Buffers requested from the driver: enough that the camera never waits for us while we
/// copy one frame out, few enough that a frame is never old when we get it.
pub const BUFFERS: u32 = 4;

/// How long `capture` waits for a frame before reporting the camera as stalled. Long enough
/// for a first frame after stream-on and for auto-exposure dropping to a few fps in the dark.
pub const CAPTURE_TIMEOUT: Duration = Duration::from_secs(2);

/// Size asked for when the request names none.
const DEFAULT_SIZE: (u32, u32) = (1280, 720);
/// Rate asked for when the request names none (also assumed when a driver lists no rates).
const DEFAULT_FPS: u32 = 30;
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
const LIST_HINT: &str = "list cameras with `xoq camera-server --list`";

/// Hand-written bindings for the parts of `linux/videodev2.h` used here.
mod sys {
    use std::marker::PhantomData;
    use std::mem::size_of;

    use nix::sys::ioctl::ioctl_num_type;

    /// A fourcc code as the kernel stores it (first character in the low byte).
    pub(super) const fn fourcc(code: &[u8; 4]) -> u32 {
        u32::from_le_bytes(*code)
    }

    pub(super) const PIX_FMT_YUYV: u32 = fourcc(b"YUYV");
    pub(super) const PIX_FMT_NV12: u32 = fourcc(b"NV12");
    pub(super) const PIX_FMT_MJPEG: u32 = fourcc(b"MJPG");
    pub(super) const PIX_FMT_JPEG: u32 = fourcc(b"JPEG");
    pub(super) const PIX_FMT_RGB24: u32 = fourcc(b"RGB3");

    pub(super) const BUF_TYPE_VIDEO_CAPTURE: u32 = 1;
    pub(super) const MEMORY_MMAP: u32 = 1;
    pub(super) const FIELD_ANY: u32 = 0;
    pub(super) const BUF_FLAG_ERROR: u32 = 0x0000_0040;

    pub(super) const CAP_VIDEO_CAPTURE: u32 = 0x0000_0001;
    pub(super) const CAP_VIDEO_CAPTURE_MPLANE: u32 = 0x0000_1000;
    pub(super) const CAP_STREAMING: u32 = 0x0400_0000;
    pub(super) const CAP_DEVICE_CAPS: u32 = 0x8000_0000;
    /// In `CaptureParm::capability`: the driver honours `timeperframe`.
    pub(super) const CAP_TIMEPERFRAME: u32 = 0x1000;

    pub(super) const FRMSIZE_TYPE_DISCRETE: u32 = 1;
    pub(super) const FRMIVAL_TYPE_DISCRETE: u32 = 1;

    /// Plain C structs whose all-zero bit pattern is a valid value (the usual way to fill
    /// an ioctl argument: zero it, then set the fields the call reads).
    ///
    /// # Safety
    /// Only for `#[repr(C)]` types made of integers, arrays of integers and unions of those.
    pub(super) unsafe trait Zeroable: Sized {}

    /// An all-zero `T`.
    pub(super) fn zeroed<T: Zeroable>() -> T {
        // SAFETY: `Zeroable` is only implemented for types valid when all-zero.
        unsafe { std::mem::zeroed() }
    }

    /// `struct v4l2_capability`.
    #[repr(C)]
    #[derive(Clone, Copy)]
    pub(super) struct Capability {
        pub(super) driver: [u8; 16],
        pub(super) card: [u8; 32],
        pub(super) bus_info: [u8; 32],
        pub(super) version: u32,
        pub(super) capabilities: u32,
        pub(super) device_caps: u32,
        pub(super) reserved: [u32; 3],
    }

    /// `struct v4l2_fmtdesc`.
    #[repr(C)]
    #[derive(Clone, Copy)]
    pub(super) struct FmtDesc {
        pub(super) index: u32,
        pub(super) type_: u32,
        pub(super) flags: u32,
        pub(super) description: [u8; 32],
        pub(super) pixelformat: u32,
        pub(super) mbus_code: u32,
        pub(super) reserved: [u32; 3],
    }

    /// `struct v4l2_fract`.
    #[repr(C)]
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    pub(super) struct Fract {
        pub(super) numerator: u32,
        pub(super) denominator: u32,
    }

    /// `struct v4l2_frmsizeenum`. The union of `v4l2_frmsize_discrete` (width, height) and
    /// `v4l2_frmsize_stepwise` (min/max/step width, then min/max/step height) is kept as
    /// the six words it is, read through the accessors.
    #[repr(C)]
    #[derive(Clone, Copy)]
    pub(super) struct FrmSizeEnum {
        pub(super) index: u32,
        pub(super) pixel_format: u32,
        pub(super) type_: u32,
        pub(super) size: [u32; 6],
        pub(super) reserved: [u32; 2],
    }

    impl FrmSizeEnum {
        /// `(width, height)` of a discrete size.
        pub(super) fn discrete(&self) -> (u32, u32) {
            (self.size[0], self.size[1])
        }
        /// `([min, max, step] width, [min, max, step] height)` of a stepwise range.
        pub(super) fn stepwise(&self) -> ([u32; 3], [u32; 3]) {
            let s = self.size;
            ([s[0], s[1], s[2]], [s[3], s[4], s[5]])
        }
    }

    /// `struct v4l2_frmivalenum`. The union of a discrete `v4l2_fract` and
    /// `v4l2_frmival_stepwise` (min, max, step) is three fractions; discrete uses the first.
    #[repr(C)]
    #[derive(Clone, Copy)]
    pub(super) struct FrmIvalEnum {
        pub(super) index: u32,
        pub(super) pixel_format: u32,
        pub(super) width: u32,
        pub(super) height: u32,
        pub(super) type_: u32,
        pub(super) interval: [Fract; 3],
        pub(super) reserved: [u32; 2],
    }

    /// `struct v4l2_pix_format` (`ycbcr_enc` stands for its union with `hsv_enc`).
    #[repr(C)]
    #[derive(Clone, Copy)]
    pub(super) struct PixFormat {
        pub(super) width: u32,
        pub(super) height: u32,
        pub(super) pixelformat: u32,
        pub(super) field: u32,
        pub(super) bytesperline: u32,
        pub(super) sizeimage: u32,
        pub(super) colorspace: u32,
        pub(super) priv_: u32,
        pub(super) flags: u32,
        pub(super) ycbcr_enc: u32,
        pub(super) quantization: u32,
        pub(super) xfer_func: u32,
    }

    /// The `fmt` union of `struct v4l2_format`. Other members (`v4l2_window`) hold
    /// pointers, so the union is pointer-aligned: `_align` reproduces that (8 bytes of
    /// padding after `type` on 64-bit targets).
    #[repr(C)]
    #[derive(Clone, Copy)]
    pub(super) union FormatUnion {
        pub(super) pix: PixFormat,
        pub(super) raw_data: [u8; 200],
        _align: [libc::c_ulong; 0],
    }

    /// `struct v4l2_format`, for `V4L2_BUF_TYPE_VIDEO_CAPTURE` (the `pix` member).
    #[repr(C)]
    #[derive(Clone, Copy)]
    pub(super) struct Format {
        pub(super) type_: u32,
        pub(super) fmt: FormatUnion,
    }

    /// `struct v4l2_captureparm`.
    #[repr(C)]
    #[derive(Clone, Copy)]
    pub(super) struct CaptureParm {
        pub(super) capability: u32,
        pub(super) capturemode: u32,
        pub(super) timeperframe: Fract,
        pub(super) extendedmode: u32,
        pub(super) readbuffers: u32,
        pub(super) reserved: [u32; 4],
    }

    /// `struct v4l2_streamparm` for capture. The `parm` union is 200 bytes of 4-aligned
    /// members, so the capture member followed by the rest of the union as bytes has the
    /// same layout.
    #[repr(C)]
    #[derive(Clone, Copy)]
    pub(super) struct StreamParm {
        pub(super) type_: u32,
        pub(super) capture: CaptureParm,
        pub(super) rest: [u8; 200 - size_of::<CaptureParm>()],
    }

    /// `struct v4l2_requestbuffers`.
    #[repr(C)]
    #[derive(Clone, Copy)]
    pub(super) struct RequestBuffers {
        pub(super) count: u32,
        pub(super) type_: u32,
        pub(super) memory: u32,
        pub(super) capabilities: u32,
        pub(super) flags: u8,
        pub(super) reserved: [u8; 3],
    }

    /// `struct v4l2_timecode`.
    #[repr(C)]
    #[derive(Clone, Copy)]
    pub(super) struct Timecode {
        pub(super) type_: u32,
        pub(super) flags: u32,
        pub(super) frames: u8,
        pub(super) seconds: u8,
        pub(super) minutes: u8,
        pub(super) hours: u8,
        pub(super) userbits: [u8; 4],
    }

    /// The `m` union of `struct v4l2_buffer`: `offset` for MMAP buffers; `userptr` (an
    /// `unsigned long`, like the `planes` pointer) sets its size and alignment.
    #[repr(C)]
    #[derive(Clone, Copy)]
    pub(super) union BufferM {
        pub(super) offset: u32,
        pub(super) userptr: libc::c_ulong,
        pub(super) fd: i32,
    }

    /// `struct v4l2_buffer` (`request_fd` stands for its union with `reserved`).
    #[repr(C)]
    #[derive(Clone, Copy)]
    pub(super) struct Buffer {
        pub(super) index: u32,
        pub(super) type_: u32,
        pub(super) bytesused: u32,
        pub(super) flags: u32,
        pub(super) field: u32,
        pub(super) timestamp: libc::timeval,
        pub(super) timecode: Timecode,
        pub(super) sequence: u32,
        pub(super) memory: u32,
        pub(super) m: BufferM,
        pub(super) length: u32,
        pub(super) reserved2: u32,
        pub(super) request_fd: i32,
    }

    // SAFETY: all of these are `#[repr(C)]` aggregates of integers (and `timeval`, two
    // integers), for which all-zero is valid.
    unsafe impl Zeroable for Capability {}
    // SAFETY: as above.
    unsafe impl Zeroable for FmtDesc {}
    // SAFETY: as above.
    unsafe impl Zeroable for FrmSizeEnum {}
    // SAFETY: as above.
    unsafe impl Zeroable for FrmIvalEnum {}
    // SAFETY: as above.
    unsafe impl Zeroable for PixFormat {}
    // SAFETY: as above.
    unsafe impl Zeroable for Format {}
    // SAFETY: as above.
    unsafe impl Zeroable for StreamParm {}
    // SAFETY: as above.
    unsafe impl Zeroable for RequestBuffers {}
    // SAFETY: as above.
    unsafe impl Zeroable for Buffer {}

    // Sizes of the kernel ABI, which the ioctl request codes also encode. Pointer-free
    // structs are the same everywhere; `v4l2_format` and `v4l2_buffer` hold pointer-sized
    // members and are checked on 64-bit targets (x86_64, aarch64).
    const _: () = {
        assert!(size_of::<Capability>() == 104);
        assert!(size_of::<FmtDesc>() == 64);
        assert!(size_of::<FrmSizeEnum>() == 44);
        assert!(size_of::<FrmIvalEnum>() == 52);
        assert!(size_of::<PixFormat>() == 48);
        assert!(size_of::<CaptureParm>() == 40);
        assert!(size_of::<StreamParm>() == 204);
        assert!(size_of::<RequestBuffers>() == 20);
        assert!(size_of::<Timecode>() == 16);
    };
    #[cfg(target_pointer_width = "64")]
    const _: () = {
        assert!(size_of::<Format>() == 208);
        assert!(std::mem::offset_of!(Format, fmt) == 8);
        assert!(size_of::<Buffer>() == 88);
        assert!(std::mem::offset_of!(Buffer, timestamp) == 24);
        assert!(std::mem::offset_of!(Buffer, m) == 64);
        assert!(std::mem::offset_of!(Buffer, length) == 72);
    };

    /// An ioctl request code tied to its argument type, so a call cannot pass the wrong
    /// struct (the code encodes the size of `T`, computed here from the Rust struct).
    pub(super) struct Request<T>(pub(super) ioctl_num_type, PhantomData<T>);

    impl<T> Clone for Request<T> {
        fn clone(&self) -> Self {
            *self
        }
    }
    impl<T> Copy for Request<T> {}

    impl<T> Request<T> {
        /// `_IOR('V', nr, T)`.
        const fn read(nr: u8) -> Self {
            Self(
                nix::request_code_read!(b'V', nr, size_of::<T>()),
                PhantomData,
            )
        }
        /// `_IOW('V', nr, T)`.
        const fn write(nr: u8) -> Self {
            Self(
                nix::request_code_write!(b'V', nr, size_of::<T>()),
                PhantomData,
            )
        }
        /// `_IOWR('V', nr, T)`.
        const fn readwrite(nr: u8) -> Self {
            Self(
                nix::request_code_readwrite!(b'V', nr, size_of::<T>()),
                PhantomData,
            )
        }
    }

    pub(super) const VIDIOC_QUERYCAP: Request<Capability> = Request::read(0);
    pub(super) const VIDIOC_ENUM_FMT: Request<FmtDesc> = Request::readwrite(2);
    pub(super) const VIDIOC_S_FMT: Request<Format> = Request::readwrite(5);
    pub(super) const VIDIOC_REQBUFS: Request<RequestBuffers> = Request::readwrite(8);
    pub(super) const VIDIOC_QUERYBUF: Request<Buffer> = Request::readwrite(9);
    pub(super) const VIDIOC_QBUF: Request<Buffer> = Request::readwrite(15);
    pub(super) const VIDIOC_DQBUF: Request<Buffer> = Request::readwrite(17);
    pub(super) const VIDIOC_STREAMON: Request<libc::c_int> = Request::write(18);
    pub(super) const VIDIOC_STREAMOFF: Request<libc::c_int> = Request::write(19);
    pub(super) const VIDIOC_G_PARM: Request<StreamParm> = Request::readwrite(21);
    pub(super) const VIDIOC_S_PARM: Request<StreamParm> = Request::readwrite(22);
    pub(super) const VIDIOC_TRY_FMT: Request<Format> = Request::readwrite(64);
    pub(super) const VIDIOC_ENUM_FRAMESIZES: Request<FrmSizeEnum> = Request::readwrite(74);
    pub(super) const VIDIOC_ENUM_FRAMEINTERVALS: Request<FrmIvalEnum> = Request::readwrite(75);

    /// Issue `request` on `fd`, retrying when a signal interrupts it.
    pub(super) fn ioctl<T>(
        fd: std::os::fd::BorrowedFd<'_>,
        request: Request<T>,
        arg: &mut T,
    ) -> std::io::Result<()> {
        use std::os::fd::AsRawFd;
        loop {
            // SAFETY: `fd` is an open descriptor for the duration of the borrow; `arg` is an
            // exclusive reference to a `T`, which is the argument type `request` was built for
            // (its size is encoded in the code, and the layouts are checked above), so the
            // kernel reads and writes only inside `*arg`.
            let r = unsafe { libc::ioctl(fd.as_raw_fd(), request.0, std::ptr::from_mut(arg)) };
            if r != -1 {
                return Ok(());
            }
            let e = std::io::Error::last_os_error();
            if e.kind() != std::io::ErrorKind::Interrupted {
                return Err(e);
            }
        }
    }
}

use sys::ioctl;

/// The pixel format of a V4L2 fourcc, for the ones xoq reads (`JPEG` is MJPEG under
/// another name, used by some older drivers).
fn pixel_format(fourcc: u32) -> Option<PixelFormat> {
    match fourcc {
        sys::PIX_FMT_YUYV => Some(PixelFormat::Yuyv),
        sys::PIX_FMT_NV12 => Some(PixelFormat::Nv12),
        sys::PIX_FMT_MJPEG | sys::PIX_FMT_JPEG => Some(PixelFormat::Mjpeg),
        sys::PIX_FMT_RGB24 => Some(PixelFormat::Rgb24),
        _ => None,
    }
}

/// A fourcc as its four characters, for messages (`?` for unprintable bytes).
fn fourcc_name(fourcc: u32) -> String {
    fourcc
        .to_le_bytes()
        .iter()
        .map(|&b| {
            if b.is_ascii_graphic() || b == b' ' {
                char::from(b)
            } else {
                '?'
            }
        })
        .collect()
}

/// A NUL-terminated string field of a kernel struct.
fn c_string(bytes: &[u8]) -> String {
    let end = bytes.iter().position(|&b| b == 0).unwrap_or(bytes.len());
    String::from_utf8_lossy(&bytes[..end]).trim().to_owned()
}

/// Frames per second of a frame interval (rounded: 1001/30000 s is 30 fps), or `None` for
/// a zero or longer-than-2-s interval.
fn fps_of(interval: sys::Fract) -> Option<u32> {
    let (n, d) = (
        u64::from(interval.numerator),
        u64::from(interval.denominator),
    );
    if n == 0 {
        return None;
    }
    let fps = (d + n / 2) / n;
    u32::try_from(fps).ok().filter(|&f| f > 0)
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
fn device_caps(cap: &sys::Capability) -> u32 {
    if cap.capabilities & sys::CAP_DEVICE_CAPS != 0 {
        cap.device_caps
    } else {
        cap.capabilities
    }
}

fn no_format_reason(skipped: &[u32]) -> String {
    let found: Vec<String> = skipped.iter().map(|&f| fourcc_name(f)).collect();
    format!(
        "it offers no format xoq reads (found: {}; xoq reads YUYV, NV12, MJPG/JPEG and RGB3)",
        if found.is_empty() {
            "none".to_owned()
        } else {
            found.join(", ")
        }
    )
}

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

/// Rank of a format in the preference order (lower is better). MJPEG is first when asked
/// for (JPEG streaming passes it through); otherwise raw formats come first, because the
/// H.264 path would have to decode MJPEG before encoding.
fn format_rank(format: PixelFormat, prefer_mjpeg: bool) -> u8 {
    match format {
        PixelFormat::Mjpeg if prefer_mjpeg => 0,
        PixelFormat::Yuyv => 1,
        PixelFormat::Nv12 => 2,
        PixelFormat::Rgb24 => 3,
        PixelFormat::Mjpeg => 4,
    }
}

/// Pick the mode of `available` closest to `req`; `None` only when `available` is empty.
///
/// Rules, in priority order:
/// 1. **Size.** The wanted size is `req.width × req.height`; with neither given it is
///    1280×720; with one given, the other dimension is free. An exact match wins; else the
///    smallest size (by area) not smaller than wanted in either given dimension; else the
///    largest size available. Among exact matches on one dimension, the smallest area wins.
/// 2. **Rate**, among the modes of that size: the rate closest to `req.fps` (30 when not
///    given), the higher one on a tie. A rate above what the device lists is never chosen.
/// 3. **Format**, among modes of that size and rate: MJPEG first if `req.prefer_mjpeg`,
///    then YUYV, NV12, RGB3, then MJPEG when not preferred.
///
/// Size and rate come before format on purpose: a webcam that gives YUYV 1280×720 at only
/// 10 fps but MJPEG at 30 fps streams MJPEG at 30 fps, since decoding is cheaper than a
/// third of the frames.
pub fn choose_mode(available: &[Mode], req: ModeRequest) -> Option<Mode> {
    let (want_w, want_h) = match (req.width, req.height) {
        (None, None) => (Some(DEFAULT_SIZE.0), Some(DEFAULT_SIZE.1)),
        given => given,
    };
    let area = |m: &&Mode| (u64::from(m.width) * u64::from(m.height), m.width);
    let exact =
        |m: &&Mode| want_w.is_none_or(|w| m.width == w) && want_h.is_none_or(|h| m.height == h);
    let covers =
        |m: &&Mode| want_w.is_none_or(|w| m.width >= w) && want_h.is_none_or(|h| m.height >= h);
    let size = available
        .iter()
        .filter(exact)
        .min_by_key(area)
        .or_else(|| available.iter().filter(covers).min_by_key(area))
        .or_else(|| available.iter().max_by_key(area))?;
    let (w, h) = (size.width, size.height);
    let want_fps = req.fps.unwrap_or(DEFAULT_FPS);
    available
        .iter()
        .filter(|m| m.width == w && m.height == h)
        .min_by_key(|m| {
            (
                m.fps.abs_diff(want_fps),
                std::cmp::Reverse(m.fps),
                format_rank(m.format, req.prefer_mjpeg),
            )
        })
        .copied()
}

/// A mode together with the fourcc that provides it (MJPEG may be `MJPG` or `JPEG`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct DevMode {
    mode: Mode,
    fourcc: u32,
}

/// The modes of an open capture device that xoq reads, and the fourccs it skipped.
fn enumerate(file: &File) -> (Vec<DevMode>, Vec<u32>) {
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

fn pix_request(width: u32, height: u32, fourcc: u32) -> sys::PixFormat {
    let mut pix: sys::PixFormat = sys::zeroed();
    pix.width = width;
    pix.height = height;
    pix.pixelformat = fourcc;
    pix.field = sys::FIELD_ANY;
    pix
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

/// One memory-mapped driver buffer, unmapped on drop.
#[derive(Debug)]
struct Mapping {
    ptr: NonNull<c_void>,
    len: usize,
}

// SAFETY: the mapping is owned by one `V4l2Camera` and only read through `&mut self`; the
// pointer is not tied to the thread that created it.
unsafe impl Send for Mapping {}

impl Mapping {
    fn bytes(&self) -> &[u8] {
        // SAFETY: `ptr` is a live, readable MAP_SHARED mapping of `len` bytes (unmapped only
        // in `drop`). The driver writes into it only while the buffer is queued; we read it
        // only between DQBUF and the next QBUF.
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr().cast::<u8>(), self.len) }
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: `ptr`/`len` are exactly what mmap returned, and no slice of it outlives
        // `&self` borrows, which have ended.
        unsafe {
            libc::munmap(self.ptr.as_ptr(), self.len);
        }
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
    /// (see [`choose_mode`]). [`CameraSource::mode`] tells what the driver actually set.
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

    fn io_error(&self, operation: &'static str, source: io::Error) -> DeviceError {
        let source = match source.raw_os_error() {
            Some(libc::ENODEV | libc::ENXIO) => {
                io::Error::new(source.kind(), "the camera is gone (unplugged?)")
            }
            Some(libc::EBUSY) => io::Error::new(
                source.kind(),
                format!(
                    "the camera is in use by another program (`fuser -v {}` shows which)",
                    self.name
                ),
            ),
            _ => source,
        };
        DeviceError::Io {
            operation,
            device: self.name.clone(),
            source,
        }
    }

    /// Set the format and rate of `dm`, map the buffers and start streaming. On error the
    /// camera is left stopped.
    fn start(&mut self, dm: DevMode) -> Result<(), DeviceError> {
        let r = self.try_start(dm);
        if r.is_err() {
            self.stop();
        }
        r
    }

    fn try_start(&mut self, dm: DevMode) -> Result<(), DeviceError> {
        self.requested = dm;
        let fd = self.file.as_fd();

        let mut f: sys::Format = sys::zeroed();
        f.type_ = sys::BUF_TYPE_VIDEO_CAPTURE;
        f.fmt.pix = pix_request(dm.mode.width, dm.mode.height, dm.fourcc);
        ioctl(fd, sys::VIDIOC_S_FMT, &mut f)
            .map_err(|e| self.io_error("setting the format (VIDIOC_S_FMT)", e))?;
        // SAFETY: for a capture buffer type the kernel fills the `pix` member.
        let pix = unsafe { f.fmt.pix };
        let format = pixel_format(pix.pixelformat).ok_or_else(|| DeviceError::Unsupported {
            operation: "video capture",
            device: self.name.clone(),
            reason: format!(
                "asked for {}, the driver set {}, which xoq does not read",
                fourcc_name(dm.fourcc),
                fourcc_name(pix.pixelformat)
            ),
        })?;
        let (width, height) = (pix.width, pix.height);
        let packed_row = match format {
            PixelFormat::Yuyv => Some(width as usize * 2),
            PixelFormat::Rgb24 => Some(width as usize * 3),
            PixelFormat::Nv12 => Some(width as usize),
            PixelFormat::Mjpeg => None,
        };
        let bad_size = width == 0
            || height == 0
            || (format == PixelFormat::Nv12
                && !(width.is_multiple_of(2) && height.is_multiple_of(2)));
        if bad_size {
            return Err(DeviceError::Unsupported {
                operation: "video capture",
                device: self.name.clone(),
                reason: format!("the driver set an unusable size {width}x{height} for {format}"),
            });
        }
        self.bytesperline = packed_row.map_or(0, |row| (pix.bytesperline as usize).max(row));

        let fps = self.set_rate(dm.mode.fps);
        self.mode = Mode {
            format,
            width,
            height,
            fps,
        };

        let mut rb: sys::RequestBuffers = sys::zeroed();
        rb.count = BUFFERS;
        rb.type_ = sys::BUF_TYPE_VIDEO_CAPTURE;
        rb.memory = sys::MEMORY_MMAP;
        ioctl(fd, sys::VIDIOC_REQBUFS, &mut rb)
            .map_err(|e| self.io_error("requesting buffers (VIDIOC_REQBUFS)", e))?;
        if rb.count == 0 {
            return Err(self.io_error(
                "requesting buffers (VIDIOC_REQBUFS)",
                io::Error::other("the driver gave no buffers (out of memory?)"),
            ));
        }
        for index in 0..rb.count {
            let mut buf = capture_buffer();
            buf.index = index;
            ioctl(fd, sys::VIDIOC_QUERYBUF, &mut buf)
                .map_err(|e| self.io_error("querying a buffer (VIDIOC_QUERYBUF)", e))?;
            // SAFETY: for MMAP buffers the kernel sets the `offset` member.
            let offset = unsafe { buf.m.offset };
            // `off_t` is 32-bit on some 32-bit targets, where a large cookie would not fit.
            #[allow(clippy::unnecessary_fallible_conversions)]
            let offset = libc::off_t::try_from(offset).map_err(|_| {
                self.io_error(
                    "mapping a buffer (mmap)",
                    io::Error::other(format!("buffer offset {offset:#x} out of range")),
                )
            })?;
            let len = buf.length as usize;
            // SAFETY: a fresh shared mapping of the driver buffer at `offset` (the cookie
            // QUERYBUF returned) of its length; the kernel validates both, and the result is
            // checked for MAP_FAILED before use.
            let ptr = unsafe {
                libc::mmap(
                    std::ptr::null_mut(),
                    len,
                    libc::PROT_READ | libc::PROT_WRITE,
                    libc::MAP_SHARED,
                    self.file.as_raw_fd(),
                    offset,
                )
            };
            if ptr == libc::MAP_FAILED {
                return Err(self.io_error("mapping a buffer (mmap)", io::Error::last_os_error()));
            }
            let Some(ptr) = NonNull::new(ptr) else {
                return Err(self.io_error(
                    "mapping a buffer (mmap)",
                    io::Error::other("mmap returned a null pointer"),
                ));
            };
            self.buffers.push(Mapping { ptr, len });
        }
        for index in 0..rb.count {
            let mut buf = capture_buffer();
            buf.index = index;
            ioctl(fd, sys::VIDIOC_QBUF, &mut buf)
                .map_err(|e| self.io_error("queueing a buffer (VIDIOC_QBUF)", e))?;
        }
        let mut ty = sys::BUF_TYPE_VIDEO_CAPTURE as libc::c_int;
        ioctl(fd, sys::VIDIOC_STREAMON, &mut ty)
            .map_err(|e| self.io_error("starting the stream (VIDIOC_STREAMON)", e))?;
        self.streaming = true;
        Ok(())
    }

    /// Ask for `fps` and return the rate the driver reports (or `fps` when the driver does
    /// not report rates: then it runs at whatever rate it has).
    fn set_rate(&self, fps: u32) -> u32 {
        let fd = self.file.as_fd();
        let mut parm: sys::StreamParm = sys::zeroed();
        parm.type_ = sys::BUF_TYPE_VIDEO_CAPTURE;
        if ioctl(fd, sys::VIDIOC_G_PARM, &mut parm).is_err() {
            return fps;
        }
        if parm.capture.capability & sys::CAP_TIMEPERFRAME != 0 {
            parm.capture.timeperframe = sys::Fract {
                numerator: 1,
                denominator: fps,
            };
            if ioctl(fd, sys::VIDIOC_S_PARM, &mut parm).is_err() {
                return fps;
            }
        }
        fps_of(parm.capture.timeperframe).unwrap_or(fps)
    }

    /// Stop streaming and release the buffers (errors ignored: this also runs on a device
    /// that has gone away, and on a half-started one).
    fn stop(&mut self) {
        let fd = self.file.as_fd();
        if self.streaming {
            let mut ty = sys::BUF_TYPE_VIDEO_CAPTURE as libc::c_int;
            let _ = ioctl(fd, sys::VIDIOC_STREAMOFF, &mut ty);
            self.streaming = false;
        }
        if !self.buffers.is_empty() {
            self.buffers.clear(); // munmap
        }
        // Free the driver's buffers, else it refuses the next VIDIOC_S_FMT as busy.
        let mut rb: sys::RequestBuffers = sys::zeroed();
        rb.type_ = sys::BUF_TYPE_VIDEO_CAPTURE;
        rb.memory = sys::MEMORY_MMAP;
        let _ = ioctl(fd, sys::VIDIOC_REQBUFS, &mut rb);
    }

    /// Wait up to [`CAPTURE_TIMEOUT`] for a filled buffer and dequeue it.
    fn dequeue(&self) -> Result<sys::Buffer, DeviceError> {
        let deadline = Instant::now() + CAPTURE_TIMEOUT;
        loop {
            let mut buf = capture_buffer();
            match ioctl(self.file.as_fd(), sys::VIDIOC_DQBUF, &mut buf) {
                Ok(()) => return Ok(buf),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => return Err(self.io_error("capturing (VIDIOC_DQBUF)", e)),
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(self.io_error(
                    "capturing",
                    io::Error::new(
                        io::ErrorKind::TimedOut,
                        format!(
                            "no frame within {} s: is the camera unplugged, stalled or covered by another program?",
                            CAPTURE_TIMEOUT.as_secs()
                        ),
                    ),
                ));
            }
            let mut pfd = libc::pollfd {
                fd: self.file.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            };
            let ms = libc::c_int::try_from(left.as_millis().max(1)).unwrap_or(libc::c_int::MAX);
            // SAFETY: one valid pollfd, for the duration of the call.
            let r = unsafe { libc::poll(&mut pfd, 1, ms) };
            if r < 0 {
                let e = io::Error::last_os_error();
                if e.kind() != io::ErrorKind::Interrupted {
                    return Err(self.io_error("waiting for a frame (poll)", e));
                }
            }
            // Ready, timed out or interrupted: DQBUF tells which (and reports errors that
            // poll only flags as POLLERR, such as a disconnected camera).
        }
    }

    /// Copy the frame in `buf` out of its mapping.
    fn frame(&self, buf: &sys::Buffer, timestamp_us: u64) -> Result<RawFrame, DeviceError> {
        let bad = |msg: String| {
            self.io_error("capturing", io::Error::new(io::ErrorKind::InvalidData, msg))
        };
        let map = self
            .buffers
            .get(buf.index as usize)
            .ok_or_else(|| bad(format!("driver returned unknown buffer {}", buf.index)))?
            .bytes();
        if buf.flags & sys::BUF_FLAG_ERROR != 0 {
            return Err(bad(
                "the driver flagged this frame as damaged (USB transfer error?); the next may be fine".to_owned(),
            ));
        }
        let Mode {
            format,
            width,
            height,
            ..
        } = self.mode;
        let used = (buf.bytesused as usize).min(map.len());
        let data = match format {
            PixelFormat::Mjpeg => {
                if used == 0 {
                    return Err(bad("empty MJPEG frame".to_owned()));
                }
                map[..used].to_vec()
            }
            PixelFormat::Yuyv | PixelFormat::Nv12 | PixelFormat::Rgb24 => {
                // Some drivers leave `bytesused` at 0 for raw formats: the buffer is full.
                let avail = if used == 0 { map.len() } else { used };
                let frame_len = format.frame_len(width, height).unwrap_or(0);
                let rows = match format {
                    PixelFormat::Nv12 => height as usize * 3 / 2,
                    _ => height as usize,
                };
                let row = frame_len / rows.max(1);
                let stride = self.bytesperline.max(row);
                let needed = stride * rows.saturating_sub(1) + row;
                if avail < needed {
                    return Err(bad(format!(
                        "short {format} frame: {avail} bytes, {width}x{height} needs {needed}"
                    )));
                }
                if stride == row {
                    map[..frame_len].to_vec()
                } else {
                    // Padded rows: pack them.
                    let mut data = Vec::with_capacity(frame_len);
                    for r in 0..rows {
                        data.extend_from_slice(&map[r * stride..r * stride + row]);
                    }
                    data
                }
            }
        };
        Ok(RawFrame {
            format,
            width,
            height,
            timestamp_us,
            data,
        })
    }
}

/// A zeroed `v4l2_buffer` for a capture MMAP queue.
fn capture_buffer() -> sys::Buffer {
    let mut buf: sys::Buffer = sys::zeroed();
    buf.type_ = sys::BUF_TYPE_VIDEO_CAPTURE;
    buf.memory = sys::MEMORY_MMAP;
    buf
}

/// [`choose_mode`] over a device's modes, keeping the fourcc.
fn pick(modes: &[DevMode], req: ModeRequest) -> Option<DevMode> {
    let plain: Vec<Mode> = modes.iter().map(|m| m.mode).collect();
    let mode = choose_mode(&plain, req)?;
    modes.iter().find(|m| m.mode == mode).copied()
}

impl CameraSource for V4l2Camera {
    fn mode(&self) -> Mode {
        self.mode
    }

    /// The next frame. A frame-level problem (damaged or short frame) is an error of kind
    /// `InvalidData` after which the camera keeps streaming: call again for the next one.
    fn capture(&mut self) -> Result<RawFrame, DeviceError> {
        if !self.streaming {
            return Err(self.io_error(
                "capturing",
                io::Error::new(
                    io::ErrorKind::NotConnected,
                    "the camera is not streaming (a mode change failed); open it again",
                ),
            ));
        }
        let mut buf = self.dequeue()?;
        let timestamp_us = now_us();
        let frame = self.frame(&buf, timestamp_us);
        // Give the buffer back whatever became of the frame.
        ioctl(self.file.as_fd(), sys::VIDIOC_QBUF, &mut buf)
            .map_err(|e| self.io_error("re-queueing a buffer (VIDIOC_QBUF)", e))?;
        frame
    }

    /// Stop streaming, set the mode closest to `req` and stream again. If the driver
    /// refuses, the previous mode is restored and the error returned.
    fn set_mode(&mut self, req: ModeRequest) -> Result<Mode, DeviceError> {
        let Some(next) = pick(&self.modes, req) else {
            return Err(DeviceError::Config(format!(
                "{} has no modes to choose from",
                self.name
            )));
        };
        if next == self.requested && self.streaming {
            return Ok(self.mode);
        }
        let previous = self.requested;
        self.stop();
        match self.start(next) {
            Ok(()) => Ok(self.mode),
            Err(e) => {
                // Best effort: if this fails too, capture reports the camera as stopped.
                let _ = self.start(previous);
                Err(e)
            }
        }
    }
}

impl Drop for V4l2Camera {
    fn drop(&mut self) {
        self.stop();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(format: PixelFormat, width: u32, height: u32, fps: u32) -> Mode {
        Mode {
            format,
            width,
            height,
            fps,
        }
    }

    fn req(w: Option<u32>, h: Option<u32>, fps: Option<u32>, prefer_mjpeg: bool) -> ModeRequest {
        ModeRequest {
            width: w,
            height: h,
            fps,
            prefer_mjpeg,
        }
    }

    use PixelFormat::{Mjpeg, Nv12, Rgb24, Yuyv};

    /// A typical USB2 webcam: YUYV is slow at large sizes, MJPEG is fast at all sizes.
    fn webcam() -> Vec<Mode> {
        vec![
            m(Yuyv, 640, 480, 30),
            m(Yuyv, 640, 480, 15),
            m(Yuyv, 1280, 720, 10),
            m(Yuyv, 1280, 720, 5),
            m(Mjpeg, 640, 480, 30),
            m(Mjpeg, 1280, 720, 30),
            m(Mjpeg, 1280, 720, 15),
            m(Mjpeg, 1920, 1080, 30),
            m(Yuyv, 320, 240, 30),
        ]
    }

    #[test]
    fn empty_list_gives_none() {
        assert_eq!(choose_mode(&[], ModeRequest::default()), None);
        assert_eq!(
            choose_mode(&[], req(Some(640), Some(480), Some(30), true)),
            None
        );
    }

    #[test]
    fn exact_size_and_rate() {
        let modes = webcam();
        assert_eq!(
            choose_mode(&modes, req(Some(640), Some(480), Some(30), false)),
            Some(m(Yuyv, 640, 480, 30))
        );
        assert_eq!(
            choose_mode(&modes, req(Some(640), Some(480), Some(15), false)),
            Some(m(Yuyv, 640, 480, 15))
        );
        assert_eq!(
            choose_mode(&modes, req(Some(1920), Some(1080), Some(30), false)),
            Some(m(Mjpeg, 1920, 1080, 30)),
            "the only format at that size, even when raw is preferred"
        );
    }

    #[test]
    fn defaults_are_720p_at_30() {
        let modes = webcam();
        assert_eq!(
            choose_mode(&modes, ModeRequest::default()),
            Some(m(Mjpeg, 1280, 720, 30)),
            "30 fps beats the raw-format preference"
        );
        let small = [m(Yuyv, 640, 480, 30), m(Yuyv, 320, 240, 30)];
        assert_eq!(
            choose_mode(&small, ModeRequest::default()),
            Some(m(Yuyv, 640, 480, 30)),
            "no 720p: the largest"
        );
        let big = [m(Nv12, 1920, 1080, 30), m(Nv12, 3840, 2160, 30)];
        assert_eq!(
            choose_mode(&big, ModeRequest::default()),
            Some(m(Nv12, 1920, 1080, 30)),
            "no 720p: the smallest above"
        );
    }

    #[test]
    fn larger_fallback_then_largest() {
        let modes = webcam();
        assert_eq!(
            choose_mode(&modes, req(Some(800), Some(600), Some(30), false)),
            Some(m(Mjpeg, 1280, 720, 30)),
            "smallest size covering 800x600"
        );
        assert_eq!(
            choose_mode(&modes, req(Some(4000), Some(3000), Some(30), false)),
            Some(m(Mjpeg, 1920, 1080, 30)),
            "nothing covers it: the largest"
        );
        assert_eq!(
            choose_mode(&modes, req(Some(1), Some(1), Some(30), false)),
            Some(m(Yuyv, 320, 240, 30)),
            "tiny request: the smallest size"
        );
        // Covering means both dimensions: 1280x720 does not cover 1000x800.
        let odd = [
            m(Yuyv, 1280, 720, 30),
            m(Yuyv, 1024, 1024, 30),
            m(Yuyv, 1600, 1200, 30),
        ];
        assert_eq!(
            choose_mode(&odd, req(Some(1000), Some(800), None, false)),
            Some(m(Yuyv, 1024, 1024, 30))
        );
    }

    #[test]
    fn one_dimension_given() {
        let modes = [
            m(Yuyv, 640, 480, 30),
            m(Yuyv, 640, 360, 30),
            m(Yuyv, 1280, 720, 30),
        ];
        assert_eq!(
            choose_mode(&modes, req(Some(640), None, None, false)),
            Some(m(Yuyv, 640, 360, 30)),
            "width matches twice: smaller area"
        );
        assert_eq!(
            choose_mode(&modes, req(None, Some(720), None, false)),
            Some(m(Yuyv, 1280, 720, 30))
        );
        assert_eq!(
            choose_mode(&modes, req(None, Some(400), None, false)),
            Some(m(Yuyv, 640, 480, 30)),
            "smallest height at least 400"
        );
    }

    #[test]
    fn format_preference() {
        let modes = [
            m(Mjpeg, 1280, 720, 30),
            m(Rgb24, 1280, 720, 30),
            m(Nv12, 1280, 720, 30),
            m(Yuyv, 1280, 720, 30),
        ];
        let raw = req(Some(1280), Some(720), Some(30), false);
        let jpeg = ModeRequest {
            prefer_mjpeg: true,
            ..raw
        };
        assert_eq!(choose_mode(&modes, raw).map(|m| m.format), Some(Yuyv));
        assert_eq!(choose_mode(&modes, jpeg).map(|m| m.format), Some(Mjpeg));
        assert_eq!(choose_mode(&modes[..3], raw).map(|m| m.format), Some(Nv12));
        assert_eq!(choose_mode(&modes[..2], raw).map(|m| m.format), Some(Rgb24));
        assert_eq!(
            choose_mode(&modes[1..], jpeg).map(|m| m.format),
            Some(Yuyv),
            "no MJPEG: raw order"
        );
        assert_eq!(
            choose_mode(&modes[..1], raw).map(|m| m.format),
            Some(Mjpeg),
            "only MJPEG: MJPEG"
        );
    }

    #[test]
    fn rate_selection() {
        let modes = [
            m(Yuyv, 640, 480, 60),
            m(Yuyv, 640, 480, 30),
            m(Yuyv, 640, 480, 15),
            m(Yuyv, 640, 480, 5),
        ];
        let at = |fps| choose_mode(&modes, req(Some(640), Some(480), fps, false)).map(|m| m.fps);
        assert_eq!(at(Some(30)), Some(30));
        assert_eq!(at(None), Some(30), "default 30");
        assert_eq!(at(Some(25)), Some(30), "closest");
        assert_eq!(at(Some(20)), Some(15), "closest below");
        assert_eq!(at(Some(45)), Some(60), "tie between 30 and 60: the higher");
        assert_eq!(at(Some(240)), Some(60), "never above the device's");
        assert_eq!(at(Some(1)), Some(5));
        assert_eq!(at(Some(0)), Some(5));
        // Rate before format: 30 fps MJPEG beats 10 fps YUYV when raw is preferred...
        let modes = webcam();
        assert_eq!(
            choose_mode(&modes, req(Some(1280), Some(720), Some(30), false)),
            Some(m(Mjpeg, 1280, 720, 30))
        );
        // ...but at the YUYV rate, YUYV wins.
        assert_eq!(
            choose_mode(&modes, req(Some(1280), Some(720), Some(10), false)),
            Some(m(Yuyv, 1280, 720, 10))
        );
        assert_eq!(
            choose_mode(&modes, req(Some(1280), Some(720), Some(10), true)),
            Some(m(Yuyv, 1280, 720, 10)),
            "10 fps is only YUYV, even with MJPEG preferred"
        );
        assert_eq!(
            choose_mode(&modes, req(Some(1280), Some(720), Some(14), true)),
            Some(m(Mjpeg, 1280, 720, 15))
        );
    }

    #[test]
    fn size_before_rate() {
        let modes = [m(Yuyv, 1280, 720, 5), m(Yuyv, 640, 480, 30)];
        assert_eq!(
            choose_mode(&modes, req(Some(1280), Some(720), Some(30), false)),
            Some(m(Yuyv, 1280, 720, 5))
        );
    }

    #[test]
    fn choice_is_always_available() {
        let modes = webcam();
        for w in [None, Some(0), Some(321), Some(640), Some(5000)] {
            for h in [None, Some(0), Some(241), Some(720), Some(5000)] {
                for fps in [None, Some(0), Some(7), Some(30), Some(1000)] {
                    for p in [false, true] {
                        let got = choose_mode(&modes, req(w, h, fps, p)).expect("a mode");
                        assert!(modes.contains(&got), "{got}");
                    }
                }
            }
        }
    }

    #[test]
    fn struct_sizes_match_the_kernel() {
        use std::mem::size_of;
        assert_eq!(size_of::<sys::Capability>(), 104);
        assert_eq!(size_of::<sys::FmtDesc>(), 64);
        assert_eq!(size_of::<sys::FrmSizeEnum>(), 44);
        assert_eq!(size_of::<sys::FrmIvalEnum>(), 52);
        assert_eq!(size_of::<sys::StreamParm>(), 204);
        assert_eq!(size_of::<sys::RequestBuffers>(), 20);
        #[cfg(target_pointer_width = "64")]
        {
            assert_eq!(size_of::<sys::Format>(), 208);
            assert_eq!(size_of::<sys::Buffer>(), 88);
        }
    }

    /// Request codes as `linux/videodev2.h` computes them on x86_64 and aarch64.
    #[cfg(all(
        target_pointer_width = "64",
        any(target_arch = "x86_64", target_arch = "aarch64")
    ))]
    #[test]
    fn request_codes_match_the_kernel() {
        // Kernel request codes are 32-bit; `ioctl_num_type` is `c_ulong` or `c_int` by libc.
        fn code<T>(r: sys::Request<T>) -> u32 {
            r.0 as u32
        }
        let codes: [(u32, u32); 14] = [
            (code(sys::VIDIOC_QUERYCAP), 0x8068_5600),
            (code(sys::VIDIOC_ENUM_FMT), 0xc040_5602),
            (code(sys::VIDIOC_S_FMT), 0xc0d0_5605),
            (code(sys::VIDIOC_REQBUFS), 0xc014_5608),
            (code(sys::VIDIOC_QUERYBUF), 0xc058_5609),
            (code(sys::VIDIOC_QBUF), 0xc058_560f),
            (code(sys::VIDIOC_DQBUF), 0xc058_5611),
            (code(sys::VIDIOC_STREAMON), 0x4004_5612),
            (code(sys::VIDIOC_STREAMOFF), 0x4004_5613),
            (code(sys::VIDIOC_G_PARM), 0xc0cc_5615),
            (code(sys::VIDIOC_S_PARM), 0xc0cc_5616),
            (code(sys::VIDIOC_TRY_FMT), 0xc0d0_5640),
            (code(sys::VIDIOC_ENUM_FRAMESIZES), 0xc02c_564a),
            (code(sys::VIDIOC_ENUM_FRAMEINTERVALS), 0xc034_564b),
        ];
        for (i, (ours, kernel)) in codes.into_iter().enumerate() {
            assert_eq!(ours, kernel, "code {i}: {ours:#x} vs {kernel:#x}");
        }
    }

    #[test]
    fn fourcc_mapping() {
        assert_eq!(sys::PIX_FMT_YUYV, 0x5659_5559);
        assert_eq!(sys::PIX_FMT_MJPEG, 0x4750_4a4d);
        assert_eq!(sys::PIX_FMT_JPEG, 0x4745_504a);
        assert_eq!(sys::PIX_FMT_NV12, 0x3231_564e);
        assert_eq!(sys::PIX_FMT_RGB24, 0x3342_4752);
        assert_eq!(pixel_format(sys::fourcc(b"YUYV")), Some(Yuyv));
        assert_eq!(pixel_format(sys::fourcc(b"NV12")), Some(Nv12));
        assert_eq!(pixel_format(sys::fourcc(b"MJPG")), Some(Mjpeg));
        assert_eq!(pixel_format(sys::fourcc(b"JPEG")), Some(Mjpeg));
        assert_eq!(pixel_format(sys::fourcc(b"RGB3")), Some(Rgb24));
        for other in [b"H264", b"UYVY", b"NV21", b"BGR3", b"GREY", b"YU12"] {
            assert_eq!(pixel_format(sys::fourcc(other)), None);
        }
        assert_eq!(fourcc_name(sys::PIX_FMT_MJPEG), "MJPG");
        assert_eq!(fourcc_name(0x0001_4148), "HA??");
        // Each format's Display is the fourcc it comes from.
        for f in [Yuyv, Nv12, Mjpeg, Rgb24] {
            let code = f.to_string();
            let bytes: [u8; 4] = code.as_bytes().try_into().expect("4 chars");
            assert_eq!(pixel_format(sys::fourcc(&bytes)), Some(f));
        }
    }

    #[test]
    fn frame_intervals_to_rates() {
        let fract = |numerator, denominator| sys::Fract {
            numerator,
            denominator,
        };
        assert_eq!(fps_of(fract(1, 30)), Some(30));
        assert_eq!(fps_of(fract(1001, 30000)), Some(30));
        assert_eq!(fps_of(fract(333_333, 10_000_000)), Some(30));
        assert_eq!(fps_of(fract(1, 0)), None);
        assert_eq!(fps_of(fract(0, 30)), None);
        assert_eq!(fps_of(fract(3, 1)), None, "1/3 fps rounds to 0");
        assert_eq!(fps_of(fract(1, u32::MAX)), Some(u32::MAX));
    }

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

    #[test]
    fn no_format_reason_lists_what_was_found() {
        let r = no_format_reason(&[sys::fourcc(b"H264"), sys::fourcc(b"UYVY")]);
        assert!(r.contains("H264, UYVY"), "{r}");
        assert!(no_format_reason(&[]).contains("none"));
    }

    /// Real capture, when this machine has a camera.
    #[test]
    fn captures_from_a_real_camera_if_present() {
        let devices = list();
        for d in &devices {
            println!(
                "{}: {:?} ({}) {:?}",
                d.path.display(),
                d.card,
                d.driver,
                d.error
            );
        }
        let Some(dev) = devices
            .iter()
            .find(|d| d.error.is_none() && !d.modes.is_empty())
        else {
            println!("skipped: no /dev/video* capture device on this machine");
            return;
        };
        let path = dev.path.to_str().expect("utf-8 path");
        let mut cam = match V4l2Camera::open(
            path,
            ModeRequest {
                width: Some(640),
                height: Some(480),
                ..Default::default()
            },
        ) {
            Ok(c) => c,
            Err(DeviceError::Io { source, .. } | DeviceError::Open { source, .. })
                if source.raw_os_error() == Some(libc::EBUSY)
                    || source.to_string().contains("in use") =>
            {
                println!("skipped: {path} is in use by another program");
                return;
            }
            Err(e) => panic!("open {path}: {e}"),
        };
        assert!(!cam.modes().is_empty());
        let check = |cam: &mut V4l2Camera| {
            let mode = cam.mode();
            // The first frames of some cameras are flagged damaged: allow a few.
            let frame = (0..5)
                .find_map(|_| cam.capture().ok())
                .expect("a frame within 5 tries");
            assert_eq!(
                (frame.format, frame.width, frame.height),
                (mode.format, mode.width, mode.height)
            );
            match mode.format.frame_len(mode.width, mode.height) {
                Some(len) => assert_eq!(frame.data.len(), len),
                None => assert!(frame.data.starts_with(&[0xFF, 0xD8]), "JPEG SOI"),
            }
            assert!(frame.timestamp_us > 0);
            println!("captured {mode}: {} bytes", frame.data.len());
        };
        check(&mut cam);
        let other = cam
            .modes()
            .into_iter()
            .find(|m| *m != cam.mode())
            .unwrap_or(cam.mode());
        let got = cam
            .set_mode(ModeRequest {
                width: Some(other.width),
                height: Some(other.height),
                fps: Some(other.fps),
                prefer_mjpeg: other.format == Mjpeg,
            })
            .expect("set_mode");
        assert_eq!(got, cam.mode());
        check(&mut cam);
    }
}
