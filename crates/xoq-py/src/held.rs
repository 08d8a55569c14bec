//! A device whose reads run as tasks on the shared runtime, for picture streams
//! (`Camera`, `DepthCamera`).
//!
//! A read owns the device for its duration, and Python waits for it in short slices so
//! Ctrl-C gets through. An interrupted read is not lost or cut in half: the next call picks
//! up the same task (cancelling a read midway could drop a frame's credit and starve the
//! stream). Decoding happens on the calling thread, with the GIL, so no Python object is
//! ever touched from a runtime thread.

use std::future::Future;
use std::sync::Mutex;
use std::time::Instant;

use pyo3::prelude::*;
use tokio::task::JoinHandle;

use crate::{SIGNAL_SLICE, runtime};

/// Where the device is.
pub(crate) enum State<T, R> {
    /// Ready for a call.
    Idle(Box<T>),
    /// A read in flight, owning the device.
    Reading(JoinHandle<(Box<T>, R)>),
    /// A call on another thread holds the device.
    Busy,
    Closed,
}

/// What a wait for a read gave.
pub(crate) enum Received<T, R> {
    /// The read finished: the device back, and what it read.
    Done(Box<T>, R),
    /// Nothing yet (timeout or an interrupt, carried as the error): the read stays in flight.
    Pending(State<T, R>, Option<PyErr>),
}

/// The slot a Python object keeps its device in. Methods may be called from several Python
/// threads; reads are serialised.
pub(crate) struct Held<T, R> {
    state: Mutex<State<T, R>>,
    /// What the device is called in errors ("the camera").
    what: &'static str,
}

impl<T: Send + 'static, R: Send + 'static> Held<T, R> {
    pub(crate) fn new(dev: T, what: &'static str) -> Self {
        Self {
            state: Mutex::new(State::Idle(Box::new(dev))),
            what,
        }
    }

    pub(crate) fn closed(&self) -> PyErr {
        crate::ClosedError::new_err(format!("{} is released", self.what))
    }

    /// Take the device out of its slot for one call. The lock is never held while the GIL
    /// is released (a thread waiting on it with the GIL would deadlock the one holding it).
    pub(crate) fn take(&self) -> PyResult<State<T, R>> {
        let mut slot = self
            .state
            .lock()
            .map_err(|_| crate::XoqError::new_err(format!("{} state poisoned", self.what)))?;
        match std::mem::replace(&mut *slot, State::Busy) {
            State::Busy => Err(crate::XoqError::new_err(format!(
                "{} is in use by another thread (read it from one thread)",
                self.what
            ))),
            State::Closed => {
                *slot = State::Closed;
                Err(self.closed())
            }
            s => Ok(s),
        }
    }

    /// Put the device back after a call (unless it was closed meanwhile).
    pub(crate) fn put(&self, state: State<T, R>) {
        if let Ok(mut slot) = self.state.lock() {
            if matches!(*slot, State::Busy) {
                *slot = state;
            } else if let State::Reading(h) = state {
                h.abort();
            }
        }
    }

    /// Wait for the read in flight, or start one with `read`, in short slices (Ctrl-C gets
    /// through), until `deadline`.
    pub(crate) fn receive<F, Fut>(
        &self,
        py: Python<'_>,
        state: State<T, R>,
        deadline: Option<Instant>,
        read: F,
    ) -> Received<T, R>
    where
        F: FnOnce(Box<T>) -> Fut,
        Fut: Future<Output = (Box<T>, R)> + Send + 'static,
    {
        let rt = match runtime() {
            Ok(rt) => rt,
            Err(e) => return Received::Pending(state, Some(e)),
        };
        let mut handle = match state {
            State::Idle(dev) => rt.spawn(read(dev)),
            State::Reading(h) => h,
            other => return Received::Pending(other, Some(self.closed())),
        };
        loop {
            let wait = deadline.map_or(SIGNAL_SLICE, |d| {
                d.saturating_duration_since(Instant::now())
                    .min(SIGNAL_SLICE)
            });
            let done = py.detach(|| {
                rt.block_on(async { tokio::time::timeout(wait, &mut handle).await.ok() })
            });
            match done {
                Some(Ok((dev, r))) => return Received::Done(dev, r),
                Some(Err(e)) => {
                    return Received::Pending(
                        State::Closed,
                        Some(crate::XoqError::new_err(format!(
                            "{} read failed: {e}",
                            self.what
                        ))),
                    );
                }
                None => {}
            }
            if deadline.is_some_and(|d| Instant::now() >= d) {
                return Received::Pending(State::Reading(handle), None);
            }
            if let Err(e) = py.check_signals() {
                return Received::Pending(State::Reading(handle), Some(e));
            }
        }
    }

    /// The device for a call that is not a read: a read still in flight is finished first.
    pub(crate) fn idle(&self, py: Python<'_>) -> PyResult<Box<T>> {
        let rt = runtime()?;
        match self.take()? {
            State::Idle(dev) => Ok(dev),
            State::Reading(h) => match py.detach(|| rt.block_on(h)) {
                Ok((dev, _)) => Ok(dev),
                Err(e) => Err(crate::XoqError::new_err(format!(
                    "{} read failed: {e}",
                    self.what
                ))),
            },
            other => {
                self.put(other);
                Err(self.closed())
            }
        }
    }

    /// Close the device with `close`. Idempotent.
    pub(crate) fn close<F, Fut>(&self, py: Python<'_>, close: F) -> PyResult<()>
    where
        F: FnOnce(Box<T>) -> Fut + Send,
        Fut: Future<Output = ()>,
    {
        let rt = runtime()?;
        let old = match self.state.lock() {
            Ok(mut s) => std::mem::replace(&mut *s, State::Closed),
            Err(_) => return Ok(()),
        };
        match old {
            State::Idle(dev) => py.detach(|| rt.block_on(close(dev))),
            State::Reading(h) => h.abort(),
            // A call on another thread holds it: `put` sees Closed and drops it.
            State::Busy | State::Closed => {}
        }
        Ok(())
    }

    /// Whether the device is still open.
    pub(crate) fn is_open(&self) -> bool {
        self.state
            .lock()
            .map(|s| !matches!(*s, State::Closed))
            .unwrap_or(false)
    }
}
