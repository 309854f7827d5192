//! The tests `agora bench` runs against an agora server, one worker per in-flight
//! request slot (`-c` connections × `-P` slots each).

use std::future::Future;
use std::pin::pin;
use std::task::Poll;
use std::time::{Duration, Instant};

use agora_client::{Dict, Event, List, Lock, Manager, Queue};
use clap::ValueEnum;

use super::report;

/// A test `agora bench` can run (`-t`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Test {
    /// A request that does nothing (`Manager::ping`): agora's own floor.
    Ping,
    /// The transport floor: raw frames echoed by a minimal echo server, no agora at all.
    Echo,
    /// Dict set (`d[key] = value`) on random keys (Redis: HSET).
    Set,
    /// Dict get (`d[key]`) on random keys (Redis: HGET).
    Get,
    /// List append (Redis: RPUSH).
    Append,
    /// Atomic value add (`Value::add`) on one counter (Redis: INCR).
    Add,
    /// Queue put, never blocking (Redis: LPUSH).
    Qput,
    /// Queue get without waiting (`get_nowait`; Redis: RPOP).
    Qget,
    /// Queue hand-off: put then a blocking get, per iteration (2 round trips).
    Queue,
    /// Uncontended lock: acquire + release of a lock of one's own (2 round trips).
    Lock,
    /// Contended lock: every worker acquires + releases the same lock.
    LockContended,
    /// Event wake-up: a parked wait, then set; time from set to the waiter's return.
    Event,
    /// Fill a dict with exactly `-r` distinct keys and measure the server's memory
    /// per entry (then delete it).
    Fill,
    /// Dict churn: a dict of `-r` keys where each sample deletes the oldest key and
    /// inserts a new one (first in, first out; 2 round trips per sample).
    Churn,
    /// Dict churn at random: as [`Test::Churn`], but each sample deletes a key picked at
    /// random and inserts its successor (the same slot of `-r`, a generation on).
    ChurnRandom,
    /// Dict churn that grows: as [`Test::Churn`], but each sample inserts two new keys
    /// (3 round trips per sample): the dict gains a key per sample while its oldest go,
    /// so its entry ring both drops its front and grows.
    ChurnGrow,
}

impl Test {
    /// The name `-t` takes.
    pub fn name(self) -> &'static str {
        match self {
            Test::Ping => "ping",
            Test::Echo => "echo",
            Test::Set => "set",
            Test::Get => "get",
            Test::Append => "append",
            Test::Add => "add",
            Test::Qput => "qput",
            Test::Qget => "qget",
            Test::Queue => "queue",
            Test::Lock => "lock",
            Test::LockContended => "lock-contended",
            Test::Event => "event",
            Test::Fill => "fill",
            Test::Churn => "churn",
            Test::ChurnRandom => "churn-random",
            Test::ChurnGrow => "churn-grow",
        }
    }

    /// What one sample measures.
    pub fn what(self) -> &'static str {
        match self {
            Test::Ping => "ping: one round trip that does nothing (native protocol)",
            Test::Echo => "echo: the floor, raw frames echoed by a minimal server over the same transport",
            Test::Set => "dict set d[key] = value (HSET)",
            Test::Get => "dict get d[key] (HGET)",
            Test::Append => "list append (RPUSH)",
            Test::Add => "value add, atomic (INCR)",
            Test::Qput => "queue put (LPUSH)",
            Test::Qget => "queue get_nowait (RPOP)",
            Test::Queue => "queue hand-off: put, then a blocking get (2 round trips per sample)",
            Test::Lock => "lock acquire+release, one lock per worker (2 round trips per sample)",
            Test::LockContended => "lock acquire+release, all workers on one lock (sample includes the wait)",
            Test::Event => "event wake-up: time from set() to the parked wait() returning",
            Test::Fill => "dict fill: exactly -r distinct keys, then server memory per entry",
            Test::Churn => {
                "dict churn: -r keys kept, the oldest deleted and a new one inserted (2 round trips per sample)"
            }
            Test::ChurnRandom => {
                "dict churn: -r keys kept, one at random deleted and a new one inserted (2 round trips per sample)"
            }
            Test::ChurnGrow => {
                "dict churn that grows: the oldest key deleted, two new ones inserted (3 round trips per sample)"
            }
        }
    }
}

/// Names of the shared objects the tests use (named like Redis keys, so a rerun
/// keeps hitting the same objects).
pub const DICT: &str = "bench:dict";
/// The list `append` grows.
pub const LIST: &str = "bench:list";
/// The counter `add` increments.
pub const COUNTER: &str = "bench:counter";
/// The queue of `qput`/`qget`.
pub const QUEUE: &str = "bench:queue";
/// The queue of the `queue` hand-off.
pub const HANDOFF: &str = "bench:handoff";
/// The lock of `lock-contended`.
pub const LOCK: &str = "bench:lock";
/// The dict `fill` builds.
pub const FILL: &str = "bench:fill";
/// The dict `churn`, `churn-random` and `churn-grow` churn (left in place after them:
/// after `churn` its keys are the newest `-r`).
pub const CHURN: &str = "bench:churn";

/// Makes [`CHURN`] afresh with keys `0..keys` (numbered as [`write_key`] spells them,
/// the oldest first), `value` under each: what [`Test::Churn`], [`Test::ChurnRandom`]
/// and [`Test::ChurnGrow`] start from.
pub async fn prepare_churn(manager: &Manager, keys: u64, value: &String) -> agora_client::Result<()> {
    match manager.delete(CHURN).await {
        Ok(()) | Err(agora_client::Error::NoSuchName(_)) => {}
        Err(e) => return Err(e),
    }
    let dict: Dict<String, String> = manager.dict(CHURN).await?;
    let mut batch: Vec<String> = Vec::new();
    // In batches: one `update` of millions of pairs would be one frame of hundreds of MB.
    for first in (0..keys).step_by(CHURN_BATCH) {
        batch.clear();
        batch.extend((first..keys.min(first + CHURN_BATCH as u64)).map(|n| {
            let mut key = String::with_capacity(16);
            write_key(&mut key, n);
            key
        }));
        dict.update(batch.iter().map(|k| (k, value))).await?;
    }
    Ok(())
}

/// Keys per `update` of [`prepare_churn`].
const CHURN_BATCH: usize = 100_000;

/// The number of a key [`write_key`] spelled (its 12 digits).
fn key_number(key: &str) -> u64 {
    key.get(4..).and_then(|digits| digits.parse().ok()).unwrap_or(0)
}

/// A small, fast generator for random keys (xorshift64*).
pub struct Rng(u64);

impl Rng {
    /// Seeded per worker so workers spread over the key space differently.
    pub fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    /// The next number below `bound` (`bound` > 0).
    pub fn below(&mut self, bound: u64) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D) % bound
    }
}

/// Writes key number `n` into `out` as `redis-benchmark -r` spells it (`key:` and 12
/// digits, the last 12 of a larger `n`). By hand, as `redis-benchmark` does: the
/// formatting machinery was 3 % of the load generator's CPU.
pub fn write_key(out: &mut String, n: u64) {
    // The whole key on the stack, then one copy of a known size (two appends cost 20
    // instructions more per request).
    let mut key = *b"key:000000000000";
    let mut rest = n;
    for d in key[4..].iter_mut().rev() {
        if rest == 0 {
            break; // the leading zeros are there already (most keys are small numbers)
        }
        *d = b'0' + (rest % 10) as u8;
        rest /= 10;
    }
    out.clear();
    // std's UTF-8 check alone was 2 % of the typed client's instructions here.
    out.push_str(agora_proto::utf8::str_from_utf8(&key).expect("ASCII digits"));
}

/// One worker's prepared objects.
pub enum Worker {
    /// [`Test::Ping`].
    Ping(Manager),
    /// [`Test::Set`] and [`Test::Fill`].
    Set(Dict<String, String>),
    /// [`Test::Get`].
    Get(Dict<String, String>),
    /// [`Test::Append`].
    Append(List<String>),
    /// [`Test::Add`].
    Add(agora_client::Value<i64>),
    /// [`Test::Qput`].
    Qput(Queue<String>),
    /// [`Test::Qget`].
    Qget(Queue<String>),
    /// [`Test::Queue`].
    Queue(Queue<String>),
    /// [`Test::Lock`] and [`Test::LockContended`].
    Lock(Lock),
    /// [`Test::Event`].
    Event(Event),
    /// [`Test::Churn`], [`Test::ChurnRandom`] and [`Test::ChurnGrow`]: the dict, how many
    /// keys it starts with (`-r`), and how many new keys each sample inserts (two for
    /// `churn-grow`): the sample deleting key `n` inserts those numbered from `-r` + that
    /// many × `n` on, so with one a key's successor is `-r` on.
    Churn(Dict<String, String>, u64, u64),
}

impl Worker {
    /// Opens what `test` needs on `manager`; `keyspace` is `-r`.
    pub async fn prepare(test: Test, manager: &Manager, keyspace: u64) -> agora_client::Result<Worker> {
        Ok(match test {
            Test::Ping => Worker::Ping(manager.clone()),
            Test::Set => Worker::Set(manager.dict(DICT).await?),
            Test::Fill => Worker::Set(manager.dict(FILL).await?),
            Test::Get => Worker::Get(manager.dict(DICT).await?),
            Test::Append => Worker::Append(manager.list(LIST).await?),
            Test::Add => Worker::Add(manager.value(COUNTER, &0i64).await?),
            Test::Qput => Worker::Qput(manager.queue(QUEUE, 0).await?),
            Test::Qget => Worker::Qget(manager.queue(QUEUE, 0).await?),
            Test::Queue => Worker::Queue(manager.queue(HANDOFF, 0).await?),
            Test::Lock => Worker::Lock(manager.new_lock().await?),
            Test::LockContended => Worker::Lock(manager.lock(LOCK).await?),
            Test::Event => Worker::Event(manager.new_event().await?),
            Test::Churn | Test::ChurnRandom => Worker::Churn(manager.dict(CHURN).await?, keyspace, 1),
            Test::ChurnGrow => Worker::Churn(manager.dict(CHURN).await?, keyspace, 2),
            Test::Echo => unreachable!("the echo floor does not use an agora connection"),
        })
    }

    /// Makes requests until `next` says to stop, and `record`s how long each took; the
    /// first error ends it. `next` writes the next request's key (for the dict tests;
    /// for the churns, the key to delete) and says whether to make it; `value` is the
    /// payload; `record` takes each sample's latency in nanoseconds.
    ///
    /// Each test runs a loop of its own, boxed once per worker: a single state machine
    /// for every test held the largest test's calls, so every request in flight, of
    /// every test, carried a future of 1.2 KB (a get's is 0.3 KB), written and read on
    /// every call.
    #[allow(clippy::ptr_arg)] // the proxies take `&K` with `K = String`
    pub async fn drive(
        &self,
        value: &String,
        next: impl FnMut(&mut String) -> bool + Send,
        record: impl FnMut(u64) + Send,
    ) -> agora_client::Result<()> {
        // The loop around one request `$call` (using the key `$key`), timed from the end
        // of the previous one: one clock read per request instead of two
        // (`clock_gettime` was 7 % of the load generator's CPU in this VM).
        macro_rules! repeat {
            (|$key:ident| $call:expr) => {
                Box::pin(async move {
                    let (mut next, mut record) = (next, record);
                    let mut $key = String::with_capacity(16);
                    let mut clock = report::now_ns();
                    while next(&mut $key) {
                        $call;
                        let end = report::now_ns();
                        record(end.saturating_sub(clock));
                        clock = end;
                    }
                    Ok(())
                })
                .await
            };
        }
        match self {
            Worker::Ping(m) => repeat!(|_key| m.ping().await?),
            Worker::Set(d) => repeat!(|key| d.insert(&key, value).await?),
            Worker::Get(d) => repeat!(|key| drop(d.get(&key).await?)),
            Worker::Append(l) => repeat!(|_key| l.push(value).await?),
            Worker::Add(v) => repeat!(|_key| v.add(&1).await?),
            Worker::Qput(q) => repeat!(|_key| q.put(value).await?),
            Worker::Qget(q) => repeat!(|_key| drop(q.try_get().await?)),
            Worker::Queue(q) => repeat!(|_key| {
                q.put(value).await?;
                drop(q.get().await?);
            }),
            Worker::Lock(l) => repeat!(|_key| l.acquire().await?.release().await?),
            // Past the keys it started with, `churn-grow` deletes keys an earlier sample
            // inserted: if that sample is still in flight, the delete finds nothing and
            // the key stays.
            Worker::Churn(d, starts_with, inserts) => {
                let mut newest = String::with_capacity(16);
                repeat!(|key| {
                    d.remove(&key).await?;
                    let first = starts_with + inserts * key_number(&key);
                    for n in first..first + inserts {
                        write_key(&mut newest, n);
                        d.insert(&newest, value).await?;
                    }
                })
            }
            // Timed from the set to the wait's return, not from request to request.
            Worker::Event(e) => {
                Box::pin(async move {
                    let (mut next, mut record) = (next, record);
                    let mut key = String::new();
                    while next(&mut key) {
                        record(report::nanos(event_round(e).await?));
                    }
                    Ok(())
                })
                .await
            }
        }
    }
}

/// One round of [`Test::Event`]: the time from a set to the return of the wait it
/// wakes.
async fn event_round(e: &Event) -> agora_client::Result<Duration> {
    // Send the wait first (requests on one connection take effect in the order sent,
    // so it is parked before the set arrives), then set, and time from the set to the
    // wait's return.
    let mut wait = pin!(e.wait());
    let early = std::future::poll_fn(|cx| match wait.as_mut().poll(cx) {
        Poll::Ready(result) => Poll::Ready(Some(result)),
        Poll::Pending => Poll::Ready(None),
    })
    .await;
    if let Some(result) = early {
        result?;
        return Err(agora_client::Error::Protocol("the event was already set".into()));
    }
    let start = Instant::now();
    e.set().await?;
    wait.await?;
    let woken = start.elapsed();
    e.clear().await?;
    Ok(woken)
}

#[cfg(test)]
mod tests {
    #[test]
    fn keys_are_spelled_as_redis_benchmark_spells_them() {
        let mut key = String::from("left over");
        super::write_key(&mut key, 42);
        assert_eq!(key, "key:000000000042");
        super::write_key(&mut key, 999_999_999_999);
        assert_eq!(key, "key:999999999999");
        super::write_key(&mut key, 0);
        assert_eq!(key, "key:000000000000");
        super::write_key(&mut key, 10_200);
        assert_eq!(key, "key:000000010200", "zeros inside the number");
        super::write_key(&mut key, 3_000_000_000_007);
        assert_eq!(key, "key:000000000007", "the last 12 digits of a larger number");
        super::write_key(&mut key, 10_200);
        assert_eq!(super::key_number(&key), 10_200, "read back");
    }
}
