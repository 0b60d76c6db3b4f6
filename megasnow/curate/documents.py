"""Repository documents, StarCoder2 style: `<repo_name>{repo}<file_sep>{path}\\n{content}<file_sep>...`.

One repository of one language gives one document, its files in a seeded random order; a repository longer
than `max_chars` is split, in that order, into several documents that each start with the repo marker again.
"""
import hashlib
import random

from megasnow.data.special_tokens import FILE_SEP, REPO_NAME


def file_order(files, seed, lang, repo):
    """The files sorted by path, then shuffled by a RNG seeded from (seed, lang, repo): same on every run."""
    ordered = sorted(files, key=lambda f: (f["path"], f["id"]))
    digest = hashlib.sha256(f"{seed}\0{lang}\0{repo}".encode("utf-8")).digest()
    random.Random(int.from_bytes(digest[:8], "little")).shuffle(ordered)
    return ordered


def repo_documents(files, lang, repo, seed, max_chars):
    """Documents {"text", "repo", "lang", "paths", "id"} for one repo's files (dicts with path, content, id)."""
    header = f"{REPO_NAME}{repo}"
    docs, parts, paths, size = [], [header], [], len(header)
    for f in file_order(files, seed, lang, repo):
        piece = f"{FILE_SEP}{f['path']}\n{f['content']}"
        if paths and size + len(piece) > max_chars:  # a single over-long file still gets its own document
            docs.append((parts, paths))
            parts, paths, size = [header], [], len(header)
        parts.append(piece)
        paths.append(f["path"])
        size += len(piece)
    if paths:
        docs.append((parts, paths))
    return [{"text": "".join(p), "repo": repo, "lang": lang, "paths": ps, "id": f"{lang}/{repo}/{k}"}
            for k, (p, ps) in enumerate(docs)]
