//! `CanBus`: a remote CAN bus for Python (the python-can plugin's native half).

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use bytes::Bytes;
use pyo3::prelude::*;
use pyo3::types::PyBytes;
use xoq::can::{CanFrame, CanOptions, Filter, RemoteCanBus};
use xoq::client::ClientError;

use crate::{SIGNAL_SLICE, close_slot, duration, identity, is_open, runtime, to_py};

/// Frame flags as one small int, so a frame crosses into Python as a flat tuple.
pub(crate) mod flag {
    /// 29-bit identifier.
    pub(crate) const EXTENDED: u8 = 1;
    /// Remote transmission request.
    pub(crate) const REMOTE: u8 = 2;
    /// Error frame.
    pub(crate) const ERROR: u8 = 4;
    /// CAN FD.
    pub(crate) const FD: u8 = 8;
    /// FD bit-rate switch.
    pub(crate) const BRS: u8 = 16;
    /// FD error state indicator.
    pub(crate) const ESI: u8 = 32;
}

/// A received frame: `(arbitration_id, flags, data, dlc, timestamp_seconds, robot_seconds)`:
/// the receive time in this process's clock (what python-can expects), and on the robot's.
type PyFrame<'py> = (u32, u8, Bound<'py, PyBytes>, u8, f64, f64);

/// A connected remote CAN bus. Methods may be called from several Python threads.
#[pyclass(frozen, module = "xoq._xoq")]
pub(crate) struct CanBus {
    bus: Mutex<Option<Arc<RemoteCanBus>>>,
    relay: bool,
}

fn filters(list: Vec<(u32, u32, bool)>) -> Vec<Filter> {
    list.into_iter()
        .map(|(id, mask, extended)| Filter { id, mask, extended })
        .collect()
}

impl CanBus {
    fn bus(&self) -> PyResult<Arc<RemoteCanBus>> {
        self.bus
            .lock()
            .ok()
            .and_then(|b| b.clone())
            .ok_or_else(|| crate::ClosedError::new_err("the bus is shut down"))
    }
}

#[pymethods]
impl CanBus {
    /// Connect to `address`. `filters` is a list of `(id, mask, extended_only)` (see
    /// `set_filters`); `interface` checks that the endpoint serves that interface.
    #[new]
    #[pyo3(signature = (address, receive_own=false, filters=None, interface=None, offline=None, key=None, ephemeral=false, reconnect=None))]
    #[allow(clippy::too_many_arguments)]
    fn new(
        py: Python<'_>,
        address: &str,
        receive_own: bool,
        filters: Option<Vec<(u32, u32, bool)>>,
        interface: Option<String>,
        offline: Option<bool>,
        key: Option<PathBuf>,
        ephemeral: bool,
        reconnect: Option<f64>,
    ) -> PyResult<Self> {
        let mut opts = CanOptions::new()
            .receive_own(receive_own)
            .offline(crate::offline(offline))
            .identity(identity(key, ephemeral)?)
            .reconnect(crate::reconnect(reconnect)?);
        let relay = address.contains("://");
        if let Some(f) = filters {
            opts = opts.filters(self::filters(f));
        }
        if let Some(i) = interface {
            opts = opts.interface(&i);
        }
        let rt = runtime()?;
        let bus = py
            .detach(|| rt.block_on(RemoteCanBus::connect(address, opts)))
            .map_err(to_py)?;
        Ok(Self {
            bus: Mutex::new(Some(Arc::new(bus))),
            relay,
        })
    }

    /// Send one frame. `flags` combines the `FLAG_*` bits; `dlc` is the length a remote
    /// frame requests (ignored otherwise). `timeout` bounds the wait for flow control.
    #[pyo3(signature = (arbitration_id, flags, data, dlc=0, timeout=None))]
    fn send(
        &self,
        py: Python<'_>,
        arbitration_id: u32,
        flags: u8,
        data: &[u8],
        dlc: u8,
        timeout: Option<f64>,
    ) -> PyResult<()> {
        let remote = flags & flag::REMOTE != 0;
        let frame = CanFrame {
            id: arbitration_id,
            extended: flags & flag::EXTENDED != 0,
            rtr: remote,
            error: flags & flag::ERROR != 0,
            fd: flags & flag::FD != 0,
            brs: flags & flag::BRS != 0,
            esi: flags & flag::ESI != 0,
            data: if remote {
                Bytes::new()
            } else {
                Bytes::copy_from_slice(data)
            },
            rtr_len: if remote { dlc } else { 0 },
        };
        let limit = duration(timeout)?;
        let bus = self.bus()?;
        let rt = runtime()?;
        py.detach(|| {
            rt.block_on(async {
                match limit {
                    None => bus.send(&frame).await,
                    Some(t) => tokio::time::timeout(t, bus.send(&frame))
                        .await
                        .map_err(|_| ClientError::Timeout(t))?,
                }
            })
        })
        .map_err(to_py)
    }

    /// The next frame within `timeout` seconds (`None` waits until one comes), or `None`.
    /// Sub-millisecond timeouts are honoured: the wait is a condition variable, not a poll.
    #[pyo3(signature = (timeout=None))]
    fn recv<'py>(&self, py: Python<'py>, timeout: Option<f64>) -> PyResult<Option<PyFrame<'py>>> {
        let bus = self.bus()?;
        let inbox = bus.inbox();
        let deadline = duration(timeout)?.map(|t| Instant::now() + t);
        loop {
            let wait = deadline.map_or(SIGNAL_SLICE, |d| {
                d.saturating_duration_since(Instant::now())
                    .min(SIGNAL_SLICE)
            });
            let got = py
                .detach(|| inbox.pop_blocking(Some(wait)))
                .map_err(|r| to_py(ClientError::Closed(r)))?;
            if let Some(t) = got {
                let f = &t.frame;
                let flags = (u8::from(f.extended) * flag::EXTENDED)
                    | (u8::from(f.rtr) * flag::REMOTE)
                    | (u8::from(f.error) * flag::ERROR)
                    | (u8::from(f.fd) * flag::FD)
                    | (u8::from(f.brs) * flag::BRS)
                    | (u8::from(f.esi) * flag::ESI);
                let dlc = if f.rtr { f.rtr_len } else { f.data.len() as u8 };
                let local = bus.clock().to_local_us(t.timestamp_us);
                return Ok(Some((
                    f.id,
                    flags,
                    PyBytes::new(py, &f.data),
                    dlc,
                    local as f64 / 1e6,
                    t.timestamp_us as f64 / 1e6,
                )));
            }
            if deadline.is_some_and(|d| Instant::now() >= d) {
                return Ok(None);
            }
            if !is_open(&self.bus) {
                return Err(crate::ClosedError::new_err("the bus was shut down"));
            }
            py.check_signals()?;
        }
    }

    /// Replace the filters (`[]` receives everything): applied by a P2P server, or by the
    /// client over a relay.
    fn set_filters(&self, py: Python<'_>, filters: Vec<(u32, u32, bool)>) -> PyResult<()> {
        let bus = self.bus()?;
        let rt = runtime()?;
        let f = self::filters(filters);
        py.detach(|| rt.block_on(bus.set_filters(f))).map_err(to_py)
    }

    /// Bus state code: 0 error-active, 1 warning, 2 error-passive, 3 bus-off.
    #[getter]
    fn state(&self) -> PyResult<u8> {
        Ok(self.bus()?.state().to_code())
    }

    /// Whether the remote interface carries CAN FD.
    #[getter]
    fn is_fd(&self) -> PyResult<bool> {
        Ok(self.bus()?.is_fd())
    }

    /// The remote interface's name (e.g. `sim:openarm`, `can0:fd`).
    #[getter]
    fn interface(&self) -> PyResult<String> {
        Ok(self.bus()?.interface().to_string())
    }

    /// Frames dropped because this client did not read them in time.
    #[getter]
    fn dropped(&self) -> PyResult<u64> {
        Ok(self.bus()?.inbox().dropped())
    }

    /// Whether the bus is reached through a MoQ relay.
    #[getter]
    fn via_relay(&self) -> bool {
        self.relay
    }

    /// `(state, reason, drops, reconnects, down_seconds)` of the link (state:
    /// `"connected"`, `"reconnecting"` or `"closed"`).
    #[getter]
    fn link(&self) -> PyResult<(String, String, u64, u64, f64)> {
        Ok(crate::link_info(self.bus()?.link()))
    }

    /// Wait until the link state changes (or `timeout` seconds); returns the new state.
    #[pyo3(signature = (timeout=None))]
    fn wait_link_change(&self, py: Python<'_>, timeout: Option<f64>) -> PyResult<String> {
        let bus = self.bus()?;
        crate::wait_link_change(py, bus.link(), timeout)
    }

    /// `(offset_us, rtt_us)` of the estimate of the server's clock (server minus local), or
    /// `None` before the first probe.
    #[getter]
    fn clock(&self) -> PyResult<Option<(i64, u64)>> {
        Ok(self
            .bus()?
            .clock()
            .estimate()
            .map(|e| (e.offset_us, e.rtt_us)))
    }

    /// `(sent, not_sent_link_down, refused_by_server)` frame counts.
    #[getter]
    fn counters(&self) -> PyResult<(u64, u64, u64)> {
        use std::sync::atomic::Ordering;
        let b = self.bus()?;
        let s = b.stats();
        Ok((
            s.sent.load(Ordering::Relaxed),
            s.not_sent.load(Ordering::Relaxed),
            s.refused_by_server.load(Ordering::Relaxed),
        ))
    }

    /// Close the session (idempotent).
    fn close(&self, py: Python<'_>) -> PyResult<()> {
        close_slot(py, &self.bus, |b| b.close())
    }
}

/// Register the flag constants next to the class.
pub(crate) fn add_flags(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add("FLAG_EXTENDED", flag::EXTENDED)?;
    m.add("FLAG_REMOTE", flag::REMOTE)?;
    m.add("FLAG_ERROR", flag::ERROR)?;
    m.add("FLAG_FD", flag::FD)?;
    m.add("FLAG_BRS", flag::BRS)?;
    m.add("FLAG_ESI", flag::ESI)?;
    Ok(())
}
