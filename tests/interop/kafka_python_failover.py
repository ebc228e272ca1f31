"""kafka-python's producer through a partition leader's failover.

Sends COUNT values ("py-0", "py-1", ...) one after another to partition 0 of
TOPIC with acks=all and idempotence, each send awaited before the next, and
prints "ACK <offset> <value>" for every acknowledgement as it arrives, so the
test driving it can kill brokers between sends and then check that every
acknowledged value is in the log exactly once, at its offset.

Usage: kafka_python_failover.py BOOTSTRAP TOPIC COUNT
"""

import sys

from kafka import KafkaProducer

# Long enough to ride out a fenced leader and an election.
SEND_TIMEOUT_S = 120


def main():
    bootstrap, topic, count = sys.argv[1], sys.argv[2], int(sys.argv[3])
    producer = KafkaProducer(
        bootstrap_servers=bootstrap,
        acks="all",
        enable_idempotence=True,
        linger_ms=0,
        retries=2**31 - 1,
        request_timeout_ms=5000,
        delivery_timeout_ms=SEND_TIMEOUT_S * 1000,
        retry_backoff_ms=100,
    )
    for i in range(count):
        value = f"py-{i}"
        metadata = producer.send(topic, value.encode(), partition=0).get(timeout=SEND_TIMEOUT_S)
        print(f"ACK {metadata.offset} {value}", flush=True)
    producer.close()
    print("DONE", flush=True)


if __name__ == "__main__":
    main()
