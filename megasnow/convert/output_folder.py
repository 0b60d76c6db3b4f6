"""The output folder of an import or export: refused when it already holds something (a checkpoint a run resumes
from, a served model), unless the caller asks to replace it; written under a temporary name and swapped in whole."""
import contextlib
import os
import shutil

from megasnow.convert.errors import ConversionError  # light: checked before torch loads

OVERWRITE_HINT = "pass overwrite=True to replace it"  # the Python API's; the CLI passes its --overwrite wording


def describe_contents(path):
    """A short phrase for what a non-empty folder holds: a megasnow checkpoint (where `latest` points), a HF model,
    or its first few entries."""
    names = sorted(os.listdir(path))
    if "latest" in names or any(n.startswith("step_") for n in names):
        try:
            with open(os.path.join(path, "latest"), encoding="utf-8") as f:
                latest = f.read().strip()
        except OSError:
            latest = None
        return f"a megasnow checkpoint, latest {latest}" if latest else "megasnow checkpoint step folders"
    if "meta.json" in names and any(n.startswith("model_tp") for n in names):
        return "a megasnow checkpoint step folder"
    if "config.json" in names:
        return "a HuggingFace model, config.json"
    shown = ", ".join(names[:3]) + (f", ... ({len(names)} entries)" if len(names) > 3 else "")
    return shown


def check_output(path, overwrite, label=None, hint=OVERWRITE_HINT, what=None):
    """Refuse (ConversionError) an output path that is a file, or a non-empty folder unless `overwrite`.

    label: how the message names the path (the CLI passes "--output X"); hint: what to do instead; what: what the
    folder is for ("HF model"), named when the path is a file. A missing or empty folder passes; nothing is changed
    either way.
    """
    label = label or os.fspath(path)
    if os.path.isfile(path):
        raise ConversionError(f"{label} is a file; give a folder" + (f" to write the {what} into" if what else ""))
    if os.path.isdir(path) and os.listdir(path) and not overwrite:
        raise ConversionError(f"{label} is not empty: it holds {describe_contents(path)}; nothing was changed. Give "
                              f"a new or empty folder, or {hint}")


@contextlib.contextmanager
def replace_folder(out_dir, overwrite=False):
    """Yield a fresh temporary folder beside `out_dir` to write into; on clean exit it replaces `out_dir` (whose
    old contents are deleted: only allowed with `overwrite` or when it is empty). On error the temporary folder is
    removed and `out_dir` is left as it was. Folder modes honour the umask (megasnow.utils.atomic.temporary_dir)."""
    from megasnow.utils.atomic import honour_umask_tree, temporary_dir

    out_dir = os.fspath(out_dir).rstrip(os.sep) or os.sep
    check_output(out_dir, overwrite)
    tmp = temporary_dir(out_dir)
    try:
        yield tmp
        honour_umask_tree(tmp)  # safetensors writes 0600 files whatever the umask
        old = None
        if os.path.isdir(out_dir):
            old = temporary_dir(out_dir + ".old")
            os.replace(out_dir, os.path.join(old, "x"))
        os.replace(tmp, out_dir)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


# ----------------------------------------------------------------------------- finished conversions
def step_folder(path):
    """The step folder of a megasnow checkpoint path (itself, or where its `latest` points); else `path`."""
    if os.path.isfile(os.path.join(path, "meta.json")) or not os.path.isfile(os.path.join(path, "latest")):
        return path
    with open(os.path.join(path, "latest"), encoding="utf-8") as f:
        return os.path.join(path, f.read().strip())


def _source_state(path):
    """(name, size, mtime_ns) of a source file, or of the files directly in a source folder: a changed source is
    another conversion."""
    if os.path.isfile(path):
        st = os.stat(path)
        return [[os.path.basename(path), st.st_size, st.st_mtime_ns]]
    out = []
    for name in sorted(os.listdir(path)) if os.path.isdir(path) else []:
        full = os.path.join(path, name)
        if os.path.isfile(full):
            st = os.stat(full)
            out.append([name, st.st_size, st.st_mtime_ns])
    return out


def conversion_record(command, source, **options):
    """What a conversion was made from, stored in its output (an import's meta.json `conversion`, an export's
    model.safetensors metadata): the command, the source (a checkpoint's step folder) and its files' sizes and
    times, the options. `finished` (UTC, ISO 8601) is added when written."""
    source = os.path.abspath(step_folder(os.fspath(source)))
    return {"command": command, "source": source, "source_files": _source_state(source),
            "options": {k: (os.path.abspath(v) if k == "tokenizer" and v else v) for k, v in sorted(options.items())}}


def stamped(record):
    """`record` with `finished` set to now (UTC)."""
    import datetime

    return dict(record, finished=datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC"))


def finished_conversion(out_dir):
    """The conversion record stored in a finished output folder (import: the step folder's meta.json; export:
    model.safetensors' metadata), or None."""
    import json

    try:
        meta_file = os.path.join(step_folder(out_dir), "meta.json")
        if os.path.isfile(meta_file):
            with open(meta_file, encoding="utf-8") as f:
                return json.load(f).get("conversion")
        weights = os.path.join(out_dir, "model.safetensors")
        if os.path.isfile(weights):
            from safetensors import safe_open

            with safe_open(weights, "np") as f:
                text = (f.metadata() or {}).get("conversion")
            return json.loads(text) if text else None
    except Exception:  # noqa: BLE001 - a damaged or foreign folder simply holds no finished conversion
        return None
    return None


def already_done(out_dir, record):
    """The `finished` time when `out_dir` holds a finished conversion equal to `record`, else None."""
    found = finished_conversion(out_dir) if os.path.isdir(out_dir) else None
    if isinstance(found, dict) and {k: v for k, v in found.items() if k != "finished"} == record:
        return found.get("finished", "earlier")
    return None
