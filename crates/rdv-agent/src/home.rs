//! A member's data directory: its identity, its contexts, one journal per
//! context and the agent's control socket, all under one `--data DIR`, so
//! several members can live on one host.
//!
//! ```text
//! DIR/member.format     "rdv-member-data 1": the layout version
//! DIR/member.key        the identity (Ed25519 seed and X25519 secret), 0600
//! DIR/contexts.db       the contexts (SQLite, `ContextStore`), 0600
//! DIR/journals/<id>.db  each context's journal (SQLite)
//! DIR/agent.sock        the running agent's control socket, 0600
//! ```

use std::fs;
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use rdv_context::{ContextId, ContextStore, ContextStoreError, Identity, SeededRng};

/// The layout version this build writes and reads.
pub const FORMAT: &str = "rdv-member-data 1";
const KEY_HEADER: &str = "rdv member key v1";

/// Why the data directory could not be used. Messages say what to do.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum HomeError {
    /// A file could not be read or written.
    #[error("{path}: {error}")]
    Io {
        /// The file.
        path: PathBuf,
        /// What failed.
        error: std::io::Error,
    },
    /// The directory was written by another version of rdv.
    #[error(
        "{path} says {found:?}, this rdv reads {FORMAT:?}: use the rdv that made it, or another --data directory"
    )]
    OtherVersion {
        /// The format file.
        path: PathBuf,
        /// What it says.
        found: String,
    },
    /// The identity file is damaged.
    #[error(
        "{0} is not an rdv member key: restore it from a backup, or move it away to make a new identity (other members will not know the new one)"
    )]
    BadKey(PathBuf),
    /// The context store failed.
    #[error(transparent)]
    Contexts(#[from] ContextStoreError),
    /// No random bytes from the operating system.
    #[error("the operating system gave no random bytes: {0}")]
    Random(String),
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> HomeError + '_ {
    move |error| HomeError::Io {
        path: path.to_owned(),
        error,
    }
}

/// A member's data directory.
#[derive(Clone, Debug)]
pub struct Home {
    dir: PathBuf,
}

impl Home {
    /// The directory `dir`, created (0700) with its format file if new; a
    /// directory of another layout version is refused.
    pub fn open(dir: &Path) -> Result<Self, HomeError> {
        fs::create_dir_all(dir).map_err(io(dir))?;
        let home = Self {
            dir: dir.to_owned(),
        };
        let format = home.dir.join("member.format");
        match fs::read_to_string(&format) {
            Ok(found) if found.trim() == FORMAT => {}
            Ok(found) => {
                return Err(HomeError::OtherVersion {
                    path: format,
                    found: found.trim().to_owned(),
                });
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let _ = fs::set_permissions(dir, fs::Permissions::from_mode(0o700));
                write_private(&format, format!("{FORMAT}\n").as_bytes())?;
            }
            Err(e) => return Err(io(&format)(e)),
        }
        Ok(home)
    }

    /// The directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The control socket of this directory's agent.
    pub fn socket_path(&self) -> PathBuf {
        self.dir.join("agent.sock")
    }

    /// The journal file of `context`.
    pub fn journal_path(&self, context: &ContextId) -> Result<PathBuf, HomeError> {
        let dir = self.dir.join("journals");
        fs::create_dir_all(&dir).map_err(io(&dir))?;
        Ok(dir.join(format!("{context}.db")))
    }

    /// The relay designated for `context` (`relays/<context>`, one
    /// `rdv-relay-v1:` token), if any. An unreadable or malformed file
    /// counts as none (and is logged), never as an error that stops the
    /// agent: the designation is a preference, re-learnt from other
    /// members' descriptors.
    pub fn relay(&self, context: &ContextId) -> Option<rdv_relay::RelayToken> {
        let path = self.dir.join("relays").join(context.to_string());
        let text = fs::read_to_string(&path).ok()?;
        match text.trim().parse() {
            Ok(t) => Some(t),
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %e, "ignoring a bad relay designation");
                None
            }
        }
    }

    /// Designates `token`'s relay for `context` (replaces any earlier
    /// one). Written to a temporary file and renamed, so a reader never
    /// sees half a token.
    pub fn set_relay(
        &self,
        context: &ContextId,
        token: &rdv_relay::RelayToken,
    ) -> Result<(), HomeError> {
        let dir = self.dir.join("relays");
        fs::create_dir_all(&dir).map_err(io(&dir))?;
        let path = dir.join(context.to_string());
        let tmp = dir.join(format!(".{context}.tmp"));
        fs::write(&tmp, format!("{token}\n")).map_err(io(&tmp))?;
        fs::rename(&tmp, &path).map_err(io(&path))?;
        Ok(())
    }

    /// Deletes what the data directory holds for `context` besides the
    /// context store's row: its journal (with SQLite's side files) and its
    /// relay designation. Files that are not there are not an error.
    pub fn forget(&self, context: &ContextId) -> Result<(), HomeError> {
        let journal = self.journal_path(context)?;
        let mut paths = vec![self.dir.join("relays").join(context.to_string())];
        for suffix in ["", "-wal", "-shm", "-journal"] {
            let mut p = journal.clone().into_os_string();
            p.push(suffix);
            paths.push(PathBuf::from(p));
        }
        for p in paths {
            match fs::remove_file(&p) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(io(&p)(e)),
            }
        }
        Ok(())
    }

    /// The member's identity, created (0600) on first use.
    pub fn identity(&self) -> Result<Identity, HomeError> {
        let path = self.dir.join("member.key");
        match fs::read_to_string(&path) {
            Ok(text) => parse_key(&text).ok_or(HomeError::BadKey(path)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let identity = Identity::generate(&mut os_rng()?);
                let secret = identity.to_secret_bytes();
                let mut hex = String::with_capacity(128);
                for b in secret.0.iter().chain(secret.1.iter()) {
                    hex.push_str(&format!("{b:02x}"));
                }
                let text = zeroize::Zeroizing::new(format!("{KEY_HEADER}\n{hex}\n"));
                drop(hex);
                write_private(&path, text.as_bytes())?;
                // Two commands racing on a new directory: keep whichever
                // identity reached the disk.
                let text = fs::read_to_string(&path).map_err(io(&path))?;
                parse_key(&text).ok_or(HomeError::BadKey(path))
            }
            Err(e) => Err(io(&path)(e)),
        }
    }

    /// The member's contexts (0600).
    pub fn contexts(&self) -> Result<ContextStore, HomeError> {
        let path = self.dir.join("contexts.db");
        let store = ContextStore::open(&path)?;
        let _ = fs::set_permissions(&path, fs::Permissions::from_mode(0o600));
        Ok(store)
    }
}

/// A generator seeded by the operating system.
pub fn os_rng() -> Result<SeededRng, HomeError> {
    let mut seed = zeroize::Zeroizing::new([0u8; 32]);
    getrandom::fill(&mut seed[..]).map_err(|e| HomeError::Random(e.to_string()))?;
    Ok(SeededRng::from_seed(*seed))
}

fn parse_key(text: &str) -> Option<Identity> {
    let mut lines = text.lines();
    if lines.next()?.trim() != KEY_HEADER {
        return None;
    }
    let hex = lines.next()?.trim();
    if hex.len() != 128 {
        return None;
    }
    let mut bytes = zeroize::Zeroizing::new([0u8; 64]);
    for (i, b) in bytes.iter_mut().enumerate() {
        *b = u8::from_str_radix(hex.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    let mut ed = [0u8; 32];
    let mut x = [0u8; 32];
    ed.copy_from_slice(&bytes[..32]);
    x.copy_from_slice(&bytes[32..]);
    Some(Identity::from_secret_bytes(ed, x))
}

/// Writes a new file readable by its owner only; an existing file is kept
/// (another command created it first).
fn write_private(path: &Path, bytes: &[u8]) -> Result<(), HomeError> {
    match fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
    {
        Ok(mut f) => {
            f.write_all(bytes).map_err(io(path))?;
            f.sync_all().map_err(io(path))
        }
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(io(path)(e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_identity_is_made_once_private_and_read_back() {
        let dir = std::env::temp_dir().join(format!("rdv-home-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        let home = Home::open(&dir).unwrap_or_else(|e| panic!("{e}"));
        let a = home.identity().unwrap_or_else(|e| panic!("{e}"));
        let b = home.identity().unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(a.authority(), b.authority());
        let mode = fs::metadata(dir.join("member.key"))
            .map(|m| m.permissions().mode() & 0o777)
            .unwrap_or(0);
        assert_eq!(mode, 0o600);
        fs::write(dir.join("member.format"), "rdv-member-data 9\n").unwrap_or(());
        assert!(matches!(
            Home::open(&dir),
            Err(HomeError::OtherVersion { .. })
        ));
        let _ = fs::remove_dir_all(&dir);
    }
}
