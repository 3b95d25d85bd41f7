//! The `vxgate` command: `run`, `check`.

use clap::{Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Parser)]
#[command(
    name = "vxgate",
    version,
    about = "Container edge gateway: HTTPS ingress, embedded DNS, userspace VXLAN overlay"
)]
struct Cli {
    /// Log level when RUST_LOG is not set: error, warn, info, debug or trace.
    #[arg(long, global = true, default_value = "info")]
    log_level: String,
    #[command(subcommand)]
    command: Command,
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
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logs(&cli.log_level);
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
        Command::Run { config } => vxgate::daemon::main(&config),
    }
}

fn init_logs(level: &str) {
    use tracing_subscriber::EnvFilter;
    // rustls logs every odd ClientHello (an IP address as SNI, say) at warn: one line per
    // handshake from some clients, so it is kept to errors unless RUST_LOG says otherwise
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(format!("{level},rustls=error")))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
}
