//! The embedded MoQ relay (moq-relay as a library), so users never build moq-rs themselves.

use std::net::SocketAddr;
use std::path::PathBuf;

use url::Url;

use xoq_transport::TransportError;

use crate::auth::Policy;

/// How to run the embedded relay.
#[derive(Debug, Clone)]
#[must_use]
pub struct RelayConfig {
    listen: SocketAddr,
    cert: Option<(PathBuf, PathBuf)>,
    public: Vec<String>,
    public_subscribe: Vec<String>,
    public_publish: Vec<String>,
    auth_key: Option<PathBuf>,
}

impl RelayConfig {
    /// A development relay on `listen`: QUIC (UDP) and HTTP (TCP) share the port, with a
    /// self-signed certificate for `localhost` whose fingerprint is served at
    /// `/certificate.sha256` (what `http://` URLs pin). Anonymous access to `anon/**`.
    pub fn new(listen: SocketAddr) -> Self {
        Self {
            listen,
            cert: None,
            public: vec!["anon/**".into()],
            public_subscribe: Vec::new(),
            public_publish: Vec::new(),
            auth_key: None,
        }
    }

    /// Verify tokens signed by the key in this file (see [`crate::auth`]). Anonymous
    /// sessions then get only what [`public`](Self::public) and its siblings grant
    /// explicitly: nothing unless they are set after this call.
    pub fn auth_key(mut self, key: PathBuf) -> Self {
        self.auth_key = Some(key);
        self.public.clear();
        self
    }

    /// Whether sessions must present a token (anything beyond the public patterns).
    pub fn checks_tokens(&self) -> bool {
        self.auth_key.is_some()
    }

    /// One line per rule, for the relay's start banner.
    pub fn describe(&self) -> Vec<String> {
        let list = |v: &[String]| {
            if v.is_empty() {
                "nothing".to_string()
            } else {
                v.join(", ")
            }
        };
        let mut out = Vec::new();
        match &self.auth_key {
            Some(k) => out.push(format!(
                "auth: tokens (?jwt=) signed by {} are verified; mint them with `xoq token --key {}`",
                k.display(),
                k.display()
            )),
            None => out.push(
                "auth: OPEN: no --auth-key, so anyone who reaches this relay may use the public paths below".into(),
            ),
        }
        let mut publish = self.public.clone();
        publish.extend(self.public_publish.iter().cloned());
        let mut subscribe = self.public.clone();
        subscribe.extend(self.public_subscribe.iter().cloned());
        out.push(format!("anonymous publish: {}", list(&publish)));
        out.push(format!("anonymous subscribe: {}", list(&subscribe)));
        out
    }

    /// A development relay on a free loopback port (tests and benchmarks). QUIC and HTTP need
    /// the same port number, so one is picked by binding TCP and UDP on port 0 first.
    pub fn ephemeral() -> Result<Self, TransportError> {
        Ok(Self::new(free_port(SocketAddr::from(([127, 0, 0, 1], 0)))?))
    }

    /// Serve a real certificate (PEM chain and key) instead of a generated one; clients then
    /// use `https://` URLs.
    pub fn tls(mut self, cert: PathBuf, key: PathBuf) -> Self {
        self.cert = Some((cert, key));
        self
    }

    /// Path patterns anonymous sessions may publish and subscribe to (moq-relay's
    /// `--auth-public`). Replaces the default `anon/**`.
    pub fn public(mut self, patterns: Vec<String>) -> Self {
        self.public = patterns;
        self
    }

    /// Path patterns anonymous sessions may only subscribe to (read-only dashboards).
    pub fn public_subscribe(mut self, patterns: Vec<String>) -> Self {
        self.public_subscribe = patterns;
        self
    }

    /// Path patterns anonymous sessions may only publish to.
    pub fn public_publish(mut self, patterns: Vec<String>) -> Self {
        self.public_publish = patterns;
        self
    }

    /// Load and start the relay in the background.
    pub async fn start(self) -> Result<RelayHandle, TransportError> {
        let err = |e: String| TransportError::RelayStart(e);
        let parse = |v: &[String]| -> Result<Vec<moq_auth::Pattern>, TransportError> {
            v.iter()
                .map(|p| {
                    p.parse::<moq_auth::Pattern>()
                        .map_err(|e| err(format!("bad auth pattern {p:?}: {e}")))
                })
                .collect()
        };
        let listen = if self.listen.port() == 0 {
            free_port(self.listen)?
        } else {
            self.listen
        };
        let mut cfg = moq_relay::Config::default();
        cfg.listen.bind = Some(moq_tokio::listen::Bind::Addr(listen));
        let dev = self.cert.is_none();
        let mut fingerprint = None;
        match &self.cert {
            Some((cert, key)) => {
                cfg.listen.tls.cert = vec![cert.clone()];
                cfg.listen.tls.key = vec![key.clone()];
            }
            None => {
                // Generated here (not by the relay) so we know the fingerprint to print.
                let id = moq_tokio::tls::Identity::generate(["localhost"])
                    .map_err(|e| err(format!("cannot generate a certificate: {e}")))?;
                fingerprint = Some(id.fingerprint().to_string());
                cfg.listen.tls.identity = Some(id);
            }
        }
        // Plain HTTP on the same port (TCP): serves the certificate fingerprint for http://
        // URLs and the relay's HTTP API.
        cfg.web.http.listen = Some(listen);
        let policy = match &self.auth_key {
            Some(key) => {
                // Fail at start, not at the first session, on a key that cannot be used.
                crate::auth::load_or_create_key(key)?;
                let mut publish = self.public.clone();
                publish.extend(self.public_publish.iter().cloned());
                let mut subscribe = self.public.clone();
                subscribe.extend(self.public_subscribe.iter().cloned());
                Some(
                    Policy {
                        key: key.clone(),
                        public_publish: publish,
                        public_subscribe: subscribe,
                    }
                    .reference()?,
                )
            }
            None => {
                cfg.auth.public = parse(&self.public)?;
                cfg.auth.public_subscribe = parse(&self.public_subscribe)?;
                cfg.auth.public_publish = parse(&self.public_publish)?;
                None
            }
        };
        cfg.drain_timeout = std::time::Duration::from_millis(200);
        let mut relay = moq_relay::Relay::load(cfg)
            .await
            .map_err(|e| err(format!("{e:#}")))?;
        if let Some(policy) = policy {
            // No [auth] source in the config: this process answers every admission with
            // moq-auth's reference policy (verify the JWT, else the public rules).
            let mut admissions = relay
                .admissions()
                .ok_or_else(|| err("the relay did not hand over its admissions".into()))?;
            tokio::spawn(async move {
                let policy = std::sync::Arc::new(policy);
                while let Some(admission) = admissions.next().await {
                    let policy = policy.clone();
                    tokio::spawn(async move {
                        let path = admission.request.path.clone();
                        match policy.decide(&admission.request).await {
                            Ok(grant) => admission.grant(moq_auth::lease::Consumer::fixed(grant)),
                            Err(refusal) => {
                                tracing::info!(%path, "relay refused a session: {refusal}");
                                admission.refuse(moq_relay::auth::Error::Refused);
                            }
                        }
                    });
                }
            });
        }
        let quic = relay.quic_addr().map_err(|e| err(e.to_string()))?;
        let ready = relay.ready();
        let trigger = relay.shutdown_trigger().clone();
        let task = tokio::spawn(relay.run());
        ready.wait().await.map_err(|e| err(e.to_string()))?;
        let scheme = if dev { "http" } else { "https" };
        let url = Url::parse(&format!("{scheme}://{quic}/")).map_err(|e| err(e.to_string()))?;
        Ok(RelayHandle {
            url,
            quic,
            fingerprint,
            trigger,
            task,
        })
    }
}

/// A port free for both TCP and UDP on `addr`'s IP: QUIC and the HTTP fingerprint endpoint
/// must share the port number for `http://` URLs to work.
fn free_port(addr: SocketAddr) -> Result<SocketAddr, TransportError> {
    let err = |e: std::io::Error| TransportError::RelayStart(format!("no free port: {e}"));
    for _ in 0..20 {
        let tcp = std::net::TcpListener::bind(SocketAddr::new(addr.ip(), 0)).map_err(err)?;
        let found = tcp.local_addr().map_err(err)?;
        if std::net::UdpSocket::bind(found).is_ok() {
            return Ok(found);
        }
    }
    Err(TransportError::RelayStart(
        "no port free for both TCP and UDP".into(),
    ))
}

/// A running embedded relay. Dropping it keeps the relay running; call [`RelayHandle::shutdown`].
pub struct RelayHandle {
    url: Url,
    quic: SocketAddr,
    fingerprint: Option<String>,
    trigger: moq_relay::shutdown::Trigger,
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
}

impl std::fmt::Debug for RelayHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RelayHandle")
            .field("url", &self.url.as_str())
            .finish()
    }
}

impl RelayHandle {
    /// Base URL clients use (`http://127.0.0.1:4443/` for a development relay).
    pub fn url(&self) -> &Url {
        &self.url
    }

    /// The QUIC socket address.
    pub fn quic_addr(&self) -> SocketAddr {
        self.quic
    }

    /// SHA-256 fingerprint of the generated certificate (hex), if generated.
    pub fn fingerprint(&self) -> Option<&str> {
        self.fingerprint.as_deref()
    }

    /// Drain sessions and stop.
    pub async fn shutdown(self) {
        self.trigger.start();
        let _ = self.task.await;
    }

    /// Wait until the relay stops by itself (an error, or a signal).
    pub async fn wait(self) -> Result<(), TransportError> {
        match self.task.await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(TransportError::RelayStart(format!("{e:#}"))),
            Err(e) => Err(TransportError::RelayStart(e.to_string())),
        }
    }
}
