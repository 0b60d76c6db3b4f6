"""Top-level modules importable on the GPU machine: its image's packages (the device tool's KINDS.md list of
2026-11-17, translated to import names), the wheels scripts/prepare_gpu_wheels.sh carries, and this repository."""

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

# what scripts/prepare_gpu_wheels.sh puts in .whl/ (keep the two in step) and the Megatron-LM source it carries
CARRIED = ("liger_kernel pydantic pydantic_core annotated_types typing_inspection megatron fastapi starlette uvicorn "
           "openai jiter distro sniffio")

THIS_REPO = "megasnow benchmarks tools tests"


def allowed(stdlib_names):
    return set((IMAGE + SETUPTOOLS_VENDORED + " " + CARRIED + " " + THIS_REPO).split()) | set(stdlib_names)
