//! The cpal backend against real device I/O: a PulseAudio server started here with a null
//! sink (it plays in real time into nothing) whose monitor is the microphone, so what the
//! speaker plays is heard back. Needs the `audio-device` feature, PulseAudio and the ALSA
//! pulse plugin; `scripts/test.sh` installs them and runs this with `--ignored`.
#![cfg(feature = "audio-device")]

use std::process::{Child, Command};
use std::time::{Duration, Instant};

use xoq_device::audio::cpal::{CpalSink, CpalSource};
use xoq_device::audio::{AudioSink, AudioSource};
use xoq_device::sim::audio::tone_sample;

struct Pulse {
    child: Child,
    _dir: tempfile::TempDir,
}

impl Drop for Pulse {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_pulse() -> Pulse {
    let dir = tempfile::tempdir().expect("runtime dir");
    let child = Command::new("pulseaudio")
        .args([
            "--daemonize=no",
            "--exit-idle-time=-1",
            "-n",
            "--load=module-native-protocol-unix auth-anonymous=1",
            "--load=module-null-sink sink_name=xoq rate=48000 channels=1",
        ])
        .env("XDG_RUNTIME_DIR", dir.path())
        .env("HOME", dir.path())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("pulseaudio runs (install pulseaudio and libasound2-plugins)");
    let socket = dir.path().join("pulse/native");
    let deadline = Instant::now() + Duration::from_secs(10);
    while !socket.exists() {
        assert!(Instant::now() < deadline, "pulseaudio did not start");
        std::thread::sleep(Duration::from_millis(50));
    }
    // SAFETY: set before any thread of this test process reads the environment.
    unsafe {
        std::env::set_var("PULSE_SERVER", format!("unix:{}", socket.display()));
        std::env::set_var("XDG_RUNTIME_DIR", dir.path());
    }
    let ok = Command::new("pactl")
        .args(["set-default-source", "xoq.monitor"])
        .status()
        .expect("pactl");
    assert!(
        ok.success(),
        "the null sink's monitor becomes the microphone"
    );
    Pulse { child, _dir: dir }
}

fn power_at(samples: &[f32], rate: f32, hz: f32) -> f32 {
    let w = 2.0 * std::f32::consts::PI * hz / rate;
    let (mut s1, mut s2) = (0f32, 0f32);
    for &x in samples {
        let s = x + 2.0 * w.cos() * s1 - s2;
        s2 = s1;
        s1 = s;
    }
    (s1 * s1 + s2 * s2 - 2.0 * w.cos() * s1 * s2) / (samples.len() as f32).powi(2)
}

#[test]
#[ignore = "needs PulseAudio and the ALSA pulse plugin (scripts/test.sh installs them and runs this)"]
fn the_speaker_plays_in_real_time_and_the_microphone_hears_it() {
    let _pulse = start_pulse();
    let mut speaker = CpalSink::open("default", 48_000, 1).expect("speaker");
    let mut mic = CpalSource::open("default", 48_000, 1).expect("microphone");
    // Keep the speaker fed from a thread, as the server's playout does (10 ms at a time).
    let feeding = std::thread::spawn(move || {
        let start = Instant::now();
        for k in 0..250u64 {
            let pcm: Vec<f32> = (0..480)
                .map(|i| tone_sample(440.0, 48_000, k * 480 + i))
                .collect();
            speaker.play(k * 480, &pcm).expect("play");
            let due = start + Duration::from_millis(10 * (k + 1));
            if let Some(d) = due.checked_duration_since(Instant::now()) {
                std::thread::sleep(d);
            }
        }
        speaker
    });
    // Real pacing: a second of samples takes about a second to arrive.
    mic.read(4800).expect("first block");
    let t = Instant::now();
    let mut heard = Vec::new();
    let mut next = None;
    for _ in 0..100 {
        let b = mic.read(480).expect("block");
        if let Some(n) = next {
            assert_eq!(b.first_sample, n, "the microphone's counter runs on");
        }
        next = Some(b.first_sample + 480);
        heard.extend(b.samples);
    }
    let took = t.elapsed();
    assert!(
        took > Duration::from_millis(700) && took < Duration::from_millis(1600),
        "1 s of audio took {took:?}: the device paces in real time"
    );
    let speaker = feeding.join().expect("feeder");
    let at = power_at(&heard, 48_000.0, 440.0);
    assert!(at > 1e-3, "the microphone hears the tone (power {at})");
    for off in [400.0, 480.0, 880.0] {
        assert!(
            at > 30.0 * power_at(&heard, 48_000.0, off),
            "a clear 440 Hz peak"
        );
    }
    let _ = speaker.underruns();
}
