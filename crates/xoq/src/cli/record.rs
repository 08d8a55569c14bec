//! `xoq record SOURCE... -o FILE.mcap`: cameras, CAN buses and serial (Feetech) buses to
//! MCAP, on the robot's clock.
//!
//! Each source runs as its own task (a camera viewer, an observer, a relay subscriber) and
//! hands messages to the one writer through a bounded queue; a full queue blocks the source
//! (its server then drops for it, counted as dropped) rather than growing without bound. The
//! recorder never becomes a controller: cameras are viewers, serial ports and P2P CAN buses
//! are read as observers (the server's read-only role: both directions, stamped, never
//! written, never the owner), and relay CAN is read from the `state` track, where a
//! subscriber cannot write.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Args;
use tokio::sync::mpsc;
use xoq_client::ClientError;
use xoq_client::camera::{CameraOptions, RemoteCamera};
use xoq_client::observe::{CanObserver, Direction, ObserveOptions, SerialObserver};
use xoq_record::McapRecorder;
use xoq_record::damiao::{Arm, Decoded};
use xoq_record::feetech::FeetechDecoder;
use xoq_record::mp4::LiveMp4;
use xoq_transport::Address;
use xoq_transport::moq::{MoqSession, Redial};
use xoq_wire::camera::Codec;
use xoq_wire::can::{CanFrame, decode_track_frame};

use super::common;

/// `xoq record`.
#[derive(Debug, Args)]
pub struct RecordCmd {
    /// What to record: `[camera:|can:|serial:][NAME=]ADDRESS`. Cameras: any camera address
    /// (P2P or relay). CAN buses: P2P (as a read-only observer) or the server's relay address.
    /// Serial (Feetech) buses: P2P or relay, as an observer. Without a kind, a relay address
    /// is probed and a P2P address is a camera.
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
    /// Also write each camera as fragmented MP4 (`DIR/<NAME>.mp4`, CMAF-style: playable up to
    /// its last group of pictures even if the recorder is killed), timed by capture times.
    #[arg(long, value_name = "DIR")]
    pub video_dir: Option<PathBuf>,
    /// What marks the start of a new episode while recording: `enter` (a line on stdin) and/or
    /// `signal` (SIGUSR1). `xoq export` splits the recording at the marks.
    #[arg(long, value_enum)]
    pub episode_marker: Vec<Marker>,
    /// The robot's URDF, attached to the file (`application/xml`, under its file name).
    #[arg(long, value_name = "FILE")]
    pub urdf: Option<PathBuf>,
}

/// What marks a new episode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Marker {
    /// Enter (a line on stdin).
    Enter,
    /// SIGUSR1 (`kill -USR1 <pid>`), for scripts.
    Signal,
}

/// Episode marks as they happen (the reason).
fn episode_marks(markers: &[Marker]) -> anyhow::Result<mpsc::Receiver<&'static str>> {
    let (tx, rx) = mpsc::channel(16);
    if markers.contains(&Marker::Enter) {
        let tx = tx.clone();
        tokio::spawn(async move {
            use tokio::io::AsyncBufReadExt;
            let mut lines = tokio::io::BufReader::new(tokio::io::stdin()).lines();
            while let Ok(Some(_)) = lines.next_line().await {
                if tx.send("enter").await.is_err() {
                    break;
                }
            }
        });
    }
    if markers.contains(&Marker::Signal) {
        let mut sig = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::user_defined1())
            .context("cannot watch SIGUSR1")?;
        tokio::spawn(async move {
            while sig.recv().await.is_some() {
                if tx.send("signal").await.is_err() {
                    break;
                }
            }
        });
    }
    Ok(rx)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Camera,
    Can,
    Serial,
}

impl Kind {
    fn word(self) -> &'static str {
        match self {
            Kind::Camera => "camera",
            Kind::Can => "can",
            Kind::Serial => "serial",
        }
    }
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
        Some(("serial", r)) => (Some(Kind::Serial), r),
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
    Serial {
        name: String,
        capture_ns: u64,
        receive_ns: u64,
        direction: Direction,
        data: bytes::Bytes,
    },
    /// A source lost traffic (its observer queue overflowed, or it reconnected): `units`
    /// counted as dropped, and a byte stream's decoder starts afresh.
    Gap { name: String, units: u64 },
    /// Frames a source knows it missed.
    Dropped(u64),
    /// A source ended (the reason).
    Ended(String, String),
}

/// The cameras' fragmented MP4 files of `--video-dir`. A file that cannot go on (a stream
/// the MP4 writer cannot take, a write error) stops with a warning; the MCAP recording, the
/// record of truth, goes on.
struct VideoFiles {
    dir: Option<PathBuf>,
    /// Camera name → its file, or `None` once it stopped.
    files: std::collections::BTreeMap<String, Option<LiveMp4<std::io::BufWriter<std::fs::File>>>>,
}

impl VideoFiles {
    fn new(dir: Option<PathBuf>) -> anyhow::Result<Self> {
        if let Some(d) = &dir {
            std::fs::create_dir_all(d).with_context(|| format!("cannot create {}", d.display()))?;
        }
        Ok(Self {
            dir,
            files: Default::default(),
        })
    }

    /// Add camera `name`'s access unit (nothing without `--video-dir`).
    fn push(&mut self, name: &str, capture_ns: u64, annex_b: &[u8]) {
        let Some(dir) = &self.dir else {
            return;
        };
        let slot = self.files.entry(name.to_string()).or_insert_with(|| {
            let path = dir.join(format!("{name}.mp4"));
            match std::fs::File::create(&path) {
                Ok(f) => Some(LiveMp4::new(std::io::BufWriter::new(f))),
                Err(e) => {
                    tracing::warn!("cannot create {}: {e}; no MP4 for {name}", path.display());
                    None
                }
            }
        });
        let Some(file) = slot else {
            return;
        };
        let key = xoq_media::h264::is_keyframe(annex_b);
        if let Err(e) = file.push(annex_b, capture_ns, key) {
            tracing::warn!("{name}.mp4: {e}; the file stops here (the MCAP recording goes on)");
            if let Some(f) = slot.take() {
                let _ = f.finish();
            }
        }
    }

    /// Close every file; a line about each.
    fn finish(self) -> anyhow::Result<Vec<String>> {
        let mut lines = Vec::new();
        for (name, f) in self.files {
            let Some(f) = f else { continue };
            let frames = f.frames();
            f.finish().with_context(|| format!("{name}.mp4"))?;
            if let Some(dir) = &self.dir {
                lines.push(format!(
                    "  {} ({frames} frames, fragmented MP4)",
                    dir.join(format!("{name}.mp4")).display()
                ));
            }
        }
        Ok(lines)
    }
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

/// How long an observer source keeps trying to reconnect after its link dropped.
const RECONNECT_FOR: Duration = Duration::from_secs(60);

/// Run an observer source: connect, pump with `pump` until the link drops, then reconnect
/// (a gap in the recording, counted) until [`RECONNECT_FOR`] passes without success. A
/// refusal (allowlist, version) ends it at once. Ends with the reason.
async fn observe_loop<O, C, P>(
    source: &Source,
    tx: &mpsc::Sender<Msg>,
    mut connect: impl FnMut() -> C,
    mut pump: impl FnMut(O) -> P,
) -> anyhow::Result<String>
where
    C: std::future::Future<Output = Result<O, ClientError>>,
    P: std::future::Future<Output = Result<(), ClientError>>,
{
    let mut down_since: Option<Instant> = None;
    loop {
        match connect().await {
            Ok(obs) => {
                if down_since.take().is_some() {
                    tracing::info!("{}: reconnected", source.name);
                }
                match pump(obs).await {
                    Ok(()) => return Ok("stopped".into()),
                    Err(e @ ClientError::Refused { .. }) => return Err(e.into()),
                    Err(e) => {
                        tracing::warn!("{}: {e}; reconnecting", source.name);
                        let gap = Msg::Gap {
                            name: source.name.clone(),
                            units: 0,
                        };
                        if tx.send(gap).await.is_err() {
                            return Ok("stopped".into());
                        }
                        down_since = Some(Instant::now());
                    }
                }
            }
            Err(e @ (ClientError::Refused { .. } | ClientError::Unsupported(_))) => {
                return Err(e.into());
            }
            Err(e) => match down_since {
                // The first connection must work: a wrong address is an error, not a wait.
                None => return Err(e.into()),
                Some(t) if t.elapsed() >= RECONNECT_FOR => {
                    anyhow::bail!("gone for {} s: {e}", RECONNECT_FOR.as_secs())
                }
                Some(_) => tokio::time::sleep(Duration::from_millis(500)).await,
            },
        }
    }
}

/// A read-only observer the recorder follows: serial or P2P CAN.
trait Observed: Sized {
    /// One observation.
    type Item;
    /// Connect to `address`.
    async fn connect(address: &str, opts: ObserveOptions) -> Result<Self, ClientError>;
    /// The next observation.
    async fn next(&mut self) -> Result<Self::Item, ClientError>;
    /// End the session.
    async fn close(self);
    /// The messages for the writer: what the server dropped just before it (if anything),
    /// then the observation itself.
    fn messages(name: &str, item: Self::Item, receive_ns: u64) -> (Option<Msg>, Msg);
}

impl Observed for SerialObserver {
    type Item = xoq_client::observe::SerialObservation;
    async fn connect(address: &str, opts: ObserveOptions) -> Result<Self, ClientError> {
        SerialObserver::connect(address, opts).await
    }
    async fn next(&mut self) -> Result<Self::Item, ClientError> {
        SerialObserver::next(self).await
    }
    async fn close(self) {
        SerialObserver::close(self).await
    }
    fn messages(name: &str, o: Self::Item, receive_ns: u64) -> (Option<Msg>, Msg) {
        // A gap in a serial stream also restarts the Feetech decoder.
        let gap = (o.dropped > 0).then(|| Msg::Gap {
            name: name.to_string(),
            units: o.dropped,
        });
        let msg = Msg::Serial {
            name: name.to_string(),
            capture_ns: xoq_record::ns(o.stamp_us),
            receive_ns,
            direction: o.direction,
            data: o.data,
        };
        (gap, msg)
    }
}

impl Observed for CanObserver {
    type Item = xoq_client::observe::CanObservation;
    async fn connect(address: &str, opts: ObserveOptions) -> Result<Self, ClientError> {
        CanObserver::connect(address, opts).await
    }
    async fn next(&mut self) -> Result<Self::Item, ClientError> {
        CanObserver::next(self).await
    }
    async fn close(self) {
        CanObserver::close(self).await
    }
    fn messages(name: &str, o: Self::Item, receive_ns: u64) -> (Option<Msg>, Msg) {
        let dropped = (o.dropped > 0).then_some(Msg::Dropped(o.dropped));
        let msg = Msg::Can {
            name: name.to_string(),
            capture_ns: xoq_record::ns(o.stamp_us),
            receive_ns,
            frame: o.frame,
        };
        (dropped, msg)
    }
}

/// Follow an observer of `source` (reconnecting as [`observe_loop`] does) until the writer
/// goes away.
async fn record_observed<O: Observed>(source: Source, opts: ObserveOptions, tx: mpsc::Sender<Msg>) {
    let why = observe_loop(
        &source,
        &tx,
        || O::connect(&source.address, opts.clone()),
        |mut obs: O| {
            let tx = tx.clone();
            let name = source.name.clone();
            async move {
                loop {
                    let item = obs.next().await?;
                    let receive_ns = xoq_record::ns(xoq_device::now_us());
                    let (dropped, msg) = O::messages(&name, item, receive_ns);
                    if let Some(d) = dropped
                        && tx.send(d).await.is_err()
                    {
                        break;
                    }
                    if tx.send(msg).await.is_err() {
                        break;
                    }
                }
                obs.close().await;
                Ok(())
            }
        },
    )
    .await;
    let why = why.unwrap_or_else(|e| format!("{e:#}"));
    let _ = tx.send(Msg::Ended(source.name, why)).await;
}

async fn record_can(source: Source, tx: mpsc::Sender<Msg>) {
    let why = async {
        let Address::Moq { relay, name } = source.address.parse::<Address>()? else {
            anyhow::bail!("{}: not a relay address", source.address);
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
/// with a `state` broadcast a CAN bus, one with an `s2c` broadcast a serial port (each as
/// soon as it carries something); a P2P address is a camera.
async fn probe(address: &str) -> anyhow::Result<Kind> {
    let Address::Moq { relay, name } = address.parse::<Address>()? else {
        return Ok(Kind::Camera);
    };
    let session = MoqSession::connect(&relay, Redial::Never).await?;
    let mut catalog = session.read_track(&name, "catalog.json").until_gone();
    let mut state = session
        .read_track(&format!("{name}/state"), "data")
        .until_gone();
    let mut s2c = session
        .read_track(&format!("{name}/s2c"), "data")
        .until_gone();
    let kind = tokio::select! {
        Ok(_) = catalog.next() => Some(Kind::Camera),
        Ok(_) = state.next() => Some(Kind::Can),
        Ok(_) = s2c.next() => Some(Kind::Serial),
        _ = tokio::time::sleep(Duration::from_secs(10)) => None,
    };
    session.close().await;
    kind.with_context(|| {
        format!(
            "{address}: nothing there looks like a camera, a CAN bus or a busy serial port; say camera:, can: or serial:"
        )
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
                s.kind.unwrap_or(Kind::Camera).word(),
                // Never a relay token in the file.
                common::shown(&s.address)
            )
        })
        .collect();
    let started = xoq_record::ns(xoq_device::now_us());
    let started_ns = started.to_string();
    rec.metadata("foxglove", &[("deviceName", &host)])?;
    rec.metadata(
        "xoq",
        &[
            ("sources", &listed.join(" ")),
            ("recorder", &format!("xoq {}", env!("CARGO_PKG_VERSION"))),
            ("started_ns", &started_ns),
            ("clock", "log_time = capture time on the robot (ns since the Unix epoch); publish_time = when the recorder received it"),
            ("arms", "CAN joint topics decode an OpenArm: motors 0x01-0x08 (feedback 0x11-0x18), DM8009 x2, DM4340 x2, DM4310 x4"),
            ("feetech", "serial joint topics decode Feetech STS servos (SO-100/SO-101): joint_states from reads of Present_Position (addr 56), joint_commands from writes of Goal_Position (addr 42); rad = (raw - 2048) * 2*pi / 4096, raw sign-magnitude (bit 15); joints motor<id>; /NAME/serial holds every chunk of both directions"),
        ],
    )?;
    if let Some(urdf) = &a.urdf {
        let data =
            std::fs::read(urdf).with_context(|| format!("cannot read {}", urdf.display()))?;
        let name = urdf
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "robot.urdf".into());
        rec.attach(&name, "application/xml", started, &data)?;
    }
    let (tx, mut rx) = mpsc::channel(QUEUE);
    let identity = common::client_identity(a.key.as_ref());
    let observe_opts = ObserveOptions::new()
        .identity(identity.clone())
        .client_name("xoq record");
    let mut tasks = Vec::new();
    let mut arms = std::collections::HashMap::new();
    let mut buses: std::collections::HashMap<String, FeetechDecoder> =
        std::collections::HashMap::new();
    let mut samples = Vec::new();
    for s in sources.clone() {
        let tx = tx.clone();
        match s.kind {
            Some(Kind::Can) => {
                arms.insert(s.name.clone(), Arm::openarm(&s.name));
                if matches!(s.address.parse::<Address>(), Ok(Address::Moq { .. })) {
                    tasks.push(tokio::spawn(record_can(s, tx)));
                } else {
                    tasks.push(tokio::spawn(record_observed::<CanObserver>(
                        s,
                        observe_opts.clone(),
                        tx,
                    )));
                }
            }
            Some(Kind::Serial) => {
                buses.insert(s.name.clone(), FeetechDecoder::new(&s.name));
                tasks.push(tokio::spawn(record_observed::<SerialObserver>(
                    s,
                    observe_opts.clone(),
                    tx,
                )));
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
    let mut marks = episode_marks(&a.episode_marker)?;
    let mut episode = 0u32;
    // The robot clock as last seen: (capture ns of the newest message, when it arrived).
    let mut robot_clock: Option<(u64, Instant)> = None;
    let mut videos = VideoFiles::new(a.video_dir.clone())?;
    tokio::pin!(stop);
    loop {
        let msg = tokio::select! {
            m = rx.recv() => m,
            Some(reason) = marks.recv() => {
                // The robot's time now: the newest capture time plus what has passed since
                // it arrived (short by the link's latency). Without any message yet, the
                // recorder's own clock.
                let now_ns = xoq_record::ns(xoq_device::now_us());
                let stamp = robot_clock
                    .map(|(ns, at)| ns + at.elapsed().as_nanos() as u64)
                    .unwrap_or(now_ns);
                episode += 1;
                rec.episode_mark(stamp, now_ns, episode, reason)?;
                eprintln!("\nepisode {episode} begins ({reason})");
                continue;
            }
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
            } => {
                robot_clock = Some((capture_ns, Instant::now()));
                videos.push(&frame_id, capture_ns, &data);
                rec.video(&topic, &frame_id, capture_ns, receive_ns, &data)?
            }
            Msg::Can {
                name,
                capture_ns,
                receive_ns,
                frame,
            } => {
                robot_clock = Some((capture_ns, Instant::now()));
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
            Msg::Serial {
                name,
                capture_ns,
                receive_ns,
                direction,
                data,
            } => {
                robot_clock = Some((capture_ns, Instant::now()));
                let code = match direction {
                    Direction::FromDevice => xoq_record::ros2::FROM_DEVICE,
                    Direction::ToDevice => xoq_record::ros2::TO_DEVICE,
                };
                rec.serial_chunk(
                    &format!("/{name}/serial"),
                    capture_ns,
                    receive_ns,
                    code,
                    &data,
                )?;
                if let Some(dec) = buses.get_mut(&name) {
                    dec.feed(direction, capture_ns, &data, &mut samples);
                }
                for s in samples.drain(..) {
                    match s {
                        Decoded::Feedback(js) => {
                            rec.joints(&format!("/{name}/joint_states"), receive_ns, &js)?
                        }
                        Decoded::Command(js) => {
                            rec.joints(&format!("/{name}/joint_commands"), receive_ns, &js)?
                        }
                    }
                }
            }
            Msg::Gap { name, units } => {
                dropped += units;
                if let Some(dec) = buses.get_mut(&name) {
                    dec.gap();
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
    for line in videos.finish()? {
        println!("{line}");
    }
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
        let s = parse_source(&format!("serial:arm={id}@127.0.0.1:9"), 4).expect("source");
        assert_eq!((s.kind, s.name.as_str()), (Some(Kind::Serial), "arm"));
        assert!(parse_source("camera:a b=http://x:1/anon/c", 1).is_err());
        assert!(parse_source("camera:nothing", 1).is_err());
    }
}
