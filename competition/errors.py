"""The one exception a user ever sees: the CLI prints its message as one line and exits non-zero."""


class UserError(Exception):
    """Something the user can fix. The message says what happened and what to do."""

    def __init__(self, message: str, exit_code: int = 1):
        super().__init__(message)
        self.message = message
        self.exit_code = exit_code
        self.status: int | None = None  # the HTTP status, for errors that came from the Kaggle API


class SessionDeadline(Exception):
    """Training stopped at an epoch's end because the session's deadline passed (inside a Kaggle kernel):
    the finished members and the half-trained one's backup are on disk in `run_dir`, and the same run
    continues from them."""

    def __init__(self, run_dir=None):
        super().__init__(f"stopped at the session's deadline: {run_dir}")
        self.run_dir = run_dir
