//! Flags shared by servers and clients, and their wiring to the transport.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context;
use clap::Args;
use xoq_transport::p2p::{Allowlist, EndpointBuilder};
use xoq_transport::{Address, key};

/// `xoq id`.
#[derive(Debug, Args)]
pub struct IdArgs {
    /// Key file (created with mode 0600 if absent).
    #[arg(long, default_value_os_t = key::default_key_path("client"))]
    pub key: PathBuf,
}

pub(super) fn id(a: IdArgs) -> anyhow::Result<()> {
    let k = key::load_or_create(&a.key)?;
    println!("{}", k.public());
    Ok(())
}

/// P2P flags.
#[derive(Debug, Args, Clone)]
pub struct P2pArgs {
    /// Identity key file (created with mode 0600 if absent). Default: under $XOQ_HOME
    /// (~/.config/xoq), named after the device.
    #[arg(long)]
    pub key: Option<PathBuf>,
    /// UDP address of the P2P endpoint (default: all interfaces, random port; 127.0.0.1
    /// when offline).
    #[arg(long)]
    pub bind: Option<SocketAddr>,
    /// No iroh discovery, no public relays, no mDNS (also XOQ_OFFLINE=1). Clients must dial
    /// `<id>@<ip>:<port>`.
    #[arg(long)]
    pub offline: bool,
}

impl P2pArgs {
    /// Offline from the flag or the environment.
    pub fn offline(&self) -> bool {
        self.offline || xoq_transport::offline_from_env()
    }
}

/// Flags every server takes.
#[derive(Debug, Args, Clone)]
pub struct ServerArgs {
    /// P2P endpoint flags.
    #[command(flatten)]
    pub p2p: P2pArgs,
    /// MoQ relay URL to publish to, e.g. http://127.0.0.1:4443 (also XOQ_RELAY).
    #[arg(long, alias = "moq-relay", env = "XOQ_RELAY")]
    pub relay: Option<String>,
    /// Broadcast path on the relay, e.g. anon/xoq-serial.
    #[arg(long)]
    pub moq: Option<String>,
    /// Only this client endpoint id may connect (repeatable).
    #[arg(long = "allow", value_name = "ENDPOINT_ID")]
    pub allow: Vec<String>,
    /// File of allowed endpoint ids, one per line (`#` comments).
    #[arg(long)]
    pub allow_file: Option<PathBuf>,
    /// Do not serve P2P (MoQ only).
    #[arg(long)]
    pub no_p2p: bool,
}

impl ServerArgs {
    /// The allowlist, or `None` (with a warning) when anyone may connect.
    pub fn allowlist(&self) -> anyhow::Result<Option<Allowlist>> {
        let mut ids = Vec::new();
        for a in &self.allow {
            ids.push(xoq_transport::p2p::parse_id(a).with_context(|| format!("--allow {a}"))?);
        }
        if let Some(f) = &self.allow_file {
            let text = std::fs::read_to_string(f)
                .with_context(|| format!("reading --allow-file {}", f.display()))?;
            ids.extend(Allowlist::parse(&text).with_context(|| format!("in {}", f.display()))?);
        }
        if ids.is_empty() && self.allow.is_empty() && self.allow_file.is_none() {
            tracing::warn!(
                "no --allow list: anyone who knows this server's endpoint id can connect"
            );
            return Ok(None);
        }
        Ok(Some(Allowlist::new(ids)))
    }

    /// The MoQ address (relay + path) when both are given.
    pub fn moq_address(&self, default_path: &str) -> anyhow::Result<Option<Address>> {
        match (&self.relay, &self.moq) {
            (None, None) => Ok(None),
            (None, Some(_)) => anyhow::bail!(
                "--moq needs a relay: add --relay <url> (or set XOQ_RELAY); `xoq relay` runs one locally"
            ),
            (Some(r), p) => Ok(Some(Address::moq(r, p.as_deref().unwrap_or(default_path))?)),
        }
    }

    /// Bind the server's P2P endpoint with `alpns`.
    pub async fn endpoint(
        &self,
        key_name: &str,
        alpns: Vec<Vec<u8>>,
    ) -> anyhow::Result<iroh::Endpoint> {
        let key_path = self
            .p2p
            .key
            .clone()
            .unwrap_or_else(|| key::default_key_path(key_name));
        let secret = key::load_or_create(&key_path)?;
        let ep = EndpointBuilder::new()
            .secret_key(secret)
            .bind(self.p2p.bind)
            .offline(self.p2p.offline())
            .alpns(alpns)
            .allowlist(self.allowlist()?)
            .spawn()
            .await?;
        Ok(ep)
    }
}

/// Print the ready banner: the id and every address a client can paste. Tests and scripts
/// read the `id:` and `address:` lines.
pub(super) fn print_addresses(
    what: &str,
    ep: Option<&iroh::Endpoint>,
    offline: bool,
    moq: Option<&Address>,
) {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{what}");
    if let Some(ep) = ep {
        let _ = writeln!(out, "id: {}", ep.id());
        for a in xoq_transport::p2p::client_addresses(ep, offline) {
            let _ = writeln!(out, "address: {a}");
        }
    }
    if let Some(m) = moq {
        let _ = writeln!(out, "address: {m}");
    }
    let _ = writeln!(out, "ready");
    let _ = out.flush();
}

/// Client key: `--key`, else `$XOQ_HOME/client.key` (created 0600), so a client keeps one
/// identity that servers can put on their allowlist.
pub(super) fn client_key(path: Option<&PathBuf>) -> anyhow::Result<iroh::SecretKey> {
    let p = path
        .cloned()
        .or_else(|| std::env::var_os("XOQ_KEY").map(PathBuf::from))
        .unwrap_or_else(|| key::default_key_path("client"));
    Ok(key::load_or_create(&p)?)
}

/// Wait for Ctrl-C or SIGTERM.
pub(super) async fn shutdown_signal() {
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(s) => s,
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
            return;
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {},
        _ = term.recv() => {},
    }
}
