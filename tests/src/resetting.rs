//! Targets that reset every reused keep-alive connection (`tests/targets/resetting_target.py`),
//! one Python process per instance id on a free port of 127.0.0.1.

use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use sticky_testing::artifacts::workspace_root;
use sticky_testing::clients::venv_bin;
use sticky_testing::free_port;

pub struct ResettingTargets {
    processes: Vec<(String, SocketAddr, Child)>,
}

impl ResettingTargets {
    /// Starts one per id and waits until each accepts connections (panics after 10 s).
    pub fn start(ids: &[&str]) -> std::io::Result<Self> {
        let script = workspace_root().join("tests/targets/resetting_target.py");
        let mut started = Self { processes: Vec::new() };
        for id in ids {
            let address = SocketAddr::from(([127, 0, 0, 1], free_port()?));
            let child = Command::new(venv_bin("python"))
                .arg(&script)
                .args([*id, &address.port().to_string()])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()?;
            started.processes.push(((*id).to_owned(), address, child));
        }
        for (id, address, _) in &started.processes {
            sticky_testing::eventually(Duration::from_secs(10), &format!("{id} listens on {address}"), || {
                TcpStream::connect_timeout(address, Duration::from_millis(200)).is_ok()
            });
        }
        Ok(started)
    }
}

impl crate::live::Targets for ResettingTargets {
    fn addresses(&self) -> Vec<(String, SocketAddr)> {
        self.processes
            .iter()
            .map(|(id, address, _)| (id.clone(), *address))
            .collect()
    }
}

impl Drop for ResettingTargets {
    fn drop(&mut self) {
        for (_, _, child) in &mut self.processes {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
