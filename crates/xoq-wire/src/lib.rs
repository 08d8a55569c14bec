//! Wire codecs of xoq: pure functions over bytes, one module per service.
//!
//! Nothing here does I/O. Every decoder is *total*: on any input it returns a value or a
//! [`DecodeError`], never panics, and never allocates more than the input it was given
//! (lengths are checked against the bytes present and against per-message maximums before
//! anything is allocated). Stream adapters loop "decode → [`DecodeError::Short`] → read more".
//!
//! The byte layout of every message is documented in `docs/protocol.md`.
// Every public item says what it is for: these crates are read from their docs.
#![deny(missing_docs)]
#![cfg_attr(not(test), deny(clippy::unwrap_used))]

pub mod audio;
pub mod camera;
pub mod can;
pub mod coding;
pub mod damiao;
pub mod depth;
pub mod feetech;
pub mod frame;
pub mod machine;
pub mod observe;
pub mod refuse;
pub mod relay;
pub mod serial;

pub use coding::DecodeError;
pub use frame::{Frame, MAX_PAYLOAD};
pub use refuse::RefuseCode;
