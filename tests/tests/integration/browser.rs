//! The WebDriver client drives a real headless chromium: it loads a page, types, clicks, reads
//! text, runs a script and takes a screenshot, and leaves no browser process behind.

use std::time::Duration;

use playhead_tests::system::temp_dir;
use playhead_tests::webdriver::Browser;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

const WITHIN: Duration = Duration::from_secs(5);

const PAGE: &str = r#"<!doctype html>
<html>
<head><meta charset="utf-8"><title>webdriver smoke</title></head>
<body>
  <form id="form" onsubmit="return false">
    <input id="name" name="name" value="placeholder" data-kind="station">
    <button id="greet" type="button">Greet</button>
  </form>
  <p id="out">nobody yet</p>
  <script>
    document.getElementById('greet').addEventListener('click', () => {
      const name = document.getElementById('name').value;
      setTimeout(() => { document.getElementById('out').textContent = 'Hello, ' + name + '!'; }, 50);
    });
  </script>
</body>
</html>
"#;

/// Serves `PAGE` at `/` (404 elsewhere) until the returned task is aborted.
async fn serve_page() -> (String, tokio::task::JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let url = format!("http://{}/", listener.local_addr().expect("address"));
    let server = tokio::spawn(async move {
        loop {
            let Ok((mut stream, _)) = listener.accept().await else {
                return;
            };
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut buffer = [0u8; 1024];
                while !head.windows(4).any(|window| window == b"\r\n\r\n") {
                    match stream.read(&mut buffer).await {
                        Ok(0) | Err(_) => return,
                        Ok(read) => head.extend_from_slice(&buffer[..read]),
                    }
                }
                let head = String::from_utf8_lossy(&head);
                let (status, body) = match head.split_whitespace().nth(1) {
                    Some("/") => ("200 OK", PAGE),
                    _ => ("404 Not Found", "not found"),
                };
                let response = format!(
                    "HTTP/1.1 {status}\r\nContent-Type: text/html; charset=utf-8\r\n\
                     Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = stream.write_all(response.as_bytes()).await;
            });
        }
    });
    (url, server)
}

/// Processes whose command line names `needle` (a zombie's is empty).
fn processes_naming(needle: &str) -> Vec<String> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|entry| {
            let cmdline = std::fs::read(entry.path().join("cmdline")).ok()?;
            let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
            cmdline.contains(needle).then_some(cmdline)
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_browser_driver_types_clicks_and_takes_screenshots() {
    let (url, server) = serve_page().await;
    let browser = Browser::start().await.expect("the browser starts");
    let profile = browser.profile_dir().display().to_string();
    browser.goto(&url).await.expect("the page loads");

    let title = browser
        .execute("return document.title;", serde_json::Value::Null)
        .await
        .expect("a script runs");
    assert_eq!(title, "webdriver smoke");

    let input = browser.find("#name").await.expect("the input");
    assert_eq!(
        input.attribute("data-kind").await.expect("an attribute"),
        Some("station".to_owned())
    );
    assert_eq!(
        input.attribute("missing").await.expect("no attribute"),
        None
    );
    input.clear().await.expect("the input clears");
    input.send_keys("Radio Één").await.expect("typing");

    let form = browser.find("#form").await.expect("the form");
    form.find("button")
        .await
        .expect("the button inside the form")
        .click()
        .await
        .expect("the click");
    let greeting = browser
        .wait_for_text("p#out", "Hello", WITHIN)
        .await
        .expect("the greeting");
    assert_eq!(greeting, "Hello, Radio Één!");
    browser
        .wait_for(
            "the input to keep what was typed",
            WITHIN,
            "return document.getElementById('name').value === 'Radio Één';",
        )
        .await
        .expect("the typed value");

    let missing = browser.find("#nothing").await.expect_err("no such element");
    assert!(
        format!("{missing:#}").contains("no such element"),
        "{missing:#}"
    );
    let timed_out = browser
        .wait_for_text("p#out", "Goodbye", Duration::from_millis(300))
        .await
        .expect_err("the text never comes");
    let timed_out = format!("{timed_out:#}");
    assert!(
        timed_out.contains("Goodbye") && timed_out.contains("Hello, Radio Één!"),
        "a timed-out wait shows the page: {timed_out}"
    );

    let png = browser.screenshot_png().await.expect("a screenshot");
    assert!(png.starts_with(b"\x89PNG\r\n\x1a\n"), "a PNG");
    let scratch = temp_dir();
    let saved = scratch.path().join("page.png");
    browser
        .save_screenshot(&saved)
        .await
        .expect("a saved screenshot");
    assert!(
        std::fs::read(&saved)
            .expect("the file")
            .starts_with(b"\x89PNG")
    );

    assert!(
        !processes_naming(&profile).is_empty(),
        "chromium runs on the profile"
    );
    drop(browser);
    server.abort();
    let left = processes_naming(&profile);
    assert!(
        left.is_empty(),
        "browser processes outlive the Browser: {left:#?}"
    );
    assert!(
        !std::path::Path::new(&profile).exists(),
        "the profile is removed"
    );
}
