//! `xoq bench link`: the serial and CAN bridges on impaired links, against the raw QUIC path
//! measured through the same impaired link in the same run.
//!
//! This kernel has no netem, so delay and loss come from xoq-netsim's user-space forwarder.
//! iroh would go around a forwarder (each side advertises its real address and multipath
//! prefers the unimpaired direct path), so the run happens in a private network namespace
//! (the command re-executes itself there; root needed) where the server binds `127.0.0.2`,
//! the forwarder's upstream sockets bind `127.0.0.3`, and nftables drops every packet to or
//! from the server that does not go through the forwarder. The forwarder's counters are
//! checked after each cell, so a bypass fails loudly instead of printing loopback figures.
//!
//! Per cell (RTT × loss), fresh connections through a fresh forwarder, and the three round
//! trips interleaved one by one so they see the same link and the same background load:
//! - raw: 64 B echo on one bidirectional iroh stream (the floor: the best the path can do);
//! - serial: 64 B written to a simulated echo port and read back through the serial bridge;
//! - CAN: a command to a simulated Damiao motor and its reply through the CAN bridge.
//!
//! Then the time to resume after silent outages, and the camera under a bandwidth cap
//! (`tc tbf` on `lo`; direct P2P, because a forwarder would cross the capped device twice).

use std::ffi::OsString;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::process::Stdio;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};
use clap::Args;
use iroh::endpoint::{Connection, RecvStream, SendStream};
use iroh::protocol::Router;
use xoq_client::camera::{CameraOptions, RemoteCamera};
use xoq_client::can::{CanOptions, RemoteCanBus};
use xoq_client::serial::{RemoteSerial, SerialOptions};
use xoq_device::can::SimCanBackend;
use xoq_netsim::nft::{self, Nft};
use xoq_netsim::{Forwarder, Impairment, netns};
use xoq_server::SerialServer;
use xoq_server::camera::CameraServer;
use xoq_server::can::CanServer;
use xoq_transport::p2p::EndpointBuilder;
use xoq_wire::camera::Codec;
use xoq_wire::can::{ALPN as CAN_ALPN, CanFrame};
use xoq_wire::damiao::{MotorModel, encode_mit};
use xoq_wire::serial::ALPN as SERIAL_ALPN;

use super::common::print_process_figures;
use super::common::{BENCH_ALPN, EchoHandler, cpu_seconds, summarize};

/// The server's address inside the namespace.
pub(super) const SERVER_IP: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 2);
/// The forwarder's upstream address: the only source the server accepts.
pub(super) const FORWARDER_IP: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 3);
/// Round-trip size.
const SIZE: usize = 64;
/// The command sent to the simulated motor 0x07 (a DM4310); it answers on 0x17.
const MOTOR_ID: u32 = 0x07;
const REPLY_ID: u32 = 0x17;
/// One measured round trip waiting longer than this is an error, not a figure.
const RTT_LIMIT: Duration = Duration::from_secs(30);

/// `xoq bench link`.
#[derive(Debug, Args)]
pub struct LinkArgs {
    /// Round trips per cell, each of raw, serial and CAN (plus 10 % warm-up).
    #[arg(long, default_value_t = 200)]
    count: usize,
    /// Round-trip times to add, ms, comma-separated (0: loopback through the forwarder).
    #[arg(long, default_value = "0,20,50,100")]
    rtts: String,
    /// Packet loss, % in each direction, comma-separated.
    #[arg(long, default_value = "0,1,5")]
    losses: String,
    /// Silent outages to resume from, seconds, comma-separated ("" to skip).
    #[arg(long, default_value = "2,10")]
    outages: String,
    /// Round-trip time of the link the outages are cut on, ms.
    #[arg(long, default_value_t = 50)]
    outage_rtt: u64,
    /// Loss of the link the outages are cut on, % in each direction.
    #[arg(long, default_value_t = 1.0)]
    outage_loss: f64,
    /// Runs per outage length. Run n of N lasts n/N s longer: where the heal falls in the
    /// retransmission and redial timers (1 s apart) decides the figure, and outages of one
    /// exact length would all hit the same phase.
    #[arg(long, default_value_t = 3)]
    repeats: usize,
    /// Camera picture sizes for the bandwidth-cap rows, comma-separated ("" to skip).
    #[arg(long, default_value = "640x480,1280x720,1920x1080")]
    camera_sizes: String,
    /// Camera frame rate.
    #[arg(long, default_value_t = 30)]
    fps: u32,
    /// Seconds measured per camera row.
    #[arg(long, default_value_t = 4.0)]
    camera_seconds: f64,
    /// Bandwidth cap for the camera rows, Mbit/s.
    #[arg(long, default_value_t = 5.0)]
    cap_mbit: f64,
    /// Seed of the forwarder's random loss.
    #[arg(long, default_value_t = 1)]
    seed: u64,
}

fn parse_list<T: std::str::FromStr>(what: &str, s: &str) -> anyhow::Result<Vec<T>>
where
    T::Err: std::fmt::Display,
{
    s.split(',')
        .map(str::trim)
        .filter(|x| !x.is_empty())
        .map(|x| {
            x.parse::<T>()
                .map_err(|e| anyhow::anyhow!("{what}: {x:?}: {e}"))
        })
        .collect()
}

/// "measured on <cpu>, <n> cores", from /proc/cpuinfo.
pub(super) fn cpu_line() -> String {
    let info = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = info
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            matches!(k.trim(), "model name" | "Hardware" | "Model" | "cpu model")
                .then(|| v.trim().to_string())
        })
        .unwrap_or_else(|| "an unknown CPU".into());
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    format!("measured on {model}, {cores} cores")
}

pub(super) fn build_line() -> &'static str {
    if cfg!(debug_assertions) {
        "build: debug (use --release for real figures)"
    } else {
        "build: release"
    }
}

/// Fails with the reason when this machine cannot run a bench in a private network namespace.
pub(super) fn check_isolation(what: &str) -> anyhow::Result<()> {
    if let Err(why) = netns::available().and_then(|()| nft::available()) {
        bail!(
            "{what} needs a private network namespace and nftables (root), so that iroh cannot go around the impaired link: {why}"
        );
    }
    Ok(())
}

/// Runs `xoq <args>` again in a new private network namespace (as root), with `envs`, its
/// output going to ours. The bench cannot run without one: an error says why.
pub(super) async fn run_isolated(
    args: &[OsString],
    envs: &[(&str, String)],
    what: &str,
) -> anyhow::Result<()> {
    check_isolation(what)?;
    let exe = std::env::current_exe().context("locating the xoq binary")?;
    let mut cmd = std::process::Command::new(&exe);
    cmd.args(args)
        .envs(envs.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::null());
    // Per-connection info lines would break up the tables; warnings (link down) still show.
    if std::env::var_os("XOQ_LOG").is_none() && std::env::var_os("RUST_LOG").is_none() {
        cmd.env("XOQ_LOG", "warn");
    }
    netns::isolate_command(&mut cmd);
    let status = tokio::process::Command::from(cmd)
        .status()
        .await
        .with_context(|| format!("re-running {} in a network namespace", exe.display()))?;
    ensure!(
        status.success(),
        "{what}: the isolated run failed ({status})"
    );
    Ok(())
}

/// This process's arguments after the program name.
pub(super) fn own_args() -> Vec<OsString> {
    std::env::args_os().skip(1).collect()
}

/// Inside the namespace: `lo` up, and the rule that keeps iroh on the forwarder.
pub(super) fn enter_namespace() -> anyhow::Result<Nft> {
    let out = std::process::Command::new("ip")
        .args(["link", "set", "lo", "up"])
        .output()
        .context("running `ip link set lo up`")?;
    ensure!(
        out.status.success(),
        "`ip link set lo up` failed: {}",
        String::from_utf8_lossy(&out.stderr).trim()
    );
    let iso = Nft::new("xoq_bench_iso")?;
    iso.isolate(IpAddr::V4(SERVER_IP), IpAddr::V4(FORWARDER_IP))?;
    Ok(iso)
}

/// An impairment of `rtt` (half each way) and `loss` % in each direction.
fn link(rtt_ms: u64, loss: f64) -> Impairment {
    Impairment::none()
        .with_delay(Duration::from_micros(rtt_ms * 500))
        .with_loss(loss)
}

/// A forwarder to `target` whose upstream sockets are the only ones the server accepts.
pub(super) fn forwarder(
    target: SocketAddr,
    seed: u64,
    to_server: Impairment,
    to_client: Impairment,
) -> anyhow::Result<Forwarder> {
    Ok(Forwarder::builder(target)
        .upstream_ip(IpAddr::V4(FORWARDER_IP))
        .seed(seed)
        .impairment(xoq_netsim::Direction::ToServer, to_server)
        .impairment(xoq_netsim::Direction::ToClient, to_client)
        .start()?)
}

/// One endpoint on the server address serving the raw echo, the serial echo and the
/// simulated motors.
struct Servers {
    router: Router,
    id: iroh::EndpointId,
    sock: SocketAddr,
    can: CanServer,
}

async fn servers() -> anyhow::Result<Servers> {
    let serial = SerialServer::builder(xoq_device::serial::backend("sim:echo")?)
        .start()
        .await?;
    let can = CanServer::builder(Box::new(SimCanBackend::openarm("sim:openarm")))
        .start()
        .await?;
    let ep = EndpointBuilder::new()
        .offline(true)
        .bind(Some(SocketAddr::new(IpAddr::V4(SERVER_IP), 0)))
        .alpns(vec![
            BENCH_ALPN.to_vec(),
            SERIAL_ALPN.to_vec(),
            CAN_ALPN.to_vec(),
        ])
        .spawn()
        .await?;
    let id = ep.id();
    let sock = ep.bound_sockets()[0];
    let router = Router::builder(ep)
        .accept(BENCH_ALPN, EchoHandler)
        .accept(SERIAL_ALPN, serial)
        .accept(CAN_ALPN, can.clone())
        .spawn();
    Ok(Servers {
        router,
        id,
        sock,
        can,
    })
}

/// The three clients of one link.
struct Clients {
    raw_conn: Connection,
    raw_ep: iroh::Endpoint,
    raw: (SendStream, RecvStream),
    serial: Arc<RemoteSerial>,
    can: Arc<RemoteCanBus>,
}

impl Clients {
    async fn connect(addr: &str) -> anyhow::Result<Self> {
        let a: xoq_transport::Address = addr.parse()?;
        let raw_ep = xoq_transport::p2p::client_endpoint(None, &a, true).await?;
        let raw_conn = xoq_transport::p2p::connect(&raw_ep, &a, BENCH_ALPN, true).await?;
        let raw = raw_conn.open_bi().await?;
        let serial = RemoteSerial::connect(
            addr,
            SerialOptions::keep_settings().offline(true).ephemeral(),
        )
        .await
        .context("serial client")?;
        let can = RemoteCanBus::connect(addr, CanOptions::new().offline(true).ephemeral())
            .await
            .context("CAN client")?;
        Ok(Self {
            raw_conn,
            raw_ep,
            raw,
            serial: Arc::new(serial),
            can: Arc::new(can),
        })
    }

    async fn close(self) {
        self.raw_conn.close(0u32.into(), b"done");
        self.raw_ep.close().await;
        if let Ok(s) = Arc::try_unwrap(self.serial) {
            s.close().await;
        }
        if let Ok(c) = Arc::try_unwrap(self.can) {
            c.close().await;
        }
    }
}

fn motor_command() -> anyhow::Result<CanFrame> {
    Ok(CanFrame::new(
        MOTOR_ID,
        encode_mit(MotorModel::DM4310, 0.0, 0.0, 0.0, 0.0, 0.0).to_vec(),
    )?)
}

async fn raw_round_trip(
    (send, recv): &mut (SendStream, RecvStream),
    payload: &[u8],
    buf: &mut [u8],
) -> anyhow::Result<Duration> {
    let t = Instant::now();
    send.write_all(payload).await?;
    tokio::time::timeout(RTT_LIMIT, recv.read_exact(buf))
        .await
        .context("raw echo timed out")??;
    Ok(t.elapsed())
}

async fn serial_round_trip(
    port: &RemoteSerial,
    payload: &[u8],
    buf: &mut [u8],
) -> anyhow::Result<Duration> {
    let t = Instant::now();
    port.write(payload).await?;
    let mut got = 0;
    while got < payload.len() {
        got += tokio::time::timeout(RTT_LIMIT, port.read(&mut buf[got..payload.len()]))
            .await
            .context("serial echo timed out")??;
    }
    let d = t.elapsed();
    ensure!(buf[..payload.len()] == *payload, "serial echo corrupted");
    Ok(d)
}

async fn can_round_trip(bus: &RemoteCanBus, cmd: &CanFrame) -> anyhow::Result<Duration> {
    let t = Instant::now();
    bus.send(cmd).await?;
    loop {
        let f = bus
            .recv_timeout(RTT_LIMIT)
            .await?
            .context("motor reply timed out")?;
        if f.frame.id == REPLY_ID {
            return Ok(t.elapsed());
        }
    }
}

/// The three paths of a cell, in table order.
const PATHS: [&str; 3] = ["raw iroh (link RTT)", "serial", "CAN"];

/// One cell's figures.
struct Cell {
    rtt_ms: u64,
    loss: f64,
    /// Round trips of raw, serial, CAN.
    samples: [Vec<Duration>; 3],
    /// Packets through the forwarder per round trip of each path alone (to server, to
    /// client); measured on loss-free cells only.
    packets: Option<[(f64, f64); 3]>,
}

impl Cell {
    /// The link's own RTT: the raw path's median.
    fn link_rtt(&self) -> Duration {
        summarize(self.samples[0].clone()).p50
    }
}

/// One round trip of path `k` (0 raw, 1 serial, 2 CAN).
async fn round_trip(
    c: &mut Clients,
    k: usize,
    payload: &[u8],
    buf: &mut [u8],
    cmd: &CanFrame,
) -> anyhow::Result<Duration> {
    match k {
        0 => raw_round_trip(&mut c.raw, payload, buf).await,
        1 => serial_round_trip(&c.serial, payload, buf).await,
        _ => can_round_trip(&c.can, cmd).await,
    }
}

async fn cell(
    s: &Servers,
    rtt_ms: u64,
    loss: f64,
    count: usize,
    seed: u64,
) -> anyhow::Result<Cell> {
    let imp = link(rtt_ms, loss);
    let fw = forwarder(s.sock, seed, imp.clone(), imp)?;
    let addr = format!("{}@{}", s.id, fw.local_addr());
    let mut c = Clients::connect(&addr).await?;
    let payload: Vec<u8> = (0..SIZE).map(|i| i as u8).collect();
    let mut buf = vec![0u8; SIZE];
    let cmd = motor_command()?;
    let mut samples: [Vec<Duration>; 3] = Default::default();
    for i in 0..count + count / 10 {
        for (k, v) in samples.iter_mut().enumerate() {
            let d = round_trip(&mut c, k, &payload, &mut buf, &cmd).await?;
            // The first 10 % warm up congestion windows, RTT estimates and caches.
            if i >= count / 10 {
                v.push(d);
            }
        }
    }
    let st = fw.stats();
    // Every round trip is at least one packet each way; fewer means a path around the link.
    let least = 3 * (count + count / 10) as u64;
    ensure!(
        st.to_server.forwarded_packets >= least && st.to_client.forwarded_packets >= least,
        "traffic went around the forwarder ({st:?}): the figures would be loopback's"
    );
    if loss > 0.0 {
        ensure!(
            st.to_server.lost + st.to_client.lost > 0,
            "the link lost nothing at {loss} %: {st:?}"
        );
    }
    // Loss exposure: how many packets a round trip of each path puts on the link. Each path
    // alone, then a pause for trailing (delayed) ACKs; the clients' 1 Hz probes add a little.
    let packets = if loss == 0.0 {
        let n = (count / 10).max(10);
        let settle = Duration::from_millis(2 * rtt_ms + 60);
        let mut per = [(0.0, 0.0); 3];
        for (k, p) in per.iter_mut().enumerate() {
            tokio::time::sleep(settle).await;
            let before = fw.stats();
            for _ in 0..n {
                round_trip(&mut c, k, &payload, &mut buf, &cmd).await?;
            }
            tokio::time::sleep(settle).await;
            let after = fw.stats();
            *p = (
                (after.to_server.forwarded_packets - before.to_server.forwarded_packets) as f64
                    / n as f64,
                (after.to_client.forwarded_packets - before.to_client.forwarded_packets) as f64
                    / n as f64,
            );
        }
        Some(per)
    } else {
        None
    };
    c.close().await;
    fw.shutdown();
    Ok(Cell {
        rtt_ms,
        loss,
        samples,
        packets,
    })
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// Share of `v` over `limit`, %.
fn share_over(v: &[Duration], limit: Duration) -> f64 {
    100.0 * v.iter().filter(|d| **d > limit).count() as f64 / v.len().max(1) as f64
}

fn print_cells(cells: &[Cell]) {
    println!(
        "| RTT ms | loss % | path | p50 ms | p99 ms | p50 / link RTT | p99 / link RTT | over 2x link RTT |"
    );
    println!("|---:|---:|---|---:|---:|---:|---:|---:|");
    for c in cells {
        let base = c.link_rtt();
        for (k, v) in c.samples.iter().enumerate() {
            let l = summarize(v.clone());
            println!(
                "| {} | {} | {} | {:.3} | {:.3} | {:.2}x | {:.2}x | {:.1} % |",
                c.rtt_ms,
                c.loss,
                PATHS[k],
                ms(l.p50),
                ms(l.p99),
                ms(l.p50) / ms(base),
                ms(l.p99) / ms(base),
                share_over(v, base * 2)
            );
        }
    }
}

fn print_packets(cells: &[Cell]) {
    let rows: Vec<&Cell> = cells.iter().filter(|c| c.packets.is_some()).collect();
    if rows.is_empty() {
        return;
    }
    println!();
    println!(
        "packets through the forwarder per round trip, each path alone, loss-free cells (to server + to client; ACK-only packets included)"
    );
    println!();
    println!("| RTT ms | {} | {} | {} |", PATHS[0], PATHS[1], PATHS[2]);
    println!("|---:|---:|---:|---:|");
    for c in rows {
        if let Some(p) = c.packets {
            let f = |(a, b): (f64, f64)| format!("{a:.2} + {b:.2}");
            println!("| {} | {} | {} | {} |", c.rtt_ms, f(p[0]), f(p[1]), f(p[2]));
        }
    }
}

/// Completion times of round trips, shared between a prober and the bench.
type Marks = Arc<Mutex<Vec<Instant>>>;

fn mark(marks: &Marks) {
    if let Ok(mut m) = marks.lock() {
        m.push(Instant::now());
    }
}

fn first_after(marks: &Marks, t: Instant) -> Option<Duration> {
    marks.lock().ok()?.iter().find(|m| **m >= t).map(|m| *m - t)
}

/// Counts echoes in a byte stream: each write is 64 copies of its own marker byte, so 64 equal
/// bytes in a row are one complete echo, whichever write it answers (across a reconnect the
/// echo of a write sent into the dead session never comes, and a partial one is not counted).
#[derive(Default)]
struct EchoCounter {
    last: u8,
    run: usize,
}

impl EchoCounter {
    /// Feeds received bytes; the number of echoes they completed.
    fn feed(&mut self, bytes: &[u8]) -> usize {
        let mut done = 0;
        for &b in bytes {
            if b == self.last {
                self.run += 1;
            } else {
                self.last = b;
                self.run = 1;
            }
            if self.run == SIZE {
                done += 1;
                self.run = 0;
                // The next write has another marker: a stray equal byte never counts.
                self.last = 0;
            }
        }
        done
    }
}

/// Markers 1..=250 in turn (never 0, the counter's reset value).
fn next_marker(m: &mut u8) -> u8 {
    *m = if *m >= 250 { 1 } else { *m + 1 };
    *m
}

/// The pace of the probers: a control loop starting a round trip every 20 ms (50 Hz),
/// answered or not, so the first round trip after a heal is not held back by the prober.
const PROBE_EVERY: Duration = Duration::from_millis(20);

fn probe_ticker() -> tokio::time::Interval {
    let mut tick = tokio::time::interval(PROBE_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    tick
}

/// Serial: 64 B written every 20 ms; every complete echo read is marked.
async fn serial_prober(port: Arc<RemoteSerial>, marks: Marks) {
    let reader = async {
        let mut counter = EchoCounter::default();
        let mut buf = vec![0u8; 4096];
        loop {
            match port.read(&mut buf).await {
                Ok(n) => {
                    for _ in 0..counter.feed(&buf[..n]) {
                        mark(&marks);
                    }
                }
                Err(_) => tokio::time::sleep(PROBE_EVERY).await,
            }
        }
    };
    let writer = async {
        let mut tick = probe_ticker();
        let mut marker = 0u8;
        loop {
            tick.tick().await;
            // Waits while the link is down (reconnecting); the ticker then skips ahead.
            let _ = port.write(&[next_marker(&mut marker); SIZE]).await;
        }
    };
    tokio::join!(reader, writer);
}

/// CAN: a motor command every 20 ms; every reply is marked.
async fn can_prober(bus: Arc<RemoteCanBus>, marks: Marks) {
    let Ok(cmd) = motor_command() else { return };
    let reader = async {
        loop {
            match bus.recv().await {
                Ok(f) if f.frame.id == REPLY_ID => mark(&marks),
                Ok(_) => {}
                Err(_) => tokio::time::sleep(PROBE_EVERY).await,
            }
        }
    };
    let writer = async {
        let mut tick = probe_ticker();
        loop {
            tick.tick().await;
            // Fails at once while the link is down: nothing is queued for later.
            let _ = bus.send(&cmd).await;
        }
    };
    tokio::join!(reader, writer);
}

/// The raw stream: no reconnection, so it shows what QUIC alone does across the outage.
/// Returns why it ended.
async fn raw_prober((mut send, mut recv): (SendStream, RecvStream), marks: Marks) -> String {
    let reader = async {
        let mut counter = EchoCounter::default();
        let mut buf = vec![0u8; 4096];
        loop {
            match recv.read(&mut buf).await {
                Ok(Some(n)) => {
                    for _ in 0..counter.feed(&buf[..n]) {
                        mark(&marks);
                    }
                }
                Ok(None) => return "lost (stream ended)".to_string(),
                Err(e) => return format!("lost ({e})"),
            }
        }
    };
    let writer = async {
        let mut tick = probe_ticker();
        let mut marker = 0u8;
        loop {
            tick.tick().await;
            if let Err(e) = send.write_all(&[next_marker(&mut marker); SIZE]).await {
                return format!("lost ({e})");
            }
        }
    };
    tokio::select! {
        why = reader => why,
        why = writer => why,
    }
}

struct Resume {
    serial: Option<Duration>,
    can: Option<Duration>,
    raw: Result<Duration, String>,
    serial_reconnected: bool,
    can_reconnected: bool,
}

/// Cut the link silently for `outage`, heal it, and time the first round trip completed after.
async fn resume(s: &Servers, a: &LinkArgs, outage: f64, seed: u64) -> anyhow::Result<Resume> {
    let imp = link(a.outage_rtt, a.outage_loss);
    let fw = forwarder(s.sock, seed, imp.clone(), imp)?;
    let addr = format!("{}@{}", s.id, fw.local_addr());
    let c = Clients::connect(&addr).await?;
    let (sm, cm, rm): (Marks, Marks, Marks) = Default::default();
    let started = Instant::now();
    let serial_task = tokio::spawn(serial_prober(c.serial.clone(), sm.clone()));
    let can_task = tokio::spawn(can_prober(c.can.clone(), cm.clone()));
    let raw_streams = c.raw_conn.open_bi().await?;
    let raw_task = tokio::spawn(raw_prober(raw_streams, rm.clone()));
    tokio::time::sleep(Duration::from_secs(1)).await;
    for (name, m) in [("serial", &sm), ("CAN", &cm), ("raw", &rm)] {
        ensure!(
            first_after(m, started).is_some(),
            "no {name} round trip before the outage"
        );
    }
    let reconnects = |l: &xoq_client::link::Link| l.counters().reconnects.load(Relaxed);
    let (sr0, cr0) = (reconnects(c.serial.link()), reconnects(c.can.link()));
    fw.set_outage(true);
    tokio::time::sleep(Duration::from_secs_f64(outage)).await;
    let healed = Instant::now();
    fw.set_outage(false);
    // Wait for all three (the raw stream may never come back: its connection times out).
    let limit = healed + Duration::from_secs(20);
    while Instant::now() < limit {
        let raw_done = raw_task.is_finished() || first_after(&rm, healed).is_some();
        if first_after(&sm, healed).is_some() && first_after(&cm, healed).is_some() && raw_done {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    serial_task.abort();
    can_task.abort();
    // Awaited so their client handles are gone and the clients close cleanly below.
    let _ = serial_task.await;
    let _ = can_task.await;
    let raw = match first_after(&rm, healed) {
        Some(d) => Ok(d),
        None if raw_task.is_finished() => Err(raw_task.await.unwrap_or_else(|e| e.to_string())),
        None => {
            raw_task.abort();
            Err("no echo within 20 s".into())
        }
    };
    let r = Resume {
        serial: first_after(&sm, healed),
        can: first_after(&cm, healed),
        raw,
        serial_reconnected: reconnects(c.serial.link()) > sr0,
        can_reconnected: reconnects(c.can.link()) > cr0,
    };
    c.close().await;
    fw.shutdown();
    Ok(r)
}

fn resume_ms(d: Option<Duration>) -> String {
    d.map_or_else(|| "none in 20 s".into(), |d| format!("{:.0}", ms(d)))
}

struct CamRow {
    size: (u32, u32),
    codec: Codec,
    capped: bool,
    fps: f64,
    mbit: f64,
    p50_ms: f64,
    p99_ms: f64,
    skipped: u64,
}

/// Receive (no decode: the link is what is measured) for `seconds`; capture → receive latency.
async fn watch(
    addr: &str,
    codec: Codec,
    size: (u32, u32),
    capped: bool,
    seconds: f64,
) -> anyhow::Result<CamRow> {
    let mut cam =
        RemoteCamera::connect(addr, CameraOptions::new().offline(true).codecs(&[codec])).await?;
    // Warm up: the first keyframe, the congestion window.
    for _ in 0..10 {
        cam.next_frame().await?;
    }
    let mut lat = Vec::new();
    let (mut bytes, mut first_seq, mut last_seq) = (0usize, None, 0u64);
    let t0 = Instant::now();
    while t0.elapsed().as_secs_f64() < seconds {
        let f = cam.next_frame().await?;
        let now = xoq_device::camera::now_us();
        lat.push(Duration::from_micros(now.saturating_sub(f.timestamp_us)));
        bytes += f.data.len();
        first_seq.get_or_insert(f.seq);
        last_seq = f.seq;
    }
    let wall = t0.elapsed().as_secs_f64();
    cam.close().await;
    ensure!(!lat.is_empty(), "no frames arrived");
    let n = lat.len() as u64;
    let span = last_seq - first_seq.unwrap_or(last_seq) + 1;
    let l = summarize(lat);
    Ok(CamRow {
        size,
        codec,
        capped,
        fps: n as f64 / wall,
        mbit: bytes as f64 * 8.0 / wall / 1e6,
        p50_ms: ms(l.p50),
        p99_ms: ms(l.p99),
        skipped: span.saturating_sub(n),
    })
}

async fn camera_rows(a: &LinkArgs) -> anyhow::Result<Vec<CamRow>> {
    let sizes: Vec<(u32, u32)> = a
        .camera_sizes
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| {
            let (w, h) = s
                .split_once('x')
                .ok_or_else(|| anyhow::anyhow!("size {s:?}: use WIDTHxHEIGHT"))?;
            Ok((w.trim().parse()?, h.trim().parse()?))
        })
        .collect::<anyhow::Result<_>>()?;
    let mut rows = Vec::new();
    for &(w, h) in &sizes {
        for codec in [Codec::H264, Codec::Jpeg] {
            let server = CameraServer::test_pattern(w, h)?
                .fps(a.fps)
                .codecs(&[codec])
                .start()
                .await?;
            let ep = EndpointBuilder::new()
                .offline(true)
                .alpns(vec![codec.alpn().to_vec()])
                .spawn()
                .await?;
            let addr = format!("{}@{}", ep.id(), ep.bound_sockets()[0]);
            let router = server.router(ep);
            for capped in [false, true] {
                if capped {
                    nft::tbf("lo", (a.cap_mbit * 1e6) as u64)?;
                }
                let r = tokio::time::timeout(
                    Duration::from_secs_f64(a.camera_seconds + 60.0),
                    watch(&addr, codec, (w, h), capped, a.camera_seconds),
                )
                .await
                .map_err(|_| anyhow::anyhow!("camera {w}x{h} {codec:?}: timed out"));
                if capped {
                    nft::clear_qdisc("lo")?;
                }
                rows.push(r??);
            }
            let _ = router.shutdown().await;
        }
    }
    Ok(rows)
}

pub(super) async fn run(a: LinkArgs) -> anyhow::Result<()> {
    if !netns::inside() {
        return run_isolated(&own_args(), &[], "xoq bench link").await;
    }
    let _iso = enter_namespace()?;
    let rtts: Vec<u64> = parse_list("--rtts", &a.rtts)?;
    let losses: Vec<f64> = parse_list("--losses", &a.losses)?;
    let outages: Vec<f64> = parse_list("--outages", &a.outages)?;
    ensure!(a.count > 0, "--count must be positive");
    let (cpu0, wall0) = (cpu_seconds(), Instant::now());
    println!(
        "xoq bench link: {} round trips per cell (64 B serial echo, CAN command -> motor reply, raw iroh 64 B echo), interleaved, through a user-space forwarder in a private network namespace",
        a.count
    );
    println!("{}", build_line());
    println!("{}", cpu_line());
    println!(
        "RTT = configured delay (half each way); loss = % dropped in each direction; times in ms; raw = iroh 64 B echo on one stream through the same link (the floor)"
    );
    println!();
    let s = servers().await?;
    let mut cells = Vec::new();
    for &rtt in &rtts {
        for &loss in &losses {
            let c = cell(&s, rtt, loss, a.count, a.seed)
                .await
                .with_context(|| format!("cell RTT {rtt} ms, loss {loss} %"))?;
            // Progress on stderr: the table stays clean.
            let p50 = |k: usize| ms(summarize(c.samples[k].clone()).p50);
            eprintln!(
                "  RTT {rtt} ms, loss {loss} %: p50 raw {:.3} ms, serial {:.3}, CAN {:.3}",
                p50(0),
                p50(1),
                p50(2)
            );
            cells.push(c);
        }
    }
    print_cells(&cells);
    if let Some(c) = cells.iter().find(|c| c.rtt_ms == 50 && c.loss == 1.0) {
        let base = c.link_rtt();
        let fig = |k: usize| {
            let l = summarize(c.samples[k].clone());
            format!(
                "p50 {:.2}x, p99 {:.2}x, {:.1} % over 2x",
                ms(l.p50) / ms(base),
                ms(l.p99) / ms(base),
                share_over(&c.samples[k], base * 2)
            )
        };
        println!();
        println!(
            "targets at 50 ms / 1 %: p50 <= 1.1x and p99 <= 2x the link RTT ({:.3} ms): serial {}; CAN {}; raw iroh itself {}",
            ms(base),
            fig(1),
            fig(2),
            fig(0)
        );
    }
    println!();
    println!(
        "p99 of {} round trips is a single sample (rank {} from the slowest): at 1 % loss the share over 2x is the steadier tail figure",
        a.count,
        a.count - ((a.count as f64 - 1.0) * 0.99).round() as usize
    );
    print_packets(&cells);
    let stale = s.can.stats().stale_dropped.load(Relaxed);
    if stale > 0 {
        println!("CAN server dropped {stale} stale commands");
    }

    if !outages.is_empty() {
        println!();
        println!(
            "resume after a silent outage (forwarder drops everything), link {} ms RTT / {} % loss: time from the heal to the first completed round trip; {} runs per length, run n of N lasting n/N s longer (the heal then falls at different phases of the clients' redial cycle); each client runs a 50 Hz control loop (a round trip started every 20 ms, answered or not); a connection idle for 6 s is closed and the clients redial",
            a.outage_rtt,
            a.outage_loss,
            a.repeats.max(1)
        );
        println!();
        println!("| outage | serial, ms | CAN, ms | raw iroh stream, ms (no reconnection) |");
        println!("|---:|---:|---:|---:|");
        for &o in &outages {
            let mut runs = Vec::new();
            let runs_n = a.repeats.max(1);
            for n in 0..runs_n {
                let length = o + n as f64 / runs_n as f64;
                let r = resume(&s, &a, length, a.seed + n as u64)
                    .await
                    .with_context(|| format!("{o} s outage"))?;
                runs.push(r);
            }
            let list =
                |f: &dyn Fn(&Resume) -> String| runs.iter().map(f).collect::<Vec<_>>().join(", ");
            let reconnected = |f: &dyn Fn(&Resume) -> bool| {
                let n = runs.iter().filter(|r| f(r)).count();
                if n > 0 {
                    format!(" (reconnected {n}/{})", runs.len())
                } else {
                    String::new()
                }
            };
            let lengths = (0..runs_n)
                .map(|n| format!("{:.2}", o + n as f64 / runs_n as f64))
                .collect::<Vec<_>>()
                .join(", ");
            println!(
                "| {lengths} s | {}{} | {}{} | {} |",
                list(&|r| resume_ms(r.serial)),
                reconnected(&|r| r.serial_reconnected),
                list(&|r| resume_ms(r.can)),
                reconnected(&|r| r.can_reconnected),
                list(&|r| match &r.raw {
                    Ok(d) => format!("{:.0}", ms(*d)),
                    Err(e) => e.clone(),
                })
            );
        }
    }
    let _ = s.router.shutdown().await;

    if !a.camera_sizes.trim().is_empty() {
        println!();
        println!(
            "camera, test pattern at {} fps, direct P2P on loopback, with and without `tc tbf` at {} Mbit/s on lo; latency = capture -> received (encoded frame, no decode); skipped = frames the server did not send this viewer",
            a.fps, a.cap_mbit
        );
        println!();
        println!("| size | codec | cap | fps | Mbit/s | p50 ms | p99 ms | skipped |");
        println!("|---|---|---|---:|---:|---:|---:|---:|");
        for r in camera_rows(&a).await? {
            println!(
                "| {}x{} | {:?} | {} | {:.1} | {:.2} | {:.1} | {:.1} | {} |",
                r.size.0,
                r.size.1,
                r.codec,
                if r.capped {
                    format!("{} Mbit/s", a.cap_mbit)
                } else {
                    "none".into()
                },
                r.fps,
                r.mbit,
                r.p50_ms,
                r.p99_ms,
                r.skipped
            );
        }
    }
    let cpu = cpu_seconds() - cpu0;
    let wall = wall0.elapsed().as_secs_f64();
    println!();
    print_process_figures(cpu, wall, "; forwarder included");
    Ok(())
}
