//! `xoq bench clock`: how far the client's estimate of the server's (robot's) clock is from
//! the truth, on loopback, on symmetric and jittered delays, on an asymmetric delay, and with
//! the client's clock shifted.
//!
//! Server and client share one machine, so the truth is known exactly: it is the server's
//! clock minus the client's read back to back in the client's process (zero, unless the
//! [`SKEW_ENV`] test seam shifts the client's clock). The seam is read once per process, so
//! each case runs in a process of its own (each in a private network namespace, where the
//! forwarder cannot be bypassed: see `bench_link`).
//!
//! An NTP-style probe cannot see an asymmetric delay: it is biased by half the asymmetry,
//! `(to_server - to_client) / 2`; that expected bias is printed next to the measured error.

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use anyhow::{Context, ensure};
use clap::Args;
use iroh::protocol::Router;
use xoq_client::clock::{SKEW_ENV, local_now_us};
use xoq_client::serial::{RemoteSerial, SerialOptions};
use xoq_netsim::{Impairment, netns};
use xoq_server::SerialServer;
use xoq_transport::p2p::EndpointBuilder;
use xoq_wire::serial::ALPN as SERIAL_ALPN;

use super::link::{
    SERVER_IP, build_line, check_isolation, cpu_line, enter_namespace, forwarder, run_isolated,
};

/// `xoq bench clock`.
#[derive(Debug, Args)]
pub struct ClockArgs {
    /// Seconds of estimates per case (the client probes once a second).
    #[arg(long, default_value_t = 10.0)]
    seconds: f64,
    /// Shift of the client's clock in the skew cases, µs.
    #[arg(long, default_value_t = 250_000, allow_negative_numbers = true)]
    skew_us: i64,
    /// Run only this case, here (internal: each case runs in a process of its own).
    #[arg(long, hide = true)]
    case: Option<usize>,
}

/// One link to estimate over.
struct Case {
    name: &'static str,
    /// One-way delays, ms.
    to_server_ms: u64,
    to_client_ms: u64,
    /// Jitter amplitude each way (uniform ±), ms.
    jitter_ms: u64,
    /// Shift the client's clock by `skew_sign × --skew-us`.
    skew_sign: i64,
}

const CASES: &[Case] = &[
    Case {
        name: "loopback through the forwarder",
        to_server_ms: 0,
        to_client_ms: 0,
        jitter_ms: 0,
        skew_sign: 0,
    },
    Case {
        name: "20 ms RTT, ±5 ms jitter each way",
        to_server_ms: 10,
        to_client_ms: 10,
        jitter_ms: 5,
        skew_sign: 0,
    },
    Case {
        name: "50 ms RTT",
        to_server_ms: 25,
        to_client_ms: 25,
        jitter_ms: 0,
        skew_sign: 0,
    },
    Case {
        name: "asymmetric: 40 ms to the server, 0 back",
        to_server_ms: 40,
        to_client_ms: 0,
        jitter_ms: 0,
        skew_sign: 0,
    },
    Case {
        name: "asymmetric: 0 to the server, 40 ms back",
        to_server_ms: 0,
        to_client_ms: 40,
        jitter_ms: 0,
        skew_sign: 0,
    },
    Case {
        name: "client clock ahead by the skew, loopback",
        to_server_ms: 0,
        to_client_ms: 0,
        jitter_ms: 0,
        skew_sign: 1,
    },
    Case {
        name: "client clock behind by the skew, 20 ms RTT ±5 ms jitter",
        to_server_ms: 10,
        to_client_ms: 10,
        jitter_ms: 5,
        skew_sign: -1,
    },
];

pub(super) async fn run(a: ClockArgs) -> anyhow::Result<()> {
    if let Some(k) = a.case {
        ensure!(
            netns::inside(),
            "--case runs inside the namespace `xoq bench clock` makes"
        );
        let case = CASES.get(k).context("no such case")?;
        return one_case(case, a.seconds).await;
    }
    check_isolation("xoq bench clock")?;
    println!(
        "xoq bench clock: the serial client's estimate of the server's clock minus the truth, sampled every 100 ms for {} s per case (probes once a second; the estimate is the fastest of the last 16)",
        a.seconds
    );
    println!("{}", build_line());
    println!("{}", cpu_line());
    println!(
        "error = estimate - truth, µs; expected = the bias an NTP-style probe cannot avoid, (to_server - to_client) / 2; est. RTT = round trip of the sample used (the estimate is within half of it)"
    );
    println!("skew = {} µs ({SKEW_ENV})", a.skew_us);
    println!();
    println!(
        "| link | truth µs | expected µs | p50 abs error µs | max abs error µs | final error µs | est. RTT µs |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|");
    for (k, case) in CASES.iter().enumerate() {
        let args: Vec<std::ffi::OsString> = [
            "bench".to_string(),
            "clock".into(),
            "--seconds".into(),
            a.seconds.to_string(),
            "--case".into(),
            k.to_string(),
        ]
        .into_iter()
        .map(Into::into)
        .collect();
        let envs = [(SKEW_ENV, (case.skew_sign * a.skew_us).to_string())];
        run_isolated(&args, &envs, "xoq bench clock").await?;
    }
    Ok(())
}

/// The server's clock minus this process's (skewed) clock, read back to back.
fn truth_us() -> i64 {
    // Both read SystemTime; the server's is unskewed.
    let server = xoq_device::can::now_us() as i64;
    let client = local_now_us() as i64;
    server - client
}

async fn one_case(case: &Case, seconds: f64) -> anyhow::Result<()> {
    let _iso = enter_namespace()?;
    let server = SerialServer::builder(xoq_device::serial::backend("sim:echo")?)
        .start()
        .await?;
    let ep = EndpointBuilder::new()
        .offline(true)
        .bind(Some(SocketAddr::new(IpAddr::V4(SERVER_IP), 0)))
        .alpns(vec![SERIAL_ALPN.to_vec()])
        .spawn()
        .await?;
    let id = ep.id();
    let sock = ep.bound_sockets()[0];
    let router = Router::builder(ep).accept(SERIAL_ALPN, server).spawn();
    let way = |ms: u64| {
        Impairment::none()
            .with_delay(Duration::from_millis(ms))
            .with_jitter(Duration::from_millis(case.jitter_ms))
    };
    let fw = forwarder(sock, 1, way(case.to_server_ms), way(case.to_client_ms))?;
    let port = RemoteSerial::connect(
        &format!("{id}@{}", fw.local_addr()),
        SerialOptions::keep_settings().offline(true).ephemeral(),
    )
    .await?;
    let mut errors = Vec::new();
    let mut last = None;
    let t0 = Instant::now();
    while t0.elapsed().as_secs_f64() < seconds {
        tokio::time::sleep(Duration::from_millis(100)).await;
        if let Some(e) = port.clock().estimate() {
            let err = e.offset_us - truth_us();
            errors.push(err.unsigned_abs());
            last = Some((err, e));
        }
    }
    let st = fw.stats();
    ensure!(
        st.to_server.forwarded_packets > 0 && st.to_client.forwarded_packets > 0,
        "the probes went around the forwarder: {st:?}"
    );
    let (final_err, est) = last.context("no clock estimate at all")?;
    errors.sort_unstable();
    let p50 = errors[(errors.len() - 1) / 2];
    let max = errors.last().copied().unwrap_or(0);
    let expected = (case.to_server_ms as i64 - case.to_client_ms as i64) * 1000 / 2;
    println!(
        "| {} | {} | {:+} | {} | {} | {:+} | {} |",
        case.name,
        truth_us(),
        expected,
        p50,
        max,
        final_err,
        est.rtt_us
    );
    port.close().await;
    let _ = router.shutdown().await;
    fw.shutdown();
    Ok(())
}
