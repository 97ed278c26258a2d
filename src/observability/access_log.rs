//! One JSON line per request, written by a dedicated thread so a slow disk or a blocked pipe
//! never stalls a worker: workers hand lines over a bounded channel and drop them (counted)
//! when it is full.

use serde::Serialize;
use std::io::Write;
use std::sync::atomic::AtomicBool;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{sync_channel, SyncSender, TryRecvError, TrySendError};
use std::sync::Arc;
use std::sync::OnceLock;

/// Lines buffered between workers and the writer before new ones are dropped: at the write
/// interval below this absorbs over 300k lines/s.
const QUEUE: usize = 16 * 1024;
/// How often the writer drains the queue; the most a line waits before reaching the file.
pub const WRITE_INTERVAL: std::time::Duration = std::time::Duration::from_millis(50);

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Destination {
    Off,
    Stdout,
    File(String),
}

impl Destination {
    pub fn from_config(s: &str) -> Destination {
        match s {
            "off" => Destination::Off,
            "stdout" => Destination::Stdout,
            path => Destination::File(path.to_string()),
        }
    }
}

/// The fields of DESIGN.md's access log, in its order.
#[derive(Debug, Serialize)]
pub struct Entry<'a> {
    #[serde(serialize_with = "as_text")]
    pub ts: humantime::Rfc3339Timestamp,
    pub request_id: &'a str,
    pub trace_id: Option<&'a str>,
    pub client_ip: Option<std::net::IpAddr>,
    pub method: &'a str,
    /// `HTTP/1.1` or `HTTP/2.0`.
    pub protocol: &'a str,
    pub host: &'a str,
    pub path: &'a str,
    pub route: &'a str,
    pub upstream: Option<&'a str>,
    pub backend: Option<std::net::SocketAddr>,
    pub status: u16,
    pub latency_ms: f64,
    pub upstream_latency_ms: Option<f64>,
    pub bytes_sent: usize,
    pub user_agent: &'a str,
    pub consumer: Option<&'a str>,
    pub error: Option<&'a str>,
}

pub struct AccessLog {
    destination: Destination,
    /// Started lazily, on the first line: `run -d` forks after config load, and a thread
    /// spawned before the fork would not exist in the daemon.
    sender: OnceLock<Option<SyncSender<Vec<u8>>>>,
    dropped: AtomicU64,
    /// Set by SIGUSR1 (logrotate): the writer reopens its file.
    reopen: Arc<AtomicBool>,
}

impl AccessLog {
    /// Installs the SIGUSR1 handler at once, whatever the destination: a signal's default
    /// action is to terminate, and logrotate must never kill a quiet gateway.
    pub fn new(destination: Destination) -> AccessLog {
        let reopen = Arc::new(AtomicBool::new(false));
        if let Err(e) = signal_hook::flag::register(signal_hook::consts::SIGUSR1, reopen.clone()) {
            tracing::warn!("cannot watch SIGUSR1 for access log reopening: {e}");
        }
        AccessLog {
            destination,
            sender: OnceLock::new(),
            dropped: AtomicU64::new(0),
            reopen,
        }
    }

    pub fn enabled(&self) -> bool {
        self.destination != Destination::Off
    }

    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    pub fn write(&self, entry: &Entry<'_>) {
        if !self.enabled() {
            return;
        }
        let Some(tx) = self.sender.get_or_init(|| self.start()) else {
            return;
        };
        // Room for a typical line, so serialising does not grow the buffer several times.
        let mut line = Vec::with_capacity(LINE_CAPACITY);
        if serde_json::to_writer(&mut line, entry).is_err() {
            return;
        }
        line.push(b'\n');
        match tx.try_send(line) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) | Err(TrySendError::Disconnected(_)) => {
                self.dropped.fetch_add(1, Ordering::Relaxed);
                crate::observability::metrics::METRICS
                    .access_log_dropped
                    .inc();
            }
        }
    }

    fn start(&self) -> Option<SyncSender<Vec<u8>>> {
        let destination = self.destination.clone();
        let mut out = open(&destination)?;
        // logrotate: `kill -USR1 <pid>` makes the writer reopen its file.
        let reopen = self.reopen.clone();
        let (tx, rx) = sync_channel::<Vec<u8>>(QUEUE);
        let spawned = std::thread::Builder::new()
            .name("access-log".into())
            .spawn(move || loop {
                // Sleep, then drain: workers never wake this thread (no futex per line), and
                // each batch costs one write and one flush.
                std::thread::sleep(WRITE_INTERVAL);
                if reopen.swap(false, Ordering::Relaxed) {
                    let _ = out.flush();
                    if let Some(fresh) = open(&destination) {
                        out = fresh;
                    }
                }
                let mut closed = false;
                loop {
                    match rx.try_recv() {
                        Ok(line) => {
                            let _ = out.write_all(&line);
                        }
                        Err(TryRecvError::Empty) => break,
                        Err(TryRecvError::Disconnected) => {
                            closed = true;
                            break;
                        }
                    }
                }
                let _ = out.flush();
                if closed {
                    return;
                }
            });
        match spawned {
            Ok(_) => Some(tx),
            Err(e) => {
                tracing::error!("cannot start access log writer: {e}");
                None
            }
        }
    }
}

fn open(destination: &Destination) -> Option<Box<dyn Write + Send>> {
    match destination {
        Destination::Off => None,
        Destination::Stdout => Some(Box::new(std::io::BufWriter::with_capacity(
            64 * 1024,
            std::io::stdout(),
        ))),
        Destination::File(path) => {
            match std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
            {
                Ok(f) => Some(Box::new(std::io::BufWriter::with_capacity(64 * 1024, f))),
                Err(e) => {
                    tracing::error!("cannot open access log {path}: {e}; access log disabled");
                    None
                }
            }
        }
    }
}

/// RFC 3339 UTC timestamp with milliseconds (formatted when the line is serialised).
pub fn now_rfc3339() -> humantime::Rfc3339Timestamp {
    humantime::format_rfc3339_millis(std::time::SystemTime::now())
}

/// Lines are a few hundred bytes; a long user agent or path still grows the buffer.
const LINE_CAPACITY: usize = 512;

/// Writes a `Display` value as a JSON string without an intermediate `String`.
fn as_text<T: std::fmt::Display, S: serde::Serializer>(v: &T, s: S) -> Result<S::Ok, S::Error> {
    s.collect_str(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_reach_the_file_as_json() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("access.log");
        let log = AccessLog::new(Destination::File(path.to_string_lossy().into_owned()));
        log.write(&Entry {
            ts: now_rfc3339(),
            request_id: "r1",
            trace_id: None,
            client_ip: Some([127, 0, 0, 1].into()),
            method: "GET",
            protocol: "HTTP/1.1",
            host: "h",
            path: "/a",
            route: "a",
            upstream: Some("u"),
            backend: None,
            status: 200,
            latency_ms: 1.5,
            upstream_latency_ms: None,
            bytes_sent: 10,
            user_agent: "t",
            consumer: None,
            error: None,
        });
        let mut text = String::new();
        for _ in 0..100 {
            text = std::fs::read_to_string(&path).unwrap_or_default();
            if !text.is_empty() {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        let v: serde_json::Value = serde_json::from_str(text.trim()).unwrap();
        assert_eq!(v["request_id"], "r1");
        assert_eq!(v["status"], 200);
        assert_eq!(log.dropped(), 0);
    }
}
