//! P2P viewers: one iroh protocol handler per codec, and the per-viewer loop that applies
//! the credit and keyframe policy so a slow viewer never holds back the others.

use std::sync::atomic::Ordering;

use bytes::BytesMut;
use iroh::endpoint::Connection;
use iroh::protocol::{AcceptError, ProtocolHandler};
use tokio::sync::broadcast;
use xoq_device::camera::ModeRequest;
use xoq_transport::framed::FramedReader;
use xoq_wire::camera::{CLOSE_CAMERA_FAILED, Codec, MAX_CREDIT, ViewerMsg};

use super::CameraServer;

impl CameraServer {
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
                            depth: false,
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
