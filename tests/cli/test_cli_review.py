"""``balllink user`` (reviewers: passwords from stdin, never from the command line) and
``balllink serve`` (loopback by default, a warning for any other address)."""

from __future__ import annotations

import io
import json

import pytest

from balllink.cli import main
from balllink.database import LeadDatabase


def run(capsys, monkeypatch, *argv, stdin: str | None = None):
    if stdin is not None:
        monkeypatch.setattr("sys.stdin", io.StringIO(stdin))
    code = main([str(a) for a in argv])
    out = capsys.readouterr()
    return code, out.out, out.err


def test_user_add_list_set(tmp_path, capsys, monkeypatch):
    db = tmp_path / "leads.db"
    code, out, err = run(capsys, monkeypatch, "user", "add", "ann", "--role", "examiner",
                         "--password-stdin", "--db", db, stdin="a-long-password\n")  # fmt: skip
    assert code == 0, err
    assert "added ann (examiner)" in out
    code, out, err = run(capsys, monkeypatch, "--json", "user", "list", "--db", db)
    assert code == 0 and json.loads(out)[0] | {"created": None} == {
        "name": "ann", "role": "examiner", "created": None, "disabled": False}  # fmt: skip
    code, out, err = run(capsys, monkeypatch, "user", "set", "ann", "--role", "admin",
                         "--disable", "--db", db)  # fmt: skip
    assert code == 0 and "ann: admin, disabled" in out
    with LeadDatabase(db, readonly=True) as d:
        assert d.authenticate("ann", "a-long-password") is None  # disabled
        assert [r["action"] for r in d.audit()] == ["user add", "user change"]


@pytest.mark.parametrize(
    ("argv", "stdin", "message"),
    [
        (["user", "add", "ann", "--role", "examiner", "--password-stdin"], "short\n",
         "at least 10 characters"),
        (["user", "add", "a b", "--role", "examiner", "--password-stdin"], "a-long-password\n",
         "letters, digits"),
        (["user", "add", "ann", "--role", "examiner", "--password-stdin"], "",
         "no password on the first line"),
        (["user", "add", "ann", "--role", "examiner"], "a-long-password\n",
         "no terminal to ask the password"),
        (["user", "set", "nobody", "--role", "admin"], None, "no user 'nobody'"),
    ],
)  # fmt: skip
def test_user_errors_are_one_line(tmp_path, capsys, monkeypatch, argv, stdin, message):
    code, _, err = run(capsys, monkeypatch, *argv, "--db", tmp_path / "l.db", stdin=stdin)
    assert code == 2 and message in err and "Traceback" not in err


def test_a_user_name_is_taken_once(tmp_path, capsys, monkeypatch):
    argv = [
        "user",
        "add",
        "ann",
        "--role",
        "analyst",
        "--password-stdin",
        "--db",
        tmp_path / "l.db",
    ]
    assert run(capsys, monkeypatch, *argv, stdin="a-long-password\n")[0] == 0
    code, _, err = run(capsys, monkeypatch, *argv, stdin="another-password\n")
    assert code == 2 and "already exists" in err


def test_serve_warns_off_loopback_and_passes_its_options(tmp_path, capsys, monkeypatch):
    import uvicorn

    LeadDatabase(tmp_path / "l.db").close()
    seen = {}
    monkeypatch.setattr(uvicorn, "run", lambda app, **kw: seen.update(kw))
    code, out, err = run(capsys, monkeypatch, "serve", "--db", tmp_path / "l.db")
    assert code == 0 and seen["host"] == "127.0.0.1" and seen["port"] == 8000
    assert "warning" not in err and "http://127.0.0.1:8000/" in out
    code, out, err = run(capsys, monkeypatch, "serve", "--db", tmp_path / "l.db",
                         "--host", "0.0.0.0", "--port", "8443")  # fmt: skip
    assert code == 0 and seen["host"] == "0.0.0.0" and seen["port"] == 8443
    assert "reachable from other machines" in err and "--certfile" in err
    code, _, err = run(capsys, monkeypatch, "serve", "--db", tmp_path / "l.db",
                       "--certfile", "cert.pem")  # fmt: skip
    assert code == 2 and "both --certfile and --keyfile" in err


def test_serve_needs_an_existing_database(tmp_path, capsys, monkeypatch):
    code, _, err = run(capsys, monkeypatch, "serve", "--db", tmp_path / "missing.db")
    assert code == 2 and "no lead database here" in err
