"""Build a generation backend by kind (openai | vllm | local) from keyword arguments or a BackendConfig.

Synthesis (megasnow.synth) and evaluation (megasnow.eval) both build their backends here, so one config section
(`backend:`) means the same thing in both.
"""
from dataclasses import dataclass, field
from typing import Literal, Optional

from megasnow.errors import UserError

KINDS = ("openai", "vllm", "local")
# keys that decide how requests are sent, never what a model answers (a run may resume with other values)
EXECUTION_KEYS = ("base_urls", "api_key_env", "concurrency", "timeout", "max_retries", "backoff_initial",
                  "backoff_max", "abort_after_failures", "batch_size", "tensor_parallel_size",
                  "gpu_memory_utilization", "device")


@dataclass
class BackendConfig:
    kind: Literal["openai", "vllm", "local"] = field(default="openai", metadata={
        "help": "openai: any OpenAI-compatible server; vllm: vLLM's offline engine; local: a megasnow/HF model"})
    model: str = field(default="", metadata={
        "help": "openai: served model name ('' = the first one the server lists); vllm/local: model folder"})
    # openai
    base_urls: list[str] = field(default_factory=lambda: ["http://127.0.0.1:8000/v1"], metadata={
        "help": "openai: endpoints (replicas) to spread requests over"})
    api_key_env: str = field(default="OPENAI_API_KEY", metadata={"help": "openai: env variable with the API key"})
    concurrency: int = field(default=64, metadata={"help": "openai: requests in flight over all URLs"})
    timeout: float = field(default=600.0, metadata={"help": "openai: per-request deadline in seconds"})
    max_retries: int = field(default=6, metadata={"help": "openai: retries of a request (429/5xx/timeout/conn)"})
    backoff_initial: float = field(default=1.0, metadata={"help": "openai: backoff scale in seconds"})
    backoff_max: float = field(default=60.0, metadata={"help": "openai: longest wait between retries"})
    abort_after_failures: int = field(default=64, metadata={
        "help": "openai: stop the run after this many requests in a row failed after their retries"})
    # vllm
    tensor_parallel_size: int = field(default=1, metadata={"help": "vllm: GPUs per engine"})
    dtype: str = field(default="auto", metadata={"help": "vllm/local: weight dtype"})
    gpu_memory_utilization: float = field(default=0.9, metadata={"help": "vllm: fraction of GPU memory"})
    max_model_len: Optional[int] = field(default=None, metadata={"help": "vllm: context length (null = model's)"})
    batch_size: int = field(default=4096, metadata={"help": "vllm: requests per LLM.generate call"})
    seed: int = field(default=0, metadata={"help": "vllm: engine seed"})
    # local
    device: str = field(default="cpu", metadata={"help": "local: torch device"})
    options: dict = field(default_factory=dict, metadata={
        "help": "extra keyword arguments: vllm.LLM arguments (vllm), LocalBackend/LocalEngine ones such as "
                "max_num_seqs, max_batch_tokens, chat_template (local), extra HTTP headers as headers (openai)"})

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ValueError(f"backend.kind must be one of {KINDS}, got {self.kind!r}")


def build_backend(kind="openai", **kwargs):
    """A GenerationBackend of `kind` built from BackendConfig keys given as keyword arguments.

    build_backend("openai", base_urls=["http://127.0.0.1:8000/v1"], concurrency=16)
    build_backend("vllm", model="/models/Llama-3.1-70B-Instruct", tensor_parallel_size=8)
    build_backend("local", model="ckpt/iter_0001000", device="cpu")
    """
    try:
        cfg = BackendConfig(kind=kind, **kwargs)
    except TypeError as e:
        raise UserError(f"backend: {e}") from None
    except ValueError as e:
        raise UserError(str(e)) from None
    return build_backend_from_config(cfg)


def build_backend_from_config(cfg):
    """A GenerationBackend for a BackendConfig (imports only the backend it builds)."""
    if cfg.kind == "openai":
        from megasnow.generation.openai_backend import OpenAIBackend

        return OpenAIBackend(cfg.base_urls, model=cfg.model, api_key_env=cfg.api_key_env,
                             concurrency=cfg.concurrency, timeout=cfg.timeout, max_retries=cfg.max_retries,
                             backoff_initial=cfg.backoff_initial, backoff_max=cfg.backoff_max,
                             abort_after_failures=cfg.abort_after_failures, **cfg.options)
    if not cfg.model:
        raise UserError(f"backend.model is empty: backend.kind={cfg.kind} needs a model folder")
    if cfg.kind == "vllm":
        from megasnow.generation.vllm_backend import VLLMBackend

        return VLLMBackend(cfg.model, tensor_parallel_size=cfg.tensor_parallel_size, dtype=cfg.dtype,
                           gpu_memory_utilization=cfg.gpu_memory_utilization, max_model_len=cfg.max_model_len,
                           seed=cfg.seed, batch_size=cfg.batch_size, engine_kwargs=cfg.options)
    from megasnow.generation.local import LocalBackend
    from megasnow.utils.device import resolve_device

    kwargs = {"device": resolve_device(cfg.device, "backend.device"), **cfg.options}
    if cfg.dtype not in ("", "auto"):
        import torch

        if not isinstance(getattr(torch, cfg.dtype, None), torch.dtype):
            raise UserError(f"backend.dtype {cfg.dtype!r} is not a torch dtype (e.g. float32, bfloat16) or 'auto'")
        kwargs["dtype"] = getattr(torch, cfg.dtype)
    return LocalBackend(cfg.model, **kwargs)
