"""HF conversion: the export loads in transformers with the same logits; import -> export round trip is exact;
tensor-parallel shards merge back to the full tensors; tokenizer.json encodes like SentencePiece."""
import dataclasses
import json
import os
import subprocess
import sys

import pytest
import torch

from megasnow.convert import hf_llama
from megasnow.model.config import get_preset
from megasnow.model.llama import LlamaModel
from megasnow.parallel.tensor_parallel.layers import shard_full_tensor
from megasnow.train import checkpoint as ckpt

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.fixture(scope="module")
def sp_model(tmp_path_factory):
    d = tmp_path_factory.mktemp("tok")
    lib = os.path.dirname(os.__file__)
    inputs = [os.path.join(lib, "json", f) for f in os.listdir(os.path.join(lib, "json")) if f.endswith(".py")]
    subprocess.run([sys.executable, os.path.join(REPO, "tools", "train_tokenizer.py"), "--input", *inputs,
                    "--output-prefix", str(d / "sp"), "--vocab-size", "600"], check=True, capture_output=True,
                   timeout=120)
    return str(d / "sp.model")


def save_model_checkpoint(tmp_path, model_cfg, seed=5, tokenizer=None):
    model = LlamaModel(model_cfg, init_seed=seed)
    extra = {"tokenizer.model": tokenizer} if tokenizer else None
    ckpt.save_checkpoint(str(tmp_path / "ckpt"), 7, [model], None,
                         {"trainer": {"step": 7}, "model_config": dataclasses.asdict(model_cfg)}, "x: 1\n",
                         extra_files=extra)
    return model


def hf_logits(folder, tokens):
    from transformers import LlamaForCausalLM

    hf = LlamaForCausalLM.from_pretrained(folder, torch_dtype=torch.float32, attn_implementation="eager").eval()
    with torch.no_grad():
        return hf(tokens).logits


@pytest.mark.parametrize("preset", ["tiny", "tiny-gqa-untied"])
def test_export_matches_transformers_and_round_trips(tmp_path, preset, sp_model):
    if preset == "tiny-gqa-untied":
        cfg = get_preset("tiny-gqa", tie_embeddings=False, vocab_size=600, rope_base=500000.0)
    else:
        cfg = get_preset("tiny", vocab_size=600)
    model = save_model_checkpoint(tmp_path, cfg, tokenizer=sp_model).eval()
    out = tmp_path / "hf"
    if preset == "tiny":  # once through the command line, once through the API
        res = subprocess.run([sys.executable, os.path.join(REPO, "tools", "convert_checkpoint.py"), "export",
                              "--checkpoint", str(tmp_path / "ckpt"), "--output", str(out)], capture_output=True,
                             text=True, timeout=300)
        assert res.returncode == 0, res.stderr
        assert json.loads(res.stdout)["tensors"] == 3 + 9 * cfg.num_layers - 1
    else:
        hf_llama.export_to_hf(str(tmp_path / "ckpt"), str(out))
    assert {"config.json", "model.safetensors", "tokenizer.model", "tokenizer.json", "tokenizer_config.json"} \
        <= set(os.listdir(out))
    config = json.loads((out / "config.json").read_text())
    assert config["architectures"] == ["LlamaForCausalLM"] and config["vocab_size"] == 600
    assert config["tie_word_embeddings"] == cfg.tie_embeddings
    assert config["num_key_value_heads"] == cfg.num_kv_heads

    tokens = torch.randint(0, 600, (2, 48), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        ours = model(tokens)
    theirs = hf_logits(str(out), tokens)
    assert ours.shape == theirs.shape == (2, 48, 600)
    torch.testing.assert_close(theirs, ours, atol=1e-4, rtol=1e-4)

    # import back, export again: identical tensors; the imported model gives the same logits
    back = tmp_path / "back"
    summary = hf_llama.import_from_hf(str(out), str(back))
    assert os.path.exists(os.path.join(summary["out"], "tokenizer.model"))
    again = tmp_path / "hf2"
    hf_llama.export_to_hf(str(back), str(again))
    first, second = hf_llama.read_hf_state(str(out)), hf_llama.read_hf_state(str(again))
    assert first.keys() == second.keys()
    for k in first:
        assert torch.equal(first[k], second[k]), k
    imported, _ = hf_llama.build_megasnow_model(str(back))
    with torch.no_grad():
        torch.testing.assert_close(imported(tokens), ours, atol=1e-5, rtol=1e-5)


def test_tokenizer_json_encodes_like_sentencepiece(tmp_path, sp_model):
    import sentencepiece as spm
    from transformers import AutoTokenizer

    save_model_checkpoint(tmp_path, get_preset("tiny", vocab_size=600), tokenizer=sp_model)
    out = tmp_path / "hf"
    hf_llama.export_to_hf(str(tmp_path / "ckpt"), str(out))
    tok = AutoTokenizer.from_pretrained(str(out))
    sp = spm.SentencePieceProcessor(model_file=sp_model)
    text = open(os.path.join(os.path.dirname(os.__file__), "textwrap.py"), encoding="utf-8").read()
    text += "\r\n\t x = 'ünï ✓'  \n<|endoftext|>"
    ids = tok(text)["input_ids"]  # default call: nothing added around the text
    assert ids == sp.encode(text)
    assert tok.decode(ids) == text
    # eos is the end-of-document token Megatron-LM's --append-eod appends (the model's eos piece, docs/data.md);
    # bos and pad are the model's own pieces, and every file transformers reads says the same
    assert tok.eos_token == "</s>" and tok.eos_token_id == sp.eos_id()
    assert (tok.bos_token, tok.bos_token_id) == ("<s>", sp.bos_id())
    assert (tok.pad_token, tok.pad_token_id) == ("<pad>", sp.piece_to_id("<pad>"))
    assert (tok.unk_token, tok.unk_token_id) == ("<unk>", sp.unk_id())
    from transformers import AutoConfig, GenerationConfig

    for config in (AutoConfig.from_pretrained(str(out)), GenerationConfig.from_pretrained(str(out))):
        assert (config.bos_token_id, config.eos_token_id, config.pad_token_id) == \
            (sp.bos_id(), sp.eos_id(), tok.pad_token_id)
    special = json.loads((out / "special_tokens_map.json").read_text())
    assert {k: special[k] for k in ("bos_token", "eos_token", "pad_token")} == {
        "bos_token": "<s>", "eos_token": "</s>", "pad_token": "<pad>"}


def test_tensor_parallel_shards_merge_to_full_tensors():
    cfg = get_preset("tiny-gqa", tie_embeddings=False)
    model = LlamaModel(cfg, init_seed=1)
    for name, p in model.named_parameters():
        dim = getattr(p, "tensor_parallel_dim", None)
        parts = getattr(p, "tensor_parallel_partitions", None)
        for tp in (2, 4) if dim is not None else (2,):
            shards = [shard_full_tensor(p.detach(), dim, parts, r, tp) for r in range(tp)]
            merged = hf_llama.merge_tensor_parallel(name, shards, cfg)
            assert torch.equal(merged, p.detach()), (name, tp)


def test_import_refuses_unsupported_configs(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "llama", "attention_bias": True}))
    with pytest.raises(hf_llama.ConversionError, match="attention_bias"):
        hf_llama.import_from_hf(str(tmp_path), str(tmp_path / "out"))
