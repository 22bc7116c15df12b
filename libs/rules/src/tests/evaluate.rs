use serde_json::{Value, json};
use uuid::Uuid;

use super::{Event, at, example, lesson, purchase, rules};
use crate::{
    Award, Evaluation, LedgerEntry, Rules, ScoreChange, StreakChange, UserState, adjust, apply,
};

fn run(rules: &Rules, state: &mut UserState, events: &[Event]) -> Vec<Evaluation> {
    events
        .iter()
        .map(|event| apply(rules, state, &event.input()))
        .collect()
}

fn streak_awards(evaluation: &Evaluation) -> Vec<(StreakChange, u32, u32)> {
    evaluation
        .awards
        .iter()
        .filter_map(|award| match award {
            Award::Streak {
                change,
                length,
                longest,
                ..
            } => Some((*change, *length, *longest)),
            _ => None,
        })
        .collect()
}

/// A rule set with one lesson streak of `period` and `per_month` freezes, in UTC.
fn streak_rules(period: &str, per_month: u32) -> Rules {
    rules(&json!({
        "metrics": [{"key": "lessons", "event": "lesson_completed", "aggregate": "count", "source": "any"}],
        "streaks": [{"key": "lessons", "metric": "lessons", "period": period,
                     "freezes": {"perMonth": per_month}}]
    }))
}

fn lessons_on(days: &[&str]) -> Vec<Event> {
    days.iter()
        .map(|day| Event::track("lesson_completed", &format!("{day}T12:00:00Z")))
        .collect()
}

// metrics

#[test]
fn counts_and_sums_feed_metrics() {
    let rules = rules(&example());
    let mut state = UserState::default();
    let evaluations = run(
        &rules,
        &mut state,
        &[
            purchase("2024-01-01T10:00:00Z", 4200),
            Event::track("purchase", "2024-01-01T11:00:00Z").properties(json!({"amount": 0.5})),
            // A missing or non-number property feeds the count only.
            Event::track("purchase", "2024-01-01T12:00:00Z").properties(json!({"amount": "12"})),
            Event::track("purchase", "2024-01-01T13:00:00Z"),
        ],
    );
    assert!(evaluations.iter().all(|evaluation| evaluation.counted));
    assert_eq!(state.metrics["purchases"], 4.0);
    assert_eq!(state.metrics["revenue"], 4200.5);
    assert!(!state.metrics.contains_key("lessons"));
}

#[test]
fn secret_metrics_ignore_publishable_events() {
    let rules = rules(&example());
    let mut state = UserState::default();
    let evaluation = apply(
        &rules,
        &mut state,
        &purchase("2024-01-01T10:00:00Z", 100).publishable().input(),
    );
    assert_eq!(evaluation, Evaluation::default());
    assert_eq!(state, UserState::default());
    // `lessons` takes any source.
    let evaluation = apply(
        &rules,
        &mut state,
        &lesson("2024-01-01T10:00:00Z").publishable().input(),
    );
    assert!(evaluation.counted);
    assert_eq!(state.metrics["lessons"], 1.0);
}

#[test]
fn a_where_condition_filters_events() {
    let rules = rules(&example());
    let mut state = UserState::default();
    let low =
        Event::track("lesson_completed", "2024-01-01T10:00:00Z").properties(json!({"score": 49}));
    let none = Event::track("lesson_completed", "2024-01-01T10:00:00Z");
    for event in [low, none] {
        assert_eq!(
            apply(&rules, &mut state, &event.input()),
            Evaluation::default()
        );
    }
    assert_eq!(state, UserState::default());
}

#[test]
fn an_event_no_metric_counts_changes_nothing() {
    let rules = rules(&example());
    let mut state = UserState::default();
    let evaluation = apply(
        &rules,
        &mut state,
        &Event::track("page_view", "2024-01-01T10:00:00Z").input(),
    );
    assert_eq!(evaluation, Evaluation::default());
    assert_eq!(state, UserState::default());
}

#[test]
fn metric_values_stay_finite() {
    let rules = rules(&json!({"metrics": [
        {"key": "total", "event": "e", "aggregate": "sum", "property": "x"}]}));
    let mut state = UserState::default();
    for _ in 0..3 {
        let event = Event::track("e", "2024-01-01T10:00:00Z").properties(json!({"x": 1.5e308}));
        apply(&rules, &mut state, &event.input());
    }
    assert_eq!(state.metrics["total"], f64::MAX);
    let written = serde_json::to_value(&state).unwrap();
    assert_eq!(serde_json::from_value::<UserState>(written).unwrap(), state);
}

// effective time

#[test]
fn a_secret_event_counts_when_it_occurred_but_never_after_it_was_received() {
    let mut event = purchase("2024-01-05T10:00:00Z", 1);
    event.occurred_at = at("2024-01-03T10:00:00Z");
    assert_eq!(event.input().effective_time(), at("2024-01-03T10:00:00Z"));
    event.occurred_at = at("2024-01-09T10:00:00Z");
    assert_eq!(event.input().effective_time(), at("2024-01-05T10:00:00Z"));
}

#[test]
fn a_publishable_event_counts_when_it_was_received() {
    let mut event = lesson("2024-01-05T10:00:00Z").publishable();
    event.occurred_at = at("2024-01-03T10:00:00Z");
    assert_eq!(event.input().effective_time(), at("2024-01-05T10:00:00Z"));
    // So a browser cannot backdate a lesson into yesterday's streak.
    let rules = streak_rules("day", 0);
    let mut state = UserState::default();
    apply(&rules, &mut state, &event.input());
    assert_eq!(
        state.streaks["lessons"].last,
        Some(at("2024-01-05T00:00:00Z").date_naive())
    );
}

// identify

#[test]
fn identify_sets_a_valid_time_zone_and_feeds_nothing() {
    let rules = rules(&example());
    let mut state = UserState::default();
    let tokyo = Event::identify("2024-01-01T10:00:00Z", json!({"timezone": "Asia/Tokyo"}));
    assert!(apply(&rules, &mut state, &tokyo.input()).counted);
    assert_eq!(state.timezone.as_deref(), Some("Asia/Tokyo"));
    // The same zone again changes nothing.
    assert_eq!(
        apply(&rules, &mut state, &tokyo.input()),
        Evaluation::default()
    );
    for traits in [
        json!({"timezone": "Moon/Base"}),
        json!({"timezone": 9}),
        json!({"plan": "pro"}),
    ] {
        let event = Event::identify("2024-01-01T10:00:00Z", traits);
        assert_eq!(
            apply(&rules, &mut state, &event.input()),
            Evaluation::default()
        );
    }
    assert_eq!(state.timezone.as_deref(), Some("Asia/Tokyo"));
    // An identify named like a metric's event, with matching properties, still feeds nothing.
    let mut identify = lesson("2024-01-01T10:00:00Z");
    identify.kind = crate::Kind::Identify;
    assert_eq!(
        apply(&rules, &mut state, &identify.input()),
        Evaluation::default()
    );
    assert!(state.metrics.is_empty());
}

// achievements, points, levels, leaderboards

#[test]
fn a_first_purchase_unlocks_pays_and_scores_in_order() {
    let rules = rules(&example());
    let mut state = UserState::default();
    let event = purchase("2024-01-07T20:00:00Z", 4250);
    let evaluation = apply(&rules, &mut state, &event.input());
    let time = at("2024-01-07T20:00:00Z");
    let expected = Evaluation {
        counted: true,
        awards: vec![
            Award::Achievement {
                key: "first_purchase".into(),
                name: "First purchase".into(),
                unlocked_at: time,
            },
            Award::Points {
                key: "xp".into(),
                amount: 42,
                balance: 42,
                reason: "metric:revenue every 100".into(),
            },
            Award::Points {
                key: "xp".into(),
                amount: 100,
                balance: 142,
                reason: "achievement:first_purchase".into(),
            },
        ],
        ledger: vec![
            LedgerEntry {
                points_key: "xp".into(),
                amount: 42,
                reason: "metric:revenue every 100".into(),
            },
            LedgerEntry {
                points_key: "xp".into(),
                amount: 100,
                reason: "achievement:first_purchase".into(),
            },
        ],
        // Sunday 21:00 in Berlin: the week that began on Monday 1 January, Berlin time.
        scores: vec![ScoreChange {
            board: "weekly_xp".into(),
            period_start: at("2023-12-31T23:00:00Z"),
            delta: 142,
            at: time,
        }],
    };
    assert_eq!(evaluation, expected);
    assert_eq!(state.achievements["first_purchase"].event_id, event.id);
    assert_eq!(state.achievements["first_purchase"].at, time);
    assert_eq!(state.points["xp"].balance, 142);
    assert_eq!(state.points["xp"].level.as_deref(), Some("bronze"));

    // It unlocks once.
    let again = apply(
        &rules,
        &mut state,
        &purchase("2024-01-08T10:00:00Z", 10).input(),
    );
    assert!(
        !again
            .awards
            .iter()
            .any(|award| matches!(award, Award::Achievement { .. }))
    );
    assert_eq!(state.achievements["first_purchase"].event_id, event.id);
}

#[test]
fn a_metric_threshold_is_reached_by_the_event_that_crosses_it() {
    let rules = rules(&example());
    let mut state = UserState::default();
    run(
        &rules,
        &mut state,
        &[purchase("2024-01-01T10:00:00Z", 60_000)],
    );
    assert!(!state.achievements.contains_key("big_spender"));
    let crossing = purchase("2024-01-02T10:00:00Z", 40_000);
    let evaluation = apply(&rules, &mut state, &crossing.input());
    assert!(evaluation.awards.contains(&Award::Achievement {
        key: "big_spender".into(),
        name: "Big spender".into(),
        unlocked_at: at("2024-01-02T10:00:00Z"),
    }));
    assert_eq!(state.achievements["big_spender"].event_id, crossing.id);
}

#[test]
fn every_n_pays_for_whole_steps_and_takes_back_on_the_way_down() {
    let rules = rules(&example());
    let mut state = UserState::default();
    let amounts = [150, 30, 20, -150, 1000];
    let events: Vec<Event> = amounts
        .iter()
        .enumerate()
        .map(|(day, amount)| purchase(&format!("2024-01-0{}T10:00:00Z", day + 1), *amount))
        .collect();
    let evaluations = run(&rules, &mut state, &events);
    let every: Vec<Vec<i64>> = evaluations
        .iter()
        .map(|evaluation| {
            evaluation
                .ledger
                .iter()
                .filter(|entry| entry.reason == "metric:revenue every 100")
                .map(|entry| entry.amount)
                .collect()
        })
        .collect();
    // 150 → 1 step; 180 → still 1; 200 → 2; 50 → 0; 1050 → 10.
    assert_eq!(every, vec![vec![1], vec![], vec![1], vec![-2], vec![10]]);
    assert_eq!(
        state.points["xp"].awarded.get("revenue every 100#0"),
        Some(&10)
    );
    assert_eq!(state.points["xp"].balance, 100 + 10);
}

#[test]
fn a_version_applied_from_now_keeps_every_n_counts_when_triggers_move() {
    let before = rules(&example());
    let mut state = UserState::default();
    run(
        &before,
        &mut state,
        &[purchase("2024-01-01T10:00:00Z", 250)],
    );
    // The next version puts a new every-N trigger first: the revenue trigger moves, and must not
    // take over the new one's count (or the new one its).
    let mut document = example();
    document["points"][0]["triggers"]
        .as_array_mut()
        .unwrap()
        .insert(0, json!({"metric": "purchases", "every": 2, "points": 7}));
    let after = rules(&document);
    let evaluations = run(&after, &mut state, &[purchase("2024-01-02T10:00:00Z", 100)]);
    let paid: Vec<(String, i64)> = evaluations[0]
        .ledger
        .iter()
        .map(|entry| (entry.reason.clone(), entry.amount))
        .collect();
    // Revenue 250 → 350: one more whole 100 (not three); purchases 1 → 2: the first whole 2.
    assert!(
        paid.contains(&("metric:revenue every 100".to_owned(), 1)),
        "{paid:?}"
    );
    assert!(
        paid.contains(&("metric:purchases every 2".to_owned(), 7)),
        "{paid:?}"
    );
}

#[test]
fn every_n_with_a_fractional_step_and_large_points() {
    let rules = rules(&json!({
        "metrics": [{"key": "km", "event": "run", "aggregate": "sum", "property": "km"}],
        "points": [{"key": "p", "name": "P", "triggers": [{"metric": "km", "every": 0.5, "points": -3}]}]
    }));
    let mut state = UserState::default();
    let event = Event::track("run", "2024-01-01T10:00:00Z").properties(json!({"km": 1.75}));
    let evaluation = apply(&rules, &mut state, &event.input());
    assert_eq!(evaluation.ledger[0].amount, -9);
    assert_eq!(evaluation.ledger[0].reason, "metric:km every 0.5");
}

#[test]
fn levels_follow_the_balance_up_and_down() {
    let rules = rules(&example());
    let mut state = UserState::default();
    let time = at("2024-01-01T10:00:00Z");
    let mut levels = Vec::new();
    for amount in [100, 500, 1500, -1800, -400, 100, 5] {
        let evaluation = adjust(&rules, &mut state, "xp", amount, "manual", time);
        assert_eq!(evaluation.ledger.len(), 1);
        levels.push(
            evaluation
                .awards
                .iter()
                .filter_map(|award| match award {
                    Award::Level {
                        level, previous, ..
                    } => Some((level.clone(), previous.clone())),
                    _ => None,
                })
                .collect::<Vec<_>>(),
        );
        assert_eq!(
            state.points["xp"].level,
            match state.points["xp"].balance {
                balance if balance >= 2000 => Some("gold".to_owned()),
                balance if balance >= 500 => Some("silver".to_owned()),
                balance if balance >= 0 => Some("bronze".to_owned()),
                _ => None,
            }
        );
    }
    let some =
        |level: &str, previous: Option<&str>| vec![(level.to_owned(), previous.map(str::to_owned))];
    assert_eq!(
        levels,
        vec![
            vec![],                         // 100: still bronze, which 0 already had
            some("silver", Some("bronze")), // 600
            some("gold", Some("silver")),   // 2100
            some("bronze", Some("gold")),   // 300
            vec![],                         // -100: below every level, nothing to announce
            some("bronze", None),           // 0
            vec![],                         // 5
        ]
    );
}

#[test]
fn an_adjustment_moves_the_balance_and_scores() {
    let rules = rules(&example());
    let mut state = UserState::default();
    let time = at("2024-01-10T10:00:00Z");
    let evaluation = adjust(&rules, &mut state, "xp", 25, "support: sorry", time);
    assert!(!evaluation.counted);
    assert_eq!(
        evaluation.ledger,
        vec![LedgerEntry {
            points_key: "xp".into(),
            amount: 25,
            reason: "support: sorry".into()
        }]
    );
    assert_eq!(
        evaluation.awards,
        vec![Award::Points {
            key: "xp".into(),
            amount: 25,
            balance: 25,
            reason: "support: sorry".into()
        }]
    );
    assert_eq!(
        evaluation.scores,
        vec![ScoreChange {
            board: "weekly_xp".into(),
            period_start: at("2024-01-07T23:00:00Z"),
            delta: 25,
            at: time
        }]
    );
}

#[test]
fn an_adjustment_of_an_unknown_points_key_keeps_a_balance_but_scores_nowhere() {
    let rules = rules(&example());
    let mut state = UserState::default();
    let time = at("2024-01-10T10:00:00Z");
    let evaluation = adjust(&rules, &mut state, "coins", -7, "migration", time);
    assert_eq!(evaluation.ledger.len(), 1);
    assert!(evaluation.scores.is_empty());
    assert_eq!(state.points["coins"].balance, -7);
    assert_eq!(state.points["coins"].level, None);
    assert_eq!(
        adjust(&rules, &mut state, "xp", 0, "nothing", time),
        Evaluation::default()
    );
    assert!(!state.points.contains_key("xp"));
}

#[test]
fn balances_saturate_and_the_ledger_says_what_was_applied() {
    let rules = rules(&example());
    let mut state = UserState::default();
    let time = at("2024-01-10T10:00:00Z");
    adjust(&rules, &mut state, "xp", i64::MAX - 5, "a lot", time);
    let evaluation = adjust(&rules, &mut state, "xp", 10, "more", time);
    assert_eq!(evaluation.ledger[0].amount, 5);
    assert_eq!(evaluation.scores[0].delta, 5);
    assert_eq!(
        adjust(&rules, &mut state, "xp", 10, "more", time),
        Evaluation::default()
    );
    assert_eq!(state.points["xp"].balance, i64::MAX);
}

#[test]
fn scores_go_to_every_board_of_the_system_that_moved_in_document_order() {
    let rules = rules(&json!({
        "timezone": "America/New_York",
        "metrics": [{"key": "m", "event": "e", "aggregate": "count"}],
        "points": [
            {"key": "xp", "name": "XP", "triggers": [{"metric": "m", "points": 5}, {"metric": "m", "points": -2}]},
            {"key": "coins", "name": "Coins", "triggers": [{"metric": "m", "points": 1}, {"metric": "m", "points": -1}]}
        ],
        "leaderboards": [
            {"key": "daily", "points": "xp", "period": "day", "size": 10},
            {"key": "coins_ever", "points": "coins", "period": "all_time", "size": 10},
            {"key": "ever", "points": "xp", "period": "all_time", "size": 10}
        ]
    }));
    let mut state = UserState::default();
    let time = at("2024-01-10T03:00:00Z");
    let evaluation = apply(
        &rules,
        &mut state,
        &Event::track("e", "2024-01-10T03:00:00Z").input(),
    );
    // xp moved by a net 3; coins by 0, so its board gets nothing. The day is New York's.
    assert_eq!(
        evaluation.scores,
        vec![
            ScoreChange {
                board: "daily".into(),
                period_start: at("2024-01-09T05:00:00Z"),
                delta: 3,
                at: time
            },
            ScoreChange {
                board: "ever".into(),
                period_start: chrono::DateTime::UNIX_EPOCH,
                delta: 3,
                at: time
            },
        ]
    );
    assert_eq!(evaluation.ledger.len(), 4);
}

#[test]
fn leaderboard_periods_are_the_rule_sets_not_the_users() {
    let rules = rules(&example());
    let mut state = UserState::default();
    let tokyo = Event::identify("2024-01-01T00:00:00Z", json!({"timezone": "Asia/Tokyo"}));
    apply(&rules, &mut state, &tokyo.input());
    // Sunday 21:00 in Berlin, already Monday in Tokyo: still Berlin's week of 1 January.
    let evaluation = apply(&rules, &mut state, &lesson("2024-01-07T20:00:00Z").input());
    assert_eq!(
        evaluation.scores[0].period_start,
        at("2023-12-31T23:00:00Z")
    );
}

// streaks

#[test]
fn a_streak_grows_once_per_period() {
    let rules = rules(&example());
    let mut state = UserState::default();
    let evaluations = run(
        &rules,
        &mut state,
        &[
            lesson("2024-01-01T10:00:00Z"),
            lesson("2024-01-01T18:00:00Z"),
            lesson("2024-01-02T10:00:00Z"),
            lesson("2024-01-03T10:00:00Z"),
        ],
    );
    let streaks: Vec<_> = evaluations.iter().map(streak_awards).collect();
    use StreakChange::Extended;
    assert_eq!(
        streaks,
        vec![
            vec![(Extended, 1, 1)],
            vec![],
            vec![(Extended, 2, 2)],
            vec![(Extended, 3, 3)]
        ]
    );
    // The second lesson of a day still pays its points.
    assert_eq!(evaluations[1].ledger.len(), 1);
}

#[test]
fn a_streak_counts_days_in_the_users_zone() {
    // 23:30 and 00:30 in Berlin, across the spring change: consecutive Berlin days.
    let rules = rules(&example());
    let mut state = UserState::default();
    run(
        &rules,
        &mut state,
        &[
            lesson("2024-03-30T22:30:00Z"),
            lesson("2024-03-30T23:30:00Z"),
        ],
    );
    assert_eq!(state.streaks["daily_lessons"].length, 2);
    // In UTC the same two instants are one day.
    let utc = rules_with_timezone("UTC");
    let mut state = UserState::default();
    run(
        &utc,
        &mut state,
        &[
            lesson("2024-03-30T22:30:00Z"),
            lesson("2024-03-30T23:30:00Z"),
        ],
    );
    assert_eq!(state.streaks["daily_lessons"].length, 1);
    // The user's own zone wins over the rule set's.
    let mut state = UserState {
        timezone: Some("Asia/Tokyo".into()),
        ..UserState::default()
    };
    run(
        &utc,
        &mut state,
        &[
            lesson("2024-01-01T14:00:00Z"),
            lesson("2024-01-01T16:00:00Z"),
        ],
    );
    assert_eq!(state.streaks["daily_lessons"].length, 2);
}

fn rules_with_timezone(zone: &str) -> Rules {
    let mut document = example();
    document["timezone"] = Value::from(zone);
    rules(&document)
}

#[test]
fn the_autumn_dst_day_is_one_day() {
    let rules = rules(&example());
    let mut state = UserState::default();
    // 00:30 and 23:30 on 27 October 2024 in Berlin, 24 hours apart in UTC: still one day.
    run(
        &rules,
        &mut state,
        &[
            lesson("2024-10-26T22:30:00Z"),
            lesson("2024-10-27T22:30:00Z"),
        ],
    );
    assert_eq!(state.streaks["daily_lessons"].length, 1);
    run(&rules, &mut state, &[lesson("2024-10-27T23:00:00Z")]);
    assert_eq!(state.streaks["daily_lessons"].length, 2);
}

#[test]
fn a_gap_without_freezes_breaks_the_streak_then_restarts_it() {
    let rules = streak_rules("day", 0);
    let mut state = UserState::default();
    let evaluations = run(
        &rules,
        &mut state,
        &lessons_on(&["2024-01-01", "2024-01-02", "2024-01-04"]),
    );
    use StreakChange::{Broken, Extended};
    assert_eq!(
        streak_awards(&evaluations[2]),
        vec![(Broken, 2, 2), (Extended, 1, 2)]
    );
    assert_eq!(
        (
            state.streaks["lessons"].length,
            state.streaks["lessons"].longest
        ),
        (1, 2)
    );
}

#[test]
fn freezes_bridge_gaps_until_the_months_are_spent() {
    let rules = streak_rules("day", 2);
    let mut state = UserState::default();
    let evaluations = run(
        &rules,
        &mut state,
        &lessons_on(&["2024-01-01", "2024-01-03", "2024-01-05", "2024-01-07"]),
    );
    use StreakChange::{Broken, Extended};
    assert_eq!(streak_awards(&evaluations[1]), vec![(Extended, 2, 2)]);
    assert_eq!(streak_awards(&evaluations[2]), vec![(Extended, 3, 3)]);
    assert_eq!(state.streaks["lessons"].freezes_used, 1 + 1);
    // January's two are spent.
    assert_eq!(
        streak_awards(&evaluations[3]),
        vec![(Broken, 3, 3), (Extended, 1, 3)]
    );
}

#[test]
fn a_gap_longer_than_the_freezes_left_breaks_without_spending_them() {
    let rules = streak_rules("day", 2);
    let mut state = UserState::default();
    run(
        &rules,
        &mut state,
        &lessons_on(&["2024-01-01", "2024-01-05"]),
    );
    assert_eq!(state.streaks["lessons"].length, 1);
    assert_eq!(state.streaks["lessons"].freezes_used, 0);
}

#[test]
fn freezes_are_refilled_each_month() {
    let rules = streak_rules("day", 2);
    let mut state = UserState::default();
    run(
        &rules,
        &mut state,
        &lessons_on(&[
            "2024-01-26",
            "2024-01-28",
            "2024-01-30",
            "2024-02-01",
            "2024-02-03",
        ]),
    );
    // Two freezes spent in January, and February's two bridged the 31st and the 2nd.
    assert_eq!(state.streaks["lessons"].length, 5);
    assert_eq!(state.streaks["lessons"].freezes_used, 2);
    assert_eq!(
        state.streaks["lessons"].freezes_month,
        Some(at("2024-02-01T00:00:00Z").date_naive())
    );
}

#[test]
fn unused_freezes_are_not_carried_over() {
    let rules = streak_rules("day", 2);
    let mut state = UserState::default();
    // January's two were never used; 31 January to 2 February is a gap of 3, February has 2.
    let evaluations = run(
        &rules,
        &mut state,
        &lessons_on(&["2024-01-30", "2024-02-03"]),
    );
    assert_eq!(streak_awards(&evaluations[1])[0].0, StreakChange::Broken);
}

#[test]
fn an_event_in_an_earlier_period_does_not_touch_the_streak() {
    let rules = rules(&example());
    let mut state = UserState::default();
    run(&rules, &mut state, &[lesson("2024-01-05T10:00:00Z")]);
    let before = state.streaks.clone();
    let late = apply(&rules, &mut state, &lesson("2024-01-03T10:00:00Z").input());
    assert!(late.counted);
    assert!(streak_awards(&late).is_empty());
    assert_eq!(state.streaks, before);
    assert_eq!(state.metrics["lessons"], 2.0);
}

#[test]
fn weekly_streaks_count_iso_weeks() {
    let rules = streak_rules("week", 0);
    let mut state = UserState::default();
    // Mon 1 and Sun 7 January are one week; Mon 8 the next; the week of the 15th is missed.
    let evaluations = run(
        &rules,
        &mut state,
        &lessons_on(&["2024-01-01", "2024-01-07", "2024-01-08", "2024-01-22"]),
    );
    use StreakChange::{Broken, Extended};
    assert!(streak_awards(&evaluations[1]).is_empty());
    assert_eq!(streak_awards(&evaluations[2]), vec![(Extended, 2, 2)]);
    assert_eq!(
        streak_awards(&evaluations[3]),
        vec![(Broken, 2, 2), (Extended, 1, 2)]
    );
}

#[test]
fn weekly_freezes_bridge_missed_weeks() {
    let rules = streak_rules("week", 1);
    let mut state = UserState::default();
    run(
        &rules,
        &mut state,
        &lessons_on(&["2024-01-01", "2024-01-15"]),
    );
    assert_eq!(state.streaks["lessons"].length, 2);
}

#[test]
fn monthly_streaks_count_calendar_months() {
    let rules = streak_rules("month", 0);
    let mut state = UserState::default();
    let evaluations = run(
        &rules,
        &mut state,
        &lessons_on(&["2024-01-31", "2024-02-01", "2024-02-29", "2024-04-01"]),
    );
    use StreakChange::{Broken, Extended};
    assert_eq!(streak_awards(&evaluations[1]), vec![(Extended, 2, 2)]);
    assert!(streak_awards(&evaluations[2]).is_empty());
    assert_eq!(
        streak_awards(&evaluations[3]),
        vec![(Broken, 2, 2), (Extended, 1, 2)]
    );
}

#[test]
fn a_streak_achievement_unlocks_on_the_seventh_day() {
    let rules = rules(&example());
    let mut state = UserState::default();
    let days: Vec<Event> = (1..=7)
        .map(|day| lesson(&format!("2024-01-0{day}T10:00:00Z")))
        .collect();
    let evaluations = run(&rules, &mut state, &days);
    let unlocked = |evaluation: &Evaluation| {
        evaluation
            .awards
            .iter()
            .any(|award| matches!(award, Award::Achievement { key, .. } if key == "on_fire"))
    };
    assert!(
        evaluations[..6]
            .iter()
            .all(|evaluation| !unlocked(evaluation))
    );
    assert!(unlocked(&evaluations[6]));
    assert_eq!(state.achievements["on_fire"].event_id, days[6].id);
}

#[test]
fn a_changed_time_zone_compares_local_dates() {
    let rules = streak_rules("day", 0);
    let mut state = UserState {
        timezone: Some("Asia/Tokyo".into()),
        ..UserState::default()
    };
    // 10:00 on 5 January in Tokyo.
    run(
        &rules,
        &mut state,
        &[Event::track("lesson_completed", "2024-01-05T01:00:00Z")],
    );
    let los_angeles = Event::identify(
        "2024-01-05T02:00:00Z",
        json!({"timezone": "America/Los_Angeles"}),
    );
    run(&rules, &mut state, &[los_angeles]);
    // 02:00 on 5 January in Los Angeles: the same local date, so already extended.
    let same = run(
        &rules,
        &mut state,
        &[Event::track("lesson_completed", "2024-01-05T10:00:00Z")],
    );
    assert!(streak_awards(&same[0]).is_empty());
    // 6 January in Los Angeles is the next day.
    let next = run(
        &rules,
        &mut state,
        &[Event::track("lesson_completed", "2024-01-06T10:00:00Z")],
    );
    assert_eq!(
        streak_awards(&next[0]),
        vec![(StreakChange::Extended, 2, 2)]
    );
}

// order and shape

#[test]
fn one_event_runs_metrics_streaks_achievements_points_levels_then_scores() {
    let rules = rules(&json!({
        "metrics": [{"key": "m", "event": "e", "aggregate": "count"}],
        "streaks": [{"key": "s", "metric": "m", "period": "day"}],
        "achievements": [{"key": "a", "name": "A", "streak": "s", "threshold": 1},
                         {"key": "b", "name": "B", "metric": "m", "threshold": 1}],
        "points": [{"key": "p", "name": "P",
            "triggers": [{"achievement": "a", "points": 7}, {"metric": "m", "points": 3}],
            "levels": [{"key": "one", "at": 1}]}],
        "leaderboards": [{"key": "l", "points": "p", "period": "day", "size": 3}]
    }));
    let mut state = UserState::default();
    let evaluation = apply(
        &rules,
        &mut state,
        &Event::track("e", "2024-01-01T10:00:00Z").input(),
    );
    let kinds: Vec<String> = evaluation
        .awards
        .iter()
        .map(|award| match award {
            Award::Streak { key, .. } => format!("streak:{key}"),
            Award::Achievement { key, .. } => format!("achievement:{key}"),
            Award::Points { reason, .. } => format!("points:{reason}"),
            Award::Level { level, .. } => format!("level:{level}"),
        })
        .collect();
    assert_eq!(
        kinds,
        [
            "streak:s",
            "achievement:a",
            "achievement:b",
            "points:achievement:a",
            "points:metric:m",
            "level:one"
        ]
    );
    assert_eq!(evaluation.scores.len(), 1);
    assert_eq!(evaluation.scores[0].delta, 10);
}

#[test]
fn awards_serialize_as_tagged_camel_case_objects() {
    let time = at("2024-01-01T10:00:00Z");
    let awards = [
        Award::Achievement {
            key: "a".into(),
            name: "A".into(),
            unlocked_at: time,
        },
        Award::Points {
            key: "xp".into(),
            amount: 5,
            balance: 10,
            reason: "metric:m".into(),
        },
        Award::Level {
            key: "xp".into(),
            level: "gold".into(),
            previous: None,
        },
        Award::Streak {
            key: "s".into(),
            change: StreakChange::Broken,
            length: 4,
            longest: 9,
        },
    ];
    let written: Vec<Value> = awards
        .iter()
        .map(|award| serde_json::to_value(award).unwrap())
        .collect();
    assert_eq!(
        written,
        vec![
            json!({"type": "achievement", "key": "a", "name": "A", "unlockedAt": "2024-01-01T10:00:00Z"}),
            json!({"type": "points", "key": "xp", "amount": 5, "balance": 10, "reason": "metric:m"}),
            json!({"type": "level", "key": "xp", "level": "gold", "previous": null}),
            json!({"type": "streak", "key": "s", "change": "broken", "length": 4, "longest": 9}),
        ]
    );
    for (award, value) in awards.iter().zip(written) {
        assert_eq!(&serde_json::from_value::<Award>(value).unwrap(), award);
    }
    let evaluation = Evaluation {
        counted: true,
        awards: vec![],
        ledger: vec![LedgerEntry {
            points_key: "xp".into(),
            amount: 1,
            reason: "r".into(),
        }],
        scores: vec![ScoreChange {
            board: "b".into(),
            period_start: time,
            delta: 1,
            at: time,
        }],
    };
    let written = serde_json::to_value(&evaluation).unwrap();
    assert_eq!(written["ledger"][0]["pointsKey"], json!("xp"));
    assert_eq!(
        written["scores"][0]["periodStart"],
        json!("2024-01-01T10:00:00Z")
    );
}

#[test]
fn a_full_state_round_trips_through_json_text() {
    let rules = rules(&example());
    let mut state = UserState::default();
    let mut events = vec![
        Event::identify("2023-12-31T00:00:00Z", json!({"timezone": "Europe/Paris"})),
        purchase("2024-01-01T10:00:00.123456789Z", 4242),
        Event::track("purchase", "2024-01-01T11:00:00Z").properties(json!({"amount": 0.1})),
        Event::track("purchase", "2024-01-01T12:00:00Z").properties(json!({"amount": 0.2})),
    ];
    events.extend((1..=9).map(|day| lesson(&format!("2024-01-0{day}T10:00:00Z"))));
    run(&rules, &mut state, &events);
    adjust(
        &rules,
        &mut state,
        "ghost",
        3,
        "x",
        at("2024-01-10T00:00:00Z"),
    );
    let text = serde_json::to_string(&state).unwrap();
    let back: UserState = serde_json::from_str(&text).unwrap();
    assert_eq!(back, state);
    assert_eq!(
        back.metrics["revenue"].to_bits(),
        state.metrics["revenue"].to_bits()
    );
    assert_eq!(back.achievements["first_purchase"].event_id, events[1].id);
    assert_ne!(events[1].id, Uuid::nil());
    let value: Value = serde_json::from_str(&text).unwrap();
    assert!(value["streaks"]["daily_lessons"]["last"].is_string());
    assert!(value["points"]["xp"]["awarded"].is_object());
}
