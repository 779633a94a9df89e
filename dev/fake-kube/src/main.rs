//! `fake-kube`: serve manifests as a fake Kubernetes API server on 127.0.0.1 and write a kubeconfig
//! for it. See the crate's README.md.

use clap::Parser;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

#[derive(Parser)]
#[command(about = "A fake Kubernetes API server for tests (plain HTTP, no auth)")]
struct Args {
    /// Manifest files or directories of them (*.yaml, *.yml, *.json).
    manifests: Vec<PathBuf>,
    /// Address to listen on (port 0: any free port).
    #[arg(long, default_value = "127.0.0.1:16443")]
    listen: SocketAddr,
    /// Write a kubeconfig for this server here (current context `fake-kube`).
    #[arg(long)]
    kubeconfig: Option<PathBuf>,
    /// Namespace of objects that name none, and of the kubeconfig's context.
    #[arg(long, default_value = "default")]
    namespace: String,
    /// Where exec'd commands run (default: the current directory).
    #[arg(long)]
    workdir: Option<PathBuf>,
    /// How long a deployment rollout takes, in seconds.
    #[arg(long, default_value_t = 2.0)]
    rollout_seconds: f64,
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> std::process::ExitCode {
    let args = Args::parse();
    match run(args).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("fake-kube: error: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run(args: Args) -> Result<(), Box<dyn std::error::Error>> {
    if !args.rollout_seconds.is_finite() || args.rollout_seconds < 0.0 {
        return Err("--rollout-seconds must be a number of seconds, 0 or more".into());
    }
    let workdir = match args.workdir {
        Some(d) => d,
        None => std::env::current_dir()?,
    };
    let config = fake_kube::Config {
        manifests: args.manifests,
        namespace: args.namespace,
        workdir,
        rollout: Duration::from_secs_f64(args.rollout_seconds),
    };
    let server = fake_kube::start(config, args.listen).await?;
    if let Some(path) = &args.kubeconfig {
        // Written whole then renamed, so a reader never sees half a file.
        let tmp = path.with_extension("tmp");
        std::fs::write(&tmp, server.kubeconfig()).map_err(|e| format!("{}: {e}", tmp.display()))?;
        std::fs::rename(&tmp, path).map_err(|e| format!("{}: {e}", path.display()))?;
    }
    println!(
        "fake-kube: serving {} (requests: {}/_fake/requests)",
        server.url(),
        server.url()
    );
    tokio::signal::ctrl_c().await?;
    Ok(())
}
