"""MoEDiff-SR training (being built): the joint-training gating losses (:mod:`.gating_losses`)
and the experts' task losses (:mod:`.task_losses`)."""
