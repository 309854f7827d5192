//! Big memory work done off the caller's thread: freeing big values, and making big
//! indexes before they are needed.
//!
//! Dropping a dict of millions of entries frees every entry's allocations and then the
//! ring's and the index's pages: about 100 ms at 8 million keys, during which a server
//! thread that deletes it (a `del`, a `clear`, an object's last reference going) serves
//! nobody. Once a program turns this on ([`enable`]; the server does), such a value is
//! handed to one helper thread (`agora-reclaim`) that drops it there, as Redis's lazy
//! free does: the caller pays for a channel send ([`drop_later`]). The same thread makes
//! what a caller will need later and would otherwise wait for ([`make_ahead`]): the
//! bigger index a growing dict moves into, whose allocation writes every control byte
//! (~10 ms at 16 Mi buckets). And it gives back the pages of a big index that goes (the
//! old one a growth leaves, too), a stretch at a time ([`crate::bigalloc`]).
//!
//! This module owns that thread and nothing else: callers decide what is big enough
//! to hand over ([`RECLAIM_FROM`]), and what they hand over must need nothing from
//! them when it drops (plain data: values, indexes). Off by default: a library (the
//! client) does not start threads its program did not ask for. Memory handed over is
//! freed a moment later, not at once; a program that counts its memory sees it go then.

use std::cell::Cell;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{self, Sender};
use std::sync::{Mutex, OnceLock};

/// The fewest items (entries, positions, buckets) a value holds for its drop to be
/// handed over: dropping fewer takes well under a millisecond, less than waking the
/// helper would save.
pub const RECLAIM_FROM: usize = 1 << 15;

/// Work for the helper (a drop, a value to make), boxed so that one channel carries
/// every kind.
type Job = Box<dyn FnOnce() + Send>;

/// Whether values are handed over at all ([`enable`]).
static ENABLED: AtomicBool = AtomicBool::new(false);

/// The helper's channel, made with the thread on the first hand-over; `None` if the
/// thread could not be started (then values drop where they are).
static HELPER: OnceLock<Option<Sender<Job>>> = OnceLock::new();

/// Jobs handed to the helper since the process started, and jobs it has done
/// ([`progress`]).
static HANDED: AtomicU64 = AtomicU64::new(0);
static DONE: AtomicU64 = AtomicU64::new(0);

thread_local! {
    /// How many values this thread handed to the helper ([`handed_over_here`]).
    static HANDED_OVER: Cell<u64> = const { Cell::new(0) };
    /// Set on the helper thread: what it is handed there it does at once.
    static ON_HELPER: Cell<bool> = const { Cell::new(false) };
}

/// Turns the hand-over on for the whole process: from now on [`drop_later`] gives its
/// values to the helper thread. Idempotent.
pub fn enable() {
    ENABLED.store(true, Ordering::Relaxed);
}

/// Whether [`enable`] was called.
pub fn enabled() -> bool {
    ENABLED.load(Ordering::Relaxed)
}

/// Drops `value` on the helper thread if the hand-over is on (and the thread runs),
/// else here. Values handed over drop in the order they were handed over.
///
/// Off, as it is until [`enable`]: the value drops before the call returns, on the
/// caller's thread.
///
/// ```
/// use std::sync::mpsc;
///
/// /// Says which thread dropped it.
/// struct Noisy(mpsc::Sender<std::thread::ThreadId>);
/// impl Drop for Noisy {
///     fn drop(&mut self) {
///         self.0.send(std::thread::current().id()).unwrap();
///     }
/// }
///
/// let (sender, dropped) = mpsc::channel();
/// agora_proto::reclaim::drop_later(Noisy(sender));
/// assert_eq!(dropped.try_recv(), Ok(std::thread::current().id()));
/// assert_eq!(agora_proto::reclaim::handed_over_here(), 0);
/// ```
pub fn drop_later<T: Send + 'static>(value: T) {
    // A job that is not sent (the hand-over off, the helper gone) drops it here.
    hand_over(Box::new(move || drop(value)));
}

/// A value the helper thread is making ([`make_ahead`]). (The receiver sits in a mutex
/// only so that whatever holds an `Ahead` can be shared between threads: a receiver
/// cannot be, and a dict is kept in shared values.)
pub struct Ahead<T>(Mutex<mpsc::Receiver<T>>);

impl<T> Ahead<T> {
    /// The value, if the helper has made it; `None` if it has not yet (it is then
    /// dropped on the helper once made). Never waits: behind other work, the helper
    /// may be busy for a while.
    pub fn take(self) -> Option<T> {
        self.0.into_inner().ok()?.try_recv().ok()
    }
}

/// Has the helper thread make a value the caller will need later (a big index, whose
/// allocation writes every page of it), to [`Ahead::take`] then; `None` if the
/// hand-over is off (or the helper is gone): then the caller makes it itself.
///
/// Off, as it is until [`enable`]:
///
/// ```
/// assert!(agora_proto::reclaim::make_ahead(|| vec![0u8; 1 << 20]).is_none());
/// ```
pub fn make_ahead<T: Send + 'static>(make: impl FnOnce() -> T + Send + 'static) -> Option<Ahead<T>> {
    let (made, ahead) = mpsc::sync_channel(1);
    // If the caller let go of it, the value is dropped here, on the helper.
    hand_over(Box::new(move || drop(made.send(make())))).then(|| Ahead(Mutex::new(ahead)))
}

/// Sends `job` to the helper; false (and `job` dropped unrun) if the hand-over is off,
/// the helper is gone (it panicked), or the caller is the helper itself (a big dict
/// inside a big value it is dropping): queueing it again would only count it twice.
fn hand_over(job: Job) -> bool {
    if !enabled() || ON_HELPER.with(Cell::get) {
        return false;
    }
    let Some(helper) = HELPER.get_or_init(start) else { return false };
    // Counted before it is sent, so that the helper never counts a job done first.
    HANDED.fetch_add(1, Ordering::Relaxed);
    if helper.send(job).is_err() {
        HANDED.fetch_sub(1, Ordering::Relaxed);
        return false;
    }
    HANDED_OVER.with(|n| n.set(n.get() + 1));
    true
}

/// What the helper has been handed since the process started, and done.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Progress {
    /// Values handed over: to drop, or to make ahead.
    pub handed_over: u64,
    /// Of those, how many the helper has dropped or made: the rest is its backlog
    /// (memory still to be freed).
    pub done: u64,
}

/// The helper's [`Progress`] so far (the server's metrics show it). `done` never
/// exceeds `handed_over`.
pub fn progress() -> Progress {
    // Done first: a job it counts was counted as handed over before it was sent, and
    // the channel orders that before the helper received it.
    let done = DONE.load(Ordering::Acquire);
    Progress { handed_over: HANDED.load(Ordering::Relaxed), done }
}

/// How many values the calling thread has handed to the helper: what a test checks
/// after dropping something big (a count of its own thread's, so that tests running
/// at once do not see each other's).
#[doc(hidden)]
pub fn handed_over_here() -> u64 {
    HANDED_OVER.with(Cell::get)
}

/// Waits until the helper has done everything handed to it so far (it works in order:
/// the sender handed over last is dropped last): for this crate's tests.
#[cfg(test)]
pub(crate) fn helper_caught_up() {
    let (sender, dropped) = mpsc::channel::<()>();
    drop_later(sender);
    let waited = dropped.recv_timeout(std::time::Duration::from_secs(30));
    assert_eq!(waited, Err(mpsc::RecvTimeoutError::Disconnected), "the helper caught up");
}

/// Starts the helper thread: it does what it receives, in order, until the process
/// ends.
fn start() -> Option<Sender<Job>> {
    let (send, receive) = mpsc::channel::<Job>();
    let helper = std::thread::Builder::new().name("agora-reclaim".into()).spawn(move || {
        ON_HELPER.with(|on| on.set(true));
        for job in receive {
            job();
            DONE.fetch_add(1, Ordering::Release);
        }
    });
    helper.ok().map(|_| send)
}

#[cfg(test)]
mod tests {
    use std::sync::mpsc::{sync_channel, Receiver, SyncSender};
    use std::time::Duration;

    use super::*;

    /// A value whose drop waits until the test lets it go on, then says which thread
    /// dropped it.
    struct Gated {
        go: Receiver<()>,
        dropped_on: SyncSender<Option<String>>,
    }

    impl Drop for Gated {
        fn drop(&mut self) {
            let _ = self.go.recv_timeout(Duration::from_secs(30));
            let _ = self.dropped_on.send(std::thread::current().name().map(str::to_owned));
        }
    }

    fn gated() -> (Gated, SyncSender<()>, Receiver<Option<String>>) {
        let (go_send, go) = sync_channel(1);
        let (dropped_on, dropped) = sync_channel(1);
        (Gated { go, dropped_on }, go_send, dropped)
    }

    #[test]
    fn handed_over_values_drop_on_the_helper_after_the_caller_went_on() {
        enable();
        let (value, go, dropped) = gated();
        // Returns while the drop still waits for `go`: the caller did not wait for it.
        drop_later(value);
        go.send(()).unwrap();
        let thread = dropped.recv_timeout(Duration::from_secs(30)).expect("the value was dropped");
        assert_eq!(thread.as_deref(), Some("agora-reclaim"));
    }

    #[test]
    fn values_made_ahead_are_made_on_the_helper_and_taken_once_made() {
        enable();
        let (value, go, dropped) = gated();
        // The helper is held up dropping `value`: what is asked now is not made yet.
        drop_later(value);
        let early = make_ahead(|| 1).expect("the hand-over is on");
        assert_eq!(early.take(), None, "not made yet");
        let made = make_ahead(|| std::thread::current().name().map(str::to_owned)).expect("on");
        go.send(()).unwrap();
        dropped.recv_timeout(Duration::from_secs(30)).expect("the helper went on");
        // Then it made `made` (in order): wait until it has done what came after.
        let (sender, done) = std::sync::mpsc::channel::<()>();
        drop_later(sender);
        let _ = done.recv_timeout(Duration::from_secs(30));
        assert_eq!(made.take(), Some(Some("agora-reclaim".to_owned())));
    }

    /// A value handed over while the helper drops another (a big dict inside a big
    /// value) drops there and then, not queued behind everything else.
    #[test]
    fn what_the_helper_hands_over_itself_drops_at_once() {
        enable();
        /// Hands an inner value over as it drops, and says whether that one had
        /// dropped by the time the hand-over returned.
        struct Outer(SyncSender<bool>);
        impl Drop for Outer {
            fn drop(&mut self) {
                let (inner, go, dropped) = gated();
                go.send(()).unwrap();
                drop_later(inner);
                let _ = self.0.send(dropped.try_recv().is_ok());
            }
        }
        let (answer, answered) = sync_channel(1);
        drop_later(Outer(answer));
        assert_eq!(answered.recv_timeout(Duration::from_secs(30)), Ok(true), "dropped before the drop went on");
    }

    #[test]
    fn values_handed_over_drop_in_order() {
        enable();
        let (first, go_first, first_dropped) = gated();
        let (second, go_second, second_dropped) = gated();
        drop_later(first);
        drop_later(second);
        go_second.send(()).unwrap();
        // The second waits behind the first, which still waits for its go.
        assert!(second_dropped.recv_timeout(Duration::from_millis(200)).is_err());
        go_first.send(()).unwrap();
        first_dropped.recv_timeout(Duration::from_secs(30)).expect("the first was dropped");
        second_dropped.recv_timeout(Duration::from_secs(30)).expect("the second was dropped");
    }
}
