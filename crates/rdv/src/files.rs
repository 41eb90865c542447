//! Files the daemon and the commands keep: the identity key and the cookie
//! secret, created on first use with mode 0600 and reused after.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use libp2p::identity::Keypair;

use crate::Failure;

/// Default directory for state.
pub const DATA_DIR: &str = "./rdv-data";

/// The point's default identity path.
pub fn default_identity() -> PathBuf {
    Path::new(DATA_DIR).join("identity.key")
}

/// The client commands' default identity path: not the point's, so that
/// `rdv register` run next to `rdv point` is a peer of its own.
pub fn default_client_identity() -> PathBuf {
    Path::new(DATA_DIR).join("client.key")
}

fn write_new_secret(path: &Path, bytes: &[u8]) -> Result<(), Failure> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)
            .map_err(|e| Failure::usage(format!("cannot create {}: {e}", dir.display())))?;
    }
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| Failure::usage(format!("cannot create {}: {e}", path.display())))?;
    f.write_all(bytes)
        .and_then(|()| f.sync_all())
        .map_err(|e| Failure::usage(format!("cannot write {}: {e}", path.display())))
}

/// Loads the identity at `path`, creating a new Ed25519 one if the file does not exist.
pub fn load_or_create_identity(path: &Path) -> Result<Keypair, Failure> {
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
            write_new_secret(path, &bytes)?;
            tracing::info!(path = %path.display(), peer = %key.public().to_peer_id(), "created a new identity");
            Ok(key)
        }
        Err(e) => Err(Failure::usage(format!("cannot read {}: {e}", path.display()))),
    }
}

/// Loads the 32-byte secret at `path`, creating a random one if missing.
pub fn load_or_create_secret(path: &Path) -> Result<[u8; 32], Failure> {
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
            write_new_secret(path, &secret)?;
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
