"""A request cancelled (Ctrl-C, the end of a run) at the moment the shared store answers is cancelled: the
governor never swallows a cancellation, or the task that asked goes on for ever (the hang of a 3 s test for
19 minutes: Python 3.11's ``asyncio.wait_for`` returns the result when both happen in one loop turn)."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence

import pytest

from pipeline.limits import Bucket, Governor, Grant, Learned, Reserved


class ControlledStore:
    """A shared store whose reservations answer when the test says."""

    where = "test"

    def __init__(self) -> None:
        self.answers: list[asyncio.Future[Grant]] = []
        self.refunds = 0

    async def reserve(self, buckets: Sequence[Bucket]) -> Grant:
        self.answers.append(asyncio.get_running_loop().create_future())
        return await self.answers[-1]

    async def refund(self, grant: Grant) -> None:
        self.refunds += 1

    async def sync(self, grant: Grant, owed: Mapping[str, float]) -> None:
        return None

    async def pause(self, seconds: float, holds: Sequence[Bucket]) -> None:
        return None

    async def publish(self, rpm: float | None, tpm: float | None) -> None:
        return None


def grant_now(buckets: Sequence[Bucket] = (Bucket("pace", 0.1, 1.0),)) -> Grant:
    return Grant(0.0, 0.0, 1, 0.0, tuple(Reserved(b, None, 0.0, 0.0) for b in buckets), Learned())


async def until(condition, turns: int = 100) -> None:
    for _ in range(turns):
        if condition():
            return
        await asyncio.sleep(0)
    raise AssertionError("never happened")


@pytest.mark.timeout(10)
def test_a_request_cancelled_as_the_store_answers_is_cancelled() -> None:
    async def main() -> None:
        store = ControlledStore()
        governor = Governor(4, rpm=600, shared=store)
        asking = asyncio.create_task(governor.acquire())
        await until(lambda: len(store.answers) == 1)
        # Both in one turn of the loop: the store's answer lands and the run is stopped.
        store.answers[0].set_result(grant_now())
        asking.cancel()
        with pytest.raises(asyncio.CancelledError):
            await asking
        assert asking.cancelled()

    asyncio.run(main())
