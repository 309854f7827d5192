//! The contract between the server core and each object kind.
//!
//! Every kind (one module under [`crate::objects`]) implements [`SharedObject`]: a table
//! of its methods ([`MethodSpec`], declared once: Python parameter names, whether the
//! method only reads, whether it stores its arguments) and a `call` that runs one
//! method against the object's state. The engine looks the method up, binds the
//! caller's positional and keyword arguments to parameters the way Python does
//! ([`bind`]), holds the object's lock for the call (no `.await` inside), and turns the
//! result into a reply for whichever dialect asked.
//!
//! Object modules own their state and semantics. They see the world only through the
//! [`Ctx`] they are driven with: no sockets, sessions, registry, clock, runtime or
//! process-global counters (see [`crate::engine`]).

use agora_proto::native::{Kind, ObjectId};
use agora_proto::value::Dict;
use agora_proto::{ErrorCode, Value, WireError};

use crate::engine::{Ctx, SessionId, Ticket, Time, Undelivered};
use crate::objects::condition::ConditionLock;

/// One method of an object kind, as Python declares it: the built-in kinds' tables are
/// declared once in [`agora_proto::methods`] (dispatch, the Python `exposed` lists and
/// the client's method names all read them); custom kinds build theirs at run time.
pub use agora_proto::methods::MethodSpec;

/// A call a connection is about to make, as far as [`SharedObject::prefetch`] needs
/// it: its method and its first positional argument, not yet checked (the call itself
/// checks them when it runs).
#[derive(Debug, Clone, Copy)]
pub struct Upcoming<'a> {
    /// The method's name, as the client sent it.
    pub method: &'a str,
    /// Its first positional argument.
    pub first: &'a Value,
}

/// Arguments bound to a method's parameters: one slot per parameter (empty where an
/// optional parameter was not given), then a `*args` method's extra positional
/// arguments, plus the leftover keywords of a `**kwargs` method.
///
/// The slots are the very buffer the call's positional arguments were decoded into,
/// padded to one value per parameter, and that buffer goes back to the thread's spare
/// ones when the arguments are dropped ([`agora_proto::native::spare`]): binding and
/// running a call allocate nothing for its arguments.
#[derive(Debug, Clone)]
pub struct Args {
    method: &'static str,
    /// One value per parameter (`None` where not given), then the `*args` extras.
    values: Vec<Value>,
    /// Bit `i`: parameter `i` was given and is not taken yet.
    given: u64,
    /// How many of `values` are parameters; the extras after them are all given.
    params: usize,
    keywords: Vec<(String, Value)>,
}

/// The most parameters a method may declare: one bit each in [`Args`]'s `given`.
const MAX_PARAMS: usize = u64::BITS as usize;

impl Args {
    /// The method these arguments were bound for (for error messages).
    pub fn method(&self) -> &'static str {
        self.method
    }

    fn is_given(&self, index: usize) -> bool {
        if index < self.params {
            self.given & (1 << index) != 0
        } else {
            index < self.values.len()
        }
    }

    /// The argument for parameter `index`, if given.
    pub fn get(&self, index: usize) -> Option<&Value> {
        self.is_given(index).then(|| &self.values[index])
    }

    /// Takes the argument for parameter `index`, if given. (An extra of a `*args`
    /// method is taken with [`Args::take_rest`].)
    pub fn take(&mut self, index: usize) -> Option<Value> {
        if !self.is_given(index) {
            return None;
        }
        if index < self.params {
            self.given &= !(1 << index);
        }
        Some(std::mem::take(&mut self.values[index]))
    }

    /// Takes a required argument ([`bind`] guarantees required slots are filled).
    pub fn required(&mut self, index: usize) -> Value {
        self.take(index).unwrap_or_default()
    }

    /// Takes an optional argument, or `default` when not given.
    pub fn or(&mut self, index: usize, default: Value) -> Value {
        self.take(index).unwrap_or(default)
    }

    /// Takes an optional int argument (`TypeError` if it is not an int).
    pub fn int_or(&mut self, index: usize, default: i64) -> Result<i64, WireError> {
        match self.take(index) {
            None => Ok(default),
            Some(v) => v.as_index().ok_or_else(|| {
                WireError::type_error(format!("'{}' object cannot be interpreted as an integer", v.type_name()))
            }),
        }
    }

    /// Takes an optional truthiness argument (Python's `bool(x)`).
    pub fn bool_or(&mut self, index: usize, default: bool) -> bool {
        self.take(index).map_or(default, |v| v.is_truthy())
    }

    /// Takes the positional arguments from parameter `index` on, in order, skipping
    /// parameters that were not given: with `index` = the number of named parameters,
    /// the extra positional arguments of a `*args` method.
    pub fn take_rest(&mut self, index: usize) -> Vec<Value> {
        let start = index.min(self.values.len());
        let rest = (start..self.values.len()).filter_map(|i| self.take(i)).collect();
        self.values.truncate(start);
        rest
    }

    /// Takes the leftover keyword arguments of a `**kwargs` method.
    pub fn take_keywords(&mut self) -> Vec<(String, Value)> {
        std::mem::take(&mut self.keywords)
    }

    /// Arguments for tests and internal calls: the given values fill the first slots.
    pub fn from_values(method: &'static str, values: Vec<Value>) -> Args {
        let params = values.len().min(MAX_PARAMS);
        Args { method, given: mask(params), params, values, keywords: Vec::new() }
    }
}

/// The argument buffer goes back to this thread's spare ones.
impl Drop for Args {
    fn drop(&mut self) {
        agora_proto::native::spare::give_back(std::mem::take(&mut self.values));
    }
}

/// The bits of the first `n` (at most 64) parameters.
fn mask(n: usize) -> u64 {
    if n >= MAX_PARAMS {
        u64::MAX
    } else {
        (1 << n) - 1
    }
}

/// Binds positional and keyword arguments to `spec`'s parameters the way Python does,
/// with Python's `TypeError` messages for every mismatch.
pub fn bind(spec: &MethodSpec, positional: Vec<Value>, keywords: Vec<(String, Value)>) -> Result<Args, WireError> {
    let name = spec.name;
    let max = spec.params.len();
    if max > MAX_PARAMS {
        return Err(bad_args(format!("{name}() declares {max} parameters; at most {MAX_PARAMS} are supported")));
    }
    if positional.len() > max && !spec.var_positional {
        let takes = if spec.required == max { format!("{max}") } else { format!("from {} to {max}", spec.required) };
        return Err(bad_args(format!(
            "{name}() takes {takes} positional argument{} but {} were given",
            if max == 1 { "" } else { "s" },
            positional.len()
        )));
    }
    let mut values = positional;
    let count = values.len();
    let mut given = mask(count);
    if count < max {
        values.resize(max, Value::None);
    }
    // Enough positional arguments alone (nearly every call): nothing to match by name.
    if keywords.is_empty() && count >= spec.required {
        return Ok(Args { method: name, values, given: given & mask(max), params: max, keywords });
    }
    let mut extra = Vec::new();
    for (key, value) in keywords {
        match spec.params.iter().position(|p| *p == key) {
            Some(i) if given & (1 << i) != 0 => {
                return Err(bad_args(format!("{name}() got multiple values for argument '{key}'")))
            }
            Some(i) => {
                values[i] = value;
                given |= 1 << i;
            }
            None if spec.var_keywords => extra.push((key, value)),
            None => return Err(bad_args(format!("{name}() got an unexpected keyword argument '{key}'"))),
        }
    }
    if let Some(missing) = (0..spec.required).find(|&i| given & (1 << i) == 0) {
        return Err(bad_args(format!("{name}() missing required argument: '{}'", spec.params[missing])));
    }
    Ok(Args { method: name, values, given: given & mask(max), params: max, keywords: extra })
}

/// Argument-binding failures travel as `TypeError`, as in Python.
fn bad_args(message: String) -> WireError {
    WireError::new(ErrorCode::TypeError, message)
}

/// What a method call produced.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// The call finished with this value.
    Ready(Value),
    /// The call waits: the object called [`Ctx::park`] and keeps the waiter, and
    /// answers it later with [`Ctx::deliver`].
    Parked,
}

impl From<Value> for Outcome {
    fn from(value: Value) -> Outcome {
        Outcome::Ready(value)
    }
}

/// One hold on an object, as [`SharedObject::holders`] describes it: a lock grant, a
/// permit, an RLock's ownership, a queue lease.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Holding {
    /// The session that holds it.
    pub session: SessionId,
    /// Since when (the engine's time of the command that granted it).
    pub since: Time,
    /// Its fencing token, where the kind has one.
    pub token: Option<u64>,
    /// What is held, in a few words (`"lock"`, `"permit"`, `"owner t1, depth 2"`,
    /// `"lease 4, delivery 2"`).
    pub what: String,
}

/// One parked call waiting on an object, as [`SharedObject::holders`] describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Waiting {
    /// The waiting session.
    pub session: SessionId,
    /// The parked call (the engine knows since when it waits).
    pub ticket: Ticket,
    /// What it waits for, in a word or two (`"acquire"`, `"get"`, `"put"`, `"join"`).
    pub what: String,
}

/// Who holds an object and who waits for it, in order: the read-only, kind-neutral
/// view `agora get` and the metrics show. Sessions are ids only; the engine and the
/// server join in what they know about them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Holders {
    /// Current holds, oldest first.
    pub held: Vec<Holding>,
    /// Parked calls, first served first.
    pub waiting: Vec<Waiting>,
}

/// A shared object of one kind. Implementations keep their whole state inside and are
/// driven under the object's lock, so each call is atomic (linearizable), and
/// deterministic: the same commands in the same order give the same state.
pub trait SharedObject: Send + 'static {
    /// The object's kind.
    fn kind(&self) -> Kind;

    /// The methods this kind exposes, with their Python signatures.
    fn methods(&self) -> &'static [MethodSpec];

    /// Runs one method for `ctx.caller()`. `args` were bound against the spec of
    /// `method` from [`SharedObject::methods`], so required slots are filled and
    /// counts are right.
    fn call(&mut self, ctx: &mut Ctx<'_>, method: &str, args: Args) -> Result<Outcome, WireError>;

    /// Calls on this object that a connection is about to make (the next ones of a
    /// pipelined batch): a kind whose calls read memory far apart (a big dict's
    /// entries) may start loading what they will read, so that the calls do not wait
    /// for it one after another. Must change nothing a caller could see. The default
    /// does nothing.
    fn prefetch(&self, upcoming: &mut dyn Iterator<Item = Upcoming<'_>>) {
        let _ = upcoming;
    }

    /// Whether [`SharedObject::prefetch`] does anything for this kind (fixed for the
    /// object's life): a connection looks at calls before they run only for objects
    /// that say so.
    fn prefetches(&self) -> bool {
        false
    }

    /// A copy of the user-visible state as a plain value (`_getvalue()`, `agora get`).
    fn snapshot(&self) -> Value;

    /// The whole state, waiters and grants included, encoded canonically
    /// (MessagePack of the kind's serde form): two objects with equal states encode
    /// equally. Engine snapshots and replay checks compare these.
    fn state(&self) -> Vec<u8>;

    /// Starts encoding [`SharedObject::state`] as it is now, for a snapshot taken while
    /// changes wait: a kind that can grow big and can keep a capture while it changes
    /// (dict, set, list, array, queue) answers [`StateCapture::Started`] with the beginning, and
    /// [`SharedObject::state_next`] writes the rest later, while changes run again. The
    /// rest encode it whole now (the default).
    fn begin_state(&mut self) -> StateCapture {
        StateCapture::Encoded(self.state())
    }

    /// Appends up to `positions` more items of a started state's encoding to `out`;
    /// true once it is complete (the capture is then over).
    fn state_next(&mut self, out: &mut Vec<u8>, positions: usize) -> bool {
        let _ = (out, positions);
        true
    }

    /// Drops a started capture that will not be finished.
    fn end_state(&mut self) {}

    /// Python's `repr` of the referent (what `str(proxy)` shows).
    fn repr(&self) -> String;

    /// The number of items, for kinds that have a size (`agora ls`).
    fn size(&self) -> Option<usize> {
        None
    }

    /// The ctypes typecode of a `Value` (what CPython's `_getvalue()` carries).
    fn typecode(&self) -> Option<Value> {
        None
    }

    /// True for kinds that keep something per session (lock grants, permits, owners,
    /// leases): the engine tells them when a session that used them ends.
    fn holds_session_state(&self) -> bool {
        false
    }

    /// The other object this one drives, if any (a Condition's shared lock, a dict
    /// iterator's dict): the engine locks it after this one and hands it over in
    /// [`Ctx::with_linked`]. Always holder first, then held, so two objects cannot
    /// deadlock.
    fn linked(&self) -> Option<ObjectId> {
        None
    }

    /// This object as the lock of a Condition (Lock and RLock).
    fn as_condition_lock(&mut self) -> Option<&mut dyn ConditionLock> {
        None
    }

    /// The deadline of parked call `ticket` passed: if it still waits here, remove it
    /// and deliver what the call answers on timeout (or keep it waiting without a
    /// deadline: a condition wait re-acquiring its lock). If it was already answered,
    /// do nothing: that answer is on its way.
    fn expire(&mut self, ctx: &mut Ctx<'_>, ticket: Ticket) {
        let _ = (ctx, ticket);
    }

    /// The caller of parked call `ticket` is gone (cancelled or disconnected): remove
    /// its waiter if it still waits; if an answer was delivered and never reached it,
    /// `undelivered` carries it back — take exactly that back.
    fn abandon(&mut self, ctx: &mut Ctx<'_>, ticket: Ticket, undelivered: Option<Undelivered>) {
        let _ = (ctx, ticket, undelivered);
    }

    /// A wake-up this object asked for ([`Ctx::wake_at`]) is due: do what is due at
    /// `ctx.now()` (expire leases) and ask again for the next one.
    fn tick(&mut self, ctx: &mut Ctx<'_>) {
        let _ = ctx;
    }

    /// The session ended (closed, crashed, or timed out): release everything it held.
    fn session_ended(&mut self, ctx: &mut Ctx<'_>, session: SessionId) {
        let _ = (ctx, session);
    }

    /// Who holds this object and who waits for it (read-only; kinds without holders
    /// describe none).
    fn holders(&self) -> Holders {
        Holders::default()
    }

    /// Takes `item`, which another object handed here by name ([`Ctx::move_to`]: a
    /// queue's dead letter); `returned` means it is one of this object's own items
    /// coming back because its target could not take it. Answers the item back if this
    /// object cannot take it (the default): the engine then returns it to its source,
    /// so a move never loses it.
    fn receive_moved(&mut self, ctx: &mut Ctx<'_>, item: Value, returned: bool) -> Result<(), Value> {
        let _ = (ctx, returned);
        Err(item)
    }
}

/// How [`SharedObject::begin_state`] answered.
#[derive(Debug)]
pub enum StateCapture {
    /// The whole state, encoded.
    Encoded(Vec<u8>),
    /// The beginning of its encoding: [`SharedObject::state_next`] writes the rest, as
    /// the state was when it began.
    Started(Vec<u8>),
}

impl StateCapture {
    /// `Started` with `header` if a capture began, else the whole `state` now.
    pub fn started_or(header: Option<Vec<u8>>, state: impl FnOnce() -> Vec<u8>) -> StateCapture {
        match header {
            Some(header) => StateCapture::Started(header),
            None => StateCapture::Encoded(state()),
        }
    }
}

/// Why `rmp::encode` into a `Vec` is `expect`ed, for states written by hand.
pub const VEC_WRITE: &str = "writing to a Vec cannot fail";

/// From this many items on, a kind that can capture its state does
/// ([`SharedObject::begin_state`]); a smaller one is encoded at once, which is quicker
/// than keeping a capture.
pub const CAPTURE_FROM: usize = 4096;

/// The canonical encoding ([`encode_state`]) of a struct whose last field, `field`, is a
/// sequence of `len` items, after `leading` fields that hold strings (name, value), up
/// to the items, with room for them; `None` past `u32::MAX` items (serde then writes
/// it). A kind that writes its state by hand appends the items.
pub fn sequence_state_header(leading: &[(&str, &str)], field: &str, len: usize) -> Option<Vec<u8>> {
    let len32 = u32::try_from(len).ok()?;
    let mut out = Vec::with_capacity(8 + field.len() + 16 * len);
    rmp::encode::write_map_len(&mut out, 1 + leading.len() as u32).expect(VEC_WRITE);
    for (name, value) in leading {
        rmp::encode::write_str(&mut out, name).expect(VEC_WRITE);
        rmp::encode::write_str(&mut out, value).expect(VEC_WRITE);
    }
    rmp::encode::write_str(&mut out, field).expect(VEC_WRITE);
    rmp::encode::write_array_len(&mut out, len32).expect(VEC_WRITE);
    Some(out)
}

/// [`SharedObject::begin_state`] for a kind whose state ends in a sequence field
/// ([`sequence_state_header`]) kept in a structure that can capture it: the header, if
/// the sequence is big enough to be worth a capture and `begin` began one; `None`
/// means encode the state at once.
pub fn begin_sequence_capture(
    leading: &[(&str, &str)],
    field: &str,
    len: usize,
    begin: impl FnOnce() -> bool,
) -> Option<Vec<u8>> {
    // Only a state serde would not write itself, and only once a capture began: a
    // refused one must not cost the header's allocation (room for every item).
    if len < CAPTURE_FROM || u32::try_from(len).is_err() || !begin() {
        return None;
    }
    sequence_state_header(leading, field, len)
}

/// The canonical encoding of an object's serde form, for [`SharedObject::state`].
pub fn encode_state<T: serde::Serialize + ?Sized>(state: &T) -> Vec<u8> {
    rmp_serde::to_vec_named(state).unwrap_or_else(|e| format!("unencodable state: {e}").into_bytes())
}

/// Builds a dict from `**kwargs`-style pairs.
pub fn keywords_to_dict(keywords: Vec<(String, Value)>) -> Result<Dict, WireError> {
    Dict::from_pairs(keywords.into_iter().map(|(k, v)| (Value::Str(k.into()), v)))
}

#[cfg(test)]
mod tests {
    use super::*;

    const GET: MethodSpec = MethodSpec::optional("get", &["block", "timeout"], 0);
    const SETITEM: MethodSpec = MethodSpec::new("__setitem__", &["key", "value"]);

    #[test]
    fn a_decoded_call_binds_in_its_own_buffer() {
        // The native decoder leaves room for the parameters a call leaves out, so that a
        // `put(item)` binds without a second allocation.
        use agora_proto::native::{self, Op, Request};
        const PUT: MethodSpec = MethodSpec::optional("put", &["item", "block", "timeout"], 1);
        let call = Op::Call { object: 1, method: "put".into(), args: native::Args::positional(vec![Value::Int(7)]) };
        let mut bytes = Vec::new();
        native::encode_request(&Request { id: 1, op: call }, &mut bytes).unwrap();
        let Op::Call { args, .. } = native::decode_request(&bytes).unwrap().op else { panic!("a call") };
        let positional = args.positional;
        let buffer = positional.as_ptr() as usize;
        let mut args = bind(&PUT, positional, vec![]).unwrap();
        assert_eq!(args.values.as_ptr() as usize, buffer);
        assert_eq!((args.take(0), args.get(1), args.get(2)), (Some(Value::Int(7)), None, None));
    }

    #[test]
    fn a_bound_calls_buffer_goes_to_the_next_decoded_call() {
        use agora_proto::native::{self, Op, Request};
        let decode = || {
            let call = Op::Call {
                object: 1,
                method: "__getitem__".into(),
                args: native::Args::positional(vec![Value::Int(7)]),
            };
            let mut bytes = Vec::new();
            native::encode_request(&Request { id: 1, op: call }, &mut bytes).unwrap();
            let Op::Call { args, .. } = native::decode_request(&bytes).unwrap().op else { panic!("a call") };
            args.positional
        };
        let first = bind(&SETITEM, decode(), vec![("value".into(), Value::None)]).unwrap();
        let buffer = first.values.as_ptr() as usize;
        drop(first);
        let second = decode();
        assert_eq!(second.as_ptr() as usize, buffer, "the buffer was reused");
    }

    #[test]
    fn a_method_of_more_than_64_parameters_is_refused() {
        const MANY: [&str; 65] = ["p"; 65];
        const WIDE: MethodSpec = MethodSpec::optional("wide", &MANY, 0);
        let Err(e) = bind(&WIDE, vec![], vec![]) else { panic!("bound") };
        assert_eq!(e.code, ErrorCode::TypeError);
        assert!(e.message.contains("at most 64"), "{}", e.message);
    }

    #[test]
    fn keywords_fill_named_slots_leaving_holes() {
        let mut args = bind(&GET, vec![], vec![("timeout".into(), Value::Float(0.2))]).unwrap();
        assert!(args.get(0).is_none());
        assert_eq!(args.take(1), Some(Value::Float(0.2)));
    }

    #[test]
    fn var_positional_keeps_every_extra_argument() {
        const ANY: MethodSpec = MethodSpec::optional("incr", &["by"], 0).with_var_positional();
        let mut args = bind(&ANY, vec![Value::Int(1), Value::Int(2), Value::Int(3)], vec![]).unwrap();
        assert_eq!(args.take(0), Some(Value::Int(1)));
        assert_eq!(args.take_rest(1), vec![Value::Int(2), Value::Int(3)]);
        let mut none = bind(&ANY, vec![], vec![]).unwrap();
        assert!(none.take_rest(0).is_empty());
    }

    #[test]
    fn python_messages_for_mismatches() {
        let msg = |r: Result<Args, WireError>| r.unwrap_err().message;
        assert_eq!(
            msg(bind(&SETITEM, vec![Value::Int(1)], vec![])),
            "__setitem__() missing required argument: 'value'"
        );
        assert_eq!(
            msg(bind(&GET, vec![Value::None, Value::None, Value::None], vec![])),
            "get() takes from 0 to 2 positional arguments but 3 were given"
        );
        assert_eq!(
            msg(bind(&GET, vec![Value::None], vec![("block".into(), Value::None)])),
            "get() got multiple values for argument 'block'"
        );
        assert_eq!(
            msg(bind(&GET, vec![], vec![("nope".into(), Value::None)])),
            "get() got an unexpected keyword argument 'nope'"
        );
    }
}
