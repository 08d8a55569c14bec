//! Depth camera server: one capture of depth and colour, lossless depth to every viewer,
//! the colour picture through the camera service.
//!
//! A [`DepthSource`] runs on a thread of its own. Each capture
//! * feeds its colour picture to an ordinary [`CameraServer`] (H.264/JPEG, negotiated, the
//!   stock web player on a relay), through a one-frame hand-off: if the camera's encoder is
//!   still busy with the previous picture, this one is dropped and counted (`color_dropped`);
//! * is encoded once, when someone watches depth: the depth picture as a lossless depth blob
//!   (`xoq_media::depth`, RVL + deflate), and the colour picture as JPEG when a viewer asked
//!   for depth with colour, both stamped with the one capture time.
//!
//! Viewers read the newest encoded capture (a `watch` slot, newest wins): a slow viewer
//! skips captures and never holds back the capture or another viewer (`skipped` counts
//! what viewers skipped). P2P viewers use [`ALPN_DEPTH`](xoq_wire::depth::ALPN_DEPTH) /
//! [`ALPN_DEPTH_COLOR`](xoq_wire::depth::ALPN_DEPTH_COLOR) next to the camera ALPNs on the
//! same endpoint; relay viewers get a `depth` track in the camera's hang broadcast.

mod p2p;
mod publish;

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::sync::watch;
use xoq_device::DeviceError;
use xoq_device::camera::{CameraSource, Mode, ModeRequest, RawFrame};
use xoq_device::depth::{DepthInfo, DepthSource, SceneSource};
use xoq_media::depth::DepthCodec;
use xoq_wire::camera::Codec;

use crate::ServerError;
use crate::camera::capture::MAX_CAPTURE_ERRORS;
use crate::camera::encode::{EncodeSettings, Encoders};
use crate::camera::{CameraServer, CameraServerBuilder};

pub use p2p::DepthProtocol;
pub use publish::DEPTH_MIME;

/// Configures and starts a [`DepthServer`].
#[must_use]
pub struct DepthServerBuilder {
    source: Box<dyn DepthSource>,
    request: ModeRequest,
    codecs: Vec<Codec>,
    quality: u8,
    depth_codec: DepthCodec,
    level: u32,
    scale: Option<f32>,
    intrinsics: Option<xoq_device::depth::Intrinsics>,
    camera: Option<Box<dyn FnOnce(CameraServerBuilder) -> CameraServerBuilder + Send>>,
}

impl std::fmt::Debug for DepthServerBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DepthServerBuilder")
            .field("mode", &self.source.mode())
            .field("depth_codec", &self.depth_codec)
            .finish()
    }
}

impl DepthServerBuilder {
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

    /// Colour codecs offered to camera viewers (default: H.264, JPEG).
    pub fn codecs(mut self, codecs: &[Codec]) -> Self {
        self.codecs = codecs.to_vec();
        self
    }

    /// JPEG quality (1–100) of the colour pictures depth viewers get.
    pub fn quality(mut self, quality: u8) -> Self {
        self.quality = quality.clamp(1, 100);
        self
    }

    /// How depth is coded (default RVL + deflate; `Raw` and `Rvl` for measurements).
    pub fn depth_codec(mut self, codec: DepthCodec) -> Self {
        self.depth_codec = codec;
        self
    }

    /// Deflate level 0–9 after RVL (default 1: fast, and within a few percent of 9 on depth).
    pub fn deflate_level(mut self, level: u32) -> Self {
        self.level = level.min(9);
        self
    }

    /// Metres per depth unit, overriding the device's (V4L2 does not report it).
    pub fn scale(mut self, scale: f32) -> Self {
        self.scale = Some(scale);
        self
    }

    /// Depth intrinsics, overriding the device's (scaled to each mode's size).
    pub fn intrinsics(mut self, k: xoq_device::depth::Intrinsics) -> Self {
        self.intrinsics = Some(k);
        self
    }

    /// More settings for the colour camera server (GoP, bitrate, …).
    pub fn camera(
        mut self,
        f: impl FnOnce(CameraServerBuilder) -> CameraServerBuilder + Send + 'static,
    ) -> Self {
        self.camera = Some(Box::new(f));
        self
    }

    /// Apply the requested mode and start capturing.
    pub async fn start(mut self) -> Result<DepthServer, ServerError> {
        if let Some(s) = self.scale
            && !(s.is_finite() && s > 0.0)
        {
            return Err(ServerError::Config(format!(
                "depth scale {s}: give metres per unit, e.g. 0.001"
            )));
        }
        if self.request != ModeRequest::default() {
            self.source.set_mode(self.request)?;
        }
        let mode = self.source.mode();
        let overrides = Overrides {
            scale: self.scale,
            intrinsics: self.intrinsics,
        };
        let info = overrides.apply(self.source.info());
        let (color_tx, color_rx) = std::sync::mpsc::sync_channel(1);
        let shared = Arc::new(Shared {
            latest: watch::channel(None).0,
            info: watch::channel(info).0,
            color_viewers: AtomicUsize::new(0),
            mode_request: Mutex::new(None),
            mode: Arc::new(Mutex::new(mode)),
            stats: DepthStats::default(),
            stop: AtomicBool::new(false),
            failed: watch::channel(None).0,
        });
        let tee = TeeSource {
            frames: color_rx,
            mode: shared.mode.clone(),
            shared: Arc::downgrade(&shared),
        };
        let mut camera = CameraServer::builder(Box::new(tee))
            .codecs(&self.codecs)
            .quality(self.quality);
        if let Some(f) = self.camera.take() {
            camera = f(camera);
        }
        let camera = camera.start().await?;
        let sh = shared.clone();
        let settings = CaptureSettings {
            quality: self.quality,
            codec: self.depth_codec,
            level: self.level,
            overrides,
        };
        let source = self.source;
        let cam = camera.clone();
        std::thread::Builder::new()
            .name("xoq-depth".into())
            .spawn(move || capture_loop(source, settings, color_tx, &cam, &sh))
            .map_err(|e| ServerError::Config(format!("cannot start the depth capture: {e}")))?;
        Ok(DepthServer {
            inner: Arc::new(Inner { shared, camera }),
        })
    }
}

/// What the command line says about the device that the device cannot tell.
#[derive(Debug, Clone, Copy)]
struct Overrides {
    scale: Option<f32>,
    intrinsics: Option<xoq_device::depth::Intrinsics>,
}

impl Overrides {
    fn apply(&self, mut info: DepthInfo) -> DepthInfo {
        if let Some(s) = self.scale {
            info.scale = s;
        }
        if let Some(k) = self.intrinsics {
            // Given for one size; the device may deliver another.
            info.depth = k.scaled(info.depth.width, info.depth.height);
        }
        info
    }
}

/// Counters of a running depth server.
#[derive(Debug, Default)]
pub struct DepthStats {
    /// Captures taken.
    pub captured: AtomicU64,
    /// Captures encoded for depth viewers.
    pub encoded: AtomicU64,
    /// Microseconds spent encoding depth, summed.
    pub depth_encode_us: AtomicU64,
    /// Microseconds spent encoding colour JPEGs for depth viewers, summed.
    pub color_encode_us: AtomicU64,
    /// Bytes of depth before and after coding, summed (their ratio is the compression).
    pub depth_raw_bytes: AtomicU64,
    /// See `depth_raw_bytes`.
    pub depth_coded_bytes: AtomicU64,
    /// Captures viewers skipped because they were not ready (summed over viewers).
    pub skipped: AtomicU64,
    /// Colour pictures the camera server was too busy to take.
    pub color_dropped: AtomicU64,
    /// Captures or encodes that failed.
    pub errors: AtomicU64,
}

/// One capture as viewers get it.
#[derive(Debug, Clone)]
pub struct EncodedCapture {
    /// Capture number since the server started.
    pub seq: u64,
    /// Capture time of both pictures, µs since the Unix epoch.
    pub timestamp_us: u64,
    /// The depth blob.
    pub depth: Bytes,
    /// The colour picture as JPEG, when a viewer wanted colour with depth.
    pub color: Option<Bytes>,
}

struct Shared {
    /// The newest encoded capture; a receiver exists while someone watches depth.
    latest: watch::Sender<Option<Arc<EncodedCapture>>>,
    info: watch::Sender<DepthInfo>,
    /// Viewers that want the colour picture with each depth frame.
    color_viewers: AtomicUsize,
    mode_request: Mutex<Option<ModeRequest>>,
    mode: Arc<Mutex<Mode>>,
    stats: DepthStats,
    stop: AtomicBool,
    failed: watch::Sender<Option<String>>,
}

struct Inner {
    shared: Arc<Shared>,
    camera: CameraServer,
}

impl Drop for Inner {
    fn drop(&mut self) {
        // The capture thread sees this before its next capture and releases the camera.
        self.shared.stop.store(true, Ordering::Relaxed);
    }
}

/// A running depth server. Serve it P2P with [`router`](Self::router), and on a relay
/// with [`serve_moq`](Self::serve_moq). Dropping the last clone stops the capture.
#[derive(Clone)]
pub struct DepthServer {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for DepthServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DepthServer")
            .field("mode", &self.mode())
            .finish()
    }
}

impl DepthServer {
    /// A server on `source`: colour as H.264 then JPEG, depth as RVL + deflate.
    pub fn builder(source: Box<dyn DepthSource>) -> DepthServerBuilder {
        DepthServerBuilder {
            source,
            request: ModeRequest::default(),
            codecs: vec![Codec::H264, Codec::Jpeg],
            quality: 80,
            depth_codec: DepthCodec::RvlDeflate,
            level: 1,
            scale: None,
            intrinsics: None,
            camera: None,
        }
    }

    /// A server on the synthetic scene (`sim:depth`) at `width × height`, 30 fps.
    pub fn synthetic(width: u32, height: u32) -> Result<DepthServerBuilder, ServerError> {
        Ok(Self::builder(Box::new(SceneSource::new(
            width, height, 30,
        )?)))
    }

    /// The colour camera server (its viewers, its counters).
    pub fn camera(&self) -> &CameraServer {
        &self.inner.camera
    }

    /// Counters.
    pub fn stats(&self) -> &DepthStats {
        &self.inner.shared.stats
    }

    /// Scale, intrinsics and names as clients get them.
    pub fn info(&self) -> DepthInfo {
        self.inner.shared.info.borrow().clone()
    }

    /// The colour mode the camera delivers now.
    pub fn mode(&self) -> Option<Mode> {
        self.inner.shared.mode.lock().ok().map(|m| *m)
    }

    /// Ask the camera for another mode (applies before the next capture, to every viewer).
    pub fn request_mode(&self, req: ModeRequest) {
        if let Ok(mut r) = self.inner.shared.mode_request.lock() {
            *r = Some(req);
        }
    }

    /// Watch encoded captures (newest wins). Encoding runs while a subscription exists;
    /// with `color`, each capture also carries its colour picture as JPEG.
    pub fn subscribe(&self, color: bool) -> DepthSubscription {
        let sh = &self.inner.shared;
        if color {
            sh.color_viewers.fetch_add(1, Ordering::Relaxed);
        }
        DepthSubscription {
            rx: sh.latest.subscribe(),
            color,
            shared: sh.clone(),
        }
    }

    /// Why the capture stopped, once it has.
    pub fn failure(&self) -> Option<String> {
        self.inner.shared.failed.borrow().clone()
    }
}

/// A viewer's hold on the newest encoded capture (see [`DepthServer::subscribe`]).
pub struct DepthSubscription {
    rx: watch::Receiver<Option<Arc<EncodedCapture>>>,
    color: bool,
    shared: Arc<Shared>,
}

impl std::fmt::Debug for DepthSubscription {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DepthSubscription")
            .field("color", &self.color)
            .finish()
    }
}

impl DepthSubscription {
    /// The next capture newer than the last one returned (`None`: the server stopped).
    /// Captures in between were skipped and are counted.
    pub async fn next(&mut self, last_seq: Option<u64>) -> Option<Arc<EncodedCapture>> {
        loop {
            if self.rx.changed().await.is_err() {
                return None;
            }
            let Some(c) = self.rx.borrow_and_update().clone() else {
                continue;
            };
            if let Some(last) = last_seq {
                let missed = c.seq.saturating_sub(last + 1);
                self.shared
                    .stats
                    .skipped
                    .fetch_add(missed, Ordering::Relaxed);
            }
            // A viewer that just asked for colour may get one capture without it.
            if self.color && c.color.is_none() {
                continue;
            }
            return Some(c);
        }
    }
}

impl Drop for DepthSubscription {
    fn drop(&mut self) {
        if self.color {
            self.shared.color_viewers.fetch_sub(1, Ordering::Relaxed);
        }
    }
}

/// The colour side of the capture as a [`CameraSource`] for the camera server: it takes
/// the pictures the depth capture hands over, and passes mode requests back to it.
struct TeeSource {
    frames: Receiver<RawFrame>,
    mode: Arc<Mutex<Mode>>,
    shared: std::sync::Weak<Shared>,
}

impl CameraSource for TeeSource {
    fn mode(&self) -> Mode {
        self.mode.lock().map_or(
            Mode {
                format: xoq_device::camera::PixelFormat::Rgb24,
                width: 0,
                height: 0,
                fps: 0,
            },
            |m| *m,
        )
    }

    fn capture(&mut self) -> Result<RawFrame, DeviceError> {
        // No colour while nobody watches is not an error: wait as long as the depth capture
        // runs (it ends this channel when it stops).
        loop {
            match self.frames.recv_timeout(Duration::from_secs(1)) {
                Ok(f) => return Ok(f),
                Err(std::sync::mpsc::RecvTimeoutError::Timeout)
                    if self.shared.strong_count() > 0 => {}
                Err(e) => {
                    return Err(DeviceError::Config(format!(
                        "the depth capture stopped: {e}"
                    )));
                }
            }
        }
    }

    fn set_mode(&mut self, req: ModeRequest) -> Result<Mode, DeviceError> {
        // One capture serves both pictures: the depth capture applies it.
        if let Some(sh) = self.shared.upgrade()
            && let Ok(mut r) = sh.mode_request.lock()
        {
            *r = Some(req);
        }
        Ok(self.mode())
    }
}

struct CaptureSettings {
    quality: u8,
    codec: DepthCodec,
    level: u32,
    overrides: Overrides,
}

/// Captures between two tries of deflate once it stopped helping (noisy depth): deflating a
/// 1280x720 RVL stream costs several ms, so it is not paid on every frame for nothing.
const DEFLATE_RETRY: u64 = 30;

/// Whether to deflate this capture: as configured, except that after a capture where it did
/// not shrink the RVL stream, only every [`DEFLATE_RETRY`]th capture tries again.
#[derive(Debug, Default)]
struct DeflateGate {
    /// Captures since deflate last failed to help (`None`: it helped, or never tried).
    since_useless: Option<u64>,
}

impl DeflateGate {
    fn codec(&mut self, configured: DepthCodec) -> DepthCodec {
        match (configured, self.since_useless.as_mut()) {
            (DepthCodec::RvlDeflate, Some(n)) => {
                *n += 1;
                if *n >= DEFLATE_RETRY {
                    DepthCodec::RvlDeflate
                } else {
                    DepthCodec::Rvl
                }
            }
            (c, _) => c,
        }
    }

    /// What the encoder sent when asked for `asked` (the blob's first byte).
    fn sent(&mut self, asked: DepthCodec, sent: u8) {
        if asked == DepthCodec::RvlDeflate {
            self.since_useless = (sent != DepthCodec::RvlDeflate as u8).then_some(0);
        }
    }
}

fn capture_loop(
    mut source: Box<dyn DepthSource>,
    settings: CaptureSettings,
    color_tx: SyncSender<RawFrame>,
    camera: &CameraServer,
    sh: &Shared,
) {
    let mut jpeg = Encoders::new(EncodeSettings {
        quality: settings.quality,
        gop: None,
        bitrate: None,
    });
    let mut errors = 0u32;
    let mut gate = DeflateGate::default();
    let mut seq = 0u64;
    while !sh.stop.load(Ordering::Relaxed) {
        let request = sh.mode_request.lock().ok().and_then(|mut r| r.take());
        if let Some(req) = request {
            match source.set_mode(req) {
                Ok(m) => {
                    tracing::info!("depth camera mode now {m}");
                    if let Ok(mut mode) = sh.mode.lock() {
                        *mode = m;
                    }
                    sh.info
                        .send_replace(settings.overrides.apply(source.info()));
                }
                Err(e) => tracing::warn!("mode change refused: {e}"),
            }
        }
        if sh.latest.receiver_count() == 0 && !camera.watched() {
            // Nobody watches depth or colour: let the capture go by (a simulated camera
            // renders nothing), keeping the pace and the frame numbers.
            if let Err(e) = source.skip() {
                tracing::debug!("idle capture failed: {e}");
                std::thread::sleep(Duration::from_millis(20));
            }
            seq += 1;
            continue;
        }
        let cap = match source.capture() {
            Ok(c) => {
                errors = 0;
                c
            }
            Err(e) => {
                sh.stats.errors.fetch_add(1, Ordering::Relaxed);
                errors += 1;
                if errors >= MAX_CAPTURE_ERRORS {
                    let why =
                        format!("the depth camera stopped after {errors} capture errors: {e}");
                    tracing::error!("{why}");
                    sh.failed.send_replace(Some(why));
                    return;
                }
                tracing::warn!("depth capture failed: {e}");
                std::thread::sleep(Duration::from_millis(20));
                continue;
            }
        };
        let this = seq;
        seq += 1;
        sh.stats.captured.fetch_add(1, Ordering::Relaxed);
        if sh.latest.receiver_count() > 0 {
            match encode(&cap, &settings, &mut gate, &mut jpeg, sh) {
                Ok((depth, color)) => {
                    sh.stats.encoded.fetch_add(1, Ordering::Relaxed);
                    sh.latest.send_replace(Some(Arc::new(EncodedCapture {
                        seq: this,
                        timestamp_us: cap.timestamp_us,
                        depth,
                        color,
                    })));
                }
                Err(e) => {
                    sh.stats.errors.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!("depth encode failed: {e}");
                }
            }
        }
        match color_tx.try_send(cap.color) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => {
                sh.stats.color_dropped.fetch_add(1, Ordering::Relaxed);
            }
            // The camera server is gone: depth goes on.
            Err(TrySendError::Disconnected(_)) => {}
        }
    }
}

fn encode(
    cap: &xoq_device::depth::DepthCapture,
    settings: &CaptureSettings,
    gate: &mut DeflateGate,
    jpeg: &mut Encoders,
    sh: &Shared,
) -> Result<(Bytes, Option<Bytes>), xoq_media::MediaError> {
    let started = Instant::now();
    let codec = gate.codec(settings.codec);
    let depth = xoq_media::depth::encode(codec, cap.width, cap.height, &cap.depth, settings.level)?;
    gate.sent(codec, depth.first().copied().unwrap_or(0));
    let st = &sh.stats;
    st.depth_encode_us
        .fetch_add(started.elapsed().as_micros() as u64, Ordering::Relaxed);
    st.depth_raw_bytes
        .fetch_add(cap.depth.len() as u64 * 2, Ordering::Relaxed);
    st.depth_coded_bytes
        .fetch_add(depth.len() as u64, Ordering::Relaxed);
    let color = if sh.color_viewers.load(Ordering::Relaxed) > 0 {
        let started = Instant::now();
        let c = jpeg.jpeg(&cap.color)?;
        st.color_encode_us
            .fetch_add(started.elapsed().as_micros() as u64, Ordering::Relaxed);
        Some(Bytes::from(c))
    } else {
        None
    };
    Ok((Bytes::from(depth), color))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deflate_is_retried_only_now_and_then_once_it_stopped_helping() {
        let mut g = DeflateGate::default();
        assert_eq!(g.codec(DepthCodec::RvlDeflate), DepthCodec::RvlDeflate);
        g.sent(DepthCodec::RvlDeflate, DepthCodec::Rvl as u8);
        let tried: Vec<DepthCodec> = (0..DEFLATE_RETRY * 2)
            .map(|_| {
                let c = g.codec(DepthCodec::RvlDeflate);
                g.sent(c, DepthCodec::Rvl as u8);
                c
            })
            .collect();
        let retries = tried
            .iter()
            .filter(|&&c| c == DepthCodec::RvlDeflate)
            .count();
        assert_eq!(retries, 2, "{tried:?}");
        // Once it helps again, every capture is deflated.
        g.sent(DepthCodec::RvlDeflate, DepthCodec::RvlDeflate as u8);
        assert_eq!(g.codec(DepthCodec::RvlDeflate), DepthCodec::RvlDeflate);
        assert_eq!(
            g.codec(DepthCodec::Rvl),
            DepthCodec::Rvl,
            "a fixed codec is kept"
        );
    }
}
