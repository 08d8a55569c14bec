"""Relay tokens, the user's identity, CAN FD on a classic bus and the robot clock, from Python."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import can
import pytest
import serial

from conftest import xoq_bin


def _token(key: str, *paths: str, publish: bool = True) -> str:
    args = [xoq_bin(), "token", "--key", key]
    for p in paths:
        if publish:
            args += ["--publish", p]
        args += ["--subscribe", p]
    out = subprocess.run(args, capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    return out.stdout.strip()


@pytest.fixture
def auth_relay(start, tmp_path):
    """A relay that checks tokens signed by `key` (nothing is public)."""
    key = str(tmp_path / "relay.jwk")
    r = start("relay", "--listen", "127.0.0.1:0", "--auth-key", key)
    assert any("tokens" in l for l in r.lines), r.lines
    return r.values("url")[0].rstrip("/"), key


def test_pyserial_through_a_token_checking_relay(start, auth_relay, monkeypatch):
    url, key = auth_relay
    server_token = _token(key, "anon/py-tok")
    start("serial-server", "sim:echo", "115200", "--no-p2p", "--moq-writes", "on",
          "--relay", f"{url}?jwt={server_token}", "--moq", "anon/py-tok")
    addr = f"{url}/anon/py-tok"
    with pytest.raises(serial.SerialException, match="credentials"):
        serial.Serial(addr, timeout=2)
    token = _token(key, "anon/py-tok")
    with serial.Serial(f"{addr}?jwt={token}", timeout=5) as s:
        s.write(b"with a token")
        assert s.read(12) == b"with a token"
    # The same through the environment.
    monkeypatch.setenv("XOQ_RELAY_TOKEN", token)
    with serial.Serial(addr, timeout=5) as s:
        s.write(b"env")
        assert s.read(3) == b"env"


def test_python_can_through_a_token_checking_relay(start, auth_relay):
    url, key = auth_relay
    server_token = _token(key, "anon/py-can-tok")
    start("can-server", "sim:openarm", "--no-p2p", "--moq-writes", "on",
          "--relay", f"{url}?jwt={server_token}", "--moq", "anon/py-can-tok")
    addr = f"{url}/anon/py-can-tok"
    with pytest.raises(can.CanInitializationError, match="credentials"):
        can.Bus(channel=addr, interface="xoq")
    # A token for another path cannot reach this bus.
    other = _token(key, "anon/elsewhere")
    with pytest.raises(can.CanInitializationError):
        can.Bus(channel=f"{addr}?jwt={other}", interface="xoq")
    token = _token(key, "anon/py-can-tok")
    with can.Bus(channel=f"{addr}?jwt={token}", interface="xoq") as bus:
        bus.send(can.Message(arbitration_id=0x01, data=bytes([0xFF] * 7 + [0xFC]),
                             is_extended_id=False))
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            m = bus.recv(timeout=0.5)
            if m is not None and m.arbitration_id == 0x11:
                break
        else:
            pytest.fail("motor 1 did not answer through the relay")


def test_relay_writes_are_refused_by_default(start, relay):
    start("can-server", "sim:openarm", "--no-p2p", "--relay", relay, "--moq", "anon/py-ro")
    with can.Bus(channel=f"{relay}/anon/py-ro", interface="xoq") as bus:
        with pytest.raises(can.CanOperationError, match="moq-writes"):
            bus.send(can.Message(arbitration_id=0x01, data=bytes([0xFF] * 7 + [0xFC]),
                                 is_extended_id=False))


def _ids(env: dict) -> tuple[str, str]:
    cli = subprocess.run([xoq_bin(), "id"], capture_output=True, text=True, env=env, timeout=30)
    assert cli.returncode == 0, cli.stderr
    py = subprocess.run([sys.executable, "-c", "import xoq; print(xoq.endpoint_id())"],
                        capture_output=True, text=True, env=env, timeout=60)
    assert py.returncode == 0, py.stderr
    return cli.stdout.strip(), py.stdout.strip()


def test_python_and_xoq_id_agree_on_the_client_id(tmp_path):
    env = dict(os.environ, XOQ_HOME=str(tmp_path / "home"))
    env.pop("XOQ_KEY", None)
    cli, py = _ids(env)
    assert cli == py and len(cli) == 64
    assert (tmp_path / "home" / "client.key").exists()
    env["XOQ_KEY"] = str(tmp_path / "mine.key")
    cli2, py2 = _ids(env)
    assert cli2 == py2 and cli2 != cli


def test_fd_frames_on_a_classic_bus(start):
    srv = start("can-server", "virtual:pyclassic:classic", "--bind", "127.0.0.1:0")
    with can.Bus(channel=srv.address, interface="xoq") as a, \
            can.Bus(channel=srv.address, interface="xoq", ephemeral=True) as b:
        assert a.protocol == can.CanProtocol.CAN_20
        # A small FD frame without BRS goes as a classic frame ...
        a.send(can.Message(arbitration_id=0x22, data=b"\x01\x02", is_fd=True,
                           is_extended_id=False))
        m = b.recv(timeout=5)
        assert m is not None and m.arbitration_id == 0x22 and not m.is_fd
        # ... a real FD frame is refused with a clear error.
        with pytest.raises(can.CanOperationError, match="classic"):
            a.send(can.Message(arbitration_id=0x23, data=bytes(64), is_fd=True,
                               bitrate_switch=True, is_extended_id=False))


def test_timestamps_come_in_the_callers_clock(start, tmp_path):
    # A Python process whose native clock is 5 s behind (the test seam): the timestamps it
    # gets are in its own (skewed) clock, and the robot's clock is one offset away.
    srv = start("can-server", "virtual:pyclock", "--bind", "127.0.0.1:0")
    code = f"""
import time, can
skew = -5.0
with can.Bus(channel={srv.address!r}, interface="xoq") as a, \\
        can.Bus(channel={srv.address!r}, interface="xoq", ephemeral=True) as b:
    time.sleep(1.5)  # a clock probe or two
    a.send(can.Message(arbitration_id=0x5, data=b"\\x01", is_extended_id=False))
    m = b.recv(timeout=5)
    assert m is not None
    local = time.time() + skew
    assert abs(m.timestamp - local) < 1.0, (m.timestamp, local)
    robot = m.timestamp + b.clock_offset
    assert abs(robot - time.time()) < 1.0, (robot, time.time())
print("ok")
"""
    env = dict(os.environ, XOQ_CLOCK_SKEW_US="-5000000", XOQ_HOME=str(tmp_path))
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         env=env, timeout=60)
    assert out.stdout.strip() == "ok", out.stderr
