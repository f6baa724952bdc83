//! Tells the test suites which outside tools this machine lacks, so that a test that cannot
//! run is reported as ignored, with the reason, in the test summary. Under `CI=true` nothing
//! is marked: the tests run and fail loudly. It only looks at files (no process is started),
//! and the library itself does not use these settings.

use std::env;
use std::path::{Path, PathBuf};

fn main() {
    println!("cargo::rustc-check-cfg=cfg(purly_no_chromium)");
    println!("cargo::rustc-check-cfg=cfg(purly_no_original_client)");
    println!("cargo::rerun-if-env-changed=PATH");
    println!("cargo::rerun-if-env-changed=CI");
    println!("cargo::rerun-if-env-changed=PURLY_PY_SRC");
    println!("cargo::rerun-if-env-changed=CARGO_TARGET_DIR");
    if env::var("CI").is_ok_and(|v| v == "true") {
        return;
    }
    if !on_path("chromium") && !on_path("chromium-browser") {
        println!("cargo::rustc-cfg=purly_no_chromium");
    }
    let wheel = original_client_src();
    // Looked at again on the next build if it is missing (a missing path always reruns).
    println!("cargo::rerun-if-changed={}", wheel.display());
    if !wheel.join("purly/model/client.py").exists() || !on_path("python3") {
        println!("cargo::rustc-cfg=purly_no_original_client");
    }
}

fn on_path(program: &str) -> bool {
    env::var_os("PATH")
        .is_some_and(|path| env::split_paths(&path).any(|dir| dir.join(program).is_file()))
}

/// Where `.ci/run` unpacks the original purly 0.2 wheel: `$PURLY_PY_SRC`, else
/// `{target}/purly-py/src`.
fn original_client_src() -> PathBuf {
    if let Some(src) = env::var_os("PURLY_PY_SRC") {
        return PathBuf::from(src);
    }
    let manifest = PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").unwrap_or_default());
    let workspace = manifest.join("../..");
    let target = match env::var_os("CARGO_TARGET_DIR") {
        Some(dir) if Path::new(&dir).is_absolute() => PathBuf::from(dir),
        Some(dir) => workspace.join(dir),
        None => workspace.join("target"),
    };
    target.join("purly-py/src")
}
