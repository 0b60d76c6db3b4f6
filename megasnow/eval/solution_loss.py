"""The loss on benchmark solutions: mean per-token cross entropy (nats) of each canonical solution given its prompt.

At scales where pass@1 is near zero this loss still moves, and it measures what the recipe claims (training data
aligned with the downstream task). Two ways to compute it, equal up to float rounding:
- `solution_loss_parallel`: through the trainer's forward path (`forward_backward(forward_only=True)`), so it works
  under every tensor/pipeline/data-parallel layout; (prompt, solution) sequences are packed into rows of the
  trainer's sequence length with document ids that keep attention inside each sequence. Token-weighted mean.
- `solution_loss_per_task`: one sequence per row through a logits function (a megasnow model or a HuggingFace
  causal LM); also gives each task's loss.

Tokens: prompt + solution is tokenized as one text (as a training document would be); the solution's tokens are
those that end past the prompt (a token straddling the boundary counts as solution). A sequence longer than the
limit loses prompt tokens from the left (at least one is kept), then solution tokens from the right; counted.
The limit is `sequence_limit(context)`: one rule for the trainer's hook and `evaluate.py loss`.
"""
from dataclasses import dataclass, field

import torch

IGNORE = -100


@dataclass
class SolutionTokens:
    """Tokenized (prompt + solution) sequences: ids[i] with the solution starting at starts[i] (>= 1)."""

    task_ids: list = field(default_factory=list)
    ids: list = field(default_factory=list)
    starts: list = field(default_factory=list)
    truncated: int = 0

    @property
    def solution_tokens(self):
        return sum(len(x) - s for x, s in zip(self.ids, self.starts))


def sequence_limit(context):
    """Tokens of the longest (prompt + solution) sequence a model reading `context` tokens scores in full: context + 1
    (its inputs are the first `context` tokens; its labels the last `context`). The trainer passes data.seq_len (its
    rows), evaluate.py the model's max_seq_len (HF: max_position_embeddings); equal for a model trained at its full
    context."""
    return int(context) + 1


def prompt_token_count(tokenizer, ids, prompt):
    """How many leading tokens of `ids` decode to a prefix of `prompt` (binary search over decodes)."""
    lo, hi = 0, len(ids)
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if prompt.startswith(tokenizer.decode(ids[:mid])):
            lo = mid
        else:
            hi = mid - 1
    return lo


def tokenize_solutions(tasks, tokenizer, max_tokens, bos_id=None):
    """SolutionTokens for `tasks` (megasnow.eval.tasks.Task) with sequences of at most `max_tokens` tokens.

    `tokenizer` has encode(text) -> list[int] (no special tokens) and decode(ids) -> str
    (megasnow.data.tokenizer.Tokenizer); `bos_id`, when given, starts every sequence (models trained with one)."""
    if max_tokens < 2:
        raise ValueError(f"max_tokens must be >= 2, got {max_tokens}")
    out = SolutionTokens()
    for task in tasks:
        ids = list(tokenizer.encode(task.prompt + task.canonical_solution))
        start = prompt_token_count(tokenizer, ids, task.prompt)
        if bos_id is not None:
            ids, start = [bos_id] + ids, start + 1
        start = max(1, start)
        if start >= len(ids):  # the solution adds no token of its own (empty canonical solution)
            continue
        if len(ids) > max_tokens:
            out.truncated += 1
            drop = min(len(ids) - max_tokens, start - 1)
            ids, start = ids[drop:], start - drop
            ids = ids[:max_tokens]
        out.task_ids.append(task.task_id)
        out.ids.append(ids)
        out.starts.append(start)
    return out


def _labels(ids, start):
    """Next-token labels of ids[:-1]: the solution tokens, IGNORE for prompt tokens."""
    return [t if j + 1 >= start else IGNORE for j, t in enumerate(ids[1:])]


def packed_micro_batches(st, seq_len, micro_batch_size, pad_id=0, device="cpu"):
    """Micro-batches {tokens, labels, document_ids} of [micro_batch_size, seq_len] int64 holding every sequence of
    `st` (each needs len <= seq_len + 1), packed first-fit in order; padding has label IGNORE."""
    rows = []  # each row: list of (ids, start)
    for ids, start in zip(st.ids, st.starts):
        if len(ids) - 1 > seq_len:
            raise ValueError(f"a sequence of {len(ids)} tokens does not fit seq_len {seq_len} + 1")
        need = len(ids) - 1
        for row in rows:
            if row[0] + need <= seq_len:
                row[0] += need
                row[1].append((ids, start))
                break
        else:
            rows.append([need, [(ids, start)]])
    batches = []
    for b in range(0, len(rows), micro_batch_size):
        chunk = rows[b:b + micro_batch_size]
        tokens = torch.full((micro_batch_size, seq_len), pad_id, dtype=torch.long)
        labels = torch.full((micro_batch_size, seq_len), IGNORE, dtype=torch.long)
        docs = torch.zeros((micro_batch_size, seq_len), dtype=torch.long)
        for r, (used, seqs) in enumerate(chunk):
            pos = 0
            for d, (ids, start) in enumerate(seqs):
                n = len(ids) - 1
                tokens[r, pos:pos + n] = torch.tensor(ids[:-1])
                labels[r, pos:pos + n] = torch.tensor(_labels(ids, start))
                docs[r, pos:pos + n] = d
                pos += n
            docs[r, pos:] = len(seqs)  # padding is a document of its own
        batches.append({"tokens": tokens.to(device), "labels": labels.to(device), "document_ids": docs.to(device)})
    return batches


def _dummy_like(mb):
    return {"tokens": torch.zeros_like(mb["tokens"]), "labels": torch.full_like(mb["labels"], IGNORE),
            "document_ids": torch.zeros_like(mb["document_ids"])}


@torch.no_grad()
def solution_loss_parallel(model_chunks, micro_batches, num_micro_batches):
    """Token-weighted mean loss over `micro_batches` through forward_backward(forward_only=True), on every rank of
    the current megasnow.parallel layout (a collective: every rank calls it with the same micro-batches). Data-parallel
    ranks take every dp-th micro-batch; steps run `num_micro_batches` at a time (the trainer's, so the pipeline
    schedule's constraints hold), the last one filled with label-free micro-batches. Returns {"loss", "tokens"}."""
    import torch.distributed as dist

    from megasnow.parallel import state
    from megasnow.parallel.pipeline.schedules import forward_backward

    dp_rank, dp_size = state.get_data_parallel_rank(), state.get_data_parallel_world_size()
    mine = micro_batches[dp_rank::dp_size]
    was_training = [m.training for m in model_chunks]
    for m in model_chunks:
        m.eval()
    total, count = 0.0, 0
    try:
        for i in range(0, len(mine), num_micro_batches):
            step = mine[i:i + num_micro_batches]
            counts = [int((mb["labels"] != IGNORE).sum()) for mb in step]
            step = step + [_dummy_like(step[0])] * (num_micro_batches - len(step))
            losses = forward_backward(model_chunks, step, forward_only=True)
            for loss, n in zip(losses, counts):
                if n:
                    total += loss * n
                    count += n
    finally:
        for m, t in zip(model_chunks, was_training):
            m.train(t)
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        device = next(model_chunks[0].parameters()).device if dist.get_backend() == "nccl" else "cpu"
        # Last-stage ranks hold the losses, tensor-parallel peers identical ones: count tensor rank 0's only.
        holds = state.is_pipeline_last_stage(ignore_virtual=True) and state.get_tensor_parallel_rank() == 0
        t = torch.tensor([total, float(count)] if holds else [0.0, 0.0], dtype=torch.float64, device=device)
        dist.all_reduce(t)
        total, count = float(t[0]), float(t[1])
    return {"loss": total / count if count else float("nan"), "tokens": int(round(count))}


@torch.no_grad()
def solution_loss_per_task(logits_fn, st, batch_size=8, device="cpu"):
    """Per-task and overall losses with one sequence per row. `logits_fn(tokens [B, S], attention_mask [B, S])`
    returns logits [B, S, V]; rows are right-padded (causal attention never looks at the padding).
    Returns {"loss" (token-weighted), "loss_per_task_mean", "tokens", "tasks", "per_task": {task_id: loss}}."""
    order = sorted(range(len(st.ids)), key=lambda i: len(st.ids[i]))
    per_task, total, count = {}, 0.0, 0
    for b in range(0, len(order), batch_size):
        idx = order[b:b + batch_size]
        width = max(len(st.ids[i]) - 1 for i in idx)
        tokens = torch.zeros((len(idx), width), dtype=torch.long)
        labels = torch.full((len(idx), width), IGNORE, dtype=torch.long)
        mask = torch.zeros((len(idx), width), dtype=torch.long)
        for r, i in enumerate(idx):
            ids, n = st.ids[i], len(st.ids[i]) - 1
            tokens[r, :n] = torch.tensor(ids[:-1])
            labels[r, :n] = torch.tensor(_labels(ids, st.starts[i]))
            mask[r, :n] = 1
        logits = logits_fn(tokens.to(device), mask.to(device)).float()
        ce = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), labels.to(device).reshape(-1),
                                               ignore_index=IGNORE, reduction="none").view(len(idx), width)
        valid = labels.to(device) != IGNORE
        for r, i in enumerate(idx):
            s, n = float(ce[r][valid[r]].sum()), int(valid[r].sum())
            per_task[st.task_ids[i]] = s / n
            total += s
            count += n
    means = list(per_task.values())
    return {"loss": total / count if count else float("nan"),
            "loss_per_task_mean": sum(means) / len(means) if means else float("nan"),
            "tokens": count, "tasks": len(per_task), "truncated": st.truncated,
            "per_task": {t: per_task[t] for t in st.task_ids}}


def megasnow_logits_fn(model):
    """logits_fn for a single-process megasnow LlamaModel (the mask is not needed: padding comes last)."""
    return lambda tokens, mask: model(tokens)


def hf_logits_fn(model):
    """logits_fn for a transformers causal LM."""
    return lambda tokens, mask: model(input_ids=tokens, attention_mask=mask).logits
