//! The replies of CPython's manager protocol (spec §3.2, §3.5): `#RETURN`, `#ERROR`
//! with a real exception object, `#TRACEBACK` with text, `#PROXY` with a Token.

use agora_proto::value::{Build, Object};
use agora_proto::{pickle, ErrorCode, Value, WireError};

/// One reply to a CPython client.
#[derive(Debug)]
pub enum Reply {
    /// `('#RETURN', value)`.
    Return(Value),
    /// `('#ERROR', exception)` for errors that are Python exceptions, else
    /// `('#TRACEBACK', text)` (agora's own errors become text, as CPython's server does).
    Error(WireError),
    /// `('#TRACEBACK', text)`.
    Traceback(String),
    /// `('#PROXY', (exposed, Token(typeid, address, ident)))`.
    Proxy {
        /// The new object's exposed method names.
        exposed: &'static [&'static str],
        /// Its typeid (the client builds the proxy its registry has for it).
        typeid: String,
        /// Its ident.
        ident: String,
    },
}

impl Reply {
    /// The reply as a pickle.
    pub fn to_pickle(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(64);
        self.write_pickle(&mut out);
        out
    }

    /// Appends the pickled reply to `out` (a returned value is written where it is,
    /// not copied).
    pub fn write_pickle(&self, out: &mut Vec<u8>) {
        let (kind, payload) = match self {
            Reply::Return(v) => return write_return(v, out),
            Reply::Error(e) => match exception(e) {
                Some(exc) => ("#ERROR", exc),
                None => ("#TRACEBACK", Value::Str(traceback_for(e).into())),
            },
            Reply::Traceback(text) => ("#TRACEBACK", Value::Str(text.clone().into())),
            Reply::Proxy { exposed, typeid, ident } => {
                let names = Value::Tuple(exposed.iter().map(|n| Value::Str((*n).to_owned().into())).collect());
                // The client replaces the Token's address with its own, so none is needed.
                ("#PROXY", Value::Tuple(vec![names, pickle::token(typeid, Value::None, ident)]))
            }
        };
        pickle::encode_tagged_into(kind, &payload, out)
    }
}

/// Appends the pickled `('#RETURN', value)` to `out`: [`Reply::Return`]'s encoding,
/// for a writer that holds only a borrowed value.
pub fn write_return(value: &Value, out: &mut Vec<u8>) {
    pickle::encode_tagged_into("#RETURN", value, out)
}

/// A traceback text in CPython's shape, which `RemoteError` shows to the user.
pub fn traceback(exc_type: &str, message: &str) -> String {
    format!("Traceback (most recent call last):\n  File \"<agora server>\", in <module>\n{exc_type}: {message}\n")
}

/// The reply to an ident that names no live object: CPython's `KeyError`, saying so
/// when the object was lost in a server restart.
pub fn unknown_ident(engine: &crate::engine::Engine, id: u64, ident: &str) -> Reply {
    let missing = engine.missing_object(id);
    let message = if missing.message.contains("restart") {
        format!("'{ident}': {}", missing.message)
    } else {
        format!("'{ident}'")
    };
    Reply::Traceback(traceback("KeyError", &message))
}

/// The traceback text for an agora error that has no Python exception type.
fn traceback_for(e: &WireError) -> String {
    traceback(&format!("agora.{:?}", e.code), &e.message)
}

fn global(module: &str, name: &str) -> Value {
    Value::Object(Box::new(Object {
        module: module.to_owned(),
        qualname: name.to_owned(),
        build: Build::Global,
        state: None,
        list_items: vec![],
        dict_items: vec![],
    }))
}

/// The exception object an error travels as in `#ERROR`, if it is a Python exception.
fn exception(e: &WireError) -> Option<Value> {
    let (module, name) = e.code.python_exception()?;
    let args = match e.code {
        ErrorCode::KeyError => vec![e.detail.clone().unwrap_or_else(|| Value::Str(e.message.clone().into()))],
        ErrorCode::StopIteration | ErrorCode::Empty | ErrorCode::Full | ErrorCode::BrokenBarrier => vec![],
        // queue.ShutDown exists from CPython 3.13 on; an older client could not unpickle
        // it. Send the class looked up at unpickling time, falling back to RuntimeError
        // (`raise cls` instantiates it).
        ErrorCode::ShutDown => {
            let module = Value::reduce("builtins", "__import__", vec![Value::Str("queue".into())]);
            let fallback = global("builtins", "RuntimeError");
            return Some(Value::reduce("builtins", "getattr", vec![module, Value::Str("ShutDown".into()), fallback]));
        }
        _ => vec![Value::Str(e.message.clone().into())],
    };
    Some(pickle::exception(module, name, args))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn python_exceptions_travel_as_error_and_others_as_traceback() {
        let key = Reply::Error(WireError::key_error(Value::Str("k".into())));
        let decoded = pickle::decode(&key.to_pickle()).unwrap();
        let Value::Tuple(parts) = decoded else { panic!() };
        assert_eq!(parts[0], Value::Str("#ERROR".into()));
        assert_eq!(parts[1], pickle::exception("builtins", "KeyError", vec![Value::Str("k".into())]));

        let agora = Reply::Error(WireError::new(ErrorCode::LimitExceeded, "too big"));
        let Value::Tuple(parts) = pickle::decode(&agora.to_pickle()).unwrap() else { panic!() };
        assert_eq!(parts[0], Value::Str("#TRACEBACK".into()));
        let Value::Str(text) = &parts[1] else { panic!() };
        assert!(text.ends_with("agora.LimitExceeded: too big\n"), "{text}");
    }
}
