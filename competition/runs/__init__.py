"""A trained run's folder, ensembles/<run-id>/ (folder.py: finding runs, the identity, members, repair,
finishing), the rows it trains on and its folds (rows.py), what makes two runs the same (identity.py),
and reading its files back verified (files.py).

May import the shared modules and training/settings.py; free of Keras, so commands that only read a
run start fast.
"""
