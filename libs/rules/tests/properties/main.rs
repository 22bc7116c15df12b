//! Properties of evaluation and parsing over generated event streams and documents.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, Duration, NaiveDate, Utc};
use chrono_tz::Tz;
use gamify_rules::{
    Evaluation, Input, Kind, Period, RuleSet, Rules, Source, UserState, adjust, apply,
    period_bounds,
};
use proptest::prelude::*;
use serde_json::{Map, Value, json};
use uuid::Uuid;

fn document() -> Value {
    json!({
      "timezone": "Europe/Berlin",
      "metrics": [
        {"key": "purchases", "event": "purchase", "aggregate": "count"},
        {"key": "revenue", "event": "purchase", "aggregate": "sum", "property": "amount"},
        {"key": "lessons", "event": "lesson_completed", "aggregate": "count", "source": "any",
         "where": "properties.score >= 50"},
        {"key": "refunds", "event": "refund", "aggregate": "sum", "property": "amount", "source": "any"}
      ],
      "streaks": [
        {"key": "daily_lessons", "metric": "lessons", "period": "day", "freezes": {"perMonth": 2}},
        {"key": "weekly_purchases", "metric": "purchases", "period": "week", "freezes": {"perMonth": 1}},
        {"key": "monthly_lessons", "metric": "lessons", "period": "month"}
      ],
      "achievements": [
        {"key": "first_purchase", "name": "First purchase", "metric": "purchases", "threshold": 1},
        {"key": "big_spender", "name": "Big spender", "metric": "revenue", "threshold": 5000},
        {"key": "on_fire", "name": "3-day streak", "streak": "daily_lessons", "threshold": 3},
        {"key": "regular", "name": "Regular", "streak": "weekly_purchases", "threshold": 2}
      ],
      "points": [
        {"key": "xp", "name": "XP",
         "triggers": [{"metric": "lessons", "points": 10},
                      {"metric": "revenue", "every": 100, "points": 1},
                      {"achievement": "first_purchase", "points": 100}],
         "levels": [{"key": "bronze", "at": 0}, {"key": "silver", "at": 500}, {"key": "gold", "at": 2000}]},
        {"key": "coins", "name": "Coins",
         "triggers": [{"metric": "purchases", "points": 5},
                      {"metric": "refunds", "every": 7.5, "points": -2},
                      {"achievement": "on_fire", "points": 50}],
         "levels": [{"key": "one", "at": 10}, {"key": "two", "at": 100}]}
      ],
      "leaderboards": [
        {"key": "weekly_xp", "points": "xp", "period": "week", "size": 100},
        {"key": "daily_coins", "points": "coins", "period": "day", "size": 10},
        {"key": "all_xp", "points": "xp", "period": "all_time", "size": 1000}
      ]
    })
}

const ZONES: [&str; 6] = [
    "Europe/Berlin",
    "America/New_York",
    "Asia/Tokyo",
    "Asia/Kolkata",
    "UTC",
    "Not/AZone",
];

/// One step of a user's history: an event, or a manual adjustment.
#[derive(Debug, Clone)]
enum Op {
    Event(Event),
    Adjust {
        key: &'static str,
        amount: i64,
        at: DateTime<Utc>,
    },
}

#[derive(Debug, Clone)]
struct Event {
    id: Uuid,
    kind: Kind,
    name: &'static str,
    source: Source,
    properties: Option<Map<String, Value>>,
    traits: Option<Map<String, Value>>,
    occurred_at: DateTime<Utc>,
    received_at: DateTime<Utc>,
}

impl Event {
    fn input(&self) -> Input<'_> {
        Input {
            event_id: self.id,
            kind: self.kind,
            name: self.name,
            source: self.source,
            user_id: "user_1",
            properties: self.properties.as_ref(),
            traits: self.traits.as_ref(),
            occurred_at: self.occurred_at,
            received_at: self.received_at,
        }
    }
}

fn number() -> impl Strategy<Value = Value> {
    prop_oneof![
        (-200i64..5000).prop_map(Value::from),
        (-200.0f64..5000.0).prop_map(Value::from),
        Just(json!("12")),
        Just(Value::Null),
    ]
}

/// A step, given the time (seconds after the start) it happens at.
fn op(seconds: i64) -> impl Strategy<Value = Op> {
    let start = DateTime::parse_from_rfc3339("2024-03-25T00:00:00Z")
        .unwrap()
        .with_timezone(&Utc);
    let received = start + Duration::seconds(seconds);
    let event = (
        0..10u8,
        any::<bool>(),
        proptest::option::of(number()),
        proptest::option::of(number()),
        0..ZONES.len(),
        -2 * 86_400i64..3_600,
        any::<u128>(),
    )
        .prop_map(move |(name, secret, amount, score, zone, skew, id)| {
            let (kind, name) = match name {
                0..=2 => (Kind::Track, "lesson_completed"),
                3..=5 => (Kind::Track, "purchase"),
                6 => (Kind::Track, "refund"),
                7 => (Kind::Track, "page_view"),
                _ => (Kind::Identify, "$identify"),
            };
            let mut properties = Map::new();
            if let Some(amount) = amount {
                properties.insert("amount".into(), amount);
            }
            if let Some(score) = score {
                properties.insert("score".into(), score);
            }
            let traits = (kind == Kind::Identify).then(|| {
                let mut traits = Map::new();
                traits.insert("timezone".into(), Value::from(ZONES[zone]));
                traits
            });
            Op::Event(Event {
                id: Uuid::from_u128(id),
                kind,
                name,
                source: if secret {
                    Source::Secret
                } else {
                    Source::Publishable
                },
                properties: Some(properties),
                traits,
                occurred_at: received + Duration::seconds(skew),
                received_at: received,
            })
        });
    let adjustment = (
        prop_oneof![Just("xp"), Just("coins"), Just("ghost")],
        -3000i64..3000,
    )
        .prop_map(move |(key, amount)| Op::Adjust {
            key,
            amount,
            at: received,
        });
    prop_oneof![9 => event, 1 => adjustment]
}

/// A user's history over about a month from late March (DST, a month end): steps up to 36
/// hours apart, so that daily streaks both grow and break.
fn history() -> impl Strategy<Value = Vec<Op>> {
    proptest::collection::vec(0i64..36 * 3_600, 0..50).prop_flat_map(|gaps| {
        let mut seconds = 0;
        let times: Vec<i64> = gaps
            .into_iter()
            .map(|gap| {
                seconds += gap;
                seconds
            })
            .collect();
        times.into_iter().map(op).collect::<Vec<_>>()
    })
}

fn step(rules: &Rules, state: &mut UserState, op: &Op) -> Evaluation {
    match op {
        Op::Event(event) => apply(rules, state, &event.input()),
        Op::Adjust { key, amount, at } => adjust(rules, state, key, *amount, "manual", *at),
    }
}

fn rules() -> Rules {
    Rules::parse(&document()).unwrap()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(96))]

    #[test]
    fn batching_with_stored_state_changes_nothing(
        ops in history(),
        cuts in proptest::collection::vec(any::<bool>(), 50),
        as_text in any::<bool>(),
    ) {
        let rules = rules();
        let mut whole = UserState::default();
        let one_pass: Vec<Evaluation> = ops.iter().map(|op| step(&rules, &mut whole, op)).collect();

        let mut state = UserState::default();
        let mut batched = Vec::new();
        for (index, op) in ops.iter().enumerate() {
            if cuts[index] {
                // Between batches the engine keeps the state as JSON (jsonb, i.e. text).
                state = if as_text {
                    serde_json::from_str(&serde_json::to_string(&state).unwrap()).unwrap()
                } else {
                    serde_json::from_value(serde_json::to_value(&state).unwrap()).unwrap()
                };
            }
            batched.push(step(&rules, &mut state, op));
        }
        prop_assert_eq!(&state, &whole);
        prop_assert_eq!(batched, one_pass);
        let stored: UserState =
            serde_json::from_str(&serde_json::to_string(&whole).unwrap()).unwrap();
        prop_assert_eq!(stored, whole);
    }

    #[test]
    fn a_balance_is_the_sum_of_its_ledger(ops in history()) {
        let rules = rules();
        let mut state = UserState::default();
        let mut sums: BTreeMap<String, i128> = BTreeMap::new();
        for op in &ops {
            let evaluation = step(&rules, &mut state, op);
            for entry in &evaluation.ledger {
                *sums.entry(entry.points_key.clone()).or_default() += i128::from(entry.amount);
            }
            let changed: i128 = evaluation.ledger.iter().map(|entry| i128::from(entry.amount)).sum();
            let scored: i128 = evaluation
                .scores
                .iter()
                .filter(|score| score.board == "all_xp")
                .map(|score| i128::from(score.delta))
                .sum();
            let xp: i128 = evaluation
                .ledger
                .iter()
                .filter(|entry| entry.points_key == "xp")
                .map(|entry| i128::from(entry.amount))
                .sum();
            prop_assert_eq!(scored, xp);
            if changed == 0 && xp == 0 {
                prop_assert!(evaluation.scores.iter().all(|score| score.board == "daily_coins"));
            }
        }
        for (key, points) in &state.points {
            prop_assert_eq!(i128::from(points.balance), sums.get(key).copied().unwrap_or(0), "{}", key);
        }
        for key in sums.keys() {
            prop_assert!(state.points.contains_key(key));
        }
    }

    #[test]
    fn a_streak_is_never_longer_than_the_periods_fed_to_it(ops in history()) {
        let rules = rules();
        let mut state = UserState::default();
        let streaks = [
            ("daily_lessons", "lesson_completed", Period::Day),
            ("weekly_purchases", "purchase", Period::Week),
            ("monthly_lessons", "lesson_completed", Period::Month),
        ];
        let mut fed: BTreeMap<&str, BTreeSet<NaiveDate>> = BTreeMap::new();
        for op in &ops {
            let zone: Tz = state
                .timezone
                .as_deref()
                .and_then(|name| name.parse().ok())
                .unwrap_or(chrono_tz::Europe::Berlin);
            let evaluation = step(&rules, &mut state, op);
            let Op::Event(event) = op else { continue };
            // Each event name feeds one metric here, so `counted` says whether it fed it.
            if event.kind != Kind::Track || !evaluation.counted {
                continue;
            }
            let at = event.input().effective_time();
            for (key, name, period) in streaks {
                if event.name == name {
                    let start = period_bounds(period, zone, at).0;
                    fed.entry(key).or_default().insert(start.with_timezone(&zone).date_naive());
                }
            }
        }
        for (key, _, _) in streaks {
            let periods = u32::try_from(fed.get(key).map_or(0, BTreeSet::len)).unwrap();
            let streak = state.streaks.get(key).cloned().unwrap_or_default();
            prop_assert!(streak.length <= periods, "{}: {:?} over {} periods", key, streak, periods);
            prop_assert!(streak.longest <= periods, "{}: {:?} over {} periods", key, streak, periods);
            prop_assert!(streak.length <= streak.longest);
        }
    }

    #[test]
    fn apply_is_deterministic(ops in history()) {
        let rules = rules();
        let mut state = UserState::default();
        for op in &ops {
            let mut again = state.clone();
            let first = step(&rules, &mut state, op);
            let second = step(&rules, &mut again, op);
            prop_assert_eq!(first, second);
            prop_assert_eq!(&state, &again);
        }
    }
}

fn json_value() -> impl Strategy<Value = Value> {
    let names = prop_oneof![
        Just("key".to_owned()),
        Just("metrics".to_owned()),
        Just("where".to_owned()),
        Just("points".to_owned()),
        Just("threshold".to_owned()),
        "[a-zA-Z_$ ]{0,8}",
    ];
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>()
            .prop_map(|f| serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number)),
        "[a-z_]{0,10}".prop_map(Value::from),
        ".{0,20}".prop_map(Value::from),
        prop_oneof![
            Just("day"),
            Just("all_time"),
            Just("sum"),
            Just("any"),
            Just("Europe/Berlin"),
            Just("properties.score >= 50"),
            Just("((((((((((((((((((1))))))))))))))))))"),
        ]
        .prop_map(Value::from),
    ];
    leaf.prop_recursive(4, 64, 8, move |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..8).prop_map(Value::from),
            proptest::collection::btree_map(names.clone(), inner, 0..8)
                .prop_map(|map| Value::Object(map.into_iter().collect())),
        ]
    })
}

/// Every JSON pointer into `value`, its root included.
fn pointers(value: &Value, at: String, into: &mut Vec<String>) {
    match value {
        Value::Object(map) => {
            for (name, child) in map {
                pointers(child, format!("{at}/{name}"), into);
            }
        }
        Value::Array(items) => {
            for (index, child) in items.iter().enumerate() {
                pointers(child, format!("{at}/{index}"), into);
            }
        }
        _ => {}
    }
    into.push(at);
}

#[derive(Debug, Clone)]
enum Mutation {
    Replace(Value),
    Remove,
    Insert(String, Value),
}

fn mutate(mut document: Value, pointer: &str, mutation: Mutation) -> Value {
    match mutation {
        Mutation::Replace(value) => {
            if let Some(target) = document.pointer_mut(pointer) {
                *target = value;
            }
        }
        Mutation::Remove => {
            if let Some((parent, name)) = pointer.rsplit_once('/') {
                match document.pointer_mut(parent) {
                    Some(Value::Object(map)) => {
                        map.remove(name);
                    }
                    Some(Value::Array(items)) => {
                        if let Ok(index) = name.parse::<usize>() {
                            if index < items.len() {
                                items.remove(index);
                            }
                        }
                    }
                    _ => {}
                }
            }
        }
        Mutation::Insert(name, value) => match document.pointer_mut(pointer) {
            Some(Value::Object(map)) => {
                map.insert(name, value);
            }
            Some(Value::Array(items)) => items.push(value),
            _ => {}
        },
    }
    document
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        json_value().prop_map(Mutation::Replace),
        Just(Mutation::Remove),
        ("[a-zA-Z]{1,8}", json_value()).prop_map(|(name, value)| Mutation::Insert(name, value)),
    ]
}

/// A parse either fails with paths from the root, or gives the document serde reads too, and
/// that document written out parses back to itself.
fn check_parse(document: &Value) -> Result<(), TestCaseError> {
    match Rules::parse(document) {
        Err(errors) => {
            prop_assert!(!errors.is_empty());
            for error in &errors {
                prop_assert!(error.path.starts_with('$'), "{:?}", error);
                prop_assert!(!error.message.is_empty());
            }
        }
        Ok(rules) => {
            let by_serde: RuleSet = serde_json::from_value(document.clone()).unwrap();
            prop_assert_eq!(&by_serde, rules.document());
            let written = serde_json::to_value(rules.document()).unwrap();
            let reparsed = Rules::parse(&written).unwrap();
            prop_assert_eq!(reparsed.document(), rules.document());
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn parsing_any_json_never_panics(document in json_value()) {
        check_parse(&document)?;
    }

    #[test]
    fn parsing_a_mutated_example_never_panics(
        mutations in proptest::collection::vec((any::<prop::sample::Index>(), mutation()), 1..4),
    ) {
        let mut document = document();
        for (index, mutation) in mutations {
            let mut all = Vec::new();
            pointers(&document, String::new(), &mut all);
            let pointer = index.get(&all).clone();
            document = mutate(document, &pointer, mutation);
        }
        check_parse(&document)?;
    }
}
