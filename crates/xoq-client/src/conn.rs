//! The connect path every client shares: the P2P dial and opening exchange ([`Dialer`]),
//! how a session run ends ([`End`]), and how a dead handshake is explained.

use std::sync::Mutex;
use std::time::Duration;

use bytes::BytesMut;
use iroh::Endpoint;
use iroh::endpoint::{Connection, RecvStream, SendStream};
use xoq_transport::framed::FramedReader;
use xoq_transport::{Address, p2p};
use xoq_wire::DecodeError;

use crate::ClientError;
use crate::clock::local_now_us;
use crate::link::{Identity, Link, LinkState};

/// How one session of a reconnecting client ended.
pub(crate) enum End {
    /// The link dropped or the server went away: reconnect.
    Lost(String),
    /// For good (a refusal, taken over, closed): tell the user.
    Final(String),
}

/// A session being served: resolves when it ends.
pub(crate) type Run = tokio::task::JoinHandle<End>;

/// The run of a relay session, which redials by itself: it ends only when its link closes
/// for good.
pub(crate) fn until_link_closed(link: Link) -> Run {
    tokio::spawn(async move {
        let mut w = link.watch();
        loop {
            if let LinkState::Closed(r) = &*w.borrow_and_update() {
                return End::Final(r.clone());
            }
            if w.changed().await.is_err() {
                return End::Final("the client was dropped".into());
            }
        }
    })
}

/// A P2P session just opened: the server's first message read, nothing interpreted yet.
pub(crate) struct Opened<M> {
    pub(crate) conn: Connection,
    pub(crate) send: SendStream,
    pub(crate) reader: FramedReader<RecvStream>,
    /// The server's first message (a welcome or a refusal, in the service's own codec).
    pub(crate) first: M,
    /// Local time the hello left, for the clock's first offset hint.
    pub(crate) t0: u64,
}

/// Where a client dials its P2P sessions from. The endpoint is made at the first dial and
/// kept across reconnects, so a redial is the same identity on the same socket.
pub(crate) struct Dialer {
    addr: Address,
    identity: Identity,
    offline: bool,
    endpoint: Mutex<Option<Endpoint>>,
}

impl Dialer {
    pub(crate) fn new(addr: Address, identity: Identity, offline: bool) -> Self {
        Self {
            addr,
            identity,
            offline,
            endpoint: Mutex::new(None),
        }
    }

    async fn endpoint(&self) -> Result<Endpoint, ClientError> {
        if let Some(ep) = self.endpoint.lock().ok().and_then(|e| e.clone()) {
            return Ok(ep);
        }
        let ep = p2p::client_endpoint(self.identity.secret()?, &self.addr, self.offline).await?;
        if let Ok(mut e) = self.endpoint.lock() {
            *e = Some(ep.clone());
        }
        Ok(ep)
    }

    /// Dial `alpn`, open the session's one bidirectional stream, send `hello` and read the
    /// server's first message. A connection the server closed instead (the allowlist) is
    /// explained from its close reason. On the `first` dial a failure also drops the
    /// endpoint, so a client that never connected leaves nothing behind.
    pub(crate) async fn open<M>(
        &self,
        alpn: &[u8],
        hello: &[u8],
        decode: impl Fn(&mut BytesMut) -> Result<M, DecodeError>,
        first: bool,
    ) -> Result<Opened<M>, ClientError> {
        let endpoint = self.endpoint().await?;
        let peer = self.addr.to_string();
        let conn = p2p::connect(&endpoint, &self.addr, alpn, self.offline).await?;
        let t0 = local_now_us();
        let exchange = async {
            let (mut send, recv) = conn.open_bi().await.map_err(|e| e.to_string())?;
            send.write_all(hello).await.map_err(|e| e.to_string())?;
            let mut reader = FramedReader::new(recv);
            let msg = reader.next(decode).await.map_err(|e| e.to_string())?;
            Ok::<_, String>((send, reader, msg))
        };
        match exchange.await {
            Ok((send, reader, Some(first))) => Ok(Opened {
                conn,
                send,
                reader,
                first,
                t0,
            }),
            Ok((_, _, None)) | Err(_) => {
                let e = handshake_failed(&conn, &peer).await;
                if first {
                    self.close().await;
                }
                Err(e)
            }
        }
    }

    /// Close the endpoint (the next dial makes a new one).
    pub(crate) async fn close(&self) {
        let ep = self.endpoint.lock().ok().and_then(|mut e| e.take());
        if let Some(ep) = ep {
            ep.close().await;
        }
    }

    /// Close the endpoint from a `Drop`: in the background when a runtime is there.
    pub(crate) fn close_soon(&self) {
        if let Some(ep) = self.endpoint.lock().ok().and_then(|mut e| e.take())
            && let Ok(h) = tokio::runtime::Handle::try_current()
        {
            h.spawn(async move { ep.close().await });
        }
    }
}

/// The handshake stream died: the connection's close reason says why (an allowlist refusal
/// closes the connection right after the TLS handshake, before any stream is served).
pub(crate) async fn handshake_failed(conn: &iroh::endpoint::Connection, peer: &str) -> ClientError {
    let reason = tokio::time::timeout(Duration::from_secs(2), conn.closed()).await;
    match reason {
        Ok(e) => ClientError::from(p2p::closed_error(peer, &e)),
        Err(_) => ClientError::Connect(format!("{peer}: handshake failed")),
    }
}

#[cfg(feature = "camera")]
/// Closes the connection when a client is dropped without `close()`, so the server frees
/// the device (and runs its safety actions) at once instead of after the idle timeout.
pub(crate) struct ConnGuard {
    pub(crate) conn: Option<iroh::endpoint::Connection>,
    pub(crate) endpoint: Option<iroh::Endpoint>,
}

#[cfg(feature = "camera")]
impl ConnGuard {
    /// Close the connection with a goodbye and wait for the endpoint to close.
    pub(crate) async fn close(&mut self) {
        if let Some(conn) = self.conn.take() {
            conn.close(p2p::CLOSE_NORMAL.into(), b"bye");
        }
        if let Some(ep) = self.endpoint.take() {
            ep.close().await;
        }
    }
}

#[cfg(feature = "camera")]
impl Drop for ConnGuard {
    fn drop(&mut self) {
        if let Some(conn) = self.conn.take() {
            conn.close(p2p::CLOSE_NORMAL.into(), b"dropped");
        }
        if let Some(ep) = self.endpoint.take()
            && let Ok(h) = tokio::runtime::Handle::try_current()
        {
            h.spawn(async move { ep.close().await });
        }
    }
}
