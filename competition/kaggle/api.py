"""The Kaggle API through the `kaggle` package: every call that `fetch`, `submit`, `submissions` and
`train --on kaggle` (its kernels: push, status, logs, output) make goes through here.

The client is imported lazily and fenced in: on kaggle 2.0.x `import kaggle` calls `exit()` when no
credentials exist, 2.2.x prints its help text on import, and every version creates its config folder
at import time. Every failure leaves here as one `UserError` that says what to do.

About 500 lines, on purpose: every call the project makes to the client, with the retries, stall
watch and error wording they share, is here and nowhere else, so a change of client version is read
and mended in one file.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

from competition import COMPETITION, environ, paths
from competition.errors import UserError

T = TypeVar("T")

RULES_URL = f"https://www.kaggle.com/c/{COMPETITION}/rules"
SETTINGS_URL = "https://www.kaggle.com/settings"
# 429 and 5xx are worth retrying: Kaggle sheds load with them. 4 tries, 2 s doubling, ~14 s in all.
ATTEMPTS = 4
BACKOFF_SECONDS = 2.0
# What a 404 means for the calls about the competition itself.
COMPETITION_MISSING = (
    f"competition '{COMPETITION}'",
    f"check the name, and that you joined it at {RULES_URL}",
)


def download_competition(folder: Path, competition: str = COMPETITION) -> Path:
    """Downloads the competition zip into `folder` (resuming a partial one) and returns its path."""
    api = client()
    archive = Path(folder) / f"{competition}.zip"

    def progress() -> int:
        with contextlib.suppress(OSError):
            return archive.stat().st_size
        return -1

    def call() -> None:
        api.competition_download_files(competition, path=str(folder), force=False, quiet=True)

    _with_retries(lambda: _watched(call, progress), "downloading the competition files", COMPETITION_MISSING)
    if not archive.is_file():
        raise UserError(f"the Kaggle API reported success but {archive} is missing: run fetch again")
    return archive


def submit(file: Path, message: str, competition: str = COMPETITION) -> Any:
    """Uploads a submission file; returns the client's response (with `.message` and `.ref`)."""
    api = client()
    try:
        response = _with_retries(
            lambda: _watched(lambda: api.competition_submit(str(file), message, competition, quiet=True)),
            "submitting",
            COMPETITION_MISSING,
        )
    except UserError as exc:
        # Clients without a limits call (kaggle < 2.2.4) learn of the daily limit only when Kaggle
        # refuses the submission itself.
        if exc.status == 400 and "limit" in exc.message.lower():
            raise UserError(
                f"no submissions left today ({exc.message.split(': ', 1)[-1]}); Kaggle's daily limit "
                "resets at 00:00 UTC. Nothing was submitted"
            ) from None
        raise
    # The client does not raise when the upload itself fails; it returns this message instead (kaggle
    # 2.0.x says it without naming it as a constant).
    failed = getattr(api, "COMPETITION_SUBMIT_UPLOAD_FAILED_MESSAGE", "Could not submit to competition")
    if getattr(response, "message", "") == failed:
        raise UserError(
            'Kaggle did not accept the upload of the submission file ("Could not submit to competition"); '
            "nothing was submitted: run submit again later"
        )
    return response


def call(
    function: Callable[[], T], action: str, watched: bool = True, missing: tuple[str, str] | None = None
) -> T:
    """Any client call, with this module's retries, stall watch (unless `watched` is off) and one-line
    errors; `action` says what it was doing ("pushing the kernel"), and `missing` what the call is
    about, for a 404 or a refusal: (the thing, what to do)."""
    return _with_retries((lambda: _watched(function)) if watched else function, action, missing)


def kernel_output(ref: str, folder: Path, names: tuple[str, ...], missing: tuple[str, str]) -> list[Path]:
    """Downloads the named files of a kernel's output into `folder`; returns their paths.

    The client's `kernels_output` reads each file with no timeout (a stalled transfer hangs it for
    ever) and, before kaggle 2.2, saves an error page in a file's place. Here the output is listed
    through the client and each file fetched with a timeout on every read, to a temporary name that
    becomes the file only once all of it arrived, and a failed fetch raises.
    """
    import requests  # a dependency of kaggle

    api = client()
    listing = _with_retries(
        lambda: _watched(lambda: _output_files(api, ref)), "listing the kernel's output", missing
    )
    folder.mkdir(parents=True, exist_ok=True)
    saved = []
    for name in names:
        url = listing.get(name)
        if url is None:
            continue  # the caller says what a missing file means

        def fetch(url=url, target=folder / name) -> None:
            partial = target.with_name(target.name + ".part")
            stall = environ.network_timeout()
            with requests.get(url, stream=True, timeout=(stall, stall)) as response:
                response.raise_for_status()
                with open(partial, "wb") as out:
                    for chunk in response.iter_content(1 << 20):
                        out.write(chunk)
            os.replace(partial, target)

        _with_retries(fetch, "downloading the kernel's output", missing)
        saved.append(folder / name)
    return saved


def _output_files(api: Any, ref: str) -> dict[str, str]:
    """{file name: download URL} of a kernel's latest output, page by page."""
    from kagglesdk.kernels.types.kernels_api_service import ApiListKernelSessionOutputRequest

    owner, _, slug = ref.partition("/")
    files: dict[str, str] = {}
    token = None
    with api.build_kaggle_client() as kaggle:
        while True:
            request = ApiListKernelSessionOutputRequest()
            request.user_name, request.kernel_slug = owner, slug
            if token:
                request.page_token = token
            response = kaggle.kernels.kernels_api_client.list_kernel_session_output(request)
            files.update({f.file_name: f.url for f in response.files or []})
            token = getattr(response, "next_page_token", None)
            if not token:
                return files


def status_name(status: Any) -> str:
    """A Kaggle status as one upper-case word, however the client spells it ("SubmissionStatus.COMPLETE",
    "KernelWorkerStatus.RUNNING", "complete")."""
    return str(status).split(".")[-1].upper()


def kernel_url(ref: str) -> str:
    return f"https://www.kaggle.com/code/{ref}"


def username() -> str:
    """The account's user name, as kernels are owned: from kaggle.json or KAGGLE_USERNAME."""
    api = client()
    owner = ""
    with contextlib.suppress(Exception):
        owner = api.get_config_value(api.CONFIG_NAME_USER) or ""
    owner = owner or os.environ.get("KAGGLE_USERNAME", "")
    if not owner:
        raise UserError('cannot tell your Kaggle username: put it in kaggle.json ("username") or KAGGLE_USERNAME')
    return owner


def push_kernel(folder: Path, accelerator: str) -> Any:
    """Pushes the kernel whose script and kernel-metadata.json are in `folder`; the client's response
    (its `error` says what Kaggle refused)."""
    api = client()
    return call(lambda: api.kernels_push(str(folder), acc=accelerator), "pushing the kernel")


def kernel_status(ref: str) -> Any:
    """The client's status response for a kernel (`status`, `failure_message`)."""
    api = client()
    return call(
        lambda: api.kernels_status(ref),
        "checking the kernel",
        missing=(f"kernel {ref}", "it may have been deleted; see " + kernel_url(ref)),
    )


def can_stream_logs() -> bool:
    """Whether this client streams a running kernel's log (kaggle >= 2.2.3)."""
    return hasattr(client(), "kernels_logs_stream")


def kernel_log_stream(ref: str) -> Iterator[dict]:
    """A running kernel's log as the server sends it, from its start: events {"data": text}."""
    return client().kernels_logs_stream(ref)


def kernel_log_lines(ref: str) -> list[str]:
    """The kernel's stored log as text lines (written when its session ends): Kaggle returns a JSON list
    of {"data": ...} entries; plain text is taken as it is."""
    api = client()
    raw = (
        call(
            lambda: api.kernels_logs(ref),
            "reading the kernel log",
            missing=(f"log of kernel {ref}", f"see {kernel_url(ref)}"),
        )
        or ""
    )
    try:
        entries = json.loads(raw)
        text = "".join(str(e.get("data", "")) for e in entries if isinstance(e, dict))
    except (ValueError, AttributeError, TypeError):
        text = raw
    return text.splitlines()


def field(item: Any, name: str) -> Any:
    """A field of what the client returns for a submission, an object or (older clients) a dict with
    camelCase keys."""
    if isinstance(item, dict):
        camel = "".join(w.capitalize() if i else w for i, w in enumerate(name.split("_")))
        return item.get(name, item.get(camel))
    return getattr(item, name, None)


def submission_ref(item: Any) -> str:
    return str(field(item, "ref") or "")


def submission_limits(competition: str = COMPETITION) -> Any | None:
    """Today's submission counts, or None where the client (kaggle < 2.2.4) cannot tell."""
    api = client()
    if not hasattr(api, "competition_get_submission_limits"):
        return None
    return _with_retries(
        lambda: _watched(lambda: api.competition_get_submission_limits(competition)),
        "checking submission limits",
        COMPETITION_MISSING,
    )


def submissions(competition: str = COMPETITION) -> list:
    api = client()
    result = _with_retries(
        lambda: _watched(lambda: api.competition_submissions(competition)),
        "listing your submissions",
        COMPETITION_MISSING,
    )
    return [s for s in (result or []) if s is not None]


# ----------------------------------------------------------------------------------------------
# The client


_CLIENT: Any = None


def reset_client() -> None:
    """Forget the authenticated client, so the next call reads the credentials again (after the user
    changed them; tests give each case its own)."""
    global _CLIENT
    _CLIENT = None


def client() -> Any:
    """An authenticated `KaggleApi`, imported and built on first use."""
    global _CLIENT
    if _CLIENT is not None:
        return _CLIENT
    _require_credentials()
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            from kaggle.api.kaggle_api_extended import KaggleApi

            api = KaggleApi()
            api.authenticate()
    except SystemExit:
        raise UserError(
            f"Kaggle did not accept your credentials: check kaggle.json or KAGGLE_API_TOKEN "
            f"(a new token comes from {SETTINGS_URL} > API)"
        ) from None
    except OSError as exc:
        # kaggle creates its config folder when imported; an unwritable home makes that fail.
        raise UserError(
            f"the kaggle client could not create its settings folder ({exc.strerror or exc}: "
            f"{getattr(exc, 'filename', '') or '~/.kaggle'}): set KAGGLE_CONFIG_DIR to a folder you can write"
        ) from None
    except Exception as exc:  # network failures while a token is checked, among others
        raise explain(exc, "signing in to Kaggle") from None
    _CLIENT = api
    return api


def credential_locations() -> list[Path]:
    """Where the kaggle client looks for kaggle.json, in its own order."""
    if os.environ.get("KAGGLE_CONFIG_DIR"):
        return [Path(os.environ["KAGGLE_CONFIG_DIR"]) / "kaggle.json"]
    home = Path(os.path.expanduser("~"))
    xdg = Path(os.environ.get("XDG_CONFIG_HOME") or home / ".config")
    return [home / ".kaggle" / "kaggle.json", xdg / "kaggle" / "kaggle.json"]


def _require_credentials() -> None:
    """Fails early, in our words, when the client would find no credentials at all."""
    if os.environ.get("KAGGLE_API_TOKEN") or (
        os.environ.get("KAGGLE_USERNAME") and os.environ.get("KAGGLE_KEY")
    ):
        return
    home = Path(os.path.expanduser("~"))
    if any((home / ".kaggle" / n).is_file() for n in ("access_token", "access_token.txt")):
        return
    for path in credential_locations():
        if path.is_file():
            try:
                config = json.loads(path.read_text(encoding="utf-8"))
                if not (isinstance(config, dict) and config.get("username") and config.get("key")):
                    raise ValueError
            except (OSError, ValueError):
                raise UserError(
                    f'{path} is not valid: it must be JSON with "username" and "key" '
                    "(see kaggle.json.example)"
                ) from None
            return
    if paths.in_kaggle_notebook():
        raise UserError(
            "no Kaggle credentials in this notebook: to submit from a notebook, save a version (Save "
            "Version > Save & Run All) with submission.csv in /kaggle/working and press Submit on its "
            "Output; or add your API token's username and key as the notebook's Secrets (Add-ons > "
            "Secrets) and set KAGGLE_USERNAME and KAGGLE_KEY from them before running kaggle-mnist"
        )
    raise UserError(
        f"no Kaggle credentials found: create an API token at {SETTINGS_URL} > API and save it as "
        f"{credential_locations()[0]} (chmod 600; see kaggle.json.example), or set KAGGLE_USERNAME and "
        "KAGGLE_KEY, or KAGGLE_API_TOKEN (for `fetch`, --from PATH with a local copy of the data needs none)"
    )


# ----------------------------------------------------------------------------------------------
# Retries, timeouts and error messages


def _with_retries(call: Callable[[], T], action: str, missing: tuple[str, str] | None = None) -> T:
    for attempt in range(1, ATTEMPTS + 1):
        try:
            return call()
        except UserError:
            raise
        except Exception as exc:
            status = _status(exc)
            if attempt < ATTEMPTS and (status == 429 or (status is not None and status >= 500)):
                time.sleep(_retry_after(exc) or BACKOFF_SECONDS * 2 ** (attempt - 1))
                continue
            error = explain(exc, action, attempts=attempt, missing=missing)
            error.status = status  # callers may treat some statuses as advisory
            raise error from None
    raise AssertionError("unreachable")


def _watched(call: Callable[[], T], progress: Callable[[], int] | None = None) -> T:
    """Runs `call` in a daemon thread; gives up once nothing has moved for KAGGLE_MNIST_NETWORK_TIMEOUT
    seconds (60): no byte in that long means the connection is dead.

    requests is given no timeout by the kaggle client, so a server that accepts the connection and
    never answers would hang the command forever. `progress` (bytes on disk) counts as movement.
    """
    outcome: dict[str, Any] = {}
    stall = environ.network_timeout()

    def run() -> None:
        try:
            outcome["value"] = call()
        except BaseException as exc:  # carried to the caller's thread
            outcome["error"] = exc

    worker = threading.Thread(target=run, daemon=True)
    worker.start()
    last_seen, last_move = (progress() if progress else 0), time.monotonic()
    while worker.is_alive():
        worker.join(timeout=0.25)
        seen = progress() if progress else 0
        if seen != last_seen:
            last_seen, last_move = seen, time.monotonic()
        elif time.monotonic() - last_move > stall:
            raise TimeoutError(f"no answer from Kaggle for {stall:.0f} s")
    if "error" in outcome:
        raise outcome["error"]
    return outcome["value"]


def _status(exc: BaseException) -> int | None:
    response = getattr(exc, "response", None)
    return getattr(response, "status_code", None) if response is not None else None


def _retry_after(exc: BaseException) -> float | None:
    response = getattr(exc, "response", None)
    value = getattr(response, "headers", {}).get("Retry-After") if response is not None else None
    try:
        return min(float(value), 60.0) if value is not None else None
    except ValueError:
        return None


def explain(
    exc: BaseException, action: str, attempts: int = 1, missing: tuple[str, str] | None = None
) -> UserError:
    import requests  # a dependency of kaggle, so present whenever we got here

    status = _status(exc)
    detail = _server_message(exc)
    # kaggle >= 2.0.1 turns a 401/403 on a kernel call (status, output, logs) into a ValueError with
    # this wording, which would otherwise read as a truncated download.
    denied = isinstance(exc, ValueError) and "was denied" in str(exc)
    if denied or (status == 403 and missing is not None and missing != COMPETITION_MISSING):
        what, remedy = missing or ("kernel", "see https://www.kaggle.com/code")
        return UserError(
            f"Kaggle refused access to the {what} (401/403) while {action}: these credentials are not the "
            "account that pushed it (check kaggle.json or KAGGLE_API_TOKEN), or it was deleted; "
            f"{remedy}"
        )
    if status == 401:
        return UserError(
            f"Kaggle rejected your credentials (401) while {action}: check the username and key in kaggle.json "
            f"or KAGGLE_API_TOKEN; a new token comes from {SETTINGS_URL} > API"
        )
    if status == 403:
        return UserError(
            f"Kaggle refused access (403) while {action}: accept the competition rules at {RULES_URL} "
            "with the same account, then run again"
        )
    if status == 404 and missing is not None:
        what, remedy = missing
        return UserError(f"Kaggle found no {what}{_requested_file(exc)} (404) while {action}: {remedy}")
    if status == 404:
        return UserError(
            f"Kaggle found nothing at the address asked{_requested_file(exc)} (404) while {action}: "
            f"{detail or 'no details'}"
        )
    if status == 429:
        return UserError(
            f"Kaggle is rate limiting you (429) while {action}, still after {attempts} tries: "
            "wait a few minutes and run again"
        )
    if status is not None and status >= 500:
        return UserError(
            f"Kaggle's server failed (HTTP {status}) while {action}, after {attempts} tries: "
            "Kaggle may be down; try again later"
        )
    if status is not None:
        return UserError(f"Kaggle answered HTTP {status} while {action}: {detail or 'no details'}")
    # A truncated body surfaces as ChunkedEncodingError, IncompleteRead, or (while downloading, from the
    # client's own length check) a ValueError; a ValueError elsewhere is something else.
    cut_short = isinstance(exc, requests.exceptions.ChunkedEncodingError) or "IncompleteRead" in repr(exc)
    if cut_short or (isinstance(exc, ValueError) and action.startswith("downloading")):
        got = re.search(r"IncompleteRead\((\d+) bytes read, (\d+) more expected", repr(exc))
        how = f"{int(got[1]):,} of {int(got[1]) + int(got[2]):,} bytes arrived" if got else _one_line(exc)
        return UserError(
            f"the download was cut short while {action} ({how}): run the same command again to resume it"
        )
    # A read that times out inside a streamed body comes as a ConnectionError saying so.
    if isinstance(exc, (requests.exceptions.Timeout, TimeoutError)) or "timed out" in str(exc).lower():
        return UserError(
            f"Kaggle did not answer in time while {action} ({_one_line(exc)}): check your connection and run again"
        )
    if isinstance(exc, requests.exceptions.ConnectionError):
        return UserError(
            f"could not reach Kaggle while {action} ({_one_line(exc)}): check your internet connection "
            "(in a Kaggle notebook, switch Internet on in the session settings) and run again"
        )
    if isinstance(exc, OSError):
        return UserError(f"a file could not be written while {action} ({_one_line(exc)})")
    return UserError(f"the kaggle client failed while {action}: {_one_line(exc)}")


def _requested_file(exc: BaseException) -> str:
    """ " (NAME)" for the file a failed download asked for, from the URL it asked (kaggle >= 2.2 raises
    on a failed output download; older clients saved the error page in its place)."""
    url = getattr(getattr(exc, "response", None), "url", None)
    name = str(url or "").split("?")[0].rstrip("/").rsplit("/", 1)[-1]
    return f" ({name})" if name else ""


def _server_message(exc: BaseException) -> str:
    response = getattr(exc, "response", None)
    try:
        return str(response.json().get("message", "")) if response is not None else ""
    except Exception:
        return str(exc)[:200]


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return (text[:160] + "...") if len(text) > 160 else (text or type(exc).__name__)
