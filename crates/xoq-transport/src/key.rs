//! Endpoint identities on disk.
//!
//! A key file holds the 32-byte ed25519 secret as 64 hex characters. It is created with mode
//! `0600` (readable by its owner only) and never overwritten: losing it changes the endpoint id
//! every client has configured.

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use iroh::SecretKey;

use crate::TransportError;

/// Environment variable overriding the xoq configuration directory (default `~/.config/xoq`).
pub const HOME_ENV: &str = "XOQ_HOME";

/// The directory for keys and configuration: `$XOQ_HOME`, else `$XDG_CONFIG_HOME/xoq`, else
/// `~/.config/xoq`.
pub fn xoq_home() -> PathBuf {
    if let Some(h) = std::env::var_os(HOME_ENV) {
        return PathBuf::from(h);
    }
    if let Some(x) = std::env::var_os("XDG_CONFIG_HOME") {
        return PathBuf::from(x).join("xoq");
    }
    let home = std::env::var_os("HOME").map_or_else(|| PathBuf::from("."), PathBuf::from);
    home.join(".config").join("xoq")
}

/// Default key path for a named identity, e.g. `serial-ttyUSB0` → `~/.config/xoq/serial-ttyUSB0.key`.
/// Characters other than ASCII alphanumerics, `-` and `_` become `_`.
pub fn default_key_path(name: &str) -> PathBuf {
    let clean: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect();
    xoq_home().join(format!("{}.key", clean.trim_matches('_')))
}

/// Load the key at `path`, creating it (mode `0600`, parent directories `0700`) if absent.
pub fn load_or_create(path: &Path) -> Result<SecretKey, TransportError> {
    let err = |source| TransportError::Key {
        path: path.to_path_buf(),
        source,
    };
    match fs::read_to_string(path) {
        Ok(text) => {
            warn_if_readable_by_others(path);
            parse(text.trim()).ok_or_else(|| TransportError::BadKey {
                path: path.to_path_buf(),
            })
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                fs::create_dir_all(dir).map_err(err)?;
                // Best effort: tighten a directory we just created, leave an existing one alone.
                let _ = fs::set_permissions(dir, fs::Permissions::from_mode(0o700));
            }
            let key = SecretKey::generate();
            // Written whole under a private name (create_new + mode: never visible with wider
            // permissions), then linked into place: a concurrent reader sees no file or the
            // whole key, never an empty one, and a concurrent creator cannot be overwritten.
            let tmp = path.with_extension(format!(
                "key.{}.{:x}.tmp",
                std::process::id(),
                rand::random::<u64>()
            ));
            let written = (|| {
                let mut f = OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .mode(0o600)
                    .open(&tmp)?;
                writeln!(f, "{}", hex::encode(key.to_bytes()))?;
                f.sync_all()
            })();
            if let Err(e) = written {
                let _ = fs::remove_file(&tmp);
                return Err(err(e));
            }
            let linked = fs::hard_link(&tmp, path);
            let _ = fs::remove_file(&tmp);
            match linked {
                Ok(()) => {
                    tracing::info!(path = %path.display(), "created a new endpoint key");
                    Ok(key)
                }
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => load_or_create(path),
                Err(e) => Err(err(e)),
            }
        }
        Err(e) => Err(err(e)),
    }
}

fn parse(text: &str) -> Option<SecretKey> {
    let bytes = hex::decode(text).ok()?;
    let arr: [u8; 32] = bytes.try_into().ok()?;
    Some(SecretKey::from_bytes(&arr))
}

fn warn_if_readable_by_others(path: &Path) {
    if let Ok(meta) = fs::metadata(path)
        && meta.permissions().mode() & 0o077 != 0
    {
        tracing::warn!(
            path = %path.display(),
            "key file is readable by other users; run `chmod 600 {}`",
            path.display()
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn created_0600_and_stable() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("sub").join("k.key");
        let a = load_or_create(&path).expect("create");
        let mode = fs::metadata(&path).expect("meta").permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let b = load_or_create(&path).expect("load");
        assert_eq!(a.public(), b.public());
        assert_eq!(fs::read_to_string(&path).expect("read").trim().len(), 64);
    }

    #[test]
    fn concurrent_creators_and_readers_all_get_the_one_key() {
        // Tests in one process open clients at once and all create the user's key: none may
        // read it half-written.
        for _ in 0..20 {
            let dir = tempfile::tempdir().expect("tempdir");
            let path = dir.path().join("client.key");
            let ids: Vec<_> = (0..8)
                .map(|_| {
                    let p = path.clone();
                    std::thread::spawn(move || load_or_create(&p).map(|k| k.public()))
                })
                .collect::<Vec<_>>()
                .into_iter()
                .map(|t| {
                    t.join()
                        .expect("thread")
                        .expect("a key, not a half-written file")
                })
                .collect();
            assert!(ids.windows(2).all(|w| w[0] == w[1]), "one key for all");
            let left: Vec<_> = std::fs::read_dir(dir.path())
                .expect("dir")
                .flatten()
                .collect();
            assert_eq!(left.len(), 1, "no temporary file left behind");
        }
    }

    #[test]
    fn garbage_is_a_clear_error() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("k.key");
        fs::write(&path, "not a key").expect("write");
        assert!(matches!(
            load_or_create(&path),
            Err(TransportError::BadKey { .. })
        ));
    }

    #[test]
    fn default_names_are_sanitised() {
        let p = default_key_path("serial-/dev/ttyUSB0");
        assert!(p.ends_with("serial-_dev_ttyUSB0.key"), "{}", p.display());
    }
}
