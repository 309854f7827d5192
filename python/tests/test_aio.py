"""The asyncio facade: awaitable queue get/put, leased gets, locks with `async with`
(mutual exclusion between tasks, fencing tokens), a Condition, any method by name,
and a cancelled get giving its item back."""

import asyncio
import queue
import unittest

import agora.aio


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, 120))


class AsyncFacade(unittest.TestCase):
    def test_queue_get_put_and_leases(self):
        async def main():
            async with await agora.aio.connect() as m:
                q = await m.queue("aio-q")
                await q.put("a")
                await q.put("b")
                self.assertEqual(await q.get(), "a")
                with self.assertRaises(RuntimeError):
                    async with q.leased() as item:
                        self.assertEqual(item, "b")
                        raise RuntimeError("fails: nacked")
                async with q.leased() as item:
                    self.assertEqual(item, "b", "redelivered")
                self.assertEqual(await q.qsize(), 0)
                with self.assertRaises(queue.Empty):
                    await q.get(timeout=0.05)

        run(main())

    def test_a_blocked_get_does_not_block_the_loop(self):
        async def main():
            async with await agora.aio.connect() as m:
                q = await m.queue("aio-wait")
                getter = asyncio.ensure_future(q.get())
                await asyncio.sleep(0.05)  # the loop runs while get waits
                self.assertFalse(getter.done())
                await q.put(42)
                self.assertEqual(await getter, 42)

        run(main())

    def test_locks_exclude_between_tasks_and_carry_tokens(self):
        async def main():
            async with await agora.aio.connect() as m:
                counter = await m.dict("aio-counter")
                await counter.call("__setitem__", "n", 0)
                lock = await m.lock("aio-lock")

                async def bump():
                    for _ in range(5):
                        async with lock:
                            n = await counter.get("n")
                            await asyncio.sleep(0)  # let the others try
                            await counter.call("__setitem__", "n", n + 1)

                await asyncio.gather(*(bump() for _ in range(4)))
                self.assertEqual(await counter.get("n"), 20)

                tokens = []
                for _ in range(3):
                    async with lock.fenced() as token:
                        tokens.append(token)
                self.assertEqual(tokens, sorted(set(tokens)))

                rlock = await m.rlock("aio-rlock")
                async with rlock.fenced() as a:
                    pass
                async with rlock:
                    pass
                async with rlock.fenced() as b:
                    pass
                self.assertGreater(b, a)

        run(main())

    def test_condition_wait_and_notify(self):
        async def main():
            async with await agora.aio.connect() as m:
                cond = await m.condition("aio-cond")
                flag = await m.dict("aio-flag")

                async def waiter():
                    async with cond:
                        while not await flag.get("ready", False):
                            await cond.wait(30)
                    return "woken"

                waiting = asyncio.ensure_future(waiter())
                await asyncio.sleep(0.05)
                async with cond:
                    await flag.call("__setitem__", "ready", True)
                    await cond.notify_all()
                self.assertEqual(await waiting, "woken")

        run(main())

    def test_a_cancelled_get_gives_its_item_back(self):
        async def main():
            async with await agora.aio.connect() as m:
                q = await m.queue("aio-cancel")
                getter = asyncio.ensure_future(q.get())
                await asyncio.sleep(0.05)
                getter.cancel()
                with self.assertRaises(asyncio.CancelledError):
                    await getter
                await q.put("item")
                # The cancelled get still took it on the server, then put it back.
                self.assertEqual(await q.get(timeout=30), "item")

        run(main())


if __name__ == "__main__":
    unittest.main()
