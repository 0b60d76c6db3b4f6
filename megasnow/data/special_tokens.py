"""Special tokens reserved by every megasnow tokenizer (StarCoder2 conventions).

Curated documents look like `<repo_name>owner/repo<file_sep>path/a.py\n<code><file_sep>path/b.py\n<code>`
and the end-of-document token is appended at binarization.
"""
EOD = "<|endoftext|>"
PAD = "<pad>"
REPO_NAME = "<repo_name>"
FILE_SEP = "<file_sep>"
FIM_PREFIX = "<fim_prefix>"
FIM_MIDDLE = "<fim_middle>"
FIM_SUFFIX = "<fim_suffix>"
FIM_PAD = "<fim_pad>"

# Order fixes their ids right after the tokenizer's own control tokens.
SPECIAL_TOKENS = [EOD, PAD, REPO_NAME, FILE_SEP, FIM_PREFIX, FIM_MIDDLE, FIM_SUFFIX, FIM_PAD]

# Fill-in-the-middle sentinels as other tokenizer families name them, one family per row, in the order
# (prefix, middle, suffix, pad); a family is used only when its prefix, middle and suffix are all in the vocabulary.
# StarCoder/StarCoder2/SmolLM-style and megasnow; Qwen2.5-Coder and CodeGemma; SantaCoder; DeepSeek-Coder (begin = prefix,
# hole = suffix, end = middle); Code Llama (sentencepiece pieces with and without the space marker).
FIM_FAMILIES = (
    (FIM_PREFIX, FIM_MIDDLE, FIM_SUFFIX, FIM_PAD),
    ("<|fim_prefix|>", "<|fim_middle|>", "<|fim_suffix|>", "<|fim_pad|>"),
    ("<fim-prefix>", "<fim-middle>", "<fim-suffix>", "<fim-pad>"),
    ("<\uff5cfim\u2581begin\uff5c>", "<\uff5cfim\u2581end\uff5c>", "<\uff5cfim\u2581hole\uff5c>", None),
    ("\u2581<PRE>", "\u2581<MID>", "\u2581<SUF>", None),
    ("<PRE>", "<MID>", "<SUF>", None),
)
# The file separator of repository documents: StarCoder2 / megasnow, Qwen2.5-Coder, CodeGemma.
FILE_SEP_ALIASES = (FILE_SEP, "<|file_sep|>", "<|file_separator|>")
