//! `xoq bench can`: the CAN bridge against the raw transport, measured in one run.

use std::sync::Arc;
use std::time::{Duration, Instant};

use xoq_client::can::{CanOptions, RemoteCanBus};
use xoq_device::can::{BusEvent, CanBackend, SimCanBackend, VirtualBackend, now_us};
use xoq_relay::RelayConfig;
use xoq_server::can::CanServer;
use xoq_transport::moq::MoqSession;
use xoq_wire::can::CanFrame;

use super::common::print_process_figures;
use super::common::{Lat, cpu_seconds, raw_iroh_rtt, reply_rtt, serve_p2p, summarize, us};

/// Bus → client frames/s over `n` interfaces at once (one server and client each).
/// Returns (frames/s delivered, frames delivered, frames sent).
async fn rx_throughput(n: usize, frames: usize, fd: bool) -> anyhow::Result<(f64, usize, usize)> {
    let frame = if fd {
        CanFrame::new_fd(0x123, vec![0x5A; 64], true)?
    } else {
        CanFrame::new(0x123, vec![0x5A; 8])?
    };
    let mut routers = Vec::new();
    let mut tasks = Vec::new();
    let mut ready = Vec::new();
    for i in 0..n {
        let name = format!("bench-rx-{fd}-{n}-{i}");
        let (_s, router, addr) = serve_p2p(Box::new(VirtualBackend::new(&name))).await?;
        routers.push(router);
        let bus = RemoteCanBus::connect(&addr, CanOptions::new().offline(true)).await?;
        let node = VirtualBackend::new(&name).open()?;
        ready.push((bus, node));
    }
    let t = Instant::now();
    for (bus, mut node) in ready {
        let f = frame.clone();
        tasks.push(tokio::spawn(async move {
            let sender = tokio::spawn(async move {
                for _ in 0..frames {
                    node.tx.send(&f).await?;
                    // The virtual bus never blocks a sender (a real bus paces at its bit
                    // rate): yield so the bridge runs, and count what it still drops.
                    tokio::task::yield_now().await;
                }
                Ok::<_, anyhow::Error>(())
            });
            let mut got = 0usize;
            while got < frames {
                match bus.recv_timeout(Duration::from_millis(500)).await? {
                    Some(_) => got += 1,
                    None => break,
                }
            }
            sender.await??;
            bus.close().await;
            Ok::<usize, anyhow::Error>(got)
        }));
    }
    let mut total = 0;
    for t in tasks {
        total += t.await??;
    }
    let secs = t.elapsed().as_secs_f64();
    for r in routers {
        let _ = r.shutdown().await;
    }
    Ok((total as f64 / secs, total, frames * n))
}

pub(super) async fn run(
    count: usize,
    frames: usize,
    subscribers: usize,
    seconds: f64,
) -> anyhow::Result<()> {
    let cpu0 = cpu_seconds();
    let wall0 = Instant::now();
    println!(
        "xoq bench can: {count} round trips, {frames} frames per throughput run, {subscribers} MoQ subscribers at 1 kHz for {seconds} s"
    );
    println!(
        "build: {}",
        if cfg!(debug_assertions) {
            "debug (use --release for real figures)"
        } else {
            "release"
        }
    );

    let raw = raw_iroh_rtt(count, 78).await?;
    let sim = SimCanBackend::openarm("sim:openarm");
    let (_srv, router, addr) = serve_p2p(Box::new(sim)).await?;
    let bus = RemoteCanBus::connect(&addr, CanOptions::new().offline(true)).await?;
    let p2p = reply_rtt(&bus, count).await?;
    bus.close().await;
    let _ = router.shutdown().await;

    let mut tput = Vec::new();
    for (n, fd) in [(1, false), (1, true), (4, true)] {
        let fps = rx_throughput(n, frames / n.max(1), fd).await?;
        tput.push((n, fd, fps));
    }

    // Relay: command → reply through MoQ, and 1 kHz fan-out to N subscribers.
    let relay = RelayConfig::ephemeral()?.start().await?;
    let root = relay.url().join("anon")?;
    let sim = SimCanBackend::openarm("sim:openarm");
    let server = CanServer::builder(Box::new(sim))
        .relay_writes(true)
        .start()
        .await?;
    let session = MoqSession::connect(
        &xoq_transport::RelayUrl::from_url(root.clone()),
        xoq_transport::moq::Redial::Forever,
    )
    .await?;
    let s2 = server.clone();
    let bridge = tokio::spawn(async move {
        let _ = s2.serve_moq(&session, "bench-arm").await;
    });
    let moq_addr = format!("{}/bench-arm", root.as_str().trim_end_matches('/'));
    let mbus = RemoteCanBus::connect(&moq_addr, CanOptions::new()).await?;
    let moq = reply_rtt(&mbus, count.min(1000)).await?;
    mbus.close().await;
    bridge.abort();

    let vserver = CanServer::builder(Box::new(VirtualBackend::new("bench-fan")))
        .start()
        .await?;
    let session = MoqSession::connect(
        &xoq_transport::RelayUrl::from_url(root.clone()),
        xoq_transport::moq::Redial::Forever,
    )
    .await?;
    let v2 = vserver.clone();
    let fan_bridge = tokio::spawn(async move {
        let _ = v2.serve_moq(&session, "bench-fan").await;
    });
    let fan_addr = format!("{}/bench-fan", root.as_str().trim_end_matches('/'));
    let mut subs = Vec::new();
    for _ in 0..subscribers {
        subs.push(Arc::new(
            RemoteCanBus::connect(&fan_addr, CanOptions::new()).await?,
        ));
    }
    let total = (seconds * 1000.0) as usize;
    let mut readers = Vec::new();
    for s in &subs {
        let s = s.clone();
        readers.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            while let Ok(Some(f)) = s.recv_timeout(Duration::from_secs(2)).await {
                lat.push(Duration::from_micros(
                    now_us().saturating_sub(f.timestamp_us),
                ));
                if lat.len() >= total {
                    break;
                }
            }
            lat
        }));
    }
    let mut node = VirtualBackend::new("bench-fan").open()?;
    let mut tick = tokio::time::interval(Duration::from_millis(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    for i in 0..total {
        tick.tick().await;
        node.tx
            .send(&CanFrame::new(0x100, (i as u64).to_be_bytes().to_vec())?)
            .await?;
        while let Ok(BusEvent::Frame(_)) = node.rx.try_recv() {}
    }
    let mut delivered = 0;
    let mut all = Vec::new();
    for r in readers {
        let l = r.await?;
        delivered += l.len();
        all.extend(l);
    }
    fan_bridge.abort();
    relay.shutdown().await;
    let fan = if all.is_empty() {
        None
    } else {
        Some(summarize(all))
    };

    let raw2 = raw_iroh_rtt(count, 78).await?;
    println!(
        "raw iroh echo measured first and last: p50 {:.1} / {:.1} µs; the faster is the baseline",
        us(raw.p50),
        us(raw2.p50)
    );
    let raw = if raw2.p50 < raw.p50 { raw2 } else { raw };
    let cpu = cpu_seconds() - cpu0;
    let wall = wall0.elapsed().as_secs_f64();
    println!();
    println!(
        "{:<52} {:>10} {:>10} {:>10}",
        "latency", "p50 µs", "p99 µs", "p50 ratio"
    );
    let row = |name: &str, l: Lat| {
        println!(
            "{:<52} {:>10.1} {:>10.1} {:>9.2}x",
            name,
            us(l.p50),
            us(l.p99),
            us(l.p50) / us(raw.p50)
        );
    };
    row("raw iroh echo, 78 B (baseline)", raw);
    row("P2P: command -> simulated motor reply", p2p);
    row("relay: command -> simulated motor reply", moq);
    if let Some(f) = fan {
        row(
            &format!("relay fan-out 1 kHz, bus -> {subscribers} subscribers (one-way)"),
            f,
        );
    }
    println!(
        "relay fan-out delivered {delivered}/{} frames ({:.2}%)",
        total * subscribers,
        100.0 * delivered as f64 / (total * subscribers).max(1) as f64
    );
    println!();
    println!(
        "{:<52} {:>12}",
        "throughput, bus -> client over P2P", "frames/s"
    );
    for (n, fd, (fps, got, sent)) in tput {
        println!(
            "{:<52} {:>12.0}   ({got}/{sent} delivered)",
            format!(
                "{n} interface{}, {}",
                if n > 1 { "s" } else { "" },
                if fd { "FD 64 B" } else { "classic 8 B" }
            ),
            fps
        );
    }
    println!();
    print_process_figures(cpu, wall, "");
    Ok(())
}
