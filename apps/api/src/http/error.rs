//! The API's one error type and its JSON form `{"error":{"code","message"}}`.

use axum::{
    extract::rejection::{FormRejection, JsonRejection, PathRejection, QueryRejection},
    http::{HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
};
use gamify_common::ErrorCode;
use gamify_db::sea_orm::{DbErr, SqlErr};
use serde_json::{Value, json};

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{message}")]
    InvalidRequest {
        message: String,
        details: Option<Value>,
    },
    #[error("missing or invalid credentials")]
    Unauthorized,
    /// Missing, malformed, unknown, revoked or expired: the body never says which.
    #[error("missing or invalid API key")]
    InvalidApiKey,
    #[error("{message}")]
    Forbidden {
        code: ErrorCode,
        message: String,
        details: Option<Value>,
    },
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Conflict(String),
    #[error("{message}")]
    PayloadTooLarge {
        message: String,
        details: Option<Value>,
    },
    #[error("{0}")]
    UnsupportedMediaType(String),
    #[error("{0}")]
    MethodNotAllowed(String),
    /// `code` names the limit that was hit.
    #[error("{message}")]
    RateLimited {
        code: ErrorCode,
        message: &'static str,
        retry_after_seconds: u64,
    },
    #[error("{message}")]
    Unavailable {
        message: String,
        retry_after_seconds: Option<u64>,
    },
    /// An analytics query that would take longer than the deployment allows (its statement timeout):
    /// a narrower range or fewer steps answers.
    #[error("{0}")]
    QueryTooExpensive(String),
    /// The client did not send its request (body included) within the request timeout.
    #[error("the request was not received in time")]
    RequestTimeout,
    #[error("database error: {0}")]
    Database(#[from] gamify_db::Error),
    #[error("redis: {0}")]
    Redis(#[from] redis::RedisError),
    /// Redis did not answer in time or is between reconnection attempts.
    #[error("redis is not reachable")]
    RedisUnreachable,
    #[error("kafka: {0}")]
    Kafka(#[from] rdkafka::error::KafkaError),
    #[error("the local produce queue is full")]
    ProduceQueueFull,
    #[error("the broker did not acknowledge in time")]
    ProduceTimeout,
    #[error("cannot serialize: {0}")]
    Serialize(#[from] serde_json::Error),
    /// A console page's template failed to render.
    #[error("cannot render the page: {0}")]
    Render(#[from] askama::Error),
}

impl Error {
    pub fn invalid(message: impl Into<String>) -> Self {
        Self::InvalidRequest {
            message: message.into(),
            details: None,
        }
    }

    pub fn invalid_field(field: &str, problem: impl std::fmt::Display) -> Self {
        Self::InvalidRequest {
            message: format!("{field} {problem}"),
            details: Some(json!({ "field": field })),
        }
    }

    pub fn too_large(message: impl Into<String>) -> Self {
        Self::PayloadTooLarge {
            message: message.into(),
            details: None,
        }
    }

    /// A dependency that did not answer; clients may retry after `retry_after_seconds`.
    pub fn unavailable(message: impl Into<String>, retry_after_seconds: Option<u64>) -> Self {
        Self::Unavailable {
            message: message.into(),
            retry_after_seconds,
        }
    }

    /// 403: the caller is known and may see the resource, but not do this to it.
    pub fn forbidden(code: ErrorCode, message: impl Into<String>) -> Self {
        Self::Forbidden {
            code,
            message: message.into(),
            details: None,
        }
    }

    pub fn not_found(what: &str) -> Self {
        Self::NotFound(format!("{what} not found"))
    }

    /// 429 for the limit named `code`, with the wait rounded up to whole seconds.
    pub fn rate_limited(code: ErrorCode, message: &'static str, wait: std::time::Duration) -> Self {
        metrics::counter!("gamify_rate_limited_total", "limit" => code.as_str()).increment(1);
        Error::RateLimited {
            code,
            message,
            retry_after_seconds: wait.as_secs_f64().ceil().max(1.0) as u64,
        }
    }

    /// The code the answer carries; its status comes with it.
    pub fn code(&self) -> ErrorCode {
        match self {
            Error::InvalidRequest { .. } => ErrorCode::InvalidRequest,
            Error::Unauthorized => ErrorCode::Unauthorized,
            Error::InvalidApiKey => ErrorCode::InvalidApiKey,
            Error::Forbidden { code, .. } | Error::RateLimited { code, .. } => *code,
            Error::NotFound(_) => ErrorCode::NotFound,
            Error::Conflict(_) => ErrorCode::Conflict,
            Error::PayloadTooLarge { .. } => ErrorCode::PayloadTooLarge,
            Error::UnsupportedMediaType(_) => ErrorCode::UnsupportedMediaType,
            Error::MethodNotAllowed(_) => ErrorCode::MethodNotAllowed,
            Error::Unavailable { .. } => ErrorCode::Unavailable,
            Error::RequestTimeout => ErrorCode::RequestTimeout,
            Error::QueryTooExpensive(_) => ErrorCode::QueryTooExpensive,
            Error::Database(_)
            | Error::Redis(_)
            | Error::RedisUnreachable
            | Error::Kafka(_)
            | Error::ProduceQueueFull
            | Error::ProduceTimeout
            | Error::Serialize(_)
            | Error::Render(_) => ErrorCode::InternalError,
        }
    }
}

impl From<DbErr> for Error {
    fn from(err: DbErr) -> Self {
        match err.sql_err() {
            Some(SqlErr::UniqueConstraintViolation(_)) => {
                Error::Conflict("a resource with these values already exists".to_owned())
            }
            _ => Error::Database(gamify_db::Error::Db(err)),
        }
    }
}

/// Queries run on sqlx directly (bulk writes, streamed reads) fail as sea-orm's do.
impl From<gamify_db::sea_orm::sqlx::Error> for Error {
    fn from(err: gamify_db::sea_orm::sqlx::Error) -> Self {
        Error::from(DbErr::Exec(gamify_db::sea_orm::RuntimeErr::SqlxError(err)))
    }
}

impl From<JsonRejection> for Error {
    fn from(rejection: JsonRejection) -> Self {
        match rejection {
            JsonRejection::MissingJsonContentType(_) => Error::UnsupportedMediaType(
                "expected a request body with Content-Type: application/json".to_owned(),
            ),
            JsonRejection::BytesRejection(inner)
                if inner.status() == StatusCode::PAYLOAD_TOO_LARGE =>
            {
                Error::too_large("request body is larger than 64 KB")
            }
            other => Error::invalid(other.body_text()),
        }
    }
}

impl From<FormRejection> for Error {
    /// A console form that cannot be read (a field missing or of the wrong kind).
    fn from(rejection: FormRejection) -> Self {
        Error::invalid(rejection.body_text())
    }
}

impl From<QueryRejection> for Error {
    /// A query string that cannot be read (e.g. a parameter given twice).
    fn from(rejection: QueryRejection) -> Self {
        Error::invalid(rejection.body_text())
    }
}

impl From<PathRejection> for Error {
    /// A path segment that does not parse (a malformed UUID) names nothing that exists.
    fn from(_: PathRejection) -> Self {
        Error::NotFound("resource not found".to_owned())
    }
}

impl IntoResponse for Error {
    fn into_response(self) -> Response {
        let code = self.code();
        let status =
            StatusCode::from_u16(code.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let message = if status.is_server_error() && !matches!(self, Error::Unavailable { .. }) {
            tracing::error!(error = %self, "request failed");
            "internal server error".to_owned()
        } else {
            self.to_string()
        };
        let mut body = json!({ "error": { "code": code.as_str(), "message": message } });
        if let Error::InvalidRequest {
            details: Some(details),
            ..
        }
        | Error::Forbidden {
            details: Some(details),
            ..
        }
        | Error::PayloadTooLarge {
            details: Some(details),
            ..
        } = &self
        {
            body["error"]["details"] = details.clone();
        }
        let mut response = (status, axum::Json(body)).into_response();
        let headers = response.headers_mut();
        if status == StatusCode::UNAUTHORIZED {
            headers.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        let retry_after = match self {
            Error::RateLimited {
                retry_after_seconds,
                ..
            } => Some(retry_after_seconds),
            Error::Unavailable {
                retry_after_seconds,
                ..
            } => retry_after_seconds,
            _ => None,
        };
        if let Some(seconds) = retry_after {
            headers.insert(header::RETRY_AFTER, HeaderValue::from(seconds.max(1)));
        }
        response
    }
}
