"""MoEDiff-SR training and evaluation: config (:mod:`.config`), the 3T-like
degradation (:mod:`.degradation`), the slice library (:mod:`.data`), the
phases (:mod:`.train`), the ablation and baseline variants (:mod:`.variants`),
the gating and task losses (:mod:`.gating_losses`, :mod:`.task_losses`) and
the Table III protocol (:mod:`.evaluate`)."""
