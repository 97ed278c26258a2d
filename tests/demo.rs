//! `tollgate demo`, the README's first command: it serves its routes over HTTP/1.1, h2c, and
//! HTTPS with HTTP/2 on a certificate it made at start. The demo's ports are fixed
//! (8080, 8443, 9901), so this is the only test that starts it.

mod common;

use common::pki::run;
use common::{kill_and_reap, wait_until_ready, BIN};
use std::process::{Command, Stdio};

/// curl `-w '%{http_version} %{http_code}'` for one URL.
fn version_and_status(extra: &[&str], url: &str) -> String {
    let out = run(Command::new("curl")
        .args(["-sS", "--max-time", "10", "-o", "/dev/null"])
        .args(["-w", "%{http_version} %{http_code}"])
        .args(extra)
        .arg(url));
    assert!(
        out.status.success(),
        "curl {url}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demo_serves_http1_h2c_and_https_with_http2() {
    let dir = tempfile::tempdir().expect("tempdir");
    let child = Command::new(BIN)
        .arg("demo")
        .current_dir(dir.path())
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(dir.path().join("stdout")).expect("stdout file"))
        .stderr(std::fs::File::create(dir.path().join("stderr")).expect("stderr file"))
        .spawn()
        .expect("spawn tollgate demo");
    // Killed even when a wait below panics: the demo's fixed ports must not stay taken.
    struct Demo(Option<std::process::Child>);
    impl Drop for Demo {
        fn drop(&mut self) {
            if let Some(c) = self.0.take() {
                kill_and_reap(c);
            }
        }
    }
    let mut demo = Demo(Some(child));
    let child = demo.0.as_mut().expect("child");
    wait_until_ready(child, 9901, 8080).await;
    let cases = [
        (vec![], "http://127.0.0.1:8080/orders/7", "1.1 200"),
        (
            vec!["--http2-prior-knowledge"],
            "http://127.0.0.1:8080/orders/7",
            "2 200",
        ),
        (
            vec!["-k", "--http2"],
            "https://localhost:8443/orders/7",
            "2 200",
        ),
        (
            vec!["-k", "--http1.1"],
            "https://localhost:8443/orders/7",
            "1.1 200",
        ),
    ];
    let mut seen = Vec::new();
    for (extra, url, _) in &cases {
        seen.push(version_and_status(extra, url));
    }
    drop(demo);
    // On a failure, the demo's access log (stdout) and error log say which answer it was.
    let log = |name| std::fs::read_to_string(dir.path().join(name)).unwrap_or_default();
    for ((extra, url, want), got) in cases.iter().zip(&seen) {
        assert_eq!(
            got,
            want,
            "curl {extra:?} {url}\n--- stdout\n{}\n--- stderr\n{}",
            log("stdout"),
            log("stderr")
        );
    }
}
