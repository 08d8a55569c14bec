# Client side of `xoq bench connect`: open → first reply through the Python package, as user
# code opens a port or a bus. Prints one line of key=value pairs (microseconds).
import sys
import time

import can
import serial

serial_addr, can_addr, count = sys.argv[1], sys.argv[2], int(sys.argv[3])
MIT_ZERO = bytes([0x7F, 0xFF, 0x7F, 0xF0, 0x00, 0x00, 0x07, 0xFF])
payload = bytes(range(64))


def pct(v, q):
    v = sorted(v)
    return v[round((len(v) - 1) * q)] * 1e6


def serial_open():
    t = time.perf_counter()
    port = serial.Serial(serial_addr, 1_000_000, timeout=5)
    port.write(payload)
    got = port.read(len(payload))
    d = time.perf_counter() - t
    port.close()
    if got != payload:
        raise SystemExit("serial echo corrupted or timed out")
    return d


def can_open():
    t = time.perf_counter()
    bus = can.Bus(channel=can_addr, interface="xoq")
    bus.send(can.Message(arbitration_id=0x07, data=MIT_ZERO, is_extended_id=False))
    while True:
        m = bus.recv(timeout=5)
        if m is None:
            raise SystemExit("motor reply timed out")
        if m.arbitration_id == 0x17:
            break
    d = time.perf_counter() - t
    bus.shutdown()
    return d


out = {}
for name, fn in (("serial", serial_open), ("can", can_open)):
    lat = [fn() for _ in range(count + count // 10)][count // 10:]
    out[f"{name}_p50_us"], out[f"{name}_p99_us"] = pct(lat, 0.5), pct(lat, 0.99)
print(" ".join(f"{k}={v:.1f}" for k, v in out.items()))
