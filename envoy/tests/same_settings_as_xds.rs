//! Envoy's route and `targets` cluster settings are written twice: as JSON in the static
//! bootstrap the benchmarks and filter tests run (`envoy/bootstrap.yaml`, `EnvoyBootstrap`), and
//! as protobuf in what the control service serves every bouncer over xDS
//! (`control/src/xds/resources.rs`). This test reads both into one summary of every setting that
//! decides how a request is retried, routed and failed over, and requires them equal.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::PathBuf;

use envoy_types::pb::envoy::config::cluster::v3 as cluster;
use envoy_types::pb::envoy::config::core::v3 as core;
use envoy_types::pb::envoy::config::route::v3 as route;
use serde_json::{Value, json};
use sticky_control::xds::resources::{DEFAULT_TARGET_CONNECT_TIMEOUT, route_configuration, target_cluster};
use sticky_core::PluginConfig;
use sticky_envoy::{DEFAULT_CONNECT_TIMEOUT, EnvoyBootstrap, FilterShell};

/// The settings of the static bootstrap, from its rendered text.
fn static_settings() -> Value {
    let state = sticky_testing::fixtures::filter_state(None, Vec::new(), sticky_testing::random_key_ring(1).unwrap());
    let bootstrap = EnvoyBootstrap::sticky(FilterShell::Wasm(PathBuf::from("sticky.wasm")), state).unwrap();
    let rendered: Value = serde_yaml::from_str(&bootstrap.render()).unwrap();
    let manager = &rendered["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"];
    let host = &manager["route_config"]["virtual_hosts"][0];
    let routes: Vec<Value> = host["routes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            let retry = &r["route"]["retry_policy"];
            json!({
                "methods": r["match"]["headers"][0]["string_match"]["safe_regex"]["regex"],
                "upgrade": r["match"]["headers"][1]["string_match"]["exact"],
                "added": r["request_headers_to_add"][0]["header"]["value"],
                "timeout": r["route"]["timeout"],
                "retry_on": retry["retry_on"],
                "num_retries": retry["num_retries"],
                "predicates": retry["retry_host_predicate"].as_array().unwrap().iter().map(|p| p["name"].clone()).collect::<Vec<_>>(),
                "max_attempts": retry["host_selection_retry_max_attempts"],
                "response_header": r["response_headers_to_add"][0]["header"]["key"],
                "response_value": r["response_headers_to_add"][0]["header"]["value"],
            })
        })
        .collect();
    let targets = &rendered["static_resources"]["clusters"][0];
    let policy = &targets["load_balancing_policy"]["policies"][0]["typed_extension_config"];
    let outlier = &targets["outlier_detection"];
    let option = &targets["upstream_bind_config"]["socket_options"][0];
    let keepalive = &targets["upstream_connection_options"]["tcp_keepalive"];
    json!({
        "include_attempt_count": host["include_attempt_count_in_response"],
        "routes": routes,
        "connect_timeout": targets["connect_timeout"],
        "target_idle_timeout": targets["typed_extension_protocol_options"]["envoy.extensions.upstreams.http.v3.HttpProtocolOptions"]["common_http_protocol_options"]["idle_timeout"],
        "policy": policy["name"],
        "routing_header": policy["typed_config"]["override_host_sources"][0]["header"],
        "fallback": policy["typed_config"]["fallback_policy"]["policies"][0]["typed_extension_config"]["name"],
        "max_retries": targets["circuit_breakers"]["thresholds"][0]["max_retries"],
        "outlier": {
            "split": outlier["split_external_local_origin_errors"],
            "consecutive_local_origin_failure": outlier["consecutive_local_origin_failure"],
            "enforcing_consecutive_local_origin_failure": outlier["enforcing_consecutive_local_origin_failure"],
            "enforcing_consecutive_5xx": outlier["enforcing_consecutive_5xx"],
            "enforcing_consecutive_gateway_failure": outlier["enforcing_consecutive_gateway_failure"],
            "enforcing_success_rate": outlier["enforcing_success_rate"],
            "enforcing_local_origin_success_rate": outlier["enforcing_local_origin_success_rate"],
            "enforcing_failure_percentage": outlier["enforcing_failure_percentage"],
            "enforcing_failure_percentage_local_origin": outlier["enforcing_failure_percentage_local_origin"],
            "base_ejection_time": outlier["base_ejection_time"],
            "max_ejection_percent": outlier["max_ejection_percent"],
            "fields": outlier.as_object().unwrap().len(),
        },
        "socket_option": [option["description"], option["level"], option["name"], option["int_value"], option["state"]],
        "keepalive": [keepalive["keepalive_time"], keepalive["keepalive_interval"], keepalive["keepalive_probes"]],
    })
}

fn seconds(duration: Option<&envoy_types::pb::google::protobuf::Duration>) -> Value {
    let d = duration.unwrap();
    let text = format!("{}", d.seconds as f64 + f64::from(d.nanos) / 1e9);
    json!(format!("{text}s"))
}

fn number(value: Option<&envoy_types::pb::google::protobuf::UInt32Value>) -> Value {
    json!(value.unwrap().value)
}

use envoy_types::pb::envoy::r#type::matcher::v3::string_matcher::MatchPattern;

/// The string pattern a route's header matcher holds.
fn string_pattern(header: &route::HeaderMatcher) -> &MatchPattern {
    match &header.header_match_specifier {
        Some(route::header_matcher::HeaderMatchSpecifier::StringMatch(m)) => m.match_pattern.as_ref().unwrap(),
        other => panic!("a string match: {other:?}"),
    }
}

/// The settings the control service serves, from its builders.
fn served_settings() -> Value {
    let plugin = PluginConfig::new(None);
    let routes = route_configuration("lb_80", &plugin);
    let host = &routes.virtual_hosts[0];
    let route_summaries: Vec<Value> = host
        .routes
        .iter()
        .map(|r| {
            let Some(route::route::Action::Route(action)) = &r.action else {
                panic!("a forwarding route")
            };
            let retry = action.retry_policy.as_ref().unwrap();
            let headers = &r.r#match.as_ref().unwrap().headers;
            let methods = headers.first().map(|h| match string_pattern(h) {
                MatchPattern::SafeRegex(regex) => regex.regex.clone(),
                other => panic!("a regex: {other:?}"),
            });
            let upgrade = headers.get(1).map(|h| match string_pattern(h) {
                MatchPattern::Exact(exact) => exact.clone(),
                other => panic!("an exact match: {other:?}"),
            });
            json!({
                "methods": methods,
                "upgrade": upgrade,
                "added": r.request_headers_to_add.first().map(|h| h.header.as_ref().unwrap().value.clone()),
                "timeout": seconds(action.timeout.as_ref()),
                "retry_on": retry.retry_on,
                "num_retries": number(retry.num_retries.as_ref()),
                "predicates": retry.retry_host_predicate.iter().map(|p| p.name.clone()).collect::<Vec<_>>(),
                "max_attempts": retry.host_selection_retry_max_attempts,
                "response_header": r.response_headers_to_add[0].header.as_ref().unwrap().key,
                "response_value": r.response_headers_to_add[0].header.as_ref().unwrap().value,
            })
        })
        .collect();
    let targets: cluster::Cluster = target_cluster("lb_80", &plugin, DEFAULT_TARGET_CONNECT_TIMEOUT);
    let policy = targets.load_balancing_policy.as_ref().unwrap().policies[0]
        .typed_extension_config
        .as_ref()
        .unwrap();
    let override_host: envoy_types::pb::envoy::extensions::load_balancing_policies::override_host::v3::OverrideHost =
        prost::Message::decode(policy.typed_config.as_ref().unwrap().value.as_slice()).unwrap();
    let fallback = &override_host.fallback_policy.as_ref().unwrap().policies[0];
    let outlier = targets.outlier_detection.as_ref().unwrap();
    let option = &targets.upstream_bind_config.as_ref().unwrap().socket_options[0];
    let Some(core::socket_option::Value::IntValue(user_timeout)) = option.value else {
        panic!("an int option")
    };
    let keepalive = targets
        .upstream_connection_options
        .as_ref()
        .unwrap()
        .tcp_keepalive
        .as_ref()
        .unwrap();
    let set_fields = [
        outlier.consecutive_local_origin_failure.is_some(),
        outlier.enforcing_consecutive_local_origin_failure.is_some(),
        outlier.enforcing_consecutive_5xx.is_some(),
        outlier.enforcing_consecutive_gateway_failure.is_some(),
        outlier.enforcing_success_rate.is_some(),
        outlier.enforcing_local_origin_success_rate.is_some(),
        outlier.enforcing_failure_percentage.is_some(),
        outlier.enforcing_failure_percentage_local_origin.is_some(),
        outlier.base_ejection_time.is_some(),
        outlier.max_ejection_percent.is_some(),
        outlier.split_external_local_origin_errors,
    ]
    .iter()
    .filter(|set| **set)
    .count();
    let any = &targets.typed_extension_protocol_options["envoy.extensions.upstreams.http.v3.HttpProtocolOptions"];
    let options: envoy_types::pb::envoy::extensions::upstreams::http::v3::HttpProtocolOptions =
        prost::Message::decode(any.value.as_slice()).unwrap();
    let target_idle_timeout = seconds(options.common_http_protocol_options.unwrap().idle_timeout.as_ref());
    json!({
        "include_attempt_count": host.include_attempt_count_in_response,
        "routes": route_summaries,
        "connect_timeout": seconds(targets.connect_timeout.as_ref()),
        "target_idle_timeout": target_idle_timeout,
        "policy": policy.name,
        "routing_header": override_host.override_host_sources[0].header,
        "fallback": fallback.typed_extension_config.as_ref().unwrap().name,
        "max_retries": number(targets.circuit_breakers.as_ref().unwrap().thresholds[0].max_retries.as_ref()),
        "outlier": {
            "split": outlier.split_external_local_origin_errors,
            "consecutive_local_origin_failure": number(outlier.consecutive_local_origin_failure.as_ref()),
            "enforcing_consecutive_local_origin_failure": number(outlier.enforcing_consecutive_local_origin_failure.as_ref()),
            "enforcing_consecutive_5xx": number(outlier.enforcing_consecutive_5xx.as_ref()),
            "enforcing_consecutive_gateway_failure": number(outlier.enforcing_consecutive_gateway_failure.as_ref()),
            "enforcing_success_rate": number(outlier.enforcing_success_rate.as_ref()),
            "enforcing_local_origin_success_rate": number(outlier.enforcing_local_origin_success_rate.as_ref()),
            "enforcing_failure_percentage": number(outlier.enforcing_failure_percentage.as_ref()),
            "enforcing_failure_percentage_local_origin": number(outlier.enforcing_failure_percentage_local_origin.as_ref()),
            "base_ejection_time": seconds(outlier.base_ejection_time.as_ref()),
            "max_ejection_percent": number(outlier.max_ejection_percent.as_ref()),
            "fields": set_fields,
        },
        "socket_option": [option.description, option.level, option.name, user_timeout,
            if option.state == core::socket_option::SocketState::StatePrebind as i32 { "STATE_PREBIND" } else { "other" }],
        "keepalive": [number(keepalive.keepalive_time.as_ref()), number(keepalive.keepalive_interval.as_ref()),
            number(keepalive.keepalive_probes.as_ref())],
    })
}

#[test]
fn the_static_bootstrap_routes_and_fails_over_as_the_control_service_serves_every_bouncer() {
    assert_eq!(DEFAULT_CONNECT_TIMEOUT, DEFAULT_TARGET_CONNECT_TIMEOUT);
    let (written, served) = (static_settings(), served_settings());
    assert_eq!(
        written, served,
        "envoy/bootstrap.yaml and EnvoyBootstrap differ from what xDS serves"
    );
}
