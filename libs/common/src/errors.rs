//! The error codes of the API's answers `{"error":{"code","message","details?"}}`, each with its HTTP
//! status: the one list the gateway answers with, the OpenAPI document publishes, and docs/API.md
//! explains.

use serde::{Deserialize, Serialize};

/// The error codes; docs/API.md says when each is used.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    InvalidRequest,
    Unauthorized,
    InvalidApiKey,
    EventRequiresSecretKey,
    OriginNotAllowed,
    SecretKeyRequired,
    Forbidden,
    CsrfRejected,
    NotFound,
    MethodNotAllowed,
    Conflict,
    PayloadTooLarge,
    UnsupportedMediaType,
    ClientRateLimited,
    KeyRateLimited,
    ProjectRateLimited,
    InvalidKeyRateLimited,
    SignInRateLimited,
    QueryTooExpensive,
    RequestTimeout,
    InternalError,
    Unavailable,
}

impl ErrorCode {
    pub const ALL: [ErrorCode; 22] = [
        ErrorCode::InvalidRequest,
        ErrorCode::Unauthorized,
        ErrorCode::InvalidApiKey,
        ErrorCode::EventRequiresSecretKey,
        ErrorCode::OriginNotAllowed,
        ErrorCode::SecretKeyRequired,
        ErrorCode::Forbidden,
        ErrorCode::CsrfRejected,
        ErrorCode::NotFound,
        ErrorCode::MethodNotAllowed,
        ErrorCode::Conflict,
        ErrorCode::PayloadTooLarge,
        ErrorCode::UnsupportedMediaType,
        ErrorCode::ClientRateLimited,
        ErrorCode::KeyRateLimited,
        ErrorCode::ProjectRateLimited,
        ErrorCode::InvalidKeyRateLimited,
        ErrorCode::SignInRateLimited,
        ErrorCode::QueryTooExpensive,
        ErrorCode::RequestTimeout,
        ErrorCode::InternalError,
        ErrorCode::Unavailable,
    ];

    /// The code as it appears in an answer.
    pub const fn as_str(self) -> &'static str {
        match self {
            ErrorCode::InvalidRequest => "invalid_request",
            ErrorCode::Unauthorized => "unauthorized",
            ErrorCode::InvalidApiKey => "invalid_api_key",
            ErrorCode::EventRequiresSecretKey => "event_requires_secret_key",
            ErrorCode::OriginNotAllowed => "origin_not_allowed",
            ErrorCode::SecretKeyRequired => "secret_key_required",
            ErrorCode::Forbidden => "forbidden",
            ErrorCode::CsrfRejected => "csrf_rejected",
            ErrorCode::NotFound => "not_found",
            ErrorCode::MethodNotAllowed => "method_not_allowed",
            ErrorCode::Conflict => "conflict",
            ErrorCode::PayloadTooLarge => "payload_too_large",
            ErrorCode::UnsupportedMediaType => "unsupported_media_type",
            ErrorCode::ClientRateLimited => "client_rate_limited",
            ErrorCode::KeyRateLimited => "key_rate_limited",
            ErrorCode::ProjectRateLimited => "project_rate_limited",
            ErrorCode::InvalidKeyRateLimited => "invalid_key_rate_limited",
            ErrorCode::SignInRateLimited => "sign_in_rate_limited",
            ErrorCode::QueryTooExpensive => "query_too_expensive",
            ErrorCode::RequestTimeout => "request_timeout",
            ErrorCode::InternalError => "internal_error",
            ErrorCode::Unavailable => "unavailable",
        }
    }

    /// The HTTP status an answer with this code has.
    pub const fn status(self) -> u16 {
        match self {
            ErrorCode::InvalidRequest => 400,
            ErrorCode::Unauthorized | ErrorCode::InvalidApiKey => 401,
            ErrorCode::EventRequiresSecretKey
            | ErrorCode::OriginNotAllowed
            | ErrorCode::SecretKeyRequired
            | ErrorCode::Forbidden
            | ErrorCode::CsrfRejected => 403,
            ErrorCode::NotFound => 404,
            ErrorCode::MethodNotAllowed => 405,
            ErrorCode::RequestTimeout => 408,
            ErrorCode::Conflict => 409,
            ErrorCode::PayloadTooLarge => 413,
            ErrorCode::UnsupportedMediaType => 415,
            ErrorCode::QueryTooExpensive => 422,
            ErrorCode::ClientRateLimited
            | ErrorCode::KeyRateLimited
            | ErrorCode::ProjectRateLimited
            | ErrorCode::SignInRateLimited
            | ErrorCode::InvalidKeyRateLimited => 429,
            ErrorCode::InternalError => 500,
            ErrorCode::Unavailable => 503,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_code_is_written_as_serde_writes_it_and_listed_once() {
        for code in ErrorCode::ALL {
            assert_eq!(
                serde_json::to_value(code).unwrap(),
                serde_json::Value::from(code.as_str())
            );
            assert_eq!(ErrorCode::ALL.iter().filter(|c| **c == code).count(), 1);
            assert!((400..600).contains(&code.status()));
        }
    }
}
