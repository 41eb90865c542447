//! The relay token members paste: `rdv-relay-v1:AUTHORITY@IP:PORT`, the
//! relay's authority (64 hex digits, as `rdv id` and `ready` lines print
//! authorities) and the numeric socket address its WebSocket listens on.
//! One token, no spaces, so it survives copy and paste and shell quoting.

use std::fmt;
use std::net::SocketAddr;
use std::str::FromStr;

use rdv_context::AuthorityId;

const PREFIX: &str = "rdv-relay-v1:";

/// Where a relay listens and who it is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct RelayToken {
    /// The relay's authority.
    pub authority: AuthorityId,
    /// Its WebSocket listener.
    pub addr: SocketAddr,
}

impl RelayToken {
    /// The WebSocket URL to dial.
    pub fn url(&self) -> String {
        format!("ws://{}{}", self.addr, crate::PATH)
    }
}

impl fmt::Display for RelayToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{PREFIX}{}@{}", self.authority, self.addr)
    }
}

/// Why a token did not parse.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error(
    "not a relay token ({0}); expected rdv-relay-v1:AUTHORITY@IP:PORT as `rdv point --relay-listen` prints it"
)]
pub struct TokenError(&'static str);

impl FromStr for RelayToken {
    type Err = TokenError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let rest = s
            .trim()
            .strip_prefix(PREFIX)
            .ok_or(TokenError("no rdv-relay-v1: prefix"))?;
        let (auth, addr) = rest
            .split_once('@')
            .ok_or(TokenError("no @ between authority and address"))?;
        let authority = auth
            .parse()
            .map_err(|_| TokenError("the authority is not 64 hex digits of an Ed25519 key"))?;
        let addr: SocketAddr = addr
            .parse()
            .map_err(|_| TokenError("the address is not a numeric IP:PORT"))?;
        if addr.ip().is_unspecified() || addr.port() == 0 {
            return Err(TokenError("the address is unspecified or port 0"));
        }
        Ok(Self { authority, addr })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn tokens_round_trip_and_bad_ones_say_why() {
        let authority = crate::RelayIdentity::from_seed(&[1; 32]).authority();
        for addr in ["203.0.113.7:4002", "[2001:db8::1]:443"] {
            let t = RelayToken {
                authority,
                addr: addr.parse().unwrap(),
            };
            assert_eq!(t.to_string().parse::<RelayToken>().unwrap(), t);
        }
        let good = format!("rdv-relay-v1:{authority}@203.0.113.7:4002");
        assert!(good.parse::<RelayToken>().is_ok());
        for bad in [
            "",
            "203.0.113.7:4002",
            "rdv-relay-v1:abc@203.0.113.7:4002",
            &format!("rdv-relay-v1:{authority}"),
            &format!("rdv-relay-v1:{authority}@relay.example:4002"),
            &format!("rdv-relay-v1:{authority}@0.0.0.0:4002"),
        ] {
            let e = bad.parse::<RelayToken>().unwrap_err();
            assert!(e.to_string().contains("rdv point --relay-listen"), "{e}");
        }
    }
}
