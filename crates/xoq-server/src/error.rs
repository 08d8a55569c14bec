//! Errors of the servers, by phase: starting (device, configuration) and bridging to a relay.

use xoq_device::DeviceError;

/// Why a server could not start, or its relay bridge stopped. Every service uses this one
/// type, so a front end handles them alike.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ServerError {
    /// The device could not be opened or driven.
    #[error(transparent)]
    Device(#[from] DeviceError),
    /// The configuration cannot work (e.g. a deadman with nothing to send when it trips).
    #[error("{0}")]
    Config(String),
    /// Relay publishing failed.
    #[error(transparent)]
    Transport(#[from] xoq_transport::TransportError),
}
