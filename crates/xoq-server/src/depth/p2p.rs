//! P2P depth viewers: the depth ALPNs next to the camera's on one endpoint, and the
//! per-viewer loop (info first, then the newest capture against each credit).

use bytes::BytesMut;
use iroh::endpoint::Connection;
use iroh::protocol::{AcceptError, ProtocolHandler};
use xoq_device::camera::ModeRequest;
use xoq_transport::framed::FramedReader;
use xoq_wire::camera::{CLOSE_CAMERA_FAILED, MAX_CREDIT, ViewerMsg};
use xoq_wire::depth::{ALPN_DEPTH, ALPN_DEPTH_COLOR, DepthFrame, DepthMsg};

use super::DepthServer;

impl DepthServer {
    /// The ALPNs to give the endpoint: depth with colour, depth only, then the camera's.
    pub fn alpns(&self) -> Vec<Vec<u8>> {
        let mut v = vec![ALPN_DEPTH_COLOR.to_vec(), ALPN_DEPTH.to_vec()];
        v.extend(self.camera().alpns());
        v
    }

    /// Serve depth and colour P2P on `endpoint` (made with [`alpns`](Self::alpns)).
    pub fn router(&self, endpoint: iroh::Endpoint) -> iroh::protocol::Router {
        let mut r = iroh::protocol::Router::builder(endpoint)
            .accept(
                ALPN_DEPTH_COLOR,
                DepthProtocol {
                    server: self.clone(),
                    color: true,
                },
            )
            .accept(
                ALPN_DEPTH,
                DepthProtocol {
                    server: self.clone(),
                    color: false,
                },
            );
        for (alpn, proto) in self.camera().protocols() {
            r = r.accept(alpn, proto);
        }
        r.spawn()
    }

    async fn serve_viewer(&self, conn: Connection, color: bool) -> Result<(), String> {
        let (mut send, recv) = conn.accept_bi().await.map_err(|e| e.to_string())?;
        let mut msgs = FramedReader::new(recv);
        let mut failed = self.inner.shared.failed.subscribe();
        if let Some(why) = self.failure() {
            conn.close(CLOSE_CAMERA_FAILED.into(), why.as_bytes());
            return Err(why);
        }
        let mut info = self.inner.shared.info.subscribe();
        let mut sub = self.subscribe(color);
        let mut buf = BytesMut::new();
        let put = |msg: DepthMsg, buf: &mut BytesMut| {
            buf.clear();
            msg.encode(buf).map_err(|e| e.to_string())
        };
        put(DepthMsg::Info(info.borrow_and_update().clone()), &mut buf)?;
        send.write_all(&buf).await.map_err(|e| e.to_string())?;
        let mut credit: u64 = 0;
        let mut last: Option<u64> = None;
        loop {
            tokio::select! {
                c = sub.next(last), if credit > 0 => {
                    let Some(c) = c else { return Ok(()) };
                    let frame = DepthFrame {
                        seq: c.seq,
                        timestamp_us: c.timestamp_us,
                        depth: c.depth.clone(),
                        color: if color { c.color.clone().unwrap_or_default() } else { Default::default() },
                    };
                    put(DepthMsg::Frame(frame), &mut buf)?;
                    send.write_all(&buf).await.map_err(|e| e.to_string())?;
                    credit -= 1;
                    last = Some(c.seq);
                }
                Ok(()) = info.changed() => {
                    put(DepthMsg::Info(info.borrow_and_update().clone()), &mut buf)?;
                    send.write_all(&buf).await.map_err(|e| e.to_string())?;
                }
                m = msgs.next(ViewerMsg::decode_from) => match m {
                    Ok(Some(ViewerMsg::Credit(n))) => credit = (credit + n).min(MAX_CREDIT),
                    Ok(Some(ViewerMsg::SetMode { width, height, fps })) => {
                        let nz = |v: u32| (v != 0).then_some(v);
                        self.request_mode(ModeRequest {
                            width: nz(width),
                            height: nz(height),
                            fps: nz(fps),
                            prefer_mjpeg: false,
                            depth: false,
                        });
                    }
                    // Every depth frame stands alone.
                    Ok(Some(ViewerMsg::Keyframe)) => {}
                    Ok(None) => return Ok(()),
                    Err(e) => return Err(format!("bad viewer message: {e}")),
                },
                _ = conn.closed() => return Ok(()),
                Ok(()) = failed.changed() => {
                    let why = self.failure().unwrap_or_default();
                    conn.close(CLOSE_CAMERA_FAILED.into(), why.as_bytes());
                    return Err(why);
                }
            }
        }
    }
}

/// The P2P handler of the depth ALPNs (see [`DepthServer::router`]).
#[derive(Debug, Clone)]
pub struct DepthProtocol {
    server: DepthServer,
    color: bool,
}

impl ProtocolHandler for DepthProtocol {
    async fn accept(&self, connection: Connection) -> Result<(), AcceptError> {
        if let Err(e) = self.server.serve_viewer(connection, self.color).await {
            tracing::debug!("depth viewer left: {e}");
        }
        Ok(())
    }
}
