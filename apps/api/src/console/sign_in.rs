//! Signing in and out, and accepting an invitation: plain HTML forms (they work before any
//! script loads), answered by the same code as `POST /v1/sessions` and
//! `POST /v1/invitations/accept`, origin check and sign-in limits included.
//! Who may call: anyone (sign-in, invitation); a signed-in person (sign-out).

use askama::Template;
use axum::{
    Form,
    extract::{Query, State},
    http::{HeaderMap, StatusCode},
    response::{Html, IntoResponse, Redirect, Response},
};
use serde::Deserialize;

use crate::{
    accounts::{
        caller::Caller,
        invitations::{self, AcceptInvitation},
        sessions::{self, CurrentCookie, SignIn},
    },
    console::{assets::ASSETS, viewer::is_htmx},
    http::{
        error::{Error, Result},
        extract::{Json, Peer},
    },
    state::AppState,
};

#[derive(Template)]
#[template(path = "sign_in.html")]
struct SignInPage {
    css: &'static str,
    next: String,
    email: String,
    problem: Option<String>,
}

#[derive(Template)]
#[template(path = "accept_invitation.html")]
struct AcceptPage {
    css: &'static str,
    token: String,
    problem: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
pub struct NextQuery {
    next: Option<String>,
}

#[derive(Debug, Deserialize)]
pub struct SignInForm {
    email: String,
    password: String,
    #[serde(default)]
    next: String,
}

/// Only a console address is followed after sign-in: never another site (`//evil`, `https:`).
fn safe_next(next: &str) -> &str {
    let ok = next.starts_with("/console")
        && !next.starts_with("//")
        && !next.contains('\\')
        && !next.chars().any(char::is_control);
    if ok { next } else { "/console" }
}

fn page(template: &impl Template, status: StatusCode) -> Result<Response> {
    Ok((status, Html(template.render()?)).into_response())
}

/// Why a sign-in or invitation was refused, as the person should read it.
fn refusal(error: &Error) -> Option<(StatusCode, String)> {
    match error {
        Error::Unauthorized => Some((
            StatusCode::UNAUTHORIZED,
            "Wrong email or password.".to_owned(),
        )),
        Error::RateLimited { .. } => Some((
            StatusCode::TOO_MANY_REQUESTS,
            "Too many failed attempts: wait a while before trying again.".to_owned(),
        )),
        Error::InvalidRequest { message, .. } | Error::Forbidden { message, .. } => {
            Some((StatusCode::UNPROCESSABLE_ENTITY, message.clone()))
        }
        Error::NotFound(_) => Some((
            StatusCode::NOT_FOUND,
            "This invitation is not valid any more: it was used, revoked or has expired."
                .to_owned(),
        )),
        _ => None,
    }
}

pub async fn sign_in_page(Query(query): Query<NextQuery>) -> Result<Response> {
    page(
        &SignInPage {
            css: &ASSETS.css,
            next: safe_next(query.next.as_deref().unwrap_or("/console")).to_owned(),
            email: String::new(),
            problem: None,
        },
        StatusCode::OK,
    )
}

pub async fn sign_in(
    State(state): State<AppState>,
    cookie: CurrentCookie,
    headers: HeaderMap,
    peer: Peer,
    Form(form): Form<SignInForm>,
) -> Result<Response> {
    let next = safe_next(&form.next).to_owned();
    let body = SignIn {
        email: form.email.clone(),
        password: form.password,
    };
    match sessions::sign_in(State(state), cookie, headers, peer, Json(body)).await {
        Ok(_) => Ok(Redirect::to(&next).into_response()),
        Err(error) => match refusal(&error) {
            Some((status, problem)) => page(
                &SignInPage {
                    css: &ASSETS.css,
                    next,
                    email: form.email,
                    problem: Some(problem),
                },
                status,
            ),
            None => Err(error),
        },
    }
}

/// Signs out of this session (`DELETE /v1/sessions/current`).
pub async fn sign_out(
    caller: Caller,
    cookie: CurrentCookie,
    headers: HeaderMap,
) -> Result<Response> {
    sessions::sign_out(caller, cookie).await?;
    Ok(signed_out(&headers))
}

/// Signs out of every session of this person (`DELETE /v1/sessions`).
pub async fn sign_out_everywhere(
    caller: Caller,
    State(state): State<AppState>,
    cookie: CurrentCookie,
    headers: HeaderMap,
) -> Result<Response> {
    sessions::sign_out_everywhere(caller, State(state), cookie).await?;
    Ok(signed_out(&headers))
}

fn signed_out(headers: &HeaderMap) -> Response {
    if is_htmx(headers) {
        ([("hx-redirect", "/console/sign-in")], "").into_response()
    } else {
        Redirect::to("/console/sign-in").into_response()
    }
}

#[derive(Debug, Deserialize)]
pub struct TokenQuery {
    #[serde(default)]
    token: String,
}

#[derive(Debug, Deserialize)]
pub struct AcceptForm {
    token: String,
    password: String,
    #[serde(default)]
    name: String,
}

pub async fn accept_page(Query(query): Query<TokenQuery>) -> Result<Response> {
    page(
        &AcceptPage {
            css: &ASSETS.css,
            token: query.token,
            problem: None,
        },
        StatusCode::OK,
    )
}

pub async fn accept(
    State(state): State<AppState>,
    cookie: CurrentCookie,
    headers: HeaderMap,
    peer: Peer,
    Form(form): Form<AcceptForm>,
) -> Result<Response> {
    let name = Some(form.name.trim().to_owned()).filter(|name| !name.is_empty());
    let body = AcceptInvitation {
        token: form.token.clone(),
        password: form.password,
        name,
    };
    match invitations::accept_invitation(State(state), cookie, headers, peer, Json(body)).await {
        Ok((_, joined)) => {
            let first = joined.0.organizations.first().map(|org| org.id);
            let to =
                first.map_or_else(|| "/console".to_owned(), |id| format!("/console/orgs/{id}"));
            Ok(Redirect::to(&to).into_response())
        }
        Err(error) => match refusal(&error) {
            Some((status, problem)) => page(
                &AcceptPage {
                    css: &ASSETS.css,
                    token: form.token,
                    problem: Some(problem),
                },
                status,
            ),
            None => Err(error),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::safe_next;

    #[test]
    fn only_console_addresses_are_followed_after_sign_in() {
        assert_eq!(safe_next("/console/orgs/1"), "/console/orgs/1");
        for hostile in [
            "//evil.example",
            "https://evil.example",
            "/consolex\\..",
            "/api",
            "",
        ] {
            assert_eq!(safe_next(hostile), "/console", "{hostile}");
        }
    }
}
