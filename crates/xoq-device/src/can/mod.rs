//! CAN buses: the trait every backend implements, and the backends.
//!
//! A backend is opened into an [`OpenCan`]: a bounded receiver of bus events (frames with
//! their receive timestamps, controller state changes) and a transmitter. Implementing
//! [`CanBackend`] and [`CanTx`] is all that is necessary to add a new kind of CAN device.
//!
//! Backends by name (what users type after `can-server`):
//! - `virtual:NAME`: an empty in-process bus; every opener sees the others' frames
//!   (`virtual:NAME:classic`: the same, behind a classic-CAN controller).
//! - `sim:openarm`: eight simulated Damiao motors of an OpenArm.
//! - `can0`, `vcan0`, ...: a Linux SocketCAN interface (`:fd` suffix enables CAN FD).

use std::future::Future;
use std::pin::Pin;

use tokio::sync::mpsc;
pub use xoq_wire::can::{BusState, CanFrame, TimedFrame};

use crate::DeviceError;

mod sim;
#[cfg(target_os = "linux")]
pub mod socketcan;
mod virtual_bus;

pub use sim::SimCanBackend;
pub use virtual_bus::VirtualBackend;

/// Capacity of a backend's receive channel. Backends drop the *oldest* pending events
/// beyond it (a bus cannot be paused) and count them; see each backend.
pub const RX_CAPACITY: usize = 4096;

/// Something that happened on the bus.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BusEvent {
    /// A frame was received (or, on a virtual bus, sent by another opener).
    Frame(TimedFrame),
    /// The controller changed state (error-passive, bus-off, ...).
    State(BusState),
    /// The interface stopped working (unplugged, `ip link set down`, a bus-off that needs a
    /// restart, a read error), with the reason for logs and clients. Until [`BusEvent::Up`]
    /// nothing is received and [`CanTx::send`] fails at once with [`DeviceError::Down`]; the
    /// backend keeps reopening the interface with back-off meanwhile. Only SocketCAN emits it.
    Down(String),
    /// The interface works again after [`BusEvent::Down`], on a fresh socket, and `send`
    /// transmits again. The controller is presumed error-active (later changes arrive as
    /// [`BusEvent::State`]); frames sent while it was down were lost, none are replayed.
    Up,
}

/// A boxed future, so the transmit trait stays object-safe.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Transmit side of an open bus.
pub trait CanTx: Send {
    /// Transmit one frame.
    ///
    /// The contract motor safety relies on:
    /// - `Ok(())`: the frame was handed to the controller.
    /// - It never spins and never waits indefinitely. When the controller cannot take the
    ///   frame (SocketCAN: `ENOBUFS` because no node acknowledges, or a full socket buffer) it
    ///   waits one back-off step and returns [`DeviceError::Busy`] with the frame **not** sent.
    ///   The caller then decides what goes next — re-check the frame's age, put safety frames
    ///   first — and calls `send` again. Back-off steps grow (SocketCAN: 1 ms doubling to
    ///   64 ms, back to 1 ms after a success), so a plain retry loop paces itself.
    /// - [`DeviceError::Down`]: the interface is down (see [`BusEvent::Down`]); returned at
    ///   once, frame not sent, until the backend emits [`BusEvent::Up`].
    /// - Other errors concern this frame only (e.g. [`DeviceError::Unsupported`] for an FD
    ///   frame on a classic bus); the next `send` may succeed.
    /// - Cancel-safe: a future dropped before completing has sent nothing, so a caller may
    ///   abandon a send to put safety frames first.
    fn send<'a>(&'a mut self, frame: &'a CanFrame) -> BoxFuture<'a, Result<(), DeviceError>>;
}

/// An opened CAN bus.
pub struct OpenCan {
    /// Events from the bus, in order.
    pub rx: mpsc::Receiver<BusEvent>,
    /// Transmitter.
    pub tx: Box<dyn CanTx>,
    /// Whether the bus carries CAN FD frames.
    pub fd: bool,
}

impl std::fmt::Debug for OpenCan {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OpenCan").field("fd", &self.fd).finish()
    }
}

/// Something that can be opened as a CAN bus.
pub trait CanBackend: Send + Sync + 'static {
    /// Interface name (`can0`, `virtual:test`, `sim:openarm`).
    fn name(&self) -> &str;
    /// Open the bus.
    fn open(&self) -> Result<OpenCan, DeviceError>;
}

/// The clock every frame is stamped with, end to end.
pub use crate::now_us;

/// Open a backend by the name users type (`virtual:NAME`, `sim:openarm`, `can0[:fd]`).
pub fn backend(spec: &str) -> Result<Box<dyn CanBackend>, DeviceError> {
    if let Some(name) = spec.strip_prefix("virtual:") {
        return Ok(match name.strip_suffix(":classic") {
            Some(n) => Box::new(VirtualBackend::classic(n)),
            None => Box::new(VirtualBackend::new(name)),
        });
    }
    match spec {
        "sim:openarm" | "sim:damiao" => return Ok(Box::new(SimCanBackend::openarm(spec))),
        s if s.starts_with("sim:") => return Err(DeviceError::UnknownDevice(s.to_string())),
        _ => {}
    }
    let (iface, fd) = match spec.strip_suffix(":fd") {
        Some(i) => (i, true),
        None => (spec, false),
    };
    #[cfg(target_os = "linux")]
    {
        Ok(Box::new(socketcan::SocketCanBackend::new(iface, fd)))
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = fd;
        Err(DeviceError::UnknownDevice(format!(
            "{iface}: SocketCAN needs Linux; use virtual:NAME or sim:openarm"
        )))
    }
}
