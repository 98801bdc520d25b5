//! Command-line interface: argument definitions and one function per subcommand.

/// `println!` that returns the write error (a closed pipe ends the command quietly, see
/// `main.rs`) instead of panicking.
macro_rules! say {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        writeln!(std::io::stdout().lock(), $($arg)*)?
    }};
}

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context, Result};
use clap::{Args, Parser, Subcommand};
use tokio_util::sync::CancellationToken;

use pipeline::config::{self, PipelineConfig, SinkConfig, SourceConfig, StageConfig};
use pipeline::connector::congestion::{self, CongestionConfig};
use pipeline::connector::dirty::{self, DirtyConfig, DirtyKind, DirtyLayout};
use pipeline::connector::generator::{self, GeneratorSourceConfig};
use pipeline::connector::parquet::{ParquetSinkConfig, ParquetSourceConfig};
use pipeline::graph::{self, ImportConfig, RoadGraph};
use pipeline::record::RecordKind;
use pipeline::runtime::{self, Topology};
use pipeline::telemetry::{self, http::Readiness};

/// A usage error (exit code 2), e.g. a flag combination that cannot work.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct UsageError(pub String);

#[derive(Parser, Debug)]
#[command(
    name = "pipeline",
    version,
    about = "Real-time road speeds from vehicle GPS probes"
)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run the pipeline a config describes, until its sources end or SIGINT/SIGTERM.
    Run(ConfigArg),
    /// Check configs (layers, types, topology, that the graph opens) without touching the
    /// network; every problem of every file is listed, and so is a metrics port that two of
    /// the files bind.
    Validate(ValidateArgs),
    /// Build, inspect and export road graphs.
    #[command(subcommand)]
    Graph(GraphCommand),
    /// Write synthetic probes along random routes on a road graph, with ground truth.
    Generate(GenerateArgs),
    /// Replay recorded Parquet probes through clean, assign and aggregate into DIR
    /// (probes.parquet, matched_points.parquet, observations.parquet, speeds.parquet).
    Replay(ReplayArgs),
    /// Draw a map picture (PNG or SVG, by the extension of --out) of speeds over the graph:
    /// segments coloured by speed relative to their limit, with a legend.
    Render(RenderArgs),
    /// Print a sample of the records flowing through an edge of a running pipeline, one JSON
    /// object per line (the pipeline's config must set `telemetry.tap = true`).
    Tap(TapArgs),
}

#[derive(Args, Debug)]
struct TapArgs {
    /// The edge, named by its upstream endpoint as in the config's `edges`: `clean`,
    /// `assign`, `assign.matched_points`, …
    #[arg(long)]
    edge: String,
    /// How many records to print.
    #[arg(long, default_value_t = 10)]
    limit: usize,
    /// The running pipeline's HTTP address (its `telemetry.listen`).
    #[arg(long, default_value = "127.0.0.1:9898")]
    addr: String,
    /// Give up waiting for records after this long (the records seen so far are printed).
    #[arg(long = "timeout-ms", default_value_t = 10_000)]
    timeout_ms: u64,
}

#[derive(Args, Debug)]
struct RenderArgs {
    /// Road graph (.graph or an OSM extract) the speeds were computed on.
    #[arg(long)]
    graph: PathBuf,
    /// Speeds Parquet: files, directories (every *.parquet inside) or globs (quote them), as
    /// `replay` or a Parquet sink writes them, e.g. a rolling sink's 'out/speeds-*.parquet'.
    #[arg(long, required = true, num_args = 1..)]
    speeds: Vec<String>,
    /// Output picture: .png or .svg.
    #[arg(long)]
    out: PathBuf,
    /// Draw the latest window starting at or before this time (epoch ms); default: the
    /// latest complete window (the last window present may be partial and is left out
    /// unless it is the only one).
    #[arg(long = "window-start-ms")]
    window_start_ms: Option<i64>,
    /// Estimator to draw (default: the first name in sort order).
    #[arg(long)]
    estimator: Option<String>,
    /// Picture width in pixels; the height follows the map.
    #[arg(long = "width-px", default_value_t = 1000)]
    width_px: u32,
}

#[derive(Args, Debug)]
struct ValidateArgs {
    /// The TOML config files, e.g. `pipelines/*.toml` (environment variables
    /// PIPELINE__SECTION__KEY override each of them).
    #[arg(required_unless_present = "config")]
    configs: Vec<PathBuf>,
    /// A config file, as for `run` (the same as giving it as an argument; repeatable).
    #[arg(long)]
    config: Vec<PathBuf>,
}

#[derive(Args, Debug)]
struct ConfigArg {
    /// The TOML config file (environment variables PIPELINE__SECTION__KEY override it).
    #[arg(long)]
    config: PathBuf,
}

#[derive(Subcommand, Debug)]
enum GraphCommand {
    /// Import an OSM extract (.osm.pbf or .osm) and write the compact graph file.
    Build {
        /// The OpenStreetMap extract to import (.osm.pbf or .osm XML).
        #[arg(long)]
        osm: PathBuf,
        /// Where to write the graph file (.graph), replaced if it exists.
        #[arg(long)]
        out: PathBuf,
        /// A config whose [graph.import] section sets the import rules.
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// Print a summary of a graph (.graph or an OSM extract).
    Info {
        /// Road graph (.graph or an OSM extract).
        graph: PathBuf,
    },
    /// Export the segment table (ids, OSM ids, lengths, classes, WKT geometry) to Parquet.
    Export {
        /// Road graph (.graph or an OSM extract).
        graph: PathBuf,
        /// Where to write the segment table (Parquet).
        #[arg(long)]
        out: PathBuf,
    },
}

#[derive(Args, Debug)]
struct GenerateArgs {
    /// Road graph (.graph or an OSM extract).
    #[arg(long)]
    graph: PathBuf,
    /// Vehicles driving at once.
    #[arg(long, default_value_t = 100)]
    vehicles: u32,
    /// Event time the fleet drives for, in seconds.
    #[arg(long = "duration-s", default_value_t = 600.0)]
    duration_s: f64,
    /// Seconds between two probes of a vehicle (the sampling interval).
    #[arg(long = "interval-s", default_value_t = 1.0)]
    interval_s: f64,
    /// GPS noise, standard deviation per axis, in metres.
    #[arg(long = "noise-m", default_value_t = 5.0)]
    noise_m: f64,
    /// Seed of the random generator: the same seed and settings give the same probes.
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// Fraction of probes given a fault (duplicate, (0,0), outlier, late), to exercise clean.
    #[arg(long = "fault-rate", default_value_t = 0.0)]
    fault_rate: f64,
    /// Vehicle churn: each vehicle drives one trip of about this many seconds, then a new
    /// vehicle id takes its place (so distinct ids grow with the duration).
    #[arg(long = "trip-s")]
    trip_s: Option<f64>,
    /// Event time of the first probe, epoch ms.
    #[arg(long = "start-ms", default_value_t = generator::DEFAULT_START_MS)]
    start_ms: i64,
    /// Turn the congestion model off: every vehicle drives its own speed (limit × a factor
    /// around 0.85) everywhere. On by default: bottlenecks, queues before junctions and a
    /// rush hour, as the flags below set them.
    #[arg(long = "no-congestion")]
    no_congestion: bool,
    /// Share of segments that are bottlenecks (congestion).
    #[arg(long = "slow-link-share", default_value_t = congestion::DEFAULT_SLOW_LINK_SHARE)]
    slow_link_share: f64,
    /// A bottleneck's speed at the rush-hour peak, as a fraction of the driver's own.
    #[arg(long = "slow-link-factor", default_value_t = congestion::DEFAULT_SLOW_LINK_FACTOR)]
    slow_link_factor: f64,
    /// Longest queue before a junction at the peak, in metres (each junction's is a seeded
    /// share of it, at most 80 % of its segment).
    #[arg(long = "junction-queue-m", default_value_t = congestion::DEFAULT_JUNCTION_QUEUE_M)]
    junction_queue_m: f64,
    /// Speed in a queue, m/s.
    #[arg(long = "queue-speed-mps", default_value_t = congestion::DEFAULT_QUEUE_SPEED_MPS)]
    queue_speed_mps: f64,
    /// When the rush hour peaks, as a fraction of --duration-s (it lasts half the run).
    #[arg(
        long = "rush-peak-fraction",
        default_value_t = congestion::DEFAULT_RUSH_PEAK_FRACTION
    )]
    rush_peak_fraction: f64,
    /// Congestion outside the rush hour, as a fraction of the peak's (1: peak all along).
    #[arg(long = "off-peak-level", default_value_t = congestion::DEFAULT_OFF_PEAK_LEVEL)]
    off_peak_level: f64,
    /// Fraction of probes to corrupt with the faults of --dirty-kinds, for robustness tests.
    /// Prints how many of each kind were injected.
    #[arg(long, default_value_t = 0.0)]
    dirty: f64,
    /// Faults --dirty injects, comma-separated (default: all): nan, swapped, ms_as_s,
    /// year_1970, year_2099, duplicate, out_of_order, teleport, oversized, invalid_utf8.
    /// invalid_utf8 writes vehicle_id as a Binary column; ms_as_s adds a Float64 column
    /// `ts_s` of epoch seconds (replay it with timestamp_unit = "s").
    #[arg(long = "dirty-kinds", value_delimiter = ',')]
    dirty_kinds: Vec<DirtyKind>,
    /// Output format: Parquet, or NDJSON (one JSON payload per line, as a stream source
    /// would receive it). NDJSON cannot hold ms_as_s. To put generated probes on a Kafka
    /// topic, run `pipeline run --config pipelines/kafka-feed.toml` (the generator as a
    /// source, a Kafka sink), or point a `parquet` source at this file.
    #[arg(long, value_enum, default_value_t = OutputFormat::Parquet)]
    format: OutputFormat,
    /// Output file of probes.
    #[arg(long)]
    out: PathBuf,
    /// Optional Parquet file of the ground truth (true position, segment and speed).
    #[arg(long)]
    truth: Option<PathBuf>,
}

/// What `generate` writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum OutputFormat {
    Parquet,
    Ndjson,
}

#[derive(Args, Debug)]
struct ReplayArgs {
    /// Road graph (.graph or an OSM extract).
    #[arg(long)]
    graph: PathBuf,
    /// Parquet files or globs (repeatable).
    #[arg(long, required = true)]
    input: Vec<String>,
    /// Output directory: one Parquet file per output record type.
    #[arg(long = "out-dir")]
    out_dir: PathBuf,
    /// Config supplying column mapping, replay rate and stage settings.
    #[arg(long)]
    config: Option<PathBuf>,
    /// Serve /metrics on this address while replaying (e.g. 127.0.0.1:9898).
    #[arg(long = "metrics-listen")]
    metrics_listen: Option<String>,
    /// Map-matching threads (default: the config's, else the available cores).
    #[arg(long)]
    workers: Option<usize>,
    /// Print the full balance (drop and unmatched reasons, the aggregate's observations)
    /// before the closing `accounting:` line, which is always printed.
    #[arg(long)]
    report: bool,
}

pub fn dispatch(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Run(a) => run(&a.config),
        Command::Validate(a) => {
            // A file named twice (`--config a.toml a.toml`) is checked once, not found to
            // clash with itself.
            let mut paths: Vec<PathBuf> = Vec::new();
            for path in a.config.into_iter().chain(a.configs) {
                if !paths.contains(&path) {
                    paths.push(path);
                }
            }
            validate(&paths)
        }
        Command::Graph(g) => graph_command(g),
        Command::Generate(a) => generate(a),
        Command::Replay(a) => replay(a),
        Command::Render(a) => render(a),
        Command::Tap(a) => tap(a),
    }
}

fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("pipeline-io")
        .build()
        .context("starting the async runtime")
}

fn load_config(path: &Path) -> Result<PipelineConfig> {
    Ok(config::load(Some(path), &config::process_env())?)
}

fn open_graph(path: &Path, import: &ImportConfig) -> Result<Arc<RoadGraph>> {
    let started = Instant::now();
    let graph = RoadGraph::open(path, import)
        .with_context(|| format!("loading road graph {}", path.display()))?;
    tracing::info!(
        path = %path.display(),
        segments = graph.len(),
        elapsed_ms = started.elapsed().as_millis() as u64,
        "road graph loaded"
    );
    Ok(Arc::new(graph))
}

fn validate(paths: &[PathBuf]) -> Result<()> {
    let env = config::process_env();
    let mut results: Vec<std::result::Result<PipelineConfig, String>> = paths
        .iter()
        .map(|path| {
            config::load_checked(Some(path), &env, check_graph_opens).map_err(|e| e.to_string())
        })
        .collect();
    // Two configs that bind one metrics port cannot run side by side: the second one's HTTP
    // server fails to start.
    let mut bound: Vec<(std::net::SocketAddr, &Path)> = Vec::new();
    for (path, result) in paths.iter().zip(&mut results) {
        let Ok(c) = result else { continue };
        let Ok(addr) = c.telemetry.listen.parse::<std::net::SocketAddr>() else {
            continue;
        };
        let clash = bound.iter().find(|(other, _)| {
            addr.port() != 0
                && other.port() == addr.port()
                && (other.ip() == addr.ip()
                    || other.ip().is_unspecified()
                    || addr.ip().is_unspecified())
        });
        match clash {
            Some((other, first)) => {
                let problem = config::Problem {
                    key: "telemetry.listen".into(),
                    message: format!(
                        "{addr} is also bound by {} ({other}); give one of them another port \
                         (e.g. PIPELINE__TELEMETRY__LISTEN=127.0.0.1:PORT) to run them side \
                         by side",
                        first.display()
                    ),
                    origin: None,
                };
                *result = Err(config::ConfigError::Invalid(vec![problem]).to_string());
            }
            None => bound.push((addr, path)),
        }
    }
    let mut failed = 0;
    for (path, result) in paths.iter().zip(&results) {
        match result {
            Ok(c) => say!(
                "{}: ok ({} source(s), {} stage(s), {} sink(s), {} edge(s))",
                path.display(),
                c.sources.len(),
                c.stages.len(),
                c.sinks.len(),
                c.edges.len()
            ),
            Err(e) => {
                failed += 1;
                eprintln!("{}: {e}", path.display());
            }
        }
    }
    if failed > 0 {
        return Err(UsageError(format!(
            "{failed} of {} config file(s) have problems",
            paths.len()
        ))
        .into());
    }
    Ok(())
}

/// `validate`'s check beyond the pure ones: the graph the config names must open, as `run`
/// will open it (a relative path from the current directory). A `.graph` file is mapped and
/// checked whole; an OSM extract only has to be a readable file, since importing it is the
/// work of `run`.
fn check_graph_opens(c: &PipelineConfig, problems: &mut config::Problems) {
    let Some(graph) = c.graph.path.as_deref().map(Path::new) else {
        return;
    };
    let opened = if !graph.exists() {
        Err(format!(
            "{} does not exist{}; build it with `pipeline graph build`, or name an .osm.pbf \
             extract",
            graph.display(),
            if graph.is_relative() {
                " (a relative path is read from the current directory)"
            } else {
                ""
            }
        ))
    } else if graph.extension().is_some_and(|e| e == "graph") {
        RoadGraph::open(graph, &c.graph.import)
            .map(|_| ())
            .map_err(|e| e.to_string())
    } else {
        readable_file(graph)
    };
    if let Err(e) = opened {
        problems.push("graph.path", e);
    }
}

/// Whether `path` is a regular file this process can read.
fn readable_file(path: &Path) -> std::result::Result<(), String> {
    use std::io::Read;
    let fail = |e: std::io::Error| format!("{}: {e}", path.display());
    let mut file = std::fs::File::open(path).map_err(fail)?;
    if !file.metadata().map_err(fail)?.is_file() {
        return Err(format!("{}: not a regular file", path.display()));
    }
    file.read(&mut [0u8; 1]).map_err(fail)?;
    Ok(())
}

fn run(path: &Path) -> Result<()> {
    let config = load_config(path)?;
    let graph = match &config.graph.path {
        Some(p) => Some(open_graph(Path::new(p), &config.graph.import)?),
        None => None,
    };
    let listen = (!config.telemetry.listen.is_empty()).then(|| config.telemetry.listen.clone());
    execute(&config, graph, listen).map(|_| ())
}

/// Builds and runs a topology with signal handling and the HTTP endpoints, then prints a
/// per-component summary.
fn execute(
    config: &PipelineConfig,
    graph: Option<Arc<RoadGraph>>,
    listen: Option<String>,
) -> Result<runtime::RunReport> {
    let rt = runtime()?;
    rt.block_on(async {
        let topology = Topology::build(config, graph)?;
        let shutdown = CancellationToken::new();
        let readiness = Readiness::default();
        let http_stop = CancellationToken::new();
        let http = match listen {
            Some(addr) => {
                let addr = addr
                    .parse()
                    .with_context(|| format!("telemetry.listen `{addr}`"))?;
                let stop = http_stop.clone();
                let tap = topology.tap();
                let tapping = tap.is_some();
                let live = topology.live();
                let live_map = live.is_some();
                let (bound, serve) = telemetry::http::bind_with_tap(
                    addr,
                    readiness.clone(),
                    tap,
                    live,
                    async move { stop.cancelled().await },
                )
                .await
                .with_context(|| format!("binding the HTTP endpoint {addr}"))?;
                tracing::info!(
                    %bound,
                    tap = tapping,
                    live_map,
                    "serving /metrics, /healthz, /readyz, /tap{}",
                    if live_map { ", /speeds, /segments, /map" } else { "" }
                );
                Some(tokio::spawn(serve))
            }
            None => None,
        };
        let signal_token = shutdown.clone();
        let signal = runtime::shutdown_signal().context("installing signal handlers")?;
        let signals = tokio::spawn(async move {
            signal.await;
            signal_token.cancel();
        });
        readiness.set_ready(true);
        let result = topology.run(shutdown).await;
        readiness.set_ready(false);
        signals.abort();
        http_stop.cancel();
        if let Some(h) = http {
            let _ = h.await;
        }
        let report = result?;
        print_summary(config, &report)?;
        anyhow::Ok(report)
    })
}

fn print_summary(config: &PipelineConfig, report: &runtime::RunReport) -> Result<()> {
    let m = telemetry::metrics();
    let secs = report.elapsed.as_secs_f64().max(1e-9);
    for name in config.sources.keys() {
        let sent = m.sent_total(name);
        say!(
            "source {name}: {sent} records ({:.0} records/s)",
            sent as f64 / secs
        );
    }
    for name in config.stages.keys().chain(config.sinks.keys()) {
        let mut flow = if config.sinks.contains_key(name) {
            format!("sink {name}: wrote {}", m.received_total(name))
        } else {
            format!(
                "stage {name}: in {} out {}",
                m.received_total(name),
                m.sent_total(name)
            )
        };
        // An aggregate's late observations are neither output nor drops: say where they went.
        if let Some(StageConfig::Aggregate(_)) = config.stages.get(name) {
            let (_, late) = pipeline::stage::aggregate::observation_totals(name);
            flow.push_str(&format!(", late {late} ({})", late_fate(config, name)));
        }
        let dropped: Vec<String> = m
            .dropped_totals(name)
            .iter()
            .map(|(reason, n)| format!("{reason}={n}"))
            .collect();
        if dropped.is_empty() {
            say!("{flow}");
        } else {
            say!("{flow}, dropped {}", dropped.join(" "));
        }
    }
    say!(
        "finished in {:.3} s{}",
        report.elapsed.as_secs_f64(),
        if report.interrupted {
            " (interrupted by signal; outputs flushed)"
        } else {
            ""
        }
    );
    Ok(())
}

/// Where aggregate `name`'s late observations go: its `late` port, or nowhere.
fn late_fate(config: &PipelineConfig, name: &str) -> String {
    if config.reads_port(name, "late") {
        format!("sent to {name}.late")
    } else {
        format!("discarded: no edge reads {name}.late")
    }
}

fn graph_command(cmd: GraphCommand) -> Result<()> {
    match cmd {
        GraphCommand::Build { osm, out, config } => {
            let import = match config {
                Some(path) => {
                    config::load_unvalidated(Some(&path), &config::process_env())?
                        .graph
                        .import
                }
                None => ImportConfig::default(),
            };
            let started = Instant::now();
            let graph = RoadGraph::from_osm(&osm, &import)
                .with_context(|| format!("importing {}", osm.display()))?;
            let imported = started.elapsed();
            graph
                .write(&out)
                .with_context(|| format!("writing {}", out.display()))?;
            say!("{}", graph.info());
            say!(
                "built {} in {:.3} s (import {:.3} s)",
                out.display(),
                started.elapsed().as_secs_f64(),
                imported.as_secs_f64()
            );
            Ok(())
        }
        GraphCommand::Info { graph } => {
            let g = open_graph(&graph, &ImportConfig::default())?;
            say!("{}", g.info());
            Ok(())
        }
        GraphCommand::Export { graph, out } => {
            let g = open_graph(&graph, &ImportConfig::default())?;
            let rows = graph::export::write_segments_parquet(&g, &out)
                .with_context(|| format!("exporting segments to {}", out.display()))?;
            say!("wrote {rows} segments to {}", out.display());
            Ok(())
        }
    }
}

fn generate(a: GenerateArgs) -> Result<()> {
    let graph = open_graph(&a.graph, &ImportConfig::default())?;
    let cfg = GeneratorSourceConfig {
        vehicles: a.vehicles,
        duration_s: a.duration_s,
        interval_s: a.interval_s,
        noise_m: a.noise_m,
        seed: a.seed,
        start_ms: a.start_ms,
        fault_rate: a.fault_rate,
        trip_s: a.trip_s,
        congestion: CongestionConfig {
            enabled: !a.no_congestion,
            slow_link_share: a.slow_link_share,
            slow_link_factor: a.slow_link_factor,
            junction_queue_m: a.junction_queue_m,
            queue_speed_mps: a.queue_speed_mps,
            rush_peak_fraction: a.rush_peak_fraction,
            off_peak_level: a.off_peak_level,
        },
        ..GeneratorSourceConfig::default()
    };
    let mut problems = config::Problems::new();
    cfg.validate("generate", &mut problems);
    if !problems.is_empty() {
        return Err(config::ConfigError::Invalid(problems.into_vec()).into());
    }
    if !(0.0..=1.0).contains(&a.dirty) {
        return Err(UsageError(format!("--dirty must be between 0 and 1, got {}", a.dirty)).into());
    }
    let started = Instant::now();
    let (probes, truth) = generator::generate(&graph, &cfg);
    let written = if a.dirty > 0.0 {
        let ndjson = a.format == OutputFormat::Ndjson;
        let kinds = if a.dirty_kinds.is_empty() {
            DirtyKind::ALL
                .into_iter()
                .filter(|k| !ndjson || *k != DirtyKind::MsAsS)
                .collect()
        } else {
            a.dirty_kinds.clone()
        };
        if ndjson && kinds.contains(&DirtyKind::MsAsS) {
            return Err(UsageError(
                "--format ndjson carries ts_ms only: ms_as_s needs --format parquet".into(),
            )
            .into());
        }
        let interval_ms = (a.interval_s * 1000.0).round().max(1.0) as i64;
        let dirt = DirtyConfig {
            fraction: a.dirty,
            kinds: kinds.clone(),
            seed: a.seed,
            interval_ms,
            end_ms: Some(a.start_ms.saturating_add((a.duration_s * 1000.0) as i64)),
        };
        let (rows, counts) = dirty::corrupt_all(probes, dirt);
        let layout = DirtyLayout::for_kinds(&kinds);
        match a.format {
            OutputFormat::Parquet => dirty::write_parquet(&rows, layout, &a.out),
            OutputFormat::Ndjson => dirty::write_ndjson(&rows, &a.out),
        }
        .with_context(|| format!("writing {}", a.out.display()))?;
        say!("dirty: {counts} (total {})", counts.total());
        if layout.seconds_column {
            say!(
                "dirty: column {} holds epoch seconds (ms_as_s rows hold milliseconds); replay \
                 with timestamp_unit = \"s\" and columns.timestamp = \"{}\" to read it",
                dirty::SECONDS_COLUMN,
                dirty::SECONDS_COLUMN
            );
        }
        rows.len()
    } else {
        match a.format {
            OutputFormat::Parquet => generator::write_probes_parquet(&probes, &a.out),
            OutputFormat::Ndjson => {
                let rows: Vec<dirty::DirtyRow> =
                    probes.iter().cloned().map(dirty::DirtyRow::from).collect();
                dirty::write_ndjson(&rows, &a.out)
            }
        }
        .with_context(|| format!("writing {}", a.out.display()))?;
        probes.len()
    };
    if let Some(path) = &a.truth {
        generator::write_truth_parquet(&truth, path)
            .with_context(|| format!("writing {}", path.display()))?;
    }
    say!(
        "generated {} probes from {} vehicles over {} s into {}{} in {:.3} s",
        written,
        a.vehicles,
        a.duration_s,
        a.out.display(),
        a.truth
            .as_ref()
            .map(|t| format!(" (truth: {})", t.display()))
            .unwrap_or_default(),
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

/// The replay topology: Parquet → every in-process stage → one Parquet file per record type.
fn replay(a: ReplayArgs) -> Result<()> {
    let base = config::load_unvalidated(a.config.as_deref(), &config::process_env())?;
    let graph = open_graph(&a.graph, &base.graph.import)?;
    std::fs::create_dir_all(&a.out_dir)
        .with_context(|| format!("creating output directory {}", a.out_dir.display()))?;

    // Settings come from the config's first component of each type, if any.
    let mut source = base
        .sources
        .values()
        .find_map(|s| match s {
            SourceConfig::Parquet(p) => Some(p.clone()),
            _ => None,
        })
        .unwrap_or_else(|| ParquetSourceConfig::new(Vec::<String>::new()));
    source.paths = a.input.clone();
    let clean = base
        .stages
        .values()
        .find_map(|s| match s {
            StageConfig::Clean(c) => Some(c.clone()),
            _ => None,
        })
        .unwrap_or_default();
    let mut assign = base
        .stages
        .values()
        .find_map(|s| match s {
            StageConfig::Assign(c) => Some(c.clone()),
            _ => None,
        })
        .unwrap_or_default();
    if a.workers.is_some() {
        assign.workers = a.workers;
    }
    let mut aggregate = base
        .stages
        .values()
        .find_map(|s| match s {
            StageConfig::Aggregate(c) => Some(c.clone()),
            _ => None,
        })
        .unwrap_or_default();
    // Replay is event time only: no window may close by processing time.
    aggregate.idle_timeout_ms = 0;
    // One sink per output record type, named after its file.
    let outputs = [
        ("clean", RecordKind::Probe),
        ("assign.matched_points", RecordKind::MatchedPoint),
        ("assign", RecordKind::SegmentObservation),
        ("aggregate", RecordKind::SegmentSpeed),
    ];
    let sinks = outputs
        .iter()
        .map(|(_, kind)| {
            let path = a.out_dir.join(format!("{}.parquet", kind.file_stem()));
            (
                kind.file_stem().to_string(),
                SinkConfig::Parquet(ParquetSinkConfig::new(path)),
            )
        })
        .collect();
    let mut edges: Vec<(String, String)> = vec![
        ("replay".into(), "clean".into()),
        ("clean".into(), "assign".into()),
        ("assign".into(), "aggregate".into()),
    ];
    edges.extend(
        outputs
            .iter()
            .map(|(from, kind)| (from.to_string(), kind.file_stem().to_string())),
    );
    let config = PipelineConfig {
        sources: BTreeMap::from([("replay".to_string(), SourceConfig::Parquet(source))]),
        stages: BTreeMap::from([
            ("clean".to_string(), StageConfig::Clean(clean)),
            ("assign".to_string(), StageConfig::Assign(assign)),
            ("aggregate".to_string(), StageConfig::Aggregate(aggregate)),
        ]),
        sinks,
        edges,
        edge_entries: Vec::new(),
        graph: config::GraphConfig {
            path: Some(a.graph.display().to_string()),
            ..base.graph
        },
        ..base
    };
    config::check(&config)?;
    let report = execute(&config, Some(graph), a.metrics_listen)?;
    let m = telemetry::metrics();
    let read = m.sent_total("replay");
    say!(
        "replay: {read} probes read, {} clean, {} matched points, {} observations and {} \
         speeds written to {} in {:.3} s ({:.0} probes/s)",
        m.sent_total("clean"),
        m.received_total(RecordKind::MatchedPoint.file_stem()),
        m.received_total(RecordKind::SegmentObservation.file_stem()),
        m.received_total(RecordKind::SegmentSpeed.file_stem()),
        a.out_dir.display(),
        report.elapsed.as_secs_f64(),
        read as f64 / report.elapsed.as_secs_f64().max(1e-9)
    );
    // Where the time went: each stage runs on its own thread, so these overlap.
    say!(
        "stage time: clean {:.3} s, assign {:.3} s, aggregate {:.3} s (busy time of each \
         stage's thread; they run concurrently)",
        m.busy_seconds("clean"),
        m.busy_seconds("assign"),
        m.busy_seconds("aggregate")
    );
    let balance = Balance::of_replay(m, &config);
    if a.report {
        balance.print_details()?;
    }
    say!("{}", balance.accounting_line());
    if !balance.balanced() && !report.interrupted {
        anyhow::bail!("the counters do not balance: some records are not accounted for");
    }
    Ok(())
}

/// Where every record of a replay went, read from the metrics once the run has ended: each
/// probe read is dropped (by the reader or clean, by reason), matched, or not matched (by
/// reason); each observation the aggregate received is accepted, late, or dropped (by
/// reason).
struct Balance {
    probes_in: u64,
    probes_dropped: Vec<(String, u64)>,
    matched: u64,
    unmatched: Vec<(&'static str, u64)>,
    observations_in: u64,
    observations_dropped: Vec<(String, u64)>,
    accepted: u64,
    late: u64,
    /// Where the late observations went (`late_fate`).
    late_fate: String,
}

impl Balance {
    fn of_replay(m: &telemetry::Metrics, config: &PipelineConfig) -> Self {
        let nonzero = |v: Vec<(String, u64)>| -> Vec<(String, u64)> {
            v.into_iter().filter(|&(_, n)| n > 0).collect()
        };
        let reader_dropped = nonzero(m.dropped_totals("replay"));
        let probes_in = m.sent_total("replay") + sum(&reader_dropped);
        let mut probes_dropped = reader_dropped;
        probes_dropped.extend(nonzero(m.dropped_totals("clean")));
        let (matched, unmatched) = pipeline::stage::assign::probe_totals("assign");
        let (accepted, late) = pipeline::stage::aggregate::observation_totals("aggregate");
        Self {
            probes_in,
            probes_dropped,
            matched,
            unmatched: unmatched.into_iter().filter(|&(_, n)| n > 0).collect(),
            observations_in: m.received_total("aggregate"),
            observations_dropped: nonzero(m.dropped_totals("aggregate")),
            accepted,
            late,
            late_fate: late_fate(config, "aggregate"),
        }
    }

    fn probes_balance(&self) -> bool {
        self.probes_in == sum(&self.probes_dropped) + self.matched + sum(&self.unmatched)
    }

    fn observations_balance(&self) -> bool {
        self.observations_in == sum(&self.observations_dropped) + self.accepted + self.late
    }

    fn balanced(&self) -> bool {
        self.probes_balance() && self.observations_balance()
    }

    fn print_details(&self) -> Result<()> {
        let list = |v: &[(String, u64)]| {
            if v.is_empty() {
                "none".to_string()
            } else {
                let parts: Vec<String> = v.iter().map(|(r, n)| format!("{r}={n}")).collect();
                parts.join(" ")
            }
        };
        let unmatched: Vec<(String, u64)> = self
            .unmatched
            .iter()
            .map(|&(r, n)| (r.to_string(), n))
            .collect();
        say!(
            "probes dropped: {}; unmatched: {}",
            list(&self.probes_dropped),
            list(&unmatched)
        );
        say!(
            "observations: in={} dropped={} accepted={} late={} balanced={} (dropped: {}; \
             late {})",
            self.observations_in,
            sum(&self.observations_dropped),
            self.accepted,
            self.late,
            self.observations_balance(),
            list(&self.observations_dropped),
            self.late_fate
        );
        Ok(())
    }

    /// The closing line: probes, and `balanced` over probes and observations both.
    fn accounting_line(&self) -> String {
        format!(
            "accounting: in={} dropped={} matched={} unmatched={} balanced={}",
            self.probes_in,
            sum(&self.probes_dropped),
            self.matched,
            sum(&self.unmatched),
            self.balanced()
        )
    }
}

fn sum<S>(counts: &[(S, u64)]) -> u64 {
    counts.iter().map(|(_, n)| n).sum()
}

fn render(a: RenderArgs) -> Result<()> {
    use pipeline::render::{format_utc, WindowChoice};
    // A wrong extension is a usage error, reported before any file is read.
    pipeline::render::Format::from_path(&a.out).map_err(|e| UsageError(e.to_string()))?;
    let graph = open_graph(&a.graph, &ImportConfig::default())?;
    let speeds = pipeline::render::read_speeds(&a.speeds)?;
    let options = pipeline::render::RenderOptions {
        width_px: a.width_px,
        window_start_ms: a.window_start_ms,
        estimator: a.estimator,
    };
    let (selection, drawn) = pipeline::render::render_file(&graph, &speeds, &options, &a.out)?;
    let choice = match selection.choice {
        WindowChoice::Requested => String::new(),
        WindowChoice::LatestComplete { skipped_start_ms } => format!(
            ", the latest complete one; the last window, from {}, may be partial: \
             --window-start-ms {skipped_start_ms} draws it",
            format_utc(skipped_start_ms)
        ),
        WindowChoice::OnlyPartial => {
            ", the only one, which may be partial: the data spans less than a window".into()
        }
    };
    say!(
        "drew {} of {} segments with a speed ({} estimator, window {} to {}{choice}) into {} \
         ({}x{} px)",
        drawn.with_speed,
        drawn.segments,
        selection.estimator,
        format_utc(selection.window_start_ms),
        format_utc(selection.window_end_ms),
        a.out.display(),
        drawn.width_px,
        drawn.height_px
    );
    Ok(())
}

fn tap(a: TapArgs) -> Result<()> {
    use std::io::{Read, Write};
    let edge: String = a
        .edge
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect();
    let path = format!(
        "/tap?edge={edge}&limit={}&timeout_ms={}",
        a.limit, a.timeout_ms
    );
    let mut stream = std::net::TcpStream::connect(&a.addr)
        .with_context(|| format!("connecting to the pipeline at {}", a.addr))?;
    // The server waits up to timeout_ms (at most 60 s) for records; allow for that.
    stream.set_read_timeout(Some(std::time::Duration::from_millis(
        a.timeout_ms.min(60_000) + 30_000,
    )))?;
    write!(stream, "GET {path} HTTP/1.0\r\nHost: {}\r\n\r\n", a.addr)?;
    let mut response = String::new();
    stream
        .read_to_string(&mut response)
        .with_context(|| format!("reading the answer of {}", a.addr))?;
    let (head, body) = response.split_once("\r\n\r\n").unwrap_or((&response, ""));
    let status = head.split_whitespace().nth(1).unwrap_or("?");
    if status != "200" {
        return Err(UsageError(format!("{}: {}", a.addr, body.trim())).into());
    }
    let mut out = std::io::stdout().lock();
    out.write_all(body.as_bytes())?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    /// Every flag and argument of every subcommand says what it is in `--help`.
    #[test]
    fn every_flag_of_every_command_has_help() {
        fn undocumented(command: &clap::Command, path: &str, out: &mut Vec<String>) {
            for arg in command.get_arguments() {
                let id = arg.get_id().as_str();
                if id != "help" && id != "version" && arg.get_help().is_none() {
                    out.push(format!("{path} {id}"));
                }
            }
            for sub in command.get_subcommands() {
                undocumented(sub, &format!("{path} {}", sub.get_name()), out);
            }
        }
        let mut missing = Vec::new();
        undocumented(&super::Cli::command(), "pipeline", &mut missing);
        assert!(missing.is_empty(), "no help text: {missing:?}");
    }
}
