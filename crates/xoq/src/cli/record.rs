//! `xoq record SOURCE... -o FILE.mcap`: cameras and CAN buses to MCAP, on the robot's clock.
//!
//! Each source runs as its own task (a camera viewer, a relay subscriber) and hands messages
//! to the one writer through a bounded queue; a full queue blocks the source (its server then
//! skips frames for it, counted as dropped) rather than growing without bound. The recorder
//! never becomes a controller: cameras are viewers, and CAN is read from the relay, where a
//! subscriber cannot write.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Args;
use tokio::sync::mpsc;
use xoq_client::camera::{CameraOptions, RemoteCamera};
use xoq_record::McapRecorder;
use xoq_record::damiao::{Arm, Decoded};
use xoq_transport::Address;
use xoq_transport::moq::{MoqSession, Redial};
use xoq_wire::camera::Codec;
use xoq_wire::can::{CanFrame, decode_track_frame};

use super::common;

/// `xoq record`.
#[derive(Debug, Args)]
pub struct RecordCmd {
    /// What to record: `[camera:|can:][NAME=]ADDRESS`. Cameras: any camera address (P2P or
    /// relay). CAN buses: the server's relay address (read-only). Without a kind, a relay
    /// address is probed and a P2P address is a camera.
    #[arg(required = true)]
    pub sources: Vec<String>,
    /// The MCAP file to write.
    #[arg(short, long)]
    pub output: PathBuf,
    /// Stop after this many seconds (default: Ctrl-C).
    #[arg(long)]
    pub duration: Option<f64>,
    /// Client identity key (default $XOQ_KEY or ~/.config/xoq/client.key).
    #[arg(long)]
    pub key: Option<PathBuf>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Camera,
    Can,
}

#[derive(Debug, Clone)]
struct Source {
    kind: Option<Kind>,
    name: String,
    address: String,
}

fn parse_source(s: &str, n: usize) -> anyhow::Result<Source> {
    let (kind, rest) = match s.split_once(':') {
        Some(("camera", r)) => (Some(Kind::Camera), r),
        Some(("can", r)) => (Some(Kind::Can), r),
        _ => (None, s),
    };
    let (name, address) = match rest.split_once('=') {
        Some((n, a)) if !n.contains('/') && !n.contains(':') => (n.to_string(), a.to_string()),
        _ => (String::new(), rest.to_string()),
    };
    let _: Address = address
        .parse()
        .with_context(|| format!("source {s:?}: not an address"))?;
    let name = if name.is_empty() {
        format!("source{n}")
    } else {
        name
    };
    anyhow::ensure!(
        name.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_')),
        "source name {name:?}: letters, digits, '-' and '_' (it becomes a topic)"
    );
    Ok(Source {
        kind,
        name,
        address,
    })
}

/// One message for the writer.
enum Msg {
    Video {
        topic: String,
        frame_id: String,
        capture_ns: u64,
        receive_ns: u64,
        data: bytes::Bytes,
    },
    Can {
        name: String,
        capture_ns: u64,
        receive_ns: u64,
        frame: CanFrame,
    },
    /// Frames a source knows it missed.
    Dropped(u64),
    /// A source ended (the reason).
    Ended(String, String),
}

/// Messages waiting for the writer (about 2 s of a 1 kHz bus plus video).
const QUEUE: usize = 4096;

async fn record_camera(source: Source, opts: CameraOptions, tx: mpsc::Sender<Msg>) {
    let why = async {
        let mut cam = RemoteCamera::connect(&source.address, opts.codecs(&[Codec::H264])).await?;
        let topic = format!("/{}/video", source.name);
        let mut started = false;
        let mut last: Option<u64> = None;
        loop {
            let f = cam.next_frame().await?;
            let receive_ns = xoq_record::ns(xoq_device::now_us());
            // Players start at a keyframe: skip what comes before the first one.
            if !started && !f.keyframe {
                continue;
            }
            started = true;
            if let Some(prev) = last {
                let missed = f.seq.saturating_sub(prev + 1);
                if missed > 0 && tx.send(Msg::Dropped(missed)).await.is_err() {
                    break;
                }
            }
            last = Some(f.seq);
            let msg = Msg::Video {
                topic: topic.clone(),
                frame_id: source.name.clone(),
                capture_ns: xoq_record::ns(f.timestamp_us),
                receive_ns,
                data: f.data,
            };
            if tx.send(msg).await.is_err() {
                break;
            }
        }
        cam.close().await;
        Ok::<_, anyhow::Error>("stopped".to_string())
    };
    let why = match why.await {
        Ok(s) => s,
        Err(e) => format!("{e:#}"),
    };
    let _ = tx.send(Msg::Ended(source.name, why)).await;
}

async fn record_can(source: Source, tx: mpsc::Sender<Msg>) {
    let why = async {
        let Address::Moq { relay, name } = source.address.parse::<Address>()? else {
            anyhow::bail!(
                "{}: record CAN through the relay (`<relay-url>/<path>`), where a subscriber is read-only; \
                 a P2P session would count as a controller of the motors",
                source.address
            );
        };
        let session = MoqSession::connect(&relay, Redial::Forever).await?;
        let mut data = session.read_track(&format!("{name}/state"), "data");
        loop {
            let payload = data.next().await?;
            let receive_ns = xoq_record::ns(xoq_device::now_us());
            let frames = match decode_track_frame(&payload) {
                Ok(f) => f,
                Err(e) => {
                    tracing::warn!("{}: undecodable batch ({e}), skipped", source.name);
                    if tx.send(Msg::Dropped(1)).await.is_err() {
                        break;
                    }
                    continue;
                }
            };
            for t in frames {
                let msg = Msg::Can {
                    name: source.name.clone(),
                    capture_ns: xoq_record::ns(t.timestamp_us),
                    receive_ns,
                    frame: t.frame,
                };
                if tx.send(msg).await.is_err() {
                    return Ok("stopped".to_string());
                }
            }
        }
        Ok("stopped".to_string())
    };
    let why = match why.await {
        Ok(s) => s,
        Err(e) => format!("{e:#}"),
    };
    let _ = tx.send(Msg::Ended(source.name, why)).await;
}

/// The kind of a source given without one: a relay broadcast with a catalog is a camera, one
/// with a `state` broadcast a CAN bus; a P2P address is a camera.
async fn probe(address: &str) -> anyhow::Result<Kind> {
    let Address::Moq { relay, name } = address.parse::<Address>()? else {
        return Ok(Kind::Camera);
    };
    let session = MoqSession::connect(&relay, Redial::Never).await?;
    let mut catalog = session.read_track(&name, "catalog.json").until_gone();
    let mut state = session
        .read_track(&format!("{name}/state"), "data")
        .until_gone();
    let kind = tokio::select! {
        Ok(_) = catalog.next() => Some(Kind::Camera),
        Ok(_) = state.next() => Some(Kind::Can),
        _ = tokio::time::sleep(Duration::from_secs(10)) => None,
    };
    session.close().await;
    kind.with_context(|| {
        format!("{address}: nothing there looks like a camera or a CAN bus; say camera: or can:")
    })
}

pub(super) async fn run(a: RecordCmd) -> anyhow::Result<()> {
    run_until(a, common::shutdown_signal()).await
}

/// Record until `stop` resolves (or `--duration` passes, or every source ended).
pub(super) async fn run_until(
    a: RecordCmd,
    stop: impl std::future::Future<Output = ()>,
) -> anyhow::Result<()> {
    let mut sources = a
        .sources
        .iter()
        .enumerate()
        .map(|(i, s)| parse_source(s, i + 1))
        .collect::<anyhow::Result<Vec<_>>>()?;
    for s in &mut sources {
        if s.kind.is_none() {
            s.kind = Some(probe(&s.address).await?);
        }
        if s.kind == Some(Kind::Can)
            && !matches!(s.address.parse::<Address>(), Ok(Address::Moq { .. }))
        {
            anyhow::bail!(
                "{}: record CAN through the relay (`<relay-url>/<path>`), where a subscriber is read-only; \
                 a P2P session would count as a controller of the motors",
                s.address
            );
        }
    }
    let file = std::fs::File::create(&a.output)
        .with_context(|| format!("cannot create {}", a.output.display()))?;
    let mut rec = McapRecorder::new(std::io::BufWriter::new(file))?;
    let host = nix::unistd::gethostname()
        .ok()
        .and_then(|h| h.into_string().ok())
        .unwrap_or_else(|| "xoq".into());
    let listed: Vec<String> = sources
        .iter()
        .map(|s| {
            format!(
                "{}={}:{}",
                s.name,
                if s.kind == Some(Kind::Can) {
                    "can"
                } else {
                    "camera"
                },
                // Never a relay token in the file.
                common::shown(&s.address)
            )
        })
        .collect();
    let started_ns = xoq_record::ns(xoq_device::now_us()).to_string();
    rec.metadata("foxglove", &[("deviceName", &host)])?;
    rec.metadata(
        "xoq",
        &[
            ("sources", &listed.join(" ")),
            ("recorder", &format!("xoq {}", env!("CARGO_PKG_VERSION"))),
            ("started_ns", &started_ns),
            ("clock", "log_time = capture time on the robot (ns since the Unix epoch); publish_time = when the recorder received it"),
            ("arms", "CAN joint topics decode an OpenArm: motors 0x01-0x08 (feedback 0x11-0x18), DM8009 x2, DM4340 x2, DM4310 x4"),
        ],
    )?;
    let (tx, mut rx) = mpsc::channel(QUEUE);
    let identity = common::client_identity(a.key.as_ref());
    let mut tasks = Vec::new();
    let mut arms = std::collections::HashMap::new();
    for s in sources.clone() {
        let tx = tx.clone();
        match s.kind {
            Some(Kind::Can) => {
                arms.insert(s.name.clone(), Arm::openarm(&s.name));
                tasks.push(tokio::spawn(record_can(s, tx)));
            }
            _ => {
                let opts = CameraOptions::new().identity(identity.clone());
                tasks.push(tokio::spawn(record_camera(s, opts, tx)));
            }
        }
    }
    drop(tx);
    println!(
        "xoq record: {} source(s) to {} (Ctrl-C to stop)",
        sources.len(),
        a.output.display()
    );
    let t0 = Instant::now();
    let deadline = a
        .duration
        .map(|d| tokio::time::Instant::now() + Duration::from_secs_f64(d.max(0.0)));
    let mut dropped = 0u64;
    let mut live = sources.len();
    let mut failures: Vec<String> = Vec::new();
    // A terminal gets one line updated in place; a log gets a line per second.
    let (lead, tail) = if std::io::IsTerminal::is_terminal(&std::io::stderr()) {
        ("\r", "   ")
    } else {
        ("", "\n")
    };
    let mut progress = tokio::time::interval(Duration::from_secs(1));
    tokio::pin!(stop);
    loop {
        let msg = tokio::select! {
            m = rx.recv() => m,
            _ = &mut stop => break,
            _ = async {
                match deadline {
                    Some(d) => tokio::time::sleep_until(d).await,
                    None => std::future::pending().await,
                }
            } => break,
            _ = progress.tick() => {
                let (n, b) = rec.stats().values().fold((0, 0), |(n, b), s| (n + s.messages, b + s.bytes));
                eprint!(
                    "{lead}{:6.1} s  {} streams  {n} messages  {:.1} MB  dropped {dropped}{tail}",
                    t0.elapsed().as_secs_f64(),
                    live,
                    b as f64 / 1e6
                );
                rec.flush()?;
                continue;
            }
        };
        let Some(msg) = msg else { break };
        match msg {
            Msg::Video {
                topic,
                frame_id,
                capture_ns,
                receive_ns,
                data,
            } => rec.video(&topic, &frame_id, capture_ns, receive_ns, &data)?,
            Msg::Can {
                name,
                capture_ns,
                receive_ns,
                frame,
            } => {
                rec.can_frame(&format!("/{name}/frames"), capture_ns, receive_ns, &frame)?;
                match arms
                    .get(&name)
                    .and_then(|arm| arm.decode(capture_ns, &frame))
                {
                    Some(Decoded::Feedback(js)) => {
                        rec.joints(&format!("/{name}/joint_states"), receive_ns, &js)?
                    }
                    Some(Decoded::Command(js)) => {
                        rec.joints(&format!("/{name}/joint_commands"), receive_ns, &js)?
                    }
                    None => {}
                }
            }
            Msg::Dropped(n) => dropped += n,
            Msg::Ended(name, why) => {
                live -= 1;
                eprintln!("\n{name}: {why}");
                if why != "stopped" {
                    failures.push(format!("{name}: {why}"));
                }
            }
        }
    }
    for t in &tasks {
        t.abort();
    }
    eprintln!();
    let stats = rec.stats().clone();
    rec.finish()?;
    for (topic, s) in &stats {
        println!(
            "  {topic:<32} {:>8} messages {:>10.2} MB",
            s.messages,
            s.bytes as f64 / 1e6
        );
    }
    println!(
        "wrote {} ({:.1} s, {dropped} dropped)",
        a.output.display(),
        t0.elapsed().as_secs_f64()
    );
    anyhow::ensure!(
        failures.len() < sources.len(),
        "every source failed: {}",
        failures.join("; ")
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sources_name_their_kind_and_topic() {
        let id = "ae58ff8833241ac82d6ff7611046ed67b5072d142c588d0063e942d9a75502b6";
        let s = parse_source(&format!("camera:wrist={id}@127.0.0.1:9"), 1).expect("source");
        assert_eq!((s.kind, s.name.as_str()), (Some(Kind::Camera), "wrist"));
        let s = parse_source("can:http://127.0.0.1:4443/anon/arm", 2).expect("source");
        assert_eq!((s.kind, s.name.as_str()), (Some(Kind::Can), "source2"));
        let s = parse_source("http://127.0.0.1:4443/anon/cam", 3).expect("source");
        assert_eq!(s.kind, None);
        assert!(parse_source("camera:a b=http://x:1/anon/c", 1).is_err());
        assert!(parse_source("camera:nothing", 1).is_err());
    }
}
