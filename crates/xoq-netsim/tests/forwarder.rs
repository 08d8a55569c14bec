//! The forwarder against a UDP echo server on loopback: delivery, delay, jitter, loss,
//! duplication, reordering, rebinding, outages, the queue bound. Timings are only ever
//! asserted as lower bounds.

mod common;

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::time::Duration;

use common::{Client, Echo, wait_for};
use xoq_netsim::{Direction, Error, Forwarder, Impairment, Stats};

/// A forwarder in front of an echo server on 127.0.0.2, upstream sockets on 127.0.0.3.
async fn bench(seed: u64, up: Impairment, down: Impairment) -> (Echo, Forwarder) {
    let echo = Echo::start("127.0.0.2").await;
    let fw = Forwarder::builder(echo.addr)
        .listen("127.0.0.1:0".parse().expect("addr"))
        .upstream_ip("127.0.0.3".parse().expect("ip"))
        .seed(seed)
        .impairment(Direction::ToServer, up)
        .impairment(Direction::ToClient, down)
        .start()
        .expect("starting the forwarder");
    (echo, fw)
}

/// Waits until `sent` client datagrams have gone through both directions (or been dropped),
/// and returns the stats then.
async fn settle(fw: &Forwarder, echo: &Echo, sent: u64) -> Stats {
    wait_for("the forwarder to settle", || {
        let s = fw.stats();
        s.to_server.received_packets == sent
            && s.to_server.queued == 0
            && echo.received() as u64 == s.to_server.forwarded_packets
            && s.to_client.received_packets == echo.received() as u64
            && s.to_client.queued == 0
    })
    .await;
    fw.stats()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forwards_both_ways_for_several_clients() {
    let (echo, fw) = bench(1, Impairment::none(), Impairment::none()).await;
    let mut a = Client::new("127.0.0.1").await;
    let mut b = Client::new("127.0.0.1").await;
    a.send_many(fw.local_addr(), 0, 100).await;
    b.send_many(fw.local_addr(), 1000, 50).await;
    let got_a: Vec<u64> = a.replies(100).await.into_iter().map(|r| r.0).collect();
    let got_b: Vec<u64> = b.replies(50).await.into_iter().map(|r| r.0).collect();
    assert_eq!(
        got_a,
        (0..100).collect::<Vec<_>>(),
        "in order, nothing lost"
    );
    assert_eq!(got_b, (1000..1050).collect::<Vec<_>>());

    let s = settle(&fw, &echo, 150).await;
    assert_eq!(s.clients_seen, 2);
    assert_eq!(s.to_server.forwarded_packets, 150);
    assert_eq!(s.to_client.forwarded_packets, 150);
    assert_eq!(s.to_server.forwarded_bytes, 150 * 40);
    assert_eq!(s.to_server.dropped() + s.to_client.dropped(), 0);
    assert_eq!(s.to_server.send_errors + s.to_client.send_errors, 0);

    // The server saw the forwarder's upstream sockets, one per client, on 127.0.0.3.
    let peers: BTreeSet<SocketAddr> = echo.peers.lock().expect("peers").iter().copied().collect();
    let upstreams: BTreeSet<SocketAddr> = fw.clients().iter().map(|c| c.upstream).collect();
    assert_eq!(peers, upstreams);
    assert_eq!(peers.len(), 2);
    assert!(peers.iter().all(|p| p.ip().to_string() == "127.0.0.3"));
    let clients: BTreeSet<SocketAddr> = fw.clients().iter().map(|c| c.client).collect();
    assert_eq!(clients, BTreeSet::from([a.addr(), b.addr()]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_packet_is_delayed_at_least_the_configured_delay() {
    let delay = Duration::from_millis(30);
    let jitter = Duration::from_millis(10);
    let imp = Impairment::none().with_delay(delay).with_jitter(jitter);
    let (_echo, fw) = bench(2, imp.clone(), imp).await;
    let mut client = Client::new("127.0.0.1").await;
    let mut sent = Vec::new();
    for seq in 0..40 {
        sent.push(tokio::time::Instant::now());
        client.send(fw.local_addr(), seq, 100).await;
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    // Lower bound per packet: both directions at least `delay - jitter` (1 ms for float rounding).
    let floor = 2 * (delay - jitter) - Duration::from_millis(1);
    let mut seqs = BTreeSet::new();
    for (seq, at) in client.replies(40).await {
        let rtt = at - sent[seq as usize];
        assert!(rtt >= floor, "packet {seq}: rtt {rtt:?} < {floor:?}");
        seqs.insert(seq);
    }
    assert_eq!(seqs.len(), 40);
}

/// Sends 500 datagrams through 20 % loss and 10 % duplication (client → server) with `seed`;
/// returns the stats and the sequence numbers that came back, sorted.
async fn lossy_run(seed: u64) -> (Stats, Vec<u64>) {
    let up = Impairment::none().with_loss(20.0).with_duplicate(10.0);
    let (echo, fw) = bench(seed, up, Impairment::none()).await;
    let mut client = Client::new("127.0.0.1").await;
    client.send_many(fw.local_addr(), 0, 500).await;
    let s = settle(&fw, &echo, 500).await;
    let mut got: Vec<u64> = client
        .replies(s.to_client.forwarded_packets as usize)
        .await
        .into_iter()
        .map(|r| r.0)
        .collect();
    got.sort_unstable();
    (s, got)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn loss_and_duplication_are_counted_and_reproducible_with_a_seed() {
    let (s1, got1) = lossy_run(42).await;
    let up = s1.to_server;
    assert_eq!(up.received_packets, 500);
    assert!(
        (60..=140).contains(&up.lost),
        "20 % of 500 lost: {}",
        up.lost
    );
    assert!(
        (15..=80).contains(&up.duplicated),
        "10 % of the rest duplicated: {}",
        up.duplicated
    );
    assert_eq!(up.forwarded_packets, 500 - up.lost + up.duplicated);
    assert_eq!(
        got1.len() as u64,
        up.forwarded_packets,
        "every forwarded copy echoed back"
    );
    let distinct: BTreeSet<u64> = got1.iter().copied().collect();
    assert_eq!(
        distinct.len() as u64,
        500 - up.lost,
        "lost packets never arrive"
    );
    assert_eq!(
        got1.len() - distinct.len(),
        up.duplicated as usize,
        "duplicates arrive twice"
    );

    let (s2, got2) = lossy_run(42).await;
    assert_eq!(s2, s1, "same seed, same decisions");
    assert_eq!(got2, got1);

    let (s3, got3) = lossy_run(43).await;
    assert_ne!(got3, got1, "another seed, other packets lost");
    assert_eq!(s3.to_server.received_packets, 500);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reordering_is_observed_and_preserve_order_prevents_it() {
    let up = Impairment::none().with_reorder(25.0, Duration::from_millis(40));
    let (echo, fw) = bench(3, up, Impairment::none()).await;
    let mut client = Client::new("127.0.0.1").await;
    client.send_many(fw.local_addr(), 0, 100).await;
    let got: Vec<u64> = client.replies(100).await.into_iter().map(|r| r.0).collect();
    let s = settle(&fw, &echo, 100).await;
    assert!(s.to_server.reordered > 0);
    let inversions = got.windows(2).filter(|w| w[0] > w[1]).count();
    assert!(
        inversions > 0,
        "some packets arrive after later ones: {got:?}"
    );
    assert_eq!(got.iter().copied().collect::<BTreeSet<_>>().len(), 100);

    // Jitter reorders packets sent close together, unless preserve_order.
    let jittery = Impairment::none()
        .with_delay(Duration::from_millis(10))
        .with_jitter(Duration::from_millis(10))
        .with_preserve_order(true);
    fw.set_impairment(Direction::ToServer, jittery);
    client.send_many(fw.local_addr(), 100, 100).await;
    let got: Vec<u64> = client.replies(100).await.into_iter().map(|r| r.0).collect();
    assert_eq!(got, (100..200).collect::<Vec<_>>());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rebinding_changes_the_source_port_and_replies_still_arrive() {
    let (echo, fw) = bench(4, Impairment::none(), Impairment::none()).await;
    let mut client = Client::new("127.0.0.1").await;
    client.send(fw.local_addr(), 1, 0).await;
    assert_eq!(client.reply().await.0, 1);
    let before = echo.last_peer().expect("the echo saw the client");

    let after = fw.rebind(client.addr()).expect("rebinding");
    assert_ne!(after, before);
    assert_ne!(after.port(), before.port());
    assert_eq!(after.ip(), before.ip(), "same upstream IP, new port");
    client.send(fw.local_addr(), 2, 0).await;
    assert_eq!(client.reply().await.0, 2);
    assert_eq!(
        echo.last_peer(),
        Some(after),
        "the server sees the new address"
    );
    assert_eq!(fw.clients()[0].upstream, after);

    let all = fw.rebind_all().expect("rebinding all");
    assert_eq!(all.len(), 1);
    assert_ne!(all[0].upstream, after);
    client.send(fw.local_addr(), 3, 0).await;
    assert_eq!(client.reply().await.0, 3);
    assert_eq!(echo.last_peer(), Some(all[0].upstream));

    let s = fw.stats();
    assert_eq!(s.rebinds, 2);
    assert_eq!(s.clients_seen, 1, "a rebinding is not a new client");
    let stranger: SocketAddr = "127.0.0.1:9".parse().expect("addr");
    assert!(matches!(fw.rebind(stranger), Err(Error::UnknownClient(a)) if a == stranger));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outage_drops_everything_silently_then_heals() {
    let (echo, fw) = bench(5, Impairment::none(), Impairment::none()).await;
    let mut client = Client::new("127.0.0.1").await;
    fw.set_outage(true);
    assert!(fw.outage(Direction::ToServer) && fw.outage(Direction::ToClient));
    client.send_many(fw.local_addr(), 0, 20).await;
    let s = settle(&fw, &echo, 20).await;
    assert_eq!(s.to_server.outage_dropped, 20);
    assert_eq!(s.to_server.forwarded_packets, 0);
    assert_eq!(echo.received(), 0, "nothing reached the server");

    fw.set_outage(false);
    client.send(fw.local_addr(), 99, 0).await;
    assert_eq!(client.reply().await.0, 99);
    assert!(
        client.pending().is_empty(),
        "nothing from the outage came back"
    );

    // Packets already in flight when the outage starts are lost too.
    fw.set_delay(Direction::ToServer, Duration::from_secs(2));
    client.send_many(fw.local_addr(), 100, 5).await;
    wait_for("5 packets queued", || {
        fw.stats().to_server.received_packets == 26
    })
    .await;
    fw.set_outage_in(Direction::ToServer, true);
    let queued_during_outage = fw.stats().to_server.queued;
    wait_for("the queue to drain", || fw.stats().to_server.queued == 0).await;
    let s = fw.stats().to_server;
    assert_eq!(s.outage_dropped - 20, 5 - (s.forwarded_packets - 1));
    assert!(s.outage_dropped - 20 >= queued_during_outage);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_queue_drops_new_packets() {
    let forever = Impairment::none().with_delay(Duration::from_secs(3600));
    let echo = Echo::start("127.0.0.1").await;
    let fw = Forwarder::builder(echo.addr)
        .queue_limit(10)
        .impairment(Direction::ToServer, forever)
        .start()
        .expect("starting");
    let client = Client::new("127.0.0.1").await;
    client.send_many(fw.local_addr(), 0, 50).await;
    wait_for("50 packets in", || {
        fw.stats().to_server.received_packets == 50
    })
    .await;
    let s = fw.stats().to_server;
    assert_eq!(s.queued, 10);
    assert_eq!(s.queue_dropped, 40);
    assert_eq!(s.forwarded_packets, 0);
    fw.shutdown();
    assert_eq!(fw.stats().to_server.queued, 0);
}
