"""Find the code an answer gives for the requested language: Markdown fenced blocks (``` or ~~~, CommonMark rules
for opening and closing fences), the info string mapped to a language slug.

`select_code(text, lang)` returns (code, None, blocks matched) or (None, reason, blocks matched) with reason one of
no_code_block, unclosed_code_block, wrong_language, empty_code_block. Several blocks in the language: the longest
is taken (the file; the others are usually usage examples or shell commands).
"""
import re
from dataclasses import dataclass

from megasnow.curate.languages import canonical_language

_OPEN = re.compile(r"^ {0,3}(`{3,}|~{3,})[ \t]*([^\s`]*)[^`\n]*$")

# fence info strings that curate.languages.canonical_language does not know
_FENCE_ALIASES = {"python3": "python", "py3": "python", "cxx": "cpp", "cc": "cpp", "hpp": "cpp", "h": "c",
                  "node": "javascript", "jsx": "javascript", "mjs": "javascript", "tsx": "typescript",
                  "zsh": "shell", "console": "shell", "shell-script": "shell", "mysql": "sql", "postgresql": "sql",
                  "postgres": "sql", "sqlite": "sql", "plsql": "sql", "tsql": "sql", "kts": "kotlin",
                  "csharp": "csharp", "c#": "csharp"}
# languages whose code is written in another one's blocks
_ACCEPTS = {"jupyter": {"jupyter", "python"}}


@dataclass
class Block:
    info: str  # the info string's first word, lowercased ('' when none)
    code: str
    closed: bool


def fence_language(info):
    """Language slug of a fence info string ('py', 'C++', 'golang' ...), or None."""
    info = info.strip().lower()
    if not info:
        return None
    return _FENCE_ALIASES.get(info) or canonical_language(info)


def code_blocks(text):
    """Every fenced block of `text`, in order; a block still open at the end has closed=False."""
    blocks, lines, i = [], text.split("\n"), 0
    while i < len(lines):
        m = _OPEN.match(lines[i])
        if not m:
            i += 1
            continue
        fence, info = m.group(1), m.group(2).lower()
        close = re.compile(r"^ {0,3}" + re.escape(fence[0]) + "{" + str(len(fence)) + r",}[ \t]*$")
        j = i + 1
        while j < len(lines) and not close.match(lines[j]):
            j += 1
        blocks.append(Block(info=info, code="\n".join(lines[i + 1:j]), closed=j < len(lines)))
        i = j + 1
    return blocks


def select_code(text, lang):
    """(code, None, n) for the block to keep, or (None, drop reason, n); n = blocks in the language."""
    blocks = code_blocks(text)
    closed = [b for b in blocks if b.closed]
    if not closed:
        return None, ("unclosed_code_block" if blocks else "no_code_block"), 0
    accepted = _ACCEPTS.get(lang, {lang})
    matching = [b for b in closed if fence_language(b.info) in accepted]
    if not matching:  # untagged blocks may hold the language; the syntax check decides
        matching = [b for b in closed if not b.info]
    if not matching:
        return None, "wrong_language", 0
    best = max(matching, key=lambda b: len(b.code))  # max keeps the first of equal lengths
    code = best.code.strip("\n")
    if not code.strip():
        return None, "empty_code_block", len(matching)
    return code + "\n", None, len(matching)
