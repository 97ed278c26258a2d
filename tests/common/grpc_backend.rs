//! A real gRPC backend and client for the gateway's gRPC and upstream-TLS tests (included with
//! `#[path]` by tests/grpc.rs and tests/upstream_tls.rs, so other test binaries do not build
//! tonic).
//!
//! * [`GrpcBackend`]: hyper's HTTP/2 server (h2c with prior knowledge, or TLS choosing h2 or
//!   HTTP/1.1 by ALPN, optionally requiring a client certificate) serving the `test.Echo`
//!   service through tonic's low-level `server::Grpc` with the prost codec: hand-written
//!   messages, no protoc. Any other path gets a plain `200` describing what the backend saw
//!   (protocol, SNI, Host, client certificate), and `/health` a plain `ok`.
//! * [`h2c_channel`] / [`tls_channel`] and the [`unary`] / [`stream`] calls: tonic's
//!   `client::Grpc` over a tonic `Channel`.
#![allow(dead_code)]

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use std::convert::Infallible;
use std::future::Future;
use std::path::Path;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tonic::{Code, Request, Response, Status};

/// `test.Echo/Unary` and `test.Echo/Stream` request.
#[derive(Clone, PartialEq, prost::Message)]
pub struct EchoRequest {
    #[prost(string, tag = "1")]
    pub message: String,
    /// Stream: how many replies before the end.
    #[prost(uint32, tag = "2")]
    pub count: u32,
    /// Non-zero: end the call with this gRPC status (after `count` replies when streaming,
    /// so it travels in real trailers).
    #[prost(uint32, tag = "3")]
    pub fail_code: u32,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct EchoReply {
    #[prost(string, tag = "1")]
    pub message: String,
    #[prost(string, tag = "2")]
    pub backend: String,
    #[prost(uint32, tag = "3")]
    pub index: u32,
}

/// The message a backend-set error carries: non-ASCII and `%`, which must survive the
/// percent-encoding of `grpc-message` through the gateway.
pub const BACKEND_ERROR_MESSAGE: &str = "backend refuses: caf\u{e9} 100%";

/// A unary call with this message is answered after 3 s.
pub const SLOW: &str = "slow";

pub const UNARY: &str = "/test.Echo/Unary";
pub const STREAM: &str = "/test.Echo/Stream";

/// How the backend listens.
#[derive(Clone)]
pub enum Listen {
    /// Cleartext HTTP/2 with prior knowledge.
    H2c,
    /// TLS with this certificate chain and key; ALPN offers h2 and http/1.1. With
    /// `client_ca`, a client certificate signed by it is required.
    Tls {
        cert: std::path::PathBuf,
        key: std::path::PathBuf,
        client_ca: Option<std::path::PathBuf>,
    },
}

struct State {
    name: String,
    calls: AtomicUsize,
}

pub struct GrpcBackend {
    state: Arc<State>,
    pub port: u16,
    task: JoinHandle<()>,
}

impl Drop for GrpcBackend {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl GrpcBackend {
    pub async fn start(name: &str, listen: Listen) -> GrpcBackend {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let port = listener.local_addr().expect("local_addr").port();
        let state = Arc::new(State {
            name: name.to_string(),
            calls: AtomicUsize::new(0),
        });
        let acceptor = match &listen {
            Listen::H2c => None,
            Listen::Tls {
                cert,
                key,
                client_ca,
            } => Some(tls_acceptor(cert, key, client_ca.as_deref())),
        };
        let task = tokio::spawn(accept_loop(listener, acceptor, state.clone()));
        GrpcBackend { state, port, task }
    }

    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Requests other than `/health`.
    pub fn calls(&self) -> usize {
        self.state.calls.load(Ordering::SeqCst)
    }
}

fn tls_acceptor(cert: &Path, key: &Path, client_ca: Option<&Path>) -> tokio_rustls::TlsAcceptor {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .expect("cert file")
        .collect::<Result<_, _>>()
        .expect("certs");
    let key = PrivateKeyDer::from_pem_file(key).expect("key");
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .expect("versions");
    let builder = match client_ca {
        Some(ca) => {
            let mut roots = rustls::RootCertStore::empty();
            for c in CertificateDer::pem_file_iter(ca).expect("client CA") {
                roots.add(c.expect("CA cert")).expect("add CA");
            }
            let verifier =
                rustls::server::WebPkiClientVerifier::builder_with_provider(roots.into(), provider)
                    .build()
                    .expect("client verifier");
            builder.with_client_cert_verifier(verifier)
        }
        None => builder.with_no_client_auth(),
    };
    let mut config = builder.with_single_cert(chain, key).expect("server config");
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    tokio_rustls::TlsAcceptor::from(Arc::new(config))
}

/// What the connection told us before any request: for the plain-HTTP answer.
#[derive(Clone, Default)]
struct ConnFacts {
    sni: Option<String>,
    alpn: Option<String>,
    client_cert: bool,
}

async fn accept_loop(
    listener: TcpListener,
    acceptor: Option<tokio_rustls::TlsAcceptor>,
    state: Arc<State>,
) {
    loop {
        let Ok((tcp, _)) = listener.accept().await else {
            continue;
        };
        let (acceptor, state) = (acceptor.clone(), state.clone());
        tokio::spawn(async move {
            match acceptor {
                None => serve_h2(TokioIo::new(tcp), state, ConnFacts::default()).await,
                Some(acceptor) => {
                    let Ok(Ok(tls)) =
                        tokio::time::timeout(Duration::from_secs(5), acceptor.accept(tcp)).await
                    else {
                        return; // a failed handshake is the client's problem
                    };
                    let (_, conn) = tls.get_ref();
                    let facts = ConnFacts {
                        sni: conn.server_name().map(str::to_string),
                        alpn: conn
                            .alpn_protocol()
                            .map(|p| String::from_utf8_lossy(p).into_owned()),
                        client_cert: conn.peer_certificates().is_some_and(|c| !c.is_empty()),
                    };
                    if facts.alpn.as_deref() == Some("h2") {
                        serve_h2(TokioIo::new(tls), state, facts).await;
                    } else {
                        let svc = service_fn(move |req| handle(req, state.clone(), facts.clone()));
                        let _ = hyper::server::conn::http1::Builder::new()
                            .serve_connection(TokioIo::new(tls), svc)
                            .await;
                    }
                }
            }
        });
    }
}

async fn serve_h2<I>(io: I, state: Arc<State>, facts: ConnFacts)
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let svc = service_fn(move |req| handle(req, state.clone(), facts.clone()));
    let _ = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
        .serve_connection(io, svc)
        .await;
}

type Codec = tonic_prost::ProstCodec<EchoReply, EchoRequest>;

async fn handle(
    req: hyper::Request<Incoming>,
    state: Arc<State>,
    facts: ConnFacts,
) -> Result<hyper::Response<tonic::body::Body>, Infallible> {
    let path = req.uri().path().to_string();
    if path != "/health" {
        state.calls.fetch_add(1, Ordering::SeqCst);
    }
    let name = state.name.clone();
    let resp = match path.as_str() {
        UNARY => {
            let mut grpc = tonic::server::Grpc::new(Codec::default());
            grpc.unary(UnarySvc(name), req).await
        }
        STREAM => {
            let mut grpc = tonic::server::Grpc::new(Codec::default());
            grpc.server_streaming(StreamSvc(name), req).await
        }
        "/health" => plain("ok".to_string()),
        _ => {
            let host = req
                .headers()
                .get("host")
                .and_then(|v| v.to_str().ok())
                .map(str::to_string)
                .or_else(|| req.uri().authority().map(|a| a.to_string()))
                .unwrap_or_default();
            let version = format!("{:?}", req.version());
            let _ = req.into_body().collect().await;
            plain(
                serde_json::json!({
                    "backend": name,
                    "path": path,
                    "version": version,
                    "host": host,
                    "sni": facts.sni,
                    "alpn": facts.alpn,
                    "client_cert": facts.client_cert,
                })
                .to_string(),
            )
        }
    };
    Ok(resp)
}

fn plain(body: String) -> hyper::Response<tonic::body::Body> {
    let mut resp = hyper::Response::new(tonic::body::Body::new(Full::new(Bytes::from(body))));
    resp.headers_mut()
        .insert("content-type", "application/json".parse().expect("value"));
    resp
}

struct UnarySvc(String);

impl tonic::server::UnaryService<EchoRequest> for UnarySvc {
    type Response = EchoReply;
    type Future = Pin<Box<dyn Future<Output = Result<Response<EchoReply>, Status>> + Send>>;

    fn call(&mut self, request: Request<EchoRequest>) -> Self::Future {
        let backend = self.0.clone();
        Box::pin(async move {
            let req = request.into_inner();
            if req.message == SLOW {
                tokio::time::sleep(Duration::from_secs(3)).await;
            }
            if req.fail_code != 0 {
                return Err(Status::new(
                    Code::from_i32(req.fail_code as i32),
                    BACKEND_ERROR_MESSAGE,
                ));
            }
            Ok(Response::new(EchoReply {
                message: req.message,
                backend,
                index: 0,
            }))
        })
    }
}

struct StreamSvc(String);

type ReplyStream = Pin<Box<dyn tokio_stream::Stream<Item = Result<EchoReply, Status>> + Send>>;

impl tonic::server::ServerStreamingService<EchoRequest> for StreamSvc {
    type Response = EchoReply;
    type ResponseStream = ReplyStream;
    type Future = Pin<Box<dyn Future<Output = Result<Response<ReplyStream>, Status>> + Send>>;

    fn call(&mut self, request: Request<EchoRequest>) -> Self::Future {
        let backend = self.0.clone();
        Box::pin(async move {
            let req = request.into_inner();
            let mut items: Vec<Result<EchoReply, Status>> = (0..req.count)
                .map(|index| {
                    Ok(EchoReply {
                        message: format!("{} #{index}", req.message),
                        backend: backend.clone(),
                        index,
                    })
                })
                .collect();
            if req.fail_code != 0 {
                items.push(Err(Status::new(
                    Code::from_i32(req.fail_code as i32),
                    BACKEND_ERROR_MESSAGE,
                )));
            }
            // Spaced out, so the replies really stream through the gateway one by one.
            let stream = tokio_stream::StreamExt::throttle(
                tokio_stream::iter(items),
                Duration::from_millis(20),
            );
            Ok(Response::new(Box::pin(stream) as ReplyStream))
        })
    }
}

// ---------------------------------------------------------------------------------------------
// Client
// ---------------------------------------------------------------------------------------------

pub type Client = tonic::client::Grpc<tonic::transport::Channel>;

/// h2c with prior knowledge to `127.0.0.1:port`.
pub async fn h2c_channel(port: u16) -> Client {
    let channel = tonic::transport::Endpoint::from_shared(format!("http://127.0.0.1:{port}"))
        .expect("endpoint")
        .connect_timeout(Duration::from_secs(5))
        .timeout(Duration::from_secs(10))
        .connect()
        .await
        .expect("h2c connect");
    tonic::client::Grpc::new(channel)
}

/// TLS (h2 by ALPN) to `127.0.0.1:port` as `server_name`, verified against `ca_pem`.
pub async fn tls_channel(port: u16, server_name: &str, ca_pem: &str) -> Client {
    let tls = tonic::transport::ClientTlsConfig::new()
        .ca_certificate(tonic::transport::Certificate::from_pem(ca_pem))
        .domain_name(server_name);
    let channel = tonic::transport::Endpoint::from_shared(format!("https://127.0.0.1:{port}"))
        .expect("endpoint")
        .tls_config(tls)
        .expect("tls config")
        .connect_timeout(Duration::from_secs(5))
        .timeout(Duration::from_secs(10))
        .connect()
        .await
        .expect("TLS connect");
    tonic::client::Grpc::new(channel)
}

fn request(
    message: &str,
    count: u32,
    fail_code: u32,
    metadata: &[(&str, &str)],
) -> Request<EchoRequest> {
    let mut req = Request::new(EchoRequest {
        message: message.to_string(),
        count,
        fail_code,
    });
    for (k, v) in metadata {
        let key: tonic::metadata::MetadataKey<tonic::metadata::Ascii> =
            k.parse().expect("metadata key");
        req.metadata_mut()
            .insert(key, v.parse().expect("metadata value"));
    }
    req
}

fn path(p: &'static str) -> http::uri::PathAndQuery {
    http::uri::PathAndQuery::from_static(p)
}

/// `test.Echo/Unary` (or another `method` path).
pub async fn unary(
    client: &mut Client,
    method: &'static str,
    message: &str,
    fail_code: u32,
    metadata: &[(&str, &str)],
) -> Result<Response<EchoReply>, Status> {
    client.ready().await.expect("channel ready");
    let codec = tonic_prost::ProstCodec::<EchoRequest, EchoReply>::default();
    client
        .unary(
            request(message, 0, fail_code, metadata),
            path(method),
            codec,
        )
        .await
}

/// Every reply of `test.Echo/Stream`, then how the call ended (`Ok` with the trailers' status
/// code `Ok`, or the error status from the trailers).
pub async fn stream(
    client: &mut Client,
    message: &str,
    count: u32,
    fail_code: u32,
) -> (Vec<EchoReply>, Result<(), Status>) {
    client.ready().await.expect("channel ready");
    let codec = tonic_prost::ProstCodec::<EchoRequest, EchoReply>::default();
    let resp = match client
        .server_streaming(request(message, count, fail_code, &[]), path(STREAM), codec)
        .await
    {
        Ok(r) => r,
        Err(status) => return (Vec::new(), Err(status)),
    };
    let mut body = resp.into_inner();
    let mut replies = Vec::new();
    loop {
        match body.message().await {
            Ok(Some(reply)) => replies.push(reply),
            Ok(None) => break,
            Err(status) => return (replies, Err(status)),
        }
    }
    match body.trailers().await {
        Ok(_) => (replies, Ok(())),
        Err(status) => (replies, Err(status)),
    }
}
