"""A kafka-python member of a consumer group shared with sluice's Rust consumer.

Usage: mixed_group.py BOOTSTRAP TOPIC GROUP STABLE_SECONDS TIMEOUT_SECONDS [MARKER]

Joins GROUP subscribed to TOPIC, polls until its assignment has been
non-empty and unchanged for STABLE_SECONDS, prints it as
"ASSIGNED topic:partition,..." and closes (leaving the group). Also prints,
for keys key-0..key-19 produced with kafka-python's default (murmur2)
partitioner, "KEY key-i partition" so the Rust side can compare placement.
If MARKER is given, creates that file once it first has an assignment, so the
Rust member can wait and join second (making this member the leader).
"""
import sys
import time

from kafka import KafkaConsumer, KafkaProducer

bootstrap, topic, group, stable_s, timeout_s = sys.argv[1:6]
marker = sys.argv[6] if len(sys.argv) > 6 else None
stable_s = float(stable_s)
deadline = time.time() + float(timeout_s)

producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all")
for i in range(20):
    key = f"key-{i}".encode()
    meta = producer.send(topic, key=key, value=b"from-python").get(timeout=30)
    print(f"KEY key-{i} {meta.partition}", flush=True)
producer.close()

consumer = KafkaConsumer(
    topic,
    bootstrap_servers=bootstrap,
    group_id=group,
    heartbeat_interval_ms=100,
    session_timeout_ms=6000,
    max_poll_interval_ms=10000,
    enable_auto_commit=False,
)
last = None
since = time.time()
while time.time() < deadline:
    consumer.poll(timeout_ms=100)
    current = sorted((tp.topic, tp.partition) for tp in consumer.assignment())
    if current and marker:
        open(marker, "w").close()
        marker = None
    if current != last:
        last = current
        since = time.time()
    elif current and time.time() - since >= stable_s:
        print("ASSIGNED " + ",".join(f"{t}:{p}" for t, p in current), flush=True)
        consumer.close()
        sys.exit(0)
consumer.close()
print("TIMEOUT", flush=True)
sys.exit(1)
