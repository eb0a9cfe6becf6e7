"""Choosing the Keras backend and finding accelerators. Nothing else imports a backend library.

Keras reads KERAS_BACKEND once, on first import, so `select` must run before anything imports keras.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import sys
import time

from competition import paths
from competition.errors import UserError
from competition.versions import require as require_supported_versions

# The Keras backends offered: TensorFlow (Kaggle's notebooks) and JAX (tested in CI too). PyTorch is not
# offered: nothing here tests it, and its trainer runs this model eagerly.
BACKEND_MODULES = {"tensorflow": "tensorflow", "jax": "jax"}
# What importing the backend and Keras took in this process: every worker process of a run pays it again.
import_seconds = 0.0


def select(name: str) -> None:
    if "keras" in sys.modules:
        import keras

        if keras.backend.backend() != name:
            raise UserError(
                f"Keras is already loaded with the {keras.backend.backend()} backend in this process; "
                f"start a new Python process to use {name}"
            )
        return
    module = BACKEND_MODULES.get(name, name)
    if importlib.util.find_spec(module) is None:
        extra = (
            'pip install -e ".[tensorflow]" (or keep the TensorFlow build you have, e.g. tensorflow-cpu)'
            if name == "tensorflow"
            else f"pip install {module}"
        )
        raise UserError(f"the {name} backend needs {module}, which is not installed here: {extra}")
    require_supported_versions(name)
    os.environ["KERAS_BACKEND"] = name
    # TensorFlow's C++ start-up chatter (CUDA probes, graph warnings) is not for users.
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    # JAX grabs 75% of every GPU when it first lists devices; with one training process per GPU, the
    # process that only counts them would starve the others. Allocate as needed instead.
    os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")
    if name == "jax":
        # XLA compiles each member's training step anew (seconds on a CPU); members share one
        # architecture, so all but the first of a run (and every member of a rerun) load the same
        # compiled program from JAX's disk cache instead: the same program, the same numbers.
        os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", str(paths.compile_cache_dir()))
    global import_seconds
    started = time.perf_counter()
    try:
        with _quiet_native_stderr():
            __import__(BACKEND_MODULES[name])
            # Keras' first import loads more of the backend, which probes for CUDA again.
            import keras  # noqa: F401
        import_seconds = time.perf_counter() - started
    except ImportError:
        raise UserError(
            f"the {name} backend is not installed: pip install {name}, or use --backend tensorflow"
        ) from None


@contextlib.contextmanager
def _quiet_native_stderr():
    """Mutes file descriptor 2 while a backend loads: absl prints CUDA probes before any log level
    applies. Python exceptions are unaffected; they surface after the block."""
    try:
        saved = os.dup(2)
    except OSError:
        yield
        return
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        sys.stderr.flush()
        os.dup2(devnull, 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


def seed(value: int) -> None:
    """Seeds Python, NumPy and the backend. Keras seeds TensorFlow as well wherever it is installed,
    importing it on first use under JAX: muted as in `select`, or its CUDA probes reach the terminal."""
    import keras

    with _quiet_native_stderr():
        keras.utils.set_random_seed(value)


def gpus() -> list[str]:
    """Names of the GPUs the current backend can use."""
    import keras

    backend = keras.backend.backend()
    if backend == "tensorflow":
        import tensorflow as tf

        return [d.name for d in tf.config.list_physical_devices("GPU")]
    if backend == "jax":
        import jax

        return [str(d) for d in jax.devices() if d.platform == "gpu"]
    return []


def cpu_bfloat16() -> bool:
    """Whether this CPU computes bfloat16 natively (AVX512_BF16, or AMX on recent Xeons), so that
    oneDNN runs bfloat16 convolutions faster than float32 ones; on other CPUs bfloat16 is emulated and
    slower."""
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("flags"):
                    flags = set(line.split(":", 1)[1].split())
                    return bool(flags & {"avx512_bf16", "amx_bf16"})
    except OSError:
        pass
    return False


def cpu_cores() -> int:
    """The cores this process may run on (a container's or `taskset`'s limit, not the host's count)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def limit_cpu_threads(threads: int) -> bool:
    """Caps the backend's CPU thread pools, for a process that shares the cores with other training
    processes. TensorFlow only (the backend CPU workers are used with). Returns False where the process
    has already run TensorFlow ops (its pools are fixed by then: a notebook, a test session)."""
    import keras

    if keras.backend.backend() != "tensorflow":
        return False
    import tensorflow as tf

    try:
        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(threads)
    except RuntimeError:
        return False
    return True


def make_deterministic() -> None:
    """Same seed, same numbers, on CPU. (On GPU some kernels are nondeterministic by design.)"""
    import keras

    if keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        tf.config.experimental.enable_op_determinism()


def versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    found = {}
    for package in (
        "kaggle-mnist",
        "keras",
        "tensorflow",
        "jax",
        "numpy",
        "pandas",
        "scikit-learn",
        "kaggle",
    ):
        try:
            found[package] = version(package)
        except PackageNotFoundError:
            pass
    found["python"] = sys.version.split()[0]
    return found
