//! Real serial ports (and ptys) through the OS tty layer.
//!
//! Settings and modem lines go through `serialport` (it handles non-standard baud rates with
//! termios2); data goes through a duplicated non-blocking fd registered with tokio, so reads
//! wake on the first byte with no polling interval.

use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::AsRawFd;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use nix::fcntl::{FcntlArg, OFlag, fcntl};
use serialport::{SerialPort, TTYPort};
use tokio::io::unix::AsyncFd;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use xoq_wire::serial::{ClearBuffer, DataBits, FlowControl, LineSettings, Parity, StopBits};

use super::{OpenSerial, SerialBackend, SerialControl};
use crate::DeviceError;

/// A tty device by path (`/dev/ttyUSB0`, `/dev/ttyACM0`, a pty slave, a symlink to one).
#[derive(Debug, Clone)]
pub struct TtyBackend {
    path: String,
}

impl TtyBackend {
    /// A backend for the device at `path`; nothing is opened until [`SerialBackend::open`].
    pub fn new(path: impl Into<String>) -> Self {
        Self { path: path.into() }
    }
}

fn to_sp(
    s: &LineSettings,
) -> (
    serialport::DataBits,
    serialport::Parity,
    serialport::StopBits,
    serialport::FlowControl,
) {
    (
        match s.data_bits {
            DataBits::Five => serialport::DataBits::Five,
            DataBits::Six => serialport::DataBits::Six,
            DataBits::Seven => serialport::DataBits::Seven,
            DataBits::Eight => serialport::DataBits::Eight,
        },
        match s.parity {
            Parity::None => serialport::Parity::None,
            Parity::Odd => serialport::Parity::Odd,
            Parity::Even => serialport::Parity::Even,
        },
        match s.stop_bits {
            StopBits::One => serialport::StopBits::One,
            StopBits::Two => serialport::StopBits::Two,
        },
        match s.flow_control {
            FlowControl::None => serialport::FlowControl::None,
            FlowControl::Software => serialport::FlowControl::Software,
            FlowControl::Hardware => serialport::FlowControl::Hardware,
        },
    )
}

fn sp_err(e: serialport::Error) -> io::Error {
    match e.kind() {
        serialport::ErrorKind::Io(kind) => io::Error::new(kind, e.description),
        serialport::ErrorKind::NoDevice => io::Error::new(io::ErrorKind::NotFound, e.description),
        serialport::ErrorKind::InvalidInput => {
            io::Error::new(io::ErrorKind::InvalidInput, e.description)
        }
        serialport::ErrorKind::Unknown => io::Error::other(e.description),
    }
}

impl SerialBackend for TtyBackend {
    fn name(&self) -> &str {
        &self.path
    }

    fn open(&self, settings: &LineSettings) -> Result<OpenSerial, DeviceError> {
        let open_err = |source| DeviceError::Open {
            device: self.path.clone(),
            source,
        };
        let (data_bits, parity, stop_bits, flow) = to_sp(settings);
        let port = serialport::new(&self.path, settings.baud_rate)
            .data_bits(data_bits)
            .parity(parity)
            .stop_bits(stop_bits)
            .flow_control(flow)
            // Do not touch DTR on open: toggling it resets many boards (Arduino, ESP32);
            // the client decides.
            .dtr_on_open(false)
            .open_native()
            .map_err(|e| open_err(sp_err(e)))?;
        // SAFETY: the fd belongs to `port`, which is alive for this call.
        let port_fd = unsafe { std::os::fd::BorrowedFd::borrow_raw(port.as_raw_fd()) };
        let data_fd = nix::unistd::dup(port_fd).map_err(|e| open_err(e.into()))?;
        fcntl(&data_fd, FcntlArg::F_SETFL(OFlag::O_NONBLOCK)).map_err(|e| open_err(e.into()))?;
        let data = Arc::new(async_file(File::from(data_fd)).map_err(open_err)?);
        Ok(OpenSerial {
            reader: Box::new(TtyData { fd: data.clone() }),
            writer: Box::new(TtyData { fd: data }),
            control: Box::new(TtyControl {
                port,
                path: self.path.clone(),
            }),
        })
    }
}

/// Register a non-blocking file with the tokio reactor.
pub fn async_file(file: File) -> io::Result<AsyncFd<File>> {
    // SAFETY: `File` owns its fd, which stays open and unchanged until the AsyncFd (which
    // owns the File) is dropped.
    unsafe { AsyncFd::register(file) }.map_err(|e| e.into_parts().1)
}

/// One direction of the non-blocking data fd.
struct TtyData {
    fd: Arc<AsyncFd<File>>,
}

impl AsyncRead for TtyData {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        loop {
            let mut guard = ready!(self.fd.poll_read_ready(cx))?;
            let unfilled = buf.initialize_unfilled();
            match guard.try_io(|f| f.get_ref().read(unfilled)) {
                Ok(Ok(n)) => {
                    buf.advance(n);
                    return Poll::Ready(Ok(()));
                }
                Ok(Err(e)) => return Poll::Ready(Err(e)),
                Err(_would_block) => continue,
            }
        }
    }
}

impl AsyncWrite for TtyData {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        loop {
            let mut guard = ready!(self.fd.poll_write_ready(cx))?;
            match guard.try_io(|f| f.get_ref().write(data)) {
                Ok(r) => return Poll::Ready(r),
                Err(_would_block) => continue,
            }
        }
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        // Writes go straight to the driver; draining the line is `SerialControl::drain`.
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

struct TtyControl {
    port: TTYPort,
    path: String,
}

impl TtyControl {
    fn io(&self, operation: &'static str, e: serialport::Error) -> DeviceError {
        let source = sp_err(e);
        // ptys and some USB adapters have no modem lines: ENOTTY/EINVAL from the ioctl.
        if matches!(
            source.raw_os_error(),
            Some(libc::ENOTTY) | Some(libc::EINVAL)
        ) || source.kind() == io::ErrorKind::Unsupported
        {
            return DeviceError::Unsupported {
                operation,
                device: self.path.clone(),
                reason: source.to_string(),
            };
        }
        DeviceError::Io {
            operation,
            device: self.path.clone(),
            source,
        }
    }
}

impl SerialControl for TtyControl {
    fn set_settings(&mut self, s: &LineSettings) -> Result<(), DeviceError> {
        let (data_bits, parity, stop_bits, flow) = to_sp(s);
        self.port
            .set_baud_rate(s.baud_rate)
            .map_err(|e| self.io("set baud rate", e))?;
        self.port
            .set_data_bits(data_bits)
            .map_err(|e| self.io("set data bits", e))?;
        self.port
            .set_parity(parity)
            .map_err(|e| self.io("set parity", e))?;
        self.port
            .set_stop_bits(stop_bits)
            .map_err(|e| self.io("set stop bits", e))?;
        self.port
            .set_flow_control(flow)
            .map_err(|e| self.io("set flow control", e))
    }

    fn set_dtr(&mut self, on: bool) -> Result<(), DeviceError> {
        self.port
            .write_data_terminal_ready(on)
            .map_err(|e| self.io("set DTR", e))
    }

    fn set_rts(&mut self, on: bool) -> Result<(), DeviceError> {
        self.port
            .write_request_to_send(on)
            .map_err(|e| self.io("set RTS", e))
    }

    fn set_break(&mut self, on: bool) -> Result<(), DeviceError> {
        let r = if on {
            self.port.set_break()
        } else {
            self.port.clear_break()
        };
        r.map_err(|e| self.io("break", e))
    }

    fn clear(&mut self, which: ClearBuffer) -> Result<(), DeviceError> {
        let which = match which {
            ClearBuffer::Input => serialport::ClearBuffer::Input,
            ClearBuffer::Output => serialport::ClearBuffer::Output,
            ClearBuffer::All => serialport::ClearBuffer::All,
        };
        self.port
            .clear(which)
            .map_err(|e| self.io("clear buffers", e))
    }

    fn pending_output(&mut self) -> Result<usize, DeviceError> {
        self.port
            .bytes_to_write()
            .map(|n| n as usize)
            .map_err(|e| self.io("query output queue", e))
    }
}

impl std::fmt::Debug for TtyControl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TtyControl")
            .field("path", &self.path)
            .field("fd", &self.port.as_raw_fd())
            .finish()
    }
}
