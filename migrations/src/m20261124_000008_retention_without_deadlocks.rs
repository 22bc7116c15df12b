use crate::SqlMigration;

/// Creating or dropping a partition took the referenced tables, then `events`: a writer holding
/// `events` and waiting for `end_users` closed a cycle (deadlock, found by the test suite). Writers
/// do not lock tables in one order, so no order is safe. Both partition functions now take every
/// lock a partition change needs at once, without waiting (NOWAIT), and on a conflict let go of
/// all of them and try again shortly: they never wait while holding a lock, so they cannot be part
/// of a deadlock. After about 10 s of conflicts they give up (SQLSTATE 55P03) and the worker's
/// daily upkeep tries again.
const UP: &str = r#"
CREATE FUNCTION gamify_lock_for_partition_change() RETURNS void
LANGUAGE plpgsql SET search_path = public, pg_temp AS $fn$
DECLARE
    attempt integer := 0;
BEGIN
    LOOP
        BEGIN
            LOCK TABLE projects, api_keys, end_users IN SHARE ROW EXCLUSIVE MODE NOWAIT;
            LOCK TABLE events IN ACCESS EXCLUSIVE MODE NOWAIT;
            RETURN;
        EXCEPTION WHEN lock_not_available THEN
            attempt := attempt + 1;
            IF attempt >= 200 THEN
                RAISE;
            END IF;
            PERFORM pg_sleep(0.05);
        END;
    END LOOP;
END
$fn$;
REVOKE ALL ON FUNCTION gamify_lock_for_partition_change() FROM PUBLIC;

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
    PERFORM gamify_lock_for_partition_change();
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

CREATE OR REPLACE FUNCTION gamify_drop_events_before(cutoff timestamptz) RETURNS integer
LANGUAGE plpgsql SECURITY DEFINER SET search_path = public, pg_temp AS $fn$
DECLARE
    month_cutoff timestamptz := date_trunc('month', cutoff AT TIME ZONE 'UTC') AT TIME ZONE 'UTC';
    partition record;
    tenant record;
    partition_end timestamptz;
    expired text[] := '{}';
BEGIN
    PERFORM pg_advisory_xact_lock(hashtext('gamify_ensure_event_partitions'));
    FOR partition IN
        SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
        WHERE i.inhparent = 'events'::regclass AND c.relname ~ '^events_[0-9]{4}_[0-9]{2}$'
    LOOP
        partition_end := (to_date(substr(partition.relname, 8), 'YYYY_MM') + interval '1 month')
            ::timestamp AT TIME ZONE 'UTC';
        IF partition_end <= month_cutoff THEN
            expired := expired || partition.relname::text;
        END IF;
    END LOOP;
    IF cardinality(expired) > 0 THEN
        PERFORM gamify_lock_for_partition_change();
        FOR i IN 1..cardinality(expired) LOOP
            EXECUTE format('DROP TABLE %I', expired[i]);
        END LOOP;
    END IF;
    -- Partitions are not reached through the parent's policies: the default one is cleaned directly.
    DELETE FROM events_default WHERE occurred_at < month_cutoff;
    FOR tenant IN SELECT id FROM projects LOOP
        PERFORM set_config('app.project_id', tenant.id::text, true);
        DELETE FROM event_message_ids WHERE occurred_at < month_cutoff;
    END LOOP;
    PERFORM set_config('app.project_id', '', true);
    RETURN cardinality(expired);
END
$fn$;
"#;

pub fn migration() -> SqlMigration {
    SqlMigration {
        name: "m20261124_000008_retention_without_deadlocks",
        up: UP,
        // Going down keeps the two partition functions in this form; the helper stays with them.
        down: "",
    }
}
