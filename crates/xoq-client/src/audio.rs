//! A remote microphone and speaker: [`RemoteAudio`] reads the robot's microphone as decoded
//! float samples and writes samples to its speaker, over one P2P session.
//!
//! Every chunk read carries the index of its first sample in the microphone's stream and its
//! capture time on the robot clock, so a caller sees a gap (it read too slowly and the server
//! skipped) and can line audio up with joints and pictures. A relay address
//! (`<relay-url>/<path>`) listens to the server's hang broadcast (Opus, 20 ms, listen-only).
//! P2P sessions do not reconnect yet: a dropped link ends the stream with an error.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use iroh::endpoint::{RecvStream, SendStream};
use tokio::sync::Mutex as AsyncMutex;
use xoq_media::audio::{SoundCodec, SoundDecoder, SoundEncoder};
use xoq_transport::framed::FramedReader;
use xoq_transport::moq::{MoqSession, Redial};
use xoq_transport::{Address, p2p};
use xoq_wire::RefuseCode;
use xoq_wire::audio::{ALPN, AudioCodec, AudioFormat, AudioPacket, ClientMsg, ServerMsg, VERSION};

use crate::ClientError;
use crate::clock::Clock;
use crate::conn::Dialer;
use crate::link::Identity;
use crate::rx::Inbox;

/// How long connecting (dial + handshake) may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(15);
/// How far ahead of real time a talker may send: `write` waits beyond this, as a local
/// output stream's write blocks while the device buffer is full. Kept under the speaker's
/// catch-up threshold (twice its 40 ms target), so paced talk is never cut.
const TALK_LEAD: Duration = Duration::from_millis(60);
/// A talker this late (it paused) starts a new utterance: the pace restarts from now.
const TALK_RESTART: Duration = Duration::from_millis(200);

/// Chunks kept for a reader that is behind: 2 s of 20 ms frames; older ones are dropped
/// (counted in [`AudioClientStats::dropped`]).
const INBOX_CHUNKS: usize = 100;

/// Options for opening a remote microphone/speaker.
#[derive(Debug, Clone)]
#[must_use]
pub struct AudioOptions {
    /// Rate and channels wanted (0: the device's).
    rate: u32,
    channels: u8,
    codec: AudioCodec,
    frame_ms: u8,
    listen: bool,
    talk: bool,
    takeover: bool,
    identity: Identity,
    offline: bool,
}

impl Default for AudioOptions {
    fn default() -> Self {
        Self::new()
    }
}

impl AudioOptions {
    /// Listen to the microphone, in the server's rate and channels, Opus in 20 ms frames.
    pub fn new() -> Self {
        Self {
            rate: 0,
            channels: 0,
            codec: AudioCodec::Opus,
            frame_ms: 20,
            listen: true,
            talk: false,
            takeover: false,
            identity: Identity::User,
            offline: xoq_transport::offline_from_env(),
        }
    }

    /// Ask for this rate and channel count (the server refuses others than its device's).
    pub fn rate_channels(mut self, rate: u32, channels: u8) -> Self {
        self.rate = rate;
        self.channels = channels;
        self
    }

    /// How samples travel: Opus (default), or PCM s16/f32.
    pub fn codec(mut self, codec: AudioCodec) -> Self {
        self.codec = codec;
        self
    }

    /// Packet duration: 10, 20 (default), 40 or 60 ms.
    pub fn frame_ms(mut self, ms: u8) -> Self {
        self.frame_ms = ms;
        self
    }

    /// Receive the microphone (default: yes).
    pub fn listen(mut self, on: bool) -> Self {
        self.listen = on;
        self
    }

    /// Send to the speaker (one talker at a time).
    pub fn talk(mut self, on: bool) -> Self {
        self.talk = on;
        self
    }

    /// Take the speaker from its current talker instead of being refused.
    pub fn takeover(mut self, on: bool) -> Self {
        self.takeover = on;
        self
    }

    identity_setters!("stream");
}

/// Decoded microphone samples.
#[derive(Debug, Clone, PartialEq)]
pub struct AudioChunk {
    /// Index of the first sample (per channel) in the microphone's stream.
    pub first_sample: u64,
    /// Capture time of the first sample on the robot clock, µs since the Unix epoch.
    pub capture_us: u64,
    /// Interleaved samples in [-1, 1].
    pub samples: Vec<f32>,
}

/// Counters of an audio client.
#[derive(Debug, Default)]
pub struct AudioClientStats {
    /// Chunks the reader was too slow for (dropped from the front of the inbox).
    pub dropped: AtomicU64,
    /// Packets that could not be decoded.
    pub decode_errors: AtomicU64,
    /// Samples per channel missing between consecutive chunks (the server skipped them).
    pub gap_samples: AtomicU64,
}

/// An open remote microphone and speaker.
pub struct RemoteAudio {
    peer: String,
    format: AudioFormat,
    device: String,
    inbox: Arc<Inbox<AudioChunk>>,
    link: Link,
    encoder: Option<SoundEncoder>,
    /// Samples written but not yet a whole frame.
    pending: Vec<f32>,
    next_out: u64,
    /// Real-time anchor of the talk: when sample `.1` was due.
    talk_anchor: Option<(tokio::time::Instant, u64)>,
    stats: Arc<AudioClientStats>,
    clock: Clock,
    reader: tokio::task::JoinHandle<()>,
}

/// How the stream reaches the server. One per stream and never moved on the data path.
#[allow(clippy::large_enum_variant)]
enum Link {
    /// One P2P session, both directions.
    P2p {
        send: Arc<AsyncMutex<SendStream>>,
        conn: iroh::endpoint::Connection,
        dialer: Dialer,
    },
    /// The server's relay broadcast, listen-only.
    Relay { session: Option<MoqSession> },
}

impl std::fmt::Debug for RemoteAudio {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RemoteAudio")
            .field("peer", &self.peer)
            .field("format", &self.format)
            .finish()
    }
}

impl RemoteAudio {
    /// Connect to an audio server by address (`<id>@ip:port` or `<id>`).
    pub async fn connect(address: &str, opts: AudioOptions) -> Result<Self, ClientError> {
        let addr: Address = address.parse().map_err(ClientError::from)?;
        let opening = async {
            match &addr {
                Address::Moq { relay, name } => Self::open_relay(relay, name, &opts).await,
                Address::P2p { .. } | Address::Service { .. } => {
                    Self::open(addr.clone(), opts.clone()).await
                }
            }
        };
        tokio::time::timeout(CONNECT_TIMEOUT, opening)
            .await
            .map_err(|_| ClientError::Timeout(CONNECT_TIMEOUT))?
    }

    async fn open_relay(
        relay: &xoq_transport::RelayUrl,
        name: &str,
        opts: &AudioOptions,
    ) -> Result<Self, ClientError> {
        let peer = format!("{relay}{name}");
        if opts.talk {
            return Err(ClientError::Unsupported(format!(
                "{peer}: a relay broadcast is listen-only; connect P2P (the server's id) to talk"
            )));
        }
        if opts.codec != AudioCodec::Opus {
            return Err(ClientError::Unsupported(format!(
                "{peer}: relay broadcasts are Opus; ask for opus, or connect P2P for PCM"
            )));
        }
        let session = MoqSession::connect(relay, Redial::Until(Duration::from_secs(60))).await?;
        let json = session
            .read_track(name, "catalog.json")
            .next()
            .await
            .map_err(|e| ClientError::Connect(format!("{peer}: no audio broadcast there ({e})")))?;
        let (track, format, epoch) = parse_catalog(&json).ok_or_else(|| {
            ClientError::Unsupported(format!("{peer}: the catalog describes no Opus audio"))
        })?;
        let decoder = SoundDecoder::new(
            SoundCodec::Opus,
            format.rate,
            format.channels,
            format.frame_samples(),
        )
        .map_err(|e| ClientError::Device(e.to_string()))?;
        let inbox = Arc::new(Inbox::new(INBOX_CHUNKS));
        let stats = Arc::new(AudioClientStats::default());
        let reader = session.read_track(name, &track).until_gone();
        let task = tokio::spawn(relay_loop(
            reader,
            decoder,
            inbox.clone(),
            stats.clone(),
            peer.clone(),
            format.rate,
            epoch,
        ));
        Ok(Self {
            peer,
            format,
            device: name.to_string(),
            inbox,
            link: Link::Relay {
                session: Some(session),
            },
            encoder: None,
            pending: Vec::new(),
            next_out: 0,
            talk_anchor: None,
            stats,
            clock: Clock::new(),
            reader: task,
        })
    }

    async fn open(addr: Address, opts: AudioOptions) -> Result<Self, ClientError> {
        let peer = addr.to_string();
        let dialer = Dialer::new(addr, opts.identity.clone(), opts.offline);
        let format = AudioFormat {
            rate: opts.rate,
            channels: opts.channels,
            codec: opts.codec,
            frame_ms: opts.frame_ms,
        };
        let mut hello = BytesMut::new();
        ClientMsg::Hello {
            version: VERSION,
            listen: opts.listen,
            talk: opts.talk,
            takeover: opts.takeover,
            format,
        }
        .encode(&mut hello);
        let opened = dialer.open(ALPN, &hello, ServerMsg::decode, true).await?;
        let (format, device, server_us) = match opened.first {
            ServerMsg::Welcome {
                version,
                format,
                server_us,
                device,
            } if version == VERSION => (format, device, server_us),
            ServerMsg::Welcome { version, .. } => {
                opened.conn.close(p2p::CLOSE_NORMAL.into(), b"version");
                return Err(ClientError::Connect(format!(
                    "{peer} speaks audio protocol version {version} and this client {VERSION}: upgrade the older side"
                )));
            }
            ServerMsg::Refused { code, message } => {
                opened.conn.close(p2p::CLOSE_NORMAL.into(), b"refused");
                return Err(ClientError::Refused {
                    code: RefuseCode::from_code(code),
                    message,
                });
            }
            other => {
                return Err(ClientError::Connect(format!(
                    "{peer}: unexpected first message {other:?}"
                )));
            }
        };
        let clock = Clock::new();
        clock.hint(opened.t0, server_us, crate::clock::local_now_us());
        let frame = format.frame_samples();
        let codec = SoundCodec::from(format.codec);
        let decoder = SoundDecoder::new(codec, format.rate, format.channels, frame)
            .map_err(|e| ClientError::Device(e.to_string()))?;
        let encoder = if opts.talk {
            Some(
                SoundEncoder::new(codec, format.rate, format.channels, frame)
                    .map_err(|e| ClientError::Device(e.to_string()))?,
            )
        } else {
            None
        };
        let inbox = Arc::new(Inbox::new(INBOX_CHUNKS));
        let stats = Arc::new(AudioClientStats::default());
        let reader = tokio::spawn(read_loop(
            opened.reader,
            decoder,
            inbox.clone(),
            stats.clone(),
            peer.clone(),
        ));
        Ok(Self {
            peer,
            format,
            device,
            inbox,
            link: Link::P2p {
                send: Arc::new(AsyncMutex::new(opened.send)),
                conn: opened.conn,
                dialer,
            },
            encoder,
            pending: Vec::new(),
            next_out: 0,
            talk_anchor: None,
            stats,
            clock,
            reader,
        })
    }

    /// The session's format (both directions).
    pub fn format(&self) -> AudioFormat {
        self.format
    }

    /// The device the server serves (e.g. `sim:tone:440`).
    pub fn device(&self) -> &str {
        &self.device
    }

    /// Counters.
    pub fn stats(&self) -> &AudioClientStats {
        &self.stats
    }

    /// Microphone chunks received but not read yet.
    pub fn available(&self) -> usize {
        self.inbox.len()
    }

    /// The robot clock now, as estimated from the handshake (µs since the Unix epoch).
    pub fn robot_now_us(&self) -> u64 {
        self.clock.robot_now_us()
    }

    /// The next microphone chunk (one packet's worth), waiting for it.
    pub async fn read(&self) -> Result<AudioChunk, ClientError> {
        self.inbox.pop().await.map_err(ClientError::Closed)
    }

    /// The next chunk, waiting at most `timeout` (`None` forever); `Ok(None)` on timeout.
    /// For synchronous callers (the Python bindings).
    pub fn read_blocking(
        &self,
        timeout: Option<Duration>,
    ) -> Result<Option<AudioChunk>, ClientError> {
        self.inbox
            .pop_blocking(timeout)
            .map_err(ClientError::Closed)
    }

    /// Send interleaved samples to the speaker, paced in real time: whole frames go out at
    /// most 60 ms ahead of when they play, so this waits (as a local output stream's write
    /// does) when given more than that; a partial frame waits for the next call (or
    /// [`flush`](Self::flush)). After a pause the pace restarts.
    pub async fn write(&mut self, samples: &[f32]) -> Result<(), ClientError> {
        if self.encoder.is_none() {
            return Err(ClientError::Unsupported(
                "this stream does not talk: open it with talk(true)".into(),
            ));
        }
        let per = self.format.frame_samples() * usize::from(self.format.channels);
        self.pending.extend_from_slice(samples);
        while self.pending.len() >= per {
            self.pace().await;
            let rest = self.pending.split_off(per);
            let frame = std::mem::replace(&mut self.pending, rest);
            let Some(encoder) = self.encoder.as_mut() else {
                break;
            };
            let payload = encoder
                .encode(&frame)
                .map_err(|e| ClientError::Device(e.to_string()))?;
            let mut out = BytesMut::new();
            ClientMsg::Packet(AudioPacket {
                first_sample: self.next_out,
                capture_us: self.clock.robot_now_us(),
                payload: Bytes::from(payload),
            })
            .encode(&mut out);
            self.next_out += self.format.frame_samples() as u64;
            if let Link::P2p { send, .. } = &self.link {
                send.lock()
                    .await
                    .write_all(&out)
                    .await
                    .map_err(|e| ClientError::Closed(format!("{}: {e}", self.peer)))?;
            }
        }
        Ok(())
    }

    /// Wait until the next frame may go: no more than [`TALK_LEAD`] ahead of real time.
    async fn pace(&mut self) {
        let rate = u64::from(self.format.rate);
        let now = tokio::time::Instant::now();
        let (t0, s0) = *self.talk_anchor.get_or_insert((now, self.next_out));
        let due = t0 + Duration::from_micros((self.next_out - s0) * 1_000_000 / rate);
        if now > due + TALK_RESTART {
            self.talk_anchor = Some((now, self.next_out));
        } else if due > now + TALK_LEAD {
            tokio::time::sleep_until(due - TALK_LEAD).await;
        }
    }

    /// Pad a partial frame with silence and send it.
    pub async fn flush(&mut self) -> Result<(), ClientError> {
        let per = self.format.frame_samples() * usize::from(self.format.channels);
        if self.pending.is_empty() {
            return Ok(());
        }
        let pad = per - self.pending.len() % per;
        self.write(&vec![0.0; pad]).await
    }

    /// End the session.
    pub async fn close(mut self) {
        let _ = self.flush().await;
        self.reader.abort();
        self.inbox.close("the stream was closed".into());
        match &mut self.link {
            Link::P2p { send, conn, dialer } => {
                if let Ok(mut s) = send.try_lock() {
                    let _ = s.finish();
                }
                conn.close(p2p::CLOSE_NORMAL.into(), b"closed");
                dialer.close().await;
            }
            Link::Relay { session } => {
                if let Some(s) = session.take() {
                    s.close().await;
                }
            }
        }
    }
}

impl Drop for RemoteAudio {
    fn drop(&mut self) {
        self.reader.abort();
        if let Link::P2p { conn, dialer, .. } = &self.link {
            conn.close(p2p::CLOSE_NORMAL.into(), b"dropped");
            dialer.close_soon();
        }
    }
}

/// The first Opus rendition of a hang catalog: its track, format (20 ms frames, as the
/// server publishes) and the capture time of presentation time 0 (`xoq.epochUs`, 0 if absent).
fn parse_catalog(json: &[u8]) -> Option<(String, AudioFormat, u64)> {
    let v: serde_json::Value = serde_json::from_slice(json).ok()?;
    let (track, r) = v["audio"]["renditions"]
        .as_object()?
        .iter()
        .find(|(_, r)| r["codec"] == "opus")?;
    let format = AudioFormat {
        rate: u32::try_from(r["sampleRate"].as_u64()?).ok()?,
        channels: u8::try_from(r["numberOfChannels"].as_u64()?).ok()?,
        codec: AudioCodec::Opus,
        frame_ms: 20,
    };
    format.check().ok()?;
    Some((
        track.clone(),
        format,
        v["xoq"]["epochUs"].as_u64().unwrap_or(0),
    ))
}

/// Read a hang audio track: each frame a varint presentation time (µs) and an Opus packet.
async fn relay_loop(
    mut reader: xoq_transport::moq::TrackReader,
    mut decoder: SoundDecoder,
    inbox: Arc<Inbox<AudioChunk>>,
    stats: Arc<AudioClientStats>,
    peer: String,
    rate: u32,
    epoch: u64,
) {
    let reason = loop {
        let frame = match reader.next().await {
            Ok(f) => f,
            Err(e) => break format!("{peer}: the broadcast ended ({e})"),
        };
        let mut b = &frame[..];
        let Ok(pts) = xoq_wire::coding::get_varint(&mut b) else {
            stats.decode_errors.fetch_add(1, Ordering::Relaxed);
            continue;
        };
        // Presentation time counts from the broadcast's epoch; the sample index with it.
        let first_sample = pts.saturating_mul(u64::from(rate)) / 1_000_000;
        match decoder.decode_packet(first_sample, b) {
            Ok(d) => {
                stats.gap_samples.fetch_add(d.skipped, Ordering::Relaxed);
                let before = inbox.dropped();
                inbox.extend([AudioChunk {
                    first_sample: d.first_sample,
                    capture_us: if epoch == 0 { 0 } else { epoch + pts },
                    samples: d.samples,
                }]);
                stats
                    .dropped
                    .fetch_add(inbox.dropped() - before, Ordering::Relaxed);
            }
            Err(_) => {
                stats.decode_errors.fetch_add(1, Ordering::Relaxed);
            }
        }
    };
    inbox.close(reason);
}

async fn read_loop(
    mut reader: FramedReader<RecvStream>,
    mut decoder: SoundDecoder,
    inbox: Arc<Inbox<AudioChunk>>,
    stats: Arc<AudioClientStats>,
    peer: String,
) {
    let reason = loop {
        match reader.next(ServerMsg::decode).await {
            Ok(Some(ServerMsg::Packet(p))) => {
                match decoder.decode_packet(p.first_sample, &p.payload) {
                    Ok(d) => {
                        stats.gap_samples.fetch_add(d.skipped, Ordering::Relaxed);
                        let before = inbox.dropped();
                        inbox.extend([AudioChunk {
                            first_sample: d.first_sample,
                            capture_us: p.capture_us,
                            samples: d.samples,
                        }]);
                        stats
                            .dropped
                            .fetch_add(inbox.dropped() - before, Ordering::Relaxed);
                    }
                    Err(_) => {
                        stats.decode_errors.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
            Ok(Some(ServerMsg::Refused { message, .. })) => break message,
            Ok(Some(_)) => {}
            Ok(None) => break format!("{peer} ended the stream"),
            Err(e) => break format!("{peer}: connection lost ({e})"),
        }
    };
    inbox.close(reason);
}
