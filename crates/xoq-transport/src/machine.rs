//! Finding a deployed machine's services by name: the client side of the machine service
//! (`xoq_wire::machine`).
//!
//! `<machine-id>[@<ip>:<port>]/<service>` resolves to the endpoint serving `service`: the
//! machine says its id and port, and a client that reached the machine at an IP dials the
//! service at that IP (deployed services listen on fixed ports). Every P2P dial resolves
//! through here, so a reconnect after a service restart asks again.

use std::net::SocketAddr;
use std::time::Duration;

use iroh::{Endpoint, EndpointId};
use xoq_wire::machine::{ALPN_MACHINE, DESCRIBE, MAX_MESSAGE, Machine};

use crate::{Address, TransportError};

/// How long a describe may take once connected.
const DESCRIBE_TIMEOUT: Duration = Duration::from_secs(10);

/// Ask the machine at `machine` (a P2P address) what it serves.
pub async fn describe(
    ep: &Endpoint,
    machine: &Address,
    offline: bool,
) -> Result<Machine, TransportError> {
    let peer = machine.to_string();
    let fail = |reason: String| TransportError::Connect {
        peer: peer.clone(),
        reason,
    };
    let conn = crate::p2p::connect_endpoint(ep, machine, &[ALPN_MACHINE], offline).await?;
    let asked = async {
        let (mut send, mut recv) = conn.open_bi().await.map_err(|e| e.to_string())?;
        send.write_all(&[DESCRIBE])
            .await
            .map_err(|e| e.to_string())?;
        let _ = send.finish();
        recv.read_to_end(MAX_MESSAGE + 16)
            .await
            .map_err(|e| e.to_string())
    };
    let bytes = match tokio::time::timeout(DESCRIBE_TIMEOUT, asked).await {
        Ok(Ok(b)) => b,
        Ok(Err(e)) => {
            // A refusal (allowlist) closes the connection: say so rather than "reset".
            return Err(match conn.close_reason() {
                Some(r) => crate::p2p::closed_error(&peer, &r),
                None => fail(e),
            });
        }
        Err(_) => return Err(fail("the machine service did not answer".into())),
    };
    conn.close(0u32.into(), b"thanks");
    Machine::decode(&mut &bytes[..]).map_err(|e| fail(format!("bad answer: {e}")))
}

/// The P2P address of the service a [`Address::Service`] names.
pub async fn resolve(
    ep: &Endpoint,
    addr: &Address,
    offline: bool,
) -> Result<Address, TransportError> {
    let Address::Service {
        machine,
        direct,
        service,
    } = addr
    else {
        return Ok(addr.clone());
    };
    let m = describe(
        ep,
        &Address::P2p {
            id: *machine,
            direct: *direct,
        },
        offline,
    )
    .await?;
    let Some(s) = m.services.iter().find(|s| &s.name == service) else {
        let names: Vec<&str> = m.services.iter().map(|s| s.name.as_str()).collect();
        return Err(TransportError::Connect {
            peer: addr.to_string(),
            reason: format!(
                "machine {} has no service {service:?} (it has: {})",
                m.name,
                if names.is_empty() {
                    "none".to_string()
                } else {
                    names.join(", ")
                }
            ),
        });
    };
    let id = EndpointId::from_bytes(&s.endpoint_id).map_err(|e| TransportError::Connect {
        peer: addr.to_string(),
        reason: format!("the machine gave a bad endpoint id for {service}: {e}"),
    })?;
    let direct = match (direct, s.port) {
        (Some(d), port) if port != 0 => Some(SocketAddr::new(d.ip(), port)),
        _ => None,
    };
    Ok(Address::P2p { id, direct })
}
