//! [`Resp`]: one response type for both reqwest and the raw-TCP clients of
//! [`super::raw_http`]; [`Echo`]: what the echo [`super::Backend`] saw; and the reqwest client
//! helpers ([`client`], [`send`], ...).

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::Value;

/// A response, from reqwest or from the raw-TCP helper.
#[derive(Debug, Clone)]
pub struct Resp {
    pub status: u16,
    /// Header names lowercased, in received order.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

/// What the echo backend saw.
#[derive(Debug, Clone)]
pub struct Echo {
    pub backend: String,
    pub method: String,
    pub path: String,
    pub headers: BTreeMap<String, String>,
    /// Request body bytes the backend received.
    pub body_len: u64,
}

impl Echo {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .get(&name.to_ascii_lowercase())
            .map(|s| s.as_str())
    }
}

impl Resp {
    /// First value of a header (case-insensitive name).
    pub fn header(&self, name: &str) -> Option<&str> {
        let name = name.to_ascii_lowercase();
        self.headers
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| v.as_str())
    }

    /// All values of a header (case-insensitive name).
    pub fn header_all(&self, name: &str) -> Vec<&str> {
        let name = name.to_ascii_lowercase();
        self.headers
            .iter()
            .filter(|(n, _)| *n == name)
            .map(|(_, v)| v.as_str())
            .collect()
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("response body is not JSON ({e}): {self}"))
    }

    /// Parses the echo backend's JSON; panics (with the response) unless this is a 200 echo.
    pub fn echo(&self) -> Echo {
        assert_eq!(
            self.status, 200,
            "expected a 200 from a backend, got: {self}"
        );
        let v = self.json();
        let s = |k: &str| -> String {
            v.get(k)
                .and_then(Value::as_str)
                .unwrap_or_else(|| panic!("echo body has no string {k:?}: {self}"))
                .to_string()
        };
        let headers = v
            .get("headers")
            .and_then(Value::as_object)
            .unwrap_or_else(|| panic!("echo body has no headers object: {self}"))
            .iter()
            .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_string()))
            .collect();
        Echo {
            backend: s("backend"),
            method: s("method"),
            path: s("path"),
            headers,
            body_len: v.get("body_len").and_then(Value::as_u64).unwrap_or(0),
        }
    }

    /// Asserts a gateway-produced error: the status, `Content-Type: application/json`, and a body
    /// `{"error":code,"message":<non-empty>,"request_id":<non-empty>}`. Returns the body.
    pub fn assert_gateway_error(&self, status: u16, code: &str) -> Value {
        assert_eq!(self.status, status, "unexpected status: {self}");
        let ct = self.header("content-type").unwrap_or_default();
        assert!(
            ct.to_ascii_lowercase().starts_with("application/json"),
            "gateway error must be Content-Type: application/json, got {ct:?}: {self}"
        );
        let v = self.json();
        assert_eq!(
            v.get("error").and_then(Value::as_str),
            Some(code),
            "error code: {self}"
        );
        let msg = v.get("message").and_then(Value::as_str).unwrap_or_default();
        assert!(!msg.is_empty(), "error message missing/empty: {self}");
        let rid = v
            .get("request_id")
            .and_then(Value::as_str)
            .unwrap_or_default();
        assert!(!rid.is_empty(), "request_id missing/empty: {self}");
        v
    }
}

impl std::fmt::Display for Resp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "HTTP {}", self.status)?;
        for (n, v) in &self.headers {
            write!(f, "\n  {n}: {v}")?;
        }
        write!(f, "\n  body: {}", self.text())
    }
}

pub async fn from_reqwest(r: reqwest::Response) -> Resp {
    let status = r.status().as_u16();
    let headers = r
        .headers()
        .iter()
        .map(|(n, v)| {
            (
                n.as_str().to_ascii_lowercase(),
                String::from_utf8_lossy(v.as_bytes()).into_owned(),
            )
        })
        .collect();
    let body = r.bytes().await.expect("read response body").to_vec();
    Resp {
        status,
        headers,
        body,
    }
}

/// A reqwest client that never reuses a connection (one request per connection).
pub fn client_no_keepalive() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .pool_max_idle_per_host(0)
        .timeout(Duration::from_secs(10))
        .build()
        .expect("reqwest client")
}

/// A reqwest client that never uses a proxy, with a 10 s timeout per request.
pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(10))
        .build()
        .expect("reqwest client")
}

/// Sends `method url` with the extra headers (a `host` header here overrides the URL's).
pub async fn send(
    client: &reqwest::Client,
    method: &str,
    url: &str,
    headers: &[(&str, &str)],
) -> Resp {
    let method = reqwest::Method::from_bytes(method.as_bytes()).expect("method");
    let mut rb = client.request(method, url);
    for (n, v) in headers {
        rb = rb.header(*n, *v);
    }
    match rb.send().await {
        Ok(r) => from_reqwest(r).await,
        Err(e) => panic!("request {url} failed: {e:?}"),
    }
}

/// Like [`send`], with a request body (sent with `Content-Length`).
pub async fn send_body(
    client: &reqwest::Client,
    method: &str,
    url: &str,
    headers: &[(&str, &str)],
    body: Vec<u8>,
) -> Resp {
    let method = reqwest::Method::from_bytes(method.as_bytes()).expect("method");
    let mut rb = client.request(method, url).body(body);
    for (n, v) in headers {
        rb = rb.header(*n, *v);
    }
    match rb.send().await {
        Ok(r) => from_reqwest(r).await,
        Err(e) => panic!("request {url} failed: {e:?}"),
    }
}
