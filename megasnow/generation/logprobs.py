"""Token logprob records (megasnow.model.token_logprobs.TokenLogprob) in the OpenAI response shapes, as vLLM builds them
(vllm/entrypoints/openai/serving_completion.py `_create_completion_logprobs`, serving_chat.py `_create_chat_logprobs`).
No torch import: records are read by attribute (token_id, logprob, text, top)."""

LOGPROB_FLOOR = -9999.0  # vLLM's floor: JSON has no -inf


def _clamp(value):
    return None if value is None else max(float(value), LOGPROB_FLOOR)


def _alternatives(record):
    """[(text, logprob)] of a record's top N, most likely first; the sampled token's own entry takes its text in
    the sequence (so a key equals the `tokens` entry when the sampled token is among the top N)."""
    return [(record.text if tid == record.token_id else (text if text is not None else str(tid)), lp)
            for tid, lp, text in record.top]


def completion_logprobs(records, initial_offset=0):
    """(logprobs, next_offset): the OpenAI legacy completions `logprobs` object of `records`:
    tokens[i] is token i's text in the choice's text (they join to it), token_logprobs[i] its logprob (None for
    an echoed first prompt token), top_logprobs[i] {text: logprob} of the N most likely tokens plus the sampled
    one (OpenAI: up to logprobs + 1 entries), most likely first, and text_offset[i] the character offset of
    token i in the choice's text, counted from `initial_offset`. Logprobs below -9999 (-inf) read -9999."""
    out = {"tokens": [], "token_logprobs": [], "top_logprobs": [], "text_offset": []}
    offset = initial_offset
    for r in records:
        out["tokens"].append(r.text)
        out["text_offset"].append(offset)
        offset += len(r.text)
        out["token_logprobs"].append(_clamp(r.logprob))
        if r.logprob is None:
            out["top_logprobs"].append(None)
            continue
        entries = _alternatives(r)
        if all(tid != r.token_id for tid, _, _ in r.top):
            entries.append((r.text, r.logprob))
        top = {}
        for text, lp in sorted(entries, key=lambda e: -e[1]):
            top.setdefault(text, _clamp(lp))
        out["top_logprobs"].append(top)
    return out, offset


def chat_logprobs_content(records):
    """The OpenAI chat `logprobs.content` list of `records`: {token, logprob, bytes (its UTF-8 bytes),
    top_logprobs: the N most likely [{token, logprob, bytes}], most likely first}."""
    def entry(text, lp):
        return {"token": text, "logprob": _clamp(lp), "bytes": list(text.encode("utf-8"))}

    return [{**entry(r.text, r.logprob), "top_logprobs": [entry(t, lp) for t, lp in _alternatives(r)]}
            for r in records]
