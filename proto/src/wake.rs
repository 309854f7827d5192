//! One task's waker, for a wake-up whose news is kept in state beside it (a flag, a
//! queue): the server's mailboxes and the client's writer share it.
//!
//! The waiting side looks at the state, registers its waker, and looks again: news
//! that came between the first look and the registration woke nobody, and the second
//! look is what finds it. The news side changes the state, then wakes. No waiter list:
//! one task waits on each [`Waiter`].

use std::task::{Context, Poll};

use futures_util::task::AtomicWaker;

/// The waker of the one task waiting for news kept elsewhere.
#[derive(Debug, Default)]
pub struct Waiter(AtomicWaker);

impl Waiter {
    /// Wakes the waiting task, if one is registered; call after the news is in place.
    #[inline]
    pub fn wake(&self) {
        self.0.wake();
    }

    /// What `look` finds, else the task's waker registered and `look` tried once more
    /// (so news that came in between is not missed); pending if it finds nothing then.
    pub fn poll_with<T>(&self, cx: &mut Context<'_>, mut look: impl FnMut() -> Option<T>) -> Poll<T> {
        if let Some(found) = look() {
            return Poll::Ready(found);
        }
        self.0.register(cx.waker());
        match look() {
            Some(found) => Poll::Ready(found),
            None => Poll::Pending,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::cell::Cell;

    use super::*;

    /// The one window a sleeping task could miss: news after its first look and before
    /// its waker is registered (that wake-up found no waker). The second look finds it.
    #[test]
    fn news_between_the_look_and_the_registration_is_found() {
        let waiter = Waiter::default();
        let mut cx = Context::from_waker(std::task::Waker::noop());
        let news = Cell::new(false);
        let looks = Cell::new(0);
        let polled = waiter.poll_with(&mut cx, || {
            looks.set(looks.get() + 1);
            if looks.get() == 1 {
                news.set(true);
                waiter.wake();
                return None;
            }
            news.get().then_some(7)
        });
        assert_eq!(polled, Poll::Ready(7));
        assert_eq!(looks.get(), 2);
        // Nothing new: pending after two looks.
        news.set(false);
        assert!(waiter.poll_with(&mut cx, || news.get().then_some(7)).is_pending());
    }
}
