//! Address strings, the same in the CLI, Rust, Python and JavaScript.
//!
//! - `<endpoint-id>`: P2P, located through iroh discovery (not available offline).
//! - `<endpoint-id>@<ip>:<port>`: P2P, dialled directly (LAN, offline, tests).
//! - `<relay-url>/<path>`: MoQ through a relay, e.g. `http://127.0.0.1:4443/anon/xoq-serial`.
//!
//! For MoQ, the last path segment is the broadcast name and everything before it is the
//! relay URL the session connects to (its path is the relay's auth root). So
//! `http://h:4443/anon/xoq-serial` connects to `http://h:4443/anon` and uses broadcasts
//! `xoq-serial/...`, which the relay knows as `anon/xoq-serial/...`.

use std::fmt;
use std::net::SocketAddr;
use std::str::FromStr;

use iroh::EndpointId;
use url::Url;

use crate::TransportError;

/// A parsed address of a remote device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Address {
    /// A P2P endpoint.
    P2p {
        /// The server's endpoint id (public key).
        id: EndpointId,
        /// A direct socket address to dial, skipping discovery.
        direct: Option<SocketAddr>,
    },
    /// A broadcast on a MoQ relay.
    Moq {
        /// The URL a session connects to (scheme, host, port, auth root).
        relay: Url,
        /// Broadcast name under the relay URL's path.
        name: String,
    },
}

impl Address {
    /// Split a relay URL and a broadcast path given separately (server flags `--relay URL
    /// --moq PATH`) the same way a combined address is split.
    pub fn moq(relay: &str, path: &str) -> Result<Address, TransportError> {
        let joined = format!(
            "{}/{}",
            relay.trim_end_matches('/'),
            path.trim_start_matches('/')
        );
        joined.parse()
    }

    /// The full MoQ path of the broadcast on the relay (`anon/xoq-serial`), or `None` for P2P.
    pub fn moq_path(&self) -> Option<String> {
        match self {
            Address::Moq { relay, name } => {
                let root = relay.path().trim_matches('/');
                Some(if root.is_empty() {
                    name.clone()
                } else {
                    format!("{root}/{name}")
                })
            }
            Address::P2p { .. } => None,
        }
    }
}

impl FromStr for Address {
    type Err = TransportError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let input = s.trim();
        let bad = |reason: &str| TransportError::Address {
            input: input.to_string(),
            reason: reason.to_string(),
        };
        if input.starts_with("http://") || input.starts_with("https://") {
            let mut url = Url::parse(input).map_err(|e| bad(&e.to_string()))?;
            if url.host_str().is_none() {
                return Err(bad("the relay URL has no host"));
            }
            let path = url.path().trim_matches('/').to_string();
            if path.is_empty() {
                return Err(bad(
                    "add the broadcast path after the relay URL, e.g. http://127.0.0.1:4443/anon/xoq-serial",
                ));
            }
            let (root, name) = match path.rsplit_once('/') {
                Some((root, name)) => (root.to_string(), name.to_string()),
                None => (String::new(), path),
            };
            url.set_path(&root);
            url.set_query(None);
            url.set_fragment(None);
            return Ok(Address::Moq { relay: url, name });
        }
        let (id_part, direct) = match input.split_once('@') {
            Some((id, sock)) => {
                let sock: SocketAddr = sock
                    .parse()
                    .map_err(|_| bad("after '@' give <ip>:<port>, e.g. 127.0.0.1:9000"))?;
                (id, Some(sock))
            }
            None => (input, None),
        };
        if id_part.len() != 64 || !id_part.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(bad("an endpoint id is 64 hex characters (see `xoq id`)"));
        }
        let id = EndpointId::from_str(id_part).map_err(|e| bad(&e.to_string()))?;
        Ok(Address::P2p { id, direct })
    }
}

impl fmt::Display for Address {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Address::P2p { id, direct: None } => write!(f, "{id}"),
            Address::P2p {
                id,
                direct: Some(sock),
            } => write!(f, "{id}@{sock}"),
            Address::Moq { relay, name } => {
                write!(f, "{}/{}", relay.as_str().trim_end_matches('/'), name)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "ae58ff8833241ac82d6ff7611046ed67b5072d142c588d0063e942d9a75502b6";

    #[test]
    fn p2p_forms() {
        let a: Address = ID.parse().expect("id");
        assert!(matches!(a, Address::P2p { direct: None, .. }));
        assert_eq!(a.to_string(), ID);
        let s = format!("{ID}@127.0.0.1:9000");
        let a: Address = s.parse().expect("id@addr");
        assert_eq!(a.to_string(), s);
        let s6 = format!("{ID}@[::1]:9000");
        assert_eq!(s6.parse::<Address>().expect("v6").to_string(), s6);
    }

    #[test]
    fn moq_forms() {
        let a: Address = "http://127.0.0.1:4443/anon/xoq-serial"
            .parse()
            .expect("moq");
        match &a {
            Address::Moq { relay, name } => {
                assert_eq!(relay.as_str(), "http://127.0.0.1:4443/anon");
                assert_eq!(name, "xoq-serial");
            }
            _ => panic!("not moq"),
        }
        assert_eq!(a.moq_path().as_deref(), Some("anon/xoq-serial"));
        assert_eq!(a.to_string(), "http://127.0.0.1:4443/anon/xoq-serial");
        let b = Address::moq("http://127.0.0.1:4443/", "anon/xoq-serial").expect("split");
        assert_eq!(a, b);
        let top: Address = "https://relay.example:443/robot".parse().expect("top");
        assert_eq!(top.moq_path().as_deref(), Some("robot"));
    }

    #[test]
    fn errors_say_what_to_do() {
        for bad in ["", "abc", "http://127.0.0.1:4443", &format!("{ID}@nope")] {
            let e = bad.parse::<Address>().expect_err(bad).to_string();
            assert!(e.contains("invalid address"), "{e}");
        }
    }
}
