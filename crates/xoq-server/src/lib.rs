//! Servers of xoq: each serves one kind of device to P2P clients (iroh, one ALPN per service)
//! and to MoQ clients (tracks on a relay).
//!
//! A server owns its device for its whole life: clients come and go, the device stays open,
//! and a device that disappears is reopened when it returns.
#![cfg_attr(not(test), deny(clippy::unwrap_used))]

pub mod camera;
pub mod can;
pub mod queue;
pub mod serial;

pub use serial::{SerialServer, SerialServerBuilder};
