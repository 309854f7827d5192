//! The pickle encoder: protocol 4, as CPython's C pickler writes it, minus FRAME and
//! the memo (CPython 3.8–3.14 load pickles without either).
//!
//! Each value takes the most compact form CPython would give it: BININT1, BININT2 or
//! BININT for ints in `i32`, LONG1 or LONG4 beyond; SHORT_BINUNICODE, BINUNICODE or
//! BINUNICODE8 by length (likewise for bytes); EMPTY_TUPLE, TUPLE1–3 or MARK…TUPLE;
//! lists, dicts and sets as an empty container filled by batches of 1000 (APPEND and
//! SETITEM for a batch of one); frozensets as MARK…FROZENSET. An [`Object`] is its
//! global (STACK_GLOBAL), its arguments and REDUCE, NEWOBJ or NEWOBJ_EX, then its list
//! items (APPENDS), dict items (SETITEMS) and state (BUILD), in the order CPython's
//! `save_reduce` writes them.
//!
//! The encoder never recurses: it keeps a stack of work to do, so any depth fits in
//! any thread stack.
//!
//! [`Object`]: crate::value::Object

use num_bigint::BigInt;

use super::opcodes as op;
use crate::value::{Build, Value};

/// CPython's batch size for APPENDS, SETITEMS and ADDITEMS.
const BATCH: usize = 1000;

/// Encodes a value as a protocol 4 pickle. Cannot fail: every [`Value`] has a pickle.
pub fn encode(value: &Value) -> Vec<u8> {
    let mut out = Vec::with_capacity(64);
    encode_into(value, &mut out);
    out
}

/// Appends the protocol 4 pickle of `value` to `out` (see [`encode`]).
pub fn encode_into(value: &Value, out: &mut Vec<u8>) {
    out.extend([op::PROTO, 4]);
    write_value(value, out);
    out.push(op::STOP);
}

/// Appends the pickle of the 2-tuple `(tag, value)` to `out`, as [`encode_into`]
/// would write it, without building the tuple (no copy of `value`): the shape of
/// every reply of CPython's manager (`('#RETURN', result)`).
pub fn encode_tagged_into(tag: &str, value: &Value, out: &mut Vec<u8>) {
    out.extend([op::PROTO, 4]);
    write_str(tag, out);
    write_value(value, out);
    out.extend([op::TUPLE2, op::STOP]);
}

/// Writes one value's opcodes (no PROTO, no STOP).
fn write_value(value: &Value, out: &mut Vec<u8>) {
    // A scalar needs no work stack (most replies are one).
    let mut then = Vec::new();
    write(value, out, &mut then);
    if then.is_empty() {
        return;
    }
    let mut todo: Vec<Task<'_>> = then.drain(..).rev().collect();
    // What one value writes after its first bytes, in order (pushed reversed on `todo`).
    while let Some(task) = todo.pop() {
        match task {
            Task::Op(code) => out.push(code),
            Task::Value(value) => {
                write(value, out, &mut then);
                todo.extend(then.drain(..).rev());
            }
        }
    }
}

/// A unit of work: a value to write, or one opcode.
#[derive(Clone, Copy)]
enum Task<'a> {
    Value(&'a Value),
    Op(u8),
}

/// Writes what `value` starts with to `out`, and pushes the rest (its children and
/// closing opcodes, in order) to `then`.
fn write<'a>(value: &'a Value, out: &mut Vec<u8>, then: &mut Vec<Task<'a>>) {
    match value {
        Value::None => out.push(op::NONE),
        Value::Bool(true) => out.push(op::NEWTRUE),
        Value::Bool(false) => out.push(op::NEWFALSE),
        Value::Int(i) => write_int(*i, out),
        Value::BigInt(n) => write_long(&n.to_signed_bytes_le(), out),
        Value::Float(f) => {
            out.push(op::BINFLOAT);
            out.extend(f.to_be_bytes());
        }
        Value::Str(s) => write_str(s, out),
        Value::Bytes(b) => {
            write_sized(b, [op::SHORT_BINBYTES, op::BINBYTES, op::BINBYTES8], out);
        }
        Value::Tuple(items) => tuple(items, then),
        Value::List(items) => {
            out.push(op::EMPTY_LIST);
            batches(items.iter(), items.len(), op::APPEND, op::APPENDS, then);
        }
        Value::Dict(dict) => {
            out.push(op::EMPTY_DICT);
            let flat = dict.iter().flat_map(|(k, v)| [k, v]);
            pair_batches(flat, dict.len(), then);
        }
        Value::Set(set) => {
            out.push(op::EMPTY_SET);
            let members: Vec<&Value> = set.iter().collect();
            for batch in members.chunks(BATCH) {
                then.push(Task::Op(op::MARK));
                then.extend(batch.iter().map(|&v| Task::Value(v)));
                then.push(Task::Op(op::ADDITEMS));
            }
        }
        Value::FrozenSet(set) => {
            out.push(op::MARK);
            then.extend(set.iter().map(Task::Value));
            then.push(Task::Op(op::FROZENSET));
        }
        Value::Object(object) => {
            write_str(&object.module, out);
            write_str(&object.qualname, out);
            out.push(op::STACK_GLOBAL);
            match &object.build {
                Build::Global => {}
                Build::Reduce(args) => {
                    tuple(args, then);
                    then.push(Task::Op(op::REDUCE));
                }
                Build::NewObj(args) => {
                    tuple(args, then);
                    then.push(Task::Op(op::NEWOBJ));
                }
                Build::NewObjEx(args, kwargs) => {
                    tuple(args, then);
                    then.push(Task::Op(op::EMPTY_DICT));
                    pair_batches(kwargs.iter().flat_map(|(k, v)| [k, v]), kwargs.len(), then);
                    then.push(Task::Op(op::NEWOBJ_EX));
                }
            }
            let items = &object.list_items;
            batches(items.iter(), items.len(), op::APPEND, op::APPENDS, then);
            let pairs = &object.dict_items;
            pair_batches(pairs.iter().flat_map(|(k, v)| [k, v]), pairs.len(), then);
            if let Some(state) = &object.state {
                then.push(Task::Value(state));
                then.push(Task::Op(op::BUILD));
            }
        }
    }
}

/// A tuple: EMPTY_TUPLE, TUPLE1–3, or MARK…TUPLE.
fn tuple<'a>(items: &'a [Value], then: &mut Vec<Task<'a>>) {
    match items.len() {
        0 => then.push(Task::Op(op::EMPTY_TUPLE)),
        n @ 1..=3 => {
            then.extend(items.iter().map(Task::Value));
            then.push(Task::Op(op::TUPLE1 + (n as u8 - 1)));
        }
        _ => {
            then.push(Task::Op(op::MARK));
            then.extend(items.iter().map(Task::Value));
            then.push(Task::Op(op::TUPLE));
        }
    }
}

/// `len` items in batches of [`BATCH`]: `one` after a batch of one item, MARK…`many`
/// around a larger one (CPython's `_batch_appends`).
fn batches<'a>(items: impl Iterator<Item = &'a Value>, len: usize, one: u8, many: u8, then: &mut Vec<Task<'a>>) {
    let mut items = items.map(Task::Value);
    let mut left = len;
    while left > 0 {
        let n = left.min(BATCH);
        left -= n;
        if n == 1 {
            then.extend(items.by_ref().take(1));
            then.push(Task::Op(one));
        } else {
            then.push(Task::Op(op::MARK));
            then.extend(items.by_ref().take(n));
            then.push(Task::Op(many));
        }
    }
}

/// `len` key/value pairs (given flat) in batches: SETITEM or MARK…SETITEMS.
fn pair_batches<'a>(flat: impl Iterator<Item = &'a Value>, len: usize, then: &mut Vec<Task<'a>>) {
    let mut flat = flat.map(Task::Value);
    let mut left = len;
    while left > 0 {
        let n = left.min(BATCH);
        left -= n;
        if n == 1 {
            then.extend(flat.by_ref().take(2));
            then.push(Task::Op(op::SETITEM));
        } else {
            then.push(Task::Op(op::MARK));
            then.extend(flat.by_ref().take(2 * n));
            then.push(Task::Op(op::SETITEMS));
        }
    }
}

/// An int in `i64`: BININT1, BININT2, BININT, or LONG1.
fn write_int(i: i64, out: &mut Vec<u8>) {
    if let Ok(small) = u8::try_from(i) {
        out.extend([op::BININT1, small]);
    } else if let Ok(small) = u16::try_from(i) {
        out.push(op::BININT2);
        out.extend(small.to_le_bytes());
    } else if let Ok(small) = i32::try_from(i) {
        out.push(op::BININT);
        out.extend(small.to_le_bytes());
    } else {
        write_long(&BigInt::from(i).to_signed_bytes_le(), out);
    }
}

/// An int as LONG1 or LONG4 from its minimal little-endian two's complement bytes.
fn write_long(digits: &[u8], out: &mut Vec<u8>) {
    match u8::try_from(digits.len()) {
        Ok(n) => out.extend([op::LONG1, n]),
        Err(_) => {
            out.push(op::LONG4);
            // An int of 2 GiB of digits cannot be in memory here; saturate regardless.
            out.extend(i32::try_from(digits.len()).unwrap_or(i32::MAX).to_le_bytes());
        }
    }
    out.extend(digits);
}

fn write_str(s: &str, out: &mut Vec<u8>) {
    write_sized(s.as_bytes(), [op::SHORT_BINUNICODE, op::BINUNICODE, op::BINUNICODE8], out);
}

/// A length-prefixed payload: 1-byte, 4-byte or 8-byte length, smallest first.
fn write_sized(payload: &[u8], [short, medium, long]: [u8; 3], out: &mut Vec<u8>) {
    let len = payload.len();
    if let Ok(n) = u8::try_from(len) {
        out.extend([short, n]);
    } else if let Ok(n) = u32::try_from(len) {
        out.push(medium);
        out.extend(n.to_le_bytes());
    } else {
        out.push(long);
        out.extend(u64::try_from(len).unwrap_or(u64::MAX).to_le_bytes());
    }
    out.extend(payload);
}
