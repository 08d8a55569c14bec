//! Audio devices: a microphone ([`AudioSource`]) and a speaker ([`AudioSink`]) behind one
//! device name, samples as interleaved `f32` in [-1, 1].
//!
//! A source is paced by its device (a real microphone delivers in real time; the simulated
//! tone sleeps to the wall clock), so the server's capture loop just reads. Each block
//! carries the index of its first sample, counted from the start of the source: the
//! stream's sample counter, which shows a gap or a repeat end to end.
//!
//! Backends: `sim:tone[:HZ]` (a sine at HZ, default 440, whose every sample is a function
//! of its index, with a recording speaker: [`sim::audio`](crate::sim::audio)). Real devices
//! (cpal: ALSA/PulseAudio, CoreAudio, WASAPI) need the `audio-device` feature, which this
//! build does not have.

use crate::DeviceError;

#[cfg(feature = "audio-device")]
pub mod cpal;

/// One block from a microphone.
#[derive(Debug, Clone, PartialEq)]
pub struct AudioBlock {
    /// Index of the block's first sample (per channel) since the source started.
    pub first_sample: u64,
    /// When its first sample was captured, µs since the Unix epoch (the robot clock).
    pub capture_us: u64,
    /// `frames × channels` interleaved samples.
    pub samples: Vec<f32>,
}

/// A microphone.
pub trait AudioSource: Send {
    /// Samples per second per channel.
    fn rate(&self) -> u32;
    /// Channels per frame.
    fn channels(&self) -> u8;
    /// The next `frames` samples per channel, blocking until the device has them.
    fn read(&mut self, frames: usize) -> Result<AudioBlock, DeviceError>;
}

/// A speaker.
pub trait AudioSink: Send {
    /// Play interleaved samples; `first_sample` is their index in the talker's stream (a
    /// sink may use it to place them; a real speaker plays them in order).
    fn play(&mut self, first_sample: u64, samples: &[f32]) -> Result<(), DeviceError>;
}

/// An opened audio device: its microphone, its speaker, and (for the simulated one) what the
/// speaker played.
pub struct AudioDevice {
    /// The microphone.
    pub source: Box<dyn AudioSource>,
    /// The speaker.
    pub sink: Box<dyn AudioSink>,
    /// What a simulated speaker played; `None` for a real one.
    pub recording: Option<crate::sim::audio::Recording>,
}

/// Open a device's microphone and speaker by name, at `rate` Hz and `channels` channels.
pub fn open(name: &str, rate: u32, channels: u8) -> Result<AudioDevice, DeviceError> {
    if let Some(rest) = name.strip_prefix("sim:tone") {
        let hz = match rest.strip_prefix(':') {
            None if rest.is_empty() => 440.0,
            Some(v) => v.parse::<f32>().ok().filter(|h| *h > 0.0 && *h < rate as f32 / 2.0).ok_or_else(|| {
                DeviceError::UnknownDevice(format!(
                    "{name}: the tone's frequency must be a number of Hz below half the rate ({} Hz)",
                    rate / 2
                ))
            })?,
            None => return Err(DeviceError::UnknownDevice(name.to_string())),
        };
        let source = crate::sim::audio::ToneSource::new(hz, rate, channels);
        // The last minute of what was played (11.5 MB at 48 kHz mono), for checks and the demo.
        let recording =
            crate::sim::audio::Recording::new(rate as usize * usize::from(channels) * 60);
        let sink = recording.sink();
        return Ok(AudioDevice {
            source: Box::new(source),
            sink: Box::new(sink),
            recording: Some(recording),
        });
    }
    #[cfg(feature = "audio-device")]
    {
        // A real device: its microphone and its speaker by the same name (`default`, or
        // part of a device name as `--list` prints it).
        Ok(AudioDevice {
            source: Box::new(cpal::CpalSource::open(name, rate, channels)?),
            sink: Box::new(cpal::CpalSink::open(name, rate, channels)?),
            recording: None,
        })
    }
    #[cfg(not(feature = "audio-device"))]
    Err(DeviceError::UnknownDevice(format!(
        "{name}: audio devices are sim:tone[:HZ] in this build (real microphones and speakers need the audio-device feature)"
    )))
}

/// Audio devices this build can open, one per line, for `--list`.
pub fn list() -> Vec<String> {
    #[allow(unused_mut)]
    let mut out = vec![
        "sim:tone[:HZ]  a sine microphone (default 440 Hz) and a recording speaker".to_string(),
    ];
    #[cfg(feature = "audio-device")]
    {
        out.push("default  the system's microphone and speaker".to_string());
        out.extend(cpal::list());
    }
    out
}
