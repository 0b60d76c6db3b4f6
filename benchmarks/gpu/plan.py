"""The GPU suite's plan: every task's command, sizes and time budget, for the GPU run and for --dry-run (CPU).

Steps follow issue 12: 0 set-up, 1 correctness on the device, 2 kernel benchmarks, 3 training throughput,
4 annotator throughput, 5 serving throughput, 6 CPU scaling, 7 summary. Each task runs under its own cap
(`cap_s`); the runner also keeps the whole run inside one deadline (9 minutes on the GPU), squeezing or skipping
what comes last. `expected_s` is the estimate for an H100/H200 (benchmarks/results/gpu_suite.md shows how each
was derived); the caps leave room for a slow start. Change sizes here, in one place.
"""
import importlib.util
import os
import sys
from dataclasses import dataclass, field

STEPS = {0: "set-up", 1: "correctness on the device", 2: "kernel benchmarks", 3: "training throughput",
         4: "annotator throughput", 5: "serving throughput", 6: "CPU scaling", 7: "summary"}

GPU_DEADLINE_S = 540  # the whole suite, build included: 9 minutes
DRY_DEADLINE_S = 900  # generous: the dry run is sized to take under 3 minutes on 2 cores

SERVE_SCRIPT = os.path.join("benchmarks", "serve_throughput.py")
# megasnow.serve (FastAPI on uvicorn) and its client (the openai SDK): not on the GPU image, carried as wheels
SERVE_REQUIRES = {"fastapi": "fastapi", "starlette": "starlette", "uvicorn": "uvicorn", "pydantic": "pydantic",
                  "pydantic_core": "pydantic-core", "openai": "openai", "jiter": "jiter", "distro": "distro",
                  "sniffio": "sniffio"}


@dataclass
class Task:
    step: int
    name: str
    argv: list | None  # None: not built (the script it needs does not exist)
    cap_s: int
    expected_s: int  # GPU estimate (documentation; the dry run has its own caps)
    env: dict = field(default_factory=dict)
    image_sim: bool = True  # run under the GPU-image import check in --dry-run
    note: str = ""
    # modules the task cannot run without that the GPU image lacks: {module: wheel}; missing ones make it NOT RUN
    requires: dict = field(default_factory=dict)


@dataclass
class Paths:
    repo: str
    work: str  # scratch: data, installed wheels, Megatron-LM source (kept between runs), results, logs
    out: str  # what comes back: at most 8 files (the device tool's limit)
    wheels: str = ""  # the carried wheel folder (default: REPO/.whl)

    def __post_init__(self):
        self.wheels = self.wheels or os.path.join(self.repo, ".whl")

    @property
    def results(self):
        return os.path.join(self.work, "results")

    @property
    def logs(self):
        return os.path.join(self.work, "logs")

    @property
    def data(self):
        return os.path.join(self.work, "data")

    @property
    def site(self):
        return os.path.join(self.work, "site")

    @property
    def megatron(self):
        return os.path.join(self.work, "megatron-lm")

    @property
    def encoder(self):
        return os.path.join(self.work, "encoder")

    def result(self, name):
        return os.path.join(self.results, name)


KERNEL_TEST_SKIPS = ("test_bench_kernels_cli.py", "test_kernels_compile_sm90.py", "test_kernel_dispatch.py")


def build_plan(dry_run: bool, p: Paths, cores: int):
    """The ordered task list."""
    py = sys.executable
    r = p.result
    dev = "cpu" if dry_run else "cuda"
    tasks = []

    def add(step, name, argv, cap, expected, env=None, dry_cap=None, **kw):
        tasks.append(Task(step, name, argv, dry_cap if dry_run and dry_cap else cap, expected, env or {}, **kw))

    # 0 set-up: carried wheels, the C++ extension (built in place for this Python), what the machine is
    add(0, "wheels", [py, "-m", "benchmarks.gpu.prepare", "wheels", "--wheels", p.wheels, "--site", p.site,
                      "--megatron-dest", p.megatron, "--encoder-dest", p.encoder, "--out", r("setup.json")],
        cap=60, expected=10, dry_cap=120, image_sim=False)  # the CPU-side preparation needs no image check
    add(0, "build", [py, "-m", "benchmarks.gpu.prepare", "build", "--out", r("build.json"), "--wheels", p.wheels]
        + (["--if-missing"] if dry_run else []),
        cap=120, expected=25, dry_cap=300, env={"MEGASNOW_BUILD_JOBS": str(cores)})
    add(0, "env", [py, "-m", "benchmarks.gpu.env_report", "--out", r("env.json"), "--device", dev,
                   "--mode", "dry-run" if dry_run else "gpu"], cap=45, expected=10, dry_cap=120)

    # 1 correctness: kernel tests compiled for the device (bf16 + fp32, odd shapes), the whole model, bf16 vs fp32
    ignores = [f"--ignore=tests/kernels/{name}" for name in KERNEL_TEST_SKIPS]
    have_xdist = importlib.util.find_spec("xdist") is not None  # pytest-xdist: on the GPU image
    xdist = ["-n", str(min(8, cores))] if have_xdist and not dry_run and cores >= 4 else []  # compile in parallel
    # the dry run takes one file: CI runs all kernel tests in the interpreter anyway; this proves the plumbing
    tests = ["tests/kernels/test_rms_norm_kernel.py"] if dry_run else ["tests/kernels", *ignores]
    add(1, "kernel-tests", [py, "-m", "pytest", "-q", "-p", "no:cacheprovider", *xdist, *tests,
                            f"--junitxml={r('kernel_tests.xml')}"],
        cap=120, expected=45, dry_cap=300,
        env={"MEGASNOW_TEST_DEVICE": dev})
    model = (["--presets", "tiny-gqa", "--layers", "2", "--batch", "1", "--seq", "16"] if dry_run
             else ["--presets", "snowcoder-1.3b", "llama-1b-gqa", "--layers", "2", "--batch", "2", "--seq", "2048"])
    add(1, "model-check", [py, "-m", "benchmarks.gpu.model_check", "--device", dev, *model,
                           "--out", r("model_check.json")], cap=90, expected=20, dry_cap=300)
    data = (["--mb", "2", "--vocab", "2000", "--sentences", "20000"] if dry_run
            else ["--mb", "32", "--vocab", "32000", "--sentences", "200000"])
    add(1, "data", [py, "-m", "benchmarks.gpu.data", "--work", p.work, *data], cap=90, expected=20, dry_cap=300)
    vocab = data[data.index("--vocab") + 1]
    prec = (["--steps", "6", "--warmup", "2", "--lr", "3e-3", "--hidden", "64", "--layers", "2", "--heads", "4",
             "--ffn", "176", "--seq", "64", "--micro-batch", "2", "--global-batch", "2", "--min-drop", "0.01",
             "--timeout", "300"] if dry_run else
            ["--steps", "60", "--warmup", "10", "--lr", "1e-3", "--hidden", "512", "--layers", "4", "--heads", "8",
             "--ffn", "1408", "--seq", "1024", "--micro-batch", "8", "--global-batch", "16", "--timeout", "60"])
    add(1, "precision", [py, "-m", "benchmarks.gpu.precision_check", "--dataset", os.path.join(p.data,
                         "code_text_document"), "--vocab", vocab, "--work", os.path.join(p.work, "precision"),
                         "--out", r("precision.json"), "--device", dev, *prec], cap=120, expected=40, dry_cap=400)

    # 2 kernel benchmarks at the 1.3B shapes: largest token count first (the targets are read there)
    kern = (["--quick", "--tokens", "4", "--reps", "1"] if dry_run else
            ["--tokens", "32768,8192", "--compile-tokens", "32768", "--compile-modes", "bwd,fwdbwd",
             "--warmup-ms", "10", "--rep-ms", "50"])
    add(2, "kernels", [py, "tools/bench_kernels.py", "--device", dev, *kern, "--out", r("kernels")],
        cap=180, expected=100, dry_cap=300)

    # 3 training throughput: 1.3B at seq 8192, megasnow vs HF SDPA (and + Liger), then the real trainer
    train = (["--seq-lens", "64", "--steps", "1", "--warmup", "1", "--trainer-steps", "2", "--child-timeout", "300"]
             if dry_run else
             ["--seq-lens", "8192", "--steps", "4", "--warmup", "2", "--max-micro-batch", "2", "--trainer-steps",
              "4", "--child-timeout", "90"])
    add(3, "train", [py, "benchmarks/train_throughput.py", "--device", dev, *train, "--out", r("train_throughput")],
        cap=210, expected=120, dry_cap=500)

    # 4 annotator scoring: megasnow's batched scorer vs the plain HF loop (random weights: see encoder_skeleton)
    ann = (["--files", "6", "--slice", "3", "--repeats", "1", "--threads", "1", "--max-length", "128"] if dry_run
           else ["--files", "256", "--slice", "64", "--repeats", "2", "--threads", "8", "--batch-tokens", "16384"])
    add(4, "annotator", [py, "benchmarks/annotate_throughput.py", "--device", dev, *ann, "--encoder", p.encoder,
                         "--random-weights", "--csv", r("annotate.csv")], cap=90, expected=35, dry_cap=300)

    # 5 serving: aggregate tokens/s at 1 and 32 concurrent requests, once benchmarks/serve_throughput.py exists
    serve = None
    if os.path.exists(os.path.join(p.repo, SERVE_SCRIPT)):
        model = ["--model", "tiny", "--max-tokens", "16", "--repeats", "1"] if dry_run else ["--model", "random-135m"]
        serve = [py, SERVE_SCRIPT, "--device", dev, "--concurrency", "1,32", *model, "--out", r("serve.json")]
    add(5, "serve", serve, cap=90, expected=60, dry_cap=300, requires=SERVE_REQUIRES,
        note="" if serve else f"{SERVE_SCRIPT} does not exist yet")

    # 6 CPU scaling on this machine's cores
    work_counts = [str(w) for w in (1, 2)] if dry_run else ["1", "4", "16"]
    threads = ["1", "2"] if dry_run else ["1", "2", "4", "8", "16"]
    add(6, "cpu-scaling", [py, "-m", "benchmarks.gpu.cpu_scaling", "--jsonl", os.path.join(p.data, "code.jsonl"),
                           "--tokenizer", os.path.join(p.data, f"code{vocab}.model"), "--out", r("cpu_scaling.json"),
                           "--workers", *work_counts, "--repeat", "2" if dry_run else "3",
                           "--megatron-lm", p.megatron, "--megatron-workers", "2" if dry_run else "16",
                           "--threads", *threads, "--minhash-repeats", "1" if dry_run else "3"],
        cap=120, expected=45, dry_cap=400)
    return tasks


def select(tasks, only):
    """Tasks of the chosen steps; set-up always runs, and the shared data task runs when step 1 or 6 does."""
    if not only:
        return tasks
    keep = set(only) | {0}
    return [t for t in tasks if t.step in keep or (t.name == "data" and keep & {1, 6})]
