//! The checks on a document that its shape does not express: key syntax and uniqueness, limits,
//! value ranges, references, time zones and conditions. Every problem is reported, each with
//! the JSON path of the value at fault.
//!
//! Why there can be no cycle: every reference points from one kind to a kind declared before it
//! in this order, never to its own kind or a later one:
//!
//! ```text
//! metrics ← streaks ← achievements ← points systems ← leaderboards
//!    ↑__________________|      ↑___________|
//! ```
//!
//! (streak → metric; achievement → metric or streak; trigger → metric or achievement;
//! leaderboard → points system.) So evaluation is one pass in that order. In particular no
//! achievement can depend on points, so points awarded for an achievement can never unlock
//! another. A reference to the element's own kind, the only shape a self-reference could take,
//! cannot be written: no kind has a field naming its own kind (a metric with a `metric` field,
//! a leaderboard with a `leaderboard` field, …), and such a field is refused as unknown.

use std::collections::BTreeMap;
use std::sync::Arc;

use chrono_tz::Tz;

use crate::condition::{Condition, compile};
use crate::document::{Aggregate, Period, RuleSet};
use crate::error::{RuleError, codes};
use crate::parse::{field_path, index_path};

/// What a reference names, and the list it looks in.
const METRIC: (&str, &str) = ("metric", "metrics");
const STREAK: (&str, &str) = ("streak", "streaks");
const ACHIEVEMENT: (&str, &str) = ("achievement", "achievements");
const POINTS_SYSTEM: (&str, &str) = ("points system", "points");

pub(crate) const MAX_METRICS: usize = 100;
pub(crate) const MAX_STREAKS: usize = 100;
pub(crate) const MAX_ACHIEVEMENTS: usize = 500;
pub(crate) const MAX_POINTS_SYSTEMS: usize = 20;
pub(crate) const MAX_TRIGGERS: usize = 50;
pub(crate) const MAX_LEVELS: usize = 100;
pub(crate) const MAX_LEADERBOARDS: usize = 20;
pub(crate) const MAX_CONDITION_CHARS: usize = crate::condition::MAX_CHARS;
pub(crate) const MAX_NAME_CHARS: usize = 200;
pub(crate) const MAX_FREEZES_PER_MONTH: u32 = 31;
pub(crate) const MAX_TRIGGER_POINTS: i64 = 1_000_000_000;
pub(crate) const MAX_BOARD_SIZE: u32 = 1000;

/// The errors in `document`, and each metric's compiled condition (by metric index; `None` for
/// a metric without one or whose condition is in error).
///
/// `unreadable` names the lists (`"metrics"`, …) in which some key could not be read: a
/// reference to such a list may well be to that key, so it is not reported as unknown.
pub(crate) fn validate(
    document: &RuleSet,
    unreadable: &[&str],
) -> (Vec<RuleError>, Vec<Option<Arc<dyn Condition>>>) {
    let mut checker = Checker {
        errors: Vec::new(),
        unreadable: unreadable.iter().map(|list| (*list).to_owned()).collect(),
    };
    if let Some(timezone) = &document.timezone {
        if timezone.parse::<Tz>().is_err() {
            checker.error(
                "$.timezone",
                codes::INVALID_TIMEZONE,
                format!("`{timezone}` is not an IANA time zone name"),
            );
        }
    }
    let conditions = checker.metrics(document);
    checker.streaks(document);
    checker.achievements(document);
    checker.points(document);
    checker.leaderboards(document);
    (checker.errors, conditions)
}

struct Checker {
    errors: Vec<RuleError>,
    unreadable: Vec<String>,
}

/// `^[a-z][a-z0-9_]{0,63}$`
pub(crate) fn is_valid_key(key: &str) -> bool {
    let mut chars = key.chars();
    chars.next().is_some_and(|c| c.is_ascii_lowercase())
        && key.len() <= 64
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
}

impl Checker {
    fn error(&mut self, path: impl Into<String>, code: &'static str, message: impl Into<String>) {
        self.errors.push(RuleError::new(path, code, message));
    }

    fn count(&mut self, path: &str, what: &str, count: usize, max: usize) {
        if count > max {
            self.error(
                path,
                codes::TOO_MANY,
                format!("at most {max} {what}, found {count}"),
            );
        }
    }

    /// Checks the keys of one kind (`items` gives each element's path and key) and returns the
    /// index of each valid, first-seen key.
    fn keys<'a>(
        &mut self,
        items: impl Iterator<Item = (String, &'a str)>,
    ) -> BTreeMap<&'a str, usize> {
        let mut seen = BTreeMap::new();
        for (index, (path, key)) in items.enumerate() {
            let path = field_path(&path, "key");
            if !is_valid_key(key) {
                self.error(
                    path,
                    codes::INVALID_KEY,
                    format!("`{key}` is not a key: a lowercase letter, then up to 63 lowercase letters, digits or _"),
                );
            } else if let Some(first) = seen.get(key) {
                self.error(
                    path,
                    codes::DUPLICATE_KEY,
                    format!("`{key}` is already the key of element {first}"),
                );
            } else {
                seen.insert(key, index);
            }
        }
        seen
    }

    fn text(&mut self, path: String, what: &str, text: &str) {
        let length = text.chars().count();
        if !(1..=MAX_NAME_CHARS).contains(&length) {
            self.error(
                path,
                codes::INVALID_VALUE,
                format!("{what} must be 1 to {MAX_NAME_CHARS} characters, found {length}"),
            );
        }
    }

    fn reference(
        &mut self,
        path: String,
        (kind, list): (&str, &str),
        key: &str,
        known: &BTreeMap<&str, usize>,
    ) {
        if !known.contains_key(key) && !self.unreadable.iter().any(|name| name == list) {
            self.error(
                path,
                codes::UNKNOWN_REFERENCE,
                format!("there is no {kind} `{key}`"),
            );
        }
    }

    /// The `{a}` xor `{b}` reference fields of an achievement or a trigger.
    fn exactly_one(&mut self, path: &str, a: (&str, bool), b: (&str, bool)) -> bool {
        match (a.1, b.1) {
            (true, false) | (false, true) => true,
            (true, true) => {
                let message = format!("give `{}` or `{}`, not both", a.0, b.0);
                self.error(field_path(path, b.0), codes::INVALID_VALUE, message);
                false
            }
            (false, false) => {
                let message = format!("one of `{}` and `{}` is required", a.0, b.0);
                self.error(field_path(path, a.0), codes::MISSING_FIELD, message);
                false
            }
        }
    }

    fn metrics(&mut self, document: &RuleSet) -> Vec<Option<Arc<dyn Condition>>> {
        self.count("$.metrics", "metrics", document.metrics.len(), MAX_METRICS);
        self.keys(
            document
                .metrics
                .iter()
                .enumerate()
                .map(|(index, metric)| (index_path("$.metrics", index), metric.key.as_str())),
        );
        let mut conditions = Vec::with_capacity(document.metrics.len());
        for (index, metric) in document.metrics.iter().enumerate() {
            let path = index_path("$.metrics", index);
            let length = metric.event.chars().count();
            if !(1..=MAX_NAME_CHARS).contains(&length) || metric.event.starts_with('$') {
                self.error(
                    field_path(&path, "event"),
                    codes::INVALID_VALUE,
                    format!("an event name is 1 to {MAX_NAME_CHARS} characters and does not start with `$`"),
                );
            }
            match (metric.aggregate, &metric.property) {
                (Aggregate::Sum, None) => self.error(
                    field_path(&path, "property"),
                    codes::MISSING_FIELD,
                    "a sum needs the `property` it adds up",
                ),
                (Aggregate::Sum, Some(property)) => {
                    self.text(field_path(&path, "property"), "a property name", property)
                }
                (Aggregate::Count, Some(_)) => self.error(
                    field_path(&path, "property"),
                    codes::INVALID_VALUE,
                    "a count adds 1 per event and takes no `property`",
                ),
                (Aggregate::Count, None) => {}
            }
            conditions.push(
                metric
                    .condition
                    .as_deref()
                    .and_then(|condition| self.condition(field_path(&path, "where"), condition)),
            );
        }
        conditions
    }

    fn condition(&mut self, path: String, condition: &str) -> Option<Arc<dyn Condition>> {
        let length = condition.chars().count();
        if length > MAX_CONDITION_CHARS {
            let message = format!("at most {MAX_CONDITION_CHARS} characters, found {length}");
            self.error(path, codes::INVALID_VALUE, message);
            return None;
        }
        match compile(condition) {
            Ok(compiled) => Some(compiled),
            Err(reason) => {
                self.error(path, codes::INVALID_CONDITION, reason);
                None
            }
        }
    }

    fn streaks(&mut self, document: &RuleSet) {
        self.count("$.streaks", "streaks", document.streaks.len(), MAX_STREAKS);
        self.keys(
            document
                .streaks
                .iter()
                .enumerate()
                .map(|(index, streak)| (index_path("$.streaks", index), streak.key.as_str())),
        );
        let metrics = metric_keys(document);
        for (index, streak) in document.streaks.iter().enumerate() {
            let path = index_path("$.streaks", index);
            self.reference(
                field_path(&path, "metric"),
                METRIC,
                &streak.metric,
                &metrics,
            );
            if streak.period == Period::AllTime {
                self.error(
                    field_path(&path, "period"),
                    codes::INVALID_VALUE,
                    "a streak's period is day, week or month",
                );
            }
            if let Some(freezes) = &streak.freezes {
                if freezes.per_month > MAX_FREEZES_PER_MONTH {
                    self.error(
                        field_path(&field_path(&path, "freezes"), "perMonth"),
                        codes::INVALID_VALUE,
                        format!("at most {MAX_FREEZES_PER_MONTH} freezes per month"),
                    );
                }
            }
        }
    }

    fn achievements(&mut self, document: &RuleSet) {
        let count = document.achievements.len();
        self.count("$.achievements", "achievements", count, MAX_ACHIEVEMENTS);
        self.keys(
            document
                .achievements
                .iter()
                .enumerate()
                .map(|(index, achievement)| {
                    (
                        index_path("$.achievements", index),
                        achievement.key.as_str(),
                    )
                }),
        );
        let metrics = metric_keys(document);
        let streaks = streak_keys(document);
        for (index, achievement) in document.achievements.iter().enumerate() {
            let path = index_path("$.achievements", index);
            self.text(field_path(&path, "name"), "a name", &achievement.name);
            let threshold_path = field_path(&path, "threshold");
            let threshold = achievement.threshold;
            let metric = ("metric", achievement.metric.is_some());
            let streak = ("streak", achievement.streak.is_some());
            if !self.exactly_one(&path, metric, streak) {
                continue;
            }
            if let Some(metric) = &achievement.metric {
                self.reference(field_path(&path, "metric"), METRIC, metric, &metrics);
                if !(threshold.is_finite() && threshold > 0.0) {
                    self.error(
                        threshold_path,
                        codes::INVALID_VALUE,
                        "a metric threshold is a finite number above 0",
                    );
                }
            } else if let Some(streak) = &achievement.streak {
                self.reference(field_path(&path, "streak"), STREAK, streak, &streaks);
                let whole = threshold.fract() == 0.0;
                if !(whole && (1.0..=f64::from(u32::MAX)).contains(&threshold)) {
                    self.error(
                        threshold_path,
                        codes::INVALID_VALUE,
                        "a streak threshold is a whole number of periods, at least 1",
                    );
                }
            }
        }
    }

    fn points(&mut self, document: &RuleSet) {
        let count = document.points.len();
        self.count("$.points", "points systems", count, MAX_POINTS_SYSTEMS);
        self.keys(
            document
                .points
                .iter()
                .enumerate()
                .map(|(index, system)| (index_path("$.points", index), system.key.as_str())),
        );
        let metrics = metric_keys(document);
        let achievements = achievement_keys(document);
        for (index, system) in document.points.iter().enumerate() {
            let path = index_path("$.points", index);
            self.text(field_path(&path, "name"), "a name", &system.name);
            let triggers_path = field_path(&path, "triggers");
            let count = system.triggers.len();
            self.count(&triggers_path, "triggers", count, MAX_TRIGGERS);
            for (index, trigger) in system.triggers.iter().enumerate() {
                let path = index_path(&triggers_path, index);
                let metric = ("metric", trigger.metric.is_some());
                let achievement = ("achievement", trigger.achievement.is_some());
                if self.exactly_one(&path, metric, achievement) {
                    if let Some(metric) = &trigger.metric {
                        self.reference(field_path(&path, "metric"), METRIC, metric, &metrics);
                    }
                    if let Some(achievement) = &trigger.achievement {
                        let reference = field_path(&path, "achievement");
                        self.reference(reference, ACHIEVEMENT, achievement, &achievements);
                        if trigger.every.is_some() {
                            self.error(
                                field_path(&path, "every"),
                                codes::INVALID_VALUE,
                                "`every` goes with a metric, not an achievement",
                            );
                        }
                    }
                }
                if let Some(every) = trigger.every {
                    if !(every.is_finite() && every > 0.0) {
                        self.error(
                            field_path(&path, "every"),
                            codes::INVALID_VALUE,
                            "`every` is a finite number above 0",
                        );
                    }
                }
                if trigger.points == 0 || trigger.points.abs() > MAX_TRIGGER_POINTS {
                    self.error(
                        field_path(&path, "points"),
                        codes::INVALID_VALUE,
                        format!("points are non-zero and at most {MAX_TRIGGER_POINTS} either way"),
                    );
                }
            }
            let levels_path = field_path(&path, "levels");
            self.count(&levels_path, "levels", system.levels.len(), MAX_LEVELS);
            self.keys(
                system
                    .levels
                    .iter()
                    .enumerate()
                    .map(|(index, level)| (index_path(&levels_path, index), level.key.as_str())),
            );
            for (index, pair) in system.levels.windows(2).enumerate() {
                if pair[1].at <= pair[0].at {
                    self.error(
                        field_path(&index_path(&levels_path, index + 1), "at"),
                        codes::INVALID_VALUE,
                        format!(
                            "levels rise strictly: {} is not above {}",
                            pair[1].at, pair[0].at
                        ),
                    );
                }
            }
        }
    }

    fn leaderboards(&mut self, document: &RuleSet) {
        let count = document.leaderboards.len();
        self.count("$.leaderboards", "leaderboards", count, MAX_LEADERBOARDS);
        self.keys(
            document
                .leaderboards
                .iter()
                .enumerate()
                .map(|(index, board)| (index_path("$.leaderboards", index), board.key.as_str())),
        );
        let systems = index_by_key(document.points.iter().map(|system| system.key.as_str()));
        for (index, board) in document.leaderboards.iter().enumerate() {
            let path = index_path("$.leaderboards", index);
            let reference = field_path(&path, "points");
            self.reference(reference, POINTS_SYSTEM, &board.points, &systems);
            if !(1..=MAX_BOARD_SIZE).contains(&board.size) {
                self.error(
                    field_path(&path, "size"),
                    codes::INVALID_VALUE,
                    format!("a leaderboard shows 1 to {MAX_BOARD_SIZE} entries"),
                );
            }
        }
    }
}

fn metric_keys(document: &RuleSet) -> BTreeMap<&str, usize> {
    index_by_key(document.metrics.iter().map(|metric| metric.key.as_str()))
}

fn streak_keys(document: &RuleSet) -> BTreeMap<&str, usize> {
    index_by_key(document.streaks.iter().map(|streak| streak.key.as_str()))
}

fn achievement_keys(document: &RuleSet) -> BTreeMap<&str, usize> {
    index_by_key(
        document
            .achievements
            .iter()
            .map(|achievement| achievement.key.as_str()),
    )
}

/// Valid keys to the index of their first element: what a reference may point at.
fn index_by_key<'a>(keys: impl Iterator<Item = &'a str>) -> BTreeMap<&'a str, usize> {
    let mut map = BTreeMap::new();
    for (index, key) in keys.enumerate() {
        if is_valid_key(key) {
            map.entry(key).or_insert(index);
        }
    }
    map
}
