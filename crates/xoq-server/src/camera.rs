//! Camera server (first slice: the test-pattern camera as JPEG over P2P).
//!
//! One capture and one encode per frame, whatever the number of viewers; frames fan out
//! through a `watch` channel that holds only the newest frame. Policy for a slow viewer: it
//! never sees a backlog. Each viewer grants credits for the frames it is ready to take (see
//! `xoq_wire::camera`); with a credit the server sends the newest frame, skipping the ones in
//! between (every JPEG frame is a keyframe), so a viewer can never stall the capture or the
//! other viewers, and nothing piles up in transport buffers.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use iroh::endpoint::Connection;
use iroh::protocol::{AcceptError, ProtocolHandler};
use tokio::sync::watch;
use xoq_device::camera::TestPattern;
use xoq_transport::framed::FramedReader;
use xoq_wire::camera::{MAX_CREDIT, VideoFrame, decode_credit};

use crate::serial::ServerError;

/// Configures and starts a [`CameraServer`].
#[must_use]
#[derive(Debug)]
pub struct CameraServerBuilder {
    pattern: TestPattern,
    fps: u32,
    quality: u8,
}

impl CameraServerBuilder {
    /// Frames per second (1–120).
    pub fn fps(mut self, fps: u32) -> Self {
        self.fps = fps.clamp(1, 120);
        self
    }

    /// JPEG quality (1–100).
    pub fn quality(mut self, quality: u8) -> Self {
        self.quality = quality.clamp(1, 100);
        self
    }

    /// Start capturing and encoding.
    pub async fn start(self) -> Result<CameraServer, ServerError> {
        let (tx, rx) = watch::channel(None);
        let stats = Arc::new(CameraStats::default());
        let capture = tokio::spawn(capture(self, tx, stats.clone()));
        Ok(CameraServer {
            inner: Arc::new(Inner {
                latest: rx,
                stats,
                capture,
            }),
        })
    }
}

/// Counters of a running camera server.
#[derive(Debug, Default)]
pub struct CameraStats {
    /// Frames captured and encoded.
    pub frames: AtomicU64,
    /// Frames that failed to encode (skipped).
    pub encode_errors: AtomicU64,
    /// Frames viewers skipped because they were not ready (summed over viewers).
    pub skipped: AtomicU64,
}

#[derive(Debug)]
struct Inner {
    latest: watch::Receiver<Option<Arc<VideoFrame>>>,
    stats: Arc<CameraStats>,
    capture: tokio::task::JoinHandle<()>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.capture.abort();
    }
}

/// A running camera server; accepts viewers on [`xoq_wire::camera::ALPN_JPEG`].
#[derive(Debug, Clone)]
pub struct CameraServer {
    inner: Arc<Inner>,
}

fn now_us() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}

async fn capture(
    cfg: CameraServerBuilder,
    tx: watch::Sender<Option<Arc<VideoFrame>>>,
    stats: Arc<CameraStats>,
) {
    let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / f64::from(cfg.fps)));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let (w, h) = (cfg.pattern.width(), cfg.pattern.height());
    for seq in 0u64.. {
        tick.tick().await;
        let ts = now_us();
        let pattern = cfg.pattern;
        let quality = cfg.quality;
        // Rendering and encoding are CPU work: keep them off the network threads.
        let encoded = tokio::task::spawn_blocking(move || {
            xoq_media::jpeg::encode(&pattern.render(seq, ts), w, h, quality)
        })
        .await;
        match encoded {
            Ok(Ok(jpg)) => {
                stats.frames.fetch_add(1, Ordering::Relaxed);
                let frame = VideoFrame {
                    seq,
                    timestamp_us: ts,
                    width: w as u16,
                    height: h as u16,
                    keyframe: true,
                    data: Bytes::from(jpg),
                };
                if tx.send(Some(Arc::new(frame))).is_err() {
                    return;
                }
            }
            _ => {
                stats.encode_errors.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

impl CameraServer {
    /// A server on the test-pattern camera at `width × height`, 30 fps, JPEG quality 80.
    pub fn test_pattern(width: u32, height: u32) -> Result<CameraServerBuilder, ServerError> {
        Ok(CameraServerBuilder {
            pattern: TestPattern::new(width, height)?,
            fps: 30,
            quality: 80,
        })
    }

    /// Counters.
    pub fn stats(&self) -> &CameraStats {
        &self.inner.stats
    }

    async fn serve_viewer(&self, conn: Connection) -> Result<(), String> {
        let (mut send, recv) = conn.accept_bi().await.map_err(|e| e.to_string())?;
        let mut grants = FramedReader::new(recv);
        let mut rx = self.inner.latest.clone();
        let mut buf = BytesMut::new();
        let mut credit: u64 = 0;
        let mut last_sent: Option<u64> = None;
        loop {
            if credit > 0 {
                // The newest frame when this viewer has room: no backlog for a slow one.
                let frame = rx.borrow_and_update().clone();
                if let Some(f) = frame
                    && last_sent.is_none_or(|s| f.seq > s)
                {
                    if let Some(prev) = last_sent
                        && f.seq > prev + 1
                    {
                        self.inner
                            .stats
                            .skipped
                            .fetch_add(f.seq - prev - 1, Ordering::Relaxed);
                    }
                    buf.clear();
                    f.encode(&mut buf).map_err(|e| e.to_string())?;
                    send.write_all(&buf).await.map_err(|e| e.to_string())?;
                    credit -= 1;
                    last_sent = Some(f.seq);
                    continue;
                }
            }
            tokio::select! {
                g = grants.next(decode_credit) => match g {
                    Ok(Some(n)) => credit = (credit + n).min(MAX_CREDIT),
                    _ => return Ok(()),
                },
                r = rx.changed(), if credit > 0 => r.map_err(|_| "camera stopped".to_string())?,
                _ = conn.closed() => return Ok(()),
            }
        }
    }
}

impl ProtocolHandler for CameraServer {
    async fn accept(&self, connection: Connection) -> Result<(), AcceptError> {
        if let Err(e) = self.serve_viewer(connection).await {
            tracing::debug!("viewer left: {e}");
        }
        Ok(())
    }
}
