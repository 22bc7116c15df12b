use super::*;
use serde_json::json;

fn at(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
}

fn track(value: Value) -> Result<Event, Vec<FieldError>> {
    parse_track(value, &BatchDefaults::default(), Utc::now())
}

#[test]
fn minimal_track_is_valid() {
    let event = track(json!({ "event": "page_view", "userId": "u1" })).unwrap();
    assert_eq!(event.kind, Kind::Track);
    assert_eq!(event.subject(), "u1");
    assert!(event.data.is_empty());
    let event =
        track(json!({ "event": "page_view", "anonymousId": "a1", "properties": {"page": "/"} }))
            .unwrap();
    assert_eq!(event.subject(), "a1");
    assert_eq!(event.data["page"], "/");
}

#[test]
fn invalid_tracks_name_their_fields() {
    let fields = |value| -> Vec<String> {
        track(value)
            .unwrap_err()
            .into_iter()
            .map(|e| e.field)
            .collect()
    };
    assert_eq!(fields(json!({ "event": "x" })), ["userId"]);
    assert_eq!(fields(json!({ "event": "", "userId": "u" })), ["event"]);
    assert_eq!(fields(json!({ "event": "a\nb", "userId": "u" })), ["event"]);
    assert_eq!(
        fields(json!({ "event": "x".repeat(201), "userId": "u" })),
        ["event"]
    );
    assert_eq!(fields(json!({ "event": "x", "userId": "" })), ["userId"]);
    assert_eq!(
        fields(json!({ "event": "x", "anonymousId": "a".repeat(256) })),
        ["anonymousId"]
    );
    assert_eq!(
        fields(json!({ "event": "x", "userId": "u", "messageId": "m".repeat(101) })),
        ["messageId"]
    );
    assert_eq!(
        fields(json!({ "event": "x", "userId": "u", "timestamp": "yesterday" })),
        ["timestamp"]
    );
    assert_eq!(
        fields(json!({ "event": "x", "userId": "u", "sentAt": "2024-13-01" })),
        ["sentAt"]
    );
    assert_eq!(
        fields(json!({ "event": "x", "userId": "u", "properties": [1] })),
        ["properties"]
    );
    assert_eq!(
        fields(json!({ "event": "x", "userId": "u", "context": "web" })),
        ["context"]
    );
    assert_eq!(fields(json!({ "event": 5, "userId": "u" })), ["event"]);
    assert_eq!(fields(json!({ "userId": "u" })), [""]);
    assert_eq!(fields(json!(["not", "an", "object"])), [""]);
}

#[test]
fn size_limit_is_on_the_serialized_event() {
    let small = json!({ "event": "x", "userId": "u", "properties": { "p": "a".repeat(32_000) } });
    assert!(track(small).is_ok());
    let large = json!({ "event": "x", "userId": "u", "properties": { "p": "a".repeat(33_000) } });
    assert_eq!(track(large).unwrap_err()[0].message, EVENT_TOO_LARGE);
}

#[test]
fn occurred_at_corrects_client_clock_skew() {
    let received = at("2026-11-23T12:00:00Z");
    let no_time = track(json!({ "event": "x", "userId": "u" })).unwrap();
    assert_eq!(no_time.occurred_at(received), received);

    // The client's clock is 1 h ahead: it sent at 13:00 an event it stamped 12:55.
    let skewed = track(json!({ "event": "x", "userId": "u",
        "timestamp": "2026-11-23T12:55:00Z", "sentAt": "2026-11-23T13:00:00Z" }))
    .unwrap();
    assert_eq!(skewed.occurred_at(received), at("2026-11-23T11:55:00Z"));

    let plain =
        track(json!({ "event": "x", "userId": "u", "timestamp": "2026-11-20T08:00:00+02:00" }))
            .unwrap();
    assert_eq!(plain.occurred_at(received), at("2026-11-20T06:00:00Z"));

    let future =
        track(json!({ "event": "x", "userId": "u", "timestamp": "2026-11-25T12:00:00Z" })).unwrap();
    assert_eq!(future.occurred_at(received), received);
    let near_future =
        track(json!({ "event": "x", "userId": "u", "timestamp": "2026-11-24T11:00:00Z" })).unwrap();
    assert_eq!(
        near_future.occurred_at(received),
        at("2026-11-24T11:00:00Z")
    );
}

#[test]
fn batch_defaults_apply_to_items_without_their_own() {
    let defaults = BatchDefaults {
        sent_at: Some(at("2026-11-23T13:00:00Z")),
        context: Some(
            json!({ "library": { "name": "web" }, "locale": "de" })
                .as_object()
                .unwrap()
                .clone(),
        ),
    };
    let event = parse_track(
        json!({ "event": "x", "userId": "u", "timestamp": "2026-11-23T12:55:00Z", "context": { "locale": "fr" } }),
        &defaults,
        at("2026-11-23T13:00:00Z"),
    )
    .unwrap();
    assert_eq!(event.sent_at, defaults.sent_at);
    assert_eq!(event.context["locale"], "fr");
    assert_eq!(event.context["library"]["name"], "web");
}

#[test]
fn identify_requires_a_user_id() {
    let now = Utc::now();
    let event =
        parse_identify(json!({ "userId": "u1", "traits": { "plan": "pro" } }), now).unwrap();
    assert_eq!(event.kind, Kind::Identify);
    assert_eq!(event.event, IDENTIFY_EVENT);
    assert_eq!(event.data["plan"], "pro");
    assert!(parse_identify(json!({ "traits": {} }), now).is_err());
    assert!(parse_identify(json!({ "userId": "" }), now).is_err());
}

fn fields_of(result: Result<Event, Vec<FieldError>>) -> Vec<String> {
    result.unwrap_err().into_iter().map(|e| e.field).collect()
}

#[test]
fn what_postgres_cannot_store_is_refused_naming_the_field() {
    let fields = |value| fields_of(track(value));
    assert_eq!(
        fields(json!({ "event": "x", "userId": "u", "properties": { "note": "a\0b" } })),
        ["properties.note"]
    );
    assert_eq!(
        fields(json!({ "event": "x", "userId": "u", "properties": { "a\0": 1 } })),
        ["properties[\"a\\u0000\"]"]
    );
    assert_eq!(
        fields(json!({ "event": "x", "userId": "u",
            "properties": { "items": [ { "name": "ok" }, { "name": "\0" } ] } })),
        ["properties.items[1].name"]
    );
    assert_eq!(
        fields(json!({ "event": "x", "userId": "u", "context": { "page": { "title": "\0" } } })),
        ["context.page.title"]
    );
    assert_eq!(
        fields(json!({ "event": "x", "userId": "u", "messageId": "m\0" })),
        ["messageId"]
    );
    assert_eq!(
        fields(json!({ "event": "x", "userId": "u", "messageId": "m\n1" })),
        ["messageId"]
    );
    assert_eq!(
        fields(json!({ "event": "x", "anonymousId": "a\0" })),
        ["anonymousId"]
    );
    assert_eq!(
        fields(json!({ "event": "x", "userId": "u", "timestamp": "0000-01-01T00:00:00Z" })),
        ["timestamp"]
    );
    assert_eq!(
        fields(json!({ "event": "x", "userId": "u", "sentAt": "0000-06-01T00:00:00Z" })),
        ["sentAt"]
    );
    // Each time is fine alone, but the clock correction would move the event before year 1.
    assert_eq!(
        fields(json!({ "event": "x", "userId": "u",
            "timestamp": "0001-01-01T00:00:00Z", "sentAt": "9999-01-01T00:00:00Z" })),
        ["timestamp"]
    );
    assert_eq!(
        fields_of(parse_identify(
            json!({ "userId": "u", "traits": { "k\0": "v" } }),
            Utc::now()
        )),
        ["traits[\"k\\u0000\"]"]
    );
    // Other control characters are ordinary data in properties.
    assert!(
        track(json!({ "event": "x", "userId": "u", "properties": { "tab": "a\tb\u{1}" } })).is_ok()
    );
    assert!(
        track(json!({ "event": "x", "userId": "u", "timestamp": "0001-01-01T00:00:00Z" })).is_ok()
    );
}

#[test]
fn a_batch_context_counts_in_every_event() {
    let context = json!({ "page": { "title": "t".repeat(20_000) } });
    let defaults = BatchDefaults {
        sent_at: None,
        context: Some(context.as_object().unwrap().clone()),
    };
    let item = json!({ "event": "x", "userId": "u", "properties": { "p": "a".repeat(15_000) } });
    // Alone each part is small; merged, the event as produced is over 32 KB.
    assert!(track(item.clone()).is_ok());
    let err = parse_track(item, &defaults, Utc::now()).unwrap_err();
    assert_eq!(err[0].message, EVENT_TOO_LARGE);
    let small = json!({ "event": "x", "userId": "u" });
    let event = parse_track(small, &defaults, Utc::now()).unwrap();
    assert!(event.produced_len > 20_000);
    assert_eq!(event.produced_len, event.measure_produced_len());
}

mod properties {
    use super::*;
    use proptest::prelude::*;

    fn text() -> impl Strategy<Value = String> {
        prop_oneof![
            ".{0,12}",
            "[a-z]{1,8}",
            proptest::collection::vec(
                prop_oneof![Just('\0'), Just('\n'), Just('\u{7f}'), any::<char>()],
                0..6
            )
            .prop_map(|chars| chars.into_iter().collect()),
        ]
    }

    fn contains_nul(value: &Value) -> bool {
        match value {
            Value::String(text) => text.contains('\0'),
            Value::Array(items) => items.iter().any(contains_nul),
            Value::Object(map) => map
                .iter()
                .any(|(key, value)| key.contains('\0') || contains_nul(value)),
            _ => false,
        }
    }

    fn json_value() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::from),
            any::<i64>().prop_map(Value::from),
            any::<u64>().prop_map(Value::from),
            any::<f64>()
                .prop_filter("finite", |f| f.is_finite())
                .prop_map(Value::from),
            text().prop_map(Value::from),
        ];
        leaf.prop_recursive(6, 48, 6, |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
                proptest::collection::btree_map(text(), inner, 0..6)
                    .prop_map(|map| Value::Object(map.into_iter().collect())),
            ]
        })
    }

    /// An object over the fields the bodies know (and one they do not), each of any type.
    fn body_object() -> impl Strategy<Value = Map<String, Value>> {
        let field = prop_oneof![
            Just("event"),
            Just("userId"),
            Just("anonymousId"),
            Just("properties"),
            Just("traits"),
            Just("messageId"),
            Just("timestamp"),
            Just("sentAt"),
            Just("context"),
            Just("other"),
        ];
        let value = prop_oneof![
            3 => text().prop_map(Value::from),
            1 => Just(Value::Null),
            1 => json_value(),
            1 => proptest::collection::btree_map(text(), json_value(), 0..3)
                .prop_map(|map| Value::Object(map.into_iter().collect())),
        ];
        proptest::collection::btree_map(field, value, 0..9)
            .prop_map(|fields| fields.into_iter().map(|(k, v)| (k.to_owned(), v)).collect())
    }

    proptest! {
        /// The typed fast path takes a body exactly when serde would, and takes the same one.
        #[test]
        fn typed_bodies_agree_with_serde(map in body_object()) {
            let by_serde = deserialize::<TrackBody>(Value::Object(map.clone())).ok();
            prop_assert_eq!(typed::track(&mut map.clone()), by_serde);
            let by_serde = deserialize::<IdentifyBody>(Value::Object(map.clone())).ok();
            prop_assert_eq!(typed::identify(&mut map.clone()), by_serde);
        }
    }

    proptest! {
        #[test]
        fn accepted_events_hold_nothing_postgres_refuses(
            event in text(), user in text(), message in text(),
            properties in proptest::collection::btree_map(text(), json_value(), 0..4),
            context in proptest::collection::btree_map(text(), json_value(), 0..3),
            seconds in -70_000_000_000i64..260_000_000_000i64,
        ) {
            let timestamp = DateTime::<Utc>::from_timestamp(seconds, 0)
                .map(|t| t.to_rfc3339());
            let value = json!({
                "event": event, "userId": user, "messageId": message,
                "properties": properties, "context": context, "timestamp": timestamp,
            });
            let now = Utc::now();
            if let Ok(accepted) = parse_track(value, &BatchDefaults::default(), now) {
                let stored = json!({ "properties": accepted.data, "context": accepted.context });
                prop_assert!(!contains_nul(&stored));
                prop_assert!(!accepted.event.contains('\0'));
                prop_assert!(!accepted.user_id.as_deref().unwrap().chars().any(char::is_control));
                prop_assert!(!accepted.message_id.as_deref().unwrap().chars().any(char::is_control));
                prop_assert!(storable_times().contains(&accepted.occurred_at(now)));
            }
        }

        #[test]
        fn storable_problem_finds_every_nul(map in proptest::collection::btree_map(text(), json_value(), 0..4)) {
            let map: Map<String, Value> = map.into_iter().collect();
            let has_nul = contains_nul(&Value::Object(map.clone()));
            prop_assert_eq!(storable_problem("properties", &map).is_some(), has_nul);
        }
    }
}

#[test]
fn field_errors_nest_into_lists() {
    let err = FieldError::new("event", "bad").within("batch", 3);
    assert_eq!(err.field, "batch[3].event");
    assert_eq!(
        FieldError::new("", "bad").within("batch", 0).field,
        "batch[0]"
    );
}
