//! The console's answers when something is refused or fails. Handlers return the JSON API's
//! errors unchanged (they call the same code); this layer turns them into what a browser shows:
//! a page for a page load, or, for an htmx request, a message placed in the form that sent it
//! (`#<form id>-errors`, each field's problem named). It also sets the headers every console
//! response carries: a strict Content-Security-Policy and no caching of pages (a key shown once
//! must not come back from a cache).

use askama::Template;
use axum::{
    body::to_bytes,
    extract::Request,
    http::{HeaderValue, StatusCode, header},
    middleware::Next,
    response::{Html, IntoResponse, Response},
};
use serde::Deserialize;

use crate::console::viewer::{is_htmx, to_sign_in};

pub const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; \
     style-src 'self'; img-src 'self' data:; connect-src 'self'; font-src 'self'; \
     form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

/// The largest error body read back (errors are small; anything else passes untouched).
const MAX_ERROR_BODY: usize = 64 * 1024;

#[derive(Debug, Deserialize)]
struct ErrorDoc {
    error: ErrorInner,
}

#[derive(Debug, Deserialize)]
struct ErrorInner {
    code: String,
    message: String,
    #[serde(default)]
    details: Option<serde_json::Value>,
}

pub struct Problem {
    pub field: String,
    pub message: String,
}

#[derive(Template)]
#[template(path = "error_page.html")]
struct ErrorPage {
    status: u16,
    heading: &'static str,
    message: String,
    css: &'static str,
}

#[derive(Template)]
#[template(path = "error_fragment.html")]
struct ErrorFragment {
    message: String,
    problems: Vec<Problem>,
}

/// Each problem an error names: validation errors carry `details.errors` (`path` or `field`)
/// or `details.field`.
fn problems(details: Option<&serde_json::Value>) -> Vec<Problem> {
    let Some(details) = details else {
        return Vec::new();
    };
    let mut found = Vec::new();
    if let Some(errors) = details.get("errors").and_then(|e| e.as_array()) {
        for error in errors {
            let field = error
                .get("path")
                .or_else(|| error.get("field"))
                .and_then(|f| f.as_str())
                .unwrap_or_default();
            let message = error
                .get("message")
                .and_then(|m| m.as_str())
                .unwrap_or_default();
            found.push(Problem {
                field: field.to_owned(),
                message: message.to_owned(),
            });
        }
    }
    found
}

fn heading(status: StatusCode) -> &'static str {
    match status.as_u16() {
        403 => "Not allowed",
        404 => "Not found",
        400 | 409 | 413 | 415 | 422 => "That did not work",
        429 => "Too many requests",
        _ if status.is_server_error() => "Something went wrong",
        _ => "That did not work",
    }
}

fn secure(mut response: Response) -> Response {
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CONTENT_SECURITY_POLICY),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("same-origin"),
    );
    headers
        .entry(header::CACHE_CONTROL)
        .or_insert(HeaderValue::from_static("no-store"));
    response
}

pub async fn console_responses(request: Request, next: Next) -> Response {
    let htmx = is_htmx(request.headers());
    let trigger = request
        .headers()
        .get("hx-trigger")
        .and_then(|value| value.to_str().ok())
        .filter(|id| {
            id.len() <= 64
                && id
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        })
        .map(str::to_owned);
    let path = request.uri().path().to_owned();
    let response = next.run(request).await;
    let status = response.status();
    let is_json = response
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|value| value.as_bytes().starts_with(b"application/json"));
    if !(status.is_client_error() || status.is_server_error()) || !is_json {
        return secure(response);
    }
    let retry_after = response.headers().get(header::RETRY_AFTER).cloned();
    let body = to_bytes(response.into_body(), MAX_ERROR_BODY)
        .await
        .unwrap_or_default();
    let doc: Option<ErrorDoc> = serde_json::from_slice(&body).ok();
    let (code, message, details) = match doc {
        Some(doc) => (doc.error.code, doc.error.message, doc.error.details),
        None => (String::new(), "internal server error".to_owned(), None),
    };
    if status == StatusCode::UNAUTHORIZED {
        return secure(to_sign_in(&path, htmx));
    }
    let mut answer = if htmx {
        let fragment = ErrorFragment {
            message,
            problems: problems(details.as_ref()),
        };
        let html = fragment.render().unwrap_or_default();
        // htmx swaps 4xx answers (see the page's htmx-config) into the sending form's error
        // slot, or the page's when the sender has no id.
        let target =
            trigger.map_or_else(|| "#page-errors".to_owned(), |id| format!("#{id}-errors"));
        let mut response = (status, Html(html)).into_response();
        if let Ok(target) = HeaderValue::from_str(&target) {
            response.headers_mut().insert("hx-retarget", target);
        }
        response
            .headers_mut()
            .insert("hx-reswap", HeaderValue::from_static("innerHTML"));
        response
    } else {
        let page = ErrorPage {
            status: status.as_u16(),
            heading: heading(status),
            message,
            css: crate::console::assets::ASSETS.css.as_str(),
        };
        (status, Html(page.render().unwrap_or_default())).into_response()
    };
    if let Some(retry_after) = retry_after {
        answer
            .headers_mut()
            .insert(header::RETRY_AFTER, retry_after);
    }
    answer.headers_mut().insert(
        "x-error-code",
        HeaderValue::from_str(&code).unwrap_or(HeaderValue::from_static("")),
    );
    secure(answer)
}
