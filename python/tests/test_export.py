"""`xoq export lerobot`: a recording of real servers on loopback becomes a LeRobot v3.0
dataset that passes the validator in `lerobot_v3.py` (what LeRobot 0.4.x checks and relies
on, without torch), with camera frames and joint samples paired on the robot clock.

The scene is scripted with a known event: the test-pattern camera writes its capture time
into every picture, and python-can steps joint1's commanded position at a known moment. The
export must show the step in the row whose grid time is nearest it, next to the camera frame
captured within one frame of it, and every video frame in the MP4 must be the very picture
the row's `capture_ns` column names.
"""

from __future__ import annotations

import json
import os
import pathlib
import shutil
import signal
import subprocess
import time

import numpy as np
import pytest
from conftest import xoq_bin

# Installed by scripts/test.sh (python/requirements-test.txt): a missing one is a failure,
# not a skip. `datasets` reads its offline switches when imported: no hub, loopback only.
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
import av  # noqa: E402
import can  # noqa: E402
import datasets  # noqa: E402
import pandas as pd  # noqa: E402
import pyarrow.parquet as pq  # noqa: E402

import lerobot_v3  # noqa: E402
from test_record import (  # noqa: E402
    MOTORS, S, WIDTH, HEIGHT, encode_mit, read_complete, stamp, warm_up,
)

FPS = 30
STEP = 0.5  # rad: joint1's commanded step
URDF = '<?xml version="1.0"?>\n<robot name="arm"><link name="base"/></robot>\n'


def drive(bus: can.BusABC, seconds: float, step_after: float, mark_after: float, mark) -> None:
    """MIT commands to all eight motors every 5 ms for `seconds`; joint1's target steps from
    0 to STEP after `step_after` seconds; `mark()` is called once after `mark_after`."""
    for cmd_id, _, _, _ in MOTORS:
        bus.send(can.Message(arbitration_id=cmd_id, data=bytes([0xFF] * 7 + [0xFC]),
                             is_extended_id=False))
    t0 = time.monotonic()
    nxt = t0
    marked = False
    while (now := time.monotonic()) < t0 + seconds:
        if not marked and now - t0 >= mark_after:
            mark()
            marked = True
        target = STEP if now - t0 >= step_after else 0.0
        for cmd_id, _, limits, _ in MOTORS:
            p = target if cmd_id == 1 else 0.0
            bus.send(can.Message(arbitration_id=cmd_id, data=encode_mit(limits, p, 0.0, 30.0, 1.0, 0.0),
                                 is_extended_id=False))
        while bus.recv(timeout=0) is not None:
            pass
        nxt += 0.005
        time.sleep(max(0.0, nxt - time.monotonic()))


def export(rec: pathlib.Path, out: pathlib.Path, *args: str) -> str:
    p = subprocess.run([xoq_bin(), "export", "lerobot", str(rec), "-o", str(out), *args],
                       capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, f"export failed:\n{p.stdout}\n{p.stderr}"
    return p.stdout


def decoded_stamps(mp4: pathlib.Path) -> list[tuple[float, int]]:
    """(presentation time s, capture µs written in the picture) of every frame."""
    out = []
    with av.open(str(mp4)) as c:
        for f in c.decode(video=0):
            st = stamp(f.to_ndarray(format="rgb24"))
            assert st is not None, f"frame at {f.time} s: the capture stamp does not read back"
            out.append((float(f.time), st[1]))
    return out


@pytest.fixture(scope="module")
def scene(tmp_path_factory):
    """A recording of the pattern camera (P2P) and an OpenArm driven by python-can (relay):
    (MCAP path, joint1's step capture time in ns, the recording's messages)."""
    from conftest import Server  # noqa: PLC0415
    from test_record import Recorder  # noqa: PLC0415

    home = tmp_path_factory.mktemp("home")
    tmp = tmp_path_factory.mktemp("scene")
    servers: list[Server] = []
    rec = None
    try:
        def start(*args: str) -> Server:
            servers.append(Server(list(args), home))
            return servers[-1]

        relay = start("relay", "--listen", "127.0.0.1:0").values("url")[0]
        cam = start("camera-server", "sim:pattern", "--width", str(WIDTH), "--height",
                    str(HEIGHT), "--fps", str(FPS))
        arm = start("fake-can-server", "--relay", relay, "--moq", "anon/arm")
        (tmp / "arm.urdf").write_text(URDF)
        rec = Recorder(home, tmp / "scene.mcap", f"camera:cam={cam.address}",
                       f"can:arm={arm.moq_address()}", "--duration", "14",
                       "--video-dir", str(tmp / "videos"), "--episode-marker", "signal",
                       "--urdf", str(tmp / "arm.urdf"))
        with can.Bus(interface="xoq", channel=arm.address) as bus:
            warm_up(bus, rec, "/arm/frames")
            # Episode 0 holds the step; a mark 1.5 s later starts episode 1.
            drive(bus, seconds=6.0, step_after=3.0, mark_after=4.5,
                  mark=lambda: rec.proc.send_signal(signal.SIGUSR1))
        assert rec.wait(timeout=60) == 0, rec.output()
        msgs, _, _ = read_complete(rec.out)
        steps = [m.log_time for m in msgs if m.topic == "/arm/joint_commands"
                 and m.obj.name == ["joint1"] and m.obj.position[0] > STEP / 2]
        assert steps, "joint1's step is in the recording"
        yield rec.out, min(steps), msgs
    finally:
        if rec is not None:
            rec.kill()
        for s in servers:
            s.kill()


def rows_of(ds: pathlib.Path) -> dict:
    t = pq.read_table(ds / "data/chunk-000/file-000.parquet")
    return {name: t.column(name).to_pylist() for name in t.column_names}


def test_export_passes_lerobot_checks_and_lines_up_a_known_event(scene, tmp_path):
    mcap, step_ns, msgs = scene
    ds = tmp_path / "ds"
    out = export(mcap, ds, "--fps", str(FPS), "--task", "step joint1")
    summary = lerobot_v3.validate(ds)
    info = json.loads((ds / "meta/info.json").read_text())
    assert summary["fps"] == FPS
    assert summary["episodes"] == 2, "the mark split the recording"
    assert info["features"]["observation.state"]["names"][0] == "arm.joint1"
    assert len(info["features"]["observation.state"]["names"]) == 8
    assert len(info["features"]["action"]["names"]) == 8
    assert "copied unchanged" in out, out  # a 30 fps camera on a 30 fps grid is not re-encoded
    tasks = pq.read_table(ds / "meta/tasks.parquet").to_pandas()
    assert list(tasks.index) == ["step joint1"]
    marks = sorted(m.log_time for m in msgs if m.topic == "/xoq/episode")
    assert len(marks) == 1

    rows = rows_of(ds)
    n = len(rows["index"])
    grid = rows["robot_time_ns"]
    cam_t = rows["capture_ns.observation.images.cam"]
    ep = rows["episode_index"]
    fi = rows["frame_index"]
    period = S / FPS
    firsts = {e: grid[k] for k, e in enumerate(ep) if fi[k] == 0}
    assert all(grid[k] == firsts[ep[k]] + (fi[k] * S) // FPS for k in range(n)), "the fps grid"
    assert max(t for t, e in zip(grid, ep) if e == 0) < marks[0] <= firsts[1], "split at the mark"
    assert sum(1 for e in ep if e == 0) >= 3 * FPS, "episode 0 spans the step"

    # The pairing rule: each row's camera frame is the recorded frame nearest its grid time.
    recorded = sorted(m.log_time for m in msgs if m.topic == "/cam/video")
    for k in range(n):
        nearest = min(recorded, key=lambda t: (abs(t - grid[k]), t))
        assert cam_t[k] == nearest, f"row {k}: frame {cam_t[k]} is not the nearest ({nearest})"

    # Every MP4 frame is the picture its row names, at exactly frame_index / fps.
    for e in (0, 1):
        ks = [k for k in range(n) if ep[k] == e]
        frames = decoded_stamps(ds / f"videos/observation.images.cam/chunk-000/file-{e:03d}.mp4")
        assert len(frames) == len(ks)
        for (pts, us), k in zip(frames, ks):
            assert abs(pts - fi[k] / FPS) < 1e-6, (k, pts)
            assert us * 1000 == cam_t[k], f"row {k}: MP4 frame captured at {us} µs, row says {cam_t[k]}"

    # The known event: joint1's step shows first in the row nearest it, beside a camera frame
    # captured within one frame of it.
    j1 = info["features"]["action"]["names"].index("arm.joint1")
    act = rows["action"]
    r = next(k for k in range(n) if act[k][j1] > STEP / 2)
    assert ep[r] == 0 and fi[r] > 0 and act[r - 1][j1] < STEP / 2
    assert abs(grid[r] - step_ns) <= period, (grid[r], step_ns)
    assert abs(cam_t[r] - step_ns) <= period, (cam_t[r] - step_ns) / 1e6
    assert rows["capture_ns.action"][r][j1] >= step_ns

    # Camera frames and the joint samples beside them: within half a frame on this loopback
    # scene (joints sampled every ~5 ms, a 30 fps camera); reported by the export too.
    state_t = rows["capture_ns.observation.state"]
    skew = [abs(cam_t[k] - t) for k in range(n) for t in state_t[k]]
    assert max(skew) <= period / 2, f"max camera-to-state skew {max(skew) / 1e6:.1f} ms"
    assert "camera frame vs state sample" in out


def test_the_dataset_loads_through_hf_datasets_as_lerobot_loads_it(scene, tmp_path, monkeypatch):
    """LeRobot 0.4.x's load_hf_dataset: datasets.Dataset.from_parquet with the features
    info.json describes (lists become fixed-length); load_tasks: pandas with the task string
    as the index; load_episodes: the episodes table positionally."""
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    mcap, _, _ = scene
    ds_dir = tmp_path / "ds"
    export(mcap, ds_dir, "--task", "step joint1")
    info = json.loads((ds_dir / "meta/info.json").read_text())
    feats = {}
    for k, f in info["features"].items():
        if f["dtype"] == "video":
            continue
        v = datasets.Value(f["dtype"])
        feats[k] = v if f["shape"] == [1] else datasets.Sequence(length=f["shape"][0], feature=v)
    data = datasets.Dataset.from_parquet(
        sorted(str(p) for p in (ds_dir / "data").glob("*/*.parquet")),
        features=datasets.Features(feats), cache_dir=str(tmp_path / "hf"))
    assert len(data) == info["total_frames"]
    row = data[len(data) - 1]
    assert len(row["observation.state"]) == len(info["features"]["observation.state"]["names"])
    assert row["index"] == len(data) - 1 and row["episode_index"] == info["total_episodes"] - 1
    tasks = pd.read_parquet(ds_dir / "meta/tasks.parquet")
    assert tasks.iloc[row["task_index"]].name == "step joint1"
    episodes = datasets.Dataset.from_parquet(
        sorted(str(p) for p in (ds_dir / "meta/episodes").glob("*/*.parquet")),
        cache_dir=str(tmp_path / "hf"))
    ep = episodes[row["episode_index"]]
    assert ep["dataset_from_index"] <= row["index"] < ep["dataset_to_index"]
    assert ep["videos/observation.images.cam/file_index"] == row["episode_index"]


def test_enter_marks_an_episode_at_the_robot_time(start, home, tmp_path):
    """`--episode-marker enter`: a line on stdin writes a mark, stamped on the robot clock as
    the recorder estimates it (between the camera frames captured around it)."""
    cam = start("camera-server", "sim:pattern", "--width", str(WIDTH), "--height", str(HEIGHT))
    out = tmp_path / "marks.mcap"
    env = dict(os.environ, XOQ_OFFLINE="1", XOQ_HOME=str(home), XOQ_LOG="warn")
    proc = subprocess.Popen([xoq_bin(), "record", f"camera:cam={cam.address}", "-o", str(out),
                             "--duration", "6", "--episode-marker", "enter"],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, env=env)
    try:
        # Wait for frames to flow (the file grows), then press Enter.
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and (not out.exists() or out.stat().st_size < 20_000):
            time.sleep(0.2)
        pressed = time.time_ns()
        proc.stdin.write(b"\n")
        proc.stdin.flush()
        stdout, stderr = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 0, stderr.decode(errors="replace")
    assert b"episode 1 begins (enter)" in stderr
    msgs, _, _ = read_complete(out)
    marks = [m for m in msgs if m.topic == "/xoq/episode"]
    assert [(m.obj["episode"], m.obj["reason"]) for m in marks] == [(1, "enter")]
    frames = sorted(m.log_time for m in msgs if m.topic == "/cam/video")
    t = marks[0].log_time
    assert frames[0] < t < frames[-1]
    # Same machine, one clock: the estimate is within a frame or two of the key press.
    assert abs(t - pressed) < 0.2 * S, (t - pressed) / 1e6


def test_the_urdf_is_attached(scene):
    mcap, _, _ = scene
    from mcap.reader import make_reader  # noqa: PLC0415
    with mcap.open("rb") as f:
        attachments = list(make_reader(f).iter_attachments())
    assert [(a.name, a.media_type, bytes(a.data).decode()) for a in attachments] == \
        [("arm.urdf", "application/xml", URDF)]


def test_video_dir_holds_fragmented_mp4_that_ffprobe_reads(scene):
    mcap, _, msgs = scene
    ffprobe = shutil.which("ffprobe")
    if ffprobe is None:
        pytest.skip("needs ffprobe (scripts/test.sh installs Debian's ffmpeg)")
    path = mcap.parent / "videos" / "cam.mp4"
    p = subprocess.run([ffprobe, "-v", "error", "-count_frames", "-select_streams", "v:0",
                        "-show_entries", "stream=codec_name,width,height,nb_read_frames:format=duration",
                        "-of", "json", str(path)], capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    probe = json.loads(p.stdout)
    stream = probe["streams"][0]
    assert (stream["codec_name"], stream["width"], stream["height"]) == ("h264", WIDTH, HEIGHT)
    frames = sorted(m.log_time for m in msgs if m.topic == "/cam/video")
    assert int(stream["nb_read_frames"]) == len(frames)
    # Timed by capture: first to last capture, plus the last frame's (repeated) duration.
    want = (frames[-1] - frames[0] + (frames[-1] - frames[-2])) / S
    assert abs(float(probe["format"]["duration"]) - want) < 0.01, (probe["format"], want)
    # Each picture at its capture time relative to the first.
    with av.open(str(path)) as c:
        for f, t in zip(c.decode(video=0), frames):
            st = stamp(f.to_ndarray(format="rgb24"))
            assert st is not None and st[1] * 1000 == t
            assert abs(float(f.time) - (t - frames[0]) / S) < 2e-5


def test_a_slower_grid_is_re_encoded_on_exact_times(scene, tmp_path):
    mcap, _, _ = scene
    ds = tmp_path / "ds15"
    out = export(mcap, ds, "--fps", "15", "--state", "/arm/joint_states",
                 "--action", "/arm/joint_commands")
    assert "re-encoded" in out, out
    lerobot_v3.validate(ds)
    rows = rows_of(ds)
    ks = [k for k, e in enumerate(rows["episode_index"]) if e == 0]
    frames = decoded_stamps(ds / "videos/observation.images.cam/chunk-000/file-000.mp4")
    assert len(frames) == len(ks)
    for (pts, us), k in zip(frames, ks):
        assert abs(pts - k / 15) < 1e-6
        assert us * 1000 == rows["capture_ns.observation.images.cam"][k]
    stats = json.loads((ds / "meta/stats.json").read_text())
    img = stats["observation.images.cam"]
    assert np.array(img["mean"]).shape == (3, 1, 1)
    assert 0.0 <= np.array(img["min"]).min() and np.array(img["max"]).max() <= 1.0


def test_export_refuses_what_it_cannot_make(scene, tmp_path):
    mcap, _, _ = scene
    ds = tmp_path / "bad"
    p = subprocess.run([xoq_bin(), "export", "lerobot", str(mcap), "-o", str(ds),
                        "--state", "/nope/joint_states"], capture_output=True, text=True)
    assert p.returncode != 0 and "/arm/joint_states" in p.stderr, p.stderr
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("x")
    p = subprocess.run([xoq_bin(), "export", "lerobot", str(mcap), "-o", str(tmp_path / "full")],
                       capture_output=True, text=True)
    assert p.returncode != 0 and "not empty" in p.stderr, p.stderr
    assert (tmp_path / "full" / "x").read_text() == "x"
