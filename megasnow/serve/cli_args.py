"""Command-line flags of `python -m megasnow.serve` (names follow vLLM's `vllm serve` where one exists).

Imports nothing heavy, so a bad flag is answered before torch loads.
"""
import os

from megasnow.errors import UserError
from megasnow.generation.model_files import check_model_kind
from megasnow.utils.cli import ArgumentParser

# LocalEngine's defaults (megasnow.generation.local), repeated so parsing flags does not import torch (tested equal).
DEFAULT_MAX_NUM_SEQS, DEFAULT_MAX_BATCH_TOKENS = 32, 65536

# vLLM's --dtype names -> torch dtype names (None: auto)
DTYPES = {"auto": None, "half": "float16", "float16": "float16", "bfloat16": "bfloat16", "float": "float32",
          "float32": "float32"}

USAGE_EXAMPLES = """examples:
  python -m megasnow.serve runs/x/ckpt --port 8000
  python -m megasnow.serve ckpt/smollm2 --served-model-name smollm2 --max-num-seqs 16 --request-log requests.jsonl
  python -m megasnow.serve hf/x --port 0 --fault-rate 0.2 --fault-seed 0 --fault-kinds 500,429,stall
"""


def make_parser():
    p = ArgumentParser(prog="python -m megasnow.serve",
                       description="OpenAI-compatible HTTP server (/v1/models, /v1/completions, "
                                   "/v1/chat/completions) for a megasnow checkpoint or a HF Llama folder.",
                       epilog=USAGE_EXAMPLES)
    p.add_argument("model", metavar="CHECKPOINT_OR_HF_DIR", nargs="?", default=None,
                   help="a run's checkpoint folder (uses `latest`), a step folder, or a HF LlamaForCausalLM folder")
    g = p.add_argument_group("model")
    g.add_argument("--model", dest="model_flag", metavar="CHECKPOINT_OR_HF_DIR", default=None,
                   help="the model, as a flag (vLLM's api_server form); give it or CHECKPOINT_OR_HF_DIR, not both")
    g.add_argument("--max-model-len", type=int, default=None,
                   help="context length: prompt + max_tokens of a request, longer ones get HTTP 400 (vLLM's flag; "
                        "default and upper bound: the model's max_seq_len)")
    g.add_argument("--served-model-name", action="append", default=None,
                   help="model id clients ask for (repeatable; default: the folder's name)")
    g.add_argument("--tokenizer", help="tokenizer file/folder (default: the one stored with the model)")
    g.add_argument("--chat-template", help="Jinja chat template file or text (default: tokenizer_config.json's)")
    g.add_argument("--device", default=None, help="cpu, cuda, cuda:1 ... (default: cuda when available)")
    g.add_argument("--dtype", default="auto", choices=list(DTYPES),
                   help="vLLM's names (half = float16, float = float32); auto: float32 on CPU, bfloat16 on CUDA")
    g.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    g.add_argument("--fim-format", choices=["psm", "spm"], default=None,
                   help="layout of fill-in-the-middle prompts (completions `suffix`): prefix-suffix-middle or "
                        "suffix-prefix-middle (default: the checkpoint's trained format, psm unless it was trained "
                        "with data.fim.spm_rate=1)")
    h = p.add_argument_group("HTTP")
    h.add_argument("--host", default="127.0.0.1")
    h.add_argument("--port", type=int, default=8000, help="0 picks a free port (printed when ready)")
    h.add_argument("--api-key", default=None, help="require `Authorization: Bearer KEY` on /v1 routes")
    h.add_argument("--log-level", "--uvicorn-log-level", default="warning",
                   choices=["critical", "error", "warning", "info", "debug"],
                   help="uvicorn's log level (info logs every request)")
    b = p.add_argument_group("batching (docs/serving.md)")
    b.add_argument("--max-num-seqs", type=int, default=DEFAULT_MAX_NUM_SEQS, help="sequences per batch")
    b.add_argument("--max-batch-tokens", type=int, default=DEFAULT_MAX_BATCH_TOKENS,
                   help="cap on batch rows x (longest prompt + largest max_tokens): KV-cache positions")
    b.add_argument("--batch-wait-ms", type=float, default=10.0,
                   help="collect requests this long after the first one waits (or the engine frees) before a batch")
    b.add_argument("--max-queue", type=int, default=1024,
                   help="unfinished sequences (running + waiting) admitted at once; more get HTTP 429")
    b.add_argument("--max-tokens-default", type=int, default=None,
                   help="server default max_tokens (default: the API's: 16 for completions, the rest of the "
                        "context for chat)")
    t = p.add_argument_group("testing clients")
    t.add_argument("--request-log", metavar="FILE",
                   help="append one JSON line per request (request_hash = sha256 of its canonical JSON, status, "
                        "tokens, fault)")
    t.add_argument("--fault-rate", type=float, default=0.0, help="fraction of generation requests given a fault")
    t.add_argument("--fault-seed", type=int, default=0, help="seed of the fault draws")
    t.add_argument("--fault-kinds", default="500,429,stall", help="comma list of 500, 429, stall")
    t.add_argument("--fault-stall-s", type=float, default=30.0,
                   help="a stall holds the request this long, then answers it if the client is still there")
    return p


def check_args(parser, args):
    """Refuse impossible settings with one line naming the flag."""
    from megasnow.serve.faults import parse_fault_kinds

    if args.model is not None and args.model_flag is not None:
        parser.error(f"the model given twice ({args.model} and --model {args.model_flag}): give one")
    args.model = args.model if args.model is not None else args.model_flag
    if args.model is None:
        parser.error("the following arguments are required: CHECKPOINT_OR_HF_DIR (or --model)")
    if args.max_model_len is not None and args.max_model_len < 1:
        parser.error(f"--max-model-len must be >= 1, got {args.max_model_len}")
    for flag in ("max_num_seqs", "max_batch_tokens", "max_queue"):
        if getattr(args, flag) < 1:
            parser.error(f"--{flag.replace('_', '-')} must be >= 1, got {getattr(args, flag)}")
    if args.max_tokens_default is not None and args.max_tokens_default < 1:
        parser.error(f"--max-tokens-default must be >= 1, got {args.max_tokens_default}")
    if args.batch_wait_ms < 0:
        parser.error(f"--batch-wait-ms must be >= 0, got {args.batch_wait_ms}")
    if not 0 <= args.port <= 65535:
        parser.error(f"--port must be in [0, 65535], got {args.port}")
    if not 0.0 <= args.fault_rate <= 1.0:
        parser.error(f"--fault-rate must be in [0, 1], got {args.fault_rate}")
    if args.threads is not None and args.threads < 1:
        parser.error(f"--threads must be >= 1, got {args.threads}")
    try:
        args.fault_kinds = parse_fault_kinds(args.fault_kinds)
    except ValueError as e:
        parser.error(str(e))
    return args


def check_files(args):
    """Refuse a missing model, tokenizer, chat template file or request-log folder with one line naming the flag,
    before the (slow) model load. Raises UserError."""
    if not os.path.exists(args.model):
        raise UserError(f"{args.model}: does not exist; give a megasnow checkpoint folder or a HF Llama folder")
    check_model_kind(args.model, then="python -m megasnow.serve {out}")
    if args.tokenizer is not None and not os.path.exists(args.tokenizer):
        raise UserError(f"--tokenizer {args.tokenizer}: no such file or folder; give a tokenizer.json / "
                        f"tokenizer.model file or the folder holding it")
    # a file path or the template text itself: text has Jinja braces (model_files.read_tokenizer_files)
    t = args.chat_template
    if t is not None:
        if os.path.isdir(t):
            raise UserError(f"--chat-template {t}: is a folder; give a Jinja template file or the template text")
        if not os.path.exists(t) and "{" not in t:
            raise UserError(f"--chat-template {t}: no such file (nor Jinja template text); give a Jinja file or "
                            f"the template itself")
    if args.request_log is not None:
        folder = os.path.dirname(os.path.abspath(args.request_log))
        if os.path.isdir(args.request_log) or not os.path.isdir(folder):
            raise UserError(f"--request-log {args.request_log}: "
                            f"{'is a folder' if os.path.isdir(args.request_log) else f'no folder {folder}'}; give a "
                            f"file path in an existing folder")
