#!/usr/bin/env python
"""Convert megasnow checkpoints to HuggingFace LlamaForCausalLM folders (export) and back (import).

  python tools/convert_checkpoint.py export --checkpoint runs/x/ckpt --output hf/x [--dtype bfloat16]
  python tools/convert_checkpoint.py import --hf hf/x --output ckpt/from_hf
The export loads with transformers (AutoModelForCausalLM.from_pretrained) and serves with vLLM; the import is a
tensor 1 x pipeline 1 checkpoint to start a run from (checkpoint.init_from=ckpt/from_hf).
"""
import argparse
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    ex = sub.add_parser("export", help="megasnow checkpoint -> HF LlamaForCausalLM folder")
    ex.add_argument("--checkpoint", required=True, help="a run's checkpoint folder (uses `latest`) or a step folder")
    ex.add_argument("--output", required=True)
    ex.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    ex.add_argument("--tokenizer", default=None, help="tokenizer to include (default: the checkpoint's own copy)")
    im = sub.add_parser("import", help="HF LlamaForCausalLM folder -> megasnow checkpoint")
    im.add_argument("--hf", required=True)
    im.add_argument("--output", required=True)
    im.add_argument("--tokenizer", default=None)
    args = parser.parse_args(argv)

    from megasnow.convert.hf_llama import ConversionError, export_to_hf, import_from_hf
    from megasnow.train.checkpoint import CheckpointError

    try:
        if args.command == "export":
            summary = export_to_hf(args.checkpoint, args.output, args.dtype, args.tokenizer)
        else:
            summary = import_from_hf(args.hf, args.output, args.tokenizer)
    except (ConversionError, CheckpointError, FileNotFoundError) as e:
        print(f"convert_checkpoint: {e}", file=sys.stderr)
        return 2
    print(json.dumps(summary, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
