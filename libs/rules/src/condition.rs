//! A metric's `where` condition. The rest of the crate sees only [`Condition`]; the expression
//! language behind it is CEL (the `cel` crate), which can be swapped without touching evaluation.
//!
//! CEL has no loops or recursion, only macros over the data they are given, so an expression's
//! cost is bounded by its length and the event's size. Limits keep that bound small:
//!
//! - a macro (`all`, `exists`, `map`, …) may not run inside another macro's body, which would
//!   make the cost the product of list sizes;
//! - the parser and the interpreter recurse once per level of the expression's tree, so the
//!   tree may be at most [`MAX_DEPTH`] deep, which keeps evaluation well inside a 2 MiB thread
//!   stack (tokio's and the test harness's default) even in a debug build;
//! - the parser (ANTLR-generated) takes a lot of stack per bracket level (over 150 KiB in a
//!   debug build), so brackets nest at most [`MAX_NESTING`] deep and parsing runs on a thread of
//!   its own with [`PARSER_STACK`] of stack, whatever thread asked for it.

use std::fmt;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::{Arc, OnceLock};

use cel::common::ast::{EntryExpr, Expr, IdedExpr};
use cel::objects::{Key, Map as CelMap};
use cel::{Context, Env, Program, Value as CelValue};
use serde_json::{Map, Value};

use crate::input::Source;

pub(crate) const MAX_NESTING: usize = 16;
pub(crate) const MAX_DEPTH: usize = 24;
pub(crate) const MAX_CHARS: usize = 1000;
const PARSER_STACK: usize = 32 << 20;

/// What a condition may look at: the event, never the user's state or the time.
#[derive(Debug, Clone, Copy)]
pub struct ConditionFacts<'a> {
    /// The event's name (`event` in an expression).
    pub event: &'a str,
    /// `properties`; an event without properties has an empty map.
    pub properties: Option<&'a Map<String, Value>>,
    /// `userId`.
    pub user_id: &'a str,
    /// `source`: `"secret"` or `"publishable"`.
    pub source: Source,
}

/// A compiled condition. Holding is all it can do: an expression that cannot be evaluated for an
/// event (a missing property, a type mismatch, a result that is not a boolean) does not hold.
pub trait Condition: Send + Sync + fmt::Debug {
    fn holds(&self, facts: &ConditionFacts<'_>) -> bool;
}

/// Compiles `expression`, or says why it cannot be.
pub fn compile(expression: &str) -> Result<Arc<dyn Condition>, String> {
    Ok(Arc::new(compile_cel(expression)?))
}

fn compile_cel(expression: &str) -> Result<CelCondition, String> {
    let length = expression.chars().count();
    if length > MAX_CHARS {
        return Err(format!("at most {MAX_CHARS} characters, found {length}"));
    }
    check_nesting(expression)?;
    let program = parse(expression)?;
    check_tree(program.expression(), &mut Vec::new(), false, 0)?;
    let mut reads = Reads::default();
    reads.collect(program.expression(), &mut Vec::new());
    Ok(CelCondition {
        source: expression.to_owned(),
        program,
        reads,
    })
}

/// Which of the event's facts an expression reads. Evaluation hands the interpreter only those,
/// and of the properties only the fields it selects by name where that is all it does with
/// them: converting every property of every event into CEL values was most of a condition's
/// cost in the engine's drain benchmark (docs/BENCHMARKS.md).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
struct Reads {
    event: bool,
    user_id: bool,
    source: bool,
    properties: PropertiesRead,
}

#[derive(Debug, Default, Clone, PartialEq, Eq)]
enum PropertiesRead {
    /// Only `properties.<field>` (or `has(properties.<field>)`) of these fields; none: unread.
    #[default]
    Unread,
    Fields(std::collections::BTreeSet<String>),
    /// Used otherwise (indexed, iterated, measured, compared whole): all of them.
    Whole,
}

impl Reads {
    /// Every fact, whole: what evaluation gave the interpreter before reads were collected, and
    /// what the property test compares against.
    #[cfg(test)]
    fn everything() -> Self {
        Self {
            event: true,
            user_id: true,
            source: true,
            properties: PropertiesRead::Whole,
        }
    }

    /// `bound`: the names a macro binds around `expr`, which shadow the facts' names.
    fn collect(&mut self, expr: &IdedExpr, bound: &mut Vec<String>) {
        match &expr.expr {
            Expr::Unspecified | Expr::Literal(_) | Expr::Struct(_) => {}
            Expr::Ident(name) if bound.contains(name) => {}
            Expr::Ident(name) => match name.as_str() {
                "event" => self.event = true,
                "userId" => self.user_id = true,
                "source" => self.source = true,
                "properties" => self.properties = PropertiesRead::Whole,
                _ => {}
            },
            Expr::Select(select) => match &select.operand.expr {
                Expr::Ident(name) if name == "properties" && !bound.contains(name) => {
                    match &mut self.properties {
                        PropertiesRead::Whole => {}
                        PropertiesRead::Fields(fields) => {
                            fields.insert(select.field.clone());
                        }
                        unread @ PropertiesRead::Unread => {
                            *unread = PropertiesRead::Fields(
                                std::iter::once(select.field.clone()).collect(),
                            );
                        }
                    }
                }
                _ => self.collect(&select.operand, bound),
            },
            Expr::Call(call) => {
                if let Some(target) = &call.target {
                    self.collect(target, bound);
                }
                for arg in &call.args {
                    self.collect(arg, bound);
                }
            }
            Expr::List(list) => {
                for element in &list.elements {
                    self.collect(element, bound);
                }
            }
            Expr::Map(map) => {
                for entry in &map.entries {
                    match &entry.expr {
                        EntryExpr::MapEntry(entry) => {
                            self.collect(&entry.key, bound);
                            self.collect(&entry.value, bound);
                        }
                        EntryExpr::StructField(field) => self.collect(&field.value, bound),
                    }
                }
            }
            Expr::Comprehension(comprehension) => {
                self.collect(&comprehension.iter_range, bound);
                self.collect(&comprehension.accu_init, bound);
                let before = bound.len();
                bound.push(comprehension.iter_var.clone());
                bound.extend(comprehension.iter_var2.clone());
                bound.push(comprehension.accu_var.clone());
                for part in [
                    &comprehension.loop_cond,
                    &comprehension.loop_step,
                    &comprehension.result,
                ] {
                    self.collect(part, bound);
                }
                bound.truncate(before);
            }
        }
    }
}

fn parse(expression: &str) -> Result<Program, String> {
    let unparsable = || String::from("the expression could not be parsed");
    std::thread::scope(|scope| {
        let parser = std::thread::Builder::new()
            .name(String::from("cel-parse"))
            .stack_size(PARSER_STACK)
            .spawn_scoped(scope, || env().compile(expression))
            .map_err(|error| format!("could not start the parser: {error}"))?;
        // The parser is third-party code run on text from tenants: a panic in it must become an
        // invalid condition, not take down the process that validates rules.
        parser
            .join()
            .map_err(|_| unparsable())?
            .map_err(|errors| errors.to_string())
    })
}

/// The variables an expression may name, and CEL's type names, which are identifiers too
/// (`type(x) == int`).
const KNOWN_IDENTIFIERS: &[&str] = &[
    "event",
    "properties",
    "userId",
    "source",
    "int",
    "uint",
    "double",
    "bool",
    "string",
    "bytes",
    "list",
    "map",
    "null_type",
    "type",
    "dyn",
];

fn env() -> Arc<Env> {
    static ENV: OnceLock<Arc<Env>> = OnceLock::new();
    ENV.get_or_init(|| Arc::new(Env::stdlib())).clone()
}

/// Brackets inside string literals count too: over-counting only refuses a rare expression,
/// while skipping literals would take CEL's own lexer (raw, triple-quoted, escaped strings).
fn check_nesting(expression: &str) -> Result<(), String> {
    let mut depth = 0usize;
    for c in expression.chars() {
        match c {
            '(' | '[' | '{' => {
                depth += 1;
                if depth > MAX_NESTING {
                    return Err(format!("brackets nest more than {MAX_NESTING} deep"));
                }
            }
            ')' | ']' | '}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    Ok(())
}

/// Refuses names that are neither a variable nor bound by a macro, so that a typo such as
/// `propertes.score` is an error when the rules are saved instead of a condition that never
/// holds; a macro inside another macro's body; and a tree deeper than [`MAX_DEPTH`] (see the
/// module's comment).
fn check_tree(
    expr: &IdedExpr,
    bound: &mut Vec<String>,
    in_macro_body: bool,
    depth: usize,
) -> Result<(), String> {
    if depth > MAX_DEPTH {
        return Err(format!(
            "the expression nests more than {MAX_DEPTH} levels deep"
        ));
    }
    let depth = depth + 1;
    let check =
        |expr: &IdedExpr, bound: &mut Vec<String>| check_tree(expr, bound, in_macro_body, depth);
    match &expr.expr {
        Expr::Unspecified | Expr::Literal(_) => Ok(()),
        Expr::Ident(name) => {
            // The parser names a macro's accumulator `@result` and the like.
            if name.starts_with('@')
                || KNOWN_IDENTIFIERS.contains(&name.as_str())
                || bound.iter().any(|variable| variable == name)
            {
                Ok(())
            } else {
                Err(format!(
                    "unknown name `{name}`; the names are event, properties, userId and source"
                ))
            }
        }
        Expr::Select(select) => check(&select.operand, bound),
        Expr::Call(call) => {
            if let Some(target) = &call.target {
                check(target, bound)?;
            }
            call.args.iter().try_for_each(|arg| check(arg, bound))
        }
        Expr::List(list) => list
            .elements
            .iter()
            .try_for_each(|element| check(element, bound)),
        Expr::Map(map) => map.entries.iter().try_for_each(|entry| match &entry.expr {
            EntryExpr::MapEntry(entry) => {
                check(&entry.key, bound)?;
                check(&entry.value, bound)
            }
            EntryExpr::StructField(field) => check(&field.value, bound),
        }),
        Expr::Struct(_) => Err(String::from("message literals are not supported")),
        Expr::Comprehension(comprehension) => {
            if in_macro_body {
                return Err(String::from(
                    "a macro (all, exists, exists_one, map, filter) cannot run inside another",
                ));
            }
            check(&comprehension.iter_range, bound)?;
            check(&comprehension.accu_init, bound)?;
            let before = bound.len();
            bound.push(comprehension.iter_var.clone());
            bound.extend(comprehension.iter_var2.clone());
            bound.push(comprehension.accu_var.clone());
            let body = [
                &comprehension.loop_cond,
                &comprehension.loop_step,
                &comprehension.result,
            ];
            let checked = body
                .into_iter()
                .try_for_each(|part| check_tree(part, bound, true, depth));
            bound.truncate(before);
            checked
        }
    }
}

struct CelCondition {
    source: String,
    program: Program,
    reads: Reads,
}

impl fmt::Debug for CelCondition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("CelCondition").field(&self.source).finish()
    }
}

impl Condition for CelCondition {
    fn holds(&self, facts: &ConditionFacts<'_>) -> bool {
        self.holds_reading(facts, &self.reads)
    }
}

impl CelCondition {
    /// Evaluates with the interpreter given the facts `reads` names (a fact an expression reads
    /// but is not given is an error, so the condition would not hold: `reads` must cover them).
    fn holds_reading(&self, facts: &ConditionFacts<'_>, reads: &Reads) -> bool {
        // As in `compile`: an expression that trips a panic in the interpreter is one that does
        // not hold, for this event only.
        catch_unwind(AssertUnwindSafe(|| {
            let mut context = Context::with_env(env());
            if reads.event {
                context.add_variable_from_value("event", facts.event.to_owned());
            }
            let properties = match &reads.properties {
                PropertiesRead::Unread => None,
                PropertiesRead::Whole => {
                    Some(facts.properties.map_or_else(empty_map, object_to_cel))
                }
                PropertiesRead::Fields(fields) => {
                    Some(facts.properties.map_or_else(empty_map, |all| {
                        let map: std::collections::HashMap<Key, CelValue> = fields
                            .iter()
                            .filter_map(|name| {
                                let value = all.get(name)?;
                                Some((Key::String(Arc::new(name.clone())), to_cel(value)))
                            })
                            .collect();
                        CelValue::Map(CelMap::from(map))
                    }))
                }
            };
            if let Some(properties) = properties {
                context.add_variable_from_value("properties", properties);
            }
            if reads.user_id {
                context.add_variable_from_value("userId", facts.user_id.to_owned());
            }
            if reads.source {
                context.add_variable_from_value("source", facts.source.as_str().to_owned());
            }
            matches!(self.program.execute(&context), Ok(CelValue::Bool(true)))
        }))
        .unwrap_or(false)
    }
}

fn empty_map() -> CelValue {
    CelValue::Map(CelMap::from(
        std::collections::HashMap::<Key, CelValue>::new(),
    ))
}

/// JSON as CEL values. A whole number becomes an `int` and any other a `double`, so that
/// `properties.score >= 50` compares the same way whether the client sent `50` or `50.0`, and a
/// large positive integer does not become a `uint` that CEL keeps apart from `int` literals.
fn to_cel(value: &Value) -> CelValue {
    match value {
        Value::Null => CelValue::Null,
        Value::Bool(flag) => CelValue::Bool(*flag),
        Value::Number(number) => {
            if let Some(integer) = number.as_i64() {
                CelValue::Int(integer)
            } else {
                let float = number.as_f64().unwrap_or(f64::NAN);
                match crate::document::whole_as_i64(float) {
                    Some(integer) => CelValue::Int(integer),
                    None => CelValue::Float(float),
                }
            }
        }
        Value::String(text) => CelValue::String(Arc::new(text.clone())),
        Value::Array(items) => CelValue::List(Arc::new(items.iter().map(to_cel).collect())),
        Value::Object(object) => object_to_cel(object),
    }
}

fn object_to_cel(object: &Map<String, Value>) -> CelValue {
    let map: std::collections::HashMap<Key, CelValue> = object
        .iter()
        .map(|(name, value)| (Key::String(Arc::new(name.clone())), to_cel(value)))
        .collect();
    CelValue::Map(CelMap::from(map))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use proptest::prelude::*;
    use serde_json::json;

    use super::*;

    fn reads(expression: &str) -> Reads {
        compile_cel(expression).unwrap().reads
    }

    #[test]
    fn only_the_fields_selected_by_name_are_read() {
        let fields = |names: &[&str]| {
            PropertiesRead::Fields(names.iter().map(|name| (*name).to_owned()).collect())
        };
        assert_eq!(
            reads("properties.score >= 50").properties,
            fields(&["score"])
        );
        assert_eq!(
            reads("has(properties.plan) && properties.seats.size() > properties.min").properties,
            fields(&["min", "plan", "seats"])
        );
        assert_eq!(
            reads("event == 'purchase'").properties,
            PropertiesRead::Unread
        );
        assert!(reads("event == 'purchase'").event);
        assert!(!reads("event == 'purchase'").user_id);
        assert_eq!(
            reads("properties['score'] > 1").properties,
            PropertiesRead::Whole
        );
        assert_eq!(
            reads("size(properties) > 1").properties,
            PropertiesRead::Whole
        );
        assert_eq!(reads("'a' in properties").properties, PropertiesRead::Whole);
        // A macro's own variable named like a fact shadows it.
        let shadowed = reads("properties.items.exists(properties, properties > 2)");
        assert_eq!(shadowed.properties, fields(&["items"]));
        let mixed = reads("properties.items.exists(i, i > properties.min) && userId != source");
        assert_eq!(mixed.properties, fields(&["items", "min"]));
        assert!(mixed.user_id && mixed.source && !mixed.event);
    }

    const EXPRESSIONS: &[&str] = &[
        "properties.score >= 50",
        "properties.score > 10 && properties.plan == 'pro'",
        "has(properties.plan)",
        "!has(properties.score) || properties.score < 3",
        "properties.items.exists(i, i > properties.score)",
        "properties.items.all(properties, properties > 1)",
        "properties.items.size() == 2",
        "properties['score'] == 7",
        "size(properties) >= 2",
        "'plan' in properties",
        "properties == {'score': 7}",
        "properties.nested.depth > 1",
        "event == 'purchase' && source == 'secret'",
        "userId.startsWith('u') && properties.score != 0",
        "properties.plan + '-' + event == 'pro-purchase'",
        "properties.score * 2.0 > 3.5",
        "properties.missing == 1",
        "[properties.score, properties.plan].size() == 2",
        "{'k': properties.score}.k == 7",
        "properties.score",
    ];

    fn json_value() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            (-20i64..20).prop_map(|n| json!(n)),
            (-20.0f64..20.0).prop_map(|n| json!(n)),
            prop_oneof![Just("pro"), Just("free"), Just("")].prop_map(|s| json!(s)),
        ];
        leaf.prop_recursive(2, 8, 3, |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..3).prop_map(Value::Array),
                proptest::collection::btree_map(
                    prop_oneof![Just("depth"), Just("score")].prop_map(str::to_owned),
                    inner,
                    0..2
                )
                .prop_map(|map| Value::Object(map.into_iter().collect())),
            ]
        })
    }

    proptest! {
        /// Handing the interpreter only what an expression reads never changes whether it holds.
        #[test]
        fn reading_less_never_changes_the_result(
            expression in proptest::sample::select(EXPRESSIONS),
            properties in proptest::option::of(proptest::collection::btree_map(
                prop_oneof![Just("score"), Just("plan"), Just("items"), Just("nested"), Just("other")]
                    .prop_map(str::to_owned),
                json_value(),
                0..5,
            )),
            event in prop_oneof![Just("purchase"), Just("page_view")],
            user in prop_oneof![Just("u1"), Just("ada")],
            secret in any::<bool>(),
        ) {
            let condition = compile_cel(expression).unwrap();
            let properties: Option<Map<String, Value>> =
                properties.map(|map| map.into_iter().collect());
            let facts = ConditionFacts {
                event,
                properties: properties.as_ref(),
                user_id: user,
                source: if secret { Source::Secret } else { Source::Publishable },
            };
            prop_assert_eq!(
                condition.holds(&facts),
                condition.holds_reading(&facts, &Reads::everything()),
                "{}", expression
            );
        }
    }
}
