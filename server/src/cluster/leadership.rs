//! Leadership: what the state machine and the serving side of one node share.
//!
//! A node serves clients only while it leads, during a *stint* (one leadership, with a
//! random id). During a stint, connections apply commands to the engine at once, in
//! the journal's order, as a single server does; the replicator proposes the
//! journal's records to the cluster, each proposal tagged with the stint and the last
//! record's LSN. An answer waits until the record it depends on is **settled**:
//! committed by the cluster while this stint lasted. When an entry of the running stint
//! comes back through the state machine, its commands are already in the engine, so
//! they are not applied twice; the LSN it carries becomes committed.
//!
//! When the stint ends (another node leads, or an entry of another leader reaches the
//! state machine), the journal is closed, so nothing applies any more but the
//! committed log, and the engine is marked *dirty*: it may hold changes the cluster
//! never committed. The state machine rebuilds it from its snapshot and the committed
//! log before it applies anything else. Records of an ended stint that were never
//! committed never settle, so no answer that depends on them goes out.
//!
//! A stint begins in two steps: the journal opens (so the new leader can take over the
//! previous leader's sessions, which goes through it), then clients are admitted
//! ([`Leadership::admit_clients`]). A client let in between would find its session
//! not yet detached and could not resume it.
//!
//! This module owns those facts; it never applies a command.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use agora_proto::{ErrorCode, WireError};
use tokio::sync::watch;

use crate::engine::{Journal, Lsn};

/// The error everything gets on a node that does not lead.
pub fn not_leading() -> WireError {
    WireError::new(
        ErrorCode::Unavailable,
        "this cluster node does not lead its cluster and cannot pass the connection on to a leader (an election \
         is under way, the cluster is not formed yet or has no majority: see agora cluster status): retry, \
         through another node",
    )
}

/// Which LSNs are settled: those up to `before` (committed by earlier stints), and
/// those of the running stint from `first` up to `upto`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Settled {
    /// The last LSN committed before the running stint.
    pub before: Lsn,
    /// The running stint's first LSN (0: no stint).
    pub first: Lsn,
    /// The last LSN of the running stint that the cluster committed.
    pub upto: Lsn,
}

impl Settled {
    /// True if an answer that depends on `lsn` may go out.
    pub fn covers(&self, lsn: Lsn) -> bool {
        lsn == 0 || lsn <= self.before || (self.first != 0 && lsn >= self.first && lsn <= self.upto)
    }
}

/// The leadership facts of one node (see the module docs).
#[derive(Debug)]
pub struct Leadership {
    journal: Arc<Journal>,
    /// The running stint's id (0: none).
    stint: AtomicU64,
    /// Clients are served: the running stint took over the previous one's sessions.
    admitting: AtomicBool,
    /// The engine may hold changes the cluster did not commit.
    dirty: AtomicBool,
    settled: watch::Sender<Settled>,
    /// Serialises the starts and ends of stints.
    turns: Mutex<()>,
    /// Bumped when a stint ends: connections of the old stint close.
    generation: watch::Sender<u64>,
}

impl Leadership {
    /// A node that does not lead yet; `journal` is the engine's, and is closed here.
    pub fn new(journal: Arc<Journal>) -> Arc<Leadership> {
        journal.close(not_leading());
        Arc::new(Leadership {
            journal,
            stint: AtomicU64::new(0),
            admitting: AtomicBool::new(false),
            dirty: AtomicBool::new(false),
            settled: watch::channel(Settled::default()).0,
            turns: Mutex::new(()),
            generation: watch::channel(0).0,
        })
    }

    fn turns(&self) -> MutexGuard<'_, ()> {
        self.turns.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The journal.
    pub fn journal(&self) -> &Arc<Journal> {
        &self.journal
    }

    /// The running stint's id, 0 if the node does not lead.
    pub fn stint(&self) -> u64 {
        self.stint.load(Ordering::Acquire)
    }

    /// True while the node leads and serves.
    pub fn leading(&self) -> bool {
        self.stint() != 0
    }

    /// Whether clients are served here: a stint runs and admits them (see the module
    /// docs).
    pub fn admits_clients(&self) -> bool {
        self.admitting.load(Ordering::Acquire)
    }

    /// Lets clients in once stint `stint` has taken over the previous leader's
    /// sessions; nothing if that stint has ended meanwhile.
    pub fn admit_clients(&self, stint: u64) {
        let _turn = self.turns();
        if stint != 0 && self.stint() == stint {
            self.admitting.store(true, Ordering::Release);
        }
    }

    /// Starts a stint: the journal opens, and records from now on settle as the
    /// cluster commits them; clients wait for [`Leadership::admit_clients`]. Returns
    /// its id.
    pub fn begin(&self) -> u64 {
        let _turn = self.turns();
        let mut id = rand::random::<u64>();
        while id == 0 {
            id = rand::random();
        }
        let first = self.journal.appended() + 1;
        self.settled.send_modify(|s| {
            s.before = s.before.max(s.upto);
            s.first = first;
            s.upto = first - 1;
        });
        self.dirty.store(true, Ordering::Release);
        self.stint.store(id, Ordering::Release);
        self.journal.reopen();
        id
    }

    /// Ends the running stint, if any (see the module docs). Idempotent.
    pub fn end(&self, why: &str) {
        let _turn = self.turns();
        let stint = self.stint.swap(0, Ordering::AcqRel);
        if stint == 0 {
            return;
        }
        self.admitting.store(false, Ordering::Release);
        let dropped = self.journal.close(not_leading());
        self.settled.send_modify(|s| {
            s.before = s.before.max(s.upto);
            s.first = 0;
            s.upto = 0;
        });
        self.generation.send_modify(|g| *g += 1);
        tracing::warn!(why, dropped_bytes = dropped, "this node stopped leading the cluster; its clients reconnect");
    }

    /// The cluster committed the running stint's records up to `lsn`.
    pub fn committed(&self, stint: u64, lsn: Lsn) {
        if stint != 0 && self.stint() == stint {
            self.settled.send_if_modified(|s| {
                if s.first != 0 && lsn > s.upto {
                    s.upto = lsn;
                    true
                } else {
                    false
                }
            });
        }
    }

    /// True if an answer depending on `lsn` may go out now.
    pub fn is_settled(&self, lsn: Lsn) -> bool {
        self.settled.borrow().covers(lsn)
    }

    /// Returns once an answer depending on `lsn` may go out (never, if the stint that
    /// applied it ended before the cluster committed it).
    pub async fn settle(&self, lsn: Lsn) {
        let mut settled = self.settled.subscribe();
        if settled.wait_for(|s| s.covers(lsn)).await.is_err() {
            std::future::pending::<()>().await;
        }
    }

    /// What the settled LSNs are now.
    pub fn settled(&self) -> Settled {
        *self.settled.borrow()
    }

    /// True if the engine must be rebuilt from the committed log before anything else
    /// is applied to it, and no stint runs.
    pub fn needs_rebuild(&self) -> bool {
        !self.leading() && self.dirty.load(Ordering::Acquire)
    }

    /// The engine was rebuilt from the committed log.
    pub fn rebuilt(&self) {
        self.dirty.store(false, Ordering::Release);
    }

    /// Bumped each time a stint ends.
    pub fn generation(&self) -> watch::Receiver<u64> {
        self.generation.subscribe()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn what_settles_across_stints() {
        let mut s = Settled::default();
        assert!(s.covers(0));
        assert!(!s.covers(1), "nothing is settled before a stint commits it");
        s = Settled { before: 0, first: 1, upto: 4 };
        assert!(s.covers(4) && !s.covers(5));
        // The stint ends having committed up to 4; 5..=7 were applied, never committed.
        s = Settled { before: 4, first: 0, upto: 0 };
        assert!(s.covers(4) && !s.covers(5) && !s.covers(7));
        // The next stint starts at 8: 5..=7 never settle, however far it commits.
        s = Settled { before: 4, first: 8, upto: 20 };
        assert!(!s.covers(5) && !s.covers(7) && s.covers(8) && s.covers(20) && !s.covers(21));
    }

    #[test]
    fn a_stint_opens_the_journal_and_its_end_closes_it_and_drops_the_uncommitted() {
        let journal = Arc::new(Journal::new(1));
        let leadership = Leadership::new(journal.clone());
        assert!(journal.is_closed());
        let generation = leadership.generation();
        let stint = leadership.begin();
        assert!(!journal.is_closed() && leadership.leading());
        leadership.committed(stint + 1, 3);
        assert_eq!(leadership.settled().upto, 0, "another stint's commit is ignored");
        leadership.end("test");
        assert!(journal.is_closed() && !leadership.leading() && leadership.needs_rebuild());
        assert!(generation.has_changed().unwrap());
        leadership.rebuilt();
        assert!(!leadership.needs_rebuild());
        leadership.end("again");
    }

    /// Clients come in only once the stint has taken over (a resume before that would
    /// find its session still attached), and never for a stint that ended meanwhile.
    #[test]
    fn clients_are_admitted_only_after_the_takeover_and_only_in_the_running_stint() {
        let leadership = Leadership::new(Arc::new(Journal::new(1)));
        let stint = leadership.begin();
        assert!(leadership.leading() && !leadership.admits_clients(), "between begin and the takeover");
        leadership.admit_clients(stint);
        assert!(leadership.admits_clients());
        leadership.end("deposed");
        assert!(!leadership.admits_clients());
        let next = leadership.begin();
        leadership.end("deposed before its takeover");
        leadership.admit_clients(next);
        assert!(!leadership.admits_clients(), "an ended stint admits nobody");
        let last = leadership.begin();
        leadership.admit_clients(stint);
        assert!(!leadership.admits_clients(), "an old stint's id admits nobody");
        leadership.admit_clients(last);
        assert!(leadership.admits_clients());
    }
}
