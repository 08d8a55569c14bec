//! `xoq demo`: a simulated robot and an embedded relay in one process, with a self-check
//! that talks to the simulated servos through both transports.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Args;
use xoq_client::serial::{RemoteSerial, SerialOptions};
use xoq_wire::feetech;

use super::common::{self, P2pArgs, ServerArgs};
use super::relay::RelayArgs;
use super::serial::{self as serial_cli, ServerCmd};

/// `xoq demo`.
#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Relay address (QUIC + HTTP).
    #[arg(long, default_value = "127.0.0.1:4443")]
    pub listen: SocketAddr,
    /// Also publish through iroh discovery (default: loopback only, no network needed).
    #[arg(long, conflicts_with = "offline")]
    pub online: bool,
    /// Loopback only, no discovery (the default; accepted like every command's `--offline`).
    #[arg(long)]
    pub offline: bool,
    /// Run the self-check and exit (used by tests and CI).
    #[arg(long)]
    pub check: bool,
    /// Address of the web pages (HTTP); port 0 picks a free one.
    #[arg(long, default_value = "127.0.0.1:8480")]
    pub web: SocketAddr,
    /// Record the demo's camera, OpenArm bus and SO-101 bus to this MCAP file until Ctrl-C;
    /// a scripted operator moves the OpenArm meanwhile, so the recording has commands and
    /// motion to export as a dataset.
    #[arg(long, value_name = "FILE.mcap")]
    pub record: Option<std::path::PathBuf>,
}

pub(super) async fn run(a: DemoArgs) -> anyhow::Result<()> {
    let relay = super::relay::config(&RelayArgs {
        listen: a.listen,
        tls_cert: None,
        tls_key: None,
        auth_key: None,
        auth_public: vec![],
        auth_public_subscribe: vec![],
        auth_public_publish: vec![],
        offline: true,
    })
    .start()
    .await
    .map_err(|e| {
        anyhow::anyhow!(
            "{e} (is another relay or demo already using {}? pass --listen)",
            a.listen
        )
    })?;
    let relay_url = relay.url().as_str().trim_end_matches('/').to_string();
    let offline = !a.online;
    let so101 = serial_cli::start(&ServerCmd {
        port: "sim:so101".into(),
        baud: 1_000_000,
        takeover: true,
        writes: demo_writes(),
        server: demo_server("demo-so101", &relay_url, Some("anon/xoq-so101"), offline),
    })
    .await?;
    let openarm = super::can::start_one(
        "sim:openarm",
        &super::can::SafetyArgs {
            writes: demo_writes(),
            ..Default::default()
        },
        &demo_server("demo-openarm", &relay_url, None, offline),
        Some("anon/xoq-openarm".into()),
    )
    .await?;
    let arm_p2p = direct_address(openarm.router.as_ref());
    let arm_moq = openarm
        .moq
        .as_ref()
        .map(|m| m.to_string())
        .unwrap_or_default();
    let camera = super::camera::start(&super::camera::CameraServerCmd {
        device: Some("sim:pattern".into()),
        list: false,
        h264: false,
        jpeg: false,
        width: Some(640),
        height: Some(480),
        fps: Some(30),
        gop: None,
        bitrate: None,
        quality: 80,
        server: demo_server("demo-camera", &relay_url, Some("anon/xoq-camera"), offline),
    })
    .await?;
    let cam_p2p = direct_address(camera.router.as_ref());
    let audio = super::audio::start(
        "sim:tone:440",
        48_000,
        1,
        false,
        true,
        &demo_server("demo-audio", &relay_url, Some("anon/xoq-audio"), offline),
    )
    .await?;
    let audio_p2p = direct_address(audio.router.as_ref());
    let depth = super::depth::start(&super::depth::DepthServerCmd {
        device: "sim:depth".into(),
        color: None,
        color_size: None,
        width: Some(640),
        height: Some(480),
        fps: Some(30),
        depth_scale: None,
        intrinsics: None,
        quality: 80,
        path: None,
        server: demo_server("demo-depth", &relay_url, Some("anon/xoq-depth"), offline),
    })
    .await?;
    let depth_p2p = direct_address(depth.router.as_ref());
    let p2p_addr = direct_address(so101.router.as_ref());
    let moq_addr = so101
        .moq
        .as_ref()
        .map(|m| m.to_string())
        .unwrap_or_default();

    println!("xoq demo: simulated robot + relay");
    println!();
    println!("  relay            {relay_url}  (moq-relay, development certificate)");
    println!("  SO-101 arm       simulated Feetech STS3215 bus, servo ids 1-6, 1 Mbaud");
    println!("    P2P            {p2p_addr}");
    println!("    MoQ            {moq_addr}");
    println!(
        "  OpenArm          simulated CAN bus, 8 Damiao motors (0x01-0x08, replies 0x11-0x18)"
    );
    println!("    P2P            {arm_p2p}");
    println!("    MoQ            {arm_moq}");
    println!("  camera           test pattern 640x480 @ 30 fps, H.264 or JPEG");
    println!("    P2P            {cam_p2p}");
    println!("    MoQ            {relay_url}/anon/xoq-camera  (hang broadcast for the web player)");
    println!(
        "  microphone       440 Hz tone, 48 kHz mono, Opus or PCM; speaker: records what it is sent"
    );
    println!("    P2P            {audio_p2p}");
    println!(
        "    MoQ            {relay_url}/anon/xoq-audio  (hang broadcast, Opus, for the web player)"
    );
    println!(
        "  depth camera     synthetic scene 640x480 @ 30 fps: lossless depth (mm) + colour, a board at 1 m"
    );
    println!("    P2P            {depth_p2p}");
    println!(
        "    MoQ            {relay_url}/anon/xoq-depth  (colour for the web player, depth in the page)"
    );
    println!();

    println!("self-check:");
    let mut failed = None;
    let mut report = |what: String, label: &str, r: anyhow::Result<String>| match r {
        Ok(report) => println!("  {label:<4} ok   {report}"),
        Err(e) => {
            println!("  {label:<4} FAIL {e:#}");
            failed.get_or_insert(format!("demo self-check of the {what} over {label} failed"));
        }
    };
    for (label, addr) in [("P2P", &p2p_addr), ("MoQ", &moq_addr)] {
        report("SO-101".into(), label, check(addr).await);
    }
    for (label, addr) in [("P2P", &arm_p2p), ("MoQ", &arm_moq)] {
        report("OpenArm".into(), label, check_arm(addr).await);
    }
    report("camera".into(), "P2P", check_camera(&cam_p2p).await);
    report("microphone".into(), "P2P", check_audio(&audio_p2p).await);
    report("depth camera".into(), "P2P", check_depth(&depth_p2p).await);
    let stop = || async {
        depth.shutdown().await;
        audio.shutdown().await;
        camera.shutdown().await;
        openarm.shutdown().await;
        so101.shutdown().await;
        relay.shutdown().await;
    };
    if a.check {
        stop().await;
        return match failed {
            Some(why) => Err(anyhow::anyhow!(why)),
            None => Ok(()),
        };
    }
    let web = if super::web::available() {
        let config = format!(
            "{{\"relay\":{},\"so101\":\"xoq-so101\",\"openarm\":\"xoq-openarm\",\"camera\":\"xoq-camera\",\"audio\":\"xoq-audio\",\"depth\":\"xoq-depth\"}}",
            super::web::json_str(&format!("{relay_url}/anon"))
        );
        match super::web::serve(a.web, config).await {
            Ok((addr, task)) => Some((format!("http://{addr}/"), task)),
            Err(e) => {
                println!("  web pages        not served: {e:#}");
                None
            }
        }
    } else {
        println!("  web pages        not built into this binary (run `npm run pages` in js/)");
        None
    };
    println!();
    if let Some((url, _)) = &web {
        println!("open in a browser: {url}");
    }
    println!();
    println!("try:");
    println!("  xoq serial-pty {p2p_addr} --link /tmp/ttyXOQ   # any program can open /tmp/ttyXOQ");
    println!(
        "  python (pip install \".[all]\"): serial.Serial(\"{p2p_addr}\", 1000000, timeout=0.1)"
    );
    println!("          can.Bus(\"{arm_p2p}\")   # interface \"xoq\"");
    println!("  xoq can-client {arm_p2p} --send 001#FFFFFFFFFFFFFFFC --count 1   # enable motor 1");
    println!("  xoq camera-client {cam_p2p} --frames 90   # frames and their latency");
    println!("  python: xoq_cv2.VideoCapture(\"{cam_p2p}\").read()   # (True, BGR array)");
    println!(
        "  xoq audio-client {audio_p2p} --seconds 5   # level, gaps, latency of the microphone"
    );
    println!("  xoq depth-client {depth_p2p} --frames 30   # distance at the centre, latency");
    println!(
        "  python: import xoq.realsense as rs   # pyrealsense2-style pipeline on \"{depth_p2p}\""
    );
    println!("  xoq bench serial                               # latency vs raw QUIC");
    println!();
    let recording = a.record.clone().map(|output| {
        println!(
            "recording to {} (a scripted operator waves the OpenArm's joints meanwhile)",
            output.display()
        );
        let (stop_op, op_rx) = tokio::sync::watch::channel(false);
        let operator = tokio::spawn(operate(arm_p2p.clone(), op_rx));
        let cmd = super::record::RecordCmd {
            sources: vec![
                format!("camera:camera={cam_p2p}"),
                format!("can:openarm={arm_moq}"),
                format!("serial:so101={p2p_addr}"),
            ],
            output,
            duration: None,
            key: None,
            video_dir: None,
            episode_marker: Vec::new(),
            urdf: None,
        };
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(super::record::run_until(cmd, async {
            let _ = stop_rx.await;
        }));
        (stop_tx, task, stop_op, operator)
    });
    println!("ready (Ctrl-C to stop)");
    common::shutdown_signal().await;
    if let Some((stop, task, stop_op, operator)) = recording {
        // Finish the file while the devices are still there.
        let _ = stop_op.send(true);
        if let Ok(Err(e)) = operator.await {
            println!("the scripted operator stopped: {e:#}");
        }
        let _ = stop.send(());
        match task.await {
            Ok(Err(e)) => println!("recording failed: {e:#}"),
            Err(e) => println!("recording failed: {e}"),
            Ok(Ok(())) => {
                if let Some(file) = &a.record {
                    println!(
                        "as a LeRobot dataset: xoq export lerobot {} -o {}-dataset",
                        file.display(),
                        file.with_extension("").display()
                    );
                }
            }
        }
    }
    if let Some((_, task)) = web {
        task.abort();
    }
    stop().await;
    Ok(())
}

/// Ping the six servos and read their positions through `addr`; report the round trip.
async fn check(addr: &str) -> anyhow::Result<String> {
    let port = RemoteSerial::connect(
        addr,
        SerialOptions::new(1_000_000)
            .offline(true)
            .client_name("demo-check"),
    )
    .await?;
    let mut positions = Vec::new();
    let mut rtts = Vec::new();
    for id in 1..=6u8 {
        let t = Instant::now();
        let status = transact(
            &port,
            &feetech::instruction(id, feetech::READ, &[feetech::PRESENT_POSITION, 2]),
        )
        .await?;
        rtts.push(t.elapsed());
        anyhow::ensure!(
            status.id == id && status.error == 0,
            "servo {id} answered {status:?}"
        );
        let p = status.params;
        anyhow::ensure!(p.len() == 2, "servo {id}: short reply");
        positions.push(u16::from_le_bytes([p[0], p[1]]));
    }
    rtts.sort();
    let report = format!(
        "6/6 servos answered, positions {positions:?}, median round trip {:?}",
        rtts[rtts.len() / 2]
    );
    port.close().await;
    Ok(report)
}

/// Send one instruction and wait for its status packet.
pub(crate) async fn transact(
    port: &RemoteSerial,
    packet: &[u8],
) -> anyhow::Result<feetech::Status> {
    port.write(packet).await?;
    let mut acc = Vec::new();
    let mut buf = [0u8; 256];
    let deadline = tokio::time::Instant::now() + Duration::from_secs(3);
    loop {
        match feetech::decode_status(&acc) {
            Ok((s, _)) => return Ok(s),
            Err(xoq_wire::DecodeError::Short) => {}
            Err(e) => anyhow::bail!("bad reply: {e}"),
        }
        let n = tokio::time::timeout_at(deadline, port.read(&mut buf))
            .await
            .map_err(|_| anyhow::anyhow!("no reply within 3 s"))??;
        acc.extend_from_slice(&buf[..n]);
    }
}

/// Enable and disable every OpenArm motor through `addr`; report the feedback round trip.
/// The demo's scripted operator: enables the OpenArm's motors and sends MIT commands to all
/// eight every 10 ms, each joint a slow wave of its own phase (what a leader arm would send),
/// until `stop`; then disables them.
async fn operate(addr: String, mut stop: tokio::sync::watch::Receiver<bool>) -> anyhow::Result<()> {
    use xoq_client::can::{CanOptions, RemoteCanBus};
    use xoq_wire::can::CanFrame;
    use xoq_wire::damiao::{CMD_DISABLE, CMD_ENABLE, OPENARM_MOTORS, encode_mit};
    let bus = RemoteCanBus::connect(&addr, CanOptions::new().offline(true).ephemeral()).await?;
    for (cmd, _, _) in OPENARM_MOTORS {
        bus.send(&CanFrame::new(cmd, CMD_ENABLE.to_vec())?).await?;
    }
    let t0 = Instant::now();
    let mut tick = tokio::time::interval(Duration::from_millis(10));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    while !*stop.borrow() {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.changed() => break,
        }
        let t = t0.elapsed().as_secs_f32();
        for (i, &(cmd, _, model)) in OPENARM_MOTORS.iter().enumerate() {
            let p = 0.4 * (std::f32::consts::TAU * t / 4.0 + i as f32 * 0.6).sin();
            let mit = encode_mit(model, p, 0.0, 10.0, 1.0, 0.0);
            bus.send(&CanFrame::new(cmd, mit.to_vec())?).await?;
        }
    }
    for (cmd, _, _) in OPENARM_MOTORS {
        bus.send(&CanFrame::new(cmd, CMD_DISABLE.to_vec())?).await?;
    }
    bus.close().await;
    Ok(())
}

async fn check_arm(addr: &str) -> anyhow::Result<String> {
    use xoq_client::can::{CanOptions, RemoteCanBus};
    use xoq_wire::can::CanFrame;
    use xoq_wire::damiao::{CMD_DISABLE, CMD_ENABLE};
    let bus = RemoteCanBus::connect(addr, CanOptions::new().offline(true)).await?;
    let mut rtts = Vec::new();
    for cmd in [CMD_ENABLE, CMD_DISABLE] {
        for id in 1..=8u32 {
            let t = Instant::now();
            bus.send(&CanFrame::new(id, cmd.to_vec())?).await?;
            loop {
                let f = bus
                    .recv_timeout(Duration::from_secs(3))
                    .await?
                    .ok_or_else(|| anyhow::anyhow!("motor {id} did not answer within 3 s"))?;
                if f.frame.id == 0x10 + id {
                    rtts.push(t.elapsed());
                    break;
                }
            }
        }
    }
    rtts.sort();
    let report = format!(
        "8/8 motors answered enable and disable, median round trip {:?}",
        rtts[rtts.len() / 2]
    );
    bus.close().await;
    Ok(report)
}

/// Watch the camera over P2P until a picture decodes with its embedded stamp intact.
async fn check_camera(addr: &str) -> anyhow::Result<String> {
    use xoq_client::camera::{CameraOptions, RemoteCamera};
    let mut cam = RemoteCamera::connect(addr, CameraOptions::new().offline(true)).await?;
    let codec = cam.codec();
    let (f, img) = tokio::time::timeout(std::time::Duration::from_secs(10), cam.next_rgb())
        .await
        .map_err(|_| anyhow::anyhow!("no picture within 10 s"))??;
    let stamp = xoq_device::camera::read_stamp(&img.data, img.width, img.height);
    cam.close().await;
    anyhow::ensure!(
        stamp == Some((f.seq, f.timestamp_us)),
        "the picture's stamp does not match its frame header"
    );
    let ms = (xoq_device::camera::now_us().saturating_sub(f.timestamp_us)) as f64 / 1000.0;
    Ok(format!(
        "camera: {}x{} {codec:?} picture decoded, frame {}, {ms:.0} ms after capture",
        img.width, img.height, f.seq
    ))
}

/// One capture of the synthetic depth camera: the board at the centre must be 1 m away and
/// the colour picture must be from the same capture.
async fn check_depth(addr: &str) -> anyhow::Result<String> {
    use xoq_client::depth::{DepthOptions, RemoteDepthCamera};
    let mut cam = RemoteDepthCamera::connect(addr, DepthOptions::new().offline(true)).await?;
    let set = tokio::time::timeout(std::time::Duration::from_secs(10), cam.next())
        .await
        .map_err(|_| anyhow::anyhow!("no capture within 10 s"))??;
    let scale = cam.info().scale;
    cam.close().await;
    let d = &set.depth;
    let centre = f32::from(d.data[(d.height / 2 * d.width + d.width / 2) as usize]) * scale;
    anyhow::ensure!(
        (centre - xoq_device::depth::scene::TARGET_M).abs() < 0.01,
        "the board reads {centre:.3} m instead of 1 m"
    );
    let color = set.color.context("no colour picture with the depth")?;
    anyhow::ensure!(
        xoq_device::camera::read_stamp(&color.data, color.width, color.height)
            == Some((set.seq, set.timestamp_us)),
        "the colour picture is not from the depth picture's capture"
    );
    Ok(format!(
        "depth: {}x{} lossless, board at {centre:.3} m, colour from the same capture",
        d.width, d.height
    ))
}

/// Listen to the tone microphone for a quarter second: the samples must be the 440 Hz tone
/// at their stream positions (PCM, so exactly), with no gap.
async fn check_audio(addr: &str) -> anyhow::Result<String> {
    use xoq_client::audio::{AudioOptions, RemoteAudio};
    let opts = AudioOptions::new()
        .offline(true)
        .codec(xoq_wire::audio::AudioCodec::PcmF32);
    let mic = RemoteAudio::connect(addr, opts).await?;
    let mut worst = 0f32;
    let mut ms = 0.0;
    for _ in 0..12 {
        let c = tokio::time::timeout(std::time::Duration::from_secs(5), mic.read())
            .await
            .map_err(|_| anyhow::anyhow!("no audio within 5 s"))??;
        for (i, v) in c.samples.iter().enumerate() {
            let want =
                xoq_device::sim::audio::tone_sample(440.0, 48_000, c.first_sample + i as u64);
            worst = worst.max((v - want).abs());
        }
        ms = xoq_device::now_us().saturating_sub(c.capture_us) as f64 / 1000.0;
    }
    let gaps = mic
        .stats()
        .gap_samples
        .load(std::sync::atomic::Ordering::Relaxed);
    mic.close().await;
    anyhow::ensure!(
        worst == 0.0 && gaps == 0,
        "the tone arrived altered (max error {worst}, {gaps} samples missing)"
    );
    Ok(format!(
        "microphone: 240 ms of the 440 Hz tone, exact and continuous, {ms:.0} ms after capture"
    ))
}

/// The demo's relay is on loopback and its pages command the robot through it: relay
/// writes on (a robot on a network would keep them off or require tokens).
fn demo_writes() -> super::common::WriteArgs {
    super::common::WriteArgs {
        moq_writes: Some("on".into()),
        ..Default::default()
    }
}

/// Server flags of one demo device: its own key, the demo relay, loopback unless --online.
fn demo_server(key: &str, relay_url: &str, moq: Option<&str>, offline: bool) -> ServerArgs {
    ServerArgs {
        p2p: P2pArgs {
            key: Some(xoq_transport::key::default_key_path(key)),
            bind: None,
            offline,
        },
        relay: Some(relay_url.to_string()),
        moq: moq.map(str::to_string),
        allow: vec![],
        allow_file: None,
        no_p2p: false,
    }
}

/// The direct P2P address (`<id>@127.0.0.1:<port>`) of a demo device, or "" without P2P.
fn direct_address(router: Option<&iroh::protocol::Router>) -> String {
    router
        .and_then(|r| {
            xoq_transport::p2p::client_addresses(r.endpoint(), true)
                .into_iter()
                .next()
        })
        .unwrap_or_default()
}
