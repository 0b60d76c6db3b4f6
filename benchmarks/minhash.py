"""MinHash benchmark: signatures per CPU-second (per core) of megasnow's C++ path vs datasketch, and vs datatrove's
MinHash with its own defaults doing the same work (signatures only in memory; and a JSONL file to candidate pairs on
disk), in one run on the same data (256 permutations, 5-gram shingles); LSH pair precision/recall vs exact Jaccard;
1 vs 2 C++ threads.

python benchmarks/minhash.py [--corpus-mb 220] [--datatrove-mb 10] [--repeats 3] [--parts datasketch,datatrove,...]
The corpus (real code from this machine: Python stdlib + site-packages, /usr/include, /usr/lib) is built once into
.bench_data/code_corpus/ as The Stack-style JSONL shards. Rates divide by CPU seconds of this process (the
machine is shared, so wall time depends on the neighbours; every baseline here is single-threaded).
"""
import argparse
import json
import os
import random
import re
import statistics
import sys
import tempfile
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from megasnow.curate.languages import language_of_path  # noqa: E402
from megasnow.curate.minhash import MinHasher, jaccard, optimal_param, shingle_set  # noqa: E402

CORPUS = os.path.join(ROOT, ".bench_data", "code_corpus")
SOURCES = [os.path.dirname(os.__file__), "/usr/include", "/usr/lib"]


def build_corpus(min_mb, dest=CORPUS, shard_mb=32):
    """Real source files of this machine as JSONL shards (content, repo, path, lang, ext); returns shard paths."""
    done = os.path.join(dest, "DONE")
    if os.path.exists(done) and json.load(open(done))["min_mb"] >= min_mb:
        return sorted(os.path.join(dest, n) for n in os.listdir(dest) if n.endswith(".jsonl"))
    os.makedirs(dest, exist_ok=True)
    total, shard, out = 0, 0, None
    seen = set()
    for src in SOURCES:
        for root, dirs, names in os.walk(src):
            dirs.sort()
            for n in sorted(names):
                full = os.path.join(root, n)
                rel = os.path.relpath(full, src)
                if language_of_path(n) is None or os.path.islink(full):
                    continue
                try:
                    st = os.stat(full)
                    if st.st_size > 1_000_000 or st.st_size == 0 or (st.st_dev, st.st_ino) in seen:
                        continue
                    seen.add((st.st_dev, st.st_ino))
                    text = open(full, encoding="utf-8").read()
                except (OSError, UnicodeDecodeError):
                    continue
                parts = rel.split(os.sep)
                repo = "/".join(parts[:2]) if parts[0] == "site-packages" and len(parts) > 2 else \
                    f"{os.path.basename(src)}/{parts[0]}" if len(parts) > 1 else os.path.basename(src)
                if out is None or out.tell() > shard_mb << 20:
                    if out:
                        out.close()
                    out = open(os.path.join(dest, f"shard-{shard:04d}.jsonl"), "w", encoding="utf-8")
                    shard += 1
                out.write(json.dumps({"content": text, "max_stars_repo_name": repo, "max_stars_repo_path": rel,
                                      "lang": language_of_path(n), "ext": os.path.splitext(n)[1][1:]}) + "\n")
                total += len(text.encode("utf-8"))
                if total >= min_mb * 1e6:
                    break
            if total >= min_mb * 1e6:
                break
        if total >= min_mb * 1e6:
            break
    out.close()
    json.dump({"min_mb": min_mb, "bytes": total}, open(done, "w"))
    return sorted(os.path.join(dest, n) for n in os.listdir(dest) if n.endswith(".jsonl"))


def load_texts(shards):
    texts = []
    for s in shards:
        with open(s, encoding="utf-8") as f:
            texts += [json.loads(line)["content"] for line in f]
    return texts


def timed(fn, repeats):
    """Median (cpu seconds, wall seconds) of `repeats` calls; cpu is this process's user+system time."""
    cpu, wall = [], []
    for _ in range(repeats):
        c0, t0 = time.process_time(), time.perf_counter()
        fn()
        cpu.append(time.process_time() - c0)
        wall.append(time.perf_counter() - t0)
    return statistics.median(cpu), statistics.median(wall)


def rate(texts, cpu, wall):
    mb = sum(len(t.encode("utf-8")) for t in texts) / 1e6
    return {"docs": len(texts), "mb": round(mb, 2), "cpu_s": round(cpu, 3), "wall_s": round(wall, 3),
            "mb_per_cpu_s": round(mb / cpu, 3), "docs_per_cpu_s": round(len(texts) / cpu, 1),
            "cores_used": round(cpu / wall, 2)}


def megasnow_signatures(texts, threads=1, batch=1024):
    h = MinHasher(256, 5, seed=42)
    for i in range(0, len(texts), batch):
        h.signatures(texts[i:i + batch], threads=threads)


_WORD = re.compile(r"[A-Za-z0-9_\x80-\U0010ffff]+")


def datasketch_signatures(texts):
    """datasketch MinHash(256) fed the same 5-gram word shingles (tokenized in Python like our C++ does)."""
    from datasketch import MinHash

    for t in texts:
        words = _WORD.findall(t.lower())
        shingles = {" ".join(words[i:i + 5]).encode() for i in range(max(1, len(words) - 4))} if words else set()
        m = MinHash(num_perm=256)
        if shingles:
            m.update_batch(list(shingles))


DT_BUCKETS, DT_ROWS = 32, 8  # 256 permutations as 32 bands x 8 rows, for datatrove and megasnow alike


def datatrove_signature_stage(config):
    """datatrove's MinhashDedupSignature with its defaults (xxhash64 shingle hashes, its text normalisation, the
    English spaCy word tokenizer that `language="en"` selects, 5-grams) but 32 buckets x 8 hashes = 256
    permutations. Needs `pip install spacy "xxhash<4"` (xxhash 4 refuses str input)."""
    from datatrove.pipeline.dedup.minhash import MinhashDedupSignature

    return MinhashDedupSignature(os.path.join(config["dir"], "sigs"), config=config["minhash"])


def datatrove_config(work):
    from datatrove.pipeline.dedup.minhash import MinhashConfig

    return {"dir": work, "minhash": MinhashConfig(num_buckets=DT_BUCKETS, hashes_per_bucket=DT_ROWS)}


def datatrove_signatures_in_memory(stage, texts):
    """The per-document work of datatrove's signature stage and nothing else: shingles, then the signature."""
    for t in texts:
        shingles = stage.get_shingles(t)
        if shingles.size:
            stage.get_signature(shingles)


def datatrove_to_pairs_on_disk(shard_dir, work):
    """datatrove from a JSONL file to candidate pairs on disk: JsonlReader -> MinhashDedupSignature (signatures,
    packed per bucket, written, then each bucket file read back, sorted, rewritten and verified) ->
    MinhashDedupBuckets (one task per bucket: merge the sorted files, write the pairs). Returns (stage-1 cpu s,
    stage-2 cpu s, pairs written)."""
    from datatrove.pipeline.dedup.minhash import MinhashDedupBuckets
    from datatrove.pipeline.readers import JsonlReader

    cfg = datatrove_config(work)
    reader = JsonlReader(shard_dir, text_key="content", glob_pattern="*.jsonl")
    c0 = time.process_time()
    datatrove_signature_stage(cfg).run(reader.run(rank=0, world_size=1), rank=0, world_size=1)
    c1 = time.process_time()
    buckets = MinhashDedupBuckets(os.path.join(work, "sigs"), os.path.join(work, "buckets"), config=cfg["minhash"])
    for rank in range(DT_BUCKETS):
        buckets.run(rank=rank, world_size=DT_BUCKETS)
    c2 = time.process_time()
    # not timed: the pairs written (one record per bucket in which two documents share a signature band)
    records = [np.fromfile(os.path.join(work, "buckets", n), dtype="<u4").reshape(-1, 4)
               for n in sorted(os.listdir(os.path.join(work, "buckets")))]
    records = np.concatenate(records) if records else np.zeros((0, 4), np.uint32)
    return c1 - c0, c2 - c1, candidate_summary(records[:, [1, 3]].astype(np.int64), len(records))


def candidate_summary(pairs, written):
    """How many pairs a tool wrote, how many distinct document pairs and documents they join."""
    pairs = np.unique(np.sort(pairs, axis=1), axis=0) if len(pairs) else pairs
    return {"pairs_written": int(written), "distinct_pairs": int(len(pairs)),
            "documents_in_pairs": int(len(np.unique(pairs))) if len(pairs) else 0}


def megasnow_tasks(work):
    """The task dicts of megasnow's signatures / buckets / candidates stages for one prepared shard, 32 x 8 bands."""
    from megasnow.config import load_config, to_dict
    from megasnow.curate.config import CurateConfig
    from megasnow.curate.pipeline import BAND_GROUPS

    cfg = to_dict(load_config(CurateConfig, overrides=[f"near_dedup.bands={DT_BUCKETS}", f"near_dedup.rows={DT_ROWS}"]))
    base = {"cfg": cfg, "work": work, "output": work}
    step = DT_BUCKETS // BAND_GROUPS
    groups = [{**base, "shards": ["00000"], "offsets": [0], "start": a, "stop": a + step, "key": f"bands-{a:03d}"}
              for a in range(0, DT_BUCKETS, step)]
    return {**base, "shard": "00000", "bands": DT_BUCKETS, "rows": DT_ROWS}, groups, base


def megasnow_to_pairs_on_disk(work, n_docs):
    """megasnow's own stage functions, as the pipeline runs them on one worker: signature_shard (read the JSONL,
    signatures, band hashes, band-major .npy), band_edges (8 tasks of 4 bands: sort each band, bucket pairs, .npy),
    merge_candidates (all pairs, unique, .npy). Returns (signature cpu s, buckets + candidates cpu s, pairs)."""
    from megasnow.curate.near_stages import band_edges, merge_candidates, signature_shard

    sig_task, groups, base = megasnow_tasks(work)
    np.savez(os.path.join(work, "exact.npz"), removed=np.zeros(n_docs, dtype=bool))  # no exact dedup here
    c0 = time.process_time()
    signature_shard(sig_task)
    c1 = time.process_time()
    for g in groups:
        band_edges(g)
    written = merge_candidates(base)["candidate_pairs"]
    c2 = time.process_time()
    return c1 - c0, c2 - c1, candidate_summary(np.load(os.path.join(work, "candidates.npy")), written)


def datatrove_like_for_like(texts, repeats):
    """datatrove vs megasnow on the same sample in the same run, repeats interleaved so both see the same
    neighbours; CPU seconds of this process (both are single-threaded). Two comparisons of equal work:
    (a) signatures only, in memory; (b) a JSONL file -> bucketed signatures on disk -> candidate pairs on disk."""
    import shutil

    mb = sum(len(t.encode("utf-8")) for t in texts) / 1e6
    base = tempfile.mkdtemp(prefix="minhash-dt-")
    shard_dir = os.path.join(base, "input")
    os.makedirs(shard_dir)
    prepared = os.path.join(base, "prepared.jsonl")
    with open(prepared, "w", encoding="utf-8") as f:  # megasnow's prepared shard and datatrove's input: same bytes
        for i, t in enumerate(texts):
            f.write(json.dumps({"id": str(i), "content": t}) + "\n")
    shutil.copy(prepared, os.path.join(shard_dir, "00000.jsonl"))
    stage = datatrove_signature_stage(datatrove_config(base))
    datatrove_signatures_in_memory(stage, texts[:20])  # warm-up: datatrove loads its spaCy tokenizer on first use
    megasnow_signatures(texts[:20])
    runs = {k: [] for k in ("dt_mem", "ms_mem", "dt_shingles", "dt_disk", "ms_disk")}
    detail = {"dt_stage1": [], "dt_stage2": [], "ms_signatures": [], "ms_buckets": []}
    pairs = {}
    try:
        for _ in range(repeats):
            c0 = time.process_time()
            datatrove_signatures_in_memory(stage, texts)
            runs["dt_mem"].append(time.process_time() - c0)
            c0 = time.process_time()
            for t in texts:
                stage.get_shingles(t)
            runs["dt_shingles"].append(time.process_time() - c0)
            c0 = time.process_time()
            megasnow_signatures(texts, batch=512)
            runs["ms_mem"].append(time.process_time() - c0)
            work = os.path.join(base, "dt")
            s1, s2, pairs["datatrove"] = datatrove_to_pairs_on_disk(shard_dir, work)
            shutil.rmtree(work)
            runs["dt_disk"].append(s1 + s2)
            detail["dt_stage1"].append(s1)
            detail["dt_stage2"].append(s2)
            work = os.path.join(base, "ms")
            os.makedirs(os.path.join(work, "prepared"))
            shutil.copy(prepared, os.path.join(work, "prepared", "00000.jsonl"))
            a, b, pairs["megasnow"] = megasnow_to_pairs_on_disk(work, len(texts))
            shutil.rmtree(work)
            runs["ms_disk"].append(a + b)
            detail["ms_signatures"].append(a)
            detail["ms_buckets"].append(b)
    finally:
        shutil.rmtree(base, ignore_errors=True)
    med = {k: statistics.median(v) for k, v in {**runs, **detail}.items()}
    per = lambda cpu: round(mb / cpu, 3)  # noqa: E731
    return {
        "docs": len(texts), "mb": round(mb, 2), "repeats": repeats, "permutations": DT_BUCKETS * DT_ROWS,
        "bands_x_rows": f"{DT_BUCKETS}x{DT_ROWS}", "cpu_s_median": {k: round(v, 3) for k, v in med.items()},
        "cpu_s_all": {k: [round(x, 3) for x in v] for k, v in {**runs, **detail}.items()},
        "signatures_in_memory": {"datatrove_mb_per_cpu_s": per(med["dt_mem"]), "megasnow_mb_per_cpu_s":
                                 per(med["ms_mem"]), "ratio": round(med["dt_mem"] / med["ms_mem"], 1),
                                 "datatrove_shingling_share": round(med["dt_shingles"] / med["dt_mem"], 3)},
        "jsonl_to_pairs_on_disk": {"datatrove_mb_per_cpu_s": per(med["dt_disk"]), "megasnow_mb_per_cpu_s":
                                   per(med["ms_disk"]), "ratio": round(med["dt_disk"] / med["ms_disk"], 1),
                                   "candidate_pairs": pairs},
        "load_average": os.getloadavg(),
    }


def sample(texts, mb, seed=1):
    """A random sample of about `mb` MB of the texts (the same for every tool)."""
    out, size = [], 0
    for t in random.Random(seed).sample(texts, len(texts)):
        if size >= mb * 1e6:
            break
        out.append(t)
        size += len(t.encode("utf-8"))
    return out


def lsh_pairs(sig, bands, rows):
    h = MinHasher.band_hashes(sig, bands, rows)
    pairs = set()
    for j in range(bands):
        buckets = {}
        for i, v in enumerate(h[:, j].tolist()):
            buckets.setdefault(v, []).append(i)
        for members in buckets.values():
            if 1 < len(members) <= 2000:
                pairs.update((a, b) for k, a in enumerate(members) for b in members[k + 1:])
    return pairs


def mutate(text, fraction, rng):
    """Replace a `fraction` of the lines by reversed copies (a near duplicate of controllable similarity)."""
    lines = text.split("\n")
    return "\n".join(l[::-1] if rng.random() < fraction else l for l in lines)


def accuracy(texts, n_sample, n_planted, seed=0):
    """Pair precision/recall of LSH candidates vs exact Jaccard >= 0.7, over a random sample plus planted copies.

    Ground truth: every pair found by a very loose LSH (64 bands x 4 rows: a pair at Jaccard 0.7 is missed with
    probability 1e-8) whose exact shingle-set Jaccard is >= 0.7.
    """
    rng = random.Random(seed)
    sample = rng.sample(texts, n_sample)
    bases = rng.sample(sample, n_planted)
    sample += [mutate(b, rng.uniform(0.0, 0.35), rng) for b in bases]
    c0 = time.process_time()
    sig, counts = MinHasher(256, 5, seed=42).signatures(sample)
    sig_cpu = time.process_time() - c0
    sets = [shingle_set(t) for t in sample]
    keep = counts > 0
    idx = np.flatnonzero(keep)
    sig = sig[idx]
    cand_loose = lsh_pairs(sig, 64, 4)
    truth = {(a, b) for a, b in cand_loose if jaccard(sets[idx[a]], sets[idx[b]]) >= 0.7}
    natural = {(a, b) for a, b in truth if idx[b] < n_sample}  # both files real (not planted copies)
    out = {"documents": len(idx), "true_pairs": len(truth), "true_pairs_natural": len(natural)}
    for name, (b, r), verify in [("25x10 LSH only", (25, 10), False), ("25x10 + verify (default)", (25, 10), True),
                                 ("recall-weighted (fn 0.8) + verify", optimal_param(0.7, 256, 0.2, 0.8), True)]:
        pred = lsh_pairs(sig, b, r)
        extra = {}
        if verify:  # what the pipeline adds: shingle sets of the paired documents, then one Jaccard per pair
            c0 = time.process_time()
            mine = {i: shingle_set(sample[idx[i]]) for i in {i for pair in pred for i in pair}}
            pred = {(x, y) for x, y in pred if jaccard(mine[x], mine[y]) >= 0.7}
            extra = {"verify_cpu_s": round(time.process_time() - c0, 3), "signature_cpu_s": round(sig_cpu, 3)}
        tp = len(pred & truth)
        pred_nat = {(x, y) for x, y in pred if idx[y] < n_sample}
        out[name] = {"bands": b, "rows": r, "predicted": len(pred), "precision": tp / max(1, len(pred)),
                     "recall": tp / max(1, len(truth)),
                     "precision_natural": len(pred_nat & natural) / max(1, len(pred_nat)),
                     "recall_natural": len(pred_nat & natural) / max(1, len(natural)), **extra}
    return out


PARTS = ("datasketch", "datatrove", "threads", "accuracy")


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--corpus-mb", type=float, default=220)
    p.add_argument("--datatrove-mb", type=float, default=10,
                   help="size of the random sample datatrove and megasnow both run on (datatrove does ~0.6 MB/CPU-s)")
    p.add_argument("--repeats", type=int, default=3, help="repeats of every timing (median reported)")
    p.add_argument("--parts", default=",".join(PARTS), help=f"comma-separated subset of {','.join(PARTS)}; the "
                   "results of the parts run replace theirs in --out, the others are kept")
    p.add_argument("--sample", type=int, default=6000, help="documents in the precision/recall sample")
    p.add_argument("--planted", type=int, default=300, help="mutated copies added to the sample")
    p.add_argument("--out", default=os.path.join(ROOT, "benchmarks", "results", "minhash.json"))
    args = p.parse_args()
    parts = [x for x in args.parts.split(",") if x]
    unknown = sorted(set(parts) - set(PARTS))
    if unknown:
        p.error(f"--parts: unknown {unknown}; choose from {list(PARTS)}")
    texts = load_texts(build_corpus(args.corpus_mb))
    res = {}
    if os.path.exists(args.out):
        with open(args.out) as f:
            res = json.load(f)
    for stale in ("datatrove", "megasnow_on_datatrove_sample", "speedup_vs_datatrove"):  # the old, unequal figure
        res.pop(stale, None)
    res.update({"num_perm": 256, "ngram": 5})
    if "datasketch" in parts:
        res["load_average_start"] = os.getloadavg()[0]
        res["megasnow"] = rate(texts, *timed(lambda: megasnow_signatures(texts), args.repeats))
        res["datasketch"] = rate(texts, *timed(lambda: datasketch_signatures(texts), 1))
        res["speedup_vs_datasketch"] = round(res["megasnow"]["mb_per_cpu_s"] / res["datasketch"]["mb_per_cpu_s"], 2)
    if "datatrove" in parts:
        res["datatrove_like_for_like"] = datatrove_like_for_like(sample(texts, args.datatrove_mb), args.repeats)
    if "threads" in parts:
        # 1 vs 2 C++ threads, interleaved so both see the same neighbours; cores_used shows what the machine gave
        threads = {1: [], 2: []}
        for _ in range(args.repeats):
            for n in (1, 2):
                c0, t0 = time.process_time(), time.perf_counter()
                megasnow_signatures(texts, threads=n)
                threads[n].append((time.process_time() - c0, time.perf_counter() - t0))
        res["threads"] = {str(n): {"wall_s": round(statistics.median(w for _, w in v), 3),
                                   "cores_used": round(statistics.median(c / w for c, w in v), 2)}
                          for n, v in threads.items()}
        res["threads"]["load_average"] = os.getloadavg()[0]
    if "accuracy" in parts:
        res["accuracy"] = accuracy(texts, args.sample, args.planted)
    print(json.dumps({k: res[k] for k in res if k in parts or k == "datatrove_like_for_like" and "datatrove" in parts},
                     indent=1))
    with open(args.out, "w") as f:
        json.dump(res, f, indent=1)


if __name__ == "__main__":
    main()
