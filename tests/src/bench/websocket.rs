//! WebSocket messages through a proxy: `connections` WebSockets to the demo targets' echo
//! (`/ws`), each a blocking client sending a 64-byte message and reading its echo, over and
//! over, for the duration.

use std::net::TcpStream;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use tungstenite::client::IntoClientRequest;
use tungstenite::{Message, WebSocket};

use crate::bench::load::cpu_seconds;

/// What one measurement gave.
#[derive(Debug, Clone, Copy)]
pub struct Echoes {
    pub messages_per_second: f64,
    /// The proxy's CPU seconds per 1,000 messages (each one relayed twice: out and back).
    pub cpu_per_1000: f64,
}

/// A WebSocket to the demo targets' echo through the proxy at `base` (`http://host:port`),
/// sending `cookie` as its Cookie header; reads time out after 5 s.
pub fn open(base: &str, cookie: Option<&str>) -> anyhow::Result<WebSocket<TcpStream>> {
    let url = format!("{}/ws", base.replacen("http://", "ws://", 1));
    let authority = base.trim_start_matches("http://");
    let mut request = url.as_str().into_client_request()?;
    if let Some(cookie) = cookie {
        request.headers_mut().insert("cookie", cookie.parse()?);
    }
    let stream = TcpStream::connect(authority).with_context(|| format!("connecting to {authority}"))?;
    stream.set_nodelay(true)?;
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    let (socket, response) =
        tungstenite::client::client(request, stream).map_err(|e| anyhow::anyhow!("WebSocket to {url}: {e}"))?;
    if response.status() != 101 {
        bail!("WebSocket to {url}: {}", response.status());
    }
    Ok(socket)
}

/// Sends a message on `socket` and reads its echo: false once the WebSocket is closed.
pub fn echoes(socket: &mut WebSocket<TcpStream>) -> bool {
    let message = Message::text("ping");
    if socket.send(message.clone()).is_err() {
        return false;
    }
    loop {
        match socket.read() {
            Ok(Message::Ping(_) | Message::Pong(_)) => {}
            Ok(echo) => return echo == message,
            Err(_) => return false,
        }
    }
}

/// Echoes through the proxy at `base` (`http://host:port`, process `pid`).
pub fn measure(
    base: &str,
    pid: u32,
    cookie: Option<&str>,
    connections: usize,
    duration: Duration,
) -> anyhow::Result<Echoes> {
    let sockets = (0..connections)
        .map(|_| open(base, cookie))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let stop = Arc::new(AtomicBool::new(false));
    let echoed = Arc::new(AtomicU64::new(0));
    let cpu_before = cpu_seconds(pid)?;
    let started = Instant::now();
    let workers: Vec<_> = sockets
        .into_iter()
        .map(|mut socket| {
            let (stop, echoed) = (Arc::clone(&stop), Arc::clone(&echoed));
            std::thread::spawn(move || -> anyhow::Result<()> {
                let payload = "x".repeat(64);
                while !stop.load(Ordering::Relaxed) {
                    socket.send(Message::text(payload.clone()))?;
                    match socket.read()? {
                        Message::Text(text) if text.len() == payload.len() => {
                            echoed.fetch_add(1, Ordering::Relaxed);
                        }
                        other => bail!("not the echo: {other:?}"),
                    }
                }
                let _ = socket.close(None);
                Ok(())
            })
        })
        .collect();
    std::thread::sleep(duration);
    stop.store(true, Ordering::Relaxed);
    let elapsed = started.elapsed().as_secs_f64();
    let cpu = cpu_seconds(pid)? - cpu_before;
    for worker in workers {
        worker
            .join()
            .map_err(|_| anyhow::anyhow!("a WebSocket client panicked"))??;
    }
    let messages = echoed.load(Ordering::Relaxed);
    if messages == 0 {
        bail!("no message echoed through {base}");
    }
    Ok(Echoes {
        messages_per_second: messages as f64 / elapsed,
        cpu_per_1000: cpu / messages as f64 * 1000.0,
    })
}
