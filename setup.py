# Builds megasnow and its C++ extensions: every csrc/<name>.cpp becomes the module megasnow._<name>.
import glob
import os

from pybind11.setup_helpers import ParallelCompile, Pybind11Extension, build_ext
from setuptools import find_packages, setup

ParallelCompile("MEGASNOW_BUILD_JOBS", default=2).install()

here = os.path.dirname(os.path.abspath(__file__))


def _extensions():
    exts = []
    for src in sorted(glob.glob(os.path.join(here, "csrc", "*.cpp"))):
        name = os.path.splitext(os.path.basename(src))[0]
        exts.append(
            Pybind11Extension(
                f"megasnow._{name}",
                [os.path.relpath(src, here)],
                include_dirs=[os.path.join(here, "csrc")],
                cxx_std=17,
                extra_compile_args=["-O3", "-fvisibility=hidden"],
                extra_link_args=["-lpthread"],
            )
        )
    return exts


def _requirements():
    with open(os.path.join(here, "requirements.txt")) as f:
        return [l.strip() for l in f if l.strip() and not l.startswith(("#", "-"))]


setup(
    name="megasnow",
    version="0.1.0",
    description="Megatron-style pretraining stack for code LMs running the Arctic-SnowCoder recipe",
    packages=find_packages(include=["megasnow", "megasnow.*"]),
    ext_modules=_extensions(),
    cmdclass={"build_ext": build_ext},
    python_requires=">=3.10",
    install_requires=_requirements(),
    extras_require={"gpu": ["flash-attn", "liger-kernel"]},
    zip_safe=False,
)
