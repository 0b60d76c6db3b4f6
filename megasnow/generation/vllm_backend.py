"""Generation with vLLM's offline engine (`vllm.LLM`): the fastest path on a GPU node, no HTTP in between.

vLLM is optional and not installed by requirements.txt (it needs CUDA); this module imports without it and raises
a UserError saying what to install only when the backend is built. Written against vLLM's documented offline API:
`LLM(model=..., tensor_parallel_size=..., dtype=..., seed=..., gpu_memory_utilization=..., max_model_len=...)`,
`LLM.generate(prompts, sampling_params_list, use_tqdm=...) -> [RequestOutput]` with `RequestOutput.outputs`
(`CompletionOutput`: `index`, `text`, `token_ids`, `finish_reason`) and `prompt_token_ids`, and
`LLM.get_tokenizer()` (a HF tokenizer: `apply_chat_template`, `encode`) for chat requests.
"""
import importlib.util

from megasnow.errors import UserError
from megasnow.generation.base import GenerationBackend
from megasnow.generation.protocol import Choice, GenerationResult


def vllm_available():
    return importlib.util.find_spec("vllm") is not None


def import_vllm():
    """The vllm module, or a UserError saying how to get it (or which backend to use instead)."""
    if not vllm_available():
        raise UserError("backend.kind=vllm needs vLLM, which is not installed (it needs an NVIDIA GPU): "
                        "`pip install vllm` on the GPU node, or use backend.kind=openai against a vLLM server, "
                        "or backend.kind=local for small CPU runs")
    import vllm

    return vllm


def sampling_kwargs(params):
    """Keyword arguments of `vllm.SamplingParams` for a megasnow SamplingParams (OpenAI semantics kept: the stop
    string is cut from the text, temperature 0 is greedy, `seed` makes one request reproducible)."""
    if params.logprobs is not None or params.echo:
        raise UserError("the vllm backend does not return logprobs or echo the prompt; use backend.kind=openai "
                        "against a vLLM server (or the local backend) for logprobs / echo")
    kwargs = {"n": params.n, "max_tokens": params.max_tokens, "temperature": params.temperature,
              "top_p": params.top_p, "stop": list(params.stop), "include_stop_str_in_output": False}
    if params.seed is not None:
        kwargs["seed"] = params.seed
    if params.min_tokens:
        kwargs["min_tokens"] = params.min_tokens
    if params.top_k:
        kwargs["top_k"] = params.top_k
    if params.min_p:
        kwargs["min_p"] = params.min_p
    return kwargs


def prompt_input(request, tokenizer):
    """The vLLM prompt for a request: the completion text as is, or the chat rendered by the model's template.

    Chat prompts are rendered to text by the template (which writes its own BOS) and tokenized here without
    special tokens, so the engine's `add_special_tokens` cannot double the BOS. (Rendering to text first also
    sidesteps `apply_chat_template(tokenize=True)` returning ids or a BatchEncoding depending on the version.)
    """
    if request.messages is None:
        if request.suffix is not None:
            raise UserError(f"request {request.id}: the vllm backend has no fill-in-the-middle (suffix) support")
        return request.prompt
    text = tokenizer.apply_chat_template(list(request.messages), tokenize=False, add_generation_prompt=True)
    return {"prompt_token_ids": list(tokenizer.encode(text, add_special_tokens=False))}


def to_result(request_id, output, model):
    """A GenerationResult from one vLLM RequestOutput (choices ordered by their index)."""
    choices = [Choice(text=c.text, finish_reason=c.finish_reason or "", completion_tokens=len(c.token_ids))
               for c in sorted(output.outputs, key=lambda c: c.index)]
    return GenerationResult(request_id=request_id, choices=choices, model=model,
                            prompt_tokens=len(output.prompt_token_ids or ()),
                            completion_tokens=sum(c.completion_tokens for c in choices))


def batches(items, size):
    """Consecutive lists of at most `size` items from any iterable (the last may be shorter)."""
    batch = []
    for item in items:
        batch.append(item)
        if len(batch) >= size:
            yield batch
            batch = []
    if batch:
        yield batch


class VLLMBackend(GenerationBackend):
    """vLLM's offline engine over a HF model folder or hub id (which must be on local disk here).

    batch_size: requests handed to one `LLM.generate` call; vLLM schedules them continuously inside the call, so
        larger is faster (less tail per call), smaller loses less work to a crash (results are yielded, and so
        cached by the caller, per call). engine_kwargs: any other `vllm.LLM` argument. engine: an existing
        `vllm.LLM` to use instead of building one (benchmarks share one engine). sampling_overrides: extra
        `vllm.SamplingParams` arguments for every request (e.g. ignore_eos for fixed-length benchmarks).
    """

    def __init__(self, model, tensor_parallel_size=1, dtype="auto", gpu_memory_utilization=0.9, max_model_len=None,
                 seed=0, batch_size=4096, trust_remote_code=False, engine_kwargs=None, progress=False, engine=None,
                 sampling_overrides=None):
        if batch_size < 1:
            raise UserError(f"backend.batch_size must be >= 1, got {batch_size}")
        self.model_name = model
        self.batch_size, self.progress = batch_size, progress
        self._engine_args = {"model": model, "tensor_parallel_size": tensor_parallel_size, "dtype": dtype,
                             "gpu_memory_utilization": gpu_memory_utilization, "seed": seed,
                             "trust_remote_code": trust_remote_code, **(engine_kwargs or {})}
        if max_model_len:
            self._engine_args["max_model_len"] = max_model_len
        self.sampling_overrides = dict(sampling_overrides or {})
        self._vllm = import_vllm()
        self._llm = engine

    def start(self):
        if self._llm is None:
            self._llm = self._vllm.LLM(**self._engine_args)
        return self

    def generate(self, requests):
        self.start()
        tokenizer = self._llm.get_tokenizer()
        for batch in batches(requests, self.batch_size):
            prompts, params, ids, failed = [], [], [], []
            for req in batch:
                try:
                    prompts.append(prompt_input(req, tokenizer))
                except (UserError, ValueError) as e:  # one bad request (e.g. a template error) fails alone
                    failed.append(GenerationResult(request_id=req.id, model=self.model_name, error=str(e),
                                                   error_kind="bad_request"))
                    continue
                params.append(self._vllm.SamplingParams(**sampling_kwargs(req.params), **self.sampling_overrides))
                ids.append(req.id)
            yield from failed
            outputs = self._llm.generate(prompts, params, use_tqdm=self.progress) if prompts else []
            for rid, out in zip(ids, outputs):
                yield to_result(rid, out, self.model_name)

    def close(self):
        self._llm = None  # vLLM frees GPU memory when the engine is garbage-collected
