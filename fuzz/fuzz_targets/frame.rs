//! Any bytes into parse-and-validate: never panics, and what it accepts re-serializes to an
//! equal frame.
#![no_main]

use libfuzzer_sys::fuzz_target;
use purly::{parse_frame, Limits};

fuzz_target!(|data: &[u8]| {
    let mut tight = Limits::default();
    tight.max_depth = 6;
    tight.max_messages = 4;
    tight.max_frame_bytes = 256;
    for limits in [Limits::default(), tight] {
        if let Ok(frame) = parse_frame(data, &limits) {
            let text = frame.to_json();
            let again = parse_frame(text.as_bytes(), &Limits::default())
                .expect("an accepted frame re-serializes to a valid frame");
            assert_eq!(again, frame);
        }
    }
});
