//! When the reclaim helper is gone (a drop it ran panicked), what is handed over drops
//! where it is, and nothing is made ahead: nothing is lost or left undropped. Its own
//! process, since the helper is the process's.

use std::sync::mpsc;
use std::time::{Duration, Instant};

use agora_proto::reclaim;

/// Panics as it drops, which ends the helper thread.
struct Panics;

impl Drop for Panics {
    fn drop(&mut self) {
        panic!("a drop that panics (expected by this test)");
    }
}

/// Says which thread dropped it.
struct Noisy(mpsc::Sender<std::thread::ThreadId>);

impl Drop for Noisy {
    fn drop(&mut self) {
        let _ = self.0.send(std::thread::current().id());
    }
}

#[test]
fn with_the_helper_gone_values_drop_in_place_and_nothing_is_made_ahead() {
    reclaim::enable();
    reclaim::drop_later(Panics);
    // The helper's end is seen once a send fails: until then a value may still reach it
    // before it unwinds (and be dropped with its queue).
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (sender, dropped) = mpsc::channel();
        reclaim::drop_later(Noisy(sender));
        let by = dropped.recv_timeout(Duration::from_secs(30)).expect("every value is dropped, somewhere");
        if by == std::thread::current().id() {
            break;
        }
        assert!(Instant::now() < deadline, "the helper still takes values after its drop panicked");
        std::thread::sleep(Duration::from_millis(10));
    }
    assert!(reclaim::make_ahead(|| 1).is_none(), "with the helper gone, the caller makes its own");
}
