//! `--raw`: a client shaped like `redis-benchmark`'s, for comparing servers.
//!
//! `redis-benchmark` does not use a Redis client library: per connection it writes
//! `-P` ready-made commands in one write, reads `-P` replies, and repeats. The typed
//! agora client does far more per call (serde conversion, a pending-call map, a
//! oneshot, a writer and a reader task), and on a small machine whose cores the
//! client and the server share, that cost lowers the server's measured throughput.
//! This mode speaks the native protocol the same lean way — handshake, Hello, one
//! `Open`, then lockstep batches of `Call` requests encoded into one buffer and their
//! responses decoded — so that `agora bench --raw` and `redis-benchmark` load their
//! servers through equally thin clients.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Instant;

use agora_proto::auth::Policy;
use agora_proto::io::{client_handshake, read_frame, read_frame_with, ReadRoom};
use agora_proto::native::{self, Args, Hello, Kind, Op, Reply, Request, Response, Welcome};
use agora_proto::{frame, Address, ErrorCode, Value};
use bytes::BytesMut;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};

use super::echo::{take, EchoConn};
use super::report::Latencies;
use super::workload::{self, Rng, Test};

/// The object a raw test calls, and how.
struct Target {
    kind: Kind,
    name: &'static str,
    method: &'static str,
    /// Arguments: key and/or value, filled in per request.
    shape: Shape,
}

#[derive(Clone, Copy)]
enum Shape {
    None,
    Key,
    Value,
    KeyValue,
    One,
}

fn target(test: Test) -> Option<Target> {
    let t = |kind, name, method, shape| Some(Target { kind, name, method, shape });
    match test {
        Test::Set => t(Kind::Dict, workload::DICT, "__setitem__", Shape::KeyValue),
        Test::Get => t(Kind::Dict, workload::DICT, "__getitem__", Shape::Key),
        Test::Append => t(Kind::List, workload::LIST, "append", Shape::Value),
        Test::Add => t(Kind::Value, workload::COUNTER, "add", Shape::One),
        Test::Qput => t(Kind::Queue, workload::QUEUE, "put", Shape::Value),
        Test::Qget => t(Kind::Queue, workload::QUEUE, "get_nowait", Shape::None),
        Test::Ping => Some(Target { kind: Kind::Dict, name: "", method: "", shape: Shape::None }),
        _ => None,
    }
}

/// True if `test` can run with `--raw`.
pub fn supports(test: Test) -> bool {
    target(test).is_some()
}

/// Outcomes a raw worker counts as success: a missing key (get) or an empty queue
/// (qget) is an answer, as `nil` is for Redis.
fn is_answer(code: ErrorCode) -> bool {
    matches!(code, ErrorCode::KeyError | ErrorCode::Empty)
}

/// What one raw connection needs to run a test.
pub struct RawRun<'a> {
    /// The test.
    pub test: Test,
    /// Requests in flight per batch.
    pub pipeline: usize,
    /// The shared request budget.
    pub remaining: &'a AtomicU64,
    /// Set when the time limit passes.
    pub stop: &'a AtomicBool,
    /// Where latencies go.
    pub latencies: &'a Latencies,
    /// This worker's number.
    pub worker: usize,
    /// Key space for set/get.
    pub keyspace: u64,
    /// The payload.
    pub value: &'a str,
}

impl RawRun<'_> {
    /// Connects, authenticates, opens the test's object and runs the test to the end.
    pub async fn run(&self, address: &Address, authkey: &[u8]) -> Result<(), String> {
        match EchoConn::connect(address).await.map_err(|e| e.to_string())? {
            EchoConn::Tcp(s) => self.session(s, authkey).await,
            EchoConn::Unix(s) => self.session(s, authkey).await,
        }
    }

    async fn session<S: AsyncRead + AsyncWrite + Unpin>(&self, mut stream: S, authkey: &[u8]) -> Result<(), String> {
        let mut rbuf = BytesMut::with_capacity(64 * 1024);
        client_handshake(&mut stream, &mut rbuf, authkey, Policy::default()).await.map_err(|e| e.to_string())?;
        let mut out = Vec::with_capacity(64 * 1024);
        let hello = Hello::new("agora-bench-raw");
        frame::encode_with(&mut out, |b| native::encode(&hello, b)).map_err(|e| e.message)?;
        stream.write_all(&out).await.map_err(|e| e.to_string())?;
        let welcome = read_frame(&mut stream, &mut rbuf, frame::DEFAULT_MAX_FRAME).await.map_err(|e| e.to_string())?;
        native::decode::<Welcome>(&welcome).map_err(|e| format!("no welcome: {}", e.message))?;
        let target = target(self.test).ok_or_else(|| format!("{} cannot run with --raw", self.test.name()))?;
        // The object: opened by name (the caller created it with the right arguments).
        let mut object = 0;
        if !target.name.is_empty() {
            let open = Op::Open { kind: target.kind.clone(), name: Some(target.name.into()), args: Args::default() };
            out.clear();
            frame::encode_with(&mut out, |b| native::encode(&Request { id: 1, op: open }, b)).map_err(|e| e.message)?;
            stream.write_all(&out).await.map_err(|e| e.to_string())?;
            let body = read_frame(&mut stream, &mut rbuf, frame::DEFAULT_MAX_FRAME).await.map_err(|e| e.to_string())?;
            match native::decode::<Response>(&body).map_err(|e| e.message)?.result {
                Ok(Reply::Opened { object: id, .. }) => object = id,
                other => return Err(format!("opening {}: {other:?}", target.name)),
            }
        }
        let mut recorder = self.latencies.recorder(self.worker);
        let mut rng = Rng::new(self.worker as u64 + 1);
        let mut key = String::with_capacity(16);
        let mut next_id = 2u64;
        let mut room = ReadRoom::default();
        while !self.stop.load(Ordering::Relaxed) {
            let batch = take(self.remaining, self.pipeline as u64);
            if batch == 0 {
                break;
            }
            out.clear();
            for _ in 0..batch {
                let op = if target.name.is_empty() {
                    Op::Ping
                } else {
                    workload::write_key(&mut key, rng.below(self.keyspace));
                    let args = match target.shape {
                        Shape::None => vec![],
                        Shape::Key => vec![Value::Str(key.as_str().into())],
                        Shape::Value => vec![Value::Str(self.value.into())],
                        Shape::KeyValue => vec![Value::Str(key.as_str().into()), Value::Str(self.value.into())],
                        Shape::One => vec![Value::Int(1)],
                    };
                    Op::Call { object, method: target.method.into(), args: Args::positional(args) }
                };
                let request = Request { id: next_id, op };
                next_id += 1;
                frame::encode_with(&mut out, |b| native::encode_request(&request, b)).map_err(|e| e.message)?;
            }
            let start = Instant::now();
            stream.write_all(&out).await.map_err(|e| e.to_string())?;
            for _ in 0..batch {
                let body = read_frame_with(&mut stream, &mut rbuf, frame::DEFAULT_MAX_FRAME, &mut room)
                    .await
                    .map_err(|e| e.to_string())?;
                match native::decode_response(&body).map_err(|e| e.message)?.result {
                    Ok(_) => {}
                    Err(e) if is_answer(e.code) => {}
                    Err(e) => return Err(e.message),
                }
            }
            let elapsed = start.elapsed();
            for _ in 0..batch {
                recorder.record(elapsed);
            }
        }
        Ok(())
    }
}
