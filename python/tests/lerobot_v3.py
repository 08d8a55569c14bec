"""Validator for LeRobot v3.0 datasets, without LeRobot or torch.

`validate(root)` checks what LeRobot 0.4.x checks or silently relies on when a dataset is opened with
`LeRobotDataset(repo_id, root=root)` and iterated (facts and their sources: /tmp/lerobot-v3-spec.md,
kept in sync with the docstrings below). It raises AssertionError on the first violation and returns
a summary dict.

Only pyarrow, pandas, numpy and PyAV are needed.
"""

from __future__ import annotations

import json
from pathlib import Path

import av
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

CODEBASE_VERSION = "v3.0"
DATA_PATH = "data/chunk-{chunk_index:03d}/file-{file_index:03d}.parquet"
VIDEO_PATH = "videos/{video_key}/chunk-{chunk_index:03d}/file-{file_index:03d}.mp4"
EPISODES_PATH = "meta/episodes/chunk-{chunk_index:03d}/file-{file_index:03d}.parquet"
# LeRobotDataset's default; frames are matched with a strict `<`.
TOLERANCE_S = 1e-4

# LeRobot adds these to every dataset (utils.DEFAULT_FEATURES).
DEFAULT_FEATURES = {
    "timestamp": "float32",
    "frame_index": "int64",
    "episode_index": "int64",
    "index": "int64",
    "task_index": "int64",
}
# compute_stats.DEFAULT_QUANTILES = [0.01, 0.10, 0.50, 0.90, 0.99] plus the basic stats.
STAT_KEYS = ("min", "max", "mean", "std", "count", "q01", "q10", "q50", "q90", "q99")
QUANTILE_KEYS = ("q01", "q10", "q50", "q90", "q99")
INFO_KEYS = {
    "codebase_version": str,
    "robot_type": (str, type(None)),
    "total_episodes": int,
    "total_frames": int,
    "total_tasks": int,
    "chunks_size": int,
    "data_files_size_in_mb": (int, float),
    "video_files_size_in_mb": (int, float),
    "fps": int,
    "splits": dict,
    "data_path": str,
    "video_path": (str, type(None)),
    "features": dict,
}
VIDEO_INFO_KEYS = {
    "video.height": int,
    "video.width": int,
    "video.codec": str,
    "video.pix_fmt": str,
    "video.is_depth_map": bool,
    "video.fps": int,
    "video.channels": int,
    "has_audio": bool,
}
ARROW_SCALARS = {
    "float32": pa.float32(),
    "float64": pa.float64(),
    "int8": pa.int8(),
    "int16": pa.int16(),
    "int32": pa.int32(),
    "int64": pa.int64(),
    "uint8": pa.uint8(),
    "uint16": pa.uint16(),
    "uint32": pa.uint32(),
    "uint64": pa.uint64(),
    "bool": pa.bool_(),
}


def _require(cond, msg: str) -> None:
    # Not `assert`: the checks must also run under `python -O`.
    if not cond:
        raise AssertionError(msg)


def _fail(msg: str):
    raise AssertionError(msg)


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def validate(root: Path | str, tolerance_s: float = TOLERANCE_S) -> dict:
    """Check a LeRobot v3.0 dataset directory; return a summary.

    Raises AssertionError naming the file and the violated rule. The summary has `fps`, `frames`,
    `episodes`, `episode_lengths`, `tasks`, `features`, `video_keys` and `videos` (per key: width,
    height, codec, pix_fmt, frames).
    """
    root = Path(root)
    _require(root.is_dir(), f"{root}: not a directory")
    info = _check_info(root)
    features = info["features"]
    video_keys = [k for k, ft in features.items() if ft["dtype"] == "video"]
    tasks = _check_tasks(root, info)
    episodes = _check_episodes(root, info, tasks)
    data = _check_data(root, info, episodes, tasks, tolerance_s)
    videos = _check_videos(root, info, episodes, data, video_keys, tolerance_s)
    _check_stats(root, info, episodes, data)
    return {
        "fps": info["fps"],
        "frames": info["total_frames"],
        "episodes": info["total_episodes"],
        "episode_lengths": [int(x) for x in episodes["length"]],
        "tasks": list(tasks.index),
        "features": list(features),
        "video_keys": video_keys,
        "videos": videos,
    }


# --- meta/info.json -------------------------------------------------------------------------------


def _check_info(root: Path) -> dict:
    """info.json: keys, types, the fixed path templates and the feature table."""
    path = root / "meta/info.json"
    _require(path.is_file(), f"{path}: missing (LeRobot would try to download the dataset)")
    info = json.loads(path.read_text())
    for key, typ in INFO_KEYS.items():
        _require(key in info, f"{path}: missing key {key!r}")
        _require(isinstance(info[key], typ) and not isinstance(info[key], bool),
                 f"{path}: {key!r} is {info[key]!r}, expected {typ}")
    _require(info["codebase_version"] == CODEBASE_VERSION,
             f"{path}: codebase_version {info['codebase_version']!r}, expected {CODEBASE_VERSION!r}")
    _require(info["fps"] > 0, f"{path}: fps must be > 0")
    _require(info["total_episodes"] > 0 and info["total_frames"] > 0,
             f"{path}: dataset must have at least one episode and frame")
    _require(info["splits"] == {"train": f"0:{info['total_episodes']}"},
             f"{path}: splits {info['splits']!r}, expected {{'train': '0:{info['total_episodes']}'}}")
    # LeRobot formats these templates itself, so other spellings change where it looks.
    _require(info["data_path"] == DATA_PATH, f"{path}: data_path {info['data_path']!r} != {DATA_PATH!r}")

    features = info["features"]
    for name, ft in features.items():
        where = f"{path}: feature {name!r}"
        _require("/" not in name, f"{where}: names may not contain '/'")
        _require(isinstance(ft, dict) and {"dtype", "shape", "names"} <= set(ft),
                 f"{where}: needs dtype, shape and names")
        shape = ft["shape"]
        _require(isinstance(shape, list) and shape and all(_is_int(d) and d > 0 for d in shape),
                 f"{where}: shape {shape!r} must be a non-empty list of positive ints")
        dtype = ft["dtype"]
        if dtype == "video":
            _check_video_feature(where, ft)
        else:
            _require(dtype in ARROW_SCALARS,
                     f"{where}: dtype {dtype!r} not supported (validator handles numeric and video)")
            _require(len(shape) == 1,
                     f"{where}: shape {shape!r}; only 1-D numeric features are supported")
            names = ft["names"]
            _require(names is None or (isinstance(names, list) and len(names) == shape[0]),
                     f"{where}: names {names!r} must be null or one per element of shape {shape}")
    for name, dtype in DEFAULT_FEATURES.items():
        _require(name in features, f"{path}: missing default feature {name!r}")
        _require(features[name]["dtype"] == dtype and features[name]["shape"] == [1],
                 f"{path}: {name!r} must be dtype {dtype} shape [1], got {features[name]}")

    has_video = any(ft["dtype"] == "video" for ft in features.values())
    if has_video:
        _require(info["video_path"] == VIDEO_PATH,
                 f"{path}: video_path {info['video_path']!r} != {VIDEO_PATH!r}")
    else:
        _require(info["video_path"] is None, f"{path}: video_path must be null without video features")
    return info


def _check_video_feature(where: str, ft: dict) -> None:
    """A video feature is (height, width, channels) with a PyAV-derived `info` block."""
    shape = ft["shape"]
    _require(len(shape) == 3 and shape[2] == 3, f"{where}: video shape {shape} must be [h, w, 3]")
    # dataset_to_policy_features uses names[2] to turn (h, w, c) into (c, h, w).
    _require(ft["names"] == ["height", "width", "channels"],
             f"{where}: names {ft['names']!r} must be ['height', 'width', 'channels']")
    vinfo = ft.get("info")
    _require(isinstance(vinfo, dict), f"{where}: missing 'info' block")
    for key, typ in VIDEO_INFO_KEYS.items():
        _require(key in vinfo, f"{where}: info lacks {key!r}")
        ok = isinstance(vinfo[key], typ) and (typ is bool or not isinstance(vinfo[key], bool))
        _require(ok, f"{where}: info[{key!r}] = {vinfo[key]!r}, expected {typ.__name__}")
    _require([vinfo["video.height"], vinfo["video.width"], vinfo["video.channels"]] == shape,
             f"{where}: info height/width/channels {vinfo} disagree with shape {shape}")
    _require(vinfo["video.is_depth_map"] is False and vinfo["has_audio"] is False,
             f"{where}: expected is_depth_map false and has_audio false")


# --- meta/tasks.parquet ---------------------------------------------------------------------------


def _check_tasks(root: Path, info: dict) -> pd.DataFrame:
    """Tasks are read with pandas; LeRobot uses `tasks.iloc[task_index].name` as the task string and
    `tasks.loc[task].task_index`, so the index must be the task strings, in task_index order."""
    path = root / "meta/tasks.parquet"
    _require(path.is_file(), f"{path}: missing")
    tasks = pd.read_parquet(path)
    _require(list(tasks.columns) == ["task_index"],
             f"{path}: pandas sees columns {list(tasks.columns)}, expected ['task_index'] "
             "(the task strings must be the pandas index: 'pandas' schema metadata with index_columns)")
    _require(all(isinstance(t, str) for t in tasks.index),
             f"{path}: index must hold the task strings, got {list(tasks.index)[:5]!r}")
    _require(tasks.index.is_unique, f"{path}: duplicate task strings")
    _require(str(tasks["task_index"].dtype) == "int64", f"{path}: task_index must be int64")
    _require(tasks["task_index"].tolist() == list(range(len(tasks))),
             f"{path}: task_index must be 0..n-1 in row order, got {tasks['task_index'].tolist()}")
    _require(len(tasks) == info["total_tasks"],
             f"{path}: {len(tasks)} tasks but info.total_tasks = {info['total_tasks']}")
    return tasks


# --- meta/episodes --------------------------------------------------------------------------------


def _episode_columns(info: dict) -> dict:
    """Non-stats episode columns and the arrow type LeRobot writes for each."""
    cols = {
        "episode_index": pa.int64(),
        "tasks": None,  # list of strings, checked separately
        "length": pa.int64(),
        "data/chunk_index": pa.int64(),
        "data/file_index": pa.int64(),
        "dataset_from_index": pa.int64(),
        "dataset_to_index": pa.int64(),
        "meta/episodes/chunk_index": pa.int64(),
        "meta/episodes/file_index": pa.int64(),
    }
    for key, ft in info["features"].items():
        if ft["dtype"] == "video":
            cols[f"videos/{key}/chunk_index"] = pa.int64()
            cols[f"videos/{key}/file_index"] = pa.int64()
            cols[f"videos/{key}/from_timestamp"] = pa.float64()
            cols[f"videos/{key}/to_timestamp"] = pa.float64()
    return cols


def _check_episodes(root: Path, info: dict, tasks: pd.DataFrame) -> dict:
    """Episodes table: row i is episode i (LeRobot indexes it positionally), frame ranges contiguous."""
    files = sorted((root / "meta/episodes").glob("*/*.parquet"))
    _require(files, f"{root}/meta/episodes: no */*.parquet files")
    expected = _episode_columns(info)
    tables = []
    for f in files:
        t = pq.read_table(f)
        for col, typ in expected.items():
            _require(col in t.column_names, f"{f}: missing column {col!r}")
            _require(t.column(col).null_count == 0, f"{f}: nulls in {col!r}")
            if typ is not None:
                _require(t.schema.field(col).type == typ,
                         f"{f}: column {col!r} is {t.schema.field(col).type}, expected {typ}")
        ttype = t.schema.field("tasks").type
        _require((pa.types.is_list(ttype) or pa.types.is_large_list(ttype))
                 and (pa.types.is_string(ttype.value_type) or pa.types.is_large_string(ttype.value_type)),
                 f"{f}: 'tasks' is {ttype}, expected list<string>")
        rel = f.relative_to(root).as_posix()
        for ci, fi in zip(t.column("meta/episodes/chunk_index").to_pylist(),
                          t.column("meta/episodes/file_index").to_pylist()):
            _require(EPISODES_PATH.format(chunk_index=ci, file_index=fi) == rel,
                     f"{f}: meta/episodes/chunk_index,file_index ({ci},{fi}) do not name this file")
        tables.append(t)
    ep = pa.concat_tables(tables, promote_options="permissive")
    n = info["total_episodes"]
    cols = {c: ep.column(c).to_pylist() for c in ep.column_names}
    src = f"{root}/meta/episodes"
    _require(cols["episode_index"] == list(range(n)),
             f"{src}: episode_index must be 0..{n - 1} in row order, got {cols['episode_index'][:10]}")
    start = 0
    for i in range(n):
        length, lo, hi = cols["length"][i], cols["dataset_from_index"][i], cols["dataset_to_index"][i]
        _require(length > 0, f"{src}: episode {i} has length {length}")
        _require(lo == start and hi == lo + length,
                 f"{src}: episode {i} spans [{lo}, {hi}) with length {length}, expected [{start}, {start + length})")
        start = hi
        ep_tasks = cols["tasks"][i]
        _require(ep_tasks and len(set(ep_tasks)) == len(ep_tasks),
                 f"{src}: episode {i} tasks {ep_tasks!r} must be non-empty and unique")
        for task in ep_tasks:
            _require(task in tasks.index, f"{src}: episode {i} task {task!r} not in meta/tasks.parquet")
    _require(start == info["total_frames"],
             f"{src}: episodes cover {start} frames but info.total_frames = {info['total_frames']}")
    cols["_table"] = ep
    return cols


# --- data parquet ---------------------------------------------------------------------------------


def _column_to_numpy(col: pa.ChunkedArray, ft: dict, where: str) -> np.ndarray:
    """Return the column as an (rows,) or (rows, n) array after checking its arrow type."""
    col = col.combine_chunks()
    scalar = ARROW_SCALARS[ft["dtype"]]
    _require(col.null_count == 0, f"{where}: contains nulls")
    if ft["shape"] == [1]:
        # get_hf_features_from_features: shape (1,) -> Value(dtype), a plain scalar column.
        _require(col.type == scalar, f"{where}: arrow type {col.type}, expected {scalar}")
        return col.to_numpy(zero_copy_only=False)
    n = ft["shape"][0]
    # Sequence(length=n): datasets writes fixed_size_list<dtype>[n] and casts list<dtype> whose
    # rows all have length n; any other length fails to load.
    if pa.types.is_fixed_size_list(col.type):
        _require(col.type.list_size == n, f"{where}: fixed_size_list of {col.type.list_size}, expected {n}")
    elif pa.types.is_list(col.type) or pa.types.is_large_list(col.type):
        lengths = col.value_lengths().to_numpy(zero_copy_only=False)
        _require((lengths == n).all(), f"{where}: list rows must all have length {n}")
    else:
        _require(False, f"{where}: arrow type {col.type}, expected fixed_size_list<{scalar}>[{n}]")
    _require(col.type.value_type == scalar, f"{where}: element type {col.type.value_type}, expected {scalar}")
    values = col.flatten()
    _require(values.null_count == 0, f"{where}: contains null elements")
    return values.to_numpy(zero_copy_only=False).reshape(len(col), n)


def _check_data(root: Path, info: dict, episodes: dict, tasks: pd.DataFrame,
                tolerance_s: float) -> dict:
    """Data rows: exact columns in feature order, types, contiguous index, per-episode frame_index,
    timestamps on the fps grid, and episodes' data/chunk_index,file_index pointing at their rows."""
    features = info["features"]
    columns = [k for k, ft in features.items() if ft["dtype"] != "video"]
    files = sorted((root / "data").glob("*/*.parquet"))
    _require(files, f"{root}/data: no */*.parquet files")
    parts: dict[str, list] = {k: [] for k in columns}
    file_rows: dict[str, tuple[int, int]] = {}
    offset = 0
    for f in files:
        t = pq.read_table(f)
        # datasets rejects extra columns, fills missing ones with None, and LeRobot 0.4.2's
        # episode filter casts to the feature schema, which needs the same order.
        _require(t.column_names == columns,
                 f"{f}: columns {t.column_names} != non-video features in info.json order {columns}")
        for k in columns:
            parts[k].append(_column_to_numpy(t.column(k), features[k], f"{f}: column {k!r}"))
        file_rows[f.relative_to(root).as_posix()] = (offset, offset + t.num_rows)
        offset += t.num_rows
    data = {k: np.concatenate(v) for k, v in parts.items()}
    total = info["total_frames"]
    src = f"{root}/data"
    _require(offset == total, f"{src}: {offset} rows but info.total_frames = {total}")
    # LeRobot reads rows positionally and uses `index` as the absolute row for delta timestamps.
    index = data["index"]
    bad = np.flatnonzero(index != np.arange(total))
    if bad.size:
        _fail(f"{src}: index must be 0..{total - 1} (row position); row {bad[0]} has {index[bad[0]]}")

    fps = info["fps"]
    ts = data["timestamp"].astype(np.float64)  # float32 on disk, used as a Python float by LeRobot
    for i in range(info["total_episodes"]):
        lo, hi = episodes["dataset_from_index"][i], episodes["dataset_to_index"][i]
        where = f"{src}: episode {i} rows [{lo}, {hi})"
        _require((data["episode_index"][lo:hi] == i).all(), f"{where}: episode_index is not {i} throughout")
        fi = data["frame_index"][lo:hi]
        bad = np.flatnonzero(fi != np.arange(hi - lo))
        if bad.size:
            _fail(f"{where}: frame_index must be 0..{hi - lo - 1}; row {lo + bad[0]} has {fi[bad[0]]}")
        # add_frame's timestamp is frame_index / fps; video frames are looked up from it.
        err = np.abs(ts[lo:hi] - fi / fps)
        worst = int(np.argmax(err))
        _require(err[worst] < tolerance_s,
                 f"{where}: timestamp {float(ts[lo + worst])!r} at frame_index {int(fi[worst])} is "
                 f"{err[worst]:.6f} s off frame_index/fps (tolerance {tolerance_s} s)")
        rel = DATA_PATH.format(chunk_index=episodes["data/chunk_index"][i],
                               file_index=episodes["data/file_index"][i])
        _require(rel in file_rows, f"{where}: data/chunk_index,file_index name {rel}, which does not exist")
        flo, fhi = file_rows[rel]
        _require(flo <= lo and hi <= fhi, f"{where}: not inside {rel} (rows [{flo}, {fhi}))")
        ti = np.unique(data["task_index"][lo:hi])
        _require(((ti >= 0) & (ti < len(tasks))).all(), f"{where}: task_index {ti.tolist()} out of range")
        names = sorted(tasks.index[ti].tolist())
        _require(names == sorted(episodes["tasks"][i]),
                 f"{where}: tasks of rows {names!r} != episodes 'tasks' {sorted(episodes['tasks'][i])!r}")
    return data


# --- videos ---------------------------------------------------------------------------------------


def _decode_pts(path: Path) -> dict:
    """Decode every frame with PyAV and return presentation times (s) plus stream properties."""
    with av.open(str(path)) as container:
        _require(len(container.streams.video) == 1, f"{path}: expected exactly one video stream")
        _require(not container.streams.audio, f"{path}: has an audio stream (info says has_audio false)")
        stream = container.streams.video[0]
        pts = []
        for frame in container.decode(stream):
            _require(frame.pts is not None, f"{path}: frame without pts")
            pts.append(float(frame.pts * stream.time_base))
            _require((frame.width, frame.height) == (stream.width, stream.height),
                     f"{path}: frame size {frame.width}x{frame.height} changes mid-stream")
        return {
            "pts": np.array(pts),
            "width": stream.width,
            "height": stream.height,
            "codec": stream.codec.canonical_name,
            "pix_fmt": stream.pix_fmt,
            "average_rate": float(stream.average_rate) if stream.average_rate else None,
        }


def _check_videos(root: Path, info: dict, episodes: dict, data: dict, video_keys: list,
                  tolerance_s: float) -> dict:
    """Every row's frame must be found at from_timestamp + timestamp, the way both LeRobot decoders
    look it up: torchcodec takes the frame shown at round(t * average_fps) / average_fps, pyav the
    nearest frame; either must be within tolerance_s (strict)."""
    summary = {}
    fps = info["fps"]
    ts = data["timestamp"].astype(np.float64)
    for key in video_keys:
        vinfo = info["features"][key]["info"]
        by_file: dict[str, list[int]] = {}
        for i in range(info["total_episodes"]):
            rel = VIDEO_PATH.format(video_key=key, chunk_index=episodes[f"videos/{key}/chunk_index"][i],
                                    file_index=episodes[f"videos/{key}/file_index"][i])
            by_file.setdefault(rel, []).append(i)
        total_frames = 0
        for rel, eps in sorted(by_file.items()):
            path = root / rel
            _require(path.is_file(), f"{path}: missing (episodes {eps} point to it)")
            v = _decode_pts(path)
            pts = v["pts"]
            where = f"{path}"
            _require((v["height"], v["width"]) == (vinfo["video.height"], vinfo["video.width"]),
                     f"{where}: {v['width']}x{v['height']} but info says "
                     f"{vinfo['video.width']}x{vinfo['video.height']}")
            _require(v["codec"] == vinfo["video.codec"] and v["pix_fmt"] == vinfo["video.pix_fmt"],
                     f"{where}: codec/pix_fmt {v['codec']}/{v['pix_fmt']} but info says "
                     f"{vinfo['video.codec']}/{vinfo['video.pix_fmt']}")
            _require(pts.size > 0, f"{where}: no decodable frames")
            _require((np.diff(pts) > 0).all(), f"{where}: frame timestamps not strictly increasing")
            avg = v["average_rate"]
            _require(avg is not None and avg > 0, f"{where}: no average frame rate (torchcodec needs it)")
            n_rows = sum(episodes["length"][i] for i in eps)
            _require(pts.size == n_rows,
                     f"{where}: {pts.size} frames but its episodes {eps} have {n_rows} rows")
            prev_to = 0.0
            for i in eps:
                frm = episodes[f"videos/{key}/from_timestamp"][i]
                to = episodes[f"videos/{key}/to_timestamp"][i]
                ew = f"{where}: episode {i}"
                # LeRobot appends episodes to a file and sets from_timestamp = previous to_timestamp.
                _require(abs(frm - prev_to) < 1e-6,
                         f"{ew}: from_timestamp {frm} != previous episode's to_timestamp {prev_to}")
                length = episodes["length"][i]
                _require(abs((to - frm) - length / fps) <= 1.0 / fps,
                         f"{ew}: to_timestamp - from_timestamp = {to - frm} s, expected ~{length / fps} s")
                prev_to = to
                lo, hi = episodes["dataset_from_index"][i], episodes["dataset_to_index"][i]
                query = frm + ts[lo:hi]
                # pyav backend: nearest decoded frame.
                pos = np.clip(np.searchsorted(pts, query), 1, pts.size - 1)
                nearest = np.minimum(np.abs(pts[pos - 1] - query), np.abs(pts[pos] - query))
                if pts.size == 1:
                    nearest = np.abs(pts[0] - query)
                bad = np.flatnonzero(~(nearest < tolerance_s))
                if bad.size:
                    b = bad[0]
                    _fail(f"{ew}: no frame within {tolerance_s} s of t={query[b]:.6f} (row {lo + b}, "
                          f"frame_index {data['frame_index'][lo + b]}); nearest is {nearest[b]:.6f} s away")
                # torchcodec backend (approximate seek): frame index from the average rate.
                idx = np.round(query * avg).astype(np.int64)
                _require((idx < pts.size).all(),
                         f"{ew}: torchcodec would ask for frame {int(idx.max())} of {pts.size}")
                shown = np.searchsorted(pts, idx / avg + 1e-9, side="right") - 1
                err = np.abs(pts[np.maximum(shown, 0)] - query)
                bad = np.flatnonzero(~(err < tolerance_s))
                if bad.size:
                    b = bad[0]
                    _fail(f"{ew}: torchcodec lookup of t={query[b]:.6f} (row {lo + b}) via average_fps "
                          f"{avg} lands on a frame {err[b]:.6f} s away")
            total_frames += pts.size
        summary[key] = {"width": vinfo["video.width"], "height": vinfo["video.height"],
                        "codec": vinfo["video.codec"], "pix_fmt": vinfo["video.pix_fmt"],
                        "frames": total_frames}
    return summary


# --- stats ----------------------------------------------------------------------------------------


def _stat_shape(ft: dict) -> tuple:
    # Images/videos: per-channel (3, 1, 1); numeric features: their own 1-D shape.
    return (3, 1, 1) if ft["dtype"] == "video" else tuple(ft["shape"])


def _check_stat_block(where: str, stats: dict, ft: dict, values: np.ndarray | None, count: int | None,
                      len_limit: int) -> None:
    """One feature's stats: the ten keys, shapes, ordering, and for numeric data the true min/max."""
    _require(isinstance(stats, dict), f"{where}: not a dict")
    missing = [k for k in STAT_KEYS if k not in stats]
    _require(not missing, f"{where}: missing stats {missing}")
    shape = _stat_shape(ft)
    arr = {}
    for k in STAT_KEYS:
        a = np.asarray(stats[k])
        _require(a.dtype.kind in "iuf", f"{where}/{k}: not numeric")
        expected = (1,) if k == "count" else shape
        _require(a.shape == expected, f"{where}/{k}: shape {a.shape}, expected {expected}")
        _require(np.isfinite(a).all(), f"{where}/{k}: not finite")
        arr[k] = a.astype(np.float64)
    _require(np.asarray(stats["count"]).dtype.kind in "iu", f"{where}/count: must be an integer")
    c = int(arr["count"][0])
    if count is not None:
        _require(c == count, f"{where}/count: {c}, expected {count}")
    else:
        # Video stats count the sampled frames (compute_stats.sample_images), at most all frames.
        _require(0 < c <= len_limit, f"{where}/count: {c}, expected 1..{len_limit}")
    eps = 1e-6 * np.maximum(1.0, np.abs(arr["max"]) + np.abs(arr["min"]))
    _require((arr["min"] <= arr["max"] + eps).all(), f"{where}: min > max")
    _require(((arr["min"] - eps <= arr["mean"]) & (arr["mean"] <= arr["max"] + eps)).all(),
             f"{where}: mean outside [min, max]")
    _require((arr["std"] >= 0).all(), f"{where}: negative std")
    prev = arr["min"] - eps
    for q in QUANTILE_KEYS:
        _require((arr[q] >= prev - eps).all() and (arr[q] <= arr["max"] + eps).all(),
                 f"{where}: {q} not ordered within [min, max]")
        prev = arr[q]
    if ft["dtype"] == "video":
        # compute_episode_stats divides pixels by 255.
        _require((arr["min"] >= -eps).all() and (arr["max"] <= 1 + eps).all(),
                 f"{where}: video stats must be in [0, 1]")
    if values is not None:
        v = values.reshape(len(values), -1).astype(np.float64)
        true_min, true_max = v.min(axis=0).reshape(shape), v.max(axis=0).reshape(shape)
        tol = 1e-6 * np.maximum(1.0, np.abs(true_max) + np.abs(true_min))
        _require((np.abs(arr["min"] - true_min) <= tol).all(), f"{where}/min: {arr['min']} != data min {true_min}")
        _require((np.abs(arr["max"] - true_max) <= tol).all(), f"{where}/max: {arr['max']} != data max {true_max}")


def _check_stats(root: Path, info: dict, episodes: dict, data: dict) -> None:
    """meta/stats.json and the per-episode stats/<feature>/<stat> columns, for every feature."""
    path = root / "meta/stats.json"
    _require(path.is_file(), f"{path}: missing (training needs it for normalization)")
    stats = json.loads(path.read_text())
    features = info["features"]
    for name, ft in features.items():
        _require(name in stats, f"{path}: no stats for feature {name!r}")
        is_video = ft["dtype"] == "video"
        _check_stat_block(f"{path}: {name}", stats[name], ft,
                          None if is_video else data[name],
                          None if is_video else info["total_frames"], info["total_frames"])
    ep_table = episodes["_table"]
    for name, ft in features.items():
        is_video = ft["dtype"] == "video"
        for k in STAT_KEYS:
            col = f"stats/{name}/{k}"
            _require(col in ep_table.column_names, f"{root}/meta/episodes: missing column {col!r}")
        cols = {k: ep_table.column(f"stats/{name}/{k}").to_pylist() for k in STAT_KEYS}
        for i in range(info["total_episodes"]):
            lo, hi = episodes["dataset_from_index"][i], episodes["dataset_to_index"][i]
            _check_stat_block(f"{root}/meta/episodes: episode {i} stats/{name}",
                              {k: cols[k][i] for k in STAT_KEYS}, ft,
                              None if is_video else data[name][lo:hi],
                              None if is_video else hi - lo, hi - lo)


if __name__ == "__main__":
    import pprint
    import sys

    pprint.pprint(validate(Path(sys.argv[1])))
