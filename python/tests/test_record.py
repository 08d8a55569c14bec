"""`xoq record`: MCAP recordings of real servers on loopback, read back with the stock readers
(`mcap`, `mcap-protobuf-support`, `mcap-ros2-support`) and the video decoded with PyAV.

What a recording must prove: every message decodes with the schema it names; each message's
`log_time` is its capture time on the robot (the test-pattern camera writes its capture time
into the picture, and CAN frames carry the server's receive time, which python-can also sees);
nothing is lost or invented between the bus and the file (counts are compared exactly, after
a warm-up that proves the recorder's subscription is live); a Feetech bus driven by the vendor
SDK decodes to exactly the goals it wrote and the positions it read; and a recorder killed
outright leaves a file readable up to its last flushed chunk.
"""

from __future__ import annotations

import collections
import json
import math
import os
import pathlib
import signal
import subprocess
import time
from typing import Any, Iterator, Optional

import numpy as np
import pytest
from conftest import xoq_bin

can = pytest.importorskip("can")
scs = pytest.importorskip("scservo_sdk")
av = pytest.importorskip("av")
pytest.importorskip("mcap")
pytest.importorskip("mcap_protobuf")
pytest.importorskip("mcap_ros2")

from mcap.exceptions import EndOfFile, McapError, RecordLengthLimitExceeded  # noqa: E402
from mcap.reader import make_reader  # noqa: E402
from mcap.records import Channel, Chunk, Message, Metadata, Schema  # noqa: E402
from mcap.stream_reader import StreamReader, breakup_chunk  # noqa: E402
from mcap_protobuf.decoder import DecoderFactory as ProtobufDecoderFactory  # noqa: E402
from mcap_ros2.decoder import DecoderFactory as Ros2DecoderFactory  # noqa: E402

WIDTH, HEIGHT = 320, 240
S = 1_000_000_000  # ns per second

# The OpenArm as the sim answers it: (command id, feedback id, (PMAX, VMAX, TMAX), joint name).
DM8009, DM4340, DM4310 = (12.5, 45.0, 54.0), (12.5, 8.0, 28.0), (12.5, 30.0, 10.0)
MOTORS = [
    (0x01, 0x11, DM8009, "joint1"),
    (0x02, 0x12, DM8009, "joint2"),
    (0x03, 0x13, DM4340, "joint3"),
    (0x04, 0x14, DM4340, "joint4"),
    (0x05, 0x15, DM4310, "joint5"),
    (0x06, 0x16, DM4310, "joint6"),
    (0x07, 0x17, DM4310, "joint7"),
    (0x08, 0x18, DM4310, "gripper"),
]
CMD_ENABLE = bytes([0xFF] * 7 + [0xFC])
KP_MAX, KD_MAX = 500.0, 5.0
# A frame id no motor answers: the warm-up that shows the recorder is subscribed.
PROBE_ID = 0x300


# -- helpers ---------------------------------------------------------------------------------


def _float_to_uint(x: float, lo: float, hi: float, bits: int) -> int:
    full = (1 << bits) - 1
    return min(int((min(max(x, lo), hi) - lo) / (hi - lo) * full), full)


def _uint_to_float(u: int, lo: float, hi: float, bits: int) -> float:
    return u / ((1 << bits) - 1) * (hi - lo) + lo


def encode_mit(limits, p: float, v: float, kp: float, kd: float, t: float) -> bytes:
    """The Damiao MIT command (xoq-wire damiao.rs encode_mit)."""
    pmax, vmax, tmax = limits
    p = _float_to_uint(p, -pmax, pmax, 16)
    v = _float_to_uint(v, -vmax, vmax, 12)
    kp = _float_to_uint(kp, 0.0, KP_MAX, 12)
    kd = _float_to_uint(kd, 0.0, KD_MAX, 12)
    t = _float_to_uint(t, -tmax, tmax, 12)
    return bytes([
        p >> 8, p & 0xFF, v >> 4, ((v & 0xF) << 4 | kp >> 8) & 0xFF, kp & 0xFF,
        kd >> 4, ((kd & 0xF) << 4 | t >> 8) & 0xFF, t & 0xFF,
    ])


def decode_feedback(limits, data: bytes) -> tuple[float, float, float]:
    """(position, velocity, torque) of a Damiao feedback frame."""
    pmax, vmax, tmax = limits
    p = data[1] << 8 | data[2]
    v = data[3] << 4 | data[4] >> 4
    t = (data[4] & 0xF) << 8 | data[5]
    return (_uint_to_float(p, -pmax, pmax, 16), _uint_to_float(v, -vmax, vmax, 12),
            _uint_to_float(t, -tmax, tmax, 12))


def stamp(rgb: np.ndarray) -> Optional[tuple[int, int]]:
    """The test pattern's (frame number, capture time in µs) read back from a picture (see
    read_stamp in xoq-device's camera/pattern.rs); None if the check word disagrees."""
    h, w, _ = rgb.shape
    b = max(2, min(w // 64, (h // 2) // 3))
    grey = rgb.astype(np.uint32).sum(axis=2) // 3
    words = []
    for row in range(3):
        word = 0
        for bit in range(64):
            cell = grey[row * b + b // 4: row * b + b - b // 4, bit * b + b // 4: bit * b + b - b // 4]
            word = (word << 1) | int(cell.mean() > 127)
        words.append(word)
    seq, ts, chk = words
    mask = (1 << 64) - 1

    def rotl(v: int, n: int) -> int:
        return ((v << n) | (v >> (64 - n))) & mask

    return (seq, ts) if chk == rotl(seq, 17) ^ rotl(ts, 41) ^ 0x786F715F63616D31 else None


def nal_types(annex_b: bytes) -> list[int]:
    """NAL unit types of an Annex B access unit."""
    out, i = [], 0
    while True:
        i = annex_b.find(b"\x00\x00\x01", i)
        if i < 0 or i + 3 >= len(annex_b):
            return out
        out.append(annex_b[i + 3] & 0x1F)
        i += 3


def stamp_ns(t: Any) -> int:
    """ns of a builtin_interfaces/Time or a google.protobuf.Timestamp."""
    if hasattr(t, "nanosec"):
        return t.sec * S + t.nanosec
    return t.seconds * S + t.nanos


class Recorder:
    """A running `xoq record`; its stdout and stderr go to files beside the recording."""

    def __init__(self, home: pathlib.Path, out: pathlib.Path, *args: str) -> None:
        self.out = out
        self.stdout_path = out.with_suffix(".stdout")
        self.stderr_path = out.with_suffix(".stderr")
        env = dict(os.environ, XOQ_OFFLINE="1", XOQ_HOME=str(home), XOQ_LOG="warn")
        self.started = time.time()
        with self.stdout_path.open("w") as so, self.stderr_path.open("w") as se:
            self.proc = subprocess.Popen(
                [xoq_bin(), "record", *args, "-o", str(out)],
                stdout=so, stderr=se, stdin=subprocess.DEVNULL, env=env,
            )

    def output(self) -> str:
        return (f"stdout:\n{self.stdout_path.read_text(errors='replace')}\n"
                f"stderr:\n{self.stderr_path.read_text(errors='replace')}")

    def wait(self, timeout: float) -> int:
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise AssertionError(f"xoq record did not stop in {timeout} s\n{self.output()}")

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


@pytest.fixture
def record(home: pathlib.Path, tmp_path: pathlib.Path) -> Iterator:
    """`record("out.mcap", *args)` → a running Recorder, killed at teardown."""
    running: list[Recorder] = []

    def _record(name: str, *args: str) -> Recorder:
        r = Recorder(home, tmp_path / name, *args)
        running.append(r)
        return r

    yield _record
    for r in running:
        r.kill()


class JsonDecoderFactory:
    """JSON messages (the recorder's episode marks), as `json.loads` reads them."""

    def decoder_for(self, message_encoding: str, schema: Optional[Schema]):
        if message_encoding == "json":
            return json.loads
        return None


def _factories() -> list:
    """Fresh decoder factories for one file: they cache decoders by schema id, and ids are
    per file (one file's schema 1 may be another's schema 2)."""
    return [ProtobufDecoderFactory(), Ros2DecoderFactory(), JsonDecoderFactory()]


class Decoded:
    """One message with its schema, channel and decoded object."""

    def __init__(self, schema: Schema, channel: Channel, message: Message, obj: Any) -> None:
        self.schema, self.channel, self.message, self.obj = schema, channel, message, obj

    @property
    def topic(self) -> str:
        return self.channel.topic

    @property
    def log_time(self) -> int:
        return self.message.log_time


def _decoder(schema: Optional[Schema], channel: Channel, factories: list):
    for f in factories:
        d = f.decoder_for(channel.message_encoding, schema)
        if d is not None:
            return d
    raise AssertionError(f"no decoder for {channel.topic} ({channel.message_encoding}, {schema})")


def read_complete(path: pathlib.Path) -> tuple[list[Decoded], list[Metadata], Any]:
    """Every message of a finished file in file order, decoded; its metadata; its summary."""
    with path.open("rb") as f:
        reader = make_reader(f, decoder_factories=_factories())
        summary = reader.get_summary()
        msgs = [
            Decoded(s, c, m, o)
            for s, c, m, o in reader.iter_decoded_messages(log_time_order=False)
        ]
        f.seek(0)
        meta = list(make_reader(f).iter_metadata())
    return msgs, meta, summary


def read_stream(path: pathlib.Path) -> tuple[list[Decoded], int, bool]:
    """Every message of a possibly truncated file (one being written, or left by a killed
    recorder), decoded; how many chunks were whole; whether the file ended mid-record.

    Only the end of the file may be cut (a short record, or the open chunk): a decoding error
    anywhere is a failure."""
    schemas: dict[int, Schema] = {}
    channels: dict[int, Channel] = {}
    decoders: dict[int, Any] = {}
    factories = _factories()
    msgs: list[Decoded] = []
    chunks, truncated = 0, False
    with path.open("rb") as f:
        records = StreamReader(f, emit_chunks=True, validate_crcs=True).records
        try:
            for rec in records:
                if isinstance(rec, Chunk):
                    chunks += 1
                    # Broken up here, CRC checked: a short read (EndOfFile) is only ever
                    # the end of the file, never a bad chunk.
                    inner = breakup_chunk(rec, validate_crc=True)
                else:
                    inner = [rec]
                for r in inner:
                    if isinstance(r, Schema):
                        schemas[r.id] = r
                    elif isinstance(r, Channel):
                        channels[r.id] = r
                    elif isinstance(r, Message):
                        ch = channels[r.channel_id]
                        sc = schemas.get(ch.schema_id)
                        if r.channel_id not in decoders:
                            decoders[r.channel_id] = _decoder(sc, ch, factories)
                        msgs.append(Decoded(sc, ch, r, decoders[r.channel_id](r.data)))
        except EndOfFile:
            truncated = True
        except RecordLengthLimitExceeded as e:
            # The chunk being written: the writer puts a placeholder length (all ones) in its
            # header and fills it in when the chunk is closed.
            assert str(2**64 - 1) in str(e), e
            truncated = True
    return msgs, chunks, truncated


def by_topic(msgs: list[Decoded]) -> dict[str, list[Decoded]]:
    out: dict[str, list[Decoded]] = collections.defaultdict(list)
    for m in msgs:
        out[m.topic].append(m)
    return out


def check_video(msgs: list[Decoded], name: str) -> list[tuple[int, int]]:
    """A camera topic: CompressedVideo fields, the first access unit a keyframe, every access
    unit one decoded picture, and each picture's stamp the message's log_time. Returns the
    (seq, ts_us) stamps."""
    assert msgs, f"no /{name}/video messages"
    assert msgs[0].schema.name == "foxglove.CompressedVideo"
    assert msgs[0].schema.encoding == "protobuf" and msgs[0].channel.message_encoding == "protobuf"
    seqs = [m.message.sequence for m in msgs]
    assert seqs == list(range(seqs[0], seqs[0] + len(msgs))), "channel sequence numbers"
    for m in msgs:
        v = m.obj
        assert v.format == "h264"
        assert v.frame_id == name
        assert stamp_ns(v.timestamp) == m.log_time, "timestamp == log_time"
        assert bytes(v.data[:4]) == b"\x00\x00\x00\x01" or bytes(v.data[:3]) == b"\x00\x00\x01", \
            "Annex B"
    first = nal_types(bytes(msgs[0].obj.data))
    assert 5 in first and 7 in first and 8 in first, f"first access unit {first}: IDR with SPS/PPS"

    ctx = av.CodecContext.create("h264", "r")
    frames = []
    for m in msgs:
        frames += ctx.decode(av.Packet(bytes(m.obj.data)))
    try:
        frames += ctx.decode(None)  # what the decoder still holds
    except av.error.EOFError:
        pass
    assert len(frames) == len(msgs), f"{len(frames)} pictures from {len(msgs)} access units"
    assert frames[0].key_frame or frames[0].pict_type.name == "I"
    stamps = []
    for i, (m, fr) in enumerate(zip(msgs, frames)):
        assert (fr.width, fr.height) == (WIDTH, HEIGHT)
        st = stamp(fr.to_ndarray(format="rgb24"))
        assert st is not None, f"/{name}/video message {i}: the picture's stamp does not read back"
        seq, ts_us = st
        assert ts_us * 1000 == m.log_time, \
            f"/{name}/video message {i}: captured at {ts_us} µs, logged at {m.log_time} ns"
        stamps.append(st)
    assert all(b[0] > a[0] for a, b in zip(stamps, stamps[1:])), "pictures in capture order"
    return stamps


def check_times(msgs: list[Decoded], t0: float, t1: float) -> None:
    """log_time on the (loopback) robot clock within the run; publish_time the recorder's
    receive time, after capture (a little clock slack) and within the run."""
    lo, hi = int((t0 - 5) * S), int((t1 + 5) * S)
    for m in msgs:
        assert lo <= m.log_time <= hi, f"{m.topic}: log_time {m.log_time} outside the run"
        assert lo <= m.message.publish_time <= hi, f"{m.topic}: publish_time outside the run"
        assert m.message.publish_time >= m.log_time - 5 * S, f"{m.topic}: published before capture"


class Tap:
    """Every frame python-can's xoq bus receives, with the robot-clock time the native layer
    reports (µs), before python-can sees it."""

    def __init__(self, bus: can.BusABC) -> None:
        self.frames: list[tuple[int, bytes, int]] = []
        native = bus._native
        tap = self

        class Proxy:
            def recv(self, timeout):
                got = native.recv(timeout)
                if got is not None:
                    arbitration_id, _flags, data, _dlc, _ts, robot_s = got
                    tap.frames.append((arbitration_id, bytes(data), round(robot_s * 1e6)))
                return got

            def __getattr__(self, name):
                return getattr(native, name)

        bus._native = Proxy()


def drive_arm(bus: can.BusABC, tap: Tap, commands: int) -> list[tuple[int, bytes]]:
    """Enable the eight motors, then `commands` MIT commands round the motors at ~100 Hz.
    Waits for one reply per frame sent; returns what was sent, in order."""
    sent: list[tuple[int, bytes]] = []
    for cmd_id, _, _, _ in MOTORS:
        sent.append((cmd_id, CMD_ENABLE))
    for i in range(commands):
        cmd_id, _, limits, _ = MOTORS[i % len(MOTORS)]
        sent.append((cmd_id, encode_mit(limits, 0.2 * math.sin(i / 7), 0.0, 10.0, 1.0, 0.1)))
    start = len(tap.frames)
    for k, (cmd_id, data) in enumerate(sent):
        bus.send(can.Message(arbitration_id=cmd_id, data=data, is_extended_id=False))
        if k >= len(MOTORS):
            time.sleep(0.01)
        while bus.recv(timeout=0) is not None:
            pass
    deadline = time.monotonic() + 10
    while len(tap.frames) - start < len(sent) and time.monotonic() < deadline:
        bus.recv(timeout=0.2)
    while bus.recv(timeout=0.3) is not None:  # nothing more should come
        pass
    return sent


def warm_up(bus: can.BusABC, rec: Recorder, topic: str, timeout: float = 30.0) -> None:
    """Send frames nobody answers until one shows in the (growing) recording: from then on the
    recorder's relay subscription sees every frame."""
    deadline = time.monotonic() + timeout
    n = 0
    while time.monotonic() < deadline:
        assert rec.proc.poll() is None, f"xoq record exited early\n{rec.output()}"
        for _ in range(3):
            bus.send(can.Message(arbitration_id=PROBE_ID, data=n.to_bytes(4, "big"),
                                 is_extended_id=False))
            n += 1
            time.sleep(0.1)
        if rec.out.exists():
            msgs, _, _ = read_stream(rec.out)
            if any(m.topic == topic for m in msgs):
                return
    raise AssertionError(f"no {topic} frame reached the recording\n{rec.output()}")


# -- tests -----------------------------------------------------------------------------------


def test_a_recording_has_every_channel_decodable_with_capture_times(start, relay, record):
    cam = start("camera-server", "sim:pattern", "--width", str(WIDTH), "--height", str(HEIGHT),
                "--relay", relay, "--moq", "anon/cam")
    arm = start("fake-can-server", "--relay", relay, "--moq", "anon/arm")
    commands = 50
    t0 = time.time()
    rec = record(
        "out.mcap",
        f"camera:cam={cam.address}",
        f"camera:cam_relay={cam.moq_address()}",
        f"can:arm={arm.moq_address()}",
        # Long enough for the warm-up and the commands on a loaded 2-core machine (they take
        # ~3 s); the counts below hold only for what was sent while recording.
        "--duration", "12",
    )
    with can.Bus(interface="xoq", channel=arm.address) as bus:
        tap = Tap(bus)
        warm_up(bus, rec, "/arm/frames")
        driven_at = time.time()
        sent = drive_arm(bus, tap, commands)
        driven_by = time.time()
        replies = [f for f in tap.frames if 0x11 <= f[0] <= 0x18]
        assert len(replies) == len(sent), "the sim answers every enable and MIT command"
        assert bus.dropped == 0
        rc = rec.wait(timeout=60)
    t1 = time.time()
    assert rc == 0, rec.output()
    assert driven_by < rec.started + 12, "the commands were sent while recording"

    msgs, meta, summary = read_complete(rec.out)
    topics = by_topic(msgs)
    assert set(topics) == {"/cam/video", "/cam_relay/video", "/arm/frames",
                           "/arm/joint_states", "/arm/joint_commands"}, set(topics)
    check_times(msgs, t0, t1)
    assert summary is not None and summary.statistics is not None
    assert summary.statistics.message_count == len(msgs)
    for topic, ms in topics.items():
        seqs = [m.message.sequence for m in ms]
        assert seqs == list(range(seqs[0], seqs[0] + len(ms))), f"{topic}: sequence numbers"

    # Metadata: Foxglove's device name, and what was recorded.
    names = {m.name: m.metadata for m in meta}
    assert names.get("foxglove", {}).get("deviceName"), names
    assert "xoq" in names and "sources" in names["xoq"], names
    for n in ("cam", "cam_relay", "arm"):
        assert n in names["xoq"]["sources"], names["xoq"]["sources"]

    # Cameras: every access unit decodes, in order, each stamped with its capture time.
    p2p = check_video(topics["/cam/video"], "cam")
    via_relay = check_video(topics["/cam_relay/video"], "cam_relay")
    assert len(p2p) >= 10 and len(via_relay) >= 10, (len(p2p), len(via_relay))
    # One camera: a picture both paths carried has the same capture time on both.
    p2p_ts = dict(p2p)
    assert any(seq in p2p_ts for seq, _ in via_relay)
    for seq, ts in via_relay:
        if seq in p2p_ts:
            assert p2p_ts[seq] == ts

    # CAN frames: every frame, with the bus's capture time.
    frames = topics["/arm/frames"]
    assert frames[0].schema.name == "xoq_msgs/msg/CanFrame"
    assert frames[0].schema.encoding == "ros2msg" and frames[0].channel.message_encoding == "cdr"
    rows = []
    for m in frames:
        f = m.obj
        assert stamp_ns(f.stamp) == m.log_time, "CanFrame stamp == log_time"
        assert m.log_time % 1000 == 0, "µs capture times"
        assert not (f.extended or f.fd or f.brs or f.esi or f.rtr or f.error)
        data = bytes(f.data)
        assert f.len == len(data)
        rows.append((f.id, data, m.log_time // 1000))
    # The motors' replies: exactly the frames python-can received, at the robot times the
    # server stamped them with.
    recorded_replies = [r for r in rows if 0x11 <= r[0] <= 0x18]
    assert collections.Counter(recorded_replies) == collections.Counter(replies)
    # The commands sent, in order (enables included); the warm-up probes also went on the bus.
    recorded_cmds = [(i, d) for i, d, _ in rows if 0x01 <= i <= 0x08]
    assert recorded_cmds == sent
    assert {i for i, _, _ in rows} <= {PROBE_ID} | {c for c, _, _, _ in MOTORS} | \
        {fb for _, fb, _, _ in MOTORS}
    assert len(frames) >= len(sent) + len(replies)
    lo, hi = int((driven_at - 5) * S), int((driven_by + 5) * S)
    assert all(lo <= m.log_time <= hi for m in frames if m.obj.id != PROBE_ID)

    # Joint samples: one per feedback frame (enable replies too) and one per MIT command.
    js = topics["/arm/joint_states"]
    jc = topics["/arm/joint_commands"]
    assert js[0].schema.name == "sensor_msgs/msg/JointState"
    assert jc[0].schema.name == "sensor_msgs/msg/JointState"
    assert len(jc) == commands, f"{len(jc)} joint_commands for {commands} MIT commands"
    assert len(js) == len(replies), f"{len(js)} joint_states for {len(replies)} feedback frames"
    joint = {fb: (limits, name) for _, fb, limits, name in MOTORS}
    for m in js + jc:
        s = m.obj
        assert stamp_ns(s.header.stamp) == m.log_time, "JointState stamp == log_time"
        assert s.header.frame_id == "arm"
        assert len(s.name) == len(s.position) == len(s.velocity) == len(s.effort) == 1
    # Each feedback sample is its frame, decoded, at its capture time.
    want_states = collections.Counter()
    for fid, data, us in replies:
        limits, name = joint[fid]
        p, v, t = decode_feedback(limits, data)
        want_states[(name, us * 1000, round(p, 3), round(v, 2), round(t, 2))] += 1
    got_states = collections.Counter(
        (m.obj.name[0], m.log_time, round(m.obj.position[0], 3), round(m.obj.velocity[0], 2),
         round(m.obj.effort[0], 2))
        for m in js
    )
    assert got_states == want_states
    # Each command sample is the MIT command sent, in order.
    mit = sent[len(MOTORS):]
    for k, (m, (cmd_id, data)) in enumerate(zip(jc, mit)):
        _, _, limits, name = MOTORS[cmd_id - 1]
        assert m.obj.name == [name], (k, m.obj.name, name)
        want_p = 0.2 * math.sin(k / 7)
        quantum = 2 * limits[0] / 65535
        assert abs(m.obj.position[0] - want_p) <= quantum + 1e-6, (k, m.obj.position[0], want_p)
        assert abs(m.obj.velocity[0]) <= 2 * limits[1] / 4095
        assert abs(m.obj.effort[0] - 0.1) <= 2 * limits[2] / 4095
    cmd_times = [m.log_time for m in jc]
    assert cmd_times == sorted(cmd_times)


def test_a_killed_recorder_leaves_a_readable_file(start, relay, record):
    cam = start("camera-server", "sim:pattern", "--width", str(WIDTH), "--height", str(HEIGHT),
                "--relay", relay, "--moq", "anon/killcam", "--no-p2p")
    t0 = time.time()
    rec = record("killed.mcap", f"camera:cam={cam.moq_address()}", "--duration", "60")
    # Two whole chunks on disk: the recorder has flushed at least twice.
    deadline = time.monotonic() + 30
    while True:
        assert rec.proc.poll() is None, f"xoq record exited early\n{rec.output()}"
        assert time.monotonic() < deadline, f"no chunks flushed\n{rec.output()}"
        if rec.out.exists():
            msgs, chunks, _ = read_stream(rec.out)
            if chunks >= 2 and msgs:
                break
        time.sleep(0.25)
    time.sleep(0.5)
    rec.proc.send_signal(signal.SIGKILL)
    rec.proc.wait(timeout=10)
    t1 = time.time()

    msgs, chunks, _truncated = read_stream(rec.out)
    assert chunks >= 2
    topics = by_topic(msgs)
    assert set(topics) == {"/cam/video"}
    check_times(msgs, t0, t1)
    log_times = [m.log_time for m in msgs]
    assert log_times == sorted(log_times)
    stamps = check_video(topics["/cam/video"], "cam")
    assert len(stamps) > 0
    # A killed recorder leaves no footer: the seeking reader cannot find the summary.
    with rec.out.open("rb") as f:
        with pytest.raises(McapError):
            make_reader(f).get_summary()


def test_sigint_finishes_the_file(start, relay, record):
    cam = start("camera-server", "sim:pattern", "--width", str(WIDTH), "--height", str(HEIGHT),
                "--relay", relay, "--moq", "anon/intcam", "--no-p2p")
    rec = record("int.mcap", f"camera:cam={cam.moq_address()}")
    deadline = time.monotonic() + 30
    while True:
        assert rec.proc.poll() is None, f"xoq record exited early\n{rec.output()}"
        assert time.monotonic() < deadline, f"nothing recorded\n{rec.output()}"
        if rec.out.exists() and read_stream(rec.out)[0]:
            break
        time.sleep(0.25)
    time.sleep(1.0)
    rec.proc.send_signal(signal.SIGINT)
    assert rec.wait(timeout=30) == 0, rec.output()
    msgs, meta, summary = read_complete(rec.out)
    assert summary is not None, "SIGINT finishes the file with a summary"
    assert summary.statistics is not None and summary.statistics.message_count > 0
    assert summary.statistics.message_count == len(msgs)
    assert {c.topic for c in summary.channels.values()} == {"/cam/video"}
    check_video(by_topic(msgs)["/cam/video"], "cam")


def stop(rec: Recorder) -> None:
    """SIGINT: the recorder finishes the file and exits 0."""
    rec.proc.send_signal(signal.SIGINT)
    assert rec.wait(timeout=30) == 0, rec.output()


def test_p2p_can_is_recorded_through_a_read_only_observer(start, record):
    """CAN over P2P: the recorder is an observer (both directions, stamped), never a
    controller; python-can drives the simulated arm meanwhile."""
    arm = start("fake-can-server", "--bind", "127.0.0.1:0")
    commands = 40
    rec = record("p2pcan.mcap", f"can:arm={arm.address}", "--duration", "60")
    with can.Bus(interface="xoq", channel=arm.address) as bus:
        tap = Tap(bus)
        warm_up(bus, rec, "/arm/frames")
        driven_at = time.time()
        sent = drive_arm(bus, tap, commands)
        driven_by = time.time()
        replies = [f for f in tap.frames if 0x11 <= f[0] <= 0x18]
        assert len(replies) == len(sent), "the sim answers every enable and MIT command"
    # Let the last frames reach the file, then stop.
    time.sleep(1.5)
    stop(rec)
    msgs, _meta, _summary = read_complete(rec.out)
    topics = by_topic(msgs)
    assert set(topics) == {"/arm/frames", "/arm/joint_states", "/arm/joint_commands"}, set(topics)
    check_times(msgs, driven_at - 60, driven_by + 5)
    rows = [(m.obj.id, bytes(m.obj.data), m.log_time // 1000) for m in topics["/arm/frames"]]
    assert all(stamp_ns(m.obj.stamp) == m.log_time for m in topics["/arm/frames"])
    # The commands python-can sent, in order (the observer sees what went on the bus), and the
    # motors' replies exactly as python-can received them, at the same robot-clock times.
    assert [(i, d) for i, d, _ in rows if 0x01 <= i <= 0x08] == sent
    assert collections.Counter(r for r in rows if 0x11 <= r[0] <= 0x18) == \
        collections.Counter(replies)
    assert len(topics["/arm/joint_commands"]) == commands
    assert len(topics["/arm/joint_states"]) == len(replies)


# -- Feetech (SO-101) over serial --------------------------------------------------------------

GOAL_POSITION, PRESENT_POSITION, TORQUE_ENABLE = 42, 56, 40


def rad(raw: int) -> float:
    """The recorder's mapping of a raw STS3215 position (docs/cli.md): centre 2048 = 0 rad,
    4096 steps per turn."""
    return (raw - 2048) * 2 * math.pi / 4096


@pytest.mark.parametrize("via", ["p2p", "relay"])
def test_a_feetech_bus_records_the_goals_written_and_the_positions_read(start, relay, record, via):
    """scservo_sdk (what LeRobot's Feetech bus is built on) drives the simulated SO-101
    through xoq's pyserial plugin (P2P) while `xoq record serial:arm=...` observes the port,
    P2P or through the relay's observe broadcast."""
    so101 = start("serial-server", "sim:so101", "--bind", "127.0.0.1:0",
                  "--relay", relay, "--moq", "anon/so101")
    observed = so101.address if via == "p2p" else so101.moq_address()
    rec = record("so101.mcap", f"serial:arm={observed}", "--duration", "60")
    port = scs.PortHandler(so101.address)
    ph = scs.PacketHandler(0)
    assert port.openPort() and port.setBaudRate(1_000_000)
    try:
        # Warm-up: pings until the recorder's file shows the port's traffic (its observer is
        # connected from then on). Pings give no joint samples.
        deadline = time.monotonic() + 30
        while True:
            assert rec.proc.poll() is None, f"xoq record exited early\n{rec.output()}"
            assert time.monotonic() < deadline, f"no serial traffic recorded\n{rec.output()}"
            _, result, _ = ph.ping(port, 1)
            assert result == scs.COMM_SUCCESS, ph.getTxRxResult(result)
            if rec.out.exists() and any(m.topic == "/arm/serial" for m in read_stream(rec.out)[0]):
                break
            time.sleep(0.2)

        t0 = time.time()
        for servo in range(1, 7):
            r, e = ph.write1ByteTxRx(port, servo, TORQUE_ENABLE, 1)[0:2]
            assert r == scs.COMM_SUCCESS and e == 0
        goals: list[list[tuple[int, int]]] = []  # each write: [(servo, raw goal)]
        r, e = ph.write2ByteTxRx(port, 1, GOAL_POSITION, 2500)[0:2]
        assert r == scs.COMM_SUCCESS and e == 0
        goals.append([(1, 2500)])
        reads: list[list[tuple[int, int]]] = []  # each read: [(servo, raw position)]
        sync_read = scs.GroupSyncRead(port, ph, PRESENT_POSITION, 2)
        for servo in range(1, 7):
            assert sync_read.addParam(servo)
        for step in range(12):
            # LeRobot's loop: goals by SYNC_WRITE, positions by SYNC_READ.
            sync_write = scs.GroupSyncWrite(port, ph, GOAL_POSITION, 2)
            target = [(servo, 1000 + 150 * step + 40 * servo) for servo in range(2, 7)]
            for servo, g in target:
                assert sync_write.addParam(servo, [g & 0xFF, g >> 8])
            assert sync_write.txPacket() == scs.COMM_SUCCESS
            goals.append(target)
            time.sleep(0.03)
            assert sync_read.txRxPacket() == scs.COMM_SUCCESS
            reads.append([(s, sync_read.getData(s, PRESENT_POSITION, 2)) for s in range(1, 7)])
        pos, r, e = ph.read2ByteTxRx(port, 1, PRESENT_POSITION)
        assert r == scs.COMM_SUCCESS
        reads.append([(1, pos)])
        t1 = time.time()
    finally:
        port.closePort()
    time.sleep(1.5)
    stop(rec)

    msgs, meta, _summary = read_complete(rec.out)
    topics = by_topic(msgs)
    assert set(topics) == {"/arm/serial", "/arm/joint_states", "/arm/joint_commands"}, set(topics)
    check_times(msgs, t0 - 60, t1 + 5)
    names = {m.name: m.metadata for m in meta}
    assert "arm=serial:" in names["xoq"]["sources"], names["xoq"]
    assert "Goal_Position" in names["xoq"]["feetech"]

    # Raw chunks: the documented schema, both directions, log_time == stamp.
    chunks = topics["/arm/serial"]
    assert chunks[0].schema.name == "xoq_msgs/msg/SerialChunk"
    assert chunks[0].schema.encoding == "ros2msg" and chunks[0].channel.message_encoding == "cdr"
    assert {m.obj.direction for m in chunks} == {0, 1}
    for m in chunks:
        assert stamp_ns(m.obj.stamp) == m.log_time and m.log_time % 1000 == 0
    to_device = b"".join(bytes(m.obj.data) for m in chunks if m.obj.direction == 1)
    # Every goal write the SDK made is on the wire, as built by the protocol.
    for target in goals[1:]:
        params = [GOAL_POSITION, 2] + [b for s, g in target for b in (s, g & 0xFF, g >> 8)]
        body = [0xFE, len(params) + 2, 0x83] + params
        packet = bytes([0xFF, 0xFF] + body + [(~sum(body)) & 0xFF])
        assert packet in to_device, packet.hex()

    # Commands: exactly the goals written, in order, in radians.
    jc = topics["/arm/joint_commands"]
    assert [[(n, round(p, 9)) for n, p in zip(m.obj.name, m.obj.position)] for m in jc] == \
        [[(f"motor{s}", round(rad(g), 9)) for s, g in w] for w in goals]
    # States: exactly the positions the SDK read, in order (the pings read nothing).
    js = topics["/arm/joint_states"]
    assert [[(n, round(p, 9)) for n, p in zip(m.obj.name, m.obj.position)] for m in js] == \
        [[(f"motor{s}", round(rad(v), 9)) for s, v in r] for r in reads]
    for m in jc + js:
        assert stamp_ns(m.obj.header.stamp) == m.log_time
        assert m.obj.header.frame_id == "arm"
        assert list(m.obj.velocity) == [] and list(m.obj.effort) == []
        assert int(t0 * S) - 5 * S <= m.log_time <= int(t1 * S) + 5 * S
    # The arm moved: the positions read are not all the centre it started at.
    assert any(v != 2048 for r in reads for _, v in r)
    # Each state is stamped when its answer was captured: after the request went out.
    req_times = [m.log_time for m in chunks if m.obj.direction == 1]
    for m in js:
        assert any(t <= m.log_time for t in req_times)
