//! Bounded queues between a device and its clients.
//!
//! [`ByteQueue`] carries device bytes to one client with one of two stated policies
//! ([`Overflow`]): *block* (the P2P controller: the device reader waits, so the kernel's own
//! buffer and flow control apply exactly as for a local program that stops reading), or
//! *drop-oldest* with a counter (the MoQ track: the relay side must never hold the device
//! back). Readers wait on a `Notify`, so the first byte wakes them immediately.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use bytes::Bytes;
use tokio::sync::Notify;

/// What a full queue does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Overflow {
    /// The producer waits for space.
    Block,
    /// The oldest bytes are dropped and counted.
    DropOldest,
}

/// Bounded multi-producer single-consumer queue of byte chunks.
#[derive(Debug)]
pub struct ByteQueue {
    inner: Mutex<Inner>,
    notify: Notify,
    space: Notify,
    dropped: AtomicU64,
    closed: AtomicBool,
    capacity: usize,
    policy: Overflow,
}

#[derive(Debug, Default)]
struct Inner {
    chunks: VecDeque<Bytes>,
    bytes: usize,
}

impl ByteQueue {
    /// A drop-oldest queue holding at most `capacity` bytes.
    pub fn new(capacity: usize) -> Self {
        Self::with_policy(capacity, Overflow::DropOldest)
    }

    /// A queue of `capacity` bytes with the given overflow policy.
    pub fn with_policy(capacity: usize, policy: Overflow) -> Self {
        Self {
            inner: Mutex::new(Inner::default()),
            notify: Notify::new(),
            space: Notify::new(),
            dropped: AtomicU64::new(0),
            closed: AtomicBool::new(false),
            capacity,
            policy,
        }
    }

    /// Append a chunk following the queue's policy: wait for space (block) or drop the
    /// oldest bytes (drop-oldest). A chunk is always accepted into an empty queue, so a chunk
    /// larger than the capacity cannot wait forever.
    pub async fn push_wait(&self, chunk: Bytes) {
        if self.policy == Overflow::Block {
            loop {
                let space = self.space.notified();
                let full = self
                    .inner
                    .lock()
                    .map(|q| q.bytes > 0 && q.bytes + chunk.len() > self.capacity)
                    .unwrap_or(false);
                if !full || self.closed.load(Ordering::Relaxed) {
                    break;
                }
                space.await;
            }
        }
        self.push(chunk);
    }

    /// Append a chunk, dropping the oldest bytes beyond capacity.
    pub fn push(&self, chunk: Bytes) {
        if chunk.is_empty() || self.closed.load(Ordering::Relaxed) {
            return;
        }
        let mut dropped = 0u64;
        if let Ok(mut q) = self.inner.lock() {
            q.bytes += chunk.len();
            q.chunks.push_back(chunk);
            while q.bytes > self.capacity {
                let Some(mut front) = q.chunks.pop_front() else {
                    break;
                };
                let excess = q.bytes - self.capacity;
                if front.len() > excess {
                    // Drop only the excess from the front chunk, keep its tail.
                    let _ = front.split_to(excess);
                    q.bytes -= excess;
                    dropped += excess as u64;
                    q.chunks.push_front(front);
                } else {
                    q.bytes -= front.len();
                    dropped += front.len() as u64;
                }
            }
        }
        if dropped > 0 {
            self.dropped.fetch_add(dropped, Ordering::Relaxed);
        }
        self.notify.notify_one();
    }

    /// Take everything queued, waiting until something is there. `None` once closed and empty.
    pub async fn pop_all(&self, out: &mut Vec<Bytes>) -> Option<()> {
        loop {
            let notified = self.notify.notified();
            if let Ok(mut q) = self.inner.lock()
                && !q.chunks.is_empty()
            {
                out.extend(q.chunks.drain(..));
                q.bytes = 0;
                // One producer (the device reader): a stored permit cannot be missed.
                self.space.notify_one();
                return Some(());
            }
            if self.closed.load(Ordering::Relaxed) {
                return None;
            }
            notified.await;
        }
    }

    /// Discard queued bytes (reset_input_buffer).
    pub fn clear(&self) {
        if let Ok(mut q) = self.inner.lock() {
            q.chunks.clear();
            q.bytes = 0;
        }
        self.space.notify_one();
    }

    /// Bytes dropped since the last call (and reset the counter).
    pub fn take_dropped(&self) -> u64 {
        self.dropped.swap(0, Ordering::Relaxed)
    }

    /// Wake the consumer (and a blocked producer) for good.
    pub fn close(&self) {
        self.closed.store(true, Ordering::Relaxed);
        self.notify.notify_one();
        self.space.notify_one();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn drops_oldest_and_counts() {
        let q = ByteQueue::new(10);
        q.push(Bytes::from_static(b"0123456789"));
        q.push(Bytes::from_static(b"abcd"));
        let mut out = Vec::new();
        q.pop_all(&mut out).await.expect("data");
        let all: Vec<u8> = out.iter().flat_map(|b| b.to_vec()).collect();
        assert_eq!(all, b"456789abcd");
        assert_eq!(q.take_dropped(), 4);
        assert_eq!(q.take_dropped(), 0);
    }

    #[tokio::test]
    async fn block_policy_waits_for_space_and_loses_nothing() {
        use std::future::Future;
        use std::task::{Context, Waker};
        let q = ByteQueue::with_policy(4, Overflow::Block);
        q.push_wait(Bytes::from_static(b"abcd")).await;
        let held = |q: &ByteQueue| q.inner.lock().map(|i| i.bytes).unwrap_or(usize::MAX);
        let mut producer = std::pin::pin!(q.push_wait(Bytes::from_static(b"ef")));
        // The producer runs (polled here, not left to a scheduler), finds the queue full and
        // waits: it is pending and has pushed nothing.
        assert!(
            producer
                .as_mut()
                .poll(&mut Context::from_waker(Waker::noop()))
                .is_pending(),
            "a full queue makes the producer wait"
        );
        assert_eq!(held(&q), 4, "a waiting producer pushed nothing");
        let mut out = Vec::new();
        q.pop_all(&mut out).await.expect("data");
        assert_eq!(out, [Bytes::from_static(b"abcd")]);
        // The pop made space and said so: the waiting producer completes, and its bytes
        // arrive after the first ones.
        tokio::time::timeout(std::time::Duration::from_secs(5), producer)
            .await
            .expect("the producer completes once there is space");
        assert_eq!(held(&q), 2);
        tokio::time::timeout(std::time::Duration::from_secs(5), q.pop_all(&mut out))
            .await
            .expect("the producer's bytes arrive")
            .expect("data");
        let all: Vec<u8> = out.iter().flat_map(|b| b.to_vec()).collect();
        assert_eq!(all, b"abcdef");
        assert_eq!(q.take_dropped(), 0);
    }

    #[tokio::test]
    async fn close_wakes_reader() {
        let q = std::sync::Arc::new(ByteQueue::new(10));
        let q2 = q.clone();
        let t = tokio::spawn(async move {
            let mut out = Vec::new();
            q2.pop_all(&mut out).await
        });
        tokio::task::yield_now().await;
        q.close();
        assert_eq!(t.await.expect("join"), None);
    }
}

/// Bounded multi-producer single-consumer queue of items with a drop-oldest policy, for
/// frames going to one client (or to the bus). The oldest items are the stalest: for robot
/// commands and telemetry, the newest are the ones worth keeping.
#[derive(Debug)]
pub struct ItemQueue<T> {
    inner: Mutex<VecDeque<T>>,
    notify: Notify,
    dropped: AtomicU64,
    closed: AtomicBool,
    capacity: usize,
}

impl<T> ItemQueue<T> {
    /// A queue of at most `capacity` items.
    pub fn new(capacity: usize) -> Self {
        Self {
            inner: Mutex::new(VecDeque::new()),
            notify: Notify::new(),
            dropped: AtomicU64::new(0),
            closed: AtomicBool::new(false),
            capacity,
        }
    }

    /// Append, dropping the oldest item when full.
    pub fn push(&self, item: T) {
        if self.closed.load(Ordering::Relaxed) {
            return;
        }
        if let Ok(mut q) = self.inner.lock() {
            if q.len() >= self.capacity {
                q.pop_front();
                self.dropped.fetch_add(1, Ordering::Relaxed);
            }
            q.push_back(item);
        }
        self.notify.notify_one();
    }

    /// Take up to `max` items, waiting until at least one is there. `None` once closed.
    pub async fn pop_batch(&self, out: &mut Vec<T>, max: usize) -> Option<()> {
        loop {
            let notified = self.notify.notified();
            if let Ok(mut q) = self.inner.lock()
                && !q.is_empty()
            {
                let n = q.len().min(max);
                out.extend(q.drain(..n));
                if !q.is_empty() {
                    // More remain: make sure the next call does not wait.
                    self.notify.notify_one();
                }
                return Some(());
            }
            if self.closed.load(Ordering::Relaxed) {
                return None;
            }
            notified.await;
        }
    }

    /// Remove every queued item matching `pred` (e.g. a departed client's commands).
    pub fn retain(&self, pred: impl FnMut(&T) -> bool) {
        if let Ok(mut q) = self.inner.lock() {
            q.retain(pred);
        }
    }

    /// Items dropped since the last call.
    pub fn take_dropped(&self) -> u64 {
        self.dropped.swap(0, Ordering::Relaxed)
    }

    /// Number of queued items matching `pred`.
    pub fn count(&self, mut pred: impl FnMut(&T) -> bool) -> usize {
        self.inner
            .lock()
            .map(|q| q.iter().filter(|x| pred(x)).count())
            .unwrap_or(0)
    }

    /// Wake the consumer for good.
    pub fn close(&self) {
        self.closed.store(true, Ordering::Relaxed);
        self.notify.notify_one();
    }
}

#[cfg(test)]
mod item_tests {
    use super::*;

    #[tokio::test]
    async fn drop_oldest_items() {
        let q = ItemQueue::new(2);
        q.push(1);
        q.push(2);
        q.push(3);
        let mut out = Vec::new();
        q.pop_batch(&mut out, 10).await.expect("items");
        assert_eq!(out, vec![2, 3]);
        assert_eq!(q.take_dropped(), 1);
    }
}
