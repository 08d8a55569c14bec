//! nftables and `tc` wrappers for kernel-side impairments, inside a private network namespace.
//!
//! Everything here shells out (`nft`, `tc`) and refuses to run outside a namespace made by
//! [`netns::isolated`](crate::netns::isolated) ([`Error::NotIsolated`]), so a test can never
//! change the host's firewall or qdiscs.
//!
//! Rules go in an `inet` table with two chains on the `input` hook: drops there are *silent*
//! (the sender sees no error), which is what packet loss looks like. On `lo` every packet passes
//! `input` once, whichever way it travels, so matching a port's `dport` *or* `sport` covers both
//! directions. (A drop in `output` returns `EPERM` to the sender: that tests send-error
//! handling, not loss.) Every rule has a counter; [`Nft::dropped`] sums them.
//!
//! This kernel has no netem and no `gact`: delay, jitter, reordering and duplication come from
//! the [`Forwarder`](crate::Forwarder); `tc tbf` (bandwidth caps, [`tbf`]) works.

use std::fmt;
use std::net::IpAddr;
use std::process::Command;

use crate::error::{Error, Result};
use crate::netns::{inside, run};

/// Chain of [`Nft::loss`], [`Nft::outage`] and [`Nft::rule`]; flushed by [`Nft::heal`].
pub const IMPAIR_CHAIN: &str = "impair";
/// Chain of [`Nft::isolate`] (not touched by [`Nft::heal`]); it runs before [`IMPAIR_CHAIN`].
pub const ISOLATE_CHAIN: &str = "isolate";

/// Whether the `nft` command is there; the error is the reason, to print when skipping.
pub fn available() -> Result<(), String> {
    match Command::new("nft").arg("--version").output() {
        Ok(o) if o.status.success() => Ok(()),
        Ok(o) => Err(format!(
            "`nft --version` failed ({}): install nftables (apt-get install -y nftables)",
            o.status
        )),
        Err(e) => Err(format!(
            "nft not found ({e}): install nftables (apt-get install -y nftables)"
        )),
    }
}

/// Whether the `tc` command is there; the error is the reason, to print when skipping.
pub fn tc_available() -> Result<(), String> {
    match Command::new("tc").arg("-V").output() {
        Ok(o) if o.status.success() => Ok(()),
        Ok(o) => Err(format!("`tc -V` failed ({}): install iproute2", o.status)),
        Err(e) => Err(format!("tc not found ({e}): install iproute2")),
    }
}

/// A transport protocol to match.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Proto {
    /// UDP (QUIC, iroh).
    Udp,
    /// TCP (moq's WebSocket fallback, HTTP).
    Tcp,
}

impl fmt::Display for Proto {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Proto::Udp => "udp",
            Proto::Tcp => "tcp",
        })
    }
}

/// An nftables table of impairment rules in the current (private) network namespace.
///
/// The table is (re)created by [`new`](Self::new) and deleted on drop.
#[derive(Debug)]
pub struct Nft {
    table: String,
}

fn nft(command: &str) -> Result<String> {
    run(Command::new("nft").arg(command))
}

impl Nft {
    /// Creates the `inet` table `table` with its chains, replacing any table of that name.
    ///
    /// Fails with [`Error::NotIsolated`] outside a namespace made by
    /// [`netns::isolated`](crate::netns::isolated).
    pub fn new(table: &str) -> Result<Self> {
        if !inside() {
            return Err(Error::NotIsolated);
        }
        if table.is_empty() || !table.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            return Err(Error::InvalidArgument(format!(
                "nft table name {table:?}: use letters, digits and `_`"
            )));
        }
        // `add` is idempotent; delete then re-create for a clean table.
        nft(&format!("add table inet {table}"))?;
        nft(&format!("delete table inet {table}"))?;
        nft(&format!("add table inet {table}"))?;
        nft(&format!(
            "add chain inet {table} {ISOLATE_CHAIN} {{ type filter hook input priority -10; policy accept; }}"
        ))?;
        nft(&format!(
            "add chain inet {table} {IMPAIR_CHAIN} {{ type filter hook input priority 0; policy accept; }}"
        ))?;
        Ok(Nft {
            table: table.to_owned(),
        })
    }

    /// The table's name.
    pub fn table(&self) -> &str {
        &self.table
    }

    /// Adds a rule (nft syntax, without `add rule …`) to [`IMPAIR_CHAIN`]; end it with
    /// `counter drop` so [`dropped`](Self::dropped) counts it.
    pub fn rule(&self, rule: &str) -> Result<()> {
        nft(&format!(
            "add rule inet {} {IMPAIR_CHAIN} {rule}",
            self.table
        ))
        .map(drop)
    }

    /// Silently drops `percent` % of `proto` packets to *and* from `port` (each packet
    /// independently, `numgen random`, 0.01 % resolution).
    pub fn loss(&self, proto: Proto, port: u16, percent: f64) -> Result<()> {
        if !(0.0..=100.0).contains(&percent) {
            return Err(Error::InvalidArgument(format!(
                "loss {percent} %: must be within 0..=100"
            )));
        }
        let basis_points = (percent * 100.0).round() as u32;
        for side in ["dport", "sport"] {
            self.rule(&format!(
                "{proto} {side} {port} numgen random mod 10000 lt {basis_points} counter drop"
            ))?;
        }
        Ok(())
    }

    /// Silently drops every TCP and UDP packet to or from `port` (a partition of that service;
    /// TCP too, because moq falls back to WebSocket over TCP when UDP is blocked).
    pub fn outage(&self, port: u16) -> Result<()> {
        for side in ["dport", "sport"] {
            self.rule(&format!(
                "meta l4proto {{ tcp, udp }} th {side} {port} counter drop"
            ))?;
        }
        Ok(())
    }

    /// Removes every [`loss`](Self::loss), [`outage`](Self::outage) and [`rule`](Self::rule)
    /// (flushes [`IMPAIR_CHAIN`]; [`isolate`](Self::isolate) stays).
    pub fn heal(&self) -> Result<()> {
        nft(&format!("flush chain inet {} {IMPAIR_CHAIN}", self.table)).map(drop)
    }

    /// Stops iroh from going around the forwarder: drops packets to `server` unless they come
    /// from `forwarder` (the forwarder's upstream IP), and packets from `server` unless they go
    /// to `forwarder`. With the server on `127.0.0.2` and the forwarder's upstream sockets on
    /// `127.0.0.3`, the only path between client and server is the forwarder.
    pub fn isolate(&self, server: IpAddr, forwarder: IpAddr) -> Result<()> {
        let family = match (server, forwarder) {
            (IpAddr::V4(_), IpAddr::V4(_)) => "ip",
            (IpAddr::V6(_), IpAddr::V6(_)) => "ip6",
            _ => {
                return Err(Error::InvalidArgument(format!(
                    "isolate({server}, {forwarder}): both addresses must be of one family"
                )));
            }
        };
        let table = &self.table;
        nft(&format!(
            "add rule inet {table} {ISOLATE_CHAIN} {family} daddr {server} {family} saddr != {forwarder} counter drop"
        ))?;
        nft(&format!(
            "add rule inet {table} {ISOLATE_CHAIN} {family} saddr {server} {family} daddr != {forwarder} counter drop"
        ))?;
        Ok(())
    }

    /// The table as `nft list table` prints it.
    pub fn list(&self) -> Result<String> {
        nft(&format!("list table inet {}", self.table))
    }

    /// Packets counted by every rule of the table (all of them drop), since they were added.
    /// Rules flushed by [`heal`](Self::heal) no longer count.
    pub fn dropped(&self) -> Result<u64> {
        Ok(sum_counters(&self.list()?))
    }
}

/// Sums `counter packets N` over an `nft list` output.
fn sum_counters(listing: &str) -> u64 {
    let words: Vec<&str> = listing.split_whitespace().collect();
    words
        .windows(3)
        .filter(|w| w[0] == "counter" && w[1] == "packets")
        .filter_map(|w| w[2].parse::<u64>().ok())
        .sum()
}

impl Drop for Nft {
    fn drop(&mut self) {
        let _ = nft(&format!("delete table inet {}", self.table));
    }
}

/// Caps `dev`'s egress at `rate_bps` bits per second with a token bucket (`tc qdisc replace dev
/// <dev> root tbf`), queue latency 200 ms, burst = 10 ms of traffic but at least the device's
/// MTU plus its header: a packet larger than the burst never passes (on `lo`, whose MTU is
/// 65536, a 16 KiB burst stalls TCP forever). On `lo` this caps every flow of the namespace.
/// Undo with [`clear_qdisc`].
pub fn tbf(dev: &str, rate_bps: u64) -> Result<()> {
    let mtu = std::fs::read_to_string(format!("/sys/class/net/{dev}/mtu"))
        .ok()
        .and_then(|s| s.trim().parse::<u64>().ok())
        .unwrap_or(65_536);
    let burst = (rate_bps / 8 / 100).max(mtu + 64);
    tbf_with(dev, rate_bps, burst, 200)
}

/// [`tbf`] with an explicit burst (bytes; keep it above the device's MTU) and queue latency (ms).
pub fn tbf_with(dev: &str, rate_bps: u64, burst_bytes: u64, latency_ms: u64) -> Result<()> {
    if !inside() {
        return Err(Error::NotIsolated);
    }
    if rate_bps == 0 || burst_bytes == 0 {
        return Err(Error::InvalidArgument(
            "tbf rate and burst must be positive".to_owned(),
        ));
    }
    run(Command::new("tc").args([
        "qdisc",
        "replace",
        "dev",
        dev,
        "root",
        "tbf",
        "rate",
        &format!("{rate_bps}bit"),
        "burst",
        &burst_bytes.to_string(),
        "latency",
        &format!("{latency_ms}ms"),
    ]))
    .map(drop)
}

/// Removes `dev`'s root qdisc (back to the default).
pub fn clear_qdisc(dev: &str) -> Result<()> {
    if !inside() {
        return Err(Error::NotIsolated);
    }
    run(Command::new("tc").args(["qdisc", "del", "dev", dev, "root"])).map(drop)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_are_summed() {
        let listing = "table inet t {\n chain impair {\n udp dport 5 numgen random mod 10000 < 500 counter packets 3 bytes 90 drop\n udp sport 5 counter packets 4 bytes 9 drop\n }\n}";
        assert_eq!(sum_counters(listing), 7);
    }

    #[test]
    fn refuses_outside_a_namespace() {
        if inside() {
            return;
        }
        assert!(matches!(Nft::new("t"), Err(Error::NotIsolated)));
        assert!(matches!(tbf("lo", 1_000_000), Err(Error::NotIsolated)));
    }
}
