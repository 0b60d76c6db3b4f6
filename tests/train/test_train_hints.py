"""What a Megatron or HuggingFace user types by habit gets the megasnow form back: flag names as overrides, a
HuggingFace folder as init_from, a .bin/.idx file as a dataset prefix; and mixed end-of-document data warns."""
import json

import pytest

from megasnow.config import ConfigError
from megasnow.data.dataset_meta import write_dataset_meta
from megasnow.train.__main__ import main
from megasnow.train.data import DataConfigError, check_blend_paths, check_init_from, document_end_mix
from megasnow.train.config import BlendItem
from tests.train.helpers import real_code_files, write_byte_dataset


@pytest.mark.parametrize("argv, override", [
    (["--micro-batch-size", "4"], "train.micro_batch_size=4"),
    (["--global-batch-size=64"], "train.global_batch_size=64"),
    (["--lr", "3e-4"], "schedule.max_lr=3e-4"),
    (["--train-iters", "100"], "train.steps=100"),
    (["--seq-length", "2048"], "data.seq_len=2048"),
    (["--tensor-model-parallel-size", "2"], "parallel.tensor=2"),
    (["--pipeline-model-parallel-size", "2"], "parallel.pipeline=2"),
    (["--save", "ck"], "checkpoint.dir=ck"),
    (["--load", "ck"], "checkpoint.dir=ck"),
    (["--seed", "5"], "train.seed=5"),
    (["--use-distributed-optimizer"], "parallel.use_distributed_optimizer=true"),
])
def test_megatron_flags_name_the_override(tmp_path, argv, override):
    cfg = tmp_path / "run.yaml"
    cfg.write_text("{}\n")
    with pytest.raises(ConfigError) as e:
        main([str(cfg), *argv])
    assert f"use {override}" in str(e.value) or f"override {override}" in str(e.value)
    assert str(e.value).startswith(f"unknown flag {argv[0].split('=')[0]}: Megatron's flag; here")


def test_unknown_flag_stays_plain(tmp_path):
    with pytest.raises(ConfigError, match=r"^unknown flag --frobnicate: megasnow.train takes CONFIG.yaml"):
        main([str(tmp_path / "run.yaml"), "--frobnicate"])


def test_init_from_huggingface_folder_says_to_import_it(tmp_path):
    hf = tmp_path / "hf"
    hf.mkdir()
    (hf / "config.json").write_text(json.dumps({"architectures": ["LlamaForCausalLM"]}))
    with pytest.raises(ConfigError, match=rf"checkpoint.init_from: {hf} is a HuggingFace model folder .*"
                                          rf"tools/convert_checkpoint.py import --hf {hf} --output CKPT"):
        check_init_from(str(hf))
    with pytest.raises(ConfigError, match=r"checkpoint.init_from: .* neither a checkpoint step folder"):
        check_init_from(str(tmp_path))


def test_blend_path_with_suffix_suggests_the_prefix(tmp_path):
    prefix = write_byte_dataset(str(tmp_path / "p1_text_document"), real_code_files(limit=2))
    for suffix in (".bin", ".idx"):
        with pytest.raises(DataConfigError, match=rf"^data.blend\[0\].path: {prefix}{suffix} names the dataset's "
                                                  rf"{suffix} file; give the prefix without the suffix: {prefix}$"):
            check_blend_paths([BlendItem(path=prefix + suffix)], "data.blend")
    check_blend_paths([BlendItem(path=prefix)], "data.blend")


def test_document_mask_warns_when_only_some_datasets_end_documents(tmp_path):
    a = write_byte_dataset(str(tmp_path / "a"), real_code_files(limit=2), eod_id=0)
    b = write_byte_dataset(str(tmp_path / "b"), real_code_files(limit=2, skip=2))
    c = write_byte_dataset(str(tmp_path / "c"), real_code_files(limit=2, skip=4))
    write_dataset_meta(a, {"append_eod": True, "eod_id": 0})
    write_dataset_meta(b, {"append_eod": False})
    line = document_end_mix([a, b, c])  # c has no metadata: not counted either way
    assert line.startswith(f"model.document_mask: the blend mixes datasets binarized with the end-of-document id "
                           f"({a}) and without it ({b})")
    assert document_end_mix([a, c]) is None and document_end_mix([a, a]) is None
