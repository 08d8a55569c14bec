//! Read-only observers of remote serial ports and CAN buses: both directions of the
//! device's traffic, each chunk or frame with its capture time on the robot, for recorders
//! and monitors. An observer can never write and never holds the device: a controller
//! connects (and a second one is refused) exactly as if it were not there.
//!
//! ```no_run
//! # async fn demo() -> Result<(), xoq_client::ClientError> {
//! use xoq_client::serial::{ObserveOptions, SerialObserver};
//! let mut obs = SerialObserver::connect("<endpoint-id>@127.0.0.1:9000", ObserveOptions::new()).await?;
//! loop {
//!     let o = obs.next().await?;
//!     println!("{:?} at {} µs: {} bytes ({} lost before)", o.direction, o.stamp_us, o.data.len(), o.dropped);
//! }
//! # }
//! ```
//!
//! [`SerialObserver`] works over P2P (ALPN [`observe::SERIAL_ALPN`]) and through a relay (the
//! server's `{path}/observe` broadcast); [`CanObserver`] over P2P (through a relay, the CAN
//! server's `{path}/state` track already carries both directions: read it with
//! [`RemoteCanBus`](crate::can::RemoteCanBus), which never writes unless asked). The server
//! keeps a bounded queue per observer and drops its oldest entries when the observer reads
//! too slowly; every observation says how much was lost just before it (`dropped`). A lost
//! link ends the observer ([`ClientError::Closed`]); connect again to resume.

use std::collections::VecDeque;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use iroh::endpoint::{Connection, RecvStream, SendStream};
use xoq_transport::Address;
use xoq_transport::framed::FramedReader;
use xoq_transport::moq::{DATA_TRACK, MoqSession, Redial, TrackReader};
use xoq_transport::p2p;
use xoq_wire::can::{BusState, CanFrame};
use xoq_wire::observe::{self, ClientMsg, ServerMsg};

pub use xoq_wire::observe::Direction;

use crate::ClientError;
use crate::clock::{Clock, local_now_us};
use crate::conn::Dialer;
use crate::link::Identity;

/// How long connecting (dial, handshake, or finding the relay broadcast) may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(15);

/// Options for an observer.
#[derive(Debug, Clone)]
#[must_use]
pub struct ObserveOptions {
    identity: Identity,
    offline: bool,
    client_name: String,
}

impl Default for ObserveOptions {
    fn default() -> Self {
        Self::new()
    }
}

impl ObserveOptions {
    /// The user's identity (servers' allowlists apply to observers as to controllers),
    /// offline per `XOQ_OFFLINE`.
    pub fn new() -> Self {
        Self {
            identity: Identity::User,
            offline: xoq_transport::offline_from_env(),
            client_name: "rust".into(),
        }
    }

    identity_setters!("observer");

    /// Name shown in the server's logs.
    pub fn client_name(mut self, name: &str) -> Self {
        self.client_name = name.to_string();
        self
    }
}

/// One chunk of a serial port's traffic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SerialObservation {
    /// Which way the bytes went.
    pub direction: Direction,
    /// Capture time on the robot (µs since the Unix epoch): when the server read them from
    /// the device, or when it handed them to the device's driver.
    pub stamp_us: u64,
    /// The bytes.
    pub data: Bytes,
    /// Bytes (of either direction) the server dropped for this observer just before this
    /// chunk, since the previous observation.
    pub dropped: u64,
}

/// One frame of a CAN bus's traffic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CanObservation {
    /// Which way the frame went (received from the bus, or transmitted on it).
    pub direction: Direction,
    /// Capture time on the robot (µs since the Unix epoch): receive or transmit time.
    pub stamp_us: u64,
    /// The frame.
    pub frame: CanFrame,
    /// Frames the server dropped for this observer just before this one, since the previous
    /// observation.
    pub dropped: u64,
}

/// Where an observer's messages come from.
// One per observer and never moved on the data path.
#[allow(clippy::large_enum_variant)]
enum Source {
    P2p {
        dialer: Dialer,
        conn: Connection,
        send: SendStream,
        reader: FramedReader<RecvStream>,
    },
    Relay {
        session: MoqSession,
        track: TrackReader,
    },
}

/// The state every observer shares: its source, what it was told, and its counters.
struct Session {
    peer: String,
    source: Option<Source>,
    device: String,
    clock: Clock,
    /// Units dropped and not yet reported with an observation.
    dropped_pending: u64,
    dropped_total: u64,
    device_lost: Option<String>,
    bus_state: BusState,
    /// Why the session ended, once it did.
    ended: Option<String>,
}

impl Session {
    async fn open(
        address: &str,
        alpn: &'static [u8],
        opts: &ObserveOptions,
        relay_ok: bool,
    ) -> Result<Self, ClientError> {
        let addr: Address = address.parse().map_err(ClientError::from)?;
        let peer = addr.to_string();
        let open = async {
            match &addr {
                Address::Moq { relay, name } => {
                    if !relay_ok {
                        return Err(ClientError::Unsupported(format!(
                            "{peer}: CAN observers connect P2P; through a relay, read the server's `{name}/state` track (every frame of both directions) with a RemoteCanBus, which never writes unless asked"
                        )));
                    }
                    let session =
                        MoqSession::connect(relay, Redial::Until(CONNECT_TIMEOUT)).await?;
                    let path = format!("{name}/{}", observe::OBSERVE_BROADCAST);
                    let mut track = session.read_track(&path, DATA_TRACK);
                    match tokio::time::timeout(CONNECT_TIMEOUT, track.ready()).await {
                        Ok(Ok(())) => {}
                        Ok(Err(e)) => return Err(ClientError::from(e)),
                        Err(_) => {
                            return Err(ClientError::Connect(format!(
                                "no serial server publishes {path} on {relay}: start one with `xoq serial-server ... --relay {relay} --moq {name}` (this version or later)"
                            )));
                        }
                    }
                    Ok((Source::Relay { session, track }, name.clone(), Clock::new()))
                }
                _ => {
                    let dialer = Dialer::new(addr.clone(), opts.identity.clone(), opts.offline);
                    let mut hello = BytesMut::new();
                    ClientMsg::Hello {
                        version: observe::VERSION,
                        client: opts.client_name.clone(),
                    }
                    .encode(&mut hello);
                    let opened = dialer.open(alpn, &hello, ServerMsg::decode, true).await?;
                    let clock = Clock::new();
                    let device = match opened.first {
                        ServerMsg::Welcome {
                            version,
                            device,
                            server_us,
                            ..
                        } => {
                            if version != observe::VERSION {
                                opened.conn.close(p2p::CLOSE_NORMAL.into(), b"version");
                                dialer.close().await;
                                return Err(ClientError::Connect(format!(
                                    "{peer} speaks observer protocol version {version} and this client {}: upgrade the older side",
                                    observe::VERSION
                                )));
                            }
                            clock.hint(opened.t0, server_us, local_now_us());
                            device
                        }
                        ServerMsg::Refused { code, message } => {
                            opened.conn.close(p2p::CLOSE_NORMAL.into(), b"refused");
                            dialer.close().await;
                            return Err(ClientError::Refused { code, message });
                        }
                        other => {
                            dialer.close().await;
                            return Err(ClientError::Connect(format!(
                                "{peer}: unexpected first message {other:?}"
                            )));
                        }
                    };
                    let source = Source::P2p {
                        dialer,
                        conn: opened.conn,
                        send: opened.send,
                        reader: opened.reader,
                    };
                    Ok((source, device, clock))
                }
            }
        };
        let (source, device, clock) = match tokio::time::timeout(CONNECT_TIMEOUT, open).await {
            Ok(r) => r?,
            Err(_) => {
                return Err(ClientError::Connect(format!(
                    "no answer from {peer} within {}s: is the server running and the address right?",
                    CONNECT_TIMEOUT.as_secs()
                )));
            }
        };
        Ok(Self {
            peer,
            source: Some(source),
            device,
            clock,
            dropped_pending: 0,
            dropped_total: 0,
            device_lost: None,
            bus_state: BusState::ErrorActive,
            ended: None,
        })
    }

    /// The next message carrying traffic (bytes or frames); bookkeeping messages (drops,
    /// device state, pongs) are absorbed on the way.
    async fn next_traffic(&mut self) -> Result<ServerMsg, ClientError> {
        loop {
            if let Some(why) = &self.ended {
                return Err(ClientError::Closed(why.clone()));
            }
            let msg = match self.source.as_mut() {
                None => return Err(ClientError::Closed("the observer was closed".into())),
                Some(Source::P2p { reader, conn, .. }) => {
                    match reader.next(ServerMsg::decode).await {
                        Ok(Some(m)) => m,
                        Ok(None) => {
                            self.ended = Some(format!("{} ended the session", self.peer));
                            continue;
                        }
                        Err(e) => {
                            let closed =
                                tokio::time::timeout(Duration::from_millis(200), conn.closed())
                                    .await;
                            self.ended = Some(match closed {
                                Ok(c) => p2p::closed_error(&self.peer, &c).to_string(),
                                Err(_) => format!("{}: {e}", self.peer),
                            });
                            continue;
                        }
                    }
                }
                Some(Source::Relay { track, .. }) => {
                    let frame = track.next().await.map_err(ClientError::from)?;
                    match ServerMsg::decode_frame(&frame) {
                        Ok(m) => m,
                        Err(e) => {
                            tracing::warn!("{}: undecodable observation ({e}), skipped", self.peer);
                            continue;
                        }
                    }
                }
            };
            match msg {
                ServerMsg::Bytes { .. } | ServerMsg::Frames { .. } => return Ok(msg),
                ServerMsg::Dropped(n) => {
                    self.dropped_pending = self.dropped_pending.saturating_add(n);
                    self.dropped_total = self.dropped_total.saturating_add(n);
                }
                ServerMsg::DeviceLost(r) => {
                    tracing::warn!("{}: {r}", self.peer);
                    self.device_lost = Some(r);
                }
                ServerMsg::DeviceRestored => self.device_lost = None,
                ServerMsg::BusState(c) => self.bus_state = BusState::from_code(c),
                ServerMsg::Pong {
                    client_us,
                    server_us,
                    ..
                } => self.clock.add(client_us, server_us, local_now_us()),
                ServerMsg::Refused { code, message } => {
                    self.ended = Some(message.clone());
                    return Err(ClientError::Refused { code, message });
                }
                ServerMsg::Welcome { .. } => {
                    tracing::debug!("{}: a second welcome, ignored", self.peer);
                }
            }
        }
    }

    fn take_dropped(&mut self) -> u64 {
        std::mem::take(&mut self.dropped_pending)
    }

    /// Probe the server's clock (P2P); the answer arrives among the observations.
    async fn ping(&mut self) -> Result<(), ClientError> {
        if let Some(Source::P2p { send, .. }) = self.source.as_mut() {
            let mut out = BytesMut::new();
            ClientMsg::Ping {
                id: 0,
                client_us: local_now_us(),
            }
            .encode(&mut out);
            send.write_all(&out)
                .await
                .map_err(|e| ClientError::Closed(format!("{}: {e}", self.peer)))?;
        }
        Ok(())
    }

    async fn close(&mut self) {
        match self.source.take() {
            Some(Source::P2p {
                dialer,
                conn,
                mut send,
                ..
            }) => {
                let _ = send.finish();
                conn.close(p2p::CLOSE_NORMAL.into(), b"bye");
                dialer.close().await;
            }
            Some(Source::Relay { session, .. }) => session.close().await,
            None => {}
        }
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        if let Some(Source::P2p { dialer, conn, .. }) = self.source.take() {
            conn.close(p2p::CLOSE_NORMAL.into(), b"dropped");
            dialer.close_soon();
        }
    }
}

/// A read-only observer of a remote serial port (P2P or relay).
pub struct SerialObserver {
    session: Session,
}

impl std::fmt::Debug for SerialObserver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SerialObserver")
            .field("peer", &self.session.peer)
            .finish()
    }
}

impl SerialObserver {
    /// Observe the port at `address` (`<id>@ip:port`, `<id>`, `<machine>/<service>`, or
    /// `<relay-url>/<path>`).
    pub async fn connect(address: &str, opts: ObserveOptions) -> Result<Self, ClientError> {
        Ok(Self {
            session: Session::open(address, observe::SERIAL_ALPN, &opts, true).await?,
        })
    }

    /// The next chunk, in the order the server saw them (waits).
    pub async fn next(&mut self) -> Result<SerialObservation, ClientError> {
        loop {
            if let ServerMsg::Bytes {
                direction,
                stamp_us,
                data,
            } = self.session.next_traffic().await?
            {
                return Ok(SerialObservation {
                    direction,
                    stamp_us,
                    data,
                    dropped: self.session.take_dropped(),
                });
            }
        }
    }

    /// The served port (P2P: as the server names it; relay: the broadcast path).
    pub fn device(&self) -> &str {
        &self.session.device
    }

    /// Bytes the server dropped for this observer so far.
    pub fn dropped(&self) -> u64 {
        self.session.dropped_total
    }

    /// Why the device is away, while it is.
    pub fn device_lost(&self) -> Option<&str> {
        self.session.device_lost.as_deref()
    }

    /// The estimate of the robot's clock (stamps are on it).
    pub fn clock(&self) -> &Clock {
        &self.session.clock
    }

    /// Probe the robot's clock once (P2P); [`clock`](Self::clock) improves as the answer
    /// is read along with the observations.
    pub async fn ping(&mut self) -> Result<(), ClientError> {
        self.session.ping().await
    }

    /// End the session.
    pub async fn close(mut self) {
        self.session.close().await;
    }
}

/// A read-only observer of a remote CAN bus (P2P).
pub struct CanObserver {
    session: Session,
    /// Frames of the last message not handed out yet.
    pending: VecDeque<CanObservation>,
}

impl std::fmt::Debug for CanObserver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CanObserver")
            .field("peer", &self.session.peer)
            .finish()
    }
}

impl CanObserver {
    /// Observe the bus at `address` (`<id>@ip:port`, `<id>`, `<machine>/<service>`).
    pub async fn connect(address: &str, opts: ObserveOptions) -> Result<Self, ClientError> {
        Ok(Self {
            session: Session::open(address, observe::CAN_ALPN, &opts, false).await?,
            pending: VecDeque::new(),
        })
    }

    /// The next frame, in the order the server saw them (waits).
    pub async fn next(&mut self) -> Result<CanObservation, ClientError> {
        loop {
            if let Some(o) = self.pending.pop_front() {
                return Ok(o);
            }
            if let ServerMsg::Frames { direction, frames } = self.session.next_traffic().await? {
                let mut dropped = self.session.take_dropped();
                for t in frames {
                    self.pending.push_back(CanObservation {
                        direction,
                        stamp_us: t.timestamp_us,
                        frame: t.frame,
                        dropped: std::mem::take(&mut dropped),
                    });
                }
            }
        }
    }

    /// The served interface.
    pub fn device(&self) -> &str {
        &self.session.device
    }

    /// Frames the server dropped for this observer so far.
    pub fn dropped(&self) -> u64 {
        self.session.dropped_total
    }

    /// The controller state last reported.
    pub fn bus_state(&self) -> BusState {
        self.session.bus_state
    }

    /// The estimate of the robot's clock (stamps are on it).
    pub fn clock(&self) -> &Clock {
        &self.session.clock
    }

    /// Probe the robot's clock once; [`clock`](Self::clock) improves as the answer is read
    /// along with the observations.
    pub async fn ping(&mut self) -> Result<(), ClientError> {
        self.session.ping().await
    }

    /// End the session.
    pub async fn close(mut self) {
        self.session.close().await;
    }
}
