"""Tokenizers: exact round trips on real code (tabs, space runs, blank lines, CRLF, non-ASCII), special tokens."""
import pickle

import pytest

from megasnow.data import special_tokens
from megasnow.data.tokenizer import HFTokenizer, SentencePieceTokenizer, TokenizerError, load_tokenizer
from tests.data.code_fixtures import code_traits, hf_tokenizer_json, real_code_files, sentencepiece_model

TRICKY = [
    "",
    "def f(x):\n\treturn x  # tab indent\n",
    "    four\n        eight\n                sixteen spaces\n",
    "a\n\n\n\nb\n",
    "line one\r\nline two\r\n\r\n",
    "lone\rcarriage return",
    "  leading and trailing  \n  ",
    "naïve café 日本語 emoji 😀 and math ∑ ≠ ∞\n",
    "mixed \t \t tabs  \t and spaces\t\n",
    "x = '\\x00\\n'  # escapes stay literal\n",
    "\x00\x01\x7f control bytes",
    "1234567890 3.14159e-10 0xDEADBEEF\n",
]


@pytest.fixture(scope="module", params=["sentencepiece", "huggingface"])
def tok(request):
    path = sentencepiece_model() if request.param == "sentencepiece" else hf_tokenizer_json()
    return load_tokenizer(path)


def test_backend_chosen_from_file(tok):
    expected = SentencePieceTokenizer if tok.path.endswith(".model") else HFTokenizer
    assert type(tok) is expected


def test_round_trip_real_code(tok):
    files = real_code_files()
    covered = {t: sum(code_traits(text)[t] for _, text in files) for t in ("tab", "crlf", "nonascii", "blank_lines")}
    assert all(n >= 3 for n in covered.values()), covered  # the corpus really exercises each trait
    failures = [path for path, text in files if tok.decode(tok.encode(text)) != text]
    assert failures == []


@pytest.mark.parametrize("text", TRICKY)
def test_round_trip_whitespace_and_unicode(tok, text):
    ids = tok.encode(text)
    assert all(isinstance(i, int) and 0 <= i < tok.vocab_size for i in ids)
    assert tok.decode(ids) == text


def test_whitespace_is_not_normalized(tok):
    # Different whitespace must give different tokens (no collapsing of spaces or CRLF -> LF).
    assert tok.encode("a  b") != tok.encode("a b")
    assert tok.encode("a\r\nb") != tok.encode("a\nb")
    assert tok.encode("\tx") != tok.encode("    x")


def test_special_tokens_are_single_ids(tok):
    ids = tok.special_token_ids()
    assert set(ids) == set(special_tokens.SPECIAL_TOKENS)
    assert len(set(ids.values())) == len(special_tokens.SPECIAL_TOKENS)
    for token, tid in ids.items():
        assert tok.encode(token) == [tid]
        assert tok.decode([tid]) == token
    # eod_id is what Megatron-LM's --append-eod appends: the SentencePiece model's eos piece </s>; the HF fixture
    # has no tokenizer_config.json (no eos_token), so megasnow's fallback <|endoftext|>.
    assert tok.eod_id == (2 if tok.backend == "sentencepiece" else ids[special_tokens.EOD])
    assert tok.pad_id == ids[special_tokens.PAD]
    doc = f"{special_tokens.REPO_NAME}owner/repo{special_tokens.FILE_SEP}a.py\nx = 1\n"
    enc = tok.encode(doc)
    assert enc[0] == ids[special_tokens.REPO_NAME] and ids[special_tokens.FILE_SEP] in enc
    assert tok.decode(enc) == doc


def test_sentencepiece_reserved_ids_follow_control_tokens():
    tok = load_tokenizer(sentencepiece_model())
    # <unk>=0, <s>=1, </s>=2, then the special tokens in SPECIAL_TOKENS order.
    assert [tok.token_to_id(t) for t in special_tokens.SPECIAL_TOKENS] == list(range(3, 3 + 8))
    assert tok.token_to_id("definitely-not-a-piece") is None


def test_encode_batch_matches_encode(tok):
    texts = [t for _, t in real_code_files()[:20]] + TRICKY
    assert tok.encode_batch(texts) == [tok.encode(t) for t in texts]


def test_pickle(tok):
    clone = pickle.loads(pickle.dumps(tok))
    text = real_code_files()[0][1]
    assert clone.encode(text) == tok.encode(text) and clone.vocab_size == tok.vocab_size


def test_trained_model_settings():
    from sentencepiece import sentencepiece_model_pb2

    proto = sentencepiece_model_pb2.ModelProto()
    with open(sentencepiece_model(), "rb") as f:
        proto.ParseFromString(f.read())
    assert proto.trainer_spec.model_type == sentencepiece_model_pb2.TrainerSpec.BPE
    assert proto.trainer_spec.byte_fallback and proto.trainer_spec.split_digits
    assert proto.normalizer_spec.name == "identity"
    assert not proto.normalizer_spec.remove_extra_whitespaces and not proto.normalizer_spec.add_dummy_prefix
    assert proto.trainer_spec.vocab_size == 1200 and len(proto.pieces) == 1200
    # Digits are split: a number never becomes one multi-digit piece.
    tok = load_tokenizer(sentencepiece_model())
    assert len(tok.encode("1234567")) == 7


def test_train_tokenizer_cli(tmp_path):
    import os
    import sys

    sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..", "tools"))
    import train_tokenizer

    src = tmp_path / "src.txt"
    src.write_text("".join(t for _, t in real_code_files()[:40]), encoding="utf-8")
    train_tokenizer.main(["--input", str(src), "--output-prefix", str(tmp_path / "tok" / "t"), "--vocab-size", "500",
                          "--input-sentence-size", "5000", "--num-threads", "2"])
    assert sorted(os.listdir(tmp_path / "tok")) == ["t.model", "t.vocab"]
    tok = load_tokenizer(tmp_path / "tok" / "t.model")
    assert tok.vocab_size == 500 and tok.decode(tok.encode(TRICKY[4])) == TRICKY[4]


def test_load_errors(tmp_path):
    with pytest.raises(TokenizerError, match="does not exist"):
        load_tokenizer(tmp_path / "missing.model")
    bad = tmp_path / "bad.model"
    bad.write_bytes(b"not a model")
    with pytest.raises(TokenizerError, match=r"bad\.model: cannot load SentencePiece model"):
        load_tokenizer(bad)
    badjson = tmp_path / "tokenizer.json"
    badjson.write_text("{}")
    with pytest.raises(TokenizerError, match=r"tokenizer\.json: cannot load HuggingFace tokenizer"):
        load_tokenizer(badjson)


def test_truncation_and_padding_in_tokenizer_json_are_switched_off(tmp_path):
    """An encoder's tokenizer.json may carry truncation (max_length 128) and padding: documents must not be capped
    or padded by them."""
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(hf_tokenizer_json())
    tok.enable_truncation(max_length=8)
    tok.enable_padding(length=64)
    path = tmp_path / "tokenizer.json"
    tok.save(str(path))
    text = real_code_files()[0][1]
    plain = HFTokenizer(hf_tokenizer_json())
    capped = HFTokenizer(str(path))
    full = plain.encode(text)
    assert len(full) > 64
    assert capped.encode(text) == full
    assert capped.encode_batch([text, "x = 1"]) == [full, plain.encode("x = 1")]
    assert load_tokenizer(str(path)).encode(text) == full
