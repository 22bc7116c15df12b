//! `GET /v1/events/export`: every event of the project that matches the filters, oldest first, as
//! CSV or NDJSON, streamed. The events are read in chunks, each by its own short query keyed on
//! (occurredAt, id) after the last one sent, so memory stays constant and no transaction or
//! statement stays open however large the export; events stored meanwhile with a later position
//! are included, never an event twice.

use axum::{
    body::{Body, Bytes},
    extract::State,
    http::{HeaderValue, header},
    response::{IntoResponse, Response},
};
use chrono::{DateTime, Utc};
use gamify_common::ingest::{FieldError, parse_time};
use gamify_db::{Db, sea_orm::Value as DbValue};
use serde::Deserialize;
use utoipa::IntoParams;
use utoipa_axum::{router::OpenApiRouter, routes};
use uuid::Uuid;

use crate::{
    analytics::ProjectReader,
    http::{
        error::{Error, Result},
        extract::Query,
    },
    read::events::{EVENTS_OF_PROJECT, EventOut, STATUSES, USER_FILTER, event_from_row},
    state::AppState,
};

/// Events read per query: the most an export holds in memory at once.
const CHUNK: u32 = 1000;

const CSV_HEADER: [&str; 13] = [
    "id",
    "messageId",
    "event",
    "userId",
    "anonymousId",
    "status",
    "errorDetails",
    "keyId",
    "keyType",
    "occurredAt",
    "receivedAt",
    "processedAt",
    "properties",
];

#[derive(Debug, Deserialize, IntoParams)]
#[serde(rename_all = "camelCase")]
#[into_params(parameter_in = Query)]
pub struct ExportEvents {
    /// `csv` or `ndjson` (the default).
    #[param(value_type = Option<ExportFormat>)]
    pub(crate) format: Option<String>,
    /// Inclusive lower bound on `occurredAt` (RFC 3339).
    #[param(format = DateTime)]
    pub(crate) from: Option<String>,
    /// Exclusive upper bound on `occurredAt` (RFC 3339).
    #[param(format = DateTime)]
    pub(crate) to: Option<String>,
    /// Only events of this name.
    pub(crate) event: Option<String>,
    /// Only this end user's events.
    pub(crate) user_id: Option<String>,
    /// `pending`, `processed` or `failed`.
    #[param(value_type = Option<super::events::EventStatus>)]
    pub(crate) status: Option<String>,
    /// The project, with a session or a management token (a secret key names its own).
    #[param(value_type = Option<uuid::Uuid>)]
    #[allow(dead_code, reason = "documents the parameter; ProjectReader reads it")]
    pub(crate) project_id: Option<String>,
}

#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
#[allow(dead_code, reason = "documents the values; never built")]
pub enum ExportFormat {
    Csv,
    Ndjson,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Format {
    Csv,
    Ndjson,
}

#[derive(Debug, Clone)]
struct Filter {
    pub(crate) project_id: Uuid,
    pub(crate) from: Option<DateTime<Utc>>,
    pub(crate) to: Option<DateTime<Utc>>,
    pub(crate) event: Option<String>,
    pub(crate) user_id: Option<String>,
    pub(crate) status: Option<String>,
}

impl Filter {
    /// The events after `after`, oldest first, at most [`CHUNK`].
    async fn chunk(&self, db: &Db, after: Option<(DateTime<Utc>, Uuid)>) -> Result<Vec<EventOut>> {
        let mut sql = String::from(EVENTS_OF_PROJECT);
        let mut values: Vec<DbValue> = vec![self.project_id.into()];
        let mut bind = |clause: &str, value: DbValue, sql: &mut String| {
            values.push(value);
            sql.push_str(&clause.replace('?', &format!("${}", values.len())));
        };
        if let Some(user_id) = &self.user_id {
            bind(USER_FILTER, user_id.clone().into(), &mut sql);
        }
        if let Some(event) = &self.event {
            bind(" AND e.event_type = ?", event.clone().into(), &mut sql);
        }
        if let Some(status) = &self.status {
            bind(" AND e.status = ?", status.clone().into(), &mut sql);
        }
        if let Some(from) = self.from {
            bind(" AND e.occurred_at >= ?", from.into(), &mut sql);
        }
        if let Some(to) = self.to {
            bind(" AND e.occurred_at < ?", to.into(), &mut sql);
        }
        if let Some((occurred_at, id)) = after {
            bind(
                " AND (e.occurred_at, e.id) > (?",
                occurred_at.into(),
                &mut sql,
            );
            bind(", ?)", id.into(), &mut sql);
        }
        sql.push_str(&format!(" ORDER BY e.occurred_at, e.id LIMIT {CHUNK}"));
        let rows = db.tenant_rows(self.project_id, sql, values).await?;
        Ok(rows
            .iter()
            .map(event_from_row)
            .collect::<Result<Vec<_>, _>>()?)
    }
}

/// A spreadsheet would run a cell starting with one of these as a formula: such text cells are
/// written with a leading `'` (OWASP's CSV injection advice).
fn spreadsheet_safe(text: &str) -> std::borrow::Cow<'_, str> {
    match text.chars().next() {
        Some('=' | '+' | '-' | '@' | '\t' | '\r') => format!("'{text}").into(),
        _ => text.into(),
    }
}

fn encode(format: Format, events: &[EventOut], header: bool) -> Result<Bytes> {
    match format {
        Format::Ndjson => {
            let mut out = Vec::with_capacity(events.len() * 256);
            for event in events {
                serde_json::to_writer(&mut out, event)?;
                out.push(b'\n');
            }
            Ok(out.into())
        }
        Format::Csv => {
            let mut writer = csv::Writer::from_writer(Vec::with_capacity(events.len() * 256));
            let csv_error = |error: csv::Error| {
                tracing::error!(%error, "csv encoding failed");
                Error::unavailable("the export could not be encoded", None)
            };
            if header {
                writer.write_record(CSV_HEADER).map_err(csv_error)?;
            }
            let time = |at: DateTime<Utc>| at.to_rfc3339_opts(chrono::SecondsFormat::Micros, true);
            for event in events {
                let properties = serde_json::to_string(&event.properties)?;
                writer
                    .write_record([
                        event.id.to_string().as_str(),
                        &spreadsheet_safe(&event.message_id),
                        &spreadsheet_safe(&event.event),
                        &spreadsheet_safe(event.user_id.as_deref().unwrap_or("")),
                        &spreadsheet_safe(event.anonymous_id.as_deref().unwrap_or("")),
                        &event.status,
                        &spreadsheet_safe(event.error_details.as_deref().unwrap_or("")),
                        &event.source.key_id.to_string(),
                        &event.source.key_type,
                        &time(event.occurred_at),
                        &time(event.received_at),
                        &event.processed_at.map(time).unwrap_or_default(),
                        &properties,
                    ])
                    .map_err(csv_error)?;
            }
            writer
                .into_inner()
                .map(Bytes::from)
                .map_err(|error| csv_error(error.into_error().into()))
        }
    }
}

/// Streams the project's events that match the filters, oldest first, as CSV (a header row, then
/// one row per event; `properties` as JSON) or NDJSON (one event per line, as `GET /v1/events`
/// lists them). Any size, constant memory. A failure after the first bytes ends the stream early
/// (the client sees a truncated body, never a partial file presented as complete: CSV and NDJSON
/// end with a newline after every complete record).
#[utoipa::path(
    get,
    path = "/v1/events/export",
    tag = "reads",
    params(ExportEvents),
    responses(
        (status = 200, description = "The events, streamed", content(
            (String = "application/x-ndjson"),
            (String = "text/csv"),
        )),
        crate::http::schemas::AnalyticsErrors
    ),
    security(("apiKey" = []), ("apiKeyBearer" = []), ("adminToken" = []), ("session" = ["viewer"]), ("orgToken" = ["read"]))
)]
pub(crate) async fn export_events(
    State(state): State<AppState>,
    reader: ProjectReader,
    Query(query): Query<ExportEvents>,
) -> Result<Response> {
    let mut errors = Vec::new();
    let from = parse_time("from", query.from.as_deref(), &mut errors);
    let to = parse_time("to", query.to.as_deref(), &mut errors);
    let format = match query.format.as_deref() {
        None | Some("ndjson") => Format::Ndjson,
        Some("csv") => Format::Csv,
        Some(_) => {
            errors.push(FieldError::new("format", "must be csv or ndjson"));
            Format::Ndjson
        }
    };
    if let Some(status) = &query.status {
        if !STATUSES.contains(&status.as_str()) {
            errors.push(FieldError::new(
                "status",
                "must be pending, processed or failed",
            ));
        }
    }
    for (field, value) in [("userId", &query.user_id), ("event", &query.event)] {
        if value.as_deref().is_some_and(|v| v.contains('\0')) {
            errors.push(FieldError::new(
                field,
                "must not contain the NUL character (\\u0000)",
            ));
        }
    }
    if let Some(error) = errors.into_iter().next() {
        return Err(Error::invalid_field(&error.field, error.message));
    }
    let filter = Filter {
        project_id: reader.project_id,
        from,
        to,
        event: query.event,
        user_id: query.user_id,
        status: query.status,
    };
    // The first chunk before answering: a database that is down is a 503, not an empty file.
    let first = filter.chunk(state.db(), None).await?;
    let db = state.db().clone();
    struct Position {
        chunk: Option<Vec<EventOut>>,
        header: bool,
        after: Option<(DateTime<Utc>, Uuid)>,
    }
    let start = Position {
        chunk: Some(first),
        header: format == Format::Csv,
        after: None,
    };
    let body = futures::stream::try_unfold(start, move |mut position| {
        let db = db.clone();
        let filter = filter.clone();
        async move {
            let events = match position.chunk.take() {
                Some(events) => events,
                None if position.after.is_none() => return Ok(None),
                None => filter.chunk(&db, position.after).await?,
            };
            if events.is_empty() && !position.header {
                return Ok(None);
            }
            let bytes = encode(format, &events, position.header)?;
            let full = events.len() == CHUNK as usize;
            position.header = false;
            position.after = match (full, events.last()) {
                (true, Some(last)) => Some((last.occurred_at, last.id)),
                _ => None,
            };
            Ok::<_, Error>(Some((bytes, position)))
        }
    });
    let body = futures::TryStreamExt::map_err(body, |error: Error| {
        tracing::error!(%error, "event export ended early");
        std::io::Error::other("the export ended early")
    });
    let (content_type, filename) = match format {
        Format::Csv => (
            "text/csv; charset=utf-8",
            "attachment; filename=\"events.csv\"",
        ),
        Format::Ndjson => (
            "application/x-ndjson",
            "attachment; filename=\"events.ndjson\"",
        ),
    };
    let mut response = Body::from_stream(body).into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(
        header::CONTENT_DISPOSITION,
        HeaderValue::from_static(filename),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(response)
}

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(export_events))
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn event(name: &str, properties: serde_json::Value) -> EventOut {
        let at = DateTime::from_timestamp(1_700_000_000, 0).unwrap();
        EventOut {
            id: Uuid::nil(),
            message_id: "m".into(),
            event: name.into(),
            user_id: Some("u".into()),
            anonymous_id: None,
            properties,
            status: "processed".into(),
            error_details: None,
            source: super::super::events::EventSource {
                key_id: Uuid::nil(),
                key_type: "secret".into(),
            },
            occurred_at: at,
            received_at: at,
            processed_at: None,
        }
    }

    #[test]
    fn formulas_are_neutralised_and_plain_text_is_kept() {
        assert_eq!(spreadsheet_safe("=HYPERLINK(\"x\")"), "'=HYPERLINK(\"x\")");
        assert_eq!(spreadsheet_safe("@SUM(A1)"), "'@SUM(A1)");
        assert_eq!(spreadsheet_safe("purchase"), "purchase");
        assert_eq!(spreadsheet_safe(""), "");
    }

    proptest! {
        /// Whatever the names and properties, the CSV reads back as the same fields, one record
        /// per event, and the NDJSON as the same JSON objects.
        #[test]
        fn both_formats_read_back_as_written(
            names in proptest::collection::vec("[a-z,\"\n \\p{L}]{1,20}", 1..20),
            note in ".{0,40}",
        ) {
            let events: Vec<EventOut> = names
                .iter()
                .map(|name| event(name, serde_json::json!({ "note": note })))
                .collect();
            let csv = encode(Format::Csv, &events, true).unwrap();
            let mut reader = csv::Reader::from_reader(&csv[..]);
            let headers = reader.headers().unwrap().clone();
            prop_assert_eq!(headers.iter().collect::<Vec<_>>(), CSV_HEADER.to_vec());
            let records: Vec<csv::StringRecord> = reader.records().map(|r| r.unwrap()).collect();
            prop_assert_eq!(records.len(), events.len());
            for (record, event) in records.iter().zip(&events) {
                let written = spreadsheet_safe(&event.event);
                prop_assert_eq!(&record[2], written.as_ref());
                let properties: serde_json::Value = serde_json::from_str(&record[12]).unwrap();
                prop_assert_eq!(&properties, &event.properties);
            }
            let ndjson = encode(Format::Ndjson, &events, false).unwrap();
            let lines: Vec<&str> = std::str::from_utf8(&ndjson).unwrap().lines().collect();
            prop_assert_eq!(lines.len(), events.len());
            for (line, event) in lines.iter().zip(&events) {
                let parsed: serde_json::Value = serde_json::from_str(line).unwrap();
                prop_assert_eq!(&parsed["event"], &serde_json::Value::from(event.event.clone()));
                prop_assert_eq!(&parsed["properties"], &event.properties);
            }
        }
    }
}
