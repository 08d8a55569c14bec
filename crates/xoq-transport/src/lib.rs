//! Transport layer of xoq: one place that knows how to reach a robot.
//!
//! - [`key`]: endpoint identities (ed25519 keys on disk, created `0600`).
//! - [`address`]: the address strings users paste (`<id>`, `<id>@ip:port`, `<relay-url>/<path>`).
//! - [`p2p`]: iroh endpoints, offline mode, allowlists.
//! - [`moq`]: MoQ sessions through a relay (development certificates pinned by fingerprint).
//!
//! The embedded relay server and relay credentials live in `xoq-relay`, so nothing that only
//! dials a relay builds one.
//!
//! Services above this crate see only QUIC streams (P2P) and MoQ origins (relay); they never
//! configure iroh or TLS themselves.
// Every public item says what it is for: these crates are read from their docs.
#![deny(missing_docs)]
#![cfg_attr(not(test), deny(clippy::unwrap_used))]

pub mod address;
pub mod error;
pub mod framed;
pub mod key;
pub mod machine;
pub mod moq;
pub mod p2p;

pub use address::{Address, RelayUrl, TOKEN_ENV};
pub use error::TransportError;
pub use iroh::{EndpointId, SecretKey};

/// Environment variable that turns on offline mode everywhere (CLI, Rust and Python clients):
/// no iroh discovery, no public relays, no mDNS, no port mapping.
pub const OFFLINE_ENV: &str = "XOQ_OFFLINE";

/// Whether [`OFFLINE_ENV`] asks for offline mode (`1`, `true`, `yes`, `on`).
pub fn offline_from_env() -> bool {
    std::env::var(OFFLINE_ENV)
        .map(|v| {
            matches!(
                v.trim().to_ascii_lowercase().as_str(),
                "1" | "true" | "yes" | "on"
            )
        })
        .unwrap_or(false)
}
