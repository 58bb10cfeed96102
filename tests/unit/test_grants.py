"""Grant model: validation, tokens, SCRAM verifiers, status, DSNs; and the grant CLI."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import math
import re
from collections import Counter
from urllib.parse import unquote, urlsplit

import pytest
from hypothesis import given
from hypothesis import strategies as st

from common.wire.scram import ScramClient, ScramError, ScramServer, Verifier
from policy.grants import cli
from policy.grants.model import (
    TOKEN_PREFIX,
    Grant,
    GrantError,
    fake_login_salt,
    format_ttl,
    make_dsn,
    new_grant_id,
    new_salt,
    new_token,
    parse_time,
    parse_ttl,
    token_verifier,
    validate_agent,
    validate_database,
    validate_issue,
)
from policy.grants.store import open_store

T0 = dt.datetime(2026, 3, 1, 12, 0, tzinfo=dt.UTC)
SCOPE = "read:public.orders"


def issue_fields(**change):
    fields = {
        "agent": "billing-bot",
        "task": "INC-4821",
        "reason": "refund audit",
        "granted_by": "alice",
        "database": "app",
        "scopes": SCOPE,
        "ttl": "30m",
        "now": T0,
    }
    fields.update(change)
    return fields


def make_grant(**change) -> Grant:
    fields = {
        "id": "gr_1",
        "agent": "billing-bot",
        "task": "INC-1",
        "reason": "r",
        "granted_by": "alice",
        "database": "app",
        "scopes": SCOPE,
        "not_before": T0,
        "expires_at": T0 + dt.timedelta(hours=1),
        "revoked_at": None,
        "created_at": T0,
        "verifier": token_verifier("pgw_x", b"s" * 16),
    }
    fields.update(change)
    return Grant(**fields)


def scram(verifiers: list[Verifier], token: str) -> int:
    salt, iterations = verifiers[0].salt, verifiers[0].iterations
    server = ScramServer(iterations, salt, [(v.stored_key, v.server_key) for v in verifiers])
    client = ScramClient(token)
    index, final = server.final(client.final(server.first(client.first())))
    client.verify(final)
    return index


# ---- validation -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "agent", ["billing-bot", "a", "etl_bot.v2", "x" * 63, "0day", "agent-7.prod_eu"]
)
def test_valid_agent_names(agent):
    assert validate_agent(agent) == agent


@pytest.mark.parametrize(
    ("agent", "message"),
    [
        ("", "required"),
        (None, "required"),
        ("x" * 64, "longer than 63"),
        ("Billing-Bot", "lower case"),
        ("bot@corp", "no '@'"),
        ("bot:1", "no '@' or ':'"),
        ("bot bot", "may only contain"),
        ("bøt", "may only contain"),
        ("bot\n", "may only contain"),
        ("bot/1", "may only contain"),
    ],
)
def test_invalid_agent_names(agent, message):
    with pytest.raises(GrantError, match=re.escape(message)) as err:
        validate_agent(agent)
    assert err.value.field == "agent"
    assert str(err.value).startswith("agent: ")


@pytest.mark.parametrize("database", ["app", "App_2", "billing-prod", "db.v1", "x" * 63])
def test_valid_databases(database):
    assert validate_database(database) == database


@pytest.mark.parametrize("database", ["", None, "x" * 64, "my db", "db;drop", "db\x00", "db/x"])
def test_invalid_databases(database):
    with pytest.raises(GrantError) as err:
        validate_database(database)
    assert err.value.field == "database"


@pytest.mark.parametrize(
    ("change", "field", "message"),
    [
        ({"agent": "Bad@Agent"}, "agent", "may only contain"),
        ({"task": ""}, "task", "required"),
        ({"task": "   "}, "task", "required"),
        ({"task": "x" * 201}, "task", "longer than 200"),
        ({"task": "INC-1\nrm -rf"}, "task", "control characters"),
        ({"reason": ""}, "reason", "required"),
        ({"reason": "a\x00b"}, "reason", "control characters"),
        ({"granted_by": ""}, "granted_by", "required"),
        ({"database": "a b"}, "database", "not a database name"),
        ({"scopes": ""}, "scopes", "at least one scope"),
        ({"scopes": None}, "scopes", "at least one scope"),
        ({"ttl": "0s"}, "ttl", "positive"),
        ({"ttl": -1}, "ttl", "positive"),
        ({"ttl": "8d"}, "ttl", "exceeds the maximum 7d"),
        ({"ttl": "1 hour"}, "ttl", "not a duration"),
        ({"ttl": None}, "ttl", "duration"),
        ({"ttl": float("nan")}, "ttl", "finite"),
        ({"not_before": "soon"}, "not_before", "ISO 8601"),
        ({"not_before": "2026-03-20T00:00:00Z"}, "not_before", "more than 7d in the future"),
        ({"record_rows": "none"}, "record_rows", "full, counts"),
        ({"enforce": "yes"}, "enforce", "true or false"),
    ],
)
def test_issue_validation_names_the_field(change, field, message):
    with pytest.raises(GrantError, match=re.escape(message)) as err:
        validate_issue(**issue_fields(**change))
    assert err.value.field == field


def test_issue_defaults_and_times():
    req = validate_issue(**issue_fields(task="  INC-4821 ", reason="line one\nline two"))
    assert (req.not_before, req.expires_at) == (T0, T0 + dt.timedelta(minutes=30))
    assert req.task == "INC-4821" and req.reason == "line one\nline two"
    assert (req.enforce, req.record_rows) == (True, "full")

    later = validate_issue(**issue_fields(not_before="2026-03-02T08:00:00Z", ttl="2h"))
    assert later.not_before == dt.datetime(2026, 3, 2, 8, 0, tzinfo=dt.UTC)
    assert later.expires_at == later.not_before + dt.timedelta(hours=2)

    past = validate_issue(**issue_fields(not_before="2026-03-01T11:00:00+00:00", ttl="1h"))
    assert past.expires_at == T0 + dt.timedelta(hours=1)  # the ttl counts from now

    short = validate_issue(**issue_fields(ttl="1d", max_ttl=dt.timedelta(days=2)))
    assert short.expires_at == T0 + dt.timedelta(days=1)
    with pytest.raises(GrantError, match="maximum 1h"):
        validate_issue(**issue_fields(ttl="2h", max_ttl=dt.timedelta(hours=1)))


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("30s", 30),
        ("30m", 1800),
        ("2h", 7200),
        ("1d", 86400),
        ("1h30m", 5400),
        ("90", 90),
        (" 2H ", 7200),
        (45, 45),
        (1.5, 1.5),
        (dt.timedelta(minutes=3), 180),
    ],
)
def test_parse_ttl(text, seconds):
    assert parse_ttl(text).total_seconds() == seconds


@pytest.mark.parametrize("text", ["", "m", "1w", "30 m", "1h-5m", "-5m", "1.5h", True, [1]])
def test_parse_ttl_rejects(text):
    with pytest.raises(GrantError) as err:
        parse_ttl(text)
    assert err.value.field == "ttl"


def test_format_ttl():
    assert format_ttl(dt.timedelta(days=7)) == "7d"
    assert format_ttl(dt.timedelta(seconds=5430)) == "1h30m30s"


@given(st.timedeltas(min_value=dt.timedelta(seconds=1), max_value=dt.timedelta(days=400)))
def test_format_ttl_round_trips(ttl):
    whole = dt.timedelta(seconds=int(ttl.total_seconds()))
    assert parse_ttl(format_ttl(whole)) == whole


def test_parse_time():
    assert parse_time("2026-03-01T12:00:00Z", "x") == T0
    assert parse_time("2026-03-01T13:00:00+01:00", "x") == T0
    assert parse_time("2026-03-01T12:00:00", "x") == T0  # no offset: UTC
    assert parse_time(T0, "x") == T0


# ---- tokens, verifiers, salts ---------------------------------------------------------------


def test_token_shape_and_entropy():
    tokens = {new_token() for _ in range(2000)}
    assert len(tokens) == 2000
    for token in tokens:
        assert token.startswith(TOKEN_PREFIX)
        body = token[len(TOKEN_PREFIX) :]
        assert re.fullmatch(r"[A-Za-z0-9_-]{32}", body)  # 32 base64url chars = 192 bits
        assert len(body) * 6 >= 128
    # Every position uses the whole alphabet over many tokens (no fixed or biased chars).
    chars = Counter(c for t in tokens for c in t[len(TOKEN_PREFIX) :])
    assert len(chars) == 64
    expected = 2000 * 32 / 64
    assert all(abs(n - expected) < 6 * math.sqrt(expected) for n in chars.values())


def test_grant_ids_and_salts_are_random():
    assert len({new_grant_id() for _ in range(1000)}) == 1000
    assert len({new_salt() for _ in range(1000)}) == 1000
    assert len(new_salt()) == 16


def test_verifier_is_scram_and_checks_the_token():
    token = new_token()
    encoded = token_verifier(token, new_salt())
    assert encoded.startswith("SCRAM-SHA-256$4096:")
    assert token not in encoded
    v = Verifier.decode(encoded)
    assert scram([v], token) == 0
    with pytest.raises(ScramError):
        scram([v], new_token())
    with pytest.raises(ScramError):
        scram([v], token[:-1])


def test_fake_login_salt_is_stable_and_secret_dependent():
    a = fake_login_salt(b"k" * 32, "ghost")
    assert a == fake_login_salt(b"k" * 32, "ghost") and len(a) == 16
    assert a != fake_login_salt(b"k" * 32, "ghost2")
    assert a != fake_login_salt(b"j" * 32, "ghost")


def test_shared_salt_per_agent_through_the_store(tmp_path):
    async def body():
        async with await open_store(tmp_path / "g.db") as store:
            grants = [
                await store.issue("billing-bot", f"T-{i}", "r", "alice", "app", SCOPE, "1h")
                for i in range(3)
            ]
            other, _ = await store.issue("etl-bot", "T-9", "r", "alice", "app", SCOPE, "1h")
            return grants, other

    grants, other = asyncio.run(body())
    verifiers = [g.scram_verifier() for g, _ in grants]
    assert len({(v.salt, v.iterations) for v in verifiers}) == 1
    assert other.scram_verifier().salt != verifiers[0].salt
    # One server-first-message, three candidates: each token finds its own grant.
    for index, (_, token) in enumerate(grants):
        assert scram(verifiers, token) == index
    with pytest.raises(ScramError):
        scram(verifiers, new_token())


# ---- status ---------------------------------------------------------------------------------


def test_status_transitions():
    g = make_grant(not_before=T0, expires_at=T0 + dt.timedelta(hours=1))
    assert g.status(T0 - dt.timedelta(seconds=1)) == "not_yet_valid"
    assert g.status(T0) == "active"
    assert g.status(T0 + dt.timedelta(minutes=59, seconds=59)) == "active"
    assert g.status(T0 + dt.timedelta(hours=1)) == "expired"
    assert g.is_active(T0) and not g.is_active(T0 + dt.timedelta(hours=2))

    revoked = make_grant(revoked_at=T0 + dt.timedelta(minutes=10))
    assert revoked.status(T0 + dt.timedelta(minutes=5)) == "active"  # not yet
    assert revoked.status(T0 + dt.timedelta(minutes=10)) == "revoked"
    assert revoked.status(T0 + dt.timedelta(hours=5)) == "revoked"  # revoked beats expired
    early = make_grant(revoked_at=T0 - dt.timedelta(minutes=1))
    assert early.status(T0 - dt.timedelta(seconds=1)) == "revoked"


def test_public_views_hide_the_verifier():
    g = make_grant()
    assert "verifier" not in g.to_dict()
    assert g.verifier not in repr(g) and "SCRAM" not in repr(g)
    view = g.to_dict(T0)
    assert view["status"] == "active"
    assert view["expires_at"] == "2026-03-01T13:00:00.000000+00:00"
    json.dumps(view)


# ---- DSN ------------------------------------------------------------------------------------


def test_dsn():
    token = new_token()
    dsn = make_dsn("billing-bot", token, "proxy.internal", 6432, "app")
    assert dsn == f"postgresql://billing-bot:{token}@proxy.internal:6432/app"


@given(
    agent=st.from_regex(r"[a-z0-9_.-]{1,63}", fullmatch=True),
    token=st.text(min_size=1, max_size=60),
    database=st.from_regex(r"[A-Za-z0-9_$.-]{1,63}", fullmatch=True),
    port=st.integers(1, 65535),
)
def test_dsn_round_trips(agent, token, database, port):
    url = urlsplit(make_dsn(agent, token, "proxy.internal", port, database))
    assert unquote(url.username) == agent
    assert unquote(url.password) == token
    assert (url.hostname, url.port) == ("proxy.internal", port)
    assert unquote(url.path[1:]) == database


def test_dsn_quotes_every_part():
    dsn = make_dsn("a.b", "pgw_a/b+c@d:e", "::1", 6432, "my$db")
    url = urlsplit(dsn)
    assert url.hostname == "::1" and url.port == 6432
    assert unquote(url.password) == "pgw_a/b+c@d:e"
    assert unquote(url.path[1:]) == "my$db"


# ---- CLI ------------------------------------------------------------------------------------


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch):
    for name in (
        "PGWITNESS_CONFIG",
        "PGWITNESS_GRANTS_STORE",
        "PGWITNESS_PROXY_LISTEN",
        "PGWITNESS_PROXY_PUBLIC_HOST",
    ):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def store_arg(tmp_path):
    return ["--store", f"sqlite:///{tmp_path}/cli.db"]


def run_cli(capsys, *argv: str) -> tuple[int, str, str]:
    from proxy.cli import main  # the real `pgwitness` command, which hands in the Edges

    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def grant_argv(*extra: str) -> list[str]:
    return [
        "grant",
        "--agent",
        "billing-bot",
        "--task",
        "INC-4821",
        "--reason",
        "refund audit",
        "--database",
        "app",
        "--scope",
        SCOPE,
        "--ttl",
        "30m",
        *extra,
    ]


def test_cli_grant_prints_a_working_dsn(capsys, store_arg, tmp_path):
    code, out, err = run_cli(capsys, *grant_argv(*store_arg, "--granted-by", "alice"))
    assert code == 0, err
    dsn = out.strip()
    url = urlsplit(dsn)
    assert (url.username, url.hostname, url.port, url.path) == (
        "billing-bot",
        "127.0.0.1",
        6432,
        "/app",
    )
    assert re.fullmatch(r"gr_[0-9a-f]{16}", err.split()[1].rstrip(":"))
    assert "shown only once" in err

    async def stored():
        async with await open_store(f"sqlite:///{tmp_path}/cli.db") as store:
            return await store.for_agent("billing-bot")

    (grant,) = asyncio.run(stored())
    assert grant.granted_by == "alice" and grant.enforce
    assert scram([grant.scram_verifier()], unquote(url.password)) == 0


def test_cli_grant_json_and_options(capsys, store_arg):
    code, out, _ = run_cli(
        capsys,
        *grant_argv(*store_arg, "--json", "--dry-run", "--record-rows", "counts"),
        "--ttl",
        "2h",
    )
    assert code == 0
    answer = json.loads(out)
    assert set(answer) == {"grant", "dsn", "token"}
    assert answer["dsn"].endswith(f":{answer['token']}@127.0.0.1:6432/app")
    grant = answer["grant"]
    assert grant["enforce"] is False and grant["record_rows"] == "counts"
    assert "verifier" not in grant
    created = dt.datetime.fromisoformat(grant["created_at"])
    assert dt.datetime.fromisoformat(grant["expires_at"]) - created == dt.timedelta(hours=2)


def test_cli_without_the_proxy_edges_refuses_a_config_file(capsys, tmp_path, monkeypatch):
    """policy.grants imports no proxy code; stand-alone, with a config file it cannot
    record the grant event or make a per-grant role, so it refuses and stores nothing
    (fail closed), while ``--store`` alone still works."""
    monkeypatch.chdir(tmp_path)
    config = tmp_path / "pgwitness.toml"
    config.write_text(
        f'[recorder]\nstore = "{tmp_path}/rec"\nspool_dir = "{tmp_path}/spool"\n'
        f'signing_key = "{tmp_path}/key"\n'
        f'[grants]\nstore = "sqlite:///{tmp_path}/from-config.db"\n'
    )
    code = cli.main(grant_argv("--config", str(config)))
    err = capsys.readouterr().err
    assert code == 2 and "run the grant commands as `pgwitness" in err, err
    assert not (tmp_path / "from-config.db").exists() and not (tmp_path / "rec").exists()
    assert cli.main(grant_argv("--store", f"sqlite:///{tmp_path}/plain.db")) == 0


def test_cli_config_file(capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # configs without [recorder] record under ./.pgwitness
    config = tmp_path / "pgwitness.toml"
    config.write_text(
        f'[recorder]\nstore = "{tmp_path}/rec"\nspool_dir = "{tmp_path}/spool"\n'
        f'signing_key = "{tmp_path}/key"\n'
        f'[grants]\nstore = "sqlite:///{tmp_path}/from-config.db"\n'
        '[proxy]\nlisten = "0.0.0.0:7000"\npublic_host = "db-proxy.internal"\n'
    )
    code, out, err = run_cli(capsys, *grant_argv("--config", str(config)))
    assert code == 0, err
    assert "@db-proxy.internal:6432/app" in out  # as the admin API: public_host's port or 6432
    assert (tmp_path / "from-config.db").exists()
    # The grant change was handed to the recorder: a signed control stream that verifies.
    from proxy.cli import main
    from recorder.cli import register  # noqa: F401 - the verify command is the check

    assert main(["verify", "--all", "--store", str(tmp_path / "rec"),
                 "--public-key", str(tmp_path / "key.pub")]) == 0
    assert "1 sessions verified, 0 failed" in capsys.readouterr().out

    config.write_text('[proxy]\nlisten = "127.0.0.1:6543"\n')
    code, out, err = run_cli(
        capsys, *grant_argv("--config", str(config), "--store", str(tmp_path / "x.db"))
    )
    assert code == 0, err
    assert "@127.0.0.1:6543/app" in out

    config.write_text('[proxy]\nlisten = "0.0.0.0:7000"\n')
    code, out, err = run_cli(
        capsys, *grant_argv("--config", str(config), "--store", str(tmp_path / "x.db"))
    )
    assert code == 0 and "@0.0.0.0:" not in out and ":7000/app" in out

    config.write_text('[proxy]\npublic_host = "[::1]:7001"\n')
    code, out, _ = run_cli(
        capsys, *grant_argv("--config", str(config), "--store", str(tmp_path / "x.db"))
    )
    assert "@[::1]:7001/app" in out


def test_cli_environment_overrides_the_config_file(capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    config = tmp_path / "pgwitness.toml"
    config.write_text(f'[grants]\nstore = "sqlite:///{tmp_path}/file.db"\n')
    monkeypatch.setenv("PGWITNESS_GRANTS_STORE", f"sqlite:///{tmp_path}/env.db")
    monkeypatch.setenv("PGWITNESS_PROXY_PUBLIC_HOST", "env-proxy:5999")
    code, out, err = run_cli(capsys, *grant_argv("--config", str(config)))
    assert code == 0, err
    assert "@env-proxy:5999/app" in out
    assert (tmp_path / "env.db").exists() and not (tmp_path / "file.db").exists()
    code, out, _ = run_cli(capsys, "grants", "--json", "--store", str(tmp_path / "flag.db"))
    assert json.loads(out) == []  # --store beats both


def test_cli_list_extend_revoke(capsys, store_arg):
    ids = []
    for task in ("INC-1", "INC-2"):
        code, out, _ = run_cli(capsys, *grant_argv(*store_arg, "--json"), "--task", task)
        assert code == 0
        ids.append(json.loads(out)["grant"]["id"])

    code, out, _ = run_cli(capsys, "grants", *store_arg)
    assert code == 0
    lines = out.splitlines()
    assert lines[0].split() == [
        "ID",
        "AGENT",
        "TASK",
        "DATABASE",
        "STATUS",
        "MODE",
        "EXPIRES",
        "SCOPES",
    ]
    assert [ln.split()[0] for ln in lines[1:]] == ids
    assert "pgw_" not in out and "SCRAM" not in out

    code, out, _ = run_cli(capsys, "grant", *store_arg, "--extend", ids[0], "--ttl", "1h")
    assert code == 0 and ids[0] in out and "now expires at" in out

    code, out, _ = run_cli(capsys, "revoke", *store_arg, ids[0], "--by", "bob")
    assert code == 0 and "revoked grant" in out
    code, out, _ = run_cli(capsys, "revoke", *store_arg, ids[0], "--by", "carol")
    assert code == 0 and "already revoked" in out and "bob" in out

    code, out, _ = run_cli(capsys, "grants", *store_arg, "--active", "--json")
    assert [g["id"] for g in json.loads(out)] == [ids[1]]
    code, out, _ = run_cli(capsys, "grants", *store_arg, "--task", "INC-1", "--json")
    listed = json.loads(out)
    assert [(g["id"], g["status"], g["revoked_by"]) for g in listed] == [(ids[0], "revoked", "bob")]
    assert all("verifier" not in g for g in listed)

    code, _, err = run_cli(capsys, "grant", *store_arg, "--extend", ids[0], "--ttl", "1h")
    assert code == 2 and "revoked" in err


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (grant_argv("--agent", "Bad@Agent"), "--agent: "),
        (grant_argv("--ttl", "1y"), "--ttl: "),
        (grant_argv("--ttl", "30d"), "exceeds the maximum"),
        (grant_argv("--not-before", "tomorrow"), "--not-before: "),
        (grant_argv("--scope", ""), "--scope"),
        (["grant", "--agent", "x", "--task", "t"], "missing --reason, --database, --scope, --ttl"),
        (["grant", "--extend", "gr_x"], "--extend needs --ttl"),
        (["grant", "--extend", "gr_x", "--ttl", "1h", "--agent", "b"], "drop --agent"),
        (["grant", "--extend", "gr_nope", "--ttl", "1h"], "no grant with id 'gr_nope'"),
        (["revoke", "gr_nope"], "no grant with id 'gr_nope'"),
        (["revoke", "gr_x", "--by", ""], "--by: is required"),
        (["grants", "--store", "mysql://db/x"], "not supported"),
        (["grants", "--config", "/nonexistent/pgwitness.toml"], "not found"),
    ],
)
def test_cli_errors_are_one_line_exit_2(capsys, store_arg, argv, message):
    code, out, err = run_cli(capsys, *argv, *([] if "--store" in argv else store_arg))
    assert code == 2
    assert out == ""
    assert len(err.strip().splitlines()) == 1, err
    assert message in err
    assert "Traceback" not in err


@pytest.mark.parametrize(
    ("toml", "message"),
    [
        ("[grants\n", "config file"),
        ("[grants]\nstore = 5\n", "grants.store"),
        ('[proxy]\nlisten = "nohost"\n', "proxy.listen"),
        ('[proxy]\nlisten = "h:99999"\n', "proxy.listen: bad port"),
        ("grants = 1\n", "[grants] must be a table"),
        ("[grants]\nmax_ttl = 0\n", "grants.max_ttl"),
        ("[grants]\nstores = 1\n", "unknown key grants.stores"),
    ],
)
def test_cli_bad_config(capsys, tmp_path, toml, message):
    config = tmp_path / "bad.toml"
    config.write_text(toml)
    code, _, err = run_cli(capsys, "grants", "--config", str(config))
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1


def test_cli_unexpected_errors_are_one_line(capsys, store_arg, monkeypatch):
    async def boom(*args, **kwargs):
        raise RuntimeError("store exploded")

    monkeypatch.setattr(cli, "open_store", boom)
    code, _, err = run_cli(capsys, "grants", *store_arg)
    assert code == 2 and "store exploded" in err and "Traceback" not in err


def test_register_adds_subcommands_to_a_parser():
    import argparse

    parser = argparse.ArgumentParser(prog="pgwitness")
    sub = parser.add_subparsers(dest="command", required=True)
    cli.register(sub)
    for argv in (["grant", "--agent", "a"], ["grants", "--active"], ["revoke", "gr_1"]):
        args = parser.parse_args(argv)
        assert callable(args.func)
        assert hasattr(args, "config") and hasattr(args, "store")
