"""Synthesis config (dataclasses loaded from YAML by megasnow.config): seeds, prompt, sampling, backend,
post-processing, output and execution. `python tools/synthesize.py --help` lists every key with its default."""
import os
from dataclasses import dataclass, field
from typing import Literal, Optional

from megasnow.config import ConfigError, load_config, path_from_yaml_folder
from megasnow.curate.config import DecontaminationConfig, FiltersConfig, NearDedupConfig
from megasnow.generation.factory import BackendConfig
from megasnow.generation.protocol import SamplingParamError, checked_sampling_params


@dataclass
class SeedsConfig:
    documents: list[str] = field(default_factory=list, metadata={
        "help": "phase-2 document shards (JSONL/Parquet files, folders, globs): the selection output, or the "
                "scored documents with `scores`"})
    scores: Optional[str] = field(default=None, metadata={
        "help": "annotate.py score output folder for `documents` (null: rank by score_field, else input order)"})
    text_field: str = "text"
    lang_field: str = "lang"
    id_field: str = "id"
    score_field: str = field(default="quality_score", metadata={"help": "score field of selection-output records"})
    num_seeds: int = field(default=1000, metadata={"help": "seeds in total (requests = num_seeds x samples)"})
    python_fraction: float = field(default=0.5, metadata={"help": "share of seeds in Python (the paper: ~half)"})
    language_stats: Optional[str] = field(default=None, metadata={
        "help": "phase-1 language mix for the other languages: curate stats.json or selection_report.json "
                "(null: the mix of the seed documents)"})
    languages: list[str] = field(default_factory=list, metadata={"help": "only these languages (empty: all)"})
    mode: Literal["lines", "head"] = field(default="lines", metadata={
        "help": "lines: OSS-Instruct's min_lines..max_lines consecutive lines from a random point of a random "
                "file of the document; head: the document's first file up to head_tokens"})
    min_lines: int = 1
    max_lines: int = 15
    head_tokens: int = 512
    tokenizer: Optional[str] = field(default=None, metadata={
        "help": "tokenizer for head_tokens (SentencePiece .model or tokenizer.json); null: words and symbols"})
    seed: int = field(default=1234, metadata={"help": "random seed of the snippet choice"})

    def __post_init__(self):
        if not 0.0 <= self.python_fraction <= 1.0:
            raise ConfigError(f"seeds.python_fraction must be in [0, 1], got {self.python_fraction}")
        if not 1 <= self.min_lines <= self.max_lines:
            raise ConfigError(f"seeds: need 1 <= min_lines ({self.min_lines}) <= max_lines ({self.max_lines})")
        if self.num_seeds < 1 or self.head_tokens < 1:
            raise ConfigError(f"seeds.num_seeds ({self.num_seeds}) and seeds.head_tokens ({self.head_tokens}) "
                             f"must be >= 1")


@dataclass
class PromptConfig:
    template: str = field(default="default", metadata={
        "help": "'default' (built in) or a template file with {{seed}} and {{language}} placeholders"})
    style: Literal["chat", "completion"] = field(default="chat", metadata={
        "help": "chat: the rendered template is the user message; completion: it is the raw prompt"})
    system: Optional[str] = field(default=None, metadata={"help": "chat system message (text, or @file)"})
    answer_prefix: str = field(default="", metadata={
        "help": "put before every answer before post-processing, e.g. the code fence a completion template "
                "opens ({{fence}}, {{language}}, {{lang}} are filled in)"})
    answer_suffix: str = field(default="", metadata={"help": "put after every answer (e.g. the closing fence "
                                                              "that a stop string cut)"})


@dataclass
class SamplingConfig:
    max_tokens: int = 1024
    temperature: float = 0.0
    top_p: float = 1.0
    top_k: int = field(default=0, metadata={"help": "keep the k most likely tokens (0 or -1: all; vLLM's top_k)"})
    min_p: float = field(default=0.0, metadata={
        "help": "drop tokens less likely than min_p x the most likely one's probability, in [0, 1] (0: off)"})
    stop: list[str] = field(default_factory=list)
    seed: int = field(default=0, metadata={"help": "request k is sampled with seed + k (Magicoder's habit)"})
    samples_per_seed: int = field(default=1, metadata={"help": "requests per seed (sample index 0..n-1)"})

    def __post_init__(self):
        if self.samples_per_seed < 1:
            raise ConfigError(f"sampling.samples_per_seed must be >= 1, got {self.samples_per_seed}")
        self.params(0)  # the values SamplingParams would refuse, named by key, before anything is read or written

    def params(self, k):
        """SamplingParams of request k (sampled with seed + k); ConfigError naming the sampling.* key it refuses."""
        try:
            return checked_sampling_params({f: f"sampling.{f}" for f in ("max_tokens", "temperature", "top_p", "top_k",
                                                                         "min_p")},
                                           max_tokens=self.max_tokens, temperature=self.temperature,
                                           top_p=self.top_p, top_k=self.top_k, min_p=self.min_p,
                                           stop=tuple(self.stop), seed=self.seed + k, n=1)
        except SamplingParamError as e:
            raise ConfigError(str(e)) from None


@dataclass
class PostprocessConfig:
    require_stop: bool = field(default=True, metadata={"help": "drop completions whose finish_reason is not stop"})
    syntax_check: bool = field(default=True, metadata={"help": "Python: ast; others: tree-sitter grammars"})
    min_lines: int = field(default=3, metadata={
        "help": "drop an output with fewer non-blank lines (a fragment, not a pretraining file); 0: off"})
    min_chars: int = field(default=20, metadata={
        "help": "drop an output with fewer non-whitespace characters; 0: off"})
    seed_copy_ngram: int = field(default=5, metadata={"help": "word n-gram size of the seed-copy check"})
    seed_copy_threshold: float = field(default=0.5, metadata={
        "help": "drop an output when this fraction of its n-grams occur in its seed"})
    exact_dedup: bool = True
    near_dedup: NearDedupConfig = field(default_factory=NearDedupConfig)
    reference: list[str] = field(default_factory=list, metadata={
        "help": "phase-1/2 document shards whose files outputs must not duplicate (exact or near)"})
    reference_text_field: str = "text"
    filters: FiltersConfig = field(default_factory=FiltersConfig)
    decontamination: DecontaminationConfig = field(default_factory=DecontaminationConfig)

    def __post_init__(self):
        from megasnow.curate.checks import (check_decontamination_config, check_filters_config,
                                            check_near_dedup_config, check_range)

        if self.min_lines < 0 or self.min_chars < 0:
            raise ConfigError(f"postprocess.min_lines ({self.min_lines}) and postprocess.min_chars "
                             f"({self.min_chars}) must be >= 0 (0: off)")
        check_range("postprocess.seed_copy_ngram", self.seed_copy_ngram, 1)
        check_range("postprocess.seed_copy_threshold", self.seed_copy_threshold, 0, 1, lo_open=True)
        # the curation sections it reuses, under this stage's keys
        check_near_dedup_config(self.near_dedup, "postprocess.near_dedup")
        check_filters_config(self.filters, "postprocess.filters")
        check_decontamination_config(self.decontamination, "postprocess.decontamination")


@dataclass
class OutputConfig:
    format: Literal["document", "plain"] = field(default="document", metadata={
        "help": "document: the curated format (<repo_name>repo<file_sep>path + code); plain: the code only"})
    repo_name: str = field(default="synthetic", metadata={"help": "repo marker of document-format outputs"})
    shard_docs: int = field(default=10000, metadata={"help": "documents per output JSONL shard"})
    flush_every: int = field(default=64, metadata={"help": "responses per cache chunk (written atomically)"})
    flush_seconds: float = field(default=10.0, metadata={"help": "a partial cache chunk is written after this"})


@dataclass
class ExecutionConfig:
    executor: Literal["local", "ray"] = field(default="local", metadata={
        "help": "ray: one driver task per shard on a Ray cluster (each beside its own backend)"})
    num_shards: int = field(default=1, metadata={"help": "split the requests into this many driver shards"})
    shard_index: Optional[int] = field(default=None, metadata={
        "help": "this driver's shard (0-based); null: every shard (in turn locally, in parallel on Ray)"})
    ray_address: Optional[str] = None
    ray_gpus_per_shard: float = field(default=0.0, metadata={"help": "GPUs each Ray driver task reserves"})
    progress: bool = True

    def __post_init__(self):
        if self.num_shards < 1:
            raise ConfigError(f"execution.num_shards must be >= 1, got {self.num_shards}")
        if self.shard_index is not None and not 0 <= self.shard_index < self.num_shards:
            raise ConfigError(f"execution.shard_index must be in 0..{self.num_shards - 1}, got {self.shard_index}")


@dataclass
class SynthConfig:
    seeds: SeedsConfig = field(default_factory=SeedsConfig)
    prompt: PromptConfig = field(default_factory=PromptConfig)
    sampling: SamplingConfig = field(default_factory=SamplingConfig)
    backend: BackendConfig = field(default_factory=BackendConfig)
    postprocess: PostprocessConfig = field(default_factory=PostprocessConfig)
    output: OutputConfig = field(default_factory=OutputConfig)
    execution: ExecutionConfig = field(default_factory=ExecutionConfig)


def load_synth_config(yaml_path=None, overrides=()):
    """SynthConfig from defaults, the YAML file, then `key.sub=value` overrides (megasnow.config.load_config).

    A relative input path set in the YAML file is taken relative to the file's folder when it exists there (else
    relative to the working directory, as before): shipped configs work from any folder. This is the convention of
    megasnow.recipe.config.load_ablation_config. Paths given as overrides or flags stay relative to the working
    directory. Raises ConfigError (a UserError) naming the key."""
    cfg = load_config(SynthConfig, yaml_path, overrides)
    if yaml_path:
        resolve_yaml_paths(cfg, os.path.dirname(os.path.abspath(yaml_path)), overrides)
    return cfg


# The input-path keys an error may name; one set in the YAML file is named with the file ("c.yaml: prompt.template").
PATH_KEYS = ("seeds.documents", "seeds.scores", "seeds.language_stats", "seeds.tokenizer", "prompt.template",
             "prompt.system", "postprocess.reference", "postprocess.decontamination.benchmarks", "backend.model")


def yaml_key_names(yaml_path, overrides=(), keys=PATH_KEYS):
    """{key: "FILE: key"} for each of `keys` that the YAML file sets and no override replaces: how errors about
    those keys name where the value came from (megasnow.config.load_config names the file the same way)."""
    import yaml

    if not yaml_path:
        return {}
    with open(yaml_path, encoding="utf-8") as f:
        data = yaml.safe_load(f) or {}
    out = {}
    for key in keys:
        node = data
        for part in key.split("."):
            node = node.get(part) if isinstance(node, dict) else None
        if node is not None and not overridden(key, overrides):
            out[key] = f"{yaml_path}: {key}"
    return out


def overridden(key, overrides):
    """Whether an override `k=v` sets `key` (itself, a part of it, or a section holding it)."""
    for item in overrides:
        k = item.split("=", 1)[0].strip()
        if k == key or key.startswith(k + ".") or k.startswith(key + "."):
            return True
    return False


def resolve_yaml_paths(cfg, base, overrides=()):
    """Resolve in place the input paths of `cfg` that came from the YAML file in folder `base` (see
    load_synth_config); keys set by `overrides` are left alone."""
    s, pr, pp, b = cfg.seeds, cfg.prompt, cfg.postprocess, cfg.backend
    if not overridden("seeds.documents", overrides):
        s.documents = [path_from_yaml_folder(p, base) for p in s.documents]
    for key in ("scores", "language_stats", "tokenizer"):
        if not overridden(f"seeds.{key}", overrides):
            setattr(s, key, path_from_yaml_folder(getattr(s, key), base))
    if pr.template != "default" and not overridden("prompt.template", overrides):
        pr.template = path_from_yaml_folder(pr.template, base)
    if (pr.system or "").startswith("@") and not overridden("prompt.system", overrides):
        pr.system = "@" + path_from_yaml_folder(pr.system[1:], base)
    if not overridden("postprocess.reference", overrides):
        pp.reference = [path_from_yaml_folder(p, base) for p in pp.reference]
    if not overridden("postprocess.decontamination.benchmarks", overrides):
        pp.decontamination.benchmarks = [path_from_yaml_folder(p, base) for p in pp.decontamination.benchmarks]
    if b.kind != "openai" and not overridden("backend.model", overrides):  # vllm/local: a model folder
        b.model = path_from_yaml_folder(b.model, base)
    if isinstance(b.options.get("chat_template"), str) and not overridden("backend.options.chat_template",
                                                                            overrides):
        b.options["chat_template"] = path_from_yaml_folder(b.options["chat_template"], base)
