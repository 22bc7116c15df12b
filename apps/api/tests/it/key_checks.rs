//! The key check through L0 → Redis → Postgres: revocation across instances, expiry, Redis
//! outages, negative caching and last use.

use std::time::{Duration, Instant};

use gamify_api::clock::WallClock;
use gamify_common::ApiKey;
use reqwest::{Method, StatusCode};
use serde_json::json;

use crate::harness::{ManualClock, PrivateRedis, TestServer, expect_error, expect_json, settings};

fn page_view() -> serde_json::Value {
    json!({ "event": "page_view", "userId": "u1" })
}

#[tokio::test]
async fn a_revoked_key_is_refused_by_another_instance_within_a_second() {
    let first = TestServer::start().await;
    let second = TestServer::start().await;
    let project = first.create_project().await;
    let project = project["id"].as_str().unwrap();
    let key = first.create_key(project, "publishable").await;
    let pk = key["key"].as_str().unwrap();
    // Warm both instances' in-process caches.
    for server in [&first, &second] {
        assert_eq!(
            server.track(pk, page_view()).await.status(),
            StatusCode::ACCEPTED
        );
    }

    // The second instance is asked while the revocation is in flight, not after it returns: the
    // revoking call waits for every subscribed gateway's acknowledgement (those of the other
    // tests running beside this one too, up to ACK_TIMEOUT), which says nothing about how soon
    // this instance refuses the key.
    let revoked_at = Instant::now();
    let revoke = first.revoke_key(project, &key);
    let refused = async {
        loop {
            let status = second.track(pk, page_view()).await.status();
            if status == StatusCode::UNAUTHORIZED {
                return revoked_at.elapsed();
            }
            assert_eq!(status, StatusCode::ACCEPTED);
            assert!(
                revoked_at.elapsed() < Duration::from_secs(1),
                "still accepted after 1 s"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    let (response, refused_after) = tokio::join!(revoke, refused);
    assert_eq!(response.status(), StatusCode::NO_CONTENT);
    assert!(refused_after < Duration::from_secs(1), "{refused_after:?}");
    // The revoking instance refuses it at once.
    assert_eq!(
        first.track(pk, page_view()).await.status(),
        StatusCode::UNAUTHORIZED
    );
}

#[tokio::test]
async fn a_rolled_key_is_refused_as_soon_as_it_expires() {
    let clock = ManualClock::now_real();
    let server = TestServer::with_clock(settings(), clock.clone()).await;
    let project = server.create_project().await;
    let project = project["id"].as_str().unwrap();
    let key = server.create_key(project, "secret").await;
    let old = key["key"].as_str().unwrap();
    let response = server
        .roll_key(project, &key, Some(json!({ "expiresInSeconds": 2 })))
        .await;
    let rolled = expect_json(response, StatusCode::CREATED).await;
    // During the overlap both keys work, and the old one is now cached.
    assert_eq!(
        server.track(old, page_view()).await.status(),
        StatusCode::ACCEPTED
    );
    assert_eq!(
        server
            .track(rolled["key"].as_str().unwrap(), page_view())
            .await
            .status(),
        StatusCode::ACCEPTED
    );
    // The old key expires 2 s after the roll, or later when not every gateway confirmed the
    // change in time (the other tests' gateways, under load): its listed expiry says when.
    let listed = expect_json(
        server
            .admin(Method::GET, &format!("/v1/projects/{project}/api-keys"))
            .send()
            .await
            .unwrap(),
        StatusCode::OK,
    )
    .await;
    let expires_at = listed
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["id"] == key["id"])
        .and_then(|k| k["expiresAt"].as_str())
        .map(|at| {
            chrono::DateTime::parse_from_rfc3339(at)
                .unwrap()
                .with_timezone(&chrono::Utc)
        })
        .expect("the rolled key has an expiry");
    let until = (expires_at - clock.now()).to_std().unwrap_or_default();
    assert!(
        until >= Duration::from_millis(1900),
        "expires 2 s after the roll at the soonest"
    );
    clock.advance(until + Duration::from_millis(100));
    expect_error(
        server.track(old, page_view()).await,
        StatusCode::UNAUTHORIZED,
        "invalid_api_key",
    )
    .await;
    assert_eq!(
        server
            .track(rolled["key"].as_str().unwrap(), page_view())
            .await
            .status(),
        StatusCode::ACCEPTED
    );
}

#[tokio::test]
async fn keys_authenticate_through_postgres_when_redis_is_down() {
    let mut redis = PrivateRedis::start().await;
    let mut settings = settings();
    settings.redis_url = redis.url.clone();
    let server = TestServer::with_settings(settings).await;
    let (project, pk, _) = server.project_with_keys().await;
    assert_eq!(
        server.track(&pk, page_view()).await.status(),
        StatusCode::ACCEPTED
    );

    redis.stop().await;
    // A key this instance has never seen: L0 misses, Redis is gone, Postgres answers.
    let fresh = server.create_key(&project, "secret").await;
    let response = server
        .track(
            fresh["key"].as_str().unwrap(),
            json!({ "event": "purchase", "userId": "u1" }),
        )
        .await;
    assert_eq!(response.status(), StatusCode::ACCEPTED);
    // Never open: unknown and revoked keys are still refused.
    let unknown = ApiKey::generate(gamify_common::KeyType::Publishable);
    expect_error(
        server.track(unknown.expose(), page_view()).await,
        StatusCode::UNAUTHORIZED,
        "invalid_api_key",
    )
    .await;
    server.revoke_key(&project, &fresh).await;
    expect_error(
        server
            .track(fresh["key"].as_str().unwrap(), page_view())
            .await,
        StatusCode::UNAUTHORIZED,
        "invalid_api_key",
    )
    .await;
    // Readiness names Redis as degraded and stays 200 (Redis is not required).
    let response = server.request(Method::GET, "/readyz").send().await.unwrap();
    let body = expect_json(response, StatusCode::OK).await;
    assert_eq!(body["status"], "degraded", "{body}");
    assert_eq!(body["checks"]["redis"], "failing", "{body}");
}

#[tokio::test]
async fn rate_limiting_falls_back_to_a_local_limiter_without_redis() {
    let mut redis = PrivateRedis::start().await;
    let mut settings = settings();
    settings.redis_url = redis.url.clone();
    settings.rate_limit.client = gamify_api::config::Quota {
        per_second: 1,
        burst: 2,
    };
    let server = TestServer::with_settings(settings).await;
    let (_, pk, _) = server.project_with_keys().await;
    redis.stop().await;
    let mut statuses = Vec::new();
    for _ in 0..3 {
        statuses.push(server.track(&pk, page_view()).await.status());
    }
    assert_eq!(
        statuses,
        [
            StatusCode::ACCEPTED,
            StatusCode::ACCEPTED,
            StatusCode::TOO_MANY_REQUESTS
        ]
    );
}

#[tokio::test]
async fn unknown_keys_are_cached_negatively_in_redis() {
    let server = TestServer::start().await;
    let unknown = ApiKey::generate(gamify_common::KeyType::Publishable);
    expect_error(
        server.track(unknown.expose(), page_view()).await,
        StatusCode::UNAUTHORIZED,
        "invalid_api_key",
    )
    .await;

    let client = redis::Client::open(settings().redis_url).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let key = format!("apikey:{}", unknown.hash());
    let cached: Option<String> = redis::cmd("GET")
        .arg(&key)
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(cached.as_deref(), Some("-"));
    let ttl: i64 = redis::cmd("TTL")
        .arg(&key)
        .query_async(&mut conn)
        .await
        .unwrap();
    assert!((1..=5).contains(&ttl), "negative entry ttl {ttl}");
    // Malformed keys never reach the caches at all.
    let malformed = format!("pk_live_{}", "z".repeat(64));
    expect_error(
        server.track(&malformed, page_view()).await,
        StatusCode::UNAUTHORIZED,
        "invalid_api_key",
    )
    .await;
    let cached: Option<String> = redis::cmd("GET")
        .arg(format!("apikey:{}", gamify_common::KeyHash::of(&malformed)))
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(cached, None);
}

#[tokio::test]
async fn valid_keys_are_cached_in_redis_without_the_key_itself() {
    let server = TestServer::start().await;
    let (project, pk, _) = server.project_with_keys().await;
    assert_eq!(
        server.track(&pk, page_view()).await.status(),
        StatusCode::ACCEPTED
    );
    let client = redis::Client::open(settings().redis_url).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let key = format!("apikey:{}", gamify_common::KeyHash::of(&pk));
    let cached: String = redis::cmd("GET")
        .arg(&key)
        .query_async(&mut conn)
        .await
        .unwrap();
    let cached: serde_json::Value = serde_json::from_str(&cached).unwrap();
    assert_eq!(cached["projectId"], project.as_str());
    assert_eq!(cached["type"], "publishable");
    assert!(!cached.to_string().contains(&pk[8..]));
    let ttl: i64 = redis::cmd("TTL")
        .arg(&key)
        .query_async(&mut conn)
        .await
        .unwrap();
    assert!((1..=60).contains(&ttl));
}

#[tokio::test]
async fn last_used_at_is_recorded_off_the_request_path() {
    let server = TestServer::start().await;
    let (project, pk, _) = server.project_with_keys().await;
    assert_eq!(
        server.track(&pk, page_view()).await.status(),
        StatusCode::ACCEPTED
    );
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let keys = expect_json(
            server
                .admin(Method::GET, &format!("/v1/projects/{project}/api-keys"))
                .send()
                .await
                .unwrap(),
            StatusCode::OK,
        )
        .await;
        let publishable = keys
            .as_array()
            .unwrap()
            .iter()
            .find(|k| k["type"] == "publishable")
            .unwrap();
        if publishable["lastUsedAt"].is_string() {
            break;
        }
        assert!(Instant::now() < deadline, "lastUsedAt not recorded");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A trusted-event list or origin list that cannot be read refuses what it might have forbidden,
/// instead of decoding to "nothing is trusted" and letting a browser key through.
#[tokio::test]
async fn unreadable_trusted_events_or_origins_refuse_rather_than_allow() {
    use gamify_db::sea_orm::{ConnectionTrait, DbBackend, Statement};
    let server = TestServer::start().await;
    let (project, pk, sk) = server.project_with_keys().await;
    let db = crate::harness::connect().await;
    // Valid jsonb arrays (the CHECK holds) whose elements are not names.
    db.shared()
        .execute(Statement::from_sql_and_values(
            DbBackend::Postgres,
            "UPDATE projects SET trusted_events = '[1, {\"name\": \"purchase\"}]'::jsonb WHERE id = $1::uuid",
            [project.clone().into()],
        ))
        .await
        .unwrap();
    let response = server.track(&pk, page_view()).await;
    expect_error(response, StatusCode::FORBIDDEN, "event_requires_secret_key").await;
    // A secret key may send anything, list or no list.
    let response = server.track(&sk, page_view()).await;
    expect_json(response, StatusCode::ACCEPTED).await;

    let other = TestServer::start().await;
    let (project, pk, _) = other.project_with_keys().await;
    db.shared()
        .execute(Statement::from_sql_and_values(
            DbBackend::Postgres,
            "UPDATE api_keys SET allowed_origins = '[null]'::jsonb WHERE project_id = $1::uuid",
            [project.into()],
        ))
        .await
        .unwrap();
    let response = other
        .request(Method::POST, "/v1/events/track")
        .header("x-api-key", &pk)
        .header("origin", "https://shop.example")
        .json(&page_view())
        .send()
        .await
        .unwrap();
    expect_error(response, StatusCode::FORBIDDEN, "origin_not_allowed").await;
}

/// `gamify_key_cache_lookups_total{level}` as the gateway reports it.
async fn key_lookups(server: &TestServer, level: &str) -> f64 {
    let text = server
        .request(Method::GET, "/metrics")
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let series = format!("gamify_key_cache_lookups_total{{level=\"{level}\"}} ");
    text.lines()
        .find_map(|line| line.strip_prefix(&series))
        .map_or(0.0, |value| value.trim().parse().unwrap())
}

/// A warm key is answered from the in-process cache without loading anything, and each such
/// answer still counts as an L0 lookup (the recorder is shared by every test of this binary, so
/// the counts are compared as lower bounds).
#[tokio::test]
async fn warm_keys_are_counted_as_in_process_hits() {
    let server = TestServer::start().await;
    let (_, pk, _) = server.project_with_keys().await;
    let loads_before = key_lookups(&server, "l2").await;
    assert_eq!(
        server.track(&pk, page_view()).await.status(),
        StatusCode::ACCEPTED
    );
    assert!(key_lookups(&server, "l2").await >= loads_before + 1.0);
    let hits_before = key_lookups(&server, "l0").await;
    for _ in 0..20 {
        assert_eq!(
            server.track(&pk, page_view()).await.status(),
            StatusCode::ACCEPTED
        );
    }
    let hits = key_lookups(&server, "l0").await - hits_before;
    assert!(hits >= 20.0, "{hits} L0 hits counted for 20 warm requests");
}
