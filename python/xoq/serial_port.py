"""A remote serial port as a real pyserial port.

:class:`RemoteSerial` is a ``serial.SerialBase`` subclass, so everything pyserial builds on top
(``readline``, ``read_until``, ``read_all``, iteration, ``get_settings``/``apply_settings``,
context manager, ``io`` wrappers) is pyserial's own code. Only the device I/O goes through the
native client.

The link survives blips: when the connection drops, the native client reconnects in the
background (same identity, line settings re-applied); ``read`` keeps following its
``timeout`` meanwhile and ``write`` waits (up to ``write_timeout``). Only when the link stays
down past the reconnect deadline (``reconnect=`` seconds, default 60) do calls raise
``SerialException``. :attr:`RemoteSerial.link` tells the state and the counters.

The client identity is this user's (``XOQ_KEY``, else ``$XOQ_HOME/client.key``: what
``xoq id`` prints) unless ``key=`` names a file or ``ephemeral=True`` asks for a throw-away
one. Opening the port again from the same identity replaces the older handle, as a second
``open()`` of a local port would not be refused; a handle dropped without ``close()`` frees the
port when it is garbage-collected.

Behaviour that differs from a local port, by necessity:

* ``flush()`` returns once the bytes are handed to the QUIC stream (they stay ordered before
  anything written later). Waiting for the far device to put them on the wire would cost a
  network round trip per packet, and servo SDKs call ``flush()`` before every packet. Call
  :meth:`RemoteSerial.drain` when you need that guarantee.
* ``out_waiting`` is 0: bytes never wait in a local driver buffer.
* With ``write_timeout`` set, ``write`` returns once the remote device accepted the bytes
  (one round trip), as a local ``write`` returns once the driver has them; without it, once
  they are on their way (the device's flow control still blocks when it stops reading).
* Through a MoQ relay only data flows: line settings and modem lines need a P2P address.
* ``cts``/``dsr``/``ri``/``cd`` are not carried by the protocol and read as ``False``.
* ``fileno()`` raises ``io.UnsupportedOperation``: there is no file descriptor to select on.
"""

from __future__ import annotations

import io
import os
from typing import Any, Optional

import serial
from serial.serialutil import (
    PortNotOpenError,
    SerialBase,
    SerialException,
    SerialTimeoutException,
    to_bytes,
)

from ._address import strip_scheme

__all__ = ["RemoteSerial"]


def _native():
    from . import _xoq

    return _xoq


def _raise(err: Exception, what: str) -> "NoReturn":  # noqa: F821
    """Re-raise a native error as the exception pyserial users catch."""
    x = _native()
    if isinstance(err, x.XoqTimeoutError):
        raise SerialTimeoutException(f"{what}: {err}") from err
    if isinstance(err, x.RefusedError):
        raise SerialException(
            f"{what}: {err} (the server must list this client with --allow, or the port is "
            "held by another client: pass --takeover on the server to let new clients in)"
        ) from err
    if isinstance(err, x.ConnectError):
        raise SerialException(
            f"{what}: {err} (check the address the server printed, and that the server runs)"
        ) from err
    if isinstance(err, x.ClosedError):
        raise SerialException(f"{what}: {err}") from err
    raise SerialException(f"{what}: {err}") from err


class RemoteSerial(SerialBase):
    """pyserial port on a remote xoq serial server.

    Accepts every ``serial.Serial`` argument. ``port`` is an xoq address, with or without
    ``xoq://`` (a relay URL may carry ``?jwt=TOKEN``, or set ``XOQ_RELAY_TOKEN``). Extra
    keywords: ``offline`` (no discovery; default from ``XOQ_OFFLINE``), ``key`` (path of this
    client's identity file; default: the user's), ``ephemeral`` (a throw-away identity) and
    ``reconnect`` (seconds the link may stay down before calls fail; 0 = never reconnect).
    """

    def __init__(self, *args: Any, offline: Optional[bool] = None, key: Optional[str] = None,
                 ephemeral: bool = False, reconnect: Optional[float] = None,
                 **kwargs: Any) -> None:
        self._native_port = None
        self._offline = offline
        self._key = os.fspath(key) if key is not None else None
        self._ephemeral = bool(ephemeral)
        self._reconnect = reconnect
        super().__init__(*args, **kwargs)

    # -- opening and closing ------------------------------------------------------------

    def open(self) -> None:
        """Connect to the remote port and apply the settings."""
        if self._port is None:
            raise SerialException("Port must be configured before it can be used.")
        if self.is_open:
            raise SerialException("Port is already open.")
        address = strip_scheme(self._port)
        relay = "://" in address
        try:
            self._native_port = _native().SerialPort(
                address,
                # A relay carries data only: the port keeps whatever settings it has.
                baudrate=None if relay else self._baudrate,
                bytesize=self._bytesize,
                parity=self._parity,
                stopbits=float(self._stopbits),
                xonxoff=bool(self._xonxoff),
                rtscts=bool(self._rtscts),
                offline=self._offline,
                key=self._key,
                ephemeral=self._ephemeral,
                reconnect=self._reconnect,
                exclusive=bool(self._exclusive),
            )
        except ValueError as err:
            raise ValueError(f"could not open port {self._port}: {err}") from err
        except Exception as err:  # native errors
            _raise(err, f"could not open port {self._port}")
        self.is_open = True

    def close(self) -> None:
        """Close the session; the server frees the port for the next client."""
        if self._native_port is not None:
            port, self._native_port = self._native_port, None
            port.close()
        self.is_open = False

    def from_url(self, url: str) -> str:
        """pyserial hook for URL handlers: ``xoq://<address>`` → ``<address>``."""
        return strip_scheme(url)

    def _p(self):
        if not self.is_open or self._native_port is None:
            raise PortNotOpenError()
        return self._native_port

    # -- data ---------------------------------------------------------------------------

    @property
    def in_waiting(self) -> int:
        """Bytes received and not read yet."""
        return self._p().in_waiting

    @property
    def out_waiting(self) -> int:
        """Always 0: written bytes are on their way, not in a local buffer."""
        self._p()
        return 0

    def read(self, size: int = 1) -> bytes:
        """Read up to ``size`` bytes, waiting as ``timeout`` says (see pyserial)."""
        port = self._p()
        if size <= 0:
            return b""
        try:
            return port.read(size, self._timeout, self._inter_byte_timeout)
        except KeyboardInterrupt:
            raise
        except Exception as err:
            _raise(err, "read failed")

    def write(self, data: Any) -> int:
        """Write ``data`` (bytes, bytearray, memoryview or a list of ints); returns what was
        written.

        ``write_timeout`` as in pyserial: ``None`` waits as long as the device (or a
        reconnect) needs; a number of seconds raises ``SerialTimeoutException`` unless the
        device accepted every byte in time; ``0`` writes what can go at once and returns
        how many bytes that was.
        """
        port = self._p()
        payload = to_bytes(data)
        try:
            return port.write(payload, self._write_timeout)
        except KeyboardInterrupt:
            raise
        except Exception as err:
            if isinstance(err, _native().XoqTimeoutError):
                raise SerialTimeoutException("Write timeout") from err
            _raise(err, "write failed")

    def flush(self) -> None:
        """Cheap: written bytes are already handed to the network (see the module doc)."""
        self._p()

    def cancel_read(self) -> None:
        """Make a ``read`` blocked in another thread return at once with what it has."""
        self._p().cancel_read()

    def cancel_write(self) -> None:
        """Make a ``write`` blocked in another thread return at once."""
        self._p().cancel_write()

    def drain(self) -> None:
        """Wait until the remote device has transmitted everything written so far."""
        self._call("drain")

    def reset_input_buffer(self) -> None:
        """Discard received bytes, here and in the server's and the device's buffers."""
        self._call("reset_input")

    def reset_output_buffer(self) -> None:
        """Discard bytes the device has not transmitted yet."""
        self._call("reset_output")

    # -- settings and modem lines -------------------------------------------------------

    def _call(self, name: str, *args: Any) -> None:
        port = self._p()
        try:
            getattr(port, name)(*args)
        except Exception as err:
            if isinstance(err, _native().UnsupportedError):
                raise SerialException(str(err)) from err
            if isinstance(err, _native().DeviceError):
                raise SerialException(f"{name.replace('_', ' ')}: {err}") from err
            _raise(err, name.replace("_", " "))

    def _reconfigure_port(self, force_update: bool = False) -> None:
        """pyserial calls this when a setting changes on an open port."""
        if self._native_port is None:
            return
        self._call(
            "configure",
            self._baudrate,
            self._bytesize,
            self._parity,
            float(self._stopbits),
            bool(self._xonxoff),
            bool(self._rtscts),
        )

    def _update_dtr_state(self) -> None:
        self._call("set_dtr", bool(self._dtr_state))

    def _update_rts_state(self) -> None:
        self._call("set_rts", bool(self._rts_state))

    def _update_break_state(self) -> None:
        raise SerialException(
            "a held break is not carried by xoq; use send_break(duration), which the server times"
        )

    def send_break(self, duration: float = 0.25) -> None:
        """Hold a break for ``duration`` seconds, timed by the server (at most 10 s)."""
        self._call("send_break", float(duration))

    @property
    def cts(self) -> bool:
        """Not carried by xoq: ``False``."""
        self._p()
        return False

    @property
    def dsr(self) -> bool:
        """Not carried by xoq: ``False``."""
        self._p()
        return False

    @property
    def ri(self) -> bool:
        """Not carried by xoq: ``False``."""
        self._p()
        return False

    @property
    def cd(self) -> bool:
        """Not carried by xoq: ``False``."""
        self._p()
        return False

    def fileno(self) -> int:
        """A remote port has no file descriptor."""
        raise io.UnsupportedOperation("a remote xoq port has no file descriptor to select on")

    @property
    def dropped(self) -> int:
        """Bytes dropped because the receive buffer (4 MiB) overflowed."""
        return self._p().dropped

    @property
    def link(self) -> dict:
        """The link: ``state`` (``"connected"``, ``"reconnecting"``, ``"closed"``), ``reason``,
        ``drops``, ``reconnects``, ``down_seconds`` (completed outages), ``clock_offset_us``
        (the server's clock minus this machine's, estimated over the link)."""
        state, reason, drops, reconnects, down = self._p().link
        clock = self._p().clock
        return {
            "state": state,
            "reason": reason,
            "drops": drops,
            "reconnects": reconnects,
            "down_seconds": down,
            "clock_offset_us": clock[0] if clock else None,
        }

    def wait_link_change(self, timeout: Optional[float] = None) -> str:
        """Block until the link state changes (or ``timeout`` seconds pass); the new state."""
        return self._p().wait_link_change(timeout)


# isinstance(port, serial.Serial) holds for remote ports too, as code that type-checks expects.
serial.Serial.register(RemoteSerial)
