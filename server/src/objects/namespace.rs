//! The shared `Namespace` (Python's `SyncManager.Namespace(**kwds)`): named
//! attributes read, set and deleted through `__getattribute__`, `__setattr__` and
//! `__delattr__`, with CPython 3.11's error texts.
//!
//! Only stored attributes exist: unlike CPython, class attributes such as `__dict__`
//! are not reachable (the Python proxy never sends `_` names anyway).

use agora_proto::native::Kind;
use agora_proto::value::Dict;
use agora_proto::{ErrorCode, Value, WireError};
use indexmap::IndexMap;
use serde::{Deserialize, Serialize};

use crate::engine::Ctx;
use crate::object::{encode_state, Args, MethodSpec, Outcome, SharedObject};

/// The kind's constructor and methods, declared in [`agora_proto::methods::namespace`].
pub use agora_proto::methods::namespace::CONSTRUCTOR;
use agora_proto::methods::namespace::METHODS;

/// A shared namespace: attributes in the order they were first set.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct NamespaceObject {
    #[serde(with = "ordered")]
    attributes: IndexMap<String, Value>,
}

/// Serde for the attributes: `(name, value)` pairs in their order.
mod ordered {
    use agora_proto::Value;
    use indexmap::IndexMap;
    use serde::ser::SerializeSeq;
    use serde::{Deserialize, Deserializer, Serializer};

    /// Writes the attributes as a sequence of `(name, value)` pairs, in order.
    pub fn serialize<S: Serializer>(map: &IndexMap<String, Value>, serializer: S) -> Result<S::Ok, S::Error> {
        let mut seq = serializer.serialize_seq(Some(map.len()))?;
        for entry in map {
            seq.serialize_element(&entry)?;
        }
        seq.end()
    }

    /// Reads the pairs back, in order.
    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<IndexMap<String, Value>, D::Error> {
        Ok(Vec::<(String, Value)>::deserialize(deserializer)?.into_iter().collect())
    }
}

impl NamespaceObject {
    /// `Namespace(**kwds)`.
    pub fn new(mut args: Args) -> Result<NamespaceObject, WireError> {
        Ok(NamespaceObject { attributes: args.take_keywords().into_iter().collect() })
    }

    /// Runs one method; `__setattr__` and `__delattr__` return `None`.
    fn dispatch(&mut self, method: &str, mut args: Args) -> Result<Value, WireError> {
        let name = attribute_name(args.required(0))?;
        match method {
            "__getattribute__" => self.attributes.get(&name).cloned().ok_or_else(|| no_attribute(&name)),
            "__setattr__" => {
                self.attributes.insert(name, args.required(1));
                Ok(Value::None)
            }
            "__delattr__" => {
                self.attributes.shift_remove(&name).map(|_| Value::None).ok_or_else(|| no_attribute(&name))
            }
            other => Err(WireError::new(ErrorCode::Internal, format!("Namespace has no method '{other}'"))),
        }
    }
}

/// An attribute name, which must be a str.
fn attribute_name(name: Value) -> Result<String, WireError> {
    match name {
        Value::Str(name) => Ok(name.into_string()),
        other => Err(WireError::type_error(format!("attribute name must be string, not '{}'", other.type_name()))),
    }
}

/// CPython's `AttributeError` for a missing attribute.
fn no_attribute(name: &str) -> WireError {
    WireError::new(ErrorCode::AttributeError, format!("'Namespace' object has no attribute '{name}'"))
}

impl SharedObject for NamespaceObject {
    fn kind(&self) -> Kind {
        Kind::Namespace
    }

    fn methods(&self) -> &'static [MethodSpec] {
        METHODS
    }

    fn call(&mut self, _ctx: &mut Ctx<'_>, method: &str, args: Args) -> Result<Outcome, WireError> {
        self.dispatch(method, args).map(Outcome::from)
    }

    fn state(&self) -> Vec<u8> {
        encode_state(self)
    }

    /// The attributes as a dict of str keys, in insertion order.
    fn snapshot(&self) -> Value {
        let mut dict = Dict::new();
        for (name, value) in &self.attributes {
            // Str keys are always hashable.
            let _ = dict.insert(Value::Str(name.clone().into()), value.clone());
        }
        Value::Dict(dict)
    }

    /// `Namespace(a=1, b=2)` like `managers.Namespace.__repr__`: `_` names hidden, and
    /// the `name=repr` texts sorted (as texts, not by name).
    fn repr(&self) -> String {
        let mut shown: Vec<String> = self
            .attributes
            .iter()
            .filter(|(name, _)| !name.starts_with('_'))
            .map(|(name, value)| format!("{name}={}", value.py_repr()))
            .collect();
        shown.sort();
        format!("Namespace({})", shown.join(", "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::objects::sequence::testing::{assert_error, assert_py_eq, bind_kw, call, s};

    fn namespace(keywords: Vec<(&str, Value)>) -> NamespaceObject {
        NamespaceObject::new(bind_kw(&CONSTRUCTOR, vec![], keywords).unwrap()).unwrap()
    }

    #[test]
    fn constructor_takes_keywords_only() {
        let error = bind_kw(&CONSTRUCTOR, vec![Value::Int(1)], vec![]).unwrap_err();
        assert_eq!(error.code, ErrorCode::TypeError);
        assert_eq!(namespace(vec![]).repr(), "Namespace()");
    }

    #[test]
    fn attributes_are_read_set_and_deleted() {
        let mut ns = namespace(vec![("a", Value::Int(1))]);
        assert_py_eq(&call(&mut ns, "__getattribute__", vec![s("a")]).unwrap(), &Value::Int(1));
        assert_py_eq(&call(&mut ns, "__setattr__", vec![s("b"), s("x")]).unwrap(), &Value::None);
        assert_py_eq(&call(&mut ns, "__getattribute__", vec![s("b")]).unwrap(), &s("x"));
        call(&mut ns, "__delattr__", vec![s("a")]).unwrap();
        assert_eq!(ns.repr(), "Namespace(b='x')");
        assert_eq!(ns.kind(), Kind::Namespace);
    }

    #[test]
    fn missing_attributes_are_attribute_errors() {
        let mut ns = namespace(vec![]);
        let text = "'Namespace' object has no attribute 'nope'";
        assert_error(call(&mut ns, "__getattribute__", vec![s("nope")]), ErrorCode::AttributeError, text);
        assert_error(call(&mut ns, "__delattr__", vec![s("nope")]), ErrorCode::AttributeError, text);
    }

    #[test]
    fn names_must_be_strings() {
        let mut ns = namespace(vec![]);
        let text = "attribute name must be string, not 'int'";
        assert_error(call(&mut ns, "__getattribute__", vec![Value::Int(5)]), ErrorCode::TypeError, text);
        assert_error(call(&mut ns, "__setattr__", vec![Value::Int(5), Value::None]), ErrorCode::TypeError, text);
        assert_error(call(&mut ns, "__delattr__", vec![Value::Int(5)]), ErrorCode::TypeError, text);
    }

    /// CPython: `repr(Namespace(b=2, a=1, _c=3, a1=4))` is `Namespace(a1=4, a=1, b=2)`.
    #[test]
    fn repr_sorts_texts_and_hides_private_names() {
        let ns =
            namespace(vec![("b", Value::Int(2)), ("a", Value::Int(1)), ("_c", Value::Int(3)), ("a1", Value::Int(4))]);
        assert_eq!(ns.repr(), "Namespace(a1=4, a=1, b=2)");
    }

    #[test]
    fn snapshot_keeps_every_attribute_in_order() {
        let ns = namespace(vec![("b", Value::Int(2)), ("_c", Value::Int(3))]);
        assert_eq!(ns.snapshot().py_repr(), "{'b': 2, '_c': 3}");
    }

    #[test]
    fn state_keeps_the_attribute_order_and_round_trips() {
        let ns = namespace(vec![("b", Value::Int(2)), ("_c", Value::Int(3))]);
        let back: NamespaceObject = rmp_serde::from_slice(&ns.state()).unwrap();
        assert_eq!(back.snapshot().py_repr(), "{'b': 2, '_c': 3}");
        assert_eq!(back.state(), ns.state());
        assert_ne!(namespace(vec![("_c", Value::Int(3)), ("b", Value::Int(2))]).state(), ns.state());
        let marks: Vec<(&str, bool, bool)> = METHODS.iter().map(|m| (m.name, m.read_only, m.stores)).collect();
        assert_eq!(
            marks,
            [("__getattribute__", true, false), ("__setattr__", false, true), ("__delattr__", false, false)]
        );
    }
}
