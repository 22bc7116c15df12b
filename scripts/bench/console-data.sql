-- The console benchmark's additions to the analytics data set (scripts/bench/console.sh), run as
-- the superuser on ANALYTICS_BENCH_DB; idempotent. Variables: org, project, owner_email, members.
--
-- Members: MEMBERS - 1 people besides the owner who signs in (4 more owners, 15 admins, 40
-- developers, the rest viewers, joined over the past months), with the owner's password hash.
--
-- One event with a UUIDv7 id: the generated events have random (v4) ids, where the gateway stamps
-- a UUIDv7 on receipt, and the console's event page looks an id without `?at=` up first in the
-- window the v7 id's time gives. A copy of the newest generated event, received then, id stamped
-- then; status pending (the worker has not processed it), so the analytics benchmark's raw scans
-- and rollups, which count processed events only, do not see it.

INSERT INTO users (id, email, name, password_hash, created_at, updated_at)
SELECT md5('console-bench-member-' || n)::uuid, 'console-bench-member-' || n || '@example.com',
       'Member ' || n, (SELECT password_hash FROM users WHERE email = :'owner_email'),
       now() - n * interval '1 day', now() - n * interval '1 day'
FROM generate_series(1, greatest(:members - 1, 0)) AS n
ON CONFLICT (email) DO NOTHING;

INSERT INTO memberships (organization_id, user_id, role, created_at)
SELECT :'org', md5('console-bench-member-' || n)::uuid,
       CASE WHEN n <= 4 THEN 'owner' WHEN n <= 19 THEN 'admin' WHEN n <= 59 THEN 'developer' ELSE 'viewer' END,
       now() - n * interval '1 day'
FROM generate_series(1, greatest(:members - 1, 0)) AS n
ON CONFLICT DO NOTHING;

CREATE SCHEMA IF NOT EXISTS console_bench;
CREATE TABLE IF NOT EXISTS console_bench.v7_event (id uuid PRIMARY KEY, occurred_at timestamptz NOT NULL);
WITH e AS (
    SELECT *, (lpad(to_hex((extract(epoch FROM received_at) * 1000)::bigint), 12, '0') || '7'
               || substr(md5('console-bench-v7'), 1, 3) || '8' || substr(md5('console-bench-v7'), 4, 15))::uuid AS v7
    FROM events WHERE project_id = :'project' AND NOT EXISTS (SELECT FROM console_bench.v7_event)
    ORDER BY occurred_at DESC, id DESC LIMIT 1
), copied AS (
    INSERT INTO events (id, project_id, message_id, event_type, user_id, anonymous_id, payload, context,
                        key_id, key_type, status, occurred_at, received_at, created_at)
    SELECT v7, project_id, 'console-bench-v7', event_type, user_id, anonymous_id, payload, context,
           key_id, key_type, 'pending', occurred_at, received_at, created_at
    FROM e
    RETURNING id, occurred_at
)
INSERT INTO console_bench.v7_event SELECT id, occurred_at FROM copied;
