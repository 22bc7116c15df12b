//! How far each user got through a funnel, with no I/O: the events of one user, in the order they
//! happened, go in; per step, the users who reached it and the seconds each took from the step
//! before come out.
//!
//! A user enters at a first-step event inside the range and converts to step k when the funnel's
//! events k = 1, 2, … follow in order, each after the one before, all within the window from the
//! entering event. Of all the ways a user's events can be read as a funnel, the one that goes
//! furthest counts (an early visit that went nowhere does not hide a later one that converted).
//! One pass suffices: for each step, the partial run that reached it with the latest start is
//! the one with the most window left, so it dominates every other for what can still follow.

/// A user's partial run through the funnel: when it entered, when it reached its latest step,
/// and the seconds each step took after the one before.
#[derive(Debug, Clone)]
struct Run {
    start: i64,
    last: i64,
    gaps: Vec<i64>,
}

/// Counts users through `steps` (event names, 2 or more; a name may repeat, and then one event
/// fills one step only).
#[derive(Debug)]
pub struct FunnelCounter {
    steps: Vec<String>,
    window_micros: i64,
    /// Entering events must happen in [entry_from, entry_to) (microseconds since the epoch).
    entry_from: i64,
    entry_to: i64,
    reached: Vec<u64>,
    /// Per step after the first, the seconds from the step before, one per user who reached it.
    gaps: Vec<Vec<i64>>,
    runs: Vec<Option<Run>>,
}

/// One step's result.
#[derive(Debug, Clone, PartialEq)]
pub struct StepCount {
    pub users: u64,
    /// Of the users who entered (1.0 for the first step; 0.0 when no one entered).
    pub conversion: f64,
    /// None for the first step and for steps no one reached.
    pub median_seconds_from_previous: Option<f64>,
}

impl FunnelCounter {
    pub fn new(steps: Vec<String>, window_micros: i64, entry_from: i64, entry_to: i64) -> Self {
        let n = steps.len();
        Self {
            steps,
            window_micros,
            entry_from,
            entry_to,
            reached: vec![0; n],
            gaps: vec![Vec::new(); n],
            runs: vec![None; n],
        }
    }

    /// Reads one user's events, `(microseconds since the epoch, event name)` in the order they
    /// happened (ties in the order stored).
    pub fn add_user<'a>(&mut self, events: impl IntoIterator<Item = (i64, &'a str)>) {
        self.runs.iter_mut().for_each(|run| *run = None);
        for (at, event) in events {
            self.advance(at, event);
        }
        let Some(furthest) = self.runs.iter().rposition(Option::is_some) else {
            return;
        };
        let Some(run) = self.runs[furthest].take() else {
            return;
        };
        for step in 0..=furthest {
            self.reached[step] += 1;
        }
        for (step, gap) in run.gaps.into_iter().enumerate() {
            self.gaps[step + 1].push(gap);
        }
    }

    fn advance(&mut self, at: i64, event: &str) {
        // Later steps first, from the runs as they were before this event: one event fills one
        // step of a run, even when the funnel names it twice.
        for step in (1..self.steps.len()).rev() {
            if self.steps[step] != event {
                continue;
            }
            let Some(previous) = &self.runs[step - 1] else {
                continue;
            };
            if at - previous.start > self.window_micros {
                continue;
            }
            let better = self.runs[step]
                .as_ref()
                .is_none_or(|current| previous.start > current.start);
            if better {
                let mut gaps = previous.gaps.clone();
                gaps.push((at - previous.last).div_euclid(1_000_000));
                self.runs[step] = Some(Run {
                    start: previous.start,
                    last: at,
                    gaps,
                });
            }
        }
        if self.steps[0] == event && (self.entry_from..self.entry_to).contains(&at) {
            self.runs[0] = Some(Run {
                start: at,
                last: at,
                gaps: Vec::new(),
            });
        }
    }

    pub fn finish(mut self) -> Vec<(String, StepCount)> {
        let entered = self.reached.first().copied().unwrap_or(0);
        self.steps
            .into_iter()
            .enumerate()
            .map(|(step, event)| {
                let users = self.reached[step];
                let conversion = if entered == 0 {
                    0.0
                } else {
                    users as f64 / entered as f64
                };
                let median = median(&mut self.gaps[step]);
                (
                    event,
                    StepCount {
                        users,
                        conversion,
                        median_seconds_from_previous: median,
                    },
                )
            })
            .collect()
    }
}

fn median(values: &mut [i64]) -> Option<f64> {
    if values.is_empty() {
        return None;
    }
    values.sort_unstable();
    let mid = values.len() / 2;
    Some(if values.len() % 2 == 1 {
        values[mid] as f64
    } else {
        (values[mid - 1] as f64 + values[mid] as f64) / 2.0
    })
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    const HOUR: i64 = 3_600_000_000;

    fn counter(steps: &[&str], window: i64) -> FunnelCounter {
        FunnelCounter::new(
            steps.iter().map(|s| (*s).to_owned()).collect(),
            window,
            0,
            i64::MAX,
        )
    }

    fn users(result: &[(String, StepCount)]) -> Vec<u64> {
        result.iter().map(|(_, count)| count.users).collect()
    }

    /// The furthest step any entering event reaches, trying each one and taking every next step
    /// at its earliest occurrence: the definition, in quadratic time.
    fn furthest_by_brute_force(
        steps: &[&str],
        window: i64,
        entry: std::ops::Range<i64>,
        events: &[(i64, &str)],
    ) -> Option<usize> {
        let mut best = None;
        for (i, &(start, name)) in events.iter().enumerate() {
            if name != steps[0] || !entry.contains(&start) {
                continue;
            }
            let mut reached = 0;
            let mut position = i;
            for (step, wanted) in steps.iter().enumerate().skip(1) {
                let next = events[position + 1..]
                    .iter()
                    .position(|&(at, name)| name == *wanted && at - start <= window);
                match next {
                    Some(offset) => {
                        position += 1 + offset;
                        reached = step;
                    }
                    None => break,
                }
            }
            best = best.max(Some(reached));
        }
        best
    }

    #[test]
    fn a_later_entry_that_converts_counts_over_an_earlier_one_that_did_not() {
        let mut funnel = counter(&["view", "buy"], 24 * HOUR);
        funnel.add_user([(0, "view"), (48 * HOUR, "view"), (50 * HOUR, "buy")]);
        let result = funnel.finish();
        assert_eq!(users(&result), [1, 1]);
        assert_eq!(result[1].1.median_seconds_from_previous, Some(7200.0));
        assert_eq!(result[1].1.conversion, 1.0);
    }

    #[test]
    fn steps_out_of_order_or_past_the_window_do_not_convert() {
        let mut funnel = counter(&["signup", "lesson", "purchase"], 24 * HOUR);
        funnel.add_user([(0, "signup"), (HOUR, "purchase"), (2 * HOUR, "lesson")]);
        funnel.add_user([(0, "signup"), (HOUR, "lesson"), (25 * HOUR, "purchase")]);
        funnel.add_user([(0, "lesson"), (HOUR, "purchase")]);
        assert_eq!(users(&funnel.finish()), [2, 2, 0]);
    }

    #[test]
    fn one_event_fills_one_step_when_the_funnel_names_it_twice() {
        let mut funnel = counter(&["view", "view"], HOUR);
        funnel.add_user([(0, "view")]);
        funnel.add_user([(0, "view"), (10, "view")]);
        let result = funnel.finish();
        assert_eq!(users(&result), [2, 1]);
        assert_eq!(result[1].1.conversion, 0.5);
    }

    #[test]
    fn only_entries_inside_the_range_count() {
        let mut funnel = FunnelCounter::new(vec!["a".into(), "b".into()], HOUR, 100, 200);
        funnel.add_user([(50, "a"), (150, "b")]);
        funnel.add_user([(250, "a"), (260, "b")]);
        funnel.add_user([(150, "a"), (260, "b")]);
        assert_eq!(users(&funnel.finish()), [1, 1]);
    }

    #[test]
    fn the_median_of_an_even_count_is_the_mean_of_the_middle_two() {
        let mut funnel = counter(&["a", "b"], 10 * HOUR);
        funnel.add_user([(0, "a"), (10_000_000, "b")]);
        funnel.add_user([(0, "a"), (20_000_000, "b")]);
        let result = funnel.finish();
        assert_eq!(result[1].1.median_seconds_from_previous, Some(15.0));
        assert_eq!(result[0].1.median_seconds_from_previous, None);
    }

    fn user_events() -> impl Strategy<Value = Vec<(i64, &'static str)>> {
        prop::collection::vec(
            (0i64..100, prop::sample::select(vec!["a", "b", "c", "d"])),
            0..14,
        )
        .prop_map(|mut events| {
            events.sort_by_key(|&(at, _)| at);
            events
        })
    }

    proptest! {
        #[test]
        fn each_user_reaches_the_furthest_step_any_reading_of_their_events_allows(
            steps in prop::collection::vec(prop::sample::select(vec!["a", "b", "c", "d"]), 2..5),
            window in 1i64..60,
            entry_from in 0i64..50,
            entry_len in 1i64..60,
            people in prop::collection::vec(user_events(), 1..8),
        ) {
            let entry = entry_from..entry_from + entry_len;
            let mut funnel = FunnelCounter::new(
                steps.iter().map(|s| (*s).to_owned()).collect(), window, entry.start, entry.end);
            let mut expected = vec![0u64; steps.len()];
            for events in &people {
                funnel.add_user(events.iter().copied());
                if let Some(furthest) = furthest_by_brute_force(&steps, window, entry.clone(), events) {
                    for count in &mut expected[..=furthest] {
                        *count += 1;
                    }
                }
            }
            let result = funnel.finish();
            prop_assert_eq!(users(&result), expected);
            for pair in result.windows(2) {
                prop_assert!(pair[1].1.users <= pair[0].1.users);
                if let Some(median) = pair[1].1.median_seconds_from_previous {
                    prop_assert!(median >= 0.0);
                }
            }
        }
    }
}
