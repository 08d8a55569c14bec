//! Clients of xoq: remote devices used like local ones.
//!
//! [`serial::RemoteSerial`] is an async client of a remote serial port;
//! [`serial::BlockingSerial`] wraps it with `std::io::Read`/`Write` and pyserial-style
//! timeouts for synchronous code (and the Python bindings). [`can::RemoteCanBus`] and
//! [`camera::RemoteCamera`] do the same for CAN buses and cameras. [`observe`] has read-only
//! observers of ports and buses (both directions, stamped; for recorders).
//!
//! Shared by every client: [`link`] (identity, link state, reconnect policy), [`clock`] (the
//! estimate of the robot's clock), [`rx`] (bounded receive buffers).
// Every public item says what it is for: these crates are read from their docs.
#![deny(missing_docs)]
#![cfg_attr(not(test), deny(clippy::unwrap_used))]

/// The identity setters every client's options share (key, identity, ephemeral, offline),
/// defined once so each service's options read and behave alike. `$device` words the docs.
macro_rules! identity_setters {
    ($device:literal) => {
        /// Use this key as the client identity (servers with `--allow` check it).
        pub fn key(mut self, key: iroh::SecretKey) -> Self {
            self.identity = $crate::link::Identity::Key(key);
            self
        }

        /// Choose the identity (default: the user's, as `xoq id` prints it).
        pub fn identity(mut self, identity: $crate::link::Identity) -> Self {
            self.identity = identity;
            self
        }

        #[doc = concat!("A throw-away identity for this ", $device, " only.")]
        pub fn ephemeral(self) -> Self {
            self.identity($crate::link::Identity::Ephemeral)
        }

        /// Offline mode: no discovery, direct addresses only (default: `XOQ_OFFLINE`).
        pub fn offline(mut self, offline: bool) -> Self {
            self.offline = offline;
            self
        }
    };
}

#[cfg(feature = "audio")]
pub mod audio;
#[cfg(feature = "camera")]
pub mod camera;
pub mod can;
pub mod clock;
mod conn;
#[cfg(feature = "depth")]
pub mod depth;
pub mod error;
pub mod link;
pub mod observe;
mod relay;
pub mod rx;
pub mod serial;

pub use error::ClientError;
pub use link::{Identity, LinkState, Reconnect};
