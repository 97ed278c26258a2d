//! From a finished span to the collector, off the request path.
//!
//! Why not the SDK's `BatchSpanProcessor`: it runs its exports on a thread of its own through
//! `futures::executor::block_on`, where neither the hyper nor the tonic client has the tokio
//! reactor it needs, and it keeps its drop count to itself (it only logs it at shutdown). So
//! tollgate puts its own two halves around the SDK's OTLP exporter:
//!
//! - [`QueueProcessor`], the SDK `SpanProcessor` every span ends in: one `try_send` into a
//!   bounded channel (`batch.max_queue`). It never waits; when the queue is full the span is
//!   dropped and counted in `tollgate_trace_spans_dropped_total{reason="queue_full"}`.
//! - [`ExportLoop`], a task on a Pingora background runtime (never a worker): it collects up to
//!   `batch.max_batch` spans or waits `batch.delay`, then sends one export request at a time
//!   with the OTLP exporter, bounded by `timeout`. A batch that fails or times out is dropped
//!   and counted (`reason="export_failed"`); while an export is slow the queue fills and the
//!   spans behind it are dropped at the queue — memory stays bounded, requests never wait.
//!
//! The loop ends when every sender is gone (the generation that owned the tracer was
//! replaced by a reload and its last request finished), after exporting what was queued.

use crate::config::trace_export::{OtlpConfig, OtlpProtocol};
use crate::observability::metrics::METRICS;
use opentelemetry_otlp::{WithExportConfig, WithHttpConfig, WithTonicConfig};
use opentelemetry_sdk::error::{OTelSdkError, OTelSdkResult};
use opentelemetry_sdk::trace::{SpanData, SpanExporter, SpanProcessor};
use opentelemetry_sdk::Resource;
use pingora::server::ShutdownWatch;
use std::collections::HashMap;
use std::time::{Duration, Instant};
use tokio::sync::mpsc;

/// After a shutdown began, queued spans go out this soon (the process exits after the drain).
const SHUTDOWN_DELAY: Duration = Duration::from_millis(100);
/// Export failures are logged at most this often (with the count since the last line).
const WARN_EVERY: Duration = Duration::from_secs(30);

/// The SDK end of the queue: see the module docs.
#[derive(Debug)]
pub struct QueueProcessor {
    queue: mpsc::Sender<SpanData>,
}

/// A bounded queue and the processor that fills it.
pub fn queue(max_queue: usize) -> (QueueProcessor, mpsc::Receiver<SpanData>) {
    let (queue, rx) = mpsc::channel(max_queue.max(1));
    (QueueProcessor { queue }, rx)
}

impl SpanProcessor for QueueProcessor {
    fn on_start(&self, _span: &mut opentelemetry_sdk::trace::Span, _cx: &opentelemetry::Context) {}

    fn on_end(&self, span: SpanData) {
        if self.queue.try_send(span).is_err() {
            METRICS
                .trace_spans_dropped
                .with_label_values(&["queue_full"])
                .inc();
        }
    }

    /// Exports happen on the loop's schedule; there is nothing to flush from here.
    fn force_flush(&self) -> OTelSdkResult {
        Ok(())
    }

    /// The loop drains the queue once the last sender is dropped.
    fn shutdown_with_timeout(&self, _timeout: Duration) -> OTelSdkResult {
        Ok(())
    }
}

/// The consuming end: built with the tracer, started on a background runtime.
pub struct ExportLoop {
    spans: mpsc::Receiver<SpanData>,
    config: OtlpConfig,
    /// `headers` plus the values of `headers_env`, read when the config was built.
    headers: HashMap<String, String>,
    resource: Resource,
}

impl ExportLoop {
    pub(super) fn new(
        spans: mpsc::Receiver<SpanData>,
        config: OtlpConfig,
        headers: HashMap<String, String>,
        resource: Resource,
    ) -> Self {
        ExportLoop {
            spans,
            config,
            headers,
            resource,
        }
    }

    /// The OTLP exporter of the config. Built here, inside the export runtime: tonic's
    /// channel spawns its worker on the runtime it is created on.
    fn exporter(&self) -> Result<opentelemetry_otlp::SpanExporter, String> {
        let c = &self.config;
        let url = c.export_url();
        let built = match c.protocol {
            OtlpProtocol::HttpProtobuf => opentelemetry_otlp::SpanExporter::builder()
                .with_http()
                .with_protocol(opentelemetry_otlp::Protocol::HttpBinary)
                .with_endpoint(url)
                .with_timeout(c.timeout.0)
                .with_headers(self.headers.clone())
                .build(),
            OtlpProtocol::Grpc => {
                let mut metadata = http::HeaderMap::new();
                for (name, value) in &self.headers {
                    let name = http::HeaderName::from_bytes(name.as_bytes());
                    let value = http::HeaderValue::from_str(value);
                    if let (Ok(name), Ok(value)) = (name, value) {
                        metadata.insert(name, value);
                    }
                }
                let metadata =
                    opentelemetry_otlp::tonic_types::metadata::MetadataMap::from_headers(metadata);
                opentelemetry_otlp::SpanExporter::builder()
                    .with_tonic()
                    .with_endpoint(url)
                    .with_timeout(c.timeout.0)
                    .with_metadata(metadata)
                    .build()
            }
        };
        let mut exporter = built.map_err(|e| e.to_string())?;
        exporter.set_resource(&self.resource);
        Ok(exporter)
    }

    /// Export until the queue closes (its generation is gone). `shutdown`: the process's
    /// watch; once a shutdown begins, batches go out after at most 100 ms.
    pub async fn run(mut self, mut shutdown: Option<ShutdownWatch>) {
        let exporter = match self.exporter() {
            Ok(e) => e,
            Err(e) => {
                tracing::error!("tracing.otlp: cannot build the exporter, spans are dropped: {e}");
                while self.spans.recv().await.is_some() {
                    METRICS
                        .trace_spans_dropped
                        .with_label_values(&["export_failed"])
                        .inc();
                }
                return;
            }
        };
        let mut delay = self.config.batch.delay.0;
        let max_batch = self.config.batch.max_batch.max(1);
        let mut warn = Warnings::default();
        let mut batch = Vec::with_capacity(max_batch);
        loop {
            // Wait for the first span of a batch (or the start of a shutdown).
            let first = match shutdown.as_mut() {
                Some(watch) => tokio::select! {
                    span = self.spans.recv() => span,
                    changed = watch.changed() => {
                        if changed.is_err() || *watch.borrow() {
                            shutdown = None;
                            delay = delay.min(SHUTDOWN_DELAY);
                        }
                        continue;
                    }
                },
                None => self.spans.recv().await,
            };
            let Some(first) = first else {
                return;
            };
            batch.push(first);
            let until = tokio::time::Instant::now() + delay;
            let mut closed = false;
            while batch.len() < max_batch {
                match tokio::time::timeout_at(until, self.spans.recv()).await {
                    Ok(Some(span)) => batch.push(span),
                    Ok(None) => {
                        closed = true;
                        break;
                    }
                    Err(_) => break,
                }
            }
            let n = batch.len() as u64;
            let sent = std::mem::replace(&mut batch, Vec::with_capacity(max_batch));
            let timeout = self.config.timeout.0;
            match tokio::time::timeout(timeout, exporter.export(sent)).await {
                Ok(Ok(())) => METRICS.trace_spans_exported.inc_by(n),
                failed => {
                    METRICS
                        .trace_spans_dropped
                        .with_label_values(&["export_failed"])
                        .inc_by(n);
                    let why = match failed {
                        Ok(Err(e)) => describe(&e),
                        _ => format!("no answer within {timeout:?}"),
                    };
                    warn.failed(n, &why, &self.config.endpoint);
                }
            }
            if closed {
                return;
            }
        }
    }
}

fn describe(e: &OTelSdkError) -> String {
    match e {
        OTelSdkError::InternalFailure(why) => why.clone(),
        other => other.to_string(),
    }
}

/// Rate-limited export warnings: a collector that is down must not flood the process log.
#[derive(Default)]
struct Warnings {
    last: Option<Instant>,
    since: u64,
}

impl Warnings {
    fn failed(&mut self, spans: u64, why: &str, endpoint: &str) {
        self.since += spans;
        if self.last.is_some_and(|t| t.elapsed() < WARN_EVERY) {
            return;
        }
        tracing::warn!(
            "tracing.otlp: export to {endpoint} failed ({why}); {} span(s) dropped since the last warning",
            self.since
        );
        self.last = Some(Instant::now());
        self.since = 0;
    }
}
