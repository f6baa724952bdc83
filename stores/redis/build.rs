//! Tells the test suites whether this machine has `redis-server`, so that a test that needs it
//! is reported as ignored, with the reason, in the test summary when it is missing. Under
//! `CI=true` nothing is marked: the tests run and fail loudly. It only looks at `PATH`.

fn main() {
    println!("cargo::rustc-check-cfg=cfg(purly_no_redis)");
    println!("cargo::rerun-if-env-changed=PATH");
    println!("cargo::rerun-if-env-changed=CI");
    let ci = std::env::var("CI").is_ok_and(|v| v == "true");
    let found = std::env::var_os("PATH").is_some_and(|path| {
        std::env::split_paths(&path).any(|dir| dir.join("redis-server").is_file())
    });
    if !ci && !found {
        println!("cargo::rustc-cfg=purly_no_redis");
    }
}
