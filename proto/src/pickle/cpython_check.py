"""The CPython side of agora's pickle tests (run by cpython_tests.rs; not shipped).

    python3 cpython_check.py dump    -> one line per pickle: name TAB protocol TAB hex
    python3 cpython_check.py check   <- name TAB protocol TAB hex (agora's re-encoding)
                                     -> name TAB protocol TAB OK | FAIL TAB why | INEXACT TAB ours TAB cpython's

`dump` pickles a catalogue of values with protocols 2, 4 and 5; names starting with
'!' are pickles agora must refuse cleanly. `check` loads agora's re-encoding of each,
compares it with the original (type included, NaN and -0.0 aware), and for protocol 4
compares agora's bytes with CPython's own pickle minus FRAME and MEMOIZE (when CPython's
needs no memo). Run with PYTHONHASHSEED=0 so both runs order sets alike.
"""

import array
import collections
import datetime
import decimal
import difflib
import fractions
import functools
import http
import ipaddress
import math
import multiprocessing
import pickle
import pickletools
import queue
import re
import signal
import sys
import types
import urllib.parse
import uuid
from multiprocessing.managers import AutoProxy, BaseProxy, DictProxy, ListProxy, Token


def catalogue():
    """name -> value; identical in every run."""
    c = {}

    def add(group, values):
        for i, v in enumerate(values):
            # Names must not depend on the run: no addresses.
            text = re.sub(r' at 0x[0-9a-fA-F]+', '', repr(v))[:40]
            c['%s#%d %s' % (group, i, text.replace('\t', ' ').replace('\n', ' '))] = v

    add('const', [None, True, False, Ellipsis, NotImplemented])
    add('int', [0, 1, 255, 256, 65535, 65536, -1, -256, 2**31 - 1, 2**31, -2**31, -2**31 - 1,
                2**63 - 1, -2**63, 2**63, -2**63 - 1, 2**64, -2**100, 2**2100, -2**2100 - 7])
    add('float', [0.0, -0.0, 1.5, 0.1, float('nan'), float('inf'), float('-inf'), 1e308, 5e-324])
    add('str', ['', 'a', 'h\u00e9llo', '\u20ac' * 100, 'x' * 255, 'x' * 256, 'y' * 70000,
                '\x00\n\\\'"\r\x1a', '\U0001f389 emoji', 'tab\there'])
    add('bytes', [b'', b'\x00\x01', bytes(range(256)), b'x' * 300, b'y' * 70000])
    add('bytearray', [bytearray(), bytearray(b'ab'), bytearray(300)])
    add('tuple', [(), (1,), (1, 2), (1, 2, 3), (1, 2, 3, 4), tuple(range(1000)), ((),),
                  (None, (True, (False, ())))])
    add('list', [[], [1], [1, 'a'], list(range(2500)), [[[]]], [(), {}, set(), frozenset()],
                 ['s%d' % i for i in range(20000)]])
    add('dict', [{}, {'a': 1}, {'a': 1, 2: 'b'}, {i: str(i) for i in range(2500)},
                 {(1, 2): [3], frozenset({1}): None, None: 1, 1.5: 2, b'k': 3, True: 'bool key'}])
    add('set', [set(), {1}, {1, 'a', (2, 3), frozenset()}, set(range(1500))])
    add('frozenset', [frozenset(), frozenset({1, 'a'}), frozenset(range(1200))])
    add('nested', [{'k': [1, (2, 3.5, {'x': None, 'y': [b'z', {4, 5}]})], 'e': ()}])
    shared = ['shared', 1]
    text = ''.join(['shared', '-string'])
    add('shared', [[shared, shared, {'k': shared}], [text, text], (shared, [shared])])
    add('builtin-objects', [slice(1, 2), slice(None, None, -1), range(3), range(1, 10, 2),
                            complex(1, 2), complex(-0.0, float('inf'))])
    add('datetime', [datetime.datetime(2024, 1, 2, 3, 4, 5), datetime.date(2024, 1, 2),
                     datetime.timedelta(days=1, seconds=5),
                     datetime.datetime(2024, 1, 2, tzinfo=datetime.timezone.utc)])
    add('numbers', [decimal.Decimal('1.5'), decimal.Decimal('-0'), decimal.Decimal('NaN'),
                    fractions.Fraction(1, 3)])
    add('enum', [signal.SIGINT, http.HTTPStatus.OK, re.IGNORECASE | re.MULTILINE])
    errors = [KeyError('k', 1), ValueError('bad'), OSError(2, 'No such file'), StopIteration(),
              queue.Empty(), queue.Full()]
    with_attr = KeyError('x')
    with_attr.extra = 5
    errors.append(with_attr)
    if sys.version_info >= (3, 11):
        noted = ValueError('bad')
        noted.add_note('note!')
        errors.append(noted)
    add('exception', errors)
    add('namedtuple', [urllib.parse.urlsplit('http://a/b?c#d'), difflib.Match(1, 2, 3)])
    add('collections', [collections.OrderedDict(a=1, b=[2]), collections.defaultdict(list, {'a': [1]}),
                        collections.deque([1, 2], maxlen=5), collections.Counter('abca')])
    add('array', [array.array('i', [1, 2, 3]), array.array('d', [1.5])])
    add('stdlib', [functools.partial(int, base=2), types.SimpleNamespace(a=1, b=[2]), uuid.UUID(int=5),
                   ipaddress.IPv4Address('127.0.0.1')])
    add('global', [int, len, dict, DictProxy])
    tcp = Token('dict', ('127.0.0.1', 5), 'ab')
    add('token', [tcp, Token('list', '/tmp/agora.sock', 'cd')])
    add('proxy', [DictProxy(tcp, 'pickle', incref=False),
                  ListProxy(Token('list', '/tmp/agora.sock', 'cd'), 'pickle', incref=False),
                  AutoProxy(Token('Queue', ('127.0.0.1', 5), 'ef'), 'pickle', incref=False,
                            exposed=('get', 'put')),
                  {'inner': DictProxy(tcp, 'pickle', incref=False)}])
    # What agora builds itself (cpython_tests.rs sends these under the same names).
    c['agora#token'] = tcp
    c['agora#dict proxy'] = DictProxy(tcp, 'pickle', incref=False)
    c['agora#unix list proxy'] = ListProxy(Token('list', '/tmp/agora.sock', 'cd'), 'pickle', incref=False)
    c['agora#queue.Empty'] = queue.Empty()
    c['agora#KeyError'] = KeyError('k')
    c['agora#slice'] = slice(1, None, -2)
    return c


def rejects():
    """name -> value agora must refuse (recursive, or not representable)."""
    r = {}
    lst = []
    lst.append(lst)
    r['!recursive list'] = lst
    tup = ([],)
    tup[0].append(tup)
    r['!recursive tuple'] = tup
    long_tup = ([], 1, 2, 3)
    long_tup[0].append(long_tup)
    r['!recursive long tuple'] = long_tup
    d = {}
    d['d'] = d
    r['!recursive dict'] = d
    e = KeyError('x')
    e.me = e
    r['!recursive object state'] = e
    r['!lone surrogate'] = '\ud800'
    return r


def diff(a, b, path='value'):
    """None if b is a faithful copy of a, else where they differ."""
    if type(a) is not type(b):
        return '%s: type %s != %s' % (path, type(a).__qualname__, type(b).__qualname__)
    if isinstance(a, float):
        if math.isnan(a) and math.isnan(b):
            return None
        if a == b and math.copysign(1, a) == math.copysign(1, b):
            return None
        return '%s: %r != %r' % (path, a, b)
    if isinstance(a, complex):
        return diff(a.real, b.real, path + '.real') or diff(a.imag, b.imag, path + '.imag')
    if isinstance(a, (list, tuple)):
        if len(a) != len(b):
            return '%s: len %d != %d' % (path, len(a), len(b))
        for i, (x, y) in enumerate(zip(a, b)):
            d = diff(x, y, '%s[%d]' % (path, i))
            if d:
                return d
        return None
    if isinstance(a, dict):
        if list(a.keys()) != list(b.keys()):
            return '%s: keys %r != %r' % (path, list(a)[:5], list(b)[:5])
        if getattr(a, 'default_factory', None) is not getattr(b, 'default_factory', None):
            return '%s: default_factory differs' % path
        for k in a:
            d = diff(a[k], b[k], '%s[%r]' % (path, k))
            if d:
                return d
        return None
    if isinstance(a, BaseException):
        return (diff(a.args, b.args, path + '.args')
                or diff(getattr(a, '__dict__', {}), getattr(b, '__dict__', {}), path + '.__dict__'))
    if isinstance(a, Token):
        return diff((a.typeid, a.address, a.id), (b.typeid, b.address, b.id), path)
    if isinstance(a, BaseProxy):
        return (diff(a._token, b._token, path + '._token')
                or diff(a._serializer, b._serializer, path + '._serializer')
                or diff(getattr(a, '_exposed_', None), getattr(b, '_exposed_', None), path + '._exposed_'))
    if isinstance(a, collections.deque):
        return diff(list(a), list(b), path) or diff(a.maxlen, b.maxlen, path + '.maxlen')
    try:
        if a == b:
            return None
    except Exception:
        pass
    if repr(a) == repr(b):
        return None
    return '%s: %r != %r' % (path, a, b)


def strip(data):
    """CPython's pickle without FRAME and MEMOIZE, or None if it needs its memo."""
    ops = list(pickletools.genops(data))
    out = bytearray()
    for i, (op, _arg, pos) in enumerate(ops):
        end = ops[i + 1][2] if i + 1 < len(ops) else len(data)
        if op.name in ('FRAME', 'MEMOIZE'):
            continue
        if op.name in ('BINGET', 'LONG_BINGET', 'GET', 'BINPUT', 'LONG_BINPUT', 'PUT'):
            return None
        out += data[pos:end]
    return bytes(out)


def main():
    values = catalogue()
    bad = rejects()
    if sys.argv[1] == 'dump':
        for table in (values, bad):
            for name, value in table.items():
                for proto in (2, 4, 5):
                    if proto <= pickle.HIGHEST_PROTOCOL:
                        print('%s\t%d\t%s' % (name, proto, pickle.dumps(value, proto).hex()))
        return
    # Loading a RebuildProxy would incref over a connection; a process that is
    # "inheriting" skips that, as a spawned child does.
    multiprocessing.current_process()._inheriting = True
    # Before any diff(): reading an exception's __dict__ creates it, and CPython then
    # pickles it (an empty BUILD).
    references = {name: strip(pickle.dumps(value, 4)) for name, value in values.items()}
    for line in sys.stdin:
        name, proto, data = line.rstrip('\n').split('\t')
        data = bytes.fromhex(data)
        original = values[name]
        reference = references[name] if proto == '4' else None
        try:
            loaded = pickle.loads(data)
        except Exception as e:
            print('%s\t%s\tFAIL\tloads raised %r' % (name, proto, e))
            continue
        why = diff(original, loaded)
        if why:
            print('%s\t%s\tFAIL\t%s' % (name, proto, why.replace('\t', ' ').replace('\n', ' ')[:300]))
            continue
        if reference is not None and reference != data:
            print('%s\t%s\tINEXACT\t%s\t%s' % (name, proto, data.hex(), reference.hex()))
            continue
        print('%s\t%s\tOK' % (name, proto))


if __name__ == '__main__':
    main()
