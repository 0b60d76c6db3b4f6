"""Progress for long steps, shared by every tool: a tqdm bar on a terminal, a plain log line every few seconds
elsewhere (a log file gets whole lines, never a bar's carriage returns or cursor moves), and rates in adaptive
units (`format_rate`: 0.48 docs/s is "29.0 docs/min", never "0 docs/s").
"""
import os
import sys
import time

PROGRESS_INTERVAL_S = 15.0  # log-line mode: at most this long between lines (the rule: no step silent > 30 s)
MODES = ("auto", "bar", "log", "off")
MIN_RATE_S = 1.0  # a rate (and an ETA) measured over less time than this is noise: "2 tasks in 0 s (127 tasks/s)"


def unit_for(count, unit):
    """The plural `unit` ('docs', 'tasks', 'batches') for a count, singular for exactly one: (1, 'tasks') ->
    'task', (1, 'batches') -> 'batch', (2, 'tasks') -> 'tasks'. A unit not ending in s is kept ('B')."""
    if count != 1 or not unit.endswith("s") or unit.endswith("ss"):
        return unit
    return unit[:-2] if unit.endswith(("ches", "shes", "sses", "xes")) else unit[:-1]


def format_count(x):
    """A count or rate with 3 significant figures and an SI prefix: 0.48 -> '0.48', 12345 -> '12.3k', 2.5e6 -> '2.50M'."""
    x = float(x)
    prefix = ""
    for prefix in ("", "k", "M", "G", "T"):
        if abs(x) < 999.5 or prefix == "T":
            break
        x /= 1000.0
    digits = 0 if abs(x) >= 99.95 else 1 if abs(x) >= 9.995 else 2
    return f"{x:.{digits}f}{prefix}"


def format_rate(count, seconds, unit):
    """`count` items in `seconds` as a rate a reader can use: per second, or per minute / per hour when that
    rounds to less than one per second. E.g. (60, 124, "docs") -> '29.0 docs/min'; (3e6, 2, "tokens") ->
    '1.50M tokens/s'; (0, 5, "docs") -> '0 docs/s'; seconds <= 0 -> '- docs/s' (nothing measured yet)."""
    if seconds is None or seconds <= 0:
        return f"- {unit}/s"
    if count <= 0:
        return f"0 {unit}/s"
    rate = count / seconds
    for per, scale in (("s", 1.0), ("min", 60.0), ("h", 3600.0)):
        if rate * scale >= 0.995 or per == "h":
            return f"{format_count(rate * scale)} {unit}/{per}"


def format_duration(seconds):
    """'42 s', '3m05s', '2h07m' (ETAs and elapsed times in log lines and summaries)."""
    if seconds is None or seconds != seconds or seconds == float("inf"):
        return "?"
    seconds = max(0, int(round(seconds)))
    if seconds < 60:
        return f"{seconds} s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{(seconds % 3600) // 60:02d}m"


def resolve_mode(mode, stream=None):
    """'auto' -> 'bar' on a terminal, else 'log'; True -> 'auto', False -> 'off'."""
    if mode is True or mode is None:
        mode = "auto"
    elif mode is False:
        mode = "off"
    if mode not in MODES:
        raise ValueError(f"progress mode must be one of {MODES}, got {mode!r}")
    if mode == "auto":
        stream = stream or sys.stderr
        return "bar" if getattr(stream, "isatty", lambda: False)() else "log"
    return mode


class Progress:
    """Counts work done towards an optional `total` and shows it with a rate and an ETA.

    mode "bar": a tqdm bar; "log": a line `desc: done/total unit (pct), rate, ETA` at the start, at most every
    `interval` seconds, and at close (`desc: done N unit in T (rate)`; no rate or ETA under MIN_RATE_S); "off":
    nothing; "auto": bar on a terminal, else log lines. `unit` is plural ('docs', 'tasks'): a count of exactly one
    gets the singular. Use as a context manager or call close(). `interval` defaults to MEGASNOW_PROGRESS_INTERVAL
    or 15 s.
    """

    def __init__(self, total=None, desc="", unit="items", mode="auto", interval=None, stream=None):
        self.stream = stream or sys.stderr
        self.mode = resolve_mode(mode, self.stream)
        self.total, self.desc, self.unit = total, desc, unit
        self.interval = float(interval if interval is not None
                              else os.environ.get("MEGASNOW_PROGRESS_INTERVAL", PROGRESS_INTERVAL_S))
        self.n = 0
        self._last_n = None
        self.start = self._last = time.monotonic()
        self._bar = None
        self._closed = False
        if self.mode == "bar":
            from tqdm import tqdm

            self._bar = tqdm(total=total, desc=desc, unit=unit, file=self.stream, dynamic_ncols=True)
        elif self.mode == "log":
            self._line()

    def update(self, n=1):
        """Count `n` more done (a float is fine: a fraction of a document inside a batch)."""
        self.advance_to(self.n + n)

    def advance_to(self, n):
        """Set the count done to `n` (may go back: rewind a retried shard's part)."""
        self.n = n
        if self._bar is not None:
            if int(n) != self._bar.n:
                going_back = int(n) < self._bar.n
                self._bar.n = int(n)
                if going_back:
                    self._bar.refresh()
                else:
                    self._bar.update(0)  # redraws when tqdm's own interval has passed
        elif self.mode == "log" and n != self._last_n and time.monotonic() - self._last >= self.interval:
            self._line()

    rewind = advance_to

    def set_total(self, total):
        self.total = total
        if self._bar is not None:
            self._bar.total = total
            self._bar.refresh()

    @property
    def elapsed(self):
        return time.monotonic() - self.start

    def status(self):
        """'1,200/5,000 docs (24%), 4.20 docs/s, ETA 15m04s' (rate and ETA once something is done and at least
        MIN_RATE_S has passed)."""
        elapsed = self.elapsed
        n = int(self.n)
        done = f"{n:,}/{self.total:,} {self.unit} ({100.0 * self.n / self.total:.0f}%)" if self.total else \
            f"{n:,} {unit_for(n, self.unit)}"
        if not self.n or elapsed < MIN_RATE_S:
            return done
        text = f"{done}, {format_rate(self.n, elapsed, self.unit)}"
        if self.total and self.n < self.total:
            text += f", ETA {format_duration((self.total - self.n) * elapsed / self.n)}"
        return text

    def _line(self, final=False):
        self._last, self._last_n = time.monotonic(), self.n
        if final:
            n, elapsed = int(self.n), self.elapsed
            of = f" of {self.total:,}" if self.total and n != self.total else ""
            unit = self.unit if of else unit_for(n, self.unit)
            text = f"done {n:,}{of} {unit} in {format_duration(elapsed)}"
            if elapsed >= MIN_RATE_S:
                text += f" ({format_rate(self.n, elapsed, self.unit)})"
        else:
            text = self.status()
        print(f"{self.desc}: {text}", file=self.stream, flush=True)

    def close(self, final_line=True):
        """Close the bar, or print the final log line (`desc: done N unit, rate in T`) unless final_line=False
        (a step that fails says so in its error message instead)."""
        if self._closed:
            return
        self._closed = True
        if self._bar is not None:
            self._bar.close()
        elif self.mode == "log" and final_line:
            self._line(final=True)

    def __enter__(self):
        return self

    def __exit__(self, exc_type, *exc):
        self.close(final_line=exc_type is None)
        return False
