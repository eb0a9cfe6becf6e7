"""`python -m competition ...` does what `kaggle-mnist ...` does."""

from competition.cli import main

main()
