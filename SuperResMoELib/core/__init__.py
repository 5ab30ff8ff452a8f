"""The torch-free core: volumes and grids (KJI arrays + IJK->RAS), geometry, intensity, errors, progress and shared type aliases."""
