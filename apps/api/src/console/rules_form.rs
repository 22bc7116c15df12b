//! The rule set as HTML form fields and back, with no I/O. Every input is named by the JSON path
//! of the value it edits (`$.metrics[0].key`, `$.streaks[1].freezes.perMonth`), the same paths the
//! rules parser names in its errors, so each error lands on the field it concerns.

use std::collections::BTreeMap;

use serde_json::{Map, Value};

/// Leaves whose text is read as a number (anything else stays text, so a typo reaches the
/// parser and comes back as an error on that field rather than vanishing).
const NUMERIC: &[&str] = &["threshold", "points", "every", "at", "size", "perMonth"];

#[derive(Debug, Clone, PartialEq)]
enum Segment {
    Field(String),
    Index(usize),
}

/// `$.a[0].b` → `[Field(a), Index(0), Field(b)]`; `None` for anything else.
fn segments(path: &str) -> Option<Vec<Segment>> {
    let mut rest = path.strip_prefix('$')?;
    let mut out = Vec::new();
    while !rest.is_empty() {
        if let Some(after) = rest.strip_prefix('.') {
            let end = after.find(['.', '[']).unwrap_or(after.len());
            let name = &after[..end];
            if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
                return None;
            }
            out.push(Segment::Field(name.to_owned()));
            rest = &after[end..];
        } else if let Some(after) = rest.strip_prefix('[') {
            let end = after.find(']')?;
            let index: usize = after[..end].parse().ok()?;
            if index > 10_000 {
                return None;
            }
            out.push(Segment::Index(index));
            rest = &after[end + 1..];
        } else {
            return None;
        }
    }
    Some(out)
}

/// A tree under construction: arrays are kept by index until the end, so gaps (a removed item)
/// close up.
#[derive(Debug, Default)]
enum Node {
    #[default]
    Empty,
    Leaf(Value),
    Object(BTreeMap<String, Node>),
    Array(BTreeMap<usize, Node>),
}

impl Node {
    fn insert(&mut self, path: &[Segment], value: Value) {
        let Some((first, rest)) = path.split_first() else {
            *self = Node::Leaf(value);
            return;
        };
        match first {
            Segment::Field(name) => {
                if !matches!(self, Node::Object(_)) {
                    *self = Node::Object(BTreeMap::new());
                }
                if let Node::Object(fields) = self {
                    fields.entry(name.clone()).or_default().insert(rest, value);
                }
            }
            Segment::Index(index) => {
                if !matches!(self, Node::Array(_)) {
                    *self = Node::Array(BTreeMap::new());
                }
                if let Node::Array(items) = self {
                    items.entry(*index).or_default().insert(rest, value);
                }
            }
        }
    }

    fn into_value(self) -> Value {
        match self {
            Node::Empty => Value::Null,
            Node::Leaf(value) => value,
            Node::Object(fields) => Value::Object(
                fields
                    .into_iter()
                    .map(|(name, node)| (name, node.into_value()))
                    .collect::<Map<String, Value>>(),
            ),
            Node::Array(items) => Value::Array(items.into_values().map(Node::into_value).collect()),
        }
    }
}

fn leaf(path: &[Segment], text: &str) -> Value {
    let numeric =
        matches!(path.last(), Some(Segment::Field(name)) if NUMERIC.contains(&name.as_str()));
    if numeric {
        if let Ok(whole) = text.parse::<i64>() {
            return Value::from(whole);
        }
        if let Some(number) = text
            .parse::<f64>()
            .ok()
            .and_then(serde_json::Number::from_f64)
        {
            return Value::Number(number);
        }
    }
    Value::String(text.to_owned())
}

/// The document the form's fields describe. Empty fields are left out; the sections are always
/// present (an empty list is a valid section). Fields not named by a path are ignored.
pub fn document(fields: &[(String, String)]) -> Value {
    let mut root = Node::Object(BTreeMap::new());
    for (name, text) in fields {
        let text = text.trim();
        if text.is_empty() {
            continue;
        }
        if let Some(path) = segments(name) {
            if !path.is_empty() {
                root.insert(&path, leaf(&path, text));
            }
        }
    }
    let mut value = root.into_value();
    if let Value::Object(map) = &mut value {
        for section in SECTIONS {
            map.entry(section.to_owned())
                .or_insert_with(|| Value::Array(Vec::new()));
        }
    }
    value
}

/// Every leaf of `value` as `(path, text)`, in the form `document` reads back (the inverse the
/// property test checks `document` against).
#[cfg(test)]
pub fn fields(value: &Value) -> Vec<(String, String)> {
    fn walk(value: &Value, path: String, out: &mut Vec<(String, String)>) {
        match value {
            Value::Object(map) => {
                for (name, child) in map {
                    walk(child, format!("{path}.{name}"), out);
                }
            }
            Value::Array(items) => {
                for (index, child) in items.iter().enumerate() {
                    walk(child, format!("{path}[{index}]"), out);
                }
            }
            Value::String(text) => out.push((path, text.clone())),
            Value::Number(number) => out.push((path, number.to_string())),
            Value::Bool(flag) => out.push((path, flag.to_string())),
            Value::Null => {}
        }
    }
    let mut out = Vec::new();
    walk(value, "$".to_owned(), &mut out);
    out
}

pub const SECTIONS: [&str; 5] = [
    "metrics",
    "streaks",
    "achievements",
    "points",
    "leaderboards",
];

/// What an input edits and how it is shown.
pub enum Kind {
    Text,
    Number,
    Choice(&'static [&'static str]),
}

pub struct Spec {
    pub name: &'static str,
    pub label: &'static str,
    pub kind: Kind,
}

const fn spec(name: &'static str, label: &'static str, kind: Kind) -> Spec {
    Spec { name, label, kind }
}

/// The fields of one item of each list (`freezes.perMonth` is a nested field).
pub fn item_specs(list: &str) -> &'static [Spec] {
    const METRIC: &[Spec] = &[
        spec("key", "Key", Kind::Text),
        spec("event", "Event name", Kind::Text),
        spec("aggregate", "Aggregate", Kind::Choice(&["count", "sum"])),
        spec("property", "Property (sum)", Kind::Text),
        spec("source", "Fed by", Kind::Choice(&["", "secret", "any"])),
        spec("where", "Condition", Kind::Text),
    ];
    const STREAK: &[Spec] = &[
        spec("key", "Key", Kind::Text),
        spec("metric", "Metric", Kind::Text),
        spec("period", "Period", Kind::Choice(&["day", "week", "month"])),
        spec("freezes.perMonth", "Freezes per month", Kind::Number),
    ];
    const ACHIEVEMENT: &[Spec] = &[
        spec("key", "Key", Kind::Text),
        spec("name", "Name", Kind::Text),
        spec("metric", "Metric", Kind::Text),
        spec("streak", "or streak", Kind::Text),
        spec("threshold", "Threshold", Kind::Number),
    ];
    const POINTS: &[Spec] = &[
        spec("key", "Key", Kind::Text),
        spec("name", "Name", Kind::Text),
    ];
    const TRIGGER: &[Spec] = &[
        spec("metric", "Metric", Kind::Text),
        spec("achievement", "or achievement", Kind::Text),
        spec("every", "Every", Kind::Number),
        spec("points", "Points", Kind::Number),
    ];
    const LEVEL: &[Spec] = &[
        spec("key", "Key", Kind::Text),
        spec("at", "At", Kind::Number),
    ];
    const LEADERBOARD: &[Spec] = &[
        spec("key", "Key", Kind::Text),
        spec("points", "Points system", Kind::Text),
        spec(
            "period",
            "Period",
            Kind::Choice(&["day", "week", "month", "all_time"]),
        ),
        spec("size", "Size", Kind::Number),
    ];
    match list {
        "metrics" => METRIC,
        "streaks" => STREAK,
        "achievements" => ACHIEVEMENT,
        "points" => POINTS,
        "triggers" => TRIGGER,
        "levels" => LEVEL,
        "leaderboards" => LEADERBOARD,
        _ => &[],
    }
}

/// A new, empty item for `list` (what "Add" appends).
pub fn blank_item(list: &str) -> Value {
    match list {
        "metrics" => serde_json::json!({ "aggregate": "count" }),
        "streaks" => serde_json::json!({ "period": "day" }),
        "points" => serde_json::json!({ "triggers": [], "levels": [] }),
        "leaderboards" => serde_json::json!({ "period": "week", "size": 100 }),
        _ => Value::Object(Map::new()),
    }
}

/// Appends a blank item to the list at `path` (`$.metrics`, `$.points[0].triggers`).
pub fn add_item(document: &mut Value, path: &str) -> bool {
    let Some(segments) = segments(path) else {
        return false;
    };
    let list = match segments.last() {
        Some(Segment::Field(name)) => name.clone(),
        _ => return false,
    };
    let Some(target) = pointer_mut(document, &segments) else {
        return false;
    };
    if target.is_null() {
        *target = Value::Array(Vec::new());
    }
    match target.as_array_mut() {
        Some(items) => {
            items.push(blank_item(&list));
            true
        }
        None => false,
    }
}

/// Removes the item at `path` (`$.metrics[1]`).
pub fn remove_item(document: &mut Value, path: &str) -> bool {
    let Some(mut segments) = segments(path) else {
        return false;
    };
    let Some(Segment::Index(index)) = segments.pop() else {
        return false;
    };
    match pointer_mut(document, &segments).and_then(Value::as_array_mut) {
        Some(items) if index < items.len() => {
            items.remove(index);
            true
        }
        _ => false,
    }
}

fn pointer_mut<'a>(value: &'a mut Value, segments: &[Segment]) -> Option<&'a mut Value> {
    let mut current = value;
    for segment in segments {
        current = match segment {
            Segment::Field(name) => {
                let map = current.as_object_mut()?;
                map.entry(name.clone()).or_insert(Value::Null)
            }
            Segment::Index(index) => current.as_array_mut()?.get_mut(*index)?,
        };
    }
    Some(current)
}

/// The text at `path` under `value` (`freezes.perMonth` walks into the nested object).
pub fn text_at(value: &Value, name: &str) -> String {
    let mut current = value;
    for part in name.split('.') {
        match current.get(part) {
            Some(next) => current = next,
            None => return String::new(),
        }
    }
    match current {
        Value::String(text) => text.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn example() -> Value {
        serde_json::from_str(include_str!("../../../../examples/browser/rules.json")).unwrap()
    }

    #[test]
    fn the_examples_rules_survive_the_form_unchanged() {
        let rules = example();
        assert_eq!(document(&fields(&rules)), rules);
    }

    #[test]
    fn numbers_are_read_where_the_rules_expect_them_and_text_is_kept_elsewhere() {
        let doc = document(&[
            ("$.achievements[0].threshold".to_owned(), "10".to_owned()),
            ("$.achievements[0].name".to_owned(), "10".to_owned()),
            ("$.streaks[0].freezes.perMonth".to_owned(), "2".to_owned()),
            ("$.achievements[1].threshold".to_owned(), "ten".to_owned()),
        ]);
        assert_eq!(doc["achievements"][0]["threshold"], 10);
        assert_eq!(doc["achievements"][0]["name"], "10");
        assert_eq!(doc["streaks"][0]["freezes"]["perMonth"], 2);
        // Left as text, so the parser reports it on its field.
        assert_eq!(doc["achievements"][1]["threshold"], "ten");
    }

    #[test]
    fn a_removed_items_gap_closes_and_stray_names_are_ignored() {
        let doc = document(&[
            ("$.metrics[0].key".to_owned(), "a".to_owned()),
            ("$.metrics[2].key".to_owned(), "c".to_owned()),
            ("action".to_owned(), "validate".to_owned()),
            ("$.metrics[x].key".to_owned(), "bad".to_owned()),
        ]);
        assert_eq!(
            doc["metrics"],
            serde_json::json!([{ "key": "a" }, { "key": "c" }])
        );
        assert_eq!(doc["leaderboards"], serde_json::json!([]));
    }

    #[test]
    fn items_are_added_and_removed_by_path() {
        let mut doc = example();
        assert!(add_item(&mut doc, "$.points[0].triggers"));
        assert_eq!(doc["points"][0]["triggers"].as_array().unwrap().len(), 4);
        assert!(remove_item(&mut doc, "$.metrics[0]"));
        assert_eq!(doc["metrics"][0]["key"], "revenue");
        assert!(!remove_item(&mut doc, "$.metrics[99]"));
        assert!(!add_item(&mut doc, "$.metrics[0]"));
        assert_eq!(text_at(&doc["streaks"][0], "freezes.perMonth"), "1");
    }

    fn leaf_text() -> impl Strategy<Value = String> {
        "[a-zA-Z_][a-zA-Z0-9_ .>=]{0,12}"
            .prop_map(|s| s.trim().to_owned())
            .prop_filter("non-empty", |s| !s.is_empty())
    }

    proptest! {
        /// Any document of the rules' shape (lists of objects of text and numbers) read out as
        /// fields and back is the same document.
        #[test]
        fn fields_then_document_is_the_identity(
            items in proptest::collection::vec(
                (leaf_text(), leaf_text(), 0i64..1_000_000), 0..5),
            section in proptest::sample::select(SECTIONS.to_vec()),
        ) {
            let list: Vec<Value> = items
                .iter()
                .map(|(key, event, threshold)| serde_json::json!({
                    "key": key, "event": event, "threshold": threshold }))
                .collect();
            let mut rules = serde_json::json!({ "timezone": "Europe/Berlin" });
            for name in SECTIONS {
                rules[name] = Value::Array(Vec::new());
            }
            rules[section] = Value::Array(list);
            prop_assert_eq!(document(&fields(&rules)), rules);
        }

        #[test]
        fn no_path_text_makes_the_reader_panic(path in "\\PC{0,40}", text in "\\PC{0,20}") {
            let _ = document(&[(path, text)]);
        }
    }
}
