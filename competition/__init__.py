"""kaggle-mnist: fetch, train, ensemble and submit for Kaggle's digit-recognizer competition.

The stages, each a subpackage (or module) with a docstring that says what it may import:

    data.py      fetch: the CSVs from the Kaggle API, a notebook's input or a local copy, validated, cached
    training/    settings, the networks, one member, exact resume, workers, the CPU estimate, `train`
    runs/        a run's folder: its rows and folds, identity, verified files, members, repair
    scoring/     predictions and scores: ensembles, the submission's probabilities, CV, expected score,
                 evaluation, pictures, your own images
    kaggle/      everything that talks to Kaggle: the client, submit and the ledger, training on
                 Kaggle's GPUs (the pushed script, what runs inside the kernel, following it, bringing
                 the run home)
    pipeline.py  `run`: the stages chained, as a plain function
    cli/         the command line, a thin adapter over the above

Shared by all and importing none of them: backend (the Keras backend and the device), environ
(environment variables), errors, locks, paths, progress, storage (atomic writes), versions.
"""

__version__ = "0.1.0"

COMPETITION = "digit-recognizer"
