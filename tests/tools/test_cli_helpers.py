"""megasnow/utils/cli.py and megasnow/utils/progress.py: one-line errors, defaults in --help, a suggestion for a
mistyped flag, Ctrl-C -> 130; adaptive rate units and log-line progress without terminal escape sequences."""
import io
import re
import os

import pytest

from megasnow.errors import UserError
from megasnow.utils.cli import ArgumentParser, run_tool, warn
import megasnow.utils.progress as progress_module
from megasnow.utils.progress import Progress, format_duration, format_rate, unit_for


def parser():
    p = ArgumentParser(prog="tool.py")
    p.add_argument("--workers", type=int, default=4)  # no help text: its default must still show
    p.add_argument("--threads", type=int, default=0, help="torch threads")
    p.add_argument("--json-keys", nargs="+", default=["text"])
    p.add_argument("--stop", action="append", default=[], help="repeatable")
    p.add_argument("--strict", action="store_true", help="stop at the first bad record")
    p.add_argument("--max-new-tokens", type=int, default=64, help="tokens to generate")
    return p


def test_help_shows_every_default_also_without_help_text(capsys):
    with pytest.raises(SystemExit) as info:
        parser().parse_args(["--help"])
    assert info.value.code == 0
    text = " ".join(capsys.readouterr().out.split())
    assert "--workers WORKERS (default: 4)" in text
    assert "torch threads (default: 0)" in text  # a zero default is shown too
    assert "(default: ['text'])" in text and "tokens to generate (default: 64)" in text
    assert "repeatable (default" not in text and "bad record (default" not in text  # empty lists, flags: none


@pytest.mark.parametrize("argv,expected", [
    (["--max-new-tokens", "3", "--bogus"], "error: unrecognized arguments: --bogus (see tool.py --help)"),
    (["--max-new-tokns", "3"], "error: unrecognized arguments: --max-new-tokns 3; did you mean --max-new-tokens? "
                               "(see tool.py --help)"),
    (["--workers", "two"], "error: argument --workers: invalid int value: 'two' (see tool.py --help)"),
])
def test_argument_errors_are_one_line_exit_2(capsys, argv, expected):
    with pytest.raises(SystemExit) as info:
        parser().parse_args(argv)
    assert info.value.code == 2
    assert capsys.readouterr().err == expected + "\n"


def test_a_mistyped_option_is_reported_before_a_missing_required_one(capsys):
    """argparse checks required arguments first: `--outptu X` read as "--output is required" (issue 11)."""
    p = ArgumentParser(prog="tool.py")
    sub = p.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run")
    run.add_argument("config")
    run.add_argument("--output", required=True)
    run.add_argument("--seed", type=int, default=0)
    for argv, expected in [
        (["run", "c.yaml", "--outptu", "x"], "error: unrecognized arguments: --outptu; did you mean --output? "
                                             "(see tool.py run --help)"),
        (["run", "c.yaml", "--outptu=x", "--seed", "1"], "error: unrecognized arguments: --outptu; did you mean "
                                                         "--output? (see tool.py run --help)"),
        (["run", "c.yaml", "--seed", "1"], "error: the following arguments are required: --output "
                                           "(see tool.py run --help)"),
        (["run", "c.yaml", "--se", "1"], "error: unrecognized arguments: --se; did you mean --seed? "
                                         "(see tool.py run --help)"),  # abbreviations are not accepted
        # every required argument given: argparse reports the leftovers from the top parser; the hint (and the
        # suggestion) still name the subcommand run
        (["run", "c.yaml", "--output", "o", "--bogus", "1"], "error: unrecognized arguments: --bogus 1 "
                                                             "(see tool.py run --help)"),
        (["run", "c.yaml", "--output", "o", "--sed", "1"], "error: unrecognized arguments: --sed 1; did you mean "
                                                           "--seed? (see tool.py run --help)"),
        (["--bogus"], "error: unrecognized arguments: --bogus (see tool.py --help)"),
    ]:
        with pytest.raises(SystemExit) as info:
            p.parse_args(argv)
        assert info.value.code == 2
        assert capsys.readouterr().err == expected + "\n", argv


def test_run_tool_user_error_interrupt_and_debug(capsys):
    def bad(argv):
        raise UserError("input x.jsonl: no such file\nsecond line")

    assert run_tool(bad, []) == 2
    assert capsys.readouterr().err == "error: input x.jsonl: no such file second line\n"
    assert run_tool(bad, ["--debug"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("Traceback (most recent call last)") and err.endswith("error: input x.jsonl: no such file second line\n")

    def interrupted(argv):
        raise KeyboardInterrupt

    assert run_tool(interrupted, [], prog="tool.py") == 130  # argv given: returns (from the command line: exits)
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("tool.py: interrupted (Ctrl-C)")
    assert run_tool(lambda argv: None, []) == 0 and run_tool(lambda argv: 3, []) == 3


@pytest.mark.parametrize("count,seconds,unit,text", [
    (60, 124, "docs", "29.0 docs/min"),  # issue 11 §5: was "0 docs/s"
    (1, 7200, "docs", "0.50 docs/h"),
    (557, 133, "docs", "4.19 docs/s"),
    (12345, 1, "tokens", "12.3k tokens/s"),
    (3e6, 2, "tokens", "1.50M tokens/s"),
    (999.6, 1, "x", "1.00k x/s"),
    (0, 5, "docs", "0 docs/s"),
    (5, 0, "docs", "- docs/s"),
])
def test_format_rate_adapts_its_unit(count, seconds, unit, text):
    assert format_rate(count, seconds, unit) == text


def test_format_duration():
    assert [format_duration(s) for s in (0.4, 42, 65, 3600 + 7 * 60 + 5, None)] == ["0 s", "42 s", "1m05s", "1h07m", "?"]


class _Clock:
    """time.monotonic stand-in that advances `step` seconds per call (rates need >= MIN_RATE_S elapsed)."""

    def __init__(self, step):
        self.now, self.step = 1000.0, step

    def monotonic(self):
        self.now += self.step
        return self.now


def test_log_mode_writes_whole_lines_only(monkeypatch):
    monkeypatch.setattr(progress_module, "time", _Clock(step=2.0))
    stream = io.StringIO()
    with Progress(total=8, desc="score", unit="docs", mode="auto", interval=0, stream=stream) as p:  # not a TTY
        for _ in range(4):
            p.update(1.5)
        p.rewind(2)  # a retried shard's part is taken back
        p.advance_to(2)  # no change: no line
    text = stream.getvalue()
    assert "\r" not in text and "\x1b" not in text
    lines = text.splitlines()
    assert lines[0] == "score: 0/8 docs (0%)"
    assert [line.split(" docs")[0] for line in lines[1:-1]] == ["score: 1/8", "score: 3/8", "score: 4/8", "score: 6/8",
                                                                 "score: 2/8"]
    assert all("docs/" in line and "ETA" in line for line in lines[1:-1])
    assert lines[-1].startswith("score: done 2 of 8 docs in ")


def test_counts_of_one_are_singular_and_no_rate_is_shown_under_a_second(monkeypatch):
    assert [unit_for(n, u) for n, u in ((1, "tasks"), (2, "tasks"), (1, "batches"), (1, "docs"), (1, "B"),
                                        (0, "windows"))] == ["task", "tasks", "batch", "doc", "B", "windows"]
    monkeypatch.setattr(progress_module, "time", _Clock(step=0.01))  # a quick step: a rate would be noise
    stream = io.StringIO()
    with Progress(total=2, desc="count tokens", unit="tasks", mode="log", interval=0, stream=stream) as p:
        p.update(1)
        p.update(1)
    assert stream.getvalue().splitlines() == ["count tokens: 0/2 tasks (0%)", "count tokens: 1/2 tasks (50%)",
                                              "count tokens: 2/2 tasks (100%)", "count tokens: done 2 tasks in 0 s"]
    monkeypatch.setattr(progress_module, "time", _Clock(step=1.5))
    stream = io.StringIO()
    with Progress(desc="embed", unit="batches", mode="log", interval=100, stream=stream) as p:
        p.update(1)
    lines = stream.getvalue().splitlines()
    assert lines[0] == "embed: 0 batches" and re.fullmatch(r"embed: done 1 batch in \d+ s \([\d.]+ batches/min\)",
                                                            lines[1]), lines


def test_failed_step_prints_no_done_line_and_off_prints_nothing():
    stream = io.StringIO()
    with pytest.raises(RuntimeError):
        with Progress(total=3, desc="embed", unit="examples", mode="log", interval=100, stream=stream) as p:
            p.update(1)
            raise RuntimeError("boom")
    assert stream.getvalue() == "embed: 0/3 examples (0%)\n"
    quiet = io.StringIO()
    with Progress(total=3, desc="x", mode=False, stream=quiet) as p:
        p.update(3)
    assert quiet.getvalue() == ""


def test_removed_on_failure_cleans_only_what_the_failed_start_created(tmp_path):
    from megasnow.utils.cli import removed_on_failure

    out = tmp_path / "out"
    with pytest.raises(UserError):
        with removed_on_failure(out):
            (out / "work").mkdir(parents=True)
            (out / "config.yaml").write_text("x: 1\n")
            raise UserError("input missing")
    assert not out.exists()
    out.mkdir()
    (out / "done.jsonl").write_text("{}\n")
    with pytest.raises(KeyboardInterrupt):
        with removed_on_failure(out):
            raise KeyboardInterrupt
    assert (out / "done.jsonl").exists()  # it existed before: a rerun's outputs are never removed
    with removed_on_failure(tmp_path / "ok") as path:
        os.makedirs(path)
    assert (tmp_path / "ok").is_dir()


def test_a_warning_during_a_tqdm_bar_gets_its_own_line(capsys):
    """The bar is cleared before the warning and redrawn after: the warning never lands on the bar's tail."""
    from tqdm import tqdm

    with tqdm(total=3, desc="reading", file=None) as bar:  # file=None: sys.stderr, as the tools' bars
        bar.update(1)
        warn("x.jsonl:2: bad JSON; skipped")
        bar.update(2)
    lines = capsys.readouterr().err.splitlines()  # "\r" ends a line here, as on a terminal
    assert "warning: x.jsonl:2: bad JSON; skipped" in lines
    assert lines[-1].startswith("reading: 100%")


TERM_SCRIPT = r'''
import multiprocessing, os, sys, time
from megasnow.utils.cli import removed_on_failure, run_tool

def work(x):
    time.sleep(30)

def main(argv):
    pool = multiprocessing.get_context("fork").Pool(2)  # forked workers inherit the handler: must die quietly
    pool.map_async(work, range(2))
    try:
        with removed_on_failure(sys.argv[1]):
            os.makedirs(os.path.join(sys.argv[1], "work"))
            print("ready", flush=True)
            time.sleep(60)
    finally:
        pool.terminate()
        pool.join()

sys.exit(run_tool(main, prog="slow.py"))
'''


@pytest.mark.parametrize("sig,rc,line", [("SIGTERM", 143, "slow.py: terminated (SIGTERM); "),
                                         ("SIGINT", 130, "slow.py: interrupted (Ctrl-C); ")])
def test_sigterm_takes_the_ctrl_c_way_out_with_its_own_line(tmp_path, sig, rc, line):
    """A tool run from the command line: SIGTERM (a scheduler's time limit) runs the same clean-up as Ctrl-C
    (the half-built output is removed), prints one line and exits 143; its pool's forked workers, terminated with
    SIGTERM, die without tracebacks."""
    import signal
    import subprocess
    import sys

    script = tmp_path / "slow.py"
    script.write_text(TERM_SCRIPT)
    out = tmp_path / "out"
    proc = subprocess.Popen([sys.executable, str(script), str(out)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    try:
        assert proc.stdout.readline() == "ready\n"
        proc.send_signal(getattr(signal, sig))
        _, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == rc, err
    assert len(err.splitlines()) == 1 and err.startswith(line), err
    assert not out.exists()


def test_an_error_raised_over_an_interrupt_still_counts_as_the_interrupt(capsys):
    """torch.save interrupted mid-write raises its own RuntimeError while unwinding the KeyboardInterrupt (or the
    Terminated of a SIGTERM): the tool still ends with the interrupt's one line and exit code."""
    from megasnow.utils.cli import Terminated

    def writer(interrupt):
        def main(argv):
            try:
                raise interrupt
            finally:
                raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 21376 vs 21270")
        return main

    assert run_tool(writer(KeyboardInterrupt()), [], prog="convert.py") == 130
    assert capsys.readouterr().err.startswith("convert.py: interrupted (Ctrl-C); ")
    assert run_tool(writer(Terminated()), [], prog="convert.py") == 143
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1 and err.startswith("convert.py: terminated (SIGTERM); ")

    def plain_error(argv):
        raise RuntimeError("a real bug")

    with pytest.raises(RuntimeError, match="a real bug"):
        run_tool(plain_error, [])


def test_a_forked_child_gets_the_default_sigterm_back():
    """raise_on_sigterm's handler is for the tool's own process: a forked child (a pool's worker) has SIGTERM's
    default action from the moment it starts, so its pool's terminate() kills it even while it waits in a lock
    (a Python-level handler there would only run at the child's next bytecode, and join() could wait forever)."""
    import multiprocessing
    import signal

    from megasnow.utils.cli import raise_on_sigterm

    previous = raise_on_sigterm()
    try:
        ctx = multiprocessing.get_context("fork")
        held = ctx.Lock()
        held.acquire()
        child = ctx.Process(target=held.acquire)  # blocks in sem_wait until killed
        child.start()
        with ctx.Pool(1) as pool:
            assert pool.apply(signal.getsignal, (signal.SIGTERM,)) == signal.SIG_DFL
        child.terminate()
        child.join(timeout=30)
        assert child.exitcode == -signal.SIGTERM
        assert callable(signal.getsignal(signal.SIGTERM))  # the parent keeps its handler
    finally:
        signal.signal(signal.SIGTERM, previous)


def test_option_prefixes_are_not_accepted(capsys):
    """`--epoch` must not silently mean `--epochs` (Megatron's parser sets allow_abbrev=False too)."""
    parser = ArgumentParser(prog="tool")
    sub = parser.add_subparsers(dest="cmd")
    sub.add_parser("train").add_argument("--epochs", type=int, default=1)
    assert parser.parse_args(["train", "--epochs", "3"]).epochs == 3
    with pytest.raises(SystemExit) as e:
        parser.parse_args(["train", "--epoch", "3"])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert "unrecognized arguments: --epoch" in err and "did you mean --epochs?" in err
