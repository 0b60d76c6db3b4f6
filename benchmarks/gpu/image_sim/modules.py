"""Top-level modules importable on the GPU machine: its image's packages (the device tool's KINDS.md list of
2026-11-17, translated to import names), the wheels actually present in the carried folder
(scripts/prepare_gpu_wheels.sh fills it), and this repository."""
import os

IMAGE = """
absl accelerate aiofiles aiohappyeyeballs aiohttp aiosignal annotated_doc anyio attr attrs botorch build certifi
charset_normalizer chex click cloudpickle cmake colorama contourpy coverage cuda cuda_bindings cuda_core
cuda_pathfinder cupy cupyx cupy_backends cycler Cython cython pyximport diffrax e3nn einops equinox etils execnet
filelock flatbuffers flax fontTools formulaic frozenlist fsspec gpytorch grpc h11 h5py hf_xet httpcore httpx
huggingface_hub humanize hypothesis idna imageio iniconfig interface_meta jax jax_plugins jaxlib jaxtyping jinja2
joblib kiwisolver lazy_loader lightning lightning_utilities linear_operator lineax llvmlite lxml markdown markdown_it
markupsafe matplotlib mpl_toolkits pylab mdurl mesonbuild ml_dtypes mpi4py mpmath msgpack multidict
multipledispatch mypy_extensions nanobind narwhals networkx ninja numba numba_cuda numpy numpyro nvidia pynvml onnx
onnx_ir onnxruntime onnxscript cv2 optax opt_einsum opt_einsum_fx optimistix orbax packaging pandas pathspec patsy
peft PIL pip pluggy portalocker prometheus_client propcache google psutil pyarrow pybind11 cpuinfo pygments
pyparsing pyproject_hooks pyre_extensions pytest _pytest py pytest_benchmark pytest_cov pytest_mock pytest_timeout
xdist dateutil pytorch_lightning yaml _yaml regex requests rich sacrebleu safetensors scikit_build_core skimage
sklearn scipy seaborn sentencepiece sentence_transformers setuptools pkg_resources _distutils_hack shellingham
simplejson six sortedcontainers statsmodels sympy tabulate tensorboard tensorboard_data_server tensorstore
threadpoolctl tifffile tiktoken timm tokenizers toolz tlz torch torchgen functorch torchaudio torchdiffeq
torch_geometric torchmetrics torchvision tqdm transformers treescope triton typer typing_extensions typing_inspect
urllib3 uvloop wadler_lindig werkzeug wheel wrapt xarray xxhash yarl zipp
"""

# setuptools' vendored packages, importable wherever setuptools is
SETUPTOOLS_VENDORED = ("jaraco more_itertools backports platformdirs autocommand inflect typeguard tomli "
                       "importlib_metadata")

# Carried: only what is in the wheels folder given to the run (scripts/prepare_gpu_wheels.sh fills .whl/), so that a
# dry run with a missing or incomplete folder refuses the same imports the GPU machine would.
MEGATRON_ARCHIVE = "megatron-lm-"  # .whl/megatron-lm-<tag>.tar.gz: Megatron-LM's source, imported as `megatron`

THIS_REPO = "megasnow benchmarks tools tests"


def wheel_modules(wheel_path):
    """Top-level import names a wheel installs (its files outside *.dist-info / *.data), e.g. {"liger_kernel"}."""
    import zipfile

    names = set()
    try:
        with zipfile.ZipFile(wheel_path) as z:
            for member in z.namelist():
                top, sep, _ = member.partition("/")
                if sep:  # a package folder (not the wheel's metadata)
                    if not top.endswith((".dist-info", ".data")):
                        names.add(top)
                elif top.endswith((".py", ".so")):  # a top-level module: x.py, x.cpython-312-....so
                    names.add(top.split(".", 1)[0])
    except (OSError, zipfile.BadZipFile):
        pass
    return names


def carried(wheels_dir):
    """Import names the wheels folder provides: each *.whl's top-level modules, and `megatron` when the
    Megatron-LM archive is there. An absent folder carries nothing."""
    names = set()
    try:
        files = os.listdir(wheels_dir)
    except OSError:
        return names
    for name in files:
        if name.endswith(".whl"):
            names |= wheel_modules(os.path.join(wheels_dir, name))
        elif name.startswith(MEGATRON_ARCHIVE) and name.endswith(".tar.gz"):
            names.add("megatron")
    return names


def allowed(stdlib_names, wheels_dir):
    return (set((IMAGE + SETUPTOOLS_VENDORED + " " + THIS_REPO).split()) | carried(wheels_dir)
            | set(stdlib_names))
