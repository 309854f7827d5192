//! Round trips through real CPython: every interpreter 3.8–3.13 that pyenv knows, and
//! always the default `python3` (which must exist).
//!
//! `cpython_check.py dump` pickles a catalogue of values (protocols 2, 4 and 5); agora
//! decodes and re-encodes each, and `cpython_check.py check` loads agora's bytes with
//! `pickle.loads` and compares with the original, type included. Pickles named `!…` are
//! ones agora must refuse (recursive structures, lone surrogates). The same pickles,
//! truncated and with flipped bytes, must give a clean error (or a value), never a panic.

use std::collections::BTreeSet;
use std::io::Write;
use std::process::{Command, Stdio};

use super::{decode, encode, exception, token};
use crate::reference::ObjectRef;
use crate::slice::Slice;
use crate::{ErrorCode, Value};

const SCRIPT: &str = include_str!("cpython_check.py");

/// An interpreter to test: `PYENV_VERSION` (None: the default `python3`) and its
/// version.
struct Python {
    pyenv_version: Option<String>,
    version: String,
}

impl Python {
    fn command(&self) -> Command {
        let mut command = Command::new("python3");
        if let Some(v) = &self.pyenv_version {
            command.env("PYENV_VERSION", v);
        }
        command.env("PYTHONHASHSEED", "0").env("PYTHONDONTWRITEBYTECODE", "1");
        command
    }

    /// Runs the script in `mode` with `input` on stdin; returns stdout.
    fn run(&self, mode: &str, input: &str) -> String {
        let mut child = self
            .command()
            .args(["-c", SCRIPT, mode])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn python3");
        let mut stdin = child.stdin.take().expect("stdin");
        let input = input.to_owned();
        // Written from a thread so a full stdout pipe cannot deadlock us.
        let writer = std::thread::spawn(move || stdin.write_all(input.as_bytes()));
        let output = child.wait_with_output().expect("python3 output");
        writer.join().expect("writer thread").expect("write to python3");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(output.status.success(), "python {} {mode} failed:\n{stderr}", self.version);
        String::from_utf8(output.stdout).expect("UTF-8 from python3")
    }
}

/// The version a `python3` reports, or None if it does not run.
fn probe(pyenv_version: Option<&str>) -> Option<Python> {
    let mut python = Python { pyenv_version: pyenv_version.map(str::to_owned), version: String::new() };
    let output = python.command().args(["-c", "import sys; print(sys.version.split()[0])"]).output().ok()?;
    if !output.status.success() {
        return None;
    }
    python.version = String::from_utf8(output.stdout).ok()?.trim().to_owned();
    Some(python)
}

/// The default `python3` (required), then each distinct pyenv 3.8–3.13.
fn interpreters() -> Vec<Python> {
    let default = probe(None).expect("python3 must be installed to run the CPython pickle tests");
    let mut seen = BTreeSet::from([default.version.clone()]);
    let mut found = vec![default];
    let listed = Command::new("pyenv").args(["versions", "--bare"]).output();
    let listed = listed.ok().filter(|o| o.status.success()).map(|o| String::from_utf8_lossy(&o.stdout).into_owned());
    for name in listed.unwrap_or_default().lines().map(str::trim) {
        let minor = name.strip_prefix("3.").and_then(|rest| rest.split('.').next()?.parse::<u32>().ok());
        if name.contains('/') || !matches!(minor, Some(8..=13)) {
            continue;
        }
        match probe(Some(name)) {
            Some(python) if seen.insert(python.version.clone()) => found.push(python),
            Some(_) => {}
            None => eprintln!("pyenv {name}: does not run, skipped"),
        }
    }
    found
}

/// One pickle from `dump`.
struct Dumped {
    name: String,
    proto: String,
    bytes: Vec<u8>,
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(text: &str) -> Vec<u8> {
    (0..text.len()).step_by(2).map(|i| u8::from_str_radix(&text[i..i + 2], 16).expect("hex")).collect()
}

fn dump(python: &Python) -> Vec<Dumped> {
    let out = python.run("dump", "");
    let dumped: Vec<Dumped> = out
        .lines()
        .map(|line| {
            let mut parts = line.split('\t');
            let (name, proto, data) = (parts.next(), parts.next(), parts.next());
            let (Some(name), Some(proto), Some(data)) = (name, proto, data) else { panic!("bad dump line {line:?}") };
            Dumped { name: name.to_owned(), proto: proto.to_owned(), bytes: unhex(data) }
        })
        .collect();
    assert!(dumped.len() > 100, "python {} dumped only {} pickles", python.version, dumped.len());
    dumped
}

#[test]
fn cpython_loads_what_agora_re_encodes() {
    let mut failures = Vec::new();
    for python in interpreters() {
        let dumped = dump(&python);
        let mut input = String::new();
        let mut sent = 0;
        for d in &dumped {
            let decoded = decode(&d.bytes);
            match (d.name.starts_with('!'), decoded) {
                (false, Ok(value)) => {
                    input += &format!("{}\t{}\t{}\n", d.name, d.proto, hex(&encode(&value)));
                    sent += 1;
                }
                (false, Err(e)) => {
                    failures.push(format!("{} {} p{}: decode failed: {e}", python.version, d.name, d.proto))
                }
                (true, Ok(v)) => failures.push(format!("{} {} p{}: decoded to {v:?}", python.version, d.name, d.proto)),
                (true, Err(e)) => {
                    assert_eq!(e.code, ErrorCode::Protocol, "{}: {e}", d.name);
                    if d.name.contains("recursive") {
                        assert!(e.message.contains("recursive structures are not supported"), "{}: {e}", d.name);
                    }
                }
            }
        }
        for (name, value) in agora_built() {
            input += &format!("{name}\tagora\t{}\n", hex(&encode(&value)));
            sent += 1;
        }
        let mut ok = 0;
        for line in python.run("check", &input).lines() {
            let fields: Vec<&str> = line.split('\t').collect();
            match fields.as_slice() {
                [_, _, "OK"] => ok += 1,
                [name, proto, "FAIL", why] => failures.push(format!("{} {name} p{proto}: {why}", python.version)),
                [name, proto, "INEXACT", ours, theirs] => failures.push(format!(
                    "{} {name} p{proto}: not CPython's bytes (minus FRAME/MEMOIZE):\n  agora   {ours}\n  cpython {theirs}",
                    python.version
                )),
                _ => failures.push(format!("{}: unexpected line {line:?}", python.version)),
            }
        }
        eprintln!("python {}: {ok} of {sent} re-encoded pickles load equal", python.version);
        if ok != sent {
            failures.push(format!("{}: only {ok} of {sent} checked", python.version));
        }
    }
    assert!(failures.is_empty(), "{} failures:\n{}", failures.len(), failures.join("\n"));
}

/// Values agora builds itself, named as in the script's catalogue.
fn agora_built() -> Vec<(&'static str, Value)> {
    let tcp = Value::Tuple(vec![Value::Str("127.0.0.1".into()), Value::Int(5)]);
    let unix = Value::Str("/tmp/agora.sock".into());
    let reference = |id, typeid: &str, address: &Value, class: &str| {
        let r = ObjectRef { id, typeid: typeid.into(), address: address.clone(), proxy_class: class.into() };
        r.to_value()
    };
    vec![
        ("agora#token", token("dict", tcp.clone(), "ab")),
        ("agora#dict proxy", reference(0xab, "dict", &tcp, "DictProxy")),
        ("agora#unix list proxy", reference(0xcd, "list", &unix, "ListProxy")),
        ("agora#queue.Empty", exception("queue", "Empty", vec![])),
        ("agora#KeyError", exception("builtins", "KeyError", vec![Value::Str("k".into())])),
        ("agora#slice", Slice { start: Some(1), stop: None, step: Some(-2) }.to_value()),
    ]
}

/// A small deterministic generator (xorshift64*), so failures reproduce.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

#[test]
fn truncated_and_corrupted_cpython_pickles_fail_cleanly() {
    let python = probe(None).expect("python3 must be installed to run the CPython pickle tests");
    let mut rng = Rng(0x5eed_1234_abcd_0001);
    for d in dump(&python) {
        let len = d.bytes.len();
        // Every prefix of a short pickle; for a long one the first 256, the last 16 and
        // a sample between. A strict prefix has no STOP, so it must be an error.
        let long = len > 4096;
        let prefixes: Vec<usize> = if long {
            (0..256).chain((0..16).map(|i| 256 + i * (len - 272) / 16)).chain(len - 16..len).collect()
        } else {
            (0..len).collect()
        };
        for cut in prefixes {
            let err = decode(&d.bytes[..cut]).expect_err("a strict prefix decoded");
            assert_eq!(err.code, ErrorCode::Protocol, "{} cut at {cut}: {err}", d.name);
        }
        for _ in 0..if long { 8 } else { 64 } {
            let mut bytes = d.bytes.clone();
            for _ in 0..1 + rng.below(3) {
                let at = rng.below(len);
                bytes[at] ^= 1 << rng.below(8);
            }
            let _ = decode(&bytes);
        }
        for _ in 0..if long { 4 } else { 16 } {
            let mut bytes = d.bytes.clone();
            let at = rng.below(len);
            bytes[at] = rng.next() as u8;
            let _ = decode(&bytes);
        }
    }
}
