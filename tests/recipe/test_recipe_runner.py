"""The ablation runner on the tiny setting: matched token counts, determinism per seed, resume, refusal of a changed
config, and the random arm's draw (same rule and language mix as the selection, other documents)."""
import json
import os
import shutil

import pytest

from tests.recipe.conftest import run_ablation
from tests.recipe.tiny_setting import tiny_config


def _result(out, arm, seed):
    with open(os.path.join(out, "arms", arm, f"seed{seed}", "result.json")) as f:
        return json.load(f)


def _train_records(path):
    with open(path) as f:
        return [r for r in map(json.loads, f) if r.get("kind", "train") == "train"]


def test_arms_train_identical_token_counts(tiny_run):
    out, cfg, summary, _ = tiny_run
    seq_len, gbs = cfg["trainer"]["data"]["seq_len"], cfg["trainer"]["train"]["global_batch_size"]
    ab = cfg["ablation"]
    steps = (ab["repeats"] * ab["budget_tokens"] - 1) // seq_len // gbs  # the documented matching rule
    assert summary["plan"]["steps"] == steps == 6
    assert summary["plan"]["tokens_per_arm"] == steps * gbs * seq_len
    assert summary["tokens_matched"] is True and summary["runs_finished"] == summary["runs_planned"] == 6
    for arm in ab["arms"]:
        for seed in ab["seeds"]:
            res = _result(out, arm, seed)
            recs = _train_records(os.path.join(out, "arms", arm, f"seed{seed}", "log", "metrics.jsonl"))
            # read back from the trainer's own log: every arm trained the same steps and tokens
            assert [r["step"] for r in recs] == list(range(1, steps + 1))
            assert recs[-1]["tokens"] == res["tokens"] == steps * gbs * seq_len
            assert res["measures"]["heldout_tokens"] > 0
            assert set(res["measures"]["benchmark_loss"]) == {"humaneval_plus_mini", "mbpp_plus_mini"}
    # the repeat arm and the once arm really differ in data: budget x 2 passes vs 2 x budget once
    sel, once = _result(out, "selected", 0), _result(out, "selected_once", 0)
    assert (sel["budget_tokens"], sel["repeat"]) == (400, 2) and (once["budget_tokens"], once["repeat"]) == (800, 1)
    assert once["selected_tokens"] > sel["selected_tokens"] >= 400
    # every arm continued from the phase-1 checkpoint trained here
    import yaml

    for arm in ab["arms"]:
        with open(os.path.join(out, "arms", arm, "seed0", "train.yaml")) as f:
            assert yaml.safe_load(f)["checkpoint"]["init_from"] == os.path.join(out, "base", "ckpt")


def test_runs_are_deterministic_per_seed(tiny_run, tiny_inputs, tmp_path):
    out, cfg, summary, _ = tiny_run
    again = tiny_config(tiny_inputs, **{"ablation.arms": ["selected"], "ablation.seeds": [1]})
    run_ablation(again, str(tmp_path / "again"))
    base_a = _train_records(os.path.join(out, "base", "log", "metrics.jsonl"))
    base_b = _train_records(os.path.join(tmp_path, "again", "base", "log", "metrics.jsonl"))
    assert [r["loss"] for r in base_a] == [r["loss"] for r in base_b]
    a, b = _result(out, "selected", 1), _result(str(tmp_path / "again"), "selected", 1)
    assert a["measures"]["heldout_loss"] == b["measures"]["heldout_loss"]
    assert a["measures"]["benchmark_loss"] == b["measures"]["benchmark_loss"]
    # another seed is another sample order: other losses
    assert _result(out, "selected", 0)["measures"]["benchmark_loss"] != a["measures"]["benchmark_loss"]


def test_rerun_skips_finished_runs_and_redoes_only_missing_ones(tiny_run):
    out, cfg, summary, _ = tiny_run
    path = os.path.join(out, "arms", "random", "seed1")
    before = _result(out, "random", 1)
    mtimes = {(a, s): os.path.getmtime(os.path.join(out, "arms", a, f"seed{s}", "result.json"))
              for a in cfg["ablation"]["arms"] for s in cfg["ablation"]["seeds"]}
    os.remove(os.path.join(path, "result.json"))
    shutil.rmtree(os.path.join(path, "ckpt"))
    os.remove(os.path.join(path, "log", "metrics.jsonl"))
    lines = []
    again = run_ablation(cfg, out, lines)
    skipped = [msg for msg in lines if "finished earlier, skipped" in msg]
    assert len(skipped) == 6  # the base and 5 of the 6 arm runs
    assert any(msg.startswith("random seed 1") and "training 6 steps" in msg for msg in lines)
    after = _result(out, "random", 1)
    assert after["measures"] == before["measures"]  # retrained from the same checkpoint and seed: same numbers
    for (a, s), t in mtimes.items():
        if (a, s) != ("random", 1):
            assert os.path.getmtime(os.path.join(out, "arms", a, f"seed{s}", "result.json")) == t
    assert again["arms"]["random"]["heldout_loss"] == summary["arms"]["random"]["heldout_loss"]


def test_a_run_killed_before_measuring_resumes_from_its_checkpoint(tiny_run):
    out, cfg, _, _ = tiny_run
    before = _result(out, "selected_once", 0)
    os.remove(os.path.join(out, "arms", "selected_once", "seed0", "result.json"))
    lines = []
    run_ablation(cfg, out, lines)
    assert _result(out, "selected_once", 0)["measures"] == before["measures"]


def test_changed_config_is_refused_for_a_finished_run(tiny_run):
    from megasnow.recipe.prepare import RecipeError

    out, cfg, _, _ = tiny_run
    changed = json.loads(json.dumps(cfg))
    changed["ablation"]["schedule"]["max_lr"] = 1e-3
    with pytest.raises(RecipeError, match=r"arms/selected/seed0 holds a finished run of another config"):
        run_ablation(changed, out)


def test_random_arm_keeps_the_language_mix_but_takes_other_documents(tiny_run):
    out, _, _, _ = tiny_run

    def report(*parts):
        with open(os.path.join(out, "quality", *parts, "selection_report.json")) as f:
            return json.load(f)

    sel = report("tiny", "selections", "400")
    rnd0, rnd1 = report("random", "seed0", "selections", "400"), report("random", "seed1", "selections", "400")
    for r in (rnd0, rnd1):
        assert r["budget_tokens"] == sel["budget_tokens"] and r["selected_tokens"] >= 400
        assert r["scored_documents"] == sel["scored_documents"]
        assert set(r["languages"]) == set(sel["languages"])
        for lang, v in r["languages"].items():  # phase-1 shares are the same; the rule keeps them per language
            assert v["phase1_share"] == sel["languages"][lang]["phase1_share"]
            assert v["selected_tokens"] >= r["fraction"] * v["phase1_tokens"]

    def ids(r):
        out_ids = []
        for shard in r["output_shards"]:
            with open(shard) as f:
                out_ids += [json.loads(line)["id"] for line in f]
        return set(out_ids)

    assert ids(rnd0) != ids(sel) and ids(rnd0) != ids(rnd1)


def test_alignment_auc_matches_sklearn_and_the_quality_report(tiny_run):
    from sklearn.metrics import roc_auc_score

    from megasnow.quality.metrics import roc_auc

    out, _, summary, _ = tiny_run
    with open(os.path.join(out, "quality", "tiny", "alignment.json")) as f:
        al = json.load(f)
    neg = al["scores"]["random"]
    assert al["random_files"] == len(neg) == 20
    for name, pos in al["scores"]["benchmarks"].items():
        y = [1] * len(pos) + [0] * len(neg)
        assert al["benchmarks"][name]["roc_auc"] == pytest.approx(roc_auc_score(y, pos + neg), abs=1e-12)
        assert al["benchmarks"][name]["roc_auc"] == pytest.approx(roc_auc(y, pos + neg), abs=1e-12)
        assert summary["alignment"]["tiny"]["roc_auc"][name] == al["benchmarks"][name]["roc_auc"]
    assert len(al["scores"]["benchmarks"]["humaneval_plus_mini"]) == 4


def _stdlib_positives(root):
    """Documented standard-library functions as code files and as instruction records (docstring -> problem)."""
    import ast

    files, instructions = [], []
    for name in ("textwrap", "shlex", "fnmatch", "colorsys", "bisect", "heapq", "calendar", "difflib"):
        path = os.path.join(os.path.dirname(os.__file__), name + ".py")
        src = open(path, encoding="utf-8").read()
        for node in ast.parse(src).body:
            if isinstance(node, ast.FunctionDef) and ast.get_docstring(node) and not node.name.startswith("_"):
                code = ast.get_source_segment(src, node)
                files.append({"text": code})
                instructions.append({"problem": ast.get_docstring(node), "solution": f"```python\n{code}\n```"})
    paths = {}
    for key, recs in (("files", files), ("instructions", instructions)):
        paths[key] = os.path.join(root, f"{key}.jsonl")
        with open(paths[key], "w") as f:
            f.write("".join(json.dumps(r) + "\n" for r in recs))
    return paths


def test_annotator_trained_here_and_its_own_arm(tiny_run, tiny_inputs, tmp_path):
    """An annotator trained by the runner from code files + instruction records (megasnow.quality's builder) gets
    its selection, its ROC-AUC and a `selected@NAME` arm compared with the first annotator's `selected`."""
    pos = _stdlib_positives(str(tmp_path))
    cfg = tiny_config(tiny_inputs, **{"ablation.arms": ["selected", "selected@files-instr"], "ablation.seeds": [0, 1]})
    cfg["annotators"].append({"name": "files-instr", "max_length": 32, "heldout_fraction": 0.25,
                              "positives": [{"paths": [pos["files"]], "limit": 30},
                                            {"paths": [pos["instructions"]], "kind": "instruction", "limit": 30}]})
    cfg["base"] = {"checkpoint": os.path.join(tiny_run[0], "base", "ckpt")}
    out = str(tmp_path / "out")
    summary = run_ablation(cfg, out)
    folder = os.path.join(out, "quality", "files-instr", "annotator")
    with open(folder + ".training_data.json") as f:
        stats = json.load(f)["stats"]
    n = min(stats["positives_available"], stats["negatives_sampled"])  # balanced: the larger class is downsampled
    assert stats["positives_available"] == 60 and n > 40 and stats["train"] + stats["heldout"] == 2 * n
    with open(os.path.join(folder, "metrics.json")) as f:
        assert json.load(f)["heldout"]["n"] == stats["heldout"] == 2 * round(n * 0.25)
    assert set(summary["alignment"]) == {"tiny", "files-instr"}
    res = _result(out, "selected-files-instr", 0)
    assert res["annotator"] == "files-instr" and res["tokens"] == summary["plan"]["tokens_per_arm"]
    assert res["dataset"].endswith("selected-files-instr-400_text_document")
    assert [c["measure"] for c in summary["comparisons"] if c["a"] == "selected@files-instr"] == [
        "humaneval_plus_mini solution loss", "mbpp_plus_mini solution loss", "held-out loss"]
    # the phase-1 checkpoint was given: measured, not trained
    with open(os.path.join(out, "base", "result.json")) as f:
        assert json.load(f)["trained_here"] is False
    assert not os.path.exists(os.path.join(out, "base", "ckpt"))
    mtime = os.path.getmtime(os.path.join(folder, "metrics.json"))
    lines = []
    run_ablation(cfg, out, lines)  # a rerun trains no annotator and no arm
    assert os.path.getmtime(os.path.join(folder, "metrics.json")) == mtime
    assert not any("training" in msg and "skipped" not in msg for msg in lines)


def test_pass_at_1_measure_of_a_checkpoint(tiny_run):
    """measure.pass_at_1 wires greedy pass@1 (generation + sandbox) into the measures: a 2-layer model passes nothing."""
    from megasnow.eval.tasks import load_benchmark
    from megasnow.recipe.measures import measure_checkpoint
    from tests.recipe.tiny_setting import BENCHMARKS

    out, cfg = tiny_run[0], tiny_run[1]
    bench = load_benchmark(BENCHMARKS[0])
    m = measure_checkpoint(os.path.join(out, "base", "ckpt"), cfg["data"]["tokenizer"],
                           os.path.join(out, "data", "valid_text_document"), 32, [bench], pass_at_1=(2, 8))
    assert m["pass@1"] == {"humaneval_plus_mini": 0.0} and m["pass@1_tasks"] == 2
    with open(os.path.join(out, "base", "result.json")) as f:
        base = json.load(f)["measures"]
    assert m["heldout_loss"] == base["heldout_loss"]
    assert m["benchmark_loss"]["humaneval_plus_mini"] == base["benchmark_loss"]["humaneval_plus_mini"]
