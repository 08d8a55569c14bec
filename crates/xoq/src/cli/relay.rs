//! `xoq relay`: the embedded moq-relay.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::Args;
use xoq_transport::relay::RelayConfig;

/// `xoq relay --listen 127.0.0.1:4443`.
#[derive(Debug, Args)]
pub struct RelayArgs {
    /// QUIC (UDP) and HTTP (TCP) address; both share the port.
    #[arg(long, default_value = "127.0.0.1:4443")]
    pub listen: SocketAddr,
    /// TLS certificate chain (PEM) for production; without it a self-signed development
    /// certificate is generated and clients use http:// URLs (fingerprint pinning).
    #[arg(long, requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// TLS private key (PEM).
    #[arg(long, requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// Paths anonymous clients may publish and subscribe to (repeatable), as moq-relay's
    /// --auth-public. Default: anon/**.
    #[arg(long = "auth-public", value_name = "PATTERN")]
    pub auth_public: Vec<String>,
    /// Paths anonymous clients may only subscribe to (repeatable).
    #[arg(long = "auth-public-subscribe", value_name = "PATTERN")]
    pub auth_public_subscribe: Vec<String>,
    /// Paths anonymous clients may only publish to (repeatable).
    #[arg(long = "auth-public-publish", value_name = "PATTERN")]
    pub auth_public_publish: Vec<String>,
}

/// Normalise moq-relay style prefixes: `anon` means `anon/**`.
fn patterns(v: Vec<String>) -> Vec<String> {
    v.into_iter()
        .map(|p| {
            if p.contains('*') || p.is_empty() {
                p
            } else {
                format!("{}/**", p.trim_end_matches('/'))
            }
        })
        .collect()
}

pub(super) fn config(a: &RelayArgs) -> RelayConfig {
    let mut cfg = RelayConfig::new(a.listen);
    if let (Some(c), Some(k)) = (&a.tls_cert, &a.tls_key) {
        cfg = cfg.tls(c.clone(), k.clone());
    }
    if !a.auth_public.is_empty() {
        cfg = cfg.public(patterns(a.auth_public.clone()));
    }
    cfg.public_subscribe(patterns(a.auth_public_subscribe.clone()))
        .public_publish(patterns(a.auth_public_publish.clone()))
}

pub(super) async fn run(a: RelayArgs) -> anyhow::Result<()> {
    let relay = config(&a).start().await?;
    println!("xoq relay: listening on {} (QUIC + HTTP)", a.listen);
    println!("url: {}", relay.url());
    if let Some(fp) = relay.fingerprint() {
        println!("certificate sha256: {fp}");
    }
    println!("ready");
    tokio::select! {
        r = async { relay.wait().await } => r?,
        _ = super::common::shutdown_signal() => {}
    }
    Ok(())
}
