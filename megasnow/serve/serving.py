"""The logic of megasnow.serve's endpoints: OpenAIServing owns the engine's scheduler and turns OpenAI requests into
batched generation, responses, server-sent event streams, OpenAI-shaped errors, fault injection and the request log.
"""
import asyncio
import json
import time
from dataclasses import dataclass, field

from megasnow.generation.local import BadRequestError
from megasnow.generation.logprobs import chat_logprobs_content, completion_logprobs
from megasnow.generation.protocol import GenerationRequest, SamplingParamError
from megasnow.serve.protocol import (ChatCompletionChoice, ChatCompletionChunk, ChatCompletionLogProbs,
                                     ChatCompletionMessage, ChatCompletionResponse, ChatCompletionStreamChoice,
                                     CompletionChoice, CompletionChunk, CompletionResponse, DeltaMessage,
                                     ErrorResponse, ModelCard, ModelList, UsageInfo, new_id)
from megasnow.serve.request_log import request_hash
from megasnow.serve.scheduler import QueueFullError, ShuttingDownError

STATUS_CLIENT_CLOSED = 499  # nginx's code for "the client went away before the answer"


def bad_request(message, param=None):
    return ErrorResponse.make(400, message, "invalid_request_error", param)


def shutting_down():
    return ErrorResponse.make(503, "the server is shutting down; retry on another server or once it restarts",
                              "server_error", code="server_shutting_down")


def finish_reason(seq):
    """A finished choice's finish_reason; 'abort' for one aborted before it started (its Sequence is None)."""
    return "abort" if seq is None else seq.finish_reason


def sse(payload):
    """One server-sent event carrying a JSON payload (a pydantic model or a dict)."""
    text = payload.model_dump_json(exclude_none=False) if hasattr(payload, "model_dump_json") else json.dumps(payload)
    return f"data: {text}\n\n"


@dataclass
class LogContext:
    """What the request log records about one request; `done` writes its line once."""

    endpoint: str
    request_hash: str
    log: object = None
    fault: str = None
    stream: bool = False
    n: int = 1
    start: float = field(default_factory=time.monotonic)
    written: bool = False

    def done(self, status, **fields):
        if self.written or self.log is None:
            return
        self.written = True
        self.log.write(endpoint=self.endpoint, request_hash=self.request_hash, status=status, fault=self.fault,
                       stream=self.stream, n=self.n, latency_s=round(time.monotonic() - self.start, 4), **fields)


class OpenAIServing:
    """Completions, chat completions and the model list over a BatchScheduler.

    served_model_names: ids clients may ask for, listed by /v1/models (responses echo the one asked for, as vLLM);
    aliases: more ids accepted but not listed (the model path as given: vLLM's default id); default_max_tokens:
    the server's max_tokens default (None: the API's: 16 for completions, the rest of the context for chat);
    request_log: a RequestLog or None; faults: a FaultInjector or None; fault_stall_s: how long a 'stall' fault
    holds a request before answering it normally (if the client is still there).
    """

    def __init__(self, scheduler, served_model_names, default_max_tokens=None, request_log=None, faults=None,
                 fault_stall_s=30.0, aliases=()):
        self.scheduler, self.engine = scheduler, scheduler.engine
        self.served_model_names = list(served_model_names)
        self.accepted_names = frozenset(self.served_model_names) | frozenset(aliases)
        self.default_max_tokens = default_max_tokens
        self.request_log, self.faults, self.fault_stall_s = request_log, faults, fault_stall_s
        self.requests = 0
        self.created = int(time.time())  # the models' `created`: when this server started

    def _card(self, name):
        return ModelCard(id=name, created=self.created, max_model_len=self.engine.max_model_len)

    def models(self):
        """GET /v1/models: a ModelList of the served names."""
        return ModelList(data=[self._card(name) for name in self.served_model_names])

    def model(self, name):
        """GET /v1/models/{model}: its ModelCard, or a 404 ErrorResponse worded as OpenAI's."""
        if name not in self.accepted_names:
            return ErrorResponse.make(404, f"The model `{name}` does not exist.", "invalid_request_error", "model",
                                      code="model_not_found")
        return self._card(name)

    def log_context(self, endpoint, body):
        return LogContext(endpoint, request_hash(body), self.request_log)

    # ------------------------------------------------------------------------------------- faults
    async def inject_fault(self, ctx, is_disconnected):
        """None to go on, or the ErrorResponse of an injected fault. A stall waits fault_stall_s (watching the
        client) and then goes on; if the client left meanwhile it returns the 499 marker instead."""
        kind = self.faults.draw(ctx.request_hash) if self.faults is not None else None
        ctx.fault = kind
        if kind == "500":
            return ErrorResponse.make(500, "injected fault (--fault-rate): internal error", "server_error",
                                      code="injected_fault")
        if kind == "429":
            return ErrorResponse.make(429, "injected fault (--fault-rate): too many requests", "rate_limit_error",
                                      code="injected_fault")
        if kind == "stall":
            deadline = time.monotonic() + self.fault_stall_s
            while time.monotonic() < deadline:
                if self.scheduler.draining:
                    return shutting_down()
                if await is_disconnected():
                    return ErrorResponse.make(STATUS_CLIENT_CLOSED, "client went away during an injected stall",
                                              "client_closed")
                await asyncio.sleep(min(0.1, max(0.0, deadline - time.monotonic())))
        return None

    # ------------------------------------------------------------------------------------- common checks
    def _check(self, request):
        if request.model not in self.accepted_names:
            return ErrorResponse.make(404, f"The model `{request.model}` does not exist; this server serves "
                                      f"{', '.join(repr(n) for n in self.served_model_names)}",
                                      "invalid_request_error", "model", "model_not_found")
        unsupported = request.unsupported()
        if unsupported:
            return bad_request(unsupported[1], unsupported[0])
        if request.stream_options is not None and not request.stream:  # vLLM's check and wording
            return bad_request("Stream options can only be defined when `stream=True`.", "stream_options")
        return None

    def _submit(self, prepared_list, stream):
        specs = [spec for p in prepared_list for spec in p.specs]
        if len(specs) > self.scheduler.max_queue:
            return None, bad_request(f"this request asks for {len(specs)} sequences (prompts x n), more than the "
                                     f"server admits at once (--max-queue {self.scheduler.max_queue}); lower n",
                                     "n")
        try:
            return self.scheduler.submit(specs, stream=stream), None
        except QueueFullError as e:
            return None, ErrorResponse.make(429, str(e), "rate_limit_error", code="queue_full")
        except ShuttingDownError:
            return None, shutting_down()

    async def _collect(self, handle, ctx):
        """Wait for every choice of a non-streaming request; returns (sequences, error or None). Choices aborted
        by a shutdown make it a 503 (the client retries elsewhere) rather than a 200 with cut texts."""
        seqs = [None] * handle.n
        try:
            async for kind, choice, payload in handle.events():
                if kind == "error":
                    handle.cancel()
                    return None, ErrorResponse.make(500, payload, "server_error")
                if kind == "finish":
                    seqs[choice] = payload
        except asyncio.CancelledError:  # the client went away (api_router cancels us)
            handle.cancel()
            ctx.done(STATUS_CLIENT_CLOSED)
            raise
        if any(finish_reason(q) == "abort" for q in seqs):
            return None, shutting_down()
        return seqs, None

    # ------------------------------------------------------------------------------------- completions
    async def create_completion(self, request, ctx):
        """A CompletionResponse, an async iterator of SSE strings (stream), or an ErrorResponse."""
        ctx.stream, ctx.n = request.stream, request.n
        error = self._check(request)
        if error:
            return error
        try:
            params = request.to_sampling_params(self.default_max_tokens)
        except SamplingParamError as e:  # checks pydantic cannot make alone: max_tokens 0 without echo, min_tokens
            return bad_request(str(e), e.field)
        prompts = request.prompts()
        if not prompts:
            return bad_request("prompt is an empty list; give at least one prompt", "prompt")
        if request.suffix is not None and any(not isinstance(p, str) for p in prompts):
            return bad_request("suffix needs text prompts: send the prompt as text to use suffix (fill-in-the-middle "
                               "builds the prompt from text)", "suffix")
        if request.suffix is not None and request.echo:
            return bad_request("echo cannot be combined with suffix (the completion is a middle); leave echo out",
                               "echo")
        prepared = []
        try:
            for i, p in enumerate(prompts):
                text = p if isinstance(p, str) else ""
                gen = GenerationRequest(id=str(i), prompt=text, params=params, suffix=request.suffix)
                prepared.append(self.engine.prepare(gen, None if isinstance(p, str) else p,
                                                    ignore_eos=request.ignore_eos))
        except BadRequestError as e:
            return bad_request(str(e), e.param or "prompt")
        handle, error = self._submit(prepared, request.stream)
        if error:
            return error
        prompt_tokens = sum(len(p.prompt_ids) for p in prepared)
        owners = [p for p in prepared for _ in p.specs]  # choice index -> its PreparedRequest (prompt-major)

        def respond(rid, created, usage, seqs):
            return CompletionResponse(id=rid, created=created, model=request.model, usage=usage,
                                      system_fingerprint=self.engine.fingerprint,
                                      choices=[self._completion_choice(i, self.engine.choice(owners[i], q))
                                               for i, q in enumerate(seqs)])

        def stream(handle, ctx, rid, created, prompt_tokens, include_usage, model):
            return self._stream_completion(handle, ctx, rid, created, prompt_tokens, include_usage, model, owners)

        return await self._answer(handle, ctx, request, prompt_tokens, "cmpl", stream, respond)

    @staticmethod
    def _completion_choice(index, choice):
        """A CompletionChoice of a megasnow.generation Choice (LocalEngine.choice)."""
        return CompletionChoice(index=index, text=choice.text, finish_reason=choice.finish_reason,
                                logprobs=choice.logprobs)

    async def _answer(self, handle, ctx, request, prompt_tokens, id_prefix, stream, respond):
        """What both endpoints return once their sequences are submitted: the SSE iterator `stream(handle, ctx,
        rid, created, prompt_tokens, include_usage, model)` (model: the served name asked for) when the request
        streams, else `respond(rid, created, usage, seqs)` over the collected sequences (or the ErrorResponse that
        ended them). Logs the finished request."""
        created, rid = int(time.time()), new_id(id_prefix)
        if request.stream:
            include_usage = bool(request.stream_options and request.stream_options.include_usage)
            return stream(handle, ctx, rid, created, prompt_tokens, include_usage, request.model)
        seqs, error = await self._collect(handle, ctx)
        if error:
            return error
        usage = self._usage(prompt_tokens, seqs)
        ctx.done(200, prompt_tokens=usage.prompt_tokens, completion_tokens=usage.completion_tokens,
                 finish_reasons=[q.finish_reason for q in seqs], batch_sizes=sorted(handle.batch_sizes))
        return respond(rid, created, usage, seqs)

    async def _stream_completion(self, handle, ctx, rid, created, prompt_tokens, include_usage, model, owners):
        def chunk(choices, usage=None):
            return sse(CompletionChunk(id=rid, created=created, model=model, choices=choices,
                                       usage=usage, system_fingerprint=self.engine.fingerprint))

        offsets = [0] * handle.n  # per choice: characters streamed so far (text_offset of its next token)
        echoed = [False] * handle.n

        def make_choice(index, text=None, finish_reason=None, records=None, seq=None):
            text = text or ""
            if seq is not None and not echoed[index]:  # echo: the prompt (and its logprobs) come first, once
                echoed[index] = True
                if owners[index].echo_text:
                    text = owners[index].echo_text + text
                    records = (seq.prompt_logprobs or []) + (records or [])
            logprobs = None
            if records:
                logprobs, _ = completion_logprobs(records, offsets[index])
            offsets[index] += len(text)
            return CompletionChoice(index=index, text=text, finish_reason=finish_reason, logprobs=logprobs)

        async for item in self._stream(handle, ctx, prompt_tokens, include_usage, chunk, make_choice):
            yield item

    async def _stream(self, handle, ctx, prompt_tokens, include_usage, chunk, make_choice, first=()):
        """The SSE stream shared by both endpoints: `first` chunks, text deltas (with the logprobs of the tokens
        whose text they carry), one finish chunk per choice, the usage chunk if asked, `data: [DONE]`. A shutdown
        aborts the choices: each still gets its finish chunk (finish_reason 'abort') and the stream its [DONE].
        make_choice(index, text=, finish_reason=, records=, seq=) builds one choice (seq None: a choice aborted
        before it started). Logs 200 when complete, 499 when the client left midway."""
        seqs = [None] * handle.n
        completed = False
        try:
            for item in first:
                yield item
            async for kind, choice, payload in handle.events():
                if kind == "delta":
                    text, records, seq = payload
                    yield chunk([make_choice(choice, text=text, records=records, seq=seq)])
                elif kind == "finish":
                    seqs[choice] = payload
                    yield chunk([make_choice(choice, finish_reason=finish_reason(payload), seq=payload)])
                else:
                    handle.cancel()
                    yield sse(ErrorResponse.make(500, payload, "server_error").model_dump())
                    ctx.done(500, error=payload)
                    return
            usage = self._usage(prompt_tokens, seqs)
            if include_usage:
                yield chunk([], usage)
            yield "data: [DONE]\n\n"
            completed = True
            ctx.done(200, prompt_tokens=usage.prompt_tokens, completion_tokens=usage.completion_tokens,
                     finish_reasons=[finish_reason(q) for q in seqs], batch_sizes=sorted(handle.batch_sizes))
        finally:
            if not completed:
                handle.cancel()
                ctx.done(STATUS_CLIENT_CLOSED)

    @staticmethod
    def _usage(prompt_tokens, seqs):
        completion = sum(q.num_generated for q in seqs if q is not None)
        return UsageInfo(prompt_tokens=prompt_tokens, completion_tokens=completion,
                         total_tokens=prompt_tokens + completion)

    # ------------------------------------------------------------------------------------- chat
    async def create_chat_completion(self, request, ctx):
        """A ChatCompletionResponse, an async iterator of SSE strings (stream), or an ErrorResponse."""
        ctx.stream, ctx.n = request.stream, request.n
        error = self._check(request)
        if error:
            return error
        try:
            messages = request.message_dicts()
        except ValueError as e:
            return bad_request(str(e), "messages")
        try:
            probe = GenerationRequest(id="0", messages=messages)
            prompt_ids = self.engine.encode(self.engine.prompt_text(probe), add_bos=False)
            context_left = self.engine.max_model_len - len(prompt_ids)
            if context_left < 1:
                raise BadRequestError(f"This model's maximum context length is {self.engine.max_model_len} tokens. "
                                      f"However, your messages resulted in {len(prompt_ids)} tokens. Please reduce "
                                      f"the length of the messages.")
            params = request.to_sampling_params(self.default_max_tokens, context_left)
            prepared = self.engine.prepare(GenerationRequest(id="0", messages=messages, params=params), prompt_ids,
                                           ignore_eos=request.ignore_eos)
        except BadRequestError as e:
            return bad_request(str(e), "messages")
        except SamplingParamError as e:  # min_tokens > max_tokens
            return bad_request(str(e), e.field)
        handle, error = self._submit([prepared], request.stream)
        if error:
            return error

        def respond(rid, created, usage, seqs):
            return ChatCompletionResponse(
                id=rid, created=created, model=request.model, usage=usage,
                system_fingerprint=self.engine.fingerprint,
                choices=[ChatCompletionChoice(index=i, message=ChatCompletionMessage(content=q.text),
                                              finish_reason=q.finish_reason, logprobs=self._chat_logprobs(q.logprobs))
                         for i, q in enumerate(seqs)])

        return await self._answer(handle, ctx, request, len(prepared.prompt_ids), "chatcmpl", self._stream_chat,
                                  respond)

    @staticmethod
    def _chat_logprobs(records):
        """The chat `logprobs` object of a choice's records, or None when the request asked for none."""
        return None if records is None else ChatCompletionLogProbs(content=chat_logprobs_content(records))

    async def _stream_chat(self, handle, ctx, rid, created, prompt_tokens, include_usage, model):
        def chunk(choices, usage=None):
            return sse(ChatCompletionChunk(id=rid, created=created, model=model, choices=choices,
                                           usage=usage, system_fingerprint=self.engine.fingerprint))

        def make_choice(index, text=None, finish_reason=None, records=None, seq=None):
            delta = DeltaMessage(content=text) if text is not None else DeltaMessage()
            return ChatCompletionStreamChoice(index=index, delta=delta, finish_reason=finish_reason,
                                              logprobs=self._chat_logprobs(records) if records else None)

        first = [chunk([ChatCompletionStreamChoice(index=i, delta=DeltaMessage(role="assistant", content=""))])
                 for i in range(handle.n)]
        async for item in self._stream(handle, ctx, prompt_tokens, include_usage, chunk, make_choice, first):
            yield item
