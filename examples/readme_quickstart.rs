//! The README's first Rust snippet ("Use it from Rust"), verbatim below this header:
//! `tests/tests/readme.rs` checks that the two agree and runs this program against a
//! zero-config `agora serve`, so the snippet is known to work as written.
//!
//! ```text
//! agora serve &                # in one terminal, or in the background
//! cargo run -p agora-examples --example readme_quickstart
//! ```

use agora_client::Manager;

#[tokio::main]
async fn main() -> agora_client::Result<()> {
    // Next to a zero-config `agora serve`: 127.0.0.1:50000 and the key it generated
    // (AGORA_ADDRESS and AGORA_AUTHKEY or AGORA_AUTHKEY_FILE name any other server).
    let manager = Manager::from_env().await?;
    let scores = manager.dict::<String, u64>("scores").await?; // get-or-create by name
    scores.insert(&"alice".into(), &3).await?;
    let now = scores.increment(&"alice".into(), &1).await?; // atomic, on the server
    println!("alice has {now}");
    Ok(())
}
