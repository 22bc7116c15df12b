//! Redis is an accelerator for the gateway, never a condition of correctness: every call is bounded
//! in time and callers fall back when it fails (Postgres for keys, a local limiter for rates).

use std::{
    sync::Mutex,
    time::{Duration, Instant},
};

use redis::{
    FromRedisValue, RedisResult,
    aio::{ConnectionManager, ConnectionManagerConfig},
};
use tokio::sync::OnceCell;

use crate::Error;

/// Upper bound on any one Redis round trip from the request path.
const CALL_TIMEOUT: Duration = Duration::from_millis(250);
/// After a failed connection attempt, requests skip Redis for this long instead of each waiting.
const RECONNECT_BACKOFF: Duration = Duration::from_secs(1);

pub struct Redis {
    client: redis::Client,
    manager: OnceCell<ConnectionManager>,
    last_failure: Mutex<Option<Instant>>,
}

impl Redis {
    /// Parses the URL; connecting happens on first use, so the gateway starts without Redis.
    pub fn new(url: &str) -> Result<Self, Error> {
        Ok(Self {
            client: redis::Client::open(url)?,
            manager: OnceCell::new(),
            last_failure: Mutex::new(None),
        })
    }

    pub fn client(&self) -> &redis::Client {
        &self.client
    }

    async fn connection(&self) -> Result<ConnectionManager, Error> {
        if let Some(manager) = self.manager.get() {
            return Ok(manager.clone());
        }
        let recently_failed = self
            .last_failure
            .lock()
            .map(|last| last.is_some_and(|at| at.elapsed() < RECONNECT_BACKOFF))
            .unwrap_or(false);
        if recently_failed {
            return Err(Error::RedisUnreachable);
        }
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(CALL_TIMEOUT)
            .set_response_timeout(CALL_TIMEOUT)
            .set_number_of_retries(1);
        let connect = self.manager.get_or_try_init(|| {
            self.client
                .get_connection_manager_with_config(config.clone())
        });
        match tokio::time::timeout(CALL_TIMEOUT * 2, connect).await {
            Ok(Ok(manager)) => Ok(manager.clone()),
            failure => {
                if let Ok(mut last) = self.last_failure.lock() {
                    *last = Some(Instant::now());
                }
                match failure {
                    Ok(Err(err)) => Err(err.into()),
                    _ => Err(Error::RedisUnreachable),
                }
            }
        }
    }

    /// Runs one command with the call timeout.
    pub async fn query<T: FromRedisValue>(&self, cmd: &redis::Cmd) -> Result<T, Error> {
        let mut connection = self.connection().await?;
        let result: RedisResult<T> =
            match tokio::time::timeout(CALL_TIMEOUT, cmd.query_async(&mut connection)).await {
                Ok(result) => result,
                Err(_) => return Err(Error::RedisUnreachable),
            };
        Ok(result?)
    }

    /// Runs a Lua script with the call timeout.
    pub async fn invoke<T: FromRedisValue>(
        &self,
        invocation: &redis::ScriptInvocation<'_>,
    ) -> Result<T, Error> {
        let mut connection = self.connection().await?;
        match tokio::time::timeout(CALL_TIMEOUT, invocation.invoke_async(&mut connection)).await {
            Ok(result) => Ok(result?),
            Err(_) => Err(Error::RedisUnreachable),
        }
    }

    /// Runs a pipeline in one round trip with the call timeout.
    pub async fn pipeline<T: FromRedisValue>(&self, pipe: &redis::Pipeline) -> Result<T, Error> {
        let mut connection = self.connection().await?;
        match tokio::time::timeout(CALL_TIMEOUT, pipe.query_async(&mut connection)).await {
            Ok(result) => Ok(result?),
            Err(_) => Err(Error::RedisUnreachable),
        }
    }

    pub async fn ping(&self) -> Result<(), Error> {
        let pong: String = self.query(&redis::cmd("PING")).await?;
        if pong == "PONG" {
            Ok(())
        } else {
            Err(Error::RedisUnreachable)
        }
    }
}
