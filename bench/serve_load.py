#!/usr/bin/env python3
"""Load generator and statistics for bench/serve.sh (Python standard library only).

Each subcommand talks to one running `runbook serve` (--base) and, where it counts runs, reads the
database itself (--db: a postgres:// URL read through psql, or a SQLite file read through the sqlite3
module). It prints what it measured as `key: value` lines, which serve.sh shows and keeps.

  latency   alerts at a steady rate, one group each; per run: first step_started.at - POST sent
  storm     notifications over a few groups; webhook outcomes, then runs per alert key
  enqueue   N runs queued through POST /api/v1/runs
  wait      until the runs of a runbook are all finished (or parked at an approval), then timings
  pgstats   PostgreSQL's transaction and WAL counts, or what they grew by per run
  pglog     where PostgreSQL's time went, from its log (log_min_duration_statement=0) on stdin
"""

import argparse
import http.client
import json
import math
import random
import re
import sqlite3
import subprocess
import sys
import threading
import time
import urllib.parse
from collections import Counter
from concurrent.futures import ThreadPoolExecutor


def now_ms():
    return time.time_ns() / 1e6


class Client:
    """One keep-alive HTTP connection per thread to the server."""

    def __init__(self, base):
        u = urllib.parse.urlsplit(base)
        self.host, self.port = u.hostname, u.port
        self.local = threading.local()

    def conn(self):
        c = getattr(self.local, "conn", None)
        if c is None:
            c = http.client.HTTPConnection(self.host, self.port, timeout=60)
            self.local.conn = c
        return c

    def call(self, method, path, body=None, headers=None):
        """(status, parsed JSON or text, instant the request was sent in epoch ms, answered ms)."""
        data = None if body is None else json.dumps(body).encode()
        h = {"Content-Type": "application/json"} if data is not None else {}
        h.update(headers or {})
        for attempt in (0, 1):
            c = self.conn()
            try:
                sent = now_ms()
                c.request(method, path, body=data, headers=h)
                r = c.getresponse()
                text = r.read()
                answered = now_ms()
                break
            except (ConnectionError, http.client.HTTPException):
                # A keep-alive connection the server closed: one new connection, then give up.
                c.close()
                self.local.conn = None
                if attempt:
                    raise
        try:
            value = json.loads(text)
        except ValueError:
            value = text.decode(errors="replace")
        return r.status, value, sent, answered


QUERIES = 0  # psql calls made, each one transaction in PostgreSQL's counts


def db_rows(db, sql):
    """Rows of `sql` (tuples of strings) from a postgres:// URL (psql) or a SQLite file."""
    global QUERIES
    if db.startswith(("postgres://", "postgresql://")):
        QUERIES += 1
        out = subprocess.run(
            ["psql", db, "-X", "-q", "-At", "-F", "\t", "-v", "ON_ERROR_STOP=1", "-c", sql],
            check=True, capture_output=True, text=True,
        ).stdout
        return [tuple(line.split("\t")) for line in out.splitlines() if line]
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=30)
    try:
        return [tuple("" if v is None else str(v) for v in row) for row in con.execute(sql)]
    finally:
        con.close()


def db_one(db, sql):
    rows = db_rows(db, sql)
    return int(rows[0][0]) if rows and rows[0][0] != "" else 0


def pct(sorted_values, p):
    """Nearest-rank percentile of an ascending list."""
    if not sorted_values:
        return float("nan")
    k = max(1, math.ceil(p / 100 * len(sorted_values)))
    return sorted_values[k - 1]


def summary(name, values):
    v = sorted(values)
    print(f"{name}: n={len(v)} p50={pct(v, 50):.1f} p95={pct(v, 95):.1f} "
          f"p99={pct(v, 99):.1f} max={v[-1]:.1f} ms" if v else f"{name}: n=0")
    return v


def notification(group_key, alertname, alerts):
    """An Alertmanager webhook payload, version 4 (as tests/serve.rs builds one)."""
    return {
        "version": "4", "groupKey": group_key, "status": "firing", "receiver": "runbook",
        "groupLabels": {"alertname": alertname}, "commonLabels": {"alertname": alertname},
        "commonAnnotations": {}, "externalURL": "http://alertmanager", "truncatedAlerts": 0,
        "alerts": [
            {
                "status": "firing", "labels": labels, "annotations": {"summary": "bench"},
                "startsAt": "2026-11-30T03:00:00Z", "endsAt": "0001-01-01T00:00:00Z",
                "generatorURL": "http://prometheus/graph", "fingerprint": f"fp{i}",
            }
            for i, labels in enumerate(alerts)
        ],
    }


def paced(total, rate, threads, job):
    """Calls job(i) for i in 0..total, the i-th due at start + i/rate, on `threads` threads.
    Returns (results in order, seconds from the first due instant to the last answer)."""
    results = [None] * total
    start = time.monotonic()
    with ThreadPoolExecutor(max_workers=threads) as pool:
        futures = []
        for i in range(total):
            delay = start + i / rate - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            futures.append(pool.submit(job, i))
        for i, f in enumerate(futures):
            results[i] = f.result()
    return results, time.monotonic() - start


def events(client, run):
    status, body, _, _ = client.call("GET", f"/api/v1/runs/{run}/events?limit=1000")
    if status != 200:
        raise SystemExit(f"GET events of {run}: {status} {body}")
    return body["events"]


def first_at(evs, kind):
    return next((e["at_ms"] for e in evs if e["kind"] == kind), None)


def cmd_latency(a):
    client = Client(a.base)
    tag = f"{a.tag}-{int(time.time())}"

    def send(i):
        n = notification(f'{{}}:{{alertname="{a.alertname}", bench="{tag}-{i}"}}', a.alertname,
                         [{"alertname": a.alertname, "bench": f"{tag}-{i}"}])
        return client.call("POST", "/hooks/alertmanager", n)

    total = int(a.rate * a.seconds)
    results, took = paced(total, a.rate, a.threads, send)
    bad = Counter(s for s, _, _, _ in results if s != 200)
    runs = []
    for status, body, sent, answered in results:
        if status != 200:
            continue
        started = [o["run"] for o in body["outcomes"] if o["outcome"] == "started"]
        if len(started) != 1:
            raise SystemExit(f"expected one started run per alert, got {body}")
        runs.append((started[0], sent, answered))
    print(f"sent: {total} alerts in {took:.2f} s ({total / took:.1f}/s asked {a.rate}/s), "
          f"non-200: {dict(bad) or 0}")
    # Every run's first step_started, read through the API once the worker has got to it.
    deadline = time.monotonic() + a.wait
    journaled, first_step, answer = [], [], []
    pending = list(runs)
    while pending:
        later = []
        for run, sent, answered in pending:
            evs = events(client, run)
            at = first_at(evs, "step_started")
            if at is None:
                later.append((run, sent, answered))
                continue
            journaled.append(first_at(evs, "run_triggered") - sent)
            first_step.append(at - sent)
            answer.append(answered - sent)
        pending = later
        if pending:
            if time.monotonic() > deadline:
                raise SystemExit(f"{len(pending)} runs had no step_started after {a.wait} s")
            time.sleep(0.2)
    summary("answered (POST sent -> 200 received, run journaled)", answer)
    summary("run_triggered.at - POST sent", journaled)
    v = summary("first step_started.at - POST sent", first_step)
    if a.target_ms is not None:
        p99 = pct(v, 99)
        verdict = "met" if p99 < a.target_ms else f"NOT met ({p99 / a.target_ms:.1f}x the target)"
        print(f"target p99 < {a.target_ms} ms: {p99:.1f} ms -- {verdict}")
    return 1 if bad else 0


def cmd_storm(a):
    client = Client(a.base)
    tag = f"storm-{int(time.time())}"
    rng = random.Random(a.seed)
    # Notification i goes to group order[i]: every group gets total/groups of them, shuffled, so
    # re-sends of one group come at any time, sometimes at once on two connections.
    order = [i % a.groups for i in range(a.notifications)]
    rng.shuffle(order)

    def send(i):
        g = order[i]
        labels = [{"alertname": a.alertname, "group": str(g), "instance": f"i{j}"}
                  for j in range(a.alerts)]
        n = notification(f'{{}}:{{alertname="{a.alertname}", group="{tag}-{g}"}}', a.alertname,
                         labels)
        return client.call("POST", "/hooks/alertmanager", n)

    before = db_one(a.db, f"SELECT COUNT(*) FROM runs WHERE runbook = '{a.runbook}'")
    results, took = paced(a.notifications, a.notifications / a.seconds, a.threads, send)
    statuses = Counter(s for s, _, _, _ in results)
    outcomes = Counter()
    runs_of_group = {}
    for i, (status, body, _, _) in enumerate(results):
        if status != 200:
            continue
        for o in body["outcomes"]:
            outcomes[o["outcome"]] += 1
            if o.get("run"):
                runs_of_group.setdefault(order[i], set()).add(o["run"])
    answer = sorted(ans - sent for _, _, sent, ans in results)
    print(f"sent: {a.notifications} notifications x {a.alerts} alerts over {a.groups} groups in "
          f"{took:.2f} s; HTTP statuses: {dict(statuses)}")
    print("outcomes: " + ", ".join(f"{k} {v}" for k, v in sorted(outcomes.items())))
    summary("answered (POST sent -> 200 received)", answer)
    # The database decides: exactly one run per group, none lost.
    rows = db_rows(a.db, f"SELECT trigger_key, COUNT(*) FROM runs WHERE runbook = '{a.runbook}' "
                         f"AND trigger_key LIKE '%{tag}-%' GROUP BY trigger_key")
    runs = sum(int(c) for _, c in rows)
    after = db_one(a.db, f"SELECT COUNT(*) FROM runs WHERE runbook = '{a.runbook}'")
    per_key = Counter(int(c) for _, c in rows)
    one_run_per_answer = all(len(r) == 1 for r in runs_of_group.values())
    print(f"runs in the database: {runs} for {len(rows)} keys (runs of the runbook: "
          f"{before} before, {after} after); runs per key: {dict(per_key)}; "
          f"each group's answers name one run: {one_run_per_answer}")
    ok = (statuses == Counter({200: a.notifications}) and runs == a.groups
          and len(rows) == a.groups and set(per_key) == {1} and after - before == a.groups
          and one_run_per_answer and len(runs_of_group) == a.groups)
    print(f"storm: {'exactly one run per group, none lost' if ok else 'FAILED'}")
    return 0 if ok else 1


def cmd_enqueue(a):
    client = Client(a.base)

    def send(i):
        return client.call("POST", "/api/v1/runs", {"runbook": a.runbook, "params": {}})

    start = time.monotonic()
    with ThreadPoolExecutor(max_workers=a.threads) as pool:
        results = list(pool.map(send, range(a.count)))
    took = time.monotonic() - start
    bad = Counter(s for s, _, _, _ in results if s != 201)
    print(f"queued: {a.count - sum(bad.values())} runs of {a.runbook} in {took:.2f} s "
          f"({a.count / took:.0f}/s), non-201: {dict(bad) or 0}")
    return 1 if bad else 0


def cmd_wait(a):
    """Waits for the runs of `runbook` created at or after --since-ms: all finished (--until done),
    or all parked with no wake-up (--until parked: waiting for an approval). Then timings."""
    scope = f"runbook = '{a.runbook}' AND started_at >= {a.since_ms}"
    not_there = ("finished_at IS NULL" if a.until == "done"
                 else "NOT (status = 'parked' AND wake_at IS NULL)")
    # One query a look: the end instant is read from the journal afterwards, so how often this
    # looks changes only what the looking costs the machine.
    look = (f"SELECT COUNT(*), COUNT(*) FILTER (WHERE {not_there}) FROM runs WHERE {scope}"
            if a.db.startswith("postgres") else
            f"SELECT COUNT(*), SUM(CASE WHEN {not_there} THEN 1 ELSE 0 END) FROM runs WHERE {scope}")
    deadline = time.monotonic() + a.timeout
    while True:
        total, left = (int(v or 0) for v in db_rows(a.db, look)[0])
        if total >= a.expect and left == 0:
            break
        if time.monotonic() > deadline:
            raise SystemExit(f"after {a.timeout} s: {left} of {total} runs of {a.runbook} not "
                             f"{a.until} (expected {a.expect})")
        time.sleep(a.poll)
    by_status = dict(db_rows(a.db, f"SELECT status, COUNT(*) FROM runs WHERE {scope} "
                                   f"GROUP BY status ORDER BY status"))
    # What the workers journaled: their first claim and the last run's end or park (a parking
    # worker journals run_detached; the queue's own run_detached is earlier than any claim).
    first = db_one(a.db, f"SELECT MIN(e.at) FROM events e JOIN runs r ON r.id = e.run_id "
                         f"WHERE r.{scope} AND e.kind = 'run_resumed'")
    if a.until == "done":
        last = db_one(a.db, f"SELECT MAX(finished_at) FROM runs WHERE {scope}")
    else:
        last = db_one(a.db, f"SELECT MAX(e.at) FROM events e JOIN runs r ON r.id = e.run_id "
                            f"WHERE r.{scope} AND e.kind = 'run_detached'")
    span = (last - a.from_ms) / 1000
    steady = (last - first) / 1000
    print(f"runs: {total} {by_status}")
    print(f"from {a.from_label} to the last run {a.until}: {span:.2f} s = {total / span:.1f} "
          f"runs/s; from the first claim (run_resumed): {steady:.2f} s = {total / steady:.1f} runs/s")
    if a.queries_to:
        with open(a.queries_to, "w") as f:
            f.write(f"{QUERIES}\n")
    return 0


def cmd_pgstats(a):
    """PostgreSQL's own counts: this database's committed transactions, and the cluster's WAL
    records and WAL syncs (pg_stat_wal: everything on the server, not only this database). With
    --since, what they grew by, per run."""
    name = a.db.rsplit("/", 1)[-1]
    row = db_rows(a.db, f"SELECT d.xact_commit, w.wal_records, w.wal_sync FROM pg_stat_database d, "
                        f"pg_stat_wal w WHERE d.datname = '{name}'")[0]
    now = [int(v) for v in row]
    if not a.since:
        # Its own query is a transaction too; --since takes it off.
        print(" ".join(str(v) for v in now))
        return 0
    before = [int(v) for v in a.since.split()]
    commits = now[0] - before[0] - 1 - a.minus
    print(f"per run (PostgreSQL's statistics, {a.runs} runs): {commits / a.runs:.1f} committed "
          f"transactions, {(now[1] - before[1]) / a.runs:.1f} WAL records, "
          f"{(now[2] - before[2]) / a.runs:.2f} WAL syncs (the whole server's)")
    return 0


def cmd_pglog(a):
    """Statement durations from a PostgreSQL server log written with log_min_duration_statement=0
    (stdin), summed by statement and phase (parse, bind, execute) for the databases whose name
    holds --db-contains: where the server's time went."""
    line_re = re.compile(r"postgres@(\S+) LOG:  duration: ([\d.]+) ms  "
                         r"(?:(parse|bind|execute) [^:]*: |statement: )(.*)")
    total, count, worst = Counter(), Counter(), Counter()
    for line in sys.stdin:
        m = line_re.search(line)
        if not m or a.db_contains not in m.group(1):
            continue
        _, ms, phase, text = m.groups()
        key = f"{phase or 'simple'}: {' '.join(text.split())[:a.width]}"
        total[key] += float(ms)
        count[key] += 1
        worst[key] = max(worst[key], float(ms))
    whole = sum(total.values())
    if not whole:
        raise SystemExit("no statement durations in the log (log_min_duration_statement=0?)")
    print(f"{whole:.0f} ms in {sum(count.values())} statements")
    for key, ms in total.most_common(a.top):
        print(f"{ms:8.0f} ms {100 * ms / whole:5.1f}%  n={count[key]:<6} avg={ms / count[key]:.3f} "
              f"max={worst[key]:.1f}  {key}")
    return 0


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)

    s = sub.add_parser("latency")
    s.add_argument("--base", required=True)
    s.add_argument("--rate", type=float, default=20)
    s.add_argument("--seconds", type=float, default=20)
    s.add_argument("--threads", type=int, default=8)
    s.add_argument("--alertname", default="BenchLatency")
    s.add_argument("--tag", default="lat")
    s.add_argument("--wait", type=float, default=120, help="seconds to wait for first steps")
    s.add_argument("--target-ms", type=float)
    s.set_defaults(fn=cmd_latency)

    s = sub.add_parser("storm")
    s.add_argument("--base", required=True)
    s.add_argument("--db", required=True)
    s.add_argument("--runbook", default="bench-storm")
    s.add_argument("--alertname", default="BenchStorm")
    s.add_argument("--notifications", type=int, default=1000)
    s.add_argument("--seconds", type=float, default=10)
    s.add_argument("--groups", type=int, default=100)
    s.add_argument("--alerts", type=int, default=3, help="alerts in each notification")
    s.add_argument("--threads", type=int, default=16)
    s.add_argument("--seed", type=int, default=11)
    s.set_defaults(fn=cmd_storm)

    s = sub.add_parser("enqueue")
    s.add_argument("--base", required=True)
    s.add_argument("--runbook", required=True)
    s.add_argument("--count", type=int, default=1000)
    s.add_argument("--threads", type=int, default=8)
    s.set_defaults(fn=cmd_enqueue)

    s = sub.add_parser("wait")
    s.add_argument("--db", required=True)
    s.add_argument("--runbook", required=True)
    s.add_argument("--expect", type=int, required=True)
    s.add_argument("--since-ms", type=int, default=0, help="runs created at or after (epoch ms)")
    s.add_argument("--from-ms", type=int, required=True, help="when the workers started (epoch ms)")
    s.add_argument("--from-label", default="the workers' start", help="what --from-ms is")
    s.add_argument("--until", choices=["done", "parked"], default="done")
    s.add_argument("--poll", type=float, default=0.5)
    s.add_argument("--timeout", type=float, default=600)
    s.add_argument("--queries-to", help="a file to write how many psql queries this made")
    s.set_defaults(fn=cmd_wait)

    s = sub.add_parser("pgstats")
    s.add_argument("--db", required=True)
    s.add_argument("--since", help="what an earlier pgstats printed")
    s.add_argument("--runs", type=int, default=1)
    s.add_argument("--minus", type=int, default=0, help="transactions of others to take off")
    s.set_defaults(fn=cmd_pgstats)

    s = sub.add_parser("pglog")
    s.add_argument("--db-contains", default="runbook_bench_")
    s.add_argument("--top", type=int, default=12)
    s.add_argument("--width", type=int, default=70, help="characters of each statement shown")
    s.set_defaults(fn=cmd_pglog)

    a = p.parse_args()
    sys.exit(a.fn(a))


if __name__ == "__main__":
    main()
