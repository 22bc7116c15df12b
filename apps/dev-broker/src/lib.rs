//! The development broker's control protocol, and topic creation that works against it and against
//! Apache Kafka alike, so tests and scripts create topics one way whatever `KAFKA_BROKERS` is.
//!
//! librdkafka's mock cluster does not implement CreateTopics, so with the development broker
//! (`DEV_BROKER_DIR` set, as the scripts do) topics are made through its control socket; otherwise
//! through the Kafka admin API.

use std::{
    io::{BufRead, BufReader, Write},
    os::unix::net::UnixStream,
    path::{Path, PathBuf},
    time::Duration,
};

use rdkafka::{
    ClientConfig,
    admin::{AdminClient, AdminOptions, NewTopic, TopicReplication},
    client::DefaultClientContext,
    error::KafkaError,
    types::RDKafkaErrorCode,
};

/// Where the scripts tell tests and tools the development broker keeps its files.
pub const DIR_VARIABLE: &str = "DEV_BROKER_DIR";
pub const SOCKET_FILE: &str = "control.sock";
pub const BOOTSTRAP_FILE: &str = "bootstrap";

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{what} {path}: {source}")]
    Io {
        what: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("the development broker answered: {0}")]
    Refused(String),
    #[error("kafka admin: {0}")]
    Kafka(#[from] KafkaError),
    #[error("creating topic {topic}: {code}")]
    CreateTopic {
        topic: String,
        code: RDKafkaErrorCode,
    },
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

pub(crate) fn io(what: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> Error {
    let path = path.to_owned();
    move |source| Error::Io { what, path, source }
}

/// Sends one command to the broker serving from `dir` and returns its answer after `ok `.
pub fn control(dir: &Path, command: &str) -> Result<String> {
    let socket = dir.join(SOCKET_FILE);
    let mut stream = UnixStream::connect(&socket).map_err(io("cannot connect to", &socket))?;
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .map_err(io("cannot configure", &socket))?;
    writeln!(stream, "{command}").map_err(io("cannot write to", &socket))?;
    stream
        .shutdown(std::net::Shutdown::Write)
        .map_err(io("cannot write to", &socket))?;
    let mut answer = String::new();
    BufReader::new(stream)
        .read_line(&mut answer)
        .map_err(io("cannot read from", &socket))?;
    let answer = answer.trim_end();
    match answer.strip_prefix("ok ") {
        Some(message) => Ok(message.to_owned()),
        None => Err(Error::Refused(answer.to_owned())),
    }
}

/// Creates each `(name, partitions)` topic unless it exists: through the development broker's
/// control socket when `DEV_BROKER_DIR` is set, else through the admin API of `brokers`.
pub async fn create_topics(brokers: &str, topics: &[(&str, i32)]) -> Result<()> {
    if let Some(dir) = std::env::var_os(DIR_VARIABLE) {
        let dir = PathBuf::from(dir);
        let commands: Vec<String> = topics
            .iter()
            .map(|(name, partitions)| format!("create-topic {name} {partitions}"))
            .collect();
        return tokio::task::spawn_blocking(move || {
            commands
                .iter()
                .try_for_each(|command| control(&dir, command).map(drop))
        })
        .await
        .map_err(|err| Error::Refused(err.to_string()))?;
    }
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .create()?;
    let new_topics: Vec<NewTopic<'_>> = topics
        .iter()
        .map(|(name, partitions)| NewTopic::new(name, *partitions, TopicReplication::Fixed(1)))
        .collect();
    let results = admin
        .create_topics(
            &new_topics,
            &AdminOptions::new().operation_timeout(Some(Duration::from_secs(10))),
        )
        .await?;
    for result in results {
        match result {
            Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((topic, code)) => return Err(Error::CreateTopic { topic, code }),
        }
    }
    Ok(())
}
