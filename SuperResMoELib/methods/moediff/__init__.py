"""MoEDiff-SR (paper 003): latent diffusion experts for 2D MRI slices.

The method (:mod:`.method`, registry name ``moediff``) resamples a volume to
the target grid and refines its slices with :class:`.model.MoEDiffSR`: the
VQ-VAE (:mod:`SuperResMoELib.nets.vqvae2d`), the condition encoder and gating
network (:mod:`SuperResMoELib.nets.moediff_condition`) and the three experts
(:mod:`SuperResMoELib.nets.moediff_experts`), with per-expert noise schedules
and the cross-schedule timestep mapping (:mod:`.schedules`), the coherent
few-step multi-expert DDIM sampler (:mod:`.sampler`) and the frequency-aware
gate normalisation (:mod:`.gating`).  Checkpoints: :mod:`.checkpoint`;
training: ``training/moediff``.
"""
