//! Every analytics query runs in a read-only tenant transaction whose statements Postgres cancels
//! after the deployment's `ANALYTICS_QUERY_TIMEOUT_MS`: a request that would scan too much is
//! answered 422 `query_too_expensive`, never left to hang or to hold a connection for minutes.

use gamify_db::sea_orm::sqlx;

use crate::{
    http::error::{Error, Result},
    state::AppState,
};

pub type Txn = sqlx::Transaction<'static, sqlx::Postgres>;

/// Opens the bounded transaction for `project_id`'s analytics.
pub async fn begin(state: &AppState, project_id: uuid::Uuid) -> Result<Txn> {
    state
        .db()
        .tenant_bounded(project_id, state.http_limits().analytics_query_timeout)
        .await
        .map_err(|err| query_error(state, err))
}

/// The answer for a failed analytics statement: a cancelled one is the caller's request being too
/// large, anything else a fault.
pub fn query_error(state: &AppState, err: sqlx::Error) -> Error {
    if gamify_db::is_statement_timeout(&err) {
        let limit = state.http_limits().analytics_query_timeout;
        return Error::QueryTooExpensive(format!(
            "the query needed longer than this deployment allows ({} ms); narrow the time range or the events it covers",
            limit.as_millis()
        ));
    }
    Error::from(err)
}

/// Who an event counts for, as the worker's rollups count them: its user, else its anonymous id
/// (events with neither count as events but for no one). As a uuid: the user's row id, or a hash
/// of the anonymous id, so that grouping and joining millions of rows compares 16 bytes, not text.
pub const WHO: &str = "coalesce(user_id, md5('a:' || anonymous_id)::uuid)";

/// The events analytics counts, as the rollups do: stored and processed, of the one project.
pub const COUNTED: &str = "project_id = $1 AND status = 'processed' AND event_type <> '$identify'";
