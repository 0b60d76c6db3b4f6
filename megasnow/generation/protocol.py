"""Requests and results that every generation backend speaks (field names follow the OpenAI API).

Plain dataclasses with no torch import, so drivers (synthesis, evaluation) stay light.
"""
import math
import re
from dataclasses import dataclass, field
from typing import Optional

FINISH_STOP, FINISH_LENGTH = "stop", "length"
MAX_LOGPROBS = 20  # OpenAI's limit on logprobs / top_logprobs (vLLM's default --max-logprobs is also 20)


class SamplingParamError(ValueError):
    """A value SamplingParams refuses: `field` (its name) and `rule` ("must be >= 0, got -1.0"); the message is
    "FIELD RULE"."""

    def __init__(self, field, rule):
        super().__init__(f"{field} {rule}")
        self.field, self.rule = field, rule


def checked_sampling_params(names, **fields):
    """SamplingParams(**fields), checked where the values come from: a refused value raises SamplingParamError
    whose message names it as the caller's user calls it, `names[field]` (a config key such as
    "sampling.temperature" or a flag such as "--temperature"; the field's own name when absent). Config checks
    call this so the rules live in SamplingParams alone."""
    try:
        return SamplingParams(**fields)
    except SamplingParamError as e:
        raise SamplingParamError(names.get(e.field, e.field), e.rule) from None


@dataclass(frozen=True)
class SamplingParams:
    """How to sample, as in the OpenAI completions API.

    max_tokens: new tokens per choice; temperature 0 is greedy; top_p in (0, 1]; stop: strings that end a choice
    (cut from its text); seed: makes sampling reproducible per request (whatever else shares the batch);
    n: choices per request; min_tokens: no EOS (stop token) before this many new tokens (vLLM's extension
    field; HF's min_new_tokens), e.g. so a showcase sample is never empty; top_k: keep the k most likely tokens
    (0 or -1: all, vLLM's convention; stored as 0); min_p: drop tokens less likely than min_p x the most likely
    one's probability (vLLM's and HF's min-p, Nguyen et al. 2024), in [0, 1]; logprobs: None (off) or N in
    [0, 20]: each choice carries its tokens' logprobs and the N most likely alternatives (Choice.logprobs; raw:
    the model's distribution before temperature and the filters, as vLLM's default); echo: the prompt is
    prepended to each choice's text (completion prompts only) and, with logprobs, its tokens' logprobs come
    first; with echo, max_tokens may be 0 (score the prompt only).
    """

    max_tokens: int = 256
    temperature: float = 0.0
    top_p: float = 1.0
    stop: tuple = ()
    seed: Optional[int] = None
    n: int = 1
    min_tokens: int = 0
    top_k: int = 0
    min_p: float = 0.0
    logprobs: Optional[int] = None
    echo: bool = False

    def __post_init__(self):
        for name in ("temperature", "top_p", "min_p"):
            if not math.isfinite(getattr(self, name)):
                raise SamplingParamError(name, f"must be a finite number, got {getattr(self, name)}")
        if self.max_tokens < (0 if self.echo else 1):
            raise SamplingParamError("max_tokens", f"must be >= {0 if self.echo else 1}, got {self.max_tokens}")
        if self.temperature < 0:
            raise SamplingParamError("temperature", f"must be >= 0 (0: greedy), got {self.temperature}")
        if not 0.0 < self.top_p <= 1.0:
            raise SamplingParamError("top_p", f"must be in (0, 1], got {self.top_p}")
        if not 0 <= self.min_tokens <= self.max_tokens:
            raise SamplingParamError("min_tokens", f"must be in [0, max_tokens={self.max_tokens}], got "
                                                   f"{self.min_tokens}")
        if self.n < 1:
            raise SamplingParamError("n", f"must be >= 1, got {self.n}")
        if self.top_k < -1:
            raise SamplingParamError("top_k", f"must be -1 or 0 (all tokens) or >= 1, got {self.top_k}")
        if not 0.0 <= self.min_p <= 1.0:
            raise SamplingParamError("min_p", f"must be in [0, 1], got {self.min_p}")
        if self.logprobs is not None and not 0 <= self.logprobs <= MAX_LOGPROBS:
            raise SamplingParamError("logprobs", f"must be in [0, {MAX_LOGPROBS}], got {self.logprobs}")
        object.__setattr__(self, "top_k", max(int(self.top_k), 0))
        object.__setattr__(self, "stop", tuple(self.stop or ()))


@dataclass(frozen=True)
class GenerationRequest:
    """One prompt: either `prompt` (completion: the text is continued verbatim) or `messages` (chat: a list of
    {"role", "content"} dicts rendered with the model's chat template). `suffix` asks for fill-in-the-middle
    (completion only). `id` is the caller's key and comes back on the result."""

    id: str
    prompt: Optional[str] = None
    messages: Optional[tuple] = None
    params: SamplingParams = field(default_factory=SamplingParams)
    suffix: Optional[str] = None

    def __post_init__(self):
        if (self.prompt is None) == (self.messages is None):
            raise ValueError(f"request {self.id}: give exactly one of prompt or messages")
        if self.messages is not None:
            object.__setattr__(self, "messages", tuple(dict(m) for m in self.messages))


@dataclass
class Choice:
    """One generated continuation: its text (stop string cut; the prompt first with echo), why it ended ('stop'
    or 'length'), its tokens, and with SamplingParams.logprobs its logprobs in the OpenAI completions shape:
    {"tokens": [str], "token_logprobs": [float or None], "top_logprobs": [{str: float} or None],
    "text_offset": [int]} (megasnow.generation.logprobs.completion_logprobs)."""

    text: str
    finish_reason: str
    completion_tokens: int = 0
    logprobs: Optional[dict] = None


@dataclass
class GenerationResult:
    """The answer to one request: `choices` (n of them) or `error` (a one-line reason) with `error_kind`:
    'bad_request' (4xx other than 429; never retried), 'auth' (401/403), 'unavailable' (429/5xx/connection,
    after the retries), 'timeout' (past the deadline, after the retries), 'bad_response' (an answer that is not a
    completion)."""

    request_id: str
    choices: list = field(default_factory=list)
    prompt_tokens: int = 0
    completion_tokens: int = 0
    model: str = ""
    error: Optional[str] = None
    error_kind: Optional[str] = None
    attempts: int = 1
    system_fingerprint: Optional[str] = None

    @property
    def ok(self):
        return self.error is None


_CONTEXT = re.compile(r"context (length|size|window)|too many tokens|prompt is too long", re.I)
_CONTEXT_TOKENS = re.compile(r"(?:maximum context length|context (?:length|size|window)) (?:is|of) (\d+)", re.I)


def is_context_length_error(message):
    """True for a request refused because prompt + max_tokens exceed the model's context: megasnow's local backend
    and server and vLLM word it "This model's maximum context length is N tokens"; SGLang and llama.cpp similarly."""
    return bool(message) and bool(_CONTEXT.search(message))


def context_tokens(message):
    """The context length (tokens) a context-length error names, or None."""
    m = _CONTEXT_TOKENS.search(message or "")
    return int(m.group(1)) if m else None


NOT_CURED_BY_RERUN = ("bad_request", "auth")  # error kinds a plain rerun meets again


def failure_advice(kinds, first_errors, change, too_long_fix=None, already_shown=None):
    """What to do after failed requests, by error kind (GenerationResult.error_kind): a rerun may cure an
    unavailable server or a timeout (it asks the failed requests again); a request refused as bad (HTTP 4xx, auth,
    a prompt longer than the context) is refused the same way by a plain rerun, so the advice names what to
    change: `too_long_fix` when the first refusal is a context-length error and the tool has a fix for it, else
    `change` (the tool's flags or keys). `kinds`: {kind: count}; `first_errors`: {kind: "WHERE: message"};
    `already_shown`: the text of the caller's own line, which quotes the first refusal's message when it holds it."""
    bad = sum(kinds.get(k, 0) for k in NOT_CURED_BY_RERUN)
    retry = sum(n for k, n in kinds.items() if k not in NOT_CURED_BY_RERUN)
    parts = []
    if bad:
        first = next((first_errors[k] for k in NOT_CURED_BY_RERUN if first_errors.get(k)), "")
        todo = (too_long_fix if too_long_fix and is_context_length_error(first)
                else f"change what the message names ({change})")
        shown = bool(already_shown) and first.split(": ", 1)[-1] in already_shown
        quoted = f"; first: {first}" if first and not shown else ""
        parts.append(f"{bad} were refused as bad requests (HTTP 4xx{quoted}): a plain "
                     f"rerun is refused the same way; {todo} and rerun")
    if retry:
        curable = ", ".join(k for k in kinds if k not in NOT_CURED_BY_RERUN)
        parts.append(f"{retry} failed for reasons a rerun may cure ({curable}): rerun the same command to retry the "
                     f"failed ones")
    return "; ".join(parts) or "rerun the same command to retry the failed ones"
