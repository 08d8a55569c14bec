//! `xoq serial-pty ADDRESS --link PATH`: a local pseudo-terminal bridged to a remote port, so
//! any program (minicom, esptool, a C program) uses the remote port unchanged.
//!
//! Line settings the program makes on the pty (termios: baud rate, framing, flow control)
//! are read back from the pty and applied on the remote port, before any byte written after
//! the change is forwarded.

use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::Args;
use xoq_client::serial::{RemoteSerial, SerialOptions};
use xoq_wire::serial::{DataBits, FlowControl, LineSettings, Parity, StopBits};

use super::common;

/// `xoq serial-pty`.
#[derive(Debug, Args)]
pub struct PtyArgs {
    /// Server address: <id>, <id>@<ip>:<port> or <relay-url>/<path>.
    pub address: String,
    /// Symlink to create to the pty (e.g. /tmp/ttyXOQ); removed on exit.
    #[arg(long)]
    pub link: Option<PathBuf>,
    /// Client identity key (default $XOQ_KEY or ~/.config/xoq/client.key).
    #[arg(long)]
    pub key: Option<PathBuf>,
    /// No discovery (also XOQ_OFFLINE=1).
    #[arg(long)]
    pub offline: bool,
}

/// Standard termios speed constants and their rates (Linux).
const SPEEDS: &[(libc::speed_t, u32)] = &[
    (libc::B50, 50),
    (libc::B75, 75),
    (libc::B110, 110),
    (libc::B134, 134),
    (libc::B150, 150),
    (libc::B200, 200),
    (libc::B300, 300),
    (libc::B600, 600),
    (libc::B1200, 1200),
    (libc::B1800, 1800),
    (libc::B2400, 2400),
    (libc::B4800, 4800),
    (libc::B9600, 9600),
    (libc::B19200, 19200),
    (libc::B38400, 38400),
    (libc::B57600, 57600),
    (libc::B115200, 115_200),
    (libc::B230400, 230_400),
    (libc::B460800, 460_800),
    (libc::B500000, 500_000),
    (libc::B576000, 576_000),
    (libc::B921600, 921_600),
    (libc::B1000000, 1_000_000),
    (libc::B1152000, 1_152_000),
    (libc::B1500000, 1_500_000),
    (libc::B2000000, 2_000_000),
    (libc::B2500000, 2_500_000),
    (libc::B3000000, 3_000_000),
    (libc::B3500000, 3_500_000),
    (libc::B4000000, 4_000_000),
];

fn get_termios(fd: RawFd) -> std::io::Result<libc::termios> {
    let mut t = std::mem::MaybeUninit::<libc::termios>::uninit();
    // SAFETY: tcgetattr fills the struct on success; fd is a valid open tty for the call.
    let r = unsafe { libc::tcgetattr(fd, t.as_mut_ptr()) };
    if r != 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: initialised by the successful tcgetattr above.
    Ok(unsafe { t.assume_init() })
}

/// The line settings a termios describes (`None` for a non-standard or zero speed).
pub(crate) fn settings_of(t: &libc::termios) -> Option<LineSettings> {
    // SAFETY: pure function reading the struct.
    let speed = unsafe { libc::cfgetospeed(t) };
    let baud_rate = SPEEDS.iter().find(|(s, _)| *s == speed)?.1;
    let data_bits = match t.c_cflag & libc::CSIZE {
        libc::CS5 => DataBits::Five,
        libc::CS6 => DataBits::Six,
        libc::CS7 => DataBits::Seven,
        _ => DataBits::Eight,
    };
    let parity = if t.c_cflag & libc::PARENB == 0 {
        Parity::None
    } else if t.c_cflag & libc::PARODD != 0 {
        Parity::Odd
    } else {
        Parity::Even
    };
    let stop_bits = if t.c_cflag & libc::CSTOPB != 0 {
        StopBits::Two
    } else {
        StopBits::One
    };
    let flow_control = if t.c_cflag & libc::CRTSCTS != 0 {
        FlowControl::Hardware
    } else if t.c_iflag & (libc::IXON | libc::IXOFF) != 0 {
        FlowControl::Software
    } else {
        FlowControl::None
    };
    Some(LineSettings {
        baud_rate,
        data_bits,
        parity,
        stop_bits,
        flow_control,
    })
}

fn set_raw_with_speed(fd: RawFd, baud: u32) -> std::io::Result<()> {
    let mut t = get_termios(fd)?;
    // SAFETY: cfmakeraw/cfset*speed/tcsetattr operate on a valid struct and fd.
    unsafe {
        libc::cfmakeraw(&mut t);
        if let Some((s, _)) = SPEEDS.iter().find(|(_, b)| *b == baud) {
            libc::cfsetispeed(&mut t, *s);
            libc::cfsetospeed(&mut t, *s);
        }
        if libc::tcsetattr(fd, libc::TCSANOW, &t) != 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(())
}

struct LinkGuard(Option<PathBuf>);
impl Drop for LinkGuard {
    fn drop(&mut self) {
        if let Some(p) = &self.0 {
            let _ = std::fs::remove_file(p);
        }
    }
}

pub(super) async fn run(a: PtyArgs) -> anyhow::Result<()> {
    let opts = SerialOptions::keep_settings()
        .identity(common::client_identity(a.key.as_ref()))
        .offline(a.offline || xoq_transport::offline_from_env())
        .client_name("serial-pty");
    let port = Arc::new(RemoteSerial::connect(&a.address, opts).await?);
    let pty = nix::pty::openpty(None, None).context("cannot create a pseudo-terminal")?;
    let master: OwnedFd = pty.master;
    // We keep the slave open ourselves: the master then never sees EIO when the program
    // closes and reopens the pty, and we can read the program's termios changes.
    let slave: OwnedFd = pty.slave;
    let slave_path = nix::unistd::ttyname(&slave).context("ttyname of the pty")?;
    let remote = port.settings();
    set_raw_with_speed(slave.as_raw_fd(), remote.map_or(115_200, |s| s.baud_rate))?;
    let mut last = get_termios(slave.as_raw_fd())
        .ok()
        .and_then(|t| settings_of(&t));
    let _link = match &a.link {
        Some(link) => {
            if let Ok(meta) = std::fs::symlink_metadata(link) {
                anyhow::ensure!(
                    meta.file_type().is_symlink(),
                    "{} exists and is not a symlink; choose another --link",
                    link.display()
                );
                std::fs::remove_file(link)?;
            }
            std::os::unix::fs::symlink(&slave_path, link)
                .with_context(|| format!("cannot create {}", link.display()))?;
            LinkGuard(Some(link.clone()))
        }
        None => LinkGuard(None),
    };
    nix::fcntl::fcntl(
        &master,
        nix::fcntl::FcntlArg::F_SETFL(nix::fcntl::OFlag::O_NONBLOCK),
    )?;
    let master = Arc::new(xoq_device::serial::async_file(File::from(master))?);
    {
        let mut out = std::io::stdout().lock();
        writeln!(
            out,
            "xoq serial-pty: {} -> {}",
            slave_path.display(),
            common::shown(&a.address)
        )?;
        writeln!(out, "pty: {}", slave_path.display())?;
        if let Some(l) = &a.link {
            writeln!(out, "link: {}", l.display())?;
        }
        writeln!(out, "ready")?;
        out.flush()?;
    }

    // remote -> pty
    let m2 = master.clone();
    let p2 = port.clone();
    let mut to_pty = tokio::spawn(async move {
        let mut buf = vec![0u8; 16 * 1024];
        loop {
            let n = p2.read(&mut buf).await?;
            let mut data = &buf[..n];
            while !data.is_empty() {
                let mut g = m2.writable().await?;
                match g.try_io(|f| f.get_ref().write(data)) {
                    Ok(Ok(w)) => data = &data[w..],
                    Ok(Err(e)) => return Err(anyhow::Error::from(e)),
                    Err(_) => continue,
                }
            }
        }
        #[allow(unreachable_code)]
        Ok::<(), anyhow::Error>(())
    });

    // pty -> remote, with termios changes applied first.
    let mut buf = vec![0u8; 16 * 1024];
    let mut tick = tokio::time::interval(Duration::from_millis(20));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let slave_fd = slave.as_raw_fd();
    let sync = |last: &mut Option<LineSettings>| -> Option<LineSettings> {
        let now = get_termios(slave_fd).ok().and_then(|t| settings_of(&t));
        if now.is_some() && now != *last {
            *last = now;
            return now;
        }
        None
    };
    loop {
        tokio::select! {
            r = &mut to_pty => {
                return match r {
                    Ok(Ok(())) => Ok(()),
                    Ok(Err(e)) => Err(e.context("remote port")),
                    Err(e) => Err(e.into()),
                };
            }
            _ = common::shutdown_signal() => break,
            _ = tick.tick() => {
                if let Some(s) = sync(&mut last) {
                    apply(&port, s).await;
                }
            }
            g = master.readable() => {
                let mut g = g?;
                match g.try_io(|f| f.get_ref().read(&mut buf)) {
                    Ok(Ok(0)) => continue,
                    Ok(Ok(n)) => {
                        if let Some(s) = sync(&mut last) {
                            apply(&port, s).await;
                        }
                        port.write(&buf[..n]).await?;
                    }
                    // EIO: no process has the slave open right now; we hold it, so this is
                    // transient.
                    Ok(Err(e)) if e.raw_os_error() == Some(libc::EIO) => {
                        tokio::time::sleep(Duration::from_millis(10)).await;
                    }
                    Ok(Err(e)) => return Err(e.into()),
                    Err(_) => continue,
                }
            }
        }
    }
    to_pty.abort();
    drop(slave);
    Ok(())
}

async fn apply(port: &RemoteSerial, s: LineSettings) {
    match port.set_settings(s).await {
        Ok(()) => tracing::info!("applied {} baud on the remote port", s.baud_rate),
        Err(e) => tracing::warn!("could not apply line settings on the remote port: {e}"),
    }
}
