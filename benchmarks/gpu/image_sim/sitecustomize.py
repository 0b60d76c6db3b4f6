"""Makes this repository's code import only what the GPU machine's image holds (image_sim/modules.py).

Active in every process whose PYTHONPATH starts with this folder: the GPU suite's --dry-run puts it there, so an
import that the GPU machine cannot satisfy fails on CPU the way it would fail there (ModuleNotFoundError, and
importlib.util.find_spec returns None) instead of being found in the ten minutes on the GPU. Only imports made by
this repository's files (and `python -c` snippets) are checked; a carried package counts only when its wheel is in
the wheels folder the suite was given (GPU_IMAGE_SIM_WHEELS): what an installed library imports for itself
depends on its version, which differs between this machine and the image.
"""
import importlib.abc
import importlib.util
import os
import sys

_HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, _HERE)
from modules import allowed  # noqa: E402

del sys.path[0]

_REPO = os.path.dirname(os.path.dirname(os.path.dirname(_HERE))) + os.sep
# the carried wheels: the folder the suite was given (GPU_IMAGE_SIM_WHEELS, set by --dry-run), else the repository's
_WHEELS = os.environ.get("GPU_IMAGE_SIM_WHEELS") or os.path.join(_REPO, ".whl")
_ALLOWED = (allowed(sys.stdlib_module_names, _WHEELS)
            | set(filter(None, os.environ.get("GPU_IMAGE_SIM_EXTRA", "").split(","))))
_MARK = "[not on the GPU image]"
_IMPORT_MACHINERY = (os.path.dirname(importlib.__file__), __file__)


def _importer():
    """File name of the code that asked for the import (import machinery frames skipped)."""
    frame = sys._getframe(2)
    while frame is not None:
        name = frame.f_code.co_filename
        if not (name.startswith("<frozen") or name.startswith(_IMPORT_MACHINERY)):
            return name
        frame = frame.f_back
    return ""


class _ImageOnly(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        top = name.partition(".")[0]
        if top in _ALLOWED or top.startswith("_"):
            return None  # let the normal finders look
        importer = _importer()
        if importer.startswith(_REPO) or importer in ("<string>", "<stdin>"):
            raise ModuleNotFoundError(f"No module named {top!r} {_MARK}", name=top)
        return None


_real_find_spec = importlib.util.find_spec


def _find_spec(name, package=None):
    try:
        return _real_find_spec(name, package)
    except ModuleNotFoundError as e:
        if _MARK in str(e):
            return None
        raise


importlib.util.find_spec = _find_spec
sys.meta_path.insert(0, _ImageOnly())
