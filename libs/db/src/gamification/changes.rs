//! What evaluating a share of events changes, gathered in memory and written with a fixed number of
//! statements (whole columns bound as arrays), so a transaction costs the same few round trips
//! whether it evaluates one event or thousands. Live evaluation and replay both write through here.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use gamify_rules::{Evaluation, UserState};
use sea_orm::{DbErr, sqlx};
use serde_json::Value;
use uuid::Uuid;

use super::{db_err, outbox::Delivery};

type Txn = sqlx::Transaction<'static, sqlx::Postgres>;

#[derive(Debug)]
pub struct OutcomeRow {
    pub event_id: Uuid,
    pub seq: i64,
    pub user_id: Option<String>,
    pub counted: bool,
    pub reason: Option<String>,
    /// The awards as JSON text: serialized once, straight into the statement.
    pub awards: String,
}

#[derive(Debug, Default)]
pub struct Changes {
    /// The rule version that evaluated (0: none was active), for outcomes.
    pub rules_version: i32,
    /// Whose state, ledger and scores change.
    pub generation: i32,
    pub outcomes: Vec<OutcomeRow>,
    /// Final state and last sequence number per user.
    pub states: BTreeMap<String, (UserState, i64)>,
    ledger: Vec<LedgerRow>,
    scores: BTreeMap<ScoreSlot, ScoreDelta>,
    pub deliveries: Vec<Delivery>,
}

/// A user's score on one board in one period: (board, period start, user).
type ScoreSlot = (String, DateTime<Utc>, String);
/// The net change of a score and when it was last changed.
type ScoreDelta = (i64, DateTime<Utc>);

#[derive(Debug)]
struct LedgerRow {
    seq: i64,
    user_id: String,
    points_key: String,
    amount: i64,
    reason: String,
    event_id: Option<Uuid>,
}

impl Changes {
    pub fn new(rules_version: i32, generation: i32) -> Self {
        Self {
            rules_version,
            generation,
            ..Self::default()
        }
    }

    /// Takes in what one event (or adjustment) of `user_id`, numbered `seq`, changed.
    pub fn record(
        &mut self,
        user_id: &str,
        seq: i64,
        event_id: Option<Uuid>,
        evaluation: &Evaluation,
    ) {
        // One ledger row per event and points system, its triggers' reasons joined: the ledger
        // reads one line per thing that happened, and the engine writes half the rows it would
        // with one per trigger (the drain is bound by Postgres: docs/BENCHMARKS.md).
        let first = self.ledger.len();
        for entry in &evaluation.ledger {
            match self.ledger[first..]
                .iter_mut()
                .find(|row| row.points_key == entry.points_key)
            {
                Some(row) => {
                    row.amount = row.amount.saturating_add(entry.amount);
                    row.reason.push_str(", ");
                    row.reason.push_str(&entry.reason);
                }
                None => self.ledger.push(LedgerRow {
                    seq,
                    user_id: user_id.to_owned(),
                    points_key: entry.points_key.clone(),
                    amount: entry.amount,
                    reason: entry.reason.clone(),
                    event_id,
                }),
            }
        }
        // Triggers that cancel out leave the balance, and so the ledger, as it was.
        let mut index = first;
        while index < self.ledger.len() {
            if self.ledger[index].amount == 0 {
                self.ledger.remove(index);
            } else {
                index += 1;
            }
        }
        for change in &evaluation.scores {
            let slot = self
                .scores
                .entry((
                    change.board.clone(),
                    change.period_start,
                    user_id.to_owned(),
                ))
                .or_insert((0, change.at));
            slot.0 = slot.0.saturating_add(change.delta);
            slot.1 = slot.1.max(change.at);
        }
    }

    pub async fn write(self, txn: &mut Txn, project_id: Uuid) -> Result<(), DbErr> {
        self.write_outcomes(txn, project_id).await?;
        self.write_states(txn, project_id).await?;
        self.write_ledger(txn, project_id).await?;
        self.write_scores(txn, project_id).await?;
        super::outbox::write(txn, project_id, &self.deliveries).await?;
        Ok(())
    }

    async fn write_outcomes(&self, txn: &mut Txn, project_id: Uuid) -> Result<(), DbErr> {
        if self.outcomes.is_empty() {
            return Ok(());
        }
        let rows = &self.outcomes;
        sqlx::query(
            "INSERT INTO engine_outcomes (project_id, event_id, seq, user_id, status, reason, rules_version, awards)
             SELECT $1, r.event_id, r.seq, r.user_id, r.status, r.reason, $2, r.awards::jsonb
             FROM UNNEST($3::uuid[], $4::int8[], $5::text[], $6::text[], $7::text[], $8::text[])
                  AS r(event_id, seq, user_id, status, reason, awards)
             ON CONFLICT (project_id, event_id) DO NOTHING",
        )
        .bind(project_id)
        .bind(self.rules_version)
        .bind(rows.iter().map(|r| r.event_id).collect::<Vec<_>>())
        .bind(rows.iter().map(|r| r.seq).collect::<Vec<_>>())
        .bind(rows.iter().map(|r| r.user_id.clone()).collect::<Vec<_>>())
        .bind(
            rows.iter()
                .map(|r| if r.counted { "evaluated" } else { "not_counted" })
                .collect::<Vec<_>>(),
        )
        .bind(rows.iter().map(|r| r.reason.clone()).collect::<Vec<_>>())
        .bind(rows.iter().map(|r| r.awards.as_str()).collect::<Vec<_>>())
        .execute(&mut **txn)
        .await
        .map_err(db_err)?;
        Ok(())
    }

    async fn write_states(&self, txn: &mut Txn, project_id: Uuid) -> Result<(), DbErr> {
        if self.states.is_empty() {
            return Ok(());
        }
        let mut users = Vec::with_capacity(self.states.len());
        let mut states = Vec::with_capacity(self.states.len());
        let mut seqs = Vec::with_capacity(self.states.len());
        for (user, (state, seq)) in &self.states {
            users.push(user.as_str());
            states.push(serde_json::to_string(state).map_err(|err| {
                DbErr::Custom(format!("cannot serialize a user's engine state: {err}"))
            })?);
            seqs.push(*seq);
        }
        sqlx::query(
            "INSERT INTO engine_user_states (project_id, generation, user_id, state, last_seq, updated_at)
             SELECT $1, $2, r.user_id, r.state::jsonb, r.seq, now()
             FROM UNNEST($3::text[], $4::text[], $5::int8[]) AS r(user_id, state, seq)
             ON CONFLICT (project_id, generation, user_id)
             DO UPDATE SET state = EXCLUDED.state, last_seq = EXCLUDED.last_seq, updated_at = now()",
        )
        .bind(project_id)
        .bind(self.generation)
        .bind(users)
        .bind(states)
        .bind(seqs)
        .execute(&mut **txn)
        .await
        .map_err(db_err)?;
        Ok(())
    }

    async fn write_ledger(&self, txn: &mut Txn, project_id: Uuid) -> Result<(), DbErr> {
        if self.ledger.is_empty() {
            return Ok(());
        }
        let rows = &self.ledger;
        sqlx::query(
            "INSERT INTO points_ledger (project_id, id, seq, generation, user_id, points_key, amount, reason, event_id)
             SELECT $1, r.id, r.seq, $2, r.user_id, r.points_key, r.amount, r.reason, r.event_id
             FROM UNNEST($3::uuid[], $4::int8[], $5::text[], $6::text[], $7::int8[], $8::text[], $9::uuid[])
                  AS r(id, seq, user_id, points_key, amount, reason, event_id)",
        )
        .bind(project_id)
        .bind(self.generation)
        .bind(rows.iter().map(|_| Uuid::now_v7()).collect::<Vec<_>>())
        .bind(rows.iter().map(|r| r.seq).collect::<Vec<_>>())
        .bind(rows.iter().map(|r| r.user_id.as_str()).collect::<Vec<_>>())
        .bind(rows.iter().map(|r| r.points_key.as_str()).collect::<Vec<_>>())
        .bind(rows.iter().map(|r| r.amount).collect::<Vec<_>>())
        .bind(rows.iter().map(|r| r.reason.as_str()).collect::<Vec<_>>())
        .bind(rows.iter().map(|r| r.event_id).collect::<Vec<_>>())
        .execute(&mut **txn)
        .await
        .map_err(db_err)?;
        Ok(())
    }

    async fn write_scores(&self, txn: &mut Txn, project_id: Uuid) -> Result<(), DbErr> {
        let changed: Vec<_> = self
            .scores
            .iter()
            .filter(|(_, (delta, _))| *delta != 0)
            .collect();
        if changed.is_empty() {
            return Ok(());
        }
        // The score's time is when it was last changed: ties rank whoever reached it first. The
        // count of users per score moves with each score (from the old score to the new one),
        // its rows updated in sorted order so concurrent transactions wait in one order.
        sqlx::query(
            "WITH input AS (
                 SELECT * FROM UNNEST($3::text[], $4::timestamptz[], $5::text[], $6::int8[], $7::timestamptz[])
                     AS r(board, period_start, user_id, delta, at)
             ), changed AS (
                 INSERT INTO leaderboard_scores (project_id, generation, board, period_start, user_id, score, reached_at)
                 SELECT $1, $2, board, period_start, user_id, delta, at FROM input
                 ON CONFLICT (project_id, generation, board, period_start, user_id)
                 DO UPDATE SET score = leaderboard_scores.score + EXCLUDED.score,
                               reached_at = GREATEST(leaderboard_scores.reached_at, EXCLUDED.reached_at)
                 RETURNING board, period_start, user_id, score, (xmax = 0) AS inserted
             ), moves AS (
                 SELECT c.board, c.period_start, c.score, 1 AS users FROM changed c
                 UNION ALL
                 SELECT c.board, c.period_start, c.score - i.delta, -1 FROM changed c
                 JOIN input i ON i.board = c.board AND i.period_start = c.period_start AND i.user_id = c.user_id
                 WHERE NOT c.inserted
             )
             INSERT INTO leaderboard_score_counts (project_id, generation, board, period_start, score, users)
             SELECT $1, $2, board, period_start, score, sum(users) FROM moves
             GROUP BY board, period_start, score HAVING sum(users) <> 0
             ORDER BY board, period_start, score
             ON CONFLICT (project_id, generation, board, period_start, score)
             DO UPDATE SET users = leaderboard_score_counts.users + EXCLUDED.users",
        )
        .bind(project_id)
        .bind(self.generation)
        .bind(changed.iter().map(|((board, _, _), _)| board.as_str()).collect::<Vec<_>>())
        .bind(changed.iter().map(|((_, start, _), _)| *start).collect::<Vec<_>>())
        .bind(changed.iter().map(|((_, _, user), _)| user.as_str()).collect::<Vec<_>>())
        .bind(changed.iter().map(|(_, (delta, _))| *delta).collect::<Vec<_>>())
        .bind(changed.iter().map(|(_, (_, at))| *at).collect::<Vec<_>>())
        .execute(&mut **txn)
        .await
        .map_err(db_err)?;
        Ok(())
    }
}

/// `n` numbers of the engine's one sequence, in increasing order.
pub async fn next_seqs(txn: &mut Txn, n: usize) -> Result<Vec<i64>, DbErr> {
    if n == 0 {
        return Ok(Vec::new());
    }
    sqlx::query_scalar("SELECT nextval('engine_seq') FROM generate_series(1, $1) ORDER BY 1")
        .bind(n as i64)
        .fetch_all(&mut **txn)
        .await
        .map_err(db_err)
}

/// The stored state of each of `users` in `generation`, locked for this transaction in
/// sorted order (no two transactions wait on each other in opposite orders). Users without a
/// state get a row first, so that concurrent first events of a new user also serialize.
pub async fn lock_states(
    txn: &mut Txn,
    project_id: Uuid,
    generation: i32,
    users: &[&str],
) -> Result<BTreeMap<String, UserState>, DbErr> {
    let mut sorted: Vec<&str> = users.to_vec();
    sorted.sort_unstable();
    sorted.dedup();
    if sorted.is_empty() {
        return Ok(BTreeMap::new());
    }
    let empty = serde_json::to_value(UserState::default())
        .map_err(|err| DbErr::Custom(format!("cannot serialize an empty engine state: {err}")))?;
    sqlx::query(
        "INSERT INTO engine_user_states (project_id, generation, user_id, state)
         SELECT $1, $2, u, $4 FROM UNNEST($3::text[]) AS u
         ON CONFLICT DO NOTHING",
    )
    .bind(project_id)
    .bind(generation)
    .bind(&sorted)
    .bind(&empty)
    .execute(&mut **txn)
    .await
    .map_err(db_err)?;
    let rows: Vec<(String, Value)> = sqlx::query_as(
        "SELECT user_id, state FROM engine_user_states
         WHERE project_id = $1 AND generation = $2 AND user_id = ANY($3)
         ORDER BY user_id FOR UPDATE",
    )
    .bind(project_id)
    .bind(generation)
    .bind(&sorted)
    .fetch_all(&mut **txn)
    .await
    .map_err(db_err)?;
    let mut states = BTreeMap::new();
    for (user, state) in rows {
        let state: UserState = serde_json::from_value(state)
            .map_err(|err| DbErr::Custom(format!("a stored engine state cannot be read: {err}")))?;
        states.insert(user, state);
    }
    Ok(states)
}
