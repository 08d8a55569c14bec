//! `Camera`: a remote camera for Python (the native half of `xoq_cv2.VideoCapture`).
//!
//! Frames are decoded in Rust straight into a `bytearray` that Python wraps as a numpy
//! array without copying (`numpy.frombuffer`), in BGR order as OpenCV expects.
//!
//! Receiving a frame runs as a task on the shared runtime that owns the camera for its
//! duration, and Python waits for it in short slices so Ctrl-C gets through. An interrupted
//! read is not lost or cut in half: the next call picks up the same task (cancelling a read
//! midway could drop a frame's credit and starve the stream). Decoding happens on the
//! calling thread, with the GIL, into the new `bytearray`: no Python object is ever touched
//! from a runtime thread.

use std::path::PathBuf;
use std::sync::Mutex;
use std::time::Instant;

use pyo3::prelude::*;
use pyo3::types::PyByteArray;
use tokio::task::JoinHandle;
use xoq::camera::{CameraOptions, ChannelOrder, Codec, RemoteCamera, VideoFrame};
use xoq::client::ClientError;

use crate::{SIGNAL_SLICE, duration, identity, runtime, to_py};

/// A decoded frame: `(bgr, width, height, seq, timestamp_us, keyframe)`.
type Decoded = (Py<PyByteArray>, u32, u32, u64, u64, bool);
type ReadResult = Result<VideoFrame, ClientError>;

enum State {
    Idle(Box<RemoteCamera>),
    Reading(JoinHandle<(Box<RemoteCamera>, ReadResult)>),
    /// A call on another thread holds the camera.
    Busy,
    Closed,
}

enum Received {
    Frame(Box<RemoteCamera>, ReadResult),
    /// No frame yet (timeout or an interrupt, carried as the error): the read stays in flight.
    Pending(State, Option<PyErr>),
}

/// A connected remote camera. Methods may be called from several Python threads; reads
/// are serialised.
#[pyclass(frozen, module = "xoq._xoq")]
pub(crate) struct Camera {
    state: Mutex<State>,
    codec: Codec,
}

fn closed() -> PyErr {
    crate::ClosedError::new_err("the camera is released")
}

impl Camera {
    /// Take the camera out of its slot for one call. The lock is never held while the GIL
    /// is released (a thread waiting on it with the GIL would deadlock the one holding it).
    fn take(&self) -> PyResult<State> {
        let mut slot = self
            .state
            .lock()
            .map_err(|_| crate::XoqError::new_err("camera state poisoned"))?;
        match std::mem::replace(&mut *slot, State::Busy) {
            State::Busy => Err(crate::XoqError::new_err(
                "the camera is in use by another thread (a capture is read from one thread)",
            )),
            State::Closed => {
                *slot = State::Closed;
                Err(closed())
            }
            s => Ok(s),
        }
    }

    /// Put the camera back after a call (unless it was closed meanwhile).
    fn put(&self, state: State) {
        if let Ok(mut slot) = self.state.lock() {
            if matches!(*slot, State::Busy) {
                *slot = state;
            } else if let State::Reading(h) = state {
                h.abort();
            }
        }
    }

    /// Wait for the next frame in short slices (Ctrl-C gets through).
    fn receive(&self, py: Python<'_>, state: State, deadline: Option<Instant>) -> Received {
        let rt = match runtime() {
            Ok(rt) => rt,
            Err(e) => return Received::Pending(state, Some(e)),
        };
        let mut handle = match state {
            State::Idle(mut cam) => rt.spawn(async move {
                let r = cam.next_frame().await;
                (cam, r)
            }),
            State::Reading(h) => h,
            other => return Received::Pending(other, Some(closed())),
        };
        loop {
            let wait = deadline.map_or(SIGNAL_SLICE, |d| {
                d.saturating_duration_since(Instant::now())
                    .min(SIGNAL_SLICE)
            });
            let done = py.detach(|| {
                rt.block_on(async { tokio::time::timeout(wait, &mut handle).await.ok() })
            });
            match done {
                Some(Ok((cam, r))) => return Received::Frame(cam, r),
                Some(Err(e)) => {
                    return Received::Pending(
                        State::Closed,
                        Some(crate::XoqError::new_err(format!("camera read failed: {e}"))),
                    );
                }
                None => {}
            }
            if deadline.is_some_and(|d| Instant::now() >= d) {
                return Received::Pending(State::Reading(handle), None);
            }
            if let Err(e) = py.check_signals() {
                return Received::Pending(State::Reading(handle), Some(e));
            }
        }
    }
}

#[pymethods]
impl Camera {
    /// Connect to `address`. `codec` is `"h264"`, `"jpeg"` or `None` (H.264, else JPEG).
    #[new]
    #[pyo3(signature = (address, codec=None, offline=None, key=None, ephemeral=false))]
    fn new(
        py: Python<'_>,
        address: &str,
        codec: Option<&str>,
        offline: Option<bool>,
        key: Option<PathBuf>,
        ephemeral: bool,
    ) -> PyResult<Self> {
        let codecs: &[Codec] = match codec {
            None => &[Codec::H264, Codec::Jpeg],
            Some("h264") => &[Codec::H264],
            Some("jpeg") => &[Codec::Jpeg],
            Some(other) => {
                return Err(pyo3::exceptions::PyValueError::new_err(format!(
                    "codec {other:?}: use \"h264\", \"jpeg\" or None"
                )));
            }
        };
        let opts = CameraOptions::new()
            .codecs(codecs)
            .offline(crate::offline(offline))
            .identity(identity(key, ephemeral)?);
        let rt = runtime()?;
        let cam = py
            .detach(|| rt.block_on(RemoteCamera::connect(address, opts)))
            .map_err(to_py)?;
        Ok(Self {
            codec: cam.codec(),
            state: Mutex::new(State::Idle(Box::new(cam))),
        })
    }

    /// The codec in use: `"h264"` or `"jpeg"`.
    #[getter]
    fn codec(&self) -> &'static str {
        match self.codec {
            Codec::H264 => "h264",
            Codec::Jpeg => "jpeg",
        }
    }

    /// The next picture within `timeout` seconds (`None` waits), or `None` on timeout.
    /// A frame that does not decode raises `DeviceError`; the next call resumes at the next
    /// keyframe.
    #[pyo3(signature = (timeout=None))]
    fn read(&self, py: Python<'_>, timeout: Option<f64>) -> PyResult<Option<Decoded>> {
        let deadline = duration(timeout)?.map(|t| Instant::now() + t);
        let mut current = self.take()?;
        let result = loop {
            let (mut cam, frame) = match self.receive(py, current, deadline) {
                Received::Frame(cam, frame) => (cam, frame),
                Received::Pending(state, err) => {
                    self.put(state);
                    return err.map_or(Ok(None), Err);
                }
            };
            let frame = match frame {
                Ok(f) => f,
                Err(e) => break (cam, Err(to_py(e))),
            };
            let (w, h) = (usize::from(frame.width), usize::from(frame.height));
            let mut shown = false;
            // The picture is written into the bytearray's own memory, with the GIL held
            // (a few milliseconds): no copy, and no Python object touched elsewhere.
            let out = PyByteArray::new_with(py, w * h * 3, |buf| {
                match cam.decode(&frame, |pic| pic.write_packed(ChannelOrder::Bgr, buf)) {
                    Ok(Some(Ok(()))) => shown = true,
                    Ok(Some(Err(e))) => return Err(crate::DeviceError::new_err(e.to_string())),
                    Ok(None) => {}
                    Err(e) => return Err(to_py(e)),
                }
                Ok(())
            });
            match out {
                Ok(bytes) if shown => {
                    break (
                        cam,
                        Ok(Some((
                            bytes.unbind(),
                            frame.width.into(),
                            frame.height.into(),
                            frame.seq,
                            frame.timestamp_us,
                            frame.keyframe,
                        ))),
                    );
                }
                // No picture yet (an H.264 stream before its first keyframe): read on.
                Ok(_) => current = State::Idle(cam),
                Err(e) => break (cam, Err(e)),
            }
        };
        self.put(State::Idle(result.0));
        result.1
    }

    /// Ask the camera for another mode (0 = keep). Applies to every viewer of the camera;
    /// the frames tell what is really delivered.
    fn set_mode(&self, py: Python<'_>, width: u32, height: u32, fps: u32) -> PyResult<()> {
        let rt = runtime()?;
        let mut cam = match self.take()? {
            State::Idle(cam) => cam,
            // Finish a read still in flight first: the camera is needed to send the request.
            State::Reading(h) => match py.detach(|| rt.block_on(h)) {
                Ok((cam, _)) => cam,
                Err(e) => return Err(crate::XoqError::new_err(format!("camera read failed: {e}"))),
            },
            other => {
                self.put(other);
                return Err(closed());
            }
        };
        let r = py.detach(|| rt.block_on(cam.set_mode(width, height, fps)));
        self.put(State::Idle(cam));
        r.map_err(to_py)
    }

    /// Disconnect. Idempotent.
    fn close(&self, py: Python<'_>) -> PyResult<()> {
        let rt = runtime()?;
        let old = match self.state.lock() {
            Ok(mut s) => std::mem::replace(&mut *s, State::Closed),
            Err(_) => return Ok(()),
        };
        match old {
            State::Idle(cam) => py.detach(|| rt.block_on(cam.close())),
            State::Reading(h) => h.abort(),
            // A call on another thread holds it: `put` sees Closed and drops it.
            State::Busy | State::Closed => {}
        }
        Ok(())
    }

    /// Whether the camera is still open.
    #[getter]
    fn is_open(&self) -> bool {
        self.state
            .lock()
            .map(|s| !matches!(*s, State::Closed))
            .unwrap_or(false)
    }
}
