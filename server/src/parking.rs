//! The parking layer: connections' waiting calls, the server's one timer, and the
//! commands that time and vanished callers cause.
//!
//! The engine never waits and never asks whether a caller is still there. This layer
//! does both:
//!
//! - **Mailboxes** ([`mailbox`](mod@mailbox)). Each session has one. A [`Delivery`] the
//!   engine hands out (an item for a blocked `get`, a lock grant) is sent to its
//!   session's mailbox. If that session is gone, the delivery is given back at once
//!   with an `Abandon` command that names the call and carries the answer
//!   ([`Delivery::undelivered`]), so the object takes back exactly that. A connection
//!   that reads a delivery for a call it no longer waits for (cancelled) gives it back
//!   the same way. Shutdown reaches a native connection through its mailbox too
//!   ([`Parking::stop_connections`]).
//! - **One timer** for every deadline in the server: parked calls' timeouts
//!   (`Expire`), objects' wake-ups (`Tick`: queue leases), and sessions' heartbeats
//!   (a [`Mail::Silence`] the connection checks against what it last heard), and on
//!   a cluster leader the end of detached sessions' time to be resumed (`Lapse`). It is a
//!   sorted set and one task, in the style of mini-redis's purge task.
//! - **Teardown.** [`Parking::close`] ends a session in an order that loses nothing:
//!   stop its mail, give back what was delivered and never read, abandon its parked
//!   calls, then `EndSession` (locks, permits and leases released).
//!
//! - **Lines** ([`line`](mod@line)). In memory, a delivery is first offered to its waiting
//!   connection's armed line, whose answerer writes the reply from the delivering
//!   thread; only what it did not write whole goes by mail.
//!
//! This module owns waiting and time; it must not know about wire formats.

pub mod line;
pub mod mailbox;

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Once, RwLock};

use agora_proto::native::ObjectId;
use agora_proto::WireError;
use tokio::sync::{watch, Notify};

use agora_proto::native::Args;

use self::line::Line;
pub use self::mailbox::Posted;
use self::mailbox::Slot;
use crate::cluster::Serving;
use crate::durability::Durability;
use crate::engine::{
    Access, Answer, Command, Delivery, Effects, Engine, HandleCache, Lsn, Reclaim, Session, SessionId, Ticket, Time,
    Waiter,
};

/// The answer to a call that would wait while the server shuts down.
pub fn shutting_down() -> WireError {
    WireError::new(agora_proto::ErrorCode::ShuttingDown, "the server is shutting down")
}

/// What a connection finds in its mailbox.
#[derive(Debug)]
pub enum Mail {
    /// The answer of one of its parked calls.
    Delivery(Delivery),
    /// Its heartbeat alarm rang: end the session if nothing was heard for a whole period.
    Silence,
}

/// What the timer can ring for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Alarm {
    /// A parked call's deadline.
    Call {
        /// The call's session.
        session: SessionId,
        /// The object it waits on.
        object: ObjectId,
        /// The call.
        ticket: Ticket,
    },
    /// A wake-up an object asked for.
    Wake {
        /// The object.
        object: ObjectId,
    },
    /// A session's heartbeat check.
    Heartbeat {
        /// The session.
        session: SessionId,
    },
    /// The end of a detached session's time to be resumed (a cluster leader's).
    Lapse {
        /// The session.
        session: SessionId,
    },
}

/// A session's mailbox, held by its connection.
#[derive(Debug)]
pub struct Mailbox {
    session: SessionId,
    slot: Arc<Slot>,
    line: Arc<Line>,
    parking: Arc<Parking>,
}

/// Where the parking layer sends a session's deliveries.
struct Post {
    slot: Arc<Slot>,
    line: Arc<Line>,
}

impl Mailbox {
    /// The next mail.
    pub async fn recv(&mut self) -> Mail {
        std::future::poll_fn(|cx| self.slot.poll_mail(cx)).await
    }

    /// Word that the server is stopping, else the next mail: what a native connection
    /// waits for beside its socket.
    pub async fn next(&mut self) -> Posted {
        std::future::poll_fn(|cx| self.slot.poll_posted(cx)).await
    }

    /// The next mail, if one is there already.
    pub fn try_recv(&mut self) -> Option<Mail> {
        self.slot.take()
    }

    /// True if mail is waiting, or the server is stopping.
    pub fn has_news(&self) -> bool {
        self.slot.has_news()
    }

    /// The session's line, which a connection arms while a call waits (used only if
    /// [`Parking::answers_on_lines`]).
    pub fn line(&self) -> Arc<Line> {
        self.line.clone()
    }
}

impl Drop for Mailbox {
    fn drop(&mut self) {
        self.parking.mailboxes.write().unwrap_or_else(|e| e.into_inner()).remove(&self.session);
    }
}

/// Where a server keeps its changes, which decides what an answer waits for.
enum Keeping {
    /// In memory only: answers never wait.
    Memory,
    /// A durable log: answers wait for their records as the fsync policy says.
    Disk(Arc<Durability>),
    /// A cluster: answers wait for the cluster to commit their records.
    Cluster(Arc<Serving>),
}

/// The parking layer of one server.
pub struct Parking {
    engine: Arc<Engine>,
    /// Where changes are kept, and so what answers wait for.
    keeping: Keeping,
    mailboxes: RwLock<HashMap<SessionId, Post>>,
    /// Set when connections are told to stop ([`Parking::stop_connections`]): a
    /// mailbox opened after that is stopped from the start.
    stopping: AtomicBool,
    alarms: Mutex<BTreeSet<(Time, Alarm)>>,
    /// Wakes the timer when an alarm earlier than all others is set.
    earlier: Notify,
    /// Set when shutdown begins: nothing waits any more (see [`Parking::drain`]).
    draining: AtomicBool,
    drained: Once,
}

impl std::fmt::Debug for Parking {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Parking").finish_non_exhaustive()
    }
}

impl Parking {
    /// The parking layer for `engine`. Start its timer with [`Parking::run_timer`].
    pub fn new(engine: Arc<Engine>) -> Arc<Parking> {
        Parking::build(engine, Keeping::Memory)
    }

    /// The parking layer over a durable log's engine.
    pub fn durable(durability: Arc<Durability>) -> Arc<Parking> {
        Parking::build(durability.engine().clone(), Keeping::Disk(durability))
    }

    /// The parking layer of a cluster node serving over `engine`.
    pub fn replicated(engine: Arc<Engine>, serving: Arc<Serving>) -> Arc<Parking> {
        Parking::build(engine, Keeping::Cluster(serving))
    }

    fn build(engine: Arc<Engine>, keeping: Keeping) -> Arc<Parking> {
        Arc::new(Parking {
            engine,
            keeping,
            mailboxes: RwLock::default(),
            stopping: AtomicBool::new(false),
            alarms: Mutex::default(),
            earlier: Notify::new(),
            draining: AtomicBool::new(false),
            drained: Once::new(),
        })
    }

    /// The durable log, if the server has one.
    pub fn durability(&self) -> Option<&Arc<Durability>> {
        match &self.keeping {
            Keeping::Disk(durability) => Some(durability),
            _ => None,
        }
    }

    /// The cluster node's serving side, on a cluster node.
    pub fn serving(&self) -> Option<&Arc<Serving>> {
        match &self.keeping {
            Keeping::Cluster(serving) => Some(serving),
            _ => None,
        }
    }

    /// What an answer read now may depend on: the last record appended (0 without
    /// durability or a cluster). A connection takes it when a delivery reaches it.
    #[inline]
    pub fn appended(&self) -> Lsn {
        match &self.keeping {
            Keeping::Memory => 0,
            Keeping::Disk(durability) => durability.appended(),
            Keeping::Cluster(serving) => serving.appended(),
        }
    }

    /// True if record `lsn` is already as durable as the fsync policy promises, or
    /// committed by the cluster (always without durability or a cluster).
    #[inline]
    pub fn is_settled(&self, lsn: Lsn) -> bool {
        match &self.keeping {
            Keeping::Memory => true,
            Keeping::Disk(durability) => lsn == 0 || durability.is_settled(lsn),
            Keeping::Cluster(serving) => serving.is_settled(lsn),
        }
    }

    /// Returns once record `lsn` is as durable as the fsync policy promises, or
    /// committed by the cluster, so an answer that depends on it may go out (at once
    /// without durability or a cluster).
    #[inline]
    pub async fn settle(&self, lsn: Lsn) {
        match &self.keeping {
            Keeping::Memory => {}
            Keeping::Disk(durability) => {
                if lsn > 0 {
                    durability.settle(lsn).await;
                }
            }
            Keeping::Cluster(serving) => serving.settle(lsn).await,
        }
    }

    /// What settling `lsn` can do at once or after one yield (checking
    /// [`Parking::is_settled`] first; see
    /// [`Durability::settle_promptly`](crate::durability::Durability::settle_promptly));
    /// returns whether it is settled. A cluster's commit is not waited for here: only
    /// whether it has happened.
    #[inline]
    pub async fn settle_promptly(&self, lsn: Lsn) -> bool {
        match &self.keeping {
            Keeping::Memory => true,
            Keeping::Disk(durability) => lsn == 0 || durability.settle_promptly(lsn).await,
            Keeping::Cluster(serving) => serving.is_settled(lsn),
        }
    }

    /// Notes on `session` what the answer it is about to get depends on: its own
    /// record, or on a cluster node, for an answer computed without one (a read, a
    /// refusal), the commit of a later record (see `cluster::serving`).
    #[inline]
    fn note_logged(&self, session: &Session, effects: &Effects) {
        match (effects.lsn, &self.keeping) {
            (Some(lsn), _) => session.note_logged(lsn),
            (None, Keeping::Cluster(serving)) => session.note_logged(serving.read_dependency(self.engine.now())),
            (None, _) => {}
        }
    }

    /// The engine.
    pub fn engine(&self) -> &Arc<Engine> {
        &self.engine
    }

    /// Opens a session and its mailbox. Fails only on a replicated node that does not
    /// lead its cluster. With `resumable` (a native client), a cluster node gives the
    /// session a secret its client can resume it with after a leader change
    /// ([`Parking::resume`]); elsewhere sessions are never detached, so never resumed.
    pub fn open(self: &Arc<Self>, resumable: bool) -> Result<(Session, Mailbox), WireError> {
        let resumable = resumable && matches!(self.keeping, Keeping::Cluster(_));
        let session = self.engine.open_session(self.engine.now(), resumable)?;
        Ok(self.with_mailbox(session))
    }

    /// Takes back a session a leader change detached, with its mailbox (see
    /// [`Command::Resume`]).
    pub fn resume(self: &Arc<Self>, id: SessionId, secret: u64) -> Result<(Session, Mailbox), WireError> {
        let session = self.engine.resume_session(id, secret, self.engine.now())?;
        Ok(self.with_mailbox(session))
    }

    fn with_mailbox(self: &Arc<Self>, session: Session) -> (Session, Mailbox) {
        let slot = Arc::new(Slot::default());
        let id = session.id();
        let line = Arc::new(Line::default());
        let mut mailboxes = self.mailboxes.write().unwrap_or_else(|e| e.into_inner());
        // Under the lock `stop_connections` reads the map with: no mailbox misses it.
        if self.stopping.load(Ordering::Acquire) {
            slot.stop();
        }
        mailboxes.insert(id, Post { slot: slot.clone(), line: line.clone() });
        drop(mailboxes);
        (session, Mailbox { session: id, slot, line, parking: self.clone() })
    }

    /// Arms the end of every detached session (a new leader took over: see
    /// [`Command::Takeover`]).
    pub fn arm_lapses(&self) {
        for (session, until) in self.engine.detached_sessions() {
            self.arm(until, Alarm::Lapse { session });
        }
    }

    /// Applies a command of `session` and carries out its effects; returns its answer.
    /// A parked call's deadline is armed here.
    #[inline]
    pub fn run(&self, session: &Session, command: Command) -> Result<Answer, WireError> {
        // Only a call can park: it goes through the one place that arms deadlines.
        if let Command::Call { object, access, method, args, at, .. } = command {
            return self.call(session, None, object, access, &method, args, at);
        }
        let effects = self.engine.apply_in(session, command);
        self.note_logged(session, &effects);
        self.carry_out(effects)
    }

    /// Applies the `Call` command with these fields (see [`Engine::call`]): the hot path.
    #[inline]
    #[allow(clippy::too_many_arguments)]
    pub fn call(
        &self,
        session: &Session,
        handles: Option<&mut HandleCache>,
        object: ObjectId,
        access: Access,
        method: &str,
        args: Args,
        at: Time,
    ) -> Result<Answer, WireError> {
        let effects = self.engine.call(session, handles, object, access, method, args, at);
        self.note_logged(session, &effects);
        if let Ok(Answer::Parked(parked)) = &effects.reply {
            if self.draining.load(Ordering::Acquire) {
                // Shutting down: a call may not wait for what an ending session would
                // release.
                let ticket = parked.ticket;
                self.abandon(session, object, ticket);
                self.carry_out(effects).ok();
                return Err(shutting_down());
            }
            if let Some(deadline) = parked.deadline {
                self.arm(deadline, Alarm::Call { session: session.id(), object, ticket: parked.ticket });
            }
        }
        self.carry_out(effects)
    }

    /// Applies a command no connection waits on (the timer's, a restart's).
    pub fn run_global(&self, command: Command) -> Result<Answer, WireError> {
        let effects = self.engine.apply(command);
        self.carry_out(effects)
    }

    #[inline]
    fn carry_out(&self, effects: Effects) -> Result<Answer, WireError> {
        // Most commands hand nothing out: keep their path short.
        if !effects.wakeups.is_empty() {
            self.arm_wakeups(&effects.wakeups);
        }
        if !effects.deliveries.is_empty() {
            self.dispatch(effects.deliveries);
        }
        effects.reply
    }

    fn arm_wakeups(&self, wakeups: &[(ObjectId, Time)]) {
        for &(object, at) in wakeups {
            self.arm(at, Alarm::Wake { object });
        }
    }

    /// True if deliveries are offered to their connections' lines first: in memory,
    /// where an answer waits for no log record (see [`line`](mod@line)).
    pub fn answers_on_lines(&self) -> bool {
        matches!(self.keeping, Keeping::Memory)
    }

    /// Sends each delivery to its session's mailbox (in memory, through its line
    /// first); gives back those that cannot go.
    fn dispatch(&self, deliveries: Vec<Delivery>) {
        let on_lines = self.answers_on_lines();
        let mut pending = VecDeque::from(deliveries);
        while let Some(delivery) = pending.pop_front() {
            let unsent = {
                let mailboxes = self.mailboxes.read().unwrap_or_else(|e| e.into_inner());
                match mailboxes.get(&delivery.waiter.session) {
                    Some(post) => {
                        let unanswered = if on_lines { post.line.offer(delivery) } else { Some(delivery) };
                        match unanswered.map(|delivery| post.slot.post(Mail::Delivery(delivery))) {
                            None | Some(Ok(())) => None,
                            Some(Err(Mail::Delivery(d))) => Some(d),
                            Some(Err(Mail::Silence)) => None,
                        }
                    }
                    None => Some(delivery),
                }
            };
            if let Some(delivery) = unsent {
                let effects = self.give_back(delivery);
                self.arm_wakeups(&effects.wakeups);
                pending.extend(effects.deliveries);
            }
        }
    }

    /// Gives a delivery whose caller is gone back to its object (an `Abandon` that
    /// names the call and carries what it was handed).
    fn give_back(&self, delivery: Delivery) -> Effects {
        let Waiter { ticket, session, object } = delivery.waiter;
        let undelivered = delivery.undelivered();
        if undelivered.is_none() {
            return Effects::unchanged(Ok(Answer::Done));
        }
        tracing::debug!(session, ticket, "a delivery found its caller gone; given back");
        let at = self.engine.now();
        self.engine.apply(Command::Abandon { session, object, ticket, undelivered, at })
    }

    /// Gives back a delivery a connection read for a call it no longer waits for.
    pub fn return_delivery(&self, delivery: Delivery) {
        let effects = self.give_back(delivery);
        self.carry_out(effects).ok();
    }

    /// The caller of parked call `ticket` left (cancelled, or its connection is going).
    pub fn abandon(&self, session: &Session, object: ObjectId, ticket: Ticket) {
        let at = self.engine.now();
        let _ = self.run(session, Command::Abandon { session: session.id(), object, ticket, undelivered: None, at });
    }

    /// Ends a session without losing anything: its mail stops, what was delivered to
    /// it and never read goes back, its parked calls are abandoned, then it ends.
    pub fn close(&self, session: Session, mailbox: Mailbox, parked: impl IntoIterator<Item = (ObjectId, Ticket)>) {
        self.mailboxes.write().unwrap_or_else(|e| e.into_inner()).remove(&session.id());
        for mail in mailbox.slot.close() {
            if let Mail::Delivery(delivery) = mail {
                self.return_delivery(delivery);
            }
        }
        for (object, ticket) in parked {
            self.abandon(&session, object, ticket);
        }
        let at = self.engine.now();
        let _ = self.run(&session, Command::EndSession { session: session.id(), at });
    }

    /// Begins a shutdown: from now on no call waits, and every parked call is
    /// abandoned (its caller is told the server is shutting down), before any session
    /// ends. So nothing a session releases as it ends — a lock, a permit, an item — is
    /// handed to a waiter whose client would then hold it beside the client that never
    /// released it. Idempotent; a second caller returns once the first is done.
    pub fn drain(&self) {
        self.drained.call_once(|| {
            self.draining.store(true, Ordering::Release);
            let calls = self.engine.parked_calls();
            let count = calls.len();
            for (session, object, ticket) in calls {
                let at = self.engine.now();
                let effects = self.engine.apply(Command::Abandon { session, object, ticket, undelivered: None, at });
                self.carry_out(effects).ok();
            }
            tracing::info!(abandoned = count, "shutting down: no call waits any more");
        });
    }

    /// Tells every native connection that the server is stopping, through its mailbox
    /// ([`Mailbox::next`]), which it looks at on every turn anyway: a shutdown watch
    /// looked at there cost ~700 instructions per request. A session that starts later
    /// hears it at once. CPython connections watch [`Shared::shutdown`] instead, at the
    /// few points where they wait.
    ///
    /// [`Shared::shutdown`]: crate::server::Shared::shutdown
    pub fn stop_connections(&self) {
        self.stopping.store(true, Ordering::Release);
        for post in self.mailboxes.read().unwrap_or_else(|e| e.into_inner()).values() {
            post.slot.stop();
        }
    }

    /// Sets an alarm.
    pub fn arm(&self, at: Time, alarm: Alarm) {
        let mut alarms = self.alarms.lock().unwrap_or_else(|e| e.into_inner());
        let earliest = alarms.first().is_none_or(|&(first, _)| at < first);
        alarms.insert((at, alarm));
        drop(alarms);
        if earliest {
            self.earlier.notify_one();
        }
    }

    /// Removes every alarm (a cluster node that stopped leading: time is the new
    /// leader's).
    pub fn clear_alarms(&self) {
        self.alarms.lock().unwrap_or_else(|e| e.into_inner()).clear();
    }

    /// Removes an alarm that is no longer needed (a call answered before its deadline).
    pub fn disarm(&self, at: Time, alarm: Alarm) {
        self.alarms.lock().unwrap_or_else(|e| e.into_inner()).remove(&(at, alarm));
    }

    /// The server's one timer: rings every alarm when it is due, until shutdown.
    pub async fn run_timer(self: Arc<Self>, mut shutdown: watch::Receiver<bool>) {
        loop {
            let (due, next) = {
                let mut alarms = self.alarms.lock().unwrap_or_else(|e| e.into_inner());
                let now = self.engine.now();
                let mut due = Vec::new();
                while alarms.first().is_some_and(|&(at, _)| at <= now) {
                    due.extend(alarms.pop_first());
                }
                (due, alarms.first().map(|&(at, _)| at))
            };
            for (at, alarm) in due {
                self.ring(at, alarm);
            }
            let sleep = async {
                match next {
                    Some(at) => tokio::time::sleep_until(self.engine.clock().instant_of(at).into()).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                _ = sleep => {}
                _ = self.earlier.notified() => {}
                _ = shutdown.wait_for(|stop| *stop) => return,
            }
        }
    }

    fn ring(&self, at: Time, alarm: Alarm) {
        match alarm {
            Alarm::Call { session, object, ticket } => {
                let effects = self.engine.apply(Command::Expire { session, object, ticket, at });
                if let Err(error) = &effects.reply {
                    // The object is gone (a deleted name): the call is answered with that.
                    let waiter = Waiter { ticket, session, object };
                    let delivery = Delivery { waiter, completion: Err(error.clone()), reclaim: Reclaim::Nothing };
                    self.dispatch(vec![delivery]);
                }
                self.carry_out(effects).ok();
            }
            Alarm::Wake { object } => {
                let effects = self.engine.apply(Command::Tick { object, at });
                self.carry_out(effects).ok();
            }
            Alarm::Lapse { session } => {
                let effects = self.engine.apply(Command::Lapse { session, at });
                self.carry_out(effects).ok();
            }
            Alarm::Heartbeat { session } => {
                if let Some(post) = self.mailboxes.read().unwrap_or_else(|e| e.into_inner()).get(&session) {
                    let _ = post.slot.post(Mail::Silence);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::Engine;

    fn stopped(mailbox: &mut Mailbox) -> bool {
        let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
        let next = std::pin::pin!(mailbox.next());
        matches!(std::future::Future::poll(next, &mut cx), std::task::Poll::Ready(Posted::Stop))
    }

    /// Word of a shutdown reaches every session's mailbox: those open when it comes,
    /// and one opened after (a connection whose handshake was under way then).
    #[test]
    fn stopping_reaches_open_mailboxes_and_later_ones() {
        let parking = Parking::new(Arc::new(Engine::new(Default::default())));
        let (_first, mut open) = parking.open(false).unwrap();
        assert!(!open.has_news());
        assert!(!stopped(&mut open));
        parking.stop_connections();
        assert!(open.has_news());
        assert!(stopped(&mut open));
        let (_second, mut later) = parking.open(false).unwrap();
        assert!(stopped(&mut later));
    }
}
