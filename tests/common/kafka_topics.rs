//! Topics on the test broker: creating them, producing records in a given order, and reading
//! a whole topic back in partition order. Included by the tests that need it with
//! `#[path = "common/kafka_topics.rs"] mod kafka_topics;` (and by `common/chain.rs`).
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::{ClientConfig, Message, Offset, TopicPartitionList};

/// Generous limit for reading a topic to its end; a hang fails instead of blocking CI.
const PATIENCE: Duration = Duration::from_secs(600);

/// Creates `topic` with `partitions` (one that exists already is left as it is).
pub async fn create_topic(brokers: &str, topic: &str, partitions: i32) {
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .create()
        .expect("admin client");
    let results = admin
        .create_topics(
            &[NewTopic::new(topic, partitions, TopicReplication::Fixed(1))],
            &AdminOptions::new().operation_timeout(Some(Duration::from_secs(10))),
        )
        .await
        .expect("create topics request");
    for r in results {
        if let Err((t, e)) = r {
            assert_eq!(
                e,
                rdkafka::types::RDKafkaErrorCode::TopicAlreadyExists,
                "creating {t}"
            );
        }
    }
}

/// Produces `(partition, key, payload)` in the order given (so each partition gets its
/// records in that order), idempotently, and waits until all are delivered.
pub fn produce(brokers: &str, topic: &str, records: &[(i32, Vec<u8>, Vec<u8>)]) {
    let producer: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("enable.idempotence", "true")
        .set("linger.ms", "5")
        .create()
        .expect("producer");
    for (partition, key, payload) in records {
        let mut record = BaseRecord::to(topic)
            .partition(*partition)
            .key(key)
            .payload(payload);
        loop {
            match producer.send(record) {
                Ok(()) => break,
                Err((e, r)) => {
                    assert_eq!(
                        e.rdkafka_error_code(),
                        Some(rdkafka::types::RDKafkaErrorCode::QueueFull),
                        "producing to {topic}: {e}"
                    );
                    record = r;
                    producer.poll(Duration::from_millis(50));
                }
            }
        }
        producer.poll(Duration::ZERO);
    }
    producer
        .flush(Duration::from_secs(60))
        .unwrap_or_else(|e| panic!("flushing to {topic}: {e}"));
    assert_eq!(
        producer.in_flight_count(),
        0,
        "undelivered records on {topic}"
    );
}

/// Every record of `topic`, from the beginning to the end it has now: payloads in
/// partition order, partition by partition. The end is where each partition reports
/// EOF and nothing more comes for 3 s (the high watermark that ListOffsets gives right
/// after a producer's last writes was seen to lag behind them on tansu, which lost the
/// last records of a topic).
pub fn read_all(brokers: &str, topic: &str) -> Vec<Vec<u8>> {
    let nonce = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set(
            "group.id",
            format!("topic-reader-{}-{nonce}", std::process::id()),
        )
        .set("enable.auto.commit", "false")
        .set("enable.partition.eof", "true")
        .create()
        .expect("consumer");
    let timeout = Duration::from_secs(10);
    let metadata = consumer
        .fetch_metadata(Some(topic), timeout)
        .expect("topic metadata");
    let partitions: Vec<i32> = metadata
        .topics()
        .iter()
        .flat_map(|t| t.partitions().iter().map(|p| p.id()))
        .collect();
    assert!(!partitions.is_empty(), "{topic} has no partitions");
    let mut list = TopicPartitionList::new();
    for &p in &partitions {
        list.add_partition_offset(topic, p, Offset::Beginning)
            .expect("partition");
    }
    consumer.assign(&list).expect("assign");
    let mut by_partition: BTreeMap<i32, Vec<Vec<u8>>> = BTreeMap::new();
    let mut at_eof: BTreeMap<i32, bool> = partitions.iter().map(|&p| (p, false)).collect();
    let deadline = Instant::now() + PATIENCE;
    let mut quiet_since = Instant::now();
    loop {
        assert!(
            Instant::now() < deadline,
            "{topic}: no end in sight: {at_eof:?}"
        );
        if at_eof.values().all(|&e| e) && quiet_since.elapsed() >= Duration::from_secs(3) {
            break;
        }
        match consumer.poll(Duration::from_millis(200)) {
            None => {}
            Some(Err(rdkafka::error::KafkaError::PartitionEOF(p))) => {
                at_eof.insert(p, true);
            }
            Some(Err(e)) => panic!("reading {topic}: {e}"),
            Some(Ok(message)) => {
                quiet_since = Instant::now();
                at_eof.insert(message.partition(), false);
                by_partition
                    .entry(message.partition())
                    .or_default()
                    .push(message.payload().unwrap_or_default().to_vec());
            }
        }
    }
    by_partition.into_values().flatten().collect()
}
