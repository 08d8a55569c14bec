//! Relay credentials the moq way: moq-auth JWTs signed by a key the relay verifies.
//!
//! - [`load_or_create_key`]: the relay's signing key (a JWK file, HS256, created `0600`).
//! - [`mint`]: a token granting publish/subscribe path patterns, optionally expiring; stock
//!   moq tools (`moq auth verify`) and any relay configured with the same key accept it.
//! - [`Policy`]: what the embedded relay admits: sessions presenting a valid token get what
//!   it grants; anonymous sessions get only the public patterns (nothing by default).
//!
//! Clients present a token as `?jwt=TOKEN` in the relay URL ([`xoq_transport::RelayUrl`]).

use std::fs::OpenOptions;
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use moq_auth::{Algorithm, Claims, Key, KeyId, Pattern, Patterns, Permissions};

use xoq_transport::TransportError;

fn key_err(path: &Path, reason: impl std::fmt::Display) -> TransportError {
    TransportError::RelayAuth(format!("relay key {}: {reason}", path.display()))
}

/// Load the relay signing key at `path`, creating it (HS256, mode `0600`) if absent. The
/// same file signs tokens (`xoq token --key`) and verifies them (`xoq relay --auth-key`).
pub fn load_or_create_key(path: &Path) -> Result<Key, TransportError> {
    match std::fs::read_to_string(path) {
        Ok(text) => {
            if let Ok(meta) = std::fs::metadata(path)
                && meta.permissions().mode() & 0o077 != 0
            {
                tracing::warn!(
                    "relay key {} is readable by other users; run `chmod 600 {}`",
                    path.display(),
                    path.display()
                );
            }
            Key::from_str(&text).map_err(|e| {
                key_err(
                    path,
                    format!("not a JWK key ({e}); move it away to create a new one"),
                )
            })
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                std::fs::create_dir_all(dir).map_err(|e| key_err(path, e))?;
            }
            let key = Key::generate(Algorithm::HS256, Some(KeyId::random()))
                .map_err(|e| key_err(path, e))?;
            let text = key.to_str().map_err(|e| key_err(path, e))?;
            // create_new + mode: never visible with wider permissions, never overwritten.
            match OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(path)
            {
                Ok(mut f) => {
                    f.write_all(text.as_bytes())
                        .and_then(|()| f.sync_all())
                        .map_err(|e| key_err(path, e))?;
                    tracing::info!(path = %path.display(), "created a new relay signing key");
                    Ok(key)
                }
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => load_or_create_key(path),
                Err(e) => Err(key_err(path, e)),
            }
        }
        Err(e) => Err(key_err(path, e)),
    }
}

/// Parse path patterns as moq-relay does, where a bare prefix (`anon`) means its subtree
/// (`anon/**`), the reading XoQ and moq-relay 0.14 users expect.
pub fn patterns(v: &[String]) -> Result<Patterns, TransportError> {
    v.iter()
        .map(|p| {
            let p = p.trim();
            let text = if p.contains('*') || p.is_empty() {
                p.to_string()
            } else {
                format!("{}/**", p.trim_end_matches('/'))
            };
            text.parse::<Pattern>()
                .map_err(|e| TransportError::RelayAuth(format!("bad path pattern {p:?}: {e}")))
        })
        .collect()
}

/// Sign a token granting `publish` and `subscribe` patterns (rooted at `/`), valid for
/// `expires` from now (or without expiry).
pub fn mint(
    key: &Key,
    publish: &[String],
    subscribe: &[String],
    expires: Option<Duration>,
) -> Result<String, TransportError> {
    let now = SystemTime::now();
    let claims = Claims::default()
        .with_publish(patterns(publish)?)
        .with_subscribe(patterns(subscribe)?)
        .with_issued(now)
        .with_expires(expires.map(|d| now + d));
    key.sign(&claims).map_err(|e| {
        TransportError::RelayAuth(format!(
            "cannot sign the token ({e}); give at least one --publish or --subscribe pattern"
        ))
    })
}

/// What the embedded relay admits when it checks tokens.
#[derive(Debug, Clone)]
pub struct Policy {
    /// The key file tokens are verified against (read per session, so a rotated key takes
    /// effect without a restart).
    pub key: PathBuf,
    /// Patterns anonymous sessions may publish to.
    pub public_publish: Vec<String>,
    /// Patterns anonymous sessions may subscribe to.
    pub public_subscribe: Vec<String>,
}

impl Policy {
    /// moq-auth's reference policy (the one `moq auth serve` runs) for these settings.
    pub(crate) fn reference(&self) -> Result<moq_auth::serve::Policy, TransportError> {
        let mut p = moq_auth::serve::Policy::default();
        p.keys = Some(moq_auth::serve::Keys::File(self.key.clone()));
        p.public = Permissions::new(
            patterns(&self.public_publish)?,
            patterns(&self.public_subscribe)?,
        );
        Ok(p)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_created_0600_then_signs_and_verifies() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("relay.jwk");
        let key = load_or_create_key(&path).expect("create");
        let mode = std::fs::metadata(&path).expect("meta").permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let again = load_or_create_key(&path).expect("load");
        let token = mint(
            &key,
            &["anon/arm".into()],
            &["anon/**".into()],
            Some(Duration::from_secs(60)),
        )
        .expect("mint");
        let claims = again.verify(&token).expect("verify with the reloaded key");
        assert_eq!(
            claims.publish,
            patterns(&["anon/arm/**".into()]).expect("p")
        );
        // Another key refuses it.
        let other = load_or_create_key(&dir.path().join("other.jwk")).expect("other");
        assert!(other.verify(&token).is_err());
        // A token that grants nothing cannot be minted.
        assert!(mint(&key, &[], &[], None).is_err());
    }

    #[test]
    fn bare_prefixes_mean_subtrees() {
        let p = patterns(&["anon".into(), "robots/**".into(), "x/y".into()]).expect("patterns");
        let expected: Patterns = ["anon/**", "robots/**", "x/y/**"]
            .iter()
            .map(|s| s.parse::<Pattern>().expect("pattern"))
            .collect();
        assert_eq!(p, expected);
    }
}
