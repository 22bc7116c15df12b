//! `POST /v1/analytics/funnels`: how many users went through a sequence of events, in order,
//! within a window, and how long each step took. Computed from the raw events (a funnel depends
//! on the order of each user's events, which no hourly rollup keeps): one query streams the
//! steps' events sorted by user and time, and [`FunnelCounter`] reads them one user at a time,
//! so memory holds one user's events and one duration per converting user and step.

use axum::extract::State;
use chrono::{DateTime, Duration, Utc};
use futures::TryStreamExt;
use gamify_common::{
    events::validate_event_name,
    ingest::{FieldError, parse_time},
};
use gamify_db::sea_orm::sqlx;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::{router::OpenApiRouter, routes};
use uuid::Uuid;

use crate::{
    analytics::{
        bounded::{self, COUNTED},
        funnel_matching::FunnelCounter,
        reader::ProjectReader,
    },
    http::{
        error::{Error, Result},
        extract::{Json, Query},
    },
    state::AppState,
};

const MIN_STEPS: usize = 2;
const MAX_STEPS: usize = 10;
/// The longest range of entering events one funnel may cover.
const MAX_RANGE_DAYS: i64 = 92;
/// The longest conversion window.
const MAX_WINDOW_DAYS: i64 = 90;

#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct FunnelRequest {
    /// 2 to 10 event names, in the order users must do them; a name may repeat.
    #[schema(min_items = 2, max_items = 10, example = json!(["signup", "lesson_started", "purchase"]))]
    pub(crate) steps: Vec<String>,
    /// How long after entering (the first step) a user has to finish, as an ISO 8601 duration in
    /// weeks, days, hours, minutes or seconds (`PT24H`, `P7D`, `P2W`); default `PT24H`, at most
    /// 90 days.
    #[schema(example = "PT24H")]
    pub(crate) window: Option<String>,
    /// Users enter at a first step on or after this instant (RFC 3339); default: 7 days before `to`.
    #[schema(format = DateTime)]
    pub(crate) from: Option<String>,
    /// …and before this one (RFC 3339, exclusive; at most 92 days after `from`); default: now.
    /// Later steps may happen up to the window after it.
    #[schema(format = DateTime)]
    pub(crate) to: Option<String>,
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(rename_all = "camelCase")]
#[into_params(parameter_in = Query)]
pub struct FunnelParams {
    /// The project, with a session or a management token (a secret key names its own).
    #[param(value_type = Option<uuid::Uuid>)]
    #[allow(dead_code, reason = "documents the parameter; ProjectReader reads it")]
    pub(crate) project_id: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct FunnelStep {
    pub(crate) event: String,
    /// Users who reached this step (entered, for the first).
    pub(crate) users: u64,
    /// `users` over the users who entered (1 for the first step, 0 when no one entered).
    pub(crate) conversion: f64,
    /// The median seconds from the step before, over the users who reached this one; null for the
    /// first step and for steps no one reached.
    pub(crate) median_seconds_from_previous: Option<f64>,
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Funnel {
    pub(crate) from: String,
    pub(crate) to: String,
    /// The window, in seconds.
    pub(crate) window_seconds: i64,
    pub(crate) steps: Vec<FunnelStep>,
}

/// The window in seconds, or why it is not one: calendar years and months have no fixed length.
fn parse_window(raw: &str) -> Result<i64, &'static str> {
    let duration: iso8601::Duration = raw
        .parse()
        .map_err(|_| "must be an ISO 8601 duration such as PT24H, P7D or P2W")?;
    let seconds = match duration {
        iso8601::Duration::Weeks(weeks) => i64::from(weeks) * 7 * 86_400,
        iso8601::Duration::YMDHMS {
            year,
            month,
            day,
            hour,
            minute,
            second,
            millisecond,
        } => {
            if year != 0 || month != 0 {
                return Err(
                    "must be in weeks, days, hours, minutes or seconds (years and months vary in length)",
                );
            }
            if millisecond != 0 {
                return Err("must be a whole number of seconds");
            }
            i64::from(day) * 86_400
                + i64::from(hour) * 3600
                + i64::from(minute) * 60
                + i64::from(second)
        }
    };
    if seconds < 1 {
        return Err("must be at least one second");
    }
    if seconds > MAX_WINDOW_DAYS * 86_400 {
        return Err("must be at most 90 days");
    }
    Ok(seconds)
}

struct Validated {
    pub(crate) steps: Vec<String>,
    pub(crate) window_seconds: i64,
    pub(crate) from: DateTime<Utc>,
    pub(crate) to: DateTime<Utc>,
}

fn validate(request: FunnelRequest, now: DateTime<Utc>) -> Result<Validated> {
    let mut errors = Vec::new();
    if !(MIN_STEPS..=MAX_STEPS).contains(&request.steps.len()) {
        errors.push(FieldError::new("steps", "must name 2 to 10 events"));
    }
    for (index, step) in request.steps.iter().enumerate() {
        if let Err(problem) = validate_event_name(step) {
            errors.push(FieldError::new(format!("steps[{index}]"), problem));
        }
    }
    let window_seconds = match parse_window(request.window.as_deref().unwrap_or("PT24H")) {
        Ok(seconds) => seconds,
        Err(problem) => {
            errors.push(FieldError::new("window", problem));
            0
        }
    };
    let to = parse_time("to", request.to.as_deref(), &mut errors);
    let from = parse_time("from", request.from.as_deref(), &mut errors);
    if let Some(error) = errors.into_iter().next() {
        return Err(Error::invalid_field(&error.field, error.message));
    }
    let to = to.unwrap_or(now);
    let from = from.unwrap_or(to - Duration::days(7));
    if from >= to {
        return Err(Error::invalid_field("from", "must be before to"));
    }
    if to - from > Duration::days(MAX_RANGE_DAYS) {
        return Err(Error::invalid_field(
            "from",
            "must be at most 92 days before to; narrow the range",
        ));
    }
    Ok(Validated {
        steps: request.steps,
        window_seconds,
        from,
        to,
    })
}

/// Users through a sequence of events, in order, within a window.
#[utoipa::path(
    post,
    path = "/v1/analytics/funnels",
    tag = "analytics",
    params(FunnelParams),
    request_body = FunnelRequest,
    responses(
        (status = 200, description = "One entry per step, in order", body = Funnel),
        crate::http::schemas::AnalyticsBodyErrors
    ),
    security(("apiKey" = []), ("apiKeyBearer" = []), ("adminToken" = []), ("session" = ["viewer"]), ("orgToken" = ["read"]))
)]
pub(crate) async fn funnel(
    State(state): State<AppState>,
    reader: ProjectReader,
    Query(_): Query<FunnelParams>,
    Json(request): Json<FunnelRequest>,
) -> Result<axum::Json<Funnel>> {
    let request = validate(request, state.now())?;
    let window = Duration::seconds(request.window_seconds);
    let micros = |at: DateTime<Utc>| at.timestamp_micros();
    let mut counter = FunnelCounter::new(
        request.steps.clone(),
        request.window_seconds * 1_000_000,
        micros(request.from),
        micros(request.to),
    );
    let mut distinct: Vec<&str> = request.steps.iter().map(String::as_str).collect();
    distinct.sort_unstable();
    distinct.dedup();

    let mut txn = bounded::begin(&state, reader.project_id).await?;
    // Sorted by who (the user, else the anonymous id: as the rollups count people), then time:
    // each person's events arrive together and in order. Each row carries its event's position
    // in `distinct` rather than its name.
    let sql = format!(
        "SELECT user_id, anonymous, name, occurred_at FROM (
           SELECT user_id, CASE WHEN user_id IS NULL THEN anonymous_id END AS anonymous,
                  array_position($4, event_type)::int4 AS name, occurred_at, id
           FROM events
           WHERE {COUNTED} AND occurred_at >= $2 AND occurred_at < $3 AND event_type = ANY($4)
             AND (user_id IS NOT NULL OR anonymous_id IS NOT NULL)) AS e
         ORDER BY user_id, anonymous COLLATE \"C\", occurred_at, id"
    );
    {
        type Row = (Option<Uuid>, Option<String>, i32, DateTime<Utc>);
        let mut rows = sqlx::query_as::<_, Row>(&sql)
            .bind(reader.project_id)
            .bind(request.from)
            .bind(request.to + window)
            .bind(&distinct)
            .fetch(&mut *txn);
        let name = |position: i32| {
            usize::try_from(position - 1)
                .ok()
                .and_then(|i| distinct.get(i))
                .copied()
                .unwrap_or_default()
        };
        let mut current: Option<(Option<Uuid>, Option<String>)> = None;
        let mut events: Vec<(i64, i32)> = Vec::new();
        while let Some((user, anonymous, position, at)) = rows
            .try_next()
            .await
            .map_err(|err| bounded::query_error(&state, err))?
        {
            if current
                .as_ref()
                .is_none_or(|(u, a)| *u != user || *a != anonymous)
            {
                counter.add_user(events.iter().map(|(at, position)| (*at, name(*position))));
                events.clear();
                current = Some((user, anonymous));
            }
            events.push((micros(at), position));
        }
        counter.add_user(events.iter().map(|(at, position)| (*at, name(*position))));
    }
    txn.commit()
        .await
        .map_err(|err| bounded::query_error(&state, err))?;
    let format = |at: DateTime<Utc>| at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    Ok(axum::Json(Funnel {
        from: format(request.from),
        to: format(request.to),
        window_seconds: request.window_seconds,
        steps: counter
            .finish()
            .into_iter()
            .map(|(event, count)| FunnelStep {
                event,
                users: count.users,
                conversion: count.conversion,
                median_seconds_from_previous: count.median_seconds_from_previous,
            })
            .collect(),
    }))
}

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(funnel))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows_are_fixed_lengths_of_time() {
        assert_eq!(parse_window("PT24H"), Ok(86_400));
        assert_eq!(parse_window("P7D"), Ok(7 * 86_400));
        assert_eq!(parse_window("P2W"), Ok(14 * 86_400));
        assert_eq!(parse_window("P1DT30M"), Ok(86_400 + 1800));
        assert!(parse_window("P1M").is_err());
        assert!(parse_window("P1Y").is_err());
        assert!(parse_window("PT0S").is_err());
        assert!(parse_window("P91D").is_err());
        assert!(parse_window("24h").is_err());
        assert!(parse_window("").is_err());
    }

    #[test]
    fn a_request_is_checked_whole_before_any_query() {
        let now = Utc::now();
        let request = |steps: &[&str], window: Option<&str>| FunnelRequest {
            steps: steps.iter().map(|s| (*s).to_owned()).collect(),
            window: window.map(str::to_owned),
            from: None,
            to: None,
        };
        assert!(validate(request(&["a", "b"], None), now).is_ok());
        assert!(validate(request(&["a"], None), now).is_err());
        assert!(validate(request(&["a"; 11], None), now).is_err());
        assert!(validate(request(&["a", "$identify"], None), now).is_err());
        assert!(validate(request(&["a", "b"], Some("P1M")), now).is_err());
        let too_long = FunnelRequest {
            from: Some("2026-01-01T00:00:00Z".into()),
            to: Some("2026-06-01T00:00:00Z".into()),
            ..request(&["a", "b"], None)
        };
        assert!(validate(too_long, now).is_err());
    }
}
