#!/usr/bin/env python
"""Merge indexed datasets (PREFIX.bin/.idx pairs) into one, in the order given; written atomically.

Usage: python tools/merge_datasets.py --input a_text_document b_text_document [DIR ...] --output-prefix merged
"""
import argparse
import glob
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from megasnow.data.indexed import (  # noqa: E402
    IndexedDataset,
    IndexedDatasetBuilder,
    IndexedDatasetError,
    data_file_path,
    index_file_path,
)


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


def merge_datasets(prefixes, output_prefix):
    """Validate every input, then concatenate them; returns (documents, sequences, tokens) of the result."""
    datasets = [IndexedDataset(p) for p in prefixes]  # full validation before writing anything
    if not datasets:
        raise IndexedDatasetError("nothing to merge: no input prefixes")
    dtypes = {str(d.dtype) for d in datasets}
    if len(dtypes) > 1:
        listing = ", ".join(f"{d.path_prefix} ({d.dtype})" for d in datasets)
        raise IndexedDatasetError(f"inputs have different dtypes: {listing}")
    if os.path.abspath(output_prefix) in {os.path.abspath(p) for p in prefixes}:
        raise IndexedDatasetError(f"{output_prefix}: output prefix is also an input")
    builder = IndexedDatasetBuilder(data_file_path(output_prefix), dtype=datasets[0].dtype)
    with builder:
        for d in datasets:
            d.close()
            builder.add_index(d.path_prefix)
        builder.finalize(index_file_path(output_prefix))
    out = IndexedDataset(output_prefix)
    return out.num_documents, len(out), out.num_tokens


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--input", nargs="+", required=True, help="dataset prefixes or folders of .bin/.idx pairs")
    p.add_argument("--output-prefix", required=True)
    args = p.parse_args(argv)
    try:
        prefixes = resolve_prefixes(args.input)
        docs, seqs, tokens = merge_datasets(prefixes, args.output_prefix)
    except IndexedDatasetError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(f"merged {len(prefixes)} datasets into {args.output_prefix}: {docs:,} documents, {seqs:,} sequences, "
          f"{tokens:,} tokens")
    return 0


if __name__ == "__main__":
    sys.exit(main())
