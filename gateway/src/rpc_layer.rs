//! One tower layer around the gRPC server gives every playhead RPC, instead of code in each
//! handler:
//!
//! - **a server span** (`rpc {method}`, while spans are exported), the child of the client's
//!   W3C `traceparent` when it sent one; the handler runs in it, so the commands and queries it
//!   publishes carry it on to the node;
//! - **metrics**: requests by method and status code, and the time until the response starts
//!   (a unary call's answer; a stream's opening). The code is the `grpc-status` header of a
//!   trailers-only response — how tonic answers a handler's error — else OK;
//! - **authentication**: the `authorization: Bearer` token is verified against the key ring
//!   ([`crate::auth`]) and its [`Principal`] put in the request's extensions for the handler's
//!   authorization; no or a bad token is refused UNAUTHENTICATED before the body is read or a
//!   permit taken;
//! - **admission**: at most `max_concurrent_rpcs` RPCs are handled at once (a unary call until
//!   its answer, a stream until it opens); one more is refused RESOURCE_EXHAUSTED at once,
//!   before its request body is read, never queued, so a flood costs neither memory nor a
//!   queue;
//! - **a pause for abuse**: a request answered RESOURCE_EXHAUSTED, OUT_OF_RANGE (larger than
//!   the gRPC size limit) or UNAUTHENTICATED gets its answer only after `refusal_pause`,
//!   holding no permit and no body, only its HTTP/2 stream: a client that floods cycles its
//!   streams slowly instead of taking the gateway's CPU from everyone else (measured in
//!   `make bench`'s edge phase). Other refusals (bad arguments, permission) are answered at
//!   once.
//!
//! Method labels come from the services' descriptors, so a client cannot grow the label set:
//! any other path (health, reflection, a method that does not exist) is neither counted nor
//! traced, and needs no token.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use playhead_client::service::telemetry;
use prost::Message as _;
use tokio::sync::Semaphore;
use tower::{Layer, Service};
use tracing::Instrument as _;

use crate::auth::{KeyRing, Principal, now_secs};
use crate::metrics::{GatewayMetrics, code_name};

/// The playhead methods by gRPC path (`/playhead.v1.StationService/GetNowPlaying` →
/// `GetNowPlaying`), read once from the compiled descriptors.
fn methods() -> HashMap<String, &'static str> {
    let descriptors = prost_types::FileDescriptorSet::decode(playhead_proto::FILE_DESCRIPTOR_SET)
        .expect("the compiled descriptor set decodes");
    let mut methods = HashMap::new();
    for file in descriptors.file {
        let package = file.package();
        for service in &file.service {
            for method in &service.method {
                let name: &'static str = Box::leak(method.name().to_owned().into_boxed_str());
                methods.insert(format!("/{package}.{}/{name}", service.name()), name);
            }
        }
    }
    methods
}

#[derive(Clone)]
pub struct RpcLayer {
    metrics: Arc<GatewayMetrics>,
    methods: Arc<HashMap<String, &'static str>>,
    keys: Arc<KeyRing>,
    in_flight: Arc<Semaphore>,
    max_in_flight: usize,
    refusal_pause: std::time::Duration,
}

impl RpcLayer {
    pub fn new(
        metrics: Arc<GatewayMetrics>,
        keys: Arc<KeyRing>,
        max_concurrent_rpcs: usize,
        refusal_pause: std::time::Duration,
    ) -> Self {
        Self {
            metrics,
            methods: Arc::new(methods()),
            keys,
            in_flight: Arc::new(Semaphore::new(max_concurrent_rpcs)),
            max_in_flight: max_concurrent_rpcs,
            refusal_pause,
        }
    }
}

impl<S> Layer<S> for RpcLayer {
    type Service = RpcService<S>;

    fn layer(&self, inner: S) -> RpcService<S> {
        RpcService {
            inner,
            layer: self.clone(),
        }
    }
}

#[derive(Clone)]
pub struct RpcService<S> {
    inner: S,
    layer: RpcLayer,
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

impl<S, B> Service<http::Request<B>> for RpcService<S>
where
    S: Service<http::Request<B>, Response = http::Response<tonic::body::Body>>,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = BoxFuture<Result<S::Response, S::Error>>;

    fn poll_ready(&mut self, context: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(context)
    }

    fn call(&mut self, mut request: http::Request<B>) -> Self::Future {
        let Some(method) = self.layer.methods.get(request.uri().path()).copied() else {
            return Box::pin(self.inner.call(request));
        };
        // Like the node's, created only while spans are exported: at tens of thousands of
        // requests a second they would be formatted for nobody.
        let span = if telemetry::exporting() {
            let span = tracing::info_span!(
                "rpc",
                otel.name = %format!("rpc {method}"),
                otel.kind = "server",
                rpc.system = "grpc",
                rpc.method = method,
                rpc.grpc.status_code = tracing::field::Empty,
            );
            telemetry::adopt_http_context(&span, request.headers());
            span
        } else {
            tracing::Span::none()
        };
        let started = Instant::now();
        let authorization = request
            .headers()
            .get(http::header::AUTHORIZATION)
            .map(|value| value.to_str().unwrap_or_default());
        let authenticated = self.layer.keys.authenticate(authorization, now_secs());
        let mut permit = None;
        // Refused requests are dropped unread: their bodies are never buffered.
        let response = match authenticated {
            Err(error) => Err(tonic::Status::unauthenticated(error.to_string())),
            Ok(principal) => match self.layer.in_flight.clone().try_acquire_owned() {
                Ok(acquired) => {
                    permit = Some(acquired);
                    request.extensions_mut().insert::<Principal>(principal);
                    Ok(span.in_scope(|| self.inner.call(request)))
                }
                Err(_) => Err(tonic::Status::resource_exhausted(format!(
                    "the gateway is handling {} requests already \
                     (max_concurrent_rpcs); retry with backoff",
                    self.layer.max_in_flight
                ))),
            },
        };
        let metrics = self.layer.metrics.clone();
        let pause = self.layer.refusal_pause;
        Box::pin(
            async move {
                let response = match response {
                    Ok(response) => response.await,
                    Err(refused) => Ok(refused.into_http()),
                };
                // Held until the response starts.
                drop(permit);
                if let Ok(response) = &response {
                    let code = response
                        .headers()
                        .get("grpc-status")
                        .and_then(|value| value.to_str().ok()?.parse::<i32>().ok())
                        .map_or(tonic::Code::Ok, tonic::Code::from_i32);
                    tracing::Span::current().record("rpc.grpc.status_code", code as i32);
                    metrics.record(method, code_name(code), started);
                    let abusive = matches!(
                        code,
                        tonic::Code::ResourceExhausted
                            | tonic::Code::OutOfRange
                            | tonic::Code::Unauthenticated
                    );
                    if abusive && !pause.is_zero() {
                        tokio::time::sleep(pause).await;
                    }
                }
                response
            }
            .instrument(span),
        )
    }
}
