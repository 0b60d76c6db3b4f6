"""tools/recipe_ablation.py: one-line errors with exit 2 and nothing left behind, the plan, the subprocess launcher
(one arm from a given phase-1 checkpoint, resumed by a rerun), and the report command."""
import json
import os
import re
import subprocess
import sys

import pytest

from tests.recipe.tiny_setting import REPO, tiny_config, write_config

TOOL = os.path.join(REPO, "tools", "recipe_ablation.py")


def _run(*args, timeout=240):
    env = dict(os.environ, PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""), OMP_NUM_THREADS="1",
               HF_HUB_OFFLINE="1")
    return subprocess.run([sys.executable, TOOL, *args], capture_output=True, text=True, timeout=timeout, env=env,
                          cwd=REPO)


def _tool_module():
    import importlib.util

    spec = importlib.util.spec_from_file_location("recipe_ablation_tool", TOOL)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _tool_main():
    return _tool_module().main


def test_one_seed_summary_prints_no_spread():
    from megasnow.recipe.stats import compare, describe

    arm = {"seeds": [0], "heldout_loss": describe([4.5]), "benchmark_loss": {"humaneval": describe([5.25])}}
    summary = {"runs_finished": 2, "runs_planned": 2, "plan": {"token_matching": "every arm: 768 tokens"},
               "tokens_matched": True, "alignment": {},
               "arms": {"selected": arm, "random": dict(arm, heldout_loss=describe([4.75]))},
               "comparisons": [{"a": "selected", "b": "random", "measure": "held-out loss",
                                **compare([4.5], [4.75], "selected", "random")}]}
    lines = _tool_module()._summary_lines(summary, "/out")
    assert lines[1] == "selected         held-out 4.5000 ± n/a; solution loss humaneval 5.2500 ± n/a (1 seed)"
    assert lines[3] == "selected - random (held-out loss): -0.2500 (SE n/a): one seed: spread not measured"
    assert not any("0.0000" in x or "seeds)" in x for x in lines)


def test_bad_config_is_one_line_exit_2_and_leaves_nothing(tiny_inputs, tmp_path, capsys):
    from megasnow.utils.cli import run_tool

    main = _tool_main()
    cfg = write_config(str(tmp_path / "cfg.yaml"), tiny_config(tiny_inputs))
    out = tmp_path / "out"
    cases = [
        (["ablation.budget_tokenz=5"], "unknown config key ablation.budget_tokenz; did you mean ablation.budget_tokens?"),
        (["ablation.arms=[selected,best]"], "ablation.arms[1]: unknown arm 'best'"),
        (["ablation.arms=[selected@nope]"], "names annotator 'nope'"),
        (["trainer.phases=[]"], "trainer.phases: the runner writes this section"),
        (["trainer.model.hidden_sise=8"], "trainer.model.hidden_sise"),
        (["data.valid=[/no/such.jsonl]"], "data.valid"),
        (["measure.benchmarks=[/no/bench.jsonl]"], "measure.benchmarks[0]"),
        (["ablation.budget_tokens=10"], "less than one global batch"),
        (["ablation.steps=99"], "ablation.steps=99 needs more data"),
        (["measure.pass_at_1_max_tokens=0"], "measure.pass_at_1_max_tokens must be >= 1, got 0"),
        # a budget over the corpus: refused up front (before any annotator training), in --dry-run too
        (["ablation.budget_tokens=200000000"], "ablation.budget_tokens x ablation.repeats (the selected_once arm's "
                                                "selection) = 400,000,000 tokens, but data.phase1 holds"),
        (["ablation.budget_tokens=200000000", "--dry-run"], "a selection cannot be larger than the corpus"),
    ]
    for overrides, message in cases:  # in this process: the CLI rule is run_tool's, tested for every tool elsewhere
        rc = run_tool(main, ["run", cfg, *overrides, "--output", str(out)])
        err = capsys.readouterr().err
        assert rc == 2, (overrides, err)
        lines = err.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], (overrides, err)
        assert not out.exists()
    r = _run("run", str(tmp_path / "missing.yaml"), "--output", str(out))  # and once as a real command
    assert r.returncode == 2 and r.stderr.strip() == f"error: {tmp_path / 'missing.yaml'}: no such config file " \
                                                     f"(examples/recipe/*.yaml are examples)"
    assert not out.exists()


def test_too_few_documents_fail_up_front_with_the_count_and_warn_malformed_lines(tiny_inputs, tmp_path, capsys):
    from megasnow.recipe.counts import MIN_ALIGNMENT_FILES, MIN_EXAMPLES_PER_CLASS
    from megasnow.utils.cli import run_tool

    main = _tool_main()
    phase1 = tmp_path / "phase1.jsonl"
    phase1.write_text('{"text": "def f():\\n    return 1\\n"}\n{"text": broken\n'
                      '{"text": "int main(void) { return 0; }\\n"}\nnot json at all\n')
    cfg = write_config(str(tmp_path / "cfg.yaml"), tiny_config(tiny_inputs))
    out = tmp_path / "out"
    rc = run_tool(main, ["run", cfg, f"data.phase1=[{phase1}]", "--output", str(out)])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and not out.exists(), err
    assert re.fullmatch(re.escape("error: data.phase1: 2 usable document(s) in 1 file(s) (") + r"\d+ tokens"
                        + re.escape(f"); 2 malformed/unusable record(s) skipped; the ablation needs at least "
                                    f"{MIN_ALIGNMENT_FILES} ({MIN_ALIGNMENT_FILES} random files for the annotators' "
                                    f"ROC-AUC measure): add phase-1 documents"), err[-1]), err[-1]
    warning = [x for x in err if x.startswith("warning: data.phase1: skipped 2 record(s)")]
    assert len(warning) == 1 and f"{phase1}:2: bad JSON" in warning[0] and f"{phase1}:4: bad JSON" in warning[0]

    # an annotator trained here: 5 positives are refused before any training, naming the key and the minimum
    pos = tmp_path / "pos.jsonl"
    pos.write_text("".join(json.dumps({"text": f"def f{i}():\n    return {i}\n"}) + "\n" for i in range(5)))
    cfg2 = tiny_config(tiny_inputs, annotators=[{"name": "few", "positives": [{"paths": [str(pos)]}]}])
    rc = run_tool(main, ["run", write_config(str(tmp_path / "cfg2.yaml"), cfg2), "--output", str(out)])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and not out.exists() and len(err) == 1, err
    assert err[0].startswith("error: annotators[0].positives: 5 usable document(s) in 1 file(s); annotator 'few' "
                             f"needs at least {MIN_EXAMPLES_PER_CLASS} positives")


def test_dry_run_prints_the_matched_plan(tiny_inputs, tmp_path):
    cfg = write_config(str(tmp_path / "cfg.yaml"), tiny_config(tiny_inputs, **{"ablation.seeds": [0]}))
    r = _run("run", cfg, "--output", str(tmp_path / "out"), "--dry-run")
    assert r.returncode == 0, r.stderr
    assert "plan: 3 arm(s) x 1 seed(s) = 3 continued-pretraining runs" in r.stdout
    assert "every run: 6 optimizer steps x 4 sequences x 32 tokens = 768 tokens" in r.stdout
    assert f"outputs: {tmp_path / 'out'}/" in r.stdout and "{" not in r.stdout
    r = _run("run", cfg, "--output", str(tmp_path / "out"), "--dry-run", "--json", "ablation.seeds=[0,1,2]")
    assert r.returncode == 0, r.stderr
    plan = json.loads(r.stdout)
    assert plan["steps"] == 6 and plan["tokens_per_arm"] == 6 * 4 * 32
    assert [(x["arm"], x["seed"]) for x in plan["runs"]][:4] == [("selected", 0), ("selected", 1), ("selected", 2),
                                                                 ("random", 0)]
    assert len({x["data"] for x in plan["runs"] if x["arm"] == "random"}) == 3  # one draw per seed
    assert not (tmp_path / "out").exists()
    assert "warning" not in r.stderr
    # warmups longer than the runs (a new-user trial: the LR never reached max_lr, silently)
    r = _run("run", cfg, "--output", str(tmp_path / "out"), "--dry-run", "base.schedule.warmup_steps=16",
             "ablation.schedule.warmup_steps=8")
    assert r.returncode == 0, r.stderr
    assert [line for line in r.stderr.splitlines() if line.startswith("warning:")] == [
        "warning: base (phase 1) warms up for 16 steps (base.schedule.warmup_steps) but runs 4: the LR never reaches "
        "max_lr 0.003 (peaks at 0.00075); lower base.schedule.warmup_steps or lengthen the phase",
        "warning: ablation (every arm) warms up for 8 steps (ablation.schedule.warmup_steps) but runs 6: the LR never "
        "reaches max_lr 0.003 (peaks at 0.00225); lower ablation.schedule.warmup_steps or lengthen the phase"]


def test_subprocess_launcher_from_a_given_checkpoint_resumes(tiny_run, tiny_inputs, tmp_path):
    """One arm run by `python -m megasnow.train` from the tiny run's phase-1 checkpoint; a rerun skips it."""
    base_ckpt = os.path.join(tiny_run[0], "base", "ckpt")
    cfg = tiny_config(tiny_inputs, **{"ablation.arms": ["random"], "ablation.seeds": [0]})
    cfg["base"] = {"checkpoint": base_ckpt}
    cfg["runner"]["launcher"] = "subprocess"
    path = write_config(str(tmp_path / "cfg.yaml"), cfg)
    out = str(tmp_path / "out")
    r = _run("run", path, "--output", out)
    assert r.returncode == 0, r.stderr[-2000:] + r.stdout[-2000:]
    assert "random seed 0 (1/1): training 6 steps" in r.stdout
    assert "random seed 0 (1/1): " in r.stdout and "step      6 |" in r.stdout  # the trainer's lines, labelled
    assert os.path.exists(os.path.join(out, "arms", "random", "seed0", "train.log"))
    with open(os.path.join(out, "arms", "random", "seed0", "result.json")) as f:
        res = json.load(f)
    with open(os.path.join(tiny_run[0], "arms", "random", "seed0", "result.json")) as f:
        same = json.load(f)
    # same checkpoint, data and seed as the in-process run: the same numbers
    assert res["measures"]["heldout_loss"] == same["measures"]["heldout_loss"]
    assert res["measures"]["benchmark_loss"] == same["measures"]["benchmark_loss"]
    assert os.path.exists(os.path.join(out, "report.md"))
    r2 = _run("run", path, "--output", out, "--no-report")
    assert r2.returncode == 0 and "random seed 0 (1/1): finished earlier, skipped" in r2.stdout
    assert "runs: 1 of 1 finished" in r2.stdout


def test_report_command(tiny_run, tmp_path):
    md = str(tmp_path / "r.md")
    r = _run("report", tiny_run[0], "--output", md)
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("report (ablation layout): " + md) and os.path.exists(md)
    (tmp_path / "empty").mkdir()
    r = _run("report", str(tmp_path / "empty"))
    assert r.returncode == 2 and r.stderr.startswith("error: ") and "neither an ablation folder" in r.stderr
    r = _run("report", str(tmp_path / "missing"))
    assert r.returncode == 2 and r.stderr == f"error: {tmp_path / 'missing'}: does not exist; give the --output " \
                                             f"folder of a recipe_ablation.py run (or a quickstart work folder)\n"


def _interrupt_at_a_step(args, signum, env, after=0):
    """Run the tool in its own session; once the trainer logs a step > `after`, send `signum` to the runner's pid
    alone (as `kill -INT PID` does: the trainer child gets nothing from outside). Returns (exit status, output)."""
    import re
    import signal
    import threading

    proc = subprocess.Popen([sys.executable, TOOL, *args], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, env=env, cwd=REPO, start_new_session=True)
    lines = []
    # a trainer that hangs is killed (and the test fails on its exit status) instead of hanging CI: readlines()
    # below has no timeout of its own
    watchdog = threading.Timer(600, lambda: proc.poll() is None and os.killpg(proc.pid, signal.SIGKILL))
    watchdog.start()
    try:
        for line in proc.stdout:
            lines.append(line)
            m = re.search(r"random seed 0 \(1/1\):\s+step\s+(\d+) \|", line)
            if m and int(m.group(1)) > after:  # the trainer is stepping
                os.kill(proc.pid, signum)
                break
        lines += proc.stdout.readlines()
        rc = proc.wait(timeout=120)
    finally:
        watchdog.cancel()
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    return rc, "".join(lines)


def test_sigint_and_sigterm_to_the_runner_alone_reach_the_trainer_which_saves_and_resumes(tiny_run, tiny_inputs,
                                                                                         tmp_path):
    """SIGINT sent to the runner's pid alone while `python -m megasnow.train` runs an arm (as Ctrl-C in a terminal,
    or `kill -INT`): the runner passes it on, prints its line before the trainer's own "interrupted" line, both reach
    the run's train.log, the trainer saves at that early step, exit 130; a rerun resumes from there. SIGTERM to the
    resumed runner does the same, ending with exit 143. The last rerun finishes, and its training seconds count
    every segment's steps."""
    import re
    import signal

    from megasnow.train.metrics import read_metrics

    base_ckpt = os.path.join(tiny_run[0], "base", "ckpt")
    cfg = tiny_config(tiny_inputs, **{"ablation.arms": ["random"], "ablation.seeds": [0],
                                      "ablation.budget_tokens": 400 * 40})
    cfg["base"] = {"checkpoint": base_ckpt}
    cfg["runner"]["launcher"] = "subprocess"
    path = write_config(str(tmp_path / "cfg.yaml"), cfg)
    out = str(tmp_path / "out")
    run_dir = os.path.join(out, "arms", "random", "seed0")
    env = dict(os.environ, PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""), OMP_NUM_THREADS="1",
               HF_HUB_OFFLINE="1")
    args = ["run", path, "--output", out, "--no-report"]
    rc, text = _interrupt_at_a_step(args, signal.SIGINT, env)
    assert rc == 130, text
    steps = int(re.search(r"random seed 0 \(1/1\): training (\d+) steps", text).group(1))
    note = "Ctrl-C: the training run is finishing its step and saving a checkpoint (Ctrl-C again to stop at once)"
    assert f"random seed 0 (1/1): {note}" in text
    saved = int(re.search(r"interrupted \(Ctrl-C\): saved a checkpoint at step (\d+)", text).group(1))
    assert 1 <= saved < steps - 1, text  # early: the trainer stopped when told, not at the end
    assert text.index(note) < text.index("interrupted (Ctrl-C): saved a checkpoint at step"), text
    assert text.rstrip().splitlines()[-1].startswith("recipe_ablation.py: interrupted (Ctrl-C)"), text
    with open(os.path.join(run_dir, "train.log")) as f:
        log = f.read()
    assert f"recipe_ablation: {note}" in log and "interrupted (Ctrl-C): saved a checkpoint at step" in log
    assert log.index(note) < log.index("interrupted (Ctrl-C): saved")
    assert not os.path.exists(os.path.join(run_dir, "result.json"))

    rc, text = _interrupt_at_a_step(args, signal.SIGTERM, env, after=saved)  # resumed, then SIGTERM
    assert rc == 143, text  # SIGTERM's own exit status, as every tool's
    assert text.rstrip().splitlines()[-1].startswith("recipe_ablation.py: terminated (SIGTERM)"), text
    assert "resumed from" in text and f"at step {saved}" in text, text
    assert "random seed 0 (1/1): SIGTERM: the training run is finishing its step and saving a checkpoint" in text
    saved2 = int(re.search(r"SIGTERM: saved a checkpoint at step (\d+)", text).group(1))
    assert saved < saved2 < steps, text

    r = _run(*args)
    assert r.returncode == 0, r.stderr[-2000:] + r.stdout[-2000:]
    assert f"at step {saved2}" in r.stdout and "runs: 1 of 1 finished" in r.stdout
    with open(os.path.join(run_dir, "result.json")) as f:
        res = json.load(f)
    metrics = os.path.join(run_dir, "log", "metrics.jsonl")
    step_times = {rec["step"]: rec["step_time_s"] for rec in read_metrics(metrics)}
    assert sorted(step_times) == list(range(1, steps + 1))  # one record per step across the three segments
    with open(os.path.join(run_dir, "segments.jsonl")) as f:  # the wall time of each launch, as the runner saw it
        walls = [json.loads(line)["seconds"] for line in f]
    assert len(walls) == 3 and all(w > 0 for w in walls)
    before = sum(t for s, t in step_times.items() if s <= saved2)  # the first two segments' steps
    assert walls[0] + walls[1] > before  # a launch's wall time covers its steps (and its set-up)
    assert res["seconds_train_before_resume"] == round(walls[0] + walls[1], 1)
    assert res["seconds_train"] == pytest.approx(sum(walls), abs=0.15)  # every segment, not the last one's alone
    assert res["seconds_train"] > walls[2] + 0.5
