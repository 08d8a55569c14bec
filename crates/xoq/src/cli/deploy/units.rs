//! systemd unit files for planned services.
//!
//! Every unit restarts its server forever (a robot left running comes back after a crash
//! or an unplug), keeps `$XOQ_HOME` writable and the rest of the system read-only. System
//! units (root) also get device access control by device class — `char-ttyUSB`,
//! `char-video4linux`, … rather than paths, so a renumbered device is still allowed — and the
//! groups that own those devices; user units cannot change either, so their user must be in
//! `dialout`/`video` (deploy says so).

use std::fmt::Write as _;
use std::path::Path;

use super::plan::Planned;

/// Whether units are system units (root) or the user's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Scope {
    /// `/etc/systemd/system`, started at boot.
    System,
    /// `~/.config/systemd/user`, started at boot with lingering.
    User,
}

impl Scope {
    /// The scope `machine.json` names (`user`, else system).
    pub(crate) fn from_name(name: &str) -> Scope {
        if name == "user" {
            Scope::User
        } else {
            Scope::System
        }
    }

    /// `system` or `user`.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Scope::System => "system",
            Scope::User => "user",
        }
    }
}

/// Quote one ExecStart argument the way systemd reads it.
fn quote(arg: &str) -> String {
    let plain = !arg.is_empty()
        && arg
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./:@=+,".contains(c));
    if plain {
        arg.to_string()
    } else {
        let escaped = arg
            .replace('\\', "\\\\")
            .replace('"', "\\\"")
            .replace('%', "%%")
            .replace('$', "$$");
        format!("\"{escaped}\"")
    }
}

/// An ExecStart line's arguments as written in the unit.
pub(crate) fn command_line(args: &[String]) -> String {
    args.iter().map(|a| quote(a)).collect::<Vec<_>>().join(" ")
}

/// Device classes and groups a kind of service needs.
fn access(kind: &str, device: &str) -> (&'static [&'static str], &'static [&'static str]) {
    if device.starts_with("sim:") || device.starts_with("virtual:") {
        return (&[], &[]);
    }
    match kind {
        "serial" => (&["char-ttyUSB", "char-ttyACM"], &["dialout"]),
        "camera" | "depth" => (&["char-video4linux"], &["video"]),
        "audio" => (&["char-alsa"], &["audio"]),
        _ => (&[], &[]),
    }
}

/// The unit file of one service (`description` names it for `systemctl status`).
#[allow(clippy::too_many_arguments)]
pub(crate) fn render(
    description: &str,
    pre: Option<&[String]>,
    exec: &[String],
    kind: &str,
    device: &str,
    home: &Path,
    scope: Scope,
    relay_env: Option<&Path>,
) -> String {
    let mut u = String::new();
    let _ = writeln!(
        u,
        "# Written by `xoq deploy`; `xoq deploy --uninstall` removes it."
    );
    let _ = writeln!(u, "[Unit]");
    let _ = writeln!(u, "Description={description}");
    if scope == Scope::System {
        let _ = writeln!(u, "Wants=network-online.target");
        let _ = writeln!(u, "After=network-online.target");
    }
    // Never give up restarting: a robot is left running.
    let _ = writeln!(u, "StartLimitIntervalSec=0");
    let _ = writeln!(u);
    let _ = writeln!(u, "[Service]");
    let _ = writeln!(u, "Type=simple");
    let _ = writeln!(
        u,
        "Environment={}",
        quote(&format!("XOQ_HOME={}", home.display()))
    );
    let _ = writeln!(u, "Environment=XOQ_LOG=info");
    if let Some(env) = relay_env {
        // XOQ_RELAY with its token: kept out of the unit, which every local user can read.
        let _ = writeln!(u, "EnvironmentFile={}", quote(&env.display().to_string()));
    }
    if let Some(pre) = pre {
        // Setting a CAN bit rate needs CAP_NET_ADMIN: only a system unit can; a user unit
        // runs on the interface as it is (`-`: a failure does not stop the server).
        let prefix = if scope == Scope::System { "" } else { "-" };
        let _ = writeln!(u, "ExecStartPre={prefix}{}", command_line(pre));
    }
    let _ = writeln!(u, "ExecStart={}", command_line(exec));
    let _ = writeln!(u, "Restart=always");
    let _ = writeln!(u, "RestartSec=2");
    // SIGTERM makes servers send their on-disconnect frames; give them time.
    let _ = writeln!(u, "TimeoutStopSec=10");
    let _ = writeln!(u, "NoNewPrivileges=yes");
    let _ = writeln!(u, "PrivateTmp=yes");
    let _ = writeln!(u, "ProtectSystem=strict");
    let _ = writeln!(u, "ReadWritePaths={}", quote(&home.display().to_string()));
    let _ = writeln!(u, "ProtectKernelModules=yes");
    let _ = writeln!(u, "ProtectControlGroups=yes");
    let _ = writeln!(
        u,
        "RestrictAddressFamilies=AF_INET AF_INET6 AF_UNIX AF_NETLINK{}",
        if kind == "can" { " AF_CAN" } else { "" }
    );
    if scope == Scope::System {
        let (classes, groups) = access(kind, device);
        if !classes.is_empty() {
            let _ = writeln!(u, "DevicePolicy=closed");
            for c in classes {
                let _ = writeln!(u, "DeviceAllow={c} rw");
            }
        }
        if !groups.is_empty() {
            let _ = writeln!(u, "SupplementaryGroups={}", groups.join(" "));
        }
    }
    let _ = writeln!(u);
    let _ = writeln!(u, "[Install]");
    let _ = writeln!(
        u,
        "WantedBy={}",
        match scope {
            Scope::System => "multi-user.target",
            Scope::User => "default.target",
        }
    );
    u
}

/// The unit of a planned service (`relay_env`: the file holding `XOQ_RELAY`, when it publishes).
pub(crate) fn render_planned(
    p: &Planned,
    home: &Path,
    scope: Scope,
    relay_env: Option<&Path>,
) -> String {
    render(
        &format!("xoq {} server: {} ({})", p.kind, p.name, p.device),
        p.pre.as_deref(),
        &p.exec,
        p.kind,
        &p.device,
        home,
        scope,
        relay_env.filter(|_| p.moq_path.is_some()),
    )
}

/// The `ExecStartPre` and `ExecStart` command lines of a unit file, split into arguments
/// (what systemd would run).
#[cfg(test)]
fn exec_lines(unit: &str) -> Vec<Vec<String>> {
    unit.lines()
        .filter_map(|l| {
            l.strip_prefix("ExecStart=")
                .or_else(|| l.strip_prefix("ExecStartPre="))
        })
        .map(|l| split(l.trim_start_matches('-')))
        .collect()
}

/// Split a command line written by [`command_line`].
#[cfg(test)]
fn split(line: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut quoted = false;
    let mut any = false;
    let mut chars = line.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '"' => {
                quoted = !quoted;
                any = true;
            }
            '\\' if quoted => {
                if let Some(n) = chars.next() {
                    cur.push(n);
                }
            }
            '%' | '$' if chars.peek() == Some(&c) => {
                chars.next();
                cur.push(c);
            }
            ' ' if !quoted => {
                if any || !cur.is_empty() {
                    out.push(std::mem::take(&mut cur));
                    any = false;
                }
            }
            c => cur.push(c),
        }
    }
    if any || !cur.is_empty() {
        out.push(cur);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn command_lines_round_trip_through_the_unit() {
        let args: Vec<String> = [
            "/usr/bin/xoq",
            "serial-server",
            "/dev/serial/by-id/usb-1a86_USB Serial-if00",
            "100%",
            "$HOME",
            "a\"b",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let unit = render(
            "t",
            None,
            &args,
            "serial",
            "x",
            Path::new("/h"),
            Scope::User,
            None,
        );
        assert_eq!(exec_lines(&unit), vec![args]);
    }
}
