//! Says in `agora --version` how the binary was built, when it was built with profile
//! counts (`deploy/build-pgo.sh`): an instrumented binary is several times slower and
//! must never be mistaken for a release, and a benchmark's record should name a
//! profile-guided one.

fn main() {
    println!("cargo:rerun-if-env-changed=CARGO_ENCODED_RUSTFLAGS");
    let flags = std::env::var("CARGO_ENCODED_RUSTFLAGS").unwrap_or_default();
    let build = if flags.contains("profile-use") {
        " (profile-guided build)"
    } else if flags.contains("profile-generate") {
        " (instrumented for profile-guided optimisation: slow, not for use)"
    } else {
        ""
    };
    println!("cargo:rustc-env=AGORA_BUILD={build}");
}
