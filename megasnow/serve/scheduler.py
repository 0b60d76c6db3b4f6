"""Dynamic batching for megasnow.serve: requests arriving close together share one batch of the KV-cache generator.

Policy (docs/serving.md): sequences (n per request) wait in one FIFO queue. When the engine is free and the queue
is not empty, the scheduler waits until `batch_wait_s` has passed since the later of the first waiting arrival
and the end of the previous batch (so clients answered by that batch can send their next request and join), or
until `max_num_seqs` sequences wait; then it takes the oldest sequences, up to `max_num_seqs` and the engine's
`max_batch_tokens` budget, and runs them to completion in its own thread, streaming each step's text back to the
asyncio loop. At most `max_queue` sequences may be admitted and unfinished (running + waiting); beyond that
`submit` raises QueueFullError (HTTP 429). A cancelled request (client gone) leaves the queue or stops at the next
step of its batch. `shutdown()` (SIGINT/SIGTERM) stops admitting requests (ShuttingDownError, HTTP 503) and aborts
every unfinished sequence: waiting ones at once, running ones at the next step of their batch (finish_reason
'abort'), so every request ends within one step.
"""
import asyncio
import collections
import threading
import time


class QueueFullError(RuntimeError):
    """The server holds max_queue unfinished sequences already (HTTP 429; retry later)."""


class ShuttingDownError(RuntimeError):
    """The server is stopping: it admits no more requests (HTTP 503)."""


class _Entry:
    __slots__ = ("spec", "choice", "handle", "arrival", "sequence", "done")

    def __init__(self, spec, choice, handle):
        self.spec, self.choice, self.handle = spec, choice, handle
        self.arrival = time.monotonic()
        self.sequence = None
        self.done = False


class RequestHandle:
    """The events of one submitted request, read in the asyncio loop: ('delta', choice, (text, logprob records or
    None, Sequence)) while streaming (the records of the tokens whose text this delta completes),
    ('finish', choice, Sequence) once per choice (Sequence None: aborted before it started: the request was
    cancelled or the server is shutting down), ('error', choice, message) if its batch failed."""

    def __init__(self, loop, n, stream, scheduler=None):
        self.loop, self.n, self.stream = loop, n, stream
        self.queue = asyncio.Queue()
        self.entries = []
        self.cancelled = False
        self.batch_sizes = set()
        self.scheduler = scheduler

    def _emit(self, event):
        self.loop.call_soon_threadsafe(self.queue.put_nowait, event)

    def cancel(self):
        """Abort every choice of this request (waiting ones leave the queue; running ones stop at the next step)."""
        self.cancelled = True
        if self.scheduler is not None:
            self.scheduler._drop_waiting(self)  # frees their queue slots now, not at the next batch
        for e in self.entries:
            if e.sequence is not None:
                e.sequence.cancel()

    async def events(self):
        """Yield events until every choice has finished (or failed)."""
        remaining = self.n
        while remaining:
            event = await self.queue.get()
            if event[0] in ("finish", "error"):
                remaining -= 1
            yield event


class BatchScheduler:
    """Runs a LocalEngine's batches in a background thread for an asyncio server (policy in the module doc).

    engine: megasnow.generation.local.LocalEngine; batch_wait_s: the collection window; max_queue: unfinished
    sequences admitted at once. Counters: `batches`, `sequences` (finished), `max_batch_seen`.
    """

    def __init__(self, engine, batch_wait_s=0.01, max_queue=1024):
        self.engine = engine
        self.batch_wait_s, self.max_queue = batch_wait_s, max_queue
        self._waiting = collections.deque()
        self._cond = threading.Condition()
        self._unfinished = 0
        self._stopping = False
        self._draining = False
        self._engine_free_since = time.monotonic()
        self._thread = None
        self.batches = self.sequences = self.max_batch_seen = 0

    def start(self):
        self._thread = threading.Thread(target=self._loop, name="megasnow-batch-scheduler", daemon=True)
        self._thread.start()

    def stop(self, timeout=10.0):
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        if self._thread is not None:
            self._thread.join(timeout)

    def shutdown(self):
        """Stop admitting requests and abort the unfinished ones (any thread; a signal handler calls it): waiting
        sequences finish at once (Sequence None), running ones stop at their batch's next step with finish_reason
        'abort'. The scheduler thread keeps running until stop()."""
        with self._cond:
            self._draining = True
            waiting, self._waiting = list(self._waiting), collections.deque()
            for e in waiting:
                self._finish_unstarted(e)
            self._cond.notify_all()

    @property
    def draining(self):
        """True once shutdown() was called."""
        return self._draining

    @property
    def unfinished(self):
        return self._unfinished

    def submit(self, specs, stream=False):
        """Queue the SequenceSpecs of one request (called in the event loop); returns its RequestHandle.
        Raises QueueFullError when they do not fit under max_queue, ShuttingDownError after shutdown()."""
        handle = RequestHandle(asyncio.get_running_loop(), len(specs), stream, self)
        with self._cond:
            if self._stopping or self._draining:
                raise ShuttingDownError("the server is shutting down and admits no more requests; retry on "
                                        "another server or once it restarts")
            if self._unfinished + len(specs) > self.max_queue:
                raise QueueFullError(f"the server's queue is full ({self._unfinished} sequences unfinished, "
                                     f"max_queue {self.max_queue}); retry later")
            self._unfinished += len(specs)
            for j, spec in enumerate(specs):
                entry = _Entry(spec, j, handle)
                handle.entries.append(entry)
                self._waiting.append(entry)
            self._cond.notify_all()
        return handle

    # ------------------------------------------------------------------------------------- scheduler thread
    def _take_batch(self):
        """Wait for the collection window, then pop the next batch (list of entries) or None when stopping."""
        with self._cond:
            while True:
                while not self._waiting and not self._stopping:
                    self._cond.wait()
                if self._stopping:
                    return None
                opened = max(self._waiting[0].arrival, self._engine_free_since)
                deadline = opened + self.batch_wait_s
                now = time.monotonic()
                if len(self._waiting) < self.engine.max_num_seqs and now < deadline:
                    self._cond.wait(deadline - now)
                    continue
                batch, longest, budget = [], 0, 0
                while self._waiting and len(batch) < self.engine.max_num_seqs:
                    e = self._waiting[0]
                    if e.handle.cancelled:
                        self._waiting.popleft()
                        self._finish_unstarted(e)
                        continue
                    new_longest = max(longest, len(e.spec.prompt))
                    new_budget = max(budget, e.spec.max_new_tokens)
                    if batch and (len(batch) + 1) * (new_longest + new_budget) > self.engine.max_batch_tokens:
                        break
                    batch.append(self._waiting.popleft())
                    longest, budget = new_longest, new_budget
                if batch:
                    return batch

    def _drop_waiting(self, handle):
        """Remove a cancelled request's entries that have not started (called from the event loop)."""
        with self._cond:
            mine = [e for e in self._waiting if e.handle is handle]
            if mine:
                self._waiting = collections.deque(e for e in self._waiting if e.handle is not handle)
                for e in mine:
                    self._finish_unstarted(e)

    def _finish_unstarted(self, entry):
        entry.done = True
        self._unfinished -= 1
        entry.handle._emit(("finish", entry.choice, None))

    def _finish(self, entry, event):
        entry.done = True
        with self._cond:
            self._unfinished -= 1
            self.sequences += 1
        entry.handle._emit(event)

    def _loop(self):
        while True:
            batch = self._take_batch()
            if batch is None:
                return
            self.batches += 1
            self.max_batch_seen = max(self.max_batch_seen, len(batch))
            for e in batch:
                e.handle.batch_sizes.add(len(batch))
            try:
                self._run(batch)
            except Exception as e:  # noqa: BLE001 - a failed batch fails its requests, never the server
                message = f"generation failed: {type(e).__name__}: {e}"
                for entry in batch:
                    if not entry.done:
                        self._finish(entry, ("error", entry.choice, message))
            finally:
                self._engine_free_since = time.monotonic()

    def _run(self, batch):
        for seqs in self.engine.run_batch([e.spec for e in batch]):
            for entry, seq in zip(batch, seqs):
                if entry.done:
                    continue
                if entry.sequence is None:
                    entry.sequence = seq
                if (entry.handle.cancelled or self._draining) and not seq.finished:
                    seq.cancel()
                if entry.handle.stream:
                    delta, records = seq.take_stream_delta(), seq.take_stream_logprobs()
                    if delta or records:
                        entry.handle._emit(("delta", entry.choice, (delta, records, seq)))
                if seq.finished:
                    self._finish(entry, ("finish", entry.choice, seq))
        for entry in batch:  # (aborted before its first step)
            if not entry.done:
                self._finish(entry, ("finish", entry.choice, entry.sequence))
