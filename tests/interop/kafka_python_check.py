"""kafka-python against a running sluice broker.

Produces keyed messages with KafkaProducer's defaults (idempotence on in
kafka-python 3), consumes them in a consumer group with manual commits, and
checks that every message came back, in order within each partition, and that
a new member of the group resumes from the committed offsets.

Usage: kafka_python_check.py BOOTSTRAP TOPIC
"""

import sys
import time

from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer, TopicPartition
from kafka.admin import NewTopic
from kafka.errors import InvalidReplicationAssignmentError

MESSAGES = 300
KEYS = 10
PARTITIONS = 3
DEADLINE_S = 60


def fail(message):
    print(f"FAIL: {message}", flush=True)
    sys.exit(1)


def check_replica_assignment(admin, placed):
    # A topic placed by hand (kafka-topics --replica-assignment); a broker
    # that does not exist is refused with INVALID_REPLICA_ASSIGNMENT.
    node = admin.describe_cluster()["brokers"][0]["broker_id"]
    admin.create_topics([NewTopic(placed, replica_assignments={0: [node], 1: [node]})])
    described = admin.describe_topics([placed])[0]["partitions"]
    replicas = sorted((p["partition_index"], p["replica_nodes"]) for p in described)
    if replicas != [(0, [node]), (1, [node])]:
        fail(f"{placed} was placed as {replicas}, not on broker {node}")
    try:
        admin.create_topics([NewTopic(placed + "-bad", replica_assignments={0: [node + 7]})])
    except InvalidReplicationAssignmentError:
        pass
    else:
        fail("an assignment naming an unknown broker was accepted")
    print(f"replica assignment: {placed} on broker {node}; an unknown broker refused", flush=True)


def main():
    bootstrap, topic = sys.argv[1], sys.argv[2]
    admin = KafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=10000)
    admin.create_topics([NewTopic(topic, num_partitions=PARTITIONS, replication_factor=1)])
    check_replica_assignment(admin, topic + "-placed")
    admin.close()

    producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=5)
    print(f"producer idempotence: {producer.config.get('enable_idempotence')}", flush=True)
    sent = {}
    futures = []
    for i in range(MESSAGES):
        key = f"k{i % KEYS}"
        value = f"{key}:{i}"
        futures.append((key, value, producer.send(topic, key=key.encode(), value=value.encode())))
    producer.flush(timeout=30)
    for key, value, future in futures:
        metadata = future.get(timeout=30)
        sent[(metadata.partition, metadata.offset)] = (key, value)
    producer.close()
    if len(sent) != MESSAGES:
        fail(f"{len(sent)} distinct (partition, offset) pairs for {MESSAGES} sends")

    consumer = KafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        group_id="py-group",
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        session_timeout_ms=10000,
        heartbeat_interval_ms=1000,
    )
    received = {}
    start = time.monotonic()
    while len(received) < MESSAGES and time.monotonic() - start < DEADLINE_S:
        for tp, records in consumer.poll(timeout_ms=1000).items():
            for record in records:
                received[(tp.partition, record.offset)] = (record.key.decode(), record.value.decode())
        consumer.commit()
    consumer.close()
    if received != sent:
        missing = set(sent) - set(received)
        fail(f"received {len(received)} of {MESSAGES}; missing e.g. {sorted(missing)[:5]}")

    # Within each partition, each key's messages are in send order.
    last_seen = {}
    for (partition, offset) in sorted(received):
        key, value = received[(partition, offset)]
        sequence = int(value.split(":")[1])
        if last_seen.get(key, -1) >= sequence:
            fail(f"key {key} out of order at partition {partition} offset {offset}")
        last_seen[key] = sequence

    # A new member of the group starts from the committed offsets: nothing left.
    resumed = KafkaConsumer(topic, bootstrap_servers=bootstrap, group_id="py-group", enable_auto_commit=False)
    leftovers = 0
    start = time.monotonic()
    while time.monotonic() - start < 5:
        leftovers += sum(len(r) for r in resumed.poll(timeout_ms=500).values())
    ends = resumed.end_offsets([TopicPartition(topic, p) for p in range(PARTITIONS)])
    for tp, end in ends.items():
        committed = resumed.committed(tp)
        if committed != end:
            fail(f"committed {committed} for {tp} but the log ends at {end}")
    resumed.close()
    if leftovers:
        fail(f"a resumed member re-read {leftovers} committed messages")
    print(f"OK: {MESSAGES} messages produced idempotently, consumed in a group, committed and resumed", flush=True)


if __name__ == "__main__":
    main()
