"""python-can interface ``xoq``: a remote CAN bus as a ``can.BusABC``.

Registered through the ``can.interface`` entry point, so stock python-can finds it::

    import can
    bus = can.Bus(channel="<address>", interface="xoq")

Everything python-can layers on a bus (``recv`` with software filtering, iteration,
``Notifier``, ``BufferedReader``, ``send_periodic``, ``Logger``) is python-can's own code;
this class moves frames.

Notes for users of other interfaces:

* FD frames go through whatever ``fd`` says: the remote interface decides what the bus
  carries (LeRobot's Damiao bus sends FD frames without passing ``fd=True``).
* ``bitrate``/``data_bitrate``/``sjw``… are accepted and ignored: the server owns the bus
  timing (configure it where the interface is brought up).
* Filters run on the server for P2P addresses (frames you filtered out never cross the
  network); through a relay the native client applies them. python-can checks again for
  what the wire filter cannot say ("standard ids only").
* Through a relay, which broadcasts all bus traffic, the client drops the echo of its own
  frames unless ``receive_own_messages=True``, as a P2P server does.
* Timestamps are the server's receive times, converted to this machine's clock (seconds
  since the Unix epoch, as python-can expects) with the client's estimate of the server's
  clock; add :attr:`XoqBus.clock_offset` to get the robot's own clock back.
* The link survives blips: the native client reconnects in the background (same identity,
  filters re-applied) and ``recv`` resumes. While it is down, ``send`` raises
  ``CanOperationError`` at once: a command is never queued to arrive late. Only after the
  reconnect deadline (``reconnect=`` seconds, default 60) does ``recv`` raise too.
"""

from __future__ import annotations

import os
from typing import Any, Optional

import can
from can import BusABC, BusState, CanProtocol, Message
from can.exceptions import CanInitializationError, CanOperationError

from ._address import strip_scheme

__all__ = ["XoqBus"]

# Keyword arguments other interfaces take that mean nothing for a remote bus.
_IGNORED = {
    "bitrate", "data_bitrate", "sjw", "tseg1", "tseg2", "nom_brp", "nom_tseg1", "nom_tseg2",
    "nom_sjw", "data_brp", "data_tseg1", "data_tseg2", "data_sjw", "timing", "app_name",
    "serial", "ignore_rx_error_frames", "local_loopback", "single_handle", "poll_interval",
    "rx_queue_size", "can_protocol", "auto_reset", "bitrate_switch", "listen_only",
}


def _native():
    from . import _xoq

    return _xoq


_STATE = {0: BusState.ACTIVE, 1: BusState.ACTIVE, 2: BusState.PASSIVE, 3: BusState.ERROR,
          4: BusState.ERROR}


class XoqBus(BusABC):
    """A CAN interface on a remote xoq can-server.

    :param channel: the server's address (``<id>``, ``<id>@ip:port``, a relay URL; ``xoq://``
        prefix allowed).
    :param can_filters: python-can filters, pushed to the server.
    :param receive_own_messages: also receive this bus's own frames once they are on the bus.
    :param fd: accepted for compatibility; FD frames are always carried when the remote
        interface is FD.
    :param interface_name: check that the server serves this interface (e.g. ``can0:fd``).
    :param offline: no iroh discovery (default from ``XOQ_OFFLINE``).
    :param key: path of this client's identity file (default: the user's, ``XOQ_KEY`` else
        ``$XOQ_HOME/client.key``, what ``xoq id`` prints).
    :param ephemeral: use a throw-away identity instead.
    :param reconnect: seconds the link may stay down before calls fail (0: never reconnect).
    """

    def __init__(
        self,
        channel: Any,
        can_filters: Optional[can.typechecking.CanFilters] = None,
        receive_own_messages: bool = False,
        fd: bool = False,
        interface_name: Optional[str] = None,
        offline: Optional[bool] = None,
        key: Optional[str] = None,
        ephemeral: bool = False,
        reconnect: Optional[float] = None,
        **kwargs: Any,
    ) -> None:
        unknown = set(kwargs) - _IGNORED
        if unknown:
            raise CanInitializationError(
                f"xoq interface: unexpected arguments {sorted(unknown)}"
            )
        if not isinstance(channel, str) or not channel:
            raise CanInitializationError(
                "xoq interface: channel must be the server's address (see `xoq can-server`)"
            )
        self.channel = strip_scheme(channel)
        self.channel_info = f"xoq {self.channel}"
        x = self._xm = _native()
        try:
            self._native = x.CanBus(
                self.channel,
                receive_own=bool(receive_own_messages),
                filters=None,  # BusABC.__init__ applies them through _apply_filters
                interface=interface_name,
                offline=offline,
                key=os.fspath(key) if key is not None else None,
                ephemeral=bool(ephemeral),
                reconnect=reconnect,
            )
        except x.RefusedError as err:
            raise CanInitializationError(
                f"{self.channel}: {err} (ask for this client's id to be added with --allow)"
            ) from err
        except x.XoqError as err:
            raise CanInitializationError(
                f"{self.channel}: {err} (check the address the server printed, and that the "
                "server runs)"
            ) from err
        self._can_protocol = CanProtocol.CAN_FD if self._native.is_fd else CanProtocol.CAN_20
        super().__init__(channel=self.channel, can_filters=can_filters, **kwargs)

    # -- python-can hooks ---------------------------------------------------------------

    def _recv_internal(self, timeout: Optional[float]) -> tuple[Optional[Message], bool]:
        try:
            got = self._native.recv(timeout)
        except KeyboardInterrupt:
            raise
        except Exception as err:
            raise CanOperationError(f"{self.channel}: {err}") from err
        if got is None:
            return None, False
        arbitration_id, flags, data, dlc, timestamp, _robot = got
        x = self._xm
        msg = Message(
            timestamp=timestamp,
            arbitration_id=arbitration_id,
            is_extended_id=bool(flags & x.FLAG_EXTENDED),
            is_remote_frame=bool(flags & x.FLAG_REMOTE),
            is_error_frame=bool(flags & x.FLAG_ERROR),
            is_fd=bool(flags & x.FLAG_FD),
            bitrate_switch=bool(flags & x.FLAG_BRS),
            error_state_indicator=bool(flags & x.FLAG_ESI),
            channel=self.channel,
            dlc=dlc,
            data=data,
            is_rx=True,
        )
        # Server filters cannot say "standard ids only": let python-can check again (cheap).
        return msg, False

    def send(self, msg: Message, timeout: Optional[float] = None) -> None:
        """Send ``msg``; ``timeout`` bounds the wait when the network pushes back."""
        x = self._xm
        flags = (
            (x.FLAG_EXTENDED if msg.is_extended_id else 0)
            | (x.FLAG_REMOTE if msg.is_remote_frame else 0)
            | (x.FLAG_ERROR if msg.is_error_frame else 0)
            | (x.FLAG_FD if msg.is_fd else 0)
            | (x.FLAG_BRS if msg.bitrate_switch else 0)
            | (x.FLAG_ESI if msg.error_state_indicator else 0)
        )
        try:
            self._native.send(msg.arbitration_id, flags, bytes(msg.data), msg.dlc, timeout)
        except KeyboardInterrupt:
            raise
        except Exception as err:
            if isinstance(err, x.XoqTimeoutError):
                raise CanOperationError(f"send timed out after {timeout} s") from err
            if isinstance(err, x.LinkDownError):
                raise CanOperationError(
                    f"{self.channel}: {err}; the frame was not sent (a command is never queued "
                    "to arrive late)"
                ) from err
            raise CanOperationError(f"{self.channel}: send failed: {err}") from err

    def _apply_filters(self, filters: Optional[can.typechecking.CanFilters]) -> None:
        try:
            self._native.set_filters(_to_native(filters) or [])
        except Exception as err:
            raise CanOperationError(f"{self.channel}: could not set filters: {err}") from err

    @property
    def state(self) -> BusState:
        """The remote controller's state (warning level reads as ACTIVE, as in python-can)."""
        return _STATE.get(self._native.state, BusState.ERROR)

    @state.setter
    def state(self, new_state: BusState) -> None:
        raise NotImplementedError("the bus state is set where the interface is brought up")

    def shutdown(self) -> None:
        """Stop periodic tasks and close the session (idempotent)."""
        super().shutdown()
        native = getattr(self, "_native", None)
        if native is not None:
            native.close()

    @property
    def dropped(self) -> int:
        """Frames dropped because they were not read in time (drop-oldest inbox)."""
        return self._native.dropped

    @property
    def clock_offset(self) -> float:
        """The server's (robot's) clock minus this machine's, in seconds, as estimated over
        the link: ``msg.timestamp + bus.clock_offset`` is the robot's receive time."""
        c = self._native.clock
        return c[0] / 1e6 if c else 0.0

    @property
    def link(self) -> dict:
        """The link: ``state`` (``"connected"``, ``"reconnecting"``, ``"closed"``), ``reason``,
        ``drops``, ``reconnects``, ``down_seconds``, and frame counters ``sent``,
        ``not_sent`` (link down) and ``refused`` (by the server)."""
        state, reason, drops, reconnects, down = self._native.link
        sent, not_sent, refused = self._native.counters
        return {
            "state": state,
            "reason": reason,
            "drops": drops,
            "reconnects": reconnects,
            "down_seconds": down,
            "sent": sent,
            "not_sent": not_sent,
            "refused": refused,
        }

    def wait_link_change(self, timeout: Optional[float] = None) -> str:
        """Block until the link state changes (or ``timeout`` seconds pass); the new state."""
        return self._native.wait_link_change(timeout)


def _to_native(filters: Optional[can.typechecking.CanFilters]):
    if not filters:
        return None
    out = []
    for f in filters:
        extended = f.get("extended")
        # python-can: without "extended" a filter matches both kinds of id. The server's
        # filter then needs the extended flag off (it only restricts when set).
        out.append((int(f["can_id"]), int(f["can_mask"]), bool(extended)))
    return out
