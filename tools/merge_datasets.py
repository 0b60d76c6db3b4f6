#!/usr/bin/env python
"""Merge indexed datasets (PREFIX.bin/.idx pairs) into one, in the order given; written atomically.

Usage: python tools/merge_datasets.py --input a_text_document b_text_document [DIR ...] --output-prefix merged
"""
import glob
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from megasnow.data.dataset_meta import (meta_path, read_dataset_meta, token_settings_differ,  # noqa: E402
                                        write_dataset_meta)
from megasnow.data.indexed import (  # noqa: E402
    IndexedDataset,
    IndexedDatasetBuilder,
    IndexedDatasetError,
    data_file_path,
    index_file_path,
)
from megasnow.data.output_check import check_output_prefix, folders_removed_on_failure  # noqa: E402
from megasnow.utils.cli import ArgumentParser, run_tool, warn  # noqa: E402
from megasnow.utils.units import format_bytes, format_bytes_rate, format_duration  # noqa: E402


def resolve_prefixes(inputs):
    """Prefixes from explicit prefixes and folders (every *.idx in a folder, sorted, as Megatron's tool does)."""
    prefixes = []
    for item in inputs:
        if os.path.isdir(item):
            found = sorted(p[: -len(".idx")] for p in glob.glob(os.path.join(item, "*.idx")))
            if not found:
                raise IndexedDatasetError(f"{item}: folder holds no .idx files")
            prefixes += found
        else:
            prefixes.append(item[: -len(".idx")] if item.endswith((".idx", ".bin")) else item)
    return prefixes


def merged_metadata(prefixes):
    """(metadata for the merged dataset or None, a warning or None): the inputs' metadata when they all have it and
    their ids mean the same thing (megasnow.data.dataset_meta.TOKEN_KEYS), with counts summed."""
    metas = [read_dataset_meta(p) for p in prefixes]
    if any(m is None for m in metas):
        return None, None
    for p, m in zip(prefixes[1:], metas[1:]):
        key = token_settings_differ(metas[0], m)
        if key:
            return None, (f"{prefixes[0]} and {p} were binarized with different {key} ({metas[0].get(key)!r} vs "
                          f"{m.get(key)!r}); the merged dataset gets no metadata, so its ids may not mean one "
                          f"thing (document masking then needs data.eod_id)")
    meta = {k: v for k, v in metas[0].items() if k not in ("format", "version")}
    for count in ("documents", "tokens"):
        if all(isinstance(m.get(count), int) for m in metas):
            meta[count] = sum(m[count] for m in metas)
    meta["merged_from"] = [os.path.abspath(p) for p in prefixes]
    return meta, None


def merge_datasets(prefixes, output_prefix, on_warning=None):
    """Validate every input, then concatenate them; returns (documents, sequences, tokens) of the result.

    IndexedDatasetError (naming the file) for a missing, truncated or corrupt input, mixed dtypes, or an output
    prefix that is also an input; nothing is written then. PREFIX.meta.json is carried over when the inputs agree.
    """
    if not prefixes:
        raise IndexedDatasetError("nothing to merge: no input prefixes")
    datasets = [IndexedDataset(p) for p in prefixes]  # full validation before writing anything
    dtypes = {str(d.dtype) for d in datasets}
    if len(dtypes) > 1:
        listing = ", ".join(f"{d.path_prefix} ({d.dtype})" for d in datasets)
        raise IndexedDatasetError(f"inputs have different dtypes: {listing}")
    if os.path.abspath(output_prefix) in {os.path.abspath(p) for p in prefixes}:
        raise IndexedDatasetError(f"{output_prefix}: output prefix is also an input")
    meta, warning = merged_metadata(prefixes)
    if warning and on_warning is not None:
        on_warning(warning)
    builder = IndexedDatasetBuilder(data_file_path(output_prefix), dtype=datasets[0].dtype)
    with builder:
        for d in datasets:
            d.close()
            try:
                builder.add_index(d.path_prefix)
            except OSError as e:  # an I/O error while copying: name the file
                raise IndexedDatasetError(f"{data_file_path(d.path_prefix)}: cannot read ({e.strerror or e})") from e
        written = write_dataset_meta(output_prefix, meta) if meta is not None else None
        try:
            builder.finalize(index_file_path(output_prefix))
        except BaseException:
            if written:
                os.unlink(written)
            raise
    out = IndexedDataset(output_prefix)
    return out.num_documents, len(out), out.num_tokens


def main(argv=None):
    p = ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--input", nargs="+", required=True, help="dataset prefixes or folders of .bin/.idx pairs")
    p.add_argument("--output-prefix", required=True, help="writes PREFIX.bin and PREFIX.idx (and PREFIX.meta.json)")
    args = p.parse_args(argv)
    check_output_prefix(args.output_prefix, [data_file_path(args.output_prefix), index_file_path(args.output_prefix),
                                             meta_path(args.output_prefix)])
    t0 = time.time()
    prefixes = resolve_prefixes(args.input)
    with folders_removed_on_failure(args.output_prefix):
        docs, seqs, tokens = merge_datasets(prefixes, args.output_prefix, on_warning=warn)
    secs = time.time() - t0
    size = os.path.getsize(data_file_path(args.output_prefix))
    print(f"merged {len(prefixes)} datasets into {args.output_prefix}: {docs:,} documents, {seqs:,} sequences, "
          f"{tokens:,} tokens, {format_bytes(size)} in {format_duration(secs)} ({format_bytes_rate(size, secs)})")
    return 0


if __name__ == "__main__":
    sys.exit(run_tool(main))
