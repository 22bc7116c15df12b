use serde_json::json;

use super::{Event, at, example, lesson, purchase, rules};
use crate::{PointsProgress, StreakProgress, UserState, adjust, apply, progress};

fn lessons_rules(per_month: u32) -> crate::Rules {
    rules(&json!({
        "metrics": [{"key": "lessons", "event": "lesson_completed", "aggregate": "count"}],
        "streaks": [{"key": "daily", "metric": "lessons", "period": "day",
                     "freezes": {"perMonth": per_month}}]
    }))
}

fn streak_at(rules: &crate::Rules, state: &UserState, now: &str) -> StreakProgress {
    progress(rules, state, at(now)).streaks["daily"].clone()
}

#[test]
fn a_new_user_sees_every_metric_streak_and_system_at_zero() {
    let rules = rules(&example());
    let view = progress(&rules, &UserState::default(), at("2024-01-01T00:00:00Z"));
    let written = serde_json::to_value(&view).unwrap();
    assert_eq!(
        written,
        json!({
            "metrics": {"purchases": 0, "revenue": 0, "lessons": 0},
            "achievements": [],
            "streaks": {"daily_lessons": {"length": 0, "longest": 0, "periodStart": null,
                                          "freezesLeft": 2, "extendedToday": false}},
            "points": {"xp": {"balance": 0, "level": "bronze"}}
        })
    );
}

#[test]
fn metrics_achievements_and_points_are_shown_as_stored() {
    let rules = rules(&example());
    let mut state = UserState::default();
    let first = purchase("2024-01-01T10:00:00Z", 4200);
    for event in [
        first.clone(),
        Event::track("purchase", "2024-01-01T11:00:00Z").properties(json!({"amount": 0.5})),
    ] {
        apply(&rules, &mut state, &event.input());
    }
    adjust(
        &rules,
        &mut state,
        "xp",
        1000,
        "bonus",
        at("2024-01-02T00:00:00Z"),
    );
    adjust(
        &rules,
        &mut state,
        "legacy",
        5,
        "import",
        at("2024-01-02T00:00:00Z"),
    );
    let view = progress(&rules, &state, at("2024-01-03T00:00:00Z"));
    let written = serde_json::to_value(&view).unwrap();
    assert_eq!(
        written["metrics"],
        json!({"purchases": 2, "revenue": 4200.5, "lessons": 0})
    );
    assert_eq!(
        written["achievements"],
        json!([{"key": "first_purchase", "name": "First purchase",
                "unlockedAt": "2024-01-01T10:00:00Z", "eventId": first.id}])
    );
    assert_eq!(
        view.points["xp"],
        PointsProgress {
            balance: 100 + 42 + 1000,
            level: Some("silver".into())
        }
    );
    assert_eq!(
        view.points["legacy"],
        PointsProgress {
            balance: 5,
            level: None
        }
    );
}

#[test]
fn a_streak_is_alive_while_freezes_can_cover_the_gap_to_now() {
    let rules = lessons_rules(1);
    let mut state = UserState::default();
    for day in ["2024-01-01", "2024-01-02"] {
        let event = Event::track("lesson_completed", &format!("{day}T10:00:00Z"));
        apply(&rules, &mut state, &event.input());
    }
    let today = streak_at(&rules, &state, "2024-01-02T23:59:59Z");
    assert_eq!(
        today,
        StreakProgress {
            length: 2,
            longest: 2,
            period_start: Some(at("2024-01-02T00:00:00Z")),
            freezes_left: 1,
            extended_today: true,
        }
    );
    // The next day: alive, to be extended.
    let tomorrow = streak_at(&rules, &state, "2024-01-03T08:00:00Z");
    assert_eq!((tomorrow.length, tomorrow.extended_today), (2, false));
    assert_eq!(tomorrow.period_start, Some(at("2024-01-03T00:00:00Z")));
    // The 3rd missed: one freeze covers it.
    assert_eq!(streak_at(&rules, &state, "2024-01-04T08:00:00Z").length, 2);
    // The 3rd and 4th missed: over.
    let over = streak_at(&rules, &state, "2024-01-05T08:00:00Z");
    assert_eq!(
        over,
        StreakProgress {
            length: 0,
            longest: 2,
            period_start: None,
            freezes_left: 1,
            extended_today: false,
        }
    );
}

#[test]
fn freezes_left_follow_the_month_of_now() {
    let rules = lessons_rules(2);
    let mut state = UserState::default();
    for day in ["2024-01-28", "2024-01-30"] {
        let event = Event::track("lesson_completed", &format!("{day}T10:00:00Z"));
        apply(&rules, &mut state, &event.input());
    }
    assert_eq!(
        streak_at(&rules, &state, "2024-01-31T08:00:00Z").freezes_left,
        1
    );
    // February refills: the 31st and 1st missed, two freezes, still alive on the 2nd.
    let february = streak_at(&rules, &state, "2024-02-02T08:00:00Z");
    assert_eq!((february.freezes_left, february.length), (2, 2));
    assert_eq!(streak_at(&rules, &state, "2024-02-03T08:00:00Z").length, 0);
}

#[test]
fn the_current_period_is_the_users() {
    let rules = rules(&example());
    let mut state = UserState::default();
    apply(&rules, &mut state, &lesson("2024-03-31T10:00:00Z").input());
    // Berlin's 31 March began at 23:00 UTC the day before.
    let view = progress(&rules, &state, at("2024-03-31T20:00:00Z"));
    let streak = &view.streaks["daily_lessons"];
    assert_eq!(streak.period_start, Some(at("2024-03-30T23:00:00Z")));
    assert!(streak.extended_today);
    // At 22:30 UTC it is already 1 April in Berlin (CEST).
    let view = progress(&rules, &state, at("2024-03-31T22:30:00Z"));
    let streak = &view.streaks["daily_lessons"];
    assert_eq!(streak.period_start, Some(at("2024-03-31T22:00:00Z")));
    assert!(!streak.extended_today);
    // A user in New York sees New York's day.
    state.timezone = Some("America/New_York".into());
    let view = progress(&rules, &state, at("2024-03-31T20:00:00Z"));
    assert_eq!(
        view.streaks["daily_lessons"].period_start,
        Some(at("2024-03-31T04:00:00Z"))
    );
}
