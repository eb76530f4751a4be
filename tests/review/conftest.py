"""Fixtures of the review app: the small real database (`review_support`), a fresh copy
per test, and test clients signed in as one of its reviewers."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

pytest.importorskip("starlette", reason="the review app needs balllink[serve]")

from review_support import build_review_db, sign_in


@pytest.fixture(scope="session")
def review_db_master(tmp_path_factory) -> Path:
    return build_review_db(tmp_path_factory.mktemp("review") / "leads.db")


@pytest.fixture(scope="session")
def plain_master(tmp_path_factory) -> Path:
    return build_review_db(tmp_path_factory.mktemp("review-plain") / "leads.db", markup=False)


@pytest.fixture
def plain_review_db(plain_master, tmp_path) -> Path:
    """A fresh copy of the review database without markup in its fields."""
    return Path(shutil.copytree(plain_master, tmp_path / "plain.db"))


@pytest.fixture
def review_db(review_db_master, tmp_path) -> Path:
    """A fresh copy of the review database for one test (tests change it)."""
    return Path(shutil.copytree(review_db_master, tmp_path / "leads.db"))


@pytest.fixture
def client_of(review_db):
    """``client_of(name)``: a test client of the app, signed in as ``name``."""
    from starlette.testclient import TestClient

    from balllink.review import create_app

    app = create_app(review_db)

    def make(name: str | None = None):
        client = TestClient(app)
        if name is not None:
            r = sign_in(client, name)
            assert r.status_code == 303, r.text
        return client

    return make
