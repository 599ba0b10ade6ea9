//! Per-RPC metrics for every playhead service, through one tower layer around the gRPC server
//! instead of code in each handler: requests by method and status code, and the time until the
//! response starts (a unary call's answer; a stream's opening). The code is the `grpc-status`
//! header of a trailers-only response — how tonic answers a handler's error — else OK.
//!
//! Method labels come from the services' descriptors, so a client cannot grow the label set:
//! any other path (health, reflection, a method that does not exist) is not counted.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use prost::Message as _;
use tower::{Layer, Service};

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
pub struct RpcMetricsLayer {
    metrics: Arc<GatewayMetrics>,
    methods: Arc<HashMap<String, &'static str>>,
}

impl RpcMetricsLayer {
    pub fn new(metrics: Arc<GatewayMetrics>) -> Self {
        Self {
            metrics,
            methods: Arc::new(methods()),
        }
    }
}

impl<S> Layer<S> for RpcMetricsLayer {
    type Service = RpcMetrics<S>;

    fn layer(&self, inner: S) -> RpcMetrics<S> {
        RpcMetrics {
            inner,
            layer: self.clone(),
        }
    }
}

#[derive(Clone)]
pub struct RpcMetrics<S> {
    inner: S,
    layer: RpcMetricsLayer,
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

impl<S, B, ResponseBody> Service<http::Request<B>> for RpcMetrics<S>
where
    S: Service<http::Request<B>, Response = http::Response<ResponseBody>>,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    ResponseBody: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = BoxFuture<Result<S::Response, S::Error>>;

    fn poll_ready(&mut self, context: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(context)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        let method = self.layer.methods.get(request.uri().path()).copied();
        let started = Instant::now();
        let response = self.inner.call(request);
        let metrics = self.layer.metrics.clone();
        Box::pin(async move {
            let response = response.await;
            if let (Some(method), Ok(response)) = (method, &response) {
                let code = response
                    .headers()
                    .get("grpc-status")
                    .and_then(|value| value.to_str().ok()?.parse::<i32>().ok())
                    .map_or(tonic::Code::Ok, tonic::Code::from_i32);
                metrics.record(method, code_name(code), started);
            }
            response
        })
    }
}
