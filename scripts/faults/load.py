#!/usr/bin/env python3
"""Accounting client of the fault suite (scripts/faults.sh): not a throughput tool.

  load.py send  --api URL[,URL…] --key KEY --prefix P --rate EVENTS_PER_S --seconds S --out FILE
  load.py check --requests FILE --psql "psql …" --fault NAME [--metrics URL,…] [--wait S]

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
"""

import argparse
import collections
import http.client
import json
import os
import subprocess
import sys
import threading
import time
import urllib.parse
import urllib.request


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
    args = p.parse_args()
    send(args) if args.cmd == "send" else check(args)


if __name__ == "__main__":
    main()
