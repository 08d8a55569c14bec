"""xoq_cv2.VideoCapture and cv2.VideoCapture("<address>") against a real `xoq camera-server`
serving the test pattern over P2P on loopback."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest
from conftest import client_key, free_id

cv2 = pytest.importorskip("cv2")
import xoq_cv2  # noqa: E402

from xoq import _xoq  # noqa: E402


def stamp(frame_bgr: np.ndarray) -> tuple[int, int] | None:
    """The test pattern's (frame number, capture time) read back from a BGR picture: the
    top rows hold three 64-bit words as black/white blocks (see xoq-device pattern.rs)."""
    h, w, _ = frame_bgr.shape
    block = max(2, min(w // 64, (h // 2) // 3))
    grey = frame_bgr.astype(np.uint32).sum(axis=2) // 3
    words = []
    for row in range(3):
        word = 0
        for bit in range(64):
            y0, x0 = row * block + block // 4, bit * block + block // 4
            cell = grey[y0 : row * block + block - block // 4, x0 : bit * block + block - block // 4]
            word = (word << 1) | int(cell.mean() > 127)
        words.append(word)
    seq, ts, chk = words
    mask = (1 << 64) - 1

    def rotl(v: int, n: int) -> int:
        return ((v << n) | (v >> (64 - n))) & mask

    return (seq, ts) if chk == rotl(seq, 17) ^ rotl(ts, 41) ^ 0x786F715F63616D31 else None


@pytest.fixture
def camera(start):
    return start("camera-server", "sim:pattern", "--width", "640", "--height", "480")


@pytest.mark.parametrize("codec", ["h264", "jpeg"])
def test_read_returns_bgr_frames_of_the_right_shape_in_order(camera, codec):
    with xoq_cv2.VideoCapture(camera.address, codec=codec) as cap:
        assert cap.isOpened()
        assert cap.get(cv2.CAP_PROP_FOURCC) == cv2.VideoWriter_fourcc(*("H264" if codec == "h264" else "MJPG"))
        last = None
        for _ in range(10):
            ok, frame = cap.read()
            assert ok
            assert frame.shape == (480, 640, 3) and frame.dtype == np.uint8
            s = stamp(frame)
            assert s is not None, "the picture's stamp reads back"
            if last is not None:
                assert s[0] > last, "frames in order"
            last = s[0]
        assert cap.get(cv2.CAP_PROP_FRAME_WIDTH) == 640
        assert cap.get(cv2.CAP_PROP_FRAME_HEIGHT) == 480
        # BGR, not RGB: the pattern's second bar is yellow (R=G=235, B=16).
        ok, frame = cap.read()
        row = frame[300]
        yellow = [px for px in row if px[0] < 60 and px[1] > 200 and px[2] > 200]
        assert len(yellow) > 20, "yellow appears as B low, G and R high"
        # The array owns writable memory (a bytearray): OpenCV can draw on it.
        cv2.rectangle(frame, (10, 10), (50, 50), (0, 0, 255), 2)


def test_grab_retrieve_and_set_width_changes_the_delivered_size(camera):
    cap = xoq_cv2.VideoCapture(camera.address)
    assert cap.grab()
    ok, frame = cap.retrieve()
    assert ok and frame.shape == (480, 640, 3)
    assert cap.retrieve() == (False, None), "one retrieve per grab"
    assert cap.set(cv2.CAP_PROP_FRAME_WIDTH, 320)
    assert cap.get(cv2.CAP_PROP_FRAME_WIDTH) == 320
    ok, frame = cap.read()
    assert ok and frame.shape == (480, 320, 3)
    assert cap.set(cv2.CAP_PROP_FRAME_HEIGHT, 240)
    ok, frame = cap.read()
    assert frame.shape == (240, 320, 3)
    assert stamp(frame) is not None
    cap.release()
    assert not cap.isOpened()
    assert cap.read() == (False, None)
    cap.release()  # twice is fine


def test_cv2_videocapture_opens_remote_addresses_and_leaves_local_ones_alone(camera):
    cap = cv2.VideoCapture(camera.address)
    ok, frame = cap.read()
    assert ok and frame.shape == (480, 640, 3)
    cap.release()
    local = cv2.VideoCapture("/nonexistent/video.mp4")
    assert isinstance(local, cv2.VideoCapture)
    assert not local.isOpened()
    assert not isinstance(local, xoq_cv2.VideoCapture)


def test_stream_end_reads_false_and_unreachable_servers_raise(start, home):
    server = start("camera-server", "sim:pattern", "--width", "320", "--height", "240")
    cap = xoq_cv2.VideoCapture(server.address, codec="jpeg")
    assert cap.read()[0]
    server.kill()
    # The link dies: read() gives (False, None) once the session is gone, as at end of stream.
    for _ in range(400):
        ok, frame = cap.read()
        if not ok:
            break
    assert (ok, frame) == (False, None)
    with pytest.raises(_xoq.XoqError):
        xoq_cv2.VideoCapture("0" * 64 + "@127.0.0.1:9", codec="jpeg")


def test_xoq_cv2_imports_without_the_autopatch():
    out = subprocess.run(
        [sys.executable, "-c", "import cv2, xoq_cv2; print(cv2.VideoCapture.__module__, xoq_cv2.VideoCapture.__module__)"],
        env=dict(os.environ, XOQ_NO_PATCH="1"),
        capture_output=True,
        text=True,
        check=True,
    )
    assert out.stdout.split() == ["cv2", "xoq.cv2"]


def test_local_captures_stay_opencv_objects():
    local = cv2.VideoCapture("/nonexistent/video.mp4")
    assert type(local) is cv2.VideoCapture.__wrapped__
    assert isinstance(local, cv2.VideoCapture)


def test_a_relay_broadcast_reads_through_xoq_cv2(start, relay):
    server = start(
        "camera-server", "sim:pattern", "--width", "320", "--height", "240",
        "--relay", relay, "--moq", "anon/pycam", "--no-p2p",
    )
    cap = xoq_cv2.VideoCapture(server.moq_address())
    for _ in range(5):
        ok, frame = cap.read()
        assert ok and frame.shape == (240, 320, 3)
        assert stamp(frame) is not None
    assert not cap.set(cv2.CAP_PROP_FRAME_WIDTH, 640), "view-only"
    cap.release()


def test_an_unlisted_viewer_is_refused(start, tmp_path):
    key, my_id = client_key(tmp_path, "me.key")
    locked = start("camera-server", "sim:pattern", "--width", "320", "--height", "240", "--allow", free_id())
    with pytest.raises(_xoq.RefusedError, match="(?i)not allowed"):
        xoq_cv2.VideoCapture(locked.address, key=key)
    mine = start("camera-server", "sim:pattern", "--width", "320", "--height", "240", "--allow", my_id)
    with xoq_cv2.VideoCapture(mine.address, key=key) as cap:
        assert cap.read()[0]
