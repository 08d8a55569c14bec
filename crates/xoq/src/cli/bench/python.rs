//! `xoq bench python`: the Python package's latency against the Rust client's, same run.
//!
//! Both simulators are served in this process over P2P (loopback, offline). Each client runs
//! in its own process, so neither shares a runtime with the servers: the Rust client (this
//! binary's hidden `bench client`) and the Python client (pyserial and python-can through the
//! xoq package) take turns, Rust first and last, and their medians are compared.

use std::process::Command;
use std::time::Duration;

use anyhow::Context;
use xoq_client::can::{CanOptions, RemoteCanBus};
use xoq_client::serial::{RemoteSerial, SerialOptions};
use xoq_device::can::SimCanBackend;
use xoq_server::SerialServer;
use xoq_wire::serial::{ALPN, LineSettings};

use super::common::serve_on_loopback;
use super::common::{peak_rss_mib, rtt_remote, summarize, us};
use super::common::{reply_rtt, serve_p2p};

const SCRIPT: &str = include_str!("python.py");

/// One client's figures, parsed from its `key=value` output line.
#[derive(Debug, Default, Clone, Copy)]
struct Figures {
    serial_p50: f64,
    serial_p99: f64,
    can_p50: f64,
    can_p99: f64,
    rss_mib: f64,
}

impl Figures {
    /// Field-wise median of several runs.
    fn median(runs: &[Figures]) -> Figures {
        let med = |f: fn(&Figures) -> f64| {
            let mut v: Vec<f64> = runs.iter().map(f).collect();
            v.sort_by(f64::total_cmp);
            v.get(v.len() / 2).copied().unwrap_or(0.0)
        };
        Figures {
            serial_p50: med(|r| r.serial_p50),
            serial_p99: med(|r| r.serial_p99),
            can_p50: med(|r| r.can_p50),
            can_p99: med(|r| r.can_p99),
            rss_mib: med(|r| r.rss_mib),
        }
    }

    fn parse(out: &str) -> anyhow::Result<Self> {
        let line = out
            .lines()
            .rev()
            .find(|l| l.contains("can_p50_us="))
            .with_context(|| format!("no figures in the client's output: {out:?}"))?;
        let mut f = Figures::default();
        for kv in line.split_whitespace() {
            let (k, v) = kv.split_once('=').context("key=value")?;
            let v: f64 = v.parse()?;
            match k {
                "serial_p50_us" => f.serial_p50 = v,
                "serial_p99_us" => f.serial_p99 = v,
                "can_p50_us" => f.can_p50 = v,
                "can_p99_us" => f.can_p99 = v,
                "rss_mib" => f.rss_mib = v,
                _ => {}
            }
        }
        Ok(f)
    }
}

/// The hidden client half: Rust client figures against running servers, one output line.
pub(super) async fn client(serial: Option<&str>, can: &str, count: usize) -> anyhow::Result<()> {
    if let Some(serial) = serial {
        let port = RemoteSerial::connect(serial, SerialOptions::new(1_000_000)).await?;
        let s = summarize(rtt_remote(&port, 64, count).await?);
        port.close().await;
        print!(
            "serial_p50_us={:.1} serial_p99_us={:.1} ",
            us(s.p50),
            us(s.p99)
        );
    }
    let bus = RemoteCanBus::connect(can, CanOptions::new()).await?;
    let c = reply_rtt(&bus, count).await?;
    bus.close().await;
    println!(
        "can_p50_us={:.1} can_p99_us={:.1} rss_mib={:.1}",
        us(c.p50),
        us(c.p99),
        peak_rss_mib()
    );
    Ok(())
}

fn run_client(mut cmd: Command, what: &str) -> anyhow::Result<Figures> {
    let out = cmd
        .env("XOQ_OFFLINE", "1")
        .output()
        .with_context(|| format!("cannot start the {what} client"))?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    anyhow::ensure!(
        out.status.success(),
        "the {what} client failed ({}): {}{}",
        out.status,
        stdout,
        String::from_utf8_lossy(&out.stderr)
    );
    Figures::parse(&stdout)
}

/// `xoq bench python`.
pub(super) async fn run(count: usize, rounds: usize, python: &str) -> anyhow::Result<()> {
    let rounds = rounds.max(1);
    println!(
        "xoq bench python: {count} round trips per client, 64 B serial echo, CAN command → motor reply"
    );
    println!(
        "build: {} (the Python module is built by maturin with its own profile)",
        if cfg!(debug_assertions) {
            "debug (use --release for real figures)"
        } else {
            "release"
        }
    );
    let serial_server = SerialServer::builder(xoq_device::serial::backend("sim:echo")?)
        .settings(LineSettings::new(1_000_000))
        .start()
        .await?;
    let (serial_router, serial_addr) = serve_on_loopback(ALPN, serial_server.clone()).await?;
    let (_can_server, can_router, can_addr) =
        serve_p2p(Box::new(SimCanBackend::openarm("sim:openarm"))).await?;

    let exe = std::env::current_exe().context("own executable")?;
    let rust_cmd = || {
        let mut c = Command::new(&exe);
        c.args([
            "bench",
            "client",
            "--serial",
            &serial_addr,
            "--can",
            &can_addr,
        ])
        .args(["--count", &count.to_string()]);
        c
    };
    let serial_a = serial_addr.clone();
    let can_a = can_addr.clone();
    let python_cmd = move || {
        let mut c = Command::new(python);
        c.args(["-c", SCRIPT, &serial_a, &can_a, &count.to_string()]);
        c
    };
    let blocking = |cmd: Command, what: &'static str| {
        tokio::task::spawn_blocking(move || run_client(cmd, what))
    };
    // Alternate the clients (Rust, Python, Rust, …, Rust) so drift in machine load hits both,
    // and compare medians.
    let mut rust_runs = Vec::new();
    let mut py_runs = Vec::new();
    for _ in 0..rounds {
        rust_runs.push(blocking(rust_cmd(), "Rust").await??);
        py_runs.push(
            blocking(python_cmd(), "Python")
                .await?
                .context("is the xoq Python package installed for this interpreter? (--python)")?,
        );
    }
    rust_runs.push(blocking(rust_cmd(), "Rust").await??);
    let _ = tokio::time::timeout(Duration::from_secs(2), serial_router.shutdown()).await;
    let _ = tokio::time::timeout(Duration::from_secs(2), can_router.shutdown()).await;

    let rust = Figures::median(&rust_runs);
    let py = Figures::median(&py_runs);
    println!();
    let list = |runs: &[Figures], f: fn(&Figures) -> f64| {
        runs.iter()
            .map(|r| format!("{:.0}", f(r)))
            .collect::<Vec<_>>()
            .join(" ")
    };
    println!(
        "runs (p50 µs, in order): Rust serial [{}] CAN [{}]; Python serial [{}] CAN [{}]; medians compared",
        list(&rust_runs, |r| r.serial_p50),
        list(&rust_runs, |r| r.can_p50),
        list(&py_runs, |r| r.serial_p50),
        list(&py_runs, |r| r.can_p50),
    );
    println!(
        "{:<40} {:>10} {:>10} {:>10}",
        "round trip", "p50 µs", "p99 µs", "p50 ratio"
    );
    let row = |name: &str, p50: f64, p99: f64, base: f64| {
        println!("{name:<40} {p50:>10.1} {p99:>10.1} {:>9.2}x", p50 / base);
    };
    row(
        "serial 64 B, Rust client (baseline)",
        rust.serial_p50,
        rust.serial_p99,
        rust.serial_p50,
    );
    row(
        "serial 64 B, Python pyserial",
        py.serial_p50,
        py.serial_p99,
        rust.serial_p50,
    );
    row(
        "CAN cmd → reply, Rust client (baseline)",
        rust.can_p50,
        rust.can_p99,
        rust.can_p50,
    );
    row(
        "CAN cmd → reply, Python python-can",
        py.can_p50,
        py.can_p99,
        rust.can_p50,
    );
    println!(
        "peak RSS: Rust client {:.1} MiB, Python client {:.1} MiB (interpreter, pyserial and python-can included)",
        rust.rss_mib, py.rss_mib
    );
    Ok(())
}
