"""A stock CPython client stores COUNT values of 1 MiB in the named dict that the
server exposes to it as the typeid `stored` (`--expose stored=dict:stored`); a native
client replaces them afterwards (tests/tests/memory.rs).  Usage:
store_big_values.py ADDRESS COUNT (authkey in $AGORA_AUTHKEY)."""

import os
import sys
from multiprocessing.managers import BaseManager


class Manager(BaseManager):
    pass


Manager.register("stored")


def main():
    host, port = sys.argv[1].rsplit(":", 1)
    manager = Manager((host, int(port)), authkey=os.environ["AGORA_AUTHKEY"].encode())
    manager.connect()
    stored = manager.stored()
    count = int(sys.argv[2])
    # A block of 4 MiB stored and freed first: glibc then serves blocks of 1 MiB from
    # its arenas instead of mapping each on its own (its mmap threshold rises to the
    # largest block freed), as in a server that has run for a while.
    stored["warm-up"] = "w" * (4 << 20)
    del stored["warm-up"]
    for i in range(count):
        stored["k%d" % i] = "p" * (1 << 20)
    assert len(stored) == count, len(stored)
    print("OK store_big_values", len(stored))


if __name__ == "__main__":
    main()
