"""Measures of one checkpoint, the same for the phase-1 base and every arm: held-out loss on the phase-1
distribution, the benchmark-solution loss, and (when asked) greedy pass@1.

The held-out set is cut the same way for every run (one pass over the held-out dataset, sample order fixed by
HELDOUT_SEED), unlike the trainer's in-run evaluation, whose samples follow each run's data.seed.
"""
import math

HELDOUT_SEED = 0


def heldout_samples(prefix, seq_len, cache_dir=None):
    """The held-out samples [seq_len + 1] int64 of one pass over `prefix` (PREFIX.bin/.idx), in a fixed order."""
    from megasnow.data.gpt_dataset import GPTDataset

    ds = GPTDataset(prefix, seq_len, HELDOUT_SEED, num_epochs=1, cache_dir=cache_dir)
    return ds


def heldout_loss(model, dataset, batch_size=8, device="cpu", eod_id=None):
    """{"loss": mean next-token cross entropy (nats/token) over every token of `dataset`, "tokens"}. With `eod_id`
    (a model trained with model.document_mask), attention stays inside each packed document, as in training."""
    import numpy as np
    import torch

    from megasnow.model.llama import document_ids_from_tokens

    total, count = 0.0, 0
    with torch.no_grad():
        for b in range(0, len(dataset), batch_size):
            x = torch.from_numpy(np.stack([np.asarray(dataset[i], dtype=np.int64)
                                           for i in range(b, min(b + batch_size, len(dataset)))])).to(device)
            docs = document_ids_from_tokens(x[:, :-1], eod_id) if eod_id is not None else None
            logits = model(x[:, :-1], document_ids=docs).float()
            ce = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), x[:, 1:].reshape(-1),
                                                   reduction="sum")
            total += float(ce)
            count += int(x[:, 1:].numel())
    return {"loss": total / count if count else math.nan, "tokens": count}


def measure_checkpoint(checkpoint, tokenizer_path, valid_prefix, seq_len, benchmarks, pass_at_1=None, device="cpu",
                       cache_dir=None):
    """Measures of the checkpoint at `checkpoint` (run folder or step folder):
    {"heldout_loss", "heldout_tokens", "benchmark_loss": {name: loss}, "benchmark_tokens": {name: n},
     "pass@1": {name: value} or absent}. `benchmarks`: list of megasnow.eval.tasks.Benchmark;
    `pass_at_1`: None, or (num_tasks, max_tokens) for greedy pass@1 on the first benchmark."""
    import torch

    from megasnow.convert.hf_llama import build_megasnow_model
    from megasnow.data.tokenizer import load_tokenizer
    from megasnow.eval.solution_loss import megasnow_logits_fn, solution_loss_per_task, tokenize_solutions

    model, step_dir = build_megasnow_model(checkpoint, device=device)
    tok = load_tokenizer(tokenizer_path)
    out = {"checkpoint": step_dir}
    eod = tok.eod_id if getattr(model.cfg, "document_mask", False) else None
    held = heldout_loss(model, heldout_samples(valid_prefix, seq_len, cache_dir), device=device, eod_id=eod)
    out["heldout_loss"], out["heldout_tokens"] = held["loss"], held["tokens"]
    out["benchmark_loss"], out["benchmark_tokens"] = {}, {}
    logits_fn = megasnow_logits_fn(model)
    for bench in benchmarks:
        # the run's own context (seq_len + 1 tokens, as the trainer's in-run benchmark loss): prompts cut from the left
        st = tokenize_solutions(bench.tasks, tok, min(model.cfg.max_seq_len, seq_len) + 1)
        r = solution_loss_per_task(logits_fn, st, batch_size=8, device=device)
        out["benchmark_loss"][bench.name] = r["loss"]
        out["benchmark_tokens"][bench.name] = r["tokens"]
    if pass_at_1 is not None:
        from megasnow.eval.training import GreedyPassAt1

        tasks, max_tokens = pass_at_1
        bench = benchmarks[0]
        with torch.no_grad():
            r = GreedyPassAt1(bench.path if bench.name != "humaneval" else "humaneval", tasks, tokenizer_path,
                              max_tokens=max_tokens).measure(model)
        out["pass@1"] = {bench.name: r["pass@1"]}
        out["pass@1_tasks"] = r["tasks"]
    return out
