//! Flags shared by servers and clients, and their wiring to the transport.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context;
use clap::Args;
use xoq_transport::moq::{MoqSession, Redial, RelayStatus};
use xoq_transport::p2p::{Allowlist, EndpointBuilder};
use xoq_transport::{Address, key};

/// `xoq id`.
#[derive(Debug, Args)]
pub struct IdArgs {
    /// Key file (created with mode 0600 if absent). Default: $XOQ_KEY, else
    /// $XOQ_HOME/client.key: the identity every client (CLI, Rust, Python) uses.
    #[arg(long)]
    pub key: Option<PathBuf>,
}

pub(super) fn id(a: IdArgs) -> anyhow::Result<()> {
    let path = a
        .key
        .unwrap_or_else(xoq_client::link::Identity::user_key_path);
    let k = key::load_or_create(&path)?;
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
    /// MoQ relay URL to publish to, e.g. http://127.0.0.1:4443 (also XOQ_RELAY); a token
    /// goes in the URL (`?jwt=...`) or in XOQ_RELAY_TOKEN. The relay session starts in the
    /// background: P2P serves at once, whether or not the relay is reachable.
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
    notes: &[String],
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
    for n in notes {
        let _ = writeln!(out, "{n}");
    }
    let _ = writeln!(out, "ready");
    let _ = out.flush();
}

/// Client identity: `--key`, else the user's (`$XOQ_KEY`, else `$XOQ_HOME/client.key`,
/// created 0600), so a client keeps one identity that servers can put on their allowlist.
pub(super) fn client_identity(path: Option<&PathBuf>) -> xoq_client::Identity {
    match path {
        Some(p) => xoq_client::Identity::File(p.clone()),
        None => xoq_client::Identity::User,
    }
}

/// Whether relay writers may reach the device (`--moq-writes`), with the old flags refused
/// or mapped.
#[derive(Debug, Args, Clone, Default)]
pub struct WriteArgs {
    /// Commands through the relay: off (default: the relay side is read-only, only P2P
    /// clients write) or on (relay clients write too; put the relay behind tokens:
    /// `xoq relay --auth-key`).
    #[arg(long, value_parser = ["on", "off"], value_name = "off|on")]
    pub moq_writes: Option<String>,
    /// Old name of --moq-writes (CAN).
    #[arg(long, hide = true, value_parser = ["on", "off"])]
    pub moq_cmd: Option<String>,
    /// Removed: a cleartext token in every batch could be read and replayed by any relay
    /// subscriber.
    #[arg(long, hide = true, env = "XOQ_MOQ_CMD_TOKEN")]
    pub moq_cmd_token: Option<String>,
}

impl WriteArgs {
    /// Relay writes on or off.
    pub fn writes(&self) -> anyhow::Result<bool> {
        if self.moq_cmd_token.is_some() {
            anyhow::bail!(
                "--moq-cmd-token (XOQ_MOQ_CMD_TOKEN) was removed: any relay subscriber could read it and replay it. \
                 Run the relay with `xoq relay --auth-key FILE`, give writers a token from `xoq token --key FILE --publish <path>` \
                 (in their relay URL as ?jwt=...), and start this server with --moq-writes on"
            );
        }
        if let (Some(a), Some(b)) = (&self.moq_writes, &self.moq_cmd)
            && a != b
        {
            anyhow::bail!("--moq-writes {a} and --moq-cmd {b} disagree; use --moq-writes");
        }
        Ok(self
            .moq_writes
            .as_deref()
            .or(self.moq_cmd.as_deref())
            .is_some_and(|v| v == "on"))
    }
}

/// Which ways writes reach the device (a banner line), with a warning when relay writes are
/// on behind a relay URL without a token (this server cannot know whether that relay checks
/// tokens).
pub(super) fn describe_writes(p2p: bool, relay: Option<&Address>, writes: bool) -> String {
    let p2p = if p2p {
        "P2P clients (those on --allow, if given)"
    } else {
        "nobody over P2P (--no-p2p)"
    };
    match (relay, writes) {
        (Some(Address::Moq { relay, .. }), true) => {
            if !relay.has_token() {
                tracing::warn!(
                    "relay writes are on but {relay} was given no token: if that relay is open (no --auth-key), anyone who reaches it can drive this device"
                );
            }
            format!("writes: from {p2p} and relay writers (--moq-writes on)")
        }
        (Some(_), _) => {
            format!("writes: from {p2p}; the relay side is read-only (--moq-writes off)")
        }
        (None, _) => format!("writes: from {p2p}"),
    }
}

/// A server's relay bridge, running in the background: the session to the relay dials and
/// redials on its own, so the P2P side never waits for (or dies with) the relay.
pub(super) struct RelayTask(tokio::task::JoinHandle<()>);

impl RelayTask {
    /// Start serving `addr` with `serve` (which runs until the session ends for good).
    pub(super) fn spawn<F, Fut>(addr: &Address, what: String, serve: F) -> anyhow::Result<Self>
    where
        F: FnOnce(std::sync::Arc<MoqSession>, String) -> Fut + Send + 'static,
        Fut: std::future::Future<Output = anyhow::Result<()>> + Send + 'static,
    {
        let Address::Moq { relay, name } = addr else {
            anyhow::bail!("{addr} is not a relay address");
        };
        let session = std::sync::Arc::new(MoqSession::start(relay, Redial::Forever)?);
        let name = name.clone();
        let shown = relay.to_string();
        let mut status = session.status();
        let watch = tokio::spawn(async move {
            let mut was_up = false;
            loop {
                let st = status.borrow_and_update().clone();
                match st {
                    RelayStatus::Connected => {
                        if !was_up {
                            tracing::info!("{what}: relay {shown} connected");
                        }
                        was_up = true;
                    }
                    RelayStatus::Reconnecting => {
                        tracing::warn!(
                            "{what}: relay {shown} unreachable; retrying in the background (P2P is not affected)"
                        );
                        was_up = false;
                    }
                    RelayStatus::Connecting => {}
                    RelayStatus::Closed(r) => {
                        tracing::error!("{what}: relay {shown}: {r}");
                        return;
                    }
                }
                if status.changed().await.is_err() {
                    return;
                }
            }
        });
        let task = tokio::spawn(async move {
            let s = session.clone();
            if let Err(e) = serve(s, name).await {
                tracing::error!("relay bridge stopped: {e:#}");
            }
            watch.abort();
            if let Ok(s) = std::sync::Arc::try_unwrap(session) {
                s.close().await;
            }
        });
        Ok(Self(task))
    }

    fn stop(self) {
        self.0.abort();
    }
}

/// A server with its transports: P2P router and relay bridge. One shape for every service.
pub(super) struct Running<S> {
    /// The service.
    pub server: S,
    /// The P2P endpoint's router (`None` with --no-p2p).
    pub router: Option<iroh::protocol::Router>,
    /// The relay address it publishes to, if any.
    pub moq: Option<Address>,
    /// The relay bridge.
    pub relay: Option<RelayTask>,
}

impl<S> Running<S> {
    /// Stop the relay bridge and the P2P endpoint.
    pub(super) async fn shutdown(self) {
        if let Some(t) = self.relay {
            t.stop();
        }
        if let Some(r) = self.router {
            let _ = r.shutdown().await;
        }
    }
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

/// An address as it may be printed: parsed and shown without a relay token.
pub(super) fn shown(address: &str) -> String {
    address
        .parse::<Address>()
        .map(|a| a.to_string())
        .unwrap_or_else(|_| "<invalid address>".into())
}

/// A picture size written `WIDTHxHEIGHT` (`1280x720`).
pub(super) fn parse_size(s: &str) -> anyhow::Result<(u32, u32)> {
    let bad = || anyhow::anyhow!("size {s:?}: use WIDTHxHEIGHT, e.g. 1280x720");
    let (w, h) = s.split_once('x').ok_or_else(bad)?;
    Ok((
        w.trim().parse().map_err(|_| bad())?,
        h.trim().parse().map_err(|_| bad())?,
    ))
}
