//! `AudioStream`: a remote microphone and speaker for Python (the native half of
//! `xoq.sounddevice`).
//!
//! Samples cross into Python as `bytes` of little-endian float32, interleaved, which
//! `numpy.frombuffer` wraps without a copy; the Python module does the block assembly,
//! dtype conversion and real-time pacing that python-sounddevice users expect.
//!
//! The client sits in one slot: reads wait for the next chunk in short slices with the GIL
//! released (Ctrl-C, `close()` from another thread and a waiting writer get through between
//! slices), writes encode and send on the shared runtime. The slot's lock is only ever taken
//! with the GIL released, so a thread holding it never waits for the GIL.

use std::path::PathBuf;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::PyBytes;
use xoq::audio::{AudioChunk, AudioCodec, AudioFormat, AudioOptions, RemoteAudio};
use xoq::client::ClientError;

use crate::{duration, identity, runtime, to_py};

/// Longest a read holds the client while waiting: a writer on another thread waits at most
/// this long for its turn (shorter than [`crate::SIGNAL_SLICE`], so Ctrl-C gets through too).
const READ_SLICE: Duration = Duration::from_millis(10);

/// A chunk as Python sees it: `(first_sample, capture_us, float32le_bytes)`.
type PyChunk<'py> = (u64, u64, Bound<'py, PyBytes>);

fn closed() -> PyErr {
    crate::ClosedError::new_err("the audio stream is closed")
}

/// A connected remote microphone/speaker. Methods may be called from several Python threads.
#[pyclass(frozen, module = "xoq._xoq")]
pub(crate) struct AudioStream {
    audio: Mutex<Option<RemoteAudio>>,
    format: AudioFormat,
    device: String,
    address: String,
    listen: bool,
    talk: bool,
    /// Writers waiting for the slot: a reader steps aside between slices while there are any.
    writers: AtomicUsize,
}

impl AudioStream {
    /// Run `f` on the client with the GIL released (`None` once closed).
    fn with<T: Send>(
        &self,
        py: Python<'_>,
        f: impl FnOnce(&mut RemoteAudio) -> T + Send,
    ) -> PyResult<T> {
        py.detach(|| {
            let mut slot = self.audio.lock().ok()?;
            slot.as_mut().map(f)
        })
        .ok_or_else(closed)
    }

    /// One wait of at most `slice` for the next chunk (`Ok(None)`: nothing yet).
    fn read_slice(
        &self,
        py: Python<'_>,
        slice: Duration,
    ) -> PyResult<Result<Option<AudioChunk>, ClientError>> {
        py.detach(|| {
            if self.writers.load(Ordering::Acquire) > 0 {
                // Let the writer have the client; come back for the chunk right after.
                std::thread::sleep(Duration::from_millis(1));
                return Some(Ok(None));
            }
            let slot = self.audio.lock().ok()?;
            slot.as_ref().map(|a| a.read_blocking(Some(slice)))
        })
        .ok_or_else(closed)
    }
}

#[pymethods]
impl AudioStream {
    /// Connect to `address` (`<id>@ip:port` or `<id>`; audio is P2P only).
    ///
    /// `samplerate`/`channels` `None` take the device's; others than the device's are
    /// refused by the server (`RefusedError`, its message names the device's values).
    /// `codec`: `"opus"`, `"s16"` or `"f32"`; `frame_ms`: 10, 20, 40 or 60. `listen` receives
    /// the microphone, `talk` sends to the speaker (one talker per device: a second is
    /// refused unless `takeover`).
    #[new]
    #[pyo3(signature = (address, samplerate=None, channels=None, codec="opus", frame_ms=20, listen=true, talk=false, takeover=false, offline=None, key=None, ephemeral=false))]
    #[allow(clippy::too_many_arguments)]
    fn new(
        py: Python<'_>,
        address: &str,
        samplerate: Option<u32>,
        channels: Option<u8>,
        codec: &str,
        frame_ms: u8,
        listen: bool,
        talk: bool,
        takeover: bool,
        offline: Option<bool>,
        key: Option<PathBuf>,
        ephemeral: bool,
    ) -> PyResult<Self> {
        let codec: AudioCodec = codec.parse().map_err(PyValueError::new_err)?;
        let opts = AudioOptions::new()
            .rate_channels(samplerate.unwrap_or(0), channels.unwrap_or(0))
            .codec(codec)
            .frame_ms(frame_ms)
            .listen(listen)
            .talk(talk)
            .takeover(takeover)
            .offline(crate::offline(offline))
            .identity(identity(key, ephemeral)?);
        let rt = runtime()?;
        let audio = py
            .detach(|| rt.block_on(RemoteAudio::connect(address, opts)))
            .map_err(to_py)?;
        Ok(Self {
            format: audio.format(),
            device: audio.device().to_string(),
            address: address.to_string(),
            audio: Mutex::new(Some(audio)),
            listen,
            talk,
            writers: AtomicUsize::new(0),
        })
    }

    /// The next microphone chunk within `timeout` seconds (`None` waits, `0` polls), or
    /// `None`: `(first_sample, capture_us, samples)` with `samples` interleaved
    /// little-endian float32 in [-1, 1], one packet's worth. `first_sample` is the index of
    /// its first sample (per channel) in the microphone's stream, `capture_us` its capture
    /// time on the robot clock (µs since the Unix epoch). Raises `ClosedError` once the
    /// stream ended (with the server's reason, e.g. another talker took the speaker).
    #[pyo3(signature = (timeout=None))]
    fn read<'py>(&self, py: Python<'py>, timeout: Option<f64>) -> PyResult<Option<PyChunk<'py>>> {
        let deadline = duration(timeout)?.map(|t| Instant::now() + t);
        loop {
            let slice = deadline.map_or(READ_SLICE, |d| {
                d.saturating_duration_since(Instant::now()).min(READ_SLICE)
            });
            match self.read_slice(py, slice)? {
                Ok(Some(chunk)) => {
                    let bytes = PyBytes::new_with(py, chunk.samples.len() * 4, |buf| {
                        for (out, s) in buf.chunks_exact_mut(4).zip(&chunk.samples) {
                            out.copy_from_slice(&s.to_le_bytes());
                        }
                        Ok(())
                    })?;
                    return Ok(Some((chunk.first_sample, chunk.capture_us, bytes)));
                }
                Ok(None) => {}
                Err(e) => return Err(to_py(e)),
            }
            if deadline.is_some_and(|d| Instant::now() >= d) {
                return Ok(None);
            }
            py.check_signals()?;
        }
    }

    /// Send interleaved little-endian float32 samples to the speaker. Whole frames go at
    /// once; a partial frame waits for the next call or `flush()`. Needs `talk=True`.
    fn write(&self, py: Python<'_>, data: &[u8]) -> PyResult<()> {
        if !data.len().is_multiple_of(4) {
            return Err(PyValueError::new_err(format!(
                "{} bytes is not a whole number of float32 samples",
                data.len()
            )));
        }
        let channels = usize::from(self.format.channels);
        if !(data.len() / 4).is_multiple_of(channels) {
            return Err(PyValueError::new_err(format!(
                "{} samples is not a whole number of {channels}-channel frames",
                data.len() / 4
            )));
        }
        let samples: Vec<f32> = data
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect();
        let rt = runtime()?;
        // One frame at a time: the client paces each to real time, and a reader in another
        // thread gets the client between frames instead of waiting out a whole write.
        let per = self.format.frame_samples() * channels;
        for piece in samples.chunks(per.max(1)) {
            self.writers.fetch_add(1, Ordering::AcqRel);
            let r = self.with(py, |a| rt.block_on(a.write(piece)));
            self.writers.fetch_sub(1, Ordering::AcqRel);
            r?.map_err(to_py)?;
        }
        Ok(())
    }

    /// Pad a partial frame with silence and send it.
    fn flush(&self, py: Python<'_>) -> PyResult<()> {
        let rt = runtime()?;
        self.writers.fetch_add(1, Ordering::AcqRel);
        let r = self.with(py, |a| rt.block_on(a.flush()));
        self.writers.fetch_sub(1, Ordering::AcqRel);
        r?.map_err(to_py)
    }

    /// Flush, end the session and free the speaker (idempotent).
    fn close(&self, py: Python<'_>) -> PyResult<()> {
        let rt = runtime()?;
        self.writers.fetch_add(1, Ordering::AcqRel);
        py.detach(|| {
            let taken = self.audio.lock().ok().and_then(|mut s| s.take());
            if let Some(a) = taken {
                rt.block_on(a.close());
            }
        });
        self.writers.fetch_sub(1, Ordering::AcqRel);
        Ok(())
    }

    /// Whether `close()` has not been called.
    #[getter]
    fn is_open(&self, py: Python<'_>) -> bool {
        py.detach(|| self.audio.lock().map(|s| s.is_some()).unwrap_or(false))
    }

    /// Samples per second per channel (the device's).
    #[getter]
    fn rate(&self) -> u32 {
        self.format.rate
    }

    /// Channels (the device's).
    #[getter]
    fn channels(&self) -> u8 {
        self.format.channels
    }

    /// How samples travel: `"opus"`, `"s16"` or `"f32"`.
    #[getter]
    fn codec(&self) -> &'static str {
        self.format.codec.name()
    }

    /// Duration of one packet, ms.
    #[getter]
    fn frame_ms(&self) -> u8 {
        self.format.frame_ms
    }

    /// Samples per channel in one packet (one `read` chunk).
    #[getter]
    fn frame_samples(&self) -> usize {
        self.format.frame_samples()
    }

    /// The device the server serves (e.g. `sim:tone:440`).
    #[getter]
    fn device(&self) -> &str {
        &self.device
    }

    /// The address this stream was opened with.
    #[getter]
    fn address(&self) -> &str {
        &self.address
    }

    /// Whether this stream receives the microphone.
    #[getter]
    fn listen(&self) -> bool {
        self.listen
    }

    /// Whether this stream sends to the speaker.
    #[getter]
    fn talk(&self) -> bool {
        self.talk
    }

    /// Microphone chunks received and not read yet (up to 100; older ones are dropped).
    #[getter]
    fn available(&self, py: Python<'_>) -> PyResult<usize> {
        self.with(py, |a| a.available())
    }

    /// `(dropped, decode_errors, gap_samples)`: chunks dropped because the reader was too
    /// slow, packets that did not decode, and samples per channel the server skipped.
    #[getter]
    fn stats(&self, py: Python<'_>) -> PyResult<(u64, u64, u64)> {
        self.with(py, |a| {
            let s = a.stats();
            (
                s.dropped.load(Ordering::Relaxed),
                s.decode_errors.load(Ordering::Relaxed),
                s.gap_samples.load(Ordering::Relaxed),
            )
        })
    }

    /// The robot clock now (µs since the Unix epoch), as estimated at the handshake: the
    /// time base of `capture_us`.
    #[getter]
    fn robot_now_us(&self, py: Python<'_>) -> PyResult<u64> {
        self.with(py, |a| a.robot_now_us())
    }
}
