//! What the benchmarks share: latency summaries, process figures (RSS, CPU), and the raw
//! baselines (an iroh echo) and simulated servers each measures against.

use std::time::{Duration, Instant};

use anyhow::Context;
use iroh::endpoint::Connection;
use iroh::protocol::{AcceptError, ProtocolHandler, Router};
use xoq_client::can::RemoteCanBus;
use xoq_client::serial::RemoteSerial;
use xoq_device::can::CanBackend;
use xoq_server::can::CanServer;
use xoq_transport::p2p::EndpointBuilder;
use xoq_wire::can::{ALPN, CanFrame};
use xoq_wire::damiao::{MotorModel, encode_mit};

pub(super) const BENCH_ALPN: &[u8] = b"xoq/bench-echo/1";

#[derive(Debug, Clone)]
pub(super) struct EchoHandler;

impl ProtocolHandler for EchoHandler {
    async fn accept(&self, conn: Connection) -> Result<(), AcceptError> {
        while let Ok((mut send, mut recv)) = conn.accept_bi().await {
            tokio::spawn(async move {
                let mut buf = vec![0u8; 64 * 1024];
                while let Ok(Some(n)) = recv.read(&mut buf).await {
                    if send.write_all(&buf[..n]).await.is_err() {
                        break;
                    }
                }
            });
        }
        Ok(())
    }
}

/// Latency summary of one measurement.
#[derive(Debug, Clone, Copy)]
pub(super) struct Lat {
    pub(super) p50: Duration,
    pub(super) p99: Duration,
}

pub(super) fn summarize(mut v: Vec<Duration>) -> Lat {
    v.sort();
    let at = |q: f64| v[((v.len() as f64 - 1.0) * q).round() as usize];
    Lat {
        p50: at(0.5),
        p99: at(0.99),
    }
}

pub(super) fn us(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

pub(super) fn peak_rss_mib() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines().find(|l| l.starts_with("VmHWM:")).and_then(|l| {
                l.split_whitespace()
                    .nth(1)
                    .and_then(|k| k.parse::<f64>().ok())
            })
        })
        .map_or(0.0, |kib| kib / 1024.0)
}

pub(super) fn cpu_seconds() -> f64 {
    // utime + stime of this process, in clock ticks (100 Hz on Linux).
    std::fs::read_to_string("/proc/self/stat")
        .ok()
        .and_then(|s| {
            let rest = s.rsplit_once(')')?.1;
            let f: Vec<&str> = rest.split_whitespace().collect();
            let u: f64 = f.get(11)?.parse().ok()?;
            let st: f64 = f.get(12)?.parse().ok()?;
            Some((u + st) / 100.0)
        })
        .unwrap_or(0.0)
}

pub(super) async fn rtt_remote(
    port: &RemoteSerial,
    size: usize,
    count: usize,
) -> anyhow::Result<Vec<Duration>> {
    let payload: Vec<u8> = (0..size).map(|i| i as u8).collect();
    let mut buf = vec![0u8; size.max(4096)];
    let mut out = Vec::with_capacity(count);
    for i in 0..count + count / 10 {
        let t = Instant::now();
        port.write(&payload).await?;
        let mut got = 0;
        while got < size {
            got += tokio::time::timeout(Duration::from_secs(5), port.read(&mut buf[got..size]))
                .await
                .context("echo timed out")??;
        }
        // The first 10% warm up caches and congestion windows.
        if i >= count / 10 {
            out.push(t.elapsed());
        }
        anyhow::ensure!(buf[..size] == payload[..], "echo corrupted");
    }
    Ok(out)
}

/// An offline endpoint on loopback serving `alpn` with `handler`: its router and the address
/// clients dial (`<id>@<ip>:<port>`). Every bench server and baseline starts this way.
pub(super) async fn serve_on_loopback<H: ProtocolHandler>(
    alpn: &[u8],
    handler: H,
) -> anyhow::Result<(Router, String)> {
    let ep = EndpointBuilder::new()
        .offline(true)
        .alpns(vec![alpn.to_vec()])
        .spawn()
        .await?;
    let addr = format!("{}@{}", ep.id(), ep.bound_sockets()[0]);
    Ok((Router::builder(ep).accept(alpn, handler).spawn(), addr))
}

/// Peak RSS and the process's CPU over `wall` seconds, as every bench ends.
pub(super) fn print_process_figures(cpu: f64, wall: f64, note: &str) {
    println!(
        "peak RSS {:.1} MiB; CPU {:.2} s over {:.2} s wall ({:.0}% of one core{note})",
        peak_rss_mib(),
        cpu,
        wall,
        100.0 * cpu / wall
    );
}

pub(super) async fn serve_p2p(
    backend: Box<dyn CanBackend>,
) -> anyhow::Result<(CanServer, Router, String)> {
    let server = CanServer::builder(backend).start().await?;
    let (router, addr) = serve_on_loopback(ALPN, server.clone()).await?;
    Ok((server, router, addr))
}

/// Raw iroh echo of one frame's wire size (a 64-byte FD frame is 78 bytes on the wire).
pub(super) async fn raw_iroh_rtt(count: usize, size: usize) -> anyhow::Result<Lat> {
    let (router, addr) = serve_on_loopback(BENCH_ALPN, EchoHandler).await?;
    let addr: xoq_transport::Address = addr.parse()?;
    let cep = xoq_transport::p2p::client_endpoint(None, &addr, true).await?;
    let conn = xoq_transport::p2p::connect(&cep, &addr, BENCH_ALPN, true).await?;
    let (mut send, mut recv) = conn.open_bi().await?;
    let payload = vec![7u8; size];
    let mut buf = vec![0u8; size];
    let mut v = Vec::new();
    for i in 0..count + count / 10 {
        let t = Instant::now();
        send.write_all(&payload).await?;
        recv.read_exact(&mut buf).await?;
        if i >= count / 10 {
            v.push(t.elapsed());
        }
    }
    conn.close(0u32.into(), b"done");
    cep.close().await;
    let _ = router.shutdown().await;
    Ok(summarize(v))
}

/// Command → motor reply round trips through a bus client.
pub(super) async fn reply_rtt(bus: &RemoteCanBus, count: usize) -> anyhow::Result<Lat> {
    let cmd = CanFrame::new(
        0x07,
        encode_mit(MotorModel::DM4310, 0.0, 0.0, 0.0, 0.0, 0.0).to_vec(),
    )?;
    let mut v = Vec::new();
    for i in 0..count + count / 10 {
        let t = Instant::now();
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
        if i >= count / 10 {
            v.push(t.elapsed());
        }
    }
    Ok(summarize(v))
}

pub(super) use crate::cli::common::parse_size;

/// A figure a Python bench client printed as `key=value`.
pub(super) fn python_field(text: &str, k: &str) -> anyhow::Result<f64> {
    text.split_whitespace()
        .find_map(|kv| kv.strip_prefix(k)?.strip_prefix('=')?.parse::<f64>().ok())
        .ok_or_else(|| anyhow::anyhow!("no {k} in the python client's output: {text}"))
}
