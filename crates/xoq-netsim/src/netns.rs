//! Run a test in a private network namespace.
//!
//! Tests are threads of one test binary, so the process cannot `unshare(CLONE_NEWNET)` itself.
//! [`isolated`] instead re-executes the current test binary for one test, with
//! `--exact <test> --nocapture --test-threads=1 --include-ignored`, in a new network namespace
//! (`unshare(CLONE_NEWNET)` in the child before `exec`), with [`MARKER_ENV`] set. In the child,
//! [`isolated`] brings `lo` up and returns `None`, so the test body runs there; in the parent it
//! returns the child's [`Outcome`] to assert on. The namespace (and every firewall rule, qdisc
//! and socket in it) disappears with the child.
//!
//! ```no_run
//! use xoq_netsim::netns;
//!
//! #[test]
//! fn loss_on_lo() {
//!     if let Err(why) = netns::available() {
//!         println!("SKIPPED: {why}");
//!         return;
//!     }
//!     if let Some(outcome) = netns::isolated("loss_on_lo").expect("re-running the test") {
//!         outcome.assert_success();
//!         return;
//!     }
//!     // Here: inside a fresh namespace, only `lo` (up), as root.
//! }
//! ```
//!
//! Needs root (`CAP_SYS_ADMIN`) and iproute2's `ip`; [`available`] says why not.

use std::fmt;
use std::io::Read;
use std::os::unix::process::CommandExt;
use std::process::{Command, ExitStatus, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use crate::error::{Error, Result};

/// Environment variable set (to `1`) in the re-executed test, inside the namespace.
pub const MARKER_ENV: &str = "XOQ_NETSIM_IN_NETNS";

/// How long [`isolated`] waits for the child test before killing it.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(300);

/// Whether this process runs inside a namespace made by [`isolated`].
pub fn inside() -> bool {
    std::env::var_os(MARKER_ENV).is_some_and(|v| v == "1")
}

/// Whether [`isolated`] can work here; the error is the reason, to print when skipping a test.
///
/// Checks that `ip` (iroute2) runs and that a child can enter a new network namespace and bring
/// its `lo` up (which needs root / `CAP_SYS_ADMIN`). The answer is computed once per process.
pub fn available() -> Result<(), String> {
    static ANSWER: OnceLock<Result<(), String>> = OnceLock::new();
    if inside() {
        return Ok(());
    }
    ANSWER.get_or_init(probe).clone()
}

fn probe() -> Result<(), String> {
    match Command::new("ip").arg("-V").output() {
        Ok(o) if o.status.success() => {}
        Ok(o) => return Err(format!("`ip -V` failed ({}): install iproute2", o.status)),
        Err(e) => return Err(format!("iproute2's `ip` not found ({e}): install iproute2")),
    }
    // SAFETY: geteuid has no preconditions.
    let euid = unsafe { libc::geteuid() };
    if euid != 0 {
        return Err(format!(
            "not root (euid {euid}): a private network namespace needs CAP_SYS_ADMIN; run the tests as root"
        ));
    }
    let mut cmd = Command::new("ip");
    cmd.args(["link", "set", "lo", "up"]);
    in_new_netns(&mut cmd);
    match cmd.output() {
        Ok(o) if o.status.success() => Ok(()),
        Ok(o) => Err(format!(
            "`ip link set lo up` in a new network namespace failed ({}): {}",
            o.status,
            String::from_utf8_lossy(&o.stderr).trim()
        )),
        Err(e) => Err(format!(
            "cannot create a network namespace (unshare(CLONE_NEWNET)): {e}"
        )),
    }
}

/// Makes `cmd` start in a new network namespace.
fn in_new_netns(cmd: &mut Command) {
    // SAFETY: the hook runs between fork and exec and only calls unshare(2), which is
    // async-signal-safe, and reads errno.
    unsafe {
        cmd.pre_exec(|| {
            if libc::unshare(libc::CLONE_NEWNET) == 0 {
                Ok(())
            } else {
                Err(std::io::Error::last_os_error())
            }
        });
    }
}

/// Makes `cmd` start in a new network namespace with [`MARKER_ENV`] set, so the child is
/// [`inside`] one and [`nft`](crate::nft) works there. For a program (not a test) that
/// re-executes itself isolated, e.g. `xoq bench link`; the child brings `lo` up itself
/// (`ip link set lo up`). Needs what [`available`] checks.
pub fn isolate_command(cmd: &mut Command) -> &mut Command {
    in_new_netns(cmd);
    cmd.env(MARKER_ENV, "1")
}

/// The libtest name of the running test (`module::test_fn`), read from the thread name libtest
/// gives each test. `None` off a test thread (e.g. inside a spawned thread or Tokio worker).
pub fn current_test() -> Option<String> {
    std::thread::current()
        .name()
        .filter(|n| *n != "main")
        .map(str::to_owned)
}

/// The result of a test re-executed in a namespace by [`isolated`].
#[derive(Debug, Clone)]
pub struct Outcome {
    /// The test path that was run.
    pub test: String,
    /// The child's exit status (`None` when it was killed after the timeout).
    pub status: Option<ExitStatus>,
    /// Everything the child printed on stdout (libtest's report and the test's own output).
    pub stdout: String,
    /// Everything the child printed on stderr.
    pub stderr: String,
}

impl Outcome {
    /// How many tests libtest reported as passed, failed (from its `test result:` line).
    pub fn counts(&self) -> Option<(u32, u32)> {
        let line = self
            .stdout
            .lines()
            .find(|l| l.starts_with("test result:"))?;
        let count = |word: &str| -> Option<u32> {
            line.split(';').find_map(|part| {
                let mut it = part.split_whitespace().rev();
                if it.next() == Some(word) {
                    it.next()?.parse().ok()
                } else {
                    None
                }
            })
        };
        Some((count("passed")?, count("failed")?))
    }

    /// True when the child exited successfully and ran (and passed) exactly one test. A test
    /// path that matches no test is a failure, not a silent pass.
    pub fn success(&self) -> bool {
        self.status.is_some_and(|s| s.success()) && self.counts() == Some((1, 0))
    }

    /// Panics with the child's output unless [`success`](Self::success).
    #[track_caller]
    pub fn assert_success(&self) {
        if !self.success() {
            let why = match (self.status, self.counts()) {
                (None, _) => "timed out".to_owned(),
                (Some(_), Some((0, 0))) => {
                    "matched no test: pass the libtest path (e.g. `module::test_fn`)".to_owned()
                }
                (Some(s), _) => format!("failed ({s})"),
            };
            panic!("isolated test {} {why}\n{self}", self.test);
        }
    }
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "--- isolated `{}` stdout ---", self.test)?;
        writeln!(f, "{}", self.stdout.trim_end())?;
        writeln!(f, "--- isolated `{}` stderr ---", self.test)?;
        write!(f, "{}", self.stderr.trim_end())
    }
}

/// [`isolated_with_timeout`] with [`DEFAULT_TIMEOUT`].
pub fn isolated(test_path: &str) -> Result<Option<Outcome>> {
    isolated_with_timeout(test_path, DEFAULT_TIMEOUT)
}

/// Runs the test `test_path` (its libtest name, e.g. `tests::loss_on_lo`; see
/// [`current_test`]) in a new network namespace, or lets it run if already inside one.
///
/// - Outside ([`MARKER_ENV`] unset): re-executes the current test binary with
///   `--exact <test_path> --nocapture --test-threads=1 --include-ignored` in a new network
///   namespace, waits (killing it after `timeout`), echoes its output to this test's output,
///   and returns `Some(outcome)`.
/// - Inside: brings `lo` up and returns `None`: run the test body.
///
/// Check [`available`] first to skip with a reason rather than fail.
pub fn isolated_with_timeout(test_path: &str, timeout: Duration) -> Result<Option<Outcome>> {
    if inside() {
        run(Command::new("ip").args(["link", "set", "lo", "up"]))?;
        return Ok(None);
    }
    let exe =
        std::env::current_exe().map_err(|e| Error::io("locating the current test binary", e))?;
    let mut cmd = Command::new(&exe);
    cmd.args([
        "--exact",
        test_path,
        "--nocapture",
        "--test-threads=1",
        "--include-ignored",
    ])
    .env(MARKER_ENV, "1")
    .stdin(Stdio::null())
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    in_new_netns(&mut cmd);
    let mut child = cmd.spawn().map_err(|e| {
        Error::io(
            format!("re-running {} in a new network namespace", exe.display()),
            e,
        )
    })?;
    let reader = |pipe: Option<Box<dyn Read + Send>>| {
        std::thread::spawn(move || {
            let mut out = Vec::new();
            if let Some(mut p) = pipe {
                let _ = p.read_to_end(&mut out);
            }
            String::from_utf8_lossy(&out).into_owned()
        })
    };
    let stdout = reader(
        child
            .stdout
            .take()
            .map(|p| Box::new(p) as Box<dyn Read + Send>),
    );
    let stderr = reader(
        child
            .stderr
            .take()
            .map(|p| Box::new(p) as Box<dyn Read + Send>),
    );
    let deadline = Instant::now() + timeout;
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break Some(status),
            Ok(None) if Instant::now() >= deadline => {
                let _ = child.kill();
                let _ = child.wait();
                break None;
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(20)),
            Err(e) => return Err(Error::io("waiting for the isolated test", e)),
        }
    };
    let outcome = Outcome {
        test: test_path.to_owned(),
        status,
        stdout: stdout.join().unwrap_or_default(),
        stderr: stderr.join().unwrap_or_default(),
    };
    // Through libtest's capture: shown with --nocapture or when the calling test fails.
    println!("{outcome}");
    Ok(Some(outcome))
}

/// Runs a command, turning a failure into [`Error::Command`]; returns its stdout.
pub(crate) fn run(cmd: &mut Command) -> Result<String> {
    let line = format!(
        "{} {}",
        cmd.get_program().to_string_lossy(),
        cmd.get_args()
            .map(|a| a.to_string_lossy())
            .collect::<Vec<_>>()
            .join(" ")
    );
    let out = cmd
        .output()
        .map_err(|e| Error::io(format!("running `{line}`"), e))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(Error::Command {
            command: line,
            status: out.status,
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_owned(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::process::ExitStatusExt;

    fn outcome(stdout: &str, code: i32) -> Outcome {
        Outcome {
            test: "t".to_owned(),
            status: Some(ExitStatus::from_raw(code << 8)),
            stdout: stdout.to_owned(),
            stderr: String::new(),
        }
    }

    #[test]
    fn libtest_results_are_parsed() {
        let ok = "running 1 test\ntest t ... ok\n\ntest result: ok. 1 passed; 0 failed; 0 ignored; 0 measured; 3 filtered out; finished in 0.09s\n";
        assert_eq!(outcome(ok, 0).counts(), Some((1, 0)));
        assert!(outcome(ok, 0).success());
        assert!(!outcome(ok, 101).success());
        let none = "running 0 tests\n\ntest result: ok. 0 passed; 0 failed; 0 ignored; 0 measured; 4 filtered out; finished in 0.00s\n";
        assert_eq!(outcome(none, 0).counts(), Some((0, 0)));
        assert!(!outcome(none, 0).success(), "no test ran: not a pass");
        let failed = "test result: FAILED. 0 passed; 1 failed; 0 ignored; 0 measured; 0 filtered out; finished in 0.01s";
        assert_eq!(outcome(failed, 101).counts(), Some((0, 1)));
        assert_eq!(outcome("garbage", 0).counts(), None);
    }

    #[test]
    fn the_test_name_comes_from_the_thread() {
        assert_eq!(
            current_test().as_deref(),
            Some("netns::tests::the_test_name_comes_from_the_thread")
        );
    }
}
