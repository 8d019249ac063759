//! One demo target as a process: `demo-target --id i-1 --port 9001`.

use clap::Parser;
use tokio::net::TcpListener;

/// A demo target app that answers with its own identity and sets a Flask-like `session` cookie on /login.
#[derive(Parser)]
#[command(version)]
struct Args {
    /// Identity the target reports in every answer.
    #[arg(long)]
    id: String,
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1")]
    host: std::net::IpAddr,
    /// Port to listen on.
    #[arg(long)]
    port: u16,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let listener = TcpListener::bind((args.host, args.port)).await?;
    eprintln!("demo target {} listening on {}", args.id, listener.local_addr()?);
    let (_stop, stopped) = tokio::sync::oneshot::channel();
    sticky_demo_target::serve(&args.id, listener, stopped).await?;
    Ok(())
}
