//! `Camera`: a remote camera for Python (the native half of `xoq_cv2.VideoCapture`).
//!
//! Frames are decoded in Rust straight into a `bytearray` that Python wraps as a numpy
//! array without copying (`numpy.frombuffer`), in BGR order as OpenCV expects.
//!
//! Reads run as tasks on the shared runtime (see `held`); decoding happens on the calling
//! thread, with the GIL, into the new `bytearray`.

use std::path::PathBuf;
use std::time::Instant;

use pyo3::prelude::*;
use pyo3::types::PyByteArray;
use xoq::camera::{CameraOptions, ChannelOrder, Codec, RemoteCamera, VideoFrame};
use xoq::client::ClientError;

use crate::held::{Held, Received, State};
use crate::{duration, identity, runtime, to_py};

/// A decoded frame: `(bgr, width, height, seq, timestamp_us, keyframe)`.
type Decoded = (Py<PyByteArray>, u32, u32, u64, u64, bool);
type ReadResult = Result<VideoFrame, ClientError>;

/// A connected remote camera. Methods may be called from several Python threads; reads
/// are serialised.
#[pyclass(frozen, module = "xoq._xoq")]
pub(crate) struct Camera {
    held: Held<RemoteCamera, ReadResult>,
    codec: Codec,
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
            held: Held::new(cam, "the camera"),
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
        let mut current = self.held.take()?;
        let result = loop {
            let read = |mut cam: Box<RemoteCamera>| async move {
                let r = cam.next_frame().await;
                (cam, r)
            };
            let (mut cam, frame) = match self.held.receive(py, current, deadline, read) {
                Received::Done(cam, frame) => (cam, frame),
                Received::Pending(state, err) => {
                    self.held.put(state);
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
        self.held.put(State::Idle(result.0));
        result.1
    }

    /// Ask the camera for another mode (0 = keep). Applies to every viewer of the camera;
    /// the frames tell what is really delivered.
    fn set_mode(&self, py: Python<'_>, width: u32, height: u32, fps: u32) -> PyResult<()> {
        let rt = runtime()?;
        let mut cam = self.held.idle(py)?;
        let r = py.detach(|| rt.block_on(cam.set_mode(width, height, fps)));
        self.held.put(State::Idle(cam));
        r.map_err(to_py)
    }

    /// Disconnect. Idempotent.
    fn close(&self, py: Python<'_>) -> PyResult<()> {
        self.held.close(py, |cam| cam.close())
    }

    /// Whether the camera is still open.
    #[getter]
    fn is_open(&self) -> bool {
        self.held.is_open()
    }
}
