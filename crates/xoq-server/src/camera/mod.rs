//! Camera server: one capture, one encode per codec, fan-out to every viewer.
//!
//! A [`CameraSource`] runs on a thread of its own (capture blocks; the source sets the pace).
//! Each captured frame is encoded once per codec that has someone watching — JPEG (a camera's
//! MJPEG passes through untouched) and H.264 (OpenH264, low-latency settings) — and sent
//! to a bounded broadcast channel per codec. Viewers are P2P connections, the codec chosen by
//! ALPN (the server offers H.264 first), and MoQ relay broadcasts in the hang format.
//!
//! Policy for a slow viewer (it never stalls the capture or the other viewers):
//! * a viewer receives a frame only against a credit it granted (see `xoq_wire::camera`);
//! * JPEG: with a credit it gets the newest frame; frames in between are skipped;
//! * H.264: frames depend on each other, so a viewer that runs out of credit (or falls
//!   behind the channel) drops frames until the next keyframe and asks for one, so it
//!   resumes within a round trip instead of waiting out the GoP;
//! * a new H.264 viewer asks for a keyframe at once; forced keyframes are rate-limited
//!   (one per [`IDR_MIN_INTERVAL`]) so a crowd of joiners cannot turn the stream into IDRs.
//!
//! Every skip is counted in [`CameraStats::skipped`].
//!
//! This module holds the public API and the state the pieces share; the pieces are
//! `encode` (the encoders), `capture` (the capture thread), `p2p` (P2P viewers) and
//! `publish` (relay broadcasts).

pub(crate) mod capture;
pub(crate) mod encode;
mod p2p;
mod publish;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::broadcast;
use xoq_device::DeviceError;
use xoq_device::camera::{CameraSource, Mode, ModeRequest, PatternSource};
use xoq_wire::camera::{Codec, VideoFrame};

use crate::ServerError;
use capture::capture_loop;
use encode::EncodeSettings;

pub use p2p::CameraProtocol;
#[cfg(feature = "depth")]
pub(crate) use publish::CatalogExtra;
pub use publish::catalog_json;

/// Frames a codec's channel holds for viewers that are momentarily busy; a viewer further
/// behind has lagged and resumes at the next keyframe.
const CHANNEL_FRAMES: usize = 64;
/// Shortest time between two forced keyframes.
pub const IDR_MIN_INTERVAL: Duration = Duration::from_millis(250);

/// Configures and starts a [`CameraServer`].
#[must_use]
pub struct CameraServerBuilder {
    source: Box<dyn CameraSource>,
    request: ModeRequest,
    codecs: Vec<Codec>,
    quality: u8,
    gop: Option<u32>,
    bitrate: Option<u32>,
}

impl std::fmt::Debug for CameraServerBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CameraServerBuilder")
            .field("mode", &self.source.mode())
            .field("codecs", &self.codecs)
            .finish()
    }
}

impl CameraServerBuilder {
    /// Frames per second (the source picks the closest rate it has).
    pub fn fps(mut self, fps: u32) -> Self {
        self.request.fps = Some(fps);
        self
    }

    /// Picture size (the source picks the closest size it has).
    pub fn size(mut self, width: u32, height: u32) -> Self {
        self.request.width = Some(width);
        self.request.height = Some(height);
        self
    }

    /// Codecs offered to viewers, in the server's order of preference (default: H.264, JPEG).
    pub fn codecs(mut self, codecs: &[Codec]) -> Self {
        self.codecs = codecs.to_vec();
        self
    }

    /// JPEG quality (1–100) when frames are encoded here (MJPEG passes through).
    pub fn quality(mut self, quality: u8) -> Self {
        self.quality = quality.clamp(1, 100);
        self
    }

    /// H.264 GoP in frames (default: one second of frames).
    pub fn gop(mut self, frames: u32) -> Self {
        self.gop = Some(frames.max(1));
        self
    }

    /// H.264 bitrate in bits per second (default: about 0.1 bit per pixel per frame).
    pub fn bitrate(mut self, bps: u32) -> Self {
        self.bitrate = Some(bps.max(50_000));
        self
    }

    /// Apply the requested mode and start capturing.
    pub async fn start(mut self) -> Result<CameraServer, ServerError> {
        if self.codecs.is_empty() {
            return Err(ServerError::Device(DeviceError::Config(
                "a camera server needs at least one codec".into(),
            )));
        }
        if self.request != ModeRequest::default() {
            self.request.prefer_mjpeg = self.codecs == [Codec::Jpeg];
            self.source.set_mode(self.request)?;
        }
        let mode = self.source.mode();
        let (h264, _) = broadcast::channel(CHANNEL_FRAMES);
        let (jpeg, _) = broadcast::channel(CHANNEL_FRAMES);
        let shared = Arc::new(Shared {
            h264,
            jpeg,
            codecs: self.codecs.clone(),
            want_idr: AtomicBool::new(false),
            mode_request: Mutex::new(None),
            mode: Mutex::new(mode),
            stats: CameraStats::default(),
            stop: AtomicBool::new(false),
            failed: tokio::sync::watch::channel(None).0,
        });
        let sh = shared.clone();
        let settings = EncodeSettings {
            quality: self.quality,
            gop: self.gop,
            bitrate: self.bitrate,
        };
        let source = self.source;
        std::thread::Builder::new()
            .name("xoq-camera".into())
            .spawn(move || capture_loop(source, settings, &sh))
            .map_err(|e| {
                ServerError::Device(DeviceError::Config(format!("cannot start capture: {e}")))
            })?;
        Ok(CameraServer {
            inner: Arc::new(Inner { shared }),
        })
    }
}

/// Counters of a running camera server.
#[derive(Debug, Default)]
pub struct CameraStats {
    /// Frames captured.
    pub captured: AtomicU64,
    /// Frames encoded, summed over codecs.
    pub encoded: AtomicU64,
    /// Frames that failed to capture, convert or encode (skipped).
    pub errors: AtomicU64,
    /// Frames viewers skipped because they were not ready (summed over viewers).
    pub skipped: AtomicU64,
    /// Keyframes forced for viewers.
    pub forced_keyframes: AtomicU64,
    /// Microseconds spent encoding, summed (with `encoded`, the mean encode time).
    pub encode_us: AtomicU64,
}

struct Shared {
    h264: broadcast::Sender<Arc<VideoFrame>>,
    jpeg: broadcast::Sender<Arc<VideoFrame>>,
    codecs: Vec<Codec>,
    want_idr: AtomicBool,
    mode_request: Mutex<Option<ModeRequest>>,
    mode: Mutex<Mode>,
    stats: CameraStats,
    stop: AtomicBool,
    /// Set (with the reason) when the capture thread gives up: viewers are told and let go.
    failed: tokio::sync::watch::Sender<Option<String>>,
}

impl Shared {
    fn channel(&self, codec: Codec) -> &broadcast::Sender<Arc<VideoFrame>> {
        match codec {
            Codec::H264 => &self.h264,
            Codec::Jpeg => &self.jpeg,
        }
    }
}

struct Inner {
    shared: Arc<Shared>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        // The capture thread sees this before its next frame and releases the camera.
        self.shared.stop.store(true, Ordering::Relaxed);
    }
}

/// A running camera server. Serve it P2P with [`protocols`](Self::protocols) on an iroh
/// router, and/or on a relay with [`serve_moq`](Self::serve_moq). Dropping the last clone
/// stops the capture.
#[derive(Clone)]
pub struct CameraServer {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for CameraServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CameraServer")
            .field("mode", &self.mode())
            .field("codecs", &self.inner.shared.codecs)
            .finish()
    }
}

impl CameraServer {
    /// A server on `source`, offering H.264 then JPEG.
    pub fn builder(source: Box<dyn CameraSource>) -> CameraServerBuilder {
        CameraServerBuilder {
            source,
            request: ModeRequest::default(),
            codecs: vec![Codec::H264, Codec::Jpeg],
            quality: 80,
            gop: None,
            bitrate: None,
        }
    }

    /// A server on the test-pattern camera at `width × height`, 30 fps.
    pub fn test_pattern(width: u32, height: u32) -> Result<CameraServerBuilder, ServerError> {
        Ok(Self::builder(Box::new(PatternSource::new(
            width, height, 30,
        )?)))
    }

    /// Counters.
    pub fn stats(&self) -> &CameraStats {
        &self.inner.shared.stats
    }

    /// The mode the camera delivers now.
    pub fn mode(&self) -> Option<Mode> {
        self.inner.shared.mode.lock().ok().map(|m| *m)
    }

    /// Codecs offered, in order of preference.
    pub fn codecs(&self) -> &[Codec] {
        &self.inner.shared.codecs
    }

    /// Ask the camera for another mode (applies before the next capture).
    pub fn request_mode(&self, req: ModeRequest) {
        if let Ok(mut r) = self.inner.shared.mode_request.lock() {
            *r = Some(req);
        }
    }

    /// Ask the H.264 encoder for a keyframe soon (rate-limited, see [`IDR_MIN_INTERVAL`]).
    pub fn request_keyframe(&self) {
        self.inner.shared.want_idr.store(true, Ordering::Relaxed);
    }

    /// Frames of `codec` as they are encoded (encoding runs while a subscription exists).
    pub fn subscribe(&self, codec: Codec) -> broadcast::Receiver<Arc<VideoFrame>> {
        self.inner.shared.channel(codec).subscribe()
    }

    /// Why the capture stopped, once it has.
    pub fn failure(&self) -> Option<String> {
        self.inner.shared.failed.borrow().clone()
    }

    /// Whether anyone watches (P2P viewers or relay subscribers of any codec).
    pub fn watched(&self) -> bool {
        let sh = &self.inner.shared;
        sh.h264.receiver_count() + sh.jpeg.receiver_count() > 0
    }
}
