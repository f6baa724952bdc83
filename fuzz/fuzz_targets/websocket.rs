//! The server side of purly's WebSocket framing (`purly-hyper`), fed whatever a client could
//! send, cut into reads of any size, answered through writes of any size: it never panics and
//! never loops without reading (`purly_hyper::fuzzing::read_websocket` checks that).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    purly_hyper::fuzzing::read_websocket(data);
});
