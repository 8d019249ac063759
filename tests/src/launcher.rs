//! The operator's launcher as the tests run it: a configuration file for the shell under test
//! in front of given instances, one load balancer (`terraform-balancer`, HTTP 80) whose address
//! is the first of a free pool.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::Path;

use sticky_envoy::envoy_binary;
use sticky_testing::artifacts::build_control;
use sticky_testing::bouncer::BouncerFile;
use sticky_testing::free_port;

use crate::xds::free_pool;

/// A launcher configuration and where its load balancer listens.
pub struct LauncherSetup {
    pub file: BouncerFile,
    /// The load balancer's address (the pool's first) and the listeners' port offset.
    pub address: Ipv4Addr,
    pub port_offset: u16,
}

impl LauncherSetup {
    /// A configuration in `dir` for `instances`, with the runtime directory and store there.
    pub fn new(dir: &Path, instances: Vec<(String, SocketAddr)>) -> Self {
        let (pool, port_offset) = free_pool();
        let shell = crate::shell_under_test().build().unwrap_or_else(|e| panic!("{e}"));
        let port = || free_port().unwrap_or_else(|e| panic!("{e}"));
        let file = BouncerFile {
            runtime_dir: dir.join("run"),
            api: SocketAddr::from(([127, 0, 0, 1], port())),
            access_key: ("AKIDBOUNCER".to_owned(), "bouncer-secret".to_owned()),
            store: dir.join("sticky.db").display().to_string(),
            address_pool: format!("{pool}/24"),
            port_offset,
            control_binary: build_control().unwrap_or_else(|e| panic!("{e}")),
            control_args: Vec::new(),
            envoy_binary: envoy_binary().unwrap_or_else(|e| panic!("{e}")),
            shell: shell.named_artifact(),
            admin_port: port(),
            concurrency: 1,
            max_connections: None,
            instances,
            load_balancer: crate::LOAD_BALANCER.to_owned(),
            health_target: "HTTP:80/health".to_owned(),
            https: None,
            control_ca: Some((dir.join("ca/ca.pem"), dir.join("ca/ca-key.pem"))),
        };
        Self {
            file,
            address: Ipv4Addr::from(u32::from(pool) + 1),
            port_offset,
        }
    }

    /// A client of its API over TLS, trusting the CA the launcher made (as the aws CLI given
    /// `--ca-bundle`).
    pub fn api(&self) -> sticky_testing::control_client::QueryClient {
        let (ca, _) = self.file.control_ca.as_ref().expect("the launcher's control plane CA");
        sticky_testing::control_client::QueryClient::new(
            self.file.api.to_string(),
            &self.file.access_key.0,
            &self.file.access_key.1,
        )
        .over_tls(sticky_testing::tls::agent_trusting(ca, None).expect("the launcher's CA"))
    }

    /// Where listener `port` of the load balancer is served.
    pub fn listener(&self, port: u16) -> SocketAddr {
        SocketAddr::from((self.address, port + self.port_offset))
    }
}
