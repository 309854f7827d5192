//! The public server functions of CPython's manager (spec §3.3): `create`, `incref`,
//! `decref`, `accept_connection`, `get_methods`, `debug_info`, `number_of_objects`,
//! `dummy`, `shutdown`. Refcounts follow CPython (§4): `create` gives the object one
//! reference, each proxy holds one through `incref`/`decref`.

use agora_proto::native::Kind;
use agora_proto::{ErrorCode, Value, WireError};

use super::reply::{traceback, Reply};
use super::{exposed, ident, parse_ident, references, After, PyConn, Request};

/// The exception type name a constructor error shows in CPython's traceback.
fn exception_name(e: &WireError) -> String {
    match e.code.python_exception() {
        Some((_, name)) => name.to_owned(),
        None => format!("agora.{:?}", e.code),
    }
}

/// CPython reports every failure of a public function as a traceback.
fn as_traceback(e: WireError) -> Reply {
    Reply::Traceback(traceback(&exception_name(&e), &e.message))
}

/// The one string argument of `incref`/`decref`, parsed as an ident.
fn ident_arg(args: &[Value]) -> Result<(u64, String), Reply> {
    match args {
        [Value::Str(s)] => parse_ident(s)
            .map(|id| (id, s.to_string()))
            .ok_or_else(|| Reply::Traceback(traceback("KeyError", &format!("'{s}'")))),
        _ => Err(Reply::Traceback(traceback("TypeError", "expected one ident argument"))),
    }
}

impl PyConn<'_> {
    /// Runs a public function (a request whose ident is `None`).
    pub(super) fn control(&mut self, request: Request) -> (Reply, After) {
        let Request { method, args, kwargs, .. } = request;
        let registry = &self.shared.registry;
        let reply = match method.as_str() {
            "dummy" => Reply::Return(Value::None),
            "accept_connection" => {
                self.persistent = true;
                Reply::Return(Value::None)
            }
            "create" => self.create(args, kwargs),
            "incref" => match ident_arg(&args) {
                Ok((id, text)) => match registry.incref(id) {
                    Ok(_) => Reply::Return(Value::None),
                    Err(_) => Reply::Traceback(traceback("KeyError", &format!("'{text}'"))),
                },
                Err(reply) => reply,
            },
            "decref" => match ident_arg(&args) {
                Ok((id, text)) => match registry.get(id) {
                    // As CPython: a decref with no client reference left, on an object
                    // kept alive only by the objects holding it, is ignored.
                    Ok(entry) if entry.only_held() => Reply::Return(Value::None),
                    Ok(entry) => {
                        registry.decref(&entry);
                        Reply::Return(Value::None)
                    }
                    Err(_) => Reply::Traceback(traceback("KeyError", &format!("'{text}'"))),
                },
                Err(reply) => reply,
            },
            "get_methods" => match args.first().and_then(agora_proto::reference::token_fields) {
                Some(token) => match registry.get(token.id) {
                    Ok(entry) => Reply::Return(exposed_names(&entry)),
                    Err(e) => as_traceback(e),
                },
                None => Reply::Traceback(traceback("TypeError", "get_methods() expects a Token")),
            },
            // As CPython counts: objects some client (or name) holds, not those kept
            // alive only by the containers that store them.
            "number_of_objects" => {
                Reply::Return(Value::Int(registry.all().iter().filter(|e| !e.only_held()).count() as i64))
            }
            "debug_info" => Reply::Return(Value::Str(self.debug_info().into())),
            "shutdown" => return (Reply::Return(Value::None), After::Shutdown),
            other => Reply::Traceback(traceback("AssertionError", &format!("'{other}' unrecognized"))),
        };
        (reply, After::Continue)
    }

    /// `create(typeid, *args, **kwds)` → `(ident, exposed)`.
    fn create(&mut self, mut args: Vec<Value>, kwargs: Vec<(String, Value)>) -> Reply {
        if args.is_empty() {
            return Reply::Traceback(traceback("TypeError", "create() missing required argument: 'typeid'"));
        }
        let Value::Str(typeid) = args.remove(0) else {
            return Reply::Traceback(traceback("TypeError", "typeid must be a str"));
        };
        if let Some(why) = exposed::unsupported(&typeid) {
            return Reply::Traceback(traceback("NotImplementedError", why));
        }
        let registry = &self.shared.registry;
        let mut stored = Vec::new();
        args.iter().chain(kwargs.iter().map(|(_, v)| v)).for_each(|v| references::referenced_ids(v, &mut stored));
        let made = match self.shared.config.exposed(&typeid) {
            // `--expose get_tasks=queue:tasks`: every create finds the one named object.
            Some(exposure) => registry.open_named(&exposure.kind, &exposure.name, args, kwargs).map(|o| o.entry),
            // SyncManager's typeids, spelled exactly, or a custom kind the embedding
            // program registered; anything else is unknown (KeyError), as in CPython.
            None => match Kind::parse(&typeid) {
                kind if !matches!(kind, Kind::Other(_)) && kind.as_str() != typeid => {
                    Err(WireError::new(ErrorCode::KeyError, format!("'{typeid}'")))
                }
                kind => registry.create(&kind, args, kwargs).map_err(|e| {
                    if e == crate::objects::unsupported_kind(&kind) {
                        WireError::new(ErrorCode::KeyError, format!("'{typeid}'"))
                    } else {
                        e
                    }
                }),
            },
        };
        match made {
            Ok(entry) => {
                self.hold_all(&entry, &stored);
                Reply::Return(Value::Tuple(vec![Value::Str(ident(entry.id()).into()), exposed_names(&entry)]))
            }
            Err(e) => as_traceback(e),
        }
    }

    /// `debug_info`: two lines per object, as CPython formats them (named objects
    /// also show their name; objects only other objects keep alive, which CPython
    /// leaves out, say so).
    fn debug_info(&self) -> String {
        let mut lines = Vec::new();
        for entry in self.shared.registry.all() {
            let repr = entry.repr().unwrap_or_default();
            let short: String = repr.chars().take(75).collect();
            let mut notes = entry.name().map(|n| format!(" name={n}")).unwrap_or_default();
            if entry.only_held() {
                notes.push_str(" (kept alive by the objects storing it)");
            }
            lines.push(format!("  {}:       refcount={}{notes}\n    {short}", ident(entry.id()), entry.refcount()));
        }
        lines.join("\n")
    }
}

/// The exposed method names of an object: SyncManager's list for its typeid, or every
/// method of a custom kind (AutoProxy builds one Python method per name).
fn exposed_names(entry: &crate::registry::ObjectEntry) -> Value {
    let listed = exposed::exposed(entry.kind());
    let names = if listed.is_empty() { entry.method_names().unwrap_or_default() } else { listed.to_vec() };
    Value::Tuple(names.into_iter().map(|n| Value::Str(n.to_owned().into())).collect())
}
