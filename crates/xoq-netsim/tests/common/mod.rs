//! Helpers shared by the forwarder and namespace tests: a UDP echo server and a client that
//! numbers its datagrams.
#![allow(dead_code, unreachable_pub)]

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::net::UdpSocket;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::Instant;

/// Generous limit for "this packet should arrive": a failure, not a timing assertion.
pub const PATIENCE: Duration = Duration::from_secs(20);

/// A UDP echo server that records who sent each datagram.
pub struct Echo {
    pub addr: SocketAddr,
    pub peers: Arc<Mutex<Vec<SocketAddr>>>,
    task: JoinHandle<()>,
}

impl Echo {
    pub async fn start(ip: &str) -> Echo {
        let socket = UdpSocket::bind(format!("{ip}:0"))
            .await
            .expect("binding the echo server");
        let addr = socket.local_addr().expect("echo address");
        let peers = Arc::new(Mutex::new(Vec::new()));
        let seen = peers.clone();
        let task = tokio::spawn(async move {
            let mut buf = vec![0u8; 65_535];
            loop {
                let Ok((n, peer)) = socket.recv_from(&mut buf).await else {
                    continue;
                };
                seen.lock().expect("peers").push(peer);
                let _ = socket.send_to(&buf[..n], peer).await;
            }
        });
        Echo { addr, peers, task }
    }

    pub fn received(&self) -> usize {
        self.peers.lock().expect("peers").len()
    }

    pub fn last_peer(&self) -> Option<SocketAddr> {
        self.peers.lock().expect("peers").last().copied()
    }
}

impl Drop for Echo {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A client socket sending numbered datagrams; a background task collects the replies.
pub struct Client {
    pub socket: Arc<UdpSocket>,
    replies: mpsc::UnboundedReceiver<(u64, Instant)>,
    task: JoinHandle<()>,
}

impl Client {
    pub async fn new(ip: &str) -> Client {
        let socket = Arc::new(
            UdpSocket::bind(format!("{ip}:0"))
                .await
                .expect("binding the client"),
        );
        let (tx, replies) = mpsc::unbounded_channel();
        let rx = socket.clone();
        let task = tokio::spawn(async move {
            let mut buf = vec![0u8; 65_535];
            loop {
                let Ok(n) = rx.recv(&mut buf).await else {
                    continue;
                };
                let Some(seq) = buf[..n].get(..8).and_then(|b| b.try_into().ok()) else {
                    continue;
                };
                if tx.send((u64::from_be_bytes(seq), Instant::now())).is_err() {
                    return;
                }
            }
        });
        Client {
            socket,
            replies,
            task,
        }
    }

    pub fn addr(&self) -> SocketAddr {
        self.socket.local_addr().expect("client address")
    }

    /// Sends datagram `seq` (8 bytes of sequence number, then `pad` bytes) to `to`.
    pub async fn send(&self, to: SocketAddr, seq: u64, pad: usize) {
        let mut data = seq.to_be_bytes().to_vec();
        data.resize(8 + pad, 0xa5);
        self.socket.send_to(&data, to).await.expect("client send");
    }

    /// Sends `count` datagrams numbered from `first`, pausing every 32 so no socket buffer
    /// on the way overflows.
    pub async fn send_many(&self, to: SocketAddr, first: u64, count: u64) -> Vec<(u64, Instant)> {
        let mut sent = Vec::new();
        for seq in first..first + count {
            sent.push((seq, Instant::now()));
            self.send(to, seq, 32).await;
            if seq % 32 == 31 {
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        }
        sent
    }

    /// The next reply, or panics after [`PATIENCE`].
    pub async fn reply(&mut self) -> (u64, Instant) {
        tokio::time::timeout(PATIENCE, self.replies.recv())
            .await
            .expect("a reply should arrive")
            .expect("reply channel open")
    }

    /// The next `n` replies, in arrival order.
    pub async fn replies(&mut self, n: usize) -> Vec<(u64, Instant)> {
        let mut v = Vec::with_capacity(n);
        for _ in 0..n {
            v.push(self.reply().await);
        }
        v
    }

    /// Replies already received, without waiting.
    pub fn pending(&mut self) -> Vec<(u64, Instant)> {
        let mut v = Vec::new();
        while let Ok(r) = self.replies.try_recv() {
            v.push(r);
        }
        v
    }
}

impl Drop for Client {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Polls `cond` every 5 ms until it holds; panics with `what` after [`PATIENCE`].
pub async fn wait_for(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + PATIENCE;
    while !cond() {
        assert!(Instant::now() < deadline, "gave up waiting for {what}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}
