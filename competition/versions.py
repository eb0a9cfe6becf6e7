"""The oldest Keras, TensorFlow and typer that kaggle-mnist supports, checked before any work: by `train`
and the other commands that load Keras (through `backend.select`), and first thing in a Kaggle kernel.

The floors are the releases in Kaggle's notebook image, the oldest that CI tests
(`.ci/kaggle-image.txt`); pyproject.toml states the same floors, and tests/test_versions.py keeps the
three in step. Older releases are not tested, so they are refused in one line here rather than left to
fail somewhere inside a run.
"""

from __future__ import annotations

import re
from importlib.metadata import PackageNotFoundError, packages_distributions, version

from competition.errors import UserError

# Import name -> the oldest (major, minor) supported.
FLOORS: dict[str, tuple[int, int]] = {"keras": (3, 13), "tensorflow": (2, 20), "typer": (0, 24)}


def installed(module: str) -> str | None:
    """The version of the distribution that provides `module`, whatever it is called (TensorFlow
    ships as tensorflow, tensorflow-cpu, tensorflow-macos, tf-nightly...), or None without one."""
    names = packages_distributions().get(module) or [module]
    for name in names:
        try:
            return version(name)
        except PackageNotFoundError:
            continue
    return None


def release(text: str) -> tuple[int, int]:
    """(major, minor) of a version string such as '2.20.0', '3.13.2' or '2.21.0rc1'."""
    numbers = [int(n) for n in re.findall(r"\d+", text)[:2]]
    return (numbers + [0, 0])[0], (numbers + [0, 0])[1]


def problem(found: dict[str, str | None]) -> str | None:
    """One line naming what is missing or too old among the versions `found` (None: not installed),
    with the pip command that mends it; None when all is well."""
    wrong = [m for m, have in found.items() if have is None or release(have) < FLOORS[m]]
    if not wrong:
        return None
    what = "; ".join(
        f"{m} is not installed" if found[m] is None else f"{m} {found[m]} is older than {_floor(m)}"
        for m in wrong
    )
    return f"{what} (kaggle-mnist needs {', '.join(f'{m} >= {_floor(m)}' for m in found)}): " + (
        "pip install -U " + " ".join(f"'{m}>={_floor(m)}'" for m in wrong)
    )


def require(backend: str = "tensorflow") -> None:
    """Raises one UserError if Keras, typer or (as the backend) TensorFlow is missing or too old; JAX
    runs do not load TensorFlow."""
    needed = ("keras", "typer") + (("tensorflow",) if backend == "tensorflow" else ())
    line = problem({module: installed(module) for module in needed})
    if line:
        raise UserError(line)


def _floor(module: str) -> str:
    return ".".join(map(str, FLOORS[module]))
