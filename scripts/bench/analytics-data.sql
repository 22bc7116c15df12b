-- The analytics benchmark's data set (scripts/bench/analytics.sh): functions, in a schema of their
-- own (bench), that generate a project's users, events and rollups straight into Postgres, as the
-- superuser (which row-level security does not apply to). Loaded into the benchmark database by
-- the script; idempotent (CREATE OR REPLACE).
--
--   bench.setup(...)     the parameters, the monthly partitions, the end users, the per-hour weights
--                        and the per-user funnel sequences (signup → lesson_started →
--                        lesson_completed → purchase, plus the $identify that goes with a signup)
--   bench.fill_day(d)    the background events of day d (0 = the first), one transaction each, so an
--                        interrupted generation resumes at the first day not done
--   bench.rollup_day(d), bench.first_seen()
--                        event_rollups and user_first_seen from the events, as gamify-worker keeps
--                        them (only processed, non-$identify events; who = 'u:' || the user's
--                        external id, else 'a:' || the anonymous id; all on shard 0)
--
-- The shape: events spread over the hours with a diurnal curve (low at 04:00 UTC, high at 16:00),
-- weekends at 65 %, and 30 % growth across the range. 30 % of the users exist before the range;
-- the rest join through it (their signup), along the same curve. Background events pick a user
-- among those who have joined by that hour, skewed to the oldest (user n of M with probability
-- ∝ n^(-2/3): the top 1 % make about a fifth of the events), 4 % of them anonymous.

CREATE SCHEMA IF NOT EXISTS bench;

-- One row: the data set's parameters and progress.
CREATE TABLE IF NOT EXISTS bench.params (
    project_id     uuid NOT NULL,
    secret_key_id  uuid NOT NULL,
    public_key_id  uuid NOT NULL,
    events         bigint NOT NULL,
    users          integer NOT NULL,
    days           integer NOT NULL,
    data_end       timestamptz NOT NULL,
    sequence_events bigint,
    started_at     timestamptz NOT NULL DEFAULT clock_timestamp(),
    finished_at    timestamptz,
    generation_seconds numeric
);
CREATE TABLE IF NOT EXISTS bench.days_done (day integer PRIMARY KEY, rows bigint NOT NULL, seconds numeric NOT NULL);

-- Per hour of the range: its start, its cumulative share of the activity (end of the hour), the
-- number of users who have joined by then and the number of background events it gets.
CREATE TABLE IF NOT EXISTS bench.hours (
    h       integer PRIMARY KEY,
    start   timestamptz NOT NULL,
    w       float8 NOT NULL,
    cum     float8,
    joined  integer,
    n       bigint
);

-- The background events' names, with their shares (cumulative thresholds below).
CREATE OR REPLACE FUNCTION bench.names() RETURNS text[] LANGUAGE sql IMMUTABLE AS $$
    SELECT ARRAY['page_view', 'click', 'lesson_started', 'lesson_completed', 'search', 'level_up',
                 'badge_earned', 'share', 'session_end', 'purchase']
$$;
CREATE OR REPLACE FUNCTION bench.name_thresholds() RETURNS float8[] LANGUAGE sql IMMUTABLE AS $$
    -- shares: .52 .17 .07 .05 .05 .04 .03 .025 .037 .008
    SELECT ARRAY[0, .52, .69, .76, .81, .86, .90, .93, .955, .992]::float8[]
$$;

CREATE OR REPLACE FUNCTION bench.rfc3339(at timestamptz) RETURNS text LANGUAGE sql IMMUTABLE AS $$
    SELECT to_char(at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS"Z"')
$$;

CREATE OR REPLACE FUNCTION bench.user_uuid(n integer) RETURNS uuid LANGUAGE sql IMMUTABLE AS $$
    SELECT md5('gamify-bench-user-' || n)::uuid
$$;

CREATE OR REPLACE FUNCTION bench.plan(n integer) RETURNS text LANGUAGE sql IMMUTABLE AS $$
    SELECT CASE WHEN (n::bigint * 37) % 100 < 70 THEN 'free'
                WHEN (n::bigint * 37) % 100 < 92 THEN 'pro' ELSE 'team' END
$$;

CREATE OR REPLACE FUNCTION bench.context(n integer) RETURNS jsonb LANGUAGE sql IMMUTABLE AS $$
    SELECT jsonb_build_object(
        'ip', '198.51.' || (n % 250) || '.' || (n / 250 % 250),
        'userAgent', CASE WHEN n % 3 = 0
            THEN 'Mozilla/5.0 (iPhone; CPU iPhone OS 18_1 like Mac OS X) AppleWebKit/605.1.15 Mobile/15E148'
            ELSE 'Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 Chrome/131.0 Safari/537.36' END,
        'library', jsonb_build_object('name', 'gamify-js', 'version', '2.3.1'))
$$;

CREATE OR REPLACE FUNCTION bench.payload(name text, plan text, r float8) RETURNS jsonb
LANGUAGE sql IMMUTABLE AS $$
    SELECT CASE name
        WHEN 'page_view' THEN jsonb_build_object('plan', plan, 'path',
            (ARRAY['/', '/pricing', '/docs', '/lessons', '/lessons/' || floor(r * 60)::int,
                   '/blog', '/account', '/leaderboard'])[1 + floor(r * 797)::int % 8])
        WHEN 'click' THEN jsonb_build_object('plan', plan, 'path', '/lessons',
            'target', (ARRAY['start', 'next', 'share', 'upgrade'])[1 + floor(r * 4)::int])
        WHEN 'purchase' THEN jsonb_build_object('plan', plan, 'currency', 'EUR',
            'amount', (ARRAY[9, 29, 99])[1 + floor(r * 3)::int])
        WHEN 'lesson_started' THEN jsonb_build_object('plan', plan,
            'lesson', 'lesson-' || floor(r * 60)::int)
        WHEN 'lesson_completed' THEN jsonb_build_object('plan', plan,
            'lesson', 'lesson-' || floor(r * 60)::int, 'score', floor(r * 7919)::int % 101)
        WHEN 'signup' THEN jsonb_build_object('plan', plan,
            'source', (ARRAY['organic', 'ads', 'referral'])[1 + floor(r * 3)::int])
        ELSE jsonb_build_object('plan', plan)
    END
$$;

-- Payloads and contexts are looked up rather than built per row (building them was most of the
-- cost): 60 variants per event name and plan, 1000 contexts (user n has context n % 1000).
CREATE TABLE IF NOT EXISTS bench.payloads (
    name text, plan text, v integer, payload jsonb NOT NULL, PRIMARY KEY (name, plan, v));
CREATE TABLE IF NOT EXISTS bench.contexts (k integer PRIMARY KEY, context jsonb NOT NULL);

-- The parameters, partitions, users, hour weights and funnel sequences; returns the number of
-- sequence events.
CREATE OR REPLACE FUNCTION bench.setup(p_project uuid, p_secret_key uuid, p_public_key uuid,
                                       p_events bigint, p_users integer, p_days integer,
                                       p_end timestamptz) RETURNS bigint
LANGUAGE plpgsql AS $fn$
DECLARE
    range_start timestamptz := p_end - make_interval(days => p_days);
    month_start date;
    partition_name text;
    cum_shares float8[];
    old_users integer := floor(p_users * 0.3);
    sequences bigint;
    background bigint;
BEGIN
    IF EXISTS (SELECT FROM bench.params) THEN
        RAISE EXCEPTION 'bench.setup has already run in this database';
    END IF;
    INSERT INTO bench.params (project_id, secret_key_id, public_key_id, events, users, days, data_end)
    VALUES (p_project, p_secret_key, p_public_key, p_events, p_users, p_days, p_end);

    INSERT INTO bench.payloads
    SELECT name, plan, v, bench.payload(name, plan, (v + 0.5) / 60)
    FROM unnest(bench.names() || ARRAY['signup']) AS name, unnest(ARRAY['free', 'pro', 'team']) AS plan,
         generate_series(0, 59) AS v;
    INSERT INTO bench.contexts SELECT k, bench.context(k) FROM generate_series(0, 999) AS k;

    -- Monthly partitions, named and bounded as gamify_ensure_event_partitions makes them.
    month_start := date_trunc('month', range_start AT TIME ZONE 'UTC')::date;
    WHILE month_start <= (p_end AT TIME ZONE 'UTC')::date LOOP
        partition_name := format('events_%s', to_char(month_start, 'YYYY_MM'));
        IF to_regclass(partition_name) IS NULL THEN
            EXECUTE format('CREATE TABLE %I PARTITION OF events FOR VALUES FROM (%L) TO (%L)',
                           partition_name, month_start::timestamp AT TIME ZONE 'UTC',
                           (month_start + interval '1 month')::timestamp AT TIME ZONE 'UTC');
        END IF;
        month_start := (month_start + interval '1 month')::date;
    END LOOP;

    INSERT INTO end_users (id, project_id, external_id, metadata, created_at, updated_at)
    SELECT bench.user_uuid(n), p_project, 'user-' || n, jsonb_build_object('plan', bench.plan(n)),
           range_start, range_start
    FROM generate_series(1, p_users) AS n;

    -- Diurnal × weekly × growth, with ±10 % noise.
    INSERT INTO bench.hours (h, start, w)
    SELECT h, t,
           (0.2 + 0.8 * (0.5 - 0.5 * cos(2 * pi() * (extract(hour FROM t AT TIME ZONE 'UTC') - 4) / 24)))
           * CASE WHEN extract(isodow FROM t AT TIME ZONE 'UTC') >= 6 THEN 0.65 ELSE 1 END
           * (1 + 0.3 * h / (p_days * 24.0))
           * (0.9 + 0.2 * random())
    FROM generate_series(0, p_days * 24 - 1) AS h,
         LATERAL (SELECT range_start + make_interval(hours => h)) AS s(t);
    UPDATE bench.hours AS x SET cum = c.cum, joined = old_users + floor((p_users - old_users) * c.cum)
    FROM (SELECT h, sum(w) OVER (ORDER BY h) / sum(w) OVER () AS cum FROM bench.hours) AS c
    WHERE c.h = x.h;
    SELECT array_agg(c ORDER BY h) INTO cum_shares
    FROM (SELECT 0 AS h, 0::float8 AS c UNION ALL SELECT h + 1, cum FROM bench.hours) AS t;

    -- (OFFSET 0 keeps each level a subquery of its own: flattened, a column drawn by random()
    -- would be drawn anew wherever it is used.)
    -- The funnel: every user who joins in the range signs up (and is identified) in their joining
    -- hour; 60 % start a lesson within hours, 55 % of those complete one within a day or two,
    -- 30 % of those then buy within days.
    CREATE TEMP TABLE journeys ON COMMIT DROP AS
    SELECT n, s, l, c, CASE WHEN c IS NOT NULL AND random() < 0.3
                            THEN c - ln(1 - random()) * interval '48 hours' END AS p,
           floor(random() * 60)::int AS v
    FROM (SELECT n, s, l, CASE WHEN l IS NOT NULL AND random() < 0.55
                               THEN l - ln(1 - random()) * interval '30 hours' END AS c
          FROM (SELECT n, s, CASE WHEN random() < 0.6
                                  THEN s - ln(1 - random()) * interval '8 hours' END AS l
                FROM (SELECT n, range_start + make_interval(hours => greatest(
                                 width_bucket((n - old_users)::float8 / (p_users - old_users), cum_shares) - 1, 0))
                                + random() * interval '1 hour' AS s
                      FROM generate_series(old_users + 1, p_users) AS n
                      OFFSET 0) AS a
                OFFSET 0) AS b
          OFFSET 0) AS d;

    INSERT INTO events (id, project_id, message_id, event_type, user_id, anonymous_id, payload,
                        context, key_id, key_type, status, occurred_at, received_at, created_at,
                        processed_at)
    SELECT gen_random_uuid(), p_project, gen_random_uuid()::text, e.name, bench.user_uuid(j.n), NULL,
           coalesce(pl.payload, jsonb_build_object('plan', bench.plan(j.n), 'email', 'user-' || j.n || '@example.com')),
           cx.context, p_secret_key, 'secret', 'processed', e.at,
           e.at + random() * interval '2 seconds', e.at + interval '2.5 seconds',
           e.at + interval '2.7 seconds'
    FROM journeys AS j
    CROSS JOIN LATERAL (VALUES ('signup', j.s, j.v), ('$identify', j.s + interval '1 second', 0),
                               ('lesson_started', j.l, j.v), ('lesson_completed', j.c, 59 - j.v),
                               ('purchase', j.p, j.v))
        AS e(name, at, v)
    JOIN bench.contexts AS cx ON cx.k = j.n % 1000
    LEFT JOIN bench.payloads AS pl ON pl.name = e.name AND pl.plan = bench.plan(j.n) AND pl.v = e.v
    WHERE e.at IS NOT NULL AND e.at < p_end
    ORDER BY 5, e.at;
    GET DIAGNOSTICS sequences = ROW_COUNT;

    background := p_events - sequences;
    IF background < 0 THEN
        RAISE EXCEPTION 'the funnel sequences alone make % events, more than the % asked for: ask for more events or fewer users',
            sequences, p_events;
    END IF;
    UPDATE bench.hours AS x SET n = c.n
    FROM (SELECT h, (round(background * cum) - round(background * coalesce(lag(cum) OVER (ORDER BY h), 0)))::bigint AS n
          FROM bench.hours) AS c
    WHERE c.h = x.h;
    UPDATE bench.params SET sequence_events = sequences;
    RETURN sequences;
END
$fn$;

-- Day d's background events (its 24 hours); returns the number of rows.
CREATE OR REPLACE FUNCTION bench.fill_day(d integer) RETURNS bigint
LANGUAGE plpgsql AS $fn$
DECLARE
    p bench.params;
    rows bigint;
    began timestamptz := clock_timestamp();
BEGIN
    SELECT * INTO STRICT p FROM bench.params;
    PERFORM pg_advisory_xact_lock(hashtext('bench.fill_day'), d);
    IF EXISTS (SELECT FROM bench.days_done WHERE day = d) THEN
        RETURN 0;
    END IF;
    INSERT INTO events (id, project_id, message_id, event_type, user_id, anonymous_id, payload,
                        context, key_id, key_type, status, occurred_at, received_at, created_at,
                        processed_at)
    SELECT gen_random_uuid(), p.project_id, gen_random_uuid()::text, e.name, e.user_id,
           CASE WHEN e.anonymous THEN 'anon-' || (e.n::bigint * 7919 % greatest(p.users / 2, 1)) END,
           pl.payload, cx.context,
           CASE WHEN e.public THEN p.public_key_id ELSE p.secret_key_id END,
           CASE WHEN e.public THEN 'publishable' ELSE 'secret' END, 'processed', e.at,
           e.at + e.r * interval '2 seconds', e.at + interval '2.5 seconds',
           e.at + interval '2.7 seconds'
    FROM (SELECT *, CASE WHEN NOT anonymous THEN bench.user_uuid(n) END AS user_id,
                 -- A tenth of the page views, clicks and searches come from a browser SDK.
                 browser AND name IN ('page_view', 'click', 'search') AS public
          FROM (SELECT 1 + floor(h.joined * power(random(), 3))::integer AS n,
                       (bench.names())[width_bucket(random(), bench.name_thresholds())] AS name,
                       h.start + random() * interval '1 hour' AS at,
                       random() < 0.04 AS anonymous,
                       random() AS r,
                       random() < 0.1 AS browser
                FROM bench.hours AS h, generate_series(1, h.n) AS g
                WHERE h.h >= d * 24 AND h.h < (d + 1) * 24
                OFFSET 0) AS e0
          OFFSET 0) AS e
    JOIN bench.contexts AS cx ON cx.k = e.n % 1000
    JOIN bench.payloads AS pl ON pl.name = e.name AND pl.plan = bench.plan(e.n) AND pl.v = floor(e.r * 60)::int
    -- In index order: the (project, user, time) index is then written page after page.
    ORDER BY e.user_id, e.at;
    GET DIAGNOSTICS rows = ROW_COUNT;
    INSERT INTO bench.days_done VALUES (d, rows, extract(epoch FROM clock_timestamp() - began));
    RETURN rows;
END
$fn$;

-- The rollups the worker would have kept: bench.rollup_day(d) counts day d's events into
-- event_rollups, bench.first_seen() fills user_first_seen; bench.finish_part('first_seen' or a day
-- number) runs one of them, so that they can run side by side. Each replaces what it wrote before.
CREATE OR REPLACE FUNCTION bench.rollup_day(d integer) RETURNS void
LANGUAGE plpgsql AS $fn$
DECLARE
    p bench.params;
    day_start timestamptz;
BEGIN
    SELECT * INTO STRICT p FROM bench.params;
    day_start := p.data_end - make_interval(days => p.days - d);
    DELETE FROM event_rollups
    WHERE project_id = p.project_id AND hour >= day_start AND hour < day_start + interval '1 day';
    INSERT INTO event_rollups (project_id, event_type, hour, shard, events, users)
    SELECT e.project_id, e.event_type, date_trunc('hour', e.occurred_at, 'UTC'), 0, count(*),
           coalesce(hll_add_agg(hll_hash_text(CASE WHEN u.external_id IS NOT NULL THEN 'u:' || u.external_id
                                                   WHEN e.anonymous_id IS NOT NULL THEN 'a:' || e.anonymous_id END)),
                    hll_empty())
    FROM events AS e LEFT JOIN end_users AS u ON u.id = e.user_id AND u.project_id = e.project_id
    WHERE e.project_id = p.project_id AND e.status = 'processed' AND e.event_type <> '$identify'
      AND e.occurred_at >= day_start AND e.occurred_at < day_start + interval '1 day'
    GROUP BY 1, 2, 3;
END
$fn$;

CREATE OR REPLACE FUNCTION bench.first_seen() RETURNS void
LANGUAGE plpgsql AS $fn$
DECLARE
    p bench.params;
BEGIN
    SELECT * INTO STRICT p FROM bench.params;
    DELETE FROM user_first_seen WHERE project_id = p.project_id;
    INSERT INTO user_first_seen (project_id, who, first_seen_at)
    SELECT p.project_id, who, min(at)
    FROM (SELECT CASE WHEN u.external_id IS NOT NULL THEN 'u:' || u.external_id
                      WHEN e.anonymous_id IS NOT NULL THEN 'a:' || e.anonymous_id END AS who,
                 e.occurred_at AS at
          FROM events AS e LEFT JOIN end_users AS u ON u.id = e.user_id AND u.project_id = e.project_id
          WHERE e.project_id = p.project_id AND e.status = 'processed' AND e.event_type <> '$identify') AS w
    WHERE who IS NOT NULL
    GROUP BY who;
END
$fn$;

CREATE OR REPLACE FUNCTION bench.finish_part(part text) RETURNS text
LANGUAGE plpgsql AS $fn$
BEGIN
    IF part = 'first_seen' THEN
        PERFORM bench.first_seen();
    ELSE
        PERFORM bench.rollup_day(part::integer);
    END IF;
    RETURN part;
END
$fn$;
