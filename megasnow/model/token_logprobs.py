"""Per-token logprob records of the KV-cache generator (megasnow.model.generate): the sampled token's raw logprob
and the N most likely alternatives, with texts that join to the generated (or prompt) text."""
from dataclasses import dataclass
from typing import Optional

import torch

from megasnow.model.detokenize import IncrementalDetokenizer


@dataclass(eq=False)
class TokenLogprob:
    """One token's record: token_id; logprob (float, natural log of the raw probability; None for the first prompt
    token, which has no context); text: the token's text as it appears in the sequence's text (its incremental
    detokenizer delta, so the texts of consecutive records join to the text; "" for a token that completes no
    character yet; "" without a tokenizer); top: ((token_id, logprob, text), ...) the N most likely tokens at
    this position, most likely first (text decoded in the same context; None without a tokenizer)."""

    token_id: int
    logprob: Optional[float]
    text: str = ""
    top: tuple = ()


def candidate_texts(detokenizer, ids):
    """Text each token of `ids` would add as the detokenizer's next token (same context as its next push)."""
    if detokenizer is None:
        return [None] * len(ids)
    context = detokenizer.ids[detokenizer.prefix_offset:]
    base = detokenizer.tokenizer.decode(context)
    return [detokenizer.tokenizer.decode(context + [i])[len(base):] for i in ids]


def logprobs_of(logits, tokens, n):
    """(chosen, top_ids, top_logprobs) of logits [R, V] (raw: log_softmax in float32): each row's logprob of its
    token in `tokens` [R], and the ids and logprobs of its n largest entries, most likely first (lists)."""
    lp = torch.log_softmax(logits.float(), dim=-1)
    chosen = lp.gather(-1, torch.as_tensor(tokens, device=lp.device)[:, None]).squeeze(-1).tolist()
    if n <= 0:
        return chosen, [[] for _ in chosen], [[] for _ in chosen]
    values, ids = lp.topk(min(n, lp.shape[-1]), dim=-1)
    return chosen, ids.tolist(), values.tolist()


def token_records(logits, tokens, ns, detokenizers):
    """TokenLogprob per row of logits [R, V] for the chosen `tokens` [R] with each row's ns[i] most likely
    alternatives, texts decoded by the row's detokenizer before it receives the token."""
    chosen, top_ids, top_lps = logprobs_of(logits, tokens, max(ns))
    return [TokenLogprob(int(t), float(c), "", tuple(zip(ids[:n], vals[:n], candidate_texts(d, ids[:n]))))
            for t, c, ids, vals, n, d in zip(tokens, chosen, top_ids, top_lps, ns, detokenizers)]


def record_prompt_logprobs(seqs, rows, logits, prompt_len, tokenizer):
    """Fill Sequence.prompt_logprobs of rows that ask for them from the prefill logits [B, prompt_len, V]
    (left-padded: a prompt of length L sits at prompt_len - L ... prompt_len - 1)."""
    for b, r in enumerate(rows):
        q = seqs[r]
        n = q.spec.prompt_logprobs
        if n is None:
            continue
        prompt = list(q.spec.prompt)
        pad = prompt_len - len(prompt)
        detok = IncrementalDetokenizer(tokenizer, ()) if tokenizer is not None else None
        records = [TokenLogprob(prompt[0], None)]
        if len(prompt) > 1:
            # (texts of the alternatives need the context before each token: one detokenizer walks the prompt)
            chosen, top_ids, top_lps = logprobs_of(logits[b, pad:prompt_len - 1], prompt[1:], n)
            records += [TokenLogprob(t, float(c), "", tuple(zip(ids, vals)))
                        for t, c, ids, vals in zip(prompt[1:], chosen, top_ids, top_lps)]
        for rec in records:
            if detok is not None:
                if rec.logprob is not None:
                    alt = candidate_texts(detok, [i for i, _ in rec.top])
                    rec.top = tuple((i, v, a) for (i, v), a in zip(rec.top, alt))
                rec.text = detok.push(rec.token_id)
            elif rec.logprob is not None:
                rec.top = tuple((i, v, None) for i, v in rec.top)
        if detok is not None:
            records[-1].text += detok.flush()
        q.prompt_logprobs = records
