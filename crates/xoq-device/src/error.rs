//! Errors of device backends, by phase: opening a device vs operating on an open one.

use std::io;
use std::time::Duration;

/// A device could not be opened or an operation on it failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DeviceError {
    /// The device could not be opened (missing, busy, no permission).
    #[error("cannot open {device}: {source}")]
    Open {
        /// Device name or path.
        device: String,
        /// Underlying error.
        #[source]
        source: io::Error,
    },
    /// The device name is not recognised.
    #[error("unknown device {0:?}: give a path such as /dev/ttyUSB0, or sim:so101 / sim:echo")]
    UnknownDevice(String),
    /// The device does not support this operation (e.g. modem lines on a pty).
    #[error("{operation} is not supported by {device}: {reason}")]
    Unsupported {
        /// What was attempted.
        operation: &'static str,
        /// Device name.
        device: String,
        /// Why, as reported by the OS or the simulator.
        reason: String,
    },
    /// An operation on an open device failed.
    #[error("{operation} failed on {device}: {source}")]
    Io {
        /// What was attempted.
        operation: &'static str,
        /// Device name.
        device: String,
        /// Underlying error.
        #[source]
        source: io::Error,
    },
    /// The device could not take the frame for one back-off step, so it was **not** sent.
    /// Returned instead of waiting on: the caller re-checks the frame's age and whether safety
    /// frames must go first, then sends again (see `can::CanTx::send`).
    #[error(
        "{device}: transmit queue full (no node acknowledges: are the motors powered and the bus terminated?)"
    )]
    Busy {
        /// Device name.
        device: String,
        /// How long the send waited before giving up (the back-off step).
        waited: Duration,
    },
    /// The device is down, so the frame was **not** sent; it is reopened in the background and
    /// its backend reports when it is back (for CAN: `BusEvent::Up`).
    #[error(
        "{device} is down ({reason}); frame not sent. It is reopened automatically: check `ip link show`; after a bus-off with no restart-ms, `ip link set <iface> down` then `up`"
    )]
    Down {
        /// Device name.
        device: String,
        /// Why it is down (the error that took it down), for logs and clients.
        reason: String,
    },
    /// A device setting is out of range (size, rate, format).
    #[error("{0}")]
    Config(String),
}
