//! `xoq can-server`, `xoq fake-can-server`, `xoq can-client`.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::Args;
use iroh::protocol::Router;
use xoq_client::can::{CanOptions, RemoteCanBus};
use xoq_server::can::CanServer;
use xoq_transport::Address;
use xoq_wire::can::{ALPN, CanFrame};
use xoq_wire::observe;

use super::common::{self, RelayTask, Running, ServerArgs, WriteArgs};

/// `xoq can-server IFACE[:fd]...`.
#[derive(Debug, Args)]
pub struct CanServerCmd {
    /// Interfaces: can0, can0:fd (CAN FD), virtual:NAME (in-process bus), sim:openarm
    /// (eight simulated Damiao motors).
    #[arg(required = true)]
    pub interfaces: Vec<String>,
    #[command(flatten)]
    pub safety: SafetyArgs,
    #[command(flatten)]
    pub server: ServerArgs,
}

/// Motor-safety and relay-write flags.
#[derive(Debug, Args, Clone, Default)]
pub struct SafetyArgs {
    /// Frames (cansend syntax, one per line, `#`/`;` comments) sent when the last
    /// controlling client (P2P or relay) leaves, when the deadman trips and when the server
    /// stops, e.g. Damiao disable per motor.
    #[arg(long)]
    pub on_disconnect: Option<PathBuf>,
    /// Send the on-disconnect frames when no controlling client sent a command for this
    /// many milliseconds (needs --on-disconnect).
    #[arg(long, value_name = "MS")]
    pub deadman: Option<u64>,
    /// Drop (and count) commands older than this many milliseconds when they reach the bus,
    /// or dated more than that in the future (judged on this server's clock; clients
    /// estimate it).
    #[arg(long, value_name = "MS")]
    pub max_cmd_age: Option<u64>,
    #[command(flatten)]
    pub writes: WriteArgs,
}

/// `xoq fake-can-server`: the simulated OpenArm.
#[derive(Debug, Args)]
pub struct FakeCanServerCmd {
    #[command(flatten)]
    pub safety: SafetyArgs,
    #[command(flatten)]
    pub server: ServerArgs,
}

/// Parse an on-disconnect file.
pub(crate) fn parse_frames(text: &str) -> anyhow::Result<Vec<CanFrame>> {
    text.lines()
        .enumerate()
        .map(|(i, l)| (i, l.trim()))
        .filter(|(_, l)| !l.is_empty() && !l.starts_with('#') && !l.starts_with(';'))
        .map(|(i, l)| CanFrame::from_candump(l).with_context(|| format!("line {}: {l:?}", i + 1)))
        .collect()
}

/// Stop a CAN server safely: on-disconnect frames on the bus first (bounded), clients told,
/// then the transports.
pub(super) async fn stop(running: Running<CanServer>) {
    running.server.stop(xoq_server::can::STOP_DRAIN).await;
    running.shutdown().await;
}

fn clean(iface: &str) -> String {
    iface.replace([':', '/'], "-")
}

pub(super) async fn start_one(
    iface: &str,
    safety: &SafetyArgs,
    server: &ServerArgs,
    moq_path: Option<String>,
) -> anyhow::Result<Running<CanServer>> {
    let on_disconnect = match &safety.on_disconnect {
        Some(p) => parse_frames(
            &std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))?,
        )?,
        None => Vec::new(),
    };
    anyhow::ensure!(
        safety.deadman.is_none() || !on_disconnect.is_empty(),
        "--deadman needs --on-disconnect <file>: the frames to send when it trips"
    );
    let writes = safety.writes.writes()?;
    let backend = xoq_device::can::backend(iface)?;
    let srv = CanServer::builder(backend)
        .on_disconnect(on_disconnect)
        .deadman(safety.deadman.map(Duration::from_millis))
        .max_cmd_age(safety.max_cmd_age.map(Duration::from_millis))
        .relay_writes(writes)
        .start()
        .await
        .with_context(|| format!("cannot serve {iface}"))?;
    let router = if server.no_p2p {
        None
    } else {
        let ep = server
            .endpoint(
                &format!("can-{}", clean(iface)),
                vec![ALPN.to_vec(), observe::CAN_ALPN.to_vec()],
            )
            .await?;
        // One handler for both: it tells a client from an observer by the ALPN.
        Some(
            Router::builder(ep)
                .accept(ALPN, srv.clone())
                .accept(observe::CAN_ALPN, srv.clone())
                .spawn(),
        )
    };
    let moq = match (&server.relay, moq_path) {
        (Some(relay), Some(path)) => Some(Address::moq(relay, &path)?),
        _ => None,
    };
    let relay = match &moq {
        Some(addr) => {
            let s = srv.clone();
            Some(RelayTask::spawn(
                addr,
                format!("CAN {iface}"),
                move |session, name| async move { Ok(s.serve_moq(&session, &name).await?) },
            )?)
        }
        None => None,
    };
    Ok(Running {
        server: srv,
        router,
        moq,
        relay,
    })
}

pub(super) async fn server(a: CanServerCmd) -> anyhow::Result<()> {
    if a.server.moq.is_some() && a.server.relay.is_none() {
        anyhow::bail!("--moq needs a relay: add --relay <url> (or set XOQ_RELAY)");
    }
    let mut running = Vec::new();
    for iface in &a.interfaces {
        // One endpoint (and id) per interface, so each address names exactly one bus.
        let path = a
            .server
            .relay
            .as_ref()
            .map(|_| match (&a.server.moq, a.interfaces.len()) {
                (Some(p), 1) => p.clone(),
                (Some(p), _) => format!("{}-{}", p.trim_end_matches('/'), clean(iface)),
                (None, _) => format!("anon/xoq-can-{}", clean(iface)),
            });
        running.push(start_one(iface, &a.safety, &a.server, path).await?);
    }
    let offline = a.server.p2p.offline();
    for r in &running {
        common::print_addresses(
            &format!("xoq can-server: serving {}", r.server.interface()),
            r.router.as_ref().map(|r| r.endpoint()),
            offline,
            r.moq.as_ref(),
            &[common::describe_writes(
                r.router.is_some(),
                r.moq.as_ref(),
                r.server.relay_writes(),
            )],
        );
    }
    common::shutdown_signal().await;
    // Motors first: every interface sends its on-disconnect frames at once.
    let mut stops = tokio::task::JoinSet::new();
    for r in running {
        stops.spawn(stop(r));
    }
    while stops.join_next().await.is_some() {}
    Ok(())
}

pub(super) async fn fake_server(a: FakeCanServerCmd) -> anyhow::Result<()> {
    server(CanServerCmd {
        interfaces: vec!["sim:openarm".into()],
        safety: a.safety,
        server: a.server,
    })
    .await
}

/// `xoq can-client ADDRESS`.
#[derive(Debug, Args)]
pub struct CanClientCmd {
    /// Server address: <id>, <id>@<ip>:<port> or <relay-url>/<path>.
    pub address: String,
    /// Frames to send first (cansend syntax: 123#DEADBEEF, 123##1DEADBEEF for FD+BRS).
    #[arg(long = "send", value_name = "FRAME")]
    pub send: Vec<String>,
    /// Send the --send frames again every this many milliseconds (a steady command stream,
    /// as a controller keeping a deadman fed would); a send while the link is down is
    /// reported and skipped, never queued.
    #[arg(long, value_name = "MS", requires = "send")]
    pub every: Option<u64>,
    /// Exit after printing this many frames.
    #[arg(long)]
    pub count: Option<usize>,
    /// Exit after this many seconds without a frame.
    #[arg(long)]
    pub timeout: Option<f64>,
    /// Also print the frames this client sends.
    #[arg(long)]
    pub own: bool,
    /// Client identity key (default $XOQ_KEY or ~/.config/xoq/client.key).
    #[arg(long)]
    pub key: Option<PathBuf>,
    /// No discovery (also XOQ_OFFLINE=1).
    #[arg(long)]
    pub offline: bool,
}

pub(super) async fn client(a: CanClientCmd) -> anyhow::Result<()> {
    let frames: Vec<CanFrame> = a
        .send
        .iter()
        .map(|s| CanFrame::from_candump(s).with_context(|| format!("--send {s}")))
        .collect::<anyhow::Result<_>>()?;
    let opts = CanOptions::new()
        .receive_own(a.own)
        .identity(common::client_identity(a.key.as_ref()))
        .offline(a.offline || xoq_transport::offline_from_env());
    let bus = RemoteCanBus::connect(&a.address, opts).await?;
    eprintln!(
        "connected to {} ({})",
        common::shown(&a.address),
        bus.interface()
    );
    if !frames.is_empty() {
        bus.send_batch(&frames).await?;
    }
    let bus = std::sync::Arc::new(bus);
    let repeater = a.every.map(|ms| {
        let (bus, frames) = (bus.clone(), frames.clone());
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(ms.max(1)));
            tick.tick().await;
            loop {
                tick.tick().await;
                if let Err(e) = bus.send_batch(&frames).await {
                    eprintln!("not sent: {e}");
                }
            }
        })
    });
    let mut printed = 0usize;
    loop {
        if a.count.is_some_and(|c| printed >= c) {
            break;
        }
        let next = match a.timeout {
            Some(t) => bus.recv_timeout(Duration::from_secs_f64(t)).await?,
            None => tokio::select! {
                f = bus.recv() => Some(f?),
                _ = common::shutdown_signal() => None,
            },
        };
        let Some(f) = next else { break };
        // candump -ta style: (seconds.micros) interface frame
        println!(
            "({}.{:06}) {} {}",
            f.timestamp_us / 1_000_000,
            f.timestamp_us % 1_000_000,
            bus.interface(),
            f.frame.to_candump()
        );
        printed += 1;
    }
    if let Some(r) = repeater {
        r.abort();
        let _ = r.await;
    }
    if let Ok(bus) = std::sync::Arc::try_unwrap(bus) {
        bus.close().await;
    }
    Ok(())
}

/// `xoq can-bridge ADDRESS --to vcan0`.
#[derive(Debug, Args)]
pub struct CanBridgeCmd {
    /// Server address: <id>, <id>@<ip>:<port> or <relay-url>/<path>.
    pub address: String,
    /// Local SocketCAN interface (e.g. vcan0, or vcan0:fd for CAN FD).
    #[arg(long)]
    pub to: String,
    /// Client identity key (default $XOQ_KEY or ~/.config/xoq/client.key).
    #[arg(long)]
    pub key: Option<PathBuf>,
    /// No discovery (also XOQ_OFFLINE=1).
    #[arg(long)]
    pub offline: bool,
}

/// Connect a remote bus to a local SocketCAN interface, both ways, so candump, cansend and
/// ROS drivers work unchanged on the local machine.
pub(super) async fn bridge(a: CanBridgeCmd) -> anyhow::Result<()> {
    use xoq_device::can::BusEvent;
    anyhow::ensure!(
        !a.to.starts_with("sim:") && !a.to.starts_with("virtual:"),
        "--to takes a SocketCAN interface such as vcan0 (create one: ip link add dev vcan0 type vcan && ip link set up vcan0)"
    );
    // One socket both ways: the kernel does not hand a socket its own frames, so what we
    // read is only what other local programs put on the interface (no echo loop).
    let xoq_device::can::OpenCan {
        mut rx,
        tx: mut local_tx,
        ..
    } = xoq_device::can::backend(&a.to)?.open()?;
    let opts = CanOptions::new()
        .identity(common::client_identity(a.key.as_ref()))
        .offline(a.offline || xoq_transport::offline_from_env());
    let bus = std::sync::Arc::new(RemoteCanBus::connect(&a.address, opts).await?);
    println!("xoq can-bridge: {} <-> {}", common::shown(&a.address), a.to);
    println!("ready");
    let remote = bus.clone();
    let mut to_local = tokio::spawn(async move {
        loop {
            let f = remote.recv().await?;
            // Busy (no ACK) or down: the backend already waited a back-off step; the frame
            // is dropped rather than sent late.
            if let Err(e) = local_tx.send(&f.frame).await {
                tracing::warn!("remote -> local: {e}");
            }
        }
        #[allow(unreachable_code)]
        Ok::<(), anyhow::Error>(())
    });
    loop {
        tokio::select! {
            r = &mut to_local => return r?,
            _ = common::shutdown_signal() => return Ok(()),
            ev = rx.recv() => match ev {
                // A frame that cannot go now (link down, refused) is reported and dropped:
                // a bridge must not die of one frame, nor send it late.
                Some(BusEvent::Frame(f)) => if let Err(e) = bus.send(&f.frame).await {
                    tracing::warn!("{} -> remote: {e}", a.to);
                },
                Some(BusEvent::State(_) | BusEvent::Down(_) | BusEvent::Up) => {}
                None => anyhow::bail!("{} stopped delivering frames", a.to),
            },
        }
    }
}
