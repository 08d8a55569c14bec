//! Remote CAN buses.
//!
//! ```no_run
//! # async fn demo() -> Result<(), xoq_client::ClientError> {
//! use xoq_client::can::{CanOptions, RemoteCanBus};
//! use xoq_wire::can::CanFrame;
//! let bus = RemoteCanBus::connect("<endpoint-id>@127.0.0.1:9001", CanOptions::new()).await?;
//! bus.send(&CanFrame::new(0x01, vec![0xFF; 7].into_iter().chain([0xFC]).collect::<Vec<u8>>()).unwrap()).await?;
//! let reply = bus.recv().await?;
//! # Ok(()) }
//! ```

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::BytesMut;
use iroh::SecretKey;
use tokio::sync::watch;
use xoq_transport::Address;
use xoq_transport::framed::FramedReader;
use xoq_transport::moq::{MoqSession, TrackWriter};
use xoq_transport::p2p;
use xoq_wire::can::{
    ALPN, BusState, CanFrame, ClientMsg, Filter, MAX_BATCH, ServerMsg, TimedFrame, VERSION,
    decode_track_frame, encode_track_frame, filters_accept,
};
use xoq_wire::serial::RefuseCode;

use crate::ClientError;
use crate::conn::{ConnGuard, handshake_failed};
use crate::rx::Inbox;

/// Frames buffered on the client before the oldest are dropped.
pub const INBOX_FRAMES: usize = 64 * 1024;
const CONNECT_TIMEOUT: Duration = Duration::from_secs(15);
/// Own frames remembered for echo suppression over a relay (drop-oldest beyond this).
const OWN_ECHO_MAX: usize = 1024;
/// An own frame not seen back within this time was lost (e.g. writes refused): forget it.
const OWN_ECHO_TTL: Duration = Duration::from_secs(2);

/// Frames this client published through a relay and has not seen come back on the state
/// track yet. The relay broadcasts all bus traffic, this client's commands included; a P2P
/// server leaves a client's own frames out unless asked, and a relay client must behave the
/// same (LeRobot's Damiao bus waits for a silent bus). Matching is by content, oldest first:
/// the bus keeps each sender's order.
#[derive(Debug, Default)]
struct OwnEcho {
    pending: Mutex<VecDeque<(Instant, CanFrame)>>,
}

impl OwnEcho {
    fn sent(&self, frames: &[CanFrame]) {
        let now = Instant::now();
        if let Ok(mut p) = self.pending.lock() {
            for f in frames {
                if p.len() == OWN_ECHO_MAX {
                    p.pop_front();
                }
                p.push_back((now, f.clone()));
            }
        }
    }

    /// Whether `frame` is the echo of one of ours (and forget that one).
    fn is_echo(&self, frame: &CanFrame) -> bool {
        let Ok(mut p) = self.pending.lock() else {
            return false;
        };
        while p.front().is_some_and(|(t, _)| t.elapsed() > OWN_ECHO_TTL) {
            p.pop_front();
        }
        match p.iter().position(|(_, f)| f == frame) {
            Some(i) => {
                p.remove(i);
                true
            }
            None => false,
        }
    }
}

/// Options for opening a remote bus.
#[derive(Debug, Clone)]
#[must_use]
pub struct CanOptions {
    interface: String,
    receive_own: bool,
    filters: Vec<Filter>,
    key: Option<SecretKey>,
    offline: bool,
}

impl Default for CanOptions {
    fn default() -> Self {
        Self::new()
    }
}

impl CanOptions {
    /// Defaults: whatever interface the endpoint serves, no own frames, no filters.
    pub fn new() -> Self {
        Self {
            interface: String::new(),
            receive_own: false,
            filters: Vec::new(),
            key: None,
            offline: xoq_transport::offline_from_env(),
        }
    }

    /// Check that the endpoint serves this interface (e.g. `can0:fd`).
    pub fn interface(mut self, name: &str) -> Self {
        self.interface = name.to_string();
        self
    }

    /// Also receive the frames this client sends, once they are on the bus.
    pub fn receive_own(mut self, on: bool) -> Self {
        self.receive_own = on;
        self
    }

    /// Only receive frames matching one of these filters (applied on the server).
    pub fn filters(mut self, filters: Vec<Filter>) -> Self {
        self.filters = filters;
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
}

// One per open bus and never moved on the data path.
#[allow(clippy::large_enum_variant)]
enum Link {
    P2p {
        send: tokio::sync::Mutex<iroh::endpoint::SendStream>,
        guard: ConnGuard,
    },
    Moq {
        cmd: tokio::sync::Mutex<TrackWriter>,
        /// `None` when the client asked to receive its own frames.
        own: Option<Arc<OwnEcho>>,
        /// Applied by this client: a relay cannot filter per subscriber.
        filters: Arc<Mutex<Vec<Filter>>>,
        broadcast: xoq_transport::moq::broadcast::Producer,
        session: MoqSession,
    },
}

/// An open remote CAN bus (async).
pub struct RemoteCanBus {
    link: Link,
    inbox: Arc<Inbox<TimedFrame>>,
    state: watch::Receiver<BusState>,
    interface: String,
    fd: bool,
    reader: tokio::task::JoinHandle<()>,
}

impl std::fmt::Debug for RemoteCanBus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RemoteCanBus")
            .field("interface", &self.interface)
            .finish()
    }
}

impl RemoteCanBus {
    /// Connect to a remote bus by address (`<id>@ip:port`, `<id>`, or `<relay-url>/<path>`).
    pub async fn connect(address: &str, opts: CanOptions) -> Result<Self, ClientError> {
        let addr: Address = address.parse().map_err(ClientError::from)?;
        let fut = async {
            match &addr {
                Address::P2p { .. } => Self::connect_p2p(&addr, opts).await,
                Address::Moq { relay, name } => Self::connect_moq(relay, name, opts).await,
            }
        };
        tokio::time::timeout(CONNECT_TIMEOUT, fut)
            .await
            .map_err(|_| {
                ClientError::Connect(format!(
                    "no answer from {addr} within {}s: is the server running and the address right?",
                    CONNECT_TIMEOUT.as_secs()
                ))
            })?
    }

    async fn connect_p2p(addr: &Address, opts: CanOptions) -> Result<Self, ClientError> {
        let endpoint = p2p::client_endpoint(opts.key.clone(), addr, opts.offline).await?;
        let conn = p2p::connect(&endpoint, addr, ALPN, opts.offline).await?;
        let peer = addr.to_string();
        let handshake = async {
            let (mut send, recv) = conn.open_bi().await.map_err(|e| e.to_string())?;
            let mut out = BytesMut::new();
            ClientMsg::Hello {
                version: VERSION,
                interface: opts.interface.clone(),
                receive_own: opts.receive_own,
                fd: true,
                filters: opts.filters.clone(),
            }
            .encode(&mut out);
            send.write_all(&out).await.map_err(|e| e.to_string())?;
            let mut reader = FramedReader::new(recv);
            let first = reader
                .next(ServerMsg::decode)
                .await
                .map_err(|e| e.to_string())?;
            Ok::<_, String>((send, reader, first))
        };
        let (send, reader, interface, fd) = match handshake.await {
            Ok((send, reader, Some(ServerMsg::Welcome { interface, fd, .. }))) => {
                (send, reader, interface, fd)
            }
            Ok((_, _, Some(ServerMsg::Refused { code, message }))) => {
                conn.close(p2p::CLOSE_NORMAL.into(), b"refused");
                endpoint.close().await;
                return Err(ClientError::Refused {
                    code: RefuseCode::from_code(code),
                    message,
                });
            }
            Ok((_, _, other)) => {
                return Err(ClientError::Connect(format!(
                    "{peer}: unexpected first message {other:?}"
                )));
            }
            Err(_) => return Err(handshake_failed(&conn, endpoint, &peer).await),
        };
        let inbox = Arc::new(Inbox::new(INBOX_FRAMES));
        let (state_tx, state) = watch::channel(BusState::ErrorActive);
        let reader = tokio::spawn(p2p_reader(
            reader,
            inbox.clone(),
            state_tx,
            conn.clone(),
            peer,
        ));
        Ok(Self {
            link: Link::P2p {
                send: tokio::sync::Mutex::new(send),
                guard: ConnGuard {
                    conn: Some(conn),
                    endpoint: Some(endpoint),
                },
            },
            inbox,
            state,
            interface,
            fd,
            reader,
        })
    }

    async fn connect_moq(
        relay: &url::Url,
        name: &str,
        opts: CanOptions,
    ) -> Result<Self, ClientError> {
        let session = MoqSession::connect(relay, false).await?;
        let pair = crate::relay::open_pair(&session, name, "cmd", "state", || {
            format!(
                "no CAN server publishes {name} on {relay}: start one with `xoq can-server ... --relay {relay}`"
            )
        })
        .await?;
        let (broadcast, cmd, mut state_track) = (pair.broadcast, pair.writer, pair.reader);
        let inbox = Arc::new(Inbox::new(INBOX_FRAMES));
        let (_state_tx, state) = watch::channel(BusState::ErrorActive);
        let own = (!opts.receive_own).then(|| Arc::new(OwnEcho::default()));
        let filters = Arc::new(Mutex::new(opts.filters));
        let ib = inbox.clone();
        let (own_rx, filters_rx) = (own.clone(), filters.clone());
        let reader = tokio::spawn(async move {
            loop {
                match state_track.next().await {
                    Ok(payload) => match decode_track_frame(&payload) {
                        Ok(frames) => {
                            let active = filters_rx.lock().map(|f| f.clone()).unwrap_or_default();
                            ib.extend(frames.into_iter().filter(|t| {
                                !own_rx.as_ref().is_some_and(|o| o.is_echo(&t.frame))
                                    && filters_accept(&active, &t.frame)
                            }))
                        }
                        Err(e) => tracing::warn!("undecodable state batch: {e}"),
                    },
                    Err(e) => {
                        ib.close(e.to_string());
                        return;
                    }
                }
            }
        });
        Ok(Self {
            link: Link::Moq {
                cmd: tokio::sync::Mutex::new(cmd),
                own,
                filters,
                broadcast,
                session,
            },
            inbox,
            state,
            interface: name.to_string(),
            fd: true,
            reader,
        })
    }

    /// The served interface's name.
    pub fn interface(&self) -> &str {
        &self.interface
    }

    /// Whether the bus carries CAN FD frames.
    pub fn is_fd(&self) -> bool {
        self.fd
    }

    /// The controller state last reported by the server.
    pub fn state(&self) -> BusState {
        *self.state.borrow()
    }

    /// The receive inbox (for blocking readers).
    pub fn inbox(&self) -> &Arc<Inbox<TimedFrame>> {
        &self.inbox
    }

    /// Send one frame.
    pub async fn send(&self, frame: &CanFrame) -> Result<(), ClientError> {
        self.send_batch(std::slice::from_ref(frame)).await
    }

    /// Send frames in one message (they reach the bus in order).
    pub async fn send_batch(&self, frames: &[CanFrame]) -> Result<(), ClientError> {
        if let Some(r) = self.inbox.closed() {
            return Err(ClientError::Closed(r));
        }
        for f in frames {
            f.validate()
                .map_err(|e| ClientError::Device(format!("invalid frame: {e}")))?;
        }
        let ts = xoq_device_free_now_us();
        let timed: Vec<TimedFrame> = frames
            .iter()
            .map(|f| TimedFrame {
                frame: f.clone(),
                timestamp_us: ts,
            })
            .collect();
        let mut out = BytesMut::new();
        match &self.link {
            Link::P2p { send, .. } => {
                for chunk in timed.chunks(MAX_BATCH) {
                    ClientMsg::Send(chunk.to_vec()).encode(&mut out);
                }
                send.lock()
                    .await
                    .write_all(&out)
                    .await
                    .map_err(|e| ClientError::Closed(e.to_string()))
            }
            Link::Moq { cmd, own, .. } => {
                let mut w = cmd.lock().await;
                if let Some(own) = own {
                    own.sent(frames);
                }
                for chunk in timed.chunks(MAX_BATCH) {
                    out.clear();
                    encode_track_frame(chunk, &mut out);
                    w.write(out.split().freeze())
                        .map_err(|e| ClientError::Closed(e.to_string()))?;
                }
                Ok(())
            }
        }
    }

    /// Next frame (waits).
    pub async fn recv(&self) -> Result<TimedFrame, ClientError> {
        self.inbox.pop().await.map_err(ClientError::Closed)
    }

    /// Next frame within `timeout`, `Ok(None)` if none came.
    pub async fn recv_timeout(&self, timeout: Duration) -> Result<Option<TimedFrame>, ClientError> {
        match tokio::time::timeout(timeout, self.recv()).await {
            Ok(r) => r.map(Some),
            Err(_) => Ok(None),
        }
    }

    /// Replace the filters: applied by a P2P server (filtered frames never cross the
    /// network), or by this client over a relay (which broadcasts everything).
    pub async fn set_filters(&self, filters: Vec<Filter>) -> Result<(), ClientError> {
        match &self.link {
            Link::P2p { send, .. } => {
                let mut out = BytesMut::new();
                ClientMsg::SetFilters(filters).encode(&mut out);
                send.lock()
                    .await
                    .write_all(&out)
                    .await
                    .map_err(|e| ClientError::Closed(e.to_string()))
            }
            Link::Moq { filters: f, .. } => {
                if let Ok(mut f) = f.lock() {
                    *f = filters;
                }
                Ok(())
            }
        }
    }

    /// Close gracefully.
    pub async fn close(self) {
        self.reader.abort();
        match self.link {
            Link::P2p { send, mut guard } => {
                let _ = send.lock().await.finish();
                if let Some(conn) = guard.conn.take() {
                    conn.close(p2p::CLOSE_NORMAL.into(), b"bye");
                }
                if let Some(ep) = guard.endpoint.take() {
                    ep.close().await;
                }
            }
            Link::Moq {
                cmd,
                broadcast,
                session,
                ..
            } => {
                cmd.into_inner().finish();
                broadcast.close();
                session.close().await;
            }
        }
    }
}

fn xoq_device_free_now_us() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}

async fn p2p_reader(
    mut reader: FramedReader<iroh::endpoint::RecvStream>,
    inbox: Arc<Inbox<TimedFrame>>,
    state: watch::Sender<BusState>,
    conn: iroh::endpoint::Connection,
    peer: String,
) {
    let reason = loop {
        match reader.next(ServerMsg::decode).await {
            Ok(Some(ServerMsg::Frames(f))) => inbox.extend(f),
            Ok(Some(ServerMsg::State(s))) => {
                let _ = state.send(s);
            }
            Ok(Some(ServerMsg::Dropped(n))) => {
                tracing::warn!("server dropped {n} frames: this client reads too slowly")
            }
            Ok(Some(other)) => tracing::debug!("unexpected message {other:?}"),
            Ok(None) => break format!("{peer} ended the session"),
            Err(_) => {
                let e = tokio::time::timeout(Duration::from_millis(200), conn.closed()).await;
                break match e {
                    Ok(e) => p2p::closed_error(&peer, &e).to_string(),
                    Err(_) => format!("{peer}: stream failed"),
                };
            }
        }
    };
    inbox.close(reason);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(id: u32, data: &[u8]) -> CanFrame {
        CanFrame::new(id, data.to_vec()).expect("valid frame")
    }

    #[test]
    fn own_echo_suppresses_each_sent_frame_once() {
        let own = OwnEcho::default();
        own.sent(&[frame(1, b"a"), frame(1, b"a"), frame(2, b"b")]);
        assert!(!own.is_echo(&frame(3, b"a")), "someone else's frame");
        assert!(own.is_echo(&frame(1, b"a")));
        assert!(own.is_echo(&frame(2, b"b")));
        assert!(own.is_echo(&frame(1, b"a")));
        // All three echoes consumed: the same content again is another sender's.
        assert!(!own.is_echo(&frame(1, b"a")));
    }

    #[test]
    fn own_echo_is_bounded() {
        let own = OwnEcho::default();
        let frames: Vec<CanFrame> = (0..OWN_ECHO_MAX as u32 + 10)
            .map(|i| frame(i & 0x7FF, &i.to_le_bytes()))
            .collect();
        own.sent(&frames);
        assert_eq!(own.pending.lock().expect("lock").len(), OWN_ECHO_MAX);
        // The oldest were forgotten (drop-oldest), the newest are still matched.
        assert!(!own.is_echo(&frames[0]));
        assert!(own.is_echo(&frames[frames.len() - 1]));
    }
}
