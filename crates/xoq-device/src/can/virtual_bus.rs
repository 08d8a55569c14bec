//! An in-process virtual CAN bus, openable by name from anywhere in the process (tests,
//! loopback use, the simulator's peers). Like a real bus, a frame sent by one opener is
//! received by every *other* opener, with the send time as its receive timestamp.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, Weak};

use tokio::sync::mpsc;

use super::{
    BoxFuture, BusEvent, CanBackend, CanFrame, CanTx, OpenCan, RX_CAPACITY, TimedFrame, now_us,
};
use crate::DeviceError;

#[derive(Default)]
struct Hub {
    members: Mutex<Vec<(u64, mpsc::Sender<BusEvent>)>>,
    next: AtomicU64,
    /// Frames not delivered because a member's receive queue was full.
    dropped: AtomicU64,
}

fn registry() -> &'static Mutex<HashMap<String, Weak<Hub>>> {
    static R: OnceLock<Mutex<HashMap<String, Weak<Hub>>>> = OnceLock::new();
    R.get_or_init(Default::default)
}

fn hub(name: &str) -> Arc<Hub> {
    let mut r = match registry().lock() {
        Ok(r) => r,
        Err(p) => p.into_inner(),
    };
    if let Some(h) = r.get(name).and_then(Weak::upgrade) {
        return h;
    }
    let h = Arc::new(Hub::default());
    r.insert(name.to_string(), Arc::downgrade(&h));
    r.retain(|_, w| w.strong_count() > 0);
    h
}

/// A named virtual bus (`virtual:NAME`, or `virtual:NAME:classic` for a classic-CAN
/// controller, as a SocketCAN interface without `:fd`).
#[derive(Debug, Clone)]
pub struct VirtualBackend {
    bus: String,
    label: String,
    fd: bool,
}

impl VirtualBackend {
    /// The virtual bus called `name` (created on first open, shared by every opener), with a
    /// CAN FD controller.
    pub fn new(name: &str) -> Self {
        Self {
            bus: name.to_string(),
            label: format!("virtual:{name}"),
            fd: true,
        }
    }

    /// The same bus seen through a classic (non-FD) controller: what the server may send on
    /// it is classic frames only.
    pub fn classic(name: &str) -> Self {
        Self {
            bus: name.to_string(),
            label: format!("virtual:{name}:classic"),
            fd: false,
        }
    }
}

impl CanBackend for VirtualBackend {
    fn name(&self) -> &str {
        &self.label
    }

    fn open(&self) -> Result<OpenCan, DeviceError> {
        let hub = hub(&self.bus);
        let id = hub.next.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = mpsc::channel(RX_CAPACITY);
        if let Ok(mut m) = hub.members.lock() {
            m.push((id, tx));
        }
        Ok(OpenCan {
            rx,
            tx: Box::new(VirtualTx { hub, id }),
            // The medium carries whatever is sent on it; the controller may be classic.
            fd: self.fd,
        })
    }
}

struct VirtualTx {
    hub: Arc<Hub>,
    id: u64,
}

impl CanTx for VirtualTx {
    fn send<'a>(&'a mut self, frame: &'a CanFrame) -> BoxFuture<'a, Result<(), DeviceError>> {
        Box::pin(async move {
            let ev = BusEvent::Frame(TimedFrame {
                frame: frame.clone(),
                timestamp_us: now_us(),
            });
            if let Ok(mut m) = self.hub.members.lock() {
                // Members whose receiver is gone are removed; full ones lose this frame
                // (counted), like a node whose receive FIFO overflowed.
                m.retain(|(id, tx)| {
                    if *id == self.id {
                        return !tx.is_closed();
                    }
                    match tx.try_send(ev.clone()) {
                        Ok(()) => true,
                        Err(mpsc::error::TrySendError::Full(_)) => {
                            self.hub.dropped.fetch_add(1, Ordering::Relaxed);
                            true
                        }
                        Err(mpsc::error::TrySendError::Closed(_)) => false,
                    }
                });
            }
            Ok(())
        })
    }
}

impl Drop for VirtualTx {
    fn drop(&mut self) {
        if let Ok(mut m) = self.hub.members.lock() {
            m.retain(|(id, _)| *id != self.id);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn others_receive_sender_does_not() {
        let b = VirtualBackend::new("t-others");
        let mut a = b.open().expect("a");
        let mut c = b.open().expect("c");
        let f = CanFrame::new(0x123, vec![1, 2, 3]).expect("frame");
        a.tx.send(&f).await.expect("send");
        match c.rx.recv().await {
            Some(BusEvent::Frame(t)) => assert_eq!(t.frame, f),
            e => panic!("expected the frame, got {e:?}"),
        }
        assert!(
            a.rx.try_recv().is_err(),
            "a bus does not echo to the sender"
        );
    }

    #[tokio::test]
    async fn buses_are_isolated_by_name() {
        let mut a = VirtualBackend::new("t-iso-1").open().expect("a");
        let mut b = VirtualBackend::new("t-iso-2").open().expect("b");
        let f = CanFrame::new(0x1, vec![]).expect("frame");
        a.tx.send(&f).await.expect("send");
        assert!(b.rx.try_recv().is_err());
    }
}
