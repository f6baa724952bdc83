//! A fixed amount of engine work, for counting instructions rather than timing them (timings on
//! shared machines drift too much to compare two versions of the code): N updates shaped like
//! the load generator's go through one session, each echoed back, and each written as a frame
//! for six subscribers (the 1,000 models × 5 workload: five readers and the writer's echo).
//!
//! ```text
//! cargo build --release -p purly-examples --example update_cost
//! valgrind --tool=callgrind --callgrind-out-file=/tmp/cg target/release/examples/update_cost 20000
//! ```
//! Divide the instructions collected by N (the setup is a rounding error); run the same command
//! on two commits to compare them.
#![allow(clippy::print_stdout)]

#[path = "../benches/support/load_update.rs"]
mod load_update;

use std::sync::Arc;

use purly::{encode_frame_bytes, Engine, JoinOptions, Mode, Outbox, Received};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let updates: usize = std::env::args()
        .nth(1)
        .map(|n| n.parse())
        .transpose()?
        .unwrap_or(20_000);
    let engine = Engine::default();
    let outbox = Arc::new(Outbox::new(64 << 20));
    let session = engine
        .join("m", outbox.clone(), JoinOptions::stream())
        .wait()?;
    let mut batch = Vec::new();
    // The snapshot first.
    outbox.try_recv(&mut batch);
    let frames = load_update::load_update_frames();
    let mut bytes_written = 0;
    for round in 0..updates {
        session.send_text(&frames[round % 2])?;
        batch.clear();
        if outbox.try_recv(&mut batch) != Some(Received::Messages) {
            return Err("the update was not echoed".into());
        }
        for _ in 0..6 {
            bytes_written += encode_frame_bytes(&batch, Mode::Stream).len();
        }
    }
    println!("{updates} updates, {bytes_written} bytes of frames written");
    Ok(())
}
