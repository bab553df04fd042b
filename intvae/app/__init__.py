"""The Lightning and Hydra application built on intvae's library: training, evaluation, run
records and checkpoints, resume, launchers and loggers, with the Hydra configs in ``conf/``.

Entry points: ``intvae-train`` (``python -m intvae.train``), ``intvae-evaluate``
(``python -m intvae.evaluate``). The library (``intvae.bounds``, ``intvae.likelihoods``, ...)
never imports this package.
"""
