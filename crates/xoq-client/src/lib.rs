//! Clients of xoq: remote devices used like local ones.
//!
//! [`serial::RemoteSerial`] is an async client of a remote serial port;
//! [`serial::BlockingSerial`] wraps it with `std::io::Read`/`Write` and pyserial-style
//! timeouts for synchronous code (and the Python bindings).
#![cfg_attr(not(test), deny(clippy::unwrap_used))]

pub mod camera;
pub mod can;
mod conn;
pub mod error;
mod relay;
pub mod rx;
pub mod serial;

pub use error::ClientError;
