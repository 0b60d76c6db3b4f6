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


def python_error(code):
    """None when `code` compiles, else "line N: message" (the SyntaxError's)."""
    try:
        with warnings.catch_warnings():  # invalid escape sequences etc. are warnings, not errors
            warnings.simplefilter("ignore")
            compile(code, "<synthesized>", "exec", dont_inherit=True)  # also 'return' outside function etc.
        return None
    except SyntaxError as e:
        return f"line {e.lineno}: {e.msg}" if e.lineno else e.msg
    except (ValueError, OverflowError, RecursionError, MemoryError) as e:
        return f"{type(e).__name__}: {e}"


def python_ok(code):
    return python_error(code) is None


def _first_error_node(node):
    """The first ERROR or MISSING node of a tree-sitter tree, depth first (None if it has none)."""
    if node.is_missing or node.type == "ERROR":
        return node
    if not node.has_error:
        return None
    for child in node.children:
        found = _first_error_node(child)
        if found is not None:
            return found
    return None


def syntax_error(code, lang):
    """(ok, detail): ok True (parses), False (syntax error; detail "line N: ...", lines counted from 1) or None (no
    parser for `lang`: not checked; detail None)."""
    if lang in PYTHON_LIKE:
        detail = python_error(code)
        return detail is None, detail
    grammar = GRAMMARS.get(lang)
    parser = _parser(grammar) if grammar else None
    if parser is None:
        return None, None
    shift = 0
    if lang == "php" and "<?php" not in code and "<?=" not in code:
        code, shift = "<?php\n" + code, 1  # the grammar reads text before the opening tag as inline HTML
    root = parser.parse(code.encode("utf-8")).root_node
    if root.has_error:
        node = _first_error_node(root)
        if node is None:
            return False, "parse error"
        line = node.start_point[0] + 1 - shift
        if node.is_missing:
            return False, f"line {line}: missing {node.type!r}"
        text = code.encode("utf-8")[node.start_byte:node.end_byte].decode("utf-8", "replace").split("\n")[0]
        return False, f"line {line}: unexpected {text[:40]!r}"
    if lang in NO_TOP_LEVEL_RETURN:
        for node in root.children:
            if node.type == "return_statement" or (node.type == "expression_statement" and node.named_child_count
                                                   and node.named_children[0].type == "return_expression"):
                return False, f"line {node.start_point[0] + 1}: return outside a function"
    return True, None


def syntax_ok(code, lang):
    """True (parses), False (syntax error) or None (no parser for `lang`: not checked)."""
    return syntax_error(code, lang)[0]


def checkable_languages():
    """The languages this installation can check (for the summary)."""
    return list(PYTHON_LIKE) + [lang for lang, g in GRAMMARS.items() if _parser(g) is not None]
