"""Batched autoregressive generation with a KV cache: greedy, temperature and top-p sampling, stop ids/strings.

Prompts of different lengths are left-padded; each sequence keeps its own positions (0 at its first
token) and padding is masked out, so a prompt generates the same tokens alone or in a batch.
"""
import torch


def sample_next_token(logits, temperature=0.0, top_p=1.0, generator=None):
    """Next token ids [B] from logits [B, V]: argmax when temperature == 0, else nucleus sampling."""
    if temperature == 0.0:
        return logits.argmax(dim=-1)
    probs = torch.softmax(logits.float() / temperature, dim=-1)
    if top_p < 1.0:
        sorted_probs, order = probs.sort(dim=-1, descending=True)
        # Keep the smallest prefix whose mass reaches top_p (the most likely token always stays).
        drop = sorted_probs.cumsum(dim=-1) - sorted_probs >= top_p
        sorted_probs = sorted_probs.masked_fill(drop, 0.0)
        probs = torch.zeros_like(probs).scatter_(-1, order, sorted_probs)
    return torch.multinomial(probs, 1, generator=generator).squeeze(-1)


def truncate_at_stop_strings(text, stop_strings):
    """Cut `text` at the first occurrence of any stop string (the stop string itself is removed)."""
    cut = min((i for i in (text.find(s) for s in stop_strings or ()) if i >= 0), default=len(text))
    return text[:cut]


def _check_arguments(model, prompts, max_new_tokens, temperature, top_p, stop_strings, tokenizer):
    if not prompts or any(len(p) == 0 for p in prompts):
        raise ValueError("generate: every prompt needs at least one token")
    if max_new_tokens < 0:
        raise ValueError(f"generate: max_new_tokens must be >= 0, got {max_new_tokens}")
    if temperature < 0 or not 0.0 < top_p <= 1.0:
        raise ValueError(f"generate: need temperature >= 0 and 0 < top_p <= 1, got {temperature}, {top_p}")
    if stop_strings and tokenizer is None:
        raise ValueError("generate: stop_strings need a tokenizer (to decode the generated tokens)")
    longest = max(len(p) for p in prompts) + max_new_tokens
    if longest > model.cfg.max_seq_len:
        raise ValueError(f"generate: longest prompt + max_new_tokens = {longest} exceeds model.max_seq_len "
                         f"{model.cfg.max_seq_len}; shorten the prompt or lower max_new_tokens")
    vocab = model.cfg.vocab_size
    for i, p in enumerate(prompts):
        bad = [t for t in p if not 0 <= int(t) < vocab]
        if bad:
            raise ValueError(f"generate: prompt {i} has token id {bad[0]} outside the vocabulary [0, {vocab})")


@torch.no_grad()
def generate(model, prompts, max_new_tokens, temperature=0.0, top_p=1.0, stop_ids=None, stop_strings=None,
             tokenizer=None, use_cache=True, seed=None, pad_id=0):
    """Continue each prompt (a list of token ids); returns the new tokens of each, in prompt order.

    A sequence stops at max_new_tokens, at a token in `stop_ids` (not included in its output) or once its
    decoded output contains a stop string (output ends with the token completing it; cut the text with
    `truncate_at_stop_strings`). `seed` makes sampling reproducible; greedy (temperature 0) ignores it.
    use_cache=False recomputes the whole sequence every step (slow; the cache's reference).
    """
    _check_arguments(model, prompts, max_new_tokens, temperature, top_p, stop_strings, tokenizer)
    device = model.embed.weight.device
    batch, prompt_len = len(prompts), max(len(p) for p in prompts)
    total = prompt_len + max_new_tokens
    tokens = torch.full((batch, total), pad_id, dtype=torch.long, device=device)
    valid = torch.zeros(batch, total, dtype=torch.bool, device=device)
    for i, p in enumerate(prompts):
        tokens[i, prompt_len - len(p):prompt_len] = torch.tensor(p, dtype=torch.long)
        valid[i, prompt_len - len(p):prompt_len] = True
    pad_counts = torch.tensor([prompt_len - len(p) for p in prompts], device=device)
    positions = (torch.arange(total, device=device)[None, :] - pad_counts[:, None]).clamp(min=0)

    generator = None
    if seed is not None and temperature > 0:
        generator = torch.Generator(device=device).manual_seed(int(seed))
    stop_ids = set(int(t) for t in (stop_ids or ()))
    outputs = [[] for _ in range(batch)]
    done = torch.zeros(batch, dtype=torch.bool, device=device)
    cache = model.new_kv_cache(batch, total) if use_cache else None
    was_training = model.training
    model.eval()
    try:
        for step in range(max_new_tokens):
            cur = prompt_len + step
            start = (0 if step == 0 else cur - 1) if use_cache else 0
            logits = model.forward_inference(tokens[:, start:cur], positions[:, start:cur], valid[:, start:cur],
                                             kv_cache=cache)
            next_tokens = sample_next_token(logits[:, -1].float(), temperature, top_p, generator)
            next_tokens = next_tokens.masked_fill(done, pad_id)
            tokens[:, cur] = next_tokens
            valid[:, cur] = ~done
            for i, t in enumerate(next_tokens.tolist()):
                if done[i]:
                    continue
                if t in stop_ids:
                    done[i] = True
                    continue
                outputs[i].append(t)
                if stop_strings and any(s in tokenizer.decode(outputs[i]) for s in stop_strings):
                    done[i] = True
            if bool(done.all()):
                break
    finally:
        model.train(was_training)
    return outputs
