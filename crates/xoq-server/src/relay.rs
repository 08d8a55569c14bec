//! The server side of a relay bridge, shared by every service with a way back to its device
//! (serial, CAN): publish the device's stream and a control track, read every client's own
//! writer broadcast, and run the relay session protocol of [`xoq_wire::relay`] with each, so
//! that nothing a writer sent before the server subscribed reaches the device, and every
//! client knows where its view of the device's stream starts.
//!
//! Layout for a service path `P`: the server publishes `P/{down}` with tracks `data` (the
//! device's stream, format of the service) and `ctl` ([`Ctl`] messages); each client
//! publishes `P/{up}/<writer>` with track `data` ([`WriterMsg`] frames).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::sync::mpsc;
use xoq_device::now_us;
use xoq_transport::TransportError;
use xoq_transport::moq::{DATA_TRACK, MoqSession, TrackWriter, WriterEvent, broadcast};
use xoq_wire::relay::{CTL_TRACK, Ctl, WriterMsg};

/// How often an unanswered [`Ctl::Hello`] is repeated (a client that subscribed to the
/// control track after it was written still sees one soon).
const HELLO_REPEAT: Duration = Duration::from_millis(250);
/// At most one refusal notice per writer per this long (a client streaming refused writes
/// must not flood the control track every other client reads).
const REFUSAL_EVERY: Duration = Duration::from_secs(1);
/// Events waiting for the service; full = the writers' readers wait (backpressure).
const EVENTS: usize = 256;

/// How the bridge treats writers.
#[derive(Debug, Clone)]
pub struct BridgeConfig {
    /// Last segment of the server's broadcast (`s2c`, `state`).
    pub down: &'static str,
    /// Last segment under which clients publish their writers (`c2s`, `cmd`).
    pub up: &'static str,
    /// Whether relay writers may write to the device (`--moq-writes on`).
    pub writes: bool,
}

/// What the bridge hands to the service.
#[derive(Debug)]
pub enum BridgeEvent {
    /// A writer is in sync (its later frames are read); `id` names it from now on.
    Joined {
        /// Server-wide controller id for this writer (fresh per sync).
        id: u64,
        /// Writer name.
        writer: String,
    },
    /// Service payload from an in-sync writer that may write.
    Data {
        /// The writer's id.
        id: u64,
        /// The payload ([`WriterMsg::Data`]).
        payload: Bytes,
    },
    /// Something arrived from the writer (any frame): a liveness signal for safety.
    Heard {
        /// The writer's id.
        id: u64,
    },
    /// The writer is gone (retracted, or re-synced under a new id).
    Left {
        /// The writer's id.
        id: u64,
    },
}

/// Counters of one bridge.
#[derive(Debug, Default)]
pub struct BridgeStats {
    /// Writer frames dropped because they were written before the sync marker.
    pub replay_dropped: AtomicU64,
    /// Data frames refused because relay writes are off.
    pub writes_refused: AtomicU64,
    /// Frames that did not decode.
    pub malformed: AtomicU64,
    /// Writers that completed a sync.
    pub syncs: AtomicU64,
}

/// A running bridge: the service writes the device's stream with [`RelayBridge::write`] and
/// sends notices with [`RelayBridge::notice`].
pub struct RelayBridge {
    data: Arc<Mutex<TrackWriter>>,
    ctl: Arc<Mutex<TrackWriter>>,
    stats: Arc<BridgeStats>,
    _broadcast: broadcast::Producer,
    task: tokio::task::JoinHandle<()>,
}

impl std::fmt::Debug for RelayBridge {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RelayBridge").finish()
    }
}

impl Drop for RelayBridge {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Writer ids are allocated from the same space as P2P sessions by the caller; this hands
/// out ids above it.
pub type IdSource = Arc<dyn Fn() -> u64 + Send + Sync>;

impl RelayBridge {
    /// Publish `{name}/{down}` and start reading writers under `{name}/{up}`, counting in
    /// `stats` (the service keeps them, so they outlive one relay session).
    pub fn start(
        session: &MoqSession,
        name: &str,
        cfg: BridgeConfig,
        ids: IdSource,
        stats: Arc<BridgeStats>,
    ) -> Result<(Self, mpsc::Receiver<BridgeEvent>), TransportError> {
        let (bc, mut tracks) =
            session.publish_tracks(&format!("{name}/{}", cfg.down), &[DATA_TRACK, CTL_TRACK])?;
        let ctl = tracks.pop().ok_or_else(|| TransportError::Moq {
            operation: "create track",
            reason: "no ctl track".into(),
        })?;
        let data = tracks.pop().ok_or_else(|| TransportError::Moq {
            operation: "create track",
            reason: "no data track".into(),
        })?;
        let data = Arc::new(Mutex::new(data));
        let ctl = Arc::new(Mutex::new(ctl));
        let writers = session.read_writers(&format!("{name}/{}", cfg.up), DATA_TRACK);
        let (tx, rx) = mpsc::channel(EVENTS);
        let task = tokio::spawn(run(
            writers,
            Link {
                data: data.clone(),
                ctl: ctl.clone(),
                stats: stats.clone(),
            },
            cfg,
            ids,
            tx,
        ));
        Ok((
            Self {
                data,
                ctl,
                stats,
                _broadcast: bc,
                task,
            },
            rx,
        ))
    }

    /// Append one frame of the device's stream (format of the service).
    pub fn write(&self, payload: Bytes) -> Result<(), TransportError> {
        match self.data.lock() {
            Ok(mut w) => w.write(payload),
            Err(_) => Ok(()),
        }
    }

    /// Publish a notice for every client (bus state, device lost, bye).
    pub fn notice(&self, msg: &Ctl) {
        write_ctl(&self.ctl, msg);
    }

    /// Tell one writer that something it sent was refused.
    pub fn refuse(&self, writer: &str, code: u16, message: String) {
        write_ctl(
            &self.ctl,
            &Ctl::Refused {
                writer: writer.to_string(),
                code,
                message,
            },
        );
    }

    /// Counters.
    pub fn stats(&self) -> &BridgeStats {
        &self.stats
    }
}

fn write_ctl(ctl: &Mutex<TrackWriter>, msg: &Ctl) {
    if let Ok(mut w) = ctl.lock()
        && let Err(e) = w.write(msg.to_bytes())
    {
        tracing::debug!("relay ctl: {e}");
    }
}

struct Link {
    data: Arc<Mutex<TrackWriter>>,
    ctl: Arc<Mutex<TrackWriter>>,
    stats: Arc<BridgeStats>,
}

struct WriterState {
    nonce: u64,
    /// Set once the writer echoed the nonce.
    id: Option<u64>,
    last_hello: Instant,
    last_refusal: Option<Instant>,
}

async fn run(
    mut writers: xoq_transport::moq::Writers,
    link: Link,
    cfg: BridgeConfig,
    ids: IdSource,
    tx: mpsc::Sender<BridgeEvent>,
) {
    let mut state: HashMap<String, WriterState> = HashMap::new();
    let mut tick = tokio::time::interval(HELLO_REPEAT);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let hello = |writer: &str, nonce: u64| Ctl::Hello {
        writer: writer.to_string(),
        nonce,
        writes: cfg.writes,
        server_us: now_us(),
    };
    loop {
        let ev = tokio::select! {
            ev = writers.next() => match ev {
                Some(ev) => ev,
                None => return,
            },
            _ = tick.tick() => {
                for (w, st) in state.iter_mut() {
                    if st.id.is_none() && st.last_hello.elapsed() >= HELLO_REPEAT {
                        write_ctl(&link.ctl, &hello(w, st.nonce));
                        st.last_hello = Instant::now();
                    }
                }
                continue;
            }
        };
        match ev {
            WriterEvent::Joined(w) => {
                if let Some(old) = state.remove(&w)
                    && let Some(id) = old.id
                    && tx.send(BridgeEvent::Left { id }).await.is_err()
                {
                    return;
                }
                let nonce = rand::random::<u64>();
                write_ctl(&link.ctl, &hello(&w, nonce));
                tracing::debug!(writer = %w, "relay writer subscribed");
                state.insert(
                    w,
                    WriterState {
                        nonce,
                        id: None,
                        last_hello: Instant::now(),
                        last_refusal: None,
                    },
                );
            }
            WriterEvent::Left(w) => {
                if let Some(st) = state.remove(&w)
                    && let Some(id) = st.id
                    && tx.send(BridgeEvent::Left { id }).await.is_err()
                {
                    return;
                }
            }
            WriterEvent::Frame { writer, payload } => {
                let Some(st) = state.get_mut(&writer) else {
                    continue;
                };
                let msg = match WriterMsg::decode(&payload) {
                    Ok(m) => m,
                    Err(e) => {
                        link.stats.malformed.fetch_add(1, Ordering::Relaxed);
                        tracing::debug!(%writer, "undecodable writer frame: {e}");
                        continue;
                    }
                };
                if let Some(id) = st.id
                    && tx.send(BridgeEvent::Heard { id }).await.is_err()
                {
                    return;
                }
                match msg {
                    WriterMsg::Sync { nonce } if nonce == st.nonce && st.id.is_none() => {
                        let id = ids();
                        st.id = Some(id);
                        // Data for this client starts at a fresh group: what the relay
                        // replays from older groups is history to it.
                        let group = match link.data.lock() {
                            Ok(mut d) => d.start_group().unwrap_or(0),
                            Err(_) => 0,
                        };
                        write_ctl(
                            &link.ctl,
                            &Ctl::Synced {
                                writer: writer.clone(),
                                nonce,
                                data_group: group,
                            },
                        );
                        link.stats.syncs.fetch_add(1, Ordering::Relaxed);
                        tracing::debug!(%writer, id, group, "relay writer in sync");
                        if tx.send(BridgeEvent::Joined { id, writer }).await.is_err() {
                            return;
                        }
                    }
                    // A stale nonce (from before a restart) or a repeat: nothing to do.
                    WriterMsg::Sync { .. } => {}
                    WriterMsg::Ping { id, client_us } => {
                        write_ctl(
                            &link.ctl,
                            &Ctl::Pong {
                                writer: writer.clone(),
                                id,
                                client_us,
                                server_us: now_us(),
                            },
                        );
                    }
                    WriterMsg::Data(_) if st.id.is_none() => {
                        // Written before this server subscribed: a replay, never forwarded.
                        link.stats.replay_dropped.fetch_add(1, Ordering::Relaxed);
                    }
                    WriterMsg::Data(_) if !cfg.writes => {
                        link.stats.writes_refused.fetch_add(1, Ordering::Relaxed);
                        if st.last_refusal.is_none_or(|t| t.elapsed() >= REFUSAL_EVERY) {
                            st.last_refusal = Some(Instant::now());
                            write_ctl(
                                &link.ctl,
                                &Ctl::Refused {
                                    writer: writer.clone(),
                                    code: xoq_wire::RefuseCode::WritesOff.to_code(),
                                    message: "this server does not accept writes through the relay (started with --moq-writes off, the default); connect P2P, or restart it with --moq-writes on behind a relay that checks tokens".into(),
                                },
                            );
                            tracing::info!(%writer, "refused relay writes (--moq-writes off)");
                        }
                    }
                    WriterMsg::Data(payload) => {
                        let Some(id) = st.id else { continue };
                        if tx.send(BridgeEvent::Data { id, payload }).await.is_err() {
                            return;
                        }
                    }
                }
            }
        }
    }
}
