//! One robot clock: each client estimates the offset from its own clock to the server's (the
//! robot's) over the link, NTP-style, so command ages are judged on the robot's clock and the
//! robot's timestamps can be given to the caller in its own clock.
//!
//! A probe sent at client time `t0`, answered at server time `s`, received at `t1` gives the
//! sample `offset = s - (t0 + t1) / 2` with uncertainty `rtt / 2` (`rtt = t1 - t0`). The
//! estimate is the sample with the smallest round trip among the recent ones: queueing only
//! ever adds delay, so the fastest probe is the least skewed by asymmetric queues.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Environment variable shifting this process's clock by a number of microseconds (may be
/// negative). A test seam: it simulates a client whose clock is wrong, to check that command
/// ages and timestamps still come out right.
pub const SKEW_ENV: &str = "XOQ_CLOCK_SKEW_US";

/// Samples kept; older ones are forgotten, so the estimate follows drift.
const SAMPLES: usize = 16;
/// Samples older than this are not used.
const FRESH: Duration = Duration::from_secs(60);

fn skew_us() -> i64 {
    static SKEW: std::sync::OnceLock<i64> = std::sync::OnceLock::new();
    *SKEW.get_or_init(|| {
        std::env::var(SKEW_ENV)
            .ok()
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0)
    })
}

/// This process's clock: microseconds since the Unix epoch (plus the test skew, if set).
pub fn local_now_us() -> u64 {
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64);
    t.saturating_add_signed(skew_us())
}

#[derive(Debug, Clone, Copy)]
struct Sample {
    rtt_us: u64,
    offset_us: i64,
    at: Instant,
}

#[derive(Debug, Default)]
struct State {
    samples: VecDeque<Sample>,
}

/// The offset estimate of one link (cheap to clone; clones share it).
#[derive(Debug, Clone, Default)]
pub struct Clock(Arc<Mutex<State>>);

/// A snapshot of the estimate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClockEstimate {
    /// Server clock minus this process's clock, µs.
    pub offset_us: i64,
    /// Round trip of the sample the offset comes from, µs: the offset is right to within
    /// half of it.
    pub rtt_us: u64,
    /// Samples the estimate was chosen from.
    pub samples: usize,
}

impl Clock {
    /// A clock with no estimate yet (offset 0).
    pub fn new() -> Self {
        Self::default()
    }

    /// Add a sample: probe sent at `t0` (local), answered at `server_us`, received at `t1`.
    pub fn add(&self, t0: u64, server_us: u64, t1: u64) {
        if t1 < t0 {
            return;
        }
        let rtt_us = t1 - t0;
        let mid = t0 + rtt_us / 2;
        let offset_us = server_us as i64 - mid as i64;
        if let Ok(mut s) = self.0.lock() {
            if s.samples.len() == SAMPLES {
                s.samples.pop_front();
            }
            s.samples.push_back(Sample {
                rtt_us,
                offset_us,
                at: Instant::now(),
            });
        }
    }

    /// A one-way hint (a handshake carrying the server's time, received at `t1`): used only
    /// until a real probe answers, with the handshake's round trip as its uncertainty.
    pub fn hint(&self, sent_t0: u64, server_us: u64, t1: u64) {
        self.add(sent_t0, server_us, t1);
    }

    /// Forget every sample (a new server: its clock may differ).
    pub fn reset(&self) {
        if let Ok(mut s) = self.0.lock() {
            s.samples.clear();
        }
    }

    /// The current estimate, if any sample is fresh.
    pub fn estimate(&self) -> Option<ClockEstimate> {
        let s = self.0.lock().ok()?;
        let fresh = s.samples.iter().filter(|x| x.at.elapsed() < FRESH);
        let n = fresh.clone().count();
        fresh.min_by_key(|x| x.rtt_us).map(|b| ClockEstimate {
            offset_us: b.offset_us,
            rtt_us: b.rtt_us,
            samples: n,
        })
    }

    /// Server clock minus local clock (0 without an estimate).
    pub fn offset_us(&self) -> i64 {
        self.estimate().map_or(0, |e| e.offset_us)
    }

    /// Now on the robot's clock.
    pub fn robot_now_us(&self) -> u64 {
        local_now_us().saturating_add_signed(self.offset_us())
    }

    /// A robot-clock timestamp in this process's clock.
    pub fn to_local_us(&self, robot_us: u64) -> u64 {
        robot_us.saturating_add_signed(-self.offset_us())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn symmetric_probes_recover_the_offset() {
        let c = Clock::new();
        assert_eq!(c.offset_us(), 0);
        // Server 5 s ahead; 100 µs each way.
        c.add(1_000, 5_001_100, 1_200);
        let e = c.estimate().expect("estimate");
        assert_eq!(e.offset_us, 5_000_000);
        assert_eq!(e.rtt_us, 200);
    }

    #[test]
    fn the_fastest_probe_wins() {
        let c = Clock::new();
        // A probe delayed 10 ms on the way back skews by 5 ms ...
        c.add(0, 1_000_100, 10_200);
        // ... a fast one does not.
        c.add(20_000, 1_020_100, 20_200);
        assert_eq!(c.offset_us(), 1_000_000);
        assert_eq!(c.estimate().map(|e| e.samples), Some(2));
        assert_eq!(c.to_local_us(1_000_500), 500);
    }

    #[test]
    fn bounded_and_resettable() {
        let c = Clock::new();
        for i in 0..100u64 {
            c.add(i * 10, i * 10 + 5, i * 10 + 10);
        }
        assert_eq!(c.estimate().map(|e| e.samples), Some(SAMPLES));
        c.add(10, 0, 5); // receive before send: ignored
        c.reset();
        assert_eq!(c.estimate(), None);
    }
}
