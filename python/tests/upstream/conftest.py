"""Run the test suites shipped in the pyserial 3.5 and python-can 4.6.1 sdists against xoq.

The upstream sources come from ``scripts/fetch_upstream_suites.sh`` (into ``$XOQ_UPSTREAM``,
default ``~/.cache/xoq/upstream``). Every upstream test becomes one pytest test, run by
unittest exactly as upstream wrote it; this file provides the devices behind them:

* pyserial: ``xoq serial-server <pty> 115200 --offline`` on a pty echo device (a pty pair
  whose master echoes every byte: a loopback plug), one server per upstream module, shared
  by that module's tests in upstream order, as ``python test_x.py PORT`` would share a port.
* python-can: one ``xoq can-server virtual:bus0 --offline``; its clients see each other.

Servers are the ``xoq`` binary (``XOQ_BIN``, else ``$CARGO_TARGET_DIR/debug/xoq``), started
with ``python/tests/conftest.py``'s ``Server``; keys go to a temporary ``XOQ_HOME``.
"""

from __future__ import annotations

import importlib.util
import os
import pathlib
import sys
import threading
import time
import traceback
import tty
import unittest
from types import ModuleType
from typing import Callable, Optional

import pytest

# python/tests/conftest.py, as the other test files import it (this directory is a package,
# so pytest loads this file as ``upstream.conftest`` and ``conftest`` stays the parent's).
from conftest import PtyEcho, Server

HERE = pathlib.Path(__file__).resolve().parent
FETCH = HERE.parents[2] / "scripts" / "fetch_upstream_suites.sh"


# This module, handed to the test files by the ``upstream`` fixture and the parametrisation
# hook below (they are collected as ``upstream.test_*``).
_THIS = sys.modules[__name__]


# -- the upstream sources ---------------------------------------------------------------


def upstream_root() -> pathlib.Path:
    return pathlib.Path(
        os.environ.get("XOQ_UPSTREAM") or pathlib.Path.home() / ".cache" / "xoq" / "upstream"
    )


def upstream_test_dir(sdist: str) -> Optional[pathlib.Path]:
    d = upstream_root() / sdist / "test"
    return d if d.is_dir() else None


def missing_sources_message(sdist: str) -> str:
    return (
        f"the upstream test suite {sdist}/test is not in {upstream_root()}: run "
        f"{FETCH} (it downloads the pinned sdists there; XOQ_UPSTREAM overrides the place)"
    )


# -- running one upstream test ----------------------------------------------------------


class Outcome:
    """What unittest said about one upstream test."""

    def __init__(self) -> None:
        self.status = "passed"  # passed | failed | skipped | hung
        self.detail = ""
        self.seconds = 0.0


class _Result(unittest.TestResult):
    def __init__(self, outcome: Outcome) -> None:
        super().__init__()
        self.outcome = outcome

    def _fail(self, test, err) -> None:
        self.outcome.status = "failed"
        exc_type, exc, tb = err
        text = "".join(traceback.format_exception(exc_type, exc, tb))
        self.outcome.detail += text

    addError = addFailure = _fail  # noqa: N815 - unittest's API

    def addSubTest(self, test, subtest, err) -> None:  # noqa: N802
        if err is not None:
            self._fail(subtest, err)

    def addSkip(self, test, reason) -> None:  # noqa: N802
        self.outcome.status = "skipped"
        self.outcome.detail = reason

    def addUnexpectedSuccess(self, test) -> None:  # noqa: N802
        self.outcome.status = "failed"
        self.outcome.detail = "unexpected success of a test marked expectedFailure"


def run_upstream_test(test: unittest.TestCase, deadline: float) -> Outcome:
    """Run ``test`` (its setUp, body and tearDown) in a thread; give up after ``deadline`` s.

    A hung test (e.g. a read with no timeout that nothing ends) is reported as ``hung``; the
    caller then stops the server, which ends the blocked call with an error.
    """
    outcome = Outcome()
    result = _Result(outcome)
    t0 = time.monotonic()
    th = threading.Thread(target=test.run, args=(result,), daemon=True,
                          name=f"upstream {test.id()}")
    th.start()
    th.join(deadline)
    outcome.seconds = time.monotonic() - t0
    if th.is_alive():
        outcome.status = "hung"
        outcome.detail = (
            f"still running after {deadline:.0f} s (upstream has no timeout here); "
            f"stopping the server to end it\n{outcome.detail}"
        )
    return outcome


def report(name: str, outcome: Outcome) -> None:
    """Turn an outcome into the pytest result of the test running it."""
    if outcome.status == "passed":
        return
    if outcome.status == "skipped":
        pytest.skip(f"{name}: upstream skip: {outcome.detail}")
    pytest.fail(f"upstream {name} {outcome.status} after {outcome.seconds:.1f} s:\n"
                f"{outcome.detail}", pytrace=False)


def flatten(suite: unittest.TestSuite) -> list[unittest.TestCase]:
    out: list[unittest.TestCase] = []
    for t in suite:
        if isinstance(t, unittest.TestSuite):
            out.extend(flatten(t))
        else:
            out.append(t)
    return out


# -- servers ----------------------------------------------------------------------------


class Devices:
    """Servers keyed by a name; the one in use is kept, the previous one stopped.

    Upstream tests of one module share one device and one server, in order. A new name (the
    next module) stops the previous server and its device, so at most one runs at a time.
    """

    def __init__(self, home: pathlib.Path, factory: Callable[[str, pathlib.Path], "Device"]):
        self.home = home
        self.factory = factory
        self.name: Optional[str] = None
        self.current: Optional[Device] = None

    def get(self, name: str) -> "Device":
        if self.name != name or self.current is None or not self.current.alive():
            self.stop()
            self.current = self.factory(name, self.home)
            self.name = name
        return self.current

    def stop(self) -> None:
        if self.current is not None:
            self.current.stop()
        self.current = None
        self.name = None


class Device:
    """A running server (and, for serial, its pty)."""

    def __init__(self, server: Server, pty: Optional[PtyEcho] = None) -> None:
        self.server = server
        self.pty = pty

    @property
    def address(self) -> str:
        return self.server.address

    def alive(self) -> bool:
        return self.server.proc.poll() is None

    def stop(self) -> None:
        self.server.kill()
        if self.pty is not None:
            self.pty.close()


def pty_echo_device() -> PtyEcho:
    """A pty pair whose master echoes every byte back (python/tests/conftest.py's PtyEcho),
    with the pty in raw mode from the start (on Linux, termios calls on the master change the
    slave's settings; the server sets its own mode when it opens the slave).

    XOFF: with ``xonxoff=True`` the server sets IXON on the slave; the XOFF the client writes
    comes back through the echo as input, and the kernel then stops the slave's output, so the
    device stops accepting bytes exactly as a loopback plug on a real port with software flow
    control does. No special device is needed for pyserial's write-timeout test.
    """
    p = PtyEcho()
    tty.setraw(p.master)
    return p


@pytest.fixture(scope="session")
def upstream_home(tmp_path_factory) -> pathlib.Path:
    return tmp_path_factory.mktemp("xoq-home")


@pytest.fixture(scope="session")
def serial_devices(upstream_home):
    """``serial_devices.get(module)``: a serial server on a pty echo device for that module."""

    def start(_name: str, home: pathlib.Path) -> Device:
        pty = pty_echo_device()
        try:
            server = Server(["serial-server", pty.path, "115200", "--offline"], home)
        except Exception:
            pty.close()
            raise
        return Device(server, pty)

    d = Devices(upstream_home, start)
    yield d
    d.stop()


@pytest.fixture(scope="session")
def can_devices(upstream_home):
    """``can_devices.get(module)``: one ``can-server virtual:bus0`` for that module's tests."""

    def start(_name: str, home: pathlib.Path) -> Device:
        return Device(Server(["can-server", "virtual:bus0", "--offline"], home))

    d = Devices(upstream_home, start)
    yield d
    d.stop()


@pytest.fixture(scope="session")
def upstream() -> ModuleType:
    """This module's helpers (``run_upstream_test``, ``report``, ...)."""
    return _THIS


# -- one pytest test per upstream test ----------------------------------------------------


class UpstreamCase:
    """One upstream unittest test (its class and method), or the news that the sources are
    missing. The TestCase instance is made when the test runs and dropped right after, as
    unittest's own runner drops it: a port an upstream test leaves open (e.g. from a setUp
    that failed after opening) is closed when the instance is collected, as upstream expects.
    """

    def __init__(self, name: str, group: str = "", cls: Optional[type] = None,
                 method: str = "", module: Optional[ModuleType] = None,
                 missing: str = "") -> None:
        self.name = name  # e.g. test.Test0_DataWires.test1_RTS
        self.group = group  # tests of one group share one server
        self.cls = cls
        self.method = method
        self.module = module
        self.missing = missing

    @classmethod
    def of(cls, name: str, group: str, test: unittest.TestCase,
           module: Optional[ModuleType] = None) -> "UpstreamCase":
        return cls(name, group, type(test), test._testMethodName, module)

    def make(self) -> unittest.TestCase:
        assert self.cls is not None
        return self.cls(self.method)

    def __repr__(self) -> str:
        return self.name


def pytest_configure(config) -> None:
    config.addinivalue_line(
        "markers", "timeout(seconds): pytest-timeout's mark, used by python-can's own tests; "
        "the upstream harness honours it as the test's deadline")


def pytest_generate_tests(metafunc) -> None:
    """Parametrise ``upstream_case`` with every test of the module's upstream suite.

    The test module names its sdist (``UPSTREAM_SDIST``) and lists its cases with
    ``upstream_cases(test_dir, helpers) -> [UpstreamCase]``. Missing sources give one case that
    fails saying how to fetch them (never a silent skip).
    """
    if "upstream_case" not in metafunc.fixturenames:
        return
    sdist = metafunc.module.UPSTREAM_SDIST
    test_dir = upstream_test_dir(sdist)
    if test_dir is None:
        cases = [UpstreamCase("upstream-sources", missing=missing_sources_message(sdist))]
    else:
        cases = metafunc.module.upstream_cases(test_dir, _THIS)
    metafunc.parametrize("upstream_case", cases, ids=[c.name for c in cases])


def upstream_deadline(case: UpstreamCase, default: float) -> float:
    """The test's ``pytest.mark.timeout`` (python-can uses pytest-timeout), else ``default``."""
    method = getattr(case.cls, case.method, None)
    for mark in getattr(method, "pytestmark", []):
        if mark.name == "timeout" and mark.args:
            return float(mark.args[0])
    return default


def run_case(case: UpstreamCase, devices: Devices, deadline: float,
             configure: Callable[[unittest.TestCase, str], None]) -> None:
    """Run ``case`` on ``devices.get(case.group)`` and make it this pytest test's result.

    ``configure(test, address)`` points the upstream test at the server (its module's PORT,
    its class's CHANNEL_1/CHANNEL_2).
    """
    if case.missing:
        pytest.fail(case.missing, pytrace=False)
    device = devices.get(case.group)
    test = case.make()
    configure(test, device.address)
    outcome = run_upstream_test(test, deadline)
    del test  # as unittest's suite does once a test has run
    if not device.alive():
        # A crash must not hide behind the fresh server the next test gets.
        if outcome.status in ("passed", "skipped"):
            outcome.status, outcome.detail = "failed", ""
        outcome.detail += f"\nthe xoq server exited (code {device.server.proc.returncode})"
    elif outcome.status == "hung":
        devices.stop()  # ends the blocked call; the next test gets a fresh server
    report(case.name, outcome)


def import_file(name: str, path: pathlib.Path) -> ModuleType:
    """Import the upstream module at ``path`` as ``name``."""
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod
    spec.loader.exec_module(mod)
    return mod
