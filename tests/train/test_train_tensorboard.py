"""TensorBoard agrees with metrics.jsonl after a resume from an earlier checkpoint: the first attempt's events after
the checkpoint are dropped (the writer's purge_step), read back with TensorBoard's own EventAccumulator."""
import os

import pytest

from tests.train.helpers import losses, real_code_files, tiny_config, train_in_process, write_byte_dataset, write_config

EventAccumulator = pytest.importorskip("tensorboard.backend.event_processing.event_accumulator").EventAccumulator


def scalars(log_dir, tag):
    acc = EventAccumulator(os.path.join(log_dir, "tensorboard"))
    acc.Reload()
    return [(e.step, e.value) for e in acc.Scalars(tag)]


def test_resume_from_an_earlier_checkpoint_leaves_one_value_per_step(tmp_path):
    prefix = write_byte_dataset(str(tmp_path / "code"), real_code_files(limit=20))
    cfg = tiny_config(tmp_path, [{"name": "only", "blend": [{"path": prefix}], "steps": 6}],
                      checkpoint={"interval": 4, "keep_last": 0}, log={"tensorboard": True})
    path = write_config(tmp_path / "run.yaml", cfg)
    log = str(tmp_path / "log")
    train_in_process(path)
    first = scalars(log, "train/loss")
    assert [s for s, _ in first] == [1, 2, 3, 4, 5, 6]
    # As after a kill at step 6: the last complete checkpoint is step 4. Resume it with another LR, so step 6
    # (trained on weights that step 5 updated with the new LR) differs from the first attempt's.
    with open(tmp_path / "ckpt" / "latest", "w") as f:
        f.write("step_00000004\n")
    train_in_process(path, "schedule.max_lr=1e-3", "schedule.min_lr=1e-3")

    jsonl = [(r["step"], r["loss"], r["lr"]) for r in losses(log)]
    assert [s for s, _, _ in jsonl] == [1, 2, 3, 4, 5, 6]
    loss, lr = scalars(log, "train/loss"), scalars(log, "train/lr")
    assert [s for s, _ in loss] == [1, 2, 3, 4, 5, 6]  # once each: the first attempt's 5 and 6 are gone
    assert [v for _, v in loss] == pytest.approx([x for _, x, _ in jsonl], rel=1e-6)  # float32 in TensorBoard
    assert loss[:5] == first[:5] and loss[5][1] != first[5][1]
    assert [v for _, v in lr] == pytest.approx([3e-3] * 4 + [1e-3] * 2)
