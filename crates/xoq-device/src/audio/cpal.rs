//! Real microphones and speakers through cpal (ALSA, and PulseAudio/PipeWire through ALSA's
//! `pulse`/`default` devices, on Linux; CoreAudio; WASAPI). Feature `audio-device`.
//!
//! cpal delivers and asks for samples on its own real-time thread; these backends meet it
//! with bounded buffers (one second each): the microphone's drops its oldest samples when
//! nobody reads (counted), the speaker plays silence when it runs dry (counted). A cpal
//! stream may not move between threads on every platform, so each lives on a thread of its
//! own that holds it until the backend is dropped.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use cpal::traits::{DeviceTrait, HostTrait, StreamTrait};

use super::{AudioBlock, AudioSink, AudioSource};
use crate::DeviceError;

/// How long a read waits for the microphone before calling it stuck.
const READ_TIMEOUT: Duration = Duration::from_secs(2);

fn err(device: &str, what: &'static str, e: impl std::fmt::Display) -> DeviceError {
    DeviceError::Open {
        device: device.to_string(),
        source: std::io::Error::other(format!("{what}: {e}")),
    }
}

/// Devices by name: `default` (the system's), else the first whose name contains `name`.
fn find(name: &str, input: bool) -> Result<cpal::Device, DeviceError> {
    let host = cpal::default_host();
    if name == "default" {
        let d = if input {
            host.default_input_device()
        } else {
            host.default_output_device()
        };
        return d.ok_or_else(|| {
            DeviceError::UnknownDevice(format!(
                "no default {} device on this machine (`xoq audio-server --list`)",
                if input { "input" } else { "output" }
            ))
        });
    }
    let devices = if input {
        host.input_devices().map(|d| d.collect::<Vec<_>>())
    } else {
        host.output_devices().map(|d| d.collect::<Vec<_>>())
    }
    .map_err(|e| err(name, "cannot list audio devices", e))?;
    devices
        .into_iter()
        .find(|d| d.to_string().contains(name))
        .ok_or_else(|| {
            DeviceError::UnknownDevice(format!(
                "{name}: no such audio {} device (`xoq audio-server --list`)",
                if input { "input" } else { "output" }
            ))
        })
}

/// Names of the devices cpal sees, for `--list`.
pub fn list() -> Vec<String> {
    let host = cpal::default_host();
    let mut out = Vec::new();
    if let Ok(ds) = host.input_devices() {
        out.extend(ds.map(|d| format!("{d}  (microphone)")));
    }
    if let Ok(ds) = host.output_devices() {
        out.extend(ds.map(|d| format!("{d}  (speaker)")));
    }
    out
}

struct Ring {
    samples: VecDeque<f32>,
    /// Stream index (per channel) one past the newest sample, and when it arrived (µs).
    end: u64,
    end_us: u64,
    dropped: u64,
    failed: Option<String>,
}

/// Keeps a stream's thread alive until dropped: the thread parks on the other end of this
/// channel, and dropping the sender wakes it to drop the stream.
struct StreamThread(#[allow(dead_code)] std::sync::mpsc::Sender<()>);

/// Run `build` on a thread of its own, keep the stream it makes playing until the returned
/// guard drops; report how the start went.
fn spawn_stream(
    device: &str,
    build: impl FnOnce() -> Result<cpal::Stream, DeviceError> + Send + 'static,
) -> Result<StreamThread, DeviceError> {
    let (stop, stopped) = std::sync::mpsc::channel::<()>();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::Builder::new()
        .name("xoq-audio-device".into())
        .spawn(move || {
            let stream = match build() {
                Ok(st) => st,
                Err(e) => {
                    let _ = tx.send(Err(e));
                    return;
                }
            };
            if let Err(e) = stream.play() {
                let _ = tx.send(Err(DeviceError::Open {
                    device: String::new(),
                    source: std::io::Error::other(format!("cannot start the stream: {e}")),
                }));
                return;
            }
            let _ = tx.send(Ok(()));
            // Returns when the backend drops its sender.
            let _ = stopped.recv();
            drop(stream);
        })
        .map_err(|e| err(device, "cannot start the audio thread", e))?;
    rx.recv_timeout(Duration::from_secs(10))
        .map_err(|_| err(device, "the audio device did not start", "timed out"))??;
    Ok(StreamThread(stop))
}

fn config(rate: u32, channels: u8) -> cpal::StreamConfig {
    cpal::StreamConfig {
        channels: u16::from(channels),
        sample_rate: rate,
        buffer_size: cpal::BufferSize::Default,
    }
}

/// A real microphone.
pub struct CpalSource {
    name: String,
    rate: u32,
    channels: u8,
    ring: Arc<(Mutex<Ring>, Condvar)>,
    next: u64,
    _thread: StreamThread,
}

impl CpalSource {
    /// Open the microphone `name` (`default`, or part of a device name) at `rate` and
    /// `channels`.
    pub fn open(name: &str, rate: u32, channels: u8) -> Result<Self, DeviceError> {
        let device = find(name, true)?;
        let ring = Arc::new((
            Mutex::new(Ring {
                samples: VecDeque::new(),
                end: 0,
                end_us: 0,
                dropped: 0,
                failed: None,
            }),
            Condvar::new(),
        ));
        let cap = rate as usize * usize::from(channels);
        let (r, e) = (ring.clone(), ring.clone());
        let dname = name.to_string();
        let ch = u64::from(channels);
        let thread = spawn_stream(name, move || {
            device
                .build_input_stream(
                    config(rate, channels),
                    move |data: &[f32], _: &cpal::InputCallbackInfo| {
                        let (m, cv) = &*r;
                        if let Ok(mut ring) = m.lock() {
                            for &s in data {
                                if ring.samples.len() == cap {
                                    ring.samples.pop_front();
                                    ring.dropped += 1;
                                }
                                ring.samples.push_back(s);
                            }
                            ring.end += data.len() as u64 / ch;
                            ring.end_us = crate::now_us();
                        }
                        cv.notify_all();
                    },
                    move |error| {
                        let (m, cv) = &*e;
                        if let Ok(mut ring) = m.lock() {
                            ring.failed = Some(error.to_string());
                        }
                        cv.notify_all();
                    },
                    None,
                )
                .map_err(|e| err(&dname, "cannot open the microphone", e))
        })?;
        Ok(Self {
            name: name.to_string(),
            rate,
            channels,
            ring,
            next: 0,
            _thread: thread,
        })
    }

    /// Samples dropped because nobody read them in time.
    pub fn dropped(&self) -> u64 {
        self.ring.0.lock().map(|r| r.dropped).unwrap_or(0)
    }
}

impl AudioSource for CpalSource {
    fn rate(&self) -> u32 {
        self.rate
    }

    fn channels(&self) -> u8 {
        self.channels
    }

    fn read(&mut self, frames: usize) -> Result<AudioBlock, DeviceError> {
        let want = frames * usize::from(self.channels);
        let (m, cv) = &*self.ring;
        let io = |what: String| DeviceError::Io {
            operation: "read the microphone",
            device: self.name.clone(),
            source: std::io::Error::other(what),
        };
        let guard = m.lock().map_err(|_| io("poisoned".into()))?;
        let (mut ring, timeout) = cv
            .wait_timeout_while(guard, READ_TIMEOUT, |r| {
                r.samples.len() < want && r.failed.is_none()
            })
            .map_err(|_| io("poisoned".into()))?;
        if let Some(f) = &ring.failed {
            return Err(io(f.clone()));
        }
        if timeout.timed_out() {
            return Err(io(format!(
                "no samples for {} s: is the device running?",
                READ_TIMEOUT.as_secs()
            )));
        }
        let samples: Vec<f32> = ring.samples.drain(..want).collect();
        // The block's first sample: the newest sample's index and time, minus what is still
        // buffered after it and the block itself.
        let buffered = ring.samples.len() as u64 / u64::from(self.channels) + frames as u64;
        let first = ring.end.saturating_sub(buffered);
        let capture_us = ring
            .end_us
            .saturating_sub(buffered * 1_000_000 / u64::from(self.rate));
        self.next = first + frames as u64;
        Ok(AudioBlock {
            first_sample: first,
            capture_us,
            samples,
        })
    }
}

/// A real speaker.
pub struct CpalSink {
    queue: Arc<Mutex<VecDeque<f32>>>,
    underruns: Arc<AtomicU64>,
    cap: usize,
    _thread: StreamThread,
}

impl CpalSink {
    /// Open the speaker `name` (`default`, or part of a device name) at `rate` and `channels`.
    pub fn open(name: &str, rate: u32, channels: u8) -> Result<Self, DeviceError> {
        let device = find(name, false)?;
        let queue = Arc::new(Mutex::new(VecDeque::new()));
        let underruns = Arc::new(AtomicU64::new(0));
        let (q, u) = (queue.clone(), underruns.clone());
        let dname = name.to_string();
        let thread = spawn_stream(name, move || {
            device
                .build_output_stream(
                    config(rate, channels),
                    move |out: &mut [f32], _: &cpal::OutputCallbackInfo| {
                        let Ok(mut q) = q.lock() else { return };
                        let n = out.len().min(q.len());
                        for (o, s) in out.iter_mut().zip(q.drain(..n)) {
                            *o = s;
                        }
                        // The rest stays silent (cpal pre-fills it).
                        if n < out.len() && n > 0 {
                            u.fetch_add(1, Ordering::Relaxed);
                        }
                    },
                    |e| tracing::warn!("speaker stream error: {e}"),
                    None,
                )
                .map_err(|e| err(&dname, "cannot open the speaker", e))
        })?;
        Ok(Self {
            queue,
            underruns,
            cap: rate as usize * usize::from(channels),
            _thread: thread,
        })
    }

    /// Times the device asked for more than was queued, mid-stream.
    pub fn underruns(&self) -> u64 {
        self.underruns.load(Ordering::Relaxed)
    }
}

impl AudioSink for CpalSink {
    fn play(&mut self, _first_sample: u64, samples: &[f32]) -> Result<(), DeviceError> {
        if let Ok(mut q) = self.queue.lock() {
            for &s in samples {
                if q.len() == self.cap {
                    q.pop_front();
                }
                q.push_back(s);
            }
        }
        Ok(())
    }
}
