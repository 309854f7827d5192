//! The README's snippets run as written, finding the server and its key the way the
//! README says: next to a zero-config `agora serve`, with nothing configured but the
//! server's address.

mod python_support;

use std::path::Path;
use std::process::{Command, Stdio};

use agora_tests::{Server, ServerOptions, HANG_GUARD};
use python_support::{for_each_python, run, Python};

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

/// The ```python blocks of the README's "Use it from Python" section, in order.
fn python_snippets() -> Vec<String> {
    let readme = repo_file("README.md");
    let start = readme.find("## Use it from Python").expect("README has a Python section");
    let section = &readme[start..];
    let section = &section[..section[3..].find("\n## ").map_or(section.len(), |end| end + 3)];
    section.split("```python\n").skip(1).map(|block| block[..block.find("```").expect("closed")].to_owned()).collect()
}

/// Runs `code` (a whole program) with `python` beside `server`, as a program on the
/// server's machine: only the address is substituted (the test server cannot take the
/// default port); the key is found where the snippet says.
fn run_python(python: &Python, server: &Server, code: &str) -> String {
    let (host, port) = server.address.rsplit_once(':').expect("a TCP address");
    let code = code
        .replace(r#"("127.0.0.1", 50000)"#, &format!("(\"{host}\", {port})"))
        .replace(r#"("master", 50000)"#, &format!("(\"{host}\", {port})"))
        .replace(r#""127.0.0.1:50000""#, &format!("\"{}\"", server.address));
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("snippet.py");
    std::fs::write(&script, &code).unwrap();
    let mut cmd = Command::new(&python.exe);
    cmd.arg("-u").arg(&script);
    beside(server, &mut cmd);
    cmd.env("PYTHONPATH", Path::new(env!("CARGO_MANIFEST_DIR")).join("../python"));
    cmd.env("PYTHONDONTWRITEBYTECODE", "1").stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
    let done = run(cmd, HANG_GUARD);
    assert!(done.ok() && done.stdout.contains("SNIPPET OK"), "{code}\n{}", done.transcript());
    done.stdout
}

#[test]
fn the_python_snippets_run_as_written() {
    let snippets = python_snippets();
    assert_eq!(snippets.len(), 5, "a new Python snippet in the README needs a run here");
    let (pool, package, stock, master_worker, runtime) =
        (&snippets[0], &snippets[1], &snippets[2], &snippets[3], &snippets[4]);
    // The later snippets use `key` as the first one found it.
    let key_preamble =
        format!("{}\nkey = generated_key()\n", &pool[..pool.find("def work").expect("the Pool snippet")]);
    for_each_python(|python| {
        let server = zero_config_server();
        // The Pool pattern, stock client: every worker wrote its square.
        run_python(
            python,
            &server,
            &format!("{pool}    assert dict(results) == {{n: n * n for n in range(100)}}\n    print('SNIPPET OK')\n"),
        );
        // The package, then the stock creation calls on its manager.
        run_python(
            python,
            &server,
            &format!(
                "{package}{stock}lock.acquire(); lock.release(); q.put(1); assert q.get() == 1\nprint('SNIPPET OK')\n"
            ),
        );
        // The runtime typeid: the named dict the package wrote is the same object.
        run_python(
            python,
            &server,
            &format!(
                "{key_preamble}{runtime}jobs['k'] = 1\nassert m.agora().dict('jobs')['k'] == 1\nprint('SNIPPET OK')\n"
            ),
        );

        // Master/worker against a server exposing the two queues.
        let exposing = Server::start_with(ServerOptions {
            no_authkey: true,
            args: ["--expose", "get_task_queue=queue:tasks", "--expose", "get_result_queue=queue:results"]
                .map(String::from)
                .to_vec(),
            ..Default::default()
        });
        run_python(
            python,
            &exposing,
            &format!("{key_preamble}{master_worker}tasks.put(3)\nresults.put(tasks.get() ** 2)\nassert results.get() == 9\nprint('SNIPPET OK')\n"),
        );
    });
}
