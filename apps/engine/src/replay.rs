//! Rule-version replay: a version published with `apply: "replay"` is recomputed over the project's
//! evaluated events and manual adjustments, in the order live evaluation applied them (the engine's
//! sequence), into its own state, ledger and leaderboard rows, while the active version keeps
//! evaluating live events. Once caught up, the last stretch is folded under the project's
//! exclusive lock and the version becomes active in the same transaction: no live event is
//! evaluated under the old version after that, or missed by the new one.
//!
//! Replay makes no webhook deliveries and no outcomes: those tell what happened live.

use std::{collections::BTreeMap, time::Duration};

use chrono::{DateTime, Utc};
use gamify_db::Db;
use gamify_rules::{Source, UserState};
use sea_orm::{DbErr, sqlx};
use serde_json::{Map, Value};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use gamify_db::gamification::{
    changes::{self, Changes},
    project_lock,
    rule_sets::RuleSets,
    stored::{self, StoredEvent},
};

use crate::{db_err, metrics as m};

type Txn = sqlx::Transaction<'static, sqlx::Postgres>;

const POLL: Duration = Duration::from_millis(500);
const PAGE: i64 = 2_000;
const LEASE: Duration = Duration::from_secs(30);
/// An evaluated event the storage worker has not stored yet is waited for this long; after it,
/// the event is taken as gone (dropped by retention) and left out.
const STORAGE_GRACE_SECONDS: i64 = 300;

/// Runs every replay that is due until `shutdown`, one at a time per engine.
pub async fn run(db: Db, rule_sets: RuleSets, shutdown: CancellationToken) {
    loop {
        match next(&db).await {
            Ok(Some((project_id, version))) => {
                let result = replay(&db, &rule_sets, project_id, version, &shutdown).await;
                if let Err(err) = result {
                    fail_or_retry(&db, project_id, version, err).await;
                }
                continue;
            }
            Ok(None) => {}
            Err(err) => tracing::warn!(error = %err, "cannot look for rule replays"),
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(POLL) => {}
        }
    }
}

/// Claims the oldest replaying version whose lease is free.
async fn next(db: &Db) -> Result<Option<(Uuid, i32)>, DbErr> {
    let pool = db.shared().get_postgres_connection_pool();
    sqlx::query_as(
        "UPDATE rule_versions SET lease_until = now() + make_interval(secs => $1)
         WHERE (project_id, version) = (
             SELECT project_id, version FROM rule_versions
             WHERE state = 'replaying' AND (lease_until IS NULL OR lease_until < now())
             ORDER BY created_at LIMIT 1 FOR UPDATE SKIP LOCKED)
         RETURNING project_id, version",
    )
    .bind(LEASE.as_secs_f64())
    .fetch_optional(pool)
    .await
    .map_err(db_err)
}

async fn fail_or_retry(db: &Db, project_id: Uuid, version: i32, err: DbErr) {
    let permanent = matches!(err, DbErr::Custom(_));
    tracing::error!(%project_id, version, error = %err, permanent, "rule replay failed");
    let pool = db.shared().get_postgres_connection_pool();
    let query = if permanent {
        "UPDATE rule_versions SET state = 'failed', error = $3, lease_until = NULL
         WHERE project_id = $1 AND version = $2 AND state = 'replaying'"
    } else {
        // Released: the next poll (of any engine) starts it again.
        "UPDATE rule_versions SET lease_until = NULL, error = $3
         WHERE project_id = $1 AND version = $2 AND state = 'replaying'"
    };
    let message = if permanent {
        err.to_string()
    } else {
        "interrupted; retrying".to_owned()
    };
    if let Err(err) = sqlx::query(query)
        .bind(project_id)
        .bind(version)
        .bind(message)
        .execute(pool)
        .await
    {
        tracing::warn!(error = %err, "cannot record the replay's failure");
    }
}

/// One step of a user's history, in the engine's order.
enum Step {
    Event {
        user_id: String,
        event_id: Uuid,
        name: String,
        source: Source,
        payload: Map<String, Value>,
        occurred_at: DateTime<Utc>,
        received_at: DateTime<Utc>,
    },
    Adjustment {
        user_id: String,
        points_key: String,
        amount: i64,
        reason: String,
        at: DateTime<Utc>,
    },
}

impl Step {
    fn user_id(&self) -> &str {
        match self {
            Step::Event { user_id, .. } | Step::Adjustment { user_id, .. } => user_id,
        }
    }
}

async fn replay(
    db: &Db,
    rule_sets: &RuleSets,
    project_id: Uuid,
    version: i32,
    shutdown: &CancellationToken,
) -> Result<(), DbErr> {
    tracing::info!(%project_id, version, "replaying a rule version");
    let mut txn = db.tenant_bulk(project_id).await.map_err(db_err)?;
    // A replay that was interrupted starts over: nothing of a replaying version is visible.
    for table in [
        "engine_user_states",
        "points_ledger",
        "leaderboard_scores",
        "leaderboard_score_counts",
    ] {
        sqlx::query(&format!(
            "DELETE FROM {table} WHERE project_id = $1 AND generation = $2"
        ))
        .bind(project_id)
        .bind(version)
        .execute(&mut *txn)
        .await
        .map_err(db_err)?;
    }
    let total: i64 = sqlx::query_scalar(
        "SELECT (SELECT count(*) FROM engine_outcomes WHERE project_id = $1 AND status = 'evaluated' AND user_id IS NOT NULL)
              + (SELECT count(*) FROM points_ledger WHERE project_id = $1 AND generation IS NULL)",
    )
    .bind(project_id)
    .fetch_one(&mut *txn)
    .await
    .map_err(db_err)?;
    let rules = rule_sets.version(&mut txn, project_id, version).await?;
    txn.commit().await.map_err(db_err)?;
    progress(db, project_id, version, 0, total).await?;

    let mut cursor = 0i64;
    let mut done = 0i64;
    loop {
        if shutdown.is_cancelled() {
            return Err(DbErr::Conn(sea_orm::RuntimeErr::Internal(
                "the engine is stopping".into(),
            )));
        }
        let horizon = settled(db, project_id).await?;
        let mut txn = db.tenant_bulk(project_id).await.map_err(db_err)?;
        let (steps, next, complete) = page(&mut txn, project_id, cursor, horizon).await?;
        if complete {
            // Caught up: fold the rest and switch over with live evaluation held off.
            drop(txn);
            let mut txn = db.tenant_bulk(project_id).await.map_err(db_err)?;
            hold_off_live_evaluation(&mut txn, project_id).await?;
            let mut last = cursor;
            let mut folded = 0;
            let caught_up = loop {
                let (steps, next, complete) = page(&mut txn, project_id, last, i64::MAX).await?;
                if steps.is_empty() && !complete && next == last {
                    break false;
                }
                folded += steps.len() as i64;
                fold(&mut txn, project_id, &rules.rules, version, steps).await?;
                last = next;
                if complete {
                    break true;
                }
            };
            if !caught_up {
                // Waiting on the storage worker: not with live evaluation held off.
                drop(txn);
                tokio::time::sleep(POLL).await;
                continue;
            }
            done += folded;
            stored::retire_active(&mut txn, project_id).await?;
            sqlx::query(
                "UPDATE rule_versions SET state = 'active', activated_at = now(), lease_until = NULL,
                        error = NULL, events_done = $3, events_total = GREATEST(events_total, $3)
                 WHERE project_id = $1 AND version = $2",
            )
            .bind(project_id)
            .bind(version)
            .bind(done)
            .execute(&mut *txn)
            .await
            .map_err(db_err)?;
            txn.commit().await.map_err(db_err)?;
            tracing::info!(%project_id, version, events = done, "rule version replayed and active");
            return Ok(());
        }
        let stalled = steps.is_empty() && next == cursor;
        done += steps.len() as i64;
        fold(&mut txn, project_id, &rules.rules, version, steps).await?;
        txn.commit().await.map_err(db_err)?;
        cursor = next;
        if stalled {
            tokio::time::sleep(POLL).await;
        }
        progress(db, project_id, version, done, total.max(done)).await?;
    }
}

/// Takes the project lock exclusively for the rest of `txn`: evaluations and adjustments in
/// flight finish first, and new ones wait.
async fn hold_off_live_evaluation(txn: &mut Txn, project_id: Uuid) -> Result<(), DbErr> {
    sqlx::query("SELECT pg_advisory_xact_lock($1)")
        .bind(project_lock(project_id))
        .execute(&mut **txn)
        .await
        .map_err(db_err)?;
    Ok(())
}

/// A sequence number below which every evaluation and adjustment of the project has committed or
/// rolled back. Live transactions take their numbers while holding the project lock shared and
/// commit in any order, so the highest number committed so far is no such bound: one still in
/// flight may hold a lower one, which a page read past it would miss for good. Taking the lock
/// exclusively waits for those in flight (and holds off new ones for the instant), and every
/// number a later one takes is above the one taken here.
pub async fn settled(db: &Db, project_id: Uuid) -> Result<i64, DbErr> {
    let mut txn = db.tenant_bulk(project_id).await.map_err(db_err)?;
    hold_off_live_evaluation(&mut txn, project_id).await?;
    let horizon: i64 = sqlx::query_scalar("SELECT nextval('engine_seq')")
        .fetch_one(&mut *txn)
        .await
        .map_err(db_err)?;
    txn.commit().await.map_err(db_err)?;
    Ok(horizon)
}

/// The next steps after `cursor` and below `horizon` in sequence order, the cursor after them,
/// and whether this was the last of them. Waits (by answering an empty, incomplete page) while an
/// evaluated event has not been stored yet.
async fn page(
    txn: &mut Txn,
    project_id: Uuid,
    cursor: i64,
    horizon: i64,
) -> Result<(Vec<(i64, Step)>, i64, bool), DbErr> {
    type EventRow = (
        i64,
        Uuid,
        String,
        DateTime<Utc>,
        Option<String>,
        Option<String>,
        Option<Value>,
        Option<DateTime<Utc>>,
        Option<DateTime<Utc>>,
    );
    let events: Vec<EventRow> = sqlx::query_as(
        "SELECT o.seq, o.event_id, o.user_id, o.evaluated_at, e.event_type, e.key_type, e.payload,
                e.occurred_at, e.received_at
         FROM engine_outcomes o
         LEFT JOIN events e ON e.project_id = o.project_id AND e.id = o.event_id
         WHERE o.project_id = $1 AND o.status = 'evaluated' AND o.user_id IS NOT NULL
           AND o.seq > $2 AND o.seq < $4
         ORDER BY o.seq LIMIT $3",
    )
    .bind(project_id)
    .bind(cursor)
    .bind(PAGE)
    .bind(horizon)
    .fetch_all(&mut **txn)
    .await
    .map_err(db_err)?;
    let complete = (events.len() as i64) < PAGE;
    let upto = if complete {
        horizon - 1
    } else {
        events.last().map_or(cursor, |row| row.0)
    };
    let adjustments: Vec<(i64, String, String, i64, String, DateTime<Utc>)> = sqlx::query_as(
        "SELECT seq, user_id, points_key, amount, reason, created_at FROM points_ledger
         WHERE project_id = $1 AND generation IS NULL AND seq > $2 AND seq <= $3 ORDER BY seq",
    )
    .bind(project_id)
    .bind(cursor)
    .bind(upto)
    .fetch_all(&mut **txn)
    .await
    .map_err(db_err)?;

    let now = Utc::now();
    let mut steps: BTreeMap<i64, Step> = BTreeMap::new();
    for (seq, event_id, user_id, evaluated_at, name, key_type, payload, occurred, received) in
        events
    {
        let (Some(name), Some(key_type), Some(occurred_at), Some(received_at)) =
            (name, key_type, occurred, received)
        else {
            if (now - evaluated_at).num_seconds() < STORAGE_GRACE_SECONDS {
                // The worker has not stored it yet: fold up to just before it and come back.
                let before: Vec<(i64, Step)> =
                    steps.into_iter().filter(|(s, _)| *s < seq).collect();
                let next = before.last().map_or(cursor, |(s, _)| *s);
                return Ok((before, next, false));
            }
            tracing::warn!(%project_id, %event_id, "an evaluated event is not stored (retention?); replay leaves it out");
            continue;
        };
        let payload = match payload {
            Some(Value::Object(map)) => map,
            _ => Map::new(),
        };
        steps.insert(
            seq,
            Step::Event {
                user_id,
                event_id,
                name,
                source: stored::source(&key_type),
                payload,
                occurred_at,
                received_at,
            },
        );
    }
    for (seq, user_id, points_key, amount, reason, at) in adjustments {
        steps.insert(
            seq,
            Step::Adjustment {
                user_id,
                points_key,
                amount,
                reason,
                at,
            },
        );
    }
    let next = if complete {
        steps.keys().next_back().copied().unwrap_or(cursor)
    } else {
        upto
    };
    Ok((steps.into_iter().collect(), next, complete))
}

/// Folds `steps` into the version's stored states, ledger and scores.
async fn fold(
    txn: &mut Txn,
    project_id: Uuid,
    rules: &gamify_rules::Rules,
    version: i32,
    steps: Vec<(i64, Step)>,
) -> Result<(), DbErr> {
    if steps.is_empty() {
        return Ok(());
    }
    let users: Vec<&str> = steps.iter().map(|(_, step)| step.user_id()).collect();
    let mut states: BTreeMap<String, UserState> =
        changes::lock_states(txn, project_id, version, &users).await?;
    // A replayed version is its own generation: it starts from nothing.
    let mut changes = Changes::new(version, version);
    let count = steps.len() as u64;
    for (seq, step) in &steps {
        let state = states.entry(step.user_id().to_owned()).or_default();
        match step {
            Step::Event {
                user_id,
                event_id,
                name,
                source,
                payload,
                occurred_at,
                received_at,
            } => {
                let input = StoredEvent {
                    event_id: *event_id,
                    user_id,
                    name,
                    source: *source,
                    payload: Some(payload),
                    occurred_at: *occurred_at,
                    received_at: *received_at,
                }
                .input();
                let evaluation = gamify_rules::apply(rules, state, &input);
                changes.record(user_id, *seq, Some(*event_id), &evaluation);
            }
            Step::Adjustment {
                user_id,
                points_key,
                amount,
                reason,
                at,
            } => {
                let mut evaluation =
                    gamify_rules::adjust(rules, state, points_key, *amount, reason, *at);
                // The adjustment's own ledger row is stored once, for every version.
                evaluation.ledger.clear();
                changes.record(user_id, *seq, None, &evaluation);
            }
        }
        changes
            .states
            .insert(step.user_id().to_owned(), (state.clone(), *seq));
    }
    // Replay announces nothing: the webhooks went out live.
    changes.write(txn, project_id, &[]).await?;
    metrics::counter!(m::REPLAYED).increment(count);
    Ok(())
}

async fn progress(
    db: &Db,
    project_id: Uuid,
    version: i32,
    done: i64,
    total: i64,
) -> Result<(), DbErr> {
    sqlx::query(
        "UPDATE rule_versions SET events_done = $3, events_total = $4,
                lease_until = now() + make_interval(secs => $5)
         WHERE project_id = $1 AND version = $2",
    )
    .bind(project_id)
    .bind(version)
    .bind(done)
    .bind(total)
    .bind(LEASE.as_secs_f64())
    .execute(db.shared().get_postgres_connection_pool())
    .await
    .map_err(db_err)?;
    Ok(())
}
