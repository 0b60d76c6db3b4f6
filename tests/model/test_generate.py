"""Generation: KV cache vs recomputation, batching with left padding, determinism, per-row sampling settings and
seeds, stops and finish reasons, incremental detokenization."""
import pytest
import torch

from megasnow.model import LlamaModel, get_preset
from megasnow.model.detokenize import IncrementalDetokenizer, find_stop, partial_stop_length
from megasnow.model.generate import (SequenceSpec, generate, generate_sequences, generate_stream, sample_next_token,
                                     sample_tokens, truncate_at_stop_strings)

PROMPTS = [[5, 17, 42, 8, 99, 3, 61], [7, 7], [150, 2, 33, 4]]


@pytest.fixture(scope="module")
def model():
    cfg = get_preset("tiny-gqa", vocab_size=200, hidden_size=32, ffn_hidden_size=48, max_seq_len=64,
                     kernels="reference")
    # Larger init so the random model's greedy choices are decisive and non-repetitive.
    return LlamaModel(cfg.replace(init_std=0.5), init_seed=11)


class LetterTokenizer:
    """Token i decodes to one letter; enough to exercise stop strings."""

    def decode(self, ids):
        return "".join(chr(ord("a") + i % 26) for i in ids)


def test_cached_logits_equal_full_forward(model):
    tokens = torch.tensor([PROMPTS[0] + [1, 2, 3]])
    full = model(tokens)
    cache = model.new_kv_cache(1, tokens.shape[1])
    positions = torch.arange(tokens.shape[1])[None]
    valid = torch.ones_like(tokens, dtype=torch.bool)
    step_logits = [model.forward_inference(tokens[:, :7], positions[:, :7], valid[:, :7], kv_cache=cache)]
    for i in range(7, tokens.shape[1]):
        step_logits.append(model.forward_inference(tokens[:, i:i + 1], positions[:, i:i + 1], valid[:, i:i + 1],
                                                   kv_cache=cache))
    torch.testing.assert_close(torch.cat(step_logits, dim=1), full, atol=1e-5, rtol=1e-5)


def test_cache_and_no_cache_agree(model):
    with_cache = generate(model, PROMPTS, max_new_tokens=12, use_cache=True)
    without = generate(model, PROMPTS, max_new_tokens=12, use_cache=False)
    assert with_cache == without
    assert all(len(out) == 12 for out in with_cache)
    assert len(set(with_cache[0])) > 2  # not a degenerate constant output


def test_batched_equals_one_at_a_time_and_greedy_is_deterministic(model):
    batched = generate(model, PROMPTS, max_new_tokens=8)
    single = [generate(model, [p], max_new_tokens=8)[0] for p in PROMPTS]
    assert batched == single  # left padding and per-sequence positions leave each prompt unchanged
    assert generate(model, PROMPTS, max_new_tokens=8) == batched


def test_sampling_is_seeded(model):
    a = generate(model, PROMPTS, max_new_tokens=10, temperature=1.0, top_p=0.9, seed=1)
    b = generate(model, PROMPTS, max_new_tokens=10, temperature=1.0, top_p=0.9, seed=1)
    c = generate(model, PROMPTS, max_new_tokens=10, temperature=1.0, top_p=0.9, seed=2)
    assert a == b and a != c
    # A nucleus smaller than the top token's mass is greedy decoding.
    assert generate(model, PROMPTS, max_new_tokens=6, temperature=1.0, top_p=1e-6, seed=3) == \
        generate(model, PROMPTS, max_new_tokens=6)


def test_top_p_keeps_the_smallest_nucleus():
    logits = torch.log(torch.tensor([[0.5, 0.3, 0.15, 0.05]]))
    gen = torch.Generator().manual_seed(0)
    draws = {sample_next_token(logits, 1.0, 0.7, gen).item() for _ in range(300)}
    assert draws == {0, 1}  # 0.5 + 0.3 reaches 0.7; tokens 2 and 3 are never drawn
    assert sample_next_token(logits, 0.0).item() == 0


def _inverse_cdf_picks(probs, uniforms):
    """Reference: token drawn by inverse CDF from an explicit distribution over tokens sorted by probability."""
    cdf = torch.tensor(probs, dtype=torch.float64).cumsum(0)
    return [int(torch.searchsorted(cdf, u * cdf[-1], right=True).clamp(max=len(probs) - 1)) for u in uniforms]


@pytest.mark.parametrize("top_k,min_p,top_p,kept", [
    (2, 0.0, 1.0, [0.5, 0.3]),                # the two most likely tokens
    (0, 0.25, 1.0, [0.5, 0.3, 0.15]),         # 0.05 < 0.25 x 0.5 is dropped
    (0, 0.2, 0.83, [0.5, 0.3]),               # vLLM's order: the nucleus over what min-p left, renormalized
    (3, 0.0, 0.83, [0.5, 0.3]),               # (0.5 + 0.3) / 0.95 = 0.842 reaches 0.83; HF's order keeps 0.15 too
    (1, 0.0, 1.0, [0.5]),                     # top_k 1 is greedy
    (0, 1.0, 1.0, [0.5]),                     # min_p 1 keeps only the top token
    (4, 0.05, 1.0, [0.5, 0.3, 0.15, 0.05]),   # nothing filtered: plain sampling
])
def test_top_k_and_min_p_filter_then_renormalize(top_k, min_p, top_p, kept):
    """Each uniform draw picks the token the inverse CDF of the expected (filtered, renormalized) distribution
    gives; rows with other settings in the same batch are unaffected."""
    probs = torch.tensor([0.05, 0.5, 0.15, 0.3])  # sorted order: token 1, 3, 2, 0
    order = [1, 3, 2, 0]
    uniforms = torch.linspace(0.0, 0.999, 41, dtype=torch.float64)
    batch = len(uniforms)
    logits = torch.log(probs).expand(batch, -1)
    got = sample_tokens(logits, torch.ones(batch), torch.full((batch,), top_p), uniforms,
                        torch.full((batch,), top_k, dtype=torch.long), torch.full((batch,), min_p))
    assert got.tolist() == [order[i] for i in _inverse_cdf_picks(kept, uniforms.tolist())]
    # mixed with unfiltered rows: those rows sample the full distribution as before
    plain = sample_tokens(logits, torch.ones(batch), torch.ones(batch), uniforms)
    mixed = sample_tokens(logits, torch.ones(batch), torch.cat([torch.full((20,), top_p), torch.ones(21)]), uniforms,
                          torch.tensor([top_k] * 20 + [0] * 21), torch.tensor([min_p] * 20 + [0.0] * 21))
    assert mixed[:20].tolist() == got[:20].tolist() and mixed[20:].tolist() == plain[20:].tolist()


def test_top_k_and_min_p_rows_are_the_same_alone_or_batched(model):
    specs = [SequenceSpec(PROMPTS[0], 8, 1.0, 1.0, seed=3, top_k=5), SequenceSpec(PROMPTS[1], 6, 1.0, 0.9, seed=4),
             SequenceSpec(PROMPTS[2], 8, 1.2, 1.0, seed=5, min_p=0.1), SequenceSpec(PROMPTS[0], 8, 1.0, seed=3)]
    batched = _run(model, specs)
    for spec, q in zip(specs, batched):
        assert q.tokens == _run(model, [spec])[0].tokens
    assert generate(model, PROMPTS, 6, temperature=1.0, seed=1, top_k=1) == generate(model, PROMPTS, 6)
    with pytest.raises(ValueError, match="top_k >= 0"):
        generate(model, PROMPTS, 2, temperature=1.0, top_k=-1)


def test_stop_ids_and_stop_strings(model):
    free = generate(model, [PROMPTS[0]], max_new_tokens=12)[0]
    stop_at = free[4]
    first = free.index(stop_at)
    assert generate(model, [PROMPTS[0]], max_new_tokens=12, stop_ids=[stop_at])[0] == free[:first]
    tok = LetterTokenizer()
    text = tok.decode(free)
    stop = text[5:7]
    out = generate(model, [PROMPTS[0]], max_new_tokens=12, stop_strings=[stop], tokenizer=tok)[0]
    cut = text.index(stop) + len(stop)
    assert out == free[:cut]
    assert truncate_at_stop_strings(tok.decode(out), [stop]) == text[:text.index(stop)]
    # Other sequences of the batch keep going when one stops.
    batch = generate(model, PROMPTS, max_new_tokens=12, stop_strings=[stop], tokenizer=tok)
    assert batch[0] == free[:cut]
    assert batch[1] == generate(model, [PROMPTS[1]], max_new_tokens=12, stop_strings=[stop], tokenizer=tok)[0]


def test_bad_requests_are_refused(model):
    with pytest.raises(ValueError, match="max_seq_len"):
        generate(model, PROMPTS, max_new_tokens=60)
    with pytest.raises(ValueError, match="need a tokenizer"):
        generate(model, PROMPTS, max_new_tokens=2, stop_strings=["x"])
    with pytest.raises(ValueError, match="outside the vocabulary"):
        generate(model, [[1, 500]], max_new_tokens=2)
    with pytest.raises(ValueError, match="at least one token"):
        generate(model, [[]], max_new_tokens=2)


# ----------------------------------------------------------------------------- per-row specs, finish reasons
def _run(model, specs, tokenizer=None):
    return generate_sequences(model, specs, tokenizer)


def test_per_row_settings_give_the_same_sequences_alone_or_batched(model):
    """Different budgets, temperatures, top_p and seeds per row; finished rows are dropped from the batch midway
    (budgets 3 and 5 of 16), and each row still equals its run alone (per-row generators)."""
    specs = [SequenceSpec(PROMPTS[0], 16, 0.0), SequenceSpec(PROMPTS[1], 3, 1.0, 0.9, seed=5),
             SequenceSpec(PROMPTS[2], 5, 0.7, 1.0, seed=6), SequenceSpec(PROMPTS[1], 12, 1.3, 0.95, seed=7),
             SequenceSpec(PROMPTS[0], 16, 1.0, 1.0, seed=8)]
    batched = _run(model, specs)
    for spec, q in zip(specs, batched):
        alone = _run(model, [spec])[0]
        assert (q.tokens, q.finish_reason, q.num_generated) == (alone.tokens, "length", spec.max_new_tokens)
        assert len(q.tokens) == spec.max_new_tokens
    assert _run(model, specs[::-1])[0].tokens == batched[-1].tokens  # batch order does not matter either
    assert batched[4].tokens != batched[0].tokens  # sampling differs from greedy here
    assert _run(model, [SequenceSpec(PROMPTS[0], 16, 1.0, 1.0, seed=9)])[0].tokens != batched[4].tokens


def test_finish_reasons_stop_id_length_and_abort(model):
    free = _run(model, [SequenceSpec(PROMPTS[0], 12)])[0].tokens
    stop_at = free[4]
    q = _run(model, [SequenceSpec(PROMPTS[0], 12, stop_ids=frozenset({stop_at}))])[0]
    assert (q.tokens, q.finish_reason, q.num_generated) == (free[:free.index(stop_at)], "stop",
                                                            free.index(stop_at) + 1)
    assert _run(model, [SequenceSpec(PROMPTS[0], 0)])[0].finish_reason == "length"
    stream = generate_stream(model, [SequenceSpec(PROMPTS[0], 12), SequenceSpec(PROMPTS[1], 12)])
    seqs = next(stream)
    seqs[0].cancel()
    for seqs in stream:
        pass
    assert seqs[0].finish_reason == "abort" and len(seqs[0].tokens) == 1
    assert seqs[1].finish_reason == "length" and seqs[1].tokens == _run(model, [SequenceSpec(PROMPTS[1], 12)])[0].tokens


def test_stop_strings_cut_text_and_streams_never_show_them(model):
    tok = LetterTokenizer()
    free = _run(model, [SequenceSpec(PROMPTS[0], 12)], tok)[0]
    assert free.text == tok.decode(free.tokens)
    stop = free.text[5:8]
    cut = free.text.index(stop)
    deltas = []
    for seqs in generate_stream(model, [SequenceSpec(PROMPTS[0], 12, stop_strings=(stop, "not there"))], tok):
        deltas.append(seqs[0].take_stream_delta())
        assert stop not in "".join(deltas)
    q = seqs[0]
    assert (q.text, q.finish_reason, q.tokens) == (free.text[:cut], "stop", free.tokens[:cut + len(stop)])
    assert "".join(deltas) == q.text


@pytest.fixture(scope="module")
def real_tokenizers(tmp_path_factory):
    """A byte-level BPE (HF tokenizer.json) and a SentencePiece BPE, both trained on standard-library code."""
    import sentencepiece as spm

    from megasnow.data.tokenizer import load_tokenizer
    from megasnow.generation.tiny_model import train_byte_level_bpe, training_texts

    d = tmp_path_factory.mktemp("toks")
    train_byte_level_bpe(training_texts(), 400).save(str(d / "tokenizer.json"))
    (d / "corpus.txt").write_text("\n".join(training_texts(10)))
    spm.SentencePieceTrainer.train(input=str(d / "corpus.txt"), model_prefix=str(d / "sp"), vocab_size=400,
                                   model_type="bpe", byte_fallback=True, character_coverage=1.0,
                                   remove_extra_whitespaces=False, minloglevel=2)
    return {"bpe": load_tokenizer(str(d / "tokenizer.json")), "sp": load_tokenizer(str(d / "sp.model"))}


@pytest.mark.parametrize("kind", ["bpe", "sp"])
def test_incremental_text_equals_decoding_prompt_and_output(real_tokenizers, kind):
    """What a completion appends to its prompt, exactly, for real code and for random tokens (broken UTF-8)."""
    tok = real_tokenizers[kind]
    code = "    def f(self, x):\n        return 'héllo ✓ 日本 🚀'  # é\n\n\tpass\n"
    gen = torch.Generator().manual_seed(0)
    cases = [(tok.encode("def main():\n"), tok.encode(code))]
    for _ in range(20):
        ids = torch.randint(0, tok.vocab_size, (40,), generator=gen).tolist()
        cases.append((ids[:10], ids[10:]))
    for prompt, output in cases:
        detok = IncrementalDetokenizer(tok, prompt)
        text = "".join(detok.push(t) for t in output) + detok.flush()
        assert text == detok.text
        full, head = tok.decode(prompt + output), tok.decode(prompt)
        if full.startswith(head):  # (random SentencePiece ids may not decode to a prefix-stable string)
            assert text == full[len(head):], (kind, prompt, output)
    if kind == "bpe":
        prompt, output = cases[0]
        detok = IncrementalDetokenizer(tok, prompt)
        assert "".join(detok.push(t) for t in output) == code


def test_stop_string_checks_decode_a_bounded_window():
    """Each new token decodes a window of a few tokens, never the whole output (no quadratic re-decoding)."""
    class Counting(LetterTokenizer):
        decoded = 0

        def decode(self, ids):
            Counting.decoded += len(ids)
            return super().decode(ids)

    detok = IncrementalDetokenizer(Counting(), list(range(50)))
    for t in range(2000):
        detok.push(t)
    assert Counting.decoded < 2000 * 2 * 8
    assert find_stop("abcabc", ["ca", "bc"]) == 1 and find_stop("abc", ["x"]) == -1
    assert find_stop("xxabc", ["abc"], start=4) == 2  # a match straddling `start` is found
    assert partial_stop_length("x = 1\n\n#", ["\n\n\n", "#end"]) == 1
    assert partial_stop_length("x = 1\n\n", ["\n\n\n", "#end"]) == 2


def reference_logprobs(model, ids):
    """log_softmax of the model's logits over `ids` (one full forward, no cache): [len(ids), V]."""
    with torch.no_grad():
        return torch.log_softmax(model(torch.tensor([ids]))[0].float(), dim=-1)


def test_logprob_records_equal_log_softmax_and_batched_equals_alone(model):
    """Generated tokens' records: the sampled token's raw logprob (log_softmax of the logits, before temperature
    and top-p) and the top-N sorted, most likely first; prompt records: None first, then each prompt token's
    logprob given the tokens before it. A row's records are the same alone or in a batch, and rows without
    logprobs record nothing."""
    tok = LetterTokenizer()
    specs = [SequenceSpec(PROMPTS[0], 6, logprobs=3, prompt_logprobs=2),
             SequenceSpec(PROMPTS[1], 5, temperature=1.3, top_p=0.8, seed=4, logprobs=0),
             SequenceSpec(PROMPTS[2], 4, logprobs=5),
             SequenceSpec(PROMPTS[2], 4)]
    batched = generate_sequences(model, specs, tok)
    for spec, q in zip(specs, batched):
        alone = generate_sequences(model, [spec], tok)[0]
        assert alone.tokens == q.tokens
        if spec.logprobs is None:
            assert q.logprobs is None and q.prompt_logprobs is None
            continue
        assert [r.token_id for r in q.logprobs] == q.tokens and "".join(r.text for r in q.logprobs) == q.text
        ref = reference_logprobs(model, list(spec.prompt) + q.tokens)[len(spec.prompt) - 1:-1]
        for k, (r, a) in enumerate(zip(q.logprobs, alone.logprobs)):
            assert r.logprob == pytest.approx(ref[k, r.token_id].item(), abs=1e-4)
            assert r.logprob == pytest.approx(a.logprob, abs=1e-5) and [t[0] for t in r.top] == [t[0] for t in a.top]
            assert len(r.top) == spec.logprobs
            values, ids = ref[k].topk(spec.logprobs) if spec.logprobs else (torch.zeros(0), torch.zeros(0))
            assert [t[0] for t in r.top] == ids.tolist()
            assert [t[1] for t in r.top] == pytest.approx(values.tolist(), abs=1e-4)
            assert [t[2] for t in r.top] == [tok.decode([t[0]]) for t in r.top]
    prompt = batched[0].prompt_logprobs
    ref = reference_logprobs(model, PROMPTS[0])
    assert [r.token_id for r in prompt] == PROMPTS[0] and prompt[0].logprob is None
    assert [r.logprob for r in prompt[1:]] == pytest.approx([ref[j - 1, t].item() for j, t in enumerate(PROMPTS[0])
                                                             if j], abs=1e-4)
    assert all(len(r.top) == 2 for r in prompt[1:]) and "".join(r.text for r in prompt) == tok.decode(PROMPTS[0])


def test_logprobs_are_raw_and_stop_strings_clip_them(model):
    """min_new_tokens masks the stop id from sampling but not from the raw logprobs; a zero budget still records
    the prompt's logprobs (echo scoring); at a stop string the records keep the text before the cut."""
    tok = LetterTokenizer()
    free = generate_sequences(model, [SequenceSpec(PROMPTS[0], 8, logprobs=1)], tok)[0]
    stop_id = free.tokens[0]
    held = generate_sequences(model, [SequenceSpec(PROMPTS[0], 8, stop_ids={stop_id}, min_new_tokens=1,
                                                   logprobs=1)], tok)[0]
    assert held.tokens[0] != stop_id and held.logprobs[0].top[0][0] == stop_id  # masked, yet reported as raw
    assert held.logprobs[0].top[0][1] == pytest.approx(free.logprobs[0].logprob, abs=1e-5)
    only_prompt = generate_sequences(model, [SequenceSpec(PROMPTS[1], 0, prompt_logprobs=0, logprobs=0)], tok)[0]
    assert only_prompt.tokens == [] and only_prompt.logprobs == []
    ref = reference_logprobs(model, PROMPTS[1])
    assert [r.logprob for r in only_prompt.prompt_logprobs] == [None, pytest.approx(ref[0, 7].item(), abs=1e-4)]
    text = free.text  # one letter per token: cut two letters into the text
    cut = generate_sequences(model, [SequenceSpec(PROMPTS[0], 8, stop_strings=(text[2:4],), logprobs=2)], tok)[0]
    assert cut.text == text[:2] and "".join(r.text for r in cut.logprobs) == cut.text
    assert [r.logprob for r in cut.logprobs] == pytest.approx([r.logprob for r in free.logprobs[:2]], abs=1e-5)


def test_stream_logprobs_follow_the_streamed_text(model):
    tok = LetterTokenizer()
    spec = SequenceSpec(PROMPTS[2], 10, logprobs=1, stop_strings=("zz",))
    texts, records = [], []
    for seqs in generate_stream(model, [spec], tok):
        texts.append(seqs[0].take_stream_delta())
        got = seqs[0].take_stream_logprobs()
        records += got
        assert "".join(r.text for r in got) == texts[-1]  # one letter per token: a record goes with its text
    final = seqs[0]
    assert "".join(texts) == final.text and records == final.logprobs
