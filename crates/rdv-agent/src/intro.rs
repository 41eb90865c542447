//! First contact: two members who know each other's address (from a
//! public point's blinded namespace) but not each other's descriptor
//! exchange their descriptors on the member's TCP port, then open a
//! channel as usual and let journal sync do the rest.
//!
//! A handshake needs the peer's descriptor (its static key and PSK
//! commitment), and a member invited by someone else is not in the
//! responder's roster yet, so neither side could start one. The
//! introduction is the smallest step that fixes that without trusting the
//! network: the initiator sends its own descriptor journal entry, sealed
//! under the epoch key and signed; the responder checks it exactly as a
//! synced fact (it must open under the current epoch's key and verify:
//! proof that the sender holds the context secret) and only then answers
//! with its own. A stranger gets nothing; garbage costs one failed AEAD.
//!
//! Frame: `u16 (0x8000 | len) | JournalEntry bytes`. Handshake frames are
//! at most 2 KiB, so the high bit of the length tells the two apart on one
//! port. What an eavesdropper learns (the descriptor header: context id,
//! epoch; the author is sealed) is written down in `docs/PRIVACY.md`.

use std::time::Duration;

use rdv_context::JournalEntry;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Marks an introduction frame's length.
pub const INTRO_FLAG: u16 = 0x8000;
/// Largest introduction frame body (a descriptor entry is under 2 KiB).
pub const MAX_INTRO: usize = 8 * 1024;

/// Why an introduction failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum IntroError {
    /// The socket failed.
    #[error(transparent)]
    Io(#[from] std::io::Error),
    /// Not an introduction frame, or too large.
    #[error("not an introduction frame")]
    NotIntro,
    /// The entry did not decode.
    #[error("introduction does not decode: {0}")]
    Decode(String),
    /// No answer in time.
    #[error("no answer within {0:?}")]
    Timeout(Duration),
}

/// Writes `entry` as an introduction frame.
pub async fn write(stream: &mut TcpStream, entry: &JournalEntry) -> Result<(), IntroError> {
    let body = entry.to_bytes();
    let len = u16::try_from(body.len())
        .ok()
        .filter(|&l| usize::from(l) <= MAX_INTRO)
        .ok_or(IntroError::NotIntro)?;
    let mut frame = Vec::with_capacity(2 + body.len());
    frame.extend_from_slice(&(INTRO_FLAG | len).to_be_bytes());
    frame.extend_from_slice(&body);
    stream.write_all(&frame).await?;
    Ok(())
}

/// Whether the first two bytes of a connection announce an introduction.
pub fn is_intro(first: [u8; 2]) -> bool {
    u16::from_be_bytes(first) & INTRO_FLAG != 0
}

/// Reads one introduction frame within `timeout`.
pub async fn read(stream: &mut TcpStream, timeout: Duration) -> Result<JournalEntry, IntroError> {
    tokio::time::timeout(timeout, async {
        let mut head = [0u8; 2];
        stream.read_exact(&mut head).await?;
        let raw = u16::from_be_bytes(head);
        if raw & INTRO_FLAG == 0 {
            return Err(IntroError::NotIntro);
        }
        let len = usize::from(raw & !INTRO_FLAG);
        if len > MAX_INTRO {
            return Err(IntroError::NotIntro);
        }
        let mut body = vec![0u8; len];
        stream.read_exact(&mut body).await?;
        JournalEntry::from_bytes(&body).map_err(|e| IntroError::Decode(e.to_string()))
    })
    .await
    .map_err(|_| IntroError::Timeout(timeout))?
}

/// The initiator's side: sends `mine`, returns the peer's answer.
pub async fn introduce(
    addr: std::net::SocketAddr,
    mine: &JournalEntry,
    timeout: Duration,
) -> Result<JournalEntry, IntroError> {
    let mut stream = tokio::time::timeout(timeout, TcpStream::connect(addr))
        .await
        .map_err(|_| IntroError::Timeout(timeout))??;
    write(&mut stream, mine).await?;
    read(&mut stream, timeout).await
}
