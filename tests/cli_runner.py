"""Runs the real CLI in this process with a fast clock, for subprocess tests (`python -m tests.cli_runner`:
as a module, so that tests/kaggle/ never shadows the kaggle client on the path).

Both our retries and the kaggle client's (2-32 s between download retries) sleep; a test that walks
through every retry must not wait for real. Sleeping is cut to 10 ms; nothing else is changed.
"""

import sys
import time

_real_sleep = time.sleep
time.sleep = lambda seconds: _real_sleep(min(seconds, 0.01))

from competition.cli import main  # noqa: E402

sys.argv[0] = "kaggle-mnist"
main()
