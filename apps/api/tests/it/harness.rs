use gamify_api::AppState;
use gamify_db::{Db, PoolOptions};
use reqwest::{Method, RequestBuilder, Response, StatusCode};
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

pub fn database_url() -> String {
    std::env::var("DATABASE_URL")
        .expect("DATABASE_URL is not set: run the tests through ./scripts/test.sh")
}

pub async fn connect() -> Db {
    let options = PoolOptions {
        max_connections: 4,
        ..PoolOptions::default()
    };
    Db::connect(&database_url(), options)
        .await
        .expect("cannot connect to DATABASE_URL")
}

/// A gamify-api served on an ephemeral port for the duration of one test.
pub struct TestServer {
    pub base_url: String,
    pub admin_token: String,
    pub client: reqwest::Client,
    pub db: Db,
    shutdown: CancellationToken,
}

impl TestServer {
    pub async fn start() -> Self {
        Self::start_with(connect().await).await
    }

    pub async fn start_with(db: Db) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base_url = format!("http://{}", listener.local_addr().unwrap());
        let admin_token = format!("adm_test_{}", uuid::Uuid::new_v4().simple());
        let shutdown = CancellationToken::new();
        let state = AppState::new(db.clone(), admin_token.clone());
        tokio::spawn(gamify_api::serve(listener, state, shutdown.clone()));
        Self {
            base_url,
            admin_token,
            client: reqwest::Client::new(),
            db,
            shutdown,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base_url)
    }

    pub fn request(&self, method: Method, path: &str) -> RequestBuilder {
        self.client.request(method, self.url(path))
    }

    pub fn admin(&self, method: Method, path: &str) -> RequestBuilder {
        self.request(method, path).bearer_auth(&self.admin_token)
    }

    pub async fn create_organization(&self) -> Value {
        let response = self
            .admin(Method::POST, "/v1/organizations")
            .json(&json!({ "name": format!("org {}", uuid::Uuid::new_v4()) }))
            .send()
            .await
            .unwrap();
        expect_json(response, StatusCode::CREATED).await
    }

    /// A new project in a new organization.
    pub async fn create_project(&self) -> Value {
        let organization = self.create_organization().await;
        let response = self
            .admin(Method::POST, "/v1/projects")
            .json(&json!({ "organizationId": organization["id"], "name": "Web shop" }))
            .send()
            .await
            .unwrap();
        expect_json(response, StatusCode::CREATED).await
    }

    pub async fn create_key(&self, project_id: &str, key_type: &str) -> Value {
        let response = self
            .admin(Method::POST, &format!("/v1/projects/{project_id}/api-keys"))
            .json(&json!({ "name": "Website", "type": key_type }))
            .send()
            .await
            .unwrap();
        expect_json(response, StatusCode::CREATED).await
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// The JSON body, after checking the status (and showing the body when it is not the expected one).
pub async fn expect_json(response: Response, status: StatusCode) -> Value {
    let actual = response.status();
    let body = response.text().await.unwrap();
    assert_eq!(actual, status, "unexpected status; body: {body}");
    serde_json::from_str(&body).unwrap_or(Value::Null)
}

/// Checks an error response: status, JSON shape and code.
pub async fn expect_error(response: Response, status: StatusCode, code: &str) -> Value {
    let body = expect_json(response, status).await;
    assert_eq!(body["error"]["code"], code, "body: {body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .is_some_and(|m| !m.is_empty()),
        "error without message: {body}"
    );
    body
}
