//! A link-fault test bench for xoq's QUIC, iroh and MoQ traffic, on loopback.
//!
//! - [`Forwarder`]: a user-space UDP forwarder (this kernel has no netem) with per-direction
//!   delay, jitter, loss, duplication, reordering, outages and NAT rebinding, changeable at
//!   runtime, seeded, with counters.
//! - [`netns`]: run a test in a private network namespace by re-executing the test binary under
//!   `unshare(CLONE_NEWNET)`, so firewall rules cannot touch the host.
//! - [`nft`]: nftables and `tc` wrappers for kernel-side loss, outages, bandwidth caps and the
//!   rule that stops iroh from going around the forwarder.
//!
//! A typical setup (see the crate's tests): the server binds
//! `127.0.0.2`, the forwarder listens on `127.0.0.1:0` with upstream sockets on `127.0.0.3`,
//! the client dials the forwarder's address; inside a namespace,
//! [`Nft::isolate`](nft::Nft::isolate)`(127.0.0.2, 127.0.0.3)` drops any direct path.
//!
//! ```no_run
//! # async fn demo() -> Result<(), xoq_netsim::Error> {
//! use std::time::Duration;
//! use xoq_netsim::{Direction, Forwarder, Impairment};
//!
//! let server = "127.0.0.2:4433".parse().expect("address");
//! let fw = Forwarder::builder(server)
//!     .upstream_ip("127.0.0.3".parse().expect("ip"))
//!     .seed(7)
//!     .impairment_both(Impairment::none().with_delay(Duration::from_millis(20)).with_loss(1.0))
//!     .start()?;
//! // … the client dials fw.local_addr() …
//! fw.set_outage(true); // a silent partition
//! fw.set_outage(false);
//! fw.rebind_all()?; // NAT rebinding: QUIC must migrate
//! assert!(fw.stats().to_server.forwarded_packets > 0);
//! # Ok(()) }
//! ```
#![deny(missing_docs)]
#![cfg_attr(not(test), deny(clippy::unwrap_used))]

mod error;
mod forwarder;
mod impairment;
pub mod netns;
pub mod nft;
mod stats;

pub use error::{Error, Result};
pub use forwarder::{ClientInfo, DEFAULT_QUEUE_LIMIT, DEFAULT_SEED, Forwarder, ForwarderBuilder};
pub use impairment::{Direction, Impairment, Profile};
pub use stats::{DirectionStats, Stats};
