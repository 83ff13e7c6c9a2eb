//! The `zentrale` binary: command line, configuration and wiring. No domain logic lives here —
//! routing is `acd-core`, SIP and media are `sip-gateway`, the API and storage are `crm-api`;
//! this crate parses the command line, loads `zentrale.toml`, starts the pieces and connects
//! them with channels (DESIGN.md, "Who talks to whom").
#![forbid(unsafe_code)]

mod config;
mod provision;
mod recording_retention;
mod routing_host;
mod screen_pop;
mod serve;
mod simulate;
mod sip_wiring;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// zentrale — a virtual ACD and agent workspace.
#[derive(Debug, Parser)]
#[command(version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the server: SIP, media, the HTTP API and the browser UI in one process.
    Serve {
        /// Path to zentrale.toml; without it every setting takes its localhost default.
        #[arg(long, short)]
        config: Option<PathBuf>,
        /// Create a demo tenant with a queue, two agents and web logins (printed at start).
        #[arg(long)]
        demo: bool,
    },
    /// What-if simulation: run a routing configuration against simulated traffic and compare
    /// service level, ASA, AHT and abandon rate with the Erlang C prediction.
    Simulate(simulate::SimulateArgs),
    /// Apply a routing file (queues, skills, agents, hours, DIDs) to a tenant in the database.
    Provision(provision::ProvisionArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Serve { config, demo } => serve::run(config.as_deref(), demo),
        Command::Simulate(args) => simulate::run(args),
        Command::Provision(args) => provision::run(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
