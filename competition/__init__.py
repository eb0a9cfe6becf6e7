"""kaggle-mnist: fetch, train, ensemble and submit for Kaggle's digit-recognizer competition."""

__version__ = "0.1.0"

COMPETITION = "digit-recognizer"
