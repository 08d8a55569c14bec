//! The audio server: one device's microphone to any number of listeners, and one talker at a
//! time to its speaker, over P2P sessions (ALPN [`ALPN`]).
//!
//! The microphone is read by one capture thread in 10 ms blocks and fanned out through a
//! bounded broadcast (a listener that falls behind by more than [`MIC_BACKLOG`] blocks skips
//! them: counted, and visible to the client as a jump in the sample counter). Each session
//! re-chunks to its own frame size and codec. The speaker plays through a [`JitterBuffer`]
//! ticked every 10 ms by a playout thread, so a talker's network jitter up to the target
//! never reaches the device.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use iroh::endpoint::Connection;
use iroh::protocol::{AcceptError, ProtocolHandler};
use tokio::sync::{Notify, broadcast};
use xoq_device::audio::{AudioBlock, AudioSink, AudioSource};
use xoq_device::now_us;
use xoq_device::sim::audio::Recording;
use xoq_media::audio::{JitterBuffer, JitterStats, SoundCodec, SoundDecoder, SoundEncoder};
use xoq_transport::framed::FramedReader;
use xoq_transport::moq::MoqSession;
use xoq_wire::RefuseCode;
pub use xoq_wire::audio::ALPN;
use xoq_wire::audio::{AudioFormat, AudioPacket, ClientMsg, ServerMsg, VERSION};

use crate::ServerError;

/// Blocks of 10 ms a listener may fall behind before it skips (half a second).
pub const MIC_BACKLOG: usize = 50;
/// Capture and playout step.
const BLOCK_MS: u32 = 10;
/// Speaker jitter buffer: playout starts at this depth (a steady loopback or LAN stream
/// needs one 20 ms frame plus scheduling slack; WebRTC settles near 20 ms too).
pub const SPEAKER_TARGET_MS: u32 = 40;
/// Speaker jitter buffer bound: beyond it the oldest samples go (counted as overruns).
pub const SPEAKER_MAX_MS: u32 = 500;
const HELLO_TIMEOUT: Duration = Duration::from_secs(10);

/// Counters of an audio server.
#[derive(Debug, Default)]
pub struct AudioStats {
    /// Microphone blocks captured.
    pub captured: AtomicU64,
    /// Blocks listeners skipped because they fell behind (summed over listeners).
    pub listener_skipped: AtomicU64,
    /// Speaker packets that could not be decoded (dropped).
    pub decode_errors: AtomicU64,
    /// Relay writer packets dropped because another talker held the speaker.
    pub talk_refused: AtomicU64,
}

/// Builds an [`AudioServer`].
#[must_use]
pub struct AudioServerBuilder {
    name: String,
    source: Box<dyn AudioSource>,
    sink: Box<dyn AudioSink>,
    recording: Option<Recording>,
    takeover: bool,
    relay_writes: bool,
}

impl AudioServerBuilder {
    /// Play what relay writers (browser push-to-talk) send to the speaker (default: no,
    /// the relay side is listen-only).
    pub fn relay_writes(mut self, on: bool) -> Self {
        self.relay_writes = on;
        self
    }

    /// Let a new talker take the speaker from the current one instead of being refused
    /// (a client can also ask for it in its hello).
    pub fn takeover(mut self, on: bool) -> Self {
        self.takeover = on;
        self
    }

    /// Start capturing and playing.
    pub fn start(self) -> Result<AudioServer, ServerError> {
        let rate = self.source.rate();
        let channels = self.source.channels();
        let block = (rate * BLOCK_MS / 1000) as usize;
        let (mic, _) = broadcast::channel(MIC_BACKLOG);
        let per_ms = rate as usize / 1000;
        let shared = Arc::new(Shared {
            name: self.name,
            rate,
            channels,
            mic: mic.clone(),
            speaker: Mutex::new(JitterBuffer::new(
                channels,
                per_ms * SPEAKER_TARGET_MS as usize,
                per_ms * SPEAKER_MAX_MS as usize,
            )),
            talker: Mutex::new(None),
            next_session: AtomicU64::new(1),
            takeover: self.takeover,
            relay_writes: self.relay_writes,
            speaker_level: std::sync::atomic::AtomicU32::new(0),
            stats: AudioStats::default(),
            recording: self.recording,
            stop: std::sync::atomic::AtomicBool::new(false),
        });
        let mut source = self.source;
        let s = shared.clone();
        std::thread::Builder::new()
            .name("xoq-audio-capture".into())
            .spawn(move || {
                while !s.stop.load(Ordering::Relaxed) {
                    match source.read(block) {
                        Ok(b) => {
                            s.stats.captured.fetch_add(1, Ordering::Relaxed);
                            // No listener is not an error: the block is just not wanted.
                            let _ = s.mic.send(Arc::new(b));
                        }
                        Err(e) => {
                            tracing::error!(device = %s.name, "microphone failed: {e}");
                            std::thread::sleep(Duration::from_millis(500));
                        }
                    }
                }
            })
            .map_err(|e| ServerError::Config(format!("cannot start the capture thread: {e}")))?;
        let mut sink = self.sink;
        let s = shared.clone();
        std::thread::Builder::new()
            .name("xoq-audio-playout".into())
            .spawn(move || {
                let step = Duration::from_millis(u64::from(BLOCK_MS));
                let mut at = Instant::now();
                while !s.stop.load(Ordering::Relaxed) {
                    at += step;
                    if let Some(d) = at.checked_duration_since(Instant::now()) {
                        std::thread::sleep(d);
                    } else {
                        // Fell behind (a stalled host): do not replay the backlog in a burst.
                        at = Instant::now();
                    }
                    let pulled = s.speaker.lock().ok().and_then(|mut j| {
                        let first = j.next_index().unwrap_or(0);
                        j.pull(block).map(|v| (first, v))
                    });
                    let level = pulled.as_ref().map_or(0.0, |(_, v)| {
                        (v.iter().map(|x| x * x).sum::<f32>() / v.len().max(1) as f32).sqrt()
                    });
                    // Peak hold until the next status report: a short sound between two
                    // reports still shows. Non-negative floats order like their bits.
                    s.speaker_level
                        .fetch_max(level.to_bits(), Ordering::Relaxed);
                    if let Some((first, samples)) = pulled
                        && let Err(e) = sink.play(first, &samples)
                    {
                        tracing::warn!(device = %s.name, "speaker failed: {e}");
                    }
                }
            })
            .map_err(|e| ServerError::Config(format!("cannot start the playout thread: {e}")))?;
        Ok(AudioServer {
            shared: Arc::new(Stopper(shared)),
        })
    }
}

struct Shared {
    name: String,
    rate: u32,
    channels: u8,
    mic: broadcast::Sender<Arc<AudioBlock>>,
    speaker: Mutex<JitterBuffer>,
    /// The session that holds the speaker, and how to tell it that it lost it.
    talker: Mutex<Option<(u64, Arc<Notify>)>>,
    next_session: AtomicU64,
    takeover: bool,
    relay_writes: bool,
    /// Loudest block RMS the speaker played since the last status report (f32 bits).
    speaker_level: std::sync::atomic::AtomicU32,
    stats: AudioStats,
    recording: Option<Recording>,
    stop: std::sync::atomic::AtomicBool,
}

/// Stops the device threads when the last clone of the server drops.
struct Stopper(Arc<Shared>);

impl Drop for Stopper {
    fn drop(&mut self) {
        self.0.stop.store(true, Ordering::Relaxed);
    }
}

/// A served microphone and speaker. Cheap to clone.
#[derive(Clone)]
pub struct AudioServer {
    shared: Arc<Stopper>,
}

impl std::fmt::Debug for AudioServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AudioServer")
            .field("device", &self.shared.0.name)
            .finish()
    }
}

impl AudioServer {
    /// Serve `name` (e.g. `sim:tone:440`) at `rate` Hz with `channels` channels.
    pub fn builder(name: &str, rate: u32, channels: u8) -> Result<AudioServerBuilder, ServerError> {
        let f = AudioFormat {
            rate,
            channels,
            ..AudioFormat::DEFAULT
        };
        f.check().map_err(ServerError::Config)?;
        let dev = xoq_device::audio::open(name, rate, channels)?;
        Ok(AudioServerBuilder {
            name: name.to_string(),
            source: dev.source,
            sink: dev.sink,
            recording: dev.recording,
            takeover: false,
            relay_writes: false,
        })
    }

    fn shared(&self) -> &Arc<Shared> {
        &self.shared.0
    }

    /// The device's format (rate and channels; codec and frame size are per session).
    pub fn format(&self) -> AudioFormat {
        AudioFormat {
            rate: self.shared().rate,
            channels: self.shared().channels,
            ..AudioFormat::DEFAULT
        }
    }

    /// Counters.
    pub fn stats(&self) -> &AudioStats {
        &self.shared().stats
    }

    /// The speaker's jitter-buffer counters.
    pub fn speaker_stats(&self) -> JitterStats {
        self.shared()
            .speaker
            .lock()
            .map(|j| j.stats())
            .unwrap_or_default()
    }

    /// How far ahead of the speaker its buffered audio reaches, ms (the talk's added delay).
    pub fn speaker_delay_ms(&self) -> f64 {
        let rate = f64::from(self.shared().rate);
        self.shared()
            .speaker
            .lock()
            .map(|j| j.depth() as f64 * 1000.0 / rate)
            .unwrap_or(0.0)
    }

    /// What a simulated speaker played (`None` for a real device).
    pub fn recording(&self) -> Option<&Recording> {
        self.shared().recording.as_ref()
    }

    /// Publish the microphone on a relay as a hang broadcast named `name`, what the stock
    /// MoQ web player plays: a `catalog.json` track (one Opus rendition named `audio`) and an
    /// `audio` track with one group per 20 ms Opus packet, each frame a varint presentation
    /// time in µs followed by the packet. Encodes only while someone subscribes to the
    /// audio. The relay side is listen-only. Returns when the session ends.
    pub async fn serve_moq(&self, session: &MoqSession, name: &str) -> Result<(), ServerError> {
        let shared = self.shared().clone();
        let (_bc, mut tracks) =
            session.publish_tracks(name, &["catalog.json", "audio", "speaker"])?;
        let (Some(speaker), Some(mut audio), Some(mut catalog)) =
            (tracks.pop(), tracks.pop(), tracks.pop())
        else {
            return Err(ServerError::Config(
                "the relay session did not create the audio tracks".into(),
            ));
        };
        let _status = tokio::spawn(speaker_status(shared.clone(), speaker));
        let _talkers = shared.relay_writes.then(|| {
            tokio::spawn(relay_talkers(
                shared.clone(),
                session.read_writers(&format!("{name}/talk"), "audio"),
            ))
        });
        struct Abort(Option<tokio::task::JoinHandle<()>>);
        impl Drop for Abort {
            fn drop(&mut self) {
                if let Some(t) = self.0.take() {
                    t.abort();
                }
            }
        }
        let (_status, _talkers) = (Abort(Some(_status)), Abort(_talkers));
        let format = AudioFormat {
            rate: shared.rate,
            channels: shared.channels,
            ..AudioFormat::DEFAULT
        };
        let epoch = now_us();
        catalog.write_grouped(
            Bytes::from(audio_catalog_json(format.rate, format.channels, epoch)),
            true,
        )?;
        loop {
            tokio::select! {
                r = audio.used() => r?,
                _ = session.closed() => return Ok(()),
            }
            let mut rx = shared.mic.subscribe();
            let mut encoder = SoundEncoder::new(
                SoundCodec::Opus,
                format.rate,
                format.channels,
                format.frame_samples(),
            )
            .map_err(|e| ServerError::Config(format!("Opus encoder: {e}")))?;
            let mut chunks = Rechunker::new(&format);
            loop {
                let block = tokio::select! {
                    b = rx.recv() => b,
                    _ = audio.unused() => break,
                    _ = session.closed() => return Ok(()),
                };
                let b = match block {
                    Ok(b) => b,
                    Err(broadcast::error::RecvError::Lagged(n)) => {
                        shared
                            .stats
                            .listener_skipped
                            .fetch_add(n, Ordering::Relaxed);
                        chunks.reset();
                        continue;
                    }
                    Err(broadcast::error::RecvError::Closed) => return Ok(()),
                };
                let mut packets = Vec::new();
                chunks.push(&b, |_, capture_us, pcm| {
                    if let Ok(p) = encoder.encode(pcm) {
                        packets.push((capture_us, p));
                    }
                });
                for (capture_us, p) in packets {
                    let mut payload = BytesMut::with_capacity(p.len() + 8);
                    xoq_wire::coding::put_varint(&mut payload, capture_us.saturating_sub(epoch));
                    payload.extend_from_slice(&p);
                    // One group per packet, as the stock player expects: a lost group costs
                    // one packet, never a backlog.
                    audio.write_grouped(payload.freeze(), true)?;
                }
            }
        }
    }

    /// Serve one P2P connection until it ends.
    pub async fn serve_connection(&self, conn: Connection) {
        self.session(&conn).await;
        crate::session::linger(&conn).await;
    }

    async fn session(&self, conn: &Connection) {
        let peer = conn.remote_id();
        let Ok((mut send, recv)) = conn.accept_bi().await else {
            return;
        };
        let shared = self.shared().clone();
        let mut reader = FramedReader::new(recv);
        let hello = tokio::time::timeout(HELLO_TIMEOUT, reader.next(ClientMsg::decode)).await;
        let Ok(Ok(Some(ClientMsg::Hello {
            version,
            listen,
            talk,
            takeover,
            format,
        }))) = hello
        else {
            return;
        };
        let refuse = |code: RefuseCode, message: String| {
            let code = code.to_code();
            move |out: &mut BytesMut| ServerMsg::Refused { code, message }.encode(out)
        };
        if version != VERSION {
            let m = format!(
                "audio protocol version {version} not supported (server speaks {VERSION}); upgrade the older side"
            );
            crate::session::refuse(&mut send, refuse(RefuseCode::Version, m)).await;
            return;
        }
        let device = AudioFormat {
            rate: shared.rate,
            channels: shared.channels,
            ..AudioFormat::DEFAULT
        };
        let format = AudioFormat {
            rate: if format.rate == 0 {
                device.rate
            } else {
                format.rate
            },
            channels: if format.channels == 0 {
                device.channels
            } else {
                format.channels
            },
            ..format
        };
        if format.rate != device.rate || format.channels != device.channels {
            let m = format!(
                "{} runs at {} Hz with {} channel(s), not {} Hz with {}: ask for that, or let the server choose",
                shared.name, device.rate, device.channels, format.rate, format.channels
            );
            crate::session::refuse(&mut send, refuse(RefuseCode::Unsupported, m)).await;
            return;
        }
        let id = shared.next_session.fetch_add(1, Ordering::Relaxed);
        let kicked = Arc::new(Notify::new());
        if talk {
            // Decide under the lock, refuse after it (no lock across an await).
            let busy = {
                let mut t = match shared.talker.lock() {
                    Ok(t) => t,
                    Err(p) => p.into_inner(),
                };
                match t.as_ref() {
                    Some(_) if !(takeover || shared.takeover) => true,
                    old => {
                        if let Some((_, kick)) = old {
                            kick.notify_one();
                        }
                        *t = Some((id, kicked.clone()));
                        false
                    }
                }
            };
            if busy {
                let m = format!(
                    "another client is talking to {}'s speaker: wait, or take it over (--takeover)",
                    shared.name
                );
                crate::session::refuse(&mut send, refuse(RefuseCode::Busy, m)).await;
                return;
            }
            if let Ok(mut j) = shared.speaker.lock() {
                j.reset();
            }
        }
        // Frees the speaker however this session ends (also on an early return below).
        let _guard = TalkerGuard {
            shared: shared.clone(),
            id,
        };
        let codec = SoundCodec::from(format.codec);
        let frame = format.frame_samples();
        let (Ok(mut encoder), Ok(mut decoder)) = (
            SoundEncoder::new(codec, format.rate, format.channels, frame),
            SoundDecoder::new(codec, format.rate, format.channels, frame),
        ) else {
            let m = "the codec could not start on this server".to_string();
            crate::session::refuse(&mut send, refuse(RefuseCode::Unavailable, m)).await;
            return;
        };
        let mut out = BytesMut::new();
        ServerMsg::Welcome {
            version: VERSION,
            format,
            server_us: now_us(),
            device: shared.name.clone(),
        }
        .encode(&mut out);
        if send.write_all(&out).await.is_err() {
            return;
        }
        tracing::info!(%peer, device = %shared.name, listen, talk, codec = format.codec.name(), "audio client connected");
        let mut mic = listen.then(|| shared.mic.subscribe());
        let mut chunks = Rechunker::new(&format);
        loop {
            tokio::select! {
                block = async {
                    match mic.as_mut() {
                        Some(m) => m.recv().await,
                        None => std::future::pending().await,
                    }
                } => {
                    let b = match block {
                        Ok(b) => b,
                        Err(broadcast::error::RecvError::Lagged(n)) => {
                            shared.stats.listener_skipped.fetch_add(n, Ordering::Relaxed);
                            chunks.reset();
                            continue;
                        }
                        Err(broadcast::error::RecvError::Closed) => break,
                    };
                    out.clear();
                    chunks.push(&b, |first_sample, capture_us, pcm| {
                        if let Ok(payload) = encoder.encode(pcm) {
                            ServerMsg::Packet(AudioPacket {
                                first_sample,
                                capture_us,
                                payload: Bytes::from(payload),
                            })
                            .encode(&mut out);
                        }
                    });
                    if !out.is_empty() && send.write_all(&out).await.is_err() {
                        break;
                    }
                }
                msg = reader.next(ClientMsg::decode) => {
                    match msg {
                        Ok(Some(ClientMsg::Packet(p))) if talk => {
                            match decoder.decode_packet(p.first_sample, &p.payload) {
                                Ok(d) => {
                                    if let Ok(mut j) = shared.speaker.lock() {
                                        j.push(d.first_sample, &d.samples);
                                    }
                                }
                                Err(_) => {
                                    shared.stats.decode_errors.fetch_add(1, Ordering::Relaxed);
                                }
                            }
                        }
                        Ok(Some(ClientMsg::Packet(_))) => {
                            // Audio from a listener-only session: it did not ask to talk.
                            shared.stats.decode_errors.fetch_add(1, Ordering::Relaxed);
                        }
                        Ok(Some(ClientMsg::Ping { id, client_us })) => {
                            out.clear();
                            ServerMsg::Pong { id, client_us, server_us: now_us() }.encode(&mut out);
                            if send.write_all(&out).await.is_err() {
                                break;
                            }
                        }
                        Ok(Some(ClientMsg::Hello { .. })) | Ok(None) | Err(_) => break,
                    }
                }
                _ = kicked.notified() => {
                    let m = format!("another client took over {}'s speaker", shared.name);
                    crate::session::refuse(&mut send, refuse(RefuseCode::Busy, m)).await;
                    break;
                }
            }
        }
        tracing::info!(%peer, device = %shared.name, "audio client left");
    }
}

/// The microphone's 10 ms blocks re-cut into one session's frames, keeping each frame's
/// first sample index and capture time. A skipped block (a lagging reader) restarts it.
struct Rechunker {
    frame: usize,
    channels: usize,
    rate: u32,
    pending: Vec<f32>,
    first: u64,
    capture_us: u64,
}

impl Rechunker {
    fn new(format: &AudioFormat) -> Self {
        Self {
            frame: format.frame_samples(),
            channels: usize::from(format.channels),
            rate: format.rate,
            pending: Vec::new(),
            first: 0,
            capture_us: 0,
        }
    }

    /// Forget a partial frame (the stream skipped).
    fn reset(&mut self) {
        self.pending.clear();
    }

    /// Add a block; call `each(first_sample, capture_us, samples)` per whole frame.
    fn push(&mut self, b: &AudioBlock, mut each: impl FnMut(u64, u64, &[f32])) {
        if self.pending.is_empty() {
            self.first = b.first_sample;
            self.capture_us = b.capture_us;
        }
        self.pending.extend_from_slice(&b.samples);
        let per = self.frame * self.channels;
        let mut used = 0;
        while self.pending.len() - used >= per {
            each(self.first, self.capture_us, &self.pending[used..used + per]);
            used += per;
            self.first += self.frame as u64;
            self.capture_us += self.frame as u64 * 1_000_000 / u64::from(self.rate);
        }
        self.pending.drain(..used);
    }
}

/// Every 250 ms on the broadcast's `speaker` track, as JSON: what the speaker plays and who
/// talks (pages show it; tests read it).
async fn speaker_status(shared: Arc<Shared>, mut track: xoq_transport::moq::TrackWriter) {
    let mut tick = tokio::time::interval(Duration::from_millis(250));
    loop {
        tick.tick().await;
        let st = shared.speaker.lock().map(|j| j.stats()).unwrap_or_default();
        let talking = shared.talker.lock().map(|t| t.is_some()).unwrap_or(false);
        // The loudest block since the previous report.
        let level = f32::from_bits(shared.speaker_level.swap(0, Ordering::Relaxed));
        let json = format!(
            r#"{{"played":{},"concealed":{},"underruns":{},"overruns":{},"talking":{talking},"level":{level:.4},"relayWrites":{}}}"#,
            st.played, st.concealed, st.underruns, st.overruns, shared.relay_writes
        );
        if track.write_grouped(Bytes::from(json), true).is_err() {
            return;
        }
    }
}

/// Relay writers (`<name>/talk/<writer>`, track `audio`, hang legacy frames: a varint
/// presentation time in µs and an Opus packet) to the speaker: a writer takes it when it is
/// free and keeps it until it leaves; others are dropped and counted meanwhile.
async fn relay_talkers(shared: Arc<Shared>, mut writers: xoq_transport::moq::Writers) {
    use std::collections::HashMap;
    use xoq_transport::moq::WriterEvent;
    let rate = shared.rate;
    let frame = (rate / 50) as usize;
    let mut talkers: HashMap<String, (u64, SoundDecoder)> = HashMap::new();
    while let Some(ev) = writers.next().await {
        match ev {
            WriterEvent::Joined(w) => tracing::info!(writer = %w, "relay talker joined"),
            WriterEvent::Left(w) => {
                if let Some((id, _)) = talkers.remove(&w) {
                    release_talker(&shared, id);
                }
            }
            WriterEvent::Frame { writer, payload } => {
                let mut b = &payload[..];
                let Ok(pts) = xoq_wire::coding::get_varint(&mut b) else {
                    shared.stats.decode_errors.fetch_add(1, Ordering::Relaxed);
                    continue;
                };
                if !talkers.contains_key(&writer) {
                    let Ok(dec) = SoundDecoder::new(SoundCodec::Opus, rate, shared.channels, frame)
                    else {
                        continue;
                    };
                    let id = shared.next_session.fetch_add(1, Ordering::Relaxed);
                    talkers.insert(writer.clone(), (id, dec));
                }
                let Some((id, dec)) = talkers.get_mut(&writer) else {
                    continue;
                };
                // Take the speaker if it is free; keep it if ours; else this is refused.
                let ours = match shared.talker.lock() {
                    Ok(mut t) => match t.as_ref() {
                        None => {
                            *t = Some((*id, Arc::new(Notify::new())));
                            if let Ok(mut j) = shared.speaker.lock() {
                                j.reset();
                            }
                            true
                        }
                        Some((holder, _)) => holder == id,
                    },
                    Err(_) => false,
                };
                if !ours {
                    shared.stats.talk_refused.fetch_add(1, Ordering::Relaxed);
                    continue;
                }
                let first = pts.saturating_mul(u64::from(rate)) / 1_000_000;
                match dec.decode_packet(first, b) {
                    Ok(d) => {
                        if let Ok(mut j) = shared.speaker.lock() {
                            j.push(d.first_sample, &d.samples);
                        }
                    }
                    Err(_) => {
                        shared.stats.decode_errors.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
        }
    }
    for (_, (id, _)) in talkers {
        release_talker(&shared, id);
    }
}

fn release_talker(shared: &Shared, id: u64) {
    if let Ok(mut t) = shared.talker.lock()
        && t.as_ref().is_some_and(|(holder, _)| *holder == id)
    {
        *t = None;
    }
}

/// The hang catalog of the microphone's broadcast: one Opus rendition named `audio`. The
/// `xoq` section (ignored by players) gives the capture clock of presentation time 0.
pub fn audio_catalog_json(rate: u32, channels: u8, epoch_us: u64) -> String {
    format!(
        concat!(
            r#"{{"audio":{{"renditions":{{"audio":{{"codec":"opus","sampleRate":{rate},"#,
            r#""numberOfChannels":{ch},"bitrate":{br},"container":{{"kind":"legacy"}},"jitter":20}}}}}},"#,
            r#""xoq":{{"epochUs":{epoch}}}}}"#
        ),
        rate = rate,
        ch = channels,
        br = 64_000 * u32::from(channels),
        epoch = epoch_us
    )
}

/// Frees the speaker when its talker's session ends, however it ends.
struct TalkerGuard {
    shared: Arc<Shared>,
    id: u64,
}

impl Drop for TalkerGuard {
    fn drop(&mut self) {
        release_talker(&self.shared, self.id);
    }
}

impl ProtocolHandler for AudioServer {
    async fn accept(&self, connection: Connection) -> Result<(), AcceptError> {
        self.serve_connection(connection).await;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_catalog_is_the_json_the_player_reads() {
        assert_eq!(
            audio_catalog_json(48_000, 1, 7),
            r#"{"audio":{"renditions":{"audio":{"codec":"opus","sampleRate":48000,"numberOfChannels":1,"bitrate":64000,"container":{"kind":"legacy"},"jitter":20}}},"xoq":{"epochUs":7}}"#
        );
    }

    #[test]
    fn blocks_are_recut_into_frames_with_their_index_and_time() {
        let f = AudioFormat {
            frame_ms: 20,
            ..AudioFormat::DEFAULT
        };
        let mut r = Rechunker::new(&f);
        let mut got = Vec::new();
        for k in 0..5u64 {
            let b = AudioBlock {
                first_sample: 4800 + k * 480,
                capture_us: 100_000 + k * 10_000,
                samples: vec![k as f32; 480],
            };
            r.push(&b, |first, t, pcm| {
                got.push((first, t, pcm.len(), pcm[0], pcm[959]))
            });
        }
        assert_eq!(
            got,
            vec![
                (4800, 100_000, 960, 0.0, 1.0),
                (5760, 120_000, 960, 2.0, 3.0)
            ]
        );
    }
}
