"""No credential is printed or persisted: storage URLs in messages, study.json, the database and Ray's files.

A raw password may hold ``/ @ : ? #``, ``%`` and spaces; the generated cases below cover each of them,
with and without a user name, port, query and IPv6 host.
"""

from __future__ import annotations

import json
import os
import pickle
import random
import shutil
import string
import subprocess
import sys
import tempfile
from pathlib import Path
from urllib.parse import quote, unquote

import pytest
import yaml

from mfsearch.space import load_space
from mfsearch.store import StorageError, open_storage, redact

from .pg import PostgresServer

SPECIAL = "/@:?#% &=+!$'()*,;[]~\\\"<>^`{|}"
WORD = string.ascii_letters + string.digits
USERS = ["", "mf", "u.ser-1_x", "us@er", "%41dmin"]
HOSTS = ["127.0.0.1", "db.example.org", "[::1]", "[2001:db8::5]"]
PORTS = ["", ":5432"]
PATHS = ["", "/db", "/my db"]
SCHEMES = ["postgresql", "postgresql+psycopg", "mysql+pymysql"]


def secret(rng: random.Random) -> tuple[str, list[str]]:
    """A password of random 4-8 character words joined (and possibly led / ended) by special characters."""
    words = ["".join(rng.choices(WORD, k=rng.randint(4, 8))) for _ in range(rng.randint(1, 4))]
    pw = rng.choice(["", rng.choice(SPECIAL)])
    for i, w in enumerate(words):
        pw += w + ("".join(rng.choices(SPECIAL, k=rng.randint(1, 3))) if i < len(words) - 1 else "")
    pw += rng.choice(["", rng.choice(SPECIAL)])
    return pw, words


def assert_hidden(text: str, pw: str, words: list[str]) -> None:
    assert pw not in text and unquote(pw) not in text and quote(pw, safe="") not in text, text
    for w in words:
        assert w not in text, (w, text)


def test_redact_hides_every_generated_password():
    rng = random.Random(20261201)
    seen = set()
    for _ in range(4000):
        pw, words = secret(rng)
        seen.update(c for c in pw if c in SPECIAL)
        user, host, port, path = rng.choice(USERS), rng.choice(HOSTS), rng.choice(PORTS), rng.choice(PATHS)
        scheme = rng.choice(SCHEMES)
        qpw, qwords = secret(rng)
        query, shown = rng.choice([("", ""), ("?sslmode=require", "?sslmode=require"),
                                   ("?sslmode=require&application_name=mf", "?sslmode=require&application_name=mf"),
                                   (f"?password={qpw}", "?password=***"),
                                   (f"?sslmode=disable&PassWord={qpw}", "?sslmode=disable&PassWord=***")])
        url = f"{scheme}://{user}:{pw}@{host}{port}{path}{query}"
        for text in (url, f"storage {url}: cannot open (connection refused)", f"'{url}'"):
            out = redact(text)
            assert_hidden(out, pw, words)
            if "assword=" in query.lower():
                assert_hidden(out, qpw, qwords)
        out = redact(url)
        assert out.startswith(f"{scheme}://{user}:***")  # the user name is kept
        if "@" not in query:  # and so are host, port, database and the other parameters
            assert out == f"{scheme}://{user}:***@{host}{port}{path}{shown}"
        # a password only in the query
        out = redact(f"{scheme}://{user}@{host}{port}{path}?sslmode=require&password={qpw}")
        assert_hidden(out, qpw, qwords)
        if "@" not in qpw:
            assert out == f"{scheme}://{user}@{host}{port}{path}?sslmode=require&password=***"
    assert seen == set(SPECIAL)


@pytest.mark.parametrize(("url", "shown"), [
    ("postgresql://mf:pa/ss@127.0.0.1/db", "postgresql://mf:***@127.0.0.1/db"),
    ("postgresql://:pw@127.0.0.1:5432/db", "postgresql://:***@127.0.0.1:5432/db"),
    ("postgresql://mf:p@ss:w?rd#x@[::1]:5432/db?sslmode=require", "postgresql://mf:***@[::1]:5432/db?sslmode=require"),
    ("postgresql://mf@127.0.0.1/db?sslmode=require&Password=pw", "postgresql://mf@127.0.0.1/db?sslmode=require&Password=***"),
    ("postgresql:mf:pw@127.0.0.1/db", "postgresql:mf:***@127.0.0.1/db"),
    ("postgresql://mf@127.0.0.1:5432/db", "postgresql://mf@127.0.0.1:5432/db"),
    ("postgresql://127.0.0.1:5432/db", "postgresql://127.0.0.1:5432/db"),
    ("journal:runs/tiny/journal.log", "journal:runs/tiny/journal.log"),
    ("sqlite:///runs/tiny/study.db", "sqlite:///runs/tiny/study.db"),
])
def test_redact_keeps_what_is_not_secret(url, shown):
    assert redact(url) == shown


def test_storage_errors_never_quote_the_password():
    """SQLAlchemy splits a raw password at its first ``@``: the pieces would reach the driver's error as host,
    port or database. The error line names none of them (and says to percent-encode)."""
    rng = random.Random(7)
    cases = [("p@ss:w?rd#x", ["p@ss", "ss:w", "w?rd"]), ("Kq7v@Zr2m", ["Kq7v", "Zr2m"]),
             ("Kq7v@Zr2m/Wx4p@", ["Zr2m", "Wx4p"])]
    cases += [secret(rng) for _ in range(8)]
    for pw, words in cases:
        for user in ("mf", ""):
            url = f"postgresql://{user}:{pw}@127.0.0.1:1/db"
            with pytest.raises(StorageError) as e:
                open_storage(url)
            assert str(e.value).startswith(f"storage postgresql://{user}:***@127.0.0.1:1/db: cannot open (")
            assert_hidden(str(e.value), pw, words)


def _texts_under(*roots: Path) -> dict[str, bytes]:
    out = {}
    for root in roots:
        for f in Path(root).rglob("*"):
            if f.is_file() and not f.is_symlink():
                out[str(f)] = f.read_bytes()
    return out


def _assert_nowhere(pw: str, files: dict[str, bytes], *texts: str) -> None:
    forms = {pw, quote(pw, safe=""), quote(pw)}
    holding = [name for name, data in files.items() if any(f.encode() in data for f in forms)]
    holding += [f"text {i}: ...{t[-300:]}" for i, t in enumerate(texts) if any(f in t for f in forms)]
    assert not holding, "the password is in:\n" + "\n".join(holding)


@pytest.mark.parametrize("url", ["postgresql://mf:pa/ss@127.0.0.1:1/db", "postgresql://:p@ss:w?rd#x@[::1]:1/db"])
def test_cli_unreachable_storage_prints_no_password(tmp_path, url, run_cli):
    shutil.copy(Path(__file__).parent.parent / "spaces" / "tiny.yaml", tmp_path / "tiny.yaml")
    r = run_cli("run", "tiny.yaml", "--storage", url, cwd=tmp_path, check=False)
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1 and "Traceback" not in r.stderr
    assert "cannot open" in r.stderr
    pw = url.split("://")[1].split(":", 1)[1].rsplit("@", 1)[0]
    _assert_nowhere(pw, _texts_under(tmp_path / "runs"), r.stdout, r.stderr)
    for piece in ("pa/ss", "ss:w", "rd#x"):
        assert piece not in r.stdout + r.stderr


def test_space_without_credentials(tmp_path, tiny_space):
    url = "postgresql://mf:pa/ss@db.example.org:5432/mfsearch"
    space = load_space(tiny_space(tmp_path, storage=url))
    public = space.without_credentials()
    assert public.storage == "postgresql://mf:***@db.example.org:5432/mfsearch" and "storage" not in public.raw
    assert "pa/ss" not in repr(public) + json.dumps(public.raw) and "pa/ss" not in str(pickle.dumps(public))
    assert space.storage == url and space.raw["storage"] == url  # the original is left as it was
    assert public.raw == {k: v for k, v in space.raw.items() if k != "storage"}
    assert (public.knobs, public.stages, public.evaluation, public.search) == \
        (space.knobs, space.stages, space.evaluation, space.search)
    assert load_space(tiny_space(tmp_path)).without_credentials().storage is None


# ----------------------------------------------------------------------------- a real PostgreSQL server

# every character a raw password can hold in a URL that SQLAlchemy reads as written (a raw ``@`` is refused)
PG_PASSWORD = "Kq7v/Zr2m:Wx4p?Hn8t#Bd3s Lf6g%zz"


@pytest.fixture(scope="module")
def postgres():
    server = PostgresServer()
    yield server
    server.close()


def _database_texts(url: str) -> list[str]:
    """Every study and trial attribute (user and system), parameter and name in the database, as JSON."""
    storage = open_storage(url)
    out = []
    for s in storage.get_all_studies():
        out.append(json.dumps([s.study_name, s.user_attrs, s.system_attrs], default=str))
        for t in storage.get_all_trials(s._study_id, deepcopy=False):
            out.append(json.dumps([t.user_attrs, t.system_attrs, t.params, t.values], default=str))
    return out


@pytest.mark.slow
@pytest.mark.postgres
def test_postgres_password_with_special_characters_is_never_persisted(tmp_path, postgres, run_cli, tiny_space):
    url = postgres.create_role("mfspecial", PG_PASSWORD)
    p = tiny_space(tmp_path, name="pgspecial", search={"trials": 2, "sampler": "random", "reference_models": False})
    r = run_cli("run", str(p), "--no-progress", "--storage", url, cwd=tmp_path)
    assert "study pgspecial: 2 architectures evaluated" in r.stdout
    run_dir = tmp_path / "runs" / "pgspecial"
    assert json.loads((run_dir / "study.json").read_text())["storage"] == \
        f"postgresql://mfspecial:***@127.0.0.1:{postgres.port}/mfspecial"
    db = _database_texts(url)
    assert len(db) >= 3 and any('"trained"' in t for t in db)
    _assert_nowhere(PG_PASSWORD, _texts_under(tmp_path), r.stdout, r.stderr, *db)


@pytest.mark.postgres
@pytest.mark.ray
@pytest.mark.slow
def test_ray_engine_persists_no_password_from_the_space_file(tmp_path, postgres, tiny_space):
    """The password is in the space file's ``storage:``; after a Ray run no copy of it is anywhere: run
    directory, Ray's experiment directory (params.pkl, tuner.pkl, searcher state), Ray's session logs, the
    study and trial attributes, the output."""
    url = postgres.create_role("mfray", PG_PASSWORD)
    p = tiny_space(tmp_path, name="rayspecial", storage=url,
                   search={"trials": 2, "sampler": "random", "reference_models": False, "engine": "ray",
                           "cpus_per_trial": 1, "max_concurrent": 2})
    space_file = p.read_bytes()
    assert PG_PASSWORD in yaml.safe_load(space_file)["storage"]
    ray_tmp = tempfile.mkdtemp(dir="/tmp", prefix="mfr")  # short: Ray's socket paths live under it
    try:
        env = dict(os.environ, MFSEARCH_RUNS=str(tmp_path / "runs"), RAY_TMPDIR=ray_tmp)
        r = subprocess.run([sys.executable, "-m", "mfsearch.cli", "run", str(p), "--no-progress"], cwd=tmp_path,
                           env=env, capture_output=True, text=True, timeout=600)
        assert r.returncode == 0, r.stderr[-3000:]
        assert "study rayspecial: 2 architectures evaluated" in r.stdout
        db = _database_texts(url)
        trained = [t for t in db if '"trained"' in t and '"ray"' in t]
        assert len(trained) == 2
        files = _texts_under(tmp_path, ray_tmp)
        del files[str(p)]  # the space file itself is the one place the password was written by the user
        ray_files = [f for f in files if "/runs/rayspecial/ray/" in f or f.startswith(ray_tmp)]
        assert any(f.endswith("params.pkl") for f in ray_files) and any(f.endswith("tuner.pkl") for f in ray_files)
        assert any("/session_" in f and "/logs/" in f for f in ray_files)
        _assert_nowhere(PG_PASSWORD, files, r.stdout, r.stderr, *db)
    finally:
        shutil.rmtree(ray_tmp, ignore_errors=True)
