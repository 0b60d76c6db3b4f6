"""Code-block selection (extract.py) and syntax checks (syntax.py) for every recipe language."""
import pytest

from megasnow.synth.extract import code_blocks, fence_language, select_code
from megasnow.synth.syntax import checkable_languages, syntax_ok
from tests.synth.programs import BROKEN, SHORT, VALID

LANGS = sorted(VALID)


@pytest.mark.parametrize("lang", LANGS)
def test_syntax_valid_and_broken_per_language(lang):
    assert syntax_ok(VALID[lang], lang) is True
    assert syntax_ok(BROKEN[lang], lang) is False
    assert syntax_ok(SHORT[lang], lang) is True  # dropped as too_short, not as a syntax error


@pytest.mark.parametrize("lang", ["python", "javascript", "typescript", "java", "c", "cpp", "go", "rust"])
def test_top_level_return_is_a_syntax_error(lang):
    """A fragment cut out of a function (the grammars, and Python's ast.parse, accept it to parse snippets)."""
    assert syntax_ok("return 1\n" if lang == "python" else "return 1;\n", lang) is False
    if lang == "javascript":
        assert syntax_ok("  return out.join('')\n  .trim()\n", lang) is False
    if lang == "python":
        assert syntax_ok("for x in y:\n    pass\nbreak\n", lang) is False


def test_every_recipe_language_is_checkable_offline():
    from megasnow.curate.languages import RECIPE_LANGUAGES

    assert set(RECIPE_LANGUAGES) <= set(checkable_languages())
    assert syntax_ok("anything", "klingon") is None


def test_php_without_open_tag_is_parsed_as_php():
    assert syntax_ok("function f($x) { return $x; }\n", "php") is True
    assert syntax_ok("function f($x) { return $x;\n", "php") is False


@pytest.mark.parametrize("info,lang", [("py", "python"), ("Python3", "python"), ("c++", "cpp"), ("C#", "csharp"),
                                       ("golang", "go"), ("ts", "typescript"), ("bash", "shell"),
                                       ("sh", "shell"), ("kt", "kotlin"), ("rs", "rust"), ("", None),
                                       ("text", None)])
def test_fence_language_aliases(info, lang):
    assert fence_language(info) == lang


def fenced(info, code, fence="```"):
    return f"{fence}{info}\n{code}{fence}\n"


@pytest.mark.parametrize("lang", LANGS)
def test_select_code_takes_the_block_of_the_requested_language(lang):
    info = "python" if lang == "jupyter" else {"shell": "bash", "csharp": "csharp"}.get(lang, lang)
    usage = fenced("bash", "$ run it\n") if lang != "shell" else fenced("text", "output\n")
    text = "Here it is:\n\n" + fenced(info, VALID[lang]) + "\nRun it with:\n" + usage
    code, reason, matched = select_code(text, lang)
    assert reason is None and code == VALID[lang] and matched == 1


def test_several_blocks_of_the_language_take_the_longest():
    text = fenced("python", "x = 1\n") + "and the file:\n" + fenced("python", VALID["python"])
    assert select_code(text, "python") == (VALID["python"], None, 2)


def test_untagged_block_is_accepted_when_no_block_is_tagged():
    assert select_code(fenced("", VALID["go"]), "go") == (VALID["go"], None, 1)


@pytest.mark.parametrize("text,reason", [
    ("def f():\n    return 1\n", "no_code_block"),
    ("```python\ndef f():\n    return 1\n", "unclosed_code_block"),
    (fenced("java", VALID["java"]), "wrong_language"),
    (fenced("python", "\n\n"), "empty_code_block"),
])
def test_select_code_drop_reasons(text, reason):
    code, why, _ = select_code(text, "python")
    assert code is None and why == reason


def test_code_blocks_follow_commonmark_fences():
    text = "~~~~rust\nlet a = \"```\";\n~~~\nstill inside\n~~~~\n````md\n```py\nx\n```\n````\n"
    blocks = code_blocks(text)
    assert [(b.info, b.code, b.closed) for b in blocks] == [
        ("rust", "let a = \"```\";\n~~~\nstill inside", True), ("md", "```py\nx\n```", True)]
