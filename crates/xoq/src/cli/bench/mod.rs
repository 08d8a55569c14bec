//! `xoq bench`: every figure with a baseline measured in the same run on the same machine
//! (the raw transport, the codec alone, the Rust client), never a pass/fail on timing.
//!
//! One module per benchmark; `common` holds the measuring helpers and the raw baselines they
//! share, and nothing imports a sibling except `clock`, which reuses `link`'s isolated setup.

use clap::{Args, Subcommand};

mod audio;
mod camera;
mod can;
mod clock;
mod common;
mod connect;
mod depth;
mod link;
mod python;
mod record;
mod serial;

/// `xoq bench`.
#[derive(Debug, Args)]
pub struct BenchArgs {
    /// What to measure.
    #[command(subcommand)]
    pub what: BenchWhat,
}

/// Benchmarks.
#[derive(Debug, Subcommand)]
pub enum BenchWhat {
    /// Serial bridge round trips and throughput vs raw iroh/MoQ.
    Serial {
        /// Round trips per measurement.
        #[arg(long, default_value_t = 2000)]
        count: usize,
        /// Bytes per round trip.
        #[arg(long, default_value_t = 64)]
        size: usize,
        /// Bytes for the throughput test.
        #[arg(long, default_value_t = 4 << 20)]
        bulk: usize,
    },
    /// CAN bridge latency, frames/s and relay fan-out vs raw iroh/MoQ.
    Can {
        /// Round trips per latency measurement.
        #[arg(long, default_value_t = 2000)]
        count: usize,
        /// Frames per throughput measurement.
        #[arg(long, default_value_t = 50_000)]
        frames: usize,
        /// MoQ subscribers for the fan-out test.
        #[arg(long, default_value_t = 4)]
        subscribers: usize,
        /// Seconds of 1 kHz traffic for the fan-out test.
        #[arg(long, default_value_t = 2.0)]
        seconds: f64,
    },
    /// Camera latency (capture -> decoded picture), frames/s and CPU per size, codec and
    /// link, next to the raw codec cost.
    Camera {
        /// Picture sizes, comma-separated.
        #[arg(long, default_value = "640x480,1280x720,1920x1080")]
        sizes: String,
        /// Camera frame rate.
        #[arg(long, default_value_t = 30)]
        fps: u32,
        /// Seconds measured per row.
        #[arg(long, default_value_t = 3.0)]
        seconds: f64,
        /// Skip the relay rows (P2P only).
        #[arg(long)]
        no_relay: bool,
        /// Also measure `cv2.VideoCapture` through this interpreter (xoq and OpenCV installed).
        #[arg(long)]
        python: Option<String>,
    },
    /// Audio: capture -> client latency per codec and frame size against the frame-duration
    /// floor and the raw transport, codec cost, CPU per stream, speaker jitter-buffer
    /// counters over a paced talk.
    Audio {
        /// Seconds per row (and of the paced talk).
        #[arg(long, default_value_t = 5.0)]
        seconds: f64,
        /// Listeners at once.
        #[arg(long, default_value_t = 1)]
        streams: usize,
        /// Seconds of the paced talk (default: as --seconds); 600 for the 10-minute soak.
        #[arg(long)]
        talk_seconds: Option<f64>,
    },
    /// Depth: the lossless codec against zstd and PNG-16 (ratio, encode and decode ms) and
    /// capture -> decoded depth + colour over P2P, per size.
    Depth {
        /// Picture sizes, comma-separated.
        #[arg(long, default_value = "640x480,848x480,1280x720")]
        sizes: String,
        /// Camera frame rate.
        #[arg(long, default_value_t = 30)]
        fps: u32,
        /// Seconds measured per stream row.
        #[arg(long, default_value_t = 3.0)]
        seconds: f64,
        /// Colour size for every row (default: the depth size), e.g. 1280x720.
        #[arg(long)]
        color_size: Option<String>,
        /// Also measure the LeRobot-style `xoq.realsense` loop through this interpreter (xoq
        /// and numpy installed).
        #[arg(long)]
        python: Option<String>,
    },
    /// Recording: the recorder's CPU, MB/min and dropped messages for a 720p30 camera and two
    /// OpenArm buses driven at 1 kHz.
    Record {
        /// Seconds recorded.
        #[arg(long, default_value_t = 60.0)]
        seconds: f64,
        /// Commands per second on each bus (each answered by a feedback frame).
        #[arg(long, default_value_t = 1000)]
        hz: u32,
    },
    /// Python package (pyserial, python-can) latency vs the Rust client, same servers.
    Python {
        /// Round trips per measurement.
        #[arg(long, default_value_t = 2000)]
        count: usize,
        /// Turns per client (Rust and Python alternate; Rust also runs last).
        #[arg(long, default_value_t = 3)]
        rounds: usize,
        /// Interpreter with the xoq package installed.
        #[arg(long, env = "XOQ_PYTHON", default_value = "python3")]
        python: String,
    },
    /// Serial and CAN round trips on impaired links (RTT x loss) vs the raw QUIC path
    /// through the same link, resume after outages, camera under a bandwidth cap. Needs root
    /// (runs in a private network namespace).
    Link(link::LinkArgs),
    /// Opening a port or a bus, up to its first reply, vs the raw iroh connect + echo; idle
    /// and with every core busy (libraries that open a bus per test need this fast).
    Connect {
        /// Opens per measurement.
        #[arg(long, default_value_t = 30)]
        count: usize,
        /// Busy threads for the loaded half (0: one per core).
        #[arg(long, default_value_t = 0)]
        load: usize,
        /// Also measure pyserial and python-can opens with this interpreter (the xoq
        /// package installed).
        #[arg(long, env = "XOQ_PYTHON")]
        python: Option<String>,
    },
    /// The client's estimate of the server's clock: error on loopback, symmetric, jittered
    /// and asymmetric delays, and with a skewed client clock. Needs root, like `link`.
    Clock(clock::ClockArgs),
    /// Client half of `bench python` (run by it in a separate process).
    #[command(hide = true)]
    Client {
        /// Serial server address (omit to measure CAN only).
        #[arg(long)]
        serial: Option<String>,
        /// CAN server address.
        #[arg(long)]
        can: String,
        /// Round trips per measurement.
        #[arg(long)]
        count: usize,
    },
}

pub(crate) async fn run(a: BenchArgs) -> anyhow::Result<()> {
    match a.what {
        BenchWhat::Serial { count, size, bulk } => serial::run(count, size, bulk).await,
        BenchWhat::Can {
            count,
            frames,
            subscribers,
            seconds,
        } => can::run(count, frames, subscribers, seconds).await,
        BenchWhat::Camera {
            sizes,
            fps,
            seconds,
            no_relay,
            python,
        } => camera::run(&sizes, fps, seconds, !no_relay, python.as_deref()).await,
        BenchWhat::Depth {
            sizes,
            color_size,
            fps,
            seconds,
            python,
        } => {
            depth::run(
                &sizes,
                color_size.as_deref(),
                fps,
                seconds,
                python.as_deref(),
            )
            .await
        }
        BenchWhat::Record { seconds, hz } => record::run(seconds, hz).await,
        BenchWhat::Audio {
            seconds,
            streams,
            talk_seconds,
        } => audio::run(seconds, streams.max(1), talk_seconds.unwrap_or(seconds)).await,
        BenchWhat::Python {
            count,
            rounds,
            python,
        } => python::run(count, rounds, &python).await,
        BenchWhat::Link(a) => link::run(a).await,
        BenchWhat::Connect {
            count,
            load,
            python,
        } => connect::run(count, load, python.as_deref()).await,
        BenchWhat::Clock(a) => clock::run(a).await,
        BenchWhat::Client { serial, can, count } => {
            python::client(serial.as_deref(), &can, count).await
        }
    }
}
