//! MoQ sessions through a relay, and byte streams carried on MoQ tracks.
//!
//! A [`MoqSession`] is one QUIC/WebTransport session to a relay that can both publish and
//! subscribe. [`TrackWriter`] and [`TrackReader`] carry an ordered stream of frames on one
//! track: frames are appended to the current group, and a new group starts after an idle gap
//! or every [`GROUP_MAX_FRAMES`] frames. Groups are read one after another, so frames arrive
//! in order; a late subscriber starts at the current group.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::{Duration, Instant};

use bytes::Bytes;
use url::Url;

use crate::{RelayUrl, TransportError};

pub use moq_net::{broadcast, origin, track};

/// Track name used for byte streams inside a broadcast.
pub const DATA_TRACK: &str = "data";
/// A group is closed after this many frames, bounding what a late subscriber replays.
pub const GROUP_MAX_FRAMES: usize = 1000;
/// A group is closed when no frame was written for this long, so a new subscriber does not
/// replay bytes from before a pause.
pub const GROUP_IDLE: Duration = Duration::from_millis(50);
/// How long relays and subscribers keep a group: long enough that none is skipped under load
/// (the MoQ default of 0 drops frames; see docs/architecture.md).
pub const MAX_AGE: Duration = Duration::from_secs(10);

/// How a session behaves when its link to the relay drops.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Redial {
    /// The first failure is final (one-shot tools, benchmarks).
    Never,
    /// Redial with back-off for ever (servers: the relay may come back any time).
    Forever,
    /// Redial with back-off, giving up when no session could be established for this long
    /// (clients: a deadline after which the user is told).
    Until(Duration),
}

/// Back-off between redials: fast first tries (a blip heals in well under a second), then
/// at most one attempt a second, so resuming after a long outage costs at most a second.
const REDIAL_FIRST: Duration = Duration::from_millis(100);
const REDIAL_MAX: Duration = Duration::from_secs(1);

/// Whether the session to the relay is up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RelayStatus {
    /// Dialing for the first time.
    Connecting,
    /// A session is live.
    Connected,
    /// The session dropped; redialing.
    Reconnecting,
    /// The session ended for good (given up, refused, or closed), with the reason.
    Closed(String),
}

/// One session to a relay.
pub struct MoqSession {
    /// Broadcasts created here are published to the relay.
    pub publish: origin::Producer,
    /// Broadcasts announced on the relay appear here.
    pub subscribe: origin::Producer,
    conn: moq_tokio::Connection,
    client: moq_tokio::Client,
    url: RelayUrl,
    status: tokio::sync::watch::Receiver<RelayStatus>,
    watcher: tokio::task::JoinHandle<()>,
}

impl std::fmt::Debug for MoqSession {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MoqSession")
            .field("url", &self.url.to_string())
            .finish()
    }
}

fn is_loopback(url: &Url) -> Option<IpAddr> {
    match url.host()? {
        url::Host::Ipv4(ip) if ip.is_loopback() => Some(IpAddr::V4(Ipv4Addr::LOCALHOST)),
        url::Host::Ipv6(ip) if ip.is_loopback() => Some(IpAddr::V6(Ipv6Addr::LOCALHOST)),
        url::Host::Domain("localhost") => Some(IpAddr::V4(Ipv4Addr::LOCALHOST)),
        _ => None,
    }
}

/// Explain a session error in terms of what the user can do.
fn explain(e: &dyn std::fmt::Display) -> String {
    let text = e.to_string();
    let lower = text.to_ascii_lowercase();
    if lower.contains("unauthorized") || lower.contains("forbidden") || lower.contains("401") {
        format!(
            "{text}: the relay refused this client's credentials; give a token with ?jwt=... in the relay URL or XOQ_RELAY_TOKEN (`xoq token` mints one)"
        )
    } else {
        format!("{text}. Is the relay running (`xoq relay --listen ...`) and the URL right?")
    }
}

impl MoqSession {
    /// Start a session to `relay` in the background and return at once: the session dials
    /// (and redials, following `redial`) on its own; publications and subscriptions made on
    /// it are carried over each new session. Servers use this so that their P2P service
    /// does not wait for (or die with) the relay.
    ///
    /// `http://` URLs fetch the relay's self-signed certificate fingerprint over HTTP and pin
    /// it (development relays); `https://` URLs verify a real certificate. A token in the URL
    /// (`?jwt=`) or in `XOQ_RELAY_TOKEN` is presented to the relay.
    pub fn start(relay: &RelayUrl, redial: Redial) -> Result<Self, TransportError> {
        let err = |reason: String| TransportError::Relay {
            url: relay.to_string(),
            reason,
        };
        // An `http://` relay URL fetches its certificate fingerprint with reqwest, which finds
        // no rustls provider unless one is the process default (a build without the relay
        // server, e.g. the Python wheel, has none). Already installed is fine.
        let _ = moq_tokio::crypto::install_default();
        let mut cfg = moq_tokio::connect::Config::default();
        // Reach a loopback relay from a loopback socket: tests never send elsewhere, and the
        // default [::]:0 dual-stack socket is refused on hosts without IPv6.
        if let Some(ip) = is_loopback(relay.url()) {
            cfg.bind = Some(SocketAddr::new(ip, 0));
        } else {
            cfg.bind = Some(SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), 0));
        }
        cfg.once = Some(redial == Redial::Never);
        cfg.backoff.initial = REDIAL_FIRST;
        cfg.backoff.max = REDIAL_MAX;
        cfg.backoff.timeout = match redial {
            Redial::Forever => Duration::ZERO,
            Redial::Until(d) => d.max(Duration::from_millis(1)),
            Redial::Never => cfg.backoff.timeout,
        };
        let client = cfg
            .init(moq_tokio::quic::Config::default())
            .map_err(|e| err(e.to_string()))?;
        let publish = moq_tokio::origin::spawn();
        let subscribe = moq_tokio::origin::spawn();
        let conn = client
            .clone()
            .with_publisher(&publish)
            .with_subscriber(subscribe.clone())
            .connect(relay.dial_url());
        let (status_tx, status) = tokio::sync::watch::channel(RelayStatus::Connecting);
        let mut watch = conn.clone();
        let shown = relay.to_string();
        let watcher = tokio::spawn(async move {
            loop {
                match watch.status().await {
                    Ok(moq_tokio::Status::Connected) => {
                        tracing::debug!(relay = %shown, "relay session up");
                        let _ = status_tx.send(RelayStatus::Connected);
                    }
                    Ok(_) => {
                        tracing::debug!(relay = %shown, "relay session down; redialing");
                        let _ = status_tx.send(RelayStatus::Reconnecting);
                    }
                    Err(e) => {
                        let _ = status_tx.send(RelayStatus::Closed(explain(&e)));
                        return;
                    }
                }
            }
        });
        Ok(Self {
            publish,
            subscribe,
            conn,
            client,
            url: relay.clone(),
            status,
            watcher,
        })
    }

    /// Connect to `relay` and wait for the first session: an unreachable relay or refused
    /// credentials are an error here (after the redial policy gave up).
    pub async fn connect(relay: &RelayUrl, redial: Redial) -> Result<Self, TransportError> {
        let s = Self::start(relay, redial)?;
        s.established().await?;
        Ok(s)
    }

    /// Wait until a session is live (at once when it is).
    pub async fn established(&self) -> Result<(), TransportError> {
        let mut status = self.status.clone();
        loop {
            match &*status.borrow_and_update() {
                RelayStatus::Connected => return Ok(()),
                RelayStatus::Closed(reason) => {
                    return Err(TransportError::Relay {
                        url: self.url.to_string(),
                        reason: reason.clone(),
                    });
                }
                _ => {}
            }
            if status.changed().await.is_err() {
                return Err(TransportError::Relay {
                    url: self.url.to_string(),
                    reason: "the session ended".into(),
                });
            }
        }
    }

    /// The relay (without its token).
    pub fn url(&self) -> &RelayUrl {
        &self.url
    }

    /// The session's status, updated as it drops and redials.
    pub fn status(&self) -> tokio::sync::watch::Receiver<RelayStatus> {
        self.status.clone()
    }

    /// Publish a broadcast named `name` with one [`TrackWriter`] per track name.
    pub fn publish_tracks(
        &self,
        name: &str,
        tracks: &[&str],
    ) -> Result<(broadcast::Producer, Vec<TrackWriter>), TransportError> {
        publish_on(&self.publish, name, tracks)
    }

    /// Follow track `track` of broadcast `name`, across publisher restarts.
    pub fn read_track(&self, name: &str, track: &str) -> TrackReader {
        TrackReader::new(self.subscribe.consume(), name, track)
    }

    /// Every writer broadcast `base/<writer>` announced on the relay, each read by its own
    /// task: who joins, what each writes (in its order; writers interleave), who leaves.
    /// See [`Writers`].
    pub fn read_writers(&self, base: &str, track: &str) -> Writers {
        let (tx, rx) = tokio::sync::mpsc::channel(WRITERS_QUEUE);
        let origin = self.subscribe.consume();
        let (base, track) = (base.to_string(), track.to_string());
        let supervisor = tokio::spawn(supervise_writers(origin, base, track, tx));
        Writers { rx, supervisor }
    }

    /// Whether the session is currently connected.
    pub fn connected(&self) -> bool {
        self.conn.connected()
    }

    /// Resolves when the session ends for good (given up, refused, or closed).
    pub async fn closed(&self) -> Result<(), TransportError> {
        self.conn.closed().await.map_err(|e| TransportError::Relay {
            url: self.url.to_string(),
            reason: explain(&e),
        })
    }

    /// Close the session gracefully.
    pub async fn close(self) {
        self.watcher.abort();
        let _ = self.conn.clone().close().await;
        self.client.clone().close().await;
    }
}

impl Drop for MoqSession {
    fn drop(&mut self) {
        // The watcher holds a clone of the connection, and moq-tokio keeps redialing while
        // any clone lives: without this a dropped session would redial for ever.
        self.watcher.abort();
    }
}

/// Publish a broadcast named `name` on `origin` (a session's [`MoqSession::publish`]) with one
/// [`TrackWriter`] per track name.
pub fn publish_on(
    origin: &origin::Producer,
    name: &str,
    tracks: &[&str],
) -> Result<(broadcast::Producer, Vec<TrackWriter>), TransportError> {
    let moq_err = |operation, e: moq_net::Error| TransportError::Moq {
        operation,
        reason: e.to_string(),
    };
    let bc = origin
        .create_broadcast(name)
        .map_err(|e| moq_err("create broadcast", e))?;
    let mut writers = Vec::new();
    for t in tracks {
        let info = track::Info::default().with_max_age(MAX_AGE);
        let tp = bc
            .create_track(*t, info)
            .map_err(|e| moq_err("create track", e))?;
        writers.push(TrackWriter::new(tp));
    }
    bc.announce(Default::default())
        .map_err(|e| moq_err("announce", e))?;
    Ok((bc, writers))
}

/// Frames waiting between the writers' reader tasks and the consumer. Full = the readers
/// wait (backpressure to each writer's subscription, nothing dropped here).
const WRITERS_QUEUE: usize = 256;
/// Writers read at once per path; more are ignored (with a warning) until some leave, so a
/// client announcing thousands of names cannot make the server spawn thousands of tasks.
pub const MAX_WRITERS: usize = 64;

/// What happened among the writers of one path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WriterEvent {
    /// A writer's broadcast was announced and is now subscribed: what it writes from here
    /// on is read (the relay may replay its latest group first: see [`xoq_wire::relay`]).
    Joined(String),
    /// One frame from a writer, with the sequence of the group it came in.
    Frame {
        /// Writer name (the last path segment).
        writer: String,
        /// The frame.
        payload: Bytes,
    },
    /// The writer's broadcast was retracted (or its subscription ended).
    Left(String),
}

/// Events from all writers of one path ([`MoqSession::read_writers`]). Dropping it stops
/// every reader task.
#[derive(Debug)]
pub struct Writers {
    rx: tokio::sync::mpsc::Receiver<WriterEvent>,
    supervisor: tokio::task::JoinHandle<()>,
}

impl Writers {
    /// The next event from any writer; `None` once the session is gone.
    pub async fn next(&mut self) -> Option<WriterEvent> {
        self.rx.recv().await
    }
}

impl Drop for Writers {
    fn drop(&mut self) {
        // The supervisor owns the readers' JoinSet: aborting it aborts them all.
        self.supervisor.abort();
    }
}

async fn forward(
    mut reader: TrackReader,
    writer: String,
    tx: tokio::sync::mpsc::Sender<WriterEvent>,
) {
    if reader.ready().await.is_ok() {
        if tx.send(WriterEvent::Joined(writer.clone())).await.is_err() {
            return;
        }
        while let Ok(payload) = reader.next().await {
            let ev = WriterEvent::Frame {
                writer: writer.clone(),
                payload,
            };
            if tx.send(ev).await.is_err() {
                return;
            }
        }
    }
    let _ = tx.send(WriterEvent::Left(writer)).await;
}

async fn supervise_writers(
    origin: origin::Consumer,
    base: String,
    track: String,
    tx: tokio::sync::mpsc::Sender<WriterEvent>,
) {
    let mut readers = tokio::task::JoinSet::new();
    let mut per_writer: std::collections::HashMap<String, tokio::task::AbortHandle> =
        std::collections::HashMap::new();
    let mut announced = origin.announced();
    let child_prefix = format!("{base}/");
    loop {
        let Some(update) = announced.next().await else {
            // The announcement stream ends with a session to the relay; the session redials
            // (its owner stops us when it is closed for good): listen again.
            tokio::time::sleep(Duration::from_millis(100)).await;
            announced = origin.announced();
            continue;
        };
        let name = update.prefix.as_str().to_string();
        tracing::trace!(%name, active = update.kind.is_active(), "announcement");
        let Some(writer) = name.strip_prefix(&child_prefix) else {
            continue;
        };
        if writer.is_empty() || writer.contains('/') {
            continue;
        }
        let writer = writer.to_string();
        if update.kind.is_active() {
            per_writer.retain(|_, h| !h.is_finished());
            // Announced again while we still read it: the route changed under us (our
            // session to the relay came back, or the writer re-published). The old
            // subscription may never end by itself: read the new one.
            if let Some(old) = per_writer.remove(&writer) {
                old.abort();
                if tx.send(WriterEvent::Left(writer.clone())).await.is_err() {
                    return;
                }
            }
            if per_writer.len() >= MAX_WRITERS {
                tracing::warn!("{base}: more than {MAX_WRITERS} writers; ignoring {writer}");
            } else {
                let reader = TrackReader::new(origin.clone(), &name, &track).until_gone();
                let h = readers.spawn(forward(reader, writer.clone(), tx.clone()));
                per_writer.insert(writer, h);
            }
        } else if let Some(h) = per_writer.remove(&writer) {
            // The writer is gone: do not wait on its route until the relay times it out.
            h.abort();
            if tx.send(WriterEvent::Left(writer)).await.is_err() {
                return;
            }
        }
        while readers.try_join_next().is_some() {}
    }
}

/// Writes frames to one track, rolling groups as described in the module docs.
pub struct TrackWriter {
    track: track::Producer,
    group: Option<moq_net::group::Producer>,
    frames_in_group: usize,
    last_write: Instant,
}

impl TrackWriter {
    /// Wait until someone subscribes to this track (at most `limit`); whether someone did.
    /// A writer's frames from before the first subscription are not delivered (the relay
    /// starts a subscriber at the latest group), so clients wait for the server first.
    pub async fn wait_subscribed(&self, limit: Duration) -> bool {
        matches!(
            tokio::time::timeout(limit, self.track.used()).await,
            Ok(Ok(()))
        )
    }

    /// Wrap a track producer.
    pub fn new(track: track::Producer) -> Self {
        Self {
            track,
            group: None,
            frames_in_group: 0,
            last_write: Instant::now(),
        }
    }

    /// Append one frame.
    pub fn write(&mut self, payload: Bytes) -> Result<(), TransportError> {
        let moq_err = |e: moq_net::Error| TransportError::Moq {
            operation: "write frame",
            reason: e.to_string(),
        };
        let now = Instant::now();
        let roll = self.frames_in_group >= GROUP_MAX_FRAMES
            || now.duration_since(self.last_write) >= GROUP_IDLE;
        if roll && let Some(g) = self.group.take() {
            let _ = g.finish();
        }
        let group = match &mut self.group {
            Some(g) => g,
            None => {
                self.frames_in_group = 0;
                self.group
                    .insert(self.track.append_group().map_err(moq_err)?)
            }
        };
        group
            .write_frame(moq_net::Timestamp::now(), payload)
            .map_err(moq_err)?;
        self.frames_in_group += 1;
        self.last_write = now;
        Ok(())
    }

    /// Append one frame, starting a new group first when `new_group` (and only then): for
    /// tracks whose groups have a meaning, such as one video GoP per group, where a new
    /// subscriber must start on a keyframe.
    pub fn write_grouped(&mut self, payload: Bytes, new_group: bool) -> Result<(), TransportError> {
        let moq_err = |e: moq_net::Error| TransportError::Moq {
            operation: "write frame",
            reason: e.to_string(),
        };
        if new_group && let Some(g) = self.group.take() {
            let _ = g.finish();
        }
        let group = match &mut self.group {
            Some(g) => g,
            None => self
                .group
                .insert(self.track.append_group().map_err(moq_err)?),
        };
        group
            .write_frame(moq_net::Timestamp::now(), payload)
            .map_err(moq_err)?;
        self.last_write = Instant::now();
        Ok(())
    }

    /// End the current group and open the next one now, returning its sequence: a reader
    /// told "start at this group" (see [`xoq_wire::relay`]) misses nothing written after.
    pub fn start_group(&mut self) -> Result<u64, TransportError> {
        if let Some(g) = self.group.take() {
            let _ = g.finish();
        }
        let g = self.track.append_group().map_err(|e| TransportError::Moq {
            operation: "start group",
            reason: e.to_string(),
        })?;
        let seq = g.sequence;
        self.group = Some(g);
        self.frames_in_group = 0;
        self.last_write = Instant::now();
        Ok(seq)
    }

    /// Wait until a subscriber wants this track.
    pub async fn used(&self) -> Result<(), TransportError> {
        self.track.used().await.map_err(|e| TransportError::Moq {
            operation: "wait for a subscriber",
            reason: e.to_string(),
        })
    }

    /// Wait until no subscriber wants this track any more.
    pub async fn unused(&self) -> Result<(), TransportError> {
        self.track.unused().await.map_err(|e| TransportError::Moq {
            operation: "wait for no subscriber",
            reason: e.to_string(),
        })
    }

    /// Whether a subscriber currently wants this track.
    pub fn is_used(&self) -> bool {
        self.track.is_used()
    }

    /// End the track cleanly.
    pub fn finish(mut self) {
        if let Some(g) = self.group.take() {
            let _ = g.finish();
        }
        let _ = self.track.finish();
    }
}

/// What a [`TrackReader`] in follow mode reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReaderEvent {
    /// A frame, with the sequence of the group it came in.
    Frame {
        /// Group sequence (end to end: the publisher numbered it).
        group: u64,
        /// The frame.
        payload: Bytes,
    },
    /// The publisher went away (its broadcast was retracted or the session to the relay
    /// dropped); the reader now waits for it to come back.
    Gone,
    /// The publisher is back (subscribed again).
    Back,
}

/// Reads frames of one track of a named broadcast, re-subscribing when the publisher goes
/// away and comes back.
pub struct TrackReader {
    origin: origin::Consumer,
    name: String,
    track: String,
    sub: Option<track::Subscriber>,
    group: Option<moq_net::group::Consumer>,
    /// Wait for the next publisher when the current one leaves (else: end).
    follow: bool,
    subscribed_once: bool,
    /// A `Gone` is owed to the caller of `next_event`.
    gone_pending: bool,
}

impl TrackReader {
    fn new(origin: origin::Consumer, name: &str, track: &str) -> Self {
        Self {
            origin,
            name: name.to_string(),
            track: track.to_string(),
            sub: None,
            group: None,
            follow: true,
            subscribed_once: false,
            gone_pending: false,
        }
    }

    /// End (with an error) when the publisher leaves, instead of waiting for the next one:
    /// for readers of one writer's own broadcast.
    pub fn until_gone(mut self) -> Self {
        self.follow = false;
        self
    }

    /// Drop the current subscription and look the broadcast up again on the next read: after
    /// the session to the relay came back, an old subscription may stay open but silent.
    pub fn resubscribe(&mut self) {
        self.sub = None;
        self.group = None;
        self.gone_pending = false;
    }

    /// Whether a subscription is live.
    pub fn is_subscribed(&self) -> bool {
        self.sub.is_some()
    }

    /// The newest group sequence the subscription knows of (the publisher's live edge as
    /// the relay reported it), if any.
    pub fn latest_group(&self) -> Option<u64> {
        self.sub.as_ref().and_then(|s| s.latest())
    }

    /// Wait until the broadcast is announced and subscribed (a no-op when it already is).
    pub async fn ready(&mut self) -> Result<(), TransportError> {
        if self.sub.is_none() {
            if self.subscribed_once && !self.follow {
                return Err(TransportError::Moq {
                    operation: "read",
                    reason: format!("{} is no longer published", self.name),
                });
            }
            let bc = self
                .origin
                .routed_broadcast(self.name.as_str())
                .await
                .map_err(|e| TransportError::Moq {
                    operation: "find broadcast",
                    reason: e.to_string(),
                })?;
            let tc = bc.track(&self.track).map_err(|e| TransportError::Moq {
                operation: "find track",
                reason: e.to_string(),
            })?;
            let sub = tc
                .subscribe(track::Subscription::default().with_max_age(MAX_AGE))
                .await
                .map_err(|e| TransportError::Moq {
                    operation: "subscribe",
                    reason: e.to_string(),
                })?;
            self.sub = Some(sub);
            self.subscribed_once = true;
        }
        Ok(())
    }

    /// Next frame. Waits (possibly forever) for a publisher; returns an error only when the
    /// session itself is gone (or, with [`until_gone`](Self::until_gone), the publisher).
    pub async fn next(&mut self) -> Result<Bytes, TransportError> {
        loop {
            match self.next_event().await? {
                ReaderEvent::Frame { payload, .. } => return Ok(payload),
                ReaderEvent::Gone | ReaderEvent::Back => {}
            }
        }
    }

    /// Next frame with its group, or a change of publisher ([`ReaderEvent::Gone`] when it
    /// leaves, [`ReaderEvent::Back`] when a publisher is subscribed again).
    pub async fn next_event(&mut self) -> Result<ReaderEvent, TransportError> {
        loop {
            if let Some(g) = &mut self.group {
                match g.read_frame().await {
                    Ok(Some(f)) => {
                        return Ok(ReaderEvent::Frame {
                            group: g.sequence,
                            payload: f.payload,
                        });
                    }
                    Ok(None) | Err(_) => self.group = None,
                }
                continue;
            }
            if self.gone_pending {
                self.gone_pending = false;
                return Ok(ReaderEvent::Gone);
            }
            let resubscribe = self.sub.is_none() && self.subscribed_once;
            if let Err(e) = self.ready().await {
                if !self.follow {
                    return Err(e);
                }
                // Following: the session to the relay may be between two connections; the
                // broadcast comes back with the next one.
                tracing::debug!(name = %self.name, "waiting for the broadcast: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
            if resubscribe {
                return Ok(ReaderEvent::Back);
            }
            let Some(sub) = &mut self.sub else { continue };
            match sub.recv_group().await {
                Ok(Some(g)) => self.group = Some(g),
                // Track ended or the publisher went away: look for the next announcement.
                Ok(None) | Err(_) => {
                    self.sub = None;
                    self.gone_pending = true;
                }
            }
        }
    }
}
