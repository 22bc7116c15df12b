#!/usr/bin/env python3
"""Accounting client of the fault suite (scripts/faults.sh): not a throughput tool.

  load.py send  --api URL[,URL…] --key KEY --prefix P --rate EVENTS_PER_S --seconds S --out FILE
  load.py check --requests FILE --psql "psql …" --fault NAME [--metrics URL,…] [--wait S]
                [--project UUID --engine-metrics URL,…]

`send` offers a steady rate of uniquely identified events (messageId = PREFIX-N) to the gateways,
round robin: batches through /v1/events/batch and every Nth request a single /v1/events/track. One
JSON line per request goes to --out: its gateway, start time, the outcome (an HTTP status, or
`refused` / `cutoff` / `timeout`) and the messageIds it carried. A refused connection means the
gateway never saw the request; the same request then goes to the next gateway, as a load balancer
would retry it. A request that was sent but got no response (reset, closed, timed out) is `cutoff`:
its events may or may not be stored, and it is reported, never counted as lost or duplicated.
Pacing does not catch up: while requests are slow (a broker outage holds each one for
PRODUCE_TIMEOUT_MS) fewer are sent, afterwards the rate resumes.

`check` waits (with a deadline) until every 202-acknowledged messageId is in Postgres and the
workers report no consumer lag, then prints one JSON object: the fault's row of the table.

With --project, it then accounts for the engine's awards (scripts/faults.sh publishes rules under
which every stored `processed` event with a userId earns exactly one point): it waits (a deadline of
its own, --wait again) until every stored event of the load has an outcome in `engine_outcomes` and
the engines report no consumer lag, then compares `points_ledger` with the stored events — one
ledger row of amount 1 per stored processed event with a userId, none for anything else — and
checks that no messageId has an evaluated event other than the one `engine_message_ids` names.
"""

import argparse
import collections
import http.client
import json
import os
import re
import subprocess
import sys
import threading
import time
import urllib.parse
import urllib.request
import uuid


def send(args):
    apis = [urllib.parse.urlsplit(u) for u in args.api.split(",")]
    lock = threading.Lock()
    state = {"next": time.monotonic(), "seq": 0, "req": 0, "rr": 0}
    down_until = [0.0] * len(apis)
    deadline = time.monotonic() + args.seconds
    out = open(args.out, "w", buffering=1)
    counts = collections.Counter()

    def next_request():
        with lock:
            now = time.monotonic()
            if now >= deadline or (args.stop_file and os.path.exists(args.stop_file)):
                return None
            state["req"] += 1
            track = args.track_every > 0 and state["req"] % args.track_every == 0
            n = 1 if track else args.batch
            slot = max(state["next"], now)
            state["next"] = slot + n / args.rate
            first = state["seq"]
            state["seq"] += n
            state["rr"] += 1
            return slot, track, [f"{args.prefix}-{i}" for i in range(first, first + n)], state["rr"]

    def post(api, path, body):
        conn = http.client.HTTPConnection(api.hostname, api.port, timeout=args.timeout)
        try:
            conn.request("POST", path, body=body, headers={
                "Content-Type": "application/json", "x-api-key": args.key})
            resp = conn.getresponse()
            resp.read()
            return resp.status
        finally:
            conn.close()

    def worker():
        while True:
            item = next_request()
            if item is None:
                return
            slot, track, ids, rr = item
            delay = slot - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            if track:
                path = "/v1/events/track"
                body = json.dumps({"event": "fault_probe", "userId": f"u{rr % 50}",
                                   "messageId": ids[0], "properties": {"n": rr}})
            else:
                path = "/v1/events/batch"
                body = json.dumps({"batch": [
                    {"event": "fault_probe", "userId": f"u{(rr + i) % 50}", "messageId": m,
                     "properties": {"n": rr, "i": i}} for i, m in enumerate(ids)]})
            started = time.time()
            outcome = "refused"
            used = None
            # try the gateways in round-robin order, skipping those that refused recently
            order = [(rr + k) % len(apis) for k in range(len(apis))]
            order = [i for i in order if down_until[i] <= time.monotonic()] or order
            for i in order:
                used = i
                try:
                    outcome = post(apis[i], path, body.encode())
                    break
                except ConnectionRefusedError:
                    down_until[i] = time.monotonic() + 1.0
                    outcome = "refused"
                    continue
                except TimeoutError:
                    outcome = "timeout"
                    break
                except (ConnectionError, http.client.HTTPException, OSError) as e:
                    outcome = "cutoff"
                    break
            rec = {"t": round(started, 3), "ms": round((time.time() - started) * 1000),
                   "api": used, "status": outcome, "ids": ids}
            with lock:
                counts[str(outcome)] += 1
                out.write(json.dumps(rec) + "\n")

    threads = [threading.Thread(target=worker, daemon=True) for _ in range(args.threads)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    out.close()
    print(json.dumps({"requests": sum(counts.values()), "outcomes": counts, "events": state["seq"]}))


def psql_counts(psql):
    res = subprocess.run(psql + ["-tA", "-F", " ", "-c",
                                 "SELECT message_id, count(*) FROM events GROUP BY 1"],
                         capture_output=True, text=True, timeout=60)
    if res.returncode != 0:
        raise RuntimeError(res.stderr.strip())
    counts = {}
    for line in res.stdout.splitlines():
        if line.strip():
            mid, n = line.rsplit(" ", 1)
            counts[mid] = int(n)
    return counts


def lag(urls):
    total = 0
    for url in urls:
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                for line in r.read().decode().splitlines():
                    if line.startswith("gamify_worker_consumer_lag"):
                        total += int(float(line.rsplit(" ", 1)[1]))
        except OSError:
            continue  # a killed worker has no metrics; the others' partitions count
    return total


AWARD_COLUMNS = [
    "engine_events",        # stored events of the load (any status)
    "awards_expected",      # stored processed events with a userId: one award each
    "awarded",              # ledger rows of the project that name an event
    "awards_missing",       # expected awards without a ledger row
    "awards_extra_rows",    # ledger rows beyond one per event_id
    "awards_unexpected",    # ledger rows for no expected event, or of an amount other than 1
    "outcomes_missing",     # stored events without an outcome
    "evaluated",            # outcomes 'evaluated'
    "not_counted",          # outcomes 'not_counted'
    "evaluated_not_owner",  # evaluated outcomes whose event does not hold its messageId
    "owner_mismatch",       # stored events whose messageId the engine gave to another event id
    "outcomes_unstored",    # outcomes of events that are not stored
]


def award_counts(psql, project, prefix):
    sql = f"""
    WITH ev AS (
      SELECT id, message_id, status, user_id FROM events
      WHERE project_id = '{project}' AND message_id LIKE '{prefix}-%'
    ), exp AS (SELECT id FROM ev WHERE status = 'processed' AND user_id IS NOT NULL),
    led AS (SELECT event_id, amount FROM points_ledger
            WHERE project_id = '{project}' AND event_id IS NOT NULL),
    outc AS (SELECT event_id, status FROM engine_outcomes WHERE project_id = '{project}'),
    mids AS (SELECT message_id, event_id FROM engine_message_ids WHERE project_id = '{project}')
    SELECT
      (SELECT count(*) FROM ev),
      (SELECT count(*) FROM exp),
      (SELECT count(*) FROM led),
      (SELECT count(*) FROM exp WHERE NOT EXISTS (SELECT 1 FROM led WHERE led.event_id = exp.id)),
      (SELECT count(*) - count(DISTINCT event_id) FROM led),
      (SELECT count(*) FROM led
        WHERE amount <> 1 OR NOT EXISTS (SELECT 1 FROM exp WHERE exp.id = led.event_id)),
      (SELECT count(*) FROM ev WHERE NOT EXISTS (SELECT 1 FROM outc WHERE outc.event_id = ev.id)),
      (SELECT count(*) FROM outc WHERE status = 'evaluated'),
      (SELECT count(*) FROM outc WHERE status = 'not_counted'),
      (SELECT count(*) FROM outc WHERE status = 'evaluated'
        AND NOT EXISTS (SELECT 1 FROM mids WHERE mids.event_id = outc.event_id)),
      (SELECT count(*) FROM ev JOIN mids ON mids.message_id = ev.message_id
        WHERE mids.event_id <> ev.id),
      (SELECT count(*) FROM outc WHERE NOT EXISTS (SELECT 1 FROM ev WHERE ev.id = outc.event_id))
    """
    res = subprocess.run(psql + ["-tA", "-F", " ", "-c", sql], capture_output=True, text=True,
                         timeout=60)
    if res.returncode != 0:
        raise RuntimeError(res.stderr.strip())
    values = [int(v) for v in res.stdout.split()]
    return dict(zip(AWARD_COLUMNS, values))


def award_samples(psql, project, prefix):
    """A few messageIds of each kind of discrepancy, for the report."""
    sql = f"""
    WITH ev AS (
      SELECT id, message_id, status, user_id FROM events
      WHERE project_id = '{project}' AND message_id LIKE '{prefix}-%'
    )
    (SELECT 'missing', message_id FROM ev WHERE status = 'processed' AND user_id IS NOT NULL
       AND NOT EXISTS (SELECT 1 FROM points_ledger l WHERE l.project_id = '{project}' AND l.event_id = ev.id)
     ORDER BY 2 LIMIT 10)
    UNION ALL
    (SELECT 'duplicated', ev.message_id FROM points_ledger l JOIN ev ON ev.id = l.event_id
     WHERE l.project_id = '{project}' GROUP BY ev.message_id HAVING count(*) > 1 ORDER BY 2 LIMIT 10)
    UNION ALL
    (SELECT 'no_outcome', message_id FROM ev
     WHERE NOT EXISTS (SELECT 1 FROM engine_outcomes o WHERE o.project_id = '{project}' AND o.event_id = ev.id)
     ORDER BY 2 LIMIT 10)
    """
    res = subprocess.run(psql + ["-tA", "-F", " ", "-c", sql], capture_output=True, text=True,
                         timeout=60)
    samples = collections.defaultdict(list)
    for line in res.stdout.splitlines():
        if line.strip():
            kind, mid = line.split(" ", 1)
            samples[kind].append(mid)
    return dict(samples)


def engine_check(args, psql, row):
    project = str(uuid.UUID(args.project))
    if not re.fullmatch(r"[A-Za-z0-9_-]+", args.prefix):
        raise SystemExit(f"unexpected prefix {args.prefix!r}")
    urls = [u for u in args.engine_metrics.split(",") if u]
    started = time.monotonic()
    deadline = started + args.wait
    counts, last, growing_at = {}, None, started
    while True:
        try:
            counts = award_counts(psql, project, args.prefix)
        except (RuntimeError, subprocess.TimeoutExpired, ValueError) as e:
            print(f"check (engine): {e}", file=sys.stderr)
        outcomes = counts.get("evaluated", 0) + counts.get("not_counted", 0)
        if outcomes != last:
            last, growing_at = outcomes, time.monotonic()
        if counts and counts["outcomes_missing"] == 0 and lag(urls) == 0:
            # caught up: a second reading after a pause, so late redeliveries would show
            time.sleep(args.lag_interval)
            if lag(urls) == 0:
                counts = award_counts(psql, project, args.prefix)
                if counts["outcomes_missing"] == 0:
                    break
        if time.monotonic() > deadline:
            print(f"check (engine): deadline of {args.wait}s passed; outcomes stopped growing "
                  f"{time.monotonic() - growing_at:.0f}s before it", file=sys.stderr)
            break
        time.sleep(1)
    row["engine_wait_s"] = round(time.monotonic() - started, 1)
    row.update(counts)
    # the table's two award columns: every discrepancy counts against one of them
    row["awards_duplicated"] = (counts.get("awards_extra_rows", 0) + counts.get("awards_unexpected", 0)
                                + counts.get("evaluated_not_owner", 0) + counts.get("owner_mismatch", 0)
                                + counts.get("outcomes_unstored", 0))
    if not counts:
        raise SystemExit("check (engine): the award accounting never read Postgres")
    if counts["awards_missing"] or counts["outcomes_missing"] or row["awards_duplicated"]:
        row["award_samples"] = award_samples(psql, project, args.prefix)


def check(args):
    psql = args.psql.split()
    reqs = [json.loads(l) for l in open(args.requests) if l.strip()]
    acked, unacked, cutoff_ids = set(), set(), set()
    sent = 0
    statuses = collections.Counter()
    for r in reqs:
        sent += len(r["ids"])
        statuses[str(r["status"])] += 1
        if r["status"] == 202:
            acked.update(r["ids"])
        else:
            unacked.update(r["ids"])
            if r["status"] in ("cutoff", "timeout"):
                cutoff_ids.update(r["ids"])
    deadline = time.monotonic() + args.wait
    counts, waited_for = {}, "acknowledged events"
    while True:
        try:
            counts = psql_counts(psql)
        except (RuntimeError, subprocess.TimeoutExpired) as e:
            print(f"check: {e}", file=sys.stderr)
        missing = [m for m in acked if m not in counts]
        if not missing:
            # everything acknowledged is in; let the workers finish what they still hold (events
            # of 503/cut-off requests the broker kept), so duplicates would show too
            waited_for = "consumer lag"
            if not args.metrics or lag(args.metrics.split(",")) == 0:
                time.sleep(args.lag_interval)
                if not args.metrics or lag(args.metrics.split(",")) == 0:
                    counts = psql_counts(psql)
                    break
        if time.monotonic() > deadline:
            print(f"check: deadline of {args.wait}s passed waiting for {waited_for}", file=sys.stderr)
            break
        time.sleep(1)
    ours = {m: n for m, n in counts.items() if m.startswith(args.prefix + "-")}
    stored = sum(1 for m in acked if m in ours)
    row = {
        "fault": args.fault,
        "sent": sent,
        "acked": len(acked),
        "non2xx": len(unacked),
        "stored": stored,
        "lost": len(acked) - stored,
        "duplicated": sum(1 for n in ours.values() if n > 1),
        "cutoff": len(cutoff_ids),
        "stored_without_202": sum(1 for m in unacked if m in ours),
        "foreign": sum(1 for m in ours if m not in acked and m not in unacked),
        "requests": dict(sorted(statuses.items())),
    }
    lost_ids = sorted(m for m in acked if m not in ours)[:20]
    if lost_ids:
        row["lost_sample"] = lost_ids
    if args.project:
        engine_check(args, psql, row)
    print(json.dumps(row))


def main():
    p = argparse.ArgumentParser()
    sub = p.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("send")
    s.add_argument("--api", required=True)
    s.add_argument("--key", required=True)
    s.add_argument("--prefix", required=True)
    s.add_argument("--rate", type=float, default=200)
    s.add_argument("--seconds", type=float, default=30)
    s.add_argument("--batch", type=int, default=20)
    s.add_argument("--track-every", type=int, default=4)
    s.add_argument("--threads", type=int, default=16)
    s.add_argument("--timeout", type=float, default=30)
    s.add_argument("--stop-file")
    s.add_argument("--out", required=True)
    c = sub.add_parser("check")
    c.add_argument("--requests", required=True)
    c.add_argument("--psql", required=True)
    c.add_argument("--prefix", required=True)
    c.add_argument("--fault", required=True)
    c.add_argument("--metrics", default="")
    c.add_argument("--wait", type=float, default=120)
    c.add_argument("--lag-interval", type=float, default=1.5)
    c.add_argument("--project", help="account for the engine's awards in this project")
    c.add_argument("--engine-metrics", default="", help="the engines' /metrics, for their lag")
    args = p.parse_args()
    send(args) if args.cmd == "send" else check(args)


if __name__ == "__main__":
    main()
