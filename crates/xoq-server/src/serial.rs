//! The serial bridge server.
//!
//! Data path, device to clients: a device reader task pushes bytes into one bounded
//! [`Queue`] per client: the P2P controller's queue *blocks* (the device reader waits, so
//! the kernel buffer and flow control behave as for a local program that stops reading), the
//! relay's queue drops the oldest bytes (counted) so the relay side never holds the device
//! back.
//!
//! Clients to device: every writer's bytes go through one device writer task, so a device
//! that stops accepting (XOFF, CTS low) blocks *writes only*. A P2P client keeps at most
//! [`WRITE_WINDOW`] bytes the device has not accepted in flight (the server acks what the
//! device took), so the session can always read its stream to the end and control requests
//! are seen at once: clearing the output discards what is queued anywhere on the server and
//! in the driver and returns promptly; settings and breaks are applied after the bytes
//! written before them reach the driver, unless the device stopped accepting (then at once).
//!
//! Ownership: one P2P controller at a time. A second identity is refused with "port busy
//! (held by `<id>`)", or, with takeover, replaces the first (told [`Event::TakenOver`]). The
//! same identity opening the port again from another handle replaces its older handle (as
//! a second `open()` of a local port does); the same handle reconnecting replaces its own
//! stale session. Relay writers (`--moq-writes on`) write alongside the P2P controller.
//!
//! Observers (ALPN [`observe::SERIAL_ALPN`], and the relay's `{path}/observe` broadcast) see
//! both directions: each chunk the device reader got, stamped with its read time, and each
//! chunk the device writer hands to the driver, stamped and queued just before the write (so
//! a request always reaches observers before its answer). They never
//! write (the server reads nothing but a ping from them) and never own the port. Each has a
//! drop-oldest queue ([`OBSERVER_QUEUE_BYTES`]) filled without waiting, so a slow observer
//! loses bytes (and is told how many) but never slows the device or the controller.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use iroh::EndpointId;
use iroh::endpoint::Connection;
use iroh::protocol::{AcceptError, ProtocolHandler};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::{Notify, broadcast, mpsc, watch};
use xoq_device::DeviceError;
use xoq_device::serial::{SerialBackend, SerialControl, SerialWriter};
use xoq_transport::framed::FramedReader;
use xoq_transport::moq::MoqSession;
use xoq_wire::observe::{self, Direction};
use xoq_wire::relay::Ctl;
use xoq_wire::serial::{
    ClearBuffer, ClientMsg, Command, Event, Hello, LineSettings, RefuseCode, Reply, ServerMsg,
    VERSION, Welcome,
};

use crate::queue::{Overflow, Queue};
use crate::relay::{BridgeConfig, BridgeEvent, RelayBridge};
use crate::session::ObserverHandshake;
use xoq_device::now_us;

/// Bytes buffered per client between the device and the network before the oldest are dropped.
pub const CLIENT_QUEUE_BYTES: usize = 1 << 20;
/// Bytes a P2P client may have in flight that the device has not accepted yet.
pub const WRITE_WINDOW: u32 = 64 * 1024;
/// Bytes (both directions) queued per observer before the oldest chunks are dropped.
pub const OBSERVER_QUEUE_BYTES: usize = 1 << 20;
/// Bytes from relay writers queued for the device before their readers wait.
const RELAY_WRITE_QUEUE: usize = 64 * 1024;
/// How long a new connection may take to send its handshake.
const HELLO_TIMEOUT: Duration = Duration::from_secs(10);
/// Upper bound of a drain request (flush()): a wedged line must not hang the client forever.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(5);
/// Delay between attempts to reopen a device that disappeared.
const REOPEN_INTERVAL: Duration = Duration::from_millis(500);
/// A device writer that made no progress for this long has stopped accepting (flow control):
/// settings and breaks stop waiting for the bytes before them.
const STALLED: Duration = Duration::from_millis(100);
/// How long a client that closes cleanly waits for its bytes to reach the device.
const CLOSE_DRAIN: Duration = Duration::from_secs(1);

pub use crate::error::ServerError;

/// Configures and starts a [`SerialServer`].
#[must_use]
pub struct SerialServerBuilder {
    backend: Box<dyn SerialBackend>,
    settings: LineSettings,
    takeover: bool,
    relay_writes: bool,
}

impl SerialServerBuilder {
    /// Line settings used when opening the device (a client's handshake may change them).
    pub fn settings(mut self, settings: LineSettings) -> Self {
        self.settings = settings;
        self
    }

    /// Let a new client take the port from the current one (XoQ 0.3.6 behaviour) instead of
    /// refusing it.
    pub fn takeover(mut self, takeover: bool) -> Self {
        self.takeover = takeover;
        self
    }

    /// Accept bytes from relay writers (default: no, the relay side is read-only).
    pub fn relay_writes(mut self, on: bool) -> Self {
        self.relay_writes = on;
        self
    }

    /// Open the device and start serving it. Fails if the device cannot be opened now;
    /// later disappearances are handled by reopening.
    pub async fn start(self) -> Result<SerialServer, ServerError> {
        let open = self.backend.open(&self.settings)?;
        let (events, _) = broadcast::channel(64);
        let shared = Arc::new(Shared {
            name: self.backend.name().to_string(),
            takeover: self.takeover,
            relay_writes: self.relay_writes,
            control: Mutex::new(Some(open.control)),
            device_writer: tokio::sync::Mutex::new(Some(open.writer)),
            writes: WriteQueue::default(),
            settings: Mutex::new(self.settings),
            sinks: Mutex::new(Vec::new()),
            observers: Mutex::new(Vec::new()),
            controller: Mutex::new(None),
            events,
            next_session: AtomicU64::new(1),
            stats: Stats::default(),
            relay_stats: Arc::default(),
        });
        let reader = tokio::spawn(device_task(shared.clone(), self.backend, open.reader));
        let writer = tokio::spawn(writer_task(shared.clone()));
        Ok(SerialServer {
            shared,
            _tasks: Arc::new(crate::session::Tasks(vec![reader, writer])),
        })
    }
}

/// A running serial server. Cheap to clone; the device tasks stop when the last clone drops.
#[derive(Clone)]
pub struct SerialServer {
    shared: Arc<Shared>,
    _tasks: Arc<crate::session::Tasks>,
}

impl std::fmt::Debug for SerialServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SerialServer")
            .field("port", &self.shared.name)
            .finish()
    }
}

/// Counters for logs and benchmarks.
#[derive(Debug, Default)]
pub struct Stats {
    /// Bytes read from the device.
    pub rx_bytes: AtomicU64,
    /// Bytes written to the device.
    pub tx_bytes: AtomicU64,
    /// Bytes clients wrote while the device was unavailable (discarded).
    pub tx_discarded: AtomicU64,
    /// Bytes discarded by output clears (`reset_output_buffer`) before reaching the device.
    pub tx_cleared: AtomicU64,
}

/// Bytes waiting for the device, from whichever writer, in arrival order.
#[derive(Default)]
struct WriteQueue {
    inner: Mutex<WriteState>,
    /// New bytes, a clear, or a close.
    notify: Notify,
    /// The writer took bytes, finished a chunk, or was cleared.
    progress: Notify,
}

#[derive(Default)]
struct WriteState {
    chunks: VecDeque<WriteChunk>,
    bytes: usize,
    /// A chunk is being written to the device right now.
    writing: bool,
    /// Bumped by every output clear: a write in progress for an older generation stops.
    generation: u64,
    /// Last sign of life of the write path: bytes queued into an idle queue, a chunk taken,
    /// bytes moved into the driver.
    last_activity: Option<Instant>,
}

struct WriteChunk {
    data: Bytes,
    /// The P2P session's count of bytes the device accepted (acked to the client).
    accepted: Option<Arc<watch::Sender<u64>>>,
}

impl WriteQueue {
    fn lock(&self) -> std::sync::MutexGuard<'_, WriteState> {
        match self.inner.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        }
    }

    fn push(&self, chunk: WriteChunk) {
        {
            let mut s = self.lock();
            if s.chunks.is_empty() && !s.writing {
                s.last_activity = Some(Instant::now());
            }
            s.bytes += chunk.data.len();
            s.chunks.push_back(chunk);
        }
        self.notify.notify_one();
    }

    /// Queue relay bytes, waiting while the queue holds more than its bound.
    async fn push_bounded(&self, chunk: WriteChunk, bound: usize) {
        loop {
            let progress = self.progress.notified();
            if self.lock().bytes < bound {
                break;
            }
            progress.await;
        }
        self.push(chunk);
    }

    /// Whether the bytes queued so far reached the driver, or the writer is stalled on a
    /// device that does not accept (then waiting behind it would never end).
    async fn settle(&self) {
        loop {
            let progress = self.progress.notified();
            {
                let s = self.lock();
                let idle = s.chunks.is_empty() && !s.writing;
                let stalled = s.last_activity.is_none_or(|t| t.elapsed() >= STALLED);
                if idle || stalled {
                    return;
                }
            }
            let _ = tokio::time::timeout(STALLED, progress).await;
        }
    }

    /// Discard everything queued and stop the write in progress; count what was discarded.
    fn clear(&self) -> usize {
        let dropped: Vec<WriteChunk>;
        {
            let mut s = self.lock();
            s.generation += 1;
            s.bytes = 0;
            dropped = s.chunks.drain(..).collect();
        }
        self.notify.notify_waiters();
        self.progress.notify_waiters();
        let mut n = 0;
        for c in dropped {
            n += c.data.len();
            if let Some(a) = &c.accepted {
                a.send_modify(|v| *v += c.data.len() as u64);
            }
        }
        n
    }
}

struct Controller {
    id: EndpointId,
    handle: u64,
    exclusive: bool,
    session: u64,
    kick: Arc<Notify>,
    kicked_why: Arc<Mutex<Option<String>>>,
}

struct Shared {
    name: String,
    takeover: bool,
    relay_writes: bool,
    control: Mutex<Option<Box<dyn SerialControl>>>,
    /// The device's byte writer; `None` while the device is away.
    device_writer: tokio::sync::Mutex<Option<SerialWriter>>,
    writes: WriteQueue,
    settings: Mutex<LineSettings>,
    sinks: Mutex<Vec<(u64, Arc<Queue<Bytes>>)>>,
    /// Observers' queues (P2P observers and the relay's observe track), filled without
    /// waiting.
    observers: Mutex<Vec<(u64, Arc<Queue<Observed>>)>>,
    controller: Mutex<Option<Controller>>,
    events: broadcast::Sender<Event>,
    next_session: AtomicU64,
    stats: Stats,
    relay_stats: Arc<crate::relay::BridgeStats>,
}

/// One chunk seen by observers.
struct Observed {
    direction: Direction,
    /// Robot clock, µs since the Unix epoch: read time, or when the bytes were handed to
    /// the driver.
    stamp_us: u64,
    data: Bytes,
}

impl Observed {
    fn size(&self) -> usize {
        self.data.len()
    }
}

impl Shared {
    /// Hand a chunk to every observer (never waits: a full observer queue drops its oldest).
    fn observe(&self, direction: Direction, stamp_us: u64, data: &Bytes) {
        if let Ok(obs) = self.observers.lock() {
            for (_, q) in obs.iter() {
                q.push(Observed {
                    direction,
                    stamp_us,
                    data: data.clone(),
                });
            }
        }
    }

    fn add_observer(&self, id: u64) -> Arc<Queue<Observed>> {
        let q = Arc::new(Queue::weighed(OBSERVER_QUEUE_BYTES, Observed::size));
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

    async fn fanout(&self, data: Bytes) {
        let sinks: Vec<Arc<Queue<Bytes>>> = match self.sinks.lock() {
            Ok(s) => s.iter().map(|(_, q)| q.clone()).collect(),
            Err(_) => return,
        };
        for q in sinks {
            q.push_wait(data.clone()).await;
        }
    }

    fn add_sink(&self, id: u64, q: Arc<Queue<Bytes>>) {
        if let Ok(mut s) = self.sinks.lock() {
            s.push((id, q));
        }
    }

    fn remove_sink(&self, id: u64) {
        if let Ok(mut s) = self.sinks.lock() {
            s.retain(|(i, q)| {
                if *i == id {
                    q.close();
                }
                *i != id
            });
        }
    }

    fn settings(&self) -> LineSettings {
        match self.settings.lock() {
            Ok(s) => *s,
            Err(p) => *p.into_inner(),
        }
    }

    /// Run `f` on the device's control, or say that the device is away.
    fn with_control<T>(
        &self,
        f: impl FnOnce(&mut dyn SerialControl) -> Result<T, DeviceError>,
    ) -> Result<T, String> {
        let mut c = match self.control.lock() {
            Ok(c) => c,
            Err(p) => p.into_inner(),
        };
        match c.as_mut() {
            Some(dev) => f(dev.as_mut()).map_err(|e| e.to_string()),
            None => Err(format!(
                "{} is unavailable (unplugged?); the server reopens it when it returns",
                self.name
            )),
        }
    }

    /// Run a control command; `Err` carries the message for the client.
    async fn control(&self, cmd: &Command, own_queue: Option<&Queue<Bytes>>) -> Result<(), String> {
        match cmd {
            Command::SetSettings(s) => {
                // After the bytes written before it, as on a local port, unless the device
                // stopped taking them.
                self.writes.settle().await;
                self.with_control(|c| c.set_settings(s))?;
                if let Ok(mut cur) = self.settings.lock() {
                    *cur = *s;
                }
                Ok(())
            }
            Command::Drain => {
                self.writes.settle().await;
                let deadline = tokio::time::Instant::now() + DRAIN_TIMEOUT;
                loop {
                    let queued = {
                        let s = self.writes.lock();
                        s.bytes + usize::from(s.writing)
                    };
                    match self.with_control(|c| c.pending_output()) {
                        Ok(0) if queued == 0 => break Ok(()),
                        Ok(_) if tokio::time::Instant::now() >= deadline => {
                            let e = format!(
                                "drain of {} did not finish in {}s (flow control holding the line?)",
                                self.name,
                                DRAIN_TIMEOUT.as_secs()
                            );
                            tracing::warn!("{e}");
                            break Err(e);
                        }
                        // Control path, not data path: poll the driver's queue at 1 kHz.
                        Ok(_) => tokio::time::sleep(Duration::from_millis(1)).await,
                        Err(e) => break Err(e),
                    }
                }
            }
            Command::Clear(which) => {
                if matches!(which, ClearBuffer::Output | ClearBuffer::All) {
                    let n = self.writes.clear();
                    self.stats.tx_cleared.fetch_add(n as u64, Ordering::Relaxed);
                }
                if matches!(which, ClearBuffer::Input | ClearBuffer::All)
                    && let Some(q) = own_queue
                {
                    q.clear();
                }
                self.with_control(|c| c.clear(*which))
            }
            Command::Break(ms) => {
                self.writes.settle().await;
                let ms = (*ms).min(10_000);
                self.with_control(|c| c.set_break(true))?;
                tokio::time::sleep(Duration::from_millis(u64::from(ms))).await;
                self.with_control(|c| c.set_break(false))
            }
            Command::SetDtr(on) => self.with_control(|c| c.set_dtr(*on)),
            Command::SetRts(on) => self.with_control(|c| c.set_rts(*on)),
            _ => Err("command not supported by this server version".into()),
        }
    }
}

async fn device_task(
    shared: Arc<Shared>,
    backend: Box<dyn SerialBackend>,
    mut reader: xoq_device::serial::SerialReader,
) {
    loop {
        let mut buf = BytesMut::with_capacity(8192);
        let reason = loop {
            buf.reserve(4096);
            match reader.read_buf(&mut buf).await {
                Ok(0) => break "end of file".to_string(),
                Ok(n) => {
                    // The capture time of these bytes: when the read returned them.
                    let stamp = now_us();
                    shared.stats.rx_bytes.fetch_add(n as u64, Ordering::Relaxed);
                    let chunk = buf.split().freeze();
                    shared.observe(Direction::FromDevice, stamp, &chunk);
                    shared.fanout(chunk).await;
                }
                Err(e) => break e.to_string(),
            }
        };
        *shared.device_writer.lock().await = None;
        if let Ok(mut c) = shared.control.lock() {
            *c = None;
        }
        tracing::warn!(port = %shared.name, %reason, "device lost; reopening when it returns");
        let _ = shared.events.send(Event::DeviceLost(format!(
            "{} disappeared ({reason})",
            shared.name
        )));
        // Reopen with the settings the current client asked for.
        loop {
            tokio::time::sleep(REOPEN_INTERVAL).await;
            match backend.open(&shared.settings()) {
                Ok(open) => {
                    reader = open.reader;
                    *shared.device_writer.lock().await = Some(open.writer);
                    if let Ok(mut c) = shared.control.lock() {
                        *c = Some(open.control);
                    }
                    tracing::info!(port = %shared.name, "device is back");
                    let _ = shared.events.send(Event::DeviceRestored);
                    break;
                }
                Err(e) => tracing::debug!(port = %shared.name, "reopen failed: {e}"),
            }
        }
    }
}

/// Moves queued bytes into the device, one chunk at a time, abandoning a chunk when an output
/// clear comes (a write blocked by flow control must not hold the clear up).
async fn writer_task(shared: Arc<Shared>) {
    let q = &shared.writes;
    loop {
        let next = loop {
            let notified = q.notify.notified();
            {
                let mut s = q.lock();
                if let Some(c) = s.chunks.pop_front() {
                    s.bytes -= c.data.len();
                    s.writing = true;
                    s.last_activity = Some(Instant::now());
                    break (c, s.generation);
                }
            }
            notified.await;
        };
        let (chunk, generation) = next;
        q.progress.notify_waiters();
        let mut done = 0usize;
        // Bytes of this chunk already shown to observers.
        let mut observed = 0usize;
        let mut dev = shared.device_writer.lock().await;
        while done < chunk.data.len() {
            let Some(w) = dev.as_mut() else {
                // The device is away: the bytes are lost, as on an unplugged port.
                shared
                    .stats
                    .tx_discarded
                    .fetch_add((chunk.data.len() - done) as u64, Ordering::Relaxed);
                break;
            };
            let cleared = q.notify.notified();
            let still_current = q.lock().generation == generation;
            if !still_current {
                shared
                    .stats
                    .tx_cleared
                    .fetch_add((chunk.data.len() - done) as u64, Ordering::Relaxed);
                break;
            }
            // Observers see the bytes as they are handed to the driver, before the write:
            // the device can only answer after that, so every observer gets a request before
            // its answer and with an earlier stamp, also from a device that answers within
            // the write (a simulator). A write the driver then refuses (the device vanished)
            // or only partly takes before an output clear is the rare case where bytes
            // observed did not all reach the line.
            if observed < chunk.data.len() {
                shared.observe(Direction::ToDevice, now_us(), &chunk.data.slice(observed..));
                observed = chunk.data.len();
            }
            tokio::select! {
                r = w.write(&chunk.data[done..]) => match r {
                    Ok(0) | Err(_) => {
                        // The reader notices the loss and starts reopening.
                        shared.stats.tx_discarded.fetch_add((chunk.data.len() - done) as u64, Ordering::Relaxed);
                        break;
                    }
                    Ok(n) => {
                        done += n;
                        shared.stats.tx_bytes.fetch_add(n as u64, Ordering::Relaxed);
                        if let Some(a) = &chunk.accepted {
                            a.send_modify(|v| *v += n as u64);
                        }
                        q.lock().last_activity = Some(Instant::now());
                        q.progress.notify_waiters();
                    }
                },
                // A clear (new generation) or new bytes: re-check the generation.
                _ = cleared => {}
            }
        }
        drop(dev);
        let rest = (chunk.data.len() - done) as u64;
        if rest > 0
            && let Some(a) = &chunk.accepted
        {
            // Discarded bytes count as accepted: the client's window must not shrink.
            a.send_modify(|v| *v += rest);
        }
        {
            let mut s = q.lock();
            s.writing = false;
            s.last_activity = Some(Instant::now());
        }
        q.progress.notify_waiters();
    }
}

impl SerialServer {
    /// Serve `backend` (see [`xoq_device::serial::backend`]).
    pub fn builder(backend: Box<dyn SerialBackend>) -> SerialServerBuilder {
        SerialServerBuilder {
            backend,
            settings: LineSettings::new(115_200),
            takeover: false,
            relay_writes: false,
        }
    }

    /// Name of the served port.
    pub fn port_name(&self) -> &str {
        &self.shared.name
    }

    /// Counters.
    pub fn stats(&self) -> &Stats {
        &self.shared.stats
    }

    /// Counters of the relay side (replays dropped, writes refused, syncs).
    pub fn relay_stats(&self) -> &crate::relay::BridgeStats {
        &self.shared.relay_stats
    }

    /// Whether relay writers may write to the device.
    pub fn relay_writes(&self) -> bool {
        self.shared.relay_writes
    }

    /// Endpoint id of the current P2P controller, if any.
    pub fn controller(&self) -> Option<EndpointId> {
        self.shared
            .controller
            .lock()
            .ok()
            .and_then(|c| c.as_ref().map(|c| c.id))
    }

    /// Observers now (P2P sessions, and the relay's observe track while bridged).
    pub fn observers(&self) -> usize {
        self.shared.observers.lock().map(|o| o.len()).unwrap_or(0)
    }

    /// Serve one P2P connection until it ends: a controller session on [`ALPN`](xoq_wire::serial::ALPN), an
    /// observer on [`observe::SERIAL_ALPN`].
    pub async fn serve_connection(&self, conn: Connection) -> Result<(), SessionError> {
        let peer = conn.remote_id();
        let (send, recv) = conn
            .accept_bi()
            .await
            .map_err(|e| SessionError::Closed(e.to_string()))?;
        let r = if conn.alpn() == observe::SERIAL_ALPN {
            self.serve_observer(peer, send, recv).await
        } else {
            self.serve_stream(peer, send, recv).await
        };
        match &r {
            Ok(()) => tracing::info!(%peer, port = %self.shared.name, "client left"),
            Err(SessionError::Closed(_)) => {
                tracing::info!(%peer, port = %self.shared.name, "client gone (connection lost)")
            }
            Err(e) => tracing::info!(%peer, port = %self.shared.name, "client session ended: {e}"),
        }
        crate::session::linger(&conn).await;
        r
    }

    /// Decide who holds the port after `peer`'s hello: `Err(holder)` when busy.
    fn claim(
        &self,
        peer: EndpointId,
        (handle, exclusive): (u64, bool),
        session: u64,
        kick: &Arc<Notify>,
        kicked_why: &Arc<Mutex<Option<String>>>,
    ) -> Result<(), EndpointId> {
        let shared = &self.shared;
        let mut ctl = match shared.controller.lock() {
            Ok(c) => c,
            Err(p) => p.into_inner(),
        };
        if let Some(cur) = ctl.as_ref() {
            let why = if cur.id == peer && cur.handle == handle {
                // The same handle reconnecting (its link dropped): its old session is stale.
                tracing::info!(%peer, "client reconnected; its stale session is replaced");
                "replaced by this handle's reconnection".to_string()
            } else if cur.id == peer && cur.exclusive {
                // pyserial's exclusive=True: a second open fails while this one holds it.
                return Err(cur.id);
            } else if cur.id == peer {
                tracing::info!(%peer, "the same client opened the port again; the older handle is closed");
                format!(
                    "port {} reopened elsewhere by the same client identity (another handle in this process, or another process with the same key); this handle is closed",
                    shared.name
                )
            } else if shared.takeover {
                tracing::info!(old = %cur.id, new = %peer, "takeover: new client replaces the current one");
                format!("another client ({peer}) took over the port")
            } else {
                return Err(cur.id);
            };
            if let Ok(mut w) = cur.kicked_why.lock() {
                *w = Some(why);
            }
            cur.kick.notify_one();
        }
        *ctl = Some(Controller {
            id: peer,
            handle,
            exclusive,
            session,
            kick: kick.clone(),
            kicked_why: kicked_why.clone(),
        });
        Ok(())
    }

    /// Serve a session on an accepted bidirectional stream.
    pub async fn serve_stream(
        &self,
        peer: EndpointId,
        mut send: iroh::endpoint::SendStream,
        recv: iroh::endpoint::RecvStream,
    ) -> Result<(), SessionError> {
        let shared = &self.shared;
        let mut reader = FramedReader::new(recv);
        let hello = match tokio::time::timeout(HELLO_TIMEOUT, reader.next(ClientMsg::decode)).await
        {
            Err(_) => return Err(SessionError::Protocol("no handshake within 10 s".into())),
            Ok(Err(e)) => return Err(SessionError::Protocol(e.to_string())),
            Ok(Ok(None)) => return Ok(()),
            Ok(Ok(Some(ClientMsg::Hello(h)))) => h,
            Ok(Ok(Some(_))) => {
                return Err(SessionError::Protocol("first message was not Hello".into()));
            }
        };
        let Hello {
            version,
            settings,
            client,
            handle,
            exclusive,
        } = hello;
        if version != VERSION {
            refuse(
                &mut send,
                RefuseCode::Version,
                format!("protocol version {version} not supported (server speaks {VERSION}); upgrade the older side"),
            )
            .await;
            return Err(SessionError::Refused("version".into()));
        }

        // Ownership.
        let session = shared.next_session.fetch_add(1, Ordering::Relaxed);
        let kick = Arc::new(Notify::new());
        let kicked_why = Arc::new(Mutex::new(None));
        if let Err(holder) = self.claim(peer, (handle, exclusive), session, &kick, &kicked_why) {
            tracing::info!(%peer, %holder, "refused: port busy");
            let message = if holder == peer {
                format!(
                    "port {} busy: another handle of this client opened it exclusively",
                    shared.name
                )
            } else {
                format!(
                    "port {} busy (held by {holder}); retry when it is released, or start the server with --takeover",
                    shared.name
                )
            };
            refuse(&mut send, RefuseCode::Busy, message).await;
            return Err(SessionError::Refused("busy".into()));
        }
        let _guard = SessionGuard {
            shared: shared.clone(),
            session,
        };

        let queue = Arc::new(Queue::bytes(CLIENT_QUEUE_BYTES, Overflow::Block));
        if let Some(s) = settings
            && let Err(e) = shared.control(&Command::SetSettings(s), None).await
        {
            refuse(&mut send, RefuseCode::Unsupported, e.clone()).await;
            return Err(SessionError::Refused(e));
        }
        // Subscribe before Welcome: no byte the device sends after the handshake is missed.
        shared.add_sink(session, queue.clone());
        let mut events = shared.events.subscribe();
        tracing::info!(%peer, %client, port = %shared.name, "client connected");

        let (accepted_tx, mut accepted_rx) = watch::channel(0u64);
        let accepted_tx = Arc::new(accepted_tx);
        let (ctl_tx, mut ctl_rx) = mpsc::channel::<ServerMsg>(64);
        let welcome = ServerMsg::Welcome(Welcome {
            version: VERSION,
            settings: shared.settings(),
            port: shared.name.clone(),
            window: WRITE_WINDOW,
            server_us: now_us(),
        });
        let writer_queue = queue.clone();
        let writer_kick = kick.clone();
        let mut writer = tokio::spawn(async move {
            let mut out = BytesMut::with_capacity(16 * 1024);
            welcome.encode(&mut out);
            send.write_all(&out).await.map_err(|e| e.to_string())?;
            let mut chunks = Vec::new();
            loop {
                out.clear();
                tokio::select! {
                    biased;
                    _ = writer_kick.notified() => {
                        let why = kicked_why.lock().ok().and_then(|w| w.clone()).unwrap_or_default();
                        ServerMsg::Event(Event::TakenOver(why)).encode(&mut out);
                        let _ = send.write_all(&out).await;
                        let _ = send.finish();
                        return Err("taken over".to_string());
                    }
                    m = ctl_rx.recv() => match m {
                        Some(m) => m.encode(&mut out),
                        None => { let _ = send.finish(); return Ok(()); }
                    },
                    c = accepted_rx.changed() => {
                        if c.is_err() { continue; }
                        ServerMsg::Ack(*accepted_rx.borrow_and_update()).encode(&mut out);
                    }
                    r = writer_queue.pop_all(&mut chunks) => {
                        if r.is_none() { let _ = send.finish(); return Ok(()); }
                        let dropped = writer_queue.take_dropped();
                        if dropped > 0 {
                            ServerMsg::Event(Event::Dropped(dropped)).encode(&mut out);
                        }
                        for c in chunks.drain(..) {
                            for m in ServerMsg::data_chunks(c) {
                                m.encode(&mut out);
                            }
                        }
                    }
                    e = events.recv() => match e {
                        Ok(e) => ServerMsg::Event(e).encode(&mut out),
                        Err(broadcast::error::RecvError::Lagged(_)) => continue,
                        Err(broadcast::error::RecvError::Closed) => return Ok(()),
                    },
                }
                // Whatever else is ready goes in the same write (an Ack and the echo it
                // triggered): one packet instead of two, so one loss less to wait out.
                if accepted_rx.has_changed().unwrap_or(false) {
                    ServerMsg::Ack(*accepted_rx.borrow_and_update()).encode(&mut out);
                }
                if writer_queue.try_pop_all(&mut chunks) {
                    for c in chunks.drain(..) {
                        for m in ServerMsg::data_chunks(c) {
                            m.encode(&mut out);
                        }
                    }
                }
                send.write_all(&out).await.map_err(|e| e.to_string())?;
            }
        });

        // Bytes received from this client, for the window check.
        let mut received: u64 = 0;
        let result = loop {
            tokio::select! {
                w = &mut writer => {
                    break match w {
                        Ok(Ok(())) => Ok(()),
                        Ok(Err(e)) if e == "taken over" => Err(SessionError::TakenOver),
                        Ok(Err(e)) => Err(SessionError::Closed(e)),
                        Err(e) => Err(SessionError::Closed(e.to_string())),
                    };
                }
                m = reader.next(ClientMsg::decode) => match m {
                    Ok(Some(ClientMsg::Data(d))) => {
                        received += d.len() as u64;
                        let in_flight = received.saturating_sub(*accepted_tx.borrow());
                        if in_flight > u64::from(WRITE_WINDOW) {
                            break Err(SessionError::Protocol(format!(
                                "client has {in_flight} bytes in flight, over the {WRITE_WINDOW}-byte window"
                            )));
                        }
                        shared.writes.push(WriteChunk { data: d, accepted: Some(accepted_tx.clone()) });
                    }
                    Ok(Some(ClientMsg::Request(req))) => {
                        let error = shared.control(&req.command, Some(&queue)).await.err();
                        if let Some(e) = &error {
                            tracing::debug!(%peer, "request {:?} failed: {e}", req.command);
                        }
                        if ctl_tx.send(ServerMsg::Reply(Reply { id: req.id, error })).await.is_err() {
                            break Err(SessionError::Closed("writer ended".into()));
                        }
                    }
                    Ok(Some(ClientMsg::Ping { id, client_us })) => {
                        let _ = ctl_tx.try_send(ServerMsg::Pong { id, client_us, server_us: now_us() });
                    }
                    Ok(Some(ClientMsg::Hello(_))) => break Err(SessionError::Protocol("second Hello".into())),
                    Ok(None) => {
                        // A clean close: what the client wrote still goes to the device.
                        let deadline = tokio::time::Instant::now() + CLOSE_DRAIN;
                        while *accepted_tx.borrow() < received {
                            let mut rx = accepted_tx.subscribe();
                            if tokio::time::timeout_at(deadline, rx.changed()).await.is_err() {
                                break;
                            }
                        }
                        break Ok(());
                    }
                    Err(e) => break Err(classify(e)),
                },
            }
        };
        drop(ctl_tx);
        queue.close();
        if !writer.is_finished() {
            // Let the writer flush what is queued (replies) and finish the stream.
            let _ = tokio::time::timeout(Duration::from_millis(500), &mut writer).await;
            writer.abort();
        }
        result
    }

    /// Serve a read-only observer on an accepted stream: after the handshake it gets both
    /// directions of the port's traffic, stamped, and may only send pings. Anything else it
    /// sends ends the session with a refusal saying so; nothing it sends reaches the device.
    pub async fn serve_observer(
        &self,
        peer: EndpointId,
        mut send: iroh::endpoint::SendStream,
        recv: iroh::endpoint::RecvStream,
    ) -> Result<(), SessionError> {
        let shared = &self.shared;
        let mut reader = FramedReader::new(recv);
        let client =
            match crate::session::observer_hello(&mut reader, &mut send, &shared.name, INSTEAD)
                .await
            {
                Ok(client) => client,
                Err(ObserverHandshake::Timeout) => {
                    return Err(SessionError::Protocol("no handshake within 10 s".into()));
                }
                Err(ObserverHandshake::Ended) => return Ok(()),
                Err(ObserverHandshake::Version) => {
                    return Err(SessionError::Refused("version".into()));
                }
                Err(ObserverHandshake::NotHello) => {
                    return Err(SessionError::Protocol("first message was not Hello".into()));
                }
                Err(ObserverHandshake::Violation(why)) => return Err(SessionError::Protocol(why)),
                Err(ObserverHandshake::Stream(e)) => return Err(classify(e)),
            };
        let id = shared.next_session.fetch_add(1, Ordering::Relaxed);
        // Registered before Welcome: nothing that happens after the handshake is missed.
        let queue = shared.add_observer(id);
        let _guard = ObserverGuard {
            shared: shared.clone(),
            id,
        };
        let mut events = shared.events.subscribe();
        tracing::info!(%peer, %client, port = %shared.name, "observer connected");
        let welcome = observe::ServerMsg::Welcome {
            version: observe::VERSION,
            device: shared.name.clone(),
            queue: OBSERVER_QUEUE_BYTES as u32,
            server_us: now_us(),
        };
        let (ctl_tx, mut ctl_rx) = mpsc::channel::<observe::ServerMsg>(16);
        let wq = queue.clone();
        let mut writer = tokio::spawn(async move {
            let mut out = BytesMut::with_capacity(16 * 1024);
            welcome.encode(&mut out);
            send.write_all(&out).await.map_err(|e| e.to_string())?;
            let mut chunks = Vec::new();
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
                        None => { let _ = send.finish(); return Ok(()); }
                    },
                    r = wq.pop_all(&mut chunks) => {
                        if r.is_none() { let _ = send.finish(); return Ok(()); }
                        let dropped = wq.take_dropped();
                        if dropped > 0 {
                            observe::ServerMsg::Dropped(dropped).encode(&mut out);
                        }
                        for o in chunks.drain(..) {
                            for m in observe::ServerMsg::bytes_chunks(o.direction, o.stamp_us, o.data) {
                                m.encode(&mut out);
                            }
                        }
                    }
                    e = events.recv() => match e {
                        Ok(Event::DeviceLost(r)) => observe::ServerMsg::DeviceLost(r).encode(&mut out),
                        Ok(Event::DeviceRestored) => observe::ServerMsg::DeviceRestored.encode(&mut out),
                        Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => continue,
                        Err(broadcast::error::RecvError::Closed) => return Ok(()),
                    },
                }
                send.write_all(&out).await.map_err(|e| e.to_string())?;
                if last {
                    let _ = send.finish();
                    return Ok(());
                }
            }
        });
        let result = loop {
            tokio::select! {
                w = &mut writer => {
                    break match w {
                        Ok(Ok(())) => Ok(()),
                        Ok(Err(e)) => Err(SessionError::Closed(e)),
                        Err(e) => Err(SessionError::Closed(e.to_string())),
                    };
                }
                m = reader.next(observe::ClientMsg::decode) => match m {
                    Ok(Some(observe::ClientMsg::Ping { id, client_us })) => {
                        let _ = ctl_tx.try_send(observe::ServerMsg::Pong { id, client_us, server_us: now_us() });
                    }
                    Ok(Some(observe::ClientMsg::Hello { .. })) => {
                        break Err(SessionError::Protocol("second Hello".into()));
                    }
                    Ok(None) => break Ok(()),
                    Err(xoq_transport::framed::FramedError::Decode(e)) => {
                        let why = crate::session::observer_violation(&e, &shared.name, INSTEAD);
                        tracing::warn!(%peer, port = %shared.name, "observer closed: {why}");
                        let _ = ctl_tx.send(observe::ServerMsg::Refused { code: RefuseCode::WritesOff, message: why.clone() }).await;
                        break Err(SessionError::Protocol(why));
                    }
                    Err(e) => break Err(classify(e)),
                },
            }
        };
        drop(ctl_tx);
        queue.close();
        if !writer.is_finished() {
            // Let the writer send the refusal (or what is queued) and finish the stream.
            let _ = tokio::time::timeout(Duration::from_millis(500), &mut writer).await;
            writer.abort();
        }
        result
    }

    /// Bridge this port to a relay: device bytes are published on `{name}/s2c` (track
    /// `data`, plus `ctl`), and with relay writes on, bytes of every in-sync writer
    /// `{name}/c2s/<writer>` are written to the device. Both directions, stamped, go to
    /// `{name}/observe` (track `data`, one [`observe::ServerMsg`] per frame). Runs until the
    /// session ends for good.
    pub async fn serve_moq(&self, session: &MoqSession, name: &str) -> Result<(), ServerError> {
        let shared = &self.shared;
        let ids_from = shared.clone();
        let (bridge, mut bridge_events) = RelayBridge::start(
            session,
            name,
            BridgeConfig {
                down: "s2c",
                up: "c2s",
                writes: shared.relay_writes,
            },
            Arc::new(move || ids_from.next_session.fetch_add(1, Ordering::Relaxed)),
            shared.relay_stats.clone(),
        )?;
        let session_id = shared.next_session.fetch_add(1, Ordering::Relaxed);
        let queue = Arc::new(Queue::bytes(CLIENT_QUEUE_BYTES, Overflow::DropOldest));
        shared.add_sink(session_id, queue.clone());
        let _guard = SinkGuard {
            shared: shared.clone(),
            session: session_id,
        };
        let mut events = shared.events.subscribe();
        let (_observe_bc, mut observe_tracks) = session.publish_tracks(
            &format!("{name}/{}", observe::OBSERVE_BROADCAST),
            &[xoq_transport::moq::DATA_TRACK],
        )?;
        let observe_track = observe_tracks.pop().ok_or_else(|| {
            ServerError::Transport(xoq_transport::TransportError::Moq {
                operation: "create track",
                reason: "no observe track".into(),
            })
        })?;
        // The observe track ending (its broadcast gone) must not end the bridge.
        let observed = async {
            relay_observer(shared.clone(), observe_track).await;
            std::future::pending::<()>().await
        };
        let out = async {
            let mut chunks = Vec::new();
            while queue.pop_all(&mut chunks).await.is_some() {
                for c in chunks.drain(..) {
                    if let Err(e) = bridge.write(c) {
                        tracing::warn!("relay s2c: {e}");
                    }
                }
            }
        };
        let inp = async {
            loop {
                tokio::select! {
                    ev = bridge_events.recv() => match ev {
                        Some(BridgeEvent::Data { payload, .. }) => {
                            shared.writes.push_bounded(WriteChunk { data: payload, accepted: None }, RELAY_WRITE_QUEUE).await;
                        }
                        Some(_) => {}
                        None => return,
                    },
                    e = events.recv() => match e {
                        Ok(Event::DeviceLost(r)) => bridge.notice(&Ctl::DeviceLost(r)),
                        Ok(Event::DeviceRestored) => bridge.notice(&Ctl::DeviceRestored),
                        Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => {}
                        Err(broadcast::error::RecvError::Closed) => return,
                    },
                }
            }
        };
        tokio::select! {
            _ = out => {},
            _ = inp => {},
            _ = observed => {},
            r = session.closed() => {
                if let Err(e) = r {
                    tracing::error!("relay session ended: {e}");
                }
            },
        }
        Ok(())
    }
}

/// The relay's observe track: an observer queue for as long as the bridge runs, each
/// observation one frame. Always on, not only while subscribed: the relay's own subscription
/// comes and goes (it may look at a track and leave before a viewer asks for it), and a serial
/// line is light (a 1 Mbaud bus is at most 100 kB/s each way).
async fn relay_observer(shared: Arc<Shared>, mut track: xoq_transport::moq::TrackWriter) {
    let id = shared.next_session.fetch_add(1, Ordering::Relaxed);
    let queue = shared.add_observer(id);
    let _guard = ObserverGuard {
        shared: shared.clone(),
        id,
    };
    let mut events = shared.events.subscribe();
    let mut chunks = Vec::new();
    loop {
        let mut msgs = Vec::new();
        tokio::select! {
            r = queue.pop_all(&mut chunks) => {
                if r.is_none() {
                    return;
                }
                let dropped = queue.take_dropped();
                if dropped > 0 {
                    msgs.push(observe::ServerMsg::Dropped(dropped));
                }
                for o in chunks.drain(..) {
                    msgs.extend(observe::ServerMsg::bytes_chunks(o.direction, o.stamp_us, o.data));
                }
            }
            e = events.recv() => match e {
                Ok(Event::DeviceLost(r)) => msgs.push(observe::ServerMsg::DeviceLost(r)),
                Ok(Event::DeviceRestored) => msgs.push(observe::ServerMsg::DeviceRestored),
                Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => {}
                Err(broadcast::error::RecvError::Closed) => return,
            },
        }
        for m in msgs {
            if let Err(e) = track.write(m.to_bytes()) {
                tracing::debug!("relay observe: {e}");
            }
        }
    }
}

/// What an observer that tried to write should do instead.
const INSTEAD: &str = "to write to the port, open it as a controller (ALPN xoq/serial/1)";

/// Removes an observer's queue when its session (or the relay's subscription) ends.
struct ObserverGuard {
    shared: Arc<Shared>,
    id: u64,
}

impl Drop for ObserverGuard {
    fn drop(&mut self) {
        self.shared.remove_observer(self.id);
    }
}

/// A stream error from the client: a lost connection is not a protocol violation.
fn classify(e: xoq_transport::framed::FramedError) -> SessionError {
    match e {
        xoq_transport::framed::FramedError::Decode(d) => SessionError::Protocol(d.to_string()),
        other => SessionError::Closed(other.to_string()),
    }
}

async fn refuse(send: &mut iroh::endpoint::SendStream, code: RefuseCode, message: String) {
    crate::session::refuse(send, |out| ServerMsg::Refused { code, message }.encode(out)).await;
}

/// Releases the port and the client's queue when a session ends, however it ends.
struct SessionGuard {
    shared: Arc<Shared>,
    session: u64,
}

impl Drop for SessionGuard {
    fn drop(&mut self) {
        self.shared.remove_sink(self.session);
        if let Ok(mut c) = self.shared.controller.lock()
            && c.as_ref().is_some_and(|c| c.session == self.session)
        {
            *c = None;
        }
    }
}

struct SinkGuard {
    shared: Arc<Shared>,
    session: u64,
}

impl Drop for SinkGuard {
    fn drop(&mut self) {
        self.shared.remove_sink(self.session);
    }
}

/// How a client session ended abnormally.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SessionError {
    /// The client was refused (busy, version, unsupported settings).
    #[error("refused: {0}")]
    Refused(String),
    /// The client broke the protocol.
    #[error("protocol error: {0}")]
    Protocol(String),
    /// Another client took over.
    #[error("taken over by another client")]
    TakenOver,
    /// The connection closed.
    #[error("connection closed: {0}")]
    Closed(String),
}

impl ProtocolHandler for SerialServer {
    async fn accept(&self, connection: Connection) -> Result<(), AcceptError> {
        // Session outcomes are logged; they are not errors of the accept loop.
        let _ = self.serve_connection(connection).await;
        Ok(())
    }
}
