//! People and what they may do: accounts, memberships with roles, console sessions, invitations,
//! organization management tokens, the audit log, and the [`caller::Caller`] extractor every
//! management route authorizes with.

pub mod audit;
pub mod bootstrap;
pub mod caller;
pub mod invitations;
pub(crate) mod members;
pub mod passwords;
pub mod roles;
pub mod session_store;
pub mod sessions;
pub(crate) mod tokens;

use utoipa_axum::router::OpenApiRouter;

pub use crate::accounts::passwords::{HashCost, Passwords};
use crate::state::AppState;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .merge(sessions::router())
        .merge(invitations::router())
        .merge(members::router())
        .merge(tokens::router())
        .merge(audit::router())
}
