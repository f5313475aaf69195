"""Dynamic micro-batching: concurrent requests merge into token-budget batches off the event loop.

Requests put their rows on one queue. A single loop takes the first waiting row, waits at most
``wait_s`` for more to join (up to ``max_batch_size`` rows and ``max_batch_tokens`` tokens), runs
the model in a dedicated thread, and hands every request its own vectors. A batch that fails fails
only the requests that had rows in it. New work is refused while ``max_queued_tokens`` are waiting.

A request that is cancelled (its client went away) takes its rows off the queue and releases their
tokens at once; rows of it that a gathering batch already took are left out when that batch runs.
Only rows already inside a running model call are still computed.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np

from nosink.inputs import TokenizedText

EmbedRows = Callable[[list[TokenizedText]], np.ndarray]
BatchObserver = Callable[[int, int, float], None]  # (rows, tokens, model seconds) of every model batch
DropObserver = Callable[[int], None]  # rows of cancelled requests dropped before any model call


class Overloaded(Exception):
    """The queue already holds ``max_queued_tokens``; the caller should retry later."""


class TooLarge(Exception):
    """The request alone holds more tokens than ``max_queued_tokens``: it could never be admitted."""


class BatchFailed(Exception):
    """The model failed on a batch that held this request's rows."""


@dataclass(eq=False)  # compared and hashed by identity: one item per queued row
class _Work:
    row: TokenizedText
    future: asyncio.Future


class MicroBatcher:
    """Merges rows of concurrent requests into model batches; one model call at a time."""

    def __init__(
        self,
        embed: EmbedRows,
        *,
        max_batch_size: int,
        max_batch_tokens: int,
        wait_s: float,
        max_queued_tokens: int,
        observe: BatchObserver | None = None,
        observe_drop: DropObserver | None = None,
    ) -> None:
        self._embed = embed
        self._max_batch_size = max_batch_size
        self._max_batch_tokens = max_batch_tokens
        self._wait_s = wait_s
        self._max_queued_tokens = max_queued_tokens
        self._observe = observe or (lambda rows, tokens, seconds: None)
        self._observe_drop = observe_drop or (lambda rows: None)
        self._pending: deque[_Work] = deque()  # rows no batch has taken yet, oldest first
        self._arrived = asyncio.Event()  # set when rows are queued
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="nosink-model")
        self._task: asyncio.Task | None = None
        self.queued_tokens = 0  # tokens of queued rows and of rows in gathering or running batches
        self.dropped_rows = 0  # rows of cancelled requests that never went into a model call

    @property
    def alive(self) -> bool:
        """The batching loop is running (started, and neither finished nor crashed)."""
        return self._task is not None and not self._task.done()

    @property
    def queued_rows(self) -> int:
        """Rows that no batch has taken yet."""
        return len(self._pending)

    async def start(self) -> None:
        self._task = asyncio.create_task(self._loop(), name="nosink-batcher")

    async def stop(self) -> None:
        """Finish every queued row, then stop the loop and the model thread."""
        while self._pending and self._task is not None and not self._task.done():
            await asyncio.sleep(0.01)
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        self._executor.shutdown(wait=True)

    async def embed(self, rows: list[TokenizedText], *, force: bool = False) -> np.ndarray:
        """Vectors [len(rows), D] for ``rows``; raises TooLarge or Overloaded (unless ``force``), or BatchFailed.

        Cancelling the caller drops its rows that no batch has taken yet, and releases their tokens.
        """
        tokens = sum(len(row.ids) for row in rows)
        if not force and tokens > self._max_queued_tokens:
            raise TooLarge(f"the request holds {tokens} tokens, more than the queue takes ({self._max_queued_tokens})")
        if not force and self.queued_tokens + tokens > self._max_queued_tokens:
            raise Overloaded(f"{self.queued_tokens} tokens are already waiting")
        loop = asyncio.get_running_loop()
        work = [_Work(row, loop.create_future()) for row in rows]
        self.queued_tokens += tokens
        self._pending.extend(work)
        self._arrived.set()
        try:
            results = await asyncio.gather(*(item.future for item in work), return_exceptions=True)
        except asyncio.CancelledError:  # gather has cancelled every row's future: no batch will compute them
            self._drop(work)
            raise
        failure = next((result for result in results if isinstance(result, BaseException)), None)
        if failure is not None:
            raise failure
        return np.stack(results)

    def _drop(self, work: list[_Work]) -> None:
        """Take ``work``'s rows that no batch has taken yet off the queue, and release their tokens."""
        mine = set(work)
        gone = [item for item in self._pending if item in mine]
        if not gone:
            return
        self._pending = deque(item for item in self._pending if item not in mine)
        self.queued_tokens -= sum(len(item.row.ids) for item in gone)
        self._count_dropped(len(gone))

    def _count_dropped(self, rows: int) -> None:
        self.dropped_rows += rows
        self._observe_drop(rows)

    async def _loop(self) -> None:
        while True:
            batch = await self._collect()
            await self._run(batch)

    async def _collect(self) -> list[_Work]:
        await self._wait_for_rows(deadline=None)
        batch = [self._pending.popleft()]
        tokens = len(batch[0].row.ids)
        deadline = asyncio.get_running_loop().time() + self._wait_s
        while len(batch) < self._max_batch_size and tokens < self._max_batch_tokens:
            if not await self._wait_for_rows(deadline=deadline):
                break
            item = self._pending.popleft()  # no await since the wait: the row is still queued
            batch.append(item)
            tokens += len(item.row.ids)
        return batch

    async def _wait_for_rows(self, *, deadline: float | None) -> bool:
        """True once a row is queued; False if the loop's clock passes ``deadline`` first (None: wait for ever)."""
        loop = asyncio.get_running_loop()
        while not self._pending:
            self._arrived.clear()
            if deadline is None:
                await self._arrived.wait()
                continue
            remaining = deadline - loop.time()
            if remaining <= 0:
                return False
            try:
                await asyncio.wait_for(self._arrived.wait(), remaining)
            except asyncio.TimeoutError:  # Python 3.10: not the builtin TimeoutError
                return False
        return True

    async def _run(self, batch: list[_Work]) -> None:
        tokens = sum(len(item.row.ids) for item in batch)
        live = [item for item in batch if not item.future.done()]  # cancelled while the batch gathered: left out
        if len(live) < len(batch):
            self._count_dropped(len(batch) - len(live))
        try:
            if live:
                await self._compute(live)
        finally:
            self.queued_tokens -= tokens

    async def _compute(self, batch: list[_Work]) -> None:
        """One model call on ``batch``; every row's future gets its vector, or BatchFailed."""
        tokens = sum(len(item.row.ids) for item in batch)
        start = time.perf_counter()
        try:
            vectors = await asyncio.get_running_loop().run_in_executor(
                self._executor, self._embed, [item.row for item in batch]
            )
        except Exception as error:  # the model failed: fail this batch's requests only
            for item in batch:
                if not item.future.done():
                    item.future.set_exception(BatchFailed(type(error).__name__))
        else:
            self._observe(len(batch), tokens, time.perf_counter() - start)
            for item, vector in zip(batch, vectors, strict=True):
                if not item.future.done():  # a client that went away during the model call: its row is wasted
                    item.future.set_result(vector)
