//! The CAN bridge server: one per interface.
//!
//! - Every client (P2P or the MoQ state track) receives every frame from the bus and every
//!   frame sent by *other* clients, with the original receive timestamp; its own frames only
//!   if it asked (`receive_own`). Per-client filters are applied here, before the network.
//! - Frames from clients go through one bounded send queue per interface (**drop-oldest**,
//!   counted): when the bus cannot keep up, the stalest commands are the ones to lose.
//! - Motor safety: with `max_cmd_age`, a command older than that when it reaches the bus is
//!   dropped and counted, never sent late. With `on_disconnect` frames, they are sent when the
//!   last controlling client goes away, or, with `deadman`, when no controlling client has
//!   sent anything for that long (the link stalled).
//! - The bus is silent unless something happens: no keep-alives are ever put on the bus.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::BytesMut;
use iroh::endpoint::Connection;
use iroh::protocol::{AcceptError, ProtocolHandler};
use tokio::sync::{mpsc, watch};
use xoq_device::DeviceError;
use xoq_device::can::{BusEvent, CanBackend, CanTx, now_us};
use xoq_transport::framed::FramedReader;
use xoq_transport::moq::{DATA_TRACK, MoqSession};
use xoq_wire::can::{
    BusState, CanFrame, ClientMsg, Filter, MAX_BATCH, ServerMsg, TimedFrame, VERSION,
    decode_track_frame, encode_track_frame, filters_accept, refuse_code,
};

use crate::queue::ItemQueue;

/// Frames buffered per client before the oldest are dropped.
pub const CLIENT_QUEUE_FRAMES: usize = 16 * 1024;
/// Frames buffered for the bus before the oldest are dropped.
pub const SEND_QUEUE_FRAMES: usize = 4096;
const HELLO_TIMEOUT: Duration = Duration::from_secs(10);

/// Who may write through MoQ's `{path}/cmd` track.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum MoqWrites {
    /// Anyone who can publish on the relay path.
    #[default]
    Open,
    /// Nobody: the MoQ side is read-only.
    Off,
    /// Only batches prefixed with this token (see docs/protocol.md). The relay operator can
    /// read it: it keeps strangers on a shared relay out, it is not end-to-end security.
    Token(String),
}

/// Counters, for logs, tests and benchmarks.
#[derive(Debug, Default)]
pub struct CanStats {
    /// Frames received from the bus.
    pub rx_frames: AtomicU64,
    /// Frames transmitted on the bus.
    pub tx_frames: AtomicU64,
    /// Commands dropped because they were older than `max_cmd_age`.
    pub stale_dropped: AtomicU64,
    /// Commands dropped because the send queue was full.
    pub queue_dropped: AtomicU64,
    /// Times the on-disconnect frames were sent.
    pub safety_trips: AtomicU64,
    /// MoQ command batches refused (writes off, bad token, undecodable).
    pub moq_refused: AtomicU64,
    /// Transmit errors from the device.
    pub tx_errors: AtomicU64,
}

/// Configures a [`CanServer`].
#[must_use]
pub struct CanServerBuilder {
    backend: Box<dyn CanBackend>,
    on_disconnect: Vec<CanFrame>,
    deadman: Option<Duration>,
    max_cmd_age: Option<Duration>,
    moq_writes: MoqWrites,
}

impl CanServerBuilder {
    /// Frames to send when the last controlling client leaves or the deadman trips (e.g.
    /// Damiao "disable" for every motor).
    pub fn on_disconnect(mut self, frames: Vec<CanFrame>) -> Self {
        self.on_disconnect = frames;
        self
    }

    /// Send the on-disconnect frames when no controlling client has sent a frame for this long.
    pub fn deadman(mut self, d: Option<Duration>) -> Self {
        self.deadman = d;
        self
    }

    /// Drop commands older than this when they reach the bus.
    pub fn max_cmd_age(mut self, d: Option<Duration>) -> Self {
        self.max_cmd_age = d;
        self
    }

    /// Policy for MoQ writes.
    pub fn moq_writes(mut self, w: MoqWrites) -> Self {
        self.moq_writes = w;
        self
    }

    /// Open the interface and start serving it.
    pub async fn start(self) -> Result<CanServer, DeviceError> {
        let open = self.backend.open()?;
        let (state_tx, _) = watch::channel(BusState::ErrorActive);
        let shared = Arc::new(Shared {
            name: self.backend.name().to_string(),
            fd: open.fd,
            sinks: Mutex::new(Vec::new()),
            send_queue: ItemQueue::new(SEND_QUEUE_FRAMES),
            next_id: AtomicU64::new(1),
            stats: CanStats::default(),
            state: state_tx,
            safety: Mutex::new(Safety::default()),
            on_disconnect: self.on_disconnect,
            deadman: self.deadman,
            max_cmd_age: self.max_cmd_age,
            moq_writes: self.moq_writes,
        });
        let mut tasks = Vec::new();
        tasks.push(tokio::spawn(rx_task(shared.clone(), open.rx)));
        tasks.push(tokio::spawn(tx_task(shared.clone(), open.tx)));
        if shared.deadman.is_some() && !shared.on_disconnect.is_empty() {
            tasks.push(tokio::spawn(deadman_task(shared.clone())));
        }
        Ok(CanServer {
            shared,
            _tasks: Arc::new(Tasks(tasks)),
        })
    }
}

struct Tasks(Vec<tokio::task::JoinHandle<()>>);
impl Drop for Tasks {
    fn drop(&mut self) {
        for t in &self.0 {
            t.abort();
        }
    }
}

/// A served CAN interface. Cheap to clone.
#[derive(Clone)]
pub struct CanServer {
    shared: Arc<Shared>,
    _tasks: Arc<Tasks>,
}

impl std::fmt::Debug for CanServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CanServer")
            .field("interface", &self.shared.name)
            .finish()
    }
}

struct Sink {
    id: u64,
    queue: Arc<ItemQueue<TimedFrame>>,
    receive_own: bool,
    filters: Arc<Mutex<Vec<Filter>>>,
}

/// One frame waiting for the bus.
struct Pending {
    frame: CanFrame,
    /// Client's send time (µs since the epoch), 0 if unknown.
    sent_us: u64,
    enqueued: Instant,
    origin: u64,
}

#[derive(Default)]
struct Safety {
    /// Controlling clients (have sent at least one frame) and when they last did.
    controllers: Vec<(u64, Instant)>,
    /// The on-disconnect frames were sent and no command came since.
    tripped: bool,
}

struct Shared {
    name: String,
    fd: bool,
    sinks: Mutex<Vec<Sink>>,
    send_queue: ItemQueue<Pending>,
    next_id: AtomicU64,
    stats: CanStats,
    state: watch::Sender<BusState>,
    safety: Mutex<Safety>,
    on_disconnect: Vec<CanFrame>,
    deadman: Option<Duration>,
    max_cmd_age: Option<Duration>,
    moq_writes: MoqWrites,
}

impl Shared {
    fn fanout(&self, frame: &TimedFrame, origin: Option<u64>) {
        if let Ok(sinks) = self.sinks.lock() {
            for s in sinks.iter() {
                if Some(s.id) == origin && !s.receive_own {
                    continue;
                }
                let pass = s
                    .filters
                    .lock()
                    .map(|f| filters_accept(&f, &frame.frame))
                    .unwrap_or(true);
                if pass {
                    s.queue.push(frame.clone());
                }
            }
        }
    }

    fn add_sink(&self, sink: Sink) {
        if let Ok(mut s) = self.sinks.lock() {
            s.push(sink);
        }
    }

    fn remove_sink(&self, id: u64) {
        if let Ok(mut s) = self.sinks.lock() {
            s.retain(|k| {
                if k.id == id {
                    k.queue.close();
                }
                k.id != id
            });
        }
    }

    /// Queue frames from client `origin` for the bus.
    fn submit(&self, frames: Vec<TimedFrame>, origin: u64) {
        let now = Instant::now();
        if let Ok(mut s) = self.safety.lock() {
            s.tripped = false;
            match s.controllers.iter_mut().find(|(id, _)| *id == origin) {
                Some(c) => c.1 = now,
                None => s.controllers.push((origin, now)),
            }
        }
        for f in frames {
            if f.frame.fd && !self.fd {
                self.stats.tx_errors.fetch_add(1, Ordering::Relaxed);
                continue;
            }
            self.send_queue.push(Pending {
                frame: f.frame,
                sent_us: f.timestamp_us,
                enqueued: now,
                origin,
            });
        }
        let d = self.send_queue.take_dropped();
        if d > 0 {
            self.stats.queue_dropped.fetch_add(d, Ordering::Relaxed);
        }
    }

    /// A client (P2P session or MoQ writer) is gone: forget its queued commands, and if it
    /// was the last controller, make the bus safe.
    fn client_gone(&self, id: u64) {
        self.send_queue.retain(|p| p.origin != id);
        let trip = match self.safety.lock() {
            Ok(mut s) => {
                let was = s.controllers.iter().any(|(c, _)| *c == id);
                s.controllers.retain(|(c, _)| *c != id);
                was && s.controllers.is_empty()
            }
            Err(_) => false,
        };
        if trip {
            self.trip("the last controlling client disconnected");
        }
    }

    fn trip(&self, why: &str) {
        if self.on_disconnect.is_empty() {
            return;
        }
        if let Ok(mut s) = self.safety.lock() {
            if s.tripped {
                return;
            }
            s.tripped = true;
        }
        tracing::warn!(iface = %self.name, "{why}: sending {} on-disconnect frames", self.on_disconnect.len());
        self.stats.safety_trips.fetch_add(1, Ordering::Relaxed);
        // Nothing queued may reach the bus after the safety frames.
        self.send_queue.retain(|_| false);
        for f in &self.on_disconnect {
            self.send_queue.push(Pending {
                frame: f.clone(),
                sent_us: 0,
                enqueued: Instant::now(),
                origin: 0,
            });
        }
    }
}

async fn rx_task(shared: Arc<Shared>, mut rx: mpsc::Receiver<BusEvent>) {
    while let Some(ev) = rx.recv().await {
        match ev {
            BusEvent::Frame(f) => {
                shared.stats.rx_frames.fetch_add(1, Ordering::Relaxed);
                shared.fanout(&f, None);
            }
            BusEvent::State(s) => {
                tracing::warn!(iface = %shared.name, "bus state: {s:?}");
                let _ = shared.state.send(s);
            }
        }
    }
    tracing::error!(iface = %shared.name, "the CAN device stopped delivering frames");
}

async fn tx_task(shared: Arc<Shared>, mut tx: Box<dyn CanTx>) {
    let mut batch = Vec::with_capacity(256);
    while shared.send_queue.pop_batch(&mut batch, 256).await.is_some() {
        for p in batch.drain(..) {
            if let Some(max) = shared.max_cmd_age
                && p.origin != 0
            {
                // Age from the client's send time when it has one (end to end, catches
                // a stalled link delivering a burst late); else from arrival here.
                let age = if p.sent_us > 0 {
                    Duration::from_micros(now_us().saturating_sub(p.sent_us))
                } else {
                    p.enqueued.elapsed()
                };
                if age > max {
                    shared.stats.stale_dropped.fetch_add(1, Ordering::Relaxed);
                    tracing::debug!(iface = %shared.name, ?age, "dropped a stale command");
                    continue;
                }
            }
            match tx.send(&p.frame).await {
                Ok(()) => {
                    shared.stats.tx_frames.fetch_add(1, Ordering::Relaxed);
                    let t = TimedFrame {
                        frame: p.frame,
                        timestamp_us: now_us(),
                    };
                    // Other clients see it as any node on the bus would.
                    shared.fanout(&t, Some(p.origin));
                }
                Err(e) => {
                    shared.stats.tx_errors.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(iface = %shared.name, "send failed: {e}");
                }
            }
        }
    }
}

async fn deadman_task(shared: Arc<Shared>) {
    let Some(window) = shared.deadman else { return };
    // Check at a tenth of the window: trips at most 10% late, never early.
    let tick = (window / 10).max(Duration::from_millis(1));
    loop {
        tokio::time::sleep(tick).await;
        let stalled = match shared.safety.lock() {
            Ok(s) => {
                !s.tripped
                    && !s.controllers.is_empty()
                    && s.controllers.iter().all(|(_, t)| t.elapsed() > window)
            }
            Err(_) => false,
        };
        if stalled {
            shared.trip("no command from any controlling client within the deadman window");
        }
    }
}

impl CanServer {
    /// Serve `backend` (see [`xoq_device::can::backend`]).
    pub fn builder(backend: Box<dyn CanBackend>) -> CanServerBuilder {
        CanServerBuilder {
            backend,
            on_disconnect: Vec::new(),
            deadman: None,
            max_cmd_age: None,
            moq_writes: MoqWrites::Open,
        }
    }

    /// Interface name.
    pub fn interface(&self) -> &str {
        &self.shared.name
    }

    /// Counters.
    pub fn stats(&self) -> &CanStats {
        &self.shared.stats
    }

    /// Serve one P2P connection until it ends.
    pub async fn serve_connection(&self, conn: Connection) {
        let peer = conn.remote_id();
        let Ok((mut send, recv)) = conn.accept_bi().await else {
            return;
        };
        let shared = &self.shared;
        let mut reader = FramedReader::new(recv);
        let hello = tokio::time::timeout(HELLO_TIMEOUT, reader.next(ClientMsg::decode)).await;
        let (receive_own, filters) = match hello {
            Ok(Ok(Some(ClientMsg::Hello {
                version,
                interface,
                receive_own,
                filters,
                ..
            }))) => {
                if version != VERSION {
                    refuse(&mut send, refuse_code::VERSION, format!("protocol version {version} not supported (server speaks {VERSION}); upgrade the older side")).await;
                    return;
                }
                if !interface.is_empty() && interface != shared.name {
                    refuse(
                        &mut send,
                        refuse_code::INTERFACE_UNAVAILABLE,
                        format!("this endpoint serves {}, not {interface}", shared.name),
                    )
                    .await;
                    return;
                }
                (receive_own, filters)
            }
            _ => return,
        };
        let id = shared.next_id.fetch_add(1, Ordering::Relaxed);
        let queue = Arc::new(ItemQueue::new(CLIENT_QUEUE_FRAMES));
        let filters = Arc::new(Mutex::new(filters));
        shared.add_sink(Sink {
            id,
            queue: queue.clone(),
            receive_own,
            filters: filters.clone(),
        });
        let _guard = ClientGuard {
            shared: shared.clone(),
            id,
        };
        tracing::info!(%peer, iface = %shared.name, "client connected");

        let welcome = ServerMsg::Welcome {
            version: VERSION,
            interface: shared.name.clone(),
            fd: shared.fd,
        };
        let wq = queue.clone();
        let mut state_rx = shared.state.subscribe();
        let mut writer = tokio::spawn(async move {
            let mut out = BytesMut::with_capacity(64 * 1024);
            welcome.encode(&mut out);
            if *state_rx.borrow_and_update() != BusState::ErrorActive {
                ServerMsg::State(*state_rx.borrow()).encode(&mut out);
            }
            if send.write_all(&out).await.is_err() {
                return;
            }
            let mut batch = Vec::with_capacity(MAX_BATCH);
            loop {
                out.clear();
                tokio::select! {
                    r = wq.pop_batch(&mut batch, MAX_BATCH) => {
                        if r.is_none() { let _ = send.finish(); return; }
                        let dropped = wq.take_dropped();
                        if dropped > 0 {
                            ServerMsg::Dropped(dropped).encode(&mut out);
                        }
                        // Everything queued goes in one message: batching without waiting.
                        ServerMsg::Frames(std::mem::take(&mut batch)).encode(&mut out);
                    }
                    c = state_rx.changed() => {
                        if c.is_err() { return; }
                        ServerMsg::State(*state_rx.borrow_and_update()).encode(&mut out);
                    }
                }
                if send.write_all(&out).await.is_err() {
                    return;
                }
            }
        });
        loop {
            tokio::select! {
                _ = &mut writer => break,
                m = reader.next(ClientMsg::decode) => match m {
                    Ok(Some(ClientMsg::Send(frames))) => shared.submit(frames, id),
                    Ok(Some(ClientMsg::SetFilters(f))) => {
                        if let Ok(mut cur) = filters.lock() {
                            *cur = f;
                        }
                    }
                    Ok(Some(ClientMsg::Hello { .. })) => break,
                    Ok(None) => break,
                    Err(e) => {
                        tracing::info!(%peer, "client session ended: {e}");
                        break;
                    }
                },
            }
        }
        queue.close();
        let _ = tokio::time::timeout(Duration::from_millis(200), &mut writer).await;
        writer.abort();
        tracing::info!(%peer, iface = %shared.name, "client left");
    }

    /// Publish the interface's traffic on `{name}/state` and accept frames from
    /// `{name}/cmd` (track `data`, batches as in docs/protocol.md). Runs until the session ends.
    pub async fn serve_moq(
        &self,
        session: &MoqSession,
        name: &str,
    ) -> Result<(), xoq_transport::TransportError> {
        let shared = &self.shared;
        let (_bc, mut writers) = session.publish_tracks(&format!("{name}/state"), &[DATA_TRACK])?;
        let Some(mut state) = writers.pop() else {
            return Ok(());
        };
        let id = shared.next_id.fetch_add(1, Ordering::Relaxed);
        let queue = Arc::new(ItemQueue::new(CLIENT_QUEUE_FRAMES));
        shared.add_sink(Sink {
            id,
            queue: queue.clone(),
            // MoQ viewers see commands from MoQ writers too: the page that sent a command
            // wants to see it on the bus, and other viewers must see it anyway.
            receive_own: true,
            filters: Arc::new(Mutex::new(Vec::new())),
        });
        let _guard = ClientGuard {
            shared: shared.clone(),
            id,
        };
        let out = async {
            let mut batch = Vec::with_capacity(MAX_BATCH);
            let mut buf = BytesMut::new();
            while queue.pop_batch(&mut batch, MAX_BATCH).await.is_some() {
                buf.clear();
                encode_track_frame(&batch, &mut buf);
                batch.clear();
                if let Err(e) = state.write(buf.split().freeze()) {
                    tracing::warn!("MoQ state: {e}");
                }
            }
        };
        let inp = async {
            if shared.moq_writes == MoqWrites::Off {
                return std::future::pending::<()>().await;
            }
            // Every writer: `{name}/cmd` (XoQ 0.3.6 pages) and each client's `{name}/cmd/<id>`.
            let mut cmd = session.read_writers(&format!("{name}/cmd"), DATA_TRACK);
            loop {
                let Some(payload) = cmd.next().await else {
                    return;
                };
                let body = match &shared.moq_writes {
                    MoqWrites::Token(t) => match strip_token(&payload, t) {
                        Some(b) => b,
                        None => {
                            shared.stats.moq_refused.fetch_add(1, Ordering::Relaxed);
                            continue;
                        }
                    },
                    _ => &payload[..],
                };
                match decode_track_frame(body) {
                    Ok(frames) => shared.submit(frames, id),
                    Err(_) => {
                        shared.stats.moq_refused.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
        };
        tokio::select! {
            _ = out => {},
            _ = inp => {},
            _ = session.closed() => {},
        }
        Ok(())
    }
}

/// A MoQ command batch with a token is `token_len u8 | token | batch`.
fn strip_token<'a>(payload: &'a [u8], token: &str) -> Option<&'a [u8]> {
    let (&len, rest) = payload.split_first()?;
    let len = len as usize;
    if rest.len() < len || &rest[..len] != token.as_bytes() {
        return None;
    }
    Some(&rest[len..])
}

async fn refuse(send: &mut iroh::endpoint::SendStream, code: u16, message: String) {
    let mut out = BytesMut::new();
    ServerMsg::Refused { code, message }.encode(&mut out);
    let _ = send.write_all(&out).await;
    let _ = send.finish();
}

struct ClientGuard {
    shared: Arc<Shared>,
    id: u64,
}

impl Drop for ClientGuard {
    fn drop(&mut self) {
        self.shared.remove_sink(self.id);
        self.shared.client_gone(self.id);
    }
}

impl ProtocolHandler for CanServer {
    async fn accept(&self, connection: Connection) -> Result<(), AcceptError> {
        self.serve_connection(connection).await;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_prefix() {
        let mut p = vec![3u8];
        p.extend_from_slice(b"abc");
        p.extend_from_slice(&[9, 9]);
        assert_eq!(strip_token(&p, "abc"), Some(&[9u8, 9][..]));
        assert_eq!(strip_token(&p, "abd"), None);
        assert_eq!(strip_token(&[], "abc"), None);
    }
}
