//! A headless Chromium for page tests: Debian's `chromium` driven over WebDriver by its
//! `chromedriver` (both installed by `scripts/bench-setup`), started per test on a free port and
//! stopped with it. Waits are for what the page shows, bounded (never fixed sleeps). The API is
//! blocking, like the rest of the live system's helpers (a runtime of its own drives WebDriver).

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use fantoccini::{Client, ClientBuilder, Locator};
use sticky_testing::patience;

/// Where each test's screenshots are kept (`target/test-artefacts/<test>/`).
pub fn artefacts_dir(test: &str) -> PathBuf {
    sticky_testing::artifacts::workspace_root()
        .join("target/test-artefacts")
        .join(test)
}

pub struct Browser {
    runtime: tokio::runtime::Runtime,
    client: Client,
    driver: Child,
    artefacts: PathBuf,
    shots: usize,
}

impl Browser {
    /// Starts chromedriver and a headless Chromium session; screenshots go to
    /// [`artefacts_dir`]`(test)`.
    pub fn start(test: &str) -> anyhow::Result<Self> {
        Self::start_with(test, &[])
    }

    /// [`Browser::start`] with more Chromium flags (host mapping, certificates to trust).
    pub fn start_with(test: &str, flags: &[String]) -> anyhow::Result<Self> {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
        let chromium = std::env::var("STICKY_CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".to_owned());
        let chromedriver = std::env::var("STICKY_CHROMEDRIVER").unwrap_or_else(|_| "chromedriver".to_owned());
        if !Path::new(&chromium).exists() {
            bail!("no Chromium at {chromium}: run scripts/bench-setup (Debian's chromium and chromium-driver)");
        }
        let port = sticky_testing::free_port()?;
        let artefacts = artefacts_dir(test);
        std::fs::create_dir_all(&artefacts)?;
        let log = std::fs::File::create(artefacts.join("chromedriver.log"))?;
        // A process group of its own: Chromium's processes (its children) stop with it, even
        // when a test fails before the session is closed.
        let driver = Command::new(&chromedriver)
            .process_group(0)
            .arg(format!("--port={port}"))
            .stdout(Stdio::from(log.try_clone()?))
            .stderr(Stdio::from(log))
            .spawn()
            .with_context(|| format!("starting {chromedriver} (Debian's chromium-driver)"))?;
        let mut browser_options = serde_json::Map::new();
        // No sandbox: tests may run as root (CI); the page is the service's own.
        let mut args: Vec<String> = [
            "--headless=new",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--window-size=1280,1400",
            "--no-first-run",
            "--disable-extensions",
        ]
        .iter()
        .map(|a| (*a).to_owned())
        .collect();
        args.extend(flags.iter().cloned());
        browser_options.insert(
            "goog:chromeOptions".to_owned(),
            serde_json::json!({ "binary": chromium, "args": args }),
        );
        let url = format!("http://127.0.0.1:{port}");
        let deadline = Instant::now() + Duration::from_secs(30).mul_f64(patience());
        // chromedriver listens a moment after it starts: connect once it does.
        let client = runtime.block_on(async {
            loop {
                let connector = hyper_util::client::legacy::connect::HttpConnector::new();
                match ClientBuilder::new(connector)
                    .capabilities(browser_options.clone())
                    .connect(&url)
                    .await
                {
                    Ok(client) => break Ok(client),
                    Err(_) if Instant::now() < deadline => tokio::time::sleep(Duration::from_millis(100)).await,
                    Err(e) => break Err(anyhow::anyhow!("no WebDriver session from chromedriver on {url}: {e}")),
                }
            }
        })?;
        Ok(Self {
            runtime,
            client,
            driver,
            artefacts,
            shots: 0,
        })
    }

    pub fn goto(&self, url: &str) -> anyhow::Result<()> {
        Ok(self.runtime.block_on(self.client.goto(url))?)
    }

    /// The page's current source (its DOM as markup).
    pub fn source(&self) -> anyhow::Result<String> {
        Ok(self.runtime.block_on(self.client.source())?)
    }

    /// Saves a screenshot of the page as `NN-<name>.png` among the test's artefacts.
    pub fn screenshot(&mut self, name: &str) -> anyhow::Result<PathBuf> {
        self.shots += 1;
        let path = self.artefacts.join(format!("{:02}-{name}.png", self.shots));
        std::fs::write(&path, self.runtime.block_on(self.client.screenshot())?)?;
        Ok(path)
    }

    /// Waits until the first element matching `css` has text satisfying `check`; returns it.
    pub fn wait_text(
        &self,
        css: &str,
        what: &str,
        bound: Duration,
        check: impl Fn(&str) -> bool,
    ) -> anyhow::Result<String> {
        let deadline = Instant::now() + bound.mul_f64(patience());
        self.runtime.block_on(async {
            let mut last = String::new();
            loop {
                if let Ok(element) = self.client.find(Locator::Css(css)).await
                    && let Ok(text) = element.text().await
                {
                    if check(&text) {
                        return Ok(text);
                    }
                    last = text;
                }
                if Instant::now() >= deadline {
                    bail!("not within {bound:?}: {what} (`{css}` reads {last:?})");
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        })
    }

    /// The text of frame `index`'s body once it satisfies `check` (the page stays where it is).
    pub fn wait_frame_text(
        &self,
        index: u16,
        what: &str,
        bound: Duration,
        check: impl Fn(&str) -> bool,
    ) -> anyhow::Result<String> {
        let deadline = Instant::now() + bound.mul_f64(patience());
        self.runtime.block_on(async {
            let mut last = String::new();
            loop {
                if self.client.enter_frame(index).await.is_ok() {
                    let text = match self.client.find(Locator::Css("body")).await {
                        Ok(body) => body.text().await.unwrap_or_default(),
                        Err(_) => String::new(),
                    };
                    self.client.enter_parent_frame().await?;
                    if check(&text) {
                        return Ok(text);
                    }
                    last = text;
                }
                if Instant::now() >= deadline {
                    bail!("not within {bound:?}: {what} (frame {index} reads {last:?})");
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        })
    }

    /// Types `text` into the field `css` (emptied first).
    pub fn fill(&self, css: &str, text: &str) -> anyhow::Result<()> {
        self.runtime.block_on(async {
            let field = self.client.wait().for_element(Locator::Css(css)).await?;
            field.clear().await?;
            field.send_keys(text).await?;
            Ok(())
        })
    }

    pub fn click(&self, css: &str) -> anyhow::Result<()> {
        self.runtime.block_on(async {
            self.client.wait().for_element(Locator::Css(css)).await?.click().await?;
            Ok(())
        })
    }

    /// Chooses the option of value `value` in the select `css`.
    pub fn select(&self, css: &str, value: &str) -> anyhow::Result<()> {
        self.runtime.block_on(async {
            let select = self.client.wait().for_element(Locator::Css(css)).await?;
            select.select_by_value(value).await?;
            Ok(())
        })
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let client = self.client.clone();
        let _ = self.runtime.block_on(client.close());
        // chromedriver and every Chromium process it started.
        let _ = Command::new("kill")
            .args(["-KILL", "--", &format!("-{}", self.driver.id())])
            .status();
        let _ = self.driver.wait();
    }
}

/// The base64 SHA-256 of a PEM certificate's public key: what Chromium's
/// `--ignore-certificate-errors-spki-list` trusts.
pub fn spki_hash(pem: &str) -> String {
    use std::io::Write as _;
    let script =
        "openssl x509 -pubkey -noout | openssl pkey -pubin -outform der | openssl dgst -sha256 -binary | base64";
    let Ok(mut child) = Command::new("sh")
        .args(["-c", script])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
    else {
        return String::new();
    };
    if let Some(mut stdin) = child.stdin.take() {
        let _ = stdin.write_all(pem.as_bytes());
    }
    child
        .wait_with_output()
        .map(|output| String::from_utf8_lossy(&output.stdout).trim().to_owned())
        .unwrap_or_default()
}
