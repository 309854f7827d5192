//! The engine's clock: the one source of `now` for every command.
//!
//! A [`Time`] is microseconds since the Unix epoch, read from a monotonic clock that
//! was anchored to the wall clock when the engine started: it never goes backwards
//! while the process runs, and it stays meaningful across restarts (a lease deadline
//! written to disk is still roughly right when it is read back). Objects never read a
//! clock; they get `now` from the command being applied (see [`super::Ctx::now`]).

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

/// The engine's clock: monotonic, anchored to the wall clock at start.
#[derive(Debug, Clone, Copy)]
pub struct Clock {
    origin: Instant,
    origin_time: Time,
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
        Clock { origin: Instant::now(), origin_time: Time(since_epoch.as_micros() as u64) }
    }

    /// This clock, or one that reads `t` now if this one reads earlier: time must not
    /// go back across a restart, even if the wall clock did.
    pub fn not_before(self, t: Time) -> Clock {
        if self.now() >= t {
            self
        } else {
            Clock { origin: Instant::now(), origin_time: t }
        }
    }

    /// Now, on this clock.
    pub fn now(&self) -> Time {
        Time(self.origin_time.0 + self.origin.elapsed().as_micros() as u64)
    }

    /// The monotonic instant at which this clock reads `t` (for the server's timer).
    pub fn instant_of(&self, t: Time) -> Instant {
        let offset = Duration::from_micros(t.0.saturating_sub(self.origin_time.0));
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
}
