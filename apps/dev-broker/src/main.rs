//! gamify-dev-broker: a Kafka-protocol broker for development and tests, built on librdkafka's mock
//! cluster (already compiled into the project), so nothing has to be built or downloaded for long.
//!
//! `serve --dir DIR [--brokers N]` starts the cluster, writes its bootstrap address to
//! `DIR/bootstrap` and answers commands on the Unix socket `DIR/control.sock`, one line each:
//! `create-topic NAME PARTITIONS`, `broker-down ID`, `broker-up ID`, `bootstrap`. Each answer is one
//! line, `ok …` or `error …`. The mock cannot create topics over the Kafka protocol, hence the socket.
//! `ctl --dir DIR COMMAND…` sends one command and prints the answer.
//!
//! Everything lives in memory: stopping the broker loses its messages. Development only.

use std::{
    fs,
    io::{BufRead, BufReader, Write},
    os::unix::net::{UnixListener, UnixStream},
    path::{Path, PathBuf},
    process::ExitCode,
};

use gamify_dev_broker::{BOOTSTRAP_FILE, SOCKET_FILE, control};
use rdkafka::{
    error::KafkaError, mocking::MockCluster, producer::DefaultProducerContext,
    types::RDKafkaErrorCode,
};

const USAGE: &str = "usage: gamify-dev-broker serve --dir DIR [--brokers N]
       gamify-dev-broker ctl --dir DIR (create-topic NAME PARTITIONS | broker-down ID | broker-up ID | bootstrap)";

#[derive(Debug, thiserror::Error)]
enum Error {
    #[error("{0}\n{USAGE}")]
    Usage(String),
    #[error("{what} {path}: {source}")]
    Io {
        what: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("mock cluster: {0}")]
    Kafka(#[from] KafkaError),
    #[error("{0}")]
    Command(String),
}

type Result<T, E = Error> = std::result::Result<T, E>;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("gamify-dev-broker: {err}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: &[String]) -> Result<()> {
    let Some((command, rest)) = args.split_first() else {
        return Err(Error::Usage("missing command".into()));
    };
    let mut dir = None;
    let mut brokers = 1;
    let mut positional = Vec::new();
    let mut rest = rest.iter();
    while let Some(arg) = rest.next() {
        match arg.as_str() {
            "--dir" => dir = rest.next().map(PathBuf::from),
            "--brokers" => {
                brokers = rest
                    .next()
                    .and_then(|n| n.parse().ok())
                    .filter(|n| (1..=16).contains(n))
                    .ok_or_else(|| Error::Usage("--brokers takes 1–16".into()))?;
            }
            _ => positional.push(arg.as_str()),
        }
    }
    let dir = dir.ok_or_else(|| Error::Usage("--dir is required".into()))?;
    match command.as_str() {
        "serve" if positional.is_empty() => serve(&dir, brokers),
        "ctl" if !positional.is_empty() => {
            let answer = send(&dir, &positional.join(" "))?;
            println!("{answer}");
            Ok(())
        }
        _ => Err(Error::Usage(format!("unexpected arguments: {args:?}"))),
    }
}

fn io(what: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> Error {
    let path = path.to_owned();
    move |source| Error::Io { what, path, source }
}

fn serve(dir: &Path, brokers: i32) -> Result<()> {
    fs::create_dir_all(dir).map_err(io("cannot create", dir))?;
    let socket = dir.join(SOCKET_FILE);
    // A socket left by a broker that was killed would make bind fail.
    let _ = fs::remove_file(&socket);
    let cluster = MockCluster::new(brokers)?;
    let listener = UnixListener::bind(&socket).map_err(io("cannot listen on", &socket))?;
    // Written last and atomically: a script that sees the file may connect at once.
    let bootstrap = cluster.bootstrap_servers();
    let file = dir.join(BOOTSTRAP_FILE);
    let partial = dir.join("bootstrap.partial");
    fs::write(&partial, format!("{bootstrap}\n")).map_err(io("cannot write", &partial))?;
    fs::rename(&partial, &file).map_err(io("cannot write", &file))?;
    eprintln!(
        "gamify-dev-broker: {brokers} broker(s) at {bootstrap}, control socket {}",
        socket.display()
    );

    // One command at a time on this thread: the mock cluster handle is not shared across threads.
    for stream in listener.incoming() {
        match stream {
            Ok(stream) => {
                if let Err(err) = answer(&cluster, stream) {
                    eprintln!("gamify-dev-broker: control connection: {err}");
                }
            }
            Err(err) => eprintln!("gamify-dev-broker: accept: {err}"),
        }
    }
    Ok(())
}

fn answer(
    cluster: &MockCluster<'static, DefaultProducerContext>,
    stream: UnixStream,
) -> std::io::Result<()> {
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut writer = stream;
    let mut line = String::new();
    while reader.read_line(&mut line)? > 0 {
        let reply = match execute(cluster, line.trim()) {
            Ok(message) => format!("ok {message}"),
            Err(message) => format!("error {message}"),
        };
        writeln!(writer, "{}", reply.trim_end())?;
        line.clear();
    }
    Ok(())
}

fn execute(
    cluster: &MockCluster<'static, DefaultProducerContext>,
    line: &str,
) -> Result<String, String> {
    let words: Vec<&str> = line.split_whitespace().collect();
    let number = |word: &str| {
        word.parse::<i32>()
            .map_err(|_| format!("not a number: {word}"))
    };
    match words.as_slice() {
        ["create-topic", name, partitions] => {
            let partitions = number(partitions)?;
            match cluster.create_topic(name, partitions, 1) {
                Ok(()) => Ok(format!("created {name} with {partitions} partitions")),
                Err(KafkaError::MockCluster(RDKafkaErrorCode::TopicAlreadyExists)) => {
                    Ok(format!("{name} exists"))
                }
                Err(err) => Err(err.to_string()),
            }
        }
        ["broker-down", id] => cluster
            .broker_down(number(id)?)
            .map(|()| format!("broker {id} down"))
            .map_err(|err| err.to_string()),
        ["broker-up", id] => cluster
            .broker_up(number(id)?)
            .map(|()| format!("broker {id} up"))
            .map_err(|err| err.to_string()),
        ["bootstrap"] => Ok(cluster.bootstrap_servers()),
        _ => Err(format!("unknown command {line:?}")),
    }
}

fn send(dir: &Path, command: &str) -> Result<String> {
    control(dir, command).map_err(|err| Error::Command(err.to_string()))
}
