//! Stateless, authenticated discovery cookies.
//!
//! A cookie says "everything in this scope up to position `p` of the store
//! with epoch `e` has been returned". It carries `p`, `e` and a 16-byte MAC:
//! BLAKE3 keyed with the point's secret over a domain label, the scope (one
//! namespace, or all), `e` and `p`. The point keeps no per-cookie state, so
//! cookies survive restarts and any point holding the same secret honours
//! them; a forged, truncated or other-namespace cookie fails the MAC.
//!
//! Layout: `p` as 8 big-endian bytes, then ASCII: `r1`, `e` as 16 hex digits,
//! the MAC as 32 hex digits (58 bytes). Everything after the first 8 bytes is
//! ASCII because rust-libp2p's client parses a cookie as a fixed-size binary
//! id followed by a UTF-8 namespace, and rejects the whole DISCOVER_RESPONSE
//! otherwise; it sends the same bytes back.

use rdv_wire::{Cookie, Namespace};

const MAC_LEN: usize = 16;
const TAG: &[u8; 2] = b"r1";
/// Length of the cookies this point issues.
pub const COOKIE_LEN: usize = 8 + TAG.len() + 16 + 2 * MAC_LEN;
const LABEL: &[u8] = b"rdv rendezvous cookie v1";

/// What a valid cookie says.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CookiePosition {
    /// The store epoch the position belongs to.
    pub epoch: u64,
    /// Everything up to this position was returned.
    pub position: u64,
}

/// The point's cookie secret. Inject it: generate it once per deployment and
/// keep it (and share it between points that serve as one).
#[derive(Clone)]
pub struct CookieKey([u8; 32]);

fn hex(bytes: &[u8], out: &mut Vec<u8>) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    for b in bytes {
        out.push(DIGITS[(b >> 4) as usize]);
        out.push(DIGITS[(b & 15) as usize]);
    }
}

fn unhex<const N: usize>(s: &[u8]) -> Option<[u8; N]> {
    if s.len() != 2 * N {
        return None;
    }
    let digit = |c: u8| match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        _ => None,
    };
    let mut out = [0; N];
    for (i, pair) in s.chunks_exact(2).enumerate() {
        out[i] = digit(pair[0])? << 4 | digit(pair[1])?;
    }
    Some(out)
}

impl CookieKey {
    /// A key from 32 secret bytes.
    pub const fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }
    /// The secret bytes, for persisting.
    pub fn to_bytes(&self) -> [u8; 32] {
        self.0
    }

    fn mac(&self, scope: Option<&Namespace>, at: CookiePosition) -> [u8; MAC_LEN] {
        let mut h = blake3::Hasher::new_keyed(&self.0);
        h.update(LABEL);
        match scope {
            None => h.update(&[0]),
            Some(ns) => {
                h.update(&[1, ns.as_str().len() as u8]);
                h.update(ns.as_str().as_bytes())
            }
        };
        h.update(&at.epoch.to_be_bytes());
        h.update(&at.position.to_be_bytes());
        let mut out = [0; MAC_LEN];
        out.copy_from_slice(&h.finalize().as_bytes()[..MAC_LEN]);
        out
    }

    /// Issues the cookie for `at` in `scope`.
    pub fn issue(&self, scope: Option<&Namespace>, at: CookiePosition) -> Cookie {
        let mut out = Vec::with_capacity(COOKIE_LEN);
        out.extend_from_slice(&at.position.to_be_bytes());
        out.extend_from_slice(TAG);
        hex(&at.epoch.to_be_bytes(), &mut out);
        hex(&self.mac(scope, at), &mut out);
        // COOKIE_LEN is far below MAX_COOKIE_LEN, so this cannot fail.
        Cookie::new(out).unwrap_or_else(|_| unreachable!("cookie fits"))
    }

    /// Opens a cookie presented for `scope`, or `None` if it was not issued
    /// by a holder of this key for this scope.
    pub fn open(&self, scope: Option<&Namespace>, cookie: &Cookie) -> Option<CookiePosition> {
        let b = cookie.as_bytes();
        if b.len() != COOKIE_LEN || &b[8..10] != TAG {
            return None;
        }
        let at = CookiePosition {
            position: u64::from_be_bytes(b[..8].try_into().ok()?),
            epoch: u64::from_be_bytes(unhex::<8>(&b[10..26])?),
        };
        let given = unhex::<MAC_LEN>(&b[26..])?;
        // Constant-time comparison: no early exit on the first differing byte.
        let diff = self
            .mac(scope, at)
            .iter()
            .zip(&given)
            .fold(0u8, |acc, (x, y)| acc | (x ^ y));
        (diff == 0).then_some(at)
    }
}

impl std::fmt::Debug for CookieKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CookieKey(..)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ns(s: &str) -> Namespace {
        Namespace::new(s).unwrap()
    }

    const AT: CookiePosition = CookiePosition {
        epoch: 0xfeed,
        position: 42,
    };

    #[test]
    fn issued_cookie_opens_to_its_position_in_its_scope() {
        let k = CookieKey::from_bytes([7; 32]);
        let c = k.issue(Some(&ns("a")), AT);
        assert_eq!(c.as_bytes().len(), COOKIE_LEN);
        assert_eq!(k.open(Some(&ns("a")), &c), Some(AT));
        let all = k.issue(None, AT);
        assert_eq!(k.open(None, &all), Some(AT));
    }

    #[test]
    fn everything_after_the_first_eight_bytes_is_ascii() {
        let k = CookieKey::from_bytes([7; 32]);
        let c = k.issue(
            Some(&ns("a")),
            CookiePosition {
                epoch: u64::MAX,
                position: u64::MAX,
            },
        );
        assert!(std::str::from_utf8(&c.as_bytes()[8..]).unwrap().is_ascii());
    }

    #[test]
    fn cookie_for_another_namespace_or_scope_is_refused() {
        let k = CookieKey::from_bytes([7; 32]);
        let c = k.issue(Some(&ns("a")), AT);
        assert_eq!(k.open(Some(&ns("b")), &c), None);
        assert_eq!(k.open(None, &c), None);
        assert_eq!(k.open(Some(&ns("a")), &k.issue(None, AT)), None);
    }

    #[test]
    fn forged_truncated_or_other_key_cookie_is_refused() {
        let k = CookieKey::from_bytes([7; 32]);
        let c = k.issue(Some(&ns("a")), AT);
        let mut forged = c.as_bytes().to_vec();
        forged[7] ^= 1; // change the position, keep the MAC
        assert_eq!(k.open(Some(&ns("a")), &Cookie::new(forged).unwrap()), None);
        let mut other_epoch = c.as_bytes().to_vec();
        other_epoch[12] = b'7';
        assert_eq!(
            k.open(Some(&ns("a")), &Cookie::new(other_epoch).unwrap()),
            None
        );
        let truncated = c.as_bytes()[..COOKIE_LEN - 1].to_vec();
        assert_eq!(
            k.open(Some(&ns("a")), &Cookie::new(truncated).unwrap()),
            None
        );
        let other = CookieKey::from_bytes([8; 32]);
        assert_eq!(other.open(Some(&ns("a")), &c), None);
    }
}
