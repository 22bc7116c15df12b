//! Events carry no per-row foreign keys (migration 9); deleting a project or an end user must
//! still take its events along or unlink them, through row-level security, for that tenant only.
//! The same holds for the engine's per-event tables (migration 11).

use gamify_db::sea_orm::{ConnectionTrait, Statement};
use uuid::Uuid;

use crate::{
    retention::owner,
    rls::{Tenant, connect, two_tenants},
};

/// A user with one event and its dedup key, written in the tenant's scope; returns the user's id.
async fn user_with_event(db: &gamify_db::Db, tenant: &Tenant) -> Uuid {
    let user = Uuid::now_v7();
    let event = Uuid::now_v7();
    let txn = db.tenant(tenant.project).await.unwrap();
    for (sql, values) in [
        (
            "INSERT INTO end_users (id, project_id, external_id) VALUES ($1, $2, 'u1')",
            vec![user.into(), tenant.project.into()],
        ),
        (
            "INSERT INTO event_message_ids (project_id, key_type, message_id, event_id, occurred_at)
             VALUES ($1, 'secret', 'm1', $2, now())",
            vec![tenant.project.into(), event.into()],
        ),
        (
            "INSERT INTO events (id, project_id, message_id, event_type, user_id, key_id, key_type,
                                 status, occurred_at, received_at)
             VALUES ($1, $2, 'm1', 'x', $3, $4, 'secret', 'processed', now(), now())",
            vec![
                event.into(),
                tenant.project.into(),
                user.into(),
                tenant.key.into(),
            ],
        ),
    ] {
        txn.execute(Statement::from_sql_and_values(
            txn.get_database_backend(),
            sql,
            values,
        ))
        .await
        .unwrap();
    }
    txn.commit().await.unwrap();
    user
}

async fn counts(db: &gamify_db::Db, project: Uuid) -> (i64, i64, i64) {
    let txn = db.tenant(project).await.unwrap();
    let row = txn
        .query_one(Statement::from_string(
            txn.get_database_backend(),
            "SELECT (SELECT count(*) FROM events) AS events,
                    (SELECT count(*) FROM events WHERE user_id IS NOT NULL) AS linked,
                    (SELECT count(*) FROM event_message_ids) AS keys",
        ))
        .await
        .unwrap()
        .unwrap();
    (
        row.try_get("", "events").unwrap(),
        row.try_get("", "linked").unwrap(),
        row.try_get("", "keys").unwrap(),
    )
}

#[tokio::test]
async fn deleting_a_project_deletes_its_events_and_dedup_keys_only() {
    let db = connect(2).await;
    let owner = owner().await;
    let (gone, kept) = two_tenants(&db).await;
    user_with_event(&db, &gone).await;
    user_with_event(&db, &kept).await;
    assert_eq!(counts(&db, gone.project).await, (1, 1, 1));

    owner
        .shared()
        .execute(Statement::from_sql_and_values(
            owner.shared().get_database_backend(),
            "DELETE FROM projects WHERE id = $1",
            [gone.project.into()],
        ))
        .await
        .unwrap();

    assert_eq!(counts(&db, gone.project).await, (0, 0, 0));
    assert_eq!(counts(&db, kept.project).await, (1, 1, 1));
}

#[tokio::test]
async fn deleting_an_end_user_unlinks_its_events_and_keeps_the_callers_tenant() {
    let db = connect(2).await;
    let (tenant, other) = two_tenants(&db).await;
    let user = user_with_event(&db, &tenant).await;
    user_with_event(&db, &other).await;

    let txn = db.tenant(tenant.project).await.unwrap();
    let deleted = txn
        .execute(Statement::from_sql_and_values(
            txn.get_database_backend(),
            "DELETE FROM end_users WHERE id = $1",
            [user.into()],
        ))
        .await
        .unwrap();
    assert_eq!(deleted.rows_affected(), 1);
    // The trigger put the caller's tenant back: the same transaction still sees its events.
    let visible = txn
        .query_one(Statement::from_string(
            txn.get_database_backend(),
            "SELECT count(*) AS n, current_setting('app.project_id') AS tenant FROM events",
        ))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(visible.try_get::<i64>("", "n").unwrap(), 1);
    assert_eq!(
        visible.try_get::<String>("", "tenant").unwrap(),
        tenant.project.to_string()
    );
    txn.commit().await.unwrap();

    assert_eq!(counts(&db, tenant.project).await, (1, 0, 1));
    assert_eq!(counts(&db, other.project).await, (1, 1, 1));
}

/// One row in each table the engine writes per event (migration 11 gives them no row foreign
/// key), in the tenant's scope.
async fn engine_rows(db: &gamify_db::Db, tenant: &Tenant) {
    let txn = db.tenant(tenant.project).await.unwrap();
    for sql in [
        "INSERT INTO engine_user_states (project_id, generation, user_id, state) VALUES ($1, 1, 'u1', '{}')",
        "INSERT INTO engine_outcomes (project_id, event_id, seq, user_id, status, rules_version)
         VALUES ($1, gen_random_uuid(), 1, 'u1', 'evaluated', 1)",
        "INSERT INTO engine_message_ids (project_id, key_type, message_id, event_id)
         VALUES ($1, 'secret', 'm1', gen_random_uuid())",
        "INSERT INTO points_ledger (project_id, id, seq, generation, user_id, points_key, amount, reason)
         VALUES ($1, gen_random_uuid(), 1, 1, 'u1', 'xp', 10, 'lessons')",
        "INSERT INTO leaderboard_scores (project_id, generation, board, period_start, user_id, score, reached_at)
         VALUES ($1, 1, 'weekly', now(), 'u1', 10, now())",
        "INSERT INTO leaderboard_score_counts (project_id, generation, board, period_start, score, users)
         VALUES ($1, 1, 'weekly', now(), 10, 1)",
        // The worker's analytics rollups (migration 13), also without a row foreign key.
        "INSERT INTO event_rollups (project_id, event_type, hour, shard, events, users)
         VALUES ($1, 'click', date_trunc('hour', now()), 0, 1, hll_empty())",
        "INSERT INTO user_first_seen (project_id, who, first_seen_at) VALUES ($1, 'u:u1', now())",
    ] {
        txn.execute(Statement::from_sql_and_values(
            txn.get_database_backend(),
            sql,
            [tenant.project.into()],
        ))
        .await
        .unwrap();
    }
    txn.commit().await.unwrap();
}

async fn engine_counts(db: &gamify_db::Db, project: Uuid) -> Vec<i64> {
    let txn = db.tenant(project).await.unwrap();
    let mut counts = Vec::new();
    for table in [
        "engine_user_states",
        "engine_outcomes",
        "engine_message_ids",
        "points_ledger",
        "leaderboard_scores",
        "leaderboard_score_counts",
        "event_rollups",
        "user_first_seen",
    ] {
        let row = txn
            .query_one(Statement::from_string(
                txn.get_database_backend(),
                format!("SELECT count(*) AS n FROM {table}"),
            ))
            .await
            .unwrap()
            .unwrap();
        counts.push(row.try_get::<i64>("", "n").unwrap());
    }
    counts
}

#[tokio::test]
async fn deleting_a_project_deletes_its_engine_rows_only() {
    let db = connect(2).await;
    let owner = owner().await;
    let (gone, kept) = two_tenants(&db).await;
    engine_rows(&db, &gone).await;
    engine_rows(&db, &kept).await;
    assert_eq!(engine_counts(&db, gone.project).await, vec![1; 8]);

    owner
        .shared()
        .execute(Statement::from_sql_and_values(
            owner.shared().get_database_backend(),
            "DELETE FROM projects WHERE id = $1",
            [gone.project.into()],
        ))
        .await
        .unwrap();

    assert_eq!(engine_counts(&db, gone.project).await, vec![0; 8]);
    assert_eq!(engine_counts(&db, kept.project).await, vec![1; 8]);
}
