//! `/console/projects/{projectId}/analytics`: a trend chart (event, interval, measure, breakdown,
//! range, time zone), the unique users of the range, a funnel builder and a retention table —
//! the answers of `/v1/analytics/trends`, `/funnels` and `/retention` for this project. Who may
//! call: any member of the project's organization (`read`).

use std::collections::BTreeMap;

use askama::Template;
use axum::{
    Router,
    body::Bytes,
    extract::State,
    response::Response,
    routing::{get, post},
};
use chrono::DateTime;
use serde::Deserialize;
use uuid::Uuid;

use crate::{
    accounts::roles::Permission,
    analytics::{
        ProjectReader,
        funnels::{self, Funnel, FunnelParams, FunnelRequest},
        retention::{self, Retention, RetentionQuery},
        trends::{self, Trend, TrendQuery},
    },
    console::{
        layout::{Nav, render},
        viewer::Viewer,
    },
    http::{
        error::Result,
        extract::{Json, Path, Query},
    },
    state::AppState,
};

#[derive(Debug, Default, Deserialize)]
pub struct TrendForm {
    #[serde(default)]
    event: String,
    #[serde(default)]
    interval: String,
    #[serde(default)]
    measure: String,
    #[serde(default)]
    breakdown: String,
    #[serde(default)]
    timezone: String,
}

#[derive(Template)]
#[template(path = "analytics.html")]
struct AnalyticsPage {
    nav: Nav,
    project_id: Uuid,
    form: TrendForm,
    trend_query: String,
    intervals: &'static [&'static str],
}

/// The chart and its numbers, loaded after the page so the page answers at once whatever the
/// range costs (the queries are bounded by `ANALYTICS_QUERY_TIMEOUT_MS`).
#[derive(Template)]
#[template(path = "trend.html")]
struct TrendFragment {
    form: TrendForm,
    trend: Trend,
    users: Trend,
    chart: String,
}

#[derive(Template)]
#[template(path = "funnel.html")]
struct FunnelFragment {
    funnel: Funnel,
}

#[derive(Template)]
#[template(path = "retention.html")]
struct RetentionFragment {
    retention: Retention,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RetentionForm {
    #[serde(default)]
    start_event: String,
    #[serde(default)]
    return_event: String,
    #[serde(default)]
    interval: String,
}

fn some(text: &str) -> Option<String> {
    Some(text.trim().to_owned()).filter(|t| !t.is_empty())
}

/// The trend as uPlot's data: unix seconds on x, one series per breakdown value (or one).
fn chart(trend: &Trend) -> String {
    let mut starts: Vec<i64> = Vec::new();
    let mut series: BTreeMap<String, BTreeMap<i64, u64>> = BTreeMap::new();
    for bucket in &trend.data {
        let Ok(start) = DateTime::parse_from_rfc3339(&bucket.start) else {
            continue;
        };
        let at = start.timestamp();
        if starts.last() != Some(&at) && !starts.contains(&at) {
            starts.push(at);
        }
        let label = match &bucket.breakdown {
            None => trend.measure_label().to_owned(),
            Some(None) => "(none)".to_owned(),
            Some(Some(value)) => value.clone(),
        };
        series.entry(label).or_default().insert(at, bucket.value);
    }
    starts.sort_unstable();
    let series: Vec<serde_json::Value> = series
        .into_iter()
        .map(|(label, values)| {
            let values: Vec<u64> = starts
                .iter()
                .map(|at| values.get(at).copied().unwrap_or(0))
                .collect();
            serde_json::json!({ "label": label, "values": values })
        })
        .collect();
    serde_json::json!({ "x": starts, "series": series }).to_string()
}

impl Trend {
    fn measure_label(&self) -> &'static str {
        match self.measure {
            trends::Measure::Count => "events",
            trends::Measure::Users => "users",
        }
    }
}

impl TrendForm {
    fn query(&self) -> String {
        let mut out = url::form_urlencoded::Serializer::new(String::new());
        for (name, value) in [
            ("event", &self.event),
            ("interval", &self.interval),
            ("measure", &self.measure),
            ("breakdown", &self.breakdown),
            ("timezone", &self.timezone),
        ] {
            if !value.trim().is_empty() {
                out.append_pair(name, value.trim());
            }
        }
        out.finish()
    }
}

async fn page(
    viewer: Viewer,
    State(state): State<AppState>,
    Path(project_id): Path<Uuid>,
    Query(form): Query<TrendForm>,
) -> Result<Response> {
    let nav = Nav::project(&state, &viewer, project_id, "analytics", "Analytics").await?;
    render(&AnalyticsPage {
        nav,
        project_id,
        trend_query: form.query(),
        form,
        intervals: &["hour", "day", "week", "month"],
    })
}

async fn trend(
    viewer: Viewer,
    State(state): State<AppState>,
    Path(project_id): Path<Uuid>,
    Query(form): Query<TrendForm>,
) -> Result<Response> {
    viewer
        .caller
        .authorize_project(&state, project_id, Permission::Read)
        .await?;
    let reader = ProjectReader { project_id };
    let query = |measure: Option<String>, breakdown: Option<String>| TrendQuery {
        event: some(&form.event),
        interval: some(&form.interval),
        from: None,
        to: None,
        timezone: some(&form.timezone),
        measure,
        breakdown,
        project_id: None,
    };
    // Side by side: each is its own bounded transaction, and the page waits for the slower.
    let (trend, users) = tokio::try_join!(
        trends::trends(
            State(state.clone()),
            reader,
            Query(query(some(&form.measure), some(&form.breakdown))),
        ),
        trends::trends(
            State(state.clone()),
            reader,
            Query(query(Some("users".to_owned()), None)),
        ),
    )?;
    let (trend, users) = (trend.0, users.0);
    let chart = chart(&trend);
    render(&TrendFragment {
        form,
        trend,
        users,
        chart,
    })
}

async fn funnel(
    viewer: Viewer,
    State(state): State<AppState>,
    Path(project_id): Path<Uuid>,
    body: Bytes,
) -> Result<Response> {
    viewer
        .caller
        .authorize_project(&state, project_id, Permission::Read)
        .await?;
    let mut steps = Vec::new();
    let mut window = None;
    for (name, value) in url::form_urlencoded::parse(&body) {
        match name.as_ref() {
            "steps" => steps.extend(
                value
                    .lines()
                    .flat_map(|line| line.split(','))
                    .filter_map(some),
            ),
            "window" => window = some(&value),
            _ => {}
        }
    }
    let answer = funnels::funnel(
        State(state),
        ProjectReader { project_id },
        Query(FunnelParams { project_id: None }),
        Json(FunnelRequest {
            steps,
            window,
            from: None,
            to: None,
        }),
    )
    .await?
    .0;
    render(&FunnelFragment { funnel: answer })
}

async fn retention_table(
    viewer: Viewer,
    State(state): State<AppState>,
    Path(project_id): Path<Uuid>,
    Query(form): Query<RetentionForm>,
) -> Result<Response> {
    viewer
        .caller
        .authorize_project(&state, project_id, Permission::Read)
        .await?;
    let answer = retention::retention(
        State(state),
        ProjectReader { project_id },
        Query(RetentionQuery {
            start_event: some(&form.start_event),
            return_event: some(&form.return_event),
            interval: some(&form.interval),
            from: None,
            to: None,
            timezone: None,
            project_id: None,
        }),
    )
    .await?
    .0;
    render(&RetentionFragment { retention: answer })
}

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/console/projects/{project_id}/analytics", get(page))
        .route("/console/projects/{project_id}/analytics/trend", get(trend))
        .route(
            "/console/projects/{project_id}/analytics/funnel",
            post(funnel),
        )
        .route(
            "/console/projects/{project_id}/analytics/retention",
            get(retention_table),
        )
}
