"""Exit 0 when every requirement line of the given files is installed at an allowed version, else print the
unmet ones and exit 1; scripts/install.sh runs pip only then (pip's resolver takes minutes even with nothing
to do). Stdlib + `packaging` (pip's vendored copy when the package itself is absent); takes well under a second.

  python scripts/check_requirements.py requirements.txt requirements-test.txt
"""
import sys
from importlib import metadata

try:
    from packaging.requirements import InvalidRequirement, Requirement
except ImportError:  # a bare Python: pip always vendors it
    from pip._vendor.packaging.requirements import InvalidRequirement, Requirement


def unmet(lines):
    """Requirement strings (of `lines`) that are not installed, or installed at a version they exclude.

    Extras (`ray[default]`) are checked through the distribution's own requirements for that extra.
    Lines pip understands but this check cannot (options, URLs) count as unmet, so pip decides.
    """
    out = []
    for line in lines:
        line = line.split(" #")[0].strip()
        if not line or line.startswith("#"):
            continue
        try:
            req = Requirement(line)
        except InvalidRequirement:
            out.append(line)
            continue
        if req.marker is not None and not req.marker.evaluate():
            continue
        if not _satisfied(req):
            out.append(line)
    return out


def _satisfied(req, depth=0):
    try:
        version = metadata.version(req.name)
    except metadata.PackageNotFoundError:
        return False
    if req.specifier and not req.specifier.contains(version, prereleases=True):
        return False
    if req.extras and depth == 0:
        for dep in metadata.requires(req.name) or []:
            sub = Requirement(dep)
            if sub.marker is None:
                continue
            if any(sub.marker.evaluate({"extra": extra}) for extra in req.extras) and not _satisfied(sub, depth + 1):
                return False
    return True


def main(paths):
    lines = []
    for path in paths:
        with open(path, encoding="utf-8") as f:
            lines += f.read().splitlines()
    missing = unmet(lines)
    if missing:
        print(" ".join(missing))
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
