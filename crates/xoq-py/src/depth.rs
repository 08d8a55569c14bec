//! `DepthCamera`: a remote depth camera for Python (the native half of `xoq.realsense`).
//!
//! Each read gives one capture: depth as little-endian u16 values and the colour picture as
//! packed RGB, both in new `bytearray`s that Python wraps as numpy arrays without another
//! copy. Reads run as tasks on the shared runtime (see `held`).

use std::path::PathBuf;
use std::time::Instant;

use pyo3::prelude::*;
use pyo3::types::{PyByteArray, PyDict};
use xoq::client::ClientError;
use xoq::depth::{DepthFrameset, DepthInfo, DepthOptions, Intrinsics, RemoteDepthCamera};

use crate::held::{Held, Received, State};
use crate::{duration, identity, runtime, to_py};

/// A capture: `(seq, timestamp_us, depth, width, height, rgb, color_width, color_height)`;
/// `rgb` is `None` when the capture came without colour.
type Capture = (
    u64,
    u64,
    Py<PyByteArray>,
    u32,
    u32,
    Option<Py<PyByteArray>>,
    u32,
    u32,
);
type ReadResult = Result<DepthFrameset, ClientError>;

/// A connected remote depth camera. Methods may be called from several Python threads;
/// reads are serialised.
#[pyclass(frozen, module = "xoq._xoq")]
pub(crate) struct DepthCamera {
    held: Held<RemoteDepthCamera, ReadResult>,
    info: std::sync::Mutex<DepthInfo>,
}

fn intrinsics<'py>(py: Python<'py>, k: &Intrinsics) -> PyResult<Bound<'py, PyDict>> {
    let d = PyDict::new(py);
    d.set_item("width", k.width)?;
    d.set_item("height", k.height)?;
    d.set_item("fx", k.fx)?;
    d.set_item("fy", k.fy)?;
    d.set_item("ppx", k.ppx)?;
    d.set_item("ppy", k.ppy)?;
    d.set_item("model", k.model.name())?;
    d.set_item("coeffs", k.coeffs.to_vec())?;
    Ok(d)
}

#[pymethods]
impl DepthCamera {
    /// Connect to `address` (P2P or a relay broadcast). With `color`, each capture carries
    /// its colour picture.
    #[new]
    #[pyo3(signature = (address, color=true, offline=None, key=None, ephemeral=false))]
    fn new(
        py: Python<'_>,
        address: &str,
        color: bool,
        offline: Option<bool>,
        key: Option<PathBuf>,
        ephemeral: bool,
    ) -> PyResult<Self> {
        let opts = DepthOptions::new()
            .color(color)
            .offline(crate::offline(offline))
            .identity(identity(key, ephemeral)?);
        let rt = runtime()?;
        let cam = py
            .detach(|| rt.block_on(RemoteDepthCamera::connect(address, opts)))
            .map_err(to_py)?;
        Ok(Self {
            info: std::sync::Mutex::new(cam.info().clone()),
            held: Held::new(cam, "the depth camera"),
        })
    }

    /// Scale (metres per unit), intrinsics of both pictures and the device's names, as a
    /// dict; up to date as of the last read.
    #[getter]
    fn info<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let i = self
            .info
            .lock()
            .map_err(|_| crate::XoqError::new_err("depth camera info poisoned"))?
            .clone();
        let d = PyDict::new(py);
        d.set_item("scale", i.scale)?;
        d.set_item("name", i.name)?;
        d.set_item("serial", i.serial)?;
        d.set_item("depth", intrinsics(py, &i.depth)?)?;
        d.set_item("color", intrinsics(py, &i.color)?)?;
        Ok(d)
    }

    /// The next capture within `timeout` seconds (`None` waits), or `None` on timeout.
    #[pyo3(signature = (timeout=None))]
    fn read(&self, py: Python<'_>, timeout: Option<f64>) -> PyResult<Option<Capture>> {
        let deadline = duration(timeout)?.map(|t| Instant::now() + t);
        let state = self.held.take()?;
        let read = |mut cam: Box<RemoteDepthCamera>| async move {
            let r = cam.next().await;
            (cam, r)
        };
        let (cam, got) = match self.held.receive(py, state, deadline, read) {
            Received::Done(cam, got) => (cam, got),
            Received::Pending(state, err) => {
                self.held.put(state);
                return err.map_or(Ok(None), Err);
            }
        };
        if let Ok(mut i) = self.info.lock() {
            i.clone_from(cam.info());
        }
        self.held.put(State::Idle(cam));
        let set = got.map_err(to_py)?;
        let d = &set.depth;
        let depth = PyByteArray::new_with(py, d.data.len() * 2, |buf| {
            for (out, v) in buf.chunks_exact_mut(2).zip(&d.data) {
                out.copy_from_slice(&v.to_le_bytes());
            }
            Ok(())
        })?;
        let (rgb, cw, ch) = match &set.color {
            Some(c) => (
                Some(PyByteArray::new(py, &c.data).unbind()),
                c.width,
                c.height,
            ),
            None => (None, 0, 0),
        };
        Ok(Some((
            set.seq,
            set.timestamp_us,
            depth.unbind(),
            d.width,
            d.height,
            rgb,
            cw,
            ch,
        )))
    }

    /// Ask the camera for another mode (0 = keep); P2P only. Applies to every viewer.
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
