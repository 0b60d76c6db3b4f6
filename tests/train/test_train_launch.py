"""Launching: the --check pre-flight (layout and input refusals before data or model, one line),
parallel.pipeline_layers in the config, under-torchrun error printing and the exit-status file, signals to the launch
scripts, the Slurm time-limit trap (with stand-in srun and scontrol), run folders made on a failed start removed, the
ETA without the first step, log.dir's default, and the small key checks and Megatron flag mappings."""
import io
import os
import signal
import subprocess
import sys
import time
from contextlib import redirect_stdout

import pytest

from megasnow.config import ConfigError
from megasnow.train.__main__ import unknown_flag_message
from megasnow.train.config import build_parallel_config, load_train_config
from megasnow.train.metrics import MetricsLogger
from megasnow.train.resume import compare_configs
from megasnow.utils.cli import run_tool
from tests.train.helpers import REPO, cli, tiny_config, train_env, write_config

LAUNCH = os.path.join(REPO, "examples", "launch")


@pytest.fixture
def run_yaml(tmp_path):
    """A valid config with a small dataset (tmp_path/code)."""
    from tests.train.helpers import real_code_files, write_byte_dataset

    prefix = write_byte_dataset(str(tmp_path / "code"), real_code_files(limit=2))
    cfg = tiny_config(tmp_path, [{"name": "only", "blend": [{"path": prefix}], "steps": 2}])
    return write_config(tmp_path / "run.yaml", cfg)



def test_check_refuses_layouts_in_one_line_before_reading_data(run_yaml, capsys, tmp_path):
    bin_file = str(tmp_path / "code.bin")
    os.rename(bin_file, bin_file + ".away")  # a missing dataset: checked too, after the layout
    code, out, err = cli(capsys, "--check", "4", run_yaml, "parallel.tensor=2", "parallel.pipeline=2")
    assert (code, out) == (2, "")
    assert err == (f"error: phases[0].blend[0].path: {bin_file} does not exist (expected an indexed dataset prefix, "
                   f"as written by tools/preprocess_data.py)\n")
    code, _, err = cli(capsys, "--check", "4", run_yaml, "parallel.tensor=3")  # the layout is checked first
    assert code == 2 and err.startswith("error: world size 4 is not divisible by tensor x pipeline = 3 x 1")
    os.rename(bin_file + ".away", bin_file)
    code, out, err = cli(capsys, "--check", "4", run_yaml, "parallel.tensor=2", "parallel.pipeline=2")
    assert (code, err) == (0, "")
    assert out == ("megasnow.train: config, inputs and layout OK for 4 process(es): tensor 2 x pipeline 2 x data 1, 2 "
                   "micro-batch(es) of 2 per step per data-parallel rank, 2 layers\n")
    refusals = {
        ("3", "parallel.tensor=3"): "error: tensor-parallel size 3 does not divide model.num_heads (4)",
        ("4", "parallel.pipeline=4"): "error: 4 pipeline stages (pipeline 4 x virtual 1) exceed model.num_layers (2)",
        ("2", "parallel.pipeline=2", "model.num_layers=3"):
            "error: model.num_layers (3) is not divisible by the 2 pipeline stages",
        ("3", "parallel.tensor=2"): "error: world size 3 is not divisible by tensor x pipeline = 2 x 1",
        ("2", "parallel.tensor=0"): "error: parallel.tensor must be an integer >= 1, got 0",
        ("2", "parallel.virtual_pipeline=2"): "error: parallel.virtual_pipeline=2 (interleaved schedule) needs "
                                              "parallel.pipeline >= 2",
        ("2", "parallel.pipeline=2", "parallel.pipeline_layers=[1,1,1]"):
            "error: parallel.pipeline_layers [1, 1, 1] must list 2 layer counts >= 1, one per pipeline stage "
            "(pipeline 2 x virtual 1) in model order, adding up to model.num_layers (2); it lists 3 adding up to 3",
        ("2", "parallel.pipeline=2", "parallel.pipeline_layers=[1,2]"):
            "error: parallel.pipeline_layers [1, 2] must list 2 layer counts >= 1, one per pipeline stage "
            "(pipeline 2 x virtual 1) in model order, adding up to model.num_layers (2); it lists 2 adding up to 3",
        ("2", "parallel.pipeline=2", "parallel.virtual_pipeline=2", "model.num_layers=3",
         "parallel.pipeline_layers=[1,1,1]"):
            "error: 4 pipeline stages (pipeline 2 x virtual 2) exceed model.num_layers (3)",
        ("2", "parallel.pipeline=2", "parallel.virtual_pipeline=2", "model.num_layers=5",
         "parallel.pipeline_layers=[1,1,3]"):
            "error: parallel.pipeline_layers [1, 1, 3] must list 4 layer counts >= 1, one per virtual stage "
            "(pipeline 2 x virtual 2) in model order, adding up to model.num_layers (5)",
        ("2", "parallel.pipeline=2", "parallel.pipeline_layers=[0,2]"):
            "error: parallel.pipeline_layers [0, 2]: each count must be an integer >= 1",
        ("2", "train.eval_interval=-1"): "error: train.eval_interval must be >= 0 (0: off), got -1",
        ("2", "log.interval=-1"): "error: log.interval must be >= 0 (0: off), got -1",
    }
    for (world, *overrides), start in refusals.items():
        code, out, err = cli(capsys, "--check", world, run_yaml, *overrides)
        assert code == 2 and err.startswith(start) and len(err.splitlines()) == 1, (overrides, err)
    assert not os.path.exists(os.path.dirname(run_yaml) + "/ckpt")  # nothing made


def test_check_compares_with_the_checkpoint_to_resume_or_start_from(tmp_path, capsys):
    """--check refuses, in one line and before any data or model is built, what the trainer would refuse at start:
    a resume with changes that break it (another parallel layout: only the init_from route is offered), a missing
    checkpoint.init_from, and an init_from checkpoint of another model shape (naming the key)."""
    from tests.train.helpers import real_code_files, write_byte_dataset

    prefix = write_byte_dataset(str(tmp_path / "code"), real_code_files(limit=4))
    path = write_config(tmp_path / "run.yaml", tiny_config(tmp_path, [{"name": "only", "blend": [{"path": prefix}],
                                                                       "steps": 1}]))
    assert cli(capsys, path)[0] == 0
    step = tmp_path / "ckpt" / "step_00000001"
    code, out, err = cli(capsys, "--check", "2", path, "parallel.pipeline=2", "checkpoint.allow_config_change=true")
    assert (code, out) == (2, "")
    assert err == (f"error: {step} was trained with another parallel layout: parallel.pipeline 1 -> 2; a resume needs "
                   f"the same layout (the optimizer state is saved per shard): restore the checkpoint's values, or "
                   f"start a new run (another checkpoint.dir) with checkpoint.init_from={step} (weights only; the "
                   f"optimizer state and the data position restart)\n")
    code, _, err = cli(capsys, "--check", "1", path, "data.seed=8")
    assert code == 2 and err.startswith(f"error: {step} was trained with another config: data.seed 7 -> 8 would ")
    new_run = [f"checkpoint.dir={tmp_path / 'b'}", f"log.dir={tmp_path / 'b_log'}"]
    code, _, err = cli(capsys, "--check", "1", path, *new_run, f"checkpoint.init_from={tmp_path / 'nope'}")
    assert (code, err) == (2, f"error: checkpoint.init_from: {tmp_path / 'nope'} does not exist\n")
    code, _, err = cli(capsys, "--check", "2", path, *new_run, f"checkpoint.init_from={tmp_path / 'ckpt'}",
                       "model.num_layers=4", "parallel.pipeline=2")
    assert (code, err) == (2, f"error: model.num_layers: checkpoint.init_from {step} has 2, this run 4 (the weights' "
                              f"shapes must match: set the checkpoint's values, or drop checkpoint.init_from to start "
                              f"from random weights)\n")
    code, out, _ = cli(capsys, "--check", "2", path, *new_run, f"checkpoint.init_from={step}", "parallel.pipeline=2")
    assert code == 0 and out.startswith("megasnow.train: config, inputs and layout OK for 2 process(es)")
    # the trainer refuses the same before building data or model
    code, _, err2 = cli(capsys, path, *new_run, f"checkpoint.init_from={step}", "model.num_layers=4")
    assert (code, err2) == (2, err)
    assert not os.path.exists(tmp_path / "b")
    code, _, err = cli(capsys, "--check", "1", path, "checkpoint.dir=null")  # log.dir holds the first run's metrics
    assert code == 2 and err.startswith(f"error: log.dir {tmp_path / 'log'} holds the metrics of another run ")


def test_sequence_parallel_without_tensor_parallel_is_turned_off_with_a_warning(run_yaml, capsys):
    code, out, err = cli(capsys, "--check", "2", run_yaml, "parallel.sequence_parallel=true")
    assert code == 0 and "tensor 1 x pipeline 1 x data 2" in out
    assert err == ("warning: parallel.sequence_parallel=true has no effect with parallel.tensor=1 (it splits the "
                   "sequence over tensor-parallel ranks): turned off\n")


def test_pipeline_layers_reaches_the_model_build(run_yaml):
    cfg = load_train_config(run_yaml, ["model.num_layers=3", "parallel.pipeline=2", "parallel.pipeline_layers=[2,1]"])
    pc = build_parallel_config(cfg)
    assert pc.pipeline_layers == [2, 1] and pc.layer_ids_per_stage(3) == [[0, 1], [2]]


def _rank_run(run_yaml, status_file, rank, *overrides):
    env = dict(train_env(), RANK=str(rank), WORLD_SIZE="2", LOCAL_RANK="0", MEGASNOW_EXIT_STATUS_FILE=status_file)
    return subprocess.run([sys.executable, "-m", "megasnow.train", run_yaml, *overrides], capture_output=True,
                          text=True, env=env, cwd=REPO, timeout=120)


def test_under_torchrun_rank0_prints_config_errors_and_records_the_exit_status(run_yaml, tmp_path):
    """(No process group is formed: the config is refused before; RANK/WORLD_SIZE are torchrun's variables.)"""
    status = tmp_path / "status"
    res = _rank_run(run_yaml, str(status), 0, "train.micro_batch_szie=2")
    assert res.returncode == 2 and res.stderr.startswith("error: unknown config key train.micro_batch_szie")
    assert status.read_text() == "2\n"
    status.unlink()
    res = _rank_run(run_yaml, str(status), 1, "train.micro_batch_szie=2")  # the same error: rank 1 stays quiet
    assert (res.returncode, res.stderr, status.read_text()) == (2, "", "2\n")


def test_a_rank_specific_error_keeps_its_rank(monkeypatch, capsys):
    import megasnow.train.__main__ as entry
    from megasnow.errors import UserError

    def missing_on_this_node(argv):
        raise UserError("phases[0].blend[0].path: /data/x.idx not found")
    monkeypatch.setattr(entry, "main", missing_on_this_node)
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.delenv("MEGASNOW_EXIT_STATUS_FILE", raising=False)
    assert run_tool(entry.launched, [], prog="megasnow.train") == 2
    assert capsys.readouterr().err == "error: [rank 1] phases[0].blend[0].path: /data/x.idx not found\n"


def test_torchrun_script_checks_first_and_exits_2_with_one_line(run_yaml):
    res = subprocess.run(["bash", os.path.join(LAUNCH, "torchrun_single_node.sh"), run_yaml, "parallel.tensor=2"],
                         capture_output=True, text=True, env=dict(train_env(), NPROC="3"), cwd=REPO, timeout=120)
    assert res.returncode == 2 and res.stdout == ""
    assert res.stderr.startswith("error: world size 3 is not divisible by tensor x pipeline = 2 x 1")
    assert len(res.stderr.splitlines()) == 1


FAKE_SRUN = """#!/bin/bash
# stands in for srun + torchrun + the trainer: runs until SIGTERM, then "saves"; the trainer's local rank 0 writes
# its exit code (0) to the status file, and torchrun exits 128 + 15 after a signal, as it does
trap 'echo saved >> "$FAKE_LOG"; echo 0 > "$MEGASNOW_EXIT_STATUS_FILE"; exit 143' TERM
echo "started $*" >> "$FAKE_LOG"
while true; do sleep 0.1; done
"""
FAKE_SCONTROL = """#!/bin/bash
if [[ $1 == show ]]; then echo node001; echo node002; exit 0; fi
echo "scontrol $*" >> "$FAKE_LOG"
"""
FAKE_PYTHON = """#!/bin/bash
echo "check $*" >> "$FAKE_LOG"
"""


@pytest.mark.parametrize("signalled", [True, False])
def test_slurm_script_forwards_the_time_limit_signal_and_requeues(tmp_path, signalled):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name, text in (("srun", FAKE_SRUN), ("scontrol", FAKE_SCONTROL), ("python", FAKE_PYTHON)):
        (bin_dir / name).write_text(text)
        (bin_dir / name).chmod(0o755)
    log = tmp_path / "log"
    if not signalled:  # a run that ends by itself is not requeued
        (bin_dir / "srun").write_text('#!/bin/bash\necho "started $*" >> "$FAKE_LOG"\nexit 0\n')
    env = dict(os.environ, PATH=f"{bin_dir}:{os.environ['PATH']}", FAKE_LOG=str(log), SLURM_JOB_ID="77",
               SLURM_NNODES="2", SLURM_JOB_NODELIST="node[001-002]", SLURM_GPUS_ON_NODE="8")
    proc = subprocess.Popen(["bash", os.path.join(LAUNCH, "slurm.sbatch"), "run.yaml", "train.steps=9"], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        if signalled:
            deadline = time.monotonic() + 30
            while not (log.exists() and "started" in log.read_text()) and time.monotonic() < deadline \
                    and proc.poll() is None:
                time.sleep(0.05)
            proc.send_signal(signal.SIGUSR1)
        out = proc.communicate(timeout=30)[0]
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, out
    lines = log.read_text().splitlines()
    assert lines[0] == "check -m megasnow.train --check 16 run.yaml train.steps=9"
    assert lines[1].startswith("started --kill-on-bad-exit=1 python -m megasnow.train.torchrun --nnodes=2 "
                               "--nproc-per-node=8 ")
    assert lines[1].endswith("--rdzv-id=77 --max-restarts=0 -m megasnow.train run.yaml train.steps=9")
    assert lines[2:] == (["saved", "scontrol requeue 77"] if signalled else [])


def test_failed_start_removes_the_parent_folders_it_made(tmp_path, run_yaml, capsys):
    """checkpoint.dir=deep/a/b/ckpt; the missing data is refused after the folders were locked."""
    deep = tmp_path / "deep"
    os.remove(tmp_path / "code.bin")
    code, _, err = cli(capsys, run_yaml, f"checkpoint.dir={deep / 'a' / 'b' / 'ckpt'}", "log.dir=null")
    assert code == 2 and "code.bin does not exist" in err
    assert not deep.exists()


def test_eta_leaves_out_the_first_step():
    m = MetricsLogger("unused", 1.0, __import__("torch").device("cpu"), 1, tensorboard=False, write=False)
    etas = [m.step({"step": i + 1}, t, 10, left)["eta_s"] for i, (t, left) in enumerate([(30.0, 3), (2.0, 2),
                                                                                        (4.0, 1), (2.0, 0)])]
    assert etas == [None, pytest.approx(4.0), pytest.approx((0.9 * 2 + 0.1 * 4) * 1), 0.0]


def test_log_interval_0_prints_no_step_lines():
    m = MetricsLogger("unused", 1.0, __import__("torch").device("cpu"), 1, tensorboard=False, write=False,
                      interval=0)
    m.write = True  # print as the logging rank, without files
    m._write = lambda record: None
    buf = io.StringIO()
    with redirect_stdout(buf):
        for step in (1, 2):
            m.step({"step": step, "loss": 1.0, "lr": 1e-3, "grad_norm": 1.0}, 1.0, 10, 2 - step)
    assert buf.getvalue() == ""


def test_log_dir_follows_checkpoint_dir_and_paths_are_no_config_change(run_yaml, tmp_path):
    a = load_train_config(run_yaml, [f"checkpoint.dir={tmp_path / 'a'}", "log.dir=null"])
    b = load_train_config(run_yaml, [f"checkpoint.dir={tmp_path / 'b'}", "log.dir=null"])
    assert (a.log.dir, b.log.dir) == (str(tmp_path / "a" / "log"), str(tmp_path / "b" / "log"))
    assert load_train_config(run_yaml, ["checkpoint.dir=null", "log.dir=null"]).log.dir == os.path.join("runs",
                                                                                                        "default")
    changes = compare_configs(a, b, 0)
    assert (changes.refused, changes.allowed) == ([], [])


def test_megatron_flags_and_a_number_for_a_section(run_yaml):
    def msg(*argv):
        return unknown_flag_message(argv[0], list(argv))
    assert msg("--train_iters", "5") == "unknown flag --train_iters: Megatron's flag; here use the override " \
                                        "train.steps=5"
    assert msg("--virtual-pipeline-model-parallel-size", "2").endswith("parallel.virtual_pipeline=2")
    assert "parallel.virtual_pipeline = model.num_layers / (parallel.pipeline x 4)" in \
        msg("--num-layers-per-virtual-pipeline-stage", "4")
    assert msg("--bf16").endswith("train.dtype=bf16 (the default on GPU; master weights stay fp32)")
    assert "not supported; use train.dtype=bf16" in msg("--fp16")
    assert msg("--recompute-activations").endswith("model.activation_checkpointing=selective")
    assert msg("--recompute-granularity", "full").endswith("model.activation_checkpointing=full (full or selective)")
    assert msg("--overlap-grad-reduce").endswith("parallel.overlap_grad_reduce=true")
    assert msg("--fim-rate", "0.5").endswith("data.fim.rate=0.5")
    assert msg("--fim_spm_rate=0.3").endswith("data.fim.spm_rate=0.3")
    with pytest.raises(ConfigError) as e:
        load_train_config(run_yaml, ["data.fim=0.5"])
    assert str(e.value) == ("data.fim is a section (rate, spm_rate, level, mask_pad), not a number: for the "
                            "fill-in-the-middle rate use data.fim.rate=0.5")


def test_a_killed_rank_leaves_one_line_per_survivor(tmp_path):
    """Two ranks started as torchrun would (RANK, WORLD_SIZE, MASTER_ADDR/PORT); rank 1 is SIGKILLed after step 2:
    rank 0 prints one line naming the step and the checkpoint to resume from, and exits 1 (recorded for the script)."""
    from megasnow.parallel.spawn import free_port
    from tests.train.helpers import real_code_files, write_byte_dataset

    prefix = write_byte_dataset(str(tmp_path / "code"), real_code_files(limit=20))
    cfg = tiny_config(tmp_path, [{"name": "only", "blend": [{"path": prefix}], "steps": 400}],
                      checkpoint={"interval": 2})
    path = write_config(tmp_path / "run.yaml", cfg)
    port, status = str(free_port()), tmp_path / "status"
    procs = []
    for rank in (0, 1):
        env = dict(train_env(), RANK=str(rank), WORLD_SIZE="2", LOCAL_RANK=str(rank), MASTER_ADDR="127.0.0.1",
                   MASTER_PORT=port, MEGASNOW_EXIT_STATUS_FILE=str(status))
        procs.append(subprocess.Popen([sys.executable, "-m", "megasnow.train", path], env=env, cwd=REPO, text=True,
                                      stdout=subprocess.PIPE, stderr=subprocess.PIPE))
    try:
        for line in procs[0].stdout:
            if line.startswith("step      3 |"):
                procs[1].kill()
                break
        out, err = procs[0].communicate(timeout=120)
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
            p.wait()
    assert procs[0].returncode == 1 and "Traceback" not in err, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("rank 0: lost contact with another rank during ")
    assert "(it may have died; see torchrun's report): " in lines[0]
    assert lines[0].endswith(f"; resume from the last checkpoint (step 2, {tmp_path / 'ckpt' / 'step_00000002'})") \
        or lines[0].endswith(f"; resume from the last checkpoint (step 4, {tmp_path / 'ckpt' / 'step_00000004'})")
    assert status.read_text() == "1\n"


def _processes_with(text):
    """The pids of live processes whose command line holds `text` (read from /proc)."""
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                if text.encode() in f.read():
                    found.append(int(pid))
        except OSError:
            pass
    return found


@pytest.mark.parametrize("script, sig, code, reason", [
    ("single", signal.SIGTERM, 0, "sigterm"), ("single", signal.SIGINT, 130, "sigint"),
    ("snowcoder", signal.SIGTERM, 0, "sigterm")])
def test_a_signal_to_the_launch_script_stops_torchrun_and_its_ranks_after_saving(tmp_path, script, sig, code, reason):
    """SIGTERM to the script alone (a scheduler, `kill PID`), or SIGINT to its whole process group (Ctrl-C in a
    terminal): torchrun and both ranks save and exit, the script waits for them and exits with the trainer's code;
    nothing is left running, no status file is left in TMPDIR."""
    from megasnow.parallel.spawn import free_port
    from tests.train.helpers import real_code_files, write_byte_dataset

    prefix = write_byte_dataset(str(tmp_path / "code"), real_code_files(limit=20))
    cfg = tiny_config(tmp_path, [{"name": "only", "blend": [{"path": prefix}], "steps": 400}])
    path = write_config(tmp_path / "run.yaml", cfg)
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    env = dict(train_env(), NPROC="2", TMPDIR=str(tmp))
    command = ["bash", os.path.join(LAUNCH, "torchrun_single_node.sh"), path]
    if script == "snowcoder":
        env.update(CONFIG=path, GPUS_PER_NODE="2", MASTER_PORT=str(free_port()), OMP_NUM_THREADS="1")
        command = ["bash", os.path.join(REPO, "examples", "snowcoder", "launch_multinode.sh")]
    proc = subprocess.Popen(command, env=env, cwd=REPO,
                            text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
    try:
        for line in proc.stdout:
            if line.startswith("step      2 |"):
                if sig == signal.SIGTERM:
                    proc.send_signal(sig)  # the script's process only
                else:
                    os.killpg(proc.pid, sig)  # as a terminal does
                break
        out, err = proc.communicate(timeout=120)
        left = _processes_with(path)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        for pid in _processes_with(path):
            os.kill(pid, signal.SIGKILL)
    assert proc.returncode == code, err
    assert left == [] and [n for n in os.listdir(tmp) if n.startswith("tmp.")] == []  # mktemp's status file
    from megasnow.train.checkpoint import read_meta, resolve_latest

    latest = resolve_latest(str(tmp_path / "ckpt"))
    assert read_meta(latest)["reason"] == reason
    assert f"saved a checkpoint at step {read_meta(latest)['step']} in {latest}" in out + err
    assert "Traceback" not in err, err  # torchrun's SignalException traceback is left out


def test_the_scripts_torchrun_prints_a_failed_ranks_report_without_the_traceback(tmp_path):
    script = tmp_path / "fails.py"
    script.write_text("import sys\nsys.exit(3)\n")
    res = subprocess.run([sys.executable, "-m", "megasnow.train.torchrun", "--standalone", "--nnodes=1",
                          "--nproc-per-node=1", str(script)], capture_output=True, text=True, env=train_env(),
                         cwd=REPO, timeout=120)
    assert res.returncode == 1 and "Traceback" not in res.stderr, res.stderr
    assert "torchrun: " in res.stderr and "exitcode  : 3" in res.stderr and "fails.py FAILED" in res.stderr


def test_input_errors_alike_on_one_node_print_once(run_yaml, tmp_path):
    """Two ranks on one node (torchrun's LOCAL_WORLD_SIZE = WORLD_SIZE) with a checkpoint.init_from that does not
    exist: rank 0 prints the one line, rank 1 stays quiet; both exit 2."""
    from megasnow.parallel.spawn import free_port

    port, procs = str(free_port()), []
    for rank in (0, 1):
        env = dict(train_env(), RANK=str(rank), WORLD_SIZE="2", LOCAL_RANK=str(rank), LOCAL_WORLD_SIZE="2",
                   MASTER_ADDR="127.0.0.1", MASTER_PORT=port)
        procs.append(subprocess.Popen([sys.executable, "-m", "megasnow.train", run_yaml,
                                       f"checkpoint.init_from={tmp_path / 'nope'}"], env=env, cwd=REPO, text=True,
                                      stdout=subprocess.PIPE, stderr=subprocess.PIPE))
    try:
        results = [p.communicate(timeout=120) for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    assert [p.returncode for p in procs] == [2, 2]
    assert [err for _, err in results] == [f"error: checkpoint.init_from: {tmp_path / 'nope'} does not exist\n", ""]
