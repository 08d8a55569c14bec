"""Unchanged pyserial and python-can loops keep running across a 10 s silent outage and a
server restart.

The outage is real: nftables drops every packet to and from the server's UDP port, in a
private network namespace (``unshare -n``), so it needs root and nftables; elsewhere the tests
are skipped with that reason.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap

import pytest

from conftest import xoq_bin

HERE = os.path.dirname(os.path.abspath(__file__))


def _why_not() -> str | None:
    if os.geteuid() != 0:
        return "needs root (a private network namespace and nftables rules)"
    for tool in ("unshare", "ip", "nft"):
        if shutil.which(tool) is None:
            return f"needs {tool} (scripts/test.sh installs nftables)"
    return None


pytestmark = pytest.mark.skipif(_why_not() is not None, reason=_why_not() or "")

# Runs inside the namespace: starts servers with the test fixtures, drives the loop in a
# thread, cuts and heals the link, and prints a JSON report.
PRELUDE = textwrap.dedent(
    """
    import json, os, pathlib, subprocess, sys, tempfile, threading, time
    sys.path.insert(0, {here!r})
    os.environ["XOQ_BIN"] = {xoq!r}
    subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
    from conftest import Server
    home = pathlib.Path(tempfile.mkdtemp())
    os.environ["XOQ_HOME"] = str(home)

    def nft(*args):
        subprocess.run(["nft", *args], check=True)

    def cut(port):
        nft("add", "table", "inet", "outage")
        nft("add", "chain", "inet", "outage", "in",
            "{{ type filter hook input priority 0; policy accept; }}")
        for side in ("dport", "sport"):
            nft("add", "rule", "inet", "outage", "in", "udp", side, str(port), "drop")

    def heal():
        nft("delete", "table", "inet", "outage")
    """
)


def run_in_netns(body: str, timeout: float = 120) -> dict:
    import json

    code = PRELUDE.format(here=HERE, xoq=xoq_bin()) + textwrap.dedent(body)
    out = subprocess.run(
        ["unshare", "-n", sys.executable, "-c", code],
        capture_output=True, text=True, timeout=timeout,
    )
    assert out.returncode == 0, f"stdout:\n{out.stdout}\nstderr:\n{out.stderr[-4000:]}"
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_a_pyserial_servo_loop_survives_a_10s_outage_and_a_server_restart():
    report = run_in_netns(
        """
        import serial
        from scservo_sdk import PortHandler, PacketHandler
        key = str(home / "server.key")
        args = ["serial-server", "sim:so101", "1000000", "--bind", "127.0.0.1:0", "--key", key]
        srv = Server(args, home)
        addr = srv.address
        port_no = int(addr.rsplit(":", 1)[1])
        # The loop a LeRobot-style program runs: read positions with the Feetech SDK, forever.
        stop, good, errors, failed_reads = threading.Event(), [0], [], [0]
        port = PortHandler(addr)
        assert port.openPort() and port.setBaudRate(1000000)
        packet = PacketHandler(0)
        def loop():
            try:
                while not stop.is_set():
                    for sid in range(1, 7):
                        pos, res, err = packet.read2ByteTxRx(port, sid, 56)
                        if res == 0:
                            good[0] += 1
                        else:
                            failed_reads[0] += 1
            except BaseException as e:  # the test: nothing escapes the loop
                errors.append(repr(e))
        t = threading.Thread(target=loop, daemon=True)
        t.start()
        time.sleep(1.0)
        before = good[0]
        cut(port_no)
        time.sleep(10.0)
        during = good[0]
        heal()
        healed = time.monotonic()
        while good[0] == during and time.monotonic() - healed < 15:
            time.sleep(0.01)
        resumed = time.monotonic() - healed
        link_after_outage = port.ser.link
        # The server restarts with the same key and port.
        bind = f"127.0.0.1:{port_no}"
        srv.kill()
        srv = Server(["serial-server", "sim:so101", "1000000", "--bind", bind, "--key", key], home)
        restarted = time.monotonic()
        mark = good[0]
        while good[0] == mark and time.monotonic() - restarted < 20:
            time.sleep(0.01)
        back_after_restart = good[0] > mark
        stop.set()
        t.join(timeout=10)
        link = port.ser.link
        port.closePort()
        srv.kill()
        print(json.dumps(dict(before=before, during=during - before, after=good[0] - during,
                              resumed=resumed, errors=errors, failed_reads=failed_reads[0],
                              link_after_outage=link_after_outage, link=link,
                              back_after_restart=back_after_restart, stopped=not t.is_alive())))
        """
    )
    assert report["errors"] == [], report
    assert report["stopped"] and report["before"] > 0, report
    assert report["after"] > 0, f"the loop never read a position again: {report}"
    assert report["back_after_restart"], report
    # The outage shows in the link's counters, not as an exception.
    assert report["link_after_outage"]["drops"] >= 1, report
    assert report["link_after_outage"]["reconnects"] >= 1, report
    assert report["link"]["reconnects"] >= 2, report
    assert report["failed_reads"] > 0, "reads timed out while the link was down"
    print(f"pyserial loop: resumed {report['resumed']:.2f} s after the link healed")


def test_a_python_can_damiao_loop_survives_a_10s_outage_and_a_server_restart():
    report = run_in_netns(
        """
        import can
        key = str(home / "can.key")
        srv = Server(["can-server", "sim:openarm", "--bind", "127.0.0.1:0", "--key", key], home)
        addr = srv.address
        port_no = int(addr.rsplit(":", 1)[1])
        bus = can.Bus(channel=addr, interface="xoq")
        enable = bytes([0xFF] * 7 + [0xFC])
        stop, replies, errors, not_sent = threading.Event(), [0], [], [0]
        def loop():
            # A Damiao control loop: a command per motor, then read the replies. A command
            # while the link is down fails at once (never queued): the loop skips that cycle.
            try:
                while not stop.is_set():
                    for mid in range(1, 9):
                        try:
                            bus.send(can.Message(arbitration_id=mid, data=enable,
                                                 is_extended_id=False))
                        except can.CanOperationError:
                            not_sent[0] += 1
                    deadline = time.monotonic() + 0.05
                    while time.monotonic() < deadline:
                        m = bus.recv(timeout=0.01)
                        if m is not None and 0x11 <= m.arbitration_id <= 0x18:
                            replies[0] += 1
            except BaseException as e:
                errors.append(repr(e))
        t = threading.Thread(target=loop, daemon=True)
        t.start()
        time.sleep(1.0)
        before = replies[0]
        cut(port_no)
        time.sleep(10.0)
        during = replies[0]
        heal()
        healed = time.monotonic()
        while replies[0] == during and time.monotonic() - healed < 15:
            time.sleep(0.01)
        resumed = time.monotonic() - healed
        link_after_outage = bus.link
        srv.kill()
        srv = Server(["can-server", "sim:openarm", "--bind", f"127.0.0.1:{port_no}",
                      "--key", key], home)
        restarted = time.monotonic()
        mark = replies[0]
        while replies[0] == mark and time.monotonic() - restarted < 20:
            time.sleep(0.01)
        back_after_restart = replies[0] > mark
        stop.set()
        t.join(timeout=10)
        link = bus.link
        bus.shutdown()
        srv.kill()
        print(json.dumps(dict(before=before, after=replies[0] - during, resumed=resumed,
                              errors=errors, not_sent=not_sent[0], link=link,
                              link_after_outage=link_after_outage,
                              back_after_restart=back_after_restart, stopped=not t.is_alive())))
        """
    )
    assert report["errors"] == [], report
    assert report["stopped"] and report["before"] > 0, report
    assert report["after"] > 0, f"the loop never got a reply again: {report}"
    assert report["back_after_restart"], report
    assert report["link_after_outage"]["drops"] >= 1, report
    assert report["link_after_outage"]["reconnects"] >= 1, report
    assert report["not_sent"] > 0, "sends while the link was down failed fast"
    assert report["link"]["not_sent"] == report["not_sent"], report
    print(f"python-can loop: resumed {report['resumed']:.2f} s after the link healed")
