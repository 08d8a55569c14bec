"""A deployed machine's services by name from Python: `xoq deploy` writes the units, the test
runs their command lines itself (no systemd), and pyserial / python-can open
``<machine-id>@<ip>:<port>/<service>`` as they open any port or channel."""

from __future__ import annotations

import json
import os
import random
import subprocess

import can
import serial

from conftest import Server, xoq_bin


def _exec_start(unit_text: str) -> list[str]:
    line = next(l for l in unit_text.splitlines() if l.startswith("ExecStart="))
    return line[len("ExecStart="):].split(" ")


def test_pyserial_and_python_can_open_deployed_services_by_name(tmp_path, home):
    config = tmp_path / "robot.json"
    config.write_text(json.dumps({"extra": [
        {"kind": "serial", "device": "sim:so101", "name": "so101"},
        {"kind": "can", "device": "sim:openarm", "name": "openarm"},
    ]}))
    units = tmp_path / "units"
    base = random.randrange(20000, 60000, 1000)
    subprocess.run(
        [xoq_bin(), "deploy", "--root", str(tmp_path / "empty-root"), "--config", str(config),
         "--unit-dir", str(units), "--no-systemctl", "--offline", "--bind-ip", "127.0.0.1",
         "--port-base", str(base)],
        env=dict(os.environ, XOQ_HOME=str(home), XOQ_LOG="warn"), check=True,
        capture_output=True, text=True,
    )
    machine = json.loads((home / "machine.json").read_text())
    servers = []
    try:
        for unit in sorted(os.listdir(units)):
            args = _exec_start((units / unit).read_text())
            assert args[0] == xoq_bin()
            servers.append(Server(args[1:], home))
        where = f"{machine['machine_id']}@127.0.0.1:{base}"
        with serial.Serial(f"{where}/so101", 1_000_000, timeout=2) as port:
            port.write(bytes([0xFF, 0xFF, 0x01, 0x02, 0x01, 0xFB]))  # PING servo 1
            reply = port.read(6)
            assert reply[:3] == bytes([0xFF, 0xFF, 0x01]), reply
        with can.Bus(interface="xoq", channel=f"{where}/openarm") as bus:
            bus.send(can.Message(arbitration_id=0x001, data=[0xFF] * 7 + [0xFC], is_extended_id=False))
            msg = bus.recv(timeout=2)
            assert msg is not None and msg.arbitration_id == 0x11, msg
    finally:
        for s in servers:
            s.kill()
