//! The runtime typeid `agora`: named objects for stock CPython clients, chosen at run
//! time rather than by the operator at server start (`--expose`).
//!
//! A client registers the typeid once and calls one method per kind, named as
//! `SyncManager`'s typeid, with the object's name first and the constructor's own
//! arguments after it (they count only when the object is created):
//!
//! ```python
//! SyncManager.register("agora")
//! m = SyncManager(address, authkey); m.connect()
//! jobs = m.agora().dict("jobs")            # a DictProxy on the dict named "jobs"
//! q = m.agora().Queue("tasks", 100)        # an AutoProxy on the queue "tasks"
//! hits = m.agora().Value("hits", "i", 0)   # a ValueProxy
//! ```
//!
//! Each method gets-or-creates the named object — the very object a native client
//! opens by that name — and answers `#PROXY` with a token of the kind's own typeid
//! (`dict`, `Queue`…), as CPython's server answers a method listed in
//! `method_to_typeid`: the client builds the proxy its own registry has for that
//! typeid, so the result is an ordinary proxy. A name that holds another kind is a
//! `TypeError` saying which kind it holds.
//!
//! The `agora` object itself holds nothing: every `create('agora')` answers the same
//! ident, [`IDENT`], which is not hex and so can never name a managed object; incref
//! and decref of it do nothing. A proxy of it therefore survives server restarts.

use agora_proto::native::{Args, Kind};
use agora_proto::{ErrorCode, Value, WireError};

use super::reply::{traceback, Reply};
use super::{exposed, ident, PyConn};

/// The typeid clients register (`SyncManager.register("agora")`).
pub const TYPEID: &str = "agora";

/// The ident of the one `agora` object (never a valid object ident: not hex).
pub const IDENT: &str = "agora";

/// Its methods: one per built-in kind, named as the kind's `SyncManager` typeid (the
/// `exposed` list its `create` answers, from which AutoProxy builds the methods).
pub const METHODS: [&str; 15] = [
    "dict",
    "list",
    "set",
    "Value",
    "Array",
    "Namespace",
    "Queue",
    "JoinableQueue",
    "Lock",
    "RLock",
    "Semaphore",
    "BoundedSemaphore",
    "Condition",
    "Event",
    "Barrier",
];

/// What a client is told when it asks for a typeid agora does not serve.
pub fn unknown_typeid(typeid: &str) -> String {
    let case_hint = Kind::BUILTIN
        .iter()
        .find(|k| k.as_str().eq_ignore_ascii_case(typeid))
        .map(|k| format!(" (typeids are case-sensitive: did you mean '{k}'?)"))
        .unwrap_or_default();
    format!(
        "'{typeid}': agora serves no typeid '{typeid}'{case_hint}. It serves SyncManager's typeids ({}), \
         typeids its operator exposes (agora serve --expose {typeid}=KIND:NAME), and the runtime typeid \
         '{TYPEID}', which opens any named object by kind and name: SyncManager.register('{TYPEID}'), \
         then m.{TYPEID}().dict('jobs') or m.{TYPEID}().Queue('tasks'). See README.md, \"Use it from Python\".",
        METHODS.join(", ")
    )
}

impl PyConn<'_> {
    /// A call on the `agora` object: open the named object of the method's kind and
    /// answer a proxy on it.
    pub(super) fn runtime_call(&mut self, method: &str, args: Vec<Value>, kwargs: Vec<(String, Value)>) -> Reply {
        match method {
            "__repr__" | "__str__" => {
                return Reply::Return(Value::Str(
                    format!("<agora: named objects by kind and name ({})>", METHODS.join(", ")).into(),
                ))
            }
            "#GETVALUE" => {
                return Reply::Traceback(traceback("TypeError", "the agora object has no value to copy"));
            }
            _ => {}
        }
        let Some(kind) = METHODS.contains(&method).then(|| Kind::parse(method)) else {
            return Reply::Traceback(traceback(
                "AttributeError",
                &format!("the agora object has no method '{method}' (it has one per kind: {})", METHODS.join(", ")),
            ));
        };
        let (name, args) = match name_and_args(method, args, kwargs) {
            Ok(split) => split,
            Err(e) => return Reply::Error(e),
        };
        match self.open(kind.clone(), Some(name.clone()), args) {
            Ok((object, kind)) => Reply::Proxy {
                exposed: exposed::exposed(&kind),
                typeid: kind.as_str().to_owned(),
                ident: ident(object),
            },
            Err(e) if e.code == ErrorCode::WrongKind => Reply::Error(WireError::new(
                ErrorCode::TypeError,
                format!(
                    "{}: a name holds one object of one kind; open it with the method of its kind, or use \
                     another name for a {kind}",
                    e.message
                ),
            )),
            Err(e) => Reply::Error(e),
        }
    }
}

/// Splits `method(name, *ctor_args, **ctor_kwargs)` into the name and the constructor's
/// arguments (`name` may also come as a keyword).
fn name_and_args(
    method: &str,
    mut args: Vec<Value>,
    mut kwargs: Vec<(String, Value)>,
) -> Result<(String, Args), WireError> {
    let by_keyword = kwargs.iter().position(|(k, _)| k == "name");
    let name = match (args.is_empty(), by_keyword) {
        (false, None) => args.remove(0),
        (true, Some(at)) => kwargs.remove(at).1,
        (false, Some(_)) => {
            return Err(WireError::type_error(format!("{method}() got multiple values for argument 'name'")))
        }
        (true, None) => {
            return Err(WireError::type_error(format!(
                "{method}() missing required argument: 'name' (the object's name, e.g. {method}('jobs'))"
            )))
        }
    };
    match name {
        Value::Str(name) if !name.is_empty() => Ok((name.into_string(), Args { positional: args, keywords: kwargs })),
        Value::Str(_) => Err(WireError::new(ErrorCode::ValueError, format!("{method}(): the name must not be empty"))),
        other => Err(WireError::type_error(format!("{method}(): the name must be a str, not {}", other.type_name()))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_method_per_builtin_kind_named_as_its_typeid() {
        let names: Vec<&str> = Kind::BUILTIN.iter().map(Kind::as_str).collect();
        assert_eq!(METHODS.as_slice(), names.as_slice());
        assert!(u64::from_str_radix(IDENT, 16).is_err(), "the ident must never parse as an object id");
    }

    #[test]
    fn the_name_comes_first_and_the_rest_is_the_constructors() {
        let s = |t: &str| Value::Str(t.into());
        let (name, args) = name_and_args("Value", vec![s("hits"), s("i"), Value::Int(0)], vec![]).unwrap();
        assert_eq!((name.as_str(), args.positional), ("hits", vec![s("i"), Value::Int(0)]));
        let (name, args) =
            name_and_args("Queue", vec![], vec![("name".into(), s("q")), ("maxsize".into(), Value::Int(3))]).unwrap();
        assert_eq!((name.as_str(), args.keywords), ("q", vec![("maxsize".to_owned(), Value::Int(3))]));
        assert!(name_and_args("dict", vec![], vec![]).unwrap_err().message.contains("missing required argument"));
        assert!(name_and_args("dict", vec![Value::Int(1)], vec![]).unwrap_err().message.contains("must be a str"));
        assert!(name_and_args("dict", vec![s("")], vec![]).is_err());
    }

    #[test]
    fn an_unknown_typeid_says_what_to_do() {
        let text = unknown_typeid("Counter");
        for needle in ["'Counter'", "--expose Counter=KIND:NAME", "register('agora')", "README", "Queue"] {
            assert!(text.contains(needle), "{needle} missing from {text}");
        }
        assert!(unknown_typeid("queue").contains("did you mean 'Queue'?"));
    }
}
