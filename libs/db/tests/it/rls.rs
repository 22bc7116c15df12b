use gamify_db::{
    Db, PoolOptions,
    sea_orm::{ConnectionTrait, DbErr, Statement, Value as DbValue},
};
use uuid::Uuid;

pub(crate) async fn connect(max_connections: u32) -> Db {
    let url = std::env::var("DATABASE_URL")
        .expect("DATABASE_URL is not set: run the tests through ./scripts/test.sh");
    let options = PoolOptions {
        max_connections,
        ..PoolOptions::default()
    };
    Db::connect(&url, options)
        .await
        .expect("cannot connect to DATABASE_URL")
}

async fn exec(db: &impl ConnectionTrait, sql: &str, values: Vec<DbValue>) -> Result<u64, DbErr> {
    db.execute(Statement::from_sql_and_values(
        db.get_database_backend(),
        sql,
        values,
    ))
    .await
    .map(|r| r.rows_affected())
}

async fn count(db: &impl ConnectionTrait, sql: &str, values: Vec<DbValue>) -> i64 {
    db.query_one(Statement::from_sql_and_values(
        db.get_database_backend(),
        sql,
        values,
    ))
    .await
    .unwrap()
    .unwrap()
    .try_get_by_index::<i64>(0)
    .unwrap()
}

fn is_rls_violation(err: &DbErr) -> bool {
    err.to_string().contains("row-level security")
}

pub(crate) struct Tenant {
    pub(crate) project: Uuid,
    pub(crate) key: Uuid,
}

/// A project with one API key, created through the tables without row-level security.
async fn tenant(db: &Db, organization: Uuid) -> Tenant {
    let project = Uuid::new_v4();
    let key = Uuid::new_v4();
    exec(
        db.shared(),
        "INSERT INTO projects (id, organization_id, name) VALUES ($1, $2, $3)",
        vec![
            project.into(),
            organization.into(),
            project.to_string().into(),
        ],
    )
    .await
    .unwrap();
    exec(
        db.shared(),
        "INSERT INTO api_keys (id, project_id, name, key_hash, prefix, type)
         VALUES ($1, $2, 'k', $3, 'sk_live_0000…', 'secret')",
        vec![
            key.into(),
            project.into(),
            format!("{:0>64}", key.simple()).into(),
        ],
    )
    .await
    .unwrap();
    Tenant { project, key }
}

pub(crate) async fn two_tenants(db: &Db) -> (Tenant, Tenant) {
    let organization = Uuid::new_v4();
    exec(
        db.shared(),
        "INSERT INTO organizations (id, name) VALUES ($1, 'rls test')",
        vec![organization.into()],
    )
    .await
    .unwrap();
    (
        tenant(db, organization).await,
        tenant(db, organization).await,
    )
}

const INSERT_USER: &str =
    "INSERT INTO end_users (id, project_id, external_id) VALUES (gen_random_uuid(), $1, $2)";
const INSERT_EVENT: &str = "INSERT INTO events (id, project_id, message_id, event_type, key_id, key_type, status, occurred_at, received_at)
     VALUES (gen_random_uuid(), $1, $2, 'page_view', $3, 'secret', 'processed', now(), now())";

/// Gives each tenant a user and an event, each written inside its own tenant scope.
async fn seed(db: &Db, tenant: &Tenant) {
    let txn = db.tenant(tenant.project).await.unwrap();
    exec(
        &*txn,
        INSERT_USER,
        vec![tenant.project.into(), "user_1".into()],
    )
    .await
    .unwrap();
    exec(
        &*txn,
        INSERT_EVENT,
        vec![tenant.project.into(), "m1".into(), tenant.key.into()],
    )
    .await
    .unwrap();
    txn.commit().await.unwrap();
}

#[tokio::test]
async fn application_role_cannot_bypass_row_level_security() {
    let db = connect(2).await;
    let row = db
        .shared()
        .query_one(Statement::from_string(
            db.shared().get_database_backend(),
            "SELECT r.rolsuper, r.rolbypassrls, r.rolcreaterole,
                    (SELECT tableowner FROM pg_tables WHERE tablename = 'events') <> current_user AS not_owner
             FROM pg_roles r WHERE r.rolname = current_user",
        ))
        .await
        .unwrap()
        .unwrap();
    assert!(!row.try_get::<bool>("", "rolsuper").unwrap());
    assert!(!row.try_get::<bool>("", "rolbypassrls").unwrap());
    assert!(!row.try_get::<bool>("", "rolcreaterole").unwrap());
    assert!(row.try_get::<bool>("", "not_owner").unwrap());

    // DML only: the schema is not the application's to change.
    let err = exec(
        db.shared(),
        "ALTER TABLE events DISABLE ROW LEVEL SECURITY",
        vec![],
    )
    .await
    .unwrap_err();
    assert!(err.to_string().contains("must be owner"), "{err}");
    let err = exec(db.shared(), "CREATE TABLE sneaky (id int)", vec![])
        .await
        .unwrap_err();
    assert!(err.to_string().contains("permission denied"), "{err}");
}

#[tokio::test]
async fn without_a_tenant_nothing_is_visible_and_inserts_are_refused() {
    let db = connect(2).await;
    let (a, b) = two_tenants(&db).await;
    seed(&db, &a).await;
    seed(&db, &b).await;

    for table in ["end_users", "events", "event_message_ids"] {
        let visible = count(
            db.shared(),
            &format!("SELECT count(*) FROM {table}"),
            vec![],
        )
        .await;
        assert_eq!(visible, 0, "{table} shows rows without a tenant");
    }
    let err = exec(
        db.shared(),
        INSERT_USER,
        vec![a.project.into(), "user_2".into()],
    )
    .await
    .unwrap_err();
    assert!(is_rls_violation(&err), "{err}");
    let err = exec(
        db.shared(),
        INSERT_EVENT,
        vec![a.project.into(), "m2".into(), a.key.into()],
    )
    .await
    .unwrap_err();
    assert!(is_rls_violation(&err), "{err}");
}

#[tokio::test]
async fn a_tenant_sees_only_its_own_rows() {
    let db = connect(2).await;
    let (a, b) = two_tenants(&db).await;
    seed(&db, &a).await;
    seed(&db, &b).await;

    for tenant in [&a, &b] {
        let txn = db.tenant(tenant.project).await.unwrap();
        for table in ["end_users", "events"] {
            let mine = count(&*txn, &format!("SELECT count(*) FROM {table}"), vec![]).await;
            let foreign = count(
                &*txn,
                &format!("SELECT count(*) FROM {table} WHERE project_id <> $1"),
                vec![tenant.project.into()],
            )
            .await;
            assert_eq!((mine, foreign), (1, 0), "{table}");
        }
        // Updates and deletes cannot reach the other tenant's rows either.
        let other = if tenant.project == a.project { &b } else { &a };
        let touched = exec(
            &*txn,
            "UPDATE end_users SET metadata = '{\"x\":1}' WHERE project_id = $1",
            vec![other.project.into()],
        )
        .await
        .unwrap();
        assert_eq!(touched, 0);
        let deleted = exec(
            &*txn,
            "DELETE FROM events WHERE project_id = $1",
            vec![other.project.into()],
        )
        .await
        .unwrap();
        assert_eq!(deleted, 0);
        txn.commit().await.unwrap();
    }
}

#[tokio::test]
async fn writing_another_tenants_rows_is_refused_by_postgres() {
    let db = connect(2).await;
    let (a, b) = two_tenants(&db).await;
    seed(&db, &a).await;

    let txn = db.tenant(a.project).await.unwrap();
    let err = exec(
        &*txn,
        INSERT_USER,
        vec![b.project.into(), "intruder".into()],
    )
    .await
    .unwrap_err();
    assert!(is_rls_violation(&err), "{err}");
    drop(txn);

    let txn = db.tenant(a.project).await.unwrap();
    let err = exec(
        &*txn,
        INSERT_EVENT,
        vec![b.project.into(), "m9".into(), b.key.into()],
    )
    .await
    .unwrap_err();
    assert!(is_rls_violation(&err), "{err}");
    drop(txn);

    // Moving one's own row to another tenant is refused by WITH CHECK.
    let txn = db.tenant(a.project).await.unwrap();
    let err = exec(
        &*txn,
        "UPDATE end_users SET project_id = $1",
        vec![b.project.into()],
    )
    .await
    .unwrap_err();
    assert!(is_rls_violation(&err), "{err}");
}

#[tokio::test]
async fn the_tenant_setting_does_not_leak_to_the_next_transaction_on_a_pooled_connection() {
    // One connection, so the next query certainly reuses it.
    let db = connect(1).await;
    let (a, _) = two_tenants(&db).await;
    seed(&db, &a).await;

    let txn = db.tenant(a.project).await.unwrap();
    assert_eq!(
        count(&*txn, "SELECT count(*) FROM end_users", vec![]).await,
        1
    );
    txn.commit().await.unwrap();

    let setting = db
        .shared()
        .query_one(Statement::from_string(
            db.shared().get_database_backend(),
            "SELECT current_setting('app.project_id', true) AS setting, pg_backend_pid() AS pid",
        ))
        .await
        .unwrap()
        .unwrap();
    let value: Option<String> = setting.try_get("", "setting").unwrap();
    assert!(value.unwrap_or_default().is_empty());
    assert_eq!(
        count(db.shared(), "SELECT count(*) FROM end_users", vec![]).await,
        0
    );

    // Also after a rollback.
    let txn = db.tenant(a.project).await.unwrap();
    drop(txn);
    assert_eq!(
        count(db.shared(), "SELECT count(*) FROM events", vec![]).await,
        0
    );
}

#[tokio::test]
async fn partitions_cannot_be_read_directly() {
    let db = connect(1).await;
    let partition = db
        .shared()
        .query_one(Statement::from_string(
            db.shared().get_database_backend(),
            "SELECT format('events_%s', to_char(now() AT TIME ZONE 'UTC', 'YYYY_MM')) AS name",
        ))
        .await
        .unwrap()
        .unwrap()
        .try_get::<String>("", "name")
        .unwrap();
    for table in [partition.as_str(), "events_default"] {
        let err = exec(db.shared(), &format!("SELECT * FROM {table}"), vec![])
            .await
            .unwrap_err();
        assert!(
            err.to_string().contains("permission denied"),
            "{table}: {err}"
        );
    }
}

#[tokio::test]
async fn events_land_in_monthly_partitions() {
    let db = connect(1).await;
    let (a, _) = two_tenants(&db).await;
    seed(&db, &a).await;
    let txn = db.tenant(a.project).await.unwrap();
    // An event from long ago goes to the default partition instead of failing.
    exec(
        &*txn,
        "INSERT INTO events (id, project_id, message_id, event_type, key_id, key_type, status, occurred_at, received_at)
         VALUES (gen_random_uuid(), $1, 'old', 'page_view', $2, 'secret', 'processed', '2001-01-01T00:00:00Z', now())",
        vec![a.project.into(), a.key.into()],
    )
    .await
    .unwrap();
    let row = txn
        .query_one(Statement::from_string(
            txn.get_database_backend(),
            "SELECT
               (SELECT tableoid::regclass::text FROM events WHERE message_id = 'm1') AS current,
               (SELECT tableoid::regclass::text FROM events WHERE message_id = 'old') AS old,
               format('events_%s', to_char(now() AT TIME ZONE 'UTC', 'YYYY_MM')) AS expected",
        ))
        .await
        .unwrap()
        .unwrap();
    let current: String = row.try_get("", "current").unwrap();
    let expected: String = row.try_get("", "expected").unwrap();
    let old: String = row.try_get("", "old").unwrap();
    assert_eq!(current, expected);
    assert_eq!(old, "events_default");
}

#[tokio::test]
async fn the_application_role_creates_partitions_only_through_the_function() {
    let db = connect(4).await;
    let (a, _) = two_tenants(&db).await;
    // Writers keep inserting users and events while partitions are created: neither side may
    // deadlock or fail.
    let writer_db = db.clone();
    let project = a.project;
    let key = a.key;
    let writer = tokio::spawn(async move {
        for i in 0..40 {
            let txn = writer_db.tenant(project).await.unwrap();
            exec(
                &*txn,
                INSERT_USER,
                vec![project.into(), format!("w{i}").into()],
            )
            .await
            .unwrap();
            exec(
                &*txn,
                INSERT_EVENT,
                vec![project.into(), format!("w{i}").into(), key.into()],
            )
            .await
            .unwrap();
            txn.commit().await.unwrap();
        }
    });
    for months_ahead in [6, 7, 8, 9] {
        db.ensure_event_partitions(months_ahead).await.unwrap();
    }
    writer.await.unwrap();

    let name = db
        .shared()
        .query_one(Statement::from_string(
            db.shared().get_database_backend(),
            "SELECT to_regclass(format('events_%s', to_char((now() AT TIME ZONE 'UTC') + interval '9 months', 'YYYY_MM')))::text AS name",
        ))
        .await
        .unwrap()
        .unwrap()
        .try_get::<Option<String>>("", "name")
        .unwrap();
    assert!(
        name.is_some(),
        "the partition nine months ahead was not created"
    );
    // Idempotent.
    db.ensure_event_partitions(9).await.unwrap();
}

/// Every application connection carries statement and idle-in-transaction timeouts, so no query
/// and no forgotten transaction can hang a caller or hold locks for good.
#[tokio::test]
async fn application_connections_time_out_statements_and_idle_transactions() {
    let db = connect(1).await;
    let conn = db.shared();
    let setting = |name: &'static str| async move {
        conn.query_one(Statement::from_string(
            conn.get_database_backend(),
            format!("SELECT current_setting('{name}') AS value"),
        ))
        .await
        .unwrap()
        .unwrap()
        .try_get::<String>("", "value")
        .unwrap()
    };
    assert_eq!(setting("statement_timeout").await, "30s");
    assert_eq!(setting("idle_in_transaction_session_timeout").await, "1min");
}

/// The gamification engine's tenant tables: every one forced under the tenant policy.
const ENGINE_TENANT_TABLES: &[&str] = &[
    "engine_user_states",
    "engine_outcomes",
    "engine_message_ids",
    "points_ledger",
    "leaderboard_scores",
    "leaderboard_score_counts",
    "webhook_endpoints",
    "webhook_deliveries",
    "webhook_attempts",
    "event_rollups",
    "user_first_seen",
];

#[tokio::test]
async fn the_engines_tables_are_under_the_tenant_policy() {
    let db = connect(2).await;
    for table in ENGINE_TENANT_TABLES {
        let forced = count(
            db.shared(),
            "SELECT count(*) FROM pg_class c JOIN pg_policy p ON p.polrelid = c.oid
             WHERE c.relname = $1 AND c.relrowsecurity AND c.relforcerowsecurity
               AND p.polname = 'tenant_isolation'",
            vec![(*table).into()],
        )
        .await;
        assert_eq!(forced, 1, "{table} is not under the tenant policy");
    }
}

#[tokio::test]
async fn a_tenant_sees_and_writes_only_its_own_ledger_and_scores() {
    let db = connect(2).await;
    let (a, b) = two_tenants(&db).await;
    const LEDGER: &str = "INSERT INTO points_ledger (project_id, id, seq, generation, user_id, points_key, amount, reason)
                          VALUES ($1, $2, 1, 1, 'u', 'xp', 10, 'test')";
    const SCORE: &str = "INSERT INTO leaderboard_scores (project_id, generation, board, period_start, user_id, score, reached_at)
                         VALUES ($1, 1, 'weekly', now(), 'u', 10, now())";
    let txn = db.tenant(a.project).await.unwrap();
    exec(&*txn, LEDGER, vec![a.project.into(), Uuid::now_v7().into()])
        .await
        .unwrap();
    exec(&*txn, SCORE, vec![a.project.into()]).await.unwrap();
    txn.commit().await.unwrap();

    let txn = db.tenant(b.project).await.unwrap();
    assert_eq!(
        count(&*txn, "SELECT count(*) FROM points_ledger", vec![]).await,
        0
    );
    assert_eq!(
        count(&*txn, "SELECT count(*) FROM leaderboard_scores", vec![]).await,
        0
    );
    let err = exec(&*txn, LEDGER, vec![a.project.into(), Uuid::now_v7().into()])
        .await
        .unwrap_err();
    assert!(is_rls_violation(&err), "{err}");
    drop(txn);

    let txn = db.tenant(a.project).await.unwrap();
    assert_eq!(
        count(&*txn, "SELECT count(*) FROM points_ledger", vec![]).await,
        1
    );
    assert_eq!(
        count(&*txn, "SELECT count(*) FROM leaderboard_scores", vec![]).await,
        1
    );
}
