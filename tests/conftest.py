"""Shared fixtures: the real scans under ../shared/data, skipped with a reason when absent."""

from __future__ import annotations

import csv
import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("BALLLINK_SHARED", ROOT.parent / "shared"))
DATA = SHARED / "data"
FADUL = DATA / "fadul"
RAW_DFSC = DATA / "raw-dfsc"
REFERENCE = SHARED / "reference"


def _need(path: Path) -> Path:
    if not path.exists():
        pytest.skip(f"real data not available: {path} is missing (CI has ../shared/data)")
    return path


@pytest.fixture(scope="session")
def fadul_dir() -> Path:
    return _need(FADUL)


@pytest.fixture(scope="session")
def fadul_truth(fadul_dir) -> dict[str, str]:
    """File name -> firearm id, from truth.csv."""
    with open(fadul_dir / "truth.csv", newline="") as fh:
        return {row["file"]: row["firearm"] for row in csv.DictReader(fh)}


@pytest.fixture(scope="session")
def raw_dfsc_dir() -> Path:
    return _need(RAW_DFSC)


@pytest.fixture(scope="session")
def reference_dir() -> Path:
    return _need(REFERENCE)
