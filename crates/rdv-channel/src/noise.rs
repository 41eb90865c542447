//! The Noise layer: `Noise_IKpsk2_25519_ChaChaPoly_BLAKE2s` on `snow`, with
//! injected randomness, and the transport cipher we run ourselves.
//!
//! Two facts this module exists to get right (`shared/SPEC-NOTES.md` §4):
//!
//! * **The PSK goes in slot 2.** The `psk2` modifier puts the `psk` token at
//!   the end of message 2. snow only complains when that token is processed,
//!   so a PSK in slot 1 builds fine and fails on message 2 with
//!   `MissingPsk`; [`PSK_SLOT`] is the one place the slot is named, and a
//!   test proves slot 1 fails.
//! * **Transport keys are ours.** snow's cipher states do not wipe their
//!   keys, so after the handshake we take the two split keys
//!   (`risky-raw-split`) into [`DirectionKey`]s (ChaCha20-Poly1305 with its
//!   `zeroize` feature: the key is wiped on drop) and drop the handshake
//!   state. The nonce layout is Noise's: 4 zero bytes then the 64-bit
//!   counter little-endian, empty associated data, so the cacophony
//!   transport vectors check this code too.
//! * **Handshake secrets are wiped.** snow 0.10 wipes nothing itself. Our
//!   resolver hands snow a DH ([`WipedDh`]: the static and ephemeral private
//!   keys) and a cipher ([`WipedChaChaPoly`]: the handshake's `k`) that wipe
//!   their keys on drop, and [`split`] overwrites the PSK slot before the
//!   state is dropped. What snow keeps in its own arrays, the chaining key
//!   and the handshake hash, it does not let us reach: they are not wiped
//!   (the chaining key is one-way from the transport keys, and the
//!   handshake hash is public, the channel id).

use chacha20poly1305::aead::{AeadInOut, KeyInit};
use chacha20poly1305::{ChaCha20Poly1305, Key, Nonce, Tag};
use rdv_context::SeededRng;
use snow::params::NoiseParams;
use snow::resolvers::{CryptoResolver, DefaultResolver};
use snow::types::{Cipher, Dh, Hash, Random};
use zeroize::Zeroizing;

/// The Noise protocol name.
pub const PATTERN: &str = "Noise_IKpsk2_25519_ChaChaPoly_BLAKE2s";
/// The snow PSK slot of `psk2`: the token sits at the end of message 2.
pub const PSK_SLOT: u8 = 2;
/// Largest Noise message (Noise spec §3).
pub const MAX_NOISE_MESSAGE: usize = 65_535;
/// AEAD tag length.
pub const TAG_LEN: usize = 16;

/// Where the ephemeral key comes from. Randomness is injected: the caller
/// draws a 32-byte seed from its generator, and snow expands it.
#[derive(Clone)]
pub(crate) enum Entropy {
    /// A seed for [`SeededRng`].
    Seed(Zeroizing<[u8; 32]>),
    /// The exact ephemeral private key (test vectors only).
    #[cfg(test)]
    Exact([u8; 32]),
}

struct InjectedRandom(Option<SeededRng>, #[cfg(test)] Option<[u8; 32]>);

impl Random for InjectedRandom {
    fn try_fill_bytes(&mut self, dest: &mut [u8]) -> Result<(), snow::Error> {
        #[cfg(test)]
        if let Some(exact) = self.1.take() {
            if dest.len() != exact.len() {
                return Err(snow::Error::Rng);
            }
            dest.copy_from_slice(&exact);
            return Ok(());
        }
        match self.0.as_mut() {
            Some(r) => {
                rdv_context::rand_core::Rng::fill_bytes(r, dest);
                Ok(())
            }
            None => Err(snow::Error::Rng),
        }
    }
}

struct Resolver(std::sync::Mutex<Option<Entropy>>);

impl CryptoResolver for Resolver {
    fn resolve_rng(&self) -> Option<Box<dyn Random>> {
        let entropy = self.0.lock().ok()?.take()?;
        Some(match entropy {
            Entropy::Seed(seed) => Box::new(InjectedRandom(
                Some(SeededRng::from_seed(*seed)),
                #[cfg(test)]
                None,
            )),
            #[cfg(test)]
            Entropy::Exact(k) => Box::new(InjectedRandom(None, Some(k))),
        })
    }
    fn resolve_dh(&self, choice: &snow::params::DHChoice) -> Option<Box<dyn Dh>> {
        match choice {
            snow::params::DHChoice::Curve25519 => Some(Box::<WipedDh>::default()),
            _ => None,
        }
    }
    fn resolve_hash(&self, choice: &snow::params::HashChoice) -> Option<Box<dyn Hash>> {
        DefaultResolver.resolve_hash(choice)
    }
    fn resolve_cipher(&self, choice: &snow::params::CipherChoice) -> Option<Box<dyn Cipher>> {
        match choice {
            snow::params::CipherChoice::ChaChaPoly => Some(Box::<WipedChaChaPoly>::default()),
            _ => None,
        }
    }
}

/// How many wiping DH and cipher key holders were dropped (tests check that
/// the handshake's secrets went through them).
#[cfg(test)]
pub(crate) static WIPED_DH: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
#[cfg(test)]
pub(crate) static WIPED_CIPHER: std::sync::atomic::AtomicUsize =
    std::sync::atomic::AtomicUsize::new(0);

/// snow's X25519 (RFC 7748) with the private key wiped on drop.
#[derive(Default)]
pub(crate) struct WipedDh {
    private: Zeroizing<[u8; 32]>,
    public: [u8; 32],
}

impl WipedDh {
    fn derive_public(&mut self) {
        self.public = x25519_dalek::x25519(*self.private, x25519_dalek::X25519_BASEPOINT_BYTES);
    }
}

#[cfg(test)]
impl Drop for WipedDh {
    fn drop(&mut self) {
        WIPED_DH.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }
}

impl Dh for WipedDh {
    fn name(&self) -> &'static str {
        "25519"
    }
    fn pub_len(&self) -> usize {
        32
    }
    fn priv_len(&self) -> usize {
        32
    }
    fn set(&mut self, privkey: &[u8]) {
        let n = privkey.len().min(32);
        self.private[..n].copy_from_slice(&privkey[..n]);
        self.derive_public();
    }
    fn generate(&mut self, rng: &mut dyn Random) -> Result<(), snow::Error> {
        rng.try_fill_bytes(&mut self.private[..])?;
        self.derive_public();
        Ok(())
    }
    fn pubkey(&self) -> &[u8] {
        &self.public
    }
    fn privkey(&self) -> &[u8] {
        &self.private[..]
    }
    fn dh(&self, pubkey: &[u8], out: &mut [u8]) -> Result<(), snow::Error> {
        let theirs: [u8; 32] = pubkey
            .get(..32)
            .and_then(|p| p.try_into().ok())
            .ok_or(snow::Error::Dh)?;
        let shared = Zeroizing::new(x25519_dalek::x25519(*self.private, theirs));
        out.get_mut(..32)
            .ok_or(snow::Error::Dh)?
            .copy_from_slice(&shared[..]);
        Ok(())
    }
}

/// snow's ChaChaPoly cipher (the handshake's `k`) with the key wiped on
/// drop.
#[derive(Default)]
pub(crate) struct WipedChaChaPoly {
    key: Zeroizing<[u8; 32]>,
}

#[cfg(test)]
impl Drop for WipedChaChaPoly {
    fn drop(&mut self) {
        WIPED_CIPHER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }
}

impl Cipher for WipedChaChaPoly {
    fn name(&self) -> &'static str {
        "ChaChaPoly"
    }
    fn set(&mut self, key: &[u8; 32]) {
        self.key.copy_from_slice(key);
    }
    fn encrypt(&self, nonce: u64, authtext: &[u8], plaintext: &[u8], out: &mut [u8]) -> usize {
        let n = plaintext.len();
        // snow sizes `out` for the plaintext and the tag; a shorter one is
        // a bug in the caller, reported as nothing written.
        let Some(body) = out.get_mut(..n + TAG_LEN) else {
            return 0;
        };
        body[..n].copy_from_slice(plaintext);
        let aead = ChaCha20Poly1305::new(&Key::from(*self.key));
        let (text, tag_out) = body.split_at_mut(n);
        match aead.encrypt_inout_detached(&DirectionKey::nonce(nonce), authtext, text.into()) {
            Ok(tag) => {
                tag_out.copy_from_slice(&tag);
                n + TAG_LEN
            }
            Err(_) => 0,
        }
    }
    fn decrypt(
        &self,
        nonce: u64,
        authtext: &[u8],
        ciphertext: &[u8],
        out: &mut [u8],
    ) -> Result<usize, snow::Error> {
        let n = ciphertext
            .len()
            .checked_sub(TAG_LEN)
            .ok_or(snow::Error::Decrypt)?;
        let body = out.get_mut(..n).ok_or(snow::Error::Decrypt)?;
        body.copy_from_slice(&ciphertext[..n]);
        let tag = Tag::try_from(&ciphertext[n..]).map_err(|_| snow::Error::Decrypt)?;
        ChaCha20Poly1305::new(&Key::from(*self.key))
            .decrypt_inout_detached(&DirectionKey::nonce(nonce), authtext, body.into(), &tag)
            .map_err(|_| snow::Error::Decrypt)?;
        Ok(n)
    }
}

fn params() -> Result<NoiseParams, snow::Error> {
    PATTERN.parse()
}

/// What a raw IKpsk2 handshake state is built from.
pub(crate) struct RawConfig<'a> {
    pub initiator: bool,
    pub local_private: &'a [u8; 32],
    /// Required for the initiator (IK); `None` for the responder.
    pub remote_public: Option<&'a [u8; 32]>,
    /// `None` builds a responder that reads message 1 before it knows
    /// which pair's PSK to use; the PSK is then set with
    /// [`set_psk`] before message 2.
    pub psk: Option<&'a [u8; 32]>,
    pub prologue: &'a [u8],
    pub entropy: Entropy,
    /// Test hook: put the PSK in this slot instead of [`PSK_SLOT`].
    #[cfg(test)]
    pub psk_slot: u8,
}

/// Builds an IKpsk2 handshake state.
pub(crate) fn build(cfg: RawConfig<'_>) -> Result<snow::HandshakeState, snow::Error> {
    let resolver = Box::new(Resolver(std::sync::Mutex::new(Some(cfg.entropy))));
    let mut b = snow::Builder::with_resolver(params()?, resolver)
        .local_private_key(cfg.local_private)?
        .prologue(cfg.prologue)?;
    #[cfg(test)]
    let slot = cfg.psk_slot;
    #[cfg(not(test))]
    let slot = PSK_SLOT;
    if let Some(psk) = cfg.psk {
        b = b.psk(slot, psk)?;
    }
    if let Some(rs) = cfg.remote_public {
        b = b.remote_public_key(rs)?;
    }
    if cfg.initiator {
        b.build_initiator()
    } else {
        b.build_responder()
    }
}

/// Sets the pair's PSK on a responder that read message 1 without it.
pub(crate) fn set_psk(hs: &mut snow::HandshakeState, psk: &[u8; 32]) -> Result<(), snow::Error> {
    hs.set_psk(usize::from(PSK_SLOT), psk)
}

/// The transport keys and handshake hash of a finished handshake.
pub(crate) struct Split {
    pub send: DirectionKey,
    pub recv: DirectionKey,
    pub handshake_hash: [u8; 32],
}

/// Splits a finished handshake into our own transport keys; the snow state
/// is consumed (and dropped) here.
pub(crate) fn split(mut hs: snow::HandshakeState) -> Result<Split, snow::Error> {
    if !hs.is_handshake_finished() {
        return Err(snow::Error::State(
            snow::error::StateProblem::HandshakeNotFinished,
        ));
    }
    let mut handshake_hash = [0; 32];
    handshake_hash.copy_from_slice(
        hs.get_handshake_hash()
            .get(..32)
            .ok_or(snow::Error::Input)?,
    );
    let (k1, k2) = hs.dangerously_get_raw_split();
    let (k1, k2) = (Zeroizing::new(k1), Zeroizing::new(k2));
    // snow keeps the PSK in an array of its own: overwrite it before the
    // state is dropped.
    let _ = hs.set_psk(usize::from(PSK_SLOT), &[0; 32]);
    let (send, recv) = if hs.is_initiator() {
        (&k1, &k2)
    } else {
        (&k2, &k1)
    };
    Ok(Split {
        send: DirectionKey::new(send),
        recv: DirectionKey::new(recv),
        handshake_hash,
    })
}

/// One direction's transport key: ChaCha20-Poly1305, wiped on drop.
#[derive(Clone)]
pub(crate) struct DirectionKey(ChaCha20Poly1305);

impl DirectionKey {
    pub(crate) fn new(key: &[u8; 32]) -> Self {
        Self(ChaCha20Poly1305::new(&Key::from(*key)))
    }
    fn nonce(counter: u64) -> Nonce {
        let mut n = [0u8; 12];
        n[4..].copy_from_slice(&counter.to_le_bytes());
        Nonce::from(n)
    }
    /// Encrypts `buf[start..]` in place and appends the tag: a Noise
    /// transport message with nonce `counter`.
    pub(crate) fn seal_in_place(
        &self,
        counter: u64,
        buf: &mut Vec<u8>,
        start: usize,
    ) -> Result<(), AeadError> {
        let tag = self
            .0
            .encrypt_inout_detached(&Self::nonce(counter), &[], (&mut buf[start..]).into())
            .map_err(|_| AeadError)?;
        buf.extend_from_slice(&tag);
        Ok(())
    }
    /// Noise's `REKEY(k)` (Noise spec §4.2, "Rekey"): the first 32 bytes of
    /// `ENCRYPT(k, 2^64 - 1, empty, 32 zero bytes)`, a one-way function of
    /// the key. The channel's key updates use it (nonce `2^64 - 1` is never
    /// a frame counter: `seal_record` stops before it).
    pub(crate) fn rekeyed(&self) -> Result<Self, AeadError> {
        let mut buf = Zeroizing::new(vec![0u8; 32]);
        self.seal_in_place(u64::MAX, &mut buf, 0)?;
        let mut key = Zeroizing::new([0u8; 32]);
        key.copy_from_slice(&buf[..32]);
        Ok(Self::new(&key))
    }
    /// Decrypts a Noise transport message in place; returns the plaintext
    /// length (`buf.len() - TAG_LEN`).
    pub(crate) fn open_in_place(&self, counter: u64, buf: &mut [u8]) -> Result<usize, AeadError> {
        let n = buf.len().checked_sub(TAG_LEN).ok_or(AeadError)?;
        let (body, tag) = buf.split_at_mut(n);
        let tag = Tag::try_from(&*tag).map_err(|_| AeadError)?;
        self.0
            .decrypt_inout_detached(&Self::nonce(counter), &[], body.into(), &tag)
            .map_err(|_| AeadError)?;
        Ok(n)
    }
}

/// An AEAD failure (wrong key, altered bytes, wrong counter).
#[derive(Debug, Clone, Copy)]
pub(crate) struct AeadError;

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn hex(s: &str) -> Vec<u8> {
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }
    fn arr(s: &str) -> [u8; 32] {
        hex(s).try_into().unwrap()
    }

    // The one `Noise_IKpsk2_25519_ChaChaPoly_BLAKE2s` case of the cacophony
    // vector set (github.com/haskell-cryptography/cacophony,
    // `vectors/cacophony.txt`), as shipped by snow 0.10.0 in
    // `tests/vectors/cacophony.txt`.
    const V_PROLOGUE: &str = "4a6f686e2047616c74";
    const V_PSK: &str = "54686973206973206d7920417573747269616e20706572737065637469766521";
    const V_INIT_STATIC: &str = "e61ef9919cde45dd5f82166404bd08e38bceb5dfdfded0a34c8df7ed542214d1";
    const V_INIT_EPHEMERAL: &str =
        "893e28b9dc6ca8d611ab664754b8ceb7bac5117349a4439a6b0569da977c464a";
    const V_INIT_REMOTE_STATIC: &str =
        "31e0303fd6418d2f8c0e78b91f22e8caed0fbe48656dcf4767e4834f701b8f62";
    const V_RESP_STATIC: &str = "4a3acbfdb163dec651dfa3194dece676d437029c62a408b4c5ea9114246e4893";
    const V_RESP_EPHEMERAL: &str =
        "bbdb4cdbd309f1a1f2e1456967fe288cadd6f712d65dc7b7793d5e63da6b375b";
    const V_HASH: &str = "f5191b875290abcd41347ac3622d9679688a7e980229cb937ef748336cfde0e5";
    const V_MESSAGES: [(&str, &str); 6] = [
        (
            "4c756477696720766f6e204d69736573",
            "ca35def5ae56cec33dc2036731ab14896bc4c75dbb07a61f879f8e3afa4c7944001e21de9f98ddd8e2ad57527207feb56253c9c94a9e496782ecfcb2a75fbcaf1b52948cc48daefe660c62119ab5000980c84831215f2441eba616548e832985464cf17e51ee93109008399a21f7e13f",
        ),
        (
            "4d757272617920526f746862617264",
            "95ebc60d2b1fa672c1f46a8aa265ef51bfe38e7ccb39ec5be34069f144808843cb765f2caef0751b8f007572dab0322217755c0632f365717edbf34d33e87a",
        ),
        (
            "462e20412e20486179656b",
            "8153ca9833bc3c1b91a7e66e5f4d4f5b59bf9e64c2f20d15f0bba7",
        ),
        (
            "4361726c204d656e676572",
            "07af0c9c86e1b4e80f36b04ff7688d51141af3debd0332f0a705ef",
        ),
        (
            "4a65616e2d426170746973746520536179",
            "6ab1467c0448cc78394494abaaf23afce0e234315d6e2624dcbfa8a21c1c4d073d",
        ),
        (
            "457567656e2042f6686d20766f6e2042617765726b",
            "dfc346c0d2296ae6cf1acf6f12b8456a1dba228cf8d8b774aacf1c47fc53aa80ebc7a4c292",
        ),
    ];

    fn vector_states(slot: u8) -> (snow::HandshakeState, snow::HandshakeState) {
        vector_states_with(slot, true)
    }

    /// The vector's initiator and responder. With `responder_psk` false the
    /// responder is built without a PSK, as [`crate::handshake::open_init`]
    /// builds it; it must then get one through [`set_psk`] before message 2.
    fn vector_states_with(
        slot: u8,
        responder_psk: bool,
    ) -> (snow::HandshakeState, snow::HandshakeState) {
        let (is, rs, psk, prologue) = (
            arr(V_INIT_STATIC),
            arr(V_RESP_STATIC),
            arr(V_PSK),
            hex(V_PROLOGUE),
        );
        let remote = arr(V_INIT_REMOTE_STATIC);
        let i = build(RawConfig {
            initiator: true,
            local_private: &is,
            remote_public: Some(&remote),
            psk: Some(&psk),
            prologue: &prologue,
            entropy: Entropy::Exact(arr(V_INIT_EPHEMERAL)),
            psk_slot: slot,
        })
        .unwrap();
        let r = build(RawConfig {
            initiator: false,
            local_private: &rs,
            remote_public: None,
            psk: responder_psk.then_some(&psk),
            prologue: &prologue,
            entropy: Entropy::Exact(arr(V_RESP_EPHEMERAL)),
            psk_slot: slot,
        })
        .unwrap();
        (i, r)
    }

    /// Runs the vector's two handshake messages; `before_message_2` is
    /// called on the responder between reading message 1 and writing
    /// message 2. Returns both splits.
    fn run_vector_handshake(
        mut i: snow::HandshakeState,
        mut r: snow::HandshakeState,
        before_message_2: impl FnOnce(&mut snow::HandshakeState),
    ) -> (Split, Split) {
        let mut buf = vec![0u8; MAX_NOISE_MESSAGE];
        let mut out = vec![0u8; MAX_NOISE_MESSAGE];
        let (p, c) = V_MESSAGES[0];
        let n = i.write_message(&hex(p), &mut buf).unwrap();
        assert_eq!(&buf[..n], &hex(c)[..]);
        let m = r.read_message(&buf[..n], &mut out).unwrap();
        assert_eq!(&out[..m], &hex(p)[..]);
        before_message_2(&mut r);
        let (p, c) = V_MESSAGES[1];
        let n = r.write_message(&hex(p), &mut buf).unwrap();
        assert_eq!(&buf[..n], &hex(c)[..]);
        let m = i.read_message(&buf[..n], &mut out).unwrap();
        assert_eq!(&out[..m], &hex(p)[..]);
        (split(i).unwrap(), split(r).unwrap())
    }

    #[test]
    fn cacophony_ikpsk2_vector_with_the_responder_psk_set_after_message_1() {
        // The responder reads message 1 with no PSK (psk2 needs none there),
        // then gets it through `set_psk`, the call `handshake::respond`
        // makes: message 2, the hash and the transport keys are the vector's.
        let (i, r) = vector_states_with(PSK_SLOT, false);
        let (si, sr) = run_vector_handshake(i, r, |r| set_psk(r, &arr(V_PSK)).unwrap());
        assert_eq!(si.handshake_hash, arr(V_HASH));
        assert_eq!(sr.handshake_hash, arr(V_HASH));
        for (k, (p, c)) in V_MESSAGES[2..].iter().enumerate() {
            let counter = (k / 2) as u64;
            let (tx, rx) = if k % 2 == 0 {
                (&si.send, &sr.recv)
            } else {
                (&sr.send, &si.recv)
            };
            let mut b = hex(p);
            tx.seal_in_place(counter, &mut b, 0).unwrap();
            assert_eq!(b, hex(c), "transport message {}", k + 3);
            let n = rx.open_in_place(counter, &mut b).unwrap();
            assert_eq!(&b[..n], &hex(p)[..]);
        }

        // Without `set_psk` that responder cannot write message 2 at all,
        // and with another PSK it writes something other than the vector's.
        let (mut i, mut r) = vector_states_with(PSK_SLOT, false);
        let mut buf = vec![0u8; MAX_NOISE_MESSAGE];
        let mut out = vec![0u8; MAX_NOISE_MESSAGE];
        let n = i.write_message(&hex(V_MESSAGES[0].0), &mut buf).unwrap();
        r.read_message(&buf[..n], &mut out).unwrap();
        assert_eq!(
            r.write_message(&hex(V_MESSAGES[1].0), &mut buf)
                .unwrap_err(),
            snow::Error::State(snow::error::StateProblem::MissingPsk)
        );
        let (mut i, mut r) = vector_states_with(PSK_SLOT, false);
        let n = i.write_message(&hex(V_MESSAGES[0].0), &mut buf).unwrap();
        r.read_message(&buf[..n], &mut out).unwrap();
        set_psk(&mut r, &[0x11; 32]).unwrap();
        let n = r.write_message(&hex(V_MESSAGES[1].0), &mut buf).unwrap();
        assert_ne!(&buf[..n], &hex(V_MESSAGES[1].1)[..]);
        assert_eq!(
            i.read_message(&buf[..n], &mut out).unwrap_err(),
            snow::Error::Decrypt
        );
    }

    #[test]
    fn cacophony_ikpsk2_vector_passes_through_our_builder_split_and_transport() {
        let (mut i, mut r) = vector_states(PSK_SLOT);
        let mut buf = vec![0u8; MAX_NOISE_MESSAGE];
        let mut out = vec![0u8; MAX_NOISE_MESSAGE];
        // Message 1: initiator -> responder.
        let (p, c) = V_MESSAGES[0];
        let n = i.write_message(&hex(p), &mut buf).unwrap();
        assert_eq!(&buf[..n], &hex(c)[..]);
        let m = r.read_message(&buf[..n], &mut out).unwrap();
        assert_eq!(&out[..m], &hex(p)[..]);
        // Message 2: responder -> initiator (the psk token is here).
        let (p, c) = V_MESSAGES[1];
        let n = r.write_message(&hex(p), &mut buf).unwrap();
        assert_eq!(&buf[..n], &hex(c)[..]);
        let m = i.read_message(&buf[..n], &mut out).unwrap();
        assert_eq!(&out[..m], &hex(p)[..]);
        // Split into our own transport keys; hash is the vector's.
        let (si, sr) = (split(i).unwrap(), split(r).unwrap());
        assert_eq!(si.handshake_hash, arr(V_HASH));
        assert_eq!(sr.handshake_hash, arr(V_HASH));
        // Transport messages alternate, initiator first, counters from 0.
        for (k, (p, c)) in V_MESSAGES[2..].iter().enumerate() {
            let counter = (k / 2) as u64;
            let (tx, rx) = if k % 2 == 0 {
                (&si.send, &sr.recv)
            } else {
                (&sr.send, &si.recv)
            };
            let mut b = hex(p);
            tx.seal_in_place(counter, &mut b, 0).unwrap();
            assert_eq!(b, hex(c), "transport message {}", k + 3);
            let n = rx.open_in_place(counter, &mut b).unwrap();
            assert_eq!(&b[..n], &hex(p)[..]);
        }
    }

    #[test]
    fn the_handshakes_private_keys_and_cipher_keys_live_in_wiping_holders() {
        use std::sync::atomic::Ordering;
        let dh = WIPED_DH.load(Ordering::Relaxed);
        let cipher = WIPED_CIPHER.load(Ordering::Relaxed);
        {
            let (mut i, mut r) = vector_states(PSK_SLOT);
            let mut buf = vec![0u8; MAX_NOISE_MESSAGE];
            let mut out = vec![0u8; MAX_NOISE_MESSAGE];
            let n = i.write_message(b"hi", &mut buf).unwrap();
            r.read_message(&buf[..n], &mut out).unwrap();
            let n = r.write_message(b"", &mut buf).unwrap();
            i.read_message(&buf[..n], &mut out).unwrap();
            split(i).unwrap();
            split(r).unwrap();
        }
        // Each side: its static and ephemeral DH keys, and its cipher
        // states (other tests may add more at the same time).
        assert!(WIPED_DH.load(Ordering::Relaxed) - dh >= 4);
        assert!(WIPED_CIPHER.load(Ordering::Relaxed) - cipher >= 2);
    }

    #[test]
    fn psk_in_slot_1_fails_on_message_2_with_missing_psk() {
        let (mut i, mut r) = vector_states(1);
        let mut buf = vec![0u8; MAX_NOISE_MESSAGE];
        let mut out = vec![0u8; MAX_NOISE_MESSAGE];
        // Message 1 goes through: psk2 has no token in it...
        let n = i.write_message(b"", &mut buf).unwrap();
        r.read_message(&buf[..n], &mut out).unwrap();
        // ...and message 2 fails where the psk token is.
        let err = r.write_message(b"", &mut buf).unwrap_err();
        assert_eq!(
            err,
            snow::Error::State(snow::error::StateProblem::MissingPsk)
        );
    }

    #[test]
    fn a_tampered_or_misnumbered_transport_message_does_not_open() {
        let k = DirectionKey::new(&[7; 32]);
        let mut b = b"hello".to_vec();
        k.seal_in_place(5, &mut b, 0).unwrap();
        let mut c = b.clone();
        assert!(k.open_in_place(4, &mut c).is_err());
        let mut c = b.clone();
        c[0] ^= 1;
        assert!(k.open_in_place(5, &mut c).is_err());
        assert!(k.open_in_place(5, &mut [0u8; 3]).is_err());
        assert_eq!(k.open_in_place(5, &mut b).unwrap(), 5);
    }
}
