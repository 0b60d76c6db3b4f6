"""Score documents with a trained annotator: three-window rule, length-sorted batches, sharded + resumable.

One output file per input shard (`<shard>.scores.jsonl`, one line per document, in input order),
written atomically; finished shards are skipped on rerun, a failing shard is retried. A shard whose data is
corrupt (truncated .gz, bad Parquet) keeps the scores of the documents before the damage and is listed with
its error in the summary's `unreadable_shards`; it never stops the corpus (with `strict`, it does: ShardReadError).
Progress is per document, with a rate and an ETA (megasnow.utils.progress: a bar on a terminal, log lines elsewhere).
"""
import glob
import json
import logging
import os
import time
from dataclasses import asdict, dataclass, field

import numpy as np
import torch

from megasnow.curate.executors import run_tasks
from megasnow.quality.annotator import annotator_identity, default_batch_tokens, load_annotator, read_annotator_config
from megasnow.quality.documents import check_document_text
from megasnow.errors import UserError
from megasnow.quality.windows import score_token_lists
from megasnow.utils.atomic import atomic_write, atomic_write_text
from megasnow.utils.progress import Progress, format_rate, resolve_mode
from megasnow.utils.records import (PARQUET_SUFFIXES, JSONL_SUFFIXES, ShardReadError, SkipLog, expand_inputs,
                                   iter_records, open_text_lines)

log = logging.getLogger(__name__)

SCORES_SUFFIX = ".scores.jsonl"
STATS_SUFFIX = ".stats.json"


def length_sorted_batches(lengths, batch_tokens, max_batch):
    """Index batches, longest first, each with at most `batch_tokens` padded tokens and `max_batch` rows.

    Sorting by length means each batch pads to nearly its own length instead of the global longest.
    """
    order = sorted(range(len(lengths)), key=lambda i: (-lengths[i], i))
    batches, current, longest = [], [], 0
    for i in order:
        longest_if_added = max(longest, lengths[i])
        if current and (longest_if_added * (len(current) + 1) > batch_tokens or len(current) >= max_batch):
            batches.append(current)
            current, longest_if_added = [], lengths[i]
        current.append(i)
        longest = longest_if_added
    if current:
        batches.append(current)
    return batches


class BatchedScorer:
    """Scores texts with an annotator: all windows of a chunk of files, length-sorted into batches."""

    def __init__(self, annotator, batch_tokens=None, max_batch=512):
        self.annotator = annotator.eval()
        batch_tokens = batch_tokens or default_batch_tokens(annotator.device)
        self.batch_tokens = max(batch_tokens, annotator.config.max_length)
        self.max_batch = max_batch
        self.device = annotator.device

    @torch.inference_mode()
    def score_windows(self, windows, on_batch=None):
        """Probabilities (sigmoid of the head's logit) for content-token windows, in input order.

        on_batch(windows_done, windows_total) is called after each encoder batch (progress inside a chunk).
        """
        specials = self.annotator.num_special_tokens
        lengths = [len(w) + specials for w in windows]
        out = np.empty(len(windows), dtype=np.float32)
        use_bf16 = self.device.type == "cuda"
        done = 0
        for batch in length_sorted_batches(lengths, self.batch_tokens, self.max_batch):
            ids, mask = self.annotator.collate([windows[i] for i in batch])
            ids, mask = ids.to(self.device, non_blocking=True), mask.to(self.device, non_blocking=True)
            with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=use_bf16):
                logits = self.annotator(ids, mask)
            out[batch] = torch.sigmoid(logits.float()).cpu().numpy()
            done += len(batch)
            if on_batch is not None:
                on_batch(done, len(windows))
        return out

    def score_texts(self, texts, on_batch=None):
        """(one score per text, token lists): the mean of each text's top/middle/bottom window probabilities
        (see windows.py). on_batch: as in score_windows."""
        token_lists = self.annotator.encode_texts(texts, truncate=False)
        score_windows = self.score_windows if on_batch is None else lambda w: self.score_windows(w, on_batch)
        return score_token_lists(token_lists, self.annotator.window_tokens, score_windows), token_lists


_ANNOTATOR_CACHE = {}


def cached_annotator(path, device):
    """Load each annotator once per worker process (shard tasks reuse it)."""
    key = (os.path.abspath(path), str(device))
    if key not in _ANNOTATOR_CACHE:
        _ANNOTATOR_CACHE[key] = load_annotator(path, device=device)
    return _ANNOTATOR_CACHE[key]


@dataclass
class ScoreTask:
    """One input shard to score into one output file (picklable, for local processes or Ray)."""

    input_path: str
    output_path: str
    annotator_path: str
    device: str = "cpu"
    batch_tokens: int = 0  # padded tokens per encoder batch; 0 = the device's default (default_batch_tokens)
    chunk_docs: int = 1024  # documents tokenized + length-sorted together
    text_field: str = "text"
    id_field: str = "id"
    lang_field: str = "lang"
    keep_fields: list = field(default_factory=list)
    retries: int = 2
    threads: int = 0  # torch intra-op threads in this worker; 0 = default_threads(device, workers=1)
    progress: object = True  # megasnow.utils.progress mode of this shard's own progress (True = auto, False = off)
    strict: bool = False  # a malformed record or a damaged shard stops the run (UserError naming the file)
    annotator_id: str = ""  # annotator_identity of annotator_path, recorded in the shard's stats


def default_threads(device="cpu", workers=1):
    """Torch intra-op threads per scoring worker when --threads is 0 (benchmarks/results/annotate_throughput.md,
    "Threads on a busy machine").

    The cores (OMP_NUM_THREADS when set, else the CPUs this process may use) are split between the workers, but
    only when OpenMP threads sleep while they wait (OMP_WAIT_POLICY=PASSIVE, which tools/annotate.py and
    scripts/quickstart.sh set before torch loads): with the default spin-waiting, 2 threads on 2 busy cores
    scored at 0.48-0.70x the rate of 1 thread and burned twice the CPU time; passive, 0.85-1.29x (1.16-1.29x
    beside a busy neighbour), at the CPU time of 1 thread. Without it: 1 thread. On CUDA: 1 (host threads barely
    matter there).
    """
    if str(device).startswith("cuda"):
        return 1
    cores = int(os.environ.get("OMP_NUM_THREADS") or 0) or len(os.sched_getaffinity(0))
    per_worker = max(1, cores // max(1, workers))
    if os.environ.get("OMP_WAIT_POLICY", "").strip().upper() != "PASSIVE":
        return 1
    return per_worker


def stats_path_for(output_path):
    return output_path[: -len(SCORES_SUFFIX)] + STATS_SUFFIX if output_path.endswith(SCORES_SUFFIX) else output_path + STATS_SUFFIX


def remove_stale_temporaries(output_path):
    """Delete temp files a killed run left beside `output_path` (they never carry a final name)."""
    folder, name = os.path.split(output_path)
    for pattern in (f".{name}.*.tmp", f".{os.path.basename(stats_path_for(output_path))}.*.tmp"):
        for stale in glob.glob(os.path.join(glob.escape(folder), pattern)):
            os.unlink(stale)


def count_documents(path):
    """Records in one shard, for progress totals: Parquet row count from its footer; non-blank JSONL lines
    (a malformed line counts too). Only an estimate: a shard that cannot be read counts what was read."""
    n = 0
    try:
        if path.endswith(PARQUET_SUFFIXES):
            import pyarrow.parquet as pq

            return pq.ParquetFile(path).metadata.num_rows
        with open_text_lines(path) as f:
            for line in f:
                n += bool(line.strip())
    except Exception:  # noqa: BLE001 - the real read reports the damage; this count only feeds an ETA
        pass
    return n


def score_shard(task: ScoreTask, progress=None):
    """Score one shard; retried up to task.retries times; returns the shard's stats dict.

    `progress`: a megasnow.utils.progress.Progress shared across shards (in-process runs); None = this shard
    shows its own (task.progress). Corrupt input data is not retried (it reads the same every time): the shard
    is finished with the documents read before the damage and its stats carry `unreadable` (with task.strict:
    ShardReadError). An I/O error on the input that persists through the retries is handled the same way; a
    UserError (bad annotator folder, strict input error) is raised at once; any other persistent failure raises
    RuntimeError.
    """
    own = progress is None
    if own:
        progress = Progress(total=count_documents(task.input_path), desc=f"score {os.path.basename(task.input_path)}",
                            unit="docs", mode=task.progress)
    first = progress.n
    last_error = None
    try:
        for attempt in range(task.retries + 1):
            final = attempt == task.retries
            progress.rewind(first)
            try:
                return _score_shard_once(task, progress, raise_transient=not final)
            except UserError as e:
                if task.strict or not getattr(e, "transient", False):
                    raise  # a bad annotator folder or a strict input error will not fix itself on retry
                last_error = e  # an I/O error on the input (ShardReadError.transient): read the shard again
                log.warning("scoring %s failed (attempt %d/%d): %s", task.input_path, attempt + 1, task.retries + 1, e)
                remove_stale_temporaries(task.output_path)
            except Exception as e:  # noqa: BLE001 - any failure: clean up, retry, then report the shard
                last_error = e
                log.warning("scoring %s failed (attempt %d/%d): %s", task.input_path, attempt + 1, task.retries + 1, e)
                remove_stale_temporaries(task.output_path)
        raise RuntimeError(f"scoring {task.input_path} failed after {task.retries + 1} attempts: {last_error}") from last_error
    finally:
        if own:
            progress.close()


def _score_shard_once(task: ScoreTask, progress, raise_transient=False):
    torch.set_num_threads(task.threads or default_threads(task.device))
    remove_stale_temporaries(task.output_path)
    start = time.perf_counter()
    annotator = cached_annotator(task.annotator_path, task.device)
    scorer = BatchedScorer(annotator, batch_tokens=task.batch_tokens)
    skips = SkipLog()
    shard_name = os.path.basename(task.input_path)
    counts = {"documents": 0, "scored": 0}
    hist = np.zeros(20, dtype=np.int64)
    made_by = {**score_identity(task, task.annotator_id or annotator_identity(task.annotator_path)),
               "annotator_path": os.path.abspath(task.annotator_path), "input": input_identity(task.input_path)}

    def flush(chunk, out):
        texts = [c["text"] for c in chunk if c["text"] is not None]
        base = progress.n  # progress moves per encoder batch, in documents (windows done / windows in chunk)
        scores, token_lists = scorer.score_texts(
            texts, on_batch=lambda done, total: progress.advance_to(base + len(chunk) * done / total)
        ) if texts else ([], [])
        progress.advance_to(base + len(chunk))
        it = iter(zip(scores, token_lists))
        for c in chunk:
            row = {"id": c["id"], "score": None, "lang": c["lang"], "pos": c["pos"]}
            if c["text"] is None:
                row["skipped"] = c["reason"]
            else:
                score, ids = next(it)
                row["score"] = round(float(score), 7)
                row["encoder_tokens"] = len(ids)
                counts["scored"] += 1
                hist[min(int(score * 20), 19)] += 1
            row.update(c["keep"])
            out.write(json.dumps(row, ensure_ascii=False) + "\n")

    unreadable = None
    with atomic_write(task.output_path, "w", encoding="utf-8") as out:
        chunk = []
        try:
            for pos, rec in iter_records(task.input_path, skips=skips, strict=task.strict):
                counts["documents"] += 1
                text, reason = check_document_text(rec.get(task.text_field))
                if reason:
                    skips.add(reason, f"{task.input_path}:{pos}")
                doc_id = rec.get(task.id_field)
                chunk.append({
                    "id": doc_id if doc_id is not None else f"{shard_name}:{pos}",
                    "lang": rec.get(task.lang_field),
                    "pos": pos,
                    "text": text,
                    "reason": reason,
                    "keep": {k: rec.get(k) for k in task.keep_fields},
                })
                if len(chunk) >= task.chunk_docs:
                    flush(chunk, out)
                    chunk = []
        except ShardReadError as e:  # the shard stopped being readable: keep the documents before the damage
            if task.strict or (e.transient and raise_transient):
                raise  # strict: stop the run; an I/O error a retry may cure: score_shard reads the shard again
            log.warning("input shard %s is unreadable after %d records (their scores are kept): %s",
                        task.input_path, e.records, e.error)
            unreadable = {"error": e.error, "records_read": e.records}
        if chunk:
            flush(chunk, out)
        seconds = time.perf_counter() - start
        stats = {
            "input": task.input_path,
            "output": task.output_path,
            "documents": counts["documents"],
            "scored": counts["scored"],
            "skipped": dict(skips.counts),
            "unreadable": unreadable,
            "skipped_examples": skips.examples,
            "score_histogram_20_bins": hist.tolist(),
            "seconds": round(seconds, 3),
            "files_per_s": round(counts["documents"] / seconds, 4) if seconds > 0 else None,
            "threads": torch.get_num_threads(),
            "made_by": made_by,  # checked on rerun (plan_score_tasks)
        }
        # Stats first, scores file last: the scores file under its final name marks the shard done.
        atomic_write_text(stats_path_for(task.output_path), json.dumps(stats, indent=2))
    return stats


def output_path_for(input_path, common_root, output_dir):
    """`<output_dir>/<input path relative to the inputs' common folder, suffix stripped>.scores.jsonl`."""
    rel = os.path.relpath(os.path.abspath(input_path), common_root)
    for suffix in sorted(JSONL_SUFFIXES + PARQUET_SUFFIXES, key=len, reverse=True):
        if rel.endswith(suffix):
            rel = rel[: -len(suffix)]
            break
    return os.path.join(output_dir, rel + SCORES_SUFFIX)


def input_identity(path, with_hash=True):
    """{size, mtime_ns, sha256} of an input shard: what its scores were made from (see same_input)."""
    import hashlib

    st = os.stat(path)
    out = {"size": st.st_size, "mtime_ns": st.st_mtime_ns}
    if with_hash:
        h = hashlib.sha256()
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
        out["sha256"] = h.hexdigest()
    return out


def same_input(recorded, path):
    """Whether `path` still holds the bytes `recorded` (an input_identity) describes: same size and mtime, or (a
    copied or touched file) same size and content hash."""
    if not recorded:
        return False
    now = input_identity(path, with_hash=False)
    if now["size"] != recorded.get("size"):
        return False
    return now["mtime_ns"] == recorded.get("mtime_ns") or input_identity(path)["sha256"] == recorded.get("sha256")


# task fields that change what a scores file holds: a rerun with other values is another scoring
SCORE_SETTINGS = ("text_field", "id_field", "lang_field", "keep_fields")


def score_identity(task, annotator_id):
    """What a shard's scores depend on besides its input bytes (recorded in its stats, checked on rerun)."""
    return {"annotator_id": annotator_id, **{k: getattr(task, k) for k in SCORE_SETTINGS}}


def plan_score_tasks(inputs, output_dir, annotator_path, overwrite=False, **task_kwargs):
    """(all tasks, tasks still to run). A shard is done when its scores and stats files exist and its stats record
    this annotator (annotator_identity), the same settings (SCORE_SETTINGS) and the same input bytes (same_input).
    A done shard that differs is a UserError naming the output folder and what differs, unless `overwrite`: then
    it is scored again. An empty `annotator_path` (readers of a scores folder: selection, synthesis seeds) checks
    only that each shard's two files exist."""
    annotator_id = annotator_identity(annotator_path) if annotator_path else ""
    task_kwargs["annotator_id"] = annotator_id
    files = [os.path.abspath(f) for f in expand_inputs(inputs)]
    root = os.path.commonpath([os.path.dirname(f) for f in files])
    tasks = [ScoreTask(f, output_path_for(f, root, os.path.abspath(output_dir)), annotator_path, **task_kwargs) for f in files]
    first = {}
    for t in tasks:
        other = first.setdefault(t.output_path, t.input_path)
        if other != t.input_path:
            raise UserError(f"input shards {other} and {t.input_path} would both write {t.output_path}; "
                            "give shards distinct names")
    todo, differ = [], {}
    for t in tasks:
        stats_path = stats_path_for(t.output_path)
        if not (os.path.exists(t.output_path) and os.path.exists(stats_path)):
            todo.append(t)
            continue
        reason = _differs(t, stats_path) if annotator_path else ""
        if reason:
            differ.setdefault(reason, []).append(t)
            todo.append(t)
    if differ and not overwrite:
        n = sum(len(v) for v in differ.values())
        what = "; ".join(f"{len(v)} shard(s) {reason} (first: {v[0].input_path})" for reason, v in differ.items())
        raise UserError(f"--output {output_dir} holds scores that do not match this run: {what}; nothing was "
                        f"changed. Give a new --output, or --overwrite to score these {n} shard(s) again")
    return tasks, todo


def _differs(task, stats_path):
    """Why a finished shard's scores are not this task's ('' when they are)."""
    try:
        with open(stats_path, encoding="utf-8") as f:
            stats = json.load(f)
    except (OSError, ValueError):
        return "have an unreadable stats file"
    made = stats.get("made_by")
    if not isinstance(made, dict):
        return "were scored before megasnow recorded the annotator and input in the stats"
    if made.get("annotator_id") != task.annotator_id:
        return (f"were scored by another annotator (id {made.get('annotator_id')}, {made.get('annotator_path')}; "
                f"this one is {task.annotator_id}, {os.path.abspath(task.annotator_path)})")
    for k in SCORE_SETTINGS:
        if made.get(k) != getattr(task, k):
            return f"were scored with {k}={made.get(k)!r} (this run: {getattr(task, k)!r})"
    if not same_input(made.get("input"), task.input_path):
        return "have an input shard that changed since it was scored"
    return ""


def score_corpus(inputs, output_dir, annotator_path, executor="local", workers=1, ray_address=None,
                 progress=True, on_damaged=None, overwrite=False, **task_kwargs):
    """Score every shard under `inputs`; returns the summary (also written to score_summary.json).

    progress (megasnow.utils.progress mode; True = auto, False = off): one local worker shows one progress for
    the whole corpus, per document with a rate and an ETA (a bar on a terminal, log lines elsewhere); several
    workers or Ray log each shard's progress as lines. on_damaged(dict) is called for each shard that stopped
    being readable (input, error, records_read); tools print it as a warning. Raises UserError on a bad
    annotator folder or inputs, and with strict=True on the first malformed record or damaged shard.
    """
    expand_inputs(inputs)  # fail fast, before anything is written or loaded: inputs first, then the annotator
    read_annotator_config(annotator_path)
    device = task_kwargs.get("device", "cpu")
    if not task_kwargs.get("threads"):
        task_kwargs["threads"] = default_threads(device, workers)
    in_process = executor == "local" and workers <= 1
    # several workers: their bars would interleave, so each logs its shard's progress as whole lines
    task_kwargs["progress"] = progress if in_process or resolve_mode(progress) == "off" else "log"
    tasks, todo = plan_score_tasks(inputs, output_dir, annotator_path, overwrite=overwrite, **task_kwargs)
    start = time.perf_counter()
    if not todo:
        fresh = []  # nothing to score: no progress line claiming "done 0 docs"
    elif in_process:
        total = sum(count_documents(t.input_path) for t in todo)
        with Progress(total=total, desc="score", unit="docs", mode=progress) as bar:
            fresh = [score_shard(t, progress=bar) for t in todo]
    else:
        fresh = run_tasks(score_shard, todo, executor=executor, workers=workers, desc="score shards",
                          ray_address=ray_address)
    seconds = time.perf_counter() - start
    done = {t.output_path: s for t, s in zip(todo, fresh)}
    per_shard = []
    for t in tasks:
        if t.output_path in done:
            per_shard.append(done[t.output_path])
        else:
            with open(stats_path_for(t.output_path), encoding="utf-8") as f:
                per_shard.append(json.load(f))
    skipped = {}
    for s in per_shard:
        for reason, n in s["skipped"].items():
            skipped[reason] = skipped.get(reason, 0) + n
    unreadable = [{"input": s["input"], **s["unreadable"]} for s in per_shard if s.get("unreadable")]
    if on_damaged is not None:
        for u in unreadable:
            on_damaged(u)
    fresh_docs = sum(s["documents"] for s in fresh)
    summary = {
        "shards": len(tasks),
        "shards_scored_now": len(todo),
        "shards_skipped_done": len(tasks) - len(todo),
        "documents": sum(s["documents"] for s in per_shard),
        "scored": sum(s["scored"] for s in per_shard),
        "skipped": skipped,
        "unreadable_shards": unreadable,
        "seconds_this_run": round(seconds, 3),
        "files_per_s_this_run": round(fresh_docs / seconds, 4) if todo and seconds > 0 else None,
        "rate_this_run": format_rate(fresh_docs, seconds, "docs") if todo else None,
        "annotator": os.path.abspath(annotator_path),
        "annotator_id": tasks[0].annotator_id if tasks else annotator_identity(annotator_path),
        "task": {k: v for k, v in asdict(tasks[0]).items() if k not in ("input_path", "output_path")} if tasks else {},
    }
    atomic_write_text(os.path.join(output_dir, "score_summary.json"), json.dumps(summary, indent=2))
    return summary


def read_scores(path):
    """Rows of one scores file."""
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]
