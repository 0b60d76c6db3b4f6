"""Generation through any OpenAI-compatible endpoint (vLLM, SGLang, llama.cpp, megasnow.serve) with the `openai` SDK.

Async under the hood (one event loop on a background thread, `concurrency` requests in flight, spread over several
base URLs), synchronous to the caller: `generate(requests)` yields results as they complete. Retries (tenacity,
exponential backoff with full jitter) cover only what a retry can cure: 429, 5xx, timeouts, connection errors.
"""
import asyncio
import itertools
import os
import queue
import re
import threading
import time

from megasnow.errors import UserError
from megasnow.generation.base import GenerationBackend
from megasnow.generation.protocol import Choice, GenerationResult
from megasnow.utils.cli import warn

RETRY_STATUS = 429  # and every status >= 500
_SDK_STATUS_PREFIX = re.compile(r"^Error code: \d+(?: - )?")  # the openai SDK's start of a status error's text
NOTICE_INTERVAL_S = 15.0  # while retrying, a line at least this often (the CLI rule: no step silent > ~30 s)
_DONE = object()
# the names of the backend's settings in its messages; a caller with other names (a tool's flags) passes its own
SETTING_NAMES = {"model": "backend.model", "max_retries": "backend.max_retries", "base_urls": "backend.base_urls"}


class EndpointError(UserError):
    """An endpoint that cannot serve any request: unreachable after its retries, or refusing our API key."""


class ModelNotServedError(EndpointError):
    """backend.model names a model that an endpoint's `GET /models` does not list (every request would fail 4xx).

    model: the name asked for; url: the base URL; served: the model ids it lists. `for_flag(flag)` words the
    message for the command-line flag that set the name (e.g. `--model`)."""

    def __init__(self, model, url, served, flag="backend.model"):
        self.model, self.url, self.served = model, url, list(served)
        super().__init__(self.for_flag(flag))

    def for_flag(self, flag):
        return (f"{flag} {self.model}: the endpoint at {self.url} serves {self.served}; give one of these names "
                f"(or leave the model unset for the first one)")


def is_retryable(exc):
    """True for errors a retry may cure: 429, 5xx, timeouts and connection errors (never other 4xx)."""
    import openai

    if isinstance(exc, openai.APIStatusError):
        return exc.status_code == RETRY_STATUS or exc.status_code >= 500
    return isinstance(exc, (openai.APIConnectionError, openai.APITimeoutError))


def error_kind(exc):
    """The GenerationResult.error_kind of a failed call (see megasnow.generation.protocol)."""
    import openai

    if isinstance(exc, openai.APITimeoutError):
        return "timeout"
    if isinstance(exc, openai.APIStatusError):
        if exc.status_code in (401, 403):
            return "auth"
        return "unavailable" if is_retryable(exc) else "bad_request"
    if isinstance(exc, openai.APIConnectionError):
        return "unavailable"
    return "bad_response"


def describe_error(exc):
    """One line: the HTTP status (when there is one) and the server's message, once: the body's `message` when the
    server sent an OpenAI (or vLLM) error body, else the SDK's text without its own "Error code: N - " prefix."""
    status = getattr(exc, "status_code", None)
    body = getattr(exc, "body", None)
    message = body.get("message") if isinstance(body, dict) else None
    if not (isinstance(message, str) and message.strip()):
        message = _SDK_STATUS_PREFIX.sub("", str(exc), count=1)
    text = " ".join(message.split())[:300] or type(exc).__name__
    return f"HTTP {status}: {text}" if status else f"{type(exc).__name__}: {text}"


def failure_words(exc):
    """What went wrong in a few words, for the retry warning: 'connection failed (APIConnectionError)'."""
    import openai

    if isinstance(exc, openai.APITimeoutError):
        return f"no answer within the timeout ({type(exc).__name__})"
    if isinstance(exc, openai.APIStatusError):
        return f"HTTP {exc.status_code} ({type(exc).__name__})"
    if isinstance(exc, openai.APIConnectionError):
        return f"connection failed ({type(exc).__name__})"
    return type(exc).__name__


def request_body(req, model):
    """The JSON body sent for a GenerationRequest (/v1/chat/completions when it has messages, else
    /v1/completions): OpenAI field names, optional fields only when set."""
    p = req.params
    body = {"model": model, "max_tokens": p.max_tokens, "temperature": p.temperature, "top_p": p.top_p, "n": p.n}
    if p.stop:
        body["stop"] = list(p.stop)
    if p.seed is not None:
        body["seed"] = p.seed
    # vLLM's extension fields (OpenAI has none): sent only when they change something
    if p.min_tokens:
        body["min_tokens"] = p.min_tokens
    if p.top_k:
        body["top_k"] = p.top_k
    if p.min_p:
        body["min_p"] = p.min_p
    if req.messages is not None:
        body["messages"] = list(req.messages)
        if p.logprobs is not None:
            body["logprobs"] = True
            if p.logprobs:
                body["top_logprobs"] = p.logprobs
    else:
        body["prompt"] = req.prompt
        if req.suffix is not None:
            body["suffix"] = req.suffix
        if p.logprobs is not None:
            body["logprobs"] = p.logprobs
        if p.echo:
            body["echo"] = True
    return body


def choice_logprobs(choice, chat):
    """A response choice's logprobs in the completions shape of Choice.logprobs (a chat choice's
    `logprobs.content` converted: tokens, token_logprobs, top_logprobs {token: logprob}, text_offset), or None."""
    lp = getattr(choice, "logprobs", None)
    if lp is None:
        return None
    if not chat:
        return {"tokens": list(lp.tokens or []), "token_logprobs": list(lp.token_logprobs or []),
                "top_logprobs": list(lp.top_logprobs or []), "text_offset": list(lp.text_offset or [])}
    content = lp.content or []
    offsets, offset = [], 0
    for x in content:
        offsets.append(offset)
        offset += len(x.token)
    return {"tokens": [x.token for x in content], "token_logprobs": [x.logprob for x in content],
            "top_logprobs": [{t.token: t.logprob for t in x.top_logprobs or []} for x in content],
            "text_offset": offsets}


class OpenAIBackend(GenerationBackend):
    """Requests against one or more OpenAI-compatible base URLs (e.g. `http://host:8000/v1`, one per replica).

    model: the served model name; "" asks the first URL's `GET /models` and takes its first model.
    api_key_env: environment variable holding the API key (unset: the placeholder "EMPTY", which vLLM and
        megasnow.serve accept when started without a key).
    concurrency: requests in flight over all URLs; each new request goes to the URL with the fewest in flight,
        and a retry prefers another URL than the one that just failed.
    timeout: per-request deadline in seconds (connect + generate); a request past it is retried.
    max_retries: retries per request after the first attempt (429, 5xx, timeouts, connection errors only);
        waits are random in [0, min(backoff_max, backoff_initial * 2**attempt)] seconds ("full jitter").
    abort_after_failures: this many requests in a row failing after their retries (server gone) raise
        EndpointError instead of burning through the rest of the work.
    setting_names: how the caller names the settings `model`, `max_retries`, `base_urls` in its messages (e.g.
        {"model": "--model"} for a tool's flags); unset keys keep the config names of SETTING_NAMES (backend.model).
    Raises EndpointError (a UserError naming the URL) when a URL is unreachable at start-up after the retries, or
    answers 401/403 at any time; ModelNotServedError (an EndpointError) at start-up when `model` is set and a URL's
    `GET /models` lists other models only. Any other failed request comes back as a result with `error` set.
    """

    def __init__(self, base_urls, model="", api_key_env="OPENAI_API_KEY", concurrency=64, timeout=600.0,
                 max_retries=6, backoff_initial=1.0, backoff_max=60.0, abort_after_failures=64, headers=None,
                 setting_names=None):
        self.setting_names = {**SETTING_NAMES, **(setting_names or {})}
        if isinstance(base_urls, str):
            base_urls = [base_urls]
        self.base_urls = [u.rstrip("/") for u in base_urls]
        if not self.base_urls:
            raise UserError(f"{self.setting_names['base_urls']} is empty: give at least one OpenAI-compatible URL, "
                            f"e.g. "
                            "http://127.0.0.1:8000/v1")
        if concurrency < 1 or max_retries < 0 or timeout <= 0:
            raise UserError(f"backend: concurrency ({concurrency}) must be >= 1, max_retries ({max_retries}) >= 0 "
                            f"and timeout ({timeout}) > 0")
        self.model_name = model
        self.api_key_env = api_key_env
        self.api_key = os.environ.get(api_key_env) or "EMPTY"
        self.concurrency, self.timeout = concurrency, float(timeout)
        self.max_retries, self.backoff_initial, self.backoff_max = max_retries, backoff_initial, backoff_max
        self.abort_after_failures = abort_after_failures
        self.headers = dict(headers or {})
        self.retries = 0  # retried attempts over the backend's life (progress reports read it)
        self.retry_setting = self.setting_names["max_retries"]  # named in the retry warning
        self.notice_interval_s = NOTICE_INTERVAL_S
        self._retry_warned, self._last_notice = False, 0.0
        self.failures = {}  # error_kind -> requests that failed after their retries
        self._loop = self._thread = None
        self._clients = {}
        self._inflight = {u: 0 for u in self.base_urls}
        self._round_robin = itertools.count()
        self._started = False

    # ------------------------------------------------------------------ life cycle
    def start(self):
        """Start the event loop, check every URL (GET /models, with retries) and resolve the model name."""
        if self._started:
            return self
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="openai-backend", daemon=True)
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._probe_all(), self._loop).result()
        self._started = True
        return self

    def close(self):
        if self._loop is None:
            return
        if self._clients:
            asyncio.run_coroutine_threadsafe(self._close_clients(), self._loop).result(timeout=30)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=30)
        self._loop.close()
        self._loop = self._thread = None
        self._started = False

    async def _close_clients(self):
        for client in self._clients.values():
            await client.close()
        self._clients.clear()

    def _client(self, url):
        client = self._clients.get(url)
        if client is None:
            import openai

            # the SDK's own retries are off: ours (below) classify errors and spread retries over the URLs
            client = self._clients[url] = openai.AsyncOpenAI(
                base_url=url, api_key=self.api_key, timeout=self.timeout, max_retries=0,
                default_headers=self.headers or None)
        return client

    def _retrying(self, url_of):
        """tenacity's retry loop; `url_of()` is the URL the last attempt went to (named in the notices)."""
        from tenacity import AsyncRetrying, retry_if_exception, stop_after_attempt, wait_random_exponential

        return AsyncRetrying(stop=stop_after_attempt(self.max_retries + 1),
                             wait=wait_random_exponential(multiplier=self.backoff_initial, max=self.backoff_max),
                             retry=retry_if_exception(is_retryable), reraise=True,
                             before_sleep=lambda state: self._note_retry(url_of(), state),
                             sleep=lambda seconds: self._sleep(url_of(), seconds))

    def _note_retry(self, url, state):
        """The first retry of this backend is a warning line (the run is not stuck: it waits for the server);
        later retries a line at most every `notice_interval_s` seconds (all requests together)."""
        exc, now = state.outcome.exception(), time.monotonic()
        if not self._retry_warned:
            self._retry_warned, self._last_notice = True, now
            warn(f"{url}: {failure_words(exc)}; retrying up to {self.max_retries + 1} attempts with backoff "
                 f"({self.retry_setting} = {self.max_retries})")
        elif now - self._last_notice >= self.notice_interval_s:
            self._last_notice = now
            warn(f"{url}: still failing, {failure_words(exc)} at attempt {state.attempt_number} of "
                 f"{self.max_retries + 1}; next attempt in {state.next_action.sleep:.0f} s")

    async def _sleep(self, url, seconds):
        """The backoff wait, in pieces, so that a long wait (up to backoff_max) is not silent either."""
        end = time.monotonic() + seconds
        while (left := end - time.monotonic()) > 0:
            await asyncio.sleep(min(left, max(self.notice_interval_s, 1.0)))
            now = time.monotonic()
            if end - now > 0 and now - self._last_notice >= self.notice_interval_s:
                self._last_notice = now
                warn(f"{url}: waiting {end - now:.0f} s more before the next attempt (backoff)")

    async def _probe_all(self):
        models = await asyncio.gather(*(self._probe(u) for u in self.base_urls))
        if self.model_name:  # refused before any request (every one would fail 404); None = no GET /models there
            for url, served in zip(self.base_urls, models):
                if served and self.model_name not in served:
                    raise ModelNotServedError(self.model_name, url, served, self.setting_names["model"])
        if not self.model_name:
            url = self.base_urls[0]
            if models[0] is None:
                raise EndpointError(f"{url}: GET {url}/models answered HTTP 404 (not found): is this an "
                                    f"OpenAI-compatible server at that path? Check the URL (it usually ends in /v1); "
                                    f"for a server without /models, set {self.setting_names['model']}")
            if not models[0]:
                raise EndpointError(f"{url}: GET {url}/models lists no model; set {self.setting_names['model']}")
            self.model_name = models[0][0]

    async def _probe(self, url):
        """The model ids `url` serves (None: GET /models answered 404); EndpointError when it stays unreachable or
        refuses the key."""
        import openai

        attempts = 0
        try:
            async for attempt in self._retrying(lambda: url):
                with attempt:
                    attempts += 1
                    page = await self._client(url).models.list()
            return [m.id for m in page.data]
        except openai.APIStatusError as e:
            if e.status_code in (401, 403):
                raise self._auth_error(url, e) from None
            if e.status_code == 404:  # a server without /models (some proxies): fine if backend.model is set
                return None
            raise EndpointError(f"{url}: {describe_error(e)} after {attempts} attempt(s); check the server") from None
        except (openai.APIConnectionError, openai.APITimeoutError) as e:
            raise EndpointError(f"{url}: unreachable after {attempts} attempt(s) ({describe_error(e)}); check "
                                f"that the server is running and that the URL is right (it usually ends in /v1)"
                                ) from None

    def _auth_error(self, url, exc):
        where = f"${self.api_key_env}" if os.environ.get(self.api_key_env) else \
            f"${self.api_key_env} (unset, so the placeholder key 'EMPTY' was sent)"
        return EndpointError(f"{url}: {describe_error(exc)}: the server refused the API key from {where}; "
                             f"set {self.api_key_env} to a key it accepts")

    # ------------------------------------------------------------------ requests
    def generate(self, requests):
        """Yield one GenerationResult per request as they complete (see GenerationBackend.generate)."""
        self.start()
        results = queue.SimpleQueue()
        stop = threading.Event()
        future = asyncio.run_coroutine_threadsafe(self._run(iter(requests), results, stop), self._loop)
        try:
            while True:
                item = results.get()
                if item is _DONE:
                    break
                yield item
            future.result()  # re-raise what ended the run (EndpointError)
        finally:
            if not future.done():  # the caller stopped early (break, Ctrl-C): cancel what is in flight
                stop.set()
                self._loop.call_soon_threadsafe(future.cancel)
                try:
                    future.result(timeout=30)
                except BaseException:  # noqa: BLE001 - cancelled or failed: the caller's exception wins
                    pass

    async def _run(self, requests, results, stop):
        state = {"consecutive": 0}

        async def worker():
            for req in requests:  # one shared iterator; the loop runs one worker at a time
                if stop.is_set():
                    return
                res = await self._one(req)
                kind = res.error_kind
                if kind is not None:
                    self.failures[kind] = self.failures.get(kind, 0) + 1
                state["consecutive"] = state["consecutive"] + 1 if kind in ("unavailable", "timeout") else 0
                results.put(res)
                if state["consecutive"] >= self.abort_after_failures:
                    raise EndpointError(
                        f"{', '.join(self.base_urls)}: {state['consecutive']} requests in a row failed after "
                        f"{self.max_retries} retries each (last: {res.error}); is the server still up?")

        tasks = [asyncio.ensure_future(worker()) for _ in range(self.concurrency)]
        try:
            await asyncio.gather(*tasks)
        finally:
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            results.put(_DONE)

    def _pick(self, avoid=None):
        """The URL with the fewest requests in flight (round robin among ties), preferring one that is not `avoid`."""
        urls = self.base_urls
        if avoid is not None and len(urls) > 1:
            urls = [u for u in urls if u != avoid]
        start = next(self._round_robin) % len(urls)
        return min((urls[(start + i) % len(urls)] for i in range(len(urls))), key=self._inflight.__getitem__)

    async def _one(self, req):
        import openai

        attempts, url, last_url = 0, None, None
        try:
            async for attempt in self._retrying(lambda: url):
                with attempt:
                    attempts += 1
                    if attempts > 1:
                        self.retries += 1
                    url = self._pick(avoid=last_url)
                    last_url = url
                    self._inflight[url] += 1
                    try:
                        response = await self._call(self._client(url), req)
                    finally:
                        self._inflight[url] -= 1
            try:
                return self._to_result(req, response, attempts)
            except (AttributeError, TypeError, ValueError) as e:  # a 200 whose body is not a completion
                return self._failed(req, e, attempts, url)
        except openai.APIStatusError as e:
            if e.status_code in (401, 403):
                raise self._auth_error(url, e) from None
            return self._failed(req, e, attempts, url)
        except (openai.APIConnectionError, openai.APIResponseValidationError) as e:
            return self._failed(req, e, attempts, url)

    def _failed(self, req, exc, attempts, url):
        return GenerationResult(request_id=req.id, model=self.model_name, attempts=attempts,
                                error=f"{url}: {describe_error(exc)}", error_kind=error_kind(exc))

    async def _call(self, client, req):
        body = request_body(req, self.model_name)
        create = client.chat.completions.create if req.messages is not None else client.completions.create
        return await create(**body, extra_headers={"X-Request-Id": req.id})

    def _to_result(self, req, response, attempts):
        choices = []
        for c in sorted(response.choices, key=lambda c: c.index):
            text = c.message.content if req.messages is not None else c.text
            choices.append(Choice(text=text or "", finish_reason=c.finish_reason or "",
                                  logprobs=choice_logprobs(c, req.messages is not None) if req.params.logprobs
                                  is not None else None))
        usage = response.usage
        completion_tokens = usage.completion_tokens if usage else 0
        if len(choices) == 1:
            choices[0].completion_tokens = completion_tokens
        return GenerationResult(
            request_id=req.id, choices=choices, model=response.model or self.model_name, attempts=attempts,
            prompt_tokens=usage.prompt_tokens if usage else 0, completion_tokens=completion_tokens,
            system_fingerprint=getattr(response, "system_fingerprint", None))
