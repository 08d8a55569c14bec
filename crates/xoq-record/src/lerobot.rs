//! A recording as a LeRobot v3.0 dataset (what LeRobot 0.4.x loads), on the robot's clock.
//!
//! **Episodes.** The whole recording is one episode, or each part between two episode marks
//! (written while recording) is one; a part that cannot make rows is left out and reported.
//!
//! **Grid.** Rows are `1/fps` apart on the robot clock. An episode's grid starts at the first
//! keyframe of the first camera captured once every stream has begun in that part (or,
//! without cameras, when the last stream begins), and ends when the first stream ends, so
//! every row has data from every stream.
//!
//! **Pairing rule: nearest capture time.** Each row takes, for every joint and every
//! camera, the sample whose capture time is nearest the row's grid time (a tie goes to the
//! earlier one). Nothing is interpolated; the true capture times are kept in `capture_ns.*`
//! columns, which start with neither `observation` nor `action`, so policies do not take
//! them as inputs.
//!
//! **Video.** One MP4 per episode and camera; frame `k` is presented at exactly `k / fps`, which is what
//! LeRobot's decoders look up (within 1e-4 s). When a camera's frames map one to one and in
//! order onto the rows from a keyframe on, its H.264 is copied unchanged; otherwise (another
//! cadence, a dropped frame, a start between keyframes) the chosen pictures are decoded and
//! encoded again with OpenH264, and [`CameraExport::reencoded`] says so.
//!
//! **Stats** are LeRobot's: `min, max, mean, std, count, q01, q10, q50, q90, q99` for every
//! feature, per episode (in the episodes table) and over the dataset (`stats.json`); numbers
//! per dimension over the rows, pictures per channel over the rows LeRobot would sample, in
//! 0..1. Quantiles here are exact (linear interpolation between order
//! statistics), where LeRobot approximates them with a histogram.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

use serde_json::{Value, json};
use xoq_media::ChannelOrder;
use xoq_media::h264::{H264Config, H264Decoder, H264Encoder};

use crate::mp4::{AvcParams, Mp4Error, Mp4Writer, VideoTrack, to_length_prefixed};
use crate::read::{Recording, VideoFrame};
use crate::table::{Column, Table, TableError};

/// Version of the layout written.
pub const CODEBASE_VERSION: &str = "v3.0";
/// Longest episode whose float32 timestamps stay within LeRobot's 1e-4 s tolerance.
pub const MAX_EPISODE_S: f64 = 2048.0;
/// Quantiles LeRobot keeps, with their keys.
const QUANTILES: [(f64, &str); 5] = [
    (0.01, "q01"),
    (0.10, "q10"),
    (0.50, "q50"),
    (0.90, "q90"),
    (0.99, "q99"),
];

/// Why an export failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ExportError {
    /// The options do not fit the recording.
    #[error("{0}")]
    Options(String),
    /// The streams cannot make rows (no overlap, no data).
    #[error("{0}")]
    Streams(String),
    /// A camera's video could not be exported.
    #[error("camera {camera}: {reason}")]
    Video {
        /// The camera topic.
        camera: String,
        /// What went wrong.
        reason: String,
    },
    /// A table could not be written.
    #[error(transparent)]
    Table(#[from] TableError),
    /// A file could not be written.
    #[error("cannot write {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
}

/// What to export.
#[derive(Debug, Clone)]
pub struct ExportOptions {
    /// Rows per second (LeRobot's integer `fps`).
    pub fps: u32,
    /// Joint topics whose positions make `observation.state` (empty: every
    /// `…/joint_states` topic).
    pub state: Vec<String>,
    /// Joint topics whose positions make `action` (empty: every `…/joint_commands` topic).
    pub action: Vec<String>,
    /// The episode's task.
    pub task: String,
    /// `robot_type` in info.json.
    pub robot_type: Option<String>,
}

/// One camera's part of an export.
#[derive(Debug, Clone, PartialEq)]
pub struct CameraExport {
    /// Recording topic.
    pub topic: String,
    /// Dataset feature key (`observation.images.<name>`).
    pub key: String,
    /// Picture size.
    pub width: u32,
    /// Picture size.
    pub height: u32,
    /// Decoded and encoded again (the cadence did not match the grid), rather than copied.
    pub reencoded: bool,
    /// Rows showing a frame an earlier row showed too.
    pub repeated: usize,
    /// Recorded frames within the episode that no row shows.
    pub skipped: usize,
}

/// Time differences on the robot clock, in ns.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Skew {
    /// Pairs measured.
    pub pairs: usize,
    /// Median.
    pub p50_ns: u64,
    /// 99th percentile.
    pub p99_ns: u64,
    /// Largest.
    pub max_ns: u64,
    /// Pairs more than half a row period apart.
    pub over_half_row: usize,
}

impl Skew {
    fn of(mut d: Vec<u64>, fps: u32) -> Self {
        let half = 500_000_000 / u64::from(fps.max(1));
        d.sort_unstable();
        let at = |q: f64| {
            d.get(((d.len() as f64 - 1.0) * q).round() as usize)
                .copied()
        };
        Self {
            pairs: d.len(),
            p50_ns: at(0.5).unwrap_or(0),
            p99_ns: at(0.99).unwrap_or(0),
            max_ns: d.last().copied().unwrap_or(0),
            over_half_row: d.iter().filter(|&&x| x > half).count(),
        }
    }
}

/// What an export wrote.
#[derive(Debug, Clone)]
pub struct ExportSummary {
    /// Rows (frames) in the episode.
    pub frames: usize,
    /// Grid time of row 0 on the robot clock (ns since the Unix epoch).
    pub start_ns: u64,
    /// Each episode's first row time (robot clock, ns) and row count.
    pub episodes: Vec<(u64, usize)>,
    /// Parts between episode marks that made no rows, and why.
    pub left_out: Vec<String>,
    /// State dimension names.
    pub state_names: Vec<String>,
    /// Action dimension names.
    pub action_names: Vec<String>,
    /// Cameras.
    pub cameras: Vec<CameraExport>,
    /// Between each row's camera frames and its state samples (every camera × joint).
    pub camera_to_state: Skew,
    /// Between each row's grid time and its camera frames.
    pub camera_to_grid: Skew,
}

/// Joint streams flattened to one series per joint: (capture ns, position).
struct Joints {
    names: Vec<String>,
    series: Vec<Vec<(u64, f64)>>,
}

impl Joints {
    /// The joints of `topics`, named `<first topic segment>.<joint>`, in order of first
    /// appearance.
    fn of(rec: &Recording, topics: &[String], what: &str) -> Result<Self, ExportError> {
        let mut j = Joints {
            names: Vec::new(),
            series: Vec::new(),
        };
        for topic in topics {
            let samples = rec.joints.get(topic).ok_or_else(|| {
                ExportError::Options(format!(
                    "{what}: no joint topic {topic:?} in the recording (it has: {})",
                    rec.joints.keys().cloned().collect::<Vec<_>>().join(", ")
                ))
            })?;
            let prefix = topic
                .trim_start_matches('/')
                .split('/')
                .next()
                .unwrap_or_default();
            let mut index: BTreeMap<&str, usize> = BTreeMap::new();
            for s in samples {
                for (name, pos) in s.name.iter().zip(&s.position) {
                    let i = *index.entry(name.as_str()).or_insert_with(|| {
                        j.names.push(format!("{prefix}.{name}"));
                        j.series.push(Vec::new());
                        j.series.len() - 1
                    });
                    j.series[i].push((s.stamp_ns, *pos));
                }
            }
        }
        if j.names.is_empty() {
            return Err(ExportError::Options(format!(
                "{what}: the topics {topics:?} hold no joint positions"
            )));
        }
        Ok(j)
    }

    /// The joints of the `--state`/`--action` topics, or of every topic ending in `suffix`.
    fn chosen(
        rec: &Recording,
        topics: &[String],
        suffix: &str,
        flag: &str,
    ) -> Result<Self, ExportError> {
        let topics = if topics.is_empty() {
            topics_ending(rec, suffix)
        } else {
            topics.to_vec()
        };
        if topics.is_empty() {
            return Err(ExportError::Options(format!(
                "no …{suffix} topic in the recording: name the topics with {flag}"
            )));
        }
        Self::of(rec, &topics, flag)
    }

    /// Each row's nearest sample of every joint: (positions, capture times), row-major.
    fn pick(&self, grid: &[u64]) -> (Vec<f32>, Vec<i64>) {
        let n = self.names.len();
        let mut values = Vec::with_capacity(grid.len() * n);
        let mut times = Vec::with_capacity(grid.len() * n);
        for &t in grid {
            for s in &self.series {
                let i = nearest(s.len(), |i| s[i].0, t);
                values.push(s[i].1 as f32);
                times.push(s[i].0 as i64);
            }
        }
        (values, times)
    }
}

/// Index of the entry of `times` (sorted) nearest `t`; a tie goes to the earlier one.
fn nearest(len: usize, time: impl Fn(usize) -> u64, t: u64) -> usize {
    let (mut lo, mut hi) = (0, len);
    while lo < hi {
        let mid = (lo + hi) / 2;
        if time(mid) < t {
            lo = mid + 1;
        } else {
            hi = mid;
        }
    }
    // lo: first at or after t.
    if lo == len {
        return len - 1;
    }
    if lo > 0 && t - time(lo - 1) <= time(lo) - t {
        return lo - 1;
    }
    lo
}

/// Topics ending in `suffix`.
fn topics_ending(rec: &Recording, suffix: &str) -> Vec<String> {
    rec.joints
        .keys()
        .filter(|t| t.ends_with(suffix))
        .cloned()
        .collect()
}

/// The camera name of a topic `/<name>/video`.
fn camera_name(topic: &str) -> String {
    topic
        .trim_start_matches('/')
        .split('/')
        .next()
        .unwrap_or("camera")
        .to_string()
}

/// Export `rec` as a LeRobot v3.0 dataset in `dir` (which must be empty or not exist): one
/// episode, or one per part between the episode marks the recorder wrote.
pub fn export(
    rec: &Recording,
    opts: &ExportOptions,
    dir: &Path,
) -> Result<ExportSummary, ExportError> {
    if opts.fps == 0 || opts.fps > 1000 {
        return Err(ExportError::Options(format!(
            "--fps {}: choose 1 to 1000 rows per second",
            opts.fps
        )));
    }
    let state = Joints::chosen(rec, &opts.state, "/joint_states", "--state")?;
    let action = Joints::chosen(rec, &opts.action, "/joint_commands", "--action")?;
    let cameras: Vec<(&String, &Vec<VideoFrame>)> =
        rec.videos.iter().filter(|(_, f)| !f.is_empty()).collect();
    // Parts between marks; a part too short to make rows is left out (and said).
    let bounds: Vec<u64> = std::iter::once(0)
        .chain(rec.episode_marks.iter().copied())
        .chain([u64::MAX])
        .collect();
    let mut grids = Vec::new();
    let mut left_out = Vec::new();
    for w in bounds.windows(2) {
        match grid(&cameras, &state, &action, opts.fps, (w[0], w[1])) {
            Ok(g) => grids.push(g),
            Err(e) if bounds.len() > 2 => left_out.push(e.to_string()),
            Err(e) => return Err(e),
        }
    }
    if grids.is_empty() {
        return Err(ExportError::Streams(format!(
            "no part between the episode marks makes rows: {}",
            left_out.join("; ")
        )));
    }
    if dir.exists()
        && fs::read_dir(dir)
            .map(|mut d| d.next().is_some())
            .unwrap_or(true)
    {
        return Err(ExportError::Options(format!(
            "{} exists and is not empty: export into a new directory",
            dir.display()
        )));
    }
    let mut summary = ExportSummary {
        frames: 0,
        start_ns: grids[0][0],
        episodes: Vec::new(),
        left_out,
        state_names: state.names.clone(),
        action_names: action.names.clone(),
        cameras: Vec::new(),
        camera_to_state: Skew::default(),
        camera_to_grid: Skew::default(),
    };
    let (mut cam_state, mut cam_grid) = (Vec::new(), Vec::new());
    let mut episodes = Vec::new();
    for (e, grid) in grids.iter().enumerate() {
        let ep = Episode {
            index: e,
            first_row: summary.frames,
            grid,
        };
        let out = ep.features(&state, &action, &cameras, opts.fps, dir)?;
        for (c, cam) in out.cameras.into_iter().enumerate() {
            match summary.cameras.get_mut(c) {
                None => summary.cameras.push(cam),
                Some(sum) => {
                    if (sum.width, sum.height) != (cam.width, cam.height) {
                        return Err(ExportError::Video {
                            camera: cam.topic,
                            reason: format!(
                                "episode {e} is {}x{}, episode 0 {}x{}: one size per camera in a dataset",
                                cam.width, cam.height, sum.width, sum.height
                            ),
                        });
                    }
                    sum.reencoded |= cam.reencoded;
                    sum.repeated += cam.repeated;
                    sum.skipped += cam.skipped;
                }
            }
        }
        cam_state.extend(out.cam_state);
        cam_grid.extend(out.cam_grid);
        summary.frames += grid.len();
        summary.episodes.push((grid[0], grid.len()));
        episodes.push(out.features);
    }
    summary.camera_to_state = Skew::of(cam_state, opts.fps);
    summary.camera_to_grid = Skew::of(cam_grid, opts.fps);
    write_dataset(dir, opts, episodes)?;
    Ok(summary)
}

/// One episode being built: its rows' times and where its rows start in the dataset.
struct Episode<'a> {
    index: usize,
    first_row: usize,
    grid: &'a [u64],
}

/// An episode's features (in info.json's order), and what its cameras took.
struct EpisodeOut {
    features: Vec<Feature>,
    cameras: Vec<CameraExport>,
    cam_state: Vec<u64>,
    cam_grid: Vec<u64>,
}

impl Episode<'_> {
    /// The episode's columns, and its videos written to `dir`.
    fn features(
        &self,
        state: &Joints,
        action: &Joints,
        cameras: &[(&String, &Vec<VideoFrame>)],
        fps: u32,
        dir: &Path,
    ) -> Result<EpisodeOut, ExportError> {
        let grid = self.grid;
        let rows = grid.len();
        let (state_v, state_t) = state.pick(grid);
        let (action_v, action_t) = action.pick(grid);
        let (ns, na) = (state.names.len(), action.names.len());
        let scalar = |name: &str, col: Column, dtype: &str| {
            Feature::numeric(
                name,
                col,
                json!({"dtype": dtype, "shape": [1], "names": null}),
            )
        };
        let mut features = vec![
            Feature::numeric(
                "action",
                Column::F32Array {
                    shape: vec![na],
                    values: action_v,
                },
                json!({"dtype": "float32", "shape": [na], "names": action.names}),
            ),
            Feature::numeric(
                "observation.state",
                Column::F32Array {
                    shape: vec![ns],
                    values: state_v,
                },
                json!({"dtype": "float32", "shape": [ns], "names": state.names}),
            ),
        ];
        // Cameras: their videos here, their capture times after the joints'.
        let mut out = EpisodeOut {
            features: Vec::new(),
            cameras: Vec::new(),
            cam_state: Vec::new(),
            cam_grid: Vec::new(),
        };
        let mut camera_times = Vec::new();
        let sampled = sample_indices(rows);
        for (topic, frames) in cameras {
            let key = format!("observation.images.{}", camera_name(topic));
            let sel: Vec<usize> = grid
                .iter()
                .map(|&t| nearest(frames.len(), |i| frames[i].capture_ns, t))
                .collect();
            let path = dir.join(format!("videos/{key}/chunk-000/file-{:03}.mp4", self.index));
            mkdir(path.parent().unwrap_or(dir))?;
            let video = write_video(frames, &sel, fps, &path, &sampled).map_err(|reason| {
                ExportError::Video {
                    camera: topic.to_string(),
                    reason,
                }
            })?;
            let times: Vec<i64> = sel.iter().map(|&i| frames[i].capture_ns as i64).collect();
            for (k, &ft) in times.iter().enumerate() {
                out.cam_grid.push(ft.abs_diff(grid[k] as i64));
                out.cam_state.extend(
                    state_t[k * ns..(k + 1) * ns]
                        .iter()
                        .map(|&st| ft.abs_diff(st)),
                );
            }
            let repeated = sel.windows(2).filter(|w| w[0] == w[1]).count();
            let span = sel[rows - 1] + 1 - sel[0];
            out.cameras.push(CameraExport {
                topic: topic.to_string(),
                key: key.clone(),
                width: video.width,
                height: video.height,
                reencoded: !video.remuxed,
                repeated,
                skipped: span - (rows - repeated),
            });
            features.push(Feature {
                name: key.clone(),
                column: None,
                feature: json!({
                    "dtype": "video",
                    "shape": [video.height, video.width, 3],
                    "names": ["height", "width", "channels"],
                    "info": {
                        "video.height": video.height,
                        "video.width": video.width,
                        "video.codec": "h264",
                        "video.pix_fmt": "yuv420p",
                        "video.is_depth_map": false,
                        "video.fps": fps,
                        "video.channels": 3,
                        "has_audio": false,
                    },
                }),
                stats: video.stats.finish(),
                image: Some(video.stats),
            });
            camera_times.push(scalar(
                &format!("capture_ns.{key}"),
                Column::Int64(times),
                "int64",
            ));
        }
        features.push(scalar(
            "robot_time_ns",
            Column::Int64(grid.iter().map(|&t| t as i64).collect()),
            "int64",
        ));
        features.push(Feature::numeric(
            "capture_ns.observation.state",
            Column::I64Array {
                shape: vec![ns],
                values: state_t,
            },
            json!({"dtype": "int64", "shape": [ns], "names": state.names}),
        ));
        features.push(Feature::numeric(
            "capture_ns.action",
            Column::I64Array {
                shape: vec![na],
                values: action_t,
            },
            json!({"dtype": "int64", "shape": [na], "names": action.names}),
        ));
        features.extend(camera_times);
        // LeRobot's own five come last, as its writer orders them.
        let f = f64::from(fps);
        let first = self.first_row as i64;
        features.extend([
            scalar(
                "timestamp",
                Column::Float32((0..rows).map(|k| (k as f64 / f) as f32).collect()),
                "float32",
            ),
            scalar(
                "frame_index",
                Column::Int64((0..rows as i64).collect()),
                "int64",
            ),
            scalar(
                "episode_index",
                Column::Int64(vec![self.index as i64; rows]),
                "int64",
            ),
            scalar(
                "index",
                Column::Int64((first..first + rows as i64).collect()),
                "int64",
            ),
            scalar("task_index", Column::Int64(vec![0; rows]), "int64"),
        ]);
        out.features = features;
        Ok(out)
    }
}

/// One dataset feature of one episode: its data column (none for videos), info.json entry
/// and the episode's stats (and pictures' histograms, which add up across episodes).
struct Feature {
    name: String,
    column: Option<Column>,
    feature: Value,
    stats: Stats,
    image: Option<ImageStats>,
}

impl Feature {
    fn numeric(name: &str, column: Column, feature: Value) -> Self {
        let rows = column.rows().unwrap_or(0);
        Self {
            name: name.to_string(),
            stats: Stats::of_column(&column, rows),
            column: Some(column),
            feature,
            image: None,
        }
    }
}

fn mkdir(p: &Path) -> Result<(), ExportError> {
    fs::create_dir_all(p).map_err(|source| ExportError::Io {
        path: p.to_path_buf(),
        source,
    })
}

/// The times of the rows of the part `[from, to)` of the recording (see the module docs).
fn grid(
    cameras: &[(&String, &Vec<VideoFrame>)],
    state: &Joints,
    action: &Joints,
    fps: u32,
    (from, to): (u64, u64),
) -> Result<Vec<u64>, ExportError> {
    let inside = |t: &u64| (from..to).contains(t);
    let no_data = |what: &str| {
        ExportError::Streams(format!(
            "{what} has no sample in the part from {:.3} s",
            from as f64 / 1e9
        ))
    };
    let mut begin = 0;
    let mut end = u64::MAX;
    for (topic, frames) in cameras {
        let times = || frames.iter().map(|f| f.capture_ns).filter(inside);
        begin = begin.max(times().next().ok_or_else(|| no_data(topic))?);
        end = end.min(times().next_back().ok_or_else(|| no_data(topic))?);
    }
    for j in [state, action] {
        for (name, s) in j.names.iter().zip(&j.series) {
            let times = || s.iter().map(|x| x.0).filter(inside);
            begin = begin.max(times().next().ok_or_else(|| no_data(name))?);
            end = end.min(times().next_back().ok_or_else(|| no_data(name))?);
        }
    }
    let t0 = match cameras.first() {
        Some((topic, frames)) => frames
            .iter()
            .find(|f| f.capture_ns >= begin && f.keyframe)
            .map(|f| f.capture_ns)
            .filter(|t| inside(t))
            .ok_or_else(|| {
                ExportError::Streams(format!(
                    "camera {topic}: no keyframe once every stream has begun"
                ))
            })?,
        None => begin,
    };
    if t0 > end {
        return Err(ExportError::Streams(format!(
            "the streams do not overlap in time (the last to begin starts {:.3} s after the first to end)",
            (t0 - end) as f64 / 1e9
        )));
    }
    let step = |k: usize| t0 + (k as u128 * 1_000_000_000 / u128::from(fps)) as u64;
    // Every k with step(k) <= end (the division alone can fall one short).
    let mut rows = ((end - t0) as u128 * u128::from(fps) / 1_000_000_000) as usize + 1;
    while step(rows) <= end {
        rows += 1;
    }
    // LeRobot's timestamps are float32 seconds from the episode start: past 2048 s their
    // rounding exceeds its 1e-4 s frame lookup tolerance.
    if rows as f64 / f64::from(fps) > MAX_EPISODE_S {
        return Err(ExportError::Streams(format!(
            "an episode spans {:.0} s; LeRobot episodes must stay under {MAX_EPISODE_S:.0} s (float32 timestamps): mark episodes while recording",
            rows as f64 / f64::from(fps)
        )));
    }
    Ok((0..rows).map(step).collect())
}

/// The tables and metadata files of a dataset of `episodes`, each a list of features in
/// info.json's order (which the data columns must follow).
fn write_dataset(
    dir: &Path,
    opts: &ExportOptions,
    episodes: Vec<Vec<Feature>>,
) -> Result<(), ExportError> {
    mkdir(&dir.join("meta/episodes/chunk-000"))?;
    mkdir(&dir.join("data/chunk-000"))?;
    let first = episodes.first().map(Vec::as_slice).unwrap_or_default();
    let videos: Vec<String> = first
        .iter()
        .filter(|f| f.column.is_none())
        .map(|f| f.name.clone())
        .collect();
    let lengths: Vec<usize> = episodes
        .iter()
        .map(|fs| {
            fs.iter()
                .find_map(|f| f.column.as_ref().and_then(Column::rows))
                .unwrap_or(0)
        })
        .collect();
    let total: usize = lengths.iter().sum();
    let n = episodes.len();
    let info = json!({
        "codebase_version": CODEBASE_VERSION,
        "robot_type": opts.robot_type,
        "total_episodes": n,
        "total_frames": total,
        "total_tasks": 1,
        "chunks_size": 1000,
        "data_files_size_in_mb": 100,
        "video_files_size_in_mb": 200,
        "fps": opts.fps,
        "splits": {"train": format!("0:{n}")},
        "data_path": "data/chunk-{chunk_index:03d}/file-{file_index:03d}.parquet",
        "video_path": if videos.is_empty() {
            Value::Null
        } else {
            json!("videos/{video_key}/chunk-{chunk_index:03d}/file-{file_index:03d}.mp4")
        },
    });
    // info.json by hand around the ordered features (serde_json's maps sort their keys).
    let entries: Vec<(String, Value)> = first
        .iter()
        .map(|f| (f.name.clone(), f.feature.clone()))
        .collect();
    let mut text = String::from("{\n");
    for (k, v) in info.as_object().into_iter().flatten() {
        text += &format!("    {}: {},\n", Value::from(k.as_str()), v);
    }
    text += &format!("    \"features\": {}\n}}\n", ordered(&entries, "    "));
    let path = dir.join("meta/info.json");
    fs::write(&path, text).map_err(|source| ExportError::Io { path, source })?;

    let mut tasks = Table::default();
    tasks.push("task_index", Column::Int64(vec![0]));
    tasks.push("__index_level_0__", Column::Str(vec![opts.task.clone()]));
    tasks
        .metadata
        .push(("pandas".into(), PANDAS_TASKS.to_string()));
    tasks.write(&dir.join("meta/tasks.parquet"))?;

    // Episodes: one row each; one MP4 per episode and camera (file index = episode).
    let ints = |f: &dyn Fn(usize) -> i64| Column::Int64((0..n).map(f).collect());
    let starts: Vec<usize> = lengths
        .iter()
        .scan(0, |acc, &l| {
            let s = *acc;
            *acc += l;
            Some(s)
        })
        .collect();
    let mut ep = Table::default();
    ep.push("episode_index", ints(&|e| e as i64));
    ep.push("tasks", Column::StrList(vec![vec![opts.task.clone()]; n]));
    ep.push("length", ints(&|e| lengths[e] as i64));
    ep.push("data/chunk_index", ints(&|_| 0));
    ep.push("data/file_index", ints(&|_| 0));
    ep.push("dataset_from_index", ints(&|e| starts[e] as i64));
    ep.push(
        "dataset_to_index",
        ints(&|e| (starts[e] + lengths[e]) as i64),
    );
    for key in &videos {
        ep.push(format!("videos/{key}/chunk_index"), ints(&|_| 0));
        ep.push(format!("videos/{key}/file_index"), ints(&|e| e as i64));
        ep.push(
            format!("videos/{key}/from_timestamp"),
            Column::Float64(vec![0.0; n]),
        );
        ep.push(
            format!("videos/{key}/to_timestamp"),
            Column::Float64(
                lengths
                    .iter()
                    .map(|&l| l as f64 / f64::from(opts.fps))
                    .collect(),
            ),
        );
    }
    for (i, f) in first.iter().enumerate() {
        for (s, (stat, _)) in f.stats.values.iter().enumerate() {
            let mut col: Option<Column> = None;
            for fs in &episodes {
                let v = fs[i].stats.values[s].1.column();
                match &mut col {
                    None => col = Some(v),
                    Some(c) => c.append(v),
                }
            }
            if let Some(c) = col {
                ep.push(format!("stats/{}/{stat}", f.name), c);
            }
        }
    }
    ep.push("meta/episodes/chunk_index", ints(&|_| 0));
    ep.push("meta/episodes/file_index", ints(&|_| 0));
    ep.write(&dir.join("meta/episodes/chunk-000/file-000.parquet"))?;

    // Data: each feature's columns of every episode, one after the other. The dataset's
    // stats are computed over all of them (pictures: the episodes' histograms added up).
    let mut data = Table::default();
    let mut hf = Vec::new();
    let mut stats_json = serde_json::Map::new();
    let mut per_feature: Vec<Vec<Feature>> = first.iter().map(|_| Vec::new()).collect();
    for fs in episodes {
        for (i, f) in fs.into_iter().enumerate() {
            per_feature[i].push(f);
        }
    }
    for fs in per_feature {
        let name = fs[0].name.clone();
        let mut col: Option<Column> = None;
        let mut image: Option<ImageStats> = None;
        for f in fs {
            if let Some(c) = f.column {
                match &mut col {
                    None => col = Some(c),
                    Some(all) => all.append(c),
                }
            }
            if let Some(s) = f.image {
                match &mut image {
                    None => image = Some(s),
                    Some(all) => all.merge(&s),
                }
            }
        }
        let stats = match (&col, &image) {
            (Some(c), _) => Stats::of_column(c, c.rows().unwrap_or(0)),
            (None, Some(img)) => img.finish(),
            (None, None) => continue,
        };
        let mut m = serde_json::Map::new();
        for (stat, v) in &stats.values {
            m.insert((*stat).to_string(), v.json());
        }
        stats_json.insert(name.clone(), Value::Object(m));
        if let Some(c) = col {
            hf.push((name.clone(), hf_feature(&c)));
            data.push(name, c);
        }
    }
    write_json(&dir.join("meta/stats.json"), &Value::Object(stats_json))?;
    data.metadata.push((
        "huggingface".into(),
        format!("{{\"info\": {{\"features\": {}}}}}", ordered(&hf, "")),
    ));
    data.write(&dir.join("data/chunk-000/file-000.parquet"))?;
    Ok(())
}

/// pandas' footer metadata for the tasks table: the task string is the DataFrame's index,
/// which LeRobot reads back as `tasks.iloc[i].name`.
const PANDAS_TASKS: &str = r#"{"index_columns": ["__index_level_0__"], "column_indexes": [{"name": null, "field_name": null, "pandas_type": "unicode", "numpy_type": "object", "metadata": {"encoding": "UTF-8"}}], "columns": [{"name": "task_index", "field_name": "task_index", "pandas_type": "int64", "numpy_type": "int64", "metadata": null}, {"name": null, "field_name": "__index_level_0__", "pandas_type": "unicode", "numpy_type": "object", "metadata": null}]}"#;

/// A JSON object with its entries in the given order, one per line at `indent` + 4.
fn ordered(entries: &[(String, Value)], indent: &str) -> String {
    let body: Vec<String> = entries
        .iter()
        .map(|(k, v)| format!("{indent}    {}: {v}", Value::from(k.as_str())))
        .collect();
    format!("{{\n{}\n{indent}}}", body.join(",\n"))
}

/// The `datasets` feature of a data column (what LeRobot's loader casts it to).
fn hf_feature(col: &Column) -> Value {
    let (dtype, len) = match col {
        Column::Int64(_) => ("int64", None),
        Column::Float32(_) => ("float32", None),
        Column::Float64(_) => ("float64", None),
        Column::Str(_) | Column::StrList(_) => ("string", None),
        Column::F32Array { shape, .. } => ("float32", shape.first().copied()),
        Column::F64Array { shape, .. } => ("float64", shape.first().copied()),
        Column::I64Array { shape, .. } => ("int64", shape.first().copied()),
    };
    let value = json!({"dtype": dtype, "_type": "Value"});
    match len {
        Some(n) => json!({"feature": value, "length": n, "_type": "List"}),
        None => value,
    }
}

fn write_json(path: &Path, v: &Value) -> Result<(), ExportError> {
    let text = serde_json::to_string_pretty(v).unwrap_or_default();
    fs::write(path, text + "\n").map_err(|source| ExportError::Io {
        path: path.to_path_buf(),
        source,
    })
}

/// Rows whose pictures go into the stats: LeRobot's sample of an episode (all rows under
/// 100, else about `rows^0.75` of them, at most 10,000, evenly spaced).
fn sample_indices(rows: usize) -> Vec<bool> {
    let n = if rows < 100 {
        rows
    } else {
        ((rows as f64).powf(0.75) as usize).clamp(100, 10_000)
    };
    let mut pick = vec![false; rows];
    if n == 0 {
        return pick;
    }
    for i in 0..n {
        let at = if n == 1 {
            0.0
        } else {
            i as f64 * (rows - 1) as f64 / (n - 1) as f64
        };
        pick[(at.round() as usize).min(rows - 1)] = true;
    }
    pick
}

/// One stat: values of `shape`, integers where the feature is.
#[derive(Debug, Clone)]
enum StatValue {
    F64(Vec<usize>, Vec<f64>),
    I64(Vec<usize>, Vec<i64>),
}

impl StatValue {
    fn column(&self) -> Column {
        match self {
            StatValue::F64(shape, v) => Column::F64Array {
                shape: shape.clone(),
                values: v.clone(),
            },
            StatValue::I64(shape, v) => Column::I64Array {
                shape: shape.clone(),
                values: v.clone(),
            },
        }
    }

    fn json(&self) -> Value {
        fn nest<T: Clone + Into<Value>>(shape: &[usize], v: &[T]) -> Value {
            match shape {
                [] | [_] => Value::Array(v.iter().cloned().map(Into::into).collect()),
                [n, rest @ ..] => {
                    let per = v.len() / n.max(&1);
                    Value::Array(v.chunks(per.max(1)).map(|c| nest(rest, c)).collect())
                }
            }
        }
        match self {
            StatValue::F64(shape, v) => nest(shape, v),
            StatValue::I64(shape, v) => nest(shape, v),
        }
    }
}

/// A feature's stats, in LeRobot's key order.
#[derive(Debug, Clone)]
struct Stats {
    values: Vec<(&'static str, StatValue)>,
}

impl Stats {
    /// Per-dimension stats over all rows of a numeric column.
    fn of_column(col: &Column, rows: usize) -> Self {
        let (dims, values, int): (usize, Vec<f64>, bool) = match col {
            Column::Int64(v) => (1, v.iter().map(|&x| x as f64).collect(), true),
            Column::Float32(v) => (1, v.iter().map(|&x| f64::from(x)).collect(), false),
            Column::Float64(v) => (1, v.clone(), false),
            Column::F32Array { shape, values } => (
                shape.iter().product(),
                values.iter().map(|&x| f64::from(x)).collect(),
                false,
            ),
            Column::F64Array { shape, values } => (shape.iter().product(), values.clone(), false),
            Column::I64Array { shape, values } => (
                shape.iter().product(),
                values.iter().map(|&x| x as f64).collect(),
                true,
            ),
            Column::Str(_) | Column::StrList(_) => (1, Vec::new(), false),
        };
        let mut per_dim: Vec<Vec<f64>> = vec![Vec::with_capacity(rows); dims];
        for (i, x) in values.iter().enumerate() {
            per_dim[i % dims].push(*x);
        }
        for d in &mut per_dim {
            d.sort_by(f64::total_cmp);
        }
        let shape = vec![dims];
        let each = |f: &dyn Fn(&[f64]) -> f64| per_dim.iter().map(|d| f(d)).collect::<Vec<_>>();
        let minmax = |v: Vec<f64>| {
            if int {
                StatValue::I64(shape.clone(), v.iter().map(|&x| x as i64).collect())
            } else {
                StatValue::F64(shape.clone(), v)
            }
        };
        let mut out = vec![
            ("min", minmax(each(&|d| d.first().copied().unwrap_or(0.0)))),
            ("max", minmax(each(&|d| d.last().copied().unwrap_or(0.0)))),
            (
                "mean",
                StatValue::F64(shape.clone(), each(&|d| mean_std(d).0)),
            ),
            (
                "std",
                StatValue::F64(shape.clone(), each(&|d| mean_std(d).1)),
            ),
            ("count", StatValue::I64(vec![1], vec![rows as i64])),
        ];
        for (q, key) in QUANTILES {
            out.push((
                key,
                StatValue::F64(shape.clone(), each(&|d| quantile(d, q))),
            ));
        }
        Stats { values: out }
    }
}

/// Mean and population standard deviation.
fn mean_std(d: &[f64]) -> (f64, f64) {
    if d.is_empty() {
        return (0.0, 0.0);
    }
    let n = d.len() as f64;
    let mean = d.iter().sum::<f64>() / n;
    let var = d.iter().map(|x| (x - mean) * (x - mean)).sum::<f64>() / n;
    (mean, var.sqrt())
}

/// The `q` quantile of sorted `d`, interpolating linearly between order statistics.
fn quantile(d: &[f64], q: f64) -> f64 {
    match d.len() {
        0 => 0.0,
        n => {
            let pos = q * (n - 1) as f64;
            let lo = pos.floor() as usize;
            let hi = pos.ceil() as usize;
            d[lo] + (d[hi] - d[lo]) * (pos - lo as f64)
        }
    }
}

/// Per-channel histograms of 8-bit RGB pixels: exact stats of every sampled pixel.
#[derive(Debug, Clone)]
struct ImageStats {
    hist: [[u64; 256]; 3],
    frames: usize,
}

impl ImageStats {
    fn new() -> Self {
        Self {
            hist: [[0; 256]; 3],
            frames: 0,
        }
    }

    /// Add another's pixels (another episode's sample).
    fn merge(&mut self, other: &ImageStats) {
        for (a, b) in self.hist.iter_mut().zip(&other.hist) {
            for (x, y) in a.iter_mut().zip(b) {
                *x += y;
            }
        }
        self.frames += other.frames;
    }

    fn add(&mut self, rgb: &[u8]) {
        for px in rgb.chunks_exact(3) {
            for (h, &v) in self.hist.iter_mut().zip(px) {
                h[usize::from(v)] += 1;
            }
        }
        self.frames += 1;
    }

    /// Stats of shape (3, 1, 1) in 0..1.
    fn finish(&self) -> Stats {
        let shape = vec![3, 1, 1];
        let per = |f: &dyn Fn(&[u64; 256]) -> f64| {
            StatValue::F64(
                shape.clone(),
                self.hist.iter().map(|h| f(h) / 255.0).collect(),
            )
        };
        let total = |h: &[u64; 256]| h.iter().sum::<u64>();
        // Value of rank r (0-based) in the sorted pixels.
        let rank = |h: &[u64; 256], r: u64| {
            let mut seen = 0;
            for (v, &n) in h.iter().enumerate() {
                seen += n;
                if seen > r {
                    return v as f64;
                }
            }
            255.0
        };
        let mean = |h: &[u64; 256]| {
            let n = total(h).max(1) as f64;
            h.iter()
                .enumerate()
                .map(|(v, &c)| v as f64 * c as f64)
                .sum::<f64>()
                / n
        };
        let mut out = vec![
            (
                "min",
                per(&|h| h.iter().position(|&n| n > 0).unwrap_or(0) as f64),
            ),
            (
                "max",
                per(&|h| h.iter().rposition(|&n| n > 0).unwrap_or(0) as f64),
            ),
            ("mean", per(&mean)),
            (
                "std",
                per(&|h| {
                    let n = total(h).max(1) as f64;
                    let m = mean(h);
                    (h.iter()
                        .enumerate()
                        .map(|(v, &c)| (v as f64 - m).powi(2) * c as f64)
                        .sum::<f64>()
                        / n)
                        .sqrt()
                }),
            ),
            ("count", StatValue::I64(vec![1], vec![self.frames as i64])),
        ];
        for (q, key) in QUANTILES {
            out.push((
                key,
                per(&|h| {
                    let n = total(h);
                    if n == 0 {
                        return 0.0;
                    }
                    let pos = q * (n - 1) as f64;
                    let (lo, hi) = (pos.floor(), pos.ceil());
                    let (a, b) = (rank(h, lo as u64), rank(h, hi as u64));
                    a + (b - a) * (pos - lo)
                }),
            ));
        }
        Stats { values: out }
    }
}

/// A camera's MP4, and what it took.
struct VideoOut {
    width: u32,
    height: u32,
    remuxed: bool,
    stats: ImageStats,
}

/// Write the rows' frames `sel` of `frames` as an MP4 at `fps`, frame `k` at `k / fps`.
fn write_video(
    frames: &[VideoFrame],
    sel: &[usize],
    fps: u32,
    path: &Path,
    sampled: &[bool],
) -> Result<VideoOut, String> {
    let first = *sel.first().ok_or("no rows")?;
    let remux = frames[first].keyframe && sel.windows(2).all(|w| w[1] == w[0] + 1);
    let start = (0..=first)
        .rev()
        .find(|&i| frames[i].keyframe)
        .ok_or("no keyframe before the first row's frame")?;
    let timescale = fps * 1000;
    let file =
        fs::File::create(path).map_err(|e| format!("cannot create {}: {e}", path.display()))?;
    let file = std::io::BufWriter::new(file);
    let mut mp4: Option<Mp4Writer<_>> = None;
    let mut dec = H264Decoder::new(xoq_media::MAX_PIXELS).map_err(|e| e.to_string())?;
    let mut enc: Option<H264Encoder> = None;
    let mut stats = ImageStats::new();
    let mut rgb = Vec::new();
    let mut size: Option<(u32, u32)> = None;
    let mut have = false;
    let mut k = 0;
    let mut file = Some(file);
    let last = *sel.last().ok_or("no rows")?;
    for (j, frame) in frames.iter().enumerate().take(last + 1).skip(start) {
        let needed = sel[k..].iter().take_while(|&&s| s == j).count();
        let picture = !remux || (0..needed).any(|i| sampled[k + i]);
        // A damaged frame: a copied stream keeps it as it is; a re-encoded one shows the
        // last good picture again.
        if let Ok(Some(p)) = dec.decode(&frame.data) {
            let (w, h) = (p.width(), p.height());
            match size {
                None => size = Some((w, h)),
                Some(s) if s != (w, h) => {
                    return Err(format!(
                        "the picture size changed from {}x{} to {w}x{h} during the episode; export each part separately",
                        s.0, s.1
                    ));
                }
                _ => {}
            }
            if picture {
                rgb.resize(w as usize * h as usize * 3, 0);
                p.write_packed(ChannelOrder::Rgb, &mut rgb)
                    .map_err(|e| e.to_string())?;
                have = true;
            }
        }
        for _ in 0..needed {
            let (w, h) = size.ok_or_else(|| format!("frame {j} did not decode"))?;
            if !remux && !have {
                return Err(format!("frame {j} did not decode"));
            }
            if sampled[k] && have {
                stats.add(&rgb);
            }
            let (au, key) = if remux {
                (frame.data.to_vec(), frame.keyframe)
            } else {
                let e = match &mut enc {
                    Some(e) => e,
                    slot => slot.insert(
                        H264Encoder::new(H264Config::for_size(w, h, fps))
                            .map_err(|e| e.to_string())?,
                    ),
                };
                let u = e.encode_rgb(&rgb, w, h).map_err(|e| e.to_string())?;
                (u.data, u.keyframe)
            };
            if mp4.is_none() {
                let params =
                    AvcParams::from_access_unit(&au).ok_or("the first frame carries no SPS/PPS")?;
                let track = VideoTrack {
                    width: w as u16,
                    height: h as u16,
                    timescale,
                    params,
                };
                let f = file.take().ok_or("file already used")?;
                mp4 = Some(Mp4Writer::new(f, track).map_err(|e| e.to_string())?);
            }
            let w4 = mp4.as_mut().ok_or("no writer")?;
            let sample = to_length_prefixed(&au, w4.params());
            w4.push(&sample, 1000, key)
                .map_err(|e: Mp4Error| e.to_string())?;
            k += 1;
        }
    }
    let (width, height) = size.ok_or("nothing decoded")?;
    mp4.ok_or("no frames written")?
        .finish()
        .map_err(|e| e.to_string())?;
    Ok(VideoOut {
        width,
        height,
        remuxed: remux,
        stats,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ros2::JointState;
    use xoq_media::h264::{H264Config, H264Encoder};

    #[test]
    fn nearest_prefers_the_closer_then_the_earlier() {
        let t = [10u64, 20, 30];
        let at = |x| nearest(t.len(), |i| t[i], x);
        assert_eq!(
            [at(0), at(14), at(15), at(16), at(30), at(99)],
            [0, 0, 0, 1, 2, 2]
        );
    }

    /// A recording: a 64×48 camera at 30 fps (frames `skip` missing) from t = 1 s, and one
    /// joint sampled every 5 ms from 0.9 s, commanded likewise.
    fn recording(frames: u64, skip: &[u64]) -> Recording {
        let mut enc = H264Encoder::new(H264Config {
            fps: 30,
            bitrate: 300_000,
            gop: 30,
        })
        .expect("encoder");
        let mut rec = Recording::default();
        let mut video = Vec::new();
        for i in 0..frames {
            let rgb = vec![(i * 4) as u8; 64 * 48 * 3];
            let u = enc.encode_rgb(&rgb, 64, 48).expect("encode");
            if !skip.contains(&i) {
                video.push(VideoFrame {
                    capture_ns: 1_000_000_000 + i * 1_000_000_000 / 30,
                    data: u.data.into(),
                    keyframe: u.keyframe,
                });
            }
        }
        rec.videos.insert("/cam/video".into(), video);
        let end = 1_000_000_000 + frames * 1_000_000_000 / 30;
        for topic in ["/arm/joint_states", "/arm/joint_commands"] {
            let samples = (0..)
                .map(|k| 900_000_000 + k * 5_000_000)
                .take_while(|&t| t <= end + 100_000_000)
                .map(|t| JointState {
                    stamp_ns: t,
                    frame_id: "arm".into(),
                    name: vec!["j1".into()],
                    position: vec![t as f64 / 1e9],
                    ..Default::default()
                })
                .collect();
            rec.joints.insert(topic.into(), samples);
        }
        rec
    }

    fn opts(fps: u32) -> ExportOptions {
        ExportOptions {
            fps,
            state: Vec::new(),
            action: Vec::new(),
            task: "t".into(),
            robot_type: None,
        }
    }

    #[test]
    fn a_matching_camera_is_copied_and_rows_pair_nearest_samples() {
        let dir = tempfile::tempdir().expect("dir");
        let s = export(&recording(45, &[]), &opts(30), &dir.path().join("ds")).expect("export");
        assert_eq!(s.start_ns, 1_000_000_000);
        assert_eq!(s.frames, 45);
        assert_eq!(s.state_names, ["arm.j1"]);
        let c = &s.cameras[0];
        assert!(!c.reencoded);
        assert_eq!((c.width, c.height, c.repeated, c.skipped), (64, 48, 0, 0));
        // Joints every 5 ms: the nearest is at most 2.5 ms away from any frame.
        assert!(
            s.camera_to_state.max_ns <= 2_500_000,
            "{:?}",
            s.camera_to_state
        );
        assert!(s.camera_to_grid.max_ns <= 1, "{:?}", s.camera_to_grid);
        for f in [
            "meta/info.json",
            "meta/stats.json",
            "meta/tasks.parquet",
            "meta/episodes/chunk-000/file-000.parquet",
            "data/chunk-000/file-000.parquet",
            "videos/observation.images.cam/chunk-000/file-000.mp4",
        ] {
            assert!(dir.path().join("ds").join(f).is_file(), "{f}");
        }
        // A second export into the same directory is refused.
        assert!(matches!(
            export(&recording(45, &[]), &opts(30), &dir.path().join("ds")),
            Err(ExportError::Options(_))
        ));
    }

    #[test]
    fn a_dropped_frame_is_re_encoded_with_a_repeat() {
        let dir = tempfile::tempdir().expect("dir");
        let s = export(&recording(45, &[20]), &opts(30), &dir.path().join("ds")).expect("export");
        let c = &s.cameras[0];
        assert!(c.reencoded);
        assert_eq!(c.repeated, 1, "{c:?}");
        // The row of the missing frame shows a neighbour, one frame (33 ms) away.
        assert!(
            s.camera_to_grid.max_ns >= 33_000_000,
            "{:?}",
            s.camera_to_grid
        );
    }

    #[test]
    fn episode_marks_split_the_recording_into_episodes() {
        let mut rec = recording(90, &[]);
        // Keyframes at 1 s, 2 s and 3 s: a mark at 1.5 s starts the second episode at the
        // next keyframe, 2 s.
        rec.episode_marks = vec![1_500_000_000];
        let dir = tempfile::tempdir().expect("dir");
        let ds = dir.path().join("ds");
        let s = export(&rec, &opts(30), &ds).expect("export");
        assert_eq!(s.episodes.len(), 2, "{:?}", s.episodes);
        assert_eq!(s.episodes[0], (1_000_000_000, 15));
        assert_eq!(s.episodes[1].0, 2_000_000_000);
        assert_eq!(s.frames, 15 + s.episodes[1].1);
        assert!(s.left_out.is_empty());
        for e in 0..2 {
            let f = ds.join(format!(
                "videos/observation.images.cam/chunk-000/file-{e:03}.mp4"
            ));
            assert!(f.is_file(), "{}", f.display());
        }
        // A mark with nothing after it leaves that part out, and says so.
        let mut rec = recording(45, &[]);
        rec.episode_marks = vec![5_000_000_000];
        let s = export(&rec, &opts(30), &dir.path().join("ds2")).expect("export");
        assert_eq!(s.episodes.len(), 1);
        assert_eq!(s.left_out.len(), 1, "{:?}", s.left_out);
    }

    #[test]
    fn streams_that_do_not_overlap_are_refused() {
        let mut rec = recording(10, &[]);
        for s in rec.joints.values_mut() {
            s.retain(|j| j.stamp_ns < 950_000_000);
        }
        let dir = tempfile::tempdir().expect("dir");
        let e = export(&rec, &opts(30), &dir.path().join("ds")).expect_err("no overlap");
        assert!(
            e.to_string().contains("overlap") || e.to_string().contains("keyframe"),
            "{e}"
        );
    }

    #[test]
    fn image_stats_are_exact_per_channel() {
        let mut s = ImageStats::new();
        s.add(&[0, 255, 10, 255, 255, 20]);
        let st = s.finish();
        let get = |k: &str| match &st.values.iter().find(|(n, _)| *n == k).expect(k).1 {
            StatValue::F64(shape, v) => {
                assert_eq!(shape, &[3, 1, 1]);
                v.clone()
            }
            StatValue::I64(_, v) => v.iter().map(|&x| x as f64).collect(),
        };
        assert_eq!(get("min"), [0.0, 1.0, 10.0 / 255.0]);
        assert_eq!(get("max"), [1.0, 1.0, 20.0 / 255.0]);
        assert_eq!(get("mean"), [0.5, 1.0, 15.0 / 255.0]);
        assert_eq!(get("count"), [1.0]);
        assert_eq!(get("q50"), [0.5, 1.0, 15.0 / 255.0]);
    }
}
