//! [`Rules`]: a rule document that has passed validation, ready to evaluate events with.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

use chrono_tz::Tz;

use crate::condition::Condition;
use crate::document::RuleSet;
use crate::error::RuleError;
use crate::parse::read;
use crate::validate::validate;

/// A valid rule document with its conditions compiled. Cheap to clone: engine workers share one.
#[derive(Clone)]
pub struct Rules {
    inner: Arc<Inner>,
}

struct Inner {
    document: RuleSet,
    timezone: Tz,
    /// By metric index.
    conditions: Vec<Option<Arc<dyn Condition>>>,
    metrics: BTreeMap<String, usize>,
    streaks: BTreeMap<String, usize>,
    achievements: BTreeMap<String, usize>,
    points: BTreeMap<String, usize>,
}

impl fmt::Debug for Rules {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Rules")
            .field("document", &self.inner.document)
            .field("timezone", &self.inner.timezone)
            .finish_non_exhaustive()
    }
}

impl Rules {
    /// Reads and validates a rule document. On failure, every problem found, each with the JSON
    /// path (from `$`) of the value at fault.
    pub fn parse(document: &serde_json::Value) -> Result<Rules, Vec<RuleError>> {
        let (document, shape_errors) = read(document);
        let unreadable: Vec<&str> = ["metrics", "streaks", "achievements", "points"]
            .into_iter()
            .filter(|list| {
                shape_errors
                    .iter()
                    .any(|error| hides_a_key(&error.path, list))
            })
            .collect();
        let (rule_errors, conditions) = validate(&document, &unreadable);
        // A field that could not be read holds a placeholder; what validation says about it, or
        // about anything inside it, would only repeat the shape error.
        let mut errors = shape_errors.clone();
        errors.extend(rule_errors.into_iter().filter(|error| {
            !shape_errors
                .iter()
                .any(|shape| within(&error.path, &shape.path))
        }));
        if !errors.is_empty() {
            return Err(errors);
        }
        // Validation has checked the name.
        let timezone = document
            .timezone
            .as_deref()
            .and_then(|name| name.parse().ok())
            .unwrap_or(Tz::UTC);
        let index = |keys: Vec<&String>| {
            keys.into_iter()
                .enumerate()
                .map(|(index, key)| (key.clone(), index))
                .collect::<BTreeMap<_, _>>()
        };
        let inner = Inner {
            metrics: index(document.metrics.iter().map(|metric| &metric.key).collect()),
            streaks: index(document.streaks.iter().map(|streak| &streak.key).collect()),
            achievements: index(document.achievements.iter().map(|a| &a.key).collect()),
            points: index(document.points.iter().map(|system| &system.key).collect()),
            document,
            timezone,
            conditions,
        };
        Ok(Rules {
            inner: Arc::new(inner),
        })
    }

    pub fn document(&self) -> &RuleSet {
        &self.inner.document
    }

    /// The rule set's zone: leaderboard periods, and streaks of users with no zone of their own.
    pub fn timezone(&self) -> Tz {
        self.inner.timezone
    }

    pub(crate) fn condition(&self, metric: usize) -> Option<&dyn Condition> {
        self.inner.conditions.get(metric).and_then(|c| c.as_deref())
    }

    pub(crate) fn metric_index(&self, key: &str) -> Option<usize> {
        self.inner.metrics.get(key).copied()
    }

    pub(crate) fn streak_index(&self, key: &str) -> Option<usize> {
        self.inner.streaks.get(key).copied()
    }

    pub(crate) fn achievement_index(&self, key: &str) -> Option<usize> {
        self.inner.achievements.get(key).copied()
    }

    pub(crate) fn points_index(&self, key: &str) -> Option<usize> {
        self.inner.points.get(key).copied()
    }
}

/// Whether `path` is `ancestor` or inside it (`$.a[1]` is inside `$.a`, `$.ab` is not).
fn within(path: &str, ancestor: &str) -> bool {
    path.strip_prefix(ancestor)
        .is_some_and(|rest| rest.is_empty() || rest.starts_with('.') || rest.starts_with('['))
}

/// Whether an error at `path` means a key of `$.list` could not be read: the list itself, one of
/// its elements, or an element's key.
fn hides_a_key(path: &str, list: &str) -> bool {
    let Some(rest) = path
        .strip_prefix("$.")
        .and_then(|rest| rest.strip_prefix(list))
    else {
        return false;
    };
    if rest.is_empty() {
        return true;
    }
    let Some(index_end) = rest.strip_prefix('[').and_then(|rest| rest.find(']')) else {
        return false;
    };
    let after = &rest[index_end + 2..];
    rest[1..=index_end].chars().all(|c| c.is_ascii_digit()) && (after.is_empty() || after == ".key")
}
