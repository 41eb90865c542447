//! The agent's control socket: how `rdv pipe` and `rdv agent status` talk
//! to the running agent of the same data directory.
//!
//! A Unix stream socket `DIR/agent.sock`, mode 0600 in a 0700 directory:
//! only the same user drives the agent. A client writes one request as a
//! JSON line and reads one [`Reply`] line; a pipe then moves bytes in
//! frames `u32 len | bytes` (at most [`MAX_FRAME`]), an empty frame ending
//! the stream, and the side that took the stream acknowledges it with one
//! byte [`ACK`] once all of it is delivered.

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// Largest pipe frame.
pub const MAX_FRAME: usize = 64 * 1024;
/// Largest request or reply line.
pub const MAX_LINE: u64 = 1024 * 1024;
/// The acknowledgement byte.
pub const ACK: u8 = 0x06;

/// A request to the agent.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(tag = "op", rename_all = "kebab-case")]
pub enum Request {
    /// Contexts, members, descriptors and channels.
    Status,
    /// Wait for one member to pipe bytes in context `context`.
    PipeListen {
        /// The context's local name.
        context: String,
    },
    /// Pipe bytes to `peer` in context `context`.
    PipeConnect {
        /// The context's local name.
        context: String,
        /// The peer's authority (64 hex digits).
        peer: String,
        /// Only this transport (`quic-direct`, `quic-reflexive`,
        /// `tcp-direct`, `relay`); all of them, raced, when absent.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        via: Option<String>,
    },
    /// Remove `member` from context `context` (admins only): advance the
    /// epoch, record the rekey in the journal for the other members.
    Remove {
        /// The context's local name.
        context: String,
        /// The member's authority (64 hex digits).
        member: String,
    },
}

/// The agent's answer to a request.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct Reply {
    /// Whether the request was taken.
    pub ok: bool,
    /// Exit code the command should end with when not ok (1 refused, 2
    /// usage, 3 network).
    #[serde(default)]
    pub code: u8,
    /// What went wrong and what to do.
    #[serde(default)]
    pub error: String,
    /// This agent's authority.
    #[serde(default)]
    pub authority: String,
    /// The transport of a pipe's channel.
    #[serde(default)]
    pub via: String,
    /// How long the pipe's channel took to open, in microseconds: the
    /// race (or the one transport `via` asked for), the transport's
    /// connection and the Noise handshake. What racing costs is read here
    /// (`docs/PERFORMANCE.md`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub open_us: Option<u64>,
    /// The status document.
    #[serde(default)]
    pub status: Option<serde_json::Value>,
    /// The context's epoch after a removal.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub epoch: Option<u64>,
}

impl Reply {
    /// A refusal with its exit code.
    pub fn fail(code: u8, error: impl Into<String>) -> Self {
        Self {
            ok: false,
            code,
            error: error.into(),
            ..Self::default()
        }
    }
}

/// Why a control exchange failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ControlError {
    /// The socket failed.
    #[error(transparent)]
    Io(#[from] std::io::Error),
    /// A line that is not what the protocol says.
    #[error("control protocol: {0}")]
    Protocol(String),
    /// The other side closed.
    #[error("the other side closed the control socket")]
    Closed,
}

/// Writes `value` as one JSON line.
pub async fn write_line<W: AsyncWrite + Unpin, T: Serialize>(
    w: &mut W,
    value: &T,
) -> Result<(), ControlError> {
    let mut line = serde_json::to_vec(value).map_err(|e| ControlError::Protocol(e.to_string()))?;
    line.push(b'\n');
    w.write_all(&line).await?;
    w.flush().await?;
    Ok(())
}

/// Reads one JSON line (bounded).
pub async fn read_line<R, T>(r: &mut R) -> Result<T, ControlError>
where
    R: AsyncRead + AsyncBufReadExt + Unpin,
    T: for<'de> Deserialize<'de>,
{
    let mut line = String::new();
    let n = (&mut *r).take(MAX_LINE).read_line(&mut line).await?;
    if n == 0 {
        return Err(ControlError::Closed);
    }
    if !line.ends_with('\n') {
        return Err(ControlError::Protocol("line too long or cut".into()));
    }
    serde_json::from_str(&line).map_err(|e| ControlError::Protocol(e.to_string()))
}

/// Writes one pipe frame (empty: the end).
pub async fn write_frame<W: AsyncWrite + Unpin>(
    w: &mut W,
    bytes: &[u8],
) -> Result<(), ControlError> {
    let len = u32::try_from(bytes.len())
        .ok()
        .filter(|&l| l as usize <= MAX_FRAME)
        .ok_or_else(|| ControlError::Protocol("frame too large".into()))?;
    w.write_all(&len.to_be_bytes()).await?;
    w.write_all(bytes).await?;
    Ok(())
}

/// Reads one pipe frame; an empty one is the end of the stream.
pub async fn read_frame<R: AsyncRead + Unpin>(r: &mut R) -> Result<Vec<u8>, ControlError> {
    let mut head = [0u8; 4];
    match r.read_exact(&mut head).await {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
            return Err(ControlError::Closed);
        }
        Err(e) => return Err(e.into()),
    }
    let len = u32::from_be_bytes(head) as usize;
    if len > MAX_FRAME {
        return Err(ControlError::Protocol(format!("frame of {len} bytes")));
    }
    let mut body = vec![0u8; len];
    r.read_exact(&mut body).await?;
    Ok(body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_read_as_written() {
        let r = Request::PipeConnect {
            context: "home".into(),
            peer: "ab".into(),
            via: None,
        };
        let text = serde_json::to_string(&r).unwrap_or_default();
        assert_eq!(
            text,
            r#"{"op":"pipe-connect","context":"home","peer":"ab"}"#
        );
        let back: Request = serde_json::from_str(&text).unwrap_or(Request::Status);
        assert_eq!(back, r);
    }
}
