//! Analytics over a project's events: trends from the hourly rollups the worker keeps, readable
//! with the project's secret key or by a member, token or operator who names the project
//! ([`reader::ProjectReader`]).

mod reader;
mod trends;

use utoipa_axum::router::OpenApiRouter;

use crate::state::AppState;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().merge(trends::router())
}
