"""MoEDiff-SR (paper 003): latent diffusion experts for 2D MRI slices.

Being built; not in the method registry yet.  Present so far: the per-expert
noise schedules with the cross-schedule timestep mapping (:mod:`.schedules`),
the coherent few-step multi-expert DDIM sampler (:mod:`.sampler`) and the
frequency-aware gate normalisation (:mod:`.gating`).
"""
