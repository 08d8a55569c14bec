//! `xoq relay`: the embedded moq-relay.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::Args;
use xoq_relay::RelayConfig;

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
    /// Verify tokens (moq-auth JWTs, `?jwt=` in a client's relay URL) signed by this key
    /// file (created 0600 if absent; mint tokens with `xoq token --key FILE`). Anonymous
    /// clients then get only what --auth-public* grants (nothing by default).
    #[arg(long, value_name = "FILE")]
    pub auth_key: Option<PathBuf>,
    /// Paths anonymous clients may publish and subscribe to (repeatable), as moq-relay's
    /// --auth-public. Default: anon/** without --auth-key, nothing with it.
    #[arg(long = "auth-public", value_name = "PATTERN")]
    pub auth_public: Vec<String>,
    /// Paths anonymous clients may only subscribe to (repeatable).
    #[arg(long = "auth-public-subscribe", value_name = "PATTERN")]
    pub auth_public_subscribe: Vec<String>,
    /// Paths anonymous clients may only publish to (repeatable).
    #[arg(long = "auth-public-publish", value_name = "PATTERN")]
    pub auth_public_publish: Vec<String>,
    /// Accepted like every command's `--offline` (also XOQ_OFFLINE=1): the relay never uses
    /// discovery or public relays in any mode, it only answers its own clients.
    #[arg(long)]
    pub offline: bool,
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
    if let Some(k) = &a.auth_key {
        cfg = cfg.auth_key(k.clone());
    }
    if !a.auth_public.is_empty() {
        cfg = cfg.public(patterns(a.auth_public.clone()));
    }
    cfg.public_subscribe(patterns(a.auth_public_subscribe.clone()))
        .public_publish(patterns(a.auth_public_publish.clone()))
}

pub(super) async fn run(a: RelayArgs) -> anyhow::Result<()> {
    let cfg = config(&a);
    let rules = cfg.describe();
    let open = !cfg.checks_tokens();
    let relay = cfg.start().await?;
    println!("xoq relay: listening on {} (QUIC + HTTP)", a.listen);
    println!("url: {}", relay.url());
    if let Some(fp) = relay.fingerprint() {
        println!("certificate sha256: {fp}");
    }
    for r in rules {
        println!("{r}");
    }
    if open {
        tracing::warn!(
            "this relay checks no tokens: anyone who reaches it may publish and subscribe under the public paths; use --auth-key on a network"
        );
    }
    println!("ready");
    tokio::select! {
        r = async { relay.wait().await } => r?,
        _ = super::common::shutdown_signal() => {}
    }
    Ok(())
}

/// `xoq token --key FILE [--publish P]... [--subscribe P]... [--expires D]`.
#[derive(Debug, Args)]
pub struct TokenArgs {
    /// The relay's key file (the one given to `xoq relay --auth-key`; created 0600 if absent).
    #[arg(long, value_name = "FILE")]
    pub key: PathBuf,
    /// A path this token may publish under (repeatable): a bare path means its subtree
    /// (`anon/arm` = `anon/arm/**`, which covers the writer broadcasts of that device);
    /// moq patterns with `*`/`**` are taken as written.
    #[arg(long, value_name = "PATTERN")]
    pub publish: Vec<String>,
    /// A path this token may subscribe to (repeatable), same syntax.
    #[arg(long, value_name = "PATTERN")]
    pub subscribe: Vec<String>,
    /// Lifetime, e.g. 30m, 12h, 7d (default: no expiry).
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub expires: Option<std::time::Duration>,
}

/// `90s`, `30m`, `12h`, `7d`, or plain seconds.
fn parse_duration(s: &str) -> Result<std::time::Duration, String> {
    let s = s.trim();
    let (num, unit) = match s.find(|c: char| !c.is_ascii_digit()) {
        Some(i) => s.split_at(i),
        None => (s, "s"),
    };
    let n: u64 = num
        .parse()
        .map_err(|_| format!("{s:?}: give a number and a unit, e.g. 30m, 12h, 7d"))?;
    let secs = match unit {
        "s" => n,
        "m" => n * 60,
        "h" => n * 3600,
        "d" => n * 86_400,
        _ => return Err(format!("{s:?}: the unit is s, m, h or d")),
    };
    Ok(std::time::Duration::from_secs(secs))
}

pub(super) fn token(a: TokenArgs) -> anyhow::Result<()> {
    anyhow::ensure!(
        !a.publish.is_empty() || !a.subscribe.is_empty(),
        "a token must grant something: give --publish <path> and/or --subscribe <path>"
    );
    let key = xoq_relay::auth::load_or_create_key(&a.key)?;
    println!(
        "{}",
        xoq_relay::auth::mint(&key, &a.publish, &a.subscribe, a.expires)?
    );
    Ok(())
}
