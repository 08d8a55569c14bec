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

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use iroh::endpoint::Connection;
use iroh::protocol::{AcceptError, ProtocolHandler};
use tokio::sync::broadcast;
use xoq_device::DeviceError;
use xoq_device::camera::{CameraSource, Mode, ModeRequest, PatternSource, PixelFormat, RawFrame};
use xoq_media::h264::{H264Config, H264Encoder};
use xoq_media::{MediaError, convert, jpeg};
use xoq_transport::framed::FramedReader;
use xoq_transport::moq::MoqSession;
use xoq_wire::camera::{CLOSE_CAMERA_FAILED, Codec, MAX_CREDIT, VideoFrame, ViewerMsg};

use crate::ServerError;

/// Frames a codec's channel holds for viewers that are momentarily busy; a viewer further
/// behind has lagged and resumes at the next keyframe.
const CHANNEL_FRAMES: usize = 64;
/// Shortest time between two forced keyframes.
pub const IDR_MIN_INTERVAL: Duration = Duration::from_millis(250);
/// Consecutive capture errors after which the server stops (the camera is gone).
const MAX_CAPTURE_ERRORS: u32 = 50;

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

#[derive(Debug, Clone, Copy)]
struct EncodeSettings {
    quality: u8,
    gop: Option<u32>,
    bitrate: Option<u32>,
}

/// Per-codec encoder state on the capture thread.
struct Encoders {
    settings: EncodeSettings,
    h264: Option<(H264Encoder, Mode)>,
    last_idr: Option<Instant>,
    /// Scratch buffers reused across frames.
    rgb: Vec<u8>,
    yuv: Vec<u8>,
}

impl Encoders {
    fn h264(
        &mut self,
        raw: &RawFrame,
        mode: Mode,
        want_idr: bool,
    ) -> Result<(Vec<u8>, bool), MediaError> {
        let (w, h) = (raw.width, raw.height);
        if self
            .h264
            .as_ref()
            .is_none_or(|(_, m)| (m.width, m.height, m.fps) != (w, h, mode.fps))
        {
            let mut cfg = H264Config::for_size(w, h, mode.fps);
            if let Some(g) = self.settings.gop {
                cfg.gop = g;
            }
            if let Some(b) = self.settings.bitrate {
                cfg.bitrate = b;
            }
            self.h264 = Some((H264Encoder::new(cfg)?, mode));
        }
        let Some((enc, _)) = self.h264.as_mut() else {
            return Err(MediaError::BadPicture {
                len: 0,
                width: w,
                height: h,
            });
        };
        if want_idr {
            enc.force_keyframe();
        }
        let unit = match raw.format {
            PixelFormat::Rgb24 => enc.encode_rgb(&raw.data, w, h)?,
            PixelFormat::Yuyv => {
                convert::yuyv_to_i420(&raw.data, w, h, &mut self.yuv)?;
                enc.encode_i420(&self.yuv, w, h)?
            }
            PixelFormat::Nv12 => {
                convert::nv12_to_i420(&raw.data, w, h, &mut self.yuv)?;
                enc.encode_i420(&self.yuv, w, h)?
            }
            PixelFormat::Mjpeg => {
                let img = jpeg::decode(&raw.data, xoq_media::MAX_PIXELS)?;
                enc.encode_rgb(&img.data, img.width, img.height)?
            }
        };
        if unit.keyframe {
            self.last_idr = Some(Instant::now());
        }
        Ok((unit.data, unit.keyframe))
    }

    fn jpeg(&mut self, raw: &RawFrame) -> Result<Vec<u8>, MediaError> {
        let (w, h) = (raw.width, raw.height);
        match raw.format {
            // The camera already compressed it: pass it through, no decode, no re-encode.
            PixelFormat::Mjpeg => Ok(raw.data.clone()),
            PixelFormat::Rgb24 => jpeg::encode(&raw.data, w, h, self.settings.quality),
            PixelFormat::Yuyv => {
                convert::yuyv_to_rgb(&raw.data, w, h, &mut self.rgb)?;
                jpeg::encode(&self.rgb, w, h, self.settings.quality)
            }
            PixelFormat::Nv12 => {
                convert::nv12_to_rgb(&raw.data, w, h, &mut self.rgb)?;
                jpeg::encode(&self.rgb, w, h, self.settings.quality)
            }
        }
    }
}

fn capture_loop(mut source: Box<dyn CameraSource>, settings: EncodeSettings, sh: &Shared) {
    let mut enc = Encoders {
        settings,
        h264: None,
        last_idr: None,
        rgb: Vec::new(),
        yuv: Vec::new(),
    };
    let mut errors = 0u32;
    let mut seq = 0u64;
    while !sh.stop.load(Ordering::Relaxed) {
        let request = sh.mode_request.lock().ok().and_then(|mut r| r.take());
        if let Some(req) = request {
            match source.set_mode(req) {
                Ok(m) => {
                    tracing::info!("camera mode now {m}");
                    if let Ok(mut mode) = sh.mode.lock() {
                        *mode = m;
                    }
                }
                Err(e) => tracing::warn!("mode change refused: {e}"),
            }
        }
        let raw = match source.capture() {
            Ok(f) => {
                errors = 0;
                f
            }
            Err(e) => {
                sh.stats.errors.fetch_add(1, Ordering::Relaxed);
                errors += 1;
                if errors >= MAX_CAPTURE_ERRORS {
                    let why = format!("the camera stopped after {errors} capture errors: {e}");
                    tracing::error!("{why}");
                    sh.failed.send_replace(Some(why));
                    return;
                }
                tracing::warn!("capture failed: {e}");
                std::thread::sleep(Duration::from_millis(20));
                continue;
            }
        };
        let this = seq;
        seq += 1;
        sh.stats.captured.fetch_add(1, Ordering::Relaxed);
        let mode = source.mode();
        for &codec in &sh.codecs {
            let tx = sh.channel(codec);
            // Nobody watching this codec: no encode (the capture still runs, so the next
            // viewer gets a fresh frame, not one a driver held for minutes).
            if tx.receiver_count() == 0 {
                continue;
            }
            let started = Instant::now();
            let out = match codec {
                Codec::Jpeg => enc.jpeg(&raw).map(|d| (d, true)),
                Codec::H264 => {
                    let due = enc.last_idr.is_none_or(|t| t.elapsed() >= IDR_MIN_INTERVAL);
                    let idr = due && sh.want_idr.swap(false, Ordering::Relaxed);
                    if idr {
                        sh.stats.forced_keyframes.fetch_add(1, Ordering::Relaxed);
                    }
                    enc.h264(&raw, mode, idr)
                }
            };
            match out {
                Ok((data, keyframe)) => {
                    sh.stats.encoded.fetch_add(1, Ordering::Relaxed);
                    sh.stats
                        .encode_us
                        .fetch_add(started.elapsed().as_micros() as u64, Ordering::Relaxed);
                    let frame = VideoFrame {
                        seq: this,
                        timestamp_us: raw.timestamp_us,
                        width: raw.width.min(u32::from(u16::MAX)) as u16,
                        height: raw.height.min(u32::from(u16::MAX)) as u16,
                        keyframe,
                        data: Bytes::from(data),
                    };
                    let _ = tx.send(Arc::new(frame));
                }
                Err(e) => {
                    sh.stats.errors.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!("{codec:?} encode failed: {e}");
                }
            }
        }
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

    /// The P2P protocol handlers to put on an iroh router, one per codec, in the server's
    /// order of preference (TLS picks the first one the client also offers).
    pub fn protocols(&self) -> Vec<(&'static [u8], CameraProtocol)> {
        self.codecs()
            .iter()
            .map(|&codec| {
                (
                    codec.alpn(),
                    CameraProtocol {
                        server: self.clone(),
                        codec,
                    },
                )
            })
            .collect()
    }

    /// The ALPNs to give the endpoint: one per codec, in the server's order of preference.
    pub fn alpns(&self) -> Vec<Vec<u8>> {
        self.codecs().iter().map(|c| c.alpn().to_vec()).collect()
    }

    /// Serve every codec P2P on `endpoint` (made with [`alpns`](Self::alpns)).
    pub fn router(&self, endpoint: iroh::Endpoint) -> iroh::protocol::Router {
        self.protocols()
            .into_iter()
            .fold(
                iroh::protocol::Router::builder(endpoint),
                |r, (alpn, proto)| r.accept(alpn, proto),
            )
            .spawn()
    }

    async fn serve_viewer(&self, conn: Connection, codec: Codec) -> Result<(), String> {
        let (mut send, recv) = conn.accept_bi().await.map_err(|e| e.to_string())?;
        let mut msgs = FramedReader::new(recv);
        let mut rx = self.subscribe(codec);
        let mut failed = self.inner.shared.failed.subscribe();
        if let Some(why) = self.failure() {
            conn.close(CLOSE_CAMERA_FAILED.into(), why.as_bytes());
            return Err(why);
        }
        let stats = &self.inner.shared.stats;
        let mut buf = BytesMut::new();
        let mut credit: u64 = 0;
        // Every viewer starts on a keyframe; an H.264 one asks for it now.
        let mut need_key = true;
        if codec == Codec::H264 {
            self.request_keyframe();
        }
        loop {
            tokio::select! {
                got = rx.recv() => {
                    let mut frame = match got {
                        Ok(f) => f,
                        Err(broadcast::error::RecvError::Lagged(n)) => {
                            stats.skipped.fetch_add(n, Ordering::Relaxed);
                            need_key = true;
                            if codec == Codec::H264 { self.request_keyframe(); }
                            continue;
                        }
                        Err(broadcast::error::RecvError::Closed) => return Ok(()),
                    };
                    if codec == Codec::Jpeg {
                        // Newest wins: every JPEG frame stands alone.
                        while let Ok(newer) = rx.try_recv() {
                            stats.skipped.fetch_add(1, Ordering::Relaxed);
                            frame = newer;
                        }
                    }
                    if need_key && !frame.keyframe {
                        stats.skipped.fetch_add(1, Ordering::Relaxed);
                        continue;
                    }
                    if credit == 0 {
                        // Out of credit: the viewer is behind. Drop this frame; the stream
                        // resumes at a keyframe (an H.264 viewer asks for one).
                        stats.skipped.fetch_add(1, Ordering::Relaxed);
                        if codec == Codec::H264 && !need_key {
                            need_key = true;
                            self.request_keyframe();
                        }
                        continue;
                    }
                    buf.clear();
                    frame.encode(&mut buf).map_err(|e| e.to_string())?;
                    send.write_all(&buf).await.map_err(|e| e.to_string())?;
                    credit -= 1;
                    need_key = false;
                }
                m = msgs.next(ViewerMsg::decode_from) => match m {
                    Ok(Some(ViewerMsg::Credit(n))) => credit = (credit + n).min(MAX_CREDIT),
                    Ok(Some(ViewerMsg::SetMode { width, height, fps })) => {
                        let nz = |v: u32| (v != 0).then_some(v);
                        self.request_mode(ModeRequest {
                            width: nz(width),
                            height: nz(height),
                            fps: nz(fps),
                            prefer_mjpeg: codec == Codec::Jpeg,
                        });
                    }
                    Ok(Some(ViewerMsg::Keyframe)) => {
                        need_key = true;
                        self.request_keyframe();
                    }
                    Ok(None) => return Ok(()),
                    Err(e) => return Err(format!("bad viewer message: {e}")),
                },
                _ = conn.closed() => return Ok(()),
                Ok(()) = failed.changed() => {
                    // Tell the viewer why instead of leaving it waiting for frames.
                    let why = self.failure().unwrap_or_default();
                    conn.close(CLOSE_CAMERA_FAILED.into(), why.as_bytes());
                    return Err(why);
                }
            }
        }
    }

    /// Why the capture stopped, once it has.
    pub fn failure(&self) -> Option<String> {
        self.inner.shared.failed.borrow().clone()
    }

    /// Publish the camera on a relay as a hang broadcast named `name`: a `catalog.json`
    /// track describing the H.264 rendition and a `video` track with one group per GoP,
    /// each frame a varint presentation time in µs followed by the Annex-B access unit
    /// (the "legacy" container the stock MoQ web player reads). Encoding runs only while
    /// someone subscribes to the video. Returns when the session ends.
    pub async fn serve_moq(&self, session: &MoqSession, name: &str) -> Result<(), ServerError> {
        let (_bc, mut tracks) = session.publish_tracks(name, &["catalog.json", "video"])?;
        let (mut video, catalog) = match (tracks.pop(), tracks.pop()) {
            (Some(v), Some(c)) => (v, c),
            _ => {
                return Err(ServerError::Device(DeviceError::Config(
                    "the relay session did not create the camera's tracks".into(),
                )));
            }
        };
        // A capture that fails for good ends the broadcast with the reason.
        let mut failed = self.inner.shared.failed.subscribe();
        let gone =
            |why: Option<String>| ServerError::Device(DeviceError::Config(why.unwrap_or_default()));
        if let Some(why) = self.failure() {
            return Err(gone(Some(why)));
        }
        let mut catalog = Catalog {
            writer: catalog,
            described: None,
            epoch: None,
        };
        // The player reads the catalog before it subscribes to the video, so describe the
        // stream up front: encode until the first keyframe gives the codec string.
        {
            let mut rx = self.subscribe(Codec::H264);
            self.request_keyframe();
            loop {
                let f = tokio::select! {
                    f = rx.recv() => f,
                    _ = session.closed() => return Ok(()),
                    Ok(()) = failed.changed() => return Err(gone(self.failure())),
                };
                match f {
                    Ok(f) if f.keyframe => {
                        if catalog.describe(&f, self.mode())? {
                            break;
                        }
                    }
                    Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => {}
                    Err(broadcast::error::RecvError::Closed) => return Ok(()),
                }
            }
        }
        loop {
            tokio::select! {
                r = video.used() => r?,
                _ = session.closed() => return Ok(()),
                Ok(()) = failed.changed() => return Err(gone(self.failure())),
            }
            let mut rx = self.subscribe(Codec::H264);
            self.request_keyframe();
            let mut need_key = true;
            loop {
                let frame = tokio::select! {
                    f = rx.recv() => f,
                    _ = video.unused() => break,
                    _ = session.closed() => return Ok(()),
                    Ok(()) = failed.changed() => return Err(gone(self.failure())),
                };
                let frame = match frame {
                    Ok(f) => f,
                    Err(broadcast::error::RecvError::Lagged(n)) => {
                        self.stats().skipped.fetch_add(n, Ordering::Relaxed);
                        need_key = true;
                        self.request_keyframe();
                        continue;
                    }
                    Err(broadcast::error::RecvError::Closed) => return Ok(()),
                };
                if need_key && !frame.keyframe {
                    continue;
                }
                need_key = false;
                if frame.keyframe {
                    // A mode change shows as a keyframe of another size: describe it.
                    catalog.describe(&frame, self.mode())?;
                }
                let pts = catalog.pts(frame.timestamp_us);
                let mut payload = BytesMut::with_capacity(frame.data.len() + 8);
                xoq_wire::coding::put_varint(&mut payload, pts);
                payload.extend_from_slice(&frame.data);
                video.write_grouped(payload.freeze(), frame.keyframe)?;
            }
        }
    }
}

/// The `catalog.json` track of a relay broadcast and what it last said.
struct Catalog {
    writer: xoq_transport::moq::TrackWriter,
    /// (codec string, width, height) of the rendition described.
    described: Option<(String, u16, u16)>,
    /// Capture time of presentation time 0: the first keyframe described.
    epoch: Option<u64>,
}

impl Catalog {
    /// Describe the rendition `keyframe` belongs to, if it differs from the one described.
    /// Returns whether the stream is described (false: no SPS in this unit).
    fn describe(&mut self, keyframe: &VideoFrame, mode: Option<Mode>) -> Result<bool, ServerError> {
        let Some(codec) = xoq_media::h264::codec_string(&keyframe.data) else {
            return Ok(self.described.is_some());
        };
        let now = (codec, keyframe.width, keyframe.height);
        if self.described.as_ref() != Some(&now) {
            let start = *self.epoch.get_or_insert(keyframe.timestamp_us);
            let fps = mode.map_or(30, |m| m.fps);
            let json = catalog_json(&now.0, now.1, now.2, fps, start);
            self.writer.write_grouped(Bytes::from(json), true)?;
            self.described = Some(now);
        }
        Ok(true)
    }

    /// A capture time as the broadcast's presentation time (µs since the epoch).
    fn pts(&self, timestamp_us: u64) -> u64 {
        timestamp_us.saturating_sub(self.epoch.unwrap_or(timestamp_us))
    }
}

/// The hang catalog for one H.264 rendition named `video`. The `xoq` section (ignored by
/// players) gives the capture clock of presentation time 0, so relay viewers get capture
/// timestamps end to end like P2P viewers.
pub fn catalog_json(codec: &str, width: u16, height: u16, fps: u32, epoch_us: u64) -> String {
    format!(
        concat!(
            r#"{{"video":{{"renditions":{{"video":{{"codec":"{codec}","container":{{"kind":"legacy"}},"#,
            r#""codedWidth":{w},"codedHeight":{h},"framerate":{fps},"optimizeForLatency":true}}}},"#,
            r#""display":{{"width":{w},"height":{h}}}}},"xoq":{{"epochUs":{epoch}}}}}"#
        ),
        codec = codec,
        w = width,
        h = height,
        fps = fps,
        epoch = epoch_us
    )
}

/// The P2P handler of one codec (see [`CameraServer::protocols`]).
#[derive(Debug, Clone)]
pub struct CameraProtocol {
    server: CameraServer,
    codec: Codec,
}

impl ProtocolHandler for CameraProtocol {
    async fn accept(&self, connection: Connection) -> Result<(), AcceptError> {
        if let Err(e) = self.server.serve_viewer(connection, self.codec).await {
            tracing::debug!("viewer left: {e}");
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn catalog_is_the_json_the_player_reads() {
        let j = catalog_json("avc1.42c01f", 1280, 720, 30, 17);
        assert_eq!(
            j,
            r#"{"video":{"renditions":{"video":{"codec":"avc1.42c01f","container":{"kind":"legacy"},"codedWidth":1280,"codedHeight":720,"framerate":30,"optimizeForLatency":true}},"display":{"width":1280,"height":720}},"xoq":{"epochUs":17}}"#
        );
    }
}
