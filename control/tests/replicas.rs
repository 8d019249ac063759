//! Replicas sharing one PostgreSQL (a real server from Debian's package, started by the test):
//! any replica answers, a change made on one is in force on all when answered, concurrent
//! writers on different replicas lose nothing, acknowledged writes survive every replica's
//! death, and one replica at a time health-checks and rotates keys, another taking over when
//! it dies.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::time::{Duration, Instant};

use common::{Control, Replicas, bootstrap};
use sticky_demo_target::DemoTargets;
use sticky_testing::eventually;

/// Answers wait for the other replicas to hold a change (no filter follows these services).
const IN_FORCE: [&str; 2] = ["--sync-timeout-ms", "5000"];

fn names(reply: &common::ApiReply) -> Vec<String> {
    let mut names = reply.fields("LoadBalancerName");
    names.sort();
    names
}

#[test]
fn a_change_answered_by_one_replica_is_seen_by_every_other() {
    let cluster = Replicas::start(3, &bootstrap(&[], &[]), &IN_FORCE);
    for (n, replica) in cluster.replicas.iter().enumerate() {
        let name = format!("made-on-{n}");
        replica
            .call(
                "CreateLoadBalancer",
                &[
                    ("LoadBalancerName", &name),
                    ("Listeners.member.1.Protocol", "HTTP"),
                    ("Listeners.member.1.LoadBalancerPort", "80"),
                    ("Listeners.member.1.InstancePort", "80"),
                ],
            )
            .ok();
        // Answered: every replica holds it now, with no wait.
        for other in &cluster.replicas {
            let described = other.call("DescribeLoadBalancers", &[]).ok();
            assert!(names(&described).contains(&name), "{name} on {}", other.url());
        }
    }
    // Each replica gave its own load balancer a different address from the one pool.
    let hosts: Vec<String> = cluster
        .replicas
        .iter()
        .map(|r| {
            r.client()
                .peer_get(&format!("{}/v1/hosts", r.url()))
                .call()
                .unwrap()
                .into_string()
                .unwrap()
        })
        .collect();
    assert!(hosts.iter().all(|h| h == &hosts[0]), "{hosts:?}");
    let addresses: std::collections::BTreeSet<&str> =
        hosts[0].lines().filter_map(|l| l.split_whitespace().next()).collect();
    assert_eq!(addresses.len(), 4, "{}", hosts[0]);
}

#[test]
fn concurrent_writers_on_different_replicas_lose_no_update() {
    let targets = DemoTargets::start(&[("i-probe", 0)]).unwrap();
    let address = targets.addresses()[0].1;
    let ids: Vec<String> = (0..24).map(|i| format!("i-{i:02}")).collect();
    let instances: Vec<(&str, std::net::SocketAddr)> = ids.iter().map(|id| (id.as_str(), address)).collect();
    let cluster = Replicas::start(3, &bootstrap(&instances, &[]), &IN_FORCE);
    // Each registration reads the load balancer, adds one instance and writes it back: without
    // turns taken on the store, writers on different replicas would overwrite each other.
    std::thread::scope(|scope| {
        for (n, id) in ids.iter().enumerate() {
            let replica = &cluster.replicas[n % 3];
            scope.spawn(move || {
                replica
                    .call(
                        "RegisterInstancesWithLoadBalancer",
                        &[
                            ("LoadBalancerName", "terraform-balancer"),
                            ("Instances.member.1.InstanceId", id),
                        ],
                    )
                    .ok();
            });
        }
    });
    for replica in &cluster.replicas {
        let described = replica
            .call(
                "DescribeLoadBalancers",
                &[("LoadBalancerNames.member.1", "terraform-balancer")],
            )
            .ok();
        let mut registered = described.fields("InstanceId");
        registered.sort();
        assert_eq!(registered, ids, "on {}", replica.url());
    }
    // The same name created on two replicas at once: one creation, the other refused (the
    // listeners differ), never one overwriting the other.
    let outcomes: Vec<common::ApiReply> = std::thread::scope(|scope| {
        let calls: Vec<_> = [("81", 0), ("82", 1)]
            .into_iter()
            .map(|(port, n)| {
                let replica = &cluster.replicas[n];
                scope.spawn(move || {
                    replica.call(
                        "CreateLoadBalancer",
                        &[
                            ("LoadBalancerName", "contested"),
                            ("Listeners.member.1.Protocol", "HTTP"),
                            ("Listeners.member.1.LoadBalancerPort", port),
                            ("Listeners.member.1.InstancePort", "80"),
                        ],
                    )
                })
            })
            .collect();
        calls.into_iter().map(|c| c.join().unwrap()).collect()
    });
    let refused: Vec<Option<String>> = outcomes.iter().map(common::ApiReply::error_code).collect();
    assert_eq!(
        refused
            .iter()
            .filter(|c| c.as_deref() == Some("DuplicateLoadBalancerName"))
            .count(),
        1,
        "{refused:?}"
    );
    let winner = if refused[0].is_none() { "81" } else { "82" };
    for replica in &cluster.replicas {
        let described = replica
            .call("DescribeLoadBalancers", &[("LoadBalancerNames.member.1", "contested")])
            .ok();
        assert_eq!(described.fields("LoadBalancerPort"), [winner]);
    }
}

#[test]
fn acknowledged_writes_survive_the_death_of_every_replica() {
    let mut cluster = Replicas::start(2, &bootstrap(&[], &[]), &IN_FORCE);
    let created: Vec<String> = (0..10).map(|i| format!("kept-{i}")).collect();
    for (n, name) in created.iter().enumerate() {
        cluster.replicas[n % 2]
            .call(
                "CreateLoadBalancer",
                &[
                    ("LoadBalancerName", name),
                    ("Listeners.member.1.Protocol", "HTTP"),
                    ("Listeners.member.1.LoadBalancerPort", "80"),
                    ("Listeners.member.1.InstancePort", "80"),
                ],
            )
            .ok();
    }
    let ring_before = cluster.sql("SELECT id FROM cookie_keys ORDER BY id");
    for replica in &mut cluster.replicas {
        replica.kill();
    }
    for replica in &mut cluster.replicas {
        replica.launch();
    }
    for replica in &cluster.replicas {
        let described = names(&replica.call("DescribeLoadBalancers", &[]).ok());
        for name in &created {
            assert!(described.contains(name), "{name} lost on {}", replica.url());
        }
    }
    assert_eq!(
        cluster.sql("SELECT id FROM cookie_keys ORDER BY id"),
        ring_before,
        "the key ring is drawn once, by the first replica, and kept"
    );
    assert_eq!(
        cluster.sql("SELECT version FROM schema_migrations ORDER BY version"),
        "1\n2\n",
        "each migration applied once"
    );
}

/// Starts the service on `store` (with `master_key`, if any), which must refuse to start; what
/// it said.
fn refused_start(store: &str, master_key: Option<&str>) -> String {
    let binary = std::path::Path::new(env!("CARGO_BIN_EXE_sticky-control"));
    let mut command = std::process::Command::new(binary);
    command.args([
        "--listen",
        "127.0.0.1:0",
        "--plain-http",
        "--feed-token",
        "t",
        "--access-key",
        "A:B",
    ]);
    command.args(["--store", store]);
    if let Some(key) = master_key {
        command.env("STICKY_MASTER_KEY", key);
    }
    let output = command.output().unwrap();
    assert!(!output.status.success(), "started on {store}");
    String::from_utf8_lossy(&output.stderr).into_owned()
}

#[test]
fn a_store_migrated_by_a_newer_binary_is_refused_with_a_clear_error() {
    let mut cluster = Replicas::start(1, &bootstrap(&[], &[]), &[]);
    cluster.sql("INSERT INTO schema_migrations (version) VALUES (99)");
    cluster.replicas[0].kill();
    let text = refused_start(&cluster.url, Some(sticky_testing::control_process::REPLICAS_MASTER_KEY));
    assert!(
        text.contains("store schema is at version 99, newer than this binary's 2"),
        "{text}"
    );
}

#[test]
fn health_checks_and_key_rotation_move_to_another_replica_when_the_leader_dies() {
    let mut targets = DemoTargets::start(&[("i-one", 0), ("i-two", 0)]).unwrap();
    let instances: Vec<(String, std::net::SocketAddr)> = targets.addresses();
    let instances: Vec<(&str, std::net::SocketAddr)> = instances.iter().map(|(id, a)| (id.as_str(), *a)).collect();
    let mut cluster = Replicas::start(
        3,
        &bootstrap(&instances, &["i-one", "i-two"]),
        &["--lease-ms", "1000", "--key-rotation", "2", "--sync-timeout-ms", "5000"],
    );
    cluster.replicas[0]
        .call(
            "ConfigureHealthCheck",
            &[
                ("LoadBalancerName", "terraform-balancer"),
                ("HealthCheck.Target", "HTTP:80/health"),
                ("HealthCheck.Interval", "5"),
                ("HealthCheck.Timeout", "2"),
                ("HealthCheck.UnhealthyThreshold", "2"),
                ("HealthCheck.HealthyThreshold", "2"),
            ],
        )
        .ok();
    let state_of = |replica: &common::Control, id: &str| -> Option<String> {
        let reply = replica
            .client()
            .call("DescribeInstanceHealth", &[("LoadBalancerName", "terraform-balancer")])
            .ok()?;
        let ids = reply.fields("InstanceId");
        let states = reply.fields("State");
        ids.iter().position(|i| i == id).map(|n| states[n].clone())
    };
    for replica in &cluster.replicas {
        eventually(Duration::from_secs(20), "both targets in service everywhere", || {
            state_of(replica, "i-one").as_deref() == Some("InService")
                && state_of(replica, "i-two").as_deref() == Some("InService")
        });
    }
    let leader = cluster.leader();
    let leaders = cluster
        .replicas
        .iter()
        .filter(|r| r.metric_or_gone("sticky_control_leader") == Some(1))
        .count();
    assert_eq!(leaders, 1, "one leader at a time");
    let active_key = |replica: &common::Control| -> Option<u64> {
        let (_, state) = replica.client().state("terraform-balancer", 80, None, 0).ok()?;
        state["keys"]["active"].as_u64()
    };

    cluster.replicas[leader].kill();
    let killed_at = Instant::now();
    targets.stop("i-two");
    let survivors: Vec<usize> = (0..3).filter(|n| *n != leader).collect();
    let new_leader = cluster.leader();
    assert!(survivors.contains(&new_leader));
    let took_over = killed_at.elapsed();
    // Health: the new leader probes, and its flip reaches every replica.
    for n in &survivors {
        eventually(
            Duration::from_secs(30),
            "the stopped target out of service everywhere",
            || state_of(&cluster.replicas[*n], "i-two").as_deref() == Some("OutOfService"),
        );
        assert_eq!(state_of(&cluster.replicas[*n], "i-one").as_deref(), Some("InService"));
    }
    let flipped = killed_at.elapsed();
    // Keys: rotation goes on, every replica serving the new active key.
    let first = active_key(&cluster.replicas[new_leader]).unwrap();
    eventually(Duration::from_secs(20), "the key rotates after the fail-over", || {
        survivors
            .iter()
            .all(|n| active_key(&cluster.replicas[*n]).is_some_and(|k| k != first))
    });
    println!("leader took over after {took_over:?}; health flip on every replica after {flipped:?}");
    // No duplicate rotation: keys are created at least a rotation period apart.
    let created: Vec<i64> = cluster
        .sql("SELECT created_at FROM cookie_keys ORDER BY created_at")
        .lines()
        .map(|l| l.parse().unwrap())
        .collect();
    assert!(created.len() >= 2, "{created:?}");
    assert!(
        created.windows(2).all(|w| w[1] - w[0] >= 2),
        "rotations too close: {created:?}"
    );
    // The old leader comes back as a follower: the lease stays where it is.
    cluster.replicas[leader].launch();
    eventually(Duration::from_secs(10), "the restarted replica follows", || {
        cluster.replicas[leader].metric_or_gone("sticky_control_peer_replicas") == Some(2)
    });
    assert_eq!(cluster.leader(), new_leader);
}

#[test]
fn a_certificate_uploaded_on_one_replica_serves_on_every_other_and_its_key_is_sealed_in_the_store() {
    let dir = tempfile::tempdir().unwrap();
    let master_key = dir.path().join("master.key");
    std::fs::write(&master_key, format!("{}\n", "ab".repeat(32))).unwrap();
    let key_arg = master_key.to_str().unwrap();
    let mut args = IN_FORCE.to_vec();
    args.extend(["--master-key-file", key_arg]);
    let mut cluster = Replicas::start(2, &bootstrap(&[], &[]), &args);
    let ca = sticky_testing::tls::TestCa::new("replicas").unwrap();
    let issued = ca.issue(&["shop.example"]).unwrap();
    let uploaded = cluster.replicas[0]
        .call("UploadServerCertificate", &issued.upload_params("shop"))
        .ok();
    let arn = uploaded.fields("Arn")[0].clone();
    // The other replica has it (with its key: an HTTPS listener may name it there).
    cluster.replicas[1]
        .call(
            "CreateLoadBalancer",
            &[
                ("LoadBalancerName", "shop"),
                ("Listeners.member.1.Protocol", "HTTPS"),
                ("Listeners.member.1.LoadBalancerPort", "443"),
                ("Listeners.member.1.InstanceProtocol", "HTTP"),
                ("Listeners.member.1.InstancePort", "80"),
                ("Listeners.member.1.SSLCertificateId", &arn),
            ],
        )
        .ok();
    let key_line = issued.private_key.lines().nth(1).unwrap().to_owned();
    let stored = cluster.sql("SELECT doc || sealed_key FROM server_certificates");
    assert!(
        stored.contains("BEGIN CERTIFICATE") && !stored.contains(&key_line),
        "{stored}"
    );
    // Every replica dies and comes back: the certificate opens again with the master key.
    for replica in &mut cluster.replicas {
        replica.kill();
    }
    for replica in &mut cluster.replicas {
        replica.launch();
    }
    for replica in &cluster.replicas {
        let listed = replica
            .call("ListServerCertificates", &[("Version", "2010-05-08")])
            .ok();
        assert_eq!(listed.fields("ServerCertificateName"), ["shop"]);
    }
    // Without the master key a replica refuses to start on this store, saying why.
    let text = refused_start(&cluster.url, None);
    assert!(text.contains("--master-key-file"), "{text}");
}

/// PostgreSQL offering TLS: the replicas' connections are encrypted (libpq's `prefer`, the
/// default); with `sslrootcert` the server must also prove itself against that CA.
#[test]
fn connections_to_postgresql_use_tls_when_it_offers_it_and_verify_it_with_sslrootcert() {
    let ca = sticky_testing::tls::TestCa::new("postgres").unwrap();
    let issued = ca.issue(&["127.0.0.1"]).unwrap();
    let server = sticky_testing::postgres::PostgresServer::start_tls(
        &format!("{}{}", issued.body, issued.chain),
        &issued.private_key,
    )
    .unwrap();
    let url = server.create_database("sticky").unwrap();
    let sessions = |ssl: bool| -> u64 {
        server
            .psql(
                "sticky",
                &format!(
                    "SELECT count(*) FROM pg_stat_ssl s JOIN pg_stat_activity a USING (pid) \
                     WHERE a.application_name = 'sticky-control' AND s.ssl = {ssl}"
                ),
            )
            .unwrap()
            .trim()
            .parse()
            .unwrap()
    };
    let control = Control::start(&bootstrap(&[], &[]), &["--store", &url]);
    control.call("DescribeLoadBalancers", &[]).ok();
    assert!(sessions(true) >= 1, "encrypted connections");
    assert_eq!(sessions(false), 0, "no connection in clear");
    drop(control);

    // Verified against the right CA: it starts; against another CA: it refuses, saying why.
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root.pem");
    std::fs::write(&root, ca.root_pem()).unwrap();
    let verified = format!("{url}?sslrootcert={}", root.display());
    let control = Control::start(&bootstrap(&[], &[]), &["--store", &verified]);
    control.call("DescribeLoadBalancers", &[]).ok();
    drop(control);
    let stranger = dir.path().join("stranger.pem");
    std::fs::write(
        &stranger,
        sticky_testing::tls::TestCa::new("stranger").unwrap().root_pem(),
    )
    .unwrap();
    let text = refused_start(
        &format!("{url}?sslrootcert={}", stranger.display()),
        Some(sticky_testing::control_process::REPLICAS_MASTER_KEY),
    );
    assert!(text.to_lowercase().contains("certificate"), "{text}");
}
