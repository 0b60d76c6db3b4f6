"""GGUF import: SmolLM2-135M-Instruct's GGUF becomes a megasnow checkpoint whose greedy generations equal
transformers' token for token, with a tokenizer folder that encodes and renders chats as transformers does."""
import json
import os
import stat
import subprocess
import sys

import pytest

from megasnow.convert.hf_llama import load_full_state
from megasnow.data.tokenizer import load_tokenizer
from megasnow.generation.local import LocalEngine
from megasnow.generation.protocol import GenerationRequest, SamplingParams
from megasnow.model.generate import SequenceSpec, generate_sequences
from megasnow.utils.atomic import current_umask
from tests.convert.test_convert_hf_llama import REPO
from tests.smollm2 import REFERENCE_CHAT, REFERENCE_NEW_TOKENS, REFERENCE_PROMPTS


def test_imported_smollm2_shape_and_files(smollm2):
    cfg, state, step_dir = load_full_state(smollm2.checkpoint)
    assert (cfg.num_layers, cfg.hidden_size, cfg.num_heads, cfg.num_kv_heads, cfg.ffn_hidden_size,
            cfg.vocab_size, cfg.tie_embeddings, cfg.rope_base, cfg.max_seq_len) == \
        (30, 576, 9, 3, 1536, 49152, True, 100000.0, 8192)
    assert cfg.norm_eps == 1e-05  # as written; the GGUF's float32 reads back as 9.999999747378752e-06
    assert smollm2.summary["parameters"] == 134515008  # SmolLM2-135M, tied embedding counted once
    assert {"tokenizer.json", "tokenizer_config.json", "generation_config.json", "special_tokens_map.json"} <= \
        set(os.listdir(step_dir))
    umask = current_umask()  # every file and folder written honours it
    for folder, dirs, files in os.walk(smollm2.checkpoint):
        for name in dirs + files:
            mode = stat.S_IMODE(os.stat(os.path.join(folder, name)).st_mode)
            assert mode == (0o777 if name in dirs else 0o666) & ~umask, (name, oct(mode))
    config = json.loads(open(os.path.join(step_dir, "tokenizer_config.json")).read())
    assert (config["eos_token"], config["bos_token"], config["add_bos_token"]) == ("<|im_end|>", "<|im_start|>",
                                                                                  False)
    assert "<|im_start|>" in config["chat_template"]


def test_tokenizer_folder_matches_transformers(smollm2):
    from transformers import AutoTokenizer

    ours = load_tokenizer(smollm2.step_dir)  # megasnow's HFTokenizer reads tokenizer.json
    for text, ids in zip(REFERENCE_PROMPTS + [smollm2.chat_prompt], smollm2.prompt_ids):
        assert ours.encode(text) == ids
        assert ours.decode(ids) == text
    # the step folder is a HF tokenizer folder with the GGUF's chat template
    hf = AutoTokenizer.from_pretrained(smollm2.step_dir)
    assert hf.apply_chat_template(REFERENCE_CHAT, tokenize=False, add_generation_prompt=True) == smollm2.chat_prompt
    assert hf.eos_token == "<|im_end|>"


def test_greedy_generations_equal_transformers(smollm2):
    engine = LocalEngine.from_path(smollm2.checkpoint)
    assert engine.eos_ids == {0, 2}  # <|endoftext|> and <|im_end|>
    specs = [SequenceSpec(ids, REFERENCE_NEW_TOKENS, stop_ids=engine.eos_ids) for ids in smollm2.prompt_ids]
    seqs = generate_sequences(engine.model, specs, engine.tokenizer)  # one left-padded batch
    assert [q.tokens for q in seqs] == smollm2.reference
    assert all(len(r) >= 5 for r in smollm2.reference)
    fib = engine.tokenizer.decode(smollm2.reference[0])
    assert seqs[0].text == fib and fib.strip()  # real text, not gibberish tokens
    # the engine renders a chat request with the imported template into transformers' prompt ids
    chat = engine.prepare(GenerationRequest(id="c", messages=REFERENCE_CHAT, params=SamplingParams(max_tokens=4)))
    assert list(chat.prompt_ids) == smollm2.prompt_ids[-1]


def test_import_refuses_a_file_that_is_not_gguf(tmp_path):
    bad = tmp_path / "model.gguf"
    bad.write_bytes(b"not a gguf file")
    res = subprocess.run([sys.executable, os.path.join(REPO, "tools", "convert_checkpoint.py"), "import", "--gguf",
                          str(bad), "--output", str(tmp_path / "out")], capture_output=True, text=True, timeout=120)
    assert res.returncode == 2
    assert res.stderr.strip().splitlines()[-1] == \
        f"error: {bad}: not a GGUF file (starts with b'not ', expected b'GGUF')"
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("case", ["gguf", "hf", "hf-no-config", "export", "output-is-a-file"])
def test_wrong_paths_are_refused_before_anything_loads(tmp_path, case):
    """Every source flag (and --output) is checked before torch and transformers load (seconds)."""
    missing, out = tmp_path / "nosuch", tmp_path / "out"
    (tmp_path / "empty").mkdir()
    argv, expected = {
        "gguf": (["import", "--gguf", f"{missing}.gguf", "--output", out], f"{missing}.gguf: no such GGUF file"),
        "hf": (["import", "--hf", missing, "--output", out],
               f"--hf {missing}: no such folder (give a HuggingFace LlamaForCausalLM folder)"),
        "hf-no-config": (["import", "--hf", tmp_path / "empty", "--output", out],
                         f"--hf {tmp_path / 'empty'}: no config.json in it (give a HuggingFace LlamaForCausalLM "
                         f"folder)"),
        "export": (["export", "--checkpoint", missing, "--output", out],
                   f"--checkpoint {missing}: no such folder (give a run's checkpoint.dir or one of its step folders)"),
        "output-is-a-file": (["export", "--checkpoint", tmp_path / "empty", "--output", REPO + "/README.md"],
                             f"--output {REPO}/README.md is a file; give a folder to write the HF model into"),
    }[case]
    res = subprocess.run([sys.executable, "-X", "importtime", os.path.join(REPO, "tools", "convert_checkpoint.py"),
                          *map(str, argv)], capture_output=True, text=True, timeout=120)
    assert res.returncode == 2
    lines = [x for x in res.stderr.splitlines() if not x.startswith("import time:")]
    assert lines == [f"error: {expected}"]  # no "reading ..." line first
    imported = {x.split("|")[-1].strip() for x in res.stderr.splitlines() if x.startswith("import time:")}
    assert "torch" not in imported and "transformers" not in imported  # checked before the slow imports
    assert not out.exists()


def test_gguf_header_tensor_count_and_heartbeat():
    import threading

    from megasnow.convert.gguf import check_gguf_file, heartbeat
    from tests.smollm2 import gguf_path

    assert check_gguf_file(gguf_path()) == 272  # SmolLM2-135M: 30 layers x 9 + embeddings + final norm
    lines, beat = [], threading.Event()

    def log(message):
        lines.append(message)
        beat.set()

    with heartbeat(log, "dequantizing 272 tensors", every=0.01):
        assert beat.wait(60)  # a slow step is not silent: the heartbeat speaks while it runs
    assert lines[0].startswith("still dequantizing 272 tensors (") and lines[0].endswith(" s)")


def test_export_and_reimport_keep_smollm2s_special_tokens(smollm2, tmp_path):
    """GGUF -> checkpoint -> HF -> checkpoint: transformers reads the export's bos/eos/pad as the GGUF has them
    (bos 1 <|im_start|>, eos 2 <|im_end|>, pad 2), and the re-imported checkpoint generates as the first import."""
    from transformers import AutoConfig, AutoTokenizer, GenerationConfig

    from megasnow.convert.hf_llama import export_to_hf, import_from_hf
    from megasnow.generation.local import LocalBackend
    from megasnow.generation.model_files import read_tokenizer_files

    hf = tmp_path / "hf"
    export_to_hf(smollm2.checkpoint, str(hf))
    tok = AutoTokenizer.from_pretrained(str(hf))
    assert (tok.bos_token, tok.eos_token, tok.pad_token) == ("<|im_start|>", "<|im_end|>", "<|im_end|>")
    assert (tok.bos_token_id, tok.eos_token_id, tok.pad_token_id) == (1, 2, 2)
    for config in (AutoConfig.from_pretrained(str(hf)), GenerationConfig.from_pretrained(str(hf))):
        assert (config.bos_token_id, config.eos_token_id, config.pad_token_id) == (1, 2, 2)
    special = json.loads((hf / "special_tokens_map.json").read_text())
    assert special == {"bos_token": "<|im_start|>", "eos_token": "<|im_end|>", "unk_token": "<|endoftext|>",
                       "pad_token": "<|im_end|>"}
    assert tok.apply_chat_template(REFERENCE_CHAT, tokenize=False, add_generation_prompt=True) == smollm2.chat_prompt

    back = import_from_hf(str(hf), str(tmp_path / "back"))["out"]
    first, second = read_tokenizer_files(smollm2.step_dir), read_tokenizer_files(back)
    assert second.eos_ids == first.eos_ids == (0, 2)  # <|endoftext|> and <|im_end|>
    assert (second.add_bos, second.bos_id, second.special_tokens, second.chat_template) == \
        (first.add_bos, first.bos_id, first.special_tokens, first.chat_template)
    request = GenerationRequest(id="c", messages=REFERENCE_CHAT, params=SamplingParams(max_tokens=8))
    texts = [next(LocalBackend(LocalEngine.from_path(p)).generate([request])).choices[0].text
             for p in (smollm2.checkpoint, back)]
    assert texts[0] == texts[1] == load_tokenizer(back).decode(smollm2.reference[-1][:8])  # transformers' text
