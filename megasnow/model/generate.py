"""Batched autoregressive generation with a KV cache: greedy, temperature, top-p/top-k/min-p sampling, stops,
and (on request) the logprobs of generated and prompt tokens.

Every row of a batch has its own prompt, token budget, sampling settings, seed and stops (`SequenceSpec`).
Prompts are left-padded; each sequence keeps its own positions (0 at its first token) and padding is masked
out, and each sampled row draws from its own seeded generator, so a prompt produces the same tokens alone or in
any batch. `generate_stream` yields after every step (for streaming servers); `generate` is the plain call.
"""
import secrets
from dataclasses import dataclass, field
from typing import Optional

import torch

from megasnow.model.detokenize import IncrementalDetokenizer, find_stop, partial_stop_length
from megasnow.model.token_logprobs import TokenLogprob, record_prompt_logprobs, token_records  # noqa: F401 (TokenLogprob: part of this API)

FINISH_STOP, FINISH_LENGTH, FINISH_ABORT = "stop", "length", "abort"


@dataclass(frozen=True)
class SequenceSpec:
    """One row to generate.

    prompt: token ids (non-empty); max_new_tokens: budget of generated tokens (a stop id counts);
    temperature 0 is greedy; top_p in (0, 1]; seed: this row's sampling stream (None: a random one);
    stop_ids: tokens that end the row (left out of its output, e.g. the tokenizer's EOS);
    stop_strings: strings that end the row (cut from its text; need a tokenizer); min_new_tokens: the stop ids
    cannot be sampled before this many tokens were generated (HF's min_new_tokens, vLLM's min_tokens);
    top_k (0: all tokens) and min_p (0: off) filter what is sampled, as in vLLM (see sample_tokens);
    logprobs: None (off) or N >= 0: record each generated token's logprob and the N most likely alternatives
    (Sequence.logprobs); prompt_logprobs: None (off) or N >= 0: the same for every prompt token after the first
    (Sequence.prompt_logprobs). Logprobs are of the model's raw distribution: log_softmax of the logits before
    temperature, top-p/top-k/min-p and min_new_tokens masking (vLLM v1's default `raw_logprobs`).
    """

    prompt: tuple
    max_new_tokens: int
    temperature: float = 0.0
    top_p: float = 1.0
    seed: Optional[int] = None
    stop_ids: frozenset = frozenset()
    stop_strings: tuple = ()
    min_new_tokens: int = 0
    top_k: int = 0
    min_p: float = 0.0
    logprobs: Optional[int] = None
    prompt_logprobs: Optional[int] = None

    def __post_init__(self):
        object.__setattr__(self, "prompt", tuple(int(t) for t in self.prompt))
        object.__setattr__(self, "stop_ids", frozenset(int(t) for t in self.stop_ids or ()))
        object.__setattr__(self, "stop_strings", tuple(s for s in (self.stop_strings or ()) if s))


@dataclass(eq=False)
class Sequence:
    """A row being generated: its output tokens, text and, once done, its finish reason.

    tokens: generated ids, the stop id excluded (a stop string's last token included); num_generated: tokens the
    model produced (including a stop id: what a server bills); text: the decoded output (cut before a stop
    string), "" without a tokenizer; finish_reason: None while running, then 'stop' (stop id or string),
    'length' (max_new_tokens reached) or 'abort' (cancel() was called, e.g. the client went away).
    logprobs (spec.logprobs set): TokenLogprob per generated token whose text is in `text` (a stop id is left out;
    at a stop string the token whose text straddles the cut keeps its logprob with its text clipped to the part
    before the cut, and tokens wholly inside or after the stop string are left out), so the records' texts join
    to `text`; prompt_logprobs (spec.prompt_logprobs set): TokenLogprob per prompt token, the first with logprob
    None; their texts join to the prompt's decoded text.
    """

    spec: SequenceSpec
    tokens: list = field(default_factory=list)
    num_generated: int = 0
    text: str = ""
    finish_reason: Optional[str] = None
    detokenizer: Optional[IncrementalDetokenizer] = None
    logprobs: Optional[list] = None
    prompt_logprobs: Optional[list] = None
    _streamed: int = 0
    _streamed_logprobs: int = 0
    _cancelled: bool = False

    @property
    def finished(self):
        return self.finish_reason is not None

    def cancel(self):
        """Stop this row at the next step (thread-safe: a flag read by the generation loop)."""
        self._cancelled = True

    def stream_text(self):
        """The text a stream may show now: all of it once finished, else without a tail that could still become
        a stop string."""
        if self.finished or not self.spec.stop_strings:
            return self.text
        return self.text[:len(self.text) - partial_stop_length(self.text, self.spec.stop_strings)]

    def take_stream_delta(self):
        """The stream text not returned by an earlier call (for server-sent events)."""
        text = self.stream_text()
        delta = text[self._streamed:]
        self._streamed = len(text)
        return delta

    def take_stream_logprobs(self):
        """The logprob records of the text returned by take_stream_delta so far and not returned by an earlier call:
        each record once its whole text was streamed (a record without text goes with the next one that has
        text), all the rest once finished. Concatenated over a stream they equal `logprobs`."""
        records = self.logprobs
        if records is None:
            return None
        start = self._streamed_logprobs
        if self.finished:
            end = len(records)
        else:
            end, offset = start, sum(len(r.text) for r in records[:start])
            for k in range(start, len(records)):
                offset += len(records[k].text)
                if offset > self._streamed:
                    break
                if records[k].text:
                    end = k + 1
        self._streamed_logprobs = end
        return records[start:end]

    def _append(self, token, record=None):
        """Record one generated token (and its TokenLogprob when logprobs are on) and decide whether the row ends."""
        self.num_generated += 1
        if token in self.spec.stop_ids:
            self._finish(FINISH_STOP)
            return
        self.tokens.append(token)
        if record is not None:
            self.logprobs.append(record)
        if self.detokenizer is not None:
            before = len(self.text)
            delta = self.detokenizer.push(token)
            if delta:
                self.text += delta
                if record is not None:
                    record.text = delta
                if self.spec.stop_strings:
                    cut = find_stop(self.text, self.spec.stop_strings, before)
                    if cut >= 0:
                        self.text = self.text[:cut]
                        self._clip_logprobs()
                        self.finish_reason = FINISH_STOP
                        return
        if self.num_generated >= self.spec.max_new_tokens:
            self._finish(FINISH_LENGTH)

    def _finish(self, reason):
        if self.detokenizer is not None:
            flushed = self.detokenizer.flush()
            self.text += flushed
            if flushed and self.logprobs:  # the held-back bytes are the text of the last tokens
                self.logprobs[-1].text += flushed
            if self.spec.stop_strings:  # a stop string completed by the flushed bytes still ends the text
                cut = find_stop(self.text, self.spec.stop_strings)
                if cut >= 0:
                    self.text, reason = self.text[:cut], FINISH_STOP
                    self._clip_logprobs()
        self.finish_reason = reason

    def _clip_logprobs(self):
        """After a stop-string cut: drop the records of text past the cut, clip the one that straddles it."""
        if not self.logprobs:
            return
        excess = sum(len(r.text) for r in self.logprobs) - len(self.text)
        while excess > 0 and self.logprobs:
            last = self.logprobs[-1]
            if len(last.text) <= excess:
                excess -= len(last.text)
                self.logprobs.pop()
            else:
                last.text = last.text[:len(last.text) - excess]
                excess = 0


def sample_tokens(logits, temperature, top_p, uniforms, top_k=None, min_p=None):
    """Next token ids [B] from logits [B, V] by inverse-CDF sampling of the filtered distribution, one uniform
    draw per row.

    temperature [B] (rows with 0 take the argmax), top_p [B] in (0, 1], uniforms [B] in [0, 1); optional top_k
    [B] long (0: all tokens) and min_p [B] in [0, 1]. Filters apply in vLLM's order (its v1 sampler): min-p
    (drop tokens below min_p x the top probability; Nguyen et al. 2024), top-k, then the nucleus: the smallest
    prefix of what is left, renormalized, whose mass reaches top_p (Holtzman et al. 2019). The most likely token
    always stays. Each row depends only on its own logits and draw, so batching never changes a sample.
    """
    greedy = logits.argmax(dim=-1)
    sampled_rows = temperature > 0
    if not bool(sampled_rows.any()):
        return greedy
    rows = sampled_rows.nonzero().squeeze(-1)
    lg = logits[rows].float() / temperature[rows, None].float()
    probs = torch.softmax(lg, dim=-1)
    sorted_probs, order = probs.sort(dim=-1, descending=True)
    threshold = top_p[rows, None]
    if top_k is not None or min_p is not None:
        keep = torch.ones_like(sorted_probs, dtype=torch.bool)
        if min_p is not None:
            keep &= sorted_probs >= min_p[rows, None].to(sorted_probs.dtype) * sorted_probs[:, :1]
        if top_k is not None:
            k = top_k[rows, None]
            keep &= (torch.arange(sorted_probs.shape[-1], device=k.device)[None, :] < k) | (k <= 0)
        filtered = bool((~keep).any())
        if filtered:  # the nucleus is taken over what min-p and top-k left, renormalized (rows untouched: mass 1)
            sorted_probs = sorted_probs.masked_fill(~keep, 0.0)
            mass = sorted_probs.sum(dim=-1, keepdim=True)
            threshold = torch.where(keep.all(dim=-1, keepdim=True), threshold, threshold * mass)
    drop = sorted_probs.cumsum(dim=-1) - sorted_probs >= threshold
    cdf = sorted_probs.masked_fill(drop, 0.0).cumsum(dim=-1)
    u = uniforms[rows].to(cdf.dtype) * cdf[:, -1]
    pick = torch.searchsorted(cdf, u[:, None], right=True).clamp(max=cdf.shape[-1] - 1)
    out = greedy.clone()
    out[rows] = order.gather(-1, pick).squeeze(-1)
    return out


def sample_next_token(logits, temperature=0.0, top_p=1.0, generator=None, top_k=0, min_p=0.0):
    """Next token ids [B] from logits [B, V]: argmax when temperature == 0, else sampling filtered by min_p,
    top_k (0: all) and top_p (see sample_tokens) with draws from `generator` (one per row)."""
    batch = logits.shape[0]
    temps = torch.full((batch,), float(temperature), device=logits.device)
    if temperature == 0.0:
        return sample_tokens(logits, temps, None, None)
    uniforms = torch.rand(batch, generator=generator, dtype=torch.float64).to(logits.device)
    return sample_tokens(logits, temps, torch.full((batch,), float(top_p), device=logits.device), uniforms,
                         torch.full((batch,), int(top_k), dtype=torch.long, device=logits.device) if top_k else None,
                         torch.full((batch,), float(min_p), device=logits.device) if min_p else None)


def truncate_at_stop_strings(text, stop_strings):
    """Cut `text` at the first occurrence of any stop string (the stop string itself is removed)."""
    cut = find_stop(text, stop_strings or ())
    return text if cut < 0 else text[:cut]


def check_specs(model, specs, tokenizer):
    """Raise ValueError naming the row and what to change for any spec the model cannot run."""
    if not specs:
        raise ValueError("generate: no prompts")
    vocab, limit = model.cfg.vocab_size, model.cfg.max_seq_len
    for i, s in enumerate(specs):
        if len(s.prompt) == 0:
            raise ValueError(f"generate: prompt {i} is empty; every prompt needs at least one token")
        if s.max_new_tokens < 0:
            raise ValueError(f"generate: max_new_tokens must be >= 0, got {s.max_new_tokens}")
        if s.min_new_tokens < 0:
            raise ValueError(f"generate: min_new_tokens must be >= 0, got {s.min_new_tokens}")
        if s.temperature < 0 or not 0.0 < s.top_p <= 1.0:
            raise ValueError(f"generate: need temperature >= 0 and 0 < top_p <= 1, got {s.temperature}, {s.top_p}")
        if (s.logprobs is not None and s.logprobs < 0) or (s.prompt_logprobs is not None and s.prompt_logprobs < 0):
            raise ValueError(f"generate: logprobs and prompt_logprobs must be None or >= 0, got {s.logprobs}, "
                             f"{s.prompt_logprobs}")
        if s.top_k < 0 or not 0.0 <= s.min_p <= 1.0:
            raise ValueError(f"generate: need top_k >= 0 (0: all) and 0 <= min_p <= 1, got {s.top_k}, {s.min_p}")
        if s.stop_strings and tokenizer is None:
            raise ValueError("generate: stop_strings need a tokenizer (to decode the generated tokens)")
        if len(s.prompt) + s.max_new_tokens > limit:
            raise ValueError(f"generate: prompt {i} ({len(s.prompt)} tokens) + max_new_tokens {s.max_new_tokens} "
                             f"exceeds model.max_seq_len {limit}; shorten the prompt or lower max_new_tokens")
        bad = [t for t in s.prompt if not 0 <= t < vocab]
        if bad:
            raise ValueError(f"generate: prompt {i} has token id {bad[0]} outside the vocabulary [0, {vocab})")


@torch.no_grad()
def generate_stream(model, specs, tokenizer=None, use_cache=True, pad_id=0):
    """Generate every SequenceSpec in one left-padded batch; yields the list of Sequences (in spec order) after
    every decoding step, until all have finished. Consumers may call `Sequence.cancel()` between steps.

    Rows that finished are dropped from the batch (and the KV cache) once they are half of it, so a long row
    does not keep paying for short ones. use_cache=False recomputes the whole sequence every step (slow; the
    cache's reference). Raises ValueError for a spec the model cannot run (see check_specs).
    """
    specs = list(specs)
    check_specs(model, specs, tokenizer)
    device = model.embed.weight.device
    seqs = [Sequence(s, detokenizer=IncrementalDetokenizer(tokenizer, s.prompt) if tokenizer is not None else None,
                     logprobs=[] if s.logprobs is not None else None) for s in specs]
    for q in seqs:
        if q.spec.max_new_tokens == 0:
            q._finish(FINISH_LENGTH)
    want_prompt_logprobs = any(s.prompt_logprobs is not None for s in specs)
    # rows (batch index, TokenLogprob top-N) whose generated tokens' logprobs are recorded; empty: no cost
    logprob_rows = [(b, s.logprobs) for b, s in enumerate(specs) if s.logprobs is not None]
    if all(q.finished for q in seqs) and not want_prompt_logprobs:
        yield seqs
        return

    batch, prompt_len = len(specs), max(len(s.prompt) for s in specs)
    total = prompt_len + max(s.max_new_tokens for s in specs)
    tokens = torch.full((batch, total), pad_id, dtype=torch.long, device=device)
    valid = torch.zeros(batch, total, dtype=torch.bool, device=device)
    for i, s in enumerate(specs):
        tokens[i, prompt_len - len(s.prompt):prompt_len] = torch.tensor(s.prompt, dtype=torch.long)
        valid[i, prompt_len - len(s.prompt):prompt_len] = True
    pad_counts = torch.tensor([prompt_len - len(s.prompt) for s in specs], device=device)
    positions = (torch.arange(total, device=device)[None, :] - pad_counts[:, None]).clamp(min=0)
    temperature = torch.tensor([s.temperature for s in specs], device=device)
    top_p = torch.tensor([s.top_p for s in specs], device=device)
    # top-k / min-p tensors only when a row asks for them, so plain sampling keeps its exact arithmetic
    top_k = torch.tensor([s.top_k for s in specs], device=device) if any(s.top_k for s in specs) else None
    min_p = torch.tensor([s.min_p for s in specs], device=device) if any(s.min_p for s in specs) else None
    # One CPU generator per sampled row, so a row's draws never depend on the rest of the batch (or the device).
    generators = [torch.Generator().manual_seed(secrets.randbits(63) if s.seed is None else int(s.seed))
                  if s.temperature > 0 else None for s in specs]
    rows = list(range(batch))  # batch row -> index into seqs (rows are dropped as sequences finish)

    was_training = model.training
    model.eval()
    if all(q.finished for q in seqs):  # max_new_tokens 0 everywhere: only the prompt logprobs (one prefill)
        try:
            logits = model.forward_inference(tokens[:, :prompt_len], positions[:, :prompt_len],
                                             valid[:, :prompt_len])
            record_prompt_logprobs(seqs, rows, logits, prompt_len, tokenizer)
        finally:
            model.train(was_training)
        yield seqs
        return
    cache = model.new_kv_cache(batch, total) if use_cache else None
    try:
        for step in range(total - prompt_len):
            cur = prompt_len + step
            start = (0 if step == 0 else cur - 1) if use_cache else 0
            logits = model.forward_inference(tokens[:, start:cur], positions[:, start:cur], valid[:, start:cur],
                                             kv_cache=cache)
            if step == 0 and want_prompt_logprobs:
                record_prompt_logprobs(seqs, rows, logits, prompt_len, tokenizer)
            uniforms = None
            if any(g is not None for g in generators):
                uniforms = torch.tensor([float(torch.rand((), generator=g, dtype=torch.float64))
                                         if g is not None and not seqs[r].finished else 0.0
                                         for g, r in zip(generators, rows)], dtype=torch.float64, device=device)
            last = logits[:, -1]
            early = [(b, sorted(seqs[r].spec.stop_ids)) for b, r in enumerate(rows)
                     if seqs[r].num_generated < seqs[r].spec.min_new_tokens and seqs[r].spec.stop_ids]
            if early:  # a row under its min_new_tokens may not stop yet: its stop ids get no probability
                last = last.clone()
                for b, ids in early:
                    last[b, ids] = float("-inf")
            next_tokens = sample_tokens(last, temperature, top_p, uniforms, top_k, min_p).tolist()
            records = {}
            if logprob_rows:  # raw logprobs: the logits before min_new_tokens masking and sampling filters
                want = [(b, n) for b, n in logprob_rows if not seqs[rows[b]].finished]
                if want:
                    index = [b for b, _ in want]
                    made = token_records(logits[index, -1], [next_tokens[b] for b in index], [n for _, n in want],
                                          [seqs[rows[b]].detokenizer for b in index])
                    records = dict(zip(index, made))
            for b, r in enumerate(rows):
                q = seqs[r]
                if not q.finished and q._cancelled:
                    q._finish(FINISH_ABORT)
                if q.finished:
                    next_tokens[b] = pad_id
                    continue
                q._append(next_tokens[b], records.get(b))
            tokens[:, cur] = torch.tensor(next_tokens, dtype=torch.long, device=device)
            valid[:, cur] = torch.tensor([not seqs[r].finished for r in rows], device=device)
            yield seqs
            keep = [b for b, r in enumerate(rows) if not seqs[r].finished]
            if not keep:
                break
            if len(keep) <= len(rows) // 2:
                index = torch.tensor(keep, device=device)
                tokens, valid, positions = tokens[index], valid[index], positions[index]
                temperature, top_p = temperature[index], top_p[index]
                top_k = None if top_k is None else top_k[index]
                min_p = None if min_p is None else min_p[index]
                if cache is not None:
                    cache.keep_rows(index)
                rows = [rows[b] for b in keep]
                generators = [generators[b] for b in keep]
                logprob_rows = [(keep.index(b), n) for b, n in logprob_rows if b in keep]
        for q in seqs:  # only reachable with budgets exhausted; kept for safety
            if not q.finished:
                q._finish(FINISH_LENGTH)
    finally:
        model.train(was_training)


def generate_sequences(model, specs, tokenizer=None, use_cache=True, pad_id=0):
    """Run `generate_stream` to the end; returns the finished Sequences in spec order."""
    seqs = []
    for seqs in generate_stream(model, specs, tokenizer, use_cache, pad_id):
        pass
    return seqs


def generate(model, prompts, max_new_tokens, temperature=0.0, top_p=1.0, stop_ids=None, stop_strings=None,
             tokenizer=None, use_cache=True, seed=None, pad_id=0, top_k=0, min_p=0.0):
    """Continue each prompt (a list of token ids) with the same settings; returns the new tokens of each.

    A sequence stops at max_new_tokens, at a token in `stop_ids` (not included in its output) or once its
    decoded output contains a stop string (output ends with the token completing it; the text cut is
    `truncate_at_stop_strings`). `seed` seeds every row's own sampling stream, so a prompt samples the same
    tokens alone or in a batch; greedy (temperature 0) ignores it.
    """
    specs = [SequenceSpec(tuple(p), max_new_tokens, temperature, top_p, seed, frozenset(stop_ids or ()),
                          tuple(stop_strings or ()), top_k=top_k, min_p=min_p) for p in prompts]
    if not specs:
        raise ValueError("generate: every prompt needs at least one token (got no prompts)")
    return [q.tokens for q in generate_sequences(model, specs, tokenizer, use_cache, pad_id)]
