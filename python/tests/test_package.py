"""The package itself: address recognition, the import hook, GIL release."""

from __future__ import annotations

import subprocess
import sys
import threading
import time

import pytest
import serial

import xoq
from xoq import _xoq
from conftest import free_id

ID = "ea31048c04f6afa2e77f1d174242be859a53dee75f8afbb35bb7630fd3924d66"

REMOTE = [
    ID,
    f"{ID}@127.0.0.1:9000",
    f"{ID}@[::1]:9000",
    "http://127.0.0.1:4443/anon/xoq-so101",
    "https://relay.example.org/anon/arm",
    f"{ID}/so101",
    f"{ID}@127.0.0.1:47000/can-can0",
]
LOCAL = ["/dev/ttyUSB0", "COM3", "can0", "vcan0", "/dev/pts/3", "loop://", "socket://1.2.3.4:5",
         ID[:-1], "rfc2217://localhost:7000", "", f"{ID}/", f"{ID}/a b", f"{ID}/a/b"]


@pytest.mark.parametrize("address", REMOTE)
def test_remote_addresses_are_recognised_like_the_rust_parser(address):
    assert xoq.is_remote(address)
    assert xoq.is_remote("xoq://" + address)
    assert _xoq.is_address(address)


@pytest.mark.parametrize("port", LOCAL)
def test_local_ports_are_never_claimed(port):
    assert not xoq.is_remote(port)
    assert not _xoq.is_address(port)


def test_the_hook_patches_without_import_in_a_fresh_interpreter():
    code = (
        "import sys, serial, can\n"
        "assert serial.Serial._xoq_patched\n"
        "assert 'xoq' in serial.protocol_handler_packages\n"
        "assert can.Bus._xoq_patched\n"
        "print('ok')\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.stdout.strip() == "ok", out.stderr
    off = subprocess.run(
        [sys.executable, "-c", "import serial; print(hasattr(serial.Serial, '_xoq_patched'))"],
        capture_output=True, text=True, timeout=60, env={"XOQ_NO_PATCH": "1", "PATH": ""},
    )
    assert off.stdout.strip() == "False", off.stderr


def test_endpoint_id_matches_the_cli(tmp_path):
    from conftest import xoq_bin

    key = tmp_path / "k.key"
    ours = xoq.endpoint_id(str(key))
    cli = subprocess.run([xoq_bin(), "id", "--key", str(key)], capture_output=True, text=True)
    assert cli.stdout.strip() == ours
    assert (key.stat().st_mode & 0o777) == 0o600


def test_blocking_read_releases_the_gil(start):
    srv = start("serial-server", "sim:echo", "--bind", "127.0.0.1:0")
    s = serial.Serial(srv.address, 115200, timeout=1.0)
    try:
        t = threading.Thread(target=lambda: s.read(1), daemon=True)
        t.start()
        time.sleep(0.05)
        n = 0
        t0 = time.monotonic()
        while t.is_alive() and time.monotonic() - t0 < 0.5:
            n += 1
        # With the GIL held by the reader this thread would barely run.
        assert n > 10_000
        t.join(timeout=5)
    finally:
        s.close()


def test_offline_keyword_and_env(monkeypatch):
    # Offline on: a bare id (no direct address) cannot be discovered, and says so quickly.
    with pytest.raises(serial.SerialException):
        serial.Serial(free_id(), 115200, offline=True)
