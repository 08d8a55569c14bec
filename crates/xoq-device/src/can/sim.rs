//! The simulated OpenArm (eight Damiao motors) as a CAN backend.
//!
//! Replies are produced synchronously with each command, so the frame→reply latency of the
//! simulator itself is zero and what a benchmark measures is the bridge.

use std::sync::{Arc, Mutex};
use std::time::Instant;

use bytes::Bytes;
use tokio::sync::mpsc;

use super::{
    BoxFuture, BusEvent, CanBackend, CanFrame, CanTx, OpenCan, RX_CAPACITY, TimedFrame, now_us,
};
use crate::DeviceError;
use crate::sim::damiao::{DamiaoBus, SimCanFrame};

/// A simulated Damiao motor bus (`sim:openarm`).
pub struct SimCanBackend {
    name: String,
    bus: Arc<Mutex<DamiaoBus>>,
    epoch: Instant,
}

impl std::fmt::Debug for SimCanBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SimCanBackend")
            .field("name", &self.name)
            .finish()
    }
}

impl SimCanBackend {
    /// An OpenArm: motors 0x01–0x08 replying on 0x11–0x18 (DM8009 ×2, DM4340 ×2, DM4310 ×4).
    pub fn openarm(name: &str) -> Self {
        Self {
            name: name.to_string(),
            bus: Arc::new(Mutex::new(DamiaoBus::openarm())),
            epoch: Instant::now(),
        }
    }

    /// The simulated motors, for inspection (demo, tests).
    pub fn bus(&self) -> Arc<Mutex<DamiaoBus>> {
        self.bus.clone()
    }
}

impl CanBackend for SimCanBackend {
    fn name(&self) -> &str {
        &self.name
    }

    fn open(&self) -> Result<OpenCan, DeviceError> {
        let (tx, rx) = mpsc::channel(RX_CAPACITY);
        Ok(OpenCan {
            rx,
            tx: Box::new(SimTx {
                bus: self.bus.clone(),
                epoch: self.epoch,
                replies: tx,
                out: Vec::new(),
            }),
            fd: true,
        })
    }
}

struct SimTx {
    bus: Arc<Mutex<DamiaoBus>>,
    epoch: Instant,
    replies: mpsc::Sender<BusEvent>,
    out: Vec<SimCanFrame>,
}

impl CanTx for SimTx {
    fn send<'a>(&'a mut self, frame: &'a CanFrame) -> BoxFuture<'a, Result<(), DeviceError>> {
        Box::pin(async move {
            if frame.rtr || frame.error {
                return Ok(());
            }
            let sim = SimCanFrame {
                id: frame.id,
                extended: frame.extended,
                fd: frame.fd,
                data: frame.data.to_vec(),
            };
            self.out.clear();
            if let Ok(mut bus) = self.bus.lock() {
                bus.handle(self.epoch.elapsed(), &sim, &mut self.out);
            }
            for r in self.out.drain(..) {
                let frame = CanFrame {
                    id: r.id,
                    extended: r.extended,
                    fd: r.fd,
                    brs: r.fd && frame.brs,
                    data: Bytes::from(r.data),
                    ..CanFrame::default()
                };
                // The server drains this channel continuously; if it ever cannot, a reply is
                // lost like a frame on a saturated bus.
                let _ = self.replies.try_send(BusEvent::Frame(TimedFrame {
                    frame,
                    timestamp_us: now_us(),
                }));
            }
            Ok(())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use xoq_wire::damiao::CMD_ENABLE;

    #[tokio::test]
    async fn enable_gets_feedback_on_the_master_id() {
        let b = SimCanBackend::openarm("sim:openarm");
        let mut open = b.open().expect("open");
        let f = CanFrame::new(0x01, CMD_ENABLE.to_vec()).expect("frame");
        open.tx.send(&f).await.expect("send");
        match open.rx.try_recv() {
            Ok(BusEvent::Frame(t)) => {
                assert_eq!(t.frame.id, 0x11);
                assert_eq!(t.frame.data[0] & 0x0F, 0x01);
                assert_eq!(t.frame.data[0] >> 4, 1, "enabled");
            }
            e => panic!("expected feedback, got {e:?}"),
        }
    }
}
