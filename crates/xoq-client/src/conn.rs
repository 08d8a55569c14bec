//! Connection lifetime shared by the clients.

use iroh::Endpoint;
use xoq_transport::p2p;

/// Closes the connection when a client is dropped without `close()`, so the server frees
/// the device (and runs its safety actions) at once instead of after the idle timeout.
pub(crate) struct ConnGuard {
    pub(crate) conn: Option<iroh::endpoint::Connection>,
    pub(crate) endpoint: Option<Endpoint>,
}

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
