"""Tests for the LeRobot v3.0 validator (lerobot_v3.py) on hand-built datasets.

A small valid dataset (2 episodes, 2 tasks, one h264 camera) is written with pyarrow, pandas and
PyAV the way LeRobot 0.4.x lays it out; then single defects are injected and each must be rejected,
so a passing `validate` on an export means something.
"""

from __future__ import annotations

import json
import shutil
import sys
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
import lerobot_v3  # noqa: E402

FPS = 30
H, W = 48, 64
CAM = "observation.images.front"
# (task, length) per episode.
EPISODES = [("pick up the cube", 5), ("place the cube", 4)]
# Fine clock for the mp4 so single frames can be moved off the 1/FPS grid (30 fps * 512).
TIME_BASE = Fraction(1, 15360)
TICKS = 512
STAT_QUANTILES = {"q01": 0.01, "q10": 0.10, "q50": 0.50, "q90": 0.90, "q99": 0.99}


def _features() -> dict:
    names = ["shoulder", "elbow", "gripper"]
    return {
        "action": {"dtype": "float32", "shape": [3], "names": names},
        "observation.state": {"dtype": "float32", "shape": [3], "names": names},
        CAM: {
            "dtype": "video", "shape": [H, W, 3], "names": ["height", "width", "channels"],
            "info": {"video.height": H, "video.width": W, "video.codec": "h264",
                     "video.pix_fmt": "yuv420p", "video.is_depth_map": False, "video.fps": FPS,
                     "video.channels": 3, "has_audio": False},
        },
        "observation.capture_time_ns": {"dtype": "int64", "shape": [1], "names": None},
        "timestamp": {"dtype": "float32", "shape": [1], "names": None},
        "frame_index": {"dtype": "int64", "shape": [1], "names": None},
        "episode_index": {"dtype": "int64", "shape": [1], "names": None},
        "index": {"dtype": "int64", "shape": [1], "names": None},
        "task_index": {"dtype": "int64", "shape": [1], "names": None},
    }


def _stats(values: np.ndarray, video: bool = False) -> dict:
    """min/max/mean/std/count/quantiles like compute_stats; video per channel in [0, 1], (3, 1, 1)."""
    if video:
        flat = values.reshape(-1, 3).astype(np.float64) / 255.0
        count = len(values)
    else:
        flat = values.reshape(len(values), -1).astype(np.float64)
        count = len(values)
    shape = (3, 1, 1) if video else (flat.shape[1],)
    out = {
        "min": flat.min(axis=0), "max": flat.max(axis=0),
        "mean": flat.mean(axis=0), "std": flat.std(axis=0),
        **{k: np.quantile(flat, q, axis=0) for k, q in STAT_QUANTILES.items()},
    }
    out = {k: v.reshape(shape).tolist() for k, v in out.items()}
    out["count"] = [count]
    return out


def _encode(path: Path, frames: np.ndarray, drop: int | None, shift: dict[int, int]) -> None:
    """h264 mp4 with frame k at pts k/FPS (plus `shift` ticks), optionally without frame `drop`."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), "w") as out:
        stream = out.add_stream("libx264", rate=FPS, options={"preset": "ultrafast"})
        stream.width, stream.height, stream.pix_fmt = W, H, "yuv420p"
        stream.codec_context.time_base = TIME_BASE
        for k, rgb in enumerate(frames):
            if k == drop:
                continue
            frame = av.VideoFrame.from_ndarray(rgb, format="rgb24")
            frame.pts, frame.time_base = k * TICKS + shift.get(k, 0), TIME_BASE
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)


def _write_tasks(root: Path, tasks: list[str], pandas_index: bool = True) -> None:
    path = root / "meta/tasks.parquet"
    if pandas_index:
        # What LeRobot does: the task strings are the index; pandas records it in the schema.
        pd.DataFrame({"task_index": range(len(tasks))}, index=tasks).to_parquet(path)
    else:
        pq.write_table(pa.table({"task_index": pa.array(range(len(tasks)), pa.int64()),
                                 "task": pa.array(tasks, pa.string())}), path)


def build(root: Path, *, drop_frame: int | None = None, shift: dict[int, int] | None = None,
          state_type: pa.DataType | None = None) -> None:
    """Write a valid LeRobot v3.0 dataset (unless a defect is requested)."""
    features = _features()
    tasks = [t for t, _ in EPISODES]
    lengths = [n for _, n in EPISODES]
    total = sum(lengths)
    rng = np.random.default_rng(0)
    cols = {
        "action": rng.normal(size=(total, 3)).astype(np.float32),
        "observation.state": rng.normal(size=(total, 3)).astype(np.float32),
        "observation.capture_time_ns": 1_700_000_000_000_000_000 + np.arange(total) * 33_333_333,
        "frame_index": np.concatenate([np.arange(n) for n in lengths]),
        "episode_index": np.repeat(np.arange(len(lengths)), lengths),
        "index": np.arange(total),
        "task_index": np.repeat(np.arange(len(lengths)), lengths),
    }
    cols["timestamp"] = (cols["frame_index"] / FPS).astype(np.float32)
    frames = np.stack([np.full((H, W, 3), (20 * k, 255 - 20 * k, 100), np.uint8) for k in range(total)])

    arrays = {}
    for key, ft in features.items():
        if ft["dtype"] == "video":
            continue
        if ft["shape"] == [1]:
            arrays[key] = pa.array(cols[key], lerobot_v3.ARROW_SCALARS[ft["dtype"]])
        else:
            typ = state_type if (state_type is not None and key == "observation.state") else \
                pa.list_(pa.float32(), ft["shape"][0])
            arrays[key] = pa.array(cols[key].tolist(), typ)
    (root / "data/chunk-000").mkdir(parents=True)
    pq.write_table(pa.table(arrays), root / "data/chunk-000/file-000.parquet")

    _encode(root / f"videos/{CAM}/chunk-000/file-000.mp4", frames, drop_frame, shift or {})

    (root / "meta/episodes/chunk-000").mkdir(parents=True)
    _write_tasks(root, tasks)
    starts = np.cumsum([0] + lengths)
    ep: dict[str, list] = {
        "episode_index": list(range(len(lengths))), "tasks": [[t] for t in tasks], "length": lengths,
        "data/chunk_index": [0, 0], "data/file_index": [0, 0],
        "dataset_from_index": starts[:-1].tolist(), "dataset_to_index": starts[1:].tolist(),
        f"videos/{CAM}/chunk_index": [0, 0], f"videos/{CAM}/file_index": [0, 0],
        f"videos/{CAM}/from_timestamp": [s / FPS for s in starts[:-1]],
        f"videos/{CAM}/to_timestamp": [s / FPS for s in starts[1:]],
    }
    for key, ft in features.items():
        per_ep = [_stats(frames[lo:hi], video=True) if ft["dtype"] == "video" else _stats(cols[key][lo:hi])
                  for lo, hi in zip(starts[:-1], starts[1:])]
        for stat in lerobot_v3.STAT_KEYS:
            ep[f"stats/{key}/{stat}"] = [s[stat] for s in per_ep]
    ep["meta/episodes/chunk_index"] = [0, 0]
    ep["meta/episodes/file_index"] = [0, 0]
    pq.write_table(pa.Table.from_pydict(ep), root / "meta/episodes/chunk-000/file-000.parquet")

    stats = {key: _stats(frames, video=True) if ft["dtype"] == "video" else _stats(cols[key])
             for key, ft in features.items()}
    (root / "meta/stats.json").write_text(json.dumps(stats, indent=4))
    info = {
        "codebase_version": "v3.0", "robot_type": "so101_follower",
        "total_episodes": len(lengths), "total_frames": total, "total_tasks": len(tasks),
        "chunks_size": 1000, "data_files_size_in_mb": 100, "video_files_size_in_mb": 200,
        "fps": FPS, "splits": {"train": f"0:{len(lengths)}"},
        "data_path": lerobot_v3.DATA_PATH, "video_path": lerobot_v3.VIDEO_PATH,
        "features": features,
    }
    (root / "meta/info.json").write_text(json.dumps(info, indent=4))


@pytest.fixture(scope="module")
def template(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("lerobot") / "valid"
    build(root)
    return root


@pytest.fixture
def dataset(template, tmp_path) -> Path:
    root = tmp_path / "ds"
    shutil.copytree(template, root)
    return root


DATA = "data/chunk-000/file-000.parquet"


def _rewrite_data(root: Path, column: str, fn) -> None:
    """Replace one data column with fn(numpy values) keeping its arrow type."""
    path = root / DATA
    table = pq.read_table(path)
    i = table.column_names.index(column)
    values = fn(table.column(column).to_numpy().copy())
    pq.write_table(table.set_column(i, column, pa.array(values, table.schema.field(column).type)), path)


def test_valid_dataset_passes(template):
    summary = lerobot_v3.validate(template)
    assert summary["frames"] == 9 and summary["episodes"] == 2
    assert summary["episode_lengths"] == [5, 4]
    assert summary["tasks"] == ["pick up the cube", "place the cube"]
    assert summary["video_keys"] == [CAM]
    assert summary["videos"][CAM] == {"width": W, "height": H, "codec": "h264",
                                      "pix_fmt": "yuv420p", "frames": 9}


def test_variable_length_list_is_accepted(tmp_path):
    # HF datasets casts list<float> with the right length to the fixed-size feature.
    build(tmp_path / "ds", state_type=pa.list_(pa.float32()))
    lerobot_v3.validate(tmp_path / "ds")


def test_gap_in_index(dataset):
    _rewrite_data(dataset, "index", lambda v: np.where(v >= 5, v + 1, v))
    with pytest.raises(AssertionError, match="index must be 0..8"):
        lerobot_v3.validate(dataset)


def test_timestamp_off_grid(dataset):
    def nudge(v):
        v[2] += np.float32(0.001)
        return v
    _rewrite_data(dataset, "timestamp", nudge)
    with pytest.raises(AssertionError, match="s off frame_index/fps"):
        lerobot_v3.validate(dataset)


def test_missing_video_frame(tmp_path):
    build(tmp_path / "ds", drop_frame=6)
    with pytest.raises(AssertionError, match="8 frames but its episodes"):
        lerobot_v3.validate(tmp_path / "ds")


def test_video_frame_off_grid(tmp_path):
    # Frame 6 two ms late (31 ticks of 1/15360 s): frame count is right, lookup is not.
    build(tmp_path / "ds", shift={6: 31})
    with pytest.raises(AssertionError, match="no frame within 0.0001 s"):
        lerobot_v3.validate(tmp_path / "ds")


def test_wrong_dtype(tmp_path):
    build(tmp_path / "ds", state_type=pa.list_(pa.float64(), 3))
    with pytest.raises(AssertionError, match="'observation.state': element type double"):
        lerobot_v3.validate(tmp_path / "ds")


def test_missing_stats_key(dataset):
    path = dataset / "meta/stats.json"
    stats = json.loads(path.read_text())
    del stats["action"]["q50"]
    path.write_text(json.dumps(stats))
    with pytest.raises(AssertionError, match=r"action: missing stats \['q50'\]"):
        lerobot_v3.validate(dataset)


def test_wrong_stats_shape_for_video(dataset):
    path = dataset / "meta/stats.json"
    stats = json.loads(path.read_text())
    stats[CAM]["mean"] = [0.5, 0.5, 0.5]
    path.write_text(json.dumps(stats))
    with pytest.raises(AssertionError, match=r"mean: shape \(3,\), expected \(3, 1, 1\)"):
        lerobot_v3.validate(dataset)


def test_tasks_without_pandas_index(dataset):
    _write_tasks(dataset, [t for t, _ in EPISODES], pandas_index=False)
    with pytest.raises(AssertionError, match="task strings must be the pandas index"):
        lerobot_v3.validate(dataset)


def test_columns_out_of_feature_order(dataset):
    path = dataset / DATA
    table = pq.read_table(path)
    names = table.column_names
    pq.write_table(table.select([names[1], names[0], *names[2:]]), path)
    with pytest.raises(AssertionError, match="info.json order"):
        lerobot_v3.validate(dataset)


def test_episode_range_mismatch(dataset):
    path = dataset / "meta/episodes/chunk-000/file-000.parquet"
    table = pq.read_table(path)
    i = table.column_names.index("dataset_to_index")
    pq.write_table(table.set_column(i, "dataset_to_index", pa.array([4, 9], pa.int64())), path)
    with pytest.raises(AssertionError, match=r"episode 0 spans \[0, 4\)"):
        lerobot_v3.validate(dataset)
