"""Dynamic micro-batching: concurrent requests merge into token-budget batches off the event loop.

Requests put their rows on one queue. A single loop takes the first waiting row, waits at most
``wait_s`` for more to join (up to ``max_batch_size`` rows and ``max_batch_tokens`` tokens), runs
the model in a dedicated thread, and hands every request its own vectors. A batch that fails fails
only the requests that had rows in it. New work is refused while ``max_queued_tokens`` are waiting.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np

from nosink.inputs import TokenizedText

EmbedRows = Callable[[list[TokenizedText]], np.ndarray]
BatchObserver = Callable[[int, int, float], None]  # (rows, tokens, model seconds) of every model batch


class Overloaded(Exception):
    """The queue already holds ``max_queued_tokens``; the caller should retry later."""


class TooLarge(Exception):
    """The request alone holds more tokens than ``max_queued_tokens``: it could never be admitted."""


class BatchFailed(Exception):
    """The model failed on a batch that held this request's rows."""


@dataclass
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
    ) -> None:
        self._embed = embed
        self._max_batch_size = max_batch_size
        self._max_batch_tokens = max_batch_tokens
        self._wait_s = wait_s
        self._max_queued_tokens = max_queued_tokens
        self._observe = observe or (lambda rows, tokens, seconds: None)
        self._queue: asyncio.Queue[_Work] = asyncio.Queue()
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="nosink-model")
        self._task: asyncio.Task | None = None
        self.queued_tokens = 0

    @property
    def alive(self) -> bool:
        """The batching loop is running (started, and neither finished nor crashed)."""
        return self._task is not None and not self._task.done()

    @property
    def queued_rows(self) -> int:
        return self._queue.qsize()

    async def start(self) -> None:
        self._task = asyncio.create_task(self._loop(), name="nosink-batcher")

    async def stop(self) -> None:
        """Finish every queued row, then stop the loop and the model thread."""
        while self._queue.qsize() and self._task is not None and not self._task.done():
            await asyncio.sleep(0.01)
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        self._executor.shutdown(wait=True)

    async def embed(self, rows: list[TokenizedText], *, force: bool = False) -> np.ndarray:
        """Vectors [len(rows), D] for ``rows``; raises TooLarge or Overloaded (unless ``force``), or BatchFailed."""
        tokens = sum(len(row.ids) for row in rows)
        if not force and tokens > self._max_queued_tokens:
            raise TooLarge(f"the request holds {tokens} tokens, more than the queue takes ({self._max_queued_tokens})")
        if not force and self.queued_tokens + tokens > self._max_queued_tokens:
            raise Overloaded(f"{self.queued_tokens} tokens are already waiting")
        loop = asyncio.get_running_loop()
        work = [_Work(row, loop.create_future()) for row in rows]
        self.queued_tokens += tokens
        for item in work:
            self._queue.put_nowait(item)
        results = await asyncio.gather(*(item.future for item in work), return_exceptions=True)
        failure = next((result for result in results if isinstance(result, BaseException)), None)
        if failure is not None:
            raise failure
        return np.stack(results)

    async def _loop(self) -> None:
        while True:
            batch = await self._collect()
            await self._run(batch)

    async def _collect(self) -> list[_Work]:
        batch = [await self._queue.get()]
        tokens = len(batch[0].row.ids)
        deadline = asyncio.get_running_loop().time() + self._wait_s
        while len(batch) < self._max_batch_size and tokens < self._max_batch_tokens:
            try:
                item = self._queue.get_nowait()
            except asyncio.QueueEmpty:
                remaining = deadline - asyncio.get_running_loop().time()
                if remaining <= 0:
                    break
                try:
                    item = await asyncio.wait_for(self._queue.get(), remaining)
                except asyncio.TimeoutError:  # Python 3.10: not the builtin TimeoutError
                    break
            batch.append(item)
            tokens += len(item.row.ids)
        return batch

    async def _run(self, batch: list[_Work]) -> None:
        tokens = sum(len(item.row.ids) for item in batch)
        rows = [item.row for item in batch]
        start = time.perf_counter()
        try:
            vectors = await asyncio.get_running_loop().run_in_executor(self._executor, self._embed, rows)
        except Exception as error:  # the model failed: fail this batch's requests only
            for item in batch:
                if not item.future.done():
                    item.future.set_exception(BatchFailed(type(error).__name__))
        else:
            self._observe(len(batch), tokens, time.perf_counter() - start)
            for item, vector in zip(batch, vectors, strict=True):
                if not item.future.done():  # a client that went away has a cancelled future
                    item.future.set_result(vector)
        finally:
            self.queued_tokens -= tokens
