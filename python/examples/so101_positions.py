"""Read the six servo positions of an SO-101 arm through plain pyserial.

    python so101_positions.py <address>      # e.g. the SO-101 P2P address `xoq demo` prints

Nothing here knows about xoq: the address goes where "/dev/ttyUSB0" would.
"""

import sys

import serial

READ, PRESENT_POSITION = 0x02, 56


def read_position(port: serial.Serial, servo: int) -> int:
    body = [servo, 4, READ, PRESENT_POSITION, 2]
    port.write([0xFF, 0xFF, *body, ~sum(body) & 0xFF])
    reply = port.read(8)  # FF FF id len err lo hi chk
    if len(reply) != 8 or reply[:3] != bytes([0xFF, 0xFF, servo]):
        raise RuntimeError(f"servo {servo}: no valid reply ({reply.hex()})")
    return reply[5] | reply[6] << 8


def main() -> None:
    if len(sys.argv) < 2:
        raise SystemExit(__doc__)
    with serial.Serial(sys.argv[1], 1_000_000, timeout=0.5) as port:
        print([read_position(port, servo) for servo in range(1, 7)])


if __name__ == "__main__":
    main()
