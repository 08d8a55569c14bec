//! `xoq._xoq`: the native half of the Python package.
//!
//! Thin classes over the Rust clients ([`serial::SerialPort`], [`can::CanBus`],
//! [`camera::Camera`], [`depth::DepthCamera`], [`audio::AudioStream`]). The Python modules in `python/xoq` put them
//! behind the host libraries' own interfaces (a pyserial `SerialBase`, a python-can `BusABC`,
//! OpenCV's `VideoCapture`, python-sounddevice's streams), so the semantics users know live
//! there and the bytes move here. Every blocking call releases the GIL and wakes up every
//! [`SIGNAL_SLICE`] to let Ctrl-C through.

use std::future::Future;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use pyo3::create_exception;
use pyo3::exceptions::PyException;
use pyo3::prelude::*;
use xoq::client::ClientError;

mod audio;
mod camera;
mod can;
mod depth;
mod held;
mod serial;

/// Longest a blocking call stays in Rust without looking for a pending signal.
const SIGNAL_SLICE: Duration = Duration::from_millis(50);

create_exception!(
    _xoq,
    XoqError,
    PyException,
    "Base class of the errors raised by the native module."
);
create_exception!(
    _xoq,
    ConnectError,
    XoqError,
    "The address is wrong or the server cannot be reached."
);
create_exception!(
    _xoq,
    RefusedError,
    XoqError,
    "The server refused this client (busy port, allowlist, version)."
);
create_exception!(
    _xoq,
    ClosedError,
    XoqError,
    "The link or the session ended."
);
create_exception!(
    _xoq,
    LinkDownError,
    XoqError,
    "The link is down and the client is reconnecting; the operation was not carried out."
);
create_exception!(
    _xoq,
    XoqTimeoutError,
    XoqError,
    "The operation did not finish in time."
);
create_exception!(
    _xoq,
    DeviceError,
    XoqError,
    "The remote device rejected the operation."
);
create_exception!(
    _xoq,
    UnsupportedError,
    XoqError,
    "The operation is not available over this transport."
);

/// Turn a client error into the matching Python exception, message unchanged.
fn to_py(e: ClientError) -> PyErr {
    let msg = e.to_string();
    match e {
        ClientError::Connect(_) => ConnectError::new_err(msg),
        ClientError::Refused { .. } => RefusedError::new_err(msg),
        ClientError::Closed(_) => ClosedError::new_err(msg),
        ClientError::LinkDown(_) => LinkDownError::new_err(msg),
        ClientError::Timeout(_) => XoqTimeoutError::new_err(msg),
        ClientError::Device(_) => DeviceError::new_err(msg),
        ClientError::Unsupported(_) => UnsupportedError::new_err(msg),
        _ => XoqError::new_err(msg),
    }
}

/// The process-wide runtime that carries every connection's network tasks.
///
/// One for all ports and buses: Python programs open a handful of devices, and a runtime per
/// device would cost a thread each for nothing.
fn runtime() -> PyResult<&'static tokio::runtime::Runtime> {
    static RT: OnceLock<Result<tokio::runtime::Runtime, String>> = OnceLock::new();
    RT.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("xoq-net")
            .enable_all()
            .build()
            .map_err(|e| e.to_string())
    })
    .as_ref()
    .map_err(|e| XoqError::new_err(format!("cannot start the network runtime: {e}")))
}

/// Take a device out of its slot and close its session gracefully.
///
/// Another Python thread may be inside a call holding a handle; its wait loop sees the empty
/// slot within one [`SIGNAL_SLICE`] and lets go, so wait a little for it before falling back
/// to dropping (which aborts the session without a goodbye).
fn close_slot<T, F, Fut>(py: Python<'_>, slot: &Mutex<Option<Arc<T>>>, close: F) -> PyResult<()>
where
    T: Send + Sync,
    F: FnOnce(T) -> Fut + Send,
    Fut: Future<Output = ()>,
{
    let Some(mut dev) = slot.lock().ok().and_then(|mut s| s.take()) else {
        return Ok(());
    };
    let rt = runtime()?;
    py.detach(|| {
        let give_up = Instant::now() + 4 * SIGNAL_SLICE;
        loop {
            match Arc::try_unwrap(dev) {
                Ok(d) => return rt.block_on(close(d)),
                Err(shared) if Instant::now() < give_up => {
                    dev = shared;
                    std::thread::sleep(Duration::from_millis(2));
                }
                Err(_) => return,
            }
        }
    });
    Ok(())
}

/// Whether the slot still holds its device (cheap check for wait loops).
fn is_open<T>(slot: &Mutex<Option<Arc<T>>>) -> bool {
    slot.lock().map(|s| s.is_some()).unwrap_or(false)
}

/// Seconds from Python (`None` = no limit). Negative or NaN values are refused.
fn duration(secs: Option<f64>) -> PyResult<Option<Duration>> {
    match secs {
        None => Ok(None),
        Some(s) if s.is_finite() && s >= 0.0 => Ok(Some(Duration::from_secs_f64(s))),
        Some(s) if s == f64::INFINITY => Ok(None),
        Some(s) => Err(pyo3::exceptions::PyValueError::new_err(format!(
            "timeout must be None or a number of seconds >= 0, not {s}"
        ))),
    }
}

/// Offline mode: the keyword wins, else `XOQ_OFFLINE` (as for the CLI).
fn offline(flag: Option<bool>) -> bool {
    flag.unwrap_or_else(xoq::transport::offline_from_env)
}

/// The client identity: `key=` (a file, created 0600 when missing), else a throw-away one
/// when asked (`ephemeral=True`), else the user's: `XOQ_KEY`, else `$XOQ_HOME/client.key`,
/// the id `xoq id` prints. So code that cannot pass `key=` (LeRobot) still has the id a
/// server's `--allow` names, and a program reopening a port is recognised as itself.
fn identity(key: Option<PathBuf>, ephemeral: bool) -> PyResult<xoq::client::Identity> {
    use xoq::client::Identity;
    match (key, ephemeral) {
        (Some(_), true) => Err(pyo3::exceptions::PyValueError::new_err(
            "give key= or ephemeral=True, not both",
        )),
        (Some(p), false) => Ok(Identity::File(p)),
        (None, true) => Ok(Identity::Ephemeral),
        (None, false) => Ok(Identity::User),
    }
}

/// The reconnect policy from Python's `reconnect=` (seconds to keep trying; 0 = never).
fn reconnect(seconds: Option<f64>) -> PyResult<xoq::client::Reconnect> {
    match seconds {
        None => Ok(xoq::client::Reconnect::default()),
        Some(0.0) => Ok(xoq::client::Reconnect {
            enabled: false,
            ..Default::default()
        }),
        Some(s) => Ok(xoq::client::Reconnect {
            deadline: duration(Some(s))?.unwrap_or(Duration::from_secs(3600 * 24 * 365)),
            enabled: true,
        }),
    }
}

/// The link's state as Python sees it: `(state, reason, drops, reconnects, down_seconds)`,
/// state being `"connected"`, `"reconnecting"` or `"closed"`.
fn link_info(link: &xoq::client::link::Link) -> (String, String, u64, u64, f64) {
    use std::sync::atomic::Ordering;
    use xoq::client::LinkState;
    let (state, reason) = match link.state() {
        LinkState::Connected => ("connected", String::new()),
        LinkState::Reconnecting { reason, .. } => ("reconnecting", reason),
        LinkState::Closed(r) => ("closed", r),
    };
    let c = link.counters();
    (
        state.to_string(),
        reason,
        c.drops.load(Ordering::Relaxed),
        c.reconnects.load(Ordering::Relaxed),
        c.down_us.load(Ordering::Relaxed) as f64 / 1e6,
    )
}

/// Wait (GIL released, Ctrl-C honoured) until the link's state changes or `timeout` passes;
/// returns the state then.
fn wait_link_change(
    py: Python<'_>,
    link: &xoq::client::link::Link,
    timeout: Option<f64>,
) -> PyResult<String> {
    let rt = runtime()?;
    let deadline = duration(timeout)?.map(|t| Instant::now() + t);
    let mut rx = link.watch();
    rx.borrow_and_update();
    loop {
        let slice = deadline.map_or(SIGNAL_SLICE, |d| {
            d.saturating_duration_since(Instant::now())
                .min(SIGNAL_SLICE)
        });
        let changed =
            py.detach(|| rt.block_on(async { tokio::time::timeout(slice, rx.changed()).await }));
        if changed.is_ok() || deadline.is_some_and(|d| Instant::now() >= d) {
            return Ok(link_info(link).0);
        }
        py.check_signals()?;
    }
}

/// Whether `address` is something xoq can dial: `<id>`, `<id>@ip:port` or a relay URL.
/// Local device paths (`/dev/ttyUSB0`, `COM3`, `can0`) are not.
#[pyfunction]
fn is_address(address: &str) -> bool {
    address.parse::<xoq::transport::Address>().is_ok()
}

/// The endpoint id stored in a key file (created 0600 when missing), as `xoq id` prints it;
/// without a file, this user's client id (`XOQ_KEY`, else `$XOQ_HOME/client.key`), the one
/// every port and bus opened without `key=` uses.
#[pyfunction]
#[pyo3(signature = (key=None))]
fn endpoint_id(key: Option<PathBuf>) -> PyResult<String> {
    let key = key.unwrap_or_else(xoq::client::link::Identity::user_key_path);
    let k = xoq::transport::key::load_or_create(&key)
        .map_err(|e| XoqError::new_err(format!("key {}: {e}", key.display())))?;
    Ok(k.public().to_string())
}

/// Log to stderr when `XOQ_LOG` is set (same syntax as `RUST_LOG`, e.g. `XOQ_LOG=debug`).
fn init_logging() {
    if let Ok(filter) = tracing_subscriber::EnvFilter::try_from_env("XOQ_LOG") {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_writer(std::io::stderr)
            .try_init();
    }
}

/// The native module.
#[pymodule]
fn _xoq(m: &Bound<'_, PyModule>) -> PyResult<()> {
    init_logging();
    let py = m.py();
    m.add("XoqError", py.get_type::<XoqError>())?;
    m.add("ConnectError", py.get_type::<ConnectError>())?;
    m.add("RefusedError", py.get_type::<RefusedError>())?;
    m.add("ClosedError", py.get_type::<ClosedError>())?;
    m.add("LinkDownError", py.get_type::<LinkDownError>())?;
    m.add("XoqTimeoutError", py.get_type::<XoqTimeoutError>())?;
    m.add("DeviceError", py.get_type::<DeviceError>())?;
    m.add("UnsupportedError", py.get_type::<UnsupportedError>())?;
    m.add_function(wrap_pyfunction!(is_address, m)?)?;
    m.add_function(wrap_pyfunction!(endpoint_id, m)?)?;
    m.add_class::<serial::SerialPort>()?;
    m.add_class::<can::CanBus>()?;
    m.add_class::<camera::Camera>()?;
    m.add_class::<depth::DepthCamera>()?;
    m.add_class::<audio::AudioStream>()?;
    can::add_flags(m)?;
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    Ok(())
}
