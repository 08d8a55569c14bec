"""pyrealsense2's interface for remote depth cameras: ``xoq.realsense``.

``import xoq.realsense as rs`` and use it as ``pyrealsense2``, with an xoq address
(``<endpoint-id>@<ip>:<port>`` or ``<endpoint-id>`` as ``xoq depth-server`` prints it, or a
relay broadcast ``http://<relay>/<path>``) where the camera's serial number goes::

    import numpy as np
    import xoq.realsense as rs

    pipe, cfg = rs.pipeline(), rs.config()
    rs.config.enable_device(cfg, "<endpoint-id>@192.168.1.20:40004")
    cfg.enable_stream(rs.stream.color, 640, 480, rs.format.rgb8, 30)
    cfg.enable_stream(rs.stream.depth, 640, 480, rs.format.z16, 30)
    profile = pipe.start(cfg)
    ok, frames = pipe.try_wait_for_frames(timeout_ms=10000)
    color = np.asanyarray(frames.get_color_frame().get_data())    # (480, 640, 3) uint8
    depth = np.asanyarray(frames.get_depth_frame().get_data())    # (480, 640) uint16
    metres = frames.get_depth_frame().get_distance(320, 240)
    pipe.stop()

Finding devices
    ``rs.context().query_devices()`` lists the cameras *you registered*: the addresses in the
    environment variable ``XOQ_REALSENSE`` (comma-separated; an entry may carry a name,
    ``wrist=<address>``), then those given to ``rs.context.add_device(address, name=None)``
    in this process. With none registered the list is empty, as pyrealsense2's is with no camera
    plugged in. Listing never touches the network: a registered camera that is down is listed
    and fails when used. For a listed camera, ``get_info(camera_info.serial_number)`` and
    ``physical_port`` are its address and ``camera_info.name`` is its registered name, or the
    address when it has none (so LeRobot's ``serial_number_or_name`` lookup, which treats any
    non-numeric id as a name, finds it by address or by name); ``product_line`` and
    ``asic_serial_number`` are the device name and serial number the server reports (asking
    for them connects), ``connection_type``, ``product_id`` and ``usb_type_descriptor`` read
    ``"xoq"``, ``firmware_version`` reads ``"unknown"`` (the server does not report it); other
    fields raise ``RuntimeError``.

    ``config.enable_device(serial)`` takes an address (registered or not), a registered name,
    or the serial number the server reports for a registered camera (its real RealSense serial:
    each registered camera is asked until one matches). Without ``enable_device`` the pipeline
    opens the first registered camera. ``key=``, ``ephemeral=True`` and ``offline=`` (as for
    serial ports) may be given to ``enable_device`` and ``add_device`` as keywords.

Streams
    An xoq depth camera has one depth stream (``format.z16``) and one colour stream
    (``format.rgb8``, ``bgr8``, ``rgba8`` or ``bgra8``; converted here from the RGB the camera
    sends), taken by the same capture: a frameset's depth and colour frames share frame
    number and timestamp. ``get_timestamp()`` is the capture time on the robot's clock, in
    milliseconds since the Unix epoch (``timestamp_domain.system_time``). A frameset is
    delivered only when every enabled stream is in it (through a relay, a depth picture whose
    colour picture did not arrive is skipped); a depth-only config does not fetch colour.
    ``wait_for_frames`` gives the newest capture: captures taken while nobody asked are dropped,
    as on a RealSense. Without any ``enable_stream`` both streams are enabled.

    ``start()`` checks the request against what the camera delivers (0 means "any", as in
    pyrealsense2). A size that differs from the camera's is asked of the camera (P2P only: a
    relay broadcast is view-only; the camera is shared, so every viewer gets the new mode), and
    ``start()`` raises ``RuntimeError`` ("Couldn't resolve requests") when it is not delivered
    within a few seconds. The protocol does not carry the frame rate, so ``start()`` measures
    it from the capture times: a requested rate is asked of the camera when the measured one is
    more than 15 % above it or below 60 % of it; still faster than asked afterwards raises,
    slower is accepted (a busy robot delivers fewer frames, which cannot be told from a refused
    rate). ``profile.fps()`` is the requested rate when it is delivered, else the measured one.

What differs from a local RealSense
    Sensor options cannot be changed from the client: ``sensor.supports(option.exposure)``
    (gain, white balance, auto modes, laser power...) is False and ``set_option`` raises
    ``RuntimeError``, so LeRobot reports a requested exposure as unsupported instead of
    ignoring it. The depth sensor's ``option.depth_units`` reads the depth scale (read-only).
    Intrinsics come from the server; extrinsics, ``align``, filters, point clouds, recording
    and playback are not provided (they raise ``AttributeError`` naming the missing feature).
    Each stream profile lists the camera's current mode only. Errors are ``RuntimeError``,
    as in pyrealsense2, with the native xoq error as ``__cause__``.

To run code that does ``import pyrealsense2 as rs`` unchanged, put this module in its place
before that import: ``sys.modules["pyrealsense2"] = xoq.realsense`` (LeRobot also checks that a
distribution named ``pyrealsense2`` is installed). No numpy is needed: frame data are buffers
that ``numpy.asanyarray`` wraps without a copy.
"""

from __future__ import annotations

import enum
import math
import os
import re
import sys
import threading
import time
import traceback
from array import array
from typing import Any, Callable, Dict, List, Optional, Tuple

from . import _xoq
from ._address import strip_scheme

__all__ = [
    # enums
    "stream",
    "format",
    "camera_info",
    "distortion",
    "option",
    "timestamp_domain",
    # devices
    "context",
    "device_list",
    "device",
    "sensor",
    "depth_sensor",
    "color_sensor",
    "option_range",
    # streaming
    "pipeline",
    "config",
    "pipeline_profile",
    "stream_profile",
    "video_stream_profile",
    "intrinsics",
    "frame",
    "video_frame",
    "depth_frame",
    "composite_frame",
    # geometry
    "rs2_deproject_pixel_to_point",
    "rs2_project_point_to_pixel",
    "rs2_fov",
]

#: The environment variable listing the cameras ``query_devices`` reports.
ENV = "XOQ_REALSENSE"

# How long start() waits for the first capture, and for a requested mode to be delivered.
_FIRST_FRAME_S = 10.0
_MODE_CHANGE_S = 5.0
# Capture time spanned to measure the frame rate at start() (and at least 3 frame intervals).
_FPS_WINDOW_S = 0.3
# A requested rate counts as delivered when the measured one is at most this much above it
# (a camera never captures faster than it is set to)...
_FPS_ABOVE = 0.15
# ...and at least this fraction of it (a busy robot delivers fewer frames than its camera's rate).
_FPS_BELOW = 0.6


# ---------------------------------------------------------------------------------------------
# Enums: pyrealsense2's names and values (a subset of each).


class _Enum(int, enum.Enum):
    """An enum whose members print as pyrealsense2's do (``stream.color``)."""

    def __str__(self) -> str:
        return f"{type(self).__name__}.{self.name}"

    def __repr__(self) -> str:
        return f"<{type(self).__name__}.{self.name}: {int(self)}>"


class stream(_Enum):
    any = 0
    depth = 1
    color = 2
    infrared = 3
    fisheye = 4
    gyro = 5
    accel = 6
    gpio = 7
    pose = 8
    confidence = 9


class format(_Enum):  # noqa: A001 - pyrealsense2's name
    any = 0
    z16 = 1
    disparity16 = 2
    xyz32f = 3
    yuyv = 4
    rgb8 = 5
    bgr8 = 6
    rgba8 = 7
    bgra8 = 8
    y8 = 9
    y16 = 10
    raw10 = 11
    raw16 = 12
    raw8 = 13
    uyvy = 14
    motion_raw = 15
    motion_xyz32f = 16
    gpio_raw = 17
    six_dof = 18
    disparity32 = 19
    y10bpack = 20
    distance = 21
    mjpeg = 22
    y8i = 23
    y12i = 24
    inzi = 25
    invi = 26
    w10 = 27
    z16h = 28
    fg = 29
    y411 = 30
    y16i = 31


class camera_info(_Enum):
    name = 0
    serial_number = 1
    firmware_version = 2
    recommended_firmware_version = 3
    physical_port = 4
    debug_op_code = 5
    advanced_mode = 6
    product_id = 7
    camera_locked = 8
    usb_type_descriptor = 9
    product_line = 10
    asic_serial_number = 11
    firmware_update_id = 12
    ip_address = 13
    dfu_device_path = 14
    connection_type = 15


class distortion(_Enum):
    none = 0
    modified_brown_conrady = 1
    inverse_brown_conrady = 2
    ftheta = 3
    brown_conrady = 4
    kannala_brandt4 = 5


class option(_Enum):
    backlight_compensation = 0
    brightness = 1
    contrast = 2
    exposure = 3
    gain = 4
    gamma = 5
    hue = 6
    saturation = 7
    sharpness = 8
    white_balance = 9
    enable_auto_exposure = 10
    enable_auto_white_balance = 11
    visual_preset = 12
    laser_power = 13
    accuracy = 14
    motion_range = 15
    filter_option = 16
    confidence_threshold = 17
    emitter_enabled = 18
    frames_queue_size = 19
    total_frame_drops = 20
    power_line_frequency = 22
    asic_temperature = 23
    error_polling_enabled = 24
    projector_temperature = 25
    output_trigger_enabled = 26
    motion_module_temperature = 27
    depth_units = 28
    enable_motion_correction = 29
    auto_exposure_priority = 30
    inter_cam_sync_mode = 42
    emitter_on_off = 46
    global_time_enabled = 53

    def __str__(self) -> str:  # pyrealsense2 prints options by their description
        return self.name.replace("_", " ").title()

    def __repr__(self) -> str:
        return f"<option {int(self)} '{self}'>"


class timestamp_domain(_Enum):
    hardware_clock = 0
    system_time = 1
    global_time = 2


# Module-level names for the enums, for functions whose pyrealsense2 keywords shadow them.
_stream, _format, _option = stream, format, option


def _as(enum_type: Any, value: Any, what: str) -> Any:
    """``value`` as a member of ``enum_type`` (also from pyrealsense2's own enums or an int)."""
    if isinstance(value, enum_type):
        return value
    try:
        return enum_type(int(value))
    except (TypeError, ValueError):
        raise TypeError(f"{what}: expected rs.{enum_type.__name__}, got {value!r}") from None


def _is_format(value: Any) -> bool:
    return isinstance(value, format) or type(value).__name__ == "format"


_DISTORTION_TEXT = {
    distortion.none: "None",
    distortion.modified_brown_conrady: "Modified Brown Conrady",
    distortion.inverse_brown_conrady: "Inverse Brown Conrady",
    distortion.ftheta: "Ftheta",
    distortion.brown_conrady: "Brown Conrady",
    distortion.kannala_brandt4: "Kannala Brandt4",
}
_STREAM_NAME = {stream.depth: "Depth", stream.color: "Color"}
_BYTES_PER_PIXEL = {format.z16: 2, format.rgb8: 3, format.bgr8: 3, format.rgba8: 4, format.bgra8: 4}
_COLOR_FORMATS = (format.rgb8, format.bgr8, format.rgba8, format.bgra8)


class _Unsupported:
    """Attributes pyrealsense2 has and this module does not raise an AttributeError saying so."""

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):
            raise AttributeError(name)
        raise AttributeError(
            f"xoq.realsense: {type(self).__name__}.{name} is not supported for a remote xoq "
            "depth camera (see the xoq.realsense module docs for what is)"
        )


def _error(what: str, err: BaseException) -> RuntimeError:
    e = RuntimeError(f"{what}: {err}")
    e.__cause__ = err
    return e


# ---------------------------------------------------------------------------------------------
# Geometry (librealsense's rsutil.h, in double precision).


class intrinsics(_Unsupported):
    """A picture's pinhole model and distortion, as pyrealsense2's ``intrinsics``."""

    def __init__(self) -> None:
        self.width = 0
        self.height = 0
        self.fx = 0.0
        self.fy = 0.0
        self.ppx = 0.0
        self.ppy = 0.0
        self.model = distortion.none
        self.coeffs = [0.0, 0.0, 0.0, 0.0, 0.0]

    @classmethod
    def _from(cls, d: Dict[str, Any]) -> "intrinsics":
        k = cls()
        k.width, k.height = int(d["width"]), int(d["height"])
        k.fx, k.fy, k.ppx, k.ppy = (float(d[n]) for n in ("fx", "fy", "ppx", "ppy"))
        k.model = distortion[d.get("model") or "none"]
        coeffs = [float(c) for c in d.get("coeffs") or []]
        k.coeffs = (coeffs + [0.0] * 5)[:5]
        return k

    def __eq__(self, other: Any) -> bool:
        keys = ("width", "height", "fx", "fy", "ppx", "ppy", "model", "coeffs")
        return all(getattr(self, k, None) == getattr(other, k, None) for k in keys)

    __hash__ = None  # type: ignore[assignment] - mutable, like pyrealsense2's

    def __repr__(self) -> str:
        g = lambda v: f"{v:g}"  # noqa: E731
        return (
            f"[ {self.width}x{self.height}  p[{g(self.ppx)} {g(self.ppy)}]  "
            f"f[{g(self.fx)} {g(self.fy)}]  {_DISTORTION_TEXT.get(self.model, str(self.model))} "
            f"[{' '.join(g(c) for c in self.coeffs)}] ]"
        )

    __str__ = __repr__


def _model(intrin: Any) -> int:
    return int(intrin.model)


def rs2_project_point_to_pixel(intrin: Any, point: Any) -> List[float]:
    """The pixel (x, y) where the 3D ``point`` (metres, camera frame) is seen, with the
    picture's forward distortion (librealsense's ``rs2_project_point_to_pixel``)."""
    px, py, pz = (float(v) for v in point)
    c = [float(v) for v in intrin.coeffs]
    x, y = px / pz, py / pz
    m = _model(intrin)
    if m in (distortion.modified_brown_conrady, distortion.inverse_brown_conrady):
        r2 = x * x + y * y
        f = 1 + c[0] * r2 + c[1] * r2 * r2 + c[4] * r2 * r2 * r2
        x *= f
        y *= f
        dx = x + 2 * c[2] * x * y + c[3] * (r2 + 2 * x * x)
        dy = y + 2 * c[3] * x * y + c[2] * (r2 + 2 * y * y)
        x, y = dx, dy
    elif m == distortion.brown_conrady:
        r2 = x * x + y * y
        f = 1 + c[0] * r2 + c[1] * r2 * r2 + c[4] * r2 * r2 * r2
        dx = x * f + 2 * c[2] * x * y + c[3] * (r2 + 2 * x * x)
        dy = y * f + 2 * c[3] * x * y + c[2] * (r2 + 2 * y * y)
        x, y = dx, dy
    elif m == distortion.ftheta:
        r = max(math.sqrt(x * x + y * y), sys.float_info.epsilon)
        rd = 1.0 / c[0] * math.atan(2 * r * math.tan(c[0] / 2.0))
        x *= rd / r
        y *= rd / r
    elif m == distortion.kannala_brandt4:
        r = max(math.sqrt(x * x + y * y), sys.float_info.epsilon)
        theta = math.atan(r)
        t2 = theta * theta
        series = 1 + t2 * (c[0] + t2 * (c[1] + t2 * (c[2] + t2 * c[3])))
        rd = theta * series
        x *= rd / r
        y *= rd / r
    return [x * float(intrin.fx) + float(intrin.ppx), y * float(intrin.fy) + float(intrin.ppy)]


def rs2_deproject_pixel_to_point(intrin: Any, pixel: Any, depth: float) -> List[float]:
    """The 3D point (metres, camera frame: x right, y down, z forward) seen at ``pixel`` at
    ``depth`` metres, undoing the picture's distortion (librealsense's
    ``rs2_deproject_pixel_to_point``)."""
    u, v = (float(p) for p in pixel)
    depth = float(depth)
    c = [float(val) for val in intrin.coeffs]
    x = (u - float(intrin.ppx)) / float(intrin.fx)
    y = (v - float(intrin.ppy)) / float(intrin.fy)
    xo, yo = x, y
    m = _model(intrin)
    if m in (distortion.inverse_brown_conrady, distortion.brown_conrady):
        for _ in range(10):  # as librealsense: 10 iterations
            r2 = x * x + y * y
            icdist = 1.0 / (1 + ((c[4] * r2 + c[1]) * r2 + c[0]) * r2)
            if m == distortion.inverse_brown_conrady:
                xq, yq = x / icdist, y / icdist
            else:
                xq, yq = x, y
            delta_x = 2 * c[2] * xq * yq + c[3] * (r2 + 2 * xq * xq)
            delta_y = 2 * c[3] * xq * yq + c[2] * (r2 + 2 * yq * yq)
            x = (xo - delta_x) * icdist
            y = (yo - delta_y) * icdist
    elif m == distortion.kannala_brandt4:
        rd = max(math.sqrt(x * x + y * y), sys.float_info.epsilon)
        theta, t2 = rd, rd * rd
        for _ in range(4):
            f = theta * (1 + t2 * (c[0] + t2 * (c[1] + t2 * (c[2] + t2 * c[3])))) - rd
            if abs(f) < sys.float_info.epsilon:
                break
            df = 1 + t2 * (3 * c[0] + t2 * (5 * c[1] + t2 * (7 * c[2] + 9 * t2 * c[3])))
            theta -= f / df
            t2 = theta * theta
        r = math.tan(theta)
        x *= r / rd
        y *= r / rd
    elif m == distortion.ftheta:
        rd = max(math.sqrt(x * x + y * y), sys.float_info.epsilon)
        r = math.tan(c[0] * rd) / math.atan(2 * math.tan(c[0] / 2.0))
        x *= r / rd
        y *= r / rd
    return [depth * x, depth * y, depth]


def rs2_fov(intrin: Any) -> List[float]:
    """Horizontal and vertical field of view in degrees (librealsense's ``rs2_fov``)."""
    ppx, ppy = float(intrin.ppx), float(intrin.ppy)
    h = math.atan2(ppx + 0.5, intrin.fx) + math.atan2(intrin.width - (ppx + 0.5), intrin.fx)
    v = math.atan2(ppy + 0.5, intrin.fy) + math.atan2(intrin.height - (ppy + 0.5), intrin.fy)
    return [math.degrees(h), math.degrees(v)]


# ---------------------------------------------------------------------------------------------
# Registered cameras.


class _Entry:
    """A camera someone registered (or named in enable_device): where it is, how to connect."""

    __slots__ = ("address", "name", "key", "ephemeral", "offline")

    def __init__(
        self,
        address: str,
        name: Optional[str] = None,
        key: Optional[str] = None,
        ephemeral: bool = False,
        offline: Optional[bool] = None,
    ) -> None:
        self.address = address
        self.name = name
        self.key = key
        self.ephemeral = ephemeral
        self.offline = offline

    def open(self, color: bool) -> Any:
        return _xoq.DepthCamera(
            self.address, color=color, offline=self.offline, key=self.key, ephemeral=self.ephemeral
        )


_added: List[_Entry] = []
_added_lock = threading.Lock()
_NAME = re.compile(r"^[A-Za-z0-9_.\- ]+$")


def _address(text: str, where: str) -> str:
    address = strip_scheme(str(text).strip())
    if not _xoq.is_address(address):
        raise RuntimeError(
            f"{where}: {text!r} is not an xoq address (an endpoint id, <id>@<ip>:<port>, or a "
            "relay URL http(s)://<relay>/<path>)"
        )
    return address


def _env_entries() -> List[_Entry]:
    entries = []
    for part in os.environ.get(ENV, "").split(","):
        part = part.strip()
        if not part:
            continue
        name = None
        head, sep, tail = part.partition("=")
        if sep and _NAME.match(head.strip()):
            name, part = head.strip(), tail.strip()
        entries.append(_Entry(_address(part, ENV), name))
    return entries


def _registered() -> List[_Entry]:
    """The environment's cameras, then add_device's; one per address (the first wins)."""
    with _added_lock:
        added = list(_added)
    seen, out = set(), []
    for e in _env_entries() + added:
        if e.address not in seen:
            seen.add(e.address)
            out.append(e)
    return out


# ---------------------------------------------------------------------------------------------
# Devices and sensors.


class option_range(_Unsupported):
    def __init__(self, min: float = 0.0, max: float = 0.0, step: float = 0.0, default: float = 0.0) -> None:  # noqa: A002
        self.min, self.max, self.step, self.default = float(min), float(max), float(step), float(default)

    def __repr__(self) -> str:
        return f"<xoq.realsense.option_range: {self.min:g}-{self.max:g}/{self.default:g} [{self.step:g}]>"


class device(_Unsupported):
    """A registered remote depth camera (from ``query_devices`` or ``get_device``)."""

    def __init__(self) -> None:
        self._entry: Optional[_Entry] = None
        self._probe: Optional[Tuple[Dict[str, Any], int]] = None
        self._live: Optional["pipeline"] = None

    @classmethod
    def _of(cls, entry: _Entry, live: Optional["pipeline"] = None) -> "device":
        d = cls()
        d._entry = entry
        d._live = live
        return d

    def _need(self) -> _Entry:
        if self._entry is None:
            raise RuntimeError("null pointer passed for argument \"device\" (an empty rs.device)")
        return self._entry

    def _server(self) -> Tuple[Dict[str, Any], int]:
        """The server's info dict and frame rate: from the running pipeline, else asked once."""
        entry = self._need()
        live = self._live
        if live is not None and live._cam is not None and live._profile is not None:
            return live._cam.info, live._fps
        if self._probe is None:
            try:
                cam = entry.open(color=False)
            except _xoq.XoqError as err:
                raise _error(f"cannot reach the xoq camera {entry.address}", err) from err
            try:
                fps = _measure_fps(cam, time.monotonic() + _FIRST_FRAME_S, entry.address)[0]
                self._probe = (cam.info, fps)
            finally:
                cam.close()
        return self._probe

    def get_info(self, info: Any) -> str:
        entry = self._need()
        info = _as(camera_info, info, "get_info")
        if info == camera_info.name:
            return entry.name or entry.address
        if info in (camera_info.serial_number, camera_info.physical_port):
            return entry.address
        if info in (camera_info.connection_type, camera_info.product_id, camera_info.usb_type_descriptor):
            return "xoq"
        if info == camera_info.firmware_version:
            return "unknown"
        if info == camera_info.product_line:
            return str(self._server()[0]["name"])
        if info == camera_info.asic_serial_number:
            return str(self._server()[0]["serial"])
        raise RuntimeError(f"camera_info.{info.name} is not available for a remote xoq camera ({entry.address})")

    def supports(self, info: Any) -> bool:
        if isinstance(info, option) or type(info).__name__ == "option":
            return False
        return _as(camera_info, info, "supports") in _DEVICE_INFO

    def query_sensors(self) -> List["sensor"]:
        self._need()
        return [depth_sensor._of(self), color_sensor._of(self)]

    @property
    def sensors(self) -> List["sensor"]:
        return self.query_sensors()

    def first_depth_sensor(self) -> "depth_sensor":
        self._need()
        return depth_sensor._of(self)

    def first_color_sensor(self) -> "color_sensor":
        self._need()
        return color_sensor._of(self)

    def hardware_reset(self) -> None:
        raise RuntimeError("hardware_reset is not supported for a remote xoq camera: restart it on the robot")

    def __bool__(self) -> bool:
        return self._entry is not None

    def __eq__(self, other: Any) -> bool:
        return isinstance(other, device) and other._entry is not None and self._entry is not None and (
            other._entry.address == self._entry.address
        )

    def __hash__(self) -> int:
        return hash(self._entry.address if self._entry else None)

    def __repr__(self) -> str:
        if self._entry is None:
            return "<xoq.realsense.device: NULL>"
        return f"<xoq.realsense.device: {self.get_info(camera_info.name)} (S/N: {self._entry.address})>"


_DEVICE_INFO = (
    camera_info.name,
    camera_info.serial_number,
    camera_info.physical_port,
    camera_info.connection_type,
    camera_info.product_id,
    camera_info.usb_type_descriptor,
    camera_info.firmware_version,
    camera_info.product_line,
    camera_info.asic_serial_number,
)


class sensor(_Unsupported):
    """A camera's depth ("Stereo Module") or colour ("RGB Camera") sensor. Its options cannot
    be set from the client (see the module docs)."""

    _stream = stream.any
    _sensor_name = ""

    def __init__(self, sensor: Any = None) -> None:  # noqa: A002 - pyrealsense2's keyword
        self._device: Optional[device] = None
        if isinstance(sensor, globals()["sensor"]) and type(self)._stream in (sensor._stream, stream.any):
            self._device = sensor._device
            if type(self) is globals()["sensor"]:
                self._stream, self._sensor_name = sensor._stream, sensor._sensor_name

    @classmethod
    def _of(cls, dev: device) -> Any:
        s = cls()
        s._device = dev
        return s

    def _dev(self) -> device:
        if self._device is None:
            raise RuntimeError("null pointer passed for argument \"sensor\" (an empty rs.sensor)")
        return self._device

    @property
    def name(self) -> str:
        return self._sensor_name

    def get_info(self, info: Any) -> str:
        info = _as(camera_info, info, "get_info")
        if info == camera_info.name:
            return self._sensor_name
        return self._dev().get_info(info)

    def supports(self, arg0: Any) -> bool:
        """``camera_info`` fields as the device's; options: see the module docs."""
        if isinstance(arg0, option) or type(arg0).__name__ == "option":
            return _as(option, arg0, "supports") in self._options()
        return self._dev().supports(arg0)

    def _options(self) -> Dict[option, Callable[[], float]]:
        if self._stream == stream.depth and self._device is not None:
            return {option.depth_units: lambda: float(self._dev()._server()[0]["scale"])}
        return {}

    def get_supported_options(self) -> List[option]:
        return list(self._options())

    def _refuse(self, opt: option) -> RuntimeError:
        return RuntimeError(
            f"option.{opt.name} is not supported by xoq.realsense: a remote xoq camera's "
            f"{self._sensor_name} options cannot be changed or read from the client "
            "(set them on the robot)"
        )

    def get_option(self, option: Any) -> float:  # noqa: A002 - pyrealsense2's keyword
        opt = _as(_option, option, "get_option")
        read = self._options().get(opt)
        if read is None:
            raise self._refuse(opt)
        return read()

    def set_option(self, option: Any, value: float) -> None:  # noqa: A002
        opt = _as(_option, option, "set_option")
        if opt in self._options():
            raise RuntimeError(f"option.{opt.name} is read-only on a remote xoq camera")
        raise self._refuse(opt)

    def is_option_read_only(self, option: Any) -> bool:  # noqa: A002
        opt = _as(_option, option, "is_option_read_only")
        if opt not in self._options():
            raise self._refuse(opt)
        return True

    def get_option_range(self, option: Any) -> option_range:  # noqa: A002
        v = self.get_option(option)
        return option_range(v, v, 0.0, v)

    def get_stream_profiles(self) -> List["stream_profile"]:
        info, fps = self._dev()._server()
        k = intrinsics._from(info["depth" if self._stream == stream.depth else "color"])
        fmts = [format.z16] if self._stream == stream.depth else list(_COLOR_FORMATS)
        return [video_stream_profile._make(self._stream, f, fps, k, default=(i == 0)) for i, f in enumerate(fmts)]

    @property
    def profiles(self) -> List["stream_profile"]:
        return self.get_stream_profiles()

    def is_depth_sensor(self) -> bool:
        return self._stream == stream.depth

    def as_depth_sensor(self) -> "depth_sensor":
        return depth_sensor(self)

    def is_color_sensor(self) -> bool:
        return self._stream == stream.color

    def as_color_sensor(self) -> "color_sensor":
        return color_sensor(self)

    def __bool__(self) -> bool:
        return self._device is not None

    def __repr__(self) -> str:
        return f"<xoq.realsense.sensor: {self._sensor_name}>"


class depth_sensor(sensor):
    _stream = stream.depth
    _sensor_name = "Stereo Module"

    def get_depth_scale(self) -> float:
        """Metres per depth unit, as the server reports it (0.001: millimetres)."""
        return float(self._dev()._server()[0]["scale"])


class color_sensor(sensor):
    _stream = stream.color
    _sensor_name = "RGB Camera"


class device_list(_Unsupported):
    """A snapshot of the registered cameras (see the module docs)."""

    def __init__(self, devices: Optional[List[device]] = None) -> None:
        self._devices = list(devices or [])

    def __len__(self) -> int:
        return len(self._devices)

    def size(self) -> int:
        return len(self._devices)

    def __getitem__(self, i: Any) -> Any:
        return self._devices[i]

    def __iter__(self):
        return iter(self._devices)

    def contains(self, arg0: device) -> bool:
        return arg0 in self._devices

    def front(self) -> device:
        return self._devices[0]

    def back(self) -> device:
        return self._devices[-1]

    def __repr__(self) -> str:
        return f"<xoq.realsense.device_list: {self._devices}>"


class context(_Unsupported):
    """Lists the cameras registered in ``XOQ_REALSENSE`` and with :meth:`add_device`."""

    def __init__(self, json_settings: Any = None) -> None:
        pass

    def query_devices(self, product_line: Any = None) -> device_list:
        """The registered cameras, without connecting (``product_line`` is accepted and
        ignored: xoq cameras have none)."""
        return device_list([device._of(e) for e in _registered()])

    @property
    def devices(self) -> device_list:
        return self.query_devices()

    def query_all_sensors(self) -> List[sensor]:
        return [s for d in self.query_devices() for s in d.query_sensors()]

    @property
    def sensors(self) -> List[sensor]:
        return self.query_all_sensors()

    @staticmethod
    def add_device(
        address: str,
        name: Optional[str] = None,
        *,
        key: Optional[str] = None,
        ephemeral: bool = False,
        offline: Optional[bool] = None,
    ) -> None:
        """Register a camera for every context of this process (xoq only; pyrealsense2 finds
        USB cameras by itself). ``name`` is what ``camera_info.name`` reports (default: the
        address). Registering an address again replaces its entry."""
        entry = _Entry(_address(address, "add_device"), name, key, ephemeral, offline)
        with _added_lock:
            _added[:] = [e for e in _added if e.address != entry.address] + [entry]

    @staticmethod
    def remove_device(address: str) -> None:
        """Forget a camera registered with :meth:`add_device` (xoq only)."""
        a = strip_scheme(str(address).strip())
        with _added_lock:
            _added[:] = [e for e in _added if e.address != a]


# ---------------------------------------------------------------------------------------------
# Stream profiles.


class stream_profile(_Unsupported):
    def __init__(self) -> None:
        self._stream = stream.any
        self._format = format.any
        self._fps = 0
        self._default = False

    def stream_type(self) -> stream:
        return self._stream

    def format(self) -> format:
        return self._format

    def fps(self) -> int:
        return self._fps

    def stream_index(self) -> int:
        return 0

    def stream_name(self) -> str:
        return _STREAM_NAME.get(self._stream, self._stream.name.capitalize())

    def unique_id(self) -> int:
        return int(self._stream) * 64 + int(self._format)

    def is_default(self) -> bool:
        return self._default

    def bytes_per_pixel(self) -> int:
        return _BYTES_PER_PIXEL.get(self._format, 0)

    def is_stream_profile(self) -> bool:
        return True

    def as_stream_profile(self) -> "stream_profile":
        return self

    def is_video_stream_profile(self) -> bool:
        return isinstance(self, video_stream_profile)

    def as_video_stream_profile(self) -> "video_stream_profile":
        if not isinstance(self, video_stream_profile):
            raise RuntimeError("not a video stream profile")
        return self

    def is_motion_stream_profile(self) -> bool:
        return False

    def is_pose_stream_profile(self) -> bool:
        return False

    def __bool__(self) -> bool:
        return self._stream != stream.any

    def __eq__(self, other: Any) -> bool:
        return isinstance(other, stream_profile) and self._key() == other._key()

    def __hash__(self) -> int:
        return hash(self._key())

    def _key(self) -> tuple:
        return (self._stream, self._format, self._fps)

    def __repr__(self) -> str:
        return f"<xoq.realsense.stream_profile: {self.stream_name()}(0) @ {self._fps}fps {self._format.name.upper()}>"


class video_stream_profile(stream_profile):
    def __init__(self, sp: Any = None) -> None:
        super().__init__()
        self._intrinsics = intrinsics()
        if isinstance(sp, video_stream_profile):  # rs.video_stream_profile(profile): a cast
            self.__dict__.update(sp.__dict__)

    @classmethod
    def _make(cls, s: stream, f: format, fps: int, k: intrinsics, default: bool = True) -> "video_stream_profile":
        p = cls()
        p._stream, p._format, p._fps, p._intrinsics, p._default = s, f, int(fps), k, default
        return p

    def width(self) -> int:
        return self._intrinsics.width

    def height(self) -> int:
        return self._intrinsics.height

    def get_intrinsics(self) -> intrinsics:
        k = intrinsics()
        k.__dict__.update(self._intrinsics.__dict__)
        k.coeffs = list(self._intrinsics.coeffs)
        return k

    @property
    def intrinsics(self) -> intrinsics:
        return self.get_intrinsics()

    def _key(self) -> tuple:
        return super()._key() + (self._intrinsics.width, self._intrinsics.height)

    def __repr__(self) -> str:
        return (
            f"<xoq.realsense.video_stream_profile: {self.stream_name()}(0) "
            f"{self.width()}x{self.height()} @ {self._fps}fps {self._format.name.upper()}>"
        )


class pipeline_profile(_Unsupported):
    """What ``pipeline.start`` opened: the device and the enabled streams' profiles."""

    def __init__(self) -> None:
        self._device = device()
        self._streams: Dict[stream, video_stream_profile] = {}

    def get_device(self) -> device:
        return self._device

    def get_stream(self, stream_type: Any, stream_index: int = -1) -> video_stream_profile:
        s = _as(stream, stream_type, "get_stream")
        if s not in self._streams or stream_index not in (-1, 0):
            raise RuntimeError("Profile does not contain the requested stream")
        return self._streams[s]

    def get_streams(self) -> List[video_stream_profile]:
        return list(self._streams.values())


# ---------------------------------------------------------------------------------------------
# Frames.


class frame(_Unsupported):
    """One picture of a capture (falsy when empty, as pyrealsense2's)."""

    def __init__(self, arg0: Any = None) -> None:
        self._data: Optional[memoryview] = None
        self._number = 0
        self._ts_ms = 0.0
        self._profile: Optional[video_stream_profile] = None
        self._kind: type = type(self)
        # rs.frame(f), rs.depth_frame(f), ...: a cast, empty when f is not of that kind.
        if isinstance(arg0, frame) and issubclass(arg0._kind, type(self)):
            self.__dict__.update(arg0.__dict__)

    def _need(self) -> None:
        if self._data is None:
            raise RuntimeError('null pointer passed for argument "frame_ref" (an empty frame)')

    def get_data(self) -> memoryview:
        """The pixels as a buffer: ``numpy.asanyarray`` gives (H, W, 3|4) uint8 for colour and
        (H, W) uint16 for depth, without a copy."""
        self._need()
        return self._data  # type: ignore[return-value]

    @property
    def data(self) -> memoryview:
        return self.get_data()

    def get_data_size(self) -> int:
        self._need()
        return self._data.nbytes  # type: ignore[union-attr]

    def get_frame_number(self) -> int:
        self._need()
        return self._number

    @property
    def frame_number(self) -> int:
        return self.get_frame_number()

    def get_timestamp(self) -> float:
        """Capture time on the robot's clock, milliseconds since the Unix epoch."""
        self._need()
        return self._ts_ms

    @property
    def timestamp(self) -> float:
        return self.get_timestamp()

    def get_frame_timestamp_domain(self) -> timestamp_domain:
        self._need()
        return timestamp_domain.system_time

    @property
    def frame_timestamp_domain(self) -> timestamp_domain:
        return self.get_frame_timestamp_domain()

    def get_profile(self) -> stream_profile:
        self._need()
        return self._profile  # type: ignore[return-value]

    @property
    def profile(self) -> stream_profile:
        return self.get_profile()

    def supports_frame_metadata(self, frame_metadata: Any) -> bool:
        return False

    def get_frame_metadata(self, frame_metadata: Any) -> int:
        raise RuntimeError("frame metadata is not available from a remote xoq camera")

    def keep(self) -> None:
        """Nothing to do: frames own their memory."""

    def is_frame(self) -> bool:
        return True

    def as_frame(self) -> "frame":
        return self

    def is_video_frame(self) -> bool:
        return issubclass(self._kind, video_frame) and bool(self)

    def as_video_frame(self) -> "video_frame":
        return video_frame(self)

    def is_depth_frame(self) -> bool:
        return issubclass(self._kind, depth_frame) and bool(self)

    def as_depth_frame(self) -> "depth_frame":
        return depth_frame(self)

    def is_frameset(self) -> bool:
        return issubclass(self._kind, composite_frame) and bool(self)

    def as_frameset(self) -> "composite_frame":
        return composite_frame(self)

    def is_motion_frame(self) -> bool:
        return False

    def is_pose_frame(self) -> bool:
        return False

    def is_points(self) -> bool:
        return False

    def __bool__(self) -> bool:
        return self._data is not None

    def __repr__(self) -> str:
        if not self:
            return f"<xoq.realsense.{type(self).__name__} NULL>"
        p = self._profile
        what = f"{p.stream_name()} {p.format().name.upper()}" if p else "frame"
        return f"<xoq.realsense.{type(self).__name__} {what} #{self._number}>"


class video_frame(frame):
    def get_width(self) -> int:
        self._need()
        return self._data.shape[1]  # type: ignore[union-attr]

    def get_height(self) -> int:
        self._need()
        return self._data.shape[0]  # type: ignore[union-attr]

    @property
    def width(self) -> int:
        return self.get_width()

    @property
    def height(self) -> int:
        return self.get_height()

    def get_bytes_per_pixel(self) -> int:
        self._need()
        return self._data.nbytes // (self._data.shape[0] * self._data.shape[1])  # type: ignore[union-attr]

    @property
    def bytes_per_pixel(self) -> int:
        return self.get_bytes_per_pixel()

    def get_bits_per_pixel(self) -> int:
        return self.get_bytes_per_pixel() * 8

    @property
    def bits_per_pixel(self) -> int:
        return self.get_bits_per_pixel()

    def get_stride_in_bytes(self) -> int:
        return self.get_width() * self.get_bytes_per_pixel()

    @property
    def stride_in_bytes(self) -> int:
        return self.get_stride_in_bytes()


class depth_frame(video_frame):
    def __init__(self, arg0: Any = None) -> None:
        self._scale = 0.0
        super().__init__(arg0)

    def get_units(self) -> float:
        """Metres per depth unit."""
        self._need()
        return self._scale

    def get_distance(self, x: int, y: int) -> float:
        """Distance in metres at pixel (x, y); 0 where depth is invalid."""
        self._need()
        h, w = self._data.shape  # type: ignore[union-attr, misc]
        x, y = int(x), int(y)
        if not (0 <= x < w and 0 <= y < h):
            raise RuntimeError(f"pixel ({x}, {y}) is outside the {w}x{h} depth picture")
        return self._data[y, x] * self._scale  # type: ignore[index]


class composite_frame(frame):
    """A capture's frames (a "frameset"): depth first, then colour."""

    def __init__(self, arg0: Any = None) -> None:
        self._frames: List[frame] = []
        super().__init__(arg0)

    @classmethod
    def _of(cls, frames: List[frame]) -> "composite_frame":
        fs = cls()
        fs._frames = list(frames)
        if fs._frames:
            fs._number, fs._ts_ms = fs._frames[0]._number, fs._frames[0]._ts_ms
        return fs

    def _need(self) -> None:
        if not self._frames:
            raise RuntimeError('null pointer passed for argument "frame_ref" (an empty frameset)')

    def get_data(self) -> memoryview:
        self._need()
        return self._frames[0].get_data()

    def get_data_size(self) -> int:
        self._need()
        return self._frames[0].get_data_size()

    def get_profile(self) -> stream_profile:
        self._need()
        return self._frames[0].get_profile()

    def __bool__(self) -> bool:
        return bool(self._frames)

    def __len__(self) -> int:
        return len(self._frames)

    def size(self) -> int:
        return len(self._frames)

    def __iter__(self):
        return iter(self._frames)

    def __getitem__(self, i: Any) -> Any:
        return self._frames[i]

    def foreach(self, callable: Callable[[frame], Any]) -> None:  # noqa: A002 - pyrealsense2's keyword
        for f in self._frames:
            callable(f)

    def _find(self, s: stream, fmt: Any = format.any) -> Optional[frame]:
        fmt = _as(format, fmt, "format")
        for f in self._frames:
            p = f._profile
            if p is not None and p._stream == s and fmt in (format.any, p._format):
                return f
        return None

    def first_or_default(self, s: Any, f: Any = format.any) -> frame:
        return self._find(_as(stream, s, "stream"), f) or frame()

    def first(self, s: Any, f: Any = format.any) -> frame:
        got = self._find(_as(stream, s, "stream"), f)
        if got is None:
            raise RuntimeError("Frame of requested stream type was not found!")
        return got

    def get_depth_frame(self) -> depth_frame:
        return self._find(stream.depth) or depth_frame()  # type: ignore[return-value]

    def get_color_frame(self, index: int = 0) -> video_frame:
        return self._find(stream.color) or video_frame()  # type: ignore[return-value]

    def get_infrared_frame(self, index: int = 0) -> video_frame:
        return video_frame()

    def __repr__(self) -> str:
        return f"<xoq.realsense.composite_frame {self._frames}>"


def _rgb_as(fmt: format, rgb: bytearray, w: int, h: int) -> memoryview:
    """The RGB picture in ``fmt`` (rgb8 kept, the others converted in place or into a copy)."""
    if fmt == format.bgr8:
        r = rgb[0::3]
        rgb[0::3] = rgb[2::3]
        rgb[2::3] = r
    elif fmt in (format.rgba8, format.bgra8):
        out = bytearray(b"\xff") * (w * h * 4)
        first, last = (0, 2) if fmt == format.rgba8 else (2, 0)
        out[first::4] = rgb[0::3]
        out[1::4] = rgb[1::3]
        out[last::4] = rgb[2::3]
        return memoryview(out).cast("B", (h, w, 4))
    return memoryview(rgb).cast("B", (h, w, 3))


def _depth_view(depth: bytearray, w: int, h: int) -> memoryview:
    if sys.byteorder == "little":
        return memoryview(depth).cast("H", (h, w))
    a = array("H")
    a.frombytes(bytes(depth))
    a.byteswap()
    return memoryview(a).cast("B").cast("H", (h, w))


# ---------------------------------------------------------------------------------------------
# Config and pipeline.


class config(_Unsupported):
    """What ``pipeline.start`` should open (see the module docs for the formats)."""

    def __init__(self) -> None:
        self._serial: Optional[str] = None
        self._conn: Dict[str, Any] = {}
        self._streams: Dict[stream, Tuple[int, int, format, int, int]] = {}

    def enable_device(
        self,
        serial: str,
        *,
        key: Optional[str] = None,
        ephemeral: bool = False,
        offline: Optional[bool] = None,
    ) -> None:
        """Use this camera: an xoq address, a registered name, or the serial number a
        registered camera's server reports. ``key``/``ephemeral``/``offline``: xoq's
        connection options."""
        self._serial = str(serial)
        self._conn = {k: v for k, v in (("key", key), ("offline", offline)) if v is not None}
        if ephemeral:
            self._conn["ephemeral"] = True

    def enable_stream(
        self,
        stream_type: Any,
        *args: Any,
        stream_index: Optional[int] = None,
        width: Optional[int] = None,
        height: Optional[int] = None,
        format: Any = None,  # noqa: A002 - pyrealsense2's keyword
        framerate: Optional[int] = None,
    ) -> None:
        """pyrealsense2's overloads: ``(stream)``, ``(stream, index)``, ``(stream, format,
        framerate)``, ``(stream, index, format, framerate)``, ``(stream, width, height,
        format, framerate)`` and ``(stream, index, width, height, format, framerate)``;
        0 means "any"."""
        s = _as(stream, stream_type, "enable_stream")
        a = list(args)
        pos = next((i for i, v in enumerate(a) if _is_format(v)), None)
        idx = w = h = fps = None
        fmt = None
        if pos is None:
            if len(a) == 1:
                idx = a[0]
            elif a:
                raise TypeError(
                    "enable_stream(stream[, index][, width, height], format, framerate): "
                    f"no rs.format among {a!r}"
                )
        else:
            before, fmt, after = a[:pos], a[pos], a[pos + 1 :]
            if len(after) > 1 or len(before) not in (0, 1, 2, 3):
                raise TypeError(f"enable_stream: unexpected arguments {a!r}")
            fps = after[0] if after else None
            if len(before) in (1, 3):
                idx = before[0]
            if len(before) >= 2:
                w, h = before[-2], before[-1]
        idx = stream_index if stream_index is not None else idx
        w = width if width is not None else w
        h = height if height is not None else h
        fmt = format if format is not None else fmt
        fps = framerate if framerate is not None else fps
        self._streams[s] = (
            int(w or 0),
            int(h or 0),
            _as(_format, fmt, "format") if fmt is not None else _format.any,
            int(fps or 0),
            -1 if idx is None else int(idx),
        )

    def enable_all_streams(self) -> None:
        self._streams = dict(_ALL_STREAMS)

    def disable_stream(self, stream: Any, index: int = -1) -> None:  # noqa: A002 - pyrealsense2's keyword
        self._streams.pop(_as(_stream, stream, "disable_stream"), None)

    def disable_all_streams(self) -> None:
        self._streams = {}


_config = config
_ALL_STREAMS = {stream.depth: (0, 0, format.any, 0, -1), stream.color: (0, 0, format.any, 0, -1)}


def _resolve_entry(serial: Optional[str]) -> _Entry:
    registered = _registered()
    if serial is None:
        if not registered:
            raise RuntimeError(
                f"No device connected: register an xoq camera in {ENV} or with "
                "rs.context.add_device(address), or call config.enable_device(address)"
            )
        return registered[0]
    text = serial.strip()
    address = strip_scheme(text)
    for e in registered:
        if e.address == address or (e.name is not None and e.name == text):
            return e
    if _xoq.is_address(address):
        return _Entry(address)
    # The serial number a registered camera's server reports (a RealSense's real serial).
    for e in registered:
        try:
            cam = e.open(color=False)
        except _xoq.XoqError:
            continue
        try:
            if str(cam.info.get("serial", "")) == text:
                return e
        finally:
            cam.close()
    raise RuntimeError(
        f"No device connected with serial number {text!r}: give an xoq address "
        f"(<endpoint-id>@<ip>:<port>, or a relay URL), a name registered in {ENV} / "
        "rs.context.add_device, or the serial number a registered camera reports"
    )


def _measure_fps(cam: Any, deadline: float, address: str, first: Any = None) -> Tuple[int, Any]:
    """The capture rate, from frame numbers and capture times (a least-squares fit over about
    ``_FPS_WINDOW_S`` of captures, so skipped frames and jitter do not matter), and the last
    capture read."""
    points = [] if first is None else [(first[0], first[1])]
    last = first
    while not points or points[-1][1] - points[0][1] < _FPS_WINDOW_S * 1e6 or points[-1][0] - points[0][0] < 4:
        remaining = deadline - time.monotonic()
        got = cam.read(remaining) if remaining > 0 else None
        if got is None:
            break
        if points and got[0] <= points[-1][0]:
            points = []  # the camera restarted its count
        points.append((got[0], got[1]))
        last = got
    if last is None:
        raise RuntimeError(f"no frames from the xoq camera {address} within the time allowed")
    n = len(points)
    if n < 2:
        raise RuntimeError(f"could not measure the frame rate of {address}: frames stopped coming")
    ms = sum(p[0] for p in points) / n
    mt = sum(p[1] for p in points) / n
    var = sum((p[0] - ms) ** 2 for p in points)
    cov = sum((p[0] - ms) * (p[1] - mt) for p in points)
    if var <= 0 or cov <= 0:
        raise RuntimeError(f"could not measure the frame rate of {address}: inconsistent capture times")
    return int(round(1e6 * var / cov)), last


class pipeline(_Unsupported):
    """Streams one remote depth camera (see the module docs)."""

    def __init__(self, ctx: Optional[context] = None) -> None:
        self._lock = threading.Lock()
        self._cam: Any = None
        self._profile: Optional[pipeline_profile] = None
        self._fps = 0
        self._want: Dict[stream, format] = {}
        self._scale = 0.0
        self._callback_thread: Optional[threading.Thread] = None
        self._callback_stop: Optional[threading.Event] = None
        self._unpaired = 0

    # -- start -------------------------------------------------------------------------------

    def start(self, *args: Any, config: Any = None, callback: Any = None, queue: Any = None) -> pipeline_profile:
        """``start()``, ``start(config)``, ``start(callback)`` or ``start(config, callback)``
        (the callback gets each frameset on a thread of its own). Frame queues are not
        supported."""
        cfg = config
        if queue is not None:
            raise RuntimeError("xoq.realsense: pipeline.start(queue) is not supported: use wait_for_frames or a callback")
        for a in args:
            if isinstance(a, _config) and cfg is None and callback is None:
                cfg = a
            elif callable(a) and callback is None:
                callback = a
            else:
                raise RuntimeError(
                    f"xoq.realsense: pipeline.start({a!r}) is not supported: give a config and/or a "
                    "callback (frame queues are not supported)"
                )
        with self._lock:
            if self._profile is not None:
                raise RuntimeError("start() cannot be called before stop()")
            self._open(cfg or _config())
        if callback is not None:
            self._start_callback(callback)
        return self._profile  # type: ignore[return-value]

    def _open(self, cfg: config) -> None:
        requests = dict(cfg._streams) or dict(_ALL_STREAMS)
        for s, (_, _, _, _, idx) in requests.items():
            if s not in (stream.depth, stream.color):
                raise RuntimeError(
                    f"Couldn't resolve requests: an xoq depth camera has depth and color streams, not {s.name}"
                )
            if idx not in (-1, 0):
                raise RuntimeError(f"Couldn't resolve requests: an xoq camera has one {s.name} stream (index 0), not {idx}")
        want: Dict[stream, format] = {}
        for s, (_, _, fmt, _, _) in requests.items():
            if s == stream.depth:
                if fmt not in (format.any, format.z16):
                    raise RuntimeError(f"Couldn't resolve requests: depth comes as z16, not {fmt.name}")
                want[s] = format.z16
            else:
                if fmt not in (format.any,) + _COLOR_FORMATS:
                    raise RuntimeError(
                        f"Couldn't resolve requests: colour comes as rgb8, bgr8, rgba8 or bgra8, not {fmt.name}"
                    )
                want[s] = format.rgb8 if fmt == format.any else fmt
        rates = {r[3] for r in requests.values() if r[3]}
        if len(rates) > 1:
            raise RuntimeError(f"Couldn't resolve requests: depth and colour come at one rate, asked {sorted(rates)}")
        fps_req = rates.pop() if rates else 0
        color = stream.color in want

        entry = _resolve_entry(cfg._serial)
        if cfg._conn:
            entry = _Entry(entry.address, entry.name, **{**_conn_of(entry), **cfg._conn})
        try:
            cam = entry.open(color=color)
        except _xoq.XoqError as err:
            raise _error(f"cannot open the xoq camera {entry.address}", err) from err
        try:
            fps = self._settle(cam, entry.address, requests, fps_req, color)
        except BaseException:
            cam.close()
            raise
        info = cam.info
        prof = pipeline_profile()
        prof._device = device._of(entry, live=self)
        for s, fmt in want.items():
            k = intrinsics._from(info["depth" if s == stream.depth else "color"])
            prof._streams[s] = video_stream_profile._make(s, fmt, fps, k)
        self._cam, self._fps, self._want, self._scale = cam, fps, want, float(info["scale"])
        self._profile = prof

    def _settle(self, cam: Any, address: str, requests: Dict[stream, tuple], fps_req: int, color: bool) -> int:
        """Check (and ask for) the requested sizes and rate; the measured rate."""

        def sizes(got: Any) -> Dict[stream, Tuple[int, int]]:
            out = {stream.depth: (got[3], got[4])}
            if got[5] is not None:
                out[stream.color] = (got[6], got[7])
            return out

        def mismatch(got: Any) -> List[str]:
            have = sizes(got)
            bad = []
            for s, (w, h, *_) in requests.items():
                if s not in have:
                    continue
                hw, hh = have[s]
                if (w and w != hw) or (h and h != hh):
                    bad.append(f"{s.name} {w or hw}x{h or hh} (delivered: {hw}x{hh})")
            return bad

        def next_capture(deadline: float, what: str) -> Any:
            while True:
                remaining = deadline - time.monotonic()
                got = cam.read(remaining) if remaining > 0 else None
                if got is None:
                    raise RuntimeError(f"no frames {what} came from the xoq camera {address} in time".replace("  ", " "))
                if color and got[5] is None:
                    continue  # through a relay: a depth picture whose colour did not arrive
                return got

        try:
            got = next_capture(time.monotonic() + _FIRST_FRAME_S, "with their colour pictures" if color else "")
            target = next(((w, h) for s in (stream.depth, stream.color) if s in requests
                           for (w, h, *_) in [requests[s]] if w or h), (0, 0))
            if mismatch(got):
                self._set_mode(cam, address, target[0], target[1], fps_req, mismatch(got))
                deadline = time.monotonic() + _MODE_CHANGE_S
                while mismatch(got):
                    try:
                        got = next_capture(deadline, "of the requested size")
                    except RuntimeError:
                        raise RuntimeError(
                            f"Couldn't resolve requests: the xoq camera {address} did not deliver "
                            f"{', '.join(mismatch(got))}"
                        ) from None
            fps, got = _measure_fps(cam, time.monotonic() + _FIRST_FRAME_S, address, got)

            def too_fast(fps: int) -> bool:  # a camera never captures faster than it is set to
                return fps > fps_req * (1 + _FPS_ABOVE)

            def too_slow(fps: int) -> bool:  # set slower, or a busy robot: cannot tell
                return fps < fps_req * _FPS_BELOW

            if fps_req and (too_fast(fps) or too_slow(fps)):
                wanted = [f"{fps_req} fps (delivered: {fps} fps)"]
                try:
                    self._set_mode(cam, address, 0, 0, fps_req, wanted)
                except RuntimeError:
                    if too_fast(fps):
                        raise
                    return fps  # a view-only relay broadcast, delivering fewer frames than asked
                deadline = time.monotonic() + _MODE_CHANGE_S
                while (too_fast(fps) or too_slow(fps)) and time.monotonic() < deadline:
                    fps, got = _measure_fps(cam, deadline, address, next_capture(deadline, "at the requested rate"))
                if too_fast(fps):
                    raise RuntimeError(
                        f"Couldn't resolve requests: the xoq camera {address} delivers {fps} fps, not {fps_req}"
                    )
                if too_slow(fps):
                    return fps  # what arrives, not what was asked
            # The requested rate once the camera is at it (as a RealSense reports its mode,
            # however many frames a busy robot delivers); else the measured rate.
            return fps_req or fps
        except _xoq.XoqError as err:
            raise _error(f"the xoq camera {address}", err) from err

    @staticmethod
    def _set_mode(cam: Any, address: str, w: int, h: int, fps: int, wanted: List[str]) -> None:
        try:
            cam.set_mode(w, h, fps)
        except _xoq.UnsupportedError as err:
            raise RuntimeError(
                f"Couldn't resolve requests: {', '.join(wanted)}; {address} is a relay broadcast, "
                "which is view-only: ask for what it delivers (or 0 for any), or change the mode "
                "on the server or through a P2P address"
            ) from err

    # -- frames ------------------------------------------------------------------------------

    def _frameset(self, cam: Any, got: Any) -> composite_frame:
        seq, ts_us, depth, w, h, rgb, cw, ch = got
        ts_ms = ts_us / 1000.0
        prof = self._profile
        frames: List[frame] = []
        for s, fmt in self._want.items():
            p = prof._streams[s] if prof is not None else None
            if s == stream.depth:
                f: frame = depth_frame()
                f._data = _depth_view(depth, w, h)
                f._scale = self._scale  # type: ignore[attr-defined]
                size = (w, h)
            else:
                f = video_frame()
                f._data = _rgb_as(fmt, rgb, cw, ch)
                size = (cw, ch)
            if p is not None and (p.width(), p.height()) != size:
                k = intrinsics._from(cam.info["depth" if s == stream.depth else "color"])
                p = video_stream_profile._make(s, fmt, self._fps, k)
            f._number, f._ts_ms, f._profile = seq, ts_ms, p
            frames.append(f)
        frames.sort(key=lambda f: 0 if isinstance(f, depth_frame) else 1)
        return composite_frame._of(frames)

    def _next(self, timeout_s: Optional[float], caller: str) -> Optional[composite_frame]:
        """The next capture with every enabled stream, or None when ``timeout_s`` passes."""
        cam = self._cam
        if cam is None or self._profile is None:
            raise RuntimeError(f"{caller} cannot be called before start()")
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        while True:
            remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
            try:
                got = cam.read(remaining)
            except _xoq.XoqError as err:
                if self._cam is None:
                    raise RuntimeError(f"{caller}: the pipeline was stopped") from err
                raise _error(f"{caller}: the xoq camera {self._profile._device._need().address}", err) from err
            if got is None:
                return None
            if stream.color in self._want and got[5] is None:
                self._unpaired += 1
                if deadline is not None and time.monotonic() >= deadline:
                    return None
                continue
            return self._frameset(cam, got)

    def wait_for_frames(self, timeout_ms: int = 5000) -> composite_frame:
        """The newest capture; ``RuntimeError`` when none arrives within ``timeout_ms``."""
        self._no_callback("wait_for_frames")
        fs = self._next(timeout_ms / 1000.0, "wait_for_frames")
        if fs is None:
            raise RuntimeError(f"Frame didn't arrive within {int(timeout_ms)}")
        return fs

    def try_wait_for_frames(self, timeout_ms: int = 5000) -> Tuple[bool, composite_frame]:
        """``(True, frameset)``, or ``(False, empty frameset)`` when none arrives in time."""
        self._no_callback("try_wait_for_frames")
        fs = self._next(timeout_ms / 1000.0, "try_wait_for_frames")
        return (True, fs) if fs is not None else (False, composite_frame())

    def poll_for_frames(self) -> composite_frame:
        """A capture if one is ready, else an empty (falsy) frameset; never blocks."""
        self._no_callback("poll_for_frames")
        return self._next(0.0, "poll_for_frames") or composite_frame()

    def get_active_profile(self) -> pipeline_profile:
        if self._profile is None:
            raise RuntimeError("get_active_profile() can only be called between a start() and a following stop()")
        return self._profile

    # -- callbacks and stop ------------------------------------------------------------------

    def _no_callback(self, caller: str) -> None:
        if self._callback_thread is not None:
            raise RuntimeError(f"{caller} cannot be called when the pipeline was started with a callback")

    def _start_callback(self, callback: Callable[[frame], Any]) -> None:
        stop = threading.Event()

        def run() -> None:
            while not stop.is_set():
                try:
                    fs = self._next(0.25, "callback")
                except RuntimeError:
                    if stop.is_set():
                        return
                    traceback.print_exc()
                    return
                if fs is not None:
                    try:
                        callback(fs)
                    except Exception:  # noqa: BLE001 - reported like pyrealsense2's callbacks
                        traceback.print_exc()

        self._callback_stop = stop
        self._callback_thread = threading.Thread(target=run, name="xoq.realsense callback", daemon=True)
        self._callback_thread.start()

    def stop(self) -> None:
        """Disconnect. A ``wait_for_frames`` blocked in another thread raises ``RuntimeError``."""
        with self._lock:
            if self._profile is None:
                raise RuntimeError("stop() cannot be called before start()")
            cam, self._cam, self._profile = self._cam, None, None
            stop, thread = self._callback_stop, self._callback_thread
            self._callback_stop = self._callback_thread = None
        if stop is not None:
            stop.set()
        try:
            cam.close()
        finally:
            if thread is not None and thread is not threading.current_thread():
                thread.join(timeout=2.0)

    def __del__(self) -> None:
        try:
            if self._cam is not None:
                self._cam.close()
        except Exception:  # noqa: BLE001
            pass


def _conn_of(entry: _Entry) -> Dict[str, Any]:
    return {"key": entry.key, "ephemeral": entry.ephemeral, "offline": entry.offline}


_NOT_PROVIDED = {
    "align": "compare the depth and colour intrinsics: sim:depth renders both from one viewpoint",
    "pointcloud": "deproject depth pixels with rs2_deproject_pixel_to_point and the depth intrinsics",
}


def __getattr__(name: str) -> Any:
    if name.startswith("__"):
        raise AttributeError(name)
    hint = _NOT_PROVIDED.get(name)
    raise AttributeError(
        f"xoq.realsense has no {name!r}: pyrealsense2's {name} is not provided for remote xoq "
        f"cameras{' (' + hint + ')' if hint else ''}; see the xoq.realsense module docs"
    )
