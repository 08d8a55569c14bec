"""Teach pyserial and python-can about remote addresses, without ``import xoq``.

``xoq_autopatch.pth`` (installed into site-packages with the wheel) imports this module at interpreter
start. It imports neither pyserial nor python-can: it adds an import hook that patches each
library right after its own ``__init__`` has run, only in programs that use it:

* ``serial``: ``xoq`` joins ``serial.protocol_handler_packages`` (so ``xoq://`` URLs work) and
  ``serial.Serial`` becomes a subclass that hands remote addresses to
  :class:`xoq.serial_port.RemoteSerial`; local ports go to pyserial's own class untouched.
* ``can``: ``can.Bus``/``can.interface.Bus`` pick ``interface="xoq"`` when no interface is
  given and the channel is a remote address.
* ``cv2``: ``cv2.VideoCapture("<endpoint-id>@<ip>:<port>")`` opens a remote camera
  (:class:`xoq.cv2.VideoCapture`); indexes, files and ``http://`` streams stay OpenCV's.

Set ``XOQ_NO_PATCH=1`` to turn this off.
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import os
import sys
from types import ModuleType
from typing import Any, Callable, Optional

from ._address import is_remote


def patch_serial(serial: ModuleType) -> None:
    """Patch an imported pyserial (idempotent)."""
    if "xoq" not in serial.protocol_handler_packages:
        serial.protocol_handler_packages.append("xoq")
    local = serial.Serial
    if getattr(local, "_xoq_patched", False):
        return

    class Serial(local):  # type: ignore[misc, valid-type]
        _xoq_patched = True

        def __new__(cls, *args: Any, **kwargs: Any):
            port = args[0] if args else kwargs.get("port")
            if cls is Serial and is_remote(port):
                from .serial_port import RemoteSerial

                return RemoteSerial(*args, **kwargs)
            return super().__new__(cls)

        def open(self) -> None:
            if is_remote(self._port):
                # pyserial's other idiom: Serial(), then .port = "<address>", then open().
                # The object becomes the remote port, keeping every setting made so far.
                from .serial_port import RemoteSerial

                self.__class__ = RemoteSerial
                self._native_port = None
                self._offline = None
                self._key = None
                self._ephemeral = False
                self._reconnect = None
                RemoteSerial.open(self)
                return
            super().open()

    Serial.__name__ = Serial.__qualname__ = "Serial"
    Serial.__module__ = local.__module__
    Serial.__doc__ = local.__doc__
    serial.Serial = Serial
    from . import serial_port  # noqa: F401  (registers RemoteSerial as a virtual subclass)


def patch_can(can: ModuleType) -> None:
    """Patch an imported python-can (idempotent)."""
    import can.interface as iface

    original = iface.Bus
    if getattr(original, "_xoq_patched", False):
        return

    def Bus(channel: Any = None, interface: Optional[str] = None, *args: Any, **kwargs: Any):  # noqa: N802
        if interface is None and "bustype" not in kwargs and is_remote(channel):
            interface = "xoq"
        return original(channel, interface, *args, **kwargs)

    Bus.__doc__ = original.__doc__
    Bus.__wrapped__ = original  # type: ignore[attr-defined]
    Bus._xoq_patched = True  # type: ignore[attr-defined]
    iface.Bus = Bus
    can.Bus = Bus


def patch_cv2(cv2: ModuleType) -> None:
    """Patch an imported OpenCV (idempotent): remote P2P addresses open xoq cameras."""
    if not hasattr(cv2, "VideoCapture"):
        return  # OpenCV's bootstrap imports itself twice; the inner, complete module is patched
    from .cv2 import patch_cv2 as patch

    patch(cv2)


_PATCHES: dict[str, Callable[[ModuleType], None]] = {
    "serial": patch_serial,
    "can": patch_can,
    "cv2": patch_cv2,
}


class _PatchingLoader(importlib.abc.Loader):
    """Runs the real loader, then the patch."""

    def __init__(self, inner: Any, patch: Callable[[ModuleType], None]) -> None:
        self._inner = inner
        self._patch = patch

    def create_module(self, spec):  # noqa: D401
        return self._inner.create_module(spec)

    def exec_module(self, module: ModuleType) -> None:
        self._inner.exec_module(module)
        try:
            self._patch(module)
        except Exception as err:  # a patch must never break the library itself
            import warnings

            warnings.warn(f"xoq could not extend {module.__name__}: {err}", stacklevel=2)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


class _Finder(importlib.abc.MetaPathFinder):
    """Wraps the loader of ``serial`` and ``can`` as they are first imported."""

    def find_spec(self, fullname: str, path: Any, target: Any = None):
        patch = _PATCHES.get(fullname)
        if patch is None:
            return None
        for finder in sys.meta_path:
            if finder is self or not hasattr(finder, "find_spec"):
                continue
            spec = finder.find_spec(fullname, path, target)
            if spec is not None:
                break
        else:
            return None
        if spec.loader is not None and hasattr(spec.loader, "exec_module"):
            spec.loader = _PatchingLoader(spec.loader, patch)
        return spec


def install() -> None:
    """Install the hook (idempotent); patch libraries already imported."""
    if os.environ.get("XOQ_NO_PATCH", "") not in ("", "0"):
        return
    if not any(isinstance(f, _Finder) for f in sys.meta_path):
        sys.meta_path.insert(0, _Finder())
    for name, patch in _PATCHES.items():
        module = sys.modules.get(name)
        if module is not None:
            patch(module)


install()
