//! References to managed objects inside values.
//!
//! A reference travels exactly as CPython pickles a proxy inside a value (spec §3.6):
//! `RebuildProxy(ProxyClass, Token(typeid, address, ident), 'pickle', kwds)`. The same
//! form serves both dialects: a native client passes a lock to `Condition(lock)` this
//! way, and a Python client's nested proxy arrives this way. The server recognises a
//! reference by its ident (lowercase hex of the [`ObjectId`]), never by the address.

use crate::native::ObjectId;
use crate::value::{Build, Object, Value};

const MANAGERS: &str = "multiprocessing.managers";

/// A reference to a managed object.
#[derive(Debug, Clone, PartialEq)]
pub struct ObjectRef {
    /// The object's id.
    pub id: ObjectId,
    /// Its typeid (`"Lock"`, `"dict"`…).
    pub typeid: String,
    /// The manager address the sender used (kept so it can be echoed back verbatim).
    pub address: Value,
    /// The client proxy class (`ListProxy`, `AutoProxy`…), as the sender named it.
    pub proxy_class: String,
}

impl ObjectRef {
    /// A reference as a native client makes one (proxy class `AutoProxy`, no address).
    pub fn new(id: ObjectId, typeid: &str) -> ObjectRef {
        ObjectRef { id, typeid: typeid.to_owned(), address: Value::None, proxy_class: "AutoProxy".to_owned() }
    }

    /// The pickle-shaped value: `RebuildProxy(ProxyClass, Token(...), 'pickle', {})`.
    pub fn to_value(&self) -> Value {
        let token = Value::Object(Box::new(Object {
            module: MANAGERS.into(),
            qualname: "Token".into(),
            build: Build::NewObj(vec![]),
            state: Some(Value::Tuple(vec![
                Value::Str(self.typeid.as_str().into()),
                self.address.clone(),
                Value::Str(format!("{:x}", self.id).into()),
            ])),
            list_items: vec![],
            dict_items: vec![],
        }));
        let class = Value::Object(Box::new(Object {
            module: MANAGERS.into(),
            qualname: self.proxy_class.clone(),
            build: Build::Global,
            state: None,
            list_items: vec![],
            dict_items: vec![],
        }));
        Value::reduce(
            MANAGERS,
            "RebuildProxy",
            vec![class, token, Value::Str("pickle".into()), Value::Dict(Default::default())],
        )
    }

    /// Reads a reference; `None` if `value` is not one.
    pub fn from_value(value: &Value) -> Option<ObjectRef> {
        let Value::Object(rebuild) = value else { return None };
        if rebuild.module != MANAGERS || rebuild.qualname != "RebuildProxy" {
            return None;
        }
        let Build::Reduce(args) = &rebuild.build else { return None };
        let (Some(Value::Object(class)), Some(token)) = (args.first(), args.get(1)) else { return None };
        let mut found = token_fields(token)?;
        found.proxy_class = class.qualname.clone();
        Some(found)
    }
}

/// Reads a bare `Token` (as `get_methods` sends it): typeid, address, id.
pub fn token_fields(token: &Value) -> Option<ObjectRef> {
    let Value::Object(token) = token else { return None };
    if token.module != MANAGERS || token.qualname != "Token" {
        return None;
    }
    let fields = match (&token.build, &token.state) {
        (_, Some(Value::Tuple(state))) => state,
        (Build::Reduce(args), None) => args,
        _ => return None,
    };
    let [Value::Str(typeid), address, Value::Str(ident)] = fields.as_slice() else { return None };
    let id = ObjectId::from_str_radix(ident, 16).ok()?;
    Some(ObjectRef { id, typeid: typeid.to_string(), address: address.clone(), proxy_class: String::new() })
}

/// The ids of every object referenced inside `value`.
#[inline]
pub fn referenced_ids(value: &Value, out: &mut Vec<u64>) {
    // Scalars (most arguments) hold no reference: answer them without a call.
    if matches!(
        value,
        Value::List(_) | Value::Tuple(_) | Value::Dict(_) | Value::Set(_) | Value::FrozenSet(_) | Value::Object(_)
    ) {
        collect_ids(value, out);
    }
}

fn collect_ids(value: &Value, out: &mut Vec<u64>) {
    match value {
        Value::List(items) | Value::Tuple(items) => items.iter().for_each(|v| referenced_ids(v, out)),
        Value::Dict(dict) => dict.iter().for_each(|(k, v)| {
            referenced_ids(k, out);
            referenced_ids(v, out);
        }),
        Value::Set(set) | Value::FrozenSet(set) => set.iter().for_each(|v| referenced_ids(v, out)),
        Value::Object(object) => {
            if let Some(reference) = ObjectRef::from_value(value) {
                if !out.contains(&reference.id) {
                    out.push(reference.id);
                }
                return;
            }
            visit_object(object, &mut |v| referenced_ids(v, out));
        }
        _ => {}
    }
}

/// Runs `f` on every value inside an opaque object.
pub fn visit_object(object: &Object, f: &mut dyn FnMut(&Value)) {
    match &object.build {
        Build::Global => {}
        Build::Reduce(args) | Build::NewObj(args) => args.iter().for_each(&mut *f),
        Build::NewObjEx(args, kwargs) => {
            args.iter().for_each(&mut *f);
            kwargs.iter().for_each(|(k, v)| {
                f(k);
                f(v)
            });
        }
    }
    if let Some(state) = &object.state {
        f(state);
    }
    object.list_items.iter().for_each(&mut *f);
    object.dict_items.iter().for_each(|(k, v)| {
        f(k);
        f(v)
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_references_anywhere_once() {
        let r = ObjectRef::new(0xab, "list").to_value();
        let value = Value::List(vec![
            Value::Int(1),
            r.clone(),
            Value::Tuple(vec![r.clone(), ObjectRef::new(0xcd, "dict").to_value()]),
        ]);
        let mut ids = Vec::new();
        referenced_ids(&value, &mut ids);
        assert_eq!(ids, vec![0xab, 0xcd]);
    }

    #[test]
    fn round_trip() {
        let r = ObjectRef::new(0xabc, "Lock");
        let back = ObjectRef::from_value(&r.to_value()).unwrap();
        assert_eq!(back, r);
    }

    #[test]
    fn other_values_are_not_references() {
        assert_eq!(ObjectRef::from_value(&Value::Int(1)), None);
        assert_eq!(ObjectRef::from_value(&Value::reduce("builtins", "slice", vec![])), None);
        let bad_ident = Value::reduce(
            MANAGERS,
            "RebuildProxy",
            vec![
                Value::reduce(MANAGERS, "AutoProxy", vec![]),
                Value::reduce(MANAGERS, "Token", vec![Value::Str("Lock".into()), Value::None, Value::Str("zz".into())]),
            ],
        );
        assert_eq!(ObjectRef::from_value(&bad_ident), None);
    }

    #[test]
    fn token_by_reduce_is_accepted() {
        let token =
            Value::reduce(MANAGERS, "Token", vec![Value::Str("dict".into()), Value::None, Value::Str("ff".into())]);
        assert_eq!(token_fields(&token).unwrap().id, 0xff);
    }
}
