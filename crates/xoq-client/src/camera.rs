//! Remote cameras over P2P: H.264 or JPEG, negotiated by ALPN.
//!
//! ```no_run
//! # async fn demo() -> Result<(), xoq_client::ClientError> {
//! use xoq_client::camera::{CameraOptions, RemoteCamera};
//! let mut cam = RemoteCamera::connect("<endpoint-id>@127.0.0.1:9002", CameraOptions::new()).await?;
//! let (frame, picture) = cam.next_rgb().await?;   // packed RGB, picture.width × picture.height
//! println!("frame {} captured at {} µs", frame.seq, frame.timestamp_us);
//! # Ok(()) }
//! ```
//!
//! Decoding is done here, in Rust; a damaged frame is reported as an error by
//! [`RemoteCamera::next_decoded`], the server is asked for a keyframe, and the next call
//! goes on from there.

use std::time::Duration;

use xoq_media::{Picture, RgbImage, VideoDecoder};
use xoq_transport::Address;
use xoq_transport::framed::FramedReader;
use xoq_transport::moq::{MoqSession, TrackReader};
use xoq_transport::p2p;
use xoq_wire::camera::{
    CLOSE_CAMERA_FAILED, Codec, INITIAL_CREDIT, INITIAL_CREDIT_H264, VideoFrame, ViewerMsg,
};

use crate::ClientError;
use crate::conn::{ConnGuard, handshake_failed};

const CONNECT_TIMEOUT: Duration = Duration::from_secs(15);

/// Options for opening a remote camera.
#[derive(Debug, Clone)]
#[must_use]
pub struct CameraOptions {
    identity: crate::link::Identity,
    offline: bool,
    max_pixels: usize,
    codecs: Vec<Codec>,
}

impl Default for CameraOptions {
    fn default() -> Self {
        Self::new()
    }
}

impl CameraOptions {
    /// Defaults: the user's identity, offline from `XOQ_OFFLINE`, pictures up to 8K, H.264
    /// preferred over JPEG.
    pub fn new() -> Self {
        Self {
            identity: crate::link::Identity::User,
            offline: xoq_transport::offline_from_env(),
            max_pixels: xoq_media::MAX_PIXELS,
            codecs: vec![Codec::H264, Codec::Jpeg],
        }
    }

    /// Codecs this client accepts, in order of preference. The server decides among the
    /// ones both sides have (its own order wins, as in TLS), so list only the codecs you
    /// accept: `&[Codec::Jpeg]` gets JPEG or a clear refusal.
    pub fn codecs(mut self, codecs: &[Codec]) -> Self {
        self.codecs = codecs.to_vec();
        self
    }

    identity_setters!("camera");

    /// Refuse to decode pictures larger than this many pixels.
    pub fn max_pixels(mut self, max: usize) -> Self {
        self.max_pixels = max;
        self
    }
}

/// A remote camera's frame stream.
pub struct RemoteCamera {
    link: Link,
    /// The frame read while connecting, handed out by the first `next_frame`.
    pending: Option<VideoFrame>,
    peer: String,
    codec: Codec,
    decoder: VideoDecoder,
    /// Frames received and pictures that failed to decode.
    frames: u64,
    decode_errors: u64,
    /// A decode failed: ask for a keyframe with the next credit.
    keyframe_wanted: bool,
}

/// How frames reach this client.
// One per camera, made once and never moved on a hot path: boxing a variant buys nothing.
#[allow(clippy::large_enum_variant)]
enum Link {
    /// A camera server over iroh.
    P2p {
        reader: FramedReader<iroh::endpoint::RecvStream>,
        /// Messages to the server: credits (one per frame consumed), mode and keyframe
        /// requests.
        control: iroh::endpoint::SendStream,
        guard: ConnGuard,
    },
    /// A hang broadcast on a relay (read-only, H.264).
    Relay {
        session: MoqSession,
        video: TrackReader,
        catalog: std::sync::Arc<std::sync::Mutex<Catalog>>,
        watcher: tokio::task::JoinHandle<()>,
        seq: u64,
    },
}

/// What a relay viewer takes from the broadcast's `catalog.json`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Catalog {
    width: u16,
    height: u16,
    /// Capture time of presentation time 0 (the `xoq` section; 0 if the publisher is not
    /// xoq, in which case timestamps are presentation times).
    epoch_us: u64,
}

/// Parse the fields a relay viewer needs from a hang catalog (bounded: the relay frame is).
fn parse_catalog(json: &[u8]) -> Option<Catalog> {
    let v: serde_json::Value = serde_json::from_slice(json).ok()?;
    let renditions = v.get("video")?.get("renditions")?.as_object()?;
    let (_, r) = renditions.iter().next()?;
    let side = |k: &str| {
        r.get(k)
            .and_then(|x| x.as_u64())
            .map(|x| x.min(u64::from(u16::MAX)) as u16)
    };
    Some(Catalog {
        width: side("codedWidth").unwrap_or(0),
        height: side("codedHeight").unwrap_or(0),
        epoch_us: v
            .get("xoq")
            .and_then(|x| x.get("epochUs"))
            .and_then(|x| x.as_u64())
            .unwrap_or(0),
    })
}

impl std::fmt::Debug for RemoteCamera {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RemoteCamera")
            .field("peer", &self.peer)
            .field("codec", &self.codec)
            .finish()
    }
}

impl RemoteCamera {
    /// Connect to a camera: a P2P address (`<id>` or `<id>@<ip>:<port>`, codec negotiated)
    /// or a relay broadcast (`<relay-url>/<path>`, H.264 only, view-only: no mode changes).
    pub async fn connect(address: &str, opts: CameraOptions) -> Result<Self, ClientError> {
        let addr: Address = address.parse().map_err(ClientError::from)?;
        let connecting = async {
            match &addr {
                Address::Moq { relay, name } => Self::connect_relay(relay, name, &opts).await,
                _ => Self::connect_p2p(&addr, opts.clone()).await,
            }
        };
        tokio::time::timeout(CONNECT_TIMEOUT, connecting)
            .await
            .map_err(|_| {
                ClientError::Connect(format!(
                    "no answer from {addr} within {}s: is the camera server running?",
                    CONNECT_TIMEOUT.as_secs()
                ))
            })?
    }

    async fn connect_p2p(addr: &Address, opts: CameraOptions) -> Result<Self, ClientError> {
        let alpns: Vec<&[u8]> = opts.codecs.iter().map(|c| c.alpn()).collect();
        if alpns.is_empty() {
            return Err(ClientError::Unsupported("no codec to ask for".into()));
        }
        let endpoint = p2p::client_endpoint(opts.identity.secret()?, addr, opts.offline).await?;
        let conn = p2p::connect_any(&endpoint, addr, &alpns, opts.offline).await?;
        let peer = addr.to_string();
        let Some(codec) = Codec::from_alpn(conn.alpn()) else {
            return Err(ClientError::Unsupported(format!(
                "{peer} chose an unknown camera protocol"
            )));
        };
        let initial = match codec {
            Codec::H264 => INITIAL_CREDIT_H264,
            Codec::Jpeg => INITIAL_CREDIT,
        };
        let opened = async {
            let (mut send, recv) = conn.open_bi().await.map_err(|e| e.to_string())?;
            let mut msg = Vec::new();
            ViewerMsg::Credit(initial).encode(&mut msg);
            send.write_all(&msg).await.map_err(|e| e.to_string())?;
            Ok::<_, String>((send, recv))
        };
        let (control, recv) = match opened.await {
            Ok(s) => s,
            Err(_) => {
                let e = handshake_failed(&conn, &peer).await;
                endpoint.close().await;
                return Err(e);
            }
        };
        // Wait for the first frame: a server that refuses this client (allowlist) closes the
        // connection right after the handshake, and that must surface here, not later.
        let mut reader = FramedReader::new(recv);
        let first = match reader.next(VideoFrame::decode_from).await {
            Ok(Some(f)) => f,
            _ => {
                let e = handshake_failed(&conn, &peer).await;
                endpoint.close().await;
                return Err(e);
            }
        };
        let decoder = match codec {
            Codec::H264 => VideoDecoder::h264(opts.max_pixels)
                .map_err(|e| ClientError::Device(e.to_string()))?,
            Codec::Jpeg => VideoDecoder::jpeg(opts.max_pixels),
        };
        Ok(Self {
            pending: Some(first),
            link: Link::P2p {
                reader,
                control,
                guard: ConnGuard {
                    conn: Some(conn),
                    endpoint: Some(endpoint),
                },
            },
            peer,
            codec,
            decoder,
            frames: 0,
            decode_errors: 0,
            keyframe_wanted: false,
        })
    }

    async fn connect_relay(
        relay: &xoq_transport::RelayUrl,
        name: &str,
        opts: &CameraOptions,
    ) -> Result<Self, ClientError> {
        if !opts.codecs.contains(&Codec::H264) {
            return Err(ClientError::Unsupported(
                "relay broadcasts are H.264: allow that codec, or connect P2P for JPEG".into(),
            ));
        }
        let peer = format!("{relay}{name}");
        let session = MoqSession::connect(relay, xoq_transport::moq::Redial::Never).await?;
        let mut catalog_reader = session.read_track(name, "catalog.json").until_gone();
        let first = catalog_reader.next().await.map_err(|e| {
            ClientError::Connect(format!("{peer}: no camera broadcast there ({e})"))
        })?;
        let info = parse_catalog(&first).ok_or_else(|| {
            ClientError::Unsupported(format!("{peer}: the catalog describes no video rendition"))
        })?;
        let catalog = std::sync::Arc::new(std::sync::Mutex::new(info));
        // Follow catalog updates (a mode change) while frames flow.
        let shared = catalog.clone();
        let watcher = tokio::spawn(async move {
            while let Ok(json) = catalog_reader.next().await {
                if let (Some(c), Ok(mut slot)) = (parse_catalog(&json), shared.lock()) {
                    *slot = c;
                }
            }
        });
        let video = session.read_track(name, "video").until_gone();
        let decoder =
            VideoDecoder::h264(opts.max_pixels).map_err(|e| ClientError::Device(e.to_string()))?;
        Ok(Self {
            pending: None,
            link: Link::Relay {
                session,
                video,
                catalog,
                watcher,
                seq: 0,
            },
            peer,
            codec: Codec::H264,
            decoder,
            frames: 0,
            decode_errors: 0,
            keyframe_wanted: false,
        })
    }

    /// The codec the server chose.
    pub fn codec(&self) -> Codec {
        self.codec
    }

    /// Frames received so far, and how many of them failed to decode.
    pub fn counters(&self) -> (u64, u64) {
        (self.frames, self.decode_errors)
    }

    async fn send(&mut self, msg: ViewerMsg) -> Result<(), ClientError> {
        let Link::P2p { control, .. } = &mut self.link else {
            // A relay broadcast has no way back to the camera: keyframes come with each GoP.
            return match msg {
                ViewerMsg::SetMode { .. } => Err(ClientError::Unsupported(
                    "a relay broadcast is view-only: change the mode P2P or on the server".into(),
                )),
                _ => Ok(()),
            };
        };
        let mut buf = Vec::with_capacity(16);
        msg.encode(&mut buf);
        control
            .write_all(&buf)
            .await
            .map_err(|e| ClientError::Closed(format!("{}: {e}", self.peer)))
    }

    /// Ask the camera for another mode (0 = keep that value). It applies to every viewer of
    /// this camera; frames report the size really delivered.
    pub async fn set_mode(&mut self, width: u32, height: u32, fps: u32) -> Result<(), ClientError> {
        self.send(ViewerMsg::SetMode { width, height, fps }).await
    }

    /// Ask for a keyframe (the decoder does this itself after an error).
    pub async fn request_keyframe(&mut self) -> Result<(), ClientError> {
        self.send(ViewerMsg::Keyframe).await
    }

    /// The next encoded frame. Frames captured while this client was busy are skipped: the
    /// server sends the newest one when this client asks for more.
    pub async fn next_frame(&mut self) -> Result<VideoFrame, ClientError> {
        let got = match &mut self.link {
            Link::P2p { reader, .. } => match self.pending.take() {
                Some(f) => Ok(Some(f)),
                None => reader.next(VideoFrame::decode_from).await,
            },
            Link::Relay {
                video,
                catalog,
                seq,
                ..
            } => {
                let payload = video
                    .next()
                    .await
                    .map_err(|e| ClientError::Closed(format!("{}: {e}", self.peer)))?;
                let info = catalog.lock().map(|c| *c).unwrap_or_default();
                let frame = relay_frame(payload, *seq, info).map_err(|e| {
                    ClientError::Device(format!("{}: bad video frame ({e})", self.peer))
                })?;
                *seq += 1;
                self.frames += 1;
                return Ok(frame);
            }
        };
        match got {
            Ok(Some(f)) => {
                if std::mem::take(&mut self.keyframe_wanted) {
                    self.send(ViewerMsg::Keyframe).await?;
                }
                // Room for one more.
                self.send(ViewerMsg::Credit(1)).await?;
                self.frames += 1;
                Ok(f)
            }
            Ok(None) => Err(self.ended(format!("{} ended the stream", self.peer))),
            Err(e) => Err(self.ended(format!("{}: {e}", self.peer))),
        }
    }

    /// The error for a stream that ended: the server's own reason when it closed the
    /// connection because the camera failed, else `fallback`.
    fn ended(&self, fallback: String) -> ClientError {
        use iroh::endpoint::ConnectionError as CE;
        let reason = match &self.link {
            Link::P2p { guard, .. } => guard.conn.as_ref().and_then(|c| c.close_reason()),
            Link::Relay { .. } => None,
        };
        match reason {
            Some(CE::ApplicationClosed(close))
                if close.error_code == CLOSE_CAMERA_FAILED.into() =>
            {
                ClientError::Device(format!(
                    "{}: {}",
                    self.peer,
                    String::from_utf8_lossy(&close.reason)
                ))
            }
            _ => ClientError::Closed(fallback),
        }
    }

    /// Decode `frame` (the next one [`next_frame`](Self::next_frame) returned; H.264
    /// frames must be decoded in order) and hand the picture to `f` while the decoder holds
    /// it, so `f` can write it where it belongs with no intermediate copy. `Ok(None)`: no
    /// picture (an H.264 decoder waiting for a keyframe). A frame that fails to decode is an
    /// error, and the next [`next_frame`](Self::next_frame) asks the server for a keyframe.
    pub fn decode<R>(
        &mut self,
        frame: &VideoFrame,
        f: impl FnOnce(Picture<'_>) -> R,
    ) -> Result<Option<R>, ClientError> {
        self.decoder.decode_with(&frame.data, f).map_err(|e| {
            self.decode_errors += 1;
            self.keyframe_wanted = true;
            ClientError::Device(format!(
                "frame {} from {} did not decode ({e}); waiting for the next keyframe",
                frame.seq, self.peer
            ))
        })
    }

    /// The next frame that decodes to a picture, handed to `f` (see [`decode`](Self::decode)).
    /// Frames before the first keyframe give no picture and are read past.
    pub async fn next_decoded<R>(
        &mut self,
        f: impl FnOnce(&VideoFrame, Picture<'_>) -> R,
    ) -> Result<(VideoFrame, R), ClientError> {
        let mut f = Some(f);
        loop {
            let frame = self.next_frame().await?;
            let out = self.decode(&frame, |p| f.take().map(|f| f(&frame, p)))?;
            if let Some(Some(r)) = out {
                return Ok((frame, r));
            }
        }
    }

    /// The next frame, decoded to packed RGB.
    pub async fn next_rgb(&mut self) -> Result<(VideoFrame, RgbImage), ClientError> {
        let (f, img) = self.next_decoded(|_, p| p.into_rgb()).await?;
        Ok((f, img.map_err(|e| ClientError::Device(e.to_string()))?))
    }

    /// Close the connection.
    pub async fn close(self) {
        match self.link {
            Link::P2p { mut guard, .. } => guard.close().await,
            Link::Relay {
                session, watcher, ..
            } => {
                watcher.abort();
                session.close().await;
            }
        }
    }
}

/// A frame of a hang `legacy` video track: varint presentation time (µs), then the access
/// unit. Sizes and the capture clock come from the catalog.
fn relay_frame(
    payload: bytes::Bytes,
    seq: u64,
    info: Catalog,
) -> Result<VideoFrame, xoq_wire::coding::DecodeError> {
    let mut p = &payload[..];
    let pts = xoq_wire::coding::get_varint(&mut p)?;
    let data = payload.slice(payload.len() - p.len()..);
    Ok(VideoFrame {
        seq,
        timestamp_us: info.epoch_us.saturating_add(pts),
        width: info.width,
        height: info.height,
        keyframe: xoq_media::h264::is_keyframe(&data),
        data,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn catalogs_and_relay_frames_parse_or_fail_cleanly() {
        let c = parse_catalog(
            br#"{"video":{"renditions":{"v":{"codec":"avc1.42c01e","codedWidth":640,"codedHeight":480}}},"xoq":{"epochUs":5}}"#,
        );
        assert_eq!(
            c,
            Some(Catalog {
                width: 640,
                height: 480,
                epoch_us: 5
            })
        );
        let foreign = parse_catalog(br#"{"video":{"renditions":{"v":{"codec":"avc3"}}}}"#);
        assert_eq!(foreign, Some(Catalog::default()));
        for bad in [
            &b""[..],
            b"{",
            b"[]",
            br#"{"video":{}}"#,
            br#"{"video":{"renditions":{}}}"#,
        ] {
            assert_eq!(parse_catalog(bad), None);
        }
        let info = Catalog {
            width: 2,
            height: 2,
            epoch_us: 1_000,
        };
        let f = relay_frame(
            bytes::Bytes::from_static(&[0x0A, 0, 0, 0, 1, 0x65, 9]),
            3,
            info,
        )
        .expect("frame");
        assert_eq!(
            (f.seq, f.timestamp_us, f.keyframe, &f.data[..]),
            (3, 1_010, true, &[0, 0, 0, 1, 0x65, 9][..])
        );
        assert!(relay_frame(bytes::Bytes::new(), 0, info).is_err());
        assert!(relay_frame(bytes::Bytes::from_static(&[0x40]), 0, info).is_err());
    }
}
