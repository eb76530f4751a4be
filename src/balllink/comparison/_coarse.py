"""The coarse poses the default method refines with its cell search: those of the coarse
alignment (`balllink.align`, for ``b`` and, when handedness is searched, for its mirror
image), or, when it finds none (a scan too thin to align at 50 µm, no overlap at any
angle), those of a brute-force search over every coarse angle with `balllink.align`'s
masked NCC."""

from __future__ import annotations

import numpy as np

from .. import _kernels as K
from .._grid import nan_block_mean
from ..align import Pose, angle_diff, coarse_align, coarse_align_either, masked_ncc
from ._config import CMCConfig
from ._prepare import Prepared

__all__ = ["brute_force_poses", "coarse_poses", "coarse_poses_either"]

# candidate angles closer than this (degrees) are one candidate
_SEPARATION_DEG = 10.0


def coarse_poses(pa: Prepared, pb: Prepared, cfg: CMCConfig) -> list[Pose]:
    """Candidate poses of b relative to a: from `balllink.align.coarse_align`, or from the
    brute-force search (`brute_force_poses`) when it finds none."""
    if pa.tpl is not None and pb.tpl is not None:
        poses = coarse_align(pa.tpl, pb.tpl, n=cfg.coarse_candidates)
        if poses:
            return poses
    return brute_force_poses(pa, pb, cfg)


def coarse_poses_either(
    pa: Prepared, pb: Prepared, pbm: Prepared, cfg: CMCConfig
) -> tuple[list[Pose], bool]:
    """Candidate poses of b or of its mirror image ``pbm`` (whichever aligns better at the
    coarse stage) and whether it is the mirror image."""
    if None in (pa.tpl, pb.tpl, pbm.tpl):  # a scan too thin to align at 50 µm
        return coarse_poses(pa, pb, cfg), False
    poses, mirrored = coarse_align_either(pa.tpl, pb.tpl, pbm.tpl, n=cfg.coarse_candidates)
    if poses:
        return poses, mirrored
    return brute_force_poses(pa, pb, cfg), False


def brute_force_poses(pa: Prepared, pb: Prepared, cfg: CMCConfig) -> list[Pose]:
    """Every ``cfg.coarse_step_deg`` on a 2x coarser grid, then +-2 degrees by 1 around the
    three best angles on the coarse grid (slow; the fallback of the coarse alignment)."""
    sp = pa.spacing_um * pa.coarse_factor
    a2, b2 = nan_block_mean(pa.coarse, 2), nan_block_mean(pb.coarse, 2)
    seeds: list[float] = []
    for pose in _angle_scan(a2, b2, 2 * sp, np.arange(0.0, 360.0, cfg.coarse_step_deg)):
        if all(angle_diff(pose.rotation_deg, t) >= _SEPARATION_DEG for t in seeds):
            seeds.append(pose.rotation_deg)
        if len(seeds) >= 3:
            break
    if not seeds:
        return []
    fine = np.concatenate([t + np.arange(-2.0, 2.5, 1.0) for t in seeds]) % 360.0
    out: list[Pose] = []
    for pose in _angle_scan(pa.coarse, pb.coarse, sp, fine):
        if all(angle_diff(pose.rotation_deg, o.rotation_deg) >= _SEPARATION_DEG for o in out):
            out.append(pose)
        if len(out) >= cfg.coarse_candidates:
            break
    return out


def _angle_scan(a: np.ndarray, b: np.ndarray, sp: float, thetas: np.ndarray) -> list[Pose]:
    """``b`` turned by each angle against ``a`` (masked NCC over translations up to a
    quarter of the image): the best pose of each angle, best first (scored ones only)."""
    cy_a, cx_a = (a.shape[0] - 1) / 2, (a.shape[1] - 1) / 2
    cy_b, cx_b = (b.shape[0] - 1) / 2, (b.shape[1] - 1) / 2
    warped = K.warp_stack(
        b, a.shape[0], a.shape[1], thetas.astype(np.float64), cy_b, cx_b, cy_a, cx_a, 0.0, 0.0
    )
    max_shift = max(2, round(0.25 * max(a.shape)))
    ncc = masked_ncc(a, warped, max_shift, min_overlap=0.3)
    flat = np.where(np.isfinite(ncc), ncc, -np.inf).reshape(thetas.size, -1)
    best = flat.max(axis=1)
    arg = flat.argmax(axis=1)
    w = 2 * max_shift + 1
    out = []
    for k in np.argsort(-best, kind="stable"):
        if not np.isfinite(best[k]):
            break
        u, v = divmod(int(arg[k]), w)
        # a[y] ~ warped[y - u]: the warped b content must move by +u to land on a
        dy, dx = (u - max_shift) * sp, (v - max_shift) * sp
        out.append(Pose(float(thetas[k]), dy, dx, float(best[k])))
    return out
