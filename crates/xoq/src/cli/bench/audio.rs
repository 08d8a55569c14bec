//! `xoq bench audio`: capture → client one-way latency of the tone microphone per codec and
//! frame size, the talker → speaker path's jitter-buffer counters over a paced run, and the
//! CPU it costs, next to the floors it is measured against.
//!
//! Floors, measured or stated in the same run: a packet cannot leave before its last sample
//! is captured, so one frame duration is the floor of capture → client (reported as "over
//! floor"); the transport's share is compared with half a raw iroh echo round trip of the
//! same size; the codec's share with the encoder and decoder alone on the same samples.

use std::time::{Duration, Instant};

use iroh::protocol::Router;
use xoq_client::audio::{AudioOptions, RemoteAudio};
use xoq_device::now_us;
use xoq_device::sim::audio::tone_sample;
use xoq_media::audio::{SoundCodec, SoundDecoder, SoundEncoder};
use xoq_server::audio::{ALPN, AudioServer};
use xoq_wire::audio::AudioCodec;

use super::common::serve_on_loopback;
use super::common::{cpu_seconds, peak_rss_mib, raw_iroh_rtt, summarize, us};

async fn serve() -> anyhow::Result<(AudioServer, Router, String)> {
    let server = AudioServer::builder("sim:tone:440", 48_000, 1)?.start()?;
    let (router, addr) = serve_on_loopback(ALPN, server.clone()).await?;
    Ok((server, router, addr))
}

/// Encoder + decoder alone on one frame of the tone, µs per frame (median of `n`).
fn codec_cost(codec: SoundCodec, frame: usize, n: usize) -> anyhow::Result<(f64, f64)> {
    let mut enc = SoundEncoder::new(codec, 48_000, 1, frame)?;
    let mut dec = SoundDecoder::new(codec, 48_000, 1, frame)?;
    let (mut e, mut d) = (Vec::new(), Vec::new());
    for k in 0..n {
        let pcm: Vec<f32> = (0..frame as u64)
            .map(|i| tone_sample(440.0, 48_000, k as u64 * frame as u64 + i))
            .collect();
        let t = Instant::now();
        let p = enc.encode(&pcm)?;
        e.push(t.elapsed());
        let t = Instant::now();
        dec.decode(&p)?;
        d.push(t.elapsed());
    }
    Ok((us(summarize(e).p50), us(summarize(d).p50)))
}

pub(super) async fn run(seconds: f64, streams: usize, talk_seconds: f64) -> anyhow::Result<()> {
    println!(
        "xoq bench audio: sim:tone 48 kHz mono, {seconds} s per row, P2P on loopback; latency = capture of a packet's first sample -> decoded at the client"
    );
    if cfg!(debug_assertions) {
        println!("build: debug (use --release for real figures)");
    }
    let raw = raw_iroh_rtt(500, 200).await?;
    println!(
        "raw iroh echo 200 B: p50 {:.0} µs -> one-way transport floor ~{:.0} µs\n",
        us(raw.p50),
        us(raw.p50) / 2.0
    );
    let (server, router, addr) = serve().await?;
    println!(
        "{:<16} {:>7} {:>7} {:>10} {:>10} {:>7} {:>9} {:>9} {:>9}",
        "codec/frame",
        "p50 ms",
        "p99 ms",
        "floor ms",
        "over p50",
        "gaps",
        "enc µs",
        "dec µs",
        "cores"
    );
    for (codec, frame_ms) in [
        (AudioCodec::Opus, 20u8),
        (AudioCodec::Opus, 10),
        (AudioCodec::PcmS16, 20),
        (AudioCodec::PcmS16, 10),
    ] {
        let mut clients = Vec::new();
        for _ in 0..streams {
            clients.push(
                RemoteAudio::connect(
                    &addr,
                    AudioOptions::new()
                        .offline(true)
                        .ephemeral()
                        .codec(codec)
                        .frame_ms(frame_ms),
                )
                .await?,
            );
        }
        // Let the codec and the path settle.
        for c in &clients {
            for _ in 0..5 {
                c.read().await?;
            }
        }
        let (cpu0, t0) = (cpu_seconds(), Instant::now());
        let end = Instant::now() + Duration::from_secs_f64(seconds);
        let mut lat = Vec::new();
        while Instant::now() < end {
            for c in &clients {
                let chunk = c.read().await?;
                lat.push(Duration::from_micros(
                    now_us().saturating_sub(chunk.capture_us),
                ));
            }
        }
        let cores = (cpu_seconds() - cpu0) / t0.elapsed().as_secs_f64();
        let gaps: u64 = clients
            .iter()
            .map(|c| {
                c.stats()
                    .gap_samples
                    .load(std::sync::atomic::Ordering::Relaxed)
            })
            .sum();
        let l = summarize(lat);
        let floor = f64::from(frame_ms);
        let sc = SoundCodec::from(codec);
        let (enc, dec) = codec_cost(sc, 48 * usize::from(frame_ms), 200)?;
        println!(
            "{:<16} {:>7.1} {:>7.1} {:>10.1} {:>9.1}ms {:>7} {:>9.0} {:>9.0} {:>9.3}",
            format!("{}/{} ms", codec.name(), frame_ms),
            us(l.p50) / 1000.0,
            us(l.p99) / 1000.0,
            floor,
            us(l.p50) / 1000.0 - floor,
            gaps,
            enc,
            dec,
            cores / streams as f64
        );
        for c in clients {
            c.close().await;
        }
    }
    println!(
        "(cores = process CPU per stream while streaming, server and client in this process)\n"
    );

    // Talker -> speaker, paced in real time: the jitter buffer's counters over the run.
    let mut talker = RemoteAudio::connect(
        &addr,
        AudioOptions::new()
            .offline(true)
            .ephemeral()
            .listen(false)
            .talk(true),
    )
    .await?;
    // A listener runs alongside for the whole talk: its counter must not skip.
    let listener =
        RemoteAudio::connect(&addr, AudioOptions::new().offline(true).ephemeral()).await?;
    let listening = tokio::spawn(async move {
        let mut lat = Vec::new();
        while let Ok(c) = listener.read().await {
            lat.push(Duration::from_micros(now_us().saturating_sub(c.capture_us)));
        }
        (
            lat,
            listener
                .stats()
                .gap_samples
                .load(std::sync::atomic::Ordering::Relaxed),
        )
    });
    let frame = 960usize;
    let (cpu0, start) = (cpu_seconds(), Instant::now());
    let mut k = 0u64;
    while start.elapsed() < Duration::from_secs_f64(talk_seconds) {
        let pcm: Vec<f32> = (0..frame as u64)
            .map(|i| tone_sample(300.0, 48_000, k * frame as u64 + i))
            .collect();
        talker.write(&pcm).await?;
        k += 1;
        let due = start + Duration::from_millis(20 * k);
        tokio::time::sleep_until(due.into()).await;
    }
    let cores = (cpu_seconds() - cpu0) / start.elapsed().as_secs_f64();
    tokio::time::sleep(Duration::from_millis(600)).await;
    let st = server.speaker_stats();
    println!(
        "talker -> speaker, Opus 20 ms paced for {talk_seconds} s: played {} samples, late {}, lost {}, concealed {}, underruns {} (1 expected: the end of the talk), overruns {}",
        st.played, st.late, st.lost, st.concealed, st.underruns, st.overruns
    );
    talker.close().await;
    let _ = router.shutdown().await;
    let (lat, gaps) = listening.await?;
    if !lat.is_empty() {
        let l = summarize(lat);
        println!(
            "listener during the talk, Opus 20 ms: p50 {:.1} ms, p99 {:.1} ms, gaps {gaps} samples; process CPU {:.3} cores (talker + listener + server)",
            us(l.p50) / 1000.0,
            us(l.p99) / 1000.0,
            cores
        );
    }
    println!("peak RSS {:.1} MiB", peak_rss_mib());
    Ok(())
}
