"""Everything that talks to Kaggle.

    api.py         the kaggle client, fenced in: every call, its retries, timeouts and one-line errors
    submission.py  a submission file checked as Kaggle checks it, submitted, its score awaited; the ledger
    machines.py    Kaggle's GPU shapes, their assumed rates, the estimate printed before a push
    script.py      the script a kernel runs, with this package embedded
    job.py         what runs INSIDE the kernel (the only module here that may load Keras, through train)
    contract.py    the archive and receipt a kernel leaves, which both sides share
    record.py      ensembles/.kaggle-kernels.json: the kernels pushed for each command
    follow.py      pushing kernels as GPU sessions free up, following their status and live log
    home.py        each kernel's output downloaded, checked, merged and installed as a run
    kernels.py     `train --on kaggle` in order: estimate, push and follow, bring home

May import the shared modules, runs/, scoring/score.py and training/settings.py; only job.py imports
training/train.py.
"""
