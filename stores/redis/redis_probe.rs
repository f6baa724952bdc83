// The probe both build scripts that start `redis-server` in their tests include
// (`stores/redis/build.rs`, `examples/build.rs`): plain comments, since it is included.

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
