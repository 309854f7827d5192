//! The slot behind a session's [`Mailbox`](super::Mailbox): the mail the parking layer
//! posts for it (deliveries for its parked calls, a heartbeat check), and word that the
//! server is stopping.
//!
//! Many threads post (whoever releases what a parked call waits for, the timer); one
//! connection reads, and it looks on every turn of its loop, for every request it
//! answers, though mail is rare. So the empty case is one atomic load, and the reader's
//! waker is stored again only if it changed (a comparison): a tokio channel plus the
//! shutdown watch cost ~1,200 instructions per unpipelined request (bench/changes.md,
//! round 33). The queue itself is behind a mutex, taken only when mail is there.
//!
//! Owns: the queue, its flags and the reader's waker. What mail means, and who may
//! post, is the parking layer's.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Mutex;
use std::task::{Context, Poll};

use agora_proto::wake::Waiter;

use super::Mail;

/// Set while the queue holds mail.
const MAIL: u8 = 1;
/// Set once the server is stopping; never cleared.
const STOP: u8 = 2;

/// What a mailbox's reader finds: word that the server is stopping comes before any
/// mail still queued.
#[derive(Debug)]
pub enum Posted {
    /// The server is stopping: the connection is to finish.
    Stop,
    /// The next mail.
    Mail(Mail),
}

/// One session's mail, shared by its posters and its reader.
#[derive(Debug, Default)]
pub(super) struct Slot {
    /// [`MAIL`] and [`STOP`]: what the reader checks without taking the lock.
    flags: AtomicU8,
    queue: Mutex<Queue>,
    reader: Waiter,
}

#[derive(Debug, Default)]
struct Queue {
    mail: VecDeque<Mail>,
    /// The reader is gone: nothing more is taken.
    closed: bool,
}

impl Slot {
    fn queue(&self) -> std::sync::MutexGuard<'_, Queue> {
        self.queue.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Queues `mail` and wakes the reader; gives the mail back if the slot is closed.
    pub(super) fn post(&self, mail: Mail) -> Result<(), Mail> {
        let mut queue = self.queue();
        if queue.closed {
            return Err(mail);
        }
        queue.mail.push_back(mail);
        // Under the lock: the reader clears it under the lock when it takes the last.
        self.flags.fetch_or(MAIL, Ordering::Release);
        drop(queue);
        self.reader.wake();
        Ok(())
    }

    /// Tells the reader the server is stopping (for good).
    pub(super) fn stop(&self) {
        self.flags.fetch_or(STOP, Ordering::Release);
        self.reader.wake();
    }

    /// True if mail waits, or the server is stopping.
    pub(super) fn has_news(&self) -> bool {
        self.flags.load(Ordering::Acquire) != 0
    }

    /// The next mail, if some is queued.
    pub(super) fn take(&self) -> Option<Mail> {
        if self.flags.load(Ordering::Acquire) & MAIL == 0 {
            return None;
        }
        let mut queue = self.queue();
        let mail = queue.mail.pop_front();
        if queue.mail.is_empty() {
            self.flags.fetch_and(!MAIL, Ordering::Relaxed);
        }
        mail
    }

    /// Stop, else the next mail, else pending (woken by the next post or stop).
    pub(super) fn poll_posted(&self, cx: &mut Context<'_>) -> Poll<Posted> {
        self.poll_with(cx, |slot| match slot.flags.load(Ordering::Acquire) {
            0 => None,
            flags if flags & STOP != 0 => Some(Posted::Stop),
            _ => slot.take().map(Posted::Mail),
        })
    }

    /// The next mail, else pending (woken by the next post; a stop wakes it too, to
    /// find nothing).
    pub(super) fn poll_mail(&self, cx: &mut Context<'_>) -> Poll<Mail> {
        self.poll_with(cx, Slot::take)
    }

    /// `look`'s find, else pending until the next post or stop ([`Waiter::poll_with`]).
    fn poll_with<T>(&self, cx: &mut Context<'_>, look: impl Fn(&Slot) -> Option<T>) -> Poll<T> {
        self.reader.poll_with(cx, || look(self))
    }

    /// Closes the slot (later posts are refused) and gives back what it still held.
    pub(super) fn close(&self) -> VecDeque<Mail> {
        let mut queue = self.queue();
        queue.closed = true;
        self.flags.fetch_and(!MAIL, Ordering::Relaxed);
        std::mem::take(&mut queue.mail)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    fn silences(mail: impl IntoIterator<Item = Mail>) -> usize {
        mail.into_iter().filter(|m| matches!(m, Mail::Silence)).count()
    }

    #[test]
    fn mail_comes_out_in_order_and_stop_comes_first() {
        let slot = Slot::default();
        assert!(!slot.has_news());
        assert!(slot.take().is_none());
        slot.post(Mail::Silence).unwrap();
        slot.post(Mail::Silence).unwrap();
        assert!(slot.has_news());
        let mut cx = Context::from_waker(std::task::Waker::noop());
        assert!(matches!(slot.poll_posted(&mut cx), Poll::Ready(Posted::Mail(Mail::Silence))));
        slot.stop();
        assert!(matches!(slot.poll_posted(&mut cx), Poll::Ready(Posted::Stop)));
        // A stop stays; the mail behind it is still there for whoever reads it.
        assert!(matches!(slot.poll_posted(&mut cx), Poll::Ready(Posted::Stop)));
        assert!(matches!(slot.poll_mail(&mut cx), Poll::Ready(Mail::Silence)));
        assert!(slot.poll_mail(&mut cx).is_pending());
        assert!(slot.has_news(), "stopping is news until the end");
    }

    /// The one window a sleeping reader could miss: mail posted after its look found
    /// nothing and before its waker is registered (that post woke nobody). The look
    /// after the registration finds it.
    #[test]
    fn mail_posted_between_the_look_and_the_registration_is_found() {
        let slot = Slot::default();
        let mut cx = Context::from_waker(std::task::Waker::noop());
        let first_look = std::cell::Cell::new(true);
        let found = slot.poll_with(&mut cx, |slot| {
            if first_look.replace(false) {
                slot.post(Mail::Silence).unwrap();
                return None;
            }
            slot.take()
        });
        assert!(matches!(found, Poll::Ready(Mail::Silence)));
    }

    #[test]
    fn a_closed_slot_gives_back_what_it_held_and_refuses_more() {
        let slot = Slot::default();
        slot.post(Mail::Silence).unwrap();
        slot.post(Mail::Silence).unwrap();
        assert_eq!(silences(slot.close()), 2);
        assert!(!slot.has_news());
        assert!(matches!(slot.post(Mail::Silence), Err(Mail::Silence)));
        assert!(slot.take().is_none());
    }

    /// Four threads post while the reader drains as a task that sleeps whenever the
    /// slot is empty: every item arrives exactly once, and the reader is never left
    /// asleep with mail queued (the runtime's guard would end the test).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn every_post_wakes_a_sleeping_reader_and_arrives_once() {
        const POSTERS: usize = 4;
        const EACH: usize = 20_000;
        let slot = Arc::new(Slot::default());
        let reader = {
            let slot = slot.clone();
            tokio::spawn(async move {
                let mut got = 0;
                while got < POSTERS * EACH {
                    std::future::poll_fn(|cx| slot.poll_mail(cx)).await;
                    got += 1;
                }
                got
            })
        };
        let posters: Vec<_> = (0..POSTERS)
            .map(|_| {
                let slot = slot.clone();
                std::thread::spawn(move || {
                    for i in 0..EACH {
                        slot.post(Mail::Silence).unwrap();
                        if i % 64 == 0 {
                            std::thread::yield_now();
                        }
                    }
                })
            })
            .collect();
        for poster in posters {
            poster.join().unwrap();
        }
        let got = tokio::time::timeout(std::time::Duration::from_secs(60), reader).await.expect("reader hung").unwrap();
        assert_eq!(got, POSTERS * EACH);
        assert!(!slot.has_news());
    }

    /// A stop from another thread wakes a reader asleep on an empty slot.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_stop_wakes_a_sleeping_reader() {
        let slot = Arc::new(Slot::default());
        let reader = {
            let slot = slot.clone();
            tokio::spawn(async move { std::future::poll_fn(|cx| slot.poll_posted(cx)).await })
        };
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        slot.stop();
        let posted = tokio::time::timeout(std::time::Duration::from_secs(60), reader).await.expect("reader hung");
        assert!(matches!(posted.unwrap(), Posted::Stop));
    }
}
