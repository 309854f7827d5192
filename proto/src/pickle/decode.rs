//! The pickle decoder: a stack machine that *describes* what a pickle would build,
//! without building (or calling, or importing) anything.
//!
//! Decoding runs in two passes:
//!
//! 1. [`Machine`] runs the opcodes over an arena of [`Node`]s. The stack, the marks
//!    and the memo hold node ids, so a memo reference (BINGET) shares a node exactly
//!    as CPython shares an object, and a container filled after it was memoized (every
//!    list, dict and set CPython writes) is seen filled by every reference. The arena
//!    grows by at most one node per opcode, so its size is linear in the input.
//! 2. [`Builder`] turns the node graph under the result into a tree of [`Value`]s,
//!    without recursion. A node reached twice (a shared sub-object) is built once and
//!    copied; a node reached while it is being built is a cycle, which a tree cannot
//!    hold, and is an error. Nesting deeper than [`MAX_DEPTH`] is an error, and so is a
//!    tree whose copies would exceed a budget proportional to the input (a memo
//!    "billion laughs" bomb).
//!
//! Most pickles a client sends (a request: a tuple of strs, ints, tuples and dicts,
//! nothing read back from the memo) describe a tree, and [`decode_tree`] builds it in
//! one pass instead, with none of the arena's allocations. It handles only such
//! pickles, and leaves any other, and any it or the two passes would refuse, to the
//! two passes from the start: they alone decide errors.
//!
//! Every length in the input is checked against what is left of it before anything is
//! allocated, and malformed input is an [`ErrorCode::Protocol`] error naming the
//! opcode and its offset. Unhashable dict keys and set members are Python's
//! `TypeError`, as CPython would raise while loading.

use std::borrow::Cow;
use std::collections::HashMap;

use num_bigint::BigInt;

use super::compat::fix_import;
use super::opcodes as op;
use crate::value::{Build, Dict, Object, Set, Value, MAX_DEPTH};
use crate::{ErrorCode, WireError};

/// Index of a node in the arena.
type Id = u32;

/// At most this many marks may be open at once. A pickle of a value within
/// [`MAX_DEPTH`] levels opens at most one mark per level; the slack covers the
/// POP_MARKs of recursive tuples.
const MAX_MARKS: usize = 2 * MAX_DEPTH + 64;

/// Every input byte buys this many units of output (a node, or 32 bytes of str, bytes
/// or int payload). A pickle without shared sub-objects needs at most about one unit
/// per byte, since every opcode is at least one byte and makes at most one node: the
/// rest is room for copies of shared sub-objects.
const BUDGET_PER_INPUT_BYTE: u64 = 16;

/// Units every pickle may use, however short.
const BUDGET_FLOOR: u64 = 1 << 20;

/// Payload bytes per budget unit.
const BYTES_PER_UNIT: usize = 32;

/// Most nodes (and stack and memo slots) reserved before the first opcode runs.
const INITIAL_ROOM: usize = 64;

/// Ints written as text longer than this are refused, as CPython 3.11+ refuses to
/// convert them (`sys.int_info.default_max_str_digits`); parsing is quadratic.
const MAX_TEXT_DIGITS: usize = 4300;

/// Decodes one pickle (protocol 0–5) into a [`Value`]. See the [module
/// documentation](super) for what each pickled object becomes.
///
/// Errors: [`ErrorCode::Protocol`] for malformed or unsupported input (the message
/// names the opcode and offset), recursive structures, nesting deeper than
/// [`MAX_DEPTH`], shared sub-objects whose copies exceed the size budget, and trailing
/// bytes after STOP; [`ErrorCode::TypeError`] for an unhashable dict key or set member.
/// Never panics, whatever the input.
pub fn decode(bytes: &[u8]) -> Result<Value, WireError> {
    let input_len = u64::try_from(bytes.len()).unwrap_or(u64::MAX);
    let budget = input_len.saturating_mul(BUDGET_PER_INPUT_BYTE).saturating_add(BUDGET_FLOOR);
    match decode_tree(bytes, budget) {
        Some(value) => Ok(value),
        None => decode_graph(bytes, budget),
    }
}

/// The two passes, for any pickle.
fn decode_graph(bytes: &[u8], budget: u64) -> Result<Value, WireError> {
    let mut machine = Machine::new(bytes);
    let root = machine.run()?;
    Builder::new(&mut machine.nodes, machine.memo.read, budget).build(root)
}

/// A protocol error with the standard prefix.
#[cold]
fn protocol(message: impl std::fmt::Display) -> WireError {
    WireError::new(ErrorCode::Protocol, format!("pickle: {message}"))
}

// ---------------------------------------------------------------- the node graph

/// One object the pickle describes. Scalars are kept here in 32 bytes rather than as
/// a [`Value`] (72): the arena holds one node per opcode.
#[derive(Debug)]
enum Node<'a> {
    None,
    Bool(bool),
    Int(i64),
    /// Never a value that fits in `i64`.
    BigInt(Box<BigInt>),
    Float(f64),
    /// Borrowed from the input unless decoding changed the bytes (escapes): most strs
    /// then cost no allocation until their [`Value`], which holds short ones inline.
    Str(Cow<'a, str>),
    Bytes(Vec<u8>),
    List(Vec<Id>),
    Tuple(Vec<Id>),
    /// Keys and values alternating, in the order they were set.
    Dict(Vec<Id>),
    Set(Vec<Id>),
    FrozenSet(Vec<Id>),
    /// A global, or an object built by calling one.
    Object(Box<ObjectNode>),
}

/// An [`Object`] whose parts are still nodes.
#[derive(Debug)]
struct ObjectNode {
    module: String,
    qualname: String,
    kind: Kind,
    /// The args tuple node (REDUCE, NEWOBJ, NEWOBJ_EX).
    args: Option<Id>,
    /// The kwargs dict node (NEWOBJ_EX).
    kwargs: Option<Id>,
    state: Option<Id>,
    list_items: Vec<Id>,
    /// Keys and values alternating.
    dict_items: Vec<Id>,
}

/// How an object node was built (mirrors [`Build`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Global,
    Reduce,
    NewObj,
    NewObjEx,
}

impl Node<'_> {
    /// The Python type name, for error messages.
    fn describe(&self) -> &'static str {
        match self {
            Node::None => "None",
            Node::Bool(_) => "bool",
            Node::Int(_) | Node::BigInt(_) => "int",
            Node::Float(_) => "float",
            Node::Str(_) => "str",
            Node::Bytes(_) => "bytes",
            Node::List(_) => "list",
            Node::Tuple(_) => "tuple",
            Node::Dict(_) => "dict",
            Node::Set(_) => "set",
            Node::FrozenSet(_) => "frozenset",
            Node::Object(o) if o.kind == Kind::Global => "global",
            Node::Object(_) => "object",
        }
    }
}

// ---------------------------------------------------------------- pass 1: the opcodes

/// The unpickling stack machine, over an arena of nodes.
struct Machine<'a> {
    input: &'a [u8],
    pos: usize,
    /// Offset of the opcode being run (for error messages).
    at: usize,
    /// The opcode being run.
    code: u8,
    /// The protocol announced by PROTO (0 without one, like CPython).
    proto: u8,
    nodes: Vec<Node<'a>>,
    stack: Vec<Id>,
    /// Stack lengths at each open MARK.
    marks: Vec<usize>,
    memo: Memo,
}

impl<'a> Machine<'a> {
    fn new(input: &'a [u8]) -> Machine<'a> {
        // Every node takes at least one opcode byte, and a str's several: room for this
        // many allocated at once, instead of regrowing one node at a time, spares a small
        // pickle (a request) most of its allocations; bounded, as the input is untrusted.
        let room = (input.len() / 2).min(INITIAL_ROOM);
        Machine {
            input,
            pos: 0,
            at: 0,
            code: 0,
            proto: 0,
            nodes: Vec::with_capacity(room),
            stack: Vec::with_capacity(room),
            marks: Vec::new(),
            memo: Memo { room, ..Memo::default() },
        }
    }

    /// An error about the opcode being run.
    #[cold]
    fn err(&self, message: impl std::fmt::Display) -> WireError {
        let name = op::name(self.code).unwrap_or("?");
        protocol(format_args!("{message} ({name} at offset {})", self.at))
    }

    /// Runs the opcodes up to STOP; returns the result's node.
    fn run(&mut self) -> Result<Id, WireError> {
        loop {
            self.at = self.pos;
            let Some(&code) = self.input.get(self.pos) else {
                return Err(protocol(format_args!(
                    "truncated: no STOP before the end of input at offset {}",
                    self.pos
                )));
            };
            self.code = code;
            self.pos += 1;
            if code == op::STOP {
                let root = self.pop()?;
                if self.pos != self.input.len() {
                    let extra = self.input.len() - self.pos;
                    return Err(self.err(format_args!("{extra} trailing bytes after STOP")));
                }
                return Ok(root);
            }
            self.step(code)?;
        }
    }

    /// Runs one opcode (other than STOP).
    fn step(&mut self, code: u8) -> Result<(), WireError> {
        match code {
            op::PROTO => {
                let version = self.u8()?;
                if version > op::HIGHEST_PROTOCOL {
                    return Err(self.err(format_args!("unsupported pickle protocol: {version}")));
                }
                self.proto = version;
            }
            // The frame's bytes are opcodes like any other: check it fits, and go on.
            op::FRAME => {
                let len = self.u64()?;
                self.check_len(len)?;
            }
            op::MARK => {
                if self.marks.len() >= MAX_MARKS {
                    return Err(self.err(format_args!("more than {MAX_MARKS} open MARKs")));
                }
                self.marks.push(self.stack.len());
            }
            // CPython: POP with nothing above the top mark removes the mark.
            op::POP => {
                if self.stack.len() > self.fence() {
                    self.stack.pop();
                } else if self.marks.pop().is_none() {
                    return Err(self.err("stack underflow"));
                }
            }
            op::POP_MARK => {
                let mark = self.pop_mark()?;
                self.stack.truncate(mark);
            }

            op::NONE => self.push(Node::None)?,
            op::NEWTRUE => self.push(Node::Bool(true))?,
            op::NEWFALSE => self.push(Node::Bool(false))?,
            op::BININT1 => {
                let v = self.u8()?;
                self.push(Node::Int(i64::from(v)))?;
            }
            op::BININT2 => {
                let v = u16::from_le_bytes(self.array()?);
                self.push(Node::Int(i64::from(v)))?;
            }
            op::BININT => {
                let v = i32::from_le_bytes(self.array()?);
                self.push(Node::Int(i64::from(v)))?;
            }
            op::LONG1 => {
                let len = usize::from(self.u8()?);
                let digits = self.take(len)?;
                self.push(int_node(BigInt::from_signed_bytes_le(digits)))?;
            }
            op::LONG4 => {
                let len = i32::from_le_bytes(self.array()?);
                let len = usize::try_from(len).map_err(|_| self.err("negative byte count"))?;
                let digits = self.take(len)?;
                self.push(int_node(BigInt::from_signed_bytes_le(digits)))?;
            }
            op::BINFLOAT => {
                let v = f64::from_be_bytes(self.array()?);
                self.push(Node::Float(v))?;
            }

            op::SHORT_BINUNICODE => {
                let len = u64::from(self.u8()?);
                self.utf8(len)?;
            }
            op::BINUNICODE => {
                let len = u64::from(u32::from_le_bytes(self.array()?));
                self.utf8(len)?;
            }
            op::BINUNICODE8 => {
                let len = self.u64()?;
                self.utf8(len)?;
            }
            op::SHORT_BINBYTES => {
                let len = u64::from(self.u8()?);
                let bytes = self.take_u64(len)?.to_vec();
                self.push(Node::Bytes(bytes))?;
            }
            op::BINBYTES => {
                let len = u64::from(u32::from_le_bytes(self.array()?));
                let bytes = self.take_u64(len)?.to_vec();
                self.push(Node::Bytes(bytes))?;
            }
            op::BINBYTES8 => {
                let len = self.u64()?;
                let bytes = self.take_u64(len)?.to_vec();
                self.push(Node::Bytes(bytes))?;
            }
            // Protocol 5's bytearray: the object protocol 4 writes, `bytearray(b'…')`.
            op::BYTEARRAY8 => {
                let len = self.u64()?;
                let bytes = self.take_u64(len)?.to_vec();
                let content = self.node(Node::Bytes(bytes))?;
                let args = self.node(Node::Tuple(vec![content]))?;
                self.push(object("builtins".into(), "bytearray".into(), Kind::Reduce, Some(args), None))?;
            }

            op::EMPTY_TUPLE => self.push(Node::Tuple(Vec::new()))?,
            op::TUPLE1 | op::TUPLE2 | op::TUPLE3 => {
                let n = usize::from(code - op::TUPLE1) + 1;
                if self.stack.len() < self.fence() + n {
                    return Err(self.err("stack underflow"));
                }
                let items = self.stack.split_off(self.stack.len() - n);
                self.push(Node::Tuple(items))?;
            }
            op::TUPLE => {
                let items = self.pop_items()?;
                self.push(Node::Tuple(items))?;
            }
            op::EMPTY_LIST => self.push(Node::List(Vec::new()))?,
            op::LIST => {
                let items = self.pop_items()?;
                self.push(Node::List(items))?;
            }
            op::APPEND => {
                let item = self.pop()?;
                self.append(vec![item])?;
            }
            op::APPENDS => {
                let items = self.pop_items()?;
                self.append(items)?;
            }
            op::EMPTY_DICT => self.push(Node::Dict(Vec::new()))?,
            op::DICT => {
                let items = self.pop_items()?;
                if items.len() % 2 != 0 {
                    return Err(self.err("odd number of items for DICT"));
                }
                self.push(Node::Dict(items))?;
            }
            op::SETITEM => {
                let value = self.pop()?;
                let key = self.pop()?;
                self.set_items(vec![key, value])?;
            }
            op::SETITEMS => {
                let items = self.pop_items()?;
                if items.len() % 2 != 0 {
                    return Err(self.err("odd number of items for SETITEMS"));
                }
                self.set_items(items)?;
            }
            op::EMPTY_SET => self.push(Node::Set(Vec::new()))?,
            op::ADDITEMS => {
                let items = self.pop_items()?;
                let target = self.top()?;
                match &mut self.nodes[target as usize] {
                    Node::Set(members) => members.extend(items),
                    other => {
                        let kind = other.describe();
                        return Err(self.err(format_args!("ADDITEMS to a {kind}, not a set")));
                    }
                }
            }
            op::FROZENSET => {
                let items = self.pop_items()?;
                self.push(Node::FrozenSet(items))?;
            }

            op::MEMOIZE => {
                let index = self.memo.len;
                self.memo_put(index)?;
            }
            op::BINPUT => {
                let index = u64::from(self.u8()?);
                self.memo_put(index)?;
            }
            op::LONG_BINPUT => {
                let index = u64::from(u32::from_le_bytes(self.array()?));
                self.memo_put(index)?;
            }
            op::PUT => {
                let index = self.line_index()?;
                self.memo_put(index)?;
            }
            op::BINGET => {
                let index = u64::from(self.u8()?);
                self.memo_get(index)?;
            }
            op::LONG_BINGET => {
                let index = u64::from(u32::from_le_bytes(self.array()?));
                self.memo_get(index)?;
            }
            op::GET => {
                let index = self.line_index()?;
                self.memo_get(index)?;
            }

            op::GLOBAL => {
                let module = self.line_utf8()?;
                let name = self.line_utf8()?;
                self.global(module, name)?;
            }
            op::STACK_GLOBAL => {
                let name = self.pop()?;
                let module = self.pop()?;
                match (&self.nodes[module as usize], &self.nodes[name as usize]) {
                    (Node::Str(module), Node::Str(name)) => {
                        let (module, name) = (module.to_string(), name.to_string());
                        self.global(module, name)?;
                    }
                    _ => return Err(self.err("STACK_GLOBAL requires str")),
                }
            }
            op::REDUCE => {
                let args = self.pop()?;
                let callable = self.pop()?;
                self.construct(callable, Kind::Reduce, args, None)?;
            }
            op::NEWOBJ => {
                let args = self.pop()?;
                let class = self.pop()?;
                self.construct(class, Kind::NewObj, args, None)?;
            }
            op::NEWOBJ_EX => {
                let kwargs = self.pop()?;
                let args = self.pop()?;
                let class = self.pop()?;
                if !matches!(self.nodes[kwargs as usize], Node::Dict(_)) {
                    let kind = self.nodes[kwargs as usize].describe();
                    return Err(self.err(format_args!("NEWOBJ_EX kwargs must be a dict, not {kind}")));
                }
                self.construct(class, Kind::NewObjEx, args, Some(kwargs))?;
            }
            op::BUILD => {
                let state = self.pop()?;
                let target = self.top()?;
                let kind = self.nodes[target as usize].describe();
                match &mut self.nodes[target as usize] {
                    Node::Object(o) if o.state.is_none() => o.state = Some(state),
                    Node::Object(_) => return Err(self.err("BUILD applied twice to one object")),
                    _ => return Err(self.err(format_args!("BUILD on a {kind}, not an object"))),
                }
            }

            // The text opcodes of protocols 0 and 1.
            op::INT => {
                let line = self.line()?;
                let value = match line {
                    b"00" => Node::Bool(false),
                    b"01" => Node::Bool(true),
                    digits => self.text_int(digits)?,
                };
                self.push(value)?;
            }
            op::LONG => {
                let line = self.line()?;
                let digits = line.strip_suffix(b"L").unwrap_or(line);
                let value = self.text_int(digits)?;
                self.push(value)?;
            }
            op::FLOAT => {
                let line = self.line()?;
                let text = std::str::from_utf8(line).map_err(|_| self.err("malformed float"))?;
                let value: f64 = text.trim().parse().map_err(|_| self.err(format_args!("malformed float {text:?}")))?;
                self.push(Node::Float(value))?;
            }
            op::STRING => {
                let line = self.line()?;
                let quoted = match line {
                    [q @ (b'\'' | b'"'), inner @ .., last] if last == q => inner,
                    _ => return Err(self.err("the STRING opcode argument must be quoted")),
                };
                let bytes = escape_decode(quoted).map_err(|why| self.err(why))?;
                self.check_ascii(&bytes)?;
                self.push(Node::Str(Cow::Owned(String::from_utf8_lossy(&bytes).into_owned())))?;
            }
            op::BINSTRING => {
                let len = i32::from_le_bytes(self.array()?);
                let len = usize::try_from(len).map_err(|_| self.err("negative byte count"))?;
                let bytes = self.take(len)?;
                self.ascii(bytes)?;
            }
            op::SHORT_BINSTRING => {
                let len = usize::from(self.u8()?);
                let bytes = self.take(len)?;
                self.ascii(bytes)?;
            }
            op::UNICODE => {
                let line = self.line()?;
                let text = raw_unicode_escape(line).map_err(|why| self.err(why))?;
                self.push(Node::Str(Cow::Owned(text)))?;
            }

            op::DUP => return Err(self.err("unsupported opcode (CPython never writes it)")),
            op::PERSID | op::BINPERSID => {
                return Err(self.err("unsupported opcode: persistent ids are not used by multiprocessing"))
            }
            op::EXT1 | op::EXT2 | op::EXT4 => {
                return Err(self.err("unsupported opcode: copyreg extension codes are not used by multiprocessing"))
            }
            op::INST | op::OBJ => {
                return Err(self.err("unsupported opcode: old-style instances (protocols 0-1) are not supported"))
            }
            op::NEXT_BUFFER | op::READONLY_BUFFER => {
                return Err(self.err("unsupported opcode: out-of-band buffers are not used by multiprocessing"))
            }
            other => return Err(protocol(format_args!("unknown opcode 0x{other:02x} at offset {}", self.at))),
        }
        Ok(())
    }

    // ---- input

    fn remaining(&self) -> usize {
        self.input.len() - self.pos
    }

    /// Checks that `len` more bytes exist (without taking them).
    fn check_len(&self, len: u64) -> Result<usize, WireError> {
        match usize::try_from(len) {
            Ok(n) if n <= self.remaining() => Ok(n),
            _ => Err(self.err(format_args!("truncated: {len} bytes announced, {} left", self.remaining()))),
        }
    }

    fn take(&mut self, len: usize) -> Result<&'a [u8], WireError> {
        let len = self.check_len(u64::try_from(len).unwrap_or(u64::MAX))?;
        let bytes = &self.input[self.pos..self.pos + len];
        self.pos += len;
        Ok(bytes)
    }

    fn take_u64(&mut self, len: u64) -> Result<&'a [u8], WireError> {
        let len = self.check_len(len)?;
        self.take(len)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], WireError> {
        let bytes = self.take(N)?;
        let mut out = [0; N];
        out.copy_from_slice(bytes);
        Ok(out)
    }

    fn u8(&mut self) -> Result<u8, WireError> {
        Ok(self.array::<1>()?[0])
    }

    fn u64(&mut self) -> Result<u64, WireError> {
        Ok(u64::from_le_bytes(self.array()?))
    }

    /// A text argument: the bytes up to the next newline (which is consumed).
    fn line(&mut self) -> Result<&'a [u8], WireError> {
        let rest = &self.input[self.pos..];
        let Some(end) = rest.iter().position(|&b| b == b'\n') else {
            return Err(self.err("truncated: no newline after a text argument"));
        };
        self.pos += end + 1;
        Ok(&rest[..end])
    }

    fn line_utf8(&mut self) -> Result<String, WireError> {
        let line = self.line()?;
        let text = std::str::from_utf8(line).map_err(|_| self.err("invalid UTF-8 in a text argument"))?;
        Ok(text.to_owned())
    }

    /// A memo index written as text (PUT, GET).
    fn line_index(&mut self) -> Result<u64, WireError> {
        let line = self.line()?;
        let text = std::str::from_utf8(line).ok().map(str::trim);
        text.and_then(|t| t.parse().ok()).ok_or_else(|| self.err("malformed memo index"))
    }

    /// An int written as text (INT, LONG): an optional sign and decimal digits.
    fn text_int(&self, text: &[u8]) -> Result<Node<'a>, WireError> {
        let text = text.trim_ascii();
        let digits = text.strip_prefix(b"-").or_else(|| text.strip_prefix(b"+")).unwrap_or(text);
        if digits.len() > MAX_TEXT_DIGITS {
            return Err(self.err(format_args!("int of more than {MAX_TEXT_DIGITS} digits")));
        }
        if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
            return Err(self.err("malformed int"));
        }
        let n = BigInt::parse_bytes(text, 10).ok_or_else(|| self.err("malformed int"))?;
        Ok(int_node(n))
    }

    /// A UTF-8 str of `len` bytes.
    fn utf8(&mut self, len: u64) -> Result<(), WireError> {
        let bytes = self.take_u64(len)?;
        let text =
            crate::utf8::str_from_utf8(bytes).map_err(|e| self.err(format_args!("invalid UTF-8 in str: {e}")))?;
        self.push(Node::Str(Cow::Borrowed(text)))
    }

    /// A Python 2 str, decoded as CPython does by default (`encoding='ASCII'`).
    fn ascii(&mut self, bytes: &'a [u8]) -> Result<(), WireError> {
        self.check_ascii(bytes)?;
        // ASCII is UTF-8: the text is borrowed.
        self.push(Node::Str(String::from_utf8_lossy(bytes)))
    }

    fn check_ascii(&self, bytes: &[u8]) -> Result<(), WireError> {
        match bytes.is_ascii() {
            true => Ok(()),
            false => Err(self.err("non-ASCII bytes in a Python 2 str (loads' default encoding is ASCII)")),
        }
    }

    // ---- stack

    /// The stack length at the top mark: items below it are out of reach.
    fn fence(&self) -> usize {
        self.marks.last().copied().unwrap_or(0)
    }

    /// Adds a node to the arena (not to the stack).
    fn node(&mut self, node: Node<'a>) -> Result<Id, WireError> {
        let id = Id::try_from(self.nodes.len()).map_err(|_| self.err("too many objects"))?;
        self.nodes.push(node);
        Ok(id)
    }

    fn push(&mut self, node: Node<'a>) -> Result<(), WireError> {
        let id = self.node(node)?;
        self.stack.push(id);
        Ok(())
    }

    fn pop(&mut self) -> Result<Id, WireError> {
        if self.stack.len() <= self.fence() {
            return Err(self.err("stack underflow"));
        }
        self.stack.pop().ok_or_else(|| self.err("stack underflow"))
    }

    fn top(&self) -> Result<Id, WireError> {
        match self.stack.last() {
            Some(&id) if self.stack.len() > self.fence() => Ok(id),
            _ => Err(self.err("stack underflow")),
        }
    }

    /// Removes the top mark; returns the stack length it recorded.
    fn pop_mark(&mut self) -> Result<usize, WireError> {
        self.marks.pop().ok_or_else(|| self.err("no MARK before this opcode"))
    }

    /// Removes the top mark and the items above it.
    fn pop_items(&mut self) -> Result<Vec<Id>, WireError> {
        let mark = self.pop_mark()?;
        Ok(self.stack.split_off(mark.min(self.stack.len())))
    }

    fn append(&mut self, items: Vec<Id>) -> Result<(), WireError> {
        let target = self.top()?;
        match &mut self.nodes[target as usize] {
            Node::List(list) => list.extend(items),
            Node::Object(o) => o.list_items.extend(items),
            other => {
                let kind = other.describe();
                return Err(self.err(format_args!("cannot append to a {kind}")));
            }
        }
        Ok(())
    }

    fn set_items(&mut self, items: Vec<Id>) -> Result<(), WireError> {
        let target = self.top()?;
        match &mut self.nodes[target as usize] {
            Node::Dict(dict) => dict.extend(items),
            Node::Object(o) => o.dict_items.extend(items),
            other => {
                let kind = other.describe();
                return Err(self.err(format_args!("cannot set items of a {kind}")));
            }
        }
        Ok(())
    }

    fn memo_put(&mut self, index: u64) -> Result<(), WireError> {
        let top = self.top()?;
        self.memo.put(index, top);
        Ok(())
    }

    fn memo_get(&mut self, index: u64) -> Result<(), WireError> {
        let id = self.memo.get(index).ok_or_else(|| self.err(format_args!("memo value not found at index {index}")))?;
        self.stack.push(id);
        Ok(())
    }

    /// Pushes a reference to the global `module.name` (renamed as CPython's
    /// `find_class` does for protocols below 3).
    fn global(&mut self, module: String, name: String) -> Result<(), WireError> {
        let (module, name) = if self.proto < 3 { fix_import(module, name) } else { (module, name) };
        self.push(object(module, name, Kind::Global, None, None))
    }

    /// REDUCE, NEWOBJ or NEWOBJ_EX: an object built by a global from an args tuple.
    fn construct(&mut self, callable: Id, kind: Kind, args: Id, kwargs: Option<Id>) -> Result<(), WireError> {
        if !matches!(self.nodes[args as usize], Node::Tuple(_)) {
            let found = self.nodes[args as usize].describe();
            return Err(self.err(format_args!("arguments must be a tuple, not {found}")));
        }
        let (module, qualname) = match &self.nodes[callable as usize] {
            Node::Object(o)
                if o.kind == Kind::Global
                    && o.state.is_none()
                    && o.list_items.is_empty()
                    && o.dict_items.is_empty() =>
            {
                (o.module.clone(), o.qualname.clone())
            }
            other => {
                let found = other.describe();
                return Err(self.err(format_args!("the callable must be a global, not {found}")));
            }
        };
        self.push(object(module, qualname, kind, Some(args), kwargs))
    }
}

/// The memo: index → node. CPython numbers entries 0, 1, 2… (MEMOIZE), so those live
/// in a vector; any other index (BINPUT and friends may name any) in a map.
#[derive(Default)]
struct Memo {
    dense: Vec<Option<Id>>,
    sparse: HashMap<u64, Id>,
    /// Number of entries (the index MEMOIZE uses, as `len(memo)` in CPython).
    len: u64,
    /// Slots `dense` reserves when first used.
    room: usize,
    /// Whether an entry was ever read (GET and friends): without, no node is shared.
    read: bool,
}

impl Memo {
    fn put(&mut self, index: u64, id: Id) {
        let fresh = match usize::try_from(index) {
            Ok(i) if i < self.dense.len() => self.dense[i].replace(id).is_none(),
            Ok(i) if i == self.dense.len() && !self.sparse.contains_key(&index) => {
                if self.dense.capacity() == 0 {
                    self.dense.reserve(self.room);
                }
                self.dense.push(Some(id));
                true
            }
            _ => self.sparse.insert(index, id).is_none(),
        };
        if fresh {
            self.len += 1;
        }
    }

    fn get(&mut self, index: u64) -> Option<Id> {
        self.read = true;
        match usize::try_from(index) {
            Ok(i) if i < self.dense.len() => self.dense[i],
            _ => self.sparse.get(&index).copied(),
        }
    }
}

/// A new object node without state or items.
fn object<'a>(module: String, qualname: String, kind: Kind, args: Option<Id>, kwargs: Option<Id>) -> Node<'a> {
    Node::Object(Box::new(ObjectNode {
        module,
        qualname,
        kind,
        args,
        kwargs,
        state: None,
        list_items: Vec::new(),
        dict_items: Vec::new(),
    }))
}

/// Python's `codecs.escape_decode` (the STRING opcode's argument, between the quotes).
fn escape_decode(text: &[u8]) -> Result<Vec<u8>, String> {
    let mut out = Vec::with_capacity(text.len());
    let mut i = 0;
    while i < text.len() {
        let c = text[i];
        i += 1;
        if c != b'\\' {
            out.push(c);
            continue;
        }
        let Some(&e) = text.get(i) else { return Err("trailing \\ in STRING".into()) };
        i += 1;
        match e {
            b'\n' => {}
            b'\\' | b'\'' | b'"' => out.push(e),
            b'a' => out.push(0x07),
            b'b' => out.push(0x08),
            b'f' => out.push(0x0c),
            b'n' => out.push(b'\n'),
            b'r' => out.push(b'\r'),
            b't' => out.push(b'\t'),
            b'v' => out.push(0x0b),
            b'0'..=b'7' => {
                let mut v = u32::from(e - b'0');
                for _ in 0..2 {
                    match text.get(i) {
                        Some(&d @ b'0'..=b'7') => {
                            v = v * 8 + u32::from(d - b'0');
                            i += 1;
                        }
                        _ => break,
                    }
                }
                out.push((v & 0xff) as u8);
            }
            b'x' => {
                let hex = text.get(i..i + 2).and_then(|h| std::str::from_utf8(h).ok());
                let byte = hex.and_then(|h| u8::from_str_radix(h, 16).ok());
                out.push(byte.ok_or_else(|| format!("invalid \\x escape at position {}", i - 2))?);
                i += 2;
            }
            // Unknown escapes stay as they are.
            other => out.extend([b'\\', other]),
        }
    }
    Ok(out)
}

/// Python's `raw-unicode-escape` decoding (the UNICODE opcode's argument): bytes are
/// Latin-1 code points, except `\uXXXX` and `\UXXXXXXXX` after an odd number of
/// backslashes.
fn raw_unicode_escape(text: &[u8]) -> Result<String, String> {
    let mut out = String::with_capacity(text.len());
    let mut i = 0;
    while i < text.len() {
        if text[i] != b'\\' {
            out.push(char::from(text[i]));
            i += 1;
            continue;
        }
        let run = text[i..].iter().take_while(|&&b| b == b'\\').count();
        i += run;
        let digits = match text.get(i) {
            Some(b'u') if run % 2 == 1 => 4,
            Some(b'U') if run % 2 == 1 => 8,
            _ => {
                out.extend(std::iter::repeat_n('\\', run));
                continue;
            }
        };
        out.extend(std::iter::repeat_n('\\', run - 1));
        let hex = text.get(i + 1..i + 1 + digits).and_then(|h| std::str::from_utf8(h).ok());
        let code =
            hex.filter(|h| h.bytes().all(|b| b.is_ascii_hexdigit())).and_then(|h| u32::from_str_radix(h, 16).ok());
        let code = code.ok_or_else(|| format!("truncated \\u escape at position {}", i - 1))?;
        out.push(
            char::from_u32(code).ok_or_else(|| format!("\\u escape of U+{code:X} is not a Unicode scalar value"))?,
        );
        i += 1 + digits;
    }
    Ok(out)
}

// ---------------------------------------------------------------- the one-pass path

/// Decodes a pickle that describes a tree of plain values in one pass, building each
/// container as its opcode runs: no arena, no use counts, no copies.
///
/// Without a memo read no node is shared and none holds itself, so this gives what
/// the two passes give. It handles only the opcodes such a tree needs (what CPython
/// writes for a manager request) and returns `None` for any other, and for any input
/// the two passes would refuse or might refuse: [`decode`] then runs them from the
/// start, and they give the result or the error. So it never decides an outcome.
fn decode_tree(input: &[u8], budget: u64) -> Option<Value> {
    // Every node takes an input byte: with fewer bytes than ids, ids cannot run out.
    if u32::try_from(input.len()).is_err() {
        return None;
    }
    // Room for the values a request keeps on the stack at once: one allocation.
    let room = (input.len() / 4).min(INITIAL_ROOM / 4);
    let stack = Vec::with_capacity(room);
    let mut tree = Tree { input, pos: 0, stack, marks: [0; TREE_MARKS], open: 0, spent: 0, budget };
    tree.run()
}

/// Marks [`decode_tree`] keeps open at once (inline, not allocated); a pickle that
/// opens more is left to the two passes.
const TREE_MARKS: usize = 32;

/// The state of [`decode_tree`].
struct Tree<'a> {
    input: &'a [u8],
    pos: usize,
    /// Values with their height: the levels of containers they span (0 for a scalar),
    /// as [`Builder`] counts them.
    stack: Vec<(Value, usize)>,
    /// Stack lengths at each open MARK: the first `open`.
    marks: [usize; TREE_MARKS],
    open: usize,
    /// Budget units of everything built, reachable or not (the two passes count only
    /// what is reachable, so this never stays under the budget when they do not).
    spent: u64,
    budget: u64,
}

impl Tree<'_> {
    /// Runs the opcodes up to STOP, checking what [`Machine::step`] checks.
    fn run(&mut self) -> Option<Value> {
        loop {
            let code = *self.input.get(self.pos)?;
            self.pos += 1;
            match code {
                op::STOP => {
                    let (value, _) = self.pop()?;
                    return (self.pos == self.input.len()).then_some(value);
                }
                op::PROTO if self.u8()? <= op::HIGHEST_PROTOCOL => {}
                op::FRAME => {
                    let len = u64::from_le_bytes(self.array()?);
                    self.check_len(len)?;
                }
                op::MARK => {
                    *self.marks.get_mut(self.open)? = self.stack.len();
                    self.open += 1;
                }
                // Nothing reads the memo (a read leaves this path): check there is
                // something to memoize, and go on.
                op::MEMOIZE => self.top()?,
                op::BINPUT => {
                    self.u8()?;
                    self.top()?;
                }
                op::LONG_BINPUT => {
                    self.array::<4>()?;
                    self.top()?;
                }

                op::NONE => self.scalar(Value::None, 0)?,
                op::NEWTRUE => self.scalar(Value::Bool(true), 0)?,
                op::NEWFALSE => self.scalar(Value::Bool(false), 0)?,
                op::BININT1 => {
                    let v = self.u8()?;
                    self.scalar(Value::Int(i64::from(v)), 0)?;
                }
                op::BININT2 => {
                    let v = u16::from_le_bytes(self.array()?);
                    self.scalar(Value::Int(i64::from(v)), 0)?;
                }
                op::BININT => {
                    let v = i32::from_le_bytes(self.array()?);
                    self.scalar(Value::Int(i64::from(v)), 0)?;
                }
                op::LONG1 => {
                    let len = u64::from(self.u8()?);
                    self.int(len)?;
                }
                op::LONG4 => {
                    let len = u64::try_from(i32::from_le_bytes(self.array()?)).ok()?;
                    self.int(len)?;
                }
                op::BINFLOAT => {
                    let v = f64::from_be_bytes(self.array()?);
                    self.scalar(Value::Float(v), 0)?;
                }
                op::SHORT_BINUNICODE => {
                    let len = u64::from(self.u8()?);
                    self.str(len)?;
                }
                op::BINUNICODE => {
                    let len = u64::from(u32::from_le_bytes(self.array()?));
                    self.str(len)?;
                }
                op::BINUNICODE8 => {
                    let len = u64::from_le_bytes(self.array()?);
                    self.str(len)?;
                }
                op::SHORT_BINBYTES => {
                    let len = u64::from(self.u8()?);
                    self.bytes(len)?;
                }
                op::BINBYTES => {
                    let len = u64::from(u32::from_le_bytes(self.array()?));
                    self.bytes(len)?;
                }
                op::BINBYTES8 => {
                    let len = u64::from_le_bytes(self.array()?);
                    self.bytes(len)?;
                }

                op::EMPTY_TUPLE => self.container(Value::Tuple(Vec::new()), 1)?,
                op::TUPLE1 | op::TUPLE2 | op::TUPLE3 => {
                    let n = usize::from(code - op::TUPLE1) + 1;
                    if self.stack.len() < self.fence() + n {
                        return None;
                    }
                    self.tuple(self.stack.len() - n)?;
                }
                op::TUPLE => {
                    let start = self.pop_mark()?;
                    self.tuple(start)?;
                }
                op::EMPTY_LIST => self.container(Value::List(Vec::new()), 1)?,
                op::EMPTY_DICT => self.container(Value::Dict(Dict::new()), 1)?,
                // Like two pops and a top: the item and the list above the fence.
                op::APPEND if self.stack.len() >= self.fence() + 2 => self.add_to_top(self.stack.len() - 1, false)?,
                op::SETITEM if self.stack.len() >= self.fence() + 3 => self.add_to_top(self.stack.len() - 2, true)?,
                op::APPENDS | op::SETITEMS => {
                    let start = self.pop_mark()?;
                    if start <= self.fence() {
                        return None;
                    }
                    self.add_to_top(start, code == op::SETITEMS)?;
                }
                _ => return None,
            }
        }
    }

    fn fence(&self) -> usize {
        match self.open.checked_sub(1) {
            Some(top) => self.marks.get(top).copied().unwrap_or(0),
            None => 0,
        }
    }

    fn check_len(&self, len: u64) -> Option<usize> {
        usize::try_from(len).ok().filter(|&n| n <= self.input.len() - self.pos)
    }

    fn take(&mut self, len: u64) -> Option<&[u8]> {
        let len = self.check_len(len)?;
        let bytes = self.input.get(self.pos..self.pos + len)?;
        self.pos += len;
        Some(bytes)
    }

    fn array<const N: usize>(&mut self) -> Option<[u8; N]> {
        let bytes = self.input.get(self.pos..self.pos + N)?;
        self.pos += N;
        bytes.try_into().ok()
    }

    fn u8(&mut self) -> Option<u8> {
        let byte = *self.input.get(self.pos)?;
        self.pos += 1;
        Some(byte)
    }

    fn charge(&mut self, cost: u64) -> Option<()> {
        self.spent = self.spent.saturating_add(cost);
        (self.spent <= self.budget).then_some(())
    }

    /// Pushes a scalar carrying `payload` bytes, charged as [`Builder`] charges it.
    fn scalar(&mut self, value: Value, payload: u64) -> Option<()> {
        self.charge(1 + payload / BYTES_PER_UNIT as u64)?;
        self.stack.push((value, 0));
        Some(())
    }

    fn container(&mut self, value: Value, height: usize) -> Option<()> {
        self.charge(1)?;
        if height > MAX_DEPTH {
            return None;
        }
        self.stack.push((value, height));
        Some(())
    }

    fn str(&mut self, len: u64) -> Option<()> {
        let text = crate::utf8::str_from_utf8(self.take(len)?).ok()?;
        let value = Value::Str(text.into());
        self.scalar(value, len)
    }

    fn bytes(&mut self, len: u64) -> Option<()> {
        let bytes = self.take(len)?.to_vec();
        self.scalar(Value::Bytes(bytes), len)
    }

    fn int(&mut self, len: u64) -> Option<()> {
        let n = BigInt::from_signed_bytes_le(self.take(len)?);
        match i64::try_from(&n) {
            Ok(i) => self.scalar(Value::Int(i), 0),
            Err(_) => {
                let payload = n.bits() / 8;
                self.scalar(Value::BigInt(Box::new(n)), payload)
            }
        }
    }

    fn pop(&mut self) -> Option<(Value, usize)> {
        match self.stack.len() > self.fence() {
            true => self.stack.pop(),
            false => None,
        }
    }

    fn top(&self) -> Option<()> {
        (self.stack.len() > self.fence()).then_some(())
    }

    /// Removes the top mark; the stack length it recorded (never above the length).
    fn pop_mark(&mut self) -> Option<usize> {
        self.open = self.open.checked_sub(1)?;
        let mark = *self.marks.get(self.open)?;
        Some(mark.min(self.stack.len()))
    }

    /// Replaces the values from `start` up with a tuple of them.
    fn tuple(&mut self, start: usize) -> Option<()> {
        let mut height = 1;
        let mut items = Vec::with_capacity(self.stack.len().saturating_sub(start));
        for (value, h) in self.stack.drain(start..) {
            height = height.max(h + 1);
            items.push(value);
        }
        self.container(Value::Tuple(items), height)
    }

    /// Moves the values from `start` up into the container just below them: a list
    /// (APPEND, APPENDS), or a dict when `set_items` (SETITEM, SETITEMS). An object's
    /// items, or an error, are for the two passes.
    fn add_to_top(&mut self, start: usize, set_items: bool) -> Option<()> {
        let below = start.checked_sub(1)?;
        let (mut target, mut height) = std::mem::take(self.stack.get_mut(below)?);
        let mut items = self.stack.drain(start..);
        match &mut target {
            Value::List(list) if !set_items => list.extend(items.by_ref().map(|(value, h)| {
                height = height.max(h + 1);
                value
            })),
            Value::Dict(dict) if set_items && items.len() % 2 == 0 => {
                while let (Some((key, hk)), Some((value, hv))) = (items.next(), items.next()) {
                    height = height.max(hk.max(hv) + 1);
                    dict.insert(key, value).ok()?;
                }
            }
            _ => return None,
        }
        drop(items);
        if height > MAX_DEPTH {
            return None;
        }
        *self.stack.get_mut(below)? = (target, height);
        Some(())
    }
}

// ---------------------------------------------------------------- pass 2: the tree

/// Turns the node graph under the result into a tree of [`Value`]s, iteratively.
///
/// Levels are counted as [`Value::from_msgpack`] counts them, so that whatever this
/// accepts can travel as MessagePack too: a list, tuple, dict, set or frozenset is one
/// level; an object is one level and its args, state and items one more (kwargs and
/// dict items, written as `[key, value]` pairs, two more).
struct Builder<'n, 'a> {
    nodes: &'n mut [Node<'a>],
    /// Whether the memo was read: only then can a node be reached twice.
    shared: bool,
    /// Per node, when `shared`; else empty: every reachable node then has one parent
    /// and none is its own ancestor, so each is used once (moved, never cached) and
    /// there is no cycle to look for.
    slots: Vec<Slot>,
    /// Finished containers that are used again: (value, cost, height).
    cache: HashMap<Id, (Value, u64, usize)>,
    spent: u64,
    budget: u64,
}

/// What the builder tracks of a node that may be shared.
#[derive(Clone, Copy)]
struct Slot {
    /// How many times the node is still to be used (edges from reachable nodes).
    uses: u32,
    /// [`FRESH`], [`BUILDING`] (on the path from the root: reaching it again is a
    /// cycle) or [`CACHED`] (built, and a copy kept in `cache`).
    state: u8,
}

/// A node not being built and not cached.
const FRESH: u8 = 0;
/// A node being built.
const BUILDING: u8 = 1;
/// A node built and cached for its later uses.
const CACHED: u8 = 2;

/// Frames reserved up front: a request nests two or three levels deep.
const INITIAL_FRAMES: usize = 8;

/// A container being built.
struct Frame {
    id: Id,
    /// Its level (the root is level 1).
    level: usize,
    /// Index of the next child to build.
    next: usize,
    values: Vec<Value>,
    /// Budget units used by it and its children so far.
    cost: u64,
    /// Levels it spans from its own down (see [`Builder::height`]).
    height: usize,
}

/// The result of reaching a node.
enum Reached {
    /// A complete value with its cost and height.
    Done(Value, u64, usize),
    /// A container to fill.
    Open(Frame),
}

impl<'n, 'a> Builder<'n, 'a> {
    fn new(nodes: &'n mut [Node<'a>], shared: bool, budget: u64) -> Builder<'n, 'a> {
        Builder { nodes, shared, slots: Vec::new(), cache: HashMap::new(), spent: 0, budget }
    }

    fn build(mut self, root: Id) -> Result<Value, WireError> {
        if self.shared {
            self.count_uses(root);
        }
        let mut frames = match self.reach(root, 1)? {
            Reached::Done(value, ..) => return Ok(value),
            Reached::Open(frame) => {
                let mut frames = Vec::with_capacity(INITIAL_FRAMES);
                frames.push(frame);
                frames
            }
        };
        loop {
            let Some(frame) = frames.last_mut() else { return Err(protocol("internal: no frame")) };
            let done = match self.child(frame.id, frame.next) {
                Some((child, offset)) => {
                    frame.next += 1;
                    let level = frame.level + offset;
                    match self.reach(child, level)? {
                        Reached::Done(value, cost, height) => (value, cost, height, offset),
                        Reached::Open(child) => {
                            frames.push(child);
                            continue;
                        }
                    }
                }
                None => {
                    let Some(frame) = frames.pop() else { return Err(protocol("internal: no frame")) };
                    let (value, cost, height) = self.finish(frame)?;
                    let Some(parent) = frames.last() else { return Ok(value) };
                    let offset = self.offset(parent.id, parent.next - 1);
                    (value, cost, height, offset)
                }
            };
            let (value, cost, height, offset) = done;
            let Some(parent) = frames.last_mut() else { return Ok(value) };
            parent.values.push(value);
            parent.cost = parent.cost.saturating_add(cost);
            if height > 0 {
                parent.height = parent.height.max(offset + height);
            }
        }
    }

    /// Counts, for every node reachable from `root`, the edges leading to it.
    fn count_uses(&mut self, root: Id) {
        let mut slots = vec![Slot { uses: 0, state: FRESH }; self.nodes.len()];
        slots[root as usize].uses = 1;
        let mut todo = vec![root];
        while let Some(id) = todo.pop() {
            let mut i = 0;
            while let Some((child, _)) = self.child(id, i) {
                i += 1;
                let count = &mut slots[child as usize].uses;
                if *count == 0 {
                    todo.push(child);
                }
                *count = count.saturating_add(1);
            }
        }
        self.slots = slots;
    }

    /// The `i`-th child of a node, with its level below the node.
    fn child(&self, id: Id, i: usize) -> Option<(Id, usize)> {
        match &self.nodes[id as usize] {
            Node::None
            | Node::Bool(_)
            | Node::Int(_)
            | Node::BigInt(_)
            | Node::Float(_)
            | Node::Str(_)
            | Node::Bytes(_) => None,
            Node::List(items) | Node::Tuple(items) | Node::Dict(items) | Node::Set(items) | Node::FrozenSet(items) => {
                items.get(i).map(|&c| (c, 1))
            }
            Node::Object(o) => {
                let mut i = i;
                let args = o.args.map_or(&[][..], |a| self.items(a));
                if let Some(&c) = args.get(i) {
                    return Some((c, 2));
                }
                i -= args.len();
                let kwargs = o.kwargs.map_or(&[][..], |k| self.items(k));
                if let Some(&c) = kwargs.get(i) {
                    return Some((c, 3));
                }
                i -= kwargs.len();
                if let Some(state) = o.state {
                    if i == 0 {
                        return Some((state, 2));
                    }
                    i -= 1;
                }
                if let Some(&c) = o.list_items.get(i) {
                    return Some((c, 2));
                }
                i -= o.list_items.len();
                o.dict_items.get(i).map(|&c| (c, 3))
            }
        }
    }

    /// How many children [`child`](Self::child) gives a node.
    fn child_count(&self, id: Id) -> usize {
        match &self.nodes[id as usize] {
            Node::List(items) | Node::Tuple(items) | Node::Dict(items) | Node::Set(items) | Node::FrozenSet(items) => {
                items.len()
            }
            Node::Object(o) => {
                let args = o.args.map_or(0, |a| self.items(a).len());
                let kwargs = o.kwargs.map_or(0, |k| self.items(k).len());
                args + kwargs + usize::from(o.state.is_some()) + o.list_items.len() + o.dict_items.len()
            }
            _ => 0,
        }
    }

    /// The level offset of a node's `i`-th child.
    fn offset(&self, id: Id, i: usize) -> usize {
        self.child(id, i).map_or(1, |(_, offset)| offset)
    }

    /// The items of a tuple or dict node (an object's args or kwargs).
    fn items(&self, id: Id) -> &[Id] {
        match &self.nodes[id as usize] {
            Node::Tuple(items) | Node::Dict(items) => items,
            _ => &[],
        }
    }

    /// The levels a container itself spans: one, or for an object two (its args,
    /// state and items arrays), three with kwargs or dict items (their pairs).
    fn height(&self, id: Id) -> usize {
        match &self.nodes[id as usize] {
            node if node.is_scalar() => 0,
            Node::Object(o) => {
                let pairs = !o.dict_items.is_empty() || o.kwargs.is_some_and(|k| !self.items(k).is_empty());
                if pairs {
                    3
                } else {
                    2
                }
            }
            _ => 1,
        }
    }

    /// Sets a node's state (nothing to track when no node is shared).
    fn set_state(&mut self, id: Id, state: u8) {
        if let Some(slot) = self.slots.get_mut(id as usize) {
            slot.state = state;
        }
    }

    /// The cached copy of a node, if any.
    fn cached(&self, id: Id) -> Option<&(Value, u64, usize)> {
        match self.slots.get(id as usize) {
            Some(slot) if slot.state == CACHED => self.cache.get(&id),
            _ => None,
        }
    }

    fn charge(&mut self, cost: u64) -> Result<(), WireError> {
        self.spent = self.spent.saturating_add(cost);
        if self.spent > self.budget {
            return Err(protocol(format_args!(
                "the value would take more than {} units (nodes, or 32 bytes of payload): shared sub-objects are \
                 copied, and these copies exceed the budget for a pickle of this size",
                self.budget
            )));
        }
        Ok(())
    }

    fn too_deep() -> WireError {
        protocol(format_args!("nesting deeper than {MAX_DEPTH} levels"))
    }

    /// Reaches node `id` at `level`: a scalar or an already-built container is done (it
    /// is moved on its last use, copied before), a new container is opened.
    fn reach(&mut self, id: Id, level: usize) -> Result<Reached, WireError> {
        let slot = id as usize;
        // Uses left after this one: none means the value can be moved, not copied.
        let mut last_use = true;
        if let Some(slot) = self.slots.get_mut(slot) {
            if slot.state == BUILDING {
                return Err(protocol(
                    "recursive structures are not supported: a container holds itself (through the memo)",
                ));
            }
            slot.uses = slot.uses.saturating_sub(1);
            last_use = slot.uses == 0;
        }
        if let Some((_, cost, height)) = self.cached(id) {
            let (cost, height) = (*cost, *height);
            if level + height - 1 > MAX_DEPTH {
                return Err(Self::too_deep());
            }
            self.charge(cost)?;
            let value = match last_use {
                true => {
                    self.set_state(id, FRESH);
                    self.cache.remove(&id).map(|(v, ..)| v).unwrap_or_default()
                }
                false => self.cache.get(&id).map(|(v, ..)| v.clone()).unwrap_or_default(),
            };
            return Ok(Reached::Done(value, cost, height));
        }
        if self.nodes[slot].is_scalar() {
            let cost = 1 + self.nodes[slot].payload_len() / BYTES_PER_UNIT as u64;
            self.charge(cost)?;
            let value = self.nodes[slot].scalar(last_use);
            return Ok(Reached::Done(value, cost, 0));
        }
        let height = self.height(id);
        if level + height - 1 > MAX_DEPTH {
            return Err(Self::too_deep());
        }
        self.charge(1)?;
        self.set_state(id, BUILDING);
        let values = Vec::with_capacity(self.child_count(id));
        Ok(Reached::Open(Frame { id, level, next: 0, values, cost: 1, height }))
    }

    /// Assembles a container from its built children.
    fn finish(&mut self, frame: Frame) -> Result<(Value, u64, usize), WireError> {
        let Frame { id, values, cost, height, .. } = frame;
        self.set_state(id, FRESH);
        let value = match &self.nodes[id as usize] {
            Node::List(_) => Value::List(values),
            Node::Tuple(_) => Value::Tuple(values),
            Node::Dict(_) => Value::Dict(dict(values)?),
            Node::Set(_) => Value::Set(Set::from_values(values)?),
            Node::FrozenSet(_) => Value::FrozenSet(Set::from_values(values)?),
            Node::Object(o) => {
                let mut values = values.into_iter();
                let args_len = o.args.map_or(0, |a| self.items(a).len());
                let kwargs_len = o.kwargs.map_or(0, |k| self.items(k).len());
                let args: Vec<Value> = values.by_ref().take(args_len).collect();
                let kwargs: Vec<Value> = values.by_ref().take(kwargs_len).collect();
                let state = if o.state.is_some() { values.next() } else { None };
                let list_items: Vec<Value> = values.by_ref().take(o.list_items.len()).collect();
                let dict_items = pairs(values.collect());
                let build = match o.kind {
                    Kind::Global => Build::Global,
                    Kind::Reduce => Build::Reduce(args),
                    Kind::NewObj => Build::NewObj(args),
                    // As CPython builds the kwargs dict: later keys override earlier ones.
                    Kind::NewObjEx => Build::NewObjEx(args, dict(kwargs)?.into_iter().collect()),
                };
                let (module, qualname) = (o.module.clone(), o.qualname.clone());
                Value::Object(Box::new(Object { module, qualname, build, state, list_items, dict_items }))
            }
            _ => return Err(protocol("internal: a scalar was opened")),
        };
        if self.slots.get(id as usize).is_some_and(|slot| slot.uses > 0) {
            // Used again later: keep a copy (the last use takes it).
            self.set_state(id, CACHED);
            self.cache.insert(id, (value.clone(), cost, height));
        }
        Ok((value, cost, height))
    }
}

/// An int node, normalised like [`Value::from_bigint`].
fn int_node<'a>(n: BigInt) -> Node<'a> {
    match i64::try_from(&n) {
        Ok(i) => Node::Int(i),
        Err(_) => Node::BigInt(Box::new(n)),
    }
}

impl Node<'_> {
    fn is_scalar(&self) -> bool {
        matches!(
            self,
            Node::None
                | Node::Bool(_)
                | Node::Int(_)
                | Node::BigInt(_)
                | Node::Float(_)
                | Node::Str(_)
                | Node::Bytes(_)
        )
    }

    /// Bytes of heap payload a scalar carries (for the budget).
    fn payload_len(&self) -> u64 {
        match self {
            Node::Str(s) => s.len() as u64,
            Node::Bytes(b) => b.len() as u64,
            Node::BigInt(n) => n.bits() / 8,
            _ => 0,
        }
    }

    /// A scalar node as a value: moved out on its last use, else copied.
    fn scalar(&mut self, last_use: bool) -> Value {
        fn give<T: Clone + Default>(x: &mut T, last_use: bool) -> T {
            match last_use {
                true => std::mem::take(x),
                false => x.clone(),
            }
        }
        match self {
            Node::Bool(b) => Value::Bool(*b),
            Node::Int(i) => Value::Int(*i),
            Node::Float(f) => Value::Float(*f),
            Node::BigInt(n) => Value::BigInt(give(n, last_use)),
            Node::Str(Cow::Borrowed(s)) => Value::Str((*s).into()),
            Node::Str(Cow::Owned(s)) => Value::Str(give(s, last_use).into()),
            Node::Bytes(b) => Value::Bytes(give(b, last_use)),
            _ => Value::None,
        }
    }
}

/// Alternating keys and values as pairs.
fn pairs(values: Vec<Value>) -> Vec<(Value, Value)> {
    let mut out = Vec::with_capacity(values.len() / 2);
    let mut values = values.into_iter();
    while let (Some(k), Some(v)) = (values.next(), values.next()) {
        out.push((k, v));
    }
    out
}

/// A dict from alternating keys and values (`TypeError` for an unhashable key).
fn dict(values: Vec<Value>) -> Result<Dict, WireError> {
    let mut dict = Dict::with_capacity(values.len() / 2);
    let mut values = values.into_iter();
    while let (Some(k), Some(v)) = (values.next(), values.next()) {
        dict.insert(k, v)?;
    }
    Ok(dict)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::value::MAX_DEPTH;

    /// A protocol 4 pickle of `body` (no STOP added).
    fn p4(body: &[u8]) -> Vec<u8> {
        let mut out = vec![0x80, 4];
        out.extend(body);
        out
    }

    fn protocol_error(pickle: &[u8]) -> String {
        match decode(pickle) {
            Ok(v) => panic!("{pickle:02x?} decoded to {v:?}"),
            Err(e) => {
                assert_eq!(e.code, ErrorCode::Protocol, "{e}");
                assert!(e.message.starts_with("pickle: "), "{e}");
                e.message
            }
        }
    }

    fn type_error(pickle: &[u8]) -> String {
        let e = decode(pickle).unwrap_err();
        assert_eq!(e.code, ErrorCode::TypeError, "{e}");
        e.message
    }

    #[test]
    fn unknown_and_refused_opcodes_are_named_with_their_offset() {
        for code in 0..=255u8 {
            if op::name(code).is_none() {
                let message = protocol_error(&p4(&[code, b'.']));
                assert_eq!(message, format!("pickle: unknown opcode 0x{code:02x} at offset 2"));
            }
        }
        let refused = [
            (op::EXT1, "EXT1"),
            (op::EXT2, "EXT2"),
            (op::EXT4, "EXT4"),
            (op::PERSID, "PERSID"),
            (op::BINPERSID, "BINPERSID"),
            (op::INST, "INST"),
            (op::OBJ, "OBJ"),
            (op::DUP, "DUP"),
            (op::NEXT_BUFFER, "NEXT_BUFFER"),
            (op::READONLY_BUFFER, "READONLY_BUFFER"),
        ];
        for (code, name) in refused {
            let message = protocol_error(&p4(&[b'N', code, b'.']));
            assert!(message.contains("unsupported opcode"), "{message}");
            assert!(message.ends_with(&format!("({name} at offset 3)")), "{message}");
        }
    }

    #[test]
    fn lengths_are_checked_before_allocating() {
        let cases: Vec<Vec<u8>> = vec![
            [&[op::BINUNICODE8][..], &(1u64 << 60).to_le_bytes(), b"ab."].concat(),
            [&[op::BINBYTES8][..], &u64::MAX.to_le_bytes(), b"."].concat(),
            [&[op::BYTEARRAY8][..], &(1u64 << 62).to_le_bytes(), b"."].concat(),
            [&[op::FRAME][..], &u64::MAX.to_le_bytes(), b"N."].concat(),
            [&[op::BINUNICODE][..], &u32::MAX.to_le_bytes(), b"."].concat(),
            [&[op::BINBYTES][..], &u32::MAX.to_le_bytes(), b"."].concat(),
            [&[op::LONG4][..], &i32::MAX.to_le_bytes(), b"."].concat(),
            [&[op::BINSTRING][..], &i32::MAX.to_le_bytes(), b"."].concat(),
            vec![op::SHORT_BINUNICODE, 255, b'a', b'b', b'.'],
            vec![op::SHORT_BINBYTES, 10, b'.'],
            vec![op::LONG1, 200, 1, 2],
        ];
        for case in cases {
            let message = protocol_error(&p4(&case));
            assert!(message.contains("truncated"), "{message}");
        }
        let negative = [&[op::LONG4][..], &(-1i32).to_le_bytes(), b"."].concat();
        assert!(protocol_error(&p4(&negative)).contains("negative byte count"));
        let negative = [&[op::BINSTRING][..], &(-5i32).to_le_bytes(), b"."].concat();
        assert!(protocol_error(&p4(&negative)).contains("negative byte count"));
    }

    #[test]
    fn malformed_input_is_a_protocol_error() {
        let cases: [(&[u8], &str); 24] = [
            (b"", "no STOP"),
            (b"\x80\x04", "no STOP"),
            (b"\x80\x06N.", "unsupported pickle protocol: 6"),
            (b"\x80\x04.", "stack underflow (STOP at offset 2)"),
            (b"\x80\x04N.N", "1 trailing bytes after STOP"),
            (b"\x80\x04a.", "stack underflow (APPEND at offset 2)"),
            (b"\x80\x04](Na.", "stack underflow"),
            (b"\x80\x04R.", "stack underflow (REDUCE at offset 2)"),
            (b"\x80\x04\x93.", "stack underflow"),
            (b"\x80\x041.", "no MARK"),
            (b"\x80\x04Ne.", "no MARK"),
            (b"\x80\x04h\x05.", "memo value not found at index 5"),
            (b"\x80\x04NK\x01\x93.", "STACK_GLOBAL requires str"),
            (b"\x80\x04N)R.", "the callable must be a global, not None"),
            (b"\x80\x04\x8c\x01m\x8c\x01f\x93]R.", "arguments must be a tuple, not list"),
            (b"\x80\x04\x8c\x01m\x8c\x01f\x93]}\x92.", "arguments must be a tuple"),
            (b"\x80\x04\x8c\x01m\x8c\x01f\x93)]\x92.", "kwargs must be a dict, not list"),
            (b"\x80\x04)Na.", "cannot append to a tuple"),
            (b"\x80\x04]NNs.", "cannot set items of a list"),
            (b"\x80\x04](N\x90.", "ADDITEMS to a list, not a set"),
            (b"\x80\x04]}b.", "BUILD on a list, not an object"),
            (b"\x80\x04\x8c\x01m\x8c\x01f\x93)RNbNb.", "BUILD applied twice"),
            (b"\x80\x04(N\x8c\x01aNd.", "odd number of items for DICT"),
            (b"\x80\x04\x8c\x02\xff\xfe.", "invalid UTF-8 in str"),
        ];
        for (pickle, expected) in cases {
            let message = protocol_error(pickle);
            assert!(message.contains(expected), "{pickle:02x?}: {message:?} lacks {expected:?}");
        }
        let text: [(&[u8], &str); 7] = [
            (b"I12x\n.", "malformed int"),
            (b"I12", "no newline"),
            (b"Fx\n.", "malformed float"),
            (b"S'abc\n.", "must be quoted"),
            (b"S'\\x4'\n.", "invalid \\x escape"),
            (b"V\\u12\n.", "truncated \\u escape"),
            (b"V\\ud800\n.", "not a Unicode scalar value"),
        ];
        for (pickle, expected) in text {
            let message = protocol_error(pickle);
            assert!(message.contains(expected), "{pickle:02x?}: {message:?} lacks {expected:?}");
        }
        let long = [b"I".as_slice(), &[b'7'; MAX_TEXT_DIGITS + 1], b"\n."].concat();
        assert!(protocol_error(&long).contains("more than 4300 digits"));
        let ok = [b"L-".as_slice(), &[b'7'; MAX_TEXT_DIGITS], b"L\n."].concat();
        assert!(matches!(decode(&ok).unwrap(), Value::BigInt(_)));
        let ascii = protocol_error(b"U\x02\xc3\xa9.");
        assert!(ascii.contains("non-ASCII"), "{ascii}");
    }

    #[test]
    fn stack_edge_cases_follow_cpython() {
        // POP with nothing above the mark removes the mark.
        assert!(matches!(decode(b"\x80\x04(0N.").unwrap(), Value::None));
        // POP_MARK drops what was above the mark.
        assert!(matches!(decode(b"\x80\x04N(K\x01K\x021.").unwrap(), Value::None));
        // Memo indices are keys, not offsets into an array: no allocation for 2**32-1.
        let pickle = b"\x80\x04Nr\xff\xff\xff\xffj\xff\xff\xff\xff\x86.";
        assert_eq!(decode(pickle).unwrap(), Value::Tuple(vec![Value::None, Value::None]));
        // A global used twice (through the memo) as a callable.
        let two = b"\x80\x04\x8c\x01m\x8c\x01C\x93\x94)\x81h\x00)\x81\x86.";
        let Value::Tuple(items) = decode(two).unwrap() else { panic!() };
        assert!(items.iter().all(|v| matches!(v, Value::Object(o) if o.qualname == "C")));
    }

    #[test]
    fn unhashable_keys_are_type_errors() {
        assert_eq!(type_error(b"\x80\x04}]Ns."), "unhashable type: 'list'");
        assert_eq!(type_error(b"\x80\x04\x8f(]\x90."), "unhashable type: 'list'");
        assert_eq!(type_error(b"\x80\x04(}\x91."), "unhashable type: 'dict'");
        assert_eq!(type_error(b"\x80\x04}\x8f\x85Ns."), "unhashable type: 'set'");
        // NEWOBJ_EX kwargs are a dict too; an object's own items are not (SETITEMS on an
        // object calls its `__setitem__`, which may take anything).
        assert_eq!(type_error(b"\x80\x04\x8c\x01m\x8c\x01C\x93)}]Ns\x92."), "unhashable type: 'list'");
        let Value::Object(o) = decode(b"\x80\x04\x8c\x01m\x8c\x01C\x93)R]Ns.").unwrap() else { panic!() };
        assert!(matches!(o.dict_items.as_slice(), [(Value::List(_), Value::None)]));
    }

    #[test]
    fn recursive_structures_are_refused() {
        let cases: [&[u8]; 5] = [
            // l = []; l.append(l)
            b"\x80\x04]\x94h\x00a.",
            // t = ([],); t[0].append(t), as CPython writes it
            b"\x80\x04]\x94h\x00\x85\x94a0h\x01.",
            // d = {}; d['d'] = d
            b"\x80\x04}\x94\x8c\x01dh\x00s.",
            // an object whose state holds it
            b"\x80\x04\x8c\x01m\x8c\x01f\x93)R\x94}\x8c\x01sh\x00sb.",
            // a list holding a tuple holding the list
            b"\x80\x04]\x94h\x00\x85a.",
        ];
        for pickle in cases {
            let message = protocol_error(pickle);
            assert!(message.contains("recursive structures are not supported"), "{message}");
        }
    }

    #[test]
    fn deep_nesting_is_refused_without_recursion() {
        const N: usize = 100_000;
        // MARK EMPTY_LIST, 100k times: too many marks long before anything nests.
        let marks = p4(&[b"(]".repeat(N), vec![b'e'; N], b".".to_vec()].concat());
        assert!(protocol_error(&marks).contains("open MARKs"));
        // EMPTY_LIST 100k times, then APPEND each into the one below.
        let lists = p4(&[vec![b']'; N], vec![b'a'; N - 1], b".".to_vec()].concat());
        assert!(protocol_error(&lists).contains("nesting deeper than 1024 levels"));
        // TUPLE1 100k times.
        let tuples = p4(&[b"N".to_vec(), vec![op::TUPLE1; N], b".".to_vec()].concat());
        assert!(protocol_error(&tuples).contains("nesting deeper than 1024 levels"));
        // 100k nested REDUCEs: f(f(f(…f(None)…))), the globals pushed first.
        let global = b"\x8c\x01m\x8c\x01f\x93\x94".to_vec();
        let reduces = p4(&[global, b"h\x00".repeat(N - 1), b"N".to_vec(), b"\x85R".repeat(N), b".".to_vec()].concat());
        assert!(protocol_error(&reduces).contains("nesting deeper than 1024 levels"));
        // Exactly MAX_DEPTH levels is fine.
        let ok = p4(&[vec![b']'; MAX_DEPTH], vec![b'a'; MAX_DEPTH - 1], b".".to_vec()].concat());
        assert!(decode(&ok).is_ok());
    }

    /// `a = [None]; b = (a, a); c = (b, b); …` 64 levels deep: 2**64 nodes as a tree.
    #[test]
    fn billion_laughs_exhaust_the_budget_quickly() {
        let mut body = b"]\x94Na".to_vec();
        for level in 0..64u32 {
            let get = [&[op::LONG_BINGET][..], &level.to_le_bytes()].concat();
            body.extend([&get[..], &get, &[op::TUPLE2, op::MEMOIZE]].concat());
        }
        body.push(b'.');
        let pickle = p4(&body);
        let started = std::time::Instant::now();
        let message = protocol_error(&pickle);
        assert!(message.contains("shared sub-objects are copied"), "{message}");
        assert!(started.elapsed().as_secs() < 20, "took {:?}", started.elapsed());
    }

    /// One 1 MiB str referenced 10 000 times: 10 GiB as a tree.
    #[test]
    fn a_shared_big_string_cannot_be_copied_without_bound() {
        let mut body = vec![op::BINUNICODE];
        body.extend((1u32 << 20).to_le_bytes());
        body.extend(vec![b'x'; 1 << 20]);
        body.extend([op::MEMOIZE, op::EMPTY_LIST, op::MARK]);
        body.extend(b"h\x00".repeat(10_000));
        body.extend([op::APPENDS, b'.']);
        let message = protocol_error(&p4(&body));
        assert!(message.contains("shared sub-objects are copied"), "{message}");
    }

    #[test]
    fn moderate_sharing_is_fine() {
        // [t] * 1000 where t is a tuple of 100 ints: 101 000 nodes from ~2.5 KB.
        let mut body = vec![op::MARK];
        for i in 0..100u8 {
            body.extend([op::BININT1, i]);
        }
        body.extend([op::TUPLE, op::MEMOIZE, op::POP, op::EMPTY_LIST, op::MARK]);
        body.extend(b"h\x00".repeat(1000));
        body.extend([op::APPENDS, b'.']);
        let Value::List(items) = decode(&p4(&body)).unwrap() else { panic!() };
        assert_eq!(items.len(), 1000);
        assert!(items.iter().all(|t| matches!(t, Value::Tuple(v) if v.len() == 100)));
        assert!(items[0] == items[999]);
    }

    /// `d['k']` and `d['key:…42'] = 'x' * 32` as CPython 3.11's manager client sends them.
    const REQUESTS: [&[u8]; 2] = [
        b"\x80\x04\x95)\x00\x00\x00\x00\x00\x00\x00(\x8c\x0c7f3a2b1c0d10\x94\x8c\x0b__getitem__\x94\x8c\x01k\x94\x85\x94}\x94t\x94.",
        b"\x80\x04\x95[\x00\x00\x00\x00\x00\x00\x00(\x8c\x0c7f3a5c2e1d40\x94\x8c\x0b__setitem__\x94\x8c\x10key:000000000042\x94\x8c xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx\x94\x86\x94}\x94t\x94.",
    ];

    /// What the two passes alone make of a pickle.
    fn two_passes(pickle: &[u8]) -> Result<Value, WireError> {
        let budget = (pickle.len() as u64).saturating_mul(BUDGET_PER_INPUT_BYTE).saturating_add(BUDGET_FLOOR);
        decode_graph(pickle, budget)
    }

    /// [`decode`] (the one-pass path when it applies) gives exactly what the two passes give.
    fn assert_agrees(pickle: &[u8]) {
        let (ours, theirs) = (decode(pickle), two_passes(pickle));
        match (&ours, &theirs) {
            (Ok(a), Ok(b)) => assert_eq!(format!("{a:?}"), format!("{b:?}"), "{pickle:02x?}"),
            (Err(a), Err(b)) => assert_eq!((a.code, &a.message), (b.code, &b.message), "{pickle:02x?}"),
            _ => panic!("{pickle:02x?}: {ours:?} != {theirs:?}"),
        }
    }

    #[test]
    fn requests_take_the_one_pass_path() {
        for pickle in REQUESTS {
            let budget = BUDGET_FLOOR;
            assert!(decode_tree(pickle, budget).is_some(), "{pickle:02x?}");
            assert_agrees(pickle);
        }
        // Its refusals are left to the two passes.
        let deep = p4(&[vec![b']'; MAX_DEPTH + 1], vec![b'a'; MAX_DEPTH], b".".to_vec()].concat());
        let marks = p4(&[b"(".repeat(TREE_MARKS + 1), b"N.".to_vec()].concat());
        for pickle in [&deep[..], &marks, b"\x80\x04]\x94h\x00a.", b"\x80\x04]NNs.", b"\x80\x04}]Ns."] {
            assert!(decode_tree(pickle, BUDGET_FLOOR).is_none(), "{pickle:02x?}");
            assert_agrees(pickle);
        }
        assert!(decode(&marks).is_ok());
        assert!(decode_tree(b"\x80\x04N.", 0).is_none());
    }

    /// Opcodes with arguments, most of them on the one-pass path, some not.
    const TREE_SOUP: [&[u8]; 36] = [
        b"(",
        b")",
        b"]",
        b"}",
        b"N",
        b"\x88",
        b"\x89",
        b"K\x01",
        b"M\x01\x00",
        b"J\xff\xff\xff\xff",
        b"\x8a\x01\x01",
        b"\x8a\x09\x00\x00\x00\x00\x00\x00\x00\x80\x00",
        b"\x8b\x01\x00\x00\x00\xff",
        b"G?\xf0\x00\x00\x00\x00\x00\x00",
        b"\x8c\x01a",
        b"X\x02\x00\x00\x00\xc3\xa9",
        b"\x8c\x01\xff",
        b"C\x01b",
        b"\x94",
        b"q\x07",
        b"r\x00\x00\x00\x00",
        b"h\x00",
        b"a",
        b"e",
        b"s",
        b"u",
        b"t",
        b"\x85",
        b"\x86",
        b"\x87",
        b"0",
        b"1",
        b"\x8f",
        b"\x90",
        b"\x95\x02\x00\x00\x00\x00\x00\x00\x00",
        b".",
    ];

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig {
            cases: 2000,
            failure_persistence: None,
            ..proptest::prelude::ProptestConfig::default()
        })]

        #[test]
        fn the_one_pass_path_agrees_with_the_two_passes(
            ops in proptest::collection::vec(proptest::sample::select(&TREE_SOUP[..]), 0..40),
        ) {
            let mut pickle = vec![0x80, 4];
            for op in ops {
                pickle.extend_from_slice(op);
            }
            assert_agrees(&pickle);
            pickle.push(b'.');
            assert_agrees(&pickle);
        }

        #[test]
        fn the_one_pass_path_agrees_on_encoded_trees(
            value in tree(),
            flip in proptest::option::of((proptest::prelude::any::<proptest::sample::Index>(), 0u8..=255)),
            cut in proptest::option::of(proptest::prelude::any::<proptest::sample::Index>()),
        ) {
            let mut pickle = crate::pickle::encode(&value);
            assert_agrees(&pickle);
            if let Some((at, byte)) = flip {
                let at = at.index(pickle.len());
                pickle[at] = byte;
            }
            if let Some(cut) = cut {
                pickle.truncate(cut.index(pickle.len()));
            }
            assert_agrees(&pickle);
        }
    }

    /// Plain values, with keys that Python merges (`1`, `1.0`, `True`).
    fn tree() -> impl proptest::strategy::Strategy<Value = Value> {
        use proptest::prelude::*;
        let key = prop_oneof![
            Just(Value::None),
            any::<bool>().prop_map(Value::Bool),
            (-2i64..300).prop_map(Value::Int),
            Just(Value::Int(i64::MIN)),
            Just(Value::Float(1.0)),
            "[ab\u{e9}]{0,3}|x{20,40}".prop_map(|s| Value::Str(s.as_str().into())),
        ];
        let leaf = prop_oneof![
            key.clone(),
            any::<f64>().prop_map(Value::Float),
            proptest::collection::vec(any::<u8>(), 0..4).prop_map(Value::Bytes),
        ];
        leaf.prop_recursive(4, 48, 6, move |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..6).prop_map(Value::List),
                proptest::collection::vec(inner.clone(), 0..6).prop_map(Value::Tuple),
                proptest::collection::vec((key.clone(), inner), 0..4)
                    .prop_map(|pairs| Value::Dict(Dict::from_pairs(pairs).expect("hashable keys"))),
            ]
        })
    }

    #[test]
    fn text_escapes_follow_python() {
        let decoded = escape_decode(
            br"a\\b\'\n\x41\101\7\q\
c",
        )
        .unwrap();
        assert_eq!(decoded, b"a\\b'\nAA\x07\\qc");
        assert!(escape_decode(br"ab\\").is_ok());
        assert!(escape_decode(br"ab\\\").is_err());
        // \u after an odd run of backslashes is an escape, after an even run it is text.
        assert_eq!(raw_unicode_escape(br"a\u00e9\\u00e9\x").unwrap(), "a\u{e9}\\\\u00e9\\x");
        assert_eq!(raw_unicode_escape(b"\\U0001F389\xff").unwrap(), "\u{1f389}\u{ff}");
    }
}
