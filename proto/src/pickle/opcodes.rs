//! The pickle opcodes (protocols 0–5), as named by CPython's `pickletools`.
//!
//! Only a table of bytes and names: what each one means to agora is in the decoder
//! (`decode`) and the encoder (`encode`).

/// Push a mark on the mark stack (`(`).
pub const MARK: u8 = b'(';
/// End of the pickle: the top of the stack is the result (`.`).
pub const STOP: u8 = b'.';
/// Discard the top of the stack (`0`).
pub const POP: u8 = b'0';
/// Discard everything down to and including the top mark (`1`).
pub const POP_MARK: u8 = b'1';
/// Duplicate the top of the stack (`2`); CPython never emits it.
pub const DUP: u8 = b'2';
/// A float as text (`F`).
pub const FLOAT: u8 = b'F';
/// An int (or `00`/`01` for a bool) as text (`I`).
pub const INT: u8 = b'I';
/// A signed 4-byte little-endian int (`J`).
pub const BININT: u8 = b'J';
/// An unsigned 1-byte int (`K`).
pub const BININT1: u8 = b'K';
/// An int as text, optionally followed by `L` (`L`).
pub const LONG: u8 = b'L';
/// An unsigned 2-byte little-endian int (`M`).
pub const BININT2: u8 = b'M';
/// `None` (`N`).
pub const NONE: u8 = b'N';
/// A persistent id as text (`P`).
pub const PERSID: u8 = b'P';
/// A persistent id taken from the stack (`Q`).
pub const BINPERSID: u8 = b'Q';
/// `callable(*args)` (`R`).
pub const REDUCE: u8 = b'R';
/// A quoted, escaped Python 2 `str` as text (`S`).
pub const STRING: u8 = b'S';
/// A Python 2 `str` with a 4-byte length (`T`).
pub const BINSTRING: u8 = b'T';
/// A Python 2 `str` with a 1-byte length (`U`).
pub const SHORT_BINSTRING: u8 = b'U';
/// A str in raw-unicode-escape text (`V`).
pub const UNICODE: u8 = b'V';
/// A UTF-8 str with a 4-byte length (`X`).
pub const BINUNICODE: u8 = b'X';
/// Append the top of the stack to the list below it (`a`).
pub const APPEND: u8 = b'a';
/// Apply the state on top of the stack to the object below it (`b`).
pub const BUILD: u8 = b'b';
/// A global as two text lines, module and name (`c`).
pub const GLOBAL: u8 = b'c';
/// Build a dict from the key/value pairs above the top mark (`d`).
pub const DICT: u8 = b'd';
/// An empty dict (`}`).
pub const EMPTY_DICT: u8 = b'}';
/// Extend the list below the top mark with the items above it (`e`).
pub const APPENDS: u8 = b'e';
/// Push a memo entry, index as text (`g`).
pub const GET: u8 = b'g';
/// Push a memo entry, 1-byte index (`h`).
pub const BINGET: u8 = b'h';
/// Old-style instance from two text lines and the items above the mark (`i`).
pub const INST: u8 = b'i';
/// Push a memo entry, 4-byte index (`j`).
pub const LONG_BINGET: u8 = b'j';
/// Build a list from the items above the top mark (`l`).
pub const LIST: u8 = b'l';
/// An empty list (`]`).
pub const EMPTY_LIST: u8 = b']';
/// Old-style instance from the class and items above the mark (`o`).
pub const OBJ: u8 = b'o';
/// Store the top of the stack in the memo, index as text (`p`).
pub const PUT: u8 = b'p';
/// Store the top of the stack in the memo, 1-byte index (`q`).
pub const BINPUT: u8 = b'q';
/// Store the top of the stack in the memo, 4-byte index (`r`).
pub const LONG_BINPUT: u8 = b'r';
/// Set one key of the dict below the key and value (`s`).
pub const SETITEM: u8 = b's';
/// Build a tuple from the items above the top mark (`t`).
pub const TUPLE: u8 = b't';
/// An empty tuple (`)`).
pub const EMPTY_TUPLE: u8 = b')';
/// Set the key/value pairs above the top mark in the dict below it (`u`).
pub const SETITEMS: u8 = b'u';
/// A float, 8 bytes big-endian IEEE 754 (`G`).
pub const BINFLOAT: u8 = b'G';

/// Protocol version header (protocol 2).
pub const PROTO: u8 = 0x80;
/// `cls.__new__(cls, *args)` (protocol 2).
pub const NEWOBJ: u8 = 0x81;
/// A copyreg extension code, 1 byte (protocol 2).
pub const EXT1: u8 = 0x82;
/// A copyreg extension code, 2 bytes (protocol 2).
pub const EXT2: u8 = 0x83;
/// A copyreg extension code, 4 bytes (protocol 2).
pub const EXT4: u8 = 0x84;
/// A tuple of the top item (protocol 2).
pub const TUPLE1: u8 = 0x85;
/// A tuple of the top two items (protocol 2).
pub const TUPLE2: u8 = 0x86;
/// A tuple of the top three items (protocol 2).
pub const TUPLE3: u8 = 0x87;
/// `True` (protocol 2).
pub const NEWTRUE: u8 = 0x88;
/// `False` (protocol 2).
pub const NEWFALSE: u8 = 0x89;
/// An int as little-endian two's complement, 1-byte length (protocol 2).
pub const LONG1: u8 = 0x8a;
/// An int as little-endian two's complement, 4-byte length (protocol 2).
pub const LONG4: u8 = 0x8b;

/// Bytes with a 4-byte length (protocol 3).
pub const BINBYTES: u8 = b'B';
/// Bytes with a 1-byte length (protocol 3).
pub const SHORT_BINBYTES: u8 = b'C';

/// A UTF-8 str with a 1-byte length (protocol 4).
pub const SHORT_BINUNICODE: u8 = 0x8c;
/// A UTF-8 str with an 8-byte length (protocol 4).
pub const BINUNICODE8: u8 = 0x8d;
/// Bytes with an 8-byte length (protocol 4).
pub const BINBYTES8: u8 = 0x8e;
/// An empty set (protocol 4).
pub const EMPTY_SET: u8 = 0x8f;
/// Add the items above the top mark to the set below it (protocol 4).
pub const ADDITEMS: u8 = 0x90;
/// Build a frozenset from the items above the top mark (protocol 4).
pub const FROZENSET: u8 = 0x91;
/// `cls.__new__(cls, *args, **kwargs)` (protocol 4).
pub const NEWOBJ_EX: u8 = 0x92;
/// A global from the module and qualname strs on the stack (protocol 4).
pub const STACK_GLOBAL: u8 = 0x93;
/// Store the top of the stack at the next memo index (protocol 4).
pub const MEMOIZE: u8 = 0x94;
/// Start of a frame of the given 8-byte length (protocol 4).
pub const FRAME: u8 = 0x95;

/// A bytearray with an 8-byte length (protocol 5).
pub const BYTEARRAY8: u8 = 0x96;
/// An out-of-band buffer (protocol 5).
pub const NEXT_BUFFER: u8 = 0x97;
/// Make the buffer on top of the stack read-only (protocol 5).
pub const READONLY_BUFFER: u8 = 0x98;

/// The highest protocol a pickle may announce (CPython 3.8–3.14 know 0 to 5).
pub const HIGHEST_PROTOCOL: u8 = 5;

/// The `pickletools` name of an opcode, or `None` for a byte that is no opcode.
pub fn name(op: u8) -> Option<&'static str> {
    Some(match op {
        MARK => "MARK",
        STOP => "STOP",
        POP => "POP",
        POP_MARK => "POP_MARK",
        DUP => "DUP",
        FLOAT => "FLOAT",
        INT => "INT",
        BININT => "BININT",
        BININT1 => "BININT1",
        LONG => "LONG",
        BININT2 => "BININT2",
        NONE => "NONE",
        PERSID => "PERSID",
        BINPERSID => "BINPERSID",
        REDUCE => "REDUCE",
        STRING => "STRING",
        BINSTRING => "BINSTRING",
        SHORT_BINSTRING => "SHORT_BINSTRING",
        UNICODE => "UNICODE",
        BINUNICODE => "BINUNICODE",
        APPEND => "APPEND",
        BUILD => "BUILD",
        GLOBAL => "GLOBAL",
        DICT => "DICT",
        EMPTY_DICT => "EMPTY_DICT",
        APPENDS => "APPENDS",
        GET => "GET",
        BINGET => "BINGET",
        INST => "INST",
        LONG_BINGET => "LONG_BINGET",
        LIST => "LIST",
        EMPTY_LIST => "EMPTY_LIST",
        OBJ => "OBJ",
        PUT => "PUT",
        BINPUT => "BINPUT",
        LONG_BINPUT => "LONG_BINPUT",
        SETITEM => "SETITEM",
        TUPLE => "TUPLE",
        EMPTY_TUPLE => "EMPTY_TUPLE",
        SETITEMS => "SETITEMS",
        BINFLOAT => "BINFLOAT",
        PROTO => "PROTO",
        NEWOBJ => "NEWOBJ",
        EXT1 => "EXT1",
        EXT2 => "EXT2",
        EXT4 => "EXT4",
        TUPLE1 => "TUPLE1",
        TUPLE2 => "TUPLE2",
        TUPLE3 => "TUPLE3",
        NEWTRUE => "NEWTRUE",
        NEWFALSE => "NEWFALSE",
        LONG1 => "LONG1",
        LONG4 => "LONG4",
        BINBYTES => "BINBYTES",
        SHORT_BINBYTES => "SHORT_BINBYTES",
        SHORT_BINUNICODE => "SHORT_BINUNICODE",
        BINUNICODE8 => "BINUNICODE8",
        BINBYTES8 => "BINBYTES8",
        EMPTY_SET => "EMPTY_SET",
        ADDITEMS => "ADDITEMS",
        FROZENSET => "FROZENSET",
        NEWOBJ_EX => "NEWOBJ_EX",
        STACK_GLOBAL => "STACK_GLOBAL",
        MEMOIZE => "MEMOIZE",
        FRAME => "FRAME",
        BYTEARRAY8 => "BYTEARRAY8",
        NEXT_BUFFER => "NEXT_BUFFER",
        READONLY_BUFFER => "READONLY_BUFFER",
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The table matches `pickletools.opcodes` (68 opcodes, protocols 0–5).
    #[test]
    fn sixty_eight_opcodes_with_distinct_names() {
        let names: Vec<&str> = (0..=255u8).filter_map(name).collect();
        assert_eq!(names.len(), 68);
        let mut sorted = names.clone();
        sorted.sort_unstable();
        sorted.dedup();
        assert_eq!(sorted.len(), 68);
    }
}
