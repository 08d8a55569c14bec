//! The client side of a relay bridge, shared by the serial and CAN clients: this client's own
//! writer broadcast toward the device, the server's stream from the device and its control
//! track, and the relay session protocol of [`xoq_wire::relay`] between them.
//!
//! The client answers the server's `Hello` with `Sync` in band on its writer track, and reads
//! the server's data from the group the server names in `Synced`: no command written before
//! the server subscribed reaches the device, and no device data from before this client
//! connected reaches the caller (the relay's replayed backlog is dropped by a marker, not by
//! timing). When the server's broadcast disappears (server stopped) or the relay session
//! drops, the link goes down; a new `Hello` (new nonce) brings it back.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use xoq_transport::moq::{
    DATA_TRACK, MoqSession, ReaderEvent, RelayStatus, TrackReader, TrackWriter, broadcast,
};
use xoq_wire::relay::{CTL_TRACK, Ctl, WriterMsg};

use crate::ClientError;
use crate::clock::{Clock, local_now_us};
use crate::link::Link;

/// How long a client waits for the server's broadcast to be announced.
const SERVER_WAIT: Duration = Duration::from_secs(5);
/// How long a client waits for the server to acknowledge its writer. A relay that does not
/// let this client publish (its token grants subscribe only) gives a read-only client.
const SYNC_WAIT: Duration = Duration::from_secs(3);
/// Data frames held while a (re)sync is pending, at most (drop-oldest beyond).
const PENDING_MAX: usize = 1024;
/// Clock probes: a few at once after a sync, then one a second.
const PING_EVERY: Duration = Duration::from_secs(1);

/// A fresh name for this client's own writer broadcast (`{path}/cmd/<id>`, `{path}/c2s/<id>`):
/// every writer gets its own, so the server reads all of them at once.
fn writer_id() -> String {
    let bytes: [u8; 8] = rand::random();
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Where the client stands in the relay session protocol.
#[derive(Debug, Default)]
struct SyncState {
    /// The nonce of the server's latest Hello we answered.
    answered: Option<u64>,
    /// The data group our view starts at (set by Synced).
    data_group: Option<u64>,
    /// Whether the server accepts writes from relay writers.
    writes: bool,
    /// The server never acknowledged our writer: read-only.
    read_only: bool,
    /// The last refusal the server sent us, handed to the next write.
    refused: Option<(u16, String)>,
    /// Data frames received while not in sync, with their group.
    pending: VecDeque<(u64, Bytes)>,
}

/// What the service does with the server's stream and notices.
pub(crate) struct Handlers {
    /// One frame of the device's stream, in order.
    pub(crate) data: Box<dyn Fn(Bytes) + Send + Sync>,
    /// A notice for every client (bus state, device lost/back).
    pub(crate) notice: Box<dyn Fn(Ctl) + Send + Sync>,
}

/// This client's writer broadcast: replaced by a fresh one (new name) after the session to
/// the relay comes back, so the server sees a new writer and syncs with it.
struct Publisher {
    name: String,
    writer: TrackWriter,
    broadcast: broadcast::Producer,
}

struct Shared {
    /// Where writers are published (`{path}/{up}`) and on which origin.
    up: String,
    origin: xoq_transport::moq::origin::Producer,
    publisher: Mutex<Publisher>,
    sync: Mutex<SyncState>,
    clock: Clock,
    link: Link,
    handlers: Handlers,
    peer: String,
}

impl Shared {
    fn sync(&self) -> std::sync::MutexGuard<'_, SyncState> {
        match self.sync.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        }
    }

    fn publisher(&self) -> std::sync::MutexGuard<'_, Publisher> {
        match self.publisher.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        }
    }

    fn writer_name(&self) -> String {
        self.publisher().name.clone()
    }

    fn write_msg(&self, msg: &WriterMsg, new_group: bool) -> Result<(), ClientError> {
        let mut b = Vec::with_capacity(msg.encoded_len());
        msg.encode(&mut b);
        self.publisher()
            .writer
            .write_grouped(Bytes::from(b), new_group)
            .map_err(|e| ClientError::Closed(e.to_string()))
    }

    /// Publish this client's writer under a fresh name (the old broadcast is retracted).
    fn republish(&self) -> Result<(), ClientError> {
        let name = writer_id();
        let (broadcast, mut writers) = xoq_transport::moq::publish_on(
            &self.origin,
            &format!("{}/{name}", self.up),
            &[DATA_TRACK],
        )?;
        let writer = writers
            .pop()
            .ok_or_else(|| ClientError::Connect("no writer track".into()))?;
        let old = std::mem::replace(
            &mut *self.publisher(),
            Publisher {
                name,
                writer,
                broadcast,
            },
        );
        old.broadcast.close();
        Ok(())
    }

    fn deliver(&self, group: u64, payload: Bytes) {
        let mut s = self.sync();
        match s.data_group {
            Some(g) if group >= g => {
                drop(s);
                (self.handlers.data)(payload);
            }
            // History from before this client's view started: the relay's backlog.
            Some(_) => {}
            None => {
                if s.pending.len() == PENDING_MAX {
                    s.pending.pop_front();
                }
                s.pending.push_back((group, payload));
            }
        }
    }

    fn start_view(&self, group: u64) {
        let ready: Vec<Bytes> = {
            let mut s = self.sync();
            s.data_group = Some(group);
            s.pending
                .drain(..)
                .filter(|(g, _)| *g >= group)
                .map(|(_, b)| b)
                .collect()
        };
        for b in ready {
            (self.handlers.data)(b);
        }
    }

    fn on_ctl(&self, msg: Ctl) {
        let mine = msg.writer() == Some(self.writer_name().as_str());
        match msg {
            Ctl::Hello { nonce, writes, .. } if mine => {
                let resync = {
                    let mut s = self.sync();
                    if s.answered == Some(nonce) {
                        false
                    } else {
                        s.answered = Some(nonce);
                        s.writes = writes;
                        if !s.read_only {
                            s.data_group = None;
                        }
                        true
                    }
                };
                if resync {
                    // A new subscription of the server (first one, or after a restart):
                    // everything we write from here on is after it.
                    if let Err(e) = self.write_msg(&WriterMsg::Sync { nonce }, true) {
                        tracing::debug!("relay sync: {e}");
                    }
                }
            }
            Ctl::Synced {
                nonce, data_group, ..
            } if mine && self.sync().answered == Some(nonce) => {
                self.sync().read_only = false;
                self.start_view(data_group);
                self.clock.reset();
                self.ping();
                self.link.up();
            }
            Ctl::Pong {
                client_us,
                server_us,
                ..
            } if mine => self.clock.add(client_us, server_us, local_now_us()),
            Ctl::Refused { code, message, .. } if mine => {
                tracing::warn!(peer = %self.peer, "the server refused this client's writes: {message}");
                self.sync().refused = Some((code, message));
            }
            Ctl::Bye(reason) => self.link.down(format!("the server stopped ({reason})")),
            m if m.writer().is_none() => (self.handlers.notice)(m),
            _ => {}
        }
    }

    fn ping(&self) {
        let msg = WriterMsg::Ping {
            id: rand::random(),
            client_us: local_now_us(),
        };
        let _ = self.write_msg(&msg, false);
    }

    fn gone(&self, why: &str) {
        {
            let mut s = self.sync();
            s.answered = None;
            s.data_group = None;
            s.pending.clear();
        }
        self.link.down(why.to_string());
    }
}

/// Aborts the protocol task when the peer goes away, however it goes.
struct TaskGuard(tokio::task::JoinHandle<()>);

impl Drop for TaskGuard {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// One client's side of a relay bridge.
pub(crate) struct RelayPeer {
    shared: Arc<Shared>,
    session: MoqSession,
    _task: TaskGuard,
}

impl RelayPeer {
    /// Publish this client's writer under `{name}/{up}`, open the server's `{name}/{down}`
    /// and get in sync. `missing` is the error message when no
    /// server publishes `name`.
    pub(crate) async fn open(
        session: MoqSession,
        name: &str,
        (up, down): (&str, &str),
        handlers: Handlers,
        link: Link,
        clock: Clock,
        missing: impl FnOnce() -> String,
    ) -> Result<Self, ClientError> {
        let writer_name = writer_id();
        let up_path = format!("{name}/{up}");
        let (broadcast, mut writers) =
            session.publish_tracks(&format!("{up_path}/{writer_name}"), &[DATA_TRACK])?;
        let writer = writers
            .pop()
            .ok_or_else(|| ClientError::Connect(format!("no {up} track")))?;
        let server = format!("{name}/{down}");
        let mut ctl = session.read_track(&server, CTL_TRACK);
        let mut data = session.read_track(&server, DATA_TRACK);
        // A missing server is an error at connect time, not a silent hang on the first read;
        // so is a relay that ends the session (refused credentials end it right after setup).
        let mut status = session.status();
        let refused = async move {
            loop {
                if let RelayStatus::Closed(reason) = &*status.borrow_and_update() {
                    return reason.clone();
                }
                if status.changed().await.is_err() {
                    return "the session to the relay ended".to_string();
                }
            }
        };
        tokio::select! {
            r = tokio::time::timeout(SERVER_WAIT, async {
                ctl.ready().await?;
                data.ready().await
            }) => r.map_err(|_| ClientError::Connect(missing()))??,
            reason = refused => return Err(ClientError::Connect(format!("relay {}: {reason}", session.url()))),
        }
        let peer = format!("{}/{name}", session.url());
        let shared = Arc::new(Shared {
            up: up_path,
            origin: session.publish.clone(),
            publisher: Mutex::new(Publisher {
                name: writer_name,
                writer,
                broadcast,
            }),
            sync: Mutex::new(SyncState::default()),
            clock,
            link,
            handlers,
            peer: peer.clone(),
        });
        // `link` starts down (connecting): up once the server acknowledges us.
        let task = tokio::spawn(run(shared.clone(), ctl, data, session.status()));
        match shared.link.wait_up(Some(SYNC_WAIT)).await {
            Ok(()) => {}
            Err(ClientError::Timeout(_)) => {
                // Nobody acknowledged our writer: the relay did not let us publish, or the
                // server is older. Read what is published from now on; writes fail clearly.
                let latest = {
                    let mut s = shared.sync();
                    s.read_only = true;
                    s.pending.back().map(|(g, _)| *g)
                };
                tracing::warn!(%peer, "the server does not see this client's writer: read-only (does the relay token grant publishing under {name}/{up}?)");
                shared.start_view(latest.map_or(0, |g| g + 1));
                shared.link.up();
            }
            Err(e) => return Err(e),
        }
        Ok(Self {
            shared,
            session,
            _task: TaskGuard(task),
        })
    }

    /// Send service payload to the device, or say why it cannot go.
    pub(crate) fn write_data(&self, payload: &[u8]) -> Result<(), ClientError> {
        {
            let mut s = self.shared.sync();
            if let Some((code, message)) = s.refused.take() {
                return Err(ClientError::Refused {
                    code: xoq_wire::serial::RefuseCode::from_code(code),
                    message,
                });
            }
            if s.read_only {
                return Err(ClientError::Unsupported(format!(
                    "{}: the server never acknowledged this client's writer, so nothing written here would reach the device: the relay token must grant publishing (xoq token --publish <path>)",
                    self.shared.peer
                )));
            }
            if s.answered.is_some() && !s.writes {
                return Err(ClientError::Refused {
                    code: xoq_wire::serial::RefuseCode::NotAllowed,
                    message: format!(
                        "{}: this server does not accept writes through the relay (--moq-writes off, the default); connect P2P, or restart it with --moq-writes on behind a relay that checks tokens",
                        self.shared.peer
                    ),
                });
            }
        }
        if let Some(e) = self.shared.link.unavailable() {
            return Err(e);
        }
        let mut b = Vec::with_capacity(1 + payload.len());
        WriterMsg::Data(Bytes::new()).encode(&mut b);
        b.extend_from_slice(payload);
        self.shared
            .publisher()
            .writer
            .write(Bytes::from(b))
            .map_err(|e| ClientError::Closed(e.to_string()))
    }

    /// Close the writer and the session.
    pub(crate) async fn close(self) {
        let Self {
            shared,
            session,
            _task,
        } = self;
        drop(_task);
        shared.publisher().broadcast.close();
        session.close().await;
    }
}

async fn run(
    shared: Arc<Shared>,
    mut ctl: TrackReader,
    mut data: TrackReader,
    mut status: tokio::sync::watch::Receiver<RelayStatus>,
) {
    let mut ping = tokio::time::interval(PING_EVERY);
    ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // The session is up now: only later changes mean a new session.
    status.borrow_and_update();
    loop {
        tokio::select! {
            ev = ctl.next_event() => match ev {
                Ok(ReaderEvent::Frame { payload, .. }) => match Ctl::decode(&payload) {
                    Ok(m) => shared.on_ctl(m),
                    Err(e) => tracing::debug!("undecodable relay ctl: {e}"),
                },
                Ok(ReaderEvent::Gone) => shared.gone("the server's broadcast is gone (server stopped or unreachable)"),
                Ok(ReaderEvent::Back) => tracing::debug!("the server's broadcast is back"),
                Err(e) => {
                    shared.link.close(format!("relay: {e}"));
                    return;
                }
            },
            ev = data.next_event() => match ev {
                Ok(ReaderEvent::Frame { group, payload }) => shared.deliver(group, payload),
                Ok(_) => {}
                Err(e) => {
                    shared.link.close(format!("relay: {e}"));
                    return;
                }
            },
            c = status.changed() => {
                if c.is_err() {
                    return;
                }
                let st = status.borrow_and_update().clone();
                tracing::debug!(peer = %shared.peer, "relay session status: {st:?}");
                match st {
                    RelayStatus::Reconnecting => shared.gone("the session to the relay dropped"),
                    RelayStatus::Connected => {
                        // A new session: subscribe afresh (the old subscriptions may hang)
                        // and publish the writer anew, so the server subscribes and syncs.
                        ctl.resubscribe();
                        data.resubscribe();
                        if let Err(e) = shared.republish() {
                            tracing::warn!("relay writer: {e}");
                        }
                    }
                    RelayStatus::Closed(reason) => {
                        shared.link.close(reason);
                        return;
                    }
                    _ => {}
                }
            },
            _ = ping.tick() => {
                if shared.link.is_up() {
                    shared.ping();
                }
            }
        }
    }
}
