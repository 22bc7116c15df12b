//! Reads a rule document from JSON into [`RuleSet`], reporting every shape error (unknown field,
//! missing field, wrong type, unknown enum value) with its path rather than stopping at the first
//! as serde would.
//!
//! A field that cannot be read is given a placeholder and its error recorded; [`read`] returns
//! the document with the placeholders so that validation still runs on everything else. The
//! caller drops validation errors at or below a path that already has a shape error, so a
//! placeholder never shows up as a second error.

use serde_json::{Map, Value};

use crate::document::{
    Achievement, Aggregate, Freezes, Leaderboard, Level, Metric, MetricSource, Period,
    PointsSystem, RuleSet, Streak, Trigger,
};
use crate::error::{RuleError, codes};

/// The document read from `value`, with placeholders where fields could not be read, and the
/// shape errors found.
pub(crate) fn read(value: &Value) -> (RuleSet, Vec<RuleError>) {
    let mut reader = Reader::default();
    let document = reader.rule_set(value);
    (document, reader.errors)
}

#[derive(Default)]
struct Reader {
    errors: Vec<RuleError>,
}

/// A JSON object being read: which fields it may have, and its path.
struct Object<'a> {
    map: &'a Map<String, Value>,
    path: String,
}

impl Object<'_> {
    fn field_path(&self, name: &str) -> String {
        field_path(&self.path, name)
    }
}

pub(crate) fn field_path(parent: &str, name: &str) -> String {
    let plain = name
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
    if plain {
        format!("{parent}.{name}")
    } else {
        // Serializing a str cannot fail; the fallback only keeps the function total.
        let quoted = serde_json::to_string(name).unwrap_or_else(|_| String::from("\"?\""));
        format!("{parent}[{quoted}]")
    }
}

pub(crate) fn index_path(parent: &str, index: usize) -> String {
    format!("{parent}[{index}]")
}

fn type_name(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

impl Reader {
    fn error(&mut self, path: impl Into<String>, code: &'static str, message: impl Into<String>) {
        self.errors.push(RuleError::new(path, code, message));
    }

    fn wrong_type(&mut self, path: String, expected: &str, found: &Value) {
        let message = format!("expected {expected}, found {}", type_name(found));
        self.error(path, codes::INVALID_TYPE, message);
    }

    fn object<'a>(
        &mut self,
        value: &'a Value,
        path: String,
        fields: &[&str],
    ) -> Option<Object<'a>> {
        let Value::Object(map) = value else {
            self.wrong_type(path, "an object", value);
            return None;
        };
        for name in map.keys() {
            if !fields.contains(&name.as_str()) {
                let message = format!(
                    "unknown field `{name}`, expected one of: {}",
                    fields.join(", ")
                );
                self.error(field_path(&path, name), codes::UNKNOWN_FIELD, message);
            }
        }
        Some(Object { map, path })
    }

    /// A field that must be present and not null.
    fn required<'a>(&mut self, object: &Object<'a>, name: &str) -> Option<&'a Value> {
        match object.map.get(name) {
            Some(value) => Some(value),
            None => {
                let message = format!("`{name}` is required");
                self.error(object.field_path(name), codes::MISSING_FIELD, message);
                None
            }
        }
    }

    /// A field that may be absent or null (serde's reading of `Option`).
    fn optional<'a>(object: &Object<'a>, name: &str) -> Option<&'a Value> {
        object.map.get(name).filter(|value| !value.is_null())
    }

    fn string(&mut self, value: &Value, path: String) -> Option<String> {
        match value {
            Value::String(text) => Some(text.clone()),
            other => {
                self.wrong_type(path, "a string", other);
                None
            }
        }
    }

    fn required_string(&mut self, object: &Object<'_>, name: &str) -> String {
        self.required(object, name)
            .and_then(|value| self.string(value, object.field_path(name)))
            .unwrap_or_default()
    }

    fn optional_string(&mut self, object: &Object<'_>, name: &str) -> Option<String> {
        Self::optional(object, name).and_then(|value| self.string(value, object.field_path(name)))
    }

    fn float(&mut self, value: &Value, path: String) -> Option<f64> {
        match value.as_f64() {
            Some(number) => Some(number),
            None => {
                self.wrong_type(path, "a number", value);
                None
            }
        }
    }

    fn integer(&mut self, value: &Value, path: String) -> Option<i64> {
        match value {
            Value::Number(number) => {
                if let Some(integer) = number.as_i64() {
                    Some(integer)
                } else if number.is_u64() {
                    self.error(path, codes::INVALID_VALUE, "integer out of range");
                    None
                } else {
                    self.wrong_type(path, "an integer", value);
                    None
                }
            }
            other => {
                self.wrong_type(path, "an integer", other);
                None
            }
        }
    }

    fn unsigned(&mut self, value: &Value, path: String) -> Option<u32> {
        let integer = self.integer(value, path.clone())?;
        match u32::try_from(integer) {
            Ok(unsigned) => Some(unsigned),
            Err(_) => {
                self.error(
                    path,
                    codes::INVALID_VALUE,
                    "expected a non-negative integer below 2^32",
                );
                None
            }
        }
    }

    /// One of a fixed set of strings.
    fn choice<T: Copy>(&mut self, value: &Value, path: String, choices: &[(&str, T)]) -> Option<T> {
        let text = self.string(value, path.clone())?;
        match choices.iter().find(|(name, _)| *name == text) {
            Some((_, choice)) => Some(*choice),
            None => {
                let names: Vec<&str> = choices.iter().map(|(name, _)| *name).collect();
                let message = format!(
                    "unknown value `{text}`, expected one of: {}",
                    names.join(", ")
                );
                self.error(path, codes::INVALID_VALUE, message);
                None
            }
        }
    }

    /// The elements of an array field; a non-array is an error and reads as empty. Elements that
    /// cannot be read still take their place (as a placeholder from `element`), so that indices
    /// in later validation paths match the JSON's.
    fn array<T>(
        &mut self,
        object: &Object<'_>,
        name: &str,
        required: bool,
        mut element: impl FnMut(&mut Self, &Value, String) -> T,
    ) -> Vec<T> {
        let value = if required {
            self.required(object, name)
        } else {
            object.map.get(name)
        };
        let path = object.field_path(name);
        match value {
            None => Vec::new(),
            Some(Value::Array(items)) => items
                .iter()
                .enumerate()
                .map(|(index, item)| element(self, item, index_path(&path, index)))
                .collect(),
            Some(other) => {
                self.wrong_type(path, "an array", other);
                Vec::new()
            }
        }
    }

    fn rule_set(&mut self, value: &Value) -> RuleSet {
        let fields = [
            "timezone",
            "metrics",
            "streaks",
            "achievements",
            "points",
            "leaderboards",
        ];
        let Some(root) = self.object(value, String::from("$"), &fields) else {
            return RuleSet::default();
        };
        RuleSet {
            timezone: self.optional_string(&root, "timezone"),
            metrics: self.array(&root, "metrics", false, Self::metric),
            streaks: self.array(&root, "streaks", false, Self::streak),
            achievements: self.array(&root, "achievements", false, Self::achievement),
            points: self.array(&root, "points", false, Self::points_system),
            leaderboards: self.array(&root, "leaderboards", false, Self::leaderboard),
        }
    }

    fn metric(&mut self, value: &Value, path: String) -> Metric {
        let fields = ["key", "event", "aggregate", "source", "property", "where"];
        let mut metric = Metric {
            key: String::new(),
            event: String::new(),
            aggregate: Aggregate::Count,
            source: MetricSource::Secret,
            property: None,
            condition: None,
        };
        let Some(object) = self.object(value, path, &fields) else {
            return metric;
        };
        metric.key = self.required_string(&object, "key");
        metric.event = self.required_string(&object, "event");
        let aggregates = [("count", Aggregate::Count), ("sum", Aggregate::Sum)];
        if let Some(value) = self.required(&object, "aggregate") {
            if let Some(aggregate) = self.choice(value, object.field_path("aggregate"), &aggregates)
            {
                metric.aggregate = aggregate;
            }
        }
        let sources = [("secret", MetricSource::Secret), ("any", MetricSource::Any)];
        if let Some(value) = object.map.get("source") {
            if let Some(source) = self.choice(value, object.field_path("source"), &sources) {
                metric.source = source;
            }
        }
        metric.property = self.optional_string(&object, "property");
        metric.condition = self.optional_string(&object, "where");
        metric
    }

    fn period(&mut self, object: &Object<'_>) -> Period {
        let periods = [
            ("day", Period::Day),
            ("week", Period::Week),
            ("month", Period::Month),
            ("all_time", Period::AllTime),
        ];
        self.required(object, "period")
            .and_then(|value| self.choice(value, object.field_path("period"), &periods))
            .unwrap_or(Period::Day)
    }

    fn streak(&mut self, value: &Value, path: String) -> Streak {
        let mut streak = Streak {
            key: String::new(),
            metric: String::new(),
            period: Period::Day,
            freezes: None,
        };
        let Some(object) = self.object(value, path, &["key", "metric", "period", "freezes"]) else {
            return streak;
        };
        streak.key = self.required_string(&object, "key");
        streak.metric = self.required_string(&object, "metric");
        streak.period = self.period(&object);
        if let Some(value) = Self::optional(&object, "freezes") {
            let mut freezes = Freezes::default();
            if let Some(inner) = self.object(value, object.field_path("freezes"), &["perMonth"]) {
                if let Some(value) = inner.map.get("perMonth") {
                    if let Some(per_month) = self.unsigned(value, inner.field_path("perMonth")) {
                        freezes.per_month = per_month;
                    }
                }
            }
            streak.freezes = Some(freezes);
        }
        streak
    }

    fn achievement(&mut self, value: &Value, path: String) -> Achievement {
        let mut achievement = Achievement {
            key: String::new(),
            name: String::new(),
            metric: None,
            streak: None,
            threshold: 0.0,
        };
        let fields = ["key", "name", "metric", "streak", "threshold"];
        let Some(object) = self.object(value, path, &fields) else {
            return achievement;
        };
        achievement.key = self.required_string(&object, "key");
        achievement.name = self.required_string(&object, "name");
        achievement.metric = self.optional_string(&object, "metric");
        achievement.streak = self.optional_string(&object, "streak");
        if let Some(value) = self.required(&object, "threshold") {
            if let Some(threshold) = self.float(value, object.field_path("threshold")) {
                achievement.threshold = threshold;
            }
        }
        achievement
    }

    fn points_system(&mut self, value: &Value, path: String) -> PointsSystem {
        let mut system = PointsSystem {
            key: String::new(),
            name: String::new(),
            triggers: Vec::new(),
            levels: Vec::new(),
        };
        let fields = ["key", "name", "triggers", "levels"];
        let Some(object) = self.object(value, path, &fields) else {
            return system;
        };
        system.key = self.required_string(&object, "key");
        system.name = self.required_string(&object, "name");
        system.triggers = self.array(&object, "triggers", true, Self::trigger);
        system.levels = self.array(&object, "levels", false, Self::level);
        system
    }

    fn trigger(&mut self, value: &Value, path: String) -> Trigger {
        let mut trigger = Trigger {
            metric: None,
            achievement: None,
            every: None,
            points: 0,
        };
        let fields = ["metric", "achievement", "every", "points"];
        let Some(object) = self.object(value, path, &fields) else {
            return trigger;
        };
        trigger.metric = self.optional_string(&object, "metric");
        trigger.achievement = self.optional_string(&object, "achievement");
        if let Some(value) = Self::optional(&object, "every") {
            // An unreadable `every` stays set so that the trigger keeps its every-N shape.
            trigger.every = Some(self.float(value, object.field_path("every")).unwrap_or(1.0));
        }
        if let Some(value) = self.required(&object, "points") {
            if let Some(points) = self.integer(value, object.field_path("points")) {
                trigger.points = points;
            }
        }
        trigger
    }

    fn level(&mut self, value: &Value, path: String) -> Level {
        let mut level = Level {
            key: String::new(),
            at: 0,
        };
        let Some(object) = self.object(value, path, &["key", "at"]) else {
            return level;
        };
        level.key = self.required_string(&object, "key");
        if let Some(value) = self.required(&object, "at") {
            if let Some(at) = self.integer(value, object.field_path("at")) {
                level.at = at;
            }
        }
        level
    }

    fn leaderboard(&mut self, value: &Value, path: String) -> Leaderboard {
        let mut board = Leaderboard {
            key: String::new(),
            points: String::new(),
            period: Period::AllTime,
            size: 1,
        };
        let Some(object) = self.object(value, path, &["key", "points", "period", "size"]) else {
            return board;
        };
        board.key = self.required_string(&object, "key");
        board.points = self.required_string(&object, "points");
        board.period = self.period(&object);
        if let Some(value) = self.required(&object, "size") {
            if let Some(size) = self.unsigned(value, object.field_path("size")) {
                board.size = size;
            }
        }
        board
    }
}
