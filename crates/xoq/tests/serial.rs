//! End-to-end tests of the serial bridge: real iroh, the real embedded relay, ptys as devices,
//! all offline on loopback.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::*;
use iroh::SecretKey;
use xoq::client::ClientError;
use xoq::client::serial::RemoteSerial;
use xoq::relay::RelayConfig;
use xoq::serial::{DataBits, FlowControl, LineSettings, Parity, StopBits};
use xoq::transport::RelayUrl;
use xoq::transport::moq::{MoqSession, Redial};
use xoq::wire::serial::RefuseCode;

const MIB: usize = 1 << 20;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn p2p_pty_echo_1mib_byte_exact() {
    let pty = PtyEcho::new();
    let srv = TestServer::start(&pty.path, false, None).await;
    let port = Arc::new(connect(&srv.addr, &SecretKey::generate()).await);
    let data = Arc::new(random_bytes(MIB));
    let got = echo_exact(&port, data.clone()).await;
    assert!(
        got == *data,
        "1 MiB echo over P2P must be byte-exact and in order"
    );
    assert!(
        srv.server
            .stats()
            .tx_bytes
            .load(std::sync::atomic::Ordering::Relaxed)
            >= MIB as u64
    );
    drop(port);
    srv.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relay_pty_echo_1mib_byte_exact() {
    let pty = PtyEcho::new();
    let relay = RelayConfig::ephemeral()
        .expect("port")
        .start()
        .await
        .expect("relay");
    let root = relay.url().join("anon").expect("url");
    let backend = xoq::serial::backend(&pty.path).expect("backend");
    let server = xoq::serial::SerialServer::builder(backend)
        .relay_writes(true)
        .start()
        .await
        .expect("server");
    let session = MoqSession::connect(&RelayUrl::from_url(root.clone()), Redial::Forever)
        .await
        .expect("server session");
    let srv = server.clone();
    let bridge = tokio::spawn(async move {
        let _ = srv.serve_moq(&session, "echo").await;
    });
    let addr = format!("{}/echo", root.as_str().trim_end_matches('/'));
    let port = Arc::new(
        RemoteSerial::connect(&addr, xoq::client::serial::SerialOptions::keep_settings())
            .await
            .expect("MoQ client connects"),
    );
    let data = Arc::new(random_bytes(MIB));
    let got = echo_exact(&port, data.clone()).await;
    assert!(
        got == *data,
        "1 MiB echo through the relay must be byte-exact and in order"
    );
    // Control operations are P2P-only and say so, instead of pretending to succeed.
    let err = port.set_dtr(true).await.expect_err("no DTR over MoQ");
    assert!(matches!(err, ClientError::Unsupported(_)), "{err}");
    bridge.abort();
    relay.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn line_settings_reach_the_real_tty() {
    let pty = PtyEcho::new();
    let srv = TestServer::start(&pty.path, false, None).await;
    let settings = LineSettings {
        baud_rate: 57_600,
        data_bits: DataBits::Seven,
        parity: Parity::Even,
        stop_bits: StopBits::Two,
        flow_control: FlowControl::None,
    };
    let port = RemoteSerial::connect(&srv.addr, opts(&SecretKey::generate()).settings(settings))
        .await
        .expect("connect");
    let t = termios_of(&pty.path);
    assert_eq!(baud_of(&pty.path), 57_600);
    assert_ne!(t.c_cflag & libc::CSTOPB, 0, "two stop bits");
    // Linux ptys force CS8 and no parity whatever is set, so data bits and parity are
    // checked end to end on a recording device in `framing_reaches_the_device` instead.

    port.set_baud_rate(1_000_000).await.expect("baud change");
    assert_eq!(baud_of(&pty.path), 1_000_000);
    assert_eq!(port.settings().map(|s| s.baud_rate), Some(1_000_000));

    // A pty has no modem lines: the client gets the device's error, the session survives.
    let err = port.set_dtr(true).await.expect_err("DTR on a pty fails");
    assert!(matches!(err, ClientError::Device(_)), "{err}");
    port.clear(xoq::serial::ClearBuffer::All)
        .await
        .expect("clear");
    port.drain().await.expect("drain");
    let port = Arc::new(port);
    let got = echo_exact(&port, Arc::new(b"still alive".to_vec())).await;
    assert_eq!(got, b"still alive");
    srv.stop().await;
}

/// A simulated device that records the line settings it is given.
struct Recorder(Arc<std::sync::Mutex<Vec<LineSettings>>>);

impl xoq::device::serial::SimEngine for Recorder {
    fn write(&mut self, _now: Duration, bytes: &[u8], out: &mut Vec<u8>) {
        out.extend_from_slice(bytes);
    }
    fn set_host_settings(&mut self, s: &LineSettings) {
        if let Ok(mut v) = self.0.lock() {
            v.push(*s);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn framing_reaches_the_device() {
    let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
    let rec = Recorder(seen.clone());
    let backend = Box::new(xoq::device::serial::SimBackend::new(
        "sim:recorder",
        move || rec,
    ));
    let server = xoq::serial::SerialServer::builder(backend)
        .start()
        .await
        .expect("server");
    let ep = xoq::transport::p2p::EndpointBuilder::new()
        .offline(true)
        .alpns(vec![xoq::wire::serial::ALPN.to_vec()])
        .spawn()
        .await
        .expect("endpoint");
    let addr = format!("{}@{}", ep.id(), ep.bound_sockets()[0]);
    let router = iroh::protocol::Router::builder(ep)
        .accept(xoq::wire::serial::ALPN, server)
        .spawn();
    let want = LineSettings {
        baud_rate: 250_000,
        data_bits: DataBits::Seven,
        parity: Parity::Odd,
        stop_bits: StopBits::Two,
        flow_control: FlowControl::Hardware,
    };
    let port = RemoteSerial::connect(&addr, opts(&SecretKey::generate()).settings(want))
        .await
        .expect("connect");
    assert_eq!(
        port.settings(),
        Some(want),
        "server confirms what it applied"
    );
    assert_eq!(seen.lock().expect("lock").last(), Some(&want));
    let _ = router.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn second_client_is_refused_with_the_holder_named() {
    let srv = TestServer::start("sim:echo", false, None).await;
    let a = SecretKey::generate();
    let first = connect(&srv.addr, &a).await;
    let err = RemoteSerial::connect(&srv.addr, opts(&SecretKey::generate()))
        .await
        .expect_err("second client must be refused");
    match &err {
        ClientError::Refused { code, message } => {
            assert_eq!(*code, RefuseCode::Busy);
            assert!(message.contains("busy (held by"), "{message}");
            assert!(message.contains(&a.public().to_string()), "{message}");
        }
        e => panic!("expected a busy refusal, got {e}"),
    }
    // The first client is unaffected.
    let first = Arc::new(first);
    assert_eq!(
        echo_exact(&first, Arc::new(b"mine".to_vec())).await,
        b"mine"
    );
    drop(first);
    srv.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn takeover_gives_the_port_to_the_newest_client() {
    let srv = TestServer::start("sim:echo", true, None).await;
    let old = Arc::new(connect(&srv.addr, &SecretKey::generate()).await);
    let newer = Arc::new(connect(&srv.addr, &SecretKey::generate()).await);
    assert_eq!(
        echo_exact(&newer, Arc::new(b"new owner".to_vec())).await,
        b"new owner"
    );
    let mut buf = [0u8; 8];
    let err = tokio::time::timeout(Duration::from_secs(5), old.read(&mut buf))
        .await
        .expect("old client is told, not left hanging")
        .expect_err("old session ended");
    assert!(err.to_string().contains("took over"), "{err}");
    srv.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn allowlist_refuses_unlisted_clients() {
    let allowed = SecretKey::generate();
    let srv = TestServer::start("sim:echo", false, Some(vec![allowed.public()])).await;
    let err = RemoteSerial::connect(&srv.addr, opts(&SecretKey::generate()))
        .await
        .expect_err("unlisted client must be refused");
    assert!(err.to_string().contains("not allowed"), "{err}");
    assert!(
        srv.server.controller().is_none(),
        "a refused client never held the port"
    );
    let ok = Arc::new(connect(&srv.addr, &allowed).await);
    assert_eq!(
        echo_exact(&ok, Arc::new(b"listed".to_vec())).await,
        b"listed"
    );
    srv.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn device_unplugged_and_replugged_is_reopened() {
    let dir = tempfile::tempdir().expect("tmp");
    let link = dir.path().join("ttyROBOT");
    let pty1 = PtyEcho::new();
    std::os::unix::fs::symlink(&pty1.path, &link).expect("symlink");
    let srv = TestServer::start(link.to_str().expect("utf8"), false, None).await;
    let port = Arc::new(connect(&srv.addr, &SecretKey::generate()).await);
    assert_eq!(
        echo_exact(&port, Arc::new(b"before".to_vec())).await,
        b"before"
    );

    pty1.unplug();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let pty2 = PtyEcho::new();
    std::fs::remove_file(&link).expect("rm link");
    std::os::unix::fs::symlink(&pty2.path, &link).expect("relink");

    // Writes while the device is away are discarded; retry until the reopened device echoes.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let mut buf = [0u8; 64];
    loop {
        assert!(
            tokio::time::Instant::now() < deadline,
            "device was not reopened"
        );
        port.write(b"after")
            .await
            .expect("session survives the unplug");
        if let Ok(Ok(n)) =
            tokio::time::timeout(Duration::from_millis(300), port.read(&mut buf)).await
            && (buf[..n].ends_with(b"after") || &buf[..n] == b"after")
        {
            break;
        }
    }
    drop(pty2);
    srv.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_survives_client_kill9_and_serves_the_next() {
    use std::io::Write;
    let home = tempfile::tempdir().expect("home");
    let srv = TestServer::start("sim:echo", false, None).await;
    let key_path = home.path().join("client.key");
    let key = xoq::transport::key::load_or_create(&key_path).expect("key");

    let mut child = std::process::Command::new(xoq_bin())
        .args([
            "serial-client",
            &srv.addr,
            "--key",
            key_path.to_str().expect("utf8"),
        ])
        .env("XOQ_OFFLINE", "1")
        .env("XOQ_HOME", home.path())
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("spawn serial-client");
    let mut stdin = child.stdin.take().expect("stdin");
    let mut stdout = child.stdout.take().expect("stdout");
    // Wait until the CLI client holds the port, then check its echo path.
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while srv.server.controller().is_none() {
        assert!(
            std::time::Instant::now() < deadline,
            "serial-client never connected"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    stdin.write_all(b"ping\n").expect("stdin");
    let echoed = tokio::task::spawn_blocking(move || {
        use std::io::Read;
        let mut b = [0u8; 5];
        stdout.read_exact(&mut b).map(|_| b)
    })
    .await
    .expect("join")
    .expect("echo through the CLI client");
    assert_eq!(&echoed, b"ping\n");

    // kill -9: no goodbye, the QUIC connection just goes silent.
    child.kill().expect("SIGKILL");
    let _ = child.wait();

    // The same identity reconnecting replaces its stale session at once.
    let again = Arc::new(connect(&srv.addr, &key).await);
    assert_eq!(
        echo_exact(&again, Arc::new(b"back".to_vec())).await,
        b"back"
    );
    drop(again);

    // And a different client gets the port once the old sessions are gone.
    let other = SecretKey::generate();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    let port = loop {
        match RemoteSerial::connect(&srv.addr, opts(&other)).await {
            Ok(p) => break Arc::new(p),
            Err(ClientError::Refused {
                code: RefuseCode::Busy,
                ..
            }) if tokio::time::Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(200)).await
            }
            Err(e) => panic!("next client failed: {e}"),
        }
    };
    assert_eq!(echo_exact(&port, Arc::new(b"next".to_vec())).await, b"next");
    srv.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_server_prints_addresses_and_creates_a_0600_key() {
    use std::os::unix::fs::PermissionsExt;
    let home = tempfile::tempdir().expect("home");
    let key = home.path().join("keys").join("server.key");
    let (mut child, lines) = spawn_cli(
        &[
            "serial-server",
            "sim:echo",
            "115200",
            "--offline",
            "--key",
            key.to_str().expect("utf8"),
        ],
        home.path(),
    );
    let mode = std::fs::metadata(&key)
        .expect("key created")
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(mode, 0o600, "key files are private");
    let id = banner_value(&lines, "id");
    assert_eq!(id.len(), 1, "{lines:?}");
    let addrs = banner_value(&lines, "address");
    let addr = addrs
        .iter()
        .find(|a| a.contains("@127.0.0.1:"))
        .unwrap_or_else(|| panic!("a loopback address is printed: {lines:?}"))
        .to_string();
    assert!(addr.starts_with(id[0]));

    let out = std::process::Command::new(xoq_bin())
        .args(["id", "--key", key.to_str().expect("utf8")])
        .output()
        .expect("xoq id");
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), id[0]);

    let port = Arc::new(connect(&addr, &SecretKey::generate()).await);
    assert_eq!(echo_exact(&port, Arc::new(b"cli".to_vec())).await, b"cli");
    let _ = child.kill();
    let _ = child.wait();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serial_pty_serves_a_plain_program_and_propagates_baud() {
    let home = tempfile::tempdir().expect("home");
    let pty = PtyEcho::new();
    let srv = TestServer::start(&pty.path, false, None).await;
    let link = home.path().join("ttyXOQ");
    let (mut child, lines) = spawn_cli(
        &[
            "serial-pty",
            &srv.addr,
            "--link",
            link.to_str().expect("utf8"),
        ],
        home.path(),
    );
    assert!(lines.iter().any(|l| l.starts_with("link: ")), "{lines:?}");
    // A plain Python program: termios and os only, no xoq.
    let script = r#"
import os, sys, termios, tty
fd = os.open(sys.argv[1], os.O_RDWR | os.O_NOCTTY)
tty.setraw(fd)
attrs = termios.tcgetattr(fd)
attrs[4] = attrs[5] = termios.B57600
termios.tcsetattr(fd, termios.TCSANOW, attrs)
msg = b"hello through a pty " * 50
os.write(fd, msg)
got = b""
while len(got) < len(msg):
    got += os.read(fd, 4096)
assert got == msg, got
print("OK")
"#;
    let out = tokio::task::spawn_blocking({
        let link = link.clone();
        move || {
            std::process::Command::new("python3")
                .args(["-c", script, link.to_str().expect("utf8")])
                .output()
                .expect("python3")
        }
    })
    .await
    .expect("join");
    assert!(
        out.status.success(),
        "python through the pty failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "OK");
    // The program's termios change reached the real device on the server.
    assert_eq!(baud_of(&pty.path), 57_600);
    let _ = child.kill();
    let _ = child.wait();
    srv.stop().await;
}

#[test]
fn demo_self_check_passes() {
    let home = tempfile::tempdir().expect("home");
    let out = std::process::Command::new(xoq_bin())
        .args(["demo", "--check", "--listen", "127.0.0.1:0"])
        .env("XOQ_OFFLINE", "1")
        .env("XOQ_HOME", home.path())
        .output()
        .expect("xoq demo");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "demo failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("P2P  ok   6/6 servos"), "{stdout}");
    assert!(stdout.contains("MoQ  ok   6/6 servos"), "{stdout}");
    assert!(
        stdout.contains("P2P  ok   microphone: 240 ms of the 440 Hz tone, exact and continuous"),
        "{stdout}"
    );
}

/// Files that match [`key_material`] on purpose, with the reason. Empty: nothing in the
/// tree needs it today.
const KEY_LOOKALIKES: &[(&str, &str)] = &[];

/// Why `text` (the content of `path`) looks like a secret key, if it does.
fn key_material(path: &str, text: &str) -> Option<&'static str> {
    // An endpoint identity: 64 hex characters (`xoq_transport::key`).
    let t = text.trim();
    if t.len() == 64 && t.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Some("a 64-hex secret (an endpoint key file)");
    }
    // PEM: `-----BEGIN PRIVATE KEY-----`, `… RSA PRIVATE KEY-----`, `… OPENSSH PRIVATE KEY-----`.
    if text.lines().any(|l| {
        let l = l.trim();
        l.starts_with("-----BEGIN ") && l.ends_with("PRIVATE KEY-----")
    }) {
        return Some("a PEM private key block");
    }
    // A JWK with secret material: `k` (symmetric, the relay's signing key) or `d` (private
    // part of an EC/RSA/OKP key), as a whole JSON file or embedded in another file.
    if path.ends_with(".json") || path.ends_with(".jwk") || text.contains("\"kty\"") {
        let mut objects = Vec::new();
        if let Ok(v) = serde_json::from_str::<serde_json::Value>(text) {
            objects.push(v);
        }
        for (i, _) in text.match_indices("\"kty\"") {
            if let Some(v) = enclosing_json_object(text, i) {
                objects.push(v);
            }
        }
        if objects.iter().any(has_secret_jwk) {
            return Some("a JWK with a secret (\"k\" or \"d\")");
        }
    }
    None
}

/// Whether `v` is, or contains, a JWK (an object with `kty`) holding a non-empty `k` or `d`.
fn has_secret_jwk(v: &serde_json::Value) -> bool {
    match v {
        serde_json::Value::Object(o) => {
            let secret = |f: &str| {
                o.get(f)
                    .and_then(|x| x.as_str())
                    .is_some_and(|s| !s.is_empty())
            };
            (o.contains_key("kty") && (secret("k") || secret("d")))
                || o.values().any(has_secret_jwk)
        }
        serde_json::Value::Array(a) => a.iter().any(has_secret_jwk),
        _ => false,
    }
}

/// The innermost JSON object around byte `at` of `text`, if it parses.
fn enclosing_json_object(text: &str, at: usize) -> Option<serde_json::Value> {
    let open = text[..at].rfind('{')?;
    let mut depth = 0usize;
    for (i, c) in text[open..].char_indices() {
        match c {
            '{' => depth += 1,
            '}' => {
                depth -= 1;
                if depth == 0 {
                    return serde_json::from_str(&text[open..=open + i]).ok();
                }
            }
            _ => {}
        }
    }
    None
}

/// A JWK as JSON text, built at run time so that this file does not itself contain one.
fn jwk(fields: &[(&str, &str)]) -> String {
    let o: serde_json::Map<String, serde_json::Value> = fields
        .iter()
        .map(|(k, v)| ((*k).to_string(), serde_json::Value::from(*v)))
        .collect();
    serde_json::Value::Object(o).to_string()
}

#[test]
fn key_material_is_recognised_by_content() {
    let hex = "3f".repeat(32);
    assert!(key_material("a.txt", &format!("{hex}\n")).is_some());
    assert!(key_material("a.txt", &"3f".repeat(31)).is_none());
    let pem = "-----BEGIN EC PRIVATE KEY-----\nMHcCAQEE\n-----END EC PRIVATE KEY-----\n";
    assert!(key_material("x.pem", pem).is_some());
    let public = "-----BEGIN PUBLIC KEY-----\nMFkw\n-----END PUBLIC KEY-----\n";
    assert!(key_material("x.pem", public).is_none());
    let (kty, secret, private) = ("kty", "k", "d");
    let oct = jwk(&[(kty, "oct"), ("alg", "HS256"), (secret, "c2VjcmV0")]);
    assert!(key_material("relay.jwk", &oct).is_some());
    assert!(key_material("notes.md", &format!("key:\n```json\n{oct}\n```\n")).is_some());
    let okp = jwk(&[
        (kty, "OKP"),
        ("crv", "Ed25519"),
        ("x", "11qY"),
        (private, "nWGx"),
    ]);
    let set = format!(r#"{{"keys":[{okp}]}}"#);
    assert!(key_material("keys.json", &set).is_some());
    let public_jwk = jwk(&[(kty, "OKP"), ("crv", "Ed25519"), ("x", "11qY")]);
    assert!(key_material("pub.json", &public_jwk).is_none());
    assert!(key_material("Cargo.lock", "checksum = \"00ff\"\n").is_none());
}

#[test]
fn no_private_key_is_committed() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let out = std::process::Command::new("git")
        .args(["ls-files", "-z", "--cached"])
        .current_dir(&root)
        .output()
        .unwrap_or_else(|e| {
            panic!("cannot run git ({e}): this test needs git and a checkout of the repository")
        });
    assert!(
        out.status.success(),
        "`git ls-files` failed in {} ({}): this test needs a checkout of the repository\n{}",
        root.display(),
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let files: Vec<String> = out
        .stdout
        .split(|&b| b == 0)
        .filter(|f| !f.is_empty())
        .map(|f| String::from_utf8_lossy(f).into_owned())
        .collect();
    assert!(
        files.iter().any(|f| f == "Cargo.toml"),
        "`git ls-files` listed no Cargo.toml: not this repository's checkout"
    );
    let mut found = Vec::new();
    for f in &files {
        if KEY_LOOKALIKES.iter().any(|(p, _)| p == f) {
            continue;
        }
        if f.ends_with(".key") || f.ends_with(".jwk") {
            found.push(format!("{f}: a key file by its name"));
            continue;
        }
        // Unreadable (deleted in the work tree) or binary: not a text key.
        let Ok(text) = std::fs::read_to_string(root.join(f)) else {
            continue;
        };
        if let Some(why) = key_material(f, &text) {
            found.push(format!("{f}: {why}"));
        }
    }
    assert!(
        found.is_empty(),
        "key material in the repository (allowlist a public test vector in KEY_LOOKALIKES, \
         with the reason):\n{}",
        found.join("\n")
    );
    let gitignore = std::fs::read_to_string(root.join(".gitignore")).expect(".gitignore");
    assert!(gitignore.lines().any(|l| l.trim() == "*.key"));
}
