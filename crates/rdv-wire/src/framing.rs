//! Length-prefixed framing: an unsigned-varint byte count, then the message.
//!
//! Not in the rendezvous spec, but what every implementation sends on a
//! `/rendezvous/1.0.0` stream. The maximum message size bounds what a peer
//! can make us buffer; rust-libp2p uses 1 MiB, go 4 MiB.

use bytes::{Buf, Bytes, BytesMut};

use crate::varint;

/// Default largest message accepted or produced: 1 MiB, as rust-libp2p.
pub const DEFAULT_MAX_MESSAGE_SIZE: usize = 1024 * 1024;

/// A frame could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum FrameError {
    /// The length prefix announces more than the maximum message size.
    #[error("message of {len} bytes exceeds the limit of {max} bytes")]
    TooLarge {
        /// Announced length.
        len: u64,
        /// Configured maximum.
        max: usize,
    },
    /// The length prefix is not a valid varint.
    #[error("length prefix is not a valid unsigned varint")]
    BadLength,
}

/// Prefixes `body` with its length.
pub fn encode_frame(body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(body.len() + varint::len(body.len() as u64));
    varint::encode(body.len() as u64, &mut out);
    out.extend_from_slice(body);
    out
}

/// Reassembles frames from a byte stream fed in arbitrary pieces.
///
/// Sans-IO: the driver pushes what it read and pops whole frames. A driver
/// that pushes at most [`FrameDecoder::capacity_hint`] bytes before each
/// [`FrameDecoder::next_frame`] never buffers more than one maximum-size
/// frame plus its prefix; an oversized frame is refused from its prefix alone.
#[derive(Debug)]
pub struct FrameDecoder {
    max: usize,
    buf: BytesMut,
    /// Length of the frame being read, once its prefix is complete.
    want: Option<usize>,
}

impl FrameDecoder {
    /// A decoder refusing frames over `max_message_size` bytes.
    pub fn new(max_message_size: usize) -> Self {
        Self {
            max: max_message_size,
            buf: BytesMut::new(),
            want: None,
        }
    }

    /// How many more bytes the decoder is willing to take before the next
    /// [`FrameDecoder::next_frame`] call; lets a driver read no more than it may buffer.
    pub fn capacity_hint(&self) -> usize {
        match self.want {
            Some(n) => n.saturating_sub(self.buf.len()).max(1),
            None => 1,
        }
    }

    /// Appends bytes read from the stream.
    pub fn push(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }

    /// Pops the next whole frame, `Ok(None)` if more bytes are needed.
    /// After an error the stream is unusable and should be closed.
    pub fn next_frame(&mut self) -> Result<Option<Bytes>, FrameError> {
        if self.want.is_none() {
            let mut view = &self.buf[..];
            match varint::decode(&mut view) {
                Some(len) => {
                    if len > self.max as u64 {
                        return Err(FrameError::TooLarge { len, max: self.max });
                    }
                    let used = self.buf.len() - view.len();
                    self.buf.advance(used);
                    self.want = Some(len as usize);
                }
                None if self.buf.len() >= 10 => return Err(FrameError::BadLength),
                None => return Ok(None),
            }
        }
        match self.want {
            Some(n) if self.buf.len() >= n => {
                self.want = None;
                Ok(Some(self.buf.split_to(n).freeze()))
            }
            _ => Ok(None),
        }
    }

    /// Bytes buffered but not yet returned as a frame.
    pub fn buffered(&self) -> usize {
        self.buf.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn refuses_oversized_frame_from_its_prefix_alone() {
        let mut d = FrameDecoder::new(16);
        d.push(&[17]);
        assert_eq!(
            d.next_frame(),
            Err(FrameError::TooLarge { len: 17, max: 16 })
        );
    }

    #[test]
    fn accepts_frame_of_exactly_max_size() {
        let mut d = FrameDecoder::new(16);
        d.push(&encode_frame(&[7; 16]));
        assert_eq!(d.next_frame().unwrap().unwrap().len(), 16);
    }

    #[test]
    fn refuses_garbage_length() {
        let mut d = FrameDecoder::new(16);
        d.push(&[0xff; 10]);
        assert_eq!(d.next_frame(), Err(FrameError::BadLength));
    }

    #[test]
    fn empty_frame_is_a_frame() {
        let mut d = FrameDecoder::new(16);
        d.push(&[0]);
        assert_eq!(d.next_frame().unwrap().unwrap().len(), 0);
        assert_eq!(d.next_frame(), Ok(None));
    }

    proptest! {
        #[test]
        fn any_split_of_any_frames_reassembles(
            bodies in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..300), 0..8),
            cuts in proptest::collection::vec(1usize..50, 0..40),
        ) {
            let stream: Vec<u8> = bodies.iter().flat_map(|b| encode_frame(b)).collect();
            let mut d = FrameDecoder::new(300);
            let mut got = Vec::new();
            let mut rest = &stream[..];
            let mut cuts = cuts.into_iter().cycle();
            while !rest.is_empty() {
                let n = cuts.next().unwrap_or(rest.len()).min(rest.len());
                d.push(&rest[..n]);
                rest = &rest[n..];
                while let Some(f) = d.next_frame().unwrap() {
                    got.push(f.to_vec());
                }
            }
            prop_assert_eq!(got, bodies);
            prop_assert_eq!(d.buffered(), 0);
        }
    }
}
