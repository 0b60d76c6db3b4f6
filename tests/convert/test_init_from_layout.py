"""checkpoint.init_from takes a checkpoint of any tensor x pipeline layout (its shards merged, then re-cut for this
run); a resume keeps requiring the saved layout and names init_from as the way to change it."""
import os

import pytest

from megasnow.config import ConfigError
from megasnow.parallel.spawn import run_processes
from tests.train.helpers import losses, real_code_files, tiny_config, train_in_process, write_byte_dataset, write_config


def make_config(run_dir, prefix, init_from=None):
    phases = [{"name": "only", "blend": [{"path": prefix}], "steps": 1}]
    cfg = tiny_config(run_dir, phases, checkpoint={"interval": 1, "keep_last": 1, "init_from": init_from})
    return write_config(run_dir / "run.yaml", cfg)


def first_loss(run_dir):
    return losses(str(run_dir / "log"))[0]["loss"]


def _tensor_parallel_run(rank, world, config):
    train_in_process(config, "parallel.tensor=2")
    return "ok"


def test_init_from_any_layout_gives_the_same_loss_and_resume_names_init_from(tmp_path):
    data = write_byte_dataset(str(tmp_path / "code"), real_code_files(limit=8))
    train_in_process(make_config(tmp_path / "base", data))  # a 1 x 1 checkpoint at step 1
    base = str(tmp_path / "base" / "ckpt")

    train_in_process(make_config(tmp_path / "one", data, init_from=base))
    tp2 = make_config(tmp_path / "tp2", data, init_from=base)
    assert run_processes(_tensor_parallel_run, 2, (tp2,), timeout_s=120) == ["ok", "ok"]
    assert first_loss(tmp_path / "tp2") == pytest.approx(first_loss(tmp_path / "one"), abs=1e-5)

    # the tensor=2 checkpoint as init_from of a 1-process run: the same weights as the 1-process run's checkpoint
    train_in_process(make_config(tmp_path / "from_tp2", data, init_from=str(tmp_path / "tp2" / "ckpt")))
    train_in_process(make_config(tmp_path / "from_one", data, init_from=str(tmp_path / "one" / "ckpt")))
    assert first_loss(tmp_path / "from_tp2") == pytest.approx(first_loss(tmp_path / "from_one"), abs=1e-5)

    # resuming the tensor=2 run on 1 process is refused, naming the way to change the layout, even with
    # checkpoint.allow_config_change=true (a layout change cannot resume exactly: the optimizer state is per shard)
    step = os.path.join(str(tmp_path / "tp2" / "ckpt"), "step_00000001")
    for allow in ([], ["checkpoint.allow_config_change=true"]):
        with pytest.raises(ConfigError) as e:
            train_in_process(tp2, "phases.0.steps=2", *allow)
        assert "parallel.tensor 2 -> 1" in str(e.value)
        assert f"checkpoint.init_from={step} (weights only" in str(e.value)
