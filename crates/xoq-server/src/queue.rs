//! Bounded queues between a device and its clients: one type, [`Queue`], with the policy
//! stated where each queue is made ([`Overflow`]).
//!
//! - *Block*: the producer waits for space. The serial P2P controller's queue: the device
//!   reader waits, so the kernel's own buffer and flow control apply exactly as for a local
//!   program that stops reading.
//! - *Drop-oldest*, counted: the relay's byte stream (the relay side must never hold the
//!   device back) and every frame queue (for robot commands and telemetry the newest are the
//!   ones worth keeping).
//!
//! A byte queue ([`Queue::bytes`]) is bounded in bytes and drops only the excess of its
//! oldest chunk; an item queue ([`Queue::items`]) is bounded in items. Readers wait on a
//! `Notify`, so the first item wakes them immediately.

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
    /// The oldest contents are dropped and counted.
    DropOldest,
}

/// Bounded multi-producer single-consumer queue.
pub struct Queue<T> {
    inner: Mutex<Inner<T>>,
    notify: Notify,
    space: Notify,
    dropped: AtomicU64,
    closed: AtomicBool,
    capacity: usize,
    policy: Overflow,
    /// How much of the capacity an element takes (bytes of a chunk, or 1).
    size: fn(&T) -> usize,
    /// Drop the first `n` units of an element, keeping the rest (bytes only).
    trim: Option<fn(&mut T, usize)>,
}

impl<T> std::fmt::Debug for Queue<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Queue")
            .field("capacity", &self.capacity)
            .field("policy", &self.policy)
            .finish()
    }
}

struct Inner<T> {
    items: VecDeque<T>,
    /// Sum of `size` over `items`.
    size: usize,
}

impl Queue<Bytes> {
    /// A queue of byte chunks holding at most `capacity` bytes.
    pub fn bytes(capacity: usize, policy: Overflow) -> Self {
        Self::with(
            capacity,
            policy,
            Bytes::len,
            Some(|b: &mut Bytes, n| {
                let _ = b.split_to(n);
            }),
        )
    }
}

impl<T> Queue<T> {
    /// A drop-oldest queue of at most `capacity` items.
    pub fn items(capacity: usize) -> Self {
        Self::with(capacity, Overflow::DropOldest, |_| 1, None)
    }

    /// A drop-oldest queue holding at most `capacity` units, each item weighing `size(item)`
    /// units (e.g. the bytes of a stamped chunk). Whole items are dropped, so an item keeps
    /// its stamp; the dropped counter counts units.
    pub fn weighed(capacity: usize, size: fn(&T) -> usize) -> Self {
        Self::with(capacity, Overflow::DropOldest, size, None)
    }

    fn with(
        capacity: usize,
        policy: Overflow,
        size: fn(&T) -> usize,
        trim: Option<fn(&mut T, usize)>,
    ) -> Self {
        Self {
            inner: Mutex::new(Inner {
                items: VecDeque::new(),
                size: 0,
            }),
            notify: Notify::new(),
            space: Notify::new(),
            dropped: AtomicU64::new(0),
            closed: AtomicBool::new(false),
            capacity,
            policy,
            size,
            trim,
        }
    }

    /// Append following the queue's policy: wait for space (block) or drop the oldest
    /// (drop-oldest). An element is always accepted into an empty queue, so one larger than
    /// the capacity cannot wait forever.
    pub async fn push_wait(&self, item: T) {
        if self.policy == Overflow::Block {
            let n = (self.size)(&item);
            loop {
                let space = self.space.notified();
                let full = self
                    .inner
                    .lock()
                    .map(|q| q.size > 0 && q.size + n > self.capacity)
                    .unwrap_or(false);
                if !full || self.closed.load(Ordering::Relaxed) {
                    break;
                }
                space.await;
            }
        }
        self.push(item);
    }

    /// Append, dropping the oldest contents beyond capacity (whatever the policy: this is
    /// the call for producers that must never wait).
    pub fn push(&self, item: T) {
        let n = (self.size)(&item);
        if n == 0 || self.closed.load(Ordering::Relaxed) {
            return;
        }
        let mut dropped = 0u64;
        if let Ok(mut q) = self.inner.lock() {
            q.size += n;
            q.items.push_back(item);
            while q.size > self.capacity {
                let Some(mut front) = q.items.pop_front() else {
                    break;
                };
                let excess = q.size - self.capacity;
                let len = (self.size)(&front);
                match self.trim {
                    Some(trim) if len > excess => {
                        // Drop only the excess from the front chunk, keep its tail.
                        trim(&mut front, excess);
                        q.size -= excess;
                        dropped += excess as u64;
                        q.items.push_front(front);
                    }
                    _ => {
                        q.size -= len;
                        dropped += len as u64;
                    }
                }
            }
        }
        if dropped > 0 {
            self.dropped.fetch_add(dropped, Ordering::Relaxed);
        }
        self.notify.notify_one();
    }

    /// Take up to `max` elements, waiting until at least one is there. `None` once closed
    /// and empty.
    pub async fn pop_batch(&self, out: &mut Vec<T>, max: usize) -> Option<()> {
        loop {
            let notified = self.notify.notified();
            if let Ok(mut q) = self.inner.lock()
                && !q.items.is_empty()
            {
                let n = q.items.len().min(max);
                let size = self.size;
                let taken: usize = q.items.iter().take(n).map(size).sum();
                out.extend(q.items.drain(..n));
                q.size -= taken;
                if !q.items.is_empty() {
                    // More remain: make sure the next call does not wait.
                    self.notify.notify_one();
                }
                // One producer waits at most (the device reader): a stored permit cannot be
                // missed.
                self.space.notify_one();
                return Some(());
            }
            if self.closed.load(Ordering::Relaxed) {
                return None;
            }
            notified.await;
        }
    }

    /// Take everything queued without waiting; whether there was anything.
    pub fn try_pop_all(&self, out: &mut Vec<T>) -> bool {
        let taken = match self.inner.lock() {
            Ok(mut q) if !q.items.is_empty() => {
                out.extend(q.items.drain(..));
                q.size = 0;
                true
            }
            _ => false,
        };
        if taken {
            self.space.notify_one();
        }
        taken
    }

    /// Take everything queued, waiting until something is there. `None` once closed and
    /// empty.
    pub async fn pop_all(&self, out: &mut Vec<T>) -> Option<()> {
        self.pop_batch(out, usize::MAX).await
    }

    /// Discard everything queued (reset_input_buffer).
    pub fn clear(&self) {
        self.retain(|_| false);
    }

    /// Keep only the elements matching `pred` (e.g. drop a departed client's commands).
    pub fn retain(&self, pred: impl FnMut(&T) -> bool) {
        if let Ok(mut q) = self.inner.lock() {
            q.items.retain(pred);
            let size = self.size;
            q.size = q.items.iter().map(size).sum();
        }
        self.space.notify_one();
    }

    /// Number of queued elements matching `pred`.
    pub fn count(&self, mut pred: impl FnMut(&T) -> bool) -> usize {
        self.inner
            .lock()
            .map(|q| q.items.iter().filter(|x| pred(x)).count())
            .unwrap_or(0)
    }

    /// Units dropped (bytes, or items) since the last call; resets the counter.
    pub fn take_dropped(&self) -> u64 {
        self.dropped.swap(0, Ordering::Relaxed)
    }

    /// Wake the consumer (and a waiting producer) for good.
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
        let q = Queue::bytes(10, Overflow::DropOldest);
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
        let q = Queue::bytes(4, Overflow::Block);
        q.push_wait(Bytes::from_static(b"abcd")).await;
        let held = |q: &Queue<Bytes>| q.inner.lock().map(|i| i.size).unwrap_or(usize::MAX);
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
        let q = std::sync::Arc::new(Queue::bytes(10, Overflow::DropOldest));
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

#[cfg(test)]
mod item_tests {
    use super::*;

    #[tokio::test]
    async fn weighed_queue_drops_whole_items_and_counts_units() {
        let q: Queue<(u8, Vec<u8>)> = Queue::weighed(5, |(_, d)| d.len());
        q.push((1, vec![0; 3]));
        q.push((2, vec![0; 2]));
        q.push((3, vec![0; 2]));
        let mut out = Vec::new();
        q.pop_batch(&mut out, 10).await.expect("items");
        assert_eq!(out.iter().map(|(k, _)| *k).collect::<Vec<_>>(), [2, 3]);
        assert_eq!(q.take_dropped(), 3, "the first item's 3 units");
    }

    #[tokio::test]
    async fn drop_oldest_items() {
        let q = Queue::items(2);
        q.push(1);
        q.push(2);
        q.push(3);
        let mut out = Vec::new();
        q.pop_batch(&mut out, 10).await.expect("items");
        assert_eq!(out, vec![2, 3]);
        assert_eq!(q.take_dropped(), 1);
    }
}
