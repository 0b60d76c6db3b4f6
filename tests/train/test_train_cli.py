"""`python -m megasnow.train` answers user mistakes in one line: an unknown key (with the closest valid one), a
tokenizer folder without tokenizer.json, a config changed at resume (named, refused where it breaks exact resume),
a rerun of a finished run; it shows progress from start to first step, ends with a summary, and Ctrl-C saves."""
import json
import os
import signal
import subprocess

import pytest

from megasnow.train import checkpoint as ckpt
from megasnow.train.config import load_train_config
from megasnow.train.resume import compare_configs
from tests.train.helpers import (REPO, cli, losses, real_code_files, run_train, tiny_config, train_command, train_env,
                                 write_byte_dataset, write_config)


@pytest.fixture(scope="module")
def prefix(tmp_path_factory):
    return write_byte_dataset(str(tmp_path_factory.mktemp("data") / "code"), real_code_files(limit=20))


def config(tmp_path, prefix, steps=4, **sections):
    sections = {"checkpoint": {"interval": 2, "keep_last": 0}, **sections}
    cfg = tiny_config(tmp_path, [{"name": "only", "blend": [{"path": prefix}], "steps": steps}], **sections)
    return write_config(tmp_path / "run.yaml", cfg)



def test_unknown_key_suggests_the_closest_and_a_missing_file_is_named(tmp_path, prefix):
    path = config(tmp_path, prefix)
    res = run_train(path, "train.micro_batch_szie=2")
    assert res.returncode == 2 and "Traceback" not in res.stderr
    assert res.stderr.startswith("error: unknown config key train.micro_batch_szie; did you mean "
                                 "train.micro_batch_size? (valid keys under train: ")
    assert len(res.stderr.strip().splitlines()) == 1
    res = run_train(str(tmp_path / "missing.yaml"))
    assert res.returncode == 2
    assert res.stderr.strip().startswith(f"error: {tmp_path / 'missing.yaml'}: no such config file")


def test_tokenizer_folder_without_tokenizer_json_names_the_key(tmp_path, prefix):
    folder = tmp_path / "tok"
    folder.mkdir()
    (folder / "code.model").write_bytes(b"")  # the folder tools/train_tokenizer.py writes; never read here
    res = run_train(config(tmp_path, prefix), f"data.tokenizer={folder}")
    assert res.returncode == 2 and "Traceback" not in res.stderr
    assert res.stderr.strip() == (f"error: data.tokenizer: {folder} is a folder without tokenizer.json (give a "
                                  f"SentencePiece .model file, a tokenizer.json, or a HuggingFace tokenizer folder); "
                                  f"it holds the SentencePiece model code.model: set "
                                  f"data.tokenizer={folder / 'code.model'}")
    assert not os.path.exists(tmp_path / "log") and not os.path.exists(tmp_path / "ckpt")  # nothing left behind


def test_progress_summary_changed_config_and_finished_rerun(tmp_path, prefix, capsys):
    path = config(tmp_path, prefix)
    code, out, _ = cli(capsys, path)
    assert code == 0
    lines = out.splitlines()
    start = [line for line in lines if line.startswith(("data:", "model:", "step 1:"))]
    assert start[1].startswith("data: phases[0] (only): 16 samples of 32 tokens from 1 dataset(s)")
    assert start[2].startswith("model: building tiny (117,056 parameters, 2 layers x 64) in float32 on cpu")
    assert start[3].startswith("step 1: first batch read")
    assert lines[-1].startswith("done: 4 steps this run (step 4 of 4, 1/1 phases done), 512 tokens in ")
    assert f"checkpoints in {tmp_path / 'ckpt'}, metrics in {tmp_path / 'log' / 'metrics.jsonl'}" in lines[-1]

    # a rerun has nothing to do, and says so before building anything
    code, out, _ = cli(capsys, path)
    assert (code, out.strip()) == (0, f"nothing left to do: run finished at step 4 ({tmp_path / 'ckpt' / 'step_00000004'}); "
                                      f"to train further raise the last phase's steps/tokens or add a phase")

    # changes that break exact resume are refused, naming them and the way out
    code, out, err = cli(capsys, path, "train.global_batch_size=8", "data.seed=8", "optim.clip_grad=0.5")
    assert code == 2 and out == ""
    assert err == (f"error: {tmp_path / 'ckpt' / 'step_00000004'} was trained with another config: data.seed 7 -> 8, "
                   f"train.global_batch_size 4 -> 8 would break exact resume (the data order, the batch or the saved "
                   f"tensors change); restore the checkpoint's values, start a new run in another checkpoint.dir, or "
                   f"set checkpoint.allow_config_change=true to resume anyway\n")
    # a longer phase that reorders the samples already trained on (the blend needs a second epoch) is refused too
    code, _, err = cli(capsys, path, "phases.0.steps=1000")
    assert code == 2 and "phases[0].steps/tokens: the new length reorders the 16 samples" in err

    # harmless changes are named in one warning line, and the run goes on
    code, out, err = cli(capsys, path, "phases.0.steps=6", "optim.clip_grad=0.5", "log.interval=2")
    assert code == 0
    assert err == ("warning: resuming with config changes: log.interval 1 -> 2, optim.clip_grad 1.0 -> 0.5, "
                   "phases[0].steps 4 -> 6\n")
    assert "done: 2 steps this run (step 6 of 6" in out
    # forced: named as such
    code, out, err = cli(capsys, path, "phases.0.steps=7", "data.seed=8", "checkpoint.allow_config_change=true")
    assert code == 0 and "break exact resume (checkpoint.allow_config_change=true): data.seed 7 -> 8" in err
    assert [r["step"] for r in losses(str(tmp_path / "log"))] == list(range(1, 8))


def test_what_a_resume_may_change():
    base = ["phases=[{name: a, blend: [{path: x}], steps: 4}, {name: b, blend: [{path: y}], steps: 4}]"]
    old = load_train_config(None, base)

    def verdicts(*overrides, phase=1):
        changes = compare_configs(old, load_train_config(None, base + list(overrides)), phase)
        return [k for k, *_ in changes.refused], [k for k, *_ in changes.allowed], changes.current_phase_length

    assert verdicts("phases.0.steps=5") == (["phases[0].steps"], [], False)  # a finished phase
    assert verdicts("phases.1.steps=5") == ([], ["phases[1].steps"], True)  # the current one: its data order is checked
    assert verdicts("phases.1.blend.0.path=z", "phases.1.schedule.max_lr=1e-3") == \
        (["phases[1].blend[0].path"], ["phases[1].schedule.max_lr"], False)
    assert verdicts("phases.1.blend.0.path=z", phase=0) == ([], ["phases[1].blend[0].path"], False)  # not started
    assert verdicts("model.kernels=reference", "model.num_layers=4", "parallel.bucket_size_mb=1") == \
        (["model.num_layers"], ["model.kernels", "parallel.bucket_size_mb"], False)
    assert verdicts("parallel.use_distributed_optimizer=true", "parallel.bucket_size_mb=1")[0] == \
        ["parallel.bucket_size_mb", "parallel.use_distributed_optimizer"]  # ZeRO-1 shards follow the buckets
    assert verdicts("checkpoint.allow_config_change=true") == ([], [], False)


@pytest.mark.parametrize("workers", [0, 2])
def test_ctrl_c_finishes_the_step_saves_and_exits_130(tmp_path, prefix, workers):
    """Ctrl-C as a terminal sends it: to the whole process group, DataLoader workers (data.num_workers) included.
    Without workers, the signals torchrun forwards after it follow at once (SIGTERM, SIGINT again): the first
    signal stays the reason, none interrupts the step or the save, and the stop is one line."""
    path = config(tmp_path, prefix, steps=200, checkpoint={"interval": 0, "keep_last": 0})
    proc = subprocess.Popen(train_command(path, f"data.num_workers={workers}"), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=train_env(), cwd=REPO, start_new_session=True)
    try:
        for line in proc.stdout:
            if line.startswith("step      2 |"):
                os.killpg(proc.pid, signal.SIGINT)
                if not workers:
                    os.kill(proc.pid, signal.SIGTERM)
                    os.kill(proc.pid, signal.SIGINT)
                break
        rest, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 130 and "Traceback" not in rest + err
    meta = ckpt.read_meta(ckpt.resolve_latest(str(tmp_path / "ckpt")))
    assert meta["reason"] == "sigint"
    stop = [line for line in rest.splitlines() if not line.startswith("step ")]
    assert len(stop) == 1 and stop[0].startswith(
        f"interrupted (Ctrl-C): saved a checkpoint at step {meta['step']} in {tmp_path / 'ckpt'}")
    assert f"; rerun the same command to resume; {meta['step']} steps this run" in stop[0]
    with open(tmp_path / "log" / "metrics.jsonl") as f:
        assert [json.loads(x)["reason"] for x in f if '"stop"' in x] == ["sigint"]
    if not workers:  # the repeated signals: noted once, on stderr
        assert err.strip() == ("megasnow.train: SIGTERM received while stopping; finishing the step and the "
                               "checkpoint first (SIGKILL stops at once, losing them)")


def test_hf_tokenizer_folder_trains_and_travels_with_the_checkpoint(tmp_path, prefix, capsys):
    """A HuggingFace tokenizer folder (tokenizer.json + tokenizer_config.json) sets the vocabulary and both files
    are copied into every checkpoint."""
    import json

    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer, tok.decoder = pre_tokenizers.ByteLevel(add_prefix_space=False), decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=300, special_tokens=["<|endoftext|>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator([open(f, encoding="utf-8").read() for f in real_code_files(limit=5)], trainer)
    folder = tmp_path / "hf_tok"
    folder.mkdir()
    tok.save(str(folder / "tokenizer.json"))
    (folder / "tokenizer_config.json").write_text(json.dumps({"eos_token": "<|endoftext|>"}))
    code, _, err = cli(capsys, config(tmp_path, prefix, steps=2), f"data.tokenizer={folder}", "model.vocab_size=null")
    assert code == 0, err
    step_dir = ckpt.resolve_latest(str(tmp_path / "ckpt"))
    assert ckpt.read_meta(step_dir)["model_config"]["vocab_size"] == tok.get_vocab_size() == 300
    for name in ("tokenizer.json", "tokenizer_config.json"):
        assert (folder / name).read_bytes() == open(os.path.join(step_dir, name), "rb").read()
