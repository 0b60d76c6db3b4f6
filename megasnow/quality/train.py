"""Train the annotator: frozen encoder (cached embeddings, head only) or full fine-tuning.

AdamW, bf16 autocast on GPU, early stopping on held-out ROC-AUC; the best annotator folder is saved
atomically (each improvement replaces it whole).
"""
import copy
import logging
import math
import time
from dataclasses import asdict, dataclass

import numpy as np
import torch
import torch.nn.functional as F

from megasnow.quality.annotator import build_annotator, default_batch_tokens, save_annotator
from megasnow.quality.metrics import classification_metrics
from megasnow.quality.score import length_sorted_batches
from megasnow.quality.training_data import text_key
from megasnow.utils.device import resolve_device
from megasnow.utils.progress import Progress

log = logging.getLogger(__name__)

MODE_DEFAULTS = {
    # frozen: a linear probe on cached embeddings; epochs are nearly free, so train long with patience.
    "frozen": {"epochs": 200, "lr": 5e-3, "patience": 20, "batch_size": 64},
    # full: fine-tune everything at a BERT-style learning rate; few epochs.
    "full": {"epochs": 3, "lr": 3e-5, "patience": 1, "batch_size": 16},
}


@dataclass
class TrainConfig:
    mode: str = "frozen"  # "frozen" (head only, embeddings cached once) or "full" (encoder fine-tuned too)
    encoder: str | None = None  # HF encoder folder; None = the bundled all-MiniLM-L6-v2
    pooling: str = "mean"  # "mean" or "cls"
    max_length: int = 512  # training examples are the first window of each text
    epochs: int | None = None  # None = per-mode default (MODE_DEFAULTS)
    lr: float | None = None
    patience: int | None = None  # epochs without a held-out ROC-AUC gain before stopping
    batch_size: int | None = None
    weight_decay: float = 0.01
    warmup_fraction: float = 0.06  # full mode: linear warmup then linear decay
    embed_batch_tokens: int | None = None  # padded tokens per batch when embedding; None = per device
    device: str = "auto"  # "auto" = cuda if available else cpu
    seed: int = 0

    def resolved(self):
        if self.mode not in MODE_DEFAULTS:
            raise ValueError(f"mode must be one of {sorted(MODE_DEFAULTS)}, got {self.mode!r}")
        cfg = copy.copy(self)
        for k, v in MODE_DEFAULTS[self.mode].items():
            if getattr(cfg, k) is None:
                setattr(cfg, k, v)
        cfg.device = str(resolve_device(cfg.device, "device"))  # 'auto' -> cuda when available
        if cfg.embed_batch_tokens is None:
            cfg.embed_batch_tokens = default_batch_tokens(cfg.device)
        return cfg


@torch.inference_mode()
def embed_token_lists(annotator, token_lists, batch_tokens=None, progress=False, desc="embed"):
    """Pooled embeddings [N, hidden] (fp32, on CPU) for already-truncated content-token lists.

    progress: a megasnow.utils.progress mode (True = bar on a terminal, log lines elsewhere; False = none).
    """
    annotator.eval()
    device = annotator.device
    batch_tokens = batch_tokens or default_batch_tokens(device)
    specials = annotator.num_special_tokens
    out = torch.empty(len(token_lists), annotator.config.hidden_size, dtype=torch.float32)
    with Progress(total=len(token_lists), desc=desc, unit="examples", mode=progress) as bar:
        for batch in length_sorted_batches([len(t) + specials for t in token_lists], batch_tokens, 512):
            ids, mask = annotator.collate([token_lists[i] for i in batch])
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
                emb = annotator.embed(ids.to(device), mask.to(device))
            out[batch] = emb.float().cpu()
            bar.update(len(batch))
    return out


@torch.inference_mode()
def predict_token_lists(annotator, token_lists, batch_tokens=None):
    """Probabilities for already-truncated content-token lists."""
    emb = embed_token_lists(annotator, token_lists, batch_tokens)
    return torch.sigmoid(annotator.head(emb.to(annotator.device)).float().squeeze(-1)).cpu().numpy()


def train_annotator(train, heldout, output_dir, cfg: TrainConfig, progress=True):
    """Train on Examples, early-stop on held-out ROC-AUC, save the best annotator to `output_dir`.

    Returns the metrics dict that is also saved as metrics.json in the folder.
    """
    cfg = cfg.resolved()
    torch.manual_seed(cfg.seed)
    annotator = build_annotator(cfg.encoder, pooling=cfg.pooling, max_length=cfg.max_length).to(cfg.device)
    train_ids = annotator.encode_texts([e.text for e in train])
    heldout_ids = annotator.encode_texts([e.text for e in heldout])
    y_train = torch.tensor([e.label for e in train], dtype=torch.float32)
    y_heldout = np.array([e.label for e in heldout])
    # Recorded in the folder so that evaluation can leave out every text the annotator has seen.
    seen = np.array(sorted({text_key(e.text) for e in list(train) + list(heldout)}), dtype=np.uint64)
    start = time.perf_counter()
    if cfg.mode == "frozen":
        best = _train_frozen(annotator, train_ids, y_train, heldout_ids, y_heldout, cfg, progress)
    else:
        best = _train_full(annotator, train_ids, y_train, heldout_ids, y_heldout, cfg, output_dir, progress, seen)
    metrics = {
        "heldout": best["metrics"],
        "best_epoch": best["epoch"],
        "epochs_run": best["epochs_run"],
        "train_examples": len(train),
        "heldout_examples": len(heldout),
        "train_seconds": round(time.perf_counter() - start, 2),
        "config": asdict(cfg),
    }
    if best.get("head_state") is not None:
        annotator.head.load_state_dict(best["head_state"])
    if best.get("state") is not None:
        annotator.load_state_dict(best["state"])
    save_annotator(annotator, output_dir, metrics=metrics, seen_keys=seen)
    return metrics


def _evaluate_head(annotator, emb, labels):
    with torch.no_grad():
        probs = torch.sigmoid(annotator.head(emb.to(annotator.device)).float().squeeze(-1)).cpu().numpy()
    return classification_metrics(labels, probs)


def _train_frozen(annotator, train_ids, y_train, heldout_ids, y_heldout, cfg, progress):
    """Linear probe: embed once, then AdamW on the head only over the cached embeddings."""
    for p in annotator.encoder.parameters():
        p.requires_grad_(False)
    x_train = embed_token_lists(annotator, train_ids, cfg.embed_batch_tokens, progress, "embed train examples")
    x_heldout = embed_token_lists(annotator, heldout_ids, cfg.embed_batch_tokens, progress, "embed held-out examples")
    opt = torch.optim.AdamW(annotator.head.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    gen = torch.Generator().manual_seed(cfg.seed)
    device = annotator.device
    best = {"auc": -1.0, "epoch": 0, "metrics": None, "state": None}
    stale = 0
    epoch = 0
    for epoch in range(1, cfg.epochs + 1):
        annotator.head.train()
        for idx in torch.randperm(len(x_train), generator=gen).split(cfg.batch_size):
            logits = annotator.head(x_train[idx].to(device)).squeeze(-1)
            loss = F.binary_cross_entropy_with_logits(logits, y_train[idx].to(device))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        m = _evaluate_head(annotator, x_heldout, y_heldout)
        if m["roc_auc"] > best["auc"]:
            best.update(auc=m["roc_auc"], epoch=epoch, metrics=m, head_state=copy.deepcopy(annotator.head.state_dict()))
            stale = 0
        else:
            stale += 1
            if stale >= cfg.patience:
                break
        if progress and (epoch % 10 == 0 or epoch == 1):
            log.info("frozen epoch %d: loss %.4f held-out ROC-AUC %.4f", epoch, loss.item(), m["roc_auc"])
    best["epochs_run"] = epoch
    return best


def _train_full(annotator, train_ids, y_train, heldout_ids, y_heldout, cfg, output_dir, progress, seen_keys):
    """Fine-tune encoder + head; evaluate every epoch; save the best folder on each improvement."""
    device = annotator.device
    opt = torch.optim.AdamW(annotator.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    steps_per_epoch = math.ceil(len(train_ids) / cfg.batch_size)
    total = steps_per_epoch * cfg.epochs
    warmup = max(1, int(cfg.warmup_fraction * total))
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min((s + 1) / warmup, max(0.0, (total - s) / max(1, total - warmup)))
    )
    gen = torch.Generator().manual_seed(cfg.seed)
    best = {"auc": -1.0, "epoch": 0, "metrics": None, "state": None}
    stale = 0
    epoch = 0
    for epoch in range(1, cfg.epochs + 1):
        annotator.train()
        batches = torch.randperm(len(train_ids), generator=gen).split(cfg.batch_size)
        bar = Progress(total=len(batches), desc=f"epoch {epoch}", unit="batches", mode=progress)
        for idx in batches:
            ids, mask = annotator.collate([train_ids[i] for i in idx.tolist()])
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
                logits = annotator(ids.to(device), mask.to(device))
            loss = F.binary_cross_entropy_with_logits(logits.float(), y_train[idx].to(device))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(annotator.parameters(), 1.0)
            opt.step()
            sched.step()
            bar.update(1)
        bar.close()
        probs = predict_token_lists(annotator, heldout_ids, cfg.embed_batch_tokens)
        m = classification_metrics(y_heldout, probs)
        log.info("full epoch %d: held-out ROC-AUC %.4f", epoch, m["roc_auc"])
        if m["roc_auc"] > best["auc"]:
            best.update(auc=m["roc_auc"], epoch=epoch, metrics=m)
            # Save now (atomically) so a long run that dies later still leaves its best annotator.
            save_annotator(annotator, output_dir, metrics={"heldout": m, "best_epoch": epoch, "partial": True},
                           seen_keys=seen_keys)
            best["state"] = {k: v.detach().cpu().clone() for k, v in annotator.state_dict().items()}
            stale = 0
        else:
            stale += 1
            if stale >= cfg.patience:
                break
    best["epochs_run"] = epoch
    return best
