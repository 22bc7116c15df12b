//! Topic creation and metadata as `scripts/lib.sh` and the test harnesses use them: an events topic
//! and its dead-letter topic with the partition counts asked for, created again on every run.

use std::collections::BTreeMap;

use rdkafka::producer::{BaseRecord, Producer as _};

use crate::common::{
    STEP, consumer, create_topics, high_watermarks, leaders, producer, read_all, unique,
    wait_for_partitions,
};

#[test]
fn topics_get_the_partitions_asked_for_and_creating_them_again_is_not_an_error() {
    let events = unique("events");
    let dlq = format!("{events}.dlq");
    create_topics(&[(&events, 12), (&dlq, 3)]);
    wait_for_partitions(&events, 12);
    wait_for_partitions(&dlq, 3);

    let client = consumer(None, &[]);
    let events_leaders = leaders(&client, &events);
    assert_eq!(
        events_leaders.keys().copied().collect::<Vec<_>>(),
        (0..12).collect::<Vec<_>>()
    );
    assert!(events_leaders.values().all(|leader| *leader >= 0));
    assert_eq!(
        leaders(&client, &dlq).keys().copied().collect::<Vec<_>>(),
        vec![0, 1, 2]
    );
    // New topics are empty.
    assert_eq!(
        high_watermarks(&events),
        (0..12).map(|p| (p, 0)).collect::<BTreeMap<_, _>>()
    );

    // Every partition takes messages.
    let producer = producer(&[]);
    for partition in 0..12 {
        producer
            .send(
                BaseRecord::<(), _>::to(&events)
                    .partition(partition)
                    .payload("x"),
            )
            .map_err(|(err, _)| err)
            .unwrap();
    }
    producer.flush(STEP).unwrap();
    let deliveries = producer.context().deliveries();
    assert!(
        deliveries.iter().all(|d| d.error.is_none()),
        "{deliveries:?}"
    );

    // The scripts create the topics on every start: the second time is not an error, and neither
    // the partitions nor the messages change, even when a different count is asked for.
    create_topics(&[(&events, 12), (&dlq, 3)]);
    create_topics(&[(&events, 4)]);
    assert_eq!(leaders(&client, &events).len(), 12);
    assert_eq!(leaders(&client, &dlq).len(), 3);
    assert_eq!(
        high_watermarks(&events),
        (0..12).map(|p| (p, 1)).collect::<BTreeMap<_, _>>()
    );
    assert_eq!(read_all(&events).len(), 12);
}
