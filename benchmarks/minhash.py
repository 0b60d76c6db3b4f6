"""MinHash benchmark: signatures/s per core of megasnow's C++ path vs datasketch and datatrove's MinHash stage
(256 permutations, 5-gram word shingles, same run), and LSH pair precision/recall vs exact Jaccard.

python benchmarks/minhash.py [--corpus-mb 220] [--baseline-mb 3] [--repeats 3]
The corpus (real code from this machine: Python stdlib + site-packages, /usr/include) is built once into
.bench_data/code_corpus/ as The Stack-style JSONL shards.
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
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


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
    """datatrove's MinhashDedupSignature stage (5-grams, 32 buckets x 8 hashes = 256) writing its signature files.

    Its English word tokenizer needs spaCy (not installed); we give it a regex word tokenizer like ours, which
    is cheaper than spaCy. Its default xxhash shingle hash fails with the current xxhash (str input), so it
    hashes shingles with its sha1 option (64-bit), as datatrove does when xxhash is absent.
    """
    from datatrove.data import Document
    from datatrove.pipeline.dedup.minhash import MinhashConfig, MinhashDedupSignature
    from datatrove.utils.hashing import HashConfig
    from datatrove.utils.word_tokenizers import WordTokenizer

    class RegexWords(WordTokenizer):
        def word_tokenize(self, text):
            return _WORD.findall(text)

        def sent_tokenize(self, text):
            return text.split("\n")

        def span_tokenize(self, text):
            return [(m.start(), m.end()) for m in re.finditer(r"[^\n]+", text)]

    with tempfile.TemporaryDirectory() as tmp:
        cfg = MinhashConfig(n_grams=5, num_buckets=32, hashes_per_bucket=8, hash_config=HashConfig(64, "sha1"))
        stage = MinhashDedupSignature(tmp, config=cfg, language=RegexWords())
        stage.run((Document(text=t, id=str(i)) for i, t in enumerate(texts)), rank=0, world_size=1)


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


def mutate(text, rate, rng):
    """Replace a fraction `rate` of the lines by reversed copies (a near duplicate of controllable similarity)."""
    lines = text.split("\n")
    return "\n".join(l[::-1] if rng.random() < rate else l for l in lines)


def accuracy(texts, n_sample, n_planted, seed=0):
    """Pair precision/recall of LSH candidates vs exact Jaccard >= 0.7, over a random sample plus planted copies.

    Ground truth: every pair found by a very loose LSH (64 bands x 4 rows: a pair at Jaccard 0.7 is missed with
    probability 1e-8) whose exact shingle-set Jaccard is >= 0.7.
    """
    rng = random.Random(seed)
    sample = rng.sample(texts, n_sample)
    bases = rng.sample(sample, n_planted)
    sample += [mutate(b, rng.uniform(0.0, 0.35), rng) for b in bases]
    sets = [shingle_set(t) for t in sample]
    sig, counts = MinHasher(256, 5, seed=42).signatures(sample)
    keep = counts > 0
    idx = np.flatnonzero(keep)
    sig = sig[idx]
    cand_loose = lsh_pairs(sig, 64, 4)
    truth = {(a, b) for a, b in cand_loose if jaccard(sets[idx[a]], sets[idx[b]]) >= 0.7}
    natural = {(a, b) for a, b in truth if idx[b] < n_sample}  # both files real (not planted copies)
    out = {"documents": len(idx), "true_pairs": len(truth), "true_pairs_natural": len(natural)}
    for name, (b, r), verify in [("default 25x10", (25, 10), False), ("default 25x10 + verify", (25, 10), True),
                                 ("recall-weighted (fn 0.8)", optimal_param(0.7, 256, 0.2, 0.8), True)]:
        pred = lsh_pairs(sig, b, r)
        if verify:
            pred = {(x, y) for x, y in pred if jaccard(sets[idx[x]], sets[idx[y]]) >= 0.7}
        tp = len(pred & truth)
        pred_nat = {(x, y) for x, y in pred if idx[y] < n_sample}
        out[name] = {"bands": b, "rows": r, "predicted": len(pred), "precision": tp / max(1, len(pred)),
                     "recall": tp / max(1, len(truth)),
                     "precision_natural": len(pred_nat & natural) / max(1, len(pred_nat)),
                     "recall_natural": len(pred_nat & natural) / max(1, len(natural))}
    return out


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--corpus-mb", type=float, default=220)
    p.add_argument("--baseline-mb", type=float, default=3, help="subset size for the slow baselines")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--sample", type=int, default=6000, help="documents in the precision/recall sample")
    p.add_argument("--planted", type=int, default=300, help="mutated copies added to the sample")
    p.add_argument("--out", default=os.path.join(ROOT, "benchmarks", "results", "minhash.json"))
    args = p.parse_args()
    texts = load_texts(build_corpus(args.corpus_mb))
    mb = sum(len(t.encode("utf-8")) for t in texts) / 1e6
    rng = random.Random(1)
    subset, sub_bytes = [], 0
    for t in rng.sample(texts, len(texts)):
        subset.append(t)
        sub_bytes += len(t.encode("utf-8"))
        if sub_bytes >= args.baseline_mb * 1e6:
            break
    sub_mb = sub_bytes / 1e6
    res = {"corpus_docs": len(texts), "corpus_mb": round(mb, 1), "subset_docs": len(subset), "subset_mb": sub_mb}
    t_full = timed(lambda: megasnow_signatures(texts), args.repeats)
    res["megasnow_full"] = {"seconds": t_full, "docs_per_s": len(texts) / t_full, "mb_per_s": mb / t_full}
    rates = {}
    for name, fn in [("megasnow", megasnow_signatures), ("datasketch", datasketch_signatures),
                     ("datatrove", datatrove_stage)]:
        t = timed(lambda: fn(subset), args.repeats)
        rates[name] = {"seconds": t, "docs_per_s": len(subset) / t, "mb_per_s": sub_mb / t}
    res["subset"] = rates
    res["speedup_vs_datasketch"] = rates["megasnow"]["docs_per_s"] / rates["datasketch"]["docs_per_s"]
    res["speedup_vs_datatrove"] = rates["megasnow"]["docs_per_s"] / rates["datatrove"]["docs_per_s"]
    t2 = timed(lambda: megasnow_signatures(subset, threads=2), args.repeats)
    res["megasnow_2_threads_subset"] = {"seconds": t2, "docs_per_s": len(subset) / t2}
    res["accuracy"] = accuracy(texts, args.sample, args.planted)
    print(json.dumps(res, indent=1))
    with open(args.out, "w") as f:
        json.dump(res, f, indent=1)


if __name__ == "__main__":
    main()
