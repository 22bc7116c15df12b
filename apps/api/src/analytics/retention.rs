//! `GET /v1/analytics/retention`: of the users who first did `start_event` in a day or week of the
//! range (their cohort), how many did `return_event` in each day or week after it. Computed from
//! the raw events (a user's own first occurrence and returns are not in any hourly rollup), in
//! one pass grouped by person, under the analytics statement timeout.

use axum::extract::State;
use chrono::{Duration, NaiveDateTime};
use futures::TryStreamExt;
use gamify_common::{
    events::validate_event_name,
    ingest::{FieldError, parse_time},
};
use gamify_db::sea_orm::sqlx;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::{router::OpenApiRouter, routes};

use crate::{
    analytics::{
        bounded::{self, COUNTED, WHO},
        buckets::{Interval, instant, next, parse_enum, parse_timezone, truncate},
        reader::ProjectReader,
    },
    http::{
        error::{Error, Result},
        extract::Query,
    },
    state::AppState,
};

/// The most cohorts (days or weeks) one request may cover.
const MAX_DAYS: usize = 92;
const _: () = assert!(
    MAX_DAYS <= 128 && MAX_WEEKS <= 128,
    "the return bitmap holds 128 intervals"
);
const MAX_WEEKS: usize = 53;

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct RetentionQuery {
    /// The event that puts a user in a cohort: the day or week of their first one in the range
    /// (`startEvent` is accepted too).
    #[serde(alias = "startEvent")]
    pub(crate) start_event: Option<String>,
    /// The event that counts as coming back (`returnEvent` is accepted too); may be the same.
    #[serde(alias = "returnEvent")]
    pub(crate) return_event: Option<String>,
    /// `day` (the default) or `week` (from Monday).
    #[param(value_type = Option<RetentionInterval>)]
    pub(crate) interval: Option<String>,
    /// Start of the first cohort (RFC 3339, cut down to its day or week); default: 30 days or
    /// 12 weeks before `to`.
    #[param(format = DateTime)]
    pub(crate) from: Option<String>,
    /// End, exclusive (RFC 3339); default: now. Returns are counted up to it.
    #[param(format = DateTime)]
    pub(crate) to: Option<String>,
    /// IANA time zone days and weeks are cut in (default `UTC`).
    pub(crate) timezone: Option<String>,
    /// The project, with a session or a management token (a secret key names its own).
    #[serde(rename = "projectId")]
    #[param(value_type = Option<uuid::Uuid>)]
    #[allow(dead_code, reason = "documents the parameter; ProjectReader reads it")]
    pub(crate) project_id: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum RetentionInterval {
    Day,
    Week,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Cohort {
    /// The cohort's day or week, RFC 3339 with the zone's offset.
    pub(crate) start: String,
    /// Users whose first `start_event` in the range fell in it.
    pub(crate) users: u64,
    /// `values[k]`: the cohort's users who did `return_event` in the k-th day or week after it
    /// (`values[0]` = `users`), up to the end of the range.
    pub(crate) values: Vec<u64>,
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Retention {
    pub(crate) interval: RetentionInterval,
    pub(crate) timezone: String,
    pub(crate) start_event: String,
    pub(crate) return_event: String,
    pub(crate) cohorts: Vec<Cohort>,
}

fn required_event(field: &str, raw: Option<String>, errors: &mut Vec<FieldError>) -> String {
    match raw {
        None => {
            errors.push(FieldError::new(field, "is required"));
            String::new()
        }
        Some(name) => {
            if let Err(problem) = validate_event_name(&name) {
                errors.push(FieldError::new(field, problem));
            }
            name
        }
    }
}

/// Cohorts of users by their first `start_event`, and how many came back in each later interval.
#[utoipa::path(
    get,
    path = "/v1/analytics/retention",
    tag = "analytics",
    params(RetentionQuery),
    responses(
        (status = 200, description = "One cohort per day or week of the range, empty ones included", body = Retention),
        crate::http::schemas::AnalyticsErrors
    ),
    security(("apiKey" = []), ("apiKeyBearer" = []), ("adminToken" = []), ("session" = ["viewer"]), ("orgToken" = ["read"]))
)]
pub(crate) async fn retention(
    State(state): State<AppState>,
    reader: ProjectReader,
    Query(query): Query<RetentionQuery>,
) -> Result<axum::Json<Retention>> {
    let mut errors = Vec::new();
    let start_event = required_event("start_event", query.start_event, &mut errors);
    let return_event = required_event("return_event", query.return_event, &mut errors);
    let interval = parse_enum(
        "interval",
        query.interval.as_deref(),
        RetentionInterval::Day,
        "day, week",
        &mut errors,
    );
    let to = parse_time("to", query.to.as_deref(), &mut errors);
    let from = parse_time("from", query.from.as_deref(), &mut errors);
    let tz = parse_timezone(query.timezone.as_deref(), &mut errors);
    if let Some(error) = errors.into_iter().next() {
        return Err(Error::invalid_field(&error.field, error.message));
    }
    let (buckets, max, default_range) = match interval {
        RetentionInterval::Day => (Interval::Day, MAX_DAYS, Duration::days(30)),
        RetentionInterval::Week => (Interval::Week, MAX_WEEKS, Duration::weeks(12)),
    };
    let to = to.unwrap_or_else(|| state.now());
    let from = from.unwrap_or(to - default_range);
    if from >= to {
        return Err(Error::invalid_field("from", "must be before to"));
    }
    let too_long = || {
        Error::invalid_field(
            "from",
            format_args!(
                "the range holds more than {max} {}s; narrow it",
                buckets.as_sql()
            ),
        )
    };
    if to - from > Duration::days(7 * max as i64 + 7) {
        return Err(too_long());
    }
    let mut starts: Vec<NaiveDateTime> = Vec::new();
    let mut local = truncate(buckets, from.with_timezone(&tz).naive_local());
    let end_local = to.with_timezone(&tz).naive_local();
    while local < end_local {
        if starts.len() >= max {
            return Err(too_long());
        }
        starts.push(local);
        local = next(buckets, local);
    }
    // One pass over both events, grouped by person: the index of their first start's interval
    // (counted from the first of the range), and a bitmap of the intervals they came back in
    // (two 64-bit words hold the at most 92 days or 53 weeks). The cohorts are added up here.
    // Only people with a start are grouped (a hash semi-join first): on the benchmark's 30 days
    // of page views, three in four people who came back never started, and grouping them cost
    // 2 of 7 seconds.
    let unit = buckets.as_sql();
    let days_per_interval = match interval {
        RetentionInterval::Day => 1,
        RetentionInterval::Week => 7,
    };
    let sql = format!(
        "SELECT min(idx) FILTER (WHERE event_type = $5) AS cohort,
                bit_or(1::int8 << (idx % 64)) FILTER (WHERE event_type = $6 AND idx < 64) AS low,
                bit_or(1::int8 << (idx % 64)) FILTER (WHERE event_type = $6 AND idx >= 64) AS high
         FROM (SELECT {WHO} AS who, event_type,
                      (date_trunc('{unit}', occurred_at AT TIME ZONE $4)::date - $7::date)::int4
                        / {days_per_interval} AS idx
               FROM events
               WHERE {COUNTED} AND event_type IN ($5, $6) AND occurred_at >= $2 AND occurred_at < $3
                 AND (user_id IS NOT NULL OR anonymous_id IS NOT NULL)) AS e
         WHERE who IN (SELECT {WHO} FROM events
                       WHERE {COUNTED} AND event_type = $5 AND occurred_at >= $2 AND occurred_at < $3
                         AND (user_id IS NOT NULL OR anonymous_id IS NOT NULL))
         GROUP BY who
         HAVING min(idx) FILTER (WHERE event_type = $5) IS NOT NULL"
    );
    let first = starts.first().map(|start| start.date()).unwrap_or_default();
    let mut cohorts: Vec<Cohort> = starts
        .iter()
        .enumerate()
        .map(|(i, start)| Cohort {
            start: instant(tz, *start).to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            users: 0,
            values: vec![0; starts.len() - i],
        })
        .collect();
    let mut txn = bounded::begin(&state, reader.project_id).await?;
    {
        let mut rows = sqlx::query_as::<_, (i32, Option<i64>, Option<i64>)>(&sql)
            .bind(reader.project_id)
            .bind(from)
            .bind(to)
            .bind(tz.name())
            .bind(&start_event)
            .bind(&return_event)
            .bind(first)
            .fetch(&mut *txn);
        while let Some((cohort, low, high)) = rows
            .try_next()
            .await
            .map_err(|err| bounded::query_error(&state, err))?
        {
            let Some(entry) = usize::try_from(cohort)
                .ok()
                .and_then(|c| cohorts.get_mut(c))
            else {
                continue;
            };
            entry.users += 1;
            entry.values[0] += 1;
            let returned =
                (u128::from(high.unwrap_or(0) as u64) << 64) | u128::from(low.unwrap_or(0) as u64);
            let later = returned.checked_shr(cohort as u32 + 1).unwrap_or(0);
            for k in 1..entry.values.len() {
                if later >> (k - 1) & 1 == 1 {
                    entry.values[k] += 1;
                }
            }
        }
    }
    txn.commit()
        .await
        .map_err(|err| bounded::query_error(&state, err))?;
    Ok(axum::Json(Retention {
        interval,
        timezone: tz.name().to_owned(),
        start_event,
        return_event,
        cohorts,
    }))
}

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(retention))
}
