"""Build the compiled Raft core (raft._core) from raft/_core.pyx.

`pip install .` compiles it (raft/_core.pyx includes its parts, raft/core/*.pxi, which
the sdist and wheel ship as package data); Cython is a build requirement (pyproject.toml), so a
fresh machine needs only a C compiler. Set RAFT_DEBUG=1 for a build with C asserts
on and line tracing, RAFT_ANNOTATE=1 to write the Cython HTML annotation
(raft/_core.html) showing where Python objects are touched.
"""
import os

from Cython.Build import cythonize
from setuptools import Extension, find_packages, setup

debug = os.environ.get("RAFT_DEBUG") == "1"
annotate = os.environ.get("RAFT_ANNOTATE") == "1"

extensions = [
    Extension(
        "raft._core",
        ["raft/_core.pyx"],
        extra_compile_args=["-O0", "-g"] if debug else ["-O2"],
        define_macros=[("CYTHON_TRACE_NOGIL", "1")] if debug else [],
    ),
    Extension(
        "raft._fastpath",
        ["raft/_fastpath.pyx"],
        extra_compile_args=["-O0", "-g"] if debug else ["-O2"],
        define_macros=[("CYTHON_TRACE_NOGIL", "1")] if debug else [],
    ),
    Extension(
        "raft._tracefmt",
        ["raft/_tracefmt.pyx"],
        extra_compile_args=["-O0", "-g"] if debug else ["-O2"],
        define_macros=[("CYTHON_TRACE_NOGIL", "1")] if debug else [],
    ),
    Extension(
        "raft.net.codec",
        ["raft/net/codec.pyx"],
        extra_compile_args=["-O0", "-g"] if debug else ["-O2"],
        define_macros=[("CYTHON_TRACE_NOGIL", "1")] if debug else [],
    ),
]

setup(
    # spec/ (the TLA+ side) installs as `raft_spec`, not as a generic top-level `spec`;
    # the runtime does not need it (the trace checker is raft.trace_checker).
    packages=find_packages(include=["raft", "raft.*"]) + ["raft_spec"],
    package_dir={"raft_spec": "spec"},
    ext_modules=cythonize(
        extensions,
        language_level=3,
        annotate=annotate,
        compiler_directives={
            "boundscheck": debug,
            "wraparound": False,
            "cdivision": True,
            "embedsignature": True,
            "linetrace": debug,
        },
    ),
)
