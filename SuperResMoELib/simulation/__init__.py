"""Forward models of MRI acquisition: low-resolution simulation, slice profiles, clinical grids, noise and bias."""
