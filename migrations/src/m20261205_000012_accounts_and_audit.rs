use crate::SqlMigration;

/// People, their memberships in organizations, invitations, console sessions, organization
/// management tokens and the audit log. Every table is under row-level security, scoped by the
/// setting the acting request has earned:
/// - `app.organization_id`: the organization a caller was authorized for (memberships,
///   invitations, tokens, audit log, and the users who are its members);
/// - `app.user_id`: the signed-in person (their own user row, memberships and sessions);
/// - a secret's hash (`app.session_hash`, `app.token_hash`, `app.invitation_hash`) or the email
///   being signed in with (`app.sign_in_email`): the one row that secret or address names, so a
///   lookup by secret needs no role that bypasses row-level security and sees nothing else.
///
/// Secrets are stored only as SHA-256 hashes (sessions, tokens, invitations) or Argon2id hashes
/// (passwords). The audit log is append-only: the application role may read and insert, never
/// update or delete.
const UP: &str = r#"
CREATE TABLE users (
    id            uuid PRIMARY KEY,
    -- Lower-cased at the boundary; unique as written.
    email         text NOT NULL UNIQUE CHECK (char_length(email) BETWEEN 3 AND 254 AND email = lower(email)),
    name          text CHECK (char_length(name) BETWEEN 1 AND 255),
    password_hash text NOT NULL,
    created_at    timestamptz NOT NULL DEFAULT now(),
    updated_at    timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE memberships (
    organization_id uuid NOT NULL REFERENCES organizations (id) ON DELETE CASCADE,
    user_id         uuid NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    role            text NOT NULL CHECK (role IN ('owner', 'admin', 'developer', 'viewer')),
    created_at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (organization_id, user_id)
);
CREATE INDEX memberships_user_idx ON memberships (user_id);

CREATE TABLE invitations (
    id              uuid PRIMARY KEY,
    organization_id uuid NOT NULL REFERENCES organizations (id) ON DELETE CASCADE,
    email           text NOT NULL CHECK (email = lower(email)),
    role            text NOT NULL CHECK (role IN ('owner', 'admin', 'developer', 'viewer')),
    token_hash      bytea NOT NULL UNIQUE,
    invited_by      uuid REFERENCES users (id) ON DELETE SET NULL,
    created_at      timestamptz NOT NULL DEFAULT now(),
    expires_at      timestamptz NOT NULL,
    accepted_at     timestamptz,
    revoked_at      timestamptz
);
CREATE INDEX invitations_organization_idx ON invitations (organization_id, created_at);

CREATE TABLE sessions (
    -- The public handle of a session (listing, revoking one); the cookie's id is only hashed.
    id           uuid PRIMARY KEY,
    id_hash      bytea NOT NULL UNIQUE,
    user_id      uuid NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    data         jsonb NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now(),
    last_seen_at timestamptz NOT NULL DEFAULT now(),
    expires_at   timestamptz NOT NULL
);
CREATE INDEX sessions_user_idx ON sessions (user_id);
CREATE INDEX sessions_expires_idx ON sessions (expires_at);

CREATE TABLE org_tokens (
    id              uuid PRIMARY KEY,
    organization_id uuid NOT NULL REFERENCES organizations (id) ON DELETE CASCADE,
    name            text NOT NULL CHECK (char_length(name) BETWEEN 1 AND 255),
    prefix          text NOT NULL,
    token_hash      bytea NOT NULL UNIQUE,
    scopes          text[] NOT NULL,
    created_by      uuid REFERENCES users (id) ON DELETE SET NULL,
    created_at      timestamptz NOT NULL DEFAULT now(),
    last_used_at    timestamptz,
    expires_at      timestamptz,
    revoked_at      timestamptz
);
CREATE INDEX org_tokens_organization_idx ON org_tokens (organization_id, created_at);

CREATE TABLE audit_log (
    id              uuid PRIMARY KEY,
    organization_id uuid NOT NULL REFERENCES organizations (id) ON DELETE CASCADE,
    at              timestamptz NOT NULL DEFAULT now(),
    actor_type      text NOT NULL CHECK (actor_type IN ('user', 'token', 'operator', 'anonymous')),
    actor_id        uuid,
    actor_label     text NOT NULL,
    action          text NOT NULL,
    target_type     text NOT NULL,
    target_id       text,
    details         jsonb NOT NULL DEFAULT '{}',
    ip              inet
);
-- Newest first, paged by (at, id).
CREATE INDEX audit_log_organization_idx ON audit_log (organization_id, at DESC, id DESC);

ALTER TABLE users ENABLE ROW LEVEL SECURITY;
ALTER TABLE users FORCE ROW LEVEL SECURITY;
CREATE POLICY account_scope ON users
    USING (
        id = NULLIF(current_setting('app.user_id', true), '')::uuid
        OR email = NULLIF(current_setting('app.sign_in_email', true), '')
        OR id IN (SELECT m.user_id FROM memberships m
                  WHERE m.organization_id = NULLIF(current_setting('app.organization_id', true), '')::uuid))
    WITH CHECK (id = NULLIF(current_setting('app.user_id', true), '')::uuid);

ALTER TABLE memberships ENABLE ROW LEVEL SECURITY;
ALTER TABLE memberships FORCE ROW LEVEL SECURITY;
CREATE POLICY account_scope ON memberships
    USING (
        organization_id = NULLIF(current_setting('app.organization_id', true), '')::uuid
        OR user_id = NULLIF(current_setting('app.user_id', true), '')::uuid)
    WITH CHECK (organization_id = NULLIF(current_setting('app.organization_id', true), '')::uuid);

ALTER TABLE invitations ENABLE ROW LEVEL SECURITY;
ALTER TABLE invitations FORCE ROW LEVEL SECURITY;
CREATE POLICY account_scope ON invitations
    USING (
        organization_id = NULLIF(current_setting('app.organization_id', true), '')::uuid
        OR token_hash = decode(NULLIF(current_setting('app.invitation_hash', true), ''), 'hex'))
    WITH CHECK (organization_id = NULLIF(current_setting('app.organization_id', true), '')::uuid);

ALTER TABLE sessions ENABLE ROW LEVEL SECURITY;
ALTER TABLE sessions FORCE ROW LEVEL SECURITY;
CREATE POLICY account_scope ON sessions
    USING (
        id_hash = decode(NULLIF(current_setting('app.session_hash', true), ''), 'hex')
        OR user_id = NULLIF(current_setting('app.user_id', true), '')::uuid)
    WITH CHECK (user_id = NULLIF(current_setting('app.user_id', true), '')::uuid);

ALTER TABLE org_tokens ENABLE ROW LEVEL SECURITY;
ALTER TABLE org_tokens FORCE ROW LEVEL SECURITY;
CREATE POLICY account_scope ON org_tokens
    USING (
        organization_id = NULLIF(current_setting('app.organization_id', true), '')::uuid
        OR token_hash = decode(NULLIF(current_setting('app.token_hash', true), ''), 'hex'))
    WITH CHECK (
        organization_id = NULLIF(current_setting('app.organization_id', true), '')::uuid
        OR token_hash = decode(NULLIF(current_setting('app.token_hash', true), ''), 'hex'));

ALTER TABLE audit_log ENABLE ROW LEVEL SECURITY;
ALTER TABLE audit_log FORCE ROW LEVEL SECURITY;
CREATE POLICY account_scope ON audit_log
    USING (organization_id = NULLIF(current_setting('app.organization_id', true), '')::uuid)
    WITH CHECK (organization_id = NULLIF(current_setting('app.organization_id', true), '')::uuid);
"#;

const DOWN: &str = r#"
DROP TABLE audit_log;
DROP TABLE org_tokens;
DROP TABLE sessions;
DROP TABLE invitations;
DROP TABLE memberships;
DROP TABLE users;
"#;

pub fn migration() -> SqlMigration {
    SqlMigration {
        name: "m20261205_000012_accounts_and_audit",
        up: UP,
        down: DOWN,
    }
}
