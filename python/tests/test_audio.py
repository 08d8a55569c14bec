"""python-sounddevice's interface on a remote microphone/speaker: ``xoq.sounddevice``.

The server is ``xoq audio-server sim:tone:440``: its microphone's sample i is
``0.5 * sin(2 * pi * 440 * i / rate)``, so with a PCM codec (``codec='f32'``/``'s16'``, an
xoq keyword of every stream) the values read are checked exactly, and continuity shows as
one phase fitting every frame. With Opus (the default) the frequency is checked.
The speaker's recording is not visible from Python: writes are checked for errors, pacing
and underflow reports.
"""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

import xoq.sounddevice as sd

RATE = 48000
HZ = 440.0
PERIOD = 1200  # 440 / 48000 = 11 / 1200: the tone repeats every 1200 samples


@pytest.fixture(autouse=True)
def client_home(tmp_path, monkeypatch):
    """Client keys go to a throw-away home; no default device leaks between tests."""
    monkeypatch.setenv("XOQ_HOME", str(tmp_path / "client-home"))
    sd.default.reset()
    yield
    sd.stop()
    sd.default.reset()


@pytest.fixture
def tone(start):
    """A 440 Hz microphone (48 kHz mono) with a recording speaker; its address."""
    return start("audio-server", "sim:tone:440", "--offline", "--bind", "127.0.0.1:0").address


@pytest.fixture
def stereo_tone(start):
    return start("audio-server", "sim:tone:440", "--offline", "--bind", "127.0.0.1:0",
                 "--channels", "2").address


def expected(start: int, n: int, rate: int = RATE) -> np.ndarray:
    i = np.arange(start, start + n, dtype=np.float64)
    return 0.5 * np.sin(2 * np.pi * np.modf(i * HZ / rate)[0])


def phase_of(x: np.ndarray) -> int:
    """The tone index (mod one period) of x[0], from its first samples."""
    head = x[:200].astype(np.float64)
    errors = [np.abs(head - expected(p, len(head))).max() for p in range(PERIOD)]
    return int(np.argmin(errors))


def assert_tone(x: np.ndarray, tolerance: float) -> None:
    """x (1-D, float) is the tone, every sample in place: no gap, no repeat."""
    p = phase_of(x)
    err = np.abs(x.astype(np.float64) - expected(p, len(x))).max()
    assert err <= tolerance, f"max error {err} from the tone (phase {p})"


def peak_hz(x: np.ndarray, rate: int = RATE) -> float:
    spectrum = np.abs(np.fft.rfft(x * np.hanning(len(x))))
    return float(np.argmax(spectrum)) * rate / len(x)


# -- input, blocking -----------------------------------------------------------------------


def test_input_stream_reads_exact_float32_with_pcm(tone):
    with sd.InputStream(device=tone, codec="f32") as s:
        assert s.samplerate == RATE and s.channels == 1 and s.dtype == "float32"
        assert s.codec == "f32" and s.device == tone and s.device_name == "sim:tone:440"
        assert s.active and not s.stopped and not s.closed
        assert s.latency == pytest.approx(0.020 + 0.040)
        blocks = []
        for frames in (1000, 333, 4800, 1):  # not multiples of the 960-frame packets
            data, overflowed = s.read(frames)
            assert isinstance(data, np.ndarray)
            assert data.shape == (frames, 1) and data.dtype == np.float32
            assert overflowed is False
            blocks.append(data[:, 0])
        assert_tone(np.concatenate(blocks), 1e-6)
    assert s.closed and s.stopped


def test_input_stream_int16_with_s16_is_exact(tone):
    with sd.InputStream(device=tone, dtype="int16", channels=1, samplerate=48000,
                        extra_settings=sd.XoqSettings(codec="s16")) as s:
        assert s.codec == "s16" and s.dtype == "int16"
        data, overflowed = s.read(2400)
    assert data.shape == (2400, 1) and data.dtype == np.int16 and not overflowed
    x = data[:, 0]
    p = phase_of(x / 32767.0)
    want = np.round(expected(p, len(x)) * 32767.0)
    assert np.abs(x.astype(np.int64) - want).max() <= 1
    assert np.abs(x).max() > 16000  # amplitude 0.5 of full scale


def test_raw_input_stream_gives_bytes(tone):
    with sd.RawInputStream(device=tone, dtype="int16", codec="s16") as s:
        assert s.samplesize == 2
        buf, overflowed = s.read(480)
    assert len(buf) == 480 * 2 and not overflowed
    assert_tone(np.frombuffer(buf, dtype=np.int16) / 32767.0, 1.5 / 32767)


def test_opus_delivers_the_tone_frequency(tone):
    with sd.InputStream(device=tone) as s:  # Opus by default
        assert s.codec == "opus"
        s.read(4800)  # the codec's first 0.1 s
        data, _ = s.read(24000)
    assert data.shape == (24000, 1) and data.dtype == np.float32
    assert abs(peak_hz(data[:, 0]) - HZ) <= 2.0
    assert_tone(data[:, 0], 0.02)  # close to the source, and continuous
    rms = float(np.sqrt(np.mean(data.astype(np.float64) ** 2)))
    assert 0.3 < rms < 0.42  # a 0.5 amplitude sine: 0.354


def test_a_relay_broadcast_is_listened_to_by_its_url(start, relay):
    start("audio-server", "sim:tone:440", "--offline", "--bind", "127.0.0.1:0",
          "--relay", relay, "--moq", "anon/py-mic")
    url = relay.rstrip("/") + "/anon/py-mic"
    with sd.InputStream(device=url) as s:  # the hang broadcast: Opus, listen-only
        assert s.codec == "opus"
        s.read(4800)
        data, _ = s.read(24000)
    assert abs(peak_hz(data[:, 0]) - HZ) <= 2.0
    assert_tone(data[:, 0], 0.02)
    with pytest.raises(sd.PortAudioError, match="listen-only"):
        sd.OutputStream(device=url).start()


def test_stereo_device_gives_two_columns(stereo_tone):
    with sd.InputStream(device=stereo_tone, codec="f32") as s:
        assert s.channels == 2
        data, _ = s.read(960)
    assert data.shape == (960, 2)
    assert_tone(data[:, 0], 1e-6)
    assert np.array_equal(data[:, 0], data[:, 1])


def test_read_available_and_stopped_stream(tone):
    s = sd.InputStream(device=tone, codec="f32", blocksize=480)
    try:
        assert s.stopped and not s.active and s.blocksize == 480
        with pytest.raises(sd.PortAudioError):
            s.read(10)
        s.start()
        time.sleep(0.15)
        assert s.read_available >= 960
        s.stop()
        assert s.stopped
    finally:
        s.close()
    with pytest.raises(sd.PortAudioError):
        s.read(10)


def test_a_slow_reader_is_told_it_overflowed(tone):
    with sd.InputStream(device=tone, codec="f32", frame_ms=10) as s:
        s.read(480)
        time.sleep(1.5)  # 150 packets of 10 ms: more than the client keeps (100)
        _, overflowed = s.read(480)
        assert overflowed is True
        _, overflowed = s.read(480)
        assert overflowed is False


# -- input, callback -----------------------------------------------------------------------


def test_callback_receives_consecutive_blocks(tone):
    blocks, times, statuses = [], [], []
    done = threading.Event()
    finished = threading.Event()

    def callback(indata, frames, t, status):
        assert frames == 480 and indata.shape == (480, 1) and indata.dtype == np.float32
        blocks.append(indata[:, 0].copy())
        times.append(t.inputBufferAdcTime)
        statuses.append(bool(status))
        if len(blocks) == 20:
            done.set()
            raise sd.CallbackStop

    s = sd.InputStream(device=tone, blocksize=480, codec="f32", callback=callback,
                       finished_callback=finished.set)
    with s:
        assert done.wait(10), "the callback was not called 20 times"
        assert finished.wait(5)
        assert not s.active  # CallbackStop ended it
    assert len(blocks) == 20 and not any(statuses)
    assert_tone(np.concatenate(blocks), 1e-6)
    steps = np.diff(times)
    assert np.allclose(steps, 480 / RATE, atol=1e-4), steps
    # Capture times are the robot clock, the stream's time base.
    assert abs(times[-1] - s.time) < 5


def test_callback_abort_and_stop_from_outside(tone):
    calls = []

    def callback(indata, frames, t, status):
        calls.append(frames)
        if len(calls) == 3:
            raise sd.CallbackAbort

    with sd.InputStream(device=tone, callback=callback) as s:
        deadline = time.monotonic() + 5
        while s.active and time.monotonic() < deadline:
            time.sleep(0.01)
        assert not s.active and len(calls) == 3
        assert calls[0] == 960  # blocksize 0: one 20 ms packet per call

    endless = []
    s = sd.InputStream(device=tone, callback=lambda i, f, t, st: endless.append(f))
    s.start()
    time.sleep(0.2)
    s.stop()
    n = len(endless)
    assert n > 0 and s.stopped and not s.active
    time.sleep(0.1)
    assert len(endless) == n
    s.close()


def test_rec_returns_the_tone(tone):
    data = sd.rec(4800, samplerate=48000, channels=1, device=tone, blocking=True, codec="f32")
    assert data.shape == (4800, 1) and data.dtype == np.float32
    assert_tone(data[:, 0], 1e-6)

    sd.default.device = tone
    sd.default.codec = "s16"
    data = sd.rec(960, dtype="int16")
    assert sd.get_stream().device == tone
    assert sd.wait() is None  # no overflow
    assert data.dtype == np.int16 and data.shape == (960, 1)
    assert_tone(data[:, 0] / 32767.0, 1.5 / 32767)


def test_rec_with_mapping_picks_channels(stereo_tone):
    data = sd.rec(960, device=stereo_tone, mapping=[2], blocking=True, codec="f32")
    assert data.shape == (960, 1)
    assert_tone(data[:, 0], 1e-6)


# -- output --------------------------------------------------------------------------------


def test_output_stream_write_is_paced_without_underflow(tone):
    t = np.arange(RATE // 2)
    sine = (0.3 * np.sin(2 * np.pi * 300 * t / RATE)).astype(np.float32)
    with sd.OutputStream(device=tone, channels=1, samplerate=48000, codec="s16") as s:
        assert s.write_available > 0
        t0 = time.monotonic()
        underflows = [s.write(sine[i:i + 960]) for i in range(0, len(sine), 960)]
        elapsed = time.monotonic() - t0
    assert not any(underflows)
    # Paced like a sound card: 0.5 s of audio takes about 0.5 s minus what is queued.
    assert 0.5 - sd.MAX_AHEAD - 0.05 <= elapsed <= 1.5


def test_output_underflow_is_reported(tone):
    block = np.zeros((960, 1), dtype=np.float32)
    with sd.OutputStream(device=tone) as s:
        assert s.write(block) is False
        time.sleep(0.3)
        assert s.write(block) is True
        assert s.write(block) is False


def test_int16_and_float64_data_are_converted(tone):
    with sd.OutputStream(device=tone, dtype="int16") as s:
        assert s.write(np.zeros(960, dtype=np.int16)) is False
        assert s.write(np.zeros((960, 1))) is False  # float64
        with pytest.raises(ValueError):
            s.write(np.zeros((960, 2), dtype=np.int16))
    with sd.RawOutputStream(device=tone, dtype="float32") as s:
        assert s.write(np.zeros(960, dtype=np.float32).tobytes()) is False


def test_play_blocking_takes_the_duration(tone):
    data = (0.2 * np.sin(2 * np.pi * 500 * np.arange(14400) / RATE)).astype(np.float32)
    t0 = time.monotonic()
    sd.play(data, 48000, device=tone, blocking=True)
    elapsed = time.monotonic() - t0
    assert 0.3 <= elapsed < 3.0
    assert sd.get_status() == sd.CallbackFlags()
    # play() again right away: the previous talker's session is let go first.
    sd.play(data[:4800], device=tone)
    assert sd.wait() is None


def test_output_callback_and_finished_callback(tone):
    calls = []
    finished = threading.Event()

    def callback(outdata, frames, t, status):
        assert outdata.shape == (frames, 1)
        outdata[:, 0] = 0.1
        calls.append(frames)
        if len(calls) == 10:
            raise sd.CallbackStop

    t0 = time.monotonic()
    with sd.OutputStream(device=tone, blocksize=480, callback=callback,
                         finished_callback=finished.set):
        assert finished.wait(10)
    assert calls == [480] * 10
    assert time.monotonic() - t0 >= 0.1  # 0.1 s of audio played before finishing


def test_a_second_talker_is_refused_unless_takeover(tone):
    with sd.OutputStream(device=tone) as first:
        first.write(np.zeros(960, dtype=np.float32))
        with pytest.raises(sd.PortAudioError, match="another client is talking") as err:
            sd.OutputStream(device=tone)
        assert err.value.args[1] == "refused"
        # Listeners are not talkers: they still open.
        with sd.InputStream(device=tone) as listener:
            listener.read(10)
        with sd.OutputStream(device=tone, takeover=True) as second:
            assert second.write(np.zeros(960, dtype=np.float32)) is False
            time.sleep(0.2)
            with pytest.raises(sd.PortAudioError, match="took over"):
                for _ in range(20):
                    first.write(np.zeros(960, dtype=np.float32))


def test_duplex_stream_reads_and_writes_over_one_session(tone):
    with sd.Stream(device=tone, codec="f32") as s:
        assert s.channels == (1, 1) and s.dtype == ("float32", "float32")
        data, overflowed = s.read(960)
        assert s.write(data) is False
    assert_tone(data[:, 0], 1e-6)

    got = []

    def callback(indata, outdata, frames, t, status):
        outdata[:] = indata
        got.append(indata[:, 0].copy())
        if len(got) == 5:
            raise sd.CallbackStop

    with sd.Stream(device=tone, codec="f32", callback=callback) as s:
        deadline = time.monotonic() + 5
        while s.active and time.monotonic() < deadline:
            time.sleep(0.01)
    assert len(got) == 5
    assert_tone(np.concatenate(got), 1e-6)


def test_playrec(tone):
    data = np.zeros((4800, 1), dtype=np.float32)
    out = sd.playrec(data, device=tone, blocking=True, codec="f32")
    assert out.shape == (4800, 1)
    assert_tone(out[:, 0], 1e-6)


# -- errors, devices, defaults -------------------------------------------------------------


def test_another_rate_is_refused_naming_the_devices(tone):
    with pytest.raises(sd.PortAudioError, match="48000") as err:
        sd.InputStream(samplerate=16000, device=tone)
    assert "16000" in str(err.value)
    with pytest.raises(sd.PortAudioError, match="48000"):
        sd.rec(100, samplerate=16000, device=tone)
    with pytest.raises(sd.PortAudioError, match="channel"):
        sd.OutputStream(channels=2, device=tone)


def test_bad_devices_and_arguments(tone):
    with pytest.raises(sd.PortAudioError, match="default.device"):
        sd.InputStream()
    with pytest.raises(sd.PortAudioError, match="not an xoq address"):
        sd.InputStream(device="hw:0")
    with pytest.raises(ValueError, match="dtype"):
        sd.InputStream(device=tone, dtype="float64")
    with pytest.raises(sd.PortAudioError, match="codec"):
        sd.InputStream(device=tone, codec="mp3")
    with pytest.raises(TypeError):
        sd.InputStream(device=tone, bogus=1)
    # sounddevice's PortAudio-only settings are accepted and ignored.
    with sd.InputStream(device=tone, clip_off=True, dither_off=True, never_drop_input=False,
                        prime_output_buffers_using_stream_callback=False,
                        extra_settings=object()) as s:
        s.read(10)


def test_query_devices(tone, stereo_tone):
    info = sd.query_devices(tone)
    assert info["name"] == "sim:tone:440"
    assert info["max_input_channels"] == 1 and info["max_output_channels"] == 1
    assert info["default_samplerate"] == 48000.0
    assert info["address"] == tone
    assert sd.query_devices(stereo_tone)["max_input_channels"] == 2
    assert len(sd.query_devices()) == 0
    sd.default.device = tone
    assert sd.query_devices(kind="input")["name"] == "sim:tone:440"
    devices = sd.query_devices()
    assert len(devices) == 1 and "sim:tone:440" in repr(devices)
    sd.check_input_settings(samplerate=48000, channels=1)
    with pytest.raises(sd.PortAudioError, match="48000"):
        sd.check_output_settings(samplerate=16000)


def test_defaults_are_used(tone):
    sd.default.device = tone
    sd.default.samplerate = 48000
    sd.default.dtype = "int16"
    sd.default.channels = 1
    with sd.InputStream(codec="s16") as s:
        assert s.device == tone and s.dtype == "int16" and s.channels == 1
        data, _ = s.read(100)
        assert data.dtype == np.int16
    sd.default.samplerate = 16000
    with pytest.raises(sd.PortAudioError, match="48000"):
        sd.InputStream()


# -- XoQ 0.3.6 -----------------------------------------------------------------------------


def test_xoq_036_stream_read_chunk(tone):
    s = sd.Stream(tone, samplerate=48000, channels=1, blocksize=960)
    try:
        assert s.active and s.blocksize == 960
        chunk = s.read_chunk()
        assert isinstance(chunk, np.ndarray) and chunk.shape == (960, 1)
        assert chunk.dtype == np.float32
        data = s.read(480)  # 0.3.6: the array alone
        assert isinstance(data, np.ndarray) and data.shape == (480, 1)
        # Reading did not take the speaker: another client may talk.
        with sd.OutputStream(device=tone) as other:
            other.write(np.zeros(960, dtype=np.float32))
        s.write_chunk(np.zeros((960, 1), dtype=np.float32))
        s.write(np.zeros(960, dtype=np.float32))
    finally:
        s.close()
    positional = sd.Stream(tone, 48000, 1, 480)
    try:
        assert positional.read_chunk().shape == (480, 1)
    finally:
        positional.close()
    with pytest.raises(sd.PortAudioError, match="48000"):
        sd.Stream(tone, samplerate=16000)


def test_xoq_036_rec_and_play(tone):
    data = sd.rec(tone, 960, codec="f32")
    assert data.shape == (960, 1)
    assert_tone(data[:, 0], 1e-6)
    sd.play(tone, np.zeros(960, dtype=np.float32), 48000)


def test_read_available_does_not_wait_for_a_blocked_read(tone):
    with sd.InputStream(device=tone, codec="f32") as s:
        reader = threading.Thread(target=lambda: s.read(24000), daemon=True)
        reader.start()
        time.sleep(0.1)
        t0 = time.monotonic()
        assert s.read_available >= 0
        assert time.monotonic() - t0 < 0.2
        reader.join(5)
        assert not reader.is_alive()
