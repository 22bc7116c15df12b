//! Redis outages with real processes: a Redis that hangs costs no request its timeout, and a
//! revocation made while Redis is down reaches every instance once it is back.

use std::{
    process::Stdio,
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use gamify_common::{ApiKey, KeyType};
use reqwest::StatusCode;
use serde_json::json;
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
};

use crate::harness::{PrivateRedis, TestServer, expect_error, settings};

/// A TCP proxy in front of a Redis that, once `hang()` is called, stops answering: it keeps
/// accepting and reading, forwards nothing, and counts the key-cache commands that reach it.
struct HangingProxy {
    url: String,
    hanging: Arc<AtomicBool>,
    /// `apikey:` commands received while hanging.
    key_commands: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl HangingProxy {
    async fn start(upstream: String) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("redis://{}", listener.local_addr().unwrap());
        let hanging = Arc::new(AtomicBool::new(false));
        let key_commands = Arc::new(AtomicUsize::new(0));
        let (flag, counter) = (hanging.clone(), key_commands.clone());
        let task = tokio::spawn(async move {
            loop {
                let Ok((client, _)) = listener.accept().await else {
                    return;
                };
                let upstream = upstream.clone();
                let (flag, counter) = (flag.clone(), counter.clone());
                tokio::spawn(async move {
                    let server = if flag.load(Ordering::SeqCst) {
                        None
                    } else {
                        TcpStream::connect(&upstream).await.ok()
                    };
                    let (mut client_read, mut client_write) = client.into_split();
                    let mut server_write = match server {
                        Some(server) => {
                            let (mut server_read, server_write) = server.into_split();
                            let flag = flag.clone();
                            tokio::spawn(async move {
                                let mut buf = vec![0u8; 16 * 1024];
                                while let Ok(n) = server_read.read(&mut buf).await {
                                    if n == 0 || flag.load(Ordering::SeqCst) {
                                        break;
                                    }
                                    if client_write.write_all(&buf[..n]).await.is_err() {
                                        break;
                                    }
                                }
                                // Hanging: keep the client's socket open, answer nothing.
                                std::future::pending::<()>().await;
                                drop(client_write);
                            });
                            Some(server_write)
                        }
                        None => None,
                    };
                    let mut buf = vec![0u8; 16 * 1024];
                    while let Ok(n) = client_read.read(&mut buf).await {
                        if n == 0 {
                            break;
                        }
                        if flag.load(Ordering::SeqCst) {
                            let text = String::from_utf8_lossy(&buf[..n]);
                            counter.fetch_add(text.matches("apikey:").count(), Ordering::SeqCst);
                        } else if let Some(server) = server_write.as_mut() {
                            if server.write_all(&buf[..n]).await.is_err() {
                                break;
                            }
                        }
                    }
                });
            }
        });
        Self {
            url,
            hanging,
            key_commands,
            task,
        }
    }

    fn hang(&self) {
        self.hanging.store(true, Ordering::SeqCst);
    }
}

impl Drop for HangingProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// With Redis hanging (accepting and never answering), a burst of requests each needing a key
/// lookup does not each go to Redis and wait for its timeout: the breaker skips Redis after the
/// first failure. Before the breaker, every lookup sent its GET (and SET) and waited.
#[tokio::test]
async fn a_hanging_redis_is_skipped_instead_of_waited_for_on_every_request() {
    let redis = PrivateRedis::start().await;
    let proxy = HangingProxy::start(redis.url.trim_start_matches("redis://").to_owned()).await;
    let mut settings = settings();
    settings.redis_url = proxy.url.clone();
    let server = TestServer::with_settings(settings).await;
    let (_, pk, _) = server.project_with_keys().await;
    // The connection to Redis is established and works.
    assert_eq!(
        server
            .track(&pk, json!({ "event": "page_view", "userId": "u1" }))
            .await
            .status(),
        StatusCode::ACCEPTED
    );

    proxy.hang();
    const BURST: usize = 40;
    for _ in 0..BURST {
        // A key no cache level knows: every request needs a lookup.
        let unknown = ApiKey::generate(KeyType::Publishable);
        expect_error(
            server
                .track(
                    unknown.expose(),
                    json!({ "event": "page_view", "userId": "u1" }),
                )
                .await,
            StatusCode::UNAUTHORIZED,
            "invalid_api_key",
        )
        .await;
    }
    let reached = proxy.key_commands.load(Ordering::SeqCst);
    // One probe per breaker period at most; without the breaker it is two per request.
    assert!(
        reached < BURST / 4,
        "{reached} key-cache commands went to the hanging redis for {BURST} requests"
    );
}

/// A redis-server whose data survives a restart on the same port (SHUTDOWN SAVE, then start again
/// from the same directory), as a production Redis with persistence does.
struct PersistentRedis {
    port: u16,
    dir: std::path::PathBuf,
    child: Option<tokio::process::Child>,
}

impl PersistentRedis {
    async fn start() -> Self {
        let port = {
            let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            listener.local_addr().unwrap().port()
        };
        let dir = std::env::temp_dir().join(format!("gamify-redis-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        let mut redis = Self {
            port,
            dir,
            child: None,
        };
        redis.launch().await;
        redis
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    async fn launch(&mut self) {
        let child = tokio::process::Command::new("redis-server")
            .args([
                "--port",
                &self.port.to_string(),
                "--bind",
                "127.0.0.1",
                "--dir",
                self.dir.to_str().unwrap(),
                "--dbfilename",
                "dump.rdb",
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .stdout(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("redis-server is not installed: run the tests through ./scripts/test.sh");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Ok(client) = redis::Client::open(self.url()) {
                if let Ok(mut connection) = client.get_multiplexed_async_connection().await {
                    let pong: redis::RedisResult<String> =
                        redis::cmd("PING").query_async(&mut connection).await;
                    if pong.is_ok() {
                        return;
                    }
                }
            }
            assert!(Instant::now() < deadline, "redis-server did not start");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Saves the data set and stops; the port refuses connections until `launch`.
    async fn shutdown_saving(&mut self) {
        let client = redis::Client::open(self.url()).unwrap();
        let mut connection = client.get_multiplexed_async_connection().await.unwrap();
        // The server closes the connection instead of answering.
        let _: redis::RedisResult<()> = redis::cmd("SHUTDOWN")
            .arg("SAVE")
            .query_async(&mut connection)
            .await;
        if let Some(mut child) = self.child.take() {
            child.wait().await.unwrap();
        }
        assert!(self.dir.join("dump.rdb").exists(), "nothing saved");
    }
}

impl Drop for PersistentRedis {
    fn drop(&mut self) {
        if let Some(child) = self.child.as_mut() {
            let _ = child.start_kill();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

const OUTAGE: Duration = Duration::from_secs(4);

/// Two instances share a Redis. The key is revoked on A while Redis is down: A cannot delete the
/// Redis entry or announce the revocation then. Redis comes back with its data (the stale entry
/// included); B must refuse the key soon after, which takes A retrying the invalidation. Before,
/// A gave up and B kept accepting the key from Redis until the entry expired (60 s).
#[tokio::test]
async fn a_revocation_made_while_redis_is_down_reaches_other_instances_when_it_returns() {
    let mut redis = PersistentRedis::start().await;
    let mut settings = settings();
    settings.redis_url = redis.url();
    let a = TestServer::with_settings(settings.clone()).await;
    let b = TestServer::with_settings(settings).await;
    let (project, _, _) = a.project_with_keys().await;
    let key = a.create_key(&project, "secret").await;
    let secret = key["key"].as_str().unwrap().to_owned();
    let event = json!({ "event": "page_view", "userId": "u1" });
    // B caches the key in its L0 and in Redis.
    assert_eq!(
        b.track(&secret, event.clone()).await.status(),
        StatusCode::ACCEPTED
    );

    redis.shutdown_saving().await;
    assert_eq!(
        a.revoke_key(&project, &key).await.status(),
        StatusCode::NO_CONTENT
    );
    // The outage lasts longer than the repeat the gateway makes 2 s after a revocation (for a
    // concurrent stale write-back); this is the scenario's length, not a synchronisation.
    tokio::time::sleep(OUTAGE).await;
    redis.launch().await;

    // Done when Redis no longer holds the revoked key's record (A's invalidation reached it) and
    // B refuses the key. Before, B's first call after the restart fell back to Postgres by chance,
    // but Redis kept serving the stale record to every instance until it expired.
    let client = redis::Client::open(redis.url()).unwrap();
    let mut connection = client.get_multiplexed_async_connection().await.unwrap();
    let cache_key = format!("apikey:{}", gamify_common::KeyHash::of(&secret));
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let cached: Option<String> = redis::cmd("GET")
            .arg(&cache_key)
            .query_async(&mut connection)
            .await
            .unwrap();
        let stale = cached.as_deref().is_some_and(|cached| cached != "-");
        let status = b.track(&secret, event.clone()).await.status();
        if !stale && status == StatusCode::UNAUTHORIZED {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the revocation made on A during the outage never reached Redis and B \
             (cached: {cached:?}, B answers {status})"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
