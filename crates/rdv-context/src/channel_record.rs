//! The journal's record of a channel, sealed under the epoch (issue 13,
//! item 8: privacy of the journal).
//!
//! Who opened a channel with whom is the context's social graph. The
//! journal is copied by sync and stored on every member's disk, so a stolen
//! disk, a backup or a removed member's old copy would show it in clear.
//! The record is therefore sealed (XChaCha20-Poly1305) under the epoch's
//! record key (`docs/KEY-SCHEDULE.md`): only members of that epoch read it.
//! What stays readable is what a reader needs to pick the key: the epoch.
//!
//! Bytes: `epoch (8) | nonce (24) | ciphertext (208)`. Plaintext:
//! `initiator (32) | responder (32) | channel id (32) | channel epoch (8) |
//! recorder (32) | signature (64)`, the signature the recorder's over the
//! context and those fields (as before sealing: a member cannot record
//! channels it was not an end of). Associated data: the context id and
//! the sealing epoch.
//!
//! The nonce is synthetic ([`crate::record_seal`]): recording is
//! idempotent and needs no random source.

use crate::codec::{DecodeError, Reader, Writer};
use crate::identity::{Identity, signing_message};
use crate::ids::{AuthorityId, ContextId, Epoch};
use crate::keys::EpochKeys;
use crate::record_seal::{FixedRecord, RecordError};
use crate::seal::AEAD_TAG_LEN;

const CHANNEL_DOMAIN: &str = "rdv context v1 channel-established";
const AD_LABEL: &[u8] = b"rdv context v1 sealed channel record";
const PLAIN_LEN: usize = 32 + 32 + 32 + 8 + 32 + 64;
/// Length of a sealed record's ciphertext.
pub const SEALED_CHANNEL_CIPHERTEXT_LEN: usize = PLAIN_LEN + AEAD_TAG_LEN;

/// A channel between two members, as its recorder signed it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ChannelRecord {
    /// Who started the handshake.
    pub initiator: AuthorityId,
    /// Who answered it.
    pub responder: AuthorityId,
    /// The channel id (the handshake hash).
    pub channel_id: [u8; 32],
    /// The context epoch of the handshake.
    pub epoch: Epoch,
    /// The end that recorded it: the initiator or the responder.
    pub recorder: AuthorityId,
}

/// A [`ChannelRecord`] sealed under one epoch's record key.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct SealedChannel(FixedRecord<SEALED_CHANNEL_CIPHERTEXT_LEN>);

fn signed_body(context: &ContextId, r: &ChannelRecord) -> Vec<u8> {
    let mut w = Writer::with_capacity(168);
    w.raw(context.as_bytes())
        .raw(r.initiator.as_bytes())
        .raw(r.responder.as_bytes())
        .raw(&r.channel_id)
        .u64(r.epoch)
        .raw(r.recorder.as_bytes());
    w.into_vec()
}

impl SealedChannel {
    /// `identity`'s signed record of a channel it is an end of, sealed
    /// under `keys` (its context's current epoch).
    pub fn seal(
        identity: &Identity,
        keys: &EpochKeys,
        initiator: AuthorityId,
        responder: AuthorityId,
        channel_id: [u8; 32],
        channel_epoch: Epoch,
    ) -> Self {
        let record = ChannelRecord {
            initiator,
            responder,
            channel_id,
            epoch: channel_epoch,
            recorder: identity.authority(),
        };
        let context = keys.context_id();
        let signature = identity.sign(CHANNEL_DOMAIN, &signed_body(&context, &record));
        let mut w = Writer::with_capacity(PLAIN_LEN);
        w.raw(initiator.as_bytes())
            .raw(responder.as_bytes())
            .raw(&channel_id)
            .u64(channel_epoch)
            .raw(record.recorder.as_bytes())
            .raw(&signature);
        let plain = zeroize::Zeroizing::new(w.into_vec());
        Self(FixedRecord::seal(keys, AD_LABEL, &plain))
    }

    /// The epoch whose key sealed it (readable).
    pub fn epoch(&self) -> Epoch {
        self.0.epoch
    }

    /// Opens with `keys` and checks the record: the ends differ, the
    /// recorder is one of them, and the signature is the recorder's.
    pub fn open(&self, keys: &EpochKeys) -> Result<ChannelRecord, RecordError> {
        let context = keys.context_id();
        let plain = self.0.open(keys, AD_LABEL)?;
        let mut r = Reader::new(&plain);
        let mut read = || -> Result<(ChannelRecord, [u8; 64]), DecodeError> {
            let record = ChannelRecord {
                initiator: AuthorityId::from_bytes(r.array("initiator")?)?,
                responder: AuthorityId::from_bytes(r.array("responder")?)?,
                channel_id: r.array("channel id")?,
                epoch: r.u64("channel epoch")?,
                recorder: AuthorityId::from_bytes(r.array("recorder")?)?,
            };
            let signature = r.array("signature")?;
            Ok((record, signature))
        };
        let (record, signature) = read().map_err(|_| RecordError::Malformed)?;
        let ends_ok = record.initiator != record.responder
            && (record.recorder == record.initiator || record.recorder == record.responder);
        // The recorder seals under its installed epoch, and the channel's
        // epoch is that one or the one before (a member one epoch behind
        // is answered under its epoch). Any other pairing is a record
        // re-sealed under another epoch's key by a member holding both: a
        // second fact for one channel.
        let sealed = self.0.epoch;
        if !(record.epoch == sealed || record.epoch.checked_add(1) == Some(sealed)) {
            return Err(RecordError::Malformed);
        }
        if !ends_ok
            || !record.recorder.verify(
                &signing_message(CHANNEL_DOMAIN, &signed_body(&context, &record)),
                &signature,
            )
        {
            return Err(RecordError::BadSignature);
        }
        Ok(record)
    }

    pub(crate) fn write(&self, w: &mut Writer) {
        self.0.write(w);
    }

    pub(crate) fn read(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        FixedRecord::read(r, "sealed channel record").map(Self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record_seal::test_keys as keys;

    fn id(seed: u8) -> Identity {
        Identity::from_secret_bytes([seed; 32], [seed.wrapping_add(100); 32])
    }

    #[test]
    fn a_record_opens_under_its_epoch_only_and_shows_no_authority() {
        let (a, b) = (id(1), id(2));
        let k = keys(3, 5);
        let sealed = SealedChannel::seal(&b, &k, a.authority(), b.authority(), [7; 32], 3);
        let record = sealed.open(&k).unwrap();
        assert_eq!(
            record,
            ChannelRecord {
                initiator: a.authority(),
                responder: b.authority(),
                channel_id: [7; 32],
                epoch: 3,
                recorder: b.authority(),
            }
        );
        // Idempotent: the same record seals to the same bytes.
        let again = SealedChannel::seal(&b, &k, a.authority(), b.authority(), [7; 32], 3);
        assert_eq!(sealed, again);
        // Nothing of either authority in the bytes a journal holds.
        let mut w = Writer::with_capacity(256);
        sealed.write(&mut w);
        let bytes = w.into_vec();
        for who in [a.authority(), b.authority()] {
            assert!(!bytes.windows(32).any(|x| x == who.as_bytes()));
        }
        // Another epoch's keys, or another secret for the same epoch number.
        assert_eq!(
            sealed.open(&keys(4, 5)),
            Err(RecordError::WrongEpoch {
                expected: 4,
                found: 3
            })
        );
        assert_eq!(sealed.open(&keys(3, 6)), Err(RecordError::WrongKey));
    }

    #[test]
    fn only_an_end_of_the_channel_can_record_it() {
        let (a, b, c) = (id(1), id(2), id(3));
        let k = keys(0, 5);
        // Carol, holding the key, records a channel between Alice and Bob.
        let forged = SealedChannel::seal(&c, &k, a.authority(), b.authority(), [7; 32], 0);
        assert_eq!(forged.open(&k), Err(RecordError::BadSignature));
        // A channel with oneself.
        let odd = SealedChannel::seal(&a, &k, a.authority(), a.authority(), [7; 32], 0);
        assert_eq!(odd.open(&k), Err(RecordError::BadSignature));
        // A flipped ciphertext bit does not open.
        let mut damaged = SealedChannel::seal(&a, &k, a.authority(), b.authority(), [7; 32], 0);
        damaged.0.ciphertext[0] ^= 1;
        assert_eq!(damaged.open(&k), Err(RecordError::WrongKey));
        // (A record re-sealed under another nonce: `record_seal`'s tests.)
    }

    #[test]
    fn a_record_sealed_far_from_its_channels_epoch_is_refused() {
        let (a, b) = (id(1), id(2));
        // Sealed under epoch 4: a channel of epoch 4 or 3 (a member one
        // epoch behind), nothing else (a record moved between epochs).
        let k = keys(4, 5);
        for (channel_epoch, ok) in [(4, true), (3, true), (2, false), (5, false)] {
            let sealed =
                SealedChannel::seal(&a, &k, a.authority(), b.authority(), [7; 32], channel_epoch);
            assert_eq!(sealed.open(&k).is_ok(), ok, "channel epoch {channel_epoch}");
        }
    }
}
