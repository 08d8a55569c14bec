//! The audio service end to end over real iroh on loopback: the simulated tone microphone to
//! clients (every codec, the sample counter continuous, the right frequency), client audio to
//! the recording speaker (exactly what was sent, in order), format negotiation, one talker at
//! a time, and the allowlist.

use std::time::Duration;

use iroh::SecretKey;
use iroh::protocol::Router;
use xoq::audio::{AudioCodec, AudioOptions, AudioServer, RemoteAudio, tone_sample};
use xoq::transport::p2p::{Allowlist, EndpointBuilder};
use xoq_client::ClientError;
use xoq_wire::RefuseCode;
use xoq_wire::audio::ALPN;

struct Served {
    server: AudioServer,
    router: Router,
    addr: String,
}

async fn serve(device: &str, allow: Option<Vec<iroh::EndpointId>>) -> Served {
    let server = AudioServer::builder(device, 48_000, 1)
        .expect("device")
        .start()
        .expect("server starts");
    let ep = EndpointBuilder::new()
        .offline(true)
        .alpns(vec![ALPN.to_vec()])
        .allowlist(allow.map(Allowlist::new))
        .spawn()
        .await
        .expect("endpoint");
    let addr = format!("{}@{}", ep.id(), ep.bound_sockets()[0]);
    let router = Router::builder(ep).accept(ALPN, server.clone()).spawn();
    Served {
        server,
        router,
        addr,
    }
}

fn opts() -> AudioOptions {
    AudioOptions::new().offline(true).ephemeral()
}

/// Power of `samples` at `hz` (Goertzel), normalised by length.
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

/// Read `n` chunks; check the counter runs on without a gap or a repeat.
async fn read_continuous(audio: &RemoteAudio, n: usize) -> (u64, Vec<f32>) {
    let mut all = Vec::new();
    let mut first = None;
    let mut next = None;
    for _ in 0..n {
        let c = tokio::time::timeout(Duration::from_secs(5), audio.read())
            .await
            .expect("a chunk in time")
            .expect("chunk");
        if let Some(n) = next {
            assert_eq!(c.first_sample, n, "gap or repeat in the sample counter");
        }
        first.get_or_insert(c.first_sample);
        next = Some(c.first_sample + c.samples.len() as u64);
        all.extend(c.samples);
    }
    (first.expect("one chunk"), all)
}

#[tokio::test]
async fn the_tone_arrives_exact_over_pcm_and_at_its_frequency_over_opus() {
    let s = serve("sim:tone:440", None).await;
    for (codec, frame_ms) in [
        (AudioCodec::PcmF32, 20),
        (AudioCodec::PcmS16, 10),
        (AudioCodec::Opus, 20),
        (AudioCodec::Opus, 10),
    ] {
        let audio = RemoteAudio::connect(&s.addr, opts().codec(codec).frame_ms(frame_ms))
            .await
            .expect("connect");
        assert_eq!(audio.format().codec, codec);
        assert_eq!(audio.format().frame_ms, frame_ms);
        assert_eq!(audio.device(), "sim:tone:440");
        let (first, got) = read_continuous(&audio, 30).await;
        match codec {
            AudioCodec::Opus => {
                // Past the codec's start-up, the decoded tone lines up with its index.
                let settle = 4800;
                let mse: f32 = got[settle..]
                    .iter()
                    .enumerate()
                    .map(|(i, v)| {
                        (v - tone_sample(440.0, 48_000, first + (settle + i) as u64)).powi(2)
                    })
                    .sum::<f32>()
                    / (got.len() - settle) as f32;
                assert!(
                    mse < 1e-3,
                    "{codec:?}/{frame_ms} ms: mean square error {mse}"
                );
            }
            _ => {
                let tol = if codec == AudioCodec::PcmS16 {
                    1.0 / 32767.0
                } else {
                    0.0
                };
                for (i, v) in got.iter().enumerate() {
                    let want = tone_sample(440.0, 48_000, first + i as u64);
                    assert!(
                        (v - want).abs() <= tol,
                        "{codec:?}: sample {i}: {v} vs {want}"
                    );
                }
            }
        }
        let at = power_at(&got, 48_000.0, 440.0);
        for off in [400.0, 480.0, 880.0] {
            assert!(
                at > 100.0 * power_at(&got, 48_000.0, off),
                "{codec:?}: no clear 440 Hz peak"
            );
        }
        audio.close().await;
    }
    let _ = s.router.shutdown().await;
}

#[tokio::test]
async fn what_a_talker_sends_is_what_the_speaker_played_in_order() {
    let s = serve("sim:tone", None).await;
    let mut talker = RemoteAudio::connect(
        &s.addr,
        opts().listen(false).talk(true).codec(AudioCodec::PcmF32),
    )
    .await
    .expect("connect");
    // 300 ms of a 1 kHz tone: under the speaker's 500 ms bound, played from its start.
    let sent: Vec<f32> = (0..14_400)
        .map(|i| tone_sample(1000.0, 48_000, i))
        .collect();
    talker.write(&sent).await.expect("write");
    let rec = s
        .server
        .recording()
        .expect("the simulated speaker records")
        .clone();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while rec.samples().len() < sent.len() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the speaker did not play it"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let played = rec.samples();
    assert_eq!(
        &played[..sent.len()],
        &sent[..],
        "played samples differ from what was sent"
    );
    assert!(
        played[sent.len()..].iter().all(|v| *v == 0.0),
        "only silence after the talk"
    );
    let st = s.server.speaker_stats();
    assert_eq!(
        (st.played, st.lost, st.late, st.overruns),
        (14_400, 0, 0, 0)
    );
    talker.close().await;
    let _ = s.router.shutdown().await;
}

#[tokio::test]
async fn a_format_the_device_does_not_run_is_refused_clearly() {
    let s = serve("sim:tone", None).await;
    let err = RemoteAudio::connect(&s.addr, opts().rate_channels(16_000, 1))
        .await
        .expect_err("the device runs at 48 kHz");
    match err {
        ClientError::Refused { code, message } => {
            assert_eq!(code, RefuseCode::Unsupported);
            assert!(message.contains("48000 Hz"), "{message}");
        }
        e => panic!("expected a refusal, got {e}"),
    }
    // Asking for exactly the device's format works.
    let ok = RemoteAudio::connect(&s.addr, opts().rate_channels(48_000, 1))
        .await
        .expect("the device's own format");
    ok.close().await;
    let _ = s.router.shutdown().await;
}

#[tokio::test]
async fn a_second_talker_is_refused_unless_it_takes_over() {
    let s = serve("sim:tone", None).await;
    let first = RemoteAudio::connect(&s.addr, opts().talk(true))
        .await
        .expect("first talker");
    let err = RemoteAudio::connect(&s.addr, opts().talk(true))
        .await
        .expect_err("the speaker is held");
    assert!(
        matches!(
            err,
            ClientError::Refused {
                code: RefuseCode::Busy,
                ..
            }
        ),
        "{err}"
    );
    // Listeners are not talkers: any number may listen meanwhile.
    let listener = RemoteAudio::connect(&s.addr, opts())
        .await
        .expect("listener");
    let second = RemoteAudio::connect(&s.addr, opts().talk(true).takeover(true))
        .await
        .expect("takeover");
    // The first talker's stream ends with the reason.
    let end = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            if let Err(e) = first.read().await {
                return e;
            }
        }
    })
    .await
    .expect("the first talker is told");
    assert!(end.to_string().contains("took over"), "{end}");
    second.close().await;
    listener.close().await;
    let _ = s.router.shutdown().await;
}

#[tokio::test]
async fn an_unlisted_client_is_refused() {
    let allowed = SecretKey::generate();
    let s = serve("sim:tone", Some(vec![allowed.public()])).await;
    let err = RemoteAudio::connect(&s.addr, opts())
        .await
        .expect_err("not on the allowlist");
    assert!(err.to_string().contains("not allowed"), "{err}");
    let ok = RemoteAudio::connect(&s.addr, AudioOptions::new().offline(true).key(allowed))
        .await
        .expect("the allowed key connects");
    ok.close().await;
    let _ = s.router.shutdown().await;
}

/// What the stock web player reads: the catalog's Opus rendition, then one group per packet,
/// each a varint presentation time and an Opus packet that decodes to the tone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_relay_broadcast_is_hang_opus_that_decodes_to_the_tone() {
    use xoq::relay::RelayConfig;
    use xoq::transport::RelayUrl;
    use xoq::transport::moq::{MoqSession, Redial};
    use xoq_media::audio::{SoundCodec, SoundDecoder};
    let relay = RelayConfig::ephemeral()
        .expect("port")
        .start()
        .await
        .expect("relay");
    let root_url = relay.url().join("anon").expect("url");
    let root = RelayUrl::from_url(root_url.clone());
    let server = AudioServer::builder("sim:tone:440", 48_000, 1)
        .expect("device")
        .start()
        .expect("server");
    let session = MoqSession::connect(&root, Redial::Forever)
        .await
        .expect("session");
    let srv = server.clone();
    let publish = tokio::spawn(async move {
        let _ = srv.serve_moq(&session, "mic").await;
    });
    let sub = MoqSession::connect(&root, Redial::Never)
        .await
        .expect("session");
    let json = sub
        .read_track("mic", "catalog.json")
        .next()
        .await
        .expect("catalog");
    let catalog: serde_json::Value = serde_json::from_slice(&json).expect("json");
    let r = &catalog["audio"]["renditions"]["audio"];
    assert_eq!(r["codec"], "opus");
    assert_eq!(r["sampleRate"], 48_000);
    assert_eq!(r["numberOfChannels"], 1);
    assert_eq!(r["container"]["kind"], "legacy");
    let mut track = sub.read_track("mic", "audio");
    let mut dec = SoundDecoder::new(SoundCodec::Opus, 48_000, 1, 960).expect("decoder");
    let (mut pcm, mut last_pts) = (Vec::new(), None);
    let mut groups = std::collections::HashSet::new();
    for _ in 0..40 {
        let frame = tokio::time::timeout(Duration::from_secs(5), track.next())
            .await
            .expect("a packet in time")
            .expect("packet");
        groups.insert(track.latest_group());
        let mut b = &frame[..];
        let pts = xoq_wire::coding::get_varint(&mut b).expect("timestamp");
        if let Some(p) = last_pts {
            assert_eq!(pts - p, 20_000, "one 20 ms packet after another");
        }
        last_pts = Some(pts);
        pcm.extend(dec.decode(b).expect("an Opus packet"));
    }
    assert!(
        groups.len() >= 35,
        "one group per packet, got {}",
        groups.len()
    );
    let at = power_at(&pcm[4800..], 48_000.0, 440.0);
    for off in [400.0, 480.0, 880.0] {
        assert!(
            at > 100.0 * power_at(&pcm[4800..], 48_000.0, off),
            "no clear 440 Hz peak"
        );
    }
    sub.close().await;
    // The Rust client on the relay address: decoded chunks, the counter continuous.
    let addr = format!("{}/mic", root_url.as_str().trim_end_matches('/'));
    let mic = RemoteAudio::connect(&addr, opts())
        .await
        .expect("relay listener");
    assert_eq!(mic.format().codec, AudioCodec::Opus);
    let (_, got) = read_continuous(&mic, 30).await;
    let at = power_at(&got[4800..], 48_000.0, 440.0);
    assert!(
        at > 100.0 * power_at(&got[4800..], 48_000.0, 480.0),
        "the relay listener hears 440 Hz"
    );
    mic.close().await;
    let err = RemoteAudio::connect(&addr, opts().talk(true))
        .await
        .expect_err("the broadcast is listen-only");
    assert!(err.to_string().contains("listen-only"), "{err}");
    publish.abort();
    relay.shutdown().await;
}

/// Push-to-talk through a relay (what the browser page does): a writer broadcast
/// `<name>/talk/<writer>` with hang Opus frames reaches the speaker only with relay writes on,
/// and the broadcast's `speaker` track says so.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relay_talk_reaches_the_speaker_only_with_relay_writes_on() {
    use xoq::relay::RelayConfig;
    use xoq::transport::RelayUrl;
    use xoq::transport::moq::{MoqSession, Redial};
    use xoq_media::audio::{SoundCodec, SoundEncoder};
    let relay = RelayConfig::ephemeral()
        .expect("port")
        .start()
        .await
        .expect("relay");
    let root = RelayUrl::from_url(relay.url().join("anon").expect("url"));
    for writes in [false, true] {
        let name = format!("mic-{writes}");
        let server = AudioServer::builder("sim:tone", 48_000, 1)
            .expect("device")
            .relay_writes(writes)
            .start()
            .expect("server");
        let session = MoqSession::connect(&root, Redial::Forever)
            .await
            .expect("session");
        let (srv, n) = (server.clone(), name.clone());
        let publish = tokio::spawn(async move {
            let _ = srv.serve_moq(&session, &n).await;
        });
        let talker = MoqSession::connect(&root, Redial::Never)
            .await
            .expect("talker session");
        let (_bc, mut tracks) = talker
            .publish_tracks(&format!("{name}/talk/t1"), &["audio"])
            .expect("publish");
        let mut track = tracks.pop().expect("track");
        let mut enc = SoundEncoder::new(SoundCodec::Opus, 48_000, 1, 960).expect("encoder");
        let start = tokio::time::Instant::now();
        for k in 0..40u64 {
            let pcm: Vec<f32> = (0..960)
                .map(|i| tone_sample(600.0, 48_000, k * 960 + i))
                .collect();
            let mut payload = Vec::new();
            let mut pts = Vec::new();
            xoq_wire::coding::put_varint(&mut pts, k * 20_000);
            payload.extend(pts);
            payload.extend(enc.encode(&pcm).expect("encode"));
            track
                .write_grouped(bytes::Bytes::from(payload), true)
                .expect("write");
            tokio::time::sleep_until(start + Duration::from_millis(20 * (k + 1))).await;
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
        // The status track, until it reports what was played (or 3 s of updates).
        let mut reader = talker.read_track(&name, "speaker");
        let mut status = serde_json::Value::Null;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(3);
        while tokio::time::Instant::now() < deadline {
            let Ok(Ok(json)) = tokio::time::timeout(Duration::from_secs(1), reader.next()).await
            else {
                break;
            };
            status = serde_json::from_slice(&json).expect("json");
            if status["played"].as_u64().unwrap_or(0) > 0 {
                break;
            }
        }
        let played = server.speaker_stats().played;
        let rec = server.recording().expect("recording").samples();
        if writes {
            assert!(played > 30_000, "the talk was played: {played} samples");
            let heard = &rec[rec.len() - 30_000..];
            assert!(
                power_at(heard, 48_000.0, 600.0) > 100.0 * power_at(heard, 48_000.0, 440.0),
                "the speaker played the talker's 600 Hz"
            );
            assert_eq!(status["relayWrites"], true);
            assert!(status["played"].as_u64().unwrap_or(0) > 0, "{status}");
        } else {
            assert_eq!(
                played, 0,
                "relay writes are off: nothing reaches the speaker"
            );
            assert!(rec.iter().all(|v| *v == 0.0));
            assert_eq!(status["relayWrites"], false);
        }
        talker.close().await;
        publish.abort();
    }
    relay.shutdown().await;
}
