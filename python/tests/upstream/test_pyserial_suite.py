"""pyserial 3.5's own port tests (the sdist's test/ directory), unmodified, on an xoq port.

Each upstream module reads the global ``PORT``; it is set to ``xoq://<address>`` of a
``xoq serial-server`` on a pty echo device (see conftest.py) and every upstream test runs as
one pytest test, in upstream order, the tests of one module sharing one server.
"""

from __future__ import annotations

import unittest

import pytest

UPSTREAM_SDIST = "pyserial-3.5"

# The port-parametrised modules (the others test loop://, rfc2217, URL parsing or utilities).
MODULES = [
    "test", "test_advanced", "test_cancel", "test_context", "test_exclusive",
    "test_high_load", "test_iolib", "test_readline", "test_rs485", "test_settings_dict",
    "test_threaded",
]

# Upstream tests that need a loopback plug's modem wiring (RTS->CTS, DTR->DSR). A pty has no
# modem lines: TIOCMGET/TIOCMSET fail with ENOTTY, so stock pyserial on the pty itself fails
# these two ("Inappropriate ioctl for device"), and through xoq they fail the same way (the
# server reports "set RTS failed on /dev/pts/N: Not a typewriter"). Every other test runs,
# including test.Test_MoreTimeouts.test_WriteTimeout (XOFF flow control: the pty stops
# accepting, see conftest.pty_echo_device) and test.Test0_DataWires.test3_RI (asserts that RI
# reads off, which holds on a pty).
NO_MODEM_LINES = {
    "test.Test0_DataWires.test1_RTS": "sets RTS and expects CTS to follow (RTS-CTS wired)",
    "test.Test0_DataWires.test2_DTR": "sets DTR and expects DSR to follow (DTR-DSR wired)",
}

# Tests that need a line a pty is not: they fail the same way on a local pty with stock
# pyserial. Each names what covers the same behaviour elsewhere.
NOT_A_PTY = {
    "test_cancel.TestCancelWrite.test_cancel_once": (
        "a pty does not pace output at the baud rate: 1 KiB at 300 baud leaves at once, so "
        "write() has returned before cancel_write() is called; cancel_write is tested with a "
        "device that stops reading (XOFF) in python/tests/test_serial.py"
    ),
}

# Longest a single upstream test may run before it counts as hung (the slowest legitimate
# ones: Test1_Forever waits 3 s for its marker, timeouts of 1-10 s elsewhere).
DEADLINE = 30.0


def upstream_cases(test_dir, upstream) -> list:
    cases = []
    for name in MODULES:
        module = upstream.import_file(f"pyserial_upstream_{name}", test_dir / f"{name}.py")
        suite = unittest.defaultTestLoader.loadTestsFromModule(module)
        for test in upstream.flatten(suite):
            case_name = f"{name}.{type(test).__name__}.{test._testMethodName}"
            cases.append(upstream.UpstreamCase.of(case_name, name, test, module))
    return cases


def test_pyserial(upstream_case, serial_devices, upstream) -> None:
    case = upstream_case
    if case.name in NO_MODEM_LINES:
        pytest.skip(f"{case.name}: pty has no modem lines: {NO_MODEM_LINES[case.name]}")
    if case.name in NOT_A_PTY:
        pytest.skip(f"{case.name}: {NOT_A_PTY[case.name]}")

    def configure(_test, address: str) -> None:
        case.module.PORT = f"xoq://{address}"

    upstream.run_case(case, serial_devices, DEADLINE, configure)
