"""Kafka's admin calls, through kafka-python's KafkaAdminClient and
confluent-kafka's (librdkafka's) AdminClient, against a running sluice
broker.

- Topic configs: created with a topic, described with their sources,
  altered (AlterConfigs and IncrementalAlterConfigs), and refused with
  Kafka's error codes when a key is unknown or a value is not honoured.
- Broker configs: described, read-only.
- CreatePartitions: a topic grows; a count below the current one is
  INVALID_PARTITIONS.
- DeleteRecords: a partition's log start moves up; consumers start there.
- ListOffsets v7: the offset of the largest timestamp (OffsetSpec.max_timestamp).
- DeleteGroups and OffsetDelete: an empty group and its offsets go; a
  group with a live member is NON_EMPTY_GROUP; an offset of a topic a
  member subscribes to is GROUP_SUBSCRIBED_TO_TOPIC.
- Compaction: a topic created with cleanup.policy=compact refuses a keyless
  record (INVALID_RECORD); once the cleaner has run (the broker is started
  with a short log.cleaner.backoff.ms), librdkafka and kafka-python read
  each key's latest record, tombstones as null values, over the gaps.

Usage: admin_check.py BOOTSTRAP
"""

import sys
import time

from confluent_kafka import Consumer, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import (
    AdminClient,
    AlterConfigOpType,
    ConfigEntry,
    ConfigResource,
    ConfigSource,
    NewPartitions,
    NewTopic,
    OffsetSpec,
)
from kafka.admin import ConfigResource as KpConfigResource
from kafka.admin import ConfigResourceType, KafkaAdminClient
from kafka.admin import NewPartitions as KpNewPartitions
from kafka.admin import NewTopic as KpNewTopic
from kafka.structs import OffsetAndMetadata
from kafka.structs import TopicPartition as KpTopicPartition

TIMEOUT_S = 30


def fail(message):
    print(f"FAIL: {message}", flush=True)
    sys.exit(1)


def expect(what, got, wanted):
    if got != wanted:
        fail(f"{what}: got {got!r}, expected {wanted!r}")


def confluent_topic_configs(admin):
    name = "admin-configs-ck"
    admin.create_topics([NewTopic(name, 2, 1, config={"retention.ms": "120000"})])[name].result(
        TIMEOUT_S
    )
    resource = ConfigResource("topic", name)
    described = admin.describe_configs([resource])[resource].result(TIMEOUT_S)
    expect("librdkafka retention.ms", described["retention.ms"].value, "120000")
    expect("librdkafka retention.ms source", described["retention.ms"].source,
           ConfigSource.DYNAMIC_TOPIC_CONFIG.value)
    expect("librdkafka segment.bytes source", described["segment.bytes"].source,
           ConfigSource.DEFAULT_CONFIG.value)

    changes = ConfigResource("topic", name, incremental_configs=[
        ConfigEntry("segment.ms", "3600000", incremental_operation=AlterConfigOpType.SET),
        ConfigEntry("retention.ms", None, incremental_operation=AlterConfigOpType.DELETE),
    ])
    admin.incremental_alter_configs([changes])[changes].result(TIMEOUT_S)
    described = admin.describe_configs([resource])[resource].result(TIMEOUT_S)
    expect("librdkafka segment.ms after SET", described["segment.ms"].value, "3600000")
    expect("librdkafka retention.ms after DELETE", described["retention.ms"].source,
           ConfigSource.DEFAULT_CONFIG.value)

    bogus = ConfigResource("topic", name, incremental_configs=[
        ConfigEntry("bogus.key", "1", incremental_operation=AlterConfigOpType.SET)
    ])
    try:
        admin.incremental_alter_configs([bogus])[bogus].result(TIMEOUT_S)
        fail("librdkafka: an unknown topic config was accepted")
    except KafkaException as error:
        expect("librdkafka unknown key", error.args[0].name(), "INVALID_CONFIG")

    broker = ConfigResource("broker", "0")
    described = admin.describe_configs([broker])[broker].result(TIMEOUT_S)
    if not described["node.id"].is_read_only:
        fail("librdkafka: broker configs should be read-only")
    print("librdkafka topic and broker configs: ok", flush=True)


def kafka_python_topic_configs(bootstrap):
    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    name = "admin-configs-kp"
    admin.create_topics([KpNewTopic(name, 1, 1, topic_configs={"retention.ms": "60000"})])
    resource = KpConfigResource(ConfigResourceType.TOPIC, name)
    described = admin.describe_configs([resource])["topic"][name]
    expect("kafka-python retention.ms", described["retention.ms"]["value"], "60000")
    expect("kafka-python retention.ms source", described["retention.ms"]["config_source"],
           "DYNAMIC_TOPIC_CONFIG")
    altered = admin.alter_configs(
        [KpConfigResource(ConfigResourceType.TOPIC, name, configs={"segment.ms": "7200000"})]
    )
    expect("kafka-python alter_configs", altered["topic"][name], "OK")
    described = admin.describe_configs([resource])["topic"][name]
    expect("kafka-python segment.ms", described["segment.ms"]["value"], "7200000")
    refused = admin.alter_configs(
        [KpConfigResource(ConfigResourceType.TOPIC, name, configs={"cleanup.policy": "bogus"})]
    )
    if "InvalidConfigurationError" not in str(refused["topic"][name]):
        fail(f"kafka-python: a bad cleanup.policy gave {refused!r}")
    brokers = admin.describe_configs(
        [KpConfigResource(ConfigResourceType.BROKER, "0")], config_filter="all"
    )["broker"]["0"]
    if not brokers["log.retention.ms"]["read_only"]:
        fail("kafka-python: broker configs should be read-only")
    admin.close()
    print("kafka-python topic and broker configs: ok", flush=True)


def confluent_create_partitions(admin):
    name = "admin-grow-ck"
    admin.create_topics([NewTopic(name, 1, 1)])[name].result(TIMEOUT_S)
    admin.create_partitions([NewPartitions(name, 3)])[name].result(TIMEOUT_S)
    partitions = admin.list_topics(name, timeout=TIMEOUT_S).topics[name].partitions
    expect("librdkafka partitions after create_partitions", len(partitions), 3)
    try:
        admin.create_partitions([NewPartitions(name, 2)])[name].result(TIMEOUT_S)
        fail("librdkafka: shrinking a topic was accepted")
    except KafkaException as error:
        expect("librdkafka shrink", error.args[0].name(), "INVALID_PARTITIONS")
    print("librdkafka create_partitions: ok", flush=True)


def kafka_python_create_partitions(bootstrap):
    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    name = "admin-grow-kp"
    admin.create_topics([KpNewTopic(name, 2, 1)])
    admin.create_partitions({name: KpNewPartitions(total_count=4)})
    described = admin.describe_topics([name])
    expect("kafka-python partitions after create_partitions", len(described[0]["partitions"]), 4)
    # DescribeTopicPartitions (what kafka-python 3 calls), paged by a cursor.
    page = admin.describe_topic_partitions([name], response_partition_limit=3)
    expect("kafka-python describe_topic_partitions page",
           [p["partition_index"] for p in page["topics"][0]["partitions"]], [0, 1, 2])
    expect("kafka-python describe_topic_partitions cursor", page["next_cursor"],
           {"topic_name": name, "partition_index": 3})
    admin.close()
    print("kafka-python create_partitions: ok", flush=True)


def live_member(bootstrap, group, topic):
    """A confluent consumer in `group`, subscribed to `topic`, once it has
    its assignment."""
    consumer = Consumer({
        "bootstrap.servers": bootstrap,
        "group.id": group,
        "auto.offset.reset": "earliest",
        "enable.auto.commit": False,
    })
    consumer.subscribe([topic])
    deadline = time.time() + TIMEOUT_S
    while not consumer.assignment():
        if time.time() > deadline:
            fail(f"librdkafka: no assignment in {group}")
        consumer.poll(0.2)
    return consumer


def confluent_delete_groups(admin, bootstrap):
    topic = "admin-groups-ck"
    admin.create_topics([NewTopic(topic, 1, 1)])[topic].result(TIMEOUT_S)
    member = live_member(bootstrap, "ck-live", topic)
    member.commit(offsets=[TopicPartition(topic, 0, 0)], asynchronous=False)
    try:
        admin.delete_consumer_groups(["ck-live"])["ck-live"].result(TIMEOUT_S)
        fail("librdkafka: a group with a live member was deleted")
    except KafkaException as error:
        expect("librdkafka delete of a live group", error.args[0].name(), "NON_EMPTY_GROUP")
    kp_admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    refused = kp_admin.delete_group_offsets("ck-live", [KpTopicPartition(topic, 0)])
    expect("kafka-python delete_group_offsets of a subscribed topic",
           [getattr(e, "__name__", str(e)) for e in refused.values()],
           ["GroupSubscribedToTopicError"])
    kp_admin.close()
    member.close()
    admin.delete_consumer_groups(["ck-live"])["ck-live"].result(TIMEOUT_S)
    listed = admin.list_consumer_groups().result(TIMEOUT_S)
    if any(g.group_id == "ck-live" for g in listed.valid):
        fail("librdkafka: the deleted group is still listed")
    print("librdkafka delete_consumer_groups: ok", flush=True)


def kafka_python_delete_groups(bootstrap):
    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    topic = "admin-groups-kp"
    admin.create_topics([KpNewTopic(topic, 2, 1)])
    offsets = {KpTopicPartition(topic, p): OffsetAndMetadata(5, "", -1) for p in (0, 1)}
    admin.alter_group_offsets("kp-empty", offsets)
    deleted = admin.delete_group_offsets("kp-empty", [KpTopicPartition(topic, 0)])
    expect("kafka-python delete_group_offsets",
           [getattr(e, "__name__", str(e)) for e in deleted.values()],
           ["NoError"])
    left = admin.list_group_offsets({"kp-empty": None})
    kept = sorted(tp.partition for tp in left["kp-empty"])
    expect("kafka-python offsets left", kept, [1])
    result = admin.delete_groups(["kp-empty", "kp-never"])
    names = {group: getattr(error, "__name__", str(error)) for group, error in result.items()}
    expect("kafka-python delete_groups", names,
           {"kp-empty": "OK", "kp-never": "GroupIdNotFoundError"})
    admin.close()
    print("kafka-python delete_groups and delete_group_offsets: ok", flush=True)


def confluent_delete_records(admin, bootstrap):
    topic = "admin-records-ck"
    admin.create_topics([NewTopic(topic, 1, 1)])[topic].result(TIMEOUT_S)
    producer = Producer({"bootstrap.servers": bootstrap})
    for i in range(10):
        producer.produce(topic, value=f"v{i}".encode(), partition=0)
    producer.flush(TIMEOUT_S)
    newest = admin.list_offsets({TopicPartition(topic, 0): OffsetSpec.max_timestamp()})
    found = list(newest.values())[0].result(TIMEOUT_S)
    if not 0 <= found.offset < 10 or found.timestamp <= 0:
        fail(f"librdkafka: max_timestamp gave offset {found.offset} at {found.timestamp}")
    deleted = admin.delete_records([TopicPartition(topic, 0, 6)])
    result = list(deleted.values())[0].result(TIMEOUT_S)
    expect("librdkafka delete_records low watermark", result.low_watermark, 6)
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "records-ck",
                         "auto.offset.reset": "earliest"})
    low, high = consumer.get_watermark_offsets(TopicPartition(topic, 0), timeout=TIMEOUT_S)
    expect("librdkafka watermarks after delete_records", (low, high), (6, 10))
    consumer.close()
    try:
        list(admin.delete_records([TopicPartition(topic, 0, 99)]).values())[0].result(TIMEOUT_S)
        fail("librdkafka: deleting past the high watermark was accepted")
    except KafkaException as error:
        expect("librdkafka delete past the end", error.args[0].name(), "OFFSET_OUT_OF_RANGE")
    print("librdkafka delete_records: ok", flush=True)


def kafka_python_delete_records(bootstrap):
    from kafka import KafkaProducer
    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    topic = "admin-records-kp"
    admin.create_topics([KpNewTopic(topic, 1, 1)])
    producer = KafkaProducer(bootstrap_servers=bootstrap)
    for i in range(5):
        producer.send(topic, value=f"v{i}".encode(), partition=0)
    producer.flush()
    producer.close()
    result = admin.delete_records({KpTopicPartition(topic, 0): 3})
    expect("kafka-python delete_records", result[KpTopicPartition(topic, 0)]["low_watermark"], 3)
    admin.close()
    print("kafka-python delete_records: ok", flush=True)


def read_partition(bootstrap, topic):
    """Every record of partition 0, read with librdkafka, as (offset, key, value)."""
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"{topic}-reader",
                         "auto.offset.reset": "earliest", "enable.partition.eof": True})
    consumer.assign([TopicPartition(topic, 0, 0)])
    records = []
    deadline = time.time() + TIMEOUT_S
    while time.time() < deadline:
        message = consumer.poll(1.0)
        if message is None:
            continue
        if message.error():
            if message.error().name() == "_PARTITION_EOF":
                break
            fail(f"librdkafka read of {topic}: {message.error()}")
        records.append((message.offset(), message.key(), message.value()))
    consumer.close()
    return records


def compaction(admin, bootstrap):
    from kafka import KafkaConsumer
    topic = "compacted-ck"
    admin.create_topics([NewTopic(topic, 1, 1, config={"cleanup.policy": "compact",
                                                        "segment.ms": "100"})])[topic].result(
        TIMEOUT_S
    )
    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 0})
    latest = {}
    for i in range(12):
        key = f"k{i % 3}".encode()
        value = None if i == 9 else f"v{i}".encode()
        producer.produce(topic, key=key, value=value, partition=0)
        producer.flush(TIMEOUT_S)
        latest[key] = value
        time.sleep(0.15)  # past segment.ms: the next append rolls a segment
    refused = []
    producer.produce(topic, value=b"keyless", partition=0,
                     on_delivery=lambda error, _message: refused.append(error))
    producer.flush(TIMEOUT_S)
    if not refused or refused[0] is None or refused[0].name() != "INVALID_RECORD":
        fail(f"librdkafka: a keyless record on a compacted topic gave {refused!r}")
    # The broker cleans every 500 ms in this test; give it a few passes.
    deadline = time.time() + TIMEOUT_S
    while True:
        records = read_partition(bootstrap, topic)
        if len(records) < 12 or time.time() > deadline:
            break
        time.sleep(0.5)
    if len(records) >= 12:
        fail(f"librdkafka: the compacted topic was never cleaned: {records!r}")
    last = {}
    for _offset, key, value in records:
        last[key] = value
    expect("librdkafka: each key's latest record after cleaning", last, latest)
    kp = KafkaConsumer(bootstrap_servers=bootstrap, auto_offset_reset="earliest",
                       consumer_timeout_ms=3000)
    partition = KpTopicPartition(topic, 0)
    kp.assign([partition])
    kp.seek_to_beginning(partition)
    kp_records = [(m.offset, m.key, m.value) for m in kp]
    end = kp.end_offsets([partition])[partition]
    expect("kafka-python reads the compacted partition as librdkafka does", kp_records, records)
    expect("kafka-python's position passes the gaps to the end", kp.position(partition), end)
    kp.close()
    print("compaction: ok", flush=True)


def main():
    bootstrap = sys.argv[1]
    admin = AdminClient({"bootstrap.servers": bootstrap})
    confluent_topic_configs(admin)
    kafka_python_topic_configs(bootstrap)
    confluent_create_partitions(admin)
    kafka_python_create_partitions(bootstrap)
    confluent_delete_groups(admin, bootstrap)
    kafka_python_delete_groups(bootstrap)
    confluent_delete_records(admin, bootstrap)
    kafka_python_delete_records(bootstrap)
    compaction(admin, bootstrap)
    print("OK: admin calls", flush=True)


if __name__ == "__main__":
    main()
