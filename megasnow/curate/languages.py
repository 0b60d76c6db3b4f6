"""The recipe's 18 languages (plus JSON/YAML data files): canonical names, aliases and file extensions.

Canonical names are lowercase slugs safe in file names; The Stack's `lang` values map onto them.
"""

# canonical slug -> extensions (with dot, lowercase) accepted for that language
LANGUAGE_EXTENSIONS = {
    "python": [".py", ".pyw", ".pyi"],
    "java": [".java"],
    "cpp": [".cpp", ".cc", ".cxx", ".c++", ".hpp", ".hh", ".hxx", ".h++", ".ipp", ".inl", ".tcc", ".h"],
    "c": [".c", ".h"],
    "javascript": [".js", ".mjs", ".cjs", ".jsx"],
    "php": [".php", ".php3", ".php4", ".php5", ".phtml"],
    "csharp": [".cs"],
    "go": [".go"],
    "typescript": [".ts", ".tsx", ".mts", ".cts"],
    "sql": [".sql"],
    "ruby": [".rb", ".rake", ".gemspec"],
    "rust": [".rs"],
    "jupyter": [".ipynb"],
    "scala": [".scala", ".sc"],
    "kotlin": [".kt", ".kts"],
    "shell": [".sh", ".bash", ".zsh", ".ksh"],
    "dart": [".dart"],
    "swift": [".swift"],
    # data files: not training languages by default, but The Stack ships them and StarCoder size-filters them
    "json": [".json"],
    "yaml": [".yaml", ".yml"],
}

RECIPE_LANGUAGES = [lang for lang in LANGUAGE_EXTENSIONS if lang not in ("json", "yaml")]

# extension -> language when reading folders of repositories. `.h` is C (The Stack's convention).
EXTENSION_LANGUAGE = {}
for _lang, _exts in LANGUAGE_EXTENSIONS.items():
    for _ext in _exts:
        EXTENSION_LANGUAGE.setdefault(_ext, _lang)
EXTENSION_LANGUAGE[".h"] = "c"

_ALIASES = {
    "c++": "cpp", "cplusplus": "cpp", "c#": "csharp", "c-sharp": "csharp", "cs": "csharp",
    "js": "javascript", "ts": "typescript", "py": "python", "rb": "ruby", "rs": "rust", "golang": "go",
    "jupyter notebook": "jupyter", "jupyter-notebook": "jupyter", "ipynb": "jupyter", "jupyter-scripts": "jupyter",
    "bash": "shell", "sh": "shell", "kt": "kotlin", "yml": "yaml",
}


def canonical_language(name):
    """Map a language name as written by a source ('Python', 'C#', 'c-sharp', ...) to its slug, or None."""
    if not name:
        return None
    key = str(name).strip().lower()
    key = _ALIASES.get(key, key)
    return key if key in LANGUAGE_EXTENSIONS else None


def language_of_path(path):
    """Language slug of a file path by its extension, or None if it is not one of ours."""
    dot = path.rfind(".")
    if dot < 0 or "/" in path[dot:]:
        return None
    return EXTENSION_LANGUAGE.get(path[dot:].lower())


def extension_of(path):
    dot = path.rfind(".")
    return path[dot:].lower() if dot >= 0 and "/" not in path[dot:] else ""
