//! Serving clients from a cluster node: the replicator, linearizable reads, and the
//! watch over who leads.
//!
//! - **The replicator** ([`Serving::run_replicator`]) takes the journal's new records
//!   whenever an answer waits for them (or at least every millisecond) and proposes
//!   them as one entry, tagged with the running stint (see [`super::leadership`]). At
//!   most two proposals are under way at once: what arrives meanwhile goes out together
//!   in the next (group commit across the cluster). Now
//!   and then it begins an image of the engine in the same hold of the journal's lock
//!   (big objects are only captured there, and read out on a blocking thread after
//!   it), the cut the leader's next snapshot holds once that entry commits.
//! - **Reads** ([`Serving::read_dependency`]): an answer computed from the engine goes
//!   out only once a quorum has confirmed, in a round that *began after the read*,
//!   that this node still leads: then no other leader can have acknowledged a write the
//!   read missed. (A round already under way when the read ran proves nothing: its
//!   acknowledgements may have been sent before another leader was elected.) While
//!   changes are flowing, the read waits for the commit of the newest record not yet
//!   proposed, which also covers every change the read saw; when none waits, a
//!   `Barrier` record is appended (one per burst of reads). A batch that holds nothing
//!   but that barrier, with every change before it committed, is not proposed: a
//!   heartbeat round to a quorum ([`ClusterNode::read_barrier`], Raft's read-index)
//!   confirms the lead without a log write or an fsync. A read costs one round trip,
//!   shared by every read and write in flight with it.
//! - **Leadership** ([`Serving::watch_leadership`]): when this node becomes leader and
//!   has applied everything before its term, a stint begins (the server then takes
//!   over the previous leader's sessions with a `Takeover`, which detaches those its
//!   clients may resume, and arms pending wake-ups); when it
//!   stops leading, the stint ends, connections close, and the engine is rebuilt from
//!   the committed log. A leader that no majority has answered for an election
//!   timeout (cut off by a partition) ends its stint too, though Raft still calls it
//!   leader, so that its clients go to the node that leads now.
//!
//! This module owns the proposing side of the journal; it applies no command itself
//! except the `Barrier`, and knows nothing of connections.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use openraft::ServerState;
use tokio::sync::{watch, Notify};

use super::leadership::Leadership;
use super::{ClusterConfig, ClusterNode, Proposal};
use crate::custom::CustomKinds;
use crate::engine::{Command, Engine, Journal, Lsn, Time};

/// Propose at least this often while records wait, even if no answer asked.
const PROPOSE_EVERY: Duration = Duration::from_millis(1);

/// Proposals replicated at once; what arrives meanwhile waits for the next one.
const PROPOSALS_IN_FLIGHT: usize = 2;

/// One node's serving side (see the module docs).
pub struct Serving {
    node: Arc<ClusterNode>,
    leadership: Arc<Leadership>,
    engine: Arc<Engine>,
    nudge: Notify,
    /// Proposals between two snapshot cuts.
    cut_every: u64,
    /// The LSN of the last `Barrier` a read appended (see [`Serving::read_dependency`]).
    last_barrier: AtomicU64,
    /// A leader no majority has answered for this long stops serving (see
    /// [`Serving::watch_leadership`]): the longest election timeout.
    cut_off_after: Duration,
}

impl std::fmt::Debug for Serving {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Serving").field("node", &self.node).field("stint", &self.leadership.stint()).finish()
    }
}

/// What a node must do when a stint begins, beyond what this module does.
pub trait StintHooks: Send + Sync + 'static {
    /// A stint began: take over the previous leader's sessions (those with ids below
    /// `before`: sessions opened since are this stint's own), arm what objects asked to
    /// be woken for (`wakeups`).
    fn began(&self, wakeups: Vec<(agora_proto::native::ObjectId, Time)>, before: crate::engine::SessionId);
    /// The stint ended: forget the armed alarms (they belong to the leader now).
    fn ended(&self);
}

impl Serving {
    /// Starts node `config.node_id` serving over `engine` (which must be fresh: see
    /// [`super::fresh_engine`]): attaches a journal to the engine, closed until the
    /// node leads, and starts Raft.
    pub async fn start(
        config: ClusterConfig,
        engine: Arc<Engine>,
        custom: CustomKinds,
    ) -> std::io::Result<Arc<Serving>> {
        let journal = Arc::new(Journal::new(1));
        engine.attach_journal(journal.clone());
        let leadership = Leadership::new(journal);
        let cut_every = config.snapshot_after_entries.max(1);
        let cut_off_after = config.election_timeout.1;
        let node = ClusterNode::start(config, engine.clone(), custom, Some(leadership.clone())).await?;
        Ok(Arc::new(Serving {
            node,
            leadership,
            engine,
            nudge: Notify::new(),
            cut_every,
            last_barrier: AtomicU64::new(0),
            cut_off_after,
        }))
    }

    /// The Raft node.
    pub fn node(&self) -> &ClusterNode {
        &self.node
    }

    /// The leadership facts.
    pub fn leadership(&self) -> &Arc<Leadership> {
        &self.leadership
    }

    /// The LSN of the last record appended.
    pub fn appended(&self) -> Lsn {
        self.leadership.journal().appended()
    }

    /// True if an answer depending on `lsn` may go out now.
    pub fn is_settled(&self, lsn: Lsn) -> bool {
        self.leadership.is_settled(lsn)
    }

    /// Returns once an answer depending on `lsn` may go out (see
    /// [`Leadership::settle`]).
    pub async fn settle(&self, lsn: Lsn) {
        if !self.is_settled(lsn) {
            self.nudge.notify_one();
            self.leadership.settle(lsn).await;
        }
    }

    /// The record an answer computed from the engine now must wait for (see the
    /// module docs).
    pub fn read_dependency(&self, at: Time) -> Lsn {
        // Records not proposed yet are proposed after this read: their commit is a
        // round that began after it.
        if let Some(untaken) = self.leadership.journal().untaken() {
            return untaken;
        }
        // A closed journal (this node does not lead) gives no LSN: the answer must not
        // go out, and an LSN past everything never settles.
        match self.engine.apply(Command::Barrier { at }).lsn {
            Some(lsn) => {
                self.last_barrier.fetch_max(lsn, Ordering::AcqRel);
                lsn
            }
            None => u64::MAX,
        }
    }

    /// True if the records after `previous` up to `last` are one `Barrier` a read
    /// appended, and every change proposed before it (`proposed`: the stint and last
    /// LSN of the newest proposal that carried changes) is settled: a read-index round
    /// can settle it. Earlier barriers still under way need not be: their reads ran
    /// before this round begins, so it confirms them too.
    fn only_a_barrier(&self, previous: Option<Lsn>, last: Lsn, stint: u64, proposed: (u64, Lsn)) -> bool {
        previous.is_some_and(|previous| {
            last == previous + 1
                && self.last_barrier.load(Ordering::Acquire) == last
                && (proposed.0 != stint || self.is_settled(proposed.1))
        })
    }

    /// Proposes the journal's records until `shutdown` (see the module docs).
    pub async fn run_replicator(self: Arc<Self>, mut shutdown: watch::Receiver<bool>) {
        let mut since_cut = 0u64;
        let in_flight = Arc::new(tokio::sync::Semaphore::new(PROPOSALS_IN_FLIGHT));
        // The last LSN taken before (None: not known yet, or records were dropped).
        let mut previous: Option<Lsn> = None;
        // The stint and last LSN of the newest proposal that carried changes. (Another
        // stint's were committed or dropped before this one began.)
        let mut proposed: (u64, Lsn) = (0, 0);
        loop {
            tokio::select! {
                _ = self.nudge.notified() => {}
                _ = tokio::time::sleep(PROPOSE_EVERY) => {}
                _ = shutdown.wait_for(|stop| *stop) => return,
            }
            if !self.leadership.leading() {
                continue;
            }
            // While earlier proposals are under way, records pile up in the journal and
            // go out together: one entry, one replication round, one fsync for many.
            let permit = tokio::select! {
                permit = in_flight.clone().acquire_owned() => permit.expect("never closed"),
                _ = shutdown.wait_for(|stop| *stop) => return,
            };
            let want_cut = since_cut >= self.cut_every;
            let mut records = Vec::new();
            // The stint is read in the same hold of the journal's lock as the records:
            // a stint may have ended and another begun while this task waited above, and
            // the tail holds only records of the stint running now (an ending stint's
            // are dropped with the journal's close, before the next one opens it).
            let (last_lsn, (stint, image)) = self
                .leadership
                .journal()
                .take_and(&mut records, || (self.leadership.stint(), want_cut.then(|| self.engine.begin_image())));
            let before = previous.replace(last_lsn);
            if stint == 0 || (records.is_empty() && image.is_none()) {
                // No stint: what was taken was never committed, and the engine is
                // rebuilt from the committed log before this node serves again.
                if stint == 0 {
                    previous = None;
                }
                continue;
            }
            if image.is_none() && self.only_a_barrier(before, last_lsn, stint, proposed) {
                let serving = self.clone();
                tokio::spawn(async move {
                    serving.confirm_barrier(stint, last_lsn, records).await;
                    drop(permit);
                    serving.nudge.notify_one();
                });
                continue;
            }
            if let Some(image) = image {
                // Big objects are read out off the journal's lock, while changes run
                // again; the cut is offered now, before its entry can commit.
                self.node.state_machine().offer_cut(stint, last_lsn, tokio::task::spawn_blocking(|| image.finish()));
                since_cut = 0;
            }
            proposed = (stint, last_lsn);
            match self.node.raft().client_write_ff(Proposal { origin: stint, last_lsn, records }).await {
                // The commit is seen by the state machine, which settles the answers;
                // the response is awaited only so that openraft can hand it over.
                Ok(response) => {
                    let nudge = self.clone();
                    tokio::spawn(async move {
                        let _ = response.await;
                        drop(permit);
                        // Records that arrived meanwhile go out now.
                        nudge.nudge.notify_one();
                    });
                    since_cut += 1;
                }
                Err(fatal) => self.leadership.end(&format!("Raft stopped: {fatal}")),
            }
        }
    }

    /// Settles a batch that is nothing but a read's `Barrier` (record `lsn` of `stint`)
    /// by a read-index round: a quorum's answer to heartbeats sent now proves this node
    /// led after the reads that wait for it. If the round fails (a quorum did not
    /// answer in time, or a higher term was seen), the barrier is proposed as an entry
    /// instead; if this node no longer leads, that fails too and the stint ends.
    async fn confirm_barrier(&self, stint: u64, lsn: Lsn, records: Vec<u8>) {
        if self.node.read_barrier().await.is_ok() {
            self.leadership.committed(stint, lsn);
            return;
        }
        match self.node.raft().client_write_ff(Proposal { origin: stint, last_lsn: lsn, records }).await {
            Ok(response) => {
                let _ = response.await;
            }
            Err(fatal) => self.leadership.end(&format!("Raft stopped: {fatal}")),
        }
    }

    /// Begins and ends stints as this node gains and loses the lead, until `shutdown`
    /// (see the module docs).
    pub async fn watch_leadership(self: Arc<Self>, hooks: Arc<dyn StintHooks>, mut shutdown: watch::Receiver<bool>) {
        let mut metrics = self.node.raft().metrics();
        let me = self.node.id();
        let cut_off_ms = self.cut_off_after.as_millis() as u64;
        // When Raft last reported: its count of the silence is as of then.
        let mut reported_at = std::time::Instant::now();
        loop {
            let (leads, caught_up, term, unheard_ms) = {
                let m = metrics.borrow_and_update();
                let leads = m.state == ServerState::Leader && m.current_leader == Some(me);
                // A new leader serves once it applied its own term's first entry, and
                // with it everything committed before.
                let caught_up = m.last_applied.is_some_and(|applied| applied.leader_id.term == m.current_term);
                let since_report = reported_at.elapsed().as_millis() as u64;
                (leads, caught_up, m.current_term, m.millis_since_quorum_ack.map_or(0, |ms| ms + since_report))
            };
            // A leader cut off from the majority keeps believing it leads until it hears
            // of a newer term; its clients would wait for it all that time. Once no
            // majority has answered it for an election timeout, another node may lead:
            // it stops serving, so that its clients move there (and resume their sessions).
            let cut_off = leads && unheard_ms > cut_off_ms;
            if self.leadership.leading() && (!leads || cut_off) {
                let why = if leads {
                    format!("no majority has answered for {unheard_ms} ms (term {term})")
                } else {
                    format!("another node leads now (term {term})")
                };
                self.leadership.end(&why);
                hooks.ended();
            }
            if self.leadership.needs_rebuild() {
                if let Err(why) = self.node.state_machine().rebuild_if_dirty().await {
                    tracing::error!(%why, "rebuilding the engine from the committed log failed");
                }
            }
            if leads && !cut_off && caught_up && !self.leadership.leading() {
                // Whatever the previous stint left half-done is gone before this one.
                if let Err(why) = self.node.state_machine().rebuild_if_dirty().await {
                    tracing::error!(%why, "rebuilding the engine from the committed log failed; not serving");
                } else {
                    // Read while the journal is still closed: no session opens before
                    // the stint begins, and every one that opens after has a larger id.
                    let before = self.engine.counters().next_session;
                    let stint = self.leadership.begin();
                    hooks.began(self.node.state_machine().take_wakeups(), before);
                    self.leadership.admit_clients(stint);
                    tracing::info!(term, stint, "this node leads the cluster; serving clients");
                    self.nudge.notify_one();
                }
            }
            tokio::select! {
                changed = metrics.changed() => {
                    if changed.is_err() {
                        return;
                    }
                    reported_at = std::time::Instant::now();
                }
                // Silence is news too: look again even if Raft reports nothing new.
                _ = tokio::time::sleep(self.cut_off_after / 4), if self.leadership.leading() => {}
                _ = shutdown.wait_for(|stop| *stop) => return,
            }
        }
    }
}
