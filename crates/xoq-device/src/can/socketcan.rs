//! Linux SocketCAN backend (`can0`, `can0:fd`, `vcan0`).
//!
//! The kernel frame layouts (`struct can_frame`, 16 bytes; `struct canfd_frame`, 72 bytes)
//! are converted by the pure functions [`to_kernel`] and [`from_kernel`], unit-tested
//! everywhere. Receive timestamps come from the kernel (`SIOCGSTAMP`) when it has one.
//!
//! Failure handling, the part motors depend on:
//! - `ENOBUFS` (nobody acknowledges: motors unpowered, bus unterminated) and a socket buffer
//!   that stays full make `send` wait one back-off step and return [`DeviceError::Busy`],
//!   so the caller re-checks what to send next; it never spins.
//! - A failed read (interface down, bus-off restart, adapter unplugged) emits
//!   [`BusEvent::Down`], closes the socket, reopens it with back-off (100 ms doubling to 2 s)
//!   and emits [`BusEvent::Up`]; the transmitter follows onto the new socket and fails fast
//!   with [`DeviceError::Down`] in between. The receive task ends when its receiver is dropped.
//!
//! Sockets come from a [`CanSocketOpener`], so the real read/write code is tested without a
//! CAN interface: [`fake::FakeKernel`] hands out one end of an `AF_UNIX`/`SOCK_SEQPACKET`
//! pair (datagrams like CAN_RAW) and a [`FaultPlan`] injects syscall errors. Tests that need
//! a kernel CAN interface are `#[ignore = "needs vcan"]`.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::Arc;
use std::sync::atomic::{AtomicI32, AtomicU32, AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use tokio::io::unix::AsyncFd;
use tokio::sync::{mpsc, watch};
use xoq_wire::can::{BusState, CanFrame, TimedFrame};

use super::{BoxFuture, BusEvent, CanBackend, CanTx, OpenCan, RX_CAPACITY, now_us};
use crate::DeviceError;

pub mod fake;
#[cfg(test)]
mod fault_tests;

const CAN_EFF_FLAG: u32 = 0x8000_0000;
const CAN_RTR_FLAG: u32 = 0x4000_0000;
const CAN_ERR_FLAG: u32 = 0x2000_0000;
const CAN_SFF_MASK: u32 = 0x0000_07FF;
const CAN_EFF_MASK: u32 = 0x1FFF_FFFF;
const CANFD_BRS: u8 = 0x01;
const CANFD_ESI: u8 = 0x02;
const CANFD_FDF: u8 = 0x04;
/// `sizeof(struct can_frame)`.
pub const CAN_MTU: usize = 16;
/// `sizeof(struct canfd_frame)`.
pub const CANFD_MTU: usize = 72;

const AF_CAN: libc::c_int = 29;
const CAN_RAW: libc::c_int = 1;
const SOL_CAN_RAW: libc::c_int = 101;
const CAN_RAW_ERR_FILTER: libc::c_int = 2;
const CAN_RAW_FD_FRAMES: libc::c_int = 5;
const CAN_ERR_BUSOFF: u32 = 0x0000_0040;
const CAN_ERR_CRTL: u32 = 0x0000_0004;
const CAN_ERR_RESTARTED: u32 = 0x0000_0100;
/// `SIOCGSTAMP` (asm-generic sockios.h): timestamp of the last packet read.
const SIOCGSTAMP: libc::c_ulong = 0x8906;

/// Errors converting kernel frames.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KernelFrameError {
    /// Not 16 or 72 bytes.
    #[error("kernel CAN frame of {0} bytes (expected 16 or 72)")]
    Size(usize),
    /// The length field is out of range for the frame type.
    #[error("invalid length {0} in kernel CAN frame")]
    Length(u8),
    /// The frame violates CAN rules.
    #[error("invalid CAN frame: {0}")]
    Frame(String),
}

/// Encode a frame in the kernel's layout; returns the buffer and the number of bytes to write
/// (16 for classic frames, 72 for FD frames).
pub fn to_kernel(f: &CanFrame) -> ([u8; CANFD_MTU], usize) {
    let mut b = [0u8; CANFD_MTU];
    let mut id = if f.extended {
        (f.id & CAN_EFF_MASK) | CAN_EFF_FLAG
    } else {
        f.id & CAN_SFF_MASK
    };
    if f.rtr {
        id |= CAN_RTR_FLAG;
    }
    if f.error {
        id |= CAN_ERR_FLAG;
    }
    b[0..4].copy_from_slice(&id.to_ne_bytes());
    let n = f.data.len().min(64);
    if f.fd {
        b[4] = n as u8;
        b[5] = CANFD_FDF | if f.brs { CANFD_BRS } else { 0 } | if f.esi { CANFD_ESI } else { 0 };
        b[8..8 + n].copy_from_slice(&f.data[..n]);
        (b, CANFD_MTU)
    } else {
        b[4] = if f.rtr { f.rtr_len } else { n.min(8) as u8 };
        let n = n.min(8);
        b[8..8 + n].copy_from_slice(&f.data[..n]);
        (b, CAN_MTU)
    }
}

/// Decode a frame read from a CAN_RAW socket (16 or 72 bytes).
pub fn from_kernel(b: &[u8]) -> Result<CanFrame, KernelFrameError> {
    let fd = match b.len() {
        CAN_MTU => false,
        CANFD_MTU => true,
        n => return Err(KernelFrameError::Size(n)),
    };
    let raw = u32::from_ne_bytes([b[0], b[1], b[2], b[3]]);
    let extended = raw & CAN_EFF_FLAG != 0;
    let rtr = raw & CAN_RTR_FLAG != 0;
    let error = raw & CAN_ERR_FLAG != 0;
    let id = if extended || error {
        raw & CAN_EFF_MASK
    } else {
        raw & CAN_SFF_MASK
    };
    let len = b[4];
    let max = if fd { 64 } else { 8 };
    if len > max {
        return Err(KernelFrameError::Length(len));
    }
    let (brs, esi) = if fd {
        (b[5] & CANFD_BRS != 0, b[5] & CANFD_ESI != 0)
    } else {
        (false, false)
    };
    let data_len = if rtr { 0 } else { len as usize };
    let frame = CanFrame {
        id,
        extended,
        rtr,
        error,
        fd,
        brs,
        esi,
        rtr_len: if rtr { len } else { 0 },
        data: Bytes::copy_from_slice(&b[8..8 + data_len]),
    };
    frame
        .validate()
        .map_err(|e| KernelFrameError::Frame(e.to_string()))?;
    Ok(frame)
}

/// Bus state implied by a kernel error frame, if it carries one.
pub fn state_of_error_frame(f: &CanFrame) -> Option<BusState> {
    if !f.error {
        return None;
    }
    if f.id & CAN_ERR_BUSOFF != 0 {
        return Some(BusState::BusOff);
    }
    if f.id & CAN_ERR_RESTARTED != 0 {
        return Some(BusState::ErrorActive);
    }
    if f.id & CAN_ERR_CRTL != 0 {
        let d1 = f.data.get(1).copied().unwrap_or(0);
        return Some(if d1 & 0x30 != 0 {
            BusState::ErrorPassive
        } else if d1 & 0x0C != 0 {
            BusState::ErrorWarning
        } else if d1 & 0x40 != 0 {
            BusState::ErrorActive
        } else {
            return None;
        });
    }
    None
}

/// First transmit back-off step after `ENOBUFS`.
const BACKOFF_MIN: Duration = Duration::from_millis(1);
/// Largest transmit back-off step.
const BACKOFF_MAX: Duration = Duration::from_millis(64);
/// Longest a send waits for room in the socket buffer before returning `Busy`.
const WRITABLE_WAIT: Duration = BACKOFF_MAX;
/// First wait before reopening an interface that went down.
const REOPEN_MIN: Duration = Duration::from_millis(100);
/// Largest wait between reopen attempts.
const REOPEN_MAX: Duration = Duration::from_secs(2);

/// Opens the socket of a SocketCAN interface. A seam, so tests (here and above the device
/// layer) can stand in for the kernel without a CAN interface; see [`fake::FakeKernel`].
pub trait CanSocketOpener: Send + Sync + 'static {
    /// A socket for `iface` that reads and writes whole kernel frames as datagrams (16-byte
    /// `struct can_frame`, 72-byte `struct canfd_frame` if `fd_frames`). The backend makes it
    /// non-blocking. Called once by `open` and again for every reopen after a failure.
    fn open(&self, iface: &str, fd_frames: bool) -> io::Result<OwnedFd>;
}

/// The real opener: a CAN_RAW socket bound to the interface, receiving error frames.
#[derive(Debug, Clone, Copy, Default)]
pub struct KernelSocketOpener;

impl CanSocketOpener for KernelSocketOpener {
    fn open(&self, iface: &str, fd_frames: bool) -> io::Result<OwnedFd> {
        open_socket(iface, fd_frames)
    }
}

/// One kind of syscall that a [`FaultPlan`] can fail.
#[derive(Debug, Default)]
struct Fault {
    remaining: AtomicU32,
    errno: AtomicI32,
    attempts: AtomicU64,
}

impl Fault {
    fn set(&self, n: u32, errno: i32) {
        self.errno.store(errno, Ordering::SeqCst);
        self.remaining.store(n, Ordering::SeqCst);
    }

    /// Count an attempt; the injected error if one is pending.
    fn check(&self) -> io::Result<()> {
        self.attempts.fetch_add(1, Ordering::SeqCst);
        match self
            .remaining
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
        {
            Ok(_) => Err(io::Error::from_raw_os_error(
                self.errno.load(Ordering::SeqCst),
            )),
            Err(_) => Ok(()),
        }
    }
}

/// Errors to inject into a [`SocketCanBackend`]'s syscalls, and counts of those syscalls, so
/// tests reproduce `ENOBUFS`, a lost interface and failing reopens without a CAN interface
/// and can tell waiting from spinning. Consulted before every read, write and open.
#[derive(Debug, Default)]
pub struct FaultPlan {
    writes: Fault,
    reads: Fault,
    opens: Fault,
}

impl FaultPlan {
    /// An empty plan, shared between the test and the backend.
    pub fn new() -> Arc<Self> {
        Arc::default()
    }

    /// The next `n` writes fail with `errno` (e.g. `libc::ENOBUFS`) without reaching the
    /// socket; `n = 0` cancels what is left.
    pub fn fail_writes(&self, n: u32, errno: i32) {
        self.writes.set(n, errno);
    }

    /// The next `n` reads fail with `errno` (e.g. `libc::ENETDOWN`). A read happens only
    /// when a datagram is pending, so deliver one to trigger it.
    pub fn fail_reads(&self, n: u32, errno: i32) {
        self.reads.set(n, errno);
    }

    /// The next `n` opens (the first `open` or a reopen) fail with `errno` before reaching
    /// the opener; `n = 0` cancels what is left.
    pub fn fail_opens(&self, n: u32, errno: i32) {
        self.opens.set(n, errno);
    }

    /// Write attempts so far, injected failures included.
    pub fn write_attempts(&self) -> u64 {
        self.writes.attempts.load(Ordering::SeqCst)
    }

    /// Read attempts so far, injected failures included.
    pub fn read_attempts(&self) -> u64 {
        self.reads.attempts.load(Ordering::SeqCst)
    }

    /// Open attempts so far, injected failures included.
    pub fn open_attempts(&self) -> u64 {
        self.opens.attempts.load(Ordering::SeqCst)
    }
}

/// Counters of a [`SocketCanBackend`], shared by everything it opens: how often the bus
/// pushed back or went away, for logs, stats and tests.
#[derive(Debug, Default)]
pub struct SocketCanStats {
    busy: AtomicU64,
    downs: AtomicU64,
    reopens: AtomicU64,
    failed_reopens: AtomicU64,
    rx_dropped: AtomicU64,
}

impl SocketCanStats {
    /// `Busy` errors returned by `send`, each after one back-off step.
    pub fn busy(&self) -> u64 {
        self.busy.load(Ordering::Relaxed)
    }

    /// Times the interface went down.
    pub fn downs(&self) -> u64 {
        self.downs.load(Ordering::Relaxed)
    }

    /// Successful reopens after going down.
    pub fn reopens(&self) -> u64 {
        self.reopens.load(Ordering::Relaxed)
    }

    /// Reopen attempts that failed (each followed by a longer wait).
    pub fn failed_reopens(&self) -> u64 {
        self.failed_reopens.load(Ordering::Relaxed)
    }

    /// Received frames dropped because the receive channel was full.
    pub fn rx_dropped(&self) -> u64 {
        self.rx_dropped.load(Ordering::Relaxed)
    }
}

/// A SocketCAN interface.
#[derive(Clone)]
pub struct SocketCanBackend {
    iface: String,
    label: String,
    fd: bool,
    opener: Arc<dyn CanSocketOpener>,
    faults: Option<Arc<FaultPlan>>,
    stats: Arc<SocketCanStats>,
}

impl std::fmt::Debug for SocketCanBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SocketCanBackend")
            .field("label", &self.label)
            .field("faults", &self.faults.is_some())
            .finish_non_exhaustive()
    }
}

impl SocketCanBackend {
    /// Interface `iface` (e.g. `can0`), with CAN FD frames enabled if `fd`.
    pub fn new(iface: &str, fd: bool) -> Self {
        Self {
            iface: iface.to_string(),
            label: if fd {
                format!("{iface}:fd")
            } else {
                iface.to_string()
            },
            fd,
            opener: Arc::new(KernelSocketOpener),
            faults: None,
            stats: Arc::default(),
        }
    }

    /// Open sockets through `opener` instead of the kernel (tests: [`fake::FakeKernel`]).
    pub fn with_opener(mut self, opener: Arc<dyn CanSocketOpener>) -> Self {
        self.opener = opener;
        self
    }

    /// Inject the faults of `plan` and count syscalls in it (tests only).
    pub fn with_faults(mut self, plan: Arc<FaultPlan>) -> Self {
        self.faults = Some(plan);
        self
    }

    /// The counters of this interface.
    pub fn stats(&self) -> Arc<SocketCanStats> {
        self.stats.clone()
    }
}

fn open_socket(iface: &str, fd_frames: bool) -> io::Result<OwnedFd> {
    let name = std::ffi::CString::new(iface)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "interface name has a NUL"))?;
    // SAFETY: plain libc calls with valid arguments; the fd is owned right after creation.
    unsafe {
        let ifindex = libc::if_nametoindex(name.as_ptr());
        if ifindex == 0 {
            return Err(io::Error::new(
                io::ErrorKind::NotFound,
                format!("no CAN interface {iface} (ip link show; for tests: modprobe vcan)"),
            ));
        }
        let s = libc::socket(
            AF_CAN,
            libc::SOCK_RAW | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
            CAN_RAW,
        );
        if s < 0 {
            return Err(io::Error::last_os_error());
        }
        let sock = OwnedFd::from_raw_fd(s);
        if interface_is_down(s, &name) {
            // Binding would succeed and the first read fail: report it where it is clear.
            return Err(io::Error::new(
                io::ErrorKind::NetworkDown,
                format!(
                    "{iface} is down (ip link set {iface} up type can bitrate 1000000, or your bitrate)"
                ),
            ));
        }
        if fd_frames {
            let on: libc::c_int = 1;
            if libc::setsockopt(
                s,
                SOL_CAN_RAW,
                CAN_RAW_FD_FRAMES,
                (&on as *const libc::c_int).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            ) != 0
            {
                return Err(io::Error::last_os_error());
            }
        }
        // Receive every error class: bus-off and error-passive are reported to clients.
        let err_mask: u32 = CAN_EFF_MASK;
        libc::setsockopt(
            s,
            SOL_CAN_RAW,
            CAN_RAW_ERR_FILTER,
            (&err_mask as *const u32).cast(),
            std::mem::size_of::<u32>() as libc::socklen_t,
        );
        // struct sockaddr_can { sa_family_t family; int ifindex; ... } (24 bytes on Linux).
        let mut addr = [0u8; 24];
        addr[0..2].copy_from_slice(&(AF_CAN as u16).to_ne_bytes());
        addr[4..8].copy_from_slice(&(ifindex as i32).to_ne_bytes());
        if libc::bind(s, addr.as_ptr().cast(), addr.len() as libc::socklen_t) != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(sock)
    }
}

/// Whether the interface exists and is administratively down (`SIOCGIFFLAGS`); `false`
/// when that cannot be told.
fn interface_is_down(sock: i32, name: &std::ffi::CStr) -> bool {
    // SAFETY: an all-zero ifreq is valid; the name (at most IFNAMSIZ - 1 bytes, NUL kept)
    // is copied in, and SIOCGIFFLAGS writes only `ifru_flags`.
    unsafe {
        let mut req: libc::ifreq = std::mem::zeroed();
        let bytes = name.to_bytes();
        if bytes.len() >= req.ifr_name.len() {
            return false;
        }
        for (d, s) in req.ifr_name.iter_mut().zip(bytes) {
            *d = *s as libc::c_char;
        }
        libc::ioctl(sock, libc::SIOCGIFFLAGS, &mut req) == 0
            && (req.ifr_ifru.ifru_flags as libc::c_int) & libc::IFF_UP == 0
    }
}

fn kernel_timestamp_us(fd: i32) -> Option<u64> {
    let mut tv = libc::timeval {
        tv_sec: 0,
        tv_usec: 0,
    };
    // SAFETY: SIOCGSTAMP writes a timeval for the last packet read on this socket.
    let r = unsafe { libc::ioctl(fd, SIOCGSTAMP, &mut tv) };
    (r == 0).then(|| tv.tv_sec as u64 * 1_000_000 + tv.tv_usec as u64)
}

/// Errors after which a socket is of no further use: the interface went away or down.
fn is_down_error(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(
            libc::ENETDOWN
                | libc::ENODEV
                | libc::ENXIO
                | libc::EPIPE
                | libc::ECONNRESET
                | libc::ENOTCONN
                | libc::EBADF
        )
    )
}

type Sock = Arc<AsyncFd<OwnedFd>>;

/// The socket reader and transmitter share: replaced by the reader on reopen.
#[derive(Clone)]
enum Link {
    Up(Sock),
    Down(String),
}

/// Open through the opener (after the fault plan) and register with the reactor.
fn open_link(
    opener: &dyn CanSocketOpener,
    faults: Option<&FaultPlan>,
    iface: &str,
    fd_frames: bool,
) -> io::Result<Sock> {
    if let Some(f) = faults {
        f.opens.check()?;
    }
    let sock = opener.open(iface, fd_frames)?;
    // A blocking socket would stall a runtime thread: make sure, whoever opened it.
    let raw = sock.as_raw_fd();
    // SAFETY: fcntl on a descriptor we own.
    unsafe {
        let flags = libc::fcntl(raw, libc::F_GETFL);
        if flags < 0 || libc::fcntl(raw, libc::F_SETFL, flags | libc::O_NONBLOCK) < 0 {
            return Err(io::Error::last_os_error());
        }
    }
    // SAFETY: the OwnedFd owns the socket, which stays open for the AsyncFd's lifetime.
    let afd = unsafe { AsyncFd::register(sock) }.map_err(|e| e.into_parts().1)?;
    Ok(Arc::new(afd))
}

impl CanBackend for SocketCanBackend {
    fn name(&self) -> &str {
        &self.label
    }

    fn open(&self) -> Result<OpenCan, DeviceError> {
        // The first open fails fast (a mistyped or unconfigured interface is the user's to
        // fix); only an interface that worked is reopened in the background.
        let sock = open_link(
            self.opener.as_ref(),
            self.faults.as_deref(),
            &self.iface,
            self.fd,
        )
        .map_err(|source| DeviceError::Open {
            device: self.label.clone(),
            source,
        })?;
        let (events, rx) = mpsc::channel(RX_CAPACITY);
        let (link_tx, link_rx) = watch::channel(Link::Up(sock.clone()));
        let reader = Reader {
            backend: self.clone(),
            events,
            link: link_tx,
        };
        tokio::spawn(reader.run(sock));
        Ok(OpenCan {
            rx,
            tx: Box::new(SocketTx {
                link: link_rx,
                label: self.label.clone(),
                fd: self.fd,
                faults: self.faults.clone(),
                stats: self.stats.clone(),
                backoff: BACKOFF_MIN,
            }),
            fd: self.fd,
        })
    }
}

/// The receive task: reads frames, and when the socket fails, reports `Down`, reopens with
/// back-off, hands the new socket to the transmitter and reports `Up`.
struct Reader {
    backend: SocketCanBackend,
    events: mpsc::Sender<BusEvent>,
    link: watch::Sender<Link>,
}

impl Reader {
    /// Runs until the event receiver is dropped.
    async fn run(self, mut sock: Sock) {
        let label = self.backend.label.clone();
        loop {
            let reason = tokio::select! {
                r = self.read_until_error(&sock) => match r {
                    Some(reason) => reason,
                    None => return,
                },
                () = self.events.closed() => return,
            };
            // Transmitter first, so a send after the event already fails fast.
            self.link.send_replace(Link::Down(reason.clone()));
            drop(sock);
            self.backend.stats.downs.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(iface = %label, "CAN interface down: {reason}; reopening");
            // Down/Up are never dropped: they wait for room (the consumer drains steadily).
            if self.events.send(BusEvent::Down(reason)).await.is_err() {
                return;
            }
            let Some(s) = self.reopen().await else {
                return;
            };
            sock = s;
            self.link.send_replace(Link::Up(sock.clone()));
            self.backend.stats.reopens.fetch_add(1, Ordering::Relaxed);
            tracing::info!(iface = %label, "CAN interface back up");
            if self.events.send(BusEvent::Up).await.is_err() {
                return;
            }
        }
    }

    /// Read and forward until the socket fails (returns why) or the receiver is gone (None).
    async fn read_until_error(&self, sock: &AsyncFd<OwnedFd>) -> Option<String> {
        let label = &self.backend.label;
        let faults = self.backend.faults.as_deref();
        let mut buf = [0u8; CANFD_MTU];
        loop {
            let mut guard = match sock.readable().await {
                Ok(g) => g,
                Err(e) => return Some(format!("waiting to read: {e}")),
            };
            let fd = sock.get_ref().as_raw_fd();
            let n = match guard.try_io(|_| {
                if let Some(f) = faults {
                    f.reads.check()?;
                }
                // SAFETY: reading into a stack buffer of CANFD_MTU bytes from our socket.
                let r = unsafe { libc::read(fd, buf.as_mut_ptr().cast(), buf.len()) };
                if r < 0 {
                    Err(io::Error::last_os_error())
                } else {
                    Ok(r as usize)
                }
            }) {
                // CAN_RAW never reads 0 bytes; a closed stand-in socket does.
                Ok(Ok(0)) => return Some("the socket was closed".to_string()),
                Ok(Ok(n)) => n,
                Ok(Err(e)) if e.kind() == io::ErrorKind::Interrupted => continue,
                Ok(Err(e)) => return Some(format!("read failed: {e}")),
                Err(_would_block) => continue,
            };
            let ts = kernel_timestamp_us(fd).unwrap_or_else(now_us);
            let frame = match from_kernel(&buf[..n]) {
                Ok(f) => f,
                Err(e) => {
                    tracing::debug!(iface = %label, "ignored kernel frame: {e}");
                    continue;
                }
            };
            if let Some(state) = state_of_error_frame(&frame) {
                // Rare and important: wait for room rather than lose it.
                if self.events.send(BusEvent::State(state)).await.is_err() {
                    return None;
                }
            }
            let ev = BusEvent::Frame(TimedFrame {
                frame,
                timestamp_us: ts,
            });
            match self.events.try_send(ev) {
                Ok(()) => {}
                // The consumer is not keeping up and a bus cannot be paused: drop, counted.
                Err(mpsc::error::TrySendError::Full(_)) => {
                    self.backend
                        .stats
                        .rx_dropped
                        .fetch_add(1, Ordering::Relaxed);
                }
                Err(mpsc::error::TrySendError::Closed(_)) => return None,
            }
        }
    }

    /// Reopen with back-off until it works (Some) or the receiver is gone (None).
    async fn reopen(&self) -> Option<Sock> {
        let b = &self.backend;
        let mut wait = REOPEN_MIN;
        loop {
            tokio::select! {
                () = tokio::time::sleep(wait) => {}
                () = self.events.closed() => return None,
            }
            match open_link(b.opener.as_ref(), b.faults.as_deref(), &b.iface, b.fd) {
                Ok(sock) => return Some(sock),
                Err(e) => {
                    let n = b.stats.failed_reopens.fetch_add(1, Ordering::Relaxed);
                    if n == 0 || wait < REOPEN_MAX {
                        tracing::warn!(iface = %b.label, "cannot reopen yet: {e}; retrying in {:?}", (wait * 2).min(REOPEN_MAX));
                    } else {
                        tracing::debug!(iface = %b.label, "cannot reopen yet: {e}");
                    }
                    wait = (wait * 2).min(REOPEN_MAX);
                }
            }
        }
    }
}

struct SocketTx {
    link: watch::Receiver<Link>,
    label: String,
    fd: bool,
    faults: Option<Arc<FaultPlan>>,
    stats: Arc<SocketCanStats>,
    /// The next `ENOBUFS` back-off step.
    backoff: Duration,
}

/// Resolves when the reader replaces the socket; never if the reader has ended (the
/// transmitter then keeps the last socket).
async fn link_changed(link: &mut watch::Receiver<Link>) {
    if link.changed().await.is_err() {
        std::future::pending::<()>().await;
    }
}

impl SocketTx {
    fn busy(&self, waited: Duration) -> DeviceError {
        self.stats.busy.fetch_add(1, Ordering::Relaxed);
        DeviceError::Busy {
            device: self.label.clone(),
            waited,
        }
    }

    fn down(&self, reason: String) -> DeviceError {
        DeviceError::Down {
            device: self.label.clone(),
            reason,
        }
    }
}

impl CanTx for SocketTx {
    fn send<'a>(&'a mut self, frame: &'a CanFrame) -> BoxFuture<'a, Result<(), DeviceError>> {
        Box::pin(async move {
            if frame.fd && !self.fd {
                return Err(DeviceError::Unsupported {
                    operation: "sending a CAN FD frame",
                    device: self.label.clone(),
                    reason: format!("serve the interface as {}:fd", self.label),
                });
            }
            let (buf, len) = to_kernel(frame);
            let link = self.link.borrow_and_update().clone();
            let sock = match link {
                Link::Up(s) => s,
                Link::Down(reason) => return Err(self.down(reason)),
            };
            let started = tokio::time::Instant::now();
            loop {
                let ready = tokio::select! {
                    r = tokio::time::timeout_at(started + WRITABLE_WAIT, sock.writable()) => r,
                    () = link_changed(&mut self.link) => {
                        return Err(self.down("the interface went down while this frame waited".into()));
                    }
                };
                let Ok(ready) = ready else {
                    // No room for a whole step: the bus is not draining.
                    return Err(self.busy(WRITABLE_WAIT));
                };
                let mut guard = ready.map_err(|source| DeviceError::Io {
                    operation: "CAN send",
                    device: self.label.clone(),
                    source,
                })?;
                let fd = sock.get_ref().as_raw_fd();
                let faults = self.faults.as_deref();
                let written = guard.try_io(|_| {
                    if let Some(f) = faults {
                        f.writes.check()?;
                    }
                    // SAFETY: sending `len` bytes of a valid buffer on our socket; no SIGPIPE
                    // if a stand-in socket's peer is gone.
                    let r = unsafe { libc::send(fd, buf.as_ptr().cast(), len, libc::MSG_NOSIGNAL) };
                    if r < 0 {
                        Err(io::Error::last_os_error())
                    } else {
                        Ok(())
                    }
                });
                drop(guard);
                match written {
                    Ok(Ok(())) => {
                        self.backoff = BACKOFF_MIN;
                        return Ok(());
                    }
                    // ENOBUFS: the controller's queue is full, typically because no node
                    // acknowledges. Wait one step, then let the caller choose what goes next.
                    Ok(Err(e)) if e.raw_os_error() == Some(libc::ENOBUFS) => {
                        let wait = self.backoff;
                        self.backoff = (wait * 2).min(BACKOFF_MAX);
                        tracing::debug!(iface = %self.label, ?wait, "CAN transmit queue full");
                        tokio::select! {
                            () = tokio::time::sleep(wait) => {}
                            () = link_changed(&mut self.link) => {
                                return Err(self.down("the interface went down while this frame waited".into()));
                            }
                        }
                        return Err(self.busy(wait));
                    }
                    Ok(Err(e)) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Ok(Err(e)) if is_down_error(&e) => return Err(self.down(e.to_string())),
                    Ok(Err(source)) => {
                        return Err(DeviceError::Io {
                            operation: "CAN send",
                            device: self.label.clone(),
                            source,
                        });
                    }
                    Err(_would_block) => continue,
                }
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn roundtrip(f: CanFrame) {
        let (b, n) = to_kernel(&f);
        assert_eq!(from_kernel(&b[..n]).expect("decode"), f);
    }

    #[test]
    fn classic_extended_rtr_fd_roundtrip() {
        roundtrip(CanFrame::new(0x123, vec![1, 2, 3]).expect("classic"));
        roundtrip(CanFrame::new(0x1ABC_DEF0, vec![0xAA; 8]).expect("extended"));
        roundtrip(CanFrame::remote(0x7FF, 4).expect("rtr"));
        let mut fd = CanFrame::new_fd(0x11, vec![7u8; 64], true).expect("fd");
        fd.esi = true;
        roundtrip(fd);
    }

    #[test]
    fn kernel_layout_snapshot() {
        let (b, n) = to_kernel(&CanFrame::new(0x1ABC_DEF0, vec![0xDE, 0xAD]).expect("f"));
        assert_eq!(n, CAN_MTU);
        assert_eq!(u32::from_ne_bytes([b[0], b[1], b[2], b[3]]), 0x9ABC_DEF0);
        assert_eq!(&b[4..10], &[2, 0, 0, 0, 0xDE, 0xAD]);
        let (b, n) = to_kernel(&CanFrame::new_fd(0x5, vec![1; 12], true).expect("fd"));
        assert_eq!(n, CANFD_MTU);
        assert_eq!(b[4], 12);
        assert_eq!(b[5], CANFD_FDF | CANFD_BRS);
    }

    #[test]
    fn bad_kernel_frames_are_errors() {
        assert_eq!(from_kernel(&[0u8; 10]), Err(KernelFrameError::Size(10)));
        let mut b = [0u8; CAN_MTU];
        b[4] = 9;
        assert_eq!(from_kernel(&b), Err(KernelFrameError::Length(9)));
    }

    #[test]
    fn bus_off_error_frame_maps_to_state() {
        let mut b = [0u8; CAN_MTU];
        b[0..4].copy_from_slice(&(CAN_ERR_FLAG | CAN_ERR_BUSOFF).to_ne_bytes());
        b[4] = 8;
        let f = from_kernel(&b).expect("error frame");
        assert_eq!(state_of_error_frame(&f), Some(BusState::BusOff));
    }

    proptest::proptest! {
        #[test]
        fn from_kernel_is_total(bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..80)) {
            let _ = from_kernel(&bytes);
        }
    }
}
