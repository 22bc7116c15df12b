//! `GET /v1/analytics/trends`: events or distinct users per hour, day, week or month, in a time
//! zone. Without a breakdown, in a zone whose offsets are whole hours, the answer comes from the
//! worker's hourly rollups: a query sums counts and unions HyperLogLog sketches of whole hours,
//! whatever the number of events, instead of scanning them. A breakdown by a property, or a zone
//! with half-hour offsets, needs what the rollups do not keep, and is counted from the raw events
//! under the analytics statement timeout (422 `query_too_expensive` beyond it).

use std::collections::HashMap;

use axum::extract::State;
use chrono::{DateTime, Duration, NaiveDateTime, Offset, TimeZone, Utc};
use chrono_tz::Tz;
use gamify_common::ingest::{FieldError, parse_time};
use gamify_db::sea_orm::sqlx;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::{router::OpenApiRouter, routes};

use crate::{
    analytics::{
        bounded::{self, COUNTED, WHO},
        buckets::{Interval, hour_floor, instant, next, parse_enum, parse_timezone, truncate},
        reader::ProjectReader,
    },
    http::{
        error::{Error, Result},
        extract::Query,
    },
    state::AppState,
};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Measure {
    /// Events.
    Count,
    /// Distinct users (the `userId`, else the `anonymousId`): estimated within about 1–2 % from
    /// the rollups, exact when counted from the raw events.
    Users,
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(rename_all = "camelCase")]
#[into_params(parameter_in = Query)]
pub struct TrendQuery {
    /// Only events of this name; absent: every event.
    pub(crate) event: Option<String>,
    /// `hour`, `day` (the default), `week` (from Monday) or `month`.
    #[param(value_type = Option<Interval>)]
    pub(crate) interval: Option<String>,
    /// Start (RFC 3339), rounded down to the hour; default: 48 hours, 30 days, 12 weeks or 12
    /// months before `to`.
    #[param(format = DateTime)]
    pub(crate) from: Option<String>,
    /// End, exclusive (RFC 3339), rounded down to the hour; default: now.
    #[param(format = DateTime)]
    pub(crate) to: Option<String>,
    /// IANA time zone the buckets are cut in (default `UTC`). Zones with offsets that are not
    /// whole hours (Asia/Kolkata) are counted from the raw events.
    pub(crate) timezone: Option<String>,
    /// `count` (the default) or `users`.
    #[param(value_type = Option<Measure>)]
    pub(crate) measure: Option<String>,
    /// A property of the events (a top-level key of `properties`) to split each bucket by: one
    /// series per value, the 25 values with the largest totals, `null` for events without it.
    /// Counted from the raw events.
    pub(crate) breakdown: Option<String>,
    /// The project, with a session or a management token (a secret key names its own).
    #[param(value_type = Option<uuid::Uuid>)]
    #[allow(dead_code, reason = "documents the parameter; ProjectReader reads it")]
    pub(crate) project_id: Option<String>,
}

/// Values of a breakdown kept in an answer: the ones with the largest totals.
const BREAKDOWN_VALUES: usize = 25;
const MAX_PROPERTY_CHARS: usize = 200;

#[derive(Debug, Serialize, ToSchema)]
pub struct Bucket {
    /// The bucket's start, RFC 3339 with the zone's offset at that instant.
    pub(crate) start: String,
    pub(crate) value: u64,
    /// With a breakdown: the property's value this series counts (as text; `null` for events
    /// without the property). Absent without a breakdown.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>, nullable)]
    pub(crate) breakdown: Option<Option<String>>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct BreakdownTotal {
    #[schema(nullable)]
    pub(crate) value: Option<String>,
    /// The series' value over the whole range.
    pub(crate) total: u64,
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Trend {
    pub(crate) interval: Interval,
    pub(crate) measure: Measure,
    pub(crate) timezone: String,
    /// The value over the whole range: every event, or every distinct user (not the sum of the
    /// buckets' users: one user active on two days is one).
    pub(crate) total: u64,
    /// `rollups` or `events`: what the answer was counted from.
    pub(crate) source: &'static str,
    /// With a breakdown: the property, and the values kept, largest total first.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) breakdown: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) breakdown_values: Option<Vec<BreakdownTotal>>,
    pub(crate) data: Vec<Bucket>,
}

/// Counted values: per (bucket start, breakdown value), per breakdown value over the range, and
/// over the range as a whole (distinct people of the range are not a sum of anything).
#[derive(Default)]
struct Counts {
    pub(crate) buckets: HashMap<(NaiveDateTime, Option<String>), u64>,
    pub(crate) totals: HashMap<Option<String>, u64>,
    pub(crate) whole: u64,
}

/// A row of a grouped trend query: its bucket and breakdown value, the value, and which grouping
/// set it belongs to (Postgres's `GROUPING(bucket, breakdown)`: 0 a bucket of a value, 2 a value
/// over the range, 3 the whole range).
type TrendRow = (Option<NaiveDateTime>, Option<String>, Option<i64>, i32);

impl Counts {
    fn read(rows: Vec<TrendRow>) -> Self {
        let mut counts = Counts::default();
        for (bucket, breakdown, value, level) in rows {
            let value = value.unwrap_or(0).max(0) as u64;
            match (level, bucket) {
                (0, Some(bucket)) => {
                    *counts.buckets.entry((bucket, breakdown)).or_default() += value
                }
                (2, _) => *counts.totals.entry(breakdown).or_default() += value,
                (3, _) => counts.whole += value,
                _ => {}
            }
        }
        counts
    }
}

/// Whether every offset `tz` uses in [from, to) is a whole number of hours, so that each of the
/// rollups' UTC hours falls in exactly one local bucket.
fn whole_hours(tz: Tz, from: DateTime<Utc>, to: DateTime<Utc>) -> bool {
    let mut at = from;
    while at < to {
        if tz
            .offset_from_utc_datetime(&at.naive_utc())
            .fix()
            .local_minus_utc()
            % 3600
            != 0
        {
            return false;
        }
        at += Duration::hours(1);
    }
    true
}

/// Events, or distinct users, per hour, day, week or month in a time zone.
#[utoipa::path(
    get,
    path = "/v1/analytics/trends",
    tag = "analytics",
    params(TrendQuery),
    responses(
        (status = 200, description = "One value per bucket, empty buckets included", body = Trend),
        crate::http::schemas::AnalyticsErrors
    ),
    security(("apiKey" = []), ("apiKeyBearer" = []), ("adminToken" = []), ("session" = ["viewer"]), ("orgToken" = ["read"]))
)]
pub(crate) async fn trends(
    State(state): State<AppState>,
    reader: ProjectReader,
    Query(query): Query<TrendQuery>,
) -> Result<axum::Json<Trend>> {
    let mut errors = Vec::new();
    let interval = parse_enum(
        "interval",
        query.interval.as_deref(),
        Interval::Day,
        "hour, day, week, month",
        &mut errors,
    );
    let measure = parse_enum(
        "measure",
        query.measure.as_deref(),
        Measure::Count,
        "count, users",
        &mut errors,
    );
    let to = parse_time("to", query.to.as_deref(), &mut errors).map(hour_floor);
    let from = parse_time("from", query.from.as_deref(), &mut errors).map(hour_floor);
    let tz = parse_timezone(query.timezone.as_deref(), &mut errors);
    if query.event.as_deref().is_some_and(|e| e.contains('\0')) {
        errors.push(FieldError::new(
            "event",
            "must not contain the NUL character (\\u0000)",
        ));
    }
    let breakdown = query.breakdown.clone();
    if let Some(property) = &breakdown {
        if property.is_empty()
            || property.chars().count() > MAX_PROPERTY_CHARS
            || property.contains('\0')
        {
            errors.push(FieldError::new(
                "breakdown",
                "must be a property name of 1 to 200 characters without NUL",
            ));
        }
    }
    if let Some(error) = errors.into_iter().next() {
        return Err(Error::invalid_field(&error.field, error.message));
    }
    let (max_buckets, default_range) = interval.limits();
    let to = to.unwrap_or_else(|| hour_floor(state.now()) + Duration::hours(1));
    let from = from.unwrap_or(to - default_range);
    if from >= to {
        return Err(Error::invalid_field("from", "must be before to"));
    }
    // A first bound before any per-hour work: the longest a bucket can be, times the cap.
    let longest = match interval {
        Interval::Hour => Duration::hours(1),
        Interval::Day => Duration::hours(25),
        Interval::Week => Duration::hours(7 * 24 + 1),
        Interval::Month => Duration::hours(31 * 24 + 1),
    };
    if to - from > longest * max_buckets as i32 {
        return Err(Error::invalid_field(
            "from",
            format_args!(
                "the range holds more than {max_buckets} {}s; narrow it or use a longer interval",
                interval.as_sql()
            ),
        ));
    }
    let from_rollups = breakdown.is_none() && whole_hours(tz, from, to);
    // The local buckets covering [from, to).
    let mut starts = Vec::new();
    let mut local = truncate(interval, from.with_timezone(&tz).naive_local());
    let end_local = to.with_timezone(&tz).naive_local();
    while local < end_local {
        if starts.len() as u32 >= max_buckets {
            return Err(Error::invalid_field(
                "from",
                format_args!(
                    "the range holds more than {max_buckets} {}s; narrow it or use a longer interval",
                    interval.as_sql()
                ),
            ));
        }
        starts.push(local);
        local = next(interval, local);
    }

    let mut txn = bounded::begin(&state, reader.project_id).await?;
    let rows = if from_rollups {
        let value_sql = match measure {
            Measure::Count => "sum(events)::bigint",
            Measure::Users => "round(hll_cardinality(hll_union_agg(users)))::bigint",
        };
        // `hour` buckets are UTC hours (a local hour that repeats in autumn is two of them); the
        // others are cut in local time, as `starts` above is.
        let bucket_sql = match interval {
            // (Truncating a UTC hour to the hour in a whole-hour zone changes nothing.)
            Interval::Hour => "(date_trunc('hour', hour, $4) AT TIME ZONE 'UTC')".to_owned(),
            other => format!("date_trunc('{}', hour AT TIME ZONE $4)", other.as_sql()),
        };
        let sql = format!(
            "SELECT bucket, NULL::text AS breakdown, {value_sql} AS value,
                    (GROUPING(bucket) * 3)::int4 AS level
             FROM (SELECT {bucket_sql} AS bucket, events, users FROM event_rollups
                   WHERE project_id = $1 AND hour >= $2 AND hour < $3
                     AND ($5::text IS NULL OR event_type = $5)) AS r
             GROUP BY GROUPING SETS ((bucket), ())"
        );
        sqlx::query_as::<_, TrendRow>(&sql)
            .bind(reader.project_id)
            .bind(from)
            .bind(to)
            .bind(tz.name())
            .bind(query.event.as_deref())
            .fetch_all(&mut *txn)
            .await
    } else {
        let value_sql = match measure {
            Measure::Count => "count(*)",
            Measure::Users => "count(DISTINCT who)",
        };
        let breakdown_sql = if breakdown.is_some() {
            "payload ->> $6"
        } else {
            "NULL::text"
        };
        let sql = format!(
            "SELECT bucket, breakdown, {value_sql} AS value,
                    GROUPING(bucket, breakdown)::int4 AS level
             FROM (SELECT date_trunc('{}', occurred_at AT TIME ZONE $4) AS bucket,
                          {breakdown_sql} AS breakdown, {WHO} AS who
                   FROM events
                   WHERE {COUNTED} AND occurred_at >= $2 AND occurred_at < $3
                     AND ($5::text IS NULL OR event_type = $5)) AS e
             GROUP BY GROUPING SETS ((bucket, breakdown), (breakdown), ())",
            interval.as_sql()
        );
        sqlx::query_as::<_, TrendRow>(&sql)
            .bind(reader.project_id)
            .bind(from)
            .bind(to)
            .bind(tz.name())
            .bind(query.event.as_deref())
            .bind(breakdown.as_deref())
            .fetch_all(&mut *txn)
            .await
    }
    .map_err(|err| bounded::query_error(&state, err))?;
    txn.commit()
        .await
        .map_err(|err| bounded::query_error(&state, err))?;
    let counts = Counts::read(rows);

    // The series: one without a breakdown, else the values with the largest totals.
    let mut series: Vec<(Option<String>, u64)> = counts
        .totals
        .iter()
        .map(|(value, total)| (value.clone(), *total))
        .collect();
    series.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    series.truncate(BREAKDOWN_VALUES);
    let total = counts.whole;
    if breakdown.is_none() {
        series = vec![(None, total)];
    }
    let format = |at: DateTime<Tz>| at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let bucket_starts: Vec<(NaiveDateTime, String)> = if interval == Interval::Hour && from_rollups
    {
        // Hourly buckets from the rollups are UTC hours, shown in local time.
        let mut hours = Vec::new();
        let mut at = from;
        while at < to {
            hours.push((at.naive_utc(), format(at.with_timezone(&tz))));
            at += Duration::hours(1);
        }
        hours
    } else {
        starts
            .into_iter()
            .map(|local| (local, format(instant(tz, local))))
            .collect()
    };
    let mut data = Vec::with_capacity(bucket_starts.len() * series.len());
    for (key, start) in bucket_starts {
        for (value, _) in &series {
            data.push(Bucket {
                start: start.clone(),
                value: counts
                    .buckets
                    .get(&(key, value.clone()))
                    .copied()
                    .unwrap_or(0),
                breakdown: breakdown.as_ref().map(|_| value.clone()),
            });
        }
    }
    Ok(axum::Json(Trend {
        interval,
        measure,
        timezone: tz.name().to_owned(),
        total,
        source: if from_rollups { "rollups" } else { "events" },
        breakdown_values: breakdown.as_ref().map(|_| {
            series
                .iter()
                .map(|(value, total)| BreakdownTotal {
                    value: value.clone(),
                    total: *total,
                })
                .collect()
        }),
        breakdown,
        data,
    }))
}

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(trends))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_whole_hour_zones_are_re_bucketed() {
        let from = DateTime::parse_from_rfc3339("2026-01-01T00:00:00Z")
            .unwrap()
            .with_timezone(&Utc);
        let to = from + Duration::days(400);
        assert!(whole_hours(Tz::Europe__Berlin, from, to));
        assert!(whole_hours(Tz::America__New_York, from, to));
        assert!(!whole_hours(Tz::Asia__Kolkata, from, to));
        assert!(!whole_hours(Tz::Australia__Adelaide, from, to));
    }
}
