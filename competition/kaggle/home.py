"""A run trained on Kaggle brought home: each kernel's output downloaded and checked against its receipt,
the members of several kernels merged into one run folder, checked against this command's settings and
data, and moved into ensembles/ whole. Keras-free."""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import Callable
from pathlib import Path

from competition import data, paths, storage
from competition.errors import UserError
from competition.kaggle import api as kaggle_api
from competition.kaggle.contract import ARCHIVE, RECEIPT, Receipt, extract
from competition.kaggle.record import RunKernels
from competition.runs.files import DamagedFile
from competition.runs.folder import Run, member_name
from competition.runs.identity import same_run
from competition.scoring.score import score_run


def staging(root: Path, key: str) -> Path:
    """Where the kernels' verified outputs wait until the whole run is home."""
    return root / f".kaggle-{key}.outputs"


class MissingOutput(UserError):
    """A kernel that finished without the output it writes."""


def download_output(ref: str, folder: Path) -> Receipt:
    """The kernel's receipt and archive, downloaded (and checked against each other) into `folder`;
    returns the receipt."""
    remedy = f"run the same command again to download it again, or see {kaggle_api.kernel_url(ref)}"
    kaggle_api.kernel_output(ref, folder, (RECEIPT, ARCHIVE), missing=(f"output of kernel {ref}", remedy))
    try:
        receipt = Receipt.load(folder / RECEIPT)
    except FileNotFoundError:
        raise MissingOutput(
            f"the kernel {ref} finished but left no {RECEIPT}: its output is missing; see {kaggle_api.kernel_url(ref)}"
        ) from None
    except ValueError:
        raise UserError(
            f"{RECEIPT} from kernel {ref} is damaged (not the receipt the kernel writes): {remedy}"
        ) from None
    archive = folder / ARCHIVE
    if not archive.is_file():
        raise MissingOutput(
            f"the kernel {ref} finished but left no {ARCHIVE}: its output is missing; see {kaggle_api.kernel_url(ref)}"
        )
    if storage.sha256_file(archive) != receipt.sha256:
        raise UserError(
            f"{ARCHIVE} from kernel {ref} is damaged (its checksum does not match the receipt): {remedy}"
        )
    return receipt


def bring_home(entry: RunKernels, identity, dataset, root: Path, key: str, log: Callable[[str], None]) -> Run:
    """Unpacks each share's last kernel output (downloaded and verified as it ended), merges the members
    into one run folder and moves it into ensembles/ only when all is well."""
    outputs = staging(root, key)
    partial = root / f".kaggle-{key}.partial"
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir()
    try:
        runs = []
        for share in sorted({k.share for k in entry.kernels}):
            last = entry.latest(share)
            folder = partial / f"kernel-{share}"
            shutil.copytree(outputs / last.slug, folder)
            runs.append(_unpack(folder, last.ref))
        run = merge(runs, partial / runs[0].id, identity, dataset)
        target = root / run.id
        if target.exists():
            raise UserError(f"{target} already exists and is not this run: move it away, then run again")
        os.replace(run.dir, target)
        log(f"Downloaded and verified the run from Kaggle into {target}")
        shutil.rmtree(outputs, ignore_errors=True)
        return Run(target)
    finally:
        shutil.rmtree(partial, ignore_errors=True)


def _unpack(folder: Path, ref: str) -> Run:
    """The run folder inside a verified output archive (see download_output), extracted in `folder`."""
    run_id = Receipt.load(folder / RECEIPT).run_id
    archive = folder / ARCHIVE
    extract(archive, run_id, folder, f"{ARCHIVE} from kernel {ref}")
    archive.unlink()
    return Run(folder / run_id)


def merge(runs: list[Run], target: Path, identity: dict, dataset: data.Dataset) -> Run:
    """One run folder from the kernels' runs: the same settings and data in each, every member once."""
    base = runs[0]
    for run in runs:
        try:
            config = run.identity()
        except UserError as exc:
            raise UserError(f"the run from Kaggle is damaged: {exc.message}") from None
        if not same_run(config, identity):
            raise UserError(
                f"the run from Kaggle ({run.id}) was trained with other settings or data than this command's: "
                "refusing it (did the local data or the package change since the push?)"
            )
    shutil.copytree(base.dir, target)
    merged = Run(target)
    for run in runs[1:]:
        for member in run.members:
            if run.member_done(*member) and not merged.member_done(*member):
                shutil.copytree(run.member_dir(*member), merged.member_dir(*member))
    missing = [m for m in merged.members if not merged.member_done(*m)]
    damaged = merged.damaged_members()
    if missing or damaged:
        names = [member_name(*m) for m in missing] + [
            f"{member_name(*m)} ({', '.join(v)})" for m, v in damaged.items()
        ]
        raise UserError(
            f"the run from Kaggle is incomplete or damaged: {', '.join(names)}; run the same command again"
        )
    if len(runs) > 1 or not merged.finished:
        (target / "metrics.json").unlink(missing_ok=True)
        rows = merged.rows(dataset)
        wall = {"wall_seconds": None, "trained_on": "kaggle"}
        score_run(merged, rows.labels, merged.array("folds.npy"), wall, rows.held_labels)
    else:
        try:
            for name in ("oof_probs.npy", "oof_labels.npy", "test_probs.npy", "folds.npy"):
                merged.array(name)
        except DamagedFile as damage:
            raise UserError(f"the run from Kaggle is damaged: {damage.message}") from None
    return merged



def installed_run(identity: dict) -> Run | None:
    for folder in sorted(paths.ensembles_dir().glob("*/metrics.json")):
        run = Run(folder.parent)
        with contextlib.suppress(UserError):
            if same_run(run.identity(), identity):
                return run
    return None

