//! Kernel-side impairments in a private network namespace: each test re-executes itself under
//! `unshare(CLONE_NEWNET)`. They need root and nftables/tc, so they are `#[ignore]`d with that
//! reason; scripts/test.sh (root, installs nftables) runs them with `--ignored`, and there a
//! missing tool is a failure, not a silent pass.

mod common;

use std::net::IpAddr;
use std::time::Duration;

use common::{Client, Echo, wait_for};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use xoq_netsim::nft::{self, Nft, Proto};
use xoq_netsim::{Forwarder, netns};

/// Fails with the reason when a namespace or a tool is missing: these tests only run when
/// asked for (`--ignored`), and then they must really run.
fn skip(tools: &[fn() -> Result<(), String>]) -> bool {
    for check in [netns::available as fn() -> Result<(), String>]
        .iter()
        .chain(tools)
    {
        if let Err(why) = check() {
            panic!("this test needs a network namespace and nftables/tc: {why}");
        }
    }
    false
}

/// Runs the calling test in a namespace: true in the parent (the outcome was asserted; return),
/// false in the child (run the body).
fn reexec(test: &str) -> bool {
    assert_eq!(
        netns::current_test().as_deref(),
        Some(test),
        "libtest thread name"
    );
    let outcome = netns::isolated_with_timeout(test, Duration::from_secs(120));
    match outcome.expect("re-running the test in a namespace") {
        Some(outcome) => {
            outcome.assert_success();
            true
        }
        None => false,
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime")
}

#[test]
#[ignore = "needs root, a network namespace and nftables/tc: scripts/test.sh runs it"]
fn nft_loss_on_lo_is_counted_and_heals() {
    if skip(&[nft::available]) || reexec("nft_loss_on_lo_is_counted_and_heals") {
        return;
    }
    assert!(netns::inside());
    runtime().block_on(async {
        let echo = Echo::start("127.0.0.1").await;
        let mut client = Client::new("127.0.0.1").await;
        let table = Nft::new("xoq_loss").expect("nft table");
        table
            .loss(Proto::Udp, echo.addr.port(), 30.0)
            .expect("loss rule");
        let sent = 300u64;
        client.send_many(echo.addr, 0, sent).await;
        // Each datagram is dropped on the way in or out, or echoed back: exactly one of each.
        let mut got = 0u64;
        wait_for("replies + drops to account for every datagram", || {
            got += client.pending().len() as u64;
            got + table.dropped().expect("nft counters") == sent
        })
        .await;
        let dropped = table.dropped().expect("nft counters");
        println!("30 % loss each way: {dropped} of {sent} round trips lost, {got} came back");
        // 1 - 0.7² = 51 % of round trips lost, on average.
        assert!((90..=220).contains(&dropped), "dropped {dropped}");
        assert!(table.list().expect("listing").contains("numgen random"));

        table.heal().expect("heal");
        client.send_many(echo.addr, 1000, 50).await;
        let back: Vec<u64> = client.replies(50).await.into_iter().map(|r| r.0).collect();
        assert_eq!(
            back,
            (1000..1050).collect::<Vec<_>>(),
            "healed: nothing lost"
        );

        table.outage(echo.addr.port()).expect("outage");
        let before = echo.received();
        client.send_many(echo.addr, 2000, 10).await;
        wait_for("10 drops", || table.dropped().expect("counters") == 10).await;
        assert_eq!(
            echo.received(),
            before,
            "outage: nothing reaches the server"
        );
    });
}

#[test]
#[ignore = "needs root, a network namespace and nftables/tc: scripts/test.sh runs it"]
fn isolate_leaves_the_forwarder_as_the_only_path() {
    if skip(&[nft::available]) || reexec("isolate_leaves_the_forwarder_as_the_only_path") {
        return;
    }
    runtime().block_on(async {
        let server: IpAddr = "127.0.0.2".parse().expect("ip");
        let upstream: IpAddr = "127.0.0.3".parse().expect("ip");
        let echo = Echo::start("127.0.0.2").await;
        let fw = Forwarder::builder(echo.addr)
            .upstream_ip(upstream)
            .start()
            .expect("forwarder");
        let table = Nft::new("xoq_iso").expect("nft table");
        table.isolate(server, upstream).expect("isolate");

        let mut client = Client::new("127.0.0.1").await;
        // Direct: dropped before the server sees it.
        client.send(echo.addr, 1, 0).await;
        wait_for("the direct datagram to be dropped", || {
            table.dropped().expect("counters") == 1
        })
        .await;
        assert_eq!(echo.received(), 0);
        // Through the forwarder: fine.
        client.send(fw.local_addr(), 2, 0).await;
        assert_eq!(client.reply().await.0, 2);
        assert!(
            client.pending().is_empty(),
            "the direct datagram never came back"
        );
        assert_eq!(fw.stats().to_client.forwarded_packets, 1);
        assert_eq!(table.dropped().expect("counters"), 1);
        // Heal does not remove the isolation.
        table.heal().expect("heal");
        client.send(echo.addr, 3, 0).await;
        wait_for("the second direct datagram to be dropped", || {
            table.dropped().expect("counters") == 2
        })
        .await;
    });
}

#[test]
#[ignore = "needs root, a network namespace and nftables/tc: scripts/test.sh runs it"]
fn tbf_caps_throughput_on_lo() {
    if skip(&[nft::tc_available]) || reexec("tbf_caps_throughput_on_lo") {
        return;
    }
    const BYTES: usize = 2 << 20;
    const RATE_BPS: u64 = 8_000_000; // 1 MB/s
    nft::tbf("lo", RATE_BPS).expect("tbf on lo");
    let elapsed = runtime().block_on(async {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("listen");
        let addr = listener.local_addr().expect("addr");
        let sink = tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.expect("accept");
            let mut buf = Vec::new();
            s.read_to_end(&mut buf).await.expect("read");
            buf.len()
        });
        let start = tokio::time::Instant::now();
        let mut s = tokio::net::TcpStream::connect(addr).await.expect("connect");
        s.write_all(&vec![7u8; BYTES]).await.expect("write");
        s.shutdown().await.expect("shutdown");
        assert_eq!(sink.await.expect("sink"), BYTES);
        start.elapsed()
    });
    // Lower bound only: at 1 MB/s, 2 MiB minus the burst (≤ 128 KiB) takes at least ~1.9 s.
    println!("2 MiB over lo capped at 8 Mbit/s: {elapsed:?}");
    let floor = Duration::from_secs_f64((BYTES - 128 * 1024) as f64 / (RATE_BPS / 8) as f64);
    assert!(elapsed >= floor, "{elapsed:?} < {floor:?}");
    nft::clear_qdisc("lo").expect("clear");
}

#[test]
#[ignore = "needs root, a network namespace and nftables/tc: scripts/test.sh runs it"]
fn a_wrong_test_path_fails_loudly() {
    if skip(&[]) {
        return;
    }
    if netns::inside() {
        return;
    }
    let outcome = netns::isolated("no_such_test")
        .expect("re-running")
        .expect("outside: an outcome");
    assert!(!outcome.success());
    assert_eq!(outcome.counts(), Some((0, 0)));
}
