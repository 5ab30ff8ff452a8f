"""MoEDiff-SR (paper 003): latent diffusion experts for 2D MRI slices.

Being built; not in the method registry yet.  Present so far: the per-expert
noise schedules with the cross-schedule timestep mapping (:mod:`.schedules`),
the coherent few-step multi-expert DDIM sampler (:mod:`.sampler`) and the
frequency-aware gate normalisation (:mod:`.gating`); the networks are in
:mod:`SuperResMoELib.nets.vqvae2d` (the 2D VQ-VAE),
:mod:`SuperResMoELib.nets.moediff_condition` (condition encoder and gating
network) and :mod:`SuperResMoELib.nets.moediff_experts` (the three experts);
the training terms in ``training/moediff``.
"""
