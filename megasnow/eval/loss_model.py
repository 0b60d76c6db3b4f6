"""Load a model for the benchmark-solution loss: a megasnow checkpoint (any saved layout, merged into one process)
or a HuggingFace causal LM folder (any architecture transformers loads), with its tokenizer."""
import os

from megasnow.errors import UserError


class LossModelError(UserError, RuntimeError):
    """A --loss-model path that is neither a megasnow checkpoint nor a HuggingFace model folder."""


class _HFTokenizer:
    """encode without special tokens and decode without clean-up, so decoded prefixes match the text exactly."""

    def __init__(self, tok):
        self.tok = tok

    def encode(self, text):
        return self.tok(text, add_special_tokens=False)["input_ids"]

    def decode(self, ids):
        return self.tok.decode(list(ids), skip_special_tokens=False, clean_up_tokenization_spaces=False)


def load_loss_model(path, tokenizer=None, device="cpu"):
    """(logits_fn, tokenizer with encode/decode, bos_id or None, context length (tokens the model reads), name) for
    `path`.

    A megasnow checkpoint uses its own tokenizer file (or `tokenizer`) and no BOS (megasnow documents have none);
    a HF folder uses AutoTokenizer and the BOS its tokenizer adds by default."""
    path = os.fspath(path)
    if not os.path.exists(path):
        raise LossModelError(f"{path}: no such model (give a megasnow checkpoint or a HuggingFace model folder)")
    import torch

    from megasnow.eval.solution_loss import hf_logits_fn, megasnow_logits_fn

    if os.path.exists(os.path.join(path, "config.json")):
        from transformers import AutoModelForCausalLM, AutoTokenizer

        model = AutoModelForCausalLM.from_pretrained(path, torch_dtype=torch.float32).to(device).eval()
        tok = AutoTokenizer.from_pretrained(tokenizer or path)
        bos = tok.bos_token_id
        if bos is None or tok("x")["input_ids"][:1] != [bos]:
            bos = None
        ctx = getattr(model.config, "max_position_embeddings", None) or 2048
        return hf_logits_fn(model), _HFTokenizer(tok), bos, int(ctx), os.path.basename(os.path.normpath(path))
    from megasnow.convert.hf_llama import build_megasnow_model
    from megasnow.data.tokenizer import load_tokenizer

    model, step_dir = build_megasnow_model(path, device=device)
    if tokenizer is None:
        for name in ("tokenizer.model", "tokenizer.json"):
            if os.path.exists(os.path.join(step_dir, name)):
                tokenizer = os.path.join(step_dir, name)
                break
    if tokenizer is None:
        raise LossModelError(f"{step_dir}: the checkpoint holds no tokenizer.model or tokenizer.json; give "
                             f"--tokenizer")
    name = os.path.basename(os.path.normpath(path))
    return megasnow_logits_fn(model), load_tokenizer(tokenizer), None, model.cfg.max_seq_len, name


def benchmark_solution_loss(benchmark, path, tokenizer=None, device="cpu", batch_size=8):
    """The solution loss of `benchmark` for the model at `path` (see solution_loss.solution_loss_per_task)."""
    from megasnow.eval.solution_loss import sequence_limit, solution_loss_per_task, tokenize_solutions

    logits_fn, tok, bos, ctx, name = load_loss_model(path, tokenizer, device)
    st = tokenize_solutions(benchmark.tasks, tok, sequence_limit(ctx), bos_id=bos)
    out = solution_loss_per_task(logits_fn, st, batch_size=batch_size, device=device)
    out["model"] = name
    return out
