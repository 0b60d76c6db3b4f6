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
