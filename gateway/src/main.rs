//! The `vxgate` command: `run`, `check`, `init`, `ctl`, …

use clap::{Parser, Subcommand};

// The proxy allocates per request (headers, bodies' frames); mimalloc's thread-local free
// lists suit the one-thread-per-core ingress better than glibc's arenas.
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Parser)]
#[command(
    name = "vxgate",
    version = concat!(env!("CARGO_PKG_VERSION"), " (", env!("VXGATE_COMMIT"), ")"),
    about = "Container edge gateway: HTTPS ingress, embedded DNS, userspace VXLAN overlay"
)]
struct Cli {
    /// Log level when RUST_LOG is not set: error, warn, info, debug or trace.
    #[arg(long, global = true, default_value = "info")]
    log_level: String,
    /// Log lines as text (colours only on a terminal) or one JSON object each, for log
    /// shippers.
    #[arg(long, global = true, value_enum, default_value = "text")]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Subcommand)]
enum Command {
    /// Run everything the config enables. SIGTERM/SIGINT drain and exit 0; SIGHUP reloads.
    Run {
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Validate a config: exit 0, or print `FILE:LINE: key: problem` lines and exit 2.
    Check {
        #[arg(long, short)]
        config: PathBuf,
    },
    /// This host's WireGuard key (`[overlay.encryption]`).
    Key {
        #[command(subcommand)]
        what: KeyCommand,
    },
    /// The policy's nftables table (`table inet vxgate`).
    Policy {
        #[command(subcommand)]
        what: PolicyCommand,
    },
    /// Write a starter config for this host (its name, underlay address, Docker network and
    /// bridge, etcd endpoints when given), checked before it is written; never overwrites.
    Init {
        /// Where to write it.
        #[arg(long, short, default_value = "/etc/vxgate/vxgate.toml")]
        config: PathBuf,
        /// An etcd endpoint (repeat, or comma-separate): the registry is shared through them.
        #[arg(long, value_delimiter = ',', value_name = "URL")]
        etcd: Vec<String>,
        /// This host runs Docker: fail when it does not answer or has no network to span
        /// (without it, Docker is used when it answers).
        #[arg(long)]
        docker: bool,
        /// The Docker Engine to ask (default: DOCKER_HOST, else unix:///var/run/docker.sock).
        #[arg(long)]
        docker_endpoint: Option<String>,
        /// The Docker network to span (default: the only user-defined bridge network).
        #[arg(long)]
        docker_network: Option<String>,
        /// This node's name (default: the host name).
        #[arg(long)]
        node: Option<String>,
        /// The DNS zone services are named in.
        #[arg(long)]
        zone: Option<String>,
        /// Print the config instead of writing it.
        #[arg(long)]
        stdout: bool,
    },
    /// Print shell completions (bash, zsh, fish, elvish, powershell).
    Completions { shell: clap_complete::Shell },
    /// Print the man page (roff).
    Manpage,
    /// Talk to a running vxgate's admin API.
    Ctl {
        /// The admin API's address.
        #[arg(long, default_value = "127.0.0.1:9180", global = true)]
        admin: String,
        /// A file holding the bearer token (needed when the API is not on loopback).
        #[arg(long, global = true)]
        token_file: Option<PathBuf>,
        /// Print the API's JSON instead of a table.
        #[arg(long, global = true)]
        json: bool,
        #[command(subcommand)]
        what: CtlCommand,
    },
}

#[derive(Subcommand)]
enum PolicyCommand {
    /// Remove `table inet vxgate`: every container open again. vxgate keeps the table
    /// when it stops (so a restart opens no window); this is how to take it away.
    Flush,
}

#[derive(Subcommand)]
enum KeyCommand {
    /// Print this host's public key, as `wg pubkey` would (the private key file is made,
    /// mode 0600, when it does not exist yet, as `vxgate run` would make it).
    Show {
        #[arg(long, short)]
        config: PathBuf,
    },
}

#[derive(Subcommand)]
enum CtlCommand {
    /// Services with their backends and health.
    Services,
    /// Every container in the registry.
    Containers,
    /// The overlay's forwarding database.
    Fdb,
    /// The overlay's WireGuard peers: key, endpoint, last handshake, session, bytes.
    Peers,
    /// The policy between services: protected containers and who may reach them.
    Policy,
    /// Add a container (validated like a [[containers]] entry).
    Add {
        #[arg(long)]
        name: String,
        #[arg(long)]
        ip: String,
        #[arg(long)]
        port: u16,
        #[arg(long)]
        mac: Option<String>,
        /// A label as key=value; repeat for more.
        #[arg(long = "label", value_name = "KEY=VALUE")]
        labels: Vec<String>,
        #[arg(long)]
        network: Option<String>,
        #[arg(long)]
        node: Option<String>,
    },
    /// Remove a container by name.
    Rm { name: String },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logs(&cli.log_level, cli.log_format);
    match cli.command {
        Command::Check { config } => match vxgate::config::load(&config) {
            Ok(_) => {
                println!("{}: ok", config.display());
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("{e}");
                ExitCode::from(2)
            }
        },
        Command::Run { config } => match vxgate::activation::Passed::from_env() {
            Ok(passed) => vxgate::daemon::main(&config, passed),
            Err(e) => {
                tracing::error!("{e}");
                ExitCode::FAILURE
            }
        },
        Command::Init {
            config,
            etcd,
            docker,
            docker_endpoint,
            docker_network,
            node,
            zone,
            stdout,
        } => {
            let opts = vxgate::init::Options {
                node,
                etcd,
                docker_endpoint,
                docker_network,
                zone,
            };
            let found = vxgate::init::discover(&opts);
            if let (true, Some(why)) = (docker, &found.docker_note) {
                eprintln!("vxgate init --docker: {why}");
                return ExitCode::from(2);
            }
            let text = vxgate::init::render(&found, &opts);
            if stdout {
                print!("{text}");
                return ExitCode::SUCCESS;
            }
            match vxgate::init::write(&config, &text) {
                Ok(()) => {
                    println!(
                        "{}: written (node {}, underlay {}, Docker {}); review it, then vxgate check --config {}",
                        config.display(),
                        found.node,
                        found
                            .underlay
                            .map(|(ip, ifc)| format!("{ip} on {ifc}"))
                            .unwrap_or_else(|| "not found".into()),
                        found
                            .docker
                            .map(|d| format!("network {} on bridge {}", d.name, d.bridge))
                            .or(found.docker_note)
                            .unwrap_or_default(),
                        config.display()
                    );
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("vxgate init: {e}");
                    ExitCode::from(2)
                }
            }
        }
        Command::Completions { shell } => {
            let mut cmd = <Cli as clap::CommandFactory>::command();
            clap_complete::generate(shell, &mut cmd, "vxgate", &mut std::io::stdout());
            ExitCode::SUCCESS
        }
        Command::Manpage => {
            let cmd = <Cli as clap::CommandFactory>::command();
            match clap_mangen::Man::new(cmd).render(&mut std::io::stdout()) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("vxgate manpage: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Policy {
            what: PolicyCommand::Flush,
        } => {
            let done = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(vxgate::policy::Error::Spawn)
                .and_then(|rt| {
                    rt.block_on(vxgate::policy::apply(&vxgate::policy::nft::remove_script()))
                });
            match done {
                Ok(()) => {
                    println!("table inet vxgate removed");
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("{e}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Key {
            what: KeyCommand::Show { config },
        } => {
            let cfg = match vxgate::config::load(&config) {
                Ok(c) => c,
                Err(e) => {
                    eprintln!("{e}");
                    return ExitCode::from(2);
                }
            };
            let path = cfg.wireguard_key_file();
            match vxgate::overlay::wg::load_or_create_key(&path) {
                Ok(k) => {
                    println!(
                        "{}",
                        vxgate::overlay::wg::encode_key(&vxgate::overlay::wg::public_key(&k))
                    );
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("vxgate key show: {}: {e}", path.display());
                    ExitCode::FAILURE
                }
            }
        }
        Command::Ctl {
            admin,
            token_file,
            json,
            what,
        } => {
            let token = match token_file.map(std::fs::read_to_string) {
                Some(Ok(t)) => Some(t.trim().to_owned()),
                Some(Err(e)) => {
                    eprintln!("vxgate ctl: token file: {e}");
                    return ExitCode::from(2);
                }
                None => None,
            };
            let call = match what {
                CtlCommand::Services => vxgate::ctl::Call::Services,
                CtlCommand::Containers => vxgate::ctl::Call::Containers,
                CtlCommand::Fdb => vxgate::ctl::Call::Fdb,
                CtlCommand::Peers => vxgate::ctl::Call::Peers,
                CtlCommand::Policy => vxgate::ctl::Call::Policy,
                CtlCommand::Rm { name } => vxgate::ctl::Call::Remove(name),
                CtlCommand::Add {
                    name,
                    ip,
                    port,
                    mac,
                    labels,
                    network,
                    node,
                } => {
                    let mut map = serde_json::Map::new();
                    for l in labels {
                        let Some((k, v)) = l.split_once('=') else {
                            eprintln!("vxgate ctl: --label {l:?}: expected KEY=VALUE");
                            return ExitCode::from(2);
                        };
                        map.insert(k.to_owned(), serde_json::Value::String(v.to_owned()));
                    }
                    let mut v =
                        serde_json::json!({ "name": name, "ip": ip, "port": port, "labels": map });
                    for (k, x) in [("mac", mac), ("network", network), ("node", node)] {
                        if let Some(x) = x {
                            v[k] = serde_json::Value::String(x);
                        }
                    }
                    vxgate::ctl::Call::Add(v)
                }
            };
            vxgate::ctl::main(vxgate::ctl::Options { admin, token, json }, call)
        }
    }
}

fn init_logs(level: &str, format: LogFormat) {
    use tracing_subscriber::EnvFilter;
    // rustls logs every odd ClientHello (an IP address as SNI, say) at warn: one line per
    // handshake from some clients, so it is kept to errors unless RUST_LOG says otherwise
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(format!("{level},rustls=error")))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    let logs = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => logs
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .init(),
        LogFormat::Json => logs.json().with_current_span(false).init(),
    }
}
