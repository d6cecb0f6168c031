"""Pulls with the audit log on vs off: manifest GET throughput of two otherwise identical Dockyards.

Run through `bench/audit` (see bench/README.md). Starts two Dockyards (`--workers 2`) on the
embedded default (SQLite, local disk), or with `--postgres` each on its own throwaway PostgreSQL
database, one with `audit.enabled: true` (the default) and one with `audit.enabled: false`,
pushes the same small image to each, then alternates `wrk` runs of manifest GET by tag against
them (anonymous on a public repository, and with a Bearer token on a private one) and prints the
median rate of each with the ratio on/off, and the ratio of the best runs. The target of the audit
design: recording pulls costs at most 10 % (ratio >= 0.90). Afterwards it checks that the audited
server recorded every pull it answered (or counted it as dropped) and none was recorded by the
other.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import dataclasses
import hashlib
import json
import os
import re
import secrets
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from registry_bench import (  # the sibling benchmark: processes, ports, constants
    MANIFEST_ACCEPT,
    OCI_CONFIG,
    OCI_MANIFEST,
    PRIVATE_REPO,
    REPO_ROOT,
    SMALL_REPO,
    Server,
    group_pids,
    log,
    start_dockyard,
)

RATIO_TARGET = 0.90
#: Where a server's CPU goes, by thread: the workers' event loops (requests, building the audit
#: rows), the HTTP server's own threads, and every other thread (the SQLite audit appender).
THREAD_GROUPS = ("event loops", "HTTP server", "other threads")


def thread_usage(pgid: int) -> dict[str, float]:
    """CPU seconds (user + system) of a process group's live threads, per THREAD_GROUPS entry."""
    usage = dict.fromkeys(THREAD_GROUPS, 0.0)
    ticks = os.sysconf("SC_CLK_TCK")
    for pid in group_pids(pgid):
        try:
            tids = os.listdir(f"/proc/{pid}/task")
        except OSError:
            continue
        for tid in tids:
            try:
                with open(f"/proc/{pid}/task/{tid}/stat") as f:
                    stat = f.read()
            except OSError:
                continue
            comm = stat[stat.index("(") + 1 : stat.rindex(")")]
            fields = stat[stat.rindex(")") + 2 :].split()
            if int(tid) == pid:
                group = "event loops"  # granian's parent process only waits: it adds nothing
            elif comm.startswith("tokio"):
                group = "HTTP server"
            else:
                group = "other threads"
            usage[group] += (int(fields[11]) + int(fields[12])) / ticks
    return usage


def _request(server: Server, method: str, path: str, body: bytes = b"", headers: dict[str, str] | None = None) -> bytes:
    assert server.credentials is not None
    basic = base64.b64encode(":".join(server.credentials).encode()).decode()
    request = urllib.request.Request(
        server.url + path,
        data=body or None,
        method=method,
        headers={"Authorization": f"Basic {basic}", **(headers or {})},
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        return bytes(response.read())


def push_image(server: Server, repository: str) -> None:
    """One config and one 4 KiB layer, then the manifest under `latest` (same bytes on both servers)."""
    config = json.dumps({"architecture": "amd64", "os": "linux", "config": {}}).encode()
    layer = hashlib.sha256(b"audit bench layer").digest() * 128
    digests = []
    for blob in (config, layer):
        digest = "sha256:" + hashlib.sha256(blob).hexdigest()
        _request(server, "POST", f"/v2/{repository}/blobs/uploads/?digest={digest}", blob)
        digests.append(digest)
    manifest = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": {"mediaType": OCI_CONFIG, "digest": digests[0], "size": len(config)},
            "layers": [
                {"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": digests[1], "size": len(layer)}
            ],
        }
    ).encode()
    _request(server, "PUT", f"/v2/{repository}/manifests/latest", manifest, {"Content-Type": OCI_MANIFEST})


def bearer(server: Server, repository: str) -> str:
    query = urllib.parse.urlencode({"scope": f"repository:{repository}:pull"})
    token = json.loads(_request(server, "GET", f"/v2/auth?{query}"))["token"]
    return f"Authorization: Bearer {token}"


def wrk(url: str, headers: list[str], duration: int, connections: int) -> tuple[float, float, int]:
    """(requests/s, p99 latency in ms, requests) of one wrk run; any non-2xx fails it."""
    cmd = ["wrk", "-t2", f"-c{connections}", f"-d{duration}s", "--latency", "-H", f"Accept: {MANIFEST_ACCEPT}"]
    for header in headers:
        cmd += ["-H", header]
    out = subprocess.run([*cmd, url], capture_output=True, text=True, timeout=duration + 60, check=True).stdout
    if m := re.search(r"Non-2xx or 3xx responses: (\d+)", out):
        raise RuntimeError(f"{m.group(1)} non-2xx responses from {url}")
    rate = re.search(r"Requests/sec:\s+([\d.]+)", out)
    p99 = re.search(r"99%\s+([\d.]+)(us|ms|s)\b", out)
    total = re.search(r"(\d+) requests in", out)
    if not (rate and p99 and total):
        raise RuntimeError(f"cannot parse wrk output:\n{out}")
    scale = {"us": 0.001, "ms": 1.0, "s": 1000.0}[p99.group(2)]
    return float(rate.group(1)), float(p99.group(1)) * scale, int(total.group(1))


def metric(server: Server, name: str) -> float:
    with urllib.request.urlopen(f"{server.url}/metrics", timeout=10) as response:
        for line in response.read().decode().splitlines():
            if line.startswith(name + " "):
                return float(line.split()[1])
    return 0.0


def recorded_pulls(server: Server, database_url: str | None) -> int:
    query = "SELECT COUNT(*) FROM audit_log WHERE kind = 'pull'"
    if database_url is None:
        with sqlite3.connect(server.workdir / "data" / "dockyard.db") as conn:
            return int(conn.execute(query).fetchone()[0])
    import psycopg  # noqa: PLC0415 - only with --postgres (the virtualenv has it)

    with psycopg.connect(database_url) as conn:
        row = conn.execute(query).fetchone()
        return int(row[0]) if row else 0


@contextlib.contextmanager
def postgres_databases(admin_url: str | None, names: list[str]) -> Iterator[dict[str, str | None]]:
    """A throwaway PostgreSQL database per server (dropped afterwards), or SQLite (None) for each."""
    if admin_url is None:
        yield dict.fromkeys(names)
        return
    import psycopg  # noqa: PLC0415

    created: dict[str, str | None] = {}
    base = admin_url.rsplit("/", 1)[0]
    with psycopg.connect(admin_url, autocommit=True) as admin:
        try:
            for name in names:
                database = f"dockyard_auditbench_{secrets.token_hex(4)}"
                admin.execute(f'CREATE DATABASE "{database}"')
                created[name] = f"{base}/{database}"
            yield created
        finally:
            for url in created.values():
                assert url is not None
                database = url.rsplit("/", 1)[1]
                admin.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s", (database,))
                admin.execute(f'DROP DATABASE IF EXISTS "{database}"')


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=int, default=5, help="seconds per wrk run (default 5)")
    parser.add_argument("--rounds", type=int, default=6, help="alternating on/off runs per row (default 6)")
    parser.add_argument("--connections", type=int, default=32, help="wrk connections (default 32)")
    parser.add_argument("--workers", type=int, default=2, help="dockyard --workers (default 2)")
    parser.add_argument(
        "--postgres",
        metavar="ADMIN_URL",
        nargs="?",
        const="postgresql://postgres@127.0.0.1:5432/postgres",
        help="run both servers on PostgreSQL (a throwaway database each, created through ADMIN_URL; "
        "default postgresql://postgres@127.0.0.1:5432/postgres) instead of the embedded SQLite",
    )
    parser.add_argument("--dockyard-bin", type=Path, help="default: $DOCKYARD_BIN, else .venv/bin/dockyard")
    parser.add_argument("--json", type=Path, help="also write the results as JSON to this file")
    parser.add_argument("--tmpdir", type=Path)
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory")
    return parser.parse_args(argv)


@dataclasses.dataclass
class Runs:
    rates: list[float] = dataclasses.field(default_factory=list)
    p99: list[float] = dataclasses.field(default_factory=list)
    cpu_us: list[float] = dataclasses.field(default_factory=list)
    """Server CPU (process group, user + system) per request."""
    threads_us: list[dict[str, float]] = dataclasses.field(default_factory=list)
    """The same split by THREAD_GROUPS."""


def start(binary: Path, workdir: Path, workers: int, enabled: bool, database_url: str | None, name: str) -> Server:
    config = workdir / "dockyard.yaml"
    lines = [f"audit:\n  enabled: {'true' if enabled else 'false'}", "jobs:\n  run_in_server: false"]
    if database_url is not None:
        lines.append(f"database:\n  url: {database_url}")
    config.write_text("\n".join(lines) + "\n")
    if database_url is not None:
        upgrade = [str(binary), "db", "upgrade", "--config", str(config), "--data-dir", str(workdir / "upgrade")]
        subprocess.run(upgrade, capture_output=True, check=True, timeout=120)
    return start_dockyard(binary, workdir, workers, config=config, name=name)


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    env_bin = os.environ.get("DOCKYARD_BIN")
    binary = args.dockyard_bin or (Path(env_bin) if env_bin else REPO_ROOT / ".venv" / "bin" / "dockyard")
    if shutil.which("wrk") is None:
        log("wrk is required: apt-get install -y wrk")
        return 2
    tmp = Path(tempfile.mkdtemp(prefix="dockyard-audit-bench-", dir=args.tmpdir))
    servers: dict[str, Server] = {}
    names = {"audit on": True, "audit off": False}
    try:
        with postgres_databases(args.postgres, list(names)) as databases:
            try:
                return measure(args, binary, tmp, names, databases, servers)
            finally:
                for server in servers.values():
                    server.stop()
    finally:
        if args.keep:
            log(f"kept {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)


def measure(
    args: argparse.Namespace,
    binary: Path,
    tmp: Path,
    names: dict[str, bool],
    databases: dict[str, str | None],
    servers: dict[str, Server],
) -> int:
    for name, enabled in names.items():
        workdir = tmp / name.replace(" ", "-")
        workdir.mkdir()
        servers[name] = start(binary, workdir, args.workers, enabled, databases[name], name)
        push_image(servers[name], SMALL_REPO)
        push_image(servers[name], PRIVATE_REPO)
    rows = {
        "manifest GET by tag, anonymous": lambda s: (f"{s.url}/v2/{SMALL_REPO}/manifests/latest", []),
        "manifest GET by tag, Bearer token": lambda s: (
            f"{s.url}/v2/{PRIVATE_REPO}/manifests/latest",
            [bearer(s, PRIVATE_REPO)],
        ),
    }
    results = {row: {name: Runs() for name in servers} for row in rows}
    answered = dict.fromkeys(servers, 0)
    for name, server in servers.items():  # warm up: caches, prepared statements, logins
        url, headers = rows["manifest GET by tag, Bearer token"](server)
        answered[name] += wrk(url, headers, 2, args.connections)[2]
    for round_ in range(args.rounds):
        order = list(servers) if round_ % 2 == 0 else list(reversed(servers))
        for row, target in rows.items():
            for name in order:
                server = servers[name]
                url, headers = target(server)
                before = thread_usage(server.proc.pid)
                rate, p99, total = wrk(url, headers, args.duration, args.connections)
                after = thread_usage(server.proc.pid)
                split = {group: 1e6 * (after[group] - before[group]) / max(total, 1) for group in THREAD_GROUPS}
                cpu_us = sum(split.values())
                answered[name] += total
                runs = results[row][name]
                runs.rates.append(rate)
                runs.p99.append(p99)
                runs.cpu_us.append(cpu_us)
                runs.threads_us.append(split)
                log(f"{row} [{name}] run {round_ + 1}: {rate:,.0f} req/s, p99 {p99:.1f} ms, CPU {cpu_us:.0f} us/req")
    time.sleep(2.5)  # the audited server writes its last buffered pulls (every second)
    recorded = recorded_pulls(servers["audit on"], databases["audit on"])
    dropped = metric(servers["audit on"], "dockyard_audit_pulls_dropped_total")
    flushes = metric(servers["audit on"], "dockyard_audit_pull_flushes_total")
    silent = recorded_pulls(servers["audit off"], databases["audit off"])

    backend = "PostgreSQL" if args.postgres else "SQLite (embedded default)"
    print(f"\n{backend}, --workers {args.workers}, {args.rounds} alternating {args.duration} s runs per server and row")
    print(f"{'measurement':36} {'on (median)':>12} {'off (median)':>12} {'on/off':>7} {'best on/off':>12}")
    ratios = {}
    for row, per in results.items():
        on, off = per["audit on"], per["audit off"]
        ratios[row] = statistics.median(on.rates) / statistics.median(off.rates)
        best = max(on.rates) / max(off.rates)
        print(
            f"{row:36} {statistics.median(on.rates):>12,.0f} {statistics.median(off.rates):>12,.0f} "
            f"{ratios[row]:>7.2f} {best:>12.2f}"
        )
        on_detail = f"{statistics.median(on.p99):.1f} / {statistics.median(on.cpu_us):.0f}"
        off_detail = f"{statistics.median(off.p99):.1f} / {statistics.median(off.cpu_us):.0f}"
        print(f"{'  p99 ms / server CPU us per request':36} {on_detail:>12} {off_detail:>12}")
        for group in THREAD_GROUPS:
            on_us = statistics.median(split[group] for split in on.threads_us)
            off_us = statistics.median(split[group] for split in off.threads_us)
            print(f"{'    CPU us per request, ' + group:36} {on_us:>12.0f} {off_us:>12.0f} {on_us - off_us:>+7.0f}")
    worst = min(ratios.values())
    verdict = "meets" if worst >= RATIO_TARGET else "MISSES"
    print(f"\naudit on / off (medians): worst ratio {worst:.2f} ({verdict} the target >= {RATIO_TARGET:.2f})")
    print(
        f"pulls answered by the audited server: {answered['audit on']:,}; recorded {recorded:,}, "
        f"dropped {dropped:,.0f} ({flushes:,.0f} batches, {recorded / max(flushes, 1):,.0f} rows each); "
        f"recorded by the other: {silent}"
    )
    # wrk counts the responses it read; a few more may have been answered as a run stopped.
    slack = args.connections * (args.rounds * len(rows) + 1)
    complete = answered["audit on"] <= recorded + dropped <= answered["audit on"] + slack and silent == 0
    if not complete:
        print("CHECK FAILED: recorded + dropped pulls do not match the pulls answered")
    if args.json:
        args.json.write_text(
            json.dumps(
                {
                    "backend": backend,
                    "workers": args.workers,
                    "runs": {row: {k: dataclasses.asdict(v) for k, v in per.items()} for row, per in results.items()},
                    "median_ratios": ratios,
                    "target": RATIO_TARGET,
                    "pulls": {
                        "answered": answered["audit on"],
                        "recorded": recorded,
                        "dropped": dropped,
                        "batches": flushes,
                    },
                },
                indent=2,
            )
        )
    return 0 if complete else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
