//! The signed-in person a console page is for. Pages are for people only: without a session the
//! browser is sent to the sign-in page (htmx requests get `HX-Redirect`), and a bearer token does
//! not open the console.

use axum::{
    extract::FromRequestParts,
    http::{HeaderMap, request::Parts},
    response::{IntoResponse, Redirect, Response},
};
use tower_sessions::Session;

use crate::{
    accounts::caller::{CSRF_KEY, Caller, SessionUser, session_unavailable},
    http::error::Error,
    state::AppState,
};

pub struct Viewer {
    pub caller: Caller,
    pub user: SessionUser,
    /// Sent back in `X-CSRF-Token` by every htmx request the page makes.
    pub csrf: String,
}

/// Whether the request came from htmx (a partial update rather than a page load).
pub fn is_htmx(headers: &HeaderMap) -> bool {
    headers.contains_key("hx-request")
}

/// Where a visitor who is not signed in is sent, remembering the page they asked for.
pub fn to_sign_in(parts_path: &str, htmx: bool) -> Response {
    let next = if parts_path.starts_with("/console/") && !parts_path.starts_with("/console/sign-") {
        format!(
            "/console/sign-in?next={}",
            percent_encoding::utf8_percent_encode(parts_path, percent_encoding::NON_ALPHANUMERIC)
        )
    } else {
        "/console/sign-in".to_owned()
    };
    if htmx {
        ([("hx-redirect", next)], "").into_response()
    } else {
        Redirect::to(&next).into_response()
    }
}

impl FromRequestParts<AppState> for Viewer {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Response> {
        let htmx = is_htmx(&parts.headers);
        let caller = match Caller::from_request_parts(parts, state).await {
            Ok(caller) => caller,
            Err(Error::Unauthorized) => return Err(to_sign_in(parts.uri.path(), htmx)),
            Err(error) => return Err(error.into_response()),
        };
        let Some(user) = caller.user().cloned() else {
            return Err(to_sign_in(parts.uri.path(), htmx));
        };
        let session = parts
            .extensions
            .get::<Session>()
            .cloned()
            .ok_or_else(|| to_sign_in(parts.uri.path(), htmx))?;
        let csrf: String = session
            .get(CSRF_KEY)
            .await
            .map_err(|error| session_unavailable(error).into_response())?
            .unwrap_or_default();
        Ok(Viewer { caller, user, csrf })
    }
}
