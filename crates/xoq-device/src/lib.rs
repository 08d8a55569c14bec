//! Device backends of xoq: the hardware side of each service.
//!
//! Each service defines a small device trait (for serial: [`serial::SerialBackend`] and
//! [`serial::SerialControl`]) with a real backend (a tty) and simulated ones. The simulated
//! devices in [`sim`] are product features — `xoq demo`, robot CI without hardware — not
//! test-only code.
#![cfg_attr(not(test), deny(clippy::unwrap_used))]

pub mod camera;
pub mod can;
pub mod error;
pub mod serial;
pub mod sim;

pub use error::DeviceError;
