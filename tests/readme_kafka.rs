//! The README's Kafka walk-through, run as it is written: the commands are read from the
//! README's "## Kafka" section (its first code block: the stages, with `# or` before the
//! one-process alternative; its second: the feeder), so that the README cannot change
//! without this test seeing it, and each runs as a `pipeline` process against the real
//! broker until speeds arrive on the `speeds` topic.
//!
//! The commands are run verbatim, in a directory of their own that holds the shipped
//! `pipelines/` and, as `data/helsinki.graph` (what `make run` builds there), a grid city the
//! test makes (the test fetches no map). What the environment must change is changed through
//! `PIPELINE__…` variables, the configs' own override mechanism, derived from each config:
//! the broker address (`PIPELINE_KAFKA_BROKERS`), every topic and consumer group (names of
//! this run, since other suites share the broker), and the metrics port (a free one, since
//! other suites share the host).

#[path = "common/chain.rs"]
mod chain;

use std::collections::BTreeSet;
use std::ffi::OsString;
use std::path::{Path, PathBuf};

use chain::{kafka, Stage};

/// The code blocks of the README's section `heading`, each as its lines.
fn code_blocks(readme: &str, heading: &str) -> Vec<Vec<String>> {
    let section = readme
        .split("\n## ")
        .find(|s| s.starts_with(heading))
        .unwrap_or_else(|| panic!("README has no section `## {heading}`"));
    section
        .split("```")
        .skip(1)
        .step_by(2)
        .map(|block| block.lines().skip(1).map(str::to_string).collect())
        .collect()
}

/// A README command line without its trailing comment, split into words.
fn words(line: &str) -> Vec<String> {
    let command = line.split(" #").next().unwrap_or_default();
    command.split_whitespace().map(str::to_string).collect()
}

/// The walk-through: the split deployment, its one-process alternative, and the feeder.
struct WalkThrough {
    split: Vec<Vec<String>>,
    one_process: Vec<Vec<String>>,
    feed: Vec<Vec<String>>,
}

fn walk_through() -> WalkThrough {
    let readme = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md"))
        .expect("README.md");
    let blocks = code_blocks(&readme, "Kafka");
    assert!(blocks.len() >= 2, "the Kafka section's two code blocks");
    let commands = |lines: &[String]| -> Vec<Vec<String>> {
        lines
            .iter()
            .filter(|l| l.starts_with("pipeline "))
            .map(|l| words(l))
            .collect()
    };
    let or = blocks[0]
        .iter()
        .position(|l| l.starts_with("# or"))
        .expect("`# or` before the one-process alternative");
    let walk = WalkThrough {
        split: commands(&blocks[0][..or]),
        one_process: commands(&blocks[0][or..]),
        feed: commands(&blocks[1]),
    };
    assert_eq!(walk.split.len(), 4, "{:?}", walk.split);
    assert_eq!(walk.one_process.len(), 1, "{:?}", walk.one_process);
    assert_eq!(walk.feed.len(), 1, "{:?}", walk.feed);
    walk
}

/// The config a command runs (`pipeline run --config FILE`).
fn config_of(command: &[String]) -> &str {
    assert_eq!(
        command.get(..2),
        Some(&["pipeline".into(), "run".into()][..])
    );
    let at = command
        .iter()
        .position(|w| w == "--config")
        .expect("--config");
    &command[at + 1]
}

/// This run's name for a topic of the walk-through.
fn topic(nonce: &str, name: &str) -> String {
    format!("walk-{nonce}-{name}")
}

/// The `PIPELINE__…` variables that put a config's Kafka sources and sinks on this run's
/// broker, topics and groups; also returns the topics it names.
fn overrides(
    config: &Path,
    brokers: &str,
    nonce: &str,
) -> (Vec<(String, String)>, BTreeSet<String>) {
    let text = std::fs::read_to_string(config).expect("config");
    let doc: toml::Table = toml::from_str(&text).expect("TOML");
    let (mut env, mut topics) = (Vec::new(), BTreeSet::new());
    for section in ["sources", "sinks"] {
        let Some(components) = doc.get(section).and_then(|v| v.as_table()) else {
            continue;
        };
        for (name, c) in components {
            if c.get("type").and_then(|t| t.as_str()) != Some("kafka") {
                continue;
            }
            let key = |k: &str| {
                format!(
                    "PIPELINE__{}__{}__{}",
                    section.to_uppercase(),
                    name.to_uppercase(),
                    k
                )
            };
            env.push((key("BROKERS"), brokers.to_string()));
            let mut rename = |k: &str, names: Vec<&str>| {
                let renamed: Vec<String> = names.iter().map(|t| topic(nonce, t)).collect();
                topics.extend(renamed.iter().cloned());
                env.push((key(k), renamed.join(",")));
            };
            if let Some(list) = c.get("topics").and_then(|v| v.as_array()) {
                rename("TOPICS", list.iter().filter_map(|t| t.as_str()).collect());
            }
            for k in ["topic", "dead_letter_topic"] {
                if let Some(t) = c.get(k).and_then(|v| v.as_str()) {
                    rename(&k.to_uppercase(), vec![t]);
                }
            }
            if let Some(group) = c.get("group_id").and_then(|v| v.as_str()) {
                env.push((key("GROUP_ID"), format!("{group}-{nonce}")));
            }
        }
    }
    (env, topics)
}

/// Runs the stage commands, then the feeder to its end, and waits until the speeds on the
/// walk-through's `speeds` topic stop changing; stops the stages and returns those speeds
/// and the directory the commands ran in.
async fn run_walk_through(
    stages: &[Vec<String>],
    feed: &[Vec<String>],
) -> (chain::Speeds, tempfile::TempDir) {
    let _serial = chain::one_at_a_time().await;
    let brokers = chain::brokers().expect("a broker (CI is set for this test)");
    let nonce = chain::nonce();
    let dir = chain::checkout_like_dir();
    let mut started = Vec::new();
    for (i, command) in stages.iter().chain(feed).enumerate() {
        let (env, topics) = overrides(&dir.path().join(config_of(command)), &brokers, &nonce);
        for t in &topics {
            kafka::create_topic(&brokers, t, 4).await;
        }
        let args: Vec<OsString> = command[1..].iter().map(OsString::from).collect();
        let stage = Stage::command(&args, dir.path(), &env);
        if i < stages.len() {
            started.push(stage);
        } else {
            stage.wait_end();
        }
    }
    let speeds_topic = topic(&nonce, "speeds");
    let rows = chain::settle(
        "speeds on the walk-through's topic",
        || chain::speeds_on_topic(&brokers, &speeds_topic).0,
        |rows| *rows > 0,
    );
    eprintln!("{rows} speed rows on {speeds_topic}");
    for stage in started {
        stage.stop();
    }
    (chain::speeds_on_topic(&brokers, &speeds_topic).1, dir)
}

fn assert_speeds_of_the_fleet(speeds: &chain::Speeds) {
    let windows: BTreeSet<i64> = speeds.keys().map(|k| k.1).collect();
    let segments: BTreeSet<u64> = speeds.keys().map(|k| k.0).collect();
    // 300 vehicles for 10 minutes on a grid of 224 directed segments: most segments, in
    // most of the ten 60 s windows.
    assert!(windows.len() >= 5, "windows {windows:?}");
    assert!(segments.len() >= 50, "{} segments", segments.len());
    assert!(speeds
        .values()
        .all(|s| s.speed_mps.is_finite() && s.speed_mps > 0.0 && s.samples >= 2));
}

#[tokio::test(flavor = "multi_thread")]
async fn the_readme_kafka_walk_through_split_deployment_delivers_speeds() {
    let walk = walk_through();
    let (speeds, dir) = run_walk_through(&walk.split, &walk.feed).await;
    assert_speeds_of_the_fleet(&speeds);
    // What the README says the aggregate and the experiment write once stopped.
    for out in ["out/kafka-aggregate", "out/kafka-experiment"] {
        let (rows, _) = chain::speeds_in_parquet(&dir.path().join(out));
        assert!(rows > 0, "no speeds in {out}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn the_readme_kafka_walk_through_in_one_process_delivers_speeds() {
    let walk = walk_through();
    let (speeds, _) = run_walk_through(&walk.one_process, &walk.feed).await;
    assert_speeds_of_the_fleet(&speeds);
}

/// The configs of the walk-through exist where the README says, and no two of its
/// processes share a metrics port (they run side by side).
#[test]
fn the_walk_through_configs_exist_and_have_their_own_metrics_ports() {
    let walk = walk_through();
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let mut ports = BTreeSet::new();
    for command in walk.split.iter().chain(&walk.feed) {
        let text = std::fs::read_to_string(root.join(config_of(command))).expect("config");
        let doc: toml::Table = toml::from_str(&text).expect("TOML");
        let listen = doc
            .get("telemetry")
            .and_then(|t| t.get("listen"))
            .and_then(|l| l.as_str())
            .unwrap_or("127.0.0.1:9898")
            .to_string();
        assert!(ports.insert(listen.clone()), "{listen} twice");
    }
}
