"""Kafka's admin calls, through kafka-python's KafkaAdminClient and
confluent-kafka's (librdkafka's) AdminClient, against a running sluice
broker.

- Topic configs: created with a topic, described with their sources,
  altered (AlterConfigs and IncrementalAlterConfigs), and refused with
  Kafka's error codes when a key is unknown or a value is not honoured.
- Broker configs: described, read-only.
- CreatePartitions: a topic grows; a count below the current one is
  INVALID_PARTITIONS.

Usage: admin_check.py BOOTSTRAP
"""

import sys

from confluent_kafka import KafkaException
from confluent_kafka.admin import (
    AdminClient,
    AlterConfigOpType,
    ConfigEntry,
    ConfigResource,
    ConfigSource,
    NewPartitions,
    NewTopic,
)
from kafka.admin import ConfigResource as KpConfigResource
from kafka.admin import ConfigResourceType, KafkaAdminClient
from kafka.admin import NewPartitions as KpNewPartitions
from kafka.admin import NewTopic as KpNewTopic

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
    admin.close()
    print("kafka-python create_partitions: ok", flush=True)


def main():
    bootstrap = sys.argv[1]
    admin = AdminClient({"bootstrap.servers": bootstrap})
    confluent_topic_configs(admin)
    kafka_python_topic_configs(bootstrap)
    confluent_create_partitions(admin)
    kafka_python_create_partitions(bootstrap)
    print("OK: admin calls", flush=True)


if __name__ == "__main__":
    main()
