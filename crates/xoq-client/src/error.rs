//! Client errors, by phase: connecting (address, network, refusal) and while connected.

use xoq_wire::serial::RefuseCode;

/// Errors of remote device clients. Each message says what to do.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    /// The address could not be parsed, or the network/relay could not be reached.
    #[error("{0}")]
    Connect(String),
    /// The server refused the session (busy port, allowlist, version, settings).
    #[error("{message}")]
    Refused {
        /// Stable reason.
        code: RefuseCode,
        /// Server's explanation.
        message: String,
    },
    /// The link or the session ended for good.
    #[error("connection closed: {0}")]
    Closed(String),
    /// The link is down and the client is reconnecting: the operation was not carried out
    /// (a CAN command is never queued for later: a late motor command is worse than none).
    #[error("{0}")]
    LinkDown(String),
    /// The operation did not finish in time.
    #[error("timed out after {0:?}")]
    Timeout(std::time::Duration),
    /// The remote device rejected a control operation.
    #[error("remote device: {0}")]
    Device(String),
    /// The operation is not available over this transport.
    #[error("{0}")]
    Unsupported(String),
}

impl From<xoq_transport::TransportError> for ClientError {
    fn from(e: xoq_transport::TransportError) -> Self {
        match e {
            xoq_transport::TransportError::Refused { .. } => ClientError::Refused {
                code: RefuseCode::NotAllowed,
                message: e.to_string(),
            },
            e => ClientError::Connect(e.to_string()),
        }
    }
}
