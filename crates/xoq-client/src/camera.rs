//! Remote cameras (first slice: JPEG over P2P).
//!
//! ```no_run
//! # async fn demo() -> Result<(), xoq_client::ClientError> {
//! use xoq_client::camera::{CameraOptions, RemoteCamera};
//! let mut cam = RemoteCamera::connect("<endpoint-id>@127.0.0.1:9002", CameraOptions::new()).await?;
//! let picture = cam.next_rgb().await?;   // packed RGB, picture.width × picture.height
//! # Ok(()) }
//! ```

use std::time::Duration;

use iroh::SecretKey;
use xoq_media::RgbImage;
use xoq_transport::Address;
use xoq_transport::framed::FramedReader;
use xoq_transport::p2p;
use xoq_wire::camera::{ALPN_JPEG, INITIAL_CREDIT, VideoFrame, encode_credit};

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
}

impl Default for CameraOptions {
    fn default() -> Self {
        Self::new()
    }
}

impl CameraOptions {
    /// Defaults: a fresh identity, offline from `XOQ_OFFLINE`, pictures up to 8K.
    pub fn new() -> Self {
        Self {
            key: None,
            offline: xoq_transport::offline_from_env(),
            max_pixels: xoq_media::MAX_PIXELS,
        }
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
    /// Credit grants to the server (one per frame consumed).
    grants: iroh::endpoint::SendStream,
    guard: ConnGuard,
    peer: String,
    max_pixels: usize,
}

impl std::fmt::Debug for RemoteCamera {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RemoteCamera")
            .field("peer", &self.peer)
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
        let endpoint = p2p::client_endpoint(opts.key.clone(), addr, opts.offline).await?;
        let conn = p2p::connect(&endpoint, addr, ALPN_JPEG, opts.offline).await?;
        let peer = addr.to_string();
        let opened = async {
            let (mut send, recv) = conn.open_bi().await.map_err(|e| e.to_string())?;
            let mut grant = Vec::new();
            encode_credit(INITIAL_CREDIT, &mut grant);
            send.write_all(&grant).await.map_err(|e| e.to_string())?;
            Ok::<_, String>((send, recv))
        };
        let (grants, recv) = match opened.await {
            Ok(s) => s,
            Err(_) => return Err(handshake_failed(&conn, endpoint, &peer).await),
        };
        Ok(Self {
            reader: FramedReader::new(recv),
            grants,
            guard: ConnGuard {
                conn: Some(conn),
                endpoint: Some(endpoint),
            },
            peer,
            max_pixels: opts.max_pixels,
        })
    }

    /// The next encoded frame. Frames captured while this client was busy are skipped: the
    /// server sends the newest one when this client asks for more.
    pub async fn next_frame(&mut self) -> Result<VideoFrame, ClientError> {
        match self.reader.next(VideoFrame::decode_from).await {
            Ok(Some(f)) => {
                // Room for one more: the server sends the newest frame it has then.
                let mut grant = Vec::new();
                encode_credit(1, &mut grant);
                self.grants
                    .write_all(&grant)
                    .await
                    .map_err(|e| ClientError::Closed(format!("{}: {e}", self.peer)))?;
                Ok(f)
            }
            Ok(None) => Err(ClientError::Closed(format!(
                "{} ended the stream",
                self.peer
            ))),
            Err(e) => Err(ClientError::Closed(format!("{}: {e}", self.peer))),
        }
    }

    /// The next frame, decoded to packed RGB.
    pub async fn next_rgb(&mut self) -> Result<(VideoFrame, RgbImage), ClientError> {
        let f = self.next_frame().await?;
        let img = xoq_media::jpeg::decode(&f.data, self.max_pixels)
            .map_err(|e| ClientError::Device(e.to_string()))?;
        Ok((f, img))
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
