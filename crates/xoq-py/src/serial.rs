//! `SerialPort`: a remote serial port for Python, with pyserial's read/write semantics.

use std::future::Future;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::PyBytes;
use xoq::client::ClientError;
use xoq::serial::{
    ClearBuffer, DataBits, FlowControl, LineSettings, Parity, RemoteSerial, SerialOptions, StopBits,
};

use crate::{SIGNAL_SLICE, close_slot, duration, identity, is_open, runtime, to_py};

/// Most bytes one `read` call copies out per wait (the result grows past it as needed).
const READ_CHUNK: usize = 64 * 1024;

/// Line settings from pyserial's vocabulary.
fn settings(
    baudrate: u32,
    bytesize: u8,
    parity: &str,
    stopbits: f64,
    xonxoff: bool,
    rtscts: bool,
) -> PyResult<LineSettings> {
    let data_bits = match bytesize {
        5 => DataBits::Five,
        6 => DataBits::Six,
        7 => DataBits::Seven,
        8 => DataBits::Eight,
        n => {
            return Err(PyValueError::new_err(format!(
                "bytesize {n}: use 5, 6, 7 or 8"
            )));
        }
    };
    let parity = match parity {
        "N" => Parity::None,
        "O" => Parity::Odd,
        "E" => Parity::Even,
        p => {
            return Err(PyValueError::new_err(format!(
                "parity {p:?} is not carried by xoq: use N, E or O"
            )));
        }
    };
    let stop_bits = if stopbits == 1.0 {
        StopBits::One
    } else if stopbits == 2.0 {
        StopBits::Two
    } else {
        return Err(PyValueError::new_err(format!(
            "stopbits {stopbits}: use 1 or 2"
        )));
    };
    let flow_control = match (xonxoff, rtscts) {
        (false, false) => FlowControl::None,
        (true, false) => FlowControl::Software,
        (false, true) => FlowControl::Hardware,
        (true, true) => {
            return Err(PyValueError::new_err(
                "choose one of xonxoff and rtscts: a port has one flow control",
            ));
        }
    };
    Ok(LineSettings {
        baud_rate: baudrate,
        data_bits,
        parity,
        stop_bits,
        flow_control,
    })
}

/// A connected remote serial port. Methods may be called from several Python threads.
#[pyclass(frozen, module = "xoq._xoq")]
pub(crate) struct SerialPort {
    port: Mutex<Option<Arc<RemoteSerial>>>,
    relay: bool,
    cancel_read: AtomicBool,
    cancel_write: AtomicBool,
}

impl SerialPort {
    fn port(&self) -> PyResult<Arc<RemoteSerial>> {
        self.port
            .lock()
            .ok()
            .and_then(|p| p.clone())
            .ok_or_else(|| crate::ClosedError::new_err("the port is closed"))
    }

    /// Run an async client call from Python: GIL released, on the shared runtime.
    fn run<T, F, Fut>(&self, py: Python<'_>, f: F) -> PyResult<T>
    where
        T: Send,
        F: FnOnce(Arc<RemoteSerial>) -> Fut + Send,
        Fut: Future<Output = Result<T, ClientError>>,
    {
        let port = self.port()?;
        let rt = runtime()?;
        py.detach(|| rt.block_on(f(port))).map_err(to_py)
    }
}

#[pymethods]
impl SerialPort {
    /// Connect to `address` (`<id>`, `<id>@ip:port` or `<relay-url>/<path>`) and apply the
    /// settings. `baudrate=None` keeps the port's current settings.
    #[new]
    #[pyo3(signature = (address, baudrate=None, bytesize=8, parity="N", stopbits=1.0, xonxoff=false, rtscts=false, offline=None, key=None, ephemeral=false, reconnect=None, exclusive=false))]
    #[allow(clippy::too_many_arguments)]
    fn new(
        py: Python<'_>,
        address: &str,
        baudrate: Option<u32>,
        bytesize: u8,
        parity: &str,
        stopbits: f64,
        xonxoff: bool,
        rtscts: bool,
        offline: Option<bool>,
        key: Option<PathBuf>,
        ephemeral: bool,
        reconnect: Option<f64>,
        exclusive: bool,
    ) -> PyResult<Self> {
        let mut opts = match baudrate {
            Some(b) => SerialOptions::new(b)
                .settings(settings(b, bytesize, parity, stopbits, xonxoff, rtscts)?),
            None => SerialOptions::keep_settings(),
        };
        opts = opts
            .offline(crate::offline(offline))
            .identity(identity(key, ephemeral)?)
            .reconnect(crate::reconnect(reconnect)?)
            .exclusive(exclusive)
            .client_name("python");
        let relay = address.contains("://");
        let rt = runtime()?;
        let port = py
            .detach(|| rt.block_on(RemoteSerial::connect(address, opts)))
            .map_err(to_py)?;
        Ok(Self {
            port: Mutex::new(Some(Arc::new(port))),
            relay,
            cancel_read: AtomicBool::new(false),
            cancel_write: AtomicBool::new(false),
        })
    }

    /// pyserial's `read(size)`: up to `size` bytes. `timeout=None` waits for all of them,
    /// `0` returns what is there, a number of seconds returns early with fewer.
    /// `inter_byte_timeout` ends the read when the line goes quiet after the first byte.
    #[pyo3(signature = (size, timeout=None, inter_byte_timeout=None))]
    fn read<'py>(
        &self,
        py: Python<'py>,
        size: usize,
        timeout: Option<f64>,
        inter_byte_timeout: Option<f64>,
    ) -> PyResult<Bound<'py, PyBytes>> {
        let port = self.port()?;
        let rx = port.rx();
        self.cancel_read.store(false, Ordering::Relaxed);
        let deadline = duration(timeout)?.map(|t| Instant::now() + t);
        let inter_byte = duration(inter_byte_timeout)?;
        let mut out = Vec::with_capacity(size.min(READ_CHUNK));
        let mut chunk = vec![0u8; size.clamp(1, READ_CHUNK)];
        let mut last_byte = Instant::now();
        while out.len() < size {
            let want = (size - out.len()).min(chunk.len());
            let now = Instant::now();
            let mut wait = deadline.map(|d| d.saturating_duration_since(now));
            if let Some(ib) = inter_byte
                && !out.is_empty()
            {
                let quiet = (last_byte + ib).saturating_duration_since(now);
                wait = Some(wait.map_or(quiet, |w| w.min(quiet)));
            }
            if wait == Some(Duration::ZERO) {
                // Out of time: take what is already there (up to `size`) without waiting.
                while out.len() < size {
                    let want = (size - out.len()).min(chunk.len());
                    match rx.try_read(&mut chunk[..want]) {
                        Ok(0) => break,
                        Ok(n) => out.extend_from_slice(&chunk[..n]),
                        Err(reason) if out.is_empty() => {
                            return Err(to_py(ClientError::Closed(reason)));
                        }
                        Err(_) => break,
                    }
                }
                break;
            }
            let slice = wait.map_or(SIGNAL_SLICE, |w| w.min(SIGNAL_SLICE));
            let buf = &mut chunk[..want];
            match py.detach(|| rx.read_blocking(buf, Some(slice))) {
                Ok(0) => {
                    if self.cancel_read.swap(false, Ordering::Relaxed) {
                        break;
                    }
                    if !is_open(&self.port) {
                        return Err(crate::ClosedError::new_err("the port was closed"));
                    }
                    py.check_signals()?;
                }
                Ok(n) => {
                    out.extend_from_slice(&chunk[..n]);
                    last_byte = Instant::now();
                }
                // Hand over what came before the link ended; the next read raises.
                Err(_) if !out.is_empty() => break,
                Err(reason) => return Err(to_py(ClientError::Closed(reason))),
            }
        }
        Ok(PyBytes::new(py, &out))
    }

    /// Write `data` with pyserial's `write_timeout` rules: `None` waits as long as the device
    /// (or a reconnect) takes; a number of seconds raises a timeout unless the device accepted
    /// every byte in time; `0` sends what can go at once. Returns the bytes written, fewer
    /// when `cancel_write()` interrupted it.
    #[pyo3(signature = (data, timeout=None))]
    fn write(&self, py: Python<'_>, data: &[u8], timeout: Option<f64>) -> PyResult<usize> {
        let limit = duration(timeout)?;
        let port = self.port()?;
        let rt = runtime()?;
        self.cancel_write.store(false, Ordering::Relaxed);
        if limit == Some(Duration::ZERO) {
            let p = port.clone();
            return py
                .detach(|| rt.block_on(p.send_some(data, Some(Duration::ZERO))))
                .map_err(to_py);
        }
        let deadline = limit.map(|t| Instant::now() + t);
        let mut done = 0usize;
        // In slices, so Ctrl-C, cancel_write() and a close from another thread get through.
        loop {
            let left = deadline.map(|d| d.saturating_duration_since(Instant::now()));
            if left == Some(Duration::ZERO) {
                return Err(to_py(ClientError::Timeout(limit.unwrap_or_default())));
            }
            let slice = left.map_or(SIGNAL_SLICE, |l| l.min(SIGNAL_SLICE));
            let finished = py.detach(|| {
                rt.block_on(async {
                    if done < data.len() {
                        done += port.send_some(&data[done..], Some(slice)).await?;
                        Ok::<_, ClientError>(done == data.len() && limit.is_none())
                    } else {
                        // A write timeout means: the device took the bytes in time.
                        port.wait_accepted(slice).await
                    }
                })
            });
            match finished {
                Ok(true) => return Ok(done),
                Ok(false) => {}
                Err(e) => return Err(to_py(e)),
            }
            if self.cancel_write.swap(false, Ordering::Relaxed) {
                return Ok(done);
            }
            if !is_open(&self.port) {
                return Err(crate::ClosedError::new_err("the port was closed"));
            }
            py.check_signals()?;
        }
    }

    /// Make a `read` blocked in another thread return at once with what it has.
    fn cancel_read(&self) {
        self.cancel_read.store(true, Ordering::Relaxed);
        if let Ok(p) = self.port() {
            p.rx().wake();
        }
    }

    /// Make a `write` blocked in another thread return at once with what it sent.
    fn cancel_write(&self) {
        self.cancel_write.store(true, Ordering::Relaxed);
    }

    /// Bytes received and not read yet.
    #[getter]
    fn in_waiting(&self) -> PyResult<usize> {
        Ok(self.port()?.available())
    }

    /// Bytes the client dropped because nobody read them (the buffer holds 4 MiB).
    #[getter]
    fn dropped(&self) -> PyResult<u64> {
        Ok(self.port()?.rx().dropped())
    }

    /// Whether the port is reached through a MoQ relay (data only: no settings or modem lines).
    #[getter]
    fn via_relay(&self) -> bool {
        self.relay
    }

    /// `(state, reason, drops, reconnects, down_seconds)` of the link (state:
    /// `"connected"`, `"reconnecting"` or `"closed"`).
    #[getter]
    fn link(&self) -> PyResult<(String, String, u64, u64, f64)> {
        Ok(crate::link_info(self.port()?.link()))
    }

    /// Wait until the link state changes (or `timeout` seconds); returns the new state.
    #[pyo3(signature = (timeout=None))]
    fn wait_link_change(&self, py: Python<'_>, timeout: Option<f64>) -> PyResult<String> {
        let port = self.port()?;
        crate::wait_link_change(py, port.link(), timeout)
    }

    /// `(offset_us, rtt_us)` of the estimate of the server's clock (server minus local), or
    /// `None` before the first probe.
    #[getter]
    fn clock(&self) -> PyResult<Option<(i64, u64)>> {
        Ok(self
            .port()?
            .clock()
            .estimate()
            .map(|e| (e.offset_us, e.rtt_us)))
    }

    /// Discard received bytes, here and on the server and device.
    fn reset_input(&self, py: Python<'_>) -> PyResult<()> {
        self.run(py, |p| async move { p.clear(ClearBuffer::Input).await })
    }

    /// Discard bytes not yet sent by the device.
    fn reset_output(&self, py: Python<'_>) -> PyResult<()> {
        self.run(py, |p| async move { p.clear(ClearBuffer::Output).await })
    }

    /// Wait until the device has transmitted everything written so far.
    fn drain(&self, py: Python<'_>) -> PyResult<()> {
        self.run(py, |p| async move { p.drain().await })
    }

    /// Apply new line settings on the remote port.
    #[pyo3(signature = (baudrate, bytesize=8, parity="N", stopbits=1.0, xonxoff=false, rtscts=false))]
    #[allow(clippy::too_many_arguments)]
    fn configure(
        &self,
        py: Python<'_>,
        baudrate: u32,
        bytesize: u8,
        parity: &str,
        stopbits: f64,
        xonxoff: bool,
        rtscts: bool,
    ) -> PyResult<()> {
        let s = settings(baudrate, bytesize, parity, stopbits, xonxoff, rtscts)?;
        self.run(py, move |p| async move { p.set_settings(s).await })
    }

    /// Set the DTR line.
    fn set_dtr(&self, py: Python<'_>, on: bool) -> PyResult<()> {
        self.run(py, move |p| async move { p.set_dtr(on).await })
    }

    /// Set the RTS line.
    fn set_rts(&self, py: Python<'_>, on: bool) -> PyResult<()> {
        self.run(py, move |p| async move { p.set_rts(on).await })
    }

    /// Hold a break condition for `duration` seconds (at most 10).
    fn send_break(&self, py: Python<'_>, duration: f64) -> PyResult<()> {
        let d = crate::duration(Some(duration))?.unwrap_or_default();
        self.run(py, move |p| async move { p.send_break(d).await })
    }

    /// Close the session (idempotent). The server frees the port for the next client.
    fn close(&self, py: Python<'_>) -> PyResult<()> {
        close_slot(py, &self.port, |p| p.close())
    }

    /// Whether `close()` has not been called.
    #[getter]
    fn is_open(&self) -> bool {
        is_open(&self.port)
    }
}
