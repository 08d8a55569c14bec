//! Motor safety bookkeeping, independent of transports and devices (sans-IO: time is passed
//! in, so every rule is unit-tested without sleeping).
//!
//! A *controller* is a client that has sent at least one command: a P2P session or one relay
//! writer, alike. The rules:
//!
//! - **Last one out**: when the last controller leaves (disconnects, its relay broadcast is
//!   retracted, or a relay writer sends nothing at all, not even a clock probe, for
//!   [`WRITER_SILENCE`]), the server trips: it sends the on-disconnect frames. A relay keeps
//!   a dead client's broadcast for its own idle timeout, longer than a motor may run alone.
//! - **Deadman**: when every controller has been silent for the window, the server trips
//!   while their connections may still look alive (a silent partition, a stalled program).
//! - **Age**: with a maximum command age, a command whose send time (on the robot's clock,
//!   see the client's clock estimate) is older than that when it reaches the bus, or more
//!   than that in the *future* (a client clock far ahead), is dropped and counted.
//! - **Stays tripped**: after a trip, a connection that existed before it may still deliver
//!   commands it sent before the trip or during the outage (QUIC retransmits them when the
//!   link heals). Such a controller's commands are dropped until one was *sent after the
//!   server heard from it again*; connections opened after the trip are fresh from their
//!   first command. The first fresh command re-arms.

use std::collections::HashMap;
use std::time::Duration;

/// A controller's id, unique per server (P2P sessions and relay writers share the space).
pub type ControllerId = u64;

/// A relay writer that sent nothing (clients probe the clock every second) for this long has
/// gone away: shorter than the P2P idle timeout, so both paths give up on a dead client in
/// about the same time.
pub const WRITER_SILENCE: Duration = Duration::from_secs(3);

/// Why a command was not passed on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Drop {
    /// Older than the maximum age.
    Stale,
    /// Dated further in the future than the maximum age allows.
    Future,
    /// Sent before the link recovered from a safety trip.
    AfterTrip,
}

/// What the caller must do after an event.
#[derive(Debug, Clone, PartialEq, Eq)]
#[must_use]
pub enum Action {
    /// Nothing.
    None,
    /// Send the on-disconnect frames now, for this reason.
    Trip(&'static str),
}

#[derive(Debug, Clone)]
struct Controller {
    /// When it joined (robot clock, µs).
    joined_us: u64,
    /// Last accepted command (robot clock, µs), for the deadman.
    last_cmd_us: u64,
    /// Last frame of any kind (µs), for the liveness of relay writers.
    last_heard_us: u64,
    /// A relay writer: it leaves when silent for the deadman window (a relay keeps a dead
    /// client's broadcast for a while).
    leaves_when_silent: bool,
    /// After a trip: when the server first heard from it again.
    heard_after_trip_us: Option<u64>,
    /// Whether it has sent a command (only then is it a controller).
    commanded: bool,
}

/// Counters of the safety layer.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct SafetyCounts {
    /// Commands dropped as too old.
    pub stale: u64,
    /// Commands dropped as dated in the future.
    pub future: u64,
    /// Commands dropped after a trip (sent before the link recovered).
    pub after_trip: u64,
    /// Trips.
    pub trips: u64,
}

/// The safety state of one served device.
#[derive(Debug)]
pub struct Safety {
    max_age: Option<Duration>,
    deadman: Option<Duration>,
    armed: bool,
    controllers: HashMap<ControllerId, Controller>,
    /// The trip time (robot clock, µs) while tripped.
    tripped_at: Option<u64>,
    counts: SafetyCounts,
}

fn us(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

impl Safety {
    /// `armed`: there are on-disconnect frames to send (without them nothing trips, but ages
    /// are still checked).
    pub fn new(armed: bool, max_age: Option<Duration>, deadman: Option<Duration>) -> Self {
        Self {
            max_age,
            deadman,
            armed,
            controllers: HashMap::new(),
            tripped_at: None,
            counts: SafetyCounts::default(),
        }
    }

    /// The maximum command age, if any.
    pub fn max_age(&self) -> Option<Duration> {
        self.max_age
    }

    /// Counters so far.
    pub fn counts(&self) -> SafetyCounts {
        self.counts
    }

    /// Whether the on-disconnect frames were sent and no fresh command came since.
    pub fn is_tripped(&self) -> bool {
        self.tripped_at.is_some()
    }

    /// Number of controllers (clients that have sent a command and are still here).
    pub fn controllers(&self) -> usize {
        self.controllers.values().filter(|c| c.commanded).count()
    }

    /// A client connected (P2P session, or a relay writer in sync). It becomes a controller
    /// with its first command.
    pub fn join(&mut self, id: ControllerId, now_us: u64, leaves_when_silent: bool) {
        self.controllers.insert(
            id,
            Controller {
                joined_us: now_us,
                last_cmd_us: now_us,
                last_heard_us: now_us,
                leaves_when_silent,
                heard_after_trip_us: None,
                commanded: false,
            },
        );
    }

    /// Anything at all arrived from `id` (a command, a ping): after a trip this marks when the
    /// link to it was seen alive again.
    pub fn heard(&mut self, id: ControllerId, now_us: u64) {
        let tripped = self.tripped_at;
        if let Some(c) = self.controllers.get_mut(&id) {
            c.last_heard_us = now_us;
            if let Some(t) = tripped
                && c.joined_us <= t
                && c.heard_after_trip_us.is_none()
            {
                c.heard_after_trip_us = Some(now_us);
            }
        }
    }

    /// A command from `id`, sent at `sent_us` (robot clock; 0 = unknown, judged on arrival).
    /// `Ok` to pass it on, else why it is dropped (counted).
    pub fn command(&mut self, id: ControllerId, sent_us: u64, now_us: u64) -> Result<(), Drop> {
        self.heard(id, now_us);
        let sent = if sent_us == 0 { now_us } else { sent_us };
        if let Some(max) = self.max_age.map(us) {
            if sent > now_us.saturating_add(max) {
                self.counts.future += 1;
                return Err(Drop::Future);
            }
            if now_us.saturating_sub(sent) > max {
                self.counts.stale += 1;
                return Err(Drop::Stale);
            }
        }
        let c = self.controllers.entry(id).or_insert(Controller {
            joined_us: now_us,
            last_cmd_us: now_us,
            last_heard_us: now_us,
            leaves_when_silent: false,
            heard_after_trip_us: None,
            commanded: false,
        });
        c.commanded = true;
        if let Some(t) = self.tripped_at {
            // A connection older than the trip must prove it is live again: only what it
            // sent after the server heard from it again counts.
            let bar = if c.joined_us > t {
                0
            } else {
                c.heard_after_trip_us.unwrap_or(u64::MAX)
            };
            if sent < bar {
                self.counts.after_trip += 1;
                return Err(Drop::AfterTrip);
            }
            self.tripped_at = None;
            for c in self.controllers.values_mut() {
                c.heard_after_trip_us = None;
            }
        }
        if let Some(c) = self.controllers.get_mut(&id) {
            c.last_cmd_us = now_us;
        }
        Ok(())
    }

    /// `id` left (disconnected, retracted).
    pub fn leave(&mut self, id: ControllerId, now_us: u64) -> Action {
        let was = self.controllers.remove(&id).is_some_and(|c| c.commanded);
        if was && self.controllers() == 0 {
            self.trip(now_us, "the last controlling client left")
        } else {
            Action::None
        }
    }

    /// Periodic check (at a fraction of the deadman window, or of [`WRITER_SILENCE`]).
    pub fn tick(&mut self, now_us: u64) -> Action {
        // Relay writers that went quiet leave.
        let gone = us(WRITER_SILENCE);
        let before = self.controllers();
        self.controllers.retain(|_, c| {
            !(c.leaves_when_silent && now_us.saturating_sub(c.last_heard_us) > gone)
        });
        if before > 0 && self.controllers() == 0 {
            return self.trip(now_us, "the last controlling client went silent");
        }
        let Some(window) = self.deadman.map(us) else {
            return Action::None;
        };
        let silent = |c: &Controller| now_us.saturating_sub(c.last_cmd_us) > window;
        let all_silent = self.controllers() > 0
            && self
                .controllers
                .values()
                .filter(|c| c.commanded)
                .all(silent);
        if all_silent {
            self.trip(
                now_us,
                "no command from any controlling client within the deadman window",
            )
        } else {
            Action::None
        }
    }

    /// The server is stopping: trip unconditionally (when armed).
    pub fn stop(&mut self, now_us: u64) -> Action {
        self.tripped_at = None;
        self.trip(now_us, "the server is stopping")
    }

    fn trip(&mut self, now_us: u64, why: &'static str) -> Action {
        if !self.armed || self.tripped_at.is_some() {
            return Action::None;
        }
        self.tripped_at = Some(now_us);
        self.counts.trips += 1;
        Action::Trip(why)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: u64 = 1000;

    fn s(max_age_ms: Option<u64>, deadman_ms: Option<u64>) -> Safety {
        Safety::new(
            true,
            max_age_ms.map(Duration::from_millis),
            deadman_ms.map(Duration::from_millis),
        )
    }

    #[test]
    fn last_controller_leaving_trips_once() {
        let mut x = s(None, None);
        x.join(1, 0, false);
        x.join(2, 0, false);
        assert_eq!(x.leave(1, 5), Action::None, "never commanded");
        assert_eq!(x.command(2, 10, 10), Ok(()));
        x.join(3, 10, false);
        assert_eq!(x.command(3, 11, 11), Ok(()));
        assert_eq!(x.leave(2, 20), Action::None, "3 still controls");
        assert!(matches!(x.leave(3, 30), Action::Trip(_)));
        assert!(x.is_tripped());
        assert_eq!(x.counts().trips, 1);
    }

    #[test]
    fn unarmed_never_trips() {
        let mut x = Safety::new(false, None, Some(Duration::from_millis(10)));
        x.join(1, 0, false);
        assert_eq!(x.command(1, 0, 0), Ok(()));
        assert_eq!(x.tick(100 * MS), Action::None);
        assert_eq!(x.leave(1, 100 * MS), Action::None);
    }

    #[test]
    fn stale_and_future_commands_are_dropped_and_counted() {
        let mut x = s(Some(20), None);
        x.join(1, 0, false);
        let now = 1_000 * MS;
        assert_eq!(x.command(1, now - 19 * MS, now), Ok(()));
        assert_eq!(x.command(1, now - 21 * MS, now), Err(Drop::Stale));
        assert_eq!(x.command(1, now + 19 * MS, now), Ok(()), "small skew ahead");
        assert_eq!(x.command(1, now + 21 * MS, now), Err(Drop::Future));
        assert_eq!(
            x.command(1, 0, now),
            Ok(()),
            "no send time: judged on arrival"
        );
        let c = x.counts();
        assert_eq!((c.stale, c.future), (1, 1));
    }

    #[test]
    fn deadman_trips_when_every_controller_is_silent() {
        let mut x = s(None, Some(100));
        x.join(1, 0, false);
        x.join(2, 0, false);
        assert_eq!(x.command(1, 0, 0), Ok(()));
        assert_eq!(x.tick(50 * MS), Action::None);
        assert_eq!(x.command(2, 60 * MS, 60 * MS), Ok(()));
        assert_eq!(x.tick(150 * MS), Action::None, "2 spoke 90 ms ago");
        assert!(matches!(x.tick(161 * MS), Action::Trip(_)));
        assert_eq!(x.tick(300 * MS), Action::None, "already tripped");
    }

    #[test]
    fn silent_relay_writers_leave_and_p2p_sessions_do_not() {
        let silence = us(WRITER_SILENCE);
        let mut x = s(None, None);
        x.join(1, 0, true);
        x.join(2, 0, false);
        assert_eq!(x.command(1, 0, 0), Ok(()));
        assert_eq!(x.command(2, 0, 0), Ok(()));
        // Pings keep a writer that sends no commands.
        x.heard(1, silence);
        assert_eq!(x.tick(silence + 1), Action::None);
        assert_eq!(x.controllers(), 2);
        assert_eq!(x.tick(2 * silence + 1), Action::None);
        assert_eq!(
            x.controllers(),
            1,
            "the relay writer left, the P2P session stays"
        );
        // The last one leaving by silence trips.
        let mut y = s(None, None);
        y.join(7, 0, true);
        assert_eq!(y.command(7, 0, 0), Ok(()));
        assert!(matches!(y.tick(silence + 1), Action::Trip(_)));
    }

    #[test]
    fn commands_buffered_during_a_partition_do_not_rearm() {
        // Controller 1 streams at 100 Hz, the link partitions at t=1 s, the deadman (300 ms)
        // trips at 1.3 s, the link heals at 4 s: everything sent 1..4 s arrives in a burst.
        let mut x = s(None, Some(300));
        x.join(1, 0, false);
        for t in (0..1000).step_by(10) {
            assert_eq!(x.command(1, t * MS, t * MS), Ok(()));
        }
        assert!(matches!(x.tick(1310 * MS), Action::Trip(_)));
        let heal = 4000 * MS;
        for t in (1000..4000).step_by(10) {
            assert_eq!(
                x.command(1, t * MS, heal),
                Err(Drop::AfterTrip),
                "sent at {t} ms"
            );
        }
        assert!(x.is_tripped());
        // The first command sent after the server heard from it again re-arms.
        assert_eq!(x.command(1, heal + 5 * MS, heal + 20 * MS), Ok(()));
        assert!(!x.is_tripped());
        assert_eq!(x.counts().after_trip, 300);
    }

    #[test]
    fn a_client_connecting_after_a_trip_is_fresh_at_once() {
        let mut x = s(None, None);
        x.join(1, 0, false);
        assert_eq!(x.command(1, 0, 0), Ok(()));
        assert!(matches!(x.leave(1, 10 * MS), Action::Trip(_)));
        x.join(2, 20 * MS, false);
        // Its first command was necessarily sent before it arrived: it must not be lost.
        assert_eq!(x.command(2, 21 * MS, 30 * MS), Ok(()));
        assert!(!x.is_tripped());
    }

    #[test]
    fn stop_trips_even_when_tripped_or_idle() {
        let mut x = s(None, None);
        assert!(matches!(x.stop(0), Action::Trip(_)));
        assert!(matches!(x.stop(1), Action::Trip(_)));
        assert_eq!(x.counts().trips, 2);
    }
}
