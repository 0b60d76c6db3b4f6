"""Runs the GPU suite (benchmarks/gpu_suite.sh): the tasks of benchmarks/gpu/plan.py in order, each under its own
cap and all under one deadline; output streamed to the console and OUT/suite.log; the summary rewritten and the
results packed after every task, so a run cut off at any point still returns what it measured.

OUT gets at most 8 files (what the device tool brings back): suite.log, summary.md, summary.csv, summary.json,
kernels.csv, kernels.png and results.tar.gz (every task's outputs and log). The work folder (--work) keeps the
prepared data, the installed wheels and the Megatron-LM source between runs on the same machine.
"""
import json
import os
import shutil
import signal
import subprocess
import sys
import tarfile
import threading
import time

from benchmarks.gpu import summary
from benchmarks.gpu.image_sim.modules import allowed
from benchmarks.gpu.plan import DRY_DEADLINE_S, GPU_DEADLINE_S, STEPS, Paths, build_plan, select
from megasnow.utils.cli import ArgumentParser, fail, run_tool

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
OUT_FILES = ("suite.log", "summary.md", "summary.csv", "summary.json", "kernels.csv", "kernels.png",
             "results.tar.gz")
SUMMARY_RESERVE_S = 5  # kept at the end of the deadline for the last summary and packing


class Runner:
    def __init__(self, args, paths, tasks):
        self.args, self.p, self.tasks = args, paths, tasks
        self.dry = args.dry_run
        self.deadline = args.deadline or (DRY_DEADLINE_S if self.dry else GPU_DEADLINE_S)
        self.t0 = time.monotonic()
        self.records = {}
        self.child = None
        self.log = open(os.path.join(paths.out, "suite.log"), "ab", buffering=0)
        self.lock = threading.Lock()

    # ------------------------------------------------------------------------------------------ output
    def write(self, data: bytes, task_log=None):
        with self.lock:
            sys.stdout.buffer.write(data)
            sys.stdout.buffer.flush()
            self.log.write(data)
            if task_log:
                task_log.write(data)

    def say(self, msg):
        m, s = divmod(int(self.elapsed()), 60)
        self.write(f"[gpu-suite +{m}:{s:02d}] {msg}\n".encode())

    def elapsed(self):
        return time.monotonic() - self.t0

    # ------------------------------------------------------------------------------------------ tasks
    def env_for(self, task):
        env = dict(os.environ)
        paths = [ROOT, self.p.site]
        if self.dry and task.image_sim and not self.args.no_image_sim:
            paths.insert(0, os.path.join(ROOT, "benchmarks", "gpu", "image_sim"))
            env["GPU_IMAGE_SIM_WHEELS"] = self.p.wheels  # carried = what is in this folder
        env["PYTHONPATH"] = os.pathsep.join(paths + [x for x in [env.get("PYTHONPATH", "")] if x])
        env.update(PYTHONUNBUFFERED="1", HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", TOKENIZERS_PARALLELISM="false",
                   MPLBACKEND="Agg", PYTHONDONTWRITEBYTECODE="1")
        if self.dry:  # the same steps on the CPU: no GPU even where one is present, kernels in the interpreter
            env.update(CUDA_VISIBLE_DEVICES="", TRITON_INTERPRET="1")
            env.setdefault("OMP_NUM_THREADS", "1")
        else:
            env["TRITON_INTERPRET"] = "0"
        env.update(task.env)
        return env

    def run(self, task):
        remaining = self.deadline - self.elapsed() - SUMMARY_RESERVE_S
        rec = dict(step=task.step, cap_s=task.cap_s, rc=None, seconds=None, note=task.note,
                   command=" ".join(task.argv or []))
        if task.argv is None:
            rec["status"] = "not-built"
            self.say(f"step {task.step} {STEPS[task.step]} > {task.name}: not built ({task.note})")
            return rec
        if remaining < 10:
            rec.update(status="not-run", note=f"the suite's {self.deadline}s deadline came first")
            self.say(f"step {task.step} {STEPS[task.step]} > {task.name}: NOT RUN ({rec['note']})")
            return rec
        missing = self.missing_modules(task)
        if missing:  # a wheel not carried: say so in one line instead of spending the task's cap on an ImportError
            wheels = sorted({task.requires[m] for m in missing})
            rec.update(status="not-run", note=f"wheels not in {self.p.wheels}: {', '.join(wheels)} (the GPU image "
                                              "lacks them; scripts/prepare_gpu_wheels.sh downloads them)")
            self.say(f"step {task.step} {STEPS[task.step]} > {task.name}: NOT RUN ({rec['note']})")
            return rec
        timeout = min(task.cap_s, remaining)
        self.say(f"step {task.step} {STEPS[task.step]} > {task.name}: start (cap {timeout:.0f}s)")
        t0 = time.monotonic()
        with open(os.path.join(self.p.logs, f"{task.name}.log"), "wb") as task_log:
            task_log.write(f"$ {rec['command']}\n".encode())
            self.child = subprocess.Popen(task.argv, cwd=ROOT, env=self.env_for(task), stdout=subprocess.PIPE,
                                          stderr=subprocess.STDOUT, start_new_session=True)
            reader = threading.Thread(target=self._pump, args=(self.child.stdout, task_log), daemon=True)
            reader.start()
            try:
                rc = self.child.wait(timeout=timeout)
                status = "ok" if rc == 0 else "failed"
            except subprocess.TimeoutExpired:
                self._kill()
                rc, status = None, "timeout"
            finally:
                reader.join(timeout=10)
                self.child = None
        rec.update(status=status, rc=rc, seconds=round(time.monotonic() - t0, 1))
        word = {"ok": "done", "failed": f"FAILED (exit status {rc})", "timeout": f"TIMED OUT after {timeout:.0f}s"}
        self.say(f"step {task.step} {STEPS[task.step]} > {task.name}: {word[status]} in {rec['seconds']:.0f}s")
        return rec

    def missing_modules(self, task):
        """The task's required modules that its environment cannot import: on the GPU, what neither the image nor
        the installed wheels hold; in the dry run, what the GPU-image check refuses for this wheels folder."""
        if not task.requires:
            return []
        if self.dry:  # what the GPU image would lack; this machine's own versions may need other modules
            if self.args.no_image_sim or not task.image_sim:
                return []
            ok = allowed(sys.stdlib_module_names, self.p.wheels)
            return [m for m in task.requires if m not in ok]
        code = ("import importlib.util, sys\n"
                "print(' '.join(m for m in sys.argv[1:] if importlib.util.find_spec(m) is None))")
        res = subprocess.run([sys.executable, "-c", code, *task.requires], cwd=ROOT, env=self.env_for(task),
                             capture_output=True, text=True, timeout=60)
        if res.returncode != 0:  # the check itself failed: let the task run and show its own error
            return []
        return res.stdout.split()

    def _pump(self, stream, task_log):
        for chunk in iter(lambda: stream.read1(65536), b""):
            self.write(chunk, task_log)

    def _kill(self):
        if self.child is None or self.child.poll() is not None:
            return
        for sig, wait in ((signal.SIGTERM, 5), (signal.SIGKILL, 5)):
            try:
                os.killpg(self.child.pid, sig)
            except ProcessLookupError:
                return
            try:
                self.child.wait(timeout=wait)
                return
            except subprocess.TimeoutExpired:
                continue

    # ------------------------------------------------------------------------------------------ results
    def publish(self):
        """Summary (md, csv, json), the kernels CSV and plot, and every result and log packed into OUT."""
        with open(os.path.join(self.p.results, "tasks.json"), "w") as f:
            json.dump(self.records, f, indent=1)
        head, rows = summary.build(self.p.results, self.records, self.dry, self.deadline, self.elapsed())
        _write(os.path.join(self.p.out, "summary.md"), summary.to_markdown(head, rows))
        _write(os.path.join(self.p.out, "summary.csv"), summary.to_csv(rows))
        _write(os.path.join(self.p.out, "summary.json"), json.dumps({"header": head, "rows": rows}, indent=1))
        for name in ("kernels.csv", "kernels.png"):
            src = os.path.join(self.p.results, name)
            if os.path.exists(src):
                shutil.copyfile(src, os.path.join(self.p.out, name + ".tmp"))
                os.replace(os.path.join(self.p.out, name + ".tmp"), os.path.join(self.p.out, name))
        tmp = os.path.join(self.p.out, "results.tar.gz.tmp")
        with tarfile.open(tmp, "w:gz") as tar:
            for folder in (self.p.results, self.p.logs):
                tar.add(folder, arcname=os.path.basename(folder))
        os.replace(tmp, os.path.join(self.p.out, "results.tar.gz"))
        return head, rows

    def main(self):
        mode = "DRY RUN on CPU (TRITON_INTERPRET=1, smallest sizes)" if self.dry else "GPU run"
        self.say(f"{mode}: {len(self.tasks)} tasks, deadline {self.deadline}s; outputs in {self.p.out}, "
                 f"work folder {self.p.work}")
        rows = []
        try:
            for task in self.tasks:
                self.records[task.name] = self.run(task)
                _, rows = self.publish()
        finally:
            self._kill()
            for t in self.tasks:  # a run stopped from outside: say what never started
                self.records.setdefault(t.name, dict(step=t.step, cap_s=t.cap_s, status="not-run", rc=None,
                                                     seconds=None, note="the suite was stopped before it"))
            head, rows = self.publish()
        text = summary.to_markdown(head, rows)
        self.write(("\n" + text).encode())
        errors = [r for r in rows if r["status"] == summary.ERROR]
        self.say(f"finished in {self.elapsed():.0f}s: {len(rows)} rows, {len(errors)} ERROR; "
                 f"{', '.join(OUT_FILES)} in {self.p.out}")
        return 1 if errors else 0


def _write(path, text):
    with open(path + ".tmp", "w") as f:
        f.write(text)
    os.replace(path + ".tmp", path)


def _on_sigterm(signum, frame):
    raise SystemExit(128 + signum)  # unwinds through Runner.main's finally: child killed, results published


def parse_args(argv=None):
    p = ArgumentParser(prog="gpu_suite.sh", description=__doc__)
    p.add_argument("--dry-run", action="store_true",
                   help="the same steps on the CPU at the smallest sizes (Triton interpreter; no PASS is reported)")
    p.add_argument("--only", default=None,
                   help="comma-separated steps to run (1-6; set-up always runs), e.g. --only 2,3 for a rerun")
    p.add_argument("--out", default=os.environ.get("OUT") or os.path.join(ROOT, "out", "gpu_suite"),
                   help="output folder (the device tool sets $OUT)")
    p.add_argument("--work", default=None,
                   help="work folder (default: $TMPDIR/megasnow-gpu-suite[-dry]); data and wheels are reused")
    p.add_argument("--wheels", default=None, help="folder of carried wheels (default: .whl in the repository)")
    p.add_argument("--deadline", type=int, default=None,
                   help=f"seconds for the whole suite (default {GPU_DEADLINE_S} on the GPU, {DRY_DEADLINE_S} dry)")
    p.add_argument("--no-image-sim", action="store_true",
                   help="dry run: do not restrict imports to what the GPU machine's image holds")
    p.add_argument("--list", action="store_true", help="print the plan (tasks, caps, commands) and exit")
    args = p.parse_args(argv)
    if args.only:
        try:
            args.only = sorted({int(s) for s in args.only.split(",") if s.strip()})
        except ValueError:
            args.only = [-1]
        if not args.only or not set(args.only) <= set(range(0, 7)):
            fail(f"--only {','.join(map(str, args.only))}: give steps from 1 to 6, comma-separated")
    if args.deadline is not None and args.deadline < 30:
        fail(f"--deadline {args.deadline}: give at least 30 seconds")
    return args


def main(argv=None):
    args = parse_args(argv)
    tmp = os.environ.get("TMPDIR", "/tmp")
    work = os.path.abspath(args.work or os.path.join(tmp, "megasnow-gpu-suite" + ("-dry" if args.dry_run else "")))
    paths = Paths(repo=ROOT, work=work, out=os.path.abspath(args.out),
                  wheels=os.path.abspath(args.wheels) if args.wheels else "")
    tasks = select(build_plan(args.dry_run, paths, os.cpu_count() or 1), args.only)
    if args.list:
        for t in tasks:
            cmd = " ".join(t.argv) if t.argv else f"(not built: {t.note})"
            print(f"step {t.step} {t.name:13s} cap {t.cap_s:4d}s  expected (H100) {t.expected_s:4d}s  {cmd}")
        print(f"sum of expected times: {sum(t.expected_s for t in tasks if t.argv)}s; caps sum to "
              f"{sum(t.cap_s for t in tasks if t.argv)}s under a deadline of "
              f"{args.deadline or (DRY_DEADLINE_S if args.dry_run else GPU_DEADLINE_S)}s")
        return 0
    os.makedirs(paths.out, exist_ok=True)
    for name in OUT_FILES:  # a previous run's outputs would mix with this one's
        if os.path.exists(os.path.join(paths.out, name)):
            os.unlink(os.path.join(paths.out, name))
    for folder in (paths.results, paths.logs):
        shutil.rmtree(folder, ignore_errors=True)
        os.makedirs(folder)
    signal.signal(signal.SIGTERM, _on_sigterm)
    return Runner(args, paths, tasks).main()


if __name__ == "__main__":
    sys.exit(run_tool(main, prog="gpu_suite.sh"))
