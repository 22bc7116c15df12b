//! The rule-evaluation library of the gamification engine: a project's rule document (metrics,
//! streaks, achievements, points systems, leaderboards), its validation, and the pure functions
//! that fold one user's events into a [`UserState`] and read progress out of it.
//!
//! Nothing here does I/O or reads a clock: the engine, replay and preview all pass time in, so
//! the same inputs always give the same outputs, whichever process runs them.

mod condition;
mod document;
mod error;
mod evaluate;
mod input;
mod parse;
mod periods;
mod progress;
mod rules;
mod state;
mod streak;
mod validate;

#[cfg(test)]
mod tests;

pub use condition::{Condition, ConditionFacts, compile};
pub use document::{
    Achievement, Aggregate, Freezes, Leaderboard, Level, Metric, MetricSource, Period,
    PointsSystem, RuleSet, Streak, Trigger,
};
pub use error::{RuleError, codes};
pub use evaluate::{Award, Evaluation, LedgerEntry, ScoreChange, StreakChange, adjust, apply};
pub use input::{Input, Kind, Source};
pub use periods::{period_bounds, previous_period_start};
pub use progress::{AchievementProgress, PointsProgress, Progress, StreakProgress, progress};
pub use rules::Rules;
pub use state::{PointsState, StreakState, Unlocked, UserState};
