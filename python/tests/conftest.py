"""Fixtures: real xoq servers (the CLI binary), a real relay, pty devices; all on loopback.

The tests never import anything xoq-specific to reach a device: they use pyserial,
python-can and scservo_sdk the way user code does. Servers are the `xoq` binary
(``XOQ_BIN``, else ``$CARGO_TARGET_DIR/debug/xoq``, else ``target/debug/xoq``).
"""

from __future__ import annotations

import fcntl
import os
import pathlib
import queue
import signal
import struct
import subprocess
import threading
import time
from typing import Iterator

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]

# Tests never leave loopback: no discovery, no public relays, no mDNS.
os.environ["XOQ_OFFLINE"] = "1"


def xoq_bin() -> str:
    """Path of the xoq CLI the servers run from."""
    candidates = [os.environ.get("XOQ_BIN")]
    if os.environ.get("CARGO_TARGET_DIR"):
        candidates.append(os.path.join(os.environ["CARGO_TARGET_DIR"], "debug", "xoq"))
    candidates.append(str(ROOT / "target" / "debug" / "xoq"))
    for c in candidates:
        if c and os.access(c, os.X_OK):
            return c
    raise RuntimeError(
        "the xoq binary was not found: run `cargo build` (or scripts/test.sh), or set XOQ_BIN"
    )


class Server:
    """A running `xoq …` process whose banner (`key: value` lines up to `ready`) was read."""

    def __init__(self, args: list[str], home: pathlib.Path, timeout: float = 30.0) -> None:
        self.args = args
        env = dict(os.environ, XOQ_OFFLINE="1", XOQ_HOME=str(home), XOQ_LOG="warn")
        self.proc = subprocess.Popen(
            [xoq_bin(), *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            stdin=subprocess.DEVNULL,
            env=env,
            text=True,
        )
        self.lines: list[str] = []
        ready: queue.Queue[bool] = queue.Queue()

        def pump() -> None:
            assert self.proc.stdout is not None
            signalled = False
            for line in self.proc.stdout:
                if not signalled:
                    self.lines.append(line.rstrip("\n"))
                    if line.strip() == "ready":
                        ready.put(True)
                        signalled = True
            if not signalled:
                ready.put(False)

        threading.Thread(target=pump, daemon=True).start()
        try:
            ok = ready.get(timeout=timeout)
        except queue.Empty:
            ok = False
        if not ok:
            self.kill()
            raise RuntimeError(f"xoq {' '.join(args)} did not become ready: {self.lines}")

    def values(self, key: str) -> list[str]:
        """Every banner value printed for `key`."""
        prefix = f"{key}: "
        return [l[len(prefix):] for l in self.lines if l.startswith(prefix)]

    @property
    def address(self) -> str:
        """The direct P2P address (`<id>@127.0.0.1:port`)."""
        for a in self.values("address"):
            if "@" in a:
                return a
        raise AssertionError(f"no P2P address in {self.lines}")

    @property
    def endpoint_id(self) -> str:
        return self.values("id")[0]

    def moq_address(self) -> str:
        """The relay URL of the broadcast this server publishes."""
        for a in self.values("address"):
            if a.startswith("http"):
                return a
        raise AssertionError(f"no relay address in {self.lines}")

    def kill(self, sig: int = signal.SIGKILL) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()


@pytest.fixture
def home(tmp_path: pathlib.Path) -> pathlib.Path:
    h = tmp_path / "home"
    h.mkdir()
    return h


@pytest.fixture
def start(home: pathlib.Path) -> Iterator:
    """`start("serial-server", "sim:so101", ...)` → a ready Server, killed at teardown."""
    servers: list[Server] = []

    def _start(*args: str, timeout: float = 30.0) -> Server:
        s = Server(list(args), home, timeout)
        servers.append(s)
        return s

    yield _start
    for s in servers:
        s.kill()


@pytest.fixture
def relay(start) -> str:
    """A running embedded relay; its URL."""
    r = start("relay", "--listen", "127.0.0.1:0")
    return r.values("url")[0]


class PtyEcho:
    """A pty pair whose master end echoes everything back: a serial device with a loopback
    plug. `path` is the device the server opens; `slave_fd` stays open so termios can be read."""

    def __init__(self) -> None:
        self.master, self.slave_fd = os.openpty()
        self.path = os.ttyname(self.slave_fd)
        self._stop = False
        self.echo = True
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        import select

        while not self._stop:
            r, _, _ = select.select([self.master], [], [], 0.05)
            if not r:
                continue
            try:
                data = os.read(self.master, 65536)
            except OSError:
                return
            if self.echo and data:
                view = memoryview(data)
                while view:
                    n = os.write(self.master, view)
                    view = view[n:]

    def inject(self, data: bytes) -> None:
        """Bytes the device sends on its own."""
        os.write(self.master, data)

    def baud(self) -> int:
        """The output speed the server set on the port (termios2, so any rate shows)."""
        tcgets2 = 0x802C542A  # _IOR('T', 0x2A, struct termios2) on Linux
        buf = fcntl.ioctl(self.slave_fd, tcgets2, bytes(44))
        return struct.unpack_from("I", buf, 40)[0]

    def close(self) -> None:
        self._stop = True
        self.thread.join(timeout=1)
        for fd in (self.master, self.slave_fd):
            try:
                os.close(fd)
            except OSError:
                pass


@pytest.fixture
def pty_echo() -> Iterator[PtyEcho]:
    p = PtyEcho()
    yield p
    p.close()


def wait_for(cond, timeout: float = 5.0, what: str = "condition") -> None:
    """Poll `cond()` until true; fail with `what` after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return
        time.sleep(0.005)
    raise AssertionError(f"timed out waiting for {what}")


def free_id() -> str:
    """A valid endpoint id nobody serves (a fresh identity, thrown away)."""
    import tempfile

    import xoq

    with tempfile.TemporaryDirectory() as d:
        return xoq.endpoint_id(os.path.join(d, "unused.key"))


def client_key(tmp_path: pathlib.Path, name: str = "client.key") -> tuple[str, str]:
    """A client identity file and its endpoint id."""
    import xoq

    path = str(tmp_path / name)
    return path, xoq.endpoint_id(path)


def closed_udp_port() -> int:
    """A loopback UDP port with nobody listening."""
    import socket

    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port



def raises_while_blocked(call, interrupt, timeout: float = 20.0) -> BaseException:
    """Run the blocking `call()` in a thread, run `interrupt()`, and return what `call` raised.

    Fails if `call` is still blocked `timeout` seconds later, or returned normally.
    """
    errors: list[BaseException] = []

    def run() -> None:
        try:
            call()
        except BaseException as e:  # noqa: BLE001 - the caller checks the type
            errors.append(e)

    t = threading.Thread(target=run, daemon=True)
    t.start()
    time.sleep(0.2)
    interrupt()
    t.join(timeout=timeout)
    assert not t.is_alive(), "the call is still blocked"
    assert errors, "the call returned instead of raising"
    return errors[0]
