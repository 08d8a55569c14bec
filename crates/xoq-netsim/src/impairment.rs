//! What the forwarder does to packets: [`Impairment`] per [`Direction`], and link [`Profile`]s.

use std::time::Duration;

/// Which way a datagram travels through the [`Forwarder`](crate::Forwarder).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Direction {
    /// Client → server: datagrams received on the forwarder's listening socket.
    ToServer,
    /// Server → client: replies received on a client's upstream socket.
    ToClient,
}

impl Direction {
    /// Both directions, to set something on each: `for d in Direction::BOTH { … }`.
    pub const BOTH: [Direction; 2] = [Direction::ToServer, Direction::ToClient];

    pub(crate) fn index(self) -> usize {
        match self {
            Direction::ToServer => 0,
            Direction::ToClient => 1,
        }
    }
}

/// The impairments applied to one direction of a [`Forwarder`](crate::Forwarder).
///
/// Each datagram entering that direction is, in this order:
/// 1. dropped with probability [`loss`](Self::loss) %;
/// 2. otherwise scheduled for delivery after `delay + U(-jitter, +jitter)` (uniform, clamped at
///    zero), plus [`reorder_delay`](Self::reorder_delay) for [`reorder`](Self::reorder) % of
///    packets (those overtake-able packets are what makes reordering);
/// 3. duplicated with probability [`duplicate`](Self::duplicate) %: the copy gets its own
///    jitter draw (and no reorder delay).
///
/// Like Linux netem without a rate, independent jitter draws reorder packets sent closer together
/// than `2 × jitter`; set [`preserve_order`](Self::preserve_order) for a link whose latency varies
/// but never reorders.
///
/// Percentages are clamped to `0..=100` (NaN counts as 0). Every packet consumes the same
/// number of random draws whatever the settings, so with a fixed seed the decisions for packet
/// *n* do not depend on the settings used for earlier packets.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Impairment {
    /// Fixed one-way delay added to every packet.
    pub delay: Duration,
    /// Jitter amplitude: each packet's delay is `delay + U(-jitter, +jitter)`, never below zero.
    pub jitter: Duration,
    /// Loss, in percent of packets (independent, uniform).
    pub loss: f64,
    /// Duplication, in percent of (non-lost) packets.
    pub duplicate: f64,
    /// Reordering, in percent of (non-lost) packets: those get [`reorder_delay`](Self::reorder_delay)
    /// extra delay, so later packets overtake them.
    pub reorder: f64,
    /// Extra delay of reordered packets.
    pub reorder_delay: Duration,
    /// Never deliver a packet before one that entered earlier (jitter then only stretches gaps).
    /// Reordered packets and duplicates are exempt.
    pub preserve_order: bool,
}

impl Impairment {
    /// No impairment: immediate, lossless forwarding.
    pub fn none() -> Self {
        Self::default()
    }

    /// Sets the fixed delay.
    #[must_use]
    pub fn with_delay(mut self, delay: Duration) -> Self {
        self.delay = delay;
        self
    }

    /// Sets the jitter amplitude (uniform ±`jitter`).
    #[must_use]
    pub fn with_jitter(mut self, jitter: Duration) -> Self {
        self.jitter = jitter;
        self
    }

    /// Sets the loss percentage.
    #[must_use]
    pub fn with_loss(mut self, percent: f64) -> Self {
        self.loss = percent;
        self
    }

    /// Sets the duplication percentage.
    #[must_use]
    pub fn with_duplicate(mut self, percent: f64) -> Self {
        self.duplicate = percent;
        self
    }

    /// Sets the reordering percentage and the extra delay of reordered packets.
    #[must_use]
    pub fn with_reorder(mut self, percent: f64, extra_delay: Duration) -> Self {
        self.reorder = percent;
        self.reorder_delay = extra_delay;
        self
    }

    /// Sets [`preserve_order`](Self::preserve_order).
    #[must_use]
    pub fn with_preserve_order(mut self, preserve: bool) -> Self {
        self.preserve_order = preserve;
        self
    }
}

/// Converts a percentage to a probability in `0..=1` (NaN → 0).
pub(crate) fn probability(percent: f64) -> f64 {
    if percent.is_nan() {
        0.0
    } else {
        (percent / 100.0).clamp(0.0, 1.0)
    }
}

/// Link profiles of iroh's degradation ladder (round-trip figures), for benches.
///
/// [`Profile::impairment`] maps one to a per-direction [`Impairment`]: half the RTT as delay,
/// half the jitter as jitter amplitude (so the RTT varies by about ± the profile's jitter), and
/// the profile's loss applied *in each direction*.
///
/// | profile | RTT | jitter | loss |
/// |---|---|---|---|
/// | [`GoodWifi`](Profile::GoodWifi) | 16 ms | 0 | 0.1 % |
/// | [`CongestedWifi`](Profile::CongestedWifi) | 40 ms | 12 ms | 1 % |
/// | [`Weak4g`](Profile::Weak4g) | 90 ms | 15 ms | 2 % |
/// | [`Slow3g`](Profile::Slow3g) | 200 ms | 30 ms | 3 % |
/// | [`Satellite`](Profile::Satellite) | 600 ms | 0 | 1.5 % |
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Profile {
    /// Good Wi-Fi: 16 ms RTT, 0.1 % loss.
    GoodWifi,
    /// Congested Wi-Fi: 40 ms RTT, 12 ms jitter, 1 % loss.
    CongestedWifi,
    /// Weak 4G: 90 ms RTT, 15 ms jitter, 2 % loss.
    Weak4g,
    /// Slow 3G: 200 ms RTT, 30 ms jitter, 3 % loss.
    Slow3g,
    /// Geostationary satellite: 600 ms RTT, 1.5 % loss.
    Satellite,
}

impl Profile {
    /// Every profile, best first.
    pub const ALL: [Profile; 5] = [
        Profile::GoodWifi,
        Profile::CongestedWifi,
        Profile::Weak4g,
        Profile::Slow3g,
        Profile::Satellite,
    ];

    /// (RTT ms, jitter ms, loss %) of the profile.
    pub fn figures(self) -> (u64, u64, f64) {
        match self {
            Profile::GoodWifi => (16, 0, 0.1),
            Profile::CongestedWifi => (40, 12, 1.0),
            Profile::Weak4g => (90, 15, 2.0),
            Profile::Slow3g => (200, 30, 3.0),
            Profile::Satellite => (600, 0, 1.5),
        }
    }

    /// The impairment to set on *each* direction (see the type's docs for the mapping).
    pub fn impairment(self) -> Impairment {
        let (rtt, jitter, loss) = self.figures();
        Impairment::none()
            .with_delay(Duration::from_millis(rtt) / 2)
            .with_jitter(Duration::from_millis(jitter) / 2)
            .with_loss(loss)
    }

    /// A short name (`good-wifi`, `congested-wifi`, `weak-4g`, `slow-3g`, `satellite`).
    pub fn name(self) -> &'static str {
        match self {
            Profile::GoodWifi => "good-wifi",
            Profile::CongestedWifi => "congested-wifi",
            Profile::Weak4g => "weak-4g",
            Profile::Slow3g => "slow-3g",
            Profile::Satellite => "satellite",
        }
    }

    /// The profile with that [`name`](Self::name).
    pub fn from_name(name: &str) -> Option<Profile> {
        Profile::ALL.into_iter().find(|p| p.name() == name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentages_are_clamped() {
        assert_eq!(probability(f64::NAN), 0.0);
        assert_eq!(probability(-3.0), 0.0);
        assert_eq!(probability(250.0), 1.0);
        assert_eq!(probability(12.5), 0.125);
    }

    #[test]
    fn profiles_split_the_rtt_between_directions() {
        let weak = Profile::Weak4g.impairment();
        assert_eq!(weak.delay, Duration::from_millis(45));
        assert_eq!(weak.jitter, Duration::from_micros(7500));
        assert_eq!(weak.loss, 2.0);
        for p in Profile::ALL {
            assert_eq!(Profile::from_name(p.name()), Some(p));
        }
        assert_eq!(Profile::from_name("dial-up"), None);
    }
}
