//! A stand-in for the kernel side of SocketCAN, so the backend's real socket code (and code
//! above it, such as the CAN server) can be tested without a CAN interface.
//!
//! Each open returns one end of a fresh `socketpair(AF_UNIX, SOCK_SEQPACKET)`, which keeps
//! datagram boundaries exactly like CAN_RAW: the backend writes and reads 16/72-byte kernel
//! frames on it unchanged. The test plays the kernel on the other end: it reads what the
//! backend sent and delivers frames for it to receive. Errors are injected with a
//! [`FaultPlan`](super::FaultPlan); [`FakeKernel::unplug`] makes the interface vanish.
//!
//! ```no_run
//! # async fn demo() -> std::io::Result<()> {
//! use std::sync::Arc;
//! use xoq_device::can::CanBackend;
//! use xoq_device::can::socketcan::{SocketCanBackend, fake::FakeKernel};
//! let kernel = FakeKernel::new();
//! let bus = SocketCanBackend::new("can0", false).with_opener(kernel.clone()).open().unwrap();
//! let sent = kernel.read_frame().await?; // what `bus.tx.send` put on the "bus"
//! # Ok(()) }
//! ```

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::{Arc, Mutex};

use tokio::io::unix::AsyncFd;
use tokio::sync::watch;
use xoq_wire::can::CanFrame;

use super::{CANFD_MTU, CanSocketOpener, from_kernel, to_kernel};

/// The kernel end of the socket the backend opened last, and how many it has opened.
#[derive(Debug)]
pub struct FakeKernel {
    peer: Mutex<Option<Arc<AsyncFd<OwnedFd>>>>,
    opens: watch::Sender<u64>,
}

impl FakeKernel {
    /// A kernel with no socket open yet; give it to `SocketCanBackend::with_opener`.
    pub fn new() -> Arc<Self> {
        Arc::new(Self {
            peer: Mutex::new(None),
            opens: watch::Sender::new(0),
        })
    }

    /// Sockets opened so far (the first open plus every reopen).
    pub fn opens(&self) -> u64 {
        *self.opens.borrow()
    }

    /// Wait until at least `n` sockets have been opened.
    pub async fn wait_opens(&self, n: u64) {
        let mut rx = self.opens.subscribe();
        // The sender lives in `self`, so this cannot fail while we borrow it.
        let _ = rx.wait_for(|&k| k >= n).await;
    }

    fn current(&self) -> io::Result<Arc<AsyncFd<OwnedFd>>> {
        self.peer
            .lock()
            .map_err(|_| io::Error::other("fake kernel lock poisoned"))?
            .clone()
            .ok_or_else(|| io::Error::new(io::ErrorKind::NotConnected, "no socket is open"))
    }

    /// The next datagram the backend sent on the current socket, byte for byte. Fails with
    /// `UnexpectedEof` once the backend has closed that socket.
    pub async fn read_raw(&self) -> io::Result<Vec<u8>> {
        let sock = self.current()?;
        let mut buf = [0u8; CANFD_MTU + 1];
        loop {
            let mut guard = sock.readable().await?;
            let fd = sock.get_ref().as_raw_fd();
            match guard.try_io(|_| {
                // SAFETY: reading into a stack buffer of its own length.
                let r = unsafe { libc::read(fd, buf.as_mut_ptr().cast(), buf.len()) };
                if r < 0 {
                    Err(io::Error::last_os_error())
                } else {
                    Ok(r as usize)
                }
            }) {
                Ok(Ok(0)) => return Err(io::ErrorKind::UnexpectedEof.into()),
                Ok(Ok(n)) => return Ok(buf[..n].to_vec()),
                Ok(Err(e)) => return Err(e),
                Err(_would_block) => continue,
            }
        }
    }

    /// The next frame the backend sent, decoded.
    pub async fn read_frame(&self) -> io::Result<CanFrame> {
        let b = self.read_raw().await?;
        from_kernel(&b).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
    }

    /// Hand the backend one datagram to read, as the kernel would a received frame.
    pub async fn deliver_raw(&self, bytes: &[u8]) -> io::Result<()> {
        let sock = self.current()?;
        loop {
            let mut guard = sock.writable().await?;
            let fd = sock.get_ref().as_raw_fd();
            match guard.try_io(|_| {
                // SAFETY: sending a valid buffer; no SIGPIPE if the backend closed its end.
                let r = unsafe {
                    libc::send(fd, bytes.as_ptr().cast(), bytes.len(), libc::MSG_NOSIGNAL)
                };
                if r < 0 {
                    Err(io::Error::last_os_error())
                } else {
                    Ok(())
                }
            }) {
                Ok(r) => return r,
                Err(_would_block) => continue,
            }
        }
    }

    /// Hand the backend one frame to receive, in the kernel's layout.
    pub async fn deliver(&self, frame: &CanFrame) -> io::Result<()> {
        let (b, n) = to_kernel(frame);
        self.deliver_raw(&b[..n]).await
    }

    /// The interface vanishes: the kernel end is closed, so the backend's next read sees end
    /// of file and its writes fail with `EPIPE`. The next open gets a working socket again.
    pub fn unplug(&self) {
        if let Ok(mut p) = self.peer.lock() {
            p.take();
        }
    }
}

impl CanSocketOpener for FakeKernel {
    fn open(&self, _iface: &str, _fd_frames: bool) -> io::Result<OwnedFd> {
        let mut fds = [0 as libc::c_int; 2];
        // SAFETY: socketpair writes two descriptors, owned right after.
        let (ours, theirs) = unsafe {
            if libc::socketpair(
                libc::AF_UNIX,
                libc::SOCK_SEQPACKET | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
                0,
                fds.as_mut_ptr(),
            ) != 0
            {
                return Err(io::Error::last_os_error());
            }
            (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1]))
        };
        // SAFETY: the OwnedFd owns the socket for the AsyncFd's lifetime.
        let peer = unsafe { AsyncFd::register(ours) }.map_err(|e| e.into_parts().1)?;
        *self
            .peer
            .lock()
            .map_err(|_| io::Error::other("fake kernel lock poisoned"))? = Some(Arc::new(peer));
        self.opens.send_modify(|n| *n += 1);
        Ok(theirs)
    }
}
