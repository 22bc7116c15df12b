//! Definitions shared by gamify-api and gamify-worker, so that both sides of the topic agree on
//! what a key, an event and an envelope are.

pub mod config;
pub mod envelope;
pub mod errors;
pub mod events;
pub mod ingest;
pub mod keys;
pub mod logging;
pub mod shutdown;
pub mod timestamp;

pub use config::ConfigError;
pub use envelope::Envelope;
pub use errors::ErrorCode;
pub use keys::{ApiKey, KeyFormatError, KeyHash, KeyType, KeyVoucher};
