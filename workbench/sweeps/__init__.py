"""Sweeps: Optuna searches over hyperparameters and MLP widths/depth whose trials are ordinary
runs of one experiment, dispatched through the service's run submission path (any target).

    spec = SweepSpec.model_validate({...})          # workbench.sweeps.spec: torch/optuna-free
    sweep = service.sweeps.create(spec)              # in the owner (workbench.service)

``spec`` is the spec; ``study`` keeps each sweep's Optuna study in a journal file under the
home; ``runner`` drives one sweep (ask, submit a run, report epochs, prune, tell);
``manager`` is the facade the service exposes as ``Workbench.sweeps``.
"""

from .spec import SweepSpec

__all__ = ["SweepSpec"]
