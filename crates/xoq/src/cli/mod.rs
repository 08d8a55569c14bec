//! The `xoq` command line: thin wiring of the library crates.
//!
//! Each subcommand parses its flags and calls into the services; the contract of names and
//! flags is documented in docs/cli.md and must only be extended, never renamed.

use std::ffi::OsString;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod audio;
mod bench;
mod camera;
mod can;
mod common;
mod demo;
mod deploy;
mod depth;
mod export;
mod machine;
mod pty;
mod record;
mod relay;
mod serial;
mod setup_can;
mod vectors;
mod web;

pub use common::{P2pArgs, ServerArgs};

/// Robot hardware over QUIC.
#[derive(Debug, Parser)]
#[command(name = "xoq", version, about, propagate_version = true)]
pub struct Cli {
    /// Log filter (e.g. `info`, `xoq=debug`); also `RUST_LOG`.
    #[arg(long, global = true, env = "XOQ_LOG", default_value = "info")]
    pub log: String,
    /// Command.
    #[command(subcommand)]
    pub command: Command,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Print the endpoint id of a key file (created with mode 0600 if absent).
    Id(common::IdArgs),
    /// Run the embedded MoQ relay.
    Relay(relay::RelayArgs),
    /// Print a relay token (a moq-auth JWT) signed by a relay key.
    Token(relay::TokenArgs),
    /// Serve a serial port (or a simulated device) over P2P and MoQ.
    SerialServer(serial::ServerCmd),
    /// Serve the simulated SO-101 servo bus (= serial-server sim:so101 1000000).
    FakeSerialServer(serial::FakeServerCmd),
    /// Create a local pseudo-terminal bridged to a remote port.
    SerialPty(pty::PtyArgs),
    /// Pipe stdin to a remote port and the port to stdout.
    SerialClient(serial::ClientCmd),
    /// Serve CAN interfaces (SocketCAN, virtual:NAME, sim:openarm) over P2P and MoQ.
    CanServer(can::CanServerCmd),
    /// Serve the simulated OpenArm (= can-server sim:openarm).
    FakeCanServer(can::FakeCanServerCmd),
    /// Print frames of a remote bus candump-style; send frames in cansend syntax.
    CanClient(can::CanClientCmd),
    /// Bridge a remote bus to a local SocketCAN interface (vcan0) for candump/cansend/ROS.
    CanBridge(can::CanBridgeCmd),
    /// Serve a camera (V4L2, or sim:pattern) as H.264/JPEG over P2P and as a MoQ broadcast.
    CameraServer(camera::CameraServerCmd),
    /// Watch a remote camera: print frames with their latency, or save them.
    CameraClient(camera::CameraClientCmd),
    /// Serve a microphone and speaker (sim:tone) over P2P: Opus or PCM, one talker at a time.
    AudioServer(audio::AudioServerCmd),
    /// Listen to a remote microphone (level, gaps, latency); optionally talk a tone back.
    AudioClient(audio::AudioClientCmd),
    /// Serve a depth camera (sim:depth): lossless 16-bit depth with its colour picture,
    /// over P2P and as a MoQ broadcast.
    DepthServer(depth::DepthServerCmd),
    /// Watch a remote depth camera: frames, the distance at the centre, latency.
    DepthClient(depth::DepthClientCmd),
    /// Record cameras and CAN buses to an MCAP file (Foxglove, Rerun), on the robot's clock.
    Record(record::RecordCmd),
    /// Turn a recording into a training dataset (LeRobot v3.0).
    Export(export::ExportCmd),
    /// Discover this robot's hardware and run it as systemd services (--dry-run first).
    Deploy(deploy::DeployCmd),
    /// Bring a SocketCAN interface up at a bit rate (what deployed CAN units run first).
    SetupCan(setup_can::SetupCanCmd),
    /// Answer `xoq ls` for a deployed machine (what `xoq deploy` runs).
    MachineServer(machine::MachineServerCmd),
    /// List a deployed machine's services.
    Ls(machine::LsCmd),
    /// Simulated robot + embedded relay, ready to try.
    Demo(demo::DemoArgs),
    /// Benchmarks, reported as ratios against the raw transport measured in the same run.
    Bench(bench::BenchArgs),
    /// Codec test vectors from the Rust codecs, as JSON (for the JavaScript tests).
    #[command(hide = true)]
    Vectors,
}

/// Entry point shared by `xoq` and the XoQ 0.3.6 alias binaries (`serial-server`, ...),
/// which behave as `xoq <alias> ...`.
pub fn main_with_name(alias: Option<&str>) -> ExitCode {
    let mut args: Vec<OsString> = std::env::args_os().collect();
    if let Some(alias) = alias {
        args.insert(1, alias.into());
        args[0] = "xoq".into();
    }
    let cli = Cli::parse_from(args);
    init_logging(&cli.log);
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = rt.block_on(run(cli.command));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn init_logging(filter: &str) {
    let filter = std::env::var("RUST_LOG").unwrap_or_else(|_| log_directives(filter));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
        .with_writer(std::io::stderr)
        .try_init();
}

/// The tracing directives for `--log`: a level applies to our crates, and dependencies stay
/// a step quieter (their warnings about UDP buffers, development certificates or closed
/// streams are not for the user to act on) until `debug`; directives (`xoq=debug,iroh=info`)
/// are taken as written, over a quiet default.
fn log_directives(filter: &str) -> String {
    const OURS: [&str; 6] = [
        "xoq",
        "xoq_server",
        "xoq_client",
        "xoq_transport",
        "xoq_device",
        "xoq_media",
    ];
    let level = filter.trim().to_ascii_lowercase();
    let deps = match level.as_str() {
        "off" => "off",
        "error" | "warn" | "info" => "error",
        "debug" => "warn",
        "trace" => "debug",
        _ => return format!("error,{filter}"),
    };
    let ours: Vec<String> = OURS.iter().map(|c| format!("{c}={level}")).collect();
    format!("{deps},{}", ours.join(","))
}

async fn run(cmd: Command) -> anyhow::Result<()> {
    match cmd {
        Command::Id(a) => common::id(a),
        Command::Relay(a) => relay::run(a).await,
        Command::Token(a) => relay::token(a),
        Command::SerialServer(a) => serial::server(a).await,
        Command::FakeSerialServer(a) => serial::fake_server(a).await,
        Command::SerialPty(a) => pty::run(a).await,
        Command::SerialClient(a) => serial::client(a).await,
        Command::CanServer(a) => can::server(a).await,
        Command::FakeCanServer(a) => can::fake_server(a).await,
        Command::CanClient(a) => can::client(a).await,
        Command::CanBridge(a) => can::bridge(a).await,
        Command::CameraServer(a) => camera::server(a).await,
        Command::CameraClient(a) => camera::client(a).await,
        Command::AudioServer(a) => audio::server(a).await,
        Command::AudioClient(a) => audio::client(a).await,
        Command::DepthServer(a) => depth::server(a).await,
        Command::DepthClient(a) => depth::client(a).await,
        Command::Record(a) => record::run(a).await,
        Command::Export(a) => export::run(a).await,
        Command::Deploy(a) => deploy::run(a).await,
        Command::SetupCan(a) => setup_can::run(a),
        Command::MachineServer(a) => machine::server(a).await,
        Command::Ls(a) => machine::ls(a).await,
        Command::Demo(a) => demo::run(a).await,
        Command::Bench(a) => bench::run(a).await,
        Command::Vectors => {
            print!("{}", vectors::json()?);
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::log_directives;

    #[test]
    fn log_levels_keep_dependencies_quiet_until_debug() {
        assert!(log_directives("info").starts_with("error,xoq=info,"));
        assert!(log_directives("error").starts_with("error,xoq=error,"));
        assert!(log_directives("debug").starts_with("warn,xoq=debug,"));
        assert_eq!(log_directives("iroh=info"), "error,iroh=info");
        // Every directive string parses.
        for f in [
            "info",
            "warn",
            "error",
            "debug",
            "trace",
            "off",
            "xoq=debug,iroh=warn",
        ] {
            tracing_subscriber::EnvFilter::try_new(log_directives(f)).expect(f);
        }
    }
}
