//! The embedded MoQ relay of xoq and its credentials, in their own crate so that a client or a
//! device server never builds a relay server.
//!
//! - [`server`]: moq-relay as a library (`xoq relay`, `xoq demo`, tests), with a development
//!   certificate pinned by fingerprint or a real one.
//! - [`auth`]: moq-auth JWTs: the relay's signing key (created `0600`), minting tokens, and the
//!   admission policy the embedded relay applies.
// Every public item says what it is for: these crates are read from their docs.
#![deny(missing_docs)]
#![cfg_attr(not(test), deny(clippy::unwrap_used))]

pub mod auth;
pub mod server;

pub use server::{RelayConfig, RelayHandle};
