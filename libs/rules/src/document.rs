//! The rule document as typed values: the public JSON contract, camelCase.
//!
//! These types accept more than a valid document (any string as a key, any number as a
//! threshold); [`crate::Rules::parse`] is what checks a document, and a `RuleSet` reached through
//! [`crate::Rules::document`] has passed those checks.

use serde::{Deserialize, Serialize, Serializer};

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RuleSet {
    /// IANA name; UTC when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timezone: Option<String>,
    #[serde(default)]
    pub metrics: Vec<Metric>,
    #[serde(default)]
    pub streaks: Vec<Streak>,
    #[serde(default)]
    pub achievements: Vec<Achievement>,
    #[serde(default)]
    pub points: Vec<PointsSystem>,
    #[serde(default)]
    pub leaderboards: Vec<Leaderboard>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Metric {
    pub key: String,
    pub event: String,
    pub aggregate: Aggregate,
    #[serde(default)]
    pub source: MetricSource,
    /// The property summed; only with [`Aggregate::Sum`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub property: Option<String>,
    /// A CEL expression over `event`, `properties`, `userId` and `source`.
    #[serde(rename = "where", default, skip_serializing_if = "Option::is_none")]
    pub condition: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Aggregate {
    Count,
    Sum,
}

/// Which events a metric may count. Secret is the default because a publishable key lives in a
/// browser, where anyone can send any event: rewards should not follow from those unless a rule
/// says so.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MetricSource {
    #[default]
    Secret,
    Any,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Period {
    Day,
    Week,
    Month,
    AllTime,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Streak {
    pub key: String,
    pub metric: String,
    /// Day, week or month; validation refuses `all_time`, which has no next period.
    pub period: Period,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub freezes: Option<Freezes>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Freezes {
    #[serde(default)]
    pub per_month: u32,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Achievement {
    pub key: String,
    pub name: String,
    /// Exactly one of `metric` and `streak` is set in a valid document.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metric: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub streak: Option<String>,
    #[serde(serialize_with = "number")]
    pub threshold: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PointsSystem {
    pub key: String,
    pub name: String,
    pub triggers: Vec<Trigger>,
    #[serde(default)]
    pub levels: Vec<Level>,
}

/// `{metric, points}`, `{metric, every, points}` or `{achievement, points}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Trigger {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metric: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub achievement: Option<String>,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        serialize_with = "optional_number"
    )]
    pub every: Option<f64>,
    pub points: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Level {
    pub key: String,
    pub at: i64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Leaderboard {
    pub key: String,
    /// The points system ranked.
    pub points: String,
    pub period: Period,
    pub size: u32,
}

/// Writes a whole number as a JSON integer, so that a document written as `"threshold": 7` reads
/// back as `7` and not `7.0`.
fn number<S: Serializer>(value: &f64, serializer: S) -> Result<S::Ok, S::Error> {
    match whole_as_i64(*value) {
        Some(whole) => serializer.serialize_i64(whole),
        None => serializer.serialize_f64(*value),
    }
}

fn optional_number<S: Serializer>(value: &Option<f64>, serializer: S) -> Result<S::Ok, S::Error> {
    match value {
        Some(value) => number(value, serializer),
        None => serializer.serialize_none(),
    }
}

/// `value` as an i64 when it is a whole number that i64 holds exactly.
pub(crate) fn whole_as_i64(value: f64) -> Option<i64> {
    // 2^63 is exactly representable; anything below it that is whole fits in an i64.
    const LIMIT: f64 = 9_223_372_036_854_775_808.0;
    (value.fract() == 0.0 && (-LIMIT..LIMIT).contains(&value)).then_some(value as i64)
}
