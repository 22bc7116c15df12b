//! What evaluating a share of events changes, gathered in memory and written with a fixed number of
//! statements (whole columns bound as arrays), so a transaction costs the same few round trips
//! whether it evaluates one event or thousands. Live evaluation and replay both write through here.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use gamify_rules::{Evaluation, UserState};
use sea_orm::{DbErr, sqlx};
use serde_json::Value;
use uuid::Uuid;

use super::{
    db_err,
    outbox::{Delivery, Endpoint},
};

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
    /// Outcomes of events evaluated for the first time: no row can exist yet (their dedup
    /// record was taken in this transaction), so a plain insert, not a speculative one.
    pub outcomes: Vec<OutcomeRow>,
    /// Outcomes an earlier delivery may have recorded already (duplicates of another event).
    pub repeated_outcomes: Vec<OutcomeRow>,
    /// Final state and last sequence number per user.
    pub states: BTreeMap<String, (UserState, i64)>,
    /// The users in `states` without a stored row (the engine's live evaluation inserts those
    /// with the writes; replay and adjustments create rows first with [`lock_states`]).
    pub new_users: std::collections::BTreeSet<String>,
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

    /// Writes everything in one statement (one round trip; data-modifying CTEs all run to
    /// completion), plus the webhook outbox when there are deliveries for `endpoints`. Every user
    /// in `states` has a row locked in this transaction (by [`lock_states`], or the engine's own
    /// `FOR UPDATE`), and is updated, except the `new_users`, whose rows are inserted.
    pub async fn write(
        self,
        txn: &mut Txn,
        project_id: Uuid,
        endpoints: &[Endpoint],
    ) -> Result<(), DbErr> {
        let outcomes: Vec<&OutcomeRow> = self
            .outcomes
            .iter()
            .chain(&self.repeated_outcomes)
            .collect();
        let repeated: Vec<bool> = outcomes
            .iter()
            .enumerate()
            .map(|(index, _)| index >= self.outcomes.len())
            .collect();
        let mut state_users = Vec::with_capacity(self.states.len());
        let mut states = Vec::with_capacity(self.states.len());
        let mut state_seqs = Vec::with_capacity(self.states.len());
        let mut state_new = Vec::with_capacity(self.states.len());
        for (user, (state, seq)) in &self.states {
            state_users.push(user.as_str());
            states.push(serde_json::to_string(state).map_err(|err| {
                DbErr::Custom(format!("cannot serialize a user's engine state: {err}"))
            })?);
            state_seqs.push(*seq);
            state_new.push(self.new_users.contains(user));
        }
        let ledger = &self.ledger;
        let scores: Vec<_> = self
            .scores
            .iter()
            .filter(|(_, (delta, _))| *delta != 0)
            .collect();
        // Scores: the score's time is when it was last changed, so ties rank whoever reached it
        // first. A user's scores are only written with their state locked, so a score row is
        // updated where it exists and inserted plainly where not (an upsert would make every row
        // a speculative insertion, the costliest way in: docs/BENCHMARKS.md). The count of users
        // per score moves with each score (from the old score to the new one), its rows updated
        // in sorted order so concurrent transactions wait in one order.
        let (_, updated): (i64, i64) = sqlx::query_as(
            "WITH outcome_rows AS (
                 SELECT * FROM UNNEST($4::uuid[], $5::int8[], $6::text[], $7::text[], $8::text[], $9::text[], $25::bool[])
                      AS r(event_id, seq, user_id, status, reason, awards, repeated)
             ), outcomes AS (
                 INSERT INTO engine_outcomes (project_id, event_id, seq, user_id, status, reason, rules_version, awards)
                 SELECT $1, r.event_id, r.seq, r.user_id, r.status, r.reason, $3, r.awards::json
                 FROM outcome_rows r WHERE NOT r.repeated
                 RETURNING 1
             ), repeated_outcomes AS (
                 INSERT INTO engine_outcomes (project_id, event_id, seq, user_id, status, reason, rules_version, awards)
                 SELECT $1, r.event_id, r.seq, r.user_id, r.status, r.reason, $3, r.awards::json
                 FROM outcome_rows r WHERE r.repeated
                 ON CONFLICT (project_id, event_id) DO NOTHING
                 RETURNING 1
             ), state_rows AS (
                 SELECT * FROM UNNEST($10::text[], $11::text[], $12::int8[], $26::bool[]) AS r(user_id, state, seq, new)
             ), states AS (
                 UPDATE engine_user_states s SET state = r.state::jsonb, last_seq = r.seq, updated_at = now()
                 FROM state_rows r
                 WHERE NOT r.new AND s.project_id = $1 AND s.generation = $2 AND s.user_id = r.user_id
                 RETURNING 1
             ), new_states AS (
                 INSERT INTO engine_user_states (project_id, generation, user_id, state, last_seq)
                 SELECT $1, $2, r.user_id, r.state::jsonb, r.seq FROM state_rows r WHERE r.new
                 RETURNING 1
             ), ledger AS (
                 INSERT INTO points_ledger (project_id, id, seq, generation, user_id, points_key, amount, reason, event_id)
                 SELECT $1, r.id, r.seq, $2, r.user_id, r.points_key, r.amount, r.reason, r.event_id
                 FROM UNNEST($13::uuid[], $14::int8[], $15::text[], $16::text[], $17::int8[], $18::text[], $19::uuid[])
                      AS r(id, seq, user_id, points_key, amount, reason, event_id)
                 RETURNING 1
             ), score_input AS (
                 SELECT * FROM UNNEST($20::text[], $21::timestamptz[], $22::text[], $23::int8[], $24::timestamptz[])
                     AS r(board, period_start, user_id, delta, at)
             ), updated AS (
                 UPDATE leaderboard_scores s SET score = s.score + i.delta, reached_at = GREATEST(s.reached_at, i.at)
                 FROM score_input i
                 WHERE s.project_id = $1 AND s.generation = $2 AND s.board = i.board
                   AND s.period_start = i.period_start AND s.user_id = i.user_id
                 RETURNING s.board, s.period_start, s.user_id, s.score
             ), inserted AS (
                 INSERT INTO leaderboard_scores (project_id, generation, board, period_start, user_id, score, reached_at)
                 SELECT $1, $2, i.board, i.period_start, i.user_id, i.delta, i.at FROM score_input i
                 WHERE NOT EXISTS (SELECT 1 FROM updated u WHERE u.board = i.board
                                   AND u.period_start = i.period_start AND u.user_id = i.user_id)
                 RETURNING board, period_start, user_id, score
             ), changed AS (
                 SELECT board, period_start, user_id, score, false AS inserted FROM updated
                 UNION ALL
                 SELECT board, period_start, user_id, score, true FROM inserted
             ), moves AS (
                 SELECT c.board, c.period_start, c.score, 1 AS users FROM changed c
                 UNION ALL
                 SELECT c.board, c.period_start, c.score - i.delta, -1 FROM changed c
                 JOIN score_input i ON i.board = c.board AND i.period_start = c.period_start AND i.user_id = c.user_id
                 WHERE NOT c.inserted
             ), counts AS (
                 INSERT INTO leaderboard_score_counts (project_id, generation, board, period_start, score, users)
                 SELECT $1, $2, board, period_start, score, sum(users) FROM moves
                 GROUP BY board, period_start, score HAVING sum(users) <> 0
                 ORDER BY board, period_start, score
                 ON CONFLICT (project_id, generation, board, period_start, score)
                 DO UPDATE SET users = leaderboard_score_counts.users + EXCLUDED.users
                 RETURNING 1
             )
             SELECT (SELECT count(*) FROM outcomes) + (SELECT count(*) FROM repeated_outcomes)
                        + (SELECT count(*) FROM ledger)
                        + (SELECT count(*) FROM counts),
                    (SELECT count(*) FROM states) + (SELECT count(*) FROM new_states)",
        )
        .bind(project_id)
        .bind(self.generation)
        .bind(self.rules_version)
        .bind(outcomes.iter().map(|r| r.event_id).collect::<Vec<_>>())
        .bind(outcomes.iter().map(|r| r.seq).collect::<Vec<_>>())
        .bind(outcomes.iter().map(|r| r.user_id.as_deref()).collect::<Vec<_>>())
        .bind(
            outcomes
                .iter()
                .map(|r| if r.counted { "evaluated" } else { "not_counted" })
                .collect::<Vec<_>>(),
        )
        .bind(outcomes.iter().map(|r| r.reason.as_deref()).collect::<Vec<_>>())
        .bind(outcomes.iter().map(|r| r.awards.as_str()).collect::<Vec<_>>())
        .bind(state_users)
        .bind(states)
        .bind(state_seqs)
        .bind(ledger.iter().map(|_| Uuid::now_v7()).collect::<Vec<_>>())
        .bind(ledger.iter().map(|r| r.seq).collect::<Vec<_>>())
        .bind(ledger.iter().map(|r| r.user_id.as_str()).collect::<Vec<_>>())
        .bind(ledger.iter().map(|r| r.points_key.as_str()).collect::<Vec<_>>())
        .bind(ledger.iter().map(|r| r.amount).collect::<Vec<_>>())
        .bind(ledger.iter().map(|r| r.reason.as_str()).collect::<Vec<_>>())
        .bind(ledger.iter().map(|r| r.event_id).collect::<Vec<_>>())
        .bind(scores.iter().map(|((board, _, _), _)| board.as_str()).collect::<Vec<_>>())
        .bind(scores.iter().map(|((_, start, _), _)| *start).collect::<Vec<_>>())
        .bind(scores.iter().map(|((_, _, user), _)| user.as_str()).collect::<Vec<_>>())
        .bind(scores.iter().map(|(_, (delta, _))| *delta).collect::<Vec<_>>())
        .bind(scores.iter().map(|(_, (_, at))| *at).collect::<Vec<_>>())
        .bind(repeated)
        .bind(state_new)
        .fetch_one(&mut **txn)
        .await
        .map_err(db_err)?;
        if updated != self.states.len() as i64 {
            return Err(DbErr::Custom(format!(
                "{} of {} engine states were written: a state was not locked first",
                updated,
                self.states.len()
            )));
        }
        super::outbox::write(txn, project_id, endpoints, &self.deliveries).await?;
        Ok(())
    }
}

/// The stored state of each of `users` in `generation`, locked for this transaction in
/// sorted order (no two transactions wait on each other in opposite orders). Users without a
/// state get a row first, so that concurrent first events of a new user also serialize. Known
/// users, nearly all of them once a project runs, cost one statement; new ones are locked after
/// the known ones, so two transactions racing over a user's first event can deadlock, which
/// Postgres breaks and the consumer loop retries (40P01 is transient).
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
    let mut states = select_for_update(txn, project_id, generation, &sorted).await?;
    let new: Vec<&str> = sorted
        .into_iter()
        .filter(|user| !states.contains_key(*user))
        .collect();
    states.extend(lock_new_states(txn, project_id, generation, &new).await?);
    Ok(states)
}

/// Rows for users who had no state when this transaction looked, locked (in sorted order) and
/// returned: a concurrent transaction's first event of the same user may have made the row
/// meanwhile, and then its state is the one returned.
pub async fn lock_new_states(
    txn: &mut Txn,
    project_id: Uuid,
    generation: i32,
    users: &[&str],
) -> Result<BTreeMap<String, UserState>, DbErr> {
    let mut users = users.to_vec();
    users.sort_unstable();
    users.dedup();
    if users.is_empty() {
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
    .bind(&users)
    .bind(&empty)
    .execute(&mut **txn)
    .await
    .map_err(db_err)?;
    // A new statement: it sees the rows a concurrent transaction inserted first and committed.
    select_for_update(txn, project_id, generation, &users).await
}

async fn select_for_update(
    txn: &mut Txn,
    project_id: Uuid,
    generation: i32,
    sorted: &[&str],
) -> Result<BTreeMap<String, UserState>, DbErr> {
    let rows: Vec<(String, Value)> = sqlx::query_as(
        "SELECT user_id, state FROM engine_user_states
         WHERE project_id = $1 AND generation = $2 AND user_id = ANY($3)
         ORDER BY user_id FOR UPDATE",
    )
    .bind(project_id)
    .bind(generation)
    .bind(sorted)
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
