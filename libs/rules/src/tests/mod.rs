//! Unit tests, one file per part of the crate; shared fixtures here.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod condition;
mod evaluate;
mod periods;
mod progress;
mod validate;

use chrono::{DateTime, Utc};
use serde_json::{Map, Value, json};
use uuid::Uuid;

use crate::{Input, Kind, Rules, Source};

/// The example document of the crate's contract.
pub(crate) fn example() -> Value {
    json!({
      "timezone": "Europe/Berlin",
      "metrics": [
        {"key": "purchases", "event": "purchase", "aggregate": "count"},
        {"key": "revenue", "event": "purchase", "aggregate": "sum", "property": "amount"},
        {"key": "lessons", "event": "lesson_completed", "aggregate": "count", "source": "any",
         "where": "properties.score >= 50"}
      ],
      "streaks": [{"key": "daily_lessons", "metric": "lessons", "period": "day", "freezes": {"perMonth": 2}}],
      "achievements": [
        {"key": "first_purchase", "name": "First purchase", "metric": "purchases", "threshold": 1},
        {"key": "big_spender", "name": "Big spender", "metric": "revenue", "threshold": 100000},
        {"key": "on_fire", "name": "7-day streak", "streak": "daily_lessons", "threshold": 7}
      ],
      "points": [{"key": "xp", "name": "XP",
        "triggers": [{"metric": "lessons", "points": 10},
                     {"metric": "revenue", "every": 100, "points": 1},
                     {"achievement": "first_purchase", "points": 100}],
        "levels": [{"key": "bronze", "at": 0}, {"key": "silver", "at": 500}, {"key": "gold", "at": 2000}]}],
      "leaderboards": [{"key": "weekly_xp", "points": "xp", "period": "week", "size": 100}]
    })
}

pub(crate) fn rules(document: &Value) -> Rules {
    Rules::parse(document).unwrap()
}

pub(crate) fn at(text: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(text)
        .unwrap()
        .with_timezone(&Utc)
}

/// An event that owns what an [`Input`] borrows.
#[derive(Debug, Clone)]
pub(crate) struct Event {
    pub id: Uuid,
    pub kind: Kind,
    pub name: String,
    pub source: Source,
    pub user_id: String,
    pub properties: Option<Map<String, Value>>,
    pub traits: Option<Map<String, Value>>,
    pub occurred_at: DateTime<Utc>,
    pub received_at: DateTime<Utc>,
}

impl Event {
    /// A secret-key track event at `time`, received at once.
    pub fn track(name: &str, time: &str) -> Self {
        let time = at(time);
        Self {
            id: Uuid::from_u128(time.timestamp_micros().unsigned_abs().into()),
            kind: Kind::Track,
            name: name.to_owned(),
            source: Source::Secret,
            user_id: String::from("user_1"),
            properties: None,
            traits: None,
            occurred_at: time,
            received_at: time,
        }
    }

    pub fn identify(time: &str, traits: Value) -> Self {
        let mut event = Self::track("$identify", time);
        event.kind = Kind::Identify;
        event.traits = traits.as_object().cloned();
        event
    }

    pub fn properties(mut self, properties: Value) -> Self {
        self.properties = properties.as_object().cloned();
        self
    }

    pub fn publishable(mut self) -> Self {
        self.source = Source::Publishable;
        self
    }

    pub fn input(&self) -> Input<'_> {
        Input {
            event_id: self.id,
            kind: self.kind,
            name: &self.name,
            source: self.source,
            user_id: &self.user_id,
            properties: self.properties.as_ref(),
            traits: self.traits.as_ref(),
            occurred_at: self.occurred_at,
            received_at: self.received_at,
        }
    }
}

/// A lesson with a passing score at `time`.
pub(crate) fn lesson(time: &str) -> Event {
    Event::track("lesson_completed", time).properties(json!({"score": 80}))
}

pub(crate) fn purchase(time: &str, amount: i64) -> Event {
    Event::track("purchase", time).properties(json!({"amount": amount}))
}
