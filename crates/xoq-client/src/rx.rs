//! The client's receive buffer: bytes from the device waiting for `read`.
//!
//! Bounded (drop-oldest, counted), readable from async code (a `Notify`) and from blocking
//! code (a `Condvar`, so a Python thread waits without a runtime hop).

use std::collections::VecDeque;
use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use tokio::sync::Notify;

/// Default capacity: far more than any serial protocol leaves unread.
pub const RX_CAPACITY: usize = 4 << 20;

#[derive(Debug, Default)]
struct State {
    data: VecDeque<u8>,
    dropped: u64,
    closed: Option<String>,
}

/// Bounded receive buffer shared by the network task and readers.
#[derive(Debug)]
pub struct RxBuffer {
    state: Mutex<State>,
    cond: Condvar,
    notify: Notify,
    capacity: usize,
}

impl Default for RxBuffer {
    fn default() -> Self {
        Self::new(RX_CAPACITY)
    }
}

impl RxBuffer {
    /// A buffer of `capacity` bytes.
    pub fn new(capacity: usize) -> Self {
        Self {
            state: Mutex::new(State::default()),
            cond: Condvar::new(),
            notify: Notify::new(),
            capacity,
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        match self.state.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        }
    }

    /// Append received bytes, dropping the oldest beyond capacity.
    pub fn push(&self, bytes: &[u8]) {
        {
            let mut s = self.lock();
            s.data.extend(bytes);
            let over = s.data.len().saturating_sub(self.capacity);
            if over > 0 {
                s.data.drain(..over);
                s.dropped += over as u64;
            }
        }
        self.cond.notify_all();
        self.notify.notify_waiters();
    }

    /// Mark the stream ended; readers get `reason` once the buffer is empty.
    pub fn close(&self, reason: String) {
        {
            let mut s = self.lock();
            if s.closed.is_none() {
                s.closed = Some(reason);
            }
        }
        self.cond.notify_all();
        self.notify.notify_waiters();
    }

    /// Why the stream ended, if it did.
    pub fn closed(&self) -> Option<String> {
        self.lock().closed.clone()
    }

    /// Bytes ready to read.
    pub fn available(&self) -> usize {
        self.lock().data.len()
    }

    /// Bytes dropped because nobody read them in time.
    pub fn dropped(&self) -> u64 {
        self.lock().dropped
    }

    /// Discard everything buffered.
    pub fn clear(&self) {
        self.lock().data.clear();
    }

    /// Wake every blocked reader (they look again, and return 0 on a timed read): lets a
    /// caller cancel a read from another thread.
    pub fn wake(&self) {
        self.cond.notify_all();
        self.notify.notify_waiters();
    }

    fn take(s: &mut State, buf: &mut [u8]) -> usize {
        let n = buf.len().min(s.data.len());
        for (dst, src) in buf.iter_mut().zip(s.data.drain(..n)) {
            *dst = src;
        }
        n
    }

    /// Take what is there without waiting (may be 0).
    pub fn try_read(&self, buf: &mut [u8]) -> Result<usize, String> {
        let mut s = self.lock();
        if s.data.is_empty()
            && let Some(r) = &s.closed
        {
            return Err(r.clone());
        }
        Ok(Self::take(&mut s, buf))
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
        let deadline = timeout.map(|t| Instant::now() + t);
        let mut s = self.lock();
        loop {
            if !s.data.is_empty() {
                return Ok(Self::take(&mut s, buf));
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
                        return Ok(0);
                    }
                    match self.cond.wait_timeout(s, d - now) {
                        Ok((g, _)) => g,
                        Err(p) => p.into_inner().0,
                    }
                }
            };
        }
    }

    /// Async: wait until at least one byte is there, then take up to `buf.len()`.
    pub async fn read(&self, buf: &mut [u8]) -> Result<usize, String> {
        if buf.is_empty() {
            return Ok(0);
        }
        loop {
            let notified = self.notify.notified();
            {
                let mut s = self.lock();
                if !s.data.is_empty() {
                    return Ok(Self::take(&mut s, buf));
                }
                if let Some(r) = &s.closed {
                    return Err(r.clone());
                }
            }
            notified.await;
        }
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

/// A bounded inbox of items (CAN frames) readable from async and blocking code, drop-oldest
/// with a counter, like [`RxBuffer`] for bytes.
#[derive(Debug)]
pub struct Inbox<T> {
    state: Mutex<InboxState<T>>,
    cond: Condvar,
    notify: Notify,
    capacity: usize,
}

#[derive(Debug)]
struct InboxState<T> {
    items: VecDeque<T>,
    dropped: u64,
    closed: Option<String>,
}

impl<T> Inbox<T> {
    /// An inbox of at most `capacity` items.
    pub fn new(capacity: usize) -> Self {
        Self {
            state: Mutex::new(InboxState {
                items: VecDeque::new(),
                dropped: 0,
                closed: None,
            }),
            cond: Condvar::new(),
            notify: Notify::new(),
            capacity,
        }
    }

    fn lock(&self) -> MutexGuard<'_, InboxState<T>> {
        match self.state.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        }
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
        self.cond.notify_all();
        self.notify.notify_waiters();
    }

    /// Mark the stream ended.
    pub fn close(&self, reason: String) {
        {
            let mut s = self.lock();
            if s.closed.is_none() {
                s.closed = Some(reason);
            }
        }
        self.cond.notify_all();
        self.notify.notify_waiters();
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

    /// Blocking: the next item, waiting up to `timeout` (`None` = forever). `Ok(None)` on
    /// timeout, `Err` once closed and empty.
    pub fn pop_blocking(&self, timeout: Option<Duration>) -> Result<Option<T>, String> {
        let deadline = timeout.map(|t| Instant::now() + t);
        let mut s = self.lock();
        loop {
            if let Some(x) = s.items.pop_front() {
                return Ok(Some(x));
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

    /// Async: the next item.
    pub async fn pop(&self) -> Result<T, String> {
        loop {
            let notified = self.notify.notified();
            {
                let mut s = self.lock();
                if let Some(x) = s.items.pop_front() {
                    return Ok(x);
                }
                if let Some(r) = &s.closed {
                    return Err(r.clone());
                }
            }
            notified.await;
        }
    }
}
