//! TLS on a listener and towards targets, as Envoy is served it: an HTTPS listener's filter
//! chain terminates TLS with the certificate it names, which Envoy fetches by id over the same
//! ADS stream (SDS), never from a file; a target reached over HTTPS gets a TLS client socket.

use envoy_types::pb::envoy::config::core::v3 as core;
use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3 as tls;
use envoy_types::util::pack_any;

use crate::certificates::ServerCertificate;
use crate::tls_policy::{TlsPolicy, TlsVersion};
use tls::tls_parameters::TlsProtocol;

pub const SECRET_TYPE: &str = "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret";

/// The TLS versions and TLS 1.2 suites a listener offers by default: TLS 1.2 and 1.3, forward
/// secrecy (ECDHE) with AEAD ciphers only (TLS 1.3's suites are all of this kind). What
/// current scanners (SSL Labs, Mozilla's "intermediate") rate well.
pub const DEFAULT_CIPHER_SUITES: [&str; 6] = [
    "ECDHE-ECDSA-AES128-GCM-SHA256",
    "ECDHE-RSA-AES128-GCM-SHA256",
    "ECDHE-ECDSA-AES256-GCM-SHA384",
    "ECDHE-RSA-AES256-GCM-SHA384",
    "ECDHE-ECDSA-CHACHA20-POLY1305",
    "ECDHE-RSA-CHACHA20-POLY1305",
];

/// Certificate `certificate` as an SDS secret named by its id; `None` without its key.
pub fn secret(certificate: &ServerCertificate) -> Option<tls::Secret> {
    let key = certificate.private_key.as_ref()?;
    let inline = |text: String| {
        Some(core::DataSource {
            specifier: Some(core::data_source::Specifier::InlineString(text)),
            ..Default::default()
        })
    };
    Some(tls::Secret {
        name: certificate.id.clone(),
        r#type: Some(tls::secret::Type::TlsCertificate(tls::TlsCertificate {
            certificate_chain: inline(certificate.full_chain()),
            private_key: inline(key.expose().to_owned()),
            ..Default::default()
        })),
    })
}

fn transport_socket<M: prost::Name + prost::Message>(config: M) -> core::TransportSocket {
    core::TransportSocket {
        name: "envoy.transport_sockets.tls".to_owned(),
        config_type: Some(core::transport_socket::ConfigType::TypedConfig(pack_any(config))),
    }
}

fn protocol(version: Option<TlsVersion>) -> i32 {
    let protocol = match version {
        Some(TlsVersion::Tls10) => TlsProtocol::TlSv10,
        Some(TlsVersion::Tls11) => TlsProtocol::TlSv11,
        Some(TlsVersion::Tls12) => TlsProtocol::TlSv12,
        None => TlsProtocol::TlSv13,
    };
    protocol as i32
}

/// The versions and suites of `policy` (the listener's SSLNegotiationPolicyType policy), or
/// the default ones. Envoy chooses the suite in the server's order, as ELB's
/// Server-Defined-Cipher-Order.
fn parameters(policy: Option<&TlsPolicy>) -> tls::TlsParameters {
    let (minimum, maximum, suites) = match policy {
        Some(policy) => (policy.minimum(), policy.maximum(), policy.ciphers.clone()),
        None => (
            TlsVersion::Tls12,
            None,
            DEFAULT_CIPHER_SUITES.iter().map(|s| (*s).to_owned()).collect(),
        ),
    };
    tls::TlsParameters {
        tls_minimum_protocol_version: protocol(Some(minimum)),
        tls_maximum_protocol_version: protocol(maximum),
        cipher_suites: suites,
        ..Default::default()
    }
}

/// TLS termination with SDS secret `secret_name` (served over ADS), with `policy`'s versions
/// and suites. With `http`, ALPN offers HTTP/2 first, then HTTP/1.1, and the connection manager
/// speaks what was agreed; an SSL listener (TLS over TCP) negotiates no application protocol.
pub fn downstream(secret_name: &str, http: bool, policy: Option<&TlsPolicy>) -> core::TransportSocket {
    transport_socket(tls::DownstreamTlsContext {
        common_tls_context: Some(tls::CommonTlsContext {
            tls_params: Some(parameters(policy)),
            tls_certificate_sds_secret_configs: vec![tls::SdsSecretConfig {
                name: secret_name.to_owned(),
                sds_config: super::resources::ads(),
            }],
            alpn_protocols: if http {
                vec!["h2".to_owned(), "http/1.1".to_owned()]
            } else {
                Vec::new()
            },
            ..Default::default()
        }),
        ..Default::default()
    })
}

/// TLS to a target (InstanceProtocol HTTPS). As ELB without a backend authentication policy,
/// the target's certificate is not verified: it is encryption on the bouncer's network, the
/// target being named by address, not by a host name a CA vouches for.
pub fn upstream(http: bool) -> core::TransportSocket {
    transport_socket(tls::UpstreamTlsContext {
        common_tls_context: Some(tls::CommonTlsContext {
            alpn_protocols: if http { vec!["http/1.1".to_owned()] } else { Vec::new() },
            ..Default::default()
        }),
        ..Default::default()
    })
}
