//! `xoq audio-server` and `xoq audio-client`.

use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Args;
use iroh::protocol::Router;
use xoq_client::audio::{AudioOptions, RemoteAudio};
use xoq_server::audio::{ALPN, AudioServer};
use xoq_wire::audio::AudioCodec;

use super::common::{self, RelayTask, Running, ServerArgs, WriteArgs};

/// `xoq audio-server DEVICE`.
#[derive(Debug, Args)]
pub struct AudioServerCmd {
    /// Device: sim:tone[:HZ] (a sine microphone, default 440 Hz, and a recording speaker).
    #[arg(required_unless_present = "list")]
    pub device: Option<String>,
    /// List the audio devices this build can open, then exit.
    #[arg(long)]
    pub list: bool,
    /// Sample rate (8000, 12000, 16000, 24000 or 48000).
    #[arg(long, default_value_t = 48_000)]
    pub rate: u32,
    /// Channels (1 or 2).
    #[arg(long, default_value_t = 1)]
    pub channels: u8,
    /// Let a new talker take the speaker from the current one instead of refusing it.
    #[arg(long)]
    pub takeover: bool,
    #[command(flatten)]
    pub writes: WriteArgs,
    #[command(flatten)]
    pub server: ServerArgs,
}

/// Start serving `device`: P2P (unless `--no-p2p`) and, with `--relay`, a hang broadcast.
pub(super) async fn start(
    device: &str,
    rate: u32,
    channels: u8,
    takeover: bool,
    writes: bool,
    args: &ServerArgs,
) -> anyhow::Result<Running<AudioServer>> {
    let default_path = format!("anon/xoq-audio-{}", device.replace([':', '/'], "-"));
    let moq_addr = args.moq_address(&default_path)?;
    let server = AudioServer::builder(device, rate, channels)
        .with_context(|| format!("cannot serve audio device {device}"))?
        .takeover(takeover)
        .relay_writes(writes)
        .start()
        .with_context(|| format!("cannot serve audio device {device}"))?;
    let router = if args.no_p2p {
        None
    } else {
        let ep = args
            .endpoint(
                &format!("audio-{}", device.replace([':', '/'], "-")),
                vec![ALPN.to_vec()],
            )
            .await?;
        Some(Router::builder(ep).accept(ALPN, server.clone()).spawn())
    };
    let relay = match &moq_addr {
        Some(addr) => {
            let srv = server.clone();
            Some(RelayTask::spawn(
                addr,
                format!("audio {device}"),
                move |session, name| async move { Ok(srv.serve_moq(&session, &name).await?) },
            )?)
        }
        None => None,
    };
    Ok(Running {
        server,
        router,
        moq: moq_addr,
        relay,
    })
}

pub(super) async fn server(a: AudioServerCmd) -> anyhow::Result<()> {
    if a.list {
        for d in xoq_device::audio::list() {
            println!("{d}");
        }
        return Ok(());
    }
    let device = a.device.as_deref().unwrap_or("sim:tone");
    let writes = a.writes.writes()?;
    let running = start(device, a.rate, a.channels, a.takeover, writes, &a.server).await?;
    common::print_addresses(
        &format!(
            "xoq audio-server: serving {device} at {} Hz, {} channel(s), Opus or PCM",
            a.rate, a.channels
        ),
        running.router.as_ref().map(|r| r.endpoint()),
        a.server.p2p.offline(),
        running.moq.as_ref(),
        &[common::describe_writes(
            running.router.is_some(),
            running.moq.as_ref(),
            writes,
        )],
    );
    common::shutdown_signal().await;
    running.shutdown().await;
    Ok(())
}

/// `xoq audio-client ADDRESS`.
#[derive(Debug, Args)]
pub struct AudioClientCmd {
    /// Server address: <id> or <id>@<ip>:<port>.
    pub address: String,
    /// How long to listen, in seconds (default: until Ctrl-C).
    #[arg(long)]
    pub seconds: Option<f64>,
    /// Codec: opus, s16 or f32.
    #[arg(long, default_value = "opus")]
    pub codec: AudioCodec,
    /// Packet duration in ms (10, 20, 40, 60).
    #[arg(long, default_value_t = 20)]
    pub frame_ms: u8,
    /// Also talk: send a sine at this frequency to the speaker.
    #[arg(long)]
    pub talk_tone: Option<f32>,
    /// Client identity key (default $XOQ_KEY or ~/.config/xoq/client.key).
    #[arg(long)]
    pub key: Option<std::path::PathBuf>,
    /// No discovery (also XOQ_OFFLINE=1).
    #[arg(long)]
    pub offline: bool,
}

/// Prints one line a second: samples, level, gaps, and capture → here latency.
pub(super) async fn client(a: AudioClientCmd) -> anyhow::Result<()> {
    let opts = AudioOptions::new()
        .codec(a.codec)
        .frame_ms(a.frame_ms)
        .talk(a.talk_tone.is_some())
        .identity(common::client_identity(a.key.as_ref()))
        .offline(a.offline || xoq_transport::offline_from_env());
    let mut audio = RemoteAudio::connect(&a.address, opts)
        .await
        .with_context(|| format!("cannot open audio at {}", common::shown(&a.address)))?;
    let f = audio.format();
    println!(
        "{}: {} Hz, {} channel(s), {} in {} ms frames",
        audio.device(),
        f.rate,
        f.channels,
        f.codec.name(),
        f.frame_ms
    );
    let end = a
        .seconds
        .map(|s| Instant::now() + Duration::from_secs_f64(s));
    let mut tick = Instant::now();
    let (mut samples, mut sum_sq, mut lat) = (0usize, 0f64, Vec::new());
    let mut talked = 0u64;
    loop {
        if end.is_some_and(|e| Instant::now() >= e) {
            break;
        }
        let chunk = tokio::select! {
            c = audio.read() => c?,
            _ = common::shutdown_signal() => break,
        };
        lat.push(audio.robot_now_us().saturating_sub(chunk.capture_us));
        samples += chunk.samples.len();
        sum_sq += chunk
            .samples
            .iter()
            .map(|s| f64::from(*s).powi(2))
            .sum::<f64>();
        if let Some(hz) = a.talk_tone {
            // Talk at the pace we listen: one chunk's worth per chunk read.
            let n = chunk.samples.len() / usize::from(f.channels);
            let out: Vec<f32> = (0..n as u64)
                .flat_map(|i| {
                    let v = xoq_device::sim::audio::tone_sample(hz, f.rate, talked + i);
                    std::iter::repeat_n(v, usize::from(f.channels))
                })
                .collect();
            talked += n as u64;
            audio.write(&out).await?;
        }
        if tick.elapsed() >= Duration::from_secs(1) {
            lat.sort_unstable();
            println!(
                "{samples} samples, RMS {:.3}, gaps {} samples, latency capture -> here p50 {:.1} ms",
                (sum_sq / samples.max(1) as f64).sqrt(),
                audio
                    .stats()
                    .gap_samples
                    .load(std::sync::atomic::Ordering::Relaxed),
                lat.get(lat.len() / 2).copied().unwrap_or(0) as f64 / 1000.0
            );
            (samples, sum_sq) = (0, 0.0);
            lat.clear();
            tick = Instant::now();
        }
    }
    audio.close().await;
    Ok(())
}
