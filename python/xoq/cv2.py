"""OpenCV-style capture of remote cameras: ``xoq_cv2.VideoCapture(address)``.

``read()`` gives ``(True, frame)`` with ``frame`` a ``numpy`` array of shape
``(height, width, 3)``, dtype ``uint8``, BGR order, as ``cv2.VideoCapture.read`` does. It gives
``(False, None)`` when the stream has ended or no frame arrived within the read timeout.
Frames are decoded in Rust directly into the memory the array uses (no copy on the way).

With xoq installed, ``cv2.VideoCapture("<endpoint-id>@<ip>:<port>")`` also opens a remote
camera (P2P addresses only: ``http://`` URLs stay OpenCV's own), and local cameras and files
are untouched. ``import xoq_cv2`` works without OpenCV installed; ``cv2``'s property
constants are used when it is.
"""

from __future__ import annotations

from typing import Any, Optional, Tuple

from . import _xoq
from ._address import is_p2p

# cv2's values for the properties this capture understands (cv2.CAP_PROP_*).
CAP_PROP_POS_MSEC = 0
CAP_PROP_POS_FRAMES = 1
CAP_PROP_FRAME_WIDTH = 3
CAP_PROP_FRAME_HEIGHT = 4
CAP_PROP_FPS = 5
CAP_PROP_FOURCC = 6
CAP_PROP_READ_TIMEOUT_MSEC = 54

_FOURCC = {"h264": 0x34363248, "jpeg": 0x47504A4D}  # "H264", "MJPG"


def _numpy():
    try:
        import numpy
    except ImportError as err:  # pragma: no cover - numpy is part of xoq[opencv]
        raise ImportError("xoq_cv2 needs numpy: pip install 'xoq[opencv]'") from err
    return numpy


class VideoCapture:
    """A remote camera with ``cv2.VideoCapture``'s methods.

    ``address`` is ``<endpoint-id>`` or ``<endpoint-id>@<ip>:<port>`` as ``xoq camera-server``
    prints it, or a relay broadcast ``<relay-url>/<path>`` (H.264, view-only: ``set`` of the
    size returns False). ``codec`` is ``"h264"``, ``"jpeg"`` or ``None`` (H.264 when the
    server has it).
    """

    def __init__(
        self,
        address: Any = None,
        api_preference: Any = None,
        *,
        codec: Optional[str] = None,
        offline: Optional[bool] = None,
        key: Optional[str] = None,
        timeout: float = 10.0,
    ) -> None:
        self._cam = None
        self._grabbed = None
        self._last = None
        self._fps_estimate = 0.0
        self._last_ts = None
        self._timeout = timeout
        self._frames = 0
        self._codec = codec
        self._offline = offline
        self._key = key
        if address is not None:
            self.open(address)

    def open(self, address: Any, api_preference: Any = None) -> bool:
        """Connect (closing any previous connection). Raises on an unreachable server, as
        ``xoq`` clients do, rather than returning False silently."""
        self.release()
        from ._address import strip_scheme

        self._cam = _xoq.Camera(
            strip_scheme(str(address)), codec=self._codec, offline=self._offline, key=self._key
        )
        return True

    def isOpened(self) -> bool:  # noqa: N802 (cv2's name)
        return self._cam is not None and self._cam.is_open

    def grab(self) -> bool:
        """Receive and decode the next frame; ``retrieve`` returns it."""
        if not self.isOpened():
            return False
        try:
            try:
                got = self._cam.read(self._timeout)
            except _xoq.DeviceError:
                # A damaged frame: the stream resumes at the next keyframe; try once more.
                got = self._cam.read(self._timeout)
        except _xoq.ClosedError:
            self.release()
            return False
        except _xoq.DeviceError:
            # The camera itself failed (the server says why in the log and the error):
            # cv2's answer for a camera that stopped is read() -> (False, None).
            return False
        if got is None:
            return False
        buf, width, height, _seq, ts_us, _key = got
        if self._last_ts is not None and ts_us > self._last_ts:
            inst = 1e6 / (ts_us - self._last_ts)
            self._fps_estimate = inst if self._fps_estimate == 0 else 0.9 * self._fps_estimate + 0.1 * inst
        self._last_ts = ts_us
        self._grabbed = (buf, width, height)
        self._frames += 1
        return True

    def retrieve(self, image: Any = None, flag: int = 0) -> Tuple[bool, Any]:
        """The frame ``grab`` received, as a BGR ``numpy`` array (shared with no one)."""
        if self._grabbed is None:
            return False, None
        buf, width, height = self._grabbed
        self._grabbed = None
        frame = _numpy().frombuffer(buf, dtype="uint8").reshape(height, width, 3)
        self._last = (width, height)
        if image is not None and getattr(image, "shape", None) == frame.shape:
            image[...] = frame
            return True, image
        return True, frame

    def read(self, image: Any = None) -> Tuple[bool, Any]:
        """``grab`` then ``retrieve``: ``(True, frame)`` or ``(False, None)``."""
        if not self.grab():
            return False, None
        return self.retrieve(image)

    def get(self, prop_id: int) -> float:
        """Width, height, fps, frame count and capture time (``CAP_PROP_POS_MSEC``, ms since
        the Unix epoch) of what is delivered (0 before the first frame)."""
        if prop_id == CAP_PROP_FRAME_WIDTH:
            return float(self._last[0]) if self._last else 0.0
        if prop_id == CAP_PROP_FRAME_HEIGHT:
            return float(self._last[1]) if self._last else 0.0
        if prop_id == CAP_PROP_FPS:
            return round(self._fps_estimate, 2)
        if prop_id == CAP_PROP_POS_MSEC:
            # The capture time of the last frame, ms since the Unix epoch (the camera's
            # clock): `time.time() * 1000 - get(CAP_PROP_POS_MSEC)` is the frame's age.
            return self._last_ts / 1000.0 if self._last_ts is not None else 0.0
        if prop_id == CAP_PROP_POS_FRAMES:
            return float(self._frames)
        if prop_id == CAP_PROP_FOURCC and self._cam is not None:
            return float(_FOURCC[self._cam.codec])
        if prop_id == CAP_PROP_READ_TIMEOUT_MSEC:
            return self._timeout * 1000.0
        return 0.0

    def set(self, prop_id: int, value: float) -> bool:
        """Ask the server for a new width, height or fps; returns True once frames of the new
        size arrive (within the read timeout). The camera is shared: every viewer sees the
        change."""
        if prop_id == CAP_PROP_READ_TIMEOUT_MSEC:
            self._timeout = max(0.0, value / 1000.0)
            return True
        if not self.isOpened() or prop_id not in (CAP_PROP_FRAME_WIDTH, CAP_PROP_FRAME_HEIGHT, CAP_PROP_FPS):
            return False
        want = int(value)
        w = want if prop_id == CAP_PROP_FRAME_WIDTH else 0
        h = want if prop_id == CAP_PROP_FRAME_HEIGHT else 0
        fps = want if prop_id == CAP_PROP_FPS else 0
        try:
            self._cam.set_mode(w, h, fps)
        except _xoq.UnsupportedError:
            return False  # a relay broadcast is view-only
        if prop_id == CAP_PROP_FPS:
            return True
        index = 0 if prop_id == CAP_PROP_FRAME_WIDTH else 1
        for _ in range(90):  # about three seconds of frames
            if not self.grab():
                return False
            _buf, width, height = self._grabbed
            if (width, height)[index] == want:
                self._last = (width, height)
                return True
        return False

    def release(self) -> None:
        """Disconnect. Safe to call twice."""
        if self._cam is not None:
            self._cam.close()
        self._cam = None
        self._grabbed = None

    def __enter__(self) -> "VideoCapture":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.release()

    def __del__(self) -> None:
        try:
            self.release()
        except Exception:
            pass


def patch_cv2(cv2: Any) -> None:
    """Make ``cv2.VideoCapture("<p2p address>")`` open a remote camera (idempotent).

    ``cv2.VideoCapture`` becomes a stand-in type whose call builds either an
    :class:`xoq.cv2.VideoCapture` (remote P2P address) or OpenCV's own, unchanged object (every
    other source). It is not a subclass of OpenCV's type: OpenCV's extension types do not
    survive being subclassed from Python (their instances lose the subclass's extra slots,
    which corrupts memory), so local captures stay exactly OpenCV's objects. ``isinstance``
    checks against ``cv2.VideoCapture`` accept both kinds.
    """
    local = cv2.VideoCapture
    if getattr(local, "_xoq_patched", False):
        return

    class _Factory(type):
        def __call__(cls, *args: Any, **kwargs: Any):
            source = args[0] if args else kwargs.get("filename")
            if isinstance(source, str) and is_p2p(source):
                return VideoCapture(*args, **kwargs)
            return local(*args, **kwargs)

        def __instancecheck__(cls, obj: Any) -> bool:
            return isinstance(obj, (local, VideoCapture))

        def __getattr__(cls, name: str) -> Any:
            return getattr(local, name)

    patched = _Factory("VideoCapture", (), {"_xoq_patched": True, "__doc__": local.__doc__, "__wrapped__": local})
    patched.__module__ = getattr(local, "__module__", "cv2")
    cv2.VideoCapture = patched
