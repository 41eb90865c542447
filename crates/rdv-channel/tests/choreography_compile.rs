#![allow(missing_docs, clippy::unwrap_used)]
//! Out-of-order or repeated steps, steps of a finished session, and a bare
//! channel id in place of the handshake's channel do not compile
//! (`tests/compile_fail/*.rs`; the expected compiler output is in the
//! `.stderr` files beside them).

#[test]
fn out_of_order_sends_do_not_compile() {
    trybuild::TestCases::new().compile_fail("tests/compile_fail/*.rs");
}
