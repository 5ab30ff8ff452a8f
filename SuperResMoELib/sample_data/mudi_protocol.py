"""The 1344-row MUDI-like diffusion-relaxometry acquisition protocol and its constants."""

from __future__ import annotations

import math

import numpy as np

from SuperResMoELib.core.volume import AcquisitionTable
from SuperResMoELib.sample_data.seeds import _check_index, _rng

#: Repetition time (ms), constant over the protocol.
MUDI_TR_MS: float = 7500.0
#: b-values (s/mm^2); 0 is the non-diffusion-weighted shell.
MUDI_B_VALUES: tuple[float, ...] = (0.0, 500.0, 1000.0, 2000.0, 3000.0)
#: Echo times (ms).
MUDI_TE_MS: tuple[float, ...] = (80.0, 105.0, 130.0)
#: The 28 inversion times (ms): evenly spaced from 20 to 7322.7 ms (one
#: decimal), as the slice-interleaved ZEBRA inversion recovery produces.
MUDI_TI_MS: tuple[float, ...] = tuple(float(x) for x in np.round(np.linspace(20.0, 7322.7, 28), 1))
#: Number of distinct unit gradient directions of the diffusion-weighted rows.
MUDI_N_DIRECTIONS: int = 105
#: Rows per (TI, TE) block: 1 b=0 row + 15 diffusion-weighted rows.
MUDI_ROWS_PER_BLOCK: int = 16


def _unit_directions(n: int) -> np.ndarray:
    """``(n, 3)`` near-uniform unit vectors on a hemisphere (Fibonacci lattice)."""
    golden = math.pi * (3.0 - math.sqrt(5.0))
    idx = np.arange(n, dtype=np.float64)
    z = 1.0 - (idx + 0.5) / n  # (0, 1]: upper hemisphere (directions are antipodal)
    r = np.sqrt(1.0 - z * z)
    phi = golden * idx
    return np.stack([r * np.cos(phi), r * np.sin(phi), z], axis=1)


def _random_rotation(rng: np.random.Generator) -> np.ndarray:
    q, r = np.linalg.qr(rng.standard_normal((3, 3)))
    q = q * np.sign(np.diag(r))
    if np.linalg.det(q) < 0:
        q[:, 0] = -q[:, 0]
    return q


def mudi_acquisition_table(seed: int = 0) -> AcquisitionTable:
    """A 1344-row diffusion-relaxometry protocol with the Super MUDI marginals.

    Construction (deterministic from ``seed``):

    * 84 blocks, one per (TE, TI) pair, TE outer (:data:`MUDI_TE_MS`), TI inner
      (:data:`MUDI_TI_MS`, 28 values evenly spaced 20 .. 7322.7 ms);
      TR = :data:`MUDI_TR_MS` throughout (not a column).
    * Each block has :data:`MUDI_ROWS_PER_BLOCK` = 16 rows: first one b = 0 row
      with gradient direction ``(0, 0, 0)``, then 15 diffusion-weighted rows.
    * The diffusion-weighted rows are numbered globally ``c = 0 .. 1259``:
      row ``c`` has b = ``(500, 1000, 2000, 3000)[c % 4]`` and direction
      ``D[c % 105]`` of a set ``D`` of :data:`MUDI_N_DIRECTIONS` unit vectors
      (a Fibonacci hemisphere lattice under a seed-dependent random rotation).
      Since gcd(4, 105) = 1, every (shell, direction) pair occurs exactly
      3 times, each shell 315 times.

    Marginals: b = 0: 84 rows, each other shell 315; each TE 448 rows; each
    TI 48 rows.  Directions are in the RAS frame of the image (the MUDI
    sample grids are axis-aligned, so also the i, j, k axes).
    """
    seed = _check_index(seed, "seed")
    directions = _unit_directions(MUDI_N_DIRECTIONS) @ _random_rotation(_rng(seed, 0, "mudi_table")).T
    shells = [b for b in MUDI_B_VALUES if b > 0]
    rows = []
    c = 0
    for te in MUDI_TE_MS:
        for ti in MUDI_TI_MS:
            rows.append([0.0, 0.0, 0.0, 0.0, ti, te])
            for _ in range(MUDI_ROWS_PER_BLOCK - 1):
                g = directions[c % MUDI_N_DIRECTIONS]
                rows.append([g[0], g[1], g[2], shells[c % len(shells)], ti, te])
                c += 1
    return AcquisitionTable(np.array(rows, dtype=np.float64))
