//! `xoq bench record`: what recording costs. A 720p30 H.264 test-pattern camera (P2P) and
//! two simulated OpenArm buses driven at 1 kHz each (published on an embedded relay) run in
//! this process; `xoq record` runs as a child process for the given time. Reported: the
//! recorder's CPU (its own process, from the kernel's accounting of reaped children), MB per
//! minute, messages per second per kind, and dropped messages (what the recorder counted).
//! Then the recording is exported as a LeRobot dataset at 30 fps (`xoq export lerobot`'s
//! code, in process): the export's time, and the skew between each row's camera frame and
//! the joint samples paired with it (target: at most half a frame).

use std::time::{Duration, Instant};

use xoq_client::can::{CanOptions, RemoteCanBus};
use xoq_device::can::SimCanBackend;
use xoq_relay::RelayConfig;
use xoq_server::camera::CameraServer;
use xoq_server::can::CanServer;
use xoq_transport::moq::MoqSession;
use xoq_transport::p2p::EndpointBuilder;
use xoq_wire::can::CanFrame;
use xoq_wire::damiao::{MotorModel, OPENARM_MOTORS, encode_mit};

/// CPU seconds of reaped child processes (the recorder, once waited for).
fn children_cpu_seconds() -> f64 {
    // SAFETY: getrusage only writes the struct it is given.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    if unsafe { libc::getrusage(libc::RUSAGE_CHILDREN, &mut ru) } != 0 {
        return 0.0;
    }
    let t = |tv: libc::timeval| tv.tv_sec as f64 + tv.tv_usec as f64 / 1e6;
    t(ru.ru_utime) + t(ru.ru_stime)
}

/// Send MIT commands round-robin to the arm's motors at `hz` until `stop`.
async fn drive(bus: RemoteCanBus, hz: u32, stop: tokio::sync::watch::Receiver<bool>) -> u64 {
    let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / f64::from(hz)));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let mut sent = 0u64;
    for (cmd, _, _) in OPENARM_MOTORS {
        if let Ok(f) = CanFrame::new(cmd, xoq_wire::damiao::CMD_ENABLE.to_vec()) {
            let _ = bus.send(&f).await;
        }
    }
    while !*stop.borrow() {
        tick.tick().await;
        let (cmd, _, model): (u32, u32, MotorModel) = OPENARM_MOTORS[(sent % 8) as usize];
        let p = (sent as f32 / 1000.0).sin() * 0.5;
        if let Ok(f) = CanFrame::new(cmd, encode_mit(model, p, 0.0, 10.0, 1.0, 0.0).to_vec())
            && bus.send(&f).await.is_ok()
        {
            sent += 1;
        }
    }
    bus.close().await;
    sent
}

pub(super) async fn run(seconds: f64, hz: u32) -> anyhow::Result<()> {
    let relay = RelayConfig::ephemeral()?.start().await?;
    let root = relay.url().join("anon")?;
    let camera = CameraServer::test_pattern(1280, 720)?.start().await?;
    let ep = EndpointBuilder::new()
        .offline(true)
        .alpns(camera.alpns())
        .spawn()
        .await?;
    let cam_addr = format!("{}@{}", ep.id(), ep.bound_sockets()[0]);
    let cam_router = camera.router(ep);
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let mut sources = vec![format!("camera:cam={cam_addr}")];
    let mut drivers = Vec::new();
    let mut keep = Vec::new();
    let mut routers = Vec::new();
    let mut servers = Vec::new();
    for arm in ["arm_left", "arm_right"] {
        let server = CanServer::builder(Box::new(SimCanBackend::openarm("sim:openarm")))
            .start()
            .await?;
        let session = MoqSession::connect(
            &xoq_transport::RelayUrl::from_url(root.clone()),
            xoq_transport::moq::Redial::Forever,
        )
        .await?;
        let s2 = server.clone();
        let name = arm.to_string();
        keep.push(tokio::spawn(async move {
            let _ = s2.serve_moq(&session, &name).await;
        }));
        let (router, addr) =
            super::common::serve_on_loopback(xoq_wire::can::ALPN, server.clone()).await?;
        let bus = RemoteCanBus::connect(&addr, CanOptions::new().offline(true).ephemeral()).await?;
        drivers.push(tokio::spawn(drive(bus, hz, stop_rx.clone())));
        routers.push(router);
        servers.push(server);
        sources.push(format!(
            "can:{arm}={}/{arm}",
            root.as_str().trim_end_matches('/')
        ));
    }
    let dir = tempfile_dir()?;
    let out = dir.join("bench.mcap");
    println!(
        "xoq bench record: 1280x720 H.264 camera (P2P) + 2 OpenArm buses at {hz} Hz of commands (relay), {seconds} s"
    );
    let cpu0 = children_cpu_seconds();
    let t0 = Instant::now();
    let child = tokio::process::Command::new(std::env::current_exe()?)
        .arg("record")
        .args(&sources)
        .args([
            "-o",
            &out.display().to_string(),
            "--duration",
            &seconds.to_string(),
        ])
        .env("XOQ_OFFLINE", "1")
        .env("XOQ_LOG", "warn")
        .stderr(std::process::Stdio::null())
        .output()
        .await?;
    let wall = t0.elapsed().as_secs_f64();
    let cpu = children_cpu_seconds() - cpu0;
    let _ = stop_tx.send(true);
    let mut sent = 0;
    for d in drivers {
        sent += d.await.unwrap_or(0);
    }
    for k in keep {
        k.abort();
    }
    for r in routers {
        let _ = r.shutdown().await;
    }
    drop(servers);
    let _ = cam_router.shutdown().await;
    relay.shutdown().await;
    let text = String::from_utf8_lossy(&child.stdout);
    anyhow::ensure!(child.status.success(), "the recorder failed: {text}");
    let bytes = std::fs::metadata(&out).map(|m| m.len()).unwrap_or(0);
    let exported = tokio::task::spawn_blocking({
        let (out, ds) = (out.clone(), dir.join("dataset"));
        move || -> anyhow::Result<(xoq_record::lerobot::ExportSummary, f64)> {
            let t = Instant::now();
            let rec = xoq_record::read::Recording::read(&std::fs::read(&out)?)?;
            let opts = xoq_record::lerobot::ExportOptions {
                fps: 30,
                state: Vec::new(),
                action: Vec::new(),
                task: "bench".into(),
                robot_type: None,
            };
            let s = xoq_record::lerobot::export(&rec, &opts, &ds)?;
            Ok((s, t.elapsed().as_secs_f64()))
        }
    })
    .await?;
    let _ = std::fs::remove_dir_all(&dir);
    let (summary, export_s) = exported?;
    println!("{}", text.trim_end());
    let dropped = text
        .lines()
        .find_map(|l| {
            l.split(", ")
                .nth(1)?
                .strip_suffix(" dropped)")?
                .parse::<u64>()
                .ok()
        })
        .unwrap_or(0);
    println!();
    println!(
        "recorder: {:.2} cores ({cpu:.2} s CPU over {wall:.1} s), {:.1} MB/min, {dropped} dropped; {sent} commands sent",
        cpu / wall,
        bytes as f64 / 1e6 / (seconds / 60.0)
    );
    let ms = |ns: u64| ns as f64 / 1e6;
    let c = &summary.camera_to_state;
    println!(
        "export (LeRobot v3.0, 30 fps): {} rows in {export_s:.1} s ({}); camera frame vs paired joint sample: p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms; {} of {} pairs over half a frame (16.67 ms)",
        summary.frames,
        if summary.cameras.iter().any(|c| c.reencoded) {
            "video re-encoded"
        } else {
            "video copied"
        },
        ms(c.p50_ns),
        ms(c.p99_ns),
        ms(c.max_ns),
        c.over_half_row,
        c.pairs
    );
    Ok(())
}

/// A private scratch directory for the recording.
fn tempfile_dir() -> anyhow::Result<std::path::PathBuf> {
    let d = std::env::temp_dir().join(format!(
        "xoq-bench-record-{}-{:x}",
        std::process::id(),
        rand::random::<u32>()
    ));
    std::fs::create_dir_all(&d)?;
    Ok(d)
}
