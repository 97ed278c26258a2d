//! OpenTelemetry tracing export (DESIGN.md "Tracing export", `tracing.otlp`).
//!
//! [`Tracing`] is the runtime object of the `tracing` section: the SDK tracer provider (the
//! parent-based ratio sampler, ids, resource), whose spans end in the bounded queue of
//! [`export`]; the queue's consuming [`ExportLoop`] waits in it until a background runtime
//! takes it ([`Tracing::take_export`]: the `trace export` service at start, the reloader
//! after a reload that changed the section). [`RequestSpans`] is one request's server span and
//! upstream attempts' client spans, driven by the proxy phase by phase.
//!
//! Without a `tracing` section there is no `Tracing`, and a request's context holds `None`:
//! no span objects, no allocation, one branch per phase.

pub mod export;
pub mod spans;

pub use export::ExportLoop;
pub use spans::RequestSpans;

use crate::config::trace_export::OtlpConfig;
use crate::config::Problem;
use crate::observability::metrics::METRICS;
use async_trait::async_trait;
use opentelemetry::trace::TracerProvider as _;
use opentelemetry::KeyValue;
use opentelemetry_sdk::trace::{Sampler, SdkTracer, SdkTracerProvider};
use opentelemetry_sdk::Resource;
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// The tracer of one `tracing.otlp` definition (kept across reloads that do not change it).
pub struct Tracing {
    tracer: SdkTracer,
    /// Held so that the processor (the queue's sender) lives exactly as long as this.
    _provider: SdkTracerProvider,
    export: Mutex<Option<ExportLoop>>,
    /// The definition it was built from: a reload with the same one keeps this object.
    pub config: OtlpConfig,
}

impl std::fmt::Debug for Tracing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tracing")
            .field("endpoint", &self.config.endpoint)
            .finish_non_exhaustive()
    }
}

impl Tracing {
    /// Build the tracer and its (not yet started) export loop. Nothing runs until a runtime
    /// takes the loop, so `check` builds and drops this without a thread or a socket.
    pub fn build(config: &OtlpConfig) -> Result<Tracing, Vec<Problem>> {
        let mut headers: HashMap<String, String> = config.headers.clone().into_iter().collect();
        let mut problems = Vec::new();
        for (name, var) in &config.headers_env {
            match std::env::var(var) {
                Ok(value) if http::HeaderValue::from_str(&value).is_ok() => {
                    headers.insert(name.clone(), value);
                }
                Ok(_) => problems.push(Problem::new(
                    format!("tracing.otlp.headers_env.{name}"),
                    format!("environment variable {var} is not a valid header value"),
                )),
                Err(_) => problems.push(Problem::new(
                    format!("tracing.otlp.headers_env.{name}"),
                    format!("environment variable {var} is not set"),
                )),
            }
        }
        if !problems.is_empty() {
            return Err(problems);
        }
        for reason in ["queue_full", "export_failed"] {
            METRICS.trace_spans_dropped.with_label_values(&[reason]);
        }
        let resource = Resource::builder()
            .with_service_name(config.service_name.clone())
            .with_attributes([
                KeyValue::new("service.version", env!("CARGO_PKG_VERSION")),
                KeyValue::new("host.name", host_name()),
            ])
            .build();
        let (processor, spans) = export::queue(config.batch.max_queue);
        let sampler =
            Sampler::ParentBased(Box::new(Sampler::TraceIdRatioBased(config.sample_ratio)));
        let provider = SdkTracerProvider::builder()
            .with_span_processor(processor)
            .with_sampler(sampler)
            .with_resource(resource.clone())
            .build();
        let scope = opentelemetry::InstrumentationScope::builder("tollgate")
            .with_version(env!("CARGO_PKG_VERSION"))
            .build();
        let tracer = provider.tracer_with_scope(scope);
        let export = ExportLoop::new(spans, config.clone(), headers, resource);
        Ok(Tracing {
            tracer,
            _provider: provider,
            export: Mutex::new(Some(export)),
            config: config.clone(),
        })
    }

    /// The export loop, to the first caller only.
    pub fn take_export(&self) -> Option<ExportLoop> {
        self.export.lock().ok()?.take()
    }

    pub(crate) fn tracer(&self) -> &SdkTracer {
        &self.tracer
    }
}

/// `host.name`: the kernel's host name (`gethostname(2)`).
fn host_name() -> String {
    let mut buf = [0u8; 256];
    // SAFETY: the buffer is valid for its length; the result is NUL-terminated or truncated.
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    if rc != 0 {
        return "unknown".to_string();
    }
    let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    String::from_utf8_lossy(&buf[..end]).into_owned()
}

/// The Pingora background service that runs the first generation's export loop (its own
/// one-thread runtime: exports never run on a proxy worker).
pub struct ExportService(Mutex<Option<ExportLoop>>);

impl ExportService {
    pub fn new(export: ExportLoop) -> Self {
        ExportService(Mutex::new(Some(export)))
    }
}

#[async_trait]
impl BackgroundService for ExportService {
    async fn start(&self, shutdown: ShutdownWatch) {
        let export = self.0.lock().ok().and_then(|mut e| e.take());
        if let Some(export) = export {
            export.run(Some(shutdown)).await;
        }
    }
}

/// Shared by the runtime: the same definition keeps its tracer (and its queue) on reload.
pub fn keep_or_build(
    config: Option<&OtlpConfig>,
    previous: Option<&Arc<Tracing>>,
) -> Result<Option<Arc<Tracing>>, Vec<Problem>> {
    let Some(config) = config else {
        return Ok(None);
    };
    if let Some(old) = previous.filter(|old| old.config == *config) {
        return Ok(Some(old.clone()));
    }
    Tracing::build(config).map(|t| Some(Arc::new(t)))
}
