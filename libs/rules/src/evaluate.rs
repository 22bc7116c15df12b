//! Folding one event (or one manual adjustment) into a user's state, and what came of it.
//!
//! Within an event the order is fixed: metrics, streaks, achievements, points (metric triggers,
//! then achievement triggers, in document order within each system), levels, leaderboard
//! scores. Everything iterates the document's lists or ordered maps, so the same state and event
//! always give the same outputs in the same order.

use chrono::{DateTime, Utc};
use chrono_tz::Tz;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::condition::ConditionFacts;
use crate::document::{Aggregate, Level, Metric, MetricSource, PointsSystem, whole_as_i64};
use crate::input::{Input, Kind, Source};
use crate::periods::{month_key, period_bounds, period_key};
use crate::rules::Rules;
use crate::state::{PointsState, Unlocked, UserState};
use crate::streak::{Extension, When, extend};

/// What one event or adjustment did.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Evaluation {
    /// The event fed at least one metric, or was an identify that changed the user's zone.
    pub counted: bool,
    pub awards: Vec<Award>,
    /// Every change of a points balance, in the order applied.
    pub ledger: Vec<LedgerEntry>,
    /// One per leaderboard whose points system's balance changed, with the net change.
    pub scores: Vec<ScoreChange>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct LedgerEntry {
    pub points_key: String,
    /// The change actually applied: balances saturate at the i64 bounds, and an entry says what
    /// the balance moved by, so a balance is always the sum of its ledger.
    pub amount: i64,
    /// `metric:KEY`, `metric:KEY every N`, `achievement:KEY`, or an adjustment's own reason.
    pub reason: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct ScoreChange {
    pub board: String,
    /// The start of the board's period holding `at`, in the rule set's zone.
    pub period_start: DateTime<Utc>,
    pub delta: i64,
    pub at: DateTime<Utc>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(
    tag = "type",
    rename_all = "camelCase",
    rename_all_fields = "camelCase"
)]
pub enum Award {
    Achievement {
        key: String,
        name: String,
        unlocked_at: DateTime<Utc>,
    },
    Points {
        /// The points system.
        key: String,
        amount: i64,
        /// The balance after this award.
        balance: i64,
        reason: String,
    },
    /// The user's level in a points system changed (up or down). Falling below every level
    /// changes the state's level to none but makes no award: there is no level to announce.
    Level {
        /// The points system.
        key: String,
        level: String,
        previous: Option<String>,
    },
    Streak {
        key: String,
        change: StreakChange,
        /// For `broken`, the length the streak had; for `extended`, its new length.
        length: u32,
        longest: u32,
    },
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum StreakChange {
    Extended,
    Broken,
}

/// Applies one event to `state`. See [`Input::effective_time`] for the time it counts at.
pub fn apply(rules: &Rules, state: &mut UserState, input: &Input<'_>) -> Evaluation {
    match input.kind {
        Kind::Identify => identify(state, input),
        Kind::Track => track(rules, state, input),
    }
}

/// A manual change of `amount` points in system `points_key`. It moves the balance and maybe the
/// level, and scores on the system's leaderboards at `at`. A key no system has still keeps a
/// balance (the adjustment is not lost if the system is added later) but has no level or board.
pub fn adjust(
    rules: &Rules,
    state: &mut UserState,
    points_key: &str,
    amount: i64,
    reason: &str,
    at: DateTime<Utc>,
) -> Evaluation {
    let mut evaluation = Evaluation::default();
    if amount == 0 {
        return evaluation;
    }
    let system = rules
        .points_index(points_key)
        .map(|index| &rules.document().points[index]);
    let applied = credit(state, &mut evaluation, points_key, system, amount, reason);
    if applied == 0 {
        return evaluation;
    }
    if let Some(system) = system {
        update_level(state, &mut evaluation, system);
    }
    score(rules, &mut evaluation, at, |key| {
        if key == points_key { applied } else { 0 }
    });
    evaluation
}

pub(crate) fn user_timezone(rules: &Rules, state: &UserState) -> Tz {
    state
        .timezone
        .as_deref()
        .and_then(|name| name.parse().ok())
        .unwrap_or_else(|| rules.timezone())
}

fn identify(state: &mut UserState, input: &Input<'_>) -> Evaluation {
    let zone = input
        .traits
        .and_then(|traits| traits.get("timezone"))
        .and_then(Value::as_str)
        .filter(|name| name.parse::<Tz>().is_ok());
    let mut evaluation = Evaluation::default();
    if let Some(zone) = zone {
        if state.timezone.as_deref() != Some(zone) {
            state.timezone = Some(zone.to_owned());
            evaluation.counted = true;
        }
    }
    evaluation
}

fn track(rules: &Rules, state: &mut UserState, input: &Input<'_>) -> Evaluation {
    let document = rules.document();
    let at = input.effective_time();
    let mut evaluation = Evaluation::default();

    let facts = ConditionFacts {
        event: input.name,
        properties: input.properties,
        user_id: input.user_id,
        source: input.source,
    };
    let mut fed = vec![false; document.metrics.len()];
    for (index, metric) in document.metrics.iter().enumerate() {
        if let Some(amount) = feeds(rules, index, metric, &facts) {
            // Looked up before inserting: the key is cloned only the first time (this runs for
            // every metric of every event).
            match state.metrics.get_mut(&metric.key) {
                Some(value) => *value = finite_sum(*value, amount),
                None => {
                    state
                        .metrics
                        .insert(metric.key.clone(), finite_sum(0.0, amount));
                }
            }
            fed[index] = true;
        }
    }
    if !fed.contains(&true) {
        return evaluation;
    }
    evaluation.counted = true;
    let was_fed = |metric: &str| rules.metric_index(metric).is_some_and(|index| fed[index]);

    let zone = user_timezone(rules, state);
    let mut extended = vec![false; document.streaks.len()];
    for (index, streak) in document.streaks.iter().enumerate() {
        if !was_fed(&streak.metric) {
            continue;
        }
        let when = When {
            period: streak.period,
            key: period_key(streak.period, zone, at),
            month: month_key(zone, at),
            per_month: streak
                .freezes
                .as_ref()
                .map_or(0, |freezes| freezes.per_month),
        };
        let streak_state = state.streaks.entry(streak.key.clone()).or_default();
        let outcome = extend(streak_state, when);
        let award = |change, length| Award::Streak {
            key: streak.key.clone(),
            change,
            length,
            longest: streak_state.longest,
        };
        match outcome {
            Extension::Unchanged => continue,
            Extension::Extended => {}
            Extension::Restarted { broken } => {
                evaluation.awards.push(award(StreakChange::Broken, broken));
            }
        }
        evaluation
            .awards
            .push(award(StreakChange::Extended, streak_state.length));
        extended[index] = true;
    }
    let was_extended = |streak: &str| {
        rules
            .streak_index(streak)
            .is_some_and(|index| extended[index])
    };

    let mut unlocked = vec![false; document.achievements.len()];
    for (index, achievement) in document.achievements.iter().enumerate() {
        if state.achievements.contains_key(&achievement.key) {
            continue;
        }
        let reached = if let Some(metric) = &achievement.metric {
            was_fed(metric)
                && state
                    .metrics
                    .get(metric)
                    .is_some_and(|value| *value >= achievement.threshold)
        } else if let Some(streak) = &achievement.streak {
            was_extended(streak)
                && state
                    .streaks
                    .get(streak)
                    .is_some_and(|streak| f64::from(streak.length) >= achievement.threshold)
        } else {
            false
        };
        if reached {
            let record = Unlocked {
                at,
                event_id: input.event_id,
            };
            state.achievements.insert(achievement.key.clone(), record);
            evaluation.awards.push(Award::Achievement {
                key: achievement.key.clone(),
                name: achievement.name.clone(),
                unlocked_at: at,
            });
            unlocked[index] = true;
        }
    }
    let was_unlocked = |achievement: &str| {
        rules
            .achievement_index(achievement)
            .is_some_and(|index| unlocked[index])
    };

    let mut net = vec![0i64; document.points.len()];
    for (system_index, system) in document.points.iter().enumerate() {
        for (trigger_index, trigger) in system.triggers.iter().enumerate() {
            let (amount, reason) = match (&trigger.metric, trigger.every, &trigger.achievement) {
                (Some(metric), None, _) if was_fed(metric) => {
                    (trigger.points, format!("metric:{metric}"))
                }
                (Some(metric), Some(every), _) if was_fed(metric) => {
                    let value = state.metrics.get(metric).copied().unwrap_or(0.0);
                    let key = every_n_key(system, trigger_index);
                    let amount = every_n(state, system, key, value, every, trigger.points);
                    (
                        amount,
                        format!("metric:{metric} every {}", format_number(every)),
                    )
                }
                (None, _, Some(achievement)) if was_unlocked(achievement) => {
                    (trigger.points, format!("achievement:{achievement}"))
                }
                _ => continue,
            };
            let applied = credit(
                state,
                &mut evaluation,
                &system.key,
                Some(system),
                amount,
                &reason,
            );
            net[system_index] = net[system_index].saturating_add(applied);
        }
    }
    for (system, change) in document.points.iter().zip(&net) {
        if *change != 0 {
            update_level(state, &mut evaluation, system);
        }
    }
    score(rules, &mut evaluation, at, |points_key| {
        rules.points_index(points_key).map_or(0, |index| net[index])
    });
    evaluation
}

/// What `metric` adds for this event, if the event feeds it.
fn feeds(rules: &Rules, index: usize, metric: &Metric, facts: &ConditionFacts<'_>) -> Option<f64> {
    if metric.event != facts.event {
        return None;
    }
    if metric.source == MetricSource::Secret && facts.source != Source::Secret {
        return None;
    }
    let amount = match metric.aggregate {
        Aggregate::Count => 1.0,
        Aggregate::Sum => {
            let property = metric.property.as_deref()?;
            facts.properties?.get(property)?.as_f64()?
        }
    };
    // Last, as the dearest test.
    match rules.condition(index) {
        Some(condition) if !condition.holds(facts) => None,
        _ => Some(amount),
    }
}

/// `a + b`, held at the largest finite value: JSON, where the state is kept, has no infinity.
fn finite_sum(a: f64, b: f64) -> f64 {
    let sum = a + b;
    if sum.is_finite() {
        sum
    } else if sum > 0.0 {
        f64::MAX
    } else {
        f64::MIN
    }
}

/// What an every-N trigger's payments are remembered under: its metric and step, and which of the
/// system's triggers with that same metric and step it is. Not its position: a version applied
/// from now on keeps users' states, and a trigger added or moved before it must not inherit
/// another's count. A changed `points` keeps the count (later steps pay the new amount).
fn every_n_key(system: &PointsSystem, trigger_index: usize) -> String {
    let trigger = &system.triggers[trigger_index];
    let same = |other: &&crate::document::Trigger| {
        other.metric == trigger.metric && other.every == trigger.every
    };
    let occurrence = system.triggers[..trigger_index].iter().filter(same).count();
    format!(
        "{} every {}#{occurrence}",
        trigger.metric.as_deref().unwrap_or_default(),
        trigger.every.map_or_else(String::new, format_number)
    )
}

/// The points an every-N trigger owes now: the trigger's total is `floor(value / every) *
/// points`, and what was paid so far is remembered as a count of Ns, so a value that falls (a
/// refund summed as a negative amount) takes points back.
fn every_n(
    state: &mut UserState,
    system: &PointsSystem,
    key: String,
    value: f64,
    every: f64,
    points: i64,
) -> i64 {
    // `as` saturates, which is the intent for a quotient beyond i64.
    let reached = (value / every).floor() as i64;
    let paid = state
        .points
        .get(&system.key)
        .and_then(|entry| entry.awarded.get(&key).copied())
        .unwrap_or(0);
    if reached == paid {
        return 0;
    }
    points_entry(state, &system.key, Some(system))
        .awarded
        .insert(key, reached);
    reached.saturating_sub(paid).saturating_mul(points)
}

fn format_number(number: f64) -> String {
    whole_as_i64(number).map_or_else(|| number.to_string(), |whole| whole.to_string())
}

pub(crate) fn level_for(levels: &[Level], balance: i64) -> Option<String> {
    levels
        .iter()
        .rev()
        .find(|level| level.at <= balance)
        .map(|level| level.key.clone())
}

/// The user's entry for a points system, created at balance 0 with the level 0 has, so that a
/// first award only announces a level the user did not already have at 0.
fn points_entry<'a>(
    state: &'a mut UserState,
    key: &str,
    system: Option<&PointsSystem>,
) -> &'a mut PointsState {
    state
        .points
        .entry(key.to_owned())
        .or_insert_with(|| PointsState {
            balance: 0,
            level: system.and_then(|system| level_for(&system.levels, 0)),
            awarded: Default::default(),
        })
}

/// Adds `amount` to a balance (saturating), records it, and returns what was applied.
fn credit(
    state: &mut UserState,
    evaluation: &mut Evaluation,
    key: &str,
    system: Option<&PointsSystem>,
    amount: i64,
    reason: &str,
) -> i64 {
    if amount == 0 {
        return 0;
    }
    let entry = points_entry(state, key, system);
    let before = entry.balance;
    entry.balance = before.saturating_add(amount);
    let applied = entry.balance.saturating_sub(before);
    if applied != 0 {
        evaluation.ledger.push(LedgerEntry {
            points_key: key.to_owned(),
            amount: applied,
            reason: reason.to_owned(),
        });
        evaluation.awards.push(Award::Points {
            key: key.to_owned(),
            amount: applied,
            balance: entry.balance,
            reason: reason.to_owned(),
        });
    }
    applied
}

fn update_level(state: &mut UserState, evaluation: &mut Evaluation, system: &PointsSystem) {
    let entry = points_entry(state, &system.key, Some(system));
    let level = level_for(&system.levels, entry.balance);
    if entry.level == level {
        return;
    }
    let previous = std::mem::replace(&mut entry.level, level.clone());
    if let Some(level) = level {
        evaluation.awards.push(Award::Level {
            key: system.key.clone(),
            level,
            previous,
        });
    }
}

/// One score change per leaderboard, in document order, whose points system moved by a
/// non-zero `delta_of(system key)`.
fn score(
    rules: &Rules,
    evaluation: &mut Evaluation,
    at: DateTime<Utc>,
    delta_of: impl Fn(&str) -> i64,
) {
    for board in &rules.document().leaderboards {
        let delta = delta_of(&board.points);
        if delta != 0 {
            evaluation.scores.push(ScoreChange {
                board: board.key.clone(),
                period_start: period_bounds(board.period, rules.timezone(), at).0,
                delta,
                at,
            });
        }
    }
}
