"""Static membership (KIP-345) and the refusal of transactions, through
librdkafka (confluent-kafka) and kafka-python, against a running sluice
broker.

- A static member (group.instance.id) that closes and comes back within its
  session takes its membership back: DescribeGroups shows one member with
  that instance id, never null, and the group stays Stable.
- A transactional producer fails at init_transactions at once, with an error
  that says transactions are not implemented, instead of waiting out its
  timeouts.

Usage: group_features_check.py BOOTSTRAP
"""

import sys
import time

from confluent_kafka import Consumer, ConsumerGroupType, KafkaException, Producer, TopicCollection
from confluent_kafka.admin import AdminClient, NewTopic
from kafka import KafkaConsumer, KafkaProducer
from kafka.admin import KafkaAdminClient

DEADLINE_S = 60
TRANSACTION_FAIL_S = 5


def fail(message):
    print(f"FAIL: {message}", flush=True)
    sys.exit(1)


def produce(bootstrap, topic, count):
    producer = Producer({"bootstrap.servers": bootstrap})
    for i in range(count):
        producer.produce(topic, key=f"k{i}", value=f"v{i}")
    if producer.flush(30) != 0:
        fail("records not delivered")


def confluent_consumer(bootstrap, group, instance):
    return Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": group,
            "group.instance.id": instance,
            "session.timeout.ms": 30000,
            "auto.offset.reset": "earliest",
        }
    )


def consume_some(consumer, topic):
    consumer.subscribe([topic])
    deadline = time.time() + DEADLINE_S
    while time.time() < deadline:
        message = consumer.poll(0.5)
        if message is not None and message.error() is None:
            consumer.commit(asynchronous=False)
            return
    fail(f"no message from {topic}")


def describe_confluent(admin, group):
    future = admin.describe_consumer_groups([group])[group]
    return future.result(30)


def static_membership_confluent(bootstrap):
    admin = AdminClient({"bootstrap.servers": bootstrap})
    admin.create_topics([NewTopic("static-rd", num_partitions=2, replication_factor=1)])[
        "static-rd"
    ].result(30)
    produce(bootstrap, "static-rd", 20)
    first = confluent_consumer(bootstrap, "static-rd-group", "rd-instance")
    consume_some(first, "static-rd")
    before = describe_confluent(admin, "static-rd-group")
    instances = [m.group_instance_id for m in before.members]
    if instances != ["rd-instance"]:
        fail(f"librdkafka: instance ids {instances}, expected ['rd-instance']")
    first.close()
    second = confluent_consumer(bootstrap, "static-rd-group", "rd-instance")
    consume_some(second, "static-rd")
    after = describe_confluent(admin, "static-rd-group")
    instances = [m.group_instance_id for m in after.members]
    if instances != ["rd-instance"]:
        fail(f"librdkafka after restart: instance ids {instances}")
    if str(after.state).split(".")[-1].upper() != "STABLE":
        fail(f"librdkafka after restart: group state {after.state}")
    list_groups_by_type(admin, "static-rd-group")
    second.close()
    print("librdkafka static member: ok", flush=True)


def list_groups_by_type(admin, group):
    # ListGroups v5 (KIP-848): every sluice group is a classic one.
    def listed(types):
        result = admin.list_consumer_groups(request_timeout=30, types=types).result()
        if result.errors:
            fail(f"librdkafka: list_consumer_groups({types}) errors {result.errors}")
        return {g.group_id: g.type for g in result.valid}

    classic = listed({ConsumerGroupType.CLASSIC})
    if classic.get(group) != ConsumerGroupType.CLASSIC:
        fail(f"librdkafka: {group} is not listed as a classic group: {classic}")
    consumer = listed({ConsumerGroupType.CONSUMER})
    if group in consumer:
        fail(f"librdkafka: {group} listed as a KIP-848 consumer group: {consumer}")
    print("librdkafka lists groups by type: ok", flush=True)


def static_membership_kafka_python(bootstrap):
    produce(bootstrap, "static-py", 20)
    admin = KafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=10000)

    def member_instances():
        group = admin.describe_groups(["static-py-group"])["static-py-group"]
        return group, [m["group_instance_id"] for m in group["members"]]

    def run():
        consumer = KafkaConsumer(
            "static-py",
            bootstrap_servers=bootstrap,
            group_id="static-py-group",
            group_instance_id="py-instance",
            session_timeout_ms=30000,
            auto_offset_reset="earliest",
            consumer_timeout_ms=10000,
        )
        for _ in consumer:
            consumer.commit()
            break
        else:
            fail("kafka-python: no message")
        return consumer

    first = run()
    _, instances = member_instances()
    if instances != ["py-instance"]:
        fail(f"kafka-python: instance ids {instances}")
    first.close()
    second = run()
    group, instances = member_instances()
    if instances != ["py-instance"]:
        fail(f"kafka-python after restart: instance ids {instances}")
    if group["group_state"] != "Stable":
        fail(f"kafka-python after restart: group state {group['group_state']}")
    second.close()
    admin.close()
    print("kafka-python static member: ok", flush=True)


def transactions_refused(bootstrap):
    started = time.time()
    producer = Producer({"bootstrap.servers": bootstrap, "transactional.id": "tx-rd"})
    try:
        producer.init_transactions(30)
        fail("librdkafka: init_transactions succeeded")
    except KafkaException as error:
        if "transactions" not in str(error):
            fail(f"librdkafka: unexpected error {error}")
    if time.time() - started > TRANSACTION_FAIL_S:
        fail(f"librdkafka: init_transactions took {time.time() - started:.1f}s")
    started = time.time()
    try:
        producer = KafkaProducer(bootstrap_servers=bootstrap, transactional_id="tx-py")
        producer.init_transactions()
        fail("kafka-python: init_transactions succeeded")
    except Exception as error:  # kafka-python raises its own error types
        if "TransactionalIdAuthorizationFailed" not in type(error).__name__:
            fail(f"kafka-python: unexpected error {error!r}")
    if time.time() - started > TRANSACTION_FAIL_S:
        fail(f"kafka-python: init_transactions took {time.time() - started:.1f}s")
    print("transactional producers refused at once: ok", flush=True)


def authorized_operations(bootstrap):
    # Without an authorizer Kafka reports every operation a resource
    # supports when a client asks; librdkafka asks through Metadata.
    admin = AdminClient({"bootstrap.servers": bootstrap})
    admin.create_topics([NewTopic("authz", num_partitions=1, replication_factor=1)])[
        "authz"
    ].result(30)
    names = lambda ops: sorted(str(op).split(".")[-1] for op in (ops or []))
    topic = admin.describe_topics(TopicCollection(["authz"]), include_authorized_operations=True)
    topic_ops = names(topic["authz"].result(30).authorized_operations)
    expected = ["ALTER", "ALTER_CONFIGS", "CREATE", "DELETE", "DESCRIBE", "DESCRIBE_CONFIGS",
                "READ", "WRITE"]
    if topic_ops != expected:
        fail(f"librdkafka: topic authorized operations {topic_ops}, expected {expected}")
    cluster = admin.describe_cluster(include_authorized_operations=True).result(30)
    if "DESCRIBE" not in names(cluster.authorized_operations):
        fail(f"librdkafka: cluster authorized operations {cluster.authorized_operations}")
    print("librdkafka authorized operations: ok", flush=True)


def main():
    bootstrap = sys.argv[1]
    authorized_operations(bootstrap)
    static_membership_confluent(bootstrap)
    static_membership_kafka_python(bootstrap)
    transactions_refused(bootstrap)
    print("OK: static membership and transaction refusal", flush=True)


if __name__ == "__main__":
    main()
