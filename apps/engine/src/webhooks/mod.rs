//! Webhook delivery: the outbox rows the award transaction wrote (`crate::outbox`) are sent by the
//! dispatcher (`dispatch`), signed the Standard Webhooks way (`sign`), only to public addresses
//! unless told otherwise (`address`), and retried with backoff under the same `webhook-id`.

pub mod address;
pub mod dispatch;
pub mod sign;

pub use dispatch::{Schedule, Settings, run, run_with};
