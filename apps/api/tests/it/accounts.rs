//! People, sessions, invitations, members, management tokens and the audit log, against the real
//! Postgres and Redis; and the authorization matrix of every management route.

use std::{collections::BTreeMap, time::Duration};

use reqwest::{Method, Response, StatusCode};
use serde_json::{Value, json};

use crate::harness::{TestServer, expect_error, expect_json, settings};

pub const PASSWORD: &str = "a long enough passphrase";

/// The `gamify_session=…` pair of a response's Set-Cookie, and the whole header.
pub fn session_cookie(response: &Response) -> Option<(String, String)> {
    response
        .headers()
        .get_all("set-cookie")
        .iter()
        .filter_map(|value| value.to_str().ok())
        .find(|value| value.starts_with("gamify_session="))
        .map(|header| {
            let pair = header.split(';').next().unwrap_or_default().to_owned();
            (pair, header.to_owned())
        })
}

/// A signed-in browser: its cookie, and the server's origin on every change.
#[derive(Debug, Clone)]
pub struct Person {
    pub user_id: String,
    pub email: String,
    pub cookie: String,
}

impl TestServer {
    pub fn as_person(
        &self,
        person: &Person,
        method: Method,
        path: &str,
    ) -> reqwest::RequestBuilder {
        self.request(method, path)
            .header("cookie", &person.cookie)
            .header("origin", &self.base_url)
    }

    /// Invites `email` into the organization as `role` (with the admin token) and accepts.
    pub async fn join(&self, organization_id: &str, email: &str, role: &str) -> Person {
        let invitation = expect_json(
            self.admin(
                Method::POST,
                &format!("/v1/organizations/{organization_id}/invitations"),
            )
            .json(&json!({ "email": email, "role": role }))
            .send()
            .await
            .unwrap(),
            StatusCode::CREATED,
        )
        .await;
        let url = invitation["url"].as_str().unwrap();
        let token = url.split("token=").nth(1).unwrap().to_owned();
        let response = self
            .request(Method::POST, "/v1/invitations/accept")
            .json(&json!({ "token": token, "password": PASSWORD, "name": "Test Person" }))
            .send()
            .await
            .unwrap();
        let (cookie, _) = session_cookie(&response).expect("a session cookie");
        let body = expect_json(response, StatusCode::CREATED).await;
        Person {
            user_id: body["user"]["id"].as_str().unwrap().to_owned(),
            email: email.to_owned(),
            cookie,
        }
    }

    pub async fn sign_in(&self, email: &str, password: &str) -> Response {
        self.request(Method::POST, "/v1/sessions")
            .json(&json!({ "email": email, "password": password }))
            .send()
            .await
            .unwrap()
    }

    /// A fresh session of `person`.
    pub async fn session_of(&self, person: &Person) -> Person {
        let response = self.sign_in(&person.email, PASSWORD).await;
        let (cookie, _) = session_cookie(&response).expect("a session cookie");
        assert_eq!(response.status(), StatusCode::CREATED);
        Person {
            cookie,
            ..person.clone()
        }
    }

    pub async fn create_token(
        &self,
        person: &Person,
        organization_id: &str,
        scopes: &[&str],
        expires: Option<u64>,
    ) -> Value {
        let mut body = json!({ "name": "test token", "scopes": scopes });
        if let Some(seconds) = expires {
            body["expiresInSeconds"] = json!(seconds);
        }
        expect_json(
            self.as_person(
                person,
                Method::POST,
                &format!("/v1/organizations/{organization_id}/tokens"),
            )
            .json(&body)
            .send()
            .await
            .unwrap(),
            StatusCode::CREATED,
        )
        .await
    }
}

pub fn email(label: &str) -> String {
    format!("{label}-{}@example.com", uuid::Uuid::new_v4().simple())
}

#[tokio::test]
async fn an_invited_person_signs_in_and_sees_their_organizations() {
    let server = TestServer::start().await;
    let organization = server.create_organization().await;
    let org_id = organization["id"].as_str().unwrap();
    let address = email("owner");
    let owner = server.join(org_id, &address, "owner").await;

    let me = expect_json(
        server
            .as_person(&owner, Method::GET, "/v1/sessions/current")
            .send()
            .await
            .unwrap(),
        StatusCode::OK,
    )
    .await;
    assert_eq!(me["user"]["email"], address);
    assert_eq!(me["organizations"][0]["id"], org_id);
    assert_eq!(me["organizations"][0]["role"], "owner");
    assert!(me["csrfToken"].as_str().unwrap().len() >= 32);

    let listed = expect_json(
        server
            .as_person(&owner, Method::GET, "/v1/organizations")
            .send()
            .await
            .unwrap(),
        StatusCode::OK,
    )
    .await;
    assert_eq!(listed["data"].as_array().unwrap().len(), 1);
    assert_eq!(listed["data"][0]["role"], "owner");

    // A person may create another organization, and owns it.
    let created = expect_json(
        server
            .as_person(&owner, Method::POST, "/v1/organizations")
            .json(&json!({ "name": "second" }))
            .send()
            .await
            .unwrap(),
        StatusCode::CREATED,
    )
    .await;
    assert_eq!(created["role"], "owner");

    // Signing in again works with the same password, emails are case-insensitive.
    let response = server.sign_in(&address.to_uppercase(), PASSWORD).await;
    let body = expect_json(response, StatusCode::CREATED).await;
    assert_eq!(body["organizations"].as_array().unwrap().len(), 2);
}

#[tokio::test]
async fn an_invitation_works_once_and_not_after_revocation() {
    let server = TestServer::start().await;
    let organization = server.create_organization().await;
    let org_id = organization["id"].as_str().unwrap();
    let invite = |address: String| {
        let server = &server;
        async move {
            expect_json(
                server
                    .admin(
                        Method::POST,
                        &format!("/v1/organizations/{org_id}/invitations"),
                    )
                    .json(&json!({ "email": address, "role": "viewer" }))
                    .send()
                    .await
                    .unwrap(),
                StatusCode::CREATED,
            )
            .await
        }
    };
    let first = invite(email("first")).await;
    let token = first["url"]
        .as_str()
        .unwrap()
        .split("token=")
        .nth(1)
        .unwrap()
        .to_owned();
    assert!(token.starts_with("ginv_"));
    // Pending invitations are listed without their link.
    let pending = expect_json(
        server
            .admin(
                Method::GET,
                &format!("/v1/organizations/{org_id}/invitations"),
            )
            .send()
            .await
            .unwrap(),
        StatusCode::OK,
    )
    .await;
    assert_eq!(pending["data"][0]["id"], first["id"]);
    assert!(!pending.to_string().contains(&token));

    let accept = |token: String, password: &'static str| {
        let server = &server;
        async move {
            server
                .request(Method::POST, "/v1/invitations/accept")
                .json(&json!({ "token": token, "password": password }))
                .send()
                .await
                .unwrap()
        }
    };
    // A weak password is refused and the invitation stays usable.
    expect_error(
        accept(token.clone(), "password1").await,
        StatusCode::BAD_REQUEST,
        "invalid_request",
    )
    .await;
    expect_error(
        accept(token.clone(), "1234567890").await,
        StatusCode::BAD_REQUEST,
        "invalid_request",
    )
    .await;
    expect_json(accept(token.clone(), PASSWORD).await, StatusCode::CREATED).await;
    expect_error(
        accept(token, PASSWORD).await,
        StatusCode::NOT_FOUND,
        "not_found",
    )
    .await;

    let second = invite(email("second")).await;
    let token = second["url"]
        .as_str()
        .unwrap()
        .split("token=")
        .nth(1)
        .unwrap()
        .to_owned();
    let response = server
        .admin(
            Method::DELETE,
            &format!(
                "/v1/organizations/{org_id}/invitations/{}",
                second["id"].as_str().unwrap()
            ),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::NO_CONTENT);
    expect_error(
        accept(token, PASSWORD).await,
        StatusCode::NOT_FOUND,
        "not_found",
    )
    .await;
}

#[tokio::test]
async fn an_existing_account_joins_another_organization_only_with_its_password() {
    let server = TestServer::start().await;
    let first = server.create_organization().await;
    let second = server.create_organization().await;
    let address = email("two-orgs");
    server
        .join(first["id"].as_str().unwrap(), &address, "viewer")
        .await;
    let invitation = expect_json(
        server
            .admin(
                Method::POST,
                &format!(
                    "/v1/organizations/{}/invitations",
                    second["id"].as_str().unwrap()
                ),
            )
            .json(&json!({ "email": address, "role": "admin" }))
            .send()
            .await
            .unwrap(),
        StatusCode::CREATED,
    )
    .await;
    let token = invitation["url"]
        .as_str()
        .unwrap()
        .split("token=")
        .nth(1)
        .unwrap()
        .to_owned();
    let response = server
        .request(Method::POST, "/v1/invitations/accept")
        .json(&json!({ "token": token, "password": "not the password at all" }))
        .send()
        .await
        .unwrap();
    expect_error(response, StatusCode::UNAUTHORIZED, "unauthorized").await;
    let response = server
        .request(Method::POST, "/v1/invitations/accept")
        .json(&json!({ "token": token, "password": PASSWORD }))
        .send()
        .await
        .unwrap();
    let body = expect_json(response, StatusCode::CREATED).await;
    let roles: BTreeMap<String, String> = body["organizations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| {
            (
                o["id"].as_str().unwrap().to_owned(),
                o["role"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert_eq!(roles[first["id"].as_str().unwrap()], "viewer");
    assert_eq!(roles[second["id"].as_str().unwrap()], "admin");
}

#[tokio::test]
async fn a_wrong_email_and_a_wrong_password_get_the_same_answer() {
    let server = TestServer::start().await;
    let organization = server.create_organization().await;
    let address = email("same-answer");
    server
        .join(organization["id"].as_str().unwrap(), &address, "viewer")
        .await;
    let wrong_password = server.sign_in(&address, "not the password at all").await;
    assert!(session_cookie(&wrong_password).is_none());
    let wrong_password =
        expect_error(wrong_password, StatusCode::UNAUTHORIZED, "unauthorized").await;
    let wrong_email = server
        .sign_in(&email("nobody"), "not the password at all")
        .await;
    let wrong_email = expect_error(wrong_email, StatusCode::UNAUTHORIZED, "unauthorized").await;
    assert_eq!(wrong_password, wrong_email);
}

#[tokio::test]
async fn failed_sign_ins_are_limited_per_account_and_audited_once() {
    let mut settings = settings();
    settings.accounts.sign_in_failures_per_account = 3;
    let server = TestServer::with_settings(settings).await;
    let organization = server.create_organization().await;
    let org_id = organization["id"].as_str().unwrap();
    let address = email("limited");
    server.join(org_id, &address, "viewer").await;
    for _ in 0..3 {
        let response = server.sign_in(&address, "not the password at all").await;
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    }
    // The count lives for the window (15 minutes) from the first failure, not for ever.
    use sha2::Digest;
    let redis = redis::Client::open(
        std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into()),
    )
    .unwrap();
    let mut connection = redis.get_multiplexed_async_connection().await.unwrap();
    let counter = format!(
        "gamify:sign_in:account:{}",
        hex::encode(sha2::Sha256::digest(address.as_bytes()))
    );
    let ttl: i64 = redis::cmd("TTL")
        .arg(&counter)
        .query_async(&mut connection)
        .await
        .unwrap();
    assert!((1..=900).contains(&ttl), "ttl {ttl}");
    let count: u32 = redis::cmd("GET")
        .arg(&counter)
        .query_async(&mut connection)
        .await
        .unwrap();
    assert_eq!(count, 3);
    // Now even the right password is refused until the window passes.
    let response = server.sign_in(&address, PASSWORD).await;
    assert!(response.headers().get("retry-after").is_some());
    expect_error(
        response,
        StatusCode::TOO_MANY_REQUESTS,
        "sign_in_rate_limited",
    )
    .await;

    let log = expect_json(
        server
            .admin(
                Method::GET,
                &format!("/v1/organizations/{org_id}/audit-log"),
            )
            .send()
            .await
            .unwrap(),
        StatusCode::OK,
    )
    .await;
    let failures: Vec<&Value> = log["data"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|entry| entry["action"] == "sign_in.failures_exceeded")
        .collect();
    assert_eq!(failures.len(), 1, "{log}");
    assert_eq!(failures[0]["actor"]["type"], "anonymous");
    assert!(!log.to_string().contains("not the password"));
}

#[tokio::test]
async fn failed_sign_ins_are_limited_per_address_across_accounts() {
    let mut settings = settings();
    settings.accounts.sign_in_failures_per_address = 2;
    settings.trusted_proxy_hops = 1;
    let server = TestServer::with_settings(settings).await;
    let organization = server.create_organization().await;
    let address = email("victim");
    server
        .join(organization["id"].as_str().unwrap(), &address, "viewer")
        .await;
    // An address of this test's own (behind one trusted proxy), so no other test shares it.
    let client_ip = format!("10.{}.{}.{}", rand_octet(), rand_octet(), rand_octet());
    let attempt = |who: String, password: &'static str| {
        let server = &server;
        let client_ip = client_ip.clone();
        async move {
            server
                .request(Method::POST, "/v1/sessions")
                .header("x-forwarded-for", client_ip)
                .json(&json!({ "email": who, "password": password }))
                .send()
                .await
                .unwrap()
        }
    };
    for _ in 0..2 {
        let response = attempt(email("guess"), "not the password at all").await;
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    }
    // Other accounts, even the right password, from that address: refused.
    let response = attempt(address.clone(), PASSWORD).await;
    expect_error(
        response,
        StatusCode::TOO_MANY_REQUESTS,
        "sign_in_rate_limited",
    )
    .await;
    // From another address the account signs in.
    let response = server
        .request(Method::POST, "/v1/sessions")
        .header("x-forwarded-for", "192.0.2.77")
        .json(&json!({ "email": address, "password": PASSWORD }))
        .send()
        .await
        .unwrap();
    expect_json(response, StatusCode::CREATED).await;
}

fn rand_octet() -> u8 {
    uuid::Uuid::new_v4().as_bytes()[0]
}

#[tokio::test]
async fn signing_in_gives_a_new_session_id_with_safe_cookie_flags() {
    let server = TestServer::start().await;
    let organization = server.create_organization().await;
    let person = server
        .join(
            organization["id"].as_str().unwrap(),
            &email("cookie"),
            "viewer",
        )
        .await;
    let response = server
        .request(Method::POST, "/v1/sessions")
        .header("cookie", &person.cookie)
        .json(&json!({ "email": person.email, "password": PASSWORD }))
        .send()
        .await
        .unwrap();
    let (cookie, header) = session_cookie(&response).unwrap();
    assert_eq!(response.status(), StatusCode::CREATED);
    // Fixation: whatever session the browser came with, signing in issues another id.
    assert_ne!(cookie, person.cookie);
    let lower = header.to_ascii_lowercase();
    assert!(lower.contains("httponly"), "{header}");
    assert!(lower.contains("samesite=lax"), "{header}");
    assert!(lower.contains("path=/"), "{header}");
    // A plain-http deployment (this test server's public URL) does not mark it Secure.
    assert!(!lower.contains("secure"), "{header}");
    // The session id is not stored: only its hash.
    use sha2::Digest;
    let value = cookie.split_once('=').unwrap().1.to_owned();
    let db = crate::harness::connect().await;
    let txn = db
        .accounts(&gamify_db::AccountScope::user(
            person.user_id.parse().unwrap(),
        ))
        .await
        .unwrap();
    use gamify_db::sea_orm::ConnectionTrait;
    let rows = txn
        .query_all(gamify_db::sea_orm::Statement::from_sql_and_values(
            txn.get_database_backend(),
            "SELECT id_hash, data::text AS data FROM sessions WHERE user_id = $1",
            [person.user_id.parse::<uuid::Uuid>().unwrap().into()],
        ))
        .await
        .unwrap();
    let hashes: Vec<Vec<u8>> = rows
        .iter()
        .map(|r| r.try_get("", "id_hash").unwrap())
        .collect();
    assert!(hashes.contains(&sha2::Sha256::digest(value.as_bytes()).to_vec()));
    for row in &rows {
        let data: String = row.try_get("", "data").unwrap();
        assert!(!data.contains(&value));
        let hash: Vec<u8> = row.try_get("", "id_hash").unwrap();
        assert_ne!(hash, value.as_bytes());
    }
}

#[tokio::test]
async fn an_https_deployment_marks_the_session_cookie_secure() {
    let mut settings = settings();
    settings.accounts.public_url = "https://gamify.example".parse().unwrap();
    let server = TestServer::with_settings(settings).await;
    let organization = server.create_organization().await;
    let address = email("secure");
    let invitation = expect_json(
        server
            .admin(
                Method::POST,
                &format!(
                    "/v1/organizations/{}/invitations",
                    organization["id"].as_str().unwrap()
                ),
            )
            .json(&json!({ "email": address, "role": "viewer" }))
            .send()
            .await
            .unwrap(),
        StatusCode::CREATED,
    )
    .await;
    assert!(
        invitation["url"]
            .as_str()
            .unwrap()
            .starts_with("https://gamify.example/console/")
    );
    let token = invitation["url"]
        .as_str()
        .unwrap()
        .split("token=")
        .nth(1)
        .unwrap()
        .to_owned();
    let response = server
        .request(Method::POST, "/v1/invitations/accept")
        .json(&json!({ "token": token, "password": PASSWORD }))
        .send()
        .await
        .unwrap();
    let (_, header) = session_cookie(&response).unwrap();
    assert!(header.to_ascii_lowercase().contains("secure"), "{header}");
    // Sign-in from another origin is refused (no login CSRF).
    let response = server
        .request(Method::POST, "/v1/sessions")
        .header("origin", "https://evil.example")
        .json(&json!({ "email": address, "password": PASSWORD }))
        .send()
        .await
        .unwrap();
    expect_error(response, StatusCode::FORBIDDEN, "csrf_rejected").await;
}

#[tokio::test]
async fn cookie_changes_need_the_deployment_origin_or_the_csrf_token() {
    let server = TestServer::start().await;
    let organization = server.create_organization().await;
    let org_id = organization["id"].as_str().unwrap();
    let owner = server.join(org_id, &email("csrf"), "owner").await;
    let body = json!({ "organizationId": org_id, "name": "csrf project" });
    // No Origin, no token.
    let response = server
        .request(Method::POST, "/v1/projects")
        .header("cookie", &owner.cookie)
        .json(&body)
        .send()
        .await
        .unwrap();
    expect_error(response, StatusCode::FORBIDDEN, "csrf_rejected").await;
    // Another site's origin.
    let response = server
        .request(Method::POST, "/v1/projects")
        .header("cookie", &owner.cookie)
        .header("origin", "https://evil.example")
        .json(&body)
        .send()
        .await
        .unwrap();
    expect_error(response, StatusCode::FORBIDDEN, "csrf_rejected").await;
    // The session's CSRF token.
    let me = expect_json(
        server
            .request(Method::GET, "/v1/sessions/current")
            .header("cookie", &owner.cookie)
            .send()
            .await
            .unwrap(),
        StatusCode::OK,
    )
    .await;
    let response = server
        .request(Method::POST, "/v1/projects")
        .header("cookie", &owner.cookie)
        .header("x-csrf-token", me["csrfToken"].as_str().unwrap())
        .json(&body)
        .send()
        .await
        .unwrap();
    expect_json(response, StatusCode::CREATED).await;
    // Bearer requests are not cookie-bound: no Origin needed.
    let response = server
        .admin(Method::POST, "/v1/projects")
        .json(&json!({ "organizationId": org_id, "name": "bearer project" }))
        .send()
        .await
        .unwrap();
    expect_json(response, StatusCode::CREATED).await;
}

#[tokio::test]
async fn signing_out_ends_one_session_and_everywhere_ends_all() {
    let server = TestServer::start().await;
    let organization = server.create_organization().await;
    let person = server
        .join(
            organization["id"].as_str().unwrap(),
            &email("sign-out"),
            "viewer",
        )
        .await;
    let second = server.session_of(&person).await;
    let third = server.session_of(&person).await;
    let listed = expect_json(
        server
            .as_person(&second, Method::GET, "/v1/sessions")
            .send()
            .await
            .unwrap(),
        StatusCode::OK,
    )
    .await;
    let sessions = listed["data"].as_array().unwrap();
    assert_eq!(sessions.len(), 3);
    assert_eq!(sessions.iter().filter(|s| s["current"] == true).count(), 1);

    let current = |who: &Person| {
        let server = &server;
        let who = who.clone();
        async move {
            server
                .as_person(&who, Method::GET, "/v1/sessions/current")
                .send()
                .await
                .unwrap()
                .status()
        }
    };
    // Sign out of one: that cookie stops working, the others do not.
    let response = server
        .as_person(&person, Method::DELETE, "/v1/sessions/current")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::NO_CONTENT);
    assert_eq!(current(&person).await, StatusCode::UNAUTHORIZED);
    assert_eq!(current(&second).await, StatusCode::OK);

    // Revoke one by its listed id.
    let third_id = expect_json(
        server
            .as_person(&third, Method::GET, "/v1/sessions")
            .send()
            .await
            .unwrap(),
        StatusCode::OK,
    )
    .await["data"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["current"] == true)
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let response = server
        .as_person(&second, Method::DELETE, &format!("/v1/sessions/{third_id}"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::NO_CONTENT);
    assert_eq!(current(&third).await, StatusCode::UNAUTHORIZED);

    let fourth = server.session_of(&person).await;
    let response = server
        .as_person(&second, Method::DELETE, "/v1/sessions")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::NO_CONTENT);
    assert_eq!(current(&second).await, StatusCode::UNAUTHORIZED);
    assert_eq!(current(&fourth).await, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn an_idle_session_expires() {
    let mut settings = settings();
    settings.accounts.session_idle_timeout = Duration::from_secs(1);
    let server = TestServer::with_settings(settings).await;
    let organization = server.create_organization().await;
    let person = server
        .join(
            organization["id"].as_str().unwrap(),
            &email("idle"),
            "viewer",
        )
        .await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let status = server
            .as_person(&person, Method::GET, "/v1/organizations")
            .send()
            .await
            .unwrap()
            .status();
        if status == StatusCode::UNAUTHORIZED {
            break;
        }
        assert_eq!(status, StatusCode::OK);
        assert!(
            tokio::time::Instant::now() < deadline,
            "the session never expired"
        );
        // Idle means idle: wait out the timeout instead of using the session.
        tokio::time::sleep(Duration::from_millis(1100)).await;
    }
}

#[tokio::test]
async fn the_last_owner_can_be_neither_demoted_nor_removed() {
    let server = TestServer::start().await;
    let organization = server.create_organization().await;
    let org_id = organization["id"].as_str().unwrap();
    let owner = server.join(org_id, &email("owner"), "owner").await;
    let admin = server.join(org_id, &email("admin"), "admin").await;
    let path = format!("/v1/organizations/{org_id}/members/{}", owner.user_id);
    let response = server
        .as_person(&owner, Method::PATCH, &path)
        .json(&json!({ "role": "admin" }))
        .send()
        .await
        .unwrap();
    expect_error(response, StatusCode::CONFLICT, "conflict").await;
    let response = server
        .as_person(&owner, Method::DELETE, &path)
        .send()
        .await
        .unwrap();
    expect_error(response, StatusCode::CONFLICT, "conflict").await;
    // An admin cannot touch an owner at all, nor make anyone owner.
    let response = server
        .as_person(&admin, Method::DELETE, &path)
        .send()
        .await
        .unwrap();
    expect_error(response, StatusCode::FORBIDDEN, "forbidden").await;
    let response = server
        .as_person(
            &admin,
            Method::PATCH,
            &format!("/v1/organizations/{org_id}/members/{}", admin.user_id),
        )
        .json(&json!({ "role": "owner" }))
        .send()
        .await
        .unwrap();
    expect_error(response, StatusCode::FORBIDDEN, "forbidden").await;
    // With a second owner, the first may step down.
    let response = server
        .as_person(
            &owner,
            Method::PATCH,
            &format!("/v1/organizations/{org_id}/members/{}", admin.user_id),
        )
        .json(&json!({ "role": "owner" }))
        .send()
        .await
        .unwrap();
    expect_json(response, StatusCode::OK).await;
    let response = server
        .as_person(&owner, Method::PATCH, &path)
        .json(&json!({ "role": "viewer" }))
        .send()
        .await
        .unwrap();
    let member = expect_json(response, StatusCode::OK).await;
    assert_eq!(member["role"], "viewer");
    let members = expect_json(
        server
            .as_person(
                &owner,
                Method::GET,
                &format!("/v1/organizations/{org_id}/members"),
            )
            .send()
            .await
            .unwrap(),
        StatusCode::OK,
    )
    .await;
    assert_eq!(members["data"].as_array().unwrap().len(), 2);
}

#[tokio::test]
async fn a_token_is_shown_once_works_within_its_scope_and_stops_when_revoked() {
    let server = TestServer::start().await;
    let organization = server.create_organization().await;
    let org_id = organization["id"].as_str().unwrap();
    let admin = server.join(org_id, &email("admin"), "admin").await;
    let created = server
        .create_token(
            &admin,
            org_id,
            &["projects:write", "keys:write", "read"],
            None,
        )
        .await;
    let token = created["token"].as_str().unwrap().to_owned();
    assert!(token.starts_with("gmt_"));
    assert!(token.starts_with(created["prefix"].as_str().unwrap()));
    let listed = expect_json(
        server
            .as_person(
                &admin,
                Method::GET,
                &format!("/v1/organizations/{org_id}/tokens"),
            )
            .send()
            .await
            .unwrap(),
        StatusCode::OK,
    )
    .await;
    assert!(
        !listed.to_string().contains(&token),
        "the token is shown once only"
    );
    assert_eq!(listed["data"][0]["lastUsedAt"], Value::Null);

    // The README's flow: a project and its keys with the token, no ADMIN_TOKEN.
    let project = expect_json(
        server
            .request(Method::POST, "/v1/projects")
            .bearer_auth(&token)
            .json(&json!({ "organizationId": org_id, "name": "token project" }))
            .send()
            .await
            .unwrap(),
        StatusCode::CREATED,
    )
    .await;
    let key = expect_json(
        server
            .request(
                Method::POST,
                &format!("/v1/projects/{}/api-keys", project["id"].as_str().unwrap()),
            )
            .bearer_auth(&token)
            .json(&json!({ "name": "server", "type": "secret" }))
            .send()
            .await
            .unwrap(),
        StatusCode::CREATED,
    )
    .await;
    assert!(key["key"].as_str().unwrap().starts_with("sk_live_"));
    // Outside its scopes: rules.
    let response = server
        .request(
            Method::PUT,
            &format!("/v1/projects/{}/rules", project["id"].as_str().unwrap()),
        )
        .bearer_auth(&token)
        .json(&json!({ "rules": {}, "apply": "from_now" }))
        .send()
        .await
        .unwrap();
    expect_error(response, StatusCode::FORBIDDEN, "forbidden").await;
    // A token never mints tokens.
    let response = server
        .request(Method::POST, &format!("/v1/organizations/{org_id}/tokens"))
        .bearer_auth(&token)
        .json(&json!({ "name": "child", "scopes": ["read"] }))
        .send()
        .await
        .unwrap();
    expect_error(response, StatusCode::FORBIDDEN, "forbidden").await;

    let listed = expect_json(
        server
            .as_person(
                &admin,
                Method::GET,
                &format!("/v1/organizations/{org_id}/tokens"),
            )
            .send()
            .await
            .unwrap(),
        StatusCode::OK,
    )
    .await;
    assert!(listed["data"][0]["lastUsedAt"].is_string());

    let response = server
        .as_person(
            &admin,
            Method::DELETE,
            &format!(
                "/v1/organizations/{org_id}/tokens/{}",
                created["id"].as_str().unwrap()
            ),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::NO_CONTENT);
    // Refused at once: tokens are checked in Postgres on every request, on every gateway.
    let other_gateway = TestServer::start().await;
    for gateway in [&server, &other_gateway] {
        let response = gateway
            .request(Method::GET, &format!("/v1/organizations/{org_id}"))
            .bearer_auth(&token)
            .send()
            .await
            .unwrap();
        expect_error(response, StatusCode::UNAUTHORIZED, "unauthorized").await;
    }
}

#[tokio::test]
async fn an_expired_token_is_refused() {
    let server = TestServer::start().await;
    let organization = server.create_organization().await;
    let org_id = organization["id"].as_str().unwrap();
    let admin = server.join(org_id, &email("admin"), "admin").await;
    let created = server
        .create_token(&admin, org_id, &["read"], Some(1))
        .await;
    let token = created["token"].as_str().unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let status = server
            .request(Method::GET, &format!("/v1/organizations/{org_id}"))
            .bearer_auth(token)
            .send()
            .await
            .unwrap()
            .status();
        if status == StatusCode::UNAUTHORIZED {
            break;
        }
        assert_eq!(status, StatusCode::OK);
        assert!(
            tokio::time::Instant::now() < deadline,
            "the token never expired"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test]
async fn the_audit_log_records_who_changed_what_and_pages_newest_first() {
    let server = TestServer::start().await;
    let organization = server.create_organization().await;
    let org_id = organization["id"].as_str().unwrap();
    let admin = server.join(org_id, &email("admin"), "admin").await;
    let viewer = server.join(org_id, &email("viewer"), "viewer").await;
    let token = server
        .create_token(&admin, org_id, &["projects:write", "keys:write"], None)
        .await;
    let project = expect_json(
        server
            .request(Method::POST, "/v1/projects")
            .bearer_auth(token["token"].as_str().unwrap())
            .json(&json!({ "organizationId": org_id, "name": "audited" }))
            .send()
            .await
            .unwrap(),
        StatusCode::CREATED,
    )
    .await;
    let project_id = project["id"].as_str().unwrap();
    let key = expect_json(
        server
            .as_person(
                &admin,
                Method::POST,
                &format!("/v1/projects/{project_id}/api-keys"),
            )
            .json(&json!({ "name": "web", "type": "publishable" }))
            .send()
            .await
            .unwrap(),
        StatusCode::CREATED,
    )
    .await;
    let response = server
        .as_person(
            &admin,
            Method::DELETE,
            &format!(
                "/v1/projects/{project_id}/api-keys/{}",
                key["id"].as_str().unwrap()
            ),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::NO_CONTENT);
    for _ in 0..55 {
        let response = server
            .admin(Method::PATCH, &format!("/v1/projects/{project_id}"))
            .json(&json!({ "description": "again" }))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK);
    }

    // Viewers may not read it; admins may.
    let response = server
        .as_person(
            &viewer,
            Method::GET,
            &format!("/v1/organizations/{org_id}/audit-log"),
        )
        .send()
        .await
        .unwrap();
    expect_error(response, StatusCode::FORBIDDEN, "forbidden").await;
    let mut entries = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let path = match &cursor {
            Some(cursor) => format!("/v1/organizations/{org_id}/audit-log?cursor={cursor}"),
            None => format!("/v1/organizations/{org_id}/audit-log"),
        };
        let page = expect_json(
            server
                .as_person(&admin, Method::GET, &path)
                .send()
                .await
                .unwrap(),
            StatusCode::OK,
        )
        .await;
        entries.extend(page["data"].as_array().unwrap().iter().cloned());
        match page["nextCursor"].as_str() {
            Some(next) => cursor = Some(next.to_owned()),
            None => break,
        }
    }
    let actions: Vec<&str> = entries
        .iter()
        .map(|e| e["action"].as_str().unwrap())
        .collect();
    // Newest first; every entry once.
    let ats: Vec<&str> = entries.iter().map(|e| e["at"].as_str().unwrap()).collect();
    let mut sorted = ats.clone();
    sorted.sort();
    sorted.reverse();
    assert_eq!(ats.len(), sorted.len());
    let ids: std::collections::HashSet<&str> =
        entries.iter().map(|e| e["id"].as_str().unwrap()).collect();
    assert_eq!(ids.len(), entries.len());
    for expected in [
        "member.invited",
        "member.joined",
        "token.created",
        "project.created",
        "key.created",
        "key.revoked",
        "project.updated",
    ] {
        assert!(
            actions.contains(&expected),
            "{expected} missing from {actions:?}"
        );
    }
    let by = |action: &str| entries.iter().find(|e| e["action"] == action).unwrap();
    assert_eq!(by("project.created")["actor"]["type"], "token");
    assert_eq!(by("project.created")["actor"]["label"], token["prefix"]);
    assert_eq!(by("key.created")["actor"]["type"], "user");
    assert_eq!(by("key.created")["actor"]["label"], admin.email);
    assert_eq!(by("key.created")["ip"], "127.0.0.1");
    assert_eq!(by("project.updated")["actor"]["type"], "operator");
    // Never a secret.
    let text = serde_json::to_string(&entries).unwrap();
    assert!(!text.contains(token["token"].as_str().unwrap()));
    assert!(!text.contains(key["key"].as_str().unwrap()));
}

/// Who calls a route in the matrix.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Who {
    Operator,
    Owner,
    Admin,
    Developer,
    Viewer,
    TokenWithScope,
    TokenWithoutScope,
    OtherOwner,
    OtherToken,
    Nobody,
    ExpiredToken,
    RevokedToken,
    SignedOut,
}

const EVERYONE: [Who; 13] = [
    Who::Operator,
    Who::Owner,
    Who::Admin,
    Who::Developer,
    Who::Viewer,
    Who::TokenWithScope,
    Who::TokenWithoutScope,
    Who::OtherOwner,
    Who::OtherToken,
    Who::Nobody,
    Who::ExpiredToken,
    Who::RevokedToken,
    Who::SignedOut,
];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Expect {
    Allowed,
    Refused(StatusCode),
}

/// What the document says a route needs: the least role of a session (`None`: no session),
/// whether any token may, and the scope a token needs.
#[derive(Debug)]
struct Rule {
    operator: bool,
    session_role: Option<Option<String>>,
    token_scope: Option<Option<String>>,
    /// Acts on one organization (in its path or body); else on the caller's own account.
    scoped: bool,
}

fn rule_of(operation: &Value, path: &str) -> Option<Rule> {
    let mut rule = Rule {
        operator: false,
        session_role: None,
        token_scope: None,
        scoped: path.contains("{organization_id}")
            || path.contains("{project_id}")
            || path == "/v1/projects"
            || takes_project_param(operation),
    };
    let mut any = false;
    for requirement in operation["security"].as_array()? {
        for (scheme, scopes) in requirement.as_object()? {
            let first = scopes
                .as_array()
                .and_then(|s| s.first())
                .and_then(|s| s.as_str())
                .map(str::to_owned);
            match scheme.as_str() {
                "adminToken" => rule.operator = true,
                "session" => rule.session_role = Some(first),
                "orgToken" => rule.token_scope = Some(first),
                _ => continue,
            }
            any = true;
        }
    }
    any.then_some(rule)
}

/// Routes that name their project in `?projectId=` (analytics, for management credentials).
fn takes_project_param(operation: &Value) -> bool {
    operation["parameters"].as_array().is_some_and(|params| {
        params
            .iter()
            .any(|p| p["name"] == "projectId" && p["in"] == "query")
    })
}

fn rank(role: &str) -> u8 {
    match role {
        "viewer" => 0,
        "developer" => 1,
        "admin" => 2,
        "owner" => 3,
        other => panic!("unknown role {other}"),
    }
}

fn expected(rule: &Rule, who: Who) -> Expect {
    use Expect::*;
    let unauthorized = Refused(StatusCode::UNAUTHORIZED);
    let forbidden = Refused(StatusCode::FORBIDDEN);
    let not_found = Refused(StatusCode::NOT_FOUND);
    let member = |role: &str| match &rule.session_role {
        None => unauthorized,
        Some(None) => Allowed,
        Some(Some(least)) if rank(role) >= rank(least) => Allowed,
        Some(Some(_)) => forbidden,
    };
    // A token on a route without the token scheme: refused as unauthenticated where only a
    // session will do (a person's own account), as forbidden where the operator may act.
    let token_refused = if rule.operator {
        forbidden
    } else {
        unauthorized
    };
    match who {
        Who::Operator if rule.operator => Allowed,
        Who::Operator => unauthorized,
        Who::Owner => member("owner"),
        Who::Admin => member("admin"),
        Who::Developer => member("developer"),
        Who::Viewer => member("viewer"),
        Who::TokenWithScope | Who::TokenWithoutScope => match &rule.token_scope {
            None => token_refused,
            Some(None) => Allowed,
            Some(Some(_)) if who == Who::TokenWithScope => Allowed,
            Some(Some(_)) => forbidden,
        },
        Who::OtherOwner if !rule.scoped => member("owner"),
        Who::OtherOwner => match &rule.session_role {
            None => unauthorized,
            Some(_) => not_found,
        },
        Who::OtherToken if !rule.scoped => match &rule.token_scope {
            None => token_refused,
            Some(_) => Allowed,
        },
        // Another organization's token is told nothing about this one, whatever its scopes.
        Who::OtherToken => not_found,
        Who::Nobody | Who::ExpiredToken | Who::RevokedToken | Who::SignedOut => unauthorized,
    }
}

/// A body each route with one accepts; a route missing here fails the matrix, so a new route
/// cannot go without an authorization rule being checked.
fn body_for(method: &str, path: &str, org_id: &str) -> Option<Value> {
    let unique = uuid::Uuid::new_v4().simple().to_string();
    let rules = json!({
        "metrics": [{ "key": "purchases", "event": "purchase", "aggregate": "count" }],
        "achievements": [{ "key": "first", "name": "First", "metric": "purchases", "threshold": 1 }]
    });
    Some(match (method, path) {
        ("post", "/v1/organizations") => json!({ "name": format!("matrix {unique}") }),
        ("post", "/v1/projects") => {
            json!({ "organizationId": org_id, "name": format!("p {unique}") })
        }
        ("patch", "/v1/projects/{project_id}") => json!({ "description": "matrix" }),
        ("patch", "/v1/organizations/{organization_id}") => {
            json!({ "name": format!("renamed {unique}") })
        }
        ("post", "/v1/projects/{project_id}/api-keys") => json!({ "name": "k", "type": "secret" }),
        ("patch", "/v1/projects/{project_id}/api-keys/{key_id}") => json!({ "allowedOrigins": [] }),
        ("post", "/v1/projects/{project_id}/api-keys/{key_id}/roll") => {
            json!({ "expiresInSeconds": 60 })
        }
        ("put", "/v1/projects/{project_id}/rules") => {
            json!({ "rules": rules, "apply": "from_now" })
        }
        ("post", "/v1/projects/{project_id}/rules/preview") => json!({ "rules": rules }),
        ("post", "/v1/analytics/funnels") => json!({ "steps": ["signup", "purchase"] }),
        ("post", "/v1/projects/{project_id}/webhooks") => {
            json!({ "url": "https://example.com/hook", "events": ["points.changed"] })
        }
        ("post", "/v1/organizations/{organization_id}/invitations") => {
            json!({ "email": format!("{unique}@example.com"), "role": "viewer" })
        }
        ("patch", "/v1/organizations/{organization_id}/members/{user_id}") => {
            json!({ "role": "developer" })
        }
        ("post", "/v1/organizations/{organization_id}/tokens") => {
            json!({ "name": "t", "scopes": ["read"] })
        }
        _ => return None,
    })
}

#[tokio::test]
async fn every_management_route_answers_each_kind_of_caller_as_its_rule_says() {
    let server = TestServer::start().await;
    let a = server.create_organization().await;
    let a_id = a["id"].as_str().unwrap().to_owned();
    let b = server.create_organization().await;
    let b_id = b["id"].as_str().unwrap().to_owned();
    let owner = server.join(&a_id, &email("owner"), "owner").await;
    let admin = server.join(&a_id, &email("admin"), "admin").await;
    let developer = server.join(&a_id, &email("developer"), "developer").await;
    let viewer = server.join(&a_id, &email("viewer"), "viewer").await;
    let other_owner = server.join(&b_id, &email("other"), "owner").await;
    let scopes = [
        "read",
        "projects:write",
        "keys:write",
        "rules:write",
        "webhooks:write",
        "members:write",
        "audit:read",
    ];
    let mut only = BTreeMap::new();
    let mut all_but = BTreeMap::new();
    for scope in scopes {
        only.insert(
            scope,
            server.create_token(&owner, &a_id, &[scope], None).await["token"]
                .as_str()
                .unwrap()
                .to_owned(),
        );
        let rest: Vec<&str> = scopes.iter().copied().filter(|s| *s != scope).collect();
        all_but.insert(
            scope,
            server.create_token(&owner, &a_id, &rest, None).await["token"]
                .as_str()
                .unwrap()
                .to_owned(),
        );
    }
    let any_token = only["read"].clone();
    let other_token = server
        .create_token(&other_owner, &b_id, &scopes, None)
        .await["token"]
        .as_str()
        .unwrap()
        .to_owned();
    let expiring = server.create_token(&owner, &a_id, &scopes, Some(1)).await["token"]
        .as_str()
        .unwrap()
        .to_owned();
    let revoked = server.create_token(&owner, &a_id, &scopes, None).await;
    let response = server
        .as_person(
            &owner,
            Method::DELETE,
            &format!(
                "/v1/organizations/{a_id}/tokens/{}",
                revoked["id"].as_str().unwrap()
            ),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::NO_CONTENT);
    let revoked = revoked["token"].as_str().unwrap().to_owned();
    let signed_out = server.session_of(&owner).await;
    let response = server
        .as_person(&signed_out, Method::DELETE, "/v1/sessions/current")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::NO_CONTENT);

    // What the routes act on, all in organization A.
    let project = expect_json(
        server
            .admin(Method::POST, "/v1/projects")
            .json(&json!({ "organizationId": a_id, "name": "matrix" }))
            .send()
            .await
            .unwrap(),
        StatusCode::CREATED,
    )
    .await;
    let project_id = project["id"].as_str().unwrap().to_owned();
    let key = server.create_key(&project_id, "publishable").await;
    let webhook = expect_json(
        server
            .admin(Method::POST, &format!("/v1/projects/{project_id}/webhooks"))
            .json(&json!({ "url": "https://example.com/hook", "events": ["points.changed"] }))
            .send()
            .await
            .unwrap(),
        StatusCode::CREATED,
    )
    .await;
    let rules = body_for("put", "/v1/projects/{project_id}/rules", &a_id).unwrap();
    expect_json(
        server
            .admin(Method::PUT, &format!("/v1/projects/{project_id}/rules"))
            .json(&rules)
            .send()
            .await
            .unwrap(),
        StatusCode::CREATED,
    )
    .await;
    let target = server.join(&a_id, &email("target"), "viewer").await;
    let target_token = server.create_token(&owner, &a_id, &["read"], None).await;
    let invitation = expect_json(
        server
            .admin(
                Method::POST,
                &format!("/v1/organizations/{a_id}/invitations"),
            )
            .json(&json!({ "email": email("pending"), "role": "viewer" }))
            .send()
            .await
            .unwrap(),
        StatusCode::CREATED,
    )
    .await;
    // The one-second token has expired by now, or soon: wait for it.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while server
        .request(Method::GET, "/v1/organizations")
        .bearer_auth(&expiring)
        .send()
        .await
        .unwrap()
        .status()
        != StatusCode::UNAUTHORIZED
    {
        assert!(tokio::time::Instant::now() < deadline);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    let document: Value =
        serde_json::from_str(&gamify_api::openapi::document_json().unwrap()).unwrap();
    let mut checked = 0;
    let mut failures = Vec::new();
    for (path, item) in document["paths"].as_object().unwrap() {
        for (method, operation) in item.as_object().unwrap() {
            let Some(rule) = rule_of(operation, path) else {
                continue;
            };
            let concrete = path
                .replace("{organization_id}", &a_id)
                .replace("{project_id}", &project_id)
                .replace("{key_id}", key["id"].as_str().unwrap())
                .replace("{webhook_id}", webhook["id"].as_str().unwrap())
                .replace("{delivery_id}", "msg_none")
                .replace("{version_number}", "1")
                .replace("{user_id}", &target.user_id)
                .replace("{token_id}", target_token["id"].as_str().unwrap())
                .replace("{invitation_id}", invitation["id"].as_str().unwrap())
                .replace("{session_id}", &uuid::Uuid::new_v4().to_string());
            assert!(
                !concrete.contains('{'),
                "the matrix has no value for a parameter of {path}"
            );
            let has_body = operation.get("requestBody").is_some();
            let body = body_for(method, path, &a_id);
            assert!(
                !has_body || body.is_some(),
                "{method} {path}: add a body to the authorization matrix (body_for)"
            );
            let concrete = if takes_project_param(operation) {
                format!("{concrete}?projectId={project_id}")
            } else {
                concrete
            };
            for who in EVERYONE {
                let http_method: Method = method.to_uppercase().parse().unwrap();
                let request = server.request(http_method.clone(), &concrete);
                let request = match who {
                    Who::Operator => request.bearer_auth(&server.admin_token),
                    // A fresh session each time: some routes sign their caller out.
                    Who::Owner => request
                        .header("cookie", server.session_of(&owner).await.cookie)
                        .header("origin", &server.base_url),
                    Who::Admin => request
                        .header("cookie", server.session_of(&admin).await.cookie)
                        .header("origin", &server.base_url),
                    Who::Developer => request
                        .header("cookie", server.session_of(&developer).await.cookie)
                        .header("origin", &server.base_url),
                    Who::Viewer => request
                        .header("cookie", server.session_of(&viewer).await.cookie)
                        .header("origin", &server.base_url),
                    Who::OtherOwner => request
                        .header("cookie", server.session_of(&other_owner).await.cookie)
                        .header("origin", &server.base_url),
                    Who::TokenWithScope => request.bearer_auth(match &rule.token_scope {
                        Some(Some(scope)) => &only[scope.as_str()],
                        _ => &any_token,
                    }),
                    Who::TokenWithoutScope => request.bearer_auth(match &rule.token_scope {
                        Some(Some(scope)) => &all_but[scope.as_str()],
                        _ => &any_token,
                    }),
                    Who::OtherToken => request.bearer_auth(&other_token),
                    Who::Nobody => request,
                    Who::ExpiredToken => request.bearer_auth(&expiring),
                    Who::RevokedToken => request.bearer_auth(&revoked),
                    Who::SignedOut => request
                        .header("cookie", &signed_out.cookie)
                        .header("origin", &server.base_url),
                };
                let request = match (&body, who) {
                    // A fresh body each time (unique names, emails).
                    (Some(_), _) => request.json(&body_for(method, path, &a_id).unwrap()),
                    (None, _) => request,
                };
                let response = request.send().await.unwrap();
                let status = response.status();
                let text = response.text().await.unwrap();
                let outcome = match status {
                    StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => Expect::Refused(status),
                    StatusCode::NOT_FOUND
                        if text.contains("organization not found")
                            || text.contains("project not found") =>
                    {
                        Expect::Refused(status)
                    }
                    _ if status.is_server_error() => {
                        failures.push(format!("{method} {path} as {who:?}: {status} {text}"));
                        continue;
                    }
                    _ => Expect::Allowed,
                };
                let want = expected(&rule, who);
                if outcome != want {
                    failures.push(format!(
                        "{method} {path} as {who:?}: expected {want:?}, got {status} {text}"
                    ));
                }
                checked += 1;
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} cells wrong:\n{}",
        failures.len(),
        failures.join("\n")
    );
    // 32 management operations today, 13 callers each.
    assert!(
        checked >= 30 * EVERYONE.len(),
        "only {checked} cells checked"
    );
}

#[test]
fn the_matrix_rules_read_the_document_as_written() {
    let rule = rule_of(
        &json!({ "security": [{ "adminToken": [] }, { "session": ["developer"] }, { "orgToken": ["keys:write"] }] }),
        "/v1/projects/{project_id}/api-keys",
    )
    .unwrap();
    assert_eq!(expected(&rule, Who::Developer), Expect::Allowed);
    assert_eq!(
        expected(&rule, Who::Viewer),
        Expect::Refused(StatusCode::FORBIDDEN)
    );
    assert_eq!(
        expected(&rule, Who::TokenWithoutScope),
        Expect::Refused(StatusCode::FORBIDDEN)
    );
    assert_eq!(
        expected(&rule, Who::OtherOwner),
        Expect::Refused(StatusCode::NOT_FOUND)
    );
    assert_eq!(
        expected(&rule, Who::OtherToken),
        Expect::Refused(StatusCode::NOT_FOUND)
    );
    // Ingestion routes are not management routes.
    assert!(
        rule_of(
            &json!({ "security": [{ "apiKey": [] }] }),
            "/v1/events/track"
        )
        .is_none()
    );
}

/// The operator's bootstrap: `gamify-api users create` prints a single-use link that makes the
/// person the new organization's owner.
#[tokio::test]
async fn the_first_owner_is_bootstrapped_from_the_command_line() {
    let server = TestServer::start().await;
    let address = email("bootstrap");
    let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_gamify-api"))
        .args([
            "users",
            "create",
            "--email",
            &address,
            "--organization",
            "Bootstrapped Inc",
        ])
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("DATABASE_URL", crate::harness::database_url())
        .env("KAFKA_BROKERS", crate::harness::brokers())
        .env("ENVELOPE_SECRET", crate::harness::envelope_secret())
        .env("ADMIN_TOKEN", "adm_bootstrap_test_0123456789")
        .env("PUBLIC_URL", &server.base_url)
        .env("RUST_LOG", "warn")
        .output()
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let link = stdout
        .split_whitespace()
        .find(|word| word.starts_with(&server.base_url))
        .expect("a link in the output");
    let token = link.split("token=").nth(1).unwrap();
    let response = server
        .request(Method::POST, "/v1/invitations/accept")
        .json(&json!({ "token": token, "password": PASSWORD }))
        .send()
        .await
        .unwrap();
    let body = expect_json(response, StatusCode::CREATED).await;
    assert_eq!(body["organizations"][0]["name"], "Bootstrapped Inc");
    assert_eq!(body["organizations"][0]["role"], "owner");
    // Single use.
    let response = server
        .request(Method::POST, "/v1/invitations/accept")
        .json(&json!({ "token": token, "password": PASSWORD }))
        .send()
        .await
        .unwrap();
    expect_error(response, StatusCode::NOT_FOUND, "not_found").await;
    // Bad usage names the problem.
    let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_gamify-api"))
        .args(["users", "create", "--email", &address])
        .output()
        .await
        .unwrap();
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("--organization"));
}
