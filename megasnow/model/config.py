"""ModelConfig (the decoder's shape and options) and named presets, with checks that say what to change.

`ModelConfig.validate_parallel(tp)` refuses tensor-parallel sizes that cannot split the model evenly.
"""
import dataclasses
import math
from dataclasses import dataclass, field

from megasnow.config import ConfigError

KERNEL_CHOICES = ("auto", "triton", "reference")
CHECKPOINT_CHOICES = ("none", "full", "selective")


class ModelConfigError(ConfigError):
    """A model shape or option that cannot work; the message names the key and what to change."""


@dataclass
class ModelConfig:
    vocab_size: int = 64000
    hidden_size: int = 2048
    ffn_hidden_size: int = 5632
    num_layers: int = 24
    num_heads: int = 16
    num_kv_heads: int = 16
    max_seq_len: int = 8192
    rope_base: float = 10000.0
    norm_eps: float = 1e-5
    tie_embeddings: bool = True
    init_std: float = 0.02
    kernels: str = field(default="auto", metadata={"help": "auto (Triton on CUDA) | triton | reference"})
    document_mask: bool = field(default=False, metadata={"help": "keep attention inside packed documents"})
    activation_checkpointing: str = field(default="none", metadata={"help": "none | full | selective"})
    make_vocab_size_divisible_by: int = field(default=128, metadata={"help": "embedding rows padded to a multiple"})
    sequence_parallel: bool = field(default=False, metadata={"help": "set from parallel.sequence_parallel"})

    def __post_init__(self):
        for name in ("vocab_size", "hidden_size", "ffn_hidden_size", "num_layers", "num_heads", "num_kv_heads",
                     "max_seq_len", "make_vocab_size_divisible_by"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ModelConfigError(f"model.{name} must be a positive integer, got {value!r}")
        if self.hidden_size % self.num_heads:
            raise ModelConfigError(
                f"model.num_heads ({self.num_heads}) must divide model.hidden_size ({self.hidden_size}); "
                f"pick num_heads from {_divisors(self.hidden_size, limit=64)}")
        if self.num_heads % self.num_kv_heads:
            raise ModelConfigError(
                f"model.num_kv_heads ({self.num_kv_heads}) must divide model.num_heads ({self.num_heads}); "
                f"pick num_kv_heads from {_divisors(self.num_heads)}")
        if self.head_dim % 2:
            raise ModelConfigError(
                f"head size hidden_size / num_heads = {self.head_dim} must be even for RoPE; change model.num_heads")
        if self.kernels not in KERNEL_CHOICES:
            raise ModelConfigError(f"model.kernels must be one of {list(KERNEL_CHOICES)}, got {self.kernels!r}")
        if self.activation_checkpointing not in CHECKPOINT_CHOICES:
            raise ModelConfigError(f"model.activation_checkpointing must be one of {list(CHECKPOINT_CHOICES)}, "
                                   f"got {self.activation_checkpointing!r}")
        if not self.init_std > 0 or not self.norm_eps > 0 or not self.rope_base > 0:
            raise ModelConfigError("model.init_std, model.norm_eps and model.rope_base must be positive")

    @property
    def head_dim(self):
        return self.hidden_size // self.num_heads

    @property
    def padded_vocab_size(self):
        """Embedding/head rows: vocab_size rounded up to make_vocab_size_divisible_by (independent of TP size)."""
        m = self.make_vocab_size_divisible_by
        return int(math.ceil(self.vocab_size / m) * m)

    def validate_parallel(self, tensor_parallel_size=1, sequence_parallel=False):
        """Refuse a tensor-parallel size that does not split heads, KV heads, FFN and padded vocabulary evenly."""
        tp = tensor_parallel_size
        if tp < 1:
            raise ModelConfigError(f"tensor-parallel size must be at least 1, got {tp}")
        checks = [("model.num_heads", self.num_heads), ("model.num_kv_heads", self.num_kv_heads),
                  ("model.ffn_hidden_size", self.ffn_hidden_size)]
        for key, value in checks:
            if value % tp:
                raise ModelConfigError(
                    f"tensor-parallel size {tp} does not divide {key} ({value}); use parallel.tensor in "
                    f"{_divisors(value, limit=16)} or change {key}")
        padded = self.padded_vocab_size
        if padded % tp:
            need = self.make_vocab_size_divisible_by * tp // math.gcd(self.make_vocab_size_divisible_by, tp)
            raise ModelConfigError(
                f"tensor-parallel size {tp} does not divide the padded vocabulary ({padded} = vocab_size "
                f"{self.vocab_size} rounded up to make_vocab_size_divisible_by {self.make_vocab_size_divisible_by}); "
                f"set model.make_vocab_size_divisible_by={need} (padding stays independent of the TP size)")
        if padded - self.vocab_size >= padded // tp:
            raise ModelConfigError(
                f"with tensor-parallel size {tp} the last vocabulary shard ({padded // tp} rows) would hold only "
                f"padding ({padded - self.vocab_size} rows); lower model.make_vocab_size_divisible_by or parallel.tensor")
        if sequence_parallel and tp == 1:
            raise ModelConfigError("sequence parallelism needs parallel.tensor >= 2; set parallel.sequence_parallel=false")

    def num_parameters(self):
        from megasnow.model.flops import num_parameters

        return num_parameters(self)

    def replace(self, **changes):
        return dataclasses.replace(self, **changes)


def check_tokenizer_fits(model_vocab, tokenizer_vocab, model_name, tokenizer_name, fix, error=ModelConfigError):
    """Refuse a model vocabulary smaller than the tokenizer's: its ids >= `model_vocab` would index past the
    embedding (IndexError at the first such token). The one rule and wording for the trainer (data.tokenizer vs
    model.vocab_size) and the converter (--tokenizer vs the checkpoint's or HF model's vocab_size).

    `model_name`/`tokenizer_name`: how the message names each (a config key or a flag); `fix`: what to change.
    Raises `error` (a UserError subclass): "<model_name> is N, smaller than <tokenizer_name>'s vocabulary (M): fix".
    """
    if model_vocab < tokenizer_vocab:
        raise error(f"{model_name} is {model_vocab}, smaller than {tokenizer_name}'s vocabulary ({tokenizer_vocab}): "
                    f"{fix}")


def _divisors(n, limit=None):
    ds = [d for d in range(1, n + 1) if n % d == 0]
    return [d for d in ds if limit is None or d <= limit]


PRESETS = {
    # Arctic-SnowCoder-1.3B (arXiv 2409.02326): Llama-2 style, MHA, tied embeddings, 64k vocabulary.
    "snowcoder-1.3b": ModelConfig(vocab_size=64000, hidden_size=2048, ffn_hidden_size=5632, num_layers=24,
                                  num_heads=16, num_kv_heads=16, max_seq_len=8192, rope_base=10000.0,
                                  tie_embeddings=True),
    # Llama-3.2-1B geometry (GQA 32/8, FFN 8192, RoPE base 500k, tied) with the recipe's 64k vocabulary.
    "llama-1b-gqa": ModelConfig(vocab_size=64000, hidden_size=2048, ffn_hidden_size=8192, num_layers=16,
                                num_heads=32, num_kv_heads=8, max_seq_len=8192, rope_base=500000.0,
                                tie_embeddings=True),
    # TinyLlama-1.1B geometry (22 layers, GQA 32/4, untied head) with the recipe's 64k vocabulary.
    "llama-1b-untied": ModelConfig(vocab_size=64000, hidden_size=2048, ffn_hidden_size=5632, num_layers=22,
                                   num_heads=32, num_kv_heads=4, max_seq_len=8192, rope_base=10000.0,
                                   tie_embeddings=False),
    # Tiny shapes for tests and the CPU quickstart (vocab_size is usually overridden by the tokenizer's).
    "tiny": ModelConfig(vocab_size=512, hidden_size=64, ffn_hidden_size=176, num_layers=2, num_heads=4,
                        num_kv_heads=4, max_seq_len=256, tie_embeddings=True),
    "tiny-gqa": ModelConfig(vocab_size=512, hidden_size=64, ffn_hidden_size=176, num_layers=2, num_heads=4,
                            num_kv_heads=2, max_seq_len=256, tie_embeddings=True),
    "tiny-untied": ModelConfig(vocab_size=512, hidden_size=64, ffn_hidden_size=176, num_layers=2, num_heads=4,
                               num_kv_heads=4, max_seq_len=256, tie_embeddings=False),
}


def get_preset(name, **overrides):
    """A fresh copy of preset `name`, with any fields replaced by keyword arguments."""
    if name not in PRESETS:
        raise ModelConfigError(f"unknown model preset {name!r}; choose one of {sorted(PRESETS)}")
    return dataclasses.replace(PRESETS[name], **overrides)
