//! The CAN bridge server: one per interface.
//!
//! - Every client (P2P or the relay's state track) receives every frame from the bus and every
//!   frame sent by *other* clients, with the original receive timestamp; its own frames only
//!   if it asked (`receive_own`). Per-client filters are applied here, before the network.
//! - Frames from clients go through one bounded send queue per interface (**drop-oldest**,
//!   counted): when the bus cannot keep up, the stalest commands are the ones to lose.
//! - Motor safety ([`crate::safety`]): every P2P session and every relay writer is a
//!   controller; the on-disconnect frames go out when the last one leaves, when all are
//!   silent for the deadman window, and when the server stops. Commands are judged on the
//!   robot's clock (clients stamp them with their estimate of it): too old or dated in the
//!   future is dropped with `max_cmd_age`, and after a trip nothing sent before the link
//!   recovered reaches the bus. Safety frames jump the queue, also while the bus is busy.
//! - Relay writes are off unless the server is told otherwise: the relay side is read-only.
//! - The bus is silent unless something happens: no keep-alives are ever put on the bus.
//! - Observers (ALPN [`observe::CAN_ALPN`]) see every frame received from the bus and every
//!   frame transmitted on it (clients' commands and the server's safety frames), each with its
//!   capture time, through a drop-oldest queue filled without waiting. They never send (the
//!   server reads nothing but a ping from them) and are never controllers: they neither keep
//!   the on-disconnect frames from going out nor feed the deadman.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::BytesMut;
use iroh::endpoint::Connection;
use iroh::protocol::{AcceptError, ProtocolHandler};
use tokio::sync::{Notify, mpsc, watch};
use xoq_device::DeviceError;
use xoq_device::can::{BusEvent, CanBackend, CanTx, now_us};
use xoq_transport::framed::FramedReader;
use xoq_transport::moq::MoqSession;
use xoq_wire::can::{
    BusState, CanFrame, ClientMsg, Filter, MAX_BATCH, RefuseCode, ServerMsg, TimedFrame, VERSION,
    decode_track_frame, encode_track_frame, filters_accept,
};
use xoq_wire::observe::{self, Direction};
use xoq_wire::relay::Ctl;

use crate::ServerError;
use crate::queue::Queue;
use crate::relay::{BridgeConfig, BridgeEvent, RelayBridge};
use crate::safety::{Action, ControllerId, Drop as Dropped, Safety};

/// Frames buffered per client before the oldest are dropped.
pub const CLIENT_QUEUE_FRAMES: usize = 16 * 1024;
/// Frames buffered for the bus before the oldest are dropped.
pub const SEND_QUEUE_FRAMES: usize = 4096;
/// Frames (both directions) queued per observer before the oldest are dropped.
pub const OBSERVER_QUEUE_FRAMES: usize = 16 * 1024;
/// How long a stopping server keeps its relay broadcast up after `Ctl::Bye`, so the goodbye
/// reaches the clients before the broadcast is retracted.
const BYE_GRACE: Duration = Duration::from_millis(200);
const HELLO_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a client that closes cleanly waits for its queued frames to reach the bus.
const CLOSE_DRAIN: Duration = Duration::from_secs(1);
/// How long a stopping server waits for its safety frames to reach the bus.
pub const STOP_DRAIN: Duration = Duration::from_millis(500);
/// Origin of frames the server sends itself (safety frames).
const SERVER: ControllerId = 0;

/// Counters, for logs, tests and benchmarks.
#[derive(Debug, Default)]
pub struct CanStats {
    /// Frames received from the bus.
    pub rx_frames: AtomicU64,
    /// Frames transmitted on the bus.
    pub tx_frames: AtomicU64,
    /// Commands dropped because they were older than `max_cmd_age`.
    pub stale_dropped: AtomicU64,
    /// Commands dropped because they were dated further in the future than `max_cmd_age`.
    pub future_dropped: AtomicU64,
    /// Commands dropped after a safety trip (sent before the link recovered).
    pub after_trip_dropped: AtomicU64,
    /// Commands dropped because the send queue was full.
    pub queue_dropped: AtomicU64,
    /// Times the on-disconnect frames were sent.
    pub safety_trips: AtomicU64,
    /// Safety frames transmitted.
    pub safety_sent: AtomicU64,
    /// Relay command batches that did not decode.
    pub moq_malformed: AtomicU64,
    /// CAN FD frames refused on a classic interface.
    pub fd_refused: AtomicU64,
    /// Small FD frames (≤ 8 bytes, no BRS) sent as classic frames on a classic interface.
    pub fd_as_classic: AtomicU64,
    /// Times the controller could not take a frame (no ACK on the bus) and the send was
    /// retried after a back-off.
    pub tx_busy: AtomicU64,
    /// Transmit errors from the device (the frame was lost).
    pub tx_errors: AtomicU64,
}

/// Configures a [`CanServer`].
#[must_use]
pub struct CanServerBuilder {
    backend: Box<dyn CanBackend>,
    on_disconnect: Vec<CanFrame>,
    deadman: Option<Duration>,
    max_cmd_age: Option<Duration>,
    relay_writes: bool,
}

impl CanServerBuilder {
    /// Frames to send when the last controlling client leaves, when the deadman trips and
    /// when the server stops (e.g. Damiao "disable" for every motor).
    pub fn on_disconnect(mut self, frames: Vec<CanFrame>) -> Self {
        self.on_disconnect = frames;
        self
    }

    /// Send the on-disconnect frames when no controlling client has sent a command for this
    /// long. Needs [`on_disconnect`](Self::on_disconnect) frames ([`start`](Self::start)
    /// refuses a deadman with nothing to send).
    pub fn deadman(mut self, d: Option<Duration>) -> Self {
        self.deadman = d;
        self
    }

    /// Drop commands older than this when they reach the bus, and commands dated more than
    /// this in the future.
    pub fn max_cmd_age(mut self, d: Option<Duration>) -> Self {
        self.max_cmd_age = d;
        self
    }

    /// Accept commands from relay writers (default: no, the relay side is read-only).
    pub fn relay_writes(mut self, on: bool) -> Self {
        self.relay_writes = on;
        self
    }

    /// Open the interface and start serving it.
    pub async fn start(self) -> Result<CanServer, ServerError> {
        if self.deadman.is_some() && self.on_disconnect.is_empty() {
            return Err(ServerError::Config(
                "a deadman needs on-disconnect frames: give --on-disconnect <file> with the frames to send when it trips".into(),
            ));
        }
        let open = self.backend.open()?;
        let (state_tx, _) = watch::channel(BusState::ErrorActive);
        let shared = Arc::new(Shared {
            name: self.backend.name().to_string(),
            fd: open.fd,
            sinks: Mutex::new(Vec::new()),
            observers: Mutex::new(Vec::new()),
            send_queue: Queue::items(SEND_QUEUE_FRAMES),
            next_id: AtomicU64::new(1),
            stats: CanStats::default(),
            state: state_tx,
            safety: Mutex::new(Safety::new(
                !self.on_disconnect.is_empty(),
                self.max_cmd_age,
                self.deadman,
            )),
            trips: AtomicU64::new(0),
            tx_progress: Notify::new(),
            on_disconnect: self.on_disconnect,
            deadman: self.deadman,
            relay_writes: self.relay_writes,
            relay_stats: Arc::default(),
        });
        let mut tasks = Vec::new();
        tasks.push(tokio::spawn(rx_task(shared.clone(), open.rx)));
        tasks.push(tokio::spawn(tx_task(shared.clone(), open.tx)));
        if !shared.on_disconnect.is_empty() {
            tasks.push(tokio::spawn(deadman_task(shared.clone())));
        }
        Ok(CanServer {
            shared,
            _tasks: Arc::new(crate::session::Tasks(tasks)),
        })
    }
}

/// A served CAN interface. Cheap to clone.
#[derive(Clone)]
pub struct CanServer {
    shared: Arc<Shared>,
    _tasks: Arc<crate::session::Tasks>,
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
    queue: Arc<Queue<TimedFrame>>,
    receive_own: bool,
    filters: Arc<Mutex<Vec<Filter>>>,
}

/// An observer's frames, each with the way it went.
type ObserverQueue = Queue<(Direction, TimedFrame)>;

/// One frame waiting for the bus.
struct Pending {
    frame: CanFrame,
    /// Client's send time (µs since the epoch on the robot's clock), 0 if unknown.
    sent_us: u64,
    /// When it arrived here (robot clock, µs): the age of a frame without a send time.
    arrived_us: u64,
    origin: ControllerId,
    /// The trip count when it was queued: a later trip supersedes it.
    trips: u64,
}

/// Frames of one submission that were not queued, for the client's notice.
#[derive(Debug, Default)]
struct Refusals {
    fd: u32,
}

struct Shared {
    name: String,
    fd: bool,
    sinks: Mutex<Vec<Sink>>,
    /// Observers' queues, filled without waiting.
    observers: Mutex<Vec<(u64, Arc<ObserverQueue>)>>,
    send_queue: Queue<Pending>,
    next_id: AtomicU64,
    stats: CanStats,
    state: watch::Sender<BusState>,
    safety: Mutex<Safety>,
    /// Incremented at every trip (under the safety lock, like every push of a command):
    /// a command queued before a trip never goes out after its safety frames, also when it
    /// was already taken off the queue or is being retried on a busy bus.
    trips: AtomicU64,
    /// Woken whenever the transmit task takes frames off the queue.
    tx_progress: Notify,
    on_disconnect: Vec<CanFrame>,
    deadman: Option<Duration>,
    relay_writes: bool,
    relay_stats: Arc<crate::relay::BridgeStats>,
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

    /// Hand a frame to every observer (never waits: a full observer queue drops its oldest).
    fn observe(&self, direction: Direction, frame: &TimedFrame) {
        if let Ok(obs) = self.observers.lock() {
            for (_, q) in obs.iter() {
                q.push((direction, frame.clone()));
            }
        }
    }

    fn add_observer(&self, id: u64) -> Arc<ObserverQueue> {
        let q = Arc::new(Queue::items(OBSERVER_QUEUE_FRAMES));
        if let Ok(mut o) = self.observers.lock() {
            o.push((id, q.clone()));
        }
        q
    }

    fn remove_observer(&self, id: u64) {
        if let Ok(mut o) = self.observers.lock() {
            o.retain(|(i, q)| {
                if *i == id {
                    q.close();
                }
                *i != id
            });
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

    fn safety(&self) -> std::sync::MutexGuard<'_, Safety> {
        match self.safety.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        }
    }

    fn act(&self, action: Action) {
        if let Action::Trip(why) = action {
            self.trip(why);
        }
    }

    /// A client connected: a controller-to-be.
    fn join(&self, id: ControllerId, relay_writer: bool) {
        self.safety().join(id, now_us(), relay_writer);
    }

    /// Something arrived from `id`: a liveness signal after a trip.
    fn heard(&self, id: ControllerId) {
        self.safety().heard(id, now_us());
    }

    /// Queue frames from client `origin` for the bus.
    fn submit(&self, frames: Vec<TimedFrame>, origin: ControllerId) -> Refusals {
        let mut refused = Refusals::default();
        let now = now_us();
        for f in frames {
            let mut frame = f.frame;
            if frame.fd && !self.fd {
                // A classic controller cannot carry FD; a frame that fits a classic one
                // loses nothing by going as classic (python-can sends FD by default).
                if frame.data.len() <= 8 && !frame.brs && !frame.rtr {
                    frame.fd = false;
                    frame.esi = false;
                    self.stats.fd_as_classic.fetch_add(1, Ordering::Relaxed);
                } else {
                    self.stats.fd_refused.fetch_add(1, Ordering::Relaxed);
                    refused.fd += 1;
                    continue;
                }
            }
            // Judged and queued under the safety lock, so a trip cannot fall in between.
            let mut safety = self.safety();
            let verdict = safety.command(origin, f.timestamp_us, now);
            match verdict {
                Ok(()) => self.send_queue.push(Pending {
                    frame,
                    sent_us: f.timestamp_us,
                    arrived_us: now,
                    origin,
                    trips: self.trips.load(Ordering::SeqCst),
                }),
                Err(Dropped::Stale) => {
                    self.stats.stale_dropped.fetch_add(1, Ordering::Relaxed);
                }
                Err(Dropped::Future) => {
                    self.stats.future_dropped.fetch_add(1, Ordering::Relaxed);
                    tracing::debug!(iface = %self.name, "dropped a command dated in the future (client clock ahead?)");
                }
                Err(Dropped::AfterTrip) => {
                    self.stats
                        .after_trip_dropped
                        .fetch_add(1, Ordering::Relaxed);
                }
            }
        }
        let d = self.send_queue.take_dropped();
        if d > 0 {
            self.stats.queue_dropped.fetch_add(d, Ordering::Relaxed);
        }
        refused
    }

    fn fd_refusal_message(&self, count: u32) -> String {
        format!(
            "{count} CAN FD frame(s) refused: {} is a classic CAN interface (only FD frames of at most 8 bytes without bit-rate switch are sent, as classic frames); serve it as {}:fd on an FD-capable controller",
            self.name, self.name
        )
    }

    /// A client (P2P session or relay writer) is gone abruptly: forget its queued commands
    /// (they would reach the bus late), and if it was the last controller, make the bus safe.
    fn client_gone(&self, id: ControllerId) {
        self.send_queue.retain(|p| p.origin != id);
        let action = self.safety().leave(id, now_us());
        self.act(action);
    }

    /// Wait (bounded) until none of `id`'s frames are queued: a client that closes cleanly
    /// gets what it sent onto the bus, like a local bus shut down after `send`.
    async fn drain_origin(&self, id: ControllerId, limit: Duration) {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            let progress = self.tx_progress.notified();
            if self.send_queue.count(|p| p.origin == id) == 0 {
                return;
            }
            if tokio::time::timeout_at(deadline, progress).await.is_err() {
                tracing::debug!(iface = %self.name, "a closing client's frames did not all reach the bus in time");
                return;
            }
        }
    }

    fn trip(&self, why: &str) {
        if self.on_disconnect.is_empty() {
            return;
        }
        tracing::warn!(iface = %self.name, "{why}: sending {} on-disconnect frames", self.on_disconnect.len());
        self.stats.safety_trips.fetch_add(1, Ordering::Relaxed);
        let _order = self.safety();
        let trips = self.trips.fetch_add(1, Ordering::SeqCst) + 1;
        // Nothing queued may reach the bus after the safety frames.
        self.send_queue.retain(|_| false);
        let now = now_us();
        for f in &self.on_disconnect {
            self.send_queue.push(Pending {
                frame: f.clone(),
                sent_us: 0,
                arrived_us: now,
                origin: SERVER,
                trips,
            });
        }
    }

    /// A command queued before the latest trip: it must not go out.
    fn superseded(&self, p: &Pending) -> bool {
        p.origin != SERVER && p.trips != self.trips.load(Ordering::SeqCst)
    }

    /// Whether a frame is still worth sending now (its age is re-checked at the bus, also
    /// after it waited on a busy controller).
    fn still_fresh(&self, p: &Pending, max: Option<Duration>) -> bool {
        let (Some(max), true) = (max, p.origin != SERVER) else {
            return true;
        };
        let sent = if p.sent_us > 0 {
            p.sent_us
        } else {
            p.arrived_us
        };
        now_us().saturating_sub(sent) <= u64::try_from(max.as_micros()).unwrap_or(u64::MAX)
    }
}

async fn rx_task(shared: Arc<Shared>, mut rx: mpsc::Receiver<BusEvent>) {
    while let Some(ev) = rx.recv().await {
        match ev {
            BusEvent::Frame(f) => {
                shared.stats.rx_frames.fetch_add(1, Ordering::Relaxed);
                shared.observe(Direction::FromDevice, &f);
                shared.fanout(&f, None);
            }
            BusEvent::State(s) => {
                tracing::warn!(iface = %shared.name, "bus state: {s:?}");
                // `send_replace`: `send` keeps nothing when no client is subscribed.
                shared.state.send_replace(s);
            }
            BusEvent::Down(reason) => {
                tracing::error!(iface = %shared.name, "interface down ({reason}); reopening");
                // Commands queued now would reach the motors late once it is back.
                shared.send_queue.retain(|p| p.origin == SERVER);
                shared.state.send_replace(BusState::Down);
            }
            BusEvent::Up => {
                tracing::info!(iface = %shared.name, "interface is back");
                shared.state.send_replace(BusState::ErrorActive);
            }
        }
    }
    tracing::error!(iface = %shared.name, "the CAN device stopped delivering frames");
}

async fn tx_task(shared: Arc<Shared>, mut tx: Box<dyn CanTx>) {
    let max_age = shared.safety().max_age();
    let mut batch = Vec::with_capacity(256);
    while shared.send_queue.pop_batch(&mut batch, 256).await.is_some() {
        shared.tx_progress.notify_waiters();
        for p in batch.drain(..) {
            loop {
                // A trip since this was queued: it gives way to the safety frames the trip
                // queued (which come next from the queue).
                if shared.superseded(&p) {
                    break;
                }
                if !shared.still_fresh(&p, max_age) {
                    shared.stats.stale_dropped.fetch_add(1, Ordering::Relaxed);
                    tracing::debug!(iface = %shared.name, "dropped a command that got stale waiting for the bus");
                    break;
                }
                match tx.send(&p.frame).await {
                    Ok(()) => {
                        shared.stats.tx_frames.fetch_add(1, Ordering::Relaxed);
                        if p.origin == SERVER {
                            shared.stats.safety_sent.fetch_add(1, Ordering::Relaxed);
                        }
                        let t = TimedFrame {
                            frame: p.frame.clone(),
                            timestamp_us: now_us(),
                        };
                        shared.observe(Direction::ToDevice, &t);
                        // Other clients see it as any node on the bus would.
                        shared.fanout(&t, Some(p.origin));
                        break;
                    }
                    // Nobody acknowledges: the backend already waited a back-off step.
                    Err(DeviceError::Busy { .. }) => {
                        shared.stats.tx_busy.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(e) => {
                        shared.stats.tx_errors.fetch_add(1, Ordering::Relaxed);
                        tracing::warn!(iface = %shared.name, "send failed: {e}");
                        break;
                    }
                }
            }
        }
        shared.tx_progress.notify_waiters();
    }
}

async fn deadman_task(shared: Arc<Shared>) {
    // Check at a tenth of the window: trips at most 10% late, never early. Without a deadman
    // the ticks still retire relay writers that went silent.
    let window = shared
        .deadman
        .unwrap_or(crate::safety::WRITER_SILENCE)
        .min(crate::safety::WRITER_SILENCE);
    let tick = (window / 10).max(Duration::from_millis(1));
    loop {
        tokio::time::sleep(tick).await;
        let action = shared.safety().tick(now_us());
        shared.act(action);
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
            relay_writes: false,
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

    /// Counters of the relay side (replays dropped, writes refused, syncs).
    pub fn relay_stats(&self) -> &crate::relay::BridgeStats {
        &self.shared.relay_stats
    }

    /// Whether relay writers may send commands.
    pub fn relay_writes(&self) -> bool {
        self.shared.relay_writes
    }

    /// Controlling clients now (P2P sessions and relay writers that sent a command).
    pub fn controllers(&self) -> usize {
        self.shared.safety().controllers()
    }

    /// Stop safely: send the on-disconnect frames (whoever is connected) and wait, at most
    /// `limit`, until they are on the bus; then end every client's stream once what is
    /// queued for it (the motors' replies) has been sent. Call before exiting.
    pub async fn stop(&self, limit: Duration) {
        let target = self.shared.stats.safety_sent.load(Ordering::Relaxed)
            + self.shared.on_disconnect.len() as u64;
        let action = self.shared.safety().stop(now_us());
        self.shared.act(action);
        let deadline = tokio::time::Instant::now() + limit;
        while self.shared.stats.safety_sent.load(Ordering::Relaxed) < target {
            let progress = self.shared.tx_progress.notified();
            if tokio::time::timeout_at(deadline, progress).await.is_err() {
                tracing::warn!(iface = %self.shared.name, "the on-disconnect frames did not all reach the bus in time");
                break;
            }
        }
        // Replies to the safety frames come back through the receive path: give them a
        // moment to reach the clients' queues, then close the queues (each session sends
        // what is queued and ends its stream).
        tokio::time::sleep(Duration::from_millis(20)).await;
        if let Ok(sinks) = self.shared.sinks.lock() {
            for s in sinks.iter() {
                s.queue.close();
            }
        }
        if let Ok(obs) = self.shared.observers.lock() {
            for (_, q) in obs.iter() {
                q.close();
            }
        }
    }

    /// Observers now.
    pub fn observers(&self) -> usize {
        self.shared.observers.lock().map(|o| o.len()).unwrap_or(0)
    }

    /// Serve one P2P connection until it ends: a client session on [`ALPN`](xoq_wire::can::ALPN), an
    /// observer on [`observe::CAN_ALPN`].
    pub async fn serve_connection(&self, conn: Connection) {
        let peer = conn.remote_id();
        let Ok((mut send, recv)) = conn.accept_bi().await else {
            return;
        };
        if conn.alpn() == observe::CAN_ALPN {
            self.serve_observer(peer, send, recv).await;
            crate::session::linger(&conn).await;
            return;
        }
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
                    refuse(&mut send, RefuseCode::Version, format!("protocol version {version} not supported (server speaks {VERSION}); upgrade the older side")).await;
                    return;
                }
                if !interface.is_empty() && interface != shared.name {
                    refuse(
                        &mut send,
                        RefuseCode::Unavailable,
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
        let queue = Arc::new(Queue::items(CLIENT_QUEUE_FRAMES));
        let filters = Arc::new(Mutex::new(filters));
        shared.add_sink(Sink {
            id,
            queue: queue.clone(),
            receive_own,
            filters: filters.clone(),
        });
        shared.join(id, false);
        let mut guard = ClientGuard {
            shared: shared.clone(),
            id,
            clean: false,
        };
        tracing::info!(%peer, iface = %shared.name, "client connected");

        let welcome = ServerMsg::Welcome {
            version: VERSION,
            interface: shared.name.clone(),
            fd: shared.fd,
            server_us: now_us(),
        };
        let (ctl_tx, mut ctl_rx) = mpsc::channel::<ServerMsg>(64);
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
                    biased;
                    m = ctl_rx.recv() => match m {
                        Some(m) => m.encode(&mut out),
                        None => { let _ = send.finish(); return; }
                    },
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
        let mut writer_done = false;
        loop {
            tokio::select! {
                _ = &mut writer => {
                    writer_done = true;
                    break;
                }
                m = reader.next(ClientMsg::decode) => match m {
                    Ok(Some(ClientMsg::Send(frames))) => {
                        let refused = shared.submit(frames, id);
                        if refused.fd > 0 {
                            let msg = ServerMsg::Error {
                                code: RefuseCode::Unsupported.to_code(),
                                count: refused.fd,
                                message: shared.fd_refusal_message(refused.fd),
                            };
                            let _ = ctl_tx.try_send(msg);
                        }
                    }
                    Ok(Some(ClientMsg::SetFilters(f))) => {
                        shared.heard(id);
                        if let Ok(mut cur) = filters.lock() {
                            *cur = f;
                        }
                    }
                    Ok(Some(ClientMsg::Ping { id: ping, client_us })) => {
                        shared.heard(id);
                        let _ = ctl_tx.try_send(ServerMsg::Pong { id: ping, client_us, server_us: now_us() });
                    }
                    Ok(Some(ClientMsg::Hello { .. })) => break,
                    Ok(None) => {
                        // A clean close: what the client sent still goes on the bus.
                        guard.clean = true;
                        shared.drain_origin(id, CLOSE_DRAIN).await;
                        break;
                    }
                    Err(e) => {
                        tracing::info!(%peer, "client session ended: {e}");
                        break;
                    }
                },
            }
        }
        drop(ctl_tx);
        queue.close();
        if !writer_done {
            // Let the writer send what is queued and finish the stream.
            let _ = tokio::time::timeout(Duration::from_millis(500), &mut writer).await;
            writer.abort();
        }
        drop(guard);
        tracing::info!(%peer, iface = %shared.name, "client left");
    }

    /// Serve a read-only observer on an accepted stream: after the handshake it gets every
    /// frame from and to the bus, stamped, and may only send pings. Anything else it sends
    /// ends the session with a refusal saying so; nothing it sends reaches the bus, and it
    /// never counts as a controller.
    pub async fn serve_observer(
        &self,
        peer: iroh::EndpointId,
        mut send: iroh::endpoint::SendStream,
        recv: iroh::endpoint::RecvStream,
    ) {
        let shared = &self.shared;
        let mut reader = FramedReader::new(recv);
        let client =
            match crate::session::observer_hello(&mut reader, &mut send, &shared.name, INSTEAD)
                .await
            {
                Ok(client) => client,
                Err(crate::session::ObserverHandshake::Violation(why)) => {
                    tracing::warn!(%peer, iface = %shared.name, "observer refused: {why}");
                    return;
                }
                Err(_) => return,
            };
        let id = shared.next_id.fetch_add(1, Ordering::Relaxed);
        // Registered before Welcome: nothing that happens after the handshake is missed.
        let queue = shared.add_observer(id);
        let _guard = ObserverGuard {
            shared: shared.clone(),
            id,
        };
        tracing::info!(%peer, %client, iface = %shared.name, "observer connected");
        let welcome = observe::ServerMsg::Welcome {
            version: observe::VERSION,
            device: shared.name.clone(),
            queue: OBSERVER_QUEUE_FRAMES as u32,
            server_us: now_us(),
        };
        let (ctl_tx, mut ctl_rx) = mpsc::channel::<observe::ServerMsg>(16);
        let wq = queue.clone();
        let mut state_rx = shared.state.subscribe();
        let mut writer = tokio::spawn(async move {
            let mut out = BytesMut::with_capacity(64 * 1024);
            welcome.encode(&mut out);
            if *state_rx.borrow_and_update() != BusState::ErrorActive {
                observe::ServerMsg::BusState(state_rx.borrow().to_code()).encode(&mut out);
            }
            if send.write_all(&out).await.is_err() {
                return;
            }
            let mut batch = Vec::with_capacity(MAX_BATCH);
            loop {
                out.clear();
                let mut last = false;
                tokio::select! {
                    biased;
                    m = ctl_rx.recv() => match m {
                        Some(m) => {
                            last = matches!(m, observe::ServerMsg::Refused { .. });
                            m.encode(&mut out);
                        }
                        None => { let _ = send.finish(); return; }
                    },
                    r = wq.pop_batch(&mut batch, MAX_BATCH) => {
                        if r.is_none() { let _ = send.finish(); return; }
                        let dropped = wq.take_dropped();
                        if dropped > 0 {
                            observe::ServerMsg::Dropped(dropped).encode(&mut out);
                        }
                        // One message per run of frames going the same way.
                        let mut frames = Vec::new();
                        let mut dir = None;
                        for (d, f) in batch.drain(..) {
                            if dir.is_some_and(|x| x != d) {
                                let direction = dir.unwrap_or(d);
                                observe::ServerMsg::Frames { direction, frames: std::mem::take(&mut frames) }.encode(&mut out);
                            }
                            dir = Some(d);
                            frames.push(f);
                        }
                        if let Some(direction) = dir {
                            observe::ServerMsg::Frames { direction, frames }.encode(&mut out);
                        }
                    }
                    c = state_rx.changed() => {
                        if c.is_err() { return; }
                        let code = state_rx.borrow_and_update().to_code();
                        observe::ServerMsg::BusState(code).encode(&mut out);
                    }
                }
                if send.write_all(&out).await.is_err() {
                    return;
                }
                if last {
                    let _ = send.finish();
                    return;
                }
            }
        });
        loop {
            tokio::select! {
                _ = &mut writer => break,
                m = reader.next(observe::ClientMsg::decode) => match m {
                    Ok(Some(observe::ClientMsg::Ping { id, client_us })) => {
                        let _ = ctl_tx.try_send(observe::ServerMsg::Pong { id, client_us, server_us: now_us() });
                    }
                    Ok(Some(observe::ClientMsg::Hello { .. })) | Ok(None) => break,
                    Err(xoq_transport::framed::FramedError::Decode(e)) => {
                        let why = crate::session::observer_violation(&e, &shared.name, INSTEAD);
                        tracing::warn!(%peer, iface = %shared.name, "observer closed: {why}");
                        let _ = ctl_tx.send(observe::ServerMsg::Refused { code: RefuseCode::WritesOff, message: why }).await;
                        break;
                    }
                    Err(e) => {
                        tracing::info!(%peer, "observer session ended: {e}");
                        break;
                    }
                },
            }
        }
        drop(ctl_tx);
        queue.close();
        if !writer.is_finished() {
            let _ = tokio::time::timeout(Duration::from_millis(500), &mut writer).await;
            writer.abort();
        }
        tracing::info!(%peer, iface = %shared.name, "observer left");
    }

    /// Bridge the interface to a relay: publish its traffic on `{name}/state` (track `data`,
    /// batches as in docs/protocol.md, and `ctl`) and, with relay writes on, send the
    /// commands of every in-sync writer `{name}/cmd/<writer>`. Runs until the session ends
    /// for good.
    pub async fn serve_moq(
        &self,
        session: &MoqSession,
        name: &str,
    ) -> Result<(), xoq_transport::TransportError> {
        let shared = &self.shared;
        let ids_from = shared.clone();
        let (bridge, mut events) = RelayBridge::start(
            session,
            name,
            BridgeConfig {
                down: "state",
                up: "cmd",
                writes: shared.relay_writes,
            },
            Arc::new(move || ids_from.next_id.fetch_add(1, Ordering::Relaxed)),
            shared.relay_stats.clone(),
        )?;
        let sink_id = shared.next_id.fetch_add(1, Ordering::Relaxed);
        let queue = Arc::new(Queue::items(CLIENT_QUEUE_FRAMES));
        shared.add_sink(Sink {
            id: sink_id,
            queue: queue.clone(),
            // Relay viewers see commands from relay writers too: the page that sent a
            // command wants to see it on the bus, and other viewers must see it anyway.
            receive_own: true,
            filters: Arc::new(Mutex::new(Vec::new())),
        });
        let _sink = SinkGuard {
            shared: shared.clone(),
            id: sink_id,
        };
        let mut writers: HashMap<u64, WriterGuard> = HashMap::new();
        let mut writer_names: HashMap<u64, String> = HashMap::new();
        let mut state_rx = shared.state.subscribe();
        let out = async {
            let mut batch = Vec::with_capacity(MAX_BATCH);
            let mut buf = BytesMut::new();
            while queue.pop_batch(&mut batch, MAX_BATCH).await.is_some() {
                buf.clear();
                encode_track_frame(&batch, &mut buf);
                batch.clear();
                if let Err(e) = bridge.write(buf.split().freeze()) {
                    tracing::warn!("relay state: {e}");
                }
            }
            // The queue closes only in `stop`: tell the relay clients now, rather than
            // leaving them to notice the retracted broadcast.
            bridge.notice(&Ctl::Bye("the server is stopping".into()));
            // Retracting the broadcast at once would overtake the goodbye on its way.
            tokio::time::sleep(BYE_GRACE).await;
        };
        let inp = async {
            loop {
                tokio::select! {
                    ev = events.recv() => match ev {
                        Some(BridgeEvent::Joined { id, writer }) => {
                            shared.join(id, true);
                            writers.insert(id, WriterGuard { shared: shared.clone(), id });
                            writer_names.insert(id, writer);
                        }
                        Some(BridgeEvent::Heard { id }) => shared.heard(id),
                        Some(BridgeEvent::Data { id, payload }) => match decode_track_frame(&payload) {
                            Ok(frames) => {
                                let refused = shared.submit(frames, id);
                                if refused.fd > 0
                                    && let Some(w) = writer_names.get(&id)
                                {
                                    bridge.refuse(w, RefuseCode::Unsupported.to_code(), shared.fd_refusal_message(refused.fd));
                                }
                            }
                            Err(_) => {
                                shared.stats.moq_malformed.fetch_add(1, Ordering::Relaxed);
                            }
                        },
                        Some(BridgeEvent::Left { id }) => {
                            writers.remove(&id);
                            writer_names.remove(&id);
                        }
                        None => return,
                    },
                    c = state_rx.changed() => {
                        if c.is_err() { return; }
                        let s = *state_rx.borrow_and_update();
                        bridge.notice(&Ctl::BusState(s.to_code()));
                    }
                }
            }
        };
        tokio::select! {
            _ = out => {},
            _ = inp => {},
            r = session.closed() => {
                if let Err(e) = r {
                    tracing::error!("relay session ended: {e}");
                }
            },
        }
        Ok(())
    }
}

async fn refuse(send: &mut iroh::endpoint::SendStream, code: RefuseCode, message: String) {
    let code = code.to_code();
    crate::session::refuse(send, |out| ServerMsg::Refused { code, message }.encode(out)).await;
}

/// What an observer that tried to send frames should do instead.
const INSTEAD: &str = "to send frames, connect as a client (ALPN xoq/can/1)";

/// Removes an observer's queue when its session ends.
struct ObserverGuard {
    shared: Arc<Shared>,
    id: u64,
}

impl Drop for ObserverGuard {
    fn drop(&mut self) {
        self.shared.remove_observer(self.id);
    }
}

/// A P2P session's sink and controller: removed when the session ends, however it ends.
struct ClientGuard {
    shared: Arc<Shared>,
    id: u64,
    /// The client closed cleanly after its frames were sent: nothing to discard.
    clean: bool,
}

impl Drop for ClientGuard {
    fn drop(&mut self) {
        self.shared.remove_sink(self.id);
        if self.clean {
            let action = self.shared.safety().leave(self.id, now_us());
            self.shared.act(action);
        } else {
            self.shared.client_gone(self.id);
        }
    }
}

/// A relay writer's controller: leaves when the writer does (or the bridge stops).
struct WriterGuard {
    shared: Arc<Shared>,
    id: u64,
}

impl Drop for WriterGuard {
    fn drop(&mut self) {
        self.shared.client_gone(self.id);
    }
}

struct SinkGuard {
    shared: Arc<Shared>,
    id: u64,
}

impl Drop for SinkGuard {
    fn drop(&mut self) {
        self.shared.remove_sink(self.id);
    }
}

impl ProtocolHandler for CanServer {
    async fn accept(&self, connection: Connection) -> Result<(), AcceptError> {
        self.serve_connection(connection).await;
        Ok(())
    }
}
