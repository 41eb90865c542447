//! Every decoder of `rdv-context` that reads bytes from the network (sync,
//! handshakes, invitations) or from disk (journal, persisted contexts)
//! never panics on any input, and what it accepts re-encodes to bytes that
//! decode to the same value. The first byte picks the decoder.
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use rdv_context::journal::JournalEntry;
use rdv_context::receipt::Receipt;
use rdv_context::{
    Context, DescriptorPolicy, EpochKeys, EpochRekey, EpochSecret, HandshakeComplete,
    HandshakeInit, Identity, Invitation, RendezvousFact, SealedDescriptor,
    StaticKeyBinding,
};

fn keys() -> &'static EpochKeys {
    static K: OnceLock<EpochKeys> = OnceLock::new();
    K.get_or_init(|| {
        let id = Identity::from_secret_bytes([1; 32], [2; 32]);
        let ctx = Context::create(&id, &mut rdv_context::SeededRng::from_seed([3; 32]));
        EpochKeys::derive(ctx.id(), 0, &EpochSecret::from_bytes([4; 32]))
    })
}

fuzz_target!(|data: &[u8]| {
    let Some((&which, bytes)) = data.split_first() else {
        return;
    };
    match which % 10 {
        0 => {
            if let Ok(f) = RendezvousFact::from_bytes(bytes) {
                // Opening runs the AEAD and, past it, each sealed kind's
                // parser and checks.
                match &f {
                    RendezvousFact::Descriptor(d) => {
                        let _ = d.open_any_time(keys(), &DescriptorPolicy::default());
                    }
                    RendezvousFact::ChannelEstablished(c) => {
                        let _ = c.open(keys());
                    }
                    RendezvousFact::DescriptorRevoked(r) => {
                        let _ = r.open(keys());
                    }
                    RendezvousFact::EpochRekey(r) => {
                        let _ = r.open(keys());
                    }
                }
                assert_eq!(RendezvousFact::from_bytes(&f.to_bytes()).ok(), Some(f));
            }
        }
        1 => {
            if let Ok(e) = JournalEntry::from_bytes(bytes) {
                let again = JournalEntry::from_bytes(&e.to_bytes()).ok();
                assert_eq!(again.map(|a| a.to_bytes()), Some(e.to_bytes()));
            }
        }
        2 => {
            if let Ok(s) = SealedDescriptor::from_bytes(bytes) {
                // Opening runs the AEAD and, past it, the body parser.
                let _ = s.open(keys(), 0, &DescriptorPolicy::default());
                let _ = s.open_any_time(keys(), &DescriptorPolicy::default());
                assert!(SealedDescriptor::from_bytes(&s.to_bytes()).is_ok());
            }
        }
        3 => {
            if let Ok(i) = Invitation::from_bytes(bytes) {
                assert!(Invitation::from_bytes(&i.to_bytes()).is_ok());
            }
            if let Ok(text) = std::str::from_utf8(bytes) {
                let _ = text.parse::<Invitation>();
            }
        }
        4 => {
            if let Ok(r) = EpochRekey::from_bytes(bytes) {
                assert!(EpochRekey::from_bytes(&r.to_bytes()).is_ok());
            }
        }
        5 => {
            if let Ok(r) = Receipt::from_bytes(bytes) {
                assert!(Receipt::from_bytes(&r.to_bytes()).is_ok());
            }
        }
        6 => {
            if let Ok(h) = HandshakeInit::from_bytes(bytes) {
                assert_eq!(HandshakeInit::from_bytes(&h.to_bytes()).ok(), Some(h));
            }
        }
        7 => {
            if let Ok(h) = HandshakeComplete::from_bytes(bytes) {
                assert_eq!(HandshakeComplete::from_bytes(&h.to_bytes()).ok(), Some(h));
            }
        }
        8 => {
            let _ = StaticKeyBinding::from_bytes(bytes);
        }
        _ => {
            // A persisted context (the data directory's store).
            let id = Identity::from_secret_bytes([1; 32], [2; 32]);
            let _ = Context::restore(&id, bytes);
        }
    }
});
