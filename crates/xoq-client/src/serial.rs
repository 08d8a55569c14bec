//! Remote serial ports.
//!
//! ```no_run
//! # async fn demo() -> Result<(), xoq_client::ClientError> {
//! use xoq_client::serial::{RemoteSerial, SerialOptions};
//! let port = RemoteSerial::connect("<endpoint-id>@127.0.0.1:9000", SerialOptions::new(1_000_000)).await?;
//! port.write(b"\xff\xff\x01\x02\x01\xfb").await?;
//! let mut buf = [0u8; 64];
//! let n = port.read(&mut buf).await?;
//! # Ok(()) }
//! ```
//!
//! A port survives link blips: when the connection drops the client reconnects in the
//! background (same identity and handle, line settings re-applied), reads wait as their
//! timeout says, writes wait for the link (bounded by their timeout), and only after the
//! reconnect deadline does every call fail. [`RemoteSerial::link`] tells the state.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use tokio::sync::{oneshot, watch};
use xoq_transport::Address;
use xoq_transport::framed::FramedReader;
use xoq_transport::moq::MoqSession;
use xoq_transport::p2p;
use xoq_wire::serial::{
    ALPN, ClearBuffer, ClientMsg, Command, Event, Hello, LineSettings, Request, ServerMsg, VERSION,
};

pub use crate::observe::{Direction, ObserveOptions, SerialObservation, SerialObserver};

use crate::ClientError;
use crate::clock::{Clock, local_now_us};
use crate::conn::{Dialer, End, Run, until_link_closed};
use crate::link::{Identity, Link, LinkState, Reconnect, redial};
use crate::relay::{Handlers, RelayPeer};
use crate::rx::RxBuffer;

/// How long a control request may take before the client gives up.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// How long connecting (dial + handshake) may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(15);
/// How long `close()` waits for what was written to reach the device.
const CLOSE_DRAIN: Duration = Duration::from_secs(1);
/// Clock probes on a live session.
const PING_EVERY: Duration = Duration::from_secs(1);

/// Options for opening a remote port.
#[derive(Debug, Clone)]
#[must_use]
pub struct SerialOptions {
    settings: Option<LineSettings>,
    identity: Identity,
    offline: bool,
    client_name: String,
    reconnect: Reconnect,
    exclusive: bool,
}

impl SerialOptions {
    /// Open at `baud_rate`, 8N1, as the user's identity ([`Identity::User`]), reconnecting
    /// for up to 60 s after a drop.
    pub fn new(baud_rate: u32) -> Self {
        Self {
            settings: Some(LineSettings::new(baud_rate)),
            identity: Identity::User,
            offline: xoq_transport::offline_from_env(),
            client_name: "rust".into(),
            reconnect: Reconnect::default(),
            exclusive: false,
        }
    }

    /// Keep the port's current settings.
    pub fn keep_settings() -> Self {
        Self {
            settings: None,
            ..Self::new(115_200)
        }
    }

    /// Full line settings to apply on open.
    pub fn settings(mut self, s: LineSettings) -> Self {
        self.settings = Some(s);
        self
    }

    identity_setters!("port");

    /// Name shown in the server's logs.
    pub fn client_name(mut self, name: &str) -> Self {
        self.client_name = name.to_string();
        self
    }

    /// How the port comes back after the link drops (default: for up to 60 s).
    pub fn reconnect(mut self, r: Reconnect) -> Self {
        self.reconnect = r;
        self
    }

    /// pyserial's `exclusive`: while this handle holds the port, a new handle of the same
    /// identity is refused instead of replacing it.
    pub fn exclusive(mut self, on: bool) -> Self {
        self.exclusive = on;
        self
    }
}

/// A live P2P session.
struct P2pLive {
    send: tokio::sync::Mutex<iroh::endpoint::SendStream>,
    pending: Mutex<HashMap<u32, oneshot::Sender<Option<String>>>>,
    next_id: AtomicU32,
    /// Bytes the server lets us have in flight past its last ack.
    window: u64,
    /// Data bytes sent on this session (updated under the `send` lock).
    written: AtomicU64,
    /// Data bytes the device accepted (the server's acks).
    acked: watch::Receiver<u64>,
    conn: iroh::endpoint::Connection,
}

impl P2pLive {
    fn credit(&self) -> u64 {
        (*self.acked.borrow() + self.window).saturating_sub(self.written.load(Ordering::Relaxed))
    }
}

// One per open port and never moved on a hot path.
#[allow(clippy::large_enum_variant)]
enum Live {
    P2p(P2pLive),
    Relay(RelayPeer),
}

struct Inner {
    addr: Address,
    peer: String,
    opts: SerialOptions,
    /// Identifies this handle across its reconnections.
    handle: u64,
    rx: Arc<RxBuffer>,
    /// The settings the user wants (re-applied on every reconnect).
    settings: Mutex<Option<LineSettings>>,
    port: Mutex<String>,
    link: Link,
    clock: Clock,
    live: Mutex<Option<Arc<Live>>>,
    /// Where P2P sessions are dialled from (one endpoint, kept across reconnects).
    dialer: Dialer,
    /// `close()` was called: a session end is not a drop.
    closing: AtomicBool,
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

    fn settings(&self) -> Option<LineSettings> {
        self.settings.lock().ok().and_then(|s| *s)
    }
}

/// An open remote serial port (async). Cloning is not needed: share it with `Arc`.
pub struct RemoteSerial {
    inner: Arc<Inner>,
    supervisor: Option<tokio::task::JoinHandle<()>>,
}

impl std::fmt::Debug for RemoteSerial {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RemoteSerial")
            .field("peer", &self.inner.peer)
            .finish()
    }
}

impl Drop for RemoteSerial {
    fn drop(&mut self) {
        if let Some(s) = self.supervisor.take() {
            s.abort();
        }
        // Dropped without close(): end the session now so the server frees the port at once
        // (a garbage-collected Python handle releases its port).
        if let Some(live) = self.inner.live()
            && let Live::P2p(p) = &*live
        {
            p.conn.close(p2p::CLOSE_NORMAL.into(), b"dropped");
        }
        self.inner.set_live(None);
        self.inner.dialer.close_soon();
    }
}

impl RemoteSerial {
    /// Connect to a remote port by address (`<id>@ip:port`, `<id>`, or `<relay-url>/<path>`).
    pub async fn connect(address: &str, opts: SerialOptions) -> Result<Self, ClientError> {
        let addr: Address = address.parse().map_err(ClientError::from)?;
        let peer = addr.to_string();
        let inner = Arc::new(Inner {
            peer: peer.clone(),
            handle: rand::random(),
            rx: Arc::new(RxBuffer::default()),
            settings: Mutex::new(opts.settings),
            port: Mutex::new(String::new()),
            link: Link::connecting(),
            clock: Clock::new(),
            live: Mutex::new(None),
            dialer: Dialer::new(addr.clone(), opts.identity.clone(), opts.offline),
            closing: AtomicBool::new(false),
            opts,
            addr,
        });
        let first = tokio::time::timeout(CONNECT_TIMEOUT, open_session(&inner, true)).await;
        let run = match first {
            Ok(Ok(run)) => run,
            Ok(Err(e)) => return Err(e),
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

    /// Name of the remote port (device path or `sim:...`).
    pub fn port_name(&self) -> String {
        self.inner
            .port
            .lock()
            .map(|p| p.clone())
            .unwrap_or_default()
    }

    /// Current line settings, as confirmed by the server (`None` over a relay).
    pub fn settings(&self) -> Option<LineSettings> {
        if self.via_relay() {
            return None;
        }
        self.inner.settings()
    }

    /// Whether the port is reached through a relay (data only).
    pub fn via_relay(&self) -> bool {
        matches!(self.inner.addr, Address::Moq { .. })
    }

    /// The receive buffer (for blocking readers and `in_waiting`).
    pub fn rx(&self) -> &Arc<RxBuffer> {
        &self.inner.rx
    }

    /// The link's state and counters (reconnects, time spent down).
    pub fn link(&self) -> &Link {
        &self.inner.link
    }

    /// The estimate of the server's (robot's) clock.
    pub fn clock(&self) -> &Clock {
        &self.inner.clock
    }

    /// Write all of `data` to the remote port. Waits while the device does not accept more
    /// (flow control) and while the link is down (until the reconnect deadline).
    pub async fn write(&self, data: &[u8]) -> Result<(), ClientError> {
        let mut done = 0;
        while done < data.len() {
            done += self.send_some(&data[done..], None).await?;
        }
        Ok(())
    }

    /// Write with pyserial's `write_timeout` semantics: `None` waits as long as it takes;
    /// `Some(t)` fails with [`ClientError::Timeout`] unless the device accepted every byte
    /// within `t` (a local `write()` returns once the driver has them); `Some(ZERO)` sends
    /// what can go at once and returns how many bytes that was.
    pub async fn write_timeout(
        &self,
        data: &[u8],
        timeout: Option<Duration>,
    ) -> Result<usize, ClientError> {
        let Some(t) = timeout else {
            self.write(data).await?;
            return Ok(data.len());
        };
        if t.is_zero() {
            return self.send_some(data, Some(Duration::ZERO)).await;
        }
        let deadline = tokio::time::Instant::now() + t;
        let mut done = 0;
        while done < data.len() {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            if left.is_zero() {
                return Err(ClientError::Timeout(t));
            }
            done += self.send_some(&data[done..], Some(left)).await?;
        }
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        if !self.wait_accepted(left).await? {
            return Err(ClientError::Timeout(t));
        }
        Ok(done)
    }

    /// Hand as much of `data` to the link as the device's window allows, waiting up to
    /// `wait` (`None`: as long as it takes) for the link and for room; the bytes sent (0 when
    /// nothing could go in time). The building block of pyserial-style writes.
    pub async fn send_some(
        &self,
        data: &[u8],
        wait: Option<Duration>,
    ) -> Result<usize, ClientError> {
        if data.is_empty() {
            return Ok(0);
        }
        let deadline = wait.map(|w| tokio::time::Instant::now() + w);
        let nonblocking = wait.is_some_and(|w| w.is_zero());
        loop {
            let live = match self.wait_live(deadline, nonblocking).await {
                Ok(Some(l)) => l,
                // The link did not come back in time: nothing sent (yet).
                Ok(None) | Err(ClientError::Timeout(_)) => return Ok(0),
                Err(e) => return Err(e),
            };
            match &*live {
                Live::P2p(p) => {
                    let credit = p.credit();
                    if credit == 0 {
                        if nonblocking {
                            return Ok(0);
                        }
                        let mut acked = p.acked.clone();
                        let room =
                            acked.wait_for(|a| *a + p.window > p.written.load(Ordering::Relaxed));
                        let ended = match deadline {
                            Some(d) => match tokio::time::timeout_at(d, room).await {
                                Ok(r) => r.is_err(),
                                Err(_) => return Ok(0),
                            },
                            None => room.await.is_err(),
                        };
                        if ended {
                            // The session ended; the next round waits for the new one.
                            tokio::task::yield_now().await;
                        }
                        continue;
                    }
                    let n = (credit as usize).min(data.len());
                    let mut out = BytesMut::with_capacity(n + 16);
                    for m in ClientMsg::data_chunks(Bytes::copy_from_slice(&data[..n])) {
                        m.encode(&mut out);
                    }
                    let mut send = p.send.lock().await;
                    if send.write_all(&out).await.is_err() {
                        // The supervisor notices the end; bytes written into a dead session
                        // are lost like bytes on a line that glitched.
                        drop(send);
                        tokio::task::yield_now().await;
                        continue;
                    }
                    p.written.fetch_add(n as u64, Ordering::Relaxed);
                    return Ok(n);
                }
                Live::Relay(r) => {
                    for chunk in data.chunks(xoq_wire::serial::MAX_DATA_CHUNK) {
                        r.write_data(chunk)?;
                    }
                    return Ok(data.len());
                }
            }
        }
    }

    /// Wait up to `wait` until the device accepted everything written on the current
    /// session (always true over a relay, which has no acknowledgements).
    pub async fn wait_accepted(&self, wait: Duration) -> Result<bool, ClientError> {
        let Some(live) = self.inner.live() else {
            return Ok(false);
        };
        let Live::P2p(p) = &*live else {
            return Ok(true);
        };
        let mut acked = p.acked.clone();
        let target = p.written.load(Ordering::Relaxed);
        match tokio::time::timeout(wait, acked.wait_for(|a| *a >= target)).await {
            Ok(Ok(_)) => Ok(true),
            Ok(Err(_)) => Err(self.closed_or_down()),
            Err(_) => Ok(false),
        }
    }

    fn closed_or_down(&self) -> ClientError {
        self.inner
            .link
            .unavailable()
            .unwrap_or_else(|| ClientError::Closed("the session ended".into()))
    }

    /// The live session, waiting for the link until `deadline` (`None` when non-blocking and
    /// the link is down).
    async fn wait_live(
        &self,
        deadline: Option<tokio::time::Instant>,
        nonblocking: bool,
    ) -> Result<Option<Arc<Live>>, ClientError> {
        loop {
            if let LinkState::Closed(r) = self.inner.link.state() {
                return Err(ClientError::Closed(r));
            }
            if self.inner.link.is_up()
                && let Some(l) = self.inner.live()
            {
                return Ok(Some(l));
            }
            if nonblocking {
                return Ok(None);
            }
            let limit = deadline.map(|d| d.saturating_duration_since(tokio::time::Instant::now()));
            self.inner.link.wait_up(limit).await?;
            // Up, but the session may still be being installed: look again.
            tokio::task::yield_now().await;
        }
    }

    /// Read at least one byte (waits), at most `buf.len()`.
    pub async fn read(&self, buf: &mut [u8]) -> Result<usize, ClientError> {
        self.inner.rx.read(buf).await.map_err(ClientError::Closed)
    }

    /// Bytes ready to read without waiting.
    pub fn available(&self) -> usize {
        self.inner.rx.available()
    }

    async fn request(&self, command: Command) -> Result<(), ClientError> {
        if self.via_relay() {
            return Err(ClientError::Unsupported(format!(
                "{command:?} is not available through a relay (the relay carries data only); connect P2P to change line settings or modem lines"
            )));
        }
        let deadline = tokio::time::Instant::now() + REQUEST_TIMEOUT;
        let Some(live) = self.wait_live(Some(deadline), false).await? else {
            return Err(ClientError::Timeout(REQUEST_TIMEOUT));
        };
        let Live::P2p(p) = &*live else {
            return Err(ClientError::Unsupported("not a P2P session".into()));
        };
        let id = p.next_id.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        if let Ok(mut m) = p.pending.lock() {
            m.insert(id, tx);
        }
        let mut out = BytesMut::new();
        ClientMsg::Request(Request { id, command }).encode(&mut out);
        let sent = p.send.lock().await.write_all(&out).await;
        if sent.is_err() {
            return Err(self.closed_or_down());
        }
        match tokio::time::timeout_at(deadline, rx).await {
            Ok(Ok(None)) => Ok(()),
            Ok(Ok(Some(e))) => Err(ClientError::Device(e)),
            Ok(Err(_)) => Err(self.closed_or_down()),
            Err(_) => {
                if let Ok(mut m) = p.pending.lock() {
                    m.remove(&id);
                }
                Err(ClientError::Timeout(REQUEST_TIMEOUT))
            }
        }
    }

    /// Change line settings on the real port (baud rate, framing, flow control). They are
    /// also re-applied after every reconnect.
    pub async fn set_settings(&self, s: LineSettings) -> Result<(), ClientError> {
        let previous = self.inner.settings();
        if let Ok(mut cur) = self.inner.settings.lock() {
            *cur = Some(s);
        }
        match self.request(Command::SetSettings(s)).await {
            Ok(()) => Ok(()),
            // The link dropped on the way: the reconnect applies them.
            Err(ClientError::LinkDown(_)) => Ok(()),
            Err(e) => {
                if let Ok(mut cur) = self.inner.settings.lock() {
                    *cur = previous;
                }
                Err(e)
            }
        }
    }

    /// Change only the baud rate.
    pub async fn set_baud_rate(&self, baud: u32) -> Result<(), ClientError> {
        let mut s = self.inner.settings().unwrap_or(LineSettings::new(baud));
        s.baud_rate = baud;
        self.set_settings(s).await
    }

    /// Set DTR (fails on devices without modem lines, such as ptys).
    pub async fn set_dtr(&self, on: bool) -> Result<(), ClientError> {
        self.request(Command::SetDtr(on)).await
    }

    /// Set RTS.
    pub async fn set_rts(&self, on: bool) -> Result<(), ClientError> {
        self.request(Command::SetRts(on)).await
    }

    /// Hold a break for `duration`.
    pub async fn send_break(&self, duration: Duration) -> Result<(), ClientError> {
        self.request(Command::Break(duration.as_millis().min(10_000) as u32))
            .await
    }

    /// Discard buffered bytes locally and on the server/device. Never waits behind data the
    /// device does not accept.
    pub async fn clear(&self, which: ClearBuffer) -> Result<(), ClientError> {
        let input = matches!(which, ClearBuffer::Input | ClearBuffer::All);
        if input {
            self.inner.rx.clear();
        }
        if self.via_relay() {
            // Over a relay only the local buffer exists.
            return Ok(());
        }
        self.request(Command::Clear(which)).await?;
        // The reply travels on the same ordered stream as the data: whatever arrived before
        // it was read from the device before the clear, so it goes too.
        if input {
            self.inner.rx.clear();
        }
        Ok(())
    }

    /// Wait until everything written so far has been transmitted by the remote device.
    pub async fn drain(&self) -> Result<(), ClientError> {
        if self.via_relay() {
            return Ok(());
        }
        self.request(Command::Drain).await
    }

    /// Close the session gracefully: what was written reaches the device first (at most 1 s).
    pub async fn close(mut self) {
        self.inner.closing.store(true, Ordering::Relaxed);
        let live = self.inner.live();
        match live.as_deref() {
            Some(Live::P2p(p)) => {
                let _ = p.send.lock().await.finish();
                // The server finishes its side once the device took what we sent.
                let _ = tokio::time::timeout(CLOSE_DRAIN + Duration::from_millis(500), async {
                    if let Some(s) = self.supervisor.as_mut() {
                        let _ = s.await;
                    }
                })
                .await;
                p.conn.close(p2p::CLOSE_NORMAL.into(), b"bye");
            }
            Some(Live::Relay(_)) | None => {}
        }
        if let Some(s) = self.supervisor.take() {
            s.abort();
        }
        self.inner.set_live(None);
        if let Some(Ok(Live::Relay(r))) = live.map(Arc::try_unwrap) {
            r.close().await;
        }
        self.inner.link.close("the port was closed");
        self.inner.rx.close("the port was closed".into());
        self.inner.dialer.close().await;
    }
}

/// A session being served: resolves when it ends.
/// Open one session (P2P dial + handshake, or the relay peer) and start serving it.
async fn open_session(inner: &Arc<Inner>, first: bool) -> Result<Run, ClientError> {
    match &inner.addr {
        Address::P2p { .. } | Address::Service { .. } => open_p2p(inner, first).await,
        Address::Moq { relay, name } => {
            // The relay session redials by itself; this runs once per client.
            let session = MoqSession::connect(relay, inner.opts.reconnect.redial()).await?;
            let rx = inner.rx.clone();
            let handlers = Handlers {
                data: Box::new(move |b| rx.push(&b)),
                notice: Box::new(|m| tracing::info!("remote port: {m:?}")),
            };
            let peer = RelayPeer::open(
                session,
                name,
                ("c2s", "s2c"),
                handlers,
                inner.link.clone(),
                inner.clock.clone(),
                || format!(
                    "no serial server publishes {name} on {relay}: start one with `xoq serial-server ... --relay {relay} --moq <path>`"
                ),
            )
            .await?;
            if let Ok(mut p) = inner.port.lock() {
                *p = name.clone();
            }
            inner.set_live(Some(Arc::new(Live::Relay(peer))));
            // The relay peer keeps itself in sync; the run ends when its link closes.
            Ok(until_link_closed(inner.link.clone()))
        }
    }
}

async fn open_p2p(inner: &Arc<Inner>, first: bool) -> Result<Run, ClientError> {
    let peer = &inner.peer;
    let mut hello = BytesMut::new();
    ClientMsg::Hello(Hello {
        version: VERSION,
        settings: inner.settings(),
        client: inner.opts.client_name.clone(),
        handle: inner.handle,
        exclusive: inner.opts.exclusive,
    })
    .encode(&mut hello);
    let opened = inner
        .dialer
        .open(ALPN, &hello, ServerMsg::decode, first)
        .await?;
    let (conn, send, reader, t0) = (opened.conn, opened.send, opened.reader, opened.t0);
    let welcome = match opened.first {
        ServerMsg::Welcome(w) => w,
        ServerMsg::Refused { code, message } => {
            conn.close(p2p::CLOSE_NORMAL.into(), b"refused");
            return Err(ClientError::Refused { code, message });
        }
        other => {
            return Err(ClientError::Connect(format!(
                "{peer}: unexpected first message {other:?}"
            )));
        }
    };
    if welcome.version != VERSION {
        conn.close(p2p::CLOSE_NORMAL.into(), b"version");
        return Err(ClientError::Connect(format!(
            "{peer} speaks serial protocol version {} and this client {VERSION}: upgrade the older side",
            welcome.version
        )));
    }
    inner.clock.hint(t0, welcome.server_us, local_now_us());
    if let Ok(mut p) = inner.port.lock() {
        *p = welcome.port.clone();
    }
    if let Ok(mut s) = inner.settings.lock() {
        *s = Some(welcome.settings);
    }
    let (acked_tx, acked) = watch::channel(0u64);
    let live = Arc::new(Live::P2p(P2pLive {
        send: tokio::sync::Mutex::new(send),
        pending: Mutex::new(HashMap::new()),
        next_id: AtomicU32::new(1),
        window: u64::from(welcome.window.max(1)),
        written: AtomicU64::new(0),
        acked,
        conn: conn.clone(),
    }));
    inner.set_live(Some(live.clone()));
    Ok(tokio::spawn(p2p_session(
        reader,
        live,
        acked_tx,
        inner.clone(),
    )))
}

async fn p2p_session(
    mut reader: FramedReader<iroh::endpoint::RecvStream>,
    live: Arc<Live>,
    acked: watch::Sender<u64>,
    inner: Arc<Inner>,
) -> End {
    let Live::P2p(p) = &*live else {
        return End::Final("not a P2P session".into());
    };
    let mut ping = tokio::time::interval(PING_EVERY);
    ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let peer = inner.peer.clone();
    let end = loop {
        let msg = tokio::select! {
            m = reader.next(ServerMsg::decode) => m,
            _ = ping.tick() => {
                let mut out = BytesMut::new();
                ClientMsg::Ping { id: 0, client_us: local_now_us() }.encode(&mut out);
                // Never wait on a stalled stream for a probe.
                if let Ok(mut s) = p.send.try_lock() {
                    let _ = s.write_all(&out).await;
                }
                continue;
            }
        };
        match msg {
            Ok(Some(ServerMsg::Data(d))) => inner.rx.push(&d),
            Ok(Some(ServerMsg::Ack(n))) => {
                acked.send_if_modified(|v| {
                    let grew = n > *v;
                    *v = (*v).max(n);
                    grew
                });
            }
            Ok(Some(ServerMsg::Reply(r))) => {
                let tx = p.pending.lock().ok().and_then(|mut m| m.remove(&r.id));
                if let Some(tx) = tx {
                    let _ = tx.send(r.error);
                }
            }
            Ok(Some(ServerMsg::Pong {
                client_us,
                server_us,
                ..
            })) => inner.clock.add(client_us, server_us, local_now_us()),
            Ok(Some(ServerMsg::Event(e))) => match e {
                Event::Dropped(n) => {
                    tracing::warn!("server dropped {n} bytes: the client reads too slowly")
                }
                Event::DeviceLost(r) => tracing::warn!("remote device lost: {r}"),
                Event::DeviceRestored => tracing::info!("remote device is back"),
                Event::TakenOver(by) => break End::Final(format!("{by}; this session ended")),
                other => tracing::debug!("event {other:?}"),
            },
            Ok(Some(other)) => tracing::debug!("unexpected message {other:?}"),
            Ok(None) => break End::Lost(format!("{peer} ended the session")),
            Err(_) => {
                let e = tokio::time::timeout(Duration::from_millis(200), p.conn.closed()).await;
                break End::Lost(match e {
                    Ok(e) => p2p::closed_error(&peer, &e).to_string(),
                    Err(_) => format!("{peer}: stream failed"),
                });
            }
        }
    };
    if let Ok(mut m) = p.pending.lock() {
        m.clear();
    }
    end
}

/// Keep the port connected: when a session ends, reconnect with back-off until the
/// deadline, then close the port for good.
async fn supervise(inner: Arc<Inner>, mut run: Run) {
    loop {
        let end = match (&mut run).await {
            Ok(e) => e,
            Err(_) => return,
        };
        if inner.closing.load(Ordering::Relaxed) {
            return;
        }
        let reason = match end {
            End::Final(r) => {
                inner.set_live(None);
                inner.link.close(r.clone());
                inner.rx.close(r);
                return;
            }
            End::Lost(r) => r,
        };
        inner.set_live(None);
        if !inner.opts.reconnect.enabled || matches!(inner.addr, Address::Moq { .. }) {
            inner.link.close(reason.clone());
            inner.rx.close(reason);
            return;
        }
        inner.link.down(reason.clone());
        let redialed = redial(
            &inner.link,
            &inner.opts.reconnect,
            &inner.clock,
            &inner.peer,
            "port",
            &reason,
            || open_session(&inner, false),
            // Busy: the server has not noticed yet that our old session is gone.
            |e| matches!(e, ClientError::Refused { .. }) && !is_busy(e),
        )
        .await;
        run = match redialed {
            Ok(r) => r,
            Err(why) => {
                inner.link.close(why.clone());
                inner.rx.close(why);
                return;
            }
        };
        inner.link.up();
    }
}

fn is_busy(e: &ClientError) -> bool {
    matches!(
        e,
        ClientError::Refused {
            code: xoq_wire::RefuseCode::Busy,
            ..
        }
    )
}

/// A remote port for synchronous code: `std::io::Read`/`Write` with pyserial-style timeouts.
/// Owns a small runtime for the network task.
pub struct BlockingSerial {
    inner: Option<Arc<RemoteSerial>>,
    rt: tokio::runtime::Runtime,
    /// Read timeout: `None` blocks until at least one byte, `Some(ZERO)` never waits.
    pub read_timeout: Option<Duration>,
}

impl std::fmt::Debug for BlockingSerial {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BlockingSerial")
            .field("port", &self.inner)
            .finish()
    }
}

impl BlockingSerial {
    /// Connect (see [`RemoteSerial::connect`]).
    pub fn connect(address: &str, opts: SerialOptions) -> Result<Self, ClientError> {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("xoq-net")
            .enable_all()
            .build()
            .map_err(|e| ClientError::Connect(format!("cannot start runtime: {e}")))?;
        let inner = rt.block_on(RemoteSerial::connect(address, opts))?;
        Ok(Self {
            inner: Some(Arc::new(inner)),
            rt,
            read_timeout: None,
        })
    }

    fn port(&self) -> Result<&Arc<RemoteSerial>, ClientError> {
        self.inner
            .as_ref()
            .ok_or_else(|| ClientError::Closed("port is closed".into()))
    }

    /// The async port.
    pub fn remote(&self) -> Result<&Arc<RemoteSerial>, ClientError> {
        self.port()
    }

    /// Run an async operation on the port from synchronous code.
    pub fn block_on<F: std::future::Future>(&self, f: F) -> F::Output {
        self.rt.block_on(f)
    }

    /// Read with an explicit timeout (`None` = wait for at least one byte).
    pub fn read_timeout(
        &self,
        buf: &mut [u8],
        timeout: Option<Duration>,
    ) -> Result<usize, ClientError> {
        self.port()?
            .rx()
            .read_blocking(buf, timeout)
            .map_err(ClientError::Closed)
    }

    /// Write everything.
    pub fn write_all_blocking(&self, data: &[u8]) -> Result<(), ClientError> {
        let p = self.port()?.clone();
        self.rt.block_on(async move { p.write(data).await })
    }

    /// Close the session.
    pub fn close(&mut self) {
        if let Some(p) = self.inner.take()
            && let Ok(p) = Arc::try_unwrap(p)
        {
            self.rt.block_on(p.close());
        }
    }
}

impl Drop for BlockingSerial {
    fn drop(&mut self) {
        self.close();
    }
}

fn io_err(e: ClientError) -> std::io::Error {
    let kind = match e {
        ClientError::Timeout(_) => std::io::ErrorKind::TimedOut,
        ClientError::Closed(_) | ClientError::LinkDown(_) => std::io::ErrorKind::BrokenPipe,
        ClientError::Unsupported(_) => std::io::ErrorKind::Unsupported,
        _ => std::io::ErrorKind::Other,
    };
    std::io::Error::new(kind, e)
}

impl std::io::Read for BlockingSerial {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.read_timeout(buf, self.read_timeout).map_err(io_err)?;
        if n == 0 && !buf.is_empty() && self.read_timeout != Some(Duration::ZERO) {
            return Err(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                "read timed out",
            ));
        }
        Ok(n)
    }
}

impl std::io::Write for BlockingSerial {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.write_all_blocking(buf).map_err(io_err)?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        let p = self.port().map_err(io_err)?.clone();
        self.rt
            .block_on(async move { p.drain().await })
            .map_err(io_err)
    }
}
