"""Checkpoint files: atomic folders, `latest` pointer, keep-last-K, crash mid-save, shape refusal, safe loading."""
import os

import pytest
import torch

from megasnow.train import checkpoint as ckpt


class Net(torch.nn.Module):
    def __init__(self, hidden=8):
        super().__init__()
        self.embed = torch.nn.Embedding(16, hidden)
        self.proj = torch.nn.Linear(hidden, hidden)


def make(hidden=8, seed=0):
    torch.manual_seed(seed)
    m = Net(hidden)
    opt = torch.optim.AdamW(m.parameters(), lr=1e-2)
    m.proj.weight.sum().backward()
    opt.step()
    return m, opt


def save(d, step, m, opt, keep=2):
    return ckpt.save_checkpoint(str(d), step, [m], opt, {"trainer": {"step": step}}, "a: 1\n", keep_last=keep)


def test_save_load_roundtrip_and_keep_last(tmp_path):
    m, opt = make()
    for step in (10, 20, 30):
        save(tmp_path, step, m, opt)
    assert sorted(os.listdir(tmp_path)) == ["latest", "step_00000020", "step_00000030"]
    assert (tmp_path / "latest").read_text().strip() == "step_00000030"
    latest = ckpt.resolve_latest(str(tmp_path))
    assert sorted(os.listdir(latest)) == ["config.yaml", "meta.json", "model_tp00_pp000.pt", "rank_00000.pt"]
    m2, opt2 = make(seed=1)
    meta = ckpt.load_checkpoint(latest, [m2], opt2)
    assert meta["trainer"]["step"] == 30 and meta["layout"]["world"] == 1
    for (k, a), b in zip(m.state_dict().items(), m2.state_dict().values()):
        assert torch.equal(a, b), k
    assert torch.equal(opt.state_dict()["state"][1]["exp_avg"], opt2.state_dict()["state"][1]["exp_avg"])
    assert ckpt.resolve_checkpoint(str(tmp_path)) == latest


def test_rng_states_restored(tmp_path):
    m, opt = make()
    save(tmp_path, 1, m, opt)
    after_save = torch.rand(4)
    torch.rand(100)
    ckpt.load_checkpoint(ckpt.resolve_latest(str(tmp_path)), [m], opt)
    assert torch.equal(torch.rand(4), after_save)


def test_crash_mid_save_leaves_previous_checkpoint(tmp_path, monkeypatch):
    m, opt = make()
    save(tmp_path, 5, m, opt)
    real_save = torch.save

    def dying_save(obj, f, *a, **k):
        if isinstance(obj, dict) and "rng" in obj:  # the per-rank file, after the model file was written
            raise KeyboardInterrupt("killed mid-save")
        return real_save(obj, f, *a, **k)

    monkeypatch.setattr(torch, "save", dying_save)
    with pytest.raises(KeyboardInterrupt):
        save(tmp_path, 6, m, opt)
    monkeypatch.setattr(torch, "save", real_save)
    assert (tmp_path / "latest").read_text().strip() == "step_00000005"
    assert not (tmp_path / "step_00000006").exists()
    assert [s for s, _ in ckpt.list_checkpoints(str(tmp_path))] == [5]
    ckpt.load_checkpoint(ckpt.resolve_latest(str(tmp_path)), [m], opt)
    save(tmp_path, 7, m, opt)  # the next save cleans the half-written folder up
    assert sorted(os.listdir(tmp_path)) == ["latest", "step_00000005", "step_00000007"]


def test_shape_mismatch_is_refused_naming_the_tensor(tmp_path):
    m, opt = make(hidden=8)
    save(tmp_path, 1, m, opt)
    other, other_opt = make(hidden=12)
    with pytest.raises(ckpt.CheckpointError, match=r"shape mismatch for tensor 'embed\.weight'.*\(16, 8\).*\(16, 12\)"):
        ckpt.load_checkpoint(ckpt.resolve_latest(str(tmp_path)), [other], other_opt)


def test_missing_tensor_is_named(tmp_path):
    m, opt = make()
    save(tmp_path, 1, m, opt)
    bigger = Net()
    bigger.extra = torch.nn.Linear(2, 2)
    with pytest.raises(ckpt.CheckpointError, match=r"'extra\.weight' is missing"):
        ckpt.load_model_weights(ckpt.resolve_latest(str(tmp_path)), [bigger])


class Evil:
    def __reduce__(self):
        return (os.system, ("echo pwned",))


def test_loading_is_weights_only(tmp_path):
    m, opt = make()
    path = save(tmp_path, 1, m, opt)
    torch.save([{"embed.weight": Evil()}], os.path.join(path, "model_tp00_pp000.pt"))
    with pytest.raises(ckpt.CheckpointError, match="cannot be read safely"):
        ckpt.load_model_weights(path, [m])


def test_bad_pointer_is_reported(tmp_path):
    (tmp_path / "latest").write_text("step_00000099\n")
    with pytest.raises(ckpt.CheckpointError, match="step_00000099"):
        ckpt.resolve_latest(str(tmp_path))
