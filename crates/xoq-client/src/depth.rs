//! Remote depth cameras: lossless depth in device units, with the colour picture of the same
//! capture, over P2P or from a relay broadcast.
//!
//! ```no_run
//! # async fn demo() -> Result<(), xoq_client::ClientError> {
//! use xoq_client::depth::{DepthOptions, RemoteDepthCamera};
//! let mut cam = RemoteDepthCamera::connect("<endpoint-id>@127.0.0.1:9003", DepthOptions::new()).await?;
//! let set = cam.next().await?;
//! let (w, scale) = (set.depth.width as usize, cam.info().scale);
//! let centre = set.depth.data[set.depth.data.len() / 2 + w / 2];
//! println!("{} m at the centre, captured at {} µs", f32::from(centre) * scale, set.timestamp_us);
//! # Ok(()) }
//! ```
//!
//! P2P, each depth frame carries its colour picture (JPEG), so the pair is the one capture
//! by construction. From a relay, depth and colour are separate tracks and are paired by
//! their capture time, which both carry exactly; a depth frame whose colour picture does not
//! arrive within [`RELAY_PAIR_WAIT`] comes without colour (counted in `unpaired`).

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Buf;
use xoq_media::RgbImage;
use xoq_media::depth::{DepthImage, MAX_DEPTH_PIXELS};
use xoq_transport::Address;
use xoq_transport::framed::FramedReader;
use xoq_transport::moq::{MoqSession, TrackReader};
use xoq_transport::p2p;
use xoq_wire::camera::ViewerMsg;
use xoq_wire::depth::{ALPN_DEPTH, ALPN_DEPTH_COLOR, DepthInfo, DepthMsg, Distortion, Intrinsics};

use crate::ClientError;
use crate::camera::{CameraOptions, RemoteCamera};
use crate::conn::{ConnGuard, handshake_failed};

const CONNECT_TIMEOUT: Duration = Duration::from_secs(15);
/// How long a relay depth frame waits for the colour picture of its capture.
pub const RELAY_PAIR_WAIT: Duration = Duration::from_millis(300);
/// Colour pictures a relay client keeps for pairing (about a quarter second at 30 fps).
const RELAY_COLOR_KEEP: usize = 8;
/// Frames in flight: one on the wire while the previous one is decoded.
const INITIAL_CREDIT: u64 = 2;

/// Options for opening a remote depth camera.
#[derive(Debug, Clone)]
#[must_use]
pub struct DepthOptions {
    identity: crate::link::Identity,
    offline: bool,
    color: bool,
    max_pixels: usize,
}

impl Default for DepthOptions {
    fn default() -> Self {
        Self::new()
    }
}

impl DepthOptions {
    /// Defaults: the user's identity, offline from `XOQ_OFFLINE`, depth with colour.
    pub fn new() -> Self {
        Self {
            identity: crate::link::Identity::User,
            offline: xoq_transport::offline_from_env(),
            color: true,
            max_pixels: MAX_DEPTH_PIXELS,
        }
    }

    /// Receive the colour picture with each depth frame (default: yes).
    pub fn color(mut self, color: bool) -> Self {
        self.color = color;
        self
    }

    /// Refuse pictures larger than this many pixels.
    pub fn max_pixels(mut self, max: usize) -> Self {
        self.max_pixels = max;
        self
    }

    identity_setters!("depth camera");
}

/// One capture: depth in device units and, when asked for, its colour picture.
#[derive(Debug, Clone)]
pub struct DepthFrameset {
    /// Capture number on the server (gaps: captures this client skipped).
    pub seq: u64,
    /// Capture time of both pictures, µs since the Unix epoch (robot clock).
    pub timestamp_us: u64,
    /// The depth picture; multiply by [`DepthInfo::scale`] for metres.
    pub depth: DepthImage,
    /// The colour picture (packed RGB), or `None`.
    pub color: Option<RgbImage>,
}

/// A remote depth camera.
pub struct RemoteDepthCamera {
    link: Link,
    info: DepthInfo,
    peer: String,
    opts: DepthOptions,
    /// Depth frames that came without their colour picture.
    unpaired: u64,
}

#[allow(clippy::large_enum_variant)]
enum Link {
    P2p {
        reader: FramedReader<iroh::endpoint::RecvStream>,
        control: iroh::endpoint::SendStream,
        guard: ConnGuard,
    },
    Relay {
        session: MoqSession,
        depth: TrackReader,
        colors: Option<(Arc<Colors>, tokio::task::JoinHandle<()>)>,
        catalog: Arc<Mutex<Option<DepthInfo>>>,
        watcher: tokio::task::JoinHandle<()>,
    },
}

/// Decoded colour pictures of a relay broadcast, by capture time, for pairing.
#[derive(Default)]
struct Colors {
    ring: Mutex<VecDeque<(u64, RgbImage)>>,
    arrived: tokio::sync::Notify,
}

impl std::fmt::Debug for RemoteDepthCamera {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RemoteDepthCamera")
            .field("peer", &self.peer)
            .field("info", &self.info)
            .finish()
    }
}

impl RemoteDepthCamera {
    /// Connect to a depth camera: a P2P address (`<id>` or `<id>@<ip>:<port>`) or a relay
    /// broadcast (`<relay-url>/<path>`, view-only).
    pub async fn connect(address: &str, opts: DepthOptions) -> Result<Self, ClientError> {
        let addr: Address = address.parse().map_err(ClientError::from)?;
        let connecting = async {
            match &addr {
                Address::Moq { relay, name } => {
                    Self::connect_relay(address, relay, name, opts.clone()).await
                }
                _ => Self::connect_p2p(&addr, opts.clone()).await,
            }
        };
        tokio::time::timeout(CONNECT_TIMEOUT, connecting)
            .await
            .map_err(|_| {
                ClientError::Connect(format!(
                    "no answer from {addr} within {}s: is the depth server running?",
                    CONNECT_TIMEOUT.as_secs()
                ))
            })?
    }

    async fn connect_p2p(addr: &Address, opts: DepthOptions) -> Result<Self, ClientError> {
        let alpn = if opts.color {
            ALPN_DEPTH_COLOR
        } else {
            ALPN_DEPTH
        };
        let endpoint = p2p::client_endpoint(opts.identity.secret()?, addr, opts.offline).await?;
        let conn = p2p::connect_any(&endpoint, addr, &[alpn], opts.offline).await?;
        let peer = addr.to_string();
        let opened = async {
            let (mut send, recv) = conn.open_bi().await.map_err(|e| e.to_string())?;
            let mut msg = Vec::new();
            ViewerMsg::Credit(INITIAL_CREDIT).encode(&mut msg);
            send.write_all(&msg).await.map_err(|e| e.to_string())?;
            Ok::<_, String>((send, recv))
        };
        let Ok((control, recv)) = opened.await else {
            let e = handshake_failed(&conn, &peer).await;
            endpoint.close().await;
            return Err(e);
        };
        // The server's first message is the info; a refusing server (allowlist) closes the
        // connection instead, and that must surface here.
        let mut reader = FramedReader::new(recv);
        let info = match reader.next(DepthMsg::decode_from).await {
            Ok(Some(DepthMsg::Info(i))) => i,
            Ok(Some(DepthMsg::Frame(_))) => {
                endpoint.close().await;
                return Err(ClientError::Connect(format!(
                    "{peer} sent a frame before describing the camera: not a depth server?"
                )));
            }
            _ => {
                let e = handshake_failed(&conn, &peer).await;
                endpoint.close().await;
                return Err(e);
            }
        };
        Ok(Self {
            link: Link::P2p {
                reader,
                control,
                guard: ConnGuard {
                    conn: Some(conn),
                    endpoint: Some(endpoint),
                },
            },
            info,
            peer,
            opts,
            unpaired: 0,
        })
    }

    async fn connect_relay(
        address: &str,
        relay: &xoq_transport::RelayUrl,
        name: &str,
        opts: DepthOptions,
    ) -> Result<Self, ClientError> {
        let peer = format!("{relay}{name}");
        let session = MoqSession::connect(relay, xoq_transport::moq::Redial::Never).await?;
        let mut catalog_reader = session.read_track(name, "catalog.json").until_gone();
        let first = catalog_reader.next().await.map_err(|e| {
            ClientError::Connect(format!("{peer}: no depth camera broadcast there ({e})"))
        })?;
        let info = parse_catalog(&first).ok_or_else(|| {
            ClientError::Unsupported(format!(
                "{peer}: the broadcast has no depth track (a plain camera?)"
            ))
        })?;
        let catalog = Arc::new(Mutex::new(None));
        let shared = catalog.clone();
        let watcher = tokio::spawn(async move {
            while let Ok(json) = catalog_reader.next().await {
                if let (Some(i), Ok(mut slot)) = (parse_catalog(&json), shared.lock()) {
                    *slot = Some(i);
                }
            }
        });
        let colors = if opts.color {
            let cam_opts = CameraOptions::new()
                .identity(opts.identity.clone())
                .offline(opts.offline);
            let mut cam = RemoteCamera::connect(address, cam_opts).await?;
            let colors = Arc::new(Colors::default());
            let c = colors.clone();
            let task = tokio::spawn(async move {
                while let Ok((f, img)) = cam.next_rgb().await {
                    if let Ok(mut ring) = c.ring.lock() {
                        ring.push_back((f.timestamp_us, img));
                        while ring.len() > RELAY_COLOR_KEEP {
                            ring.pop_front();
                        }
                    }
                    c.arrived.notify_waiters();
                }
                cam.close().await;
            });
            Some((colors, task))
        } else {
            None
        };
        let depth = session.read_track(name, "depth").until_gone();
        Ok(Self {
            link: Link::Relay {
                session,
                depth,
                colors,
                catalog,
                watcher,
            },
            info,
            peer,
            opts,
            unpaired: 0,
        })
    }

    /// Scale, intrinsics and device names (updated when the mode changes).
    pub fn info(&self) -> &DepthInfo {
        &self.info
    }

    /// Depth frames that came without their colour picture (relay only).
    pub fn unpaired(&self) -> u64 {
        self.unpaired
    }

    /// Ask the camera for another mode (0 = keep that value); P2P only. It applies to every
    /// viewer; frames report the size delivered.
    pub async fn set_mode(&mut self, width: u32, height: u32, fps: u32) -> Result<(), ClientError> {
        let Link::P2p { control, .. } = &mut self.link else {
            return Err(ClientError::Unsupported(
                "a relay broadcast is view-only: change the mode P2P or on the server".into(),
            ));
        };
        let mut buf = Vec::with_capacity(16);
        ViewerMsg::SetMode { width, height, fps }.encode(&mut buf);
        control
            .write_all(&buf)
            .await
            .map_err(|e| ClientError::Closed(format!("{}: {e}", self.peer)))
    }

    /// The next capture, decoded. Captures taken while this client was busy are skipped:
    /// the server sends the newest one when this client asks for more.
    pub async fn next(&mut self) -> Result<DepthFrameset, ClientError> {
        let max = self.opts.max_pixels;
        let bad = |peer: &str, e: String| ClientError::Device(format!("{peer}: {e}"));
        match &mut self.link {
            Link::P2p {
                reader, control, ..
            } => loop {
                let msg = match reader.next(DepthMsg::decode_from).await {
                    Ok(Some(m)) => m,
                    Ok(None) => {
                        return Err(ClientError::Closed(format!(
                            "{} ended the stream",
                            self.peer
                        )));
                    }
                    Err(e) => return Err(ClientError::Closed(format!("{}: {e}", self.peer))),
                };
                let f = match msg {
                    DepthMsg::Info(i) => {
                        self.info = i;
                        continue;
                    }
                    DepthMsg::Frame(f) => f,
                };
                let mut credit = Vec::with_capacity(4);
                ViewerMsg::Credit(1).encode(&mut credit);
                control
                    .write_all(&credit)
                    .await
                    .map_err(|e| ClientError::Closed(format!("{}: {e}", self.peer)))?;
                let depth = xoq_media::depth::decode(&f.depth, max)
                    .map_err(|e| bad(&self.peer, e.to_string()))?;
                let color = if f.color.is_empty() {
                    if self.opts.color {
                        self.unpaired += 1;
                    }
                    None
                } else {
                    Some(
                        xoq_media::jpeg::decode(&f.color, max)
                            .map_err(|e| bad(&self.peer, e.to_string()))?,
                    )
                };
                return Ok(DepthFrameset {
                    seq: f.seq,
                    timestamp_us: f.timestamp_us,
                    depth,
                    color,
                });
            },
            Link::Relay {
                depth,
                colors,
                catalog,
                ..
            } => {
                if let Some(i) = catalog.lock().ok().and_then(|mut c| c.take()) {
                    self.info = i;
                }
                let payload = depth
                    .next()
                    .await
                    .map_err(|e| ClientError::Closed(format!("{}: {e}", self.peer)))?;
                let (timestamp_us, seq, blob) = parse_track_frame(&payload)
                    .ok_or_else(|| bad(&self.peer, "depth frame shorter than its header".into()))?;
                let depth = xoq_media::depth::decode(blob, max)
                    .map_err(|e| bad(&self.peer, e.to_string()))?;
                let color = match colors {
                    Some((c, _)) => pair(c, timestamp_us).await,
                    None => None,
                };
                if colors.is_some() && color.is_none() {
                    self.unpaired += 1;
                }
                Ok(DepthFrameset {
                    seq,
                    timestamp_us,
                    depth,
                    color,
                })
            }
        }
    }

    /// Close the connection.
    pub async fn close(self) {
        match self.link {
            Link::P2p { mut guard, .. } => guard.close().await,
            Link::Relay {
                session,
                colors,
                watcher,
                ..
            } => {
                watcher.abort();
                if let Some((_, task)) = colors {
                    task.abort();
                }
                session.close().await;
            }
        }
    }
}

/// The colour picture captured at `ts`, waiting up to [`RELAY_PAIR_WAIT`] for it.
async fn pair(colors: &Colors, ts: u64) -> Option<RgbImage> {
    let deadline = tokio::time::Instant::now() + RELAY_PAIR_WAIT;
    loop {
        let arrived = colors.arrived.notified();
        tokio::pin!(arrived);
        arrived.as_mut().enable();
        if let Ok(mut ring) = colors.ring.lock() {
            // Pictures older than this capture will never be asked for again.
            while ring.front().is_some_and(|(t, _)| *t < ts) {
                ring.pop_front();
            }
            if ring.front().is_some_and(|(t, _)| *t == ts) {
                return ring.pop_front().map(|(_, img)| img);
            }
            if !ring.is_empty() {
                // Only newer pictures: this capture's colour was skipped.
                return None;
            }
        }
        if tokio::time::timeout_at(deadline, arrived).await.is_err() {
            return None;
        }
    }
}

/// A `depth` track frame: `timestamp_us u64 | seq u64 | depth blob`.
fn parse_track_frame(payload: &[u8]) -> Option<(u64, u64, &[u8])> {
    let mut p = payload;
    if p.len() < 16 {
        return None;
    }
    let ts = p.get_u64();
    let seq = p.get_u64();
    Some((ts, seq, p))
}

fn intrinsics(v: &serde_json::Value) -> Option<Intrinsics> {
    let f = |k: &str| v.get(k).and_then(|x| x.as_f64()).map(|x| x as f32);
    let u = |k: &str| {
        v.get(k)
            .and_then(|x| x.as_u64())
            .map(|x| x.min(u64::from(u16::MAX)) as u32)
    };
    let mut coeffs = [0f32; 5];
    if let Some(c) = v.get("coeffs").and_then(|c| c.as_array()) {
        for (slot, x) in coeffs.iter_mut().zip(c) {
            *slot = x.as_f64().unwrap_or(0.0) as f32;
        }
    }
    Some(Intrinsics {
        width: u("width")?,
        height: u("height")?,
        fx: f("fx")?,
        fy: f("fy")?,
        ppx: f("ppx")?,
        ppy: f("ppy")?,
        model: v
            .get("model")
            .and_then(|m| m.as_str())
            .and_then(Distortion::from_name)
            .unwrap_or_default(),
        coeffs,
    })
}

/// The depth description in a depth camera's hang catalog (`xoq.depth`).
fn parse_catalog(json: &[u8]) -> Option<DepthInfo> {
    let v: serde_json::Value = serde_json::from_slice(json).ok()?;
    let d = v.get("xoq")?.get("depth")?;
    let s = |k: &str| d.get(k).and_then(|x| x.as_str()).unwrap_or("").to_string();
    let scale = d.get("scale")?.as_f64()? as f32;
    (scale.is_finite() && scale > 0.0).then_some(())?;
    Some(DepthInfo {
        scale,
        depth: intrinsics(d.get("depthIntrinsics")?)?,
        color: intrinsics(d.get("colorIntrinsics")?)?,
        name: s("name"),
        serial: s("serial"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relay_catalogs_and_frames_parse_or_fail_cleanly() {
        let json = br#"{"video":{},"xoq":{"epochUs":1,"depth":{"scale":0.001,"name":"n","serial":"s",
            "depthIntrinsics":{"width":640,"height":480,"fx":300.5,"fy":301,"ppx":320,"ppy":240,"model":"none","coeffs":[0,0,0,0,0]},
            "colorIntrinsics":{"width":640,"height":480,"fx":1,"fy":1,"ppx":1,"ppy":1,"model":"inverse_brown_conrady","coeffs":[0.5]}}}}"#;
        let i = parse_catalog(json).expect("catalog");
        assert_eq!(i.scale, 0.001);
        assert_eq!(i.depth.fx, 300.5);
        assert_eq!(i.color.model, Distortion::InverseBrownConrady);
        assert_eq!(i.color.coeffs[0], 0.5);
        for bad in [
            &b""[..],
            b"{}",
            br#"{"xoq":{"depth":{"scale":0}}}"#,
            br#"{"xoq":{"depth":{"scale":0.001}}}"#,
        ] {
            assert!(parse_catalog(bad).is_none());
        }
        let mut frame = 5u64.to_be_bytes().to_vec();
        frame.extend_from_slice(&7u64.to_be_bytes());
        frame.push(9);
        assert_eq!(parse_track_frame(&frame), Some((5, 7, &[9u8][..])));
        assert_eq!(parse_track_frame(&frame[..15]), None);
    }
}
