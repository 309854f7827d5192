//! Python's pickle, as agora speaks it to unmodified CPython `multiprocessing.managers`
//! clients: [`decode`] a pickle into a [`Value`], [`encode`] a [`Value`] as a pickle.
//!
//! This module owns the pickle codec and nothing else (framing, the handshake and the
//! request/reply shapes live elsewhere). **It never executes anything**: no callable
//! named in a pickle is looked up, imported or called. A REDUCE, NEWOBJ or NEWOBJ_EX
//! becomes an opaque [`Object`] holding the global's `module` and `qualname`, the
//! arguments, and the state and items applied afterwards, and [`encode`] writes it
//! back the same way, so CPython rebuilds exactly the object it sent.
//!
//! | pickled | [`Value`] |
//! |---|---|
//! | None, bool, int, float, str, bytes | the same scalar (ints normalised: [`Value::Int`] when they fit in `i64`) |
//! | list, tuple, dict, set, frozenset | the same container (dict order kept) |
//! | `f(*args)` (REDUCE) | [`Object`] with [`Build::Reduce`]: exceptions, `slice`, `range`, `complex`, `datetime`, `Decimal`, Enum members, `RebuildProxy`… |
//! | `cls.__new__(cls, *args)` (NEWOBJ) | [`Build::NewObj`]: plain instances, namedtuples, `Token` |
//! | `cls.__new__(cls, *args, **kwargs)` (NEWOBJ_EX) | [`Build::NewObjEx`] |
//! | a global used as a value (`int`, a proxy class) | [`Build::Global`] |
//! | BUILD / APPENDS / SETITEMS on an object | its `state` / `list_items` / `dict_items` |
//! | `bytearray` (protocol 4 REDUCE, or protocol 5 BYTEARRAY8) | `REDUCE(builtins.bytearray, (bytes,))` |
//!
//! A managed-object reference inside a value is a pickled `RebuildProxy(ProxyClass,
//! Token(...), 'pickle', kwds)` call; it decodes to the shape
//! [`ObjectRef::from_value`](crate::reference::ObjectRef::from_value) reads, and the
//! shape [`ObjectRef::to_value`](crate::reference::ObjectRef::to_value) makes encodes
//! to what CPython's `RebuildProxy` accepts. [`token`] and [`exception`] build the other
//! two special values a Python reply carries.
//!
//! **Values are trees.** A pickle can share one object in several places (`[x, x]`,
//! through the memo); a [`Value`] cannot, so each place gets its own equal copy and
//! [`encode`] writes each copy out (identity is lost, equality is kept). A pickle of an
//! object that contains itself (`l = []; l.append(l)`) cannot become a tree at all and
//! is refused. Copies are bounded: decoding a memo "billion laughs" fails cleanly.
//!
//! **Never trusted.** [`decode`] checks every length against the input before it
//! allocates, bounds its stacks, never recurses, refuses nesting deeper than
//! [`MAX_DEPTH`](crate::value::MAX_DEPTH) (counted as [`Value::from_msgpack`] counts
//! it) and reports malformed input as [`ErrorCode::Protocol`](crate::ErrorCode) naming
//! the opcode and its offset. It never panics. [`encode`] does not recurse either.
//!
//! Opcodes: everything CPython 3.8–3.14 writes (protocols 2–5), plus the cheap legacy
//! ones of protocols 0–1 (text ints, floats and strings, GLOBAL, PUT/GET, DICT, LIST…;
//! Python 2 module names are renamed as CPython's `fix_imports` does). Refused: EXT1/2/4
//! (copyreg extension codes), PERSID/BINPERSID, INST/OBJ, DUP, NEXT_BUFFER and
//! READONLY_BUFFER, none of which multiprocessing writes.
//!
//! [`Object`]: crate::value::Object
//! [`Build::Reduce`]: crate::value::Build::Reduce
//! [`Build::NewObj`]: crate::value::Build::NewObj
//! [`Build::NewObjEx`]: crate::value::Build::NewObjEx
//! [`Build::Global`]: crate::value::Build::Global

mod compat;
mod decode;
mod encode;
pub mod opcodes;

#[cfg(test)]
mod cpython_tests;

pub use decode::decode;
pub use encode::{encode, encode_into, encode_tagged_into};

use crate::value::{Build, Object, Value};

/// An exception instance as CPython pickles one: `REDUCE(module.name, args)`, e.g.
/// `exception("builtins", "KeyError", vec![key])` or `exception("queue", "Empty",
/// vec![])`. (An exception with attributes, such as `__notes__`, would add a BUILD
/// state; a plain one has none.)
pub fn exception(module: &str, name: &str, args: Vec<Value>) -> Value {
    Value::reduce(module, name, args)
}

/// `multiprocessing.managers.Token(typeid, address, ident)` as CPython pickles it
/// (what a `#PROXY` reply carries): NEWOBJ with no arguments, then BUILD with the state
/// tuple `(typeid, address, ident)` (`Token` has `__slots__` and a `__getstate__`).
/// `address` is a `(host, port)` tuple, or a str for an AF_UNIX path. The same shape as
/// the token inside [`ObjectRef::to_value`](crate::reference::ObjectRef::to_value).
pub fn token(typeid: &str, address: Value, ident: &str) -> Value {
    Value::Object(Box::new(Object {
        module: "multiprocessing.managers".into(),
        qualname: "Token".into(),
        build: Build::NewObj(Vec::new()),
        state: Some(Value::Tuple(vec![Value::Str(typeid.into()), address, Value::Str(ident.into())])),
        list_items: Vec::new(),
        dict_items: Vec::new(),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reference::{token_fields, ObjectRef};
    use crate::value::{Dict, Set, MAX_DEPTH};
    use crate::ErrorCode;
    use proptest::prelude::*;

    /// Bytes from hex pairs and `'quoted'` ASCII words, separated by spaces.
    pub(super) fn bytes(text: &str) -> Vec<u8> {
        let mut out = Vec::new();
        for word in text.split_whitespace() {
            if let Some(quoted) = word.strip_prefix('\'') {
                out.extend(quoted.strip_suffix('\'').expect("closing quote").as_bytes());
            } else {
                out.push(u8::from_str_radix(word, 16).expect("hex byte"));
            }
        }
        out
    }

    /// A protocol 4 pickle with one FRAME around `body` (as CPython writes them).
    fn framed(body: &str) -> Vec<u8> {
        let body = bytes(body);
        let mut out = vec![0x80, 4, 0x95];
        out.extend((body.len() as u64).to_le_bytes());
        out.extend(body);
        out
    }

    /// Strict structural equality: same variants, same bits (unlike Python's `==`).
    pub(super) fn same(a: &Value, b: &Value) -> bool {
        format!("{a:?}") == format!("{b:?}")
    }

    fn s(text: &str) -> Value {
        Value::Str(text.into())
    }

    fn tuple(items: Vec<Value>) -> Value {
        Value::Tuple(items)
    }

    fn dict(pairs: Vec<(Value, Value)>) -> Value {
        Value::Dict(Dict::from_pairs(pairs).unwrap())
    }

    fn global(module: &str, qualname: &str) -> Value {
        Value::Object(Box::new(Object {
            module: module.into(),
            qualname: qualname.into(),
            build: Build::Global,
            state: None,
            list_items: vec![],
            dict_items: vec![],
        }))
    }

    fn check(pickle: &[u8], expected: &Value) {
        let value = decode(pickle).unwrap_or_else(|e| panic!("{e} decoding {pickle:02x?}"));
        assert!(same(&value, expected), "decoded {value:?}\nexpected {expected:?}");
        let again = decode(&encode(&value)).unwrap();
        assert!(same(&again, expected), "re-encoded {again:?}");
    }

    // ---- Appendix A and §3.5/§3.6 of the protocol spec, captured from CPython 3.11

    #[test]
    fn appendix_a_requests() {
        let dummy = bytes("80 04 95 10 00 00 00 00 00 00 00 28 4e 8c 05 64 75 6d 6d 79 94 29 7d 94 74 94 2e");
        check(&dummy, &tuple(vec![Value::None, s("dummy"), tuple(vec![]), dict(vec![])]));

        let create = framed("28 4e 8c 06 'create' 94 8c 04 'list' 94 5d 94 28 4b 01 4b 02 65 86 94 7d 94 74 94 2e");
        let args = tuple(vec![s("list"), Value::List(vec![Value::Int(1), Value::Int(2)])]);
        check(&create, &tuple(vec![Value::None, s("create"), args, dict(vec![])]));

        let incref = framed("28 4e 8c 06 'incref' 94 8c 0c '7fe47bf60f80' 94 85 94 7d 94 74 94 2e");
        check(&incref, &tuple(vec![Value::None, s("incref"), tuple(vec![s("7fe47bf60f80")]), dict(vec![])]));

        let accept = framed("28 4e 8c 11 'accept_connection' 94 8c 0b 'MainProcess' 94 85 94 7d 94 74 94 2e");
        let expected = tuple(vec![Value::None, s("accept_connection"), tuple(vec![s("MainProcess")]), dict(vec![])]);
        check(&accept, &expected);

        let append = framed("28 8c 0c '7fe47bf60f80' 94 8c 06 'append' 94 8c 01 'x' 94 85 94 7d 94 74 94 2e");
        check(&append, &tuple(vec![s("7fe47bf60f80"), s("append"), tuple(vec![s("x")]), dict(vec![])]));

        let get = framed(
            "28 8c 0c '7fe47bf614d0' 94 8c 03 'get' 94 29 7d 94 8c 07 'timeout' 94 47 3f c9 99 99 99 99 99 9a 73 74 94 2e",
        );
        let kwargs = dict(vec![(s("timeout"), Value::Float(0.2))]);
        check(&get, &tuple(vec![s("7fe47bf614d0"), s("get"), tuple(vec![]), kwargs]));
    }

    #[test]
    fn appendix_a_replies() {
        let ret = bytes("80 04 95 0e 00 00 00 00 00 00 00 8c 07 23 52 45 54 55 52 4e 94 4e 86 94 2e");
        check(&ret, &tuple(vec![s("#RETURN"), Value::None]));
        // The same reply as a server may write it: no FRAME, no MEMOIZE.
        let bare = bytes("80 04 8c 07 23 52 45 54 55 52 4e 4e 86 2e");
        check(&bare, &tuple(vec![s("#RETURN"), Value::None]));
        assert_eq!(encode(&tuple(vec![s("#RETURN"), Value::None])), bare);

        let exposed = ["__add__", "__contains__", "__imul__"];
        let mut body = String::from("8c 07 '#RETURN' 94 8c 0c '7fe47bf60f80' 94 28");
        for name in exposed {
            body += &format!(" 8c {:02x} '{name}' 94", name.len());
        }
        body += " 74 94 86 94 86 94 2e";
        let names = tuple(exposed.iter().map(|n| s(n)).collect());
        check(&framed(&body), &tuple(vec![s("#RETURN"), tuple(vec![s("7fe47bf60f80"), names])]));

        let empty = framed("8c 06 '#ERROR' 94 8c 06 '_queue' 94 8c 05 'Empty' 94 93 94 29 52 94 86 94 2e");
        check(&empty, &tuple(vec![s("#ERROR"), exception("_queue", "Empty", vec![])]));

        let index_error = bytes(
            "80 04 95 44 00 00 00 00 00 00 00 8c 06 '#ERROR' 94 8c 08 'builtins' 94 8c 0a 'IndexError' 94 93 94
             8c 17 6c 69 73 74 20 69 6e 64 65 78 20 6f 75 74 20 6f 66 20 72 61 6e 67 65 94 85 94 52 94 86 94 2e",
        );
        let expected = exception("builtins", "IndexError", vec![s("list index out of range")]);
        check(&index_error, &tuple(vec![s("#ERROR"), expected]));

        let traceback = "Traceback (most recent call last):\n  KeyError: 'nonexistent'\n";
        let mut pickle = framed("8c 0a '#TRACEBACK' 94 58");
        pickle.extend((traceback.len() as u32).to_le_bytes());
        pickle.extend(traceback.as_bytes());
        pickle.extend([0x94, 0x86, 0x94, 0x2e]);
        check(&pickle, &tuple(vec![s("#TRACEBACK"), s(traceback)]));
    }

    #[test]
    fn appendix_a_proxy_reply_carries_a_token() {
        let pickle = framed(
            "8c 06 '#PROXY' 94 28 8c 08 '__next__' 94 8c 04 'send' 94 8c 05 'throw' 94 8c 05 'close' 94 74 94
             8c 18 'multiprocessing.managers' 94 8c 05 'Token' 94 93 94 29 81 94
             8c 08 'Iterator' 94 8c 09 '127.0.0.1' 94 4d 9a b7 86 94 8c 0c '7fe47bf4ac00' 94 87 94 62 86 94 86 94 2e",
        );
        let address = tuple(vec![s("127.0.0.1"), Value::Int(47002)]);
        let tok = token("Iterator", address.clone(), "7fe47bf4ac00");
        let exposed = tuple(["__next__", "send", "throw", "close"].iter().map(|n| s(n)).collect());
        check(&pickle, &tuple(vec![s("#PROXY"), tuple(vec![exposed, tok.clone()])]));
        let found = token_fields(&tok).unwrap();
        assert_eq!((found.id, found.typeid.as_str()), (0x7fe4_7bf4_ac00, "Iterator"));
        assert!(same(&found.address, &address));
    }

    /// The client's `d['inner'] = some_list_proxy` (§3.6): a RebuildProxy argument.
    #[test]
    fn nested_proxy_argument_is_an_object_ref() {
        let pickle = framed(
            "28 8c 0c '7fe47bf61640' 94 8c 0b '__setitem__' 94 8c 05 'inner' 94
             8c 18 'multiprocessing.managers' 94 8c 0c 'RebuildProxy' 94 93 94
             28 68 03 8c 09 'ListProxy' 94 93 94 68 03 8c 05 'Token' 94 93 94 29 81 94
             8c 04 'list' 94 8c 09 '127.0.0.1' 94 4d 9a b7 86 94 8c 0c '7fe47bf60f80' 94 87 94 62
             8c 06 'pickle' 94 7d 94 74 94 52 94 86 94 7d 94 74 94 2e",
        );
        let value = decode(&pickle).unwrap();
        let Value::Tuple(request) = &value else { panic!("{value:?}") };
        let Value::Tuple(args) = &request[2] else { panic!("{value:?}") };
        let reference = ObjectRef::from_value(&args[1]).expect("an object reference");
        assert_eq!(reference.id, 0x7fe4_7bf6_0f80);
        assert_eq!((reference.typeid.as_str(), reference.proxy_class.as_str()), ("list", "ListProxy"));
        // The shape reference.rs makes is exactly the one CPython sent.
        assert!(same(&reference.to_value(), &args[1]));
        assert!(same(&decode(&encode(&value)).unwrap(), &value));
    }

    #[test]
    fn globals_as_values_and_as_callables() {
        // `int` as a value, then `range(0, 3, 1)`.
        let pickle = bytes(
            "80 04 8c 08 'builtins' 8c 03 'int' 93 8c 08 'builtins' 8c 05 'range' 93 4b 00 4b 03 4b 01 87 52 86 2e",
        );
        let range = Value::reduce("builtins", "range", vec![Value::Int(0), Value::Int(3), Value::Int(1)]);
        check(&pickle, &tuple(vec![global("builtins", "int"), range]));
    }

    #[test]
    fn object_items_and_state() {
        // OrderedDict(a=1) and deque([1, 2]) as CPython 3.11 writes them, and an
        // exception with __notes__ (REDUCE + BUILD).
        let ordered = framed("8c 0b 'collections' 94 8c 0b 'OrderedDict' 94 93 94 29 52 94 8c 01 'a' 94 4b 01 73 2e");
        let Value::Object(o) = decode(&ordered).unwrap() else { panic!() };
        assert!(same(&o.dict_items[0].0, &s("a")) && o.dict_items.len() == 1 && o.list_items.is_empty());
        let deque = framed("8c 0b 'collections' 94 8c 05 'deque' 94 93 94 29 52 94 28 4b 01 4b 02 65 2e");
        let Value::Object(o) = decode(&deque).unwrap() else { panic!() };
        assert_eq!(o.list_items.len(), 2);
        let notes = framed(
            "8c 08 'builtins' 94 8c 0a 'ValueError' 94 93 94 8c 03 'bad' 94 85 94 52 94
             7d 94 8c 09 '__notes__' 94 5d 94 8c 01 'n' 94 61 73 62 2e",
        );
        let mut expected = exception("builtins", "ValueError", vec![s("bad")]);
        if let Value::Object(o) = &mut expected {
            o.state = Some(dict(vec![(s("__notes__"), Value::List(vec![s("n")]))]));
        }
        check(&notes, &expected);
    }

    #[test]
    fn shared_sub_objects_become_copies() {
        // `s = [1]; [s, s]` and a shared str: BINGET of a memoized, later filled list.
        let pickle = framed("5d 94 28 5d 94 4b 01 61 68 01 8c 01 'x' 94 68 02 65 2e");
        let one = Value::List(vec![Value::Int(1)]);
        check(&pickle, &Value::List(vec![one.clone(), one, s("x"), s("x")]));
    }

    #[test]
    fn bytearray_both_ways() {
        let p4 = framed("8c 08 'builtins' 94 8c 09 'bytearray' 94 93 94 43 02 'ab' 94 85 94 52 94 2e");
        let p5 = bytes("80 05 95 0d 00 00 00 00 00 00 00 96 02 00 00 00 00 00 00 00 'ab' 94 2e");
        let expected = Value::reduce("builtins", "bytearray", vec![Value::Bytes(b"ab".to_vec())]);
        check(&p4, &expected);
        check(&p5, &expected);
    }

    #[test]
    fn protocol_two_names_are_renamed() {
        // pickle.dumps(range(3), 2) and pickle.dumps(KeyError('k', 1), 2) on 3.11.
        let range = bytes(
            "80 02 63 5f 5f 62 75 69 6c 74 69 6e 5f 5f 0a 78 72 61 6e 67 65 0a 71 00 4b 00 4b 03 4b 01 87 71 01 52 71 02 2e",
        );
        check(&range, &Value::reduce("builtins", "range", vec![Value::Int(0), Value::Int(3), Value::Int(1)]));
        let key_error = bytes(
            "80 02 63 65 78 63 65 70 74 69 6f 6e 73 0a 4b 65 79 45 72 72 6f 72 0a 71 00 58 01 00 00 00 6b 71 01 4b 01 86 71 02 52 71 03 2e",
        );
        check(&key_error, &exception("builtins", "KeyError", vec![s("k"), Value::Int(1)]));
        // Protocol 4 pickles are taken literally.
        let literal = bytes("80 04 8c 0b '__builtin__' 8c 06 'xrange' 93 2e");
        check(&literal, &global("__builtin__", "xrange"));
    }

    #[test]
    fn protocol_zero_text_opcodes() {
        // pickle.dumps((1, 2**70, -3, 1.5, 'h\u00e9\\', True, [None], {'a': b'x'}), 0) minus
        // the bytes (protocol 0 bytes need REDUCE of _codecs.encode), plus STRING forms.
        let pickle = b"(I1\nL1180591620717411303424L\nI-3\nF1.5\nVh\xe9\\u005c\np0\nI01\n(lp1\nNa(dp2\nVa\np3\nS'x\\'y\\n'\np4\nsS\"q\"\nU\x02zzT\x01\x00\x00\x00wtp5\n.";
        let big = Value::from_bigint("1180591620717411303424".parse().unwrap());
        let expected = tuple(vec![
            Value::Int(1),
            big,
            Value::Int(-3),
            Value::Float(1.5),
            s("h\u{e9}\\"),
            Value::Bool(true),
            Value::List(vec![Value::None]),
            dict(vec![(s("a"), s("x'y\n"))]),
            s("q"),
            s("zz"),
            s("w"),
        ]);
        check(pickle, &expected);
        let floats = tuple(vec![Value::Float(f64::NEG_INFINITY), Value::Float(f64::NAN), Value::Float(1e5)]);
        check(b"(F-inf\nFnan\nF1e5\nt.", &floats);
    }

    #[test]
    fn exception_and_token_helpers_have_cpythons_shape() {
        let Value::Object(o) = exception("queue", "Empty", vec![]) else { panic!() };
        assert_eq!((o.module.as_str(), o.qualname.as_str()), ("queue", "Empty"));
        assert_eq!(o.build, Build::Reduce(vec![]));
        // The token inside ObjectRef::to_value is the same shape as token().
        let address = tuple(vec![s("127.0.0.1"), Value::Int(5)]);
        let reference =
            ObjectRef { id: 0xab, typeid: "dict".into(), address: address.clone(), proxy_class: "DictProxy".into() };
        let Value::Object(rebuild) = reference.to_value() else { panic!() };
        let Build::Reduce(args) = &rebuild.build else { panic!() };
        assert!(same(&args[1], &token("dict", address, "ab")));
    }

    #[test]
    fn encoder_uses_the_compact_forms() {
        let cases: Vec<(Value, &str)> = vec![
            (Value::None, "4e"),
            (Value::Bool(true), "88"),
            (Value::Int(255), "4b ff"),
            (Value::Int(256), "4d 00 01"),
            (Value::Int(65536), "4a 00 00 01 00"),
            (Value::Int(-1), "4a ff ff ff ff"),
            (Value::Int(1 << 31), "8a 05 00 00 00 80 00"),
            (Value::Int(i64::MIN), "8a 08 00 00 00 00 00 00 00 80"),
            (Value::from_bigint(num_bigint::BigInt::from(1u128 << 64)), "8a 09 00 00 00 00 00 00 00 00 01"),
            (Value::Float(-0.0), "47 80 00 00 00 00 00 00 00"),
            (s("h\u{e9}llo"), "8c 06 68 c3 a9 6c 6c 6f"),
            (Value::Bytes(vec![0, 1]), "43 02 00 01"),
            (tuple(vec![]), "29"),
            (tuple(vec![Value::Int(1)]), "4b 01 85"),
            (tuple((1..=4).map(Value::Int).collect()), "28 4b 01 4b 02 4b 03 4b 04 74"),
            (Value::List(vec![]), "5d"),
            (Value::List(vec![Value::Int(1)]), "5d 4b 01 61"),
            (Value::List(vec![Value::Int(1), s("a")]), "5d 28 4b 01 8c 01 61 65"),
            (dict(vec![(s("a"), Value::Int(1)), (Value::Int(2), s("b"))]), "7d 28 8c 01 61 4b 01 4b 02 8c 01 62 75"),
            (dict(vec![(s("a"), Value::Int(1))]), "7d 8c 01 61 4b 01 73"),
            (Value::Set(Set::from_values([Value::Int(1)]).unwrap()), "8f 28 4b 01 90"),
            (Value::FrozenSet(Set::from_values([Value::Int(1)]).unwrap()), "28 4b 01 91"),
            (Value::FrozenSet(Set::new()), "28 91"),
            (global("builtins", "int"), "8c 08 'builtins' 8c 03 'int' 93"),
        ];
        for (value, expected) in cases {
            let mut want = vec![0x80, 4];
            want.extend(bytes(expected));
            want.push(0x2e);
            assert_eq!(encode(&value), want, "{value:?}");
        }
        let long = "x".repeat(256);
        assert_eq!(&encode(&s(&long))[2..7], &[0x58, 0, 1, 0, 0]);
        let huge = Value::from_bigint(num_bigint::BigInt::from(1) << 2100);
        assert_eq!(&encode(&huge)[2..7], &[0x8b, 0x07, 0x01, 0, 0]);
    }

    #[test]
    fn encoder_batches_like_cpython() {
        let items: Vec<Value> = (0..2001).map(|_| Value::None).collect();
        let pickle = encode(&Value::List(items));
        let mut want = vec![0x80, 4, 0x5d];
        for _ in 0..2 {
            want.push(0x28);
            want.extend([0x4e; 1000]);
            want.push(0x65);
        }
        want.extend([0x4e, 0x61, 0x2e]);
        assert_eq!(pickle, want);
        let set = Set::from_values((0..1001).map(|i| Value::Str(format!("s{i}").into()))).unwrap();
        let pickle = encode(&Value::Set(set));
        assert_eq!(pickle.iter().filter(|&&b| b == 0x90).count(), 2);
    }

    #[test]
    fn newobj_ex_and_items_round_trip() {
        let object = Value::Object(Box::new(Object {
            module: "m".into(),
            qualname: "C.D".into(),
            build: Build::NewObjEx(vec![Value::Int(1)], vec![(s("k"), Value::None), (s("j"), Value::Int(2))]),
            state: Some(tuple(vec![Value::None, dict(vec![(s("a"), Value::Int(1))])])),
            list_items: vec![Value::Int(1), Value::Int(2)],
            dict_items: vec![(s("x"), Value::Int(3))],
        }));
        check(&encode(&object), &object);
    }

    #[test]
    fn values_at_max_depth_round_trip_on_a_small_stack() {
        // 2 MiB, as tokio's worker threads; debug builds included.
        std::thread::Builder::new()
            .stack_size(2 << 20)
            .spawn(|| {
                let mut value = Value::None;
                for _ in 0..MAX_DEPTH {
                    value = Value::List(vec![value]);
                }
                let pickle = encode(&value);
                let back = decode(&pickle).unwrap();
                assert!(back == value);
                let deeper = Value::List(vec![value]);
                let err = decode(&encode(&deeper)).unwrap_err();
                assert_eq!(err.code, ErrorCode::Protocol);
                assert!(err.message.contains("nesting deeper than 1024"), "{}", err.message);
                // Objects count two levels (three with dict items), as in MessagePack.
                let mut object = Value::None;
                for i in 0..MAX_DEPTH / 2 {
                    object = match i % 2 {
                        0 => Value::reduce("m", "f", vec![object]),
                        _ => Value::Object(Box::new(Object {
                            module: "m".into(),
                            qualname: "C".into(),
                            build: Build::NewObj(vec![]),
                            state: Some(object),
                            list_items: vec![],
                            dict_items: vec![],
                        })),
                    };
                }
                let back = decode(&encode(&object)).unwrap();
                assert!(same(&back, &object));
                Value::from_msgpack(&back.to_msgpack()).unwrap();
                assert!(decode(&encode(&Value::List(vec![object]))).is_err());
            })
            .unwrap()
            .join()
            .unwrap();
    }

    // ---- property tests

    fn scalar() -> impl Strategy<Value = Value> {
        prop_oneof![
            Just(Value::None),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(Value::Int),
            any::<i128>().prop_map(|n| Value::from_bigint(n.into())),
            any::<f64>().prop_filter("no NaN", |f| !f.is_nan()).prop_map(Value::Float),
            ".{0,8}".prop_map(|s: String| Value::Str(s.into())),
            "[a-z]{250,260}".prop_map(|s: String| Value::Str(s.into())),
            proptest::collection::vec(any::<u8>(), 0..8).prop_map(Value::Bytes),
        ]
    }

    fn hashable() -> BoxedStrategy<Value> {
        scalar()
            .prop_recursive(2, 8, 3, |inner| {
                prop_oneof![
                    proptest::collection::vec(inner.clone(), 0..4).prop_map(Value::Tuple),
                    proptest::collection::vec(inner, 0..4)
                        .prop_map(|items| Value::FrozenSet(Set::from_values(items).unwrap())),
                ]
            })
            .boxed()
    }

    fn value() -> impl Strategy<Value = Value> {
        scalar().prop_recursive(4, 48, 6, |inner| {
            let pairs = proptest::collection::vec((hashable(), inner.clone()), 0..4);
            let name = "[a-z_.]{1,12}";
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..6).prop_map(Value::List),
                proptest::collection::vec(inner.clone(), 0..6).prop_map(Value::Tuple),
                pairs.clone().prop_map(|p| Value::Dict(Dict::from_pairs(p).unwrap())),
                proptest::collection::vec(hashable(), 0..4).prop_map(|m| Value::Set(Set::from_values(m).unwrap())),
                (
                    name,
                    name,
                    0..4u8,
                    proptest::collection::vec(inner.clone(), 0..3),
                    pairs.clone(),
                    proptest::option::of(inner.clone()),
                    proptest::collection::vec(inner, 0..3),
                    pairs,
                )
                    .prop_map(
                        |(module, qualname, kind, args, kwargs, state, list_items, dict_items)| {
                            let build = match kind {
                                0 => Build::Global,
                                1 => Build::Reduce(args),
                                2 => Build::NewObj(args),
                                // kwargs travel as a dict: one entry per key.
                                _ => Build::NewObjEx(args, Dict::from_pairs(kwargs).unwrap().into_iter().collect()),
                            };
                            Value::Object(Box::new(Object { module, qualname, build, state, list_items, dict_items }))
                        }
                    ),
            ]
        })
    }

    proptest! {
        // No regression files: they would land outside this module's directory.
        #![proptest_config(ProptestConfig { failure_persistence: None, ..ProptestConfig::default() })]

        #[test]
        fn decode_inverts_encode(v in value()) {
            let back = decode(&encode(&v)).unwrap();
            prop_assert!(same(&back, &v), "{:?}\n!=\n{:?}", back, v);
        }

        #[test]
        fn a_tagged_pickle_is_the_pickle_of_the_pair(v in value()) {
            let mut tagged = Vec::new();
            super::encode_tagged_into("#RETURN", &v, &mut tagged);
            let pair = Value::Tuple(vec![Value::Str("#RETURN".into()), v]);
            prop_assert_eq!(tagged, encode(&pair));
        }

        #[test]
        fn decode_never_panics(data in proptest::collection::vec(any::<u8>(), 0..256)) {
            let _ = decode(&data);
            let mut with_header = vec![0x80, 4];
            with_header.extend(&data);
            let _ = decode(&with_header);
        }

        #[test]
        fn decode_never_panics_on_opcode_soup(ops in proptest::collection::vec(prop::sample::select(&SOUP[..]), 0..64)) {
            let mut data = vec![0x80, 4];
            for op in ops {
                data.extend_from_slice(op);
            }
            let _ = decode(&data);
            data.push(b'.');
            let _ = decode(&data);
        }
    }

    /// Well-formed opcodes with arguments, to reach deep into the machine.
    const SOUP: [&[u8]; 24] = [
        b"(",
        b")",
        b"]",
        b"}",
        b"N",
        b"K\x01",
        b"\x8c\x01a",
        b"\x8c\x01b",
        b"\x94",
        b"h\x00",
        b"h\x01",
        b"a",
        b"e",
        b"s",
        b"u",
        b"t",
        b"\x85",
        b"\x86",
        b"\x93",
        b"R",
        b"\x81",
        b"b",
        b"0",
        b"1",
    ];
}
