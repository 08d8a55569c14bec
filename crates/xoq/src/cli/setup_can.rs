//! `xoq setup-can IFACE --bitrate N [--dbitrate N]`: bring a SocketCAN interface up at a
//! bit rate (what a deployed CAN unit runs before its server, and what a person types once
//! instead of three `ip link` lines).

use anyhow::Context;
use clap::Args;

/// `xoq setup-can`.
#[derive(Debug, Args, Clone)]
pub struct SetupCanCmd {
    /// Interface, e.g. can0.
    pub interface: String,
    /// Nominal (arbitration) bit rate, e.g. 1000000.
    #[arg(long)]
    pub bitrate: u32,
    /// CAN FD data bit rate, e.g. 5000000 (turns FD on).
    #[arg(long)]
    pub dbitrate: Option<u32>,
    /// Restart the controller this many ms after bus-off (0: stay off).
    #[arg(long, default_value_t = 100)]
    pub restart_ms: u32,
    /// Print the commands instead of running them.
    #[arg(long)]
    pub dry_run: bool,
}

/// The `ip` commands that set `a.interface` up.
pub(super) fn plan(a: &SetupCanCmd) -> anyhow::Result<Vec<Vec<String>>> {
    let ok = !a.interface.is_empty()
        && a.interface.len() <= 15
        && a.interface
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
    anyhow::ensure!(ok, "{:?} is not an interface name", a.interface);
    anyhow::ensure!(
        (10_000..=1_000_000).contains(&a.bitrate),
        "bit rate {}: classic CAN runs at 10 kbit/s to 1 Mbit/s",
        a.bitrate
    );
    if let Some(d) = a.dbitrate {
        anyhow::ensure!(
            d >= a.bitrate && d <= 12_000_000,
            "data bit rate {d}: at least the nominal rate, at most 12 Mbit/s"
        );
    }
    let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
    let iface = a.interface.as_str();
    let mut typ = s(&["ip", "link", "set", iface, "type", "can"]);
    typ.extend(s(&["bitrate", &a.bitrate.to_string()]));
    if let Some(d) = a.dbitrate {
        typ.extend(s(&["dbitrate", &d.to_string(), "fd", "on"]));
    }
    typ.extend(s(&["restart-ms", &a.restart_ms.to_string()]));
    Ok(vec![
        s(&["ip", "link", "set", iface, "down"]),
        typ,
        s(&["ip", "link", "set", iface, "up"]),
    ])
}

pub(super) fn run(a: SetupCanCmd) -> anyhow::Result<()> {
    let cmds = plan(&a)?;
    if a.dry_run {
        for c in &cmds {
            println!("{}", c.join(" "));
        }
        return Ok(());
    }
    anyhow::ensure!(
        std::path::Path::new("/sys/class/net")
            .join(&a.interface)
            .exists(),
        "no interface {} on this machine (is the adapter plugged in? `ip link` lists them)",
        a.interface
    );
    for c in &cmds {
        let out = std::process::Command::new(&c[0])
            .args(&c[1..])
            .output()
            .with_context(|| format!("cannot run {}: is iproute2 installed?", c[0]))?;
        anyhow::ensure!(
            out.status.success(),
            "`{}` failed: {} (setting a bit rate needs root or CAP_NET_ADMIN)",
            c.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    println!(
        "{} up at {} bit/s{}",
        a.interface,
        a.bitrate,
        a.dbitrate
            .map_or_else(String::new, |d| format!(", FD data {d} bit/s"))
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cmd(iface: &str, bitrate: u32, dbitrate: Option<u32>) -> SetupCanCmd {
        SetupCanCmd {
            interface: iface.into(),
            bitrate,
            dbitrate,
            restart_ms: 100,
            dry_run: true,
        }
    }

    #[test]
    fn the_ip_commands_for_classic_and_fd() {
        let lines = |c: &SetupCanCmd| -> Vec<String> {
            plan(c).expect("plan").iter().map(|v| v.join(" ")).collect()
        };
        assert_eq!(
            lines(&cmd("can0", 1_000_000, None)),
            [
                "ip link set can0 down",
                "ip link set can0 type can bitrate 1000000 restart-ms 100",
                "ip link set can0 up"
            ]
        );
        assert_eq!(
            lines(&cmd("can1", 1_000_000, Some(5_000_000)))[1],
            "ip link set can1 type can bitrate 1000000 dbitrate 5000000 fd on restart-ms 100"
        );
        for bad in [
            cmd("can0; reboot", 1_000_000, None),
            cmd("", 1_000_000, None),
            cmd("can0", 2_000_000, None),
            cmd("can0", 1_000_000, Some(500_000)),
        ] {
            assert!(plan(&bad).is_err(), "{bad:?}");
        }
    }
}
