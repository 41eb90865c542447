//! Length-prefix framing, byte by byte.
#![allow(missing_docs)]
// Helpers outside `#[test]` fns unwrap too; a failure there is a test failure.
#![allow(clippy::unwrap_used)]

mod common;

use common::hex;
use rdv_wire::{DEFAULT_MAX_MESSAGE_SIZE, FrameDecoder, FrameError};

#[test]
fn prefix_split_across_pushes() {
    // 200-byte frame: prefix c8 01, pushed one byte at a time.
    let mut d = FrameDecoder::new(DEFAULT_MAX_MESSAGE_SIZE);
    d.push(&hex("c8"));
    assert_eq!(d.next_frame(), Ok(None));
    assert_eq!(
        d.capacity_hint(),
        1,
        "prefix not complete: read byte by byte"
    );
    d.push(&hex("01"));
    assert_eq!(d.next_frame(), Ok(None));
    assert_eq!(d.capacity_hint(), 200);
    assert_eq!(d.buffered(), 0, "the prefix is consumed");
    d.push(&[9; 150]);
    assert_eq!(d.next_frame(), Ok(None));
    assert_eq!(d.capacity_hint(), 50);
    d.push(&[9; 50]);
    assert_eq!(d.next_frame().unwrap().as_deref(), Some(&[9u8; 200][..]));
    assert_eq!(d.buffered(), 0);
}

#[test]
fn one_byte_over_the_default_maximum_is_refused_from_the_prefix() {
    // 1 MiB = 0x100000 -> 80 80 40; 1 MiB + 1 -> 81 80 40
    let mut d = FrameDecoder::new(DEFAULT_MAX_MESSAGE_SIZE);
    d.push(&hex("80 80 40"));
    assert_eq!(d.next_frame(), Ok(None));
    assert_eq!(d.capacity_hint(), DEFAULT_MAX_MESSAGE_SIZE);

    let mut d = FrameDecoder::new(DEFAULT_MAX_MESSAGE_SIZE);
    d.push(&hex("81 80 40"));
    assert_eq!(
        d.next_frame(),
        Err(FrameError::TooLarge {
            len: DEFAULT_MAX_MESSAGE_SIZE as u64 + 1,
            max: DEFAULT_MAX_MESSAGE_SIZE
        })
    );
}

#[test]
fn endless_prefix_is_refused_after_ten_bytes() {
    let mut d = FrameDecoder::new(0);
    for i in 1..10 {
        d.push(&[0x80]);
        assert_eq!(d.next_frame(), Ok(None), "after {i} bytes");
    }
    d.push(&[0x80]);
    assert_eq!(d.next_frame(), Err(FrameError::BadLength));
}

#[test]
fn several_frames_in_one_push() {
    let mut d = FrameDecoder::new(16);
    d.push(&hex("02 aa bb  00  01 cc  03 dd"));
    assert_eq!(d.next_frame().unwrap().as_deref(), Some(&hex("aa bb")[..]));
    assert_eq!(d.next_frame().unwrap().as_deref(), Some(&[][..]));
    assert_eq!(d.next_frame().unwrap().as_deref(), Some(&hex("cc")[..]));
    assert_eq!(d.next_frame(), Ok(None));
    assert_eq!(d.buffered(), 1);
    assert_eq!(d.capacity_hint(), 2);
}
