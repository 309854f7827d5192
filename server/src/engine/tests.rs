//! The engine through its commands: lifetimes, sessions, the same rules for both
//! dialects, hand-offs that are never lost, and record-and-replay determinism.

use agora_proto::native::{Args, Kind, ObjectId};
use agora_proto::reference::ObjectRef;
use agora_proto::{ErrorCode, Value, WireError};

use super::*;

/// A test bench: an engine with fixed counters and a clock the test moves.
struct Bench {
    engine: Engine,
    now: Time,
    /// Every command applied, in order (the log a replay reads).
    log: Vec<Command>,
    /// What each command visibly produced.
    observed: Vec<String>,
}

const START: CounterValues = CounterValues { next_id: 0x1000, next_ticket: 1, next_token: 1, next_session: 1 };

impl Bench {
    fn new() -> Bench {
        let engine = Engine::with_counters(CustomKinds::default(), START);
        Bench { engine, now: Time(1_000_000), log: Vec::new(), observed: Vec::new() }
    }

    fn apply(&mut self, command: Command) -> Effects {
        self.log.push(command.clone());
        let effects = self.engine.apply(command);
        self.observed.push(observed(&effects));
        effects
    }

    fn session(&mut self) -> SessionId {
        match self.apply(Command::OpenSession { at: self.now, secret: None }).reply {
            Ok(Answer::Session(id)) => id,
            other => panic!("{other:?}"),
        }
    }

    fn open(
        &mut self,
        session: SessionId,
        kind: Kind,
        name: Option<&str>,
        args: Vec<Value>,
        keep: Keep,
    ) -> Result<ObjectId, WireError> {
        let command = Command::Open {
            session,
            kind,
            name: name.map(str::to_owned),
            args: Args::positional(args),
            keep,
            at: self.now,
        };
        match self.apply(command).reply? {
            Answer::Opened { object, .. } => Ok(object),
            other => panic!("{other:?}"),
        }
    }

    fn call_with(
        &mut self,
        session: SessionId,
        object: ObjectId,
        access: Access,
        method: &str,
        args: Vec<Value>,
    ) -> Effects {
        let command = Command::Call {
            session,
            object,
            access,
            method: method.into(),
            args: Args::positional(args),
            at: self.now,
        };
        self.apply(command)
    }

    fn call(
        &mut self,
        session: SessionId,
        object: ObjectId,
        method: &str,
        args: Vec<Value>,
    ) -> Result<Answer, WireError> {
        self.call_with(session, object, Access::Handle, method, args).reply
    }

    fn value(&mut self, session: SessionId, object: ObjectId, method: &str, args: Vec<Value>) -> Value {
        match self.call(session, object, method, args) {
            Ok(Answer::Value(v)) => v,
            other => panic!("{method}: {other:?}"),
        }
    }

    fn end(&mut self, session: SessionId) -> Effects {
        self.apply(Command::EndSession { session, at: self.now })
    }

    fn exists(&self, object: ObjectId) -> bool {
        self.engine.kind_of(object).is_ok()
    }
}

/// What a command visibly produced, for comparing a run with its replay.
fn observed(effects: &Effects) -> String {
    format!("{:?} {:?} {:?} {}", effects.reply, effects.deliveries, effects.wakeups, effects.mutated)
}

fn reference(id: ObjectId, typeid: &str) -> Value {
    ObjectRef::new(id, typeid).to_value()
}

#[test]
fn ids_are_never_reused() {
    let mut b = Bench::new();
    let s = b.session();
    let a = b.open(s, Kind::List, None, vec![], Keep::Handle).unwrap();
    b.apply(Command::Release { session: s, object: a, at: b.now }).reply.unwrap();
    assert!(!b.exists(a), "anonymous object freed at zero references");
    let c = b.open(s, Kind::List, None, vec![], Keep::Handle).unwrap();
    assert!(c > a);
}

#[test]
fn named_get_or_create_and_wrong_kind() {
    let mut b = Bench::new();
    let s = b.session();
    let first = b.apply(Command::Open {
        session: s,
        kind: Kind::Dict,
        name: Some("d".into()),
        args: Args::default(),
        keep: Keep::Handle,
        at: b.now,
    });
    let Ok(Answer::Opened { object, created: true, .. }) = first.reply else { panic!("{:?}", first.reply) };
    let again = b.apply(Command::Open {
        session: s,
        kind: Kind::Dict,
        name: Some("d".into()),
        args: Args::default(),
        keep: Keep::Handle,
        at: b.now,
    });
    assert_eq!(again.reply.unwrap(), Answer::Opened { object, kind: Kind::Dict, created: false });
    let err = b.open(s, Kind::List, Some("d"), vec![], Keep::Handle).unwrap_err();
    assert_eq!((err.code, err.message.as_str()), (ErrorCode::WrongKind, "'d' is a dict, not a list"));
}

#[test]
fn named_objects_outlive_their_sessions_until_deleted() {
    let mut b = Bench::new();
    let s = b.session();
    let l = b.open(s, Kind::List, Some("l"), vec![], Keep::Handle).unwrap();
    let t = b.session();
    b.apply(Command::Attach { session: t, object: l, at: b.now }).reply.unwrap();
    b.end(s);
    assert!(b.exists(l));
    b.apply(Command::Delete { name: "l".into(), at: b.now }).reply.unwrap();
    let err = b.call(t, l, "__len__", vec![]).unwrap_err();
    assert_eq!(err.code, ErrorCode::NoSuchObject, "old handles fail");
    let err = b.apply(Command::Delete { name: "l".into(), at: b.now }).reply.unwrap_err();
    assert_eq!(err.code, ErrorCode::NoSuchName);
}

#[test]
fn ending_a_session_frees_its_anonymous_objects_only() {
    let mut b = Bench::new();
    let a = b.session();
    let anon = b.open(a, Kind::List, None, vec![], Keep::Handle).unwrap();
    b.open(a, Kind::Dict, Some("kept"), vec![], Keep::Handle).unwrap();
    let c = b.session();
    b.apply(Command::Attach { session: c, object: anon, at: b.now }).reply.unwrap();
    b.end(a);
    assert!(b.exists(anon), "c still holds it");
    b.end(c);
    assert!(!b.exists(anon), "freed with its last holder");
    assert_eq!(b.engine.named().len(), 1, "named objects outlive sessions");
    let err = b.call(c, anon, "__len__", vec![]).unwrap_err();
    assert_eq!(err.code, ErrorCode::SessionExpired, "an ended session takes no more commands");
}

#[test]
fn handles_count_opens_and_releases() {
    let mut b = Bench::new();
    let s = b.session();
    let object = b.open(s, Kind::List, None, vec![], Keep::Handle).unwrap();
    b.apply(Command::Attach { session: s, object, at: b.now }).reply.unwrap();
    b.apply(Command::Release { session: s, object, at: b.now }).reply.unwrap();
    assert_eq!(b.value(s, object, "__len__", vec![]), Value::Int(0), "one handle left");
    b.apply(Command::Release { session: s, object, at: b.now }).reply.unwrap();
    assert_eq!(b.call(s, object, "__len__", vec![]).unwrap_err().code, ErrorCode::NoSuchObject);
    assert!(!b.exists(object));
    let err = b.apply(Command::Release { session: s, object, at: b.now }).reply.unwrap_err();
    assert_eq!(err.code, ErrorCode::NoSuchObject);
}

#[test]
fn unknown_methods_and_objects_are_precise() {
    let mut b = Bench::new();
    let s = b.session();
    let l = b.open(s, Kind::List, None, vec![], Keep::Handle).unwrap();
    let err = b.call(s, l, "frobnicate", vec![]).unwrap_err();
    assert_eq!((err.code, err.message.as_str()), (ErrorCode::NoSuchMethod, "'list' object has no method 'frobnicate'"));
    let err = b.call_with(s, 0xdead, Access::Id, "__len__", vec![]).reply.unwrap_err();
    assert_eq!(err.code, ErrorCode::NoSuchObject);
    let err = b.call(s, 0xdead, "__len__", vec![]).unwrap_err();
    assert!(err.message.contains("holds no handle"), "{}", err.message);
}

#[test]
fn read_only_methods_are_declared_so() {
    let mut b = Bench::new();
    let s = b.session();
    let d = b.open(s, Kind::Dict, None, vec![], Keep::Handle).unwrap();
    assert!(b.call_with(s, d, Access::Handle, "__setitem__", vec![Value::Int(1), Value::Int(2)],).mutated);
    assert!(!b.call_with(s, d, Access::Handle, "__getitem__", vec![Value::Int(1)]).mutated);
    assert!(!b.call_with(s, d, Access::Handle, "nope", vec![]).mutated, "a failed lookup changes nothing");
}

thread_local! {
    /// How many calls [`counting_offload`] ran on this thread (each test runs on its own).
    static OFFLOADED: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
}

/// An offload that counts the calls handed to it, then runs them.
fn counting_offload(call: &mut dyn FnMut()) {
    OFFLOADED.with(|n| n.set(n.get() + 1));
    call()
}

/// On a big object only calls that walk it go through the offload; a lookup, a put or a
/// get runs inline at any size (handing the thread over costs more than the call).
#[test]
fn only_calls_that_scan_a_big_object_are_offloaded() {
    let mut b = Bench::new();
    b.engine.set_offload(counting_offload);
    let s = b.session();
    let items = HEAVY_CALL_ITEMS as i64;
    let d = b.open(s, Kind::Dict, None, vec![], Keep::Handle).unwrap();
    let pairs: Vec<Value> = (0..items).map(|i| Value::Tuple(vec![Value::Int(i), Value::Int(i)])).collect();
    b.value(s, d, "update", vec![Value::List(pairs)]);
    let q = b.open(s, Kind::Queue, None, vec![], Keep::Handle).unwrap();
    for i in 0..items {
        b.value(s, q, "put_nowait", vec![Value::Int(i)]);
    }
    let l = b.open(s, Kind::List, None, vec![Value::List((0..items).map(Value::Int).collect())], Keep::Handle).unwrap();
    let offloaded = || OFFLOADED.with(|n| n.get());
    let before = offloaded();

    assert_eq!(b.value(s, d, "__getitem__", vec![Value::Int(7)]), Value::Int(7));
    b.value(s, d, "__setitem__", vec![Value::Int(7), Value::Int(8)]);
    assert_eq!(b.value(s, d, "__len__", vec![]), Value::Int(items));
    b.value(s, q, "put_nowait", vec![Value::Int(-1)]);
    assert_eq!(b.value(s, q, "get_nowait", vec![]), Value::Int(0));
    b.value(s, l, "append", vec![Value::Int(-1)]);
    assert_eq!(b.value(s, l, "__getitem__", vec![Value::Int(3)]), Value::Int(3));
    assert_eq!(offloaded(), before, "constant-time calls on big objects ran through the offload");

    b.value(s, d, "keys", vec![]);
    assert_eq!(b.value(s, l, "count", vec![Value::Int(5)]), Value::Int(1));
    b.value(s, l, "sort", vec![]);
    let everything = agora_proto::slice::Slice::default().to_value();
    b.value(s, l, "__getitem__", vec![everything]);
    assert_eq!(offloaded(), before + 4, "each call that walks a big object runs through the offload");

    // A small object never does, whatever the call.
    let small =
        b.open(s, Kind::List, None, vec![Value::List(vec![Value::Int(2), Value::Int(1)])], Keep::Handle).unwrap();
    b.value(s, small, "sort", vec![]);
    assert_eq!(offloaded(), before + 4);
}

/// A big object's state is freed on `reclaim`'s helper once the object goes (its name
/// deleted, or its last reference given back by its session's end), as are a big
/// list's items when it is cleared; a small object is freed where it goes.
#[test]
fn big_objects_that_go_are_freed_by_the_helper() {
    use agora_proto::reclaim;
    reclaim::enable();
    let handed = reclaim::handed_over_here;
    let mut b = Bench::new();
    let s = b.session();
    let items = reclaim::RECLAIM_FROM as i64;
    let big = || Value::List((0..items).map(Value::Int).collect());
    let list = b.open(s, Kind::List, Some("big"), vec![big()], Keep::Handle).unwrap();
    let queue = b.open(s, Kind::Queue, None, vec![], Keep::Handle).unwrap();
    for i in 0..items {
        b.value(s, queue, "put_nowait", vec![Value::Int(i)]);
    }
    let dict = b.open(s, Kind::Dict, Some("small"), vec![], Keep::Handle).unwrap();
    b.value(s, dict, "__setitem__", vec![Value::Int(1), big()]);
    let start = handed();

    b.apply(Command::Delete { name: "small".into(), at: b.now }).reply.unwrap();
    assert_eq!(handed(), start, "a dict of one item (however big the item) is freed here");
    b.value(s, list, "clear", vec![]);
    assert_eq!(handed(), start + 1, "a big list's cleared items");
    b.value(s, list, "extend", vec![big()]);
    b.apply(Command::Delete { name: "big".into(), at: b.now }).reply.unwrap();
    b.end(s);
    assert!(!b.exists(list) && !b.exists(queue));
    assert_eq!(handed(), start + 3, "the deleted list's state, then the queue its session's end freed");
}

/// A container keeps what is stored in it alive, whichever dialect stored it.
#[test]
fn a_native_reference_stored_in_a_dict_pins_its_object() {
    for access in [Access::Handle, Access::Id] {
        let mut b = Bench::new();
        let s = b.session();
        let dict = b.open(s, Kind::Dict, Some("outer"), vec![], Keep::Handle).unwrap();
        let inner = b.open(s, Kind::List, None, vec![], Keep::Handle).unwrap();
        b.call_with(s, dict, access, "__setitem__", vec![Value::Str("k".into()), reference(inner, "list")])
            .reply
            .unwrap();
        b.apply(Command::Release { session: s, object: inner, at: b.now }).reply.unwrap();
        assert!(b.exists(inner), "{access:?}: the dict keeps the list alive");
        b.end(s);
        assert!(b.exists(inner), "{access:?}: as long as the dict lives");
        b.apply(Command::Delete { name: "outer".into(), at: b.now }).reply.unwrap();
        assert!(!b.exists(inner), "{access:?}: freed with the dict");
    }
}

#[test]
fn a_condition_pins_its_lock_and_refuses_what_is_not_one() {
    let mut b = Bench::new();
    let s = b.session();
    let lock = b.open(s, Kind::Lock, None, vec![], Keep::Handle).unwrap();
    let cond = b.open(s, Kind::Condition, None, vec![reference(lock, "Lock")], Keep::Handle).unwrap();
    b.apply(Command::Release { session: s, object: lock, at: b.now }).reply.unwrap();
    assert!(b.exists(lock), "the condition keeps its lock alive");
    assert_eq!(b.value(s, cond, "acquire", vec![]), Value::Bool(true));
    assert_eq!(b.value(s, cond, "notify", vec![]), Value::None);
    assert_eq!(b.value(s, cond, "release", vec![]), Value::None);
    b.apply(Command::Release { session: s, object: cond, at: b.now }).reply.unwrap();
    assert!(!b.exists(lock), "freed with the condition");

    let dict = b.open(s, Kind::Dict, None, vec![], Keep::Handle).unwrap();
    let err = b.open(s, Kind::Condition, None, vec![reference(dict, "dict")], Keep::Handle).unwrap_err();
    assert_eq!(err.message, "agora's Condition works with a Lock or an RLock, not a dict");
}

#[test]
fn a_dead_letter_moves_to_its_queue_in_the_same_command_and_keeps_what_it_refers_to() {
    let mut b = Bench::new();
    let s = b.session();
    let args = vec![Value::Int(0), Value::Int(1), Value::Str("dead".into())];
    let q = b.open(s, Kind::Queue, Some("work"), args, Keep::Handle).unwrap();
    let inner = b.open(s, Kind::List, None, vec![], Keep::Handle).unwrap();
    b.value(s, q, "put", vec![reference(inner, "list")]);
    b.apply(Command::Release { session: s, object: inner, at: b.now }).reply.unwrap();
    assert!(b.exists(inner), "the queue keeps it alive");
    let getter = b.session();
    b.apply(Command::Attach { session: getter, object: q, at: b.now }).reply.unwrap();
    let pair = b.value(getter, q, "get_leased", vec![]);
    assert!(b.engine.snapshot_named("dead").is_err(), "no dead letter queue until the first move");
    let Value::Tuple(pair) = pair else { panic!("{pair:?}") };
    // The one delivery allowed was made: its session's end moves the item.
    b.end(getter);
    assert_eq!(b.engine.snapshot_named("work").unwrap(), Value::List(vec![]));
    assert_eq!(b.engine.snapshot_named("dead").unwrap(), Value::List(vec![pair[1].clone()]));
    let dead = b.open(s, Kind::Queue, Some("dead"), vec![], Keep::Handle).unwrap();
    b.apply(Command::Delete { name: "work".into(), at: b.now }).reply.unwrap();
    b.apply(Command::Release { session: s, object: q, at: b.now }).reply.unwrap();
    assert!(b.exists(inner), "the dead letter queue keeps it alive now");
    assert_eq!(b.value(s, dead, "get", vec![]), pair[1]);
    // A dead letter name taken by another kind: the item stays in its own queue.
    b.open(s, Kind::Dict, Some("taken"), vec![], Keep::Handle).unwrap();
    let args = vec![Value::Int(0), Value::Int(1), Value::Str("taken".into())];
    let q2 = b.open(s, Kind::Queue, Some("work2"), args, Keep::Handle).unwrap();
    b.value(s, q2, "put", vec![Value::Int(9)]);
    let Value::Tuple(pair) = b.value(s, q2, "get_leased", vec![]) else { panic!() };
    b.value(s, q2, "nack", vec![pair[0].clone()]);
    assert_eq!(b.engine.snapshot_named("work2").unwrap(), Value::List(vec![Value::Int(9)]));
    assert_eq!(b.value(s, q2, "qsize", vec![]), Value::Int(1));
}

#[test]
fn holders_join_when_each_parked_call_parked() {
    let mut b = Bench::new();
    let (a, w) = (b.session(), b.session());
    let lock = b.open(a, Kind::Lock, Some("L"), vec![], Keep::Handle).unwrap();
    b.apply(Command::Attach { session: w, object: lock, at: b.now }).reply.unwrap();
    let t0 = b.now;
    let token = b.value(a, lock, "acquire_fenced", vec![]).as_index().unwrap() as u64;
    b.now = t0.after_secs(2.0).unwrap();
    assert!(matches!(b.call(w, lock, "acquire", vec![]), Ok(Answer::Parked(_))));
    let view = b.engine.holders_named("L").unwrap();
    assert_eq!(
        (view.id, view.kind.clone(), view.name.as_deref(), view.tracks_holders),
        (lock, Kind::Lock, Some("L"), true)
    );
    assert_eq!((view.held[0].session, view.held[0].since, view.held[0].token), (a, t0, Some(token)));
    assert_eq!((view.waiting[0].session, view.waiting[0].since), (w, Some(b.now)));
    assert_eq!(view.oldest_hold_age(b.now), Some(std::time::Duration::from_secs(2)));
    // A Barrier does not describe its waiters: its parked calls stand in.
    let barrier = b.open(a, Kind::Barrier, Some("B"), vec![Value::Int(3)], Keep::Handle).unwrap();
    assert!(matches!(b.call(a, barrier, "wait", vec![]), Ok(Answer::Parked(_))));
    let view = b.engine.holders(barrier).unwrap();
    assert_eq!(view.waiting.iter().map(|c| (c.session, c.what.as_str())).collect::<Vec<_>>(), [(a, "call")]);
    let named: Vec<_> = b.engine.named_holders().into_iter().filter_map(|v| v.name).collect();
    assert_eq!(named, ["B", "L"], "held kinds, and any object with a waiter");
    assert_eq!(b.engine.holders_named("nope").unwrap_err().code, ErrorCode::NoSuchName);
}

#[test]
fn a_session_end_hands_its_lock_to_the_next_waiter() {
    let mut b = Bench::new();
    let (a, c) = (b.session(), b.session());
    let lock = b.open(a, Kind::Lock, Some("l"), vec![], Keep::Handle).unwrap();
    b.apply(Command::Attach { session: c, object: lock, at: b.now }).reply.unwrap();
    let token = b.value(a, lock, "acquire_fenced", vec![]).as_index().unwrap();
    let Ok(Answer::Parked(parked)) = b.call(c, lock, "acquire_fenced", vec![]) else { panic!("must wait") };
    let effects = b.end(a);
    assert_eq!(effects.deliveries.len(), 1);
    let delivery = &effects.deliveries[0];
    assert_eq!(delivery.waiter, Waiter { ticket: parked.ticket, session: c, object: lock });
    let next = delivery.completion.clone().unwrap().as_index().unwrap();
    assert!(next > token, "fencing tokens only grow");
}

#[test]
fn a_late_abandon_after_thousands_of_none_hand_offs_loses_nothing() {
    // The queue used to tell a `None` item from a put's `None` completion with a
    // bounded memory of 4,096 hand-offs; an abandon now names what to take back.
    const N: usize = 5_000;
    let mut b = Bench::new();
    let (getter, putter) = (b.session(), b.session());
    let q = b.open(getter, Kind::Queue, Some("q"), vec![], Keep::Handle).unwrap();
    b.apply(Command::Attach { session: putter, object: q, at: b.now }).reply.unwrap();
    let mut tickets = Vec::new();
    for _ in 0..N {
        let Ok(Answer::Parked(p)) = b.call(getter, q, "get", vec![]) else { panic!("empty: must wait") };
        tickets.push(p.ticket);
    }
    let mut deliveries = Vec::new();
    for _ in 0..N {
        let effects = b.call_with(putter, q, Access::Handle, "put", vec![Value::None]);
        deliveries.extend(effects.deliveries);
    }
    assert_eq!(deliveries.len(), N, "every getter was handed its None");
    assert_eq!(b.value(putter, q, "qsize", vec![]), Value::Int(0));
    // The first getter's caller turns out to have left: its item comes back.
    let first = deliveries.remove(0);
    assert_eq!(first.waiter.ticket, tickets[0]);
    let effects = b.apply(Command::Abandon {
        session: getter,
        object: q,
        ticket: first.waiter.ticket,
        undelivered: first.undelivered(),
        at: b.now,
    });
    effects.reply.unwrap();
    assert_eq!(b.value(putter, q, "qsize", vec![]), Value::Int(1), "the None item is back");
    assert_eq!(b.value(putter, q, "get_nowait", vec![]), Value::None);
    // A put's completion is also None, but names nothing to take back.
    assert_eq!(b.value(putter, q, "qsize", vec![]), Value::Int(0));
}

// ---- record and replay ----

mod replay {
    use proptest::prelude::*;

    use super::*;

    /// What the random driver can do; interpreted against the bench's current state.
    #[derive(Debug, Clone)]
    enum Step {
        /// Call method `method` (index into the object's list) on object `object`,
        /// from session `session` (indexes into the live ones).
        Call { session: usize, object: usize, method: usize },
        /// Let time pass.
        Advance { millis: u64 },
        /// The deadline of parked call `call` (index into the open ones) passes.
        Expire { call: usize },
        /// The caller of parked call `call` leaves.
        Abandon { call: usize },
        /// Delivery `delivery` (index into the pending ones) reaches its caller, or not.
        Deliver { delivery: usize, arrives: bool },
        /// Session `session` ends, and a new one opens.
        End { session: usize },
        /// A wake-up of the queue is due.
        Tick,
    }

    fn step() -> impl Strategy<Value = Step> {
        prop_oneof![
            6 => (0..3usize, 0..10usize, 0..6usize).prop_map(|(session, object, method)| Step::Call { session, object, method }),
            2 => (1..2_000u64).prop_map(|millis| Step::Advance { millis }),
            1 => (0..8usize).prop_map(|call| Step::Expire { call }),
            1 => (0..8usize).prop_map(|call| Step::Abandon { call }),
            3 => (0..8usize, proptest::bool::weighted(0.8)).prop_map(|(delivery, arrives)| Step::Deliver { delivery, arrives }),
            1 => (0..3usize).prop_map(|session| Step::End { session }),
            1 => Just(Step::Tick),
        ]
    }

    /// The objects every run opens, and the calls the driver makes on each.
    /// A method call the driver can make: the method and its arguments.
    type Calls = Vec<(&'static str, Vec<Value>)>;

    fn objects() -> Vec<(Kind, &'static str, Vec<Value>, Calls)> {
        let t = |secs: f64| Value::Float(secs);
        let yes = Value::Bool(true);
        vec![
            (
                Kind::Queue,
                "q",
                vec![Value::Int(2)],
                vec![
                    ("put", vec![Value::Int(7), yes.clone(), t(0.5)]),
                    ("get", vec![yes.clone(), t(0.5)]),
                    ("get_leased", vec![yes.clone(), t(1.0), t(1.5)]),
                    ("put", vec![Value::None]),
                    ("ack", vec![Value::Int(1)]),
                    ("nack", vec![Value::Int(2)]),
                ],
            ),
            (
                Kind::JoinableQueue,
                "j",
                vec![],
                vec![
                    ("put", vec![Value::Str("x".into())]),
                    ("get", vec![]),
                    ("task_done", vec![]),
                    ("join", vec![]),
                    ("get_leased", vec![yes.clone(), Value::None, Value::None]),
                    ("qsize", vec![]),
                ],
            ),
            (
                Kind::Lock,
                "l",
                vec![],
                vec![
                    ("acquire", vec![]),
                    ("acquire_fenced", vec![yes.clone(), t(0.8)]),
                    ("release", vec![]),
                    ("locked", vec![]),
                    ("acquire", vec![Value::Bool(false)]),
                    ("release", vec![]),
                ],
            ),
            (
                Kind::RLock,
                "r",
                vec![],
                vec![
                    ("acquire", vec![yes.clone(), t(1.0)]),
                    ("release", vec![]),
                    ("acquire_fenced", vec![]),
                    ("release", vec![]),
                    ("acquire", vec![]),
                    ("release", vec![]),
                ],
            ),
            (
                Kind::Semaphore,
                "s",
                vec![Value::Int(1)],
                vec![
                    ("acquire", vec![]),
                    ("release", vec![]),
                    ("acquire", vec![yes.clone(), t(0.3)]),
                    ("release", vec![Value::Int(2)]),
                    ("acquire", vec![Value::Bool(false)]),
                    ("release", vec![]),
                ],
            ),
            (
                Kind::Condition,
                "c",
                vec![],
                vec![
                    ("acquire", vec![]),
                    ("wait", vec![t(0.7)]),
                    ("notify", vec![]),
                    ("notify_all", vec![]),
                    ("release", vec![]),
                    ("wait_fenced", vec![]),
                ],
            ),
            (
                Kind::Event,
                "e",
                vec![],
                vec![
                    ("wait", vec![t(0.4)]),
                    ("set", vec![]),
                    ("clear", vec![]),
                    ("wait", vec![]),
                    ("is_set", vec![]),
                    ("wait", vec![t(2.0)]),
                ],
            ),
            (
                Kind::Dict,
                "d",
                vec![],
                vec![
                    ("__setitem__", vec![Value::Int(1), Value::Int(2)]),
                    ("pop", vec![Value::Int(1), Value::None]),
                    ("setdefault", vec![Value::Int(3), Value::List(vec![])]),
                    ("clear", vec![]),
                    ("get", vec![Value::Int(1)]),
                    ("update", vec![Value::List(vec![Value::Tuple(vec![Value::Int(4), Value::Int(5)])])]),
                ],
            ),
            (
                Kind::Set,
                "t",
                vec![Value::List(vec![Value::Int(1)])],
                vec![
                    ("add", vec![Value::Int(2)]),
                    ("update", vec![Value::List(vec![Value::Float(3.0), Value::Str("x".into())])]),
                    ("pop", vec![]),
                    ("__ixor__", vec![Value::Set(agora_proto::value::Set::from_values([Value::Int(1)]).unwrap())]),
                    ("discard", vec![Value::Int(2)]),
                    ("intersection_update", vec![Value::List(vec![Value::Int(1), Value::Int(3)])]),
                ],
            ),
            (
                // Reliable consumption: counted deliveries, delayed nacks, dead letters
                // moved to another queue (created by the first move).
                Kind::Queue,
                "dq",
                vec![Value::Int(0), Value::Int(2), Value::Str("dead".into())],
                vec![
                    ("put", vec![Value::Int(3)]),
                    ("get_leased", vec![yes.clone(), t(0.2), t(0.6)]),
                    ("nack", vec![Value::Int(1)]),
                    ("nack", vec![Value::Int(2), t(0.4)]),
                    ("ack", vec![Value::Int(3)]),
                    ("nack", vec![Value::Int(4), Value::None]),
                ],
            ),
        ]
    }

    struct Driver {
        bench: Bench,
        sessions: Vec<SessionId>,
        objects: Vec<(ObjectId, Calls)>,
        /// Calls waiting for their answer: (session, object, ticket).
        parked: Vec<(SessionId, ObjectId, Ticket)>,
        /// Answers on their way to their callers.
        pending: Vec<Delivery>,
        /// Wake-ups asked for.
        wakeups: Vec<(ObjectId, Time)>,
    }

    impl Driver {
        fn new() -> Driver {
            let mut bench = Bench::new();
            let sessions: Vec<_> = (0..3).map(|_| bench.session()).collect();
            let mut objects = Vec::new();
            for (kind, name, args, calls) in super::replay::objects() {
                let id = bench.open(sessions[0], kind, Some(name), args, Keep::Handle).unwrap();
                objects.push((id, calls));
            }
            let mut driver =
                Driver { bench, sessions, objects, parked: Vec::new(), pending: Vec::new(), wakeups: Vec::new() };
            for i in 1..3 {
                driver.attach_all(i);
            }
            driver
        }

        fn attach_all(&mut self, session: usize) {
            let s = self.sessions[session];
            for i in 0..self.objects.len() {
                let object = self.objects[i].0;
                self.bench.apply(Command::Attach { session: s, object, at: self.bench.now }).reply.unwrap();
            }
        }

        fn absorb(&mut self, effects: Effects) {
            for delivery in effects.deliveries {
                let ticket = delivery.waiter.ticket;
                self.parked.retain(|&(_, _, t)| t != ticket);
                self.pending.push(delivery);
            }
            self.wakeups.extend(effects.wakeups);
        }

        fn run(&mut self, step: Step) {
            let at = self.bench.now;
            match step {
                Step::Call { session, object, method } => {
                    let s = self.sessions[session % self.sessions.len()];
                    let (id, calls) = &self.objects[object % self.objects.len()];
                    let id = *id;
                    let (name, args) = calls[method % calls.len()].clone();
                    let effects = self.bench.call_with(s, id, Access::Handle, name, args);
                    if let Ok(Answer::Parked(p)) = &effects.reply {
                        self.parked.push((s, id, p.ticket));
                    }
                    self.absorb(effects);
                }
                Step::Advance { millis } => {
                    self.bench.now = at.after(std::time::Duration::from_millis(millis)).unwrap()
                }
                Step::Expire { call } if !self.parked.is_empty() => {
                    let (session, object, ticket) = self.parked[call % self.parked.len()];
                    let effects = self.bench.apply(Command::Expire { session, object, ticket, at });
                    self.absorb(effects);
                }
                Step::Abandon { call } if !self.parked.is_empty() => {
                    let (session, object, ticket) = self.parked.remove(call % self.parked.len());
                    let effects = self.bench.apply(Command::Abandon { session, object, ticket, undelivered: None, at });
                    self.absorb(effects);
                }
                Step::Deliver { delivery, arrives } if !self.pending.is_empty() => {
                    let delivery = self.pending.remove(delivery % self.pending.len());
                    if !arrives {
                        let Waiter { ticket, session, object } = delivery.waiter;
                        let undelivered = delivery.undelivered();
                        let effects = self.bench.apply(Command::Abandon { session, object, ticket, undelivered, at });
                        self.absorb(effects);
                    }
                }
                Step::End { session } => {
                    let i = session % self.sessions.len();
                    let s = self.sessions[i];
                    // The parking layer's teardown: abandon its calls, then end it.
                    for (sess, object, ticket) in self.parked.clone() {
                        if sess == s {
                            let effects = self.bench.apply(Command::Abandon {
                                session: s,
                                object,
                                ticket,
                                undelivered: None,
                                at,
                            });
                            self.absorb(effects);
                        }
                    }
                    self.parked.retain(|&(sess, _, _)| sess != s);
                    for delivery in std::mem::take(&mut self.pending) {
                        if delivery.waiter.session == s {
                            let Waiter { ticket, session, object } = delivery.waiter;
                            let undelivered = delivery.undelivered();
                            let effects =
                                self.bench.apply(Command::Abandon { session, object, ticket, undelivered, at });
                            self.absorb(effects);
                        } else {
                            self.pending.push(delivery);
                        }
                    }
                    let effects = self.bench.end(s);
                    self.absorb(effects);
                    self.sessions[i] = self.bench.session();
                    self.attach_all(i);
                }
                Step::Tick => {
                    let due: Vec<_> = self.wakeups.iter().filter(|&&(_, t)| t <= at).copied().collect();
                    self.wakeups.retain(|&(_, t)| t > at);
                    for (object, _) in due {
                        let effects = self.bench.apply(Command::Tick { object, at });
                        self.absorb(effects);
                    }
                }
                _ => {}
            }
        }
    }

    /// Runs `steps`, replays the log into a fresh engine, and checks that every command
    /// produced the same and the two engines end in equal states. Returns how many calls
    /// parked and how many answers were handed out (so a caller can see it was exercised).
    fn check_replay(steps: Vec<Step>) -> Result<(usize, usize), TestCaseError> {
        let mut driver = Driver::new();
        // Half-way, the whole state is imaged (what a snapshot holds).
        let half = steps.len() / 2;
        let mut image = None;
        for (i, step) in steps.into_iter().enumerate() {
            if i == half {
                image = Some((driver.bench.engine.image(), driver.bench.log.len()));
            }
            driver.run(step);
        }
        let original = driver.bench.engine.canonical_state();
        // Snapshot + the log after it rebuilds the same state, through MessagePack.
        if let Some((image, applied)) = image {
            let bytes = rmp_serde::to_vec_named(&image).unwrap();
            let image: EngineImage = rmp_serde::from_slice(&bytes).unwrap();
            let restored = Engine::from_image(CustomKinds::default(), image).unwrap();
            for (command, seen) in driver.bench.log[applied..].iter().zip(&driver.bench.observed[applied..]) {
                let again = restored.apply(command.clone());
                prop_assert_eq!(&observed(&again), seen, "after the image: command {:?}", command);
            }
            prop_assert_eq!(&restored.canonical_state(), &original);
        }
        let replayed = Engine::with_counters(CustomKinds::default(), START);
        for (command, seen) in driver.bench.log.iter().zip(&driver.bench.observed) {
            let again = replayed.apply(command.clone());
            prop_assert_eq!(&observed(&again), seen, "command {:?}", command);
        }
        prop_assert_eq!(&replayed.canonical_state(), &original);
        // The log also survives its own encoding (what a command log on disk holds).
        let bytes = rmp_serde::to_vec(&driver.bench.log).unwrap();
        let decoded: Vec<Command> = rmp_serde::from_slice(&bytes).unwrap();
        prop_assert_eq!(&decoded, &driver.bench.log);
        let parked = driver.bench.observed.iter().filter(|o| o.starts_with("Ok(Parked")).count();
        let handed = driver.bench.observed.iter().filter(|o| o.contains("Delivery {")).count();
        Ok((parked, handed))
    }

    #[test]
    fn a_fixed_run_parks_expires_abandons_and_replays() {
        use Step::*;
        let call = |session, object, method| Call { session, object, method };
        let steps = vec![
            call(1, 0, 1),                           // q: get waits
            call(2, 0, 2),                           // q: get_leased waits
            call(0, 0, 0),                           // q: put → the get
            call(0, 0, 3),                           // q: put → the leased get
            Deliver { delivery: 0, arrives: false }, // the item comes back
            call(0, 2, 0),                           // l: acquire
            call(1, 2, 1),                           // l: acquire_fenced waits
            Advance { millis: 900 },
            Expire { call: 0 }, // l: the waiter times out
            call(0, 5, 0),      // c: acquire
            call(0, 5, 1),      // c: wait
            call(2, 5, 0),      // c: acquire (gets it: the waiter released it)
            call(2, 5, 2),      // c: notify
            call(2, 5, 4),      // c: release → the waiter re-acquires
            call(1, 6, 3),      // e: wait forever
            Abandon { call: 0 },
            call(0, 6, 1), // e: set
            Advance { millis: 2_000 },
            Tick, // q: the lease expires
            End { session: 0 },
            call(1, 4, 0),
            End { session: 1 },
        ];
        let (parked, handed) = check_replay(steps).unwrap();
        assert!(parked >= 5, "{parked} calls parked");
        assert!(handed >= 4, "{handed} commands handed answers out");
    }

    #[test]
    fn a_fixed_run_of_dead_letters_and_delayed_nacks_replays() {
        use Step::*;
        let call = |session, object, method| Call { session, object, method };
        let steps = vec![
            call(0, 8, 0),           // dq: put
            call(0, 8, 0),           // dq: put
            call(1, 8, 1),           // dq: get_leased → receipt 1
            call(1, 8, 2),           // dq: nack(1) → back with one delivery
            call(1, 8, 1),           // dq: get_leased → receipt 2, second delivery
            call(2, 8, 3),           // dq: nack(2, 0.4) → dead letter at once
            call(2, 8, 1),           // dq: get_leased → receipt 3
            call(2, 8, 1),           // dq: get_leased → receipt 4 (the other item)
            call(0, 8, 5),           // dq: nack(4) → back
            call(0, 8, 1),           // dq: get_leased → receipt 5
            Advance { millis: 700 }, // leases 3 and 5 expire
            Tick,
            call(0, 8, 1),
            End { session: 0 },
        ];
        check_replay(steps).unwrap();
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

        #[test]
        fn a_replayed_log_rebuilds_the_same_state(steps in proptest::collection::vec(step(), 1..250)) {
            check_replay(steps)?;
        }
    }
}

/// A connection may still hold a session that ended (its end came from elsewhere: a
/// heartbeat, a restart) or that belongs to a state the engine no longer has (a cluster
/// node rebuilt from its log): nothing is applied for it any more.
#[test]
fn commands_of_an_ended_or_replaced_session_are_refused() {
    let mut b = Bench::new();
    let s = b.session();
    let d = b.open(s, Kind::Dict, Some("d"), vec![], Keep::Handle).unwrap();
    let held = b.engine.session(s).expect("open");
    let set = |b: &Bench, session: &Session| {
        b.engine.call(
            session,
            None,
            d,
            Access::Handle,
            "__setitem__",
            Args::positional(vec![Value::Int(1), Value::Int(2)]),
            b.now,
        )
    };
    assert!(set(&b, &held).reply.is_ok());
    b.apply(Command::EndSession { session: s, at: b.now });
    let refused = set(&b, &held).reply.unwrap_err();
    assert_eq!(refused.code, ErrorCode::SessionExpired);
    assert!(!set(&b, &held).mutated);

    let t = b.session();
    let held = b.engine.session(t).expect("open");
    let image = b.engine.image();
    b.engine.replace_with(Engine::from_image(CustomKinds::default(), image).unwrap());
    let refused = b.engine.apply_in(&held, Command::Release { session: t, object: d, at: b.now }).reply.unwrap_err();
    assert_eq!(refused.code, ErrorCode::SessionExpired);
    // The replaced state's own session of that id still works.
    let fresh = b.engine.session(t).expect("the image kept the session");
    assert!(!fresh.is_ended());
}

/// A call through a connection's cache of its session's handles.
fn cached_call(b: &Bench, session: &Session, handles: &mut HandleCache, object: ObjectId, method: &str) -> Effects {
    b.engine.call(session, Some(handles), object, Access::Handle, method, Args::positional(vec![]), b.now)
}

#[test]
fn a_connections_handle_cache_follows_its_sessions_handles() {
    let mut b = Bench::new();
    let s = b.session();
    let session = b.engine.session(s).expect("open");
    let d = b.open(s, Kind::Dict, None, vec![], Keep::Handle).unwrap();
    let mut handles = HandleCache::new();
    assert!(cached_call(&b, &session, &mut handles, d, "keys").reply.is_ok());
    // Opened twice, given back once: the handle is still there.
    b.apply(Command::Attach { session: s, object: d, at: b.now }).reply.unwrap();
    b.apply(Command::Release { session: s, object: d, at: b.now }).reply.unwrap();
    assert!(cached_call(&b, &session, &mut handles, d, "keys").reply.is_ok());
    // Given back for good: the cache must not find it any more.
    b.apply(Command::Release { session: s, object: d, at: b.now }).reply.unwrap();
    let refused = cached_call(&b, &session, &mut handles, d, "keys").reply.unwrap_err();
    assert_eq!(refused.code, ErrorCode::NoSuchObject);
    // Another object's handle given back empties the cache too; what is still held is
    // found again through the session.
    let e = b.open(s, Kind::Dict, None, vec![], Keep::Handle).unwrap();
    let f = b.open(s, Kind::Dict, None, vec![], Keep::Handle).unwrap();
    assert!(cached_call(&b, &session, &mut handles, e, "keys").reply.is_ok());
    assert!(cached_call(&b, &session, &mut handles, f, "keys").reply.is_ok());
    b.apply(Command::Release { session: s, object: f, at: b.now }).reply.unwrap();
    assert!(cached_call(&b, &session, &mut handles, e, "keys").reply.is_ok());
    let refused = cached_call(&b, &session, &mut handles, f, "keys").reply.unwrap_err();
    assert_eq!(refused.code, ErrorCode::NoSuchObject);
}

#[test]
fn with_a_journal_a_call_through_the_handle_cache_logs_only_what_may_change_state() {
    let mut b = Bench::new();
    let journal = Arc::new(Journal::new(1));
    b.engine.attach_journal(journal.clone());
    let s = b.session();
    let session = b.engine.session(s).expect("open");
    let d = b.open(s, Kind::Dict, None, vec![], Keep::Handle).unwrap();
    let mut handles = HandleCache::new();
    let mut call = |method: &str, args: Vec<Value>| {
        let before = journal.appended();
        let effects =
            b.engine.call(&session, Some(&mut handles), d, Access::Handle, method, Args::positional(args), b.now);
        (effects, journal.appended() - before)
    };
    let (set, logged) = call("__setitem__", vec![Value::Int(1), Value::Int(2)]);
    assert!(set.reply.is_ok() && set.lsn.is_some() && logged == 1, "{set:?}");
    let (get, logged) = call("__getitem__", vec![Value::Int(1)]);
    assert!(matches!(get.reply, Ok(Answer::Value(Value::Int(2)))) && get.lsn.is_none() && logged == 0, "{get:?}");
    // Neither an unknown method nor a handle given back is logged.
    let (unknown, logged) = call("no_such_method", vec![]);
    assert!(unknown.reply.is_err() && logged == 0);
    b.apply(Command::Release { session: s, object: d, at: b.now }).reply.unwrap();
    let before = journal.appended();
    let gone = b.engine.call(&session, Some(&mut handles), d, Access::Handle, "clear", Args::default(), b.now);
    assert_eq!(gone.reply.unwrap_err().code, ErrorCode::NoSuchObject);
    assert_eq!(journal.appended(), before);
}

#[test]
fn a_call_that_passed_the_sessions_check_as_it_ended_takes_nothing() {
    // `Engine::call` refuses an ended session up front; a call already past that check
    // (and past finding its object: a cached handle, or an id) when the session ends
    // must not take a lock nobody will release. `call_now` is what runs after the
    // check; by id, nothing else stops it.
    let mut b = Bench::new();
    let s = b.session();
    let session = b.engine.session(s).expect("open");
    let lock = b.open(s, Kind::Lock, Some("L"), vec![], Keep::Handle).unwrap();
    b.apply(Command::EndSession { session: s, at: b.now });
    let (object, args, at) = (lock, Args::positional(vec![]), b.now);
    let late = b.engine.call_now(&session, None, object, Access::Id, "acquire", args, at);
    assert_eq!(late.reply.unwrap_err().code, ErrorCode::SessionExpired);
    // The lock is free for the next session.
    let t = b.session();
    let lock = b.open(t, Kind::Lock, Some("L"), vec![], Keep::Handle).unwrap();
    assert_eq!(b.value(t, lock, "acquire", vec![Value::Bool(false)]), Value::Bool(true));
}

#[test]
fn a_replica_clock_never_reads_earlier_than_the_commands_it_applied() {
    // The leader's wall clock runs an hour ahead of this node's: should this node lead
    // next, the times it stamps must not go back.
    let engine = Engine::with_counters(CustomKinds::default(), START);
    let leaders_time = engine.now().after_secs(3600.0).unwrap();
    engine.apply_replicated(Command::OpenSession { at: leaders_time, secret: None });
    assert!(engine.now() >= leaders_time, "{:?} < {leaders_time:?}", engine.now());
    // An older command does not move it back.
    let before = engine.now();
    engine.apply_replicated(Command::OpenSession { at: Time(1), secret: None });
    assert!(engine.now() >= before);
}

#[test]
fn a_takeover_detaches_resumable_sessions_until_resumed_or_lapsed() {
    let mut b = Bench::new();
    let open = |b: &mut Bench, secret| match b.apply(Command::OpenSession { at: b.now, secret }).reply {
        Ok(Answer::Session(id)) => id,
        other => panic!("{other:?}"),
    };
    let (native, python, gone) = (open(&mut b, Some(7)), open(&mut b, None), open(&mut b, Some(9)));
    let lock = b.open(native, Kind::Lock, Some("l"), vec![], Keep::Handle).unwrap();
    let token = b.value(native, lock, "acquire_fenced", vec![]).as_index().unwrap();
    let sem = b.open(gone, Kind::Semaphore, Some("s"), vec![Value::Int(1)], Keep::Handle).unwrap();
    b.value(gone, sem, "acquire", vec![]);
    // A parked call of a detached session is abandoned: its caller was the old leader's.
    b.apply(Command::Attach { session: gone, object: lock, at: b.now }).reply.unwrap();
    let Ok(Answer::Parked(_)) = b.call(gone, lock, "acquire_fenced", vec![]) else { panic!("must wait") };
    let anonymous = b.open(python, Kind::Dict, None, vec![], Keep::Reference).unwrap();
    let mine = b.open(native, Kind::Dict, None, vec![], Keep::Handle).unwrap();
    // A session opened after the new leader began is its own: untouched.
    let later = open(&mut b, Some(11));
    let until = Time(b.now.0 + 5_000_000);
    b.apply(Command::Takeover { at: b.now, before: later, until });
    assert!(b.engine.session(python).is_none(), "a session that cannot be resumed ends");
    // A CPython client's counted references are not a session's: the client may be a
    // follower's, carried across, whose proxies still name the object.
    assert!(b.exists(anonymous), "a counted reference survives a takeover");
    assert!(b.exists(mine), "a detached session's handle keeps its anonymous object");
    assert_eq!(b.engine.detached_sessions(), vec![(native, until), (gone, until)]);
    assert!(b.engine.session(later).unwrap().state().detached_until.is_none());
    assert!(b.engine.parked_calls().is_empty());

    // The wrong secret, or a session that is not detached, is refused precisely.
    let refused = b.apply(Command::Resume { session: native, secret: 8, at: b.now }).reply.unwrap_err();
    assert!(refused.code == ErrorCode::SessionExpired && refused.message.contains("secret"), "{refused:?}");
    let refused = b.apply(Command::Resume { session: later, secret: 11, at: b.now }).reply.unwrap_err();
    assert!(refused.message.contains("not detached"), "{refused:?}");
    assert_eq!(b.apply(Command::Resume { session: native, secret: 7, at: b.now }).reply, Ok(Answer::Session(native)));
    // Resumed: the lock is still its own, released by its token.
    assert_eq!(b.value(native, lock, "release_fenced", vec![Value::Int(token)]), Value::None);

    // The lapse is a no-op before its time and for a resumed session.
    b.apply(Command::Lapse { session: gone, at: Time(until.0 - 1) });
    assert!(b.engine.session(gone).is_some());
    b.now = until;
    b.apply(Command::Lapse { session: native, at: b.now });
    b.apply(Command::Lapse { session: gone, at: b.now });
    assert!(b.engine.session(native).is_some(), "a resumed session is not lapsed");
    assert!(b.engine.session(gone).is_none(), "a detached session lapses at its time");
    b.apply(Command::Attach { session: native, object: sem, at: b.now }).reply.unwrap();
    assert_eq!(b.value(native, sem, "acquire", vec![Value::Bool(false)]), Value::Bool(true), "its permit came back");

    // Replayed, the same commands give the same state, and an image carries the
    // secrets and the deadlines.
    let replayed = Engine::with_counters(CustomKinds::default(), START);
    for command in b.log.clone() {
        replayed.apply(command);
    }
    assert_eq!(replayed.canonical_state(), b.engine.canonical_state());
    let restored = Engine::from_image(CustomKinds::default(), b.engine.image()).unwrap();
    assert_eq!(restored.canonical_state(), b.engine.canonical_state());
}

#[test]
fn an_image_begun_in_a_pause_and_finished_after_changes_is_the_state_at_the_pause() {
    let mut b = Bench::new();
    let s = b.session();
    let big = b.open(s, Kind::Dict, Some("big"), vec![], Keep::Handle).unwrap();
    for i in 0..6000 {
        b.value(s, big, "__setitem__", vec![Value::Int(i), Value::Str(format!("v{i}").into())]);
    }
    let small = b.open(s, Kind::List, None, vec![], Keep::Handle).unwrap();
    b.value(s, small, "append", vec![Value::Int(1)]);
    let long = b.open(s, Kind::List, Some("long"), vec![], Keep::Handle).unwrap();
    b.value(s, long, "extend", vec![Value::List((0..5000).map(Value::Int).collect())]);
    let queue = b.open(s, Kind::Queue, Some("jobs"), vec![], Keep::Handle).unwrap();
    for i in 0..5000 {
        b.value(s, queue, "put", vec![Value::Int(i)]);
    }
    let floats = Value::List((0..5000).map(|i| Value::Float(i as f64)).collect());
    let array = b.open(s, Kind::Array, Some("floats"), vec![Value::Str("d".into()), floats], Keep::Handle).unwrap();
    let at_pause = b.engine.image();
    let logged = b.log.len();

    let pending = b.engine.begin_image();
    assert_eq!(
        pending.captured(),
        4,
        "the big dict, list, queue and array are read out after the pause, the small list was not"
    );
    // Changes after the pause: overwrites, deletes, new keys, a clear, the big dict
    // deleted by name and the small list freed with its session.
    for i in (0..6000).step_by(7) {
        b.value(s, big, "__setitem__", vec![Value::Int(i), Value::None]);
        b.value(s, big, "pop", vec![Value::Int(i + 3), Value::None]);
        b.value(s, big, "__setitem__", vec![Value::Int(10_000 + i), Value::Int(i)]);
    }
    for i in 0..3000 {
        b.value(s, queue, "get", vec![Value::Bool(false)]);
        b.value(s, queue, "put", vec![Value::Int(-i)]);
    }
    b.value(s, long, "__setitem__", vec![Value::Int(10), Value::None]);
    b.value(s, long, "append", vec![Value::Int(-1)]);
    b.value(s, long, "insert", vec![Value::Int(0), Value::Int(-2)]);
    b.value(s, long, "__setitem__", vec![Value::Int(20), Value::None]);
    b.value(s, array, "__setitem__", vec![Value::Int(3), Value::Float(-3.0)]);
    let shorter = Value::List(vec![Value::Float(0.5); 10]);
    let head = agora_proto::slice::Slice { start: None, stop: Some(100), step: None }.to_value();
    b.value(s, array, "__setitem__", vec![head, shorter]);
    b.value(s, array, "__setitem__", vec![Value::Int(-1), Value::Float(-1.0)]);
    b.value(s, big, "popitem", vec![]);
    b.value(s, big, "clear", vec![]);
    b.value(s, big, "__setitem__", vec![Value::Int(0), Value::Int(0)]);
    b.value(s, small, "append", vec![Value::Int(2)]);
    b.apply(Command::Delete { name: "big".into(), at: b.now });
    b.end(s);
    let finished = pending.finish();
    assert_eq!(finished, at_pause, "the image is the state at the pause");

    // The image and the commands after it give the engine's state now.
    let restored = Engine::from_image(CustomKinds::default(), finished).unwrap();
    for command in b.log[logged..].iter().cloned() {
        restored.apply(command);
    }
    assert_eq!(restored.canonical_state(), b.engine.canonical_state());
}

#[test]
fn an_image_dropped_unfinished_ends_its_captures() {
    let mut b = Bench::new();
    let s = b.session();
    let dict = b.open(s, Kind::Dict, Some("d"), vec![], Keep::Handle).unwrap();
    let pairs = (0..5000).map(|i| Value::Tuple(vec![Value::Int(i), Value::Int(i)])).collect();
    b.value(s, dict, "update", vec![Value::List(pairs)]);
    let list = b.open(s, Kind::List, Some("l"), vec![], Keep::Handle).unwrap();
    b.value(s, list, "extend", vec![Value::List((0..5000).map(Value::Int).collect())]);
    let queue = b.open(s, Kind::Queue, Some("q"), vec![], Keep::Handle).unwrap();
    for i in 0..5000 {
        b.value(s, queue, "put", vec![Value::Int(i)]);
    }
    let abandoned = b.engine.begin_image();
    assert_eq!(abandoned.captured(), 3);
    // (A snapshot whose write failed before its read-out, say.) Its captures end: the
    // next image captures the objects again, and changes made meanwhile are in it.
    drop(abandoned);
    b.value(s, dict, "__setitem__", vec![Value::Int(0), Value::None]);
    b.value(s, queue, "get", vec![Value::Bool(false)]);
    let at_pause = b.engine.image();
    let next = b.engine.begin_image();
    assert_eq!(next.captured(), 3, "an unfinished image left a capture running");
    b.value(s, list, "reverse", vec![]);
    assert_eq!(next.finish(), at_pause);
}

#[test]
fn only_big_objects_of_kinds_that_prefetch_are_asked_and_a_busy_one_is_not_waited_for() {
    let mut b = Bench::new();
    let s = b.session();
    let session = b.engine.session(s).expect("open");
    let mut handles = HandleCache::new();
    let key = |i: usize| Value::Str(format!("key:{i}").into());
    let (big, small, list) = (
        b.open(s, Kind::Dict, None, vec![], Keep::Handle).unwrap(),
        b.open(s, Kind::Dict, None, vec![], Keep::Handle).unwrap(),
        b.open(s, Kind::List, None, vec![], Keep::Handle).unwrap(),
    );
    for i in 0..PREFETCH_FROM {
        b.value(s, big, "__setitem__", vec![key(i), Value::Int(i as i64)]);
        b.value(s, list, "append", vec![Value::Int(1)]);
    }
    b.value(s, small, "__setitem__", vec![key(1), Value::Int(1)]);
    assert!(b.engine.worth_prefetching(&session, &mut handles, big));
    assert!(!b.engine.worth_prefetching(&session, &mut handles, small), "it stays in the cache");
    assert!(!b.engine.worth_prefetching(&session, &mut handles, list), "lists do not prefetch");
    assert!(!b.engine.worth_prefetching(&session, &mut handles, 0xdead), "not a handle it holds");

    let keys: Vec<Value> = (0..40).map(key).collect();
    let upcoming = || keys.iter().map(|first| Upcoming { method: "__getitem__", first });
    let before = b.value(s, big, "copy", vec![]);
    b.engine.prefetch(&session, &mut handles, big, upcoming());
    b.engine.prefetch(&session, &mut handles, 0xdead, upcoming());
    // Another thread's call holds the dict: the prefetch goes without, at once.
    let entry = b.engine.table.get(big).unwrap();
    let held = entry.lock().unwrap();
    let (done, finished) = std::sync::mpsc::channel();
    std::thread::scope(|scope| {
        let engine = &b.engine;
        let (session, handles) = (&session, &mut handles);
        scope.spawn(move || {
            engine.prefetch(session, handles, big, upcoming());
            done.send(()).unwrap();
        });
        let waited = finished.recv_timeout(std::time::Duration::from_secs(10));
        drop(held);
        assert!(waited.is_ok(), "a prefetch waited for the object's lock");
    });
    assert!(b.value(s, big, "copy", vec![]).py_eq(&before), "prefetching changed nothing");
    assert_eq!(b.value(s, big, "__getitem__", vec![key(7)]), Value::Int(7));
}
