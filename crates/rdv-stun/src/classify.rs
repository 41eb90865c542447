//! The first-byte demultiplexer for a UDP socket shared by STUN and QUIC.

use stun_types::message::MAGIC_COOKIE;

/// What a datagram received on a shared socket is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// A STUN message: first byte 0..=3 (RFC 7983 §7) and the magic cookie at
    /// bytes 4..8 (RFC 8489 §5). Not yet validated beyond that.
    Stun,
    /// A QUIC packet: first byte 64..=127 (short header: form bit 0, fixed
    /// bit 1) or 192..=255 (long header: form bit 1, fixed bit 1), RFC 9000
    /// §17.2-17.3 and RFC 9443 §3. 128..=191 (form bit set, fixed bit
    /// clear) is RTP/RTCP in RFC 9443's scheme, never one of our QUIC
    /// packets.
    Quic,
    /// Anything else (DTLS, RTP, ZRTP, TURN channels, noise): dropped.
    Other,
}

/// Classifies `datagram` by its first byte (RFC 7983 §7 as updated by RFC
/// 9443 §3), checking the STUN magic cookie too so that a stray datagram
/// starting with 0..=3 is not taken for STUN.
///
/// QUIC packets with the "QUIC bit" greased to 0 (RFC 9287) fall outside
/// 64..=191 and would be [`Kind::Other`]; rdv's endpoints do not negotiate
/// that extension, so every QUIC packet they receive has the bit set.
pub fn classify(datagram: &[u8]) -> Kind {
    match datagram.first() {
        Some(0..=3) => {
            if datagram.len() >= 20 && datagram[4..8] == MAGIC_COOKIE.to_be_bytes() {
                Kind::Stun
            } else {
                Kind::Other
            }
        }
        Some(64..=127 | 192..=255) => Kind::Quic,
        _ => Kind::Other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stun_like(first: u8) -> [u8; 20] {
        let mut d = [0; 20];
        d[0] = first;
        d[4..8].copy_from_slice(&MAGIC_COOKIE.to_be_bytes());
        d
    }

    #[test]
    fn every_first_byte_lands_in_its_rfc_9443_range() {
        for b in 0..=255u8 {
            let mut d = stun_like(b);
            d[0] = b;
            let want = match b {
                0..=3 => Kind::Stun,
                64..=127 | 192..=255 => Kind::Quic,
                _ => Kind::Other,
            };
            assert_eq!(classify(&d), want, "first byte {b}");
        }
    }

    #[test]
    fn stun_needs_the_magic_cookie_and_a_full_header() {
        assert_eq!(classify(&stun_like(0)), Kind::Stun);
        let mut bad = stun_like(0);
        bad[5] ^= 1;
        assert_eq!(classify(&bad), Kind::Other);
        assert_eq!(classify(&stun_like(1)[..19]), Kind::Other);
        assert_eq!(classify(&[]), Kind::Other);
    }
}
