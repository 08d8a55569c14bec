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

use crate::TransportError;

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

/// One session to a relay.
pub struct MoqSession {
    /// Broadcasts created here are published to the relay.
    pub publish: origin::Producer,
    /// Broadcasts announced on the relay appear here.
    pub subscribe: origin::Producer,
    conn: moq_tokio::Connection,
    client: moq_tokio::Client,
    url: Url,
}

impl std::fmt::Debug for MoqSession {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MoqSession")
            .field("url", &self.url.as_str())
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

impl MoqSession {
    /// Connect to the relay at `url` (its path is the auth root, e.g. `http://127.0.0.1:4443/anon`).
    ///
    /// `http://` URLs fetch the relay's self-signed certificate fingerprint over HTTP and pin
    /// it (development relays); `https://` URLs verify a real certificate. With `reconnect`
    /// the session redials in the background after a drop (servers); without it the first
    /// failure is final (clients report it to the user).
    pub async fn connect(url: &Url, reconnect: bool) -> Result<Self, TransportError> {
        let err = |reason: String| TransportError::Relay {
            url: url.to_string(),
            reason,
        };
        let mut cfg = moq_tokio::connect::Config::default();
        // Reach a loopback relay from a loopback socket: tests never send elsewhere, and the
        // default [::]:0 dual-stack socket is refused on hosts without IPv6.
        if let Some(ip) = is_loopback(url) {
            cfg.bind = Some(SocketAddr::new(ip, 0));
        } else {
            cfg.bind = Some(SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), 0));
        }
        cfg.once = Some(!reconnect);
        let client = cfg
            .init(moq_tokio::quic::Config::default())
            .map_err(|e| err(e.to_string()))?;
        let publish = moq_tokio::origin::spawn();
        let subscribe = moq_tokio::origin::spawn();
        let conn = client
            .clone()
            .with_publisher(&publish)
            .with_subscriber(subscribe.clone())
            .connect(url.clone())
            .established()
            .await
            .map_err(|e| {
                err(format!(
                    "{e}. Is the relay running (`xoq relay --listen ...`) and the URL right?"
                ))
            })?;
        Ok(Self {
            publish,
            subscribe,
            conn,
            client,
            url: url.clone(),
        })
    }

    /// The relay URL.
    pub fn url(&self) -> &Url {
        &self.url
    }

    /// Publish a broadcast named `name` with one [`TrackWriter`] per track name.
    pub fn publish_tracks(
        &self,
        name: &str,
        tracks: &[&str],
    ) -> Result<(broadcast::Producer, Vec<TrackWriter>), TransportError> {
        let moq_err = |operation, e: moq_net::Error| TransportError::Moq {
            operation,
            reason: e.to_string(),
        };
        let bc = self
            .publish
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

    /// Follow track `track` of broadcast `name`, across publisher restarts.
    pub fn read_track(&self, name: &str, track: &str) -> TrackReader {
        TrackReader::new(self.subscribe.consume(), name, track)
    }

    /// Frames of track `track` from every writer of `base`: the broadcast `base` itself (the
    /// XoQ 0.3.6 layout; the relay routes one publisher of a name at a time) and every
    /// `base/<writer>` announced on the relay, each read by its own task. Each writer's frames
    /// keep their order; writers interleave. See [`Writers`].
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

    /// Resolves when the session ends for good (a once-session dropped, or closed).
    pub async fn closed(&self) -> Result<(), TransportError> {
        self.conn.closed().await.map_err(|e| TransportError::Relay {
            url: self.url.to_string(),
            reason: e.to_string(),
        })
    }

    /// Close the session gracefully.
    pub async fn close(self) {
        let _ = self.conn.close().await;
        self.client.close().await;
    }
}

/// Frames waiting between the writers' reader tasks and the consumer. Full = the readers
/// wait (backpressure to each writer's subscription, nothing dropped here).
const WRITERS_QUEUE: usize = 256;
/// Writers read at once per path; more are ignored (with a warning) until some leave, so a
/// client announcing thousands of names cannot make the server spawn thousands of tasks.
pub const MAX_WRITERS: usize = 64;

/// Frames from all writers of one path ([`MoqSession::read_writers`]). Dropping it stops
/// every reader task.
#[derive(Debug)]
pub struct Writers {
    rx: tokio::sync::mpsc::Receiver<Bytes>,
    supervisor: tokio::task::JoinHandle<()>,
}

impl Writers {
    /// The next frame from any writer; `None` once the session is gone.
    pub async fn next(&mut self) -> Option<Bytes> {
        self.rx.recv().await
    }
}

impl Drop for Writers {
    fn drop(&mut self) {
        // The supervisor owns the readers' JoinSet: aborting it aborts them all.
        self.supervisor.abort();
    }
}

async fn forward(mut reader: TrackReader, tx: tokio::sync::mpsc::Sender<Bytes>) {
    while let Ok(frame) = reader.next().await {
        if tx.send(frame).await.is_err() {
            return;
        }
    }
}

async fn supervise_writers(
    origin: origin::Consumer,
    base: String,
    track: String,
    tx: tokio::sync::mpsc::Sender<Bytes>,
) {
    let mut readers = tokio::task::JoinSet::new();
    readers.spawn(forward(
        TrackReader::new(origin.clone(), &base, &track),
        tx.clone(),
    ));
    let mut per_writer: std::collections::HashMap<String, tokio::task::AbortHandle> =
        std::collections::HashMap::new();
    let mut announced = origin.announced();
    let child_prefix = format!("{base}/");
    while let Some(update) = announced.next().await {
        let name = update.prefix.as_str().to_string();
        if name.len() <= child_prefix.len() || !name.starts_with(&child_prefix) {
            continue;
        }
        if update.kind.is_active() {
            per_writer.retain(|_, h| !h.is_finished());
            let alive = per_writer.contains_key(&name);
            if !alive && per_writer.len() >= MAX_WRITERS {
                tracing::warn!("{base}: more than {MAX_WRITERS} writers; ignoring {name}");
            } else if !alive {
                let reader = TrackReader::new(origin.clone(), &name, &track).until_gone();
                per_writer.insert(name, readers.spawn(forward(reader, tx.clone())));
            }
        } else if let Some(h) = per_writer.remove(&name) {
            // The writer is gone: do not wait on its route until the relay times it out.
            h.abort();
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
        }
    }

    /// End (with an error) when the publisher leaves, instead of waiting for the next one:
    /// for readers of one writer's own broadcast.
    pub fn until_gone(mut self) -> Self {
        self.follow = false;
        self
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

    /// Discard what the relay replays right after subscribing: the current group from its
    /// start, i.e. data published before this reader existed. It arrives as one burst, so
    /// stop at the first 20 ms gap (at most 200 ms). Returns the bytes discarded.
    pub async fn skip_backlog(&mut self) -> Result<usize, TransportError> {
        self.ready().await?;
        let settle = tokio::time::Instant::now() + Duration::from_millis(200);
        let mut skipped = 0;
        while let Ok(r) = tokio::time::timeout_at(
            settle.min(tokio::time::Instant::now() + Duration::from_millis(20)),
            self.next(),
        )
        .await
        {
            skipped += r?.len();
        }
        Ok(skipped)
    }

    /// Next frame. Waits (possibly forever) for a publisher; returns an error only when the
    /// session itself is gone.
    pub async fn next(&mut self) -> Result<Bytes, TransportError> {
        loop {
            if let Some(g) = &mut self.group {
                match g.read_frame().await {
                    Ok(Some(f)) => return Ok(f.payload),
                    Ok(None) | Err(_) => self.group = None,
                }
                continue;
            }
            self.ready().await?;
            let Some(sub) = &mut self.sub else { continue };
            match sub.recv_group().await {
                Ok(Some(g)) => self.group = Some(g),
                // Track ended or the publisher went away: look for the next announcement.
                Ok(None) | Err(_) => self.sub = None,
            }
        }
    }
}
