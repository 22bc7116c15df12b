//! The active rule version of each project, parsed once per version. A version's document never
//! changes, so a parsed copy is kept as long as it is in use; which version is active is read in
//! every transaction (under the lock replay takes to switch versions), never cached.

use std::sync::Arc;

use gamify_rules::Rules;
use sea_orm::{DbErr, sqlx};
use uuid::Uuid;

use super::outbox::{ENDPOINTS_JSON, Endpoint};

type Txn = sqlx::Transaction<'static, sqlx::Postgres>;

#[derive(Clone)]
pub struct RuleSets {
    parsed: moka::sync::Cache<(Uuid, i32), (i32, Arc<Rules>)>,
}

impl Default for RuleSets {
    fn default() -> Self {
        Self {
            parsed: moka::sync::Cache::builder().max_capacity(10_000).build(),
        }
    }
}

/// What [`RuleSets::start`] read.
pub struct Start {
    pub active: Option<Active>,
    pub seqs: Vec<i64>,
    pub endpoints: Vec<Endpoint>,
}

/// A project's rules as one transaction sees them.
#[derive(Clone)]
pub struct Active {
    pub version: i32,
    /// Whose state, ledger and scores the version reads and writes (see `rule_versions`).
    pub generation: i32,
    pub rules: Arc<Rules>,
}

impl RuleSets {
    /// The project's active version, or None when it has never published rules.
    pub async fn active(&self, txn: &mut Txn, project_id: Uuid) -> Result<Option<Active>, DbErr> {
        let version: Option<i32> = sqlx::query_scalar(
            "SELECT version FROM rule_versions WHERE project_id = $1 AND state = 'active'",
        )
        .bind(project_id)
        .fetch_optional(&mut **txn)
        .await
        .map_err(super::db_err)?;
        match version {
            Some(version) => self.version(txn, project_id, version).await.map(Some),
            None => Ok(None),
        }
    }

    /// What an evaluating transaction reads once it holds the project lock (not before: the
    /// version must be read by a statement that starts after the lock), in one round trip: the
    /// active version, `seqs` numbers of the engine's sequence in increasing order, and the
    /// project's webhook endpoints.
    pub async fn start(
        &self,
        txn: &mut Txn,
        project_id: Uuid,
        seqs: usize,
    ) -> Result<Start, DbErr> {
        let (version, numbers, sqlx::types::Json(endpoints)): (
            Option<i32>,
            Vec<i64>,
            sqlx::types::Json<Vec<Endpoint>>,
        ) = sqlx::query_as(&format!(
            "SELECT (SELECT version FROM rule_versions WHERE project_id = $1 AND state = 'active'),
                        ARRAY(SELECT nextval('engine_seq') FROM generate_series(1, $2) ORDER BY 1),
                        {ENDPOINTS_JSON}"
        ))
        .bind(project_id)
        .bind(seqs as i64)
        .fetch_one(&mut **txn)
        .await
        .map_err(super::db_err)?;
        let active = match version {
            Some(version) => Some(self.version(txn, project_id, version).await?),
            None => None,
        };
        Ok(Start {
            active,
            seqs: numbers,
            endpoints,
        })
    }

    /// One version of the project's rules, active or not (replay evaluates a version before it
    /// becomes active).
    pub async fn version(
        &self,
        txn: &mut Txn,
        project_id: Uuid,
        version: i32,
    ) -> Result<Active, DbErr> {
        if let Some((generation, rules)) = self.parsed.get(&(project_id, version)) {
            return Ok(Active {
                version,
                generation,
                rules,
            });
        }
        let (generation, document): (i32, serde_json::Value) = sqlx::query_as(
            "SELECT generation, document FROM rule_versions WHERE project_id = $1 AND version = $2",
        )
        .bind(project_id)
        .bind(version)
        .fetch_one(&mut **txn)
        .await
        .map_err(super::db_err)?;
        // Published documents were validated by the same parser; one that no longer parses (a
        // stricter parser after an upgrade) must stop the project's evaluation loudly, not
        // silently award nothing.
        let rules = Rules::parse(&document).map_err(|errors| {
            DbErr::Custom(format!(
                "rule version {version} of project {project_id} no longer parses: {}",
                errors
                    .iter()
                    .map(|e| format!("{}: {}", e.path, e.message))
                    .collect::<Vec<_>>()
                    .join("; ")
            ))
        })?;
        let rules = Arc::new(rules);
        self.parsed
            .insert((project_id, version), (generation, Arc::clone(&rules)));
        Ok(Active {
            version,
            generation,
            rules,
        })
    }
}
