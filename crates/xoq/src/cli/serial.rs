//! `xoq serial-server`, `xoq fake-serial-server`, `xoq serial-client`.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::Args;
use iroh::protocol::Router;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use xoq_client::serial::{RemoteSerial, SerialOptions};
use xoq_server::SerialServer;
use xoq_wire::observe;
use xoq_wire::serial::{ALPN, LineSettings};

use super::common::{self, RelayTask, Running, ServerArgs, WriteArgs};

/// `xoq serial-server PORT BAUD`.
#[derive(Debug, Args)]
pub struct ServerCmd {
    /// Device path (/dev/ttyUSB0), or sim:so101 (simulated SO-101 Feetech bus, ids 1-6),
    /// or sim:echo (loopback).
    pub port: String,
    /// Baud rate used until a client sets its own.
    #[arg(default_value_t = 1_000_000)]
    pub baud: u32,
    /// Let a new client take the port from the current one (newest wins) instead of
    /// refusing it with "port busy".
    #[arg(long)]
    pub takeover: bool,
    #[command(flatten)]
    pub writes: WriteArgs,
    #[command(flatten)]
    pub server: ServerArgs,
}

/// `xoq fake-serial-server`.
#[derive(Debug, Args)]
pub struct FakeServerCmd {
    /// Let a new client take the port from the current one.
    #[arg(long)]
    pub takeover: bool,
    #[command(flatten)]
    pub writes: WriteArgs,
    #[command(flatten)]
    pub server: ServerArgs,
}

pub(super) async fn fake_server(a: FakeServerCmd) -> anyhow::Result<()> {
    server(ServerCmd {
        port: "sim:so101".into(),
        baud: 1_000_000,
        takeover: a.takeover,
        writes: a.writes,
        server: a.server,
    })
    .await
}

pub(super) async fn start(a: &ServerCmd) -> anyhow::Result<Running<SerialServer>> {
    let default_path = format!(
        "anon/xoq-serial-{}",
        a.port
            .rsplit('/')
            .next()
            .unwrap_or("port")
            .replace(':', "-")
    );
    let moq_addr = a.server.moq_address(&default_path)?;
    let writes = a.writes.writes()?;
    let backend = xoq_device::serial::backend(&a.port)?;
    let server = SerialServer::builder(backend)
        .settings(LineSettings::new(a.baud))
        .takeover(a.takeover)
        .relay_writes(writes)
        .start()
        .await
        .with_context(|| format!("cannot serve {}", a.port))?;
    let router = if a.server.no_p2p {
        None
    } else {
        let ep = a
            .server
            .endpoint(
                &format!("serial-{}", a.port),
                vec![ALPN.to_vec(), observe::SERIAL_ALPN.to_vec()],
            )
            .await?;
        // One handler for both: it tells a controller from an observer by the ALPN.
        Some(
            Router::builder(ep)
                .accept(ALPN, server.clone())
                .accept(observe::SERIAL_ALPN, server.clone())
                .spawn(),
        )
    };
    let relay = match &moq_addr {
        Some(addr) => {
            let srv = server.clone();
            Some(RelayTask::spawn(
                addr,
                format!("serial {}", a.port),
                move |session, name| async move { Ok(srv.serve_moq(&session, &name).await?) },
            )?)
        }
        None => None,
    };
    Ok(Running {
        server,
        router,
        moq: moq_addr,
        relay,
    })
}

pub(super) async fn server(a: ServerCmd) -> anyhow::Result<()> {
    let running = start(&a).await?;
    let offline = a.server.p2p.offline();
    common::print_addresses(
        &format!(
            "xoq serial-server: serving {} at {} baud",
            running.server.port_name(),
            a.baud
        ),
        running.router.as_ref().map(|r| r.endpoint()),
        offline,
        running.moq.as_ref(),
        &[common::describe_writes(
            running.router.is_some(),
            running.moq.as_ref(),
            running.server.relay_writes(),
        )],
    );
    common::shutdown_signal().await;
    running.shutdown().await;
    Ok(())
}

/// `xoq serial-client ADDRESS`.
#[derive(Debug, Args)]
pub struct ClientCmd {
    /// Server address: <id>, <id>@<ip>:<port> or <relay-url>/<path>.
    pub address: String,
    /// Baud rate to set on the remote port (default: keep the port's).
    #[arg(long)]
    pub baud: Option<u32>,
    /// Client identity key (default $XOQ_KEY or ~/.config/xoq/client.key).
    #[arg(long)]
    pub key: Option<PathBuf>,
    /// No discovery (also XOQ_OFFLINE=1).
    #[arg(long)]
    pub offline: bool,
    /// After stdin ends, keep printing replies for this many seconds.
    #[arg(long, default_value_t = 1.0)]
    pub linger: f64,
}

pub(super) async fn client(a: ClientCmd) -> anyhow::Result<()> {
    let mut opts = match a.baud {
        Some(b) => SerialOptions::new(b),
        None => SerialOptions::keep_settings(),
    };
    opts = opts
        .identity(common::client_identity(a.key.as_ref()))
        .offline(a.offline || xoq_transport::offline_from_env())
        .client_name("serial-client");
    let port = std::sync::Arc::new(RemoteSerial::connect(&a.address, opts).await?);
    eprintln!(
        "connected to {} ({})",
        common::shown(&a.address),
        port.port_name()
    );
    let p2 = port.clone();
    let to_stdout = tokio::spawn(async move {
        let mut out = tokio::io::stdout();
        let mut buf = vec![0u8; 16 * 1024];
        loop {
            match p2.read(&mut buf).await {
                Ok(n) => {
                    if out.write_all(&buf[..n]).await.is_err() || out.flush().await.is_err() {
                        return Ok(());
                    }
                }
                Err(e) => return Err(e),
            }
        }
    });
    let mut stdin = tokio::io::stdin();
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        tokio::select! {
            r = stdin.read(&mut buf) => {
                let n = r.context("reading stdin")?;
                if n == 0 { break; }
                port.write(&buf[..n]).await?;
            }
            _ = common::shutdown_signal() => { to_stdout.abort(); return Ok(()); }
        }
    }
    tokio::select! {
        r = to_stdout => { r??; }
        _ = tokio::time::sleep(Duration::from_secs_f64(a.linger.max(0.0))) => {}
    }
    if let Ok(p) = std::sync::Arc::try_unwrap(port) {
        p.close().await;
    }
    Ok(())
}
