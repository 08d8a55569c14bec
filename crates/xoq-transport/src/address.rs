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
//!
//! A relay address may carry a token, `...?jwt=TOKEN` (the moq tools' convention, checked by
//! the relay), or take it from [`TOKEN_ENV`]. The token is kept apart from the URL
//! ([`RelayUrl`]) so that printing an address or logging it never shows it.

use std::fmt;
use std::net::SocketAddr;
use std::str::FromStr;

use iroh::EndpointId;
use url::Url;

use crate::TransportError;

/// Environment variable with a relay token, used when the relay URL carries no `?jwt=`.
pub const TOKEN_ENV: &str = "XOQ_RELAY_TOKEN";

/// A relay URL (scheme, host, port, auth root) and the token presented to it, kept apart:
/// `Display` and `Debug` never show the token.
#[derive(Clone, PartialEq, Eq)]
pub struct RelayUrl {
    url: Url,
    token: Option<String>,
}

impl RelayUrl {
    /// Parse `http(s)://host:port/root[?jwt=TOKEN]`. Other query parameters are dropped.
    pub fn parse(input: &str) -> Result<Self, TransportError> {
        let bad = |reason: &str| TransportError::Address {
            input: redact(input),
            reason: reason.to_string(),
        };
        if !(input.starts_with("http://") || input.starts_with("https://")) {
            return Err(bad("a relay URL starts with http:// or https://"));
        }
        let url = Url::parse(input).map_err(|e| bad(&e.to_string()))?;
        if url.host_str().is_none() {
            return Err(bad("the relay URL has no host"));
        }
        Ok(Self::from_url(url))
    }

    /// Take the token out of `url`'s query (`jwt=`), keeping the rest of the URL.
    pub fn from_url(mut url: Url) -> Self {
        let token = url
            .query_pairs()
            .find(|(k, v)| k == "jwt" && !v.is_empty())
            .map(|(_, v)| v.into_owned());
        url.set_query(None);
        url.set_fragment(None);
        Self { url, token }
    }

    /// The URL without its token: safe to print.
    pub fn url(&self) -> &Url {
        &self.url
    }

    /// The token given in the URL, else [`TOKEN_ENV`], else none.
    pub fn token(&self) -> Option<String> {
        self.token.clone().or_else(|| {
            std::env::var(TOKEN_ENV)
                .ok()
                .map(|t| t.trim().to_string())
                .filter(|t| !t.is_empty())
        })
    }

    /// Whether a token will be presented (in the URL or the environment).
    pub fn has_token(&self) -> bool {
        self.token().is_some()
    }

    /// The same relay with another auth root (path).
    pub fn with_path(&self, path: &str) -> Self {
        let mut url = self.url.clone();
        url.set_path(path);
        Self {
            url,
            token: self.token.clone(),
        }
    }

    /// The URL to dial: with `?jwt=TOKEN` when there is a token. Never log it.
    pub fn dial_url(&self) -> Url {
        let mut url = self.url.clone();
        if let Some(t) = self.token() {
            url.query_pairs_mut().append_pair("jwt", &t);
        }
        url
    }
}

impl fmt::Display for RelayUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.url.as_str().trim_end_matches('/'))
    }
}

impl fmt::Debug for RelayUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RelayUrl")
            .field("url", &self.url.as_str())
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

/// `input` with any query removed: addresses in error messages never show a token.
fn redact(input: &str) -> String {
    match input.split_once('?') {
        Some((head, _)) => format!("{head}?<redacted>"),
        None => input.to_string(),
    }
}

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
    /// A service of a deployed machine, by name: `<machine-id>[@<ip>:<port>]/<service>`.
    /// The machine service (see `xoq_wire::machine`) says which endpoint serves it; P2P
    /// dials resolve it first (see [`crate::machine::resolve`]).
    Service {
        /// The machine service's endpoint id.
        machine: EndpointId,
        /// A direct socket address of the machine service.
        direct: Option<SocketAddr>,
        /// The service's name on that machine.
        service: String,
    },
    /// A broadcast on a MoQ relay.
    Moq {
        /// The relay a session connects to (scheme, host, port, auth root, token).
        relay: RelayUrl,
        /// Broadcast name under the relay URL's path.
        name: String,
    },
}

impl Address {
    /// Split a relay URL and a broadcast path given separately (server flags `--relay URL
    /// --moq PATH`) the same way a combined address is split.
    pub fn moq(relay: &str, path: &str) -> Result<Address, TransportError> {
        let base = RelayUrl::parse(relay)?;
        let joined = format!(
            "{}/{}",
            base.url().as_str().trim_end_matches('/'),
            path.trim_start_matches('/')
        );
        match joined.parse()? {
            Address::Moq { relay, name } => Ok(Address::Moq {
                relay: RelayUrl {
                    token: base.token,
                    ..relay
                },
                name,
            }),
            p2p => Ok(p2p),
        }
    }

    /// The full MoQ path of the broadcast on the relay (`anon/xoq-serial`), or `None` for P2P.
    pub fn moq_path(&self) -> Option<String> {
        match self {
            Address::Moq { relay, name } => {
                let root = relay.url().path().trim_matches('/');
                Some(if root.is_empty() {
                    name.clone()
                } else {
                    format!("{root}/{name}")
                })
            }
            Address::P2p { .. } | Address::Service { .. } => None,
        }
    }
}

impl FromStr for Address {
    type Err = TransportError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let input = s.trim();
        let bad = |reason: &str| TransportError::Address {
            input: redact(input),
            reason: reason.to_string(),
        };
        if input.starts_with("http://") || input.starts_with("https://") {
            let RelayUrl { mut url, token } = RelayUrl::parse(input)?;
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
            return Ok(Address::Moq {
                relay: RelayUrl { url, token },
                name,
            });
        }
        if let Some((machine, service)) = input.split_once('/') {
            let machine = match machine.parse::<Address>()? {
                Address::P2p { id, direct } => (id, direct),
                _ => return Err(bad("give <machine-id>[@<ip>:<port>]/<service>")),
            };
            let ok = !service.is_empty()
                && service.len() <= 64
                && service
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
            if !ok {
                return Err(bad(
                    "a service name is letters, digits, '-', '_' or '.' (see `xoq ls <machine>`)",
                ));
            }
            return Ok(Address::Service {
                machine: machine.0,
                direct: machine.1,
                service: service.to_string(),
            });
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
            Address::Service {
                machine,
                direct: None,
                service,
            } => write!(f, "{machine}/{service}"),
            Address::Service {
                machine,
                direct: Some(sock),
                service,
            } => write!(f, "{machine}@{sock}/{service}"),
            // Never the token: addresses are printed and logged.
            Address::Moq { relay, name } => write!(f, "{relay}/{name}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "ae58ff8833241ac82d6ff7611046ed67b5072d142c588d0063e942d9a75502b6";

    #[test]
    fn services_of_a_machine_parse_and_print() {
        let a: Address = format!("{ID}/so101").parse().expect("service");
        assert!(matches!(&a, Address::Service { direct: None, service, .. } if service == "so101"));
        assert_eq!(a.to_string(), format!("{ID}/so101"));
        let b: Address = format!("{ID}@127.0.0.1:4700/can-can0")
            .parse()
            .expect("service");
        assert_eq!(b.to_string(), format!("{ID}@127.0.0.1:4700/can-can0"));
        assert_eq!(b.moq_path(), None);
        for bad in [
            format!("{ID}/"),
            format!("{ID}/a b"),
            format!("{ID}/a/b"),
            "notanid/so101".to_string(),
            format!("{ID}@nothost/so101"),
        ] {
            let e = bad.parse::<Address>().expect_err(&bad);
            assert!(e.to_string().contains("<machine-id>/<service>"), "{e}");
        }
    }

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
                assert_eq!(relay.url().as_str(), "http://127.0.0.1:4443/anon");
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
    fn tokens_are_kept_apart_and_never_printed() {
        let a: Address = "http://127.0.0.1:4443/anon/arm?jwt=SECRET"
            .parse()
            .expect("moq with token");
        let Address::Moq { relay, name } = &a else {
            panic!("not moq")
        };
        assert_eq!(name, "arm");
        assert_eq!(relay.token().as_deref(), Some("SECRET"));
        assert_eq!(
            relay.dial_url().as_str(),
            "http://127.0.0.1:4443/anon?jwt=SECRET"
        );
        assert!(!a.to_string().contains("SECRET"), "{a}");
        assert!(!format!("{a:?}").contains("SECRET"));
        let b = Address::moq("http://127.0.0.1:4443?jwt=T2", "anon/arm").expect("flags");
        let Address::Moq { relay, .. } = &b else {
            panic!("not moq")
        };
        assert_eq!(relay.token().as_deref(), Some("T2"));
        assert_eq!(b.to_string(), "http://127.0.0.1:4443/anon/arm");
        let e = "http://?jwt=SECRET"
            .parse::<Address>()
            .expect_err("no host");
        assert!(!e.to_string().contains("SECRET"), "{e}");
    }

    #[test]
    fn errors_say_what_to_do() {
        for bad in ["", "abc", "http://127.0.0.1:4443", &format!("{ID}@nope")] {
            let e = bad.parse::<Address>().expect_err(bad).to_string();
            assert!(e.contains("invalid address"), "{e}");
        }
    }
}
