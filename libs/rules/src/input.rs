//! One event as the engine hands it to [`crate::apply`].

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// Which kind of key sent the event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Source {
    Secret,
    Publishable,
}

impl Source {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Source::Secret => "secret",
            Source::Publishable => "publishable",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    Track,
    /// Feeds no metric; may set the user's time zone from the `timezone` trait.
    Identify,
}

#[derive(Debug, Clone)]
pub struct Input<'a> {
    pub event_id: uuid::Uuid,
    pub kind: Kind,
    pub name: &'a str,
    pub source: Source,
    pub user_id: &'a str,
    pub properties: Option<&'a Map<String, Value>>,
    pub traits: Option<&'a Map<String, Value>>,
    /// The time the client says the event happened.
    pub occurred_at: DateTime<Utc>,
    /// When the gateway received the event.
    pub received_at: DateTime<Utc>,
}

impl Input<'_> {
    /// The time the rules count the event at: which day a streak is extended for, which
    /// leaderboard period it scores in, what an achievement's `unlockedAt` says.
    ///
    /// A server (secret key) may report an event late, so its `occurred_at` is used, but never a
    /// time after it was received: a clock running ahead must not extend tomorrow's streak today.
    /// A browser (publishable key) is anyone's to script, so its `occurred_at` is ignored and
    /// `received_at` used: otherwise a user could backdate events to fill the gaps in a streak.
    pub fn effective_time(&self) -> DateTime<Utc> {
        match self.source {
            Source::Secret => self.occurred_at.min(self.received_at),
            Source::Publishable => self.received_at,
        }
    }
}
