//! Who is in a simulated cluster: every host's name and role, built once per
//! run from the resolved scenario. Host names are made here and nowhere else,
//! so the world, the nemesis and the shrinker agree on them.

use crate::scenario::Resolved;

/// The port every broker listens on.
pub const BROKER_PORT: u16 = 9092;

/// Where every broker keeps its partition directories, on its own disk.
pub const BROKER_LOG_DIR: &str = "/data";

/// The client host that waits out the fault and heal phases and then reads
/// every partition back.
pub const READER_HOST: &str = "final-reader";

/// What a host runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Role {
    Broker,
    Producer,
    Consumer,
    Reader,
}

/// The hosts of one run, in the order the world creates them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Topology {
    brokers: Vec<String>,
    producers: Vec<String>,
    consumers: Vec<String>,
}

impl Topology {
    /// `brokers` brokers, `producers` producers and `consumers` consumers,
    /// named by index.
    pub fn new(brokers: u32, producers: u32, consumers: u32) -> Topology {
        Topology {
            brokers: (0..brokers).map(Self::broker_name).collect(),
            producers: (0..producers).map(Self::producer_name).collect(),
            consumers: (0..consumers).map(Self::consumer_name).collect(),
        }
    }

    /// The hosts of a resolved scenario: its brokers, then its producers and
    /// group members as the scenario named them.
    pub fn of(resolved: &Resolved) -> Topology {
        Topology {
            brokers: (0..resolved.brokers).map(Self::broker_name).collect(),
            producers: resolved.producers.iter().map(|p| p.name.clone()).collect(),
            consumers: resolved
                .groups
                .iter()
                .flat_map(|g| g.members.iter().cloned())
                .collect(),
        }
    }

    pub fn broker_name(index: u32) -> String {
        format!("broker-{index}")
    }

    pub fn producer_name(index: u32) -> String {
        format!("producer-{index}")
    }

    pub fn consumer_name(index: u32) -> String {
        format!("consumer-{index}")
    }

    pub fn brokers(&self) -> &[String] {
        &self.brokers
    }

    pub fn consumers(&self) -> &[String] {
        &self.consumers
    }

    /// Producers, then consumers.
    pub fn clients(&self) -> Vec<String> {
        self.producers
            .iter()
            .chain(&self.consumers)
            .cloned()
            .collect()
    }

    /// Brokers and clients: the hosts a fault may be aimed at.
    pub fn targets(&self) -> Vec<String> {
        self.brokers
            .iter()
            .chain(&self.producers)
            .chain(&self.consumers)
            .cloned()
            .collect()
    }

    /// Every host the target could have a connection to: all the others,
    /// the reader included.
    pub fn peers_of(&self, target: &str) -> Vec<String> {
        let mut everyone = self.targets();
        everyone.push(READER_HOST.to_string());
        everyone.retain(|host| host != target);
        everyone
    }

    pub fn role_of(&self, host: &str) -> Option<Role> {
        let is = |hosts: &[String]| hosts.iter().any(|h| h == host);
        if is(&self.brokers) {
            Some(Role::Broker)
        } else if is(&self.producers) {
            Some(Role::Producer)
        } else if is(&self.consumers) {
            Some(Role::Consumer)
        } else if host == READER_HOST {
            Some(Role::Reader)
        } else {
            None
        }
    }

    /// `host:port` of every broker, comma-separated, as clients take it.
    pub fn bootstrap(&self) -> String {
        self.brokers
            .iter()
            .map(|broker| format!("{broker}:{BROKER_PORT}"))
            .collect::<Vec<_>>()
            .join(",")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_roles_and_peers() {
        let topology = Topology::new(2, 1, 2);
        assert_eq!(topology.bootstrap(), "broker-0:9092,broker-1:9092");
        assert_eq!(
            topology.targets(),
            [
                "broker-0",
                "broker-1",
                "producer-0",
                "consumer-0",
                "consumer-1"
            ]
        );
        assert_eq!(
            topology.peers_of("consumer-0"),
            [
                "broker-0",
                "broker-1",
                "producer-0",
                "consumer-1",
                READER_HOST
            ]
        );
        assert_eq!(topology.role_of("broker-1"), Some(Role::Broker));
        assert_eq!(topology.role_of("producer-0"), Some(Role::Producer));
        assert_eq!(topology.role_of("consumer-1"), Some(Role::Consumer));
        assert_eq!(topology.role_of(READER_HOST), Some(Role::Reader));
        assert_eq!(topology.role_of("broker-2"), None);
    }
}
