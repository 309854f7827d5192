//! The engine's clock: the one source of `now` for every command.
//!
//! A [`Time`] is microseconds since the Unix epoch, read from a monotonic clock that
//! was anchored to the wall clock when the engine started: it never goes backwards
//! while the process runs, and it stays meaningful across restarts (a lease deadline
//! written to disk is still roughly right when it is read back). Objects never read a
//! clock; they get `now` from the command being applied (see [`super::Ctx::now`]).

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

/// A point on the engine's clock: microseconds since the Unix epoch.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Time(pub u64);

impl Time {
    /// `secs` seconds after `self`, or `None` when that is too far to represent (a
    /// far-future timeout, such as Python's `threading.TIMEOUT_MAX`, means "never").
    pub fn after_secs(self, secs: f64) -> Option<Time> {
        Duration::try_from_secs_f64(secs).ok().and_then(|d| self.after(d))
    }

    /// `d` after `self`, or `None` when that is too far to represent.
    pub fn after(self, d: Duration) -> Option<Time> {
        u64::try_from(d.as_micros()).ok().and_then(|us| self.0.checked_add(us)).map(Time)
    }

    /// How long from `self` until `later` (zero if `later` is not later).
    pub fn until(self, later: Time) -> Duration {
        Duration::from_micros(later.0.saturating_sub(self.0))
    }
}

/// The engine's clock: monotonic, anchored to the wall clock at start, and moved
/// forward (never back) by [`Clock::not_before`].
#[derive(Debug)]
pub struct Clock {
    origin: Instant,
    origin_time: Time,
    /// Microseconds this clock reads ahead of its anchor: only grows.
    ahead: AtomicU64,
}

impl Default for Clock {
    fn default() -> Self {
        Clock::new()
    }
}

impl Clock {
    /// A clock anchored to the wall clock now.
    pub fn new() -> Clock {
        let since_epoch = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
        Clock { origin: Instant::now(), origin_time: Time(since_epoch.as_micros() as u64), ahead: AtomicU64::new(0) }
    }

    /// Moves this clock forward, if need be, so that it reads `t` or later from now on:
    /// time must not go back across a restart, or from one cluster leader to the next,
    /// even if one machine's wall clock is behind another's.
    pub fn not_before(&self, t: Time) {
        let anchored = self.anchored();
        if anchored.0 + self.ahead.load(Ordering::Relaxed) < t.0 {
            self.ahead.fetch_max(t.0 - anchored.0, Ordering::Relaxed);
        }
    }

    fn anchored(&self) -> Time {
        Time(self.origin_time.0 + self.origin.elapsed().as_micros() as u64)
    }

    /// Now, on this clock.
    pub fn now(&self) -> Time {
        Time(self.anchored().0 + self.ahead.load(Ordering::Relaxed))
    }

    /// The monotonic instant at which this clock reads `t` (for the server's timer).
    pub fn instant_of(&self, t: Time) -> Instant {
        let start = self.origin_time.0 + self.ahead.load(Ordering::Relaxed);
        let offset = Duration::from_micros(t.0.saturating_sub(start));
        self.origin.checked_add(offset).unwrap_or_else(|| self.origin + Duration::from_secs(86_400 * 365 * 30))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arithmetic() {
        let t = Time(1_000_000);
        assert_eq!(t.after_secs(1.5), Some(Time(2_500_000)));
        assert_eq!(t.after_secs(1e300), None, "far future is never");
        assert_eq!(t.until(Time(3_000_000)), Duration::from_secs(2));
        assert_eq!(Time(5).until(Time(1)), Duration::ZERO);
    }

    #[test]
    fn the_clock_never_goes_back_and_maps_to_instants() {
        let clock = Clock::new();
        let a = clock.now();
        let b = clock.now();
        assert!(b >= a);
        let later = a.after_secs(10.0).unwrap();
        let instant = clock.instant_of(later);
        assert!(instant > Instant::now());
    }

    #[test]
    fn not_before_moves_the_clock_forward_only_and_its_instants_with_it() {
        let clock = Clock::new();
        let ahead = clock.now().after_secs(3600.0).unwrap();
        clock.not_before(ahead);
        let now = clock.now();
        assert!(now >= ahead, "the clock reads at least what it was moved to");
        assert!(now.0 - ahead.0 < 60_000_000, "and not much more");
        clock.not_before(Time(1));
        assert!(clock.now() >= now, "an earlier time does not move it back");
        // A deadline one second from the moved clock's now is about a second away.
        let due = clock.instant_of(clock.now().after_secs(1.0).unwrap());
        assert!(due > Instant::now() && due < Instant::now() + Duration::from_secs(2));
    }
}
