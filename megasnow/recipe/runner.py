"""The ablation runner: data and annotators (prepare.py), one phase-1 checkpoint, then every arm x seed as its own
run folder trained with megasnow.train from that checkpoint for the same number of tokens, measured, summarised.

Output folder (docs/recipe.md has the full layout):
  config.yaml  plan.json  summary.json  report.md (+ PNGs)
  data/          binarized datasets          quality/<annotator>/ annotator, scores, alignment.json, selections
  base/          phase 1: train.yaml, log/metrics.jsonl, ckpt/, result.json
  arms/<arm>/seed<s>/  the same per continued-pretraining run
A run folder with result.json of the same fingerprint is finished and skipped; an unfinished one resumes from its
latest checkpoint (the trainer's exact resume).
"""
import contextlib
import copy
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time

import yaml

from megasnow.config import dump_config
from megasnow.errors import UserError
from megasnow.recipe import prepare
from megasnow.recipe.arms import arm_data_seed, matched_steps, parse_arms, trainer_shape
from megasnow.recipe.prepare import RecipeError, fingerprint
from megasnow.recipe.stats import compare, describe
from megasnow.utils.atomic import atomic_write_text
from megasnow.utils.cli import raise_on_sigterm

REPO = prepare.REPO


def _log(msg):
    print(f"[recipe {time.strftime('%H:%M:%S')}] {msg}", flush=True)


def _read_json(path):
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def _write_json(path, obj):
    atomic_write_text(path, json.dumps(obj, indent=1) + "\n")


class AblationRunner:
    """Runs `cfg` (an AblationConfig) into `out_dir`. `log(msg)` receives progress lines."""

    def __init__(self, cfg, out_dir, log=_log):
        self.cfg, self.out, self.log = cfg, os.path.abspath(out_dir), log
        self.arms = parse_arms(cfg)
        self.steps, self.tokens_per_arm = matched_steps(cfg)
        self.seq_len, self.gbs = trainer_shape(cfg)
        self.device = self._device()
        self.input_counts = None

    # ------------------------------------------------------------------ plan
    def check_inputs(self):
        """Count the documents of every input set before anything is written (megasnow.recipe.counts: ConfigError
        naming the key, the count and the minimum); malformed records are warned with FILE:LINE. Once per runner."""
        if self.input_counts is None:
            from megasnow.recipe.counts import check_document_counts

            self.input_counts = check_document_counts(self.cfg, log=self.log)
        return self.input_counts

    def schedule_warnings(self):
        """Warmups longer than the runs they belong to, named by this config's keys (the trainer repeats them per
        run, named by the generated train.yaml's)."""
        from megasnow.train.schedules import warmup_warning

        c, out = self.cfg, []
        if c.base.checkpoint is None:
            out.append(warmup_warning("base", "phase 1", c.base.schedule, c.base.steps, "base.schedule.warmup_steps"))
        out.append(warmup_warning("ablation", "every arm", c.ablation.schedule, self.steps,
                                  "ablation.schedule.warmup_steps"))
        out += repetition_warnings(self.plan())  # ablation.steps too low for the repeats (the budget as its size)
        return [line for line in out if line]

    def _device(self):
        from megasnow.utils.device import resolve_device

        return str(resolve_device(self.cfg.runner.device, "runner.device"))

    def plan(self):
        """What will run: every arm x seed with its data, passes and token count (all equal)."""
        runs = []
        for arm in self.arms:
            for seed in self.cfg.ablation.seeds:
                runs.append({"arm": arm.name, "seed": seed, "source": arm.source, "annotator": arm.annotator,
                             "budget_tokens": arm.budget_tokens, "repeat": arm.repeat, "steps": self.steps,
                             "data": arm.dataset_key(seed), "data_seed": arm_data_seed(self.cfg, seed),
                             "folder": os.path.join("arms", arm.folder_name, f"seed{seed}")})
        return {
            "steps": self.steps, "global_batch_size": self.gbs, "seq_len": self.seq_len,
            "tokens_per_arm": self.tokens_per_arm,
            "token_matching": f"every arm: {self.steps} optimizer steps x {self.gbs} sequences x {self.seq_len} "
                              f"tokens = {self.tokens_per_arm:,} tokens, from the same phase-1 checkpoint",
            "arms": [{"name": a.name, "description": a.describe(), "source": a.source, "annotator": a.annotator,
                      "budget_tokens": a.budget_tokens, "repeat": a.repeat} for a in self.arms],
            "seeds": list(self.cfg.ablation.seeds),
            "annotators": [a.name for a in self.cfg.annotators],
            "benchmarks": list(self.cfg.measure.benchmarks),
            "runs": runs,
        }

    # ------------------------------------------------------------------ run
    def run(self, report=True):
        """Prepare, train and measure everything not finished yet; write summary.json (and the report).
        Returns the summary dict. SIGTERM counts as Ctrl-C (KeyboardInterrupt: a training child gets it passed on
        and saves; a binarizing child is stopped; outputs are atomic and a rerun resumes)."""
        with _signals_as_exceptions():
            return self._run(report)

    def _run(self, report):
        t0 = time.time()
        self.check_inputs()
        fresh = not os.path.lexists(self.out)
        os.makedirs(self.out, exist_ok=True)
        plan = self.plan()
        n_runs = len(plan["runs"])
        self.log(f"plan: {len(self.arms)} arm(s) x {len(self.cfg.ablation.seeds)} seed(s) = {n_runs} runs; "
                 f"{plan['token_matching']}")
        for line in self.schedule_warnings():
            self.log(line)
        try:
            self._prepare_data()
        except UserError:
            if fresh:  # bad data found while preparing: a new output folder is not left behind half-made
                shutil.rmtree(self.out, ignore_errors=True)
            raise
        self._check_finished_runs()
        atomic_write_text(os.path.join(self.out, "config.yaml"), dump_config(self.cfg))
        _write_json(os.path.join(self.out, "plan.json"), plan)
        base = self._base()
        done_before = 0
        for i, r in enumerate(plan["runs"], 1):
            arm = next(a for a in self.arms if a.name == r["arm"])
            done_before += self._arm(arm, r["seed"], f"{i}/{n_runs}")
        summary = self.summarize(base)
        _write_json(os.path.join(self.out, "summary.json"), summary)
        self.log(f"done: {n_runs} runs ({done_before} already finished, skipped) in {time.time() - t0:.0f} s; "
                 f"summary {os.path.join(self.out, 'summary.json')}")
        if report:
            from megasnow.recipe.report import write_recipe_report

            out = write_recipe_report(self.out, os.path.join(self.out, "report.md"))
            self.log(f"report: {out['markdown']} ({len(out['plots'])} plots)")
        return summary

    # ------------------------------------------------------------------ data
    def _prepare_data(self):
        c, d = self.cfg, self.cfg.data
        data_dir = os.path.join(self.out, "data")
        self.phase1_prefix = prepare.binarize(d.phase1, d.tokenizer, os.path.join(data_dir, "phase1"), self.log,
                                              d.text_field)
        self.valid_prefix = prepare.binarize(d.valid, d.tokenizer, os.path.join(data_dir, "valid"), self.log,
                                             d.text_field)
        self.annotator_folders, self.scores_dirs, self.alignment = {}, {}, {}
        from megasnow.quality.evaluate import EvaluationError
        from megasnow.recipe.alignment import measure_alignment

        for spec in c.annotators:
            qdir = os.path.join(self.out, "quality", spec.name)
            folder = prepare.train_annotator_stage(spec, d.phase1, os.path.join(qdir, "annotator"), self.device,
                                                   self.log, d.text_field, benchmarks=c.measure.benchmarks)
            self.annotator_folders[spec.name] = folder
            self.scores_dirs[spec.name] = os.path.join(qdir, "scores")
            prepare.score_stage(folder, d.phase1, self.scores_dirs[spec.name], self.device, c.runner.threads, self.log,
                                d.text_field, name=spec.name)
            self.log(f"annotator {spec.name}: ROC-AUC of held-out benchmark solutions vs random phase-1 files")
            try:
                al = measure_alignment(folder, d.phase1, c.measure.benchmarks, os.path.join(qdir, "alignment.json"),
                                       c.measure.alignment_random_files, c.measure.alignment_seed, self.device,
                                       d.text_field)
            except EvaluationError as e:
                raise RecipeError(f"annotator {spec.name}: its ROC-AUC cannot be measured ({e}): data.phase1 needs "
                                  f"documents the annotator did not train on; add phase-1 documents") from None
            self.alignment[spec.name] = {k: v["roc_auc"] for k, v in al["benchmarks"].items()}
            self.log(f"annotator {spec.name}: ROC-AUC " + ", ".join(f"{k} {v:.4f}" for k, v in
                                                                   self.alignment[spec.name].items())
                     + f" ({al['random_files']} random phase-1 files)")
        self.datasets = {}
        for arm in self.arms:
            for seed in self.cfg.ablation.seeds:
                key = arm.dataset_key(seed)
                if key in self.datasets:
                    continue
                if arm.source == "selected":
                    sel_dir = os.path.join(self.out, "quality", arm.annotator, "selections", str(arm.budget_tokens))
                    scores = self.scores_dirs[arm.annotator]
                else:
                    rdir = os.path.join(self.out, "quality", "random", f"seed{seed}")
                    scores = prepare.random_scores(self.scores_dirs[c.annotators[0].name], os.path.join(rdir, "scores"),
                                                   seed)
                    sel_dir = os.path.join(rdir, "selections", str(arm.budget_tokens))
                report = prepare.select_stage(d.phase1, scores, sel_dir, d.tokenizer, arm.budget_tokens,
                                              c.ablation.mix_tolerance_pp, self.log, d.text_field)
                prefix = prepare.binarize(report["output_shards"], d.tokenizer, os.path.join(data_dir, key), self.log,
                                          d.text_field)
                self.datasets[key] = {"prefix": prefix, "selection": os.path.join(sel_dir, "selection_report.json"),
                                      "selected_tokens": report["selected_tokens"],
                                      "selected_documents": report["selected_documents"]}
        _write_json(os.path.join(self.out, "data", "datasets.json"), self.datasets)
        for line in repetition_warnings(self.plan(), self.datasets):  # the selections' real sizes
            self.log(line)

    # ------------------------------------------------------------------ training runs
    def _eval_iters(self):
        _, tokens = prepare.dataset_tokens(self.valid_prefix)
        return max(1, (tokens - 1) // self.seq_len // self.gbs)

    def _train_config(self, run_dir, phase, data_seed, init_from=None):
        t = copy.deepcopy(self.cfg.trainer)
        c, m = self.cfg, self.cfg.measure
        steps = phase["steps"]
        interval = max(1, steps // m.curve_points) if m.curve_points else steps
        valid_ok = prepare.dataset_tokens(self.valid_prefix)[1] - 1 >= self.seq_len * self.gbs
        t.setdefault("data", {}).update(tokenizer=c.data.tokenizer, seed=data_seed,
                                        valid_blend=[{"path": self.valid_prefix}])
        tr = t.setdefault("train", {})
        tr.setdefault("device", self.device)
        tr.update(threads=c.runner.threads, eval_interval=interval if valid_ok else 0,
                  eval_iters=self._eval_iters())
        t["checkpoint"] = {"dir": os.path.join(run_dir, "ckpt"), "interval": c.runner.checkpoint_interval,
                           "keep_last": 1, "resume": True, "init_from": init_from, "save_at_end": True}
        t["log"] = {"dir": os.path.join(run_dir, "log"), "interval": max(1, steps // 10), "tensorboard": False}
        t["eval"] = {"benchmark_loss_interval": interval, "benchmark_files": list(m.benchmarks)}
        t["phases"] = [phase]
        return t

    @staticmethod
    def _fingerprint(train_cfg):
        """What a run computes: its config without the keys that only change how it runs."""
        cfg = copy.deepcopy(train_cfg)
        cfg["train"].pop("threads", None)
        cfg.pop("log", None)
        for k in ("interval", "keep_last", "resume", "save_at_end"):
            cfg["checkpoint"].pop(k, None)
        cfg["checkpoint"].pop("dir", None)
        return fingerprint(cfg)

    def _base_train_config(self):
        c = self.cfg
        phase = {"name": "phase1", "blend": [{"path": self.phase1_prefix}], "steps": c.base.steps,
                 "schedule": _schedule_dict(c.base.schedule)}
        return self._train_config(os.path.join(self.out, "base"), phase, c.runner.data_seed)

    def _arm_train_config(self, arm, seed):
        c = self.cfg
        run_dir = os.path.join(self.out, "arms", arm.folder_name, f"seed{seed}")
        ds = self.datasets[arm.dataset_key(seed)]
        phase = {"name": f"continued-{arm.name}", "blend": [{"path": ds["prefix"], "repeat": arm.repeat}],
                 "steps": self.steps, "schedule": _schedule_dict(c.ablation.schedule),
                 "optimizer_state": c.ablation.optimizer_state}
        base_ckpt = c.base.checkpoint or os.path.join(self.out, "base", "ckpt")
        return run_dir, self._train_config(run_dir, phase, arm_data_seed(c, seed), init_from=base_ckpt)

    def _check_finished_runs(self):
        """Refuse, before anything trains, a run folder finished under another config (its results would mix)."""
        todo = [] if self.cfg.base.checkpoint else [(os.path.join(self.out, "base"), self._base_train_config())]
        todo += [self._arm_train_config(arm, seed) for arm in self.arms for seed in self.cfg.ablation.seeds]
        for run_dir, train_cfg in todo:
            path = os.path.join(run_dir, "result.json")
            if os.path.exists(path):
                old, fp = _read_json(path).get("fingerprint"), self._fingerprint(train_cfg)
                if old != fp:
                    raise RecipeError(f"{run_dir} holds a finished run of another config (fingerprint {old} != {fp}); "
                                      f"delete that folder or give another --output")

    def _base(self):
        c = self.cfg
        run_dir = os.path.join(self.out, "base")
        if c.base.checkpoint:
            result_path = os.path.join(run_dir, "result.json")
            fp = fingerprint({"checkpoint": os.path.abspath(c.base.checkpoint), "valid": self.valid_prefix,
                              "benchmarks": c.measure.benchmarks, "pass@1": c.measure.pass_at_1})
            if os.path.exists(result_path) and _read_json(result_path).get("fingerprint") == fp:
                return _read_json(result_path)
            self.log(f"base: phase-1 checkpoint {c.base.checkpoint} (given); measuring")
            result = {"name": "base", "fingerprint": fp, "checkpoint": c.base.checkpoint, "trained_here": False,
                      "measures": self._measure(c.base.checkpoint)}
            _write_json(result_path, result)
            return result
        train_cfg = self._base_train_config()
        return self._run_training("base", run_dir, train_cfg, {"name": "base", "trained_here": True,
                                                                "dataset": self.phase1_prefix}, "phase 1")[0]

    def _arm(self, arm, seed, progress):
        ds = self.datasets[arm.dataset_key(seed)]
        run_dir, train_cfg = self._arm_train_config(arm, seed)
        meta = {"name": arm.name, "arm": arm.name, "seed": seed, "source": arm.source, "annotator": arm.annotator,
                "budget_tokens": arm.budget_tokens, "repeat": arm.repeat, "dataset": ds["prefix"],
                "selected_tokens": ds["selected_tokens"], "selected_documents": ds["selected_documents"]}
        _, skipped = self._run_training(f"{arm.name} seed {seed} ({progress})", run_dir, train_cfg, meta,
                                        arm.describe())
        return int(skipped)

    def _run_training(self, label, run_dir, train_cfg, meta, what):
        """Train (or resume) one run folder, check its token count, measure its final checkpoint, write result.json.
        A finished run with the same fingerprint is read back; another fingerprint is refused.
        Returns (result, skipped)."""
        fp = self._fingerprint(train_cfg)
        result_path = os.path.join(run_dir, "result.json")
        if os.path.exists(result_path):
            old = _read_json(result_path)
            if old.get("fingerprint") == fp:
                self.log(f"{label}: finished earlier, skipped ({run_dir})")
                return old, True
            raise RecipeError(f"{run_dir} holds a finished run of another config (fingerprint {old.get('fingerprint')} "
                              f"!= {fp}); delete that folder or give another --output")
        os.makedirs(run_dir, exist_ok=True)
        cfg_path = os.path.join(run_dir, "train.yaml")
        atomic_write_text(cfg_path, yaml.safe_dump(train_cfg, sort_keys=False))
        steps = train_cfg["phases"][0]["steps"]
        self.log(f"{label}: training {steps} steps on {what} -> {run_dir}")
        segments = os.path.join(run_dir, "segments.jsonl")
        earlier = _read_segments(segments)
        t0 = time.time()
        try:
            self._launch(cfg_path, run_dir, label)
        finally:  # an interrupted segment's time counts too, when the rerun resumes it
            _append_segment(segments, time.time() - t0)
        seconds = time.time() - t0
        before = _seconds_before_resume(os.path.join(run_dir, "log", "metrics.jsonl"), earlier)
        trained = self._check_tokens(run_dir, steps, label)
        t1 = time.time()
        measures = self._measure(os.path.join(run_dir, "ckpt"))
        result = dict(meta, fingerprint=fp, steps=steps, global_batch_size=self.gbs, seq_len=self.seq_len,
                      tokens=steps * self.gbs * self.seq_len, **trained, measures=measures,
                      seconds_train=round(before + seconds, 1), seconds_train_before_resume=round(before, 1),
                      seconds_measure=round(time.time() - t1, 1),
                      finished=time.strftime("%Y-%m-%d %H:%M:%S"))
        _write_json(result_path, result)
        self.log(f"{label}: held-out loss {measures['heldout_loss']:.4f}, benchmark-solution loss "
                 + ", ".join(f"{k} {v:.4f}" for k, v in measures["benchmark_loss"].items())
                 + f" ({before + seconds:.0f} s training"
                 + (f", {before:.0f} s of it before the resume)" if before else ")"))
        if meta["name"] != "base" and not self.cfg.runner.keep_checkpoints:
            shutil.rmtree(os.path.join(run_dir, "ckpt"), ignore_errors=True)
        return result, False

    def _launch(self, cfg_path, run_dir, label):
        if self.cfg.runner.launcher == "inprocess":
            from megasnow.parallel import state
            from megasnow.train.__main__ import train
            from megasnow.train.config import load_train_config

            tcfg = load_train_config(cfg_path)
            state.init_distributed()
            try:
                rc = train(tcfg)
            finally:
                state.shutdown()
        else:
            rc = self._subprocess(cfg_path, run_dir, label)
        if rc == 130:
            raise KeyboardInterrupt
        if rc != 0:
            raise RecipeError(f"{label}: megasnow.train exited with {rc}; see {os.path.join(run_dir, 'train.log')}")

    def _subprocess(self, cfg_path, run_dir, label):
        """`python -m megasnow.train train.yaml` (or runner.command + train.yaml), its output appended to train.log and
        echoed with the run's label. The child runs in its own session: a SIGINT (Ctrl-C, or `kill -INT` of this
        process alone) or SIGTERM reaching this process is forwarded to it once, so it finishes its step and saves
        a checkpoint; then the interrupt is raised again (exit 130, or 143 for SIGTERM; rerun to resume)."""
        env = dict(os.environ, PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""),
                   OMP_NUM_THREADS=str(self.cfg.runner.threads), PYTHONUNBUFFERED="1")
        with open(os.path.join(run_dir, "train.log"), "a", encoding="utf-8") as logf:
            command = list(self.cfg.runner.command) or [sys.executable, "-m", "megasnow.train"]
            proc = subprocess.Popen(command + [cfg_path], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                    text=True, env=env, cwd=REPO, start_new_session=True)
            try:
                self._relay(proc, logf, label)
                return proc.wait()
            except KeyboardInterrupt as e:  # SIGINT, or SIGTERM (Terminated)
                self._interrupted(proc, logf, label, getattr(e, "signum", signal.SIGINT))
                raise
            finally:
                if proc.poll() is None:  # an error of this process's own: leave no trainer behind
                    proc.kill()
                    proc.wait()

    def _relay(self, proc, logf, label):
        """Copy the child's output lines into train.log and echo them with the run's label, until it closes."""
        for line in proc.stdout:
            logf.write(line)
            logf.flush()
            if line.strip():
                self.log(f"  {label}: {line.rstrip()}")

    def _interrupted(self, proc, logf, label, signum):
        """SIGINT or SIGTERM reached this process: pass it to the child (in its own session, it gets nothing from
        the terminal), say so at once (here and in train.log), keep relaying the child's lines while it finishes its
        step and saves (its own "interrupted" line included), and wait for it. A second Ctrl-C is passed on too and
        stops the child at once (megasnow.train's own rule), and this wait with it."""
        what = "Ctrl-C" if signum == signal.SIGINT else "SIGTERM"
        note = (f"{what}: the training run is finishing its step and saving a checkpoint (Ctrl-C again to stop at "
                f"once)")
        _send(proc, signum)
        self.log(f"{label}: {note}")
        logf.write(f"[{time.strftime('%Y-%m-%d %H:%M:%S')}] recipe_ablation: {note}\n")
        logf.flush()
        try:
            self._relay(proc, logf, label)
            proc.wait()
        except KeyboardInterrupt:
            _send(proc, signal.SIGINT)
            logf.write(f"[{time.strftime('%Y-%m-%d %H:%M:%S')}] recipe_ablation: second Ctrl-C: stopped at once\n")
            logf.flush()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()

    def _check_tokens(self, run_dir, steps, label):
        """The run's trained steps and tokens read back from its metrics.jsonl; must equal steps x gbs x seq_len."""
        from megasnow.train.metrics import read_metrics

        path = os.path.join(run_dir, "log", "metrics.jsonl")
        train = read_metrics(path)
        notes = [r.get("message", "") for r in read_metrics(path, "note")]
        want = steps * self.gbs * self.seq_len
        last = train[-1] if train else {}
        if last.get("step") != steps or last.get("tokens") != want:
            raise RecipeError(f"{label}: trained {last.get('step')} steps / {last.get('tokens')} tokens, not the "
                              f"{steps} steps / {want} tokens every arm must train (see {path})")
        return {"tokens_logged": last["tokens"], "final_train_loss": last["loss"], "coverage": notes}

    def _measure(self, checkpoint):
        import torch

        from megasnow.eval.tasks import load_benchmark
        from megasnow.recipe.measures import measure_checkpoint

        torch.set_num_threads(self.cfg.runner.threads)
        m = self.cfg.measure
        benches = []
        for spec in m.benchmarks:
            b = load_benchmark(spec)
            if b.name in [x.name for x in benches]:
                b.name = f"{b.name}_{len(benches)}"
            benches.append(b)
        p1 = (m.pass_at_1_tasks, m.pass_at_1_max_tokens) if m.pass_at_1 else None
        return measure_checkpoint(checkpoint, self.cfg.data.tokenizer, self.valid_prefix, self.seq_len, benches,
                                  pass_at_1=p1, device=self.device)

    # ------------------------------------------------------------------ summary
    def summarize(self, base=None):
        return summarize(self.out, base)


@contextlib.contextmanager
def _signals_as_exceptions():
    """While the runner runs: SIGTERM raises megasnow.utils.cli.Terminated, a KeyboardInterrupt (as SIGINT does), so
    the runner passes it on to a training child instead of dying and leaving the child to train on; run_tool then
    ends with `terminated (SIGTERM)` and exit 143, as every tool. Only in the main thread (signal handlers cannot be
    set elsewhere); the previous handler comes back after."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = raise_on_sigterm()
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _send(proc, signum):
    """Send `signum` to a child that may have exited already."""
    if proc.poll() is None:
        try:
            proc.send_signal(signum)
        except ProcessLookupError:
            pass


def _read_segments(path):
    """Wall seconds of the earlier launches of a run (segments.jsonl, one {"seconds": s} per launch)."""
    if not os.path.exists(path):
        return 0.0
    total = 0.0
    with open(path, encoding="utf-8") as f:
        for line in f:
            try:
                total += float(json.loads(line)["seconds"])
            except (ValueError, KeyError, TypeError):
                continue  # a line cut by a kill
    return total


def _append_segment(path, seconds):
    with open(path, "a", encoding="utf-8") as f:
        f.write(json.dumps({"seconds": round(seconds, 3), "ended": time.strftime("%Y-%m-%d %H:%M:%S")}) + "\n")


def _seconds_before_resume(metrics_path, earlier_wall=0.0):
    """Training seconds of a run's launches before this one: the wall time of the earlier launches as the runner
    recorded them (`earlier_wall`, segments.jsonl; counted whether or not this launch resumed a checkpoint: a
    launch interrupted after its last step, during the final evaluation, leaves no `resume` record but its time
    counts), or, when metrics.jsonl has a `resume` record, at least the step times (step_time_s) of the steps up to
    the resumed step as megasnow.train logged them (kept across resumes; a launch killed too hard to record its
    time still counts by its steps)."""
    from megasnow.train.metrics import read_metrics

    if not os.path.exists(metrics_path):
        return float(earlier_wall)
    resumes = read_metrics(metrics_path, "resume")
    if not resumes:
        return float(earlier_wall)
    at = resumes[-1]["step"]
    steps = float(sum(r.get("step_time_s") or 0.0 for r in read_metrics(metrics_path) if r["step"] <= at))
    return max(earlier_wall, steps)


def repetition_warnings(plan, datasets=None):
    """Warnings (lines) for arms that will not see their data the number of times they say: an arm of `repeat` R
    trains plan["tokens_per_arm"] tokens, meant to be R passes over its selection. Before selection (`datasets`
    None) the selection is taken as its budget (ablation.steps set too low); after it, datasets ({data key:
    {"selected_tokens", "selected_documents"}}, data/datasets.json) give the real sizes: a selection far over its
    budget (documents large next to it) makes every arm train less than one pass, and selected and selected_once
    may then hold the same documents, so the repetition comparison compares nothing."""
    tokens = plan["tokens_per_arm"]
    out, seen = [], {}
    for r in plan["runs"]:
        if r["arm"] in seen:
            continue
        ds = (datasets or {}).get(r["data"])
        size = ds["selected_tokens"] if ds else r["budget_tokens"]
        seen[r["arm"]] = (r, ds)
        passes = tokens / size if size else 0.0
        if passes < 0.9 * r["repeat"]:
            what = (f"its {size:,}-token selection ({ds['selected_documents']} documents for a "
                    f"{r['budget_tokens']:,}-token budget)" if ds else f"its {size:,}-token budget")
            out.append(f"warning: arm {r['arm']} is meant to see its data {r['repeat']} time(s) but trains "
                       f"{tokens:,} tokens = {passes:.2f} passes over {what}: the repetition comparison is not what "
                       f"it says" + ("; the selection overshoots its budget (documents are large next to it): "
                                     "raise ablation.budget_tokens or use smaller documents" if ds and
                                     size > 1.1 * r["budget_tokens"] else "; raise ablation.steps or leave it unset"))
    arms = list(seen.values())
    for i, (a, da) in enumerate(arms):
        for b, db in arms[i + 1:]:
            if (da and db and a["source"] == b["source"] == "selected" and a["annotator"] == b["annotator"]
                    and a["repeat"] != b["repeat"] and da["selected_tokens"] == db["selected_tokens"]
                    and da["selected_documents"] == db["selected_documents"]):
                out.append(f"warning: arms {a['arm']} and {b['arm']} train on the same {da['selected_documents']} "
                           f"documents ({da['selected_tokens']:,} tokens): their budgets select the same set, so they "
                           f"differ in nothing but the sample order")
    return out


def _schedule_dict(s):
    from dataclasses import asdict

    return asdict(s)


def summarize(out_dir, base=None):
    """summary.json's content from the run folders under `out_dir`: per arm the measures of each seed, their spread,
    the comparisons the recipe asks about (selected vs random, selected vs selected_once), the annotators' ROC-AUC."""
    plan = _read_json(os.path.join(out_dir, "plan.json"))
    if base is None and os.path.exists(os.path.join(out_dir, "base", "result.json")):
        base = _read_json(os.path.join(out_dir, "base", "result.json"))
    arms = {}
    for r in plan["runs"]:
        path = os.path.join(out_dir, r["folder"], "result.json")
        if os.path.exists(path):
            arms.setdefault(r["arm"], {})[r["seed"]] = _read_json(path)
    stats = {}
    for name, seeds in arms.items():
        ms = [res["measures"] for res in seeds.values()]
        s = {"seeds": sorted(seeds), "heldout_loss": describe([x["heldout_loss"] for x in ms]),
             "benchmark_loss": {b: describe([x["benchmark_loss"][b] for x in ms]) for b in ms[0]["benchmark_loss"]},
             "tokens": sorted({res["tokens"] for res in seeds.values()})}
        if "pass@1" in ms[0]:
            s["pass@1"] = {b: describe([x["pass@1"][b] for x in ms]) for b in ms[0]["pass@1"]}
        stats[name] = s
    comparisons = []
    pairs = [("selected", "random"), ("selected", "selected_once")]
    pairs += [(a["name"], "selected") for a in plan["arms"] if a["name"].startswith("selected@")]
    for a, b in pairs:
        if a in arms and b in arms:
            ma = [r["measures"] for r in arms[a].values()]
            mb = [r["measures"] for r in arms[b].values()]
            for bench in ma[0]["benchmark_loss"]:
                comparisons.append({"a": a, "b": b, "measure": f"{bench} solution loss",
                                    **compare([x["benchmark_loss"][bench] for x in ma],
                                              [x["benchmark_loss"][bench] for x in mb], a, b)})
            comparisons.append({"a": a, "b": b, "measure": "held-out loss",
                                **compare([x["heldout_loss"] for x in ma], [x["heldout_loss"] for x in mb], a, b)})
    alignment = {}
    for name in plan["annotators"]:
        p = os.path.join(out_dir, "quality", name, "alignment.json")
        if os.path.exists(p):
            al = _read_json(p)
            alignment[name] = {"roc_auc": {k: v["roc_auc"] for k, v in al["benchmarks"].items()},
                               "random_files": al["random_files"], "held_out": al.get("held_out")}
    token_counts = sorted({t for s in stats.values() for t in s["tokens"]})
    return {"plan": {k: plan[k] for k in ("steps", "global_batch_size", "seq_len", "tokens_per_arm", "token_matching",
                                          "seeds", "benchmarks")},
            "tokens_matched": len(token_counts) <= 1, "base": base["measures"] if base else None,
            "arms": stats, "comparisons": comparisons, "alignment": alignment,
            "runs_finished": sum(len(v) for v in arms.values()), "runs_planned": len(plan["runs"])}

