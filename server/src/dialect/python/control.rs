//! The public server functions of CPython's manager (spec §3.3): `create`, `incref`,
//! `decref`, `accept_connection`, `get_methods`, `debug_info`, `number_of_objects`,
//! `dummy`, `shutdown`. Refcounts follow CPython (§4): `create` gives the object one
//! reference, each proxy holds one through `incref`/`decref`.

use agora_proto::native::{Args, Kind};
use agora_proto::{ErrorCode, Value, WireError};

use super::reply::{traceback, unknown_ident, Reply};
use super::{exposed, ident, parse_ident, runtime, After, PyConn, Request};
use crate::access::Level;
use crate::engine::{Answer, Command, Keep};

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

/// True if the one argument of `incref`/`decref` is the runtime object's ident.
fn is_runtime_ident(args: &[Value]) -> bool {
    matches!(args, [Value::Str(s)] if &**s == runtime::IDENT)
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
        let parking = &self.shared.parking;
        let engine = parking.engine();
        let at = engine.now();
        let reply = match method.as_str() {
            "dummy" => Reply::Return(Value::None),
            "accept_connection" => {
                self.persistent = true;
                Reply::Return(Value::None)
            }
            "create" => self.create(args, kwargs),
            // The runtime `agora` object is not counted: it holds nothing.
            "incref" | "decref" if is_runtime_ident(&args) => Reply::Return(Value::None),
            "incref" => match ident_arg(&args) {
                Ok((id, text)) => match self
                    .kept
                    .who
                    .object(self.shared, id, Level::Read, "take a reference to")
                    .and_then(|()| parking.run(&self.kept.session, Command::Incref { object: id, at }))
                {
                    Ok(_) => {
                        self.shared.client_refs.took(self.kept.holder, id);
                        Reply::Return(Value::None)
                    }
                    Err(e) if e.code == ErrorCode::PermissionDenied => as_traceback(e),
                    Err(_) => unknown_ident(engine, id, &text),
                },
                Err(reply) => reply,
            },
            "decref" => match ident_arg(&args) {
                Ok((id, text)) => match self
                    .kept
                    .who
                    .object(self.shared, id, Level::Read, "give back a reference to")
                    .and_then(|()| parking.run(&self.kept.session, Command::Decref { object: id, at }))
                {
                    Ok(_) => {
                        self.shared.client_refs.gave(self.kept.holder, id);
                        Reply::Return(Value::None)
                    }
                    Err(e) if e.code == ErrorCode::PermissionDenied => as_traceback(e),
                    Err(_) => unknown_ident(engine, id, &text),
                },
                Err(reply) => reply,
            },
            "get_methods" => match args.first().and_then(agora_proto::reference::token_fields) {
                Some(token) => match self
                    .kept
                    .who
                    .object(self.shared, token.id, Level::Read, "list the methods of")
                    .and_then(|()| exposed_names(self, token.id))
                {
                    Ok(names) => Reply::Return(names),
                    Err(e) => as_traceback(e),
                },
                None => Reply::Traceback(traceback("TypeError", "get_methods() expects a Token")),
            },
            // As CPython counts: objects some client (or name) holds, not those kept
            // alive only by the containers that store them.
            "number_of_objects" => {
                Reply::Return(Value::Int(engine.objects().iter().filter(|o| !o.only_held).count() as i64))
            }
            // Every object's contents: the server's admins only.
            "debug_info" => {
                match self.kept.who.server_admin(self.shared, "read debug_info (every object's contents)") {
                    Ok(()) => Reply::Return(Value::Str(self.debug_info().into())),
                    Err(e) => as_traceback(e),
                }
            }
            "shutdown" => match self.kept.who.shutdown(self.shared, self.kept.local_peer) {
                Ok(()) => return (Reply::Return(Value::None), After::Shutdown),
                Err(e) => as_traceback(e),
            },
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
        let unknown = || as_traceback(WireError::new(ErrorCode::KeyError, runtime::unknown_typeid(&typeid)));
        // `--expose get_tasks=queue:tasks`: every create finds the one named object.
        // Otherwise the runtime typeid (an operator's exposure of that name wins),
        // SyncManager's typeids, spelled exactly, or a custom kind the embedding
        // program registered; anything else is unknown (KeyError, as in CPython, but
        // saying what to do).
        let (kind, name) = match self.shared.config.exposed(&typeid) {
            Some(exposure) => (exposure.kind.clone(), Some(exposure.name.clone())),
            None if &*typeid == runtime::TYPEID => {
                let names = runtime::METHODS.iter().map(|m| Value::Str((*m).to_owned().into())).collect();
                return Reply::Return(Value::Tuple(vec![
                    Value::Str(runtime::IDENT.to_owned().into()),
                    Value::Tuple(names),
                ]));
            }
            None => match Kind::parse(&typeid) {
                kind if !matches!(kind, Kind::Other(_)) && kind.as_str() != typeid => return unknown(),
                kind => (kind, None),
            },
        };
        let args = Args { positional: args, keywords: kwargs };
        let made = match self.open(kind.clone(), name, args) {
            Err(e) if e == crate::engine::unsupported_kind(&kind) => return unknown(),
            made => made,
        };
        match made.and_then(|(object, _)| exposed_names(self, object).map(|names| (object, names))) {
            Ok((object, names)) => Reply::Return(Value::Tuple(vec![Value::Str(ident(object).into()), names])),
            Err(e) => as_traceback(e),
        }
    }

    /// Opens an object for this client with one counted reference: gets or creates the
    /// object `name` of `kind`, or creates an anonymous one. `create` and the runtime
    /// typeid ([`runtime`]) both open through here.
    pub(super) fn open(&mut self, kind: Kind, name: Option<String>, args: Args) -> Result<(u64, Kind), WireError> {
        let at = self.shared.parking.engine().now();
        match crate::dialect::open(
            self.shared,
            &self.kept.session,
            self.kept.who,
            (kind, name, args),
            Keep::Reference,
            at,
        )? {
            Answer::Opened { object, kind, .. } => {
                self.shared.client_refs.took(self.kept.holder, object);
                Ok((object, kind))
            }
            other => Err(WireError::new(ErrorCode::Internal, format!("unexpected answer {other:?}"))),
        }
    }

    /// `debug_info`: two lines per object, as CPython formats them (named objects
    /// also show their name; objects only other objects keep alive, which CPython
    /// leaves out, say so).
    fn debug_info(&self) -> String {
        let mut lines = Vec::new();
        for object in self.shared.parking.engine().objects() {
            let short: String = object.repr.chars().take(75).collect();
            let mut notes = object.name.map(|n| format!(" name={n}")).unwrap_or_default();
            if object.only_held {
                notes.push_str(" (kept alive by the objects storing it)");
            }
            lines.push(format!("  {}:       refcount={}{notes}\n    {short}", ident(object.id), object.refcount));
        }
        lines.join("\n")
    }
}

/// The exposed method names of object `id`: SyncManager's list for its typeid, or every
/// method of a custom kind (AutoProxy builds one Python method per name).
fn exposed_names(conn: &PyConn<'_>, id: u64) -> Result<Value, WireError> {
    let engine = conn.shared.parking.engine();
    let kind = engine.kind_of(id)?;
    let listed = exposed::exposed(&kind);
    let names = if listed.is_empty() { engine.method_names(id)? } else { listed.to_vec() };
    Ok(Value::Tuple(names.into_iter().map(|n| Value::Str(n.to_owned().into())).collect()))
}
