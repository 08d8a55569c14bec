//! Errors of device backends, by phase: opening a device vs operating on an open one.

use std::io;

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
    /// A device setting is out of range (size, rate, format).
    #[error("{0}")]
    Config(String),
}
