"""Per-step training metrics: tokens/s, model TFLOP/s and MFU against the device's dense bf16 peak, memory and
ETA, written as a console progress line, one JSON object per step in metrics.jsonl, and TensorBoard scalars."""
import json
import math
import os
import resource
import sys
import time

import torch

# Dense (no sparsity) bf16 tensor-core peak per GPU in TFLOP/s, from the vendors' data sheets.
# Matched against torch.cuda.get_device_name() by substring, first match wins (more specific names first).
PEAK_BF16_TFLOPS = [
    ("GH200", 989.0),
    ("H200", 989.0),
    ("H100 PCIe", 756.0),
    ("H100 NVL", 835.0),
    ("H100", 989.0),  # SXM
    ("H800", 989.0),
    ("B200", 2250.0),
    ("B100", 1750.0),
    ("A100", 312.0),
    ("A800", 312.0),
    ("L40S", 362.0),
    ("L40", 181.0),
    ("L4", 121.0),
    ("A10G", 70.0),
    ("A10", 125.0),
    ("RTX 4090", 165.0),
    ("RTX 3090", 71.0),
    ("MI300X", 1307.0),
    ("MI250X", 383.0),
]


# Records written at a step before that step's checkpoint; the only ones with scalars worth plotting.
BEFORE_CHECKPOINT_KINDS = TENSORBOARD_KINDS = ("train", "eval", "benchmark")


def peak_bf16_tflops(device_name):
    """The dense bf16 peak of a GPU by name, or None when unknown (CPU, unlisted GPUs)."""
    if not device_name:
        return None
    for key, peak in PEAK_BF16_TFLOPS:
        if key.lower() in device_name.lower():
            return peak
    return None


def device_peak(device):
    if device.type != "cuda":
        return None, "cpu"
    name = torch.cuda.get_device_name(device)
    return peak_bf16_tflops(name), name


def memory_mb(device):
    """Peak memory: GPU allocator peak on CUDA, process max RSS on CPU (MiB)."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / 1024 if sys.platform != "darwin" else rss / 2**20


def format_eta(seconds):
    if seconds is None or not math.isfinite(seconds):
        return "?"
    seconds = int(seconds)
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    return f"{h}h{m:02d}m" if h else f"{m}m{s:02d}s"


class MetricsLogger:
    """Computes throughput numbers and writes them; only the logging rank should create one with write=True."""

    def __init__(self, log_dir, flops_per_token, device, num_devices, tensorboard=True, interval=1, quiet=False,
                 write=True, resume_step=None):
        self.log_dir = log_dir
        self.flops_per_token = flops_per_token
        self.device = device
        self.num_devices = num_devices
        self.interval = interval  # 0: no per-step progress lines (the events and the summary still print)
        self.quiet = quiet
        self.write = write
        self.peak, self.device_name = device_peak(device)
        # Mean step time (an EMA) for the ETA. The first step after a start or resume is left out: it holds the
        # warm-up (allocator, kernel compilation, the first batches read) and would inflate the ETA for many steps.
        self._avg_step_s = None
        self._steps_timed = 0
        self._tb = None
        self._jsonl = None
        if not write:
            return
        os.makedirs(log_dir, exist_ok=True)
        path = os.path.join(log_dir, "metrics.jsonl")
        if resume_step is not None:
            truncate_metrics(path, resume_step)
        self._jsonl = open(path, "a", encoding="utf-8")
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter

                # purge_step: TensorBoard drops the earlier attempt's events from the resumed step on, as
                # truncate_metrics does for metrics.jsonl (a SessionLog.START event at that step).
                purge = None if resume_step is None else resume_step + 1
                self._tb = SummaryWriter(os.path.join(log_dir, "tensorboard"), purge_step=purge)
            except ImportError:
                print("note: tensorboard is not installed; metrics go to metrics.jsonl only", file=sys.stderr)

    @property
    def tensorboard_dir(self):
        """Where the TensorBoard events go (None when not written)."""
        return self._tb.log_dir if self._tb is not None else None

    def step(self, record, step_time_s, tokens, steps_left):
        """Complete `record` (step, phase, loss, lr, grad_norm, ...) with throughput figures and write it."""
        tokens_per_s = tokens / step_time_s if step_time_s > 0 else float("nan")
        tflops = tokens_per_s * self.flops_per_token / 1e12 / self.num_devices
        self._steps_timed += 1
        if self._steps_timed > 1:
            self._avg_step_s = step_time_s if self._avg_step_s is None else \
                0.9 * self._avg_step_s + 0.1 * step_time_s
        eta_s = 0.0 if steps_left == 0 else None if self._avg_step_s is None else self._avg_step_s * steps_left
        record.update(
            tokens_per_s=tokens_per_s,
            tflops_per_device=tflops,
            mfu=(tflops / self.peak) if self.peak else None,
            memory_mb=memory_mb(self.device),
            step_time_s=step_time_s,
            eta_s=eta_s,
            time=time.time(),
        )
        self._write(record)
        if self.write and not self.quiet and self.interval > 0 and \
                (record["step"] % self.interval == 0 or steps_left == 0):
            print(self.progress_line(record), flush=True)
        return record

    def progress_line(self, r):
        loss = r["loss"]
        parts = [f"step {r['step']:>6d}", f"[{r.get('phase', '')}]", f"loss {loss:.4f}",
                 f"lr {r['lr']:.3e}", f"gnorm {r['grad_norm']:.3f}", f"{r['tokens_per_s']:,.0f} tok/s",
                 f"{r['tflops_per_device']:.3g} TFLOP/s"]
        parts.append(f"MFU {100 * r['mfu']:.1f}%" if r["mfu"] is not None else "MFU n/a (no GPU peak)")
        parts += [f"mem {r['memory_mb']:,.0f} MiB", f"ETA {format_eta(r['eta_s'])}"]
        if r.get("skipped"):
            parts.append(f"SKIPPED (non-finite; {r['nan_skips']} so far)")
        return " | ".join(parts)

    def event(self, record, echo=True):
        """A non-step record (evaluation, phase change, stop reason) in metrics.jsonl and (echo) on the console."""
        self._write(record)
        if echo and self.write and not self.quiet and record.get("message"):
            print(record["message"], flush=True)

    def _write(self, record):
        if not self.write:
            return
        self._jsonl.write(json.dumps(record, allow_nan=True) + "\n")
        self._jsonl.flush()
        if self._tb is not None and record.get("kind", "train") in TENSORBOARD_KINDS:
            step = record.get("step", 0)
            for k, v in record.items():
                if k in ("step", "time") or isinstance(v, bool) or not isinstance(v, (int, float)):
                    continue
                self._tb.add_scalar(f"{record.get('kind', 'train')}/{k}", v, step)

    def close(self):
        if self._jsonl is not None:
            self._jsonl.close()
            self._jsonl = None
        if self._tb is not None:
            self._tb.close()
            self._tb = None


def truncate_metrics(path, last_step):
    """Drop records after `last_step` (left by a run that died after its last checkpoint) so a resumed run's
    metrics.jsonl reads as one uninterrupted run. At `last_step` itself only the records written before its
    checkpoint stay (train, eval); the others (phase start, stop, resume, end) came after it and come again."""
    if not os.path.exists(path):
        return
    from megasnow.utils.atomic import atomic_write_text

    kept = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:
                continue  # a line cut by the kill
            step = rec.get("step", 0)
            if step < last_step or (step == last_step and rec.get("kind", "train") in BEFORE_CHECKPOINT_KINDS):
                kept.append(line if line.endswith("\n") else line + "\n")
    atomic_write_text(path, "".join(kept))


def read_metrics(path, kind="train"):
    """The records of one kind from a metrics.jsonl (tests and the quickstart plot use this)."""
    out = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            rec = json.loads(line)
            if rec.get("kind", "train") == kind:
                out.append(rec)
    return out
