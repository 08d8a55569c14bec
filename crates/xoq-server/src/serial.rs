//! The serial bridge server.
//!
//! Data path: a device reader task pushes bytes into one bounded [`ByteQueue`] per client:
//! the P2P controller's queue *blocks* (the device reader waits, so the kernel buffer and
//! flow control behave as for a local program that stops reading), the MoQ track's queue
//! drops the oldest bytes (counted) so the relay side never holds the device back; a client session writes bytes and control
//! requests to the device in stream order under one lock, so a baud change lands exactly
//! between the bytes sent before and after it.
//!
//! Ownership: one P2P controller at a time. A second client is refused with "port busy (held
//! by <id>)", or, with takeover, replaces the first (which is told [`Event::TakenOver`]).
//! MoQ clients write to `{path}/c2s` and read `{path}/s2c` alongside the P2P controller.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use iroh::EndpointId;
use iroh::endpoint::Connection;
use iroh::protocol::{AcceptError, ProtocolHandler};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::{Notify, broadcast, mpsc};
use xoq_device::DeviceError;
use xoq_device::serial::{SerialBackend, SerialControl, SerialWriter};
use xoq_transport::framed::FramedReader;
use xoq_transport::moq::MoqSession;
use xoq_wire::serial::{
    ClearBuffer, ClientMsg, Command, Event, Hello, LineSettings, RefuseCode, Reply, ServerMsg,
    VERSION, Welcome,
};

use crate::queue::{ByteQueue, Overflow};

/// Bytes buffered per client between the device and the network before the oldest are dropped.
pub const CLIENT_QUEUE_BYTES: usize = 1 << 20;
/// How long a new connection may take to send its handshake.
const HELLO_TIMEOUT: Duration = Duration::from_secs(10);
/// Upper bound of a drain request (flush()): a wedged line must not hang the client forever.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(5);
/// Delay between attempts to reopen a device that disappeared.
const REOPEN_INTERVAL: Duration = Duration::from_millis(500);

/// Errors starting a serial server.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ServerError {
    /// The device could not be opened at startup.
    #[error(transparent)]
    Device(#[from] DeviceError),
    /// MoQ publishing failed.
    #[error(transparent)]
    Transport(#[from] xoq_transport::TransportError),
}

/// Configures and starts a [`SerialServer`].
#[must_use]
pub struct SerialServerBuilder {
    backend: Box<dyn SerialBackend>,
    settings: LineSettings,
    takeover: bool,
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

    /// Open the device and start serving it. Fails if the device cannot be opened now;
    /// later disappearances are handled by reopening.
    pub async fn start(self) -> Result<SerialServer, ServerError> {
        let open = self.backend.open(&self.settings)?;
        let (events, _) = broadcast::channel(64);
        let shared = Arc::new(Shared {
            name: self.backend.name().to_string(),
            takeover: self.takeover,
            io: tokio::sync::Mutex::new(Some(DeviceIo {
                writer: open.writer,
                control: open.control,
            })),
            settings: Mutex::new(self.settings),
            sinks: Mutex::new(Vec::new()),
            controller: Mutex::new(None),
            events,
            next_session: AtomicU64::new(1),
            stats: Stats::default(),
        });
        let task = tokio::spawn(device_task(shared.clone(), self.backend, open.reader));
        Ok(SerialServer {
            shared,
            _task: Arc::new(AbortOnDrop(task)),
        })
    }
}

struct AbortOnDrop(tokio::task::JoinHandle<()>);
impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// A running serial server. Cheap to clone; the device task stops when the last clone drops.
#[derive(Clone)]
pub struct SerialServer {
    shared: Arc<Shared>,
    _task: Arc<AbortOnDrop>,
}

impl std::fmt::Debug for SerialServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SerialServer")
            .field("port", &self.shared.name)
            .finish()
    }
}

struct DeviceIo {
    writer: SerialWriter,
    control: Box<dyn SerialControl>,
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
}

struct Controller {
    id: EndpointId,
    session: u64,
    kick: Arc<Notify>,
    kicked_by: Arc<Mutex<Option<EndpointId>>>,
}

struct Shared {
    name: String,
    takeover: bool,
    io: tokio::sync::Mutex<Option<DeviceIo>>,
    settings: Mutex<LineSettings>,
    sinks: Mutex<Vec<(u64, Arc<ByteQueue>)>>,
    controller: Mutex<Option<Controller>>,
    events: broadcast::Sender<Event>,
    next_session: AtomicU64,
    stats: Stats,
}

impl Shared {
    async fn fanout(&self, data: Bytes) {
        let sinks: Vec<Arc<ByteQueue>> = match self.sinks.lock() {
            Ok(s) => s.iter().map(|(_, q)| q.clone()).collect(),
            Err(_) => return,
        };
        for q in sinks {
            q.push_wait(data.clone()).await;
        }
    }

    fn add_sink(&self, id: u64, q: Arc<ByteQueue>) {
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

    /// Write client bytes to the device, in order with control operations.
    async fn write(&self, data: &[u8]) {
        let mut io = self.io.lock().await;
        match io.as_mut() {
            Some(dev) => match dev.writer.write_all(data).await {
                Ok(()) => {
                    self.stats
                        .tx_bytes
                        .fetch_add(data.len() as u64, Ordering::Relaxed);
                }
                Err(e) => {
                    // The reader notices the loss and starts reopening; report once there.
                    tracing::debug!(port = %self.name, "write failed: {e}");
                    self.stats
                        .tx_discarded
                        .fetch_add(data.len() as u64, Ordering::Relaxed);
                }
            },
            None => {
                self.stats
                    .tx_discarded
                    .fetch_add(data.len() as u64, Ordering::Relaxed);
            }
        }
    }

    /// Run a control command; `Err` carries the message for the client.
    async fn control(&self, cmd: &Command, own_queue: Option<&ByteQueue>) -> Result<(), String> {
        let mut io = self.io.lock().await;
        let Some(dev) = io.as_mut() else {
            return Err(format!(
                "{} is unavailable (unplugged?); the server reopens it when it returns",
                self.name
            ));
        };
        let r = match cmd {
            Command::SetSettings(s) => {
                let r = dev.control.set_settings(s);
                if r.is_ok()
                    && let Ok(mut cur) = self.settings.lock()
                {
                    *cur = *s;
                }
                r
            }
            Command::Drain => {
                let _ = dev.writer.flush().await;
                let deadline = tokio::time::Instant::now() + DRAIN_TIMEOUT;
                loop {
                    match dev.control.pending_output() {
                        Ok(0) => break Ok(()),
                        Ok(_) if tokio::time::Instant::now() >= deadline => {
                            break Err(format!(
                                "drain of {} did not finish in {}s (flow control holding the line?)",
                                self.name,
                                DRAIN_TIMEOUT.as_secs()
                            ));
                        }
                        // Control path, not data path: poll the driver's queue at 1 kHz.
                        Ok(_) => tokio::time::sleep(Duration::from_millis(1)).await,
                        Err(e) => break Err(e.to_string()),
                    }
                }
                .map_err(|e| {
                    tracing::warn!("{e}");
                    e
                })?;
                Ok(())
            }
            Command::Clear(which) => {
                if matches!(which, ClearBuffer::Input | ClearBuffer::All)
                    && let Some(q) = own_queue
                {
                    q.clear();
                }
                dev.control.clear(*which)
            }
            Command::Break(ms) => {
                let ms = (*ms).min(10_000);
                match dev.control.set_break(true) {
                    Ok(()) => {
                        tokio::time::sleep(Duration::from_millis(u64::from(ms))).await;
                        dev.control.set_break(false)
                    }
                    Err(e) => Err(e),
                }
            }
            Command::SetDtr(on) => dev.control.set_dtr(*on),
            Command::SetRts(on) => dev.control.set_rts(*on),
            _ => return Err("command not supported by this server version".into()),
        };
        r.map_err(|e| e.to_string())
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
                    shared.stats.rx_bytes.fetch_add(n as u64, Ordering::Relaxed);
                    shared.fanout(buf.split().freeze()).await;
                }
                Err(e) => break e.to_string(),
            }
        };
        *shared.io.lock().await = None;
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
                    *shared.io.lock().await = Some(DeviceIo {
                        writer: open.writer,
                        control: open.control,
                    });
                    tracing::info!(port = %shared.name, "device is back");
                    let _ = shared.events.send(Event::DeviceRestored);
                    break;
                }
                Err(e) => tracing::debug!(port = %shared.name, "reopen failed: {e}"),
            }
        }
    }
}

impl SerialServer {
    /// Serve `backend` (see [`xoq_device::serial::backend`]).
    pub fn builder(backend: Box<dyn SerialBackend>) -> SerialServerBuilder {
        SerialServerBuilder {
            backend,
            settings: LineSettings::new(115_200),
            takeover: false,
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

    /// Endpoint id of the current P2P controller, if any.
    pub fn controller(&self) -> Option<EndpointId> {
        self.shared
            .controller
            .lock()
            .ok()
            .and_then(|c| c.as_ref().map(|c| c.id))
    }

    /// Serve one P2P connection until it ends.
    pub async fn serve_connection(&self, conn: Connection) -> Result<(), SessionError> {
        let peer = conn.remote_id();
        let (send, recv) = conn
            .accept_bi()
            .await
            .map_err(|e| SessionError::Closed(e.to_string()))?;
        let r = self.serve_stream(peer, send, recv).await;
        match &r {
            Ok(()) => tracing::info!(%peer, port = %self.shared.name, "client left"),
            Err(e) => tracing::info!(%peer, port = %self.shared.name, "client session ended: {e}"),
        }
        // Give the last messages (a refusal) time to reach the peer before closing.
        let _ = tokio::time::timeout(Duration::from_secs(2), conn.closed()).await;
        r
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
        let kicked_by = Arc::new(Mutex::new(None));
        let busy = {
            let mut ctl = match shared.controller.lock() {
                Ok(c) => c,
                Err(p) => p.into_inner(),
            };
            match ctl.as_ref() {
                // The same endpoint id reconnecting is the controller itself after a crash or
                // a lost link: let it replace its stale session instead of waiting for the
                // idle timeout.
                Some(cur) if !shared.takeover && cur.id != peer => Some(cur.id),
                other => {
                    if let Some(cur) = other {
                        if let Ok(mut by) = cur.kicked_by.lock() {
                            *by = Some(peer);
                        }
                        cur.kick.notify_one();
                        tracing::info!(old = %cur.id, new = %peer, "takeover: new client replaces the current one");
                    }
                    *ctl = Some(Controller {
                        id: peer,
                        session,
                        kick: kick.clone(),
                        kicked_by: kicked_by.clone(),
                    });
                    None
                }
            }
        };
        if let Some(holder) = busy {
            tracing::info!(%peer, %holder, "refused: port busy");
            refuse(
                &mut send,
                RefuseCode::Busy,
                format!(
                    "port {} busy (held by {holder}); retry when it is released, or start the server with --takeover",
                    shared.name
                ),
            )
            .await;
            return Err(SessionError::Refused("busy".into()));
        }
        let _guard = SessionGuard {
            shared: shared.clone(),
            session,
        };

        let queue = Arc::new(ByteQueue::with_policy(CLIENT_QUEUE_BYTES, Overflow::Block));
        if let Some(s) = settings
            && let Err(e) = shared.control(&Command::SetSettings(s), None).await
        {
            refuse(&mut send, RefuseCode::BadSettings, e.clone()).await;
            return Err(SessionError::Refused(e));
        }
        // Subscribe before Welcome: no byte the device sends after the handshake is missed.
        shared.add_sink(session, queue.clone());
        let mut events = shared.events.subscribe();
        tracing::info!(%peer, %client, port = %shared.name, "client connected");

        let (ctl_tx, mut ctl_rx) = mpsc::channel::<ServerMsg>(64);
        let welcome = ServerMsg::Welcome(Welcome {
            version: VERSION,
            settings: shared.settings(),
            port: shared.name.clone(),
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
                        let by = kicked_by.lock().ok().and_then(|b| *b).map(|b| b.to_string()).unwrap_or_default();
                        ServerMsg::Event(Event::TakenOver(format!("another client ({by}) took over the port"))).encode(&mut out);
                        let _ = send.write_all(&out).await;
                        let _ = send.finish();
                        return Err("taken over".to_string());
                    }
                    m = ctl_rx.recv() => match m {
                        Some(m) => m.encode(&mut out),
                        None => { let _ = send.finish(); return Ok(()); }
                    },
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
                send.write_all(&out).await.map_err(|e| e.to_string())?;
            }
        });

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
                    Ok(Some(ClientMsg::Data(d))) => shared.write(&d).await,
                    Ok(Some(ClientMsg::Request(req))) => {
                        let error = shared.control(&req.command, Some(&queue)).await.err();
                        if let Some(e) = &error {
                            tracing::debug!(%peer, "request {:?} failed: {e}", req.command);
                        }
                        if ctl_tx.send(ServerMsg::Reply(Reply { id: req.id, error })).await.is_err() {
                            break Err(SessionError::Closed("writer ended".into()));
                        }
                    }
                    Ok(Some(ClientMsg::Hello(_))) => break Err(SessionError::Protocol("second Hello".into())),
                    Ok(None) => break Ok(()),
                    Err(e) => break Err(SessionError::Protocol(e.to_string())),
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

    /// Bridge this port to MoQ: bytes from subscribers of `{name}/c2s` (track `data`) are
    /// written to the device and device bytes are published on `{name}/s2c`. Runs until the
    /// session ends for good.
    pub async fn serve_moq(&self, session: &MoqSession, name: &str) -> Result<(), ServerError> {
        let shared = &self.shared;
        let (_bc, mut writers) =
            session.publish_tracks(&format!("{name}/s2c"), &[xoq_transport::moq::DATA_TRACK])?;
        let Some(mut s2c) = writers.pop() else {
            return Ok(());
        };
        let session_id = shared.next_session.fetch_add(1, Ordering::Relaxed);
        let queue = Arc::new(ByteQueue::new(CLIENT_QUEUE_BYTES));
        shared.add_sink(session_id, queue.clone());
        let _guard = SinkGuard {
            shared: shared.clone(),
            session: session_id,
        };
        // Every writer: `{name}/c2s` (XoQ 0.3.6 pages) and each client's `{name}/c2s/<id>`.
        let mut c2s = session.read_writers(&format!("{name}/c2s"), xoq_transport::moq::DATA_TRACK);
        let out = async {
            let mut chunks = Vec::new();
            while queue.pop_all(&mut chunks).await.is_some() {
                for c in chunks.drain(..) {
                    if let Err(e) = s2c.write(c) {
                        tracing::warn!("MoQ s2c: {e}");
                    }
                }
            }
        };
        let inp = async {
            loop {
                match c2s.next().await {
                    Some(d) => shared.write(&d).await,
                    None => return,
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

async fn refuse(send: &mut iroh::endpoint::SendStream, code: RefuseCode, message: String) {
    let mut out = BytesMut::new();
    ServerMsg::Refused { code, message }.encode(&mut out);
    let _ = send.write_all(&out).await;
    let _ = send.finish();
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
    /// The client was refused (busy, version, bad settings).
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
