//! The contract between the server core and each object kind.
//!
//! Every kind (one module under [`crate::objects`]) implements [`SharedObject`]: a table
//! of its methods ([`MethodSpec`], with Python parameter names) and a `call` that runs
//! one method against the object's state. The core looks the method up, binds the
//! caller's positional and keyword arguments to parameters the way Python does
//! ([`bind`]), holds the object's lock for the call (no `.await` inside), and turns the
//! result into a reply for whichever dialect asked.
//!
//! Object modules own their state and semantics; they must not touch sockets,
//! sessions or the registry.

use agora_proto::native::Kind;
use agora_proto::value::Dict;
use agora_proto::{ErrorCode, Value, WireError};

/// One method of an object kind, as Python declares it.
#[derive(Debug, Clone, Copy)]
pub struct MethodSpec {
    /// The method's name (`"__getitem__"`, `"append"`, `"incr"`).
    pub name: &'static str,
    /// Parameter names in order (without `self`).
    pub params: &'static [&'static str],
    /// How many leading parameters are required.
    pub required: usize,
    /// True if the method takes `**kwargs` beyond its named parameters.
    pub var_keywords: bool,
    /// True if the method takes `*args` beyond its named parameters (delivered in
    /// [`Args::take_rest`]): the methods of custom kinds, which take any arguments.
    pub var_positional: bool,
}

impl MethodSpec {
    /// A method whose parameters are all required.
    pub const fn new(name: &'static str, params: &'static [&'static str]) -> MethodSpec {
        MethodSpec { name, params, required: params.len(), var_keywords: false, var_positional: false }
    }

    /// A method whose first `required` parameters are required and the rest optional.
    pub const fn optional(name: &'static str, params: &'static [&'static str], required: usize) -> MethodSpec {
        MethodSpec { name, params, required, var_keywords: false, var_positional: false }
    }

    /// The same method, also taking `**kwargs` (delivered in [`Args::take_keywords`]).
    pub const fn with_var_keywords(self) -> MethodSpec {
        MethodSpec { var_keywords: true, ..self }
    }

    /// The same method, also taking `*args` (delivered in [`Args::take_rest`]).
    pub const fn with_var_positional(self) -> MethodSpec {
        MethodSpec { var_positional: true, ..self }
    }
}

/// Arguments bound to a method's parameters: one slot per parameter (empty where an
/// optional parameter was not given), plus the leftover keywords of a `**kwargs` method.
#[derive(Debug, Clone)]
pub struct Args {
    method: &'static str,
    slots: Vec<Option<Value>>,
    keywords: Vec<(String, Value)>,
}

impl Args {
    /// The method these arguments were bound for (for error messages).
    pub fn method(&self) -> &'static str {
        self.method
    }

    /// The argument for parameter `index`, if given.
    pub fn get(&self, index: usize) -> Option<&Value> {
        self.slots.get(index).and_then(Option::as_ref)
    }

    /// Takes the argument for parameter `index`, if given.
    pub fn take(&mut self, index: usize) -> Option<Value> {
        self.slots.get_mut(index).and_then(Option::take)
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
        let start = index.min(self.slots.len());
        self.slots.drain(start..).flatten().collect()
    }

    /// Takes the leftover keyword arguments of a `**kwargs` method.
    pub fn take_keywords(&mut self) -> Vec<(String, Value)> {
        std::mem::take(&mut self.keywords)
    }

    /// Arguments for tests and internal calls: the given values fill the first slots.
    pub fn from_values(method: &'static str, values: Vec<Value>) -> Args {
        Args { method, slots: values.into_iter().map(Some).collect(), keywords: Vec::new() }
    }
}

/// Binds positional and keyword arguments to `spec`'s parameters the way Python does,
/// with Python's `TypeError` messages for every mismatch.
pub fn bind(spec: &MethodSpec, positional: Vec<Value>, keywords: Vec<(String, Value)>) -> Result<Args, WireError> {
    let name = spec.name;
    let max = spec.params.len();
    if positional.len() > max && !spec.var_positional {
        let takes = if spec.required == max { format!("{max}") } else { format!("from {} to {max}", spec.required) };
        return Err(bad_args(format!(
            "{name}() takes {takes} positional argument{} but {} were given",
            if max == 1 { "" } else { "s" },
            positional.len()
        )));
    }
    let mut slots: Vec<Option<Value>> = positional.into_iter().map(Some).collect();
    if slots.len() < max {
        slots.resize(max, None);
    }
    let mut extra = Vec::new();
    for (key, value) in keywords {
        match spec.params.iter().position(|p| *p == key) {
            Some(i) if slots[i].is_some() => {
                return Err(bad_args(format!("{name}() got multiple values for argument '{key}'")))
            }
            Some(i) => slots[i] = Some(value),
            None if spec.var_keywords => extra.push((key, value)),
            None => return Err(bad_args(format!("{name}() got an unexpected keyword argument '{key}'"))),
        }
    }
    if let Some(missing) = (0..spec.required).find(|&i| slots[i].is_none()) {
        return Err(bad_args(format!("{name}() missing required argument: '{}'", spec.params[missing])));
    }
    Ok(Args { method: name, slots, keywords: extra })
}

/// Argument-binding failures travel as `TypeError`, as in Python.
fn bad_args(message: String) -> WireError {
    WireError::new(ErrorCode::TypeError, message)
}

/// What a method call produced.
#[derive(Debug)]
pub enum Outcome {
    /// The call finished with this value.
    Ready(Value),
    /// The call waits; the object keeps the matching [`crate::waiter::Waiter`].
    Park(crate::waiter::Parked),
}

impl From<Value> for Outcome {
    fn from(value: Value) -> Outcome {
        Outcome::Ready(value)
    }
}

/// Who is calling: what an object needs to know about the caller.
#[derive(Debug, Clone, Copy)]
pub struct Caller {
    /// The calling session.
    pub session: u64,
}

/// Lets the core hand an object to code that knows its concrete type (a Condition
/// driving the Lock it was given). Implemented for every `SharedObject` automatically.
pub trait AsAny {
    /// The object as `Any`, for downcasting.
    fn as_any_mut(&mut self) -> &mut dyn std::any::Any;
}

impl<T: std::any::Any> AsAny for T {
    fn as_any_mut(&mut self) -> &mut dyn std::any::Any {
        self
    }
}

/// A shared object of one kind. Implementations keep their whole state inside and are
/// driven under the object's lock, so each call is atomic (linearizable).
pub trait SharedObject: AsAny + Send + 'static {
    /// The object's kind.
    fn kind(&self) -> Kind;

    /// The methods this kind exposes, with their Python signatures.
    fn methods(&self) -> &'static [MethodSpec];

    /// Runs one method. `args` were bound against the spec of `method` from
    /// [`SharedObject::methods`], so required slots are filled and counts are right.
    fn call(&mut self, caller: Caller, method: &str, args: Args) -> Result<Outcome, WireError>;

    /// A copy of the whole state as a plain value (`_getvalue()`, `agora get`).
    fn snapshot(&self) -> Value;

    /// Python's `repr` of the referent (what `str(proxy)` shows).
    fn repr(&self) -> String;

    /// The number of items, for kinds that have a size (`agora ls`).
    fn size(&self) -> Option<usize> {
        None
    }

    /// The deadline of the parked call `ticket` passed. Remove its waiter and return
    /// what the call answers on timeout; `None` if the waiter was already completed
    /// (the core then reads that completion) or must keep waiting without a deadline
    /// (a condition wait re-acquiring its lock). Runs under the object's lock.
    fn expire(&mut self, ticket: u64) -> Option<crate::waiter::Completion> {
        let _ = ticket;
        None
    }

    /// The caller of parked call `ticket` is gone (cancelled or disconnected). Remove
    /// its waiter; `delivered` is what was handed to it in the meantime and never
    /// reached it — take it back (an item to the head of the queue, a permit…).
    /// Runs under the object's lock.
    fn abandon(&mut self, caller: Caller, ticket: u64, delivered: Option<Value>) {
        let _ = (caller, ticket, delivered);
    }

    /// Called once, right after creation, with a handle on the object's own entry: for
    /// objects that act on their own later (a queue expiring leases on a timer). Hold it
    /// weakly, or the object keeps itself alive.
    fn bind_self(&mut self, me: std::sync::Weak<crate::registry::ObjectEntry>) {
        let _ = me;
    }

    /// The session ended (closed, crashed, or timed out): release everything it held.
    fn session_ended(&mut self, session: u64) {
        let _ = session;
    }
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
