"""xoq: robot hardware over QUIC, for Python.

Remote serial ports and CAN buses behave like local ones in the libraries you already use:

* pyserial: ``serial.Serial("<address>")`` or ``serial.serial_for_url("xoq://<address>")``;
* python-can: ``can.Bus(channel="<address>", interface="xoq")`` (or just ``can.Bus("<address>")``).

Remote microphones and speakers (``xoq audio-server``) have python-sounddevice's interface in
``xoq.sounddevice`` (needs numpy): ``import xoq.sounddevice as sd``, then
``sd.rec(frames, device="<address>")``, ``sd.play(data, device="<address>")``,
``sd.InputStream``/``OutputStream``/``Stream`` with a callback or blocking ``read``/``write``.

An address is an endpoint id (``xoq id`` prints it), ``<id>@<ip>:<port>`` to dial directly,
or a MoQ relay URL such as ``http://127.0.0.1:4443/anon/xoq-so101`` (with ``?jwt=TOKEN`` for
a relay that checks tokens, or ``XOQ_RELAY_TOKEN`` in the environment). Set ``XOQ_OFFLINE=1``
(or pass ``offline=True``) to turn off iroh discovery on a LAN or in tests, and ``XOQ_LOG=debug``
for logs of the native layer.

Importing ``xoq`` is never needed: the package installs a hook (``xoq_autopatch.pth``) that teaches
pyserial and python-can about remote addresses when they are imported. ``XOQ_NO_PATCH=1``
turns the hook off.
"""

from __future__ import annotations

from ._address import is_remote, strip_scheme

__version__ = "0.4.0"

__all__ = ["is_remote", "strip_scheme", "endpoint_id", "__version__"]


def endpoint_id(key_path: "str | None" = None) -> str:
    """The endpoint id of the identity in ``key_path`` (created with mode 0600 if missing).

    Without a path: this user's client id, the one every port and bus opened without ``key=``
    presents (``XOQ_KEY``, else ``$XOQ_HOME/client.key``), as ``xoq id`` prints it. Give it to
    a server's ``--allow``.
    """
    from . import _xoq

    return _xoq.endpoint_id(key_path)
