//! Threads kept between connections: one that has served its connection waits here
//! for the next, instead of ending.
//!
//! A CPython client opens a connection for each thread it calls from, and each proxy
//! it makes for the first time on a thread; a thread per connection started and ended
//! with each (the thread, its stack and its runtime) was 7 % of the server's CPU while
//! a client created proxies (bench/changes.md, round 43). CPython's manager starts a
//! thread per connection too; its floor in the benchmarks, like any thread pool, keeps
//! them.
//!
//! A thread that has nothing to serve parks: it leaves the means to hand it work here
//! and waits for it, for at most a while ([`Pool::wait`]); then it leaves, unless it
//! was taken as it gave up, in which case the work is on its way and it takes it. The
//! thread parked last is the first taken (its stack and caches are the warmest), and
//! when the pool goes, every parked thread is told at once.
//!
//! Owns: the parked threads' hands, and the rule by which a thread is taken or leaves.
//! It knows nothing of what the work is (the threads' loop is [`crate::dedicated`]'s).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, RecvTimeoutError, SyncSender};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

/// The threads parked, waiting for work of type `T`.
pub struct Pool<T> {
    parked: Mutex<Vec<Parked<T>>>,
    next_id: AtomicU64,
}

/// One parked thread: where its work goes.
struct Parked<T> {
    id: u64,
    hand: SyncSender<T>,
}

/// A parked thread, taken out of the pool to be given work. Dropped without giving it
/// any, the thread goes back to the pool as it was.
pub struct Hand<T> {
    parked: Option<Parked<T>>,
    pool: Weak<Pool<T>>,
}

/// What a parked thread waits on: its place in the pool and the end of its hand.
pub struct Waiting<T> {
    id: u64,
    work: Receiver<T>,
}

impl<T> Default for Pool<T> {
    fn default() -> Self {
        Pool { parked: Mutex::new(Vec::new()), next_id: AtomicU64::new(0) }
    }
}

impl<T> Pool<T> {
    /// Parks the calling thread: the next [`Pool::take`] may hand it work, which
    /// [`Pool::wait`] then returns.
    pub fn park(&self) -> Waiting<T> {
        // Room for one: a thread is taken out of the pool before it is handed work,
        // so it never gets two, and the giver never waits.
        let (hand, work) = sync_channel(1);
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        self.lock().push(Parked { id, hand });
        Waiting { id, work }
    }

    /// The thread parked last, out of the pool, if one is parked.
    pub fn take(self: &Arc<Self>) -> Option<Hand<T>> {
        let parked = self.lock().pop()?;
        Some(Hand { parked: Some(parked), pool: Arc::downgrade(self) })
    }

    /// Threads parked now.
    pub fn parked(&self) -> usize {
        self.lock().len()
    }

    /// Waits for the work `waiting`'s thread is handed, for at most `linger`; `None`:
    /// the thread left the pool (nobody took it in time) or the pool is gone, and the
    /// thread may end.
    pub fn wait(pool: &Weak<Pool<T>>, waiting: Waiting<T>, linger: Duration) -> Option<T> {
        match waiting.work.recv_timeout(linger) {
            Ok(work) => Some(work),
            // The pool, and the hand with it, is gone.
            Err(RecvTimeoutError::Disconnected) => None,
            Err(RecvTimeoutError::Timeout) => {
                let left = pool.upgrade().is_none_or(|pool| pool.leave(waiting.id));
                // Not left: it was taken as it gave up, and its work is on its way (or
                // its hand was dropped, which ends the wait too).
                if left {
                    None
                } else {
                    waiting.work.recv().ok()
                }
            }
        }
    }

    /// Takes the thread `id` out of the pool; false if it was taken already.
    fn leave(&self, id: u64) -> bool {
        let mut parked = self.lock();
        let Some(at) = parked.iter().position(|p| p.id == id) else { return false };
        parked.remove(at);
        true
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Parked<T>>> {
        // A panic elsewhere never leaves the list half changed: every change is one push,
        // pop or remove.
        self.parked.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl<T> Hand<T> {
    /// Gives the thread `work`; back, if the thread is gone (it cannot leave once taken,
    /// so only if it ended without waiting).
    pub fn give(mut self, work: T) -> Result<(), T> {
        let parked = self.parked.take().expect("a hand is given once");
        parked.hand.send(work).map_err(|unsent| unsent.0)
    }
}

impl<T> Drop for Hand<T> {
    fn drop(&mut self) {
        if let (Some(parked), Some(pool)) = (self.parked.take(), self.pool.upgrade()) {
            pool.lock().push(parked);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    const LONG: Duration = Duration::from_secs(60);

    /// A parked thread of its own, waiting for a number; sends back what it got.
    fn parked_thread(pool: &Arc<Pool<u32>>, linger: Duration) -> std::thread::JoinHandle<Option<u32>> {
        let waiting = pool.park();
        let weak = Arc::downgrade(pool);
        std::thread::spawn(move || Pool::wait(&weak, waiting, linger))
    }

    #[test]
    fn a_parked_thread_is_handed_work_and_the_last_parked_goes_first() {
        let pool = Arc::new(Pool::default());
        let first = parked_thread(&pool, LONG);
        let last = parked_thread(&pool, LONG);
        assert_eq!(pool.parked(), 2);
        pool.take().expect("two are parked").give(2).unwrap();
        assert_eq!(last.join().unwrap(), Some(2), "the thread parked last is taken first");
        pool.take().expect("one is parked").give(1).unwrap();
        assert_eq!(first.join().unwrap(), Some(1));
        assert!(pool.take().is_none(), "none left");
    }

    #[test]
    fn a_hand_dropped_unused_puts_its_thread_back() {
        let pool = Arc::new(Pool::default());
        let thread = parked_thread(&pool, LONG);
        drop(pool.take().expect("parked"));
        assert_eq!(pool.parked(), 1, "back in the pool");
        pool.take().expect("parked again").give(7).unwrap();
        assert_eq!(thread.join().unwrap(), Some(7));
    }

    #[test]
    fn a_thread_nobody_takes_leaves_after_its_linger() {
        let pool = Arc::new(Pool::<u32>::default());
        let thread = parked_thread(&pool, Duration::from_millis(20));
        assert_eq!(thread.join().unwrap(), None);
        assert_eq!(pool.parked(), 0, "it left the pool");
        assert!(pool.take().is_none(), "and is never handed work");
    }

    #[test]
    fn a_thread_taken_as_its_linger_ends_still_gets_its_work() {
        let pool = Arc::new(Pool::default());
        let waiting = pool.park();
        let hand = pool.take().expect("parked");
        // The wait gives up before the work is given: it must find itself taken and wait on.
        let weak = Arc::downgrade(&pool);
        let thread = std::thread::spawn(move || Pool::wait(&weak, waiting, Duration::ZERO));
        std::thread::sleep(Duration::from_millis(20));
        hand.give(5).unwrap();
        assert_eq!(thread.join().unwrap(), Some(5), "taken work is never lost");
    }

    #[test]
    fn when_the_pool_goes_every_parked_thread_is_told_at_once() {
        let pool = Arc::new(Pool::<u32>::default());
        let threads: Vec<_> = (0..3).map(|_| parked_thread(&pool, LONG)).collect();
        let started = Instant::now();
        drop(pool);
        for thread in threads {
            assert_eq!(thread.join().unwrap(), None);
        }
        assert!(started.elapsed() < LONG / 2, "they ended without waiting out their linger");
    }

    #[test]
    fn work_for_a_thread_that_ended_comes_back() {
        let pool = Arc::new(Pool::<u32>::default());
        let waiting = pool.park();
        let hand = pool.take().expect("parked");
        drop(waiting);
        assert_eq!(hand.give(9), Err(9));
    }
}
