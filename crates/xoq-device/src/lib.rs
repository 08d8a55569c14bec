//! Device backends of xoq: the hardware side of each service.
//!
//! Each service defines a small device trait (for serial: [`serial::SerialBackend`] and
//! [`serial::SerialControl`]) with a real backend (a tty) and simulated ones. The simulated
//! devices in [`sim`] are product features — `xoq demo`, robot CI without hardware — not
//! test-only code.
// Every public item says what it is for: these crates are read from their docs.
#![deny(missing_docs)]
#![cfg_attr(not(test), deny(clippy::unwrap_used))]

pub mod audio;
pub mod camera;
pub mod can;
pub mod depth;
pub mod discover;
pub mod error;
pub mod serial;
pub mod sim;

pub use error::DeviceError;

/// Microseconds since the Unix epoch: the device's (the robot's) clock, which stamps every
/// frame and picture end to end and which clients estimate their offset to.
pub fn now_us() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}
