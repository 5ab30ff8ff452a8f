"""SS-MoE training: patch library, phases (baseline, pseudo labels, gater,
experts), the Hard-MoE baseline, and the paper-protocol evaluation."""
