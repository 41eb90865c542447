//! Reading and writing length-prefixed rendezvous messages on a libp2p stream.

use std::time::Duration;

use futures::{AsyncReadExt, AsyncWriteExt};
use rdv_wire::{FrameDecoder, FrameError, Message, encode, encode_frame};

/// A stream could not deliver a message.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StreamError {
    /// The stream failed or was reset.
    #[error("stream failed: {0}")]
    Io(#[from] std::io::Error),
    /// The peer sent a bad frame (too large, bad length prefix).
    #[error("bad frame: {0}")]
    Frame(#[from] FrameError),
    /// The peer stalled mid-message (or sent nothing) for too long.
    #[error("no complete message within {0:?}")]
    Timeout(Duration),
    /// The stream ended in the middle of a message.
    #[error("stream ended mid-message")]
    Truncated,
}

/// Reads the next whole frame. `Ok(None)` at a clean end of stream.
pub async fn read_frame<S: futures::AsyncRead + Unpin>(
    stream: &mut S,
    decoder: &mut FrameDecoder,
    timeout: Duration,
) -> Result<Option<bytes::Bytes>, StreamError> {
    let read = async {
        let mut buf = vec![0u8; 8 * 1024];
        loop {
            if let Some(frame) = decoder.next_frame()? {
                return Ok(Some(frame));
            }
            // Never read more than the decoder is willing to hold.
            let want = decoder.capacity_hint().min(buf.len());
            let n = stream.read(&mut buf[..want]).await?;
            if n == 0 {
                return if decoder.buffered() == 0 {
                    Ok(None)
                } else {
                    Err(StreamError::Truncated)
                };
            }
            decoder.push(&buf[..n]);
        }
    };
    tokio::time::timeout(timeout, read)
        .await
        .map_err(|_| StreamError::Timeout(timeout))?
}

/// Reads the next whole frame on a stream that may rest between requests:
/// waits up to `idle` for the first byte of a message, then up to `stall`
/// for the rest of it. (Some clients, go-libp2p's waku among them, keep one
/// stream for DISCOVERs minutes apart; a peer that starts a message must
/// finish it promptly.) Bytes already buffered count as a started message.
/// `Ok(None)` at a clean end of stream.
pub async fn read_frame_after_idle<S: futures::AsyncRead + Unpin>(
    stream: &mut S,
    decoder: &mut FrameDecoder,
    idle: Duration,
    stall: Duration,
) -> Result<Option<bytes::Bytes>, StreamError> {
    if let Some(frame) = decoder.next_frame()? {
        return Ok(Some(frame));
    }
    if decoder.buffered() > 0 {
        return read_frame(stream, decoder, stall).await;
    }
    let mut buf = vec![0u8; 8 * 1024];
    let want = decoder.capacity_hint().min(buf.len());
    let n = match tokio::time::timeout(idle, stream.read(&mut buf[..want])).await {
        Ok(read) => read?,
        Err(_) => return Err(StreamError::Timeout(idle)),
    };
    if n == 0 {
        return Ok(None);
    }
    decoder.push(&buf[..n]);
    read_frame(stream, decoder, stall).await
}

/// Writes one message as a frame and flushes.
pub async fn write_message<S: futures::AsyncWrite + Unpin>(
    stream: &mut S,
    message: &Message,
) -> Result<(), StreamError> {
    stream.write_all(&encode_frame(&encode(message))).await?;
    stream.flush().await?;
    Ok(())
}

/// Sends a message that gets no answer (UNREGISTER): writes it, closes our
/// side, and waits (up to `timeout`) for the peer to close its side, so the
/// message has been read before the caller drops the connection.
pub async fn send_and_close<S: futures::AsyncRead + futures::AsyncWrite + Unpin>(
    stream: &mut S,
    message: &Message,
    timeout: Duration,
) -> Result<(), StreamError> {
    write_message(stream, message).await?;
    stream.close().await?;
    let mut sink = [0u8; 64];
    let drained = async {
        while stream.read(&mut sink).await? > 0 {}
        Ok::<(), std::io::Error>(())
    };
    // A peer that keeps the stream open has still received the message.
    let _ = tokio::time::timeout(timeout, drained).await;
    Ok(())
}
