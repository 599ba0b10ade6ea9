//! Gateway errors and their one mapping to gRPC status codes.

use playhead_proto::ids::IdError;

#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    #[error(transparent)]
    InvalidId(#[from] IdError),
    #[error("{0}")]
    InvalidArgument(String),
    #[error("{0}")]
    NotFound(String),
    /// The request is valid but the state does not allow it (a listener at the session limit).
    #[error("{0}")]
    FailedPrecondition(String),
    /// No usable token.
    #[error(transparent)]
    Unauthenticated(#[from] crate::auth::AuthError),
    /// A valid token that does not cover the request.
    #[error("permission denied: {0}")]
    PermissionDenied(#[from] crate::auth::Denied),
    #[error("the broker is unavailable: {0}")]
    Unavailable(String),
    #[error("the node did not answer within {0} ms")]
    Timeout(u64),
    /// A bounded resource of this gateway is in use to its limit (uploads, import watches).
    #[error("{0}")]
    ResourceExhausted(String),
    /// An import upload's body was refused or cut short.
    #[error(transparent)]
    Upload(#[from] crate::import::upload::UploadError),
    #[error("{0}")]
    Internal(String),
}

impl GatewayError {
    /// From a NATS service error code (HTTP-like, see `playhead_client::query::QueryError`).
    pub fn from_service_code(code: usize, status: String) -> Self {
        match code {
            400 => GatewayError::InvalidArgument(status),
            404 => GatewayError::NotFound(status),
            503 => GatewayError::Unavailable(status),
            _ => GatewayError::Internal(status),
        }
    }
}

/// A handler's result as its gRPC answer (errors mapped once, by the `From` below).
pub fn respond<T>(result: Result<T, GatewayError>) -> Result<tonic::Response<T>, tonic::Status> {
    result
        .map(tonic::Response::new)
        .map_err(tonic::Status::from)
}

impl From<GatewayError> for tonic::Status {
    fn from(error: GatewayError) -> Self {
        let message = error.to_string();
        match error {
            GatewayError::InvalidId(_) | GatewayError::InvalidArgument(_) => {
                tonic::Status::invalid_argument(message)
            }
            GatewayError::NotFound(_) => tonic::Status::not_found(message),
            GatewayError::FailedPrecondition(_) => tonic::Status::failed_precondition(message),
            GatewayError::Unauthenticated(_) => tonic::Status::unauthenticated(message),
            GatewayError::PermissionDenied(_) => tonic::Status::permission_denied(message),
            GatewayError::Unavailable(_) | GatewayError::Timeout(_) => {
                tonic::Status::unavailable(message)
            }
            GatewayError::ResourceExhausted(_) => tonic::Status::resource_exhausted(message),
            GatewayError::Upload(upload) => {
                use crate::import::upload::UploadError;
                let code = match &upload {
                    UploadError::NoChunk | UploadError::Conflicting { .. } => {
                        tonic::Code::InvalidArgument
                    }
                    UploadError::TooLarge { .. } => tonic::Code::OutOfRange,
                    UploadError::Idle(_) => tonic::Code::DeadlineExceeded,
                    // Whatever the client's stream failed with (usually CANCELLED).
                    UploadError::Client(status) => status.code(),
                };
                tonic::Status::new(code, message)
            }
            GatewayError::Internal(_) => tonic::Status::internal(message),
        }
    }
}

impl GatewayError {
    /// The HTTP status of the console's JSON API for this error (the same classes as gRPC).
    pub fn http_status(&self) -> u16 {
        match self {
            GatewayError::InvalidId(_) | GatewayError::InvalidArgument(_) => 400,
            GatewayError::NotFound(_) => 404,
            GatewayError::FailedPrecondition(_) => 409,
            GatewayError::Unauthenticated(_) => 401,
            GatewayError::PermissionDenied(_) => 403,
            GatewayError::Unavailable(_) => 503,
            GatewayError::Timeout(_) => 504,
            GatewayError::ResourceExhausted(_) => 429,
            GatewayError::Upload(upload) => match upload {
                crate::import::upload::UploadError::TooLarge { .. } => 413,
                crate::import::upload::UploadError::Idle(_) => 408,
                _ => 400,
            },
            GatewayError::Internal(_) => 500,
        }
    }
}

impl From<playhead_client::command::ValidationError> for GatewayError {
    fn from(error: playhead_client::command::ValidationError) -> Self {
        GatewayError::InvalidArgument(error.to_string())
    }
}

impl From<playhead_client::query::QueryError> for GatewayError {
    fn from(error: playhead_client::query::QueryError) -> Self {
        use playhead_client::query::QueryError;
        match error {
            QueryError::InvalidArgument(message) => GatewayError::InvalidArgument(message),
            QueryError::NotFound(message) => GatewayError::NotFound(message),
            QueryError::Internal(message) => GatewayError::Internal(message),
        }
    }
}

#[cfg(test)]
mod tests {
    use playhead_proto::ids::StationId;

    use super::*;
    use crate::import::upload::UploadError;

    #[test]
    fn each_error_maps_to_its_code() {
        let invalid = StationId::parse("a.b").unwrap_err();
        let cases = [
            (GatewayError::from(invalid), tonic::Code::InvalidArgument),
            (GatewayError::NotFound("x".into()), tonic::Code::NotFound),
            (
                GatewayError::Unavailable("x".into()),
                tonic::Code::Unavailable,
            ),
            (GatewayError::Timeout(5), tonic::Code::Unavailable),
            (
                GatewayError::from(crate::auth::AuthError::Missing),
                tonic::Code::Unauthenticated,
            ),
            (
                GatewayError::from(crate::auth::Denied("x".into())),
                tonic::Code::PermissionDenied,
            ),
            (
                GatewayError::from_service_code(404, "x".into()),
                tonic::Code::NotFound,
            ),
            (
                GatewayError::from_service_code(500, "x".into()),
                tonic::Code::Internal,
            ),
            (
                GatewayError::ResourceExhausted("x".into()),
                tonic::Code::ResourceExhausted,
            ),
            (
                GatewayError::from(UploadError::TooLarge { limit: 1 }),
                tonic::Code::OutOfRange,
            ),
            (
                GatewayError::from(UploadError::NoChunk),
                tonic::Code::InvalidArgument,
            ),
            (
                GatewayError::from(UploadError::Idle(std::time::Duration::from_secs(30))),
                tonic::Code::DeadlineExceeded,
            ),
            (
                GatewayError::from(UploadError::Client(tonic::Status::cancelled("x"))),
                tonic::Code::Cancelled,
            ),
        ];
        for (error, code) in cases {
            assert_eq!(tonic::Status::from(error).code(), code);
        }
    }
}
