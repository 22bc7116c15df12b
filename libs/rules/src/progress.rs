//! The progress read model: a user's state as the progress endpoint shows it at a given time.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::document::whole_as_i64;
use crate::evaluate::{level_for, user_timezone};
use crate::periods::{local_start, month_key, period_key};
use crate::rules::Rules;
use crate::state::UserState;
use crate::streak::{When, alive, freezes_left};

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Progress {
    /// Every metric of the rules, 0 when never fed; a whole value is written as a JSON integer.
    pub metrics: BTreeMap<String, serde_json::Number>,
    /// Unlocked achievements, in the rules' order.
    pub achievements: Vec<AchievementProgress>,
    pub streaks: BTreeMap<String, StreakProgress>,
    /// Every points system of the rules, and any other key the user has a balance in.
    pub points: BTreeMap<String, PointsProgress>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct AchievementProgress {
    pub key: String,
    pub name: String,
    pub unlocked_at: DateTime<Utc>,
    pub event_id: Uuid,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct StreakProgress {
    /// 0 when the streak is over: the periods missed since it was last extended are more than
    /// the freezes the user has left this month.
    pub length: u32,
    pub longest: u32,
    /// The first instant of the current period (day, week or month, in the user's zone) while
    /// the streak is alive; `None` when `length` is 0.
    pub period_start: Option<DateTime<Utc>>,
    /// Freezes left in the current calendar month (user's zone).
    pub freezes_left: u32,
    /// Extended in the current period: nothing more to do until the next one.
    pub extended_today: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct PointsProgress {
    pub balance: i64,
    /// By the rules' levels at this balance; `None` below every level or for a key no points
    /// system has.
    pub level: Option<String>,
}

pub fn progress(rules: &Rules, state: &UserState, now: DateTime<Utc>) -> Progress {
    let document = rules.document();
    let metrics = document
        .metrics
        .iter()
        .map(|metric| {
            let value = state.metrics.get(&metric.key).copied().unwrap_or(0.0);
            (metric.key.clone(), number(value))
        })
        .collect();

    let achievements = document
        .achievements
        .iter()
        .filter_map(|achievement| {
            let unlocked = state.achievements.get(&achievement.key)?;
            Some(AchievementProgress {
                key: achievement.key.clone(),
                name: achievement.name.clone(),
                unlocked_at: unlocked.at,
                event_id: unlocked.event_id,
            })
        })
        .collect();

    let zone = user_timezone(rules, state);
    let streaks = document
        .streaks
        .iter()
        .map(|streak| {
            let stored = state.streaks.get(&streak.key).cloned().unwrap_or_default();
            let key = period_key(streak.period, zone, now);
            let when = When {
                period: streak.period,
                key,
                month: month_key(zone, now),
                per_month: streak
                    .freezes
                    .as_ref()
                    .map_or(0, |freezes| freezes.per_month),
            };
            let live = alive(&stored, when);
            let view = StreakProgress {
                length: if live { stored.length } else { 0 },
                longest: stored.longest,
                period_start: (live && stored.length > 0).then(|| local_start(zone, key)),
                freezes_left: freezes_left(&stored, when),
                extended_today: live && stored.last == Some(key),
            };
            (streak.key.clone(), view)
        })
        .collect();

    let mut points: BTreeMap<String, PointsProgress> = state
        .points
        .iter()
        .map(|(key, entry)| {
            let view = PointsProgress {
                balance: entry.balance,
                level: None,
            };
            (key.clone(), view)
        })
        .collect();
    for system in &document.points {
        let view = points.entry(system.key.clone()).or_insert(PointsProgress {
            balance: 0,
            level: None,
        });
        view.level = level_for(&system.levels, view.balance);
    }

    Progress {
        metrics,
        achievements,
        streaks,
        points,
    }
}

fn number(value: f64) -> serde_json::Number {
    match whole_as_i64(value) {
        Some(whole) => serde_json::Number::from(whole),
        // Metric values are kept finite, so this always has a number; 0 only keeps it total.
        None => serde_json::Number::from_f64(value).unwrap_or_else(|| serde_json::Number::from(0)),
    }
}
