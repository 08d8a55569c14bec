//! Hand-written bindings for the parts of `linux/videodev2.h` used here: the kernel ABI in
//! one place, so the `const` layout asserts and the request-code test guard every struct
//! the other modules pass to `ioctl`.

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
pub(super) const PIX_FMT_Z16: u32 = fourcc(b"Z16 ");
pub(super) const PIX_FMT_Y16: u32 = fourcc(b"Y16 ");

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

#[cfg(test)]
mod tests {
    use crate::camera::v4l2::sys;

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
}
