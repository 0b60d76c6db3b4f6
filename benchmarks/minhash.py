"""MinHash benchmark: signatures per CPU-second (per core) of megasnow's C++ path vs datasketch and datatrove's MinHash
stage with its own defaults (256 permutations, 5-gram shingles), in one run on the same corpus; LSH pair
precision/recall vs exact Jaccard; 1 vs 2 C++ threads.

python benchmarks/minhash.py [--corpus-mb 220] [--datatrove-budget-s 300] [--repeats 3]
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


def datatrove_stage(texts):
    """datatrove's MinhashDedupSignature stage with its defaults (xxhash64 shingle hashes, the English spaCy word
    tokenizer, its text normalisation, 5-grams) but 32 buckets x 8 hashes = 256 permutations; writes its
    signature files like in production. Needs `pip install spacy "xxhash<4"` (xxhash 4 refuses str input)."""
    from datatrove.data import Document
    from datatrove.pipeline.dedup.minhash import MinhashConfig, MinhashDedupSignature

    with tempfile.TemporaryDirectory() as tmp:
        stage = MinhashDedupSignature(tmp, config=MinhashConfig(num_buckets=32, hashes_per_bucket=8))
        stage.run((Document(text=t, id=str(i)) for i, t in enumerate(texts)), rank=0, world_size=1)


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


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--corpus-mb", type=float, default=220)
    p.add_argument("--datatrove-budget-s", type=float, default=300,
                   help="datatrove runs on the largest sample it should finish in this many (wall) seconds")
    p.add_argument("--repeats", type=int, default=3, help="repeats of the megasnow timings (baselines run once)")
    p.add_argument("--sample", type=int, default=6000, help="documents in the precision/recall sample")
    p.add_argument("--planted", type=int, default=300, help="mutated copies added to the sample")
    p.add_argument("--out", default=os.path.join(ROOT, "benchmarks", "results", "minhash.json"))
    args = p.parse_args()
    texts = load_texts(build_corpus(args.corpus_mb))
    res = {"load_average_start": os.getloadavg()[0], "num_perm": 256, "ngram": 5}
    res["megasnow"] = rate(texts, *timed(lambda: megasnow_signatures(texts), args.repeats))
    res["datasketch"] = rate(texts, *timed(lambda: datasketch_signatures(texts), 1))
    probe = sample(texts, 2)
    _, probe_wall = timed(lambda: datatrove_stage(probe), 1)
    probe_mb = sum(len(t.encode("utf-8")) for t in probe) / 1e6
    dt_mb = min(res["megasnow"]["mb"], 0.9 * args.datatrove_budget_s * probe_mb / probe_wall)
    dt_texts = texts if dt_mb >= res["megasnow"]["mb"] else sample(texts, dt_mb)
    res["datatrove"] = rate(dt_texts, *timed(lambda: datatrove_stage(dt_texts), 1))
    res["megasnow_on_datatrove_sample"] = rate(dt_texts,
                                               *timed(lambda: megasnow_signatures(dt_texts), args.repeats))
    res["speedup_vs_datasketch"] = round(res["megasnow"]["mb_per_cpu_s"] / res["datasketch"]["mb_per_cpu_s"], 2)
    res["speedup_vs_datatrove"] = round(res["megasnow_on_datatrove_sample"]["mb_per_cpu_s"]
                                        / res["datatrove"]["mb_per_cpu_s"], 2)
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
    res["accuracy"] = accuracy(texts, args.sample, args.planted)
    print(json.dumps(res, indent=1))
    with open(args.out, "w") as f:
        json.dump(res, f, indent=1)


if __name__ == "__main__":
    main()
