use crate::SqlMigration;

/// The gamification engine's tables. Rule versions are management data beside `api_keys` (no
/// row-level security, read by the engine across projects to find replays to run). Everything the
/// engine derives for a project's users — state, outcomes, its messageId dedup, the points ledger,
/// leaderboard scores, webhook deliveries — is tenant data under the same `tenant_isolation`
/// policy as `events`. `webhook_queue` holds only ids and due times, so the dispatcher can find due
/// work across projects without any role that bypasses row-level security.
const UP: &str = r#"
CREATE TABLE rule_versions (
    project_id   uuid NOT NULL REFERENCES projects (id) ON DELETE CASCADE,
    version      integer NOT NULL CHECK (version > 0),
    -- Whose users' state, ledger and scores this version carries on: a version applied from now
    -- on continues its predecessor's; a replayed version starts its own (its version number).
    generation   integer NOT NULL,
    document     jsonb NOT NULL,
    apply        text NOT NULL CHECK (apply IN ('from_now', 'replay')),
    state        text NOT NULL CHECK (state IN ('replaying', 'active', 'retired', 'failed')),
    events_done  bigint NOT NULL DEFAULT 0,
    events_total bigint NOT NULL DEFAULT 0,
    error        text,
    -- An engine replaying this version holds it until then, renewing as it goes.
    lease_until  timestamptz,
    created_at   timestamptz NOT NULL DEFAULT now(),
    activated_at timestamptz,
    retired_at   timestamptz,
    PRIMARY KEY (project_id, version)
);
CREATE UNIQUE INDEX rule_versions_one_active_idx ON rule_versions (project_id) WHERE state = 'active';
CREATE INDEX rule_versions_replaying_idx ON rule_versions (created_at) WHERE state = 'replaying';

-- One order for everything that changes a user's engine state (evaluated events and manual
-- adjustments): replay folds them in this order, which is the order live evaluation used.
CREATE SEQUENCE engine_seq;

CREATE TABLE engine_user_states (
    project_id    uuid NOT NULL,
    generation    integer NOT NULL,
    user_id       text NOT NULL,
    state         jsonb NOT NULL,
    last_seq      bigint NOT NULL DEFAULT 0,
    updated_at    timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (project_id, generation, user_id)
);

CREATE TABLE engine_outcomes (
    project_id    uuid NOT NULL,
    event_id      uuid NOT NULL,
    seq           bigint NOT NULL,
    user_id       text,
    status        text NOT NULL CHECK (status IN ('evaluated', 'not_counted')),
    reason        text,
    rules_version integer NOT NULL,
    awards        jsonb NOT NULL DEFAULT '[]'::jsonb,
    evaluated_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (project_id, event_id)
);
CREATE INDEX engine_outcomes_seq_idx ON engine_outcomes (project_id, seq) WHERE status = 'evaluated';

-- The engine's own dedup record, in the storage path's scope (project, key class, messageId).
CREATE TABLE engine_message_ids (
    project_id uuid NOT NULL,
    key_type   text NOT NULL CHECK (key_type IN ('publishable', 'secret')),
    message_id text NOT NULL,
    event_id   uuid NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (project_id, key_type, message_id)
);

CREATE TABLE points_ledger (
    project_id      uuid NOT NULL,
    id              uuid NOT NULL,
    seq             bigint NOT NULL,
    -- NULL for a manual adjustment, which every generation keeps.
    generation      integer,
    user_id         text NOT NULL,
    points_key      text NOT NULL,
    amount          bigint NOT NULL,
    reason          text NOT NULL,
    event_id        uuid,
    idempotency_key text,
    balance_after   bigint,
    created_at      timestamptz NOT NULL DEFAULT now(),
    -- The key is the order a user's ledger is read in (newest first, by sequence), so each row
    -- maintains one index, not an id index and a reading index.
    PRIMARY KEY (project_id, user_id, points_key, seq, id)
);
CREATE INDEX points_ledger_adjustments_idx ON points_ledger (project_id, seq) WHERE generation IS NULL;
CREATE UNIQUE INDEX points_ledger_idempotency_idx
    ON points_ledger (project_id, user_id, points_key, idempotency_key) WHERE idempotency_key IS NOT NULL;

CREATE TABLE leaderboard_scores (
    project_id    uuid NOT NULL,
    generation    integer NOT NULL,
    board         text NOT NULL,
    period_start  timestamptz NOT NULL,
    user_id       text NOT NULL,
    score         bigint NOT NULL,
    reached_at    timestamptz NOT NULL,
    PRIMARY KEY (project_id, generation, board, period_start, user_id)
);
CREATE INDEX leaderboard_scores_rank_idx
    ON leaderboard_scores (project_id, generation, board, period_start, score DESC, reached_at, user_id);

-- How many users hold each score on a board in a period, kept with the scores: a user's rank is
-- the users above their score (a sum over distinct scores, not a count over every user) plus those
-- who reached the same score first.
CREATE TABLE leaderboard_score_counts (
    project_id   uuid NOT NULL,
    generation   integer NOT NULL,
    board        text NOT NULL,
    period_start timestamptz NOT NULL,
    score        bigint NOT NULL,
    users        bigint NOT NULL,
    PRIMARY KEY (project_id, generation, board, period_start, score)
);

CREATE TABLE webhook_endpoints (
    project_id uuid NOT NULL REFERENCES projects (id) ON DELETE CASCADE,
    id         uuid NOT NULL,
    url        text NOT NULL,
    events     text[] NOT NULL,
    -- Needed in full to sign deliveries, so it cannot be stored as a hash.
    secret     text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    deleted_at timestamptz,
    PRIMARY KEY (project_id, id)
);

CREATE TABLE webhook_deliveries (
    project_id      uuid NOT NULL REFERENCES projects (id) ON DELETE CASCADE,
    id              text NOT NULL,
    endpoint_id     uuid NOT NULL,
    event_type      text NOT NULL,
    payload         jsonb NOT NULL,
    state           text NOT NULL DEFAULT 'pending' CHECK (state IN ('pending', 'delivered', 'failed')),
    attempts        integer NOT NULL DEFAULT 0,
    next_attempt_at timestamptz NOT NULL DEFAULT now(),
    created_at      timestamptz NOT NULL DEFAULT now(),
    delivered_at    timestamptz,
    PRIMARY KEY (project_id, id),
    FOREIGN KEY (project_id, endpoint_id) REFERENCES webhook_endpoints (project_id, id) ON DELETE CASCADE
);
CREATE INDEX webhook_deliveries_endpoint_idx ON webhook_deliveries (project_id, endpoint_id, created_at DESC);

CREATE TABLE webhook_attempts (
    project_id      uuid NOT NULL,
    delivery_id     text NOT NULL,
    attempt         integer NOT NULL,
    attempted_at    timestamptz NOT NULL,
    response_status integer,
    response_body   text,
    error           text,
    duration_ms     integer NOT NULL,
    PRIMARY KEY (project_id, delivery_id, attempt),
    FOREIGN KEY (project_id, delivery_id) REFERENCES webhook_deliveries (project_id, id) ON DELETE CASCADE
);

CREATE TABLE webhook_queue (
    project_id  uuid NOT NULL REFERENCES projects (id) ON DELETE CASCADE,
    delivery_id text NOT NULL,
    due_at      timestamptz NOT NULL,
    PRIMARY KEY (project_id, delivery_id)
);
CREATE INDEX webhook_queue_due_idx ON webhook_queue (due_at);

ALTER TABLE engine_user_states ENABLE ROW LEVEL SECURITY;
ALTER TABLE engine_user_states FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON engine_user_states
    USING (project_id = NULLIF(current_setting('app.project_id', true), '')::uuid)
    WITH CHECK (project_id = NULLIF(current_setting('app.project_id', true), '')::uuid);

ALTER TABLE engine_outcomes ENABLE ROW LEVEL SECURITY;
ALTER TABLE engine_outcomes FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON engine_outcomes
    USING (project_id = NULLIF(current_setting('app.project_id', true), '')::uuid)
    WITH CHECK (project_id = NULLIF(current_setting('app.project_id', true), '')::uuid);

ALTER TABLE engine_message_ids ENABLE ROW LEVEL SECURITY;
ALTER TABLE engine_message_ids FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON engine_message_ids
    USING (project_id = NULLIF(current_setting('app.project_id', true), '')::uuid)
    WITH CHECK (project_id = NULLIF(current_setting('app.project_id', true), '')::uuid);

ALTER TABLE points_ledger ENABLE ROW LEVEL SECURITY;
ALTER TABLE points_ledger FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON points_ledger
    USING (project_id = NULLIF(current_setting('app.project_id', true), '')::uuid)
    WITH CHECK (project_id = NULLIF(current_setting('app.project_id', true), '')::uuid);

ALTER TABLE leaderboard_scores ENABLE ROW LEVEL SECURITY;
ALTER TABLE leaderboard_scores FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON leaderboard_scores
    USING (project_id = NULLIF(current_setting('app.project_id', true), '')::uuid)
    WITH CHECK (project_id = NULLIF(current_setting('app.project_id', true), '')::uuid);

ALTER TABLE leaderboard_score_counts ENABLE ROW LEVEL SECURITY;
ALTER TABLE leaderboard_score_counts FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON leaderboard_score_counts
    USING (project_id = NULLIF(current_setting('app.project_id', true), '')::uuid)
    WITH CHECK (project_id = NULLIF(current_setting('app.project_id', true), '')::uuid);

ALTER TABLE webhook_endpoints ENABLE ROW LEVEL SECURITY;
ALTER TABLE webhook_endpoints FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON webhook_endpoints
    USING (project_id = NULLIF(current_setting('app.project_id', true), '')::uuid)
    WITH CHECK (project_id = NULLIF(current_setting('app.project_id', true), '')::uuid);

ALTER TABLE webhook_deliveries ENABLE ROW LEVEL SECURITY;
ALTER TABLE webhook_deliveries FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON webhook_deliveries
    USING (project_id = NULLIF(current_setting('app.project_id', true), '')::uuid)
    WITH CHECK (project_id = NULLIF(current_setting('app.project_id', true), '')::uuid);

ALTER TABLE webhook_attempts ENABLE ROW LEVEL SECURITY;
ALTER TABLE webhook_attempts FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON webhook_attempts
    USING (project_id = NULLIF(current_setting('app.project_id', true), '')::uuid)
    WITH CHECK (project_id = NULLIF(current_setting('app.project_id', true), '')::uuid);

CREATE FUNCTION gamify_delete_project_engine_rows() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = public, pg_temp AS $fn$
DECLARE
    acting text := current_setting('app.project_id', true);
BEGIN
    PERFORM set_config('app.project_id', OLD.id::text, true);
    DELETE FROM engine_user_states WHERE project_id = OLD.id;
    DELETE FROM engine_outcomes WHERE project_id = OLD.id;
    DELETE FROM engine_message_ids WHERE project_id = OLD.id;
    DELETE FROM points_ledger WHERE project_id = OLD.id;
    DELETE FROM leaderboard_scores WHERE project_id = OLD.id;
    DELETE FROM leaderboard_score_counts WHERE project_id = OLD.id;
    PERFORM set_config('app.project_id', coalesce(acting, ''), true);
    RETURN OLD;
END
$fn$;
REVOKE ALL ON FUNCTION gamify_delete_project_engine_rows() FROM PUBLIC;
CREATE TRIGGER gamify_project_engine_rows_deleted AFTER DELETE ON projects
    FOR EACH ROW EXECUTE FUNCTION gamify_delete_project_engine_rows();
"#;

const DOWN: &str = r#"
DROP TRIGGER IF EXISTS gamify_project_engine_rows_deleted ON projects;
DROP FUNCTION IF EXISTS gamify_delete_project_engine_rows();
DROP TABLE IF EXISTS webhook_queue;
DROP TABLE IF EXISTS webhook_attempts;
DROP TABLE IF EXISTS webhook_deliveries;
DROP TABLE IF EXISTS webhook_endpoints;
DROP TABLE IF EXISTS leaderboard_score_counts;
DROP TABLE IF EXISTS leaderboard_scores;
DROP TABLE IF EXISTS points_ledger;
DROP TABLE IF EXISTS engine_message_ids;
DROP TABLE IF EXISTS engine_outcomes;
DROP TABLE IF EXISTS engine_user_states;
DROP SEQUENCE IF EXISTS engine_seq;
DROP TABLE IF EXISTS rule_versions;
"#;

pub fn migration() -> SqlMigration {
    SqlMigration {
        name: "m20261204_000011_gamification_engine",
        up: UP,
        down: DOWN,
    }
}
