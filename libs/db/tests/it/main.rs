//! Row-level security proofs, connected as the application role (DATABASE_URL), against the real
//! Postgres provisioned by ./scripts/test.sh.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod accounts;
mod deletes;
mod retention;
mod rls;
