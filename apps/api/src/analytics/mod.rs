//! Analytics over a project's events, readable with the project's secret key or by a member,
//! token or operator who names the project ([`reader::ProjectReader`]): trends from the hourly
//! rollups the worker keeps; funnels, retention, breakdowns and the live numbers from the raw
//! events, each query bounded by a statement timeout ([`bounded`]).

mod bounded;
mod buckets;
mod funnel_matching;
mod funnels;
mod live;
mod reader;
mod retention;
mod trends;

pub use reader::ProjectReader;
use utoipa_axum::router::OpenApiRouter;

use crate::state::AppState;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .merge(trends::router())
        .merge(funnels::router())
        .merge(retention::router())
        .merge(live::router())
}
