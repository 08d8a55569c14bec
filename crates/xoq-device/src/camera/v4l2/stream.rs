//! Streaming: the memory-mapped buffers, starting and stopping the stream, and the
//! dequeue/copy/requeue cycle behind [`CameraSource::capture`] — the only code that maps
//! driver memory, so its `unsafe` stays in one place.

use std::ffi::c_void;
use std::io;
use std::os::fd::{AsFd, AsRawFd};
use std::ptr::NonNull;
use std::time::Instant;

use super::negotiate::{DevMode, fourcc_name, fps_of, pick, pix_request, pixel_format};
use super::sys::{self, ioctl};
use super::{BUFFERS, CAPTURE_TIMEOUT, V4l2Camera};
use crate::DeviceError;
use crate::camera::{CameraSource, Mode, ModeRequest, PixelFormat, RawFrame, now_us};

/// One memory-mapped driver buffer, unmapped on drop.
#[derive(Debug)]
pub(super) struct Mapping {
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

impl V4l2Camera {
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
    pub(super) fn start(&mut self, dm: DevMode) -> Result<(), DeviceError> {
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
            PixelFormat::Z16 | PixelFormat::Y16 => Some(width as usize * 2),
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
            PixelFormat::Yuyv
            | PixelFormat::Nv12
            | PixelFormat::Rgb24
            | PixelFormat::Z16
            | PixelFormat::Y16 => {
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
    use crate::camera::v4l2::list;

    use PixelFormat::Mjpeg;

    /// Real capture from the first camera of this machine (`cargo test -- --ignored` where
    /// there is one).
    #[test]
    #[ignore = "needs a V4L2 camera (/dev/video*)"]
    fn captures_from_a_real_camera() {
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
            panic!("no usable /dev/video* capture device on this machine");
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
                panic!("{path} is in use by another program: close it and run again");
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
                depth: other.format.is_depth(),
            })
            .expect("set_mode");
        assert_eq!(got, cam.mode());
        check(&mut cam);
    }
}
