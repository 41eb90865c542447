//! Files the daemon and the commands keep: the identity key and the cookie
//! secret, created on first use with mode 0600 and reused after.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use libp2p::identity::Keypair;

use crate::Failure;

/// Default directory for state (`--data`).
pub const DATA_DIR: &str = "./rdv-data";

/// The state directory chosen with `--data`, set once at start.
static DATA: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();

/// Sets the state directory (`--data`); the first call wins.
pub fn set_data_dir(dir: PathBuf) {
    let _ = DATA.set(dir);
}

/// The state directory: `--data`, default [`DATA_DIR`].
pub fn data_dir() -> PathBuf {
    DATA.get()
        .cloned()
        .unwrap_or_else(|| PathBuf::from(DATA_DIR))
}

/// The point's default identity path.
pub fn default_identity() -> PathBuf {
    data_dir().join("identity.key")
}

/// The client commands' default identity path: not the point's, so that
/// `rdv register` run next to `rdv point` is a peer of its own.
pub fn default_client_identity() -> PathBuf {
    data_dir().join("client.key")
}

/// Creates `path` holding `bytes` (mode 0600), all or nothing: the bytes go
/// to a temporary file in the same directory, are synced, and are then
/// linked to `path`, which fails if `path` exists. A crash leaves either no
/// file or the whole one (never a truncated key the next start refuses),
/// and of two processes creating it at once, one wins and the other reads
/// the winner's. `Ok(false)`: someone else created it first.
fn write_new_secret(path: &Path, bytes: &[u8]) -> Result<bool, Failure> {
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir)
        .map_err(|e| Failure::usage(format!("cannot create {}: {e}", dir.display())))?;
    let name = path
        .file_name()
        .map_or_else(|| "secret".into(), |n| n.to_string_lossy().into_owned());
    let nonce = random_bytes()?;
    let tmp = dir.join(format!(
        ".{name}.{}-{:02x}{:02x}{:02x}{:02x}.tmp",
        std::process::id(),
        nonce[0],
        nonce[1],
        nonce[2],
        nonce[3]
    ));
    let written = (|| {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()
    })();
    let linked = written.and_then(|()| std::fs::hard_link(&tmp, path));
    let _ = std::fs::remove_file(&tmp);
    match linked {
        Ok(()) => {
            // Make the new directory entry itself durable.
            if let Ok(d) = std::fs::File::open(dir) {
                let _ = d.sync_all();
            }
            Ok(true)
        }
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(false),
        // A filesystem without hard links (FAT, some network mounts): an
        // exclusive create, not atomic against a crash, but never clobbers.
        Err(_) => {
            let created = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(path);
            match created {
                Ok(mut f) => f
                    .write_all(bytes)
                    .and_then(|()| f.sync_all())
                    .map(|()| true)
                    .map_err(|e| Failure::usage(format!("cannot write {}: {e}", path.display()))),
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(false),
                Err(e) => Err(Failure::usage(format!(
                    "cannot create {}: {e}",
                    path.display()
                ))),
            }
        }
    }
}

/// After another process won the race to create `path`, it must be
/// readable; a path that exists but reads as missing (a dangling symlink)
/// is reported instead of retried forever.
fn created_elsewhere(path: &Path) -> Failure {
    Failure::usage(format!(
        "{} exists but cannot be read (a dangling symlink?); fix or remove it",
        path.display()
    ))
}

/// Loads the identity at `path`, which must exist (for commands that act on
/// what an identity did before, such as `rdv unregister`).
pub fn load_identity(path: &Path) -> Result<Keypair, Failure> {
    match std::fs::read(path) {
        Ok(bytes) => Keypair::from_protobuf_encoding(&bytes).map_err(|e| {
            Failure::usage(format!(
                "{} is not an rdv identity key ({e}); point --identity at the file you registered with",
                path.display()
            ))
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(Failure::usage(format!(
            "no identity at {}: nothing can have been registered with it; point --identity at the file you registered with",
            path.display()
        ))),
        Err(e) => Err(Failure::usage(format!("cannot read {}: {e}", path.display()))),
    }
}

/// Loads the identity at `path`, creating a new Ed25519 one if the file does not exist.
pub fn load_or_create_identity(path: &Path) -> Result<Keypair, Failure> {
    load_or_create_identity_tries(path, 3)
}

fn load_or_create_identity_tries(path: &Path, tries: u32) -> Result<Keypair, Failure> {
    match std::fs::read(path) {
        Ok(bytes) => Keypair::from_protobuf_encoding(&bytes).map_err(|e| {
            Failure::usage(format!(
                "{} is not an rdv identity key ({e}); point --identity at the right file, or move it away to create a new identity",
                path.display()
            ))
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let key = Keypair::generate_ed25519();
            let bytes = key
                .to_protobuf_encoding()
                .map_err(|e| Failure::usage(format!("cannot encode a new identity: {e}")))?;
            if !write_new_secret(path, &bytes)? {
                // Another process made one: read it.
                if tries == 0 {
                    return Err(created_elsewhere(path));
                }
                return load_or_create_identity_tries(path, tries - 1);
            }
            tracing::info!(path = %path.display(), peer = %key.public().to_peer_id(), "created a new identity");
            Ok(key)
        }
        Err(e) => Err(Failure::usage(format!("cannot read {}: {e}", path.display()))),
    }
}

/// Loads the 32-byte secret at `path`, creating a random one if missing.
pub fn load_or_create_secret(path: &Path) -> Result<[u8; 32], Failure> {
    load_or_create_secret_tries(path, 3)
}

fn load_or_create_secret_tries(path: &Path, tries: u32) -> Result<[u8; 32], Failure> {
    match std::fs::read(path) {
        Ok(bytes) => <[u8; 32]>::try_from(bytes.as_slice()).map_err(|_| {
            Failure::usage(format!(
                "{} holds {} bytes, not a 32-byte secret; restore it, or move it away to create a new one (outstanding cookies then start over)",
                path.display(),
                bytes.len()
            ))
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let secret = random_bytes()?;
            if !write_new_secret(path, &secret)? {
                // Another process made one: read it.
                if tries == 0 {
                    return Err(created_elsewhere(path));
                }
                return load_or_create_secret_tries(path, tries - 1);
            }
            Ok(secret)
        }
        Err(e) => Err(Failure::usage(format!("cannot read {}: {e}", path.display()))),
    }
}

/// 32 bytes from the operating system's random source.
pub fn random_bytes() -> Result<[u8; 32], Failure> {
    let mut out = [0u8; 32];
    getrandom::fill(&mut out)
        .map_err(|e| Failure::usage(format!("no randomness from the OS: {e}")))?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn processes_creating_the_identity_at_once_all_get_the_same_one() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state").join("identity.key");
        let peers: Vec<_> = (0..8)
            .map(|_| {
                let path = path.clone();
                std::thread::spawn(move || {
                    load_or_create_identity(&path)
                        .map(|k| k.public().to_peer_id())
                        .map_err(|e| e.message)
                })
            })
            .map(|t| t.join().unwrap().unwrap())
            .collect();
        assert!(peers.windows(2).all(|w| w[0] == w[1]), "{peers:?}");
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        // Nothing left behind but the key.
        let names: Vec<_> = std::fs::read_dir(path.parent().unwrap())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, ["identity.key"]);
        assert_eq!(
            load_or_create_identity(&path)
                .map_err(|e| e.message)
                .unwrap()
                .public()
                .to_peer_id(),
            peers[0]
        );
    }
}

#[cfg(test)]
mod dangling {
    use super::*;

    #[test]
    fn a_dangling_symlink_at_the_key_path_is_reported_not_retried_forever() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("identity.key");
        std::os::unix::fs::symlink(dir.path().join("gone"), &path).unwrap();
        let err = load_or_create_identity(&path).map(|_| ()).unwrap_err();
        assert!(err.message.contains("cannot be read"), "{}", err.message);
        let err = load_or_create_secret(&path).map(|_| ()).unwrap_err();
        assert!(err.message.contains("cannot be read"), "{}", err.message);
    }
}
