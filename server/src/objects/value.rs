//! The shared `Value` (Python's `SyncManager.Value(typecode, value)`): one value with
//! `get` and `set`, plus agora's atomic `add` and `compare_and_set`.
//!
//! Like CPython's `managers.Value`, it keeps the typecode only for its `repr` (and
//! `_getvalue()`, through [`SharedObject::typecode`]) and does no type checking:
//! `Value('i', 'text')` is fine. This module also owns
//! `add_numbers`, the numeric `+` behind `add` here and `incr` on dicts.

use agora_proto::native::Kind;
use agora_proto::{ErrorCode, Value, WireError};
use serde::{Deserialize, Serialize};

use crate::engine::Ctx;
use crate::object::{encode_state, Args, MethodSpec, Outcome, SharedObject};

/// The kind's constructor and methods, declared in [`agora_proto::methods::value`].
pub use agora_proto::methods::value::CONSTRUCTOR;
use agora_proto::methods::value::METHODS;

/// A shared value and the typecode it was created with.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ValueObject {
    typecode: Value,
    value: Value,
}

impl ValueObject {
    /// `Value(typecode, value, lock=True)`: both are kept as given; `lock` is ignored
    /// (every call is atomic anyway).
    pub fn new(mut args: Args) -> Result<ValueObject, WireError> {
        Ok(ValueObject { typecode: args.required(0), value: args.required(1) })
    }

    /// Runs one method.
    fn dispatch(&mut self, method: &str, mut args: Args) -> Result<Value, WireError> {
        match method {
            "get" => Ok(self.value.clone()),
            "set" => {
                self.value = args.required(0);
                Ok(Value::None)
            }
            "add" => {
                self.value = add_numbers(&self.value, &args.required(0))?;
                Ok(self.value.clone())
            }
            "compare_and_set" => {
                let swap = self.value.py_eq(&args.required(0));
                if swap {
                    self.value = args.required(1);
                }
                Ok(Value::Bool(swap))
            }
            other => Err(WireError::new(ErrorCode::Internal, format!("Value has no method '{other}'"))),
        }
    }
}

/// `current + delta` for numbers only (int, bool, float): Python's `+`, and Python's
/// `TypeError` wording for anything else (agora's atomic adds never concatenate).
pub(crate) fn add_numbers(current: &Value, delta: &Value) -> Result<Value, WireError> {
    // Two ints that do not overflow (a counter, almost always) without the general
    // numeric tower's checks and conversions.
    if let (Value::Int(a), Value::Int(b)) = (current, delta) {
        if let Some(sum) = a.checked_add(*b) {
            return Ok(Value::Int(sum));
        }
    }
    let is_number = |v: &Value| matches!(v, Value::Bool(_) | Value::Int(_) | Value::BigInt(_) | Value::Float(_));
    if !is_number(current) || !is_number(delta) {
        return Err(WireError::type_error(format!(
            "unsupported operand type(s) for +: '{}' and '{}'",
            current.type_name(),
            delta.type_name()
        )));
    }
    current.py_add(delta)
}

impl SharedObject for ValueObject {
    fn kind(&self) -> Kind {
        Kind::Value
    }

    fn methods(&self) -> &'static [MethodSpec] {
        METHODS
    }

    fn call(&mut self, _ctx: &mut Ctx<'_>, method: &str, args: Args) -> Result<Outcome, WireError> {
        self.dispatch(method, args).map(Outcome::from)
    }

    fn snapshot(&self) -> Value {
        self.value.clone()
    }

    fn state(&self) -> Vec<u8> {
        encode_state(self)
    }

    /// The typecode it was created with (for CPython's `_getvalue()`, which returns a
    /// `managers.Value(typecode, value)`).
    fn typecode(&self) -> Option<Value> {
        Some(self.typecode.clone())
    }

    /// `Value('i', 5)`, as `managers.Value.__repr__` prints it.
    fn repr(&self) -> String {
        format!("Value({}, {})", self.typecode.py_repr(), self.value.py_repr())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::objects::sequence::testing::{assert_error, assert_py_eq, bind_kw, call, s};

    fn value(typecode: &str, v: Value) -> ValueObject {
        ValueObject::new(bind_kw(&CONSTRUCTOR, vec![s(typecode), v], vec![]).unwrap()).unwrap()
    }

    #[test]
    fn constructor_needs_typecode_and_value() {
        let error = bind_kw(&CONSTRUCTOR, vec![s("i")], vec![]).unwrap_err();
        assert_eq!(error.message, "Value() missing required argument: 'value'");
        let with_lock = bind_kw(&CONSTRUCTOR, vec![s("i"), Value::Int(1)], vec![("lock", Value::Bool(false))]);
        assert_eq!(ValueObject::new(with_lock.unwrap()).unwrap().repr(), "Value('i', 1)");
    }

    #[test]
    fn get_and_set_without_type_checks() {
        let mut v = value("i", Value::Int(5));
        assert_py_eq(&call(&mut v, "get", vec![]).unwrap(), &Value::Int(5));
        assert_py_eq(&call(&mut v, "set", vec![s("text")]).unwrap(), &Value::None);
        assert_py_eq(&v.snapshot(), &s("text"));
        assert_eq!(v.repr(), "Value('i', 'text')");
        assert_eq!(v.kind(), Kind::Value);
    }

    #[test]
    fn an_int_sum_past_i64_becomes_a_big_int() {
        let mut v = value("q", Value::Int(i64::MAX));
        let past = Value::from_bigint(agora_proto::value::BigInt::from(i64::MAX) + 1);
        assert_py_eq(&call(&mut v, "add", vec![Value::Int(1)]).unwrap(), &past);
        assert_py_eq(&call(&mut v, "add", vec![Value::Int(-1)]).unwrap(), &Value::Int(i64::MAX));
        let mut low = value("q", Value::Int(i64::MIN));
        let below = Value::from_bigint(agora_proto::value::BigInt::from(i64::MIN) - 1);
        assert_py_eq(&call(&mut low, "add", vec![Value::Int(-1)]).unwrap(), &below);
    }

    #[test]
    fn add_is_numeric() {
        let mut v = value("d", Value::Int(1));
        assert_py_eq(&call(&mut v, "add", vec![Value::Int(2)]).unwrap(), &Value::Int(3));
        assert_py_eq(&call(&mut v, "add", vec![Value::Float(0.5)]).unwrap(), &Value::Float(3.5));
        assert_py_eq(&call(&mut v, "add", vec![Value::Bool(true)]).unwrap(), &Value::Float(4.5));
        assert_error(
            call(&mut v, "add", vec![s("x")]),
            ErrorCode::TypeError,
            "unsupported operand type(s) for +: 'float' and 'str'",
        );
        let mut text = value("u", s("a"));
        assert_error(
            call(&mut text, "add", vec![s("b")]),
            ErrorCode::TypeError,
            "unsupported operand type(s) for +: 'str' and 'str'",
        );
        assert_py_eq(&text.snapshot(), &s("a"));
    }

    #[test]
    fn compare_and_set_swaps_only_on_equality() {
        let mut v = value("i", Value::Int(1));
        assert_py_eq(
            &call(&mut v, "compare_and_set", vec![Value::Int(2), Value::Int(3)]).unwrap(),
            &Value::Bool(false),
        );
        assert_py_eq(&v.snapshot(), &Value::Int(1));
        assert_py_eq(
            &call(&mut v, "compare_and_set", vec![Value::Float(1.0), Value::Int(3)]).unwrap(),
            &Value::Bool(true),
        );
        assert_py_eq(&v.snapshot(), &Value::Int(3));
    }

    #[test]
    fn the_typecode_is_reported_through_the_contract() {
        let v = value("d", Value::Float(1.5));
        let object: &dyn SharedObject = &v;
        assert_py_eq(&object.typecode().unwrap(), &s("d"));
        let back: ValueObject = rmp_serde::from_slice(&v.state()).unwrap();
        assert_eq!(back.repr(), "Value('d', 1.5)");
        assert_eq!(back.state(), v.state());
        assert_ne!(value("i", Value::Float(1.5)).state(), v.state(), "the typecode is state");
        let marks: Vec<(&str, bool, bool)> = METHODS.iter().map(|m| (m.name, m.read_only, m.stores)).collect();
        assert_eq!(
            marks,
            [("get", true, false), ("set", false, true), ("add", false, false), ("compare_and_set", false, true)]
        );
    }
}
