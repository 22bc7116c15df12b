//! Event ingestion (track, batch, identify) with a publishable or secret key: the request and its
//! key checks, the body, key resolution and its caches, rate limits, and the broker the events go to.

pub mod body;
mod decisions;
pub mod keys;
pub mod producer;
pub mod rate_limit;
pub mod request;
mod routes;
pub mod sink;
#[cfg(test)]
mod tests;

pub use routes::router;
