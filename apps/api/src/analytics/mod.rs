//! Analytics over a project's events, readable with the project's secret key or by a member,
//! token or operator who names the project ([`reader::ProjectReader`]): trends from the hourly
//! rollups the worker keeps; funnels, retention, breakdowns and the live numbers from the raw
//! events, each query bounded by a statement timeout ([`bounded`]).

mod bounded;
pub(crate) mod buckets;
mod funnel_matching;
pub(crate) mod funnels;
pub(crate) mod live;
mod reader;
pub(crate) mod retention;
pub(crate) mod trends;

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
