//! Busy polling: a connection's thread looks for the client's next request for a
//! moment before it goes to sleep — a CPython connection's thread of its own
//! ([`crate::dedicated`]), and a shared worker thread serving a lone native client.
//!
//! A client that makes one call at a time (every stock CPython client, and a lone
//! native caller) sends its next call a few tens of microseconds after it reads an
//! answer. A server thread that sleeps in between must be woken by the kernel, and
//! where idle CPUs halt — virtual machines whose guest halt polling is off, like the
//! one the benchmarks run on — waking one costs 20–30 µs, paid twice per round trip
//! (the server's thread, then the client). A thread still polling its socket when the
//! request comes needs no waking, so one of the two is saved: a lone CPython client's
//! round trip over a Unix socket went from ~70 to ~31 µs (BENCHMARKS.md, round 19), and
//! a lone native client's over TCP from ~85 to ~26 µs (round 20).
//! Linux's `SO_BUSY_POLL` does the same for network card queues, and its
//! `cpuidle-haltpoll` governor for a whole idle CPU; neither reaches a Unix socket or a
//! guest that turned it off.
//!
//! A poll pays only while CPUs would otherwise sit idle. A polling thread keeps its
//! CPU looking busy, so a client woken meanwhile queues behind a busy CPU instead of
//! taking an idle one: with more CPython clients calling than half the CPUs, polling
//! lengthened their tail latency (a queue's put and get, four clients on two cores: p99
//! 150–300 → 240–1,100 µs) and gained nothing. So the poll is bounded four ways:
//! - by the connection's window, which adapts as the kernel's haltpoll governor adapts
//!   its own: it grows while requests arrive soon after it ends (a poll would have
//!   caught them), and halves after every gap longer than the most (`--python-busy-poll`),
//!   so a client that pauses between calls soon costs nothing;
//! - by how many connections are calling: none polls while half the CPUs' worth of
//!   other connections (at least one) made a call in the last millisecond;
//! - by how many threads poll at once (half the CPUs, at least one);
//! - by yielding the CPU on every turn of the loop to any other thread that wants it.
//!
//! A shared worker thread serves many connections, and while one of them polls, the
//! others on that thread wait. So a native connection polls ([`BusyPoll::wait_alone`])
//! only after a round trip in which no other connection had a request, stops as soon
//! as one has, lets its next answers pass unpolled while that keeps happening (two
//! clients taking turns), and its most is capped ([`NATIVE_MOST`]): it is for the lone
//! client, and costs the others next to nothing once two are calling.
//!
//! Owns: one connection's window, the count of threads polling, the record of recent
//! calls, and the counters the metrics show. It sees a socket only through the
//! readiness check it is given; it must not touch a dialect's or the engine's state.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// What every connection's polling shares: how many may poll at once, who called
/// lately, and what polling did.
#[derive(Debug)]
pub struct Polling {
    limit: usize,
    polling: AtomicUsize,
    recent: Recent,
    next_id: AtomicU64,
    /// What the CPython connections' threads of their own did.
    python: Counters,
    /// What the shared workers did for native connections.
    native: Counters,
}

/// The most a native connection may poll for at a time: its worker thread's other
/// connections wait meanwhile.
pub const NATIVE_MOST: Duration = Duration::from_millis(1);

/// What one kind of polling did.
#[derive(Debug, Default)]
struct Counters {
    hits: AtomicU64,
    misses: AtomicU64,
    nanos: AtomicU64,
}

impl Counters {
    fn stats(&self) -> PollStats {
        PollStats {
            hits: self.hits.load(Ordering::Relaxed),
            misses: self.misses.load(Ordering::Relaxed),
            nanos: self.nanos.load(Ordering::Relaxed),
        }
    }
}

/// How long ago a call may have come for its connection to count as calling now.
const CALLING: Duration = Duration::from_millis(1);

/// The last calls of every polling connection, newest over oldest: enough to tell
/// whether `limit` others called within [`CALLING`] (a connection calling every
/// 100 µs leaves ~10 entries in it).
const RECENT: usize = 64;

/// Bits of a recent call's entry that hold its time (microseconds since the server's
/// start, modulo 2^40: 12 days); the bits above hold its connection's id.
const TIME_BITS: u32 = 40;
const TIME_MASK: u64 = (1 << TIME_BITS) - 1;

/// A ring of recent calls, each one `AtomicU64`: `id << TIME_BITS | time`.
#[derive(Debug)]
struct Recent {
    calls: [AtomicU64; RECENT],
    next: AtomicUsize,
    epoch: Instant,
}

impl Recent {
    fn new() -> Recent {
        Recent { calls: std::array::from_fn(|_| AtomicU64::new(0)), next: AtomicUsize::new(0), epoch: Instant::now() }
    }

    /// Microseconds since the server started, in an entry's time bits.
    fn now(&self, at: Instant) -> u64 {
        u64::try_from(at.duration_since(self.epoch).as_micros()).unwrap_or(u64::MAX) & TIME_MASK
    }

    /// Notes a call of connection `id` at `time` (from [`Recent::now`]).
    fn note(&self, id: u64, time: u64) {
        let slot = self.next.fetch_add(1, Ordering::Relaxed) % RECENT;
        self.calls[slot].store(id << TIME_BITS | time, Ordering::Relaxed);
    }

    /// True if at least `enough` connections other than `id` called within [`CALLING`]
    /// of `time`.
    fn others_calling(&self, id: u64, time: u64, enough: usize) -> bool {
        let horizon = CALLING.as_micros() as u64;
        let mut seen = [0u64; RECENT];
        let mut count = 0;
        for call in &self.calls {
            let call = call.load(Ordering::Relaxed);
            let (other, at) = (call >> TIME_BITS, call & TIME_MASK);
            let recent = time.wrapping_sub(at) & TIME_MASK <= horizon;
            if other != 0 && other != id && recent && !seen[..count].contains(&other) {
                seen[count] = other;
                count += 1;
                if count >= enough {
                    return true;
                }
            }
        }
        false
    }
}

/// What polling has done since the server started (the metrics endpoint shows it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PollStats {
    /// Polls that found the next request: a wake-up saved.
    pub hits: u64,
    /// Polls whose window ended first: the thread slept after all.
    pub misses: u64,
    /// Time spent polling, in nanoseconds.
    pub nanos: u64,
}

impl Polling {
    /// At most `limit` threads polling at once (0: none ever polls).
    pub fn new(limit: usize) -> Polling {
        Polling {
            limit,
            polling: AtomicUsize::new(0),
            recent: Recent::new(),
            next_id: AtomicU64::new(1),
            python: Counters::default(),
            native: Counters::default(),
        }
    }

    /// Half the CPUs this process may use, at least one: polling threads leave the
    /// rest to the clients and the shared workers.
    pub fn for_this_machine() -> Polling {
        let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
        Polling::new((cpus / 2).max(1))
    }

    /// What the CPython connections' threads' polling has done so far.
    pub fn python_stats(&self) -> PollStats {
        self.python.stats()
    }

    /// What native connections' polling on the shared workers has done so far.
    pub fn native_stats(&self) -> PollStats {
        self.native.stats()
    }

    /// Takes one of the polling places, if one is free.
    fn take(&self) -> bool {
        self.polling.fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| (n < self.limit).then_some(n + 1)).is_ok()
    }

    fn give_back(&self) {
        self.polling.fetch_sub(1, Ordering::AcqRel);
    }
}

/// One connection's busy polling: call [`BusyPoll::wait`] (on a thread of its own) or
/// [`BusyPoll::wait_alone`] (on a shared worker) after an answer is written and before
/// the next read, and [`BusyPoll::arrived`] once the next request is read.
#[derive(Debug)]
pub struct BusyPoll {
    id: u64,
    most: Duration,
    window: Duration,
    answered: Option<Instant>,
    polling: Arc<Polling>,
    /// A native connection on a shared worker (see [`BusyPoll::on_shared_worker`]).
    shared_worker: bool,
    /// On a shared worker: waits to let pass without polling, after polls that another
    /// connection's request cut short (see [`BusyPoll::wait_alone`]).
    skip: u32,
    /// How many waits the next cut-short poll makes it let pass.
    backoff: u32,
}

/// What one poll came to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Polled {
    /// The request (or the peer's close) came.
    Caught,
    /// The window ended first, or the socket could not tell.
    Ended,
    /// It was told to stop: another connection had a request.
    CutShort,
    /// Every polling place was taken: no poll.
    NoPlace,
}

/// The fewest and the most waits a shared worker lets pass after a poll cut short.
const BACKOFF: std::ops::RangeInclusive<u32> = 16..=1024;

impl BusyPoll {
    /// For a CPython connection's thread of its own: polls for up to `most` at a time
    /// (zero: never), sharing `polling`'s places.
    pub fn new(most: Duration, polling: Arc<Polling>) -> BusyPoll {
        // Ids fit the bits above an entry's time; one reused after 2^24 connections
        // can only make two connections count as one.
        let id = polling.next_id.fetch_add(1, Ordering::Relaxed) % ((1 << (64 - TIME_BITS)) - 1) + 1;
        // A client that connects is about to make calls: start wide open.
        BusyPoll { id, most, window: most, answered: None, polling, shared_worker: false, skip: 0, backoff: 0 }
    }

    /// For a native connection on a shared worker thread: polls for up to `most` (at
    /// most [`NATIVE_MOST`]) at a time, only through [`BusyPoll::wait_alone`].
    pub fn on_shared_worker(most: Duration, polling: Arc<Polling>) -> BusyPoll {
        let most = most.min(NATIVE_MOST);
        BusyPoll { id: 0, most, window: most, answered: None, polling, shared_worker: true, skip: 0, backoff: 0 }
    }

    fn counters(&self) -> &Counters {
        if self.shared_worker {
            &self.polling.native
        } else {
            &self.polling.python
        }
    }

    /// The connection's window now.
    pub fn window(&self) -> Duration {
        self.window
    }

    /// Polls `ready` (bytes waiting on the socket? `None`: it cannot tell) until it says
    /// yes or the window ends, yielding the CPU between looks; returns at once if the
    /// window is closed, enough other connections are calling, or every polling place
    /// is taken. Starts the gap that [`BusyPoll::arrived`] measures. True when it let
    /// the poll pass because enough other connections are calling.
    pub fn wait(&mut self, ready: impl FnMut() -> Option<bool>) -> bool {
        let start = Instant::now();
        self.answered = Some(start);
        if self.window.is_zero() {
            return false;
        }
        let polling = &self.polling;
        if polling.recent.others_calling(self.id, polling.recent.now(start), polling.limit) {
            return true;
        }
        self.poll(start, || true, ready);
        false
    }

    /// Like [`BusyPoll::wait`], for a shared worker: polls only while `alone` says no
    /// other connection has had a request since this one's last, and returns at once
    /// (without even reading the clock) if one has. Only then does the gap until
    /// [`BusyPoll::arrived`] set the window. A poll that another connection's request
    /// cuts short means two clients take turns: the next waits let pass without
    /// polling, 16 and doubling with every such poll (at most 1,024), until one catches.
    pub fn wait_alone(&mut self, alone: impl Fn() -> bool, ready: impl FnMut() -> Option<bool>) {
        self.answered = None;
        if self.skip > 0 {
            self.skip -= 1;
            return;
        }
        if !alone() {
            return;
        }
        let start = Instant::now();
        self.answered = Some(start);
        if self.window.is_zero() {
            return;
        }
        match self.poll(start, alone, ready) {
            Polled::Caught => self.backoff = 0,
            Polled::CutShort => {
                self.backoff = (self.backoff * 2).clamp(*BACKOFF.start(), *BACKOFF.end());
                self.skip = self.backoff;
            }
            Polled::Ended | Polled::NoPlace => {}
        }
    }

    /// Polls `ready` while `go_on` holds and the window lasts, if a place is free.
    fn poll(&mut self, start: Instant, go_on: impl Fn() -> bool, mut ready: impl FnMut() -> Option<bool>) -> Polled {
        if !self.polling.take() {
            return Polled::NoPlace;
        }
        let polled = loop {
            match ready() {
                Some(true) => break Polled::Caught,
                None => break Polled::Ended,
                Some(false) if start.elapsed() >= self.window => break Polled::Ended,
                Some(false) if !go_on() => break Polled::CutShort,
                Some(false) => std::thread::yield_now(),
            }
        };
        self.polling.give_back();
        let counters = self.counters();
        let counter = if polled == Polled::Caught { &counters.hits } else { &counters.misses };
        counter.fetch_add(1, Ordering::Relaxed);
        let spent = u64::try_from(start.elapsed().as_nanos()).unwrap_or(u64::MAX);
        counters.nanos.fetch_add(spent, Ordering::Relaxed);
        polled
    }

    /// The next request was read: the gap since [`BusyPoll::wait`] began sets the window,
    /// and the call is noted for other connections' [`BusyPoll::wait`] to see. (On a
    /// shared worker the gate is the server's request count instead: nothing is noted,
    /// and the clock is read only if the last wait was alone.)
    pub fn arrived(&mut self) {
        if self.shared_worker {
            if let Some(answered) = self.answered.take() {
                self.window = next_window(self.window, answered.elapsed(), self.most);
            }
            return;
        }
        let now = Instant::now();
        if let Some(answered) = self.answered.take() {
            self.window = next_window(self.window, now.duration_since(answered), self.most);
        }
        if !self.most.is_zero() {
            self.polling.recent.note(self.id, self.polling.recent.now(now));
        }
    }
}

/// The window after a request came `gap` after the answer: unchanged if the poll
/// caught it; doubled (from at least a quarter of `most`, to at most `most`) if a
/// longer poll would have; halved, and closed once below a microsecond, if no poll
/// within `most` could have.
fn next_window(window: Duration, gap: Duration, most: Duration) -> Duration {
    if gap <= window {
        window
    } else if gap <= most {
        (window * 2).max(most / 4).min(most)
    } else {
        let halved = window / 2;
        if halved < Duration::from_micros(1) {
            Duration::ZERO
        } else {
            halved
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MOST: Duration = Duration::from_micros(100);

    fn us(n: u64) -> Duration {
        Duration::from_micros(n)
    }

    #[test]
    fn a_caught_request_keeps_the_window() {
        assert_eq!(next_window(us(50), us(30), MOST), us(50));
        assert_eq!(next_window(MOST, MOST, MOST), MOST);
    }

    #[test]
    fn a_request_just_after_the_window_widens_it_up_to_the_most() {
        assert_eq!(next_window(us(0), us(40), MOST), us(25), "from closed: a quarter of the most");
        assert_eq!(next_window(us(25), us(40), MOST), us(50));
        assert_eq!(next_window(us(80), us(90), MOST), MOST, "never past the most");
    }

    #[test]
    fn long_pauses_close_the_window() {
        let mut window = MOST;
        let mut halvings = 0;
        while !window.is_zero() {
            window = next_window(window, Duration::from_millis(5), MOST);
            halvings += 1;
            assert!(halvings < 20, "the window closes");
        }
        assert_eq!(halvings, 7, "100 µs halves to below 1 µs in 7 steps");
        assert_eq!(next_window(Duration::ZERO, Duration::from_millis(5), MOST), Duration::ZERO);
        assert_eq!(next_window(Duration::ZERO, us(60), MOST), us(25), "and reopens when calls come quickly again");
    }

    #[test]
    fn polling_stops_when_bytes_wait_and_counts_a_hit() {
        let polling = Arc::new(Polling::new(1));
        let mut poll = BusyPoll::new(Duration::from_secs(5), polling.clone());
        let mut looks = 0;
        poll.wait(|| {
            looks += 1;
            Some(looks == 3)
        });
        assert_eq!(looks, 3);
        assert_eq!(polling.python_stats().hits, 1);
        assert_eq!(polling.python_stats().misses, 0);
        poll.arrived();
        assert_eq!(poll.window(), Duration::from_secs(5), "caught: the window stays");
        assert_eq!(polling.polling.load(Ordering::Acquire), 0, "the place is given back");
    }

    #[test]
    fn polling_ends_with_the_window_and_counts_a_miss() {
        let polling = Arc::new(Polling::new(1));
        let mut poll = BusyPoll::new(Duration::from_millis(2), polling.clone());
        let start = Instant::now();
        poll.wait(|| Some(false));
        assert!(start.elapsed() >= Duration::from_millis(2), "it polled for the whole window");
        let stats = polling.python_stats();
        assert_eq!((stats.hits, stats.misses), (0, 1));
        assert!(stats.nanos >= 2_000_000, "the time spent is counted: {stats:?}");
    }

    #[test]
    fn a_socket_that_cannot_tell_is_not_polled() {
        let polling = Arc::new(Polling::new(1));
        let mut poll = BusyPoll::new(Duration::from_secs(5), polling.clone());
        let mut looks = 0;
        poll.wait(|| {
            looks += 1;
            None
        });
        assert_eq!(looks, 1);
    }

    #[test]
    fn recent_calls_count_distinct_other_connections_within_a_millisecond() {
        let recent = Recent::new();
        assert!(!recent.others_calling(1, 5_000, 1), "nobody called yet");
        recent.note(1, 4_900);
        assert!(!recent.others_calling(1, 5_000, 1), "its own calls do not count");
        recent.note(2, 3_000);
        assert!(!recent.others_calling(1, 5_000, 1), "2 ms ago is not calling now");
        recent.note(2, 4_500);
        recent.note(2, 4_600);
        assert!(recent.others_calling(1, 5_000, 1));
        assert!(!recent.others_calling(1, 5_000, 2), "one other connection, twice");
        recent.note(3, 4_100);
        assert!(recent.others_calling(1, 5_000, 2));
        assert!(!recent.others_calling(1, 5_000, 3));
        // Old calls are written over: 64 newer ones of connection 1 hide the others.
        for t in 0..RECENT as u64 {
            recent.note(1, 4_900 + t);
        }
        assert!(!recent.others_calling(1, 5_000, 1));
        // Times wrap at 2^40 µs without making old calls look new.
        recent.note(4, TIME_MASK - 100);
        assert!(recent.others_calling(1, 200, 1), "300 µs ago, across the wrap");
        assert!(!recent.others_calling(1, 5_000, 1));
    }

    #[test]
    fn nobody_polls_while_enough_other_connections_are_calling() {
        let polling = Arc::new(Polling::new(1));
        let mut other = BusyPoll::new(Duration::from_secs(5), polling.clone());
        other.arrived();
        let mut poll = BusyPoll::new(Duration::from_secs(5), polling.clone());
        let others = poll.wait(|| panic!("polled while another connection called just now"));
        assert!(others, "it says why it did not poll: its thread then waits for input alone");
        let mut alone = BusyPoll::new(Duration::from_secs(5), Arc::new(Polling::new(1)));
        alone.arrived();
        let mut looks = 0;
        let others = alone.wait(|| {
            looks += 1;
            Some(true)
        });
        assert_eq!(looks, 1, "its own calls never stop it");
        assert!(!others);
    }

    /// A window no scheduling delay outlasts, for tests of how a poll ends (caught, cut
    /// short) rather than when: with the shared worker's 1 ms, a test thread descheduled
    /// between two looks on a loaded machine saw its window run out first.
    const UNHURRIED: Duration = Duration::from_secs(60);

    #[test]
    fn a_shared_worker_polls_only_while_it_is_alone() {
        let polling = Arc::new(Polling::new(1));
        let mut poll = BusyPoll::on_shared_worker(Duration::from_secs(5), polling.clone());
        assert_eq!(poll.window(), NATIVE_MOST, "capped: the worker's other connections wait");
        poll.wait_alone(|| false, || panic!("polled while another connection had a request"));
        poll.arrived();
        assert_eq!(poll.window(), NATIVE_MOST, "a wait that did not poll sets no window");
        poll.window = UNHURRIED;
        // Another connection's request during the poll ends it: a miss.
        let mut looks = 0;
        let others = std::cell::Cell::new(false);
        poll.wait_alone(
            || !others.get(),
            || {
                looks += 1;
                others.set(looks == 3);
                Some(false)
            },
        );
        assert_eq!(looks, 3);
        assert_eq!((polling.native_stats().hits, polling.native_stats().misses), (0, 1));
        // Two clients taking turns: the next 16 waits let pass without a poll.
        for _ in 0..16 {
            poll.wait_alone(|| true, || panic!("polled right after a poll was cut short"));
        }
        poll.wait_alone(|| true, || Some(true));
        assert_eq!(polling.native_stats().hits, 1);
        assert_eq!(polling.python_stats(), PollStats { hits: 0, misses: 0, nanos: 0 }, "counted apart");
        // Its calls are not noted: a CPython connection's gate uses the ring.
        poll.arrived();
        assert!(!polling.recent.others_calling(99, polling.recent.now(Instant::now()), 1));
    }

    #[test]
    fn polls_cut_short_again_and_again_let_more_waits_pass_until_one_catches() {
        let polling = Arc::new(Polling::new(1));
        let mut poll = BusyPoll::on_shared_worker(NATIVE_MOST, polling.clone());
        poll.window = UNHURRIED;
        // Polls until it is cut short (`looks` counts how often it was asked).
        let cut_short = |poll: &mut BusyPoll| {
            let looked = std::cell::Cell::new(0);
            poll.wait_alone(|| looked.get() == 0, || Some(looked.replace(looked.get() + 1) > 0));
            looked.get()
        };
        assert_eq!(cut_short(&mut poll), 1, "the first wait polls");
        let mut passed = Vec::new();
        for _ in 0..8 {
            let mut waits = 0;
            while cut_short(&mut poll) == 0 {
                waits += 1;
            }
            passed.push(waits);
        }
        // The wait after each run of passes polled, and was cut short again.
        assert_eq!(passed, [16, 32, 64, 128, 256, 512, 1024, 1024]);
        poll.skip = 0;
        poll.wait_alone(|| true, || Some(true));
        assert_eq!(poll.backoff, 0, "a poll that catches its request starts over");
    }

    #[test]
    fn no_more_threads_poll_than_the_limit() {
        let polling = Arc::new(Polling::new(1));
        assert!(polling.take(), "the one place");
        let mut poll = BusyPoll::new(Duration::from_secs(5), polling.clone());
        poll.wait(|| panic!("polled while the only place was taken"));
        polling.give_back();
        let mut never = BusyPoll::new(Duration::from_secs(5), Arc::new(Polling::new(0)));
        never.wait(|| panic!("polled with no places at all"));
        let mut off = BusyPoll::new(Duration::ZERO, polling.clone());
        off.wait(|| panic!("polled with busy polling off"));
        assert!(polling.take());
        let mut native = BusyPoll::on_shared_worker(Duration::from_secs(5), polling.clone());
        native.wait_alone(|| true, || panic!("a native connection polled while the only place was taken"));
    }
}
