"""Outputs are readable by others: every writer of .bin/.idx (and their metadata), index caches, checkpoints,
configs, shards and tokenizers creates files with 0666 and folders with 0777, less the process umask (022 and 077),
as a plain open() or os.makedirs would; nothing keeps mkstemp's or mkdtemp's private 0600/0700."""
import json
import os
import stat
import sys

import numpy as np
import pytest

TOOLS = os.path.join(os.path.dirname(__file__), "..", "..", "tools")


def _modes(root):
    """{relative path: permission bits} of everything under root (root itself excluded)."""
    out = {}
    for folder, dirs, files in os.walk(root):
        for name in dirs + files:
            path = os.path.join(folder, name)
            out[os.path.relpath(path, root)] = stat.S_IMODE(os.lstat(path).st_mode)
    return out


def _write_everything(root):
    import torch

    from megasnow.config import save_config
    from megasnow.convert.hf_tokenizer import export_tokenizer
    from megasnow.data.index_cache import IndexCache
    from megasnow.data.indexed import write_dataset
    from megasnow.train.checkpoint import save_checkpoint
    from megasnow.train.config import TrainConfig
    from megasnow.utils.atomic import atomic_write, honour_umask_tree, temporary_dir, temporary_path
    from tests.data.code_fixtures import real_code_files, sentencepiece_model

    sys.path.insert(0, TOOLS)
    import merge_datasets
    import preprocess_data
    from train_tokenizer import train_tokenizer

    data = os.path.join(root, "data")
    write_dataset(os.path.join(data, "a"), [[1, 2, 3], [4]])
    src = os.path.join(root, "in.jsonl")
    with open(src, "w") as f:
        f.writelines(json.dumps({"text": t}) + "\n" for _, t in real_code_files()[:5])
    preprocess_data.preprocess([src], os.path.join(data, "b"), sentencepiece_model(), append_eod=True,
                               progress=False)  # .bin, .idx, .meta.json
    merge_datasets.merge_datasets([os.path.join(data, "b_text_document")] * 2, os.path.join(data, "merged"))
    IndexCache(os.path.join(root, "cache")).load_or_build("doc", {"n": 3}, ["order"],
                                                          lambda: {"order": np.arange(3)})
    model = torch.nn.Linear(2, 2)
    save_checkpoint(os.path.join(root, "ckpt"), 1, [model], torch.optim.SGD(model.parameters(), lr=0.1),
                    {"consumed_samples": 0}, "a: 1\n", extra_files={"tokenizer.model": sentencepiece_model()})
    save_config(TrainConfig(), os.path.join(root, "run", "config.yaml"))
    with atomic_write(os.path.join(root, "shards", "part-00000.jsonl"), "w") as f:  # the shard writers' two ways
        f.write("{}\n")
    tmp = temporary_path(os.path.join(root, "shards", "part-00001.jsonl"))
    with open(tmp, "w") as f:
        f.write("{}\n")
    os.replace(tmp, os.path.join(root, "shards", "part-00001.jsonl"))
    built = temporary_dir(os.path.join(root, "folder_out"))
    from safetensors.numpy import save_file  # safetensors writes 0600 whatever the umask
    os.makedirs(os.path.join(built, "encoder"))
    save_file({"w": np.zeros(2, np.float32)}, os.path.join(built, "encoder", "model.safetensors"))
    honour_umask_tree(built)
    os.replace(built, os.path.join(root, "folder_out"))
    train_tokenizer([src], os.path.join(root, "tok", "code"), 400, input_sentence_size=2000, num_threads=1)
    os.makedirs(os.path.join(root, "hf"))
    export_tokenizer(sentencepiece_model(), os.path.join(root, "hf"))


@pytest.mark.parametrize("umask", [0o022, 0o077])
def test_outputs_honour_the_umask(tmp_path, umask):
    old = os.umask(umask)
    try:
        _write_everything(str(tmp_path))
    finally:
        os.umask(old)
    modes = _modes(tmp_path)
    expected = {"dir": 0o777 & ~umask, "file": 0o666 & ~umask}
    wrong = {p: oct(m) for p, m in modes.items()
             if m != expected["dir" if os.path.isdir(tmp_path / p) else "file"]}
    assert wrong == {}, f"umask {oct(umask)}: {wrong}"
    # the writers were all exercised
    for path in ("data/a.bin", "data/a.idx", "data/b_text_document.meta.json", "data/merged.idx",
                 "ckpt/step_00000001/meta.json", "ckpt/step_00000001/config.yaml", "ckpt/latest",
                 "run/config.yaml", "shards/part-00000.jsonl", "shards/part-00001.jsonl", "folder_out",
                 "folder_out/encoder/model.safetensors",
                 "tok/code.model", "tok/code.vocab", "hf/tokenizer.json", "hf/tokenizer_config.json"):
        assert path in modes, path
    assert any(p.startswith("cache/doc-") and p.endswith(".npy") for p in modes)
    assert not any(".tmp" in p for p in modes)  # no temporary file left
