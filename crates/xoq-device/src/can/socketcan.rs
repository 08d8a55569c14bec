//! Linux SocketCAN backend (`can0`, `can0:fd`, `vcan0`).
//!
//! The kernel frame layouts (`struct can_frame`, 16 bytes; `struct canfd_frame`, 72 bytes)
//! are converted by the pure functions [`to_kernel`] and [`from_kernel`], unit-tested
//! everywhere; the socket itself needs a CAN interface (real hardware or the `vcan` module).
//! Receive timestamps come from the kernel (`SIOCGSTAMP`) when it has one.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::Arc;

use bytes::Bytes;
use tokio::io::unix::AsyncFd;
use tokio::sync::mpsc;
use xoq_wire::can::{BusState, CanFrame, TimedFrame};

use super::{BoxFuture, BusEvent, CanBackend, CanTx, OpenCan, RX_CAPACITY, now_us};
use crate::DeviceError;

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

/// A SocketCAN interface.
#[derive(Debug, Clone)]
pub struct SocketCanBackend {
    iface: String,
    label: String,
    fd: bool,
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
        }
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

fn kernel_timestamp_us(fd: i32) -> Option<u64> {
    let mut tv = libc::timeval {
        tv_sec: 0,
        tv_usec: 0,
    };
    // SAFETY: SIOCGSTAMP writes a timeval for the last packet read on this socket.
    let r = unsafe { libc::ioctl(fd, SIOCGSTAMP, &mut tv) };
    (r == 0).then(|| tv.tv_sec as u64 * 1_000_000 + tv.tv_usec as u64)
}

impl CanBackend for SocketCanBackend {
    fn name(&self) -> &str {
        &self.label
    }

    fn open(&self) -> Result<OpenCan, DeviceError> {
        let sock = open_socket(&self.iface, self.fd).map_err(|source| DeviceError::Open {
            device: self.label.clone(),
            source,
        })?;
        // SAFETY: the OwnedFd owns the socket, which stays open for the AsyncFd's lifetime.
        let afd = Arc::new(
            unsafe { AsyncFd::register(sock) }.map_err(|e| DeviceError::Open {
                device: self.label.clone(),
                source: e.into_parts().1,
            })?,
        );
        let (tx, rx) = mpsc::channel(RX_CAPACITY);
        let reader = afd.clone();
        let label = self.label.clone();
        tokio::spawn(async move {
            let mut buf = [0u8; CANFD_MTU];
            loop {
                let Ok(mut guard) = reader.readable().await else {
                    return;
                };
                let fd = reader.get_ref().as_raw_fd();
                // SAFETY: reading into a stack buffer of CANFD_MTU bytes from our socket.
                let n = match guard.try_io(|_| {
                    let r = unsafe { libc::read(fd, buf.as_mut_ptr().cast(), buf.len()) };
                    if r < 0 {
                        Err(io::Error::last_os_error())
                    } else {
                        Ok(r as usize)
                    }
                }) {
                    Ok(Ok(n)) => n,
                    Ok(Err(e)) => {
                        tracing::warn!(iface = %label, "CAN read failed: {e}");
                        return;
                    }
                    Err(_) => continue,
                };
                let ts = kernel_timestamp_us(fd).unwrap_or_else(now_us);
                match from_kernel(&buf[..n]) {
                    Ok(frame) => {
                        if let Some(state) = state_of_error_frame(&frame) {
                            let _ = tx.try_send(BusEvent::State(state));
                        }
                        // A full channel means the server is not keeping up: drop (the
                        // server's queues count what they drop).
                        let _ = tx.try_send(BusEvent::Frame(TimedFrame {
                            frame,
                            timestamp_us: ts,
                        }));
                    }
                    Err(e) => tracing::debug!(iface = %label, "ignored kernel frame: {e}"),
                }
            }
        });
        Ok(OpenCan {
            rx,
            tx: Box::new(SocketTx {
                sock: afd,
                label: self.label.clone(),
                fd: self.fd,
            }),
            fd: self.fd,
        })
    }
}

struct SocketTx {
    sock: Arc<AsyncFd<OwnedFd>>,
    label: String,
    fd: bool,
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
            loop {
                let mut guard = self
                    .sock
                    .writable()
                    .await
                    .map_err(|source| DeviceError::Io {
                        operation: "CAN send",
                        device: self.label.clone(),
                        source,
                    })?;
                let fd = self.sock.get_ref().as_raw_fd();
                // SAFETY: writing `len` bytes of a valid buffer to our socket.
                match guard.try_io(|_| {
                    let r = unsafe { libc::write(fd, buf.as_ptr().cast(), len) };
                    if r < 0 {
                        Err(io::Error::last_os_error())
                    } else {
                        Ok(())
                    }
                }) {
                    Ok(Ok(())) => return Ok(()),
                    // ENOBUFS: the interface queue is full; wait and retry like EAGAIN.
                    Ok(Err(e)) if e.raw_os_error() == Some(libc::ENOBUFS) => {
                        tokio::task::yield_now().await;
                    }
                    Ok(Err(source)) => {
                        return Err(DeviceError::Io {
                            operation: "CAN send",
                            device: self.label.clone(),
                            source,
                        });
                    }
                    Err(_) => continue,
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
