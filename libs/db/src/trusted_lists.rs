//! The trusted-event lists a project replaced. A change of a project's list takes effect on every
//! gateway only after its announcement reached them all; until then a gateway may still apply the
//! previous version. Each replaced version is kept with the instant from which none does
//! (`superseded_at`), so the worker can judge an event by the version the gateway applied and tell
//! whether that version was still in force when the event was received.

use chrono::{DateTime, Utc};
use gamify_common::events::NameList;
use sea_orm::{ConnectionTrait, DbBackend, Statement};
use uuid::Uuid;

use crate::{Db, Result};

#[derive(Debug, Clone, PartialEq)]
pub struct SupersededList {
    pub project_id: Uuid,
    pub version: i32,
    pub trusted_events: NameList,
    /// No gateway applies this version to an event received from this instant on.
    pub superseded_at: DateTime<Utc>,
}

/// Records that `version` of the project's list, `trusted_events`, is replaced: no gateway applies
/// it from `until` on. Part of the transaction that changes the project.
pub async fn supersede(
    conn: &impl ConnectionTrait,
    project_id: Uuid,
    version: i32,
    trusted_events: &serde_json::Value,
    until: DateTime<Utc>,
) -> Result<()> {
    conn.execute(Statement::from_sql_and_values(
        DbBackend::Postgres,
        "INSERT INTO superseded_trusted_events (project_id, version, trusted_events, superseded_at)
         VALUES ($1, $2, $3, $4)
         ON CONFLICT (project_id, version) DO UPDATE
         SET superseded_at = LEAST(superseded_trusted_events.superseded_at, EXCLUDED.superseded_at)",
        [
            project_id.into(),
            version.into(),
            trusted_events.clone().into(),
            until.into(),
        ],
    ))
    .await?;
    Ok(())
}

impl Db {
    /// Brings `superseded_at` of a replaced version forward to `to`, once every gateway confirmed
    /// it applies the newer list (it was set to a provisional, later bound). Never moves it later.
    pub async fn settle_superseded(
        &self,
        project_id: Uuid,
        version: i32,
        to: DateTime<Utc>,
    ) -> Result<()> {
        self.shared()
            .execute(Statement::from_sql_and_values(
                DbBackend::Postgres,
                "UPDATE superseded_trusted_events SET superseded_at = $3
                 WHERE project_id = $1 AND version = $2 AND superseded_at > $3",
                [project_id.into(), version.into(), to.into()],
            ))
            .await?;
        Ok(())
    }

    /// The replaced lists among `wanted` (project, version) that exist.
    pub async fn superseded_trusted_events(
        &self,
        wanted: &[(Uuid, i32)],
    ) -> Result<Vec<SupersededList>> {
        if wanted.is_empty() {
            return Ok(Vec::new());
        }
        let projects: Vec<Uuid> = wanted.iter().map(|(project, _)| *project).collect();
        let versions: Vec<i32> = wanted.iter().map(|(_, version)| *version).collect();
        let rows = self
            .shared()
            .query_all(Statement::from_sql_and_values(
                DbBackend::Postgres,
                "SELECT s.project_id, s.version, s.trusted_events, s.superseded_at
                 FROM superseded_trusted_events s
                 JOIN unnest($1::uuid[], $2::int[]) AS w(project_id, version)
                   ON w.project_id = s.project_id AND w.version = s.version",
                [projects.into(), versions.into()],
            ))
            .await?;
        let mut lists = Vec::with_capacity(rows.len());
        for row in rows {
            let value: serde_json::Value = row.try_get("", "trusted_events")?;
            lists.push(SupersededList {
                project_id: row.try_get("", "project_id")?,
                version: row.try_get("", "version")?,
                trusted_events: NameList::from_json(&value),
                superseded_at: row.try_get("", "superseded_at")?,
            });
        }
        Ok(lists)
    }
}
