"""Ablation sweeps: sweeps as data (``sweeps``), the submitted job (``job``), the launcher
(``launcher``, CLI in ``run.py``), run-dir bookkeeping (``rundir``), ``--status`` (``status``)
and cost estimates (``cost``)."""
