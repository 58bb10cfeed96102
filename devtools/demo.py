"""``pgwitness demo``: a throwaway Postgres, the proxy, one task grant, one agent session.

Everything lives under ``.demo/`` and is torn down at the end (``--keep`` leaves the
cluster directory, recordings and config behind for a closer look).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

DEMO_TOML = """\
# Written by `pgwitness demo`.
[proxy]
listen = "127.0.0.1:{proxy_port}"
tls_cert = "{tls}/server.crt"
tls_key = "{tls}/server.key"

[upstream]
host = "localhost"
port = {pg_port}
user = "pgwitness"
password = "upstream-secret"
sslmode = "verify-full"
sslrootcert = "{pg_ca}"

[grants]
store = "sqlite:///{base}/grants.db"

[recorder]
store = "{base}/recordings"
spool_dir = "{base}/spool"
signing_key = "{base}/signing.key"

[metrics]
listen = "127.0.0.1:{metrics_port}"
"""


def register(subparsers) -> None:
    p = subparsers.add_parser("demo", help="run a short agent session through a throwaway setup")
    p.add_argument("--dir", default=".demo", help="working directory (default .demo)")
    p.add_argument("--keep", action="store_true", help="leave the cluster and recordings behind")
    p.set_defaults(func=cmd_demo)


def _say(text: str) -> None:
    print(f"\n\033[1m== {text}\033[0m" if sys.stdout.isatty() else f"\n== {text}", flush=True)


def _pgwitness(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "proxy.cli", *args], capture_output=True, text=True, check=check
    )


def cmd_demo(args) -> int:
    from devtools.localpg import (
        LocalCluster,
        PortTaken,
        build_app_cluster,
        free_port,
        make_server_tls,
        on_free_ports,
        wait_serving,
    )

    base = Path(args.dir).absolute()
    if base.exists():
        shutil.rmtree(base)
    (base / "tls").mkdir(parents=True)
    os.chmod(base, 0o755)
    _say("starting a throwaway PostgreSQL 15 (SCRAM + TLS)")
    cluster = LocalCluster(base / "pg", keep=args.keep)
    proxy = None
    try:
        cluster.start()
        build_app_cluster(cluster)
        print(f"postgres on 127.0.0.1:{cluster.port}; the proxy logs in as role 'pgwitness'")

        ca, cert, key = make_server_tls(["localhost"], ["127.0.0.1"])
        (base / "tls" / "ca.crt").write_bytes(ca)
        (base / "tls" / "server.crt").write_bytes(cert)
        (base / "tls" / "server.key").write_bytes(key)
        os.chmod(base / "tls" / "server.key", 0o600)
        config = base / "pgwitness.toml"
        _say(f"starting pgwitness (config {config.relative_to(Path.cwd()) if config.is_relative_to(Path.cwd()) else config})")
        log_path = base / "proxy.log"

        def serve() -> tuple[subprocess.Popen[bytes], int, int]:
            # Ports free a moment ago: when one was taken before the proxy bound it, it
            # exits saying so and on_free_ports starts it again on new ones.
            proxy_port, metrics_port = free_port(), free_port()
            config.write_text(
                DEMO_TOML.format(
                    base=base, tls=base / "tls", proxy_port=proxy_port, pg_port=cluster.port,
                    pg_ca=cluster.ca_cert, metrics_port=metrics_port,
                )
            )
            with open(log_path, "wb") as log:
                started = subprocess.Popen(
                    [sys.executable, "-m", "proxy.cli", "serve", "--config", str(config)],
                    stdout=log, stderr=subprocess.STDOUT,
                )
            try:
                wait_serving(started, lambda: log_path.read_text(errors="replace"),
                             lambda text: "listening" in text, timeout=20)
            except PortTaken:
                started.wait(10)
                raise
            except BaseException:
                started.kill()
                raise
            return started, proxy_port, metrics_port

        proxy, proxy_port, metrics_port = on_free_ports(serve)
        print(f"pgwitness on 127.0.0.1:{proxy_port} (TLS), metrics on :{metrics_port}/metrics")

        _say("issuing a task grant: agent billing-bot, task INC-4821, 10 minutes")
        grant = _pgwitness(
            "grant", "--config", str(config), "--agent", "billing-bot", "--task", "INC-4821",
            "--reason", "refund duplicate charge on order 2", "--database", "app",
            "--scope", "read:public.orders,public.customers write:public.orders",
            "--ttl", "10m", "--granted-by", "demo",
        )
        dsn = grant.stdout.strip().splitlines()[-1]
        print(f"DSN for the agent (token shown once): {dsn[:40]}...")

        _say("the agent's session")
        _agent_session(dsn, base / "tls" / "ca.crt")
    finally:
        if proxy is not None:
            proxy.terminate()
            try:
                proxy.wait(15)
            except subprocess.TimeoutExpired:
                proxy.kill()
        cluster.stop()

    _say("verify: every recording is complete, chained and signed")
    verify = _pgwitness(
        "verify", "--all", "--store", str(base / "recordings"),
        "--public-key", str(base / "signing.key.pub"), check=False,
    )
    print(verify.stdout.strip() or verify.stderr.strip())
    agent_session = _find_agent_session(base)
    if agent_session:
        _say(f"replay of the agent's session {agent_session}")
        replay = _pgwitness(
            "replay", agent_session, "--store", str(base / "recordings"),
            "--public-key", str(base / "signing.key.pub"), "--max-rows", "5", check=False,
        )
        print(replay.stdout.strip() or replay.stderr.strip())
    _say("the audit answer for task INC-4821: who was granted what, what they did and were denied")
    audit = _pgwitness(
        "audit", "--task", "INC-4821", "--store", str(base / "recordings"),
        "--index", str(base / "audit.duckdb"), "--public-key", str(base / "signing.key.pub"),
        check=False,
    )
    print(audit.stdout.strip() or audit.stderr.strip())
    if not args.keep:
        shutil.rmtree(base, ignore_errors=True)
    else:
        print(f"\nkept {base}")
    _say("done")
    return verify.returncode


def _find_agent_session(base: Path, agent: str = "billing-bot") -> str | None:
    """The recorded session whose start record names the agent (not a control stream)."""
    from recorder.records import Kind
    from recorder.replay import iter_records
    from recorder.store.local import LocalStore

    store = LocalStore(base / "recordings")
    for sid in store.sessions():
        first = next(iter(iter_records(store, sid)), None)
        meta = first.json().get("meta", {}) if first is not None and first.kind != Kind.WIRE else {}
        if meta.get("agent") == agent:
            return sid
    return None


def _agent_session(dsn: str, ca: Path) -> None:
    """The agent's side: asyncpg (a main dependency, so the demo runs after a plain install)."""
    import asyncio

    asyncio.run(_agent_statements(dsn, ca))
    time.sleep(0.2)


async def _agent_statements(dsn: str, ca: Path) -> None:
    import ssl

    import asyncpg

    tls = ssl.create_default_context(cafile=str(ca))  # verify-full: chain and host name
    conn = await asyncpg.connect(dsn, ssl=tls)
    try:

        async def run(sql: str, *params) -> None:
            print(f"agent> {sql}")
            try:
                stmt = await conn.prepare(sql)
                rows = await stmt.fetch(*params)
            except asyncpg.PostgresError as exc:
                print(f"        ERROR {exc.sqlstate}: {exc.message}")
                return
            for row in rows:
                print("       ", tuple(row))
            if not stmt.get_attributes():
                print(f"        {stmt.get_statusmsg()}")

        await run("SELECT id, customer_id, total FROM public.orders ORDER BY id")
        await run("UPDATE public.orders SET note = 'refunded' WHERE id = $1", 2)
        await run("SELECT salary FROM secret.payroll")
        await run("DROP TABLE public.orders")
        await run("SELECT count(*) FROM public.orders WHERE note = 'refunded'")
    finally:
        await conn.close()
