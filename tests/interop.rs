//! Real Kafka clients against the real `sluice broker` binary on loopback:
//! kcat (librdkafka) and kafka-python.
//!
//! Gated by `SLUICE_INTEROP=1` because it needs those clients installed;
//! `.ci/run` installs them and sets it. Without the variable the test says it
//! did not run.

use std::io::Write;
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

struct BrokerProcess {
    child: Child,
    address: String,
}

impl Drop for BrokerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind an ephemeral port");
    listener.local_addr().unwrap().port()
}

fn start_broker(data_dir: &Path, port: u16) -> BrokerProcess {
    let address = format!("127.0.0.1:{port}");
    let log = std::fs::File::create(data_dir.with_extension("log")).unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_sluice"))
        .args(["broker", "--listen", &address, "--data-dir"])
        .arg(data_dir)
        .args(["--override", "group.initial.rebalance.delay.ms=0"])
        // Compaction's check waits for the cleaner: a pass every 500 ms.
        .args(["--override", "log.cleaner.backoff.ms=500"])
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("spawn sluice broker");
    for _ in 0..100 {
        if TcpStream::connect(&address).is_ok() {
            return BrokerProcess { child, address };
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let _ = child.kill();
    let _ = child.wait();
    panic!("sluice broker did not start listening on {address}");
}

fn run(command: &mut Command, stdin: Option<&str>) -> Output {
    let mut child = command
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|error| panic!("spawning {command:?}: {error}"));
    if let Some(input) = stdin {
        child
            .stdin
            .take()
            .unwrap()
            .write_all(input.as_bytes())
            .unwrap();
    }
    let output = child.wait_with_output().unwrap();
    assert!(
        output.status.success(),
        "{command:?} failed: {}\nstdout:\n{}\nstderr:\n{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

fn kcat(address: &str, args: &[&str], stdin: Option<&str>) -> Vec<String> {
    let output = run(
        Command::new("timeout")
            .args(["60", "kcat", "-b", address])
            .args(args),
        stdin,
    );
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .map(str::to_string)
        .collect()
}

#[test]
fn kcat_and_kafka_python_produce_consume_and_use_groups() {
    if std::env::var("SLUICE_INTEROP").as_deref() != Ok("1") {
        eprintln!(
            "interop test not run: set SLUICE_INTEROP=1 with kcat and kafka-python installed"
        );
        return;
    }
    let scratch = tempfile::tempdir().unwrap();
    let data_dir: PathBuf = scratch.path().join("data");
    let port = free_port();
    let broker = start_broker(&data_dir, port);
    let address = broker.address.clone();

    // kcat produces keyed lines and reads them back complete and in order.
    let lines: Vec<String> = (0..50).map(|i| format!("key{}:value-{i}", i % 5)).collect();
    kcat(
        &address,
        &["-P", "-t", "kc", "-K:"],
        Some(&(lines.join("\n") + "\n")),
    );
    let consumed = kcat(
        &address,
        &["-C", "-t", "kc", "-o", "beginning", "-e", "-f", "%k:%s\n"],
        None,
    );
    assert_eq!(consumed, lines, "kcat reads back what it wrote, in order");

    // kcat's balanced consumer joins a group, reads everything and commits;
    // a second run of the same group has nothing left to read.
    // (In -G mode kcat's -o would override the committed offset, so the
    // starting point comes from auto.offset.reset instead.)
    let group_args = [
        "-G",
        "kgroup",
        "-X",
        "auto.offset.reset=earliest",
        "-e",
        "-f",
        "%s\n",
        "kc",
    ];
    let grouped = kcat(&address, &group_args, None);
    assert_eq!(
        grouped.len(),
        lines.len(),
        "the group member read every message"
    );
    let again = kcat(&address, &group_args, None);
    assert!(
        again.is_empty(),
        "the group resumed from its committed offset, got {again:?}"
    );

    // kafka-python: idempotent producer, group consumer with commits.
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/interop/kafka_python_check.py");
    let output = run(
        Command::new("timeout")
            .args(["180", "python3"])
            .arg(&script)
            .args([&address, "pytopic"]),
        None,
    );
    assert!(String::from_utf8_lossy(&output.stdout).contains("OK:"));

    // kcat (librdkafka) compresses with lz4 and zstd; `sluice consume` reads
    // both back.
    for codec in ["lz4", "zstd", "gzip", "snappy"] {
        let topic = format!("kz-{codec}");
        let values: Vec<String> = (0..20).map(|i| format!("{codec}-{i}")).collect();
        kcat(
            &address,
            &["-P", "-t", &topic, "-z", codec],
            Some(&(values.join("\n") + "\n")),
        );
        let output = run(
            Command::new(env!("CARGO_BIN_EXE_sluice")).args([
                "consume",
                "--bootstrap-server",
                &address,
                "--topic",
                &topic,
                "--from-beginning",
                "--max-messages",
                "20",
                "--timeout-ms",
                "10000",
            ]),
            None,
        );
        let printed: Vec<String> = String::from_utf8_lossy(&output.stdout)
            .lines()
            .map(str::to_string)
            .collect();
        assert_eq!(printed, values, "{codec} batches read back");
    }

    // After a restart the data is still there.
    drop(broker);
    let broker = start_broker(&data_dir, port);
    let consumed = kcat(
        &broker.address,
        &["-C", "-t", "kc", "-o", "beginning", "-e", "-f", "%k:%s\n"],
        None,
    );
    assert_eq!(consumed, lines, "data survives a broker restart");
}

#[test]
fn static_members_and_refused_transactions_with_librdkafka_and_kafka_python() {
    if std::env::var("SLUICE_INTEROP").as_deref() != Ok("1") {
        eprintln!(
            "interop test not run: set SLUICE_INTEROP=1 with confluent-kafka and kafka-python \
             installed"
        );
        return;
    }
    let scratch = tempfile::tempdir().unwrap();
    let broker = start_broker(&scratch.path().join("data"), free_port());
    let script =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/interop/group_features_check.py");
    let output = run(
        Command::new("timeout")
            .args(["180", "python3"])
            .arg(&script)
            .arg(&broker.address),
        None,
    );
    assert!(String::from_utf8_lossy(&output.stdout).contains("OK:"));
}

#[test]
fn admin_calls_with_librdkafka_and_kafka_python() {
    if std::env::var("SLUICE_INTEROP").as_deref() != Ok("1") {
        eprintln!(
            "interop test not run: set SLUICE_INTEROP=1 with confluent-kafka and kafka-python \
             installed"
        );
        return;
    }
    let scratch = tempfile::tempdir().unwrap();
    let broker = start_broker(&scratch.path().join("data"), free_port());
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/interop/admin_check.py");
    let output = run(
        Command::new("timeout")
            .args(["180", "python3"])
            .arg(&script)
            .arg(&broker.address),
        None,
    );
    assert!(String::from_utf8_lossy(&output.stdout).contains("OK:"));
}
