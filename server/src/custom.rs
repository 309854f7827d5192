//! Custom kinds: a program that embeds the server registers its own Rust types under
//! a type name, the way Python's `BaseManager.register(typeid, callable)` does.
//!
//! A custom type implements [`CustomObject`]: one `call` that dispatches on the method
//! name with [`Value`] arguments. A [`CustomKind`] pairs it with its type name, the
//! names of the methods clients may call, and a factory that builds an instance from
//! constructor arguments. Registered on the server's [`Config`](crate::Config) (or the
//! embedded manager's builder), the kind is then served like a built-in one:
//!
//! - Rust clients reach it through the generic proxy,
//!   `manager.object("Counter", "hits", ())` / `manager.new_object("Counter", (5,))`,
//!   and `call("incr", (1,))`;
//! - CPython clients through `BaseManager.register("Counter")` and the AutoProxy it
//!   builds from the method names this server reports;
//! - `agora ls`, `agora get` and `agora stats` show it with its type name.
//!
//! Each object is driven by the engine like every other kind, one call at a time, so
//! a call is atomic with respect to the other calls on the same object. A custom
//! method cannot block (it never parks): it answers at once. Every custom method
//! counts as a state change (none is declared read-only). A method that panics fails
//! with an internal error and leaves the object usable; the panic does not take the
//! server down.
//!
//! A custom object's state is opaque to the server: its canonical form (what the
//! engine compares) is the encoding of its [`CustomObject::snapshot`], so a type whose
//! snapshot leaves something out cannot be told apart on that part.
//!
//! ```
//! use agora_server::custom::{CustomKind, CustomObject};
//! use agora_server::proto::{Value, WireError};
//!
//! /// A counter whose increments happen on the server, atomically.
//! struct Counter(i64);
//!
//! impl CustomObject for Counter {
//!     fn call(&mut self, method: &str, args: Vec<Value>) -> Result<Value, WireError> {
//!         match method {
//!             "incr" => {
//!                 let by = args.first().and_then(Value::as_index).unwrap_or(1);
//!                 self.0 += by;
//!                 Ok(Value::Int(self.0))
//!             }
//!             "get" => Ok(Value::Int(self.0)),
//!             _ => unreachable!("only registered methods are dispatched"),
//!         }
//!     }
//!
//!     fn snapshot(&self) -> Value {
//!         Value::Int(self.0)
//!     }
//! }
//!
//! let counter = CustomKind::new("Counter", &["incr", "get"], |args: Vec<Value>| {
//!     Ok(Counter(args.first().and_then(Value::as_index).unwrap_or(0)))
//! });
//! let mut config = agora_server::Config::new(vec!["127.0.0.1:0".parse().unwrap()], "key");
//! config.custom.register(counter);
//! ```
//!
//! Arguments are positional only: `call(&mut self, method, args)` receives them in
//! order, and a keyword argument from a Python client is refused with Python's
//! `TypeError` wording. The method names are fixed per kind at registration, so that
//! both dialects can list them (AutoProxy builds one Python method per name) and the
//! server can reject an unknown method before the object sees it.
//!
//! Registration leaks each kind's method table once (a few bytes per registered
//! method name): the server's method tables are `&'static` and shared by every object
//! of a kind. Register kinds at startup, not per request.

use std::collections::BTreeMap;
use std::sync::Arc;

use agora_proto::native::Kind;
use agora_proto::{ErrorCode, Value, WireError};

use crate::engine::Ctx;
use crate::object::{encode_state, Args, MethodSpec, Outcome, SharedObject};

/// A Rust type served as a shared object of a custom kind.
///
/// The server calls it one call at a time, so `&mut self` is all the synchronization
/// it needs. See the [module docs](self) for an example.
pub trait CustomObject: Send + 'static {
    /// Runs `method` (always one of the names the kind was registered with) with the
    /// caller's positional arguments, and returns its result. Return a [`WireError`]
    /// to raise an error in the client: `WireError::type_error(…)` raises `TypeError`
    /// in Python and gives `agora_client::Error::TypeMismatch` in Rust,
    /// `WireError::value_error(…)` `ValueError`, and so on.
    fn call(&mut self, method: &str, args: Vec<Value>) -> Result<Value, WireError>;

    /// A copy of the whole state as a plain value: what `agora get NAME` prints and a
    /// Python client's `proxy._getvalue()` returns, and (encoded) the object's state
    /// as the server compares it. `None` unless overridden.
    fn snapshot(&self) -> Value {
        Value::None
    }

    /// The object's Python `repr` (what `str(proxy)` shows in Python); `None` for the
    /// default, `<TYPEID object>`.
    fn repr(&self) -> Option<String> {
        None
    }

    /// The number of items, if the type has a size (`agora ls` shows it).
    fn size(&self) -> Option<usize> {
        None
    }
}

/// Builds an instance of a custom kind from the constructor's positional arguments.
type Factory = dyn Fn(Vec<Value>) -> Result<Box<dyn CustomObject>, WireError> + Send + Sync;

/// A custom kind: a type name, the methods clients may call, and a factory. Cheap to
/// clone. Register it with [`CustomKinds::register`] (on
/// [`Config::custom`](crate::Config::custom)) or the embedded manager's
/// `Builder::register` (`agora::embedded::Builder::register`, in the `agora` crate).
#[derive(Clone)]
pub struct CustomKind {
    typeid: String,
    methods: &'static [MethodSpec],
    constructor: &'static MethodSpec,
    factory: Arc<Factory>,
}

impl std::fmt::Debug for CustomKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let methods: Vec<&str> = self.methods.iter().map(|m| m.name).collect();
        f.debug_struct("CustomKind").field("typeid", &self.typeid).field("methods", &methods).finish()
    }
}

impl CustomKind {
    /// A kind named `typeid` whose objects answer `methods`, built by `factory` from
    /// the constructor's positional arguments (an error from the factory fails the
    /// create, and the client sees it).
    ///
    /// # Panics
    ///
    /// Programming errors panic with the reason: an empty `typeid`, one that names a
    /// built-in kind in any case (`dict`, `queue`, `Lock`…) or agora's `Iterator`, an
    /// empty or duplicated method name, or one starting with `#` (reserved by the
    /// Python protocol).
    pub fn new<T, F>(typeid: impl Into<String>, methods: &[&str], factory: F) -> CustomKind
    where
        T: CustomObject,
        F: Fn(Vec<Value>) -> Result<T, WireError> + Send + Sync + 'static,
    {
        let typeid = typeid.into();
        assert!(!typeid.is_empty(), "a custom kind needs a type name");
        assert!(
            matches!(Kind::parse(&typeid), Kind::Other(_)) && typeid != crate::objects::iterator::TYPEID,
            "'{typeid}' is the name of a built-in kind; register custom kinds under another name"
        );
        let mut specs = Vec::with_capacity(methods.len());
        for (i, &name) in methods.iter().enumerate() {
            assert!(!name.is_empty(), "custom kind '{typeid}': empty method name");
            assert!(!name.starts_with('#'), "custom kind '{typeid}': method names may not start with '#' ({name})");
            assert!(!methods[..i].contains(&name), "custom kind '{typeid}': method '{name}' listed twice");
            let name: &'static str = Box::leak(name.to_owned().into_boxed_str());
            // Never `.read_only()`: the server cannot tell what a user's method changes,
            // so every custom call is a state change, and may grow the object.
            specs.push(MethodSpec::optional(name, &[], 0).with_var_positional().grows());
        }
        let methods: &'static [MethodSpec] = Box::leak(specs.into_boxed_slice());
        let constructor: &'static MethodSpec = Box::leak(Box::new(
            MethodSpec::optional(Box::leak(typeid.clone().into_boxed_str()), &[], 0).with_var_positional(),
        ));
        let factory: Arc<Factory> =
            Arc::new(move |args| factory(args).map(|object| Box::new(object) as Box<dyn CustomObject>));
        CustomKind { typeid, methods, constructor, factory }
    }

    /// The type name.
    pub fn typeid(&self) -> &str {
        &self.typeid
    }

    /// The names of the methods clients may call.
    pub fn method_names(&self) -> impl Iterator<Item = &'static str> {
        self.methods.iter().map(|m| m.name)
    }

    /// The constructor's signature (any positional arguments), for the kind table.
    pub(crate) fn constructor(&self) -> &'static MethodSpec {
        self.constructor
    }

    /// Builds a new object from constructor arguments bound against
    /// [`CustomKind::constructor`].
    pub(crate) fn construct(&self, mut args: Args) -> Result<Box<dyn SharedObject>, WireError> {
        let inner = guarded(&self.typeid, format_args!("its constructor"), || (self.factory)(args.take_rest(0)))?;
        Ok(Box::new(CustomState { kind: Kind::Other(self.typeid.clone()), methods: self.methods, inner }))
    }
}

/// The custom kinds a server knows, by type name. Cheap to clone.
#[derive(Clone, Default)]
pub struct CustomKinds(Arc<BTreeMap<String, CustomKind>>);

impl std::fmt::Debug for CustomKinds {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_set().entries(self.0.keys()).finish()
    }
}

impl CustomKinds {
    /// Adds `kind`.
    ///
    /// # Panics
    ///
    /// If a kind with the same type name is already registered.
    pub fn register(&mut self, kind: CustomKind) {
        let kinds = Arc::make_mut(&mut self.0);
        assert!(!kinds.contains_key(&kind.typeid), "custom kind '{}' is registered twice", kind.typeid);
        kinds.insert(kind.typeid.clone(), kind);
    }

    /// The kind registered under `typeid`.
    pub fn get(&self, typeid: &str) -> Option<&CustomKind> {
        self.0.get(typeid)
    }

    /// Every registered kind, by type name.
    pub fn iter(&self) -> impl Iterator<Item = &CustomKind> {
        self.0.values()
    }

    /// True when no kind is registered.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// A custom object as the server drives it.
struct CustomState {
    kind: Kind,
    methods: &'static [MethodSpec],
    inner: Box<dyn CustomObject>,
}

impl SharedObject for CustomState {
    fn kind(&self) -> Kind {
        self.kind.clone()
    }

    fn methods(&self) -> &'static [MethodSpec] {
        self.methods
    }

    fn call(&mut self, _ctx: &mut Ctx<'_>, method: &str, mut args: Args) -> Result<Outcome, WireError> {
        let inner = &mut self.inner;
        guarded(self.kind.as_str(), format_args!("method '{method}'"), || inner.call(method, args.take_rest(0)))
            .map(Outcome::Ready)
    }

    fn snapshot(&self) -> Value {
        let inner = &self.inner;
        guarded(self.kind.as_str(), format_args!("snapshot"), || Ok(inner.snapshot())).unwrap_or_default()
    }

    /// A custom object's state is opaque (a user's Rust type, not serde): its
    /// snapshot is the best canonical form there is, so that is what is encoded.
    fn state(&self) -> Vec<u8> {
        encode_state(&self.snapshot())
    }

    fn repr(&self) -> String {
        let inner = &self.inner;
        let default = || format!("<{} object>", self.kind);
        guarded(self.kind.as_str(), format_args!("repr"), || Ok(inner.repr())).ok().flatten().unwrap_or_else(default)
    }

    fn size(&self) -> Option<usize> {
        let inner = &self.inner;
        guarded(self.kind.as_str(), format_args!("size"), || Ok(inner.size())).ok().flatten()
    }
}

/// Runs custom code, turning a panic into an internal error (and a log line) instead
/// of a poisoned object and a dead connection.
fn guarded<R>(
    typeid: &str,
    what: std::fmt::Arguments<'_>,
    f: impl FnOnce() -> Result<R, WireError>,
) -> Result<R, WireError> {
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)) {
        Ok(result) => result,
        Err(panic) => {
            let message = panic
                .downcast_ref::<&str>()
                .map(|s| (*s).to_owned())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "(no message)".to_owned());
            tracing::error!(typeid, what = %what, panic = %message, "custom object panicked");
            Err(WireError::new(ErrorCode::Internal, format!("{what} of custom kind '{typeid}' panicked: {message}")))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::Harness;
    use crate::object::bind;
    use crate::objects;

    struct Tally(Vec<Value>);

    impl CustomObject for Tally {
        fn call(&mut self, method: &str, args: Vec<Value>) -> Result<Value, WireError> {
            match method {
                "add" => {
                    self.0.extend(args);
                    Ok(Value::Int(self.0.len() as i64))
                }
                "boom" => panic!("kaboom"),
                _ => Err(WireError::value_error("bad")),
            }
        }

        fn snapshot(&self) -> Value {
            Value::List(self.0.clone())
        }

        fn size(&self) -> Option<usize> {
            Some(self.0.len())
        }
    }

    fn tally_kind() -> CustomKind {
        CustomKind::new("Tally", &["add", "boom", "fail"], |args: Vec<Value>| {
            if args.len() > 2 {
                return Err(WireError::type_error("Tally() takes at most 2 arguments"));
            }
            Ok(Tally(args))
        })
    }

    fn kinds() -> CustomKinds {
        let mut kinds = CustomKinds::default();
        kinds.register(tally_kind());
        kinds
    }

    fn tally() -> Kind {
        Kind::Other("Tally".into())
    }

    /// Creates an object the way the engine does: the kind's constructor signature,
    /// the arguments bound against it, then [`objects::construct`].
    fn create(kinds: &CustomKinds, kind: &Kind, positional: Vec<Value>) -> Result<Box<dyn SharedObject>, WireError> {
        let spec = objects::constructor(kind, kinds).ok_or_else(|| objects::unsupported_kind(kind))?;
        objects::construct(kind, bind(spec, positional, vec![])?, kinds)
    }

    /// Calls a method the way the engine does: looked up in the object's method table
    /// (the engine's `NoSuchMethod` error when it is not there), bound, then run.
    fn call(
        h: &mut Harness,
        object: &mut dyn SharedObject,
        method: &str,
        positional: Vec<Value>,
        keywords: Vec<(String, Value)>,
    ) -> Result<Value, WireError> {
        let Some(spec) = object.methods().iter().find(|m| m.name == method) else {
            let message = format!("'{}' object has no method '{method}'", object.kind());
            return Err(WireError::new(ErrorCode::NoSuchMethod, message));
        };
        match object.call(&mut h.ctx(1), method, bind(spec, positional, keywords)?)? {
            Outcome::Ready(value) => Ok(value),
            Outcome::Parked => panic!("{method} parked"),
        }
    }

    #[test]
    fn custom_objects_are_built_and_called_by_name() {
        let mut h = Harness::default();
        let mut e = create(&kinds(), &tally(), vec![Value::Int(1)]).unwrap();
        let n = call(&mut h, &mut *e, "add", vec![Value::Int(2), Value::Int(3)], vec![]).unwrap();
        assert_eq!(n, Value::Int(3));
        assert_eq!(e.snapshot(), Value::List(vec![Value::Int(1), Value::Int(2), Value::Int(3)]));
        assert_eq!(e.size(), Some(3));
        assert_eq!(e.repr(), "<Tally object>");
        assert_eq!(e.kind(), tally());
        assert_eq!(e.methods().iter().map(|m| m.name).collect::<Vec<_>>(), vec!["add", "boom", "fail"]);
        assert_eq!(call(&mut h, &mut *e, "fail", vec![], vec![]).unwrap_err().code, ErrorCode::ValueError);
        let unknown = call(&mut h, &mut *e, "nope", vec![], vec![]).unwrap_err();
        assert_eq!(
            (unknown.code, unknown.message.as_str()),
            (ErrorCode::NoSuchMethod, "'Tally' object has no method 'nope'")
        );
        let kw = call(&mut h, &mut *e, "add", vec![], vec![("x".into(), Value::None)]).unwrap_err();
        assert_eq!(kw.message, "add() got an unexpected keyword argument 'x'");
    }

    #[test]
    fn custom_methods_are_state_changes_and_the_state_is_the_snapshot() {
        let mut h = Harness::default();
        let mut e = create(&kinds(), &tally(), vec![]).unwrap();
        assert!(e.methods().iter().all(|m| !m.read_only && !m.stores && m.grows));
        assert!(!e.holds_session_state());
        let before = e.state();
        assert_eq!(before, encode_state(&Value::List(vec![])));
        call(&mut h, &mut *e, "add", vec![Value::Int(1)], vec![]).unwrap();
        assert_ne!(e.state(), before);
        assert_eq!(e.state(), create(&kinds(), &tally(), vec![Value::Int(1)]).unwrap().state());
        assert!(h.parked().is_none() && h.deliveries().is_empty(), "a custom call never parks");
    }

    #[test]
    fn a_panicking_method_fails_and_leaves_the_object_usable() {
        let mut h = Harness::default();
        let mut e = create(&kinds(), &tally(), vec![]).unwrap();
        let err = call(&mut h, &mut *e, "boom", vec![], vec![]).unwrap_err();
        assert_eq!(err.code, ErrorCode::Internal);
        assert!(err.message.contains("kaboom"), "{}", err.message);
        assert!(call(&mut h, &mut *e, "add", vec![Value::None], vec![]).is_ok());
    }

    #[test]
    fn constructor_errors_and_unknown_kinds() {
        let kinds = kinds();
        let err = create(&kinds, &tally(), vec![Value::None; 3]).err().expect("an error");
        assert_eq!(err.code, ErrorCode::TypeError);
        let nope = Kind::Other("Nope".into());
        let err = create(&kinds, &nope, vec![]).err().expect("an error");
        assert_eq!(err.code, ErrorCode::Unsupported);
        let err = objects::construct(&nope, Args::from_values("Nope", vec![]), &kinds).err().expect("an error");
        assert_eq!(err.code, ErrorCode::Unsupported);
        assert!(objects::constructor(&tally(), &CustomKinds::default()).is_none(), "only registered kinds are built");
        let spec = tally_kind().constructor();
        assert!(bind(spec, vec![Value::None; 10], vec![]).is_ok(), "constructors take any positional arguments");
    }

    #[test]
    #[should_panic(expected = "built-in kind")]
    fn built_in_names_are_refused() {
        CustomKind::new("queue", &[], |_| Ok(Tally(vec![])));
    }

    #[test]
    #[should_panic(expected = "registered twice")]
    fn a_type_name_is_registered_once() {
        let mut kinds = CustomKinds::default();
        kinds.register(tally_kind());
        kinds.register(tally_kind());
    }
}
