//! `xoq export lerobot FILE.mcap -o DIR`: a recording as a LeRobot v3.0 dataset.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::Context;
use clap::{Args, Subcommand};
use xoq_record::lerobot::{ExportOptions, Skew, export};
use xoq_record::read::Recording;

/// `xoq export`.
#[derive(Debug, Args)]
pub struct ExportCmd {
    #[command(subcommand)]
    pub format: Format,
}

/// Formats a recording exports to.
#[derive(Debug, Subcommand)]
pub enum Format {
    /// A LeRobot v3.0 dataset (LeRobot 0.4.x): rows on an fps grid of the robot clock, each
    /// taking the joint samples and camera frames captured nearest its time.
    Lerobot(LerobotCmd),
}

/// `xoq export lerobot`.
#[derive(Debug, Args)]
pub struct LerobotCmd {
    /// The MCAP file `xoq record` wrote (a file cut short by a crash is read up to its last
    /// complete chunk).
    pub input: PathBuf,
    /// The dataset directory to create (must not exist, or be empty).
    #[arg(short, long)]
    pub output: PathBuf,
    /// Rows per second.
    #[arg(long, default_value_t = 30)]
    pub fps: u32,
    /// Joint topic(s) whose positions make `observation.state`, in order (default: every
    /// `…/joint_states` topic).
    #[arg(long)]
    pub state: Vec<String>,
    /// Joint topic(s) whose positions make `action`, in order (default: every
    /// `…/joint_commands` topic).
    #[arg(long)]
    pub action: Vec<String>,
    /// What the episode shows (LeRobot's task).
    #[arg(long, default_value = "teleoperation")]
    pub task: String,
    /// `robot_type` in meta/info.json.
    #[arg(long)]
    pub robot_type: Option<String>,
}

pub(super) async fn run(a: ExportCmd) -> anyhow::Result<()> {
    match a.format {
        Format::Lerobot(l) => tokio::task::spawn_blocking(move || lerobot(l))
            .await
            .context("the export stopped")?,
    }
}

fn ms(ns: u64) -> String {
    format!("{:.2} ms", ns as f64 / 1e6)
}

fn skew(s: &Skew) -> String {
    format!(
        "p50 {}, p99 {}, max {} ({} pairs, {} over half a row)",
        ms(s.p50_ns),
        ms(s.p99_ns),
        ms(s.max_ns),
        s.pairs,
        s.over_half_row
    )
}

fn lerobot(a: LerobotCmd) -> anyhow::Result<()> {
    let started = Instant::now();
    let bytes =
        std::fs::read(&a.input).with_context(|| format!("cannot read {}", a.input.display()))?;
    let rec = Recording::read(&bytes).with_context(|| format!("{}", a.input.display()))?;
    if rec.truncated {
        eprintln!(
            "note: {} ends before its footer (the recorder did not finish); exporting what it holds",
            a.input.display()
        );
    }
    let opts = ExportOptions {
        fps: a.fps,
        state: a.state,
        action: a.action,
        task: a.task,
        robot_type: a.robot_type,
    };
    let s = export(&rec, &opts, &a.output)?;
    println!(
        "wrote {} episode(s), {} frames at {} fps ({:.2} s from robot time {}) to {} in {:.1} s",
        s.episodes.len(),
        s.frames,
        a.fps,
        s.frames as f64 / f64::from(a.fps),
        s.start_ns,
        a.output.display(),
        started.elapsed().as_secs_f64()
    );
    if s.episodes.len() > 1 {
        for (e, (start, rows)) in s.episodes.iter().enumerate() {
            println!(
                "  episode {e}: {rows} frames from robot time {start} (+{:.3} s)",
                (start - s.start_ns) as f64 / 1e9
            );
        }
    }
    for why in &s.left_out {
        println!("  left out a part between episode marks: {why}");
    }
    println!("  observation.state: {}", s.state_names.join(", "));
    println!("  action:            {}", s.action_names.join(", "));
    for c in &s.cameras {
        println!(
            "  {}: {}x{}, {} ({} rows repeat a frame, {} frames unused)",
            c.key,
            c.width,
            c.height,
            if c.reencoded {
                "re-encoded onto the grid"
            } else {
                "copied unchanged"
            },
            c.repeated,
            c.skipped
        );
    }
    if !s.cameras.is_empty() {
        println!(
            "  camera frame vs state sample: {}",
            skew(&s.camera_to_state)
        );
        println!(
            "  camera frame vs grid time:    {}",
            skew(&s.camera_to_grid)
        );
    }
    Ok(())
}
