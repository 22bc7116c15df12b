//! How one streak moves when an event feeds its metric, and whether it is still alive at a given
//! time. Both work on period keys (local dates, see [`crate::periods`]) in the user's current
//! zone. The stored `last` key is a local date and is not converted when the user's zone
//! changes: a key is "the day the user had", and gaps are counted between such days. Moving
//! east can thus skip a local day and moving west can repeat one, as it would on a wall calendar.
//!
//! Freezes: a gap of g missed periods is bridged when the user still has g freezes in the
//! calendar month (user's zone) of the event that bridges it. Each month starts with
//! `perMonth`; what is left at the end of a month is lost.

use chrono::NaiveDate;

use crate::document::Period;
use crate::periods::periods_between;
use crate::state::StreakState;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Extension {
    /// Already extended for this period, or the event is in an earlier one.
    Unchanged,
    Extended,
    /// The gap was too long: the streak of `broken` periods ended and a new one of 1 began.
    Restarted {
        broken: u32,
    },
}

/// Where a streak is in time: the period of the event (or of now) and its calendar month.
#[derive(Debug, Clone, Copy)]
pub(crate) struct When {
    pub period: Period,
    pub key: NaiveDate,
    pub month: NaiveDate,
    pub per_month: u32,
}

pub(crate) fn extend(state: &mut StreakState, when: When) -> Extension {
    let outcome = match state.last {
        None => {
            state.length = 1;
            Extension::Extended
        }
        Some(last) => {
            let distance = periods_between(when.period, last, when.key);
            if distance <= 0 {
                return Extension::Unchanged;
            }
            let missed = distance - 1;
            if missed == 0 {
                state.length = state.length.saturating_add(1);
                Extension::Extended
            } else if i64::from(freezes_left(state, when)) >= missed {
                let missed = u32::try_from(missed).unwrap_or(u32::MAX);
                if state.freezes_month != Some(when.month) {
                    state.freezes_month = Some(when.month);
                    state.freezes_used = 0;
                }
                state.freezes_used = state.freezes_used.saturating_add(missed);
                state.length = state.length.saturating_add(1);
                Extension::Extended
            } else {
                let broken = state.length;
                state.length = 1;
                Extension::Restarted { broken }
            }
        }
    };
    state.last = Some(when.key);
    state.longest = state.longest.max(state.length);
    outcome
}

/// Freezes the user can still spend in `when`'s month.
pub(crate) fn freezes_left(state: &StreakState, when: When) -> u32 {
    if state.freezes_month == Some(when.month) {
        when.per_month.saturating_sub(state.freezes_used)
    } else {
        when.per_month
    }
}

/// Whether an event at `when` would extend the streak rather than break it (or leave it as it
/// is because it was already extended).
pub(crate) fn alive(state: &StreakState, when: When) -> bool {
    let Some(last) = state.last else {
        return false;
    };
    let distance = periods_between(when.period, last, when.key);
    distance <= 1 || i64::from(freezes_left(state, when)) >= distance - 1
}
