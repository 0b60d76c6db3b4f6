#!/usr/bin/env python
"""Convert megasnow checkpoints to HuggingFace LlamaForCausalLM folders (export) and back (import), or import a GGUF.

  python tools/convert_checkpoint.py export --checkpoint runs/x/ckpt --output hf/x [--dtype bfloat16]
  python tools/convert_checkpoint.py import --hf hf/x --output ckpt/from_hf
  python tools/convert_checkpoint.py import --gguf SmolLM2-135M-Instruct.Q4_1.gguf --output ckpt/smollm2
--output must be a new or empty folder; --overwrite deletes what it holds (a run's checkpoints, an HF model) first.
The export loads with transformers (AutoModelForCausalLM.from_pretrained) and serves with vLLM; an import is a
tensor 1 x pipeline 1 checkpoint to start a run of any layout from (checkpoint.init_from=ckpt/from_hf) or to serve
(python -m megasnow.serve ckpt/smollm2). A GGUF import dequantizes to fp32 and keeps the file's tokenizer and chat
template; an --hf import keeps the folder's tokenizer_config.json (chat template, BOS/EOS), chat_template.jinja,
special_tokens_map.json and generation_config.json beside the tokenizer in the step folder.
"""
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def main(argv=None):
    from megasnow.utils.cli import ArgumentParser

    parser = ArgumentParser(description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    ex = sub.add_parser("export", help="megasnow checkpoint -> HF LlamaForCausalLM folder")
    ex.add_argument("--checkpoint", required=True, help="a run's checkpoint folder (uses `latest`) or a step folder")
    ex.add_argument("--output", required=True, help="folder for the HF model: new or empty, or see --overwrite")
    ex.add_argument("--overwrite", action="store_true",
                    help="replace a non-empty --output: everything in it (e.g. an earlier export) is deleted")
    ex.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    ex.add_argument("--tokenizer", default=None, help="tokenizer to include (default: the checkpoint's own copy)")
    im = sub.add_parser("import", help="HF LlamaForCausalLM folder or GGUF file -> megasnow checkpoint")
    src = im.add_mutually_exclusive_group(required=True)
    src.add_argument("--hf", help="HF LlamaForCausalLM folder")
    src.add_argument("--gguf", help="GGUF file of a Llama-architecture model (read by transformers, dequantized)")
    im.add_argument("--output", required=True,
                    help="folder for the checkpoint (step_00000000 and `latest`): new or empty, or see --overwrite")
    im.add_argument("--overwrite", action="store_true",
                    help="replace a non-empty --output: everything in it (another run's checkpoints and `latest`, "
                         "a served model's files) is deleted")
    im.add_argument("--tokenizer", default=None, help="(--hf only) tokenizer file to store with the checkpoint")
    args = parser.parse_args(argv)
    if args.command == "import" and args.gguf and args.tokenizer:
        parser.error("--tokenizer applies to --hf; a GGUF import takes the file's own tokenizer")

    done = check_paths(args)  # before torch loads (seconds): a wrong path fails at once
    if done:
        print(done, file=sys.stderr)
        return 0
    if getattr(args, "gguf", None):  # (export has no --gguf)
        from megasnow.convert.gguf import import_from_gguf

        summary = import_from_gguf(args.gguf, args.output, log=lambda m: print(m, file=sys.stderr, flush=True),
                                   overwrite=args.overwrite)
    else:
        from megasnow.convert.hf_llama import export_to_hf, import_from_hf

        if args.command == "export":
            summary = export_to_hf(args.checkpoint, args.output, args.dtype, args.tokenizer, args.overwrite)
        else:
            summary = import_from_hf(args.hf, args.output, args.tokenizer, args.overwrite)
    print(json.dumps(summary, indent=1))
    return 0


def check_paths(args):
    """Refuse a missing source, or an --output that is a file or a non-empty folder without --overwrite, naming
    the flag (ConversionError); nothing is written. Returns a message when --output already holds the finished
    conversion of the same source with the same options (nothing to do), else None."""
    from megasnow.convert.errors import ConversionError
    from megasnow.convert.output_folder import check_output

    what = "HF model" if args.command == "export" else "checkpoint"
    convert = "python tools/convert_checkpoint.py"
    if args.command == "export":
        check_export_source(args.checkpoint, convert)
    if getattr(args, "hf", None):
        check_hf_source(args.hf, convert)
    if args.tokenizer and not os.path.exists(args.tokenizer):
        raise ConversionError(f"--tokenizer {args.tokenizer}: no such file (give a tokenizer.json or a SentencePiece "
                              f".model)")
    if getattr(args, "gguf", None):
        from megasnow.convert.gguf import check_gguf_file

        check_gguf_file(args.gguf, parse=False)  # the header parse (a few seconds) comes after the output checks
    source_flag = "--checkpoint" if args.command == "export" else "--hf" if args.hf else "--gguf"
    source = getattr(args, source_flag[2:])
    out_real, src_real = os.path.realpath(args.output), os.path.realpath(source)
    if args.overwrite and (src_real == out_real or src_real.startswith(out_real + os.sep)):
        raise ConversionError(f"--output {args.output} holds {source_flag} {source}; --overwrite would delete the "
                              f"source: give another --output")
    if os.path.isdir(source) and out_real.startswith(src_real + os.sep):
        raise ConversionError(f"--output {args.output} is inside {source_flag} {source}: the source folder would "
                              f"hold its own conversion; give an --output outside it")
    if not args.overwrite:  # a rerun of a finished conversion: nothing to do
        from megasnow.convert.output_folder import already_done, conversion_record

        options = {"dtype": args.dtype, "tokenizer": args.tokenizer} if args.command == "export" else \
            {"tokenizer": args.tokenizer} if args.hf else {}
        finished = already_done(args.output, conversion_record(f"{args.command} {source_flag}".replace(
            "export --checkpoint", "export"), source, **options))
        if finished:
            return f"{args.output} already holds this conversion (finished {finished}); nothing to do"
        if args.command == "export":
            check_earlier_export(args.output, args.checkpoint)
    check_output(args.output, args.overwrite, label=f"--output {args.output}", what=what,
                 hint=f"pass --overwrite to delete everything in it and write the {what} there")
    if getattr(args, "gguf", None):
        check_gguf_file(args.gguf)
    return None


def check_earlier_export(out, checkpoint):
    """Refuse (ConversionError) an --output that holds an export of another step of the same checkpoint (its
    `latest` moved: the run trained further), naming both steps; anything else is left to check_output."""
    from megasnow.convert.errors import ConversionError
    from megasnow.convert.output_folder import finished_conversion, step_folder

    found = finished_conversion(out) if os.path.isdir(out) else None
    old = found.get("source") if isinstance(found, dict) and found.get("command") == "export" else None
    new = os.path.abspath(step_folder(os.fspath(checkpoint)))
    if not isinstance(old, str) or old == new or os.path.dirname(old) != os.path.dirname(new):
        return
    now = "the checkpoint's latest is now" if new != os.path.abspath(checkpoint) else "--checkpoint is"
    raise ConversionError(f"--output {out} holds an export of {os.path.basename(old)} of this checkpoint; {now} "
                          f"{os.path.basename(new)}: use --overwrite to replace it (or give a new --output)")


def check_export_source(path, convert):
    """export --checkpoint: a megasnow checkpoint folder; a GGUF file, another file or a HF folder is named as such,
    with what to run instead (ConversionError)."""
    from megasnow.convert.errors import ConversionError

    if os.path.isfile(path):
        if path.lower().endswith(".gguf"):
            raise ConversionError(f"--checkpoint {path}: a GGUF file, not a megasnow checkpoint; import it first "
                                  f"({convert} import --gguf {path} --output DIR), then export DIR")
        raise ConversionError(f"--checkpoint {path}: is a file; give a run's checkpoint.dir or one of its step "
                              f"folders")
    if not os.path.isdir(path):
        raise ConversionError(f"--checkpoint {path}: no such folder (give a run's checkpoint.dir or one of its step "
                              f"folders)")
    has = lambda name: os.path.exists(os.path.join(path, name))  # noqa: E731
    if has("config.json") and not has("meta.json") and not has("latest"):
        raise ConversionError(f"--checkpoint {path}: a HuggingFace model folder (config.json), not a megasnow "
                              f"checkpoint: it needs no export; serve it as is (python -m megasnow.serve {path}) or "
                              f"import it ({convert} import --hf {path} --output DIR)")


def check_hf_source(path, convert):
    """import --hf: a HuggingFace Llama folder with config.json and safetensors weights; a GGUF file or a folder of
    them, another file, or a folder with only pytorch_model.bin is named as such, with the fix (ConversionError;
    megasnow.generation.model_files.check_model_kind's rules, as the server and generate.py apply them)."""
    from megasnow.convert.errors import ConversionError
    from megasnow.generation.model_files import ModelLoadError, check_model_kind

    if os.path.isfile(path):
        if path.lower().endswith(".gguf"):
            raise ConversionError(f"--hf {path}: a GGUF file, not a HF folder; import it with --gguf: {convert} "
                                  f"import --gguf {path} --output DIR")
        raise ConversionError(f"--hf {path}: is a file; give a HuggingFace LlamaForCausalLM folder")
    if not os.path.isdir(path):
        raise ConversionError(f"--hf {path}: no such folder (give a HuggingFace LlamaForCausalLM folder)")
    try:
        check_model_kind(path)
    except ModelLoadError as e:
        raise ConversionError(f"--hf {e}") from None
    if not os.path.isfile(os.path.join(path, "config.json")):
        raise ConversionError(f"--hf {path}: no config.json in it (give a HuggingFace LlamaForCausalLM folder)")


if __name__ == "__main__":
    from megasnow.utils.cli import run_tool

    # The output is built under a temporary name and swapped in whole: an interrupted conversion leaves nothing.
    sys.exit(run_tool(main, user_errors=(FileNotFoundError,),
                      on_interrupt="nothing was written; rerun the same command"))
