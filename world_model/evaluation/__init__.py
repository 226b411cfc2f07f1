"""Downstream evaluation of world-model encoders: can it tell representations apart?

Modules: :mod:`.data` (held-out probe subjects, slices and clips, cached), :mod:`.probes` (tasks,
metrics, frozen linear and attentive probes), :mod:`.finetune` (label efficiency, the supervised
reference), :mod:`.encoders` (entries, frozen and clip features), :mod:`.planning` (latent CEM),
:mod:`.pipeline` (the run), :mod:`.stats` (intervals), :mod:`.report` (markdown, plots),
:mod:`.cli` (``python -m world_model.evaluation``).  See docs/evaluation.md.
"""

from .stats import mean_ci

__all__ = ["mean_ci"]
