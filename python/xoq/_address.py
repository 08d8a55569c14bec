"""Recognising xoq addresses without loading the native module.

Used on every ``serial.Serial(...)``/``can.Bus(...)`` call once xoq is installed, so it must
be cheap and must never claim a local device path (``/dev/ttyUSB0``, ``COM3``, ``can0``).
The rules match the Rust parser (``xoq_transport::Address``); a test keeps them in step.
"""

from __future__ import annotations

import re

#: Prefix accepted by the pyserial URL handler and by ``serial.Serial``.
SCHEME = "xoq://"

_HEX_ID = re.compile(r"[0-9a-fA-F]{64}")
_DIRECT = re.compile(r"[0-9a-fA-F]{64}@(\[[0-9a-fA-F:.]+\]|[^\s@:/\[\]]+):[0-9]{1,5}")
# A deployed machine's service by name: <machine-id>[@<ip>:<port>]/<service> (`xoq ls`).
_SERVICE = re.compile(
    r"[0-9a-fA-F]{64}(@(\[[0-9a-fA-F:.]+\]|[^\s@:/\[\]]+):[0-9]{1,5})?/[A-Za-z0-9._-]{1,64}"
)


def strip_scheme(address: str) -> str:
    """``xoq://<address>`` → ``<address>``; other strings unchanged."""
    if address[: len(SCHEME)].lower() == SCHEME:
        return address[len(SCHEME) :]
    return address


def is_remote(port: object) -> bool:
    """Whether ``port`` names a remote xoq device rather than a local one.

    Remote: ``xoq://…``, a 64-hex-digit endpoint id, ``<id>@<ip>:<port>``, a deployed
    machine's service (``<machine-id>/<service>``), or a relay URL (``http://…``/``https://…``
    with a broadcast path).
    """
    if not isinstance(port, str):
        return False
    if port[: len(SCHEME)].lower() == SCHEME:
        return True
    if port.startswith("http://") or port.startswith("https://"):
        return True
    return bool(_HEX_ID.fullmatch(port) or _DIRECT.fullmatch(port) or _SERVICE.fullmatch(port))


def is_p2p(source: object) -> bool:
    """Whether ``source`` is a P2P address (``xoq://…``, an endpoint id, ``<id>@ip:port``, or
    ``<machine-id>/<service>``).

    ``cv2.VideoCapture`` takes this test, not :func:`is_remote`: ``http://`` URLs belong to
    OpenCV's own network streams.
    """
    if not isinstance(source, str):
        return False
    if source[: len(SCHEME)].lower() == SCHEME:
        return True
    return bool(
        _HEX_ID.fullmatch(source) or _DIRECT.fullmatch(source) or _SERVICE.fullmatch(source)
    )
