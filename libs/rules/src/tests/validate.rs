use serde_json::{Value, json};

use super::example;
use crate::{Period, RuleError, RuleSet, Rules, codes};

fn errors(document: &Value) -> Vec<RuleError> {
    Rules::parse(document).expect_err("the document should be refused")
}

/// `document` with the value at JSON pointer `pointer` replaced (or, for an object's missing
/// member, added).
fn with(mut document: Value, pointer: &str, value: Value) -> Value {
    let (parent, name) = pointer.rsplit_once('/').unwrap();
    match document.pointer_mut(parent).unwrap() {
        Value::Object(object) => {
            object.insert(name.to_owned(), value);
        }
        Value::Array(items) => items[name.parse::<usize>().unwrap()] = value,
        _ => panic!("no container at {parent}"),
    }
    document
}

fn without(mut document: Value, pointer: &str) -> Value {
    let (parent, name) = pointer.rsplit_once('/').unwrap();
    document
        .pointer_mut(parent)
        .unwrap()
        .as_object_mut()
        .unwrap()
        .remove(name)
        .unwrap();
    document
}

/// Asserts that the document is refused with exactly one error, at `path` with `code`.
#[track_caller]
fn refused(document: Value, path: &str, code: &str) {
    let errors = errors(&document);
    assert_eq!(
        errors
            .iter()
            .map(|e| (e.path.as_str(), e.code))
            .collect::<Vec<_>>(),
        vec![(path, code)],
        "{errors:#?}"
    );
    assert!(!errors[0].message.is_empty());
}

#[test]
fn the_example_document_parses() {
    let rules = Rules::parse(&example()).unwrap();
    assert_eq!(rules.timezone(), chrono_tz::Europe::Berlin);
    let document = rules.document();
    assert_eq!(document.metrics.len(), 3);
    assert_eq!(document.streaks[0].freezes.as_ref().unwrap().per_month, 2);
    assert_eq!(document.points[0].triggers[1].every, Some(100.0));
    assert_eq!(document.leaderboards[0].period, Period::Week);
}

#[test]
fn the_typed_document_agrees_with_serde_and_round_trips() {
    let rules = Rules::parse(&example()).unwrap();
    let by_serde: RuleSet = serde_json::from_value(example()).unwrap();
    assert_eq!(&by_serde, rules.document());
    let written = serde_json::to_value(rules.document()).unwrap();
    // Whole numbers stay integers when written back.
    assert_eq!(written["achievements"][0]["threshold"], json!(1));
    assert_eq!(written["points"][0]["triggers"][1]["every"], json!(100));
    assert_eq!(
        written["metrics"][2]["where"],
        json!("properties.score >= 50")
    );
    assert_eq!(Rules::parse(&written).unwrap().document(), rules.document());
}

#[test]
fn an_empty_document_is_valid_and_utc() {
    let rules = Rules::parse(&json!({})).unwrap();
    assert_eq!(rules.timezone(), chrono_tz::UTC);
    assert_eq!(rules.document(), &RuleSet::default());
}

#[test]
fn null_optional_fields_read_as_absent() {
    let document = with(example(), "/metrics/2/where", Value::Null);
    let document = with(document, "/timezone", Value::Null);
    let rules = Rules::parse(&document).unwrap();
    assert_eq!(rules.document().metrics[2].condition, None);
    assert_eq!(rules.timezone(), chrono_tz::UTC);
}

// invalid_type

#[test]
fn a_document_that_is_not_an_object_is_invalid_type_at_the_root() {
    refused(json!([]), "$", codes::INVALID_TYPE);
    refused(json!(null), "$", codes::INVALID_TYPE);
}

#[test]
fn wrong_types_are_reported_with_their_paths() {
    refused(
        with(example(), "/metrics", json!("x")),
        "$.metrics",
        codes::INVALID_TYPE,
    );
    refused(
        with(example(), "/metrics/0/key", json!(5)),
        "$.metrics[0].key",
        codes::INVALID_TYPE,
    );
    refused(
        with(example(), "/metrics/0", json!(5)),
        "$.metrics[0]",
        codes::INVALID_TYPE,
    );
    refused(
        with(example(), "/achievements/0/threshold", json!("1")),
        "$.achievements[0].threshold",
        codes::INVALID_TYPE,
    );
    refused(
        with(example(), "/points/0/triggers/0/points", json!(1.5)),
        "$.points[0].triggers[0].points",
        codes::INVALID_TYPE,
    );
    refused(
        with(example(), "/points/0/levels/1/at", json!("500")),
        "$.points[0].levels[1].at",
        codes::INVALID_TYPE,
    );
    refused(
        with(example(), "/streaks/0/freezes", json!(2)),
        "$.streaks[0].freezes",
        codes::INVALID_TYPE,
    );
    refused(
        with(example(), "/timezone", json!(1)),
        "$.timezone",
        codes::INVALID_TYPE,
    );
    // A required field given as null is a wrong type, not a missing field (as serde has it).
    refused(
        with(example(), "/metrics/0/event", Value::Null),
        "$.metrics[0].event",
        codes::INVALID_TYPE,
    );
    // A defaulted field that is not an Option does not take null either.
    refused(
        with(example(), "/metrics/0/source", Value::Null),
        "$.metrics[0].source",
        codes::INVALID_TYPE,
    );
}

#[test]
fn an_element_of_the_wrong_type_keeps_the_indices_of_the_others() {
    let document = with(example(), "/metrics/0", json!("purchases"));
    let document = with(document, "/metrics/2/key", json!("Lessons"));
    let errors = errors(&document);
    let found: Vec<_> = errors.iter().map(|e| (e.path.as_str(), e.code)).collect();
    assert!(
        found.contains(&("$.metrics[0]", codes::INVALID_TYPE)),
        "{found:?}"
    );
    assert!(
        found.contains(&("$.metrics[2].key", codes::INVALID_KEY)),
        "{found:?}"
    );
}

// unknown_field

#[test]
fn unknown_fields_are_refused_wherever_they_are() {
    refused(
        with(example(), "/extra", json!(1)),
        "$.extra",
        codes::UNKNOWN_FIELD,
    );
    refused(
        with(example(), "/metrics/1/unit", json!("EUR")),
        "$.metrics[1].unit",
        codes::UNKNOWN_FIELD,
    );
    refused(
        with(example(), "/streaks/0/freezes/perWeek", json!(1)),
        "$.streaks[0].freezes.perWeek",
        codes::UNKNOWN_FIELD,
    );
    refused(
        with(example(), "/points/0/levels/0/name", json!("Bronze")),
        "$.points[0].levels[0].name",
        codes::UNKNOWN_FIELD,
    );
    refused(
        with(example(), "/metrics/0/a b", json!(1)),
        "$.metrics[0][\"a b\"]",
        codes::UNKNOWN_FIELD,
    );
}

#[test]
fn no_element_can_name_one_of_its_own_kind() {
    // The only shape a self-reference could take is a field naming the element's own kind;
    // no kind has one, so each is an unknown field.
    refused(
        with(example(), "/metrics/0/metric", json!("purchases")),
        "$.metrics[0].metric",
        codes::UNKNOWN_FIELD,
    );
    refused(
        with(example(), "/streaks/0/streak", json!("daily_lessons")),
        "$.streaks[0].streak",
        codes::UNKNOWN_FIELD,
    );
    refused(
        with(
            example(),
            "/achievements/0/achievement",
            json!("first_purchase"),
        ),
        "$.achievements[0].achievement",
        codes::UNKNOWN_FIELD,
    );
    refused(
        with(example(), "/points/0/triggers/0/points_system", json!("xp")),
        "$.points[0].triggers[0].points_system",
        codes::UNKNOWN_FIELD,
    );
    refused(
        with(example(), "/leaderboards/0/leaderboard", json!("weekly_xp")),
        "$.leaderboards[0].leaderboard",
        codes::UNKNOWN_FIELD,
    );
}

// missing_field

#[test]
fn missing_required_fields_are_reported_at_the_field() {
    refused(
        without(example(), "/metrics/0/event"),
        "$.metrics[0].event",
        codes::MISSING_FIELD,
    );
    refused(
        without(example(), "/metrics/0/key"),
        "$.metrics[0].key",
        codes::MISSING_FIELD,
    );
    refused(
        without(example(), "/metrics/1/property"),
        "$.metrics[1].property",
        codes::MISSING_FIELD,
    );
    refused(
        without(example(), "/achievements/1/name"),
        "$.achievements[1].name",
        codes::MISSING_FIELD,
    );
    refused(
        without(example(), "/points/0/triggers"),
        "$.points[0].triggers",
        codes::MISSING_FIELD,
    );
    refused(
        without(example(), "/leaderboards/0/size"),
        "$.leaderboards[0].size",
        codes::MISSING_FIELD,
    );
    refused(
        without(example(), "/streaks/0/period"),
        "$.streaks[0].period",
        codes::MISSING_FIELD,
    );
    refused(
        without(example(), "/points/0/triggers/0/points"),
        "$.points[0].triggers[0].points",
        codes::MISSING_FIELD,
    );
}

#[test]
fn an_achievement_or_trigger_needs_one_reference() {
    refused(
        without(example(), "/achievements/0/metric"),
        "$.achievements[0].metric",
        codes::MISSING_FIELD,
    );
    refused(
        without(example(), "/points/0/triggers/2/achievement"),
        "$.points[0].triggers[2].metric",
        codes::MISSING_FIELD,
    );
}

// invalid_value

#[test]
fn values_out_of_range_are_invalid() {
    let cases = [
        (
            "/metrics/0/aggregate",
            json!("avg"),
            "$.metrics[0].aggregate",
        ),
        (
            "/metrics/0/source",
            json!("publishable"),
            "$.metrics[0].source",
        ),
        ("/metrics/0/event", json!(""), "$.metrics[0].event"),
        ("/metrics/0/event", json!("$identify"), "$.metrics[0].event"),
        (
            "/metrics/0/event",
            json!("e".repeat(201)),
            "$.metrics[0].event",
        ),
        (
            "/metrics/0/property",
            json!("amount"),
            "$.metrics[0].property",
        ),
        ("/metrics/1/property", json!(""), "$.metrics[1].property"),
        (
            "/metrics/2/where",
            json!(format!("{} == 1", "1 + ".repeat(250))),
            "$.metrics[2].where",
        ),
        (
            "/streaks/0/period",
            json!("all_time"),
            "$.streaks[0].period",
        ),
        ("/streaks/0/period", json!("year"), "$.streaks[0].period"),
        (
            "/streaks/0/freezes/perMonth",
            json!(32),
            "$.streaks[0].freezes.perMonth",
        ),
        (
            "/streaks/0/freezes/perMonth",
            json!(-1),
            "$.streaks[0].freezes.perMonth",
        ),
        ("/achievements/0/name", json!(""), "$.achievements[0].name"),
        (
            "/achievements/0/name",
            json!("n".repeat(201)),
            "$.achievements[0].name",
        ),
        (
            "/achievements/0/threshold",
            json!(0),
            "$.achievements[0].threshold",
        ),
        (
            "/achievements/0/threshold",
            json!(-5),
            "$.achievements[0].threshold",
        ),
        (
            "/achievements/2/threshold",
            json!(1.5),
            "$.achievements[2].threshold",
        ),
        (
            "/achievements/2/threshold",
            json!(0),
            "$.achievements[2].threshold",
        ),
        (
            "/achievements/0/streak",
            json!("daily_lessons"),
            "$.achievements[0].streak",
        ),
        ("/points/0/name", json!(""), "$.points[0].name"),
        (
            "/points/0/triggers/0/points",
            json!(0),
            "$.points[0].triggers[0].points",
        ),
        (
            "/points/0/triggers/0/points",
            json!(1_000_000_001),
            "$.points[0].triggers[0].points",
        ),
        (
            "/points/0/triggers/0/points",
            json!(-1_000_000_001),
            "$.points[0].triggers[0].points",
        ),
        (
            "/points/0/triggers/0/points",
            json!(u64::MAX),
            "$.points[0].triggers[0].points",
        ),
        (
            "/points/0/triggers/1/every",
            json!(0),
            "$.points[0].triggers[1].every",
        ),
        (
            "/points/0/triggers/1/every",
            json!(-100),
            "$.points[0].triggers[1].every",
        ),
        (
            "/points/0/triggers/2/every",
            json!(10),
            "$.points[0].triggers[2].every",
        ),
        (
            "/points/0/triggers/2/metric",
            json!("revenue"),
            "$.points[0].triggers[2].achievement",
        ),
        (
            "/points/0/levels/1/at",
            json!(0),
            "$.points[0].levels[1].at",
        ),
        (
            "/points/0/levels/2/at",
            json!(100),
            "$.points[0].levels[2].at",
        ),
        ("/leaderboards/0/size", json!(0), "$.leaderboards[0].size"),
        (
            "/leaderboards/0/size",
            json!(1001),
            "$.leaderboards[0].size",
        ),
        ("/leaderboards/0/size", json!(-3), "$.leaderboards[0].size"),
        (
            "/leaderboards/0/period",
            json!("hour"),
            "$.leaderboards[0].period",
        ),
    ];
    for (pointer, value, path) in cases {
        refused(with(example(), pointer, value), path, codes::INVALID_VALUE);
    }
}

#[test]
fn limits_at_their_edges_are_accepted() {
    let edges = [
        ("/metrics/0/event", json!("e".repeat(200))),
        ("/streaks/0/freezes/perMonth", json!(31)),
        ("/achievements/0/name", json!("n".repeat(200))),
        ("/achievements/0/threshold", json!(0.001)),
        ("/achievements/2/threshold", json!(1)),
        ("/points/0/triggers/0/points", json!(-1_000_000_000)),
        ("/points/0/triggers/1/every", json!(0.5)),
        ("/leaderboards/0/size", json!(1)),
        ("/leaderboards/0/size", json!(1000)),
        ("/leaderboards/0/period", json!("all_time")),
        (
            "/metrics/2/where",
            json!(format!("{}true", " ".repeat(996))),
        ),
    ];
    for (pointer, value) in edges {
        let document = with(example(), pointer, value.clone());
        assert!(Rules::parse(&document).is_ok(), "{pointer} = {value}");
    }
}

// invalid_key and duplicate_key

#[test]
fn keys_must_be_lowercase_identifiers() {
    for key in ["Purchases", "1abc", "_a", "a-b", "", "é", &"a".repeat(65)] {
        refused(
            with(example(), "/leaderboards/0/key", json!(key)),
            "$.leaderboards[0].key",
            codes::INVALID_KEY,
        );
    }
    refused(
        with(example(), "/points/0/levels/0/key", json!("Bronze")),
        "$.points[0].levels[0].key",
        codes::INVALID_KEY,
    );
    let longest = with(
        example(),
        "/leaderboards/0/key",
        json!(format!("a{}", "b_9".repeat(21))),
    );
    assert!(Rules::parse(&longest).is_ok());
}

#[test]
fn keys_are_unique_within_their_kind_only() {
    let duplicate = with(example(), "/metrics/1/key", json!("purchases"));
    let errors = errors(&duplicate);
    let error = errors
        .iter()
        .find(|e| e.path == "$.metrics[1].key")
        .unwrap();
    assert_eq!(error.code, codes::DUPLICATE_KEY);
    assert!(error.message.contains("element 0"), "{}", error.message);
    refused(
        with(example(), "/points/0/levels/2/key", json!("bronze")),
        "$.points[0].levels[2].key",
        codes::DUPLICATE_KEY,
    );
    // A streak may share a key with a metric.
    let document = with(example(), "/streaks/0/key", json!("lessons"));
    let document = with(document, "/achievements/2/streak", json!("lessons"));
    assert!(Rules::parse(&document).is_ok());
}

// unknown_reference

#[test]
fn every_reference_must_resolve() {
    let cases = [
        ("/streaks/0/metric", "$.streaks[0].metric"),
        ("/achievements/0/metric", "$.achievements[0].metric"),
        ("/achievements/2/streak", "$.achievements[2].streak"),
        (
            "/points/0/triggers/0/metric",
            "$.points[0].triggers[0].metric",
        ),
        (
            "/points/0/triggers/2/achievement",
            "$.points[0].triggers[2].achievement",
        ),
        ("/leaderboards/0/points", "$.leaderboards[0].points"),
    ];
    for (pointer, path) in cases {
        refused(
            with(example(), pointer, json!("nothing")),
            path,
            codes::UNKNOWN_REFERENCE,
        );
    }
}

#[test]
fn references_are_by_kind() {
    // `lessons` is a metric, not a streak.
    refused(
        with(example(), "/achievements/2/streak", json!("lessons")),
        "$.achievements[2].streak",
        codes::UNKNOWN_REFERENCE,
    );
}

// too_many

#[test]
fn list_limits_are_enforced() {
    fn metrics(count: usize) -> Value {
        (0..count)
            .map(|i| json!({"key": format!("m{i}"), "event": "e", "aggregate": "count"}))
            .collect()
    }
    refused(
        json!({"metrics": metrics(101)}),
        "$.metrics",
        codes::TOO_MANY,
    );
    assert!(Rules::parse(&json!({"metrics": metrics(100)})).is_ok());

    let streaks: Vec<Value> = (0..101)
        .map(|i| json!({"key": format!("s{i}"), "metric": "m0", "period": "day"}))
        .collect();
    refused(
        json!({"metrics": metrics(1), "streaks": streaks}),
        "$.streaks",
        codes::TOO_MANY,
    );

    let achievements: Vec<Value> = (0..501)
        .map(|i| json!({"key": format!("a{i}"), "name": "A", "metric": "m0", "threshold": 1}))
        .collect();
    refused(
        json!({"metrics": metrics(1), "achievements": achievements}),
        "$.achievements",
        codes::TOO_MANY,
    );

    let systems: Vec<Value> = (0..21)
        .map(|i| json!({"key": format!("p{i}"), "name": "P", "triggers": []}))
        .collect();
    refused(json!({"points": systems}), "$.points", codes::TOO_MANY);

    let triggers: Vec<Value> = (0..51)
        .map(|_| json!({"metric": "m0", "points": 1}))
        .collect();
    let document =
        json!({"metrics": metrics(1), "points": [{"key": "p", "name": "P", "triggers": triggers}]});
    refused(document, "$.points[0].triggers", codes::TOO_MANY);

    let levels: Vec<Value> = (0..101)
        .map(|i| json!({"key": format!("l{i}"), "at": i}))
        .collect();
    let document = json!({"points": [{"key": "p", "name": "P", "triggers": [], "levels": levels}]});
    refused(document, "$.points[0].levels", codes::TOO_MANY);

    let boards: Vec<Value> = (0..21)
        .map(|i| json!({"key": format!("b{i}"), "points": "p", "period": "day", "size": 10}))
        .collect();
    let document =
        json!({"points": [{"key": "p", "name": "P", "triggers": []}], "leaderboards": boards});
    refused(document, "$.leaderboards", codes::TOO_MANY);
}

// invalid_condition and invalid_timezone

#[test]
fn conditions_must_compile() {
    for condition in [
        "",
        "properties.score >=",
        "propertes.score > 1",
        "foo(",
        "x.all(y, y)",
    ] {
        refused(
            with(example(), "/metrics/2/where", json!(condition)),
            "$.metrics[2].where",
            codes::INVALID_CONDITION,
        );
    }
}

#[test]
fn time_zones_must_be_iana_names() {
    refused(
        with(example(), "/timezone", json!("Mars/Olympus")),
        "$.timezone",
        codes::INVALID_TIMEZONE,
    );
    refused(
        with(example(), "/timezone", json!("")),
        "$.timezone",
        codes::INVALID_TIMEZONE,
    );
    let rules = Rules::parse(&with(example(), "/timezone", json!("America/New_York"))).unwrap();
    assert_eq!(rules.timezone(), chrono_tz::America::New_York);
}

// all errors at once

#[test]
fn every_error_is_reported_at_once() {
    let document = json!({
        "timezone": "Nowhere",
        "metrics": [
            {"key": "Bad", "event": "$x", "aggregate": "count"},
            {"key": "ok", "event": "e", "aggregate": "sum", "where": "(("}
        ],
        "streaks": [{"key": "s", "metric": "missing", "period": "day", "colour": "red"}],
        "achievements": [{"key": "a", "name": "", "metric": "ok", "threshold": 0}],
        "points": [{"key": "p", "name": "P", "triggers": [{"achievement": "zzz", "points": 0}]}],
        "leaderboards": [{"key": "b", "points": "q", "period": "day", "size": 5000}]
    });
    let mut found: Vec<(String, &str)> = errors(&document)
        .into_iter()
        .map(|e| (e.path, e.code))
        .collect();
    found.sort();
    let mut expected = vec![
        ("$.timezone", codes::INVALID_TIMEZONE),
        ("$.metrics[0].key", codes::INVALID_KEY),
        ("$.metrics[0].event", codes::INVALID_VALUE),
        ("$.metrics[1].property", codes::MISSING_FIELD),
        ("$.metrics[1].where", codes::INVALID_CONDITION),
        ("$.streaks[0].colour", codes::UNKNOWN_FIELD),
        ("$.streaks[0].metric", codes::UNKNOWN_REFERENCE),
        ("$.achievements[0].name", codes::INVALID_VALUE),
        ("$.achievements[0].threshold", codes::INVALID_VALUE),
        (
            "$.points[0].triggers[0].achievement",
            codes::UNKNOWN_REFERENCE,
        ),
        ("$.points[0].triggers[0].points", codes::INVALID_VALUE),
        ("$.leaderboards[0].points", codes::UNKNOWN_REFERENCE),
        ("$.leaderboards[0].size", codes::INVALID_VALUE),
    ]
    .into_iter()
    .map(|(path, code)| (path.to_owned(), code))
    .collect::<Vec<_>>();
    expected.sort();
    assert_eq!(found, expected);
}

#[test]
fn a_shape_error_is_not_repeated_by_validation() {
    // A key of the wrong type is one error, not also an invalid (placeholder) key.
    refused(
        with(example(), "/streaks/0/key", json!(["x"])),
        "$.streaks[0].key",
        codes::INVALID_TYPE,
    );
    // A whole element of the wrong type says nothing more about its insides.
    refused(
        with(example(), "/leaderboards/0", json!(null)),
        "$.leaderboards[0]",
        codes::INVALID_TYPE,
    );
}

#[test]
fn errors_serialize_with_path_code_and_message() {
    let error = &errors(&with(example(), "/timezone", json!("Nowhere")))[0];
    let written = serde_json::to_value(error).unwrap();
    assert_eq!(written["path"], json!("$.timezone"));
    assert_eq!(written["code"], json!("invalid_timezone"));
    assert!(written["message"].as_str().unwrap().contains("Nowhere"));
    assert!(error.to_string().starts_with("$.timezone: "));
}
