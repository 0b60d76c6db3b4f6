"""OpenAI API request and response types of megasnow.serve (pydantic; no torch import).

Field names, defaults and shapes follow the OpenAI API reference (completions, chat completions, models, errors)
as vLLM's `vllm/entrypoints/openai/protocol.py` does. Each request converts itself with `to_sampling_params`:
request value, then server default, then API default.
"""
import json
import time
import uuid
from typing import Any, Literal, Optional, Union

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from megasnow.generation.protocol import MAX_LOGPROBS, SamplingParamError, SamplingParams

MAX_N = 128
MAX_STOP = 16
COMPLETIONS_DEFAULT_MAX_TOKENS = 16  # the OpenAI completions API default

# Fields (OpenAI's and vLLM's extensions, vllm/entrypoints/openai/protocol.py) that would change the answer and are
# not implemented here: accepted only at a value that leaves the answer as this server gives it, else a 400 naming
# the field. (field, accepted values, what it asks for: a noun phrase completing "this server does not implement").
# Checked in this order; both endpoints.
NEUTRAL_ONLY = (
    ("presence_penalty", (None, 0.0), "presence penalties"),
    ("frequency_penalty", (None, 0.0), "frequency penalties"),
    ("repetition_penalty", (None, 1.0), "repetition penalties"),
    ("logit_bias", (None, {}), "logit biases"),
    ("use_beam_search", (None, False), "beam search"),
    ("length_penalty", (None, 1.0), "beam search length penalties"),
    ("prompt_logprobs", (None,), "prompt logprobs (use echo with logprobs)"),
    ("bad_words", (None, []), "bad-word filtering"),
    ("stop_token_ids", (None, []), "stop token ids (use stop strings)"),
    ("allowed_token_ids", (None, []), "restricting sampling to allowed token ids"),
    ("logits_processors", (None, []), "logits processors"),
    ("include_stop_str_in_output", (None, False), "keeping stop strings in the output (they are cut)"),
    ("skip_special_tokens", (None, False), "skipping special tokens (the text keeps them, as with false)"),
    ("spaces_between_special_tokens", (None, True), "removing the spaces between special tokens"),
    ("truncate_prompt_tokens", (None,), "prompt truncation"),
    ("return_tokens_as_token_ids", (None, False), "returning tokens as token ids"),
    ("guided_json", (None,), "guided decoding"),
    ("guided_regex", (None,), "guided decoding"),
    ("guided_choice", (None,), "guided decoding"),
    ("guided_grammar", (None,), "guided decoding"),
    ("structured_outputs", (None,), "structured outputs"),
    ("response_format", (None, {"type": "text"}), "response formats other than text"),
)
CHAT_NEUTRAL_ONLY = (
    ("echo", (None, False), "echoing the last message"),
    ("tools", (None, []), "tools (function calling)"),
    ("add_generation_prompt", (None, True), "prompts without the generation prompt"),
    ("continue_final_message", (None, False), "continuing the final message"),
    ("chat_template", (None,), "per-request chat templates (use the server's --chat-template)"),
    ("chat_template_kwargs", (None, {}), "chat template arguments"),
    ("documents", (None, []), "documents"),
)
# /v1/completions fields sent to /v1/chat/completions: pydantic would accept them as unknown extras and answer the
# chat alone, so they are refused (field, what it is). echo and best_of are chat fields too (vLLM): see above.
COMPLETIONS_ONLY = (
    ("suffix", "suffix is a /v1/completions parameter (fill-in-the-middle); chat completions do not take it"),
    ("prompt", "prompt is a /v1/completions parameter; chat completions take `messages` (or post the prompt to "
               "/v1/completions)"),
)


def first_unsupported(request, table):
    """(param, message) for the first field of `table` set to a value this server cannot honour, else None."""
    for name, accepted, what in table:
        value = getattr(request, name)
        if not any(value == a and (a is None) == (value is None) for a in accepted):
            shown = " or ".join("unset" if a is None else json.dumps(a) for a in accepted)
            return name, (f"{name}={json.dumps(value, default=str)} is not supported: this server does not "
                          f"implement {what}; leave it {shown}")
    return None


class OpenAIBaseModel(BaseModel):
    # Clients send fields we do not use (user, metadata, ...): accepted and ignored, as vLLM does.
    model_config = ConfigDict(extra="allow")


class OpenAIRequestModel(OpenAIBaseModel):
    """A request body's model: null means "the default" for every field that has one (OpenAI and vLLM accept
    `"n": null`, `"stream": null`, ...); a required field sent as null is still refused."""

    @model_validator(mode="before")
    @classmethod
    def _null_is_default(cls, data):
        if isinstance(data, dict):
            fields = cls.model_fields
            data = {k: v for k, v in data.items()
                    if not (v is None and k in fields and not fields[k].is_required())}
        return data


class ErrorInfo(OpenAIBaseModel):
    message: str
    type: str
    param: Optional[str] = None
    code: Optional[str] = None


class ErrorResponse(OpenAIBaseModel):
    """{"error": {...}}, the OpenAI error body; `status_code` is the HTTP status (not serialized)."""

    error: ErrorInfo
    status_code: int = Field(default=400, exclude=True)

    @classmethod
    def make(cls, status_code, message, type_, param=None, code=None):
        return cls(error=ErrorInfo(message=message, type=type_, param=param, code=code), status_code=status_code)


class StreamOptions(OpenAIRequestModel):
    include_usage: bool = Field(False, description="send a last chunk with the request's usage (no choices)")


class UsageInfo(OpenAIBaseModel):
    prompt_tokens: int = 0
    completion_tokens: int = 0
    total_tokens: int = 0


class _SamplingFields(OpenAIRequestModel):
    """Fields common to both endpoints."""

    model: str = Field(description="a served model id (GET /v1/models)")
    temperature: Optional[float] = Field(None, ge=0.0, le=2.0, description="0 is greedy; API default 1")
    top_p: Optional[float] = Field(None, gt=0.0, le=1.0, description="nucleus mass; API default 1")
    n: int = Field(1, ge=1, le=MAX_N, description="choices per prompt")
    stop: Optional[Union[str, list[str]]] = Field(None, description="up to 16 strings that end a choice (cut)")
    seed: Optional[int] = Field(None, description="choice j samples with seed + j; same output in any batch")
    stream: bool = False
    stream_options: Optional[StreamOptions] = None
    presence_penalty: Optional[float] = Field(None, description="only 0 is supported")
    frequency_penalty: Optional[float] = Field(None, description="only 0 is supported")
    logit_bias: Optional[dict] = Field(None, description="not supported")
    ignore_eos: bool = Field(False, description="(vLLM extension) generate max_tokens even past EOS: benchmarks")
    min_tokens: int = Field(0, ge=0, description="(vLLM extension) no end of text before this many new tokens")
    best_of: Optional[int] = Field(None, description="only best_of == n (or unset) is supported")
    echo: Optional[bool] = Field(None, description="(completions) prepend the prompt to each choice's text; with "
                                                   "logprobs its tokens' logprobs come first")
    response_format: Optional[dict] = Field(None, description="only {'type': 'text'} is supported")
    top_k: Optional[int] = Field(None, ge=-1, description="(vLLM extension) keep the k most likely tokens; "
                                                          "-1 or 0: all")
    min_p: Optional[float] = Field(None, ge=0.0, le=1.0, description="(vLLM extension) drop tokens below min_p x "
                                                                     "the top token's probability")
    # vLLM's other sampling extensions: only their neutral values (NEUTRAL_ONLY) are accepted
    repetition_penalty: Optional[float] = None
    length_penalty: Optional[float] = None
    use_beam_search: Optional[bool] = None
    prompt_logprobs: Optional[int] = None
    bad_words: Optional[list[str]] = None
    stop_token_ids: Optional[list[int]] = None
    allowed_token_ids: Optional[list[int]] = None
    logits_processors: Optional[list[Any]] = None
    include_stop_str_in_output: Optional[bool] = None
    skip_special_tokens: Optional[bool] = None
    spaces_between_special_tokens: Optional[bool] = None
    truncate_prompt_tokens: Optional[int] = None
    return_tokens_as_token_ids: Optional[bool] = None
    guided_json: Optional[Any] = None
    guided_regex: Optional[str] = None
    guided_choice: Optional[list[str]] = None
    guided_grammar: Optional[str] = None
    structured_outputs: Optional[Any] = None

    @field_validator("stop")
    @classmethod
    def _check_stop(cls, v):
        stops = [v] if isinstance(v, str) else list(v or [])
        if len(stops) > MAX_STOP:
            raise ValueError(f"at most {MAX_STOP} stop strings, got {len(stops)}")
        return v

    def unsupported(self):
        """(param, message) for a set field this server cannot honour, else None (answered with a 400)."""
        if self.best_of not in (None, self.n):
            return "best_of", (f"best_of={self.best_of} is not supported: this server does not implement best_of "
                               f"other than n; leave it unset or equal to n ({self.n})")
        return first_unsupported(self, NEUTRAL_ONLY)

    def stop_strings(self):
        stops = [self.stop] if isinstance(self.stop, str) else list(self.stop or [])
        return tuple(s for s in stops if s)

    def _sampling_params(self, max_tokens, logprobs=None, echo=False):
        temperature = 1.0 if self.temperature is None else self.temperature
        top_p = 1.0 if self.top_p is None else self.top_p
        return SamplingParams(max_tokens=max_tokens, temperature=temperature, top_p=top_p,
                              stop=self.stop_strings(), seed=self.seed, n=self.n, min_tokens=self.min_tokens,
                              top_k=self.top_k or 0, min_p=self.min_p or 0.0, logprobs=logprobs, echo=echo)


class CompletionRequest(_SamplingFields):
    """POST /v1/completions."""

    prompt: Union[str, list[str], list[int], list[list[int]]] = Field(
        description="text, a list of texts, token ids, or a list of token-id lists")
    # no `ge` here: the rule depends on echo, so to_sampling_params states it (one message per rule)
    max_tokens: Optional[int] = Field(None, description="new tokens per choice, >= 1 (0 only with echo: score the "
                                                        "prompt); API default 16")
    suffix: Optional[str] = Field(None, description="fill-in-the-middle: the text after the insertion point; the "
                                                    "completion is the middle (needs the tokenizer's FIM tokens)")
    logprobs: Optional[int] = Field(None, ge=0, le=MAX_LOGPROBS,
                                    description="the sampled tokens' logprobs and the N most likely alternatives")

    def prompts(self):
        """The prompts as a list of str or list-of-int items (OpenAI's four prompt forms)."""
        p = self.prompt
        if isinstance(p, str):
            return [p]
        if p and all(isinstance(x, int) for x in p):
            return [list(p)]
        return list(p)

    def to_sampling_params(self, server_default_max_tokens=None):
        """SamplingParams: max_tokens from the request, else the server's default, else the API's (16).
        Raises SamplingParamError naming the field (max_tokens 0 without echo, min_tokens > max_tokens)."""
        if self.max_tokens is not None and self.max_tokens < (0 if self.echo else 1):
            rule = ("must be >= 0 with echo: true (0 scores the prompt only)" if self.echo else
                    "must be >= 1 (or 0 with echo: true, to score the prompt only)")
            raise SamplingParamError("max_tokens", f"{rule}, got {self.max_tokens}")
        max_tokens = self.max_tokens if self.max_tokens is not None else \
            server_default_max_tokens or COMPLETIONS_DEFAULT_MAX_TOKENS
        return self._sampling_params(max_tokens, self.logprobs, bool(self.echo))


class ChatMessage(OpenAIRequestModel):
    role: str
    content: Optional[Union[str, list[dict]]] = None

    def text(self):
        """The content as one string (text parts of a multi-part content joined)."""
        if isinstance(self.content, list):
            parts = []
            for part in self.content:
                if part.get("type") != "text":
                    raise ValueError(f"content part type {part.get('type')!r} is not supported (text only)")
                parts.append(part.get("text", ""))
            return "".join(parts)
        return self.content or ""


class ChatCompletionRequest(_SamplingFields):
    """POST /v1/chat/completions."""

    messages: list[ChatMessage] = Field(min_length=1)
    # no `ge` here: to_sampling_params states the rule in the same words as completions'
    max_tokens: Optional[int] = Field(None, description="deprecated name of max_completion_tokens")
    max_completion_tokens: Optional[int] = Field(None, description="new tokens per choice, >= 1; API default: "
                                                                   "the rest of the context")
    logprobs: Optional[bool] = Field(None, description="each choice carries its tokens' logprobs")
    top_logprobs: Optional[int] = Field(None, ge=0, le=MAX_LOGPROBS,
                                        description="the N most likely alternatives per token (needs logprobs)")
    tools: Optional[list] = Field(None, description="not supported")
    # vLLM's chat extensions: only their neutral values (CHAT_NEUTRAL_ONLY) are accepted
    add_generation_prompt: Optional[bool] = None
    continue_final_message: Optional[bool] = None
    chat_template: Optional[str] = None
    chat_template_kwargs: Optional[dict] = None
    documents: Optional[list] = None

    def unsupported(self):
        if self.top_logprobs and not self.logprobs:  # OpenAI's and vLLM's rule
            return "top_logprobs", (f"top_logprobs={self.top_logprobs} needs logprobs: true; set logprobs to true "
                                    f"or leave top_logprobs out")
        extra = self.model_extra or {}
        for name, message in COMPLETIONS_ONLY:
            if extra.get(name) is not None:
                return name, message
        return first_unsupported(self, CHAT_NEUTRAL_ONLY) or super().unsupported()

    def message_dicts(self):
        return [{"role": m.role, "content": m.text()} for m in self.messages]

    def to_sampling_params(self, server_default_max_tokens=None, context_left=None):
        """SamplingParams: max_completion_tokens / max_tokens from the request, else the server's default, else the
        API's (the rest of the context: `context_left`)."""
        for name in ("max_completion_tokens", "max_tokens"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise SamplingParamError(name, f"must be >= 1, got {value}")
        max_tokens = self.max_completion_tokens or self.max_tokens or server_default_max_tokens or context_left
        return self._sampling_params(max(1, int(max_tokens)), (self.top_logprobs or 0) if self.logprobs else None)


# ---------------------------------------------------------------------------------------------- responses
def _now():
    return int(time.time())


def new_id(prefix):
    return f"{prefix}-{uuid.uuid4().hex}"


class CompletionLogProbs(OpenAIBaseModel):
    """The legacy completions `logprobs` object (megasnow.generation.logprobs.completion_logprobs)."""

    text_offset: list[int] = Field(default_factory=list)
    token_logprobs: list[Optional[float]] = Field(default_factory=list)
    tokens: list[str] = Field(default_factory=list)
    top_logprobs: list[Optional[dict[str, float]]] = Field(default_factory=list)


class CompletionChoice(OpenAIBaseModel):
    index: int
    text: str
    logprobs: Optional[CompletionLogProbs] = None
    finish_reason: Optional[Literal["stop", "length", "abort"]] = None


class CompletionResponse(OpenAIBaseModel):
    id: str = Field(default_factory=lambda: new_id("cmpl"))
    object: Literal["text_completion"] = "text_completion"
    created: int = Field(default_factory=_now)
    model: str
    choices: list[CompletionChoice]
    usage: Optional[UsageInfo] = None
    system_fingerprint: Optional[str] = None


class ChatCompletionMessage(OpenAIBaseModel):
    role: Literal["assistant"] = "assistant"
    content: str


class ChatCompletionLogProb(OpenAIBaseModel):
    token: str
    logprob: float = -9999.0
    bytes: Optional[list[int]] = None


class ChatCompletionLogProbsContent(ChatCompletionLogProb):
    top_logprobs: list[ChatCompletionLogProb] = Field(default_factory=list)


class ChatCompletionLogProbs(OpenAIBaseModel):
    """The chat `logprobs` object (megasnow.generation.logprobs.chat_logprobs_content)."""

    content: Optional[list[ChatCompletionLogProbsContent]] = None


class ChatCompletionChoice(OpenAIBaseModel):
    index: int
    message: ChatCompletionMessage
    logprobs: Optional[ChatCompletionLogProbs] = None
    finish_reason: Optional[Literal["stop", "length", "abort"]] = None


class ChatCompletionResponse(OpenAIBaseModel):
    id: str = Field(default_factory=lambda: new_id("chatcmpl"))
    object: Literal["chat.completion"] = "chat.completion"
    created: int = Field(default_factory=_now)
    model: str
    choices: list[ChatCompletionChoice]
    usage: UsageInfo
    system_fingerprint: Optional[str] = None


class DeltaMessage(OpenAIBaseModel):
    role: Optional[Literal["assistant"]] = None
    content: Optional[str] = None


class ChatCompletionStreamChoice(OpenAIBaseModel):
    index: int
    delta: DeltaMessage
    logprobs: Optional[ChatCompletionLogProbs] = None
    finish_reason: Optional[Literal["stop", "length", "abort"]] = None


class ChatCompletionChunk(OpenAIBaseModel):
    id: str
    object: Literal["chat.completion.chunk"] = "chat.completion.chunk"
    created: int
    model: str
    choices: list[ChatCompletionStreamChoice]
    usage: Optional[UsageInfo] = None
    system_fingerprint: Optional[str] = None


class CompletionChunk(OpenAIBaseModel):
    id: str
    object: Literal["text_completion"] = "text_completion"
    created: int
    model: str
    choices: list[CompletionChoice]
    usage: Optional[UsageInfo] = None
    system_fingerprint: Optional[str] = None


class ModelCard(OpenAIBaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int = Field(default_factory=_now)
    owned_by: str = "megasnow"
    max_model_len: Optional[int] = None


class ModelList(OpenAIBaseModel):
    object: Literal["list"] = "list"
    data: list[ModelCard]
