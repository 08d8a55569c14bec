//! Clients of xoq: remote devices used like local ones.
//!
//! [`serial::RemoteSerial`] is an async client of a remote serial port;
//! [`serial::BlockingSerial`] wraps it with `std::io::Read`/`Write` and pyserial-style
//! timeouts for synchronous code (and the Python bindings). [`can::RemoteCanBus`] and
//! [`camera::RemoteCamera`] do the same for CAN buses and cameras.
//!
//! Shared by every client: [`link`] (identity, link state, reconnect policy), [`clock`] (the
//! estimate of the robot's clock), [`rx`] (bounded receive buffers).
#![cfg_attr(not(test), deny(clippy::unwrap_used))]

#[cfg(feature = "camera")]
pub mod camera;
pub mod can;
pub mod clock;
mod conn;
pub mod error;
pub mod link;
mod relay;
pub mod rx;
pub mod serial;

pub use error::ClientError;
pub use link::{Identity, LinkState, Reconnect};
