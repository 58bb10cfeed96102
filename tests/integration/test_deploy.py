"""The deployment files, checked without a Docker engine.

- The Grafana dashboard and the alert rules name only metrics a live ``pgwitness serve``
  exports (scraped from its ``/metrics`` after real traffic), and every expression parses
  (promtool).
- The alert rules pass their promtool unit tests; every alert has a test and a runbook entry.
- ``compose.yaml``: every command parses with the real CLI (pgwitness's argparse parser, the
  config validator, ``weed server -h``), the files it mounts exist, Prometheus scrapes the
  port the config's ``metrics.listen`` names, Grafana finds the dashboard.
- The compose stack emulated on this machine: the Postgres init script on a fresh cluster,
  the bucket one-shot against a real S3 server (SeaweedFS), the keygen one-shot, the proxy
  from the compose command and config, then the README's example as written: grant, psql,
  verify. Only the names Docker provides (hosts, ports, volume paths) are replaced.
- The Dockerfile: the files it copies exist and pass .dockerignore, a non-root USER, a
  HEALTHCHECK that works against a live metrics endpoint and fails without one, no test extra.
"""

from __future__ import annotations

import fnmatch
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml

from common.config import load_config, parse_hostport
from devtools.localpg import LocalCluster, PortTaken, free_port, on_free_ports, wait_serving
from proxy.cli import build_parser
from proxy.metrics import start_metrics_server

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
BIN = Path(sys.executable).parent


def promtool() -> str:
    """Debian's ``prometheus`` package's promtool, which ``make system-deps`` (run by
    ``make test``) installs: missing is a broken set-up, not a skip."""
    found = shutil.which("promtool")
    if found is None:
        pytest.fail("promtool missing: run make system-deps (Debian's prometheus package)")
    return found

# Series Prometheus makes itself rather than scraping them from pgwitness.
PROMETHEUS_OWN = {"up"}


def compose() -> dict:
    return yaml.safe_load((ROOT / "compose.yaml").read_text())


def dashboard() -> dict:
    return json.loads((DEPLOY / "grafana" / "dashboards" / "pgwitness.json").read_text())


def rules() -> dict:
    return yaml.safe_load((DEPLOY / "prometheus" / "rules.yml").read_text())


# --- PromQL: the metric names an expression reads ---------------------------------------

GRAFANA_VARS = {"$__rate_interval": "5m", "$__range": "1h", "$__interval": "1m"}
_STRING = re.compile(r'"(?:\\.|[^"\\])*"|\'(?:\\.|[^\'\\])*\'|`[^`]*`')
_GROUPING = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)")
_KEYWORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "bool", "offset",
             "and", "or", "unless", "inf", "nan", "atan2"}
_IDENT = re.compile(r"(?<![\w.])([a-zA-Z_:][a-zA-Z0-9_:]*)(\s*\()?")


def grafana_to_promql(expr: str) -> str:
    for var, value in GRAFANA_VARS.items():
        expr = expr.replace(var, value)
    return re.sub(r"\$\{?(\w+)\}?", ".*", expr)  # template variables sit inside =~ regexes


def metric_names(expr: str) -> set[str]:
    """Metric names in a PromQL expression: identifiers that are not functions, aggregations,
    keywords, label names or durations."""
    expr = _STRING.sub('""', expr)
    expr = re.sub(r"\{[^}]*\}", "", expr)  # label matchers
    expr = re.sub(r"\[[^\]]*\]", "", expr)  # ranges and subqueries
    expr = _GROUPING.sub("", expr)
    expr = re.sub(r"\boffset\s+\w+", "", expr)
    names = set()
    for match in _IDENT.finditer(expr):
        name, call = match.groups()
        if call or name in _KEYWORDS:
            continue
        names.add(name)
    return names


def test_metric_names_parser():
    """The parser finds what it must and nothing else (else the checks below prove nothing)."""
    assert metric_names(
        'histogram_quantile(0.99, sum by (le, instance) (rate(a_bucket{x=~"y",le!="b"}[5m])))'
        ' / on (instance) group_left (z) max without (q) (b_total offset 1h) > bool 1e3'
        ' unless c or sum(d{e="f"}[5m:1m])'
    ) == {"a_bucket", "b_total", "c", "d"}


def dashboard_exprs() -> list[str]:
    d = dashboard()
    exprs = [t["expr"] for p in d["panels"] for t in p.get("targets", [])]
    for var in d["templating"]["list"]:
        if var["type"] == "query":
            inner = re.fullmatch(r"label_values\((\w+),\s*\w+\)", var["definition"])
            assert inner, var["definition"]
            exprs.append(inner.group(1))
    return [grafana_to_promql(e) for e in exprs]


def rule_exprs() -> list[str]:
    return [r["expr"] for g in rules()["groups"] for r in g["rules"]]


# --- a live proxy and its /metrics -----------------------------------------------------

def _pgwitness(*args: str, env: dict | None = None, check: bool = True, timeout: float = 60):
    done = subprocess.run([str(BIN / "pgwitness"), *args], capture_output=True, text=True,
                          env=env, timeout=timeout)
    if check and done.returncode != 0:
        raise AssertionError(f"pgwitness {' '.join(args)}: exit {done.returncode}\n"
                             f"{done.stdout}\n{done.stderr}")
    return done


def _serve_on_free_ports(
    write: Callable[[int, int], list[str]], env: dict[str, str], log: Path
) -> tuple[subprocess.Popen, int, int]:
    """``pgwitness serve`` on a proxy and a metrics port from free_port (``write(port,
    mport)`` writes its config and returns its command line): (the process, port, mport)
    once it listens; on new ports when one was taken before it bound them."""

    def attempt() -> tuple[subprocess.Popen, int, int]:
        port, mport = free_port(), free_port()
        argv = write(port, mport)
        with open(log, "w") as out:
            proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, env=env)
        try:
            wait_serving(proc, lambda: log.read_text(errors="replace"), lambda t: "listening" in t)
        except PortTaken:
            proc.wait(10)
            raise
        except BaseException:
            _stop(proc)
            raise
        return proc, port, mport

    return on_free_ports(attempt)


def _stop(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(20)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def _scrape(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as answer:
        return answer.read().decode()


def exported_names(text: str) -> set[str]:
    """Every series name the exposition offers: samples, and the families it declares (a
    labelled family without samples yet still declares its name and type)."""
    names, types = set(), {}
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split(" ", 3)
            types[name] = kind
        elif line and not line.startswith("#"):
            names.add(re.match(r"[a-zA-Z_:][a-zA-Z0-9_:]*", line).group(0))
    for name, kind in types.items():
        if kind == "histogram":
            names |= {f"{name}_bucket", f"{name}_sum", f"{name}_count"}
        elif kind == "counter":
            names.add(name if name.endswith("_total") else f"{name}_total")
        else:
            names.add(name)
    return names


@pytest.fixture(scope="module")
def live_metrics(pg, tmp_path_factory):
    """`pgwitness serve` in a subprocess, one grant, allowed and denied statements and a
    failed login through it; the text of its /metrics once the traffic shows."""
    import asyncio

    import asyncpg

    base = tmp_path_factory.mktemp("live-metrics")
    config = base / "pgwitness.toml"
    env = {**os.environ, "PGWITNESS_UPSTREAM_PASSWORD": pg.users["pgwitness"]}

    def write(port: int, mport: int) -> list[str]:
        config.write_text(f"""
[proxy]
listen = "127.0.0.1:{port}"
[upstream]
host = "localhost"
port = {pg.port}
user = "pgwitness"
sslmode = "verify-full"
sslrootcert = "{pg.ca_cert}"
[grants]
store = "sqlite:///{base}/grants.db"
[metrics]
listen = "127.0.0.1:{mport}"
[recorder]
store = "{base}/recordings"
spool_dir = "{base}/spool"
signing_key = "{base}/signing.key"
""")
        return [str(BIN / "pgwitness"), "serve", "--config", str(config)]

    proc, _port, mport = _serve_on_free_ports(write, env, base / "proxy.log")
    try:
        dsn = _pgwitness("grant", "--config", str(config), "--agent", "metrics-bot", "--task",
                         "DEPLOY-1", "--reason", "dashboard test", "--database", "app",
                         "--scope", "read:public.orders", "--ttl", "10m",
                         "--granted-by", "test", env=env).stdout.strip().splitlines()[-1]

        async def traffic():
            conn = await asyncpg.connect(dsn, ssl=False)
            try:
                await conn.fetch("SELECT id FROM public.orders")
                with pytest.raises(asyncpg.InsufficientPrivilegeError):
                    await conn.fetch("SELECT salary FROM secret.payroll")
            finally:
                await conn.close()
            with pytest.raises(asyncpg.InvalidPasswordError):
                await asyncpg.connect(dsn.replace(":pgw_", ":pgw_wrong"), ssl=False)

        asyncio.run(traffic())
        deadline = time.monotonic() + 30
        text = _scrape(mport)
        while "pgwitness_statements_total{" not in text and time.monotonic() < deadline:
            time.sleep(0.2)
            text = _scrape(mport)
        yield text
    finally:
        _stop(proc)


def test_live_scrape_has_the_traffic(live_metrics):
    names = exported_names(live_metrics)
    assert 'decision="denied"' in live_metrics and 'agent="metrics-bot"' in live_metrics
    assert "pgwitness_auth_failures_total" in names
    assert "pgwitness_upstream_connect_seconds_bucket" in names
    assert "pgwitness_not_a_metric" not in names


@pytest.mark.parametrize("source", ["dashboard", "rules"])
def test_every_query_names_exported_metrics(live_metrics, source):
    exprs = dashboard_exprs() if source == "dashboard" else rule_exprs()
    assert exprs
    exported = exported_names(live_metrics) | PROMETHEUS_OWN
    missing = {}
    for expr in exprs:
        names = metric_names(expr)
        assert names, f"no metric in {expr!r}"
        unknown = names - exported
        if unknown:
            missing[expr] = sorted(unknown)
    assert not missing, f"queries name metrics pgwitness does not export: {missing}"


def test_dashboard_queries_are_valid_promql(tmp_path):
    """promtool parses every dashboard query (as a recording rule)."""
    exprs = dashboard_exprs()
    doc = {"groups": [{"name": "dashboard", "rules": [
        {"record": f"dashboard:query_{i}", "expr": e} for i, e in enumerate(exprs)]}]}
    (tmp_path / "dashboard.yml").write_text(yaml.safe_dump(doc))
    done = subprocess.run([promtool(), "check", "rules", str(tmp_path / "dashboard.yml")],
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr


def test_dashboard_json_is_what_the_generator_writes():
    import importlib.util

    spec = importlib.util.spec_from_file_location("dashboard", DEPLOY / "grafana" / "dashboard.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["dashboard"] = module  # dataclasses look their module up
    try:
        spec.loader.exec_module(module)
    finally:
        del sys.modules["dashboard"]
    assert module.render() == (DEPLOY / "grafana" / "dashboards" / "pgwitness.json").read_text(), (
        "run: python deploy/grafana/dashboard.py")
    d = dashboard()
    ids = [p["id"] for p in d["panels"]]
    assert len(ids) == len(set(ids))
    for p in d["panels"]:
        g = p["gridPos"]
        assert g["x"] >= 0 and g["x"] + g["w"] <= 24, p["title"]


# --- alert rules -----------------------------------------------------------------------

def test_promtool_checks_and_unit_tests_the_rules():
    for args in (["check", "rules", "rules.yml"], ["test", "rules", "rules_test.yml"],
                 ["check", "config", "prometheus.yml"]):
        done = subprocess.run([promtool(), *args], cwd=DEPLOY / "prometheus", capture_output=True,
                              text=True, timeout=120)
        assert done.returncode == 0, f"promtool {' '.join(args)}:\n{done.stdout}{done.stderr}"


def test_every_alert_is_tested_and_has_a_runbook_entry():
    tests = yaml.safe_load((DEPLOY / "prometheus" / "rules_test.yml").read_text())
    tested = {case["alertname"] for t in tests["tests"] for case in t.get("alert_rule_test", [])
              if case.get("exp_alerts")}
    operations = (ROOT / "docs" / "operations.md").read_text()
    anchors = {re.sub(r"[^a-z0-9 -]", "", h.strip().lower()).replace(" ", "-")
               for h in re.findall(r"^#+ (.+)$", operations, re.M)}
    for group in rules()["groups"]:
        for rule in group["rules"]:
            name = rule["alert"]
            assert name in tested, f"{name}: no promtool test where it fires"
            assert rule["labels"]["severity"] in ("page", "ticket"), name
            runbook = rule["annotations"]["runbook"]
            assert runbook == f"docs/operations.md#{name.lower()}", name
            assert name.lower() in anchors, f"{name}: no '### {name}' in docs/operations.md"


# --- compose.yaml against the CLI, the config schema and the repo ------------------------

def _mounts(service: dict) -> dict[str, Path]:
    """container path -> repo path for the service's bind mounts (./...)."""
    out = {}
    for volume in service.get("volumes", []):
        source, target = volume.split(":")[:2]
        if source.startswith("./"):
            out[target] = ROOT / source
    return out


def test_compose_mounts_exist_and_images_are_pinned():
    doc = compose()
    for name, service in doc["services"].items():
        for target, source in _mounts(service).items():
            assert source.exists(), f"{name}: mounts {source} at {target}, which does not exist"
        if "image" in service and "build" not in service:
            assert ":" in service["image"] and not service["image"].endswith(":latest"), name
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if not source.startswith("./"):
                assert source in doc["volumes"], f"{name}: undeclared volume {source}"


def _serve_env(service: dict) -> dict[str, str]:
    env = {k: str(v) for k, v in service.get("environment", {}).items()}
    return {**{k: v for k, v in os.environ.items() if not k.startswith("PGWITNESS_")}, **env}


def _container_config(service: dict, args) -> Path:
    path = _mounts(service).get(args.config)
    assert path is not None, f"--config {args.config} is not mounted from the repo"
    return path


def test_compose_pgwitness_command_and_config_pass_serve_check():
    doc = compose()
    service = doc["services"]["pgwitness"]
    argv = service["command"]
    args = build_parser().parse_args(argv)  # the real parser: unknown flags fail here
    assert args.command == "serve"
    config = _container_config(service, args)
    env = _serve_env(service)
    # serve --check with the compose environment and the mounted config file
    real = [a if a != args.config else str(config) for a in argv]
    check = _pgwitness(*real, "--check", env=env, check=False)
    assert check.returncode == 0, check.stderr
    assert "configuration OK" in check.stdout
    # the container's PGWITNESS_CONFIG (used by `docker compose exec pgwitness pgwitness grant`)
    assert service["environment"]["PGWITNESS_CONFIG"] == args.config


def _compose_config(service: dict):
    args = build_parser().parse_args(service["command"])
    env = {k: str(v) for k, v in service.get("environment", {}).items()}
    return load_config(_container_config(service, args), env=env)


def test_compose_services_agree_with_the_proxy_config():
    doc = compose()
    services = doc["services"]
    pgw = services["pgwitness"]
    cfg = _compose_config(pgw)

    # Prometheus scrapes the port metrics.listen names, on the pgwitness service
    _, mport = parse_hostport("metrics.listen", cfg.metrics.listen)
    prom = services["prometheus"]
    prom_mounts = _mounts(prom)
    config_flag = next(a for a in prom["command"] if a.startswith("--config.file="))
    prom_config_path = prom_mounts[config_flag.split("=", 1)[1]]
    prom_config = yaml.safe_load(prom_config_path.read_text())
    targets = [t for job in prom_config["scrape_configs"] if job["job_name"] == "pgwitness"
               for sc in job["static_configs"] for t in sc["targets"]]
    assert targets == [f"pgwitness:{mport}"]
    for rule_file in prom_config["rule_files"]:
        container = str(Path(config_flag.split("=", 1)[1]).parent / rule_file)
        assert container in prom_mounts, f"rule file {container} is not mounted"
        assert prom_mounts[container] == DEPLOY / "prometheus" / "rules.yml"

    # the proxy listens where compose publishes it, and issued DSNs name that address
    _, lport = parse_hostport("proxy.listen", cfg.proxy.listen)
    assert f"{lport}:{lport}" in pgw["ports"]
    assert cfg.proxy.public_host == f"localhost:{lport}"
    assert any(p.endswith(f":{mport}:{mport}") or p == f"{mport}:{mport}" for p in pgw["ports"])

    # upstream: the postgres service, logging in as the role the init script makes
    assert cfg.upstream.host == "postgres" and cfg.upstream.port == 5432
    pg_env = services["postgres"]["environment"]
    assert pgw["environment"]["PGWITNESS_UPSTREAM_PASSWORD"] == pg_env["UPSTREAM_LOGIN_PASSWORD"]
    assert "CREATE ROLE pgwitness LOGIN" in (DEPLOY / "postgres" / "app.sql").read_text()
    assert cfg.upstream.user == "pgwitness" and pg_env["POSTGRES_DB"] == "app"

    # recordings: the bucket the one-shot creates, on the s3 service, with its credentials
    bucket = services["bucket"]
    assert cfg.recorder.store.startswith(f"s3://{bucket['environment']['BUCKET']}/")
    assert cfg.recorder.s3_endpoint == bucket["environment"]["S3_ENDPOINT"] == "http://s3:8333"
    identities = json.loads((DEPLOY / "s3" / "s3.json").read_text())["identities"]
    keys = {(c["accessKey"], c["secretKey"]) for i in identities for c in i["credentials"]}
    for name in ("pgwitness", "bucket"):
        env = services[name]["environment"]
        assert (env["AWS_ACCESS_KEY_ID"], env["AWS_SECRET_ACCESS_KEY"]) in keys, name

    # the signing key: made by the keygen one-shot on a volume the proxy mounts read-only
    assert cfg.recorder.create_key is False
    keygen = services["keygen"]
    key_dir = str(Path(cfg.recorder.signing_key).parent)
    assert f"keys:{key_dir}" in keygen["volumes"] and f"keys:{key_dir}:ro" in pgw["volumes"]
    depends = pgw["depends_on"]
    assert depends["keygen"]["condition"] == depends["bucket"]["condition"] == (
        "service_completed_successfully")
    assert depends["postgres"]["condition"] == "service_healthy"

    # Grafana: the provisioned dashboards path holds the dashboard, the datasource is Prometheus
    grafana = services["grafana"]
    gm = _mounts(grafana)
    provider = yaml.safe_load((DEPLOY / "grafana/provisioning/dashboards/pgwitness.yaml").read_text())
    path = provider["providers"][0]["options"]["path"]
    assert gm[path] == DEPLOY / "grafana" / "dashboards"
    home = grafana["environment"]["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]
    assert (gm[str(Path(home).parent)] / Path(home).name).is_file()
    ds = yaml.safe_load((DEPLOY / "grafana/provisioning/datasources/prometheus.yaml").read_text())
    assert ds["datasources"][0]["url"] == "http://prometheus:9090"
    assert "/etc/grafana/provisioning/datasources" in gm and "/etc/grafana/provisioning/dashboards" in gm


def test_compose_keygen_command_is_the_real_cli():
    service = compose()["services"]["keygen"]
    assert service["entrypoint"] == ["/bin/sh", "-c"]
    script = service["command"][0]
    words = shlex.split(script)
    argv = words[words.index("pgwitness") + 1:]
    args = build_parser().parse_args(argv)
    assert args.command == "keygen"


def test_compose_seaweedfs_flags_exist():
    from tests.support.fixtures_s3 import find_weed

    weed = find_weed()
    service = compose()["services"]["s3"]
    assert service["image"].endswith(":4.48")  # the same release as the test extra's weed
    sub, *flags = service["command"]
    helptext = subprocess.run([weed, sub, "-h"], capture_output=True, text=True).stdout + \
        subprocess.run([weed, sub, "-h"], capture_output=True, text=True).stderr
    for flag in flags:
        name = flag.split("=", 1)[0]
        assert re.search(rf"^\s+{re.escape(name)}\b", helptext, re.M), f"weed {sub}: no flag {name}"


# --- the compose stack, emulated here, then the README's example ------------------------

def _readme_block() -> str:
    text = (ROOT / "README.md").read_text()
    section = text.split("## Try it with Docker", 1)[1]
    return re.search(r"```sh\n(.*?)```", section, re.S).group(1)


def _readme_commands() -> list[str]:
    """The README's shell lines, continuation lines joined, comments dropped."""
    block = _readme_block().replace("\\\n", " ")
    return [line.strip() for line in block.splitlines() if line.strip() and not line.startswith("#")]


def _oneshot_env(service: dict) -> dict[str, str]:
    return {**os.environ, **{k: str(v) for k, v in service.get("environment", {}).items()}}


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_compose_stack_then_the_readme_example(s3):
    """The compose services in dependency order on this machine, then the README."""
    doc = compose()
    services = doc["services"]
    work = Path(tempfile.mkdtemp(prefix="pgw-compose-", dir="/tmp"))
    os.chmod(work, 0o755)
    bucket = f"compose-{uuid.uuid4().hex[:10]}"
    cluster = LocalCluster(work / "pg")
    # What Docker would provide, in this machine's terms: hosts, ports, volumes, credentials.
    renames = {
        # a host name, as in compose (not an IP)
        "http://s3:8333": s3.endpoint.replace("127.0.0.1", "localhost"),
        "s3://pgwitness-recordings/": f"s3://{bucket}/",
        "/var/lib/pgwitness/": f"{work}/var/lib/pgwitness/",
        "/etc/pgwitness/": f"{work}/etc/pgwitness/",
        'host = "postgres"': 'host = "localhost"',
    }

    def rename(text: str) -> str:
        for old, new in renames.items():
            text = text.replace(old, new)
        return text

    credentials = {"AWS_ACCESS_KEY_ID": s3.access_key, "AWS_SECRET_ACCESS_KEY": s3.secret_key}
    proc = None
    try:
        # postgres: the image makes database app, then runs the init script as the superuser
        cluster.start()
        renames["port = 5432"] = f"port = {cluster.port}"  # a port chosen as it started
        cluster.create_database(services["postgres"]["environment"]["POSTGRES_DB"])
        password = services["postgres"]["environment"]["UPSTREAM_LOGIN_PASSWORD"]
        os.environ["UPSTREAM_LOGIN_PASSWORD"] = password
        try:
            cluster.psql((DEPLOY / "postgres" / "app.sql").read_text(), db="app")
        finally:
            del os.environ["UPSTREAM_LOGIN_PASSWORD"]

        # bucket: the one-shot script with the aws CLI, twice (compose may rerun it)
        env = {k: rename(v) for k, v in _oneshot_env(services["bucket"]).items()} | credentials
        env["BUCKET"] = bucket
        env["PATH"] = f"{BIN}{os.pathsep}{env['PATH']}"
        script = services["bucket"]["entrypoint"][1]
        script = _mounts(services["bucket"])[script]
        for _ in range(2):
            done = subprocess.run(["/bin/sh", str(script)], env=env, capture_output=True,
                                  text=True, timeout=120)
            assert done.returncode == 0, done.stdout + done.stderr
        lock = s3.client().get_object_lock_configuration(Bucket=bucket)["ObjectLockConfiguration"]
        assert lock["ObjectLockEnabled"] == "Enabled"
        assert lock["Rule"]["DefaultRetention"] == {
            "Mode": "COMPLIANCE", "Days": int(services["bucket"]["environment"]["RETENTION_DAYS"])}

        # keygen: its shell command, twice; the second run keeps the key
        keygen = services["keygen"]
        (work / "var/lib/pgwitness/keys").mkdir(parents=True)
        kenv = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}"}
        keys = []
        for _ in range(2):
            done = subprocess.run(["/bin/sh", "-c", rename(keygen["command"][0])], env=kenv,
                                  capture_output=True, text=True, timeout=60)
            assert done.returncode == 0, done.stdout + done.stderr
            keys.append((work / "var/lib/pgwitness/keys/signing.key").read_bytes())
        assert keys[0] == keys[1]

        # pgwitness: the compose command, config file and environment
        pgw = services["pgwitness"]
        (work / "etc/pgwitness").mkdir(parents=True)
        (work / "var/lib/pgwitness/state").mkdir(parents=True)
        penv: dict[str, str] = {}

        def write(port: int, mport: int) -> list[str]:
            renames["0.0.0.0:6432"] = renames["localhost:6432"] = f"127.0.0.1:{port}"
            renames["0.0.0.0:9187"] = f"127.0.0.1:{mport}"
            for target, source in _mounts(pgw).items():
                Path(rename(target)).write_text(rename(source.read_text()))
            penv.clear()
            penv.update({k: rename(v) for k, v in _serve_env(pgw).items()} | credentials)
            penv["PATH"] = f"{BIN}{os.pathsep}{os.environ['PATH']}"
            return [str(BIN / "pgwitness"), *[rename(a) for a in pgw["command"]]]

        proc, port, mport = _serve_on_free_ports(write, penv, work / "proxy.log")

        # the README's example, as written (docker compose exec runs it in the pgwitness
        # container, with its environment)
        commands = _readme_commands()
        assert commands[0] == "docker compose up -d --build"
        grant, psql, verify = commands[1:]
        prefix = "docker compose exec pgwitness "
        assert grant.startswith(prefix) and verify.startswith(prefix)
        done = subprocess.run(shlex.split(rename(grant[len(prefix):])), env=penv,
                              capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stderr
        dsn = done.stdout.strip().splitlines()[-1]
        assert dsn.startswith("postgresql://billing-bot:pgw_") and dsn.endswith(
            f"@127.0.0.1:{port}/app")
        words = shlex.split(psql)
        placeholder = next(w for w in words if w.startswith("postgresql://"))
        done = subprocess.run([w if w != placeholder else dsn for w in words],
                              env={**os.environ, "PGCONNECT_TIMEOUT": "10"},
                              capture_output=True, text=True, timeout=60)
        assert "10.50" in done.stdout, done.stdout + done.stderr  # the allowed read
        assert "may not read secret.payroll" in done.stderr  # the denied one
        assert "100000" not in done.stdout  # the secret never reached the client
        # let the session's chunks reach the bucket, then verify as the README says
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            done = subprocess.run(shlex.split(rename(verify[len(prefix):])), env=penv,
                                  capture_output=True, text=True, timeout=60)
            if done.returncode == 0 and "0 failed" in done.stdout and "billing" not in done.stderr:
                break
            time.sleep(0.5)
        assert done.returncode == 0 and " 0 failed" in done.stdout, done.stdout + done.stderr
        assert "sessions verified" in done.stdout
        metrics_text = _scrape(mport)
        assert 'pgwitness_statements_total{agent="billing-bot",decision="denied"}' in metrics_text
    finally:
        if proc is not None:
            _stop(proc)
        cluster.stop()
        shutil.rmtree(work, ignore_errors=True)


# --- Dockerfile --------------------------------------------------------------------------

def _dockerfile() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    text = (ROOT / "Dockerfile").read_text()
    text = re.sub(r"\\\n", " ", text)
    out = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        word, _, rest = line.partition(" ")
        out.append((word.upper(), rest.strip()))
    return out


def _ignored(path: str) -> bool:
    """Whether .dockerignore keeps ``path`` out of the build context (last match wins)."""
    ignored = False
    for line in (ROOT / ".dockerignore").read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        negate = line.startswith("!")
        pattern = line[1:] if negate else line
        pattern = pattern.rstrip("/")
        if fnmatch.fnmatch(path, pattern) or path.startswith(pattern + "/") or (
            pattern.startswith("**/") and fnmatch.fnmatch(Path(path).name, pattern[3:])
        ):
            ignored = not negate
    return ignored


def test_dockerfile():
    steps = _dockerfile()
    stages = [i for i, (word, _) in enumerate(steps) if word == "FROM"]
    assert len(stages) >= 2, "multi-stage: build, then a runtime without the build tools"
    final = steps[stages[-1]:]
    text = " ".join(f"{word} {rest}" for word, rest in steps)  # instructions, not comments
    assert "weed" not in text.lower() and "seaweedfs" not in text.lower()
    assert "[test]" not in text and ".[" not in text, "the runtime image has no test extra"
    assert re.search(r"pip install --no-cache-dir \.(\s|$)", text)
    # the hot path is compiled in the build stage, after the install, and the image checks it
    # (tests/integration/test_compiled_equivalence.py::test_an_installed_copy_compiles_in_place
    # runs the same step on an installed copy)
    build_stage = " ".join(f"{word} {rest}" for word, rest in steps[: stages[-1]])
    install = re.search(r"pip install --no-cache-dir \.(\s|$)", build_stage)
    assert install, "pgwitness is installed in the build stage"
    compile_at = build_stage.find("-m devtools.compile", install.end())
    assert compile_at > 0, "the build stage compiles the hot path after installing"
    assert "compiled.status().compiled" in build_stage[compile_at:], "and fails if it is not"
    assert "rm -rf /tmp/mypyc" in build_stage, "mypy stays out of the copied virtualenv"

    # every COPY from the context exists and is in the context
    for word, rest in steps:
        if word != "COPY" or rest.startswith("--from="):
            continue
        *sources, _dest = shlex.split(rest)
        for source in sources:
            assert (ROOT / source).exists(), f"COPY {source}: missing"
            assert not _ignored(source), f"COPY {source}: excluded by .dockerignore"
    for needed in ("pyproject.toml", "README.md", "proxy/cli.py", "recorder/cli.py", "policy/grants/cli.py"):
        assert not _ignored(needed), needed
    # every package the wheel holds is copied in (a package left out installs a pgwitness
    # that fails at its first import)
    import tomllib

    include = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]["find"]["include"]
    copied = {shlex.split(rest)[0].rstrip("/") for word, rest in steps
              if word == "COPY" and not rest.startswith("--from=")}  # fmt: skip
    for pattern in include:
        package = pattern.rstrip("*")
        assert package in copied, f"the Dockerfile does not COPY {package}/ (pyproject includes it)"
        assert not _ignored(f"{package}/__init__.py"), package
    for kept_out in (".venv", "tests/integration/test_deploy.py", ".git", "bench/pgbench_compare.py",
                     "common/compiled.json", "proxy/relay.cpython-311-x86_64-linux-gnu.so"):
        assert _ignored(kept_out), kept_out

    users = [rest for word, rest in final if word == "USER"]
    assert users and users[-1] not in ("root", "0", "0:0"), "the runtime runs as a non-root user"
    assert any(word == "HEALTHCHECK" for word, _ in final)
    entry = [json.loads(rest) for word, rest in final if word == "ENTRYPOINT"][-1]
    assert entry == ["pgwitness"]
    assert 'pgwitness = "proxy.cli:main"' in (ROOT / "pyproject.toml").read_text()
    exposed = {int(p) for word, rest in final if word == "EXPOSE" for p in rest.split()}
    assert {6432, 9187} <= exposed


def test_dockerfile_healthcheck_command(tmp_path):
    """The HEALTHCHECK's command passes against a live metrics endpoint and fails without."""
    steps = _dockerfile()
    rest = next(rest for word, rest in steps if word == "HEALTHCHECK")
    argv = json.loads(rest[rest.index("CMD") + 3:].strip())
    assert argv[0] == "python"
    env_line = next(rest for word, rest in steps if word == "ENV")
    default_url = re.search(r"PGWITNESS_HEALTHCHECK_URL=(\S+)", env_line).group(1)
    assert default_url == "http://127.0.0.1:9187/metrics"  # metrics.listen's default port
    server = start_metrics_server("127.0.0.1", 0)  # a port of its own: none to race for
    url = f"http://127.0.0.1:{server.server_port}/metrics"
    env = {**os.environ, "PGWITNESS_HEALTHCHECK_URL": url}
    try:
        up = subprocess.run([sys.executable, *argv[1:]], env=env, capture_output=True, timeout=30)
    finally:
        server.shutdown()
        server.server_close()
    assert up.returncode == 0, up.stderr
    down = subprocess.run([sys.executable, *argv[1:]], env=env, capture_output=True, timeout=30)
    assert down.returncode != 0


# --- AWS: the CloudFormation templates ---------------------------------------------------

AWS_TEMPLATES = sorted((DEPLOY / "aws").glob("*.yaml"))


def test_cfn_lint_passes_the_templates():
    assert len(AWS_TEMPLATES) == 2
    done = subprocess.run([str(BIN / "cfn-lint"), *map(str, AWS_TEMPLATES)], capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr


def _cfn(name: str) -> dict:
    from cfnlint.decode import decode

    template, problems = decode(str(DEPLOY / "aws" / name))
    assert not problems, problems
    return template


def _placeholder(value) -> str:
    """A stand-in for an intrinsic function's result, the shape of a real one."""
    if isinstance(value, str):
        return value
    (fn, arg), = value.items()
    if fn == "Ref":
        return {"AWS::Region": "eu-west-1", "ProxyWorkers": "2", "RetentionDays": "365"}.get(
            arg, f"ref-{arg.lower()}")
    if fn == "Fn::GetAtt":
        attr = arg if isinstance(arg, str) else ".".join(arg)
        return "5432" if attr.endswith("Port") else f"{attr.split('.')[0].lower()}.example.internal"
    if fn == "Fn::Sub":
        return re.sub(r"\$\{([^}]+)\}", lambda m: f"{m.group(1).split('.')[0].lower()}.example", arg)
    raise AssertionError(f"unexpected intrinsic {fn}")


def test_the_proxy_task_config_is_valid_pgwitness_config(tmp_path):
    """The task's PGWITNESS_* variables are real config keys that validate, the command is
    the real CLI, and the settings are the secure ones the guide describes."""
    template = _cfn("pgwitness.yaml")
    container = template["Resources"]["TaskDefinition"]["Properties"]["ContainerDefinitions"][0]
    env = {e["Name"]: _placeholder(e["Value"]) for e in container["Environment"]}
    bundle = tmp_path / "rds-global-bundle.pem"
    bundle.write_text("-----BEGIN CERTIFICATE-----\n")
    env = {k: v.replace("/etc/pgwitness/rds-global-bundle.pem", str(bundle)) for k, v in env.items()}
    cfg = load_config(None, env=env)  # an unknown key or a bad value raises ConfigError
    from common.config import validate_for_serving

    validate_for_serving(cfg)
    assert cfg.upstream.auth == "rds-iam" and cfg.upstream.sslmode == "verify-full"
    assert cfg.grants.store.startswith("postgresql://") and "sslmode=verify-full" in cfg.grants.store
    assert cfg.recorder.store.startswith("s3://") and cfg.recorder.create_key is False
    secret_names = {s["Name"] for s in container["Secrets"]}
    assert secret_names == {"SIGNING_KEY_PEM", "PGPASSWORD"}
    assert not any(name.startswith("PGWITNESS_") for name in secret_names)
    assert "PGWITNESS_UPSTREAM_PASSWORD" not in env  # IAM tokens, no database password
    script = container["Command"][0]
    assert f"> {cfg.recorder.signing_key}" in script and script.startswith("umask 077")
    words = shlex.split(script)
    args = build_parser().parse_args(words[words.index("pgwitness") + 1:])
    assert args.command == "serve" and args.config is None
    _, mport = parse_hostport("metrics.listen", cfg.metrics.listen)
    tg = template["Resources"]["TargetGroup"]["Properties"]
    assert tg["HealthCheckPort"] == str(mport) and tg["HealthCheckPath"] == "/metrics"


def test_the_aws_policies_match_docs_iam():
    """The proxy's and the auditor's S3 actions are the ones docs/iam.md documents."""
    iam = (ROOT / "docs" / "iam.md").read_text()
    documented = [json.loads(block) for block in re.findall(r"```json\n(.*?)```", iam, re.S)]
    proxy_doc, auditor_doc = documented[0], documented[1]

    def actions(policy_statements, effect):
        out = set()
        for st in policy_statements:
            if st["Effect"] == effect:
                acts = st["Action"]
                out |= {a for a in ([acts] if isinstance(acts, str) else acts) if a.startswith("s3:")}
        return out

    work = _cfn("pgwitness.yaml")["Resources"]["ProxyRole"]["Properties"]["Policies"][0]
    statements = work["PolicyDocument"]["Statement"]
    assert actions(statements, "Allow") == actions(proxy_doc["Statement"], "Allow")
    assert actions(statements, "Deny") == actions(proxy_doc["Statement"], "Deny")
    rds = [st for st in statements if st["Action"] == "rds-db:connect"]
    assert len(rds) == 1 and ":dbuser:" in rds[0]["Resource"]["Fn::Sub"]

    archive = _cfn("recordings-bucket.yaml")["Resources"]
    auditor = archive["AuditorRole"]["Properties"]["Policies"][0]["PolicyDocument"]["Statement"]
    assert actions(auditor, "Allow") == actions(auditor_doc["Statement"], "Allow")
    assert actions(auditor, "Deny") == actions(auditor_doc["Statement"], "Deny")
    bucket = archive["RecordingsBucket"]["Properties"]
    assert bucket["ObjectLockEnabled"] is True
    assert bucket["ObjectLockConfiguration"]["Rule"]["DefaultRetention"]["Mode"] == "COMPLIANCE"
    db = _cfn("pgwitness.yaml")["Resources"]
    assert db["Database"]["Properties"]["EnableIAMDatabaseAuthentication"] is True
    assert db["Database"]["Properties"]["PubliclyAccessible"] is False
    ingress = db["DatabaseSecurityGroup"]["Properties"]["SecurityGroupIngress"]
    assert [rule["SourceSecurityGroupId"] for rule in ingress] == [{"Ref": "ProxySecurityGroup"}]
    assert all("CidrIp" not in rule for rule in ingress)
