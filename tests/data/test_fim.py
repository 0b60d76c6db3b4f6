"""Fill-in-the-middle: the rearrangement undoes to the original text (PSM and SPM, file and sample level, real code
with non-ASCII text, SentencePiece and byte-level BPE), units keep their length and separators their place, the
rates match within binomial error, samples are the same on 1 and 2 data-parallel ranks and after resume, FIM tokens
of other tokenizer families are found, and tokenizers that cannot serve FIM are refused with the reason."""
import json
import os
import pickle

import numpy as np
import pytest
import torch

from megasnow.config import ConfigError
from megasnow.curate.documents import repo_documents
from megasnow.data import special_tokens
from megasnow.data.blended_dataset import BlendEntry, build_gpt_dataset
from megasnow.data.fim import FIMDataset, FIMTransform, fim_prompt_ids, parse_fim_unit, unit_draws
from megasnow.data.indexed import write_dataset
from megasnow.data.tokenizer import TokenizerError, load_tokenizer
from megasnow.train.data import MicroBatches, build_fim_transforms
from tests.data.code_fixtures import hf_tokenizer_json, real_code_files, sentencepiece_model

SEQ_LEN = 255


def tokenizers():
    return {"sentencepiece": sentencepiece_model(), "bytelevel": hf_tokenizer_json()}


def repo_docs(n_files=60, chars=2000):
    """StarCoder2-style repository documents of real source files, grouped by folder; each file is cut to `chars`
    around its first non-ASCII character (real_code_files puts such files first)."""
    files = real_code_files()[:n_files]
    by_repo = {}
    for k, (path, text) in enumerate(files):
        first = next((i for i, c in enumerate(text) if ord(c) > 127), 0)
        start = max(0, first - chars // 2)
        by_repo.setdefault(os.path.basename(os.path.dirname(path)) or "root", []).append(
            {"path": os.path.basename(path), "content": text[start:start + chars], "id": str(k)})
    docs = []
    for repo, fs in sorted(by_repo.items()):
        docs += [d["text"] for d in repo_documents(fs, "code", f"local/{repo}", seed=0, max_chars=6000)]
    return docs


@pytest.fixture(scope="module", params=sorted(tokenizers()))
def corpus(request, tmp_path_factory):
    """(tokenizer, dataset prefix, texts) of repository documents, EOD appended as --append-eod does."""
    tok = load_tokenizer(tokenizers()[request.param])
    texts = repo_docs()
    prefix = str(tmp_path_factory.mktemp("fim") / request.param)
    write_dataset(prefix, [tok.encode(t) + [tok.eod_id] for t in texts], dtype=np.int32)
    return tok, prefix, texts


def check_unit(transform, tok, original, new, draws):
    """`new` is `original` rearranged by FIM: parse it back and compare with the untruncated split."""
    fim = tok.fim_tokens()
    parsed = parse_fim_unit(new, fim)
    assert parsed is not None
    fmt, prefix_t, suffix_t, tail = parsed
    prefix, middle, suffix = [x.tolist() for x in transform.split_unit(original, draws[2], draws[3])]
    text = tok.decode(original)
    assert tok.decode(prefix) + tok.decode(middle) + tok.decode(suffix) == text  # the exact inverse
    assert suffix_t == suffix[:len(suffix_t)]  # only the end of the suffix may be cut
    if fmt == "psm":
        assert tail == middle  # the middle is never cut
        kept_prefix = prefix_t
    else:
        assert tail[len(tail) - len(middle):] == middle
        kept_prefix = tail[:len(tail) - len(middle)]
    assert kept_prefix == prefix[len(prefix) - len(kept_prefix):]  # the prefix loses its start only
    if len(kept_prefix) < len(prefix):
        assert suffix_t == []  # the suffix went first
    expected = "spm" if draws[1] < transform.spm_rate else "psm"
    assert fmt == expected or kept_prefix == []  # PSM with an empty prefix reads the same as SPM
    fmt = expected
    pieces = transform.table.pieces  # bytes: a suffix cut by the length may end inside a character
    return fmt, b"".join(pieces[t] for t in kept_prefix + middle + suffix_t)


@pytest.mark.parametrize("level", ["file", "sample"])
@pytest.mark.parametrize("spm_rate", [0.0, 1.0, 0.5])
def test_every_fim_unit_undoes_to_the_original_text(corpus, level, spm_rate):
    tok, prefix, _ = corpus
    # one epoch: every document, so every non-ASCII file
    ds = build_gpt_dataset(BlendEntry(prefix, repeat=1), None, SEQ_LEN, seed=5)
    transform = FIMTransform(tok, 1.0, spm_rate, level, seed=11)
    fim = tok.fim_tokens()
    seps = transform.separators
    seen = {"psm": 0, "spm": 0}
    nonascii = 0
    for i in range(len(ds)):
        sample = ds[i]
        out = transform(sample, i)
        assert out.dtype == np.int64 and len(out) == SEQ_LEN + 1
        assert np.array_equal(np.isin(out, seps), np.isin(sample, seps))  # separators stay in place
        starts, ends = transform.units(sample)
        draws = unit_draws(11, 0, i, len(starts))
        for u, (s, e) in enumerate(zip(starts, ends)):
            unit, new = sample[s:e], out[s:e]
            if level == "file" and unit[0] == tok.token_to_id(special_tokens.REPO_NAME):
                assert np.array_equal(new, unit)  # the repository header is left alone
                continue
            if new[0] != fim.prefix:
                assert np.array_equal(new, unit)
                assert transform.permute_unit(unit, draws[u]) is None  # no characters, or too short
                continue
            fmt, kept = check_unit(transform, tok, unit, new, draws[u])
            seen[fmt] += 1
            # in order; a cut suffix may end inside a character
            assert kept in b"".join(transform.table.pieces[t] for t in unit)
            nonascii += any(b > 127 for b in kept)
            if level == "file":
                assert tok.file_sep_id not in new.tolist()
    if spm_rate in (0.0, 1.0):
        assert seen["psm" if spm_rate else "spm"] == 0
    assert sum(seen.values()) > 50 and nonascii > 0


def test_split_is_exact_on_real_code_with_non_ascii_text():
    files = [t for _, t in real_code_files()]
    assert sum(any(ord(c) > 127 for c in t) for t in files) >= 5
    for path in tokenizers().values():
        tok = load_tokenizer(path)
        transform = FIMTransform(tok, 1.0, 0.5, "sample")
        for k, text in enumerate(files[:40]):
            ids = np.array(tok.encode(text))
            for j in range(4):
                d = unit_draws(2, 0, 10 * k + j, 1)[0]
                prefix, middle, suffix = transform.split_unit(ids, d[2], d[3])
                assert tok.decode(prefix) + tok.decode(middle) + tok.decode(suffix) == text
                a = len(tok.decode(prefix))
                assert a == int(min(d[2], d[3]) * (len(text) + 1))  # cut at the drawn character position


def test_fim_and_spm_rates_within_binomial_error(corpus):
    tok, prefix, _ = corpus
    ds = build_gpt_dataset(prefix, 400, SEQ_LEN, seed=5)
    fim = tok.fim_tokens()
    for rate, spm_rate in [(0.5, 0.5), (0.2, 0.9)]:
        transform = FIMTransform(tok, rate, spm_rate, "sample", seed=3)
        units = fim_units = spm_units = skipped = 0
        for i in range(len(ds)):
            sample = ds[i]
            out = transform(sample, i)
            starts, ends = transform.units(sample)
            draws = unit_draws(3, 0, i, len(starts))
            for u, (s, e) in enumerate(zip(starts, ends)):
                if draws[u, 0] < rate and transform.permute_unit(sample[s:e], draws[u]) is None:
                    skipped += 1  # drawn, but without room for the sentinels: counted apart
                    continue
                units += 1
                if out[s] == fim.prefix:
                    fim_units += 1
                    spm_units += out[s + 1] == fim.suffix
        assert skipped <= 0.02 * units
        for observed, n, p in [(fim_units, units, rate), (spm_units, fim_units, spm_rate)]:
            assert abs(observed - n * p) <= 4 * np.sqrt(n * p * (1 - p)), (observed, n, p)


def test_same_samples_on_one_and_two_ranks_and_after_resume(corpus, tmp_path):
    tok, prefix, _ = corpus
    # a blend with repetition: every entry passes twice over its documents (different draws each pass)
    blend = [BlendEntry(prefix, repeat=2), BlendEntry(prefix, repeat=1)]
    ds = FIMDataset(build_gpt_dataset(blend, None, SEQ_LEN, seed=5, cache_dir=str(tmp_path)),
                    FIMTransform(tok, 0.5, 0.5, "file", seed=9))
    assert len(ds) > 40

    def batches(consumed, rank, size, steps):
        mb = MicroBatches(ds, consumed, 2, 2 // size, rank, size, torch.device("cpu"))
        return [torch.cat([b["tokens"] for b in mb.next_step()]) for _ in range(steps)]

    one = batches(0, 0, 1, 5)
    r0, r1 = batches(0, 0, 2, 5), batches(0, 1, 2, 5)
    for step, full in enumerate(one):
        assert torch.equal(full, torch.cat([r0[step], r1[step]]))
    assert torch.equal(batches(12, 0, 1, 2)[0], one[3])  # resumed after 3 steps of 4 samples
    again = pickle.loads(pickle.dumps(ds))  # a DataLoader worker's copy
    for i in (0, 7, len(ds) - 1):
        assert np.array_equal(again[i], ds[i])
    assert sum(int((ds[i] == tok.fim_tokens().prefix).sum()) for i in range(20)) > 0


def test_document_ids_and_positions_of_separators_unchanged(corpus):
    from megasnow.model.llama import document_ids_from_tokens

    tok, prefix, _ = corpus
    ds = build_gpt_dataset(prefix, 40, SEQ_LEN, seed=5)
    transform = FIMTransform(tok, 1.0, 0.5, "file", seed=1)
    raw = torch.tensor(np.stack([ds[i] for i in range(40)]))
    fim = torch.tensor(np.stack([transform(ds[i], i) for i in range(40)]))
    assert not torch.equal(raw, fim)
    assert torch.equal(document_ids_from_tokens(raw, tok.eod_id), document_ids_from_tokens(fim, tok.eod_id))


def test_pad_labels_masked_only_when_asked():
    fim_pad, pad_row = 10, np.array([7, 1, 2, 9, 3, 10, 10, 8, 4, 5], dtype=np.int64)
    mb = MicroBatches([pad_row] * 2, 0, 2, 1, 0, 1, torch.device("cpu"), per_token_loss=True,
                      ignore_label_ids=(fim_pad,))
    (batch,) = mb.next_step()
    assert batch["labels"][0].tolist() == [1, 2, 9, 3, -100, -100, 8, 4, 5]
    assert batch["tokens"][0].tolist() == pad_row[:-1].tolist()
    plain = MicroBatches([pad_row] * 2, 0, 2, 1, 0, 1, torch.device("cpu")).next_step()[0]
    assert plain["labels"][0].tolist() == pad_row[1:].tolist()


def test_prompt_ids_in_both_formats():
    tok = load_tokenizer(sentencepiece_model())
    fim = tok.fim_tokens()
    p, s = "def add(a, b):\n    ", "\n\nprint(add(1, 2))\n"
    psm = fim_prompt_ids(fim, tok.encode, p, s, "psm")
    spm = fim_prompt_ids(fim, tok.encode, p, s, "spm")
    assert psm == [fim.prefix, *tok.encode(p), fim.suffix, *tok.encode(s), fim.middle]
    assert spm == [fim.prefix, fim.suffix, *tok.encode(s), fim.middle, *tok.encode(p)]
    assert parse_fim_unit(psm, fim) == ("psm", tok.encode(p), tok.encode(s), [])
    assert parse_fim_unit(spm, fim) == ("spm", None, tok.encode(s), tok.encode(p))
    with pytest.raises(ValueError, match="psm"):
        fim_prompt_ids(fim, tok.encode, p, s, "pms")


def family_tokenizer(tmp_path, name, specials):
    """A small byte-level BPE tokenizer.json trained on real code with another family's special tokens."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=400, special_tokens=specials, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator((t for _, t in real_code_files()[:30]), trainer=trainer)
    path = str(tmp_path / f"{name}.json")
    tok.save(path)
    return path


@pytest.mark.parametrize("family", [
    ("qwen", ["<|endoftext|>", "<|fim_prefix|>", "<|fim_middle|>", "<|fim_suffix|>", "<|fim_pad|>", "<|file_sep|>"]),
    ("santacoder", ["<|endoftext|>", "<fim-prefix>", "<fim-middle>", "<fim-suffix>", "<fim-pad>"]),
    ("deepseek", ["<|endoftext|>", "<\uff5cfim\u2581begin\uff5c>", "<\uff5cfim\u2581hole\uff5c>",
                  "<\uff5cfim\u2581end\uff5c>", "<pad>"]),
])
def test_other_families_fim_tokens_are_mapped(tmp_path, family):
    name, specials = family
    tok = load_tokenizer(family_tokenizer(tmp_path, name, specials))
    fim = tok.fim_tokens()
    by_role = dict(zip(("prefix", "middle", "suffix", "pad"), fim.names))
    ids = {t: tok.token_to_id(t) for t in specials}
    if name == "deepseek":  # <｜fim▁begin｜> prefix <｜fim▁hole｜> suffix <｜fim▁end｜> middle
        assert (fim.prefix, fim.suffix, fim.middle) == tuple(ids[t] for t in specials[1:4])
        assert fim.pad == ids["<pad>"]  # no FIM pad in this family: the tokenizer's pad
    else:
        assert [by_role[r] for r in ("prefix", "middle", "suffix", "pad")] == specials[1:5]
        assert (fim.prefix, fim.middle, fim.suffix, fim.pad) == tuple(ids[t] for t in specials[1:5])
    assert tok.file_sep_id == (ids["<|file_sep|>"] if name == "qwen" else None)
    if name == "qwen":
        transform = FIMTransform(tok, 1.0, 0.0, "file")
        text = "<|file_sep|>a.py\nx = 1\n<|file_sep|>b.py\ny = 2\n"
        out = transform(np.array(tok.encode(text)), 0)
        assert out[0] == ids["<|file_sep|>"] and (out == fim.prefix).sum() == 2
    else:
        with pytest.raises(TokenizerError, match="file separator"):
            FIMTransform(tok, 0.5, 0.5, "file")
        FIMTransform(tok, 0.5, 0.5, "sample")


def test_tokenizer_without_fim_tokens_refused(tmp_path):
    tok = load_tokenizer(family_tokenizer(tmp_path, "plain", ["<|endoftext|>", "<file_sep>"]))
    assert tok.fim_tokens() is None
    with pytest.raises(TokenizerError, match="no fill-in-the-middle tokens"):
        FIMTransform(tok, 0.5, 0.5, "sample")


def test_tokenizer_that_changes_text_refused(tmp_path):
    """A Metaspace tokenizer that prepends a space (SentencePiece's dummy prefix) cannot cut text exactly."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Metaspace(prepend_scheme="always")
    tok.decoder = decoders.Metaspace(prepend_scheme="always")
    trainer = trainers.BpeTrainer(vocab_size=600, show_progress=False, special_tokens=[
        "<unk>", "<|endoftext|>", "<fim_prefix>", "<fim_middle>", "<fim_suffix>", "<fim_pad>"])
    tok.train_from_iterator((t for _, t in real_code_files()[:30]), trainer=trainer)
    path = str(tmp_path / "metaspace.json")
    tok.save(path)
    with pytest.raises(TokenizerError, match="spell the text exactly"):
        FIMTransform(load_tokenizer(path), 0.5, 0.5, "sample")
    # the trainer's refusal keeps this one's advice only (the tokenizer has the FIM tokens)
    with pytest.raises(ConfigError) as e:
        build_fim_transforms(fim_config("sample"), load_tokenizer(path), eod_id=1)
    assert "spell the text exactly" in str(e.value) and "use a tokenizer with these tokens" not in str(e.value)
    assert str(e.value).endswith("or a byte-level BPE tokenizer.json; or set data.fim.rate=0")


def fim_config(level):
    from types import SimpleNamespace

    return SimpleNamespace(data=SimpleNamespace(seed=0, fim=SimpleNamespace(rate=0.5, spm_rate=0.5, level=level)))


def test_trainer_refusal_of_a_tokenizer_without_fim_tokens_says_what_to_use(tmp_path):
    tok = load_tokenizer(family_tokenizer(tmp_path, "plain", ["<|endoftext|>", "<file_sep>"]))
    with pytest.raises(ConfigError, match="no fill-in-the-middle tokens.*; use a tokenizer with these tokens "
                                          r"\(tools/train_tokenizer.py reserves them\) or set data.fim.rate=0$"):
        build_fim_transforms(fim_config("sample"), tok, eod_id=0)


def test_converted_sentencepiece_tokenizer_json_gives_the_same_samples(tmp_path):
    """The tokenizer.json an HF export writes for a megasnow SentencePiece model (Metaspace + byte fallback) maps
    tokens to text like the .model itself, so FIM samples are identical with either file."""
    from megasnow.convert.hf_tokenizer import sentencepiece_to_tokenizer_json

    model = sentencepiece_model()
    converted, reason = sentencepiece_to_tokenizer_json(model)
    assert converted is not None, reason
    path = str(tmp_path / "tokenizer.json")
    converted.save(path)
    sp, hf = load_tokenizer(model), load_tokenizer(path)
    a = FIMTransform(sp, 1.0, 0.5, "file", seed=4)
    b = FIMTransform(hf, 1.0, 0.5, "file", seed=4, eod_id=sp.eod_id)  # the id the data was binarized with
    for k, text in enumerate(repo_docs(40)[:8]):
        ids = np.array(sp.encode(text) + [sp.eod_id])
        assert np.array_equal(a(ids, k), b(ids, k))
    with open(path) as f:
        assert json.load(f)["decoder"] is not None
