"""The default method's cell search (``CMCConfig()``): the reference's cells searched in the
target warped by a coarse pose, both directions decided and combined, the raw score and its
calibration, and the final pose fitted to the congruent cells."""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np

from .. import _kernels as K
from ..align import Pose, invert_pose
from ._calibration import calibrated, raw_score
from ._coarse import coarse_poses, coarse_poses_either
from ._config import CMCConfig
from ._consensus import Decision, combined_count, decide
from ._prepare import Prepared
from ._result import CELL_DTYPE, CellSearch, Comparison, DirectionResult, cells_table

__all__ = ["DirectionSearch", "compare_default", "fit_rigid"]


class DirectionSearch(NamedTuple):
    """One direction of the default method: the cells searched, decided, and which of them
    are congruent (High CMC when it passed, else the original rule)."""

    search: CellSearch
    decision: Decision
    congruent: np.ndarray  # bool (n_theta, n_cells)


class _BestPose(NamedTuple):
    key: tuple[int, float]  # congruent cells, their mean correlation
    pose: Pose
    result: DirectionSearch


def _cells_direction(pr: Prepared, pt: Prepared, pose: Pose, cfg: CMCConfig) -> CellSearch:
    """Cells of ``pr`` searched in ``pt`` around ``pose`` (pt relative to pr); dy, dx are
    pixels relative to the pose."""
    sp = pr.spacing_um * cfg.downsample
    lo, hi = cfg.rotation_range
    thetas = pose.rotation_deg + np.arange(lo, hi + 1e-9, cfg.rotation_step)
    n = pr.cells.shape[0]
    if n == 0:
        z = np.zeros((thetas.size, 0))
        return CellSearch(thetas, z, z, z, z.astype(bool))
    h, w = pr.cells.shape[1:]
    margin = max(1, round((cfg.region_multiplier - 1) * min(h, w) / 2))
    ny, nx = pr.z.shape
    cy_r, cx_r = (ny - 1) / 2, (nx - 1) / 2
    cy_t, cx_t = (pt.z.shape[0] - 1) / 2, (pt.z.shape[1] - 1) / 2
    min_n = np.maximum(
        (0.5 * (1.0 - cfg.max_missing) * h * w), 0.5 * np.isfinite(pr.cells).sum(axis=(1, 2))
    ).astype(np.int64)
    stack = K.warp_stack(
        pt.z,
        ny + 2 * margin,
        nx + 2 * margin,
        thetas.astype(np.float64),
        cy_t,
        cx_t,
        cy_r + margin,
        cx_r + margin,
        pose.dy_um / sp,
        pose.dx_um / sp,
    )
    r0 = np.ascontiguousarray(pr.boxes[:, 0])
    c0 = np.ascontiguousarray(pr.boxes[:, 1])
    iy, ix, corr = K.cell_search(pr.cells, stack, r0, c0, margin, min_n)
    return CellSearch(thetas, iy.astype(np.float64), ix.astype(np.float64), corr, np.isfinite(corr))


def _direction_decision(pr: Prepared, pt: Prepared, pose: Pose, cfg: CMCConfig) -> DirectionSearch:
    search = _cells_direction(pr, pt, pose, cfg)
    dec = decide(search, cfg)
    cong = dec.high if cfg.method == "high" and dec.high_passed else dec.original
    return DirectionSearch(search, dec, cong)


def _matched_points(
    pr: Prepared, r: DirectionSearch, pose: Pose, cfg: CMCConfig
) -> tuple[np.ndarray, np.ndarray]:
    """Congruent cells of one direction as point pairs (µm from each array centre):
    the cell centre in the reference and the matched point in the target."""
    thetas, dy, dx = r.search.thetas, r.search.dy, r.search.dx
    sp = pr.spacing_um * cfg.downsample
    t_idx, c_idx = np.nonzero(r.congruent)
    if t_idx.size == 0:
        return np.zeros((0, 2)), np.zeros((0, 2))
    h, w = pr.cells.shape[1:]
    cen_r = np.array([(pr.z.shape[0] - 1) / 2, (pr.z.shape[1] - 1) / 2])
    ref = (pr.boxes[c_idx, :2] + (np.array([h, w]) - 1) / 2 - cen_r) * sp
    moved = ref + np.stack([dy[t_idx, c_idx], dx[t_idx, c_idx]], axis=1) * sp
    th = np.radians(thetas[t_idx])
    q = moved - np.array([pose.dy_um, pose.dx_um])
    # target point = R(-theta) q, each with its own cell's theta
    c, s = np.cos(th), np.sin(th)
    tgt = np.stack([c * q[:, 0] + s * q[:, 1], -s * q[:, 0] + c * q[:, 1]], axis=1)
    return ref, tgt


def fit_rigid(p_b: np.ndarray, q_a: np.ndarray) -> Pose | None:
    """Least-squares rotation and translation with ``q_a = R(theta) p_b + d`` (Procrustes)
    as a `Pose` (rotation in (-180, 180], score NaN); None with fewer than two pairs.

    Examples
    --------
    >>> import numpy as np
    >>> from balllink.align import Pose, pose_transform
    >>> p = np.array([[0.0, 0.0], [10.0, 0.0], [0.0, 20.0]])
    >>> fit = fit_rigid(p, pose_transform(Pose(30.0, 5.0, -2.0, 1.0), p))
    >>> round(fit.rotation_deg, 6), round(fit.dy_um, 6), round(fit.dx_um, 6)
    (30.0, 5.0, -2.0)
    """
    if p_b.shape[0] < 2:
        return None
    pm, qm = p_b.mean(axis=0), q_a.mean(axis=0)
    p, q = p_b - pm, q_a - qm
    th = math.atan2(
        float(np.sum(q[:, 1] * p[:, 0] - q[:, 0] * p[:, 1])),
        float(np.sum(q[:, 0] * p[:, 0] + q[:, 1] * p[:, 1])),
    )
    c, s = math.cos(th), math.sin(th)
    d = qm - np.array([c * pm[0] - s * pm[1], s * pm[0] + c * pm[1]])
    return Pose(math.degrees(th), float(d[0]), float(d[1]), math.nan)


def _no_result(
    pa: Prepared, pb: Prepared, cfg: CMCConfig, reason: str, mirrored: bool = False
) -> Comparison:
    empty = np.zeros(0, CELL_DTYPE)
    d = DirectionResult(pa.name, pb.name, 0, 0, False, math.nan, 0, empty)
    return Comparison(
        0, 0.0, math.nan, (math.nan, math.nan), False, (d, d), empty, reason, cfg,
        mirrored=mirrored,
    )  # fmt: skip


def _best_pose(pa: Prepared, pb: Prepared, poses: list[Pose], cfg: CMCConfig) -> _BestPose | None:
    """The coarse pose whose cells (direction a in b) agree best."""
    best = None
    for pose in poses:
        r = _direction_decision(pa, pb, pose, cfg)
        cong = r.congruent
        mean_corr = np.nanmean(np.where(cong, r.search.corr, np.nan)) if cong.any() else 0
        key = (int(cong.sum()), mean_corr)
        if best is None or key > best.key:
            best = _BestPose(key, pose, r)
    return best


def compare_default(
    pa: Prepared, pb: Prepared, cfg: CMCConfig, pb_mirror: Prepared | None = None,
    *, force_mirror: bool = False,
) -> Comparison:  # fmt: skip
    """The default method. ``pb_mirror`` (the mirror image of b, prepared) is considered as
    well when given; ``force_mirror`` compares the mirror image only."""
    sp = pa.spacing_um * cfg.downsample
    if force_mirror and pb_mirror is not None:
        pb, pb_mirror = pb_mirror, None
    mirrored = force_mirror
    for p, nm in ((pa, "a"), (pb, "b")):
        if p.cells.shape[0] < 3:
            return _no_result(
                pa, pb, cfg,
                f"too few valid cells in scan {nm} ({p.name}): {p.cells.shape[0]} cells with "
                f"at most {cfg.max_missing:.0%} missing (need 3)",
                mirrored,
            )  # fmt: skip
    best = None
    if cfg.search != "global":
        poses = [Pose(0.0, 0.0, 0.0, 0.0)]
    elif pb_mirror is None:
        poses = coarse_poses(pa, pb, cfg)
    else:
        # the reflection is decided at the coarse stage, so the cell search runs once and a
        # non-match gets no second chance at chance cells: on Fadul the true reflection's
        # coarse score beats the mirrored one's by >= 0.16 on every same-gun pair. The slow
        # brute-force search runs only when the alignment finds nothing.
        poses, use_mirror = coarse_poses_either(pa, pb, pb_mirror, cfg)
        if use_mirror:
            best, pb, mirrored = _best_pose(pa, pb_mirror, poses, cfg), pb_mirror, True
    if best is None and poses:
        best = _best_pose(pa, pb, poses, cfg)
    if best is None:
        return _no_result(
            pa, pb, cfg, "no overlap found between the scans at any rotation", mirrored
        )
    pose, r1 = best.pose, best.result
    inv = invert_pose(pose)
    r2 = _direction_decision(pb, pa, inv, cfg)
    n1, n2 = int(r1.congruent.sum()), int(r2.congruent.sum())
    count = combined_count(n1, n2, cfg.combine)
    tables, dirs = [], []
    for k, (pr, pt, r) in enumerate(((pa, pb, r1), (pb, pa, r2))):
        search, dec = r.search, r.decision
        centers = (pr.boxes[:, :2] + np.array(pr.cells.shape[1:]) / 2) * sp
        t = cells_table(
            k, pr.boxes[:, 2], pr.boxes[:, 3], centers,
            search._replace(thetas=search.thetas % 360.0), r.congruent, pr.valid_fraction,
        )  # fmt: skip
        tables.append(t)
        dirs.append(
            DirectionResult(
                pr.name,
                pt.name,
                int(dec.original.sum()),
                int(dec.high.sum()),
                bool(dec.high_passed),
                float(dec.theta_max) % 360.0 if not math.isnan(dec.theta_max) else math.nan,
                int(search.present.any(axis=0).sum()),
                t,
            )
        )
    cells_all = np.concatenate(tables)
    n_cells = dirs[0].n_cells + dirs[1].n_cells
    corr_cong = np.concatenate([r.search.corr[r.congruent] for r in (r1, r2)])
    raw = raw_score(n1 + n2, n_cells, corr_cong)
    score = calibrated(raw)
    # pose: a rigid (Procrustes) fit to the congruent cells of both directions
    pts_b, pts_a = [], []
    for pr, r, dpose, forward in ((pa, r1, pose, True), (pb, r2, inv, False)):
        p_ref, p_tgt = _matched_points(pr, r, dpose, cfg)
        (pts_a if forward else pts_b).append(p_ref)
        (pts_b if forward else pts_a).append(p_tgt)
    fit = fit_rigid(np.concatenate(pts_b), np.concatenate(pts_a))
    final = fit if fit is not None else pose
    rot = float(final.rotation_deg) % 360.0
    trans = (float(final.dy_um), float(final.dx_um))
    reason = "" if count else "no congruent cell in either direction"
    return Comparison(
        int(count),
        score,
        rot,
        trans,
        score >= cfg.lead_threshold,
        tuple(dirs),
        cells_all,
        reason,
        cfg,
        raw_score=raw,
        mirrored=mirrored,
    )
