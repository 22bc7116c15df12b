use serde_json::{Map, Value, json};

use crate::{ConditionFacts, Source, compile};

fn holds_with(expression: &str, properties: Option<&Map<String, Value>>, source: Source) -> bool {
    let condition = compile(expression).unwrap();
    condition.holds(&ConditionFacts {
        event: "lesson_completed",
        properties,
        user_id: "vip_42",
        source,
    })
}

fn holds(expression: &str, properties: Value) -> bool {
    holds_with(expression, properties.as_object(), Source::Secret)
}

#[test]
fn numeric_comparisons_mix_int_and_double() {
    let at_least_50 = "properties.score >= 50";
    for score in [
        json!(50),
        json!(73),
        json!(50.5),
        json!(50.0),
        json!(1e2),
        json!(u64::MAX),
    ] {
        assert!(holds(at_least_50, json!({"score": score})), "{score}");
    }
    for score in [
        json!(49),
        json!(49.99),
        json!(-50),
        json!("abc"),
        json!("60"),
        Value::Null,
        json!([60]),
    ] {
        assert!(!holds(at_least_50, json!({"score": score})), "{score}");
    }
    assert!(!holds(at_least_50, json!({})));
    // A double literal against an integer property, and equality across the two.
    assert!(holds("properties.score > 49.5", json!({"score": 50})));
    assert!(holds("properties.score == 50", json!({"score": 50.0})));
    assert!(holds("properties.score == 50.0", json!({"score": 50})));
    assert!(holds("properties.score < 50.5", json!({"score": 50})));
    assert!(holds("properties.score == 3u", json!({"score": 3})));
    assert!(holds("properties.score * 2 == 100", json!({"score": 50.0})));
}

#[test]
fn all_four_variables_are_available() {
    assert!(holds("event == 'lesson_completed'", json!({})));
    assert!(holds("userId.startsWith('vip_')", json!({})));
    assert!(holds("source == 'secret'", json!({})));
    assert!(holds_with(
        "source == 'publishable'",
        None,
        Source::Publishable
    ));
    assert!(holds(
        "properties.plan == 'pro' && properties.seats > 3",
        json!({"plan": "pro", "seats": 5})
    ));
}

#[test]
fn an_event_without_properties_has_an_empty_map() {
    assert!(holds_with("size(properties) == 0", None, Source::Secret));
    assert!(holds_with("!has(properties.coupon)", None, Source::Secret));
    assert!(!holds_with(
        "properties.coupon == 'x'",
        None,
        Source::Secret
    ));
}

#[test]
fn nested_values_macros_and_strings_work() {
    let properties = json!({"tags": ["a", "sale"], "cart": {"items": 3}, "coupon": "SUMMER24"});
    assert!(holds("'sale' in properties.tags", properties.clone()));
    assert!(holds(
        "properties.tags.exists(t, t == 'sale')",
        properties.clone()
    ));
    assert!(holds("properties.cart.items >= 3", properties.clone()));
    assert!(holds(
        "has(properties.coupon) && properties.coupon.matches('^SUMMER')",
        properties.clone()
    ));
    assert!(holds("'coupon' in properties", properties.clone()));
    assert!(holds(
        "properties.tags.all(t, size(t) > 0) && properties.tags.exists(t, t == 'a')",
        properties
    ));
}

#[test]
fn evaluation_errors_and_non_booleans_do_not_hold() {
    assert!(!holds("properties.missing.deeper == 1", json!({})));
    assert!(!holds("properties.score / 0 == 1", json!({"score": 5})));
    assert!(!holds("properties.score", json!({"score": 1})));
    assert!(holds("properties.flag", json!({"flag": true})));
    assert!(!holds("properties.score + 'x' == 'x'", json!({"score": 1})));
    assert!(!holds("1", json!({})));
}

#[test]
fn syntax_errors_and_unknown_names_do_not_compile() {
    for expression in [
        "",
        "   ",
        "properties.score >=",
        "(",
        "propertes.score > 1",
        "user_id == 'x'",
        "a.b",
    ] {
        assert!(compile(expression).is_err(), "{expression}");
    }
    // Names bound by a macro are known inside it, and only there.
    assert!(compile("properties.tags.exists(t, t == 'a')").is_ok());
    assert!(compile("properties.tags.exists(t, t == 'a') && t == 'b'").is_err());
    // Type names are identifiers in CEL.
    assert!(compile("type(properties.score) == int").is_ok());
}

#[test]
fn a_macro_inside_another_is_refused() {
    let nested = "properties.a.all(x, properties.b.exists(y, y == x))";
    assert!(compile(nested).unwrap_err().contains("inside another"));
    // One after another, or over a macro's result, is linear and allowed.
    assert!(compile("properties.a.all(x, x > 0) && properties.b.exists(y, y == 1)").is_ok());
    assert!(compile("properties.a.map(x, x * 2).exists(y, y > 4)").is_ok());
}

#[test]
fn deep_expressions_are_refused_and_the_deepest_accepted_run_in_a_small_stack() {
    let parens = format!("{}1{} == 1", "(".repeat(17), ")".repeat(17));
    assert!(compile(&parens).unwrap_err().contains("nest"));
    let sums = format!("{}1 == 1", "1 + ".repeat(240));
    assert!(compile(&sums).unwrap_err().contains("levels deep"));
    assert!(compile(&"x".repeat(1001)).unwrap_err().contains("1000"));

    type Shape = fn(usize) -> String;
    let shapes: [(&str, Shape); 9] = [
        ("parens", |n| {
            format!("{}properties.n{} == 1", "(".repeat(n), ")".repeat(n))
        }),
        ("sum", |n| {
            format!("{}properties.n == 1", "properties.n + ".repeat(n))
        }),
        ("and", |n| {
            format!("{}true", "properties.n == 1 && ".repeat(n))
        }),
        ("ternary", |n| {
            format!("{}true", "properties.n == 1 ? false : ".repeat(n))
        }),
        ("not", |n| format!("{}true", "!".repeat(n))),
        ("calls", |n| {
            format!("{}properties{} > 0", "size(".repeat(n), ")".repeat(n))
        }),
        ("lists", |n| {
            format!("{}1{} != []", "[".repeat(n), "]".repeat(n))
        }),
        ("select", |n| format!("properties{} == 1", ".n".repeat(n))),
        ("macro", |n| {
            format!("[1].exists(x, {}x == 1)", "x + ".repeat(n))
        }),
    ];
    for (name, shape) in shapes {
        let deepest = (0..500)
            .take_while(|n| compile(&shape(*n)).is_ok())
            .last()
            .unwrap_or_else(|| panic!("{name}: even the shallowest does not compile"));
        let expression = shape(deepest);
        // The 2 MiB of tokio's worker threads and of the test harness; an overflow aborts the run.
        std::thread::Builder::new()
            .stack_size(2 << 20)
            .spawn(move || {
                let properties = json!({"n": {"n": {"n": 1}}});
                compile(&expression).unwrap().holds(&ConditionFacts {
                    event: "e",
                    properties: properties.as_object(),
                    user_id: "u",
                    source: Source::Secret,
                })
            })
            .unwrap()
            .join()
            .unwrap();
    }
}

#[test]
fn compiled_conditions_are_shareable_between_threads() {
    fn assert_send_sync<T: Send + Sync + ?Sized>() {}
    assert_send_sync::<dyn crate::Condition>();
    let condition = compile("properties.score >= 50").unwrap();
    let properties = json!({"score": 60});
    let handles: Vec<_> = (0..2)
        .map(|_| {
            let condition = condition.clone();
            let properties = properties.clone();
            std::thread::spawn(move || {
                condition.holds(&ConditionFacts {
                    event: "e",
                    properties: properties.as_object(),
                    user_id: "u",
                    source: Source::Secret,
                })
            })
        })
        .collect();
    for handle in handles {
        assert!(handle.join().unwrap());
    }
}
