//! The simulated microphone and speaker of `audio-server sim:tone`: a sine paced by the wall
//! clock, and a speaker that keeps what it was given so tests and the demo can check it.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::DeviceError;
use crate::audio::{AudioBlock, AudioSink, AudioSource};

/// Amplitude of the tone: loud enough to see, far from clipping after a codec.
pub const TONE_AMPLITUDE: f32 = 0.5;

/// The value of sample `index` of a `hz` tone at `rate` (every channel carries the same).
/// The stream's content is a function of the counter, so a receiver can tell a gap or a
/// repeat from the samples themselves (exactly with PCM, by phase with a lossy codec).
pub fn tone_sample(hz: f32, rate: u32, index: u64) -> f32 {
    // Phase from the index modulo one period's worth of samples keeps f64 precise forever.
    let phase = (index as f64 * f64::from(hz) / f64::from(rate)).fract();
    TONE_AMPLITUDE * (2.0 * std::f64::consts::PI * phase).sin() as f32
}

/// A sine microphone, delivering in real time.
#[derive(Debug)]
pub struct ToneSource {
    hz: f32,
    rate: u32,
    channels: u8,
    next: u64,
    start: Option<(Instant, u64)>,
}

impl ToneSource {
    /// A `hz` tone at `rate` Hz on `channels` channels.
    pub fn new(hz: f32, rate: u32, channels: u8) -> Self {
        Self {
            hz,
            rate,
            channels,
            next: 0,
            start: None,
        }
    }
}

impl AudioSource for ToneSource {
    fn rate(&self) -> u32 {
        self.rate
    }

    fn channels(&self) -> u8 {
        self.channels
    }

    fn read(&mut self, frames: usize) -> Result<AudioBlock, DeviceError> {
        let (t0, t0_us) = *self
            .start
            .get_or_insert_with(|| (Instant::now(), crate::now_us()));
        // A block is ready when its last sample has been "captured".
        let first = self.next;
        let end = first + frames as u64;
        let ready = t0 + Duration::from_secs_f64(end as f64 / f64::from(self.rate));
        let now = Instant::now();
        if ready > now {
            std::thread::sleep(ready - now);
        }
        let mut samples = Vec::with_capacity(frames * usize::from(self.channels));
        for i in first..end {
            let v = tone_sample(self.hz, self.rate, i);
            for _ in 0..self.channels {
                samples.push(v);
            }
        }
        self.next = end;
        Ok(AudioBlock {
            first_sample: first,
            capture_us: t0_us + first * 1_000_000 / u64::from(self.rate),
            samples,
        })
    }
}

/// What the simulated speaker was given: the newest samples (bounded, drop-oldest with a
/// counter) and the sample index each block said it started at.
#[derive(Debug, Clone)]
pub struct Recording {
    inner: Arc<Mutex<Recorded>>,
}

#[derive(Debug, Default)]
struct Recorded {
    samples: VecDeque<f32>,
    cap: usize,
    dropped: u64,
    blocks: Vec<(u64, usize)>,
}

impl Recording {
    /// Keep at most `cap` samples (older ones are dropped and counted).
    pub fn new(cap: usize) -> Self {
        Self {
            inner: Arc::new(Mutex::new(Recorded {
                cap,
                ..Recorded::default()
            })),
        }
    }

    /// A speaker that records into this.
    pub fn sink(&self) -> RecordingSink {
        RecordingSink(self.clone())
    }

    /// The samples kept so far (interleaved), oldest first.
    pub fn samples(&self) -> Vec<f32> {
        self.inner
            .lock()
            .map(|r| r.samples.iter().copied().collect())
            .unwrap_or_default()
    }

    /// `(first_sample, samples)` of every block played, in order (the last 10 000).
    pub fn blocks(&self) -> Vec<(u64, usize)> {
        self.inner
            .lock()
            .map(|r| r.blocks.clone())
            .unwrap_or_default()
    }

    /// Samples dropped because the recording was full.
    pub fn dropped(&self) -> u64 {
        self.inner.lock().map(|r| r.dropped).unwrap_or(0)
    }
}

/// The recording speaker.
#[derive(Debug, Clone)]
pub struct RecordingSink(Recording);

impl AudioSink for RecordingSink {
    fn play(&mut self, first_sample: u64, samples: &[f32]) -> Result<(), DeviceError> {
        if let Ok(mut r) = self.0.inner.lock() {
            for &s in samples {
                if r.samples.len() == r.cap {
                    r.samples.pop_front();
                    r.dropped += 1;
                }
                r.samples.push_back(s);
            }
            if r.blocks.len() == 10_000 {
                r.blocks.remove(0);
            }
            r.blocks.push((first_sample, samples.len()));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_tone_is_paced_and_counted() {
        let mut s = ToneSource::new(1000.0, 8000, 1);
        let t = Instant::now();
        let a = s.read(80).expect("block");
        let b = s.read(80).expect("block");
        assert_eq!((a.first_sample, b.first_sample), (0, 80));
        assert!(
            t.elapsed() >= Duration::from_millis(19),
            "two 10 ms blocks take 20 ms"
        );
        // 1 kHz at 8 kHz: period of 8 samples.
        assert!((a.samples[2] - TONE_AMPLITUDE).abs() < 1e-6);
        assert_eq!(b.samples[0], tone_sample(1000.0, 8000, 80));
        assert_eq!(b.capture_us - a.capture_us, 10_000);
    }

    #[test]
    fn the_recording_is_bounded_drop_oldest() {
        let rec = Recording::new(4);
        let mut sink = rec.sink();
        sink.play(0, &[1.0, 2.0, 3.0]).expect("play");
        sink.play(3, &[4.0, 5.0, 6.0]).expect("play");
        assert_eq!(rec.samples(), vec![3.0, 4.0, 5.0, 6.0]);
        assert_eq!(rec.dropped(), 2);
        assert_eq!(rec.blocks(), vec![(0, 3), (3, 3)]);
    }
}
