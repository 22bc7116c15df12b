//! Rules for text and fields of request bodies and queries that several routes share.

use serde::{Deserialize, Deserializer};

use crate::http::error::{Error, Result};

pub const MAX_NAME_CHARS: usize = 255;

/// Names are 1–255 characters, not blank and without NUL.
pub fn validate_name(field: &str, name: &str) -> Result<()> {
    if name.trim().is_empty() {
        return Err(Error::invalid_field(field, "must not be empty"));
    }
    validate_storable(field, name)?;
    if name.chars().count() > MAX_NAME_CHARS {
        return Err(Error::invalid_field(
            field,
            format_args!("must be at most {MAX_NAME_CHARS} characters"),
        ));
    }
    Ok(())
}

/// Text that Postgres can store: no NUL character (`\u0000`), which a `text` column refuses.
pub fn validate_storable(field: &str, text: &str) -> Result<()> {
    if text.contains('\0') {
        return Err(Error::invalid_field(
            field,
            "must not contain the NUL character (\\u0000)",
        ));
    }
    Ok(())
}

/// Tells an absent field (`None`) from an explicit `null` (`Some(None)`) in PATCH bodies.
pub fn nullable<'de, D, T>(deserializer: D) -> std::result::Result<Option<Option<T>>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    Option::<T>::deserialize(deserializer).map(Some)
}
