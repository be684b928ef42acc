//! One headless Chromium for the whole suite, driven through Debian's
//! chromedriver (WebDriver, with fantoccini), and the helpers scenarios use:
//! open a page, wait for a condition written in JavaScript, click, type,
//! screenshot, and check that every request went to the test server.
//!
//! Chromium runs behind a proxy that does not exist, so that a page trying
//! to load anything from another host fails to (loopback is never proxied):
//! what renders here renders on a machine without internet.

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{json, Value};

const CHROMIUM: &str = "/usr/bin/chromium";
const CHROMEDRIVER: &str = "/usr/bin/chromedriver";
/// How long a condition may take to hold.
const PATIENCE: Duration = Duration::from_secs(20);
pub(crate) const WIDTH: u32 = 1400;
pub(crate) const HEIGHT: u32 = 900;

/// The browser of the suite.
pub(crate) struct Browser {
    client: Client,
    driver: Child,
    _profile: tempfile::TempDir,
}

/// Where screenshots go: `target/ui-screenshots/`.
pub(crate) fn screenshot_dir() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target"));
    target.join("ui-screenshots")
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

impl Browser {
    /// Starts chromedriver and a headless Chromium; fails (never skips) when
    /// either is not installed.
    pub(crate) async fn start() -> Browser {
        for (path, package) in [(CHROMIUM, "chromium"), (CHROMEDRIVER, "chromium-driver")] {
            assert!(
                std::path::Path::new(path).exists(),
                "{path} is missing ({package}): the browser tests need Debian's Chromium and its driver: \
                 apt-get install chromium chromium-driver"
            );
        }
        let port = free_port();
        let driver = Command::new(CHROMEDRIVER)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!("start {CHROMEDRIVER}: {e} (apt-get install chromium chromium-driver)")
            });
        let url = format!("http://127.0.0.1:{port}");
        let deadline = Instant::now() + PATIENCE;
        while reqwest::get(format!("{url}/status")).await.is_err() {
            assert!(
                Instant::now() < deadline,
                "chromedriver did not answer on {url}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let profile = tempfile::tempdir().expect("a profile directory");
        let capabilities = json!({
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": CHROMIUM,
                "args": [
                    "--headless=new",
                    "--no-sandbox",
                    "--disable-dev-shm-usage",
                    "--disable-gpu",
                    "--no-first-run",
                    "--disable-background-networking",
                    "--disable-component-update",
                    "--disable-sync",
                    "--proxy-server=http://127.0.0.1:9",
                    format!("--window-size={WIDTH},{HEIGHT}"),
                    format!("--user-data-dir={}", profile.path().display()),
                ],
            },
        });
        let Value::Object(capabilities) = capabilities else {
            unreachable!()
        };
        let client = ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
            .capabilities(capabilities)
            .connect(&url)
            .await
            .unwrap_or_else(|e| panic!("open a Chromium session through chromedriver: {e}"));
        Browser {
            client,
            driver,
            _profile: profile,
        }
    }

    /// Closes the browser and stops chromedriver.
    pub(crate) async fn quit(mut self) {
        let _ = self.client.clone().close().await;
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }

    pub(crate) fn client(&self) -> &Client {
        &self.client
    }

    /// Navigates to `url`.
    pub(crate) async fn open(&self, url: &str) {
        self.client
            .goto(url)
            .await
            .unwrap_or_else(|e| panic!("open {url}: {e}"));
    }

    /// Runs `script` (a function body; `arguments` holds `args`); its value.
    pub(crate) async fn js_with(&self, script: &str, args: Vec<Value>) -> Value {
        self.client
            .execute(script, args)
            .await
            .unwrap_or_else(|e| panic!("run {script}: {e}"))
    }

    pub(crate) async fn js(&self, script: &str) -> Value {
        self.js_with(script, vec![]).await
    }

    /// Waits until `script` returns something truthy; that value.
    pub(crate) async fn wait_js(&self, what: &str, script: &str) -> Value {
        let deadline = Instant::now() + PATIENCE;
        loop {
            let value = self
                .client
                .execute(script, vec![])
                .await
                .unwrap_or(Value::Null);
            let truthy = match &value {
                Value::Null | Value::Bool(false) => false,
                Value::String(s) => !s.is_empty(),
                Value::Number(n) => n.as_f64() != Some(0.0),
                _ => true,
            };
            if truthy {
                return value;
            }
            if Instant::now() > deadline {
                let text = self.text("main").await;
                panic!("timed out waiting for {what} ({script}); the page says:\n{text}");
            }
            tokio::time::sleep(Duration::from_millis(40)).await;
        }
    }

    /// The visible text of the first element matching `css` ("" if none).
    pub(crate) async fn text(&self, css: &str) -> String {
        self.js_with(
            "const el = document.querySelector(arguments[0]); return el ? el.innerText : '';",
            vec![json!(css)],
        )
        .await
        .as_str()
        .unwrap_or_default()
        .to_owned()
    }

    /// The visible texts of every element matching `css`.
    pub(crate) async fn texts(&self, css: &str) -> Vec<String> {
        let value = self
            .js_with(
                "return [...document.querySelectorAll(arguments[0])].map(e => e.innerText.trim());",
                vec![json!(css)],
            )
            .await;
        serde_json::from_value(value).expect("a list of texts")
    }

    /// Clicks the element matching `css` (waiting for it), like a user.
    pub(crate) async fn click(&self, css: &str) {
        let element = self
            .client
            .wait()
            .at_most(PATIENCE)
            .for_element(Locator::Css(css))
            .await
            .unwrap_or_else(|e| panic!("no element {css} to click: {e}"));
        element
            .click()
            .await
            .unwrap_or_else(|e| panic!("click {css}: {e}"));
    }

    /// Replaces the text of the input or textarea matching `css`, typing it.
    pub(crate) async fn type_into(&self, css: &str, text: &str) {
        let element = self
            .client
            .wait()
            .at_most(PATIENCE)
            .for_element(Locator::Css(css))
            .await
            .unwrap_or_else(|e| panic!("no field {css}: {e}"));
        element.clear().await.expect("clear the field");
        element
            .send_keys(text)
            .await
            .unwrap_or_else(|e| panic!("type into {css}: {e}"));
    }

    /// Saves a screenshot as `target/ui-screenshots/<name>.png`; its path.
    pub(crate) async fn screenshot(&self, name: &str) -> PathBuf {
        let dir = screenshot_dir();
        std::fs::create_dir_all(&dir).expect("create the screenshot directory");
        let path = dir.join(format!("{name}.png"));
        match self.client.screenshot().await {
            Ok(png) => std::fs::write(&path, png).expect("write the screenshot"),
            Err(e) => eprintln!("no screenshot {name}: {e}"),
        }
        path
    }

    /// Every resource the current page loaded, and the page itself, came
    /// from `origin`.
    pub(crate) async fn assert_same_origin(&self, origin: &str) {
        let urls = self
            .js(
                "return [location.href, ...performance.getEntriesByType('resource').map(e => e.name)];",
            )
            .await;
        let urls: Vec<String> = serde_json::from_value(urls).expect("a list of URLs");
        let ws = origin.replacen("http", "ws", 1);
        let foreign: Vec<&String> = urls
            .iter()
            .filter(|u| !u.starts_with(&format!("{origin}/")) && !u.starts_with(&format!("{ws}/")))
            .collect();
        assert!(
            foreign.is_empty(),
            "requests to another host than {origin}: {foreign:?}"
        );
        assert!(
            urls.len() > 1,
            "the page loaded no resource at all: {urls:?}"
        );
    }
}
