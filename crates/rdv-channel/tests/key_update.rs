//! Long-lived channels turn their keys over by volume and by time, without
//! a handshake: the sender seals a key-update record under the old key and
//! moves to `REKEY(k)` (Noise spec §4.2); the receiver follows.
#![allow(missing_docs, clippy::unwrap_used)]

mod common;

use common::*;
use rdv_channel::channel::{KEY_UPDATE_FRAMES, KEY_UPDATE_INTERVAL_MS};
use rdv_channel::*;

#[test]
fn keys_turn_over_after_a_bounded_number_of_frames() {
    let (mut a, mut b) = pair();
    let (ca, mut cb) = connect(&mut a, &mut b);
    let mut ca = ca.with_key_update_frames(4);
    for i in 0..20u8 {
        let wire = ca.encrypt(&[i; 10]).unwrap();
        assert_eq!(
            cb.decrypt(&wire, T0).unwrap(),
            vec![Incoming::Message(vec![i; 10])]
        );
    }
    // 20 data frames, a new key after every 4: 4 updates (the 5th is due
    // with the 21st message).
    assert_eq!(ca.key_generations().0, 4);
    assert_eq!(cb.key_generations().1, 4);
    // The other direction did not move.
    assert_eq!((ca.key_generations().1, cb.key_generations().0), (0, 0));
    const { assert!(KEY_UPDATE_FRAMES <= 1 << 32) };
}

#[test]
fn keys_turn_over_after_two_minutes_of_use() {
    let (mut a, mut b) = pair();
    let (mut ca, mut cb) = connect(&mut a, &mut b);
    assert!(
        ca.poll_key_update(T0).unwrap().is_none(),
        "starts the clock"
    );
    assert!(
        ca.poll_key_update(T0 + KEY_UPDATE_INTERVAL_MS - 1)
            .unwrap()
            .is_none()
    );
    let update = ca
        .poll_key_update(T0 + KEY_UPDATE_INTERVAL_MS)
        .unwrap()
        .unwrap();
    let after = ca.encrypt(b"under the new key").unwrap();
    // The receiver needs the update first: the next frame does not open
    // under the key it held.
    let mut wire = update.clone();
    wire.extend_from_slice(&after);
    assert_eq!(
        cb.decrypt(&wire, T0).unwrap(),
        vec![Incoming::Message(b"under the new key".to_vec())]
    );
    assert_eq!(ca.key_generations().0, 1);
    assert_eq!(cb.key_generations().1, 1);
    // The clock restarted.
    assert!(
        ca.poll_key_update(T0 + KEY_UPDATE_INTERVAL_MS + 1)
            .unwrap()
            .is_none()
    );
}

#[test]
fn a_frame_skipping_the_key_update_does_not_open() {
    let (mut a, mut b) = pair();
    let (mut ca, mut cb) = connect(&mut a, &mut b);
    ca.poll_key_update(T0).unwrap();
    let update = ca
        .poll_key_update(T0 + KEY_UPDATE_INTERVAL_MS)
        .unwrap()
        .unwrap();
    let after = ca.encrypt(b"x").unwrap();
    // Hand the receiver the data frame under the update's counter: the old
    // key cannot open what the new key sealed (nor the other way round).
    let mut forged = after.clone();
    let counter_at = 2 + 8;
    forged[counter_at..counter_at + 8].copy_from_slice(&update[counter_at..counter_at + 8]);
    assert!(cb.decrypt(&forged, T0).is_err());
}
