"""Does generated code parse? Python with the standard `ast` module; the other recipe languages with tree-sitter
grammars from tree-sitter-language-pack (the 0.x wheels bundle them; no download at run time).

tree-sitter parsers recover from errors, so "parses" means the tree has no ERROR or MISSING node. Grammars do
not expand macros: macro-heavy C/C++ can be flagged though a compiler would accept it.
"""
import ast
import functools
import warnings

# megasnow.curate.languages slug -> tree-sitter-language-pack grammar name
GRAMMARS = {"java": "java", "cpp": "cpp", "c": "c", "javascript": "javascript", "php": "php", "csharp": "csharp",
            "go": "go", "typescript": "typescript", "sql": "sql", "ruby": "ruby", "rust": "rust", "scala": "scala",
            "kotlin": "kotlin", "shell": "bash", "dart": "dart", "swift": "swift"}
PYTHON_LIKE = ("python", "jupyter")


@functools.lru_cache(maxsize=None)
def _parser(grammar):
    try:
        from tree_sitter_language_pack import get_parser

        return get_parser(grammar)
    except Exception:  # noqa: BLE001 - no such grammar in this wheel (or a download-only version of the pack)
        return None


def python_ok(code):
    try:
        with warnings.catch_warnings():  # invalid escape sequences etc. are warnings, not errors
            warnings.simplefilter("ignore")
            ast.parse(code)
        return True
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        return False


def syntax_ok(code, lang):
    """True (parses), False (syntax error) or None (no parser for `lang`: not checked)."""
    if lang in PYTHON_LIKE:
        return python_ok(code)
    grammar = GRAMMARS.get(lang)
    parser = _parser(grammar) if grammar else None
    if parser is None:
        return None
    if lang == "php" and "<?php" not in code and "<?=" not in code:
        code = "<?php\n" + code  # the grammar reads text before the opening tag as inline HTML
    return not parser.parse(code.encode("utf-8")).root_node.has_error


def checkable_languages():
    """The languages this installation can check (for the summary)."""
    return list(PYTHON_LIKE) + [lang for lang, g in GRAMMARS.items() if _parser(g) is not None]
