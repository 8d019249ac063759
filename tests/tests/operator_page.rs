//! The operator page in a real browser (Debian's Chromium, headless, over WebDriver) in front
//! of the live system (the control service and Envoy as processes, three targets): an operator
//! signs in with an API access key, sees an instance's health flip and come back without
//! reloading, creates and sets a stickiness policy from the page, sees the listener's counters
//! move with the traffic, and inspects a cookie. Screenshots are kept in
//! `target/test-artefacts/operator-page/`.

use std::time::Duration;

use sticky_tests::browser::Browser;
use sticky_tests::live::{ACCESS_KEY, Live};
use sticky_tests::{LOAD_BALANCER, STICKY_COOKIE};

const CARD: &str = "#lb-terraform-balancer";

fn health_cell(id: &str) -> String {
    format!("{CARD} tr[data-instance=\"{id}\"] .state")
}

fn counter_cell(name: &str) -> String {
    format!("{CARD} .listeners tr[data-port=\"80\"] td[data-counter=\"{name}\"]")
}

fn count_at_least(at_least: u64) -> impl Fn(&str) -> bool {
    move |text| text.trim().parse::<u64>().is_ok_and(|n| n >= at_least)
}

#[test]
fn an_operator_signs_in_watches_health_sets_a_policy_and_inspects_a_cookie() {
    // Polls answered every 2 s at the latest: the counters they report reach the page soon.
    // Over HTTPS, the control service's certificate trusted by its key (as an operator's
    // browser trusting the control plane's CA would).
    let mut live = Live::start_over_tls(1, &["--long-poll-timeout", "2"]);
    live.wait_all_in_service();
    {
        let pki = live.control.tls.clone().expect("TLS");
        let certificate = std::fs::read_to_string(pki.file("control.pem")).unwrap();
        let trusted = sticky_tests::browser::spki_hash(&certificate);
        assert!(!trusted.is_empty(), "the certificate's key hash");
        let mut browser = Browser::start_with(
            "operator-page",
            &[format!("--ignore-certificate-errors-spki-list={trusted}")],
        )
        .unwrap_or_else(|e| panic!("{e:#}"));
        let page = format!("{}/ui", live.control.url());
        assert!(page.starts_with("https://"), "{page}");
        browser.goto(&page).expect("the page loads");

        // Signing in takes one of the API's access keys; a wrong secret is refused.
        browser.fill("#access-key-id", ACCESS_KEY.0).unwrap();
        browser.fill("#secret-access-key", "not-the-secret").unwrap();
        browser.click("#sign-in").unwrap();
        browser
            .wait_text("#login-error", "a wrong secret refused", Duration::from_secs(10), |t| {
                t.contains("InvalidClientTokenId")
            })
            .unwrap();
        browser.screenshot("sign-in-refused").unwrap();
        browser.fill("#secret-access-key", ACCESS_KEY.1).unwrap();
        browser.click("#sign-in").unwrap();
        for id in sticky_tests::TARGET_IDS {
            browser
                .wait_text(
                    &health_cell(id),
                    "every instance in service",
                    Duration::from_secs(15),
                    |t| t == "InService",
                )
                .unwrap();
        }
        browser
            .wait_text("#who", "who is signed in", Duration::from_secs(5), |t| {
                t.contains(ACCESS_KEY.0)
            })
            .unwrap();
        browser.screenshot("overview").unwrap();

        // A target stops: its health flips on the page, no reload; it comes back the same way.
        let stopped = sticky_tests::TARGET_IDS[1];
        live.targets.stop(stopped);
        browser
            .wait_text(
                &health_cell(stopped),
                "the stopped instance out of service",
                Duration::from_secs(40),
                |t| t == "OutOfService",
            )
            .unwrap();
        browser.screenshot("health-flip").unwrap();
        live.targets.restart(stopped).expect("the target starts again");
        browser
            .wait_text(
                &health_cell(stopped),
                "the instance back in service",
                Duration::from_secs(40),
                |t| t == "InService",
            )
            .unwrap();

        // A policy created and set from the page, through the API's validation: a bad one is
        // refused with the API's error, a good one is in force when the page says so.
        browser
            .select(&format!("{CARD} .new-policy-kind"), "app_cookie")
            .unwrap();
        browser.fill(&format!("{CARD} .new-policy-name"), "bad").unwrap();
        browser.fill(&format!("{CARD} .new-policy-detail"), "no;such").unwrap();
        browser.click(&format!("{CARD} .create-policy")).unwrap();
        browser
            .wait_text(
                "#action-error",
                "a bad cookie name refused",
                Duration::from_secs(10),
                |t| t.starts_with("ValidationError"),
            )
            .unwrap();
        browser
            .select(&format!("{CARD} .new-policy-kind"), "lb_cookie")
            .unwrap();
        browser
            .fill(&format!("{CARD} .new-policy-name"), "page-sticky")
            .unwrap();
        browser.fill(&format!("{CARD} .new-policy-detail"), "300").unwrap();
        browser.click(&format!("{CARD} .create-policy")).unwrap();
        browser
            .wait_text("#action-notice", "the policy created", Duration::from_secs(10), |t| {
                t.contains("page-sticky created")
            })
            .unwrap();
        browser.select(&format!("{CARD} .listener-port"), "80").unwrap();
        browser
            .select(&format!("{CARD} .listener-policy"), "page-sticky")
            .unwrap();
        browser.click(&format!("{CARD} .set-policy")).unwrap();
        browser
            .wait_text("#action-notice", "the policy set", Duration::from_secs(30), |t| {
                t.contains("now uses page-sticky, in force")
            })
            .unwrap();
        browser
            .wait_text(
                &format!("{CARD} .listeners tr[data-port=\"80\"] .policy"),
                "the listener's policy shown",
                Duration::from_secs(5),
                |t| t.contains("page-sticky") && t.contains("300 s"),
            )
            .unwrap();

        // In force: the next request through Envoy starts a session; the session sticks.
        let first = live.get(0, "/", &[]);
        let cookie = first
            .sticky_cookie()
            .expect("a stickiness cookie once the page said in force");
        let target = first.target();
        for _ in 0..5 {
            assert_eq!(live.get(0, "/", &[(STICKY_COOKIE, &cookie)]).target(), target);
        }
        let mut forged = cookie.clone().into_bytes();
        forged[16] = if forged[16] == b'A' { b'B' } else { b'A' };
        let forged = String::from_utf8(forged).expect("ASCII");
        live.get(0, "/", &[(STICKY_COOKIE, &forged)]);
        // The filter's counts reach the page with its next poll.
        browser
            .wait_text(
                &counter_cell("pinned"),
                "5 pinned requests counted",
                Duration::from_secs(20),
                count_at_least(5),
            )
            .unwrap();
        browser
            .wait_text(
                &counter_cell("assigned"),
                "the new sessions counted",
                Duration::from_secs(20),
                count_at_least(2),
            )
            .unwrap();
        browser
            .wait_text(
                &counter_cell("rejected"),
                "the forged cookie counted by reason",
                Duration::from_secs(20),
                |t| t.contains("forged: 1"),
            )
            .unwrap();

        // The inspector opens the session's cookie and refuses the forged one; no key shows.
        browser
            .fill("#cookie-text", &format!("{STICKY_COOKIE}={cookie}"))
            .unwrap();
        browser.click("#inspect-button").unwrap();
        browser
            .wait_text(
                "dd[data-field=\"verdict\"]",
                "the cookie valid",
                Duration::from_secs(10),
                |t| t == "valid",
            )
            .unwrap();
        let shown_target = browser
            .wait_text(
                "dd[data-field=\"target\"]",
                "the cookie's target",
                Duration::from_secs(5),
                |t| !t.is_empty(),
            )
            .unwrap();
        assert_eq!(shown_target, target);
        browser
            .wait_text(
                "dd[data-field=\"listener\"]",
                "the cookie's listener",
                Duration::from_secs(5),
                |t| t == format!("{LOAD_BALANCER} port 80"),
            )
            .unwrap();
        browser
            .wait_text(
                "dd[data-field=\"key-id\"]",
                "the key's id",
                Duration::from_secs(5),
                |t| t.parse::<u16>().is_ok(),
            )
            .unwrap();
        browser.screenshot("operator-page").unwrap();
        browser.fill("#cookie-text", &forged).unwrap();
        browser.click("#inspect-button").unwrap();
        browser
            .wait_text(
                "dd[data-field=\"verdict\"]",
                "the forged cookie refused",
                Duration::from_secs(10),
                |t| t == "rejected (forged)",
            )
            .unwrap();
        let source = browser.source().expect("the page's source");
        assert!(!source.contains("\"secret\""), "no key material on the page");
        browser.screenshot("inspector-forged").unwrap();

        // An HTTPS listener shows its certificate (name, hosts, expiry), never its key.
        let ca = sticky_testing::tls::TestCa::new("operator-page").unwrap();
        let issued = ca.issue(&["shop.example"]).unwrap();
        let api = live.api();
        let uploaded = api
            .call("UploadServerCertificate", &issued.upload_params("shop-2027"))
            .expect("api")
            .ok();
        let arn = uploaded.fields("Arn")[0].clone();
        api.call(
            "CreateLoadBalancerListeners",
            &[
                ("LoadBalancerName", LOAD_BALANCER),
                ("Listeners.member.1.Protocol", "HTTPS"),
                ("Listeners.member.1.LoadBalancerPort", "443"),
                ("Listeners.member.1.InstanceProtocol", "HTTP"),
                ("Listeners.member.1.InstancePort", "80"),
                ("Listeners.member.1.SSLCertificateId", &arn),
            ],
        )
        .expect("api")
        .ok();
        browser
            .wait_text(
                &format!("{CARD} .listeners tr[data-port=\"443\"] .certificate"),
                "the HTTPS listener's certificate shown",
                Duration::from_secs(15),
                |t| t.contains("shop-2027") && t.contains("shop.example") && t.contains("expires 20"),
            )
            .unwrap();
        let source = browser.source().expect("the page's source");
        let key_line = issued.private_key.lines().nth(1).unwrap();
        assert!(
            !source.contains(key_line) && !source.contains("PRIVATE KEY"),
            "no private key on the page"
        );
        browser.screenshot("https-listener").unwrap();

        // Signing out ends the session: the page asks to sign in again.
        browser.click("#logout").unwrap();
        browser
            .wait_text(
                "#login-panel h2",
                "the sign-in form again",
                Duration::from_secs(10),
                |t| t == "Sign in",
            )
            .unwrap();
    }
}
