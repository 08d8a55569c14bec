"""pyserial on remote ports: stock pyserial API, real servers, pty devices."""

from __future__ import annotations

import os
import threading
import time

import pytest
import serial

from conftest import client_key, closed_udp_port, free_id, raises_while_blocked, wait_for


@pytest.fixture
def echo_server(start, pty_echo):
    """serial-server on a pty whose far end echoes."""
    s = start("serial-server", pty_echo.path, "115200", "--bind", "127.0.0.1:0")
    return s


def test_serial_patch_is_installed_without_import():
    # xoq_autopatch.pth ran at interpreter start: nobody imported xoq here.
    assert getattr(serial.Serial, "_xoq_patched", False)
    assert "xoq" in serial.protocol_handler_packages


def test_echo_p2p_byte_exact(echo_server):
    data = os.urandom(256 * 1024)
    with serial.Serial(echo_server.address, 115200, timeout=10) as s:
        assert isinstance(s, serial.Serial)
        got = bytearray()
        for i in range(0, len(data), 4096):
            assert s.write(data[i : i + 4096]) == 4096
            got += s.read(4096)
        assert bytes(got) == data


def test_echo_via_url_handler(echo_server):
    with serial.serial_for_url("xoq://" + echo_server.address, baudrate=115200, timeout=5) as s:
        assert s.write(b"hello xoq\n") == 10
        assert s.readline() == b"hello xoq\n"


def test_echo_through_relay(start, relay, pty_echo):
    srv = start(
        "serial-server", pty_echo.path, "115200", "--bind", "127.0.0.1:0",
        "--relay", relay, "--moq", "anon/py-serial", "--moq-writes", "on",
    )
    data = os.urandom(64 * 1024)
    with serial.Serial(f"{relay}/anon/py-serial", timeout=10) as s:
        got = bytearray()
        for i in range(0, len(data), 1024):
            s.write(data[i : i + 1024])
            got += s.read(1024)
        assert bytes(got) == data
    assert srv.proc.poll() is None


def test_write_accepts_what_pyserial_accepts(echo_server):
    with serial.Serial(port=echo_server.address, baudrate=115200, timeout=5) as s:
        assert s.write([0xFF, 0xFF, 1, 2]) == 4
        assert s.write(bytearray(b"ab")) == 2
        assert s.write(memoryview(b"cd")) == 2
        assert s.write(b"") == 0
        assert s.read(8) == b"\xff\xff\x01\x02abcd"
        with pytest.raises(TypeError):
            s.write("text is not bytes")


def test_read_timeout_returns_early_with_fewer_bytes(echo_server):
    with serial.Serial(echo_server.address, 115200, timeout=0.4) as s:
        s.write(b"0123456789")
        t0 = time.monotonic()
        got = s.read(100)
        elapsed = time.monotonic() - t0
        assert got == b"0123456789"
        # It waited for the rest until the timeout, then returned what it had.
        assert 0.3 <= elapsed < 3.0


def test_timeout_zero_never_waits(echo_server):
    with serial.Serial(echo_server.address, 115200, timeout=0) as s:
        t0 = time.monotonic()
        assert s.read(10) == b""
        assert time.monotonic() - t0 < 0.5
        s.write(b"xy")
        wait_for(lambda: s.in_waiting == 2, what="2 bytes to arrive")
        assert s.read(10) == b"xy"


def test_timeout_none_blocks_until_size(echo_server, pty_echo):
    with serial.Serial(echo_server.address, 115200, timeout=None) as s:
        pty_echo.echo = False
        threading.Timer(0.3, lambda: pty_echo.inject(b"abc")).start()
        threading.Timer(0.6, lambda: pty_echo.inject(b"def")).start()
        t0 = time.monotonic()
        assert s.read(6) == b"abcdef"
        assert time.monotonic() - t0 >= 0.5


def test_inter_byte_timeout(echo_server, pty_echo):
    with serial.Serial(echo_server.address, 115200, timeout=5, inter_byte_timeout=0.2) as s:
        pty_echo.echo = False
        pty_echo.inject(b"burst")
        t0 = time.monotonic()
        assert s.read(100) == b"burst"
        assert time.monotonic() - t0 < 4


def test_in_waiting_after_data_arrives(echo_server):
    with serial.Serial(echo_server.address, 115200, timeout=1) as s:
        assert s.in_waiting == 0
        assert s.out_waiting == 0
        s.write(bytes(range(32)))
        wait_for(lambda: s.in_waiting == 32, what="in_waiting == 32")
        assert s.read_all() == bytes(range(32))
        assert s.in_waiting == 0


def test_read_until_and_readline(echo_server):
    with serial.Serial(echo_server.address, 115200, timeout=2) as s:
        s.write(b"one;two;\nrest")
        assert s.read_until(b";") == b"one;"
        assert s.read_until(b";") == b"two;"
        assert s.readline() == b"\n"
        assert s.read_until(b"never", size=4) == b"rest"


def test_reset_input_buffer_discards_received(echo_server):
    with serial.Serial(echo_server.address, 115200, timeout=1) as s:
        s.write(b"stale")
        wait_for(lambda: s.in_waiting == 5, what="stale bytes")
        s.reset_input_buffer()
        assert s.in_waiting == 0
        s.reset_output_buffer()
        s.flush()
        s.write(b"fresh")
        assert s.read(5) == b"fresh"


def test_baud_change_reaches_the_remote_pty(echo_server, pty_echo):
    with serial.Serial(echo_server.address, 115200, timeout=1) as s:
        wait_for(lambda: pty_echo.baud() == 115200, what="115200 on the pty")
        s.baudrate = 57600
        wait_for(lambda: pty_echo.baud() == 57600, what="57600 on the pty")
        s.apply_settings({"baudrate": 1_000_000})
        wait_for(lambda: pty_echo.baud() == 1_000_000, what="1 Mbaud on the pty")
        s.write(b"still works")
        assert s.read(11) == b"still works"


def test_modem_line_error_is_clear_and_session_survives(echo_server):
    with serial.Serial(echo_server.address, 115200, timeout=2) as s:
        with pytest.raises(serial.SerialException, match="(?i)dtr|modem|pty|ioctl|not"):
            s.dtr = False
        s.write(b"ok")
        assert s.read(2) == b"ok"


def test_close_frees_the_port_and_busy_is_explained(echo_server, tmp_path):
    a = serial.Serial(echo_server.address, 115200, timeout=1)
    other_key, _ = client_key(tmp_path, "other.key")
    # Another identity is refused while this one holds the port.
    with pytest.raises(serial.SerialException, match="(?i)busy|in use|held"):
        serial.Serial(echo_server.address, 115200, timeout=1, key=other_key)
    a.close()
    assert not a.is_open
    with pytest.raises(serial.PortNotOpenError):
        a.read(1)
    b = serial.Serial(echo_server.address, 115200, timeout=2, key=other_key)
    b.write(b"next")
    assert b.read(4) == b"next"
    b.close()


def test_reopening_from_the_same_identity_replaces_the_older_handle(echo_server):
    a = serial.Serial(echo_server.address, 115200, timeout=1)
    # A second open by the same user (same process here) is not refused: it takes over, as a
    # second open() of a local port works, and the older handle is told.
    b = serial.Serial(echo_server.address, 115200, timeout=2)
    b.write(b"new")
    assert b.read(3) == b"new"
    wait_for(lambda: a.link["state"] == "closed", timeout=5, what="the old handle to be told")
    with pytest.raises(serial.SerialException, match="reopened elsewhere"):
        a.read(1)
    a.close()
    b.close()


def test_a_leaked_handle_does_not_block_a_new_one(echo_server, tmp_path):
    # pyserial's own tests leave handles unclosed after a failure; the next open must work.
    leaked = serial.Serial(echo_server.address, 115200, timeout=1)
    del leaked
    import gc

    gc.collect()
    s = serial.Serial(echo_server.address, 115200, timeout=2)
    s.write(b"ok")
    assert s.read(2) == b"ok"
    s.close()
    # Another identity still waits its turn while a handle is open.
    s = serial.Serial(echo_server.address, 115200, timeout=2)
    other_key, _ = client_key(tmp_path, "other.key")
    with pytest.raises(serial.SerialException, match="(?i)busy"):
        serial.Serial(echo_server.address, 115200, key=other_key)
    s.close()


def test_local_ports_are_untouched(pty_echo):
    s = serial.Serial(pty_echo.path, 115200, timeout=0)
    try:
        assert type(s).__module__ == "serial.serialposix"
        assert not hasattr(s, "_native_port")
    finally:
        s.close()
    with pytest.raises(serial.SerialException):
        serial.Serial("/dev/does-not-exist", 9600)


def test_unknown_endpoint_raises_serial_exception_in_bounded_time():
    addr = f"{free_id()}@127.0.0.1:{closed_udp_port()}"
    t0 = time.monotonic()
    with pytest.raises(serial.SerialException, match="(?i)could not open|no answer|server"):
        serial.Serial(addr, 115200)
    assert time.monotonic() - t0 < 30


def test_bad_address_is_a_clear_error():
    with pytest.raises(serial.SerialException, match="(?i)ip.*port"):
        serial.Serial("xoq://" + "a" * 64 + "@not-an-ip:9", 115200)


def test_allowlist_refuses_unlisted_client(start, pty_echo, tmp_path):
    allowed_key, allowed_id = client_key(tmp_path, "allowed.key")
    other_key, _ = client_key(tmp_path, "other.key")
    srv = start(
        "serial-server", pty_echo.path, "115200", "--bind", "127.0.0.1:0", "--allow", allowed_id
    )
    with pytest.raises(serial.SerialException, match="(?i)allow|refused|not allowed"):
        serial.Serial(srv.address, 115200, key=other_key)
    with pytest.raises(serial.SerialException, match="(?i)allow|refused|not allowed"):
        serial.Serial(srv.address, 115200)  # this user's identity, not listed
    with serial.Serial(srv.address, 115200, timeout=2, key=allowed_key) as s:
        s.write(b"me")
        assert s.read(2) == b"me"


def test_server_killed_mid_read_raises_without_reconnect(echo_server):
    s = serial.Serial(echo_server.address, 115200, timeout=None, reconnect=0)
    err = raises_while_blocked(lambda: s.read(10), echo_server.kill)
    assert isinstance(err, serial.SerialException), err
    s.close()


def test_server_gone_for_good_raises_after_the_reconnect_deadline(echo_server):
    s = serial.Serial(echo_server.address, 115200, timeout=None, reconnect=1.5)
    t0 = time.monotonic()
    err = raises_while_blocked(lambda: s.read(10), echo_server.kill, timeout=30)
    assert isinstance(err, serial.SerialException), err
    assert "unreachable" in str(err), err
    # It kept trying for the deadline, not less.
    assert time.monotonic() - t0 >= 1.5
    assert s.link["state"] == "closed"
    s.close()


def test_port_assigned_after_construction(echo_server):
    s = serial.Serial()
    s.baudrate = 115200
    s.timeout = 2
    s.port = echo_server.address
    s.open()
    try:
        assert s.is_open
        s.write(b"late")
        assert s.read(4) == b"late"
    finally:
        s.close()


def test_two_relay_writers_both_reach_the_device(start, relay, pty_echo):
    start("serial-server", pty_echo.path, "115200", "--bind", "127.0.0.1:0",
          "--relay", relay, "--moq", "anon/py-two-serial", "--moq-writes", "on")
    addr = f"{relay}/anon/py-two-serial"
    with serial.Serial(addr, timeout=5) as a, serial.Serial(addr, timeout=5) as b:
        a.write(b"AAAA")
        b.write(b"BBBB")
        # The device echoes both; every relay reader sees the whole device output.
        for port in (a, b):
            got = port.read(8)
            assert sorted(got) == sorted(b"AAAABBBB"), got


def test_timeout_zero_returns_everything_already_received(echo_server):
    data = os.urandom(100_000)
    with serial.Serial(echo_server.address, 115200, timeout=0) as s:
        s.write(data)
        wait_for(lambda: s.in_waiting == len(data), timeout=20, what="100 kB echoed")
        assert s.read(200_000) == data


def test_write_timeout_cancel_write_and_reset_output_on_a_device_that_stops_reading(start):
    # A pty echo device with XON/XOFF: the echoed XOFF stops the server's tty output, as a
    # device with full buffers would. pyserial's semantics must hold across the network.
    import threading

    from conftest import PtyEcho

    dev = PtyEcho()
    try:
        srv = start("serial-server", dev.path, "115200", "--bind", "127.0.0.1:0")
        with serial.Serial(srv.address, 115200, xonxoff=True, write_timeout=1.0) as s:
            s.write(serial.XOFF)
            time.sleep(0.5)
            t0 = time.monotonic()
            with pytest.raises(serial.SerialTimeoutException):
                s.write(b"timeout please" * 200)
            assert time.monotonic() - t0 >= 1.0, "not before the write timeout"
            # Control requests never wait behind the stuck bytes.
            t0 = time.monotonic()
            s.reset_output_buffer()
            s.baudrate = 57600
            assert time.monotonic() - t0 < 5, "control requests waited behind data"
            # cancel_write() ends a write that blocks on the stopped device.
            s.write_timeout = 10
            threading.Timer(0.5, s.cancel_write).start()
            t0 = time.monotonic()
            n = s.write(b"x" * 4096)
            took = time.monotonic() - t0
            assert 0.4 < took < 5, took
            assert n == 4096  # handed over; the device never took them
            # write_timeout=0: non-blocking, returns what could go at once.
            s.reset_output_buffer()
            s.write_timeout = 0
            assert s.write(b"y" * 10) <= 10
    finally:
        dev.close()
