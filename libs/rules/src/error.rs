use serde::Serialize;

/// One thing wrong with a rule document: where (a JSON path from `$`), what kind of problem (a
/// stable code from [`codes`], for programs) and a message for people.
#[derive(Debug, Clone, Serialize, PartialEq, Eq, thiserror::Error)]
#[error("{path}: {message} ({code})")]
pub struct RuleError {
    pub path: String,
    pub code: &'static str,
    pub message: String,
}

impl RuleError {
    pub(crate) fn new(
        path: impl Into<String>,
        code: &'static str,
        message: impl Into<String>,
    ) -> Self {
        Self {
            path: path.into(),
            code,
            message: message.into(),
        }
    }
}

/// The codes a [`RuleError`] carries. They are part of the API's contract: clients branch on them.
pub mod codes {
    pub const UNKNOWN_REFERENCE: &str = "unknown_reference";
    pub const DUPLICATE_KEY: &str = "duplicate_key";
    pub const INVALID_KEY: &str = "invalid_key";
    pub const INVALID_VALUE: &str = "invalid_value";
    pub const TOO_MANY: &str = "too_many";
    pub const INVALID_CONDITION: &str = "invalid_condition";
    pub const INVALID_TIMEZONE: &str = "invalid_timezone";
    pub const UNKNOWN_FIELD: &str = "unknown_field";
    pub const MISSING_FIELD: &str = "missing_field";
    pub const INVALID_TYPE: &str = "invalid_type";
}
