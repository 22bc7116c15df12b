//! The engine's own metrics, beside the consumer loop's (`gamify_worker_*`, which the engine's
//! loop reports as well: consumed, lag, batch sizes and times, retries).

pub const EVALUATION_SECONDS: &str = "gamify_engine_evaluation_seconds";
pub const EVALUATED: &str = "gamify_engine_events_evaluated_total";
pub const NOT_COUNTED: &str = "gamify_engine_events_not_counted_total";
pub const AWARDS: &str = "gamify_engine_awards_total";
pub const REPLAYED: &str = "gamify_engine_replayed_events_total";
pub const WEBHOOK_ATTEMPTS: &str = "gamify_engine_webhook_attempts_total";
pub const WEBHOOKS_DELIVERED: &str = "gamify_engine_webhooks_delivered_total";

pub fn describe() {
    metrics::describe_histogram!(
        EVALUATION_SECONDS,
        metrics::Unit::Seconds,
        "Time to evaluate and commit one project's share of a batch"
    );
    metrics::describe_counter!(EVALUATED, "Events evaluated against the active rules");
    metrics::describe_counter!(
        NOT_COUNTED,
        "Events not counted (refused by the checks, duplicate messageId, no userId)"
    );
    metrics::describe_counter!(
        AWARDS,
        "Awards made (achievements, points, levels, streaks)"
    );
    metrics::describe_counter!(REPLAYED, "Events folded by rule-version replays");
    metrics::describe_counter!(WEBHOOK_ATTEMPTS, "Webhook delivery attempts");
    metrics::describe_counter!(WEBHOOKS_DELIVERED, "Webhook deliveries answered with 2xx");
}
