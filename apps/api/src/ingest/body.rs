//! Ingestion request bodies: JSON (or the same JSON sent as `text/plain`, which browsers can send
//! without a CORS preflight), optionally gzip-compressed, at most 500 KB once inflated. A gzip body
//! of several members (RFC 1952 lets a sender concatenate them) is read whole.

use std::io::Read;

use axum::{
    body::Body,
    http::{HeaderMap, header},
};
use gamify_common::ingest::MAX_BATCH_BYTES;
use serde_json::Value;

use crate::http::error::{Error, Result};

/// Reads a JSON body of at most 500 KB after decompression. gzip is inflated with the limit
/// checked as it streams, so a small compressed bomb never grows past the limit in memory.
///
/// Not tower-http's request decompression: since 0.6.8 its gzip decoder stops after the first
/// member (tower-rs/tower-http#737, open), which refuses a valid multi-member body (the test
/// `every_member_of_a_gzip_body_is_read` fails with it), and it recognises only the exact `gzip`,
/// not `x-gzip` or another case (RFC 9110 8.4.1.3).
pub async fn read_json(headers: &HeaderMap, body: Body) -> Result<Value> {
    let is_json = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|mime| {
            let mime = mime.trim();
            mime.eq_ignore_ascii_case("application/json")
                || mime.eq_ignore_ascii_case("text/plain")
                || (mime.to_ascii_lowercase().starts_with("application/")
                    && mime.to_ascii_lowercase().ends_with("+json"))
        });
    if !is_json {
        return Err(Error::UnsupportedMediaType(
            "expected a request body with Content-Type: application/json (or text/plain)"
                .to_owned(),
        ));
    }
    let too_large = || Error::too_large("request body is larger than 500 KB");
    let raw = axum::body::to_bytes(body, MAX_BATCH_BYTES)
        .await
        .map_err(|err| {
            let limit_hit = std::error::Error::source(&err)
                .is_some_and(|source| source.is::<http_body_util::LengthLimitError>());
            if limit_hit {
                too_large()
            } else {
                Error::invalid("cannot read the request body")
            }
        })?;
    let encoding = headers
        .get(header::CONTENT_ENCODING)
        .and_then(|v| v.to_str().ok())
        .map(|v| v.trim().to_ascii_lowercase());
    let json = match encoding.as_deref() {
        None | Some("" | "identity") => raw.to_vec(),
        Some("gzip" | "x-gzip") => {
            let mut inflated = Vec::new();
            flate2::read::MultiGzDecoder::new(&raw[..])
                .take(MAX_BATCH_BYTES as u64 + 1)
                .read_to_end(&mut inflated)
                .map_err(|_| Error::invalid("request body is not valid gzip"))?;
            if inflated.len() > MAX_BATCH_BYTES {
                return Err(too_large());
            }
            inflated
        }
        Some(other) => {
            return Err(Error::UnsupportedMediaType(format!(
                "Content-Encoding {other} is not supported; use gzip or none"
            )));
        }
    };
    serde_json::from_slice::<Unique>(&json)
        .map(|unique| unique.0)
        .map_err(|err| Error::invalid(format!("malformed JSON: {err}")))
}

/// A JSON value whose objects have no repeated key. serde_json keeps the last of repeated keys;
/// another reader may keep the first, so `{"event":"page_view","event":"purchase"}` could mean
/// one thing to the gateway and another to whoever reads the payload later: it is refused.
struct Unique(Value);

impl<'de> serde::Deserialize<'de> for Unique {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(UniqueVisitor).map(Unique)
    }
}

struct UniqueVisitor;

impl<'de> serde::de::Visitor<'de> for UniqueVisitor {
    type Value = Value;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }

    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(Value::from(v))
    }

    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(Value::from(v))
    }

    fn visit_f64<E>(self, v: f64) -> Result<Value, E> {
        Ok(Value::from(v))
    }

    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_owned()))
    }

    fn visit_string<E>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }

    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut items = Vec::new();
        while let Some(Unique(item)) = seq.next_element()? {
            items.push(item);
        }
        Ok(Value::Array(items))
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut object = serde_json::Map::new();
        while let Some(key) = map.next_key::<String>()? {
            let Unique(value) = map.next_value()?;
            match object.entry(key) {
                serde_json::map::Entry::Vacant(slot) => {
                    slot.insert(value);
                }
                serde_json::map::Entry::Occupied(taken) => {
                    let key = taken.key();
                    return Err(serde::de::Error::custom(format!("duplicate key {key:?}")));
                }
            }
        }
        Ok(Value::Object(object))
    }
}
