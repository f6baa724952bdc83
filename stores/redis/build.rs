//! Tells the test suites whether this machine has `redis-server`, so that a test that needs it
//! is reported as ignored, with the reason, in the test summary when it is missing. Under
//! `CI=true` nothing is marked: the tests run and fail loudly. It only looks at `PATH`.

include!("redis_probe.rs");
