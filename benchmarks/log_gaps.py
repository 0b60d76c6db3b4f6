#!/usr/bin/env python
"""Run a command, timestamp every line it prints, and report the longest silences (issue 11: no stage silent > 30 s).

  python benchmarks/log_gaps.py --log qs.tsv -- bash scripts/quickstart.sh --fresh
  python benchmarks/log_gaps.py --read qs.tsv            # report on a log written before

The command runs on a pseudo-terminal (120 x 40) by default, so it prints what a user's terminal shows (progress
bars included); a carriage return ends a line as a newline does (a bar's redraw counts as output). --pipe runs it on a
plain pipe instead (what `cmd > file` gets). The log is tab-separated: seconds since start, then the line.
Exit status: the command's.
"""
import argparse
import fcntl
import os
import pty
import re
import struct
import subprocess
import sys
import termios
import time

ANSI = re.compile(rb"\x1b\[[0-9;?]*[A-Za-z]")


def run_logged(cmd, log_path, use_pty=True):
    """Run `cmd`, echo its output, write (seconds, line) rows to log_path; returns (exit status, rows)."""
    rows, buf = [], b""
    t0 = time.monotonic()
    if use_pty:
        master, slave = pty.openpty()
        # a terminal's size: without one, tqdm draws its bars zero columns wide (prints nothing)
        fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 120, 0, 0))
        proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=slave, stderr=slave, close_fds=True)
        os.close(slave)
        fd = master
    else:
        proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        fd = proc.stdout.fileno()
    with open(log_path, "w", encoding="utf-8") as log:
        while True:
            try:
                chunk = os.read(fd, 65536)
            except OSError:  # the pty closes with EIO once the command and its children are gone
                chunk = b""
            if not chunk:
                break
            now = time.monotonic() - t0
            sys.stdout.buffer.write(chunk)
            sys.stdout.buffer.flush()
            buf += chunk
            parts = re.split(rb"\r\n|\n|\r", buf)
            buf = parts.pop()
            for part in parts:
                text = ANSI.sub(b"", part).decode("utf-8", "replace").rstrip()
                if text:
                    rows.append((now, text))
                    log.write(f"{now:.2f}\t{text}\n")
            log.flush()
        if buf.strip():
            rows.append((time.monotonic() - t0, buf.decode("utf-8", "replace").rstrip()))
            log.write(f"{rows[-1][0]:.2f}\t{rows[-1][1]}\n")
        rc = proc.wait()
        end = time.monotonic() - t0
        log.write(f"{end:.2f}\t[exit {rc}]\n")
    if use_pty:
        os.close(master)
    rows.append((end, f"[exit {rc}]"))
    return rc, rows


def read_log(path):
    rows = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            t, _, text = line.rstrip("\n").partition("\t")
            rows.append((float(t), text))
    return rows


def gaps(rows, top=5):
    """The `top` longest silences: (seconds, the line before, the line after), longest first; the start counts
    as a line at 0 s."""
    out = []
    prev_t, prev = 0.0, "[start]"
    for t, text in rows:
        out.append((t - prev_t, prev, text))
        prev_t, prev = t, text
    return sorted(out, key=lambda g: -g[0])[:top]


def report(rows, top=5):
    lines = [f"{len(rows)} lines over {rows[-1][0]:.0f} s; longest silences:"]
    for gap, before, after in gaps(rows, top):
        lines.append(f"  {gap:6.1f} s  after: {before[:110]}\n           before: {after[:110]}")
    return "\n".join(lines)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--log", help="timestamped log to write (seconds<TAB>line)")
    ap.add_argument("--read", help="report on a log written before instead of running a command")
    ap.add_argument("--pipe", action="store_true", help="run on a pipe instead of a pseudo-terminal")
    ap.add_argument("--top", type=int, default=5, help="how many of the longest silences to list")
    ap.add_argument("cmd", nargs=argparse.REMAINDER, help="-- COMMAND ARGS...")
    args = ap.parse_args(argv)
    if args.read:
        print(report(read_log(args.read), args.top))
        return 0
    cmd = args.cmd[1:] if args.cmd[:1] == ["--"] else args.cmd
    if not cmd or not args.log:
        ap.error("give --log FILE and -- COMMAND (or --read FILE)")
    rc, rows = run_logged(cmd, args.log, use_pty=not args.pipe)
    print("\n" + report(rows, args.top), flush=True)
    return rc


if __name__ == "__main__":
    sys.exit(main())
