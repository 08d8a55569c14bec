//! Serial devices: the trait every backend implements, and the backends.
//!
//! A backend is opened into an [`OpenSerial`]: an async byte reader, an async byte writer and
//! a [`SerialControl`] for line settings and modem lines. Splitting them lets the server read
//! and write concurrently without locks on the data path.
//!
//! Implementing [`SerialBackend`] (open) and [`SerialControl`] is all that is necessary to add
//! a new kind of serial device.

use tokio::io::{AsyncRead, AsyncWrite};
pub use xoq_wire::serial::{ClearBuffer, LineSettings};

use crate::DeviceError;

mod sim;
mod tty;

pub use sim::{EchoEngine, FeetechEngine, SimBackend, SimEngine};
pub use tty::{TtyBackend, async_file};

/// Byte reader of an open device. Returning `Ok(0)` or an error means the device is gone.
pub type SerialReader = Box<dyn AsyncRead + Send + Unpin>;
/// Byte writer of an open device.
pub type SerialWriter = Box<dyn AsyncWrite + Send + Unpin>;

/// An opened serial device, split into its data halves and its control.
pub struct OpenSerial {
    /// Bytes received from the line.
    pub reader: SerialReader,
    /// Bytes to transmit.
    pub writer: SerialWriter,
    /// Settings and modem lines.
    pub control: Box<dyn SerialControl>,
}

/// Something that can be opened (and re-opened after it disappears) as a serial device.
pub trait SerialBackend: Send + Sync + 'static {
    /// Name shown to clients and in logs (device path or `sim:...`).
    fn name(&self) -> &str;
    /// Open the device with these settings.
    fn open(&self, settings: &LineSettings) -> Result<OpenSerial, DeviceError>;
}

/// Control operations of an open serial device. Operations a device cannot do (modem lines on
/// a pty) return [`DeviceError::Unsupported`] rather than pretending to succeed.
pub trait SerialControl: Send {
    /// Apply line settings.
    fn set_settings(&mut self, settings: &LineSettings) -> Result<(), DeviceError>;
    /// Set the DTR line.
    fn set_dtr(&mut self, on: bool) -> Result<(), DeviceError>;
    /// Set the RTS line.
    fn set_rts(&mut self, on: bool) -> Result<(), DeviceError>;
    /// Start (`true`) or stop (`false`) a break condition; the caller times it.
    fn set_break(&mut self, on: bool) -> Result<(), DeviceError>;
    /// Discard buffered bytes in the device or driver.
    fn clear(&mut self, which: ClearBuffer) -> Result<(), DeviceError>;
    /// Bytes written but not yet transmitted by the driver; the server polls it to drain
    /// (never blocking a thread, and with its own time bound).
    fn pending_output(&mut self) -> Result<usize, DeviceError>;
}

/// Open a backend by the name users type: `sim:so101` (simulated SO-101 Feetech bus),
/// `sim:echo` (loopback), or a device path such as `/dev/ttyUSB0`.
pub fn backend(name: &str) -> Result<Box<dyn SerialBackend>, DeviceError> {
    match name {
        "sim:so101" | "sim:feetech" => Ok(Box::new(SimBackend::new(name, FeetechEngine::so101))),
        "sim:echo" => Ok(Box::new(SimBackend::new(name, EchoEngine::default))),
        n if n.starts_with("sim:") => Err(DeviceError::UnknownDevice(n.to_string())),
        path => Ok(Box::new(TtyBackend::new(path))),
    }
}
