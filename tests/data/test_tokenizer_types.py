"""--tokenizer-type means what it means in Megatron-LM: per type, the ids of a document (first and last) with and
without BOS/EOS post-processing, and small inputs binarized by megasnow and by Megatron's own tokenizers + builder
(megatron-core, installed) read back by megatron-core byte for byte. Rules: docs/data.md."""
import json
import os
import sys

import numpy as np
import pytest

from megasnow.data.indexed import IndexedDataset
from megasnow.data.megatron_tokenizers import TokenizerOptions, build_document_encoder, end_of_document
from megasnow.data.special_tokens import EOD
from megasnow.data.tokenizer import TokenizerError, load_tokenizer
from megasnow.utils.cli import run_tool
from tests.conftest import require_anchor
from tests.data.code_fixtures import hf_tokenizer_json, real_code_files, sentencepiece_model

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..", "tools"))
import preprocess_data  # noqa: E402

pytest.importorskip("megasnow._binarize")

DOC = "def f(x):\n\treturn x  + 1\n"
# Real code plus texts that exercise the edges: empty, a literal <s>/</s>, megasnow's special tokens in the text.
TEXTS = [t for _, t in real_code_files()[:12]] + ["", "x = '<s>' + '</s>'\n", f"a{EOD}b <EOD> <pad>\n", "  \r\n"]


def _anchor(module):
    """megatron-core is the reference these tests compare with: skipped locally, a failure under CI (CI=true/1/yes)."""
    return require_anchor(module, "megatron-core")


@pytest.fixture(scope="module")
def sp():
    import sentencepiece as spm

    return spm.SentencePieceProcessor(model_file=sentencepiece_model())


def hf_folder(root, kind):
    """A HF tokenizer folder: "plain" (no post-processor, eos_token <|endoftext|>), "bos" (a TemplateProcessing
    post-processor putting <s> first; bos <s>, eos </s>) or "bos_eos" (<s> $A </s>)."""
    from tokenizers import Tokenizer, processors

    folder = root / kind
    if folder.exists():
        return str(folder)
    folder.mkdir(parents=True)
    tok = Tokenizer.from_file(hf_tokenizer_json())
    config = {"eos_token": EOD}
    if kind != "plain":
        tok.add_special_tokens(["<s>", "</s>"])
        bos, eos = tok.token_to_id("<s>"), tok.token_to_id("</s>")
        single = "<s> $A" + (" </s>" if kind == "bos_eos" else "")
        tok.post_processor = processors.TemplateProcessing(single=single, special_tokens=[("<s>", bos), ("</s>", eos)])
        config = {"bos_token": "<s>", "eos_token": "</s>"}
    tok.save(str(folder / "tokenizer.json"))
    (folder / "tokenizer_config.json").write_text(json.dumps(config))
    return str(folder)


@pytest.fixture(scope="module")
def hf_root(tmp_path_factory):
    return tmp_path_factory.mktemp("hf")


def run_cli(main, argv):
    """The tool's exit status, as `sys.exit(run_tool(main))` gives it (argparse errors exit 2 themselves)."""
    try:
        return run_tool(main, argv)
    except SystemExit as e:
        return e.code


def _binarize(tmp_path, name, model, texts, *, append_eod=True, eod_token=None, **flags):
    src = tmp_path / f"{name}.jsonl"
    src.write_text("".join(json.dumps({"text": t}) + "\n" for t in texts))
    opts = TokenizerOptions(model, flags.pop("tokenizer_type", None), **flags)
    prefix = str(tmp_path / name)
    preprocess_data.preprocess([str(src)], prefix, model, workers=2, append_eod=append_eod, progress=False,
                               tokenizer_options=opts, eod_token=eod_token, block_bytes=4096)
    ds = IndexedDataset(prefix + "_text_document")
    return [ds.document(i).tolist() for i in range(ds.num_documents)], prefix + "_text_document"


# ------------------------------------------------------------------ per type: first and last ids of a document

@pytest.mark.parametrize("kind", ["SentencePieceTokenizer", "GPTSentencePieceTokenizer", "Llama2Tokenizer"])
def test_sentencepiece_types_on_main_add_nothing_and_end_with_eos(tmp_path, sp, kind):
    docs, _ = _binarize(tmp_path, kind, sentencepiece_model(), [DOC, ""], tokenizer_type=kind)
    assert docs[0] == sp.encode(DOC) + [sp.eos_id()] and sp.eos_id() == 2  # </s>, not <|endoftext|> (3)
    assert docs[1] == []  # an empty text stays an empty document, without EOD
    no_eod, _ = _binarize(tmp_path, kind + "_noeod", sentencepiece_model(), [DOC], append_eod=False,
                          tokenizer_type=kind)
    assert no_eod[0] == sp.encode(DOC)


def test_legacy_llama2_prepends_bos(tmp_path, sp):
    docs, prefix = _binarize(tmp_path, "llama2", sentencepiece_model(), [DOC, ""], tokenizer_type="Llama2Tokenizer",
                             legacy_tokenizer=True)
    assert docs[0] == [sp.bos_id()] + sp.encode(DOC) + [sp.eos_id()]
    assert docs[1] == [sp.bos_id(), sp.eos_id()]  # tokenize("") is [bos]: not empty, so the EOD follows
    meta = json.load(open(prefix + ".meta.json"))
    assert meta["prefix_ids"] == [sp.bos_id()] and meta["semantics"] == "megatron-lm legacy"


def test_legacy_gpt_sentencepiece_is_plain(tmp_path, sp):
    docs, _ = _binarize(tmp_path, "gptsp", sentencepiece_model(), [DOC], tokenizer_type="GPTSentencePieceTokenizer",
                        legacy_tokenizer=True)
    assert docs[0] == sp.encode(DOC) + [sp.eos_id()]


def test_legacy_sentencepiece_tokenizer_adds_special_tokens_and_eod(tmp_path, sp):
    # _SentencePieceTokenizer._initalize: <CLS> <SEP> <EOD> <MASK> past the 1200 pieces, then pad (none: <PAD>),
    # bos <s> = 1, eos </s> = 2; tokenize cuts the text at each of them.
    enc = build_document_encoder(TokenizerOptions(sentencepiece_model(), "SentencePieceTokenizer",
                                                  legacy_tokenizer=True))
    assert enc.special == {"<CLS>": 1200, "<SEP>": 1201, "<EOD>": 1202, "<MASK>": 1203, "<PAD>": 1204, "<s>": 1,
                           "</s>": 2}
    assert enc.vocab_size == 1205 and enc.eod == 1202
    text = "a<s>b<EOD><EOD>c</s>"
    docs, prefix = _binarize(tmp_path, "legsp", sentencepiece_model(), [text, DOC],
                             tokenizer_type="SentencePieceTokenizer", legacy_tokenizer=True)
    e = sp.encode
    assert docs[0] == e("a") + [1] + e("b") + [1202, 1202] + e("c") + [2] + [1202]
    assert docs[1] == e(DOC) + [1202]
    assert json.load(open(prefix + ".meta.json"))["added_tokens"] == {"<CLS>": 1200, "<SEP>": 1201, "<EOD>": 1202,
                                                                      "<MASK>": 1203, "<PAD>": 1204}


@pytest.mark.parametrize("legacy", [False, True])
def test_huggingface_includes_post_processor_tokens_by_default(tmp_path, hf_root, legacy):
    tok = load_tokenizer(os.path.join(hf_folder(hf_root, "bos_eos"), "tokenizer.json"))
    bos, eos = tok.token_to_id("<s>"), tok.token_to_id("</s>")
    plain = tok.encode(DOC)
    for kind, first, tail in (("plain", [], []), ("bos", [bos], []), ("bos_eos", [bos], [eos])):
        folder = hf_folder(hf_root, kind)
        eod = tok.token_to_id(EOD) if kind == "plain" else eos  # eos_token of tokenizer_config.json
        docs, _ = _binarize(tmp_path, f"hf_{kind}_{legacy}", folder, [DOC, ""], tokenizer_type="HuggingFaceTokenizer",
                            legacy_tokenizer=legacy)
        assert docs[0] == first + plain + tail + [eod], kind
        # an empty text still gets the post-processor's tokens, and then the EOD (Megatron's len(ids) > 0 rule)
        assert docs[1] == (first + tail + [eod] if first or tail else []), kind


def test_huggingface_no_include_special_tokens(tmp_path, hf_root):
    tok = load_tokenizer(os.path.join(hf_folder(hf_root, "bos_eos"), "tokenizer.json"))
    docs, prefix = _binarize(tmp_path, "hf_noinc", hf_folder(hf_root, "bos_eos"), [DOC],
                             tokenizer_type="HuggingFaceTokenizer", hf_include_special_tokens=False)
    assert docs[0] == tok.encode(DOC) + [tok.token_to_id("</s>")]
    meta = json.load(open(prefix + ".meta.json"))
    assert meta["hf_include_special_tokens"] is False and meta["prefix_ids"] == [] and meta["eod_id"] == docs[0][-1]


def test_eod_token_is_megasnows_explicit_convention(tmp_path, sp):
    docs, prefix = _binarize(tmp_path, "eodtok", sentencepiece_model(), [DOC], eod_token=EOD)
    assert docs[0] == sp.encode(DOC) + [sp.piece_to_id(EOD)] and sp.piece_to_id(EOD) == 3
    meta = json.load(open(prefix + ".meta.json"))
    assert (meta["eod_id"], meta["eod_token"]) == (3, EOD)
    with pytest.raises(TokenizerError, match="--eod-token '<nope>' is not a token"):
        _binarize(tmp_path, "eodbad", sentencepiece_model(), [DOC], eod_token="<nope>")


def test_a_tokenizer_without_eos(tmp_path, sp):
    """Megatron-LM would fail (it appends None / -1): megasnow appends its fallback and says so, or asks for
    --eod-token."""
    import sentencepiece as spm

    sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..", "tools"))
    from train_tokenizer import iter_sentences, trainer_options

    opts = dict(trainer_options(400, 10_000, 1), bos_id=-1, eos_id=-1, user_defined_symbols=[])
    prefix = str(tmp_path / "noeos")
    spm.SentencePieceTrainer.Train(sentence_iterator=iter_sentences((t for _, t in real_code_files()[:30]), 2048),
                                   model_prefix=prefix, **opts)
    enc = build_document_encoder(TokenizerOptions(prefix + ".model", "SentencePieceTokenizer"))
    assert enc.eod is None and enc.bos is None
    with pytest.raises(TokenizerError, match="no eos piece .* name the token to append with --eod-token"):
        end_of_document(enc)
    with pytest.raises(TokenizerError, match="Llama2Tokenizer starts every document with the BOS id"):
        build_document_encoder(TokenizerOptions(prefix + ".model", "Llama2Tokenizer", legacy_tokenizer=True))
    # The HF fixture has no tokenizer_config.json: no eos_token, so <|endoftext|> with a note.
    hf = build_document_encoder(TokenizerOptions(hf_tokenizer_json(), "HuggingFaceTokenizer"))
    tid, token, note = end_of_document(hf)
    assert token == EOD and tid == hf.token_id(EOD) and "Megatron-LM's --append-eod would fail" in note


def test_cli_flags(tmp_path, hf_root, capsys):
    src = tmp_path / "in.jsonl"
    src.write_text(json.dumps({"text": DOC}) + "\n")
    folder = hf_folder(hf_root, "bos")
    tok = load_tokenizer(os.path.join(folder, "tokenizer.json"))
    base = ["--input", str(src), "--tokenizer-model", folder, "--append-eod", "--no-progress"]
    assert run_cli(preprocess_data.main, base + ["--output-prefix", str(tmp_path / "a")]) == 0
    assert IndexedDataset(str(tmp_path / "a_text_document"))[0][0] == tok.token_to_id("<s>")
    assert run_cli(preprocess_data.main, base + ["--output-prefix", str(tmp_path / "b"),
                                                  "--tokenizer-hf-no-include-special-tokens"]) == 0
    assert IndexedDataset(str(tmp_path / "b_text_document"))[0].tolist() == tok.encode(DOC) + [tok.token_to_id("</s>")]
    out = capsys.readouterr().out
    assert "HuggingFaceTokenizer (megatron-lm main)" in out and "'</s>' (id" in out
    for argv, message in (
        (["--split-sentences"], "--split-sentences (a Megatron-LM flag) is not supported: code is not split"),
        (["--eod-token", EOD], "--eod-token only says which token --append-eod appends"),
        (["--legacy-tokenizer", "--tokenizer-hf-no-include-special-tokens"], "has no effect with --legacy-tokenizer"),
    ):
        args = [a for a in base if a != "--append-eod" or argv[0] != "--eod-token"]
        assert run_cli(preprocess_data.main, args + ["--output-prefix", str(tmp_path / "c")] + argv) == 2
        err = capsys.readouterr().err
        assert err.startswith("error: ") and message in err and err.count("\n") == 1, err
    assert not any(p.name.startswith("c_") for p in tmp_path.iterdir())


# ------------------------------------------------------------------ against Megatron's own tokenizers and builder

def _megatron_tokenizer(kind, model, include=True):
    """Megatron-LM main's build_tokenizer(args) for this type with default flags (megatron-core's classes)."""
    _anchor("megatron.core")
    from megatron.core.tokenizers import MegatronTokenizer

    if kind == "HuggingFaceTokenizer":
        return MegatronTokenizer.from_pretrained(
            tokenizer_path=model, metadata_path={"library": "huggingface"}, vocab_file=None, merges_file=None,
            additional_special_tokens=[], use_fast=True, trust_remote_code=False, include_special_tokens=include)
    return MegatronTokenizer.from_pretrained(tokenizer_path=model, metadata_path={"library": "sentencepiece"},
                                             legacy=False, special_tokens=None)


def _megatron_binarize(tokenizer, texts, prefix, append_eod=True):
    """Megatron-LM's tools/preprocess_data.py Encoder.encode + IndexedDatasetBuilder.add_document, one key."""
    from megatron.core.datasets.indexed_dataset import DType, IndexedDatasetBuilder

    builder = IndexedDatasetBuilder(prefix + ".bin", dtype=DType.optimal_dtype(tokenizer.vocab_size))
    for text in texts:
        ids = list(tokenizer.tokenize(text))
        lens = [len(ids)] if ids else []
        if ids and append_eod:
            ids.append(tokenizer.eod)
            lens[-1] += 1
        builder.add_document(ids, lens)
    builder.finalize(prefix + ".idx")
    return prefix


def _files(prefix):
    return open(prefix + ".bin", "rb").read(), open(prefix + ".idx", "rb").read()


@pytest.mark.parametrize("kind,folder,include", [
    ("SentencePieceTokenizer", None, True),
    ("GPTSentencePieceTokenizer", None, True),
    ("Llama2Tokenizer", None, True),
    ("HuggingFaceTokenizer", "plain", True),
    ("HuggingFaceTokenizer", "bos", True),
    ("HuggingFaceTokenizer", "bos_eos", True),
    ("HuggingFaceTokenizer", "bos_eos", False),
])
def test_byte_identical_to_megatron_read_back_by_megatron_core(tmp_path, hf_root, kind, folder, include):
    model = sentencepiece_model() if folder is None else hf_folder(hf_root, folder)
    ref_tok = _megatron_tokenizer(kind, model, include)
    from megatron.core.datasets.indexed_dataset import IndexedDataset as MegatronIndexedDataset

    ref = _megatron_binarize(ref_tok, TEXTS, str(tmp_path / "megatron"))
    _, ours = _binarize(tmp_path, "ours", model, TEXTS, tokenizer_type=kind, hf_include_special_tokens=include)
    assert _files(ours) == _files(ref)
    a, b = MegatronIndexedDataset(ours), MegatronIndexedDataset(ref)
    assert len(a) == len(b) and np.array_equal(a.document_indices, b.document_indices)
    for i in range(len(a)):
        assert np.array_equal(a[i], b[i])
    # the end-of-document id megasnow records is Megatron's eod, and megasnow's Tokenizer.eod_id agrees
    meta = json.load(open(ours + ".meta.json"))
    assert meta["eod_id"] == ref_tok.eod
    tokenizer_file = model if folder is None else os.path.join(model, "tokenizer.json")
    assert load_tokenizer(tokenizer_file).eod_id == ref_tok.eod
