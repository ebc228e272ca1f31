//! The `sluice` command: a Kafka-compatible broker and Kafka-style tools.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use clap::{Parser, Subcommand};
use sluice::broker::Broker;
use sluice::clock::SystemClock;
use sluice::config::BrokerConfig;
use sluice::net::TcpListener;
use sluice::storage::fs::FsStorage;

/// Keeps a malformed request from aborting the broker (see `sluice::alloc`).
#[global_allocator]
static ALLOC: sluice::alloc::LazyHugeAlloc = sluice::alloc::LazyHugeAlloc;

#[derive(Parser)]
#[command(name = "sluice", version, about = "A Kafka-compatible event log")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run a broker (like kafka-server-start.sh).
    Broker {
        /// A Kafka-style server.properties file.
        #[arg(long)]
        config: Option<PathBuf>,
        /// Address to listen on; overrides `listeners`.
        #[arg(long)]
        listen: Option<String>,
        /// Data directory; overrides `log.dirs`.
        #[arg(long)]
        data_dir: Option<PathBuf>,
        /// Any setting as key=value, e.g. --override log.segment.bytes=1048576.
        #[arg(long = "override", value_name = "KEY=VALUE")]
        overrides: Vec<String>,
    },
    /// Create, list, describe or delete topics (like kafka-topics.sh).
    Topics {
        #[arg(long, default_value = "127.0.0.1:9092")]
        bootstrap_server: String,
        #[arg(long, group = "action")]
        create: bool,
        #[arg(long, group = "action")]
        list: bool,
        #[arg(long, group = "action")]
        describe: bool,
        #[arg(long, group = "action")]
        delete: bool,
        /// Add partitions: --alter --topic T --partitions N (keys move).
        #[arg(long, group = "action")]
        alter: bool,
        #[arg(long)]
        topic: Option<String>,
        /// Partitions of a new topic (1 by default), or the new count for --alter.
        #[arg(long)]
        partitions: Option<i32>,
        #[arg(long, default_value_t = 1)]
        replication_factor: i16,
        /// Place replicas by hand, as kafka-topics does: partitions separated
        /// by commas, each partition's broker ids by colons, the first
        /// leading (e.g. 1:2,2:0 for two partitions of two replicas).
        #[arg(long, conflicts_with_all = ["partitions", "replication_factor"])]
        replica_assignment: Option<String>,
        /// A topic config override for --create, as key=value; repeatable.
        #[arg(long = "config", value_name = "KEY=VALUE")]
        configs: Vec<String>,
        /// With --create: an existing topic is no error.
        #[arg(long)]
        if_not_exists: bool,
    },
    /// Move a partition's log start up (like kafka-delete-records.sh).
    DeleteRecords {
        #[arg(long, default_value = "127.0.0.1:9092")]
        bootstrap_server: String,
        #[arg(long)]
        topic: String,
        #[arg(long)]
        partition: i32,
        /// The new log start; -1 for the high watermark.
        #[arg(long, allow_hyphen_values = true)]
        offset: i64,
    },
    /// Print partitions' offsets as topic:partition:offset (like kafka-get-offsets.sh).
    GetOffsets {
        #[arg(long, default_value = "127.0.0.1:9092")]
        bootstrap_server: String,
        #[arg(long)]
        topic: String,
        /// Only these partitions (comma-separated).
        #[arg(long, value_delimiter = ',')]
        partitions: Vec<i32>,
        /// -1 for the latest offsets, -2 for the earliest, or a timestamp in ms.
        #[arg(long, default_value_t = -1, allow_hyphen_values = true)]
        time: i64,
    },
    /// Elect partitions' preferred leaders (like kafka-leader-election.sh).
    LeaderElection {
        #[arg(long, default_value = "127.0.0.1:9092")]
        bootstrap_server: String,
        /// PREFERRED, or UNCLEAN (refused for any partition that has a leader
        /// or an ISR: sluice never elects outside the ISR).
        #[arg(long, default_value = "PREFERRED")]
        election_type: String,
        #[arg(long, group = "scope")]
        all_topic_partitions: bool,
        #[arg(long, group = "scope", requires = "partition")]
        topic: Option<String>,
        #[arg(long)]
        partition: Option<i32>,
    },
    /// Describe or alter topic and broker configs (like kafka-configs.sh).
    Configs {
        #[arg(long, default_value = "127.0.0.1:9092")]
        bootstrap_server: String,
        #[arg(long, group = "action")]
        describe: bool,
        #[arg(long, group = "action")]
        alter: bool,
        /// topics or brokers.
        #[arg(long)]
        entity_type: String,
        /// The topic's name or the broker's id.
        #[arg(long)]
        entity_name: String,
        /// With --describe: every config, not only the overrides.
        #[arg(long)]
        all: bool,
        /// With --alter: k1=v1,k2=[v,w] to set.
        #[arg(long)]
        add_config: Option<String>,
        /// With --alter: k1,k2 to return to their defaults.
        #[arg(long, value_delimiter = ',')]
        delete_config: Vec<String>,
    },
    /// Send each line of stdin as a record (like kafka-console-producer.sh).
    Produce {
        #[arg(long, default_value = "127.0.0.1:9092")]
        bootstrap_server: String,
        #[arg(long)]
        topic: String,
        /// Split each line into key and value at --key-separator.
        #[arg(long)]
        parse_key: bool,
        #[arg(long, default_value = ":")]
        key_separator: String,
        /// all, 1 or 0.
        #[arg(
            long,
            default_value = "all",
            visible_alias = "request-required-acks",
            allow_hyphen_values = true
        )]
        acks: String,
        /// parse.key=true or key.separator=S, as kafka-console-producer; repeatable.
        #[arg(long = "property", value_name = "KEY=VALUE")]
        properties: Vec<String>,
        /// Any producer setting by its Kafka key; repeatable.
        #[arg(long = "producer-property", value_name = "KEY=VALUE")]
        producer_properties: Vec<String>,
        /// none: the Rust producer sends uncompressed batches (others are refused).
        #[arg(long)]
        compression_codec: Option<String>,
        /// How long to wait for the cluster, the topic and each delivery.
        #[arg(long, default_value_t = 60_000)]
        timeout_ms: u64,
    },
    /// Print records (like kafka-console-consumer.sh).
    Consume {
        #[arg(long, default_value = "127.0.0.1:9092")]
        bootstrap_server: String,
        #[arg(long)]
        topic: String,
        #[arg(long)]
        from_beginning: bool,
        /// Join this consumer group and commit offsets.
        #[arg(long)]
        group: Option<String>,
        #[arg(long)]
        max_messages: Option<usize>,
        /// Stop after this long without a record (and fail after this long
        /// if the cluster or the topic is not there).
        #[arg(long)]
        timeout_ms: Option<u64>,
        /// Same as --property print.key=true.
        #[arg(long)]
        print_key: bool,
        /// Read this partition alone (no --group).
        #[arg(long)]
        partition: Option<i32>,
        /// With --partition: a non-negative offset, earliest or latest.
        #[arg(long)]
        offset: Option<String>,
        /// print.key, print.timestamp, print.partition, print.offset,
        /// print.value (=true|false) or key.separator=S; repeatable.
        #[arg(long = "property", value_name = "KEY=VALUE")]
        properties: Vec<String>,
        /// Any consumer setting by its Kafka key; repeatable.
        #[arg(long = "consumer-property", value_name = "KEY=VALUE")]
        consumer_properties: Vec<String>,
    },
    /// Describe the metadata quorum (like kafka-metadata-quorum.sh).
    MetadataQuorum {
        #[arg(long, default_value = "127.0.0.1:9092")]
        bootstrap_server: String,
        #[command(subcommand)]
        action: QuorumAction,
    },
    /// List groups, or describe one with lag per partition (like kafka-consumer-groups.sh).
    Groups {
        #[arg(long, default_value = "127.0.0.1:9092")]
        bootstrap_server: String,
        #[arg(long, group = "action")]
        list: bool,
        #[arg(long, group = "action")]
        describe: bool,
        /// Delete an empty group and its committed offsets.
        #[arg(long, group = "action")]
        delete: bool,
        /// Delete a group's committed offsets of --topic T (or T:0,1).
        #[arg(long, group = "action")]
        delete_offsets: bool,
        /// Move an inactive group's offsets of --topic T (or T:0,1); a dry
        /// run unless --execute.
        #[arg(long, group = "action")]
        reset_offsets: bool,
        #[arg(long)]
        group: Option<String>,
        /// With --describe: every group.
        #[arg(long)]
        all_groups: bool,
        /// With --describe: the members, not the offsets.
        #[arg(long)]
        members: bool,
        /// With --describe: the group's state and coordinator.
        #[arg(long)]
        state: bool,
        #[arg(long)]
        topic: Option<String>,
        #[arg(long, group = "to")]
        to_earliest: bool,
        #[arg(long, group = "to")]
        to_latest: bool,
        #[arg(long, group = "to")]
        to_offset: Option<i64>,
        /// YYYY-MM-DDTHH:mm:SS.sss, UTC.
        #[arg(long, group = "to")]
        to_datetime: Option<String>,
        #[arg(long, group = "to", allow_hyphen_values = true)]
        shift_by: Option<i64>,
        #[arg(long, conflicts_with = "execute")]
        dry_run: bool,
        #[arg(long)]
        execute: bool,
    },
}

#[derive(Subcommand)]
enum QuorumAction {
    /// Show the quorum's leader, epoch, high watermark and voters.
    Describe {
        /// The quorum's status (the only view there is so far).
        #[arg(long)]
        status: bool,
    },
}

async fn run_tool(command: Command) -> anyhow::Result<()> {
    use sluice::cli_tools;
    use std::time::Duration;
    let connector: Arc<dyn sluice::net::Connector> = Arc::new(sluice::net::TcpConnector);
    let mut stdout = std::io::stdout();
    match command {
        Command::Broker { .. } => unreachable!("handled by run_broker"),
        Command::Topics {
            bootstrap_server,
            create,
            list,
            describe,
            delete,
            alter,
            topic,
            partitions,
            replication_factor,
            replica_assignment,
            configs,
            if_not_exists,
        } => {
            let need_topic = || {
                topic
                    .clone()
                    .ok_or_else(|| anyhow::anyhow!("--topic is required"))
            };
            if create {
                let placement = match replica_assignment {
                    Some(text) => cli_tools::TopicPlacement::Assigned(
                        cli_tools::parse_replica_assignment(&text)?,
                    ),
                    None => cli_tools::TopicPlacement::Spread {
                        partitions: partitions.unwrap_or(1),
                        replication_factor,
                    },
                };
                let configs = configs
                    .iter()
                    .map(|entry| {
                        entry
                            .split_once('=')
                            .map(|(k, v)| (k.trim().to_string(), v.to_string()))
                            .ok_or_else(|| {
                                anyhow::anyhow!("--config {entry:?}: expected KEY=VALUE")
                            })
                    })
                    .collect::<anyhow::Result<Vec<_>>>()?;
                cli_tools::topics_create(
                    &bootstrap_server,
                    connector,
                    &need_topic()?,
                    placement,
                    &configs,
                    if_not_exists,
                    &mut stdout,
                )
                .await
            } else if alter {
                let count =
                    partitions.ok_or_else(|| anyhow::anyhow!("--alter needs --partitions N"))?;
                cli_tools::topics_alter(
                    &bootstrap_server,
                    connector,
                    &need_topic()?,
                    count,
                    &mut stdout,
                )
                .await
            } else if delete {
                cli_tools::topics_delete(&bootstrap_server, connector, &need_topic()?, &mut stdout)
                    .await
            } else if describe {
                cli_tools::topics_describe(
                    &bootstrap_server,
                    connector,
                    topic.as_deref(),
                    &mut stdout,
                )
                .await
            } else if list {
                cli_tools::topics_list(&bootstrap_server, connector, &mut stdout).await
            } else {
                anyhow::bail!("say one of --create, --alter, --list, --describe or --delete")
            }
        }
        Command::Produce {
            bootstrap_server,
            topic,
            parse_key,
            key_separator,
            acks,
            timeout_ms,
            properties,
            producer_properties,
            compression_codec,
        } => {
            let acks = sluice::client::Acks::parse(&acks)
                .ok_or_else(|| anyhow::anyhow!("--acks must be all, 1, 0 or -1"))?;
            if let Some(codec) = compression_codec.filter(|c| c != "none") {
                anyhow::bail!(
                    "--compression-codec {codec}: the sluice producer sends uncompressed \
                     batches only (none)"
                );
            }
            let (mut parse_key, mut key_separator) = (parse_key, key_separator);
            for property in &properties {
                match cli_tools::parse_property(property)? {
                    (key, value) if key == "parse.key" => parse_key = value.trim() == "true",
                    (key, value) if key == "key.separator" => key_separator = value,
                    (key, _) => {
                        anyhow::bail!("--property {key}: sluice knows parse.key and key.separator")
                    }
                }
            }
            let options = cli_tools::ProduceOptions {
                topic,
                parse_key,
                key_separator,
                acks,
                timeout: Duration::from_millis(timeout_ms),
                producer_properties: producer_properties
                    .iter()
                    .map(|p| cli_tools::parse_property(p))
                    .collect::<anyhow::Result<_>>()?,
            };
            let stdin = tokio::io::BufReader::new(tokio::io::stdin());
            let sent = cli_tools::produce_lines(
                &bootstrap_server,
                connector,
                Arc::new(SystemClock),
                &options,
                stdin,
            )
            .await?;
            eprintln!("{sent} records acknowledged");
            Ok(())
        }
        Command::Consume {
            bootstrap_server,
            topic,
            from_beginning,
            group,
            max_messages,
            timeout_ms,
            print_key,
            partition,
            offset,
            properties,
            consumer_properties,
        } => {
            let mut format = cli_tools::RecordFormat {
                print_key,
                ..cli_tools::RecordFormat::default()
            };
            for property in &properties {
                let (key, value) = cli_tools::parse_property(property)?;
                format.set(&key, &value)?;
            }
            let options = cli_tools::ConsumeOptions {
                topic,
                from_beginning,
                group,
                max_messages,
                timeout: timeout_ms.map(Duration::from_millis),
                partition,
                offset: offset
                    .as_deref()
                    .map(cli_tools::StartOffset::parse)
                    .transpose()?,
                format,
                consumer_properties: consumer_properties
                    .iter()
                    .map(|p| cli_tools::parse_property(p))
                    .collect::<anyhow::Result<_>>()?,
            };
            // Ctrl-C stops it the way the console consumer stops: commit what
            // was printed, leave the group, say how many.
            let interrupted = async {
                if tokio::signal::ctrl_c().await.is_err() {
                    std::future::pending::<()>().await;
                }
            };
            let count = cli_tools::consume(
                &bootstrap_server,
                connector,
                Arc::new(SystemClock),
                &options,
                &mut stdout,
                interrupted,
            )
            .await?;
            eprintln!("Processed a total of {count} messages");
            Ok(())
        }
        Command::LeaderElection {
            bootstrap_server,
            election_type,
            all_topic_partitions,
            topic,
            partition,
        } => {
            let unclean = match election_type.to_ascii_uppercase().as_str() {
                "PREFERRED" => false,
                "UNCLEAN" => true,
                other => anyhow::bail!("--election-type {other:?}: PREFERRED or UNCLEAN"),
            };
            let partitions = match (all_topic_partitions, topic, partition) {
                (true, _, _) => None,
                (false, Some(topic), Some(partition)) => {
                    Some(vec![sluice::client::TopicPartition::new(&topic, partition)])
                }
                _ => anyhow::bail!("say --all-topic-partitions or --topic T --partition P"),
            };
            cli_tools::leader_election(
                &bootstrap_server,
                connector,
                unclean,
                partitions,
                &mut stdout,
            )
            .await
        }
        Command::DeleteRecords {
            bootstrap_server,
            topic,
            partition,
            offset,
        } => {
            let tp = sluice::client::TopicPartition::new(&topic, partition);
            cli_tools::delete_records(&bootstrap_server, connector, &tp, offset, &mut stdout).await
        }
        Command::GetOffsets {
            bootstrap_server,
            topic,
            partitions,
            time,
        } => {
            let only = (!partitions.is_empty()).then_some(partitions);
            cli_tools::get_offsets(
                &bootstrap_server,
                connector,
                &topic,
                only,
                time,
                &mut stdout,
            )
            .await
        }
        Command::Configs {
            bootstrap_server,
            describe,
            alter,
            entity_type,
            entity_name,
            all,
            add_config,
            delete_config,
        } => {
            let resource = cli_tools::config_resource(&entity_type, &entity_name)?;
            if describe {
                cli_tools::configs_describe(
                    &bootstrap_server,
                    connector,
                    resource,
                    all,
                    &mut stdout,
                )
                .await
            } else if alter {
                let add = match add_config {
                    Some(text) => cli_tools::parse_add_config(&text)?,
                    None => Vec::new(),
                };
                cli_tools::configs_alter(
                    &bootstrap_server,
                    connector,
                    resource,
                    &add,
                    &delete_config,
                    &mut stdout,
                )
                .await
            } else {
                anyhow::bail!("say --describe or --alter")
            }
        }
        Command::MetadataQuorum {
            bootstrap_server,
            action: QuorumAction::Describe { status },
        } => {
            if !status {
                anyhow::bail!("say describe --status");
            }
            cli_tools::metadata_quorum_status(&bootstrap_server, connector, &mut stdout).await
        }
        Command::Groups {
            bootstrap_server,
            list,
            describe,
            delete,
            delete_offsets,
            reset_offsets,
            group,
            all_groups,
            members,
            state,
            topic,
            to_earliest,
            to_latest,
            to_offset,
            to_datetime,
            shift_by,
            dry_run: _,
            execute,
        } => {
            if reset_offsets {
                let group = group.ok_or_else(|| anyhow::anyhow!("say which --group"))?;
                let topic =
                    topic.ok_or_else(|| anyhow::anyhow!("--reset-offsets needs --topic"))?;
                let (topic, partitions) = cli_tools::parse_topic_partitions(&topic)?;
                let to = if to_earliest {
                    cli_tools::ResetTo::Earliest
                } else if to_latest {
                    cli_tools::ResetTo::Latest
                } else if let Some(offset) = to_offset {
                    cli_tools::ResetTo::Offset(offset)
                } else if let Some(text) = to_datetime {
                    cli_tools::ResetTo::Datetime(cli_tools::parse_datetime_ms(&text)?)
                } else if let Some(by) = shift_by {
                    cli_tools::ResetTo::ShiftBy(by)
                } else {
                    anyhow::bail!(
                        "say one of --to-earliest, --to-latest, --to-offset, --to-datetime or --shift-by"
                    )
                };
                let reset = cli_tools::OffsetReset {
                    topic,
                    partitions,
                    to,
                    execute,
                };
                return cli_tools::groups_reset_offsets(
                    &bootstrap_server,
                    connector,
                    &group,
                    reset,
                    &mut stdout,
                )
                .await;
            }
            if describe {
                let groups = match (all_groups, group) {
                    (true, _) => {
                        cli_tools::group_ids(&bootstrap_server, Arc::clone(&connector)).await?
                    }
                    (false, Some(group)) => vec![group],
                    (false, None) => anyhow::bail!("--describe needs --group or --all-groups"),
                };
                for group in groups {
                    let connector = Arc::clone(&connector);
                    if members {
                        cli_tools::groups_describe_members(
                            &bootstrap_server,
                            connector,
                            &group,
                            &mut stdout,
                        )
                        .await?;
                    } else if state {
                        cli_tools::groups_describe_state(
                            &bootstrap_server,
                            connector,
                            &group,
                            &mut stdout,
                        )
                        .await?;
                    } else {
                        cli_tools::groups_describe(
                            &bootstrap_server,
                            connector,
                            &group,
                            &mut stdout,
                        )
                        .await?;
                    }
                }
                return Ok(());
            }
            if delete || delete_offsets {
                let group = group.ok_or_else(|| anyhow::anyhow!("say which --group"))?;
                if delete {
                    return cli_tools::groups_delete(
                        &bootstrap_server,
                        connector,
                        &group,
                        &mut stdout,
                    )
                    .await;
                }
                let topic =
                    topic.ok_or_else(|| anyhow::anyhow!("--delete-offsets needs --topic"))?;
                let (topic, partitions) = cli_tools::parse_topic_partitions(&topic)?;
                cli_tools::groups_delete_offsets(
                    &bootstrap_server,
                    connector,
                    &group,
                    &topic,
                    partitions,
                    &mut stdout,
                )
                .await
            } else if list {
                cli_tools::groups_list(&bootstrap_server, connector, &mut stdout).await
            } else {
                anyhow::bail!(
                    "say --list, --describe, --delete, --delete-offsets or --reset-offsets"
                )
            }
        }
    }
}

fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
}

fn broker_config(
    config: Option<PathBuf>,
    listen: Option<String>,
    data_dir: Option<PathBuf>,
    overrides: Vec<String>,
) -> anyhow::Result<BrokerConfig> {
    let mut broker_config = match config {
        Some(path) => {
            let text = std::fs::read_to_string(&path)
                .map_err(|error| anyhow::anyhow!("reading {}: {error}", path.display()))?;
            BrokerConfig::from_properties(&text)
                .map_err(|error| anyhow::anyhow!("{}: {error}", path.display()))?
        }
        None => BrokerConfig::default(),
    };
    for entry in overrides {
        let (key, value) = entry
            .split_once('=')
            .ok_or_else(|| anyhow::anyhow!("--override {entry:?}: expected KEY=VALUE"))?;
        broker_config
            .apply(key.trim(), value)
            .map_err(|error| anyhow::anyhow!("--override {error}"))?;
    }
    if let Some(listen) = listen {
        broker_config
            .apply("listeners", &listen)
            .map_err(|error| anyhow::anyhow!("--listen: {error}"))?;
    }
    if let Some(dir) = data_dir {
        broker_config.log_dirs = dir;
    }
    // The election timeouts' seed: the process hasher's keys come from the
    // operating system, so voters started together draw apart.
    broker_config.quorum_seed = {
        use std::hash::{BuildHasher, Hasher};
        let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
        hasher.write_i32(broker_config.node_id);
        hasher.finish()
    };
    broker_config.validate()?;
    Ok(broker_config)
}

async fn run_broker(config: BrokerConfig) -> anyhow::Result<()> {
    let listener = TcpListener::bind(&config.listener)
        .await
        .map_err(|error| anyhow::anyhow!("binding {}: {error}", config.listener))?;
    let address = sluice::net::Listener::local_addr(&listener)?;
    let controller_listener = match &config.controller_listener {
        Some(address) => Some(TcpListener::bind(address).await.map_err(|error| {
            anyhow::anyhow!("binding the CONTROLLER listener {address}: {error}")
        })?),
        None => None,
    };
    let broker = Broker::open(config.clone(), Arc::new(FsStorage), Arc::new(SystemClock)).await?;
    let mut background = broker.spawn_background();
    if let Some(listener) = controller_listener {
        let address = sluice::net::Listener::local_addr(&listener)?;
        tracing::info!(%address, "serving the CONTROLLER listener");
        let broker = Arc::clone(&broker);
        background.push(tokio::spawn(async move {
            if let Err(error) = sluice::server::serve_unadvertised(broker, Box::new(listener)).await
            {
                tracing::error!(%error, "the CONTROLLER listener stopped");
            }
        }));
    }
    tracing::info!(%address, data_dir = %config.log_dirs.display(), "sluice broker started");
    let serving = tokio::spawn(sluice::server::serve(
        Arc::clone(&broker),
        Box::new(listener),
    ));
    tokio::select! {
        biased;
        _ = tokio::signal::ctrl_c() => tracing::info!("shutting down"),
        result = serving => {
            for task in &background {
                task.abort();
            }
            result??;
            return Ok(());
        }
    }
    broker.resign_controller().await;
    for task in &background {
        task.abort();
    }
    broker.flush_all().await;
    tracing::info!("flushed all logs; bye");
    Ok(())
}

fn main() -> ExitCode {
    sluice::cli_tools::quiet_on_closed_pipe();
    init_logging();
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("error: starting the runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        match cli.command {
            Command::Broker {
                config,
                listen,
                data_dir,
                overrides,
            } => run_broker(broker_config(config, listen, data_dir, overrides)?).await,
            tool => run_tool(tool).await,
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}
