//! Choosing a partition for a record, compatibly with the Java client.
//!
//! Keyed records go to `(murmur2(key) & 0x7fffffff) % partitions`, exactly as
//! Java's `BuiltInPartitioner.partitionForKey`, so a key lands on the same
//! partition whichever client wrote it. Records without a key either stick to
//! one partition until its batch is complete (KIP-480, the Java default) or
//! rotate round-robin. Randomness comes from a seeded ChaCha8 generator.

use std::collections::BTreeMap;

use rand_chacha::rand_core::{RngCore, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// Java's `Utils.murmur2`: MurmurHash2, 32 bits, seed 0x9747b28c, reading the
/// input as little-endian 4-byte words.
pub fn murmur2(data: &[u8]) -> i32 {
    const SEED: u32 = 0x9747_b28c;
    const M: u32 = 0x5bd1_e995;
    const R: u32 = 24;
    let length = data.len();
    // Java computes `seed ^ length` in int arithmetic; keys are far below 4 GiB.
    let mut h: u32 = SEED ^ (length as u32);
    let mut chunks = data.chunks_exact(4);
    for chunk in &mut chunks {
        let mut k = u32::from_le_bytes([chunk[0], chunk[1], chunk[2], chunk[3]]);
        k = k.wrapping_mul(M);
        k ^= k >> R;
        k = k.wrapping_mul(M);
        h = h.wrapping_mul(M);
        h ^= k;
    }
    let tail = chunks.remainder();
    if tail.len() >= 3 {
        h ^= u32::from(tail[2]) << 16;
    }
    if tail.len() >= 2 {
        h ^= u32::from(tail[1]) << 8;
    }
    if !tail.is_empty() {
        h ^= u32::from(tail[0]);
        h = h.wrapping_mul(M);
    }
    h ^= h >> 13;
    h = h.wrapping_mul(M);
    h ^= h >> 15;
    h as i32
}

/// Java's `Utils.toPositive`: clears the sign bit (not `abs`, which overflows).
pub fn to_positive(n: i32) -> i32 {
    n & 0x7fff_ffff
}

/// The partition Java's client picks for `key`.
pub fn partition_for_key(key: &[u8], partition_count: i32) -> i32 {
    assert!(partition_count > 0, "a topic has at least one partition");
    to_positive(murmur2(key)) % partition_count
}

/// Picks partitions for records that do not name one.
pub trait Partitioner: Send {
    /// The partition for a record of `topic` with `key`, given the topic's
    /// partition count (> 0).
    fn partition(&mut self, topic: &str, key: Option<&[u8]>, partition_count: i32) -> i32;

    /// Called before a keyless record would open a new batch on `partition`:
    /// the point where KIP-480's sticky partitioner moves on.
    fn on_new_batch(&mut self, _topic: &str, _partition: i32, _partition_count: i32) {}
}

/// What to do with records without a key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeylessStrategy {
    /// Stick to one partition until a batch completes (KIP-480; Java's default).
    Sticky,
    /// Rotate through partitions record by record.
    RoundRobin,
}

/// murmur2 for keyed records, sticky or round-robin for the rest.
#[derive(Debug, Clone)]
pub struct DefaultPartitioner {
    strategy: KeylessStrategy,
    rng: ChaCha8Rng,
    /// Per topic: the sticky partition, or the next round-robin one.
    current: BTreeMap<String, i32>,
}

impl DefaultPartitioner {
    pub fn new(strategy: KeylessStrategy, seed: u64) -> Self {
        Self {
            strategy,
            rng: ChaCha8Rng::seed_from_u64(seed),
            current: BTreeMap::new(),
        }
    }

    fn random_partition(&mut self, partition_count: i32, avoid: Option<i32>) -> i32 {
        let count = u32::try_from(partition_count).unwrap_or(1).max(1);
        match avoid {
            // Pick among the other partitions so a switch really moves.
            Some(previous) if count > 1 => {
                let offset = 1 + self.rng.next_u32() % (count - 1);
                let next = (u32::try_from(previous).unwrap_or(0) + offset) % count;
                i32::try_from(next).unwrap_or(0)
            }
            _ => i32::try_from(self.rng.next_u32() % count).unwrap_or(0),
        }
    }
}

impl Partitioner for DefaultPartitioner {
    fn partition(&mut self, topic: &str, key: Option<&[u8]>, partition_count: i32) -> i32 {
        if let Some(key) = key {
            return partition_for_key(key, partition_count);
        }
        match self.strategy {
            KeylessStrategy::Sticky => {
                if let Some(&p) = self.current.get(topic) {
                    if p < partition_count {
                        return p;
                    }
                }
                let p = self.random_partition(partition_count, None);
                self.current.insert(topic.to_string(), p);
                p
            }
            KeylessStrategy::RoundRobin => {
                let next = match self.current.get(topic) {
                    Some(&p) => p,
                    None => self.random_partition(partition_count, None),
                };
                let p = next.rem_euclid(partition_count);
                self.current
                    .insert(topic.to_string(), (p + 1) % partition_count);
                p
            }
        }
    }

    fn on_new_batch(&mut self, topic: &str, partition: i32, partition_count: i32) {
        if self.strategy != KeylessStrategy::Sticky {
            return;
        }
        // Only move if the caller's view is still the current sticky choice;
        // otherwise another batch already caused the switch.
        if self.current.get(topic) == Some(&partition) {
            let next = self.random_partition(partition_count, Some(partition));
            self.current.insert(topic.to_string(), next);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Kafka's `UtilsTest.testMurmur2`, and Akka's vectors checked against it.
    #[test]
    fn murmur2_matches_java() {
        let cases: &[(&str, i32)] = &[
            ("21", -973_932_308),
            ("foobar", -790_332_482),
            ("a-little-bit-long-string", -985_981_536),
            ("a-little-bit-longer-string", -1_486_304_829),
            (
                "lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8",
                -58_897_971,
            ),
            ("abc", 479_470_107),
            ("1", -1_993_445_489),
            ("12", 126_087_238),
            ("123", -267_702_483),
            ("1234", -1_614_185_708),
            ("12345", -1_188_365_604),
        ];
        for (input, expected) in cases {
            assert_eq!(murmur2(input.as_bytes()), *expected, "murmur2({input:?})");
        }
    }

    #[test]
    fn keyed_partition_is_positive_murmur_mod_count() {
        // to_positive(-973932308) = 1173551340; % 3 = 0.
        assert_eq!(partition_for_key(b"21", 3), 1_173_551_340 % 3);
        assert_eq!(to_positive(i32::MIN), 0);
        let mut p = DefaultPartitioner::new(KeylessStrategy::Sticky, 1);
        for count in 1..20 {
            let chosen = p.partition("t", Some(b"foobar"), count);
            assert_eq!(chosen, partition_for_key(b"foobar", count));
            assert!((0..count).contains(&chosen));
        }
    }

    #[test]
    fn sticky_keeps_partition_until_new_batch() {
        let mut p = DefaultPartitioner::new(KeylessStrategy::Sticky, 7);
        let first = p.partition("t", None, 4);
        for _ in 0..10 {
            assert_eq!(p.partition("t", None, 4), first);
        }
        p.on_new_batch("t", first, 4);
        let second = p.partition("t", None, 4);
        assert_ne!(second, first);
        // A stale notification does not move it again.
        p.on_new_batch("t", first, 4);
        assert_eq!(p.partition("t", None, 4), second);
    }

    #[test]
    fn round_robin_cycles_and_same_seed_same_choices() {
        let mut a = DefaultPartitioner::new(KeylessStrategy::RoundRobin, 42);
        let mut b = DefaultPartitioner::new(KeylessStrategy::RoundRobin, 42);
        let seq_a: Vec<i32> = (0..6).map(|_| a.partition("t", None, 3)).collect();
        let seq_b: Vec<i32> = (0..6).map(|_| b.partition("t", None, 3)).collect();
        assert_eq!(seq_a, seq_b);
        assert_eq!(
            seq_a[0..3]
                .iter()
                .copied()
                .collect::<std::collections::BTreeSet<_>>()
                .len(),
            3
        );
        assert_eq!(seq_a[0..3], seq_a[3..6]);
    }
}
