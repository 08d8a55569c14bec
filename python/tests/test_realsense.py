"""xoq.realsense (pyrealsense2's interface) against a real `xoq depth-server sim:depth`, over P2P
and through a relay, and its API shape against the real pyrealsense2 wheel (no device opened).

The synthetic scene (crates/xoq-device/src/depth/scene.rs): a board at exactly 1 m covers the
centre of the picture, depth in millimetres, a pinhole camera with an 87° horizontal field of
view; the depth picture carries (frame number, capture time) in its first 12 pixels and the
colour picture the camera test pattern's stamp.
"""

from __future__ import annotations

import inspect
import math
import platform
import re
import sys
import threading
import time

import numpy as np
import pytest
from conftest import closed_udp_port, free_id, raises_while_blocked

import xoq.realsense as rs

W, H = 640, 480
# The scene's largest depth error at the 1 m board, in metres: its stereo error (±0.1 px of
# disparity plus half a 1/32-px step) over f·B (f in pixels grows with the width, B = 5 cm).
# About 7 mm at 640 wide, 14 mm at 320.
def board_tolerance(width: int) -> float:
    f = width / 2 / math.tan(math.radians(87.0) / 2)
    return (0.1 + 1 / 64) / (f * 0.05) + 0.001
FX = W / 2 / math.tan(math.radians(87.0 / 2))
MASK = (1 << 64) - 1


def _rotl(v: int, n: int) -> int:
    return ((v << n) | (v >> (64 - n))) & MASK


def depth_stamp(depth: np.ndarray) -> tuple[int, int] | None:
    """(frame number, capture time µs) from a sim:depth depth picture's first 12 pixels: three
    u64 words (seq, ts, check), four u16 each, most significant first."""
    px = [int(v) for v in depth.reshape(-1)[:12]]
    seq, ts, chk = (
        (px[i] << 48) | (px[i + 1] << 32) | (px[i + 2] << 16) | px[i + 3] for i in (0, 4, 8)
    )
    return (seq, ts) if chk == _rotl(seq, 23) ^ _rotl(ts, 7) ^ 0x786F715F64707431 else None


def color_stamp(rgb: np.ndarray) -> tuple[int, int] | None:
    """The test pattern's (frame number, capture time) from the colour picture: three 64-bit
    words as black/white blocks in the top rows (as in test_camera.py)."""
    h, w, _ = rgb.shape
    block = max(2, min(w // 64, (h // 2) // 3))
    grey = rgb[..., :3].astype(np.uint32).sum(axis=2) // 3
    words = []
    for row in range(3):
        word = 0
        for bit in range(64):
            y0, x0 = row * block + block // 4, bit * block + block // 4
            cell = grey[y0 : row * block + block - block // 4, x0 : bit * block + block - block // 4]
            word = (word << 1) | int(cell.mean() > 127)
        words.append(word)
    seq, ts, chk = words
    return (seq, ts) if chk == _rotl(seq, 17) ^ _rotl(ts, 41) ^ 0x786F715F63616D31 else None


@pytest.fixture(autouse=True)
def no_registered_cameras(monkeypatch):
    monkeypatch.delenv(rs.ENV, raising=False)
    yield
    for d in rs.context().query_devices():
        rs.context.remove_device(d.get_info(rs.camera_info.serial_number))


@pytest.fixture
def depth_server(start):
    return start("depth-server", "sim:depth")


def lerobot_config(serial: str, use_rgb: bool = True, use_depth: bool = True, fmt=rs.format.rgb8):
    """What LeRobot's RealSenseCamera._configure_rs_pipeline_config builds."""
    cfg = rs.config()
    rs.config.enable_device(cfg, serial)
    if use_rgb:
        cfg.enable_stream(rs.stream.color, W, H, fmt, 30)
    if use_depth:
        cfg.enable_stream(rs.stream.depth, W, H, rs.format.z16, 30)
    return cfg


# -- 1. LeRobot's loop over P2P -----------------------------------------------------------------


def test_lerobot_style_loop_over_p2p(depth_server):
    pipe = rs.pipeline()
    profile = pipe.start(lerobot_config(depth_server.address))
    try:
        color_profile = profile.get_stream(rs.stream.color).as_video_stream_profile()
        assert (color_profile.width(), color_profile.height(), color_profile.fps()) == (W, H, 30)
        assert color_profile.format() == rs.format.rgb8 and color_profile.stream_type() == rs.stream.color
        depth_profile = profile.get_stream(rs.stream.depth).as_video_stream_profile()
        assert depth_profile.format() == rs.format.z16
        k = depth_profile.get_intrinsics()
        assert (k.width, k.height) == (W, H)
        assert k.fx == pytest.approx(FX, abs=0.01) and k.fy == pytest.approx(FX, abs=0.01)
        assert (k.ppx, k.ppy) == (W / 2, H / 2)
        assert k.model == rs.distortion.none and k.coeffs == [0.0] * 5
        scale = profile.get_device().first_depth_sensor().get_depth_scale()
        assert scale == pytest.approx(0.001)

        last_number = None
        for _ in range(20):
            ok, frames = pipe.try_wait_for_frames(timeout_ms=10000)
            assert ok and frames and len(frames) == 2
            received_ms = time.time() * 1000
            color_frame, depth_frame = frames.get_color_frame(), frames.get_depth_frame()
            assert color_frame and depth_frame and depth_frame.is_depth_frame()
            color = np.asanyarray(color_frame.get_data())
            depth = np.asanyarray(depth_frame.get_data())
            assert color.shape == (H, W, 3) and color.dtype == np.uint8
            assert depth.shape == (H, W) and depth.dtype == np.uint16
            assert depth_frame.get_distance(W // 2, H // 2) == pytest.approx(1.0, abs=0.01)
            assert depth[H // 2, W // 2] * scale == pytest.approx(depth_frame.get_distance(W // 2, H // 2))

            number, ts_ms = depth_frame.get_frame_number(), depth_frame.get_timestamp()
            assert color_frame.get_frame_number() == number and color_frame.get_timestamp() == ts_ms
            if last_number is not None:
                assert number > last_number
            last_number = number
            # The capture time on the robot's clock (the same machine here): just before now.
            assert -100 < received_ms - ts_ms < 3000
            # Both pictures were taken by that capture: the stamps drawn into them say so.
            assert depth_stamp(depth) == (number, round(ts_ms * 1000))
            assert color_stamp(color) == (number, round(ts_ms * 1000))

        x, y, z = rs.rs2_deproject_pixel_to_point(k, [k.ppx, k.ppy], depth_frame.get_distance(W // 2, H // 2))
        assert (x, y) == pytest.approx((0.0, 0.0), abs=1e-9) and z == pytest.approx(1.0, abs=0.01)
        assert rs.rs2_project_point_to_pixel(k, [0.1, -0.05, 1.0]) == pytest.approx(
            [W / 2 + 0.1 * FX, H / 2 - 0.05 * FX], abs=0.01
        )
        assert rs.rs2_fov(k)[0] == pytest.approx(87.0, abs=0.01)
    finally:
        pipe.stop()


def test_bgr8_rgba8_and_depth_only(depth_server):
    """bgr8/rgba8 are the same picture as rgb8 (two viewers get the same capture); a depth-only
    pipeline gets framesets with only depth."""
    pipes = {}
    for fmt in (rs.format.rgb8, rs.format.bgr8, rs.format.rgba8):
        pipes[fmt] = rs.pipeline()
        pipes[fmt].start(lerobot_config(depth_server.address, fmt=fmt))
    try:
        seen: dict = {fmt: {} for fmt in pipes}
        common: set = set()
        deadline = time.monotonic() + 20
        while not common and time.monotonic() < deadline:
            for fmt, pipe in pipes.items():
                fs = pipe.wait_for_frames()
                seen[fmt][fs.get_frame_number()] = np.asanyarray(fs.get_color_frame().get_data())
            common = set.intersection(*(set(v) for v in seen.values()))
        assert common, "the three viewers never got the same capture"
        n = min(common)
        rgb, bgr, rgba = (seen[f][n] for f in (rs.format.rgb8, rs.format.bgr8, rs.format.rgba8))
        assert bgr.shape == (H, W, 3) and rgba.shape == (H, W, 4)
        assert np.array_equal(bgr, rgb[..., ::-1])
        assert np.array_equal(rgba[..., :3], rgb) and (rgba[..., 3] == 255).all()
    finally:
        for pipe in pipes.values():
            pipe.stop()

    pipe = rs.pipeline()
    profile = pipe.start(lerobot_config(depth_server.address, use_rgb=False))
    with pytest.raises(RuntimeError, match="does not contain"):
        profile.get_stream(rs.stream.color)
    fs = pipe.wait_for_frames()
    assert len(fs) == 1 and not fs.get_color_frame() and fs.get_depth_frame()
    assert [f.get_profile().stream_type() for f in fs] == [rs.stream.depth]
    polled = pipe.poll_for_frames()  # never blocks: a frameset if one is ready, else empty
    assert not polled or len(polled) == 1
    pipe.stop()


def test_a_requested_size_is_asked_of_the_camera(depth_server):
    pipe = rs.pipeline()
    cfg = rs.config()
    cfg.enable_device(depth_server.address)
    cfg.enable_stream(rs.stream.depth, 320, 240, rs.format.z16, 15)
    cfg.enable_stream(rs.stream.color, 320, 240, rs.format.rgb8, 15)
    profile = pipe.start(cfg)
    p = profile.get_stream(rs.stream.depth).as_video_stream_profile()
    assert (p.width(), p.height(), p.fps()) == (320, 240, 15)
    assert p.get_intrinsics().fx == pytest.approx(FX / 2, abs=0.01)
    fs = pipe.wait_for_frames()
    assert np.asanyarray(fs.get_depth_frame().get_data()).shape == (240, 320)
    assert np.asanyarray(fs.get_color_frame().get_data()).shape == (240, 320, 3)
    assert fs.get_depth_frame().get_distance(160, 120) == pytest.approx(1.0, abs=board_tolerance(320))
    pipe.stop()


def test_devices_come_from_the_registration(depth_server, monkeypatch):
    """query_devices lists XOQ_REALSENSE and add_device's cameras; LeRobot's find_cameras and
    name lookup work on them."""
    assert len(rs.context().query_devices()) == 0
    with pytest.raises(RuntimeError, match="No device connected"):
        rs.pipeline().start()

    monkeypatch.setenv(rs.ENV, f"wrist={depth_server.address}")
    rs.context.add_device(free_id(), name="spare")
    devices = rs.context().query_devices()
    assert len(devices) == 2 and devices.size() == 2
    wrist, spare = devices
    assert wrist.get_info(rs.camera_info.name) == "wrist"
    assert wrist.get_info(rs.camera_info.serial_number) == depth_server.address
    assert spare.get_info(rs.camera_info.name) == "spare"

    # LeRobot's RealSenseCamera.find_cameras, verbatim apart from the print.
    found = []
    for dev in rs.context().query_devices()[:1]:
        info = {
            "name": dev.get_info(rs.camera_info.name),
            "type": "RealSense",
            "id": dev.get_info(rs.camera_info.serial_number),
            "firmware_version": dev.get_info(rs.camera_info.firmware_version),
            "usb_type_descriptor": dev.get_info(rs.camera_info.usb_type_descriptor),
            "physical_port": dev.get_info(rs.camera_info.physical_port),
            "product_id": dev.get_info(rs.camera_info.product_id),
            "product_line": dev.get_info(rs.camera_info.product_line),
        }
        for sensor in dev.query_sensors():
            for p in sensor.get_stream_profiles():
                if p.is_video_stream_profile() and p.is_default():
                    vp = p.as_video_stream_profile()
                    info["default_stream_profile"] = {
                        "stream_type": vp.stream_name(),
                        "format": vp.format().name,
                        "width": vp.width(),
                        "height": vp.height(),
                        "fps": vp.fps(),
                    }
        found.append(info)
    assert found[0]["id"] == depth_server.address and found[0]["product_line"] == "xoq synthetic depth"
    # Measured from the capture times (the protocol does not carry the rate): 30 on an idle
    # machine, fewer when the server is starved of CPU, never much more.
    assert 0 < found[0]["default_stream_profile"].pop("fps") <= 33
    assert found[0]["default_stream_profile"] == {"stream_type": "Color", "format": "rgb8", "width": W, "height": H}
    assert wrist.get_info(rs.camera_info.asic_serial_number) == "sim-depth"
    with pytest.raises(RuntimeError, match="not available"):
        wrist.get_info(rs.camera_info.recommended_firmware_version)

    # By name (LeRobot looks non-numeric ids up by name), and by the serial the server reports.
    for serial in ("wrist", "sim-depth"):
        pipe = rs.pipeline()
        profile = pipe.start(lerobot_config(serial))
        assert profile.get_device().get_info(rs.camera_info.serial_number) == depth_server.address
        assert pipe.wait_for_frames().get_depth_frame().get_distance(W // 2, H // 2) == pytest.approx(1.0, abs=0.01)
        pipe.stop()
    rs.context.remove_device(spare.get_info(rs.camera_info.serial_number))
    assert len(rs.context().query_devices()) == 1


def test_sensor_options_are_refused_not_faked(depth_server):
    pipe = rs.pipeline()
    profile = pipe.start(lerobot_config(depth_server.address))
    try:
        dev = profile.get_device()
        sensors = {s.get_info(rs.camera_info.name): s for s in dev.query_sensors()}
        assert set(sensors) == {"Stereo Module", "RGB Camera"}
        color = sensors["RGB Camera"]
        for opt in (rs.option.exposure, rs.option.gain, rs.option.white_balance, rs.option.enable_auto_exposure):
            assert not color.supports(opt)
            with pytest.raises(RuntimeError, match="cannot be changed"):
                color.set_option(opt, 100)
            with pytest.raises(RuntimeError):
                color.get_option_range(opt)
        depth = dev.first_depth_sensor()
        assert depth.supports(rs.option.depth_units)
        assert depth.get_option(rs.option.depth_units) == pytest.approx(0.001)
        with pytest.raises(RuntimeError, match="read-only"):
            depth.set_option(rs.option.depth_units, 0.0001)
        with pytest.raises(AttributeError, match="not supported"):
            dev.as_playback()
        with pytest.raises(AttributeError, match="align"):
            rs.align(rs.stream.color)
    finally:
        pipe.stop()


def test_a_callback_gets_framesets(depth_server):
    got: list = []
    done = threading.Event()

    def on_frames(fs):
        got.append((fs.get_frame_number(), np.asanyarray(fs.get_depth_frame().get_data()).shape))
        if len(got) >= 3:
            done.set()

    pipe = rs.pipeline()
    pipe.start(lerobot_config(depth_server.address), on_frames)
    assert done.wait(10)
    with pytest.raises(RuntimeError, match="callback"):
        pipe.wait_for_frames()
    pipe.stop()
    assert [s for _, s in got[:3]] == [(H, W)] * 3
    assert got[0][0] < got[1][0] < got[2][0]


# -- 2. Through a relay -------------------------------------------------------------------------


def test_through_a_relay(start, relay):
    # 320x240: H.264 through the relay costs a debug build on a 2-core machine 4x less.
    w, h = 320, 240
    server = start("depth-server", "sim:depth", "--width", str(w), "--height", str(h),
                   "--relay", relay, "--moq", "anon/test-depth", "--no-p2p")
    address = server.moq_address()
    pipe = rs.pipeline()
    cfg = rs.config()
    rs.config.enable_device(cfg, address)
    cfg.enable_stream(rs.stream.color, w, h, rs.format.rgb8, 30)
    cfg.enable_stream(rs.stream.depth, w, h, rs.format.z16, 30)
    pipe.start(cfg)
    try:
        frames = 0
        last = None
        t0 = time.monotonic()
        while frames < 30:
            ok, fs = pipe.try_wait_for_frames(timeout_ms=10000)
            assert ok
            frames += 1
            color_frame, depth_frame = fs.get_color_frame(), fs.get_depth_frame()
            assert color_frame, "a frameset carries every enabled stream"
            depth = np.asanyarray(depth_frame.get_data())
            color = np.asanyarray(color_frame.get_data())
            assert depth.shape == (h, w) and depth.dtype == np.uint16
            assert color.shape == (h, w, 3) and color.dtype == np.uint8
            assert depth_frame.get_distance(w // 2, h // 2) == pytest.approx(1.0, abs=board_tolerance(w))
            n, ts = depth_frame.get_frame_number(), round(depth_frame.get_timestamp() * 1000)
            assert depth_stamp(depth) == (n, ts), "depth is bit-exact through the relay"
            assert color_stamp(color) == (n, ts), "colour is paired with its own capture"
            if last is not None:
                assert n > last
            last = n
        elapsed = time.monotonic() - t0
        # Most depth pictures came with their colour picture (the rest were skipped).
        assert pipe._unpaired < frames, f"{pipe._unpaired} unpaired for {frames} paired in {elapsed:.1f} s"
    finally:
        pipe.stop()

    # A relay broadcast is view-only: another size cannot be asked for.
    cfg = rs.config()
    cfg.enable_device(address)
    cfg.enable_stream(rs.stream.depth, 640, 480, rs.format.z16, 30)
    with pytest.raises(RuntimeError, match="view-only"):
        rs.pipeline().start(cfg)


# -- 3. The API's shape against pyrealsense2 ----------------------------------------------------

_X86_64 = platform.machine().lower() in ("x86_64", "amd64")
_HAS_WHEEL = _X86_64 and sys.platform in ("linux", "win32") and sys.version_info >= (3, 10)


@pytest.fixture(scope="module")
def pyrs():
    if not _HAS_WHEEL:
        return pytest.importorskip(
            "pyrealsense2",
            reason="pyrealsense2 publishes wheels for x86_64 Linux/Windows and Python >= 3.10 only",
        )
    import pyrealsense2  # must be installed here (python/requirements-test.txt)

    return pyrealsense2


# xoq additions pyrealsense2 does not have (registration of remote cameras).
XOQ_EXTRAS = {("context", "add_device"), ("context", "remove_device")}

# What LeRobot's RealSenseCamera (and the usual pyrealsense2 examples) call.
USED_CALLS = {
    "context": ["query_devices"],
    "device_list": ["__iter__", "__len__", "__getitem__"],
    "device": ["get_info", "query_sensors", "first_depth_sensor", "first_color_sensor", "supports"],
    "sensor": ["get_info", "supports", "set_option", "get_option", "get_option_range", "get_stream_profiles"],
    "depth_sensor": ["get_depth_scale"],
    "option_range": ["min", "max", "step", "default"],
    "stream_profile": ["is_video_stream_profile", "is_default", "as_video_stream_profile", "stream_type", "format", "fps"],
    "video_stream_profile": ["stream_name", "format", "width", "height", "fps", "get_intrinsics"],
    "pipeline": ["start", "stop", "wait_for_frames", "try_wait_for_frames", "poll_for_frames", "get_active_profile"],
    "config": ["enable_device", "enable_stream", "disable_stream", "disable_all_streams"],
    "pipeline_profile": ["get_stream", "get_device", "get_streams"],
    "composite_frame": ["get_color_frame", "get_depth_frame", "__len__", "__iter__", "__getitem__", "size"],
    "frame": ["get_data", "get_frame_number", "get_timestamp", "get_profile", "is_depth_frame", "as_depth_frame", "__bool__"],
    "video_frame": ["get_width", "get_height"],
    "depth_frame": ["get_distance", "get_units"],
    "intrinsics": ["width", "height", "fx", "fy", "ppx", "ppy", "model", "coeffs"],
}
USED_ENUMS = {
    "stream": ["color", "depth"],
    "format": ["rgb8", "bgr8", "z16"],
    "camera_info": ["name", "serial_number", "firmware_version", "usb_type_descriptor", "physical_port",
                    "product_id", "product_line"],
    "option": ["exposure", "gain", "white_balance", "enable_auto_exposure", "enable_auto_white_balance"],
    "distortion": ["none", "brown_conrady", "inverse_brown_conrady"],
}
USED_FUNCTIONS = ["rs2_deproject_pixel_to_point", "rs2_project_point_to_pixel"]
# pyrealsense2's constructors that user code calls (the others are casts we accept too).
CONSTRUCTED = ["pipeline", "config", "context", "intrinsics", "option_range", "video_stream_profile",
               "frame", "depth_frame", "video_frame", "composite_frame", "depth_sensor"]


def _split_params(text: str) -> list[str]:
    out, depth, cur = [], 0, ""
    for ch in text:
        if ch in "[(":
            depth += 1
        elif ch in "])":
            depth -= 1
        if ch == "," and depth == 0:
            out.append(cur.strip())
            cur = ""
        else:
            cur += ch
    if cur.strip():
        out.append(cur.strip())
    return out


def _overloads(obj, name: str) -> list[list[tuple[str, bool]]]:
    """pybind11's signatures of ``obj`` (from its docstring): per overload, (name, has_default)
    for every parameter after self."""
    doc = obj.__doc__ or ""
    sigs = []
    for line in doc.splitlines():
        m = re.match(rf"^(?:\d+\. )?{re.escape(name)}\((.*)\) -> ", line.strip())
        if not m:
            continue
        params = []
        for p in _split_params(m.group(1)):
            pname = p.split(":")[0].strip()
            if pname in ("self", "*args", "**kwargs"):
                continue
            params.append((pname, "=" in p))
        sigs.append(params)
    return sigs


def _binds(func, params: list[tuple[str, bool]], as_method: bool) -> list[str]:
    """Ways the pyrealsense2 overload `params` cannot be called on `func`."""
    sig = inspect.signature(func)
    lead = [object()] if as_method else []
    problems = []
    required = [p for p in params if not p[1]]
    for args in (required, params):
        try:
            sig.bind(*lead, *[object()] * len(args))
        except TypeError as e:
            problems.append(f"positional {[p[0] for p in args]}: {e}")
    named = [p for p in params if p[0].isidentifier() and not re.fullmatch(r"arg\d+", p[0])]
    if len(named) == len(params):
        try:
            sig.bind(*lead, **{p[0]: object() for p in params})
        except TypeError as e:
            problems.append(f"keywords {[p[0] for p in params]}: {e}")
    return problems


def _own_members(cls) -> list[str]:
    keep = {"__len__", "__iter__", "__getitem__", "__bool__"}
    names = set()
    for klass in cls.__mro__:
        if klass.__module__ != rs.__name__:
            continue
        names |= {n for n in vars(klass) if (not n.startswith("_") or n in keep)}
    return sorted(names)


def test_enums_match_pyrealsense2(pyrs):
    for name in ("stream", "format", "camera_info", "distortion", "option", "timestamp_domain"):
        ours, theirs = getattr(rs, name), getattr(pyrs, name)
        for member in ours:
            assert hasattr(theirs, member.name), f"{name}.{member.name} is not in pyrealsense2"
            assert int(getattr(theirs, member.name)) == int(member), f"{name}.{member.name} value"
            assert str(member) == str(getattr(theirs, member.name))
            assert repr(member) == repr(getattr(theirs, member.name))
    assert repr(rs.stream.color) == repr(pyrs.stream.color)
    assert rs.format.z16.name == pyrs.format.z16.name == "z16"


def test_our_names_and_methods_exist_in_pyrealsense2_with_compatible_calls(pyrs):
    problems = []
    for name in rs.__all__:
        ours = getattr(rs, name)
        if not hasattr(pyrs, name):
            problems.append(f"rs.{name} is not in pyrealsense2")
            continue
        theirs = getattr(pyrs, name)
        if inspect.isfunction(ours):
            for params in _overloads(theirs, name):
                problems += [f"rs.{name}: {p}" for p in _binds(ours, params, as_method=False)]
            continue
        if isinstance(ours, type) and issubclass(ours, int):
            continue  # enums: test_enums_match_pyrealsense2
        for member in _own_members(ours):
            if (name, member) in XOQ_EXTRAS:
                continue
            if not hasattr(theirs, member):
                problems.append(f"rs.{name}.{member} is not in pyrealsense2")
                continue
            mine, real = inspect.getattr_static(ours, member), getattr(theirs, member)
            if isinstance(mine, property) != isinstance(real, property):
                problems.append(f"rs.{name}.{member}: property in one, method in the other")
                continue
            if isinstance(mine, property):
                continue
            func = getattr(ours, member)
            as_method = not isinstance(mine, staticmethod)
            for params in _overloads(real, member):
                problems += [f"rs.{name}.{member}: {p}" for p in _binds(func, params, as_method)]
        # Plain attributes set by the constructor (intrinsics, option_range).
        if name in ("intrinsics", "option_range"):
            for attr in vars(ours()):
                if not attr.startswith("_") and not hasattr(theirs(), attr):
                    problems.append(f"rs.{name}().{attr} is not in pyrealsense2")
    for name in CONSTRUCTED:
        for params in _overloads(getattr(pyrs, name).__init__, "__init__"):
            problems += [f"rs.{name}(): {p}" for p in _binds(getattr(rs, name).__init__, params, True)]
    assert not problems, "\n".join(problems)


def test_what_robotics_code_calls_exists_in_ours_and_in_pyrealsense2(pyrs):
    missing = []
    for cls, members in USED_CALLS.items():
        for m in members:
            for mod in (rs, pyrs):
                obj = getattr(mod, cls)
                instance_attr = cls in ("intrinsics", "option_range") and hasattr(obj(), m)
                if not (hasattr(obj, m) or instance_attr):
                    missing.append(f"{mod.__name__}.{cls}.{m}")
    for enum_name, members in USED_ENUMS.items():
        for m in members:
            for mod in (rs, pyrs):
                if not hasattr(getattr(mod, enum_name), m):
                    missing.append(f"{mod.__name__}.{enum_name}.{m}")
    for f in USED_FUNCTIONS:
        for mod in (rs, pyrs):
            if not callable(getattr(mod, f, None)):
                missing.append(f"{mod.__name__}.{f}")
    assert not missing, missing


def test_geometry_matches_librealsense(pyrs):
    """Projection, deprojection and field of view agree with pyrealsense2's for every model."""
    rng = np.random.default_rng(1)
    for model in rs.distortion:
        for _ in range(5):
            ours, theirs = rs.intrinsics(), pyrs.intrinsics()
            coeffs = [float(c) for c in rng.uniform(-0.05, 0.05, 5)]
            if model == rs.distortion.ftheta:
                coeffs[0] = float(rng.uniform(0.5, 1.2))
            for k in (ours, theirs):
                k.width, k.height, k.fx, k.fy, k.ppx, k.ppy = 848, 480, 421.5, 420.75, 424.1, 240.2
                k.coeffs = coeffs
            ours.model, theirs.model = model, getattr(pyrs.distortion, model.name)
            assert repr(ours) == repr(theirs)
            assert rs.rs2_fov(ours) == pytest.approx(pyrs.rs2_fov(theirs), rel=1e-5)
            point = [float(v) for v in rng.uniform([-0.4, -0.3, 0.5], [0.4, 0.3, 3.0])]
            assert rs.rs2_project_point_to_pixel(ours, point) == pytest.approx(
                pyrs.rs2_project_point_to_pixel(theirs, point), abs=2e-3
            ), model
            if model == rs.distortion.modified_brown_conrady:
                continue  # librealsense cannot deproject it either (an assert in C)
            pixel = [float(v) for v in rng.uniform([50, 50], [800, 430])]
            assert rs.rs2_deproject_pixel_to_point(ours, pixel, 1.5) == pytest.approx(
                pyrs.rs2_deproject_pixel_to_point(theirs, pixel, 1.5), abs=1e-4
            ), model


# -- 4. Errors ---------------------------------------------------------------------------------


def test_wrong_addresses_raise_clear_errors_at_start():
    pipe = rs.pipeline()
    with pytest.raises(RuntimeError, match="No device connected with serial number 'not-a-camera'"):
        pipe.start(lerobot_config("not-a-camera"))
    dead = f"{free_id()}@127.0.0.1:{closed_udp_port()}"
    with pytest.raises(RuntimeError, match=re.escape(dead)) as err:
        pipe.start(lerobot_config(dead))
    assert err.value.__cause__ is not None, "the native error is kept as the cause"
    with pytest.raises(RuntimeError, match="not an xoq address"):
        rs.context.add_device("/dev/video0")


def test_waiting_on_a_stopped_pipeline_raises(depth_server):
    pipe = rs.pipeline()
    for call in (pipe.wait_for_frames, pipe.try_wait_for_frames, pipe.poll_for_frames, pipe.stop):
        with pytest.raises(RuntimeError, match="before start"):
            call()
    pipe.start(lerobot_config(depth_server.address))
    with pytest.raises(RuntimeError, match="cannot be called before stop"):
        pipe.start(lerobot_config(depth_server.address))
    assert pipe.wait_for_frames(timeout_ms=5000)
    pipe.stop()
    for call in (pipe.wait_for_frames, pipe.try_wait_for_frames, pipe.poll_for_frames, pipe.stop):
        with pytest.raises(RuntimeError, match="before start"):
            call()
    # stop() from another thread ends a wait that is blocked (LeRobot's read thread).
    pipe.start(lerobot_config(depth_server.address))
    err = raises_while_blocked(lambda: [pipe.wait_for_frames() for _ in range(100000)], pipe.stop)
    assert isinstance(err, RuntimeError)


def test_what_the_camera_cannot_deliver_is_refused(depth_server, monkeypatch):
    cfg = rs.config()
    cfg.enable_device(depth_server.address)
    cfg.enable_stream(rs.stream.infrared, 1, 640, 480, rs.format.y8, 30)
    with pytest.raises(RuntimeError, match="Couldn't resolve requests.*infrared"):
        rs.pipeline().start(cfg)
    cfg.disable_stream(rs.stream.infrared)
    cfg.enable_stream(rs.stream.depth, rs.format.y16, 30)
    with pytest.raises(RuntimeError, match="z16"):
        rs.pipeline().start(cfg)
    # A size the camera does not make (sim:depth makes even sizes): asked, not delivered, refused.
    monkeypatch.setattr(rs, "_MODE_CHANGE_S", 1.5)
    cfg.enable_stream(rs.stream.depth, 321, 240, rs.format.z16, 30)
    with pytest.raises(RuntimeError, match=r"Couldn't resolve requests.*did not deliver depth 321x240 \(delivered: \d+x\d+\)"):
        rs.pipeline().start(cfg)
