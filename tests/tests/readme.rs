//! The README's snippets run as written, finding the server and its key the way the
//! README says: next to a zero-config `agora serve`, with nothing configured but the
//! server's address.

use std::path::Path;
use std::process::Command;

use agora_tests::{Server, ServerOptions};

fn repo_file(path: &str) -> String {
    std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(path)).unwrap()
}

/// The code of the first fenced block of `fence` after `heading` in the README.
fn snippet(heading: &str, fence: &str) -> String {
    let readme = repo_file("README.md");
    let section = &readme[readme.find(heading).unwrap_or_else(|| panic!("README has no {heading}"))..];
    let start = section.find(fence).unwrap_or_else(|| panic!("no {fence} block after {heading}")) + fence.len();
    let body = &section[start..];
    body[..body.find("```").expect("a closed block")].to_owned()
}

/// A zero-config server: no authkey given, so it generates one where clients look.
fn zero_config_server() -> Server {
    Server::start_with(ServerOptions { no_authkey: true, ..Default::default() })
}

/// The environment of a program on the server's machine: only the address is named
/// (the test server cannot take the default port); the key is found, not given.
fn beside(server: &Server, cmd: &mut Command) {
    for var in ["AGORA_AUTHKEY", "AGORA_AUTHKEY_FILE", "AGORA_CONFIG"] {
        cmd.env_remove(var);
    }
    cmd.env("AGORA_ADDRESS", &server.address).env("XDG_RUNTIME_DIR", server.dir.path());
}

#[test]
fn the_rust_quick_start_runs_as_written() {
    let code = snippet("## Use it from Rust", "```rust,no_run\n");
    let example = repo_file("examples/readme_quickstart.rs");
    let body: String =
        example.lines().skip_while(|l| l.starts_with("//!") || l.is_empty()).map(|l| format!("{l}\n")).collect();
    assert_eq!(body, code, "examples/readme_quickstart.rs must be the README's snippet, verbatim");

    let server = zero_config_server();
    let mut cmd = Command::new(agora_tests::example_binary("readme_quickstart"));
    beside(&server, &mut cmd);
    let out = cmd.output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "alice has 4");
}
