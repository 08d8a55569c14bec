//! A remote microphone and speaker: [`RemoteAudio`] reads the robot's microphone as decoded
//! float samples and writes samples to its speaker, over one P2P session.
//!
//! Every chunk read carries the index of its first sample in the microphone's stream and its
//! capture time on the robot clock, so a caller sees a gap (it read too slowly and the server
//! skipped) and can line audio up with joints and pictures. Relay addresses and reconnection
//! are not supported by audio yet: a dropped link ends the stream with an error.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use iroh::endpoint::{RecvStream, SendStream};
use tokio::sync::Mutex as AsyncMutex;
use xoq_media::audio::{SoundCodec, SoundDecoder, SoundEncoder};
use xoq_transport::framed::FramedReader;
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
    send: Arc<AsyncMutex<SendStream>>,
    conn: iroh::endpoint::Connection,
    dialer: Dialer,
    encoder: Option<SoundEncoder>,
    /// Samples written but not yet a whole frame.
    pending: Vec<f32>,
    next_out: u64,
    stats: Arc<AudioClientStats>,
    clock: Clock,
    reader: tokio::task::JoinHandle<()>,
}

impl std::fmt::Debug for RemoteAudio {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RemoteAudio")
            .field("peer", &self.peer)
            .field("format", &self.format)
            .finish()
    }
}

fn sound_codec(c: AudioCodec) -> SoundCodec {
    match c {
        AudioCodec::Opus => SoundCodec::Opus,
        AudioCodec::PcmS16 => SoundCodec::PcmS16,
        AudioCodec::PcmF32 => SoundCodec::PcmF32,
    }
}

impl RemoteAudio {
    /// Connect to an audio server by address (`<id>@ip:port` or `<id>`).
    pub async fn connect(address: &str, opts: AudioOptions) -> Result<Self, ClientError> {
        let addr: Address = address.parse().map_err(ClientError::from)?;
        if matches!(addr, Address::Moq { .. }) {
            return Err(ClientError::Unsupported(
                "audio over a relay is not available yet: connect P2P with the server's id".into(),
            ));
        }
        tokio::time::timeout(CONNECT_TIMEOUT, Self::open(addr, opts))
            .await
            .map_err(|_| ClientError::Timeout(CONNECT_TIMEOUT))?
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
        let codec = sound_codec(format.codec);
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
            send: Arc::new(AsyncMutex::new(opened.send)),
            conn: opened.conn,
            dialer,
            encoder,
            pending: Vec::new(),
            next_out: 0,
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

    /// Send interleaved samples to the speaker. Whole frames go at once; a partial frame
    /// waits for the next call (or [`flush`](Self::flush)).
    pub async fn write(&mut self, samples: &[f32]) -> Result<(), ClientError> {
        let Some(encoder) = self.encoder.as_mut() else {
            return Err(ClientError::Unsupported(
                "this stream does not talk: open it with talk(true)".into(),
            ));
        };
        let per = self.format.frame_samples() * usize::from(self.format.channels);
        self.pending.extend_from_slice(samples);
        let mut out = BytesMut::new();
        while self.pending.len() >= per {
            let rest = self.pending.split_off(per);
            let payload = encoder
                .encode(&self.pending)
                .map_err(|e| ClientError::Device(e.to_string()))?;
            ClientMsg::Packet(AudioPacket {
                first_sample: self.next_out,
                capture_us: self.clock.robot_now_us(),
                payload: Bytes::from(payload),
            })
            .encode(&mut out);
            self.pending = rest;
            self.next_out += self.format.frame_samples() as u64;
        }
        if !out.is_empty() {
            self.send
                .lock()
                .await
                .write_all(&out)
                .await
                .map_err(|e| ClientError::Closed(format!("{}: {e}", self.peer)))?;
        }
        Ok(())
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
        if let Ok(mut s) = self.send.try_lock() {
            let _ = s.finish();
        }
        self.reader.abort();
        self.inbox.close("the stream was closed".into());
        self.conn.close(p2p::CLOSE_NORMAL.into(), b"closed");
        self.dialer.close().await;
    }
}

impl Drop for RemoteAudio {
    fn drop(&mut self) {
        self.reader.abort();
        self.conn.close(p2p::CLOSE_NORMAL.into(), b"dropped");
        self.dialer.close_soon();
    }
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
