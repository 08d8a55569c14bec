//! Counters of a [`Forwarder`](crate::Forwarder), so tests can assert traffic really went through it.

use std::sync::atomic::{AtomicU64, Ordering};

/// Counters of one direction, as a snapshot.
///
/// Every datagram received is accounted exactly once as forwarded or dropped, except that
/// [`duplicated`](Self::duplicated) copies are forwarded (or dropped) too, and packets still
/// waiting for their delivery time are in [`queued`](Self::queued):
/// `received + duplicated == forwarded + dropped() + queued`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DirectionStats {
    /// Datagrams that entered this direction.
    pub received_packets: u64,
    /// Their payload bytes.
    pub received_bytes: u64,
    /// Datagrams handed to the outgoing socket (including those whose send then failed, see
    /// [`send_errors`](Self::send_errors)).
    pub forwarded_packets: u64,
    /// Their payload bytes.
    pub forwarded_bytes: u64,
    /// Dropped by the [`loss`](crate::Impairment::loss) setting.
    pub lost: u64,
    /// Dropped because of an outage, on entry or when due while the outage lasted.
    pub outage_dropped: u64,
    /// Dropped on entry because the queue held [`queue_limit`](crate::ForwarderBuilder::queue_limit)
    /// packets already (drop-new, i.e. tail drop).
    pub queue_dropped: u64,
    /// Extra copies made by the [`duplicate`](crate::Impairment::duplicate) setting.
    pub duplicated: u64,
    /// Packets that got the [`reorder_delay`](crate::Impairment::reorder_delay).
    pub reordered: u64,
    /// Sends that the kernel refused (counted in `forwarded_*` too).
    pub send_errors: u64,
    /// Packets waiting for their delivery time when the snapshot was taken.
    pub queued: u64,
}

impl DirectionStats {
    /// All drops: `lost + outage_dropped + queue_dropped`.
    pub fn dropped(&self) -> u64 {
        self.lost + self.outage_dropped + self.queue_dropped
    }
}

/// A snapshot of all counters of a [`Forwarder`](crate::Forwarder).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// Client → server.
    pub to_server: DirectionStats,
    /// Server → client.
    pub to_client: DirectionStats,
    /// Distinct client source addresses seen.
    pub clients_seen: u64,
    /// Upstream sockets replaced by [`rebind`](crate::Forwarder::rebind).
    pub rebinds: u64,
}

#[derive(Default)]
pub(crate) struct Counters {
    pub(crate) received_packets: AtomicU64,
    pub(crate) received_bytes: AtomicU64,
    pub(crate) forwarded_packets: AtomicU64,
    pub(crate) forwarded_bytes: AtomicU64,
    pub(crate) lost: AtomicU64,
    pub(crate) outage_dropped: AtomicU64,
    pub(crate) queue_dropped: AtomicU64,
    pub(crate) duplicated: AtomicU64,
    pub(crate) reordered: AtomicU64,
    pub(crate) send_errors: AtomicU64,
}

pub(crate) fn bump(counter: &AtomicU64, by: u64) {
    counter.fetch_add(by, Ordering::Relaxed);
}

impl Counters {
    pub(crate) fn snapshot(&self, queued: u64) -> DirectionStats {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        DirectionStats {
            received_packets: get(&self.received_packets),
            received_bytes: get(&self.received_bytes),
            forwarded_packets: get(&self.forwarded_packets),
            forwarded_bytes: get(&self.forwarded_bytes),
            lost: get(&self.lost),
            outage_dropped: get(&self.outage_dropped),
            queue_dropped: get(&self.queue_dropped),
            duplicated: get(&self.duplicated),
            reordered: get(&self.reordered),
            send_errors: get(&self.send_errors),
            queued,
        }
    }
}
