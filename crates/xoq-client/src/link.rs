//! What every client shares about its link: who it is (identity), whether the link is up
//! (state, counters), and how it comes back after a drop (reconnect policy).

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use iroh::SecretKey;
use tokio::sync::watch;

use crate::ClientError;

/// Environment variable naming the client key file (see [`Identity`]).
pub const KEY_ENV: &str = "XOQ_KEY";

/// Who a client is to servers (their `--allow` lists name endpoint ids).
#[derive(Debug, Clone, Default)]
pub enum Identity {
    /// The user's identity, as `xoq id` prints it: the key file in `XOQ_KEY`, else
    /// `$XOQ_HOME/client.key` (created `0600` on first use). One id per user, so servers can
    /// put it on their allowlist and a program reconnecting is recognised.
    #[default]
    User,
    /// The key in this file (created `0600` if absent).
    File(PathBuf),
    /// This key.
    Key(SecretKey),
    /// A fresh random id for this client only.
    Ephemeral,
}

impl Identity {
    /// The path [`Identity::User`] uses.
    pub fn user_key_path() -> PathBuf {
        std::env::var_os(KEY_ENV)
            .filter(|p| !p.is_empty())
            .map(PathBuf::from)
            .unwrap_or_else(|| xoq_transport::key::default_key_path("client"))
    }

    /// The secret key to use (loading or creating files), `None` for ephemeral.
    pub fn secret(&self) -> Result<Option<SecretKey>, ClientError> {
        let load = |p: &PathBuf| {
            xoq_transport::key::load_or_create(p)
                .map(Some)
                .map_err(|e| ClientError::Connect(e.to_string()))
        };
        match self {
            Identity::User => load(&Self::user_key_path()),
            Identity::File(p) => load(p),
            Identity::Key(k) => Ok(Some(k.clone())),
            Identity::Ephemeral => Ok(None),
        }
    }
}

/// How a client comes back after its link drops.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reconnect {
    /// Give up (and fail every call) when the link has been down this long.
    pub deadline: Duration,
    /// Reconnect at all; `false` makes the first drop final.
    pub enabled: bool,
}

impl Default for Reconnect {
    /// On, giving up after 60 s: long enough for a Wi-Fi roam or a robot reboot.
    fn default() -> Self {
        Self {
            deadline: Duration::from_secs(60),
            enabled: true,
        }
    }
}

impl Reconnect {
    /// How a relay session under this policy redials by itself.
    pub(crate) fn redial(&self) -> xoq_transport::moq::Redial {
        if self.enabled {
            xoq_transport::moq::Redial::Until(self.deadline)
        } else {
            xoq_transport::moq::Redial::Never
        }
    }
}

/// Delay before reconnect attempt `n` (0-based): at once, then after short pauses. Each
/// attempt is itself bounded ([`attempt_timeout`]), so a fresh dial goes out every 0.5 s
/// during an outage and the link is back within about that after it heals (a dial that
/// waits on its own retransmission timer could take several seconds).
pub fn backoff(attempt: u32) -> Duration {
    const STEPS_MS: [u64; 3] = [0, 100, 100];
    Duration::from_millis(STEPS_MS[(attempt as usize).min(STEPS_MS.len() - 1)])
}

/// How long one reconnect attempt may take: long enough for a handshake on this link (three
/// round trips of the slowest probe seen), never less than 400 ms (a QUIC handshake on a
/// loaded machine takes tens of milliseconds; the floor leaves room for a slow CPU).
pub fn attempt_timeout(clock: &crate::clock::Clock) -> Duration {
    let rtt = clock
        .estimate()
        .map_or(Duration::ZERO, |e| Duration::from_micros(e.rtt_us));
    (rtt * 3).max(Duration::from_millis(400))
}

/// Dial again until `open` gives a session, the reconnect deadline passes, or `open` fails
/// in a way `is_final` says retrying cannot fix (a refusal). The link must already be down
/// (its `down_for` is the deadline's clock). `Err` is the reason to close the device with.
/// Shared by every client, so they all retry the same way. `peer` and `device` (`port`,
/// `bus`) word the message.
#[allow(clippy::too_many_arguments)]
pub(crate) async fn redial<R, Fut>(
    link: &Link,
    reconnect: &Reconnect,
    clock: &crate::clock::Clock,
    peer: &str,
    device: &str,
    last_error: &str,
    mut open: impl FnMut() -> Fut,
    is_final: impl Fn(&ClientError) -> bool,
) -> Result<R, String>
where
    Fut: std::future::Future<Output = Result<R, ClientError>>,
{
    let mut attempt = 0u32;
    loop {
        tokio::time::sleep(backoff(attempt)).await;
        attempt += 1;
        let down = link.down_for().unwrap_or_default();
        if down >= reconnect.deadline {
            return Err(format!(
                "{peer} unreachable for {:.0} s (last error: {last_error}); reopen the {device} once it is back",
                down.as_secs_f64()
            ));
        }
        match tokio::time::timeout(attempt_timeout(clock), open()).await {
            Ok(Ok(r)) => return Ok(r),
            Ok(Err(e)) if is_final(&e) => return Err(e.to_string()),
            Ok(Err(e)) => tracing::debug!("reconnect attempt {attempt} failed: {e}"),
            Err(_) => tracing::debug!("reconnect attempt {attempt} timed out"),
        }
    }
}

/// The state of a client's link.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LinkState {
    /// Connected and in sync with the server.
    Connected,
    /// The link dropped; reconnecting since `since` (calls wait or fail fast, see each
    /// client).
    Reconnecting {
        /// When the link dropped.
        since: Instant,
        /// Why.
        reason: String,
    },
    /// Closed for good (by the user, a refusal, or the reconnect deadline), with the reason.
    Closed(String),
}

/// Counters of a link.
#[derive(Debug, Default)]
pub struct LinkCounters {
    /// Times the link dropped.
    pub drops: AtomicU64,
    /// Times it came back.
    pub reconnects: AtomicU64,
    /// Total time spent down, µs (completed outages).
    pub down_us: AtomicU64,
}

/// A link's state and counters, shared by the client and its supervisor task.
#[derive(Debug, Clone)]
pub struct Link {
    state: Arc<watch::Sender<LinkState>>,
    counters: Arc<LinkCounters>,
    /// Drops and reconnects count only once the link was up a first time.
    ever_up: Arc<AtomicBool>,
}

impl Default for Link {
    fn default() -> Self {
        Self::new()
    }
}

impl Link {
    /// A connected link.
    pub fn new() -> Self {
        Self {
            state: Arc::new(watch::channel(LinkState::Connected).0),
            counters: Arc::default(),
            ever_up: Arc::new(AtomicBool::new(true)),
        }
    }

    /// A link still connecting (not counted as an outage).
    pub fn connecting() -> Self {
        Self {
            state: Arc::new(
                watch::channel(LinkState::Reconnecting {
                    since: Instant::now(),
                    reason: "connecting".into(),
                })
                .0,
            ),
            counters: Arc::default(),
            ever_up: Arc::new(AtomicBool::new(false)),
        }
    }

    /// The current state.
    pub fn state(&self) -> LinkState {
        self.state.borrow().clone()
    }

    /// Follow state changes.
    pub fn watch(&self) -> watch::Receiver<LinkState> {
        self.state.subscribe()
    }

    /// Counters.
    pub fn counters(&self) -> &LinkCounters {
        &self.counters
    }

    /// Whether the link is up.
    pub fn is_up(&self) -> bool {
        matches!(*self.state.borrow(), LinkState::Connected)
    }

    /// The link dropped (no-op when already down or closed).
    pub fn down(&self, reason: impl Into<String>) {
        let reason = reason.into();
        let changed = self.state.send_if_modified(|s| match s {
            LinkState::Connected => {
                *s = LinkState::Reconnecting {
                    since: Instant::now(),
                    reason: reason.clone(),
                };
                true
            }
            _ => false,
        });
        if changed {
            self.counters.drops.fetch_add(1, Ordering::Relaxed);
            tracing::warn!("link down ({reason}); reconnecting");
        }
    }

    /// The link is back.
    pub fn up(&self) {
        let mut outage = None;
        self.state.send_if_modified(|s| match s {
            LinkState::Reconnecting { since, .. } => {
                outage = Some(since.elapsed());
                *s = LinkState::Connected;
                true
            }
            _ => false,
        });
        if let Some(d) = outage {
            if !self.ever_up.swap(true, Ordering::Relaxed) {
                return;
            }
            self.counters.reconnects.fetch_add(1, Ordering::Relaxed);
            self.counters
                .down_us
                .fetch_add(d.as_micros() as u64, Ordering::Relaxed);
            tracing::info!("link back after {d:?}");
        }
    }

    /// Closed for good.
    pub fn close(&self, reason: impl Into<String>) {
        let reason = reason.into();
        self.state.send_if_modified(|s| match s {
            LinkState::Closed(_) => false,
            _ => {
                *s = LinkState::Closed(reason.clone());
                true
            }
        });
    }

    /// How long the link has been down, if it is reconnecting.
    pub fn down_for(&self) -> Option<Duration> {
        match &*self.state.borrow() {
            LinkState::Reconnecting { since, .. } => Some(since.elapsed()),
            _ => None,
        }
    }

    /// The error a call gets while the link is not up (`None` when it is).
    pub fn unavailable(&self) -> Option<ClientError> {
        match &*self.state.borrow() {
            LinkState::Connected => None,
            LinkState::Reconnecting { since, reason } => Some(ClientError::LinkDown(format!(
                "link down for {:.1} s ({reason}); reconnecting",
                since.elapsed().as_secs_f64()
            ))),
            LinkState::Closed(r) => Some(ClientError::Closed(r.clone())),
        }
    }

    /// Wait until the link is up (`Ok`), closed (`Err`), or `limit` passed (`Err` timeout).
    pub async fn wait_up(&self, limit: Option<Duration>) -> Result<(), ClientError> {
        let mut rx = self.state.subscribe();
        let wait = async {
            loop {
                match &*rx.borrow_and_update() {
                    LinkState::Connected => return Ok(()),
                    LinkState::Closed(r) => return Err(ClientError::Closed(r.clone())),
                    LinkState::Reconnecting { .. } => {}
                }
                if rx.changed().await.is_err() {
                    return Err(ClientError::Closed("the client was dropped".into()));
                }
            }
        };
        match limit {
            None => wait.await,
            Some(t) => tokio::time::timeout(t, wait)
                .await
                .map_err(|_| ClientError::Timeout(t))?,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_starts_at_once_and_attempts_scale_with_the_link() {
        assert_eq!(backoff(0), Duration::ZERO);
        assert!(backoff(1) > Duration::ZERO);
        assert_eq!(backoff(1000), Duration::from_millis(100));
        let c = crate::clock::Clock::new();
        assert_eq!(attempt_timeout(&c), Duration::from_millis(400));
        c.add(0, 0, 600_000);
        assert_eq!(attempt_timeout(&c), Duration::from_millis(1800));
    }

    #[tokio::test]
    async fn state_transitions_and_counters() {
        let l = Link::new();
        assert!(l.is_up() && l.unavailable().is_none());
        l.down("blip");
        l.down("again");
        assert!(matches!(l.unavailable(), Some(ClientError::LinkDown(_))));
        assert_eq!(l.counters().drops.load(Ordering::Relaxed), 1);
        let waiter = {
            let l = l.clone();
            tokio::spawn(async move { l.wait_up(Some(Duration::from_secs(5))).await })
        };
        l.up();
        waiter.await.expect("join").expect("up");
        assert_eq!(l.counters().reconnects.load(Ordering::Relaxed), 1);
        l.close("bye");
        assert!(matches!(l.wait_up(None).await, Err(ClientError::Closed(_))));
        l.up();
        assert!(!l.is_up(), "closed is final");
    }
}
