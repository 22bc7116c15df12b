//! The console (`/console`): every route in an authorization matrix (anonymous, an outsider, and
//! each role of the organization), the headers every page carries, the static assets, and the
//! flows a browser runs through forms (sign-in, a key shown once). The pages in a real browser
//! are tested by sdks/e2e/console.e2e.mjs.

use reqwest::{Method, StatusCode, redirect::Policy};
use serde_json::json;

use crate::{
    accounts::{Person, email},
    harness::TestServer,
};

/// Who may call a console route: anyone, any signed-in person, or members from this role up.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Least {
    Anyone,
    SignedIn,
    Viewer,
    Developer,
    Admin,
}

const ROLES: [(&str, Least); 4] = [
    ("viewer", Least::Viewer),
    ("developer", Least::Developer),
    ("admin", Least::Admin),
    ("owner", Least::Admin),
];

/// Every console route: method, path, who may call it, and the form body a POST sends. A route
/// whose path holds a sub-resource id (`{key_id}`…) gets a random one: allowed callers may see
/// 404 for it, refused ones must see 403 first.
const ROUTES: &[(&str, &str, Least, &str)] = &[
    ("GET", "/console", Least::SignedIn, ""),
    ("GET", "/console/", Least::SignedIn, ""),
    ("GET", "/console/static/{file}", Least::Anyone, ""),
    ("GET", "/console/sign-in", Least::Anyone, ""),
    (
        "POST",
        "/console/sign-in",
        Least::Anyone,
        "email=a%40example.com&password=x",
    ),
    ("POST", "/console/sign-out", Least::SignedIn, ""),
    ("POST", "/console/sign-out-everywhere", Least::SignedIn, ""),
    ("GET", "/console/invitations/accept", Least::Anyone, ""),
    (
        "POST",
        "/console/invitations/accept",
        Least::Anyone,
        "token=ginv_x&password=x",
    ),
    ("POST", "/console/orgs", Least::SignedIn, "name=matrix"),
    ("GET", "/console/orgs/{organization_id}", Least::Viewer, ""),
    (
        "POST",
        "/console/orgs/{organization_id}",
        Least::Admin,
        "name=renamed",
    ),
    (
        "POST",
        "/console/orgs/{organization_id}/projects",
        Least::Admin,
        "name=matrix",
    ),
    (
        "GET",
        "/console/orgs/{organization_id}/members",
        Least::Viewer,
        "",
    ),
    (
        "POST",
        "/console/orgs/{organization_id}/invitations",
        Least::Admin,
        "email=m%40example.com&role=viewer",
    ),
    (
        "POST",
        "/console/orgs/{organization_id}/invitations/{invitation_id}/revoke",
        Least::Admin,
        "",
    ),
    (
        "POST",
        "/console/orgs/{organization_id}/members/{user_id}/role",
        Least::Admin,
        "role=viewer",
    ),
    (
        "POST",
        "/console/orgs/{organization_id}/members/{user_id}/remove",
        Least::Admin,
        "",
    ),
    (
        "GET",
        "/console/orgs/{organization_id}/tokens",
        Least::Viewer,
        "",
    ),
    (
        "POST",
        "/console/orgs/{organization_id}/tokens",
        Least::Admin,
        "name=matrix&scope=read",
    ),
    (
        "POST",
        "/console/orgs/{organization_id}/tokens/{token_id}/revoke",
        Least::Admin,
        "",
    ),
    (
        "GET",
        "/console/orgs/{organization_id}/audit",
        Least::Admin,
        "",
    ),
    ("GET", "/console/projects/{project_id}", Least::Viewer, ""),
    (
        "POST",
        "/console/projects/{project_id}",
        Least::Admin,
        "name=matrix",
    ),
    (
        "GET",
        "/console/projects/{project_id}/keys",
        Least::Viewer,
        "",
    ),
    (
        "POST",
        "/console/projects/{project_id}/keys",
        Least::Developer,
        "name=matrix&type=secret",
    ),
    (
        "POST",
        "/console/projects/{project_id}/keys/{key_id}/roll",
        Least::Developer,
        "overlap=0",
    ),
    (
        "POST",
        "/console/projects/{project_id}/keys/{key_id}/revoke",
        Least::Developer,
        "",
    ),
    (
        "POST",
        "/console/projects/{project_id}/keys/{key_id}/origins",
        Least::Developer,
        "origins=",
    ),
    (
        "GET",
        "/console/projects/{project_id}/events",
        Least::Viewer,
        "",
    ),
    (
        "GET",
        "/console/projects/{project_id}/events/{event_id}",
        Least::Viewer,
        "",
    ),
    (
        "GET",
        "/console/projects/{project_id}/live",
        Least::Viewer,
        "",
    ),
    (
        "GET",
        "/console/projects/{project_id}/live/stream",
        Least::Viewer,
        "",
    ),
    (
        "GET",
        "/console/projects/{project_id}/users",
        Least::Viewer,
        "",
    ),
    (
        "GET",
        "/console/projects/{project_id}/users/{user_id}",
        Least::Viewer,
        "",
    ),
    (
        "GET",
        "/console/projects/{project_id}/leaderboards",
        Least::Viewer,
        "",
    ),
    (
        "GET",
        "/console/projects/{project_id}/webhooks",
        Least::Viewer,
        "",
    ),
    (
        "POST",
        "/console/projects/{project_id}/webhooks",
        Least::Developer,
        "url=https%3A%2F%2Fhooks.example%2Fx&event=points.changed",
    ),
    (
        "GET",
        "/console/projects/{project_id}/webhooks/{webhook_id}",
        Least::Viewer,
        "",
    ),
    (
        "POST",
        "/console/projects/{project_id}/webhooks/{webhook_id}/delete",
        Least::Developer,
        "",
    ),
    (
        "POST",
        "/console/projects/{project_id}/webhooks/{webhook_id}/deliveries/{delivery_id}/retry",
        Least::Developer,
        "",
    ),
    (
        "GET",
        "/console/projects/{project_id}/rules",
        Least::Viewer,
        "",
    ),
    (
        "POST",
        "/console/projects/{project_id}/rules",
        Least::Developer,
        "document=%7B%7D&action=preview",
    ),
    (
        "GET",
        "/console/projects/{project_id}/rules/versions/{version}",
        Least::Viewer,
        "",
    ),
    (
        "GET",
        "/console/projects/{project_id}/rules/versions/{version}/progress",
        Least::Viewer,
        "",
    ),
    (
        "GET",
        "/console/projects/{project_id}/analytics",
        Least::Viewer,
        "",
    ),
    (
        "GET",
        "/console/projects/{project_id}/analytics/trend",
        Least::Viewer,
        "",
    ),
    (
        "POST",
        "/console/projects/{project_id}/analytics/funnel",
        Least::Viewer,
        "steps=a%2Cb",
    ),
    (
        "GET",
        "/console/projects/{project_id}/analytics/retention",
        Least::Viewer,
        "?startEvent=a&returnEvent=b",
    ),
];

/// A client that shows redirects instead of following them.
fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(Policy::none())
        .build()
        .unwrap()
}

fn fill(path: &str, organization_id: &str, project_id: &str) -> String {
    let random = || uuid::Uuid::new_v4().to_string();
    path.replace("{organization_id}", organization_id)
        .replace("{project_id}", project_id)
        .replace("{invitation_id}", &random())
        .replace("{user_id}", &random())
        .replace("{token_id}", &random())
        .replace("{key_id}", &random())
        .replace("{event_id}", &random())
        .replace("{webhook_id}", &random())
        .replace("{delivery_id}", "msg_unknown")
        .replace("{version}", "999")
        .replace("{file}", "nothing.js")
}

fn has_sub_resource(path: &str) -> bool {
    [
        "{invitation_id}",
        "{user_id}",
        "{token_id}",
        "{key_id}",
        "{event_id}",
        "{webhook_id}",
        "{version}",
        "{file}",
    ]
    .iter()
    .any(|id| path.contains(id))
        && !path.ends_with("/users/{user_id}")
}

async fn call(
    server: &TestServer,
    person: Option<&Person>,
    method: &str,
    path: &str,
    body: &str,
) -> reqwest::Response {
    let (path, body) = match body.strip_prefix('?') {
        Some(query) => (format!("{path}?{query}"), ""),
        None => (path.to_owned(), body),
    };
    let method = Method::from_bytes(method.as_bytes()).unwrap();
    let mut request = client()
        .request(method.clone(), server.url(&path))
        .header("origin", &server.base_url);
    if let Some(person) = person {
        request = request.header("cookie", &person.cookie);
    }
    if method == Method::POST {
        request = request
            .header("content-type", "application/x-www-form-urlencoded")
            .body(body.to_owned());
    }
    request.send().await.unwrap()
}

#[tokio::test]
async fn every_console_route_is_in_the_matrix() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src/console");
    let mut found = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_none_or(|e| e != "rs") {
            continue;
        }
        let text = std::fs::read_to_string(&path).unwrap();
        // `.route(` is followed by the path literal on the same or the next line.
        for piece in text.split(".route(").skip(1) {
            let literal = piece.split('"').nth(1).unwrap().to_owned();
            let methods = piece.split(")\n").next().unwrap_or_default();
            for (method, marker) in [("GET", "get("), ("POST", "post(")] {
                if methods.contains(marker) {
                    found.push((method, literal.clone()));
                }
            }
        }
    }
    for (method, path) in &found {
        assert!(
            ROUTES.iter().any(|(m, p, _, _)| m == method && p == path),
            "{method} {path} is served but not in the console's authorization matrix"
        );
    }
    for (method, path, _, _) in ROUTES {
        assert!(
            found.iter().any(|(m, p)| m == method && p == path),
            "{method} {path} is in the matrix but not served"
        );
    }
}

#[tokio::test]
async fn the_console_authorizes_every_route_like_the_api() {
    let server = TestServer::start().await;
    let organization = server.create_organization().await;
    let org_id = organization["id"].as_str().unwrap().to_owned();
    let project = server.create_project_in(&org_id, "console matrix").await;
    let project_id = project["id"].as_str().unwrap().to_owned();
    let other = server.create_organization().await;
    let outsider = server
        .join(other["id"].as_str().unwrap(), &email("outsider"), "owner")
        .await;
    let mut members = Vec::new();
    for (role, level) in ROLES {
        members.push((role, level, server.join(&org_id, &email(role), role).await));
    }

    for (method, template, least, body) in ROUTES {
        let path = fill(template, &org_id, &project_id);
        let what = format!("{method} {template}");

        let anonymous = call(&server, None, method, &path, body).await;
        if *least == Least::Anyone {
            assert!(
                anonymous.status() != StatusCode::FORBIDDEN
                    && !anonymous.status().is_server_error(),
                "{what} anonymous: {}",
                anonymous.status()
            );
        } else {
            assert_eq!(
                anonymous.status(),
                StatusCode::SEE_OTHER,
                "{what} anonymous"
            );
            let to = anonymous.headers()["location"].to_str().unwrap();
            assert!(
                to.starts_with("/console/sign-in"),
                "{what} anonymous → {to}"
            );
        }

        if *least >= Least::Viewer {
            let response = call(&server, Some(&outsider), method, &path, body).await;
            assert_eq!(response.status(), StatusCode::NOT_FOUND, "{what} outsider");
            assert!(
                response.headers()["content-type"]
                    .to_str()
                    .unwrap()
                    .starts_with("text/html"),
                "{what}: the refusal is a page"
            );
        }

        for (role, level, person) in &members {
            if template.ends_with("sign-out") || template.ends_with("sign-out-everywhere") {
                continue; // would end the member's session for the rest of the matrix
            }
            let response = call(&server, Some(person), method, &path, body).await;
            let status = response.status();
            assert!(!status.is_server_error(), "{what} as {role}: {status}");
            if *least >= Least::Viewer && level < least {
                assert_eq!(status, StatusCode::FORBIDDEN, "{what} as {role}");
            } else {
                assert_ne!(status, StatusCode::FORBIDDEN, "{what} as {role}");
                if !has_sub_resource(template) && *least >= Least::Viewer {
                    assert_ne!(status, StatusCode::NOT_FOUND, "{what} as {role}");
                }
            }
        }
    }
}

#[tokio::test]
async fn pages_carry_a_strict_policy_and_assets_are_cached_by_content() {
    let server = TestServer::start().await;
    let page = client()
        .get(server.url("/console/sign-in"))
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), StatusCode::OK);
    let headers = page.headers().clone();
    let csp = headers["content-security-policy"].to_str().unwrap();
    assert!(
        csp.contains("default-src 'none'") && csp.contains("script-src 'self'"),
        "{csp}"
    );
    assert!(
        !csp.contains("unsafe-inline") && !csp.contains("unsafe-eval"),
        "{csp}"
    );
    assert_eq!(headers["x-frame-options"], "DENY");
    assert_eq!(headers["cache-control"], "no-store");
    let html = page.text().await.unwrap();
    assert!(
        !html.contains("<script>") && !html.contains(" style="),
        "no inline script or style"
    );
    let css = html
        .split("rel=\"stylesheet\" href=\"")
        .nth(1)
        .unwrap()
        .split('"')
        .next()
        .unwrap()
        .to_owned();
    assert!(css.starts_with("/console/static/console."), "{css}");
    let asset = client().get(server.url(&css)).send().await.unwrap();
    assert_eq!(asset.status(), StatusCode::OK);
    assert_eq!(
        asset.headers()["cache-control"],
        "public, max-age=31536000, immutable"
    );
    assert!(
        asset.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/css")
    );
    // Another content hash is another file: none.
    let stale = client()
        .get(server.url("/console/static/console.000000000000.css"))
        .send()
        .await
        .unwrap();
    assert_eq!(stale.status(), StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn a_person_signs_in_through_the_form_and_only_to_console_addresses() {
    let server = TestServer::start().await;
    let organization = server.create_organization().await;
    let org_id = organization["id"].as_str().unwrap();
    let address = email("form");
    server.join(org_id, &address, "owner").await;
    let form = |password: &str, next: &str| {
        format!(
            "email={}&password={}&next={}",
            urlencode(&address),
            urlencode(password),
            urlencode(next)
        )
    };
    let wrong = call(
        &server,
        None,
        "POST",
        "/console/sign-in",
        &form("wrong password!", "/console"),
    )
    .await;
    assert_eq!(wrong.status(), StatusCode::UNAUTHORIZED);
    assert!(
        wrong
            .text()
            .await
            .unwrap()
            .contains("Wrong email or password")
    );

    let signed_in = call(
        &server,
        None,
        "POST",
        "/console/sign-in",
        &form(crate::accounts::PASSWORD, "//evil.example/"),
    )
    .await;
    assert_eq!(signed_in.status(), StatusCode::SEE_OTHER);
    assert_eq!(signed_in.headers()["location"], "/console");
    let cookie = crate::accounts::session_cookie(&signed_in).unwrap().0;
    let home = client()
        .get(server.url(&format!("/console/orgs/{org_id}")))
        .header("cookie", &cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(home.status(), StatusCode::OK);
    assert!(home.text().await.unwrap().contains(&address));

    // From another origin, sign-in is refused (no session planted by another site).
    let foreign = client()
        .post(server.url("/console/sign-in"))
        .header("origin", "https://evil.example")
        .header("content-type", "application/x-www-form-urlencoded")
        .body(form(crate::accounts::PASSWORD, "/console"))
        .send()
        .await
        .unwrap();
    assert!(crate::accounts::session_cookie(&foreign).is_none());
    assert_ne!(foreign.status(), StatusCode::SEE_OTHER);
}

#[tokio::test]
async fn a_created_key_is_shown_once_and_a_change_without_the_origin_or_token_is_refused() {
    let server = TestServer::start().await;
    let organization = server.create_organization().await;
    let org_id = organization["id"].as_str().unwrap();
    let owner = server.join(org_id, &email("keys"), "owner").await;
    let project = server.create_project_in(org_id, "keys page").await;
    let project_id = project["id"].as_str().unwrap();
    let path = format!("/console/projects/{project_id}/keys");
    let created = call(
        &server,
        Some(&owner),
        "POST",
        &path,
        "name=Backend&type=secret",
    )
    .await;
    assert_eq!(created.status(), StatusCode::OK);
    assert_eq!(created.headers()["cache-control"], "no-store");
    let html = created.text().await.unwrap();
    let key = html
        .split("id=\"revealed-key\">")
        .nth(1)
        .unwrap()
        .split('<')
        .next()
        .unwrap()
        .to_owned();
    assert!(key.starts_with("sk_live_") && key.len() > 40, "{key}");
    // The key works, and no page shows it again.
    let tracked = server
        .track(&key, json!({ "event": "page_view", "userId": "u1" }))
        .await;
    assert_eq!(tracked.status(), StatusCode::ACCEPTED);
    let page = call(&server, Some(&owner), "GET", &path, "").await;
    let html = page.text().await.unwrap();
    assert!(html.contains("Backend") && !html.contains(&key));

    // Cookie-borne changes need the deployment's origin or the session's CSRF token.
    let forged = client()
        .post(server.url(&path))
        .header("cookie", &owner.cookie)
        .header("origin", "https://evil.example")
        .header("content-type", "application/x-www-form-urlencoded")
        .body("name=Forged&type=secret")
        .send()
        .await
        .unwrap();
    assert_eq!(forged.status(), StatusCode::FORBIDDEN);
    let csrf = html
        .split("X-CSRF-Token&#34;:&#34;")
        .nth(1)
        .unwrap()
        .split('&')
        .next()
        .unwrap()
        .to_owned();
    let with_token = client()
        .post(server.url(&path))
        .header("cookie", &owner.cookie)
        .header("x-csrf-token", csrf)
        .header("hx-request", "true")
        .header("content-type", "application/x-www-form-urlencoded")
        .body("name=Scripted&type=publishable")
        .send()
        .await
        .unwrap();
    assert_eq!(with_token.status(), StatusCode::OK);
    assert!(with_token.text().await.unwrap().contains("pk_live_"));
}

#[tokio::test]
async fn a_refused_htmx_change_lands_in_the_form_that_sent_it() {
    let server = TestServer::start().await;
    let organization = server.create_organization().await;
    let org_id = organization["id"].as_str().unwrap();
    let owner = server.join(org_id, &email("errors"), "owner").await;
    let response = client()
        .post(server.url(&format!("/console/orgs/{org_id}/projects")))
        .header("cookie", &owner.cookie)
        .header("origin", &server.base_url)
        .header("hx-request", "true")
        .header("hx-trigger", "new-project")
        .header("content-type", "application/x-www-form-urlencoded")
        .body("name=")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    assert_eq!(response.headers()["hx-retarget"], "#new-project-errors");
    assert_eq!(response.headers()["x-error-code"], "invalid_request");
    let html = response.text().await.unwrap();
    assert!(
        html.contains("class=\"error\"") && html.contains("name"),
        "{html}"
    );
}

fn urlencode(text: &str) -> String {
    url::form_urlencoded::byte_serialize(text.as_bytes()).collect()
}

#[tokio::test]
async fn an_ingest_only_instance_serves_neither_the_console_nor_management() {
    let mut settings = crate::harness::settings();
    settings.accounts.management = false;
    let server = TestServer::with_settings(settings).await;
    for path in ["/console", "/console/sign-in", "/v1/organizations"] {
        let response = client().get(server.url(path)).send().await.unwrap();
        assert_eq!(response.status(), StatusCode::NOT_FOUND, "{path}");
    }
    let refused = server
        .admin(Method::POST, "/v1/organizations")
        .json(&json!({ "name": "nope" }))
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), StatusCode::NOT_FOUND);
    // Ingestion and health answer as usual.
    let health = client().get(server.url("/healthz")).send().await.unwrap();
    assert_eq!(health.status(), StatusCode::OK);
    let tracked = server
        .track(
            "sk_live_unknown",
            json!({ "event": "page_view", "userId": "u1" }),
        )
        .await;
    assert_eq!(tracked.status(), StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn a_viewers_pages_offer_no_controls_their_role_cannot_use() {
    let server = TestServer::start().await;
    let organization = server.create_organization().await;
    let org_id = organization["id"].as_str().unwrap();
    let project = server.create_project_in(org_id, "viewer pages").await;
    let project_id = project["id"].as_str().unwrap();
    server.create_key(project_id, "secret").await;
    let viewer = server.join(org_id, &email("viewer"), "viewer").await;
    let owner = server.join(org_id, &email("owner"), "owner").await;
    // (page, a control only a writer may use)
    let pages = [
        (format!("/console/orgs/{org_id}"), "id=\"new-project\""),
        (format!("/console/orgs/{org_id}"), "id=\"rename-org\""),
        (format!("/console/orgs/{org_id}/members"), "id=\"invite\""),
        (format!("/console/orgs/{org_id}/members"), "id=\"role-"),
        (format!("/console/orgs/{org_id}/tokens"), "id=\"new-token\""),
        (
            format!("/console/projects/{project_id}/keys"),
            "id=\"new-key\"",
        ),
        (
            format!("/console/projects/{project_id}/keys"),
            "id=\"revoke-",
        ),
        (
            format!("/console/projects/{project_id}/webhooks"),
            "id=\"new-webhook\"",
        ),
        (
            format!("/console/projects/{project_id}/rules"),
            "value=\"publish\"",
        ),
        (format!("/console/projects/{project_id}"), "Save settings"),
    ];
    for (path, control) in &pages {
        let as_viewer = call(&server, Some(&viewer), "GET", path, "").await;
        assert_eq!(as_viewer.status(), StatusCode::OK, "{path}");
        let html = as_viewer.text().await.unwrap();
        assert!(!html.contains(control), "a viewer sees {control} on {path}");
        // The owner does, so the check above looks for something real.
        let as_owner = call(&server, Some(&owner), "GET", path, "").await;
        assert!(
            as_owner.text().await.unwrap().contains(control),
            "{control} on {path}"
        );
    }
}
