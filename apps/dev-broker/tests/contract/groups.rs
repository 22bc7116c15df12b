//! Consumer groups: members split the partitions, a clean leave rebalances at once, a member that
//! dies without leaving is expired after the session timeout, and committed offsets outlive the
//! consumer that committed them.
//!
//! A member that "dies" must really stop heartbeating, so it runs in a child process (this test
//! binary running `member_process`) that is killed with SIGKILL.

use std::{
    collections::{BTreeMap, BTreeSet},
    io::{BufRead, BufReader, Read, Write},
    process::{Child, Command, Stdio},
    sync::mpsc,
    time::{Duration, Instant},
};

use rdkafka::{
    Offset, TopicPartitionList,
    consumer::{BaseConsumer, CommitMode, Consumer},
    producer::{BaseRecord, Producer as _},
};

use crate::common::{
    Record, SESSION, STEP, assert_contiguous_to_end, assignment, committed, development_broker,
    member, poll, producer, rebalance_bound, take, topic, unique, wait_until,
};

/// The session timer runs in steps; Kafka checks every few hundred milliseconds, the mock every
/// second.
const EXPIRY_STEP: Duration = Duration::from_secs(1);

const MEMBER_TEST: &str = "groups::member_process";
const MEMBER_VARIABLE: &str = "CONTRACT_MEMBER";

/// Sends `per_partition` messages to each of `partitions` partitions, `p{partition}-{i}`.
fn fill(topic: &str, partitions: i32, per_partition: usize) {
    let producer = producer(&[]);
    for partition in 0..partitions {
        for i in 0..per_partition {
            let payload = format!("p{partition}-{i}");
            producer
                .send(
                    BaseRecord::<(), _>::to(topic)
                        .partition(partition)
                        .payload(&payload),
                )
                .map_err(|(err, _)| err)
                .unwrap();
        }
    }
    producer.flush(STEP).unwrap();
    let deliveries = producer.context().deliveries();
    assert_eq!(deliveries.len(), partitions as usize * per_partition);
    assert!(
        deliveries.iter().all(|d| d.error.is_none()),
        "{deliveries:?}"
    );
}

fn complete_split(a: &BTreeSet<i32>, b: &BTreeSet<i32>, partitions: usize) -> bool {
    !a.is_empty() && !b.is_empty() && a.is_disjoint(b) && a.len() + b.len() == partitions
}

#[test]
fn two_members_split_the_partitions_with_no_overlap_and_full_coverage() {
    let topic = topic("split", 6);
    let group = unique("split");
    let a = member(&group, &topic, SESSION);
    let b = member(&group, &topic, SESSION);
    wait_until(STEP, "the two members to split the partitions", || {
        poll(&a);
        poll(&b);
        complete_split(&assignment(&a, &topic), &assignment(&b, &topic), 6)
    });
    let (owned_a, owned_b) = (assignment(&a, &topic), assignment(&b, &topic));

    fill(&topic, 6, 20);
    let (mut read_a, mut read_b) = (Vec::new(), Vec::new());
    wait_until(STEP, "120 messages between the two members", || {
        read_a.extend(poll(&a));
        read_b.extend(poll(&b));
        read_a.len() + read_b.len() >= 120
    });
    assert_eq!(assignment(&a, &topic), owned_a, "the assignment changed");
    assert_eq!(assignment(&b, &topic), owned_b, "the assignment changed");
    assert!(read_a.iter().all(|r| owned_a.contains(&r.partition)));
    assert!(read_b.iter().all(|r| owned_b.contains(&r.partition)));
    let mut all: Vec<Record> = read_a.into_iter().chain(read_b).collect();
    all.sort_by_key(|r| (r.partition, r.offset));
    assert_contiguous_to_end(&topic, &all, &BTreeMap::new());
}

#[test]
fn a_clean_leave_rebalances_without_waiting_for_the_session_to_expire() {
    // Without the leave, the takeover would wait for the session to expire and then for a
    // rebalance: at least 8 s on Kafka, 15 s on the development broker. The bound is 5 s on Kafka
    // and 12 s on the development broker (see `rebalance_bound`).
    let session = Duration::from_secs(8);
    let topic = topic("leave", 4);
    let group = unique("leave");
    let stays = member(&group, &topic, session);
    let leaves = member(&group, &topic, session);
    wait_until(STEP, "the two members to split the partitions", || {
        poll(&stays);
        poll(&leaves);
        complete_split(&assignment(&stays, &topic), &assignment(&leaves, &topic), 4)
    });
    // Dropping a consumer closes it: it revokes its partitions and sends LeaveGroup.
    drop(leaves);
    let bound = rebalance_bound(session);
    let took = wait_until(
        bound,
        &format!("the remaining member to take over after a clean leave, within {bound:?}"),
        || {
            poll(&stays);
            assignment(&stays, &topic).len() == 4
        },
    );
    println!(
        "clean leave: all partitions reassigned after {took:?} (session timeout {session:?}, \
         development broker: {})",
        development_broker()
    );
}

#[test]
fn a_member_that_dies_without_leaving_is_expired_and_its_partitions_reassigned() {
    let topic = topic("dead-member", 4);
    let group = unique("dead-member");
    let mut dying = ChildMember::spawn(&group, &topic, 0);
    dying.wait_for_assignment("all partitions", |owned| owned.len() == 4);
    let survivor = member(&group, &topic, SESSION);
    wait_until(STEP, "the two members to split the partitions", || {
        poll(&survivor);
        complete_split(&assignment(&survivor, &topic), &dying.assigned(), 4)
    });

    dying.kill();
    let bound = SESSION + EXPIRY_STEP + rebalance_bound(SESSION);
    let took = wait_until(
        bound,
        &format!("the survivor to be assigned the killed member's partitions within {bound:?}"),
        || {
            poll(&survivor);
            assignment(&survivor, &topic).len() == 4
        },
    );
    println!(
        "member killed: all partitions reassigned after {took:?} (session timeout {SESSION:?}, \
         development broker: {})",
        development_broker()
    );
}

/// The case that stalled ingestion on the previous development broker: the only worker is killed
/// and started again at once with the same group. The new member joins while the dead one is
/// still registered; once that one expires the new member must get every partition and resume
/// from the dead member's commits.
#[test]
fn the_only_member_killed_and_replaced_at_once_hands_over_its_partitions_and_commits() {
    let topic = topic("replaced", 4);
    let group = unique("replaced");
    fill(&topic, 4, 25);
    let mut dying = ChildMember::spawn(&group, &topic, 40);
    dying.wait_for("40 messages read and committed", |line| {
        line == "committed 40"
    });
    let at_kill = committed(&group, &topic);
    assert_eq!(at_kill.values().sum::<i64>(), 40, "{at_kill:?}");

    dying.kill();
    let replacement = member(&group, &topic, SESSION);
    let mut read = Vec::new();
    let bound = SESSION + EXPIRY_STEP + rebalance_bound(SESSION);
    let took = wait_until(
        bound,
        &format!("the replacement to be assigned every partition within {bound:?}"),
        || {
            read.extend(poll(&replacement));
            assignment(&replacement, &topic).len() == 4
        },
    );
    println!(
        "only member killed and replaced: all partitions assigned after {took:?} (session timeout \
         {SESSION:?}, development broker: {})",
        development_broker()
    );
    let rest = take(&replacement, 60 - read.len());
    read.extend(rest);
    read.sort_by_key(|r| (r.partition, r.offset));
    assert_contiguous_to_end(&topic, &read, &at_kill);
}

#[test]
fn committed_offsets_survive_a_consumer_restart() {
    let topic = topic("restart", 3);
    let group = unique("restart");
    fill(&topic, 3, 30);
    let first = member(&group, &topic, SESSION);
    let read = take(&first, 45);
    let next: BTreeMap<i32, i64> = read.iter().map(|r| (r.partition, r.offset + 1)).collect();
    let mut list = TopicPartitionList::new();
    for (partition, offset) in &next {
        list.add_partition_offset(&topic, *partition, Offset::Offset(*offset))
            .unwrap();
    }
    first.commit(&list, CommitMode::Sync).unwrap();
    drop(first);
    assert_eq!(committed(&group, &topic), next);

    let second = member(&group, &topic, SESSION);
    let mut rest = take(&second, 45);
    rest.sort_by_key(|r| (r.partition, r.offset));
    assert_contiguous_to_end(&topic, &rest, &next);
    drop(second);
    assert_eq!(
        committed(&group, &topic),
        next,
        "reading alone commits nothing"
    );
}

/// A group member in a child process, reporting on stdout.
struct ChildMember {
    child: Child,
    lines: mpsc::Receiver<String>,
    assigned: BTreeSet<i32>,
}

impl ChildMember {
    /// Joins `group` on `topic`; commits each of the first `commit` messages it reads.
    fn spawn(group: &str, topic: &str, commit: usize) -> Self {
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args([MEMBER_TEST, "--exact", "--ignored", "--nocapture"])
            .args(["--test-threads=1", "--quiet"])
            .env(MEMBER_VARIABLE, format!("{group} {topic} {commit}"))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let (sender, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if let Some(report) = line.strip_prefix("member: ") {
                    if sender.send(report.to_owned()).is_err() {
                        break;
                    }
                }
            }
        });
        Self {
            child,
            lines,
            assigned: BTreeSet::new(),
        }
    }

    fn take_report(&mut self, line: &str) {
        if let Some(list) = line.strip_prefix("assigned ") {
            self.assigned = list.split(',').filter_map(|p| p.parse().ok()).collect();
        }
    }

    /// The assignment the child reported last; waits up to 100 ms for news.
    fn assigned(&mut self) -> BTreeSet<i32> {
        if let Ok(line) = self.lines.recv_timeout(Duration::from_millis(100)) {
            self.take_report(&line);
            while let Ok(line) = self.lines.try_recv() {
                self.take_report(&line);
            }
        }
        self.assigned.clone()
    }

    /// Waits for a report `accept` takes; panics naming `what` if the child exits or stays silent.
    fn wait_for(&mut self, what: &str, mut accept: impl FnMut(&str) -> bool) {
        let deadline = Instant::now() + STEP;
        loop {
            match self
                .lines
                .recv_timeout(deadline.saturating_duration_since(Instant::now()))
            {
                Ok(line) => {
                    self.take_report(&line);
                    if accept(&line) {
                        return;
                    }
                }
                Err(err) => panic!("the member process did not report {what}: {err}"),
            }
        }
    }

    fn wait_for_assignment(&mut self, what: &str, mut accept: impl FnMut(&BTreeSet<i32>) -> bool) {
        self.wait_for(what, |line| {
            line.strip_prefix("assigned ").is_some_and(|list| {
                accept(&list.split(',').filter_map(|p| p.parse().ok()).collect())
            })
        });
    }

    /// SIGKILL: no LeaveGroup, no further heartbeat.
    fn kill(&mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }
}

impl Drop for ChildMember {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Run only as a child by `ChildMember`: a member of the group named in `CONTRACT_MEMBER` that
/// reports each assignment change and, after committing its first N messages, `committed N`.
#[test]
#[ignore = "not a test: the group member process the tests above start and kill"]
fn member_process() {
    let spec = std::env::var(MEMBER_VARIABLE)
        .unwrap_or_else(|_| panic!("{MEMBER_VARIABLE} is set by the tests that run this"));
    let [group, topic, commit] = spec.split(' ').collect::<Vec<_>>()[..] else {
        panic!("{MEMBER_VARIABLE}={spec:?}: expected GROUP TOPIC COMMIT");
    };
    let commit: usize = commit.parse().unwrap();
    // Never outlive the test: its end of stdin closes when it exits.
    std::thread::spawn(|| {
        let _ = std::io::stdin().read_to_end(&mut Vec::new());
        std::process::exit(0);
    });
    let report = |line: String| {
        let mut stdout = std::io::stdout().lock();
        writeln!(stdout, "member: {line}").unwrap();
        stdout.flush().unwrap();
    };
    let consumer: BaseConsumer = member(group, topic, SESSION);
    let mut reported = None;
    let mut read = 0;
    loop {
        if let Some(message) = consumer.poll(Duration::from_millis(100)) {
            let message = message.unwrap();
            if read < commit {
                consumer.commit_message(&message, CommitMode::Sync).unwrap();
                read += 1;
                if read == commit {
                    report(format!("committed {commit}"));
                }
            }
        }
        let owned = assignment(&consumer, topic);
        if reported.as_ref() != Some(&owned) {
            let list: Vec<String> = owned.iter().map(i32::to_string).collect();
            report(format!("assigned {}", list.join(",")));
            reported = Some(owned);
        }
    }
}
