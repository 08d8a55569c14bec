# Client side of `xoq bench python`: the same measurements as `xoq bench client`, through
# the Python package (pyserial and python-can, as user code calls them). Prints one line of
# key=value pairs.
import resource
import sys
import time

import can
import serial

serial_addr, can_addr, count = sys.argv[1], sys.argv[2], int(sys.argv[3])
SIZE = 64
MIT_ZERO = bytes([0x7F, 0xFF, 0x7F, 0xF0, 0x00, 0x00, 0x07, 0xFF])


def pct(v, q):
    v = sorted(v)
    return v[round((len(v) - 1) * q)] * 1e6


out = {}
payload = bytes(range(SIZE))
with serial.Serial(serial_addr, 1_000_000, timeout=5) as port:
    lat = []
    for i in range(count + count // 10):
        t = time.perf_counter()
        port.write(payload)
        got = port.read(SIZE)
        d = time.perf_counter() - t
        if got != payload:
            raise SystemExit("serial echo corrupted or timed out")
        if i >= count // 10:
            lat.append(d)
    out["serial_p50_us"], out["serial_p99_us"] = pct(lat, 0.5), pct(lat, 0.99)

with can.Bus(channel=can_addr, interface="xoq") as bus:
    cmd = can.Message(arbitration_id=0x07, data=MIT_ZERO, is_extended_id=False)
    lat = []
    for i in range(count + count // 10):
        t = time.perf_counter()
        bus.send(cmd)
        while True:
            m = bus.recv(timeout=5)
            if m is None:
                raise SystemExit("motor reply timed out")
            if m.arbitration_id == 0x17:
                break
        d = time.perf_counter() - t
        if i >= count // 10:
            lat.append(d)
    out["can_p50_us"], out["can_p99_us"] = pct(lat, 0.5), pct(lat, 0.99)

out["rss_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print(" ".join(f"{k}={v:.1f}" for k, v in out.items()))
