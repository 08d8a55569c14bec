"""python-sounddevice's interface for remote microphones and speakers: ``xoq.sounddevice``.

``import xoq.sounddevice as sd`` and use it as ``sounddevice``, with an xoq address
(``<endpoint-id>@<ip>:<port>`` or ``<endpoint-id>``, as ``xoq audio-server`` prints it) as the
device. A relay URL (``http://<relay>/anon/xoq-audio``) listens to the server's broadcast
(Opus, listen-only)::

    import xoq.sounddevice as sd
    sd.default.device = "<endpoint-id>@127.0.0.1:40003"
    data = sd.rec(48000, blocking=True)            # 1 s from the robot's microphone
    sd.play(data, blocking=True)                   # and back out of its speaker

    with sd.InputStream(channels=1, callback=cb):  # cb(indata, frames, time, status)
        ...

What maps, what differs:

* ``InputStream``, ``OutputStream``, ``Stream`` (duplex) and their ``Raw*`` variants take
  sounddevice's arguments; ``device`` is an address (or an ``(input, output)`` pair for a
  duplex stream), required here or in ``default.device``. Local sound cards are not opened:
  use the ``sounddevice`` package for those.
* ``samplerate=None`` and ``channels=None`` take the device's. The rate and channel count are
  the device's own (audio is not resampled): asking for others raises :class:`PortAudioError`
  with the server's message, which names the device's values.
* ``dtype``: ``'float32'`` (default), ``'int16'``, ``'int32'``, ``'int8'`` or ``'uint8'``.
* How samples travel is an xoq option, given as keyword arguments of any stream, ``rec`` and
  ``play`` (or in ``extra_settings=XoqSettings(...)``/a dict, or ``default.codec``):
  ``codec='opus'`` (default; lossy, about 64 kbit/s per channel), ``'s16'`` (16-bit PCM,
  exact to 1/32767) or ``'f32'`` (float PCM, exact); ``frame_ms=20`` (10, 20, 40 or 60: the
  packet size); ``takeover=True`` to take the speaker from another talker (one talker per
  device: otherwise a second one is refused); ``key=``/``ephemeral=True``/``offline=`` as for
  serial ports and CAN buses.
* ``latency`` reports one frame plus the speaker's jitter-buffer target (40 ms), in seconds.
  Writes are paced to real time like a sound card's (a write blocks while more than about
  that much audio is queued), so ``write`` and ``play(..., blocking=True)`` take as long as
  the audio lasts.
* ``read`` reports ``overflowed`` when audio was lost since the previous read (the reader
  fell behind and the client dropped chunks, or the server skipped a listener that was
  late); a callback gets that as ``status.input_overflow``. ``time.inputBufferAdcTime`` is the
  capture time of the block's first frame on the robot's clock (seconds since the Unix
  epoch), the time base of ``Stream.time`` and ``time.currentTime``.
* ``query_devices(address)`` connects to ask the server. The protocol does not say whether
  a device has a speaker: every xoq audio server accepts a talker, so the output channels
  reported are the device's channel count.

XoQ 0.3.6's ``xoq_sounddevice`` is also accepted: ``Stream("<address>", samplerate=48000,
channels=1, blocksize=960, timeout=None)`` (a string first argument; ``timeout`` is accepted,
connecting gives up after 15 s) opens a started stream whose ``read(frames=None)``/
``read_chunk()`` return just the array, with ``write``/``write_chunk`` (a duplex stream takes
the speaker at its first write); ``InputStream``/``OutputStream`` likewise;
``rec("<address>", frames)`` and ``play("<address>", data)`` block.

numpy is required (``pip install numpy``).
"""

from __future__ import annotations

import inspect
import sys
import threading
import time as _time
import traceback
from collections import deque
from typing import Any, Optional

try:
    import numpy as _np
except ImportError as _err:  # pragma: no cover - numpy is a documented requirement
    raise ImportError("xoq.sounddevice needs numpy: pip install numpy") from _err

from . import _xoq
from ._address import strip_scheme

__all__ = [
    "PortAudioError",
    "CallbackStop",
    "CallbackAbort",
    "CallbackFlags",
    "XoqSettings",
    "DeviceList",
    "default",
    "InputStream",
    "OutputStream",
    "Stream",
    "RawInputStream",
    "RawOutputStream",
    "RawStream",
    "rec",
    "play",
    "playrec",
    "wait",
    "stop",
    "get_status",
    "get_stream",
    "query_devices",
    "query_hostapis",
    "check_input_settings",
    "check_output_settings",
    "sleep",
]

#: The speaker's jitter-buffer target on the server (xoq-server's SPEAKER_TARGET_MS).
JITTER_TARGET = 0.040
#: Most audio a writer keeps queued ahead of the speaker (the server holds at most 0.5 s).
MAX_AHEAD = 0.4
#: How often waiting loops look at stop/abort/close requests.
_POLL = 0.05
#: Chunk wait of blocking reads, so stop() and close() from other threads are seen.
_READ_SLICE = 0.05

_DTYPES = ("float32", "int32", "int16", "int8", "uint8")
_SAMPLESIZE = {"float32": 4, "int32": 4, "int16": 2, "int8": 1, "uint8": 1}
_XOQ_OPTIONS = ("codec", "frame_ms", "takeover", "key", "offline", "ephemeral")


class PortAudioError(Exception):
    """A stream could not be opened or used (sounddevice's exception type).

    ``args[0]`` is the message (for a refusal, the server's own: it names the device's rate
    and channels, or says the speaker is taken); ``args[1]`` a short code such as
    ``"refused"``, ``"closed"`` or ``"connect"``.
    """

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


class CallbackStop(Exception):
    """Raise in a callback to stop the stream (output already given is still played)."""


class CallbackAbort(Exception):
    """Raise in a callback to abort the stream (output not played yet is discarded)."""


class CallbackFlags:
    """Status of a block (sounddevice's ``CallbackFlags``): true when anything went wrong."""

    _NAMES = ("input_underflow", "input_overflow", "output_underflow", "output_overflow",
              "priming_output")

    __slots__ = ("_flags",)

    def __init__(self, flags: int = 0) -> None:
        self._flags = int(flags)

    def _get(self, bit: int) -> bool:
        return bool(self._flags & bit)

    def _set(self, bit: int, value: bool) -> None:
        if value:
            self._flags |= bit
        else:
            self._flags &= ~bit

    input_underflow = property(lambda s: s._get(1), lambda s, v: s._set(1, v))
    input_overflow = property(lambda s: s._get(2), lambda s, v: s._set(2, v))
    output_underflow = property(lambda s: s._get(4), lambda s, v: s._set(4, v))
    output_overflow = property(lambda s: s._get(8), lambda s, v: s._set(8, v))
    priming_output = property(lambda s: s._get(16), lambda s, v: s._set(16, v))

    def __bool__(self) -> bool:
        return bool(self._flags)

    def __int__(self) -> int:
        return self._flags

    def __eq__(self, other: object) -> bool:
        return isinstance(other, CallbackFlags) and other._flags == self._flags

    def __ior__(self, other: "CallbackFlags") -> "CallbackFlags":
        self._flags |= int(other)
        return self

    def __repr__(self) -> str:
        names = [n.replace("_", " ") for i, n in enumerate(self._NAMES) if self._flags & (1 << i)]
        return "<xoq.sounddevice.CallbackFlags: {}>".format(", ".join(names) or "no flags set")


class _Time:
    """The ``time`` argument of a callback (PortAudio's stream callback time info)."""

    __slots__ = ("inputBufferAdcTime", "outputBufferDacTime", "currentTime")

    def __init__(self, adc: float, dac: float, now: float) -> None:
        self.inputBufferAdcTime = adc
        self.outputBufferDacTime = dac
        self.currentTime = now

    def __repr__(self) -> str:
        return (f"<time: inputBufferAdcTime={self.inputBufferAdcTime:.6f}, "
                f"outputBufferDacTime={self.outputBufferDacTime:.6f}, "
                f"currentTime={self.currentTime:.6f}>")


class XoqSettings:
    """xoq's per-stream options, for ``extra_settings=`` (the keywords work as well)."""

    def __init__(self, codec: Optional[str] = None, frame_ms: Optional[int] = None,
                 takeover: Optional[bool] = None) -> None:
        self.codec = codec
        self.frame_ms = frame_ms
        self.takeover = takeover

    def _options(self) -> dict:
        return {k: v for k, v in vars(self).items() if v is not None}


class _InputOutputPair:
    """A setting with an input and an output value (``default.device``, ``.channels``, ...).

    Assign one value for both, or an ``(input, output)`` pair; read ``[0]``/``['input']``
    and ``[1]``/``['output']``.
    """

    __slots__ = ("_pair",)

    def __init__(self, value: Any = None) -> None:
        self._pair = [None, None]
        self._assign(value)

    def _assign(self, value: Any) -> None:
        if isinstance(value, _InputOutputPair):
            self._pair = list(value._pair)
        elif isinstance(value, (tuple, list)) and len(value) == 2:
            self._pair = list(value)
        else:
            self._pair = [value, value]

    @staticmethod
    def _index(key: Any) -> int:
        if key in (0, "input"):
            return 0
        if key in (1, "output"):
            return 1
        raise IndexError(f"{key!r}: use 0/'input' or 1/'output'")

    def __getitem__(self, key: Any) -> Any:
        return self._pair[self._index(key)]

    def __setitem__(self, key: Any, value: Any) -> None:
        self._pair[self._index(key)] = value

    def __iter__(self):
        return iter(self._pair)

    def __len__(self) -> int:
        return 2

    def __eq__(self, other: object) -> bool:
        if isinstance(other, _InputOutputPair):
            return self._pair == other._pair
        if isinstance(other, (tuple, list)):
            return self._pair == list(other)
        return NotImplemented

    def __repr__(self) -> str:
        return repr(self._pair)


class _Default:
    """Defaults the streams use for arguments left at ``None`` (sounddevice's ``default``).

    ``device``, ``channels``, ``dtype``, ``latency`` and ``extra_settings`` are input/output
    pairs: assign one value for both or an ``(input, output)`` pair. xoq adds ``codec`` and
    ``frame_ms``.
    """

    _pairs = ("device", "channels", "dtype", "latency", "extra_settings")

    def __init__(self) -> None:
        self.reset()

    def __setattr__(self, name: str, value: Any) -> None:
        if name in self._pairs:
            value = _InputOutputPair(value)
        object.__setattr__(self, name, value)

    def reset(self) -> None:
        """Back to the initial defaults (no device)."""
        self.device = None
        self.channels = None
        self.dtype = "float32"
        self.latency = "high"
        self.extra_settings = None
        self.samplerate = None
        self.blocksize = 0
        self.clip_off = False
        self.dither_off = False
        self.never_drop_input = False
        self.prime_output_buffers_using_stream_callback = False
        self.codec = "opus"
        self.frame_ms = 20

    def __repr__(self) -> str:
        fields = ", ".join(f"{k}={getattr(self, k)!r}" for k in
                           ("device", "samplerate", "channels", "dtype", "codec", "frame_ms"))
        return f"<xoq.sounddevice.default: {fields}>"


default = _Default()


class DeviceList(tuple):
    """What :func:`query_devices` returns without a device: one dict per known device."""

    __slots__ = ()

    def __repr__(self) -> str:
        if not self:
            return "(no devices: give an address, or set xoq.sounddevice.default.device)"
        return "\n".join(
            f"{i:3d} {d['name']} ({d['address']}), xoq "
            f"({d['max_input_channels']} in, {d['max_output_channels']} out), "
            f"{d['default_samplerate']:g} Hz"
            for i, d in enumerate(self)
        )


# ---------------------------------------------------------------------------------------
# Conversions and connection


def _check_dtype(dtype: Any) -> str:
    try:
        name = _np.dtype(dtype).name
    except TypeError as err:
        raise ValueError(f"dtype {dtype!r}: use one of {', '.join(_DTYPES)}") from err
    if name not in _DTYPES:
        raise ValueError(f"dtype {dtype!r}: use one of {', '.join(_DTYPES)}")
    return name


def _from_float(x: "_np.ndarray", dtype: str) -> "_np.ndarray":
    """float32 samples in [-1, 1] → ``dtype`` (the codecs' scaling: s16 is x * 32767)."""
    if dtype == "float32":
        return x
    x = _np.clip(x.astype(_np.float64), -1.0, 1.0)
    if dtype == "int16":
        return _np.round(x * 32767.0).astype(_np.int16)
    if dtype == "int32":
        return _np.round(x * 2147483647.0).astype(_np.int32)
    if dtype == "int8":
        return _np.round(x * 127.0).astype(_np.int8)
    return (_np.round(x * 127.0) + 128).astype(_np.uint8)


def _to_float(x: "_np.ndarray") -> "_np.ndarray":
    """Samples of any supported dtype → float32 in [-1, 1]."""
    kind = x.dtype
    if kind == _np.float32:
        return x
    if kind.kind == "f":
        return x.astype(_np.float32)
    if kind == _np.int16:
        return (x / 32767.0).astype(_np.float32)
    if kind == _np.int32:
        return (x / 2147483647.0).astype(_np.float32)
    if kind == _np.int8:
        return (x / 127.0).astype(_np.float32)
    if kind == _np.uint8:
        return ((x.astype(_np.float64) - 128.0) / 127.0).astype(_np.float32)
    raise TypeError(f"cannot play samples of dtype {kind.name}: use one of {', '.join(_DTYPES)}")


def _address(device: Any, what: str) -> str:
    if device is None:
        raise PortAudioError(
            f"no {what} device: give device='<endpoint-id>@<ip>:<port>' (the address "
            "`xoq audio-server` prints) or set xoq.sounddevice.default.device", "device")
    if not isinstance(device, str) or not _xoq.is_address(strip_scheme(device)):
        raise PortAudioError(
            f"{what} device {device!r} is not an xoq address: xoq.sounddevice opens remote "
            "devices (<endpoint-id>@<ip>:<port> or <endpoint-id>); use the sounddevice "
            "package for local sound cards", "device")
    return strip_scheme(device)


def _error(err: BaseException, doing: str) -> PortAudioError:
    code = {
        "RefusedError": "refused",
        "ClosedError": "closed",
        "ConnectError": "connect",
        "XoqTimeoutError": "timeout",
        "UnsupportedError": "unsupported",
    }.get(type(err).__name__, "error")
    return PortAudioError(f"{doing}: {err}", code)


#: Monotonic time at which this process last ended a talker session, per address: a new
#: talker right after (``play(); play()``) may still find the old session on the server.
_talker_closed: dict = {}
_TALKER_GRACE = 2.0


def _connect(address: str, what: str, *, samplerate: Optional[int], channels: Optional[int],
             listen: bool, talk: bool, opts: dict) -> Any:
    codec = opts.get("codec") or default.codec
    frame_ms = int(opts.get("frame_ms") or default.frame_ms)
    kwargs = dict(
        samplerate=samplerate, channels=channels, codec=codec, frame_ms=frame_ms,
        listen=listen, talk=talk, takeover=bool(opts.get("takeover", False)),
        offline=opts.get("offline"), key=opts.get("key"),
        ephemeral=bool(opts.get("ephemeral", False)),
    )
    while True:
        try:
            return _xoq.AudioStream(address, **kwargs)
        except ValueError as err:
            raise PortAudioError(f"Error opening {what}: {err}", "invalid") from None
        except _xoq.XoqError as err:
            closed_at = _talker_closed.get(address)
            if (talk and type(err).__name__ == "RefusedError" and closed_at is not None
                    and "talking" in str(err)
                    and _time.monotonic() < closed_at + _TALKER_GRACE):
                # Our own previous talker is still being let go by the server.
                _time.sleep(0.02)
                continue
            raise _error(err, f"Error opening {what}") from None


def _close_native(native: Any) -> None:
    if native is None:
        return
    try:
        native.close()
    finally:
        if native.talk:
            _talker_closed[native.address] = _time.monotonic()


class _Reader:
    """Microphone chunks assembled into blocks of any size (leftovers kept)."""

    def __init__(self, native: Any, channels: int) -> None:
        self.native = native
        self.channels = channels
        self.rate = native.rate
        self.chunks: deque = deque()  # [samples (n, ch) float32, capture_us, offset]
        self.frames = 0
        self.next_sample: Optional[int] = None
        self.lost_base = 0
        self.lost_seen = False
        self.lock = threading.Lock()

    def _lost(self) -> int:
        dropped, _, gaps = self.native.stats
        return dropped + gaps

    def reset(self) -> None:
        """Forget what arrived before a start()."""
        with self.lock:
            while self.native.read(0) is not None:
                pass
            self.chunks.clear()
            self.frames = 0
            self.next_sample = None
            self.lost_base = self._lost()
            self.lost_seen = False

    def _push(self, chunk: tuple) -> None:
        first, capture_us, data = chunk
        samples = _np.frombuffer(data, dtype="<f4").reshape(-1, self.channels)
        if self.next_sample is not None and first != self.next_sample:
            self.lost_seen = True
        self.next_sample = first + len(samples)
        if len(samples):
            self.chunks.append([samples, capture_us, 0])
            self.frames += len(samples)

    def fill(self, frames: int, stop: Optional[threading.Event] = None,
             deadline: Optional[float] = None) -> bool:
        """Wait until `frames` frames are buffered; False if `stop` was set or time ran out."""
        while self.frames < frames:
            if stop is not None and stop.is_set():
                return False
            wait = _READ_SLICE
            if deadline is not None:
                wait = min(wait, max(0.0, deadline - _time.monotonic()))
            chunk = self.native.read(wait)
            if chunk is not None:
                self._push(chunk)
            elif deadline is not None and _time.monotonic() >= deadline:
                return False
        return True

    def poll(self) -> None:
        """Take in what has arrived, without waiting."""
        while True:
            chunk = self.native.read(0)
            if chunk is None:
                return
            self._push(chunk)

    def take(self, frames: int) -> "tuple[_np.ndarray, float]":
        """`frames` buffered frames (float32, (frames, channels)) and the capture time of
        the first, robot clock in seconds."""
        parts = []
        need = frames
        adc = None
        while need:
            entry = self.chunks[0]
            samples, capture_us, off = entry
            if adc is None:
                adc = capture_us / 1e6 + off / self.rate
            k = min(len(samples) - off, need)
            parts.append(samples[off:off + k])
            if off + k == len(samples):
                self.chunks.popleft()
            else:
                entry[2] = off + k
            need -= k
        self.frames -= frames
        if not parts:
            return _np.zeros((0, self.channels), dtype=_np.float32), 0.0
        out = _np.concatenate(parts) if len(parts) > 1 else parts[0].copy()
        return out, adc if adc is not None else 0.0

    def overflowed(self) -> bool:
        """Whether audio was lost since the last call."""
        lost = self._lost()
        flag = lost > self.lost_base or self.lost_seen
        self.lost_base = lost
        self.lost_seen = False
        return flag


class _Writer:
    """Samples to the speaker, paced to real time like a sound card's buffer."""

    def __init__(self, native: Any, channels: int, ahead: float) -> None:
        self.native = native
        self.channels = channels
        self.rate = native.rate
        self.frame = native.frame_samples
        self.ahead = ahead
        self.lock = threading.Lock()
        self.reset()

    def reset(self) -> None:
        self.t0: Optional[float] = None
        self.written = 0

    def _queued(self, now: float) -> float:
        """Frames written and not played yet (negative: the speaker ran dry)."""
        if self.t0 is None:
            return 0.0
        return self.written - (now - self.t0) * self.rate

    def available(self) -> int:
        return max(0, int(self.ahead * self.rate - max(0.0, self._queued(_time.monotonic()))))

    def queued_seconds(self) -> float:
        return max(0.0, self._queued(_time.monotonic())) / self.rate

    def write(self, samples: "_np.ndarray", abort: Optional[threading.Event] = None) -> bool:
        """Send float32 `(n, channels)` samples, blocking while the queue is full; whether
        the speaker ran dry before this write."""
        with self.lock:
            now = _time.monotonic()
            underflowed = False
            if self.t0 is None:
                self.t0 = now
                self.written = 0
            elif self._queued(now) < -JITTER_TARGET * self.rate:
                underflowed = True
                self.t0 = now - self.written / self.rate
            n = len(samples)
            pos = 0
            limit = self.ahead * self.rate
            while pos < n:
                if abort is not None and abort.is_set():
                    break
                room = limit - self._queued(_time.monotonic())
                want = min(n - pos, self.frame)
                if room < want:
                    _time.sleep(min(_POLL, (want - room) / self.rate))
                    continue
                k = min(n - pos, int(room))
                block = _np.ascontiguousarray(samples[pos:pos + k], dtype="<f4")
                self.native.write(block.tobytes())
                self.written += k
                pos += k
            return underflowed

    def finish(self, wait: bool, abort: Optional[threading.Event] = None) -> None:
        """Send a partial frame (padded with silence); with `wait`, until it has played."""
        with self.lock:
            pad = -self.written % self.frame
            self.native.flush()
            self.written += pad
            if not wait or self.t0 is None:
                return
            end = self.t0 + self.written / self.rate + JITTER_TARGET
        while True:
            left = end - _time.monotonic()
            if left <= 0 or (abort is not None and abort.is_set()):
                return
            _time.sleep(min(_POLL, left))


# ---------------------------------------------------------------------------------------
# Streams

_MODERN = inspect.Signature([
    inspect.Parameter(n, inspect.Parameter.POSITIONAL_OR_KEYWORD, default=None)
    for n in ("samplerate", "blocksize", "device", "channels", "dtype", "latency",
              "extra_settings", "callback", "finished_callback", "clip_off", "dither_off",
              "never_drop_input", "prime_output_buffers_using_stream_callback")
] + [inspect.Parameter(n, inspect.Parameter.KEYWORD_ONLY, default=None) for n in _XOQ_OPTIONS])

# XoQ 0.3.6's xoq_sounddevice: Stream(source, samplerate=48000, channels=1, blocksize=960).
_LEGACY = inspect.Signature([
    inspect.Parameter("source", inspect.Parameter.POSITIONAL_OR_KEYWORD),
    inspect.Parameter("samplerate", inspect.Parameter.POSITIONAL_OR_KEYWORD, default=48000),
    inspect.Parameter("channels", inspect.Parameter.POSITIONAL_OR_KEYWORD, default=1),
    inspect.Parameter("blocksize", inspect.Parameter.POSITIONAL_OR_KEYWORD, default=960),
    inspect.Parameter("timeout", inspect.Parameter.POSITIONAL_OR_KEYWORD, default=None),
] + [inspect.Parameter(n, inspect.Parameter.KEYWORD_ONLY, default=None)
     for n in _XOQ_OPTIONS + ("dtype",)])


def _pair(value: Any, kind: str) -> Any:
    """The input (kind 'input') or output value of a setting that may be a pair."""
    if isinstance(value, _InputOutputPair):
        return value[kind]
    if isinstance(value, (tuple, list)) and len(value) == 2:
        return value[0 if kind == "input" else 1]
    return value


class _StreamBase:
    """What every stream shares; the public classes choose the directions and data form."""

    _kind = "duplex"
    _raw = False

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self._closed = True  # until fully open: close()/__del__ must not trip
        self._natives: list = []
        legacy = (bool(args) and isinstance(args[0], str)) or "source" in kwargs
        try:
            if legacy:
                self._open_legacy(_LEGACY.bind(*args, **kwargs).arguments)
            else:
                self._open(_MODERN.bind(*args, **kwargs).arguments)
        except BaseException:
            self._closed = True
            for n in self._natives:
                try:
                    _close_native(n)
                except Exception:
                    pass
            raise

    # -- opening --------------------------------------------------------------------------

    def _directions(self) -> list:
        return {"input": ["input"], "output": ["output"], "duplex": ["input", "output"]}[self._kind]

    def _open(self, a: dict) -> None:
        self._legacy = False
        name = type(self).__name__
        opts = {k: a[k] for k in _XOQ_OPTIONS if a.get(k) is not None}
        side = self._directions()[0]
        extra = _pair(a.get("extra_settings"), side)
        if extra is None:
            extra = _pair(default.extra_settings, side)
        if isinstance(extra, XoqSettings):
            opts = {**extra._options(), **opts}
        elif isinstance(extra, dict):
            opts = {**{k: v for k, v in extra.items() if k in _XOQ_OPTIONS}, **opts}
        # clip_off, dither_off, never_drop_input, prime_output_buffers_using_stream_callback:
        # PortAudio host settings with no meaning here; accepted and ignored.

        samplerate = a.get("samplerate")
        if samplerate is None:
            samplerate = default.samplerate
        if samplerate is not None:
            if float(samplerate) != int(float(samplerate)) or float(samplerate) <= 0:
                raise PortAudioError(f"Error opening {name}: invalid sample rate {samplerate}",
                                     "invalid")
            samplerate = int(float(samplerate))
        blocksize = a.get("blocksize")
        if blocksize is None:
            blocksize = default.blocksize
        blocksize = int(blocksize or 0)
        if blocksize < 0:
            raise ValueError(f"blocksize {blocksize}: use 0 (one packet) or a number of frames")

        def setting(name: str, kind: str) -> Any:
            value = _pair(a.get(name), kind)
            return _pair(getattr(default, name), kind) if value is None else value

        devices, channels, dtypes, latencies = {}, {}, {}, {}
        for kind in self._directions():
            devices[kind] = _address(setting("device", kind), kind)
            ch = setting("channels", kind)
            channels[kind] = None if ch is None else int(ch)
            dtypes[kind] = _check_dtype(setting("dtype", kind) or "float32")
            latencies[kind] = setting("latency", kind)

        self._callback = a.get("callback")
        self._finished_callback = a.get("finished_callback")
        self._blocksize = blocksize
        self._connect(name, devices, channels, samplerate, opts, talk_now=True)
        self._dtypes = dtypes
        self._setup(latencies)

    def _open_legacy(self, a: dict) -> None:
        self._legacy = True
        name = type(self).__name__
        opts = {k: a[k] for k in _XOQ_OPTIONS if a.get(k) is not None}
        kinds = self._directions()
        address = _address(a["source"], "audio")
        self._callback = None
        self._finished_callback = None
        self._blocksize = int(a.get("blocksize") or 960)
        dtype = _check_dtype(a.get("dtype") or "float32")
        # A duplex stream of XoQ 0.3.6 is mostly read from: it takes the speaker (one
        # talker per device) only when it is first written to.
        self._connect(name, {k: address for k in kinds}, {k: a.get("channels") for k in kinds},
                      a.get("samplerate"), opts, talk_now=self._kind == "output")
        self._dtypes = {k: dtype for k in kinds}
        self._setup({k: None for k in kinds})
        self.start()

    def _connect(self, name: str, devices: dict, channels: dict, samplerate: Optional[int],
                 opts: dict, talk_now: bool) -> None:
        self._opts = opts
        self._devices = devices
        self._in = self._out = None
        if "input" in devices:
            same = "output" in devices and devices["output"] == devices["input"] and talk_now
            self._in = _connect(devices["input"], name, samplerate=samplerate,
                                channels=channels["input"], listen=True, talk=same, opts=opts)
            self._natives.append(self._in)
            if same:
                self._out = self._in
        if "output" in devices and self._out is None and talk_now:
            self._out = _connect(devices["output"], name, samplerate=samplerate,
                                 channels=channels["output"], listen=False, talk=True,
                                 opts=opts)
            self._natives.append(self._out)

    def _setup(self, latencies: dict) -> None:
        first = self._in or self._out
        self._samplerate = first.rate
        if self._in is not None and self._out is not None and self._in.rate != self._out.rate:
            raise PortAudioError(
                f"the input runs at {self._in.rate} Hz and the output at {self._out.rate} Hz: "
                "a duplex stream needs one rate", "invalid")
        self._frame = first.frame_samples
        self._frame_ms = first.frame_ms
        self._channels = {}
        if self._in is not None:
            self._channels["input"] = self._in.channels
        if "output" in self._directions():
            self._channels["output"] = (self._out.channels if self._out is not None
                                        else self._channels.get("input"))
        self._latency = {k: self._frame_ms / 1000.0 + JITTER_TARGET for k in self._directions()}
        self._reader = _Reader(self._in, self._in.channels) if self._in is not None else None
        self._writer = None
        if self._out is not None:
            self._writer = self._make_writer(self._out, latencies.get("output"))
        self._out_latency_asked = latencies.get("output")
        # The robot clock (the time base of capture times) relative to this process's.
        self._clock_offset = first.robot_now_us / 1e6 - _time.time()
        self._started = False
        self._active = False
        self._stop_event = threading.Event()
        self._abort_event = threading.Event()
        self._thread: Optional[threading.Thread] = None
        self._closed = False

    def _make_writer(self, native: Any, latency: Any) -> _Writer:
        frame_s = native.frame_samples / native.rate
        ahead = max(2 * frame_s + JITTER_TARGET, self._blocksize / native.rate + frame_s)
        if isinstance(latency, (int, float)):
            ahead = max(ahead, float(latency))
        return _Writer(native, native.channels, min(MAX_AHEAD, ahead))

    def _ensure_talker(self) -> None:
        """XoQ 0.3.6 duplex streams take the speaker at their first write."""
        if self._writer is not None:
            return
        if "output" not in self._directions():
            raise PortAudioError("this stream has no output", "invalid")
        self._out = _connect(self._devices["output"], type(self).__name__,
                             samplerate=self._samplerate, channels=self._channels["output"],
                             listen=False, talk=True, opts=self._opts)
        self._natives.append(self._out)
        self._writer = self._make_writer(self._out, self._out_latency_asked)

    # -- properties -----------------------------------------------------------------------

    def _both(self, values: dict) -> Any:
        if self._kind == "duplex":
            return (values.get("input"), values.get("output"))
        return values[self._directions()[0]]

    @property
    def samplerate(self) -> float:
        """Frames per second (the device's)."""
        return float(self._samplerate)

    @property
    def blocksize(self) -> int:
        """Frames per callback (0: one packet, `frame_ms` long)."""
        return self._blocksize

    @property
    def channels(self) -> Any:
        """Channels (a pair for a duplex stream)."""
        return self._both(self._channels)

    @property
    def dtype(self) -> Any:
        """Sample format of the data (a pair for a duplex stream)."""
        return self._both(self._dtypes)

    @property
    def samplesize(self) -> Any:
        """Bytes per sample (a pair for a duplex stream)."""
        return self._both({k: _SAMPLESIZE[v] for k, v in self._dtypes.items()})

    @property
    def device(self) -> Any:
        """The device's address (a pair for a duplex stream)."""
        return self._both(self._devices)

    @property
    def latency(self) -> Any:
        """Seconds: one packet plus the speaker's jitter-buffer target (a pair for duplex)."""
        return self._both(self._latency)

    @property
    def codec(self) -> str:
        """How samples travel: ``'opus'``, ``'s16'`` or ``'f32'`` (xoq)."""
        return (self._in or self._out).codec

    @property
    def frame_ms(self) -> int:
        """Packet duration in ms (xoq)."""
        return self._frame_ms

    @property
    def device_name(self) -> str:
        """The name the server gives its device, e.g. ``'sim:tone:440'`` (xoq)."""
        return (self._in or self._out).device

    @property
    def active(self) -> bool:
        """Whether audio is being processed (started, and the callback has not ended)."""
        if self._callback is not None:
            return self._active
        return self._started and not self._closed

    @property
    def stopped(self) -> bool:
        """Whether the stream is stopped (not started, or stopped/aborted since)."""
        return not self._started

    @property
    def closed(self) -> bool:
        """Whether ``close()`` was called."""
        return self._closed

    @property
    def time(self) -> float:
        """The robot's clock now, in seconds: the time base of the callback's times."""
        return _time.time() + self._clock_offset

    @property
    def cpu_load(self) -> float:
        """Not measured here: always 0.0."""
        return 0.0

    # -- life cycle -----------------------------------------------------------------------

    def _check_open(self) -> None:
        if self._closed:
            raise PortAudioError("Stream is closed", "closed")

    def start(self) -> None:
        """Start the stream: input from now on, the callback thread if there is one."""
        self._check_open()
        if self._started:
            return
        if self._reader is not None:
            try:
                self._reader.reset()
            except _xoq.XoqError as err:
                raise _error(err, "Error starting stream") from None
        if self._writer is not None:
            self._writer.reset()
        self._stop_event.clear()
        self._abort_event.clear()
        self._started = True
        if self._callback is not None:
            self._active = True
            self._thread = threading.Thread(target=self._run, name="xoq-sounddevice",
                                            daemon=True)
            self._thread.start()

    def _end(self, abort: bool, ignore_errors: bool) -> None:
        if not self._started:
            return
        if abort:
            self._abort_event.set()
        self._stop_event.set()
        t = self._thread
        if t is not None:
            if t is not threading.current_thread():
                while t.is_alive():
                    t.join(_POLL)
                self._thread = None
        else:
            try:
                if self._writer is not None and not abort:
                    self._writer.finish(wait=True)
            except _xoq.XoqError as err:
                if not ignore_errors:
                    raise _error(err, "Error stopping stream") from None
            finally:
                self._started = False
                self._finished()
        self._started = False

    def stop(self, ignore_errors: bool = True) -> None:
        """Stop, after the audio already written has played."""
        self._end(abort=False, ignore_errors=ignore_errors)

    def abort(self, ignore_errors: bool = True) -> None:
        """Stop at once; audio not played yet is discarded."""
        self._end(abort=True, ignore_errors=ignore_errors)

    def close(self, ignore_errors: bool = True) -> None:
        """Abort if active, then disconnect (frees the speaker)."""
        if self._closed:
            return
        try:
            self._end(abort=True, ignore_errors=ignore_errors)
        finally:
            self._closed = True
            for n in self._natives:
                try:
                    _close_native(n)
                except _xoq.XoqError as err:
                    if not ignore_errors:
                        raise _error(err, "Error closing stream") from None

    def __enter__(self) -> "_StreamBase":
        self.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop()
        self.close()

    def __del__(self) -> None:
        try:
            if not getattr(self, "_closed", True):
                self.close()
        except Exception:
            pass

    def __repr__(self) -> str:
        if not hasattr(self, "_samplerate"):
            return f"<xoq.sounddevice.{type(self).__name__} (not open)>"
        state = "closed" if self._closed else ("active" if self.active else "stopped")
        return (f"<xoq.sounddevice.{type(self).__name__} {self.device!r} "
                f"{self._samplerate} Hz, channels={self.channels}, dtype={self.dtype!r}, "
                f"{state}>")

    def _finished(self) -> None:
        self._active = False
        if self._finished_callback is not None:
            try:
                self._finished_callback()
            except Exception:
                traceback.print_exc()

    # -- the callback thread --------------------------------------------------------------

    def _run(self) -> None:
        frames = self._blocksize or self._frame
        has_in = self._reader is not None
        has_out = self._writer is not None
        ch_in = self._channels.get("input")
        ch_out = self._channels.get("output")
        dt_in = self._dtypes.get("input")
        dt_out = self._dtypes.get("output")
        underflowed = False
        play_out = True
        try:
            while not self._stop_event.is_set():
                status = CallbackFlags()
                adc = 0.0
                indata = None
                if has_in:
                    if not self._reader.fill(frames, self._stop_event):
                        break
                    block, adc = self._reader.take(frames)
                    if self._reader.overflowed():
                        status.input_overflow = True
                    block = _from_float(block, dt_in)
                    indata = bytes(block.tobytes()) if self._raw else block
                outdata = None
                if has_out:
                    if underflowed:
                        status.output_underflow = True
                    if self._raw:
                        outdata = bytearray(frames * ch_out * _SAMPLESIZE[dt_out])
                    else:
                        outdata = _np.zeros((frames, ch_out), dtype=dt_out)
                now = self.time
                dac = now + self._writer.queued_seconds() + JITTER_TARGET if has_out else 0.0
                t = _Time(adc, dac, now)
                stop_after = False
                try:
                    if has_in and has_out:
                        self._callback(indata, outdata, frames, t, status)
                    elif has_in:
                        self._callback(indata, frames, t, status)
                    else:
                        self._callback(outdata, frames, t, status)
                except CallbackStop:
                    stop_after = True
                except CallbackAbort:
                    play_out = False
                    break
                if has_out:
                    out = (_np.frombuffer(bytes(outdata), dtype=dt_out).reshape(-1, ch_out)
                           if self._raw else outdata)
                    underflowed = self._writer.write(_to_float(out), self._abort_event)
                if stop_after:
                    break
        except Exception as err:  # noqa: BLE001 - sounddevice prints and aborts
            play_out = False
            if isinstance(err, _xoq.XoqError):
                print(f"xoq.sounddevice: the stream ended: {err}", file=sys.stderr)
            else:
                traceback.print_exc()
        finally:
            try:
                if has_out and not self._abort_event.is_set():
                    self._writer.finish(wait=play_out, abort=self._abort_event)
            except _xoq.XoqError as err:
                print(f"xoq.sounddevice: the stream ended: {err}", file=sys.stderr)
            self._finished()

    # -- blocking I/O ---------------------------------------------------------------------

    def _blocking(self, what: str) -> None:
        self._check_open()
        if self._callback is not None:
            raise PortAudioError(f"Can not {what} a callback stream", "invalid")
        if not self._started:
            raise PortAudioError(f"Can not {what} a stopped stream: call start() first",
                                 "stopped")

    @property
    def read_available(self) -> int:
        """Frames that can be read without waiting."""
        self._check_open()
        if self._reader is None:
            raise PortAudioError("this stream has no input", "invalid")
        r = self._reader
        try:
            if r.lock.acquire(blocking=False):
                try:
                    r.poll()
                    return r.frames
                finally:
                    r.lock.release()
            # A read is waiting in another thread: what it has plus what is queued.
            return r.frames + self._in.available * self._frame
        except _xoq.XoqError as err:
            raise _error(err, "Error reading stream") from None

    @property
    def write_available(self) -> int:
        """Frames that can be written without waiting."""
        self._check_open()
        if "output" not in self._directions():
            raise PortAudioError("this stream has no output", "invalid")
        if self._writer is None:
            return int(MAX_AHEAD * self._samplerate)
        return self._writer.available()

    def _read(self, frames: int) -> "tuple[_np.ndarray, bool]":
        self._blocking("read")
        if self._reader is None:
            raise PortAudioError("this stream has no input", "invalid")
        frames = int(frames)
        if frames < 0:
            raise ValueError("frames must be >= 0")
        with self._reader.lock:
            try:
                if not self._reader.fill(frames, self._stop_event):
                    raise PortAudioError("Error reading stream: the stream was stopped",
                                         "stopped")
            except _xoq.XoqError as err:
                raise _error(err, "Error reading stream") from None
            block, _ = self._reader.take(frames)
            overflowed = self._reader.overflowed()
        return _from_float(block, self._dtypes["input"]), overflowed

    def _write(self, data: "_np.ndarray") -> bool:
        self._blocking("write")
        self._ensure_talker()
        ch = self._channels["output"]
        if data.ndim == 1 and ch == 1:
            data = data.reshape(-1, 1)
        if data.ndim != 2 or data.shape[1] != ch:
            raise ValueError(f"number of channels must match: data has shape {data.shape}, "
                             f"the stream {ch} channel(s)")
        try:
            if self._out is not self._in:
                # A talk-only session sees nothing on its input but its end: a takeover.
                self._out.read(0)
            return self._writer.write(_to_float(data), self._abort_event)
        except _xoq.XoqError as err:
            raise _error(err, "Error writing stream") from None


class RawInputStream(_StreamBase):
    """Input from a remote microphone; ``read`` gives a bytes-like buffer."""

    _kind = "input"
    _raw = True

    def read(self, frames: int) -> "tuple[bytearray, bool]":
        """``(buffer, overflowed)``: exactly ``frames`` frames of interleaved samples."""
        data, overflowed = self._read(frames)
        return bytearray(data.tobytes()), overflowed


class RawOutputStream(_StreamBase):
    """Output to a remote speaker; ``write`` takes a bytes-like buffer."""

    _kind = "output"
    _raw = True

    def write(self, data: Any) -> bool:
        """Write a buffer of interleaved samples in the stream's dtype; ``underflowed``."""
        dt = self._dtypes["output"]
        arr = _np.frombuffer(memoryview(data).cast("B"), dtype=dt)
        ch = self._channels["output"]
        if len(arr) % ch:
            raise ValueError(f"{len(arr)} samples is not a whole number of {ch}-channel frames")
        return self._write(arr.reshape(-1, ch))


class RawStream(RawInputStream, RawOutputStream):
    """Input and output (one connection when both are the same device); raw buffers."""

    _kind = "duplex"
    _raw = True


class InputStream(_StreamBase):
    """Input from a remote microphone: ``read(frames)`` → ``(ndarray, overflowed)``.

    Arguments as sounddevice's (``samplerate=None, blocksize=None, device=None,
    channels=None, dtype=None, latency=None, extra_settings=None, callback=None,
    finished_callback=None, ...``) plus xoq's keywords (``codec``, ``frame_ms``,
    ``takeover``, ``key``, ``offline``, ``ephemeral``); see the module's documentation.
    """

    _kind = "input"

    def read(self, frames: Optional[int] = None) -> Any:
        """``(data, overflowed)``: ``data`` of shape ``(frames, channels)`` in the stream's
        dtype, waiting until that many frames arrived. (XoQ 0.3.6 streams: just ``data``,
        ``frames`` defaulting to the blocksize.)"""
        if frames is None:
            if not self._legacy:
                raise TypeError("read() missing 1 required positional argument: 'frames'")
            frames = self._blocksize
        data, overflowed = self._read(frames)
        return data if self._legacy else (data, overflowed)

    def read_chunk(self) -> "_np.ndarray":
        """The next ``blocksize`` frames as an array (XoQ 0.3.6)."""
        return self._read(self._blocksize or self._frame)[0]


class OutputStream(_StreamBase):
    """Output to a remote speaker: ``write(data)`` → ``underflowed``.

    Arguments as :class:`InputStream`'s.
    """

    _kind = "output"

    def write(self, data: Any) -> Any:
        """Write ``(frames, channels)`` samples (1-D for mono), blocking while more than
        about ``latency`` seconds are queued; whether the speaker ran dry before it.
        Float data of any precision and the integer dtypes are converted."""
        underflowed = self._write(_np.asarray(data))
        return None if self._legacy else underflowed

    def write_chunk(self, data: Any) -> None:
        """Write an array of samples (XoQ 0.3.6)."""
        self._write(_np.asarray(data))


class Stream(InputStream, OutputStream):
    """Input and output (one connection when ``device`` names one device)."""

    _kind = "duplex"


# ---------------------------------------------------------------------------------------
# Convenience functions


class _Playback:
    """State of the last ``rec``/``play``/``playrec`` (for ``wait``, ``stop``, ``get_status``)."""

    def __init__(self) -> None:
        self.event = threading.Event()
        self.status = CallbackFlags()
        self.stream: Optional[_StreamBase] = None
        self.frame = 0

    def finished(self) -> None:
        self.event.set()


_last: Optional[_Playback] = None


def _mapping(mapping: Any) -> "tuple[list, int]":
    """0-based channel indices and the stream channel count needed for them."""
    if mapping is None:
        return [], 0
    idx = [int(m) for m in _np.atleast_1d(mapping)]
    if any(m < 1 for m in idx):
        raise ValueError("channel numbers in a mapping start at 1")
    return [m - 1 for m in idx], max(idx)


def _split_kwargs(kwargs: dict) -> dict:
    allowed = {"device", "latency", "extra_settings", "clip_off", "dither_off",
               "never_drop_input", "prime_output_buffers_using_stream_callback", "blocksize",
               *_XOQ_OPTIONS}
    bad = set(kwargs) - allowed
    if bad:
        raise TypeError(f"unexpected keyword argument(s): {', '.join(sorted(bad))}")
    return kwargs


def _legacy_call(args: tuple, kwargs: dict) -> bool:
    return (bool(args) and isinstance(args[0], str)) or "source" in kwargs


def _rec_legacy(source: str, frames: int, samplerate: int = 48000, channels: int = 1,
                **kwargs: Any) -> "_np.ndarray":
    with InputStream(samplerate=samplerate, device=source, channels=channels,
                     **_split_kwargs(kwargs)) as s:
        return s.read(int(frames))[0]


def _play_legacy(source: str, data: Any, samplerate: int = 48000, **kwargs: Any) -> None:
    play(data, samplerate, device=source, blocking=True, **kwargs)


def rec(*args: Any, **kwargs: Any) -> Any:
    """``rec(frames=None, samplerate=None, channels=None, dtype=None, out=None,
    mapping=None, blocking=False, **kwargs)``: record ``frames`` frames from the remote
    microphone; returns the array at once (it fills in the background: ``wait()``), or once
    full with ``blocking=True``.

    ``rec("<address>", frames, samplerate=48000, channels=1)`` (XoQ 0.3.6) blocks and
    returns the array.
    """
    if _legacy_call(args, kwargs):
        return _rec_legacy(*args, **kwargs)
    return _rec(*args, **kwargs)


def _rec(frames: Any = None, samplerate: Any = None, channels: Optional[int] = None,
         dtype: Any = None, out: Any = None, mapping: Any = None, blocking: bool = False,
         **kwargs: Any) -> Any:
    kwargs = _split_kwargs(kwargs)
    if out is not None:
        out = _np.asarray(out)
        if out.ndim == 1:
            out = out.reshape(-1, 1)
        frames = len(out) if frames is None else int(frames)
        dtype = out.dtype if dtype is None else dtype
    if frames is None:
        raise TypeError("rec() needs frames (or out=)")
    frames = int(frames)
    idx, needed = _mapping(mapping)
    stream_channels = needed if mapping is not None else channels
    stop()
    ctx = _Playback()
    holder: dict = {}

    def callback(indata, n, t, status):
        ctx.status |= status
        buf = holder["out"]
        k = min(n, frames - ctx.frame)
        cols = indata[:k, idx] if idx else indata[:k]
        buf[ctx.frame:ctx.frame + k] = cols
        ctx.frame += k
        if ctx.frame >= frames:
            raise CallbackStop

    stream = InputStream(samplerate=samplerate, channels=stream_channels, dtype=dtype,
                         callback=callback, finished_callback=ctx.finished, **kwargs)
    width = len(idx) if idx else stream.channels
    if out is None:
        out = _np.empty((frames, width), dtype=stream.dtype)
    elif out.shape[1] != width:
        stream.close()
        raise ValueError(f"out has {out.shape[1]} channel(s), the recording {width}")
    holder["out"] = out
    ctx.stream = stream
    _start(ctx, frames)
    if blocking:
        wait()
    return out


def play(*args: Any, **kwargs: Any) -> None:
    """``play(data, samplerate=None, mapping=None, blocking=False, loop=False, **kwargs)``:
    play ``data`` (``(frames, channels)`` or 1-D) on the remote speaker; returns at once
    (``wait()``), or once played with ``blocking=True``. ``loop`` repeats until ``stop()``.

    Data with fewer channels than the device goes to the first ones (or the ``mapping``'s,
    numbered from 1). ``play("<address>", data, samplerate=48000)`` (XoQ 0.3.6) blocks.
    """
    if _legacy_call(args, kwargs):
        return _play_legacy(*args, **kwargs)
    return _play(*args, **kwargs)


def _play(data: Any, samplerate: Any = None, mapping: Any = None, blocking: bool = False,
          loop: bool = False, **kwargs: Any) -> None:
    kwargs = _split_kwargs(kwargs)
    data = _np.asarray(data)
    if data.ndim == 1:
        data = data.reshape(-1, 1)
    if data.ndim != 2:
        raise ValueError("data must be 1-D or (frames, channels)")
    if data.dtype.kind == "f":
        data = data.astype(_np.float32)
    dtype = _check_dtype(data.dtype)
    idx, _ = _mapping(mapping)
    if idx and len(idx) != data.shape[1]:
        raise ValueError(f"mapping has {len(idx)} channel(s), the data {data.shape[1]}")
    stop()
    ctx = _Playback()
    frames = len(data)
    holder: dict = {}

    def callback(outdata, n, t, status):
        ctx.status |= status
        cols = holder["cols"]
        outdata.fill(0 if dtype != "uint8" else 128)
        pos = 0
        while pos < n:
            k = min(n - pos, frames - ctx.frame)
            outdata[pos:pos + k, cols] = data[ctx.frame:ctx.frame + k]
            ctx.frame += k
            pos += k
            if ctx.frame >= frames:
                if not loop or frames == 0:
                    raise CallbackStop
                ctx.frame = 0

    stream = OutputStream(samplerate=samplerate, dtype=dtype, callback=callback,
                          finished_callback=ctx.finished, **kwargs)
    ch = stream.channels
    cols = idx if idx else list(range(data.shape[1]))
    if max(cols, default=-1) >= ch:
        stream.close()
        raise PortAudioError(
            f"Error opening OutputStream: {data.shape[1] if not idx else max(cols) + 1} "
            f"channel(s) asked, the device has {ch}", "invalid")
    holder["cols"] = cols
    ctx.stream = stream
    _start(ctx, frames)
    if blocking:
        wait()


def playrec(data: Any, samplerate: Any = None, channels: Optional[int] = None,
            dtype: Any = None, out: Any = None, input_mapping: Any = None,
            output_mapping: Any = None, blocking: bool = False, **kwargs: Any) -> Any:
    """Play ``data`` and record as many frames at the same time (one duplex stream)."""
    kwargs = _split_kwargs(kwargs)
    data = _np.asarray(data)
    if data.ndim == 1:
        data = data.reshape(-1, 1)
    if data.dtype.kind == "f":
        data = data.astype(_np.float32)
    _check_dtype(data.dtype)
    frames = len(data)
    in_idx, in_needed = _mapping(input_mapping)
    out_idx, _ = _mapping(output_mapping)
    stop()
    ctx = _Playback()
    holder: dict = {}
    in_dtype = dtype if dtype is not None else (out.dtype if out is not None else None)

    def callback(indata, outdata, n, t, status):
        ctx.status |= status
        k = min(n, frames - ctx.frame)
        buf = holder["out"]
        buf[ctx.frame:ctx.frame + k] = indata[:k, in_idx] if in_idx else indata[:k]
        outdata[:] = 0
        outdata[:k, holder["cols"]] = _from_float(_to_float(data[ctx.frame:ctx.frame + k]),
                                                  outdata.dtype.name)
        ctx.frame += k
        if ctx.frame >= frames:
            raise CallbackStop

    in_ch = in_needed if input_mapping is not None else channels
    stream = Stream(samplerate=samplerate, channels=(in_ch, None),
                    dtype=(in_dtype, "float32"), callback=callback,
                    finished_callback=ctx.finished, **kwargs)
    ch_in, ch_out = stream.channels
    cols = out_idx if out_idx else list(range(data.shape[1]))
    if max(cols, default=-1) >= ch_out:
        stream.close()
        raise PortAudioError(f"Error opening Stream: the device has {ch_out} output channel(s)",
                             "invalid")
    holder["cols"] = cols
    width = len(in_idx) if in_idx else ch_in
    if out is None:
        out = _np.empty((frames, width), dtype=stream.dtype[0])
    holder["out"] = out
    ctx.stream = stream
    _start(ctx, frames)
    if blocking:
        wait()
    return out


def _start(ctx: _Playback, frames: int) -> None:
    global _last
    _last = ctx
    if frames == 0:
        ctx.stream.close()
        ctx.event.set()
        return
    ctx.stream.start()


def wait(ignore_errors: bool = True) -> Optional[CallbackFlags]:
    """Wait for the last ``rec``/``play``/``playrec`` to finish, then close its stream.

    Returns its ``CallbackFlags`` if an overflow or underflow happened, else ``None``.
    """
    ctx = _last
    if ctx is None:
        return None
    while not ctx.event.wait(_POLL):
        pass
    if ctx.stream is not None:
        ctx.stream.close(ignore_errors)
    return ctx.status if ctx.status else None


def stop(ignore_errors: bool = True) -> None:
    """Stop the last ``rec``/``play``/``playrec`` (a recording keeps what it has)."""
    ctx = _last
    if ctx is not None and ctx.stream is not None:
        ctx.stream.stop(ignore_errors)
        ctx.stream.close(ignore_errors)
        ctx.event.set()


def get_status() -> CallbackFlags:
    """The ``CallbackFlags`` gathered by the last ``rec``/``play``/``playrec``."""
    if _last is None:
        raise RuntimeError("play()/rec()/playrec() was not called yet")
    return _last.status


def get_stream() -> _StreamBase:
    """The stream of the last ``rec``/``play``/``playrec``."""
    if _last is None or _last.stream is None:
        raise RuntimeError("play()/rec()/playrec() was not called yet")
    return _last.stream


def _describe(address: str, **opts: Any) -> dict:
    native = _connect(address, "query_devices", samplerate=None, channels=None, listen=False,
                      talk=False, opts=opts)
    try:
        latency = native.frame_ms / 1000.0 + JITTER_TARGET
        return {
            "name": native.device,
            "address": address,
            "index": 0,
            "hostapi": 0,
            "max_input_channels": native.channels,
            # The protocol does not say whether the device has a speaker; every xoq audio
            # server takes a talker, at the device's channel count.
            "max_output_channels": native.channels,
            "default_low_input_latency": latency,
            "default_low_output_latency": latency,
            "default_high_input_latency": latency,
            "default_high_output_latency": latency,
            "default_samplerate": float(native.rate),
        }
    finally:
        native.close()


def query_devices(device: Any = None, kind: Optional[str] = None, **opts: Any) -> Any:
    """Ask a remote audio server about its device (this connects to it).

    ``query_devices("<address>")`` → a dict as sounddevice's (``name``,
    ``max_input_channels``, ``max_output_channels``, ``default_samplerate``, ...; plus
    ``address``). With ``kind='input'``/``'output'`` and no device: ``default.device``'s.
    Without either: a :class:`DeviceList` of the default devices (empty when none is set:
    remote devices are not discovered).
    """
    if kind not in (None, "input", "output"):
        raise ValueError(f"kind {kind!r}: use 'input', 'output' or None")
    if device is None and kind is None:
        seen: list = []
        for d in default.device:
            if d is not None and d not in seen:
                seen.append(d)
        return DeviceList(_describe(_address(d, "audio"), **opts) for d in seen)
    if device is None:
        device = default.device[kind]
    info = _describe(_address(device, kind or "audio"), **opts)
    if kind == "input" and not info["max_input_channels"]:
        raise ValueError(f"{device!r} has no input")
    if kind == "output" and not info["max_output_channels"]:
        raise ValueError(f"{device!r} has no output")
    return info


def query_hostapis(index: Optional[int] = None) -> Any:
    """The one "host API" here: xoq."""
    api = {"name": "xoq", "devices": [], "default_input_device": -1,
           "default_output_device": -1}
    return api if index is not None else (api,)


def _check_settings(kind: str, device: Any, channels: Any, dtype: Any, extra_settings: Any,
                    samplerate: Any) -> None:
    if dtype is not None:
        _check_dtype(dtype)
    opts = {}
    if isinstance(extra_settings, XoqSettings):
        opts = extra_settings._options()
    elif isinstance(extra_settings, dict):
        opts = {k: v for k, v in extra_settings.items() if k in _XOQ_OPTIONS}
    dev = _address(default.device[kind] if device is None else device, kind)
    rate = default.samplerate if samplerate is None else samplerate
    ch = default.channels[kind] if channels is None else channels
    native = _connect(dev, f"{kind} check", samplerate=None if rate is None else int(rate),
                      channels=None if ch is None else int(ch), listen=False, talk=False,
                      opts=opts)
    native.close()


def check_input_settings(device: Any = None, channels: Any = None, dtype: Any = None,
                         extra_settings: Any = None, samplerate: Any = None) -> None:
    """Raise :class:`PortAudioError` if the device refuses these settings (connects)."""
    _check_settings("input", device, channels, dtype, extra_settings, samplerate)


def check_output_settings(device: Any = None, channels: Any = None, dtype: Any = None,
                          extra_settings: Any = None, samplerate: Any = None) -> None:
    """Raise :class:`PortAudioError` if the device refuses these settings (connects; does
    not take the speaker)."""
    _check_settings("output", device, channels, dtype, extra_settings, samplerate)


def sleep(msec: float) -> None:
    """Sleep ``msec`` milliseconds."""
    _time.sleep(msec / 1000.0)
