//! Text armour for values a person copies and pastes: invitations and
//! member cards.
//!
//! Form: `rdv-<kind>-v<version>:<base32>` where the base32 (RFC 4648
//! alphabet, lowercase, no padding) carries the payload followed by a 4-byte
//! BLAKE3 checksum of the header and payload. The checksum tells a typo or a
//! cut-off paste apart from a forgery (which the payload's own signature
//! catches) and lets the error say so. Whitespace anywhere is ignored, so a
//! value wrapped by a mail client still parses; letters may be any case.

use crate::codec::DecodeError;

const ALPHABET: &[u8; 32] = b"abcdefghijklmnopqrstuvwxyz234567";
const CHECKSUM_LEN: usize = 4;
const CHECKSUM_LABEL: &str = "rdv context v1 armor-checksum";

/// Why a pasted text value did not parse. Messages say what to do.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ArmorError {
    /// The text does not start like any rdv value.
    #[error("not an rdv {expected}: it should start with `rdv-{expected}-v1:`")]
    NotRdv {
        /// The kind expected.
        expected: &'static str,
    },
    /// The text is another kind of rdv value.
    #[error("this is an rdv {found}, not an rdv {expected}")]
    WrongKind {
        /// The kind expected.
        expected: &'static str,
        /// The kind found.
        found: String,
    },
    /// A version this build does not read.
    #[error(
        "unsupported {expected} version {found}: this build reads version {supported}; upgrade rdv"
    )]
    UnsupportedVersion {
        /// The kind expected.
        expected: &'static str,
        /// The version found.
        found: String,
        /// The version this build reads.
        supported: u8,
    },
    /// A character outside the base32 alphabet.
    #[error(
        "character {character:?} at position {position} of the encoded part is not base32 (a-z, 2-7)"
    )]
    BadCharacter {
        /// The character.
        character: char,
        /// Its position in the encoded part, whitespace removed.
        position: usize,
    },
    /// The encoded part has a length no encoding produces: it was cut.
    #[error("the encoded part has an impossible length ({0} characters): part of it is missing")]
    BadLength(usize),
    /// The checksum does not match: the text was mistyped or cut.
    #[error("checksum mismatch: the text was mistyped, altered or cut short; copy it again")]
    Checksum,
    /// The payload is malformed although the checksum matched.
    #[error("malformed payload: {0}")]
    Payload(#[from] DecodeError),
}

/// Encodes `payload` as `rdv-<kind>-v<version>:<base32>`.
pub(crate) fn encode(kind: &str, version: u8, payload: &[u8]) -> String {
    let header = format!("rdv-{kind}-v{version}:");
    let mut data = payload.to_vec();
    data.extend_from_slice(&checksum(&header, payload));
    let mut out = header;
    base32_encode(&data, &mut out);
    out
}

/// Decodes text made by [`encode`] with this `kind` and `version`, returning
/// the payload.
pub(crate) fn decode(kind: &'static str, version: u8, text: &str) -> Result<Vec<u8>, ArmorError> {
    let text: String = text.chars().filter(|c| !c.is_whitespace()).collect();
    let Some(rest) = text.strip_prefix("rdv-") else {
        return Err(ArmorError::NotRdv { expected: kind });
    };
    let Some((head, body)) = rest.split_once(':') else {
        return Err(ArmorError::NotRdv { expected: kind });
    };
    let Some((found_kind, found_version)) = head.rsplit_once("-v") else {
        return Err(ArmorError::NotRdv { expected: kind });
    };
    if found_kind != kind {
        return Err(ArmorError::WrongKind {
            expected: kind,
            found: found_kind.chars().take(32).collect(),
        });
    }
    if found_version != version.to_string() {
        return Err(ArmorError::UnsupportedVersion {
            expected: kind,
            found: found_version.chars().take(16).collect(),
            supported: version,
        });
    }
    let data = base32_decode(body)?;
    if data.len() < CHECKSUM_LEN {
        return Err(ArmorError::BadLength(body.len()));
    }
    let (payload, sum) = data.split_at(data.len() - CHECKSUM_LEN);
    let header = format!("rdv-{kind}-v{version}:");
    if checksum(&header, payload) != sum {
        return Err(ArmorError::Checksum);
    }
    Ok(payload.to_vec())
}

fn checksum(header: &str, payload: &[u8]) -> [u8; CHECKSUM_LEN] {
    let mut h = blake3::Hasher::new_derive_key(CHECKSUM_LABEL);
    h.update(header.as_bytes());
    h.update(payload);
    let mut out = [0; CHECKSUM_LEN];
    out.copy_from_slice(&h.finalize().as_bytes()[..CHECKSUM_LEN]);
    out
}

fn base32_encode(data: &[u8], out: &mut String) {
    let mut acc: u32 = 0;
    let mut bits = 0;
    for &b in data {
        acc = (acc << 8) | b as u32;
        bits += 8;
        while bits >= 5 {
            bits -= 5;
            out.push(ALPHABET[((acc >> bits) & 31) as usize] as char);
        }
    }
    if bits > 0 {
        out.push(ALPHABET[((acc << (5 - bits)) & 31) as usize] as char);
    }
}

fn base32_decode(text: &str) -> Result<Vec<u8>, ArmorError> {
    // Lengths mod 8 of 1, 3 and 6 characters are never produced.
    let n = text.chars().count();
    if matches!(n % 8, 1 | 3 | 6) {
        return Err(ArmorError::BadLength(n));
    }
    let mut out = Vec::with_capacity(n * 5 / 8);
    let mut acc: u32 = 0;
    let mut bits = 0;
    for (position, c) in text.chars().enumerate() {
        let v = match c.to_ascii_lowercase() {
            c @ 'a'..='z' => c as u32 - 'a' as u32,
            c @ '2'..='7' => c as u32 - '2' as u32 + 26,
            _ => {
                return Err(ArmorError::BadCharacter {
                    character: c,
                    position,
                });
            }
        };
        acc = ((acc << 5) | v) & 0xfff;
        bits += 5;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
        }
    }
    // Leftover bits must be zero: one text per payload.
    if bits > 0 && acc & ((1 << bits) - 1) != 0 {
        return Err(ArmorError::Checksum);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn armour_round_trips_every_length() {
        for len in 0..40 {
            let payload: Vec<u8> = (0..len as u8).map(|i| i.wrapping_mul(37)).collect();
            let text = encode("thing", 1, &payload);
            assert_eq!(decode("thing", 1, &text).unwrap(), payload);
            assert_eq!(
                decode(
                    "thing",
                    1,
                    &text
                        .to_uppercase()
                        .replace("RDV-THING-V1:", "rdv-thing-v1:")
                )
                .unwrap(),
                payload
            );
        }
    }

    #[test]
    fn wrapped_text_parses() {
        let text = encode("thing", 1, b"hello world, this is long enough to wrap");
        let wrapped: String = text
            .chars()
            .collect::<Vec<_>>()
            .chunks(10)
            .map(|c| c.iter().collect::<String>())
            .collect::<Vec<_>>()
            .join("\n  ");
        assert_eq!(
            decode("thing", 1, &wrapped).unwrap(),
            b"hello world, this is long enough to wrap"
        );
    }

    #[test]
    fn each_defect_gets_its_own_error() {
        let text = encode("thing", 1, b"payload bytes");
        assert_eq!(
            decode("thing", 1, "hello"),
            Err(ArmorError::NotRdv { expected: "thing" })
        );
        assert!(matches!(
            decode("other", 1, &text),
            Err(ArmorError::WrongKind { .. })
        ));
        assert!(matches!(
            decode("thing", 1, &text.replace("-v1:", "-v2:")),
            Err(ArmorError::UnsupportedVersion { .. })
        ));
        let mut typo = text.clone().into_bytes();
        let last = typo.len() - 3;
        typo[last] = if typo[last] == b'a' { b'b' } else { b'a' };
        assert_eq!(
            decode("thing", 1, &String::from_utf8(typo).unwrap()),
            Err(ArmorError::Checksum)
        );
        let bad = text.replace("-v1:", "-v1:0");
        assert!(matches!(
            decode("thing", 1, &bad),
            Err(ArmorError::BadCharacter {
                character: '0',
                position: 0
            }) | Err(ArmorError::BadLength(_))
        ));
        let cut = &text[..text.len() - 8];
        assert_eq!(decode("thing", 1, cut), Err(ArmorError::Checksum));
    }
}
