"""The training stage (`kaggle-mnist train`): the frozen settings of a run (settings.py), the networks
(model.py), one member built, fitted with its callbacks and saved (member.py), exact resume (resume.py),
the batch-norm statistics recomputed after training (precise_bn.py), members in worker processes
(worker.py), the CPU time estimate (estimate.py), and the command's story (train.py).

May import the shared modules, runs/ and scoring/ (to score a finished run). Everything here but
settings.py and worker.py imports Keras: import it after `backend.select(...)`.
"""
