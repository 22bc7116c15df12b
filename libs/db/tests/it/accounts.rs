//! Row-level security on the accounts tables, as the application role: nothing is visible without
//! a scope, an organization's scope shows only that organization's rows, a secret's hash shows
//! only the row it names, and the audit log can be appended to but never changed.

use gamify_db::{
    AccountScope, Db,
    sea_orm::{ConnectionTrait, DatabaseTransaction, DbErr, Statement, Value as DbValue},
};
use uuid::Uuid;

use crate::rls::connect;

const ACCOUNT_TABLES: &[&str] = &[
    "users",
    "memberships",
    "invitations",
    "sessions",
    "org_tokens",
    "audit_log",
];

async fn exec(txn: &DatabaseTransaction, sql: &str, values: Vec<DbValue>) -> Result<u64, DbErr> {
    txn.execute(Statement::from_sql_and_values(
        txn.get_database_backend(),
        sql,
        values,
    ))
    .await
    .map(|r| r.rows_affected())
}

async fn count(txn: &DatabaseTransaction, table: &str) -> i64 {
    txn.query_one(Statement::from_string(
        txn.get_database_backend(),
        format!("SELECT count(*) FROM {table}"),
    ))
    .await
    .unwrap()
    .unwrap()
    .try_get_by_index::<i64>(0)
    .unwrap()
}

struct Org {
    id: Uuid,
    user: Uuid,
    token_hash: [u8; 32],
    session_hash: [u8; 32],
}

/// An organization with one member, a token, a session, an invitation and an audit entry, each
/// written under the scope that permits it.
async fn organization(db: &Db) -> Org {
    let id = Uuid::new_v4();
    let user = Uuid::new_v4();
    let token_hash: [u8; 32] = rand_bytes();
    let session_hash: [u8; 32] = rand_bytes();
    db.shared()
        .execute(Statement::from_sql_and_values(
            db.shared().get_database_backend(),
            "INSERT INTO organizations (id, name) VALUES ($1, 'rls org')",
            [id.into()],
        ))
        .await
        .unwrap();
    let txn = db
        .accounts(&AccountScope {
            organization: Some(id),
            user: Some(user),
            ..AccountScope::default()
        })
        .await
        .unwrap();
    exec(
        &txn,
        "INSERT INTO users (id, email, password_hash) VALUES ($1, $2, 'x')",
        vec![user.into(), format!("{user}@example.com").into()],
    )
    .await
    .unwrap();
    exec(
        &txn,
        "INSERT INTO memberships (organization_id, user_id, role) VALUES ($1, $2, 'owner')",
        vec![id.into(), user.into()],
    )
    .await
    .unwrap();
    exec(
        &txn,
        "INSERT INTO org_tokens (id, organization_id, name, prefix, token_hash, scopes) \
         VALUES ($1, $2, 't', 'gmt_x', $3, '{read}')",
        vec![Uuid::new_v4().into(), id.into(), token_hash.to_vec().into()],
    )
    .await
    .unwrap();
    exec(
        &txn,
        "INSERT INTO sessions (id, id_hash, user_id, data, expires_at) \
         VALUES ($1, $2, $3, '{}', now() + interval '1 hour')",
        vec![
            Uuid::new_v4().into(),
            session_hash.to_vec().into(),
            user.into(),
        ],
    )
    .await
    .unwrap();
    exec(
        &txn,
        "INSERT INTO invitations (id, organization_id, email, role, token_hash, expires_at) \
         VALUES ($1, $2, 'new@example.com', 'viewer', $3, now() + interval '1 day')",
        vec![
            Uuid::new_v4().into(),
            id.into(),
            rand_bytes::<32>().to_vec().into(),
        ],
    )
    .await
    .unwrap();
    exec(
        &txn,
        "INSERT INTO audit_log (id, organization_id, actor_type, actor_label, action, target_type) \
         VALUES ($1, $2, 'operator', 'operator', 'test', 'test')",
        vec![Uuid::new_v4().into(), id.into()],
    )
    .await
    .unwrap();
    txn.commit().await.unwrap();
    Org {
        id,
        user,
        token_hash,
        session_hash,
    }
}

fn rand_bytes<const N: usize>() -> [u8; N] {
    let mut bytes = [0u8; N];
    for chunk in bytes.chunks_mut(16) {
        let random = Uuid::new_v4();
        chunk.copy_from_slice(&random.as_bytes()[..chunk.len()]);
    }
    bytes
}

#[tokio::test]
async fn the_accounts_tables_are_forced_under_row_level_security() {
    let db = connect(2).await;
    for table in ACCOUNT_TABLES {
        let row = db
            .shared()
            .query_one(Statement::from_sql_and_values(
                db.shared().get_database_backend(),
                "SELECT c.relrowsecurity AND c.relforcerowsecurity AS forced FROM pg_class c WHERE c.relname = $1",
                [(*table).into()],
            ))
            .await
            .unwrap()
            .unwrap();
        assert!(
            row.try_get::<bool>("", "forced").unwrap(),
            "{table} is not forced under row-level security"
        );
    }
}

#[tokio::test]
async fn without_a_scope_no_account_row_is_visible() {
    let db = connect(2).await;
    organization(&db).await;
    let txn = db.accounts(&AccountScope::default()).await.unwrap();
    for table in ACCOUNT_TABLES {
        assert_eq!(count(&txn, table).await, 0, "{table} leaks without a scope");
    }
}

#[tokio::test]
async fn an_organization_scope_shows_only_that_organizations_rows() {
    let db = connect(2).await;
    let a = organization(&db).await;
    let b = organization(&db).await;
    let txn = db
        .accounts(&AccountScope::organization(a.id))
        .await
        .unwrap();
    for table in ["memberships", "invitations", "org_tokens", "audit_log"] {
        let foreign = txn
            .query_one(Statement::from_sql_and_values(
                txn.get_database_backend(),
                format!("SELECT count(*) FROM {table} WHERE organization_id <> $1"),
                [a.id.into()],
            ))
            .await
            .unwrap()
            .unwrap()
            .try_get_by_index::<i64>(0)
            .unwrap();
        assert_eq!(foreign, 0, "{table} shows another organization's rows");
        assert!(
            count(&txn, table).await >= 1,
            "{table} hides the organization's own rows"
        );
    }
    // Its members' user rows, not the other organization's.
    let users = txn
        .query_all(Statement::from_string(
            txn.get_database_backend(),
            "SELECT id FROM users",
        ))
        .await
        .unwrap();
    let ids: Vec<Uuid> = users.iter().map(|r| r.try_get("", "id").unwrap()).collect();
    assert_eq!(ids, vec![a.user]);
    // Sessions belong to people, not organizations.
    assert_eq!(count(&txn, "sessions").await, 0);
    // Writing into the other organization is refused.
    let err = exec(
        &txn,
        "INSERT INTO org_tokens (id, organization_id, name, prefix, token_hash, scopes) \
         VALUES ($1, $2, 't', 'gmt_y', $3, '{read}')",
        vec![
            Uuid::new_v4().into(),
            b.id.into(),
            rand_bytes::<32>().to_vec().into(),
        ],
    )
    .await
    .unwrap_err();
    assert!(err.to_string().contains("row-level security"), "{err}");
    drop(txn);
    let txn = db
        .accounts(&AccountScope::organization(a.id))
        .await
        .unwrap();
    let changed = exec(
        &txn,
        "UPDATE memberships SET role = 'viewer' WHERE organization_id = $1",
        vec![b.id.into()],
    )
    .await
    .unwrap();
    assert_eq!(changed, 0);
}

#[tokio::test]
async fn a_secrets_hash_shows_only_the_row_it_names() {
    let db = connect(2).await;
    let a = organization(&db).await;
    organization(&db).await;
    let txn = db
        .accounts(&AccountScope {
            token_hash: Some(a.token_hash),
            session_hash: Some(a.session_hash),
            ..AccountScope::default()
        })
        .await
        .unwrap();
    assert_eq!(count(&txn, "org_tokens").await, 1);
    assert_eq!(count(&txn, "sessions").await, 1);
    assert_eq!(count(&txn, "memberships").await, 0);
    assert_eq!(count(&txn, "users").await, 0);
    assert_eq!(count(&txn, "audit_log").await, 0);
}

#[tokio::test]
async fn the_audit_log_is_append_only_for_the_application() {
    let db = connect(2).await;
    let a = organization(&db).await;
    let txn = db
        .accounts(&AccountScope::organization(a.id))
        .await
        .unwrap();
    let err = exec(
        &txn,
        "UPDATE audit_log SET action = 'rewritten' WHERE organization_id = $1",
        vec![a.id.into()],
    )
    .await
    .unwrap_err();
    assert!(err.to_string().contains("permission denied"), "{err}");
    drop(txn);
    let txn = db
        .accounts(&AccountScope::organization(a.id))
        .await
        .unwrap();
    let err = exec(
        &txn,
        "DELETE FROM audit_log WHERE organization_id = $1",
        vec![a.id.into()],
    )
    .await
    .unwrap_err();
    assert!(err.to_string().contains("permission denied"), "{err}");
}

#[tokio::test]
async fn the_scope_does_not_outlive_its_transaction() {
    let db = connect(1).await;
    let a = organization(&db).await;
    let txn = db
        .accounts(&AccountScope::organization(a.id))
        .await
        .unwrap();
    assert!(count(&txn, "memberships").await >= 1);
    txn.commit().await.unwrap();
    // The same (only) pooled connection, a new transaction without a scope.
    let txn = db.accounts(&AccountScope::default()).await.unwrap();
    assert_eq!(count(&txn, "memberships").await, 0);
}
