//! `xoq bench connect`: how long opening a port or a bus takes, up to the first reply.
//!
//! Libraries such as python-can's tests open a bus per test and wait 0.5 s for a frame, so
//! opening must cost a small fraction of that. Each sample is a whole open: a new client
//! endpoint, the QUIC handshake, the service handshake, then one request and its reply
//! (serial: 64 B echoed; CAN: an MIT command and the motor's reply), then close.
//!
//! Baseline, same run: the raw iroh path doing the same (a new endpoint, connect, open a
//! stream, 64 B echoed), which is the floor for any P2P service. Each is measured on an idle
//! machine and again with busy threads on every core (`--load`), as on a loaded robot or CI
//! box. The Python rows open `serial.Serial(address)` and `can.Bus(address)` in a separate
//! interpreter, as user code does.

use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use xoq_client::can::{CanOptions, RemoteCanBus};
use xoq_client::serial::{RemoteSerial, SerialOptions};
use xoq_device::can::SimCanBackend;
use xoq_server::SerialServer;
use xoq_transport::Address;
use xoq_transport::p2p;
use xoq_wire::can::CanFrame;
use xoq_wire::damiao::{MotorModel, encode_mit};
use xoq_wire::serial::{ALPN, LineSettings};

use super::common::serve_on_loopback;
use super::common::serve_p2p;
use super::common::{BENCH_ALPN, EchoHandler, Lat, summarize, us};

const SCRIPT: &str = include_str!("connect.py");
const SIZE: usize = 64;

/// Busy threads on every core until dropped: a loaded machine.
struct Load {
    stop: Arc<AtomicBool>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl Load {
    fn start(n: usize) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let threads = (0..n)
            .map(|_| {
                let stop = stop.clone();
                std::thread::spawn(move || {
                    let mut x = 0u64;
                    while !stop.load(Ordering::Relaxed) {
                        x = std::hint::black_box(
                            x.wrapping_mul(6364136223846793005).wrapping_add(1),
                        );
                    }
                })
            })
            .collect();
        Self { stop, threads }
    }
}

impl Drop for Load {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

/// New endpoint, connect, one 64 B echo: the floor.
async fn raw_open(addr: &Address) -> anyhow::Result<Duration> {
    let t = Instant::now();
    let ep = p2p::client_endpoint(None, addr, true).await?;
    let conn = p2p::connect(&ep, addr, BENCH_ALPN, true).await?;
    let (mut send, mut recv) = conn.open_bi().await?;
    let payload = [7u8; SIZE];
    let mut buf = [0u8; SIZE];
    send.write_all(&payload).await?;
    recv.read_exact(&mut buf).await?;
    let d = t.elapsed();
    conn.close(0u32.into(), b"done");
    ep.close().await;
    Ok(d)
}

async fn serial_open(addr: &str) -> anyhow::Result<Duration> {
    let t = Instant::now();
    let port = RemoteSerial::connect(addr, SerialOptions::new(1_000_000)).await?;
    let payload = [7u8; SIZE];
    port.write(&payload).await?;
    let mut got = 0;
    let mut buf = [0u8; SIZE];
    while got < SIZE {
        let n = tokio::time::timeout(Duration::from_secs(5), port.read(&mut buf[got..]))
            .await
            .context("serial echo timed out")??;
        got += n;
    }
    let d = t.elapsed();
    port.close().await;
    Ok(d)
}

async fn can_open(addr: &str) -> anyhow::Result<Duration> {
    let cmd = CanFrame::new(
        0x07,
        encode_mit(MotorModel::DM4310, 0.0, 0.0, 0.0, 0.0, 0.0).to_vec(),
    )?;
    let t = Instant::now();
    let bus = RemoteCanBus::connect(addr, CanOptions::new()).await?;
    bus.send(&cmd).await?;
    loop {
        let f = bus
            .recv_timeout(Duration::from_secs(5))
            .await?
            .context("motor reply timed out")?;
        if f.frame.id == 0x17 {
            break;
        }
    }
    let d = t.elapsed();
    bus.close().await;
    Ok(d)
}

/// `count` opens (plus a warm-up tenth), summarised.
async fn sample<F, Fut>(count: usize, mut open: F) -> anyhow::Result<Lat>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<Duration>>,
{
    let mut v = Vec::with_capacity(count);
    for i in 0..count + count / 10 {
        let d = open().await?;
        if i >= count / 10 {
            v.push(d);
        }
    }
    Ok(summarize(v))
}

/// Python opens, from the interpreter's own output line (`serial_p50_us=… can_p99_us=…`).
fn python_opens(python: &str, serial: &str, can: &str, count: usize) -> anyhow::Result<(Lat, Lat)> {
    let out = Command::new(python)
        .args(["-c", SCRIPT, serial, can, &count.to_string()])
        .env("XOQ_OFFLINE", "1")
        .output()
        .with_context(|| format!("cannot run {python}"))?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    anyhow::ensure!(
        out.status.success(),
        "the Python client failed ({}): {}{} (is the xoq package installed for this interpreter? --python)",
        out.status,
        stdout,
        String::from_utf8_lossy(&out.stderr)
    );
    let line = stdout
        .lines()
        .rev()
        .find(|l| l.contains("can_p50_us="))
        .context("no figures in the Python client's output")?;
    let mut f = [0f64; 4];
    for kv in line.split_whitespace() {
        let (k, v) = kv.split_once('=').context("key=value")?;
        let i = match k {
            "serial_p50_us" => 0,
            "serial_p99_us" => 1,
            "can_p50_us" => 2,
            "can_p99_us" => 3,
            _ => continue,
        };
        f[i] = v.parse()?;
    }
    let d = |x: f64| Duration::from_secs_f64(x / 1e6);
    Ok((
        Lat {
            p50: d(f[0]),
            p99: d(f[1]),
        },
        Lat {
            p50: d(f[2]),
            p99: d(f[3]),
        },
    ))
}

/// `xoq bench connect`.
pub(super) async fn run(count: usize, load: usize, python: Option<&str>) -> anyhow::Result<()> {
    let count = count.max(1);
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let load = if load == 0 { cores } else { load };
    println!(
        "xoq bench connect: {count} opens each, open → first reply (new endpoint + handshakes + one round trip), P2P offline on loopback"
    );
    println!(
        "build: {}; {cores} cores; loaded = {load} busy threads",
        if cfg!(debug_assertions) {
            "debug (use --release for real figures)"
        } else {
            "release"
        }
    );

    let (echo_router, echo_addr) = serve_on_loopback(BENCH_ALPN, EchoHandler).await?;
    let echo_addr: Address = echo_addr.parse()?;

    let serial_server = SerialServer::builder(xoq_device::serial::backend("sim:echo")?)
        .settings(LineSettings::new(1_000_000))
        .start()
        .await?;
    let (serial_router, serial_addr) = serve_on_loopback(ALPN, serial_server.clone()).await?;
    let (_can_server, can_router, can_addr) =
        serve_p2p(Box::new(SimCanBackend::openarm("sim:openarm"))).await?;

    let mut rows: Vec<(String, Lat, Lat)> = Vec::new();
    for loaded in [false, true] {
        let _load = loaded.then(|| Load::start(load));
        let tag = if loaded { "loaded" } else { "idle" };
        let raw = sample(count, || raw_open(&echo_addr)).await?;
        let ser = sample(count, || serial_open(&serial_addr)).await?;
        let can = sample(count, || can_open(&can_addr)).await?;
        rows.push((
            format!("raw iroh open + 64 B echo ({tag}, baseline)"),
            raw,
            raw,
        ));
        rows.push((format!("serial open + 64 B echo, Rust ({tag})"), ser, raw));
        rows.push((format!("CAN open + motor reply, Rust ({tag})"), can, raw));
        if let Some(py) = python {
            let (s, c) = {
                let (py, s, c) = (py.to_string(), serial_addr.clone(), can_addr.clone());
                tokio::task::spawn_blocking(move || python_opens(&py, &s, &c, count)).await??
            };
            rows.push((format!("pyserial Serial(addr) + echo ({tag})"), s, raw));
            rows.push((format!("python-can Bus(addr) + reply ({tag})"), c, raw));
        }
    }
    let _ = tokio::time::timeout(Duration::from_secs(2), echo_router.shutdown()).await;
    let _ = tokio::time::timeout(Duration::from_secs(2), serial_router.shutdown()).await;
    let _ = tokio::time::timeout(Duration::from_secs(2), can_router.shutdown()).await;

    println!();
    println!(
        "{:<48} {:>9} {:>9} {:>10}",
        "open → first reply", "p50 ms", "p99 ms", "p50 / raw"
    );
    for (name, l, base) in &rows {
        println!(
            "{name:<48} {:>9.2} {:>9.2} {:>9.2}x",
            us(l.p50) / 1e3,
            us(l.p99) / 1e3,
            us(l.p50) / us(base.p50)
        );
    }
    Ok(())
}
