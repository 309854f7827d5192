"""A stock CPython client against a server with --max-memory: 8 MiB puts until the
server refuses one, which must arrive as MemoryError and change nothing; reads,
pops and locks keep working.  Usage: memory_limit.py ADDRESS (authkey in
$AGORA_AUTHKEY)."""

import os
import sys
from multiprocessing.managers import SyncManager

ITEM = 8 << 20


def address(text):
    host, port = text.rsplit(":", 1)
    return (host, int(port))


def main():
    manager = SyncManager(address(sys.argv[1]), authkey=os.environ["AGORA_AUTHKEY"].encode())
    manager.connect()
    d = manager.dict()
    lock = manager.Lock()
    stored = 0
    while True:
        assert stored < 64, "%d items of 8 MiB stored under a 128 MiB limit" % stored
        try:
            d["k%d" % stored] = bytes([stored]) * ITEM
        except MemoryError as e:
            assert "--max-memory" in str(e), str(e)
            break
        stored += 1
    assert stored >= 8, stored
    assert len(d) == stored, (len(d), stored)
    assert ("k%d" % stored) not in d
    assert d["k0"] == bytes([0]) * ITEM
    with lock:
        pass
    assert d.pop("k1") == bytes([1]) * ITEM
    print("OK memory_limit %d.%d.%d" % sys.version_info[:3])


if __name__ == "__main__":
    main()
