//! A tiny W3C WebDriver client: Debian's chromium, headless, driven through chromedriver, for
//! tests that need a real browser (the console).
//!
//! Why WebDriver through chromedriver rather than the Chrome DevTools Protocol: WebDriver is
//! plain HTTP with JSON bodies, one request per command, which the tests' own HTTP routine
//! ([`crate::system::try_http_request`]) and `serde_json` already cover. CDP needs a websocket
//! client, event plumbing and either a large crate or a hand-written protocol layer; clicks,
//! typing, element text and screenshots need none of that.
//!
//! ```text
//! let browser = Browser::start().await?;
//! browser.goto(&format!("http://{address}/")).await?;
//! browser.find("input#name").await?.send_keys("Radio One").await?;
//! browser.find("button#save").await?.click().await?;
//! browser.wait_for_text("#status", "saved", Duration::from_secs(5)).await?;
//! ```
//!
//! [`Browser::start`] runs chromedriver in a process group of its own
//! ([`ChildProcess::spawn_process_group`]) so that dropping the [`Browser`] kills chromium with
//! it; [`Browser::quit`] ends the session politely first.

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context as _, anyhow, bail, ensure};
use serde_json::{Value, json};
use tokio::time::Instant;

use crate::harness::process::ChildProcess;
use crate::system::{temp_dir, try_http_request};

/// Environment variable overriding the chromedriver binary.
pub const CHROMEDRIVER_ENV: &str = "PLAYHEAD_CHROMEDRIVER";
/// Environment variable overriding the chromium binary.
pub const CHROMIUM_ENV: &str = "PLAYHEAD_CHROMIUM";

const DEFAULT_CHROMEDRIVER: &str = "/usr/bin/chromedriver";
const DEFAULT_CHROMIUM: &str = "/usr/bin/chromium";

/// The key of a web element reference in WebDriver's JSON.
const ELEMENT_KEY: &str = "element-6066-11e4-a52e-4f735466cecf";

/// How long chromedriver may take to report ready.
const READY_TIMEOUT: Duration = Duration::from_secs(20);
/// How long one command may take (a session's creation starts chromium).
const COMMAND_TIMEOUT: Duration = Duration::from_secs(60);
/// Pause between two probes of the `wait_*` methods.
const POLL_INTERVAL: Duration = Duration::from_millis(100);
/// How much of the page's text a timed-out wait reports.
const PAGE_TEXT_LIMIT: usize = 2000;
/// Lines of chromedriver's log in a failed start's error.
const LOG_TAIL_LINES: usize = 30;
/// Starts before giving up when chromedriver exits at once (another process took its port
/// between our probe and its bind).
const START_ATTEMPTS: usize = 3;

const CHROMIUM_ARGS: &[&str] = &[
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
    "--window-size=1280,900",
    // Offline but for the tests' own servers: every name fails to resolve and only the literal
    // 127.0.0.1 is left alone, so a page's outside resources (the console's covers on the Cover
    // Art Archive) fail the same way on every machine, with or without a network.
    "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
];

/// An error answer of the WebDriver server, as the W3C spec defines it; reach it from an
/// [`anyhow::Error`] with `downcast_ref` (e.g. to tell `stale element reference` apart).
#[derive(Debug, Clone)]
pub struct WebDriverError {
    /// The command, e.g. `POST /session/…/element`.
    pub command: String,
    /// The HTTP status.
    pub status: u16,
    /// The error code, e.g. `no such element`.
    pub error: String,
    /// The server's message.
    pub message: String,
}

impl fmt::Display for WebDriverError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let message = self.message.lines().next().unwrap_or_default();
        write!(
            f,
            "WebDriver {} failed ({}): {}: {message}",
            self.command, self.status, self.error
        )
    }
}

impl std::error::Error for WebDriverError {}

/// Whether `error` is the WebDriver error `code`.
fn is_webdriver_error(error: &anyhow::Error, code: &str) -> bool {
    error
        .downcast_ref::<WebDriverError>()
        .is_some_and(|error| error.error == code)
}

/// Where a session's commands go: `http://127.0.0.1:<port>/session/<id>`.
#[derive(Debug, Clone)]
struct Session {
    url: String,
}

impl Session {
    /// One command under the session (`path` starts with `/`, or is empty for the session).
    async fn command(
        &self,
        method: &str,
        path: &str,
        body: Option<Value>,
    ) -> anyhow::Result<Value> {
        command(method, &format!("{}{path}", self.url), body.as_ref()).await
    }

    async fn find_in(&self, scope: &str, css: &str) -> anyhow::Result<Element> {
        let found = self
            .command(
                "POST",
                &format!("{scope}/element"),
                Some(json!({"using": "css selector", "value": css})),
            )
            .await
            .with_context(|| format!("find {css:?}"))?;
        Element::from_reference(self, &found)
    }

    async fn find_all_in(&self, scope: &str, css: &str) -> anyhow::Result<Vec<Element>> {
        let found = self
            .command(
                "POST",
                &format!("{scope}/elements"),
                Some(json!({"using": "css selector", "value": css})),
            )
            .await
            .with_context(|| format!("find all {css:?}"))?;
        found
            .as_array()
            .ok_or_else(|| anyhow!("find all {css:?}: not a list: {found}"))?
            .iter()
            .map(|reference| Element::from_reference(self, reference))
            .collect()
    }
}

/// One WebDriver command: the answer's `value`, or a [`WebDriverError`].
async fn command(method: &str, url: &str, body: Option<&Value>) -> anyhow::Result<Value> {
    // `POST /session/…/element`: the URL without scheme and host.
    let path = url
        .strip_prefix("http://")
        .and_then(|rest| rest.find('/').map(|start| &rest[start..]))
        .unwrap_or(url);
    let command = format!("{method} {path}");
    let (status, text) = tokio::time::timeout(COMMAND_TIMEOUT, try_http_request(method, url, body))
        .await
        .map_err(|_| anyhow!("WebDriver {command}: no answer within {COMMAND_TIMEOUT:?}"))?
        .with_context(|| format!("WebDriver {command}"))?;
    let mut answer: Value = serde_json::from_str(&text).with_context(|| {
        format!(
            "WebDriver {command}: status {status}, not JSON: {}",
            truncate(&text, 500)
        )
    })?;
    let value = answer.get_mut("value").map(Value::take).unwrap_or_default();
    if status != 200 || value.get("error").is_some_and(Value::is_string) {
        let field = |name: &str| {
            value
                .get(name)
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_owned()
        };
        return Err(WebDriverError {
            command,
            status,
            error: field("error"),
            message: field("message"),
        }
        .into());
    }
    Ok(value)
}

/// A headless chromium under chromedriver, with a session and a fresh profile; dropping it kills
/// both (and everything chromium started) and removes the profile.
pub struct Browser {
    session: Session,
    // Dropped in this order: the processes first, then the profile they wrote to.
    chromedriver: ChildProcess,
    profile: tempfile::TempDir,
}

impl fmt::Debug for Browser {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Browser")
            .field("session", &self.session.url)
            .field("chromedriver_pid", &self.chromedriver.pid())
            .finish_non_exhaustive()
    }
}

/// `$env` if set and not empty, else `default`.
fn binary_from_env(env: &str, default: &str) -> PathBuf {
    match std::env::var_os(env) {
        Some(path) if !path.is_empty() => PathBuf::from(path),
        _ => PathBuf::from(default),
    }
}

/// A loopback port nothing listens on right now.
fn free_port() -> anyhow::Result<u16> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").context("bind 127.0.0.1:0")?;
    Ok(listener.local_addr()?.port())
}

impl Browser {
    /// Starts chromedriver (`$PLAYHEAD_CHROMEDRIVER`, default `/usr/bin/chromedriver`) on a
    /// free loopback port, waits until it is ready, and opens a session on a headless chromium
    /// (`$PLAYHEAD_CHROMIUM`, default `/usr/bin/chromium`) with a fresh profile.
    pub async fn start() -> anyhow::Result<Browser> {
        let chromedriver = binary_from_env(CHROMEDRIVER_ENV, DEFAULT_CHROMEDRIVER);
        let chromium = binary_from_env(CHROMIUM_ENV, DEFAULT_CHROMIUM);
        for binary in [&chromedriver, &chromium] {
            ensure!(
                binary.is_file(),
                "chromium/chromedriver not installed: run `make browser` ({} is missing)",
                binary.display()
            );
        }
        let mut attempt = 1;
        let (mut process, base) = loop {
            match start_chromedriver(&chromedriver).await {
                Ok(started) => break started,
                Err(error) if attempt < START_ATTEMPTS && error.is::<ExitedAtStart>() => {
                    attempt += 1;
                }
                Err(error) => return Err(error),
            }
        };
        let profile = temp_dir();
        let mut args: Vec<String> = CHROMIUM_ARGS.iter().map(|arg| (*arg).to_owned()).collect();
        args.push(format!("--user-data-dir={}", profile.path().display()));
        let capabilities = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {"binary": chromium, "args": args},
        }}});
        let created = match command("POST", &format!("{base}/session"), Some(&capabilities)).await {
            Ok(created) => created,
            Err(error) => {
                process.kill();
                return Err(error.context(format!(
                    "open a chromium session; last lines of chromedriver's log:\n{}",
                    process.log_tail(LOG_TAIL_LINES)
                )));
            }
        };
        let id = created
            .get("sessionId")
            .and_then(Value::as_str)
            .ok_or_else(|| anyhow!("a new session without sessionId: {created}"))?;
        Ok(Browser {
            session: Session {
                url: format!("{base}/session/{id}"),
            },
            chromedriver: process,
            profile,
        })
    }

    /// Ends the session (chromedriver closes chromium), then kills chromedriver. Dropping the
    /// browser without it is fine too: that kills chromium.
    pub async fn quit(self) -> anyhow::Result<()> {
        self.session.command("DELETE", "", None).await.map(drop)
    }

    /// The fresh profile directory chromium runs with (removed when the browser is dropped).
    pub fn profile_dir(&self) -> &Path {
        self.profile.path()
    }

    /// chromedriver's log so far (its last `lines` lines).
    pub fn driver_log_tail(&self, lines: usize) -> String {
        self.chromedriver.log_tail(lines)
    }

    /// Navigates to `url` and waits until the page has loaded.
    pub async fn goto(&self, url: &str) -> anyhow::Result<()> {
        self.session
            .command("POST", "/url", Some(json!({"url": url})))
            .await
            .with_context(|| format!("go to {url}"))
            .map(drop)
    }

    /// The first element matching the CSS selector `css` (a `no such element` error if none).
    pub async fn find(&self, css: &str) -> anyhow::Result<Element> {
        self.session.find_in("", css).await
    }

    /// Every element matching the CSS selector `css`, in document order (maybe none).
    pub async fn find_all(&self, css: &str) -> anyhow::Result<Vec<Element>> {
        self.session.find_all_in("", css).await
    }

    /// Runs `script` as the body of a function in the page, with `args` (a JSON array, or
    /// `null` for none) as its `arguments`, and returns what it returns (a promise is awaited).
    pub async fn execute(&self, script: &str, args: Value) -> anyhow::Result<Value> {
        let args = match args {
            Value::Null => json!([]),
            Value::Array(_) => args,
            other => bail!("execute: args must be a JSON array, not {other}"),
        };
        self.session
            .command(
                "POST",
                "/execute/sync",
                Some(json!({"script": script, "args": args})),
            )
            .await
            .with_context(|| format!("execute {}", truncate(script, 200)))
    }

    /// A PNG of the viewport.
    pub async fn screenshot_png(&self) -> anyhow::Result<Vec<u8>> {
        let encoded = self.session.command("GET", "/screenshot", None).await?;
        let encoded = encoded
            .as_str()
            .ok_or_else(|| anyhow!("a screenshot that is not a string: {encoded}"))?;
        decode_base64(encoded).context("decode the screenshot")
    }

    /// Writes [`Browser::screenshot_png`] to `path`.
    pub async fn save_screenshot(&self, path: impl AsRef<Path>) -> anyhow::Result<()> {
        let path = path.as_ref();
        let png = self.screenshot_png().await?;
        tokio::fs::write(path, png)
            .await
            .with_context(|| format!("write {}", path.display()))
    }

    /// The page's text as a user reads it (`document.body.innerText`).
    pub async fn page_text(&self) -> anyhow::Result<String> {
        let text = self
            .execute(
                "return document.body ? document.body.innerText : '';",
                Value::Null,
            )
            .await?;
        Ok(text.as_str().unwrap_or_default().to_owned())
    }

    /// Polls every 100 ms until an element matching `css` has a text containing `needle`, and
    /// returns that text. On timeout the error holds the texts last seen and the page's text.
    pub async fn wait_for_text(
        &self,
        css: &str,
        needle: &str,
        timeout: Duration,
    ) -> anyhow::Result<String> {
        let deadline = Instant::now() + timeout;
        let mut seen = Vec::new();
        loop {
            seen.clear();
            for element in self.find_all(css).await? {
                match element.text().await {
                    Ok(text) if text.contains(needle) => return Ok(text),
                    Ok(text) => seen.push(text),
                    // Replaced by the page between the find and the read: look again.
                    Err(error) if is_webdriver_error(&error, "stale element reference") => {}
                    Err(error) => return Err(error),
                }
            }
            if Instant::now() >= deadline {
                return Err(self
                    .timed_out(
                        &format!("text {needle:?} in {css:?} (texts seen: {seen:?})"),
                        timeout,
                    )
                    .await);
            }
            tokio::time::sleep(POLL_INTERVAL).await;
        }
    }

    /// Polls the script `predicate` (a function body, e.g. `return document.title === 'x';`)
    /// every 100 ms until it returns `true`. On timeout the error names `what` and holds the
    /// page's text.
    pub async fn wait_for(
        &self,
        what: &str,
        timeout: Duration,
        predicate: &str,
    ) -> anyhow::Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            if self.execute(predicate, Value::Null).await? == Value::Bool(true) {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(self.timed_out(what, timeout).await);
            }
            tokio::time::sleep(POLL_INTERVAL).await;
        }
    }

    /// The error of a wait for `what` that timed out, with what the page shows.
    async fn timed_out(&self, what: &str, timeout: Duration) -> anyhow::Error {
        let page = match self.page_text().await {
            Ok(text) => truncate(&text, PAGE_TEXT_LIMIT),
            Err(error) => format!("(unreadable: {error:#})"),
        };
        anyhow!("timed out after {timeout:?} waiting for {what}; the page's text:\n{page}")
    }
}

/// The start of chromedriver failed because it exited at once.
#[derive(Debug)]
struct ExitedAtStart(String);

impl fmt::Display for ExitedAtStart {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ExitedAtStart {}

/// chromedriver on a free port, once `GET /status` says ready, and its base URL.
async fn start_chromedriver(binary: &Path) -> anyhow::Result<(ChildProcess, String)> {
    let port = free_port()?;
    let mut process = ChildProcess::spawn_process_group(binary, [format!("--port={port}")], &[]);
    let base = format!("http://127.0.0.1:{port}");
    let deadline = Instant::now() + READY_TIMEOUT;
    loop {
        if let Ok((200, body)) = try_http_request("GET", &format!("{base}/status"), None).await
            && serde_json::from_str::<Value>(&body)
                .is_ok_and(|status| status["value"]["ready"] == Value::Bool(true))
        {
            return Ok((process, base));
        }
        if !process.is_running() {
            return Err(ExitedAtStart(format!(
                "{} --port={port} exited at start; its log:\n{}",
                binary.display(),
                process.log_tail(LOG_TAIL_LINES)
            ))
            .into());
        }
        if Instant::now() >= deadline {
            process.kill();
            bail!(
                "{} --port={port} not ready within {READY_TIMEOUT:?}; its log:\n{}",
                binary.display(),
                process.log_tail(LOG_TAIL_LINES)
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// An element of the page, as WebDriver refers to it (it goes stale when the page replaces it).
#[derive(Debug, Clone)]
pub struct Element {
    session: Session,
    id: String,
}

impl Element {
    fn from_reference(session: &Session, reference: &Value) -> anyhow::Result<Element> {
        let id = reference
            .get(ELEMENT_KEY)
            .and_then(Value::as_str)
            .ok_or_else(|| anyhow!("not an element reference: {reference}"))?;
        Ok(Element {
            session: session.clone(),
            id: id.to_owned(),
        })
    }

    /// WebDriver's id of the element.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The element as an argument of [`Browser::execute`] (the script receives the DOM node).
    pub fn as_arg(&self) -> Value {
        json!({ ELEMENT_KEY: self.id })
    }

    fn path(&self, command: &str) -> String {
        format!("/element/{}{command}", self.id)
    }

    /// Its rendered text (empty if hidden).
    pub async fn text(&self) -> anyhow::Result<String> {
        let text = self
            .session
            .command("GET", &self.path("/text"), None)
            .await?;
        Ok(text.as_str().unwrap_or_default().to_owned())
    }

    /// Clicks it (scrolled into view; an error if another element would get the click).
    pub async fn click(&self) -> anyhow::Result<()> {
        self.session
            .command("POST", &self.path("/click"), Some(json!({})))
            .await
            .map(drop)
    }

    /// Empties an input or textarea.
    pub async fn clear(&self) -> anyhow::Result<()> {
        self.session
            .command("POST", &self.path("/clear"), Some(json!({})))
            .await
            .map(drop)
    }

    /// Types `text` into it (after focusing it), as key presses.
    pub async fn send_keys(&self, text: &str) -> anyhow::Result<()> {
        self.session
            .command("POST", &self.path("/value"), Some(json!({"text": text})))
            .await
            .map(drop)
    }

    /// Its attribute `name`, or `None` if it has none.
    pub async fn attribute(&self, name: &str) -> anyhow::Result<Option<String>> {
        let value = self
            .session
            .command("GET", &self.path(&format!("/attribute/{name}")), None)
            .await?;
        Ok(value.as_str().map(str::to_owned))
    }

    /// The first element inside this one matching `css`.
    pub async fn find(&self, css: &str) -> anyhow::Result<Element> {
        self.session.find_in(&self.path(""), css).await
    }

    /// Every element inside this one matching `css`.
    pub async fn find_all(&self, css: &str) -> anyhow::Result<Vec<Element>> {
        self.session.find_all_in(&self.path(""), css).await
    }
}

/// At most `limit` characters of `text`, marked when cut.
fn truncate(text: &str, limit: usize) -> String {
    match text.char_indices().nth(limit) {
        Some((end, _)) => format!("{}… ({} bytes in all)", &text[..end], text.len()),
        None => text.to_owned(),
    }
}

/// Standard base64 (RFC 4648, `+/`, padding optional, ASCII whitespace ignored) decoded.
pub fn decode_base64(text: &str) -> anyhow::Result<Vec<u8>> {
    fn sextet(byte: u8) -> Option<u32> {
        Some(u32::from(match byte {
            b'A'..=b'Z' => byte - b'A',
            b'a'..=b'z' => byte - b'a' + 26,
            b'0'..=b'9' => byte - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => return None,
        }))
    }
    let symbols: Vec<u8> = text
        .bytes()
        .filter(|byte| !byte.is_ascii_whitespace())
        .collect();
    let data_len = symbols.len()
        - symbols
            .iter()
            .rev()
            .take_while(|&&byte| byte == b'=')
            .count();
    let (data, padding) = symbols.split_at(data_len);
    ensure!(
        padding.len() <= 2 && (padding.is_empty() || symbols.len().is_multiple_of(4)),
        "bad base64 padding"
    );
    ensure!(
        data.len() % 4 != 1,
        "base64 of a bad length ({})",
        data.len()
    );
    let mut decoded = Vec::with_capacity(data.len() / 4 * 3 + 2);
    for group in data.chunks(4) {
        let mut bits = 0u32;
        for (index, &byte) in group.iter().enumerate() {
            let value =
                sextet(byte).ok_or_else(|| anyhow!("not base64: {:?}", char::from(byte)))?;
            bits |= value << (18 - 6 * index);
        }
        let bytes = bits.to_be_bytes();
        decoded.extend_from_slice(&bytes[1..group.len()]);
    }
    Ok(decoded)
}

#[cfg(test)]
mod tests {
    use super::{decode_base64, truncate};

    #[test]
    fn base64_decodes_the_rfc_4648_vectors_and_a_png_signature() {
        for (encoded, decoded) in [
            ("", ""),
            ("Zg==", "f"),
            ("Zm8=", "fo"),
            ("Zm9v", "foo"),
            ("Zm9vYg==", "foob"),
            ("Zm9vYmE=", "fooba"),
            ("Zm9vYmFy", "foobar"),
            ("Zm9vYg", "foob"),
            ("Zm9v\nYmFy", "foobar"),
        ] {
            assert_eq!(
                decode_base64(encoded).expect(encoded),
                decoded.as_bytes(),
                "{encoded}"
            );
        }
        assert_eq!(
            decode_base64("iVBORw0KGgo=").expect("decodes"),
            b"\x89PNG\r\n\x1a\n"
        );
        assert_eq!(decode_base64("+/+/").expect("decodes"), [0xfb, 0xff, 0xbf]);
    }

    #[test]
    fn base64_rejects_foreign_symbols_bad_lengths_and_bad_padding() {
        for bad in ["Zm9v!", "Z", "Zm9vY", "Zg===", "Z=g=", "Zg=", "-_=="] {
            assert!(decode_base64(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn truncation_counts_characters_not_bytes() {
        assert_eq!(truncate("héllo", 10), "héllo");
        assert_eq!(truncate("héllo", 2), "hé… (6 bytes in all)");
    }
}
