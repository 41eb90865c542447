//! Receipts: signed, hash-chained records of guarded operations.
//!
//! The sender signs each receipt; receipt `n` names the hash of receipt
//! `n-1` of the same (context, sender) and carries `seq = n`. The chain
//! starts from a fixed genesis value per (context, sender). A verifier that
//! follows a chain therefore detects a missing receipt (sequence gap), a
//! reordered or replayed one (sequence behind, or a link that does not
//! match), a forged one (signature) and one moved from another context.

use hashbrown::HashMap;

use crate::codec::{DecodeError, Reader, Writer};
use crate::guard::Operation;
use crate::identity::{Identity, signing_message};
use crate::ids::{AuthorityId, ContextId, Epoch};

const RECEIPT_DOMAIN: &str = "rdv context v1 receipt";
const RECEIPT_ID_LABEL: &str = "rdv context v1 receipt-id";
const GENESIS_LABEL: &str = "rdv context v1 receipt-genesis";
const RECEIPT_VERSION: u8 = 1;

/// A receipt of one guarded operation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Receipt {
    /// The context.
    pub context_id: ContextId,
    /// Who acted and signed.
    pub sender: AuthorityId,
    /// The context epoch.
    pub epoch: Epoch,
    /// Position in the sender's chain for this context, from 0.
    pub seq: u64,
    /// What was done.
    pub operation: Operation,
    /// With whom.
    pub peer: Option<AuthorityId>,
    /// Flow cost charged.
    pub cost: u32,
    /// When (ms since the Unix epoch, the caller's clock).
    pub timestamp_ms: u64,
    /// Hash of the previous receipt (or the chain's genesis value).
    pub prev: [u8; 32],
    /// The sender's signature over everything above.
    pub signature: [u8; 64],
}

/// The hash the first receipt of (context, sender) links to.
pub fn genesis(context: &ContextId, sender: &AuthorityId) -> [u8; 32] {
    let mut h = blake3::Hasher::new_derive_key(GENESIS_LABEL);
    h.update(context.as_bytes());
    h.update(sender.as_bytes());
    *h.finalize().as_bytes()
}

impl Receipt {
    fn body(&self) -> Vec<u8> {
        let mut w = Writer::with_capacity(200);
        w.u8(RECEIPT_VERSION)
            .raw(self.context_id.as_bytes())
            .raw(self.sender.as_bytes())
            .u64(self.epoch)
            .u64(self.seq)
            .u8(self.operation.tag());
        match &self.peer {
            Some(p) => w.u8(1).raw(p.as_bytes()),
            None => w.u8(0),
        };
        w.u32(self.cost).u64(self.timestamp_ms).raw(&self.prev);
        w.into_vec()
    }
    /// Canonical bytes.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut b = self.body();
        b.extend_from_slice(&self.signature);
        b
    }
    /// Decodes canonical bytes (structure only; see [`ReceiptVerifier`]).
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, DecodeError> {
        let mut r = Reader::new(bytes);
        let v = r.u8("receipt version")?;
        if v != RECEIPT_VERSION {
            return Err(DecodeError::UnknownTag {
                what: "receipt version",
                tag: v,
            });
        }
        let context_id = ContextId::from_bytes(r.array("context id")?);
        let sender = AuthorityId::from_bytes(r.array("sender")?)?;
        let epoch = r.u64("epoch")?;
        let seq = r.u64("seq")?;
        let op = r.u8("operation")?;
        let operation = Operation::from_tag(op).ok_or(DecodeError::UnknownTag {
            what: "operation",
            tag: op,
        })?;
        let peer = match r.u8("peer flag")? {
            0 => None,
            1 => Some(AuthorityId::from_bytes(r.array("peer")?)?),
            tag => {
                return Err(DecodeError::UnknownTag {
                    what: "peer flag",
                    tag,
                });
            }
        };
        let cost = r.u32("cost")?;
        let timestamp_ms = r.u64("timestamp")?;
        let prev = r.array("prev")?;
        let signature = r.array("signature")?;
        r.finish("receipt")?;
        Ok(Self {
            context_id,
            sender,
            epoch,
            seq,
            operation,
            peer,
            cost,
            timestamp_ms,
            prev,
            signature,
        })
    }
    /// The receipt's hash (what the next one links to).
    pub fn hash(&self) -> [u8; 32] {
        let mut h = blake3::Hasher::new_derive_key(RECEIPT_ID_LABEL);
        h.update(&self.to_bytes());
        *h.finalize().as_bytes()
    }
    /// Whether the signature is the sender's.
    pub fn verify_signature(&self) -> bool {
        self.sender.verify(
            &signing_message(RECEIPT_DOMAIN, &self.body()),
            &self.signature,
        )
    }
}

/// A receipt that breaks its chain.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ReceiptError {
    /// Forged or altered.
    #[error("receipt signature does not verify")]
    BadSignature,
    /// Receipts are missing before this one.
    #[error("receipt {found} arrived but {expected} was expected: receipts are missing")]
    Missing {
        /// The next sequence number expected.
        expected: u64,
        /// The one received.
        found: u64,
    },
    /// A receipt at or before the chain's head: replayed or reordered.
    #[error("receipt {found} is behind the chain head (next is {expected}): replayed or reordered")]
    Reordered {
        /// The next sequence number expected.
        expected: u64,
        /// The one received.
        found: u64,
    },
    /// The sequence number fits but the link does not: the chain forked or
    /// a receipt was replaced.
    #[error("receipt {seq} does not link to the previous receipt")]
    BrokenLink {
        /// Its sequence number.
        seq: u64,
    },
    /// Too many chains tracked.
    #[error("receipt verifier tracks its maximum of {0} chains")]
    Full(usize),
}

#[derive(Clone, Copy, Debug)]
struct Head {
    next_seq: u64,
    prev: [u8; 32],
}

/// The sender's side: issues the next receipt of each chain.
#[derive(Debug, Default, Clone)]
pub struct ReceiptLog {
    heads: HashMap<ContextId, Head>,
}

impl ReceiptLog {
    /// An empty log.
    pub fn new() -> Self {
        Self::default()
    }
    /// Resumes a chain from its last receipt (after a restart).
    pub fn resume(&mut self, last: &Receipt) {
        self.heads.insert(
            last.context_id,
            Head {
                next_seq: last.seq + 1,
                prev: last.hash(),
            },
        );
    }
    /// Signs and chains the next receipt of `identity` in `context`.
    #[allow(clippy::too_many_arguments)]
    pub fn issue(
        &mut self,
        identity: &Identity,
        context_id: ContextId,
        epoch: Epoch,
        operation: Operation,
        peer: Option<AuthorityId>,
        cost: u32,
        timestamp_ms: u64,
    ) -> Receipt {
        let sender = identity.authority();
        let head = self.heads.entry(context_id).or_insert(Head {
            next_seq: 0,
            prev: genesis(&context_id, &sender),
        });
        let mut r = Receipt {
            context_id,
            sender,
            epoch,
            seq: head.next_seq,
            operation,
            peer,
            cost,
            timestamp_ms,
            prev: head.prev,
            signature: [0; 64],
        };
        r.signature = identity.sign(RECEIPT_DOMAIN, &r.body());
        head.next_seq += 1;
        head.prev = r.hash();
        r
    }
}

/// The auditor's side: follows the chains of many (context, sender) pairs.
#[derive(Debug, Clone)]
pub struct ReceiptVerifier {
    heads: HashMap<(ContextId, AuthorityId), Head>,
    max_chains: usize,
}

impl ReceiptVerifier {
    /// A verifier following at most `max_chains` chains.
    pub fn new(max_chains: usize) -> Self {
        Self {
            heads: HashMap::new(),
            max_chains,
        }
    }
    /// Accepts the next receipt of its chain, or says how the chain broke.
    /// A refused receipt changes nothing.
    pub fn accept(&mut self, r: &Receipt) -> Result<(), ReceiptError> {
        if !r.verify_signature() {
            return Err(ReceiptError::BadSignature);
        }
        let key = (r.context_id, r.sender);
        let head = match self.heads.get(&key) {
            Some(h) => *h,
            None => {
                if self.heads.len() >= self.max_chains {
                    return Err(ReceiptError::Full(self.max_chains));
                }
                Head {
                    next_seq: 0,
                    prev: genesis(&r.context_id, &r.sender),
                }
            }
        };
        if r.seq > head.next_seq {
            return Err(ReceiptError::Missing {
                expected: head.next_seq,
                found: r.seq,
            });
        }
        if r.seq < head.next_seq {
            return Err(ReceiptError::Reordered {
                expected: head.next_seq,
                found: r.seq,
            });
        }
        if r.prev != head.prev {
            return Err(ReceiptError::BrokenLink { seq: r.seq });
        }
        self.heads.insert(
            key,
            Head {
                next_seq: r.seq + 1,
                prev: r.hash(),
            },
        );
        Ok(())
    }
}

/// Checks a whole chain in order.
pub fn verify_chain<'a>(
    receipts: impl IntoIterator<Item = &'a Receipt>,
) -> Result<(), ReceiptError> {
    let mut v = ReceiptVerifier::new(usize::MAX);
    receipts.into_iter().try_for_each(|r| v.accept(r))
}
