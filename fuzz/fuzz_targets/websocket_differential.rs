//! purly's WebSocket framing against tungstenite's decoder (server side, the same limits): the
//! same bytes must give the same messages and end the same way (waiting for more, closed,
//! a protocol or size violation, text that is not UTF-8). The first byte says whether the
//! stream ends after the rest (bit 0). `purly_hyper::fuzzing::compare_with_tungstenite`
//! says where the two may legitimately differ, and why.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    purly_hyper::fuzzing::compare_with_tungstenite(data);
});
