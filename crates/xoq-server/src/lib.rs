//! Servers of xoq: each serves one kind of device to P2P clients (iroh, one ALPN per service)
//! and to relay clients (tracks on a MoQ relay).
//!
//! A server owns its device for its whole life: clients come and go, the device stays open,
//! and a device that disappears is reopened when it returns.
//!
//! Shared pieces: [`relay`] (the relay session protocol every bridge speaks), [`safety`]
//! (controllers, deadman, command ages), [`queue`] (bounded queues with stated policies).
// Every public item says what it is for: these crates are read from their docs.
#![deny(missing_docs)]
#![cfg_attr(not(test), deny(clippy::unwrap_used))]

#[cfg(feature = "audio")]
pub mod audio;
#[cfg(feature = "camera")]
pub mod camera;
pub mod can;
#[cfg(feature = "depth")]
pub mod depth;
mod error;
pub mod machine;
pub mod queue;
pub mod relay;
pub mod safety;
pub mod serial;
mod session;

pub use error::ServerError;

pub use serial::{SerialServer, SerialServerBuilder};
