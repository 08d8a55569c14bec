"""Enable a Damiao motor, move it to 0.5 rad for half a second, disable it: plain python-can.

    python damiao_enable.py <address> [motor-id]   # e.g. the OpenArm address `xoq demo` prints
"""

import sys
import time

import can

ENABLE = [0xFF] * 7 + [0xFC]
DISABLE = [0xFF] * 7 + [0xFD]
PMAX, VMAX, TMAX = 12.5, 45.0, 54.0  # DM8009 (OpenArm joints 1-2); see the motor's table


def to_uint(x: float, lo: float, hi: float, bits: int) -> int:
    x = min(max(x, lo), hi)
    return int((x - lo) / (hi - lo) * ((1 << bits) - 1))


def mit(p: float, v: float, kp: float, kd: float, t: float) -> list:
    """Damiao MIT command: position, velocity, gains and feed-forward torque."""
    p, v, t = to_uint(p, -PMAX, PMAX, 16), to_uint(v, -VMAX, VMAX, 12), to_uint(t, -TMAX, TMAX, 12)
    kp, kd = to_uint(kp, 0, 500, 12), to_uint(kd, 0, 5, 12)
    return [p >> 8, p & 0xFF, v >> 4, (v & 0xF) << 4 | kp >> 8, kp & 0xFF,
            kd >> 4, (kd & 0xF) << 4 | t >> 8, t & 0xFF]


def position(data: bytes) -> float:
    return ((data[1] << 8) | data[2]) / 65535 * 2 * PMAX - PMAX


def main() -> None:
    if len(sys.argv) < 2:
        raise SystemExit(__doc__)
    motor = int(sys.argv[2], 0) if len(sys.argv) > 2 else 1
    with can.Bus(channel=sys.argv[1], interface="xoq") as bus:
        for data in [ENABLE] + [mit(0.5, 0, 30, 1, 0)] * 250 + [DISABLE]:
            bus.send(can.Message(arbitration_id=motor, data=data, is_extended_id=False))
            reply = bus.recv(timeout=1.0)
            if reply is None:
                raise SystemExit(f"motor {motor} did not answer")
            time.sleep(0.002)
        print(f"motor {motor}: last position {position(reply.data):+.3f} rad, replies on 0x{reply.arbitration_id:02X}")


if __name__ == "__main__":
    main()
