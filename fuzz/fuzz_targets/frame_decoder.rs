//! `FrameDecoder` never panics on arbitrary pushes, never returns a frame over
//! its maximum, and once drained holds at most one partial frame.
//!
//! Input layout: byte 0 picks the maximum frame size; then repeatedly one
//! length byte followed by that many bytes to push.
#![no_main]

use libfuzzer_sys::fuzz_target;
use rdv_wire::FrameDecoder;

fuzz_target!(|data: &[u8]| {
    let Some((&m, mut rest)) = data.split_first() else {
        return;
    };
    let max = usize::from(m) * 4;
    let mut d = FrameDecoder::new(max);
    while let Some((&n, tail)) = rest.split_first() {
        let n = usize::from(n).min(tail.len());
        d.push(&tail[..n]);
        rest = &tail[n..];
        loop {
            match d.next_frame() {
                Ok(Some(frame)) => assert!(frame.len() <= max),
                Ok(None) => break,
                Err(_) => return,
            }
        }
        assert!(d.buffered() <= max + 10, "{} buffered, max {max}", d.buffered());
    }
});
