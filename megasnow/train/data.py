"""The trainer's data side: check a phase's dataset paths up front, build its blended train / held-out datasets,
and cut them into the micro-batches of one optimizer step, resumable from a consumed-sample count."""
import glob
import os

import numpy as np
import torch

from megasnow.config import ConfigError
from megasnow.model.config import check_tokenizer_fits

IGNORE_INDEX = -100  # labels left out of the loss (torch's and Megatron's convention)


class DataConfigError(ConfigError):
    """A dataset path that is missing or unreadable, named with its config key."""


def check_blend_paths(blend, where):
    """Fail before training if any PREFIX.bin/PREFIX.idx of `blend` is missing, unreadable or corrupt."""
    from megasnow.data.indexed import IndexedDataset

    for j, item in enumerate(blend):
        key = f"{where}[{j}].path"
        for ext in (".bin", ".idx"):
            p = item.path + ext
            if not os.path.exists(p):
                stem, suffix = os.path.splitext(item.path)
                if suffix in (".bin", ".idx") and os.path.exists(stem + ".bin") and os.path.exists(stem + ".idx"):
                    raise DataConfigError(f"{key}: {item.path} names the dataset's {suffix} file; give the prefix "
                                          f"without the suffix: {stem}")
                raise DataConfigError(f"{key}: {p} does not exist (expected an indexed dataset prefix, "
                                      f"as written by tools/preprocess_data.py)")
            try:
                with open(p, "rb") as f:
                    f.read(1)
            except OSError as e:
                raise DataConfigError(f"{key}: {p} is not readable ({e.strerror})") from None
        try:
            ds = IndexedDataset(item.path)
        except Exception as e:  # noqa: BLE001 - the reader's message names the inconsistency
            raise DataConfigError(f"{key}: {e}") from None
        if len(ds) == 0:
            raise DataConfigError(f"{key}: {item.path} holds no sequences")


def check_init_from(path):
    """checkpoint.init_from must be a megasnow checkpoint (a step folder or a run folder with `latest`); a
    HuggingFace model folder is named as such, with the command that imports it. Returns the step folder."""
    from megasnow.train.checkpoint import CheckpointError, resolve_checkpoint

    if not os.path.exists(path):
        raise ConfigError(f"checkpoint.init_from: {path} does not exist")
    if os.path.isdir(path) and os.path.isfile(os.path.join(path, "config.json")) \
            and not os.path.exists(os.path.join(path, "meta.json")):
        raise ConfigError(f"checkpoint.init_from: {path} is a HuggingFace model folder (it holds config.json); "
                          f"import it first with `python tools/convert_checkpoint.py import --hf {path} --output "
                          f"CKPT` and set checkpoint.init_from=CKPT")
    try:
        return resolve_checkpoint(path)
    except CheckpointError as e:
        raise ConfigError(f"checkpoint.init_from: {e}") from None


# ModelConfig fields that fix the shapes of the weights checkpoint.init_from loads (the vocabulary's padding may
# differ with the tensor-parallel size; load_model_weights checks it tensor by tensor).
SHAPE_KEYS = ("num_layers", "hidden_size", "ffn_hidden_size", "num_heads", "num_kv_heads", "tie_embeddings")


def check_init_from_model(step_dir, model_cfg):
    """Refuse checkpoint.init_from when its saved model config (meta.json's model_config) has other shapes than
    this run's ModelConfig, naming each key (ConfigError), before any data or model is built. A checkpoint without
    a saved model config is left to the loader."""
    from megasnow.train.checkpoint import read_meta

    saved = read_meta(step_dir).get("model_config") or {}
    diffs = [f"model.{k}: checkpoint.init_from {step_dir} has {saved[k]}, this run {getattr(model_cfg, k)}"
             for k in SHAPE_KEYS if k in saved and saved[k] != getattr(model_cfg, k)]
    if diffs:
        raise ConfigError(f"{'; '.join(diffs)} (the weights' shapes must match: set the checkpoint's values, or "
                          f"drop checkpoint.init_from to start from random weights)")


def document_end_mix(paths):
    """A warning line when the datasets' metadata (PREFIX.meta.json) shows some binarized with the end-of-document
    id appended and some without (model.document_mask would then run documents of the latter together); None when
    they agree or the metadata does not tell."""
    from megasnow.data.dataset_meta import read_dataset_meta

    with_eod, without = [], []
    for p in dict.fromkeys(paths):
        meta = read_dataset_meta(p)
        if meta is None or "append_eod" not in meta:
            continue
        (with_eod if meta["append_eod"] else without).append(p)
    if with_eod and without:
        return (f"model.document_mask: the blend mixes datasets binarized with the end-of-document id ({with_eod[0]}"
                f"{' and others' if len(with_eod) > 1 else ''}) and without it ({', '.join(without)}): the "
                f"documents of the latter run together in one attention span; re-binarize them with "
                f"tools/preprocess_data.py --append-eod")
    return None


def load_run_tokenizer(path):
    """(tokenizer, its file) for data.tokenizer: a SentencePiece .model, a tokenizer.json, or a HuggingFace tokenizer
    folder holding tokenizer.json; (None, None) when unset. Errors name the key (ConfigError)."""
    if not path:
        return None, None
    if not os.path.exists(path):
        raise ConfigError(f"data.tokenizer: {path} does not exist")
    file = path
    if os.path.isdir(path):
        file = os.path.join(path, "tokenizer.json")
        if not os.path.isfile(file):
            models = sorted(glob.glob(os.path.join(path, "*.model")))
            hint = (f"; it holds the SentencePiece model {os.path.basename(models[0])}: set "
                    f"data.tokenizer={models[0]}") if models else ""
            raise ConfigError(f"data.tokenizer: {path} is a folder without tokenizer.json (give a SentencePiece "
                              f".model file, a tokenizer.json, or a HuggingFace tokenizer folder){hint}")
    from megasnow.data.tokenizer import TokenizerError, load_tokenizer

    try:
        return load_tokenizer(file), file
    except TokenizerError as e:
        raise ConfigError(f"data.tokenizer: {e}") from None


def check_data_tokenizer(blends, tokenizer, tokenizer_path):
    """Refuse a run tokenizer whose ids mean something else than the datasets' ids. `blends`: [(config key of the
    list, [BlendItem])]. Each dataset's PREFIX.meta.json (tools/preprocess_data.py) records the vocabulary size and
    the end-of-document id (with its token text) it was binarized with; data.tokenizer must have the same vocabulary
    size (less the tokens Megatron's legacy SentencePieceTokenizer adds, recorded as added_tokens) and give that token
    the same id; when both are files of one kind (.model, .json), the file's SHA-256 must equal the recorded
    tokenizer_sha256 (a retrained tokenizer of the same size). The tokenizer's path is not compared (a copied file is
    the same tokenizer); datasets without metadata (Megatron-LM's preprocess_data.py) are not checked.

    Returns the largest recorded vocabulary size over all datasets (None when none records one), which the caller
    compares with the model's. Raises ConfigError naming data.tokenizer, the dataset's key and both values."""
    from megasnow.data.dataset_meta import meta_path, read_dataset_meta, tokenizer_sha256
    from megasnow.data.tokenizer import TokenizerError

    largest, seen = None, set()
    for where, items in blends:
        for j, item in enumerate(items):
            if item.path in seen:
                continue
            seen.add(item.path)
            meta = read_dataset_meta(item.path)
            if meta is None:
                continue
            recorded = meta.get("vocab_size")
            if recorded is not None:
                largest = max(largest or 0, int(recorded))
            if tokenizer is None:
                continue
            diffs = []
            # Megatron's legacy SentencePieceTokenizer adds tokens past the model's pieces (<CLS>, <EOD>, ...): the
            # tokenizer file itself defines the rest (the model's vocabulary must still hold them: check_model_vocab)
            added = meta.get("added_tokens") or {}
            if recorded is not None and int(recorded) - len(added) != tokenizer.vocab_size:
                extra = f" ({recorded} with {len(added)} added by Megatron's tokenizer)" if added else ""
                diffs.append(f"vocab_size {tokenizer.vocab_size} here, {int(recorded) - len(added)} in the data{extra}")
            if meta.get("append_eod") and meta.get("eod_id") is not None and meta.get("eod_token") not in added:
                token = meta.get("eod_token")
                try:
                    here = tokenizer.token_to_id(token) if token else tokenizer.eod_id
                except TokenizerError:
                    here = None
                if here != meta["eod_id"]:
                    name = f"{token!r}" if token else "end-of-document token"
                    diffs.append(f"end-of-document id ({name}) {here} here, {meta['eod_id']} in the data")
            recorded_sha = meta.get("tokenizer_sha256")
            if not diffs and recorded_sha and _same_kind_of_file(tokenizer_path, meta.get("tokenizer_model")):
                here_sha = tokenizer_sha256(tokenizer_path)  # same size and end of document: compare the bytes
                if here_sha != recorded_sha:
                    diffs.append(f"same vocabulary size and end of document, but another file (sha256 "
                                 f"{here_sha[:12]}... here, {recorded_sha[:12]}... in the data)")
            if diffs:
                made_with = f" ({meta['tokenizer_model']})" if meta.get("tokenizer_model") else ""
                raise ConfigError(
                    f"data.tokenizer: {tokenizer_path} is not the tokenizer {where}[{j}].path ({item.path}) was "
                    f"binarized with: {'; '.join(diffs)} ({meta_path(item.path)}); point data.tokenizer at the "
                    f"tokenizer the data was binarized with{made_with}, or re-binarize the data with this one "
                    f"(tools/preprocess_data.py --tokenizer-model {tokenizer_path})")
    return largest


def _same_kind_of_file(path, recorded):
    """Both tokenizers are files of one kind (same extension: .model, .json; a HF folder counts as its
    tokenizer.json), so their bytes can be compared (a SentencePiece .model and the tokenizer.json converted from it
    hold the same tokenizer in other bytes)."""
    from megasnow.data.dataset_meta import tokenizer_file

    def kind(p):
        return ".json" if os.path.isdir(p) else os.path.splitext(p)[1]

    return bool(recorded) and tokenizer_file(path) is not None and kind(path) == kind(recorded)


def check_model_vocab(model_vocab, explicit, tokenizer, data_vocab):
    """Refuse a model vocabulary smaller than the ids it will be fed: data.tokenizer's vocabulary, or the largest
    recorded for the datasets (ids >= model.vocab_size would index past the embedding). `explicit`: whether
    model.vocab_size was set (else it is the tokenizer's, or the preset's without a tokenizer)."""
    where = ("model.vocab_size" if explicit else "model.vocab_size (data.tokenizer's)" if tokenizer is not None
             else "model.vocab_size (the model preset's)")
    if tokenizer is not None:
        check_tokenizer_fits(model_vocab, tokenizer.vocab_size, where, "data.tokenizer",
                             f"remove model.vocab_size (it defaults to the tokenizer's) or set it >= "
                             f"{tokenizer.vocab_size}", ConfigError)
    if data_vocab is not None and model_vocab < data_vocab:
        fix = "" if tokenizer is not None else "set data.tokenizer to that tokenizer (model.vocab_size follows it) or "
        raise ConfigError(f"{where} is {model_vocab}, smaller than the vocabulary the data was binarized with "
                          f"({data_vocab}, recorded in its .meta.json): {fix}set model.vocab_size >= {data_vocab}")


def to_blend_entries(items):
    from megasnow.data.blended_dataset import BlendEntry

    return [BlendEntry(prefix=b.path, weight=b.weight, repeat=b.repeat) for b in items]


def build_phase_datasets(phase, cfg, num_train_samples, num_valid_samples, fim=None):
    """(train dataset, held-out dataset or None) for one phase. `num_train_samples` None: the blend's explicit
    repeat counts fix the size. fim: a function (split) -> megasnow.data.fim.FIMTransform, or None (data.fim off):
    both datasets are then read through FIMDataset, the held-out one with its own draws."""
    from megasnow.data.blended_dataset import build_gpt_dataset
    from megasnow.data.fim import FIMDataset

    d = cfg.data
    train = build_gpt_dataset(to_blend_entries(phase.blend), num_train_samples, d.seq_len, d.seed,
                              split="train", valid_fraction=d.valid_fraction, cache_dir=d.cache_dir)
    valid = None
    if num_valid_samples > 0:
        if phase.valid_blend:
            valid = build_gpt_dataset(to_blend_entries(phase.valid_blend), num_valid_samples, d.seq_len, d.seed,
                                      split="train", valid_fraction=0.0, cache_dir=d.cache_dir)
        elif d.valid_fraction > 0:
            valid = build_gpt_dataset(to_blend_entries(phase.blend), num_valid_samples, d.seq_len, d.seed,
                                      split="valid", valid_fraction=d.valid_fraction, cache_dir=d.cache_dir)
    if fim is not None:
        train = FIMDataset(train, fim("train"))
        valid = FIMDataset(valid, fim("valid")) if valid is not None else None
    return train, valid


def build_fim_transforms(cfg, tokenizer, eod_id, bos_id=None):
    """A function (split) -> FIMTransform for data.fim, or None when data.fim.rate is 0. Raises ConfigError naming
    data.fim / data.tokenizer when the tokenizer has no FIM sentinels (or no file separator for level 'file'), or
    its tokens do not spell the text exactly."""
    f = cfg.data.fim
    if f.rate == 0:
        return None
    from megasnow.data.fim import STREAMS, FIMTransform
    from megasnow.data.tokenizer import TokenizerError

    def make(split):
        try:
            return FIMTransform(tokenizer, f.rate, f.spm_rate, f.level, seed=cfg.data.seed, eod_id=eod_id,
                                bos_id=bos_id, stream=STREAMS[split])
        except TokenizerError as e:  # each refusal keeps its own advice: missing tokens, or tokens that mis-spell
            missing = tokenizer.fim_tokens() is None or (f.level == "file" and tokenizer.file_sep_id is None)
            advice = ("use a tokenizer with these tokens (tools/train_tokenizer.py reserves them) or set "
                      "data.fim.rate=0" if missing else "or set data.fim.rate=0")
            raise ConfigError(f"data.fim.rate={f.rate} (data.fim.level={f.level}) with data.tokenizer: {e}; "
                              f"{advice}") from None

    make("train")  # fail at start-up, not at the first read
    return make


class MicroBatches:
    """Yields, per optimizer step, this data-parallel rank's list of micro-batches {tokens, labels} (plus
    document_ids when `eod_id` is given: model.document_mask keeps attention inside each packed document).

    Labels of -100 are left out of the loss: those equal to an id in `ignore_label_ids` (data.fim.mask_pad: the
    <fim_pad> id). Such a loss mask makes micro-batches count different numbers of tokens, so it needs
    `per_token_loss` (train.calculate_per_token_loss); a masked batch without it is refused.

    With `num_workers` > 0 (data.num_workers, Megatron's --num-workers) samples are read, and fill-in-the-middle
    rearranged, by that many torch DataLoader worker processes ahead of the step (two micro-batches each), so
    the reading overlaps the forward and backward passes. Samples depend only on their index, so the batches are
    the same with any number of workers and on resume.
    """

    def __init__(self, dataset, consumed_samples, micro_batch_size, num_micro_batches, dp_rank, dp_size, device,
                 eod_id=None, per_token_loss=False, ignore_label_ids=(), num_workers=0):
        from megasnow.data.sampler import PretrainingSampler

        self.dataset = dataset
        self.num_micro_batches = num_micro_batches
        self.device = device
        self.eod_id = eod_id
        self.per_token_loss = per_token_loss
        self.ignore_label_ids = torch.tensor(sorted({int(i) for i in ignore_label_ids}), dtype=torch.long)

        def sampler():
            return PretrainingSampler(len(dataset), consumed_samples, micro_batch_size, dp_rank, dp_size)

        self._indices = iter(sampler())
        self._samples = map(lambda ids: stack_samples([dataset[int(i)] for i in ids]), sampler())
        if num_workers > 0:
            from torch.utils.data import DataLoader

            # A second sampler over the same ids feeds the workers; the first one tells us which ids came back.
            # fork shares the memory-mapped datasets and the tokenizer with the workers instead of pickling them
            self._samples = iter(DataLoader(dataset, batch_sampler=sampler(), num_workers=num_workers,
                                            collate_fn=stack_samples, pin_memory=device.type == "cuda",
                                            multiprocessing_context="fork", worker_init_fn=_leave_signals_to_main))

    def close(self):
        """Stop the worker processes now (they also stop when this object is garbage-collected)."""
        self._samples = self._indices = None

    def labels(self, samples, indices):
        """Labels [B, S] of the samples [B, S+1] with dataset ids `indices`: the next tokens. A loss mask (such as
        fill-in-the-middle or document-level ignore masks) sets IGNORE_INDEX here."""
        labels = samples[:, 1:]
        if len(self.ignore_label_ids):
            labels = labels.masked_fill(torch.isin(labels, self.ignore_label_ids), IGNORE_INDEX)
        return labels

    def next_step(self):
        return [self._to_batch(next(self._indices), next(self._samples)) for _ in range(self.num_micro_batches)]

    def _to_batch(self, indices, x):
        labels = self.labels(x, indices)
        if not self.per_token_loss and bool((labels == IGNORE_INDEX).any()):  # on the host, before the copy
            raise ConfigError(f"samples {[int(i) for i in indices]} have masked labels ({IGNORE_INDEX}): a loss mask "
                              f"needs the per-token loss, set train.calculate_per_token_loss=true")
        x = x.to(self.device, non_blocking=True)
        batch = {"tokens": x[:, :-1].contiguous(), "labels": labels.to(self.device, non_blocking=True).contiguous()}
        if self.eod_id is not None:
            from megasnow.model.llama import document_ids_from_tokens

            batch["document_ids"] = document_ids_from_tokens(batch["tokens"], self.eod_id)
        return batch


def stack_samples(samples):
    """One micro-batch [B, S+1] int64 tensor from B samples (the DataLoader collate_fn)."""
    return torch.from_numpy(np.stack([np.asarray(x, dtype=np.int64) for x in samples]))


def _leave_signals_to_main(worker_id):
    """DataLoader worker start-up: Ctrl-C and SIGTERM reach the whole process group, but only the trainer decides
    what they mean (finish the step, save, stop); a worker killed by them would break the step in progress."""
    import signal

    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, signal.SIG_IGN)
