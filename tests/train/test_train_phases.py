"""Phase boundaries: `optimizer_state: reset` forgets the Adam moments but keeps the fp32 masters, and a phase
says how many passes of a repeated blend it really covers."""
import pytest
import torch

from megasnow.parallel import state
from megasnow.train.checkpoint import unwrap
from megasnow.train.config import load_train_config
from megasnow.train.trainer import Trainer
from tests.train.helpers import losses, real_code_files, tiny_config, write_byte_dataset, write_config


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    d = tmp_path_factory.mktemp("data")
    return (write_byte_dataset(str(d / "general"), real_code_files(limit=20)),
            write_byte_dataset(str(d / "quality"), real_code_files(limit=10, skip=20)))


def two_phase_config(tmp_path, data, optimizer_state="reset", **train):
    a, b = data
    phases = [{"name": "general", "blend": [{"path": a}], "steps": 3},
              {"name": "quality", "blend": [{"path": b}], "steps": 2, "optimizer_state": optimizer_state,
               "schedule": {"style": "linear", "max_lr": 2e-3, "min_lr": 0.0, "warmup_steps": 1}}]
    cfg = tiny_config(tmp_path, phases, checkpoint={"dir": None}, train=train)
    return load_train_config(write_config(tmp_path / "run.yaml", cfg))


def weights(trainer):
    return {k: v.clone() for k, v in unwrap(trainer.model_chunks[0]).state_dict().items()}


def train_phases(cfg, fresh_optimizer_between=False):
    """Run both phases in this process; optionally swap in a newly built optimizer at the phase change."""
    try:
        trainer = Trainer(cfg).setup()
        trainer._run_phase(0)
        if fresh_optimizer_between:
            trainer.optimizer = trainer._build_optimizer()
        trainer._run_phase(1)
        trainer.metrics.close()
        return weights(trainer)
    finally:
        state.destroy_model_parallel()


def test_reset_equals_a_fresh_optimizer_from_the_same_masters(tmp_path, data):
    reset = train_phases(two_phase_config(tmp_path / "reset", data))
    fresh = train_phases(two_phase_config(tmp_path / "fresh", data), fresh_optimizer_between=True)
    carry = train_phases(two_phase_config(tmp_path / "carry", data, optimizer_state="carry"))
    assert all(torch.equal(reset[k], fresh[k]) for k in reset)  # fp32 on CPU: bit for bit
    assert any(not torch.equal(reset[k], carry[k]) for k in reset)  # the moments did matter


def test_reset_keeps_fp32_masters_of_bf16_weights(tmp_path, data):
    cfg = two_phase_config(tmp_path, data, dtype="bf16")
    try:
        trainer = Trainer(cfg).setup()
        trainer._run_phase(0)
        opt = trainer.optimizer
        before = [e.master.clone() for e in opt.entries]
        # after 3 steps the masters hold bits the bf16 weights dropped: re-deriving them would lose those
        assert any(e.model_view is not None and not torch.equal(e.master, e.model_view.float()) for e in opt.entries)
        seen = {}
        real_step = opt.step

        def spy_step():
            if not seen:
                seen["masters"] = [e.master.clone() for e in opt.entries]
                seen["adam_states"] = len(opt.optimizer.state)
            return real_step()

        opt.step = spy_step
        trainer._run_phase(1)
        trainer.metrics.close()
    finally:
        state.destroy_model_parallel()
    assert trainer.optimizer is opt
    assert seen["adam_states"] == 0  # moments forgotten at the phase change
    assert all(torch.equal(a, b) for a, b in zip(before, seen["masters"]))


def test_repeat_blend_coverage_is_logged(tmp_path, data, capsys):
    a, b = data
    phases = [{"name": "capped", "blend": [{"path": b, "repeat": 4}], "steps": 3},
              {"name": "exact", "blend": [{"path": b, "repeat": 2}]},
              {"name": "short", "blend": [{"path": b, "repeat": 1}], "steps": 1000}]
    cfg = tiny_config(tmp_path, phases, checkpoint={"dir": None})
    try:
        trainer = Trainer(load_train_config(write_config(tmp_path / "run.yaml", cfg))).setup()
        samples = [len(t) for t, _ in trainer.datasets]
        steps = trainer.phase_lengths
        trainer.metrics.close()
    finally:
        state.destroy_model_parallel()
    out = capsys.readouterr().out
    passes = 4 * 3 * 4 / samples[0]
    assert (f"phases[0] (capped): 3 steps x 4 = 12 samples (capped by its steps/tokens: the repeat counts give "
            f"{samples[0]} samples): the phase reads {12 / samples[0]:.0%} of its repeated data = {passes:.2f} "
            f"passes (epochs) over quality, whose repeat asks for 4") in out
    exact = 2 * steps[1] * 4 / samples[1]
    assert f"phases[1] (exact): {steps[1]} steps x 4 = {steps[1] * 4} samples (as the repeat counts give): the " \
           f"phase reads {steps[1] * 4 / samples[1]:.0%} of its repeated data = {exact:.2f} passes (epochs) over " \
           f"quality, whose repeat asks for 2" in out
    assert f"phases[2] (short): {steps[2]} steps x 4 = {steps[2] * 4} samples (shortened from the 1000 steps " \
           f"asked: the repeated data holds only {samples[2]} samples)" in out
    notes = [r["message"] for r in losses(str(tmp_path / "log"), kind="note")]
    assert len(notes) == 3 and notes[0].startswith("phases[0] (capped)")
