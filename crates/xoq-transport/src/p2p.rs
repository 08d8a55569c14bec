//! iroh P2P endpoints: identity, offline mode, allowlists, dialing by address.

use std::collections::HashSet;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use iroh::endpoint::{
    AfterHandshakeOutcome, Connection, EndpointHooks, PortmapperConfig, QuicTransportConfig,
    VarInt, presets,
};
use iroh::{Endpoint, EndpointAddr, EndpointId, RelayMode, SecretKey};

use crate::{Address, TransportError};

/// QUIC application close code: the peer is not on the server's allowlist.
pub const CLOSE_NOT_ALLOWED: u32 = 403;
/// QUIC application close code: normal end of session.
pub const CLOSE_NORMAL: u32 = 0;

/// How long a silent peer is kept before its connection is declared dead. Short, because a
/// robot link that died must be noticed (and its device made safe) quickly; keep-alives keep
/// idle-but-healthy sessions open.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(6);
const KEEP_ALIVE: Duration = Duration::from_secs(1);

/// Endpoint ids allowed to connect. An empty list is not "nobody": use `None` for open access.
#[derive(Debug, Clone, Default)]
pub struct Allowlist(Arc<HashSet<EndpointId>>);

impl Allowlist {
    /// Allow exactly these ids.
    pub fn new(ids: impl IntoIterator<Item = EndpointId>) -> Self {
        Self(Arc::new(ids.into_iter().collect()))
    }

    /// Parse ids, one per line (blank lines and `#` comments ignored), as in `--allow-file`.
    pub fn parse(text: &str) -> Result<Vec<EndpointId>, TransportError> {
        text.lines()
            .map(|l| l.split('#').next().unwrap_or("").trim())
            .filter(|l| !l.is_empty())
            .map(parse_id)
            .collect()
    }

    /// Whether `id` may connect.
    pub fn contains(&self, id: &EndpointId) -> bool {
        self.0.contains(id)
    }

    /// Number of allowed ids.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether the list is empty.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// Parse an endpoint id (64 hex characters).
pub fn parse_id(s: &str) -> Result<EndpointId, TransportError> {
    match s.parse::<Address>()? {
        Address::P2p { id, direct: None } => Ok(id),
        _ => Err(TransportError::Address {
            input: s.to_string(),
            reason: "expected a bare endpoint id".into(),
        }),
    }
}

/// Refuses unlisted peers right after the TLS handshake, before any stream is accepted, so an
/// unlisted client never reaches a service.
#[derive(Debug)]
struct AllowHook(Allowlist);

impl EndpointHooks for AllowHook {
    async fn after_handshake<'a>(&'a self, conn: &'a Connection) -> AfterHandshakeOutcome {
        let peer = conn.remote_id();
        if self.0.contains(&peer) {
            AfterHandshakeOutcome::Accept
        } else {
            tracing::warn!(%peer, "refused a client that is not on the allowlist (--allow / --allow-file)");
            AfterHandshakeOutcome::Reject {
                error_code: VarInt::from_u32(CLOSE_NOT_ALLOWED),
                reason: b"not allowed: this endpoint id is not on the server's allowlist".to_vec(),
            }
        }
    }
}

/// Builder of an iroh endpoint configured the xoq way.
#[derive(Debug, Default)]
#[must_use]
pub struct EndpointBuilder {
    secret: Option<SecretKey>,
    bind: Option<SocketAddr>,
    offline: bool,
    alpns: Vec<Vec<u8>>,
    allow: Option<Allowlist>,
}

impl EndpointBuilder {
    /// A builder with a random identity, online discovery, no ALPNs (dial-only).
    pub fn new() -> Self {
        Self::default()
    }

    /// Use this identity (servers: from their key file, so their id is stable).
    pub fn secret_key(mut self, key: SecretKey) -> Self {
        self.secret = Some(key);
        self
    }

    /// Bind the UDP socket here (default: all interfaces, or 127.0.0.1 when offline).
    pub fn bind(mut self, addr: Option<SocketAddr>) -> Self {
        self.bind = addr;
        self
    }

    /// Offline: no discovery publishing or lookup, no relays, no port mapping. Peers must be
    /// dialled by `<id>@<ip>:<port>`.
    pub fn offline(mut self, offline: bool) -> Self {
        self.offline = offline;
        self
    }

    /// Protocols to accept (servers).
    pub fn alpns(mut self, alpns: Vec<Vec<u8>>) -> Self {
        self.alpns = alpns;
        self
    }

    /// Accept only these peers.
    pub fn allowlist(mut self, allow: Option<Allowlist>) -> Self {
        self.allow = allow;
        self
    }

    /// Bind the endpoint.
    pub async fn spawn(self) -> Result<Endpoint, TransportError> {
        let transport = QuicTransportConfig::builder()
            .max_idle_timeout(Some(
                IDLE_TIMEOUT
                    .try_into()
                    .map_err(|e| TransportError::Bind(format!("idle timeout: {e}")))?,
            ))
            .keep_alive_interval(KEEP_ALIVE)
            .build();
        let mut b = if self.offline {
            Endpoint::builder(presets::Minimal)
                .relay_mode(RelayMode::Disabled)
                .clear_address_lookup()
        } else {
            Endpoint::builder(presets::N0)
        };
        b = b
            .portmapper_config(PortmapperConfig::Disabled)
            .transport_config(transport)
            .alpns(self.alpns);
        let bind = match (self.bind, self.offline) {
            (Some(a), _) => Some(a),
            (None, true) => Some(SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 0)),
            (None, false) => None,
        };
        if let Some(addr) = bind {
            b = b
                .clear_ip_transports()
                .bind_addr(addr)
                .map_err(|e| TransportError::Bind(format!("{addr}: {e}")))?;
        }
        if let Some(key) = self.secret {
            b = b.secret_key(key);
        }
        if let Some(allow) = self.allow {
            b = b.hooks(AllowHook(allow));
        }
        b.bind()
            .await
            .map_err(|e| TransportError::Bind(e.to_string()))
    }
}

/// Every `<id>@<ip>:<port>` string a client can use to reach `ep`, plus the bare id first
/// when discovery is on.
pub fn client_addresses(ep: &Endpoint, offline: bool) -> Vec<String> {
    let id = ep.id();
    let mut out = Vec::new();
    if !offline {
        out.push(id.to_string());
    }
    let mut socks: Vec<SocketAddr> = Vec::new();
    for s in ep.bound_sockets() {
        if s.ip().is_unspecified() {
            // Bound to all interfaces: loopback always works; LAN addresses come from addr().
            let lo = match s {
                SocketAddr::V4(_) => IpAddr::V4(Ipv4Addr::LOCALHOST),
                SocketAddr::V6(_) => IpAddr::V6(std::net::Ipv6Addr::LOCALHOST),
            };
            socks.push(SocketAddr::new(lo, s.port()));
        } else {
            socks.push(s);
        }
    }
    socks.extend(ep.addr().ip_addrs().copied());
    let mut seen = HashSet::new();
    for s in socks {
        if seen.insert(s) {
            out.push(format!("{id}@{s}"));
        }
    }
    out
}

/// A client endpoint suited to reach `addr`: offline clients bind loopback when the target is
/// on loopback (tests never touch another interface), all interfaces otherwise.
pub async fn client_endpoint(
    key: Option<SecretKey>,
    addr: &Address,
    offline: bool,
) -> Result<Endpoint, TransportError> {
    let bind = match addr {
        Address::P2p {
            direct: Some(sock), ..
        }
        | Address::Service {
            direct: Some(sock), ..
        } if offline => Some(if sock.ip().is_loopback() {
            SocketAddr::new(sock.ip(), 0)
        } else if sock.is_ipv4() {
            SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), 0)
        } else {
            SocketAddr::new(IpAddr::V6(std::net::Ipv6Addr::UNSPECIFIED), 0)
        }),
        _ => None,
    };
    let mut b = EndpointBuilder::new().offline(offline).bind(bind);
    if let Some(k) = key {
        b = b.secret_key(k);
    }
    b.spawn().await
}

/// Dial a P2P address with `alpn`.
pub async fn connect(
    ep: &Endpoint,
    addr: &Address,
    alpn: &[u8],
    offline: bool,
) -> Result<Connection, TransportError> {
    connect_any(ep, addr, &[alpn], offline).await
}

/// Dial a P2P address offering several ALPNs (the server picks one; read it with
/// `Connection::alpn`). Used where the protocol version or codec is negotiated.
pub async fn connect_any(
    ep: &Endpoint,
    addr: &Address,
    alpns: &[&[u8]],
    offline: bool,
) -> Result<Connection, TransportError> {
    // A service by name: ask its machine which endpoint serves it, then dial that.
    let resolved;
    let addr = match addr {
        Address::Service { .. } => {
            resolved = crate::machine::resolve(ep, addr, offline).await?;
            &resolved
        }
        _ => addr,
    };
    connect_endpoint(ep, addr, alpns, offline).await
}

/// [`connect_any`] for an address that names an endpoint (no service to resolve).
pub(crate) async fn connect_endpoint(
    ep: &Endpoint,
    addr: &Address,
    alpns: &[&[u8]],
    offline: bool,
) -> Result<Connection, TransportError> {
    let Some((first, rest)) = alpns.split_first() else {
        return Err(TransportError::Connect {
            peer: addr.to_string(),
            reason: "no protocol to offer".into(),
        });
    };
    let Address::P2p { id, direct } = addr else {
        return Err(TransportError::Address {
            input: addr.to_string(),
            reason: "not a P2P address".into(),
        });
    };
    if offline && direct.is_none() {
        return Err(TransportError::Connect {
            peer: id.to_string(),
            reason: "offline mode has no discovery: use <endpoint-id>@<ip>:<port> (the server prints it)".into(),
        });
    }
    let mut ea = EndpointAddr::new(*id);
    if let Some(s) = direct {
        ea = ea.with_ip_addr(*s);
    }
    let fail = |reason: String| TransportError::Connect {
        peer: addr.to_string(),
        reason,
    };
    let opts = iroh::endpoint::ConnectOptions::new()
        .with_additional_alpns(rest.iter().map(|a| a.to_vec()).collect());
    ep.connect_with_opts(ea, first, opts)
        .await
        .map_err(|e| fail(e.to_string()))?
        .await
        .map_err(|e| fail(e.to_string()))
}

/// Turn a connection error into a clear transport error, recognising allowlist refusals.
pub fn closed_error(peer: &str, err: &iroh::endpoint::ConnectionError) -> TransportError {
    use iroh::endpoint::ConnectionError as CE;
    match err {
        CE::ApplicationClosed(close) if close.error_code == VarInt::from_u32(CLOSE_NOT_ALLOWED) => {
            TransportError::Refused {
                peer: peer.to_string(),
                reason: String::from_utf8_lossy(&close.reason).into_owned()
                    + ". Ask the server's operator to add your id (`xoq id`) with --allow",
            }
        }
        CE::TimedOut => TransportError::Connect {
            peer: peer.to_string(),
            reason: format!(
                "no answer for {}s: the server stopped or the network is down",
                IDLE_TIMEOUT.as_secs()
            ),
        },
        e => TransportError::Connect {
            peer: peer.to_string(),
            reason: e.to_string(),
        },
    }
}
