//! What a client has received and not yet read: one bounded buffer type, [`Inbox`], for
//! frames (`Inbox<TimedFrame>`) and, through [`RxBuffer`], for bytes.
//!
//! Bounded (drop-oldest, counted), readable from async code (a `Notify`) and from blocking
//! code (a `Condvar`, so a Python thread waits without a runtime hop).

use std::collections::VecDeque;
use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use tokio::sync::Notify;

/// Default capacity of a byte buffer: far more than any serial protocol leaves unread.
pub const RX_CAPACITY: usize = 4 << 20;

#[derive(Debug)]
struct State<T> {
    items: VecDeque<T>,
    dropped: u64,
    closed: Option<String>,
}

/// A bounded inbox shared by the network task (producer) and readers, drop-oldest with a
/// counter.
#[derive(Debug)]
pub struct Inbox<T> {
    state: Mutex<State<T>>,
    cond: Condvar,
    notify: Notify,
    capacity: usize,
}

impl<T> Inbox<T> {
    /// An inbox of at most `capacity` items.
    pub fn new(capacity: usize) -> Self {
        Self {
            state: Mutex::new(State {
                items: VecDeque::new(),
                dropped: 0,
                closed: None,
            }),
            cond: Condvar::new(),
            notify: Notify::new(),
            capacity,
        }
    }

    fn lock(&self) -> MutexGuard<'_, State<T>> {
        match self.state.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        }
    }

    /// Wake every reader: they look again.
    fn wake_all(&self) {
        self.cond.notify_all();
        self.notify.notify_waiters();
    }

    /// Append items, dropping the oldest beyond capacity.
    pub fn extend(&self, items: impl IntoIterator<Item = T>) {
        {
            let mut s = self.lock();
            s.items.extend(items);
            let over = s.items.len().saturating_sub(self.capacity);
            if over > 0 {
                s.items.drain(..over);
                s.dropped += over as u64;
            }
        }
        self.wake_all();
    }

    /// Mark the stream ended; readers get `reason` once the inbox is empty.
    pub fn close(&self, reason: String) {
        {
            let mut s = self.lock();
            if s.closed.is_none() {
                s.closed = Some(reason);
            }
        }
        self.wake_all();
    }

    /// Why the stream ended, if it did.
    pub fn closed(&self) -> Option<String> {
        self.lock().closed.clone()
    }

    /// Items waiting.
    pub fn len(&self) -> usize {
        self.lock().items.len()
    }

    /// Whether nothing is waiting.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Items dropped because nobody read them in time.
    pub fn dropped(&self) -> u64 {
        self.lock().dropped
    }

    /// Discard everything waiting.
    pub fn clear(&self) {
        self.lock().items.clear();
    }

    /// Wake every blocked reader (they look again, and return nothing on a timed read):
    /// lets a caller cancel a read from another thread.
    pub fn wake(&self) {
        self.wake_all();
    }

    /// Blocking: wait until `take` gets something from a non-empty inbox, or `timeout`
    /// passes (`Ok(None)`; `None` waits forever). `Err` once closed and empty.
    fn take_blocking<R>(
        &self,
        timeout: Option<Duration>,
        mut take: impl FnMut(&mut VecDeque<T>) -> R,
    ) -> Result<Option<R>, String> {
        let deadline = timeout.map(|t| Instant::now() + t);
        let mut s = self.lock();
        loop {
            if !s.items.is_empty() {
                return Ok(Some(take(&mut s.items)));
            }
            if let Some(r) = &s.closed {
                return Err(r.clone());
            }
            s = match deadline {
                None => match self.cond.wait(s) {
                    Ok(g) => g,
                    Err(p) => p.into_inner(),
                },
                Some(d) => {
                    let now = Instant::now();
                    if now >= d {
                        return Ok(None);
                    }
                    match self.cond.wait_timeout(s, d - now) {
                        Ok((g, _)) => g,
                        Err(p) => p.into_inner().0,
                    }
                }
            };
        }
    }

    /// Async: wait until the inbox is non-empty, then `take` from it. `Err` once closed and
    /// empty.
    async fn take<R>(&self, mut take: impl FnMut(&mut VecDeque<T>) -> R) -> Result<R, String> {
        loop {
            let notified = self.notify.notified();
            {
                let mut s = self.lock();
                if !s.items.is_empty() {
                    return Ok(take(&mut s.items));
                }
                if let Some(r) = &s.closed {
                    return Err(r.clone());
                }
            }
            notified.await;
        }
    }

    /// Blocking: the next item, waiting up to `timeout` (`None` = forever). `Ok(None)` on
    /// timeout, `Err` once closed and empty.
    pub fn pop_blocking(&self, timeout: Option<Duration>) -> Result<Option<T>, String> {
        self.take_blocking(timeout, |q| q.pop_front())
            .map(Option::flatten)
    }

    /// Async: the next item.
    pub async fn pop(&self) -> Result<T, String> {
        loop {
            if let Some(x) = self.take(|q| q.pop_front()).await? {
                return Ok(x);
            }
        }
    }
}

/// The byte stream from a device waiting for `read`: an [`Inbox`] of bytes with
/// read-into-a-buffer calls (pyserial's `read(n)` semantics are built on these).
#[derive(Debug)]
pub struct RxBuffer(Inbox<u8>);

impl Default for RxBuffer {
    fn default() -> Self {
        Self::new(RX_CAPACITY)
    }
}

/// Move up to `buf.len()` bytes from the front of `q` into `buf`.
fn take_into(q: &mut VecDeque<u8>, buf: &mut [u8]) -> usize {
    let n = buf.len().min(q.len());
    for (dst, src) in buf.iter_mut().zip(q.drain(..n)) {
        *dst = src;
    }
    n
}

impl RxBuffer {
    /// A buffer of `capacity` bytes.
    pub fn new(capacity: usize) -> Self {
        Self(Inbox::new(capacity))
    }

    /// Append received bytes, dropping the oldest beyond capacity.
    pub fn push(&self, bytes: &[u8]) {
        self.0.extend(bytes.iter().copied());
    }

    /// Mark the stream ended; readers get `reason` once the buffer is empty.
    pub fn close(&self, reason: String) {
        self.0.close(reason);
    }

    /// Why the stream ended, if it did.
    pub fn closed(&self) -> Option<String> {
        self.0.closed()
    }

    /// Bytes ready to read.
    pub fn available(&self) -> usize {
        self.0.len()
    }

    /// Bytes dropped because nobody read them in time.
    pub fn dropped(&self) -> u64 {
        self.0.dropped()
    }

    /// Discard everything buffered.
    pub fn clear(&self) {
        self.0.clear();
    }

    /// Wake every blocked reader (they look again, and return 0 on a timed read): lets a
    /// caller cancel a read from another thread.
    pub fn wake(&self) {
        self.0.wake();
    }

    /// Take what is there without waiting (may be 0).
    pub fn try_read(&self, buf: &mut [u8]) -> Result<usize, String> {
        let mut s = self.0.lock();
        if s.items.is_empty()
            && let Some(r) = &s.closed
        {
            return Err(r.clone());
        }
        Ok(take_into(&mut s.items, buf))
    }

    /// Wait until at least one byte is there (or `timeout` passes: `Ok(0)`), then take up to
    /// `buf.len()`. `None` waits forever. Blocking: call from a plain thread.
    pub fn read_blocking(
        &self,
        buf: &mut [u8],
        timeout: Option<Duration>,
    ) -> Result<usize, String> {
        if buf.is_empty() {
            return Ok(0);
        }
        Ok(self
            .0
            .take_blocking(timeout, |q| take_into(q, buf))?
            .unwrap_or(0))
    }

    /// Async: wait until at least one byte is there, then take up to `buf.len()`.
    pub async fn read(&self, buf: &mut [u8]) -> Result<usize, String> {
        if buf.is_empty() {
            return Ok(0);
        }
        self.0.take(|q| take_into(q, buf)).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounded_drop_oldest() {
        let rx = RxBuffer::new(4);
        rx.push(b"abcdef");
        assert_eq!(rx.available(), 4);
        assert_eq!(rx.dropped(), 2);
        let mut b = [0u8; 8];
        assert_eq!(rx.try_read(&mut b), Ok(4));
        assert_eq!(&b[..4], b"cdef");
    }

    #[test]
    fn timeout_returns_zero_and_close_reports() {
        let rx = RxBuffer::new(16);
        let mut b = [0u8; 4];
        assert_eq!(
            rx.read_blocking(&mut b, Some(Duration::from_millis(5))),
            Ok(0)
        );
        rx.push(b"x");
        rx.close("gone".into());
        assert_eq!(rx.read_blocking(&mut b, None), Ok(1));
        assert_eq!(rx.read_blocking(&mut b, None), Err("gone".into()));
    }
}

#[cfg(test)]
mod inbox_tests {
    use super::*;

    #[tokio::test]
    async fn items_in_order_drop_oldest_and_close_after_drain() {
        let inbox = Inbox::new(2);
        inbox.extend([1, 2, 3]);
        assert_eq!(inbox.dropped(), 1);
        assert_eq!(inbox.pop().await, Ok(2));
        assert_eq!(
            inbox.pop_blocking(Some(Duration::from_millis(1))),
            Ok(Some(3))
        );
        assert_eq!(inbox.pop_blocking(Some(Duration::from_millis(5))), Ok(None));
        inbox.extend([4]);
        inbox.close("gone".into());
        assert_eq!(inbox.pop().await, Ok(4));
        assert_eq!(inbox.pop().await, Err("gone".into()));
    }
}
