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
pub mod rx;
pub mod serial;

pub use error::ClientError;

/// How long a relay client waits for the server to subscribe to its writer broadcast.
/// A server that never reads (`--moq-cmd off`) costs a connect this long.
pub(crate) const WRITER_SUBSCRIBE_WAIT: std::time::Duration = std::time::Duration::from_secs(3);

/// A fresh name for this client's own writer broadcast through a relay (`{path}/cmd/<id>`,
/// `{path}/c2s/<id>`): every writer gets its own, so the server reads all of them at once.
pub(crate) fn writer_id() -> String {
    let bytes: [u8; 8] = rand::random();
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
