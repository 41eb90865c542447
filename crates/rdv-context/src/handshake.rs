//! The boundary with the secure-channel layer.
//!
//! The service decides *whether* a handshake message may be sent (guard,
//! budget, PSK, descriptor); the secure-channel layer (Noise IKpsk2) makes
//! the bytes. [`Handshaker`] is the seam: the secure-channel crate
//! implements it, and the service calls it only after the guard allowed the
//! operation, so a denied request costs no cryptography and leaves no
//! handshake state. The messages are opaque bytes tagged with the context,
//! epoch and route, bounded by the Noise message limit.

use crate::codec::{DecodeError, Reader, Writer};
use crate::descriptor::TransportHint;
use crate::ids::{AuthorityId, ContextId, Epoch};

/// Largest handshake payload: a Noise message is at most 65 535 bytes.
pub const MAX_HANDSHAKE_PAYLOAD: usize = 65_535;

/// How a handshake travels.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Route {
    /// Over a direct transport.
    Direct,
    /// Through a relay.
    Relay,
}

/// Length of [`HandshakeInit::mac1`].
pub const MAC1_LEN: usize = 16;

const MAC1_KEY_CONTEXT: &str = "rdv handshake mac1 v1";

/// The key of [`HandshakeInit::mac1`] for a responder: derived from its
/// static X25519 public key, which only the context's members learn (from
/// descriptors sealed under the epoch key).
pub fn mac1_key(responder_static: &[u8; 32]) -> [u8; 32] {
    blake3::derive_key(MAC1_KEY_CONTEXT, responder_static)
}

/// The first handshake message (Noise IKpsk2 message 1), opaque here.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HandshakeInit {
    /// The context.
    pub context_id: ContextId,
    /// The epoch whose PSK it uses.
    pub epoch: Epoch,
    /// How it travels.
    pub route: Route,
    /// The Noise message.
    pub payload: Vec<u8>,
    /// A MAC over everything before it, under [`mac1_key`] of the
    /// responder's static key: the responder checks it (one keyed hash)
    /// before any X25519 work, so a stranger who does not know the
    /// responder's static key cannot make it spend two scalar
    /// multiplications per message (WireGuard's `mac1`, Donenfeld,
    /// "WireGuard: Next Generation Kernel Network Tunnel", NDSS 2017,
    /// section 5.4.4). It authenticates nothing else: Noise does.
    pub mac1: [u8; MAC1_LEN],
}

/// The answer (Noise IKpsk2 message 2), opaque here.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HandshakeComplete {
    /// The context.
    pub context_id: ContextId,
    /// The epoch whose PSK it uses.
    pub epoch: Epoch,
    /// The Noise message.
    pub payload: Vec<u8>,
}

fn write_common(w: &mut Writer, context: &ContextId, epoch: Epoch) {
    w.u8(1).raw(context.as_bytes()).u64(epoch);
}

fn read_common(r: &mut Reader<'_>) -> Result<(ContextId, Epoch), DecodeError> {
    let v = r.u8("handshake version")?;
    if v != 1 {
        return Err(DecodeError::UnknownTag {
            what: "handshake version",
            tag: v,
        });
    }
    Ok((
        ContextId::from_bytes(r.array("context id")?),
        r.u64("epoch")?,
    ))
}

impl HandshakeInit {
    /// Message 1 for the responder whose static key is `responder_static`,
    /// with its [`HandshakeInit::mac1`].
    pub fn new(
        context_id: ContextId,
        epoch: Epoch,
        route: Route,
        payload: Vec<u8>,
        responder_static: &[u8; 32],
    ) -> Self {
        let mut init = Self {
            context_id,
            epoch,
            route,
            payload,
            mac1: [0; MAC1_LEN],
        };
        init.mac1 = init.compute_mac1(&mac1_key(responder_static));
        init
    }
    /// Whether [`HandshakeInit::mac1`] is right for the responder whose
    /// [`mac1_key`] is `key` (constant time).
    pub fn mac1_matches(&self, key: &[u8; 32]) -> bool {
        let want = self.compute_mac1(key);
        want.iter()
            .zip(self.mac1.iter())
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0
    }
    fn compute_mac1(&self, key: &[u8; 32]) -> [u8; MAC1_LEN] {
        let body = self.body();
        let mut out = [0; MAC1_LEN];
        out.copy_from_slice(&blake3::keyed_hash(key, &body.buf).as_bytes()[..MAC1_LEN]);
        out
    }
    fn body(&self) -> Writer {
        let mut w = Writer::with_capacity(48 + MAC1_LEN + self.payload.len());
        write_common(&mut w, &self.context_id, self.epoch);
        w.u8(match self.route {
            Route::Direct => 0,
            Route::Relay => 1,
        })
        .bytes32(&self.payload);
        w
    }
    /// Bytes: version, context, epoch, route, payload (32-bit length), mac1.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut w = self.body();
        w.raw(&self.mac1);
        w.into_vec()
    }
    /// Decodes [`HandshakeInit::to_bytes`].
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, DecodeError> {
        let mut r = Reader::new(bytes);
        let (context_id, epoch) = read_common(&mut r)?;
        let route = match r.u8("route")? {
            0 => Route::Direct,
            1 => Route::Relay,
            tag => return Err(DecodeError::UnknownTag { what: "route", tag }),
        };
        let payload = r
            .bytes32("handshake payload", MAX_HANDSHAKE_PAYLOAD)?
            .to_vec();
        let mac1 = r.array("mac1")?;
        r.finish("handshake init")?;
        Ok(Self {
            context_id,
            epoch,
            route,
            payload,
            mac1,
        })
    }
}

impl HandshakeComplete {
    /// Bytes: version, context, epoch, payload (32-bit length).
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut w = Writer::with_capacity(48 + self.payload.len());
        write_common(&mut w, &self.context_id, self.epoch);
        w.bytes32(&self.payload);
        w.into_vec()
    }
    /// Decodes [`HandshakeComplete::to_bytes`].
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, DecodeError> {
        let mut r = Reader::new(bytes);
        let (context_id, epoch) = read_common(&mut r)?;
        let payload = r
            .bytes32("handshake payload", MAX_HANDSHAKE_PAYLOAD)?
            .to_vec();
        r.finish("handshake complete")?;
        Ok(Self {
            context_id,
            epoch,
            payload,
        })
    }
}

/// What a handshaker needs to know.
#[derive(Debug)]
pub struct HandshakeParams<'a> {
    /// The context.
    pub context_id: ContextId,
    /// The epoch.
    pub epoch: Epoch,
    /// This side.
    pub local: AuthorityId,
    /// The other side.
    pub remote: AuthorityId,
    /// The pairwise PSK of the epoch.
    pub psk: &'a [u8; 32],
    /// The remote's static X25519 key, from its verified descriptor
    /// (initiator side; IK needs it). `None` on the responder side, where
    /// Noise reveals it.
    pub remote_static: Option<[u8; 32]>,
    /// The transport chosen (initiator side).
    pub transport: Option<&'a TransportHint>,
    /// The route of the handshake (direct or through a relay). It travels
    /// in clear in [`HandshakeInit`] and decides the responder's cost and
    /// capability check, so handshakers bind it into the Noise prologue:
    /// a route flipped on the way makes message 1 fail to open (issue 13,
    /// item 6).
    pub route: Route,
}

/// The responder's result.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Responded {
    /// Noise message 2.
    pub payload: Vec<u8>,
    /// The channel id (the handshake hash).
    pub channel_id: [u8; 32],
}

/// The secure-channel side of a handshake, implemented by the
/// secure-channel layer. Errors are local: the service sends nothing when
/// one occurs.
pub trait Handshaker {
    /// The error type.
    type Error: std::error::Error;
    /// Builds message 1 for `params`.
    fn initiate(&mut self, params: &HandshakeParams<'_>) -> Result<Vec<u8>, Self::Error>;
    /// Processes message 1 and builds message 2. Must check that the
    /// initiator's static key (revealed by Noise) belongs to `params.remote`.
    fn respond(
        &mut self,
        params: &HandshakeParams<'_>,
        init: &[u8],
    ) -> Result<Responded, Self::Error>;
}
