//! Postgres goes away mid-stream and comes back: the worker keeps its batch, commits nothing, and
//! loses nothing. Runs against a private Postgres cluster so the shared one is never stopped.

use std::{
    path::{Path, PathBuf},
    process::Command,
    sync::Arc,
    time::Duration,
};

use gamify_common::KeyType;
use gamify_db::sea_orm::{ConnectionTrait, Database};
use serde_json::json;

use crate::harness::{
    Running, Tenant, Topics, config, connect, produce_envelopes, stat, wait_until,
};

const BIN: &str = "/usr/lib/postgresql/15/bin";

/// A throwaway cluster in a temp directory, run as the postgres OS user (initdb refuses root).
struct Cluster {
    dir: PathBuf,
    port: u16,
}

impl Cluster {
    fn as_postgres(program: &str, args: &[&str]) {
        let status = Command::new("runuser")
            .args(["-u", "postgres", "--", &format!("{BIN}/{program}")])
            .args(args)
            .stdout(std::process::Stdio::null())
            .status()
            .unwrap();
        assert!(status.success(), "{program} {args:?} failed");
    }

    fn create() -> Self {
        let dir = std::env::temp_dir().join(format!("gamify-worker-pg-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        let status = Command::new("chown")
            .args(["postgres:postgres", dir.to_str().unwrap()])
            .status()
            .unwrap();
        assert!(status.success());
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let cluster = Self { dir, port };
        Self::as_postgres(
            "initdb",
            &[
                "-D",
                cluster.data().to_str().unwrap(),
                "-A",
                "trust",
                "-U",
                "postgres",
                "--no-sync",
            ],
        );
        cluster.start();
        cluster
    }

    fn data(&self) -> PathBuf {
        self.dir.join("data")
    }

    fn start(&self) {
        let options = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=off",
            self.port,
            self.dir.display()
        );
        Self::as_postgres(
            "pg_ctl",
            &[
                "-D",
                self.data().to_str().unwrap(),
                "-l",
                self.dir.join("log").to_str().unwrap(),
                "-o",
                &options,
                "-w",
                "start",
            ],
        );
    }

    fn stop(&self) {
        Self::as_postgres(
            "pg_ctl",
            &[
                "-D",
                self.data().to_str().unwrap(),
                "-m",
                "fast",
                "-w",
                "stop",
            ],
        );
    }

    fn url(&self, user: &str) -> String {
        format!("postgres://{user}:{user}@127.0.0.1:{}/gamify", self.port)
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let _ = Command::new("runuser")
            .args(["-u", "postgres", "--", &format!("{BIN}/pg_ctl")])
            .args([
                "-D",
                self.data().to_str().unwrap_or_default(),
                "-m",
                "immediate",
                "stop",
            ])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status();
        let _ = std::fs::remove_dir_all(Path::new(&self.dir));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_outage_loses_nothing() {
    let cluster = Arc::new(tokio::task::spawn_blocking(Cluster::create).await.unwrap());
    let admin = Database::connect(format!(
        "postgres://postgres@127.0.0.1:{}/postgres",
        cluster.port
    ))
    .await
    .unwrap();
    admin
        .execute_unprepared("CREATE ROLE gamify_owner LOGIN CREATEROLE PASSWORD 'gamify_owner'")
        .await
        .unwrap();
    admin
        .execute_unprepared("CREATE DATABASE gamify OWNER gamify_owner")
        .await
        .unwrap();
    admin.close().await.unwrap();
    // The analytics rollups' HyperLogLog type: not a trusted extension, so the superuser creates
    // it, as scripts/lib.sh does for every database.
    let superuser = Database::connect(format!(
        "postgres://postgres@127.0.0.1:{}/gamify",
        cluster.port
    ))
    .await
    .unwrap();
    superuser
        .execute_unprepared("CREATE EXTENSION hll")
        .await
        .unwrap();
    superuser.close().await.unwrap();
    gamify_migrations::migrate(
        &cluster.url("gamify_owner"),
        &gamify_migrations::ApplicationRole {
            name: "gamify_app".into(),
            password: Some("gamify_app".into()),
        },
    )
    .await
    .unwrap();
    let app_url = cluster.url("gamify_app");
    let db = connect(&app_url).await;
    let tenant = Tenant::create(&db, &[]).await;
    let topics = Topics::create(2).await;
    let mut config = config(&topics);
    config.database_url = app_url;
    let envelopes: Vec<_> = (0..500)
        .map(|i| {
            tenant.track(
                KeyType::Secret,
                "page_view",
                &format!("u{}", i % 7),
                json!({ "i": i }),
            )
        })
        .collect();

    let worker = Running::start(config).await;
    produce_envelopes(&topics.topic, &envelopes[..200]).await;
    wait_until(
        Duration::from_secs(30),
        "the events before the outage",
        || async { tenant.events(&db).await == 200 },
    )
    .await;
    let committed_before = topics.committed().await;
    assert_eq!(committed_before, 200);

    tokio::task::spawn_blocking({
        let cluster = Arc::clone(&cluster);
        move || cluster.stop()
    })
    .await
    .unwrap();
    produce_envelopes(&topics.topic, &envelopes[200..]).await;
    // The worker has the new events but cannot store them: it retries and commits nothing.
    wait_until(
        Duration::from_secs(20),
        "the worker to read the new events",
        || async { stat(&worker.stats.consumed) > 200 },
    )
    .await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(stat(&worker.stats.persisted), 200);
    assert_eq!(topics.committed().await, 200);
    assert!(
        !worker.handle.is_finished(),
        "the worker gave up during the outage"
    );

    tokio::task::spawn_blocking({
        let cluster = Arc::clone(&cluster);
        move || cluster.start()
    })
    .await
    .unwrap();
    let db = connect(&cluster.url("gamify_app")).await;
    wait_until(
        Duration::from_secs(40),
        "every event after the outage",
        || async { tenant.events(&db).await == 500 },
    )
    .await;
    let stats = worker.stop().await;
    assert_eq!(stat(&stats.persisted), 500);
    assert_eq!(stat(&stats.dead_lettered), 0);
    assert_eq!(
        tenant
            .count(&db, "SELECT count(*) FROM event_message_ids")
            .await,
        500
    );
    assert_eq!(topics.committed().await, 500);
    drop(db);
    tokio::task::spawn_blocking(move || drop(cluster))
        .await
        .unwrap();
}
