//! The relay protocol: one message per WebSocket binary message, a type
//! byte then fixed fields, big-endian. Strict: a message whose length does
//! not match its type, or an unknown type, is an error, and the relay ends
//! the connection (close code [`close::PROTOCOL`]).
//!
//! ```text
//! client -> relay                          relay -> client
//! 0x01 HELLO   nonce[32]                   0x81 CHALLENGE nonce[32] sig[64]
//! 0x02 AUTH    grant[32] handle[32] sig[64] 0x82 WELCOME
//! 0x03 OPEN    circuit u32 to[32]          0x83 INCOMING  circuit u32 from[32]
//! 0x04 DATA    circuit u32 payload         0x84 OPENED    circuit u32
//! 0x05 CLOSE   circuit u32                 0x85 DATA      circuit u32 payload
//! 0x06 RETIRE  grant[32] sig[64]           0x86 CLOSED    circuit u32 reason u8
//! ```
//!
//! Circuit ids are per connection: a client numbers the circuits it opens
//! below `2^31`, the relay numbers the ones it announces with INCOMING from
//! `2^31` up, so the two never collide. DATA keeps the same five-byte header
//! both ways, so the relay forwards a frame by rewriting its first five
//! bytes in place ([`rewrite_for_peer`]), never copying the payload.

use thiserror::Error;

/// Largest DATA payload (32 KiB): big enough that framing costs under
/// 0.02 %, small enough that one frame never monopolises a connection.
pub const MAX_PAYLOAD: usize = 32 * 1024;
/// Largest message of either direction (a DATA header and payload).
pub const MAX_MESSAGE: usize = DATA_HEADER + MAX_PAYLOAD;
/// Length of the DATA header (type and circuit).
pub const DATA_HEADER: usize = 5;
/// The first circuit id the relay assigns (INCOMING); clients use ids below.
pub const RELAY_CIRCUITS: u32 = 1 << 31;

const HELLO: u8 = 0x01;
const AUTH: u8 = 0x02;
const OPEN: u8 = 0x03;
const DATA: u8 = 0x04;
const CLOSE: u8 = 0x05;
const RETIRE: u8 = 0x06;
const CHALLENGE: u8 = 0x81;
const WELCOME: u8 = 0x82;
const INCOMING: u8 = 0x83;
const OPENED: u8 = 0x84;
const SDATA: u8 = 0x85;
const CLOSED: u8 = 0x86;

/// WebSocket close codes the relay ends a connection with (4000-4999 are
/// for applications, RFC 6455 §7.4.2), each with a reason text.
pub mod close {
    /// A malformed or unexpected message.
    pub const PROTOCOL: u16 = 4000;
    /// The grant signature did not verify.
    pub const UNAUTHORIZED: u16 = 4001;
    /// The grant was retired (its epoch has ended).
    pub const RETIRED: u16 = 4002;
    /// Too many connections from this address.
    pub const PER_IP: u16 = 4003;
    /// Nothing received within the idle timeout.
    pub const IDLE: u16 = 4004;
    /// The relay holds as many clients as it may.
    pub const FULL: u16 = 4005;
    /// Another connection took this handle.
    pub const REPLACED: u16 = 4006;
    /// The client did not read what the relay had for it in time.
    pub const STALLED: u16 = 4007;
    /// HELLO and AUTH did not arrive in time.
    pub const HANDSHAKE_TIMEOUT: u16 = 4008;
    /// A message larger than the protocol allows (RFC 6455 §7.4.1).
    pub const TOO_BIG: u16 = 1009;
    /// The relay is shutting down.
    pub const GOING_AWAY: u16 = 1001;
}

/// Why a circuit was closed or an OPEN refused (CLOSED's reason byte).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CloseReason {
    /// The other end closed it.
    Closed,
    /// No client holds the handle the OPEN named.
    NoPeer,
    /// The opener, or the peer, has as many circuits as it may.
    CircuitLimit,
    /// The other end did not read for too long.
    Stalled,
    /// The other end's connection ended.
    PeerGone,
    /// The circuit id is in use or outside the opener's range.
    BadCircuit,
}

impl CloseReason {
    fn to_u8(self) -> u8 {
        match self {
            Self::Closed => 0,
            Self::NoPeer => 1,
            Self::CircuitLimit => 2,
            Self::Stalled => 3,
            Self::PeerGone => 4,
            Self::BadCircuit => 5,
        }
    }
    fn from_u8(b: u8) -> Result<Self, ProtoError> {
        Ok(match b {
            0 => Self::Closed,
            1 => Self::NoPeer,
            2 => Self::CircuitLimit,
            3 => Self::Stalled,
            4 => Self::PeerGone,
            5 => Self::BadCircuit,
            _ => return Err(ProtoError::Invalid("close reason")),
        })
    }
}

impl std::fmt::Display for CloseReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Closed => "closed by the other end",
            Self::NoPeer => "no such peer on the relay",
            Self::CircuitLimit => "circuit limit reached",
            Self::Stalled => "the other end stopped reading",
            Self::PeerGone => "the other end left the relay",
            Self::BadCircuit => "bad circuit id",
        })
    }
}

/// A malformed message.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum ProtoError {
    /// Empty message.
    #[error("empty message")]
    Empty,
    /// A type byte this protocol does not have.
    #[error("unknown message type {0:#04x}")]
    UnknownType(u8),
    /// The length does not match the type.
    #[error("message type {kind:#04x} of {len} bytes has the wrong length")]
    Length {
        /// The type byte.
        kind: u8,
        /// The message's length.
        len: usize,
    },
    /// A field out of range.
    #[error("invalid {0}")]
    Invalid(&'static str),
}

/// A message from a client to the relay. DATA's payload borrows the
/// message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ClientMsg<'a> {
    /// Opens the session: the client's fresh nonce.
    Hello {
        /// 32 random bytes.
        nonce: [u8; 32],
    },
    /// Proves the grant and claims a handle.
    Auth {
        /// The context's grant public key for this relay and epoch.
        grant: [u8; 32],
        /// The handle this client is reached under.
        handle: [u8; 32],
        /// The grant key's signature over [`crate::grant::auth_message`].
        sig: [u8; 64],
    },
    /// Opens a circuit to the client holding `to` under the same grant.
    Open {
        /// The opener's id for it (below [`RELAY_CIRCUITS`]).
        circuit: u32,
        /// The peer's handle.
        to: [u8; 32],
    },
    /// Bytes for the circuit's other end.
    Data {
        /// The circuit.
        circuit: u32,
        /// Opaque bytes.
        payload: &'a [u8],
    },
    /// Closes a circuit.
    Close {
        /// The circuit.
        circuit: u32,
    },
    /// Ends an earlier epoch's grant on this relay.
    Retire {
        /// The grant public key to retire.
        grant: [u8; 32],
        /// Its own signature over [`crate::grant::retire_message`].
        sig: [u8; 64],
    },
}

/// A message from the relay to a client.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ServerMsg<'a> {
    /// The relay's nonce and its signature over both nonces.
    Challenge {
        /// 32 random bytes.
        nonce: [u8; 32],
        /// The relay identity's signature over
        /// [`crate::grant::challenge_message`].
        sig: [u8; 64],
    },
    /// AUTH accepted.
    Welcome,
    /// A peer opened a circuit to this client.
    Incoming {
        /// The relay's id for it (from [`RELAY_CIRCUITS`] up).
        circuit: u32,
        /// The opener's handle.
        from: [u8; 32],
    },
    /// The OPEN reached its peer.
    Opened {
        /// The opener's id.
        circuit: u32,
    },
    /// Bytes from the circuit's other end.
    Data {
        /// The circuit.
        circuit: u32,
        /// Opaque bytes.
        payload: &'a [u8],
    },
    /// The circuit is closed (or the OPEN refused).
    Closed {
        /// The circuit.
        circuit: u32,
        /// Why.
        reason: CloseReason,
    },
}

fn arr<const N: usize>(b: &[u8]) -> [u8; N] {
    let mut a = [0u8; N];
    a.copy_from_slice(&b[..N]);
    a
}

fn u32_at(b: &[u8]) -> u32 {
    u32::from_be_bytes(arr::<4>(b))
}

fn check(kind: u8, body: &[u8], len: usize) -> Result<(), ProtoError> {
    if body.len() == len {
        Ok(())
    } else {
        Err(ProtoError::Length {
            kind,
            len: body.len() + 1,
        })
    }
}

fn data_body(kind: u8, body: &[u8]) -> Result<(u32, &[u8]), ProtoError> {
    if body.len() < 4 || body.len() > 4 + MAX_PAYLOAD {
        return Err(ProtoError::Length {
            kind,
            len: body.len() + 1,
        });
    }
    Ok((u32_at(body), &body[4..]))
}

impl<'a> ClientMsg<'a> {
    /// Decodes one message.
    pub fn decode(msg: &'a [u8]) -> Result<Self, ProtoError> {
        let (&kind, b) = msg.split_first().ok_or(ProtoError::Empty)?;
        Ok(match kind {
            HELLO => {
                check(kind, b, 32)?;
                Self::Hello { nonce: arr(b) }
            }
            AUTH => {
                check(kind, b, 128)?;
                Self::Auth {
                    grant: arr(b),
                    handle: arr(&b[32..]),
                    sig: arr(&b[64..]),
                }
            }
            OPEN => {
                check(kind, b, 36)?;
                Self::Open {
                    circuit: u32_at(b),
                    to: arr(&b[4..]),
                }
            }
            DATA => {
                let (circuit, payload) = data_body(kind, b)?;
                Self::Data { circuit, payload }
            }
            CLOSE => {
                check(kind, b, 4)?;
                Self::Close { circuit: u32_at(b) }
            }
            RETIRE => {
                check(kind, b, 96)?;
                Self::Retire {
                    grant: arr(b),
                    sig: arr(&b[32..]),
                }
            }
            other => return Err(ProtoError::UnknownType(other)),
        })
    }

    /// Encodes the message.
    pub fn encode(&self) -> Vec<u8> {
        let mut v = Vec::with_capacity(133);
        match self {
            Self::Hello { nonce } => {
                v.push(HELLO);
                v.extend_from_slice(nonce);
            }
            Self::Auth { grant, handle, sig } => {
                v.push(AUTH);
                v.extend_from_slice(grant);
                v.extend_from_slice(handle);
                v.extend_from_slice(sig);
            }
            Self::Open { circuit, to } => {
                v.push(OPEN);
                v.extend_from_slice(&circuit.to_be_bytes());
                v.extend_from_slice(to);
            }
            Self::Data { circuit, payload } => {
                v.reserve(payload.len());
                v.push(DATA);
                v.extend_from_slice(&circuit.to_be_bytes());
                v.extend_from_slice(payload);
            }
            Self::Close { circuit } => {
                v.push(CLOSE);
                v.extend_from_slice(&circuit.to_be_bytes());
            }
            Self::Retire { grant, sig } => {
                v.push(RETIRE);
                v.extend_from_slice(grant);
                v.extend_from_slice(sig);
            }
        }
        v
    }
}

impl<'a> ServerMsg<'a> {
    /// Decodes one message.
    pub fn decode(msg: &'a [u8]) -> Result<Self, ProtoError> {
        let (&kind, b) = msg.split_first().ok_or(ProtoError::Empty)?;
        Ok(match kind {
            CHALLENGE => {
                check(kind, b, 96)?;
                Self::Challenge {
                    nonce: arr(b),
                    sig: arr(&b[32..]),
                }
            }
            WELCOME => {
                check(kind, b, 0)?;
                Self::Welcome
            }
            INCOMING => {
                check(kind, b, 36)?;
                Self::Incoming {
                    circuit: u32_at(b),
                    from: arr(&b[4..]),
                }
            }
            OPENED => {
                check(kind, b, 4)?;
                Self::Opened { circuit: u32_at(b) }
            }
            SDATA => {
                let (circuit, payload) = data_body(kind, b)?;
                Self::Data { circuit, payload }
            }
            CLOSED => {
                check(kind, b, 5)?;
                Self::Closed {
                    circuit: u32_at(b),
                    reason: CloseReason::from_u8(b[4])?,
                }
            }
            other => return Err(ProtoError::UnknownType(other)),
        })
    }

    /// Encodes the message.
    pub fn encode(&self) -> Vec<u8> {
        let mut v = Vec::with_capacity(97);
        match self {
            Self::Challenge { nonce, sig } => {
                v.push(CHALLENGE);
                v.extend_from_slice(nonce);
                v.extend_from_slice(sig);
            }
            Self::Welcome => v.push(WELCOME),
            Self::Incoming { circuit, from } => {
                v.push(INCOMING);
                v.extend_from_slice(&circuit.to_be_bytes());
                v.extend_from_slice(from);
            }
            Self::Opened { circuit } => {
                v.push(OPENED);
                v.extend_from_slice(&circuit.to_be_bytes());
            }
            Self::Data { circuit, payload } => {
                v.reserve(payload.len());
                v.push(SDATA);
                v.extend_from_slice(&circuit.to_be_bytes());
                v.extend_from_slice(payload);
            }
            Self::Closed { circuit, reason } => {
                v.push(CLOSED);
                v.extend_from_slice(&circuit.to_be_bytes());
                v.push(reason.to_u8());
            }
        }
        v
    }
}

/// Turns a client's DATA message (already decoded once, so well formed)
/// into the relay's DATA for the peer's end `circuit`, in place.
pub fn rewrite_for_peer(msg: &mut [u8], circuit: u32) {
    debug_assert!(msg.len() >= DATA_HEADER && msg[0] == DATA);
    msg[0] = SDATA;
    msg[1..DATA_HEADER].copy_from_slice(&circuit.to_be_bytes());
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn every_message_round_trips() {
        let client = [
            ClientMsg::Hello { nonce: [1; 32] },
            ClientMsg::Auth {
                grant: [2; 32],
                handle: [3; 32],
                sig: [4; 64],
            },
            ClientMsg::Open {
                circuit: 7,
                to: [5; 32],
            },
            ClientMsg::Data {
                circuit: 9,
                payload: b"opaque",
            },
            ClientMsg::Data {
                circuit: 9,
                payload: &[0xaa; MAX_PAYLOAD],
            },
            ClientMsg::Close { circuit: 11 },
            ClientMsg::Retire {
                grant: [6; 32],
                sig: [7; 64],
            },
        ];
        for m in client {
            assert_eq!(ClientMsg::decode(&m.encode()).unwrap(), m);
        }
        let server = [
            ServerMsg::Challenge {
                nonce: [1; 32],
                sig: [2; 64],
            },
            ServerMsg::Welcome,
            ServerMsg::Incoming {
                circuit: RELAY_CIRCUITS,
                from: [3; 32],
            },
            ServerMsg::Opened { circuit: 3 },
            ServerMsg::Data {
                circuit: 4,
                payload: b"x",
            },
            ServerMsg::Closed {
                circuit: 5,
                reason: CloseReason::Stalled,
            },
        ];
        for m in server {
            assert_eq!(ServerMsg::decode(&m.encode()).unwrap(), m);
        }
    }

    #[test]
    fn wrong_lengths_unknown_types_and_oversized_data_are_refused() {
        assert_eq!(ClientMsg::decode(&[]), Err(ProtoError::Empty));
        assert_eq!(
            ClientMsg::decode(&[0x7f]),
            Err(ProtoError::UnknownType(0x7f))
        );
        // A server message type sent by a client is unknown to the relay.
        assert_eq!(
            ClientMsg::decode(&[0x82]),
            Err(ProtoError::UnknownType(0x82))
        );
        let mut hello = ClientMsg::Hello { nonce: [0; 32] }.encode();
        hello.push(0);
        assert!(matches!(
            ClientMsg::decode(&hello),
            Err(ProtoError::Length { .. })
        ));
        assert!(matches!(
            ClientMsg::decode(&[DATA, 0, 0]),
            Err(ProtoError::Length { .. })
        ));
        let mut big = vec![DATA, 0, 0, 0, 1];
        big.resize(MAX_MESSAGE + 1, 0);
        assert!(matches!(
            ClientMsg::decode(&big),
            Err(ProtoError::Length { .. })
        ));
        assert_eq!(
            ServerMsg::decode(&[CLOSED, 0, 0, 0, 1, 9]),
            Err(ProtoError::Invalid("close reason"))
        );
    }

    #[test]
    fn rewriting_a_client_data_frame_gives_the_peers_frame_with_the_same_payload() {
        let mut m = ClientMsg::Data {
            circuit: 3,
            payload: b"ciphertext",
        }
        .encode();
        rewrite_for_peer(&mut m, RELAY_CIRCUITS + 8);
        assert_eq!(
            ServerMsg::decode(&m).unwrap(),
            ServerMsg::Data {
                circuit: RELAY_CIRCUITS + 8,
                payload: b"ciphertext"
            }
        );
    }
}
