"""Prompt templates: a text file with `{{placeholder}}`s, rendered per seed into a chat or completion request.

Placeholders: {{seed}} (the seed snippet; required), {{language}} (display name, e.g. "C++"), {{lang}} (slug,
e.g. "cpp"), {{fence}} (the info string for a fenced block, e.g. "cpp"). Any other {{name}} is refused at start-up,
so a typo never reaches thousands of requests. Double braces leave code braces in a template alone.
"""
import hashlib
import os
import re
from dataclasses import dataclass

from megasnow.errors import UserError

PLACEHOLDER = re.compile(r"\{\{\s*([A-Za-z_]+)\s*\}\}")
KNOWN = ("seed", "language", "lang", "fence")

# The built-in template (prompt.template: default), in our own words: OSS-Instruct adapted to pretraining
# (SnowCoder): the seed is a starting point, the answer is one complete file of problem-solving code.
DEFAULT_TEMPLATE = """\
Below is a piece of {{language}} code taken from a real project. Treat it only as a source of inspiration: find \
a concrete programming problem that its idea suggests, and write one complete, self-contained, high-quality \
{{language}} source file that solves it.

The file should read like excellent code from a well-kept project: clear names, a short comment or docstring \
where it helps the reader, sensible handling of edge cases, and no dependencies beyond the {{language}} standard \
library. Do not copy the given code; write a new file of your own.

Answer with the whole file inside a single fenced code block that starts with ```{{fence}} and write nothing \
after the block.

Code for inspiration:
```{{fence}}
{{seed}}
```
"""

# display names and fence info strings where they differ from the slug (megasnow.curate.languages slugs)
DISPLAY_NAMES = {"python": "Python", "java": "Java", "cpp": "C++", "c": "C", "javascript": "JavaScript",
                 "php": "PHP", "csharp": "C#", "go": "Go", "typescript": "TypeScript", "sql": "SQL",
                 "ruby": "Ruby", "rust": "Rust", "jupyter": "Python", "scala": "Scala", "kotlin": "Kotlin",
                 "shell": "Shell", "dart": "Dart", "swift": "Swift", "json": "JSON", "yaml": "YAML"}
FENCE_NAMES = {"jupyter": "python", "shell": "bash"}


def display_name(lang):
    return DISPLAY_NAMES.get(lang, lang)


def fence_name(lang):
    return FENCE_NAMES.get(lang, lang)


@dataclass(frozen=True)
class PromptTemplate:
    """A checked template: `name` (the file path or 'default'), its text, style and optional system message."""

    name: str
    text: str
    style: str = "chat"
    system: str = None
    answer_prefix: str = ""
    answer_suffix: str = ""

    @property
    def sha(self):
        """Hash of everything that shapes the prompt (recorded as provenance)."""
        blob = "\0".join([self.style, self.system or "", self.text, self.answer_prefix, self.answer_suffix])
        return hashlib.sha256(blob.encode("utf-8")).hexdigest()[:16]

    def render(self, seed, lang):
        """The user text for one seed; the seed goes in last, so braces or {{...}} inside it stay verbatim."""
        return fill(self.text, lang, seed)

    def full_answer(self, answer, lang):
        """The answer with answer_prefix / answer_suffix around it (what post-processing parses)."""
        if not self.answer_prefix and not self.answer_suffix:
            return answer
        return fill(self.answer_prefix, lang) + answer + fill(self.answer_suffix, lang)

    def request_body(self, seed, lang):
        """{"messages": [...]} (chat) or {"prompt": text} (completion) for one seed."""
        text = self.render(seed, lang)
        if self.style == "completion":
            return {"prompt": text}
        messages = ([{"role": "system", "content": self.system}] if self.system else [])
        return {"messages": messages + [{"role": "user", "content": text}]}


def fill(text, lang, seed=None):
    """`text` with its placeholders replaced, in one pass (a value is never scanned for placeholders)."""
    values = {"language": display_name(lang), "lang": lang, "fence": fence_name(lang), "seed": seed}
    parts = PLACEHOLDER.split(text)  # text, name, text, name, ... text
    return "".join(part if i % 2 == 0 else values[part] for i, part in enumerate(parts))


def check_template_text(text, where):
    """UserError naming `where` when the template lacks {{seed}} or uses an unknown placeholder."""
    names = PLACEHOLDER.findall(text)
    unknown = sorted(set(names) - set(KNOWN))
    if unknown:
        raise UserError(f"{where}: unknown placeholder {{{{{unknown[0]}}}}}; templates may use "
                        + ", ".join("{{" + k + "}}" for k in KNOWN))
    if "seed" not in names:
        raise UserError(f"{where}: the template has no {{{{seed}}}} placeholder, so every request would be the same; "
                        f"add {{{{seed}}}} where the seed code goes")


def load_template(cfg, names=None):
    """The PromptTemplate of a PromptConfig: 'default' or a file; refused at start-up when it is unusable (UserError
    naming the key, or what `names` maps it to, e.g. {"prompt.template": "c.yaml: prompt.template"})."""
    names = names or {}
    if cfg.template == "default":
        name, text = "default", DEFAULT_TEMPLATE
    else:
        name = cfg.template
        if not os.path.isfile(name):
            raise UserError(f"{names.get('prompt.template', 'prompt.template')}: {name} is not a file (give a template "
                            f"file, or 'default')")
        with open(name, encoding="utf-8") as f:
            text = f.read()
    check_template_text(text, f"{names.get('prompt.template', 'prompt.template')} {name}")
    system = cfg.system
    if system and system.startswith("@"):
        path = system[1:]
        if not os.path.isfile(path):
            raise UserError(f"{names.get('prompt.system', 'prompt.system')}: {path} is not a file")
        with open(path, encoding="utf-8") as f:
            system = f.read()
    if system and cfg.style == "completion":
        raise UserError("prompt.system is set but prompt.style is completion; a system message needs style chat")
    for key in ("answer_prefix", "answer_suffix"):
        bad = sorted(set(PLACEHOLDER.findall(getattr(cfg, key))) - {"language", "lang", "fence"})
        if bad:
            raise UserError(f"prompt.{key}: only {{{{language}}}}, {{{{lang}}}} and {{{{fence}}}} may be used, "
                            f"not {{{{{bad[0]}}}}}")
    return PromptTemplate(name=name, text=text, style=cfg.style, system=system or None,
                          answer_prefix=cfg.answer_prefix, answer_suffix=cfg.answer_suffix)
