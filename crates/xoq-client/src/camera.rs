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

use iroh::SecretKey;
use xoq_media::{Picture, RgbImage, VideoDecoder};
use xoq_transport::Address;
use xoq_transport::framed::FramedReader;
use xoq_transport::p2p;
use xoq_wire::camera::{Codec, INITIAL_CREDIT, INITIAL_CREDIT_H264, VideoFrame, ViewerMsg};

use crate::ClientError;
use crate::conn::{ConnGuard, handshake_failed};

const CONNECT_TIMEOUT: Duration = Duration::from_secs(15);

/// Options for opening a remote camera.
#[derive(Debug, Clone)]
#[must_use]
pub struct CameraOptions {
    key: Option<SecretKey>,
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
    /// Defaults: a fresh identity, offline from `XOQ_OFFLINE`, pictures up to 8K, H.264
    /// preferred over JPEG.
    pub fn new() -> Self {
        Self {
            key: None,
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

    /// Client identity (for servers with an allowlist).
    pub fn key(mut self, key: Option<SecretKey>) -> Self {
        self.key = key;
        self
    }

    /// Offline mode (no discovery).
    pub fn offline(mut self, offline: bool) -> Self {
        self.offline = offline;
        self
    }

    /// Refuse to decode pictures larger than this many pixels.
    pub fn max_pixels(mut self, max: usize) -> Self {
        self.max_pixels = max;
        self
    }
}

/// A remote camera's frame stream.
pub struct RemoteCamera {
    reader: FramedReader<iroh::endpoint::RecvStream>,
    /// Messages to the server: credits (one per frame consumed), mode and keyframe requests.
    control: iroh::endpoint::SendStream,
    guard: ConnGuard,
    peer: String,
    codec: Codec,
    decoder: VideoDecoder,
    /// Frames received and pictures that failed to decode.
    frames: u64,
    decode_errors: u64,
    /// A decode failed: ask for a keyframe with the next credit.
    keyframe_wanted: bool,
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
    /// Connect to a camera server by P2P address.
    pub async fn connect(address: &str, opts: CameraOptions) -> Result<Self, ClientError> {
        let addr: Address = address.parse().map_err(ClientError::from)?;
        if !matches!(addr, Address::P2p { .. }) {
            return Err(ClientError::Unsupported(
                "cameras are served P2P for now: use <endpoint-id>@<ip>:<port>".into(),
            ));
        }
        tokio::time::timeout(CONNECT_TIMEOUT, Self::connect_p2p(&addr, opts))
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
        let endpoint = p2p::client_endpoint(opts.key.clone(), addr, opts.offline).await?;
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
            Err(_) => return Err(handshake_failed(&conn, endpoint, &peer).await),
        };
        let decoder = match codec {
            Codec::H264 => VideoDecoder::h264(opts.max_pixels)
                .map_err(|e| ClientError::Device(e.to_string()))?,
            Codec::Jpeg => VideoDecoder::jpeg(opts.max_pixels),
        };
        Ok(Self {
            reader: FramedReader::new(recv),
            control,
            guard: ConnGuard {
                conn: Some(conn),
                endpoint: Some(endpoint),
            },
            peer,
            codec,
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
        let mut buf = Vec::with_capacity(16);
        msg.encode(&mut buf);
        self.control
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
        match self.reader.next(VideoFrame::decode_from).await {
            Ok(Some(f)) => {
                if std::mem::take(&mut self.keyframe_wanted) {
                    self.send(ViewerMsg::Keyframe).await?;
                }
                // Room for one more.
                self.send(ViewerMsg::Credit(1)).await?;
                self.frames += 1;
                Ok(f)
            }
            Ok(None) => Err(ClientError::Closed(format!(
                "{} ended the stream",
                self.peer
            ))),
            Err(e) => Err(ClientError::Closed(format!("{}: {e}", self.peer))),
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
        f: impl FnOnce(&Picture<'_>) -> R,
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
        f: impl FnOnce(&VideoFrame, &Picture<'_>) -> R,
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
        let (f, img) = self.next_decoded(|_, p| p.to_rgb()).await?;
        Ok((f, img.map_err(|e| ClientError::Device(e.to_string()))?))
    }

    /// Close the connection.
    pub async fn close(mut self) {
        if let Some(conn) = self.guard.conn.take() {
            conn.close(p2p::CLOSE_NORMAL.into(), b"bye");
        }
        if let Some(ep) = self.guard.endpoint.take() {
            ep.close().await;
        }
    }
}
