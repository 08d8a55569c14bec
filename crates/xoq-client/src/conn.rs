//! Connection lifetime shared by the clients.

use std::time::Duration;

use xoq_transport::p2p;

use crate::ClientError;

/// The handshake stream died: the connection's close reason says why (an allowlist refusal
/// closes the connection right after the TLS handshake, before any stream is served).
pub(crate) async fn handshake_failed(conn: &iroh::endpoint::Connection, peer: &str) -> ClientError {
    let reason = tokio::time::timeout(Duration::from_secs(2), conn.closed()).await;
    match reason {
        Ok(e) => ClientError::from(p2p::closed_error(peer, &e)),
        Err(_) => ClientError::Connect(format!("{peer}: handshake failed")),
    }
}

#[cfg(feature = "camera")]
/// Closes the connection when a client is dropped without `close()`, so the server frees
/// the device (and runs its safety actions) at once instead of after the idle timeout.
pub(crate) struct ConnGuard {
    pub(crate) conn: Option<iroh::endpoint::Connection>,
    pub(crate) endpoint: Option<iroh::Endpoint>,
}

#[cfg(feature = "camera")]
impl Drop for ConnGuard {
    fn drop(&mut self) {
        if let Some(conn) = self.conn.take() {
            conn.close(p2p::CLOSE_NORMAL.into(), b"dropped");
        }
        if let Some(ep) = self.endpoint.take()
            && let Ok(h) = tokio::runtime::Handle::try_current()
        {
            h.spawn(async move { ep.close().await });
        }
    }
}
