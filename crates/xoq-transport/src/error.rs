//! Transport errors, by phase: configuration (keys, addresses), connecting, and while connected.

use std::path::PathBuf;

/// Errors of the transport layer. Messages say what to do.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TransportError {
    /// The key file could not be read or created.
    #[error("key file {path}: {source}")]
    Key {
        /// Key path.
        path: PathBuf,
        /// Underlying error.
        #[source]
        source: std::io::Error,
    },
    /// The key file exists but does not hold a key.
    #[error(
        "key file {path} is not a xoq key (expected 64 hex characters); move it away to create a new one"
    )]
    BadKey {
        /// Key path.
        path: PathBuf,
    },
    /// An address string could not be parsed.
    #[error(
        "invalid address {input:?}: {reason}. Use <endpoint-id>, <endpoint-id>@<ip>:<port>, <machine-id>/<service> or <relay-url>/<path>"
    )]
    Address {
        /// What the user typed.
        input: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The local QUIC endpoint could not be bound.
    #[error("cannot bind the P2P endpoint: {0}")]
    Bind(String),
    /// Dialing a peer failed.
    #[error("cannot connect to {peer}: {reason}")]
    Connect {
        /// Who we dialed.
        peer: String,
        /// Why it failed.
        reason: String,
    },
    /// The peer refused us at the QUIC level (allowlist).
    #[error("{peer} refused the connection: {reason}")]
    Refused {
        /// Who refused.
        peer: String,
        /// Their reason.
        reason: String,
    },
    /// The MoQ relay could not be reached or the session failed.
    #[error("MoQ relay {url}: {reason}")]
    Relay {
        /// Relay URL.
        url: String,
        /// Why.
        reason: String,
    },
    /// Relay credentials: a key file, a pattern or a token could not be used.
    #[error("{0}")]
    RelayAuth(String),
    /// The embedded relay could not start.
    #[error("cannot start the relay: {0}")]
    RelayStart(String),
    /// A MoQ publish/subscribe operation failed.
    #[error("MoQ {operation}: {reason}")]
    Moq {
        /// What was attempted.
        operation: &'static str,
        /// Why it failed.
        reason: String,
    },
}
