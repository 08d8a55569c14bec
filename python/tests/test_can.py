"""python-can on remote buses: the `xoq` interface plugin under stock python-can."""

from __future__ import annotations

import base64
import csv
import itertools
import threading
import time
from typing import Optional

import can
import pytest

from conftest import client_key, closed_udp_port, free_id, raises_while_blocked, wait_for


@pytest.fixture
def vbus(start):
    """A server on an empty in-process CAN FD bus."""
    return start("can-server", "virtual:py", "--bind", "127.0.0.1:0")


def _bus(server, **kw) -> can.BusABC:
    return can.Bus(channel=server.address, interface="xoq", **kw)


def test_plugin_is_found_through_the_entry_point(vbus):
    with _bus(vbus) as bus:
        assert type(bus).__name__ == "XoqBus"
        assert bus.protocol == can.CanProtocol.CAN_FD
        assert bus.state == can.BusState.ACTIVE
        assert "xoq" in bus.channel_info


def test_can_bus_with_address_only_picks_xoq(vbus):
    with can.Bus(vbus.address) as bus:
        assert type(bus).__name__ == "XoqBus"


def test_send_receive_classic_fd_remote_and_extended(vbus):
    with _bus(vbus) as a, _bus(vbus, fd=True) as b:
        sent = [
            can.Message(arbitration_id=0x123, data=b"\x01\x02\x03", is_extended_id=False),
            can.Message(arbitration_id=0x1ABCDE01, data=b"ext", is_extended_id=True),
            can.Message(arbitration_id=0x42, data=bytes(range(64)), is_fd=True,
                        bitrate_switch=True, is_extended_id=False),
            can.Message(arbitration_id=0x43, data=bytes(12), is_fd=True, is_extended_id=False,
                        error_state_indicator=True),
            can.Message(arbitration_id=0x7FF, is_remote_frame=True, dlc=4, is_extended_id=False),
        ]
        before = time.time()
        for m in sent:
            a.send(m)
        for m in sent:
            r = b.recv(timeout=5)
            assert r is not None, f"missing {m}"
            assert r.arbitration_id == m.arbitration_id
            assert r.is_extended_id == m.is_extended_id
            assert r.is_fd == m.is_fd
            assert r.bitrate_switch == m.bitrate_switch
            assert r.error_state_indicator == m.error_state_indicator
            assert r.is_remote_frame == m.is_remote_frame
            assert r.dlc == m.dlc
            if not m.is_remote_frame:
                assert bytes(r.data) == bytes(m.data)
            # Server receive time, wall clock.
            assert before - 1 <= r.timestamp <= time.time() + 1
        # Own frames are not echoed unless asked.
        assert a.recv(timeout=0.2) is None


def test_receive_own_messages(vbus):
    with _bus(vbus, receive_own_messages=True) as a:
        a.send(can.Message(arbitration_id=0x10, data=b"me", is_extended_id=False))
        r = a.recv(timeout=5)
        assert r is not None and bytes(r.data) == b"me"


def _std(arbitration_id: int, data: bytes = b"") -> can.Message:
    return can.Message(arbitration_id=arbitration_id, data=data, is_extended_id=False)


def _key(m: can.Message) -> tuple[int, bool, bytes]:
    return (m.arbitration_id, m.is_extended_id, bytes(m.data))


class _Tap:
    """Records every frame the server delivers to `bus`, before python-can's own filtering
    (what crossed the network), while `bus.recv` keeps working as usual."""

    def __init__(self, bus: can.BusABC) -> None:
        self.raw: list[can.Message] = []
        inner = bus._recv_internal

        def recv_internal(timeout):
            msg, filtered = inner(timeout)
            if msg is not None:
                self.raw.append(msg)
            return msg, filtered

        bus._recv_internal = recv_internal


def _wait_filters_live(tx, rx, tap: _Tap, probe: int, blocked: Optional[int] = None) -> None:
    """Return once the server applies the filters just set on `rx` (it acknowledges nothing).

    Rounds of [`blocked`, `probe`] from `tx`, tagged with the round: `probe` passes the new
    filters and `blocked` does not. The round whose probe arrives with no `blocked` frame
    before it proves the new filters are live, since the bus keeps one sender's order. Without
    `blocked`, the old filters must block `probe`.
    """
    deadline = time.monotonic() + 10
    for n in itertools.count():
        assert time.monotonic() < deadline, "the server never applied the new filters"
        tag = b"sync" + n.to_bytes(3, "big")
        start = len(tap.raw)
        if blocked is not None:
            tx.send(_std(blocked, tag))
        tx.send(_std(probe, tag))
        until = time.monotonic() + 0.5
        while time.monotonic() < until:
            m = rx.recv(timeout=0.05)
            if m is not None and _key(m) == (probe, False, tag):
                if not any(_key(r) == (blocked, False, tag) for r in tap.raw[start:]):
                    return
                break


def _exchange(tx, rx, tap: _Tap, frames: list[can.Message], end: can.Message):
    """Send `frames`, then `end` (which the filters pass). What `rx.recv` returned before
    `end`, and what the server delivered before it (nothing else is in flight: `end` follows
    everything from `tx`)."""
    mark = len(tap.raw)
    for f in frames:
        tx.send(f)
    tx.send(end)
    visible = []
    while True:
        m = rx.recv(timeout=5)
        assert m is not None, f"{end} never arrived"
        if _key(m) == _key(end):
            break
        visible.append(_key(m))
    raw = tap.raw[mark:]
    assert _key(raw[-1]) == _key(end)
    return visible, [_key(m) for m in raw[:-1]]


def test_filters_on_the_server_and_changed_later(vbus):
    with _bus(vbus) as tx, _bus(vbus, can_filters=[{"can_id": 0x100, "can_mask": 0x7F0}]) as rx:
        tap = _Tap(rx)
        # Set at construction, right after the session opened (when everything passed).
        _wait_filters_live(tx, rx, tap, probe=0x101, blocked=0x200)
        visible, raw = _exchange(
            tx, rx, tap, [_std(0x100), _std(0x200), _std(0x10F), _std(0x300)], _std(0x10E, b"end")
        )
        assert visible == [(0x100, False, b""), (0x10F, False, b"")]
        # The server filtered: 0x200 and 0x300 never crossed the network.
        assert raw == visible

        rx.set_filters([{"can_id": 0x300, "can_mask": 0x7FF, "extended": False}])
        _wait_filters_live(tx, rx, tap, probe=0x300, blocked=0x100)
        ext_300 = can.Message(arbitration_id=0x300, data=b"", is_extended_id=True)
        visible, raw = _exchange(
            tx, rx, tap, [_std(0x100), ext_300, _std(0x300, b"s")], _std(0x300, b"end")
        )
        # "Standard ids only" is python-can's own check (the wire filter cannot say it).
        assert visible == [(0x300, False, b"s")]
        # The server's new filter: 0x100 never crossed the network.
        assert all(k[0] == 0x300 for k in raw), raw
        assert [k for k in raw if not k[1]] == [(0x300, False, b"s")], raw

        rx.set_filters(None)
        _wait_filters_live(tx, rx, tap, probe=0x555)
        ext = can.Message(arbitration_id=0x1ABCDE01, data=b"x", is_extended_id=True)
        visible, raw = _exchange(tx, rx, tap, [_std(0x555), ext, _std(0x100)], _std(0x7FF, b"end"))
        assert visible == [(0x555, False, b""), (0x1ABCDE01, True, b"x"), (0x100, False, b"")]
        assert raw == visible


def test_iteration_blocks_past_one_second(vbus):
    with _bus(vbus) as tx, _bus(vbus) as rx:
        threading.Timer(1.6, lambda: tx.send(
            can.Message(arbitration_id=0x77, data=b"late", is_extended_id=False))).start()
        t0 = time.monotonic()
        msg = next(iter(rx))
        assert msg.arbitration_id == 0x77
        assert time.monotonic() - t0 >= 1.5


def test_notifier_and_buffered_reader(vbus):
    with _bus(vbus) as tx, _bus(vbus) as rx:
        reader = can.BufferedReader()
        notifier = can.Notifier(rx, [reader], timeout=0.1)
        try:
            for i in range(20):
                tx.send(can.Message(arbitration_id=i, data=bytes([i]), is_extended_id=False))
            got = []
            deadline = time.monotonic() + 5
            while len(got) < 20 and time.monotonic() < deadline:
                m = reader.get_message(timeout=0.5)
                if m is not None:
                    got.append(m.arbitration_id)
            assert got == list(range(20))
        finally:
            notifier.stop()


def test_send_periodic(vbus):
    with _bus(vbus) as tx, _bus(vbus) as rx:
        task = tx.send_periodic(
            can.Message(arbitration_id=0x321, data=b"\x01", is_extended_id=False), period=0.01
        )
        try:
            # The frame keeps coming (how fast is the machine's business, not asserted).
            n = 0
            deadline = time.monotonic() + 10
            while n < 20:
                assert time.monotonic() < deadline, f"only {n} periodic frames"
                m = rx.recv(timeout=1)
                if m is not None:
                    assert (m.arbitration_id, bytes(m.data)) == (0x321, b"\x01")
                    n += 1
        finally:
            task.stop()


def test_logger_writes_received_frames(vbus, tmp_path):
    path = tmp_path / "log.csv"
    with _bus(vbus) as tx, _bus(vbus) as rx:
        logger = can.Logger(str(path))
        received = can.BufferedReader()
        # The notifier hands each frame to the logger, then to `received`.
        notifier = can.Notifier(rx, [logger, received], timeout=0.1)
        try:
            for i in range(5):
                tx.send(can.Message(arbitration_id=0x500 + i, data=b"ab", is_extended_id=False))
            got = [received.get_message(timeout=5) for _ in range(5)]
        finally:
            notifier.stop()
            logger.stop()
    assert None not in got, got
    with path.open(newline="") as f:
        rows = list(csv.DictReader(f))
    # One row per frame, in order: python-can's CSV columns, parsed back.
    assert [
        (
            float(r["timestamp"]),
            int(r["arbitration_id"], 16),
            r["extended"],
            r["remote"],
            r["error"],
            int(r["dlc"]),
            base64.b64decode(r["data"]),
        )
        for r in rows
    ] == [(m.timestamp, 0x500 + i, "0", "0", "0", 2, b"ab") for i, m in enumerate(got)]


def test_two_buses_on_one_remote_interface_both_receive(vbus):
    with _bus(vbus) as tx, _bus(vbus) as r1, _bus(vbus) as r2:
        for i in range(50):
            tx.send(can.Message(arbitration_id=0x200, data=bytes([i]), is_extended_id=False))
        for r in (r1, r2):
            assert [r.recv(timeout=5).data[0] for _ in range(50)] == list(range(50))


def test_shutdown_frees_the_session(vbus):
    bus = _bus(vbus)
    task = bus.send_periodic(can.Message(arbitration_id=1, data=b"", is_extended_id=False), 0.05)
    bus.shutdown()
    bus.shutdown()  # idempotent
    task.thread.join(timeout=2)
    assert not task.thread.is_alive()
    with pytest.raises(can.CanOperationError):
        bus.recv(timeout=0.1)
    with pytest.raises(can.CanOperationError):
        bus.send(can.Message(arbitration_id=2, data=b"", is_extended_id=False))


def test_blocked_recv_ends_when_the_bus_is_shut_down(vbus):
    bus = _bus(vbus)
    err = raises_while_blocked(lambda: bus.recv(timeout=None), bus.shutdown, timeout=5)
    assert isinstance(err, can.CanOperationError)


def test_through_relay_command_and_state(start, relay):
    start("can-server", "sim:openarm", "--bind", "127.0.0.1:0", "--relay", relay,
          "--moq", "anon/py-openarm", "--moq-writes", "on")
    with can.Bus(channel=f"{relay}/anon/py-openarm", interface="xoq") as bus:
        enable = can.Message(arbitration_id=0x02, data=bytes([0xFF] * 7 + [0xFC]),
                             is_extended_id=False)
        deadline = time.monotonic() + 10
        reply = None
        while reply is None and time.monotonic() < deadline:
            bus.send(enable)
            reply = bus.recv(timeout=0.5)
        assert reply is not None and reply.arbitration_id == 0x12
        # Its own command never came back: the client drops the relay's echo of it.
        assert bus.recv(timeout=0.3) is None
        bus.set_filters([{"can_id": 0x13, "can_mask": 0x7FF}])
        bus.send(enable)
        assert bus.recv(timeout=0.5) is None  # 0x12's reply is filtered out
        bus.set_filters(None)
        bus.send(enable)
        assert bus.recv(timeout=2).arbitration_id == 0x12


def test_refused_by_allowlist(start, tmp_path):
    key, my_id = client_key(tmp_path, "me.key")
    srv = start("can-server", "virtual:locked", "--bind", "127.0.0.1:0", "--allow", free_id())
    with pytest.raises(can.CanInitializationError, match="(?i)allow|refused|not allowed"):
        can.Bus(channel=srv.address, interface="xoq", key=key)
    srv2 = start("can-server", "virtual:open", "--bind", "127.0.0.1:0", "--allow", my_id)
    with can.Bus(channel=srv2.address, interface="xoq", key=key) as bus:
        assert bus.state == can.BusState.ACTIVE


def test_unknown_endpoint_is_an_initialization_error():
    t0 = time.monotonic()
    with pytest.raises(can.CanInitializationError):
        can.Bus(channel=f"{free_id()}@127.0.0.1:{closed_udp_port()}", interface="xoq")
    assert time.monotonic() - t0 < 30


def test_server_killed_mid_recv_raises_without_reconnect(vbus):
    bus = _bus(vbus, reconnect=0)
    err = raises_while_blocked(lambda: bus.recv(timeout=None), vbus.kill)
    assert isinstance(err, can.CanOperationError), err
    bus.shutdown()


def test_sends_fail_fast_while_the_link_is_down(vbus):
    bus = _bus(vbus, reconnect=30)
    vbus.kill()
    wait_for(lambda: bus.link["state"] != "connected", timeout=15, what="the drop to be noticed")
    msg = can.Message(arbitration_id=0x1, data=b"\x01", is_extended_id=False)
    # Raises (never blocks, never queues): the link is down.
    with pytest.raises(can.CanOperationError, match="not sent"):
        bus.send(msg)
    assert bus.link["not_sent"] == 1
    bus.shutdown()


def test_two_relay_clients_both_command(start, relay):
    start("can-server", "sim:openarm", "--bind", "127.0.0.1:0", "--relay", relay,
          "--moq", "anon/py-two", "--moq-writes", "on")
    addr = f"{relay}/anon/py-two"
    with can.Bus(channel=addr, interface="xoq") as a, can.Bus(channel=addr, interface="xoq") as b:
        for bus, motor in ((a, 0x03), (b, 0x04), (a, 0x05), (b, 0x06)):
            bus.send(can.Message(arbitration_id=motor, data=bytes([0xFF] * 7 + [0xFC]),
                                 is_extended_id=False))
        # Both clients see all motor replies (the relay broadcasts the bus), and each sees
        # the other's commands as bus traffic, never its own.
        for bus, others in ((a, {0x04, 0x06}), (b, {0x03, 0x05})):
            replies, commands = set(), set()
            deadline = time.monotonic() + 10
            while len(replies) < 4 and time.monotonic() < deadline:
                m = bus.recv(timeout=0.5)
                if m is not None:
                    (replies if m.arbitration_id >= 0x10 else commands).add(m.arbitration_id)
            assert replies == {0x13, 0x14, 0x15, 0x16}
            assert commands <= others, commands
