//! The crate's error type.

use std::io;
use std::net::SocketAddr;

/// Errors of the forwarder, the namespace helper and the firewall wrappers.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A socket or process operation failed.
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// An external command (`nft`, `tc`, `ip`) ran and failed.
    #[error("`{command}` failed ({status}): {stderr}")]
    Command {
        /// The command line, for the message.
        command: String,
        /// Its exit status.
        status: std::process::ExitStatus,
        /// What it printed on stderr (trimmed).
        stderr: String,
    },
    /// [`Forwarder::start`](crate::ForwarderBuilder::start) was called outside a Tokio runtime.
    #[error("the forwarder must be started from within a Tokio runtime")]
    NoRuntime,
    /// [`Forwarder::rebind`](crate::Forwarder::rebind) named a client the forwarder has never seen.
    #[error("no client {0} has sent anything through this forwarder")]
    UnknownClient(SocketAddr),
    /// A firewall or qdisc change was requested outside a private network namespace.
    ///
    /// [`nft`](crate::nft) refuses to touch the host's firewall or `lo` qdisc: run the code
    /// inside [`netns::isolated`](crate::netns::isolated).
    #[error(
        "refusing to change the host's network configuration: not inside a private network namespace (use netns::isolated)"
    )]
    NotIsolated,
    /// An argument is out of range or malformed.
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
}

impl Error {
    pub(crate) fn io(context: impl Into<String>, source: io::Error) -> Self {
        Error::Io {
            context: context.into(),
            source,
        }
    }
}

/// The crate's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;
