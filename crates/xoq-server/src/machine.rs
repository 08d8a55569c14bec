//! The machine service: answers "what do you serve" for a deployed robot (see
//! `xoq_wire::machine`), so clients reach `<machine-id>/<service>` without copying ids.
//!
//! The description is read fresh for every request (from `machine.json` at the CLI edge),
//! so a redeploy is visible without restarting this service.

use std::sync::Arc;

use iroh::endpoint::Connection;
use iroh::protocol::{AcceptError, ProtocolHandler};
use xoq_wire::machine::{Machine, decode_request};

/// Serves a machine description over P2P on [`xoq_wire::machine::ALPN_MACHINE`].
#[derive(Clone)]
pub struct MachineServer {
    describe: Arc<dyn Fn() -> Result<Machine, String> + Send + Sync>,
}

impl std::fmt::Debug for MachineServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MachineServer").finish_non_exhaustive()
    }
}

impl MachineServer {
    /// A server answering with what `describe` returns at each request.
    pub fn new(describe: impl Fn() -> Result<Machine, String> + Send + Sync + 'static) -> Self {
        Self {
            describe: Arc::new(describe),
        }
    }

    async fn answer(&self, conn: &Connection) -> Result<(), String> {
        let (mut send, mut recv) = conn.accept_bi().await.map_err(|e| e.to_string())?;
        let req = recv.read_to_end(16).await.map_err(|e| e.to_string())?;
        decode_request(&mut &req[..]).map_err(|e| format!("bad request: {e}"))?;
        let machine = (self.describe)()?;
        let mut buf = Vec::new();
        machine.encode(&mut buf).map_err(|e| e.to_string())?;
        send.write_all(&buf).await.map_err(|e| e.to_string())?;
        send.finish().map_err(|e| e.to_string())?;
        // Let the answer reach the client before the connection goes.
        let _ = tokio::time::timeout(std::time::Duration::from_secs(5), conn.closed()).await;
        Ok(())
    }
}

impl ProtocolHandler for MachineServer {
    async fn accept(&self, connection: Connection) -> Result<(), AcceptError> {
        if let Err(e) = self.answer(&connection).await {
            tracing::debug!("machine describe failed: {e}");
        }
        Ok(())
    }
}
