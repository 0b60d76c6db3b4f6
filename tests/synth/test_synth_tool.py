"""tools/synthesize.py end to end with a real (tiny, random) model in process, and its answers to bad input."""
import json
import os
import subprocess
import sys

from tests.generation.test_openai_backend import free_port
from tests.synth.conftest import LENIENT, ROOT, read_jsonl, run_tool


def test_local_backend_run_resume_and_bad_seed_line(tmp_path, tiny_model, seed_shard):
    seeds = tmp_path / "seeds.jsonl"
    lines = open(seed_shard).read().splitlines()
    lines.insert(3, '{"text": "unterminated')
    seeds.write_text("\n".join(lines) + "\n")
    out = tmp_path / "out"
    args = ["--seeds", str(seeds), "--output", str(out), "backend.kind=local", f"backend.model={tiny_model}",
            "seeds.num_seeds=8", "sampling.max_tokens=12", "output.flush_every=3", *LENIENT]
    r = run_tool(*args)
    assert r.returncode == 0, r.stderr
    assert f"warning: seed record skipped: {seeds}:4: bad JSON" in r.stderr
    assert "shard 0/1: 8 requests, 0 cached, 8 answered now, 0 failed" in r.stdout
    summary = json.loads((out / "summary.json").read_text())
    assert summary["seeds"]["read"]["skipped_records"] == 1
    assert (f"- seed records: {len(lines) - 1} read from 1 files, 1 skipped (first: {seeds}:4: "
            f"bad JSON") in (out / "summary.md").read_text()
    assert summary["requests"]["answered"] == 8 and summary["outputs"]["kept"] == 8
    assert summary["language_mix"]["python"] == {"target_share": 0.5, "achieved_share": 0.5, "kept": 4,
                                                 "requests": 4}
    docs = read_jsonl(out / "data" / "part-00000.jsonl")
    chunks = sorted(os.listdir(out / "responses" / "shard-00000-of-00001"))
    assert chunks == ["chunk-000000.jsonl", "chunk-000001.jsonl", "chunk-000002.jsonl"]  # 3 + 3 + 2
    # a rerun asks nothing and writes the same documents
    r2 = run_tool(*args)
    assert r2.returncode == 0, r2.stderr
    assert "shard 0/1: 8 requests, 8 cached, 0 answered now" in r2.stdout
    assert read_jsonl(out / "data" / "part-00000.jsonl") == docs
    assert sorted(os.listdir(out / "responses" / "shard-00000-of-00001")) == chunks
    # the output binarizes as it is
    prefix = tmp_path / "phase3"
    b = subprocess.run([sys.executable, os.path.join(ROOT, "tools", "preprocess_data.py"), "--input",
                        str(out / "data"), "--output-prefix", str(prefix), "--tokenizer-type", "HuggingFaceTokenizer",
                        "--tokenizer-model", os.path.join(tiny_model, "tokenizer.json")], capture_output=True,
                       text=True, env={**os.environ, "PYTHONPATH": ROOT}, timeout=120)
    assert b.returncode == 0, b.stderr
    from megasnow.data.indexed import IndexedDataset

    assert len(IndexedDataset(str(prefix) + "_text_document")) == len(docs) == 8


def test_template_without_seed_placeholder_is_refused_at_start(tmp_path, seed_shard):
    template = tmp_path / "t.txt"
    template.write_text("Write a good {{language}} file.\n")
    out = tmp_path / "out"
    r = run_tool("--seeds", seed_shard, "--output", str(out), f"prompt.template={template}",
                 f"--base-url", f"http://127.0.0.1:{free_port()}/v1")
    assert r.returncode == 2
    assert r.stderr.strip().splitlines() == [
        f"error: prompt.template {template}: the template has no {{{{seed}}}} placeholder, so every request would "
        f"be the same; add {{{{seed}}}} where the seed code goes"]
    assert not out.exists()


def test_unreachable_url_fails_after_bounded_retries_leaving_nothing(tmp_path, seed_shard):
    url = f"http://127.0.0.1:{free_port()}/v1"
    out = tmp_path / "out"
    r = run_tool("--seeds", seed_shard, "--output", str(out), "--base-url", url, "backend.max_retries=2",
                 "backend.backoff_initial=0.01")
    assert r.returncode == 2
    warning, line = r.stderr.strip().splitlines()  # the first retry says so; then the one error line
    assert warning == (f"warning: {url}: connection failed (APIConnectionError); retrying up to 3 attempts with "
                       f"backoff (backend.max_retries = 2)")
    assert line.startswith(f"error: {url}: unreachable after 3 attempt(s)")
    assert not out.exists()


def test_user_mistakes_are_one_line_errors(tmp_path, seed_shard):
    cases = [
        (["--seeds", str(tmp_path / "missing.jsonl")], f"--seeds: input '{tmp_path / 'missing.jsonl'}' matches no"),
        ([f"seeds.documents=[{tmp_path / 'missing.jsonl'}]"], "seeds.documents: input "),
        (["--seeds", seed_shard, "prompt.system=@/no/such/file"], "prompt.system: /no/such/file is not a file"),
        (["--seeds", seed_shard, "postprocess.reference=[/no/such]"], "postprocess.reference: input '/no/such'"),
        (["--seeds", seed_shard, "postprocess.decontamination.benchmarks=[/no/such]"],
         "postprocess.decontamination.benchmarks: '/no/such' is not a file"),
        (["--seeds", seed_shard, "seeds.colour=red"], "unknown config key seeds.colour"),
        (["--seeds", seed_shard, "--shard", "3/2"], "--shard '3/2': write it as INDEX/COUNT"),
        (["--seeds", seed_shard, "seeds.python_fraction=2"], "python_fraction must be in [0, 1]"),
        ([], "seeds.documents is empty"),
    ]
    for args, message in cases:
        r = run_tool("--output", str(tmp_path / "out"), *args)
        assert r.returncode == 2, (args, r.stderr)
        lines = r.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], (args, lines)
    assert not (tmp_path / "out").exists()


def test_shard_drivers_merge_by_concatenation(tmp_path, tiny_model, seed_shard):
    common = ["--seeds", seed_shard, "backend.kind=local", f"backend.model={tiny_model}", "seeds.num_seeds=6",
              "sampling.max_tokens=8", *LENIENT]
    whole = tmp_path / "whole"
    assert run_tool(*common, "--output", str(whole)).returncode == 0
    for i in range(2):
        r = run_tool(*common, "--output", str(tmp_path / f"node{i}"), "--stage", "generate", "--shard", f"{i}/2")
        assert r.returncode == 0, r.stderr
        assert f"shard {i}/2: 3 requests, 0 cached, 3 answered now" in r.stdout
        assert not (tmp_path / f"node{i}" / "data").exists()
        tag = f"shard-{i:05d}-of-00002"
        assert json.loads((tmp_path / f"node{i}" / f"summary-generate-{tag}.json").read_text())["stage"] == "generate"
        assert "- seed records: " in (tmp_path / f"node{i}" / f"summary-generate-{tag}.md").read_text()
    merged = tmp_path / "merged"
    r = run_tool(*common, "--output", str(merged), "--stage", "postprocess", "--responses",
                 str(tmp_path / "node0"), str(tmp_path / "node1"))
    assert r.returncode == 0, r.stderr
    assert read_jsonl(merged / "data" / "part-00000.jsonl") == read_jsonl(whole / "data" / "part-00000.jsonl")
    summary = json.loads((merged / "summary.json").read_text())
    assert summary["requests"]["answered"] == 6 and summary["requests"]["drivers"] == 2


def test_config_paths_are_relative_to_the_yaml_folder_and_flags_to_the_cwd(tmp_path, seed_shard):
    """Run from another folder: the YAML's template and seed shard are found beside it; --seeds is taken from the
    cwd even where a file of the same name lies beside the YAML."""
    cfg_dir, cwd = tmp_path / "cfg", tmp_path / "elsewhere"
    cfg_dir.mkdir()
    cwd.mkdir()
    (cfg_dir / "t.txt").write_text("Write a {{language}} file inspired by:\n{{seed}}\n")
    full = open(seed_shard).read().splitlines()
    (cfg_dir / "s.jsonl").write_text(full[0] + "\n")
    (cwd / "s.jsonl").write_text("\n".join(full) + "\n")
    (cfg_dir / "c.yaml").write_text("seeds:\n  documents: [s.jsonl]\n  num_seeds: 2\nprompt:\n  template: t.txt\n"
                                    "backend:\n  model: m\n")
    env = {**os.environ, "PYTHONPATH": ROOT, "OMP_NUM_THREADS": "1"}

    def run(*args):
        return subprocess.run([sys.executable, os.path.join(ROOT, "tools", "synthesize.py"), "--config",
                               str(cfg_dir / "c.yaml"), "--stage", "postprocess", *args], capture_output=True,
                              text=True, env=env, cwd=cwd, timeout=120)

    r = run("--output", "out1")
    assert r.returncode == 0, r.stderr
    s = json.loads((cwd / "out1" / "summary.json").read_text())
    assert s["template"] == str(cfg_dir / "t.txt") and s["seeds"]["read"]["records"] == 1
    r = run("--output", "out2", "--seeds", "s.jsonl")
    assert r.returncode == 0, r.stderr
    assert json.loads((cwd / "out2" / "summary.json").read_text())["seeds"]["read"]["records"] == len(full) > 1


def test_shipped_configs_resolve_from_any_folder(tmp_path, monkeypatch):
    from megasnow.synth.config import load_synth_config
    from megasnow.synth.templates import load_template

    folder = os.path.join(ROOT, "examples", "synthesis")
    monkeypatch.chdir(tmp_path)
    names = sorted(n for n in os.listdir(folder) if n.endswith(".yaml"))
    assert len(names) >= 4
    templates = set()
    for name in names:
        cfg = load_synth_config(os.path.join(folder, name))
        templates.add(load_template(cfg.prompt).name)
        assert cfg.seeds.documents in ([], ["phase2/selected"])  # the user's data: relative to the cwd
    assert {os.path.join(folder, "templates", "small_model.txt"),
            os.path.join(folder, "templates", "file_completion.txt")} <= templates


def test_sampling_keys_are_checked_at_start_by_sampling_params_rules(tmp_path):
    """Every sampling.* value SamplingParams refuses is one line naming the key, exit 2, before the seeds are read
    (here they do not even exist) or a server is asked, and nothing is left in --output."""
    import pytest

    from megasnow.config import ConfigError
    from megasnow.synth.config import load_synth_config

    shipped = os.path.join(ROOT, "examples", "synthesis", "cpu_local.yaml")
    for override, message in [("sampling.temperature=-1", "sampling.temperature must be >= 0 (0: greedy), got -1.0"),
                              ("sampling.max_tokens=0", "sampling.max_tokens must be >= 1, got 0"),
                              ("sampling.top_p=0", "sampling.top_p must be in (0, 1], got 0.0"),
                              ("sampling.top_p=1.5", "sampling.top_p must be in (0, 1], got 1.5"),
                              ("sampling.temperature=nan", "sampling.temperature must be a finite number, got nan"),
                              ("sampling.samples_per_seed=0", "sampling.samples_per_seed must be >= 1, got 0")]:
        with pytest.raises(ConfigError) as e:
            load_synth_config(shipped, [override])
        assert str(e.value) == message
    out = tmp_path / "out"
    r = run_tool("--config", shipped, "--seeds", str(tmp_path / "no-seeds.jsonl"), "--output", str(out),
                 "--base-url", "http://127.0.0.1:9/v1", "sampling.temperature=-1")
    assert r.returncode == 2 and r.stderr.strip() == ("error: sampling.temperature must be >= 0 (0: greedy), "
                                                      "got -1.0"), r.stderr
    assert not out.exists()


def test_seeds_flag_replaces_a_reference_equal_to_the_configs_seeds(tmp_path, seed_shard):
    """The shipped configs check outputs against their seed folder (postprocess.reference = seeds.documents):
    --seeds replaces both; an explicit postprocess.reference=... wins; another reference list is kept."""
    folder = tmp_path / "my-seeds"
    folder.mkdir()
    (folder / "a.jsonl").write_text(open(seed_shard).read())
    shipped = os.path.join(ROOT, "examples", "synthesis", "openai.yaml")
    common = ["--seeds", str(folder), "--stage", "postprocess", "backend.model=m", "seeds.num_seeds=4",
              "seeds.language_stats=null"]
    r = run_tool("--config", shipped, "--output", str(tmp_path / "out"), *common)
    assert r.returncode == 0, r.stderr
    import yaml

    cfg = yaml.safe_load((tmp_path / "out" / "config.yaml").read_text())
    assert cfg["seeds"]["documents"] == cfg["postprocess"]["reference"] == [str(folder)]
    r = run_tool("--config", shipped, "--output", str(tmp_path / "out2"), *common, "postprocess.reference=[/no/such]")
    assert r.returncode == 2 and r.stderr.strip().startswith("error: postprocess.reference: input '/no/such'"), r.stderr
    own = tmp_path / "own.yaml"
    own.write_text(f"seeds:\n  documents: [elsewhere]\npostprocess:\n  reference: [{seed_shard}]\n")
    r = run_tool("--config", str(own), "--output", str(tmp_path / "out3"), *common)
    assert r.returncode == 0, r.stderr
    cfg = yaml.safe_load((tmp_path / "out3" / "config.yaml").read_text())
    assert (cfg["seeds"]["documents"], cfg["postprocess"]["reference"]) == ([str(folder)], [seed_shard])


def test_a_bad_value_in_the_yaml_names_the_file(tmp_path, seed_shard):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("sampling:\n  top_p: 1.5\n  min_p: 0.1\n  top_k: 5\n")
    out = tmp_path / "out"
    r = run_tool("--config", str(cfg), "--seeds", seed_shard, "--output", str(out))
    assert r.returncode == 2 and r.stderr.strip() == f"error: {cfg}: sampling.top_p must be in (0, 1], got 1.5", \
        r.stderr
    r = run_tool("--config", str(cfg), "--seeds", seed_shard, "--output", str(out), "sampling.top_p=0.9",
                 "sampling.min_p=2")  # the override is at fault: named as typed
    assert r.returncode == 2 and r.stderr.strip() == "error: sampling.min_p must be in [0, 1], got 2.0", r.stderr
    assert not out.exists()
