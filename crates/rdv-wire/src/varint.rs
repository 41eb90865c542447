//! Unsigned LEB128 varints (protobuf varints and multiformats
//! `unsigned-varint`, which libp2p uses for length prefixes).

/// Reads a varint from the front of `buf`, advancing it. `None` when the
/// varint is truncated or longer than 10 bytes / 64 bits.
pub(crate) fn decode(buf: &mut &[u8]) -> Option<u64> {
    let mut value = 0u64;
    for (i, &byte) in buf.iter().enumerate().take(10) {
        let bits = u64::from(byte & 0x7f);
        if i == 9 && byte > 1 {
            return None; // would overflow 64 bits
        }
        value |= bits << (7 * i);
        if byte & 0x80 == 0 {
            *buf = &buf[i + 1..];
            return Some(value);
        }
    }
    None
}

/// Appends `value` as a varint.
pub(crate) fn encode(mut value: u64, out: &mut Vec<u8>) {
    while value >= 0x80 {
        out.push((value as u8) | 0x80);
        value >>= 7;
    }
    out.push(value as u8);
}

/// Bytes `value` takes as a varint.
pub(crate) const fn len(value: u64) -> usize {
    let bits = 64 - (value | 1).leading_zeros() as usize;
    bits.div_ceil(7)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_edges() {
        for v in [0, 1, 127, 128, 16383, 16384, u32::MAX as u64, u64::MAX] {
            let mut out = Vec::new();
            encode(v, &mut out);
            assert_eq!(out.len(), len(v), "len of {v}");
            let mut s = out.as_slice();
            assert_eq!(decode(&mut s), Some(v));
            assert!(s.is_empty());
        }
    }

    #[test]
    fn refuses_truncated_and_overlong() {
        assert_eq!(decode(&mut &[0x80u8][..]), None);
        assert_eq!(decode(&mut &[0xffu8; 10][..]), None);
        assert_eq!(
            decode(&mut &[0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x02][..]),
            None
        );
    }
}
