"""Does generated code parse? Python with the built-in compiler; the other recipe languages with tree-sitter
grammars from tree-sitter-language-pack (the 0.x wheels bundle them; no download at run time).

tree-sitter parsers recover from errors, so "parses" means the tree has no ERROR or MISSING node. Grammars do
not expand macros: macro-heavy C/C++ can be flagged though a compiler would accept it. Some grammars accept
statements at the top level (to parse snippets); a top-level `return` is refused where the language forbids it
(ECMAScript scripts and modules, Java, C, C++, Go, Rust): such a "file" is a fragment cut out of a function.
Python is compiled (not only parsed), which refuses `return`/`yield`/`await` outside a function the same way.
"""
import functools
import warnings

# megasnow.curate.languages slug -> tree-sitter-language-pack grammar name
GRAMMARS = {"java": "java", "cpp": "cpp", "c": "c", "javascript": "javascript", "php": "php", "csharp": "csharp",
            "go": "go", "typescript": "typescript", "sql": "sql", "ruby": "ruby", "rust": "rust", "scala": "scala",
            "kotlin": "kotlin", "shell": "bash", "dart": "dart", "swift": "swift"}
PYTHON_LIKE = ("python", "jupyter")
# languages whose files cannot hold a top-level return (C# 9 top-level statements, PHP, Ruby, shell, Scala and
# Kotlin scripts can); Rust's grammar wraps it as expression_statement(return_expression)
NO_TOP_LEVEL_RETURN = ("javascript", "typescript", "java", "c", "cpp", "go", "rust")


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
            compile(code, "<synthesized>", "exec", dont_inherit=True)  # also 'return' outside function etc.
        return True
    except (SyntaxError, ValueError, OverflowError, RecursionError, MemoryError):
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
    root = parser.parse(code.encode("utf-8")).root_node
    if root.has_error:
        return False
    if lang in NO_TOP_LEVEL_RETURN:
        for node in root.children:
            if node.type == "return_statement" or (node.type == "expression_statement" and node.named_child_count
                                                   and node.named_children[0].type == "return_expression"):
                return False
    return True


def checkable_languages():
    """The languages this installation can check (for the summary)."""
    return list(PYTHON_LIKE) + [lang for lang, g in GRAMMARS.items() if _parser(g) is not None]
