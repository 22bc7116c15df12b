use crate::SqlMigration;

/// Creating a partition adds its foreign keys, which takes SHARE ROW EXCLUSIVE on the referenced
/// tables, after the function already holds locks on `events`; a writer that inserted an end user
/// and then waits for `events` closes the cycle (deadlock). The function now returns at once when
/// every partition exists (the daily case), and otherwise takes the referenced tables first, the
/// order writers use, so writers wait instead of deadlocking. CREATE OR REPLACE keeps the grants.
const UP: &str = r#"
CREATE OR REPLACE FUNCTION gamify_ensure_event_partitions(months_ahead integer) RETURNS void
LANGUAGE plpgsql SECURITY DEFINER SET search_path = public, pg_temp AS $fn$
DECLARE
    first_month date := date_trunc('month', now() AT TIME ZONE 'UTC')::date;
    month_start date;
    partition_name text;
    missing boolean := false;
BEGIN
    FOR i IN 0..months_ahead LOOP
        month_start := (first_month + make_interval(months => i))::date;
        IF to_regclass(format('events_%s', to_char(month_start, 'YYYY_MM'))) IS NULL THEN
            missing := true;
        END IF;
    END LOOP;
    IF NOT missing THEN
        RETURN;
    END IF;

    PERFORM pg_advisory_xact_lock(hashtext('gamify_ensure_event_partitions'));
    LOCK TABLE projects, api_keys, end_users IN SHARE ROW EXCLUSIVE MODE;
    FOR i IN 0..months_ahead LOOP
        month_start := (first_month + make_interval(months => i))::date;
        partition_name := format('events_%s', to_char(month_start, 'YYYY_MM'));
        IF to_regclass(partition_name) IS NULL THEN
            EXECUTE format(
                'CREATE TABLE %I PARTITION OF events FOR VALUES FROM (%L) TO (%L)',
                partition_name,
                month_start::timestamp AT TIME ZONE 'UTC',
                (month_start + interval '1 month')::timestamp AT TIME ZONE 'UTC'
            );
        END IF;
    END LOOP;
END
$fn$;
"#;

/// Going down leaves this (compatible) body in place rather than restoring one that can
/// deadlock.
const DOWN: &str = "";

pub fn migration() -> SqlMigration {
    SqlMigration {
        name: "m20261123_000004_partition_creation_without_deadlocks",
        up: UP,
        down: DOWN,
    }
}
