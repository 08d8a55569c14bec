//! The user-space UDP [`Forwarder`]: a link with delay, jitter, loss, duplication, reordering,
//! outages and NAT rebinding between a client and a server.

use std::cmp::Ordering as CmpOrdering;
use std::collections::{BinaryHeap, HashMap};
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tokio::net::UdpSocket;
use tokio::sync::Notify;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::error::{Error, Result};
use crate::impairment::{Direction, Impairment, probability};
use crate::stats::{Counters, Stats, bump};

/// The seed used when [`ForwarderBuilder::seed`] is not called.
pub const DEFAULT_SEED: u64 = 0x5eed_5eed;

/// The queue bound used when [`ForwarderBuilder::queue_limit`] is not called.
pub const DEFAULT_QUEUE_LIMIT: usize = 16_384;

/// Largest UDP payload.
const MAX_DATAGRAM: usize = 65_535;

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

fn loopback_of(addr: &SocketAddr) -> IpAddr {
    match addr {
        SocketAddr::V4(_) => IpAddr::V4(Ipv4Addr::LOCALHOST),
        SocketAddr::V6(_) => IpAddr::V6(Ipv6Addr::LOCALHOST),
    }
}

/// Configures and starts a [`Forwarder`]; see [`Forwarder::builder`].
#[derive(Clone, Debug)]
pub struct ForwarderBuilder {
    target: SocketAddr,
    listen: Option<SocketAddr>,
    upstream_ip: Option<IpAddr>,
    seed: u64,
    queue_limit: usize,
    impairments: [Impairment; 2],
}

impl ForwarderBuilder {
    /// The address clients send to. Default: the loopback address of the target's family, port 0
    /// (an ephemeral port; read it back with [`Forwarder::local_addr`]).
    #[must_use]
    pub fn listen(mut self, addr: SocketAddr) -> Self {
        self.listen = Some(addr);
        self
    }

    /// The IP the per-client upstream sockets bind to (port 0). Default: the loopback address of
    /// the target's family. Use a dedicated loopback address (e.g. `127.0.0.3`) so a firewall
    /// rule can tell forwarded packets from direct ones (see [`Nft::isolate`](crate::nft::Nft::isolate)).
    #[must_use]
    pub fn upstream_ip(mut self, ip: IpAddr) -> Self {
        self.upstream_ip = Some(ip);
        self
    }

    /// Seed of the random decisions (one [`StdRng`] per direction derived from it). With the same
    /// seed, the same settings and the same packet sequence, the same packets are lost,
    /// duplicated, reordered and jittered (for one client; with several clients the interleaving
    /// of their packets decides). Reproducible across runs and machines with one version of
    /// `rand` (its `StdRng` algorithm may change between versions). Default: [`DEFAULT_SEED`].
    #[must_use]
    pub fn seed(mut self, seed: u64) -> Self {
        self.seed = seed;
        self
    }

    /// Maximum packets waiting for delivery, per direction. A packet arriving when the queue is
    /// full is dropped (drop-new, i.e. tail drop) and counted in
    /// [`DirectionStats::queue_dropped`](crate::DirectionStats::queue_dropped).
    /// The forwarder has no rate limit, so its queue holds rate × delay: raise the bound for
    /// fast streams over long delays (16 384 packets is 600 ms at ~27 000 packets/s).
    /// Default: [`DEFAULT_QUEUE_LIMIT`]; values below 1 are raised to 1.
    #[must_use]
    pub fn queue_limit(mut self, packets: usize) -> Self {
        self.queue_limit = packets.max(1);
        self
    }

    /// The initial impairment of one direction (default: none).
    #[must_use]
    pub fn impairment(mut self, direction: Direction, impairment: Impairment) -> Self {
        self.impairments[direction.index()] = impairment;
        self
    }

    /// The same initial impairment on both directions.
    #[must_use]
    pub fn impairment_both(mut self, impairment: Impairment) -> Self {
        self.impairments = [impairment.clone(), impairment];
        self
    }

    /// Binds the listening socket and starts forwarding.
    ///
    /// Must be called from within a Tokio runtime (any flavour); the forwarder's tasks run on it.
    pub fn start(self) -> Result<Forwarder> {
        let rt = tokio::runtime::Handle::try_current().map_err(|_| Error::NoRuntime)?;
        let listen = self
            .listen
            .unwrap_or_else(|| SocketAddr::new(loopback_of(&self.target), 0));
        let upstream_ip = self
            .upstream_ip
            .unwrap_or_else(|| loopback_of(&self.target));
        let std_listener = std::net::UdpSocket::bind(listen).map_err(|e| {
            Error::io(
                format!("binding the forwarder's listening socket {listen}"),
                e,
            )
        })?;
        std_listener
            .set_nonblocking(true)
            .map_err(|e| Error::io("setting the listening socket non-blocking", e))?;
        let listener = {
            let _enter = rt.enter();
            UdpSocket::from_std(std_listener)
                .map_err(|e| Error::io("registering the listening socket", e))?
        };
        let local_addr = listener
            .local_addr()
            .map_err(|e| Error::io("reading the listening socket's address", e))?;
        let [to_server, to_client] = self.impairments;
        let shared = Arc::new(Shared {
            target: self.target,
            upstream_ip,
            local_addr,
            listener: Arc::new(listener),
            rt: rt.clone(),
            lanes: [
                Lane::new(to_server, self.seed, self.queue_limit),
                Lane::new(to_client, self.seed.wrapping_add(1), self.queue_limit),
            ],
            clients: Mutex::new(HashMap::new()),
            clients_seen: AtomicU64::new(0),
            rebinds: AtomicU64::new(0),
        });
        let tasks = vec![
            rt.spawn(listen_loop(shared.clone())),
            rt.spawn(schedule_loop(shared.clone(), Direction::ToServer)),
            rt.spawn(schedule_loop(shared.clone(), Direction::ToClient)),
        ];
        tracing::debug!(%local_addr, target = %self.target, %upstream_ip, "forwarder started");
        Ok(Forwarder {
            guard: Arc::new(Guard {
                shared: shared.clone(),
                tasks,
            }),
            shared,
        })
    }
}

/// A user-space UDP link between clients and one server, with impairments changeable at runtime.
///
/// Clients send to [`local_addr`](Self::local_addr); each client source address gets its own
/// upstream socket (bound to [`ForwarderBuilder::upstream_ip`], port 0, connected to the
/// target), and the server's replies are sent back to the client from the listening socket.
/// This is what a NAT does; QUIC identifies connections by connection ids, so it works through
/// it, and [`rebind`](Self::rebind) simulates the NAT changing the client's mapping (QUIC must
/// migrate).
///
/// Delivery is scheduled: every direction keeps a queue ordered by due time, driven by one
/// Tokio timer, so a delay never serializes the stream.
///
/// `Forwarder` is a cheap handle: clones control the same link. The forwarding tasks stop when
/// the last clone is dropped or on [`shutdown`](Self::shutdown). Clients are never forgotten
/// (the forwarder is meant for tests and benches).
#[derive(Clone)]
pub struct Forwarder {
    shared: Arc<Shared>,
    guard: Arc<Guard>,
}

/// A client known to the forwarder, from [`Forwarder::clients`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ClientInfo {
    /// The client's source address, as seen by the listening socket.
    pub client: SocketAddr,
    /// The local address of its current upstream socket (what the server sees as the client).
    pub upstream: SocketAddr,
}

impl std::fmt::Debug for Forwarder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Forwarder")
            .field("local_addr", &self.shared.local_addr)
            .field("target", &self.shared.target)
            .field("upstream_ip", &self.shared.upstream_ip)
            .finish_non_exhaustive()
    }
}

impl Forwarder {
    /// A builder for a forwarder to `target` (the server).
    pub fn builder(target: SocketAddr) -> ForwarderBuilder {
        ForwarderBuilder {
            target,
            listen: None,
            upstream_ip: None,
            seed: DEFAULT_SEED,
            queue_limit: DEFAULT_QUEUE_LIMIT,
            impairments: [Impairment::none(), Impairment::none()],
        }
    }

    /// The address clients send to.
    pub fn local_addr(&self) -> SocketAddr {
        self.shared.local_addr
    }

    /// The server's address.
    pub fn target(&self) -> SocketAddr {
        self.shared.target
    }

    /// The current impairment of a direction.
    pub fn impairment(&self, direction: Direction) -> Impairment {
        lock(&self.shared.lane(direction).state).impairment.clone()
    }

    /// Replaces the impairment of a direction. It applies to packets entering from now on;
    /// packets already queued keep their delivery time.
    pub fn set_impairment(&self, direction: Direction, impairment: Impairment) {
        lock(&self.shared.lane(direction).state).impairment = impairment;
    }

    /// Changes the impairment of a direction in place.
    pub fn update_impairment(&self, direction: Direction, change: impl FnOnce(&mut Impairment)) {
        change(&mut lock(&self.shared.lane(direction).state).impairment);
    }

    /// Sets the fixed delay of a direction.
    pub fn set_delay(&self, direction: Direction, delay: Duration) {
        self.update_impairment(direction, |i| i.delay = delay);
    }

    /// Sets the jitter amplitude of a direction (uniform ±`jitter`, see [`Impairment`]).
    pub fn set_jitter(&self, direction: Direction, jitter: Duration) {
        self.update_impairment(direction, |i| i.jitter = jitter);
    }

    /// Sets the loss percentage of a direction.
    pub fn set_loss(&self, direction: Direction, percent: f64) {
        self.update_impairment(direction, |i| i.loss = percent);
    }

    /// Sets the duplication percentage of a direction.
    pub fn set_duplicate(&self, direction: Direction, percent: f64) {
        self.update_impairment(direction, |i| i.duplicate = percent);
    }

    /// Sets the reordering percentage of a direction and the extra delay of reordered packets.
    pub fn set_reorder(&self, direction: Direction, percent: f64, extra_delay: Duration) {
        self.update_impairment(direction, |i| {
            i.reorder = percent;
            i.reorder_delay = extra_delay;
        });
    }

    /// Turns a silent outage on or off in both directions: while on, every packet entering, and
    /// every queued packet falling due, is dropped (counted in `outage_dropped`).
    pub fn set_outage(&self, on: bool) {
        for d in Direction::BOTH {
            self.set_outage_in(d, on);
        }
    }

    /// Turns an outage on or off in one direction only (an asymmetric partition).
    pub fn set_outage_in(&self, direction: Direction, on: bool) {
        self.shared
            .lane(direction)
            .outage
            .store(on, Ordering::Relaxed);
    }

    /// Whether an outage is on in that direction.
    pub fn outage(&self, direction: Direction) -> bool {
        self.shared.lane(direction).outage.load(Ordering::Relaxed)
    }

    /// A snapshot of the counters.
    pub fn stats(&self) -> Stats {
        let s = &self.shared;
        let lane_stats = |d: Direction| {
            let lane = s.lane(d);
            let queued = lock(&lane.state).queue.len() as u64;
            lane.counters.snapshot(queued)
        };
        Stats {
            to_server: lane_stats(Direction::ToServer),
            to_client: lane_stats(Direction::ToClient),
            clients_seen: s.clients_seen.load(Ordering::Relaxed),
            rebinds: s.rebinds.load(Ordering::Relaxed),
        }
    }

    /// The clients seen so far and their current upstream addresses.
    pub fn clients(&self) -> Vec<ClientInfo> {
        let mut v: Vec<ClientInfo> = lock(&self.shared.clients)
            .iter()
            .map(|(client, c)| ClientInfo {
                client: *client,
                upstream: c.upstream,
            })
            .collect();
        v.sort_by_key(|c| c.client);
        v
    }

    /// Simulates a NAT rebinding for one client: its upstream socket is replaced by a new one
    /// (new source port) and the old one closed, so the server sees the client's packets come
    /// from a new address and replies to the old one are lost (the kernel answers them with ICMP
    /// port unreachable, where a NAT would stay silent). Returns the new upstream address.
    pub fn rebind(&self, client: SocketAddr) -> Result<SocketAddr> {
        let shared = &self.shared;
        if !lock(&shared.clients).contains_key(&client) {
            return Err(Error::UnknownClient(client));
        }
        let (socket, upstream) = shared.new_upstream()?;
        let task = shared
            .rt
            .spawn(upstream_loop(shared.clone(), client, socket.clone()));
        let old = lock(&shared.clients).insert(
            client,
            Client {
                socket,
                upstream,
                task,
            },
        );
        if let Some(old) = old {
            old.task.abort();
            tracing::debug!(%client, from = %old.upstream, to = %upstream, "rebound");
        }
        bump(&shared.rebinds, 1);
        Ok(upstream)
    }

    /// [`rebind`](Self::rebind) for every client; returns the new upstream addresses.
    pub fn rebind_all(&self) -> Result<Vec<ClientInfo>> {
        let clients: Vec<SocketAddr> = self.clients().into_iter().map(|c| c.client).collect();
        clients
            .into_iter()
            .map(|client| {
                Ok(ClientInfo {
                    client,
                    upstream: self.rebind(client)?,
                })
            })
            .collect()
    }

    /// Stops forwarding now, for every clone (queued packets are discarded, sockets closed).
    pub fn shutdown(&self) {
        self.guard.stop();
    }
}

struct Guard {
    shared: Arc<Shared>,
    tasks: Vec<JoinHandle<()>>,
}

impl Guard {
    fn stop(&self) {
        for t in &self.tasks {
            t.abort();
        }
        for (_, c) in lock(&self.shared.clients).drain() {
            c.task.abort();
        }
        for d in Direction::BOTH {
            lock(&self.shared.lane(d).state).queue.clear();
        }
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        self.stop();
    }
}

struct Client {
    socket: Arc<UdpSocket>,
    upstream: SocketAddr,
    task: JoinHandle<()>,
}

struct Shared {
    target: SocketAddr,
    upstream_ip: IpAddr,
    local_addr: SocketAddr,
    listener: Arc<UdpSocket>,
    rt: tokio::runtime::Handle,
    lanes: [Lane; 2],
    clients: Mutex<HashMap<SocketAddr, Client>>,
    clients_seen: AtomicU64,
    rebinds: AtomicU64,
}

/// One direction: its settings, random source, queue and counters.
struct Lane {
    state: Mutex<LaneState>,
    outage: AtomicBool,
    notify: Notify,
    counters: Counters,
    limit: usize,
}

struct LaneState {
    impairment: Impairment,
    rng: StdRng,
    queue: BinaryHeap<Scheduled>,
    seq: u64,
    /// Due time of the last in-order packet, for `preserve_order`.
    last_due: Option<Instant>,
}

struct Scheduled {
    due: Instant,
    seq: u64,
    client: SocketAddr,
    data: Vec<u8>,
}

// Min-heap on (due, seq): the earliest due packet first, FIFO among equal due times.
impl Ord for Scheduled {
    fn cmp(&self, other: &Self) -> CmpOrdering {
        (other.due, other.seq).cmp(&(self.due, self.seq))
    }
}
impl PartialOrd for Scheduled {
    fn partial_cmp(&self, other: &Self) -> Option<CmpOrdering> {
        Some(self.cmp(other))
    }
}
impl PartialEq for Scheduled {
    fn eq(&self, other: &Self) -> bool {
        self.due == other.due && self.seq == other.seq
    }
}
impl Eq for Scheduled {}

impl Lane {
    fn new(impairment: Impairment, seed: u64, limit: usize) -> Self {
        Lane {
            state: Mutex::new(LaneState {
                impairment,
                rng: StdRng::seed_from_u64(seed),
                queue: BinaryHeap::new(),
                seq: 0,
                last_due: None,
            }),
            outage: AtomicBool::new(false),
            notify: Notify::new(),
            counters: Counters::default(),
            limit,
        }
    }

    /// Applies the impairment to a datagram that just arrived and queues what survives.
    fn admit(&self, client: SocketAddr, data: &[u8]) {
        let c = &self.counters;
        bump(&c.received_packets, 1);
        bump(&c.received_bytes, data.len() as u64);
        if self.outage.load(Ordering::Relaxed) {
            bump(&c.outage_dropped, 1);
            return;
        }
        let now = Instant::now();
        let mut st = lock(&self.state);
        // A fixed number of draws per packet: decisions for packet n depend only on the seed
        // and n, not on earlier settings.
        let (u_loss, u_dup, u_reorder, j1, j2): (f64, f64, f64, f64, f64) = (
            st.rng.random(),
            st.rng.random(),
            st.rng.random(),
            st.rng.random(),
            st.rng.random(),
        );
        let imp = st.impairment.clone();
        if u_loss < probability(imp.loss) {
            bump(&c.lost, 1);
            return;
        }
        let jittered = |u: f64| -> Duration {
            // u in [0, 1) → offset in [-jitter, +jitter).
            let offset = imp.jitter.as_secs_f64() * (2.0 * u - 1.0);
            Duration::from_secs_f64((imp.delay.as_secs_f64() + offset).max(0.0))
        };
        let mut due = now + jittered(j1);
        let reordered = u_reorder < probability(imp.reorder);
        let duplicate = (u_dup < probability(imp.duplicate)).then(|| now + jittered(j2));
        if reordered {
            due += imp.reorder_delay;
        } else if imp.preserve_order {
            if let Some(last) = st.last_due {
                due = due.max(last);
            }
            st.last_due = Some(due);
        }
        if reordered {
            bump(&c.reordered, 1);
        }
        let mut wake = self.push(&mut st, due, client, data.to_vec());
        if let Some(dup_due) = duplicate {
            bump(&c.duplicated, 1);
            wake |= self.push(&mut st, dup_due, client, data.to_vec());
        }
        drop(st);
        if wake {
            self.notify.notify_one();
        }
    }

    /// Queues a packet; returns whether it became the earliest (the scheduler must re-arm).
    fn push(&self, st: &mut LaneState, due: Instant, client: SocketAddr, data: Vec<u8>) -> bool {
        if st.queue.len() >= self.limit {
            bump(&self.counters.queue_dropped, 1);
            return false;
        }
        let seq = st.seq;
        st.seq += 1;
        st.queue.push(Scheduled {
            due,
            seq,
            client,
            data,
        });
        st.queue.peek().is_some_and(|p| p.seq == seq)
    }
}

impl Shared {
    fn lane(&self, direction: Direction) -> &Lane {
        &self.lanes[direction.index()]
    }

    /// A new upstream socket bound to `upstream_ip:0` and connected to the target.
    fn new_upstream(&self) -> Result<(Arc<UdpSocket>, SocketAddr)> {
        let bind = SocketAddr::new(self.upstream_ip, 0);
        let std_socket = std::net::UdpSocket::bind(bind)
            .map_err(|e| Error::io(format!("binding an upstream socket on {bind}"), e))?;
        std_socket.connect(self.target).map_err(|e| {
            Error::io(
                format!("connecting an upstream socket to {}", self.target),
                e,
            )
        })?;
        std_socket
            .set_nonblocking(true)
            .map_err(|e| Error::io("setting an upstream socket non-blocking", e))?;
        let socket = {
            let _enter = self.rt.enter();
            UdpSocket::from_std(std_socket)
                .map_err(|e| Error::io("registering an upstream socket", e))?
        };
        let local = socket
            .local_addr()
            .map_err(|e| Error::io("reading an upstream socket's address", e))?;
        Ok((Arc::new(socket), local))
    }

    /// Makes sure a client has an upstream socket; false if one could not be created.
    fn ensure_client(self: &Arc<Self>, client: SocketAddr) -> bool {
        if lock(&self.clients).contains_key(&client) {
            return true;
        }
        match self.new_upstream() {
            Ok((socket, upstream)) => {
                let task = self
                    .rt
                    .spawn(upstream_loop(self.clone(), client, socket.clone()));
                lock(&self.clients).insert(
                    client,
                    Client {
                        socket,
                        upstream,
                        task,
                    },
                );
                bump(&self.clients_seen, 1);
                tracing::debug!(%client, %upstream, "new client");
                true
            }
            Err(e) => {
                tracing::warn!(%client, "dropping a packet: {e}");
                false
            }
        }
    }

    async fn deliver(&self, direction: Direction, packet: Scheduled) {
        let lane = self.lane(direction);
        let c = &lane.counters;
        if lane.outage.load(Ordering::Relaxed) {
            bump(&c.outage_dropped, 1);
            return;
        }
        bump(&c.forwarded_packets, 1);
        bump(&c.forwarded_bytes, packet.data.len() as u64);
        let sent = match direction {
            Direction::ToServer => {
                let socket = lock(&self.clients)
                    .get(&packet.client)
                    .map(|c| c.socket.clone());
                match socket {
                    Some(s) => s.send(&packet.data).await.map(drop),
                    None => Err(io::Error::new(io::ErrorKind::NotFound, "client gone")),
                }
            }
            Direction::ToClient => self
                .listener
                .send_to(&packet.data, packet.client)
                .await
                .map(drop),
        };
        if let Err(e) = sent {
            bump(&c.send_errors, 1);
            tracing::trace!(client = %packet.client, ?direction, "send failed: {e}");
        }
    }
}

/// Whether a receive error is transient (ICMP errors reported on UDP sockets).
fn transient(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionRefused
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::Interrupted
            | io::ErrorKind::WouldBlock
    )
}

/// Receives client datagrams on the listening socket.
async fn listen_loop(shared: Arc<Shared>) {
    let mut buf = vec![0u8; MAX_DATAGRAM];
    loop {
        match shared.listener.recv_from(&mut buf).await {
            Ok((n, client)) => {
                if shared.ensure_client(client) {
                    shared.lane(Direction::ToServer).admit(client, &buf[..n]);
                }
            }
            Err(e) if transient(&e) => {}
            Err(e) => {
                tracing::warn!("forwarder listening socket: {e}");
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    }
}

/// Receives the server's datagrams for one client on its upstream socket.
async fn upstream_loop(shared: Arc<Shared>, client: SocketAddr, socket: Arc<UdpSocket>) {
    let mut buf = vec![0u8; MAX_DATAGRAM];
    loop {
        match socket.recv(&mut buf).await {
            Ok(n) => shared.lane(Direction::ToClient).admit(client, &buf[..n]),
            Err(e) if transient(&e) => {}
            Err(e) => {
                tracing::warn!(%client, "forwarder upstream socket: {e}");
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    }
}

/// Delivers one direction's packets when they fall due.
async fn schedule_loop(shared: Arc<Shared>, direction: Direction) {
    let lane = shared.lane(direction);
    let mut due_now = Vec::new();
    loop {
        let next = {
            let mut st = lock(&lane.state);
            let now = Instant::now();
            while st.queue.peek().is_some_and(|p| p.due <= now) {
                if let Some(p) = st.queue.pop() {
                    due_now.push(p);
                }
            }
            st.queue.peek().map(|p| p.due)
        };
        if !due_now.is_empty() {
            for packet in due_now.drain(..) {
                shared.deliver(direction, packet).await;
            }
            continue;
        }
        match next {
            Some(due) => {
                tokio::select! {
                    () = tokio::time::sleep_until(due) => {}
                    () = lane.notify.notified() => {}
                }
            }
            None => lane.notify.notified().await,
        }
    }
}
