//! CPython's own manager tests against agora: `test._test_multiprocessing`, the
//! `manager` flavour of its test classes, with the class-level manager connected to
//! the real `agora` binary instead of a spawned CPython server
//! (`tests/python/cpython_manager_suite.py`, which lists every test it leaves out and
//! why: Pool, a Barrier action, and the tests that start their own server).
//!
//! Runs for every CPython 3.8–3.13 found, each against its own server over TCP; the
//! newest also runs it over a Unix socket with the `spawn` start method.
//! Any failure, error, or object left on the server after a test class (CPython's
//! `number_of_objects` leak check, which CPython only warns about) fails the test.

mod python_support;

use std::time::Duration;

use agora_tests::Server;
use python_support::{command, for_each_python, run, Python};

/// The whole suite takes ~10 s per version (~20 s with `spawn`); this only catches hangs.
const SUITE_TIMEOUT: Duration = Duration::from_secs(600);

/// Runs the suite and checks its summary line.
fn suite(python: &Python, server: &Server, extra: &[&str]) {
    let mut args = vec!["--address", server.address.as_str()];
    args.extend_from_slice(extra);
    let done = run(command(python, "cpython_manager_suite.py", &args, &server.authkey), SUITE_TIMEOUT);
    let summary = done
        .stdout
        .lines()
        .find_map(|l| l.strip_prefix("AGORA-SUITE "))
        .unwrap_or_else(|| panic!("no summary from the suite\n{}", done.transcript()));
    let summary: serde_json::Value = serde_json::from_str(summary).expect("summary is JSON");
    let count = |field: &str| summary[field].as_u64().unwrap_or_else(|| panic!("no {field} in {summary}"));
    eprintln!(
        "CPython {} {:?}: {} passed, {} skipped, {} failures, {} errors, {} leaks in {}s",
        python.version,
        extra,
        count("passed"),
        count("skipped"),
        count("failures"),
        count("errors"),
        count("leaks"),
        summary["seconds"]
    );
    assert!(
        done.ok() && count("failures") == 0 && count("errors") == 0 && count("leaks") == 0,
        "CPython's manager tests failed on agora: {}\n{}",
        summary["failed_tests"],
        done.transcript()
    );
    // Every version has at least 51 manager tests agora must pass; far fewer means
    // the suite silently stopped finding them.
    assert!(count("passed") >= 45, "only {} tests ran and passed\n{}", count("passed"), done.transcript());
}

#[test]
fn cpython_manager_tests_pass_on_every_version() {
    for_each_python(|python| {
        let server = Server::start();
        suite(python, &server, &[]);
    });
}

#[test]
fn cpython_manager_tests_pass_over_a_unix_socket_with_spawn() {
    let newest = python_support::pythons().last().expect("at least one CPython");
    let server = Server::start_unix();
    suite(newest, &server, &["--start-method", "spawn"]);
}
