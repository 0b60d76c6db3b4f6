"""Training config: YAML phases + overrides, derived phase lengths, refusals naming the key, --help."""
import dataclasses
import subprocess
import typing
import sys

import pytest

from megasnow.config import ConfigError
from megasnow.train.config import (TrainConfig, help_text, load_train_config, phase_steps,
                                   resolve_phases)

YAML = """
data: {seq_len: 64, tokenizer: null}
train: {micro_batch_size: 2, global_batch_size: 8}
schedule: {style: cosine, max_lr: 1.0e-3, min_lr: 1.0e-4, warmup_steps: 2}
phases:
  - name: general
    blend: [{path: d/a, weight: 3}, {path: d/b, weight: 1}]
    tokens: 5000
  - name: quality
    blend: [{path: d/q, repeat: 4}]
    steps: 7
    schedule: {style: linear, max_lr: 1.0e-3, min_lr: 0.0, warmup_steps: 3}
"""


def test_yaml_phases_and_overrides(tmp_path):
    p = tmp_path / "run.yaml"
    p.write_text(YAML)
    cfg = load_train_config(p, ["train.global_batch_size=16", "optim.clip_grad=0.5"])
    assert cfg.train.global_batch_size == 16 and cfg.optim.clip_grad == 0.5
    phases = resolve_phases(cfg)
    assert [ph.name for ph in phases] == ["general", "quality"]
    assert [(b.path, b.weight, b.repeat) for b in phases[0].blend] == [("d/a", 3.0, None), ("d/b", 1.0, None)]
    assert phases[1].blend[0].repeat == 4
    # phase 1 takes the top-level schedule, phase 2 its own
    assert phases[0].schedule.style == "cosine" and phases[0].schedule.warmup_steps == 2
    assert phases[1].schedule.style == "linear" and phases[1].schedule.min_lr == 0.0
    # 5000 tokens / (16 x 64 tokens per step) rounds up to 5 steps
    assert phase_steps(phases[0], cfg) == 5 and phase_steps(phases[1], cfg) == 7
    assert phases[1].optimizer_state == "reset"


def test_overrides_reach_phases(tmp_path):
    p = tmp_path / "run.yaml"
    p.write_text(YAML)
    # steps and tokens both set (5000 tokens in the YAML) is refused, as Megatron refuses --train-iters with
    # --train-samples: the key is named, and unsetting the other makes the override work
    with pytest.raises(ConfigError, match=r"phases\[0\]\.steps \(10\) and phases\[0\]\.tokens \(5000, i\.e\. "
                                          r"\d+ steps\) are both set; .* phases\.0\.tokens=null"):
        load_train_config(p, ["phases.0.steps=10"])
    cfg = load_train_config(p, ["phases.0.steps=10", "phases.0.tokens=null", "phases.1.schedule.max_lr=2.0e-4",
                                "phases.1.blend.0.repeat=2"])
    phases = resolve_phases(cfg)
    assert phase_steps(phases[0], cfg) == 10
    assert phases[1].schedule.max_lr == 2.0e-4 and phases[1].schedule.style == "linear"  # the rest kept
    assert phases[1].blend[0].repeat == 2
    with pytest.raises(ConfigError, match=r"'phases\.2\.steps': index 2 is out of range, phases has 2 entries"):
        load_train_config(p, ["phases.2.steps=3"])


def test_single_phase_steps_and_tokens_conflict():
    with pytest.raises(ConfigError,
                       match=r"^train\.steps \(10\) and train\.tokens \(2048, i\.e\. 8 steps\) are both set"):
        load_train_config(None, ["data.blend=[{path: x}]", "train.steps=10", "train.tokens=2048",
                                 "train.global_batch_size=8", "data.seq_len=32"])


def test_megatron_blend_string_gets_the_list_form(tmp_path):
    with pytest.raises(ConfigError) as e:
        load_train_config(None, ["data.blend=0.7 a/p1 0.3 b/p2", "train.steps=1"])
    msg = str(e.value)
    assert msg.startswith("data.blend: '0.7 a/p1 0.3 b/p2' is Megatron's --data-path form")
    suggested = msg.split("data.blend=", 1)[1].split(" (in YAML")[0].strip('"')
    cfg = load_train_config(None, [f"data.blend={suggested}", "train.steps=1"])  # the suggestion itself works
    assert [(b.path, b.weight) for b in cfg.data.blend] == [("a/p1", 0.7), ("b/p2", 0.3)]
    p = tmp_path / "run.yaml"
    p.write_text(YAML)
    with pytest.raises(ConfigError, match=r'phases\.0\.blend="\[\{path: a\}, \{path: b\}\]"'):
        load_train_config(p, ["phases.0.blend=a b"])


def test_single_phase_from_data_blend():
    cfg = load_train_config(None, ["data.blend=[{path: x}]", "train.steps=4", "schedule.style=wsd"])
    (ph,) = resolve_phases(cfg)
    assert ph.blend[0].path == "x" and ph.steps == 4 and ph.schedule.style == "wsd"


def test_relative_paths_resolve_against_yaml_folder(tmp_path):
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "a.idx").write_bytes(b"")
    p = tmp_path / "run.yaml"
    p.write_text(YAML)
    cfg = load_train_config(p)
    assert cfg.phases[0].blend[0].path == str(tmp_path / "d" / "a")
    assert cfg.phases[0].blend[1].path == "d/b"  # not there: left as given


def test_every_input_path_of_the_yaml_resolves_against_its_folder_but_overrides_stay_cwd_relative(tmp_path):
    """data.tokenizer, the blends, data.valid_blend, checkpoint.init_from and eval.benchmark_files follow one rule
    (megasnow.config.path_from_yaml_folder); outputs and `key=value` overrides stay relative to the working
    directory."""
    for name in ("d/a.idx", "d/v.idx", "tok/code.model", "ckpt/step_00000004/meta.json", "bench/he.jsonl"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(b"")
    (tmp_path / "humaneval").write_bytes(b"")  # the benchmark name stays a name
    p = tmp_path / "run.yaml"
    p.write_text(YAML.replace("tokenizer: null", "tokenizer: tok/code.model, valid_blend: [{path: d/v}], "
                              "cache_dir: d") +
                 "checkpoint: {dir: ckpt, init_from: ckpt/step_00000004}\n"
                 "log: {dir: d}\n"
                 "eval: {benchmark_files: [humaneval, bench/he.jsonl, bench/missing.jsonl]}\n")
    cfg = load_train_config(p)
    assert cfg.data.tokenizer == str(tmp_path / "tok" / "code.model")
    assert [b.path for b in cfg.data.valid_blend] == [str(tmp_path / "d" / "v")]
    assert cfg.phases[0].blend[0].path == str(tmp_path / "d" / "a")
    assert cfg.checkpoint.init_from == str(tmp_path / "ckpt" / "step_00000004")
    assert cfg.eval.benchmark_files == ["humaneval", str(tmp_path / "bench" / "he.jsonl"), "bench/missing.jsonl"]
    assert (cfg.checkpoint.dir, cfg.log.dir, cfg.data.cache_dir) == ("ckpt", "d", "d")  # outputs: the cwd's
    cfg = load_train_config(p, ["data.tokenizer=tok/code.model", "phases.0.blend.0.path=d/a",
                                "checkpoint.init_from=ckpt/step_00000004", "phases.1.steps=9"])
    assert (cfg.data.tokenizer, cfg.phases[0].blend[0].path, cfg.checkpoint.init_from) == \
        ("tok/code.model", "d/a", "ckpt/step_00000004")
    assert cfg.phases[0].blend[1].path == "d/b" and cfg.phases[1].steps == 9
    assert cfg.data.valid_blend[0].path == str(tmp_path / "d" / "v")  # not overridden: still the YAML's


@pytest.mark.parametrize("overrides,match", [
    (["train.global_batch_size=10", "train.micro_batch_size=4"], r"global_batch_size \(10\).*micro_batch_size \(4\)"),
    (["train.micro_batch_size=0"], r"train\.micro_batch_size"),
    (["train.steps=null", "train.tokens=null"], r"give steps or tokens"),
    (["data.blend=[]"], r"no datasets"),
    (["data.blend=[{path: x, weight: -1}]"], r"data\.blend\.blend\[0\]\.weight|blend\[0\]\.weight"),
    (["train.stepz=3"], r"stepz"),
    (["schedule.style=exp"], r"schedule\.style"),
    (["train.steps=abc"], r"train\.steps"),
])
def test_bad_settings_name_the_key(overrides, match):
    base = ["data.blend=[{path: x}]", "train.steps=4"]
    with pytest.raises(ConfigError, match=match):
        load_train_config(None, base + overrides)


def test_help_lists_every_key_with_default():
    out = subprocess.run([sys.executable, "-m", "megasnow.train", "--help"], capture_output=True, text=True,
                         timeout=120, check=True).stdout
    assert out == help_text() + "\n"
    hints = typing.get_type_hints(TrainConfig)
    for section, tp in hints.items():
        if dataclasses.is_dataclass(tp):
            for f in dataclasses.fields(tp):
                sub = typing.get_type_hints(tp)[f.name]
                names = [f"{f.name}.{g.name}" for g in dataclasses.fields(sub)] if dataclasses.is_dataclass(sub) \
                    else [f.name]  # a nested section (data.fim) lists its own keys
                for name in names:
                    assert f"  {section}.{name} (" in out, f"{section}.{name} missing from --help"
    assert "  train.global_batch_size (int) = 8" in out
    assert "  schedule.max_lr (float) = 0.00053" in out
    assert "phases[i].optimizer_state" in out and "blend[j].repeat" in out
