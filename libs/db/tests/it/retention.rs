//! Retention drops whole months of events together with their dedup keys, and only through the
//! owner's function: the application role still cannot delete across tenants.

use chrono::Utc;
use gamify_db::sea_orm::{ConnectionTrait, Statement};
use uuid::Uuid;

use crate::rls::{connect, two_tenants};

pub(crate) async fn owner() -> gamify_db::Db {
    let url = std::env::var("DATABASE_OWNER_URL")
        .expect("DATABASE_OWNER_URL is not set: run the tests through ./scripts/test.sh");
    gamify_db::Db::connect(&url, gamify_db::PoolOptions::default())
        .await
        .expect("cannot connect to DATABASE_OWNER_URL")
}

#[tokio::test]
async fn old_months_and_their_dedup_keys_go_together() {
    let db = connect(2).await;
    let owner = owner().await;
    let (tenant, _) = two_tenants(&db).await;
    let (project, key) = (tenant.project, tenant.key);
    // A month long gone, as a partition of its own (the owner creates it, as migrations would).
    // Every lock a partition change needs, at once, as the partition functions take them, so
    // concurrent writers of other tests wait instead of deadlocking.
    owner
        .shared()
        .execute_unprepared(
            "BEGIN;
             SELECT gamify_lock_for_partition_change();
             CREATE TABLE IF NOT EXISTS events_1971_01 PARTITION OF events
             FOR VALUES FROM ('1971-01-01 00:00:00+00') TO ('1971-02-01 00:00:00+00');
             COMMIT;",
        )
        .await
        .unwrap();
    let insert = |occurred_at: chrono::DateTime<Utc>, message_id: &'static str| {
        let db = db.clone();
        async move {
            let txn = db.tenant(project).await.unwrap();
            let id = Uuid::now_v7();
            txn.execute(Statement::from_sql_and_values(
                txn.get_database_backend(),
                "INSERT INTO event_message_ids (project_id, key_type, message_id, event_id, occurred_at)
                 VALUES ($1, 'secret', $2, $3, $4)",
                [project.into(), message_id.into(), id.into(), occurred_at.into()],
            ))
            .await
            .unwrap();
            txn.execute(Statement::from_sql_and_values(
                txn.get_database_backend(),
                "INSERT INTO events (id, project_id, message_id, event_type, key_id, key_type,
                                     status, occurred_at, received_at)
                 VALUES ($1, $2, $3, 'x', $4, 'secret', 'processed', $5, now())",
                [
                    id.into(),
                    project.into(),
                    message_id.into(),
                    key.into(),
                    occurred_at.into(),
                ],
            ))
            .await
            .unwrap();
            txn.commit().await.unwrap();
        }
    };
    let ancient = "1971-01-15T00:00:00Z".parse().unwrap();
    let before_partitions = "1970-06-01T00:00:00Z".parse().unwrap();
    insert(ancient, "ancient").await;
    insert(before_partitions, "default-partition").await;
    insert(Utc::now(), "recent").await;

    // The application role cannot delete another tenant's dedup keys (nor, without a tenant, any).
    let deleted = db
        .shared()
        .execute(Statement::from_string(
            db.shared().get_database_backend(),
            "DELETE FROM event_message_ids",
        ))
        .await
        .unwrap();
    assert_eq!(deleted.rows_affected(), 0);

    // Only before 1972: other tests' old rows (2001) stay out of reach.
    let dropped = db
        .drop_events_before("1972-01-01T00:00:00Z".parse().unwrap())
        .await
        .unwrap();
    assert!(dropped >= 1);
    let count = |sql: &'static str| {
        let db = db.clone();
        async move {
            let txn = db.tenant(project).await.unwrap();
            let row = txn
                .query_one(Statement::from_string(txn.get_database_backend(), sql))
                .await
                .unwrap()
                .unwrap();
            row.try_get::<i64>("", "n").unwrap()
        }
    };
    assert_eq!(count("SELECT count(*) AS n FROM events").await, 1);
    assert_eq!(
        count("SELECT count(*) AS n FROM event_message_ids").await,
        1
    );
    let partition = owner
        .shared()
        .query_one(Statement::from_string(
            owner.shared().get_database_backend(),
            "SELECT to_regclass('events_1971_01') IS NULL AS gone",
        ))
        .await
        .unwrap()
        .unwrap();
    assert!(partition.try_get::<bool>("", "gone").unwrap());
}
