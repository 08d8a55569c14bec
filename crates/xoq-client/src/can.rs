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
//!
//! A bus survives link blips: the client reconnects in the background (same identity,
//! filters re-applied) and receiving resumes. While the link is down, [`RemoteCanBus::send`]
//! fails at once with [`ClientError::LinkDown`]: commands are never queued for later (a late
//! motor command is worse than none). Timestamps are on the robot's clock; the client's
//! estimate of it ([`RemoteCanBus::clock`]) converts them, and stamps outgoing commands so
//! the server judges their age on its own clock.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::BytesMut;
use tokio::sync::watch;
use xoq_transport::Address;
use xoq_transport::framed::FramedReader;
use xoq_transport::moq::MoqSession;
use xoq_transport::p2p;
use xoq_wire::can::{
    ALPN, BusState, CanFrame, ClientMsg, Filter, MAX_BATCH, ServerMsg, TimedFrame, VERSION,
    decode_track_frame, encode_track_frame, filters_accept,
};
use xoq_wire::relay::Ctl;
use xoq_wire::serial::RefuseCode;

pub use crate::observe::{CanObservation, CanObserver, Direction, ObserveOptions};

use crate::ClientError;
use crate::clock::{Clock, local_now_us};
use crate::conn::{Dialer, End, Run, until_link_closed};
use crate::link::{Identity, Link, Reconnect, redial};
use crate::relay::{Handlers, RelayPeer};
use crate::rx::Inbox;

/// Frames buffered on the client before the oldest are dropped.
pub const INBOX_FRAMES: usize = 64 * 1024;
const CONNECT_TIMEOUT: Duration = Duration::from_secs(15);
/// How long `close()` waits for the frames it sent to reach the bus.
const CLOSE_DRAIN: Duration = Duration::from_millis(1500);
/// Clock probes on a live session.
const PING_EVERY: Duration = Duration::from_secs(1);
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
    identity: Identity,
    offline: bool,
    reconnect: Reconnect,
}

impl Default for CanOptions {
    fn default() -> Self {
        Self::new()
    }
}

impl CanOptions {
    /// Defaults: whatever interface the endpoint serves, no own frames, no filters, the
    /// user's identity, reconnecting for up to 60 s after a drop.
    pub fn new() -> Self {
        Self {
            interface: String::new(),
            receive_own: false,
            filters: Vec::new(),
            identity: Identity::User,
            offline: xoq_transport::offline_from_env(),
            reconnect: Reconnect::default(),
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

    identity_setters!("bus");

    /// How the bus comes back after the link drops (default: for up to 60 s).
    pub fn reconnect(mut self, r: Reconnect) -> Self {
        self.reconnect = r;
        self
    }
}

/// Counters of a bus client.
#[derive(Debug, Default)]
pub struct CanClientStats {
    /// Frames handed to the link.
    pub sent: AtomicU64,
    /// Frames not sent because the link was down (the call failed).
    pub not_sent: AtomicU64,
    /// Frames the server reported it did not transmit (e.g. FD on a classic bus).
    pub refused_by_server: AtomicU64,
}

// One per open bus and never moved on the data path.
#[allow(clippy::large_enum_variant)]
enum Live {
    P2p {
        send: tokio::sync::Mutex<iroh::endpoint::SendStream>,
        conn: iroh::endpoint::Connection,
    },
    Relay {
        peer: RelayPeer,
        /// `None` when the client asked to receive its own frames.
        own: Option<Arc<OwnEcho>>,
    },
}

struct Inner {
    addr: Address,
    peer: String,
    opts: CanOptions,
    inbox: Arc<Inbox<TimedFrame>>,
    state: watch::Sender<BusState>,
    interface: Mutex<String>,
    fd: AtomicBool,
    /// The filters in force (re-applied on reconnect; applied here over a relay).
    filters: Arc<Mutex<Vec<Filter>>>,
    link: Link,
    clock: Clock,
    live: Mutex<Option<Arc<Live>>>,
    dialer: Dialer,
    closing: AtomicBool,
    /// A refusal the server reported, handed to the next `send`.
    refusal: Mutex<Option<String>>,
    stats: CanClientStats,
}

impl Inner {
    fn live(&self) -> Option<Arc<Live>> {
        self.live.lock().ok().and_then(|l| l.clone())
    }

    fn set_live(&self, l: Option<Arc<Live>>) {
        if let Ok(mut cur) = self.live.lock() {
            *cur = l;
        }
    }

    fn filters(&self) -> Vec<Filter> {
        self.filters.lock().map(|f| f.clone()).unwrap_or_default()
    }
}

/// An open remote CAN bus (async).
pub struct RemoteCanBus {
    inner: Arc<Inner>,
    supervisor: Option<tokio::task::JoinHandle<()>>,
}

impl std::fmt::Debug for RemoteCanBus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RemoteCanBus")
            .field("peer", &self.inner.peer)
            .finish()
    }
}

impl Drop for RemoteCanBus {
    fn drop(&mut self) {
        if let Some(s) = self.supervisor.take() {
            s.abort();
        }
        if let Some(live) = self.inner.live()
            && let Live::P2p { conn, .. } = &*live
        {
            // Dropped without close(): the server frees the session (and runs its safety
            // actions) at once instead of after the idle timeout.
            conn.close(p2p::CLOSE_NORMAL.into(), b"dropped");
        }
        self.inner.set_live(None);
        self.inner.dialer.close_soon();
    }
}

impl RemoteCanBus {
    /// Connect to a remote bus by address (`<id>@ip:port`, `<id>`, or `<relay-url>/<path>`).
    pub async fn connect(address: &str, opts: CanOptions) -> Result<Self, ClientError> {
        let addr: Address = address.parse().map_err(ClientError::from)?;
        let peer = addr.to_string();
        let inner = Arc::new(Inner {
            peer: peer.clone(),
            inbox: Arc::new(Inbox::new(INBOX_FRAMES)),
            state: watch::channel(BusState::ErrorActive).0,
            interface: Mutex::new(String::new()),
            fd: AtomicBool::new(true),
            filters: Arc::new(Mutex::new(opts.filters.clone())),
            link: Link::connecting(),
            clock: Clock::new(),
            live: Mutex::new(None),
            dialer: Dialer::new(addr.clone(), opts.identity.clone(), opts.offline),
            closing: AtomicBool::new(false),
            refusal: Mutex::new(None),
            stats: CanClientStats::default(),
            opts,
            addr,
        });
        let run = match tokio::time::timeout(CONNECT_TIMEOUT, open_session(&inner, true)).await {
            Ok(r) => r?,
            Err(_) => {
                return Err(ClientError::Connect(format!(
                    "no answer from {peer} within {}s: is the server running and the address right?",
                    CONNECT_TIMEOUT.as_secs()
                )));
            }
        };
        inner.link.up();
        let supervisor = tokio::spawn(supervise(inner.clone(), run));
        Ok(Self {
            inner,
            supervisor: Some(supervisor),
        })
    }

    /// The served interface's name.
    pub fn interface(&self) -> String {
        self.inner
            .interface
            .lock()
            .map(|i| i.clone())
            .unwrap_or_default()
    }

    /// Whether the bus carries CAN FD frames.
    pub fn is_fd(&self) -> bool {
        self.inner.fd.load(Ordering::Relaxed)
    }

    /// The controller state last reported by the server.
    pub fn state(&self) -> BusState {
        *self.inner.state.borrow()
    }

    /// The receive inbox (for blocking readers).
    pub fn inbox(&self) -> &Arc<Inbox<TimedFrame>> {
        &self.inner.inbox
    }

    /// The link's state and counters.
    pub fn link(&self) -> &Link {
        &self.inner.link
    }

    /// The estimate of the server's (robot's) clock: frame timestamps are on it.
    pub fn clock(&self) -> &Clock {
        &self.inner.clock
    }

    /// Counters.
    pub fn stats(&self) -> &CanClientStats {
        &self.inner.stats
    }

    /// Send one frame.
    pub async fn send(&self, frame: &CanFrame) -> Result<(), ClientError> {
        self.send_batch(std::slice::from_ref(frame)).await
    }

    /// Send frames in one message (they reach the bus in order). Fails at once while the
    /// link is down: nothing is queued for later.
    pub async fn send_batch(&self, frames: &[CanFrame]) -> Result<(), ClientError> {
        if let Some(r) = self.inner.refusal.lock().ok().and_then(|mut r| r.take()) {
            return Err(ClientError::Device(r));
        }
        let fd_bus = self.is_fd();
        let mut checked = Vec::with_capacity(frames.len());
        for f in frames {
            f.validate()
                .map_err(|e| ClientError::Device(format!("invalid frame: {e}")))?;
            let mut f = f.clone();
            if f.fd && !fd_bus {
                // A classic bus: a small FD frame goes as classic, a real one cannot go.
                if f.data.len() <= 8 && !f.brs {
                    f.fd = false;
                    f.esi = false;
                } else {
                    return Err(ClientError::Unsupported(format!(
                        "CAN FD frame ({} bytes{}) on {}, a classic CAN interface: only FD frames of at most 8 bytes without bit-rate switch can be sent there (as classic frames); serve the interface with :fd on an FD-capable controller",
                        f.data.len(),
                        if f.brs { ", bit-rate switch" } else { "" },
                        self.interface()
                    )));
                }
            }
            checked.push(f);
        }
        let live = match (self.inner.link.unavailable(), self.inner.live()) {
            (None, Some(l)) => l,
            (Some(e), _) => {
                self.inner
                    .stats
                    .not_sent
                    .fetch_add(checked.len() as u64, Ordering::Relaxed);
                return Err(e);
            }
            (None, None) => return Err(ClientError::LinkDown("reconnecting".into())),
        };
        // Stamped on the robot's clock: the server judges the age on its own clock.
        let ts = self.inner.clock.robot_now_us();
        let timed: Vec<TimedFrame> = checked
            .iter()
            .map(|f| TimedFrame {
                frame: f.clone(),
                timestamp_us: ts,
            })
            .collect();
        let mut out = BytesMut::new();
        match &*live {
            Live::P2p { send, .. } => {
                for chunk in timed.chunks(MAX_BATCH) {
                    ClientMsg::Send(chunk.to_vec()).encode(&mut out);
                }
                send.lock().await.write_all(&out).await.map_err(|e| {
                    ClientError::LinkDown(format!("the link dropped while sending: {e}"))
                })?;
            }
            Live::Relay { peer, own } => {
                if let Some(own) = own {
                    own.sent(&checked);
                }
                for chunk in timed.chunks(MAX_BATCH) {
                    out.clear();
                    encode_track_frame(chunk, &mut out);
                    peer.write_data(&out)?;
                }
            }
        }
        self.inner
            .stats
            .sent
            .fetch_add(checked.len() as u64, Ordering::Relaxed);
        Ok(())
    }

    /// Next frame (waits, also across a reconnect).
    pub async fn recv(&self) -> Result<TimedFrame, ClientError> {
        self.inner.inbox.pop().await.map_err(ClientError::Closed)
    }

    /// Next frame within `timeout`, `Ok(None)` if none came.
    pub async fn recv_timeout(&self, timeout: Duration) -> Result<Option<TimedFrame>, ClientError> {
        match tokio::time::timeout(timeout, self.recv()).await {
            Ok(r) => r.map(Some),
            Err(_) => Ok(None),
        }
    }

    /// Replace the filters: applied by a P2P server (filtered frames never cross the
    /// network), or by this client over a relay (which broadcasts everything). Kept across
    /// reconnects.
    pub async fn set_filters(&self, filters: Vec<Filter>) -> Result<(), ClientError> {
        if let Ok(mut f) = self.inner.filters.lock() {
            *f = filters.clone();
        }
        if let Some(live) = self.inner.live()
            && let Live::P2p { send, .. } = &*live
        {
            let mut out = BytesMut::new();
            ClientMsg::SetFilters(filters).encode(&mut out);
            // A dead link re-applies them on reconnect.
            let _ = send.lock().await.write_all(&out).await;
        }
        Ok(())
    }

    /// Close gracefully: the frames sent so far reach the bus first (bounded wait).
    pub async fn close(mut self) {
        self.inner.closing.store(true, Ordering::Relaxed);
        let live = self.inner.live();
        if let Some(Live::P2p { send, conn }) = live.as_deref() {
            let _ = send.lock().await.finish();
            // The server ends its side once our frames went to the bus.
            let _ = tokio::time::timeout(CLOSE_DRAIN, async {
                if let Some(s) = self.supervisor.as_mut() {
                    let _ = s.await;
                }
            })
            .await;
            conn.close(p2p::CLOSE_NORMAL.into(), b"bye");
        }
        if let Some(s) = self.supervisor.take() {
            s.abort();
        }
        self.inner.set_live(None);
        if let Some(Ok(Live::Relay { peer, .. })) = live.map(Arc::try_unwrap) {
            peer.close().await;
        }
        self.inner.link.close("the bus was closed");
        self.inner.inbox.close("the bus was closed".into());
        self.inner.dialer.close().await;
    }
}

async fn open_session(inner: &Arc<Inner>, first: bool) -> Result<Run, ClientError> {
    match &inner.addr {
        Address::P2p { .. } | Address::Service { .. } => open_p2p(inner, first).await,
        Address::Moq { relay, name } => {
            let session = MoqSession::connect(relay, inner.opts.reconnect.redial()).await?;
            let own = (!inner.opts.receive_own).then(|| Arc::new(OwnEcho::default()));
            let (ib, own_rx, filters) = (inner.inbox.clone(), own.clone(), inner.filters.clone());
            let state = inner.state.clone();
            let handlers = Handlers {
                data: Box::new(move |payload| match decode_track_frame(&payload) {
                    Ok(frames) => {
                        let active = filters.lock().map(|f| f.clone()).unwrap_or_default();
                        ib.extend(frames.into_iter().filter(|t| {
                            !own_rx.as_ref().is_some_and(|o| o.is_echo(&t.frame))
                                && filters_accept(&active, &t.frame)
                        }));
                    }
                    Err(e) => tracing::warn!("undecodable state batch: {e}"),
                }),
                notice: Box::new(move |m| {
                    if let Ctl::BusState(c) = m {
                        state.send_replace(BusState::from_code(c));
                    }
                }),
            };
            let peer = RelayPeer::open(
                session,
                name,
                ("cmd", "state"),
                handlers,
                inner.link.clone(),
                inner.clock.clone(),
                || format!(
                    "no CAN server publishes {name} on {relay}: start one with `xoq can-server ... --relay {relay}`"
                ),
            )
            .await?;
            if let Ok(mut i) = inner.interface.lock() {
                *i = name.clone();
            }
            inner.set_live(Some(Arc::new(Live::Relay { peer, own })));
            Ok(until_link_closed(inner.link.clone()))
        }
    }
}

async fn open_p2p(inner: &Arc<Inner>, first: bool) -> Result<Run, ClientError> {
    let peer = &inner.peer;
    let mut hello = BytesMut::new();
    ClientMsg::Hello {
        version: VERSION,
        interface: inner.opts.interface.clone(),
        receive_own: inner.opts.receive_own,
        fd: true,
        filters: inner.filters(),
    }
    .encode(&mut hello);
    let opened = inner
        .dialer
        .open(ALPN, &hello, ServerMsg::decode, first)
        .await?;
    let conn = opened.conn;
    match opened.first {
        ServerMsg::Welcome {
            version,
            interface,
            fd,
            server_us,
        } => {
            if version != VERSION {
                conn.close(p2p::CLOSE_NORMAL.into(), b"version");
                return Err(ClientError::Connect(format!(
                    "{peer} speaks CAN protocol version {version} and this client {VERSION}: upgrade the older side"
                )));
            }
            inner.clock.hint(opened.t0, server_us, local_now_us());
            if let Ok(mut i) = inner.interface.lock() {
                *i = interface;
            }
            inner.fd.store(fd, Ordering::Relaxed);
        }
        ServerMsg::Refused { code, message } => {
            conn.close(p2p::CLOSE_NORMAL.into(), b"refused");
            return Err(ClientError::Refused {
                code: RefuseCode::from_code(code),
                message,
            });
        }
        other => {
            return Err(ClientError::Connect(format!(
                "{peer}: unexpected first message {other:?}"
            )));
        }
    }
    let (send, reader) = (opened.send, opened.reader);
    let live = Arc::new(Live::P2p {
        send: tokio::sync::Mutex::new(send),
        conn: conn.clone(),
    });
    inner.set_live(Some(live.clone()));
    Ok(tokio::spawn(p2p_session(reader, live, inner.clone())))
}

async fn p2p_session(
    mut reader: FramedReader<iroh::endpoint::RecvStream>,
    live: Arc<Live>,
    inner: Arc<Inner>,
) -> End {
    let Live::P2p { send, conn } = &*live else {
        return End::Final("not a P2P session".into());
    };
    let mut ping = tokio::time::interval(PING_EVERY);
    ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let peer = inner.peer.clone();
    loop {
        let msg = tokio::select! {
            m = reader.next(ServerMsg::decode) => m,
            _ = ping.tick() => {
                let mut out = BytesMut::new();
                ClientMsg::Ping { id: 0, client_us: local_now_us() }.encode(&mut out);
                if let Ok(mut s) = send.try_lock() {
                    let _ = s.write_all(&out).await;
                }
                continue;
            }
        };
        match msg {
            Ok(Some(ServerMsg::Frames(f))) => inner.inbox.extend(f),
            Ok(Some(ServerMsg::State(s))) => {
                inner.state.send_replace(s);
            }
            Ok(Some(ServerMsg::Dropped(n))) => {
                tracing::warn!("server dropped {n} frames: this client reads too slowly")
            }
            Ok(Some(ServerMsg::Pong {
                client_us,
                server_us,
                ..
            })) => inner.clock.add(client_us, server_us, local_now_us()),
            Ok(Some(ServerMsg::Error { count, message, .. })) => {
                inner
                    .stats
                    .refused_by_server
                    .fetch_add(u64::from(count), Ordering::Relaxed);
                tracing::warn!("{peer}: {message}");
                if let Ok(mut r) = inner.refusal.lock() {
                    *r = Some(message);
                }
            }
            Ok(Some(other)) => tracing::debug!("unexpected message {other:?}"),
            Ok(None) => return End::Lost(format!("{peer} ended the session")),
            Err(_) => {
                let e = tokio::time::timeout(Duration::from_millis(200), conn.closed()).await;
                return End::Lost(match e {
                    Ok(e) => p2p::closed_error(&peer, &e).to_string(),
                    Err(_) => format!("{peer}: stream failed"),
                });
            }
        }
    }
}

async fn supervise(inner: Arc<Inner>, mut run: Run) {
    loop {
        let end = match (&mut run).await {
            Ok(e) => e,
            Err(_) => return,
        };
        if inner.closing.load(Ordering::Relaxed) {
            return;
        }
        inner.set_live(None);
        let reason = match end {
            End::Final(r) => {
                inner.link.close(r.clone());
                inner.inbox.close(r);
                return;
            }
            End::Lost(r) => r,
        };
        if !inner.opts.reconnect.enabled || matches!(inner.addr, Address::Moq { .. }) {
            inner.link.close(reason.clone());
            inner.inbox.close(reason);
            return;
        }
        inner.link.down(reason.clone());
        let redialed = redial(
            &inner.link,
            &inner.opts.reconnect,
            &inner.clock,
            &inner.peer,
            "bus",
            &reason,
            || open_session(&inner, false),
            |e| matches!(e, ClientError::Refused { .. }),
        )
        .await;
        run = match redialed {
            Ok(r) => r,
            Err(why) => {
                inner.link.close(why.clone());
                inner.inbox.close(why);
                return;
            }
        };
        inner.link.up();
    }
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
