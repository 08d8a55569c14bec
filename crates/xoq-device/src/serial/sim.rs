//! Simulated serial devices: a byte-level engine behind an in-memory pipe.
//!
//! The engine (a protocol state machine such as the Feetech servo bus) is sans-IO; this module
//! gives it the same async reader/writer shape as a tty so the server cannot tell them apart.
//! Engine state lives in the backend, so it survives client sessions like real hardware does.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use xoq_wire::serial::{ClearBuffer, LineSettings};

use super::{OpenSerial, SerialBackend, SerialControl};
use crate::DeviceError;
use crate::sim::feetech::FeetechBus;

/// A simulated device's protocol logic: bytes in, bytes out, time passed in.
pub trait SimEngine: Send + 'static {
    /// Handle bytes written by the host at `now` (time since the device was created); append
    /// any reply bytes to `out`.
    fn write(&mut self, now: Duration, bytes: &[u8], out: &mut Vec<u8>);
    /// The host changed line settings (a servo bus ignores a host at the wrong baud rate).
    fn set_host_settings(&mut self, _settings: &LineSettings) {}
}

/// Loopback device: every byte written is read back. For demos and benchmarks.
#[derive(Debug, Default)]
pub struct EchoEngine;

impl SimEngine for EchoEngine {
    fn write(&mut self, _now: Duration, bytes: &[u8], out: &mut Vec<u8>) {
        out.extend_from_slice(bytes);
    }
}

/// The SO-101 arm's Feetech STS3215 bus as a serial device.
#[derive(Debug)]
pub struct FeetechEngine {
    bus: FeetechBus,
    host_baud: u32,
}

impl FeetechEngine {
    /// Six STS3215 servos, ids 1–6, at 1 Mbaud.
    pub fn so101() -> Self {
        Self {
            bus: FeetechBus::so101(),
            host_baud: 1_000_000,
        }
    }

    /// The simulated bus, for inspection.
    pub fn bus(&self) -> &FeetechBus {
        &self.bus
    }
}

impl SimEngine for FeetechEngine {
    fn write(&mut self, now: Duration, bytes: &[u8], out: &mut Vec<u8>) {
        // A host at the wrong baud rate produces line noise the servos cannot decode: they
        // stay silent, which is what scanning tools rely on to find the rate.
        if self.host_baud != self.bus.baud_rate() {
            self.bus.advance(now);
            return;
        }
        self.bus.write(now, bytes, out);
    }

    fn set_host_settings(&mut self, settings: &LineSettings) {
        self.host_baud = settings.baud_rate;
    }
}

/// A backend whose device is a [`SimEngine`].
pub struct SimBackend {
    name: String,
    engine: Arc<Mutex<Box<dyn SimEngine>>>,
    epoch: Instant,
}

impl SimBackend {
    /// A simulated device called `name`, with the engine built by `make`.
    pub fn new<E: SimEngine>(name: &str, make: impl FnOnce() -> E) -> Self {
        Self {
            name: name.to_string(),
            engine: Arc::new(Mutex::new(Box::new(make()))),
            epoch: Instant::now(),
        }
    }
}

/// Bytes buffered in the in-memory pipe each way; a host that stops reading blocks the engine
/// (like a UART with hardware flow control), it never grows memory.
const PIPE_CAPACITY: usize = 64 * 1024;

impl SerialBackend for SimBackend {
    fn name(&self) -> &str {
        &self.name
    }

    fn open(&self, settings: &LineSettings) -> Result<OpenSerial, DeviceError> {
        if let Ok(mut e) = self.engine.lock() {
            e.set_host_settings(settings);
        }
        let (host, mut dev) = tokio::io::duplex(PIPE_CAPACITY);
        let (reader, writer) = tokio::io::split(host);
        let engine = self.engine.clone();
        let epoch = self.epoch;
        tokio::spawn(async move {
            let mut buf = vec![0u8; 4096];
            let mut out = Vec::with_capacity(4096);
            loop {
                let n = match dev.read(&mut buf).await {
                    Ok(0) | Err(_) => return,
                    Ok(n) => n,
                };
                out.clear();
                if let Ok(mut e) = engine.lock() {
                    e.write(epoch.elapsed(), &buf[..n], &mut out);
                }
                if !out.is_empty() && dev.write_all(&out).await.is_err() {
                    return;
                }
            }
        });
        Ok(OpenSerial {
            reader: Box::new(reader),
            writer: Box::new(writer),
            control: Box::new(SimControl {
                engine: self.engine.clone(),
            }),
        })
    }
}

struct SimControl {
    engine: Arc<Mutex<Box<dyn SimEngine>>>,
}

impl SerialControl for SimControl {
    fn set_settings(&mut self, settings: &LineSettings) -> Result<(), DeviceError> {
        if let Ok(mut e) = self.engine.lock() {
            e.set_host_settings(settings);
        }
        Ok(())
    }

    // A simulated bus has no modem lines to drive, but nothing depends on them either:
    // accepting them keeps flashing-style tools (which toggle DTR/RTS) working in demos.
    fn set_dtr(&mut self, _on: bool) -> Result<(), DeviceError> {
        Ok(())
    }

    fn set_rts(&mut self, _on: bool) -> Result<(), DeviceError> {
        Ok(())
    }

    fn set_break(&mut self, _on: bool) -> Result<(), DeviceError> {
        Ok(())
    }

    fn clear(&mut self, _which: ClearBuffer) -> Result<(), DeviceError> {
        // Replies are produced synchronously with requests, so there is no device-side
        // buffer beyond the pipe, which the server drains itself.
        Ok(())
    }

    fn pending_output(&mut self) -> Result<usize, DeviceError> {
        Ok(0)
    }
}
