//! The dispatcher: sends due webhook deliveries, records every attempt, retries with backoff.
//!
//! Work is found in `webhook_queue` (no row-level security: ids and due times only), across
//! projects. A claim does not remove a row: it leases it, moving its `due_at` past the longest an
//! attempt can take, in one statement with `FOR UPDATE SKIP LOCKED`, so several engines never take
//! the same delivery while its lease holds. The attempt is then recorded in the project's tenant
//! transaction, which also moves the row to the next attempt's time or removes it, but only if the
//! row still carries this claim's lease. An engine that stops mid-attempt leaves the row leased;
//! it becomes due again when the lease ends and another attempt is made under the same
//! `webhook-id`: a delivery is never lost, and may arrive more than once (receivers deduplicate on
//! `webhook-id`, as Standard Webhooks asks).
//!
//! No transaction is held open while the request is in flight.

use std::{
    error::Error as StdError,
    sync::Arc,
    time::{Duration, Instant},
};

use chrono::{DateTime, Utc};
use gamify_db::Db;
use reqwest::{header, redirect};
use sea_orm::sqlx;
use serde_json::Value;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use url::Url;
use uuid::Uuid;

use super::{
    address::{self, PublicResolver, Refused},
    sign::Key,
};
use crate::metrics as m;

/// The most of a response body kept with an attempt.
pub const RESPONSE_BODY_LIMIT: usize = 4096;

/// When attempts are made: the first at once, each later one after the next delay of the list
/// (stretched by up to `jitter` of itself, so endpoints that failed together are not retried in
/// lockstep), and the delivery fails after the attempt that finds the list used up.
#[derive(Debug, Clone)]
pub struct Schedule {
    delays: Vec<Duration>,
    jitter: f64,
}

impl Schedule {
    /// 5 s, 30 s, 2 min, 10 min, 30 min, 1 h, 2 h, 4 h, 8 h, 12 h: 11 attempts over 27 h 42 min
    /// at least (up to a fifth more with jitter).
    pub fn standard() -> Self {
        const MINUTE: u64 = 60;
        const HOUR: u64 = 3600;
        Self::new(
            [
                5,
                30,
                2 * MINUTE,
                10 * MINUTE,
                30 * MINUTE,
                HOUR,
                2 * HOUR,
                4 * HOUR,
                8 * HOUR,
                12 * HOUR,
            ]
            .map(Duration::from_secs)
            .to_vec(),
            0.2,
        )
    }

    /// `jitter` is clamped to 0–1.
    pub fn new(delays: Vec<Duration>, jitter: f64) -> Self {
        Self {
            delays,
            jitter: if jitter.is_finite() {
                jitter.clamp(0.0, 1.0)
            } else {
                0.0
            },
        }
    }

    /// How many attempts a delivery gets.
    pub fn attempts(&self) -> usize {
        self.delays.len() + 1
    }

    /// The delay after the `attempt`th attempt (1-based) failed, or `None` when it was the last.
    pub fn after(&self, attempt: u32) -> Option<Duration> {
        let index = usize::try_from(attempt.checked_sub(1)?).ok()?;
        let base = *self.delays.get(index)?;
        Some(base.mul_f64(1.0 + self.jitter * rand::random::<f64>()))
    }

    /// The shortest total time from the first attempt to the last.
    pub fn minimum_span(&self) -> Duration {
        self.delays.iter().sum()
    }
}

impl Default for Schedule {
    fn default() -> Self {
        Self::standard()
    }
}

/// How the dispatcher runs.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Send to private, loopback and link-local addresses too (`WEBHOOKS_ALLOW_PRIVATE`).
    pub allow_private: bool,
    pub schedule: Schedule,
    /// How long to wait before looking for due deliveries again when none was due.
    pub poll: Duration,
    /// One attempt's limit, from connecting to the end of the response body.
    pub timeout: Duration,
    /// How long a claimed delivery stays taken; longer than an attempt and its recording can last.
    pub lease: Duration,
    /// Attempts in flight at once.
    pub concurrency: usize,
    /// Only these projects' deliveries (tests run several dispatchers on one database); `None`:
    /// every project's.
    pub projects: Option<Vec<Uuid>>,
}

impl Settings {
    pub fn new(allow_private: bool) -> Self {
        Self {
            allow_private,
            schedule: Schedule::standard(),
            poll: Duration::from_millis(200),
            timeout: Duration::from_secs(15),
            lease: Duration::from_secs(60),
            concurrency: 16,
            projects: None,
        }
    }
}

/// Delivers webhooks until `shutdown` is cancelled, with the standard settings.
pub async fn run(db: Db, allow_private: bool, shutdown: CancellationToken) {
    run_with(db, Settings::new(allow_private), shutdown).await;
}

/// Delivers webhooks until `shutdown` is cancelled. Attempts still in flight then are abandoned:
/// their deliveries are attempted again once their lease ends.
pub async fn run_with(db: Db, settings: Settings, shutdown: CancellationToken) {
    let sender = match Sender::new(settings.allow_private, settings.timeout) {
        Ok(sender) => sender,
        Err(err) => {
            tracing::error!(error = %err, "cannot build the webhook HTTP client; no webhook is sent");
            return;
        }
    };
    let concurrency = settings.concurrency.max(1);
    let dispatcher = Arc::new(Dispatcher {
        db,
        sender,
        settings,
    });
    let mut in_flight = JoinSet::new();
    loop {
        while in_flight.try_join_next().is_some() {}
        if in_flight.len() >= concurrency {
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = in_flight.join_next() => continue,
            }
        }
        let free = concurrency - in_flight.len();
        let more_due = match dispatcher.claim(free).await {
            Ok(claims) => {
                let full = claims.len() == free;
                for claim in claims {
                    let dispatcher = Arc::clone(&dispatcher);
                    in_flight.spawn(async move { dispatcher.deliver(claim).await });
                }
                full
            }
            Err(err) => {
                tracing::warn!(error = %err, "cannot claim due webhook deliveries");
                false
            }
        };
        if more_due && !shutdown.is_cancelled() {
            continue;
        }
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = tokio::time::sleep(dispatcher.settings.poll) => {}
        }
    }
    in_flight.shutdown().await;
}

/// What one attempt found.
#[derive(Debug, Clone)]
pub struct Attempt {
    pub at: DateTime<Utc>,
    /// The answer's status; `None` when there was none.
    pub status: Option<u16>,
    /// The answer's body, its first 4 KB.
    pub body: Option<String>,
    /// Why there was no answer.
    pub error: Option<String>,
    pub duration: Duration,
}

impl Attempt {
    /// Answered with a 2xx.
    pub fn delivered(&self) -> bool {
        self.status
            .is_some_and(|status| (200..300).contains(&status))
    }
}

/// Makes the signed requests: no redirect followed, no proxy, a time limit on the whole exchange,
/// and only public addresses unless `allow_private`.
#[derive(Debug, Clone)]
pub struct Sender {
    client: reqwest::Client,
    allow_private: bool,
    timeout: Duration,
}

impl Sender {
    pub fn new(allow_private: bool, timeout: Duration) -> reqwest::Result<Self> {
        let mut builder = reqwest::Client::builder()
            .redirect(redirect::Policy::none())
            .timeout(timeout)
            .connect_timeout(timeout.min(Duration::from_secs(10)))
            // Straight to the checked address: a proxy would resolve the name itself.
            .no_proxy()
            .user_agent(concat!("Gamify-Webhooks/", env!("CARGO_PKG_VERSION")))
            .pool_idle_timeout(Duration::from_secs(30));
        if !allow_private {
            builder = builder.dns_resolver(Arc::new(PublicResolver));
        }
        Ok(Self {
            client: builder.build()?,
            allow_private,
            timeout,
        })
    }

    /// One signed POST of `payload` as the delivery `id` to `url`. Every failure is part of the
    /// result, never an error.
    pub async fn send(&self, id: &str, url: &str, secret: &str, payload: &Value) -> Attempt {
        let at = Utc::now();
        let started = Instant::now();
        let (status, body, error) = match self.exchange(id, url, secret, payload, at).await {
            Ok((status, body)) => (Some(status), Some(body), None),
            Err(error) => (None, None, Some(storable(&error))),
        };
        Attempt {
            at,
            status,
            body,
            error,
            duration: started.elapsed(),
        }
    }

    async fn exchange(
        &self,
        id: &str,
        url: &str,
        secret: &str,
        payload: &Value,
        at: DateTime<Utc>,
    ) -> Result<(u16, String), String> {
        let url = Url::parse(url).map_err(|err| format!("the endpoint's URL is invalid: {err}"))?;
        if !self.allow_private {
            address::check_url(&url).map_err(|refused| refused.to_string())?;
        }
        let key = Key::from_secret(secret).map_err(|err| err.to_string())?;
        let body = serde_json::to_vec(payload).map_err(|err| err.to_string())?;
        let mut request = self
            .client
            .post(url)
            .header(header::CONTENT_TYPE, "application/json");
        for (name, value) in key.headers(id, at.timestamp(), &body) {
            request = request.header(name, value);
        }
        let mut response = request
            .body(body)
            .send()
            .await
            .map_err(|err| describe(err, self.timeout))?;
        let status = response.status().as_u16();
        let mut kept = Vec::new();
        while kept.len() < RESPONSE_BODY_LIMIT {
            match response.chunk().await {
                Ok(Some(chunk)) => {
                    let room = RESPONSE_BODY_LIMIT - kept.len();
                    kept.extend_from_slice(&chunk[..chunk.len().min(room)]);
                }
                // The status is the answer; a body cut short is kept as far as it came.
                Ok(None) | Err(_) => break,
            }
        }
        Ok((status, storable(&String::from_utf8_lossy(&kept))))
    }
}

/// A leased queue row.
#[derive(Debug)]
struct Claim {
    project_id: Uuid,
    delivery_id: String,
    /// The `due_at` the claim wrote: the row is still this claim's while it holds this value.
    due_at: DateTime<Utc>,
}

struct Dispatcher {
    db: Db,
    sender: Sender,
    settings: Settings,
}

type Txn = sqlx::Transaction<'static, sqlx::Postgres>;

impl Dispatcher {
    /// Leases up to `limit` due rows, oldest first.
    async fn claim(&self, limit: usize) -> Result<Vec<Claim>, sqlx::Error> {
        let pool = self.db.shared().get_postgres_connection_pool();
        let rows: Vec<(Uuid, String, DateTime<Utc>)> = sqlx::query_as(
            "UPDATE webhook_queue q SET due_at = now() + make_interval(secs => $1)
             FROM (SELECT project_id, delivery_id FROM webhook_queue
                   WHERE due_at <= now() AND ($3::uuid[] IS NULL OR project_id = ANY($3))
                   ORDER BY due_at LIMIT $2 FOR UPDATE SKIP LOCKED) due
             WHERE q.project_id = due.project_id AND q.delivery_id = due.delivery_id
             RETURNING q.project_id, q.delivery_id, q.due_at",
        )
        .bind(self.settings.lease.as_secs_f64())
        .bind(i64::try_from(limit).unwrap_or(i64::MAX))
        .bind(self.settings.projects.as_deref())
        .fetch_all(pool)
        .await?;
        Ok(rows
            .into_iter()
            .map(|(project_id, delivery_id, due_at)| Claim {
                project_id,
                delivery_id,
                due_at,
            })
            .collect())
    }

    async fn deliver(&self, claim: Claim) {
        if let Err(err) = self.try_deliver(&claim).await {
            tracing::warn!(
                project_id = %claim.project_id,
                delivery_id = %claim.delivery_id,
                error = %err,
                "webhook delivery not recorded; attempted again when its lease ends"
            );
        }
    }

    async fn try_deliver(&self, claim: &Claim) -> Result<(), sqlx::Error> {
        let mut txn = self.db.tenant_bulk(claim.project_id).await?;
        let found: Option<(String, Value, Uuid, String, String, bool)> = sqlx::query_as(
            "SELECT d.state, d.payload, e.id, e.url, e.secret, e.deleted_at IS NOT NULL
             FROM webhook_deliveries d
             JOIN webhook_endpoints e ON e.project_id = d.project_id AND e.id = d.endpoint_id
             WHERE d.project_id = $1 AND d.id = $2",
        )
        .bind(claim.project_id)
        .bind(&claim.delivery_id)
        .fetch_optional(&mut *txn)
        .await?;
        let Some((state, payload, endpoint_id, url, secret, endpoint_deleted)) = found else {
            release(&mut txn, claim, None).await?;
            return txn.commit().await;
        };
        if state != "pending" {
            // Delivered or failed meanwhile (e.g. by an earlier holder of an expired lease).
            release(&mut txn, claim, None).await?;
            return txn.commit().await;
        }
        if endpoint_deleted {
            sqlx::query(
                "UPDATE webhook_deliveries SET state = 'failed'
                 WHERE project_id = $1 AND id = $2 AND state = 'pending'",
            )
            .bind(claim.project_id)
            .bind(&claim.delivery_id)
            .execute(&mut *txn)
            .await?;
            release(&mut txn, claim, None).await?;
            return txn.commit().await;
        }
        txn.commit().await?;

        let attempt = self
            .sender
            .send(&claim.delivery_id, &url, &secret, &payload)
            .await;
        metrics::counter!(m::WEBHOOK_ATTEMPTS).increment(1);
        if attempt.delivered() {
            metrics::counter!(m::WEBHOOKS_DELIVERED).increment(1);
        }
        self.record(claim, endpoint_id, attempt).await
    }

    /// Records the attempt and decides what follows, in the project's transaction.
    async fn record(
        &self,
        claim: &Claim,
        endpoint_id: Uuid,
        attempt: Attempt,
    ) -> Result<(), sqlx::Error> {
        let mut txn = self.db.tenant_bulk(claim.project_id).await?;
        let current: Option<(String, i32)> = sqlx::query_as(
            "SELECT state, attempts FROM webhook_deliveries
             WHERE project_id = $1 AND id = $2 FOR UPDATE",
        )
        .bind(claim.project_id)
        .bind(&claim.delivery_id)
        .fetch_optional(&mut *txn)
        .await?;
        let Some((state, attempts)) = current else {
            release(&mut txn, claim, None).await?;
            return txn.commit().await;
        };
        let number = attempts.saturating_add(1);
        sqlx::query(
            "INSERT INTO webhook_attempts
                 (project_id, delivery_id, attempt, attempted_at, response_status, response_body,
                  error, duration_ms)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
             ON CONFLICT DO NOTHING",
        )
        .bind(claim.project_id)
        .bind(&claim.delivery_id)
        .bind(number)
        .bind(attempt.at)
        .bind(attempt.status.map(i32::from))
        .bind(&attempt.body)
        .bind(&attempt.error)
        .bind(i32::try_from(attempt.duration.as_millis()).unwrap_or(i32::MAX))
        .execute(&mut *txn)
        .await?;

        let next = if attempt.delivered() || state != "pending" {
            None
        } else {
            self.settings
                .schedule
                .after(u32::try_from(number).unwrap_or(u32::MAX))
                .and_then(|delay| chrono::Duration::from_std(delay).ok())
                .map(|delay| Utc::now() + delay)
        };
        let new_state = if attempt.delivered() {
            "delivered"
        } else if state != "pending" {
            // Failed meanwhile (its endpoint was deleted): it stays so.
            state.as_str()
        } else if next.is_some() {
            "pending"
        } else {
            "failed"
        };
        sqlx::query(
            "UPDATE webhook_deliveries
             SET attempts = $3, state = $4, next_attempt_at = COALESCE($5, next_attempt_at),
                 delivered_at = CASE WHEN $4 = 'delivered' THEN now() ELSE delivered_at END
             WHERE project_id = $1 AND id = $2",
        )
        .bind(claim.project_id)
        .bind(&claim.delivery_id)
        .bind(number)
        .bind(new_state)
        .bind(next)
        .execute(&mut *txn)
        .await?;
        release(&mut txn, claim, next).await?;
        txn.commit().await?;

        match (new_state, &attempt.error) {
            ("delivered", _) => tracing::debug!(
                project_id = %claim.project_id, delivery_id = %claim.delivery_id,
                %endpoint_id, attempt = number, status = attempt.status, "webhook delivered"
            ),
            ("failed", error) => tracing::info!(
                project_id = %claim.project_id, delivery_id = %claim.delivery_id,
                %endpoint_id, attempt = number, status = attempt.status, error = error.as_deref(),
                "webhook delivery failed; no more attempts"
            ),
            (_, error) => tracing::debug!(
                project_id = %claim.project_id, delivery_id = %claim.delivery_id,
                %endpoint_id, attempt = number, status = attempt.status, error = error.as_deref(),
                next_attempt_at = ?next, "webhook attempt failed"
            ),
        }
        Ok(())
    }
}

/// Moves the claimed queue row to `next`, or removes it, if the row still carries the claim's
/// lease (a retry requested meanwhile replaced it, and stays).
async fn release(
    txn: &mut Txn,
    claim: &Claim,
    next: Option<DateTime<Utc>>,
) -> Result<(), sqlx::Error> {
    match next {
        Some(next) => {
            sqlx::query(
                "UPDATE webhook_queue SET due_at = $4
                 WHERE project_id = $1 AND delivery_id = $2 AND due_at = $3",
            )
            .bind(claim.project_id)
            .bind(&claim.delivery_id)
            .bind(claim.due_at)
            .bind(next)
            .execute(&mut **txn)
            .await?
        }
        None => {
            sqlx::query(
                "DELETE FROM webhook_queue
                 WHERE project_id = $1 AND delivery_id = $2 AND due_at = $3",
            )
            .bind(claim.project_id)
            .bind(&claim.delivery_id)
            .bind(claim.due_at)
            .execute(&mut **txn)
            .await?
        }
    };
    Ok(())
}

/// A transport failure in words, without the URL (which may carry a token in its query).
fn describe(err: reqwest::Error, timeout: Duration) -> String {
    let err = err.without_url();
    let mut source: Option<&(dyn StdError + 'static)> = Some(&err);
    while let Some(current) = source {
        if let Some(refused) = current.downcast_ref::<Refused>() {
            return refused.to_string();
        }
        source = current.source();
    }
    if err.is_timeout() {
        return format!("no answer within {} s", timeout.as_secs_f64());
    }
    let mut message = if err.is_connect() {
        "cannot connect".to_owned()
    } else {
        err.to_string()
    };
    let mut source = err.source();
    while let Some(current) = source {
        let text = current.to_string();
        if !message.ends_with(&text) {
            message.push_str(": ");
            message.push_str(&text);
        }
        source = current.source();
    }
    storable(&message)
}

/// Text Postgres can store: no NUL character.
fn storable(text: &str) -> String {
    text.replace('\0', "")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_standard_schedule_covers_more_than_a_day() {
        let schedule = Schedule::standard();
        assert_eq!(schedule.attempts(), 11);
        assert!(schedule.minimum_span() > Duration::from_secs(27 * 3600));
        assert_eq!(schedule.after(0), None);
        assert_eq!(schedule.after(11), None);
        for attempt in 1..=10u32 {
            let base = schedule.delays[attempt as usize - 1];
            let delay = schedule.after(attempt).unwrap();
            assert!(
                delay >= base && delay <= base.mul_f64(1.2),
                "{attempt}: {delay:?}"
            );
        }
    }

    #[test]
    fn a_schedule_without_jitter_is_exact() {
        let schedule = Schedule::new(vec![Duration::from_millis(50)], f64::NAN);
        assert_eq!(schedule.after(1), Some(Duration::from_millis(50)));
        assert_eq!(schedule.after(2), None);
    }
}
