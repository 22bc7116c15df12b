//! What the engine keeps per user between events. The engine stores it as JSON between batches,
//! so everything here round-trips through serde_json without loss: maps are ordered, instants
//! are RFC 3339 with their full precision, period keys are dates, and metric values stay finite
//! (JSON has no infinity).

use std::collections::BTreeMap;

use chrono::{DateTime, NaiveDate, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct UserState {
    /// The IANA zone from the user's last identify that carried a valid one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timezone: Option<String>,
    /// Metric values by metric key.
    #[serde(default)]
    pub metrics: BTreeMap<String, f64>,
    #[serde(default)]
    pub streaks: BTreeMap<String, StreakState>,
    /// Unlocked achievements by key; an achievement unlocks once, so this only grows.
    #[serde(default)]
    pub achievements: BTreeMap<String, Unlocked>,
    /// Points by points-system key; may hold keys no system has (manual adjustments).
    #[serde(default)]
    pub points: BTreeMap<String, PointsState>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct StreakState {
    pub length: u32,
    pub longest: u32,
    /// The key (first local date) of the last period the streak was extended for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last: Option<NaiveDate>,
    /// The month (its first local date) that `freezes_used` counts for; a later month starts
    /// from none used.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub freezes_month: Option<NaiveDate>,
    #[serde(default)]
    pub freezes_used: u32,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct Unlocked {
    pub at: DateTime<Utc>,
    pub event_id: Uuid,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct PointsState {
    pub balance: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub level: Option<String>,
    /// For each every-N trigger, by its metric, step and occurrence (`"revenue every 100#0"`):
    /// how many whole Ns have been paid for.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub awarded: BTreeMap<String, i64>,
}
