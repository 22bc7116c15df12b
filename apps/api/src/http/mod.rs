//! What every route shares: the server loop, the error type and its JSON form, extractors, the
//! client's address, load shedding, request metrics, health, and the documented shapes.

pub mod client_ip;
pub mod error;
pub mod extract;
pub mod health;
pub mod layers;
pub mod metrics;
pub mod overload;
pub mod schemas;
pub mod server;
pub mod validate;
